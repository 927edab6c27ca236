/*
 * Stub libcuda.so.1 for building and linking mla-rt's `cuda` feature on machines
 * without an NVIDIA driver (CI). Every driver API entry point that cust links
 * (symbols.h) returns CUDA_ERROR_STUB_LIBRARY (34), so cuInit fails and the
 * tests report "SKIPPED: no CUDA device". cuGetErrorName / cuGetErrorString
 * succeed, so the error text is readable.
 *
 * The real driver's library has the same soname (libcuda.so.1): a binary linked
 * against this stub runs against the real driver when that is first on the
 * loader path (the normal case on a GPU machine, via ld.so.cache).
 *
 * Build: cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o libcuda.so.1 stub.c
 * (tools/cuda-stub/make-fake-cuda.sh does this).
 */

#define CUDA_ERROR_STUB_LIBRARY 34

/* Arguments are ignored: on the supported ABIs (x86-64 SysV, AArch64 AAPCS) a
 * caller may pass any arguments to a function that reads none. */
#define MLA_CU(name) \
  int name(void) { return CUDA_ERROR_STUB_LIBRARY; }
#include "symbols.h"
#undef MLA_CU

static const char stub_name[] = "CUDA_ERROR_STUB_LIBRARY";
static const char stub_text[] =
    "stub libcuda (mla-rt tools/cuda-stub): no CUDA driver on this machine";

int cuGetErrorName(int error, const char **p) {
  (void)error;
  if (!p) return 1; /* CUDA_ERROR_INVALID_VALUE */
  *p = stub_name;
  return 0;
}

int cuGetErrorString(int error, const char **p) {
  (void)error;
  if (!p) return 1;
  *p = stub_text;
  return 0;
}
