// Part of mla-rt's CUDA kernels: included by mla.cu (in this order), never compiled alone.
// The flash-decoding combine of the context splits (mla_attn_combine).

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
