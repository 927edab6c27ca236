//! The crate's one JSON reader: a strict, `no_std`, allocation-free scanner.
//!
//! A [`Scanner`] is a cursor over one JSON text (RFC 8259). It never builds a tree:
//! the caller asks for the value it expects next ([`Scanner::string`],
//! [`Scanner::u64`], [`Scanner::f64`], [`Scanner::object`] then
//! [`Scanner::next_key`], [`Scanner::array`] then [`Scanner::next_item`], ...) or
//! skips it ([`Scanner::skip`]), and gets borrowed pieces of the text back.
//! Strings are validated (escapes, surrogate pairs, no raw control characters) but
//! decoded only on demand ([`JsonStr::chars`], [`JsonStr::eq_str`], [`JsonStr::cmp`]),
//! so comparing a key with a name costs no allocation and no copy.
//!
//! Strictness: the grammar of RFC 8259 exactly (no comments, no trailing commas,
//! no leading zeros, no `NaN`, no single quotes), nothing but whitespace after the
//! top-level value ([`Scanner::finish`]), nesting limited to [`MAX_DEPTH`] containers
//! (adjustable up to 64 with [`Scanner::with_max_depth`]) and no recursion, so no
//! input can exhaust the stack, panic or loop. Numbers convert exactly:
//! [`Number::as_u64`] and [`Number::as_i64`] only for integer forms that fit,
//! [`Number::as_f64`] / [`Number::as_f32`] correctly rounded and finite.
//! Key uniqueness is not part of the grammar check (it needs memory per object);
//! [`UniqueKeys`] and [`check_unique_keys`] check it for the objects a caller reads.
//!
//! ```
//! use mla_core::json::{Kind, Scanner};
//!
//! let text = r#"{"hidden_size": 2048, "rope_scaling": {"factor": 40.0, "type": "yarn"},
//!               "layer_types": ["full", "sliding"], "sliding_window": null}"#;
//! let mut sc = Scanner::new(text);
//! let (mut hidden, mut factor, mut layers) = (0, 0.0, 0);
//! let top = sc.object()?;
//! while let Some(key) = sc.next_key(&top)? {
//!     if key.eq_str("hidden_size") {
//!         hidden = sc.u64()?;
//!     } else if key.eq_str("rope_scaling") {
//!         let inner = sc.object()?;
//!         while let Some(k) = sc.next_key(&inner)? {
//!             if k.eq_str("factor") {
//!                 factor = sc.f64()?;
//!             } // other values are skipped by the next `next_key`
//!         }
//!     } else if key.eq_str("layer_types") {
//!         let list = sc.array()?;
//!         while sc.next_item(&list)? {
//!             assert!(sc.string()?.eq_str("full") || layers > 0);
//!             layers += 1;
//!         }
//!     } else if key.eq_str("sliding_window") {
//!         assert_eq!(sc.peek()?, Kind::Null);
//!         assert!(sc.eat_null()?);
//!     }
//! }
//! sc.finish()?; // nothing but whitespace after the object
//! assert_eq!((hidden, factor, layers), (2048, 40.0, 2));
//! # Ok::<(), mla_core::json::JsonError>(())
//! ```

use core::cmp::Ordering;
use core::ops::Range;

mod error;
mod number;
mod string;
mod unique;

pub use error::{ErrorKind, JsonError, JsonResult};
pub use number::Number;
use string::decode_escape;
pub(crate) use string::utf8;
pub use string::{Chars, DecodedBytes, JsonStr};
pub(crate) use unique::heapsort;
pub use unique::{check_unique_keys, UniqueKeys};

/// Default nesting limit: at most this many containers (objects and arrays) open
/// at once. [`Scanner::with_max_depth`] sets another, up to 64.
pub const MAX_DEPTH: usize = 32;
/// Hard nesting limit (the open containers' kinds are kept in one `u64`).
const DEPTH_LIMIT: usize = 64;

