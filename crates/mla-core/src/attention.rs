//! Attention over the latent cache: the naive and the absorbed path.
//!
//! Both compute, for query token `t` at position `pos` and head `h`,
//! `o_h = sum_{s <= pos} softmax_s(score_h(s)) v_h(s)` with
//! `score_h(s) = (q_nope_h . W_UK_h c_s + q_pe_h . k_pe_s) * scale` (DESIGN.md 2.1).
//!
//! - absorbed (decode): `q~_h = W_UK_h^T q_nope_h` (r values); a block of
//!   [`BLOCK`] cached rows is read once for all heads: scores
//!   `S[h][b] = [q~_h | q_pe_h] . [c_b | k_pe_b]` (one blocked product over
//!   `r + p`), an online softmax per head, then `acc_h += P[h] C` (a second
//!   blocked product); at the end `o_h = W_UV_h acc_h / l_h`;
//! - naive (prefill): per head, decompress `k_nope` and `v` for a block of
//!   [`NAIVE_BLOCK`] cached rows with `kv_b_proj` (blocked products), score
//!   every query token of the call against the block, online softmax, `O += P V`.
//!
//! The softmax is online over blocks (running max and sum, rescaling the
//! accumulator), so scratch does not grow with the context.
//!
//! # Tasks (see [`crate::parallel`])
//!
//! - absorbed, per query token: (a) absorbed queries by groups of heads;
//!   (b) the cached rows `0..=pos` in up to [`n_slots`] fixed ranges (at least
//!   [`SPLIT_ROWS`] rows each, whole blocks), each with its own partial max, sum
//!   and accumulator in its scratch slot; (c) by groups of heads: combine the
//!   ranges in order, then `W_UV_h`.
//! - naive: groups of heads, each with its own scratch slot.
//!
//! The number of tasks depends only on the configuration and the position,
//! never on the thread count, so results are bitwise reproducible.

use crate::cache::LatentCache;
use crate::config::{Dims, RopeKey};
use crate::kernels::{self, ceil_div, gemm_nn_with, gemm_nt_with, Isa, Mat, MatE, MatMut};
use crate::parallel::{Parallel, SharedMut, MAX_TASKS};
use crate::weights::Tensor;

/// Cached rows per block of the absorbed path (a multiple of 16; less for a
/// small `max_seq_len`, see [`blocks`]).
pub const BLOCK: usize = 32;
/// Cached rows per block of the naive path (a multiple of 16; less for a
/// small `max_seq_len`, see [`blocks`]).
pub const NAIVE_BLOCK: usize = 64;

/// Block sizes `(absorbed, naive)` for a config: [`BLOCK`] and [`NAIVE_BLOCK`],
/// or `max_seq_len` rounded up to 16 if that is smaller (small engines keep
/// small scratch).
pub fn blocks(dm: &Dims) -> (usize, usize) {
    let cap = r16(dm.max_seq).unwrap_or(BLOCK).max(16);
    (BLOCK.min(cap), NAIVE_BLOCK.min(cap))
}
/// Least cached rows per range of the absorbed path's row split.
pub const SPLIT_ROWS: usize = 256;
/// Most scratch slots (row ranges or head groups running at once).
pub const MAX_SLOTS: usize = 16;

const _: () = assert!(BLOCK & 15 == 0 && NAIVE_BLOCK & 15 == 0 && kernels::SOFTMAX_MULTIPLE == 16);
const _: () = assert!(MAX_SLOTS <= MAX_TASKS);

/// Rounds up to a multiple of 16 f32 (64 bytes).
fn r16(x: usize) -> Option<usize> {
    Some(x.checked_add(15)? / 16 * 16)
}

/// Heads rounded up to 16: the width of the transposed scores (a whole number
/// of vectors on every ISA; the padding columns hold zeros and are ignored).
fn heads_padded(dm: &Dims) -> Option<usize> {
    r16(dm.h)
}

/// Scratch slots (and so the most tasks of a split): enough for the cache's
/// row ranges and for the heads, at most [`MAX_SLOTS`].
pub fn n_slots(dm: &Dims) -> usize {
    // Not `clamp`: it has a panic path (min > max).
    #[allow(clippy::manual_clamp)]
    ceil_div(dm.max_seq, SPLIT_ROWS)
        .max(dm.h)
        .min(MAX_SLOTS)
        .max(1)
}

