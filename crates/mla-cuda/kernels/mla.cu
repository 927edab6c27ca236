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

// ---------------------------------------------------------------------------
// Element types: 0 = f32, 1 = f16 (IEEE binary16), 2 = bf16.

MLA_DEV float f16_to_f32(u32 h) {
  u32 sign = (h & 0x8000u) << 16;
  u32 e = (h >> 10) & 0x1fu;
  u32 m = h & 0x3ffu;
  if (e == 0) {
    // zero or subnormal: m * 2^-24
    float f = (float)m * 5.9604644775390625e-8f;
    return mla_bits_to_f32(mla_f32_to_bits(f) | sign);
  }
  if (e == 31) return mla_bits_to_f32(sign | 0x7f800000u | (m << 13));
  return mla_bits_to_f32(sign | ((e + 112u) << 23) | (m << 13));
}

// Round to nearest even, like the `half` crate's f16::from_f32.
MLA_DEV u32 f32_to_f16(float f) {
  u32 u = mla_f32_to_bits(f);
  u32 sign = (u >> 16) & 0x8000u;
  u &= 0x7fffffffu;
  if (u >= 0x7f800000u) return sign | 0x7c00u | (u > 0x7f800000u ? 0x200u : 0u);
  if (u >= 0x477ff000u) return sign | 0x7c00u; // rounds to infinity
  if (u < 0x38800000u) {                       // below 2^-14: subnormal or zero
    if (u <= 0x33000000u) return sign;         // <= 2^-25 rounds to zero
    u32 e = u >> 23;
    u32 m = (u & 0x7fffffu) | 0x800000u;
    u32 shift = 126u - e; // 14 ..= 24
    u32 r = m >> shift;
    u32 rem = m & ((1u << shift) - 1u);
    u32 half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (r & 1u))) r++;
    return sign | r;
  }
  u += 0xfffu + ((u >> 13) & 1u);
  return sign | ((u - 0x38000000u) >> 13);
}

MLA_DEV float bf16_to_f32(u32 b) { return mla_bits_to_f32(b << 16); }

// Round to nearest even, like the `half` crate's bf16::from_f32.
MLA_DEV u32 f32_to_bf16(float f) {
  u32 u = mla_f32_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u; // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return u >> 16;
}

// A 16-bit element of type DT (1 f16, 2 bf16) to f32 and back.
template <int DT> MLA_DEV float half_to_f32(u32 h) {
  return DT == 1 ? f16_to_f32(h) : bf16_to_f32(h);
}
template <int DT> MLA_DEV u32 f32_to_half(float f) {
  return DT == 1 ? f32_to_f16(f) : f32_to_bf16(f);
}

template <int DT> MLA_DEV float ld(const void *base, u64 i) {
  if (DT == 0) return ((const float *)base)[i];
  if (DT == 1) return f16_to_f32(((const u16 *)base)[i]);
  return bf16_to_f32(((const u16 *)base)[i]);
}

template <int DT> MLA_DEV void st(void *base, u64 i, float v) {
  if (DT == 0) ((float *)base)[i] = v;
  else if (DT == 1) ((u16 *)base)[i] = (u16)f32_to_f16(v);
  else ((u16 *)base)[i] = (u16)f32_to_bf16(v);
}

// Bytes of one element of type DT.
#define MLA_ESIZE(DT) ((DT) == 0 ? 4u : 2u)

struct f4 {
  float a, b, c, d;
};

// Four consecutive elements starting at element 4*i4 (16-byte aligned for f32,
// 8-byte aligned for f16/bf16).
template <int DT> MLA_DEV f4 ld4(const void *base, u64 i4) {
  f4 r;
#if defined(MLA_EMU)
  mla_emu_check_align((const char *)base + i4 * (DT == 0 ? 16u : 8u), DT == 0 ? 16u : 8u);
#endif
  if (DT == 0) {
    mla_v4 v = ((const mla_v4 *)base)[i4];
    r.a = v.x; r.b = v.y; r.c = v.z; r.d = v.w;
  } else {
    mla_u2 v = ((const mla_u2 *)base)[i4];
    u32 lo = v.x, hi = v.y;
    r.a = half_to_f32<DT>(lo & 0xffffu); r.b = half_to_f32<DT>(lo >> 16);
    r.c = half_to_f32<DT>(hi & 0xffffu); r.d = half_to_f32<DT>(hi >> 16);
  }
  return r;
}

MLA_DEV f4 ld4f(const float *base, u64 i4) { return ld4<0>((const void *)base, i4); }

// Eight consecutive 16-bit elements from element 8*i8 (16-byte aligned).
template <int DT> MLA_DEV void ld8h(const void *base, u64 i8, f4 *lo, f4 *hi) {
#if defined(MLA_EMU)
  mla_emu_check_align((const char *)base + i8 * 16u, 16u);
#endif
  mla_u4 v = ((const mla_u4 *)base)[i8];
  lo->a = half_to_f32<DT>(v.x & 0xffffu); lo->b = half_to_f32<DT>(v.x >> 16);
  lo->c = half_to_f32<DT>(v.y & 0xffffu); lo->d = half_to_f32<DT>(v.y >> 16);
  hi->a = half_to_f32<DT>(v.z & 0xffffu); hi->b = half_to_f32<DT>(v.z >> 16);
  hi->c = half_to_f32<DT>(v.w & 0xffffu); hi->d = half_to_f32<DT>(v.w >> 16);
}

MLA_DEV float dot4(f4 a, f4 b) { return a.a * b.a + a.b * b.b + a.c * b.c + a.d * b.d; }

// A 16-byte copy global -> shared (both 16-byte aligned), plain.
MLA_DEV void copy16(void *dst, const void *src) {
#if defined(MLA_EMU)
  mla_emu_check_align(dst, 16u);
  mla_emu_check_align(src, 16u);
#endif
  *(mla_u4 *)dst = *(const mla_u4 *)src;
}

// ---------------------------------------------------------------------------
// sm_80 instructions: cp.async (asynchronous global -> shared copies) and the
// tensor cores' mma.sync. Each has a host version in the emulator (emu.cpp).

#if MLA_ARCH >= 800
// 16 bytes from `src` (global, 16-byte aligned) to `dst` (shared, 16-byte
// aligned), of which the first `src_bytes` (0..16) are read and the rest zero
// filled; the data lands in `dst` after a later cp_async_wait<N>.
MLA_DEV void cp_async16(void *dst, const void *src, u32 src_bytes) {
#if defined(MLA_EMU)
  mla_emu_cp_async16(dst, src, src_bytes);
#else
  u64 s64, g64;
  asm volatile("cvta.to.shared.u64 %0, %1;" : "=l"(s64) : "l"(dst));
  asm volatile("cvta.to.global.u64 %0, %1;" : "=l"(g64) : "l"(src));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"((u32)s64), "l"(g64),
               "r"(src_bytes)
               : "memory");
#endif
}

MLA_DEV void cp_async_commit() {
#if defined(MLA_EMU)
  mla_emu_cp_async_commit();
#else
  asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}

// Waits until at most N of this thread's committed groups are still in flight.
template <int N> MLA_DEV void cp_async_wait() {
#if defined(MLA_EMU)
  mla_emu_cp_async_wait(N);
#else
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
#endif
}

// d = A * B + c on the warp's tensor cores: A 16x16 (row-major fragments), B
// 16x8 (column-major fragments), c and d 16x8 f32; DT 1 = f16, 2 = bf16.
// Fragment layout (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating
// point type"): with g = lane / 4 and q = lane % 4, register j of A holds two
// elements (low half first) at row g + 8 * (j & 1), columns 2q + 8 * (j >> 1)
// and +1; register j of B holds rows (k) 2q + 8j and +1 of column g; element i of
// c / d is row g + 8 * (i >> 1), column 2q + (i & 1). The helpers below
// (frag_*) load and store fragments in exactly this layout.
template <int DT>
MLA_DEV void mma16816(float d[4], const u32 a[4], const u32 b[2], const float c[4]) {
#if defined(MLA_EMU)
  mla_emu_mma_m16n8k16(d, a, b, c, DT);
#else
  if (DT == 2) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]),
                   "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
  } else {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]),
                   "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
  }
#endif
}

// A fragment of a row-major 16x16 tile of 16-bit elements at `s` (row stride
// `ld` elements, even; 4-byte aligned rows), columns k0 .. k0+15.
MLA_DEV void frag_a(u32 a[4], const u16 *s, u32 ld, u32 k0, u32 lane) {
  u32 g = lane >> 2, q = lane & 3u;
  const u16 *r0 = s + (u64)g * ld + k0 + 2u * q;
  const u16 *r8 = r0 + 8u * ld;
  a[0] = *(const u32 *)r0;
  a[1] = *(const u32 *)r8;
  a[2] = *(const u32 *)(r0 + 8);
  a[3] = *(const u32 *)(r8 + 8);
}

