//! The small enums of a [`Config`](super::Config): RoPE layout and key, attention mode,
//! RoPE type, query scale, gate, DSA and the indexer's query input and rotation.

/// Order of the rotated pairs inside a rope vector of `p` values (`mla_rope_layout`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeLayout {
    /// Pairs `(x[2i], x[2i+1])` (DeepSeek checkpoints, HF `rope_interleave=True`).
    Interleaved = 0,
    /// Pairs `(x[i], x[i+p/2])` (rotate_half / NeoX; the tutorial).
    Half = 1,
}

/// Where the rope key comes from (`mla_rope_key`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeKey {
    /// One `k_pe` per token from `kv_a_proj_with_mqa`, shared by all heads (DeepSeek).
    Shared = 0,
    /// One `k_pe` per head per token (the tutorial's `k_rope_proj`).
    PerHead = 1,
}

/// How attention is computed (`mla_attn_mode`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttnMode {
    /// Pick per call by estimated cost (absorbed for decode, naive for long prefill).
    Auto = 0,
    /// Decompress K and V from the latent cache, then standard attention.
    Naive = 1,
    /// Absorb `W_UK` into the query and `W_UV` after the latent sum (docs/design.md section 2).
    Absorb = 2,
}

/// Frequency rule of the rotary embedding (`mla_rope_type`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeType {
    /// `f_i = theta^(-2i/p)`.
    Default = 0,
    /// YaRN (docs/design.md section 2; `rope_factor`, `original_max_position`, betas, mscales,
    /// `rope_yarn_truncate`, `rope_attention_factor`).
    Yarn = 1,
    /// Linear position interpolation: `f_i / rope_factor`.
    Linear = 2,
    /// Llama 3 (`rope_factor`, `rope_low_freq_factor`, `rope_high_freq_factor`,
    /// `original_max_position`).
    Llama3 = 3,
    /// LongRoPE: `f_i / ext_i`, `ext` = `rope_long_factor` when the call's largest
    /// position + 1 exceeds `original_max_position`, else `rope_short_factor`.
    LongRope = 4,
    /// No rotation (NoPE). With `qk_rope_head_dim > 0` the rope slot is used as it
    /// is, unrotated (kimi_linear); with 0 there is no rope slot at all.
    None = 5,
}

/// Scaling of the whole query head after RoPE (`mla_query_scale`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryScale {
    /// None.
    None = 0,
    /// Llama 4 attention temperature: `q *= 1 + beta * ln(1 + floor(pos / L))`
    /// (`query_scale_beta`, `query_scale_length`).
    Llama4 = 1,
    /// Learned per head: `q_h *= s_h * ln(pos + 1) + b_h` (weights `query_scale_s`,
    /// `query_scale_b`, `[H]` each).
    LearnedLogPos = 2,
}

/// Output gate applied to each head's output before `o_proj` (`mla_gate`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// No gate.
    None = 0,
    /// `o_h *= sigmoid(g_h)`, `g = gate_proj x`, `gate_proj` `[H][d]`.
    PerHead = 1,
    /// `o_h[j] *= sigmoid(g[h*v + j])`, `g = gate_proj x`, `gate_proj` `[H*v][d]`.
    PerChannel = 2,
    /// Gate rows fused into the query projection (axk2): `q_b_proj` is
    /// `[H*(n+p+v)][2 r_q]` over `[RMSNorm(c_q) ; c_q]`, rows of head h
    /// `[q_nope | q_pe | gate (v)]`; `o_h[j] *= sigmoid(gate_h[j])`.
    FusedQ = 3,
}

/// DeepSeek Sparse Attention mode of a layer (`mla_dsa`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dsa {
    /// Dense attention over every causal key.
    None = 0,
    /// Own lightning indexer and indexer-key cache; attends to the top-k keys.
    Full = 1,
    /// Uses the selection of an earlier layer (`mla_engine_share_topk`).
    Shared = 2,
}

/// Input of the indexer query (`mla_index_q_input`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexQInput {
    /// The normalised query latent (times `q_latent_scale`): `index_wq_b` is `[Hi*Di][r_q]`.
    QLatent = 0,
    /// `LayerNorm(x)` with `index_q_norm` (+ bias), eps `index_q_norm_eps`:
    /// `index_wq_b` is `[Hi*Di][d]` (mistral_large4).
    HiddenLayerNorm = 1,
}

/// Which `p` dims of the indexer query and key are rotated (`mla_index_rope`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexRope {
    /// The first `p` of `index_head_dim`.
    First = 0,
    /// The last `p`.
    Last = 1,
    /// None (NoPE layers).
    None = 2,
}

macro_rules! from_u32 {
    ($t:ident: $($v:literal => $name:ident),+) => {
        impl $t {
            /// From a raw value; `None` if unknown.
            pub const fn from_u32(v: u32) -> Option<Self> {
                match v {
                    $($v => Some(Self::$name),)+
                    _ => None,
                }
            }
        }
    };
}
from_u32!(RopeType: 0 => Default, 1 => Yarn, 2 => Linear, 3 => Llama3, 4 => LongRope, 5 => None);
from_u32!(QueryScale: 0 => None, 1 => Llama4, 2 => LearnedLogPos);
from_u32!(Gate: 0 => None, 1 => PerHead, 2 => PerChannel, 3 => FusedQ);
from_u32!(Dsa: 0 => None, 1 => Full, 2 => Shared);
from_u32!(IndexQInput: 0 => QLatent, 1 => HiddenLayerNorm);
from_u32!(IndexRope: 0 => First, 1 => Last, 2 => None);

/// Most LongRoPE factors (`p/2` are used; `p <= 128`).
pub const MAX_ROPE_FACTORS: usize = 64;

impl RopeLayout {
    /// From a raw value; `None` if unknown.
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::Interleaved),
            1 => Some(Self::Half),
            _ => None,
        }
    }
}

impl RopeKey {
    /// From a raw value; `None` if unknown.
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::Shared),
            1 => Some(Self::PerHead),
            _ => None,
        }
    }
}

impl AttnMode {
    /// From a raw value; `None` if unknown.
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::Auto),
            1 => Some(Self::Naive),
            2 => Some(Self::Absorb),
            _ => None,
        }
    }
}
