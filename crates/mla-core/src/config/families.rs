//! The MLA families of Hugging Face transformers (docs/families.md): their
//! `model_type` names, the defaults of their config classes, the checkpoint path
//! of their attention modules and the names of the tensors under it.
//!
//! Facts only (names, defaults); the rules that turn a `config.json` into one
//! layer's [`Config`](super::Config) are in the `hf` module.

use crate::status::{err, Result, Status};

/// A model family whose attention is MLA (the `model_type` of its `config.json`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// `deepseek_v2`
    DeepseekV2 = 0,
    /// `deepseek_v3`
    DeepseekV3 = 1,
    /// `sarvam_mla`
    SarvamMla = 2,
    /// `kimi_k25` (keys in `text_config`)
    KimiK25 = 3,
    /// `youtu`
    Youtu = 4,
    /// `axk1`
    Axk1 = 5,
    /// `glm4_moe_lite`
    Glm4MoeLite = 6,
    /// `minicpm3`
    Minicpm3 = 7,
    /// `kimi_linear` (hybrid: linear-attention layers are not MLA)
    KimiLinear = 8,
    /// `bailing_hybrid` (hybrid)
    BailingHybrid = 9,
    /// `mistral4`
    Mistral4 = 10,
    /// `mistral_large4` (keys in `text_config`)
    MistralLarge4 = 11,
    /// `longcat_flash` (two MLA modules per decoder layer)
    LongcatFlash = 12,
    /// `deepseek_v32`
    DeepseekV32 = 13,
    /// `glm_moe_dsa`
    GlmMoeDsa = 14,
    /// `axk2`
    Axk2 = 15,
    /// `hy_v4`
    HyV4 = 16,
    /// `hy_v4_vl` (keys in `text_config`)
    HyV4Vl = 17,
    /// `dots3_note` (also `dots3_note_text`; keys in `text_config` or flat)
    Dots3Note = 18,
    /// `glm5_next` (hybrid; keys in `text_config` or flat)
    Glm5Next = 19,
}

/// Every family, in the order of their values.
pub const FAMILIES: [Family; 20] = [
    Family::DeepseekV2,
    Family::DeepseekV3,
    Family::SarvamMla,
    Family::KimiK25,
    Family::Youtu,
    Family::Axk1,
    Family::Glm4MoeLite,
    Family::Minicpm3,
    Family::KimiLinear,
    Family::BailingHybrid,
    Family::Mistral4,
    Family::MistralLarge4,
    Family::LongcatFlash,
    Family::DeepseekV32,
    Family::GlmMoeDsa,
    Family::Axk2,
    Family::HyV4,
    Family::HyV4Vl,
    Family::Dots3Note,
    Family::Glm5Next,
];

/// Sub-config model_types that have no causal-LM class of their own: their
/// checkpoints are the composite's (docs/families.md section 1).
const TEXT_SUBCONFIGS: [(&str, &str); 3] = [
    ("mistral_large4_text", "mistral_large4"),
    ("hy_v4_vl_text", "hy_v4_vl"),
    ("glm5_next_text", "glm5_next"),
];

