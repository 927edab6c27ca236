//! The element types a weight matrix may be stored in, each widened to f32 on
//! load (every f16 and bf16 value is exactly an f32, so widening loses nothing
//! and the arithmetic is f32 whatever the storage).
//!
//! FP8 E4M3 ([`E4m3`]) widens to its value times [`E4M3_UNIT`] (`2^-120`):
//! the unit that a shift and a mask give without a table (see
//! [`Simd::load_e4m3`]); the FP8 drivers fold `2^120` into the block scale.
//!
//! Adding an element type takes: a widening load on
//! [`Simd`] (`LANES` bytes to `LANES` f32 in registers) and its scalar
//! counterpart, an [`Elem`] impl that forwards to them, a variant of
//! [`MatE`](crate::kernels::MatE) and of [`Elems`](crate::dtype::Elems). A
//! format with block scales (one scale per run of elements along k) belongs at
//! the matrix level, not here: the element widens as usual and the driver
//! scales each k-block's partial sums.

use super::Simd;
use half::{bf16, f16};

/// An element type a matrix can be stored in (widened to f32 on load).
pub(crate) trait Elem: Copy + Sync + Send + 'static {
    /// Loads `S::LANES` consecutive elements at `p`, widened to f32.
    ///
    /// # Safety
    /// `p` valid for `S::LANES` elements; `S` available.
    unsafe fn vload<S: Simd>(p: *const Self) -> S::V;
    /// Half `H` (0 or 1) of the `2 * S::LANES` elements at `p`, widened, in
    /// the pair order of the NT dot products: the halves in order, except
    /// where a widening is cheaper in another ([`Simd::load_bf16_half`]).
    ///
    /// # Safety
    /// `p` valid for `2 * S::LANES` elements; `S` available.
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    #[inline(always)]
    unsafe fn vload_half<S: Simd, const H: usize>(p: *const Self) -> S::V {
        // SAFETY: forwarded contract.
        unsafe { Self::vload::<S>(p.add(H * S::LANES)) }
    }
    /// Half `H` of the `2 * S::LANES` f32 at `a` in the order
    /// [`Elem::vload_half`] gives this type: what each lane of B meets.
    ///
    /// # Safety
    /// `a` valid for `2 * S::LANES` f32; `S` available.
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    #[inline(always)]
    unsafe fn aload_half<S: Simd, const H: usize>(a: *const f32) -> S::V {
        // SAFETY: forwarded contract.
        unsafe { S::load(a.add(H * S::LANES)) }
    }
    /// Stores half `H` of the `2 * S::LANES` f32 at `a`, in the order of
    /// [`Elem::aload_half`], back where that load took it from.
    ///
    /// # Safety
    /// `a` valid for `2 * S::LANES` f32; `S` available.
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    #[inline(always)]
    unsafe fn astore_half<S: Simd, const H: usize>(a: *mut f32, v: S::V) {
        // SAFETY: forwarded contract.
        unsafe { S::store(a.add(H * S::LANES), v) }
    }
    /// True when [`Elem::vload_half`] takes both halves from one load in an
    /// order of its own on `S` ([`Simd::BF16_PAIRED`] for bf16).
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    #[inline(always)]
    fn paired<S: Simd>() -> bool {
        false
    }
    /// The element widened to f32 (exact).
    fn widen(self) -> f32;
    /// `p` as an f32 pointer when `Self` is f32 (no widening needed).
    #[allow(dead_code)]
    fn as_f32(_p: *const Self) -> Option<*const f32> {
        None
    }
}

impl Elem for f32 {
    #[inline(always)]
    unsafe fn vload<S: Simd>(p: *const f32) -> S::V {
        // SAFETY: forwarded contract.
        unsafe { S::load(p) }
    }
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }
    #[inline(always)]
    fn as_f32(p: *const f32) -> Option<*const f32> {
        Some(p)
    }
}

