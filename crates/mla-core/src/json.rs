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

use crate::status::Piece::{N, S};
use crate::status::{Error, Status};

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

/// What went wrong; see [`ErrorKind::as_str`] for the wording.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The text ended inside a value.
    UnexpectedEnd,
    /// A character that cannot start or continue the value here.
    UnexpectedChar,
    /// A string (or an object key) was expected.
    ExpectedString,
    /// `:` after an object key was expected.
    ExpectedColon,
    /// `,` or `}` after an object member was expected.
    ExpectedCommaOrBrace,
    /// `,` or `]` after an array item was expected.
    ExpectedCommaOrBracket,
    /// An object was expected.
    ExpectedObject,
    /// An array was expected.
    ExpectedArray,
    /// A number was expected.
    ExpectedNumber,
    /// A non-negative integer (no fraction, no exponent) was expected.
    ExpectedUnsigned,
    /// An integer (no fraction, no exponent) was expected.
    ExpectedInteger,
    /// The integer does not fit 64 bits.
    IntegerTooLarge,
    /// The number is too large for the float type.
    FloatTooLarge,
    /// The number has more than 19 significant digits (a float's shortest form
    /// has at most 17).
    FloatTooLong,
    /// `true` or `false` was expected.
    ExpectedBool,
    /// `null` was expected.
    ExpectedNull,
    /// A malformed number (`01`, `1.`, `-`, `1e`).
    BadNumber,
    /// A malformed escape or a lone surrogate in a string.
    BadEscape,
    /// A raw control character (below U+0020) in a string.
    ControlChar,
    /// A string without its closing quote.
    UnterminatedString,
    /// More containers open at once than the nesting limit.
    TooDeep,
    /// Something other than whitespace after the top-level value.
    Trailing,
    /// The scanner was asked for a value where none begins (API misuse, e.g. two
    /// reads after one key).
    NotAtValue,
    /// An object key that appeared before in the same object.
    DuplicateKey,
    /// Too many keys in no useful order to check them for duplicates
    /// ([`MAX_UNSORTED_KEYS`], [`MAX_UNSORTED_BYTES`]).
    TooManyUnsortedKeys,
}

impl ErrorKind {
    /// A short description (`"expected ':'"`, `"nesting too deep"`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::UnexpectedEnd => "unexpected end",
            ErrorKind::UnexpectedChar => "unexpected character",
            ErrorKind::ExpectedString => "expected a string",
            ErrorKind::ExpectedColon => "expected ':'",
            ErrorKind::ExpectedCommaOrBrace => "expected ',' or '}'",
            ErrorKind::ExpectedCommaOrBracket => "expected ',' or ']'",
            ErrorKind::ExpectedObject => "expected an object",
            ErrorKind::ExpectedArray => "expected an array",
            ErrorKind::ExpectedNumber => "expected a number",
            ErrorKind::ExpectedUnsigned => "expected a non-negative integer",
            ErrorKind::ExpectedInteger => "expected an integer",
            ErrorKind::IntegerTooLarge => "integer does not fit 64 bits",
            ErrorKind::FloatTooLarge => "number too large for a float",
            ErrorKind::FloatTooLong => "number has more than 19 significant digits",
            ErrorKind::ExpectedBool => "expected true or false",
            ErrorKind::ExpectedNull => "expected null",
            ErrorKind::BadNumber => "bad number",
            ErrorKind::BadEscape => "bad escape in string",
            ErrorKind::ControlChar => "control character in string",
            ErrorKind::UnterminatedString => "unterminated string",
            ErrorKind::TooDeep => "nesting too deep",
            ErrorKind::Trailing => "trailing characters after the value",
            ErrorKind::NotAtValue => "no value begins here",
            ErrorKind::DuplicateKey => "duplicate key",
            ErrorKind::TooManyUnsortedKeys => "too many unsorted keys to check for duplicates",
        }
    }
}

/// A JSON error: what, and the byte offset in the text where it was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JsonError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Byte offset in the scanner's text (for [`ErrorKind::DuplicateKey`]: the
    /// opening quote of the second occurrence; [`key_at`] reads it back).
    pub at: usize,
}

impl JsonError {
    /// An `InvalidArgument` error reading `"{context}: {what} at byte {at}"`.
    pub fn to_error(self, context: &str) -> Error {
        let at = self.at as u64;
        let pieces = [S(": "), S(self.kind.as_str()), S(" at byte "), N(at)];
        crate::status::error(Status::InvalidArgument, context, &pieces)
    }
}

impl From<JsonError> for Error {
    fn from(e: JsonError) -> Error {
        e.to_error("JSON")
    }
}

/// Result of the scanner.
pub type JsonResult<T> = core::result::Result<T, JsonError>;

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
// Strings
// ---------------------------------------------------------------------------------

/// A validated JSON string, borrowed from the text: the characters between the
/// quotes, escapes not yet decoded. Comparisons and [`JsonStr::chars`] decode.
#[derive(Clone, Copy, Debug)]
pub struct JsonStr<'a> {
    raw: &'a str,
    escaped: bool,
}

impl<'a> JsonStr<'a> {
    /// The text between the quotes as written (escapes not decoded).
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// True when the string holds at least one backslash escape.
    pub fn has_escapes(&self) -> bool {
        self.escaped
    }

