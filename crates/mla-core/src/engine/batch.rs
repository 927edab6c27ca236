//! Batched decode: one token for each of several engines that share their
//! weights, every weight read once per call ([`super::Engine::forward_batch`]).
//! The single-sequence forward pass stays in the parent module; this file holds
//! the batch's checks, its body and the per-step helpers only it uses.

use super::*;
/// The engines of one batched decode call ([`Engine::forward_batch`]), by
/// index. Implemented for `[&mut Engine]`; the C API implements it over its
/// array of handles.
pub trait EngineBatch<'w, 'm>: Sync {
    /// Engines in the batch.
    fn count(&self) -> usize;
    /// Engine `i` (`None` past the batch).
    fn engine(&self, i: usize) -> Option<&Engine<'w, 'm>>;
    /// Engine `i`, mutably (`None` past the batch).
    fn engine_mut(&mut self, i: usize) -> Option<&mut Engine<'w, 'm>>;
}

impl<'w, 'm> EngineBatch<'w, 'm> for [&mut Engine<'w, 'm>] {
    fn count(&self) -> usize {
        self.len()
    }
    fn engine(&self, i: usize) -> Option<&Engine<'w, 'm>> {
        self.get(i).map(|e| &**e)
    }
    fn engine_mut(&mut self, i: usize) -> Option<&mut Engine<'w, 'm>> {
        self.get_mut(i).map(|e| &mut **e)
    }
}

/// The caches of a batch, for attention.
struct BatchCaches<'s, B: ?Sized>(&'s B);

impl<'s, 'w: 's, 'm: 's, B: EngineBatch<'w, 'm> + ?Sized> attention::Caches<'m>
    for BatchCaches<'s, B>
{
    fn cache(&self, t: usize) -> Option<&LatentCache<'m>> {
        self.0.engine(t).map(|e| &e.cache)
    }
}

/// True when two weight sets borrow the same tensors (same data, same shapes).
fn same_weights(a: &Weights, b: &Weights) -> bool {
    fn same(a: Option<&Tensor>, b: Option<&Tensor>) -> bool {
        match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                a.rows == b.rows
                    && a.cols == b.cols
                    && a.data.dtype() == b.data.dtype()
                    && a.data.len() == b.data.len()
                    && core::ptr::eq(a.data.as_ptr(), b.data.as_ptr())
                    && match (a.data, b.data) {
                        // FP8: the same block scales too.
                        (Elems::F8(x), Elems::F8(y)) => {
                            core::ptr::eq(x.scales().as_ptr(), y.scales().as_ptr())
                                && x.offset() == y.offset()
                        }
                        _ => true,
                    }
            }
            _ => false,
        }
    }
    same(a.q_proj.as_ref(), b.q_proj.as_ref())
        && same(a.q_a_proj.as_ref(), b.q_a_proj.as_ref())
        && same(a.q_a_layernorm.as_ref(), b.q_a_layernorm.as_ref())
        && same(a.q_b_proj.as_ref(), b.q_b_proj.as_ref())
        && same(a.kv_a_proj_with_mqa.as_ref(), b.kv_a_proj_with_mqa.as_ref())
        && same(a.kv_a_layernorm.as_ref(), b.kv_a_layernorm.as_ref())
        && same(Some(&a.kv_b_proj), Some(&b.kv_b_proj))
        && same(Some(&a.o_proj), Some(&b.o_proj))
        && same(a.q_a_proj_bias.as_ref(), b.q_a_proj_bias.as_ref())
        && same(a.kv_a_proj_bias.as_ref(), b.kv_a_proj_bias.as_ref())
        && same(a.o_proj_bias.as_ref(), b.o_proj_bias.as_ref())
}

