//! JSON access: one pass per object into a table of value positions, and
//! per-layer lists read item by item.

use super::*;

/// Where a key's value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Val {
    /// The key is not there.
    Absent,
    /// `null`.
    Null,
    /// The value begins at this byte offset (after optional whitespace).
    At(usize),
}

/// The keys of an object, for messages: up to 3 enclosing keys.
#[derive(Clone, Copy, Debug)]
pub(super) struct Path<'a> {
    pub(super) parts: [&'a str; 3],
    pub(super) len: usize,
}

impl<'a> Path<'a> {
    pub(super) const ROOT: Path<'static> = Path {
        parts: [""; 3],
        len: 0,
    };

    pub(super) fn join(&self, key: &'a str) -> Path<'a> {
        let mut p = *self;
        if let Some(slot) = p.parts.get_mut(p.len) {
            *slot = key;
            p.len += 1;
        }
        p
    }

    /// An `InvalidConfig` error: "`path.key`: `why`".
    #[cold]
    #[inline(never)]
    pub(super) fn err(&self, key: &str, why: &[Piece]) -> Error {
        let mut e = error(Status::InvalidConfig, "", &[]);
        for part in self.parts.iter().take(self.len) {
            push(&mut e, &[S(part), S(".")]);
        }
        push(&mut e, &[S(key), S(": ")]);
        push(&mut e, why);
        e
    }
}

/// A JSON error in config.json as `InvalidConfig` (naming a duplicate key).
#[cold]
#[inline(never)]
pub(super) fn json_err(text: &str, path: &Path, e: JsonError) -> Error {
    let mut out = error(Status::InvalidConfig, "config.json: ", &[]);
    for part in path.parts.iter().take(path.len) {
        push(&mut out, &[S(part), S(".")]);
    }
    if e.kind == ErrorKind::DuplicateKey {
        push(&mut out, &[S("duplicate key '")]);
        if let Some(k) = key_at(text, e.at) {
            if let Some(s) = k.as_str() {
                push(&mut out, &[S(s)]);
            }
        }
        push(&mut out, &[S("' at byte "), N(e.at as u64)]);
    } else {
        push(
            &mut out,
            &[S(e.kind.as_str()), S(" at byte "), N(e.at as u64)],
        );
    }
    out
}

/// The values of one object for the keys `names`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Obj<'a, const K: usize> {
    pub(super) text: &'a str,
    pub(super) names: &'static [&'static str; K],
    pub(super) vals: [Val; K],
    pub(super) path: Path<'a>,
    /// Keys in the object.
    pub(super) len: usize,
}

impl<'a, const K: usize> Obj<'a, K> {
    /// Reads the object at byte `at` (which must begin an object).
    pub(super) fn read(
        text: &'a str,
        at: usize,
        names: &'static [&'static str; K],
        path: Path<'a>,
    ) -> Result<Obj<'a, K>> {
        let je = |e| json_err(text, &path, e);
        let mut sc = Scanner::starting_at(text, at);
        let obj = sc.object().map_err(je)?;
        let start = sc.position().saturating_sub(1);
        let mut keys = UniqueKeys::new(&sc, start);
        let mut vals = [Val::Absent; K];
        let mut len = 0usize;
        while let Some(k) = sc.next_key(&obj).map_err(je)? {
            keys.push(&sc, k).map_err(je)?;
            len += 1;
            if let Some(i) = names.iter().position(|n| k.eq_str(n)) {
                let pos = sc.position();
                let null = sc.peek().map_err(je)? == Kind::Null;
                if let Some(v) = vals.get_mut(i) {
                    *v = if null { Val::Null } else { Val::At(pos) };
                }
            }
        }
        keys.finish().map_err(je)?;
        Ok(Obj {
            text,
            names,
            vals,
            path,
            len,
        })
    }

    pub(super) fn val(&self, i: usize) -> Val {
        self.vals.get(i).copied().unwrap_or(Val::Absent)
    }

    pub(super) fn name(&self, i: usize) -> &'static str {
        self.names.get(i).copied().unwrap_or("?")
    }

    pub(super) fn err(&self, i: usize, why: &[Piece]) -> Error {
        self.path.err(self.name(i), why)
    }

    pub(super) fn sc(&self, at: usize) -> Scanner<'a> {
        Scanner::starting_at(self.text, at)
    }

    pub(super) fn kind_at(&self, i: usize, at: usize) -> Result<Kind> {
        self.sc(at)
            .peek()
            .map_err(|_| self.err(i, &[S("no value")]))
    }

    /// A non-negative integer value at `at`.
    pub(super) fn u64_at(&self, i: usize, at: usize) -> Result<u64> {
        self.sc(at)
            .u64()
            .map_err(|_| self.err(i, &[S("expected a non-negative integer")]))
    }

    /// An integer (maybe negative) at `at`.
    pub(super) fn i64_at(&self, i: usize, at: usize) -> Result<i64> {
        self.sc(at)
            .i64()
            .map_err(|_| self.err(i, &[S("expected an integer")]))
    }

    /// A number at `at`, as f64.
    pub(super) fn f64_at(&self, i: usize, at: usize) -> Result<f64> {
        self.sc(at)
            .f64()
            .map_err(|_| self.err(i, &[S("expected a finite number")]))
    }

    pub(super) fn bool_at(&self, i: usize, at: usize) -> Result<bool> {
        self.sc(at)
            .bool()
            .map_err(|_| self.err(i, &[S("expected true or false")]))
    }

    pub(super) fn str_at(&self, i: usize, at: usize) -> Result<JsonStr<'a>> {
        self.sc(at)
            .string()
            .map_err(|_| self.err(i, &[S("expected a string")]))
    }

    /// The key's object value (`None` for absent, null or an empty object, which
    /// Python's `or` passes over); anything else than an object is an error.
    pub(super) fn obj_opt<const J: usize>(
        &self,
        i: usize,
        names: &'static [&'static str; J],
    ) -> Result<Option<Obj<'a, J>>> {
        let Val::At(at) = self.val(i) else {
            return Ok(None);
        };
        if self.kind_at(i, at)? != Kind::Object {
            return Err(self.err(i, &[S("expected an object")]));
        }
        let o = Obj::read(self.text, at, names, self.path.join(self.name(i)))?;
        Ok((o.len > 0).then_some(o))
    }

    /// Integer key: absent -> `default` (an error when `None`), null -> error.
    pub(super) fn u64_or(&self, i: usize, default: Option<u64>) -> Result<u64> {
        match self.val(i) {
            Val::At(at) => self.u64_at(i, at),
            Val::Null => Err(self.err(i, &[S("is null")])),
            Val::Absent => default.ok_or_else(|| self.err(i, &[S("missing")])),
        }
    }

    /// Number key: absent -> `default` (an error when `None`), null -> error.
    pub(super) fn f64_or(&self, i: usize, default: Option<f64>) -> Result<f64> {
        match self.val(i) {
            Val::At(at) => self.f64_at(i, at),
            Val::Null => Err(self.err(i, &[S("is null")])),
            Val::Absent => default.ok_or_else(|| self.err(i, &[S("missing")])),
        }
    }

    /// Number key read as Python's `x or default` / `x if x else`: absent, null
    /// and 0 give `None`.
    pub(super) fn f64_truthy(&self, i: usize) -> Result<Option<f64>> {
        match self.val(i) {
            Val::At(at) => {
                let v = self.f64_at(i, at)?;
                Ok((v != 0.0).then_some(v))
            }
            _ => Ok(None),
        }
    }

    /// Boolean key: absent -> `default`, null -> false (`bool(None)`).
    pub(super) fn bool_or(&self, i: usize, default: bool) -> Result<bool> {
        match self.val(i) {
            Val::At(at) => self.bool_at(i, at),
            Val::Null => Ok(false),
            Val::Absent => Ok(default),
        }
    }

    /// Item `j` of the list under key `i` (`Ok(None)` when the key is absent or
    /// null); an error when the list is shorter.
    pub(super) fn item(&self, i: usize, j: u32) -> Result<Option<(Items<'a>, usize)>> {
        let Val::At(at) = self.val(i) else {
            return Ok(None);
        };
        let mut items = Items::open(self, i, at)?;
        let mut pos = None;
        for _ in 0..=j {
            pos = items.next()?;
        }
        match pos {
            Some(p) => Ok(Some((items, p))),
            None => Err(items.short(j)),
        }
    }
}