// B fragment (16 x 8, k x n) from storage with n major: element (k, n) at
// s[n * ld + k] (the cache tile for scores: row n = cached position, k contiguous).
MLA_DEV void frag_b_nk(u32 b[2], const u16 *s, u32 ld, u32 k0, u32 n0, u32 lane) {
  u32 g = lane >> 2, q = lane & 3u;
  const u16 *r = s + (u64)(n0 + g) * ld + k0 + 2u * q;
  b[0] = *(const u32 *)r;
  b[1] = *(const u32 *)(r + 8);
}

// B fragment (16 x 8, k x n) from storage with k major: element (k, n) at
// s[k * ld + n] (the cache tile for the latent sums: row k = cached position).
MLA_DEV void frag_b_kn(u32 b[2], const u16 *s, u32 ld, u32 k0, u32 n0, u32 lane) {
  u32 g = lane >> 2, q = lane & 3u;
  const u16 *c = s + (u64)(k0 + 2u * q) * ld + n0 + g;
  b[0] = (u32)c[0] | ((u32)c[ld] << 16);
  b[1] = (u32)c[8u * ld] | ((u32)c[9u * ld] << 16);
}

// Row and column of element i (0..3) of a c / d fragment.
MLA_DEV u32 frag_c_row(u32 lane, u32 i) { return (lane >> 2) + 8u * (i >> 1); }
MLA_DEV u32 frag_c_col(u32 lane, u32 i) { return 2u * (lane & 3u) + (i & 1u); }
#endif // MLA_ARCH >= 800

// ---------------------------------------------------------------------------
// Kernel parameters (one struct per kernel, by value). Mirrors
// crates/mla-cuda/src/params.rs: 64-bit fields first, then 32-bit ones, padded
// to a multiple of 8 bytes.

// y = W x (+ bias) for rows of one or two weight matrices sharing the input x.
//   for o in 0..rows: g = o / grp_rows, i = o % grp_rows,
//     y[t*y_stride + o] = W[g*w_grp_stride + w_row_off + i][0..cols]
//                         . xn[t*x_stride + g*x_grp_off ..][0..cols]  (+ bias[o])
//   for o in 0..rows2 (second matrix w2, plain): y2[t*y2_stride + o] = W2[o] . xn + bias2[o]
// where xn = x, or RMSNorm(x) * xnorm when xnorm != 0 (over the `cols` values).
// flag_set != 0: block column 0 sets *flag_set = gen when an x value is NaN or
// infinite. flag_gate != 0: nothing is written when *flag_gate == gen.
struct LinP {
  u64 x, w, bias, y, w2, bias2, y2, xnorm, flag_set, flag_gate;
  u32 n_tok, rows, cols, x_stride, y_stride, grp_rows, w_grp_stride, w_row_off;
  u32 x_grp_off, rows2, y2_stride, vec, gen;
  float eps;
};

// Per token t at position start + t: the latent c = RMSNorm(kva[t][0..r]) * norm_w
// and the n_rope rope keys kva[t][r + s*p ..] rotated at the position go into
// cache row start + t; and the absorbed queries
//   qt[t][h][j] = sum_{i<n} W_UK_h[i][j] * q[t][h][i],  W_UK_h[i] = kv_b_proj row h*(n+v)+i.
// Blocks 0 .. absorb_blocks-1 compute qt (one thread per column j, up to MLA_TT
// tokens: block = (j block, head, token block) flattened), the next n_tok blocks
// append one token each.
struct PrepP {
  u64 kva, norm_w, cache, cos_t, sin_t, q, kvb, qt;
  u32 n_tok, kva_stride, cache_row, r, p, n_rope, start, layout;
  u32 n_heads, n, v, qk, absorb_blocks;
  float eps;
};

// Attention over the latent cache (see attn_cc_impl / attn_tc_impl).
struct AttnP {
  u64 qt, q, cache, part_acc, part_ml, cos_t, sin_t;
  u32 n_tok, n_heads, r, p, qk, n, cache_row, per_head;
  u32 start, split_len, n_split, G, layout, tile_rows, mode, pad0;
  float scale;
  u32 pad1;
};

// Merges the context splits: see mla_attn_combine.
struct CombineP {
  u64 part_acc, part_ml, ctx;
  u32 n_tok, n_heads, r, n_split;
};

// One mma.sync on given matrices: see mla_selftest_mma.
struct SelftestP {
  u64 a, b_kn, b_nk, c, d;
  u32 dtype, pad0;
};

#if defined(__cplusplus) && __cplusplus >= 201103L
static_assert(sizeof(LinP) == 10 * 8 + 14 * 4, "LinP layout (params.rs)");
static_assert(sizeof(PrepP) == 8 * 8 + 14 * 4, "PrepP layout (params.rs)");
static_assert(sizeof(AttnP) == 7 * 8 + 18 * 4, "AttnP layout (params.rs)");
static_assert(sizeof(CombineP) == 3 * 8 + 4 * 4, "CombineP layout (params.rs)");
static_assert(sizeof(SelftestP) == 5 * 8 + 2 * 4, "SelftestP layout (params.rs)");
#endif

// ---------------------------------------------------------------------------
// Linear layers. One warp per output row and up to MLA_TT tokens; grid
// (ceil((rows + rows2) / MLA_WARPS), ceil(n_tok / MLA_TT)).
// vec (uniform): 4 = rows read four elements at a time (cols, x_stride and
// x_grp_off multiples of 4, x 16-byte aligned); 8 = eight at a time (f16/bf16
// weights, cols a multiple of 8: one 16-byte load per lane); 0 = one at a time.
template <int DT> MLA_DEV void linear_impl(const LinP &P) {
  if (P.flag_gate && *(const u32 *)P.flag_gate == P.gen) return; // whole grid leaves
  u32 lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
  u32 o = blockIdx.x * MLA_WARPS + warp;
  u32 t0 = blockIdx.y * MLA_TT;
  u32 nt = mla_min_u(MLA_TT, P.n_tok - t0);
  const float *x = (const float *)P.x;
  if (P.flag_set && blockIdx.x == 0 && warp == 0) {
    bool bad = false;
    for (u32 t = 0; t < nt; t++)
      for (u32 k = lane; k < P.cols; k += 32) bad |= !mla_finite(x[(u64)(t0 + t) * P.x_stride + k]);
    if (bad) *(u32 *)P.flag_set = P.gen; // every writer writes the same value
  }
  if (o >= P.rows + P.rows2) return; // whole warp leaves together
  bool second = o >= P.rows;
  const void *w = (const void *)(second ? P.w2 : P.w);
  const float *bias = (const float *)(second ? P.bias2 : P.bias);
  float *y = (float *)(second ? P.y2 : P.y);
  u32 oo = second ? o - P.rows : o;
  u32 y_stride = second ? P.y2_stride : P.y_stride;
  u32 g = second ? 0u : oo / P.grp_rows, i = second ? oo : oo % P.grp_rows;
  u64 wrow = second ? (u64)oo : (u64)g * P.w_grp_stride + P.w_row_off + i;
  const float *xb = x + (u64)t0 * P.x_stride + (second ? 0u : (u64)g * P.x_grp_off);
  const float *xn = (const float *)P.xnorm;
  u32 cols = P.cols;
  float acc[MLA_TT];
#pragma unroll
  for (int k = 0; k < MLA_TT; k++) acc[k] = 0.0f;
  if (P.vec == 8) {
    u32 c8 = cols / 8;
    u64 wbase8 = wrow * c8;
    for (u32 k = lane; k < c8; k += 32) {
      f4 wl, wh;
      ld8h<DT == 0 ? 2 : DT>(w, wbase8 + k, &wl, &wh);
      f4 nl = {1.0f, 1.0f, 1.0f, 1.0f}, nh = nl;
      if (xn) {
        nl = ld4f(xn, 2u * k);
        nh = ld4f(xn, 2u * k + 1u);
      }
      wl.a *= nl.a; wl.b *= nl.b; wl.c *= nl.c; wl.d *= nl.d;
      wh.a *= nh.a; wh.b *= nh.b; wh.c *= nh.c; wh.d *= nh.d;
#pragma unroll
      for (int t = 0; t < MLA_TT; t++) {
        if ((u32)t < nt) {
          const float *xt = xb + (u64)t * P.x_stride;
          acc[t] += dot4(wl, ld4f(xt, 2u * k)) + dot4(wh, ld4f(xt, 2u * k + 1u));
        }
      }
    }
  } else if (P.vec == 4) {
    u32 c4 = cols / 4;
    u64 wbase4 = wrow * c4;
    for (u32 k = lane; k < c4; k += 32) {
      f4 wv = ld4<DT>(w, wbase4 + k);
      if (xn) {
        f4 nv = ld4f(xn, k);
        wv.a *= nv.a; wv.b *= nv.b; wv.c *= nv.c; wv.d *= nv.d;
      }
#pragma unroll
      for (int t = 0; t < MLA_TT; t++) {
        if ((u32)t < nt) acc[t] += dot4(wv, ld4f(xb + (u64)t * P.x_stride, k));
      }
    }
  } else {
    u64 wbase = wrow * cols;
    for (u32 k = lane; k < cols; k += 32) {
      float wv = ld<DT>(w, wbase + k);
      if (xn) wv *= xn[k];
#pragma unroll
      for (int t = 0; t < MLA_TT; t++) {
        if ((u32)t < nt) acc[t] += wv * xb[(u64)t * P.x_stride + k];
      }
    }
  }
  // RMSNorm of x (when asked): the same scale for every column of a token.
  float inv[MLA_TT];
#pragma unroll
  for (int t = 0; t < MLA_TT; t++) inv[t] = 1.0f;
  if (xn) {
#pragma unroll
    for (int t = 0; t < MLA_TT; t++) {
      if ((u32)t < nt) {
        const float *xt = xb + (u64)t * P.x_stride;
        float ss = 0.0f;
        for (u32 k = lane; k < cols; k += 32) ss += xt[k] * xt[k];
        ss = warp_sum(ss);
        inv[t] = 1.0f / mla_sqrt(ss / (float)cols + P.eps);
      }
    }
  }
  float b = bias ? bias[oo] : 0.0f;
#pragma unroll
  for (int t = 0; t < MLA_TT; t++) {
    if ((u32)t < nt) { // nt is the same for the whole warp
      float s = warp_sum(acc[t]);
      if (lane == 0) y[(u64)(t0 + t) * y_stride + oo] = s * inv[t] + b;
    }
  }
}

