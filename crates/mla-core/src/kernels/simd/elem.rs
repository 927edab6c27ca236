//! The element types a weight matrix may be stored in, each widened to f32 on
//! load (every f16 and bf16 value is exactly an f32, so widening loses nothing
//! and the arithmetic is f32 whatever the storage).
//!
//! Adding an element type (for instance FP8 E4M3) takes: a widening load on
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
