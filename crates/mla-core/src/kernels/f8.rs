//! Products with FP8 E4M3 weights that carry one f32 scale per 128 x 128 block
//! (DeepSeek-V3's checkpoints, [`crate::dtype::F8Elems`]).
//!
//! NT (`C = A B^T`, the projections) on x86-64 and aarch64 reads the codes
//! straight into vector registers ([`Simd::load_e4m3`]: code times `2^-120`,
//! a shift and a mask) and never widens the weights in memory:
//!
//! - few rows of A (decode; batched decode): [`tile`], `MR x NR` tiles whose
//!   accumulators sum one 128-column scale block, then fold it into a running
//!   total with one multiply-add by the block's scale; one row of A takes
//!   `1 x NR` tiles that stream the rows of B in their memory order;
//! - many rows of A with scratch (prefill): B is packed as for f32 weights
//!   (`pack::ntp`), the scales applied while packing, so the f32 packed
//!   micro-kernel runs on exactly the dequantized values.
//!
//! Elsewhere (small targets, `nn`, operands out of the fast path's range) a
//! panel of at most [`PANEL`] rows by one or two scale blocks is dequantized
//! (code times its block's scale, the exact f32 a dequantized checkpoint
//! holds) into a small stack buffer and fed to the f32 kernels. The order of
//! every sum is fixed by the shapes alone, so a value does not depend on how
//! rows or tasks are split.

use super::mat::{F8Mat, Mat, MatMut};
use super::Isa;
use super::{nn_typed, nt_typed};
use crate::dtype::F8_BLOCK;

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use super::{
    dispatch::dispatch,
    gemm::GemmArgs,
    isa::{usable, CACHE_LINE, MATVEC_AHEAD},
    pack_len,
    simd::{prefetch_l2, E4m3, Simd},
    PACK_MIN_ROWS,
};

/// Rows of B dequantized per panel (the panel is `PANEL x KB` f32 on the
/// stack: 16 KiB on 64-bit desktops and servers, 1 KiB on small targets).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const PANEL: usize = 16;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const PANEL: usize = 2;
/// Columns (k) per panel of the NT product: whole scale blocks.
const KB: usize = 2 * F8_BLOCK;
/// Rows of A per NT tile (the tile `MI x PANEL` of partial sums).
const MI: usize = 8;

/// `2^64`: rows of A are multiplied by it on load in [`tile`], so that a
/// product with a code's `2^-120` unit is `a * code * 2^-56`, far from f32's
/// subnormals; exact (a power of two) below [`A_MAX`].
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const TWO_64: f32 = f32::from_bits((127 + 64) << 23);
/// `2^56`: folded into each block scale by [`tile`].
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const TWO_56: f32 = f32::from_bits((127 + 56) << 23);
/// `2^120`: folded into each block scale when packing.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(super) const TWO_120: f32 = f32::from_bits((127 + 120) << 23);
/// Rows of A whose largest magnitude is in `[A_MIN, A_MAX]` (or 0) take the
/// in-register path: scaled by `2^64` they neither overflow nor reach f32's
/// subnormals with the codes' unit. Others take the dequantized panels.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const A_MAX: f32 = f32::from_bits((127 + 60) << 23);
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const A_MIN: f32 = f32::from_bits((127 - 60) << 23);

/// True when row `i` of `a` may take the in-register path: its largest
/// magnitude in `[A_MIN, A_MAX]`, or 0.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn in_range(a: &Mat<f32>, i: usize) -> bool {
    // On the magnitudes' bits (an integer maximum vectorizes; a NaN's bits
    // are above every finite value's and infinity's, so NaN is out of range).
    a.row(i).is_some_and(|r| {
        let max = r.iter().fold(0u32, |m, v| m.max(v.to_bits() & 0x7fff_ffff));
        max == 0 || (A_MIN.to_bits()..=A_MAX.to_bits()).contains(&max)
    })
}

/// True when `codes` holds a NaN code (`0x7f` or `0xff`). A plain fold that
/// compiles to byte-wise vector maxima.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
#[inline(always)]
pub(super) fn has_nan_code(codes: &[u8]) -> bool {
    codes.iter().fold(0u8, |m, &b| m.max(b & 0x7f)) == 0x7f
}

/// The raw operands of the in-register FP8 NT product `C = A B^T` over
/// checked views: `A` is `m x k` (f32, row stride `lda`), `B` the `n x k`
/// codes of `b` (rows contiguous), `C` is `m x n` (row stride `ldc`).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) struct F8Args<'b> {
    a: *const f32,
    lda: usize,
    m: usize,
    b: &'b F8Mat<'b>,
    codes: *const u8,
    c: *mut f32,
    ldc: usize,
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
impl F8Args<'_> {
    /// Rows of A (and C).
    pub(super) fn rows_of_a(&self) -> usize {
        self.m
    }
}

/// `C = A B^T` with B FP8 (`A` m x k f32, `B` n x k, `C` m x n). False (and
/// nothing written) if the shapes disagree. With `pack` ([`pack_len`]`(k)`
/// f32) and at least [`PACK_MIN_ROWS`] rows of A, the packed product
/// (dequantized values, summed in increasing k); else in-register tiles
/// ([`tile`]) for the rows of A in range, dequantized panels for the others.
pub(super) fn nt(
    isa: Isa,
    a: &Mat<f32>,
    b: &F8Mat,
    c: &mut MatMut,
    pack: Option<&mut [f32]>,
) -> bool {
    if a.cols != b.cols || c.rows != a.rows || c.cols != b.rows {
        return false;
    }
    if a.rows == 0 || b.rows == 0 {
        return true;
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = pack;
        nt_panels(isa, a, b, c)
    }
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        let isa = usable(isa);
        let (m, n, k) = (a.rows, b.rows, b.cols);
        // The codes: exactly n rows of k (MatE::new checked n * k <= len).
        let Some(codes) = n.checked_mul(k).and_then(|len| b.e.codes().get(..len)) else {
            return false;
        };
        // (k == 0, which no FP8 view has: the tiles would write the zeros,
        // the packed driver nothing.)
        if let Some(pack) = pack.filter(|pk| pk.len() >= pack_len(k) && m >= PACK_MIN_ROWS && k > 0)
        {
            let p = GemmArgs::<E4m3> {
                a: a.ptr(),
                lda: a.stride,
                m,
                b: codes.as_ptr().cast::<E4m3>(),
                ldb: k,
                n,
                k,
                c: c.ptr,
                ldc: c.stride,
                pf: 0,
                pf_half: core::ptr::null(),
            };
            // Where f32 weights are not packed, the f32 tiles on rows
            // dequantized into the scratch, as for bf16 (isa::widens): the
            // same bits as f32 weights holding the dequantized values.
            if super::isa::widens(isa, k, pack.len()) {
                // SAFETY: as below; pack holds at least NR rows of k f32.
                unsafe { dispatch!(isa, nt_widened(&p, pack.as_mut_ptr(), pack.len(), Some(b))) };
                return true;
            }
            // SAFETY: A and C checked their extents at construction, B is n
            // rows of k codes (the slice above; E4m3 is a transparent byte);
            // pack holds pack_len(k) f32; the ISA is usable.
            unsafe { dispatch!(isa, ntp(&p, pack.as_mut_ptr(), Some(b))) };
            return true;
        }
        by_runs(
            a,
            c,
            |c, i0, i1| {
                let (Some(ar), Some(cr)) = (a.sub(i0, i1 - i0, 0, k), c.sub(i0, i1 - i0, 0, n))
                else {
                    return false;
                };
                let p = F8Args {
                    a: ar.ptr(),
                    lda: ar.stride,
                    m: i1 - i0,
                    b,
                    codes: codes.as_ptr(),
                    c: cr.ptr,
                    ldc: cr.stride,
                };
                // SAFETY: rows i0..i1 of A and C (checked views), B's n rows
                // of k codes (the slice above); the ISA is usable.
                unsafe { dispatch!(isa, f8_nt(&p)) };
                true
            },
            |c, i| {
                let (Some(ar), Some(mut cr)) = (a.sub(i, 1, 0, k), c.sub(i, 1, 0, n)) else {
                    return false;
                };
                nt_panels(isa, &ar, b, &mut cr)
            },
        )
    }
}

