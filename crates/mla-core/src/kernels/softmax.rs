//! Online softmax pieces (one block of keys at a time, with a running maximum
//! `m` and sum `l`), along a row or down the columns of a block, and the
//! vector `exp` they use.
//!
//! The safe entry points are [`softmax_block`](super::softmax_block),
//! [`softmax_block_with`](super::softmax_block_with) and
//! [`softmax_cols`](super::softmax_cols).

use super::simd::Simd;

/// Below this, `exp` returns 0 (e^-87 ~ 1.6e-38, near the f32 normal range).
pub(crate) const EXP_LO: f32 = -87.0;
/// Above this the vector `exp` clamps (softmax arguments are <= 0).
pub(crate) const EXP_HI: f32 = 88.0;
/// log2(e): `x * LOG2E` rounded is the power of two of `e^x`.
pub(crate) const LOG2E: f32 = core::f32::consts::LOG2_E;
/// Cody-Waite split of ln 2: `LN2_HI` has few significant bits, so `n * LN2_HI`
/// is exact for the `n` that occur and `x - n ln 2` loses nothing.
pub(crate) const LN2_HI: f32 = 0.693_359_4;
/// The rest of ln 2 (`ln 2 - LN2_HI`).
pub(crate) const LN2_LO: f32 = -2.121_944_4e-4;
/// The Cephes `expf` polynomial, highest degree first: `e^r ~ 1 + r + r^2 P(r)`
/// with |relative error| < 2^-23 on [-ln2/2, ln2/2].
pub(crate) const EXP_P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    0.166_666_65,
    0.5,
];

/// `e^x` per lane: `x = n ln2 + r`, `e^x = 2^n e^r` with the polynomial
/// [`EXP_P`] for `e^r` (fused multiply-adds where the ISA has them); arguments
/// are clamped to [`EXP_LO`, `EXP_HI`] and lanes below `EXP_LO` (or NaN) give 0.
///
/// # Safety
/// `S` available.
#[inline(always)]
pub(crate) unsafe fn exp_poly<S: Simd>(x: S::V) -> S::V {
    // SAFETY: register arithmetic only; S available (caller).
    unsafe {
        let clamped = S::max(S::min(x, S::splat(EXP_HI)), S::splat(EXP_LO));
        let n = S::round(S::mul(clamped, S::splat(LOG2E)));
        let r = S::fnma(n, S::splat(LN2_HI), clamped);
        let r = S::fnma(n, S::splat(LN2_LO), r);
        let mut p = S::splat(EXP_P[0]);
        for &c in &EXP_P[1..] {
            p = S::fma(p, r, S::splat(c));
        }
        let y = S::fma(p, S::mul(r, r), S::add(r, S::splat(1.0)));
        S::keep_where_ge(x, EXP_LO, S::mul(y, S::pow2(n)))
    }
}

/// Raw arguments of one block of a row softmax ([`online_softmax_row`]).
#[derive(Clone, Copy)]
pub(crate) struct RowArgs {
    /// `len` scores, the first `valid` real.
    pub(super) x: *mut f32,
    pub(super) len: usize,
    pub(super) valid: usize,
    pub(super) scale: f32,
}

/// One block of an online softmax along a row (see
/// [`softmax_block`](super::softmax_block)): `x` (`len` scores, the first
/// `valid` real, the rest set to -inf) becomes `exp(x * scale - m_new)`; the
/// running max `m` and sum `l` are updated. Returns `exp(m_old - m_new)` (0 on
/// the first block). Vectors of `S::LANES` along the row.
///
/// # Safety
/// `x` valid for `len` elements, `len` a multiple of `S::LANES`, `valid <= len`;
/// `S` available.
#[inline(always)]
pub(crate) unsafe fn online_softmax_row<S: Simd>(p: &RowArgs, m: &mut f32, l: &mut f32) -> f32 {
    let RowArgs {
        x,
        len,
        valid,
        scale,
    } = *p;
    let lanes = S::LANES;
    // SAFETY: all accesses are x[i] with i < len (caller's extent).
    unsafe {
        for i in valid..len {
            *x.add(i) = f32::NEG_INFINITY;
        }
        let sv = S::splat(scale);
        let mut mx = S::splat(f32::NEG_INFINITY);
        let mut i = 0;
        while i < len {
            let v = S::mul(S::load(x.add(i)), sv);
            S::store(x.add(i), v);
            mx = S::max(mx, v);
            i += lanes;
        }
        let m_new = m.max(S::hmax(mx));
        let alpha = if *m == f32::NEG_INFINITY {
            0.0
        } else {
            libm::expf(*m - m_new)
        };
        let mv = S::splat(m_new);
        let neg = S::splat(-1.0);
        let mut sum = S::zero();
        let mut i = 0;
        while i < len {
            // x - m as fma(m, -1, x): exact (one rounding), like a subtraction.
            let e = S::exp(S::fma(mv, neg, S::load(x.add(i))));
            S::store(x.add(i), e);
            sum = S::add(sum, e);
            i += lanes;
        }
        *l = *l * alpha + S::hsum(sum);
        *m = m_new;
        alpha
    }
}