impl Elem for bf16 {
    #[inline(always)]
    unsafe fn vload<S: Simd>(p: *const bf16) -> S::V {
        // SAFETY: forwarded contract.
        unsafe { S::load_bf16(p) }
    }
    #[inline(always)]
    unsafe fn vload_half<S: Simd, const H: usize>(p: *const bf16) -> S::V {
        // SAFETY: forwarded contract.
        unsafe { S::load_bf16_half::<H>(p) }
    }
    #[inline(always)]
    unsafe fn aload_half<S: Simd, const H: usize>(a: *const f32) -> S::V {
        // SAFETY: forwarded contract.
        unsafe { S::load_bf16_order::<H>(a) }
    }
    #[inline(always)]
    unsafe fn astore_half<S: Simd, const H: usize>(a: *mut f32, v: S::V) {
        // SAFETY: forwarded contract.
        unsafe { S::store_bf16_order::<H>(a, v) }
    }
    #[inline(always)]
    fn paired<S: Simd>() -> bool {
        S::BF16_PAIRED
    }
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }
}

impl Elem for f16 {
    #[inline(always)]
    unsafe fn vload<S: Simd>(p: *const f16) -> S::V {
        // SAFETY: forwarded contract.
        unsafe { S::load_f16(p) }
    }
    // Software conversion on targets without hardware support: out of line
    // there, for code size.
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        inline(never)
    )]
    #[cfg_attr(any(target_arch = "x86_64", target_arch = "aarch64"), inline(always))]
    fn widen(self) -> f32 {
        self.to_f32()
    }
}

/// `E` as a row of B whose row of A was stored in `E`'s pair order ahead of
/// the product (by [`gemm`](crate::kernels::gemm), into scratch): B widens as
/// `E` does, A loads as plain f32, so the NT dot products add the same
/// products in the same order as with `E` itself, without `E`'s pair-order
/// loads of A (two 128-bit loads and an insert per vector on AVX2).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[derive(Clone, Copy)]
#[repr(transparent)]
pub(crate) struct PairedA<E>(E);

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
impl<E: Elem> Elem for PairedA<E> {
    #[inline(always)]
    unsafe fn vload<S: Simd>(p: *const Self) -> S::V {
        // SAFETY: forwarded contract (transparent over E).
        unsafe { E::vload::<S>(p.cast::<E>()) }
    }
    #[inline(always)]
    unsafe fn vload_half<S: Simd, const H: usize>(p: *const Self) -> S::V {
        // SAFETY: forwarded contract (transparent over E).
        unsafe { E::vload_half::<S, H>(p.cast::<E>()) }
    }
    #[inline(always)]
    fn paired<S: Simd>() -> bool {
        E::paired::<S>()
    }
    #[inline(always)]
    fn widen(self) -> f32 {
        self.0.widen()
    }
}

/// The mask that keeps the sign, exponent and mantissa of an E4M3 code once
/// sign-extended to 32 bits and shifted left by 20.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
pub(crate) const E4M3_MASK: u32 = 0x87F0_0000;

/// `2^-120`: what [`E4m3`] widens a code to is its E4M3 value times this
/// (the tests' reference; the kernels fold `2^120` into their constants).
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) const E4M3_UNIT: f32 = f32::from_bits((127 - 120) << 23);

/// The f32 whose value is E4M3 code `b` times `2^-120`, exactly (NaN codes
/// excepted: they read as ±480 units). Sign-extend, shift left 20, mask.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
#[inline(always)]
pub(crate) fn e4m3_bits(b: u8) -> f32 {
    f32::from_bits(((b as i8 as i32 as u32) << 20) & E4M3_MASK)
}

/// An FP8 E4M3 code (one byte), widened to its value times [`E4M3_UNIT`].
/// Block scales are the driver's: it multiplies by `scale * 2^120`.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(transparent)]
pub(crate) struct E4m3(pub(crate) u8);

impl Elem for E4m3 {
    #[inline(always)]
    unsafe fn vload<S: Simd>(p: *const E4m3) -> S::V {
        // SAFETY: forwarded contract (E4m3 is one byte, transparent over u8).
        unsafe { S::load_e4m3(p.cast::<u8>()) }
    }
    #[inline(always)]
    fn widen(self) -> f32 {
        e4m3_bits(self.0)
    }
}