#define MLA_LINEAR(NAME, DT) \
  MLA_KERNEL MLA_BOUNDS(MLA_THREADS) NAME(const LinP P) { linear_impl<DT>(P); }
MLA_LINEAR(mla_linear_f32, 0)
MLA_LINEAR(mla_linear_f16, 1)
MLA_LINEAR(mla_linear_bf16, 2)

// ---------------------------------------------------------------------------
// RoPE helpers. cos/sin tables are [max_seq][p/2] f32 (YaRN scaling applied),
// filled on the host with mla_core::rope. layout 0: pairs (2i, 2i+1); 1: (i, i+p/2).

MLA_DEV void rope_pair(u32 layout, u32 p, u32 i, u32 *a, u32 *b) {
  if (layout == 0) {
    *a = 2u * i;
    *b = 2u * i + 1u;
  } else {
    *a = i;
    *b = i + p / 2u;
  }
}

// The cache rows (element type CT) and the absorbed queries (kv_b_proj of type WT).
template <int CT, int WT> MLA_DEV void prep_impl(const PrepP &P) {
  u32 bx = blockIdx.x;
  if (bx < P.absorb_blocks) {
    // Absorbed queries.
    u32 nj = mla_div_ceil(P.r, MLA_THREADS);
    u32 jb = bx % nj, rest = bx / nj;
    u32 h = rest % P.n_heads, tb = rest / P.n_heads;
    u32 j = jb * MLA_THREADS + threadIdx.x;
    u32 t0 = tb * MLA_TT;
    if (j >= P.r || t0 >= P.n_tok) return;
    u32 nt = mla_min_u(MLA_TT, P.n_tok - t0);
    float acc[MLA_TT];
#pragma unroll
    for (int k = 0; k < MLA_TT; k++) acc[k] = 0.0f;
    u64 wrow0 = (u64)h * (P.n + P.v);
    const float *qh = (const float *)P.q + (u64)t0 * P.n_heads * P.qk + (u64)h * P.qk;
    for (u32 i = 0; i < P.n; i++) {
      float w = ld<WT>((const void *)P.kvb, (wrow0 + i) * P.r + j);
#pragma unroll
      for (int t = 0; t < MLA_TT; t++) {
        if ((u32)t < nt) acc[t] += w * qh[(u64)t * P.n_heads * P.qk + i];
      }
    }
#pragma unroll
    for (int t = 0; t < MLA_TT; t++) {
      if ((u32)t < nt) ((float *)P.qt)[((u64)(t0 + t) * P.n_heads + h) * P.r + j] = acc[t];
    }
    return;
  }
  // Cache rows.
  MLA_SHARED(float, red, MLA_WARPS);
  u32 t = bx - P.absorb_blocks;
  if (t >= P.n_tok) return;
  const float *xr = (const float *)P.kva + (u64)t * P.kva_stride;
  const float *nw = (const float *)P.norm_w;
  void *cache = (void *)P.cache;
  u64 pos = (u64)P.start + t;
  u64 dst = pos * P.cache_row;
  float ss = 0.0f;
  for (u32 i = threadIdx.x; i < P.r; i += MLA_THREADS) ss += xr[i] * xr[i];
  ss = block_sum(ss, red);
  float inv = 1.0f / mla_sqrt(ss / (float)P.r + P.eps);
  for (u32 i = threadIdx.x; i < P.r; i += MLA_THREADS) st<CT>(cache, dst + i, nw[i] * (xr[i] * inv));
  u32 half = P.p / 2u;
  const float *ct = (const float *)P.cos_t + pos * half;
  const float *sn = (const float *)P.sin_t + pos * half;
  for (u32 k = threadIdx.x; k < P.n_rope * half; k += MLA_THREADS) {
    u32 s = k / half, i = k % half, a, b;
    rope_pair(P.layout, P.p, i, &a, &b);
    u32 off = P.r + s * P.p;
    float x0 = xr[off + a], x1 = xr[off + b];
    float c = ct[i], sv = sn[i];
    st<CT>(cache, dst + off + a, x0 * c - x1 * sv);
    st<CT>(cache, dst + off + b, x1 * c + x0 * sv);
  }
}

#define MLA_PREP(NAME, CT, WT) \
  MLA_KERNEL MLA_BOUNDS(MLA_THREADS) NAME(const PrepP P) { prep_impl<CT, WT>(P); }
MLA_PREP(mla_prep_cf32_wf32, 0, 0)
MLA_PREP(mla_prep_cf32_wf16, 0, 1)
MLA_PREP(mla_prep_cf32_wbf16, 0, 2)
MLA_PREP(mla_prep_cf16_wf32, 1, 0)
MLA_PREP(mla_prep_cf16_wf16, 1, 1)
MLA_PREP(mla_prep_cf16_wbf16, 1, 2)
MLA_PREP(mla_prep_cbf16_wf32, 2, 0)
MLA_PREP(mla_prep_cbf16_wf16, 2, 1)
MLA_PREP(mla_prep_cbf16_wbf16, 2, 2)

// ---------------------------------------------------------------------------
// Attention over the latent cache, split over the context (flash-decoding).
// Block (group gi, split s, token t) takes heads h0 = gi*G .. h0+gb-1
// (gb = min(G, H - h0)) and cached positions
// [s*split_len, min((s+1)*split_len, start+t+1)), in tiles of `tile_rows` rows
// copied into shared memory (double-buffered: the next tile's copy is in flight
// while the current one is used), and computes per head
//   score(pos) = (qt[t][h] . c_pos + q_pe[t][h] . k_pe_pos(h)) * scale
// (q_pe rotated here at position start + t; k_pe shared or per head) with an
// online softmax (running max m, sum l) and the unnormalised latent sum
//   acc_h = sum_pos exp(score - m) c_pos.
// Outputs per (t, s, h): part_acc[(t*n_split + s)*H + h][r], part_ml[...] = (m, l);
// an empty range gives m = -inf, l = 0, acc = 0.
//
// Tile copies (`mode`, chosen by the host): 0 = element by element (any
// layout); 1 = 16-byte chunks staged in registers during the previous tile
// (cache rows and segments 16-byte aligned); 2 = 16-byte cp.async (sm_80+, same
// alignment). A tile row holds the latent [0, r), zero-padded to r4, then the
// rope key(s): the shared one at [r4, r4 + p), or the group's gb per-head keys at
// [r4 + g*p4, + p) (only gb of them: the last group may have fewer than G heads).

