// Part of mla-rt's CUDA kernels: included by mla.cu (in this order), never compiled alone.
// Kernel parameter structs, mirrored field for field by crates/mla-cuda/src/params.rs.

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