impl Family {
    /// The family's `model_type` string.
    pub const fn model_type(self) -> &'static str {
        match self {
            Family::DeepseekV2 => "deepseek_v2",
            Family::DeepseekV3 => "deepseek_v3",
            Family::SarvamMla => "sarvam_mla",
            Family::KimiK25 => "kimi_k25",
            Family::Youtu => "youtu",
            Family::Axk1 => "axk1",
            Family::Glm4MoeLite => "glm4_moe_lite",
            Family::Minicpm3 => "minicpm3",
            Family::KimiLinear => "kimi_linear",
            Family::BailingHybrid => "bailing_hybrid",
            Family::Mistral4 => "mistral4",
            Family::MistralLarge4 => "mistral_large4",
            Family::LongcatFlash => "longcat_flash",
            Family::DeepseekV32 => "deepseek_v32",
            Family::GlmMoeDsa => "glm_moe_dsa",
            Family::Axk2 => "axk2",
            Family::HyV4 => "hy_v4",
            Family::HyV4Vl => "hy_v4_vl",
            Family::Dots3Note => "dots3_note",
            Family::Glm5Next => "glm5_next",
        }
    }

    /// The family of a `model_type` (`dots3_note_text` is `dots3_note`); `None` if
    /// it is not an MLA family.
    pub fn from_model_type(s: &str) -> Option<Family> {
        if s == "dots3_note_text" {
            return Some(Family::Dots3Note);
        }
        FAMILIES.iter().copied().find(|f| f.model_type() == s)
    }

    /// From a raw value; `None` if unknown.
    pub fn from_u32(v: u32) -> Option<Family> {
        FAMILIES.get(v as usize).copied()
    }

    /// `Unsupported` naming an unknown model_type (and, for a sub-config type, the
    /// composite whose config.json to use instead).
    pub(crate) fn unknown(s: &str) -> crate::status::Error {
        let e = err(Status::Unsupported, "model_type '")
            .s(s)
            .s("' is not an MLA family");
        match TEXT_SUBCONFIGS.iter().find(|(sub, _)| *sub == s) {
            Some((_, top)) => e
                .s(" (a text sub-config: read the composite ")
                .s(top)
                .s(" config.json)"),
            None => e,
        }
    }

    /// The language model's keys are in `text_config` (when it is there).
    pub(crate) const fn text_config(self) -> bool {
        matches!(
            self,
            Family::KimiK25
                | Family::MistralLarge4
                | Family::HyV4Vl
                | Family::Dots3Note
                | Family::Glm5Next
        )
    }

    /// The latent norms use `rms_norm_eps` (the others hard-code 1e-6).
    pub(crate) const fn eps_from_config(self) -> bool {
        matches!(
            self,
            Family::Dots3Note | Family::Glm5Next | Family::HyV4Vl | Family::MistralLarge4
        )
    }

    /// The query LoRA path is always used (`q_lora_rank` must be set).
    pub(crate) const fn always_lora(self) -> bool {
        matches!(
            self,
            Family::Axk1
                | Family::LongcatFlash
                | Family::DeepseekV32
                | Family::GlmMoeDsa
                | Family::Axk2
                | Family::HyV4
                | Family::HyV4Vl
                | Family::Glm5Next
                | Family::Dots3Note
        )
    }

    /// `rope_interleave` (default true) picks the RoPE layout.
    pub(crate) const fn reads_rope_interleave(self) -> bool {
        matches!(
            self,
            Family::DeepseekV3
                | Family::SarvamMla
                | Family::KimiK25
                | Family::Youtu
                | Family::Axk1
                | Family::Glm4MoeLite
                | Family::Mistral4
        )
    }

    /// Every MLA layer has a sparse-attention indexer (own or shared).
    pub(crate) const fn dsa_every_layer(self) -> bool {
        matches!(
            self,
            Family::DeepseekV32
                | Family::Axk2
                | Family::GlmMoeDsa
                | Family::HyV4
                | Family::HyV4Vl
                | Family::MistralLarge4
        )
    }

    /// `indexer_types` (or its defaults) decides full / shared top-k.
    pub(crate) const fn reads_indexer_types(self) -> bool {
        matches!(
            self,
            Family::GlmMoeDsa
                | Family::HyV4
                | Family::HyV4Vl
                | Family::MistralLarge4
                | Family::Glm5Next
        )
    }

    /// The config class's default `rope_theta`.
    pub(crate) const fn default_theta(self) -> f64 {
        match self {
            Family::LongcatFlash => 10_000_000.0,
            Family::BailingHybrid => 6_000_000.0,
            Family::Dots3Note => 80_000_000.0,
            _ => 10_000.0,
        }
    }

    /// The config class's defaults (`families.CLASS_DEFAULTS`).
    pub(crate) const fn defaults(self) -> &'static Defaults {
        match self {
            Family::DeepseekV2 => &DEEPSEEK_V2,
            Family::DeepseekV3 | Family::KimiK25 => &DEEPSEEK_V3,
            Family::SarvamMla => &SARVAM_MLA,
            Family::Youtu => &YOUTU,
            Family::Axk1 => &AXK1,
            Family::Glm4MoeLite => &GLM4_MOE_LITE,
            Family::Minicpm3 => &MINICPM3,
            Family::KimiLinear => &KIMI_LINEAR,
            Family::BailingHybrid => &BAILING_HYBRID,
            Family::Mistral4 => &MISTRAL4,
            Family::MistralLarge4 => &MISTRAL_LARGE4,
            Family::LongcatFlash => &LONGCAT_FLASH,
            Family::DeepseekV32 => &DEEPSEEK_V32,
            Family::GlmMoeDsa => &GLM_MOE_DSA,
            Family::Axk2 => &AXK2,
            Family::HyV4 => &HY_V4,
            Family::HyV4Vl => &HY_V4_VL,
            Family::Dots3Note => &DOTS3_NOTE,
            Family::Glm5Next => &GLM5_NEXT,
        }
    }

    /// The checkpoint names of the family's attention tensors.
    pub const fn names(self) -> &'static Names {
        match self {
            Family::BailingHybrid => &BAILING_NAMES,
            Family::MistralLarge4 => &MISTRAL_LARGE4_NAMES,
            Family::DeepseekV32 | Family::GlmMoeDsa | Family::Axk2 => &DSA_NAMES,
            Family::HyV4 | Family::HyV4Vl => &HY_V4_NAMES,
            Family::Dots3Note => &DOTS3_NAMES,
            Family::Glm5Next => &GLM5_NEXT_NAMES,
            _ => &DS_NAMES,
        }
    }

    /// The checkpoint prefix of attention module `layer` (transformers' layer_idx):
    /// `model.layers.{i}.self_attn.` and the family's variants.
    pub fn prefix(self, layer: u32) -> Result<Prefix> {
        let mut p = Prefix::new();
        let ok = match self {
            Family::BailingHybrid => {
                p.push_str("model.layers.").is_ok()
                    && push_u32(&mut p, layer)
                    && p.push_str(".attention.").is_ok()
            }
            Family::MistralLarge4 => {
                p.push_str("layers.").is_ok()
                    && push_u32(&mut p, layer)
                    && p.push_str(".attention.").is_ok()
            }
            Family::KimiK25 => {
                p.push_str("language_model.model.blocks.").is_ok()
                    && push_u32(&mut p, layer)
                    && p.push_str(".self_attn.").is_ok()
            }
            Family::Glm5Next => {
                p.push_str("model.language_model.layers.").is_ok()
                    && push_u32(&mut p, layer)
                    && p.push_str(".self_attn.").is_ok()
            }
            Family::LongcatFlash => {
                p.push_str("model.layers.").is_ok()
                    && push_u32(&mut p, layer / 2)
                    && p.push_str(".self_attn.").is_ok()
                    && push_u32(&mut p, layer % 2)
                    && p.push_str(".").is_ok()
            }
            _ => {
                p.push_str("model.layers.").is_ok()
                    && push_u32(&mut p, layer)
                    && p.push_str(".self_attn.").is_ok()
            }
        };
        if ok {
            Ok(p)
        } else {
            Err(err(
                Status::Internal,
                "weight prefix longer than MAX_PREFIX",
            ))
        }
    }
}

