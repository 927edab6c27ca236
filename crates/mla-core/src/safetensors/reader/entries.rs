//! Header entries: walking the header's JSON object entry by entry, each tensor's
//! dtype, shape and offsets, and the errors that name the entry.

// `Error` is returned by value on purpose (no allocation); its size is by design.
#![allow(clippy::result_large_err)]

use super::*;

/// The error of a malformed file: `InvalidArgument`, "safetensors: " + `pieces`.
pub(super) fn bad(pieces: &[super::super::Piece]) -> Error {
    error(Status::InvalidArgument, "safetensors: ", pieces)
}

pub(super) fn json_err(what: &str, at: usize) -> Error {
    bad(&[S("header JSON: "), S(what), S(" at byte "), N(at as u64)])
}

/// A grammar error in the header.
pub(super) fn header_json(e: JsonError) -> Error {
    json_err(e.kind.as_str(), e.at)
}

pub(super) fn tensor_err(name: JsonStr, what: &str) -> Error {
    tensor_err_more(name, what, &[])
}

/// [`tensor_err`] followed by more pieces.
#[inline(never)]
pub(super) fn tensor_err_more(name: JsonStr, what: &str, more: &[super::super::Piece]) -> Error {
    let mut e = bad(&[S("tensor "), S(name.raw()), S(": "), S(what)]);
    push(&mut e, more);
    e
}

/// The error of a name check over the header's keys.
#[cold]
#[inline(never)]
pub(super) fn names_err(header: &str, e: JsonError, names: &UniqueKeys) -> Error {
    match (e.kind, super::super::json::key_at(header, e.at)) {
        (ErrorKind::DuplicateKey, Some(k)) if k.eq_str("__metadata__") => {
            bad(&[S("__metadata__ appears twice")])
        }
        (ErrorKind::DuplicateKey, Some(k)) => bad(&[
            S("tensor name "),
            S(k.raw()),
            S(" appears twice in the header"),
        ]),
        (ErrorKind::TooManyUnsortedKeys, _) => bad(&[
            N(names.len() as u64),
            S(" tensor names in no sorted order ("),
            N(names.runs() as u64),
            S(" ascending runs, more than "),
            N(MAX_KEY_RUNS as u64),
            S("): too many to check for duplicates (at most "),
            N(MAX_UNSORTED_KEYS as u64),
            S(" names and a 16 MiB header)"),
        ]),
        _ => header_json(e),
    }
}

/// A validated tensor entry.
#[derive(Clone, Copy, Debug)]
pub(super) struct Info {
    pub(super) dtype: FileDType,
    pub(super) shape: [usize; MAX_RANK],
    pub(super) rank: usize,
    /// Byte range in the data section, `begin <= end <= data length`.
    pub(super) begin: usize,
    pub(super) end: usize,
}

impl Info {
    pub(super) fn len(&self) -> usize {
        self.end.saturating_sub(self.begin)
    }

    pub(super) fn view<'a>(&self, data: &'a [u8]) -> Option<TensorView<'a>> {
        Some(TensorView {
            dtype: self.dtype,
            shape: self.shape,
            rank: self.rank,
            data: data.get(self.begin..self.end)?,
        })
    }
}

pub(super) enum Value {
    /// The `__metadata__` object (byte offset of its `{` in the header).
    Meta(usize),
    Tensor(Info),
}

/// Walks the header object, validating each entry as it goes.
#[derive(Clone, Debug)]
pub(super) struct Entries<'a> {
    pub(super) sc: Scanner<'a>,
    pub(super) obj: Object,
    /// Byte offset of the header object's `{`.
    pub(super) object_at: usize,
    pub(super) data_len: usize,
    pub(super) done: bool,
}