/// Rows `0..m` of A in order: each maximal run of rows in range
/// ([`in_range`]) to `tiles(c, i0, i1)`, every other row alone to
/// `panels(c, i)` (a row's values do not depend on its neighbours). False as
/// soon as one of them is.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn by_runs(
    a: &Mat<f32>,
    c: &mut MatMut,
    mut tiles: impl FnMut(&mut MatMut, usize, usize) -> bool,
    mut panels: impl FnMut(&mut MatMut, usize) -> bool,
) -> bool {
    let m = a.rows;
    let mut i0 = 0;
    while i0 < m {
        let mut i1 = i0;
        while i1 < m && in_range(a, i1) {
            i1 += 1;
        }
        if i1 > i0 {
            if !tiles(c, i0, i1) {
                return false;
            }
            i0 = i1;
        } else {
            if !panels(c, i0) {
                return false;
            }
            i0 += 1;
        }
    }
    true
}

/// FP8 NT micro-kernel: `C[i + r][j + t] = A_{i+r} . B_{j+t}` for the
/// `MR x NR` tile at row `i`, column `j` of C, with B's codes widened in
/// registers. Per 128-column scale block, one vector accumulator per element
/// of C sums `(a * 2^64) * (code * 2^-120)` (lane `q`: columns `q, q + L,
/// ...` of the block; measured faster than scaling the codes, even with
/// fewer vectors of B than of A per step); the block's sum goes into a running total with one
/// multiply-add by `scale * 2^56`; at the end the lanes are reduced with the
/// fixed tree, then the `k % L` tail is added element by element (the
/// dequantized weight). A row of B holding a NaN code gives NaN, as its
/// dequantized weights would. Each element's order depends on `k` alone, not
/// on the tile: the mat-vec and batched tiles give the same bits.
///
/// # Safety
/// Built by [`nt`] (extents checked); `i + MR <= m`, `j + NR <= n`; every
/// `|A|` below `A_MAX`; `S` available.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
unsafe fn tile<S: Simd, const MR: usize, const NR: usize>(p: &F8Args, i: usize, j: usize) {
    // SAFETY: forwarded contract; A scaled in registers.
    unsafe { tile_from::<S, MR, NR, false>(p, i, j, 1, core::ptr::null(), 0) }
}

/// [`tile`] that, with `SCALED`, reads the `k_vec` first columns of its `MR`
/// rows of A already multiplied by `2^64` from `scaled` (row `r` at
/// `scaled + r * lds`, [`scale_rows`]) instead of multiplying each vector on
/// load: the same values, so the same bits, without one multiply (on the
/// FMA pipes) per vector of A. The tile's rows of B (and columns of C) are
/// `j + t * step`: with `step` 1 neighbours, whose next tile's rows it
/// prefetches; else rows of `NR` runs ([`matvec_runs`]), each prefetched
/// [`MATVEC_AHEAD`] bytes ahead in its run.
///
/// # Safety
/// As [`tile`], with `j + (NR - 1) * step < n` in place of `j + NR <= n`;
/// with `SCALED`, `scaled` valid for `MR` rows of `k_vec` f32 (stride
/// `lds`) holding rows `i .. i + MR` of A times `2^64`.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
unsafe fn tile_from<S: Simd, const MR: usize, const NR: usize, const SCALED: bool>(
    p: &F8Args,
    i: usize,
    j: usize,
    step: usize,
    scaled: *const f32,
    lds: usize,
) {
    let lanes = S::LANES;
    let k = p.b.cols;
    let k_vec = k - k % lanes;
    // SAFETY (whole body): offsets row * stride + column with row < MR (A, C)
    // or t * step, t < NR (B at stride k, C) from the tile's origin and
    // column < k (A, B): inside the extents nt checked (i + MR <= m,
    // j + (NR - 1) * step < n).
    unsafe {
        let (a, b, c) = (
            p.a.add(i * p.lda),
            p.codes.add(j * k),
            p.c.add(i * p.ldc + j),
        );
        let next = b.wrapping_add(NR * k);
        let row_k = step * k;
        let up = S::splat(TWO_64);
        let mut total = [[S::zero(); NR]; MR];
        let mut k0 = 0;
        while k0 < k_vec {
            let k1 = k_vec.min(k0 + F8_BLOCK);
            let mut acc = [[S::zero(); NR]; MR];
            // One step: LANES columns of the tile's rows (a macro, not a
            // closure: closures do not inherit the target features).
            macro_rules! step {
                ($kk:expr) => {{
                    let kk = $kk;
                    let mut b_vecs = [S::zero(); NR];
                    for (t, v) in b_vecs.iter_mut().enumerate() {
                        *v = S::load_e4m3(b.add(t * row_k + kk));
                    }
                    for (r, row) in acc.iter_mut().enumerate() {
                        let a_vec = if SCALED {
                            S::load(scaled.add(r * lds + kk))
                        } else {
                            S::mul(S::load(a.add(r * p.lda + kk)), up)
                        };
                        for (s, &b_vec) in row.iter_mut().zip(b_vecs.iter()) {
                            *s = S::fma(a_vec, b_vec, *s);
                        }
                    }
                }};
            }
            let mut kk = k0;
            while kk < k1 {
                // Neighbours: the next tile's rows (NR rows on), a cache line
                // each at the pace this tile reads its own: rows of B start
                // on new pages every few rows, which the hardware prefetchers
                // do not foresee. Runs: each run's line MATVEC_AHEAD bytes on.
                // Wrapping: never dereferenced.
                for t in 0..NR {
                    prefetch_l2(if step == 1 {
                        next.wrapping_add(t * k + kk)
                    } else {
                        b.wrapping_add(t * row_k + kk + MATVEC_AHEAD)
                    });
                }
                let end = k1.min(kk + CACHE_LINE);
                if end - kk == CACHE_LINE {
                    for q in 0..CACHE_LINE / lanes {
                        step!(kk + q * lanes);
                    }
                } else {
                    let mut q = kk;
                    while q < end {
                        step!(q);
                        q += lanes;
                    }
                }
                kk = end;
            }
            for t in 0..NR {
                let s = p.b.scale_of(j + t * step, k0);
                let folded = s * TWO_56;
                for (tot, a) in total.iter_mut().zip(acc.iter()) {
                    let (Some(x), Some(sum)) = (tot.get_mut(t), a.get(t)) else {
                        continue;
                    };
                    *x = if folded.is_finite() {
                        S::fma(*sum, S::splat(folded), *x)
                    } else {
                        // A scale of 2^72 or more: 2^56 first (exact).
                        S::fma(S::mul(*sum, S::splat(TWO_56)), S::splat(s), *x)
                    };
                }
            }
            k0 = k1;
        }
        for t in 0..NR {
            let row = core::slice::from_raw_parts(b.add(t * row_k), k);
            let nan = has_nan_code(row);
            for (r, tot) in total.iter().enumerate() {
                let Some(&v) = tot.get(t) else { continue };
                let mut sum = S::hsum(v);
                for q in k_vec..k {
                    let w =
                        crate::fp8::to_f32(*b.add(t * row_k + q)) * p.b.scale_of(j + t * step, q);
                    sum += *a.add(r * p.lda + q) * w;
                }
                *c.add(r * p.ldc + t * step) = if nan { f32::NAN } else { sum };
            }
        }
    }
}

