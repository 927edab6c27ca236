//! The fixed-capacity latent cache.
//!
//! Per token it holds exactly what attention needs later (docs/design.md section 2):
//! the normalised latent `c` (`r` values) followed by the rotated rope key(s)
//! (`p` values shared by all heads, or `H*p` per head): one row of `r + rope_k`
//! values, `capacity` rows, stored as f32, f16 or bf16 in caller memory.
//!
//! The state is `len` plus the rows of positions `0..len`. Rows at `len..` are
//! scratch: forward writes the new tokens there and only then raises `len`, so a
//! call that fails leaves the state untouched.
//!
//! **Ring** (sliding-window layers): the cache may hold fewer row `slots` than
//! positions (`capacity`); position `pos` lives in slot `pos % slots`, and a
//! write overwrites the row of `pos - slots`. [`LatentCache::oldest`] is the
//! first position whose row is still intact (0 while nothing was overwritten;
//! a failed call may have raised it: its new rows overwrote the oldest ones,
//! which a window of `slots - max_tokens_per_call + 1` tokens never reads
//! again). Without a window `slots == capacity` and nothing wraps.

use crate::dtype::{DType, ElemsMut};

/// The latent cache: `capacity` positions of `row` values in `slots` rows, the
/// first `len` positions valid.
#[derive(Debug)]
pub struct LatentCache<'m> {
    /// `[slots][row]` elements of the cache dtype.
    data: ElemsMut<'m>,
    row: usize,
    slots: usize,
    capacity: usize,
    len: usize,
    oldest: usize,
}

impl<'m> LatentCache<'m> {
    /// A cache of `capacity` positions in as many rows over `bytes` (which must
    /// hold `capacity * row` elements of `dtype`, aligned for it); `None` if it
    /// does not.
    pub fn new(bytes: &'m mut [u8], dtype: DType, row: usize, capacity: usize) -> Option<Self> {
        Self::ring(bytes, dtype, row, capacity, capacity)
    }

    /// A cache of `capacity` positions in a ring of `slots <= capacity` rows over
    /// `bytes` (which must hold `slots * row` elements of `dtype`); `None` if it
    /// does not.
    pub fn ring(
        bytes: &'m mut [u8],
        dtype: DType,
        row: usize,
        slots: usize,
        capacity: usize,
    ) -> Option<Self> {
        if slots > capacity {
            return None;
        }
        let n = row.checked_mul(slots)?;
        let bytes = bytes.get_mut(..n.checked_mul(dtype.size())?)?;
        Some(LatentCache {
            data: ElemsMut::from_bytes(bytes, dtype)?,
            row,
            slots,
            capacity,
            len: 0,
            oldest: 0,
        })
    }

    /// Rows held (`capacity` unless a ring).
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// The first position whose row is still held (see the module docs).
    pub fn oldest(&self) -> usize {
        self.oldest
    }

    /// Positions from `pos` on whose rows are contiguous in memory (up to the
    /// ring's end).
    pub fn contiguous(&self, pos: usize) -> usize {
        match pos.checked_rem(self.slots) {
            Some(s) => self.slots - s,
            None => 0,
        }
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
        self.oldest = 0;
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

    /// Writes the row of position `pos` (rounding to the storage dtype) into
    /// slot `pos % slots`. Positions below `len` are valid state: the engine only
    /// writes positions `>= len` (in a ring this overwrites position
    /// `pos - slots`, raising [`LatentCache::oldest`]).
    pub(crate) fn write_row(&mut self, pos: usize, src: &[f32]) {
        let Some(slot) = pos.checked_rem(self.slots) else {
            return;
        };
        self.oldest = self.oldest.max((pos + 1).saturating_sub(self.slots));
        let start = slot.saturating_mul(self.row);
        if let Some(mut dst) = self.data.slice_mut(start, self.row) {
            dst.narrow_from(src);
        }
    }

    /// Rows of positions `start..start + count` as f32 `[count][row]`: borrowed
    /// directly for an f32 cache, widened into `widen` otherwise. Returns an
    /// empty slice when out of range (including `widen` too small, and a range
    /// that wraps around the ring: see [`LatentCache::contiguous`]).
    pub fn rows<'s>(&'s self, start: usize, count: usize, widen: &'s mut [f32]) -> &'s [f32] {
        let Some(slot) = start.checked_rem(self.slots) else {
            return &[];
        };
        if count > self.slots - slot {
            return &[];
        }
        let (Some(first), Some(n)) = (slot.checked_mul(self.row), count.checked_mul(self.row))
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
    fn a_ring_wraps_and_tracks_the_oldest_row() {
        let mut mem = Mem([0; 256]);
        // 3 slots of 2 values for 10 positions.
        let mut c = LatentCache::ring(&mut mem.0, DType::F32, 2, 3, 10).unwrap();
        for pos in 0..5 {
            c.write_row(pos, &[pos as f32, -(pos as f32)]);
        }
        assert!(c.commit(5));
        assert_eq!((c.len(), c.oldest(), c.slots()), (5, 2, 3));
        let mut tmp = [0f32; 6];
        // Position 3 is in slot 0, 4 in slot 1, 2 in slot 2.
        assert_eq!(c.rows(3, 2, &mut tmp), &[3.0, -3.0, 4.0, -4.0]);
        assert_eq!(c.rows(2, 1, &mut tmp), &[2.0, -2.0]);
        assert_eq!(c.contiguous(2), 1);
        // 2..4 wraps: not one slice.
        assert!(c.rows(2, 2, &mut tmp).is_empty());
        c.reset();
        assert_eq!(c.oldest(), 0);
        assert!(LatentCache::ring(&mut mem.0, DType::F32, 2, 11, 10).is_none());
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
