// mla-rt CUDA kernels: Multi-Head Latent Attention (DESIGN.md section 2) on the GPU.
//
// One source, three compilers:
//   - nvcc:   nvcc -ptx -arch=compute_72 -O3 mla.cu
//   - clang:  clang -x cuda --cuda-device-only -nocudainc -nocudalib
//             --cuda-gpu-arch=sm_72 -O3 -S mla.cu   (no CUDA headers, no libdevice)
//   - host C++ with MLA_EMU defined: the CPU emulator in tools/cuda-stub/ runs these
//     very kernels (one fiber per CUDA thread) to test the Rust driver code without
//     a GPU.
// Nothing here needs cuda_fp16.h or libdevice: f16/bf16 are converted by hand and
// the few math functions are wrapped below.
//
// Numerics: every sum accumulates in f32; weights and cache entries are widened in
// registers. Layouts are the engine's (row-major, PyTorch nn.Linear [out][in]).
//
// Kernel parameters are pointers (8 bytes), `unsigned` (4 bytes) and `float`; the
// Rust side (src/cuda/mod.rs) passes them in exactly this order and size.

#if !defined(MLA_EMU) && !defined(__global__)
// clang with -nocudainc: define the CUDA keywords ourselves.
#define MLA_CLANG_NOCUDAINC 1
#define __global__ __attribute__((global))
#define __device__ __attribute__((device))
#define __shared__ __attribute__((shared))
#include "__clang_cuda_builtin_vars.h"
#endif

#if defined(MLA_EMU)
#define MLA_DEV static inline
#define MLA_BOUNDS(n)
#elif defined(MLA_CLANG_NOCUDAINC)
#define MLA_DEV static __device__ __attribute__((always_inline)) inline
#define MLA_BOUNDS(n) __attribute__((launch_bounds(n)))
#else
#define MLA_DEV static __device__ __forceinline__
#define MLA_BOUNDS(n) __launch_bounds__(n)
#endif

#define MLA_KERNEL extern "C" __global__ void

typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned long long u64;

// Vector types of our own (no CUDA headers needed); the alignment makes a load of
// one of these a single 16- or 8-byte memory access.
struct __attribute__((aligned(16))) mla_v4 {
  float x, y, z, w;
};
struct __attribute__((aligned(8))) mla_u2 {
  u32 x, y;
};

// Threads per block of every kernel.
#define MLA_THREADS 256
#define MLA_WARPS (MLA_THREADS / 32)
// Tokens handled together by one warp in the linear / absorb kernels.
#define MLA_TT 8
// Cached rows per shared-memory tile of the attention kernel.
#define MLA_TILE 8

// ---------------------------------------------------------------------------
// Portable primitives.

#if defined(MLA_EMU)
// Provided by the emulator (tools/cuda-stub/emu.cpp) before it includes this file.
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
#define MLA_SYNC() mla_emu_syncthreads()
#define MLA_DYN_SMEM ((float *)mla_emu_dyn_smem())
#elif defined(MLA_CLANG_NOCUDAINC)
MLA_DEV float mla_exp(float x) { return __nvvm_ex2_approx_f(x * 1.4426950408889634f); }
MLA_DEV float mla_sqrt(float x) { return __builtin_sqrtf(x); }
MLA_DEV float mla_bits_to_f32(u32 u) { return __nvvm_bitcast_i2f((int)u); }
MLA_DEV u32 mla_f32_to_bits(float f) { return (u32)__nvvm_bitcast_f2i(f); }
MLA_DEV float mla_shfl_xor(float v, int m) {
  return __nvvm_shfl_sync_bfly_f32(0xffffffffu, v, m, 0x1f);
}
#define MLA_SYNC() __syncthreads()
extern __shared__ mla_v4 mla_dyn_smem_raw[];
#define MLA_DYN_SMEM ((float *)mla_dyn_smem_raw)
#else // nvcc
MLA_DEV float mla_exp(float x) { return expf(x); }
MLA_DEV float mla_sqrt(float x) { return sqrtf(x); }
MLA_DEV float mla_bits_to_f32(u32 u) { return __int_as_float((int)u); }
MLA_DEV u32 mla_f32_to_bits(float f) { return (u32)__float_as_int(f); }
MLA_DEV float mla_shfl_xor(float v, int m) { return __shfl_xor_sync(0xffffffffu, v, m); }
#define MLA_SYNC() __syncthreads()
extern __shared__ mla_v4 mla_dyn_smem_raw[];
#define MLA_DYN_SMEM ((float *)mla_dyn_smem_raw)
#endif

