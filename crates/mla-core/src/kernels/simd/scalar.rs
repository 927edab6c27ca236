//! The portable vector: `SCALAR_LANES` f32 in an array, plain multiply-add
//! (no FMA), `libm` for `exp`. Runs everywhere (Cortex-M included).

use super::Simd;
use crate::kernels::isa::SCALAR_LANES as SL;
use crate::kernels::softmax::EXP_LO;
use half::{bf16, f16};

/// The portable fallback: 8 lanes in an array (4 on small targets, for code
/// size), plain multiply-add (no FMA).
#[derive(Clone, Copy)]
pub(crate) struct Scalar;

/// Applies `f` lane by lane to `a` and `b`.
#[inline(always)]
fn zip_lanes(a: [f32; SL], b: [f32; SL], f: impl Fn(f32, f32) -> f32) -> [f32; SL] {
    let mut r = a;
    r.iter_mut().zip(b.iter()).for_each(|(r, &b)| *r = f(*r, b));
    r
}

impl Simd for Scalar {
    const LANES: usize = SL;
    type V = [f32; SL];
    #[inline(always)]
    unsafe fn zero() -> Self::V {
        [0.0; SL]
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self::V {
        [x; SL]
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::V {
        // SAFETY: p is valid for SL f32 (trait contract); read_unaligned needs no alignment.
        unsafe { p.cast::<[f32; SL]>().read_unaligned() }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::V) {
        // SAFETY: p is valid for SL f32 writes (trait contract).
        unsafe { p.cast::<[f32; SL]>().write_unaligned(v) }
    }
    #[inline(always)]
    unsafe fn load_bf16(p: *const bf16) -> Self::V {
        // SAFETY: p is valid for SL elements (trait contract).
        let h = unsafe { p.cast::<[bf16; SL]>().read_unaligned() };
        h.map(|x| x.to_f32())
    }
    #[inline(always)]
    unsafe fn load_f16(p: *const f16) -> Self::V {
        // SAFETY: p is valid for SL elements (trait contract).
        let h = unsafe { p.cast::<[f16; SL]>().read_unaligned() };
        widen_f16(h)
    }
    #[inline(always)]
    unsafe fn load_e4m3(p: *const u8) -> Self::V {
        // SAFETY: p is valid for SL bytes (trait contract).
        let b = unsafe { p.cast::<[u8; SL]>().read_unaligned() };
        b.map(super::elem::e4m3_bits)
    }
    #[inline(always)]
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        let mut r = c;
        for ((r, &a), &b) in r.iter_mut().zip(a.iter()).zip(b.iter()) {
            *r += a * b;
        }
        r
    }
    #[inline(always)]
    unsafe fn fnma(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        let mut r = c;
        for ((r, &a), &b) in r.iter_mut().zip(a.iter()).zip(b.iter()) {
            *r -= a * b;
        }
        r
    }
    #[inline(always)]
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V {
        zip_lanes(a, b, |a, b| a + b)
    }
    #[inline(always)]
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V {
        zip_lanes(a, b, |a, b| a * b)
    }
    #[inline(always)]
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V {
        zip_lanes(a, b, |a, b| if b > a { b } else { a })
    }
    #[inline(always)]
    unsafe fn min(a: Self::V, b: Self::V) -> Self::V {
        zip_lanes(a, b, |a, b| if b < a { b } else { a })
    }
    #[inline(always)]
    unsafe fn round(v: Self::V) -> Self::V {
        v.map(libm::rintf)
    }
    #[inline(always)]
    unsafe fn pow2(n: Self::V) -> Self::V {
        n.map(|n| f32::from_bits(((n as i32).wrapping_add(127) as u32) << 23))
    }
    #[inline(always)]
    unsafe fn keep_where_ge(x: Self::V, bound: f32, v: Self::V) -> Self::V {
        zip_lanes(x, v, |x, v| if x >= bound { v } else { 0.0 })
    }
    #[inline(always)]
    unsafe fn hsum(v: Self::V) -> f32 {
        // Halve the vector repeatedly: lane i += lane i + half.
        let mut v = v;
        let mut half = SL / 2;
        while half > 0 {
            let (lo, hi) = v.split_at_mut(half);
            lo.iter_mut().zip(hi.iter()).for_each(|(a, &b)| *a += b);
            half /= 2;
        }
        v[0]
    }
    #[inline(always)]
    unsafe fn hmax(v: Self::V) -> f32 {
        v.iter()
            .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a })
    }
    /// `libm::expf` per lane (not the shared polynomial: no FMA here, and the
    /// library function is exact to the last bit or so).
    #[inline(always)]
    unsafe fn exp(x: Self::V) -> Self::V {
        x.map(|v| if v < EXP_LO { 0.0 } else { libm::expf(v) })
    }
}

/// f16 to f32 for a scalar vector (software conversion on targets without
/// hardware support: kept out of line on small targets, for code size).
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    inline(never)
)]
#[cfg_attr(any(target_arch = "x86_64", target_arch = "aarch64"), inline(always))]
fn widen_f16(h: [f16; SL]) -> [f32; SL] {
    h.map(|x| x.to_f32())
}
