//! Vector operations: scale, axpy, dot, RMSNorm, bias, and widening a typed
//! slice chunk by chunk.

use super::dispatch::dispatch;
use super::isa::{isa, usable, Isa};
use super::mat::{Mat, MatE, MatMut};
use super::simd::{Elem, Simd};
use crate::dtype::Elems;
use crate::weights::Tensor;

/// `dst[i] = src[i]` widened to f32 for `n` elements: vectors, then the
/// `n % LANES` tail (exact: every f16/bf16 value is an f32).
///
/// # Safety
/// `src` valid for `n` elements, `dst` for `n` f32; `S` available.
#[inline(always)]
pub(crate) unsafe fn widen_row<S: Simd, E: Elem>(src: *const E, dst: *mut f32, n: usize) {
    let lanes = S::LANES;
    let n_vec = n - n % lanes;
    let mut i = 0;
    // SAFETY: i + 2 LANES (pairs) or i + LANES <= n_vec <= n in the vector
    // loops, i < n in the tail.
    unsafe {
        // Two vectors a step in the type's pair order, stored back in place
        // (bf16 on AVX2: one load, one shuffle per vector); small targets
        // keep one loop (code size).
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        while i + 2 * lanes <= n_vec {
            E::astore_half::<S, 0>(dst.add(i), E::vload_half::<S, 0>(src.add(i)));
            E::astore_half::<S, 1>(dst.add(i), E::vload_half::<S, 1>(src.add(i)));
            i += 2 * lanes;
        }
        while i < n_vec {
            S::store(dst.add(i), E::vload::<S>(src.add(i)));
            i += lanes;
        }
        while i < n {
            *dst.add(i) = (*src.add(i)).widen();
            i += 1;
        }
    }
}

/// Widens `src` into `out` (`min(len)` elements; f16/bf16 with the vector
/// loads of the kernels, FP8 dequantized with its block scales).
pub fn widen(src: Elems, out: &mut [f32]) {
    let n = src.len().min(out.len());
    let isa = usable(isa());
    match src {
        Elems::F32(s) => {
            if let (Some(d), Some(s)) = (out.get_mut(..n), s.get(..n)) {
                d.copy_from_slice(s);
            }
        }
        // SAFETY: src and out hold at least n elements; ISA usable.
        Elems::BF16(s) => unsafe { dispatch!(isa, widen(s.as_ptr(), out.as_mut_ptr(), n)) },
        // SAFETY: as above.
        Elems::F16(s) => unsafe { dispatch!(isa, widen(s.as_ptr(), out.as_mut_ptr(), n)) },
        Elems::F8(_) => src.widen_into(out),
    }
}

/// `x[i] *= s` for `n` elements: vectors, then the `n % LANES` tail.
///
/// # Safety
/// `x` valid for `n` elements; `S` available.
#[inline(always)]
pub(super) unsafe fn scale_row<S: Simd>(x: *mut f32, n: usize, s: f32) {
    let lanes = S::LANES;
    // SAFETY: x valid for n elements (caller); vector steps stay below n - n % lanes.
    unsafe {
        let sv = S::splat(s);
        let mut i = 0;
        while i + lanes <= n {
            S::store(x.add(i), S::mul(S::load(x.add(i)), sv));
            i += lanes;
        }
        while i < n {
            *x.add(i) *= s;
            i += 1;
        }
    }
}

/// `y[i] += s * x[i]` for `n` elements: vectors (fused), then the tail.
///
/// # Safety
/// `x` and `y` valid for `n` elements; `S` available.
#[inline(always)]
pub(super) unsafe fn axpy_row<S: Simd>(s: f32, x: *const f32, y: *mut f32, n: usize) {
    let lanes = S::LANES;
    // SAFETY: x and y valid for n elements (caller); vector steps stay below n - n % lanes.
    unsafe {
        let sv = S::splat(s);
        let mut i = 0;
        while i + lanes <= n {
            S::store(y.add(i), S::fma(sv, S::load(x.add(i)), S::load(y.add(i))));
            i += lanes;
        }
        while i < n {
            *y.add(i) += s * *x.add(i);
            i += 1;
        }
    }
}

/// `x[i] *= s`.
pub fn scale(x: &mut [f32], s: f32) {
    scale_with(isa(), x, s)
}

/// [`scale`] on a given instruction set (scalar if unsupported here).
pub(crate) fn scale_with(isa: Isa, x: &mut [f32], s: f32) {
    // SAFETY: x valid for its length; ISA usable.
    unsafe { dispatch!(usable(isa), scale(x.as_mut_ptr(), x.len(), s)) }
}

/// `y[i] += s * x[i]` over the shorter length.
pub fn axpy(s: f32, x: &[f32], y: &mut [f32]) {
    axpy_with(isa(), s, x, y)
}

/// [`axpy`] on a given instruction set (scalar if unsupported here).
pub(crate) fn axpy_with(isa: Isa, s: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    // SAFETY: both valid for n <= their lengths; ISA usable.
    unsafe { dispatch!(usable(isa), axpy(s, x.as_ptr(), y.as_mut_ptr(), n)) }
}

