//! x86-64 vector instruction sets: AVX2 + FMA + F16C (8 lanes) and AVX-512F (16 lanes).
//!
//! Every method is `#[inline(always)]` and is only ever inlined into the
//! `#[target_feature]` entry points of `kernels/dispatch.rs` (`avx2`,
//! `avx512`), which the dispatcher calls only when
//! [`Isa::supported`](crate::kernels::Isa::supported) holds.

use super::{Elem, Simd};
use core::arch::x86_64::*;
use half::{bf16, f16};

/// The sign, exponent and mantissa bits of an E4M3 code shifted left by 20
/// (as an `i32` for the intrinsics).
const E4M3_MASK: i32 = super::elem::E4M3_MASK as i32;

/// AVX2 + FMA + F16C.
#[derive(Clone, Copy)]
pub(crate) struct Avx2;

// SAFETY (every method below): the trait contract: the caller runs with AVX2,
// FMA and F16C available and passes pointers valid for 8 elements. The loads and
// stores are unaligned forms.
impl Simd for Avx2 {
    const LANES: usize = 8;
    const BF16_PAIRED: bool = true;
    type V = __m256;
    #[inline(always)]
    unsafe fn zero() -> __m256 {
        // SAFETY: see the impl comment.
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        // SAFETY: see the impl comment.
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        // SAFETY: see the impl comment.
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn load_bf16(p: *const bf16) -> __m256 {
        // SAFETY: see the impl comment (8 x 2 bytes = one 128-bit load).
        unsafe {
            let h = _mm_loadu_si128(p.cast::<__m128i>());
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
        }
    }
    /// Pair order: one 256-bit load of 16 bf16, interleaved with zeros
    /// within each 128-bit lane (one shuffle per 8 weights instead of a
    /// widening shuffle and a shift): half 0 holds elements 0-3 and 8-11,
    /// half 1 elements 4-7 and 12-15.
    #[inline(always)]
    unsafe fn load_bf16_half<const H: usize>(p: *const bf16) -> __m256 {
        // SAFETY: see the impl comment (16 x 2 bytes = one 256-bit load).
        unsafe {
            let x = _mm256_loadu_si256(p.cast::<__m256i>());
            let z = _mm256_setzero_si256();
            _mm256_castsi256_ps(if H == 0 {
                _mm256_unpacklo_epi16(z, x)
            } else {
                _mm256_unpackhi_epi16(z, x)
            })
        }
    }
    /// Elements `4H .. 4H + 4` and `8 + 4H .. 12 + 4H` (two unaligned
    /// 128-bit loads).
    #[inline(always)]
    unsafe fn load_bf16_order<const H: usize>(p: *const f32) -> __m256 {
        // SAFETY: see the impl comment (elements below 16 read).
        unsafe { _mm256_loadu2_m128(p.add(8 + 4 * H), p.add(4 * H)) }
    }
    /// The inverse of `load_bf16_order` (two unaligned 128-bit stores).
    #[inline(always)]
    unsafe fn store_bf16_order<const H: usize>(p: *mut f32, v: __m256) {
        // SAFETY: see the impl comment (elements below 16 written).
        unsafe { _mm256_storeu2_m128(p.add(8 + 4 * H), p.add(4 * H), v) }
    }
    #[inline(always)]
    unsafe fn load_f16(p: *const f16) -> __m256 {
        // SAFETY: see the impl comment (F16C).
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast::<__m128i>())) }
    }
    #[inline(always)]
    unsafe fn load_e4m3(p: *const u8) -> __m256 {
        // SAFETY: see the impl comment (8 bytes: one 64-bit load, vpmovsxbd).
        unsafe {
            let b = _mm_loadl_epi64(p.cast::<__m128i>());
            let w = _mm256_slli_epi32::<20>(_mm256_cvtepi8_epi32(b));
            _mm256_castsi256_ps(_mm256_and_si256(w, _mm256_set1_epi32(E4M3_MASK)))
        }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        // SAFETY: see the impl comment.
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: see the impl comment.
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl comment.
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl comment.
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn max(a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl comment.
        unsafe { _mm256_max_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn fnma(a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: see the impl comment.
        unsafe { _mm256_fnmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn min(a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl comment.
        unsafe { _mm256_min_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn round(v: __m256) -> __m256 {
        // SAFETY: see the impl comment.
        unsafe { _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v) }
    }
    #[inline(always)]
    unsafe fn pow2(n: __m256) -> __m256 {
        // SAFETY: see the impl comment.
        unsafe {
            let e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
            _mm256_castsi256_ps(_mm256_slli_epi32::<23>(e))
        }
    }
    #[inline(always)]
    unsafe fn keep_where_ge(x: __m256, bound: f32, v: __m256) -> __m256 {
        // SAFETY: see the impl comment.
        unsafe { _mm256_and_ps(v, _mm256_cmp_ps::<_CMP_GE_OQ>(x, _mm256_set1_ps(bound))) }
    }
    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        // SAFETY: see the impl comment.
        unsafe {
            hsum128(_mm_add_ps(
                _mm256_castps256_ps128(v),
                _mm256_extractf128_ps::<1>(v),
            ))
        }
    }
    #[inline(always)]
    unsafe fn hmax(v: __m256) -> f32 {
        // SAFETY: see the impl comment.
        unsafe {
            let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
            _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps::<0x55>(m, m)))
        }
    }
}

/// Sum of 4 lanes: (a0 + a2) + (a1 + a3).
#[inline(always)]
unsafe fn hsum128(s: __m128) -> f32 {
    // SAFETY: SSE only (baseline x86-64).
    unsafe {
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<0x55>(s, s)))
    }
}

