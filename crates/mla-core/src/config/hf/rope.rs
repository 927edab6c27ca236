//! RoPE: the `rope_parameters` / `rope_scaling` object, the built-in RoPE of
//! families that have none in their config, and the final cos/sin values.

use super::*;

impl<'a> Model<'a> {
    /// The RoPE dict of a layer of type `lt` (after the class's standardisation).
    pub(super) fn rope(&self, lt: LType) -> Result<Rope<'a>> {
        let t = &self.t;
        let fam = self.fam;
        // `rope_parameters or rope_scaling or {}`
        let mut top = t.obj_opt(k::ROPE_PARAMETERS, &ROPE_KEYS)?;
        if top.is_none() {
            top = t.obj_opt(k::ROPE_SCALING, &ROPE_KEYS)?;
        }
        let theta_top = match t.val(k::ROPE_THETA) {
            Val::At(at) => Some(t.f64_at(k::ROPE_THETA, at)?),
            Val::Null => return Err(t.err(k::ROPE_THETA, &[S("is null")])),
            Val::Absent => None,
        };
        let mut theta_default = theta_top.unwrap_or(fam.default_theta());
        let max_pos = self.max_pos()?;
        let mut rope = Rope {
            d: None,
            builtin: None,
            theta: theta_default,
            kind: RopeKind::Default,
            truncate: true,
            max_pos,
            l0: None,
            factor: None,
            mscale_all_dim: None,
            llama4_beta: None,
        };
        let mut dict = top;
        if let Some(d3) = self.dots3 {
            // One dict per layer type (dots3_note), or a flat one for all.
            if let Some(rp) = top {
                let key = match lt {
                    LType::Sliding => r::SLIDING,
                    LType::Full => r::FULL,
                    _ => r::INDEXED,
                };
                let nested = [r::INDEXED, r::SLIDING, r::FULL]
                    .iter()
                    .any(|&x| rp.val(x) != Val::Absent);
                if nested {
                    let inner = rp.obj_opt(key, &ROPE_KEYS)?;
                    dict = Some(inner.ok_or_else(|| {
                        rp.err(
                            key,
                            &[S("missing (the rope dict is nested per layer type)")],
                        )
                    })?);
                }
            } else if !d3.canonical && lt == LType::Sliding {
                theta_default = match t.val(k::SWA_ROPE_THETA) {
                    Val::At(at) => t.f64_at(k::SWA_ROPE_THETA, at)?,
                    Val::Null => return Err(t.err(k::SWA_ROPE_THETA, &[S("is null")])),
                    Val::Absent => 50_000.0,
                };
            }
        } else if top.is_none() {
            rope.builtin = match fam {
                Family::Mistral4 => Some(&MISTRAL4_ROPE),
                Family::MistralLarge4 => Some(&MISTRAL_LARGE4_ROPE),
                _ => None,
            };
        }
        rope.d = dict;
        rope.theta = theta_default;
        if let Some(b) = rope.builtin {
            rope.kind = RopeKind::Yarn;
            rope.theta = b.theta;
            rope.l0 = Some(b.l0);
            rope.factor = Some(b.factor);
            rope.mscale_all_dim = b.mscale_all_dim;
            rope.llama4_beta = b.llama4_beta;
            return Ok(rope);
        }
        let Some(dd) = dict else {
            return Ok(rope);
        };
        // rope_type (legacy `type`), default "default".
        let ty = match (dd.val(r::ROPE_TYPE), dd.val(r::TYPE)) {
            (Val::At(at), _) => Some((r::ROPE_TYPE, dd.str_at(r::ROPE_TYPE, at)?)),
            (Val::Null, _) => return Err(dd.err(r::ROPE_TYPE, &[S("is null")])),
            (Val::Absent, Val::At(at)) => Some((r::TYPE, dd.str_at(r::TYPE, at)?)),
            (Val::Absent, Val::Null) => return Err(dd.err(r::TYPE, &[S("is null")])),
            (Val::Absent, Val::Absent) => None,
        };
        rope.kind = match ty {
            None => RopeKind::Default,
            Some((key, s)) => {
                let name = s.as_str().unwrap_or("");
                match name {
                    "default" => RopeKind::Default,
                    "linear" => RopeKind::Linear,
                    "yarn" => RopeKind::Yarn,
                    "longrope" => RopeKind::LongRope,
                    "llama3" => RopeKind::Llama3,
                    _ => {
                        let mut e = dd.err(key, &[S("'"), S(s.raw()), S("'")]);
                        e = Error::new(Status::Unsupported, e.message());
                        return Err(e.s(
                            " has no rule in the engine (default, linear, yarn, longrope, llama3)",
                        ));
                    }
                }
            }
        };
        rope.theta = dd.f64_or(r::THETA, Some(theta_default))?;
        if !(rope.theta.is_finite() && rope.theta > 1.0) {
            return Err(dd.err(r::THETA, &[S("must be > 1")]));
        }
        // `truncate` is read from the top-level dict only, and only when it names a type.
        if let Some(tp) = top {
            if self.dots3.is_none()
                && (tp.val(r::ROPE_TYPE) != Val::Absent || tp.val(r::TYPE) != Val::Absent)
            {
                rope.truncate = tp.bool_or(r::TRUNCATE, true)?;
            }
        }
        if matches!(
            rope.kind,
            RopeKind::Yarn | RopeKind::LongRope | RopeKind::Llama3
        ) {
            let l0 = match dd.val(r::L0) {
                Val::At(at) => dd.u64_at(r::L0, at)?,
                Val::Null => return Err(dd.err(r::L0, &[S("is null")])),
                Val::Absent => max_pos.ok_or_else(|| {
                    dd.err(r::L0, &[S("missing, and so is max_position_embeddings")])
                })?,
            };
            rope.l0 = Some(
                u32::try_from(l0)
                    .ok()
                    .filter(|&v| v > 0)
                    .ok_or_else(|| dd.err(r::L0, &[S("must be 1 .. 2^32-1")]))?,
            );
        } else if let Val::At(at) = dd.val(r::L0) {
            // Llama 4 query scaling (mistral4) reads it whatever the type.
            let l0 = dd.u64_at(r::L0, at)?;
            rope.l0 = u32::try_from(l0).ok().filter(|&v| v > 0);
        }
        rope.factor = match dd.val(r::FACTOR) {
            Val::At(at) => Some(dd.f64_at(r::FACTOR, at)?),
            _ => None,
        };
        rope.mscale_all_dim = dd.f64_truthy(r::MSCALE_ALL_DIM)?;
        rope.llama4_beta = match dd.val(r::LLAMA4_BETA) {
            Val::At(at) => Some(dd.f64_at(r::LLAMA4_BETA, at)?),
            _ => None,
        };
        Ok(rope)
    }

    /// `max_position_embeddings or model_max_length` (class default for the former).
    pub(super) fn max_pos(&self) -> Result<Option<u64>> {
        let t = &self.t;
        let mp = match t.val(k::MAX_POS) {
            Val::At(at) => t.u64_at(k::MAX_POS, at)?,
            Val::Null => 0,
            Val::Absent => self.fam.defaults().max_position_embeddings,
        };
        if mp != 0 {
            return Ok(Some(mp));
        }
        match t.val(k::MODEL_MAX_LENGTH) {
            Val::At(at) => Ok(Some(t.u64_at(k::MODEL_MAX_LENGTH, at)?).filter(|&v| v > 0)),
            _ => Ok(None),
        }
    }
}