    /// The string itself, zero-copy, when it holds no escape.
    pub fn as_str(&self) -> Option<&'a str> {
        (!self.escaped).then_some(self.raw)
    }

    /// The decoded characters.
    pub fn chars(&self) -> Chars<'a> {
        Chars { rest: self.raw }
    }

    /// The decoded string's UTF-8 bytes.
    pub fn bytes(&self) -> DecodedBytes<'a> {
        DecodedBytes {
            chars: self.chars(),
            buf: [0; 4],
            at: 0,
            len: 0,
        }
    }

    /// Length of the decoded string in UTF-8 bytes.
    pub fn decoded_len(&self) -> usize {
        if self.escaped {
            self.chars().map(char::len_utf8).sum()
        } else {
            self.raw.len()
        }
    }

    /// True when the decoded string is `s`.
    pub fn eq_str(&self, s: &str) -> bool {
        if self.escaped {
            self.bytes().eq(s.bytes())
        } else {
            self.raw == s
        }
    }

    /// True when the decoded string is the concatenation of `parts`.
    pub fn eq_parts(&self, parts: &[&str]) -> bool {
        if self.escaped {
            return self.bytes().eq(parts.iter().flat_map(|p| p.bytes()));
        }
        let mut rest = self.raw;
        for p in parts {
            match rest.strip_prefix(p) {
                Some(r) => rest = r,
                None => return false,
            }
        }
        rest.is_empty()
    }

    /// True when the decoded string begins with `prefix`.
    pub fn starts_with(&self, prefix: &str) -> bool {
        if self.escaped {
            let mut b = self.bytes();
            prefix.bytes().all(|p| b.next() == Some(p))
        } else {
            self.raw.starts_with(prefix)
        }
    }

    /// True when the decoded string ends with `suffix`.
    pub fn ends_with(&self, suffix: &str) -> bool {
        if !self.escaped {
            return self.raw.ends_with(suffix);
        }
        match self.decoded_len().checked_sub(suffix.len()) {
            Some(skip) => self.bytes().skip(skip).eq(suffix.bytes()),
            None => false,
        }
    }
}

/// Equality of the decoded strings (`"\u0078"` equals `"x"`).
impl PartialEq for JsonStr<'_> {
    fn eq(&self, other: &JsonStr) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for JsonStr<'_> {}

impl PartialEq<str> for JsonStr<'_> {
    fn eq(&self, other: &str) -> bool {
        self.eq_str(other)
    }
}

impl PartialEq<&str> for JsonStr<'_> {
    fn eq(&self, other: &&str) -> bool {
        self.eq_str(other)
    }
}

impl PartialOrd for JsonStr<'_> {
    fn partial_cmp(&self, other: &JsonStr) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The order of the decoded strings, byte by byte (the order of Rust's `str`).
impl Ord for JsonStr<'_> {
    fn cmp(&self, other: &JsonStr) -> Ordering {
        if self.escaped || other.escaped {
            self.bytes().cmp(other.bytes())
        } else {
            self.raw.as_bytes().cmp(other.raw.as_bytes())
        }
    }
}

/// The decoded characters of a [`JsonStr`].
#[derive(Clone, Debug)]
pub struct Chars<'a> {
    rest: &'a str,
}

impl Iterator for Chars<'_> {
    type Item = char;

    fn next(&mut self) -> Option<char> {
        let bytes = self.rest.as_bytes();
        let (c, used) = if bytes.first() == Some(&b'\\') {
            decode_escape(bytes, 0)?
        } else {
            let c = self.rest.chars().next()?;
            (c, c.len_utf8())
        };
        self.rest = self.rest.get(used..)?;
        Some(c)
    }
}

/// The decoded UTF-8 bytes of a [`JsonStr`].
#[derive(Clone, Debug)]
pub struct DecodedBytes<'a> {
    chars: Chars<'a>,
    buf: [u8; 4],
    at: usize,
    len: usize,
}

impl Iterator for DecodedBytes<'_> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        if self.at >= self.len {
            let (buf, len) = utf8(self.chars.next()?);
            self.buf = buf;
            self.len = len;
            self.at = 0;
        }
        let b = self.buf.get(self.at).copied();
        self.at = self.at.saturating_add(1);
        b
    }
}

fn hex4(raw: &[u8], at: usize) -> Option<u32> {
    let digits = raw.get(at..at.checked_add(4)?)?;
    digits.iter().try_fold(0u32, |acc, &b| {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        Some(acc * 16 + u32::from(d))
    })
}

/// Decodes the escape sequence starting at `raw[i] == b'\\'`; returns the char and
/// the number of bytes it used. `None` for a malformed escape or a lone surrogate.
fn decode_escape(raw: &[u8], i: usize) -> Option<(char, usize)> {
    let kind = *raw.get(i.checked_add(1)?)?;
    let simple = match kind {
        b'"' => Some('"'),
        b'\\' => Some('\\'),
        b'/' => Some('/'),
        b'b' => Some('\u{8}'),
        b'f' => Some('\u{c}'),
        b'n' => Some('\n'),
        b'r' => Some('\r'),
        b't' => Some('\t'),
        b'u' => None,
        _ => return None,
    };
    if let Some(c) = simple {
        return Some((c, 2));
    }
    let hi = hex4(raw, i.checked_add(2)?)?;
    let after = i.checked_add(6)?;
    match hi {
        0xD800..=0xDBFF => {
            if raw.get(after) != Some(&b'\\') || raw.get(after.checked_add(1)?) != Some(&b'u') {
                return None;
            }
            let lo = hex4(raw, after.checked_add(2)?)?;
            if !(0xDC00..=0xDFFF).contains(&lo) {
                return None;
            }
            let cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
            Some((char::from_u32(cp)?, 12))
        }
        0xDC00..=0xDFFF => None,
        _ => Some((char::from_u32(hi)?, 6)),
    }
}

/// UTF-8 encoding of `c` (written out so that no bounds check or panic path is linked).
pub(crate) fn utf8(c: char) -> ([u8; 4], usize) {
    let cp = c as u32;
    // Each `as u8` keeps the low 8 bits of a value already masked to fit.
    if cp < 0x80 {
        ([cp as u8, 0, 0, 0], 1)
    } else if cp < 0x800 {
        ([0xC0 | (cp >> 6) as u8, 0x80 | (cp & 0x3F) as u8, 0, 0], 2)
    } else if cp < 0x10000 {
        (
            [
                0xE0 | (cp >> 12) as u8,
                0x80 | ((cp >> 6) & 0x3F) as u8,
                0x80 | (cp & 0x3F) as u8,
                0,
            ],
            3,
        )
    } else {
        (
            [
                0xF0 | ((cp >> 18) & 0x07) as u8,
                0x80 | ((cp >> 12) & 0x3F) as u8,
                0x80 | ((cp >> 6) & 0x3F) as u8,
                0x80 | (cp & 0x3F) as u8,
            ],
            4,
        )
    }
}

