//! Element types of weights and of the latent cache, and typed slices of them:
//! [`DType`] names a type, [`Element`] is its Rust type, [`Elems`] and
//! [`ElemsMut`] borrow runs of it.

use crate::status::{Error, Result, Status};
use half::{bf16, f16};

/// Storage type of a tensor or of the cache (`mla_dtype`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    /// IEEE binary32.
    F32 = 0,
    /// IEEE binary16.
    F16 = 1,
    /// bfloat16 (the upper half of a binary32).
    BF16 = 2,
    /// FP8 E4M3 ([`crate::fp8`]). A cache dtype (the latent cache in
    /// FlashMLA's layout, see [`crate::cache::row_bytes`], and the DSA index
    /// cache) and a weight dtype with one f32 scale per 128 x 128 block
    /// ([`F8Elems`], DeepSeek-V3's checkpoints). It has no [`Element`] type:
    /// an FP8 value means nothing without its block's scale.
    F8E4M3 = 3,
}

impl DType {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::F8E4M3 => 1,
        }
    }

    /// The dtype for a raw `mla_dtype` value, or `None` if unknown.
    pub const fn from_u32(v: u32) -> Option<DType> {
        match v {
            0 => Some(DType::F32),
            1 => Some(DType::F16),
            2 => Some(DType::BF16),
            3 => Some(DType::F8E4M3),
            _ => None,
        }
    }

    /// Lower-case name, as in safetensors (`F32`, `F16`, `BF16`, `F8_E4M3`
    /// upper-case there).
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F8E4M3 => "f8_e4m3",
        }
    }
}

/// A storage element type: the Rust type of one [`DType`].
///
/// Every per-type difference of [`Elems`] and [`ElemsMut`] goes through this
/// trait and the two dispatch macros below, so a new element type is one
/// variant of each enum, one arm of each macro and one `impl` here (plus its
/// kernels).
pub trait Element: bytemuck::Pod + Send + Sync {
    /// Its dtype.
    const DTYPE: DType;
    /// Widens one element.
    fn to_f32(self) -> f32;
    /// Rounds an f32 to this type (round to nearest even).
    fn from_f32(v: f32) -> Self;
    /// A slice of this type as [`Elems`].
    fn elems(s: &[Self]) -> Elems<'_>;
    /// A mutable slice of this type as [`ElemsMut`].
    fn elems_mut(s: &mut [Self]) -> ElemsMut<'_>;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(v: f32) -> Self {
        v
    }
    fn elems(s: &[Self]) -> Elems<'_> {
        Elems::F32(s)
    }
    fn elems_mut(s: &mut [Self]) -> ElemsMut<'_> {
        ElemsMut::F32(s)
    }
}

/// [`Element`] for a 16-bit float type of `half` (its own conversions).
macro_rules! half_element {
    ($t:ident, $variant:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$variant;
            fn to_f32(self) -> f32 {
                $t::to_f32(self)
            }
            fn from_f32(v: f32) -> Self {
                $t::from_f32(v)
            }
            fn elems(s: &[Self]) -> Elems<'_> {
                Elems::$variant(s)
            }
            fn elems_mut(s: &mut [Self]) -> ElemsMut<'_> {
                ElemsMut::$variant(s)
            }
        }
    };
}

half_element!(f16, F16);
half_element!(bf16, BF16);

/// `$body` with `$s` bound to the slice inside `$value` (an [`Elems`] or
/// [`ElemsMut`], named by `$kind`), whatever its element type.
macro_rules! with_slice {
    ($value:expr, $kind:ident, |$s:ident| $body:expr) => {
        match $value {
            $kind::F32($s) => $body,
            $kind::F16($s) => $body,
            $kind::BF16($s) => $body,
        }
    };
}

/// `$body` with the type `$t` set to the [`Element`] of `$dtype`; `None`
/// (from the enclosing function) for a dtype without one (FP8).
macro_rules! with_type {
    ($dtype:expr, |$t:ident| $body:expr) => {
        match $dtype {
            DType::F32 => {
                type $t = f32;
                $body
            }
            DType::F16 => {
                type $t = f16;
                $body
            }
            DType::BF16 => {
                type $t = bf16;
                $body
            }
            DType::F8E4M3 => None,
        }
    };
}

