//! DeepSeek Sparse Attention (DSA): the lightning indexer, its key cache and
//! the top-k selection.
//!
//! Per query token at position `pos` (Hi heads of Di values, `K` = index_topk):
//!
//! 1. query `qI = index_wq_b u` viewed `[Hi][Di]` (`u` the normalised q latent,
//!    or `LayerNorm(x)`), RoPE on `p` of the Di dims ([`IndexShape::rotate`]);
//! 2. key `kI = LayerNorm(index_wk x)` ([`layer_norm`]), the same RoPE, cached
//!    per token in an [`IndexCache`] (f32, bf16, or FP8 E4M3 with one f32 scale
//!    per token);
//! 3. head weights `w = index_weights_proj x * Hi^-0.5`;
//! 4. score of cached token `t <= pos`:
//!    `I(t) = sum_h w_h ReLU(qI_h . kI(t) * Di^-0.5)`, in f32 ([`score_block`]);
//! 5. selection: the `K` tokens with the largest `I(t)` ([`select_topk`]); all
//!    of them when `pos + 1 <= K`.
//!
//! **Tie rule**: the order is "higher score first, then lower position first"
//! (a strict total order: NaN counts as `-inf`, `-0.0` equals `0.0`), so equal
//! scores keep the earlier token. The selection is returned in ascending
//! position order and does not depend on the thread count or on how the scores
//! were computed in blocks.

pub(crate) mod run;
mod store;
mod topk;

pub use store::{row_bytes, IndexCache, IndexDType};
pub use topk::select_topk;

use crate::config::{IndexRope, RopeLayout};
use crate::dtype::Elems;
use crate::kernels::{self, Isa, Mat, MatE, MatMut};
use crate::rope;
use crate::weights::Tensor;

/// The indexer's tensors of one DSA `Full` layer (row-major `[out][in]`).
#[derive(Clone, Copy, Debug)]
pub struct IndexerWeights<'w> {
    /// `[Hi*Di][r_q]` (query latent input) or `[Hi*Di][d]` (LayerNorm(x)).
    pub wq_b: Tensor<'w>,
    /// `[Di][d]`.
    pub wk: Tensor<'w>,
    /// `[1][Di]` LayerNorm weight of the key.
    pub k_norm: Tensor<'w>,
    /// `[1][Di]` LayerNorm bias of the key.
    pub k_norm_bias: Tensor<'w>,
    /// `[Hi][d]`.
    pub weights_proj: Tensor<'w>,
    /// `[1][d]` weight and bias of `LayerNorm(x)` (`index_q_input` hidden LayerNorm).
    pub q_norm: Option<(Tensor<'w>, Tensor<'w>)>,
    /// `[1][Hi]` learned log-position query scale `s`, `b` (`index_query_scale`).
    pub query_scale: Option<(Tensor<'w>, Tensor<'w>)>,
}

/// Element `i` of `e` as f32 (0 out of range).
fn at(e: Elems, i: usize) -> f32 {
    let mut v = [0f32];
    if let Some(s) = e.slice(i, 1) {
        s.widen_into(&mut v);
    }
    v[0]
}

/// Shape of one layer's indexer: heads, head dim and which dims are rotated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IndexShape {
    /// `Hi`.
    pub heads: usize,
    /// `Di`.
    pub dim: usize,
    /// Rotated dims (`qk_rope_head_dim`; 0 = none).
    pub rope_dims: usize,
    /// Which `rope_dims` of the `Di` are rotated.
    pub rope: IndexRope,
    /// Layout of the rotation.
    pub layout: RopeLayout,
}

impl IndexShape {
    /// The rotated part of one `Di` vector, or `None` (no rope, or out of range).
    fn rope_part<'a>(&self, v: &'a mut [f32]) -> Option<&'a mut [f32]> {
        let p = self.rope_dims;
        if p == 0 {
            return None;
        }
        match self.rope {
            IndexRope::First => v.get_mut(..p),
            IndexRope::Last => v.get_mut(self.dim.checked_sub(p)?..self.dim),
            IndexRope::None => None,
        }
    }

    /// Rotates `v` (one key or query head, `Di` values) by one position's
    /// `cos`/`sin` (`p/2` each).
    pub fn rotate(&self, v: &mut [f32], cos: &[f32], sin: &[f32]) {
        if let Some(part) = self.rope_part(v) {
            rope::rotate(part, cos, sin, self.layout);
        }
    }

    /// `Di^-0.5`, the score scale.
    pub fn score_scale(&self) -> f32 {
        1.0 / libm::sqrtf(self.dim.max(1) as f32)
    }

    /// `Hi^-0.5`, the head-weight scale.
    pub fn weights_scale(&self) -> f32 {
        1.0 / libm::sqrtf(self.heads.max(1) as f32)
    }
}

