//! One MLA layer's [`Config`] from a Hugging Face `config.json`
//! ([`Config::from_hf_json`], [`hf_layer_info`]).
//!
//! The rules are docs/families.md section 2.1 and the executable form of that spec,
//! `tools/reference/families.py` (`derive_layers`), mirrored here: the text config
//! (`text_config` or flat), class defaults for missing keys, `rope_parameters` or
//! the legacy `rope_scaling` (`type` for `rope_type`), the per-layer schedules
//! (`layer_types`, `linear_attn_config`, `kv_source_layers`, `no_rope_layers`,
//! `indexer_types` / `index_topk_pattern` / `index_topk_freq` /
//! `index_skip_topk_offset`, dots3_note's `per_layer_config` and legacy flat keys),
//! and the final values the modules compute (softmax scale, cos/sin factor, latent
//! eps, latent scales).
//!
//! No allocation and no recursion: the JSON is read with the crate's scanner
//! ([`crate::json`]) into fixed tables of value positions, one pass per object, and
//! per-layer lists are read item by item. Each object read is checked for duplicate
//! keys. Every failure is a [`Status`] with a message naming the key:
//! `InvalidConfig` for malformed JSON, a missing or mistyped key, an absurd value or
//! a layer out of range; `Unsupported` for a `model_type` that is not an MLA family,
//! a layer that is not MLA ("layer 0 of kimi_linear is linear_attention, not MLA") and
//! a RoPE type the engine has no rule for.

use core::str::Chars;

use super::families::{Family, Prefix};
use super::{
    Config, Dsa, Gate, IndexQInput, IndexRope, QueryScale, RopeLayout, RopeType, MAX_ROPE_FACTORS,
};
use crate::json::{key_at, Array, ErrorKind, JsonError, JsonStr, Kind, Scanner, UniqueKeys};
use crate::status::{error, push, Error, Piece, Piece::N, Piece::S, Result, Status};

mod keys;
mod layer_config;
mod read;
mod rope;
mod view;

use keys::*;
use read::*;
use rope::*;
use view::*;

/// Most attention layers a config may declare.
pub const MAX_HF_LAYERS: u32 = 65536;

/// What [`Config::from_hf_json`] and [`hf_layer_info`] say about one layer
/// (transformers' `layer_idx`) beyond its [`Config`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerInfo {
    /// The model family (`model_type`).
    pub family: Family,
    /// The layer asked for.
    pub layer: u32,
    /// Attention layers of the model (longcat_flash: two per decoder layer).
    pub num_layers: u32,
    /// The layer is MLA; false for the linear-attention layers of the hybrid
    /// families (the other fields then say nothing).
    pub mla: bool,
    /// No rotary embedding (kimi_linear, glm5_next, mistral_large4's NoPE layers).
    pub nope: bool,
    /// Sliding-window layer (dots3_note).
    pub sliding: bool,
    /// The layer reads another layer's latent cache (mistral_large4).
    pub kv_shared: bool,
    /// The layer whose latent cache this one reads (`layer` itself unless kv_shared).
    pub kv_source_layer: u32,
    /// Sparse attention: own indexer (`Full`) or another layer's selection (`Shared`).
    pub dsa: Dsa,
    /// The layer whose top-k selection this one uses: `layer` itself for `Full`,
    /// the producer for `Shared`, `layer` without sparse attention.
    pub topk_source_layer: u32,
    /// Biases on q_a_proj, kv_a_proj_with_mqa and o_proj (`attention_bias`).
    pub attention_bias: bool,
    /// The attention module's checkpoint prefix (e.g. `model.layers.3.self_attn.`).
    pub prefix: Prefix,
}

impl LayerInfo {
    /// The kind as docs/families.md section 3 spells it: `linear_attention`, or
    /// `mla` + `_nope` + `_sliding` + `_kv_shared` + `_dsa` / `_dsa_shared`.
    pub fn kind(&self) -> heapless::String<48> {
        let mut s = heapless::String::new();
        let parts: [(bool, &str); 6] = [
            (!self.mla, "linear_attention"),
            (self.mla, "mla"),
            (self.mla && self.nope, "_nope"),
            (self.mla && self.sliding, "_sliding"),
            (self.mla && self.kv_shared, "_kv_shared"),
            (
                self.mla && self.dsa != Dsa::None,
                if self.dsa == Dsa::Full {
                    "_dsa"
                } else {
                    "_dsa_shared"
                },
            ),
        ];
        for (on, text) in parts {
            if on {
                // 48 bytes hold the longest kind (34).
                let _ = s.push_str(text);
            }
        }
        s
    }
}

