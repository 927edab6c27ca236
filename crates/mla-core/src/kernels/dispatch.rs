//! The per-ISA entry points: for each instruction set one module of
//! `#[target_feature]` functions that instantiate the generic kernels with that
//! ISA's vector type and its tiles ([`tiles`]), and [`dispatch!`], which calls
//! the module of an [`Isa`].
//!
//! The generic kernels and the [`Simd`] methods are `#[inline(always)]`, so each
//! entry point compiles to one function with the ISA's instructions throughout.

#[cfg(target_arch = "x86_64")]
use super::isa::LATENT_ROW;
use super::isa::{tiles, Isa, Tiles};
#[cfg(target_arch = "aarch64")]
use super::simd::Neon;
#[cfg(doc)]
use super::simd::Simd;
#[cfg(target_arch = "x86_64")]
use super::simd::{Avx2, Avx512};
use super::simd::{Elem, Scalar};

/// One module of entry points for the vector type `$S`, with the tiles of
/// `$isa` and the target features `$feat` (none on small targets).
macro_rules! isa_entry {
    ($name:ident, $S:ty, $isa:expr $(, $feat:literal)?) => {
        pub(crate) mod $name {
            use super::super::gemm::{self, GemmArgs};
            use super::super::softmax::{self, ColsArgs, RowArgs};
            use super::super::vecops;
            #[allow(unused_imports)]
            use super::*;
            #[allow(unused_imports)]
            use $S as S;

            /// The packed NT product (`pack::ntp`).
            ///
            /// # Safety
            /// Extents checked by the builder of `p`; `pack` valid for
            /// `pack_len(k)` f32; the ISA is available.
            #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
            $(#[target_feature(enable = $feat)])?
            pub(crate) unsafe fn ntp<E: Elem>(
                p: &GemmArgs<E>,
                pack: *mut f32,
                f8: Option<&super::super::mat::F8Mat>,
            ) {
                const T: Tiles = tiles($isa);
                // SAFETY: forwarded; T.pack_nv * LANES <= PACK_NP (asserted in isa.rs).
                unsafe {
                    super::super::pack::ntp::<S, E, { T.pack_mr }, { T.pack_nv }>(p, pack, f8)
                }
            }

            /// The in-register FP8 NT product (`f8::nt_tiles`).
            ///
            /// # Safety
            /// Built by `f8::nt` (extents checked); the ISA is available.
            #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
            $(#[target_feature(enable = $feat)])?
            pub(crate) unsafe fn f8_nt(p: &super::super::f8::F8Args) {
                const T: Tiles = tiles($isa);
                // SAFETY: forwarded.
                unsafe {
                    super::super::f8::nt_tiles::<S, { T.f8_mr }, { T.f8_nr }, { T.f8_matvec_nr }>(p)
                }
            }

            /// The in-register FP8 NN accumulation (`f8::nn_tiles`): `MR x NV`
            /// tiles of the FP8 NT shape (`f8_mr x f8_nr`), `1 x f8_matvec_nr`
            /// for one row of A.
            ///
            /// # Safety
            /// Built by `f8::nn` (extents checked); the ISA is available.
            #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
            $(#[target_feature(enable = $feat)])?
            pub(crate) unsafe fn f8_nn(p: &super::super::f8::F8Args) {
                const T: Tiles = tiles($isa);
                // SAFETY: forwarded.
                unsafe {
                    if p.rows_of_a() == 1 {
                        super::super::f8::nn_tiles::<S, 1, { T.f8_matvec_nr }>(p)
                    } else {
                        super::super::f8::nn_tiles::<S, { T.f8_mr }, { T.f8_nr }>(p)
                    }
                }
            }

            /// Widens `n` FP8 codes (a multiple of the lanes) with
            /// `Simd::load_e4m3` (for the tests).
            ///
            /// # Safety
            /// `src` valid for `n` bytes, `dst` for `n` f32; the ISA is available.
            #[cfg(test)]
            $(#[target_feature(enable = $feat)])?
            pub(crate) unsafe fn widen_e4m3(src: *const u8, dst: *mut f32, n: usize) {
                use super::super::simd::Simd as _;
                let mut i = 0;
                while i + S::LANES <= n {
                    // SAFETY: i + LANES <= n: inside both extents.
                    unsafe { S::store(dst.add(i), S::load_e4m3(src.add(i))) };
                    i += S::LANES;
                }
            }

            /// The NT product (`gemm::nt`).
            ///
            /// # Safety
            /// Extents checked by the builder of `p`; the ISA is available.
            $(#[target_feature(enable = $feat)])?
            pub(crate) unsafe fn nt<E: Elem>(p: &GemmArgs<E>) {
                const T: Tiles = tiles($isa);
                // SAFETY: forwarded.
                unsafe {
                    gemm::nt::<S, E, { T.nt_mr }, { T.nt_nr }, { T.nt_paired[0] }, { T.nt_paired[1] }, { T.matvec_nr }>(p)
                }
            }

            /// The NT product with B widened ahead of the tiles
            /// (`gemm::nt_widened`).
            ///
            /// # Safety
            /// Extents checked by the builder of `p`; `buf` valid for `len`
            /// f32, `len >= T.nt_nr * k`; with `f8`, `p.b` its codes; the ISA
            /// is available.
            #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
            $(#[target_feature(enable = $feat)])?
            pub(crate) unsafe fn nt_widened<E: Elem>(
                p: &GemmArgs<E>,
                buf: *mut f32,
                len: usize,
                f8: Option<&super::super::mat::F8Mat>,
            ) {
                const T: Tiles = tiles($isa);
                // SAFETY: forwarded.
                unsafe { gemm::nt_widened::<S, E, { T.nt_mr }, { T.nt_nr }>(p, buf, len, f8) }
            }

            /// The NN accumulation (`gemm::nn`).
            ///
            /// # Safety
            /// Extents checked by the builder of `p`; the ISA is available.
            $(#[target_feature(enable = $feat)])?
            pub(crate) unsafe fn nn<E: Elem>(p: &GemmArgs<E>) {
                const T: Tiles = tiles($isa);
                // SAFETY: forwarded.
                unsafe { gemm::nn::<S, E, { T.nn_mr }, { T.nn_nv }, { T.nn_tall_mr }, false, false, 0>(p) }
            }

            /// The attention scores' NN accumulation (`gemm::nn` with the
            /// attention tiles: cached rows broadcast against the heads, the
            /// rows `p.pf` elements on prefetched; on x86-64 rows of
            /// `isa::LATENT_ROW` run a copy with that stride built in).
            ///
            /// # Safety
            /// Extents checked by the builder of `p`; the ISA is available.
            $(#[target_feature(enable = $feat)])?
            pub(crate) unsafe fn attn_nn(p: &GemmArgs<f32>) {
                const T: Tiles = tiles($isa);
                // SAFETY: forwarded.
                unsafe {
                    #[cfg(target_arch = "x86_64")]
                    if p.lda == LATENT_ROW {
                        gemm::nn::<S, f32, { T.attn_mr }, { T.attn_nv }, { T.attn_tall_mr }, false, true, LATENT_ROW>(p);
                        return;
                    }
                    gemm::nn::<S, f32, { T.attn_mr }, { T.attn_nv }, { T.attn_tall_mr }, false, true, 0>(p)
                }
            }

            /// The attention sum's TN accumulation (`gemm::nn` with `TA`
            /// and the NN tiles: the heads' weights broadcast against
            /// vectors of the rows' latent columns).
            ///
            /// # Safety
            /// Extents checked by the builder of `p` (`GemmArgs::tn`); the ISA
            /// is available.
            $(#[target_feature(enable = $feat)])?
            pub(crate) unsafe fn attn_tn(p: &GemmArgs<f32>) {
                const T: Tiles = tiles($isa);
                // SAFETY: forwarded.
                unsafe { gemm::nn::<S, f32, { T.nn_mr }, { T.nn_nv }, { T.nn_tall_mr }, true, false, 0>(p) }
            }

            /// `softmax::online_softmax_row`.
            ///
            /// # Safety
            /// See `softmax::online_softmax_row`.
            $(#[target_feature(enable = $feat)])?
            pub(crate) unsafe fn softmax_row(p: &RowArgs, m: &mut f32, l: &mut f32) -> f32 {
                // SAFETY: forwarded.
                unsafe { softmax::online_softmax_row::<S>(p, m, l) }
            }

            /// `softmax::online_softmax_cols`.
            ///
            /// # Safety
            /// See `softmax::online_softmax_cols`.
            $(#[target_feature(enable = $feat)])?
            pub(crate) unsafe fn softmax_cols(p: &ColsArgs) {
                // SAFETY: forwarded.
                unsafe { softmax::online_softmax_cols::<S>(p) }
            }

            /// `vecops::widen_row`.
            ///
            /// # Safety
            /// `src` valid for `n` elements, `dst` for `n` f32.
            $(#[target_feature(enable = $feat)])?
            pub(crate) unsafe fn widen<E: Elem>(src: *const E, dst: *mut f32, n: usize) {
                // SAFETY: forwarded.
                unsafe { vecops::widen_row::<S, E>(src, dst, n) }
            }

            /// `vecops::scale_row`.
            ///
            /// # Safety
            /// `x` valid for `n` elements.
            $(#[target_feature(enable = $feat)])?
            pub(crate) unsafe fn scale(x: *mut f32, n: usize, s: f32) {
                // SAFETY: forwarded.
                unsafe { vecops::scale_row::<S>(x, n, s) }
            }

            /// `vecops::axpy_row`.
            ///
            /// # Safety
            /// `x`, `y` valid for `n` elements.
            $(#[target_feature(enable = $feat)])?
            pub(crate) unsafe fn axpy(s: f32, x: *const f32, y: *mut f32, n: usize) {
                // SAFETY: forwarded.
                unsafe { vecops::axpy_row::<S>(s, x, y, n) }
            }
        }
    };
}

// The scalar entry has no target feature to enable: "sse2" is baseline on
// x86-64, "neon" on aarch64; small targets take plain functions.
#[cfg(target_arch = "x86_64")]
isa_entry!(scalar, Scalar, Isa::Scalar, "sse2");
#[cfg(target_arch = "aarch64")]
isa_entry!(scalar, Scalar, Isa::Scalar, "neon");
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
isa_entry!(scalar, Scalar, Isa::Scalar);
#[cfg(target_arch = "x86_64")]
isa_entry!(avx2, Avx2, Isa::Avx2, "avx2,fma,f16c");
#[cfg(target_arch = "x86_64")]
isa_entry!(avx512, Avx512, Isa::Avx512, "avx512f,avx2,fma,f16c");
#[cfg(target_arch = "aarch64")]
isa_entry!(neon, Neon, Isa::Neon, "neon");

// Each vector type has the lanes `lanes` reports for its ISA.
const _: () = {
    use super::isa::lanes;
    use super::simd::Simd as _;
    assert!(lanes(Isa::Scalar) == Scalar::LANES);
    #[cfg(target_arch = "x86_64")]
    assert!(lanes(Isa::Avx2) == Avx2::LANES && lanes(Isa::Avx512) == Avx512::LANES);
    #[cfg(target_arch = "aarch64")]
    assert!(lanes(Isa::Neon) == Neon::LANES);
};

/// Calls `$f` of the entry module for `$isa` (the scalar module for an ISA
/// this target does not have). The caller checks that `$isa` is supported.
macro_rules! dispatch {
    ($isa:expr, $f:ident ( $($arg:expr),* )) => {
        match $isa {
            #[cfg(target_arch = "x86_64")]
            $crate::kernels::Isa::Avx512 => $crate::kernels::dispatch::avx512::$f($($arg),*),
            #[cfg(target_arch = "x86_64")]
            $crate::kernels::Isa::Avx2 => $crate::kernels::dispatch::avx2::$f($($arg),*),
            #[cfg(target_arch = "aarch64")]
            $crate::kernels::Isa::Neon => $crate::kernels::dispatch::neon::$f($($arg),*),
            _ => $crate::kernels::dispatch::scalar::$f($($arg),*),
        }
    };
}
pub(crate) use dispatch;