/// Keys of one object whose order breaks into at most this many ascending runs are
/// checked for duplicates by one merge over the runs ([`UniqueKeys`]).
pub const MAX_KEY_RUNS: usize = 8;
/// Keys hashed and sorted per pass when an object's keys are in no useful order.
pub const KEY_BLOCK: usize = 1024;
/// Most keys of one object checked for duplicates when they are in no useful order
/// (more than [`MAX_KEY_RUNS`] ascending runs): each [`KEY_BLOCK`] of them costs a
/// pass over the object.
pub const MAX_UNSORTED_KEYS: usize = 16 * KEY_BLOCK;
/// Largest object (in bytes) checked for duplicate keys in no useful order.
pub const MAX_UNSORTED_BYTES: usize = 16 << 20;

/// The kind of the value at the cursor ([`Scanner::peek`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `{ ... }`
    Object,
    /// `[ ... ]`
    Array,
    /// `"..."`
    String,
    /// `-1.5e3`
    Number,
    /// `true` or `false`
    Bool,
    /// `null`
    Null,
}

// ---------------------------------------------------------------------------------
// The scanner
// ---------------------------------------------------------------------------------

/// Why a number did not convert to a float.
fn float_failure(n: &Number<'_>) -> ErrorKind {
    if crate::decimal::too_long(n.text) {
        ErrorKind::FloatTooLong
    } else {
        ErrorKind::FloatTooLarge
    }
}

/// What the cursor expects next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// A value: at the start, after a key's `:`, after `,` in an array.
    Value,
    /// Just inside `{` or `[`: a member or the closing bracket.
    Open,
    /// A value just ended: `,` or the closing bracket (or, at depth 0, the end).
    Next,
}

/// One step inside a container.
enum Step<'a> {
    Key(JsonStr<'a>),
    Item,
    Closed,
}

/// An open object, from [`Scanner::object`]; pass it to [`Scanner::next_key`].
#[derive(Clone, Debug)]
pub struct Object {
    depth: usize,
}

/// An open array, from [`Scanner::array`]; pass it to [`Scanner::next_item`].
#[derive(Clone, Debug)]
pub struct Array {
    depth: usize,
}

/// A cursor over one JSON text; see the module docs.
///
/// Reading: the typed readers take the value at the cursor and fail (without
/// consuming anything useful) when it is of another kind. After [`Scanner::next_key`]
/// returns a key, the member's value is at the cursor: read it, or leave it and
/// the next `next_key` on that object skips it (likewise items of an array, and
/// objects or arrays left half read: the next call on an outer container finishes
/// them). After any error the scanner's position is unspecified: stop there.
#[derive(Clone, Copy, Debug)]
pub struct Scanner<'a> {
    text: &'a str,
    pos: usize,
    /// Containers open.
    depth: usize,
    max_depth: usize,
    /// Bit `d` set: the container at depth `d + 1` is an object (else an array).
    objects: u64,
    state: State,
}

impl<'a> Scanner<'a> {
    /// A scanner at the start of `text`, which must hold one JSON value (plus
    /// whitespace around it).
    pub fn new(text: &'a str) -> Scanner<'a> {
        Scanner::starting_at(text, 0)
    }

    /// A scanner over `text` whose value begins at byte `pos` (after optional
    /// whitespace); error offsets stay offsets in `text`. [`Scanner::finish`]
    /// then wants only whitespace from the value's end to the end of `text`; to
    /// read one value inside a larger text, stop after reading it.
    pub fn starting_at(text: &'a str, pos: usize) -> Scanner<'a> {
        Scanner {
            text,
            pos,
            depth: 0,
            max_depth: MAX_DEPTH,
            objects: 0,
            state: State::Value,
        }
    }

    /// The same scanner with another nesting limit (at most 64 containers open).
    pub fn with_max_depth(mut self, max_depth: usize) -> Scanner<'a> {
        self.max_depth = max_depth.min(DEPTH_LIMIT);
        self
    }

    /// The whole text.
    pub fn text(&self) -> &'a str {
        self.text
    }