/// The in-register FP8 NT driver: for each tile of `NR` rows of B (then the
/// last rows one by one), every row of A in `MR`-row tiles, then a 2-row
/// tile, then one by one. One row of A (decode) takes `1 x MATVEC_NR` tiles,
/// fewer than `MR` rows `2 x MATVEC_NR` tiles.
///
/// # Safety
/// As [`tile`] for the whole of `p`.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
pub(super) unsafe fn nt_tiles<S: Simd, const MR: usize, const NR: usize, const MATVEC_NR: usize>(
    p: &F8Args,
) {
    // SAFETY: forwarded; the tiles stay inside m x n (loop bounds).
    unsafe {
        if p.m == 1 {
            cols::<S, 1, MATVEC_NR>(p);
        } else if p.m < MR {
            // Two rows of A (and a last one) against the mat-vec's rows of B.
            cols::<S, 2, MATVEC_NR>(p);
        } else {
            cols::<S, MR, NR>(p);
        }
    }
}

/// [`nt_tiles`] with one tile shape.
///
/// # Safety
/// As [`tile`] for the whole of `p`.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
unsafe fn cols<S: Simd, const MR: usize, const NR: usize>(p: &F8Args) {
    let n = p.b.rows;
    let mut j = 0;
    if MR.saturating_mul(p.b.cols) <= SCALED_LEN {
        // SAFETY: forwarded contract; MR * k <= SCALED_LEN.
        unsafe { cols_scaled::<S, MR, NR>(p) };
        return;
    }
    // SAFETY: i + MR <= m and j + NR <= n (loop bounds).
    unsafe {
        while j + NR <= n {
            let mut i = 0;
            while i + MR <= p.m {
                tile::<S, MR, NR>(p, i, j);
                i += MR;
            }
            if MR > 2 && i + 2 <= p.m {
                tile::<S, 2, NR>(p, i, j);
                i += 2;
            }
            while i < p.m {
                tile::<S, 1, NR>(p, i, j);
                i += 1;
            }
            j += NR;
        }
        while j < n {
            let mut i = 0;
            while i + MR <= p.m {
                tile::<S, MR, 1>(p, i, j);
                i += MR;
            }
            while i < p.m {
                tile::<S, 1, 1>(p, i, j);
                i += 1;
            }
            j += 1;
        }
    }
}

/// f32 of the stack buffer of [`cols_scaled`]: 32 KiB, so rows of up to
/// 2048 elements with four rows of A a tile, 8192 for the mat-vec.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const SCALED_LEN: usize = 8192;

/// Tiles of B rows per block of [`cols_scaled`] (with AVX2's two rows a
/// tile, 32 rows of 2048 codes: 64 KiB, which stay in L2 while every group of
/// rows of A passes over them).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const SCALED_B_TILES: usize = 16;

/// [`cols`] with the rows of A multiplied by `2^64` ahead of the tiles: in
/// blocks of [`SCALED_B_TILES`] tiles of rows of B, each group of `MR` rows
/// of A is scaled once into a stack buffer ([`scale_rows`], [`SCALED_LEN`]
/// f32) and the block's tiles read it ([`tile_from`]) instead of multiplying
/// every vector of A on load for every tile: the same values, so the same
/// bits.
///
/// # Safety
/// As [`tile`] for the whole of `p`; `MR * k <= SCALED_LEN`.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
unsafe fn cols_scaled<S: Simd, const MR: usize, const NR: usize>(p: &F8Args) {
    let mut buf = [0f32; SCALED_LEN];
    let (n, k) = (p.b.rows, p.b.cols);
    let k_vec = k - k % S::LANES;
    let s = buf.as_mut_ptr();
    let block = SCALED_B_TILES * NR;
    // All rows of A in one group (the mat-vec, a batch of up to MR tokens):
    // scaled once for every block of B.
    let whole = p.m <= MR;
    let mut j0 = 0;
    // SAFETY: groups of rows i..i + g <= m of A scaled into the first g * k
    // <= MR * k <= SCALED_LEN f32 of buf (stride k); tiles inside
    // i + rows <= m and j + NR <= n (loop bounds) reading them.
    unsafe {
        if whole {
            scale_rows::<S>(p, 0, p.m, k_vec, s);
        }
        if p.m == 1 {
            matvec_runs::<S, NR>(p, s);
            return;
        }
        while j0 < n {
            let j1 = n.min(j0 + block);
            let mut i = 0;
            while i < p.m {
                let g = MR.min(p.m - i);
                if !whole {
                    scale_rows::<S>(p, i, g, k_vec, s);
                }
                let mut j = j0;
                while j + NR <= j1 {
                    if g == MR {
                        tile_from::<S, MR, NR, true>(p, i, j, 1, s, k);
                    } else {
                        let mut r = 0;
                        if MR > 2 && g - r >= 2 {
                            tile_from::<S, 2, NR, true>(p, i, j, 1, s, k);
                            r += 2;
                        }
                        while r < g {
                            tile_from::<S, 1, NR, true>(p, i + r, j, 1, s.add(r * k), k);
                            r += 1;
                        }
                    }
                    j += NR;
                }
                while j < j1 {
                    for r in 0..g {
                        tile_from::<S, 1, 1, true>(p, i + r, j, 1, s.add(r * k), k);
                    }
                    j += 1;
                }
                i += g;
            }
            j0 = j1;
        }
    }
}

/// The mat-vec (`m == 1`, A scaled into `scaled`): as the f32/bf16 one
/// ([`nt_matvec`](super::matvec::nt_matvec)), tile `j` takes row `j` of
/// each of `NR` runs of `n / NR` rows, so the codes are read as `NR` long
/// sequential streams, each prefetched [`MATVEC_AHEAD`] bytes ahead; the
/// last `n % NR` rows one by one. The same values as neighbouring tiles.
/// V2-Lite decode steps with FP8 weights on the Xeon (AVX-512), cold layers,
/// one thread, context 1: 1.50 -> 1.22 ms (1024: 1.97 -> 1.67); two threads
/// 0.94 -> 0.81 (1.24 -> 1.10).
///
/// # Safety
/// As [`tile`] for the whole of `p`, `p.m == 1`; `scaled` holds A times
/// `2^64` ([`scale_rows`]).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
unsafe fn matvec_runs<S: Simd, const NR: usize>(p: &F8Args, scaled: *const f32) {
    let (n, k) = (p.b.rows, p.b.cols);
    let runs = n / NR;
    // SAFETY: j + (NR - 1) * runs < NR * runs <= n; rows NR * runs .. n one
    // by one; A is one row.
    unsafe {
        for j in 0..runs {
            tile_from::<S, 1, NR, true>(p, 0, j, runs, scaled, k);
        }
        for j in NR * runs..n {
            tile_from::<S, 1, 1, true>(p, 0, j, 1, scaled, k);
        }
    }
}

