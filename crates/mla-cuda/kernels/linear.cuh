// Part of mla-rt's CUDA kernels: included by mla.cu (in this order), never compiled alone.
// Linear layers (mla_linear_*).

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