/// Most bytes of a weight prefix ([`Family::prefix`]).
pub const MAX_PREFIX: usize = 96;

/// A weight prefix such as `model.layers.3.self_attn.`.
pub type Prefix = heapless::String<MAX_PREFIX>;

/// Appends the decimal `v`; false when it does not fit.
fn push_u32(p: &mut Prefix, v: u32) -> bool {
    let mut digits = [0u8; 10];
    let mut n = v;
    let mut i = digits.len();
    loop {
        i = i.saturating_sub(1);
        if let Some(d) = digits.get_mut(i) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    digits
        .get(i..)
        .and_then(|d| core::str::from_utf8(d).ok())
        .is_some_and(|s| p.push_str(s).is_ok())
}

/// A config class's defaults for the keys the attention reads.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Defaults {
    pub hidden_size: u64,
    /// `num_hidden_layers` (longcat_flash: `num_layers`, decoder layers).
    pub layers: u64,
    pub heads: u64,
    /// 0: `None` (plain q_proj).
    pub q_lora_rank: u64,
    pub kv_lora_rank: u64,
    pub nope: u64,
    pub rope: u64,
    pub v: u64,
    pub rms_norm_eps: f64,
    pub max_position_embeddings: u64,
    pub index_topk: u64,
    pub index_head_dim: u64,
    pub index_n_heads: u64,
}