/// Rows `i .. i + g` of A, their first `k_vec` columns times `2^64` (exact),
/// into `dst` (row `r` at `dst + r * k`).
///
/// # Safety
/// Rows `i .. i + g <= m` of `p`'s A; `dst` valid for `g * k` f32; `S`
/// available.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
unsafe fn scale_rows<S: Simd>(p: &F8Args, i: usize, g: usize, k_vec: usize, dst: *mut f32) {
    let (k, lanes) = (p.b.cols, S::LANES);
    // SAFETY: rows below i + g <= m of A, columns below k_vec <= k; dst rows
    // below g of k f32.
    unsafe {
        let up = S::splat(TWO_64);
        for r in 0..g {
            let (src, out) = (p.a.add((i + r) * p.lda), dst.add(r * k));
            let mut q = 0;
            while q < k_vec {
                S::store(out.add(q), S::mul(S::load(src.add(q)), up));
                q += lanes;
            }
        }
    }
}

// The packed product's k-slices start on scale blocks (scale_panel).
const _: () = assert!(super::PACK_KC.is_multiple_of(F8_BLOCK));

/// Row `j` of `b`'s view, widened to [`E4m3`] units in `row` (`k` f32),
/// times its block scales in place: the dequantized weights exactly, by the
/// arithmetic of [`scale_panel`] (the scale folded with `2^120` when that
/// is finite, else the two factors in turn).
///
/// # Safety
/// `row` valid for `k` f32; `j` a row of the view and `k` at most its
/// columns; `S` available.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
pub(super) unsafe fn scale_row<S: Simd>(b: &F8Mat, j: usize, row: *mut f32, k: usize) {
    let lanes = S::LANES;
    // SAFETY (whole body): offsets t < k of row.
    unsafe {
        let mut kb = 0;
        while kb < k {
            let end = k.min(kb + F8_BLOCK);
            let sc = b.scale_of(j, kb);
            let folded = sc * TWO_120;
            let (f, s, two_steps) = if folded.is_finite() {
                (folded, 1.0, false)
            } else {
                (sc, TWO_120, true)
            };
            let (fv, sv) = (S::splat(f), S::splat(s));
            let mut t = kb;
            while t + lanes <= end {
                let mut x = S::mul(S::load(row.add(t)), fv);
                if two_steps {
                    x = S::mul(x, sv);
                }
                S::store(row.add(t), x);
                t += lanes;
            }
            while t < end {
                let mut x = *row.add(t) * f;
                if two_steps {
                    x *= s;
                }
                *row.add(t) = x;
                t += 1;
            }
            kb = end;
        }
    }
}

/// Applies the block scales to a packed panel of FP8 units (`pack::ntp`):
/// `pack[kk * np + jj] *= scale(j0 + jj, k0 + kk) * 2^120`, which makes each
/// value exactly the dequantized weight `fp8::to_f32(code) * scale` (one
/// rounding of the same real number); scales of `2^8` or more take two exact
/// steps. Then the NaN codes of the panel's `nc` rows are written as NaN.
///
/// # Safety
/// `pack` valid for `kc * np` f32, `np` a multiple of `S::LANES` and at most
/// `PACK_NP`; `codes` (B's row `j0` at column `k0`) valid for `nc` rows of
/// `kc` (stride `ldb`); `k0` a multiple of [`F8_BLOCK`]; `S` available.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) unsafe fn scale_panel<S: Simd>(
    b: &F8Mat,
    codes: *const u8,
    ldb: usize,
    pack: *mut f32,
    (kc, np, nc): (usize, usize, usize),
    j0: usize,
    k0: usize,
) {
    let lanes = S::LANES;
    let mut first = [0f32; super::PACK_NP];
    let mut second = [1f32; super::PACK_NP];
    // SAFETY (whole body): pack offsets kk * np + v * lanes + lanes <= kc * np;
    // the scale rows hold PACK_NP >= np; code rows jj < nc, columns < kc.
    unsafe {
        let mut kb = 0;
        while kb < kc {
            let len = F8_BLOCK.min(kc - kb);
            let mut two_steps = false;
            for (jj, (f, s)) in first.iter_mut().zip(second.iter_mut()).enumerate().take(np) {
                let sc = if jj < nc {
                    b.scale_of(j0 + jj, k0 + kb)
                } else {
                    0.0
                };
                let folded = sc * TWO_120;
                (*f, *s) = if folded.is_finite() {
                    (folded, 1.0)
                } else {
                    two_steps = true;
                    (sc, TWO_120)
                };
            }
            for kk in kb..kb + len {
                let mut v = 0;
                while v < np {
                    let at = pack.add(kk * np + v);
                    let mut x = S::mul(S::load(at), S::load(first.as_ptr().add(v)));
                    if two_steps {
                        x = S::mul(x, S::load(second.as_ptr().add(v)));
                    }
                    S::store(at, x);
                    v += lanes;
                }
            }
            kb += len;
        }
        for jj in 0..nc {
            let row = core::slice::from_raw_parts(codes.add(jj * ldb), kc);
            if has_nan_code(row) {
                for (kk, &code) in row.iter().enumerate() {
                    if code & 0x7f == 0x7f {
                        *pack.add(kk * np + jj) = f32::NAN;
                    }
                }
            }
        }
    }
}

/// `C = A B^T` with B FP8 through dequantized panels (shapes checked by [`nt`]).
///
/// Per panel of `PANEL` rows of B by `KB` columns (dequantized row-major), the
/// f32 NT kernel computes `MI x PANEL` tiles of partial dot products, added to
/// `C` panel after panel in increasing `k`: the panels' bounds along k are
/// fixed (multiples of `KB`), so a value does not depend on the row split.
fn nt_panels(isa: Isa, a: &Mat<f32>, b: &F8Mat, c: &mut MatMut) -> bool {
    for i in 0..c.rows {
        if let Some(r) = c.row(i) {
            r.fill(0.0);
        }
    }
    let mut panel = [0f32; KB * PANEL];
    let mut tile = [0f32; MI * PANEL];
    let mut j0 = 0;
    while j0 < b.rows {
        let nj = PANEL.min(b.rows - j0);
        let mut k0 = 0;
        while k0 < b.cols {
            let nk = KB.min(b.cols - k0);
            for jj in 0..nj {
                prefetch_next(b, j0 + jj, k0 + nk, nj);
                let mut kb = 0;
                while kb < nk {
                    let len = F8_BLOCK.min(nk - kb);
                    let at = jj * nk + kb;
                    let Some(dst) = panel.get_mut(at..at + len) else {
                        return false;
                    };
                    if !b.dequant(j0 + jj, k0 + kb, dst) {
                        return false;
                    }
                    kb += len;
                }
            }
            let Some(bm) = panel.get(..nj * nk).and_then(|p| Mat::new(p, nj, nk, nk)) else {
                return false;
            };
            let mut i0 = 0;
            while i0 < a.rows {
                let mi = MI.min(a.rows - i0);
                let (Some(a_blk), Some(mut t)) = (
                    a.sub(i0, mi, k0, nk),
                    tile.get_mut(..mi * nj)
                        .and_then(|t| MatMut::new(t, mi, nj, nj)),
                ) else {
                    return false;
                };
                if !nt_typed(isa, &a_blk, &bm, &mut t, None, false) {
                    return false;
                }
                for i in 0..mi {
                    let (Some(dst), Some(src)) = (
                        c.row(i0 + i).and_then(|r| r.get_mut(j0..j0 + nj)),
                        tile.get(i * nj..(i + 1) * nj),
                    ) else {
                        return false;
                    };
                    dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
                }
                i0 += mi;
            }
            k0 += nk;
        }
        j0 += nj;
    }
    true
}

