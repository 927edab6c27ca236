//! Engine configuration: dimensions, RoPE/YaRN parameters, cache dtype, attention mode.
//!
//! One [`Config`] covers both variants of docs/design.md section 2: the DeepSeek-V2/V3
//! attention (shared rope key, optional query LoRA with RMSNorm) and the seed
//! tutorial's (per-head rope key taken from `x`, no query norm). [`Config::validate`]
//! names the offending field; [`Dims`] holds the derived sizes, all checked for
//! overflow, that the rest of the engine uses.

use crate::dtype::DType;
use crate::status::{err, Result, Status};

mod derive;
mod families;
mod hf;
mod kinds;

pub use families::{Family, Names, Prefix, FAMILIES, MAX_PREFIX};
pub use hf::{hf_layer_info, LayerInfo, MAX_HF_LAYERS};
pub use kinds::{
    AttnMode, Dsa, Gate, IndexQInput, IndexRope, QueryScale, RopeKey, RopeLayout, RopeType,
    MAX_ROPE_FACTORS,
};

/// The engine configuration; mirrors `mla_config` field by field (without `struct_size`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Config {
    /// `d`: model width; `x` and the output are `[n_tokens][d]`.
    pub hidden_size: u32,
    /// `H`: attention heads.
    pub num_heads: u32,
    /// `r_q`: query LoRA rank; 0 means a plain `q_proj`.
    pub q_lora_rank: u32,
    /// `r`: latent (compressed KV) width, cached per token.
    pub kv_lora_rank: u32,
    /// `n`: per-head key/query width without RoPE.
    pub qk_nope_head_dim: u32,
    /// `p`: per-head rotated width (even).
    pub qk_rope_head_dim: u32,
    /// `v`: per-head value width.
    pub v_head_dim: u32,
    /// Cache capacity in tokens (positions 0 .. max_seq_len-1).
    pub max_seq_len: u32,
    /// Most tokens one forward call may append (sizes the scratch memory).
    pub max_tokens_per_call: u32,
    /// Pair order of rotated vectors.
    pub rope_layout: RopeLayout,
    /// Shared or per-head rope key.
    pub rope_key: RopeKey,
    /// RMSNorm on the query latent (`q_a_layernorm`); needs `q_lora_rank > 0`.
    pub q_norm: bool,
    /// Storage type of the latent cache.
    pub cache_dtype: DType,
    /// Attention path.
    pub attn_mode: AttnMode,
    /// YaRN `L0`: the pre-training context length (used when `rope_factor > 1`).
    pub original_max_position: u32,
    /// RMSNorm epsilon (> 0).
    pub rms_norm_eps: f32,
    /// RoPE base `theta` (> 1).
    pub rope_theta: f32,
    /// YaRN scale factor `s`; `<= 1` disables YaRN.
    pub rope_factor: f32,
    /// YaRN `beta_fast` (> beta_slow).
    pub beta_fast: f32,
    /// YaRN `beta_slow` (> 0).
    pub beta_slow: f32,
    /// YaRN `mscale` (cos/sin numerator).
    pub mscale: f32,
    /// YaRN `mscale_all_dim` (cos/sin denominator, softmax scale squared).
    pub mscale_all_dim: f32,
    /// Softmax scale override; 0 derives `(n+p)^-0.5 * mscale(s, mscale_all_dim)^2`.
    pub softmax_scale: f32,

    // ---- ABI version 2: every field below is appended to `mla_config`. ----
    /// Frequency rule of the rotary embedding.
    pub rope_type: RopeType,
    /// Final cos/sin factor (HF `attention_scaling`); 0 derives it as docs/design.md section 2
    /// says for YaRN (`mscale(s, mscale) / mscale(s, mscale_all_dim)`), 1 otherwise.
    pub rope_attention_factor: f32,
    /// YaRN: floor/ceil the correction range (HF `truncate`, default true).
    pub rope_yarn_truncate: bool,
    /// Llama 3 `low_freq_factor`.
    pub rope_low_freq_factor: f32,
    /// Llama 3 `high_freq_factor`.
    pub rope_high_freq_factor: f32,
    /// LongRoPE short factors (first `p/2` used).
    pub rope_short_factor: [f32; MAX_ROPE_FACTORS],
    /// LongRoPE long factors (first `p/2` used).
    pub rope_long_factor: [f32; MAX_ROPE_FACTORS],
    /// LeRoPE (mistral_large4): inverse frequencies times `exp(alpha_i)`, `alpha`
    /// from the weight `rope_freq_alpha` (`[p/2]`).
    pub rope_freq_alpha: bool,
    /// RMSNorm (eps `rms_norm_eps`, weight `rope_key_norm` `[p]`) on the rope key
    /// before RoPE (dots3_note).
    pub rope_key_norm: bool,
    /// Multiplies the normalised query latent (longcat_flash, dots3_note: `sqrt(d/r_q)`); 1 = none.
    pub q_latent_scale: f32,
    /// Multiplies the normalised KV latent before it is cached (`sqrt(d/r)`); 1 = none.
    pub kv_latent_scale: f32,
    /// Query scaling after RoPE.
    pub query_scale: QueryScale,
    /// Llama 4 `beta`.
    pub query_scale_beta: f32,
    /// Llama 4 `L` (positions per step of the floor).
    pub query_scale_length: u32,
    /// Output gate.
    pub gate: Gate,
    /// Learned attention sinks (weight `sinks`, `[H]`): one unscaled logit per head
    /// joins the softmax denominator.
    pub sinks: bool,
    /// Sliding window `W` (keys `pos - W < t <= pos`); 0 = none. The layer's cache
    /// then holds at most `W - 1 + max_tokens_per_call` rows.
    pub sliding_window: u32,
    /// The layer attends over another engine's latent cache
    /// (`mla_engine_share_cache`) and keeps none of its own.
    pub kv_shared: bool,
    /// DeepSeek Sparse Attention mode.
    pub dsa: Dsa,
    /// Indexer heads `Hi`.
    pub index_n_heads: u32,
    /// Indexer head width `Di`.
    pub index_head_dim: u32,
    /// Keys selected per query `K`.
    pub index_topk: u32,
    /// Input of the indexer query.
    pub index_q_input: IndexQInput,
    /// Which dims of the indexer query/key are rotated.
    pub index_rope: IndexRope,
    /// Pair order of the indexer rotation.
    pub index_rope_layout: RopeLayout,
    /// LayerNorm eps of the indexer key.
    pub index_k_norm_eps: f32,
    /// LayerNorm eps of the indexer query input (`HiddenLayerNorm`).
    pub index_q_norm_eps: f32,
    /// Learned log-position scale on the indexer query (`index_query_scale_s/_b`, `[Hi]`).
    pub index_query_scale: bool,
    /// Storage of the indexer-key cache (F32, BF16).
    pub index_cache_dtype: DType,
    /// Pooled indexer keys (glm5_next): tokens per pool `P`; 0 = none.
    pub index_kpool: u32,
    /// Pooled indexer: the query's own incomplete pool is always selected.
    pub index_kpool_tail: bool,
}