/// `Unsupported` for a mechanism the batched path does not carry: per-token
/// steps that live in [`Engine::forward_mode`] only (rope variants past
/// default/YaRN, key norm, latent and query scales, gates, sinks, windows) and
/// per-engine state beside the latent cache (DSA index caches, shared caches).
/// Checked here, not only by [`Config::check_supported`], so a mechanism
/// added to the single-sequence path is refused by the batch until it is
/// added there too.
pub(super) fn batchable(cfg: &Config) -> Result<()> {
    use crate::config::{Dsa, Gate, QueryScale, RopeType};
    let mechanism = if !matches!(cfg.rope_type, RopeType::Default | RopeType::Yarn) {
        Some("rope types other than default and yarn")
    } else if cfg.rope_freq_alpha || cfg.rope_key_norm {
        Some("rope_freq_alpha / rope_key_norm")
    } else if cfg.q_latent_scale != 1.0 || cfg.kv_latent_scale != 1.0 {
        Some("latent scales")
    } else if cfg.query_scale != QueryScale::None {
        Some("query_scale")
    } else if cfg.gate != Gate::None || cfg.sinks {
        Some("output gates / attention sinks")
    } else if cfg.sliding_window != 0 {
        Some("sliding_window")
    } else if cfg.kv_shared || cfg.dsa != Dsa::None {
        Some("kv_shared / dsa (state beside the latent cache)")
    } else {
        None
    };
    match mechanism {
        Some(m) => Err(err(Status::Unsupported, "forward_batch: ")
            .s(m)
            .s(" not batched; use forward per engine")),
        None => Ok(()),
    }
}

/// Checks a batched call; returns `n`.
fn check_batch<'w, 'm, B: EngineBatch<'w, 'm> + ?Sized>(
    batch: &B,
    x: &[f32],
    out: &[f32],
) -> Result<usize> {
    let n = batch.count();
    let first = match batch.engine(0) {
        Some(e) if n > 0 => e,
        _ => {
            return Err(err(
                Status::InvalidArgument,
                "forward_batch: no engines (n is 0)",
            ))
        }
    };
    batchable(&first.cfg)?;
    let dims = first.dims;
    if n > dims.max_tok {
        return Err(err(Status::InvalidArgument, "forward_batch: n is ")
            .n(n)
            .s(", above max_tokens_per_call ")
            .n(dims.max_tok)
            .s(" of engines[0] (its scratch holds the batch)"));
    }
    let d = dims.d;
    let want = n.checked_mul(d).ok_or_else(|| {
        err(
            Status::InvalidArgument,
            "forward_batch: n * hidden_size overflows",
        )
    })?;
    if x.len() != want || out.len() != want {
        return Err(err(
            Status::InvalidArgument,
            "forward_batch: x and out must hold ",
        )
        .n(want)
        .s(" floats (n x hidden_size), got ")
        .n(x.len())
        .s(" and ")
        .n(out.len()));
    }
    for i in 0..n {
        let Some(e) = batch.engine(i) else {
            return Err(err(Status::Internal, "forward_batch: engine count changed"));
        };
        for j in 0..i {
            if batch.engine(j).is_some_and(|o| core::ptr::eq(o, e)) {
                return Err(err(Status::InvalidArgument, "forward_batch: engines[")
                    .n(i)
                    .s("] is engines[")
                    .n(j)
                    .s("] again (one token per engine)"));
            }
        }
        if e.cfg != first.cfg || !same_weights(&e.weights, &first.weights) {
            return Err(err(Status::InvalidArgument, "forward_batch: engines[")
                .n(i)
                .s("] has other weights/config than engines[0]"));
        }
        if e.len() >= e.capacity() {
            return Err(err(Status::CacheFull, "forward_batch: engines[")
                .n(i)
                .s("] is full (max_seq_len ")
                .n(e.capacity())
                .s(")"));
        }
    }
    if let Some(k) = x.iter().position(|v| !v.is_finite()) {
        return Err(err(Status::NonFinite, "forward_batch: x row ")
            .n(k / d.max(1))
            .s(", column ")
            .n(k % d.max(1))
            .s(" is NaN or infinite"));
    }
    Ok(n)
}

