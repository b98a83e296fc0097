/* Translation unit A holds the implementation; B (two_tus_b.c) only the declarations. */
#define QLORA_IMPLEMENTATION
#include "qlora.h"
int qlora_test_tu_b(void);
int main(void) { return qlora_test_tu_b() == 0 ? 0 : 1; }