// Copies rows base .. base+nrows of the group's cache columns into a tile.
template <int DT>
MLA_DEV void tile_copy(const AttnP &P, void *tile, u32 tstride, u64 base, u32 nrows, u32 h0,
                       u32 gb, u32 r4, u32 p4, u32 mode) {
  const char *cache = (const char *)P.cache;
  u32 es = MLA_ESIZE(DT);
  u32 tid = threadIdx.x;
  if (mode != 0) {
    // 16-byte chunks: segment A = [0, r + p) (shared key) or [0, r), segment B =
    // the group's rope keys [r + h0*p, + gb*p) (per head); all multiples of 16 bytes.
    u32 a_bytes = (P.per_head ? P.r : P.r + P.p) * es;
    u32 b_bytes = P.per_head ? gb * P.p * es : 0u;
    u32 cpr = (a_bytes + b_bytes) / 16u;
    u32 total = nrows * cpr;
    for (u32 e = tid; e < total; e += MLA_THREADS) {
      u32 c = e / cpr, ch = e % cpr;
      u32 off = ch * 16u;
      u64 src = (base + c) * P.cache_row * es;
      u32 dst = c * tstride * es;
      if (off < a_bytes) {
        src += off;
        dst += off;
      } else {
        src += (u64)(P.r + h0 * P.p) * es + (off - a_bytes);
        dst += r4 * es + (off - a_bytes);
      }
#if MLA_ARCH >= 800
      if (mode == 2) {
        cp_async16((char *)tile + dst, cache + src, 16u);
        continue;
      }
#endif
      copy16((char *)tile + dst, cache + src);
    }
    return;
  }
  // Element by element: latent, then rope key(s).
  u32 rope_n = P.per_head ? gb * P.p : P.p;
  u32 per_row = P.r + rope_n;
  for (u32 e = tid; e < nrows * per_row; e += MLA_THREADS) {
    u32 c = e / per_row, k = e % per_row;
    u64 row = (base + c) * P.cache_row;
    u64 col;
    u32 dcol;
    if (k < P.r) {
      col = k;
      dcol = k;
    } else {
      u32 kk = k - P.r, g = kk / P.p, i = kk % P.p;
      col = (u64)P.r + (P.per_head ? (u64)(h0 + g) * P.p : 0u) + i;
      dcol = r4 + g * p4 + i;
    }
    if (DT == 0)
      ((float *)tile)[(u64)c * tstride + dcol] = ((const float *)cache)[row + col];
    else
      ((u16 *)tile)[(u64)c * tstride + dcol] = ((const u16 *)cache)[row + col];
  }
}

// Zeroes a tile's padding columns [r, r4) and, for each rope key slot g < n_keys,
// [r4 + g*p4 + p, r4 + (g+1)*p4), in every one of `rows` rows.
template <int DT>
MLA_DEV void tile_zero_pads(void *tile, u32 tstride, u32 rows, u32 r, u32 r4, u32 p, u32 p4,
                            u32 n_keys) {
  u32 per_row = (r4 - r) + n_keys * (p4 - p);
  for (u32 e = threadIdx.x; e < rows * per_row; e += MLA_THREADS) {
    u32 c = e / per_row, k = e % per_row;
    u32 col = k < r4 - r ? r + k : r4 + ((k - (r4 - r)) / (p4 - p)) * p4 + p + (k - (r4 - r)) % (p4 - p);
    if (DT == 0) ((float *)tile)[(u64)c * tstride + col] = 0.0f;
    else ((u16 *)tile)[(u64)c * tstride + col] = 0;
  }
}

// Loads the group's queries at position start + t (absorbed part, then q_pe
// rotated) as f32 into q_s[g][0 .. r4 + p4), zero-padded; rows g < gb.
MLA_DEV void load_queries(const AttnP &P, float *q_s, u32 qstride, u32 h0, u32 gb, u32 t, u32 r4,
                          u32 p4) {
  u32 tid = threadIdx.x;
  u64 pos = (u64)P.start + t;
  u32 half = P.p / 2u;
  const float *ct = (const float *)P.cos_t + pos * half;
  const float *sn = (const float *)P.sin_t + pos * half;
  for (u32 g = 0; g < gb; g++) {
    const float *src_a = (const float *)P.qt + ((u64)t * P.n_heads + h0 + g) * P.r;
    const float *src_p = (const float *)P.q + ((u64)t * P.n_heads + h0 + g) * P.qk + P.n;
    float *dq = q_s + (u64)g * qstride;
    for (u32 k = tid; k < r4; k += MLA_THREADS) dq[k] = k < P.r ? src_a[k] : 0.0f;
    for (u32 i = tid; i < half; i += MLA_THREADS) {
      u32 a, b;
      rope_pair(P.layout, P.p, i, &a, &b);
      float x0 = src_p[a], x1 = src_p[b], c = ct[i], s = sn[i];
      dq[r4 + a] = x0 * c - x1 * s;
      dq[r4 + b] = x1 * c + x0 * s;
    }
    for (u32 k = P.p + tid; k < p4; k += MLA_THREADS) dq[r4 + k] = 0.0f;
  }
}

// Rows of the split of block (s, t): [lo, hi).
MLA_DEV void split_range(const AttnP &P, u32 s, u32 t, u64 *lo, u64 *hi) {
  u64 pos_end = (u64)P.start + t + 1u;
  *lo = (u64)s * P.split_len;
  *hi = *lo + P.split_len;
  if (*hi > pos_end) *hi = pos_end;
}

// Where a tile's 16-byte chunks come from and go (mode 1): segment A is the first
// a_bytes of a cache row, segment B starts at src_b in the row and dst_b in the
// tile row.
struct StageGeom {
  u32 a_bytes, cpr, dst_b, tile_row_bytes;
  u64 src_b, row_bytes;
};

// Loads this thread's chunks of rows base .. base+nrows into registers.
MLA_DEV void stage_load(mla_u4 (&stage)[MLA_PREFETCH], const StageGeom &sg, const char *cache,
                        u64 base, u32 nrows) {
  u32 tid = threadIdx.x;
#pragma unroll
  for (int i = 0; i < MLA_PREFETCH; i++) {
    u32 e = tid + (u32)i * MLA_THREADS;
    if (e < nrows * sg.cpr) {
      u32 c = e / sg.cpr, off = (e % sg.cpr) * 16u;
      u64 src = (base + c) * sg.row_bytes + (off < sg.a_bytes ? off : sg.src_b + (off - sg.a_bytes));
#if defined(MLA_EMU)
      mla_emu_check_align(cache + src, 16u);
#endif
      mla_u4 v = *(const mla_u4 *)(cache + src);
      stage[i].x = v.x; // component-wise: keeps `stage` in registers
      stage[i].y = v.y;
      stage[i].z = v.z;
      stage[i].w = v.w;
    }
  }
}

// Stores the chunks staged by stage_load into a tile.
MLA_DEV void stage_store(const mla_u4 (&stage)[MLA_PREFETCH], const StageGeom &sg, char *tile,
                         u32 nrows) {
  u32 tid = threadIdx.x;
#pragma unroll
  for (int i = 0; i < MLA_PREFETCH; i++) {
    u32 e = tid + (u32)i * MLA_THREADS;
    if (e < nrows * sg.cpr) {
      u32 c = e / sg.cpr, off = (e % sg.cpr) * 16u;
      u32 dst = c * sg.tile_row_bytes + (off < sg.a_bytes ? off : sg.dst_b + (off - sg.a_bytes));
      mla_u4 v;
      v.x = stage[i].x;
      v.y = stage[i].y;
      v.z = stage[i].z;
      v.w = stage[i].w;
      *(mla_u4 *)(tile + dst) = v;
    }
  }
}

