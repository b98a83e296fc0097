/* QLORA_STATIC: a private copy of the implementation in this TU (and in two_tus_b.c's style
   users' TUs) must not clash at link time. */
#define QLORA_STATIC
#define QLORA_IMPLEMENTATION
#include "qlora.h"
int main(void) { return qlora_type_is_bnb(QLORA_TYPE_NF4) ? 0 : 1; }
