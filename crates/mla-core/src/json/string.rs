//! Strings: [`JsonStr`], a validated string borrowed from the text, and its decoders.

use core::cmp::Ordering;

/// A validated JSON string, borrowed from the text: the characters between the
/// quotes, escapes not yet decoded. Comparisons and [`JsonStr::chars`] decode.
#[derive(Clone, Copy, Debug)]
pub struct JsonStr<'a> {
    pub(super) raw: &'a str,
    pub(super) escaped: bool,
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
pub(super) fn decode_escape(raw: &[u8], i: usize) -> Option<(char, usize)> {
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
