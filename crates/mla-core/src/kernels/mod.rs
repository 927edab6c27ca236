//! The numeric loops: blocked matrix products, matrix-vector products, softmax
//! blocks, RMSNorm, linear layers.
//!
//! # Where things are
//!
//! | file         | what                                                                 |
//! |--------------|----------------------------------------------------------------------|
//! | `mod.rs`     | the safe entry points below (shape checks, ISA choice), linear layers |
//! | `isa.rs`     | [`Isa`], detection, `MLA_ISA`, [`lanes`]; every tile and block size   |
//! | `simd/`      | the vector trait `Simd`, the element trait `Elem` (f32, f16, bf16), their implementations: portable, x86-64 (`x86.rs`), aarch64 (`neon.rs`) |
//! | `mat.rs`     | the checked views [`Mat`], [`MatE`], [`MatMut`]                      |
//! | `gemm.rs`    | NT (`C = A B^T`, dot-product form) and NN (`C += A B`) tiles and drivers |
//! | `matvec.rs`  | the decode matrix-vector product (NT with one row of A)             |
//! | `f8.rs`      | products with FP8 block-scaled weights (codes widened in registers)  |
//! | `pack.rs`    | the packed NT product of prefill (B packed panel by panel)          |
//! | `softmax.rs` | online softmax along rows and down columns; the vector `exp`        |
//! | `vecops.rs`  | scale, axpy, dot, RMSNorm, bias                                     |
//! | `dispatch.rs`| per-ISA `#[target_feature]` instantiations and the `dispatch!` macro |
//!
//! # Instruction sets
//!
//! Every kernel is written once, generically over a small vector abstraction
//! (`simd::Simd`), and instantiated per instruction set:
//!
//! | [`Isa`]  | where                          | lanes | selection                                   |
//! |----------|--------------------------------|-------|---------------------------------------------|
//! | `Avx512` | x86-64 with AVX-512F           | 16    | runtime (`std`) or `target_feature` (no_std)|
//! | `Avx2`   | x86-64 with AVX2 + FMA + F16C  | 8     | runtime (`std`) or `target_feature` (no_std)|
//! | `Neon`   | aarch64                        | 4     | always (NEON is part of the base ABI)       |
//! | `Scalar` | everything else (thumbv7em...) | 8     | fallback                                    |
//!
//! With `std` the choice is made once per process (`is_x86_feature_detected!`,
//! cached); the environment variable `MLA_ISA=scalar|avx2|avx512` can force a
//! lower level (for comparisons). f16/bf16 weights are widened in registers
//! (bf16: shift left by 16; f16: F16C / AVX-512 `vcvtph2ps`, NEON `fcvtl`,
//! the `half` crate in the scalar path); so are FP8 E4M3 weights (sign-extend,
//! shift left by 20, mask: the value times `2^-120`, the block scale applied
//! per 128-column block sum, see `f8.rs`).
//!
//! # Tiling
//!
//! A micro-kernel computes a tile of C in vector registers; its shape per ISA
//! is in `isa::tiles`. NT (`C = A B^T`, both operands contiguous along k): `MR`
//! rows of A by `NR` rows of B, one vector accumulator per element of C,
//! reduced at the end; rows of A in blocks that stay in L2. One row of A
//! (decode): `1 x NR` tiles that stream the weights. Many rows of A with
//! scratch (prefill): B packed into k-major panels of `NV` vectors by
//! [`PACK_KC`] of k, then `MR x NV`-vector tiles that broadcast A. NN
//! (`C += A B`): `MR x NV`-vector tiles that broadcast A against rows of B.
//! Edges take smaller tiles of the same kernels.
//!
//! # Summation order
//!
//! A dot product of length `k` is computed in one canonical order: lane `j` of
//! a vector accumulator sums the elements `j, j + L, j + 2L, ...` of the whole
//! vectors with fused multiply-adds (plain multiply-add in the scalar path),
//! the lanes are reduced with a fixed tree, then the `k % L` tail elements are
//! added one by one. NN-style accumulations (`C += A B`) and the packed product
//! add the products in increasing `k`. Every tile shape follows the same order,
//! so a value never depends on which tile, block or task computed it: results
//! are bitwise independent of the thread count and of how work is split
//! (within one process: a different [`Isa`] rounds differently).
//!
//! # Safety
//!
//! The inner kernels take raw pointers; the safe wrappers ([`Mat`], [`MatMut`],
//! [`gemm_nt`], [`gemm_nn`], ...) check every extent against the slice lengths
//! first, so the pointers the kernels compute stay in bounds.

