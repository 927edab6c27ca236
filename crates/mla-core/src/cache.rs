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

use crate::dtype::{DType, ElemsMut};

/// The latent cache: `capacity` rows of `row` values, the first `len` valid.
#[derive(Debug)]
pub struct LatentCache<'m> {
    /// `[capacity][row]` elements of the cache dtype.
    data: ElemsMut<'m>,
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
        Some(LatentCache {
            data: ElemsMut::from_bytes(bytes, dtype)?,
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
        self.data.dtype()
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
        if let Some(mut dst) = self.data.slice_mut(start, self.row) {
            dst.narrow_from(src);
        }
    }

    /// Rows `start..start + count` as f32 `[count][row]`: borrowed directly for an
    /// f32 cache, widened into `widen` otherwise. Returns an empty slice when out
    /// of range (including `widen` too small).
    pub fn rows<'s>(&'s self, start: usize, count: usize, widen: &'s mut [f32]) -> &'s [f32] {
        let (Some(first), Some(n)) = (start.checked_mul(self.row), count.checked_mul(self.row))
        else {
            return &[];
        };
        let Some(stored) = self.data.as_elems().slice(first, n) else {
            return &[];
        };
        if let Some(rows) = stored.as_f32() {
            return rows;
        }
        match widen.get_mut(..n) {
            Some(dst) => {
                stored.widen_into(dst);
                dst
            }
            None => &[],
        }
    }
}

impl LatentCache<'_> {
    /// The rows at slots `idx` (in that order) as f32 `[idx.len()][row]`,
    /// copied (widened) into `widen`; empty when a slot or `widen` is out of
    /// range. Sparse attention reads only its selected rows this way.
    pub fn gather<'s>(&'s self, idx: &[u32], widen: &'s mut [f32]) -> &'s [f32] {
        let row = self.row;
        let Some(dst) = idx.len().checked_mul(row).and_then(|n| widen.get_mut(..n)) else {
            return &[];
        };
        for (d, &slot) in dst.chunks_exact_mut(row.max(1)).zip(idx) {
            let src = (slot as usize)
                .checked_mul(row)
                .and_then(|first| self.data.as_elems().slice(first, row));
            match src {
                Some(src) if (slot as usize) < self.capacity => src.widen_into(d),
                _ => return &[],
            }
        }
        dst
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
