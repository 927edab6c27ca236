//! The JSON scanner alone (mla_core::json), on arbitrary text (first
//! byte even) and on valid JSON generated from the input (first byte odd: nesting,
//! escapes, numbers of every form, objects with repeated and escaped-equal keys).
//!
//! Checked: nothing panics or loops; `validate` and a full walk with the typed
//! readers agree; `skip` of the top-level value ends where the walk ends; every
//! generated text is accepted; numbers convert as `str::parse` does; decoded
//! strings compare, hash-free, as the std strings they decode to; and the duplicate
//! key check (`UniqueKeys`) agrees with a HashSet on every object.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mla_core::json::{
    self, Array, ErrorKind, JsonError, JsonStr, Kind, Object, Scanner, UniqueKeys, MAX_DEPTH,
};
use std::collections::HashSet;

enum Frame<'a> {
    Obj {
        obj: Object,
        keys: Box<UniqueKeys<'a>>,
        names: Vec<String>,
        /// The position of a duplicate reported by `push`.
        early: Option<usize>,
    },
    Arr(Array),
}

/// Consistency of one decoded string with its std form.
fn check_str(s: &JsonStr, text: &str) {
    let decoded: String = s.chars().collect();
    assert!(s.eq_str(&decoded));
    assert_eq!(s.decoded_len(), decoded.len());
    assert_eq!(s.bytes().collect::<Vec<u8>>(), decoded.as_bytes());
    assert_eq!(s.as_str().is_some(), !s.has_escapes());
    if let Some(p) = s.as_str() {
        assert_eq!(p, decoded);
    }
    let half = decoded.char_indices().nth(decoded.chars().count() / 2);
    if let Some((i, _)) = half {
        assert!(s.starts_with(&decoded[..i]));
        assert!(s.ends_with(&decoded[i..]));
        assert!(s.eq_parts(&[&decoded[..i], &decoded[i..]]));
    }
    assert!(s.raw().len() <= text.len());
}

fn check_number(n: &json::Number) {
    let t = n.text();
    if n.is_integer() {
        assert_eq!(
            n.as_u64(),
            t.parse::<u64>().ok().filter(|_| !t.starts_with('-'))
        );
        assert_eq!(n.as_i64(), t.parse::<i64>().ok());
    } else {
        assert_eq!(n.as_u64(), None);
        assert_eq!(n.as_i64(), None);
    }
    // The crate's own conversion (exact, panic-free) against core's, up to its
    // limit of 40 significant digits.
    let f = t.parse::<f64>().expect("a JSON number parses as f64");
    let g = t.parse::<f32>().expect("a JSON number parses as f32");
    if significant_digits(t) > 40 {
        assert_eq!(n.as_f64(), None);
        assert_eq!(n.as_f32(), None);
    } else {
        assert_eq!(n.as_f64(), Some(f).filter(|v| v.is_finite()));
        assert_eq!(n.as_f32(), Some(g).filter(|v| v.is_finite()));
    }
}

/// Digits from the first to the last nonzero digit of the significand.
fn significant_digits(t: &str) -> usize {
    let mant = t.split(['e', 'E']).next().unwrap_or("");
    let digits: Vec<u8> = mant.bytes().filter(u8::is_ascii_digit).collect();
    match (
        digits.iter().position(|&d| d != b'0'),
        digits.iter().rposition(|&d| d != b'0'),
    ) {
        (Some(a), Some(b)) => b - a + 1,
        _ => 0,
    }
}

