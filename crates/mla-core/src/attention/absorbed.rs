//! The absorbed path (decode): `W_UK` folded into the query, `W_UV` applied
//! after the latent sum, every cached row read once for all heads.

use super::{
    absorb_tokens, absorbed_splits, blocks, ensure, gemm_nn, gemm_nt, n_slots, Fault, FirstFault,
    Inputs, RowSet, Scratch, SPLIT_ROWS,
};
use crate::cache::LatentCache;
use crate::config::RopeKey;
use crate::kernels::{self, Ahead, Isa, Mat, MatE, MatMut};
use crate::parallel::SharedMut;
use crate::plan::{ceil_div, round16, AbsorbedSlot, Count};

/// Absorbed attention for the call's query tokens into `o` (`[n_tok][H][v]`).
/// Tokens go in groups of [`absorb_tokens`]: per head, `W_UK_h` and `W_UV_h`
/// are read once for the whole group (one product with a row per token).
/// `Err`: a buffer does not match the plan (`o` then holds partial results).
pub fn absorbed(inp: &Inputs, scratch: &mut Scratch, o: &mut [f32]) -> Result<(), Fault> {
    let (dims, isa, par) = (inp.dims, inp.isa, inp.par);
    let layout = AbsorbedSlot::count(dims, inp.widen())
        .map_err(|_| Fault::Slot)?
        .regions;
    let slot_len = inp.absorbed_slot_len()?;
    let heads_padded = round16(dims.h).ok_or(Fault::Slot)?;
    let (ab, _) = blocks(dims);
    let width = dims.absorbed_width;
    let n_slots = n_slots(dims);
    let group_tokens = absorb_tokens(dims);
    let tok_width = dims.h * width;
    // Sizes of the plan, so no product below overflows.
    let absorbed_q = scratch
        .absorbed_q
        .get_mut(..group_tokens * tok_width)
        .ok_or(Fault::Scratch)?;
    let absorbed_q_t = scratch
        .absorbed_q_t
        .get_mut(..width * heads_padded)
        .ok_or(Fault::Scratch)?;
    let slot_count = absorbed_splits(dims);
    let task_slots = scratch
        .task_slots
        .get_mut(..slot_count * slot_len)
        .ok_or(Fault::Scratch)?;
    if width < dims.r || width.checked_sub(dims.r) != Some(dims.p) {
        return Err(Fault::Scratch);
    }
    let (groups, per) = inp.head_groups();
    let fault = FirstFault::new();
    let o_cols = dims.o_cols;
    let mut t0 = 0;
    while t0 < inp.n_tok {
        let g = group_tokens.min(inp.n_tok - t0);
        // (a) q~_h = W_UK_h^T q_nope_h for the group's tokens, by head groups.
        {
            let rows = SharedMut::new(&mut *absorbed_q);
            par.for_each(
                groups,
                g.saturating_mul(dims.h)
                    .saturating_mul(dims.n)
                    .saturating_mul(dims.r),
                &|hg| {
                    for h in inp.group(hg, per) {
                        fault.record(absorb_queries(isa, inp, h, t0, g, &rows));
                    }
                },
            );
        }
        fault.get()?;
        for t in t0..t0 + g {
            let (cache, set) = inp.token(t)?;
            let len = set.len();
            let tok = absorbed_q
                .get_mut((t - t0) * tok_width..(t - t0 + 1) * tok_width)
                .ok_or(Fault::Rows)?;
            // (b) fixed row ranges of whole blocks over the keys first..len.
            let first = inp.first_key(len - 1);
            let span = len - first;
            let nblk = ceil_div(span, ab);
            let want = ceil_div(span, SPLIT_ROWS).min(n_slots).max(1);
            let per_split = (ceil_div(nblk, want) * ab).max(1);
            let splits = ceil_div(span, per_split);
            if splits > slot_count {
                // More ranges than the plan's slots (absorbed_splits bounds them).
                return Err(Fault::Scratch);
            }
            // [q~ | q_pe] transposed, [r + p][Hp]: the scores of a block of cached
            // rows are then one product with the rows broadcast (every row read
            // once for all heads), softmax vectorised across heads.
            absorbed_q_t.iter_mut().for_each(|x| *x = 0.0);
            for (h, row) in tok.chunks_exact(width.max(1)).take(dims.h).enumerate() {
                for (k, &v) in row.iter().enumerate() {
                    if let Some(d) = absorbed_q_t.get_mut(k * heads_padded + h) {
                        *d = v;
                    }
                }
            }
            {
                let slots = SharedMut::new(&mut *task_slots);
                let qa: &[f32] = tok;
                let qat: &[f32] = absorbed_q_t;
                par.for_each(
                    splits,
                    dims.h
                        .saturating_mul(len)
                        .saturating_mul(dims.r * 2 + dims.p),
                    &|si| {
                        let lo = first + si * per_split;
                        let hi = len.min(lo + per_split);
                        // SAFETY: slot si belongs to this task alone.
                        let slot = unsafe { slots.slice(si * slot_len, slot_len) };
                        fault.record(slot.ok_or(Fault::Scratch).and_then(|slot| {
                            split_rows(isa, inp, cache, set, qa, qat, lo, hi, slot)
                        }));
                    },
                );
            }
            fault.get()?;
            // (c) combine the ranges in order into the token's latent sums,
            // which replace its q~ (read by (b) only).
            let slots: &[u8] = bytemuck::try_cast_slice(&*task_slots).map_err(|_| Fault::Slot)?;
            let parts = Parts {
                slots,
                slot_bytes: slot_len * core::mem::size_of::<f32>(),
                splits,
                layout: &layout,
            };
            for (h, row) in tok.chunks_exact_mut(width.max(1)).take(dims.h).enumerate() {
                let acc_h = row.get_mut(..dims.r).ok_or(Fault::Scratch)?;
                combine(inp, h, &parts, acc_h)?;
            }
        }
        // (d) o_h = W_UV_h acc_h for the group's tokens, by head groups.
        {
            let sums: &[f32] = absorbed_q;
            let out = SharedMut::new(&mut *o);
            par.for_each(
                groups,
                g.saturating_mul(dims.h)
                    .saturating_mul(dims.v)
                    .saturating_mul(dims.r),
                &|hg| {
                    for h in inp.group(hg, per) {
                        // SAFETY: head h's columns of the group's output rows;
                        // heads are disjoint across tasks.
                        let o_h = unsafe { out.mat(t0 * o_cols + h * dims.v, g, dims.v, o_cols) };
                        fault.record(match o_h {
                            Some(mut o_h) => project_values(isa, inp, h, sums, g, &mut o_h),
                            None => Err(Fault::Rows),
                        });
                    }
                },
            );
        }
        fault.get()?;
        t0 += g;
    }
    Ok(())
}

