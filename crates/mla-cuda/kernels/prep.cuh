// Part of mla-rt's CUDA kernels: included by mla.cu (in this order), never compiled alone.
// RoPE and the per-token preparation of queries and cache rows (mla_prep_*).

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
