// Part of mla-rt's CUDA kernels: included by mla.cu (in this order), never compiled alone.
// Attention on the tensor cores (sm_80+, mla_attn_tc_*) and the fragment self-test (mla_selftest_mma).

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
