//! The indexer key cache: one `Di`-value key per token, beside the latent cache
//! in the engine's memory.

use crate::dtype::DType;
use crate::fp8;
use half::bf16;

/// Storage of the indexer keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexDType {
    /// f32, `4 Di` bytes per token.
    F32,
    /// bfloat16, `2 Di` bytes per token.
    BF16,
    /// FP8 E4M3 with one f32 scale per token, as DeepSeek's inference code
    /// stores its index cache: `Di` bytes `round(k / s)` then `s = amax(k) / 448`
    /// (little-endian), `Di + 4` bytes per token (132 at `Di` = 128).
    F8E4M3,
}

impl IndexDType {
    /// The storage for a config's `index_cache_dtype` (F16 is not offered).
    pub const fn from_dtype(d: DType) -> Option<IndexDType> {
        match d {
            DType::F32 => Some(IndexDType::F32),
            DType::BF16 => Some(IndexDType::BF16),
            DType::F8E4M3 => Some(IndexDType::F8E4M3),
            DType::F16 => None,
        }
    }
}

/// Bytes per cached token of `dim` values in `dtype`; `None` on overflow.
pub const fn row_bytes(dtype: IndexDType, dim: usize) -> Option<usize> {
    match dtype {
        IndexDType::F32 => dim.checked_mul(4),
        IndexDType::BF16 => dim.checked_mul(2),
        IndexDType::F8E4M3 => dim.checked_add(4),
    }
}

/// Encodes one key `k` into `dst` (`row_bytes(dtype, k.len())` bytes).
pub fn encode_row(dtype: IndexDType, k: &[f32], dst: &mut [u8]) {
    match dtype {
        IndexDType::F32 => {
            for (d, v) in dst.chunks_exact_mut(4).zip(k) {
                d.copy_from_slice(&v.to_le_bytes());
            }
        }
        IndexDType::BF16 => {
            for (d, v) in dst.chunks_exact_mut(2).zip(k) {
                d.copy_from_slice(&bf16::from_f32(*v).to_le_bytes());
            }
        }
        IndexDType::F8E4M3 => {
            let amax = k.iter().fold(0f32, |m, v| m.max(v.abs()));
            let s = if amax > 0.0 && amax.is_finite() {
                amax / fp8::MAX
            } else {
                1.0
            };
            let inv = 1.0 / s;
            let (codes, scale) = dst.split_at_mut(k.len().min(dst.len()));
            for (d, v) in codes.iter_mut().zip(k) {
                *d = fp8::from_f32(v * inv);
            }
            if let Some(sb) = scale.get_mut(..4) {
                sb.copy_from_slice(&s.to_le_bytes());
            }
        }
    }
}

/// Decodes one stored key from `src` into `out` (`out.len()` values).
pub fn decode_row(dtype: IndexDType, src: &[u8], out: &mut [f32]) {
    match dtype {
        IndexDType::F32 => {
            for (o, b) in out.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        IndexDType::BF16 => {
            for (o, b) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = bf16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        IndexDType::F8E4M3 => {
            let (codes, scale) = src.split_at(out.len().min(src.len()));
            let s = match scale.get(..4) {
                Some(&[a, b, c, d]) => f32::from_le_bytes([a, b, c, d]),
                _ => 0.0,
            };
            for (o, &c) in out.iter_mut().zip(codes) {
                *o = fp8::to_f32(c) * s;
            }
        }
    }
}

/// Indexer keys of up to `capacity` tokens in caller memory. Its length is the
/// latent cache's (the engine writes both for the same tokens and commits,
/// truncates and resets them together), so it keeps none of its own.
#[derive(Debug)]
pub struct IndexCache<'m> {
    bytes: &'m mut [u8],
    dtype: IndexDType,
    dim: usize,
    row: usize,
    capacity: usize,
}

impl<'m> IndexCache<'m> {
    /// A cache over `bytes` (at least `capacity * row_bytes(dtype, dim)`; for
    /// f32 4-byte aligned), or `None` if it does not fit.
    pub fn new(
        bytes: &'m mut [u8],
        dtype: IndexDType,
        dim: usize,
        capacity: usize,
    ) -> Option<Self> {
        let row = row_bytes(dtype, dim)?;
        let bytes = bytes.get_mut(..row.checked_mul(capacity)?)?;
        if dtype == IndexDType::F32 && (bytes.as_ptr() as usize) & 3 != 0 {
            return None;
        }
        Some(IndexCache {
            bytes,
            dtype,
            dim,
            row,
            capacity,
        })
    }

    /// Tokens it can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Values per key (`Di`).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The storage type.
    pub fn dtype(&self) -> IndexDType {
        self.dtype
    }

    /// Stores key `k` (`Di` values) at `slot`, rounding to the storage type;
    /// false (nothing written) out of range.
    pub fn write(&mut self, slot: usize, k: &[f32]) -> bool {
        let (Some(k), Some(start)) = (k.get(..self.dim), slot.checked_mul(self.row)) else {
            return false;
        };
        if slot >= self.capacity {
            return false;
        }
        match self.bytes.get_mut(start..start.saturating_add(self.row)) {
            Some(dst) => {
                encode_row(self.dtype, k, dst);
                true
            }
            None => false,
        }
    }

    /// Keys `start..start + count` as f32 `[count][Di]`: borrowed for an f32
    /// cache, decoded into `widen` otherwise; empty when out of range.
    pub fn rows<'s>(&'s self, start: usize, count: usize, widen: &'s mut [f32]) -> &'s [f32] {
        let (Some(first), Some(n), Some(vals)) = (
            start.checked_mul(self.row),
            count.checked_mul(self.row),
            count.checked_mul(self.dim),
        ) else {
            return &[];
        };
        let Some(src) = self.bytes.get(first..first.saturating_add(n)) else {
            return &[];
        };
        if self.dtype == IndexDType::F32 {
            return bytemuck::try_cast_slice(src).unwrap_or(&[]);
        }
        let Some(dst) = widen.get_mut(..vals) else {
            return &[];
        };
        for (o, s) in dst
            .chunks_exact_mut(self.dim.max(1))
            .zip(src.chunks_exact(self.row.max(1)))
        {
            decode_row(self.dtype, s, o);
        }
        dst
    }

    /// Key of token `slot` decoded into `out` (`Di` values); false out of range.
    pub fn read(&self, slot: usize, out: &mut [f32]) -> bool {
        let Some(start) = slot.checked_mul(self.row) else {
            return false;
        };
        match (
            self.bytes.get(start..start.saturating_add(self.row)),
            out.get_mut(..self.dim),
        ) {
            (Some(src), Some(o)) if slot < self.capacity => {
                decode_row(self.dtype, src, o);
                true
            }
            _ => false,
        }
    }
}