#define MLA_NEG_INF (mla_bits_to_f32(0xff800000u))

MLA_DEV float mla_max(float a, float b) { return a > b ? a : b; }
MLA_DEV u32 mla_min_u(u32 a, u32 b) { return a < b ? a : b; }

MLA_DEV float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += mla_shfl_xor(v, o);
  return v;
}

MLA_DEV float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = mla_max(v, mla_shfl_xor(v, o));
  return v;
}

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
    if (DT == 1) {
      r.a = f16_to_f32(lo & 0xffffu); r.b = f16_to_f32(lo >> 16);
      r.c = f16_to_f32(hi & 0xffffu); r.d = f16_to_f32(hi >> 16);
    } else {
      r.a = bf16_to_f32(lo & 0xffffu); r.b = bf16_to_f32(lo >> 16);
      r.c = bf16_to_f32(hi & 0xffffu); r.d = bf16_to_f32(hi >> 16);
    }
  }
  return r;
}

MLA_DEV f4 ld4f(const float *base, u64 i4) { return ld4<0>((const void *)base, i4); }

// ---------------------------------------------------------------------------
// Linear layer, optionally grouped (per head):
//   for o in 0..rows: g = o / grp_rows, i = o % grp_rows,
//   y[t*y_stride + o] = W[g*w_grp_stride + w_row_off + i][0..cols]
//                       . x[t*x_stride + g*x_grp_off ..][0..cols]  (+ bias[o])
// A plain layer is one group (grp_rows = rows, offsets 0). One warp per output
// row and up to MLA_TT tokens; grid (ceil(rows / MLA_WARPS), ceil(n_tok / MLA_TT)).
// `vec4` (uniform): cols, x_stride and x_grp_off are multiples of 4, so rows can
// be read four elements at a time.
template <int DT>
MLA_DEV void linear_impl(const float *x, const void *w, const float *bias, float *y, u32 n_tok,
                         u32 rows, u32 cols, u32 x_stride, u32 y_stride, u32 grp_rows,
                         u32 w_grp_stride, u32 w_row_off, u32 x_grp_off, u32 vec4) {
  u32 lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
  u32 o = blockIdx.x * MLA_WARPS + warp;
  if (o >= rows) return; // whole warp leaves together
  u32 t0 = blockIdx.y * MLA_TT;
  u32 nt = mla_min_u(MLA_TT, n_tok - t0);
  u32 g = o / grp_rows, i = o % grp_rows;
  u64 wrow = (u64)g * w_grp_stride + w_row_off + i;
  const float *xb = x + (u64)t0 * x_stride + (u64)g * x_grp_off;
  float acc[MLA_TT];
#pragma unroll
  for (int k = 0; k < MLA_TT; k++) acc[k] = 0.0f;
  if (vec4) {
    u32 c4 = cols / 4;
    u64 wbase4 = wrow * c4;
    for (u32 k = lane; k < c4; k += 32) {
      f4 wv = ld4<DT>(w, wbase4 + k);
#pragma unroll
      for (int t = 0; t < MLA_TT; t++) {
        if ((u32)t < nt) {
          f4 xv = ld4f(xb + (u64)t * x_stride, k);
          acc[t] += wv.a * xv.a + wv.b * xv.b + wv.c * xv.c + wv.d * xv.d;
        }
      }
    }
  } else {
    u64 wbase = wrow * cols;
    for (u32 k = lane; k < cols; k += 32) {
      float wv = ld<DT>(w, wbase + k);
#pragma unroll
      for (int t = 0; t < MLA_TT; t++) {
        if ((u32)t < nt) acc[t] += wv * xb[(u64)t * x_stride + k];
      }
    }
  }
  float b = bias ? bias[o] : 0.0f;
#pragma unroll
  for (int t = 0; t < MLA_TT; t++) {
    float s = warp_sum(acc[t]);
    if (lane == 0 && (u32)t < nt) y[(u64)(t0 + t) * y_stride + o] = s + b;
  }
}