/// Prefetches (into L2) the codes of row `j` of `b` at columns `k ..
/// k + KB`, or, past the row's end, of row `j + nj` from its start: the
/// panel after the current one. Weights in FP8 are read 16 rows at a time,
/// which the hardware prefetchers do not foresee.
#[inline(always)]
fn prefetch_next(b: &F8Mat, j: usize, k: usize, nj: usize) {
    let (j, k) = if k < b.cols { (j, k) } else { (j + nj, 0) };
    prefetch(b, j, k, KB);
}

/// Prefetches (into L2) `len` codes of row `j` of `b` from column `k`.
#[inline(always)]
fn prefetch(b: &F8Mat, j: usize, k: usize, len: usize) {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        let base = b.e.codes().as_ptr();
        let mut t = 0;
        while t < len {
            // Addresses computed with wrapping arithmetic and never dereferenced.
            super::simd::prefetch_l2(base.wrapping_add(j.wrapping_mul(b.cols).wrapping_add(k + t)));
            t += 64;
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = (b, j, k, len);
}

/// `C += A B` with B FP8 (`A` m x kd f32, `B` kd x n, `C` m x n). False (and
/// nothing written) if the shapes disagree. On x86-64 and aarch64 the codes
/// are widened in registers ([`nn_tile`]) for the rows of A in range, unless
/// B holds a NaN code; otherwise dequantized panels.
pub(super) fn nn(isa: Isa, a: &Mat<f32>, b: &F8Mat, c: &mut MatMut) -> bool {
    if a.cols != b.rows || c.rows != a.rows || c.cols != b.cols {
        return false;
    }
    if a.rows == 0 || b.cols == 0 || b.rows == 0 {
        return true;
    }
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        let isa = usable(isa);
        let (kd, n) = (b.rows, b.cols);
        let Some(codes) = kd.checked_mul(n).and_then(|len| b.e.codes().get(..len)) else {
            return false;
        };
        if !has_nan_code(codes) {
            return by_runs(
                a,
                c,
                |c, i0, i1| {
                    let (Some(ar), Some(cr)) =
                        (a.sub(i0, i1 - i0, 0, kd), c.sub(i0, i1 - i0, 0, n))
                    else {
                        return false;
                    };
                    let p = F8Args {
                        a: ar.ptr(),
                        lda: ar.stride,
                        m: i1 - i0,
                        b,
                        codes: codes.as_ptr(),
                        c: cr.ptr,
                        ldc: cr.stride,
                    };
                    // SAFETY: rows i0..i1 of A and C (checked views), B's kd
                    // rows of n codes (the slice above); the ISA is usable.
                    unsafe { dispatch!(isa, f8_nn(&p)) };
                    true
                },
                |c, i| {
                    let (Some(ar), Some(mut cr)) = (a.sub(i, 1, 0, kd), c.sub(i, 1, 0, n)) else {
                        return false;
                    };
                    nn_panels(isa, &ar, b, &mut cr)
                },
            );
        }
    }
    nn_panels(isa, a, b, c)
}

/// FP8 NN micro-kernel: `C[i + r][j + v*L ..] += A_{i+r} B[.][j + v*L ..]`
/// for the `MR x NV`-vector tile at row `i`, column `j` of C (the tile inside
/// one 128-column scale block). Per scale block along k (blocks of the whole
/// tensor's rows: a view may start mid-block), vector accumulators sum
/// `(a * 2^64) * (code * 2^-120)` in increasing k; each block's sums go onto
/// C's values with one multiply-add by `scale * 2^56`.
///
/// # Safety
/// Built by [`nn`] (extents checked, no NaN code in B, rows of A in range);
/// `i + MR <= m`, `j + NV * LANES <= n` inside one scale block; `S` available.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
unsafe fn nn_tile<S: Simd, const MR: usize, const NV: usize>(p: &F8Args, i: usize, j: usize) {
    let lanes = S::LANES;
    let (kd, n) = (p.b.rows, p.b.cols);
    // SAFETY (whole body): A offsets r * lda + kk (r < MR, kk < kd), B offsets
    // kk * n + j + v * L + lane < kd * n, C offsets r * ldc + j + v * L + lane
    // (r < MR, j + NV * L <= n): inside the extents nn checked.
    unsafe {
        let (a, b, c) = (p.a.add(i * p.lda), p.codes.add(j), p.c.add(i * p.ldc + j));
        let mut total = [[S::zero(); NV]; MR];
        for (r, row) in total.iter_mut().enumerate() {
            for (v, x) in row.iter_mut().enumerate() {
                *x = S::load(c.add(r * p.ldc + v * lanes));
            }
        }
        let mut k0 = 0;
        while k0 < kd {
            // The end of the tensor's scale block that row k0 is in.
            let in_block = F8_BLOCK - p.b.row0.wrapping_add(k0) % F8_BLOCK;
            let k1 = kd.min(k0 + in_block);
            let mut acc = [[S::zero(); NV]; MR];
            for kk in k0..k1 {
                let mut b_vecs = [S::zero(); NV];
                for (v, x) in b_vecs.iter_mut().enumerate() {
                    *x = S::load_e4m3(b.add(kk * n + v * lanes));
                }
                for (r, row) in acc.iter_mut().enumerate() {
                    let a_elem = S::splat(*a.add(r * p.lda + kk) * TWO_64);
                    for (x, &b_vec) in row.iter_mut().zip(b_vecs.iter()) {
                        *x = S::fma(a_elem, b_vec, *x);
                    }
                }
            }
            let s = p.b.scale_of(k0, j);
            let folded = s * TWO_56;
            for (tot, sums) in total.iter_mut().zip(acc.iter()) {
                for (x, &sum) in tot.iter_mut().zip(sums.iter()) {
                    *x = if folded.is_finite() {
                        S::fma(sum, S::splat(folded), *x)
                    } else {
                        S::fma(S::mul(sum, S::splat(TWO_56)), S::splat(s), *x)
                    };
                }
            }
            k0 = k1;
        }
        for (r, row) in total.iter().enumerate() {
            for (v, &x) in row.iter().enumerate() {
                S::store(c.add(r * p.ldc + v * lanes), x);
            }
        }
    }
}