// One row of the class-defaults table: positional, like the table it mirrors.
#[allow(clippy::too_many_arguments)]
const fn d(
    hidden_size: u64,
    layers: u64,
    heads: u64,
    q_lora_rank: u64,
    kv_lora_rank: u64,
    (nope, rope, v): (u64, u64, u64),
    rms_norm_eps: f64,
    max_position_embeddings: u64,
    (index_topk, index_head_dim, index_n_heads): (u64, u64, u64),
) -> Defaults {
    Defaults {
        hidden_size,
        layers,
        heads,
        q_lora_rank,
        kv_lora_rank,
        nope,
        rope,
        v,
        rms_norm_eps,
        max_position_embeddings,
        index_topk,
        index_head_dim,
        index_n_heads,
    }
}

const NO_DSA: (u64, u64, u64) = (0, 0, 0);
const DEEPSEEK_V2: Defaults = d(4096, 32, 32, 1536, 512, (128, 64, 128), 1e-6, 2048, NO_DSA);
const DEEPSEEK_V3: Defaults = d(7168, 61, 128, 1536, 512, (128, 64, 128), 1e-6, 4096, NO_DSA);
const SARVAM_MLA: Defaults = d(4096, 32, 64, 0, 512, (128, 64, 128), 1e-6, 4096, NO_DSA);
const YOUTU: Defaults = d(
    2048,
    32,
    16,
    1536,
    512,
    (128, 64, 128),
    1e-6,
    131072,
    NO_DSA,
);
const AXK1: Defaults = d(7168, 61, 64, 1536, 512, (128, 64, 128), 1e-6, 32768, NO_DSA);
const GLM4_MOE_LITE: Defaults = d(2048, 47, 20, 768, 512, (192, 64, 256), 1e-5, 202752, NO_DSA);
const MINICPM3: Defaults = d(2560, 62, 40, 768, 256, (64, 32, 64), 1e-5, 32768, NO_DSA);
const KIMI_LINEAR: Defaults = d(2304, 27, 32, 0, 512, (128, 64, 128), 1e-5, 1048576, NO_DSA);
const BAILING_HYBRID: Defaults = d(2560, 42, 32, 0, 512, (128, 64, 128), 1e-6, 262144, NO_DSA);
const MISTRAL4: Defaults = d(
    4096,
    36,
    32,
    1024,
    256,
    (64, 64, 128),
    1e-6,
    1048576,
    NO_DSA,
);
const MISTRAL_LARGE4: Defaults = d(
    6144,
    72,
    64,
    0,
    512,
    (64, 64, 128),
    1e-5,
    1048576,
    (2048, 128, 32),
);
const LONGCAT_FLASH: Defaults = d(
    6144,
    28,
    64,
    1536,
    512,
    (128, 64, 128),
    1e-5,
    131072,
    NO_DSA,
);
const DEEPSEEK_V32: Defaults = d(
    7168,
    61,
    128,
    1536,
    512,
    (128, 64, 128),
    1e-6,
    163840,
    (2048, 128, 64),
);
const GLM_MOE_DSA: Defaults = d(
    6144,
    78,
    64,
    2048,
    512,
    (192, 64, 256),
    1e-5,
    202752,
    (2048, 128, 32),
);
const AXK2: Defaults = d(
    2048,
    48,
    32,
    384,
    128,
    (64, 32, 64),
    1e-6,
    131072,
    (2048, 128, 16),
);
const HY_V4: Defaults = d(
    2816,
    34,
    32,
    1536,
    512,
    (192, 64, 256),
    1e-5,
    262144,
    (2048, 128, 16),
);
const HY_V4_VL: Defaults = d(
    6144,
    78,
    64,
    2048,
    512,
    (192, 64, 256),
    1e-5,
    262144,
    (2048, 128, 32),
);
const DOTS3_NOTE: Defaults = d(
    5120,
    46,
    128,
    1024,
    512,
    (128, 64, 128),
    1e-5,
    524288,
    (2048, 128, 64),
);
const GLM5_NEXT: Defaults = d(
    4096,
    45,
    64,
    1536,
    512,
    (256, 0, 256),
    1e-5,
    1048576,
    (2048, 128, 32),
);