/// Offsets (f32) inside one absorbed-path slot.
#[derive(Clone, Copy)]
struct AbsSlot {
    acc: usize,
    m: usize,
    l: usize,
    sc: usize,
    blk: usize,
    st: usize,
    al: usize,
    len: usize,
}

/// Offsets (f32) inside one naive-path slot.
#[derive(Clone, Copy)]
struct NaiveSlot {
    // Keys `[nb][n+p]` start the slot (offset 0).
    val: usize,
    sc: usize,
    m: usize,
    l: usize,
    blk: usize,
    pack: usize,
    len: usize,
}

/// Lays out consecutive parts (each rounded to 16 f32); returns their offsets and the total.
fn layout<const N: usize>(sizes: [Option<usize>; N]) -> Option<([usize; N], usize)> {
    let mut offs = [0; N];
    let mut at = 0usize;
    for (o, s) in offs.iter_mut().zip(sizes) {
        *o = at;
        at = at.checked_add(r16(s?)?)?;
    }
    Some((offs, at))
}

fn abs_slot(dm: &Dims, widen: bool) -> Option<AbsSlot> {
    let h = dm.h;
    let hp = heads_padded(dm)?;
    let (ab, _) = blocks(dm);
    let ([acc, m, l, sc, blk, st, al], len) = layout([
        h.checked_mul(dm.r),
        Some(hp),
        Some(hp),
        h.checked_mul(ab),
        if widen {
            ab.checked_mul(dm.cache_row)
        } else {
            Some(0)
        },
        ab.checked_mul(hp),
        Some(hp),
    ])?;
    Some(AbsSlot {
        acc,
        m,
        l,
        sc,
        blk,
        st,
        al,
        len,
    })
}

fn naive_slot(dm: &Dims, widen: bool) -> Option<NaiveSlot> {
    let t = dm.max_tok;
    let (_, nb) = blocks(dm);
    let ([_key, val, sc, m, l, blk, pack], len) = layout([
        nb.checked_mul(dm.qk),
        nb.checked_mul(dm.v),
        t.checked_mul(nb),
        Some(t),
        Some(t),
        if widen {
            nb.checked_mul(dm.cache_row)
        } else {
            Some(0)
        },
        Some(if t >= kernels::PACK_MIN_ROWS {
            kernels::pack_len(dm.qk.max(dm.r))
        } else {
            0
        }),
    ])?;
    Some(NaiveSlot {
        val,
        sc,
        m,
        l,
        blk,
        pack,
        len,
    })
}

/// f32 per scratch slot (the larger of the two paths' needs).
fn slot_len(dm: &Dims, widen: bool) -> Option<usize> {
    Some(abs_slot(dm, widen)?.len.max(naive_slot(dm, widen)?.len))
}

/// Scratch of both paths (all f32, sized by [`Scratch::lens`]).
pub struct Scratch<'m> {
    /// `[H][r + p]`: absorbed queries of one token (`q~_h`, then `q_pe_h`),
    /// followed by the same transposed, `[r + p][Hp]` (`Hp`: `H` rounded up to
    /// 16, zero padding).
    pub qa: &'m mut [f32],
    /// `[H][r]`: combined latent sums of one token.
    pub acc: &'m mut [f32],
    /// [`n_slots`] task slots, each with the larger of the absorbed layout
    /// (`acc [H][r]`, `m [Hp]`, `l [Hp]`, weights `[H][ab]`, widened rows
    /// `[ab][cache_row]`, scores `[ab][Hp]`, rescale factors `[Hp]`) and the naive one (keys `[nb][n+p]`, values `[nb][v]`,
    /// scores `[T][nb]`, `m [T]`, `l [T]`, widened rows `[nb][cache_row]`,
    /// packing scratch `[64 * min(max(n+p, r), 256)]` when `T >= 16`), with `(ab, nb)` from
    /// [`blocks`]; widened rows only for f16/bf16 caches; every part rounded up
    /// to 16 f32.
    pub slots: &'m mut [f32],
}

impl Scratch<'_> {
    /// f32 counts of the fields, in field order (`None` on overflow).
    pub fn lens(dm: &Dims, widen_cache: bool) -> Option<[usize; 3]> {
        Some([
            dm.h.checked_add(heads_padded(dm)?)?
                .checked_mul(dm.r.checked_add(dm.p)?)?,
            dm.h.checked_mul(dm.r)?,
            n_slots(dm).checked_mul(slot_len(dm, widen_cache)?)?,
        ])
    }
}

