// Part of mla-rt's CUDA kernels: included by mla.cu (in this order), never compiled alone.
// Attention over the latent cache: tile copies shared by both attention kernels, and the CUDA-core kernel (mla_attn_cc_*).

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