/// Head `h` of tokens `t0..t0 + g`: `[W_UK_h^T q_nope_h | q_pe_h]` into their
/// rows of `rows` (`[G][H][r + p]`), one product for the `g` tokens.
fn absorb_queries(
    isa: Isa,
    inp: &Inputs,
    h: usize,
    t0: usize,
    g: usize,
    rows: &SharedMut,
) -> Result<(), Fault> {
    let dims = inp.dims;
    let (r, n, p) = (dims.r, dims.n, dims.p);
    let (width, tok_width) = (dims.absorbed_width, dims.h * dims.absorbed_width);
    let q_nope = inp
        .q
        .get(t0 * dims.q_width + h * dims.qk..)
        .and_then(|q| Mat::new(q, g, n, dims.q_width))
        .ok_or(Fault::Rows)?;
    let w_uk = MatE::tensor_rows(inp.kv_b, h * (n + dims.v), n).ok_or(Fault::Weights)?;
    {
        // SAFETY: head h's q~ columns of the group's rows; heads are disjoint
        // across tasks, and this view ends before the q_pe copies below.
        let mut c = unsafe { rows.mat(h * width, g, r, tok_width) }.ok_or(Fault::Scratch)?;
        for i in 0..g {
            if let Some(row) = c.row(i) {
                row.fill(0.0);
            }
        }
        gemm_nn(isa, &q_nope, &w_uk, &mut c)?;
    }
    for i in 0..g {
        let q_pe = inp
            .q
            .get((t0 + i) * dims.q_width + h * dims.qk + n..)
            .and_then(|q| q.get(..p))
            .ok_or(Fault::Rows)?;
        // SAFETY: head h's q_pe slot of row i; disjoint across tasks.
        let dst = unsafe { rows.slice(i * tok_width + h * width + r, p) }.ok_or(Fault::Scratch)?;
        dst.copy_from_slice(q_pe);
    }
    Ok(())
}

