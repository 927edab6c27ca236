//! The naive path (prefill): per head, keys and values decompressed from the
//! latent cache block by block, then standard attention for the call's tokens.

use super::{blocks, gemm_nn, gemm_nt, Fault, FirstFault, Inputs, Scratch};
use crate::kernels::{self, Isa, Mat, MatE, MatMut};
use crate::parallel::SharedMut;
use crate::plan::NaiveSlot;

/// Naive attention for the call's query tokens into `o` (`[n_tok][H][v]`),
/// block by block over the cache.
/// `Err`: a buffer does not match the plan (`o` then holds partial results).
pub fn naive(inp: &Inputs, scratch: &mut Scratch, o: &mut [f32]) -> Result<(), Fault> {
    if inp.batch.is_some() {
        // Batches (one decode token per cache) take the absorbed path only.
        return Err(Fault::Rows);
    }
    let dims = inp.dims;
    let slot_len = inp.naive_slot_len()?;
    // Bytes of the slot layout; the packing scratch is the rest of the slot.
    let fixed = NaiveSlot::count(dims, inp.widen())
        .map_err(|_| Fault::Slot)?
        .bytes;
    let (groups, per) = inp.head_groups();
    if scratch.task_slots.len() < groups * slot_len
        || inp.n_tok > dims.max_tok
        || o.len() < inp.n_tok * dims.o_cols
    {
        return Err(Fault::Scratch);
    }
    let slots = SharedMut::new(scratch.task_slots);
    let out = SharedMut::new(o);
    let total = inp.start + inp.n_tok;
    let work = total
        .saturating_mul(dims.h)
        .saturating_mul(dims.n + dims.v)
        .saturating_mul(dims.r)
        .saturating_add(
            inp.n_tok
                .saturating_mul(total)
                .saturating_mul(dims.h)
                .saturating_mul(dims.qk + dims.v),
        );
    let fault = FirstFault::new();
    inp.par.for_each(groups, work, &|g| {
        // SAFETY: slot g belongs to this task alone.
        let Some(slot) = (unsafe { slots.slice(g * slot_len, slot_len) }) else {
            fault.record(Err(Fault::Scratch));
            return;
        };
        let Some(mut slot) = SlotParts::place(slot, fixed, inp) else {
            fault.record(Err(Fault::Slot));
            return;
        };
        for h in inp.group(g, per) {
            // SAFETY: head h's columns of every token's output; heads are
            // disjoint across tasks.
            let o_head = unsafe { out.mat(h * dims.v, inp.n_tok, dims.v, dims.o_cols) };
            fault.record(
                o_head
                    .ok_or(Fault::Rows)
                    .and_then(|mut o_head| naive_head(inp, h, &mut slot, &mut o_head)),
            );
        }
    });
    fault.get()
}

/// A task slot of the naive path: its layout, then packing scratch.
struct SlotParts<'s> {
    parts: NaiveSlot<crate::plan::Place<'s>>,
    pack: &'s mut [f32],
}

impl<'s> SlotParts<'s> {
    /// Carves `slot`: the layout's `fixed` bytes, then the rest as packing scratch.
    fn place(slot: &'s mut [f32], fixed: usize, inp: &Inputs) -> Option<Self> {
        let bytes: &mut [u8] = bytemuck::try_cast_slice_mut(slot).ok()?;
        if fixed > bytes.len() {
            return None;
        }
        let (head, rest) = bytes.split_at_mut(fixed);
        Some(SlotParts {
            parts: NaiveSlot::place(head, inp.dims, inp.widen()).ok()?.regions,
            pack: bytemuck::try_cast_slice_mut(rest).ok()?,
        })
    }
}

