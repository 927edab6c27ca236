//! The file reader: header length, the header's JSON (through [`super::json`]),
//! every tensor entry, unique names, the tiling of the data section, metadata.

// `Error` is returned by value on purpose (no allocation); its size is by design.
#![allow(clippy::result_large_err)]

use super::json::{heapsort, ErrorKind, JsonError, JsonStr, Kind, Object, Scanner, UniqueKeys};
use super::json::{MAX_DEPTH, MAX_KEY_RUNS, MAX_UNSORTED_KEYS};
use super::{error, push, Piece::N, Piece::S};
use crate::dtype::{DType, Elems};
use crate::status::{Error, Result, Status};

mod entries;

use entries::*;

/// Largest header accepted, in bytes (100 MiB).
pub const MAX_HEADER_BYTES: u64 = 100 * 1024 * 1024;
/// Largest tensor rank accepted.
pub const MAX_RANK: usize = 8;
/// Most tensors holding data (non-empty) accepted when their `data_offsets` are not
/// in header order. Files written by the safetensors library list tensors in
/// offset order, which is checked in the same pass that reads the header; other
/// orders are sorted in a fixed stack buffer of this many `(begin, end)` pairs.
pub const MAX_UNORDERED_TENSORS: usize = 1024;

/// Element type of a tensor in a safetensors file (every dtype of the format).
/// Only `F32`, `F16` and `BF16` can be bound as weights ([`FileDType::to_dtype`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileDType {
    /// Boolean, one byte.
    Bool,
    /// 4-bit float (two per byte).
    F4,
    /// 6-bit float, 2 exponent bits.
    F6E2M3,
    /// 6-bit float, 3 exponent bits.
    F6E3M2,
    /// Unsigned 8-bit integer.
    U8,
    /// Signed 8-bit integer.
    I8,
    /// 8-bit float, 5 exponent bits.
    F8E5M2,
    /// 8-bit float, 4 exponent bits.
    F8E4M3,
    /// 8-bit exponent-only scale.
    F8E8M0,
    /// Signed 16-bit integer.
    I16,
    /// Unsigned 16-bit integer.
    U16,
    /// IEEE binary16.
    F16,
    /// bfloat16.
    BF16,
    /// Signed 32-bit integer.
    I32,
    /// Unsigned 32-bit integer.
    U32,
    /// IEEE binary32.
    F32,
    /// Complex of two binary32.
    C64,
    /// IEEE binary64.
    F64,
    /// Signed 64-bit integer.
    I64,
    /// Unsigned 64-bit integer.
    U64,
}

impl FileDType {
    /// Every dtype, in the order of the format's specification.
    pub const ALL: [FileDType; 20] = [
        FileDType::Bool,
        FileDType::F4,
        FileDType::F6E2M3,
        FileDType::F6E3M2,
        FileDType::U8,
        FileDType::I8,
        FileDType::F8E5M2,
        FileDType::F8E4M3,
        FileDType::F8E8M0,
        FileDType::I16,
        FileDType::U16,
        FileDType::F16,
        FileDType::BF16,
        FileDType::I32,
        FileDType::U32,
        FileDType::F32,
        FileDType::C64,
        FileDType::F64,
        FileDType::I64,
        FileDType::U64,
    ];

    /// The dtype's name as written in the header (`"F32"`, `"BF16"`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            FileDType::Bool => "BOOL",
            FileDType::F4 => "F4",
            FileDType::F6E2M3 => "F6_E2M3",
            FileDType::F6E3M2 => "F6_E3M2",
            FileDType::U8 => "U8",
            FileDType::I8 => "I8",
            FileDType::F8E5M2 => "F8_E5M2",
            FileDType::F8E4M3 => "F8_E4M3",
            FileDType::F8E8M0 => "F8_E8M0",
            FileDType::I16 => "I16",
            FileDType::U16 => "U16",
            FileDType::F16 => "F16",
            FileDType::BF16 => "BF16",
            FileDType::I32 => "I32",
            FileDType::U32 => "U32",
            FileDType::F32 => "F32",
            FileDType::C64 => "C64",
            FileDType::F64 => "F64",
            FileDType::I64 => "I64",
            FileDType::U64 => "U64",
        }
    }

    /// Bits per element (4 and 6 for the sub-byte floats).
    pub const fn bits(self) -> usize {
        match self {
            FileDType::F4 => 4,
            FileDType::F6E2M3 | FileDType::F6E3M2 => 6,
            FileDType::Bool
            | FileDType::U8
            | FileDType::I8
            | FileDType::F8E5M2
            | FileDType::F8E4M3
            | FileDType::F8E8M0 => 8,
            FileDType::I16 | FileDType::U16 | FileDType::F16 | FileDType::BF16 => 16,
            FileDType::I32 | FileDType::U32 | FileDType::F32 => 32,
            FileDType::C64 | FileDType::F64 | FileDType::I64 | FileDType::U64 => 64,
        }
    }

    /// The engine dtype, for the three the engine computes with; `None` otherwise.
    pub const fn to_dtype(self) -> Option<DType> {
        match self {
            FileDType::F32 => Some(DType::F32),
            FileDType::F16 => Some(DType::F16),
            FileDType::BF16 => Some(DType::BF16),
            _ => None,
        }
    }

    /// The dtype named `name` (exact, case-sensitive), or `None`.
    pub fn from_name(name: &str) -> Option<FileDType> {
        FileDType::ALL.iter().copied().find(|d| d.name() == name)
    }
}

