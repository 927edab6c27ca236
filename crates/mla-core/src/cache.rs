//! The fixed-capacity latent cache.
//!
//! Per token it holds exactly what attention needs later (docs/design.md section 2):
//! the normalised latent `c` (`r` values) followed by the rotated rope key(s)
//! (`p` values shared by all heads, or `H*p` per head): one row of `r + rope_k`
//! values, `capacity` rows, stored as f32, f16 or bf16 in caller memory, or as
//! FP8 in FlashMLA's DeepSeek-V3.2 layout (see [`row_bytes`]).
//!
//! **FP8** (`DType::F8E4M3`), per token: the `r` latent values as E4M3 codes,
//! then one little-endian f32 scale per group of [`FP8_GROUP`] latent values
//! (the last group shorter when `r` is not a multiple), then the rope values
//! as bf16: `r + 4 ceil(r / 128) + 2 rope_k` bytes, 656 at r 512, p 64. A
//! group's scale is `amax / 448`, at least `1e-4`, rounded up to a power of two
//! (so dividing by it is exact and the codes never saturate); a code decodes as
//! `e4m3(code) * scale`. Rows are quantized when written and decoded when read
//! ([`LatentCache::rows`], [`LatentCache::gather`]) into the attention's
//! per-block scratch, as f16/bf16 rows are widened.
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

use crate::dtype::{DType, Elems, ElemsMut};
use crate::fp8;
use half::bf16;

/// Latent values per f32 scale in the FP8 cache (FlashMLA's tile of 128).
pub const FP8_GROUP: usize = 128;

/// The smallest FP8 cache scale (FlashMLA's floor on `amax / 448`).
pub const FP8_MIN_SCALE: f32 = 1e-4;

/// Bytes per cached token of `latent` (`r`) and `rope` (`rope_k`) values in
/// `dtype`: `(r + rope_k) * size` for f32/f16/bf16; for FP8 the latent codes,
/// one f32 scale per [`FP8_GROUP`] latent values and the rope values as bf16,
/// `r + 4 ceil(r / 128) + 2 rope_k`. `None` on overflow.
pub const fn row_bytes(dtype: DType, latent: usize, rope: usize) -> Option<usize> {
    let Some(values) = latent.checked_add(rope) else {
        return None;
    };
    match dtype {
        DType::F8E4M3 => {
            let groups = latent.div_ceil(FP8_GROUP);
            let (Some(scales), Some(rope_b)) = (groups.checked_mul(4), rope.checked_mul(2)) else {
                return None;
            };
            match latent.checked_add(scales) {
                Some(b) => b.checked_add(rope_b),
                None => None,
            }
        }
        _ => values.checked_mul(dtype.size()),
    }
}

/// The FP8 cache scale of a group whose largest magnitude is `amax`:
/// `amax / 448`, at least [`FP8_MIN_SCALE`], rounded up to a power of two
/// (2^127 at most, also for a non-finite `amax`).
pub fn fp8_scale(amax: f32) -> f32 {
    let s = amax / fp8::MAX;
    if !s.is_finite() {
        return f32::from_bits(254 << 23); // 2^127, also for NaN
    }
    let s = s.max(FP8_MIN_SCALE);
    // s is normal here: a power of two keeps its exponent, anything else
    // rounds up to the next one (2^127 at most: s <= f32::MAX < 2^128).
    let bits = s.to_bits();
    let exp = bits >> 23;
    if bits & 0x007f_ffff == 0 {
        s
    } else {
        f32::from_bits((exp + 1).min(254) << 23)
    }
}