/// A list read item by item.
#[derive(Clone, Debug)]
pub(super) struct Items<'a> {
    pub(super) sc: Scanner<'a>,
    pub(super) arr: Array,
    pub(super) path: Path<'a>,
    pub(super) key: &'static str,
    /// Items read.
    pub(super) n: u32,
    pub(super) text: &'a str,
}

impl<'a> Items<'a> {
    pub(super) fn open<const K: usize>(o: &Obj<'a, K>, i: usize, at: usize) -> Result<Items<'a>> {
        let mut sc = o.sc(at);
        let arr = sc.array().map_err(|_| o.err(i, &[S("expected a list")]))?;
        Ok(Items {
            sc,
            arr,
            path: o.path,
            key: o.name(i),
            n: 0,
            text: o.text,
        })
    }

    /// The position of the next item, or `None` after the last.
    pub(super) fn next(&mut self) -> Result<Option<usize>> {
        let more = self
            .sc
            .next_item(&self.arr)
            .map_err(|e| json_err(self.text, &self.path, e))?;
        if !more {
            return Ok(None);
        }
        self.n = self.n.saturating_add(1);
        Ok(Some(self.sc.position()))
    }

    pub(super) fn err(&self, why: &[Piece]) -> Error {
        self.path.err(self.key, why)
    }

    /// "`key`: N entries, layer j needs more".
    pub(super) fn short(&self, j: u32) -> Error {
        self.err(&[
            S("has "),
            N(u64::from(self.n)),
            S(" entries, too few for layer "),
            N(u64::from(j)),
        ])
    }

    pub(super) fn sc(&self, at: usize) -> Scanner<'a> {
        Scanner::starting_at(self.text, at)
    }

    /// The item at `at` as a string, or `None` for null.
    pub(super) fn str_at(&self, at: usize) -> Result<Option<JsonStr<'a>>> {
        let mut sc = self.sc(at);
        if sc.eat_null().unwrap_or(false) {
            return Ok(None);
        }
        sc.string()
            .map(Some)
            .map_err(|_| self.err(&[S("entries must be strings")]))
    }

    pub(super) fn i64_at(&self, at: usize) -> Result<i64> {
        self.sc(at)
            .i64()
            .map_err(|_| self.err(&[S("entries must be integers")]))
    }

    /// Python truthiness of a number or boolean item (`no_rope_layers`).
    pub(super) fn truthy_at(&self, at: usize) -> Result<bool> {
        let mut sc = self.sc(at);
        match sc.peek() {
            Ok(Kind::Bool) => sc.bool().map_err(|_| self.err(&[S("bad entry")])),
            Ok(Kind::Number) => sc
                .f64()
                .map(|v| v != 0.0)
                .map_err(|_| self.err(&[S("bad entry")])),
            _ => Err(self.err(&[S("entries must be numbers or booleans")])),
        }
    }
}
