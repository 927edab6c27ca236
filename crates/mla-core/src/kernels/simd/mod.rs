//! The vector abstraction every kernel is written in ([`Simd`]), the element
//! types a matrix may hold ([`Elem`]), and the implementations: portable
//! ([`Scalar`]), x86-64 (`Avx2`, `Avx512`), aarch64 (`Neon`).

mod elem;
#[cfg(target_arch = "aarch64")]
mod neon;
mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) use elem::E4m3;
pub(crate) use elem::Elem;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) use elem::PairedA;
#[allow(unused_imports)]
pub(crate) use elem::E4M3_UNIT;
#[cfg(target_arch = "aarch64")]
pub(crate) use neon::Neon;
pub(crate) use scalar::Scalar;
#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2, Avx512};

/// One vector instruction set: `LANES` f32 lanes in a register type `V`.
///
/// # Safety
/// The methods use the instruction set's intrinsics: they may only run where
/// that instruction set is available (the dispatchers check
/// [`Isa::supported`](super::Isa::supported) and call them only inside
/// `#[target_feature]` functions). Pointer arguments must be valid for `LANES`
/// elements.
pub(crate) trait Simd: Copy {
    /// f32 lanes per vector.
    const LANES: usize;
    /// True when [`Simd::load_bf16_half`] takes both halves from one load in
    /// an order of its own: an NT tile then holds both halves of its rows of
    /// B at once (`Tiles::nt_paired`).
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    const BF16_PAIRED: bool = false;
    /// The register type.
    type V: Copy;

    // Loads and stores (unaligned).
    unsafe fn zero() -> Self::V;
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);

    // Widening loads: `LANES` elements of a narrower type, widened to f32 in
    // registers (one per element type, reached through `Elem::vload`).
    unsafe fn load_bf16(p: *const half::bf16) -> Self::V;
    unsafe fn load_f16(p: *const half::f16) -> Self::V;
    /// Half `H` (0 or 1) of the `2 * LANES` bf16 at `p`, widened, in this
    /// instruction set's pair order, which [`Simd::load_bf16_order`] gives
    /// for f32: the dot products of the NT product take bf16 weights two
    /// vectors at a time. The halves in order (elements `H * LANES ..`)
    /// unless an instruction set has a cheaper order.
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    #[inline(always)]
    unsafe fn load_bf16_half<const H: usize>(p: *const half::bf16) -> Self::V {
        // SAFETY: forwarded contract (p valid for 2 * LANES elements).
        unsafe { Self::load_bf16(p.add(H * Self::LANES)) }
    }
    /// Half `H` of the `2 * LANES` f32 at `p` in the order
    /// [`Simd::load_bf16_half`] gives bf16.
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    #[inline(always)]
    unsafe fn load_bf16_order<const H: usize>(p: *const f32) -> Self::V {
        // SAFETY: forwarded contract (p valid for 2 * LANES elements).
        unsafe { Self::load(p.add(H * Self::LANES)) }
    }
    /// Stores `v`, half `H` in the order of [`Simd::load_bf16_order`], back
    /// where that load took it from.
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    #[inline(always)]
    unsafe fn store_bf16_order<const H: usize>(p: *mut f32, v: Self::V) {
        // SAFETY: forwarded contract (p valid for 2 * LANES elements).
        unsafe { Self::store(p.add(H * Self::LANES), v) }
    }
    /// `LANES` FP8 E4M3 codes (bytes), each widened to its value times
    /// `2^-120` ([`E4M3_UNIT`]): the byte sign-extended to 32 bits, shifted
    /// left by 20 and masked with `0x87F0_0000` puts the sign, the 4 exponent
    /// and 3 mantissa bits where an f32 has them, which reads as the E4M3
    /// value scaled by `2^-120`, exactly (subnormal codes land on f32
    /// subnormals). NaN codes (`0x7f`, `0xff`) read as ±480 times the unit:
    /// callers look for them separately.
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    unsafe fn load_e4m3(p: *const u8) -> Self::V;

    // Arithmetic, lane by lane.
    /// `a * b + c` (fused where the instruction set has it).
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `c - a * b` (fused where the instruction set has it).
    unsafe fn fnma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// The larger lane (the instruction's NaN rule).
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    /// The smaller lane (the instruction's NaN rule).
    unsafe fn min(a: Self::V, b: Self::V) -> Self::V;
    /// Rounds to the nearest integer, ties to even.
    unsafe fn round(v: Self::V) -> Self::V;
    /// `2^n` for lanes that hold integers in -126..=127 (built from the
    /// exponent bits).
    unsafe fn pow2(n: Self::V) -> Self::V;
    /// The lanes of `v` where `x >= bound`, 0 elsewhere (and where `x` is NaN).
    unsafe fn keep_where_ge(x: Self::V, bound: f32, v: Self::V) -> Self::V;

    // Across the lanes.
    /// Sum of the lanes, in a fixed order.
    unsafe fn hsum(v: Self::V) -> f32;
    /// Maximum of the lanes.
    unsafe fn hmax(v: Self::V) -> f32;

    /// `e^x` per lane (relative error ~1e-7); exactly 0 below
    /// [`EXP_LO`](super::softmax::EXP_LO). The polynomial of
    /// [`exp_poly`](super::softmax::exp_poly) unless an implementation has its own.
    #[inline(always)]
    unsafe fn exp(x: Self::V) -> Self::V {
        // SAFETY: forwarded contract (exp_poly uses only the methods above).
        unsafe { super::softmax::exp_poly::<Self>(x) }
    }

    /// Transposes a `LANES x LANES` block, widening: element `t` of row `r`
    /// (at `src + r * lds + t`) goes to `dst + t * ldd + r`.
    ///
    /// # Safety
    /// `src` valid for `LANES` rows of `LANES` elements (stride `lds`), `dst`
    /// for `LANES` rows of `LANES` f32 (stride `ldd`); the ISA is available.
    #[inline(always)]
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    unsafe fn transpose<E: Elem>(src: *const E, lds: usize, dst: *mut f32, ldd: usize) {
        for r in 0..Self::LANES {
            for t in 0..Self::LANES {
                // SAFETY: r, t < LANES: inside the caller's extents.
                unsafe { *dst.add(t * ldd + r) = (*src.add(r * lds + t)).widen() };
            }
        }
    }
}

/// [`prefetch_l2`] for `rows` rows of `E` from `p` (row stride `ld`
/// elements), `n` elements of each: the lines a step of a kernel will read
/// there (addresses in wrapping arithmetic, never read).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
pub(crate) fn prefetch_rows<E>(p: *const E, rows: usize, ld: usize, n: usize) {
    let bytes = n * core::mem::size_of::<E>();
    for r in 0..rows {
        let row = p.wrapping_add(r * ld).cast::<u8>();
        let mut off = 0;
        while off < bytes {
            prefetch_l2(row.wrapping_add(off));
            off += super::isa::CACHE_LINE;
        }
    }
}

/// Hints the cache hierarchy to bring the line at `p` into L2 (no effect on
/// the results; a no-op where there is no prefetch instruction).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
pub(crate) fn prefetch_l2(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and does not access memory
    // architecturally, whatever the address; SSE is baseline on x86-64.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T1 }>(p.cast::<i8>())
    };
    #[cfg(target_arch = "aarch64")]
    // SAFETY: PRFM never faults and has no architectural effect.
    unsafe {
        core::arch::asm!("prfm pldl2keep, [{0}]", in(reg) p, options(nostack, readonly, preserves_flags))
    };
}