impl Config {
    /// The config of attention layer `layer` (transformers' `layer_idx`; longcat_flash:
    /// module `j` of decoder layer `i` is `2i + j`) of the model whose `config.json`
    /// is `json`, with the given cache capacity and tokens per call, and what else
    /// the layer needs ([`LayerInfo`]: family, kind, producer layers, checkpoint
    /// prefix). Every field is set; the result is validated.
    ///
    /// Statuses: `InvalidConfig` (malformed JSON, missing or mistyped keys, absurd
    /// values, layer out of range; the message names the key), `Unsupported` (not an
    /// MLA family, a layer that is not MLA, a RoPE type without a rule here). The
    /// result may still be refused by [`Config::check_supported`] when the engine
    /// does not run one of its mechanisms yet.
    ///
    /// ```
    /// use mla_core::config::{Config, Family};
    ///
    /// let json = br#"{"model_type": "deepseek_v3", "num_hidden_layers": 2,
    ///                 "hidden_size": 64, "num_attention_heads": 4, "q_lora_rank": 24,
    ///                 "kv_lora_rank": 16, "qk_nope_head_dim": 8, "qk_rope_head_dim": 8,
    ///                 "v_head_dim": 8, "rope_interleave": false}"#;
    /// let (cfg, info) = Config::from_hf_json(json, 1, 256, 32)?;
    /// assert_eq!((cfg.hidden_size, cfg.q_lora_rank, cfg.max_seq_len), (64, 24, 256));
    /// assert!(cfg.q_norm);
    /// assert_eq!(cfg.rope_layout, mla_core::RopeLayout::Half);
    /// assert_eq!(cfg.rms_norm_eps, 1e-6); // hard-coded by DeepseekV3Attention
    /// assert_eq!(cfg.softmax_scale, 0.25); // (8 + 8)^-0.5
    /// assert_eq!(info.family, Family::DeepseekV3);
    /// assert_eq!(info.prefix.as_str(), "model.layers.1.self_attn.");
    /// # Ok::<(), mla_core::Error>(())
    /// ```
    pub fn from_hf_json(
        json: &[u8],
        layer: u32,
        max_seq_len: u32,
        max_tokens_per_call: u32,
    ) -> Result<(Config, LayerInfo)> {
        let m = Model::parse(json)?;
        let info = m.layer_info(layer)?;
        if !info.mla {
            return Err(error(
                Status::Unsupported,
                "layer ",
                &[
                    N(u64::from(layer)),
                    S(" of "),
                    S(m.fam.model_type()),
                    S(" is linear_attention, not MLA"),
                ],
            ));
        }
        let cfg = m.layer_config(&info, max_seq_len, max_tokens_per_call)?;
        cfg.validate()?;
        Ok((cfg, info))
    }
}

/// The family, kind, producers and checkpoint prefix of attention layer `layer` of
/// the model whose `config.json` is `json`, for any layer (`mla` false for a
/// linear-attention layer) — e.g. layer 0 to learn `num_layers`. Statuses as
/// [`Config::from_hf_json`], except that a non-MLA layer is not an error.
pub fn hf_layer_info(json: &[u8], layer: u32) -> Result<LayerInfo> {
    Model::parse(json)?.layer_info(layer)
}

// ---------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------

/// A layer type of `layer_types`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LType {
    Full,
    Linear,
    Sliding,
    Indexed,
    /// Absent, null, or a name no rule here uses (MLA in the families that only
    /// look for `linear_attention`).
    Other,
}

fn ltype_of(s: &JsonStr) -> LType {
    if s.eq_str("full_attention") {
        LType::Full
    } else if s.eq_str("linear_attention") {
        LType::Linear
    } else if s.eq_str("sliding_attention") {
        LType::Sliding
    } else if s.eq_str("indexed_attention") {
        LType::Indexed
    } else {
        LType::Other
    }
}

/// dots3_note configs written before `per_layer_config` (converted as
/// Dots3NoteTextConfig does; `families._dots3_legacy`).
#[derive(Clone, Copy, Debug)]
struct Dots3 {
    /// Nested rope dict, `layer_types` and `per_layer_config`: nothing to convert.
    canonical: bool,
    use_dsa: Option<bool>,
    use_swa: bool,
    /// `per_layer_config` is a key (even null).
    has_plc: bool,
}