// CUDA cores, register-tiled. Per tile: (1) scores: the 8 warps split the
// columns, each lane holds HPL heads x RPL rows of partial sums (two 16-byte
// loads feed 4 * HPL * RPL multiply-adds), the warps' partials meet in shared
// memory; (2) softmax: a warp per head, a lane per row; (3) latent sums: a thread
// owns four consecutive columns of every head (64 accumulators for 16 heads) for
// a subset of the rows. GMAX heads per block, QMAX column quads per thread:
// g16 (r <= 1024), g4 (r <= 2048), g1 (r <= 8192).
//
// Shared memory (bytes, in this order; the host computes the same sum):
//   q_s   f32 [G][qstride]        qstride = r4 + p4
//   tiles DT  [2][TR][tstride]    tstride = r4 + nk*p4, + padding; at least
//                                 G * r4 floats (the row groups' final sums)
//   s_part f32 [8][G][TR]         per-warp partial scores
//   p_s   f32 [TR][G4]            softmax weights, G4 = G rounded up to 4
//   m_s, l_s, corr_s f32 [G] each
// and the tile area doubles as the staging area of the final row-group sums.
template <int DT, int GMAX, int QMAX> MLA_DEV void attn_cc_impl(const AttnP &P) {
  constexpr u32 LG = GMAX >= 4 ? 4u : 1u;       // lanes across heads
  constexpr u32 HPL = GMAX / LG;                // heads per lane
  constexpr u32 RL = 32u / LG;                  // lanes across rows
  constexpr u32 RPL = MLA_CC_TILE_MAX / RL;     // rows per lane
  u32 tid = threadIdx.x, lane = tid & 31u, warp = tid >> 5;
  u32 G = P.G, TR = P.tile_rows;
  u32 h0 = blockIdx.x * G;
  u32 s = blockIdx.y, t = blockIdx.z;
  if (h0 >= P.n_heads || s >= P.n_split || t >= P.n_tok) return; // uniform per block
  u32 gb = mla_min_u(G, P.n_heads - h0);
  u32 r = P.r, p = P.p;
  u32 r4 = (r + 3u) & ~3u, p4 = (p + 3u) & ~3u;
  u32 nk = P.per_head ? G : 1u;
  u32 qstride = r4 + p4;
  u32 es = MLA_ESIZE(DT);
  u32 tstride = r4 + nk * p4;
  // Row stride padding: 16-byte rows, stride in words = 4 mod 8 (conflict-free
  // 16-byte loads of eight consecutive rows).
  {
    u32 words = (tstride * es + 15u) / 16u * 4u;
    if ((words & 7u) != 4u) words += 4u;
    tstride = words * 4u / es;
  }
  u32 G4 = (G + 3u) & ~3u;
  char *smem = MLA_DYN_SMEM(char);
  float *q_s = (float *)smem;
  char *tiles = smem + (u64)G * qstride * 4u;
  u64 tile_bytes = (u64)TR * tstride * es;
  // Latent sums: thread -> (column quad, row group); the row groups' sums meet
  // at the end in the tile area (`stage` bytes), which is made large enough.
  u32 nq = r4 / 4u;
  u32 RG = nq >= MLA_THREADS ? 1u : mla_min_u(MLA_THREADS / nq, 32u);
  u64 stage_bytes = RG > 1u ? (u64)G * r4 * 4u : 0u;
  u64 tile_area = 2u * tile_bytes > stage_bytes ? 2u * tile_bytes : stage_bytes;
  float *s_part = (float *)(tiles + tile_area);
  float *p_s = s_part + 8u * G * TR;
  float *m_s = p_s + TR * G4;
  float *l_s = m_s + G;
  float *corr_s = l_s + G;

  u64 lo, hi;
  split_range(P, s, t, &lo, &hi);
  u32 mode = P.mode;
#if MLA_ARCH < 800
  if (mode == 2) mode = 1; // no cp.async before sm_80 (the host never asks)
#endif
  load_queries(P, q_s, qstride, h0, gb, t, r4, p4);
  if (mode == 0) {
    tile_zero_pads<DT>(tiles, tstride, TR, r, r4, p, p4, P.per_head ? gb : 1u);
    tile_zero_pads<DT>(tiles + tile_bytes, tstride, TR, r, r4, p, p4, P.per_head ? gb : 1u);
  }
  if (tid < G) {
    m_s[tid] = MLA_NEG_INF;
    l_s[tid] = 0.0f;
  }

  u32 quad0 = nq >= MLA_THREADS ? tid : tid % nq;
  u32 rg = nq >= MLA_THREADS ? 0u : tid / nq;
  float acc[QMAX][GMAX][4];
#pragma unroll
  for (int qq = 0; qq < QMAX; qq++)
#pragma unroll
    for (int g = 0; g < GMAX; g++)
#pragma unroll
      for (int i = 0; i < 4; i++) acc[qq][g][i] = 0.0f;

  u32 ntiles = hi > lo ? (u32)mla_div_ceil((u32)(hi - lo), TR) : 0u;
  // Register staging (mode 1).
  mla_u4 stage[MLA_PREFETCH];
  StageGeom sg;
  sg.a_bytes = (P.per_head ? r : r + p) * es;
  sg.cpr = (sg.a_bytes + (P.per_head ? gb * p * es : 0u)) / 16u;
  sg.src_b = (u64)(r + h0 * p) * es;
  sg.dst_b = r4 * es;
  sg.row_bytes = (u64)P.cache_row * es;
  sg.tile_row_bytes = tstride * es;
  auto rows_of = [&](u32 it) -> u32 {
    u64 b = lo + (u64)it * TR;
    return (u32)((hi - b) < TR ? (hi - b) : TR);
  };
  if (ntiles > 0) {
    if (mode == 1) {
      stage_load(stage, sg, (const char *)P.cache, lo, rows_of(0));
      stage_store(stage, sg, tiles, rows_of(0));
    } else {
      tile_copy<DT>(P, tiles, tstride, lo, rows_of(0), h0, gb, r4, p4, mode);
#if MLA_ARCH >= 800
      if (mode == 2) cp_async_commit();
#endif
    }
  }
  for (u32 it = 0; it < ntiles; it++) {
    u64 base = lo + (u64)it * TR;
    u32 nrows = rows_of(it);
    char *cur = tiles + (it & 1u) * tile_bytes;
    char *nxt = tiles + ((it + 1u) & 1u) * tile_bytes;
    bool has_next = it + 1u < ntiles;
#if MLA_ARCH >= 800
    if (mode == 2) cp_async_wait<0>();
#endif
    MLA_SYNC(); // tile `it` complete; everyone is done with the previous iteration
    if (has_next) {
      if (mode == 1) stage_load(stage, sg, (const char *)P.cache, base + TR, rows_of(it + 1u));
#if MLA_ARCH >= 800
      if (mode == 2) {
        tile_copy<DT>(P, nxt, tstride, base + TR, rows_of(it + 1u), h0, gb, r4, p4, 2u);
        cp_async_commit();
      }
#endif
    }
    const void *tc = (const void *)cur;

    // (1) Scores: lane -> heads gq + LG*i, rows cl + RL*j; warp -> column quads.
    {
      u32 gq = lane % LG, cl = lane / LG;
      float sc[HPL][RPL];
#pragma unroll
      for (int i = 0; i < (int)HPL; i++)
#pragma unroll
        for (int j = 0; j < (int)RPL; j++) sc[i][j] = 0.0f;
      u32 lq = r4 / 4u, per_w = mla_div_ceil(lq, MLA_WARPS);
      u32 k0 = warp * per_w, k1 = mla_min_u(lq, k0 + per_w);
      for (u32 kq = k0; kq < k1; kq++) {
        f4 qv[HPL], cv[RPL];
#pragma unroll
        for (int i = 0; i < (int)HPL; i++) {
          u32 g = gq + LG * (u32)i;
          qv[i] = g < gb ? ld4f(q_s + (u64)g * qstride, kq) : f4{0, 0, 0, 0};
        }
#pragma unroll
        for (int j = 0; j < (int)RPL; j++) {
          u32 c = cl + RL * (u32)j;
          cv[j] = c < nrows ? ld4<DT>(tc, ((u64)c * tstride) / 4u + kq) : f4{0, 0, 0, 0};
        }
#pragma unroll
        for (int i = 0; i < (int)HPL; i++)
#pragma unroll
          for (int j = 0; j < (int)RPL; j++) sc[i][j] += dot4(qv[i], cv[j]);
      }
      // Rope part: p4 / 4 quads, split over the warps likewise.
      u32 pq = p4 / 4u, per_wp = mla_div_ceil(pq, MLA_WARPS);
      u32 j0 = warp * per_wp, j1 = mla_min_u(pq, j0 + per_wp);
      for (u32 kq = j0; kq < j1; kq++) {
#pragma unroll
        for (int i = 0; i < (int)HPL; i++) {
          u32 g = gq + LG * (u32)i;
          if (g >= gb) continue;
          f4 qv = ld4f(q_s + (u64)g * qstride + r4, kq);
          u32 kcol = r4 + (P.per_head ? g * p4 : 0u);
#pragma unroll
          for (int j = 0; j < (int)RPL; j++) {
            u32 c = cl + RL * (u32)j;
            if (c < nrows) sc[i][j] += dot4(qv, ld4<DT>(tc, ((u64)c * tstride + kcol) / 4u + kq));
          }
        }
      }
#pragma unroll
      for (int i = 0; i < (int)HPL; i++) {
        u32 g = gq + LG * (u32)i;
#pragma unroll
        for (int j = 0; j < (int)RPL; j++) {
          u32 c = cl + RL * (u32)j;
          if (g < G && c < TR) s_part[((u64)warp * G + g) * TR + c] = sc[i][j];
        }
      }
    }
    MLA_SYNC();
    // (2) Online softmax: warp w takes heads w, w + 8, ...; lane = row. Columns
    // gb .. G4 of p_s get zeros (read by the four-wide loads below).
    for (u32 g = warp; g < G4; g += MLA_WARPS) {
      if (g >= gb) {
        if (lane < TR) p_s[lane * G4 + g] = 0.0f;
        continue;
      }
      bool valid = lane < nrows;
      float sv = MLA_NEG_INF;
      if (valid) {
        float sum = 0.0f;
        for (u32 w = 0; w < MLA_WARPS; w++) sum += s_part[((u64)w * G + g) * TR + lane];
        sv = sum * P.scale;
      }
      float m_old = m_s[g];
      float m_new = mla_max(m_old, warp_max(sv));
      float e = valid ? mla_exp(sv - m_new) : 0.0f;
      float l_tile = warp_sum(e);
      if (lane < TR) p_s[lane * G4 + g] = e;
      MLA_SYNCWARP(); // every lane has read m_s[g] before lane 0 writes it
      if (lane == 0) {
        float corr = m_old == MLA_NEG_INF ? 0.0f : mla_exp(m_old - m_new);
        l_s[g] = l_s[g] * corr + l_tile;
        m_s[g] = m_new;
        corr_s[g] = corr;
      }
    }
    MLA_SYNC();
    // (3) Latent sums over this thread's rows.
    if (rg < RG) {
      float corr[GMAX];
#pragma unroll
      for (int g = 0; g < GMAX; g++) corr[g] = (u32)g < gb ? corr_s[g] : 0.0f;
#pragma unroll
      for (int qq = 0; qq < QMAX; qq++) {
        u32 quad = quad0 + (u32)qq * MLA_THREADS;
        if (quad >= nq) continue;
#pragma unroll
        for (int g = 0; g < GMAX; g++)
#pragma unroll
          for (int i = 0; i < 4; i++) acc[qq][g][i] *= corr[g];
        for (u32 c = rg; c < nrows; c += RG) {
          f4 cv = ld4<DT>(tc, ((u64)c * tstride) / 4u + quad);
#pragma unroll
          for (int g4 = 0; g4 < (GMAX + 3) / 4; g4++) {
            if ((u32)g4 * 4u >= gb) continue;
            f4 pv = ld4f(p_s + (u64)c * G4, (u32)g4);
            float pw[4] = {pv.a, pv.b, pv.c, pv.d};
#pragma unroll
            for (int gi = 0; gi < 4; gi++) {
              int g = g4 * 4 + gi;
              if (g < GMAX) {
                acc[qq][g][0] += pw[gi] * cv.a;
                acc[qq][g][1] += pw[gi] * cv.b;
                acc[qq][g][2] += pw[gi] * cv.c;
                acc[qq][g][3] += pw[gi] * cv.d;
              }
            }
          }
        }
      }
    }
    if (has_next) {
      if (mode == 1) stage_store(stage, sg, nxt, rows_of(it + 1u));
      if (mode == 0) tile_copy<DT>(P, nxt, tstride, base + TR, rows_of(it + 1u), h0, gb, r4, p4, 0u);
    }
  }
  // Row groups 1.. add their sums into row group 0 through the tile area.
  float *stage_s = (float *)tiles;
  for (u32 src = 1; src < RG; src++) {
    MLA_SYNC();
    if (rg == src) {
#pragma unroll
      for (int qq = 0; qq < QMAX; qq++) {
        u32 quad = quad0 + (u32)qq * MLA_THREADS;
        if (quad >= nq) continue;
#pragma unroll
        for (int g = 0; g < GMAX; g++)
          if ((u32)g < gb)
#pragma unroll
            for (int i = 0; i < 4; i++) stage_s[((u64)g * nq + quad) * 4u + i] = acc[qq][g][i];
      }
    }
    MLA_SYNC();
    if (rg == 0) {
#pragma unroll
      for (int qq = 0; qq < QMAX; qq++) {
        u32 quad = quad0 + (u32)qq * MLA_THREADS;
        if (quad >= nq) continue;
#pragma unroll
        for (int g = 0; g < GMAX; g++)
          if ((u32)g < gb)
#pragma unroll
            for (int i = 0; i < 4; i++) acc[qq][g][i] += stage_s[((u64)g * nq + quad) * 4u + i];
      }
    }
  }
  MLA_SYNC();
  u64 slot = ((u64)t * P.n_split + s) * P.n_heads + h0;
  float *part_acc = (float *)P.part_acc;
  if (rg == 0) {
#pragma unroll
    for (int qq = 0; qq < QMAX; qq++) {
      u32 quad = quad0 + (u32)qq * MLA_THREADS;
      if (quad >= nq) continue;
#pragma unroll
      for (int g = 0; g < GMAX; g++) {
        if ((u32)g >= gb) continue;
#pragma unroll
        for (int i = 0; i < 4; i++) {
          u32 j = quad * 4u + (u32)i;
          if (j < r) part_acc[(slot + (u32)g) * r + j] = acc[qq][g][i];
        }
      }
    }
  }
  if (tid < gb) {
    ((float *)P.part_ml)[(slot + tid) * 2u] = m_s[tid];
    ((float *)P.part_ml)[(slot + tid) * 2u + 1u] = l_s[tid];
  }
}