mod dispatch;
mod f8;
mod gemm;
mod isa;
mod mat;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod matvec;
mod pack;
mod simd;
mod softmax;
#[cfg(test)]
mod test_util;
mod vecops;

pub use isa::{
    isa, lanes, Isa, PACK_KC, PACK_LEN, PACK_MIN_ROWS, PACK_NP, PACK_SLOTS, SOFTMAX_MULTIPLE,
};
pub use mat::{Mat, MatE, MatMut};
pub use pack::pack_len;
pub use vecops::{add_bias, axpy, dot, rmsnorm, scale, widen};

use crate::parallel::{Parallel, SharedMut, MAX_TASKS};
use crate::plan;
use crate::weights::Tensor;
use dispatch::dispatch;
use gemm::GemmArgs;
use isa::usable;
use mat::fits;
use simd::Elem;
use softmax::{ColsArgs, RowArgs};

// ----------------------------------------------------------------------------
// Matrix products
// ----------------------------------------------------------------------------

/// `C = A B^T` for one element type of B (see [`gemm_nt_packed`]).
fn nt_typed<E: Elem>(
    isa: Isa,
    a: &Mat<f32>,
    b: &Mat<E>,
    c: &mut MatMut,
    pack: Option<&mut [f32]>,
    force_pack: bool,
) -> bool {
    let Some(p) = GemmArgs::nt(a, b, c) else {
        return false;
    };
    if p.m == 0 || p.n == 0 {
        return true;
    }
    let isa = usable(isa);
    // f32 B on an ISA whose dot-product tiles beat packing (isa::packs_f32).
    let pack = pack.filter(|_| force_pack || E::as_f32(p.b).is_none() || isa::packs_f32(isa, p.k));
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    if let Some(pack) = pack.filter(|pk| pk.len() >= pack_len(p.k) && p.m >= PACK_MIN_ROWS) {
        // f16/bf16 B where the f32 tiles beat packing: the tiles on B
        // widened into the scratch (isa::widens).
        if !force_pack && isa::widens(isa, p.k, pack.len()) {
            // SAFETY: as below; pack holds at least NR rows of k f32.
            unsafe { dispatch!(isa, nt_widened(&p, pack.as_mut_ptr(), pack.len(), None)) };
            return true;
        }
        // SAFETY: the views checked their extents, the shapes agree (GemmArgs::nt),
        // pack holds pack_len(k) f32 (what ntp touches), the ISA is supported.
        unsafe { dispatch!(isa, ntp(&p, pack.as_mut_ptr(), None)) };
        return true;
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = pack;
    // SAFETY: the three views checked their extents at construction and the
    // shapes agree (GemmArgs::nt); the ISA is supported (`usable`).
    unsafe { dispatch!(isa, nt(&p)) };
    true
}

/// `C = A B^T`: `C[i][j] = A_i . B_j` (both operands contiguous along `k`),
/// in the canonical order. Returns false (and writes nothing) if the shapes
/// disagree: `A` m x k, `B` n x k, `C` m x n.
pub fn gemm_nt(a: &Mat<f32>, b: &MatE, c: &mut MatMut) -> bool {
    gemm_nt_with(isa(), a, b, c)
}

/// [`gemm_nt`] on a given instruction set (scalar if unsupported here).
pub fn gemm_nt_with(isa: Isa, a: &Mat<f32>, b: &MatE, c: &mut MatMut) -> bool {
    gemm_nt_packed(isa, a, b, c, None)
}

/// [`gemm_nt_with`] that may pack: with `pack` ([`pack_len`]`(k)` f32 of scratch)
/// and at least [`PACK_MIN_ROWS`] rows of `A`, B is packed panel by panel and
/// each `C[i][j]` is summed in increasing `k` (instead of the lane order of the
/// dot-product form). Except on AVX2 with `k >= PACK_KC`, where the
/// dot-product form is the faster: there an f32 B is used as it is, and an
/// f16, bf16 or FP8 B is widened (dequantized) into `pack` a few whole tiles
/// of rows at a time, and the sums keep the dot-product order. Either way the
/// result depends only on the shapes, not on how callers split the rows of
/// `B` or `C`.
pub fn gemm_nt_packed(
    isa: Isa,
    a: &Mat<f32>,
    b: &MatE,
    c: &mut MatMut,
    pack: Option<&mut [f32]>,
) -> bool {
    nt_with_pack(isa, a, b, c, pack, false)
}

/// [`gemm_nt_packed`]; with `force_pack`, B is packed on every ISA (the
/// tests of the packed kernel call this), not only where that is faster.
fn nt_with_pack(
    isa: Isa,
    a: &Mat<f32>,
    b: &MatE,
    c: &mut MatMut,
    pack: Option<&mut [f32]>,
    force_pack: bool,
) -> bool {
    match b {
        MatE::F32(b) => nt_typed(isa, a, b, c, pack, force_pack),
        MatE::F16(b) => nt_typed(isa, a, b, c, pack, force_pack),
        MatE::BF16(b) => nt_typed(isa, a, b, c, pack, force_pack),
        MatE::F8(b) => f8::nt(isa, a, b, c, pack),
    }
}

/// `C += A B` for one element type of B (see [`gemm_nn`]).
fn nn_typed<E: Elem>(isa: Isa, a: &Mat<f32>, b: &Mat<E>, c: &mut MatMut) -> bool {
    let Some(p) = GemmArgs::nn(a, b, c) else {
        return false;
    };
    if p.m == 0 || p.n == 0 || p.k == 0 {
        return true;
    }
    // SAFETY: extents checked by the views, shapes by GemmArgs::nn, ISA usable.
    unsafe { dispatch!(usable(isa), nn(&p)) };
    true
}

/// `C += A B`: `C[i][j] += sum_k A[i][k] B[k][j]` (B contiguous along `j`),
/// adding the products in increasing `k`. Returns false (and writes nothing)
/// if the shapes disagree: `A` m x kdim, `B` kdim x n, `C` m x n.
pub fn gemm_nn(a: &Mat<f32>, b: &MatE, c: &mut MatMut) -> bool {
    gemm_nn_with(isa(), a, b, c)
}

/// [`gemm_nn`] on a given instruction set (scalar if unsupported here).
pub fn gemm_nn_with(isa: Isa, a: &Mat<f32>, b: &MatE, c: &mut MatMut) -> bool {
    match b {
        MatE::F32(b) => nn_typed(isa, a, b, c),
        MatE::F16(b) => nn_typed(isa, a, b, c),
        MatE::BF16(b) => nn_typed(isa, a, b, c),
        MatE::F8(b) => f8::nn(isa, a, b, c),
    }
}

/// The scores of a block of cached rows against every head (absorbed
/// attention): `S += R Q` with `R` the rows (`cnt x k`, f32), `Q` the heads'
/// queries transposed (`k x Hp`), `S` `cnt x Hp`; products added in
/// increasing `k` (the order of [`gemm_nn`], so the values are the same), in
/// tiles shaped for this use. `ahead`: what is prefetched into L2 while the
/// rows are read, at the pace they are read (only a hint, any value is safe).
/// False (nothing written) if the shapes disagree.
pub fn attn_scores(
    isa: Isa,
    rows: &Mat<f32>,
    q_t: &Mat<f32>,
    s: &mut MatMut,
    ahead: Ahead,
) -> bool {
    let Some(mut p) = GemmArgs::nn(rows, q_t, s) else {
        return false;
    };
    match ahead {
        Ahead::Nothing => {}
        Ahead::F32(n) => p.pf = n,
        Ahead::Half(next) => p.pf_half = next.as_ptr(),
    }
    if p.m == 0 || p.n == 0 || p.k == 0 {
        return true;
    }
    // SAFETY: extents checked by the views, shapes by GemmArgs::nn, ISA usable.
    unsafe { dispatch!(usable(isa), attn_nn(&p)) };
    true
}

/// What [`attn_scores`] prefetches into L2 while it reads a block of cached
/// rows: the same rows of the block it will read next, wherever they are.
/// Row `i`, element `kk` of the block (rows at stride `lda` elements) has its
/// counterpart at element `i * lda + kk` of the next block.
#[derive(Clone, Copy, Debug)]
pub enum Ahead<'a> {
    /// Nothing ahead (the lines being read are named again: no effect).
    Nothing,
    /// The f32 rows this many elements further on (the next block of an f32
    /// cache, read in place: `cnt * lda`).
    F32(usize),
    /// The next block as stored before widening, two bytes an element (an
    /// f16 or bf16 cache).
    Half(&'a [u8]),
}

/// The latent sum of a block of cached rows weighted by every head's
/// probabilities (absorbed attention): `Acc += P^T R` with `P` the
/// probabilities (`cnt x Hp`, heads across, read down their columns: one
/// broadcast per head and row), `R` the rows (`cnt x r`, f32, loaded as
/// vectors), `Acc` `Hp x r` (a head's sums contiguous); products added in
/// increasing row, so the values are those of [`gemm_nn`]`(P^T, R)` wherever
/// both run in whole vectors (their scalar tails multiply, then add). Each
/// row is read once for all heads. False (nothing written) if the shapes
/// disagree.
pub fn attn_sum(isa: Isa, rows: &Mat<f32>, probs: &Mat<f32>, acc: &mut MatMut) -> bool {
    let Some(p) = GemmArgs::tn(probs, rows, acc) else {
        return false;
    };
    if p.m == 0 || p.n == 0 || p.k == 0 {
        return true;
    }
    // SAFETY: extents checked by the views, shapes by GemmArgs::tn (A, the
    // probabilities, is k x m at its stride), ISA usable.
    unsafe { dispatch!(usable(isa), attn_tn(&p)) };
    true
}

// ----------------------------------------------------------------------------
// Online softmax
// ----------------------------------------------------------------------------

/// One block of an online softmax over a row of raw scores.
///
/// `x[..valid]` holds scores; they are multiplied by `scale`, the running max
/// `m` and sum `l` are updated, and `x` becomes `exp(x*scale - m_new)`
/// (exactly 0 at `valid..`). Returns the factor `exp(m_old - m_new)` by which
/// an accumulator of the previous blocks must be scaled (0 on the first block).
/// `x.len()` must be a multiple of [`SOFTMAX_MULTIPLE`]; returns `None` (and
/// changes nothing) otherwise or if `valid > x.len()`.
pub fn softmax_block(
    x: &mut [f32],
    valid: usize,
    scale: f32,
    m: &mut f32,
    l: &mut f32,
) -> Option<f32> {
    softmax_block_with(isa(), x, valid, scale, m, l)
}

/// [`softmax_block`] on a given instruction set.
pub fn softmax_block_with(
    isa: Isa,
    x: &mut [f32],
    valid: usize,
    scale: f32,
    m: &mut f32,
    l: &mut f32,
) -> Option<f32> {
    if x.len() & (SOFTMAX_MULTIPLE - 1) != 0 || valid > x.len() {
        return None;
    }
    let p = RowArgs {
        x: x.as_mut_ptr(),
        len: x.len(),
        valid,
        scale,
    };
    // SAFETY: x is valid for its length, a multiple of every ISA's lanes (they
    // divide SOFTMAX_MULTIPLE); valid <= len (checked); ISA usable.
    Some(unsafe { dispatch!(usable(isa), softmax_row(&p, m, l)) })
}

/// One block of an online softmax down the columns of `x` (`rows x cols`,
/// row stride `ld`): column `j` holds raw scores of one softmax (e.g. one head)
/// for `rows` consecutive keys. Scores are multiplied by `scale`, the running
/// max `m[j]` and sum `l[j]` updated, `x` becomes `exp(x*scale - m_new)`, and
/// `alpha[j] = exp(m_old - m_new)` (0 on the first block) is the factor for the
/// previous accumulator. Vectorised across columns. Returns false (changing
/// nothing) if a length does not fit.
#[allow(clippy::too_many_arguments)]
pub fn softmax_cols(
    isa: Isa,
    x: &mut [f32],
    rows: usize,
    cols: usize,
    ld: usize,
    scale: f32,
    m: &mut [f32],
    l: &mut [f32],
    alpha: &mut [f32],
) -> bool {
    if !fits(x.len(), rows, cols, ld) || m.len() < cols || l.len() < cols || alpha.len() < cols {
        return false;
    }
    if rows == 0 || cols == 0 {
        return true;
    }
    let p = ColsArgs {
        x: x.as_mut_ptr(),
        rows,
        cols,
        ld,
        scale,
        m: m.as_mut_ptr(),
        l: l.as_mut_ptr(),
        alpha: alpha.as_mut_ptr(),
    };
    // SAFETY: extents checked above; ISA usable.
    unsafe { dispatch!(usable(isa), softmax_cols(&p)) };
    true
}

// ----------------------------------------------------------------------------
// Linear layers
// ----------------------------------------------------------------------------

/// A linear layer over `n_tok` rows: `y[t][o] = W[o] . x[t] + b[o]`.
///
/// `w` is `[rows][cols]`; `x` holds `n_tok` rows of `cols` values at a stride of
/// `x_stride` (>= cols); `y` is `[n_tok][rows]`. Returns false (writing
/// nothing) if a length does not fit.
pub fn linear(
    w: &Tensor,
    b: Option<&Tensor>,
    x: &[f32],
    x_stride: usize,
    n_tok: usize,
    y: &mut [f32],
) -> bool {
    linear_par(&Parallel::SEQUENTIAL, w, b, x, x_stride, n_tok, y, None)
}

/// `ceil(a / b)`, 0 when `b` is 0 (no panic path).
#[inline]
pub(crate) fn ceil_div(a: usize, b: usize) -> usize {
    match b {
        0 => 0,
        b => a / b + usize::from(a.checked_rem(b) != Some(0)),
    }
}

/// Output rows per task of [`linear_par`] for a layer of `rows` outputs: at
/// least 32 (a multiple of 8), at most [`MAX_TASKS`] tasks; when packing,
/// [`packed_row_block`].
// Not `clamp`: it has a panic path (min > max).
#[allow(clippy::manual_clamp)]
pub fn linear_row_block(rows: usize, packed: bool) -> usize {
    if packed {
        return packed_row_block(rows);
    }
    let tasks = ceil_div(rows, 32).min(MAX_TASKS).max(1);
    ceil_div(ceil_div(rows, tasks), 8) * 8
}

/// Output rows per task of a packed [`linear_par`] for a layer of `rows`
/// outputs: a multiple of [`PACK_NP`], at most [`PACK_SLOTS`] tasks (0 for no
/// rows).
pub const fn packed_row_block(rows: usize) -> usize {
    let tasks = plan::max(plan::min(plan::ceil_div(rows, PACK_NP), PACK_SLOTS), 1);
    plan::ceil_div(plan::ceil_div(rows, tasks), PACK_NP).saturating_mul(PACK_NP)
}

/// Tasks of a packed [`linear_par`] for a layer of `rows` outputs, each with its
/// own [`pack_len`]`(cols)` of packing scratch (at most [`PACK_SLOTS`]).
pub const fn pack_tasks(rows: usize) -> usize {
    plan::ceil_div(rows, packed_row_block(rows))
}

/// f32 of packing scratch a packed [`linear_par`] over a `[rows][cols]` layer
/// needs: [`pack_tasks`]`(rows)` slots of [`pack_len`]`(cols)`. The memory plan
/// sizes the engine's `pack_panels` with it (the largest over the layer's
/// projections), so the products and the plan cannot disagree.
pub const fn pack_scratch_len(rows: usize, cols: usize) -> usize {
    pack_tasks(rows).saturating_mul(pack_len(cols))
}

/// [`linear`] with the output rows split into fixed blocks
/// ([`linear_row_block`]) run as tasks of `par` (unpacked, one block of every
/// row when `par` would run the tasks inline). Every output value is computed
/// the same way whatever the split, so the result does not depend on `par`.
/// `pack`: scratch for the packed product, which runs whenever it is given and
/// `n_tok >= PACK_MIN_ROWS`; it must then hold [`pack_scratch_len`]`(rows, cols)`
/// f32 (else false: the caller's plan disagrees with this layer; nothing is
/// written).
#[allow(clippy::too_many_arguments)]
pub fn linear_par(
    par: &Parallel,
    w: &Tensor,
    b: Option<&Tensor>,
    x: &[f32],
    x_stride: usize,
    n_tok: usize,
    y: &mut [f32],
    pack: Option<&mut [f32]>,
) -> bool {
    let (rows, cols) = (w.rows, w.cols);
    let (Some(a), Some(_)) = (
        Mat::new(x, n_tok, cols, x_stride),
        MatE::new(w.data, rows, cols, cols),
    ) else {
        return false;
    };
    if !fits(y.len(), n_tok, rows, rows) {
        return false;
    }
    let plen = pack_len(cols);
    let pack = match pack {
        Some(p) if n_tok >= PACK_MIN_ROWS => {
            if p.len() < pack_scratch_len(rows, cols) {
                return false;
            }
            Some(p)
        }
        _ => None,
    };
    let work = n_tok.saturating_mul(rows).saturating_mul(cols);
    let mut rb = linear_row_block(rows, pack.is_some()).max(1);
    // Unpacked tasks that would run one after the other on this thread run
    // as one product over every row (the values are the same): each block
    // would restart the mat-vec's streams (`matvec::nt_matvec`). V2-Lite
    // decode steps at context 1, one thread on a Xeon: bf16 weights 2-3%
    // faster, f32 about 1%.
    if pack.is_none() && par.runs_inline(ceil_div(rows, rb), work) {
        rb = rows;
    }
    // Packed: pack_tasks(rows), the slots pack_scratch_len counted.
    let tasks = ceil_div(rows, rb);
    let isa = isa();
    let ys = SharedMut::new(y);
    let packs = pack.map(SharedMut::new);
    par.for_each(tasks, work, &|i| {
        let r0 = i * rb;
        let nr = rb.min(rows.saturating_sub(r0));
        // SAFETY: task i owns output columns r0 .. r0 + nr of every row; the
        // blocks of different tasks are disjoint.
        let (Some(wm), Some(mut c)) = (MatE::tensor_rows(w, r0, nr), unsafe {
            ys.mat(r0, n_tok, nr, rows)
        }) else {
            return;
        };
        // SAFETY: pack slot i belongs to task i alone (i < tasks = pack_tasks(rows)
        // when packing, and the scratch holds that many slots, checked above).
        let slot = packs
            .as_ref()
            .and_then(|p| unsafe { p.slice(i * plen, plen) });
        gemm_nt_packed(isa, &a, &wm, &mut c, slot);
        add_bias(b, r0, &mut c);
    });
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_and_linear() {
        let a: [f32; 19] = core::array::from_fn(|i| i as f32);
        let b: [f32; 19] = core::array::from_fn(|i| 1.0 - i as f32 * 0.5);
        let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - want).abs() < 1e-3);

        // W = [[1,2],[3,4],[5,6]], x = [[1,1],[0,1]] (stride 3), b = [10,20,30]
        let w = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let bias = [10.0, 20.0, 30.0];
        let wt = Tensor::f32(&w, 3, 2).unwrap();
        let bt = Tensor::f32(&bias, 1, 3).unwrap();
        let x = [1.0, 1.0, 99.0, 0.0, 1.0, 99.0];
        let mut y = [0.0; 6];
        assert!(linear(&wt, Some(&bt), &x, 3, 2, &mut y));
        assert_eq!(y, [13.0, 27.0, 41.0, 12.0, 24.0, 36.0]);
        assert!(
            !linear(&wt, None, &x, 3, 3, &mut y),
            "x too short for 3 tokens"
        );
    }

    #[test]
    fn pack_tasks_are_the_tasks_of_the_packed_split() {
        assert_eq!((pack_tasks(0), pack_scratch_len(0, 100)), (0, 0));
        // 640 rows: 10 tasks of 64; 1100 rows: at most 16 tasks of 128 rows
        // (ceil(1100 / 16) = 69 -> 128), so 9; 5000: 16 tasks of 320.
        assert_eq!((pack_tasks(640), packed_row_block(640)), (10, 64));
        assert_eq!((pack_tasks(1100), packed_row_block(1100)), (9, 128));
        assert_eq!((pack_tasks(5000), packed_row_block(5000)), (16, 320));
        for rows in 1..3000 {
            let rb = linear_row_block(rows, true);
            let tasks = ceil_div(rows, rb);
            assert_eq!(pack_tasks(rows), tasks, "rows {rows}");
            assert!(tasks <= PACK_SLOTS && rb.is_multiple_of(PACK_NP) && (tasks - 1) * rb < rows);
        }
        assert_eq!(pack_scratch_len(640, 300), 10 * PACK_NP * PACK_KC);
        assert_eq!(pack_scratch_len(640, 96), 10 * PACK_NP * 96);
    }

    #[test]
    #[cfg_attr(miri, ignore)] // ~100k multiply-adds
    fn a_packed_linear_needs_its_scratch_and_splits_without_changing_a_bit() {
        // 130 rows: 3 packed tasks of 64 rows; PACK_MIN_ROWS tokens pack.
        let (rows, cols, n_tok) = (130, 40, PACK_MIN_ROWS);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7) % 13) as f32 * 0.1 - 0.6)
            .collect();
        let x: Vec<f32> = (0..n_tok * cols)
            .map(|i| ((i * 5) % 11) as f32 * 0.2 - 1.0)
            .collect();
        let wt = Tensor::f32(&w, rows, cols).unwrap();
        let need = pack_scratch_len(rows, cols);
        assert_eq!(need, 3 * PACK_NP * cols);
        let seq = Parallel::SEQUENTIAL;
        let mut pack = vec![0f32; need + 100];
        let mut y = vec![7f32; n_tok * rows];
        assert!(!linear_par(
            &seq,
            &wt,
            None,
            &x,
            cols,
            n_tok,
            &mut y,
            Some(&mut pack[..need - 1])
        ));
        assert!(y.iter().all(|&v| v == 7.0), "nothing written");
        assert!(linear_par(
            &seq,
            &wt,
            None,
            &x,
            cols,
            n_tok,
            &mut y,
            Some(&mut pack[..need])
        ));
        let mut more = vec![0f32; n_tok * rows];
        assert!(linear_par(
            &seq,
            &wt,
            None,
            &x,
            cols,
            n_tok,
            &mut more,
            Some(&mut pack[..])
        ));
        assert!(y.iter().zip(&more).all(|(a, b)| a.to_bits() == b.to_bits()));
        // The same values, in increasing k, as one packed product over all rows.
        let mut whole = vec![0f32; n_tok * rows];
        let (a, b) = (
            Mat::new(&x, n_tok, cols, cols).unwrap(),
            MatE::new(wt.data, rows, cols, cols).unwrap(),
        );
        let mut c = MatMut::new(&mut whole, n_tok, rows, rows).unwrap();
        assert!(gemm_nt_packed(
            isa(),
            &a,
            &b,
            &mut c,
            Some(&mut pack[..pack_len(cols)])
        ));
        assert!(y
            .iter()
            .zip(&whole)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        // Without scratch (or with fewer tokens) the product does not pack.
        assert!(linear_par(
            &seq,
            &wt,
            None,
            &x,
            cols,
            n_tok - 1,
            &mut more,
            Some(&mut pack[..0])
        ));
    }
}