/// The ABI-2 fields of every preset (no mechanism beyond docs/design.md section 2).
const PLAIN: Config = Config {
    hidden_size: 0,
    num_heads: 0,
    q_lora_rank: 0,
    kv_lora_rank: 0,
    qk_nope_head_dim: 0,
    qk_rope_head_dim: 0,
    v_head_dim: 0,
    max_seq_len: 0,
    max_tokens_per_call: 0,
    rope_layout: RopeLayout::Interleaved,
    rope_key: RopeKey::Shared,
    q_norm: false,
    cache_dtype: DType::F32,
    attn_mode: AttnMode::Auto,
    original_max_position: 0,
    rms_norm_eps: 1e-6,
    rope_theta: 10000.0,
    rope_factor: 1.0,
    beta_fast: 32.0,
    beta_slow: 1.0,
    mscale: 1.0,
    mscale_all_dim: 1.0,
    softmax_scale: 0.0,
    rope_type: RopeType::Default,
    rope_attention_factor: 0.0,
    rope_yarn_truncate: true,
    rope_low_freq_factor: 1.0,
    rope_high_freq_factor: 4.0,
    rope_short_factor: [1.0; MAX_ROPE_FACTORS],
    rope_long_factor: [1.0; MAX_ROPE_FACTORS],
    rope_freq_alpha: false,
    rope_key_norm: false,
    q_latent_scale: 1.0,
    kv_latent_scale: 1.0,
    query_scale: QueryScale::None,
    query_scale_beta: 0.0,
    query_scale_length: 0,
    gate: Gate::None,
    sinks: false,
    sliding_window: 0,
    kv_shared: false,
    dsa: Dsa::None,
    index_n_heads: 0,
    index_head_dim: 0,
    index_topk: 0,
    index_q_input: IndexQInput::QLatent,
    index_rope: IndexRope::First,
    index_rope_layout: RopeLayout::Half,
    index_k_norm_eps: 1e-6,
    index_q_norm_eps: 1e-6,
    index_query_scale: false,
    index_cache_dtype: DType::F32,
    index_kpool: 0,
    index_kpool_tail: true,
};

