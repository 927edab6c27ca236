//! The small steps of the forward pass that belong to one mechanism each
//! (LeRoPE frequencies, the fused query gate's input and split, output gates,
//! window start, query scales, the indexer's tensors) and the mapping of
//! attention faults to errors. The pass itself, top to bottom, is in the
//! parent module.

use super::*;
/// LeRoPE: multiplies the inverse frequencies by `exp(alpha)` when the weights
/// carry `rope_freq_alpha` (`scratch`: `p/2` f32 to widen alpha into).
pub(super) fn lerope(w: &Weights, inv_freq: &mut [f64], scratch: &mut [f32]) {
    if let Some(alpha) = w.rope_freq_alpha.as_ref() {
        alpha.data.widen_into(scratch);
        rope::apply_freq_alpha(inv_freq, scratch);
    }
}

/// Expands `t` rows of `rq` values at the start of `lat` into rows of `2 rq`:
/// `[RMSNorm(c) ; c]` (the fused query gate's input). `None` when `lat` is short.
pub(super) fn fuse_latent(
    lat: &mut [f32],
    rq: usize,
    t: usize,
    norm: Elems,
    eps: f32,
) -> Option<()> {
    if lat.len() < t.checked_mul(rq)?.checked_mul(2)? {
        return None;
    }
    // Last row first: row i moves to 2i (normalised) and 2i + 1 (raw) rq-chunks,
    // never over a row not yet moved.
    for i in (0..t).rev() {
        for j in 0..rq {
            let v = *lat.get(i * rq + j)?;
            *lat.get_mut((2 * i + 1) * rq + j)? = v;
            *lat.get_mut(2 * i * rq + j)? = v;
        }
        rmsnorm(lat.get_mut(2 * i * rq..(2 * i + 1) * rq)?, norm, eps);
    }
    Some(())
}

/// Splits the fused projection `[T][H][n+p+v]` into the queries `[T][H][n+p]`
/// and the gate logits `[T][H*v]`. `None` when a buffer is short.
pub(super) fn split_fused(
    fused: &[f32],
    q: &mut [f32],
    gate: &mut [f32],
    dims: &Dims,
    t: usize,
) -> Option<()> {
    let (qk, v) = (dims.qk, dims.v);
    let row = qk + v;
    for i in 0..t {
        for h in 0..dims.h {
            let src = fused.get((i * dims.h + h) * row..(i * dims.h + h + 1) * row)?;
            let (sq, sg) = src.split_at(qk.min(src.len()));
            let dq = q.get_mut((i * dims.h + h) * qk..(i * dims.h + h + 1) * qk)?;
            dq.iter_mut().zip(sq).for_each(|(d, &x)| *d = x);
            let dg = gate.get_mut((i * dims.h + h) * v..(i * dims.h + h + 1) * v)?;
            dg.iter_mut().zip(sg).for_each(|(d, &x)| *d = x);
        }
    }
    Some(())
}

/// `o[t][h][j] *= sigmoid(g)` with `g` per head (`[T][H]`) or per channel
/// (`[T][H*v]`), the sigmoid in f32. `None` when a buffer is short.
pub(super) fn apply_gate(
    gate: Gate,
    g: &[f32],
    o: &mut [f32],
    dims: &Dims,
    t: usize,
) -> Option<()> {
    let sigmoid = |x: f32| 1.0 / (1.0 + libm::expf(-x));
    let (h, v) = (dims.h, dims.v);
    for i in 0..t {
        let ot = o.get_mut(i * h * v..(i + 1) * h * v)?;
        match gate {
            Gate::PerHead => {
                let gt = g.get(i * h..(i + 1) * h)?;
                for hh in 0..h {
                    let f = sigmoid(*gt.get(hh)?);
                    ot.get_mut(hh * v..(hh + 1) * v)?
                        .iter_mut()
                        .for_each(|x| *x *= f);
                }
            }
            Gate::PerChannel | Gate::FusedQ => {
                let gt = g.get(i * h * v..(i + 1) * h * v)?;
                ot.iter_mut().zip(gt).for_each(|(x, &gv)| *x *= sigmoid(gv));
            }
            Gate::None => {}
        }
    }
    Some(())
}

/// The first key position a query at `pos` sees (`window`: W, 0 = none):
/// `pos + 1 - W`, at least 0.
pub(crate) fn window_start(window: usize, pos: usize) -> usize {
    if window == 0 {
        0
    } else {
        (pos + 1).saturating_sub(window)
    }
}

/// The query scale of position `pos` when the config scales queries after RoPE
/// with a rule of its own (Llama 4: `1 + beta ln(1 + floor(pos / L))`, in f32 as
/// transformers computes it); `None` when there is none.
pub(super) fn query_scale(cfg: &Config, pos: usize) -> Option<f32> {
    match cfg.query_scale {
        QueryScale::Llama4 => {
            let l = (cfg.query_scale_length as usize).max(1);
            let steps = (pos / l) as f32;
            Some(1.0 + cfg.query_scale_beta * libm::log1pf(steps))
        }
        QueryScale::None | QueryScale::LearnedLogPos => None,
    }
}

/// The indexer tensors of a DSA `Full` layer from its weights.
pub(super) fn indexer_weights<'w>(w: &Weights<'w>) -> Result<IndexerWeights<'w>> {
    let need = |t: Option<Tensor<'w>>, name: &str| {
        t.ok_or_else(|| err(Status::WeightShape, name).s(": missing (dsa full)"))
    };
    let pair = |a: Option<Tensor<'w>>, b: Option<Tensor<'w>>| a.zip(b);
    Ok(IndexerWeights {
        wq_b: need(w.index_wq_b, "index_wq_b")?,
        wk: need(w.index_wk, "index_wk")?,
        k_norm: need(w.index_k_norm, "index_k_norm")?,
        k_norm_bias: need(w.index_k_norm_bias, "index_k_norm_bias")?,
        weights_proj: need(w.index_weights_proj, "index_weights_proj")?,
        q_norm: pair(w.index_q_norm, w.index_q_norm_bias),
        query_scale: pair(w.index_query_scale_s, w.index_query_scale_b),
    })
}

/// The `Internal` error for an attention fault (a planning bug).
pub(super) fn attention_fault(absorbed: bool, fault: attention::Fault) -> Error {
    let path = if absorbed {
        "absorbed attention: "
    } else {
        "naive attention: "
    };
    err(Status::Internal, path).s(fault.message())
}
