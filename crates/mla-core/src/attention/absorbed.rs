//! The absorbed path (decode): `W_UK` folded into the query, `W_UV` applied
//! after the latent sum, every cached row read once for all heads.

use super::{
    blocks, ensure, gemm_nn, gemm_nt, n_slots, Fault, FirstFault, Inputs, RowSet, Scratch,
    SPLIT_ROWS,
};
use crate::config::RopeKey;
use crate::kernels::{self, Isa, Mat, MatE, MatMut};
use crate::parallel::SharedMut;
use crate::plan::{ceil_div, round16, AbsorbedSlot, Count};

/// Absorbed attention for the call's query tokens into `o` (`[n_tok][H][v]`).
/// `Err`: a buffer does not match the plan (`o` then holds partial results).
pub fn absorbed(inp: &Inputs, scratch: &mut Scratch, o: &mut [f32]) -> Result<(), Fault> {
    let (dims, isa, par) = (inp.dims, inp.isa, inp.par);
    let layout = AbsorbedSlot::count(dims, inp.widen())
        .map_err(|_| Fault::Slot)?
        .regions;
    let slot_len = inp.slot_len()?;
    let heads_padded = round16(dims.h).ok_or(Fault::Slot)?;
    let (ab, _) = blocks(dims);
    let width = dims.absorbed_width;
    let n_slots = n_slots(dims);
    // Sizes of the plan, so no product below overflows.
    let absorbed_q = scratch
        .absorbed_q
        .get_mut(..dims.h * width)
        .ok_or(Fault::Scratch)?;
    let absorbed_q_t = scratch
        .absorbed_q_t
        .get_mut(..width * heads_padded)
        .ok_or(Fault::Scratch)?;
    let task_slots = scratch
        .task_slots
        .get_mut(..n_slots * slot_len)
        .ok_or(Fault::Scratch)?;
    if scratch.latent_sum.len() < dims.h * dims.r {
        return Err(Fault::Scratch);
    }
    let (groups, per) = inp.head_groups();
    let fault = FirstFault::new();
    // Tokens by index: a zip of two chunk iterators keeps a division-by-zero
    // panic path on some targets.
    let (q_width, o_cols) = (dims.q_width, dims.o_cols);
    for t in 0..inp.n_tok {
        let (Some(qtok), Some(otok)) = (
            inp.q.get(t * q_width..(t + 1) * q_width),
            o.get_mut(t * o_cols..(t + 1) * o_cols),
        ) else {
            return Err(Fault::Rows);
        };
        let set = inp.row_set(t)?;
        let len = set.len();
        // (a) q~_h = W_UK_h^T q_nope_h, by head groups.
        {
            let rows = SharedMut::new(&mut *absorbed_q);
            par.for_each(
                groups,
                dims.h.saturating_mul(dims.n).saturating_mul(dims.r),
                &|g| {
                    for h in inp.group(g, per) {
                        // SAFETY: head h's row; heads are disjoint across tasks.
                        let row = unsafe { rows.slice(h * width, width) };
                        fault.record(
                            row.ok_or(Fault::Scratch)
                                .and_then(|row| absorb_query(isa, inp, h, qtok, row)),
                        );
                    }
                },
            );
        }
        fault.get()?;
        // (b) fixed row ranges of whole blocks over the keys first..len.
        let first = inp.first_key(len - 1);
        let span = len - first;
        let nblk = ceil_div(span, ab);
        let want = ceil_div(span, SPLIT_ROWS).min(n_slots).max(1);
        let per_split = (ceil_div(nblk, want) * ab).max(1);
        let splits = ceil_div(span, per_split);
        // [q~ | q_pe] transposed, [r + p][Hp]: the scores of a block of cached
        // rows are then one product with the rows broadcast (every row read
        // once for all heads), softmax vectorised across heads.
        absorbed_q_t.iter_mut().for_each(|x| *x = 0.0);
        for (h, row) in absorbed_q
            .chunks_exact(width.max(1))
            .take(dims.h)
            .enumerate()
        {
            for (k, &v) in row.iter().enumerate() {
                if let Some(d) = absorbed_q_t.get_mut(k * heads_padded + h) {
                    *d = v;
                }
            }
        }
        {
            let slots = SharedMut::new(&mut *task_slots);
            let qa: &[f32] = absorbed_q;
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
                    fault.record(
                        slot.ok_or(Fault::Scratch)
                            .and_then(|slot| split_rows(isa, inp, set, qa, qat, lo, hi, slot)),
                    );
                },
            );
        }
        fault.get()?;
        // (c) combine the ranges in order, then o_h = W_UV_h acc_h / l_h.
        let slots: &[u8] = bytemuck::try_cast_slice(&*task_slots).map_err(|_| Fault::Slot)?;
        let parts = Parts {
            slots,
            slot_bytes: slot_len * core::mem::size_of::<f32>(),
            splits,
            layout: &layout,
        };
        let acc = SharedMut::new(&mut *scratch.latent_sum);
        let out = SharedMut::new(otok);
        par.for_each(
            groups,
            dims.h.saturating_mul(dims.v).saturating_mul(dims.r),
            &|g| {
                for h in inp.group(g, per) {
                    // SAFETY: head h's parts of acc and of the output; heads are
                    // disjoint across tasks.
                    let (acc_h, o_h) = unsafe {
                        (
                            acc.slice(h * dims.r, dims.r),
                            out.mat(h * dims.v, 1, dims.v, dims.v),
                        )
                    };
                    fault.record(match (acc_h, o_h) {
                        (Some(acc_h), Some(mut o_h)) => {
                            combine(isa, inp, h, &parts, acc_h, &mut o_h)
                        }
                        _ => Err(Fault::Scratch),
                    });
                }
            },
        );
        fault.get()?;
    }
    Ok(())
}