/// Checkpoint names of one family's attention tensors: under the layer prefix,
/// except `rope_freq_alpha`, a global name. `None`: the family has no such tensor.
/// Each maps to the [`Weights`](crate::Weights) field of the same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Names {
    /// `q_proj` (plain query projection).
    pub q_proj: &'static str,
    /// `q_a_proj`.
    pub q_a_proj: &'static str,
    /// `q_a_proj` bias.
    pub q_a_proj_bias: &'static str,
    /// `q_a_layernorm`.
    pub q_a_layernorm: &'static str,
    /// `q_b_proj` (axk2: the fused query+gate projection).
    pub q_b_proj: &'static str,
    /// `kv_a_proj_with_mqa`.
    pub kv_a_proj_with_mqa: &'static str,
    /// Its bias.
    pub kv_a_proj_bias: &'static str,
    /// `kv_a_layernorm`.
    pub kv_a_layernorm: &'static str,
    /// `kv_b_proj`.
    pub kv_b_proj: &'static str,
    /// `o_proj`.
    pub o_proj: &'static str,
    /// Its bias.
    pub o_proj_bias: &'static str,
    /// Output gate projection.
    pub gate_proj: Option<&'static str>,
    /// Attention sinks.
    pub sinks: Option<&'static str>,
    /// RMSNorm weight of the rope key.
    pub rope_key_norm: Option<&'static str>,
    /// Learned log-position query scale `s`.
    pub query_scale_s: Option<&'static str>,
    /// Learned log-position query scale `b`.
    pub query_scale_b: Option<&'static str>,
    /// LeRoPE frequency multiplier exponents (global name, outside the prefix).
    pub rope_freq_alpha: Option<&'static str>,
    /// Indexer query projection.
    pub index_wq_b: Option<&'static str>,
    /// Indexer key projection.
    pub index_wk: Option<&'static str>,
    /// Indexer key LayerNorm weight.
    pub index_k_norm: Option<&'static str>,
    /// Indexer key LayerNorm bias.
    pub index_k_norm_bias: Option<&'static str>,
    /// Indexer head weights projection.
    pub index_weights_proj: Option<&'static str>,
    /// Indexer query-input LayerNorm weight.
    pub index_q_norm: Option<&'static str>,
    /// Indexer query-input LayerNorm bias.
    pub index_q_norm_bias: Option<&'static str>,
    /// Indexer learned log-position query scale `s`.
    pub index_query_scale_s: Option<&'static str>,
    /// Indexer learned log-position query scale `b`.
    pub index_query_scale_b: Option<&'static str>,
    /// Pooled indexer: positional term of the pool softmax.
    pub index_kpool_ape: Option<&'static str>,
    /// Pooled indexer: gate projection of the pool softmax.
    pub index_kpool_gate: Option<&'static str>,
    /// `rope_freq_alpha` is a global name (outside the layer prefix).
    pub rope_freq_alpha_global: bool,
}

impl Names {
    /// The names used by [`bind_weights`](crate::safetensors::bind_weights): the
    /// DeepSeek names (DeepSeek-V3.2's for the indexer) and, for tensors DeepSeek
    /// has not, the [`Weights`](crate::Weights) field's: `gate_proj.weight`,
    /// `sinks`, `rope_key_norm.weight`, `query_scale.s` / `.b`, `rope_freq_alpha`,
    /// `indexer.q_norm.weight` / `.bias`, `indexer.query_scale.s` / `.b`,
    /// `indexer.kpool_ape`, `indexer.kpool_gate`; all under the prefix.
    pub const CANONICAL: Names = Names {
        gate_proj: Some("gate_proj.weight"),
        sinks: Some("sinks"),
        rope_key_norm: Some("rope_key_norm.weight"),
        query_scale_s: Some("query_scale.s"),
        query_scale_b: Some("query_scale.b"),
        rope_freq_alpha: Some("rope_freq_alpha"),
        index_q_norm: Some("indexer.q_norm.weight"),
        index_q_norm_bias: Some("indexer.q_norm.bias"),
        index_query_scale_s: Some("indexer.query_scale.s"),
        index_query_scale_b: Some("indexer.query_scale.b"),
        index_kpool_ape: Some("indexer.kpool_ape"),
        index_kpool_gate: Some("indexer.kpool_gate"),
        ..DSA_NAMES
    };