// ---------------------------------------------------------------------------------
// Numbers
// ---------------------------------------------------------------------------------

/// A number as written, grammar-checked (`-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Number<'a> {
    text: &'a str,
}

impl<'a> Number<'a> {
    /// The number's text.
    pub fn text(&self) -> &'a str {
        self.text
    }

    /// True when written without fraction and exponent (`-3`, `0`, `42`).
    pub fn is_integer(&self) -> bool {
        !self.text.bytes().any(|b| matches!(b, b'.' | b'e' | b'E'))
    }

    /// The value, when written as a non-negative integer that fits a `u64`
    /// (`1.0`, `1e3` and `-0` are not).
    pub fn as_u64(&self) -> Option<u64> {
        if !self.is_integer() || self.text.starts_with('-') {
            return None;
        }
        self.text.bytes().try_fold(0u64, |acc, b| {
            acc.checked_mul(10)?
                .checked_add(u64::from(b.wrapping_sub(b'0')))
        })
    }

    /// The value, when written as an integer that fits an `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        if !self.is_integer() {
            return None;
        }
        let (neg, digits) = match self.text.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, self.text),
        };
        let mag = digits.bytes().try_fold(0u64, |acc, b| {
            acc.checked_mul(10)?
                .checked_add(u64::from(b.wrapping_sub(b'0')))
        })?;
        if neg {
            0i64.checked_sub_unsigned(mag)
        } else {
            i64::try_from(mag).ok()
        }
    }

    /// The value correctly rounded to `f64`; `None` when it overflows to infinity
    /// or has more than 19 significant digits (values below the smallest
    /// subnormal round to zero, as IEEE 754 says). No panic path: the conversion
    /// is the crate's own, exact, in fixed memory.
    pub fn as_f64(&self) -> Option<f64> {
        crate::decimal::to_f64(self.text)
    }

    /// The value correctly rounded to `f32` (directly, not through `f64`); `None`
    /// as [`Number::as_f64`].
    pub fn as_f32(&self) -> Option<f32> {
        crate::decimal::to_f32(self.text)
    }
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

// ---------------------------------------------------------------------------------
// Duplicate keys
// ---------------------------------------------------------------------------------

/// Byte offset of a string's opening quote in `text` (the string borrows from it).
fn quote_at(text: &str, s: &JsonStr) -> usize {
    (s.raw.as_ptr() as usize)
        .wrapping_sub(text.as_ptr() as usize)
        .wrapping_sub(1)
}

fn duplicate(text: &str, s: &JsonStr) -> JsonError {
    JsonError {
        kind: ErrorKind::DuplicateKey,
        at: quote_at(text, s),
    }
}

/// Where an ascending run of keys begins: the scanner just after its first key.
#[derive(Clone, Copy, Debug)]
struct Run<'a> {
    cursor: Scanner<'a>,
    key: JsonStr<'a>,
}

/// Checks that the keys of one object are distinct, without allocating and without
/// comparing every pair: feed it each key as it is read ([`UniqueKeys::push`]), then
/// call [`UniqueKeys::finish`] once the object is closed.
///
/// Keys in ascending order (as the safetensors library writes tensor names) cost one
/// comparison each and nothing more. Keys in at most [`MAX_KEY_RUNS`] ascending runs
/// (the library's order when a file mixes dtypes) cost one merge of the runs. Other
/// orders cost a pass over the object per [`KEY_BLOCK`] keys (hashes sorted in a
/// fixed stack buffer, equal hashes compared exactly), for objects of at most
/// [`MAX_UNSORTED_KEYS`] keys and [`MAX_UNSORTED_BYTES`] bytes
/// ([`ErrorKind::TooManyUnsortedKeys`] beyond).
#[derive(Clone, Debug)]
pub struct UniqueKeys<'a> {
    text: &'a str,
    /// Byte offset of the object's `{`.
    object_at: usize,
    max_depth: usize,
    prev: Option<JsonStr<'a>>,
    count: usize,
    runs: usize,
    starts: [Option<Run<'a>>; MAX_KEY_RUNS],
}