/// [`Engine::forward_batch`] over any [`EngineBatch`].
pub fn forward_batch_in<'w, 'm, B: EngineBatch<'w, 'm> + ?Sized>(
    batch: &mut B,
    x: &[f32],
    out: &mut [f32],
) -> Result<()> {
    let n = check_batch(batch, x, out)?;
    let lost = || err(Status::Internal, "forward_batch: engines[0] went away");
    // engines[0]'s scratch, taken out for the call (the other engines' caches
    // are read while it is written) and put back after it, on success and on
    // error alike. (A panic, which no input reaches, would leave engines[0]
    // without scratch: its later calls would fail with Internal, never read
    // out of bounds.)
    let first = batch.engine_mut(0).ok_or_else(lost)?;
    let mut work = core::mem::take(&mut first.work);
    let r = batch_body(batch, &mut work, n, x, out);
    let first = batch.engine_mut(0).ok_or_else(lost)?;
    first.work = work;
    r
}

/// The batched call on checked arguments, with `work` the scratch.
fn batch_body<'w, 'm, B: EngineBatch<'w, 'm> + ?Sized>(
    batch: &mut B,
    work: &mut Regions<Place<'m>>,
    n: usize,
    x: &[f32],
    out: &mut [f32],
) -> Result<()> {
    let first = batch
        .engine(0)
        .ok_or_else(|| err(Status::Internal, "forward_batch: engines[0] went away"))?;
    let (cfg, dims, weights) = (first.cfg, first.dims, first.weights);
    let (par, isa, scale, rope_scaling) = (first.par, first.isa, first.scale, first.rope_scaling);
    project(&cfg, &dims, &weights, &par, work, x, n)?;
    for i in 0..n {
        let e = batch
            .engine_mut(i)
            .ok_or_else(|| err(Status::Internal, "forward_batch: an engine went away"))?;
        let pos = e.cache.len();
        let kv = rope_token(&cfg, &dims, &weights, rope_scaling, work, i, pos)?;
        e.cache.write_row(pos, kv);
    }
    {
        let caches = BatchCaches(&*batch);
        let first = batch
            .engine(0)
            .ok_or_else(|| err(Status::Internal, "forward_batch: engines[0] went away"))?;
        let inputs = Inputs {
            dims: &dims,
            q: work.q,
            rope_key: cfg.rope_key,
            kv_b: &weights.kv_b_proj,
            cache: &first.cache,
            scale,
            window: 0,
            sinks: None,
            start: 0,
            batch: Some(&caches),
            n_tok: n,
            isa,
            par: &par,
            selection: None,
        };
        let mut scratch = Scratch {
            absorbed_q: work.absorbed_q,
            absorbed_q_t: work.absorbed_q_t,
            task_slots: work.task_slots,
        };
        attention::absorbed(&inputs, &mut scratch, work.o)
            .map_err(|fault| attention_fault(true, fault))?;
    }
    output(&weights, &par, work, n, out)?;
    for i in 0..n {
        // Capacity was checked for every engine, so no commit fails.
        if !batch.engine_mut(i).is_some_and(|e| e.cache.commit(1)) {
            return Err(err(Status::Internal, "forward_batch: cache commit failed"));
        }
    }
    Ok(())
}

/// The `Internal` error of a projection whose buffers disagree with the plan.
fn projection(name: &str) -> Error {
    err(Status::Internal, "forward: ")
        .s(name)
        .s(": buffer sizes disagree with the memory plan")
}