/// One tensor of the file: dtype, shape and its bytes, borrowed from the file.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    /// Element type as stored.
    pub dtype: FileDType,
    /// Dimensions, outermost first; only the first `rank` entries are used (the rest are 0).
    pub shape: [usize; MAX_RANK],
    /// Number of dimensions (0 for a scalar).
    pub rank: usize,
    /// The tensor's bytes (row-major, little-endian), exactly the size its shape and
    /// dtype need; a sub-slice of the buffer given to [`SafeTensors::parse`].
    pub data: &'a [u8],
}

impl<'a> TensorView<'a> {
    /// The tensor's bytes (same as the `data` field).
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The used dimensions, `shape[..rank]`.
    pub fn dims(&self) -> &[usize] {
        self.shape.get(..self.rank).unwrap_or(&[])
    }

    /// Number of elements (the product of the dimensions; 1 for a scalar).
    /// Checked at parse time not to overflow.
    pub fn numel(&self) -> usize {
        self.dims()
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .unwrap_or(0)
    }

    /// The data as typed elements. `WeightDtype` unless the dtype is F32, F16 or
    /// BF16; `Misaligned` when the bytes are not aligned in memory to the element size.
    pub fn elems(&self) -> Result<Elems<'a>> {
        let dt = self.dtype.to_dtype().ok_or_else(|| {
            error(
                Status::WeightDtype,
                "tensor dtype ",
                &[
                    S(self.dtype.name()),
                    S(" is not supported (F32, F16 or BF16)"),
                ],
            )
        })?;
        Elems::from_bytes(self.data, dt).ok_or_else(|| {
            let what = [
                S(self.dtype.name()),
                S(" data is not aligned to "),
                N(dt.size() as u64),
                S(" bytes in memory"),
            ];
            error(Status::Misaligned, "tensor ", &what)
        })
    }
}

/// A validated safetensors file, borrowed: header and data stay in the caller's buffer.
#[derive(Clone, Copy, Debug)]
pub struct SafeTensors<'a> {
    /// The JSON header (validated UTF-8 and grammar).
    header: &'a str,
    /// The data section (everything after the header).
    data: &'a [u8],
    /// Number of tensor entries.
    count: usize,
    /// Byte offset in the header of the `__metadata__` object's `{`, if present.
    meta: Option<usize>,
}