impl<'a> UniqueKeys<'a> {
    /// A checker for the object whose `{` is at byte `object_at` of `sc`'s text.
    pub fn new(sc: &Scanner<'a>, object_at: usize) -> UniqueKeys<'a> {
        UniqueKeys {
            text: sc.text,
            object_at,
            max_depth: sc.max_depth,
            prev: None,
            count: 0,
            runs: 0,
            starts: [None; MAX_KEY_RUNS],
        }
    }

    /// Number of keys pushed.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when no key was pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Number of ascending runs the keys pushed so far form.
    pub fn runs(&self) -> usize {
        self.runs
    }

    /// Records `key`, returned by `sc.next_key` on this object; `sc` may be just
    /// after the key or after its value (not further). A key equal to the previous
    /// one is reported at once.
    pub fn push(&mut self, sc: &Scanner<'a>, key: JsonStr<'a>) -> JsonResult<()> {
        self.count = self.count.saturating_add(1);
        let new_run = match &self.prev {
            None => true,
            Some(p) => match p.cmp(&key) {
                Ordering::Less => false,
                Ordering::Equal => return Err(duplicate(self.text, &key)),
                Ordering::Greater => true,
            },
        };
        if new_run {
            if let Some(slot) = self.starts.get_mut(self.runs) {
                *slot = Some(Run { cursor: *sc, key });
            }
            self.runs = self.runs.saturating_add(1);
        }
        self.prev = Some(key);
        Ok(())
    }

    /// Checks the keys across runs (call after the object's last key). The error
    /// of a duplicate points at its later occurrence.
    pub fn finish(&self) -> JsonResult<()> {
        if self.runs <= 1 {
            Ok(())
        } else if self.runs <= MAX_KEY_RUNS {
            self.merge()
        } else {
            self.blocked()
        }
    }

    /// Merges the ascending runs: a key in two runs shows up as two equal heads.
    fn merge(&self) -> JsonResult<()> {
        let tok = Object {
            depth: self
                .starts
                .first()
                .copied()
                .flatten()
                .map_or(0, |r| r.cursor.depth),
        };
        // Each head: (cursor, current key, offset where its run ends).
        let mut heads: [Option<(Scanner<'a>, JsonStr<'a>, usize)>; MAX_KEY_RUNS] =
            [None; MAX_KEY_RUNS];
        for (j, head) in heads.iter_mut().enumerate() {
            let Some(run) = self.starts.get(j).copied().flatten() else {
                continue;
            };
            let end = match self.starts.get(j.saturating_add(1)).copied().flatten() {
                Some(next) => quote_at(self.text, &next.key),
                None => usize::MAX,
            };
            *head = Some((run.cursor, run.key, end));
        }
        loop {
            let mut min: Option<usize> = None;
            for j in 0..MAX_KEY_RUNS {
                let Some((_, key, _)) = heads.get(j).copied().flatten() else {
                    continue;
                };
                let Some(m) = min else {
                    min = Some(j);
                    continue;
                };
                let Some((_, mkey, _)) = heads.get(m).copied().flatten() else {
                    continue;
                };
                match key.cmp(&mkey) {
                    Ordering::Less => min = Some(j),
                    Ordering::Equal => return Err(duplicate(self.text, &key)),
                    Ordering::Greater => {}
                }
            }
            let Some(m) = min else { return Ok(()) };
            let Some(slot) = heads.get_mut(m) else {
                return Ok(());
            };
            let Some((mut cursor, _, end)) = *slot else {
                return Ok(());
            };
            *slot = match cursor.next_key(&tok)? {
                Some(k) if quote_at(self.text, &k) < end => Some((cursor, k, end)),
                _ => None,
            };
        }
    }

    /// Keys in no useful order: block by block, hash-sort a block and look every
    /// later key up in it.
    #[inline(never)]
    fn blocked(&self) -> JsonResult<()> {
        let too_many = JsonError {
            kind: ErrorKind::TooManyUnsortedKeys,
            at: self.object_at,
        };
        if self.count > MAX_UNSORTED_KEYS {
            return Err(too_many);
        }
        // Offsets of keys relative to the object's start fit 32 bits below this.
        let mut sc = Scanner::starting_at(self.text, self.object_at).with_max_depth(self.max_depth);
        let obj = sc.object()?;
        let start = sc;
        let mut table = [0u64; KEY_BLOCK];
        let mut first = 0usize;
        while first < self.count {
            let mut sc = start;
            let mut seen = 0usize;
            while seen < first {
                if sc.next_key(&obj)?.is_none() {
                    return Ok(());
                }
                seen += 1;
            }
            // Fill the table with (hash << 32 | offset) of this block's keys.
            let mut n = 0usize;
            while n < KEY_BLOCK {
                let Some(k) = sc.next_key(&obj)? else { break };
                let off = quote_at(self.text, &k).wrapping_sub(self.object_at);
                if off > MAX_UNSORTED_BYTES {
                    return Err(too_many);
                }
                if let Some(slot) = table.get_mut(n) {
                    *slot = (u64::from(hash(&k)) << 32) | off as u64;
                }
                n += 1;
            }
            let block = table.get_mut(..n).unwrap_or(&mut []);
            heapsort(block);
            let block = &*block;
            // Equal hashes inside the block: compare those keys exactly.
            let mut i = 0usize;
            while i < block.len() {
                let h = block.get(i).map_or(0, |e| e >> 32);
                let mut j = i.saturating_add(1);
                while block.get(j).is_some_and(|e| e >> 32 == h) {
                    j += 1;
                }
                for a in i..j {
                    for b in a.saturating_add(1)..j {
                        let (ka, kb) = (self.key(block, a), self.key(block, b));
                        if let (Some(ka), Some(kb)) = (ka, kb) {
                            if ka.cmp(&kb) == Ordering::Equal {
                                let later = if quote_at(self.text, &ka) > quote_at(self.text, &kb) {
                                    ka
                                } else {
                                    kb
                                };
                                return Err(duplicate(self.text, &later));
                            }
                        }
                    }
                }
                i = j;
            }
            // Every later key against the block.
            while let Some(k) = sc.next_key(&obj)? {
                let h = u64::from(hash(&k));
                let mut at = lower_bound(block, h << 32);
                while block.get(at).is_some_and(|e| e >> 32 == h) {
                    if self
                        .key(block, at)
                        .is_some_and(|b| b.cmp(&k) == Ordering::Equal)
                    {
                        return Err(duplicate(self.text, &k));
                    }
                    at += 1;
                }
            }
            first = first.saturating_add(n.max(1));
        }
        Ok(())
    }

    /// The key of table entry `i`.
    fn key(&self, table: &[u64], i: usize) -> Option<JsonStr<'a>> {
        let off = table.get(i)? & 0xFFFF_FFFF;
        key_at(self.text, self.object_at.checked_add(off as usize)?)
    }
}

/// Checks that the object at byte `object_at` of `text` has no key twice (see
/// [`UniqueKeys`]); the object is also fully checked against the grammar.
pub fn check_unique_keys(text: &str, object_at: usize) -> JsonResult<()> {
    let mut sc = Scanner::starting_at(text, object_at);
    let obj = sc.object()?;
    let mut keys = UniqueKeys::new(&sc, object_at);
    while let Some(k) = sc.next_key(&obj)? {
        keys.push(&sc, k)?;
    }
    keys.finish()
}

/// FNV-1a of the decoded bytes (equal strings, however escaped, hash the same).
fn hash(s: &JsonStr) -> u32 {
    let mut h = 0x811c_9dc5u32;
    let mut mix = |b: u8| {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    };
    if s.escaped {
        s.bytes().for_each(&mut mix);
    } else {
        s.raw.bytes().for_each(&mut mix);
    }
    h
}

