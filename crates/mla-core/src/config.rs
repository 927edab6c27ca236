//! Engine configuration: dimensions, RoPE/YaRN parameters, cache dtype, attention mode.
//!
//! One [`Config`] covers both variants of DESIGN.md section 2: the DeepSeek-V2/V3
//! attention (shared rope key, optional query LoRA with RMSNorm) and the seed
//! tutorial's (per-head rope key taken from `x`, no query norm). [`Config::validate`]
//! names the offending field; [`Dims`] holds the derived sizes, all checked for
//! overflow, that the rest of the engine uses.

use crate::dtype::DType;
use crate::status::{err, Result, Status};

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
    /// Absorb `W_UK` into the query and `W_UV` after the latent sum (DESIGN.md 2.1).
    Absorb = 2,
}

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
}

impl Config {
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
        }
    }

    /// Checks every field; on failure the message names the field and the rule.
    pub fn validate(&self) -> Result<()> {
        self.dims().map(|_| ())
    }

    /// Validates and returns the derived sizes.
    pub fn dims(&self) -> Result<Dims> {
        self.derive_dims()
            .map_err(|f| err(Status::InvalidConfig, f.field).s(": ").s(f.rule))
    }

    /// [`Config::dims`] for const contexts (a firmware sizing a `static` arena):
    /// the same checks, in the same order, with the fault as plain strings.
    pub const fn derive_dims(&self) -> core::result::Result<Dims, ConfigFault> {
        /// `?` for const fns (the `Try` trait is not const).
        macro_rules! tri {
            ($e:expr) => {
                match $e {
                    Ok(v) => v,
                    Err(e) => return Err(e),
                }
            };
        }
        const fn bad(field: &'static str, rule: &'static str) -> ConfigFault {
            ConfigFault { field, rule }
        }
        const fn pos(field: &'static str, v: u32) -> core::result::Result<usize, ConfigFault> {
            if v == 0 {
                Err(bad(field, "must be > 0"))
            } else {
                Ok(v as usize)
            }
        }
        const fn finite_pos(field: &'static str, x: f32) -> core::result::Result<(), ConfigFault> {
            if x.is_finite() && x > 0.0 {
                Ok(())
            } else {
                Err(bad(field, "must be finite and > 0"))
            }
        }
        /// The value of a checked size computation, or the fault "`what`:
        /// dimensions overflow".
        const fn fits(
            v: Option<usize>,
            what: &'static str,
        ) -> core::result::Result<usize, ConfigFault> {
            match v {
                Some(x) => Ok(x),
                None => Err(bad(what, "dimensions overflow")),
            }
        }

        let d = tri!(pos("hidden_size", self.hidden_size));
        let h = tri!(pos("num_heads", self.num_heads));
        let r = tri!(pos("kv_lora_rank", self.kv_lora_rank));
        let n = tri!(pos("qk_nope_head_dim", self.qk_nope_head_dim));
        let p = tri!(pos("qk_rope_head_dim", self.qk_rope_head_dim));
        let v = tri!(pos("v_head_dim", self.v_head_dim));
        let max_seq = tri!(pos("max_seq_len", self.max_seq_len));
        let max_tok = tri!(pos("max_tokens_per_call", self.max_tokens_per_call));
        let rq = self.q_lora_rank as usize;
        if p % 2 != 0 {
            return Err(bad("qk_rope_head_dim", "must be even (RoPE rotates pairs)"));
        }
        if max_tok > max_seq {
            return Err(bad("max_tokens_per_call", "must be <= max_seq_len"));
        }
        if self.q_norm && rq == 0 {
            return Err(bad(
                "q_norm",
                "needs q_lora_rank > 0 (the norm acts on the query latent)",
            ));
        }
        tri!(finite_pos("rms_norm_eps", self.rms_norm_eps));
        if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
            return Err(bad("rope_theta", "must be finite and > 1"));
        }
        tri!(finite_pos("rope_factor", self.rope_factor));
        if self.rope_factor > 1.0 {
            if self.original_max_position == 0 {
                return Err(bad(
                    "original_max_position",
                    "must be > 0 when rope_factor > 1",
                ));
            }
            tri!(finite_pos("beta_slow", self.beta_slow));
            tri!(finite_pos("beta_fast", self.beta_fast));
            if self.beta_fast <= self.beta_slow {
                return Err(bad("beta_fast", "must be > beta_slow"));
            }
            if !self.mscale.is_finite() || !self.mscale_all_dim.is_finite() {
                return Err(bad("mscale", "mscale and mscale_all_dim must be finite"));
            }
        }
        if !(self.softmax_scale.is_finite() && self.softmax_scale >= 0.0) {
            return Err(bad(
                "softmax_scale",
                "must be finite and >= 0 (0 = derived)",
            ));
        }

        // Derived sizes, each checked for overflow; the total engine size is also
        // checked by the memory plan.
        let qk = tri!(fits(n.checked_add(p), "qk_head_dim"));
        let q_width = tri!(fits(h.checked_mul(qk), "num_heads * (n + p)"));
        let rope_k = match self.rope_key {
            RopeKey::Shared => p,
            RopeKey::PerHead => tri!(fits(h.checked_mul(p), "num_heads * p")),
        };
        let kv_a_rows = tri!(fits(r.checked_add(rope_k), "kv_lora_rank + rope"));
        // <= kv_a_rows (rope_k >= p), so this never fails first.
        let absorbed_width = tri!(fits(r.checked_add(p), "kv_lora_rank + p"));
        let nv = tri!(fits(n.checked_add(v), "n + v"));
        let kv_b_rows = tri!(fits(h.checked_mul(nv), "num_heads * (n + v)"));
        let o_cols = tri!(fits(h.checked_mul(v), "num_heads * v"));
        let cache_row = kv_a_rows;
        let cache_bytes_per_token = tri!(fits(
            cache_row.checked_mul(self.cache_dtype.size()),
            "cache row"
        ));
        tri!(fits(
            cache_bytes_per_token.checked_mul(max_seq),
            "max_seq_len * cache row"
        ));
        // Products with d must fit (weights are indexed by row * d).
        tri!(fits(q_width.checked_mul(d), "q rows"));
        tri!(fits(kv_a_rows.checked_mul(d), "kv_a rows"));
        tri!(fits(o_cols.checked_mul(d), "o_proj"));
        tri!(fits(kv_b_rows.checked_mul(r), "kv_b_proj"));
        if rq > 0 {
            let widest = if d > q_width { d } else { q_width };
            tri!(fits(rq.checked_mul(widest), "q_lora_rank"));
        }
        Ok(Dims {
            d,
            h,
            rq,
            r,
            n,
            p,
            v,
            qk,
            q_width,
            rope_k,
            absorbed_width,
            kv_a_rows,
            kv_b_rows,
            o_cols,
            cache_row,
            max_seq,
            max_tok,
        })
    }

    /// Values cached per token (`r + p` shared, `r + H*p` per head).
    pub fn cache_values_per_token(&self) -> Result<usize> {
        Ok(self.dims()?.cache_row)
    }

    /// Bytes cached per token in the configured cache dtype.
    pub fn cache_bytes_per_token(&self) -> Result<usize> {
        // dims() checked cache_row * dtype size * max_seq_len for overflow.
        Ok(self.dims()?.cache_row * self.cache_dtype.size())
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

    /// True when YaRN is active (`rope_factor > 1`).
    pub fn yarn(&self) -> bool {
        self.rope_factor > 1.0
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
    /// r + p: one head's absorbed query `[W_UK_h^T q_nope_h | q_pe_h]`
    pub absorbed_width: usize,
    /// r + rope_k: rows of kv_a_proj_with_mqa
    pub kv_a_rows: usize,
    /// H * (n + v): rows of kv_b_proj
    pub kv_b_rows: usize,
    /// H * v: columns of o_proj
    pub o_cols: usize,
    /// Values per cached token: r + rope_k
    pub cache_row: usize,
    /// max_seq_len
    pub max_seq: usize,
    /// max_tokens_per_call
    pub max_tok: usize,
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
        // DESIGN.md 2.1: 576 cached values per token for V3 against 40,960 for full K/V.
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
    fn overflow_is_rejected() {
        let mut c = Config::deepseek_v3();
        c.num_heads = u32::MAX;
        c.hidden_size = u32::MAX;
        c.max_seq_len = u32::MAX;
        let e = c.validate().unwrap_err();
        assert_eq!(e.status(), Status::InvalidConfig);
    }
}