/// Quantizes one row (`latent` latent values then the rope values of `src`)
/// into `dst` in the FP8 layout of [`row_bytes`]. `dst` must hold the row
/// (shorter: the tail is not written).
pub fn fp8_encode_row(src: &[f32], latent: usize, dst: &mut [u8]) {
    let latent = latent.min(src.len()).min(dst.len());
    let (lat, rope) = src.split_at(latent);
    let (codes, rest) = dst.split_at_mut(latent);
    let groups = latent.div_ceil(FP8_GROUP);
    let (scales, rope_dst) = rest.split_at_mut((groups * 4).min(rest.len()));
    for ((g, c), sb) in lat
        .chunks(FP8_GROUP)
        .zip(codes.chunks_mut(FP8_GROUP))
        .zip(scales.chunks_exact_mut(4))
    {
        let amax = g.iter().fold(0f32, |m, v| m.max(v.abs()));
        let s = fp8_scale(amax);
        // A power of two: multiplying by its inverse is dividing, exactly.
        let inv = 1.0 / s;
        for (d, &v) in c.iter_mut().zip(g) {
            *d = fp8::from_f32(v * inv);
        }
        sb.copy_from_slice(&s.to_le_bytes());
    }
    for (d, &v) in rope_dst.chunks_exact_mut(2).zip(rope) {
        d.copy_from_slice(&bf16::from_f32(v).to_le_bytes());
    }
}

/// Decodes one FP8 row (the layout of [`row_bytes`]) into `out` (`latent`
/// latent values then the rope values, `out.len()` in all).
pub fn fp8_decode_row(src: &[u8], latent: usize, out: &mut [f32]) {
    decode_row_inline(src, latent, out);
}

#[inline(always)]
fn decode_row_inline(src: &[u8], latent: usize, out: &mut [f32]) {
    let latent = latent.min(src.len()).min(out.len());
    let (codes, rest) = src.split_at(latent);
    let (lat, rope) = out.split_at_mut(latent);
    let groups = latent.div_ceil(FP8_GROUP);
    let (scales, rope_src) = rest.split_at((groups * 4).min(rest.len()));
    for ((o, c), sb) in lat
        .chunks_mut(FP8_GROUP)
        .zip(codes.chunks(FP8_GROUP))
        .zip(scales.chunks_exact(4))
    {
        let s = <[u8; 4]>::try_from(sb).map_or(0.0, f32::from_le_bytes);
        decode_group(c, s, o);
    }
    // bf16 is the upper half of an f32: widening is a shift (as u16 words
    // when the row keeps them aligned, the usual case: even r).
    let rope_src = rope_src
        .get(..rope.len().saturating_mul(2))
        .unwrap_or(rope_src);
    if let Ok(words) = bytemuck::try_cast_slice::<u8, u16>(rope_src) {
        for (d, &w) in rope.iter_mut().zip(words) {
            *d = f32::from_bits(u32::from(u16::from_le(w)) << 16);
        }
        return;
    }
    for (d, b) in rope.iter_mut().zip(rope_src.chunks_exact(2)) {
        if let [lo, hi] = *b {
            *d = f32::from_bits(((hi as u32) << 24) | ((lo as u32) << 16));
        }
    }
}

/// Decodes FP8 rows of `row_bytes` bytes from `src` into `dst` rows of `row`
/// values ([`fp8_decode_row`] each), compiled for AVX2 where the CPU has it
/// (8 codes per instruction instead of SSE2's 4; the same arithmetic).
fn fp8_decode_rows(src: &[u8], row_bytes: usize, latent: usize, dst: &mut [f32], row: usize) {
    #[cfg(target_arch = "x86_64")]
    if matches!(
        crate::kernels::isa(),
        crate::kernels::Isa::Avx2 | crate::kernels::Isa::Avx512
    ) {
        // SAFETY: `isa()` reports AVX2 (or AVX-512, which implies it) only
        // when the CPU has it (`Isa::supported`).
        unsafe { fp8_decode_rows_avx2(src, row_bytes, latent, dst, row) };
        return;
    }
    fp8_decode_rows_body(src, row_bytes, latent, dst, row);
}

/// [`fp8_decode_rows_body`] compiled with AVX2.
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn fp8_decode_rows_avx2(
    src: &[u8],
    row_bytes: usize,
    latent: usize,
    dst: &mut [f32],
    row: usize,
) {
    fp8_decode_rows_body(src, row_bytes, latent, dst, row);
}

#[inline(always)]
fn fp8_decode_rows_body(src: &[u8], row_bytes: usize, latent: usize, dst: &mut [f32], row: usize) {
    for (o, s) in dst
        .chunks_exact_mut(row.max(1))
        .zip(src.chunks_exact(row_bytes.max(1)))
    {
        decode_row_inline(s, latent, o);
    }
}