    /// Byte offset of the cursor in the text.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Number of containers open at the cursor.
    pub fn depth(&self) -> usize {
        self.depth
    }

    fn peek_byte(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn bump(&mut self) {
        self.pos = self.pos.saturating_add(1);
    }

    fn ws(&mut self) {
        while matches!(self.peek_byte(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.bump();
        }
    }

    fn error(&self, kind: ErrorKind) -> JsonError {
        JsonError { kind, at: self.pos }
    }

    /// The first byte of the value at the cursor (whitespace skipped).
    fn begin_value(&mut self) -> JsonResult<u8> {
        if self.state != State::Value {
            return Err(self.error(ErrorKind::NotAtValue));
        }
        self.ws();
        self.peek_byte()
            .ok_or_else(|| self.error(ErrorKind::UnexpectedEnd))
    }

    /// The value at the cursor is not of the kind asked for: `want`, unless what
    /// is there is no value at all.
    fn mismatch(&self, first: u8, want: ErrorKind) -> JsonError {
        match first {
            b'{' | b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => self.error(want),
            _ => self.error(ErrorKind::UnexpectedChar),
        }
    }

    /// The kind of the value at the cursor, without consuming it.
    #[inline(never)]
    pub fn peek(&mut self) -> JsonResult<Kind> {
        let first = self.begin_value()?;
        Ok(match first {
            b'{' => Kind::Object,
            b'[' => Kind::Array,
            b'"' => Kind::String,
            b'-' | b'0'..=b'9' => Kind::Number,
            b't' | b'f' => Kind::Bool,
            b'n' => Kind::Null,
            _ => return Err(self.error(ErrorKind::UnexpectedChar)),
        })
    }

    /// A string value.
    #[inline(never)]
    pub fn string(&mut self) -> JsonResult<JsonStr<'a>> {
        let first = self.begin_value()?;
        if first != b'"' {
            return Err(self.mismatch(first, ErrorKind::ExpectedString));
        }
        let s = self.scan_string()?;
        self.state = State::Next;
        Ok(s)
    }

    /// A number value (any JSON number).
    pub fn number(&mut self) -> JsonResult<Number<'a>> {
        self.number_as(
            ErrorKind::ExpectedNumber,
            |n| Some(*n),
            |_| ErrorKind::BadNumber,
        )
    }

    /// A non-negative integer fitting a `u64` (`ExpectedUnsigned` for `-1`, `1.0`,
    /// `1e3`; `IntegerTooLarge` above `u64::MAX`).
    pub fn u64(&mut self) -> JsonResult<u64> {
        self.number_as(ErrorKind::ExpectedUnsigned, Number::as_u64, |n| {
            if n.is_integer() && !n.text.starts_with('-') {
                ErrorKind::IntegerTooLarge
            } else {
                ErrorKind::ExpectedUnsigned
            }
        })
    }

    /// An integer fitting an `i64`.
    pub fn i64(&mut self) -> JsonResult<i64> {
        self.number_as(ErrorKind::ExpectedInteger, Number::as_i64, |n| {
            if n.is_integer() {
                ErrorKind::IntegerTooLarge
            } else {
                ErrorKind::ExpectedInteger
            }
        })
    }

    /// Any number, correctly rounded to `f64` (`FloatTooLarge` if it overflows,
    /// `FloatTooLong` past 19 significant digits).
    pub fn f64(&mut self) -> JsonResult<f64> {
        self.number_as(ErrorKind::ExpectedNumber, Number::as_f64, float_failure)
    }

    /// Any number, correctly rounded to `f32` (errors as [`Scanner::f64`]).
    pub fn f32(&mut self) -> JsonResult<f32> {
        self.number_as(ErrorKind::ExpectedNumber, Number::as_f32, float_failure)
    }