impl Config {
    /// A config with every field of ABI version 2 at its neutral value (no
    /// mechanism beyond docs/design.md section 2) and zero dimensions: the base of presets and of
    /// `from_hf_json`. Not valid as it is.
    pub const fn plain() -> Config {
        PLAIN
    }

    /// The seed tutorial's MLA: d 256, H 8, n = v = 32, r 128, r_q 192, p 64,
    /// per-head rope key, half layout, no query norm.
    pub const fn tutorial() -> Config {
        Config {
            hidden_size: 256,
            num_heads: 8,
            q_lora_rank: 192,
            kv_lora_rank: 128,
            qk_nope_head_dim: 32,
            qk_rope_head_dim: 64,
            v_head_dim: 32,
            max_seq_len: 1024,
            max_tokens_per_call: 128,
            rope_layout: RopeLayout::Half,
            rope_key: RopeKey::PerHead,
            q_norm: false,
            cache_dtype: DType::F32,
            attn_mode: AttnMode::Auto,
            original_max_position: 1024,
            rms_norm_eps: 1e-6,
            rope_theta: 10000.0,
            rope_factor: 1.0,
            beta_fast: 32.0,
            beta_slow: 1.0,
            mscale: 1.0,
            mscale_all_dim: 1.0,
            softmax_scale: 0.0,
            rope_type: RopeType::Default,
            ..PLAIN
        }
    }

    /// Attention dims of DeepSeek-V2-Lite (published config): d 2048, H 16, no query
    /// LoRA, r 512, n 128, p 64, v 128, YaRN s 40 over 4096 with mscale 0.707.
    /// Capacity 4096 tokens, 256 per call (change to suit the host).
    pub const fn deepseek_v2_lite() -> Config {
        Config {
            hidden_size: 2048,
            num_heads: 16,
            q_lora_rank: 0,
            kv_lora_rank: 512,
            qk_nope_head_dim: 128,
            qk_rope_head_dim: 64,
            v_head_dim: 128,
            max_seq_len: 4096,
            max_tokens_per_call: 256,
            rope_layout: RopeLayout::Interleaved,
            rope_key: RopeKey::Shared,
            q_norm: false,
            cache_dtype: DType::F32,
            attn_mode: AttnMode::Auto,
            original_max_position: 4096,
            rms_norm_eps: 1e-6,
            rope_theta: 10000.0,
            rope_factor: 40.0,
            beta_fast: 32.0,
            beta_slow: 1.0,
            mscale: 0.707,
            mscale_all_dim: 0.707,
            softmax_scale: 0.0,
            rope_type: RopeType::Yarn,
            ..PLAIN
        }
    }

    /// Attention dims of DeepSeek-V3 (published config): d 7168, H 128, r_q 1536
    /// with RMSNorm, r 512, n 128, p 64, v 128, YaRN s 40 over 4096, mscale 1.
    /// Capacity 4096 tokens, 256 per call (change to suit the host).
    pub const fn deepseek_v3() -> Config {
        Config {
            hidden_size: 7168,
            num_heads: 128,
            q_lora_rank: 1536,
            kv_lora_rank: 512,
            qk_nope_head_dim: 128,
            qk_rope_head_dim: 64,
            v_head_dim: 128,
            max_seq_len: 4096,
            max_tokens_per_call: 256,
            rope_layout: RopeLayout::Interleaved,
            rope_key: RopeKey::Shared,
            q_norm: true,
            cache_dtype: DType::F32,
            attn_mode: AttnMode::Auto,
            original_max_position: 4096,
            rms_norm_eps: 1e-6,
            rope_theta: 10000.0,
            rope_factor: 40.0,
            beta_fast: 32.0,
            beta_slow: 1.0,
            mscale: 1.0,
            mscale_all_dim: 1.0,
            softmax_scale: 0.0,
            rope_type: RopeType::Yarn,
            ..PLAIN
        }
    }