/// Reads the value at the cursor with the typed reader of its kind; a container is
/// opened and pushed.
fn read_value<'a>(sc: &mut Scanner<'a>, stack: &mut Vec<Frame<'a>>) -> Result<(), JsonError> {
    match sc.peek()? {
        Kind::Object => {
            let obj = sc.object()?;
            let at = sc.position() - 1;
            assert_eq!(&sc.text()[at..at + 1], "{");
            let keys = Box::new(UniqueKeys::new(sc, at));
            stack.push(Frame::Obj {
                obj,
                keys,
                names: Vec::new(),
                early: None,
            });
        }
        Kind::Array => stack.push(Frame::Arr(sc.array()?)),
        Kind::String => {
            let s = sc.string()?;
            check_str(&s, sc.text());
        }
        Kind::Number => {
            let n = sc.number()?;
            check_number(&n);
        }
        Kind::Bool => {
            sc.bool()?;
        }
        Kind::Null => {
            assert!(sc.eat_null()?);
        }
    }
    assert!(stack.len() <= MAX_DEPTH);
    Ok(())
}

/// Checks the duplicate verdict of a finished object against a HashSet.
fn check_keys(text: &str, keys: &UniqueKeys, names: &[String], early: Option<usize>) {
    let mut seen = HashSet::new();
    let naive_dup = names.iter().position(|n| !seen.insert(n.as_str()));
    let verdict = match early {
        Some(at) => Err(JsonError {
            kind: ErrorKind::DuplicateKey,
            at,
        }),
        None => keys.finish(),
    };
    match verdict {
        Ok(()) => assert!(naive_dup.is_none(), "missed a duplicate key"),
        Err(e) if e.kind == ErrorKind::DuplicateKey => {
            assert!(naive_dup.is_some(), "a duplicate that is not");
            let k = json::key_at(text, e.at).expect("the duplicate's key");
            let k: String = k.chars().collect();
            assert!(names.iter().filter(|n| **n == k).count() >= 2);
        }
        Err(e) if e.kind == ErrorKind::TooManyUnsortedKeys => {
            assert!(keys.len() > json::MAX_UNSORTED_KEYS);
        }
        Err(e) => panic!("unexpected {e:?}"),
    }
}

/// Walks the whole text with the cursor API; returns where the value ended.
fn walk(text: &str) -> Result<usize, JsonError> {
    let mut sc = Scanner::new(text);
    let mut stack: Vec<Frame> = Vec::new();
    read_value(&mut sc, &mut stack)?;
    while let Some(top) = stack.last_mut() {
        match top {
            Frame::Obj {
                obj,
                keys,
                names,
                early,
            } => match sc.next_key(obj)? {
                Some(k) => {
                    check_str(&k, text);
                    if early.is_none() {
                        if let Err(e) = keys.push(&sc, k) {
                            assert_eq!(e.kind, ErrorKind::DuplicateKey);
                            *early = Some(e.at);
                        }
                    }
                    names.push(k.chars().collect());
                    read_value(&mut sc, &mut stack)?;
                }
                None => {
                    if let Some(Frame::Obj {
                        keys, names, early, ..
                    }) = stack.pop()
                    {
                        check_keys(text, &keys, &names, early);
                    }
                }
            },
            Frame::Arr(arr) => {
                if sc.next_item(arr)? {
                    read_value(&mut sc, &mut stack)?;
                } else {
                    stack.pop();
                }
            }
        }
    }
    let end = sc.position();
    sc.finish()?;
    Ok(end)
}

fn check(text: &str) -> bool {
    let valid = json::validate(text);
    let walked = walk(text);
    assert_eq!(valid.is_ok(), walked.is_ok(), "{valid:?} vs {walked:?}");
    let mut sc = Scanner::new(text);
    match (sc.skip(), walked) {
        (Ok(span), Ok(end)) => assert_eq!(span.end, end),
        (Err(_), Ok(_)) => panic!("skip refused what the walk read"),
        _ => {}
    }
    valid.is_ok()
}

// ---------------------------------------------------------------------------------
// Valid JSON from bytes
// ---------------------------------------------------------------------------------

struct Gen<'a> {
    bytes: &'a [u8],
    out: String,
}