/// What attention reads: dims, `kv_b_proj`, the cache (rows `0..start + n_tok`
/// written, the last `n_tok` being this call's tokens), and the softmax scale.
pub struct Inputs<'a, 'w, 'm> {
    /// Sizes.
    pub dm: &'a Dims,
    /// Rope key per head or shared.
    pub rope_key: RopeKey,
    /// `[H*(n+v)][r]`.
    pub kv_b: &'a Tensor<'w>,
    /// The latent cache.
    pub cache: &'a LatentCache<'m>,
    /// Softmax scale.
    pub scale: f32,
    /// Position of the first query token.
    pub start: usize,
    /// Query tokens.
    pub n_tok: usize,
}

impl Inputs<'_, '_, '_> {
    /// Offset of head `h`'s rope key inside a cache row.
    #[inline]
    fn kpe_offset(&self, h: usize) -> usize {
        match self.rope_key {
            RopeKey::Shared => self.dm.r,
            RopeKey::PerHead => self.dm.r + h * self.dm.p,
        }
    }

    fn widen(&self) -> bool {
        self.cache.dtype() != crate::dtype::DType::F32
    }

    /// Head groups: `(groups, heads per group)`.
    fn head_groups(&self) -> (usize, usize) {
        let h = self.dm.h.max(1);
        let per = ceil_div(h, h.min(n_slots(self.dm))).max(1);
        (ceil_div(h, per), per)
    }
}

/// Splits `s` at `at` (relative), returning the head and the rest.
fn cut(s: &mut [f32], at: usize) -> Option<(&mut [f32], &mut [f32])> {
    (at <= s.len()).then(|| s.split_at_mut(at))
}

/// The disjoint parts of an absorbed slot.
struct AbsParts<'s> {
    acc: &'s mut [f32],
    m: &'s mut [f32],
    l: &'s mut [f32],
    sc: &'s mut [f32],
    blk: &'s mut [f32],
    st: &'s mut [f32],
    al: &'s mut [f32],
}

/// Splits an absorbed slot into its parts.
fn abs_parts<'s>(slot: &'s mut [f32], lay: &AbsSlot) -> Option<AbsParts<'s>> {
    let (acc, rest) = cut(slot, lay.m)?;
    let (m, rest) = cut(rest, lay.l - lay.m)?;
    let (l, rest) = cut(rest, lay.sc - lay.l)?;
    let (sc, rest) = cut(rest, lay.blk - lay.sc)?;
    let (blk, rest) = cut(rest, lay.st - lay.blk)?;
    let (st, rest) = cut(rest, lay.al - lay.st)?;
    Some(AbsParts {
        acc,
        m,
        l,
        sc,
        blk,
        st,
        al: rest,
    })
}