/// The in-register FP8 NN driver: columns in blocks of `NV` vectors (inside
/// a scale block: `NV * LANES` divides 128), then of one vector, each over
/// the rows of A in `MR`-row tiles then one by one; the last `n % LANES`
/// columns element by element (dequantized weights, in increasing k).
///
/// # Safety
/// As [`nn_tile`] for the whole of `p`.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
pub(super) unsafe fn nn_tiles<S: Simd, const MR: usize, const NV: usize>(p: &F8Args) {
    let lanes = S::LANES;
    let (kd, n) = (p.b.rows, p.b.cols);
    let n_vec = n - n % lanes;
    // SAFETY: column tiles stay below n_vec <= n and inside a scale block
    // (F8_BLOCK a multiple of NV * LANES, tiles start at multiples of it);
    // rows below m; the tail reads rows < m of A, kd of B, columns < n.
    unsafe {
        let mut j = 0;
        while j + NV * lanes <= n_vec && (j % F8_BLOCK) + NV * lanes <= F8_BLOCK {
            let mut i = 0;
            while i + MR <= p.m {
                nn_tile::<S, MR, NV>(p, i, j);
                i += MR;
            }
            while i < p.m {
                nn_tile::<S, 1, NV>(p, i, j);
                i += 1;
            }
            j += NV * lanes;
        }
        while j < n_vec {
            let mut i = 0;
            while i + MR <= p.m {
                nn_tile::<S, MR, 1>(p, i, j);
                i += MR;
            }
            while i < p.m {
                nn_tile::<S, 1, 1>(p, i, j);
                i += 1;
            }
            j += lanes;
        }
        for i in 0..p.m {
            for jj in n_vec..n {
                let cp = p.c.add(i * p.ldc + jj);
                let mut s = *cp;
                for kk in 0..kd {
                    let w = crate::fp8::to_f32(*p.codes.add(kk * n + jj)) * p.b.scale_of(kk, jj);
                    s += *p.a.add(i * p.lda + kk) * w;
                }
                *cp = s;
            }
        }
    }
}