    /// The number at the cursor converted by `convert`; `want` if the value is not
    /// a number, `failed(n)` (at the number's start) if it does not convert.
    #[inline(never)]
    fn number_as<T>(
        &mut self,
        want: ErrorKind,
        convert: impl Fn(&Number<'a>) -> Option<T>,
        failed: impl Fn(&Number<'a>) -> ErrorKind,
    ) -> JsonResult<T> {
        let first = self.begin_value()?;
        if !matches!(first, b'-' | b'0'..=b'9') {
            return Err(self.mismatch(first, want));
        }
        let at = self.pos;
        let n = self.scan_number()?;
        self.state = State::Next;
        convert(&n).ok_or_else(|| JsonError {
            kind: failed(&n),
            at,
        })
    }

    /// `true` or `false`.
    #[inline(never)]
    pub fn bool(&mut self) -> JsonResult<bool> {
        let first = self.begin_value()?;
        let v = match first {
            b't' => {
                self.literal(b"true")?;
                true
            }
            b'f' => {
                self.literal(b"false")?;
                false
            }
            _ => return Err(self.mismatch(first, ErrorKind::ExpectedBool)),
        };
        self.state = State::Next;
        Ok(v)
    }

    /// `null`.
    #[inline(never)]
    pub fn null(&mut self) -> JsonResult<()> {
        let first = self.begin_value()?;
        if first != b'n' {
            return Err(self.mismatch(first, ErrorKind::ExpectedNull));
        }
        self.literal(b"null")?;
        self.state = State::Next;
        Ok(())
    }

    /// Consumes a `null` and returns true; returns false (consuming nothing) for
    /// any other value. For optional fields: `if !sc.eat_null()? { v = sc.u64()? }`.
    #[inline(never)]
    pub fn eat_null(&mut self) -> JsonResult<bool> {
        if self.begin_value()? != b'n' {
            return Ok(false);
        }
        self.literal(b"null")?;
        self.state = State::Next;
        Ok(true)
    }

    /// Opens the object at the cursor; read its members with [`Scanner::next_key`].
    #[inline(never)]
    pub fn object(&mut self) -> JsonResult<Object> {
        let first = self.begin_value()?;
        if first != b'{' {
            return Err(self.mismatch(first, ErrorKind::ExpectedObject));
        }
        self.open(true)?;
        Ok(Object { depth: self.depth })
    }

    /// Opens the array at the cursor; read its items with [`Scanner::next_item`].
    #[inline(never)]
    pub fn array(&mut self) -> JsonResult<Array> {
        let first = self.begin_value()?;
        if first != b'[' {
            return Err(self.mismatch(first, ErrorKind::ExpectedArray));
        }
        self.open(false)?;
        Ok(Array { depth: self.depth })
    }

    /// The next key of `obj` (its value is then at the cursor), or `None` after the
    /// closing `}`. A value or inner container left unread is skipped first.
    #[inline(never)]
    pub fn next_key(&mut self, obj: &Object) -> JsonResult<Option<JsonStr<'a>>> {
        self.settle(obj.depth)?;
        if self.depth < obj.depth {
            return Ok(None);
        }
        if !self.is_object() {
            return Err(self.error(ErrorKind::NotAtValue));
        }
        match self.step()? {
            Step::Key(k) => Ok(Some(k)),
            Step::Closed => Ok(None),
            Step::Item => Err(self.error(ErrorKind::NotAtValue)),
        }
    }

    /// True when `arr` has another item (then at the cursor); false after the
    /// closing `]`. An item or inner container left unread is skipped first.
    #[inline(never)]
    pub fn next_item(&mut self, arr: &Array) -> JsonResult<bool> {
        self.settle(arr.depth)?;
        if self.depth < arr.depth {
            return Ok(false);
        }
        if self.is_object() {
            return Err(self.error(ErrorKind::NotAtValue));
        }
        match self.step()? {
            Step::Item => Ok(true),
            Step::Closed => Ok(false),
            Step::Key(_) => Err(self.error(ErrorKind::NotAtValue)),
        }
    }

    /// Skips (and fully checks) the value at the cursor; returns its byte range.
    #[inline(never)]
    pub fn skip(&mut self) -> JsonResult<Range<usize>> {
        self.begin_value()?;
        let start = self.pos;
        self.skip_value()?;
        Ok(start..self.pos)
    }

    /// Finishes the text: reads (and checks) whatever is left of the top-level
    /// value, then wants nothing but whitespace. On a fresh scanner, this checks a
    /// whole text.
    #[inline(never)]
    pub fn finish(&mut self) -> JsonResult<()> {
        self.settle(0)?;
        self.ws();
        if self.pos != self.text.len() {
            return Err(self.error(ErrorKind::Trailing));
        }
        Ok(())
    }

    /// Whether the innermost open container is an object.
    fn is_object(&self) -> bool {
        match self.depth.checked_sub(1) {
            Some(bit) => self.objects & 1u64.checked_shl(bit as u32).unwrap_or(0) != 0,
            None => false,
        }
    }

    /// Consumes `{` or `[` (at the cursor).
    fn open(&mut self, object: bool) -> JsonResult<()> {
        if self.depth >= self.max_depth {
            return Err(self.error(ErrorKind::TooDeep));
        }
        let bit = 1u64.checked_shl(self.depth as u32).unwrap_or(0);
        if object {
            self.objects |= bit;
        } else {
            self.objects &= !bit;
        }
        self.depth += 1;
        self.bump();
        self.state = State::Open;
        Ok(())
    }

    /// Inside a container (state `Open` or `Next`): consumes up to the next
    /// member's value, or the closing bracket.
    fn step(&mut self) -> JsonResult<Step<'a>> {
        let object = self.is_object();
        let (close, missing) = if object {
            (b'}', ErrorKind::ExpectedCommaOrBrace)
        } else {
            (b']', ErrorKind::ExpectedCommaOrBracket)
        };
        self.ws();
        match self.state {
            State::Open => {
                if self.peek_byte() == Some(close) {
                    return Ok(self.close());
                }
            }
            State::Next => match self.peek_byte() {
                Some(b',') => self.bump(),
                Some(c) if c == close => return Ok(self.close()),
                _ => return Err(self.error(missing)),
            },
            State::Value => return Err(self.error(ErrorKind::NotAtValue)),
        }
        self.state = State::Value;
        if !object {
            return Ok(Step::Item);
        }
        self.ws();
        if self.peek_byte() != Some(b'"') {
            return Err(self.error(ErrorKind::ExpectedString));
        }
        let key = self.scan_string()?;
        self.ws();
        if self.peek_byte() != Some(b':') {
            return Err(self.error(ErrorKind::ExpectedColon));
        }
        self.bump();
        Ok(Step::Key(key))
    }