/// A RoPE type with a rule here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RopeKind {
    Default,
    Linear,
    Yarn,
    LongRope,
    Llama3,
}

/// The YaRN dict a class builds when the config has none (`families.DEFAULT_ROPE`).
pub(super) struct BuiltinRope {
    pub(super) theta: f64,
    pub(super) factor: f64,
    pub(super) l0: u32,
    pub(super) mscale: Option<f64>,
    pub(super) mscale_all_dim: Option<f64>,
    pub(super) attention_factor: Option<f64>,
    pub(super) llama4_beta: Option<f64>,
}

pub(super) static MISTRAL4_ROPE: BuiltinRope = BuiltinRope {
    theta: 10000.0,
    factor: 128.0,
    l0: 8192,
    mscale: Some(1.0),
    mscale_all_dim: Some(1.0),
    attention_factor: None,
    llama4_beta: Some(0.1),
};

pub(super) static MISTRAL_LARGE4_ROPE: BuiltinRope = BuiltinRope {
    theta: 10000.0,
    factor: 2048.0,
    l0: 512,
    mscale: None,
    mscale_all_dim: None,
    attention_factor: Some(1.0),
    llama4_beta: None,
};

/// One layer's RoPE parameters.
pub(super) struct Rope<'a> {
    /// The dict (`None`: `{}` or a builtin).
    pub(super) d: Option<Obj<'a, { r::COUNT }>>,
    pub(super) builtin: Option<&'static BuiltinRope>,
    pub(super) theta: f64,
    pub(super) kind: RopeKind,
    pub(super) truncate: bool,
    pub(super) max_pos: Option<u64>,
    /// `original_max_position_embeddings` (defaulted for yarn, longrope, llama3).
    pub(super) l0: Option<u32>,
    /// `factor` as given.
    pub(super) factor: Option<f64>,
    /// `mscale_all_dim` when present and non-zero.
    pub(super) mscale_all_dim: Option<f64>,
    pub(super) llama4_beta: Option<f64>,
}

