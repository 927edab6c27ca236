// The CPU emulator's runtime as the kernels see it (tools/cuda-stub/emu.cpp
// implements it; emu_kernels.cpp compiles crates/mla-cuda/kernels/mla.cu against it).
//
// Every CUDA thread of the running block is a fiber; a block runs to completion
// before the next one starts, and one launch runs at a time. The functions below
// are what kernels/mla.cu calls when it is compiled with MLA_EMU defined: the
// built-in variables, barriers (__syncthreads, __syncwarp), warp collectives
// (shuffles, reductions, mma.sync), shared memory, cp.async and fault reports.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace emu {

struct Dim {
  unsigned x, y, z;
};

// The running thread (fiber) and block.
extern Dim g_tid;
extern unsigned g_lin;
extern Dim g_block_idx, g_block_dim, g_grid_dim;

} // namespace emu

// A kernel entry point as the emulator's symbol table holds it: its name and a
// function that calls it with the cuLaunchKernel parameter array.
struct mla_emu_kernel {
  const char *name;
  void (*invoke)(void **params);
};

extern "C" {
// __syncthreads(): every thread of the block must reach it.
void mla_emu_syncthreads();
// __syncwarp(): every lane of the warp must reach it.
void mla_emu_syncwarp();
// __shfl_xor_sync(0xffffffff, v, m) for floats and 32-bit words.
float mla_emu_shfl_xor(float v, int m);
unsigned mla_emu_shfl_xor_u(unsigned v, int m);
// The warp's xor-butterfly sum / max (each lane gets exactly what the
// five-step shuffle butterfly gives it on a GPU), with one barrier.
float mla_emu_warp_sum(float v);
float mla_emu_warp_max(float v);
// Dynamic shared memory of the block (poisoned with 0xff bytes at block start).
void *mla_emu_dyn_smem();
// A static __shared__ array: `*slot` remembers the call site's offset in the
// static shared-memory arena, which is poisoned (0xff) at every block start.
void *mla_emu_static_smem(size_t *slot, size_t bytes);
// Reports a fault of the running thread (misaligned access, ...): the launch
// stops and the fault surfaces like a GPU's (see emu.cpp). Does not return.
[[noreturn]] void mla_emu_fault(int cuda_error, const char *what, const void *addr);
// mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32 on the warp:
// d = A * B + c from every lane's fragments (dtype 1 = f16, 2 = bf16).
void mla_emu_mma_m16n8k16(float d[4], const unsigned a[4], const unsigned b[2],
                          const float c[4], int dtype);
// cp.async.ca.shared.global of 16 bytes, the first `src_bytes` (0..16) read
// from `src`, the rest zero-filled; lands in `dst` only at a later wait.
void mla_emu_cp_async16(void *dst, const void *src, unsigned src_bytes);
void mla_emu_cp_async_commit();
void mla_emu_cp_async_wait(unsigned pending_allowed);
// atomicAdd on a 32-bit word (blocks run one at a time: plain arithmetic).
unsigned mla_emu_atomic_add_u32(unsigned *p, unsigned v);
}

// Vector loads must be naturally aligned on a GPU (a misaligned one is a sticky
// CUDA_ERROR_MISALIGNED_ADDRESS there).
static inline void mla_emu_check_align(const void *p, unsigned align) {
  if (reinterpret_cast<uintptr_t>(p) % align != 0)
    mla_emu_fault(716 /* CUDA_ERROR_MISALIGNED_ADDRESS */, "misaligned vector access", p);
}

#define threadIdx (emu::g_tid)
#define blockIdx (emu::g_block_idx)
#define blockDim (emu::g_block_dim)
#define gridDim (emu::g_grid_dim)