/// A borrowed, typed run of elements (row-major tensor data).
#[derive(Clone, Copy, Debug)]
pub enum Elems<'a> {
    /// f32 elements.
    F32(&'a [f32]),
    /// f16 elements.
    F16(&'a [f16]),
    /// bf16 elements.
    BF16(&'a [bf16]),
    /// FP8 E4M3 codes with their per-block scales (weights only).
    F8(F8Elems<'a>),
}

/// `$body` with `$s` bound to the slice inside an [`Elems`] of a plain element
/// type, `$f8` for [`Elems::F8`] (bound to `$f`).
macro_rules! with_elems {
    ($value:expr, |$s:ident| $body:expr, |$f:ident| $f8:expr) => {
        match $value {
            Elems::F32($s) => $body,
            Elems::F16($s) => $body,
            Elems::BF16($s) => $body,
            Elems::F8($f) => $f8,
        }
    };
}

impl<'a> Elems<'a> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        with_elems!(self, |s| s.len(), |f| f.codes.len())
    }

    /// Address of the first element (which data is borrowed, e.g. to tell
    /// whether two engines share their weights; the codes for FP8).
    pub fn as_ptr(&self) -> *const u8 {
        with_elems!(self, |s| s.as_ptr().cast::<u8>(), |f| f.codes.as_ptr())
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        fn of<T: Element>(_: &[T]) -> DType {
            T::DTYPE
        }
        with_elems!(self, |s| of(s), |_f| DType::F8E4M3)
    }

    /// Sub-range `start..start + len`, or `None` if out of bounds. An FP8 run
    /// keeps its place in the whole tensor, so its block scales stay right.
    pub fn slice(&self, start: usize, len: usize) -> Option<Elems<'a>> {
        let end = start.checked_add(len)?;
        with_elems!(*self, |s| Some(Element::elems(s.get(start..end)?)), |f| {
            Some(Elems::F8(f.slice(start, len)?))
        })
    }

    /// The elements when they are f32 (no conversion), else `None`.
    pub fn as_f32(&self) -> Option<&'a [f32]> {
        match *self {
            Elems::F32(s) => Some(s),
            _ => None,
        }
    }

    /// Widens elements into `out` (`out.len()` elements from the start); FP8
    /// is dequantized (code times its block's scale).
    pub fn widen_into(&self, out: &mut [f32]) {
        with_elems!(
            self,
            |s| out
                .iter_mut()
                .zip(s.iter())
                .for_each(|(o, v)| *o = v.to_f32()),
            |f| f.dequantize_into(out)
        )
    }

    /// Borrows raw bytes as elements of `dtype`, checking length and alignment.
    /// Returns `None` when `bytes` is misaligned or not a whole number of
    /// elements, or `dtype` has no [`Element`] type (FP8, which needs its
    /// scales: [`F8Elems::new`]).
    pub fn from_bytes(bytes: &'a [u8], dtype: DType) -> Option<Elems<'a>> {
        with_type!(dtype, |T| Some(T::elems(
            bytemuck::try_cast_slice(bytes).ok()?
        )))
    }
}

/// Edge of the square blocks that share one scale in FP8 weights (128 in
/// DeepSeek-V3/V3.2's checkpoints, the only size supported).
pub const F8_BLOCK: usize = 128;

/// `ceil(a / F8_BLOCK)`.
pub const fn f8_blocks(a: usize) -> usize {
    a.div_ceil(F8_BLOCK)
}

/// FP8 E4M3 weight codes of a `[rows][cols]` tensor (or a run of it) with the
/// tensor's f32 block scales `[ceil(rows/128)][ceil(cols/128)]`: element
/// `(i, j)` is `fp8::to_f32(code) * scale[i/128][j/128]` (DeepSeek's
/// `weight` and `weight_scale_inv`; edge blocks are shorter).
///
/// A run made by [`Elems::slice`] keeps the whole tensor's scales, its column
/// count and the flat index of its first code, so rows that do not start on a
/// block boundary (a head's rows of `kv_b_proj`) find their scales.
#[derive(Clone, Copy, Debug)]
pub struct F8Elems<'a> {
    codes: &'a [u8],
    scales: &'a [f32],
    cols: usize,
    offset: usize,
}

impl<'a> F8Elems<'a> {
    /// The whole `[rows][cols]` tensor. Checks `codes.len() == rows * cols`
    /// and `scales.len() == ceil(rows/128) * ceil(cols/128)` (`WeightShape`),
    /// and that every scale is finite (`NonFinite`) and positive
    /// (`WeightShape`): one scan of the scales, 1/16384 of the codes.
    pub fn new(codes: &'a [u8], scales: &'a [f32], rows: usize, cols: usize) -> Result<Self> {
        if rows.checked_mul(cols) != Some(codes.len()) {
            return Err(f8_err(codes.len(), " codes for ", rows, cols, ""));
        }
        let (br, bc) = (f8_blocks(rows), f8_blocks(cols));
        if br.checked_mul(bc) != Some(scales.len()) {
            let tail = " (one per 128 x 128 block)";
            return Err(f8_err(
                scales.len(),
                " block scales, expected ",
                br,
                bc,
                tail,
            ));
        }
        if let Some(i) = scales.iter().position(|v| !v.is_finite()) {
            return Err(f8_scale_err(Status::NonFinite, i, " is not finite"));
        }
        if let Some(i) = scales.iter().position(|&v| v <= 0.0) {
            return Err(f8_scale_err(Status::WeightShape, i, " is not positive"));
        }
        Ok(F8Elems {
            codes,
            scales,
            cols,
            offset: 0,
        })
    }