impl<'a> Entries<'a> {
    pub(super) fn new(header: &'a str, data_len: usize) -> Result<Entries<'a>> {
        let mut sc = Scanner::new(header).with_max_depth(MAX_DEPTH);
        let obj = sc.object().map_err(|e| match e.kind {
            ErrorKind::ExpectedObject | ErrorKind::UnexpectedChar | ErrorKind::UnexpectedEnd => {
                json_err("the header must be a JSON object", e.at)
            }
            _ => header_json(e),
        })?;
        Ok(Entries {
            object_at: sc.position().saturating_sub(1),
            sc,
            obj,
            data_len,
            done: false,
        })
    }

    /// The next tensor entry, skipping `__metadata__`.
    pub(super) fn next_tensor(&mut self) -> Result<Option<(JsonStr<'a>, Info)>> {
        loop {
            match self.next_entry()? {
                None => return Ok(None),
                Some((name, Value::Tensor(info))) => return Ok(Some((name, info))),
                Some(_) => continue,
            }
        }
    }

    pub(super) fn next_entry(&mut self) -> Result<Option<(JsonStr<'a>, Value)>> {
        if self.done {
            return Ok(None);
        }
        let Some(name) = self.sc.next_key(&self.obj).map_err(header_json)? else {
            self.sc.finish().map_err(header_json)?;
            self.done = true;
            return Ok(None);
        };
        let value = if name.eq_str("__metadata__") {
            Value::Meta(self.metadata_object()?)
        } else {
            Value::Tensor(self.tensor_info(name)?)
        };
        Ok(Some((name, value)))
    }

    /// `{"key": "value", ...}` with string values only and distinct keys; returns
    /// the offset of its `{`.
    #[inline(never)]
    pub(super) fn metadata_object(&mut self) -> Result<usize> {
        let sc = &mut self.sc;
        if sc.peek().map_err(header_json)? != Kind::Object {
            return Err(json_err("__metadata__ must be an object", sc.position()));
        }
        let obj = sc.object().map_err(header_json)?;
        let at = sc.position().saturating_sub(1);
        let mut keys = UniqueKeys::new(sc, at);
        let text = sc.text();
        let dup = |e: JsonError| match (e.kind, super::super::json::key_at(text, e.at)) {
            (ErrorKind::DuplicateKey, Some(k)) => {
                bad(&[S("__metadata__ key "), S(k.raw()), S(" appears twice")])
            }
            _ => header_json(e),
        };
        while let Some(k) = sc.next_key(&obj).map_err(header_json)? {
            keys.push(sc, k).map_err(dup)?;
            if sc.peek().map_err(header_json)? != Kind::String {
                return Err(json_err(
                    "__metadata__ values must be strings",
                    sc.position(),
                ));
            }
            sc.string().map_err(header_json)?;
        }
        keys.finish().map_err(dup)?;
        Ok(at)
    }

    /// `{"dtype": ..., "shape": [...], "data_offsets": [b, e]}` (other fields are
    /// skipped, but must not repeat), validated against the data section.
    #[inline(never)]
    pub(super) fn tensor_info(&mut self, name: JsonStr<'a>) -> Result<Info> {
        let data_len = self.data_len;
        let sc = &mut self.sc;
        let text = sc.text();
        if sc.peek().map_err(header_json)? != Kind::Object {
            return Err(tensor_err(name, "entry must be an object"));
        }
        let obj = sc.object().map_err(header_json)?;
        let entry_at = sc.position().saturating_sub(1);
        let mut dtype: Option<FileDType> = None;
        let mut shape: Option<([usize; MAX_RANK], usize)> = None;
        let mut offsets: Option<(u64, u64)> = None;
        let mut other: Option<UniqueKeys<'a>> = None;
        while let Some(key) = sc.next_key(&obj).map_err(header_json)? {
            if key.eq_str("dtype") {
                if dtype.is_some() {
                    return Err(tensor_err(name, "dtype given twice"));
                }
                if sc.peek().map_err(header_json)? != Kind::String {
                    return Err(tensor_err(name, "dtype must be a string"));
                }
                let s = sc.string().map_err(header_json)?;
                let d = FileDType::ALL
                    .iter()
                    .copied()
                    .find(|d| s.eq_str(d.name()))
                    .ok_or_else(|| tensor_err_more(name, "unknown dtype ", &[S(s.raw())]))?;
                dtype = Some(d);
            } else if key.eq_str("shape") {
                if shape.is_some() {
                    return Err(tensor_err(name, "shape given twice"));
                }
                shape = Some(Self::shape(sc, name)?);
            } else if key.eq_str("data_offsets") {
                if offsets.is_some() {
                    return Err(tensor_err(name, "data_offsets given twice"));
                }
                offsets = Some(Self::offsets(sc, name)?);
            } else {
                let keys = other.get_or_insert_with(|| UniqueKeys::new(sc, entry_at));
                keys.push(sc, key).map_err(|e| field_err(text, name, e))?;
                sc.skip().map_err(header_json)?;
            }
        }
        if let Some(keys) = &other {
            keys.finish().map_err(|e| field_err(text, name, e))?;
        }
        let dtype = dtype.ok_or_else(|| tensor_err(name, "dtype missing"))?;
        let (shape, rank) = shape.ok_or_else(|| tensor_err(name, "shape missing"))?;
        let (begin, end) = offsets.ok_or_else(|| tensor_err(name, "data_offsets missing"))?;
        let numel = shape
            .get(..rank)
            .unwrap_or(&[])
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| tensor_err(name, "element count overflows"))?;
        let bits = numel
            .checked_mul(dtype.bits())
            .ok_or_else(|| tensor_err(name, "byte count overflows"))?;
        if bits % 8 != 0 {
            return Err(tensor_err(name, "sub-byte dtype does not fill whole bytes"));
        }
        let nbytes = bits / 8;
        if begin > end {
            return Err(tensor_err(name, "data_offsets begin is after end"));
        }
        if end > data_len as u64 {
            return Err(tensor_err_more(
                name,
                "data_offsets end ",
                &[
                    N(end),
                    S(" is past the data section ("),
                    N(data_len as u64),
                    S(" bytes)"),
                ],
            ));
        }
        // end <= data_len, so both fit usize.
        let (begin, end) = (begin as usize, end as usize);
        if end - begin != nbytes {
            return Err(tensor_err_more(
                name,
                "data_offsets span ",
                &[
                    N((end - begin) as u64),
                    S(" bytes, shape and dtype need "),
                    N(nbytes as u64),
                ],
            ));
        }
        Ok(Info {
            dtype,
            shape,
            rank,
            begin,
            end,
        })
    }