impl<'a> SafeTensors<'a> {
    /// Parses and validates a whole file held in `bytes` (see the module docs for
    /// every check). Any malformed input is `Status::InvalidArgument` with a message
    /// saying what and where.
    pub fn parse(bytes: &'a [u8]) -> Result<SafeTensors<'a>> {
        let (len8, rest) = match bytes.split_first_chunk::<8>() {
            Some(v) => v,
            None => {
                return Err(bad(&[
                    S("file is "),
                    N(bytes.len() as u64),
                    S(" bytes, shorter than the 8-byte header length"),
                ]))
            }
        };
        let n = u64::from_le_bytes(*len8);
        if n > MAX_HEADER_BYTES {
            return Err(bad(&[
                S("header length "),
                N(n),
                S(" is above the 100 MiB limit"),
            ]));
        }
        if n > rest.len() as u64 {
            return Err(bad(&[
                S("header length "),
                N(n),
                S(" runs past the end of the file ("),
                N(rest.len() as u64),
                S(" bytes after the length)"),
            ]));
        }
        let (header, data) = rest
            .split_at_checked(n as usize)
            .ok_or_else(|| bad(&[S("header length runs past the end of the file")]))?;
        let header = core::str::from_utf8(header).map_err(|_| bad(&[S("header is not UTF-8")]))?;

        let mut entries = Entries::new(header, data.len())?;
        let mut names = UniqueKeys::new(&entries.sc, entries.object_at);
        let mut count = 0usize;
        let mut meta = None;
        let mut total = 0usize;
        let mut holding = 0usize;
        // Fast tiling check: the tensors that hold data, in header order, each
        // starting where the previous one ended.
        let mut cursor = 0usize;
        let mut in_order = true;
        while let Some((name, value)) = entries.next_entry()? {
            names
                .push(&entries.sc, name)
                .map_err(|e| names_err(header, e, &names))?;
            match value {
                Value::Meta(at) => {
                    if meta.is_some() {
                        return Err(bad(&[S("__metadata__ appears twice")]));
                    }
                    meta = Some(at);
                }
                Value::Tensor(info) => {
                    count += 1;
                    total = total
                        .checked_add(info.len())
                        .ok_or_else(|| bad(&[S("tensor sizes overflow")]))?;
                    if info.len() > 0 {
                        holding += 1;
                        if in_order && info.begin == cursor {
                            cursor = info.end;
                        } else {
                            in_order = false;
                        }
                    }
                }
            }
        }
        names.finish().map_err(|e| names_err(header, e, &names))?;
        if total != data.len() {
            return Err(bad(&[
                S("tensors cover "),
                N(total as u64),
                S(" bytes of a data section of "),
                N(data.len() as u64),
                S(" (holes, overlap or trailing bytes)"),
            ]));
        }
        let st = SafeTensors {
            header,
            data,
            count,
            meta,
        };
        if !(in_order && cursor == data.len()) {
            st.check_unordered(holding)?;
        }
        Ok(st)
    }

    /// The tiling check for offsets not in header order: the `(begin, end)` pairs
    /// of the tensors holding data, sorted in a stack buffer, must follow each other
    /// from 0 to the end of the data section. (The sizes already add up to the
    /// data section, so what this can find is an overlap.)
    #[inline(never)]
    fn check_unordered(&self, holding: usize) -> Result<()> {
        if holding > MAX_UNORDERED_TENSORS {
            return Err(bad(&[
                S("tensor offsets are not in header order (allowed for at most "),
                N(MAX_UNORDERED_TENSORS as u64),
                S(" tensors holding data; found "),
                N(holding as u64),
                S(")"),
            ]));
        }
        let mut spans = [(0usize, 0usize); MAX_UNORDERED_TENSORS];
        let mut n = 0usize;
        let mut all = self.entries()?;
        while let Some((_, info)) = all.next_tensor()? {
            if info.len() > 0 {
                if let Some(slot) = spans.get_mut(n) {
                    *slot = (info.begin, info.end);
                    n += 1;
                }
            }
        }
        let spans = spans.get_mut(..n).unwrap_or(&mut []);
        heapsort(spans);
        // An overlap is the error to report (it is the cause); a hole can only come
        // with one, since the sizes add up.
        let mut prev = (0usize, 0usize);
        let mut hole = None;
        for &(begin, end) in spans.iter() {
            if begin < prev.1 {
                return Err(self.overlap_err(prev, (begin, end)));
            }
            if begin > prev.1 && hole.is_none() {
                hole = Some((prev.1, begin));
            }
            prev = (begin, end);
        }
        if prev.1 != self.data.len() && hole.is_none() {
            hole = Some((prev.1, self.data.len()));
        }
        match hole {
            Some((a, b)) => Err(bad(&[
                S("data section bytes "),
                N(a as u64),
                S(".."),
                N(b as u64),
                S(" belong to no tensor"),
            ])),
            None => Ok(()),
        }
    }

    /// The error for two overlapping tensors (their spans), naming both in
    /// header order.
    #[cold]
    #[inline(never)]
    fn overlap_err(&self, a: (usize, usize), b: (usize, usize)) -> Error {
        let mut first: Option<(JsonStr<'a>, (usize, usize))> = None;
        let mut found_a = false;
        let mut found_b = false;
        let mut second = None;
        if let Ok(mut all) = self.entries() {
            while let Ok(Some((name, info))) = all.next_tensor() {
                let span = (info.begin, info.end);
                let is_a = !found_a && span == a;
                let is_b = !is_a && !found_b && span == b;
                if !(is_a || is_b) {
                    continue;
                }
                found_a |= is_a;
                found_b |= is_b;
                if first.is_none() {
                    first = Some((name, span));
                } else {
                    second = Some((name, span));
                    break;
                }
            }
        }
        let (Some((n1, s1)), Some((n2, s2))) = (first, second) else {
            return bad(&[S("two tensors' data overlap")]);
        };
        bad(&[
            S("tensor "),
            S(n1.raw()),
            S(": data ["),
            N(s1.0 as u64),
            S(", "),
            N(s1.1 as u64),
            S(") overlaps tensor "),
            S(n2.raw()),
            S("'s ["),
            N(s2.0 as u64),
            S(", "),
            N(s2.1 as u64),
            S(")"),
        ])
    }

    /// A fresh walk over the validated header.
    fn entries(&self) -> Result<Entries<'a>> {
        Entries::new(self.header, self.data.len())
    }

    /// Number of tensors in the file.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when the file holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The data section (all tensor bytes, after the header).
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The JSON header (valid UTF-8 and JSON: [`SafeTensors::parse`] checked it).
    pub fn header(&self) -> &'a str {
        self.header
    }

