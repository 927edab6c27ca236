//! The per-layer-type indexer modes ([`Modes`]) and one layer's view of the
//! model ([`View`]).

use super::*;

/// The per-layer-type indexer modes, read in layer order.
pub(super) enum Modes<'a> {
    List(Items<'a>),
    /// An `index_topk_pattern` string of F/S, and the index of the next char.
    Pattern(Chars<'a>, u32),
    /// hy_v4 / hy_v4_vl: full for layer 0 and layers 1 mod 4.
    Hy,
    /// Full when `max(i - off + 1, 0) % freq == 0`.
    Freq {
        freq: u64,
        off: i64,
    },
}

impl Modes<'_> {
    /// The mode of layer `j` (calls come for j = 0, 1, 2, ... in order).
    pub(super) fn next(&mut self, t: &Obj<'_, { k::COUNT }>, j: u32) -> Result<Mode> {
        match self {
            Modes::List(items) => {
                let Some(p) = items.next()? else {
                    return Err(items.short(j));
                };
                match items.str_at(p)? {
                    Some(s) if s.eq_str("full") => Ok(Mode::Full),
                    Some(s) if s.eq_str("shared") => Ok(Mode::Shared),
                    _ => Err(items.err(&[
                        S("entry "),
                        N(u64::from(j)),
                        S(" is not 'full' or 'shared'"),
                    ])),
                }
            }
            Modes::Pattern(chars, n) => {
                let c = chars.next();
                *n = n.saturating_add(1);
                match c {
                    Some('F') => Ok(Mode::Full),
                    Some('S') => Ok(Mode::Shared),
                    Some(_) => Err(t.err(k::INDEX_TOPK_PATTERN, &[S("characters must be F or S")])),
                    None => Err(t.err(
                        k::INDEX_TOPK_PATTERN,
                        &[
                            S("has "),
                            N(u64::from(*n - 1)),
                            S(" entries, too few for layer "),
                            N(u64::from(j)),
                        ],
                    )),
                }
            }
            Modes::Hy => Ok(if j == 0 || (j - 1).is_multiple_of(4) {
                Mode::Full
            } else {
                Mode::Shared
            }),
            Modes::Freq { freq, off } => {
                let x = (i64::from(j) - *off).saturating_add(1).max(0) as u64;
                Ok(if x.is_multiple_of(*freq) {
                    Mode::Full
                } else {
                    Mode::Shared
                })
            }
        }
    }
}

/// The keys of one layer: dots3_note's per-layer override, then the text config,
/// then the class default (and, for legacy dots3_note sliding layers, the `swa_*`
/// keys).
pub(super) struct View<'m, 'a> {
    pub(super) m: &'m Model<'a>,
    pub(super) over: Option<Obj<'a, { k::COUNT }>>,
    pub(super) swa: bool,
}

impl<'a> View<'_, 'a> {
    /// The value of key `i` and the object it is in.
    pub(super) fn find(&self, i: usize) -> (Val, &Obj<'a, { k::COUNT }>) {
        if let Some(o) = &self.over {
            if o.val(i) != Val::Absent {
                return (o.val(i), o);
            }
        }
        (self.m.t.val(i), &self.m.t)
    }

    pub(super) fn err(&self, i: usize, why: &[Piece]) -> Error {
        self.find(i).1.err(i, why)
    }

    /// Legacy dots3_note sliding layers: the `swa_*` key and default of a dim.
    pub(super) fn swa_key(&self, i: usize) -> Option<(usize, u64)> {
        if !self.swa {
            return None;
        }
        Some(match i {
            k::HEADS => (k::SWA_HEADS, 64),
            k::Q_LORA_RANK => (k::SWA_Q_LORA_RANK, 1024),
            k::KV_LORA_RANK => (k::SWA_KV_LORA_RANK, 1024),
            k::NOPE => (k::SWA_NOPE, 192),
            k::V => (k::SWA_V, 128),
            k::ROPE => (k::SWA_ROPE, 0),
            _ => return None,
        })
    }

    pub(super) fn u64_raw(&self, i: usize, default: Option<u64>) -> Result<u64> {
        if let Some((key, dflt)) = self.swa_key(i) {
            let t = &self.m.t;
            if key == k::SWA_ROPE && t.val(key) == Val::Absent {
                // head_dim - qk_nope_head_dim of the sliding layers.
                let hd = t.u64_or(k::SWA_HEAD_DIM, Some(256))?;
                let nope = t.u64_or(k::SWA_NOPE, Some(192))?;
                return hd.checked_sub(nope).ok_or_else(|| {
                    t.err(k::SWA_HEAD_DIM, &[S("smaller than swa_qk_nope_head_dim")])
                });
            }
            return t.u64_or(key, Some(dflt));
        }
        let (val, o) = self.find(i);
        match val {
            Val::At(at) => o.u64_at(i, at),
            Val::Null => Err(o.err(i, &[S("is null")])),
            Val::Absent => default.ok_or_else(|| o.err(i, &[S("missing")])),
        }
    }

    /// A dimension: a non-negative integer that fits 32 bits.
    pub(super) fn u32(&self, i: usize, default: Option<u64>) -> Result<u32> {
        let v = self.u64_raw(i, default)?;
        u32::try_from(v).map_err(|_| self.err(i, &[N(v), S(" does not fit 32 bits")]))
    }

    /// `q_lora_rank`: null is 0 (the plain q_proj).
    pub(super) fn q_lora_rank(&self, default: u64) -> Result<u32> {
        if self.swa_key(k::Q_LORA_RANK).is_none() && self.find(k::Q_LORA_RANK).0 == Val::Null {
            return Ok(0);
        }
        self.u32(k::Q_LORA_RANK, Some(default))
    }

    pub(super) fn f64(&self, i: usize, default: Option<f64>) -> Result<f64> {
        let (val, o) = self.find(i);
        match val {
            Val::At(at) => o.f64_at(i, at),
            Val::Null => Err(o.err(i, &[S("is null")])),
            Val::Absent => default.ok_or_else(|| o.err(i, &[S("missing")])),
        }
    }

    pub(super) fn bool_or(&self, i: usize, default: bool) -> Result<bool> {
        let (_, o) = self.find(i);
        o.bool_or(i, default)
    }
}