#define MLA_ATTN_CC(NAME, DT, GMAX, QMAX) \
  MLA_KERNEL MLA_BOUNDS(MLA_THREADS) NAME(const AttnP P) { attn_cc_impl<DT, GMAX, QMAX>(P); }
MLA_ATTN_CC(mla_attn_cc_f32_g16, 0, 16, 1)
MLA_ATTN_CC(mla_attn_cc_f16_g16, 1, 16, 1)
MLA_ATTN_CC(mla_attn_cc_bf16_g16, 2, 16, 1)
MLA_ATTN_CC(mla_attn_cc_f32_g4, 0, 4, 2)
MLA_ATTN_CC(mla_attn_cc_f16_g4, 1, 4, 2)
MLA_ATTN_CC(mla_attn_cc_bf16_g4, 2, 4, 2)
MLA_ATTN_CC(mla_attn_cc_f32_g1, 0, 1, 8)
MLA_ATTN_CC(mla_attn_cc_f16_g1, 1, 1, 8)
MLA_ATTN_CC(mla_attn_cc_bf16_g1, 2, 1, 8)

#if MLA_ARCH >= 800
// Tensor cores (sm_80+), f16 / bf16 caches. 16 heads per block (the mma's M;
// fewer heads are zero rows), tiles of TR = 32 or 64 cached rows.
//   Scores S[16][TR] = Q[16][K] . T[TR][K]^T (K = r, plus the shared rope key:
//   mma over K rounded up to 16); warp w takes rows (n) block w % (TR/8) and the
//   K part w / (TR/8). Q is split into hi + lo parts of type DT (two mma).
//   Per-head rope keys: their part of the scores on CUDA cores.
//   Softmax as in the CUDA-core kernel; P[16][TR] also split into hi + lo.
//   Latent sums O[16][r] += P . T[TR][0..r): warp w owns a range of 8-column
//   blocks (NB = 8 blocks of 8 columns: r <= 512 per block), accumulators in
//   registers for the whole split.
// f16 only: each head's query is scaled by 2^-e_h (e_h >= 0, exact) so that it
// fits f16's range; its scores are scaled back.
//
// Shared memory (bytes, in this order; the host computes the same sum):
//   qh, ql  DT [16][ks]           ks = roundup(K, 16) + 8 (K = r + shared p)
//   qpe     f32 [16][p4]          per-head keys only (else 0 bytes)
//   tiles   DT [2][TR][ts]        ts = ks, or per-head keys: max(K16, r4 + G*p4)
//                                 rounded up to 16, + 8 (G = min(16, H))
//   s_part  f32 [KS][16][TR]      KS = 8 / (TR/8)
//   ph, pl  DT [16][TR + 8]
//   m_s, l_s, corr_s, qexp f32 [16] each
template <int DT, int NB> MLA_DEV void attn_tc_impl(const AttnP &P) {
  u32 tid = threadIdx.x, lane = tid & 31u, warp = tid >> 5;
  u32 TR = P.tile_rows;
  u32 h0 = blockIdx.x * MLA_TC_HEADS;
  u32 s = blockIdx.y, t = blockIdx.z;
  if (h0 >= P.n_heads || s >= P.n_split || t >= P.n_tok) return;
  u32 gb = mla_min_u(MLA_TC_HEADS, P.n_heads - h0);
  u32 r = P.r, p = P.p;
  u32 r4 = (r + 3u) & ~3u, p4 = (p + 3u) & ~3u;
  // mma part of the scores: the latent, zero-padded to r4, then the shared
  // rope key (as the tile and q layouts hold them); per-head keys: latent only.
  u32 K = P.per_head ? r : r4 + p;
  u32 K16 = (K + 15u) & ~15u;
  u32 ks = K16 + 8u;                          // row stride: words = 4 mod 8
  // Tile row: [latent | shared rope key] (mma, zero-padded to K16), per-head keys
  // at r4 + g*p4 for the G = min(16, H) heads a group can have.
  u32 rope_end = r4 + P.G * p4;
  u32 ts = P.per_head ? ((rope_end > K16 ? rope_end : K16) + 15u) / 16u * 16u + 8u : ks;
  char *smem = MLA_DYN_SMEM(char);
  u16 *qh = (u16 *)smem;
  u16 *ql = qh + MLA_TC_HEADS * ks;
  float *qpe = (float *)(ql + MLA_TC_HEADS * ks);
  u32 qpe_n = P.per_head ? MLA_TC_HEADS * p4 : 0u;
  char *tiles = (char *)(qpe + qpe_n);
  u64 tile_bytes = (u64)TR * ts * 2u;
  u32 NBLK = TR / 8u, KS = MLA_WARPS / NBLK;
  float *s_part = (float *)(tiles + 2u * tile_bytes);
  u32 pst = TR + 8u;
  u16 *ph = (u16 *)(s_part + KS * MLA_TC_HEADS * TR);
  u16 *pl = ph + MLA_TC_HEADS * pst;
  float *m_s = (float *)(pl + MLA_TC_HEADS * pst);
  float *l_s = m_s + MLA_TC_HEADS;
  float *corr_s = l_s + MLA_TC_HEADS;
  float *qexp = corr_s + MLA_TC_HEADS;

  u64 lo, hi;
  split_range(P, s, t, &lo, &hi);
  u32 mode = P.mode;

  // Queries: f32 into the tile area first (it is free until the first tile),
  // then hi/lo parts; the per-head rope part stays f32 in qpe.
  {
    float *qf = (float *)tiles;
    u32 qfs = r4 + p4;
    load_queries(P, qf, qfs, h0, gb, t, r4, p4);
    MLA_SYNC();
    // Per-head exponent (f16 only): max |q_h| * 2^-e < 2^15.
    for (u32 g = warp; g < MLA_TC_HEADS; g += MLA_WARPS) {
      float mx = 0.0f;
      if (g < gb && DT == 1)
        for (u32 k = lane; k < K; k += 32) {
          float v = qf[(u64)g * qfs + k];
          v = v < 0.0f ? -v : v;
          mx = mla_max(mx, v);
        }
      mx = warp_max(mx);
      if (lane == 0) {
        int e = (int)((mla_f32_to_bits(mx) >> 23) & 0xffu) - 127 - 14;
        qexp[g] = (float)(e > 0 ? e : 0);
      }
    }
    MLA_SYNC();
    for (u32 e = tid; e < MLA_TC_HEADS * ks; e += MLA_THREADS) {
      u32 g = e / ks, k = e % ks;
      float v = 0.0f;
      if (g < gb && k < K) v = qf[(u64)g * qfs + k];
      if (DT == 1) v *= mla_bits_to_f32((u32)(127 - (int)qexp[g]) << 23); // * 2^-e
      u32 hbits = f32_to_half<DT>(v);
      qh[e] = (u16)hbits;
      ql[e] = (u16)f32_to_half<DT>(v - half_to_f32<DT>(hbits));
    }
    if (P.per_head)
      for (u32 e = tid; e < MLA_TC_HEADS * p4; e += MLA_THREADS) {
        u32 g = e / p4, k = e % p4;
        qpe[e] = g < gb ? qf[(u64)g * qfs + r4 + k] : 0.0f;
      }
    MLA_SYNC(); // the tile area is free again
  }
  // Zero padding of both tile buffers: columns [K, K16) for the mma (never
  // written by the copies), and for element copies the latent's [r, r4) and the
  // rope keys' pads (16-byte copies have none: r and p are whole chunks).
  for (u32 b = 0; b < 2; b++) {
    u16 *tb = (u16 *)(tiles + b * tile_bytes);
    u32 padw = K16 - K;
    for (u32 e = tid; e < TR * padw; e += MLA_THREADS) tb[(u64)(e / padw) * ts + K + e % padw] = 0;
    if (mode == 0) tile_zero_pads<DT>(tb, ts, TR, r, r4, p, p4, P.per_head ? gb : 1u);
  }
  if (tid < MLA_TC_HEADS) {
    m_s[tid] = MLA_NEG_INF;
    l_s[tid] = 0.0f;
  }
  // With per-head keys the columns [K, K16) zeroed above can hold rope keys
  // that the first tile's copy (another thread's) writes: order the two.
  MLA_SYNC();

  float acc[NB][4];
#pragma unroll
  for (int b = 0; b < NB; b++)
#pragma unroll
    for (int i = 0; i < 4; i++) acc[b][i] = 0.0f;
  u32 nb8 = (r + 7u) / 8u;                 // 8-column blocks of the latent
  u32 per_warp = mla_div_ceil(nb8, MLA_WARPS);
  u32 ncol0 = warp * per_warp;             // this warp's first block

  u32 ntiles = hi > lo ? (u32)mla_div_ceil((u32)(hi - lo), TR) : 0u;
  auto rows_of = [&](u32 it) -> u32 {
    u64 b = lo + (u64)it * TR;
    return (u32)((hi - b) < TR ? (hi - b) : TR);
  };
  // A tile's rows past its end must be finite (their weights are 0): zeros.
  auto copy_tile = [&](char *tile, u64 base, u32 nrows) {
    tile_copy<DT>(P, tile, ts, base, nrows, h0, gb, r4, p4, mode);
    u32 w = K16;
    for (u32 e = tid; e < (TR - nrows) * w; e += MLA_THREADS)
      ((u16 *)tile)[(u64)(nrows + e / w) * ts + e % w] = 0;
    if (mode == 2) cp_async_commit();
  };
  if (ntiles > 0) copy_tile(tiles, lo, rows_of(0));
  for (u32 it = 0; it < ntiles; it++) {
    u64 base = lo + (u64)it * TR;
    u32 nrows = rows_of(it);
    const u16 *cur = (const u16 *)(tiles + (it & 1u) * tile_bytes);
    char *nxt = tiles + ((it + 1u) & 1u) * tile_bytes;
    bool has_next = it + 1u < ntiles;
    if (mode == 2) cp_async_wait<0>();
    MLA_SYNC();
    if (has_next && mode == 2) copy_tile(nxt, base + TR, rows_of(it + 1u));

    // (1) Scores.
    {
      u32 nblk = warp % NBLK, kpart = warp / NBLK;
      u32 ksteps = K16 / 16u, per = mla_div_ceil(ksteps, KS);
      u32 kk0 = kpart * per, kk1 = mla_min_u(ksteps, kk0 + per);
      float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      for (u32 kk = kk0; kk < kk1; kk++) {
        u32 a[4], b[2];
        frag_b_nk(b, cur, ts, kk * 16u, nblk * 8u, lane);
        frag_a(a, qh, ks, kk * 16u, lane);
        mma16816<DT>(d, a, b, d);
        frag_a(a, ql, ks, kk * 16u, lane);
        mma16816<DT>(d, a, b, d);
      }
#pragma unroll
      for (u32 i = 0; i < 4; i++)
        s_part[((u64)kpart * MLA_TC_HEADS + frag_c_row(lane, i)) * TR + nblk * 8u + frag_c_col(lane, i)] = d[i];
    }
    MLA_SYNC();
    // Per-head rope keys on CUDA cores: thread -> (head, row) pairs.
    if (P.per_head) {
      for (u32 e = tid; e < gb * nrows; e += MLA_THREADS) {
        u32 g = e / nrows, c = e % nrows;
        const u16 *kr = cur + (u64)c * ts + r4 + g * p4;
        const float *qr = qpe + (u64)g * p4;
        float sum = 0.0f;
        for (u32 k = 0; k < p; k++) sum += qr[k] * half_to_f32<DT>(kr[k]);
        s_part[(u64)g * TR + c] += sum; // K part 0's slot (one writer per (g, c))
      }
      MLA_SYNC();
    }
    // (2) Softmax: warp w takes heads w and w + 8; lane -> rows lane, lane + 32.
    for (u32 g = warp; g < MLA_TC_HEADS; g += MLA_WARPS) {
      float unscale = DT == 1 ? mla_bits_to_f32((u32)(127 + (int)qexp[g]) << 23) : 1.0f;
      float sv[2];
      float mx = MLA_NEG_INF;
      for (u32 j = 0; j < 2; j++) {
        u32 c = lane + 32u * j;
        sv[j] = MLA_NEG_INF;
        if (c < nrows) {
          float sum = 0.0f;
          for (u32 kp = 0; kp < KS; kp++) sum += s_part[((u64)kp * MLA_TC_HEADS + g) * TR + c];
          sv[j] = sum * unscale * P.scale;
          mx = mla_max(mx, sv[j]);
        }
      }
      float m_old = m_s[g];
      float m_new = mla_max(m_old, warp_max(mx));
      float esum = 0.0f;
      for (u32 j = 0; j < 2; j++) {
        u32 c = lane + 32u * j;
        if (c >= TR) continue;
        float e = c < nrows ? mla_exp(sv[j] - m_new) : 0.0f;
        esum += e;
        u32 hbits = f32_to_half<DT>(e);
        ph[g * pst + c] = (u16)hbits;
        pl[g * pst + c] = (u16)f32_to_half<DT>(e - half_to_f32<DT>(hbits));
      }
      float l_tile = warp_sum(esum);
      MLA_SYNCWARP(); // every lane has read m_s[g] before lane 0 writes it
      if (lane == 0) {
        float corr = m_old == MLA_NEG_INF ? 0.0f : mla_exp(m_old - m_new);
        l_s[g] = l_s[g] * corr + l_tile;
        m_s[g] = m_new;
        corr_s[g] = corr;
      }
    }
    MLA_SYNC();
    // (3) Latent sums: O[16][cols] += P[16][TR] . T[TR][cols].
    {
      float c_lo = corr_s[lane >> 2], c_hi = corr_s[(lane >> 2) + 8u];
#pragma unroll
      for (int b = 0; b < NB; b++) {
        acc[b][0] *= c_lo;
        acc[b][1] *= c_lo;
        acc[b][2] *= c_hi;
        acc[b][3] *= c_hi;
      }
      for (u32 kk = 0; kk < TR / 16u; kk++) {
        u32 ah[4], al[4];
        frag_a(ah, ph, pst, kk * 16u, lane);
        frag_a(al, pl, pst, kk * 16u, lane);
#pragma unroll
        for (int b = 0; b < NB; b++) {
          u32 nb = ncol0 + (u32)b;
          if ((u32)b >= per_warp || nb >= nb8) continue;
          u32 bf[2];
          frag_b_kn(bf, cur, ts, kk * 16u, nb * 8u, lane);
          mma16816<DT>(acc[b], ah, bf, acc[b]);
          mma16816<DT>(acc[b], al, bf, acc[b]);
        }
      }
    }
    if (has_next && mode == 0) copy_tile(nxt, base + TR, rows_of(it + 1u));
  }
  MLA_SYNC();
  u64 slot = ((u64)t * P.n_split + s) * P.n_heads + h0;
  float *part_acc = (float *)P.part_acc;
#pragma unroll
  for (int b = 0; b < NB; b++) {
    u32 nb = ncol0 + (u32)b;
    if ((u32)b >= per_warp || nb >= nb8) continue;
#pragma unroll
    for (u32 i = 0; i < 4; i++) {
      u32 g = frag_c_row(lane, i), j = nb * 8u + frag_c_col(lane, i);
      if (g < gb && j < r) part_acc[(slot + g) * r + j] = acc[b][i];
    }
  }
  if (tid < gb) {
    ((float *)P.part_ml)[(slot + tid) * 2u] = m_s[tid];
    ((float *)P.part_ml)[(slot + tid) * 2u + 1u] = l_s[tid];
  }
}