    /// The tensor called `name` (compared after JSON unescaping), `Ok(None)` if
    /// absent. Names are unique ([`SafeTensors::parse`] rejects a file that repeats
    /// one), so the first match is the only one.
    pub fn tensor(&self, name: &str) -> Result<Option<TensorView<'a>>> {
        let mut all = self.entries()?;
        while let Some((n, info)) = all.next_tensor()? {
            if n.eq_str(name) {
                return self.view(&info).map(Some);
            }
        }
        Ok(None)
    }

    /// Every tensor with its name, in header order. (The header was validated by
    /// [`SafeTensors::parse`]: walking it again cannot fail.)
    pub fn iter(&self) -> Tensors<'a> {
        Tensors {
            entries: self.entries().ok(),
            data: self.data,
        }
    }

    /// The view of a validated entry.
    fn view(&self, info: &Info) -> Result<TensorView<'a>> {
        info.view(self.data).ok_or_else(|| {
            error(
                Status::Internal,
                "safetensors: offsets outside the data section",
                &[],
            )
        })
    }

    /// The string value of `key` in `__metadata__`, as written in the file. `None`
    /// when there is no metadata, no such key, or the value holds JSON escapes
    /// (only plain values are returned, zero-copy).
    pub fn metadata(&self, key: &str) -> Option<&'a str> {
        self.meta_value(key).ok().flatten()
    }

    /// Like [`SafeTensors::metadata`], but a value with escapes is an error.
    pub(crate) fn meta_value(&self, key: &str) -> Result<Option<&'a str>> {
        let Some(at) = self.meta else {
            return Ok(None);
        };
        let mut sc = Scanner::starting_at(self.header, at);
        let obj = sc.object().map_err(header_json)?;
        while let Some(k) = sc.next_key(&obj).map_err(header_json)? {
            let v = sc.string().map_err(header_json)?;
            if k.eq_str(key) {
                return match v.as_str() {
                    Some(s) => Ok(Some(s)),
                    None => Err(error(
                        Status::InvalidArgument,
                        "metadata ",
                        &[S(key), S(": value holds escapes (not supported)")],
                    )),
                };
            }
        }
        Ok(None)
    }
}

/// The tensors of a [`SafeTensors`] with their names, in header order.
#[derive(Clone, Debug)]
pub struct Tensors<'a> {
    entries: Option<Entries<'a>>,
    data: &'a [u8],
}

