//! The matrix products on raw pointers, generic over [`Simd`] and [`Elem`]
//! (the safe entry points that check shapes are in `kernels/mod.rs`):
//!
//! - NT, `C (m x n) = A (m x k) . B (n x k)^T`, the dot-product form
//!   ([`nt_tile`]): every element of C is one vector accumulator over k,
//!   reduced at the end in the canonical order. Tiles of `MR` rows of A by `NR`
//!   rows of B; rows of A in blocks of `NT_A_BLOCK_BYTES` that stay in L2 while
//!   the rows of B stream past. One row of A goes to `matvec::nt_matvec`.
//! - NN, `C (m x n) += A (m x k) . B (k x n)`, the broadcast form
//!   ([`broadcast_fma`]): an element of A times a vector of a row of B, into
//!   `MR x NV` vector accumulators; products added in increasing k.
//!
//! On small targets the NT product runs one dot product at a time (code size).

use super::mat::{Mat, MatMut};
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use super::simd::PairedA;
use super::simd::{Elem, Simd};

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use super::isa::NT_A_BLOCK_BYTES;

/// Raw arguments of a matrix product over checked views: `A` is `m x k`
/// (f32), `C` is `m x n`, and `B` is `n x k` for NT (`C = A B^T`) or `k x n`
/// for NN (`C += A B`). Row `i` of a matrix `X` starts at `x + i * ldx`.
#[derive(Clone, Copy)]
pub(crate) struct GemmArgs<E> {
    pub(super) a: *const f32,
    pub(super) lda: usize,
    pub(super) m: usize,
    pub(super) b: *const E,
    pub(super) ldb: usize,
    pub(super) n: usize,
    pub(super) k: usize,
    pub(super) c: *mut f32,
    pub(super) ldc: usize,
    /// NN with prefetch only: elements of A ahead of the one broadcast whose
    /// cache line is prefetched (the same rows of the next block); 0: none.
    pub(super) pf: usize,
    /// NN with prefetch only, instead of `pf` when not null: the counterpart
    /// of `A(0, 0)` in a block of two-byte elements (the next block of cached
    /// rows as stored, f16/bf16), `A(i, kk)`'s at element `i * lda + kk`.
    /// Only a prefetch hint: never read.
    pub(super) pf_half: *const u8,
}

impl<E> GemmArgs<E> {
    /// NT arguments, or `None` unless `A` is m x k, `B` n x k, `C` m x n.
    pub(super) fn nt(a: &Mat<f32>, b: &Mat<E>, c: &mut MatMut) -> Option<Self> {
        Self::checked(a, b, c, b.rows, b.cols)
    }

    /// NN arguments, or `None` unless `A` is m x k, `B` k x n, `C` m x n.
    pub(super) fn nn(a: &Mat<f32>, b: &Mat<E>, c: &mut MatMut) -> Option<Self> {
        Self::checked(a, b, c, b.cols, b.rows)
    }

    /// TN arguments (`C += A^T B`), or `None` unless `A` is k x m, `B` k x n,
    /// `C` m x n. `a`/`lda` then describe A as stored (`k` rows of `m`).
    pub(super) fn tn(a: &Mat<f32>, b: &Mat<E>, c: &mut MatMut) -> Option<Self> {
        let (k, m) = (a.rows, a.cols);
        (b.rows == k && c.rows == m && c.cols == b.cols).then_some(GemmArgs {
            a: a.ptr(),
            lda: a.stride,
            m,
            b: b.ptr(),
            ldb: b.stride,
            n: b.cols,
            k,
            c: c.ptr,
            ldc: c.stride,
            pf: 0,
            pf_half: core::ptr::null(),
        })
    }

    /// The arguments if `B` (whose extent along k is `b_k`) and `C` agree
    /// with `A` and `n`.
    fn checked(a: &Mat<f32>, b: &Mat<E>, c: &mut MatMut, n: usize, b_k: usize) -> Option<Self> {
        let (m, k) = (a.rows, a.cols);
        (b_k == k && c.rows == m && c.cols == n).then_some(GemmArgs {
            a: a.ptr(),
            lda: a.stride,
            m,
            b: b.ptr(),
            ldb: b.stride,
            n,
            k,
            c: c.ptr,
            ldc: c.stride,
            pf: 0,
            pf_half: core::ptr::null(),
        })
    }
}

// ----------------------------------------------------------------------------
// NT: C = A B^T, dot-product form
// ----------------------------------------------------------------------------

/// NT micro-kernel: `C[i + r][j + t] = A_{i+r} . B_{j+t}` for the `MR x NR`
/// tile at row `i`, column `j` of C, in the canonical order: two vectors of
/// elements a step, each lane summing its element of the first half, then of
/// the second ([`Elem::vload_half`]: for f32 and f16 the halves are elements
/// `kk .. kk + L` and `kk + L .. kk + 2L`, so lane `q` sums elements `q, q + L,
/// ...`; bf16 on AVX2 takes the halves in its unpack order); one more vector
/// when `k % 2L >= L`; then the fixed lane tree; then the `k % L` tail one
/// by one.
///
/// Operands: `A` is `MR x k` (f32), `B` is `NR x k` (`E`, widened on load),
/// `C` is `MR x NR`. Registers: `MR * NR` accumulators, `NR` vectors of B (both
/// halves of `NR` rows for a paired type, [`Elem::paired`]), one of A.
///
/// # Safety
/// Extents checked by the builder of `p`; `i + MR <= m`, `j + NR <= n`; `S`
/// available.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
pub(super) unsafe fn nt_tile<S: Simd, E: Elem, const MR: usize, const NR: usize>(
    p: &GemmArgs<E>,
    i: usize,
    j: usize,
) {
    // SAFETY: forwarded contract; no prefetch.
    unsafe { nt_tile_pf::<S, E, MR, NR, false>(p, i, j) }
}