/// LayerNorm of `x` in place, in f32: `(x - mean) / sqrt(var + eps) * w + b`
/// (biased variance; `w`, `b` as long as `x`).
pub fn layer_norm(x: &mut [f32], w: Elems, b: Elems, eps: f32) {
    let n = x.len().max(1) as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let inv = 1.0 / libm::sqrtf(var + eps);
    for (i, v) in x.iter_mut().enumerate() {
        *v = (*v - mean) * inv * at(w, i) + at(b, i);
    }
}

/// Finishes one token's indexer key in place: `k = rotate(LayerNorm(k))`
/// (`k` holds `index_wk x`, `Di` values).
#[allow(clippy::too_many_arguments)]
pub fn finish_key(
    shape: &IndexShape,
    k: &mut [f32],
    norm_w: Elems,
    norm_b: Elems,
    eps: f32,
    cos: &[f32],
    sin: &[f32],
) {
    layer_norm(k, norm_w, norm_b, eps);
    shape.rotate(k, cos, sin);
}

/// Finishes one token's indexer query `[Hi][Di]` in place: every head rotated,
/// then (mistral_large4) head `h` times `s_h ln(pos + 1) + b_h` when
/// `log_scale` is `Some((s, b))`. Also scales the head weights `w` (`[Hi]`,
/// holding `index_weights_proj x`) by `Hi^-0.5`.
pub fn finish_query(
    shape: &IndexShape,
    q: &mut [f32],
    w: &mut [f32],
    pos: usize,
    log_scale: Option<(Elems, Elems)>,
    cos: &[f32],
    sin: &[f32],
) {
    let ln = libm::logf(pos as f32 + 1.0);
    for (h, qh) in q
        .chunks_exact_mut(shape.dim.max(1))
        .take(shape.heads)
        .enumerate()
    {
        shape.rotate(qh, cos, sin);
        if let Some((s, b)) = log_scale {
            kernels::scale(qh, at(s, h) * ln + at(b, h));
        }
    }
    let ws = shape.weights_scale();
    w.iter_mut().for_each(|v| *v *= ws);
}

/// The query `[Hi][Di]` transposed into `q_t` `[Di][Hi]` (the layout the
/// scoring product reads); false if a length disagrees.
pub fn transpose_query(shape: &IndexShape, q: &[f32], q_t: &mut [f32]) -> bool {
    let (hi, di) = (shape.heads, shape.dim);
    let n = hi.saturating_mul(di);
    let (Some(q), Some(q_t)) = (q.get(..n), q_t.get_mut(..n)) else {
        return false;
    };
    for (h, row) in q.chunks_exact(di.max(1)).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            if let Some(d) = q_t.get_mut(j * hi + h) {
                *d = v;
            }
        }
    }
    true
}

/// Index scores of a block of `cnt` keys: `out[t] = sum_h w[h] *
/// ReLU(q_h . keys[t] * Di^-0.5)`. `q_t` is the query transposed, `[Di][Hi]`
/// ([`transpose_query`]), `w` `[Hi]` (already times `Hi^-0.5`), `keys`
/// `[cnt][Di]`, `dots` scratch `[cnt][Hi]`, `out` `[cnt]`. The dot products
/// are one product `keys q^T` (each key read once for all heads); the sum over
/// heads runs in head order. Returns false (nothing defined written) if a
/// length disagrees.
#[allow(clippy::too_many_arguments)]
pub fn score_block(
    isa: Isa,
    shape: &IndexShape,
    q_t: &[f32],
    w: &[f32],
    keys: &[f32],
    cnt: usize,
    dots: &mut [f32],
    out: &mut [f32],
) -> bool {
    let (hi, di) = (shape.heads, shape.dim);
    let (Some(q_t), Some(w), Some(keys), Some(dots), Some(out)) = (
        q_t.get(..hi.saturating_mul(di)),
        w.get(..hi),
        keys.get(..cnt.saturating_mul(di)),
        dots.get_mut(..cnt.saturating_mul(hi)),
        out.get_mut(..cnt),
    ) else {
        return false;
    };
    if cnt == 0 || hi == 0 {
        out.iter_mut().for_each(|v| *v = 0.0);
        return true;
    }
    dots.iter_mut().for_each(|v| *v = 0.0);
    let (Some(a), Some(b), Some(mut c)) = (
        Mat::new(keys, cnt, di, di),
        Mat::new(q_t, di, hi, hi),
        MatMut::new(dots, cnt, hi, hi),
    ) else {
        return false;
    };
    if !kernels::gemm_nn_with(isa, &a, &MatE::F32(b), &mut c) {
        return false;
    }
    let scale = shape.score_scale();
    for (o, row) in out.iter_mut().zip(dots.chunks_exact(hi)) {
        let mut s = 0.0f32;
        // Branch-free ReLU: the signs of the dot products are data, and a
        // branch per head mispredicts half the time.
        for (&d, &wh) in row.iter().zip(w) {
            s += wh * (d * scale).max(0.0);
        }
        *o = s;
    }
    true
}