    /// Checks every field; on failure the message names the field and the rule.
    ///
    /// Beyond [`Config::dims`], the whole engine memory
    /// ([`crate::Engine::memory_bytes`]) must be addressable: at most
    /// `isize::MAX` bytes, the most one Rust slice or C object can hold.
    pub fn validate(&self) -> Result<()> {
        self.dims()?;
        // (Engine::memory_bytes is built on dims(), never on validate(): no cycle.)
        let bytes = crate::engine::Engine::memory_bytes(self)?;
        if bytes > isize::MAX as usize {
            return Err(
                err(Status::InvalidConfig, "max_seq_len, max_tokens_per_call: ")
                    .n(bytes)
                    .s(" bytes of engine memory are above isize::MAX"),
            );
        }
        Ok(())
    }

    /// Validates and returns the derived sizes.
    pub fn dims(&self) -> Result<Dims> {
        self.derive_dims().map_err(|f| match f.value {
            Some(v) => err(Status::InvalidConfig, f.field).s(": ").n(v).s(f.rule),
            None => err(Status::InvalidConfig, f.field).s(": ").s(f.rule),
        })
    }

    /// `Unsupported` (naming the mechanism) when the engine cannot yet run this
    /// configuration; `Ok` otherwise. Called by `Engine::new` after validation.
    pub fn check_supported(&self) -> Result<()> {
        let unsupported = |what: &str| -> Result<()> {
            Err(err(Status::Unsupported, what).s(": not built in this version of the engine"))
        };
        if self.dsa == Dsa::Full && self.index_kpool > 0 {
            return unsupported("index_kpool (pooled indexer keys)");
        }
        Ok(())
    }

    /// Values cached per token (`r + p` shared, `r + H*p` per head).
    pub fn cache_values_per_token(&self) -> Result<usize> {
        Ok(self.dims()?.cache_row)
    }

    /// Bytes cached per token in the configured cache dtype.
    pub fn cache_bytes_per_token(&self) -> Result<usize> {
        // dims() checked the row's bytes * max_seq_len for overflow.
        Ok(self.dims()?.cache_row_bytes)
    }

    /// Bytes per token a full (non-latent) K/V cache would hold in the same dtype:
    /// `H * (n + p + v)` values (keys with their rope part, and values).
    pub fn full_kv_bytes_per_token(&self) -> Result<usize> {
        let dm = self.dims()?;
        dm.qk
            .checked_add(dm.v)
            .and_then(|w| w.checked_mul(dm.h))
            .and_then(|n| n.checked_mul(self.cache_dtype.size()))
            .ok_or_else(|| {
                err(
                    Status::InvalidConfig,
                    "num_heads * (n + p + v): full K/V size overflows",
                )
            })
    }

    /// True when the rope type is YaRN.
    pub fn yarn(&self) -> bool {
        self.rope_type == RopeType::Yarn
    }
}

/// Why a [`Config`] is invalid: the field (or derived size) and the rule it
/// breaks. [`Config::dims`] turns it into an `InvalidConfig` error
/// "`field`: `rule`".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigFault {
    /// The offending field, or the derived size that overflows.
    pub field: &'static str,
    /// The rule it breaks.
    pub rule: &'static str,
    /// The offending value, for a derived size past a limit: the message is then
    /// "`field`: `value``rule`".
    pub value: Option<usize>,
}