/// Absorbed attention for the call's query tokens.
/// `q`: `[n_tok][H][n+p]` (q_pe rotated); `o`: `[n_tok][H][v]`.
/// Returns false if a buffer is inconsistent with the dims (nothing useful written).
pub fn absorbed(inp: &Inputs, par: &Parallel, q: &[f32], s: &mut Scratch, o: &mut [f32]) -> bool {
    let dm = inp.dm;
    let isa = kernels::isa();
    let (Some(lay), Some(slen)) = (abs_slot(dm, inp.widen()), slot_len(dm, inp.widen())) else {
        return false;
    };
    let nslots = n_slots(dm);
    let (ab, _) = blocks(dm);
    let qa_len = dm.h * (dm.r + dm.p);
    let Some(hp) = heads_padded(dm) else {
        return false;
    };
    if s.slots.len() < nslots * slen || s.qa.len() < 2 * qa_len || s.acc.len() < dm.h * dm.r {
        return false;
    }
    let Some((qa_buf, qat)) = cut(s.qa, qa_len) else {
        return false;
    };
    let (groups, per) = inp.head_groups();
    for (t, (qtok, otok)) in q
        .chunks_exact(dm.q_width.max(1))
        .zip(o.chunks_exact_mut(dm.o_cols.max(1)))
        .take(inp.n_tok)
        .enumerate()
    {
        let len = inp.start + t + 1;
        // (a) q~_h = W_UK_h^T q_nope_h, by head groups.
        {
            let qa = SharedMut::new(&mut *qa_buf);
            par.for_each(
                groups,
                dm.h.saturating_mul(dm.n).saturating_mul(dm.r),
                &|g| {
                    for h in g * per..dm.h.min((g + 1) * per) {
                        // SAFETY: head h's row of qa; heads are disjoint across tasks.
                        if let Some(row) = unsafe { qa.slice(h * (dm.r + dm.p), dm.r + dm.p) } {
                            absorb_query(isa, inp, h, qtok, row);
                        }
                    }
                },
            );
        }
        // (b) fixed row ranges of whole blocks.
        let nblk = ceil_div(len, ab);
        let want = ceil_div(len, SPLIT_ROWS).min(nslots).max(1);
        let per_split = (ceil_div(nblk, want) * ab).max(1);
        let splits = ceil_div(len, per_split);
        // [q~ | q_pe] transposed, [r + p][H]: the scores of a block of cached
        // rows are then one product with the rows broadcast (every row read
        // once for all heads), softmax vectorised across heads.
        let qw = dm.r + dm.p;
        qat.iter_mut().for_each(|x| *x = 0.0);
        for (h, row) in qa_buf.chunks_exact(qw.max(1)).take(dm.h).enumerate() {
            for (k, &v) in row.iter().enumerate() {
                if let Some(d) = qat.get_mut(k * hp + h) {
                    *d = v;
                }
            }
        }
        {
            let slots = SharedMut::new(s.slots);
            let qa: &[f32] = qa_buf;
            let qat: &[f32] = qat;
            par.for_each(
                splits,
                dm.h.saturating_mul(len).saturating_mul(dm.r * 2 + dm.p),
                &|si| {
                    let lo = si * per_split;
                    let hi = len.min(lo + per_split);
                    // SAFETY: slot si belongs to this task alone.
                    if let Some(slot) = unsafe { slots.slice(si * slen, slen) } {
                        split_rows(isa, inp, qa, qat, lo, hi, slot, &lay);
                    }
                },
            );
        }
        // (c) combine the ranges in order, then o_h = W_UV_h acc_h / l_h.
        let slots: &[f32] = s.slots;
        let acc = SharedMut::new(s.acc);
        let out = SharedMut::new(otok);
        par.for_each(
            groups,
            dm.h.saturating_mul(dm.v).saturating_mul(dm.r),
            &|g| {
                for h in g * per..dm.h.min((g + 1) * per) {
                    // SAFETY: head h's parts of acc and of the output; heads are
                    // disjoint across tasks.
                    let (Some(acc_h), Some(mut o_h)) =
                        (unsafe { acc.slice(h * dm.r, dm.r) }, unsafe {
                            out.mat(h * dm.v, 1, dm.v, dm.v)
                        })
                    else {
                        continue;
                    };
                    combine(isa, inp, h, slots, slen, splits, &lay, acc_h, &mut o_h);
                }
            },
        );
    }
    true
}

/// `row = [W_UK_h^T q_nope_h | q_pe_h]` for head `h` of one token.
fn absorb_query(isa: Isa, inp: &Inputs, h: usize, qtok: &[f32], row: &mut [f32]) {
    let dm = inp.dm;
    let (r, n, p) = (dm.r, dm.n, dm.p);
    let Some(qh) = qtok.get(h * dm.qk..(h + 1) * dm.qk) else {
        return;
    };
    let (q_nope, q_pe) = qh.split_at(n.min(qh.len()));
    let (qt, qpe_out) = row.split_at_mut(r.min(row.len()));
    qt.iter_mut().for_each(|x| *x = 0.0);
    if let (Some(a), Some(b), Some(mut c)) = (
        Mat::new(q_nope, 1, n, n),
        MatE::tensor_rows(inp.kv_b, h * (n + dm.v), n),
        MatMut::new(qt, 1, r, r),
    ) {
        gemm_nn_with(isa, &a, &b, &mut c);
    }
    qpe_out
        .iter_mut()
        .zip(q_pe)
        .take(p)
        .for_each(|(d, &s)| *d = s);
}