#define MLA_LINEAR(NAME, DT)                                                                \
  MLA_KERNEL MLA_BOUNDS(MLA_THREADS)                                                        \
      NAME(const float *x, const void *w, const float *bias, float *y, u32 n_tok, u32 rows, \
           u32 cols, u32 x_stride, u32 y_stride, u32 grp_rows, u32 w_grp_stride,           \
           u32 w_row_off, u32 x_grp_off, u32 vec4) {                                        \
    linear_impl<DT>(x, w, bias, y, n_tok, rows, cols, x_stride, y_stride, grp_rows,         \
                    w_grp_stride, w_row_off, x_grp_off, vec4);                              \
  }
MLA_LINEAR(mla_linear_f32, 0)
MLA_LINEAR(mla_linear_f16, 1)
MLA_LINEAR(mla_linear_bf16, 2)

// ---------------------------------------------------------------------------
// In-place RMSNorm of rows: x[i] = w[i] * (x[i] / sqrt(mean(x^2) + eps)) over the
// first `len` values of each of `n_rows` rows (row stride `stride`). Grid (n_rows).
MLA_KERNEL MLA_BOUNDS(MLA_THREADS)
    mla_rmsnorm(float *x, const float *w, u32 n_rows, u32 len, u32 stride, float eps) {
  __shared__ float red[MLA_WARPS];
  u32 row = blockIdx.x;
  if (row >= n_rows) return;
  float *xr = x + (u64)row * stride;
  float ss = 0.0f;
  for (u32 i = threadIdx.x; i < len; i += MLA_THREADS) ss += xr[i] * xr[i];
  ss = block_sum(ss, red);
  float inv = 1.0f / mla_sqrt(ss / (float)len + eps);
  for (u32 i = threadIdx.x; i < len; i += MLA_THREADS) xr[i] = w[i] * (xr[i] * inv);
}

// ---------------------------------------------------------------------------
// RoPE helpers. cos/sin tables are [max_seq][p/2] f32 (YaRN scaling applied),
// filled on the host with crate::rope. layout 0: pairs (2i, 2i+1); 1: (i, i+p/2).

MLA_DEV void rope_pair(u32 layout, u32 p, u32 i, u32 *a, u32 *b) {
  if (layout == 0) {
    *a = 2u * i;
    *b = 2u * i + 1u;
  } else {
    *a = i;
    *b = i + p / 2u;
  }
}