    #[inline(never)]
    pub(super) fn shape(
        sc: &mut Scanner<'a>,
        name: JsonStr<'a>,
    ) -> Result<([usize; MAX_RANK], usize)> {
        let mut dims = [0usize; MAX_RANK];
        let mut rank = 0usize;
        if sc.peek().map_err(header_json)? != Kind::Array {
            return Err(tensor_err(name, "shape must be an array"));
        }
        let arr = sc.array().map_err(header_json)?;
        while sc.next_item(&arr).map_err(header_json)? {
            let d = sc.u64().map_err(header_json)?;
            let d =
                usize::try_from(d).map_err(|_| tensor_err(name, "dimension does not fit usize"))?;
            match dims.get_mut(rank) {
                Some(slot) => *slot = d,
                None => return Err(tensor_err(name, "rank above 8")),
            }
            rank += 1;
        }
        Ok((dims, rank))
    }

    #[inline(never)]
    pub(super) fn offsets(sc: &mut Scanner<'a>, name: JsonStr<'a>) -> Result<(u64, u64)> {
        let two = || tensor_err(name, "data_offsets must be an array of 2 integers");
        if sc.peek().map_err(header_json)? != Kind::Array {
            return Err(two());
        }
        let arr = sc.array().map_err(header_json)?;
        if !sc.next_item(&arr).map_err(header_json)? {
            return Err(two());
        }
        let begin = sc.u64().map_err(header_json)?;
        if !sc.next_item(&arr).map_err(header_json)? {
            return Err(two());
        }
        let end = sc.u64().map_err(header_json)?;
        if sc.next_item(&arr).map_err(header_json)? {
            return Err(two());
        }
        Ok((begin, end))
    }
}

/// The error of a check of a tensor entry's other (unknown) fields.
#[cold]
#[inline(never)]
pub(super) fn field_err(header: &str, name: JsonStr, e: JsonError) -> Error {
    match (e.kind, super::super::json::key_at(header, e.at)) {
        (ErrorKind::DuplicateKey, Some(k)) => {
            tensor_err_more(name, "field ", &[S(k.raw()), S(" appears twice")])
        }
        _ => header_json(e),
    }
}