    /// Consumes the closing bracket of the innermost container.
    fn close(&mut self) -> Step<'a> {
        self.bump();
        self.depth = self.depth.saturating_sub(1);
        self.state = State::Next;
        Step::Closed
    }

    /// Skips the value at the cursor (state `Value`), containers included, with no
    /// recursion: the depth counter and the kind bits are the stack.
    fn skip_value(&mut self) -> JsonResult<()> {
        let base = self.depth;
        loop {
            if self.state == State::Value {
                match self.begin_value()? {
                    b'{' => self.open(true)?,
                    b'[' => self.open(false)?,
                    first => self.scalar(first)?,
                }
            } else if self.depth <= base {
                return Ok(());
            } else {
                self.step()?;
            }
        }
    }

    /// Brings the cursor between two members of the container at `depth` (or past
    /// its end), skipping an unread value and closing deeper containers.
    fn settle(&mut self, depth: usize) -> JsonResult<()> {
        loop {
            if self.state == State::Value {
                self.skip_value()?;
            } else if self.depth <= depth {
                return Ok(());
            } else {
                self.step()?;
            }
        }
    }

    /// A string, number or literal starting with `first` (state `Value`).
    fn scalar(&mut self, first: u8) -> JsonResult<()> {
        match first {
            b'"' => self.scan_string().map(|_| ())?,
            b'-' | b'0'..=b'9' => self.scan_number().map(|_| ())?,
            b't' => self.literal(b"true")?,
            b'f' => self.literal(b"false")?,
            b'n' => self.literal(b"null")?,
            _ => return Err(self.error(ErrorKind::UnexpectedChar)),
        }
        self.state = State::Next;
        Ok(())
    }

    fn literal(&mut self, lit: &[u8]) -> JsonResult<()> {
        let end = self.pos.saturating_add(lit.len());
        if self.text.as_bytes().get(self.pos..end) == Some(lit) {
            self.pos = end;
            Ok(())
        } else {
            Err(self.error(ErrorKind::UnexpectedChar))
        }
    }

    /// The string at the cursor (on its opening quote).
    fn scan_string(&mut self) -> JsonResult<JsonStr<'a>> {
        self.bump();
        let start = self.pos;
        let bytes = self.text.as_bytes();
        let mut escaped = false;
        loop {
            match bytes.get(self.pos) {
                None => {
                    return Err(JsonError {
                        kind: ErrorKind::UnterminatedString,
                        at: start,
                    })
                }
                Some(b'"') => {
                    let raw = self
                        .text
                        .get(start..self.pos)
                        .ok_or_else(|| self.error(ErrorKind::BadEscape))?;
                    self.bump();
                    return Ok(JsonStr { raw, escaped });
                }
                Some(b'\\') => {
                    escaped = true;
                    match decode_escape(bytes, self.pos) {
                        Some((_, used)) => self.pos = self.pos.saturating_add(used),
                        None => return Err(self.error(ErrorKind::BadEscape)),
                    }
                }
                Some(&c) if c < 0x20 => return Err(self.error(ErrorKind::ControlChar)),
                Some(_) => self.bump(),
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek_byte(), Some(b'0'..=b'9')) {
            self.bump();
        }
        self.pos.saturating_sub(start)
    }

    /// The number at the cursor (grammar only).
    fn scan_number(&mut self) -> JsonResult<Number<'a>> {
        let start = self.pos;
        let bad = JsonError {
            kind: ErrorKind::BadNumber,
            at: start,
        };
        if self.peek_byte() == Some(b'-') {
            self.bump();
        }
        match self.peek_byte() {
            Some(b'0') => self.bump(),
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(bad),
        }
        if self.peek_byte() == Some(b'.') {
            self.bump();
            if self.digits() == 0 {
                return Err(bad);
            }
        }
        if matches!(self.peek_byte(), Some(b'e' | b'E')) {
            self.bump();
            if matches!(self.peek_byte(), Some(b'+' | b'-')) {
                self.bump();
            }
            if self.digits() == 0 {
                return Err(bad);
            }
        }
        let text = self.text.get(start..self.pos).ok_or(bad)?;
        Ok(Number { text })
    }
}

/// Checks that `text` is exactly one JSON value (with whitespace around it).
pub fn validate(text: &str) -> JsonResult<()> {
    Scanner::new(text).finish()
}

/// The string whose opening quote is at byte `at` of `text` (for instance the key
/// a [`ErrorKind::DuplicateKey`] error points at).
pub fn key_at(text: &str, at: usize) -> Option<JsonStr<'_>> {
    let mut sc = Scanner::starting_at(text, at);
    if sc.peek_byte() != Some(b'"') {
        return None;
    }
    sc.scan_string().ok()
}

#[cfg(test)]
mod tests;