/// [`fp8::to_f32`] in branch-free bit operations the compiler vectorizes (a
/// table lookup does not): a normal code's exponent and mantissa moved into
/// an f32 and rebiased (+120), a subnormal one (`m * 2^-9`) converted from
/// its integer, NaN kept. Equal to [`fp8::to_f32`] on all 256 codes (tested).
#[inline(always)]
fn e4m3(b: u8) -> f32 {
    let mag = (b & 0x7f) as i32;
    let normal = f32::from_bits(((mag as u32) << 20) + (120 << 23));
    let subnormal = mag as f32 * (1.0 / 512.0);
    let v = if mag < 8 { subnormal } else { normal };
    let v = if mag == 0x7f { f32::NAN } else { v };
    f32::from_bits(v.to_bits() | (((b & 0x80) as u32) << 24))
}

/// `out[i] = e4m3(codes[i]) * s` for one scale group.
///
/// Fast path: a code's 7 magnitude bits shifted to bit 20 of an f32 (sign to
/// bit 31) read as a float are its E4M3 value times 2^-120, for normal and
/// subnormal codes alike, so one multiply by `s * 2^120` decodes and scales
/// (exactly: powers of two). It vectorizes. It needs no NaN code (0x7f/0xff,
/// written only for a NaN input) and `s <= 2^7` (`amax <= 57344`); a group
/// without both takes [`e4m3`] code by code.
#[inline(always)]
pub(crate) fn decode_group(codes: &[u8], s: f32, out: &mut [f32]) {
    const TWO_120: f32 = f32::from_bits((120 + 127) << 23);
    let nan = codes.iter().fold(false, |a, &b| a | (b & 0x7f == 0x7f));
    if nan || s.is_nan() || s > 128.0 {
        for (d, &b) in out.iter_mut().zip(codes) {
            *d = e4m3(b) * s;
        }
        return;
    }
    let k = s * TWO_120;
    for (d, &b) in out.iter_mut().zip(codes) {
        let b = b as u32;
        *d = f32::from_bits(((b & 0x7f) << 20) | ((b & 0x80) << 24)) * k;
    }
}

/// The rows' storage: typed elements, or FP8 bytes.
#[derive(Debug)]
enum Store<'m> {
    /// `[slots][row]` f32/f16/bf16 elements.
    Elems(ElemsMut<'m>),
    /// `[slots][row_bytes]` in the FP8 layout.
    Fp8(&'m mut [u8]),
}

/// The latent cache: `capacity` positions of `row` values in `slots` rows, the
/// first `len` positions valid.
#[derive(Debug)]
pub struct LatentCache<'m> {
    data: Store<'m>,
    row: usize,
    /// Latent values per row (`r`): FP8 quantizes them, the rest is bf16.
    latent: usize,
    /// Bytes per row.
    row_bytes: usize,
    slots: usize,
    capacity: usize,
    len: usize,
    oldest: usize,
}

impl<'m> LatentCache<'m> {
    /// A cache of `capacity` positions in as many rows over `bytes` (which must
    /// hold `capacity * row` elements of `dtype`, aligned for it); `None` if it
    /// does not, or for FP8 (whose layout needs the latent width: see
    /// [`LatentCache::ring_split`]).
    pub fn new(bytes: &'m mut [u8], dtype: DType, row: usize, capacity: usize) -> Option<Self> {
        Self::ring(bytes, dtype, row, capacity, capacity)
    }

    /// A cache of `capacity` positions in a ring of `slots <= capacity` rows over
    /// `bytes` (which must hold `slots * row` elements of `dtype`); `None` if it
    /// does not, or for FP8 (see [`LatentCache::ring_split`]).
    pub fn ring(
        bytes: &'m mut [u8],
        dtype: DType,
        row: usize,
        slots: usize,
        capacity: usize,
    ) -> Option<Self> {
        if dtype == DType::F8E4M3 {
            return None;
        }
        Self::ring_split(bytes, dtype, row, 0, slots, capacity)
    }