/// One head of the naive path: `oh` is `[n_tok][v]` (row stride `o_cols`).
fn naive_head(
    inp: &Inputs,
    h: usize,
    slot: &mut SlotParts,
    o_head: &mut MatMut,
) -> Result<(), Fault> {
    let isa: Isa = inp.isa;
    let dims = inp.dims;
    let (r, n, p, v, qk, c) = (dims.r, dims.n, dims.p, dims.v, dims.qk, dims.cache_row);
    let n_tok = inp.n_tok;
    let (_, block) = blocks(dims);
    let NaiveSlot {
        keys,
        values,
        scores,
        running_max,
        running_sum,
        widened_rows,
    } = &mut slot.parts;
    let pack = &mut *slot.pack;
    for t in 0..n_tok {
        if let Some(row) = o_head.row(t) {
            row.iter_mut().for_each(|x| *x = 0.0);
        }
    }
    running_max.iter_mut().for_each(|x| *x = f32::NEG_INFINITY);
    running_sum.iter_mut().for_each(|x| *x = 0.0);
    let (Some(w_uk), Some(w_uv)) = (
        MatE::tensor_rows(inp.kv_b, h * (n + v), n),
        MatE::tensor_rows(inp.kv_b, h * (n + v) + n, v),
    ) else {
        return Err(Fault::Weights);
    };
    let off = inp.kpe_offset(h);
    let total = inp.start + n_tok;
    // From the first key the first query sees (0 without a window).
    let mut b0 = inp.first_key(inp.start);
    while b0 < total {
        // (A block stops at the end of a ring.)
        let cnt = block.min(total - b0).min(inp.cache.contiguous(b0)).max(1);
        // First query token that sees row b0 (pos = start + t >= b0); < n_tok.
        let t0 = b0.saturating_sub(inp.start);
        // One past the last query token that sees any row of the block: with a
        // window W, pos - W < b0 + cnt - 1 (later queries skip the block).
        let t_end = if inp.window > 0 {
            n_tok.min((b0 + cnt - 1 + inp.window).saturating_sub(inp.start))
        } else {
            n_tok
        };
        if t_end <= t0 {
            b0 += cnt;
            continue;
        }
        let rows = inp.cache.rows(b0, cnt, widened_rows);
        let latents = Mat::new(rows, cnt, r, c).ok_or(Fault::Cache)?;
        let (Some(mut k_out), Some(mut v_out)) = (
            MatMut::new(keys, cnt, n, qk),
            MatMut::new(values, cnt, v, v),
        ) else {
            return Err(Fault::Slot);
        };
        gemm_nt(isa, &latents, &w_uk, &mut k_out, Some(&mut *pack))?;
        gemm_nt(isa, &latents, &w_uv, &mut v_out, Some(&mut *pack))?;
        for (k_row, c_row) in keys
            .chunks_exact_mut(qk.max(1))
            .zip(rows.chunks_exact(c.max(1)))
            .take(cnt)
        {
            let (Some(dst), Some(src)) = (k_row.get_mut(n..n + p), c_row.get(off..off + p)) else {
                return Err(Fault::Cache);
            };
            dst.copy_from_slice(src);
        }
        let nq = t_end - t0;
        let q_head = inp
            .q
            .get(t0 * dims.q_width + h * qk..)
            .and_then(|qs| Mat::new(qs, nq, qk, dims.q_width))
            .ok_or(Fault::Rows)?;
        let (Some(k_mat), Some(mut s_out)) = (
            Mat::new(keys, cnt, qk, qk),
            scores
                .get_mut(t0 * block..)
                .and_then(|s| MatMut::new(s, nq, cnt, block)),
        ) else {
            return Err(Fault::Slot);
        };
        gemm_nt(
            isa,
            &q_head,
            &MatE::F32(k_mat),
            &mut s_out,
            Some(&mut *pack),
        )?;
        for t in t0..t_end {
            let pos = inp.start + t;
            let valid = cnt.min(pos + 1 - b0);
            let (Some(score_row), Some(max_t), Some(sum_t)) = (
                scores.get_mut(t * block..(t + 1) * block),
                running_max.get_mut(t),
                running_sum.get_mut(t),
            ) else {
                return Err(Fault::Slot);
            };
            // Keys before the query's window: masked. (A block wholly before it
            // is past t_end; should one get here, it adds nothing: zero
            // weights, running max and sum unchanged.)
            let first = inp.first_key(pos);
            if first > b0 {
                let masked = first - b0;
                if masked >= valid {
                    score_row.iter_mut().for_each(|x| *x = 0.0);
                    continue;
                }
                if let Some(lead) = score_row.get_mut(..masked) {
                    lead.iter_mut().for_each(|x| *x = f32::NEG_INFINITY);
                }
            }
            if let Some(list) = inp.selected(t)? {
                mask_unselected(score_row.get_mut(..valid).unwrap_or(&mut []), b0, list);
            }
            let alpha = kernels::softmax_block_with(isa, score_row, valid, inp.scale, max_t, sum_t)
                .ok_or(Fault::Softmax)?;
            if alpha != 1.0 {
                if let Some(row) = o_head.row(t) {
                    kernels::scale(row, alpha);
                }
            }
        }
        let (Some(p_mat), Some(v_mat), Some(mut o_block)) = (
            scores
                .get(t0 * block..)
                .and_then(|s| Mat::new(s, nq, cnt, block)),
            Mat::new(values, cnt, v, v),
            o_head.sub(t0, nq, 0, v),
        ) else {
            return Err(Fault::Slot);
        };
        gemm_nn(isa, &p_mat, &MatE::F32(v_mat), &mut o_block)?;
        b0 += cnt;
    }
    for (t, (&sum_t, &max_t)) in running_sum
        .iter()
        .zip(running_max.iter())
        .enumerate()
        .take(n_tok)
    {
        if let Some(row) = o_head.row(t) {
            kernels::scale(row, 1.0 / inp.denominator(h, max_t, sum_t));
        }
    }
    Ok(())
}

/// Sparse attention in the naive path: scores of rows `b0..` not in `list`
/// (ascending) become `-inf` (weight exactly 0 in the softmax).
fn mask_unselected(scores: &mut [f32], b0: usize, list: &[u32]) {
    let mut i = list.partition_point(|&r| (r as usize) < b0);
    for (j, s) in scores.iter_mut().enumerate() {
        let row = b0 + j;
        while list.get(i).is_some_and(|&r| (r as usize) < row) {
            i += 1;
        }
        if list.get(i).map(|&r| r as usize) != Some(row) {
            *s = f32::NEG_INFINITY;
        }
    }
}
