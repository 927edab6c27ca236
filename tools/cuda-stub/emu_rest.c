/*
 * The rest of the driver API for the CPU emulator (emu.cpp): every entry point
 * of symbols.h as a weak symbol returning CUDA_ERROR_NOT_SUPPORTED (801). The
 * functions emu.cpp implements are strong symbols and take precedence.
 */
#define CUDA_ERROR_NOT_SUPPORTED 801
#define MLA_CU(name) \
  __attribute__((weak)) int name(void) { return CUDA_ERROR_NOT_SUPPORTED; }
#include "symbols.h"
#undef MLA_CU