impl<'a> Iterator for Tensors<'a> {
    type Item = (JsonStr<'a>, TensorView<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let entries = self.entries.as_mut()?;
        let item = match entries.next_tensor() {
            Ok(Some((name, info))) => info.view(self.data).map(|v| (name, v)),
            _ => None,
        };
        if item.is_none() {
            self.entries = None;
        }
        item
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::super::st_file::{file, Writer};
    use super::*;
    use std::string::{String, ToString};
    use std::vec::Vec;
    use std::{format, vec};

    fn status_of<T: core::fmt::Debug>(r: Result<T>) -> (Status, String) {
        let e = r.unwrap_err();
        (e.status(), e.message().to_string())
    }

    /// The message of a file that must fail to parse (with InvalidArgument).
    fn rejected(bytes: &[u8]) -> String {
        let (s, m) = status_of(SafeTensors::parse(bytes));
        assert_eq!(s, Status::InvalidArgument, "{m}");
        m
    }

    /// `"name":{"dtype":"U8","shape":[len],"data_offsets":[begin,begin+len]}`
    fn u8_entry(name: &str, begin: usize, len: usize) -> String {
        format!(
            "\"{name}\":{{\"dtype\":\"U8\",\"shape\":[{len}],\"data_offsets\":[{begin},{}]}}",
            begin + len
        )
    }

    #[test]
    fn header_length_errors() {
        // Truncated: fewer than 8 bytes.
        assert!(rejected(&[1, 0, 0]).contains("shorter than the 8-byte"));
        // Header length past the end.
        let mut v = 100u64.to_le_bytes().to_vec();
        v.extend_from_slice(b"{}");
        assert!(rejected(&v).contains("header length 100 runs past the end"));
        // Absurd lengths, including ones that overflow when 8 is added.
        for n in [u64::MAX, u64::MAX - 7, MAX_HEADER_BYTES + 1] {
            let mut v = n.to_le_bytes().to_vec();
            v.extend_from_slice(b"{}");
            rejected(&v);
        }
        // Empty header and the smallest valid file.
        rejected(&0u64.to_le_bytes());
        let ok = file("{}", &[]);
        let st = SafeTensors::parse(&ok).unwrap();
        assert!(st.is_empty() && st.iter().next().is_none());
        assert_eq!(st.metadata("x"), None);
        // Not UTF-8.
        let mut v = file("{\"\u{e9}\"", &[]).to_vec();
        v[10] = 0xff;
        assert!(rejected(&v).contains("not UTF-8"));
    }

    #[test]
    fn bad_json_is_rejected() {
        let ent = r#""t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}"#;
        let cases = [
            "",
            " ",
            "[]",
            "{",
            "}",
            "{\"t\"}",
            "{\"t\":}",
            "{,}",
            "{\"a\":1,}",
            "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},}",
            "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}} x",
            "{\"t\":{\"dtype\":\"F32\",\"shape\":[01],\"data_offsets\":[0,4]}}",
            "{\"t\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}",
            "{\"t\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}",
            "{\"t\":{\"dtype\":\"F32\",\"shape\":[1e0],\"data_offsets\":[0,4]}}",
            "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}",
            "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}",
            "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[]}}",
            "{\"t\":{\"dtype\":\"F32\",\"shape\":[1]}}",
            "{\"t\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}",
            "{\"t\":{\"shape\":[1],\"data_offsets\":[0,4]}}",
            "{\"t\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
            "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":tru}}",
            "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1.}}",
            "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":\"\\q\"}}",
            "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":\"\\ud800\"}}",
            "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":\"\t\"}}",
            "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":\"abc}}",
            "{\"t\":[1]}",
            "{\"t\":{\"dtype\":1,\"shape\":[1],\"data_offsets\":[0,4]}}",
            "{\"t\":{\"dtype\":\"F32\",\"shape\":{},\"data_offsets\":[0,4]}}",
            "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":\"0,4\"}}",
            "{\"__metadata__\":{\"a\":1}}",
            "{\"__metadata__\":[]}",
            "{\"__metadata__\":{},\"__metadata__\":{}}",
            "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,18446744073709551616]}}",
            "{\"t\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}",
        ];
        for h in cases {
            let (s, m) = status_of(SafeTensors::parse(&file(h, &[0u8; 4])));
            assert_eq!(s, Status::InvalidArgument, "accepted: {h}");
            assert!(m.starts_with("safetensors: "), "{m}");
        }
        // Deep nesting in an unknown field: bounded, an error, no stack overflow.
        let deep = format!(
            "{{\"t\":{{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":{}{}}}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let m = rejected(&file(&deep, &[0u8; 4]));
        assert!(
            m.contains("header JSON: nesting too deep at byte 87"),
            "{m}"
        );
        // The same shapes, well-formed, pass (so the cases above fail for their reason).
        let fine = format!(
            "{{ {ent} , \"__metadata__\" : {{ \"k\" : \"v\\n\" }}, \"u\":{{\"x\":[true,false,null,-1.5e+3,{{\"y\":\"\\u00e9\\ud83d\\ude00\"}}],\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,4]}} }}\n\r\t "
        );
        let buf = file(&fine, &[0u8; 4]);
        let st = SafeTensors::parse(&buf).unwrap();
        assert_eq!(st.len(), 2);
        // The value has an escape: metadata() gives None rather than the raw text.
        assert_eq!(st.metadata("k"), None);
        let u = st.tensor("u").unwrap().unwrap();
        assert_eq!(
            (u.dtype, u.rank, u.numel(), u.data.len()),
            (FileDType::U8, 1, 0, 0)
        );
    }

    #[test]
    fn offsets_out_of_range_and_size() {
        let one = |offs: &str, shape: &str, dtype: &str, data: usize| {
            let h = format!(
                "{{\"t\":{{\"dtype\":\"{dtype}\",\"shape\":{shape},\"data_offsets\":{offs}}}}}"
            );
            let buf = file(&h, &vec![0u8; data]);
            let r = SafeTensors::parse(&buf).map(|_| ());
            r.map_err(|e| (e.status(), e.message().to_string()))
        };
        assert!(one("[0,8]", "[2]", "F32", 8).is_ok());
        let (s, m) = one("[0,12]", "[3]", "F32", 8).unwrap_err();
        assert_eq!(s, Status::InvalidArgument);
        assert_eq!(
            m,
            "safetensors: tensor t: data_offsets end 12 is past the data section (8 bytes)"
        );
        let (_, m) = one("[8,4]", "[1]", "F32", 8).unwrap_err();
        assert!(m.contains("begin is after end"), "{m}");
        let (_, m) = one("[0,8]", "[3]", "F32", 8).unwrap_err();
        assert!(m.contains("span 8 bytes, shape and dtype need 12"), "{m}");
        // Trailing bytes in the data section (a hole at the end).
        let (_, m) = one("[0,4]", "[1]", "F32", 8).unwrap_err();
        assert!(m.contains("cover 4 bytes of a data section of 8"), "{m}");
        // Element count overflow.
        let (_, m) = one("[0,8]", "[4294967296,4294967296,16]", "F32", 8).unwrap_err();
        assert!(m.contains("overflows"), "{m}");
        // Sub-byte dtypes: 3 F4 values are 1.5 bytes.
        let (_, m) = one("[0,1]", "[3]", "F4", 1).unwrap_err();
        assert!(m.contains("whole bytes"), "{m}");
        assert!(one("[0,1]", "[2]", "F4", 1).is_ok());
        assert!(one("[0,4]", "[]", "I32", 4).is_ok());
        let (_, m) = one("[0,4]", "[1]", "F33", 4).unwrap_err();
        assert!(m.contains("unknown dtype F33"), "{m}");
    }

    /// Parses a header of U8 entries `(name, begin, len)` over `data` bytes.
    fn tiling(
        entries: &[(&str, usize, usize)],
        data: usize,
    ) -> core::result::Result<usize, String> {
        let items: Vec<String> = entries.iter().map(|&(n, b, l)| u8_entry(n, b, l)).collect();
        let buf = file(&format!("{{{}}}", items.join(",")), &vec![0u8; data]);
        SafeTensors::parse(&buf)
            .map(|st| st.len())
            .map_err(|e| e.message().to_string())
    }

    #[test]
    fn tiling_in_and_out_of_header_order() {
        // Exact tilings in any order, with empty tensors anywhere (even inside others).
        assert_eq!(tiling(&[("a", 0, 8), ("b", 8, 8)], 16), Ok(2));
        assert_eq!(tiling(&[("b", 8, 8), ("a", 0, 8)], 16), Ok(2));
        assert_eq!(tiling(&[("c", 12, 4), ("a", 0, 4), ("b", 4, 8)], 16), Ok(3));
        assert_eq!(
            tiling(
                &[
                    ("e", 16, 0),
                    ("a", 0, 8),
                    ("f", 3, 0),
                    ("b", 8, 8),
                    ("g", 0, 0)
                ],
                16
            ),
            Ok(5)
        );
        assert_eq!(tiling(&[("e", 0, 0)], 0), Ok(1));
        // Sizes that do not add up: holes, overlap or trailing bytes.
        let m = tiling(&[("a", 0, 8), ("b", 4, 8)], 12).unwrap_err();
        assert!(m.contains("cover 16 bytes of a data section of 12"), "{m}");
        let m = tiling(&[("b", 8, 4), ("a", 0, 4)], 16).unwrap_err();
        assert!(m.contains("cover 8 bytes of a data section of 16"), "{m}");
        // Sizes that add up, but an overlap (and so a hole): both tensors named, in
        // header order, with their spans.
        let m = tiling(&[("a", 4, 8), ("b", 0, 8)], 16).unwrap_err();
        assert_eq!(
            m,
            "safetensors: tensor a: data [4, 12) overlaps tensor b's [0, 8)"
        );
        let m = tiling(&[("a", 4, 8), ("z", 12, 4), ("b", 8, 4)], 16).unwrap_err();
        assert_eq!(
            m,
            "safetensors: tensor a: data [4, 12) overlaps tensor b's [8, 12)"
        );
        // The same span twice, listed apart.
        let m = tiling(&[("x", 0, 8), ("m", 8, 8), ("y", 0, 8), ("n", 16, 8)], 32).unwrap_err();
        assert!(m.contains("cover 32 bytes of a data section of 32") || m.contains("overlaps"));
        assert_eq!(
            m,
            "safetensors: tensor x: data [0, 8) overlaps tensor y's [0, 8)"
        );
        // Contained in another one.
        let m = tiling(&[("in", 2, 2), ("out", 0, 8), ("rest", 8, 2)], 12).unwrap_err();
        assert_eq!(
            m,
            "safetensors: tensor in: data [2, 4) overlaps tensor out's [0, 8)"
        );
    }

    #[test]
    #[cfg_attr(miri, ignore)] // a 2049-entry header: minutes under Miri
    fn many_unordered_tensors_are_capped() {
        // MAX_UNORDERED_TENSORS tensors holding data in reverse order, plus as many
        // empty ones: accepted (empty tensors need no sorting).
        let n = MAX_UNORDERED_TENSORS;
        let mut w = Writer::new().reversed();
        for i in 0..n {
            w = w.tensor(&format!("t{i:04}"), "U8", &[2], vec![1, 2]);
            w = w.tensor(&format!("e{i:04}"), "U8", &[0], vec![]);
        }
        let buf = w.build();
        let st = SafeTensors::parse(&buf).unwrap();
        assert_eq!(st.len(), 2 * n);
        assert_eq!(st.tensor("t0513").unwrap().unwrap().data.len(), 2);
        // One more holding data: refused, saying why.
        let w = w.tensor("last", "U8", &[1], vec![3]);
        let m = rejected(&w.build());
        assert_eq!(
            m,
            "safetensors: tensor offsets are not in header order (allowed for at most 1024 tensors holding data; found 1025)"
        );
        // The header size is no limit any more: two unordered tensors behind a
        // 1 MiB header.
        let mut h = format!("{{{},{}}}", u8_entry("b", 4, 4), u8_entry("a", 0, 4));
        h.push_str(&" ".repeat(1 << 20));
        assert_eq!(SafeTensors::parse(&file(&h, &[0u8; 8])).unwrap().len(), 2);
    }

    #[test]
    fn duplicate_keys_are_rejected_anywhere() {
        let dup = |h: &str, data: usize| rejected(&file(h, &vec![0u8; data]));
        // Tensor names: adjacent, apart (two ascending runs), apart in descending
        // order, equal only after unescaping; none of them a layer tensor.
        let a = u8_entry("a", 0, 1);
        let b = u8_entry("b", 1, 1);
        let a2 = u8_entry("a", 2, 1);
        let want = "safetensors: tensor name a appears twice in the header";
        assert_eq!(dup(&format!("{{{a},{a2}}}"), 3), want.replace(" 3", ""));
        assert_eq!(dup(&format!("{{{a},{b},{a2}}}"), 3), want);
        let c = u8_entry("c", 0, 1);
        let b1 = u8_entry("b", 1, 1);
        let c2 = u8_entry("c", 2, 1);
        assert_eq!(
            dup(&format!("{{{c},{b1},{c2}}}"), 3),
            "safetensors: tensor name c appears twice in the header"
        );
        let esc = u8_entry("\\u0061", 2, 1);
        assert_eq!(
            dup(&format!("{{{a},{b},{esc}}}"), 3),
            "safetensors: tensor name \\u0061 appears twice in the header"
        );
        // Many names in no order (blocked check), the duplicate far apart.
        let mut w = Writer::new().reversed();
        for i in 0..300 {
            w = w.tensor(&format!("w.{i}"), "U8", &[1], vec![0]);
        }
        assert!(SafeTensors::parse(&w.build()).is_ok());
        let w = w.tensor("w.7", "U8", &[1], vec![0]);
        assert_eq!(
            rejected(&w.build()),
            "safetensors: tensor name w.7 appears twice in the header"
        );
        // __metadata__ twice, apart.
        assert_eq!(
            dup(
                &format!("{{\"__metadata__\":{{}},{a},\"__metadata__\":{{}}}}"),
                1
            ),
            "safetensors: __metadata__ appears twice"
        );
        // A metadata key twice (apart, and escaped).
        assert_eq!(
            dup(
                "{\"__metadata__\":{\"k\":\"1\",\"j\":\"2\",\"\\u006b\":\"3\"}}",
                0
            ),
            "safetensors: __metadata__ key \\u006b appears twice"
        );
        // Fields of an entry: known ones, and unknown ones (apart).
        assert_eq!(
            dup(
                "{\"t\":{\"shape\":[1],\"dtype\":\"U8\",\"data_offsets\":[0,1],\"shape\":[1]}}",
                1
            ),
            "safetensors: tensor t: shape given twice"
        );
        assert_eq!(
            dup("{\"t\":{\"x\":1,\"dtype\":\"U8\",\"shape\":[1],\"y\":[],\"data_offsets\":[0,1],\"x\":{}}}", 1),
            "safetensors: tensor t: field x appears twice"
        );
        // Keys inside other values may repeat (they are not the file's keys).
        let ok = "{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":{\"k\":1,\"k\":2}}}";
        assert!(SafeTensors::parse(&file(ok, &[0])).is_ok());
    }

    #[test]
    fn library_order_with_several_dtypes_is_one_merge() {
        // The safetensors library sorts by dtype, then name: ascending runs per dtype.
        let w = Writer::new()
            .f32("a.f", &[1], &[1.0])
            .f32("c.f", &[1], &[2.0])
            .tensor("a.h", "F16", &[1], vec![0, 60])
            .tensor("b.h", "F16", &[1], vec![0, 60])
            .tensor("a.u", "U8", &[2], vec![1, 2]);
        let buf = w.build();
        let st = SafeTensors::parse(&buf).unwrap();
        let names: Vec<String> = st.iter().map(|(n, _)| n.raw().to_string()).collect();
        assert_eq!(names, ["a.f", "c.f", "a.h", "b.h", "a.u"]);
        let w = w.tensor("c.f", "U8", &[1], vec![0]);
        assert_eq!(
            rejected(&w.build()),
            "safetensors: tensor name c.f appears twice in the header"
        );
    }

    #[test]
    fn escaped_names_and_lookups() {
        let h = "{\"a\\u002eb\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"\\u00e9\\ud83d\\ude00\\\"\\\\\\/\\n\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},\"plain\":{\"dtype\":\"F\\u0033\\u0032\",\"shape\":[1],\"data_offsets\":[8,12]}}";
        let buf = file(h, &[0u8; 12]);
        let st = SafeTensors::parse(&buf).unwrap();
        assert!(st.tensor("a.b").unwrap().is_some());
        assert!(st.tensor("a\\u002eb").unwrap().is_none());
        assert!(st.tensor("a.").unwrap().is_none());
        assert!(st.tensor("a.bc").unwrap().is_none());
        let v = st.tensor("\u{e9}\u{1f600}\"\\/\n").unwrap().unwrap();
        assert_eq!(v.data.as_ptr(), st.data()[4..].as_ptr());
        assert_eq!(st.tensor("plain").unwrap().unwrap().dtype, FileDType::F32);
        let all: Vec<(String, usize)> = st
            .iter()
            .map(|(n, v)| {
                (
                    n.chars().collect(),
                    v.data.as_ptr() as usize - st.data().as_ptr() as usize,
                )
            })
            .collect();
        assert_eq!(
            all,
            [
                ("a.b".to_string(), 0),
                ("\u{e9}\u{1f600}\"\\/\n".to_string(), 4),
                ("plain".to_string(), 8)
            ]
        );
        assert!(st.header().starts_with("{\"a\\u002eb\""));
    }

    #[test]
    fn metadata_values() {
        let w = Writer::new()
            .meta("variant", "deepseek")
            .meta("e", "a\tb")
            .meta("\u{e9}", "x")
            .ascii_escapes()
            .filled("t", &[2]);
        let buf = w.build();
        let st = SafeTensors::parse(&buf).unwrap();
        assert_eq!(st.metadata("variant"), Some("deepseek"));
        assert_eq!(st.metadata("\u{e9}"), Some("x"));
        assert_eq!(st.metadata("e"), None);
        let (s, m) = status_of(st.meta_value("e"));
        assert_eq!(s, Status::InvalidArgument);
        assert_eq!(m, "metadata e: value holds escapes (not supported)");
        assert_eq!(st.metadata("nope"), None);
        assert_eq!(st.len(), 1);
    }
}
