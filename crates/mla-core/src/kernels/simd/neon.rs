//! aarch64 Advanced SIMD (NEON), 4 lanes. NEON is part of the aarch64 base ABI
//! (`aarch64-unknown-linux-gnu` and every Jetson), so no detection is needed.

use super::Simd;
use core::arch::aarch64::*;
use half::{bf16, f16};

/// NEON.
#[derive(Clone, Copy)]
pub(crate) struct Neon;

// SAFETY (every method below): NEON is always present on aarch64 targets with
// the `neon` feature (the default); pointers are valid for 4 elements (trait
// contract). vld1/vst1 have no alignment requirement beyond the element's.
impl Simd for Neon {
    const LANES: usize = 4;
    type V = float32x4_t;
    #[inline(always)]
    unsafe fn zero() -> float32x4_t {
        // SAFETY: see the impl comment.
        unsafe { vdupq_n_f32(0.0) }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> float32x4_t {
        // SAFETY: see the impl comment.
        unsafe { vdupq_n_f32(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> float32x4_t {
        // SAFETY: see the impl comment.
        unsafe { vld1q_f32(p) }
    }
    #[inline(always)]
    unsafe fn load_bf16(p: *const bf16) -> float32x4_t {
        // SAFETY: see the impl comment; bf16 is 2-byte aligned like u16.
        unsafe { vreinterpretq_f32_u32(vshll_n_u16::<16>(vld1_u16(p.cast::<u16>()))) }
    }
    #[inline(always)]
    unsafe fn load_f16(p: *const f16) -> float32x4_t {
        // SAFETY: see the impl comment. FCVTL (half to single, 4 lanes) is base
        // ARMv8.0 Advanced SIMD; the asm reads and writes only its registers.
        unsafe {
            let raw = vld1_u16(p.cast::<u16>());
            let out: float32x4_t;
            core::arch::asm!(
                "fcvtl {o:v}.4s, {i:v}.4h",
                o = lateout(vreg) out,
                i = in(vreg) raw,
                options(pure, nomem, nostack, preserves_flags)
            );
            out
        }
    }
    #[inline(always)]
    unsafe fn load_e4m3(p: *const u8) -> float32x4_t {
        // SAFETY: see the impl comment; 4 bytes read (the unaligned u32 read
        // below), widened s8 -> s16 -> s32 in registers.
        unsafe {
            let w = p.cast::<u32>().read_unaligned();
            let b = vreinterpret_s8_u32(vdup_n_u32(w));
            let x = vmovl_s16(vget_low_s16(vmovl_s8(b)));
            let x = vandq_u32(
                vreinterpretq_u32_s32(vshlq_n_s32::<20>(x)),
                vdupq_n_u32(super::elem::E4M3_MASK),
            );
            vreinterpretq_f32_u32(x)
        }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: float32x4_t) {
        // SAFETY: see the impl comment.
        unsafe { vst1q_f32(p, v) }
    }
    #[inline(always)]
    unsafe fn fma(a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        // SAFETY: see the impl comment.
        unsafe { vfmaq_f32(c, a, b) }
    }
    #[inline(always)]
    unsafe fn add(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: see the impl comment.
        unsafe { vaddq_f32(a, b) }
    }
    #[inline(always)]
    unsafe fn mul(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: see the impl comment.
        unsafe { vmulq_f32(a, b) }
    }
    #[inline(always)]
    unsafe fn max(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: see the impl comment.
        unsafe { vmaxq_f32(a, b) }
    }
    #[inline(always)]
    unsafe fn fnma(a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        // SAFETY: see the impl comment.
        unsafe { vfmsq_f32(c, a, b) }
    }
    #[inline(always)]
    unsafe fn min(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: see the impl comment.
        unsafe { vminq_f32(a, b) }
    }
    #[inline(always)]
    unsafe fn round(v: float32x4_t) -> float32x4_t {
        // SAFETY: see the impl comment.
        unsafe { vrndnq_f32(v) }
    }
    #[inline(always)]
    unsafe fn pow2(n: float32x4_t) -> float32x4_t {
        // SAFETY: see the impl comment (n holds integers: truncation is exact).
        unsafe {
            let e = vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127));
            vreinterpretq_f32_s32(vshlq_n_s32::<23>(e))
        }
    }
    #[inline(always)]
    unsafe fn keep_where_ge(x: float32x4_t, bound: f32, v: float32x4_t) -> float32x4_t {
        // SAFETY: see the impl comment.
        unsafe {
            let keep = vcgeq_f32(x, vdupq_n_f32(bound));
            vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(v), keep))
        }
    }
    #[inline(always)]
    unsafe fn hsum(v: float32x4_t) -> f32 {
        // SAFETY: see the impl comment.
        unsafe { vaddvq_f32(v) }
    }
    #[inline(always)]
    unsafe fn hmax(v: float32x4_t) -> f32 {
        // SAFETY: see the impl comment.
        unsafe { vmaxvq_f32(v) }
    }
}
