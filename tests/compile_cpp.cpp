/* The same program as compile_c.c, compiled as C++ (sokol-style pair): qlora.h must build
   warning-free as C++11 too. */
#include "compile_c.c"