// New cache rows. For token t (position start + t): the latent
// c = RMSNorm(kva[t][0..r]) * norm_w and the n_rope rope keys kva[t][r + s*p ..]
// rotated at the position are stored into cache row start + t (element type DT).
// Grid (n_tok).
template <int DT>
MLA_DEV void kv_append_impl(const float *kva, u32 kva_stride, const float *norm_w, void *cache,
                            u32 cache_row, u32 r, u32 p, u32 n_rope, const float *cos_t,
                            const float *sin_t, u32 start, u32 n_tok, float eps, u32 layout) {
  __shared__ float red[MLA_WARPS];
  u32 t = blockIdx.x;
  if (t >= n_tok) return;
  const float *xr = kva + (u64)t * kva_stride;
  u64 pos = (u64)start + t;
  u64 dst = pos * cache_row;
  float ss = 0.0f;
  for (u32 i = threadIdx.x; i < r; i += MLA_THREADS) ss += xr[i] * xr[i];
  ss = block_sum(ss, red);
  float inv = 1.0f / mla_sqrt(ss / (float)r + eps);
  for (u32 i = threadIdx.x; i < r; i += MLA_THREADS) st<DT>(cache, dst + i, norm_w[i] * (xr[i] * inv));
  u32 half = p / 2u;
  const float *ct = cos_t + pos * half;
  const float *sn = sin_t + pos * half;
  for (u32 k = threadIdx.x; k < n_rope * half; k += MLA_THREADS) {
    u32 s = k / half, i = k % half, a, b;
    rope_pair(layout, p, i, &a, &b);
    u32 off = r + s * p;
    float x0 = xr[off + a], x1 = xr[off + b];
    float c = ct[i], sv = sn[i];
    st<DT>(cache, dst + off + a, x0 * c - x1 * sv);
    st<DT>(cache, dst + off + b, x1 * c + x0 * sv);
  }
}

#define MLA_KV_APPEND(NAME, DT)                                                              \
  MLA_KERNEL MLA_BOUNDS(MLA_THREADS)                                                         \
      NAME(const float *kva, u32 kva_stride, const float *norm_w, void *cache, u32 cache_row, \
           u32 r, u32 p, u32 n_rope, const float *cos_t, const float *sin_t, u32 start,      \
           u32 n_tok, float eps, u32 layout) {                                               \
    kv_append_impl<DT>(kva, kva_stride, norm_w, cache, cache_row, r, p, n_rope, cos_t, sin_t, \
                       start, n_tok, eps, layout);                                           \
  }
MLA_KV_APPEND(mla_kv_append_f32, 0)
MLA_KV_APPEND(mla_kv_append_f16, 1)
MLA_KV_APPEND(mla_kv_append_bf16, 2)

// Rotates q_pe (the last p of each head's n+p values) of every head of token t at
// position start + t, in place. q is [n_tok][H][n+p]. Grid (n_tok).
MLA_KERNEL MLA_BOUNDS(MLA_THREADS)
    mla_rope_q(float *q, u32 n_tok, u32 n_heads, u32 qk, u32 n, u32 p, const float *cos_t,
               const float *sin_t, u32 start, u32 layout) {
  u32 t = blockIdx.x;
  if (t >= n_tok) return;
  u32 half = p / 2u;
  u64 pos = (u64)start + t;
  const float *ct = cos_t + pos * half;
  const float *sn = sin_t + pos * half;
  float *qt = q + (u64)t * n_heads * qk;
  for (u32 k = threadIdx.x; k < n_heads * half; k += MLA_THREADS) {
    u32 h = k / half, i = k % half, a, b;
    rope_pair(layout, p, i, &a, &b);
    float *qp = qt + (u64)h * qk + n;
    float x0 = qp[a], x1 = qp[b];
    float c = ct[i], sv = sn[i];
    qp[a] = x0 * c - x1 * sv;
    qp[b] = x1 * c + x0 * sv;
  }
}

// ---------------------------------------------------------------------------
// Absorbed queries: qt[t][h][j] = sum_{i<n} W_UK_h[i][j] * q[t][h][i] with
// W_UK_h[i] = kv_b_proj row h*(n+v) + i (r columns). One thread per column j,
// up to MLA_TT tokens. Grid (ceil(r / MLA_THREADS), H, ceil(n_tok / MLA_TT)).
template <int DT>
MLA_DEV void q_absorb_impl(const float *q, const void *kvb, float *qt, u32 n_tok, u32 n_heads,
                           u32 n, u32 v, u32 r, u32 qk) {
  u32 j = blockIdx.x * MLA_THREADS + threadIdx.x;
  u32 h = blockIdx.y;
  u32 t0 = blockIdx.z * MLA_TT;
  if (j >= r || t0 >= n_tok) return;
  u32 nt = mla_min_u(MLA_TT, n_tok - t0);
  float acc[MLA_TT];
#pragma unroll
  for (int k = 0; k < MLA_TT; k++) acc[k] = 0.0f;
  u64 wrow0 = (u64)h * (n + v);
  const float *qh = q + (u64)t0 * n_heads * qk + (u64)h * qk;
  for (u32 i = 0; i < n; i++) {
    float w = ld<DT>(kvb, (wrow0 + i) * r + j);
#pragma unroll
    for (int t = 0; t < MLA_TT; t++) {
      if ((u32)t < nt) acc[t] += w * qh[(u64)t * n_heads * qk + i];
    }
  }
#pragma unroll
  for (int t = 0; t < MLA_TT; t++) {
    if ((u32)t < nt) qt[((u64)(t0 + t) * n_heads + h) * r + j] = acc[t];
  }
}