/// Steps 1 and 2 for `t` tokens `x`: queries `q[T][H][n+p]` and new cache rows
/// `kv_new[T][r + rope_k]` (before normalisation and rotation).
fn project(
    cfg: &Config,
    dims: &Dims,
    w: &Weights,
    par: &Parallel,
    work: &mut Regions<Place<'_>>,
    x: &[f32],
    t: usize,
) -> Result<()> {
    let d = dims.d;
    let pack = &mut *work.pack_panels;
    // 1. Queries q[T][H][n+p].
    match (w.q_a_proj.as_ref(), w.q_b_proj.as_ref(), w.q_proj.as_ref()) {
        (Some(q_a), Some(q_b), _) => {
            let q_latent = &mut *work.q_latent;
            if !linear_par(
                par,
                q_a,
                w.q_a_proj_bias.as_ref(),
                x,
                d,
                t,
                q_latent,
                Some(pack),
            ) {
                return Err(projection("q_a_proj"));
            }
            if let Some(norm) = w.q_a_layernorm.as_ref() {
                for row in q_latent.chunks_exact_mut(dims.rq.max(1)).take(t) {
                    rmsnorm(row, norm.data, cfg.rms_norm_eps);
                }
            }
            if !linear_par(par, q_b, None, q_latent, dims.rq, t, work.q, Some(pack)) {
                return Err(projection("q_b_proj"));
            }
        }
        (_, _, Some(q_proj)) => {
            if !linear_par(par, q_proj, None, x, d, t, work.q, Some(pack)) {
                return Err(projection("q_proj"));
            }
        }
        _ => return Err(err(Status::Internal, "query weights missing")),
    }

    // 2. New cache rows kv_new[T][r + rope_k] = kv_a_proj_with_mqa x (+ b).
    //    (A kv_shared layer has no kv_a weights; check_supported refuses it.)
    let Some(kv_a) = w.kv_a_proj_with_mqa.as_ref() else {
        return Err(projection("kv_a_proj_with_mqa"));
    };
    if !linear_par(
        par,
        kv_a,
        w.kv_a_proj_bias.as_ref(),
        x,
        d,
        t,
        work.kv_new,
        Some(pack),
    ) {
        return Err(projection("kv_a_proj_with_mqa"));
    }
    Ok(())
}

/// Step 3 for token `i` of the call, at position `pos`: `c = RMSNorm(kv[..r])`,
/// the rope key(s) and every head's `q_pe` rotated; returns the cache row.
/// (Rows by index: a zip of two chunk iterators keeps a division-by-zero panic
/// path on some targets.)
fn rope_token<'a>(
    cfg: &Config,
    dims: &Dims,
    w: &Weights,
    rope_scaling: f64,
    work: &'a mut Regions<Place<'_>>,
    i: usize,
    pos: usize,
) -> Result<&'a [f32]> {
    let (r, p) = (dims.r, dims.p);
    let (kv_width, q_width) = (dims.kv_a_rows, dims.q_width);
    let (Some(kv), Some(q)) = (
        work.kv_new.get_mut(i * kv_width..(i + 1) * kv_width),
        work.q.get_mut(i * q_width..(i + 1) * q_width),
    ) else {
        return Err(projection("kv_new or q"));
    };
    let Some(kv_norm) = w.kv_a_layernorm.as_ref() else {
        return Err(projection("kv_a_layernorm"));
    };
    let (cos, sin) = (&mut *work.rope_cos, &mut *work.rope_sin);
    rope::cos_sin(work.rope_inv_freq, rope_scaling, pos, cos, sin);
    let (c, kpe) = kv.split_at_mut(r.min(kv.len()));
    rmsnorm(c, kv_norm.data, cfg.rms_norm_eps);
    for k in kpe.chunks_exact_mut(p.max(1)) {
        rope::rotate(k, cos, sin, cfg.rope_layout);
    }
    for qh in q.chunks_exact_mut(dims.qk.max(1)) {
        if let Some(q_pe) = qh.get_mut(dims.n..) {
            rope::rotate(q_pe, cos, sin, cfg.rope_layout);
        }
    }
    Ok(kv)
}

/// Step 5: `out[T][d] = o_proj o (+ b)`.
fn output(
    w: &Weights,
    par: &Parallel,
    work: &mut Regions<Place<'_>>,
    t: usize,
    out: &mut [f32],
) -> Result<()> {
    if !linear_par(
        par,
        &w.o_proj,
        w.o_proj_bias.as_ref(),
        work.o,
        w.o_proj.cols,
        t,
        out,
        Some(&mut *work.pack_panels),
    ) {
        return Err(projection("o_proj"));
    }
    Ok(())
}