    /// The names in the order of [`Weights::named`](crate::Weights::named)
    /// (`None`: no such tensor in the family's checkpoints).
    pub const fn suffixes(&self) -> [Option<&'static str>; crate::weights::WEIGHT_COUNT] {
        [
            Some(self.q_proj),
            Some(self.q_a_proj),
            Some(self.q_a_layernorm),
            Some(self.q_b_proj),
            Some(self.kv_a_proj_with_mqa),
            Some(self.kv_a_layernorm),
            Some(self.kv_b_proj),
            Some(self.o_proj),
            Some(self.q_a_proj_bias),
            Some(self.kv_a_proj_bias),
            Some(self.o_proj_bias),
            self.gate_proj,
            self.sinks,
            self.rope_key_norm,
            self.query_scale_s,
            self.query_scale_b,
            self.rope_freq_alpha,
            self.index_wq_b,
            self.index_wk,
            self.index_k_norm,
            self.index_k_norm_bias,
            self.index_weights_proj,
            self.index_q_norm,
            self.index_q_norm_bias,
            self.index_query_scale_s,
            self.index_query_scale_b,
            self.index_kpool_ape,
            self.index_kpool_gate,
        ]
    }
}

/// The DeepSeek names (`_DS_NAMES`).
const DS_NAMES: Names = Names {
    q_proj: "q_proj.weight",
    q_a_proj: "q_a_proj.weight",
    q_a_proj_bias: "q_a_proj.bias",
    q_a_layernorm: "q_a_layernorm.weight",
    q_b_proj: "q_b_proj.weight",
    kv_a_proj_with_mqa: "kv_a_proj_with_mqa.weight",
    kv_a_proj_bias: "kv_a_proj_with_mqa.bias",
    kv_a_layernorm: "kv_a_layernorm.weight",
    kv_b_proj: "kv_b_proj.weight",
    o_proj: "o_proj.weight",
    o_proj_bias: "o_proj.bias",
    gate_proj: None,
    sinks: None,
    rope_key_norm: None,
    query_scale_s: None,
    query_scale_b: None,
    rope_freq_alpha: None,
    index_wq_b: None,
    index_wk: None,
    index_k_norm: None,
    index_k_norm_bias: None,
    index_weights_proj: None,
    index_q_norm: None,
    index_q_norm_bias: None,
    index_query_scale_s: None,
    index_query_scale_b: None,
    index_kpool_ape: None,
    index_kpool_gate: None,
    rope_freq_alpha_global: false,
};

/// DeepSeek names plus the indexer's (`_INDEXER_NAMES`).
const DSA_NAMES: Names = Names {
    index_wq_b: Some("indexer.wq_b.weight"),
    index_wk: Some("indexer.wk.weight"),
    index_k_norm: Some("indexer.k_norm.weight"),
    index_k_norm_bias: Some("indexer.k_norm.bias"),
    index_weights_proj: Some("indexer.weights_proj.weight"),
    ..DS_NAMES
};

const BAILING_NAMES: Names = Names {
    o_proj: "dense.weight",
    o_proj_bias: "dense.bias",
    gate_proj: Some("g_proj.weight"),
    ..DS_NAMES
};

const MISTRAL_LARGE4_NAMES: Names = Names {
    q_proj: "wq.weight",
    kv_a_proj_with_mqa: "wkv_a_with_mqa.weight",
    kv_a_proj_bias: "wkv_a_with_mqa.bias",
    kv_a_layernorm: "kv_a_norm.weight",
    kv_b_proj: "wkv_b.weight",
    o_proj: "wo.weight",
    o_proj_bias: "wo.bias",
    query_scale_s: Some("ssmax_scaling.s"),
    query_scale_b: Some("ssmax_scaling.b"),
    rope_freq_alpha: Some("lerope.alpha"),
    rope_freq_alpha_global: true,
    index_q_norm: Some("indexer.q_input_norm.weight"),
    index_q_norm_bias: Some("indexer.q_input_norm.bias"),
    index_query_scale_s: Some("indexer.ssmax_scaling.s"),
    index_query_scale_b: Some("indexer.ssmax_scaling.b"),
    ..DSA_NAMES
};

const HY_V4_NAMES: Names = Names {
    gate_proj: Some("linear_gate.weight"),
    sinks: Some("learnable_sink_param"),
    ..DSA_NAMES
};

const DOTS3_NAMES: Names = Names {
    gate_proj: Some("g_proj.weight"),
    rope_key_norm: Some("k_rope_only_layernorm.weight"),
    ..DSA_NAMES
};

const GLM5_NEXT_NAMES: Names = Names {
    index_kpool_ape: Some("indexer.index_kpool_compress_ape"),
    index_kpool_gate: Some("indexer.index_kpool_compress_gate"),
    ..DSA_NAMES
};