    /// As [`LatentCache::ring`] for rows of `latent` latent values followed by
    /// `rope` rope values, in any dtype including FP8 (`bytes` must hold
    /// `slots * row_bytes(dtype, latent, rope)`).
    pub fn ring_split(
        bytes: &'m mut [u8],
        dtype: DType,
        latent: usize,
        rope: usize,
        slots: usize,
        capacity: usize,
    ) -> Option<Self> {
        if slots > capacity {
            return None;
        }
        let row = latent.checked_add(rope)?;
        let row_bytes = row_bytes(dtype, latent, rope)?;
        let bytes = bytes.get_mut(..row_bytes.checked_mul(slots)?)?;
        let data = match dtype {
            DType::F8E4M3 => Store::Fp8(bytes),
            _ => Store::Elems(ElemsMut::from_bytes(bytes, dtype)?),
        };
        Some(LatentCache {
            data,
            row,
            latent,
            row_bytes,
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
        match &self.data {
            Store::Elems(e) => e.dtype(),
            Store::Fp8(_) => DType::F8E4M3,
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
        match &mut self.data {
            Store::Elems(e) => {
                if let Some(mut dst) = e.slice_mut(slot.saturating_mul(self.row), self.row) {
                    dst.narrow_from(src);
                }
            }
            Store::Fp8(b) => {
                let start = slot.saturating_mul(self.row_bytes);
                if let Some(dst) = b.get_mut(start..start.saturating_add(self.row_bytes)) {
                    fp8_encode_row(src, self.latent, dst);
                }
            }
        }
    }

    /// Decodes FP8 rows `first_slot..first_slot + dst.len() / row` into `dst`;
    /// false when out of range.
    fn decode_fp8(&self, bytes: &[u8], first_slot: usize, dst: &mut [f32]) -> bool {
        let (Some(start), Some(n)) = (
            first_slot.checked_mul(self.row_bytes),
            (dst.len() / self.row.max(1)).checked_mul(self.row_bytes),
        ) else {
            return false;
        };
        let Some(src) = bytes.get(start..start.saturating_add(n)) else {
            return false;
        };
        fp8_decode_rows(src, self.row_bytes, self.latent, dst, self.row);
        true
    }

    /// The stored bytes of positions `start..start + count` of an f16 or bf16
    /// cache (`[count][row]` two-byte elements, before widening), for a
    /// prefetch ahead of [`LatentCache::rows`]; `None` for other element
    /// types, out of range, or a range that wraps around the ring.
    pub fn stored_half(&self, start: usize, count: usize) -> Option<&[u8]> {
        let slot = start.checked_rem(self.slots)?;
        if count > self.slots - slot {
            return None;
        }
        let (first, n) = (slot.checked_mul(self.row)?, count.checked_mul(self.row)?);
        let bytes: &[u8] = match &self.data {
            Store::Elems(e) => match e.as_elems().slice(first, n)? {
                Elems::F16(h) => bytemuck::cast_slice(h),
                Elems::BF16(h) => bytemuck::cast_slice(h),
                Elems::F32(_) | Elems::F8(_) => return None,
            },
            Store::Fp8(_) => return None,
        };
        Some(bytes)
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
        let elems = match &self.data {
            Store::Elems(e) => e.as_elems(),
            Store::Fp8(b) => {
                let Some(dst) = widen.get_mut(..n) else {
                    return &[];
                };
                return if self.decode_fp8(b, slot, dst) {
                    dst
                } else {
                    &[]
                };
            }
        };
        let Some(stored) = elems.slice(first, n) else {
            return &[];
        };
        if let Some(rows) = stored.as_f32() {
            return rows;
        }
        match widen.get_mut(..n) {
            Some(dst) => {
                crate::kernels::widen(stored, dst);
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
            if slot as usize >= self.capacity {
                return &[];
            }
            match &self.data {
                Store::Elems(e) => {
                    let src = (slot as usize)
                        .checked_mul(row)
                        .and_then(|first| e.as_elems().slice(first, row));
                    match src {
                        Some(src) => crate::kernels::widen(src, d),
                        None => return &[],
                    }
                }
                Store::Fp8(b) => {
                    if !self.decode_fp8(b, slot as usize, d) {
                        return &[];
                    }
                }
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

    /// The stored bytes ahead of a widening read: a bf16 cache's rows as
    /// stored, nothing for an f32 cache, out of range or across the ring.
    #[test]
    fn stored_half_bytes() {
        let mut mem = Mem([0; 256]);
        let mut c = LatentCache::ring(&mut mem.0, DType::BF16, 2, 3, 10).unwrap();
        for pos in 0..5 {
            c.write_row(pos, &[pos as f32, 0.5]);
        }
        assert!(c.commit(5));
        // Position 3 is slot 0, 4 slot 1: [3.0, 0.5, 4.0, 0.5] in bf16.
        let want: Vec<u8> = [3.0f32, 0.5, 4.0, 0.5]
            .iter()
            .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
            .collect();
        assert_eq!(c.stored_half(3, 2), Some(&want[..]));
        assert_eq!(c.stored_half(3, 0), Some(&[][..]));
        // 2..4 wraps; 3 slots hold at most 3 rows.
        assert_eq!(c.stored_half(2, 2), None);
        assert_eq!(c.stored_half(3, 4), None);
        let mut mem32 = Mem([0; 256]);
        let c32 = LatentCache::new(&mut mem32.0, DType::F32, 2, 4).unwrap();
        assert_eq!(c32.stored_half(0, 1), None);
    }

    #[test]
    fn e4m3_bit_decode_equals_the_exact_decode() {
        for b in 0..=255u8 {
            let (fast, exact) = (e4m3(b), fp8::to_f32(b));
            if exact.is_nan() {
                assert!(fast.is_nan(), "{b:#04x}");
            } else {
                assert_eq!(fast.to_bits(), exact.to_bits(), "{b:#04x}");
            }
        }
    }

    #[test]
    fn group_decode_equals_code_times_scale() {
        // Every non-NaN code (the fast path), then all 256 (a NaN code sends
        // the group through the exact decode), at scales from the floor to
        // 2^127 (above 2^7 the exact decode too).
        let finite: Vec<u8> = (0..=255u8).filter(|b| b & 0x7f != 0x7f).collect();
        let all: Vec<u8> = (0..=255u8).collect();
        for s in [
            1.0 / 8192.0,
            0.25,
            1.0,
            128.0,
            256.0,
            f32::from_bits(254 << 23),
        ] {
            for codes in [&finite, &all] {
                let mut out = vec![0f32; codes.len()];
                decode_group(codes, s, &mut out);
                for (&b, &v) in codes.iter().zip(&out) {
                    let want = fp8::to_f32(b) * s;
                    if want.is_nan() {
                        assert!(v.is_nan(), "{b:#04x} x {s}");
                    } else {
                        assert_eq!(v.to_bits(), want.to_bits(), "{b:#04x} x {s}");
                    }
                }
            }
        }
    }

    #[test]
    fn fp8_row_decode_is_the_same_on_every_path() {
        // The dispatched decode (AVX2 where the CPU has it) against the
        // portable one and against code x scale, on rows of varied ranges.
        let (r, p, n) = (300usize, 10usize, 3usize);
        let rb = row_bytes(DType::F8E4M3, r, p).unwrap();
        let mut bytes = vec![0u8; rb * n];
        for (k, dst) in bytes.chunks_exact_mut(rb).enumerate() {
            let src: Vec<f32> = (0..r + p)
                .map(|i| libm::sinf((i * 7 + k) as f32) * [1e-3, 5.0, 3e4][k])
                .collect();
            fp8_encode_row(&src, r, dst);
        }
        let (mut a, mut b) = (vec![0f32; (r + p) * n], vec![1f32; (r + p) * n]);
        fp8_decode_rows(&bytes, rb, r, &mut a, r + p);
        fp8_decode_rows_body(&bytes, rb, r, &mut b, r + p);
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
        for (k, (row, src)) in a
            .chunks_exact(r + p)
            .zip(bytes.chunks_exact(rb))
            .enumerate()
        {
            for i in 0..r {
                let g = i / FP8_GROUP;
                let s = f32::from_le_bytes(src[r + 4 * g..r + 4 * g + 4].try_into().unwrap());
                assert_eq!(row[i], fp8::to_f32(src[i]) * s, "row {k} value {i}");
            }
        }
    }

    #[test]
    fn an_fp8_ring_wraps() {
        let mut mem = Mem([0; 256]);
        // r 2, rope 2: 2 + 4 + 4 = 10 bytes a row; 3 slots for 10 positions.
        let mut c = LatentCache::ring_split(&mut mem.0, DType::F8E4M3, 2, 2, 3, 10).unwrap();
        for pos in 0..5 {
            let v = pos as f32;
            c.write_row(pos, &[v, -v, v + 0.5, -0.25]);
        }
        assert!(c.commit(5));
        assert_eq!((c.len(), c.oldest(), c.slots()), (5, 2, 3));
        let mut tmp = [0f32; 8];
        // Positions 3 and 4 in slots 0 and 1; all values exact in E4M3/bf16.
        assert_eq!(
            c.rows(3, 2, &mut tmp),
            &[3.0, -3.0, 3.5, -0.25, 4.0, -4.0, 4.5, -0.25]
        );
        assert_eq!(c.rows(2, 1, &mut tmp), &[2.0, -2.0, 2.5, -0.25]);
        assert!(c.rows(2, 2, &mut tmp).is_empty());
    }

    #[test]
    fn fp8_scale_rule() {
        // amax / 448 rounded up to a power of two.
        assert_eq!(fp8_scale(448.0), 1.0);
        assert_eq!(fp8_scale(449.0), 2.0);
        assert_eq!(fp8_scale(447.0), 1.0);
        assert_eq!(fp8_scale(3.0 * 448.0), 4.0);
        assert_eq!(fp8_scale(0.5 * 448.0), 0.5);
        assert_eq!(fp8_scale(0.3 * 448.0), 0.5);
        // The 1e-4 floor, itself rounded up: 2^-13 = 1.22e-4 is the smallest.
        let floor = 1.0 / 8192.0;
        assert_eq!(fp8_scale(0.0), floor);
        assert_eq!(fp8_scale(1e-30), floor);
        assert_eq!(fp8_scale(448.0 * 1e-4), floor);
        assert_eq!(fp8_scale(448.0 * floor), floor);
        assert_eq!(fp8_scale(448.0 * floor * 1.01), 2.0 * floor);
        // Every scale is a power of two.
        for a in [1e-3f32, 0.7, 5.0, 1234.5, 3e30] {
            let s = fp8_scale(a);
            assert_eq!(s.to_bits() & 0x007f_ffff, 0, "{a}: {s}");
            assert!(
                s >= a / 448.0 && s < 2.0 * (a / 448.0).max(1e-4),
                "{a}: {s}"
            );
        }
        assert_eq!(fp8_scale(f32::INFINITY), f32::from_bits(254 << 23));
        assert_eq!(fp8_scale(f32::NAN), f32::from_bits(254 << 23));
        // f32::MAX / 448 is about 2^119.2: up to 2^120.
        assert_eq!(fp8_scale(f32::MAX), f32::from_bits((120 + 127) << 23));
    }

    #[test]
    fn fp8_row_layout_and_round_trip() {
        // r = 300: groups of 128, 128 and a short 44; rope 6 values as bf16.
        let (r, p) = (300, 6);
        let n = row_bytes(DType::F8E4M3, r, p).unwrap();
        assert_eq!(n, 300 + 3 * 4 + 2 * 6);
        assert_eq!(row_bytes(DType::F8E4M3, 512, 64), Some(656));
        assert_eq!(row_bytes(DType::BF16, 512, 64), Some(1152));
        assert_eq!(row_bytes(DType::F8E4M3, usize::MAX, 1), None);
        // Group 0 large values, group 1 tiny ones (the floor), group 2 mixed.
        let src: Vec<f32> = (0..r + p)
            .map(|i| {
                let x = ((i * 37 % 101) as f32 - 50.0) / 50.0;
                match i {
                    0..128 => 1000.0 * x,
                    128..256 => 1e-6 * x,
                    _ => x,
                }
            })
            .collect();
        let mut row = vec![0u8; n];
        fp8_encode_row(&src, r, &mut row);
        let scale =
            |g: usize| f32::from_le_bytes(row[r + 4 * g..r + 4 * g + 4].try_into().unwrap());
        let amax = |lo: usize, hi: usize| src[lo..hi].iter().fold(0f32, |m, v| m.max(v.abs()));
        assert_eq!(scale(0), fp8_scale(amax(0, 128)));
        assert_eq!(scale(0), 4.0); // 1000 / 448 = 2.23 -> 4
        assert_eq!(scale(1), 1.0 / 8192.0);
        assert_eq!(scale(2), fp8_scale(amax(256, 300)));
        assert_eq!(scale(2), 1.0 / 256.0); // 1 / 448 -> 2^-8
        let mut back = vec![0f32; r + p];
        fp8_decode_row(&row, r, &mut back);
        for (i, (&a, &b)) in src.iter().zip(&back).enumerate() {
            let err = (a - b).abs();
            if i < r {
                let s = scale(i / 128);
                // Half a step of E4M3 at |a|/s (3 mantissa bits: <= 2^-4
                // relative), or half a subnormal step (2^-10 s) near zero.
                let bound = (a.abs() / 16.0).max(s / 1024.0);
                assert!(err <= bound, "value {i}: {a} -> {b}");
                // Decoded values are codes times the scale, exactly.
                assert_eq!(b, fp8::to_f32(row[i]) * s);
            } else {
                assert_eq!(b, half::bf16::from_f32(a).to_f32(), "rope {i}");
            }
        }
        // The rope part is bf16 bytes.
        let rope0 = half::bf16::from_le_bytes([row[r + 12], row[r + 13]]);
        assert_eq!(rope0.to_f32(), half::bf16::from_f32(src[r]).to_f32());
    }

    #[test]
    fn fp8_saturates_and_keeps_the_group_maximum() {
        // The largest magnitude of a group decodes within 1/16 of itself and
        // no code is NaN (power-of-two scale: |v| / s <= 448).
        for amax in [448.0f32, 449.0, 1e-3, 7.0, 1e20] {
            let src = [amax, -amax, amax / 3.0, 0.0];
            let mut row = [0u8; 4 + 4];
            fp8_encode_row(&src, 4, &mut row);
            assert!(
                row[..4].iter().all(|&c| c & 0x7f != 0x7f),
                "{amax}: {row:?}"
            );
            let mut back = [0f32; 4];
            fp8_decode_row(&row, 4, &mut back);
            assert!((back[0] - amax).abs() <= amax / 16.0, "{amax}: {back:?}");
            assert_eq!(back[1], -back[0]);
            assert_eq!(back[3], 0.0);
        }
        // Non-finite input saturates instead of writing NaN codes for finite ones.
        let src = [f32::INFINITY, 1.0, -1.0, 0.0];
        let mut row = [0u8; 8];
        fp8_encode_row(&src, 4, &mut row);
        assert_eq!(row[0], 0x7e);
    }

    #[test]
    fn fp8_cache_rows_and_gather_decode() {
        let mut mem = Mem([0; 256]);
        // r 4, rope 2: 4 + 4 + 4 = 12 bytes a row, 8 rows.
        assert!(LatentCache::new(&mut mem.0, DType::F8E4M3, 6, 8).is_none());
        let mut c = LatentCache::ring_split(&mut mem.0, DType::F8E4M3, 4, 2, 8, 8).unwrap();
        assert_eq!((c.dtype(), c.row_len()), (DType::F8E4M3, 6));
        c.write_row(2, &[1.0, -2.0, 0.5, 3.0, 0.25, -7.0]);
        c.write_row(3, &[100.0, 0.0, -100.0, 1.0, 1.5, 2.5]);
        assert!(c.commit(4));
        let mut tmp = [0f32; 12];
        // Scale 2^-7 (3 / 448 -> 2^-7): all four values exact in E4M3.
        assert_eq!(c.rows(2, 1, &mut tmp), &[1.0, -2.0, 0.5, 3.0, 0.25, -7.0]);
        assert_eq!(
            c.gather(&[3, 2], &mut tmp),
            &[96.0, 0.0, -96.0, 1.0, 1.5, 2.5, 1.0, -2.0, 0.5, 3.0, 0.25, -7.0]
        );
        assert!(c.gather(&[8], &mut tmp).is_empty());
        assert!(c.rows(7, 2, &mut tmp).is_empty());
        assert!(c.rows(0, 3, &mut tmp).is_empty()); // widen holds 2 rows
                                                    // 8 rows of 12 bytes need 96 bytes.
        assert!(LatentCache::ring_split(&mut mem.0[..95], DType::F8E4M3, 4, 2, 8, 8).is_none());
    }
}