/// `o_h = W_UV_h acc_h` for head `h` of the group's `g` tokens (`sums`:
/// `[G][H][r + p]`, latent sums in the first `r` of each head's part).
fn project_values(
    isa: Isa,
    inp: &Inputs,
    h: usize,
    sums: &[f32],
    g: usize,
    o_h: &mut MatMut,
) -> Result<(), Fault> {
    let dims = inp.dims;
    let (r, n, v) = (dims.r, dims.n, dims.v);
    let a = sums
        .get(h * dims.absorbed_width..)
        .and_then(|s| Mat::new(s, g, r, dims.h * dims.absorbed_width))
        .ok_or(Fault::Scratch)?;
    let w_uv = MatE::tensor_rows(inp.kv_b, h * (n + v) + n, v).ok_or(Fault::Weights)?;
    gemm_nt(isa, &a, &w_uv, o_h, None)
}

/// One row range `lo..hi` of the absorbed path into a slot: partial max, sum and
/// accumulator per head. Per block of cached rows: scores `S^T [rows][H]` =
/// rows x `qat` (the rows broadcast, heads in vectors), online softmax down the
/// columns, then `acc_h = alpha_h acc_h + P_h rows`. `lo..hi` index `set`
/// of `cache`.
#[allow(clippy::too_many_arguments)]
fn split_rows(
    isa: Isa,
    inp: &Inputs,
    cache: &LatentCache,
    set: RowSet,
    qa: &[f32],
    qat: &[f32],
    lo: usize,
    hi: usize,
    slot: &mut [f32],
) -> Result<(), Fault> {
    let dims = inp.dims;
    let (h_n, r, p, c) = (dims.h, dims.r, dims.p, dims.cache_row);
    let width = dims.absorbed_width;
    let (ab, _) = blocks(dims);
    let hp = round16(h_n).ok_or(Fault::Slot)?;
    let slot: &mut [u8] = bytemuck::try_cast_slice_mut(slot).map_err(|_| Fault::Slot)?;
    let AbsorbedSlot {
        latent_acc,
        running_max,
        running_sum,
        weights,
        widened_rows,
        scores_t,
        rescale,
    } = AbsorbedSlot::place(slot, dims, inp.widen())
        .map_err(|_| Fault::Slot)?
        .regions;
    latent_acc.iter_mut().for_each(|x| *x = 0.0);
    running_max.iter_mut().for_each(|x| *x = f32::NEG_INFINITY);
    running_sum.iter_mut().for_each(|x| *x = 0.0);
    // Shared rope key: [q~ | q_pe] . [c | k_pe] in one product over r + p.
    let k_score = match inp.rope_key {
        RopeKey::Shared => width.min(c),
        RopeKey::PerHead => r,
    };
    let bq = Mat::new(qat, k_score, hp, hp).ok_or(Fault::Scratch)?;
    let mut b0 = lo;
    while b0 < hi {
        // A block stops at the end of a ring (a window's cache); a gathered
        // row set (sparse attention) is read through its list.
        let cnt = match set {
            RowSet::Prefix(_) => ab.min(hi - b0).min(cache.contiguous(b0)).max(1),
            RowSet::List(_) => ab.min(hi - b0),
        };
        let rows = Inputs::read_rows(cache, set, b0, cnt, widened_rows);
        // While this block is scored, the next one streams into L2: an f32
        // cache's rows follow these in memory; an f16/bf16 cache's are read
        // as stored (the widening pass then finds them in L2).
        let ahead = match set {
            RowSet::Prefix(_) if b0 + cnt < hi && !inp.widen() => Ahead::F32(cnt * c),
            RowSet::Prefix(_) if b0 + cnt < hi => {
                let next = ab.min(hi - b0 - cnt);
                cache
                    .stored_half(b0 + cnt, next)
                    .map_or(Ahead::Nothing, Ahead::Half)
            }
            _ => Ahead::Nothing,
        };
        scores_t.iter_mut().take(cnt * hp).for_each(|x| *x = 0.0);
        let block = Mat::new(rows, cnt, k_score, c).ok_or(Fault::Cache)?;
        let mut scores = MatMut::new(scores_t, cnt, hp, hp).ok_or(Fault::Slot)?;
        ensure(
            kernels::attn_scores(isa, &block, &bq, &mut scores, ahead),
            Fault::Shapes,
        )?;
        if inp.rope_key == RopeKey::PerHead {
            // Head h's rope keys: one product per head (rows x q_pe_h) into
            // `weights`, added to the head's column of the scores.
            for h in 0..h_n {
                let off = inp.kpe_offset(h);
                let keys_pe = rows
                    .get(off..)
                    .and_then(|rs| Mat::new(rs, cnt, p, c))
                    .ok_or(Fault::Cache)?;
                let bq = qa
                    .get(h * width + r..(h + 1) * width)
                    .and_then(|q| Mat::new(q, 1, p, p))
                    .ok_or(Fault::Scratch)?;
                let mut pe_col = weights
                    .get_mut(..cnt)
                    .and_then(|t| MatMut::new(t, cnt, 1, 1))
                    .ok_or(Fault::Slot)?;
                gemm_nt(isa, &keys_pe, &MatE::F32(bq), &mut pe_col, None)?;
                for (score_row, &v) in scores_t
                    .chunks_exact_mut(hp.max(1))
                    .zip(weights.iter())
                    .take(cnt)
                {
                    if let Some(x) = score_row.get_mut(h) {
                        *x += v;
                    }
                }
            }
        }
        ensure(
            kernels::softmax_cols(
                isa,
                scores_t,
                cnt,
                hp,
                hp,
                inp.scale,
                running_max,
                running_sum,
                rescale,
            ),
            Fault::Softmax,
        )?;
        // acc[h][j] = alpha_h acc[h][j] + sum_b P[b][h] rows[b][j]: each
        // cached row is read once, as vectors, for all heads.
        for (acc_h, &a) in latent_acc.chunks_exact_mut(r.max(1)).zip(rescale.iter()) {
            if a != 1.0 {
                kernels::scale(acc_h, a);
            }
        }
        let probs = scores_t
            .get(..cnt * hp)
            .and_then(|s| Mat::new(s, cnt, hp, hp))
            .ok_or(Fault::Slot)?;
        let latents = Mat::new(rows, cnt, r, c).ok_or(Fault::Cache)?;
        let mut acc_mat = MatMut::new(latent_acc, hp, r, r).ok_or(Fault::Slot)?;
        ensure(
            kernels::attn_sum(isa, &latents, &probs, &mut acc_mat),
            Fault::Shapes,
        )?;
        b0 += cnt;
    }
    Ok(())
}