/// `C += A B` with B FP8 through dequantized panels (shapes checked by [`nn`]).
fn nn_panels(isa: Isa, a: &Mat<f32>, b: &F8Mat, c: &mut MatMut) -> bool {
    let mut panel = [0f32; F8_BLOCK * PANEL];
    let mut k0 = 0;
    while k0 < b.rows {
        let nk = PANEL.min(b.rows - k0);
        let mut j0 = 0;
        while j0 < b.cols {
            let nj = F8_BLOCK.min(b.cols - j0);
            for kk in 0..nk {
                // The same columns PANEL rows on (the next panel along k).
                prefetch(b, k0 + kk + PANEL, j0, nj);
                let Some(dst) = panel.get_mut(kk * nj..(kk + 1) * nj) else {
                    return false;
                };
                if !b.dequant(k0 + kk, j0, dst) {
                    return false;
                }
            }
            let (Some(a_blk), Some(bm), Some(mut c_blk)) = (
                a.sub(0, a.rows, k0, nk),
                panel.get(..nk * nj).and_then(|p| Mat::new(p, nk, nj, nj)),
                c.sub(0, c.rows, j0, nj),
            ) else {
                return false;
            };
            if !nn_typed(isa, &a_blk, &bm, &mut c_blk) {
                return false;
            }
            j0 += nj;
        }
        k0 += nk;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::super::test_util::isas_here;
    use super::super::{
        gemm_nn_with, gemm_nt_packed, isa, Isa, Mat, MatE, MatMut, PACK_LEN, PACK_MIN_ROWS,
    };
    use crate::dtype::Elems;
    use crate::fp8;
    use crate::weights::Tensor;

    /// A deterministic `[rows][cols]` FP8 tensor: codes from a hash (no NaN
    /// codes), scales varying per block; and its dequantized f32 copy.
    fn tensor(rows: usize, cols: usize) -> (Vec<u8>, Vec<f32>, Vec<f32>) {
        let codes: Vec<u8> = (0..rows * cols)
            .map(|i| {
                let c = ((i as u32).wrapping_mul(2_654_435_761) >> 24) as u8;
                if c & 0x7f == 0x7f {
                    0x3f
                } else {
                    c
                }
            })
            .collect();
        let (br, bc) = (rows.div_ceil(128), cols.div_ceil(128));
        let scales: Vec<f32> = (0..br * bc).map(|b| 0.001 * (b as f32 + 1.5)).collect();
        let deq = (0..rows * cols)
            .map(|g| fp8::to_f32(codes[g]) * scales[(g / cols / 128) * bc + (g % cols) / 128])
            .collect();
        (codes, scales, deq)
    }

    fn close(a: &[f32], b: &[f32]) {
        let m = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let e = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(e <= 1e-5 * m.max(1e-30), "max error {e} of {m}");
    }

    /// Rows not starting on a block boundary (37..), edge blocks (300 x 200):
    /// both products equal the f32 products on the dequantized weights.
    #[test]
    #[cfg_attr(miri, ignore)]
    fn f8_products_match_dequantized_f32() {
        let (rows, cols) = (300, 200);
        let (codes, scales, deq) = tensor(rows, cols);
        let t8 = Tensor::f8(&codes, &scales, rows, cols).unwrap();
        let t32 = Tensor::f32(&deq, rows, cols).unwrap();
        let mut w = vec![0f32; rows * cols];
        t8.data.widen_into(&mut w);
        assert_eq!(w, deq, "widen_into dequantizes exactly");
        let (r0, nr) = (37, 150);
        let b8 = MatE::tensor_rows(&t8, r0, nr).unwrap();
        let b32 = MatE::tensor_rows(&t32, r0, nr).unwrap();
        assert!(matches!(b8, MatE::F8(_)));
        for m in [1, 5, 20] {
            let x: Vec<f32> = (0..m * cols)
                .map(|i| ((i * 7 % 23) as f32 - 11.0) * 0.1)
                .collect();
            let a = Mat::new(&x, m, cols, cols).unwrap();
            let (mut y8, mut y32) = (vec![0f32; m * nr], vec![0f32; m * nr]);
            assert!(gemm_nt_packed(
                isa(),
                &a,
                &b8,
                &mut MatMut::new(&mut y8, m, nr, nr).unwrap(),
                None
            ));
            assert!(gemm_nt_packed(
                isa(),
                &a,
                &b32,
                &mut MatMut::new(&mut y32, m, nr, nr).unwrap(),
                None
            ));
            close(&y8, &y32);
            // C += A B with B the nr x cols rows (k = nr).
            let xa: Vec<f32> = (0..m * nr)
                .map(|i| ((i * 5 % 17) as f32 - 8.0) * 0.1)
                .collect();
            let a = Mat::new(&xa, m, nr, nr).unwrap();
            let (mut z8, mut z32) = (vec![1f32; m * cols], vec![1f32; m * cols]);
            assert!(gemm_nn_with(
                isa(),
                &a,
                &b8,
                &mut MatMut::new(&mut z8, m, cols, cols).unwrap()
            ));
            assert!(gemm_nn_with(
                isa(),
                &a,
                &b32,
                &mut MatMut::new(&mut z32, m, cols, cols).unwrap()
            ));
            close(&z8, &z32);
        }
        // Shapes that disagree are refused, nothing written.
        let x = [0f32; 7];
        let a = Mat::new(&x, 1, 7, 7).unwrap();
        let mut y = [9f32; 150];
        assert!(!gemm_nt_packed(
            isa(),
            &a,
            &b8,
            &mut MatMut::new(&mut y, 1, 150, 150).unwrap(),
            None
        ));
        assert_eq!(y, [9f32; 150]);
    }

    /// Every ISA here widens all 256 codes (NaN codes aside) to exactly
    /// `fp8::to_f32(code) * 2^-120`, and so does the element's `widen`.
    #[test]
    #[cfg_attr(miri, ignore)]
    fn e4m3_load_widens_every_code_on_every_isa() {
        use super::super::simd::{E4m3, Elem, E4M3_UNIT};
        let codes: Vec<u8> = (0..=255u8).collect();
        for isa in isas_here() {
            let mut out = vec![0f32; 256];
            // SAFETY: 256 bytes and 256 f32 (a multiple of every ISA's lanes);
            // the ISA is supported here.
            unsafe {
                super::super::dispatch::dispatch!(
                    isa,
                    widen_e4m3(codes.as_ptr(), out.as_mut_ptr(), 256)
                )
            };
            for (&c, &v) in codes.iter().zip(&out) {
                if c & 0x7f == 0x7f {
                    continue;
                }
                let want = fp8::to_f32(c) * E4M3_UNIT;
                assert_eq!(v.to_bits(), want.to_bits(), "{isa:?} code {c:#04x}");
                assert_eq!(E4m3(c).widen().to_bits(), want.to_bits(), "widen {c:#04x}");
            }
        }
    }

    /// The in-register and packed paths at small sizes (cheap enough for
    /// Miri, which checks their pointer arithmetic): 3 rows of B starting at
    /// row 127 (across a scale block) by 133 columns (a block and a tail).
    #[test]
    fn f8_paths_small() {
        let (rows, cols) = (131, 133);
        let (codes, scales, deq) = tensor(rows, cols);
        let t8 = Tensor::f8(&codes, &scales, rows, cols).unwrap();
        let t32 = Tensor::f32(&deq, rows, cols).unwrap();
        let b8 = MatE::tensor_rows(&t8, 127, 3).unwrap();
        let b32 = MatE::tensor_rows(&t32, 127, 3).unwrap();
        let isa = isa();
        let x = super::super::test_util::rand(PACK_MIN_ROWS * cols, 1);
        for (m, pack) in [(1, false), (2, false), (PACK_MIN_ROWS, true)] {
            let x = &x[..m * cols];
            let (got, want) = (
                nt(isa, x, m, cols, &b8, pack),
                nt(isa, x, m, cols, &b32, pack),
            );
            if pack {
                assert!(bits_eq(&got, &want), "packed: the dequantized weights");
            } else {
                close_ctx(&got, &want, &format!("m {m}"));
            }
        }
        let xa = super::super::test_util::rand(2 * 3, 2);
        for m in [1, 2] {
            let (got, want) = (
                nn(isa, &xa[..m * 3], m, &b8),
                nn(isa, &xa[..m * 3], m, &b32),
            );
            close_ctx(&got, &want, &format!("nn m {m}"));
        }
    }

    /// `rows` x `cols` FP8 tensor with the scales of [`tensor`] times `mul`.
    fn tensor_scaled(rows: usize, cols: usize, mul: f32) -> (Vec<u8>, Vec<f32>, Vec<f32>) {
        let (codes, scales, _) = tensor(rows, cols);
        let scales: Vec<f32> = scales.iter().map(|s| s * mul).collect();
        let bc = cols.div_ceil(128);
        let deq = (0..rows * cols)
            .map(|g| fp8::to_f32(codes[g]) * scales[(g / cols / 128) * bc + (g % cols) / 128])
            .collect();
        (codes, scales, deq)
    }

    /// `C = A B^T` on `isa`, packing when `pack` (a `PACK_LEN` scratch; an
    /// f32 B too, on every ISA).
    fn nt(isa: Isa, x: &[f32], m: usize, k: usize, b: &MatE, pack: bool) -> Vec<f32> {
        let n = b.rows();
        let a = Mat::new(x, m, k, k).unwrap();
        let mut y = vec![f32::NAN; m * n];
        let mut scratch = vec![0f32; PACK_LEN];
        assert!(super::super::nt_with_pack(
            isa,
            &a,
            b,
            &mut MatMut::new(&mut y, m, n, n).unwrap(),
            pack.then_some(&mut scratch[..]),
            true
        ));
        y
    }

    /// The in-register paths on every ISA here, at edge shapes (300 x 200:
    /// edge blocks along both dims; views starting mid-block, at 0 and at a
    /// block; rows of A around the tiles; k not a multiple of the lanes):
    /// within 1e-5 of the f32 product on the dequantized weights; the packed
    /// path equal to it bit for bit; one row of A (mat-vec tiles) giving the
    /// same bits as inside a batch (batched tiles); the rows of B split in
    /// two changing no bit. Large scales (2^8, 2^72 and up) take their exact
    /// steps. Rows of 2100 and 8300 codes are too long for the stack buffer
    /// of A scaled ahead (`SCALED_LEN`) with several rows and with one: those
    /// tiles scale A in registers.
    #[test]
    #[cfg_attr(miri, ignore)]
    fn f8_in_register_paths_all_isas() {
        const M: usize = if PACK_MIN_ROWS > 20 {
            PACK_MIN_ROWS
        } else {
            20
        };
        const _: () = assert!(8300 > super::SCALED_LEN && 2100 * 4 > super::SCALED_LEN);
        for (rows, cols, mul) in [
            (300, 200, 1.0),
            (300, 203, 1.0),
            (260, 131, 1e3),
            (140, 260, 1e22),
            (140, 2100, 1.0),
            (130, 8300, 1.0),
        ] {
            let (codes, scales, deq) = tensor_scaled(rows, cols, mul);
            let t8 = Tensor::f8(&codes, &scales, rows, cols).unwrap();
            let t32 = Tensor::f32(&deq, rows, cols).unwrap();
            for isa in isas_here() {
                for (r0, nr) in [(37, 150), (0, rows), (128, 11), (5, 1), (130, 9)] {
                    let nr = nr.min(rows - r0);
                    let b8 = MatE::tensor_rows(&t8, r0, nr).unwrap();
                    let b32 = MatE::tensor_rows(&t32, r0, nr).unwrap();
                    let x = super::super::test_util::rand(M * cols, (r0 * 31 + nr) as u64);
                    let xn = super::super::test_util::rand(M * nr, nr as u64 + 3);
                    let ones: Vec<Vec<f32>> = (0..M)
                        .map(|i| nt(isa, &x[i * cols..(i + 1) * cols], 1, cols, &b8, false))
                        .collect();
                    for m in [1, 2, 3, 4, 5, 9, 15, 16, 20, PACK_MIN_ROWS] {
                        let x = &x[..m * cols];
                        let want = nt(isa, x, m, cols, &b32, false);
                        let got = nt(isa, x, m, cols, &b8, false);
                        let ctx = format!("{isa:?} {rows}x{cols} s*{mul} rows {r0}+{nr} m {m}");
                        close_ctx(&got, &want, &ctx);
                        for i in 0..m {
                            assert!(
                                bits_eq(&got[i * nr..(i + 1) * nr], &ones[i]),
                                "{ctx}: row {i} differs from its mat-vec"
                            );
                        }
                        if m >= PACK_MIN_ROWS {
                            // The FP8 weights and their dequantized f32 in the
                            // same form: both packed, or where FP8 rows are
                            // dequantized for the f32 tiles (`widens`), the
                            // f32 tiles.
                            let widened = super::super::isa::widens(isa, cols, PACK_LEN);
                            let want = nt(isa, x, m, cols, &b32, !widened);
                            let got = nt(isa, x, m, cols, &b8, true);
                            assert!(bits_eq(&got, &want), "{ctx}: packed != dequantized packed");
                        }
                        // C += A B (k = the view's rows, starting mid-block).
                        let xa = &xn[..m * nr];
                        let want = nn(isa, xa, m, &b32);
                        let got = nn(isa, xa, m, &b8);
                        close_ctx(&got, &want, &format!("{ctx} nn"));
                        for i in 0..m {
                            let one = nn(isa, &xa[i * nr..(i + 1) * nr], 1, &b8);
                            assert!(
                                bits_eq(&got[i * cols..(i + 1) * cols], &one),
                                "{ctx}: nn row {i} differs from its 1-row product"
                            );
                        }
                        // Rows of B in two parts (as linear_par splits them).
                        let cut = nr / 2;
                        for pack in [false, true] {
                            let whole = nt(isa, x, m, cols, &b8, pack);
                            for (j0, nj) in [(0, cut), (cut, nr - cut)] {
                                if nj == 0 {
                                    continue;
                                }
                                let part = MatE::tensor_rows(&t8, r0 + j0, nj).unwrap();
                                let y = nt(isa, x, m, cols, &part, pack);
                                for i in 0..m {
                                    assert!(
                                        bits_eq(
                                            &y[i * nj..(i + 1) * nj],
                                            &whole[i * nr + j0..i * nr + j0 + nj]
                                        ),
                                        "{ctx} pack {pack}: split at {cut} changed row {i}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// A NaN code makes its row's outputs NaN on every path (as the
    /// dequantized weights do), and only those; rows of A too large or too
    /// small for the in-register path take the dequantized panels and agree
    /// with the f32 product.
    #[test]
    #[cfg_attr(miri, ignore)]
    fn f8_nan_codes_and_extreme_activations() {
        let (rows, cols) = (40, 300);
        let (mut codes, scales, _) = tensor(rows, cols);
        codes[7 * cols + 250] = 0xff;
        codes[21 * cols + 3] = 0x7f;
        let t8 = Tensor::f8(&codes, &scales, rows, cols).unwrap();
        let mut deq = vec![0f32; rows * cols];
        t8.data.widen_into(&mut deq);
        let t32 = Tensor::f32(&deq, rows, cols).unwrap();
        let b8 = MatE::tensor_rows(&t8, 0, rows).unwrap();
        let b32 = MatE::tensor_rows(&t32, 0, rows).unwrap();
        for isa in isas_here() {
            for (m, pack) in [(1, false), (5, false), (17, true)] {
                let mut x = super::super::test_util::rand(m * cols, m as u64);
                let y = nt(isa, &x, m, cols, &b8, pack);
                for i in 0..m {
                    for j in 0..rows {
                        let v = y[i * rows + j];
                        assert_eq!(
                            v.is_nan(),
                            j == 7 || j == 21,
                            "{isa:?} m {m} [{i}][{j}] = {v}"
                        );
                    }
                }
                // C += A B over B's 40 rows: NaN at columns 250 and 3 only
                // (a NaN code sends the whole product to the panels).
                let xa = super::super::test_util::rand(m * rows, 9);
                let z = nn(isa, &xa, m, &b8);
                for i in 0..m {
                    for j in 0..cols {
                        let v = z[i * cols + j];
                        assert_eq!(
                            v.is_nan(),
                            j == 250 || j == 3,
                            "{isa:?} nn m {m} [{i}][{j}]"
                        );
                    }
                }
                // Extreme rows of A (one huge, one tiny): the panels.
                x[..cols].iter_mut().for_each(|v| *v *= 1e30);
                if m > 1 {
                    x[cols..2 * cols].iter_mut().for_each(|v| *v *= 1e-30);
                }
                let got = nt(isa, &x, m, cols, &b8, false);
                let want = nt(isa, &x, m, cols, &b32, false);
                for i in 0..m {
                    let (g, w) = (
                        &got[i * rows..(i + 1) * rows],
                        &want[i * rows..(i + 1) * rows],
                    );
                    let keep = |v: &[f32]| -> Vec<f32> {
                        v.iter()
                            .enumerate()
                            .filter(|(j, _)| *j != 7 && *j != 21)
                            .map(|(_, &x)| x)
                            .collect()
                    };
                    close_ctx(&keep(g), &keep(w), &format!("{isa:?} m {m} row {i}"));
                }
                // And in C += A B (B without NaN codes: rows 0..7).
                let clean = MatE::tensor_rows(&t8, 0, 7).unwrap();
                let clean32 = MatE::tensor_rows(&t32, 0, 7).unwrap();
                let mut xa = super::super::test_util::rand(m * 7, 5);
                xa[..7].iter_mut().for_each(|v| *v *= 1e30);
                if m > 1 {
                    xa[7..14].iter_mut().for_each(|v| *v *= 1e-30);
                }
                let got = nn(isa, &xa, m, &clean);
                let want = nn(isa, &xa, m, &clean32);
                for i in 0..m {
                    let r = i * cols..(i + 1) * cols;
                    close_ctx(
                        &got[r.clone()],
                        &want[r],
                        &format!("{isa:?} nn m {m} row {i}"),
                    );
                }
            }
        }
    }

    /// `C += A B` on `isa` (`A` m x b.rows, C starting at 0.25).
    fn nn(isa: Isa, x: &[f32], m: usize, b: &MatE) -> Vec<f32> {
        let (k, n) = (b.rows(), b.cols());
        let a = Mat::new(x, m, k, k).unwrap();
        let mut y = vec![0.25f32; m * n];
        assert!(gemm_nn_with(
            isa,
            &a,
            b,
            &mut MatMut::new(&mut y, m, n, n).unwrap()
        ));
        y
    }

    fn bits_eq(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
    }

    fn close_ctx(a: &[f32], b: &[f32], ctx: &str) {
        let m = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let e = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            e <= 1e-5 * m.max(1e-30) && e.is_finite(),
            "{ctx}: max error {e} of {m}"
        );
    }

    /// A run that does not start a row, or a view of other column count, is no
    /// F8 matrix view; slices keep the scale indexing of the whole tensor.
    #[test]
    fn f8_views_are_whole_rows() {
        let (codes, scales, deq) = tensor(130, 3);
        let t = Tensor::f8(&codes, &scales, 130, 3).unwrap();
        assert!(MatE::new(t.data.slice(1, 6).unwrap(), 2, 3, 3).is_none());
        assert!(MatE::new(t.data, 195, 2, 2).is_none());
        assert!(MatE::new(t.data, 130, 3, 4).is_none());
        let Some(Elems::F8(f)) = t.data.slice(127 * 3 + 1, 5) else {
            panic!("an f8 slice")
        };
        let mut v = [0f32; 5];
        f.dequantize_into(&mut v);
        assert_eq!(v[..], deq[127 * 3 + 1..127 * 3 + 6]);
    }
}