/// First index whose value is `>= x` in the sorted `v`.
fn lower_bound(v: &[u64], x: u64) -> usize {
    let (mut lo, mut hi) = (0usize, v.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if v.get(mid).is_some_and(|&m| m < x) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// In-place heapsort: O(n log n), no allocation, no recursion, and (unlike the
/// slice sorts of `core`) no panic path to link into firmware.
pub(crate) fn heapsort<T: Ord + Copy>(v: &mut [T]) {
    let n = v.len();
    let mut start = n / 2;
    while start > 0 {
        start -= 1;
        sift_down(v, start, n);
    }
    let mut end = n;
    while end > 1 {
        end -= 1;
        swap(v, 0, end);
        sift_down(v, 0, end);
    }
}

fn swap<T: Copy>(v: &mut [T], i: usize, j: usize) {
    let (Some(&a), Some(&b)) = (v.get(i), v.get(j)) else {
        return;
    };
    if let Some(x) = v.get_mut(i) {
        *x = b;
    }
    if let Some(x) = v.get_mut(j) {
        *x = a;
    }
}

/// Restores the max-heap property below `root`, within `v[..end]`.
fn sift_down<T: Ord + Copy>(v: &mut [T], mut root: usize, end: usize) {
    loop {
        let Some(mut child) = root.checked_mul(2).and_then(|c| c.checked_add(1)) else {
            return;
        };
        if child >= end {
            return;
        }
        let right = child.saturating_add(1);
        if right < end && v.get(child) < v.get(right) {
            child = right;
        }
        if v.get(root) >= v.get(child) {
            return;
        }
        swap(v, root, child);
        root = child;
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::{String, ToString};
    use std::vec::Vec;
    use std::{format, vec};

    fn kind_of(r: JsonResult<()>) -> Option<ErrorKind> {
        r.err().map(|e| e.kind)
    }

    #[test]
    fn grammar_accepts_rfc_8259() {
        for ok in [
            "0",
            "-0",
            "-0.0e+0",
            "1E9",
            "123456789012345678901234567890",
            "\"\"",
            "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\"",
            "\"\u{e9}\u{1f600}\"",
            "true",
            "false",
            "null",
            "[]",
            "{}",
            " \t\r\n[ 1 , [ ] , { } , \"a\" , { \"k\" : [ null ] } ] \n",
            "{\"a\":{\"b\":{\"c\":[1,2,{\"d\":true}]}}}",
        ] {
            assert_eq!(validate(ok), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn grammar_rejects_with_kind_and_offset() {
        use ErrorKind::*;
        let cases: &[(&str, ErrorKind, usize)] = &[
            ("", UnexpectedEnd, 0),
            ("   ", UnexpectedEnd, 3),
            ("{", ExpectedString, 1),
            ("[", UnexpectedEnd, 1),
            ("[1", ExpectedCommaOrBracket, 2),
            ("{\"a\"}", ExpectedColon, 4),
            ("{\"a\":}", UnexpectedChar, 5),
            ("{,}", ExpectedString, 1),
            ("{\"a\":1,}", ExpectedString, 7),
            ("[1,]", UnexpectedChar, 3),
            ("[1 2]", ExpectedCommaOrBracket, 3),
            ("{\"a\":1 \"b\":2}", ExpectedCommaOrBrace, 7),
            ("01", Trailing, 1),
            ("1.", BadNumber, 0),
            ("-", BadNumber, 0),
            ("1e", BadNumber, 0),
            ("1e+", BadNumber, 0),
            (".5", UnexpectedChar, 0),
            ("+1", UnexpectedChar, 0),
            ("NaN", UnexpectedChar, 0),
            ("tru", UnexpectedChar, 0),
            ("nul", UnexpectedChar, 0),
            ("\"abc", UnterminatedString, 1),
            ("\"\\q\"", BadEscape, 1),
            ("\"\\u12\"", BadEscape, 1),
            ("\"\\ud800\"", BadEscape, 1),
            ("\"\\udc00\"", BadEscape, 1),
            ("\"\\ud800\\u0041\"", BadEscape, 1),
            ("\"a\tb\"", ControlChar, 2),
            ("{} {}", Trailing, 3),
            ("[] x", Trailing, 3),
            ("'a'", UnexpectedChar, 0),
            ("[1,/*c*/2]", UnexpectedChar, 3),
        ];
        for &(text, kind, at) in cases {
            assert_eq!(validate(text), Err(JsonError { kind, at }), "{text:?}");
        }
    }

    #[test]
    fn nesting_is_limited_without_recursion() {
        // At the limit: fine; one more: TooDeep at the container that passes it.
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(validate(&ok), Ok(()));
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(
            validate(&deep),
            Err(JsonError {
                kind: ErrorKind::TooDeep,
                at: MAX_DEPTH
            })
        );
        // Far deeper than any stack: still just an error.
        let huge = format!("{}{}", "[{\"a\":".repeat(50_000), "1}]".repeat(50_000));
        assert_eq!(kind_of(validate(&huge)), Some(ErrorKind::TooDeep));
        // Other limits: 0 allows scalars only, 64 is the most.
        assert_eq!(Scanner::new("1").with_max_depth(0).finish(), Ok(()));
        assert_eq!(
            kind_of(Scanner::new("[]").with_max_depth(0).finish()),
            Some(ErrorKind::TooDeep)
        );
        let s64 = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert_eq!(Scanner::new(&s64).with_max_depth(1000).finish(), Ok(()));
        let s65 = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert_eq!(
            kind_of(Scanner::new(&s65).with_max_depth(1000).finish()),
            Some(ErrorKind::TooDeep)
        );
    }

    /// A config.json-like text, read through the cursor the way a config parser does.
    #[test]
    fn cursor_reads_a_config_json() {
        let text = r#"{
            "architectures": ["DeepseekV3ForCausalLM"],
            "hidden_size": 7168, "rms_norm_eps": 1e-06, "rope_theta": 10000,
            "attention_bias": false, "sliding_window": null,
            "rope_scaling": {"beta_fast": 32, "factor": 40, "mscale": 1.0, "type": "yarn"},
            "text_config": {"rope_parameters": {"rope_theta": 5e5, "nested": [[1], {"x": []}]},
                            "layer_types": ["full_attention", "sliding_attention"]},
            "kv_source_layers": [0, 0, 2, -1],
            "unused": {"deep": [[[[{"k": "\u00e9"}]]]]}
        }"#;
        let mut sc = Scanner::new(text);
        let top = sc.object().unwrap();
        let mut seen = Vec::new();
        while let Some(k) = sc.next_key(&top).unwrap() {
            seen.push(k.raw().to_string());
            match k.raw() {
                "hidden_size" => assert_eq!(sc.u64(), Ok(7168)),
                "rms_norm_eps" => assert_eq!(sc.f64(), Ok(1e-6)),
                "rope_theta" => {
                    let n = sc.number().unwrap();
                    assert!(n.is_integer());
                    assert_eq!((n.as_f64(), n.as_u64()), (Some(10000.0), Some(10000)));
                }
                "attention_bias" => assert_eq!(sc.bool(), Ok(false)),
                "sliding_window" => {
                    assert_eq!(sc.peek(), Ok(Kind::Null));
                    assert_eq!(sc.eat_null(), Ok(true));
                }
                "rope_scaling" => {
                    let o = sc.object().unwrap();
                    let mut factor = 0.0;
                    while let Some(k) = sc.next_key(&o).unwrap() {
                        if k == "factor" {
                            assert_eq!(sc.eat_null(), Ok(false));
                            factor = sc.f32().unwrap();
                        } else if k == "type" {
                            assert_eq!(sc.string().unwrap().as_str(), Some("yarn"));
                        } // beta_fast, mscale: skipped by next_key
                    }
                    assert_eq!(factor, 40.0);
                }
                "text_config" => {
                    let o = sc.object().unwrap();
                    while let Some(k) = sc.next_key(&o).unwrap() {
                        if k == "rope_parameters" {
                            // Opened and abandoned half read: the outer next_key finishes it.
                            let inner = sc.object().unwrap();
                            assert!(sc.next_key(&inner).unwrap().unwrap() == "rope_theta");
                            assert_eq!(sc.f64(), Ok(5e5));
                        } else {
                            let a = sc.array().unwrap();
                            let mut types = Vec::new();
                            while sc.next_item(&a).unwrap() {
                                types.push(sc.string().unwrap().raw().to_string());
                            }
                            assert_eq!(types, ["full_attention", "sliding_attention"]);
                        }
                    }
                }
                "kv_source_layers" => {
                    let a = sc.array().unwrap();
                    let mut v = Vec::new();
                    while sc.next_item(&a).unwrap() {
                        v.push(sc.i64().unwrap());
                    }
                    assert_eq!(v, [0, 0, 2, -1]);
                }
                _ => {
                    let r = sc.skip().unwrap();
                    assert!(text[r].starts_with(['[', '{']));
                }
            }
        }
        assert_eq!(sc.finish(), Ok(()));
        assert_eq!(sc.depth(), 0);
        assert_eq!(seen.len(), 10);
    }

    #[test]
    fn typed_reads_report_the_kind_found() {
        use ErrorKind::*;
        let mut sc = Scanner::new("[\"s\", 1.5, -2, true, {}, 18446744073709551616, 1e400, x]");
        let a = sc.array().unwrap();
        assert!(sc.next_item(&a).unwrap());
        assert_eq!(sc.u64().unwrap_err().kind, ExpectedUnsigned);
        assert_eq!(sc.bool().unwrap_err().kind, ExpectedBool);
        assert_eq!(sc.object().unwrap_err().kind, ExpectedObject);
        assert_eq!(sc.array().unwrap_err().kind, ExpectedArray);
        assert_eq!(sc.null().unwrap_err().kind, ExpectedNull);
        assert_eq!(sc.number().unwrap_err().kind, ExpectedNumber);
        assert_eq!(sc.string().unwrap().raw(), "s");
        // Two reads of one value: the second finds no value.
        assert_eq!(sc.string().unwrap_err().kind, NotAtValue);
        assert!(sc.next_item(&a).unwrap());
        assert_eq!(
            sc.u64().unwrap_err(),
            JsonError {
                kind: ExpectedUnsigned,
                at: 6
            }
        );
        assert!(sc.next_item(&a).unwrap());
        assert_eq!(sc.u64().unwrap_err().kind, ExpectedUnsigned);
        assert!(sc.next_item(&a).unwrap());
        assert_eq!(sc.string().unwrap_err().kind, ExpectedString);
        assert_eq!(sc.bool(), Ok(true));
        assert!(sc.next_item(&a).unwrap());
        assert_eq!(sc.string().unwrap_err().kind, ExpectedString);
        assert!(sc.next_item(&a).unwrap());
        assert_eq!(sc.u64().unwrap_err().kind, IntegerTooLarge);
        assert!(sc.next_item(&a).unwrap());
        assert_eq!(sc.f64().unwrap_err().kind, FloatTooLarge);
        assert!(sc.next_item(&a).unwrap());
        assert_eq!(sc.peek().unwrap_err().kind, UnexpectedChar);
        assert_eq!(sc.u64().unwrap_err().kind, UnexpectedChar);
    }

    #[test]
    fn numbers_convert_exactly() {
        let n = |t: &'static str| {
            let mut sc = Scanner::new(t);
            let v = sc.number().unwrap();
            sc.finish().unwrap();
            v
        };
        assert_eq!(n("18446744073709551615").as_u64(), Some(u64::MAX));
        assert_eq!(n("18446744073709551616").as_u64(), None);
        assert_eq!(n("0").as_u64(), Some(0));
        assert_eq!(n("-0").as_u64(), None);
        assert_eq!(n("1.0").as_u64(), None);
        assert_eq!(n("1e2").as_u64(), None);
        assert_eq!(n("-9223372036854775808").as_i64(), Some(i64::MIN));
        assert_eq!(n("-9223372036854775809").as_i64(), None);
        assert_eq!(n("9223372036854775807").as_i64(), Some(i64::MAX));
        assert_eq!(n("9223372036854775808").as_i64(), None);
        assert_eq!(n("-0").as_i64(), Some(0));
        // Correct rounding, both widths (0.1 + 2^-55 style halfway cases).
        assert_eq!(n("0.1").as_f64(), Some(0.1));
        assert_eq!(n("1e-06").as_f32(), Some(1e-6f32));
        assert_eq!(n("9007199254740993").as_f64(), Some(9007199254740992.0));
        assert_eq!(n("16777217").as_f32(), Some(16777216.0));
        // Straight to f32, not through f64 (double rounding would give 1.0000001).
        assert_eq!(
            n("1.00000005960464477539062500001").as_f32(),
            Some(1.0000001)
        );
        assert_eq!(n("1.000000059604644775390625").as_f32(), Some(1.0));
        assert_eq!(n("1.7976931348623157e308").as_f64(), Some(f64::MAX));
        assert_eq!(n("1.8e308").as_f64(), None);
        assert_eq!(n("3.5e38").as_f32(), None);
        assert_eq!(n("1e-400").as_f64(), Some(0.0));
        assert_eq!(n("-2.5E+3").as_f64(), Some(-2500.0));
        // Past 40 significant digits: refused with its own kind.
        let long = "1.00000000000000000000000000000000000000001";
        assert_eq!(n(long).as_f64(), None);
        let mut sc = Scanner::new(long);
        assert_eq!(sc.f64().unwrap_err().kind, ErrorKind::FloatTooLong);
        let mut sc = Scanner::new("1e400");
        assert_eq!(sc.f32().unwrap_err().kind, ErrorKind::FloatTooLarge);
    }

    #[test]
    fn strings_decode_compare_and_hash_alike() {
        let s = |t: &'static str| {
            let mut sc = Scanner::new(t);
            let v = sc.string().unwrap();
            sc.finish().unwrap();
            v
        };
        let plain = s("\"model.x\u{e9}\"");
        let esc = s("\"model\\u002ex\\u00E9\"");
        assert_eq!(plain.as_str(), Some("model.x\u{e9}"));
        assert_eq!(esc.as_str(), None);
        assert_eq!(esc.raw(), "model\\u002ex\\u00E9");
        assert!(esc.has_escapes() && !plain.has_escapes());
        assert_eq!(esc.chars().collect::<String>(), "model.x\u{e9}");
        assert!(esc == plain && esc == "model.x\u{e9}");
        assert_eq!(esc.decoded_len(), plain.decoded_len());
        assert_eq!(esc.decoded_len(), 9);
        assert_eq!(hash(&esc), hash(&plain));
        assert!(esc.eq_parts(&["mod", "el.", "x\u{e9}"]) && !esc.eq_parts(&["model."]));
        assert!(esc.starts_with("model.") && !esc.starts_with("model.y"));
        assert!(esc.ends_with(".x\u{e9}") && !esc.ends_with("xx\u{e9}"));
        assert!(!esc.ends_with("a very long suffix, longer than the string"));
        let pair = s("\"\\ud83d\\ude00\\n\\\"\"");
        assert_eq!(pair.chars().collect::<String>(), "\u{1f600}\n\"");
        assert_eq!(
            pair.bytes().collect::<Vec<u8>>(),
            "\u{1f600}\n\"".as_bytes()
        );
        // Order: bytes of the decoded strings, like str.
        let words = ["", "a", "a\u{e9}", "ab", "b", "\u{e9}", "\u{1f600}"];
        for a in words {
            for b in words {
                let (ja, jb) = (json_string_of(a), json_string_of(b));
                let (mut sa, mut sb) = (Scanner::new(&ja), Scanner::new(&jb));
                let (xa, xb) = (sa.string().unwrap(), sb.string().unwrap());
                assert_eq!(xa.cmp(&xb), a.cmp(b), "{a:?} {b:?}");
                assert_eq!(xa.cmp(&plain_of(b)), a.cmp(b));
            }
        }
    }

    /// `s` as a JSON string with every character escaped as `\uXXXX`.
    fn json_string_of(s: &str) -> String {
        let mut out = String::from("\"");
        for u in s.encode_utf16() {
            out.push_str(&format!("\\u{u:04x}"));
        }
        out.push('"');
        out
    }

    fn plain_of(s: &str) -> JsonStr<'_> {
        JsonStr {
            raw: s,
            escaped: false,
        }
    }

    #[test]
    fn utf8_matches_core() {
        for c in [
            '\0',
            'a',
            '\u{7f}',
            '\u{80}',
            '\u{e9}',
            '\u{7ff}',
            '\u{800}',
            '\u{ffff}',
            '\u{10000}',
            '\u{1f600}',
            '\u{10ffff}',
        ] {
            let mut want = [0u8; 4];
            let w = c.encode_utf8(&mut want).len();
            assert_eq!(utf8(c), (want, w), "{c:?}");
        }
    }

    #[test]
    fn skip_returns_the_span_and_settles() {
        let text = " {\"a\": [1, {\"b\": \"]}\"}], \"c\": 2} ";
        let mut sc = Scanner::new(text);
        assert_eq!(sc.skip(), Ok(1..text.len() - 1));
        assert_eq!(sc.finish(), Ok(()));
        // An unread member value and a half-read array are finished by next_key.
        let mut sc = Scanner::new(text);
        let o = sc.object().unwrap();
        assert!(sc.next_key(&o).unwrap().unwrap() == "a");
        let a = sc.array().unwrap();
        assert!(sc.next_item(&a).unwrap());
        assert!(sc.next_key(&o).unwrap().unwrap() == "c");
        assert_eq!(sc.next_key(&o), Ok(None));
        assert_eq!(sc.next_key(&o), Ok(None));
        // The finished array's token reports its end too.
        assert_eq!(sc.next_item(&a), Ok(false));
        assert_eq!(sc.finish(), Ok(()));
        // finish() on a half-read text checks the rest.
        let mut sc = Scanner::new("[1, [2, 3], {\"x\": [}]");
        let a = sc.array().unwrap();
        assert!(sc.next_item(&a).unwrap());
        assert_eq!(kind_of(sc.finish()), Some(ErrorKind::UnexpectedChar));
        // A value inside a larger text.
        let text = "xx [1, 2] yy";
        let mut sc = Scanner::starting_at(text, 2);
        assert_eq!(sc.skip(), Ok(3..9));
        assert_eq!(
            sc.finish(),
            Err(JsonError {
                kind: ErrorKind::Trailing,
                at: 10
            })
        );
    }

    fn dups(text: &str) -> JsonResult<()> {
        check_unique_keys(text, 0)
    }

    fn dup_at(key_at: usize) -> JsonResult<()> {
        Err(JsonError {
            kind: ErrorKind::DuplicateKey,
            at: key_at,
        })
    }

    #[test]
    fn duplicate_keys_in_every_order() {
        assert_eq!(dups("{}"), Ok(()));
        assert_eq!(dups("{\"a\":1,\"b\":{\"a\":1,\"a\":2},\"c\":3}"), Ok(()));
        // Adjacent, in an ascending run: found on push.
        assert_eq!(dups("{\"a\":1,\"a\":2}"), dup_at(7));
        // Two runs (merge): "b" in both.
        let t = "{\"a\":1,\"b\":2,\"c\":3,\"b\":4,\"d\":5}";
        assert_eq!(dups(t), dup_at(t.rfind("\"b\"").unwrap()));
        // Equal only after decoding.
        let t = "{\"x\":1,\"y\":2,\"\\u0078\":3}";
        assert_eq!(dups(t), dup_at(13));
        // Descending: every key its own run (blocked check).
        let keys: Vec<String> = (0..40).rev().map(|i| format!("\"k{i:02}\":{i}")).collect();
        let t = format!("{{{}}}", keys.join(","));
        assert_eq!(dups(&t), Ok(()));
        let t = format!("{{{},\"k17\":0}}", keys.join(","));
        assert_eq!(dups(&t), dup_at(t.rfind("\"k17\"").unwrap()));
        let t = format!("{{\"k05\":[],{}}}", keys.join(","));
        assert_eq!(dups(&t), dup_at(t.rfind("\"k05\"").unwrap()));
        // Runs up to the merge limit, then one more (blocked), both with a duplicate
        // between the first and the last run.
        for runs in [MAX_KEY_RUNS, MAX_KEY_RUNS + 1] {
            let mut parts = Vec::new();
            for r in 0..runs {
                for k in 0..3 {
                    parts.push(format!("\"r{}_{k}\":0", runs - r));
                }
            }
            let ok = format!("{{{}}}", parts.join(","));
            assert_eq!(dups(&ok), Ok(()), "{runs} runs");
            let bad = format!("{{{},\"r{runs}_1\":0}}", parts.join(","));
            assert_eq!(
                dups(&bad),
                dup_at(bad.rfind(&format!("\"r{runs}_1\"")).unwrap()),
                "{runs} runs"
            );
        }
    }

    #[test]
    #[cfg_attr(miri, ignore)] // tens of thousands of keys
    fn duplicate_keys_across_blocks_and_the_limit() {
        // Unsorted keys over several blocks: a duplicate in the last block of a key
        // from the first, and one inside a block.
        let n = 3 * KEY_BLOCK + 5;
        let name = |i: usize| format!("t{}", (i * 7919) % n);
        let keys: Vec<String> = (0..n).map(|i| format!("\"{}\":[]", name(i))).collect();
        let ok = format!("{{{}}}", keys.join(","));
        let mut uk = None;
        let mut sc = Scanner::new(&ok);
        let o = sc.object().unwrap();
        while let Some(k) = sc.next_key(&o).unwrap() {
            uk.get_or_insert_with(|| UniqueKeys::new(&sc, 0))
                .push(&sc, k)
                .unwrap();
        }
        let uk = uk.unwrap();
        assert!(uk.runs() > MAX_KEY_RUNS && uk.len() == n);
        assert_eq!(uk.finish(), Ok(()));
        let bad = format!("{{{},\"{}\":1}}", keys.join(","), name(3));
        assert_eq!(dups(&bad), dup_at(bad.len() - 5 - name(3).len()));
        let mut two = keys.clone();
        two[KEY_BLOCK + 10] = format!("\"{}\":2", name(KEY_BLOCK + 3));
        let bad = format!("{{{}}}", two.join(","));
        let at = bad
            .find(&format!(",\"{}\":2", name(KEY_BLOCK + 3)))
            .unwrap()
            + 1;
        assert_eq!(dups(&bad), dup_at(at));
        // Past the limit: refused rather than slow.
        let n = MAX_UNSORTED_KEYS + 1;
        let keys: Vec<String> = (0..n).rev().map(|i| format!("\"{i:06}\":0")).collect();
        let big = format!("{{{}}}", keys.join(","));
        assert_eq!(
            dups(&big),
            Err(JsonError {
                kind: ErrorKind::TooManyUnsortedKeys,
                at: 0
            })
        );
    }

    #[test]
    fn heapsort_sorts() {
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        for n in [0usize, 1, 2, 3, 7, 64, 1000] {
            let mut v: Vec<(u64, u64)> = (0..n)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    (s % 50, s % 7)
                })
                .collect();
            let mut want = v.clone();
            want.sort();
            heapsort(&mut v);
            assert_eq!(v, want, "n = {n}");
        }
        let mut v = vec![3u64; 10];
        heapsort(&mut v);
        assert_eq!(v, [3; 10]);
    }

    #[test]
    fn errors_convert_with_context() {
        let e = validate("[1,]").unwrap_err();
        let status = e.to_error("config.json");
        assert_eq!(status.status(), Status::InvalidArgument);
        assert_eq!(
            status.message(),
            "config.json: unexpected character at byte 3"
        );
        assert_eq!(
            Error::from(e).message(),
            "JSON: unexpected character at byte 3"
        );
        assert_eq!(key_at("{\"ab\":1}", 1).unwrap().raw(), "ab");
        assert!(key_at("{\"ab\":1}", 0).is_none());
    }
}