struct Model<'a> {
    fam: Family,
    /// The text config (or the top level).
    t: Obj<'a, { k::COUNT }>,
    /// Attention layers.
    nl: u32,
    dots3: Option<Dots3>,
}

/// A sparse-attention mode of `indexer_types`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Full,
    Shared,
}

impl<'a> Model<'a> {
    fn parse(json: &'a [u8]) -> Result<Model<'a>> {
        let text = core::str::from_utf8(json).map_err(|e| {
            error(
                Status::InvalidConfig,
                "config.json: not UTF-8 at byte ",
                &[N(e.valid_up_to() as u64)],
            )
        })?;
        crate::json::validate(text).map_err(|e| json_err(text, &Path::ROOT, e))?;
        let mut sc = Scanner::new(text);
        let first = sc.peek().map_err(|e| json_err(text, &Path::ROOT, e))?;
        if first != Kind::Object {
            return Err(error(
                Status::InvalidConfig,
                "config.json: expected an object",
                &[],
            ));
        }
        let at = sc.position();
        let top = Obj::read(text, at, &KEYS, Path::ROOT)?;
        let fam = match top.val(k::MODEL_TYPE) {
            Val::At(p) => {
                let s = top.str_at(k::MODEL_TYPE, p)?;
                let name = s.as_str().unwrap_or("");
                Family::from_model_type(name).ok_or_else(|| Family::unknown(s.raw()))?
            }
            _ => return Err(top.err(k::MODEL_TYPE, &[S("missing")])),
        };
        // The text config: `text_config` when the family keeps its keys there and
        // the object is not empty (Python's truthiness), else the top level.
        let mut t = top;
        if fam.text_config() {
            if let Some(tc) = top.obj_opt(k::TEXT_CONFIG, &KEYS)? {
                t = tc;
            }
        }
        let dflt = fam.defaults();
        let nl = if fam == Family::LongcatFlash {
            t.u64_or(k::NUM_LAYERS, Some(dflt.layers))?
                .saturating_mul(2)
        } else {
            t.u64_or(k::NUM_HIDDEN_LAYERS, Some(dflt.layers))?
        };
        if nl > u64::from(MAX_HF_LAYERS) {
            let key = if fam == Family::LongcatFlash {
                k::NUM_LAYERS
            } else {
                k::NUM_HIDDEN_LAYERS
            };
            return Err(t.err(
                key,
                &[
                    N(nl),
                    S(" attention layers, more than "),
                    N(u64::from(MAX_HF_LAYERS)),
                ],
            ));
        }
        let dots3 = if fam == Family::Dots3Note {
            let nested = match t.obj_opt(k::ROPE_PARAMETERS, &ROPE_KEYS)? {
                Some(rp) => [r::INDEXED, r::SLIDING, r::FULL]
                    .iter()
                    .any(|&x| rp.val(x) != Val::Absent),
                None => false,
            };
            let has_lt = !matches!(t.val(k::LAYER_TYPES), Val::Absent | Val::Null);
            let has_plc = t.val(k::PER_LAYER_CONFIG) != Val::Absent;
            let use_dsa = match t.val(k::USE_DSA) {
                Val::At(p) => Some(t.bool_at(k::USE_DSA, p)?),
                Val::Null => None,
                Val::Absent => (!has_plc).then_some(true),
            };
            Some(Dots3 {
                canonical: nested && has_lt && has_plc,
                use_dsa,
                use_swa: t.bool_or(k::USE_SLIDING_WINDOW, true)?,
                has_plc,
            })
        } else {
            None
        };
        Ok(Model {
            fam,
            t,
            nl: nl as u32,
            dots3,
        })
    }

    /// The type of layer `i` from `layer_types` (or the family's default).
    fn ltype(&self, i: u32) -> Result<LType> {
        let t = &self.t;
        let listed = |empty_is_default: bool| -> Result<Option<LType>> {
            match t.val(k::LAYER_TYPES) {
                Val::At(at) => {
                    let mut items = Items::open(t, k::LAYER_TYPES, at)?;
                    let first = items.clone().next()?;
                    if first.is_none() && empty_is_default {
                        return Ok(None);
                    }
                    let mut pos = None;
                    for _ in 0..=i {
                        pos = items.next()?;
                    }
                    let Some(p) = pos else {
                        return Err(items.short(i));
                    };
                    Ok(Some(
                        items.str_at(p)?.map_or(LType::Other, |s| ltype_of(&s)),
                    ))
                }
                _ => Ok(None),
            }
        };
        match self.fam {
            Family::KimiLinear => {
                if let Some(lt) = listed(false)? {
                    return Ok(lt);
                }
                if let Some(lac) = t.obj_opt(k::LINEAR_ATTN_CONFIG, &LINEAR_KEYS)? {
                    if lac.val(0) != Val::Absent && lac.val(1) != Val::Absent {
                        // 1-based layer numbers; the KDA list is applied last.
                        let mut lt = LType::Other;
                        for (key, kind) in [(0, LType::Full), (1, LType::Linear)] {
                            let Val::At(at) = lac.val(key) else {
                                return Err(lac.err(key, &[S("expected a list")]));
                            };
                            let mut items = Items::open(&lac, key, at)?;
                            while let Some(p) = items.next()? {
                                let x = items.i64_at(p)?;
                                if x < 1 || x > i64::from(self.nl) {
                                    return Err(items.err(&[S(
                                        "layer numbers are 1 .. num_hidden_layers (1-based)",
                                    )]));
                                }
                                if x == i64::from(i) + 1 {
                                    lt = kind;
                                }
                            }
                        }
                        return Ok(lt);
                    }
                }
                Ok(if i > 0 && i.is_multiple_of(4) {
                    LType::Full
                } else {
                    LType::Linear
                })
            }
            Family::BailingHybrid => {
                if let Some(lt) = listed(true)? {
                    return Ok(lt);
                }
                let g = t.u64_or(k::LAYER_GROUP_SIZE, Some(6))?;
                if g == 0 {
                    return Err(t.err(k::LAYER_GROUP_SIZE, &[S("must be > 0")]));
                }
                Ok(if (u64::from(i) + 1) % g == 0 {
                    LType::Full
                } else {
                    LType::Linear
                })
            }
            Family::Glm5Next => {
                let lt = match listed(true)? {
                    Some(lt) => lt,
                    None if i % 4 == 3 => LType::Indexed,
                    None => LType::Linear,
                };
                match lt {
                    LType::Full | LType::Indexed => Ok(LType::Indexed),
                    LType::Linear => Ok(LType::Linear),
                    _ => Err(t.err(
                        k::LAYER_TYPES,
                        &[
                            S("layer "),
                            N(u64::from(i)),
                            S(": glm5_next layers are indexed_attention, full_attention or linear_attention"),
                        ],
                    )),
                }
            }
            Family::Dots3Note => {
                let d3 = self.dots3.unwrap_or(Dots3 {
                    canonical: true,
                    use_dsa: None,
                    use_swa: true,
                    has_plc: true,
                });
                let mut lt = match listed(false)? {
                    Some(lt) => lt,
                    None => {
                        let full = if d3.use_dsa == Some(false) {
                            LType::Full
                        } else {
                            LType::Indexed
                        };
                        if !d3.use_swa || i < 2 || i % 4 == 1 {
                            full
                        } else {
                            LType::Sliding
                        }
                    }
                };
                if !d3.canonical {
                    lt = match (d3.use_dsa, lt) {
                        (Some(true), LType::Full) => LType::Indexed,
                        (Some(false), LType::Indexed) => LType::Full,
                        (_, other) => other,
                    };
                }
                match lt {
                    LType::Full | LType::Indexed | LType::Sliding => Ok(lt),
                    _ => Err(t.err(
                        k::LAYER_TYPES,
                        &[
                            S("layer "),
                            N(u64::from(i)),
                            S(": dots3_note layers are indexed_attention, sliding_attention or full_attention"),
                        ],
                    )),
                }
            }
            _ => Ok(listed(false)?.unwrap_or(LType::Other)),
        }
    }

    /// The sparse-attention modes of layers 0, 1, ... (`indexer_types` or its
    /// defaults), read in order.
    fn modes(&self) -> Result<Modes<'a>> {
        let t = &self.t;
        if let Val::At(at) = t.val(k::INDEXER_TYPES) {
            return Ok(Modes::List(Items::open(t, k::INDEXER_TYPES, at)?));
        }
        if matches!(self.fam, Family::HyV4 | Family::HyV4Vl) {
            return Ok(Modes::Hy);
        }
        if let Val::At(at) = t.val(k::INDEX_TOPK_PATTERN) {
            return match t.kind_at(k::INDEX_TOPK_PATTERN, at)? {
                Kind::String => {
                    let s = t.str_at(k::INDEX_TOPK_PATTERN, at)?;
                    let raw = s.as_str().ok_or_else(|| {
                        t.err(k::INDEX_TOPK_PATTERN, &[S("escapes are not supported")])
                    })?;
                    Ok(Modes::Pattern(raw.chars(), 0))
                }
                _ => Ok(Modes::List(Items::open(t, k::INDEX_TOPK_PATTERN, at)?)),
            };
        }
        let freq = t.u64_or(k::INDEX_TOPK_FREQ, Some(1))?.max(1);
        let off = match t.val(k::INDEX_SKIP_TOPK_OFFSET) {
            Val::At(at) => t.i64_at(k::INDEX_SKIP_TOPK_OFFSET, at)?,
            Val::Null => return Err(t.err(k::INDEX_SKIP_TOPK_OFFSET, &[S("is null")])),
            Val::Absent => 2,
        };
        Ok(Modes::Freq { freq, off })
    }