#define MLA_ATTN_TC(NAME, DT, NB) \
  MLA_KERNEL MLA_BOUNDS(MLA_THREADS) NAME(const AttnP P) { attn_tc_impl<DT, NB>(P); }
MLA_ATTN_TC(mla_attn_tc_f16, 1, 8)
MLA_ATTN_TC(mla_attn_tc_bf16, 2, 8)

// The tensor-core helpers against a plain matrix product, on one warp (block
// thread 0..31; the other warps leave): d_kn = A . B + C with B from k-major
// storage b_kn[16][8], d_nk = A . B + C with B from n-major storage b_nk[8][16];
// A row-major [16][16] and C, D row-major [16][8] (16-bit elements of `dtype`
// 1 = f16, 2 = bf16; C and D f32). d holds d_kn then d_nk (256 floats).
MLA_KERNEL MLA_BOUNDS(MLA_THREADS) mla_selftest_mma(const SelftestP P) {
  u32 lane = threadIdx.x & 31u;
  if (threadIdx.x >= 32) return;
  u32 a[4], b[2];
  float c[4], d[4];
  frag_a(a, (const u16 *)P.a, 16u, 0u, lane);
  for (u32 pass = 0; pass < 2; pass++) {
    if (pass == 0) frag_b_kn(b, (const u16 *)P.b_kn, 8u, 0u, 0u, lane);
    else frag_b_nk(b, (const u16 *)P.b_nk, 16u, 0u, 0u, lane);
    for (u32 i = 0; i < 4; i++) c[i] = ((const float *)P.c)[frag_c_row(lane, i) * 8u + frag_c_col(lane, i)];
    if (P.dtype == 1) mma16816<1>(d, a, b, c);
    else mma16816<2>(d, a, b, c);
    for (u32 i = 0; i < 4; i++)
      ((float *)P.d)[pass * 128u + frag_c_row(lane, i) * 8u + frag_c_col(lane, i)] = d[i];
  }
}
#endif // MLA_ARCH >= 800

