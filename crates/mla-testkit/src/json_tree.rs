//! A JSON value tree for tests ([`Json`]), read with mla-core's scanner (the
//! repository's one JSON reader): expected.json, golden metadata, configs to edit.

use mla_core::json::{Kind, Scanner};

/// A JSON value. Objects keep their key order.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A number (as f64) with its text.
    Num(f64, String),
    /// A string.
    Str(String),
    /// A list.
    Arr(Vec<Json>),
    /// An object.
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// Parses `text` (panics on malformed JSON: a test helper).
    pub fn parse(text: &str) -> Json {
        let mut sc = Scanner::new(text).with_max_depth(64);
        let v = read(&mut sc);
        sc.finish().expect("one JSON value");
        v
    }

    /// The member `key` of an object (`None` if absent or not an object).
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// `self[key]`, panicking with the key when absent.
    pub fn at(&self, key: &str) -> &Json {
        self.get(key)
            .unwrap_or_else(|| panic!("no key {key:?} in {}", self.to_string_short()))
    }

    /// The number (panics otherwise).
    pub fn f64(&self) -> f64 {
        match self {
            Json::Num(v, _) => *v,
            other => panic!("not a number: {other:?}"),
        }
    }

    /// The number as u64 (panics unless a non-negative integer).
    pub fn u64(&self) -> u64 {
        let v = self.f64();
        assert!(v >= 0.0 && v.fract() == 0.0, "not a u64: {v}");
        v as u64
    }

    /// The string (panics otherwise).
    pub fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            other => panic!("not a string: {other:?}"),
        }
    }

    /// The boolean (panics otherwise).
    pub fn bool(&self) -> bool {
        match self {
            Json::Bool(b) => *b,
            other => panic!("not a bool: {other:?}"),
        }
    }

    /// The list (panics otherwise).
    pub fn arr(&self) -> &[Json] {
        match self {
            Json::Arr(v) => v,
            other => panic!("not a list: {other:?}"),
        }
    }

    /// The object's members (panics otherwise).
    pub fn obj(&self) -> &[(String, Json)] {
        match self {
            Json::Obj(v) => v,
            other => panic!("not an object: {other:?}"),
        }
    }

    /// True for `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }

    /// A mutable member of an object, inserted (null) when absent.
    pub fn entry(&mut self, key: &str) -> &mut Json {
        let Json::Obj(m) = self else {
            panic!("not an object")
        };
        if let Some(i) = m.iter().position(|(k, _)| k == key) {
            return &mut m[i].1;
        }
        m.push((key.to_owned(), Json::Null));
        &mut m.last_mut().unwrap().1
    }

    /// Removes a member of an object (no-op if absent).
    pub fn remove(&mut self, key: &str) {
        if let Json::Obj(m) = self {
            m.retain(|(k, _)| k != key);
        }
    }

    /// Compact JSON text.
    pub fn dump(&self) -> String {
        let mut s = String::new();
        write(self, &mut s);
        s
    }

    fn to_string_short(&self) -> String {
        let s = self.dump();
        if s.len() > 200 {
            format!("{}...", &s[..200])
        } else {
            s
        }
    }
}

fn read(sc: &mut Scanner) -> Json {
    match sc.peek().expect("value") {
        Kind::Null => {
            sc.null().unwrap();
            Json::Null
        }
        Kind::Bool => Json::Bool(sc.bool().unwrap()),
        Kind::Number => {
            let n = sc.number().unwrap();
            Json::Num(n.as_f64().expect("finite"), n.text().to_owned())
        }
        Kind::String => Json::Str(sc.string().unwrap().chars().collect()),
        Kind::Array => {
            let a = sc.array().unwrap();
            let mut v = Vec::new();
            while sc.next_item(&a).unwrap() {
                v.push(read(sc));
            }
            Json::Arr(v)
        }
        Kind::Object => {
            let o = sc.object().unwrap();
            let mut m = Vec::new();
            while let Some(k) = sc.next_key(&o).unwrap() {
                let key: String = k.chars().collect();
                m.push((key, read(sc)));
            }
            Json::Obj(m)
        }
    }
}

fn write(v: &Json, s: &mut String) {
    match v {
        Json::Null => s.push_str("null"),
        Json::Bool(b) => s.push_str(if *b { "true" } else { "false" }),
        Json::Num(_, t) => s.push_str(t),
        Json::Str(t) => write_str(t, s),
        Json::Arr(a) => {
            s.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                write(x, s);
            }
            s.push(']');
        }
        Json::Obj(m) => {
            s.push('{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                write_str(k, s);
                s.push(':');
                write(x, s);
            }
            s.push('}');
        }
    }
}

fn write_str(t: &str, s: &mut String) {
    s.push('"');
    for c in t.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if (c as u32) < 0x20 => s.push_str(&format!("\\u{:04x}", c as u32)),
            c => s.push(c),
        }
    }
    s.push('"');
}

/// A number value (for building configs in tests).
pub fn num(v: f64) -> Json {
    let text = if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:e}")
    };
    Json::Num(v, text)
}