    /// Layer `i`'s kind, producers and prefix.
    fn layer_info(&self, i: u32) -> Result<LayerInfo> {
        let fam = self.fam;
        let t = &self.t;
        if i >= self.nl {
            return Err(error(
                Status::InvalidConfig,
                "layer: ",
                &[
                    N(u64::from(i)),
                    S(" is out of range ("),
                    S(fam.model_type()),
                    S(" has "),
                    N(u64::from(self.nl)),
                    S(" attention layers)"),
                ],
            ));
        }
        let lt = self.ltype(i)?;
        let mut info = LayerInfo {
            family: fam,
            layer: i,
            num_layers: self.nl,
            mla: lt != LType::Linear,
            nope: false,
            sliding: false,
            kv_shared: false,
            kv_source_layer: i,
            dsa: Dsa::None,
            topk_source_layer: i,
            attention_bias: false,
            prefix: fam.prefix(i)?,
        };
        if !info.mla {
            return Ok(info);
        }
        info.attention_bias = self.view(i, lt)?.bool_or(k::ATTENTION_BIAS, false)?;
        info.nope = self.nope(i)?;
        info.sliding = fam == Family::Dots3Note && lt == LType::Sliding;
        // KV sharing (mistral_large4): the source must be an earlier layer with its
        // own cache and the same RoPE kind (transformers keys the shared latent by
        // rope/NoPE).
        if fam == Family::MistralLarge4 {
            if let Some((items, p)) = t.item(k::KV_SOURCE_LAYERS, i)? {
                let src = items.i64_at(p)?;
                let bad = |why: &str| {
                    items.err(&[
                        S("layer "),
                        N(u64::from(i)),
                        S(" reads layer "),
                        N(src.unsigned_abs()),
                        S(why),
                    ])
                };
                if src < 0 || src > i64::from(i) {
                    return Err(bad(", not an earlier layer"));
                }
                let src = src as u32;
                if src != i {
                    let (items2, p2) = t
                        .item(k::KV_SOURCE_LAYERS, src)?
                        .ok_or_else(|| bad(", missing"))?;
                    if items2.i64_at(p2)? != i64::from(src) {
                        return Err(bad(", which itself reads another layer's cache"));
                    }
                    if self.ltype(src)? == LType::Linear {
                        return Err(bad(", which is not MLA"));
                    }
                    if self.nope(src)? != info.nope {
                        return Err(bad(", whose RoPE kind (rope / NoPE) differs"));
                    }
                    info.kv_shared = true;
                    info.kv_source_layer = src;
                }
            }
        }
        // Sparse attention.
        let dsa_here = fam.dsa_every_layer()
            || (matches!(fam, Family::Dots3Note | Family::Glm5Next) && lt == LType::Indexed);
        if !dsa_here {
            return Ok(info);
        }
        if !fam.reads_indexer_types() {
            info.dsa = Dsa::Full;
            return Ok(info);
        }
        let mut modes = self.modes()?;
        if fam == Family::Glm5Next {
            // Shared top-k only from the immediately preceding layer.
            let prev_full = if i > 0 {
                let mut prev = Mode::Shared;
                for j in 0..i {
                    prev = modes.next(t, j)?;
                }
                prev == Mode::Full && self.ltype(i - 1)? == LType::Indexed
            } else {
                false
            };
            let mode = modes.next(t, i)?;
            if mode == Mode::Full {
                info.dsa = Dsa::Full;
            } else if prev_full {
                info.dsa = Dsa::Shared;
                info.topk_source_layer = i - 1;
            } else {
                return Err(t.err(
                    k::INDEXER_TYPES,
                    &[
                        S("layer "),
                        N(u64::from(i)),
                        S(" is shared but layer i - 1 is not a full indexed layer"),
                    ],
                ));
            }
            return Ok(info);
        }
        // The most recent earlier layer with its own indexer. (All layers of these
        // families are MLA with sparse attention unless `layer_types` says linear.)
        let mut types = match t.val(k::LAYER_TYPES) {
            Val::At(at) => Some(Items::open(t, k::LAYER_TYPES, at)?),
            _ => None,
        };
        let mut last_full = None;
        for j in 0..=i {
            let mode = modes.next(t, j)?;
            let linear = match types.as_mut() {
                Some(items) => match items.next()? {
                    Some(p) => items
                        .str_at(p)?
                        .is_some_and(|s| s.eq_str("linear_attention")),
                    None => return Err(items.short(j)),
                },
                None => false,
            };
            if j == i {
                if mode == Mode::Full {
                    info.dsa = Dsa::Full;
                } else {
                    let src = last_full.ok_or_else(|| {
                        t.err(
                            k::INDEXER_TYPES,
                            &[
                                S("layer "),
                                N(u64::from(i)),
                                S(" is shared but no earlier layer is full"),
                            ],
                        )
                    })?;
                    info.dsa = Dsa::Shared;
                    info.topk_source_layer = src;
                }
            } else if mode == Mode::Full && !linear {
                last_full = Some(j);
            }
        }
        Ok(info)
    }