// Combines the splits of one (head h, token t) for 32 latent columns:
// M = max m_s, ctx[t][h][j] = sum_s exp(m_s - M) acc_s[j] / sum_s exp(m_s - M) l_s.
// Grid (H, n_tok, ceil(r / 32)); warp w sums splits s = w, w + 8, ... of the
// block's 32 columns (lane = column, coalesced), then the warps' sums are added.
// Dynamic shared memory: n_split floats.
MLA_KERNEL MLA_BOUNDS(MLA_THREADS) mla_attn_combine(const CombineP P) {
  MLA_SHARED(float, red, MLA_WARPS);
  MLA_SHARED(float, cols, MLA_WARPS * 32);
  float *w_s = MLA_DYN_SMEM(float);
  u32 h = blockIdx.x, t = blockIdx.y;
  if (h >= P.n_heads || t >= P.n_tok) return;
  const float *part_ml = (const float *)P.part_ml;
  const float *part_acc = (const float *)P.part_acc;
  u32 lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
  u32 j = blockIdx.z * 32u + lane;
  u64 slot0 = (u64)t * P.n_split * P.n_heads + h; // + s * n_heads
  float m = MLA_NEG_INF;
  for (u32 s = threadIdx.x; s < P.n_split; s += MLA_THREADS)
    m = mla_max(m, part_ml[(slot0 + (u64)s * P.n_heads) * 2u]);
  m = block_max(m, red);
  float den = 0.0f;
  for (u32 s = threadIdx.x; s < P.n_split; s += MLA_THREADS) {
    u64 sl = slot0 + (u64)s * P.n_heads;
    float l = part_ml[sl * 2u + 1u];
    float wgt = l > 0.0f ? mla_exp(part_ml[sl * 2u] - m) : 0.0f;
    w_s[s] = wgt;
    den += wgt * l;
  }
  den = block_sum(den, red); // its barriers also publish w_s
  float a = 0.0f;
  if (j < P.r) {
    for (u32 s = warp; s < P.n_split; s += MLA_WARPS) {
      float wgt = w_s[s];
      if (wgt != 0.0f) a += wgt * part_acc[(slot0 + (u64)s * P.n_heads) * P.r + j];
    }
  }
  cols[warp * 32u + lane] = a;
  MLA_SYNC();
  if (warp == 0 && j < P.r) {
    float sum = 0.0f;
    for (u32 w = 0; w < MLA_WARPS; w++) sum += cols[w * 32u + lane];
    ((float *)P.ctx)[((u64)t * P.n_heads + h) * P.r + j] = sum / den;
  }
}

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
