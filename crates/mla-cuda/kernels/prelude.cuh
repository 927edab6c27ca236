// Part of mla-rt's CUDA kernels: included by mla.cu (in this order), never compiled alone.
// Compiler keywords, the architecture switch and portable primitives (warp and block reductions, math wrappers) shared by every kernel.

#if !defined(MLA_EMU) && !defined(__global__)
// clang with -nocudainc: define the CUDA keywords ourselves.
#define MLA_CLANG_NOCUDAINC 1
#define __global__ __attribute__((global))
#define __device__ __attribute__((device))
#define __shared__ __attribute__((shared))
#include "__clang_cuda_builtin_vars.h"
#endif

#if defined(MLA_EMU)
#define MLA_ARCH MLA_EMU_ARCH
#elif defined(__CUDA_ARCH__)
#define MLA_ARCH __CUDA_ARCH__
#else
#define MLA_ARCH 0
#endif

#if defined(MLA_EMU)
#define MLA_DEV static inline
#define MLA_BOUNDS(n)
// Internal linkage: the emulator links the sm_72 and sm_80 builds together.
#define MLA_KERNEL static void
#elif defined(MLA_CLANG_NOCUDAINC)
#define MLA_DEV static __device__ __attribute__((always_inline)) inline
#define MLA_BOUNDS(n) __attribute__((launch_bounds(n)))
#define MLA_KERNEL extern "C" __global__ void
#else
#define MLA_DEV static __device__ __forceinline__
#define MLA_BOUNDS(n) __launch_bounds__(n)
#define MLA_KERNEL extern "C" __global__ void
#endif

typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned long long u64;

// Vector types of our own (no CUDA headers needed); the alignment makes a load of
// one of these a single 16- or 8-byte memory access.
struct __attribute__((aligned(16))) mla_v4 {
  float x, y, z, w;
};
struct __attribute__((aligned(16))) mla_u4 {
  u32 x, y, z, w;
};
struct __attribute__((aligned(8))) mla_u2 {
  u32 x, y;
};

// Threads per block of every kernel.
#define MLA_THREADS 256
#define MLA_WARPS (MLA_THREADS / 32)
// Tokens handled together by one warp in the linear / absorb kernels.
#define MLA_TT 8
// Most cached rows per tile of the CUDA-core attention (one per lane in softmax).
#define MLA_CC_TILE_MAX 32
// 16-byte chunks a thread stages in registers for the next tile (sm_72 path).
#define MLA_PREFETCH 8
// Heads per block of the tensor-core attention (the mma's M).
#define MLA_TC_HEADS 16

// ---------------------------------------------------------------------------
// Portable primitives.

#if defined(MLA_EMU)
MLA_DEV float mla_exp(float x) { return expf(x); }
MLA_DEV float mla_sqrt(float x) { return sqrtf(x); }
MLA_DEV float mla_bits_to_f32(u32 u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}
MLA_DEV u32 mla_f32_to_bits(float f) {
  u32 u;
  memcpy(&u, &f, 4);
  return u;
}
MLA_DEV float mla_shfl_xor(float v, int m) { return mla_emu_shfl_xor(v, m); }
MLA_DEV float warp_sum(float v) { return mla_emu_warp_sum(v); }
MLA_DEV float warp_max(float v) { return mla_emu_warp_max(v); }
#define MLA_SYNC() mla_emu_syncthreads()
#define MLA_SYNCWARP() mla_emu_syncwarp()
#define MLA_DYN_SMEM(T) ((T *)mla_emu_dyn_smem())
// A block's static shared array: name is a T* to `count` elements.
#define MLA_SHARED(T, name, count)                                                           \
  static size_t name##_slot = (size_t)-1;                                                    \
  T *name = (T *)mla_emu_static_smem(&name##_slot, sizeof(T) * (count))
#define MLA_ATOMIC_ADD(p, v) mla_emu_atomic_add_u32((p), (v))
#elif defined(MLA_CLANG_NOCUDAINC)
MLA_DEV float mla_exp(float x) { return __nvvm_ex2_approx_f(x * 1.4426950408889634f); }
MLA_DEV float mla_sqrt(float x) { return __builtin_sqrtf(x); }
MLA_DEV float mla_bits_to_f32(u32 u) { return __nvvm_bitcast_i2f((int)u); }
MLA_DEV u32 mla_f32_to_bits(float f) { return (u32)__nvvm_bitcast_f2i(f); }
MLA_DEV float mla_shfl_xor(float v, int m) {
  return __nvvm_shfl_sync_bfly_f32(0xffffffffu, v, m, 0x1f);
}
#define MLA_SYNC() __syncthreads()
#define MLA_SYNCWARP() __nvvm_bar_warp_sync(0xffffffffu)
extern __shared__ mla_v4 mla_dyn_smem_raw[];
#define MLA_DYN_SMEM(T) ((T *)mla_dyn_smem_raw)
#define MLA_SHARED(T, name, count)                                                           \
  __shared__ __attribute__((aligned(16))) T name##_arr[count];                               \
  T *name = name##_arr
#else // nvcc
MLA_DEV float mla_exp(float x) { return expf(x); }
MLA_DEV float mla_sqrt(float x) { return sqrtf(x); }
MLA_DEV float mla_bits_to_f32(u32 u) { return __int_as_float((int)u); }
MLA_DEV u32 mla_f32_to_bits(float f) { return (u32)__float_as_int(f); }
MLA_DEV float mla_shfl_xor(float v, int m) { return __shfl_xor_sync(0xffffffffu, v, m); }
#define MLA_SYNC() __syncthreads()
#define MLA_SYNCWARP() __syncwarp()
extern __shared__ mla_v4 mla_dyn_smem_raw[];
#define MLA_DYN_SMEM(T) ((T *)mla_dyn_smem_raw)
#define MLA_SHARED(T, name, count)                                                           \
  __shared__ __attribute__((aligned(16))) T name##_arr[count];                               \
  T *name = name##_arr
#endif

#define MLA_NEG_INF (mla_bits_to_f32(0xff800000u))

MLA_DEV float mla_max(float a, float b) { return a > b ? a : b; }
MLA_DEV u32 mla_min_u(u32 a, u32 b) { return a < b ? a : b; }
MLA_DEV u32 mla_div_ceil(u32 a, u32 b) { return (a + b - 1u) / b; }

#if !defined(MLA_EMU)
MLA_DEV float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += mla_shfl_xor(v, o);
  return v;
}

MLA_DEV float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = mla_max(v, mla_shfl_xor(v, o));
  return v;
}
#endif

// Sum over the block (all MLA_THREADS threads must call); `red` holds MLA_WARPS floats.
// The result is returned to every thread.
MLA_DEV float block_sum(float v, float *red) {
  u32 lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  MLA_SYNC();
  if (lane == 0) red[warp] = v;
  MLA_SYNC();
  float s = 0.0f;
  for (u32 w = 0; w < MLA_WARPS; w++) s += red[w];
  return s;
}

MLA_DEV float block_max(float v, float *red) {
  u32 lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
  v = warp_max(v);
  MLA_SYNC();
  if (lane == 0) red[warp] = v;
  MLA_SYNC();
  float m = red[0];
  for (u32 w = 1; w < MLA_WARPS; w++) m = mla_max(m, red[w]);
  return m;
}

MLA_DEV bool mla_finite(float f) { return (mla_f32_to_bits(f) & 0x7f800000u) != 0x7f800000u; }
