//! Safetensors files built in memory ([`Writer`], [`fn@file`]), and byte buffers
//! aligned for zero-copy views ([`AlignedBytes`]).
//!
//! This file uses only `std`, `half` and `bytemuck`: mla-core's unit tests compile
//! the same file (through `#[path]`, since mla-core cannot depend on this crate),
//! so it names nothing of mla-core.
#![allow(dead_code)]

use half::{bf16, f16};
use std::fmt::Write as _;
use std::path::Path;

/// Bytes copied into 8-byte aligned storage, optionally starting `shift` bytes past
/// the alignment (to test misaligned input).
#[derive(Clone, Debug)]
pub struct AlignedBytes {
    words: Vec<u64>,
    start: usize,
    len: usize,
}

impl AlignedBytes {
    /// `bytes`, starting at an 8-byte boundary.
    pub fn new(bytes: &[u8]) -> AlignedBytes {
        AlignedBytes::shifted(bytes, 0)
    }

    /// `bytes`, starting `shift` bytes past an 8-byte boundary.
    pub fn shifted(bytes: &[u8], shift: usize) -> AlignedBytes {
        let mut words = vec![0u64; (bytes.len() + shift).div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[shift..shift + bytes.len()]
            .copy_from_slice(bytes);
        AlignedBytes {
            words,
            start: shift,
            len: bytes.len(),
        }
    }

    /// The file at `path`, aligned; panics naming the path if it cannot be read.
    pub fn read(path: &Path) -> AlignedBytes {
        let raw = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        AlignedBytes::new(&raw)
    }

    /// The bytes.
    pub fn get(&self) -> &[u8] {
        &bytemuck::cast_slice::<u64, u8>(&self.words)[self.start..self.start + self.len]
    }
}

impl std::ops::Deref for AlignedBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.get()
    }
}

/// A file from a header given as text and a data section (no padding added).
pub fn file(header: &str, data: &[u8]) -> AlignedBytes {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(data);
    AlignedBytes::new(&v)
}

/// Little-endian bytes of f32 values.
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Little-endian bytes of values rounded to f16.
pub fn f16_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| f16::from_f32(v).to_bits().to_le_bytes())
        .collect()
}

/// Little-endian bytes of values rounded to bf16.
pub fn bf16_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| bf16::from_f32(v).to_bits().to_le_bytes())
        .collect()
}

/// `s` as a JSON string literal (quotes included); `ascii`: every non-ASCII
/// character as `\uXXXX` escapes (surrogate pairs above U+FFFF).
pub fn json_string(s: &str, ascii: bool) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || (ascii && !c.is_ascii()) => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{u:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One tensor of a [`Writer`].
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Name (written JSON-escaped).
    pub name: String,
    /// dtype as written in the header (`"F32"`, or anything, to test errors).
    pub dtype: String,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// The bytes (their length sets the data offsets, whatever dtype and shape say).
    pub data: Vec<u8>,
}

/// Writes a safetensors file: tensors in the data section in the order added,
/// `__metadata__` first in the header, the header padded with spaces so that the
/// data section starts at a multiple of 8 bytes (as the safetensors library does).
#[derive(Clone, Debug)]
pub struct Writer {
    /// The tensors, in data order.
    pub tensors: Vec<Entry>,
    /// `__metadata__` entries, in order (none: no `__metadata__` key).
    pub meta: Vec<(String, String)>,
    reversed: bool,
    ascii: bool,
    align: usize,
}

impl Default for Writer {
    fn default() -> Writer {
        Writer::new()
    }
}

impl Writer {
    /// An empty file.
    pub fn new() -> Writer {
        Writer {
            tensors: Vec::new(),
            meta: Vec::new(),
            reversed: false,
            ascii: false,
            align: 8,
        }
    }

    /// Adds a tensor with any dtype name and raw bytes.
    pub fn tensor(mut self, name: &str, dtype: &str, shape: &[usize], data: Vec<u8>) -> Writer {
        self.tensors.push(Entry {
            name: name.to_owned(),
            dtype: dtype.to_owned(),
            shape: shape.to_vec(),
            data,
        });
        self
    }

    /// Adds an F32 tensor.
    pub fn f32(self, name: &str, shape: &[usize], values: &[f32]) -> Writer {
        self.tensor(name, "F32", shape, f32_bytes(values))
    }

    /// Adds an F16 tensor (values rounded).
    pub fn f16(self, name: &str, shape: &[usize], values: &[f32]) -> Writer {
        self.tensor(name, "F16", shape, f16_bytes(values))
    }

    /// Adds a BF16 tensor (values rounded).
    pub fn bf16(self, name: &str, shape: &[usize], values: &[f32]) -> Writer {
        self.tensor(name, "BF16", shape, bf16_bytes(values))
    }

    /// Adds an F32 tensor of distinct values (`k + 0.01 i`, `k` = its index in the file).
    pub fn filled(self, name: &str, shape: &[usize]) -> Writer {
        let k = self.tensors.len() as f32;
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|i| k + i as f32 * 0.01).collect();
        self.f32(name, shape, &v)
    }

    /// Adds a `__metadata__` entry.
    pub fn meta(mut self, key: &str, value: &str) -> Writer {
        self.meta.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Lists the tensors in the header in reverse data order (offsets out of order).
    pub fn reversed(mut self) -> Writer {
        self.reversed = true;
        self
    }

    /// Writes every non-ASCII character of names and metadata as `\u` escapes.
    pub fn ascii_escapes(mut self) -> Writer {
        self.ascii = true;
        self
    }

    /// Pads the header so that the data section starts at a multiple of `align`
    /// bytes in the file (1: no padding).
    pub fn data_align(mut self, align: usize) -> Writer {
        self.align = align.max(1);
        self
    }

    /// The first tensor whose name ends with `suffix`.
    pub fn entry_mut(&mut self, suffix: &str) -> Option<&mut Entry> {
        self.tensors.iter_mut().find(|t| t.name.ends_with(suffix))
    }

    /// Removes the tensors whose name ends with `suffix`.
    pub fn without(mut self, suffix: &str) -> Writer {
        self.tensors.retain(|t| !t.name.ends_with(suffix));
        self
    }

    /// The header (unpadded) and the data section.
    pub fn header_and_data(&self) -> (String, Vec<u8>) {
        let mut items = Vec::new();
        if !self.meta.is_empty() {
            let kv: Vec<String> = self
                .meta
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{}:{}",
                        json_string(k, self.ascii),
                        json_string(v, self.ascii)
                    )
                })
                .collect();
            items.push(format!("\"__metadata__\":{{{}}}", kv.join(",")));
        }
        let mut data = Vec::new();
        let mut entries = Vec::new();
        for t in &self.tensors {
            let dims: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
            entries.push(format!(
                "{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
                json_string(&t.name, self.ascii),
                t.dtype,
                dims.join(","),
                data.len(),
                data.len() + t.data.len()
            ));
            data.extend_from_slice(&t.data);
        }
        if self.reversed {
            entries.reverse();
        }
        items.extend(entries);
        (format!("{{{}}}", items.join(",")), data)
    }

    /// The whole file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let (mut h, data) = self.header_and_data();
        while (8 + h.len()) % self.align != 0 {
            h.push(' ');
        }
        let mut v = (h.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(h.as_bytes());
        v.extend_from_slice(&data);
        v
    }

    /// The whole file in 8-byte aligned memory.
    pub fn build(&self) -> AlignedBytes {
        AlignedBytes::new(&self.to_bytes())
    }
}