const KEYS: [&str; 10] = [
    "\"a\"",
    "\"b\"",
    "\"\\u0061\"",
    "\"text_config\"",
    "\"\u{e9}\"",
    "\"\\u00e9\"",
    "\"\\ud83d\\ude00\"",
    "\"\u{1f600}\"",
    "\"k\\n\\\"\\\\\"",
    "\"\"",
];

impl Gen<'_> {
    fn byte(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((&b, rest)) => {
                self.bytes = rest;
                b
            }
            None => 0,
        }
    }

    fn ws(&mut self) {
        let b = self.byte();
        self.out
            .push_str([" ", "", "\n", "", "\t ", "", "\r\n", ""][(b % 8) as usize]);
    }

    fn digits(&mut self, n: u8) {
        for _ in 0..n {
            let d = self.byte() % 10;
            self.out.push((b'0' + d) as char);
        }
    }

    fn number(&mut self) {
        let b = self.byte();
        if b & 1 != 0 {
            self.out.push('-');
        }
        let len = self.byte() % 24;
        if len == 0 || b & 2 != 0 {
            self.out.push('0');
        } else {
            let lead = b'1' + self.byte() % 9;
            self.out.push(lead as char);
            self.digits(len - 1);
        }
        if b & 4 != 0 {
            self.out.push('.');
            let n = 1 + self.byte() % 20;
            self.digits(n);
        }
        if b & 8 != 0 {
            self.out.push(if b & 16 != 0 { 'e' } else { 'E' });
            match b >> 5 & 3 {
                0 => self.out.push('+'),
                1 => self.out.push('-'),
                _ => {}
            }
            let n = 1 + self.byte() % 4;
            self.digits(n);
        }
    }

    fn string(&mut self) {
        let n = self.byte() % 6;
        self.out.push('"');
        for _ in 0..n {
            let b = self.byte();
            let piece = match b % 12 {
                0 => "\\\"",
                1 => "\\\\",
                2 => "\\/",
                3 => "\\b\\f\\n\\r\\t",
                4 => "\\u0041",
                5 => "\\uD834\\uDD1E",
                6 => "\u{e9}",
                7 => "\u{10ffff}",
                8 => "x",
                9 => "\\u0000",
                10 => "}]",
                _ => ",:",
            };
            self.out.push_str(piece);
        }
        self.out.push('"');
    }

    fn value(&mut self, depth: usize) {
        self.ws();
        let b = self.byte();
        let container = depth < MAX_DEPTH && !self.bytes.is_empty();
        match b % 8 {
            0 | 1 if container => {
                let object = b & 1 == 0;
                self.out.push(if object { '{' } else { '[' });
                let n = self.byte() % 6;
                for i in 0..n {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.ws();
                    if object {
                        let k = self.byte() as usize % KEYS.len();
                        self.out.push_str(KEYS[k]);
                        self.ws();
                        self.out.push(':');
                    }
                    self.value(depth + 1);
                    self.ws();
                }
                self.out.push(if object { '}' } else { ']' });
            }
            2 | 3 => self.number(),
            4 => self.string(),
            5 => self.out.push_str("true"),
            6 => self.out.push_str("false"),
            _ => self.out.push_str("null"),
        }
        self.ws();
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let text = match std::str::from_utf8(rest) {
            Ok(t) => t,
            Err(e) => std::str::from_utf8(&rest[..e.valid_up_to()]).unwrap(),
        };
        check(text);
    } else {
        let mut g = Gen {
            bytes: rest,
            out: String::new(),
        };
        g.value(0);
        assert!(check(&g.out), "generated JSON refused: {}", g.out);
        // The same, nested deeper than the limit: refused, not crashed.
        let deep = format!(
            "{}{}{}",
            "[".repeat(MAX_DEPTH),
            g.out,
            "]".repeat(MAX_DEPTH)
        );
        if !check(&deep) {
            assert_eq!(json::validate(&deep).unwrap_err().kind, ErrorKind::TooDeep);
        }
    }
});