/// AVX-512F.
#[derive(Clone, Copy)]
pub(crate) struct Avx512;

// SAFETY (every method below): the trait contract: the caller runs with
// AVX-512F (and AVX2/FMA/F16C) available and passes pointers valid for 16
// elements. The loads and stores are unaligned forms.
impl Simd for Avx512 {
    const LANES: usize = 16;
    type V = __m512;
    #[inline(always)]
    unsafe fn zero() -> __m512 {
        // SAFETY: see the impl comment.
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        // SAFETY: see the impl comment.
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        // SAFETY: see the impl comment.
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn load_bf16(p: *const bf16) -> __m512 {
        // SAFETY: see the impl comment (16 x 2 bytes = one 256-bit load).
        unsafe {
            let h = _mm256_loadu_si256(p.cast::<__m256i>());
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
        }
    }
    #[inline(always)]
    unsafe fn load_f16(p: *const f16) -> __m512 {
        // SAFETY: see the impl comment.
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast::<__m256i>())) }
    }
    #[inline(always)]
    unsafe fn load_e4m3(p: *const u8) -> __m512 {
        // SAFETY: see the impl comment (16 bytes: one 128-bit load).
        unsafe {
            let b = _mm_loadu_si128(p.cast::<__m128i>());
            let w = _mm512_slli_epi32::<20>(_mm512_cvtepi8_epi32(b));
            _mm512_castsi512_ps(_mm512_and_si512(w, _mm512_set1_epi32(E4M3_MASK)))
        }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        // SAFETY: see the impl comment.
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: see the impl comment.
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        // SAFETY: see the impl comment.
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn mul(a: __m512, b: __m512) -> __m512 {
        // SAFETY: see the impl comment.
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn max(a: __m512, b: __m512) -> __m512 {
        // SAFETY: see the impl comment.
        unsafe { _mm512_max_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn fnma(a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: see the impl comment.
        unsafe { _mm512_fnmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn min(a: __m512, b: __m512) -> __m512 {
        // SAFETY: see the impl comment.
        unsafe { _mm512_min_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn round(v: __m512) -> __m512 {
        // SAFETY: see the impl comment.
        unsafe { _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v) }
    }
    #[inline(always)]
    unsafe fn pow2(n: __m512) -> __m512 {
        // SAFETY: see the impl comment.
        unsafe {
            let e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
            _mm512_castsi512_ps(_mm512_slli_epi32::<23>(e))
        }
    }
    #[inline(always)]
    unsafe fn keep_where_ge(x: __m512, bound: f32, v: __m512) -> __m512 {
        // SAFETY: see the impl comment.
        unsafe {
            let keep = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_set1_ps(bound));
            _mm512_maskz_mov_ps(keep, v)
        }
    }
    #[inline(always)]
    unsafe fn hsum(v: __m512) -> f32 {
        // SAFETY: see the impl comment.
        unsafe {
            let (lo, hi) = halves(v);
            Avx2::hsum(_mm256_add_ps(lo, hi))
        }
    }
    #[inline(always)]
    unsafe fn hmax(v: __m512) -> f32 {
        // SAFETY: see the impl comment.
        unsafe {
            let (lo, hi) = halves(v);
            Avx2::hmax(_mm256_max_ps(lo, hi))
        }
    }
    #[inline(always)]
    unsafe fn transpose<E: Elem>(src: *const E, lds: usize, dst: *mut f32, ldd: usize) {
        // SAFETY: see the impl comment; extents as the trait requires.
        unsafe { transpose16(src, lds, dst, ldd) }
    }
}

/// 16 x 16 transpose in registers: three rounds of shuffles (32-bit, 64-bit,
/// 128-bit lanes twice), 64 shuffles per 256 elements.
///
/// # Safety
/// AVX-512F available; `src` valid for 16 rows of 16 elements (stride `lds`),
/// `dst` for 16 rows of 16 f32 (stride `ldd`).
#[inline(always)]
unsafe fn transpose16<E: Elem>(src: *const E, lds: usize, dst: *mut f32, ldd: usize) {
    // SAFETY: AVX-512F (caller); row r < 16 and column < 16 stay in the extents.
    unsafe {
        let mut r = [_mm512_setzero_ps(); 16];
        for (i, x) in r.iter_mut().enumerate() {
            *x = E::vload::<Avx512>(src.add(i * lds));
        }
        let mut a = [_mm512_setzero_ps(); 16];
        for i in 0..8 {
            a[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            a[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        let mut b = [_mm512_setzero_ps(); 16];
        let lo = |x: __m512, y: __m512| {
            _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(x), _mm512_castps_pd(y)))
        };
        let hi = |x: __m512, y: __m512| {
            _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(x), _mm512_castps_pd(y)))
        };
        for i in 0..4 {
            b[4 * i] = lo(a[4 * i], a[4 * i + 2]);
            b[4 * i + 1] = hi(a[4 * i], a[4 * i + 2]);
            b[4 * i + 2] = lo(a[4 * i + 1], a[4 * i + 3]);
            b[4 * i + 3] = hi(a[4 * i + 1], a[4 * i + 3]);
        }
        // b[4g + q], 128-bit lane l: column 4l + q of rows 4g .. 4g + 3.
        for q in 0..4 {
            let c1 = _mm512_shuffle_f32x4::<0x88>(b[q], b[4 + q]);
            let c2 = _mm512_shuffle_f32x4::<0xdd>(b[q], b[4 + q]);
            let c3 = _mm512_shuffle_f32x4::<0x88>(b[8 + q], b[12 + q]);
            let c4 = _mm512_shuffle_f32x4::<0xdd>(b[8 + q], b[12 + q]);
            _mm512_storeu_ps(dst.add(q * ldd), _mm512_shuffle_f32x4::<0x88>(c1, c3));
            _mm512_storeu_ps(dst.add((4 + q) * ldd), _mm512_shuffle_f32x4::<0x88>(c2, c4));
            _mm512_storeu_ps(dst.add((8 + q) * ldd), _mm512_shuffle_f32x4::<0xdd>(c1, c3));
            _mm512_storeu_ps(
                dst.add((12 + q) * ldd),
                _mm512_shuffle_f32x4::<0xdd>(c2, c4),
            );
        }
    }
}

/// The two 256-bit halves of a 512-bit vector (AVX-512F only).
#[inline(always)]
unsafe fn halves(v: __m512) -> (__m256, __m256) {
    // SAFETY: AVX-512F (caller).
    unsafe {
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
        (_mm512_castps512_ps256(v), hi)
    }
}
