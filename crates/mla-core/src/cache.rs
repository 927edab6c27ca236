//! The fixed-capacity latent cache.
//!
//! Per token it holds exactly what attention needs later (DESIGN.md 2.1):
//! the normalised latent `c` (`r` values) followed by the rotated rope key(s)
//! (`p` values shared by all heads, or `H*p` per head): one row of `r + rope_k`
//! values, `capacity` rows, stored as f32, f16 or bf16 in caller memory.
//!
//! The state is `len` plus rows `0..len`. Rows at `len..` are scratch: forward
//! writes the new tokens there and only then raises `len`, so a call that fails
//! leaves the state untouched.

use crate::dtype::DType;
use half::{bf16, f16};

/// Storage of the rows, `[capacity][row]`.
#[derive(Debug)]
pub enum CacheData<'m> {
    /// f32 rows.
    F32(&'m mut [f32]),
    /// f16 rows.
    F16(&'m mut [f16]),
    /// bf16 rows.
    BF16(&'m mut [bf16]),
}

/// The latent cache: `capacity` rows of `row` values, the first `len` valid.
#[derive(Debug)]
pub struct LatentCache<'m> {
    data: CacheData<'m>,
    row: usize,
    capacity: usize,
    len: usize,
}

impl<'m> LatentCache<'m> {
    /// A cache over `bytes` (which must hold `capacity * row` elements of `dtype`,
    /// aligned for it); `None` if it does not.
    pub fn new(bytes: &'m mut [u8], dtype: DType, row: usize, capacity: usize) -> Option<Self> {
        let n = row.checked_mul(capacity)?;
        let bytes = bytes.get_mut(..n.checked_mul(dtype.size())?)?;
        let data = match dtype {
            DType::F32 => CacheData::F32(bytemuck::try_cast_slice_mut(bytes).ok()?),
            DType::F16 => CacheData::F16(bytemuck::try_cast_slice_mut(bytes).ok()?),
            DType::BF16 => CacheData::BF16(bytemuck::try_cast_slice_mut(bytes).ok()?),
        };
        Some(LatentCache {
            data,
            row,
            capacity,
            len: 0,
        })
    }

    /// Valid tokens.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no token is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Capacity in tokens (`max_seq_len`).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Values per row.
    pub fn row_len(&self) -> usize {
        self.row
    }

    /// Storage dtype.
    pub fn dtype(&self) -> DType {
        match self.data {
            CacheData::F32(_) => DType::F32,
            CacheData::F16(_) => DType::F16,
            CacheData::BF16(_) => DType::BF16,
        }
    }

    /// Forgets tokens `len..`; returns false (and changes nothing) if `len > self.len()`.
    pub fn truncate(&mut self, len: usize) -> bool {
        if len > self.len {
            return false;
        }
        self.len = len;
        true
    }

    /// Forgets every token.
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Marks `n` more rows (already written with [`LatentCache::write_row`]) valid.
    /// Returns false (and changes nothing) if that passes the capacity.
    pub(crate) fn commit(&mut self, n: usize) -> bool {
        match self.len.checked_add(n) {
            Some(l) if l <= self.capacity => {
                self.len = l;
                true
            }
            _ => false,
        }
    }

    /// Writes row `slot` (rounding to the storage dtype). Slots below `len` are
    /// valid state: the engine only writes slots `>= len`.
    pub(crate) fn write_row(&mut self, slot: usize, src: &[f32]) {
        let start = slot.saturating_mul(self.row);
        let row = self.row;
        match &mut self.data {
            CacheData::F32(d) => {
                if let Some(dst) = d.get_mut(start..start.saturating_add(row)) {
                    dst.iter_mut().zip(src).for_each(|(d, &s)| *d = s);
                }
            }
            CacheData::F16(d) => {
                if let Some(dst) = d.get_mut(start..start.saturating_add(row)) {
                    dst.iter_mut()
                        .zip(src)
                        .for_each(|(d, &s)| *d = f16::from_f32(s));
                }
            }
            CacheData::BF16(d) => {
                if let Some(dst) = d.get_mut(start..start.saturating_add(row)) {
                    dst.iter_mut()
                        .zip(src)
                        .for_each(|(d, &s)| *d = bf16::from_f32(s));
                }
            }
        }
    }

    /// Rows `start..start + count` as f32 `[count][row]`: borrowed directly for an
    /// f32 cache, widened into `tmp` otherwise. Returns an empty slice when out of
    /// range (including `tmp` too small).
    pub fn rows<'s>(&'s self, start: usize, count: usize, tmp: &'s mut [f32]) -> &'s [f32] {
        let (Some(a), Some(n)) = (start.checked_mul(self.row), count.checked_mul(self.row)) else {
            return &[];
        };
        let Some(b) = a.checked_add(n) else {
            return &[];
        };
        match &self.data {
            CacheData::F32(d) => d.get(a..b).unwrap_or(&[]),
            CacheData::F16(d) => match (d.get(a..b), tmp.get_mut(..n)) {
                (Some(src), Some(dst)) => {
                    dst.iter_mut().zip(src).for_each(|(o, v)| *o = v.to_f32());
                    dst
                }
                _ => &[],
            },
            CacheData::BF16(d) => match (d.get(a..b), tmp.get_mut(..n)) {
                (Some(src), Some(dst)) => {
                    dst.iter_mut().zip(src).for_each(|(o, v)| *o = v.to_f32());
                    dst
                }
                _ => &[],
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(align(64))]
    struct Mem([u8; 256]);

    #[test]
    fn write_commit_truncate() {
        let mut mem = Mem([0; 256]);
        let mut c = LatentCache::new(&mut mem.0, DType::F32, 4, 8).unwrap();
        assert_eq!((c.len(), c.capacity()), (0, 8));
        c.write_row(0, &[1.0, 2.0, 3.0, 4.0]);
        c.write_row(1, &[5.0, 6.0, 7.0, 8.0]);
        assert!(c.commit(2));
        let mut tmp = [0f32; 8];
        assert_eq!(c.rows(1, 1, &mut tmp), &[5.0, 6.0, 7.0, 8.0]);
        assert!(!c.commit(7));
        assert_eq!(c.len(), 2);
        assert!(!c.truncate(3));
        assert!(c.truncate(1));
        assert_eq!(c.len(), 1);
        c.reset();
        assert!(c.is_empty());
        assert!(c.rows(7, 2, &mut tmp).is_empty());
    }

    #[test]
    fn half_storage_rounds() {
        let mut mem = Mem([0; 256]);
        let mut c = LatentCache::new(&mut mem.0, DType::BF16, 2, 4).unwrap();
        c.write_row(3, &[1.0 + 1.0 / 1024.0, -3.0]);
        let mut tmp = [0f32; 2];
        // bf16 keeps 8 significant bits: 1 + 2^-10 rounds to 1.
        assert_eq!(c.rows(3, 1, &mut tmp), &[1.0, -3.0]);
        assert!(LatentCache::new(&mut mem.0, DType::F16, 64, 4).is_none());
    }
}