/// The task slots of step (b), read-only: `splits` slots of `slot_bytes`
/// laid out as `layout`.
struct Parts<'a> {
    slots: &'a [u8],
    slot_bytes: usize,
    splits: usize,
    layout: &'a AbsorbedSlot<Count>,
}

impl Parts<'_> {
    /// Range `si`'s running max, sum and latent sums (`r` values) of head `h`.
    fn get(&self, si: usize, h: usize, r: usize) -> Result<(f32, f32, &[f32]), Fault> {
        let slot = self
            .slots
            .get(si * self.slot_bytes..)
            .ok_or(Fault::Scratch)?;
        let lay = self.layout;
        let part = (
            lay.running_max.get::<f32>(slot).and_then(|m| m.get(h)),
            lay.running_sum.get::<f32>(slot).and_then(|l| l.get(h)),
            lay.latent_acc
                .get::<f32>(slot)
                .and_then(|a| a.get(h.checked_mul(r)?..h.checked_add(1)?.checked_mul(r)?)),
        );
        match part {
            (Some(&m), Some(&l), Some(acc)) => Ok((m, l, acc)),
            _ => Err(Fault::Slot),
        }
    }
}

/// Head `h`: combines the ranges' partial results in order into `acc_h`
/// (`r` values), divided by the softmax denominator (with the head's sink).
fn combine(inp: &Inputs, h: usize, parts: &Parts, acc_h: &mut [f32]) -> Result<(), Fault> {
    let r = inp.dims.r;
    let mut m = f32::NEG_INFINITY;
    for si in 0..parts.splits {
        m = m.max(parts.get(si, h, r)?.0);
    }
    acc_h.iter_mut().for_each(|x| *x = 0.0);
    let mut l = 0.0f32;
    for si in 0..parts.splits {
        let (ms, ls, acc_s) = parts.get(si, h, r)?;
        let f = if ms == f32::NEG_INFINITY {
            0.0
        } else {
            libm::expf(ms - m)
        };
        for (d, s) in acc_h.iter_mut().zip(acc_s) {
            *d += f * s;
        }
        l += f * ls;
    }
    kernels::scale(acc_h, 1.0 / inp.denominator(h, m, l));
    Ok(())
}