#define MLA_Q_ABSORB(NAME, DT)                                                                  \
  MLA_KERNEL MLA_BOUNDS(MLA_THREADS) NAME(const float *q, const void *kvb, float *qt, u32 n_tok, \
                                          u32 n_heads, u32 n, u32 v, u32 r, u32 qk) {           \
    q_absorb_impl<DT>(q, kvb, qt, n_tok, n_heads, n, v, r, qk);                                 \
  }
MLA_Q_ABSORB(mla_q_absorb_f32, 0)
MLA_Q_ABSORB(mla_q_absorb_f16, 1)
MLA_Q_ABSORB(mla_q_absorb_bf16, 2)

// ---------------------------------------------------------------------------
// Fused absorbed attention over the latent cache, split over the context
// (flash-decoding). Block (group gi, split s, token t) takes heads
// h0 = gi*G .. h0+G-1 and cached positions [s*split_len, min((s+1)*split_len, start+t+1)).
// Each cached row is loaded once into shared memory (widened to f32) and scored
// against all G heads:
//   score_h(pos) = (qt[t][h] . c_pos + q_pe[t][h] . k_pe_pos(h)) * scale
// with an online softmax (running max m, sum l) and the unnormalised latent sum
// acc_h = sum_pos exp(score - m) c_pos kept in registers: thread k owns columns
// j = k + MLA_THREADS*qq (qq < QMAX) of every head g < GMAX.
// Outputs per (t, s, h): part_acc[...][r], part_ml[...] = (m, l); an empty range
// gives m = -inf, l = 0, acc = 0. Shared memory (floats):
//   q_s [G][r+p] | t_s [MLA_TILE][r+Rg] | s_s [G][MLA_TILE] | corr [G] | m [G] | l [G]
// with Rg = p (shared rope key) or G*p (per-head rope keys).
template <int DT, int GMAX, int QMAX>
MLA_DEV void attn_impl(const float *qt, const float *q, const void *cache, float *part_acc,
                       float *part_ml, u32 n_tok, u32 n_heads, u32 r, u32 p, u32 qk, u32 n,
                       u32 cache_row, u32 per_head, u32 start, u32 split_len, u32 n_split,
                       u32 G, float scale) {
  float *smem = MLA_DYN_SMEM;
  u32 tid = threadIdx.x, lane = tid & 31u, warp = tid >> 5;
  u32 h0 = blockIdx.x * G;
  u32 s = blockIdx.y, t = blockIdx.z;
  if (h0 >= n_heads || s >= n_split || t >= n_tok) return; // uniform per block
  u32 gb = mla_min_u(G, n_heads - h0);
  u32 rg = per_head ? G * p : p;
  u32 qrow = r + p, trow = r + rg;
  float *q_s = smem;
  float *t_s = q_s + (u64)G * qrow;
  float *s_s = t_s + (u64)MLA_TILE * trow;
  float *corr_s = s_s + (u64)G * MLA_TILE;
  float *m_s = corr_s + G;
  float *l_s = m_s + G;

  u64 pos_end = (u64)start + t + 1u;
  u64 lo = (u64)s * split_len;
  u64 hi = lo + split_len;
  if (hi > pos_end) hi = pos_end;

  // Queries of the group: absorbed part then q_pe.
  for (u32 g = 0; g < gb; g++) {
    const float *src_a = qt + ((u64)t * n_heads + h0 + g) * r;
    const float *src_p = q + ((u64)t * n_heads + h0 + g) * qk + n;
    for (u32 k = tid; k < qrow; k += MLA_THREADS)
      q_s[(u64)g * qrow + k] = k < r ? src_a[k] : src_p[k - r];
  }
  if (tid < G) {
    m_s[tid] = MLA_NEG_INF;
    l_s[tid] = 0.0f;
  }

  float acc[QMAX][GMAX];
#pragma unroll
  for (int qq = 0; qq < QMAX; qq++)
#pragma unroll
    for (int g = 0; g < GMAX; g++) acc[qq][g] = 0.0f;

  u64 rope_src = (u64)r + (per_head ? (u64)h0 * p : 0u);
  // Whole rows, four elements at a time (rows start 16 / 8-byte aligned).
  bool contiguous = !per_head && trow == cache_row && (cache_row % 4u) == 0u;
  for (u64 base = lo; base < hi; base += MLA_TILE) {
    u32 nrows = (u32)((hi - base) < MLA_TILE ? (hi - base) : MLA_TILE);
    MLA_SYNC(); // previous tile fully consumed (and q_s / m_s written)
    if (contiguous) {
      // Shared rope key: the tile is nrows whole cache rows, one contiguous run.
      u32 n4 = nrows * trow / 4u;
      u64 b4 = base * cache_row / 4u;
      for (u32 e = tid; e < n4; e += MLA_THREADS) {
        f4 v = ld4<DT>(cache, b4 + e);
        float *d = t_s + (u64)e * 4u;
        d[0] = v.a; d[1] = v.b; d[2] = v.c; d[3] = v.d;
      }
    } else {
      for (u32 c = 0; c < nrows; c++) {
        u64 row = (base + c) * cache_row;
        for (u32 k = tid; k < trow; k += MLA_THREADS) {
          u64 col = k < r ? (u64)k : rope_src + (k - r);
          t_s[(u64)c * trow + k] = ld<DT>(cache, row + col);
        }
      }
    }
    MLA_SYNC();
    // Scores: one warp per cached row, all G heads at once (each row value is
    // loaded once per warp and used for every head).
    for (u32 c = warp; c < nrows; c += MLA_WARPS) {
      const float *tc = t_s + (u64)c * trow;
      float part[GMAX];
#pragma unroll
      for (int g = 0; g < GMAX; g++) part[g] = 0.0f;
      for (u32 k = lane; k < r; k += 32) {
        float tv = tc[k];
#pragma unroll
        for (int g = 0; g < GMAX; g++)
          if ((u32)g < gb) part[g] += q_s[(u64)g * qrow + k] * tv;
      }
      for (u32 k = lane; k < p; k += 32) {
#pragma unroll
        for (int g = 0; g < GMAX; g++)
          if ((u32)g < gb) part[g] += q_s[(u64)g * qrow + r + k] * tc[r + (per_head ? g * p : 0u) + k];
      }
#pragma unroll
      for (int g = 0; g < GMAX; g++) {
        if ((u32)g < gb) {
          float d = warp_sum(part[g]);
          if (lane == 0) s_s[g * MLA_TILE + c] = d * scale;
        }
      }
    }
    MLA_SYNC();
    // Online softmax per head: weights exp(score - m_new), rescale factor.
    if (tid < gb) {
      u32 g = tid;
      float m_old = m_s[g];
      float mx = MLA_NEG_INF;
      for (u32 c = 0; c < nrows; c++) mx = mla_max(mx, s_s[g * MLA_TILE + c]);
      float m_new = mla_max(m_old, mx);
      float corr = m_old == MLA_NEG_INF ? 0.0f : mla_exp(m_old - m_new);
      float sum = 0.0f;
      for (u32 c = 0; c < nrows; c++) {
        float e = mla_exp(s_s[g * MLA_TILE + c] - m_new);
        s_s[g * MLA_TILE + c] = e;
        sum += e;
      }
      l_s[g] = l_s[g] * corr + sum;
      m_s[g] = m_new;
      corr_s[g] = corr;
    }
    MLA_SYNC();
    // Latent sums: rescale, then add each row (loaded once) for every head.
#pragma unroll
    for (int qq = 0; qq < QMAX; qq++) {
      u32 j = tid + (u32)qq * MLA_THREADS;
      if (j < r) {
#pragma unroll
        for (int g = 0; g < GMAX; g++)
          if ((u32)g < gb) acc[qq][g] *= corr_s[g];
        for (u32 c = 0; c < nrows; c++) {
          float tv = t_s[(u64)c * trow + j];
#pragma unroll
          for (int g = 0; g < GMAX; g++)
            if ((u32)g < gb) acc[qq][g] += s_s[g * MLA_TILE + c] * tv;
        }
      }
    }
  }
  MLA_SYNC();
  u64 slot = ((u64)t * n_split + s) * n_heads + h0;
#pragma unroll
  for (int qq = 0; qq < QMAX; qq++) {
    u32 j = tid + (u32)qq * MLA_THREADS;
    if (j < r) {
#pragma unroll
      for (int g = 0; g < GMAX; g++) {
        if ((u32)g < gb) part_acc[(slot + (u32)g) * r + j] = acc[qq][g];
      }
    }
  }
  if (tid < gb) {
    part_ml[(slot + tid) * 2u] = m_s[tid];
    part_ml[(slot + tid) * 2u + 1u] = l_s[tid];
  }
}