/// [`nt_tile`] that, with `PF`, prefetches the next tile's rows of B (rows
/// `j + NR .. j + 2 NR`) into L2 at the pace it reads its own, one prefetch
/// per cache line: with a few rows of A the weights stream from memory once,
/// in tiles of `NR` rows that start on new pages, which the hardware
/// prefetchers do not foresee.
///
/// # Safety
/// As [`nt_tile`]; prefetch addresses are never dereferenced.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
unsafe fn nt_tile_pf<S: Simd, E: Elem, const MR: usize, const NR: usize, const PF: bool>(
    p: &GemmArgs<E>,
    i: usize,
    j: usize,
) {
    let (lda, ldb, ldc, k) = (p.lda, p.ldb, p.ldc, p.k);
    let lanes = S::LANES;
    let k_vec = k - k % lanes;
    let k_pair = k - k % (2 * lanes);
    // SAFETY (whole body): every offset is row * stride + column with row < MR
    // (a, c) or NR (b) from the tile's origin and column < k (a, b) or NR (c):
    // inside the checked extents (i + MR <= m, j + NR <= n).
    unsafe {
        let (a, b, c) = (p.a.add(i * lda), p.b.add(j * ldb), p.c.add(i * ldc + j));
        let mut acc = [[S::zero(); NR]; MR];
        let mut kk = 0;
        // Elements of B per cache line.
        let line = super::isa::CACHE_LINE / core::mem::size_of::<E>();
        // With PF, the next tile's rows of B from column `off` on, once per
        // cache line.
        macro_rules! prefetch_next {
            ($off:expr) => {{
                if PF && $off % line == 0 {
                    for t in 0..NR {
                        let q = b.wrapping_add((t + NR) * ldb + $off);
                        super::simd::prefetch_l2(q.cast::<u8>());
                    }
                }
            }};
        }
        // Two vectors a step, in the pair order ([`Elem::vload_half`]): half
        // 0 of B against half 0 of A, then half 1.
        macro_rules! half {
            ($h:literal) => {{
                prefetch_next!(kk + $h * lanes);
                let mut b_vecs = [S::zero(); NR];
                for (t, v) in b_vecs.iter_mut().enumerate() {
                    *v = E::vload_half::<S, $h>(b.add(t * ldb + kk));
                }
                for (r, row) in acc.iter_mut().enumerate() {
                    let a_vec = E::aload_half::<S, $h>(a.add(r * lda + kk));
                    for (s, &b_vec) in row.iter_mut().zip(b_vecs.iter()) {
                        *s = S::fma(a_vec, b_vec, *s);
                    }
                }
            }};
        }
        while kk < k_pair {
            if E::paired::<S>() {
                // Both halves of each row of B from one load, held for all
                // rows of A (`Tiles::nt_paired` leaves room for them).
                prefetch_next!(kk);
                let mut b_vecs = [[S::zero(); 2]; NR];
                for (t, v) in b_vecs.iter_mut().enumerate() {
                    let row = b.add(t * ldb + kk);
                    *v = [E::vload_half::<S, 0>(row), E::vload_half::<S, 1>(row)];
                }
                for (r, row) in acc.iter_mut().enumerate() {
                    let a_row = a.add(r * lda + kk);
                    let a_vec = E::aload_half::<S, 0>(a_row);
                    for (s, b_vec) in row.iter_mut().zip(b_vecs.iter()) {
                        *s = S::fma(a_vec, b_vec[0], *s);
                    }
                    let a_vec = E::aload_half::<S, 1>(a_row);
                    for (s, b_vec) in row.iter_mut().zip(b_vecs.iter()) {
                        *s = S::fma(a_vec, b_vec[1], *s);
                    }
                }
            } else {
                half!(0);
                half!(1);
            }
            kk += 2 * lanes;
        }
        if kk < k_vec {
            let mut b_vecs = [S::zero(); NR];
            for (t, v) in b_vecs.iter_mut().enumerate() {
                *v = E::vload::<S>(b.add(t * ldb + kk));
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let a_vec = S::load(a.add(r * lda + kk));
                for (s, &b_vec) in row.iter_mut().zip(b_vecs.iter()) {
                    *s = S::fma(a_vec, b_vec, *s);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (t, &v) in row.iter().enumerate() {
                let mut s = S::hsum(v);
                for q in k_vec..k {
                    s += *a.add(r * lda + q) * (*b.add(t * ldb + q)).widen();
                }
                *c.add(r * ldc + t) = s;
            }
        }
    }
}

/// Rows `i0..i1` of A against every row of B: `MR x NR` tiles, then edge tiles
/// (`2 x NR` and `1 x NR` for the last rows, `MR x 1` and `1 x 1` for the last
/// columns).
///
/// # Safety
/// Extents checked by the builder of `p`; `i0 <= i1 <= m`; `S` available.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
unsafe fn nt_rows<S: Simd, E: Elem, const MR: usize, const NR: usize>(
    p: &GemmArgs<E>,
    i0: usize,
    i1: usize,
) {
    let mut j = 0;
    // SAFETY (whole body): tiles stay inside rows i0..i1 <= m of A/C and
    // columns j..j + NR <= n of B/C (loop bounds).
    unsafe {
        while j + NR <= p.n {
            let mut i = i0;
            // The first tile of a column block fetches the next block's rows.
            if i + MR <= i1 && j + 2 * NR <= p.n {
                nt_tile_pf::<S, E, MR, NR, true>(p, i, j);
                i += MR;
            }
            while i + MR <= i1 {
                nt_tile::<S, E, MR, NR>(p, i, j);
                i += MR;
            }
            if MR > 2 && i1 - i == 2 {
                nt_tile::<S, E, 2, NR>(p, i, j);
                i += 2;
            }
            while i < i1 {
                nt_tile::<S, E, 1, NR>(p, i, j);
                i += 1;
            }
            j += NR;
        }
        while j < p.n {
            let mut i = i0;
            while i + MR <= i1 {
                nt_tile::<S, E, MR, 1>(p, i, j);
                i += MR;
            }
            while i < i1 {
                nt_tile::<S, E, 1, 1>(p, i, j);
                i += 1;
            }
            j += 1;
        }
    }
}

/// NT driver, `C = A B^T`: rows of A in blocks that stay in L2, `MR x NR`
/// tiles; a single row of A (a matrix-vector product) uses `1 x MATVEC_NR`
/// tiles ([`nt_matvec`](super::matvec::nt_matvec)). On small targets
/// (Cortex-M...) one dot product at a time instead, for code size (the tile
/// parameters are unused there).
///
/// # Safety
/// Extents checked by the builder of `p`; `S` available.
#[inline(always)]
pub(super) unsafe fn nt<
    S: Simd,
    E: Elem,
    const MR: usize,
    const NR: usize,
    const PMR: usize,
    const PNR: usize,
    const MATVEC_NR: usize,
>(
    p: &GemmArgs<E>,
) {
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    // SAFETY: forwarded GemmArgs extents (checked by the builder).
    unsafe {
        small::nt(p)
    };
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    // SAFETY: forwarded GemmArgs extents (checked by the builder).
    unsafe {
        if p.m == 1 && (MR != 1 || MATVEC_NR != NR) {
            super::matvec::nt_matvec::<S, E, MATVEC_NR>(p);
            return;
        }
        if E::paired::<S>() {
            if PMR.saturating_mul(p.k) <= PAIRED_A_LEN {
                nt_paired_a::<S, E, PMR, PNR>(p);
            } else {
                nt_blocks::<S, E, PMR, PNR>(p);
            }
        } else {
            nt_blocks::<S, E, MR, NR>(p);
        }
    }
}

/// Rows of A in blocks that stay in L2, each against every row of B in
/// `MR x NR` tiles ([`nt_rows`]).
///
/// # Safety
/// Extents checked by the builder of `p`; `S` available.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
unsafe fn nt_blocks<S: Simd, E: Elem, const MR: usize, const NR: usize>(p: &GemmArgs<E>) {
    let row_bytes = p.k.saturating_mul(core::mem::size_of::<f32>());
    let rows_per_block = NT_A_BLOCK_BYTES
        .checked_div(row_bytes)
        .unwrap_or(0)
        .checked_div(MR)
        .unwrap_or(0)
        .max(1)
        * MR;
    let mut i0 = 0;
    while i0 < p.m {
        let i1 = p.m.min(i0 + rows_per_block);
        // SAFETY: rows i0..i1 <= m; forwarded extents.
        unsafe { nt_rows::<S, E, MR, NR>(p, i0, i1) };
        i0 = i1;
    }
}

/// NT with an f16, bf16 or FP8 B and many rows of A, in the f32 dot-product
/// tiles ([`widens`](super::isa::widens)):
/// for each block of rows of A (kept in L2, as [`nt_blocks`]), the rows of B
/// are widened to f32 into `buf`, as many whole tiles of `NR` rows as it
/// holds, and every tile of the block runs on them with plain loads. Each
/// row of B is widened once per block of A (at V2-Lite dims and 512 rows of
/// A, four times) instead of once per tile as the `E` tiles do, and the
/// tiles do not broadcast as the packed product does. Each `C[i][j]` sums
/// as the f32 dot-product form does on the widened values. With `f8` (B's
/// codes as [`E4m3`](super::simd::E4m3) units) each widened row is
/// multiplied by its block scales ([`scale_row`](super::f8::scale_row)):
/// the rows then hold the dequantized weights exactly.
///
/// # Safety
/// Extents checked by the builder of `p`; `buf` valid for `len` f32 with
/// `len >= NR * k`; `S` available; with `f8`, `p.b` is its codes (`n` rows
/// of `k`).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
pub(super) unsafe fn nt_widened<S: Simd, E: Elem, const MR: usize, const NR: usize>(
    p: &GemmArgs<E>,
    buf: *mut f32,
    len: usize,
    f8: Option<&super::mat::F8Mat>,
) {
    let k = p.k.max(1);
    let rows_fit = (len / k / NR).max(1) * NR;
    let rows_per_block = (NT_A_BLOCK_BYTES / (k * core::mem::size_of::<f32>()) / MR).max(1) * MR;
    let mut i0 = 0;
    while i0 < p.m {
        let i1 = p.m.min(i0 + rows_per_block);
        let mut j0 = 0;
        while j0 < p.n {
            let nb = rows_fit.min(p.n - j0);
            // SAFETY (block): rows j0..j0 + nb <= n of B (k elements each)
            // into rows of buf (nb * k <= rows_fit * k <= len); the tiles
            // read rows i0..i1 <= m of A and write columns j0..j0 + nb of
            // C; S available.
            unsafe {
                for r in 0..nb {
                    let row = buf.add(r * k);
                    super::vecops::widen_row::<S, E>(p.b.add((j0 + r) * p.ldb), row, p.k);
                    if let Some(f8) = f8 {
                        super::f8::scale_row::<S>(f8, j0 + r, row, p.k);
                    }
                }
                let q = GemmArgs::<f32> {
                    a: p.a,
                    lda: p.lda,
                    m: p.m,
                    b: buf,
                    ldb: k,
                    n: nb,
                    k: p.k,
                    c: p.c.add(j0),
                    ldc: p.ldc,
                    pf: 0,
                    pf_half: core::ptr::null(),
                };
                nt_rows::<S, f32, MR, NR>(&q, i0, i1);
            }
            j0 += nb;
        }
        i0 = i1;
    }
}

/// f32 of the stack buffer that holds `PMR` rows of A in pair order
/// ([`nt_paired_a`]): 24 KiB, rows of up to 2048 elements with AVX2's 3-row
/// bf16 tiles.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const PAIRED_A_LEN: usize = 6144;

/// Column blocks of [`nt_paired_a`], in tiles of `NR` rows of B: 16 tiles
/// (48 rows of 2048 bf16, 192 KiB, stay in L2 while every group of rows of
/// A passes over them).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const PAIRED_B_TILES: usize = 16;

/// NT with a paired `E` (bf16 on AVX2) and several rows of A: in blocks of
/// [`PAIRED_B_TILES`] tiles of rows of B, each group of `MR` rows of A is
/// stored in `E`'s pair order into a stack buffer ([`PAIRED_A_LEN`] f32)
/// and the tiles of the block run on it with plain loads ([`PairedA`]),
/// instead of each tile loading A in pair order (two 128-bit loads and an
/// insert per vector on AVX2) again for every tile of B. The same products
/// in the same order: the same bits as [`nt_rows`] on `E` and the mat-vec.
/// On the 2-core Zen 1 this ran bf16 products of 8 to 31 rows of A at
/// about 1.3x the rate of the pair-order loads.
///
/// # Safety
/// Extents checked by the builder of `p`; `MR * k <= PAIRED_A_LEN`; `S`
/// available.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
unsafe fn nt_paired_a<S: Simd, E: Elem, const MR: usize, const NR: usize>(p: &GemmArgs<E>) {
    let mut abuf = [0f32; PAIRED_A_LEN];
    let k = p.k;
    let block = PAIRED_B_TILES * NR;
    // All rows of A in one group (a batch of up to MR tokens): stored once
    // for every block of B.
    let whole = p.m <= MR;
    if whole {
        // SAFETY: rows 0..m <= MR of A; m * k <= MR * k <= PAIRED_A_LEN.
        unsafe { pair_rows::<S, E>(p, 0, p.m, abuf.as_mut_ptr()) };
    }
    let mut j0 = 0;
    while j0 < p.n {
        let nb = block.min(p.n - j0);
        let mut i = 0;
        while i < p.m {
            let mr = MR.min(p.m - i);
            if !whole {
                // SAFETY: rows i..i + mr <= m of A; mr * k <= PAIRED_A_LEN.
                unsafe { pair_rows::<S, E>(p, i, mr, abuf.as_mut_ptr()) };
            }
            let q = GemmArgs::<PairedA<E>> {
                a: abuf.as_ptr(),
                lda: k,
                m: mr,
                // SAFETY: row j0 < n of B; column j0 and row i < m of C.
                b: unsafe { p.b.add(j0 * p.ldb) }.cast::<PairedA<E>>(),
                ldb: p.ldb,
                n: nb,
                k,
                c: unsafe { p.c.add(i * p.ldc + j0) },
                ldc: p.ldc,
                pf: 0,
                pf_half: core::ptr::null(),
            };
            // SAFETY: the mr rows of k f32 in abuf; rows j0..j0 + nb <= n of
            // B (PairedA is transparent over E) and of C's columns, rows
            // i..i + mr <= m of C; S available.
            unsafe { nt_rows::<S, PairedA<E>, MR, NR>(&q, 0, mr) };
            i += mr;
        }
        j0 += nb;
    }
}

/// Rows `i .. i + mr` of A (`k` f32 each) into `dst` (row `r` at
/// `dst + r * k`): per `2L` elements the two halves as [`Elem::aload_half`]
/// gives them, then the rest as it is (the tiles load it plainly, as they
/// load A).
///
/// # Safety
/// Rows `i .. i + mr <= m` of `p`'s A; `dst` valid for `mr * k` f32; `S`
/// available.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
unsafe fn pair_rows<S: Simd, E: Elem>(p: &GemmArgs<E>, i: usize, mr: usize, dst: *mut f32) {
    let (k, lanes) = (p.k, S::LANES);
    let k_pair = k - k % (2 * lanes);
    // SAFETY: rows below i + mr <= m of A and columns below k; rows below mr
    // of dst (stride k).
    unsafe {
        for r in 0..mr {
            let (src, out) = (p.a.add((i + r) * p.lda), dst.add(r * k));
            let mut kk = 0;
            while kk < k_pair {
                S::store(out.add(kk), E::aload_half::<S, 0>(src.add(kk)));
                S::store(out.add(kk + lanes), E::aload_half::<S, 1>(src.add(kk)));
                kk += 2 * lanes;
            }
            for q in k_pair..k {
                *out.add(q) = *src.add(q);
            }
        }
    }
}

/// The NT product of small targets: with f16/bf16 rows widened into a stack
/// buffer, so that a single f32 loop serves every element type; the canonical
/// order is unchanged (lanes over whole vectors, fixed tree, then the tail).
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
mod small {
    use super::super::isa::SCALAR_LANES as SL;
    use super::super::simd::{Elem, Scalar, Simd};
    use super::GemmArgs;

    /// `C = A B^T`, one dot product per element of C.
    ///
    /// # Safety
    /// Extents checked by the builder of `p`.
    pub(super) unsafe fn nt<E: Elem>(p: &GemmArgs<E>) {
        for i in 0..p.m {
            for j in 0..p.n {
                // SAFETY: rows i < m of A and C, j < n of B: inside the extents
                // checked by the builder of p.
                unsafe {
                    *p.c.add(i * p.ldc + j) = dot(p.a.add(i * p.lda), p.b.add(j * p.ldb), p.k)
                };
            }
        }
    }

    /// `acc[j] += a[t] * b[t]` over `t = j, j + SL, ...` for `n` (a multiple
    /// of SL) elements.
    ///
    /// # Safety
    /// `a` and `b` valid for `n` elements.
    #[inline(never)]
    unsafe fn acc_f32(acc: &mut [f32; SL], a: *const f32, b: *const f32, n: usize) {
        let mut t = 0;
        while t < n {
            // SAFETY: a and b valid for n elements (caller); t + SL <= n.
            let (av, bv) = unsafe { (Scalar::load(a.add(t)), Scalar::load(b.add(t))) };
            // SAFETY: plain array arithmetic.
            *acc = unsafe { Scalar::fma(av, bv, *acc) };
            t += SL;
        }
    }

    /// One canonical dot product of length `k`.
    ///
    /// # Safety
    /// `a` and `b` valid for `k` elements.
    unsafe fn dot<E: Elem>(a: *const f32, b: *const E, k: usize) -> f32 {
        const CHUNK: usize = 16 * SL;
        let k_vec = k - k % SL;
        let mut acc = [0f32; SL];
        let mut buf = [0f32; CHUNK];
        let mut kk = 0;
        // SAFETY (whole body): a and b valid for k elements (caller); every
        // offset is below k.
        unsafe {
            while kk < k_vec {
                let len = CHUNK.min(k_vec - kk);
                let bp = match E::as_f32(b.add(kk)) {
                    Some(bp) => bp,
                    None => {
                        for (t, x) in buf.iter_mut().enumerate().take(len) {
                            *x = (*b.add(kk + t)).widen();
                        }
                        buf.as_ptr()
                    }
                };
                acc_f32(&mut acc, a.add(kk), bp, len);
                kk += len;
            }
            let mut s = Scalar::hsum(acc);
            for t in k_vec..k {
                s += *a.add(t) * (*b.add(t)).widen();
            }
            s
        }
    }
}

// ----------------------------------------------------------------------------
// NN: C += A B, broadcast form
// ----------------------------------------------------------------------------

/// The broadcast micro-kernel, shared by NN, TN and the packed NT product:
/// `acc[i][v] += sum_kk A(i, kk) * B[kk][v*L .. (v+1)*L]` for `kk < k`, the
/// products added in increasing `kk`.
///
/// Operands: `A(i, kk)` is the f32 at `a + i * a_si + kk * a_sk` (one element
/// broadcast at a time: `(lda, 1)` for a row-major `MR x k` A, `(1, lda)` for
/// a `k x MR` A read down its columns), `B` is `k x NV*L` (`E`, widened on
/// load). Registers: the `MR * NV` accumulators, `NV` vectors of B, one
/// broadcast.
///
/// # Safety
/// `a` valid for every `A(i, kk)` with `i < MR`, `kk < k`; `b` for `k` rows of
/// `NV * LANES` (stride `ldb`); `S` available.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn broadcast_fma<S: Simd, E: Elem, const MR: usize, const NV: usize>(
    acc: &mut [[S::V; NV]; MR],
    a: *const f32,
    a_si: usize,
    a_sk: usize,
    b: *const E,
    ldb: usize,
    k: usize,
) {
    // SAFETY: forwarded contract; no prefetch.
    unsafe {
        broadcast_fma_pf::<S, E, MR, NV, false>(acc, a, a_si, a_sk, b, ldb, k, 0, core::ptr::null())
    }
}

/// [`broadcast_fma`] that, with `PF`, prefetches into L2, once per line of
/// each of A's rows (row-major A, `a_sk == 1`), the counterpart of that line
/// in the block read next: `pf` elements further on or, where `pf_half` is
/// not null, element `i * a_si + kk` of the two-byte elements there (`A(i,
/// kk)` as stored before widening). While a block of cached rows is
/// multiplied, the next block streams into L2 at the pace this one is
/// computed.
///
/// # Safety
/// As [`broadcast_fma`]; prefetch addresses are never dereferenced.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn broadcast_fma_pf<
    S: Simd,
    E: Elem,
    const MR: usize,
    const NV: usize,
    const PF: bool,
>(
    acc: &mut [[S::V; NV]; MR],
    a: *const f32,
    a_si: usize,
    a_sk: usize,
    b: *const E,
    ldb: usize,
    k: usize,
    pf: usize,
    pf_half: *const u8,
) {
    let lanes = S::LANES;
    // f32 per cache line: one prefetch per line of each row of A.
    const LINE: usize = 16;
    // SAFETY (whole body): offsets i * a_si + kk * a_sk (a) and row * stride +
    // column (b) with i < MR, kk < k and columns < NV * LANES: the caller's
    // extents. Prefetch addresses use wrapping arithmetic and are not read.
    unsafe {
        let mut k0 = 0;
        while k0 < k {
            let k1 = if PF { k.min(k0 + LINE) } else { k };
            #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
            if PF {
                for i in 0..MR {
                    if pf_half.is_null() {
                        super::simd::prefetch_l2(
                            a.wrapping_add(i * a_si + k0 * a_sk + pf).cast::<u8>(),
                        );
                    } else {
                        super::simd::prefetch_l2(pf_half.wrapping_add(2 * (i * a_si + k0 * a_sk)));
                    }
                }
            }
            #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
            let _ = (pf, pf_half);
            for kk in k0..k1 {
                let mut b_vecs = [S::zero(); NV];
                for (v, x) in b_vecs.iter_mut().enumerate() {
                    *x = E::vload::<S>(b.add(kk * ldb + v * lanes));
                }
                for (i, row) in acc.iter_mut().enumerate() {
                    let a_elem = S::splat(*a.add(i * a_si + kk * a_sk));
                    for (s, &b_vec) in row.iter_mut().zip(b_vecs.iter()) {
                        *s = S::fma(a_elem, b_vec, *s);
                    }
                }
            }
            k0 = k1;
        }
    }
}

/// Where `A(i, kk)` is for an NN product (`TA` false: A is `m x k`, row stride
/// `lda`) or a TN product (`TA` true: A is `k x m`, row stride `lda`, read down
/// its columns): `(offset of row i, stride along i, stride along kk)`.
#[inline(always)]
const fn a_strides<const TA: bool>(i: usize, lda: usize) -> (usize, usize, usize) {
    if TA {
        (i, 1, lda)
    } else {
        (i * lda, lda, 1)
    }
}

/// NN (TN) micro-kernel: `C[i + r][j + v*L ..] += sum_kk A(i + r, kk) *
/// B[kk][j + v*L ..]` for the `MR x NV`-vector tile at row `i`, column `j` of
/// C ([`broadcast_fma`] between a load and a store of C).
///
/// Operands: `A(i, kk)` is `A[i][kk]` (NN) or `A[kk][i]` (TN, `TA`), f32; `B`
/// is `k x NV*L` (`E`), `C` is `MR x NV*L` (read, then written).
///
/// # Safety
/// Extents checked by the builder of `p`; `i + MR <= m`,
/// `j + NV * LANES <= n`; `S` available.
#[inline(always)]
unsafe fn nn_tile<
    S: Simd,
    E: Elem,
    const MR: usize,
    const NV: usize,
    const TA: bool,
    const PF: bool,
    const LDA: usize,
>(
    p: &GemmArgs<E>,
    i: usize,
    j: usize,
) {
    let lanes = S::LANES;
    // SAFETY (whole body): C offsets are row * ldc + column with row < MR and
    // column < NV * LANES from the tile's origin; A and B forwarded: inside
    // the checked extents (caller).
    unsafe {
        let c = p.c.add(i * p.ldc + j);
        let mut acc = [[S::zero(); NV]; MR];
        for (r, row) in acc.iter_mut().enumerate() {
            for (v, s) in row.iter_mut().enumerate() {
                *s = S::load(c.add(r * p.ldc + v * lanes));
            }
        }
        let lda = if LDA == 0 { p.lda } else { LDA };
        let (a_off, a_si, a_sk) = a_strides::<TA>(i, lda);
        let (a, b) = (p.a.add(a_off), p.b.add(j));
        // The tile's rows in a stored next block (row-major A).
        let pf_half = match p.pf_half.is_null() {
            true => p.pf_half,
            false => p.pf_half.wrapping_add(2 * a_off),
        };
        broadcast_fma_pf::<S, E, MR, NV, PF>(&mut acc, a, a_si, a_sk, b, p.ldb, p.k, p.pf, pf_half);
        for (r, row) in acc.iter().enumerate() {
            for (v, &s) in row.iter().enumerate() {
                S::store(c.add(r * p.ldc + v * lanes), s);
            }
        }
    }
}

/// Every row of C in the column block `j .. j + NV * LANES`: `MR`-row tiles,
/// then 1-row tiles.
///
/// # Safety
/// Extents checked by the builder of `p`; `j + NV * LANES <= n`; `S` available.
#[inline(always)]
unsafe fn nn_cols<
    S: Simd,
    E: Elem,
    const MR: usize,
    const NV: usize,
    const TA: bool,
    const PF: bool,
    const LDA: usize,
>(
    p: &GemmArgs<E>,
    j: usize,
) {
    let mut i = 0;
    // SAFETY (whole body): column block j .. j + NV * LANES <= n (caller), rows
    // inside 0..m (loop bounds).
    unsafe {
        while i + MR <= p.m {
            nn_tile::<S, E, MR, NV, TA, PF, LDA>(p, i, j);
            i += MR;
        }
        while MR > 1 && i < p.m {
            nn_tile::<S, E, 1, NV, TA, PF, LDA>(p, i, j);
            i += 1;
        }
    }
}

/// Rows of B read at once by [`nn_one_row`].
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const ONE_ROW_KB: usize = 8;

/// NN with one row of A (`C += a B`, a decode step's absorbed product): B is
/// read row after row, [`ONE_ROW_KB`] rows at a time (sequential streams that
/// the hardware prefetchers follow, where column tiles would walk B down its
/// columns one cache line per row), each vector of C loaded, given the
/// products of those rows, and stored. Every element of C still takes its
/// products in increasing k, one FMA each (the scalar tail columns: multiply,
/// then add), as in the tiles, so the values are the same. Two vectors of C
/// a step, in B's pair order ([`Elem::vload_half`]: bf16 on AVX2 widens both
/// from one load), C read and written in that order. f16/bf16 rows of the
/// next group are prefetched into L2 a step ahead, as in the mat-vec (on the
/// Xeon of the README's results, bf16 decode steps 2-4% faster).
///
/// # Safety
/// Extents checked by the builder of `p` (NN, `p.m == 1`); `S` available.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
unsafe fn nn_one_row<S: Simd, E: Elem>(p: &GemmArgs<E>) {
    let lanes = S::LANES;
    let n_vec = p.n - p.n % lanes;
    let (a, b, c) = (p.a, p.b, p.c);
    // SAFETY (whole body): a[kk] with kk < k (A is 1 x k); b at row kk < k,
    // column < n; c at column < n: inside the checked extents.
    unsafe {
        let mut kk = 0;
        while kk < p.k {
            let kb = (p.k - kk).min(ONE_ROW_KB);
            let mut a_b = [S::zero(); ONE_ROW_KB];
            for (t, x) in a_b.iter_mut().enumerate().take(kb) {
                *x = S::splat(*a.add(kk + t));
            }
            let rows = b.add(kk * p.ldb);
            let mut j = 0;
            // Two vectors of C at once (two chains of FMAs), in the pair
            // order of B's type (bf16 on AVX2 widens both from one load).
            while j + 2 * lanes <= n_vec {
                // f16/bf16: the lines of the next rows that this step will
                // read there (as the mat-vec does).
                if core::mem::size_of::<E>() < 4 && kk + 2 * ONE_ROW_KB <= p.k {
                    let next = rows.wrapping_add(ONE_ROW_KB * p.ldb + j);
                    super::simd::prefetch_rows(next, ONE_ROW_KB, p.ldb, 2 * lanes);
                }
                let mut acc = [
                    E::aload_half::<S, 0>(c.add(j)),
                    E::aload_half::<S, 1>(c.add(j)),
                ];
                for (t, &x) in a_b.iter().enumerate().take(kb) {
                    let row = rows.add(t * p.ldb + j);
                    acc[0] = S::fma(x, E::vload_half::<S, 0>(row), acc[0]);
                    acc[1] = S::fma(x, E::vload_half::<S, 1>(row), acc[1]);
                }
                E::astore_half::<S, 0>(c.add(j), acc[0]);
                E::astore_half::<S, 1>(c.add(j), acc[1]);
                j += 2 * lanes;
            }
            // At most one vector left.
            while j < n_vec {
                let mut acc = S::load(c.add(j));
                for (t, &x) in a_b.iter().enumerate().take(kb) {
                    acc = S::fma(x, E::vload::<S>(rows.add(t * p.ldb + j)), acc);
                }
                S::store(c.add(j), acc);
                j += lanes;
            }
            for jj in n_vec..p.n {
                let mut s = *c.add(jj);
                for t in 0..kb {
                    s += *a.add(kk + t) * (*rows.add(t * p.ldb + jj)).widen();
                }
                *c.add(jj) = s;
            }
            kk += kb;
        }
    }
}

/// NN driver, `C += A B` (or TN, `C += A^T B`, with `TA`): `MR x NV`-vector
/// tiles, then 1-vector columns in taller `TALL_MR x 1` tiles (enough
/// independent accumulators to cover the FMA latency), then a scalar tail for
/// `n % LANES` columns. For TN, `p.a` is `k x m` at row stride `p.lda`. With
/// `PF` (NN only), each tile prefetches its rows' counterparts in the next
/// block ([`GemmArgs::pf`], [`GemmArgs::pf_half`]). One row of A
/// (NN, no prefetch) goes to [`nn_one_row`]. `LDA`: A's row stride built in
/// (`p.lda` must then equal it), or 0 to read `p.lda`.
///
/// # Safety
/// Extents checked by the builder of `p`; `S` available; `LDA` 0 or
/// `p.lda`.
#[inline(always)]
pub(super) unsafe fn nn<
    S: Simd,
    E: Elem,
    const MR: usize,
    const NV: usize,
    const TALL_MR: usize,
    const TA: bool,
    const PF: bool,
    const LDA: usize,
>(
    p: &GemmArgs<E>,
) {
    let lanes = S::LANES;
    let n_vec = p.n - p.n % lanes;
    let mut j = 0;
    // SAFETY: column blocks stay below n_vec <= n; the tail loop indexes rows
    // < m, kk < k, columns < n: inside the checked extents.
    unsafe {
        // Small targets keep the tiles alone (code size; the same values).
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        if !TA && !PF && p.m == 1 {
            nn_one_row::<S, E>(p);
            return;
        }
        while j + NV * lanes <= n_vec {
            nn_cols::<S, E, MR, NV, TA, PF, LDA>(p, j);
            j += NV * lanes;
        }
        if NV > 1 || TALL_MR != MR {
            while j < n_vec {
                nn_cols::<S, E, TALL_MR, 1, TA, PF, LDA>(p, j);
                j += lanes;
            }
        }
        for i in 0..p.m {
            for jj in n_vec..p.n {
                let cp = p.c.add(i * p.ldc + jj);
                let mut s = *cp;
                for kk in 0..p.k {
                    let (a_off, _, a_sk) = a_strides::<TA>(i, p.lda);
                    s += *p.a.add(a_off + kk * a_sk) * (*p.b.add(kk * p.ldb + jj)).widen();
                }
                *cp = s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{cartesian, edges, test_a_kernel, union, Layout};
    use super::super::{gemm_nn_with, gemm_nt_with, Isa, Mat, MatE, MatMut};
    use super::{ONE_ROW_KB, PAIRED_A_LEN, PAIRED_B_TILES};

    /// f16/bf16 weights with many rows of A where f32 products do not pack
    /// (`isa::packs_f32`, AVX2 from `PACK_KC` up): B widened into the
    /// scratch ahead of the f32 tiles. Bit for bit the f32 dot-product
    /// product on the widened weights, unchanged by splitting the rows of B,
    /// within 1e-5 of f64. Shapes: several blocks of widened rows (k = 1030:
    /// 15 rows a block) with a ragged last one, two blocks of rows of A
    /// (260 rows of 1030 f32 pass 1 MiB), edge tiles of A.
    #[test]
    #[cfg_attr(miri, ignore)]
    fn widened_weights_match_f32_tiles_on_their_values() {
        use super::super::test_util::{isas_here, rand};
        use super::super::{gemm_nt_packed, isa::packs_f32, PACK_KC, PACK_LEN, PACK_MIN_ROWS};
        use half::{bf16, f16};
        let mut pack = vec![0f32; PACK_LEN];
        let mut covered = false;
        for isa in isas_here() {
            for (m, n, k) in [(32, 70, 1030), (37, 8, 256), (260, 31, 1030), (33, 3, 5000)] {
                assert!(m >= PACK_MIN_ROWS && k >= PACK_KC);
                covered |= !packs_f32(isa, k);
                let a = rand(m * k, (m * k) as u64);
                let w = rand(n * k, n as u64 + 7);
                let wb: Vec<bf16> = w.iter().map(|&x| bf16::from_f32(x)).collect();
                let wh: Vec<f16> = w.iter().map(|&x| f16::from_f32(x)).collect();
                let am = Mat::new(&a, m, k, k).unwrap();
                for (name, widened) in [
                    ("bf16", wb.iter().map(|x| x.to_f32()).collect::<Vec<f32>>()),
                    ("f16", wh.iter().map(|x| x.to_f32()).collect()),
                ] {
                    let b = |j0: usize, nj: usize| match name {
                        "bf16" => MatE::BF16(Mat::new(&wb[j0 * k..], nj, k, k).unwrap()),
                        _ => MatE::F16(Mat::new(&wh[j0 * k..], nj, k, k).unwrap()),
                    };
                    let mut got = vec![0f32; m * n];
                    let mut cm = MatMut::new(&mut got, m, n, n).unwrap();
                    assert!(gemm_nt_packed(isa, &am, &b(0, n), &mut cm, Some(&mut pack)));
                    let ctx = format!("{isa:?} {name} {m}x{n}x{k}");
                    if !packs_f32(isa, k) {
                        let mut want = vec![0f32; m * n];
                        let wm = MatE::F32(Mat::new(&widened, n, k, k).unwrap());
                        let mut cm = MatMut::new(&mut want, m, n, n).unwrap();
                        assert!(gemm_nt_with(isa, &am, &wm, &mut cm));
                        let same = got
                            .iter()
                            .zip(&want)
                            .all(|(x, y)| x.to_bits() == y.to_bits());
                        assert!(same, "{ctx}: not the f32 tiles on the widened weights");
                    }
                    let cut = n / 2 + 1;
                    let mut split = vec![0f32; m * n];
                    for (j0, nj) in [(0, cut), (cut, n - cut)] {
                        if nj > 0 {
                            let mut part = MatMut::new(&mut split[j0..], m, nj, n).unwrap();
                            assert!(gemm_nt_packed(
                                isa,
                                &am,
                                &b(j0, nj),
                                &mut part,
                                Some(&mut pack)
                            ));
                        }
                    }
                    let same = got
                        .iter()
                        .zip(&split)
                        .all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(same, "{ctx}: splitting B changed bits");
                    for i in (0..m).step_by(7) {
                        for j in 0..n {
                            let r: f64 = (0..k)
                                .map(|t| a[i * k + t] as f64 * widened[j * k + t] as f64)
                                .sum();
                            let g = got[i * n + j] as f64;
                            assert!((g - r).abs() <= 1e-5 * (1.0 + r.abs()), "{ctx}: {g} vs {r}");
                        }
                    }
                }
            }
        }
        if !covered {
            eprintln!("SKIPPED: widened weights: every ISA here packs f32 (no AVX2)");
        }
    }

    /// NT on every ISA here and every tile edge (rows of A around MR, rows of
    /// B around NR and the mat-vec tile, k around the lanes, and long k), for
    /// f32, bf16 and f16 B, against f64; and every value has the same bits as
    /// when it is computed alone (1 x 1), whatever tile computed it.
    #[test]
    #[cfg_attr(miri, ignore)]
    fn gemm_all_isas_all_edges() {
        test_a_kernel(
            "nt",
            Layout::Nt,
            |t, lanes| {
                assert!(70 > PAIRED_B_TILES * t.nt_paired[1]);
                assert!(3100 * t.nt_paired[0] > PAIRED_A_LEN);
                let ms = union(&[edges(t.nt_mr), edges(t.nt_paired[0])]);
                let ns = union(&[edges(t.nt_nr), edges(t.nt_paired[1]), edges(t.matvec_nr)]);
                let ks = union(&[edges(lanes), edges(2 * lanes), vec![70, 512]]);
                let mut shapes = cartesian(&ms, &ns, &ks);
                // Paired types: rows of B across two column blocks of
                // nt_paired_a; k too long for its buffer (the pair-order
                // loads of A instead). Mat-vecs of several runs of rows and
                // a remainder (each tile takes a row of every run).
                shapes.extend([
                    (1, 17, 2048),
                    (1, 70, 100),
                    (1, 37, 512),
                    (9, 11, 512),
                    (2, 70, 100),
                    (5, 70, 100),
                    (4, 7, 3100),
                ]);
                shapes
            },
            |case, c| {
                let (isa, m, n) = (case.isa, case.m, case.n);
                assert!(gemm_nt_with(isa, &case.a_rows(0, m), &case.b_rows(0, n), c));
                for i in 0..m {
                    for j in 0..n {
                        let mut one = [0f32];
                        let mut c1 = MatMut::new(&mut one, 1, 1, 1).unwrap();
                        assert!(gemm_nt_with(
                            isa,
                            &case.a_rows(i, 1),
                            &case.b_rows(j, 1),
                            &mut c1
                        ));
                        let tiled = c.row(i).unwrap()[j];
                        assert_eq!(
                            one[0].to_bits(),
                            tiled.to_bits(),
                            "{isa:?} {:?} {m}x{n}x{} [{i}][{j}]: tile order",
                            case.ty,
                            case.k
                        );
                    }
                }
            },
        );
    }

    /// NN on every ISA here and every tile edge (rows around MR and the tall
    /// MR, columns around the NV-vector block, one vector and the one-row
    /// kernel's two, k around its rows a step), for f32, bf16 and f16 B,
    /// accumulating onto a random C, against f64; and each row computed alone
    /// (the one-row kernel) has the same bits as in the whole product.
    #[test]
    #[cfg_attr(miri, ignore)]
    fn gemm_nn_all_isas_all_edges() {
        test_a_kernel(
            "nn",
            Layout::Nn,
            |t, lanes| {
                let ms = union(&[edges(t.nn_mr), edges(t.nn_tall_mr)]);
                let ns = union(&[edges(t.nn_nv * lanes), edges(lanes), edges(2 * lanes)]);
                cartesian(&ms, &ns, &[1, 2, 7, 33, ONE_ROW_KB, ONE_ROW_KB + 1])
            },
            |case, c| {
                let (m, n) = (case.m, case.n);
                let mut alone = vec![0f32; m * n];
                for (i, row) in alone.chunks_exact_mut(n).enumerate() {
                    row.copy_from_slice(c.row(i).unwrap());
                    let a = case.a_rows(i, 1);
                    let mut cm = MatMut::new(row, 1, n, n).unwrap();
                    assert!(gemm_nn_with(case.isa, &a, &case.b_all(Layout::Nn), &mut cm));
                }
                let a = case.a_rows(0, m);
                assert!(gemm_nn_with(case.isa, &a, &case.b_all(Layout::Nn), c));
                for (i, want) in alone.chunks_exact(n).enumerate() {
                    let got = c.row(i).unwrap();
                    let same = got
                        .iter()
                        .zip(want)
                        .all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(
                        same,
                        "nn {:?} {:?} {m}x{n}x{}: row {i} alone differs",
                        case.isa, case.ty, case.k
                    );
                }
            },
        );
    }

    /// The attention products on every ISA here and every tile edge (rows
    /// around the attention and NN tiles' MR and tall MR, columns around
    /// their NV-vector blocks, one vector, 16 and 128): the scores bit for
    /// bit as the general NN product (with and without prefetching ahead),
    /// the latent sum bit for bit as the NN product of the transposed
    /// weights and the rows, both within 1e-5 of f64.
    #[test]
    #[cfg_attr(miri, ignore)]
    fn attention_products_all_isas_all_edges() {
        use super::super::test_util::{isas_here, rand};
        use super::super::{attn_scores, attn_sum, isa::lanes, isa::tiles, Ahead};
        for isa in isas_here() {
            let (t, l) = (tiles(isa), lanes(isa));
            let ms = union(&[
                edges(t.attn_mr),
                edges(t.attn_tall_mr),
                edges(t.nn_mr),
                edges(t.nn_tall_mr),
            ]);
            let ns = union(&[
                edges(t.attn_nv * l),
                edges(t.nn_nv * l),
                edges(l),
                vec![16, 128],
            ]);
            // k = 571: rows at stride 576, the scores' fixed-stride copy on
            // x86-64 (`isa::LATENT_ROW`).
            for (s, &(m, n, k)) in cartesian(&ms, &ns, &[1, 2, 7, 33, 571, 576])
                .iter()
                .enumerate()
            {
                let seed = 4 * s as u64;
                // Scores: A m x k (row stride k + 5), B k x n, C m x n.
                let lda = k + 5;
                let a = rand(m * lda + lda, seed);
                let b = rand(k * n, seed + 1);
                let c0 = rand(m * n, seed + 2);
                let am = Mat::new(&a, m, k, lda).unwrap();
                let bm = Mat::new(&b, k, n, n).unwrap();
                let mut want = c0.clone();
                let mut wm = MatMut::new(&mut want, m, n, n).unwrap();
                assert!(gemm_nn_with(isa, &am, &MatE::F32(bm), &mut wm));
                // Prefetching (the next rows, far away, a stored bf16 block,
                // an empty one) changes nothing.
                let stored = vec![0u8; 2 * m * lda];
                for ahead in [
                    Ahead::Nothing,
                    Ahead::F32(lda),
                    Ahead::F32(1 << 40),
                    Ahead::Half(&stored),
                    Ahead::Half(&[]),
                ] {
                    let mut got = c0.clone();
                    let mut gm = MatMut::new(&mut got, m, n, n).unwrap();
                    assert!(attn_scores(isa, &am, &bm, &mut gm, ahead));
                    let same = got
                        .iter()
                        .zip(&want)
                        .all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(same, "scores {isa:?} {m}x{n}x{k} ahead {ahead:?}");
                }
                for i in 0..m {
                    for j in 0..n {
                        let r: f64 = (0..k)
                            .map(|kk| a[i * lda + kk] as f64 * b[kk * n + j] as f64)
                            .sum::<f64>()
                            + c0[i * n + j] as f64;
                        let g = want[i * n + j] as f64;
                        assert!((g - r).abs() <= 1e-5 * (1.0 + r.abs()), "scores {g} vs {r}");
                    }
                }
                // Sum: R k x n (the rows' latent columns, row stride n + 3),
                // P k x m (the heads' weights), Acc m x n: Acc += P^T R,
                // against the NN product of P^T and R.
                let ldr = n + 3;
                let rr = rand(k * ldr, seed + 3);
                let p = rand(k * m, seed + 4);
                let acc0 = rand(m * n, seed + 5);
                let mut got = acc0.clone();
                let rm = Mat::new(&rr, k, n, ldr).unwrap();
                let pm = Mat::new(&p, k, m, m).unwrap();
                let mut gm = MatMut::new(&mut got, m, n, n).unwrap();
                assert!(attn_sum(isa, &rm, &pm, &mut gm));
                let pt: Vec<f32> = (0..m * k).map(|x| p[(x % k) * m + x / k]).collect();
                let mut want = acc0.clone();
                let ptm = Mat::new(&pt, m, k, k).unwrap();
                let rm_all = MatE::F32(Mat::new(&rr, k, n, ldr).unwrap());
                let mut wm = MatMut::new(&mut want, m, n, n).unwrap();
                assert!(gemm_nn_with(isa, &ptm, &rm_all, &mut wm));
                for i in 0..m {
                    for j in 0..n {
                        assert_eq!(
                            got[i * n + j].to_bits(),
                            want[i * n + j].to_bits(),
                            "sum {isa:?} {m}x{n}x{k} [{i}][{j}]"
                        );
                        let r: f64 = (0..k)
                            .map(|kk| p[kk * m + i] as f64 * rr[kk * ldr + j] as f64)
                            .sum::<f64>()
                            + acc0[i * n + j] as f64;
                        let g = got[i * n + j] as f64;
                        assert!((g - r).abs() <= 1e-5 * (1.0 + r.abs()), "sum {g} vs {r}");
                    }
                }
                // Shapes that disagree: refused, nothing written.
                let mut c = vec![7f32; m * n];
                let mut cm = MatMut::new(&mut c, m, n, n).unwrap();
                let bad = Mat::new(&b, k.min(1), n, n).unwrap();
                if k > 1 {
                    assert!(!attn_scores(isa, &am, &bad, &mut cm, Ahead::Nothing));
                    assert!(!attn_sum(isa, &rm, &bad, &mut cm));
                    assert!(c.iter().all(|&x| x == 7.0));
                }
            }
        }
    }

    /// Shapes that disagree are refused and nothing is written; empty
    /// products succeed and write nothing.
    #[test]
    fn gemm_shape_checks() {
        let a = [1.0f32; 6];
        let b = [2.0f32; 6];
        for isa in [Isa::Scalar, super::super::isa()] {
            let a23 = Mat::new(&a, 2, 3, 3).unwrap();
            let b23 = MatE::F32(Mat::new(&b, 2, 3, 3).unwrap());
            let b32 = MatE::F32(Mat::new(&b, 3, 2, 2).unwrap());
            let mut c = [7.0f32; 6];
            let mut c33 = MatMut::new(&mut c, 3, 2, 2).unwrap();
            assert!(
                !gemm_nt_with(isa, &a23, &b23, &mut c33),
                "C 3x2 for A 2x3 B 2x3"
            );
            assert!(!gemm_nn_with(isa, &a23, &b23, &mut c33), "B 2x3 for A 2x3");
            assert_eq!(c, [7.0; 6]);
            let mut c22 = MatMut::new(&mut c, 2, 2, 2).unwrap();
            assert!(gemm_nt_with(isa, &a23, &b23, &mut c22));
            assert!(gemm_nn_with(isa, &a23, &b32, &mut c22));
            // C = A B^T = 6 everywhere, then += A B = 6 more.
            assert_eq!(c[..4], [12.0; 4]);
            let empty = Mat::new(&a, 0, 3, 3).unwrap();
            let mut none = MatMut::new(&mut c, 0, 2, 2).unwrap();
            assert!(gemm_nt_with(isa, &empty, &b23, &mut none));
            assert_eq!(c[..4], [12.0; 4]);
        }
    }
}