/// One row range `lo..hi` of the absorbed path into a slot: partial max, sum and
/// accumulator per head. Per block of cached rows: scores `S^T [rows][H]` =
/// rows x `qat` (the rows broadcast, heads in vectors), online softmax down the
/// columns, then `acc_h = alpha_h acc_h + P_h rows`.
#[allow(clippy::too_many_arguments)]
fn split_rows(
    isa: Isa,
    inp: &Inputs,
    qa: &[f32],
    qat: &[f32],
    lo: usize,
    hi: usize,
    slot: &mut [f32],
    lay: &AbsSlot,
) {
    let dm = inp.dm;
    let (h_n, r, p, c) = (dm.h, dm.r, dm.p, dm.cache_row);
    let qa_w = r + p;
    let (ab, _) = blocks(dm);
    let Some(hp) = heads_padded(dm) else {
        return;
    };
    let Some(AbsParts {
        acc,
        m,
        l,
        sc,
        blk,
        st,
        al,
    }) = abs_parts(slot, lay)
    else {
        return;
    };
    acc.iter_mut().for_each(|x| *x = 0.0);
    m.iter_mut().for_each(|x| *x = f32::NEG_INFINITY);
    l.iter_mut().for_each(|x| *x = 0.0);
    // Shared rope key: [q~ | q_pe] . [c | k_pe] in one product over r + p.
    let k_score = match inp.rope_key {
        RopeKey::Shared => qa_w.min(c),
        RopeKey::PerHead => r,
    };
    let Some(bq) = Mat::new(qat, k_score, hp, hp) else {
        return;
    };
    let mut b0 = lo;
    while b0 < hi {
        let cnt = ab.min(hi - b0);
        let rows = inp.cache.rows(b0, cnt, blk);
        st.iter_mut().take(cnt * hp).for_each(|x| *x = 0.0);
        let (Some(ar), Some(mut cs)) = (
            Mat::new(rows, cnt, k_score, c),
            MatMut::new(st, cnt, hp, hp),
        ) else {
            return;
        };
        gemm_nn_with(isa, &ar, &MatE::F32(bq), &mut cs);
        if inp.rope_key == RopeKey::PerHead {
            // Head h's rope keys: one product per head (rows x q_pe_h) into a
            // column of `sc` (scratch until the weights are written there),
            // added to the scores.
            for h in 0..h_n {
                let off = inp.kpe_offset(h);
                let (Some(ak), Some(bq), Some(mut col)) = (
                    rows.get(off..).and_then(|rs| Mat::new(rs, cnt, p, c)),
                    qa.get(h * qa_w + r..(h + 1) * qa_w)
                        .and_then(|q| Mat::new(q, 1, p, p)),
                    sc.get_mut(..cnt).and_then(|t| MatMut::new(t, cnt, 1, 1)),
                ) else {
                    return;
                };
                gemm_nt_with(isa, &ak, &MatE::F32(bq), &mut col);
                for (srow, &v) in st.chunks_exact_mut(hp.max(1)).zip(sc.iter()).take(cnt) {
                    if let Some(x) = srow.get_mut(h) {
                        *x += v;
                    }
                }
            }
        }
        if !kernels::softmax_cols(isa, st, cnt, hp, hp, inp.scale, m, l, al) {
            return;
        }
        // P [H][cnt] from P^T, then rescale and accumulate.
        for (b, srow) in st.chunks_exact(hp.max(1)).take(cnt).enumerate() {
            for (h, &v) in srow.iter().take(h_n).enumerate() {
                if let Some(d) = sc.get_mut(h * ab + b) {
                    *d = v;
                }
            }
        }
        for (&a, acc_h) in al.iter().zip(acc.chunks_exact_mut(r.max(1))).take(h_n) {
            if a != 1.0 {
                kernels::scale(acc_h, a);
            }
        }
        let (Some(pm), Some(cb), Some(mut am)) = (
            Mat::new(&*sc, h_n, cnt, ab),
            Mat::new(rows, cnt, r, c),
            MatMut::new(acc, h_n, r, r),
        ) else {
            return;
        };
        gemm_nn_with(isa, &pm, &MatE::F32(cb), &mut am);
        b0 += cnt;
    }
}

