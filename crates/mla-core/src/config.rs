//! Engine configuration: dimensions, RoPE/YaRN parameters, cache dtype, attention mode.
//!
//! One [`Config`] covers both variants of DESIGN.md section 2: the DeepSeek-V2/V3
//! attention (shared rope key, optional query LoRA with RMSNorm) and the seed
//! tutorial's (per-head rope key taken from `x`, no query norm). [`Config::validate`]
//! names the offending field; [`Dims`] holds the derived sizes, all checked for
//! overflow, that the rest of the engine uses.

use crate::dtype::DType;
use crate::status::{err, Error, Result, Status};

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
        let bad =
            |field: &str, why: &str| -> Error { err(Status::InvalidConfig, field).s(": ").s(why) };
        let pos = |field: &str, v: u32| -> Result<usize> {
            if v == 0 {
                Err(bad(field, "must be > 0"))
            } else {
                Ok(v as usize)
            }
        };
        let d = pos("hidden_size", self.hidden_size)?;
        let h = pos("num_heads", self.num_heads)?;
        let r = pos("kv_lora_rank", self.kv_lora_rank)?;
        let n = pos("qk_nope_head_dim", self.qk_nope_head_dim)?;
        let p = pos("qk_rope_head_dim", self.qk_rope_head_dim)?;
        let v = pos("v_head_dim", self.v_head_dim)?;
        let max_seq = pos("max_seq_len", self.max_seq_len)?;
        let max_tok = pos("max_tokens_per_call", self.max_tokens_per_call)?;
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
        let finite_pos = |field: &str, x: f32| -> Result<()> {
            if x.is_finite() && x > 0.0 {
                Ok(())
            } else {
                Err(bad(field, "must be finite and > 0"))
            }
        };
        finite_pos("rms_norm_eps", self.rms_norm_eps)?;
        if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
            return Err(bad("rope_theta", "must be finite and > 1"));
        }
        finite_pos("rope_factor", self.rope_factor)?;
        if self.rope_factor > 1.0 {
            if self.original_max_position == 0 {
                return Err(bad(
                    "original_max_position",
                    "must be > 0 when rope_factor > 1",
                ));
            }
            finite_pos("beta_slow", self.beta_slow)?;
            finite_pos("beta_fast", self.beta_fast)?;
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
        let ovf = |what: &str| bad(what, "dimensions overflow");
        let qk = n.checked_add(p).ok_or_else(|| ovf("qk_head_dim"))?;
        let q_width = h
            .checked_mul(qk)
            .ok_or_else(|| ovf("num_heads * (n + p)"))?;
        let rope_k = match self.rope_key {
            RopeKey::Shared => p,
            RopeKey::PerHead => h.checked_mul(p).ok_or_else(|| ovf("num_heads * p"))?,
        };
        let kv_a_rows = r
            .checked_add(rope_k)
            .ok_or_else(|| ovf("kv_lora_rank + rope"))?;
        let nv = n.checked_add(v).ok_or_else(|| ovf("n + v"))?;
        let kv_b_rows = h
            .checked_mul(nv)
            .ok_or_else(|| ovf("num_heads * (n + v)"))?;
        let o_cols = h.checked_mul(v).ok_or_else(|| ovf("num_heads * v"))?;
        let cache_row = kv_a_rows;
        let cache_bytes_per_token = cache_row
            .checked_mul(self.cache_dtype.size())
            .ok_or_else(|| ovf("cache row"))?;
        // The cache is one slice: its bytes must fit isize, not just usize.
        cache_bytes_per_token
            .checked_mul(max_seq)
            .filter(|&b| b <= isize::MAX as usize)
            .ok_or_else(|| ovf("max_seq_len * cache row"))?;
        // Products with d must fit (weights are indexed by row * d).
        for (what, rows) in [
            ("q rows", q_width),
            ("kv_a rows", kv_a_rows),
            ("o_proj", o_cols),
        ] {
            rows.checked_mul(d).ok_or_else(|| ovf(what))?;
        }
        kv_b_rows.checked_mul(r).ok_or_else(|| ovf("kv_b_proj"))?;
        if rq > 0 {
            rq.checked_mul(d.max(q_width))
                .ok_or_else(|| ovf("q_lora_rank"))?;
        }
        // Every weight's rows and columns must fit the 32-bit fields of the C
        // `mla_tensor` (d, r_q and r are u32 already; these are the derived ones).
        let rope_rows = match self.rope_key {
            RopeKey::Shared => "kv_lora_rank + qk_rope_head_dim",
            RopeKey::PerHead => "kv_lora_rank + num_heads * qk_rope_head_dim",
        };
        for (what, n, role) in [
            (
                "num_heads * (qk_nope_head_dim + qk_rope_head_dim)",
                q_width,
                " rows of q_proj / q_b_proj",
            ),
            (rope_rows, kv_a_rows, " rows of kv_a_proj_with_mqa"),
            (
                "num_heads * (qk_nope_head_dim + v_head_dim)",
                kv_b_rows,
                " rows of kv_b_proj",
            ),
            ("num_heads * v_head_dim", o_cols, " columns of o_proj"),
        ] {
            if n > u32::MAX as usize {
                return Err(err(Status::InvalidConfig, what)
                    .s(": ")
                    .n(n)
                    .s(role)
                    .s(", above the 32-bit limit of a weight tensor"));
            }
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