/// Sizes derived from a valid [`Config`] (all products known not to overflow).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    /// hidden_size
    pub d: usize,
    /// num_heads
    pub h: usize,
    /// q_lora_rank (0: q_proj)
    pub rq: usize,
    /// kv_lora_rank
    pub r: usize,
    /// qk_nope_head_dim
    pub n: usize,
    /// qk_rope_head_dim
    pub p: usize,
    /// v_head_dim
    pub v: usize,
    /// n + p
    pub qk: usize,
    /// H * (n + p): query width
    pub q_width: usize,
    /// Rope-key width per token: p (shared) or H * p (per head)
    pub rope_k: usize,
    /// r + p: width of an absorbed query `[q~ | q_pe]`
    pub absorbed_width: usize,
    /// r + rope_k: rows of kv_a_proj_with_mqa
    pub kv_a_rows: usize,
    /// H * (n + v): rows of kv_b_proj
    pub kv_b_rows: usize,
    /// H * v: columns of o_proj
    pub o_cols: usize,
    /// Values per cached token: r + rope_k
    pub cache_row: usize,
    /// Bytes per cached token in `cache_dtype` ([`crate::cache::row_bytes`]:
    /// `cache_row` elements, or FlashMLA's FP8 layout, 656 at r 512, p 64)
    pub cache_row_bytes: usize,
    /// max_seq_len
    pub max_seq: usize,
    /// max_tokens_per_call
    pub max_tok: usize,
    /// Rows of `q_b_proj`: `q_width`, or `H * (n + p + v)` with the fused gate.
    pub q_b_rows: usize,
    /// Columns of `q_b_proj`: `r_q`, or `2 r_q` with the fused gate.
    pub q_b_cols: usize,
    /// Rows the latent cache holds: `max_seq_len`; `min(max_seq_len, W - 1 + T)`
    /// with a sliding window `W`; 0 for a layer that reads another's cache.
    pub cache_rows: usize,
    /// Indexer heads `Hi` (0 without an own indexer).
    pub index_heads: usize,
    /// Indexer head width `Di` (0 without an own indexer).
    pub index_dim: usize,
    /// `Hi * Di`: rows of `index_wq_b`.
    pub index_width: usize,
    /// Keys selected per query (sparse attention; 0 = dense).
    pub index_topk: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid() {
        for c in [
            Config::tutorial(),
            Config::deepseek_v2_lite(),
            Config::deepseek_v3(),
        ] {
            c.validate().unwrap();
        }
        // docs/design.md section 2: 576 cached values per token for V3 against 40,960 for full K/V.
        let v3 = Config::deepseek_v3();
        assert_eq!(v3.cache_values_per_token().unwrap(), 576);
        assert_eq!(v3.full_kv_bytes_per_token().unwrap() / 4, 128 * (192 + 128));
        // Tutorial: r + H*p = 128 + 8*64.
        assert_eq!(Config::tutorial().cache_values_per_token().unwrap(), 640);
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = Config::tutorial();
        c.qk_rope_head_dim = 63;
        let e = c.validate().unwrap_err();
        assert_eq!(e.status(), Status::InvalidConfig);
        assert!(
            e.message().starts_with("qk_rope_head_dim"),
            "{}",
            e.message()
        );

        let mut c = Config::tutorial();
        c.hidden_size = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .message()
            .starts_with("hidden_size"));

        let mut c = Config::tutorial();
        c.q_lora_rank = 0;
        c.q_norm = true;
        assert!(c.validate().unwrap_err().message().starts_with("q_norm"));

        let mut c = Config::deepseek_v3();
        c.beta_fast = 0.5;
        assert!(c.validate().unwrap_err().message().starts_with("beta_fast"));

        let mut c = Config::tutorial();
        c.rms_norm_eps = f32::NAN;
        assert!(c
            .validate()
            .unwrap_err()
            .message()
            .starts_with("rms_norm_eps"));

        let mut c = Config::tutorial();
        c.max_tokens_per_call = c.max_seq_len + 1;
        assert!(c
            .validate()
            .unwrap_err()
            .message()
            .starts_with("max_tokens_per_call"));
    }

    #[test]
    fn full_kv_size_overflow_is_an_error_not_a_panic() {
        // Found by the `config` fuzz target (fuzz/corpus/config/regress_full_kv_overflow):
        // valid dims whose full K/V size does not fit usize.
        let c = Config {
            hidden_size: 1,
            num_heads: 1 << 31,
            q_lora_rank: 0,
            kv_lora_rank: 1,
            qk_nope_head_dim: 2,
            qk_rope_head_dim: u32::MAX - 1,
            v_head_dim: u32::MAX,
            max_seq_len: 1,
            max_tokens_per_call: 1,
            rope_key: RopeKey::Shared,
            ..Config::tutorial()
        };
        if c.validate().is_ok() {
            assert_eq!(
                c.full_kv_bytes_per_token().unwrap_err().status(),
                Status::InvalidConfig
            );
        }
    }

    #[test]
    fn weight_shapes_must_fit_32_bits() {
        // Tutorial with H = 0xFFFFFFF0, n = 0xFFFF: every product fits usize on a
        // 64-bit host, but q_proj would have 2.8e14 rows, which no mla_tensor
        // (u32 rows) can describe. It used to validate, with a 1.4e17-byte engine.
        let c = Config {
            num_heads: 0xFFFF_FFF0,
            qk_nope_head_dim: 0xFFFF,
            ..Config::tutorial()
        };
        let e = c.validate().unwrap_err();
        assert_eq!(e.status(), Status::InvalidConfig);
        if usize::BITS == 64 {
            assert_eq!(
                e.message(),
                "num_heads * (qk_nope_head_dim + qk_rope_head_dim): 281745558600720 rows \
                 of q_proj / q_b_proj, above the 32-bit limit of a weight tensor"
            );
        }
        assert_eq!(c.dims().unwrap_err(), e);
        assert_eq!(
            c.cache_bytes_per_token().unwrap_err().status(),
            Status::InvalidConfig
        );

        // Each derived dimension on its own, just past u32::MAX (64-bit hosts).
        if usize::BITS != 64 {
            return;
        }
        let one = |c: Config| Config {
            max_seq_len: 1,
            max_tokens_per_call: 1,
            ..c
        };
        let shared = one(Config::deepseek_v2_lite());
        let cases = [
            // q rows: H * (n + p) = 2^16 * 2^16.
            (
                Config {
                    num_heads: 1 << 16,
                    qk_nope_head_dim: (1 << 16) - 64,
                    v_head_dim: 1,
                    ..shared
                },
                "num_heads * (qk_nope_head_dim + qk_rope_head_dim): 4294967296 rows",
            ),
            // kv_a rows, shared rope key: r + p with r = u32::MAX.
            (
                Config {
                    kv_lora_rank: u32::MAX,
                    ..shared
                },
                "kv_lora_rank + qk_rope_head_dim: 4294967359 rows of kv_a_proj_with_mqa",
            ),
            // kv_a rows, per-head rope key: r + H * p (the tutorial's H 8, p 64).
            (
                Config {
                    kv_lora_rank: u32::MAX - 100,
                    ..one(Config::tutorial())
                },
                "kv_lora_rank + num_heads * qk_rope_head_dim: 4294967707 rows",
            ),
            // kv_b rows: H * (n + v) past u32 while H * (n + p) fits.
            (
                Config {
                    num_heads: 1 << 16,
                    qk_nope_head_dim: 1,
                    qk_rope_head_dim: 2,
                    v_head_dim: 1 << 16,
                    ..shared
                },
                "num_heads * (qk_nope_head_dim + v_head_dim): 4295032832 rows of kv_b_proj",
            ),
        ];
        for (c, want) in cases {
            let e = c.validate().unwrap_err();
            assert_eq!(e.status(), Status::InvalidConfig);
            assert!(e.message().starts_with(want), "{}", e.message());
        }
        // At the limit: q_proj with exactly u32::MAX = 65537 * 65535 rows.
        let c = Config {
            num_heads: 65537,
            qk_nope_head_dim: 65533,
            qk_rope_head_dim: 2,
            v_head_dim: 2,
            hidden_size: 1,
            kv_lora_rank: 1,
            ..shared
        };
        assert_eq!(c.dims().unwrap().q_width, u32::MAX as usize);
        c.validate().unwrap();
    }

    #[test]
    fn engine_memory_must_fit_isize() {
        // Every product fits usize, every weight shape fits u32 and the cache
        // alone fits isize, but the engine memory does not: the query scratch
        // alone, [T][H][n+p] f32, is 2^31 * 2^30 * 4 = 2^63 bytes.
        if usize::BITS != 64 {
            return;
        }
        let c = Config {
            hidden_size: 1,
            num_heads: 1 << 14,
            q_lora_rank: 0,
            kv_lora_rank: 1,
            qk_nope_head_dim: (1 << 16) - 2,
            qk_rope_head_dim: 2,
            v_head_dim: 1,
            max_seq_len: 1 << 31,
            max_tokens_per_call: 1 << 31,
            rope_key: RopeKey::Shared,
            q_norm: false,
            ..Config::tutorial()
        };
        assert_eq!(c.dims().unwrap().q_width, 1 << 30);
        assert!(crate::engine::Engine::memory_bytes(&c).unwrap() > isize::MAX as usize);
        let e = c.validate().unwrap_err();
        assert_eq!(e.status(), Status::InvalidConfig);
        assert!(
            e.message()
                .starts_with("max_seq_len, max_tokens_per_call: ")
                && e.message()
                    .ends_with(" bytes of engine memory are above isize::MAX"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn overflow_is_rejected() {
        let mut c = Config::deepseek_v3();
        c.num_heads = u32::MAX;
        c.hidden_size = u32::MAX;
        c.max_seq_len = u32::MAX;
        let e = c.validate().unwrap_err();
        assert_eq!(e.status(), Status::InvalidConfig);
    }
}