/// Head `h`: combines the ranges' partial results in order into `acc_h`, then
/// `o_h = W_UV_h acc_h / l`.
#[allow(clippy::too_many_arguments)]
fn combine(
    isa: Isa,
    inp: &Inputs,
    h: usize,
    slots: &[f32],
    slen: usize,
    splits: usize,
    lay: &AbsSlot,
    acc_h: &mut [f32],
    o_h: &mut MatMut,
) {
    let dm = inp.dm;
    let (r, n, v) = (dm.r, dm.n, dm.v);
    let part = |si: usize| -> Option<(f32, f32, &[f32])> {
        let slot = slots.get(si * slen..(si + 1) * slen)?;
        Some((
            *slot.get(lay.m + h)?,
            *slot.get(lay.l + h)?,
            slot.get(lay.acc + h * r..lay.acc + (h + 1) * r)?,
        ))
    };
    let m = (0..splits)
        .filter_map(|si| part(si).map(|x| x.0))
        .fold(f32::NEG_INFINITY, f32::max);
    acc_h.iter_mut().for_each(|x| *x = 0.0);
    let mut l = 0.0f32;
    for si in 0..splits {
        let Some((ms, ls, acc_s)) = part(si) else {
            continue;
        };
        let f = if ms == f32::NEG_INFINITY {
            0.0
        } else {
            libm::expf(ms - m)
        };
        kernels::axpy(f, acc_s, acc_h);
        l += f * ls;
    }
    kernels::scale(acc_h, 1.0 / l);
    if let (Some(a), Some(b)) = (
        Mat::new(&*acc_h, 1, r, r),
        MatE::tensor_rows(inp.kv_b, h * (n + v) + n, v),
    ) {
        gemm_nt_with(isa, &a, &b, o_h);
    }
}

/// Naive attention for the call's query tokens, block by block over the cache.
/// `q`: `[n_tok][H][n+p]`; `o`: `[n_tok][H][v]`.
/// Returns false if a buffer is inconsistent with the dims.
pub fn naive(inp: &Inputs, par: &Parallel, q: &[f32], s: &mut Scratch, o: &mut [f32]) -> bool {
    let dm = inp.dm;
    let isa = kernels::isa();
    let (Some(lay), Some(slen)) = (naive_slot(dm, inp.widen()), slot_len(dm, inp.widen())) else {
        return false;
    };
    let (groups, per) = inp.head_groups();
    if s.slots.len() < groups * slen || inp.n_tok > dm.max_tok || o.len() < inp.n_tok * dm.o_cols {
        return false;
    }
    let slots = SharedMut::new(s.slots);
    let out = SharedMut::new(o);
    let total = inp.start + inp.n_tok;
    let work = total
        .saturating_mul(dm.h)
        .saturating_mul(dm.n + dm.v)
        .saturating_mul(dm.r)
        .saturating_add(
            inp.n_tok
                .saturating_mul(total)
                .saturating_mul(dm.h)
                .saturating_mul(dm.qk + dm.v),
        );
    par.for_each(groups, work, &|g| {
        // SAFETY: slot g belongs to this task alone.
        let Some(slot) = (unsafe { slots.slice(g * slen, slen) }) else {
            return;
        };
        for h in g * per..dm.h.min((g + 1) * per) {
            // SAFETY: head h's columns of every token's output; heads are
            // disjoint across tasks.
            if let Some(mut oh) = unsafe { out.mat(h * dm.v, inp.n_tok, dm.v, dm.o_cols) } {
                naive_head(isa, inp, h, q, slot, &lay, &mut oh);
            }
        }
    });
    true
}