/// Pooled indexer (glm5_next): the key of one pool of `P` consecutive tokens,
/// `out[c] = sum_u softmax_u(gates[u][c] + ape[u][c]) keys[u][c]` (a softmax
/// over the pool's tokens per channel, in f32). `keys`, `gates` are `[P][Di]`
/// (`gates` = `index_kpool_gate x`), `ape` `[P][Di]`, `out` `[Di]`. False if a
/// length disagrees.
pub fn pool_key(keys: &[f32], gates: &[f32], ape: Elems, pool: usize, out: &mut [f32]) -> bool {
    let di = out.len();
    let n = pool.saturating_mul(di);
    if keys.len() < n || gates.len() < n || ape.len() < n || pool == 0 {
        return false;
    }
    for (c, o) in out.iter_mut().enumerate() {
        let logit = |u: usize| gates.get(u * di + c).copied().unwrap_or(0.0) + at(ape, u * di + c);
        let m = (0..pool).map(logit).fold(f32::NEG_INFINITY, f32::max);
        let (mut num, mut den) = (0.0f32, 0.0f32);
        for u in 0..pool {
            let e = libm::expf(logit(u) - m);
            den += e;
            num += e * keys.get(u * di + c).copied().unwrap_or(0.0);
        }
        *o = num / den;
    }
    true
}

/// Pooled selection (glm5_next) for the query at `pos`: the best
/// `index_topk / P` of the `pool_scores` of its complete pools (all when fewer;
/// the tie rule of [`select_topk`]), expanded to their tokens, then (with
/// `tail`) the query's own incomplete pool `floor((pos+1)/P)*P ..= pos`.
/// `pool_scores` holds the scores of pools `0..(pos+1)/P`; `chosen` is scratch
/// of `index_topk / P` entries; `out` gets the tokens in ascending order (at
/// most `index_topk + P - 1`). Returns how many were written.
pub fn pooled_select(
    pool_scores: &[f32],
    index_topk: usize,
    pool: usize,
    pos: usize,
    tail: bool,
    chosen: &mut [u32],
    out: &mut [u32],
) -> usize {
    let pool = pool.max(1);
    let visible = ((pos + 1) / pool).min(pool_scores.len());
    let picked = select_topk(
        pool_scores.get(..visible).unwrap_or(&[]),
        index_topk / pool,
        chosen,
    );
    let mut w = 0;
    let mut push = |t: usize, w: &mut usize| {
        if let Some(o) = out.get_mut(*w) {
            *o = t as u32;
            *w += 1;
        }
    };
    for &j in chosen.iter().take(picked) {
        for u in 0..pool {
            push(j as usize * pool + u, &mut w);
        }
    }
    if tail {
        for t in visible * pool..=pos {
            push(t, &mut w);
        }
    }
    w
}

/// Keys scored per block by [`score_cache`].
pub const SCORE_BLOCK: usize = 64;

/// Least keys per scoring task of the indexer.
pub const SPLIT_KEYS: usize = 1024;

/// Scoring tasks the indexer can split a query token's keys into (each with its
/// own `[SCORE_BLOCK]` rows of `index_widen` and `index_dots`): at most
/// [`crate::attention::n_slots`], and no more than `max_seq_len` keys have
/// ranges of [`SPLIT_KEYS`]. The memory plan holds this many.
pub const fn score_slots(dims: &crate::config::Dims) -> usize {
    use crate::plan::{ceil_div, max, min};
    max(
        min(
            ceil_div(dims.max_seq, SPLIT_KEYS),
            crate::attention::n_slots(dims),
        ),
        1,
    )
}

/// Index scores of cached keys `0..n_keys` into `out[..n_keys]` (`q_t` the
/// transposed query, see [`score_block`]), by blocks of
/// [`SCORE_BLOCK`]: `widen` is scratch `[SCORE_BLOCK][Di]` (rows of a bf16 or
/// FP8 cache are widened there), `dots` `[SCORE_BLOCK][Hi]`. False if a length
/// disagrees or rows lie outside the cache.
#[allow(clippy::too_many_arguments)]
pub fn score_cache(
    isa: Isa,
    shape: &IndexShape,
    cache: &IndexCache,
    n_keys: usize,
    q_t: &[f32],
    w: &[f32],
    widen: &mut [f32],
    dots: &mut [f32],
    out: &mut [f32],
) -> bool {
    let mut b0 = 0;
    while b0 < n_keys {
        let cnt = SCORE_BLOCK.min(n_keys - b0);
        let Some(o) = out.get_mut(b0..b0 + cnt) else {
            return false;
        };
        let keys = cache.rows(b0, cnt, widen);
        if keys.is_empty() || !score_block(isa, shape, q_t, w, keys, cnt, dots, o) {
            return false;
        }
        b0 += cnt;
    }
    true
}

// Engine-level DSA tests read the golden family files (Miri's isolation has no
// file system) and run hundreds of tokens: not under Miri; dsa/tests.rs is.
#[cfg(all(test, not(miri)))]
mod engine_tests;
#[cfg(test)]
mod tests;
