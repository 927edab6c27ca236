//! The packed NT product of prefill, `C (m x n) = A (m x k) . B (n x k)^T` for
//! many rows of A: B is copied (widened to f32) panel by panel into scratch,
//! k-major, so that the micro-kernel broadcasts elements of A against whole
//! vectors of the panel.
//!
//! Blocking, outside in: rows of A in blocks whose `PACK_KC`-wide slice stays
//! in L2; k in slices of [`PACK_KC`]; columns of C in panels of `NV * LANES`
//! (at most [`PACK_NP`]); rows of A in `MR`-row tiles. Every `C[i][j]` is the
//! sum of `A[i][t] B[j][t]` added in increasing `t` (fused where the ISA has
//! FMA), whatever the tile, block or split of B.

use super::isa::{PACK_KC, PACK_NP};

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use super::{
    ceil_div,
    gemm::{broadcast_fma, GemmArgs},
    isa::{CACHE_LINE, NT_A_BLOCK_BYTES},
    mat::F8Mat,
    simd::{prefetch_l2, Elem, Simd},
};

/// f32 of scratch a [`gemm_nt_packed`](super::gemm_nt_packed) call with depth
/// `k` needs: one panel, [`PACK_NP`] columns by `min(k, PACK_KC)`.
pub const fn pack_len(k: usize) -> usize {
    PACK_NP * if k < PACK_KC { k } else { PACK_KC }
}

/// One packed panel and what the tiles need of it: A's k-slice, the panel,
/// and C's column block.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
struct Panel {
    /// `A[0][k0]`: rows of `kc` (stride `lda`).
    a: *const f32,
    lda: usize,
    /// The packed panel, `kc x np` (k-major, contiguous).
    pack: *const f32,
    kc: usize,
    /// `C[0][j0]`: rows of `nc` columns (stride `ldc`).
    c: *mut f32,
    ldc: usize,
    nc: usize,
    /// First k-slice: C is written, not accumulated onto.
    first: bool,
}

/// Packed micro-kernel: rows `i .. i + MR` of C in the panel's columns, an
/// `MR x NV`-vector tile: `C[r][j] (+)= sum_kk A[r][kk] * P[kk][j]`
/// ([`broadcast_fma`] against the panel), onto `C` (or onto 0 on the first
/// k-slice); only the first `nc` columns of `C` are touched.
///
/// Operands: `A` is `MR x kc` (f32), the panel `P` is `kc x NV*L` (f32), `C`
/// is `MR x nc`.
///
/// # Safety
/// Rows `i .. i + MR` are inside the extents `panel` was built from;
/// `nc <= NV * LANES <= PACK_NP`; the panel holds `kc * NV * LANES` f32; `S`
/// available.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
unsafe fn ntp_tile<S: Simd, const MR: usize, const NV: usize>(panel: &Panel, i: usize) {
    let lanes = S::LANES;
    let np = NV * lanes;
    let (nc, full) = (panel.nc, panel.nc == np);
    // A partial tile goes through this row buffer (columns past nc are 0).
    let mut row_buf = [0f32; PACK_NP];
    // SAFETY (whole body): rows i + r < i + MR, columns < nc (C, via row_buf
    // when partial) or np (pack), kk < kc: inside the caller's extents;
    // row_buf holds PACK_NP >= np.
    unsafe {
        let c = panel.c.add(i * panel.ldc);
        let mut acc = [[S::zero(); NV]; MR];
        if !panel.first {
            for (r, row) in acc.iter_mut().enumerate() {
                let c_row = c.add(r * panel.ldc);
                if full {
                    for (v, x) in row.iter_mut().enumerate() {
                        *x = S::load(c_row.add(v * lanes));
                    }
                } else {
                    for (j, t) in row_buf.iter_mut().enumerate().take(np) {
                        *t = if j < nc { *c_row.add(j) } else { 0.0 };
                    }
                    for (v, x) in row.iter_mut().enumerate() {
                        *x = S::load(row_buf.as_ptr().add(v * lanes));
                    }
                }
            }
        }
        let a = panel.a.add(i * panel.lda);
        broadcast_fma::<S, f32, MR, NV>(&mut acc, a, panel.lda, 1, panel.pack, np, panel.kc);
        for (r, row) in acc.iter().enumerate() {
            let c_row = c.add(r * panel.ldc);
            if full {
                for (v, &x) in row.iter().enumerate() {
                    S::store(c_row.add(v * lanes), x);
                }
            } else {
                for (v, &x) in row.iter().enumerate() {
                    S::store(row_buf.as_mut_ptr().add(v * lanes), x);
                }
                for (j, &t) in row_buf.iter().enumerate().take(nc) {
                    *c_row.add(j) = t;
                }
            }
        }
    }
}

