//! The matrix-vector product of decode: one row of A against every row of B,
//! the NT product's `m == 1` case (x86-64 and aarch64).

use super::gemm::{nt_tile, GemmArgs};
use super::isa::MATVEC_AHEAD;
use super::simd::{Elem, Simd};

/// Mat-vec micro-kernel and driver: `c[j] = a . B_j` with `1 x NR` tiles
/// (`NR` accumulators, two vectors of `a` shared by them), the last `n % NR`
/// rows one by one ([`nt_tile`] `1 x 1`). Same canonical order as
/// [`nt_tile`], so a value does not depend on the tile that computed it.
///
/// Memory order: the first `NR * s` rows (`s = n / NR`) are `NR` runs of `s`
/// rows, and tile `j` takes row `j` of every run. Each run is then read as one
/// long sequential stream (row `j + 1` of a run starts where row `j` ends),
/// which the hardware's prefetchers follow across pages, and each step
/// prefetches into L2 the lines [`MATVEC_AHEAD`] bytes ahead in every stream
/// (past a row's end, the start of the run's next row). Neighbouring rows in
/// a tile would instead be `NR` short streams of one row each, every one of
/// them a fresh start for the prefetchers. Layer-like mat-vecs (3072, 576 and
/// 2048 rows of 2048) on a 2-vCPU Xeon (AVX-512), rows of 4 KiB: bf16
/// 14.5 -> 16.2 GB/s, f32 15.2 -> 16.2 GB/s; a prefetch 512 bytes ahead was
/// slower (15.5), 2 KiB the same as 1 KiB. V2-Lite decode steps there, cold
/// layers, context 1 and 1024: bf16 weights 12-14% faster on one thread and
/// 8-10% on two, f32 weights about 3% (with one prefetch per line; one per
/// two f32 lines was 3% slower).
///
/// Operands: `a` is `1 x k` (f32), `B` is `n x k` (`E`, widened on load), `c`
/// is `1 x n`.
///
/// # Safety
/// Extents checked by the builder of `p`; `S` available.
#[inline(always)]
pub(super) unsafe fn nt_matvec<S: Simd, E: Elem, const NR: usize>(p: &GemmArgs<E>) {
    let lanes = S::LANES;
    let k = p.k;
    let k_vec = k - k % lanes;
    let k_pair = k - k % (2 * lanes);
    let runs = p.n / NR;
    // Elements of B a prefetch runs ahead of the loads (at least one).
    let ahead = (MATVEC_AHEAD / core::mem::size_of::<E>().max(1)).max(1);
    // SAFETY (whole body): row j + r * runs < NR * runs <= n of B and columns
    // < k are in the checked extents; the prefetch addresses are formed with
    // wrapping arithmetic and a prefetch never faults.
    unsafe {
        for j in 0..runs {
            let mut acc = [S::zero(); NR];
            let mut kk = 0;
            // Two vectors a step, in the pair order ([`Elem::vload_half`]):
            // both halves of a row at once (its bytes are loaded once).
            while kk < k_pair {
                let a0 = E::aload_half::<S, 0>(p.a.add(kk));
                let a1 = E::aload_half::<S, 1>(p.a.add(kk));
                for (r, s) in acc.iter_mut().enumerate() {
                    let at = (j + r * runs) * p.ldb + kk;
                    super::simd::prefetch_rows(p.b.wrapping_add(at + ahead), 1, 0, 2 * lanes);
                    let row = p.b.add(at);
                    *s = S::fma(a0, E::vload_half::<S, 0>(row), *s);
                    *s = S::fma(a1, E::vload_half::<S, 1>(row), *s);
                }
                kk += 2 * lanes;
            }
            if kk < k_vec {
                let a_vec = S::load(p.a.add(kk));
                for (r, s) in acc.iter_mut().enumerate() {
                    let row = p.b.add((j + r * runs) * p.ldb + kk);
                    *s = S::fma(a_vec, E::vload::<S>(row), *s);
                }
            }
            for (r, &v) in acc.iter().enumerate() {
                let row = j + r * runs;
                let b = p.b.add(row * p.ldb);
                let mut sum = S::hsum(v);
                for t in k_vec..k {
                    sum += *p.a.add(t) * (*b.add(t)).widen();
                }
                *p.c.add(row) = sum;
            }
        }
        for j in NR * runs..p.n {
            nt_tile::<S, E, 1, 1>(p, 0, j);
        }
    }
}
