//! The indexer step of a forward call (DSA `Full`): the call's keys join the
//! index cache, every query token gets its top-k.

use super::{finish_key, finish_query, layer_norm, select_topk, transpose_query, IndexCache};
use super::{IndexShape, IndexerWeights, SCORE_BLOCK, SPLIT_KEYS};
use crate::config::{Config, Dims, Gate, IndexQInput, IndexRope};
use crate::kernels::{linear_par, Isa};
use crate::parallel::{Parallel, SharedMut};
use crate::plan::ceil_div;
use crate::rope;
use crate::status::{err, Error, Result, Status};

/// What the indexer step reads.
pub(crate) struct IndexCall<'a, 'w, 'p> {
    pub cfg: &'a Config,
    pub dims: &'a Dims,
    pub iw: &'a IndexerWeights<'w>,
    /// `[T][d]` the call's input.
    pub x: &'a [f32],
    /// `[T][r_q]` normalised query latent (`index_q_input` QLatent).
    pub q_latent: &'a [f32],
    pub t: usize,
    pub start: usize,
    pub inv_freq: &'a [f64],
    pub rope_scaling: f64,
    pub par: &'a Parallel<'p>,
    pub isa: Isa,
    /// Scratch slots for the scoring tasks.
    pub slots: usize,
}

/// The indexer's scratch (regions of the memory plan).
pub(crate) struct IndexWork<'a> {
    pub x_norm: &'a mut [f32],
    pub q: &'a mut [f32],
    /// `[Di][Hi]` one token's query, transposed.
    pub q_t: &'a mut [f32],
    pub w: &'a mut [f32],
    pub k: &'a mut [f32],
    pub scores: &'a mut [f32],
    pub widen: &'a mut [f32],
    pub dots: &'a mut [f32],
    pub cos: &'a mut [f32],
    pub sin: &'a mut [f32],
    pub pack: &'a mut [f32],
    pub sel: &'a mut [u32],
    pub sel_len: &'a mut [u32],
}

fn internal(what: &str) -> Error {
    err(Status::Internal, "indexer: ")
        .s(what)
        .s(": buffer sizes disagree with the memory plan")
}

impl IndexCall<'_, '_, '_> {
    /// The layer's indexer shape.
    pub fn shape(&self) -> IndexShape {
        IndexShape {
            heads: self.dims.index_heads,
            dim: self.dims.index_dim,
            rope_dims: if self.cfg.index_rope == IndexRope::None {
                0
            } else {
                self.dims.p
            },
            rope: self.cfg.index_rope,
            layout: self.cfg.index_rope_layout,
        }
    }
}

/// Writes the keys of the call's tokens at slots `start..start + t` of `cache`
/// (not yet state: the engine commits them with the latent rows) and each
/// token's selection to `work.sel` / `work.sel_len`.
pub(crate) fn index_tokens(
    call: &IndexCall,
    cache: &mut IndexCache,
    work: IndexWork,
) -> Result<()> {
    let (cfg, dims, iw, t) = (call.cfg, call.dims, call.iw, call.t);
    let (d, hi, di, k) = (dims.d, dims.index_heads, dims.index_dim, dims.index_topk);
    let shape = call.shape();
    let par = call.par;
    // Query input.
    let (u, u_cols): (&[f32], usize) = match cfg.index_q_input {
        // With the fused query gate the latent rows were expanded in place to
        // `[RMSNorm(c) ; c]` (2 r_q each): the indexer reads the first half.
        IndexQInput::QLatent if cfg.gate == Gate::FusedQ => (call.q_latent, 2 * dims.rq),
        IndexQInput::QLatent => (call.q_latent, dims.rq),
        IndexQInput::HiddenLayerNorm => {
            let (g, b) = iw.q_norm.ok_or_else(|| internal("index_q_norm"))?;
            for i in 0..t {
                let (Some(dst), Some(src)) = (
                    work.x_norm.get_mut(i * d..(i + 1) * d),
                    call.x.get(i * d..(i + 1) * d),
                ) else {
                    return Err(internal("index_x"));
                };
                dst.copy_from_slice(src);
                layer_norm(dst, g.data, b.data, cfg.index_q_norm_eps);
            }
            (&*work.x_norm, d)
        }
    };
    let pack = &mut *work.pack;
    if !linear_par(par, &iw.wq_b, None, u, u_cols, t, work.q, Some(&mut *pack)) {
        return Err(internal("index_wq_b"));
    }
    if !linear_par(
        par,
        &iw.weights_proj,
        None,
        call.x,
        d,
        t,
        work.w,
        Some(&mut *pack),
    ) {
        return Err(internal("index_weights_proj"));
    }
    if !linear_par(par, &iw.wk, None, call.x, d, t, work.k, Some(&mut *pack)) {
        return Err(internal("index_wk"));
    }
    for i in 0..t {
        let pos = call.start + i;
        let (Some(ki), Some(qi), Some(wi)) = (
            work.k.get_mut(i * di..(i + 1) * di),
            work.q.get_mut(i * hi * di..(i + 1) * hi * di),
            work.w.get_mut(i * hi..(i + 1) * hi),
        ) else {
            return Err(internal("index_q, index_w or index_k"));
        };
        rope::cos_sin(call.inv_freq, call.rope_scaling, pos, work.cos, work.sin);
        finish_key(
            &shape,
            ki,
            iw.k_norm.data,
            iw.k_norm_bias.data,
            cfg.index_k_norm_eps,
            work.cos,
            work.sin,
        );
        if !cache.write(pos, ki) {
            return Err(internal("index_cache"));
        }
        let scale = iw.query_scale.map(|(s, b)| (s.data, b.data));
        finish_query(&shape, qi, wi, pos, scale, work.cos, work.sin);
    }
    let cache: &IndexCache = cache;
    for i in 0..t {
        let n = call.start + i + 1;
        let (Some(qi), Some(wi), Some(sel), Some(len)) = (
            work.q.get(i * hi * di..(i + 1) * hi * di),
            work.w.get(i * hi..(i + 1) * hi),
            work.sel.get_mut(i * k..(i + 1) * k),
            work.sel_len.get_mut(i),
        ) else {
            return Err(internal("selection"));
        };
        let scores = work
            .scores
            .get_mut(..n)
            .ok_or_else(|| internal("index_scores"))?;
        if n > k {
            if !transpose_query(&shape, qi, work.q_t) {
                return Err(internal("index_qt"));
            }
            score_split(
                call,
                &shape,
                cache,
                work.q_t,
                wi,
                &mut *work.widen,
                &mut *work.dots,
                scores,
            )?;
        }
        *len = select_topk(scores, k, sel) as u32;
    }
    Ok(())
}