/// `row = [W_UK_h^T q_nope_h | q_pe_h]` for head `h` of one token.
fn absorb_query(
    isa: Isa,
    inp: &Inputs,
    h: usize,
    qtok: &[f32],
    row: &mut [f32],
) -> Result<(), Fault> {
    let dims = inp.dims;
    let (r, n, p) = (dims.r, dims.n, dims.p);
    let qh = qtok
        .get(h * dims.qk..(h + 1) * dims.qk)
        .ok_or(Fault::Rows)?;
    let (q_nope, q_pe) = qh.split_at(n.min(qh.len()));
    let (qt, qpe_out) = row.split_at_mut(r.min(row.len()));
    qt.iter_mut().for_each(|x| *x = 0.0);
    let w_uk = MatE::tensor_rows(inp.kv_b, h * (n + dims.v), n).ok_or(Fault::Weights)?;
    let (Some(a), Some(mut c)) = (Mat::new(q_nope, 1, n, n), MatMut::new(qt, 1, r, r)) else {
        return Err(Fault::Rows);
    };
    gemm_nn(isa, &a, &w_uk, &mut c)?;
    qpe_out
        .iter_mut()
        .zip(q_pe)
        .take(p)
        .for_each(|(d, &s)| *d = s);
    Ok(())
}

/// One row range `lo..hi` of the absorbed path into a slot: partial max, sum and
/// accumulator per head. Per block of cached rows: scores `S^T [rows][H]` =
/// rows x `qat` (the rows broadcast, heads in vectors), online softmax down the
/// columns, then `acc_h = alpha_h acc_h + P_h rows`. `lo..hi` index `set`.
#[allow(clippy::too_many_arguments)]
fn split_rows(
    isa: Isa,
    inp: &Inputs,
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
            RowSet::Prefix(_) => ab.min(hi - b0).min(inp.cache.contiguous(b0)).max(1),
            RowSet::List(_) => ab.min(hi - b0),
        };
        let rows = inp.read_rows(set, b0, cnt, widened_rows);
        scores_t.iter_mut().take(cnt * hp).for_each(|x| *x = 0.0);
        let block = Mat::new(rows, cnt, k_score, c).ok_or(Fault::Cache)?;
        let mut scores = MatMut::new(scores_t, cnt, hp, hp).ok_or(Fault::Slot)?;
        gemm_nn(isa, &block, &MatE::F32(bq), &mut scores)?;
        if inp.rope_key == RopeKey::PerHead {
            // Head h's rope keys: one product per head (rows x q_pe_h) into a
            // column of `weights` (scratch until the weights are written there),
            // added to the scores.
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
        // P [H][cnt] from P^T, then rescale and accumulate.
        for (b, score_row) in scores_t.chunks_exact(hp.max(1)).take(cnt).enumerate() {
            for (h, &v) in score_row.iter().take(h_n).enumerate() {
                if let Some(d) = weights.get_mut(h * ab + b) {
                    *d = v;
                }
            }
        }
        for (&a, latent_acc_h) in rescale
            .iter()
            .zip(latent_acc.chunks_exact_mut(r.max(1)))
            .take(h_n)
        {
            if a != 1.0 {
                kernels::scale(latent_acc_h, a);
            }
        }
        let probs = Mat::new(&*weights, h_n, cnt, ab).ok_or(Fault::Slot)?;
        let latents = Mat::new(rows, cnt, r, c).ok_or(Fault::Cache)?;
        let mut acc_mat = MatMut::new(latent_acc, h_n, r, r).ok_or(Fault::Slot)?;
        gemm_nn(isa, &probs, &MatE::F32(latents), &mut acc_mat)?;
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
    /// Range `si`'s running max, sum and latent accumulator of head `h`.
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
                .and_then(|a| a.get(h * r..(h + 1) * r)),
        );
        match part {
            (Some(&m), Some(&l), Some(acc)) => Ok((m, l, acc)),
            _ => Err(Fault::Slot),
        }
    }
}

/// Head `h`: combines the ranges' partial results in order into `acc_h`, then
/// `o_h = W_UV_h acc_h / l`.
fn combine(
    isa: Isa,
    inp: &Inputs,
    h: usize,
    parts: &Parts,
    acc_h: &mut [f32],
    o_h: &mut MatMut,
) -> Result<(), Fault> {
    let dims = inp.dims;
    let (r, n, v) = (dims.r, dims.n, dims.v);
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
        kernels::axpy(f, acc_s, acc_h);
        l += f * ls;
    }
    kernels::scale(acc_h, 1.0 / inp.denominator(h, m, l));
    let a = Mat::new(&*acc_h, 1, r, r).ok_or(Fault::Scratch)?;
    let w_uv = MatE::tensor_rows(inp.kv_b, h * (n + v) + n, v).ok_or(Fault::Weights)?;
    gemm_nt(isa, &a, &w_uv, o_h, None)
}
