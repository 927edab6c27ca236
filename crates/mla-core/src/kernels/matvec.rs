//! The matrix-vector product of decode: one row of A against every row of B,
//! the NT product's `m == 1` case (x86-64 and aarch64).

use super::gemm::{nt_tile, GemmArgs};
use super::simd::{prefetch_l2, Elem, Simd};

/// Mat-vec micro-kernel and driver: `c[j] = a . B_j` with `1 x NR` tiles over
/// the rows of B (`NR` accumulators, one vector of `a` shared by them), the
/// last `n % NR` rows one by one ([`nt_tile`] `1 x 1`). Same canonical order
/// as [`nt_tile`], so a value does not depend on the tile that computed it.
///
/// Operands: `a` is `1 x k` (f32), `B` is `n x k` (`E`, widened on load), `c`
/// is `1 x n`. With f16/bf16 weights each tile prefetches the next tile's rows
/// at the pace it reads its own (those rows start on new pages, which the
/// hardware prefetchers do not foresee).
///
/// # Safety
/// Extents checked by the builder of `p`; `S` available.
#[inline(always)]
pub(super) unsafe fn nt_matvec<S: Simd, E: Elem, const NR: usize>(p: &GemmArgs<E>) {
    let lanes = S::LANES;
    let k = p.k;
    let k_vec = k - k % lanes;
    let mut j = 0;
    // SAFETY (whole body): row j + r < n of B and columns < k are in the
    // checked extents; prefetch addresses are computed with wrapping
    // arithmetic and never dereferenced.
    unsafe {
        while j + NR <= p.n {
            let b = p.b.add(j * p.ldb);
            let next = p.b.wrapping_add((j + NR) * p.ldb);
            // f32 rows span two pages and stream well by themselves (measured:
            // prefetching slows them down); 2-byte rows are one page each.
            let prefetch = core::mem::size_of::<E>() < 4 && j + 2 * NR <= p.n;
            let mut acc = [S::zero(); NR];
            let mut kk = 0;
            while kk < k_vec {
                let a_vec = S::load(p.a.add(kk));
                for (r, s) in acc.iter_mut().enumerate() {
                    if prefetch {
                        prefetch_l2(next.wrapping_add(r * p.ldb + kk).cast::<u8>());
                    }
                    *s = S::fma(a_vec, E::vload::<S>(b.add(r * p.ldb + kk)), *s);
                }
                kk += lanes;
            }
            for (r, &v) in acc.iter().enumerate() {
                let mut sum = S::hsum(v);
                for t in k_vec..k {
                    sum += *p.a.add(t) * (*b.add(r * p.ldb + t)).widen();
                }
                *p.c.add(j + r) = sum;
            }
            j += NR;
        }
        while j < p.n {
            nt_tile::<S, E, 1, 1>(p, 0, j);
            j += 1;
        }
    }
}