/// `sum_i a[i] * b[i]` over the shorter length (canonical order).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut out = [0f32];
    let (Some(a), Some(b), Some(mut c)) = (
        a.get(..n).and_then(|a| Mat::new(a, 1, n, n)),
        b.get(..n).and_then(|b| Mat::new(b, 1, n, n)),
        MatMut::new(&mut out, 1, 1, 1),
    ) else {
        return 0.0;
    };
    super::gemm_nt(&a, &MatE::F32(b), &mut c);
    out[0]
}

/// Calls `f(offset, chunk)` for consecutive chunks of `e` widened to f32
/// (one loop body for every element type).
fn widened(e: Elems, mut f: impl FnMut(usize, &[f32])) {
    const CHUNK: usize = 64;
    let mut buf = [0f32; CHUNK];
    let mut at = 0;
    while at < e.len() {
        let n = CHUNK.min(e.len() - at);
        let (Some(src), Some(dst)) = (e.slice(at, n), buf.get_mut(..n)) else {
            return;
        };
        src.widen_into(dst);
        f(at, dst);
        at += n;
    }
}

/// Adds bias entries `b[j0 + j]` to column `j` of every row of `c` (nothing
/// if `b` is `None`).
pub fn add_bias(b: Option<&Tensor>, j0: usize, c: &mut MatMut) {
    let Some(b) = b else { return };
    let Some(bias) = b.data.slice(j0, c.cols) else {
        return;
    };
    for i in 0..c.rows {
        let Some(row) = c.row(i) else { return };
        widened(bias, |at, w| {
            if let Some(y) = row.get_mut(at..) {
                y.iter_mut().zip(w).for_each(|(y, &v)| *y += v);
            }
        });
    }
}

/// In-place RMSNorm: `x[i] = w[i] * x[i] / sqrt(mean(x^2) + eps)`.
pub fn rmsnorm(x: &mut [f32], w: Elems, eps: f32) {
    if x.is_empty() {
        return;
    }
    let ms = dot(x, x) / x.len() as f32;
    let inv = 1.0 / libm::sqrtf(ms + eps);
    widened(w, |at, w| {
        if let Some(x) = x.get_mut(at..) {
            x.iter_mut().zip(w).for_each(|(x, &w)| *x = w * (*x * inv));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{isas_here, rand};
    use super::*;

    /// f16/bf16 rows widened with the vector loads of every ISA here equal
    /// the exact conversion, every length around the lanes.
    #[test]
    fn widen_rows_exact_on_every_isa() {
        use half::{bf16, f16};
        let v = rand(70, 9);
        let b: Vec<bf16> = v.iter().map(|&x| bf16::from_f32(x * 1e3)).collect();
        let h: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
        for isa in isas_here() {
            for n in [0, 1, 7, 8, 9, 16, 17, 33, 70] {
                let mut out = vec![f32::NAN; n];
                // SAFETY: b and h hold 70 >= n elements, out n; ISA supported.
                unsafe { dispatch!(isa, widen(b.as_ptr(), out.as_mut_ptr(), n)) };
                assert!(out
                    .iter()
                    .zip(&b)
                    .all(|(o, x)| o.to_bits() == x.to_f32().to_bits()));
                // SAFETY: as above.
                unsafe { dispatch!(isa, widen(h.as_ptr(), out.as_mut_ptr(), n)) };
                assert!(out
                    .iter()
                    .zip(&h)
                    .all(|(o, x)| o.to_bits() == x.to_f32().to_bits()));
            }
        }
        let mut out = [0f32; 3];
        widen(Elems::BF16(&b[..5]), &mut out);
        assert_eq!(out[2], b[2].to_f32(), "widen stops at the shorter length");
    }

    #[test]
    fn rmsnorm_matches_formula() {
        let mut x = [3.0f32, 4.0];
        let w = [1.0f32, 2.0];
        rmsnorm(&mut x, Elems::F32(&w), 0.0);
        let r = (12.5f32).sqrt();
        assert!((x[0] - 3.0 / r).abs() < 1e-6 && (x[1] - 8.0 / r).abs() < 1e-6);
    }

    /// `scale` and `axpy` on every ISA here, every length around the vector
    /// width: exactly the scalar formula (one rounding per element; the fused
    /// `axpy` rounds `s * x + y` once, so compare with f64).
    #[test]
    fn scale_axpy_all_isas() {
        for isa in isas_here() {
            let lanes = super::super::lanes(isa);
            for n in [0, 1, lanes - 1, lanes, lanes + 1, 2 * lanes + 3] {
                let x = rand(n, 21);
                let y0 = rand(n, 22);
                let mut y = y0.clone();
                scale_with(isa, &mut y, 0.75);
                for (i, (&got, &v)) in y.iter().zip(&y0).enumerate() {
                    assert_eq!(got, v * 0.75, "{isa:?} scale n={n} [{i}]");
                }
                let mut y = y0.clone();
                axpy_with(isa, -1.5, &x, &mut y);
                for i in 0..n {
                    let want = (-1.5 * x[i] as f64 + y0[i] as f64) as f32;
                    let unfused = -1.5 * x[i] + y0[i];
                    assert!(
                        y[i] == want || y[i] == unfused,
                        "{isa:?} axpy n={n} [{i}]: {} vs {want}",
                        y[i]
                    );
                }
            }
        }
    }
}
