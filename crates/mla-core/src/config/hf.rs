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
// JSON access: one pass per object into a table of value positions
// ---------------------------------------------------------------------------------

/// Where a key's value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Val {
    /// The key is not there.
    Absent,
    /// `null`.
    Null,
    /// The value begins at this byte offset (after optional whitespace).
    At(usize),
}

/// The keys of an object, for messages: up to 3 enclosing keys.
#[derive(Clone, Copy, Debug)]
struct Path<'a> {
    parts: [&'a str; 3],
    len: usize,
}

impl<'a> Path<'a> {
    const ROOT: Path<'static> = Path {
        parts: [""; 3],
        len: 0,
    };

    fn join(&self, key: &'a str) -> Path<'a> {
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
    fn err(&self, key: &str, why: &[Piece]) -> Error {
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
fn json_err(text: &str, path: &Path, e: JsonError) -> Error {
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
struct Obj<'a, const K: usize> {
    text: &'a str,
    names: &'static [&'static str; K],
    vals: [Val; K],
    path: Path<'a>,
    /// Keys in the object.
    len: usize,
}

impl<'a, const K: usize> Obj<'a, K> {
    /// Reads the object at byte `at` (which must begin an object).
    fn read(
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

    fn val(&self, i: usize) -> Val {
        self.vals.get(i).copied().unwrap_or(Val::Absent)
    }

    fn name(&self, i: usize) -> &'static str {
        self.names.get(i).copied().unwrap_or("?")
    }

    fn err(&self, i: usize, why: &[Piece]) -> Error {
        self.path.err(self.name(i), why)
    }

    fn sc(&self, at: usize) -> Scanner<'a> {
        Scanner::starting_at(self.text, at)
    }

    fn kind_at(&self, i: usize, at: usize) -> Result<Kind> {
        self.sc(at)
            .peek()
            .map_err(|_| self.err(i, &[S("no value")]))
    }

    /// A non-negative integer value at `at`.
    fn u64_at(&self, i: usize, at: usize) -> Result<u64> {
        self.sc(at)
            .u64()
            .map_err(|_| self.err(i, &[S("expected a non-negative integer")]))
    }

    /// An integer (maybe negative) at `at`.
    fn i64_at(&self, i: usize, at: usize) -> Result<i64> {
        self.sc(at)
            .i64()
            .map_err(|_| self.err(i, &[S("expected an integer")]))
    }

    /// A number at `at`, as f64.
    fn f64_at(&self, i: usize, at: usize) -> Result<f64> {
        self.sc(at)
            .f64()
            .map_err(|_| self.err(i, &[S("expected a finite number")]))
    }

    fn bool_at(&self, i: usize, at: usize) -> Result<bool> {
        self.sc(at)
            .bool()
            .map_err(|_| self.err(i, &[S("expected true or false")]))
    }

    fn str_at(&self, i: usize, at: usize) -> Result<JsonStr<'a>> {
        self.sc(at)
            .string()
            .map_err(|_| self.err(i, &[S("expected a string")]))
    }

    /// The key's object value (`None` for absent, null or an empty object, which
    /// Python's `or` passes over); anything else than an object is an error.
    fn obj_opt<const J: usize>(
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
    fn u64_or(&self, i: usize, default: Option<u64>) -> Result<u64> {
        match self.val(i) {
            Val::At(at) => self.u64_at(i, at),
            Val::Null => Err(self.err(i, &[S("is null")])),
            Val::Absent => default.ok_or_else(|| self.err(i, &[S("missing")])),
        }
    }

    /// Number key: absent -> `default` (an error when `None`), null -> error.
    fn f64_or(&self, i: usize, default: Option<f64>) -> Result<f64> {
        match self.val(i) {
            Val::At(at) => self.f64_at(i, at),
            Val::Null => Err(self.err(i, &[S("is null")])),
            Val::Absent => default.ok_or_else(|| self.err(i, &[S("missing")])),
        }
    }

    /// Number key read as Python's `x or default` / `x if x else`: absent, null
    /// and 0 give `None`.
    fn f64_truthy(&self, i: usize) -> Result<Option<f64>> {
        match self.val(i) {
            Val::At(at) => {
                let v = self.f64_at(i, at)?;
                Ok((v != 0.0).then_some(v))
            }
            _ => Ok(None),
        }
    }

    /// Boolean key: absent -> `default`, null -> false (`bool(None)`).
    fn bool_or(&self, i: usize, default: bool) -> Result<bool> {
        match self.val(i) {
            Val::At(at) => self.bool_at(i, at),
            Val::Null => Ok(false),
            Val::Absent => Ok(default),
        }
    }

    /// Item `j` of the list under key `i` (`Ok(None)` when the key is absent or
    /// null); an error when the list is shorter.
    fn item(&self, i: usize, j: u32) -> Result<Option<(Items<'a>, usize)>> {
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
struct Items<'a> {
    sc: Scanner<'a>,
    arr: Array,
    path: Path<'a>,
    key: &'static str,
    /// Items read.
    n: u32,
    text: &'a str,
}

impl<'a> Items<'a> {
    fn open<const K: usize>(o: &Obj<'a, K>, i: usize, at: usize) -> Result<Items<'a>> {
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
    fn next(&mut self) -> Result<Option<usize>> {
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

    fn err(&self, why: &[Piece]) -> Error {
        self.path.err(self.key, why)
    }

    /// "`key`: N entries, layer j needs more".
    fn short(&self, j: u32) -> Error {
        self.err(&[
            S("has "),
            N(u64::from(self.n)),
            S(" entries, too few for layer "),
            N(u64::from(j)),
        ])
    }

    fn sc(&self, at: usize) -> Scanner<'a> {
        Scanner::starting_at(self.text, at)
    }

    /// The item at `at` as a string, or `None` for null.
    fn str_at(&self, at: usize) -> Result<Option<JsonStr<'a>>> {
        let mut sc = self.sc(at);
        if sc.eat_null().unwrap_or(false) {
            return Ok(None);
        }
        sc.string()
            .map(Some)
            .map_err(|_| self.err(&[S("entries must be strings")]))
    }

    fn i64_at(&self, at: usize) -> Result<i64> {
        self.sc(at)
            .i64()
            .map_err(|_| self.err(&[S("entries must be integers")]))
    }

    /// Python truthiness of a number or boolean item (`no_rope_layers`).
    fn truthy_at(&self, at: usize) -> Result<bool> {
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

// ---------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------

/// Keys of the text config (and of a dots3_note per-layer override).
mod k {
    pub const MODEL_TYPE: usize = 0;
    pub const TEXT_CONFIG: usize = 1;
    pub const HIDDEN_SIZE: usize = 2;
    pub const NUM_HIDDEN_LAYERS: usize = 3;
    pub const NUM_LAYERS: usize = 4;
    pub const HEADS: usize = 5;
    pub const Q_LORA_RANK: usize = 6;
    pub const KV_LORA_RANK: usize = 7;
    pub const NOPE: usize = 8;
    pub const ROPE: usize = 9;
    pub const V: usize = 10;
    pub const QK_HEAD_DIM: usize = 11;
    pub const RMS_NORM_EPS: usize = 12;
    pub const ATTENTION_BIAS: usize = 13;
    pub const MAX_POS: usize = 14;
    pub const MODEL_MAX_LENGTH: usize = 15;
    pub const ROPE_PARAMETERS: usize = 16;
    pub const ROPE_SCALING: usize = 17;
    pub const ROPE_THETA: usize = 18;
    pub const ROPE_INTERLEAVE: usize = 19;
    pub const LAYER_TYPES: usize = 20;
    pub const LINEAR_ATTN_CONFIG: usize = 21;
    pub const LAYER_GROUP_SIZE: usize = 22;
    pub const KV_SOURCE_LAYERS: usize = 23;
    pub const NO_ROPE_LAYERS: usize = 24;
    pub const NO_ROPE_LAYER_INTERVAL: usize = 25;
    pub const INDEXER_TYPES: usize = 26;
    pub const INDEX_TOPK_PATTERN: usize = 27;
    pub const INDEX_TOPK_FREQ: usize = 28;
    pub const INDEX_SKIP_TOPK_OFFSET: usize = 29;
    pub const INDEX_N_HEADS: usize = 30;
    pub const INDEX_HEAD_DIM: usize = 31;
    pub const INDEX_TOPK: usize = 32;
    pub const INDEX_KPOOL: usize = 33;
    pub const INDEX_KPOOL_TAIL: usize = 34;
    pub const PER_LAYER_CONFIG: usize = 35;
    pub const SLIDING_WINDOW: usize = 36;
    pub const SLIDING_WINDOW_SIZE: usize = 37;
    pub const USE_DSA: usize = 38;
    pub const USE_SLIDING_WINDOW: usize = 39;
    pub const SWA_ROPE_THETA: usize = 40;
    pub const SWA_HEADS: usize = 41;
    pub const SWA_Q_LORA_RANK: usize = 42;
    pub const SWA_KV_LORA_RANK: usize = 43;
    pub const SWA_HEAD_DIM: usize = 44;
    pub const SWA_NOPE: usize = 45;
    pub const SWA_V: usize = 46;
    pub const SWA_ROPE: usize = 47;
    pub const COUNT: usize = 48;
}

static KEYS: [&str; k::COUNT] = [
    "model_type",
    "text_config",
    "hidden_size",
    "num_hidden_layers",
    "num_layers",
    "num_attention_heads",
    "q_lora_rank",
    "kv_lora_rank",
    "qk_nope_head_dim",
    "qk_rope_head_dim",
    "v_head_dim",
    "qk_head_dim",
    "rms_norm_eps",
    "attention_bias",
    "max_position_embeddings",
    "model_max_length",
    "rope_parameters",
    "rope_scaling",
    "rope_theta",
    "rope_interleave",
    "layer_types",
    "linear_attn_config",
    "layer_group_size",
    "kv_source_layers",
    "no_rope_layers",
    "no_rope_layer_interval",
    "indexer_types",
    "index_topk_pattern",
    "index_topk_freq",
    "index_skip_topk_offset",
    "index_n_heads",
    "index_head_dim",
    "index_topk",
    "index_kpool",
    "index_kpool_always_select_tail",
    "per_layer_config",
    "sliding_window",
    "sliding_window_size",
    "use_dsa",
    "use_sliding_window",
    "swa_rope_theta",
    "swa_num_attention_heads",
    "swa_q_lora_rank",
    "swa_kv_lora_rank",
    "swa_head_dim",
    "swa_qk_nope_head_dim",
    "swa_v_head_dim",
    "swa_qk_rope_head_dim",
];

/// Keys of a RoPE dict (and of dots3_note's per-layer-type entries).
mod r {
    pub const ROPE_TYPE: usize = 0;
    pub const TYPE: usize = 1;
    pub const THETA: usize = 2;
    pub const FACTOR: usize = 3;
    pub const L0: usize = 4;
    pub const BETA_FAST: usize = 5;
    pub const BETA_SLOW: usize = 6;
    pub const TRUNCATE: usize = 7;
    pub const ATTENTION_FACTOR: usize = 8;
    pub const MSCALE: usize = 9;
    pub const MSCALE_ALL_DIM: usize = 10;
    pub const LOW_FREQ: usize = 11;
    pub const HIGH_FREQ: usize = 12;
    pub const SHORT_FACTOR: usize = 13;
    pub const LONG_FACTOR: usize = 14;
    pub const LLAMA4_BETA: usize = 15;
    pub const INDEXED: usize = 16;
    pub const SLIDING: usize = 17;
    pub const FULL: usize = 18;
    pub const COUNT: usize = 19;
}

static ROPE_KEYS: [&str; r::COUNT] = [
    "rope_type",
    "type",
    "rope_theta",
    "factor",
    "original_max_position_embeddings",
    "beta_fast",
    "beta_slow",
    "truncate",
    "attention_factor",
    "mscale",
    "mscale_all_dim",
    "low_freq_factor",
    "high_freq_factor",
    "short_factor",
    "long_factor",
    "llama_4_scaling_beta",
    "indexed_attention",
    "sliding_attention",
    "full_attention",
];

static LINEAR_KEYS: [&str; 2] = ["full_attn_layers", "kda_layers"];

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

    /// Layer `i`'s config (`info` from [`Model::layer_info`], an MLA layer).
    fn layer_config(&self, info: &LayerInfo, max_seq_len: u32, max_tok: u32) -> Result<Config> {
        let fam = self.fam;
        let i = info.layer;
        let lt = self.ltype(i)?;
        let c = self.view(i, lt)?;
        let dflt = fam.defaults();
        let d = c.u32(k::HIDDEN_SIZE, Some(dflt.hidden_size))?;
        let h = c.u32(k::HEADS, Some(dflt.heads))?;
        let rq = if fam == Family::MistralLarge4 {
            0
        } else {
            c.q_lora_rank(dflt.q_lora_rank)?
        };
        if fam.always_lora() && rq == 0 {
            return Err(self.t.err(
                k::Q_LORA_RANK,
                &[
                    S(fam.model_type()),
                    S(" always uses the query LoRA (must be > 0)"),
                ],
            ));
        }
        let r = c.u32(k::KV_LORA_RANK, Some(dflt.kv_lora_rank))?;
        let n_cfg = c.u32(k::NOPE, Some(dflt.nope))?;
        let p_cfg = c.u32(k::ROPE, Some(dflt.rope))?;
        let v = c.u32(k::V, Some(dflt.v))?;
        let eps_cfg = c.f64(k::RMS_NORM_EPS, Some(dflt.rms_norm_eps))?;
        let eps = if fam.eps_from_config() { eps_cfg } else { 1e-6 };
        if fam == Family::Glm5Next && p_cfg != 0 {
            return Err(c.err(k::ROPE, &[S("must be 0 for glm5_next (NoPE)")]));
        }
        // mistral_large4 NoPE layers: n + p unrotated, no rope slot.
        let (n, p) = if fam == Family::MistralLarge4 && info.nope {
            let np = n_cfg.checked_add(p_cfg).ok_or_else(|| {
                c.err(
                    k::NOPE,
                    &[S("qk_nope_head_dim + qk_rope_head_dim overflows")],
                )
            })?;
            (np, 0)
        } else {
            (n_cfg, p_cfg)
        };

        let mut cfg = Config::plain();
        cfg.hidden_size = d;
        cfg.num_heads = h;
        cfg.q_lora_rank = rq;
        cfg.kv_lora_rank = r;
        cfg.qk_nope_head_dim = n;
        cfg.qk_rope_head_dim = p;
        cfg.v_head_dim = v;
        cfg.max_seq_len = max_seq_len;
        cfg.max_tokens_per_call = max_tok;
        cfg.q_norm = rq > 0;
        cfg.rms_norm_eps = eps as f32;

        // ---- RoPE
        let rope = self.rope(lt)?;
        let layout = match fam {
            Family::Minicpm3 | Family::HyV4 => RopeLayout::Half,
            f if f.reads_rope_interleave() => {
                if c.bool_or(k::ROPE_INTERLEAVE, true)? {
                    RopeLayout::Interleaved
                } else {
                    RopeLayout::Half
                }
            }
            _ => RopeLayout::Interleaved,
        };
        cfg.rope_layout = layout;
        cfg.rope_theta = rope.theta as f32;
        if info.nope {
            cfg.rope_type = RopeType::None;
            cfg.rope_attention_factor = 1.0;
        } else {
            rope.fill(&mut cfg, p)?;
            cfg.rope_freq_alpha = fam == Family::MistralLarge4;
        }
        cfg.rope_key_norm = fam == Family::Dots3Note;

        // ---- softmax scale
        let qk = match fam {
            Family::LongcatFlash => match c.find(k::QK_HEAD_DIM) {
                (Val::At(at), o) => {
                    let v = o.u64_at(k::QK_HEAD_DIM, at)?;
                    if v == 0 {
                        u64::from(n) + u64::from(p)
                    } else {
                        v
                    }
                }
                _ => u64::from(n) + u64::from(p),
            },
            Family::MistralLarge4 => u64::from(n_cfg) + u64::from(p_cfg),
            _ => u64::from(n) + u64::from(p),
        };
        let mut scale = libm::pow(qk as f64, -0.5);
        if !matches!(
            fam,
            Family::KimiLinear | Family::Glm5Next | Family::Dots3Note
        ) && rope.kind != RopeKind::Default
        {
            if let Some(msa) = rope.mscale_all_dim {
                let m = yarn_mscale(rope.factor_for_mscale()?, msa);
                scale = scale * m * m;
            }
        }
        cfg.softmax_scale = scale as f32;

        // ---- window, latent scales, query scaling, gates, sinks
        if info.sliding {
            let w = match c.find(k::SLIDING_WINDOW) {
                (Val::At(at), o) => o.u64_at(k::SLIDING_WINDOW, at)?,
                _ => match self.dots3.map(|d| d.canonical) {
                    Some(false) => self.t.u64_or(k::SLIDING_WINDOW_SIZE, Some(512))?,
                    _ => 512,
                },
            };
            cfg.sliding_window = u32::try_from(w)
                .ok()
                .filter(|&w| w > 0)
                .ok_or_else(|| c.err(k::SLIDING_WINDOW, &[S("must be 1 .. 2^32-1")]))?;
        }
        if matches!(fam, Family::LongcatFlash | Family::Dots3Note) {
            cfg.q_latent_scale = libm::pow(f64::from(d) / f64::from(rq), 0.5) as f32;
            cfg.kv_latent_scale = libm::pow(f64::from(d) / f64::from(r), 0.5) as f32;
        }
        match fam {
            Family::Mistral4 => {
                cfg.query_scale = QueryScale::Llama4;
                cfg.query_scale_beta = rope.llama4_beta.ok_or_else(|| {
                    rope.err(
                        r::LLAMA4_BETA,
                        &[S("missing (Llama 4 query scaling needs it)")],
                    )
                })? as f32;
                cfg.query_scale_length = rope.l0.ok_or_else(|| {
                    rope.err(r::L0, &[S("missing (Llama 4 query scaling needs it)")])
                })?;
            }
            Family::MistralLarge4 => cfg.query_scale = QueryScale::LearnedLogPos,
            _ => {}
        }
        cfg.gate = match fam {
            Family::BailingHybrid | Family::Dots3Note => Gate::PerHead,
            Family::HyV4 | Family::HyV4Vl => Gate::PerChannel,
            Family::Axk2 => Gate::FusedQ,
            _ => Gate::None,
        };
        cfg.sinks = matches!(fam, Family::HyV4 | Family::HyV4Vl);
        cfg.kv_shared = info.kv_shared;

        // ---- sparse attention
        cfg.dsa = info.dsa;
        if info.dsa != Dsa::None {
            cfg.index_n_heads = c.u32(k::INDEX_N_HEADS, Some(dflt.index_n_heads))?;
            cfg.index_head_dim = c.u32(k::INDEX_HEAD_DIM, Some(dflt.index_head_dim))?;
            cfg.index_topk = c.u32(k::INDEX_TOPK, Some(dflt.index_topk))?;
        }
        if info.dsa == Dsa::Full {
            cfg.index_q_input = if fam == Family::MistralLarge4 {
                IndexQInput::HiddenLayerNorm
            } else {
                IndexQInput::QLatent
            };
            cfg.index_q_norm_eps = 1e-6;
            cfg.index_query_scale = fam == Family::MistralLarge4;
            cfg.index_k_norm_eps = if matches!(fam, Family::HyV4 | Family::HyV4Vl) {
                eps_cfg as f32
            } else {
                1e-6
            };
            if info.nope {
                cfg.index_rope = IndexRope::None;
            } else {
                cfg.index_rope = if matches!(fam, Family::HyV4 | Family::HyV4Vl) {
                    IndexRope::Last
                } else {
                    IndexRope::First
                };
                cfg.index_rope_layout =
                    if matches!(fam, Family::DeepseekV32 | Family::Axk2 | Family::HyV4) {
                        RopeLayout::Half
                    } else {
                        RopeLayout::Interleaved
                    };
            }
            if fam == Family::Glm5Next {
                cfg.index_kpool = c.u32(k::INDEX_KPOOL, Some(16))?;
                cfg.index_kpool_tail = c.bool_or(k::INDEX_KPOOL_TAIL, true)?;
            }
        }
        Ok(cfg)
    }

    /// The RoPE dict of a layer of type `lt` (after the class's standardisation).
    fn rope(&self, lt: LType) -> Result<Rope<'a>> {
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
    fn max_pos(&self) -> Result<Option<u64>> {
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

/// The per-layer-type indexer modes, read in layer order.
enum Modes<'a> {
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
    fn next(&mut self, t: &Obj<'_, { k::COUNT }>, j: u32) -> Result<Mode> {
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
struct View<'m, 'a> {
    m: &'m Model<'a>,
    over: Option<Obj<'a, { k::COUNT }>>,
    swa: bool,
}

impl<'a> View<'_, 'a> {
    /// The value of key `i` and the object it is in.
    fn find(&self, i: usize) -> (Val, &Obj<'a, { k::COUNT }>) {
        if let Some(o) = &self.over {
            if o.val(i) != Val::Absent {
                return (o.val(i), o);
            }
        }
        (self.m.t.val(i), &self.m.t)
    }

    fn err(&self, i: usize, why: &[Piece]) -> Error {
        self.find(i).1.err(i, why)
    }

    /// Legacy dots3_note sliding layers: the `swa_*` key and default of a dim.
    fn swa_key(&self, i: usize) -> Option<(usize, u64)> {
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

    fn u64_raw(&self, i: usize, default: Option<u64>) -> Result<u64> {
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
    fn u32(&self, i: usize, default: Option<u64>) -> Result<u32> {
        let v = self.u64_raw(i, default)?;
        u32::try_from(v).map_err(|_| self.err(i, &[N(v), S(" does not fit 32 bits")]))
    }

    /// `q_lora_rank`: null is 0 (the plain q_proj).
    fn q_lora_rank(&self, default: u64) -> Result<u32> {
        if self.swa_key(k::Q_LORA_RANK).is_none() && self.find(k::Q_LORA_RANK).0 == Val::Null {
            return Ok(0);
        }
        self.u32(k::Q_LORA_RANK, Some(default))
    }

    fn f64(&self, i: usize, default: Option<f64>) -> Result<f64> {
        let (val, o) = self.find(i);
        match val {
            Val::At(at) => o.f64_at(i, at),
            Val::Null => Err(o.err(i, &[S("is null")])),
            Val::Absent => default.ok_or_else(|| o.err(i, &[S("missing")])),
        }
    }

    fn bool_or(&self, i: usize, default: bool) -> Result<bool> {
        let (_, o) = self.find(i);
        o.bool_or(i, default)
    }
}

/// A RoPE type with a rule here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RopeKind {
    Default,
    Linear,
    Yarn,
    LongRope,
    Llama3,
}

/// The YaRN dict a class builds when the config has none (`families.DEFAULT_ROPE`).
struct BuiltinRope {
    theta: f64,
    factor: f64,
    l0: u32,
    mscale: Option<f64>,
    mscale_all_dim: Option<f64>,
    attention_factor: Option<f64>,
    llama4_beta: Option<f64>,
}

static MISTRAL4_ROPE: BuiltinRope = BuiltinRope {
    theta: 10000.0,
    factor: 128.0,
    l0: 8192,
    mscale: Some(1.0),
    mscale_all_dim: Some(1.0),
    attention_factor: None,
    llama4_beta: Some(0.1),
};

static MISTRAL_LARGE4_ROPE: BuiltinRope = BuiltinRope {
    theta: 10000.0,
    factor: 2048.0,
    l0: 512,
    mscale: None,
    mscale_all_dim: None,
    attention_factor: Some(1.0),
    llama4_beta: None,
};

/// One layer's RoPE parameters.
struct Rope<'a> {
    /// The dict (`None`: `{}` or a builtin).
    d: Option<Obj<'a, { r::COUNT }>>,
    builtin: Option<&'static BuiltinRope>,
    theta: f64,
    kind: RopeKind,
    truncate: bool,
    max_pos: Option<u64>,
    /// `original_max_position_embeddings` (defaulted for yarn, longrope, llama3).
    l0: Option<u32>,
    /// `factor` as given.
    factor: Option<f64>,
    /// `mscale_all_dim` when present and non-zero.
    mscale_all_dim: Option<f64>,
    llama4_beta: Option<f64>,
}

/// `0.1 * m * ln(s) + 1` (1 for s <= 1): YaRN's magnitude scale.
fn yarn_mscale(s: f64, m: f64) -> f64 {
    if s <= 1.0 {
        1.0
    } else {
        0.1 * m * libm::log(s) + 1.0
    }
}

impl Rope<'_> {
    fn err(&self, i: usize, why: &[Piece]) -> Error {
        match &self.d {
            Some(d) => d.err(i, why),
            None => Path::ROOT
                .join("rope_parameters")
                .err(ROPE_KEYS.get(i).copied().unwrap_or("?"), why),
        }
    }

    /// `factor`, or `max_position_embeddings / original_max_position_embeddings`
    /// where the type allows it (yarn, longrope).
    fn factor_or_derived(&self) -> Result<f64> {
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
    fn factor_for_mscale(&self) -> Result<f64> {
        match self.kind {
            RopeKind::Yarn | RopeKind::LongRope => self.factor_or_derived(),
            _ => self
                .factor
                .ok_or_else(|| self.err(r::FACTOR, &[S("missing (needed with mscale_all_dim)")])),
        }
    }

    /// A number of the dict: absent -> `None`, null -> error.
    fn num(&self, i: usize) -> Result<Option<f64>> {
        let Some(d) = &self.d else { return Ok(None) };
        match d.val(i) {
            Val::At(at) => Ok(Some(d.f64_at(i, at)?)),
            Val::Null => Err(d.err(i, &[S("is null")])),
            Val::Absent => Ok(None),
        }
    }

    /// The RoPE fields of `cfg` for rotary dim `p`.
    fn fill(&self, cfg: &mut Config, p: u32) -> Result<()> {
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