#define MLA_ATTN(NAME, DT, GMAX, QMAX)                                                          \
  MLA_KERNEL MLA_BOUNDS(MLA_THREADS)                                                            \
      NAME(const float *qt, const float *q, const void *cache, float *part_acc, float *part_ml, \
           u32 n_tok, u32 n_heads, u32 r, u32 p, u32 qk, u32 n, u32 cache_row, u32 per_head,    \
           u32 start, u32 split_len, u32 n_split, u32 G, float scale) {                         \
    attn_impl<DT, GMAX, QMAX>(qt, q, cache, part_acc, part_ml, n_tok, n_heads, r, p, qk, n,     \
                              cache_row, per_head, start, split_len, n_split, G, scale);        \
  }
// Variants: (GMAX heads per block, QMAX columns per thread): r <= 512, <= 2048, <= 8192.
MLA_ATTN(mla_attn_f32_g16, 0, 16, 2)
MLA_ATTN(mla_attn_f16_g16, 1, 16, 2)
MLA_ATTN(mla_attn_bf16_g16, 2, 16, 2)
MLA_ATTN(mla_attn_f32_g4, 0, 4, 8)
MLA_ATTN(mla_attn_f16_g4, 1, 4, 8)
MLA_ATTN(mla_attn_bf16_g4, 2, 4, 8)
MLA_ATTN(mla_attn_f32_g1, 0, 1, 32)
MLA_ATTN(mla_attn_f16_g1, 1, 1, 32)
MLA_ATTN(mla_attn_bf16_g1, 2, 1, 32)