/// `0.1 * m * ln(s) + 1` (1 for s <= 1): YaRN's magnitude scale.
pub(super) fn yarn_mscale(s: f64, m: f64) -> f64 {
    if s <= 1.0 {
        1.0
    } else {
        0.1 * m * libm::log(s) + 1.0
    }
}

impl Rope<'_> {
    pub(super) fn err(&self, i: usize, why: &[Piece]) -> Error {
        match &self.d {
            Some(d) => d.err(i, why),
            None => Path::ROOT
                .join("rope_parameters")
                .err(ROPE_KEYS.get(i).copied().unwrap_or("?"), why),
        }
    }

    /// `factor`, or `max_position_embeddings / original_max_position_embeddings`
    /// where the type allows it (yarn, longrope).
    pub(super) fn factor_or_derived(&self) -> Result<f64> {
        if let Some(f) = self.factor {
            return Ok(f);
        }
        match (self.max_pos, self.l0) {
            (Some(mp), Some(l0)) => Ok(mp as f64 / f64::from(l0)),
            _ => Err(self.err(
                r::FACTOR,
                &[S("missing, and so is max_position_embeddings")],
            )),
        }
    }

    /// The factor of the softmax-scale mscale (`rp["factor"]`).
    pub(super) fn factor_for_mscale(&self) -> Result<f64> {
        match self.kind {
            RopeKind::Yarn | RopeKind::LongRope => self.factor_or_derived(),
            _ => self
                .factor
                .ok_or_else(|| self.err(r::FACTOR, &[S("missing (needed with mscale_all_dim)")])),
        }
    }

    /// A number of the dict: absent -> `None`, null -> error.
    pub(super) fn num(&self, i: usize) -> Result<Option<f64>> {
        let Some(d) = &self.d else { return Ok(None) };
        match d.val(i) {
            Val::At(at) => Ok(Some(d.f64_at(i, at)?)),
            Val::Null => Err(d.err(i, &[S("is null")])),
            Val::Absent => Ok(None),
        }
    }

    /// The RoPE fields of `cfg` for rotary dim `p`.
    pub(super) fn fill(&self, cfg: &mut Config, p: u32) -> Result<()> {
        cfg.rope_theta = self.theta as f32;
        cfg.rope_yarn_truncate = self.truncate;
        cfg.original_max_position = 0;
        cfg.rope_factor = 1.0;
        cfg.rope_attention_factor = 1.0;
        match self.kind {
            RopeKind::Default => cfg.rope_type = RopeType::Default,
            RopeKind::Linear => {
                cfg.rope_type = RopeType::Linear;
                cfg.rope_factor = self
                    .factor
                    .ok_or_else(|| self.err(r::FACTOR, &[S("missing (linear RoPE)")]))?
                    as f32;
            }
            RopeKind::Llama3 => {
                cfg.rope_type = RopeType::Llama3;
                cfg.rope_factor = self
                    .factor
                    .ok_or_else(|| self.err(r::FACTOR, &[S("missing (llama3 RoPE)")]))?
                    as f32;
                cfg.original_max_position = self.l0.unwrap_or(0);
                for (key, field) in [
                    (r::LOW_FREQ, &mut cfg.rope_low_freq_factor),
                    (r::HIGH_FREQ, &mut cfg.rope_high_freq_factor),
                ] {
                    *field = self
                        .num(key)?
                        .ok_or_else(|| self.err(key, &[S("missing (llama3 RoPE)")]))?
                        as f32;
                }
            }
            RopeKind::Yarn => {
                cfg.rope_type = RopeType::Yarn;
                let f = self.factor_or_derived()?;
                cfg.rope_factor = f as f32;
                cfg.original_max_position = self.l0.unwrap_or(0);
                let truthy = |i| -> Result<Option<f64>> {
                    match &self.d {
                        Some(d) => d.f64_truthy(i),
                        None => Ok(None),
                    }
                };
                let (ms, msa, att) = match self.builtin {
                    Some(b) => (b.mscale, b.mscale_all_dim, b.attention_factor),
                    None => (
                        truthy(r::MSCALE)?,
                        truthy(r::MSCALE_ALL_DIM)?,
                        self.num(r::ATTENTION_FACTOR)?,
                    ),
                };
                cfg.beta_fast = truthy(r::BETA_FAST)?.unwrap_or(32.0) as f32;
                cfg.beta_slow = truthy(r::BETA_SLOW)?.unwrap_or(1.0) as f32;
                cfg.mscale = ms.unwrap_or(1.0) as f32;
                cfg.mscale_all_dim = msa.unwrap_or(1.0) as f32;
                let a = match (att, ms, msa) {
                    (Some(a), _, _) => a,
                    (None, Some(ms), Some(msa)) => yarn_mscale(f, ms) / yarn_mscale(f, msa),
                    _ => yarn_mscale(f, 1.0),
                };
                cfg.rope_attention_factor = a as f32;
            }
            RopeKind::LongRope => {
                cfg.rope_type = RopeType::LongRope;
                let l0 = self.l0.unwrap_or(1);
                cfg.original_max_position = l0;
                let f = self.factor_or_derived()?;
                cfg.rope_factor = f as f32;
                let a = match self.num(r::ATTENTION_FACTOR)? {
                    Some(a) => a,
                    None if f <= 1.0 => 1.0,
                    None => libm::sqrt(1.0 + libm::log(f) / libm::log(f64::from(l0))),
                };
                cfg.rope_attention_factor = a as f32;
                let half = (p / 2) as usize;
                for (key, field) in [
                    (r::SHORT_FACTOR, &mut cfg.rope_short_factor),
                    (r::LONG_FACTOR, &mut cfg.rope_long_factor),
                ] {
                    let Some(d) = &self.d else {
                        return Err(self.err(key, &[S("missing (longrope)")]));
                    };
                    let Val::At(at) = d.val(key) else {
                        return Err(d.err(key, &[S("missing (longrope)")]));
                    };
                    let mut items = Items::open(d, key, at)?;
                    let mut n = 0usize;
                    while let Some(pos) = items.next()? {
                        let v = items
                            .sc(pos)
                            .f64()
                            .map_err(|_| d.err(key, &[S("entries must be numbers")]))?;
                        if let Some(slot) = field.get_mut(n) {
                            *slot = v as f32;
                        }
                        n = n.saturating_add(1);
                    }
                    if n != half || half > MAX_ROPE_FACTORS {
                        return Err(d.err(
                            key,
                            &[
                                N(n as u64),
                                S(" factors, qk_rope_head_dim / 2 is "),
                                N(half as u64),
                                S(" (at most 64)"),
                            ],
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}