/// Raw arguments of one block of a column softmax ([`online_softmax_cols`]).
#[derive(Clone, Copy)]
pub(crate) struct ColsArgs {
    /// Scores, `rows x cols` at row stride `ld`.
    pub(super) x: *mut f32,
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) ld: usize,
    pub(super) scale: f32,
    /// Running max, running sum and the factor `exp(m_old - m_new)`, `cols` each.
    pub(super) m: *mut f32,
    pub(super) l: *mut f32,
    pub(super) alpha: *mut f32,
}

/// One block of an online softmax down the columns (see
/// [`softmax_cols`](super::softmax_cols)): `x` is `rows x cols` (stride `ld`),
/// column `j` one softmax with running max `m[j]` and sum `l[j]`; `alpha[j]`
/// receives `exp(m_old - m_new)`. Vectors of `S::LANES` across the columns,
/// then the `cols % LANES` last columns one by one.
///
/// # Safety
/// `x` valid for `rows` rows of `cols` (stride `ld`); `m`, `l`, `alpha` for
/// `cols`; `S` available.
#[inline(always)]
pub(crate) unsafe fn online_softmax_cols<S: Simd>(p: &ColsArgs) {
    let ColsArgs {
        x,
        rows,
        cols,
        ld,
        scale,
        m,
        l,
        alpha,
    } = *p;
    let lanes = S::LANES;
    let cv = cols - cols % lanes;
    // SAFETY (whole body): offsets r * ld + j with r < rows and j < cols, and
    // j < cols for m, l, alpha: inside the caller's extents.
    unsafe {
        let sv = S::splat(scale);
        let neg = S::splat(-1.0);
        let mut j = 0;
        while j < cv {
            let mut mx = S::splat(f32::NEG_INFINITY);
            for r in 0..rows {
                let p = x.add(r * ld + j);
                let v = S::mul(S::load(p), sv);
                S::store(p, v);
                mx = S::max(mx, v);
            }
            let m_old = S::load(m.add(j));
            let m_new = S::max(m_old, mx);
            // exp(m_old - m_new): 0 on the first block (m_old = -inf).
            let a = S::exp(S::fma(m_new, neg, m_old));
            let mut sum = S::zero();
            for r in 0..rows {
                let p = x.add(r * ld + j);
                let e = S::exp(S::fma(m_new, neg, S::load(p)));
                S::store(p, e);
                sum = S::add(sum, e);
            }
            S::store(l.add(j), S::fma(S::load(l.add(j)), a, sum));
            S::store(m.add(j), m_new);
            S::store(alpha.add(j), a);
            j += lanes;
        }
        for j in cv..cols {
            let mut mx = f32::NEG_INFINITY;
            for r in 0..rows {
                let p = x.add(r * ld + j);
                *p *= scale;
                mx = mx.max(*p);
            }
            let m_old = *m.add(j);
            let m_new = m_old.max(mx);
            let a = if m_old == f32::NEG_INFINITY {
                0.0
            } else {
                libm::expf(m_old - m_new)
            };
            let mut sum = 0.0;
            for r in 0..rows {
                let p = x.add(r * ld + j);
                *p = libm::expf(*p - m_new);
                sum += *p;
            }
            *l.add(j) = *l.add(j) * a + sum;
            *m.add(j) = m_new;
            *alpha.add(j) = a;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{edges, isas_here, rand};
    use super::super::{lanes, softmax_block_with, softmax_cols};

    /// Two blocks of a row softmax (the second partly padding) on every ISA
    /// here: the running max and sum and the rescaled accumulator match f64;
    /// then the vector `exp` over the softmax range, to 3e-7 relative.
    #[test]
    #[cfg_attr(miri, ignore)]
    fn softmax_block_all_isas() {
        for isa in isas_here() {
            let raw = rand(48, 7).iter().map(|x| x * 40.0).collect::<Vec<_>>();
            let (mut m, mut l) = (f32::NEG_INFINITY, 0.0);
            let mut acc = 0.0f64;
            let mut x1 = raw[..32].to_vec();
            let a1 = softmax_block_with(isa, &mut x1, 32, 0.5, &mut m, &mut l).unwrap();
            assert_eq!(a1, 0.0);
            acc += x1.iter().map(|&v| v as f64).sum::<f64>();
            let mut x2 = raw[32..].to_vec();
            x2.resize(32, 0.0);
            let a2 = softmax_block_with(isa, &mut x2, 16, 0.5, &mut m, &mut l).unwrap();
            assert!(x2[16..].iter().all(|&v| v == 0.0));
            acc = acc * a2 as f64 + x2.iter().map(|&v| v as f64).sum::<f64>();
            let mx = raw.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b * 0.5));
            let want: f64 = raw.iter().map(|&v| ((v * 0.5 - mx) as f64).exp()).sum();
            assert_eq!(m, mx);
            assert!(
                ((l as f64) - want).abs() < 1e-5 * want,
                "{isa:?}: l {l} vs {want}"
            );
            assert!(
                (acc - want).abs() < 1e-5 * want,
                "{isa:?}: sum {acc} vs {want}"
            );
            // Exp accuracy over the softmax range.
            for i in 0..2000 {
                let v = -(i as f32) * 0.05;
                let mut row = [v; 16];
                let (mut m2, mut l2) = (0.0f32, 0.0);
                softmax_block_with(isa, &mut row, 16, 1.0, &mut m2, &mut l2);
                let want = (v as f64).exp();
                assert!(
                    ((row[0] as f64) - want).abs() <= 3e-7 * want + 1e-37,
                    "{isa:?} exp({v}) = {} vs {want}",
                    row[0]
                );
            }
            // Lengths that are not a multiple of SOFTMAX_MULTIPLE, or a
            // `valid` past the end, are refused and change nothing.
            let mut bad = [1.0f32; 8];
            assert_eq!(
                softmax_block_with(isa, &mut bad, 8, 1.0, &mut m, &mut l),
                None
            );
            let mut row = [1.0f32; 16];
            assert_eq!(
                softmax_block_with(isa, &mut row, 17, 1.0, &mut m, &mut l),
                None
            );
            assert_eq!((bad, row), ([1.0; 8], [1.0; 16]));
        }
    }

    /// Two blocks of a column softmax on every ISA here, with column counts
    /// around the lanes (vector columns and the scalar tail): the scores, the
    /// running max and sum and the factor alpha match f64.
    #[test]
    fn softmax_cols_all_isas() {
        for isa in isas_here() {
            for cols in edges(lanes(isa)) {
                let ld = cols + 1;
                let (rows1, rows2) = (3, 5);
                let raw1: Vec<f32> = rand(rows1 * ld, 31).iter().map(|x| x * 40.0).collect();
                let raw2: Vec<f32> = rand(rows2 * ld, 32).iter().map(|x| x * 40.0).collect();
                let scale = 0.5;
                let mut m = vec![f32::NEG_INFINITY; cols];
                let mut l = vec![0f32; cols];
                let mut alpha = vec![f32::NAN; cols];
                let mut x1 = raw1.clone();
                assert!(softmax_cols(
                    isa, &mut x1, rows1, cols, ld, scale, &mut m, &mut l, &mut alpha
                ));
                assert!(alpha.iter().all(|&a| a == 0.0), "{isa:?}: first alpha");
                let m1 = m.clone();
                let mut x2 = raw2.clone();
                assert!(softmax_cols(
                    isa, &mut x2, rows2, cols, ld, scale, &mut m, &mut l, &mut alpha
                ));
                for j in 0..cols {
                    let col = |raw: &[f32], rows: usize| -> Vec<f64> {
                        (0..rows)
                            .map(|r| (raw[r * ld + j] * scale) as f64)
                            .collect()
                    };
                    let (s1, s2) = (col(&raw1, rows1), col(&raw2, rows2));
                    let max1 = s1.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let max = s2.iter().cloned().fold(max1, f64::max);
                    let sum: f64 = s1.iter().chain(&s2).map(|&s| (s - max).exp()).sum();
                    let what = format!("{isa:?} cols {cols} [{j}]");
                    assert_eq!(m[j] as f64, max, "{what}: m");
                    assert!(
                        ((l[j] as f64) - sum).abs() <= 1e-5 * sum,
                        "{what}: l {} vs {sum}",
                        l[j]
                    );
                    // exp of an f32 argument `d`: its rounding (|d| eps / 2
                    // relative) and the polynomial's error (< 3e-7).
                    let tol = |d: f64| 3e-7 + d.abs() * f32::EPSILON as f64;
                    let want_alpha = (m1[j] as f64 - max).exp();
                    assert!(
                        ((alpha[j] as f64) - want_alpha).abs()
                            <= tol(m1[j] as f64 - max) * want_alpha + 1e-37,
                        "{what}: alpha {} vs {want_alpha}",
                        alpha[j]
                    );
                    for (r, &s) in s2.iter().enumerate() {
                        let want = (s - max).exp();
                        let got = x2[r * ld + j] as f64;
                        assert!(
                            (got - want).abs() <= tol(s - max) * want + 1e-37,
                            "{what} row {r}: {got} vs {want}"
                        );
                    }
                }
                // Too short a buffer: refused, nothing changed.
                let before = (m.clone(), l.clone());
                let mut short = raw2[..ld].to_vec();
                assert!(!softmax_cols(
                    isa, &mut short, 2, cols, ld, scale, &mut m, &mut l, &mut alpha
                ));
                assert_eq!((m, l), before);
            }
        }
    }
}
