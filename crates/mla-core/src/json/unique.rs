//! Duplicate keys: [`UniqueKeys`] and [`check_unique_keys`].

use super::*;

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
pub(super) fn hash(s: &JsonStr) -> u32 {
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