/// One head of the naive path: `oh` is `[n_tok][v]` (row stride `o_cols`).
fn naive_head(
    isa: Isa,
    inp: &Inputs,
    h: usize,
    q: &[f32],
    slot: &mut [f32],
    lay: &NaiveSlot,
    oh: &mut MatMut,
) {
    let dm = inp.dm;
    let (r, n, p, v, qk, c) = (dm.r, dm.n, dm.p, dm.v, dm.qk, dm.cache_row);
    let nt = inp.n_tok;
    let (_, nb) = blocks(dm);
    let Some((key, rest)) = cut(slot, lay.val) else {
        return;
    };
    let Some((val, rest)) = cut(rest, lay.sc - lay.val) else {
        return;
    };
    let Some((sc, rest)) = cut(rest, lay.m - lay.sc) else {
        return;
    };
    let Some((m, rest)) = cut(rest, lay.l - lay.m) else {
        return;
    };
    let Some((l, rest)) = cut(rest, lay.blk - lay.l) else {
        return;
    };
    let Some((blk, pack)) = cut(rest, lay.pack - lay.blk) else {
        return;
    };
    for t in 0..nt {
        if let Some(row) = oh.row(t) {
            row.iter_mut().for_each(|x| *x = 0.0);
        }
    }
    m.iter_mut().for_each(|x| *x = f32::NEG_INFINITY);
    l.iter_mut().for_each(|x| *x = 0.0);
    let (Some(wk), Some(wv)) = (
        MatE::tensor_rows(inp.kv_b, h * (n + v), n),
        MatE::tensor_rows(inp.kv_b, h * (n + v) + n, v),
    ) else {
        return;
    };
    let off = inp.kpe_offset(h);
    let total = inp.start + nt;
    let mut b0 = 0;
    while b0 < total {
        let cnt = nb.min(total - b0);
        // First query token that sees row b0 (pos = start + t >= b0); < nt.
        let t0 = b0.saturating_sub(inp.start);
        let rows = inp.cache.rows(b0, cnt, blk);
        let (Some(ar), Some(mut ck), Some(mut cv)) = (
            Mat::new(rows, cnt, r, c),
            MatMut::new(key, cnt, n, qk),
            MatMut::new(val, cnt, v, v),
        ) else {
            return;
        };
        kernels::gemm_nt_packed(isa, &ar, &wk, &mut ck, Some(&mut *pack));
        kernels::gemm_nt_packed(isa, &ar, &wv, &mut cv, Some(&mut *pack));
        for (krow, crow) in key
            .chunks_exact_mut(qk.max(1))
            .zip(rows.chunks_exact(c.max(1)))
            .take(cnt)
        {
            let (Some(dst), Some(src)) = (krow.get_mut(n..n + p), crow.get(off..off + p)) else {
                return;
            };
            dst.copy_from_slice(src);
        }
        let nq = nt - t0;
        let (Some(aq), Some(bk), Some(mut cs)) = (
            q.get(t0 * dm.q_width + h * qk..)
                .and_then(|qs| Mat::new(qs, nq, qk, dm.q_width)),
            Mat::new(&*key, cnt, qk, qk),
            sc.get_mut(t0 * nb..)
                .and_then(|s| MatMut::new(s, nq, cnt, nb)),
        ) else {
            return;
        };
        kernels::gemm_nt_packed(isa, &aq, &MatE::F32(bk), &mut cs, Some(&mut *pack));
        for t in t0..nt {
            let valid = cnt.min(inp.start + t + 1 - b0);
            let (Some(srow), Some(mt), Some(lt)) =
                (sc.get_mut(t * nb..(t + 1) * nb), m.get_mut(t), l.get_mut(t))
            else {
                return;
            };
            let alpha =
                kernels::softmax_block_with(isa, srow, valid, inp.scale, mt, lt).unwrap_or(1.0);
            if alpha != 1.0 {
                if let Some(row) = oh.row(t) {
                    kernels::scale(row, alpha);
                }
            }
        }
        let (Some(ap), Some(bv), Some(mut co)) = (
            sc.get(t0 * nb..).and_then(|s| Mat::new(s, nq, cnt, nb)),
            Mat::new(&*val, cnt, v, v),
            oh.sub(t0, nq, 0, v),
        ) else {
            return;
        };
        gemm_nn_with(isa, &ap, &MatE::F32(bv), &mut co);
        b0 += cnt;
    }
    for (t, &lt) in l.iter().enumerate().take(nt) {
        if let Some(row) = oh.row(t) {
            kernels::scale(row, 1.0 / lt);
        }
    }
}

/// Estimated multiply-adds of each path for a call; auto mode takes the cheaper.
/// Returns `(naive, absorbed)`.
pub fn cost(dm: &Dims, start: usize, n_tok: usize) -> (u64, u64) {
    let (h, r, n, p, v) = (
        dm.h as u64,
        dm.r as u64,
        dm.n as u64,
        dm.p as u64,
        dm.v as u64,
    );
    let total = (start + n_tok) as u64;
    let t = n_tok as u64;
    // Keys attended, summed over the call's tokens (causal).
    let pairs = t * start as u64 + t * (t + 1) / 2;
    let naive = total * h * (n + v) * r + pairs * h * (n + p + v);
    let absorbed = t * h * (n + v) * r + pairs * h * (2 * r + p);
    (naive, absorbed)
}
