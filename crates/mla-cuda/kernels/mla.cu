// mla-rt CUDA kernels: Multi-Head Latent Attention (docs/design.md section 2) on the GPU.
//
// One source, three compilers, two architectures:
//   - nvcc:   nvcc -ptx -arch=compute_80 -O3 mla.cu          (or -fatbin, build.rs)
//   - clang:  clang -x cuda --cuda-device-only -nocudainc -nocudalib
//             --cuda-gpu-arch=sm_80 -O3 -S mla.cu   (no CUDA headers, no libdevice)
//   - host C++ with MLA_EMU defined: the CPU emulator in tools/cuda-stub/ runs these
//     very kernels (one fiber per CUDA thread) to test the Rust driver code without
//     a GPU (emu_kernels.cpp builds them for MLA_EMU_ARCH 720 and 800).
// MLA_ARCH (__CUDA_ARCH__ on a GPU) selects the code paths: below 800 (sm_72:
// Xavier, and every GPU that JIT-compiles the sm_72 PTX) CUDA cores only; from 800
// on (A100, Orin sm_87, H100/H200) also the tensor-core attention (mma.sync
// m16n8k16 with f16/bf16 operands, f32 accumulation) and cp.async tile copies.
// Nothing here needs cuda_fp16.h or libdevice: f16/bf16 are converted by hand,
// the few math functions and PTX instructions are wrapped below.
//
// Numerics: every sum accumulates in f32; weights and cache entries are widened in
// registers. The tensor-core path multiplies f16/bf16 cache entries (exact in the
// operand type) by queries and softmax weights split into a high and a low part in
// that type (x = hi + lo, two products), which keeps them to about 2^-16 relative
// instead of the operand type's 2^-8 / 2^-11.
//
// Every kernel takes one parameter: a struct of 64-bit addresses and 32-bit
// values, passed by value. The Rust side (crates/mla-cuda/src/params.rs) declares
// the same structs with #[repr(C)], field for field; both sides static-assert the
// sizes. Every kernel runs with MLA_THREADS threads per block.

// The kernels, in include order (each part uses only those before it):
#include "prelude.cuh"
#include "elements.cuh"
#include "sm80.cuh"
#include "params.cuh"
#include "linear.cuh"
#include "prep.cuh"
#include "attn_cc.cuh"
#include "attn_tc.cuh"
#include "combine.cuh"

// Every kernel entry point of this architecture (the emulator builds its symbol
// table from it; .ci/cuda.sh checks the PTX against it; the Rust side looks the
// names up in the module).
#define MLA_KERNEL_LIST_COMMON(X)                                                              \
  X(mla_linear_f32) X(mla_linear_f16) X(mla_linear_bf16)                                       \
  X(mla_prep_cf32_wf32) X(mla_prep_cf32_wf16) X(mla_prep_cf32_wbf16)                           \
  X(mla_prep_cf16_wf32) X(mla_prep_cf16_wf16) X(mla_prep_cf16_wbf16)                           \
  X(mla_prep_cbf16_wf32) X(mla_prep_cbf16_wf16) X(mla_prep_cbf16_wbf16)                        \
  X(mla_attn_cc_f32_g16) X(mla_attn_cc_f16_g16) X(mla_attn_cc_bf16_g16)                        \
  X(mla_attn_cc_f32_g4) X(mla_attn_cc_f16_g4) X(mla_attn_cc_bf16_g4)                           \
  X(mla_attn_cc_f32_g1) X(mla_attn_cc_f16_g1) X(mla_attn_cc_bf16_g1)                           \
  X(mla_attn_combine)

#define MLA_KERNEL_LIST_SM80(X) X(mla_attn_tc_f16) X(mla_attn_tc_bf16) X(mla_selftest_mma)

#if MLA_ARCH >= 800
#define MLA_KERNEL_LIST(X) MLA_KERNEL_LIST_COMMON(X) MLA_KERNEL_LIST_SM80(X)
#else
#define MLA_KERNEL_LIST(X) MLA_KERNEL_LIST_COMMON(X)
#endif