/// Rows `i ..` of C in `ROWS`-row tiles of [`ntp_tile`] while they fit below
/// `i1`; returns the first row not done.
///
/// # Safety
/// As [`ntp_tile`] for every row below `i1`.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
unsafe fn ntp_tiles<S: Simd, const ROWS: usize, const NV: usize>(
    panel: &Panel,
    mut i: usize,
    i1: usize,
) -> usize {
    while i + ROWS <= i1 {
        // SAFETY: rows i .. i + ROWS <= i1 (caller's extents).
        unsafe { ntp_tile::<S, ROWS, NV>(panel, i) };
        i += ROWS;
    }
    i
}

/// Prefetches the rows of B of the next panel into L2, a few cache lines
/// before each tile of the current panel (spread evenly over its tiles).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
struct NextPanel<E> {
    /// `B[j0 + nc][k0]`: the first row of the next panel, at this k-slice.
    b: *const E,
    ldb: usize,
    lines_per_row: usize,
    lines_total: usize,
    lines_per_tile: usize,
    lines_done: usize,
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
impl<E> NextPanel<E> {
    /// The next `lines_per_tile` lines (fewer at the end).
    ///
    /// # Safety
    /// `b` and the `lines_total / lines_per_row` rows of `kc` elements from it
    /// lie inside B (`lines_per_row` = the cache lines of `kc` elements).
    #[inline(always)]
    unsafe fn prefetch_for_one_tile(&mut self) {
        for _ in 0..self.lines_per_tile.min(self.lines_total - self.lines_done) {
            let (row, line) = (
                self.lines_done / self.lines_per_row,
                self.lines_done % self.lines_per_row,
            );
            // SAFETY: row < the rows of the next panel and line * CACHE_LINE
            // < kc * size_of::<E>(): inside B (caller).
            let ptr = unsafe {
                self.b
                    .add(row * self.ldb)
                    .cast::<u8>()
                    .add(line * CACHE_LINE)
            };
            prefetch_l2(ptr);
            self.lines_done += 1;
        }
    }
}

/// Packs one panel: `pack[kk * np + jj] = B[jj][kk]` (widened) for `kk < kc`
/// and `jj < np`, where `b` points at `B[0][0]` of the panel (row stride `ldb`)
/// and rows `jj >= nc` are zero. Transposes in `LANES x LANES` blocks (in
/// registers where the ISA has a transpose); ragged edges element by element.
///
/// # Safety
/// `b` valid for `nc` rows of `kc` (stride `ldb`); `pack` for `kc * np` f32;
/// `np` a multiple of `S::LANES`; `S` available.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
unsafe fn pack_panel<S: Simd, E: Elem>(
    b: *const E,
    ldb: usize,
    kc: usize,
    nc: usize,
    np: usize,
    pack: *mut f32,
) {
    let lanes = S::LANES;
    // SAFETY (whole body): source rows jj + r < nc only (others are written as
    // 0, not read), columns kb + t < kc; destination offsets below kc * np.
    unsafe {
        let mut kb = 0;
        while kb < kc {
            let kn = lanes.min(kc - kb);
            let mut jj = 0;
            while jj < np {
                let dst = pack.add(kb * np + jj);
                // Wrapping: rows past nc may lie past the end of B (never read).
                let src = b.wrapping_add(jj * ldb + kb);
                if kn == lanes && jj + lanes <= nc {
                    S::transpose::<E>(src, ldb, dst, np);
                } else {
                    for r in 0..lanes {
                        for t in 0..kn {
                            *dst.add(t * np + r) = if jj + r < nc {
                                (*src.add(r * ldb + t)).widen()
                            } else {
                                0.0
                            };
                        }
                    }
                }
                jj += lanes;
            }
            kb += kn;
        }
    }
}

/// Packed NT driver (see the module documentation), `MR x NV`-vector tiles of
/// [`ntp_tile`]; edge rows in tiles of 4 (when `MR > 4`), then 1. While a
/// panel's tiles run, the next panel's rows of B are prefetched into L2, spread
/// evenly over the tiles. With `f8` (B's codes as [`E4m3`](super::simd::E4m3)
/// units) each packed panel gets its block scales
/// ([`scale_panel`](super::f8::scale_panel)): the panel then holds the
/// dequantized weights exactly.
///
/// # Safety
/// Extents checked by the builder of `p`; `pack` valid for `pack_len(k)` f32;
/// `NV * LANES <= PACK_NP`; `S` available; with `f8`, `p.b` is its codes (`n`
/// rows of `k`).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
pub(super) unsafe fn ntp<S: Simd, E: Elem, const MR: usize, const NV: usize>(
    p: &GemmArgs<E>,
    pack: *mut f32,
    f8: Option<&F8Mat>,
) {
    let np = NV * S::LANES;
    // Rows of A per block: their k-slice (PACK_KC wide) stays in L2 while every
    // panel of B is swept over it.
    let most = (NT_A_BLOCK_BYTES / (PACK_KC * core::mem::size_of::<f32>())).max(MR);
    let rows_per_block = ceil_div(ceil_div(p.m, ceil_div(p.m, most)), MR) * MR;
    // SAFETY (whole body): i < m, j0 + jj < n (or padding), k0 + kk < k: inside
    // the checked extents; pack offsets kk * np + jj < min(k, PACK_KC) * np <= pack_len(k).
    unsafe {
        let mut i0 = 0;
        while i0 < p.m {
            let i1 = p.m.min(i0 + rows_per_block);
            let mut k0 = 0;
            while k0 < p.k {
                let kc = PACK_KC.min(p.k - k0);
                let first = k0 == 0;
                let mut j0 = 0;
                while j0 < p.n {
                    let nc = np.min(p.n - j0);
                    pack_panel::<S, E>(p.b.add(j0 * p.ldb + k0), p.ldb, kc, nc, np, pack);
                    if let Some(f8) = f8 {
                        let codes = p.b.add(j0 * p.ldb + k0).cast::<u8>();
                        let dims = (kc, np, nc);
                        super::f8::scale_panel::<S>(f8, codes, p.ldb, pack, dims, j0, k0);
                    }
                    let panel = Panel {
                        a: p.a.add(k0),
                        lda: p.lda,
                        pack,
                        kc,
                        c: p.c.add(j0),
                        ldc: p.ldc,
                        nc,
                        first,
                    };
                    let lines_per_row =
                        (kc * core::mem::size_of::<E>().max(1)).div_ceil(CACHE_LINE);
                    let lines_total = np.min(p.n - j0 - nc) * lines_per_row;
                    // Wrapping: after the last panel this points past B (unused).
                    let mut next = NextPanel {
                        b: p.b.wrapping_add((j0 + nc) * p.ldb + k0),
                        ldb: p.ldb,
                        lines_per_row,
                        lines_total,
                        lines_per_tile: lines_total.div_ceil(((i1 - i0) / MR).max(1)),
                        lines_done: 0,
                    };
                    let mut i = i0;
                    while i + MR <= i1 {
                        next.prefetch_for_one_tile();
                        ntp_tile::<S, MR, NV>(&panel, i);
                        i += MR;
                    }
                    if MR > 4 {
                        i = ntp_tiles::<S, 4, NV>(&panel, i, i1);
                    }
                    ntp_tiles::<S, 1, NV>(&panel, i, i1);
                    j0 += nc;
                }
                k0 += kc;
            }
            i0 = i1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{cartesian, edges, test_a_kernel, Layout};
    use super::super::{nt_with_pack, MatMut, PACK_KC, PACK_LEN, PACK_MIN_ROWS};

    /// The packed product (prefill) on every ISA here: rows of A around the
    /// tile (from `PACK_MIN_ROWS` up), columns around the panel width, k
    /// around the lanes and the `PACK_KC` slices; f32, bf16 and f16 B against
    /// f64; and splitting the rows of B (as `linear_par` does) changes no bit.
    #[test]
    #[cfg_attr(miri, ignore)]
    fn packed_gemm_all_isas() {
        let mut pack = vec![0f32; PACK_LEN];
        test_a_kernel(
            "packed",
            Layout::Nt,
            |t, lanes| {
                let mr = t.pack_mr;
                let ms: Vec<usize> = [0, 1, mr - 1, mr, mr + 1]
                    .iter()
                    .map(|e| PACK_MIN_ROWS + e)
                    .collect();
                let np = t.pack_nv * lanes;
                let mut shapes = cartesian(&ms, &edges(np), &[1, lanes + 1]);
                // Two k-slices (the second onto the first): fewer shapes, long k.
                let m_ends = [PACK_MIN_ROWS, PACK_MIN_ROWS + mr + 1];
                shapes.extend(cartesian(&m_ends, &[1, np + 1, 2 * np + 2], &[PACK_KC + 1]));
                shapes.extend([(32, 1, 1), (33, 70, 300), (45, 65, 16), (56, 129, 513)]);
                shapes
            },
            |case, c| {
                let (isa, m, n, k) = (case.isa, case.m, case.n, case.k);
                assert!(m >= PACK_MIN_ROWS, "a shape that would not pack");
                let a = case.a_rows(0, m);
                assert!(nt_with_pack(
                    isa,
                    &a,
                    &case.b_rows(0, n),
                    c,
                    Some(&mut pack),
                    true
                ));
                // The rows of B in two parts: the same bits.
                let cut = n / 2;
                let mut split = vec![0f32; m * n];
                for (j0, nj) in [(0, cut), (cut, n - cut)] {
                    if nj == 0 {
                        continue;
                    }
                    let mut part = MatMut::new(&mut split[j0..], m, nj, n).unwrap();
                    let b = case.b_rows(j0, nj);
                    assert!(nt_with_pack(isa, &a, &b, &mut part, Some(&mut pack), true));
                }
                for i in 0..m {
                    let whole = c.row(i).unwrap();
                    let parts = &split[i * n..(i + 1) * n];
                    assert!(
                        whole
                            .iter()
                            .zip(parts)
                            .all(|(x, y)| x.to_bits() == y.to_bits()),
                        "{isa:?} {:?} {m}x{n}x{k} row {i}: split changed bits",
                        case.ty
                    );
                }
            },
        );
    }
}
