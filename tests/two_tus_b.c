#include "qlora.h"
#include <string.h>
int qlora_test_tu_b(void) { return strcmp(qlora_version(), QLORA_VERSION_STRING); }