    /// Layer `i` has no rotary embedding.
    fn nope(&self, i: u32) -> Result<bool> {
        Ok(match self.fam {
            Family::KimiLinear | Family::Glm5Next => true,
            Family::MistralLarge4 => {
                let t = &self.t;
                match t.item(k::NO_ROPE_LAYERS, i)? {
                    Some((items, p)) => !items.truthy_at(p)?,
                    None => {
                        let every = t.u64_or(k::NO_ROPE_LAYER_INTERVAL, Some(4))?;
                        if every == 0 {
                            return Err(t.err(k::NO_ROPE_LAYER_INTERVAL, &[S("must be > 0")]));
                        }
                        (u64::from(i) + 1) % every == 0
                    }
                }
            }
            _ => false,
        })
    }

    /// The keys of layer `i` (dots3_note: with its `per_layer_config` overrides).
    fn view(&self, i: u32, lt: LType) -> Result<View<'_, 'a>> {
        let mut v = View {
            m: self,
            over: None,
            swa: false,
        };
        let Some(d3) = self.dots3 else {
            return Ok(v);
        };
        if d3.has_plc {
            let t = &self.t;
            if let Val::At(at) = t.val(k::PER_LAYER_CONFIG) {
                if t.kind_at(k::PER_LAYER_CONFIG, at)? != Kind::Object {
                    return Err(t.err(k::PER_LAYER_CONFIG, &[S("expected an object")]));
                }
                let mut sc = t.sc(at);
                let je = |e| json_err(t.text, &t.path, e);
                let obj = sc.object().map_err(je)?;
                while let Some(key) = sc.next_key(&obj).map_err(je)? {
                    // Keys are layer indices, maybe zero-padded ("02").
                    let raw = key.as_str().unwrap_or("");
                    let digits = !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit());
                    if !digits {
                        return Err(t.err(
                            k::PER_LAYER_CONFIG,
                            &[S("key '"), S(raw), S("' is not a layer index")],
                        ));
                    }
                    let idx = raw.bytes().try_fold(0u64, |a, b| {
                        a.checked_mul(10)?.checked_add(u64::from(b - b'0'))
                    });
                    if idx == Some(u64::from(i)) {
                        let at = sc.position();
                        if sc.peek().map_err(je)? != Kind::Object {
                            return Err(t.err(
                                k::PER_LAYER_CONFIG,
                                &[S("entry '"), S(raw), S("' is not an object")],
                            ));
                        }
                        let path = t.path.join("per_layer_config").join(raw);
                        v.over = Some(Obj::read(t.text, at, &KEYS, path)?);
                        break;
                    }
                }
            }
        } else {
            v.swa = lt == LType::Sliding;
        }
        Ok(v)
    }
}
