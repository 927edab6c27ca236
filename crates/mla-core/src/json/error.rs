//! Errors: [`ErrorKind`], [`JsonError`] and their conversion to the crate's [`Error`].

use crate::status::Piece::{N, S};
use crate::status::{Error, Status};

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
    /// ([`MAX_UNSORTED_KEYS`](super::MAX_UNSORTED_KEYS),
    /// [`MAX_UNSORTED_BYTES`](super::MAX_UNSORTED_BYTES)).
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
    /// opening quote of the second occurrence; [`key_at`](super::key_at) reads it back).
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
