//! The matrix-vector product of decode: one row of A against every row of B,
//! the NT product's `m == 1` case (x86-64 and aarch64).

use super::gemm::{nt_tile, GemmArgs};
use super::simd::{Elem, Simd};

/// Mat-vec micro-kernel and driver: `c[j] = a . B_j` with `1 x NR` tiles over
/// the rows of B (`NR` accumulators, two vectors of `a` shared by them), the
/// last `n % NR` rows one by one ([`nt_tile`] `1 x 1`). Same canonical order
/// as [`nt_tile`], so a value does not depend on the tile that computed it.
///
/// Operands: `a` is `1 x k` (f32), `B` is `n x k` (`E`, widened on load), `c`
/// is `1 x n`. For f16/bf16 B, each step also prefetches into L2 the lines
/// of the next tile's rows that the same step will read there (one 4 KiB
/// row of 2048 bf16 is one page, and eight of them at once did not stream
/// well by themselves): on a 2-vCPU Xeon (AVX-512, and AVX2 forced) bf16
/// decode steps at context 1 and 1024 ran 8-10% faster, on one thread and
/// on two. f32 rows are left to the hardware: the same prefetch made them
/// 3-7% slower there, and on a Zen 1 core an earlier form of it (a few
/// lines per tile) made f32 and bf16 both slower.
///
/// # Safety
/// Extents checked by the builder of `p`; `S` available.
#[inline(always)]
pub(super) unsafe fn nt_matvec<S: Simd, E: Elem, const NR: usize>(p: &GemmArgs<E>) {
    let lanes = S::LANES;
    let k = p.k;
    let k_vec = k - k % lanes;
    let k_pair = k - k % (2 * lanes);
    let mut j = 0;
    // SAFETY (whole body): row j + r < n of B and columns < k are in the
    // checked extents.
    unsafe {
        while j + NR <= p.n {
            let b = p.b.add(j * p.ldb);
            let mut acc = [S::zero(); NR];
            let mut kk = 0;
            // Two vectors a step, in the pair order ([`Elem::vload_half`]):
            // both halves of a row at once (its bytes are loaded once).
            while kk < k_pair {
                if core::mem::size_of::<E>() < 4 && j + 2 * NR <= p.n {
                    let next = b.wrapping_add(NR * p.ldb + kk);
                    super::simd::prefetch_rows(next, NR, p.ldb, 2 * lanes);
                }
                let a0 = E::aload_half::<S, 0>(p.a.add(kk));
                let a1 = E::aload_half::<S, 1>(p.a.add(kk));
                for (r, s) in acc.iter_mut().enumerate() {
                    let row = b.add(r * p.ldb + kk);
                    *s = S::fma(a0, E::vload_half::<S, 0>(row), *s);
                    *s = S::fma(a1, E::vload_half::<S, 1>(row), *s);
                }
                kk += 2 * lanes;
            }
            if kk < k_vec {
                let a_vec = S::load(p.a.add(kk));
                for (r, s) in acc.iter_mut().enumerate() {
                    *s = S::fma(a_vec, E::vload::<S>(b.add(r * p.ldb + kk)), *s);
                }
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