// Combines the splits of one (head h, token t) for 32 latent columns:
// M = max m_s, ctx[t][h][j] = sum_s exp(m_s - M) acc_s[j] / sum_s exp(m_s - M) l_s.
// Grid (H, n_tok, ceil(r / 32)); warp w sums splits s = w, w + 8, ... of the
// block's 32 columns (lane = column, coalesced), then the warps' sums are added.
// Dynamic shared memory: n_split floats.
MLA_KERNEL MLA_BOUNDS(MLA_THREADS)
    mla_attn_combine(const float *part_acc, const float *part_ml, float *ctx, u32 n_tok,
                     u32 n_heads, u32 r, u32 n_split) {
  __shared__ float red[MLA_WARPS];
  __shared__ float cols[MLA_WARPS][32];
  float *w_s = MLA_DYN_SMEM;
  u32 h = blockIdx.x, t = blockIdx.y;
  if (h >= n_heads || t >= n_tok) return;
  u32 lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
  u32 j = blockIdx.z * 32u + lane;
  u64 slot0 = (u64)t * n_split * n_heads + h; // + s * n_heads
  float m = MLA_NEG_INF;
  for (u32 s = threadIdx.x; s < n_split; s += MLA_THREADS)
    m = mla_max(m, part_ml[(slot0 + (u64)s * n_heads) * 2u]);
  m = block_max(m, red);
  float den = 0.0f;
  for (u32 s = threadIdx.x; s < n_split; s += MLA_THREADS) {
    u64 sl = slot0 + (u64)s * n_heads;
    float l = part_ml[sl * 2u + 1u];
    float wgt = l > 0.0f ? mla_exp(part_ml[sl * 2u] - m) : 0.0f;
    w_s[s] = wgt;
    den += wgt * l;
  }
  den = block_sum(den, red); // its barriers also publish w_s
  float a = 0.0f;
  if (j < r) {
    for (u32 s = warp; s < n_split; s += MLA_WARPS) {
      float wgt = w_s[s];
      if (wgt != 0.0f) a += wgt * part_acc[(slot0 + (u64)s * n_heads) * r + j];
    }
  }
  cols[warp][lane] = a;
  MLA_SYNC();
  if (warp == 0 && j < r) {
    float sum = 0.0f;
    for (u32 w = 0; w < MLA_WARPS; w++) sum += cols[w][lane];
    ctx[((u64)t * n_heads + h) * r + j] = sum / den;
  }
}