    /// The E4M3 codes of this run.
    pub fn codes(&self) -> &'a [u8] {
        self.codes
    }

    /// The whole tensor's block scales, row-major.
    pub fn scales(&self) -> &'a [f32] {
        self.scales
    }

    /// Columns of the whole tensor.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Flat index, in the whole tensor, of the first code of this run.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The scale of tensor element `(row, col)` (0 outside the scales, which
    /// [`F8Elems::new`] rules out for elements of the tensor).
    #[inline]
    pub fn scale(&self, row: usize, col: usize) -> f32 {
        (row / F8_BLOCK)
            .checked_mul(f8_blocks(self.cols))
            .and_then(|i| i.checked_add(col / F8_BLOCK))
            .and_then(|i| self.scales.get(i))
            .copied()
            .unwrap_or(0.0)
    }

    /// Sub-run `start..start + len` of this run, or `None` if out of bounds.
    pub fn slice(&self, start: usize, len: usize) -> Option<F8Elems<'a>> {
        let end = start.checked_add(len)?;
        Some(F8Elems {
            codes: self.codes.get(start..end)?,
            offset: self.offset.checked_add(start)?,
            ..*self
        })
    }

    /// Dequantizes the first `out.len()` elements (at most the run's length).
    pub fn dequantize_into(&self, out: &mut [f32]) {
        let Some(cols) = core::num::NonZeroUsize::new(self.cols) else {
            return;
        };
        for (k, (o, &c)) in out.iter_mut().zip(self.codes).enumerate() {
            let g = self.offset.saturating_add(k);
            *o = crate::fp8::to_f32(c) * self.scale(g / cols, g % cols);
        }
    }
}

/// `f8 tensor: <n><what><a> x <b><tail>` (`WeightShape`); out of line, cold,
/// through the shared piece-by-piece message builder.
#[cold]
#[inline(never)]
fn f8_err(count: usize, what: &str, a: usize, b: usize, tail: &str) -> Error {
    use crate::status::{error, Piece::N, Piece::S};
    let pieces = [
        N(count as u64),
        S(what),
        N(a as u64),
        S(" x "),
        N(b as u64),
        S(tail),
    ];
    error(Status::WeightShape, "f8 tensor: ", &pieces)
}

/// `f8 tensor: block scale <i><what>`; out of line, cold.
#[cold]
#[inline(never)]
fn f8_scale_err(status: Status, i: usize, what: &str) -> Error {
    use crate::status::{error, Piece::N, Piece::S};
    error(status, "f8 tensor: block scale ", &[N(i as u64), S(what)])
}

/// A mutable, typed run of elements (the latent cache's storage).
#[derive(Debug)]
pub enum ElemsMut<'a> {
    /// f32 elements.
    F32(&'a mut [f32]),
    /// f16 elements.
    F16(&'a mut [f16]),
    /// bf16 elements.
    BF16(&'a mut [bf16]),
}

impl<'a> ElemsMut<'a> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.as_elems().len()
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.as_elems().dtype()
    }

    /// A read-only view.
    pub fn as_elems(&self) -> Elems<'_> {
        with_slice!(self, ElemsMut, |s| Element::elems(s))
    }

    /// Sub-range `start..start + len`, or `None` if out of bounds.
    pub fn slice_mut(&mut self, start: usize, len: usize) -> Option<ElemsMut<'_>> {
        let end = start.checked_add(len)?;
        with_slice!(self, ElemsMut, |s| Some(Element::elems_mut(
            s.get_mut(start..end)?
        )))
    }

    /// Rounds `src` into the elements (`min(len, src.len())` from the start).
    pub fn narrow_from(&mut self, src: &[f32]) {
        fn store<T: Element>(dst: &mut [T], src: &[f32]) {
            dst.iter_mut()
                .zip(src)
                .for_each(|(d, &v)| *d = T::from_f32(v));
        }
        with_slice!(self, ElemsMut, |s| store(s, src))
    }

    /// Borrows raw bytes as elements of `dtype`, checking length and alignment.
    /// Returns `None` when `bytes` is misaligned or not a whole number of
    /// elements, or `dtype` has no [`Element`] type (FP8).
    pub fn from_bytes(bytes: &'a mut [u8], dtype: DType) -> Option<ElemsMut<'a>> {
        with_type!(dtype, |T| Some(T::elems_mut(
            bytemuck::try_cast_slice_mut(bytes).ok()?
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_bytes_checks_alignment_and_length() {
        let words = [1.0f32, 2.0, 3.0];
        let bytes: &[u8] = bytemuck::cast_slice(&words);
        let e = Elems::from_bytes(bytes, DType::F32).unwrap();
        assert_eq!(e.len(), 3);
        assert!(Elems::from_bytes(&bytes[1..9], DType::F32).is_none());
        assert!(Elems::from_bytes(&bytes[..7], DType::F32).is_none());
        let h = Elems::from_bytes(&bytes[..6], DType::BF16).unwrap();
        assert_eq!(h.len(), 3);
        // f32 1.0 = 0x3f800000: the upper half read as bf16 (little-endian) is 1.0.
        let mut w = [0f32; 3];
        h.widen_into(&mut w);
        assert_eq!(w[1], 1.0);
    }

    #[test]
    fn slice_bounds() {
        let v = [0f32; 4];
        let e = Elems::F32(&v);
        assert_eq!(e.slice(1, 3).unwrap().len(), 3);
        assert!(e.slice(2, 3).is_none());
        assert!(e.slice(usize::MAX, 2).is_none());
    }
}
