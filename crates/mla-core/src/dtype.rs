//! Element types of weights and of the latent cache, and borrowed typed slices.

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
}

impl DType {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// The dtype for a raw `mla_dtype` value, or `None` if unknown.
    pub const fn from_u32(v: u32) -> Option<DType> {
        match v {
            0 => Some(DType::F32),
            1 => Some(DType::F16),
            2 => Some(DType::BF16),
            _ => None,
        }
    }

    /// Lower-case name, as in safetensors (`F32`, `F16`, `BF16` upper-case there).
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        }
    }
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
}

impl<'a> Elems<'a> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Elems::F32(s) => s.len(),
            Elems::F16(s) => s.len(),
            Elems::BF16(s) => s.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            Elems::F32(_) => DType::F32,
            Elems::F16(_) => DType::F16,
            Elems::BF16(_) => DType::BF16,
        }
    }

    /// Sub-range `start..start + len`, or `None` if out of bounds.
    pub fn slice(&self, start: usize, len: usize) -> Option<Elems<'a>> {
        let end = start.checked_add(len)?;
        Some(match *self {
            Elems::F32(s) => Elems::F32(s.get(start..end)?),
            Elems::F16(s) => Elems::F16(s.get(start..end)?),
            Elems::BF16(s) => Elems::BF16(s.get(start..end)?),
        })
    }

    /// Widens elements into `out` (`out.len()` elements from the start).
    pub fn widen_into(&self, out: &mut [f32]) {
        match self {
            Elems::F32(s) => out.iter_mut().zip(s.iter()).for_each(|(o, v)| *o = *v),
            Elems::F16(s) => out
                .iter_mut()
                .zip(s.iter())
                .for_each(|(o, v)| *o = v.to_f32()),
            Elems::BF16(s) => out
                .iter_mut()
                .zip(s.iter())
                .for_each(|(o, v)| *o = v.to_f32()),
        }
    }

    /// Borrows raw bytes as elements of `dtype`, checking length and alignment.
    /// Returns `None` when `bytes` is misaligned or not a whole number of elements.
    pub fn from_bytes(bytes: &'a [u8], dtype: DType) -> Option<Elems<'a>> {
        Some(match dtype {
            DType::F32 => Elems::F32(bytemuck::try_cast_slice(bytes).ok()?),
            DType::F16 => Elems::F16(bytemuck::try_cast_slice(bytes).ok()?),
            DType::BF16 => Elems::BF16(bytemuck::try_cast_slice(bytes).ok()?),
        })
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