// Sets *flag = 1 when any of x[0..n] is NaN or infinite (flag zeroed before).
// Grid-stride; grid (any).
MLA_KERNEL MLA_BOUNDS(MLA_THREADS) mla_check_finite(const float *x, u32 n, u32 *flag) {
  u32 bad = 0;
  for (u64 i = (u64)blockIdx.x * MLA_THREADS + threadIdx.x; i < n;
       i += (u64)gridDim.x * MLA_THREADS) {
    if ((mla_f32_to_bits(x[i]) & 0x7f800000u) == 0x7f800000u) bad = 1;
  }
  if (bad) *flag = 1u;
}

// Copies src[0..n] to dst unless *flag is set (the output of forward_device is
// written only when the input was finite). Grid-stride; grid (any).
MLA_KERNEL MLA_BOUNDS(MLA_THREADS)
    mla_copy_if_ok(const float *src, float *dst, u32 n, const u32 *flag) {
  if (*flag) return;
  for (u64 i = (u64)blockIdx.x * MLA_THREADS + threadIdx.x; i < n;
       i += (u64)gridDim.x * MLA_THREADS)
    dst[i] = src[i];
}

// Every kernel entry point (used by the CPU emulator to build its symbol table;
// the Rust side looks the same names up in the PTX).
#define MLA_KERNEL_LIST(X)                                                                     \
  X(mla_linear_f32) X(mla_linear_f16) X(mla_linear_bf16) X(mla_rmsnorm) X(mla_kv_append_f32) \
  X(mla_kv_append_f16) X(mla_kv_append_bf16) X(mla_rope_q) X(mla_q_absorb_f32)                \
  X(mla_q_absorb_f16) X(mla_q_absorb_bf16) X(mla_attn_f32_g16) X(mla_attn_f16_g16)           \
  X(mla_attn_bf16_g16) X(mla_attn_f32_g4) X(mla_attn_f16_g4) X(mla_attn_bf16_g4)              \
  X(mla_attn_f32_g1) X(mla_attn_f16_g1) X(mla_attn_bf16_g1) X(mla_attn_combine)              \
  X(mla_check_finite) X(mla_copy_if_ok)