/// Scores of keys `0..scores.len()` in fixed key ranges (whole blocks; the
/// split depends only on the count) on the parallel-for.
#[allow(clippy::too_many_arguments)]
fn score_split(
    call: &IndexCall,
    shape: &IndexShape,
    cache: &IndexCache,
    q: &[f32],
    w: &[f32],
    widen: &mut [f32],
    dots: &mut [f32],
    scores: &mut [f32],
) -> Result<()> {
    let n = scores.len();
    let (hi, di) = (shape.heads, shape.dim);
    let nblk = ceil_div(n, SCORE_BLOCK);
    let want = ceil_div(n, SPLIT_KEYS).min(call.slots).max(1);
    let per = (ceil_div(nblk, want) * SCORE_BLOCK).max(1);
    let splits = ceil_div(n, per);
    let (wl, dl) = (SCORE_BLOCK * di, SCORE_BLOCK * hi);
    if widen.len() < splits * wl || dots.len() < splits * dl {
        return Err(internal("index_widen or index_dots"));
    }
    let out = SharedMut::new(scores);
    let widen = SharedMut::new(widen);
    let dots = SharedMut::new(dots);
    let failed = core::sync::atomic::AtomicBool::new(false);
    call.par.for_each(splits, n.saturating_mul(hi * di), &|si| {
        let lo = si * per;
        let cnt = per.min(n - lo.min(n));
        // SAFETY: split si owns its key range of the scores and its own scratch
        // slot of widen and dots; the ranges are disjoint across tasks.
        let (o, wd, dt) = unsafe {
            (
                out.slice(lo, cnt),
                widen.slice(si * wl, wl),
                dots.slice(si * dl, dl),
            )
        };
        let ok = match (o, wd, dt) {
            (Some(o), Some(wd), Some(dt)) => {
                score_range(call.isa, shape, cache, lo, q, w, wd, dt, o)
            }
            _ => false,
        };
        if !ok {
            failed.store(true, core::sync::atomic::Ordering::Relaxed);
        }
    });
    if failed.load(core::sync::atomic::Ordering::Relaxed) {
        return Err(internal("index scoring"));
    }
    Ok(())
}

/// Scores of keys `lo..lo + out.len()` (a whole number of blocks from `lo`).
#[allow(clippy::too_many_arguments)]
fn score_range(
    isa: Isa,
    shape: &IndexShape,
    cache: &IndexCache,
    lo: usize,
    q: &[f32],
    w: &[f32],
    widen: &mut [f32],
    dots: &mut [f32],
    out: &mut [f32],
) -> bool {
    let mut b0 = 0;
    while b0 < out.len() {
        let cnt = SCORE_BLOCK.min(out.len() - b0);
        let keys = cache.rows(lo + b0, cnt, widen);
        let Some(o) = out.get_mut(b0..b0 + cnt) else {
            return false;
        };
        if keys.is_empty() || !super::score_block(isa, shape, q, w, keys, cnt, dots, o) {
            return false;
        }
        b0 += cnt;
    }
    true
}
