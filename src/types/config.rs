//! `mla_config` to and from the core [`Config`], and [`read_config`], the guarded
//! read of a caller's `mla_config` (`struct_size` first).

use super::*;

impl mla_config {
    /// The C form of `cfg` (with `struct_size` set).
    pub fn from_config(cfg: &Config) -> mla_config {
        mla_config {
            struct_size: size_of::<mla_config>() as u32,
            hidden_size: cfg.hidden_size,
            num_heads: cfg.num_heads,
            q_lora_rank: cfg.q_lora_rank,
            kv_lora_rank: cfg.kv_lora_rank,
            qk_nope_head_dim: cfg.qk_nope_head_dim,
            qk_rope_head_dim: cfg.qk_rope_head_dim,
            v_head_dim: cfg.v_head_dim,
            max_seq_len: cfg.max_seq_len,
            max_tokens_per_call: cfg.max_tokens_per_call,
            rope_layout: cfg.rope_layout as u32,
            rope_key: cfg.rope_key as u32,
            q_norm: cfg.q_norm as u32,
            cache_dtype: cfg.cache_dtype as u32,
            attn_mode: cfg.attn_mode as u32,
            original_max_position: cfg.original_max_position,
            rms_norm_eps: cfg.rms_norm_eps,
            rope_theta: cfg.rope_theta,
            rope_factor: cfg.rope_factor,
            beta_fast: cfg.beta_fast,
            beta_slow: cfg.beta_slow,
            mscale: cfg.mscale,
            mscale_all_dim: cfg.mscale_all_dim,
            softmax_scale: cfg.softmax_scale,
            rope_type: cfg.rope_type as u32,
            rope_attention_factor: cfg.rope_attention_factor,
            rope_yarn_truncate: u32::from(cfg.rope_yarn_truncate),
            rope_low_freq_factor: cfg.rope_low_freq_factor,
            rope_high_freq_factor: cfg.rope_high_freq_factor,
            rope_short_factor: cfg.rope_short_factor,
            rope_long_factor: cfg.rope_long_factor,
            rope_freq_alpha: u32::from(cfg.rope_freq_alpha),
            rope_key_norm: u32::from(cfg.rope_key_norm),
            q_latent_scale: cfg.q_latent_scale,
            kv_latent_scale: cfg.kv_latent_scale,
            query_scale: cfg.query_scale as u32,
            query_scale_beta: cfg.query_scale_beta,
            query_scale_length: cfg.query_scale_length,
            gate: cfg.gate as u32,
            sinks: u32::from(cfg.sinks),
            sliding_window: cfg.sliding_window,
            kv_shared: u32::from(cfg.kv_shared),
            dsa: cfg.dsa as u32,
            index_n_heads: cfg.index_n_heads,
            index_head_dim: cfg.index_head_dim,
            index_topk: cfg.index_topk,
            index_q_input: cfg.index_q_input as u32,
            index_rope: cfg.index_rope as u32,
            index_rope_layout: cfg.index_rope_layout as u32,
            index_k_norm_eps: cfg.index_k_norm_eps,
            index_q_norm_eps: cfg.index_q_norm_eps,
            index_query_scale: u32::from(cfg.index_query_scale),
            index_cache_dtype: cfg.index_cache_dtype as u32,
            index_kpool: cfg.index_kpool,
            index_kpool_tail: u32::from(cfg.index_kpool_tail),
        }
    }

    /// The core [`Config`]: checks `struct_size` (`AbiMismatch`) and the enum
    /// fields (`InvalidConfig`); the dimensions are validated by the core.
    pub fn to_config(&self) -> Result<Config> {
        if self.struct_size as usize != size_of::<mla_config>() {
            return Err(abi_mismatch(self.struct_size));
        }
        let bad = |field: &str, v: u32| {
            err(Status::InvalidConfig, field)
                .s(": unknown value ")
                .n(v as usize)
        };
        let rope_layout = RopeLayout::from_u32(self.rope_layout)
            .ok_or_else(|| bad("rope_layout", self.rope_layout))?;
        let rope_key =
            RopeKey::from_u32(self.rope_key).ok_or_else(|| bad("rope_key", self.rope_key))?;
        let dtype = |field: &str, v: u32| DType::from_u32(v).ok_or_else(|| bad(field, v));
        let cache_dtype = dtype("cache_dtype", self.cache_dtype)?;
        let index_cache_dtype = dtype("index_cache_dtype", self.index_cache_dtype)?;
        let attn_mode =
            AttnMode::from_u32(self.attn_mode).ok_or_else(|| bad("attn_mode", self.attn_mode))?;
        let flag = |field: &str, v: u32| match v {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(bad(field, other).s(" (0 or 1)")),
        };
        let q_norm = flag("q_norm", self.q_norm)?;
        let rope_type =
            RopeType::from_u32(self.rope_type).ok_or_else(|| bad("rope_type", self.rope_type))?;
        let query_scale = QueryScale::from_u32(self.query_scale)
            .ok_or_else(|| bad("query_scale", self.query_scale))?;
        let gate = Gate::from_u32(self.gate).ok_or_else(|| bad("gate", self.gate))?;
        let dsa = Dsa::from_u32(self.dsa).ok_or_else(|| bad("dsa", self.dsa))?;
        let index_q_input = IndexQInput::from_u32(self.index_q_input)
            .ok_or_else(|| bad("index_q_input", self.index_q_input))?;
        let index_rope = IndexRope::from_u32(self.index_rope)
            .ok_or_else(|| bad("index_rope", self.index_rope))?;
        let index_rope_layout = RopeLayout::from_u32(self.index_rope_layout)
            .ok_or_else(|| bad("index_rope_layout", self.index_rope_layout))?;
        Ok(Config {
            hidden_size: self.hidden_size,
            num_heads: self.num_heads,
            q_lora_rank: self.q_lora_rank,
            kv_lora_rank: self.kv_lora_rank,
            qk_nope_head_dim: self.qk_nope_head_dim,
            qk_rope_head_dim: self.qk_rope_head_dim,
            v_head_dim: self.v_head_dim,
            max_seq_len: self.max_seq_len,
            max_tokens_per_call: self.max_tokens_per_call,
            rope_layout,
            rope_key,
            q_norm,
            cache_dtype,
            attn_mode,
            original_max_position: self.original_max_position,
            rms_norm_eps: self.rms_norm_eps,
            rope_theta: self.rope_theta,
            rope_factor: self.rope_factor,
            beta_fast: self.beta_fast,
            beta_slow: self.beta_slow,
            mscale: self.mscale,
            mscale_all_dim: self.mscale_all_dim,
            softmax_scale: self.softmax_scale,
            rope_type,
            rope_attention_factor: self.rope_attention_factor,
            rope_yarn_truncate: flag("rope_yarn_truncate", self.rope_yarn_truncate)?,
            rope_low_freq_factor: self.rope_low_freq_factor,
            rope_high_freq_factor: self.rope_high_freq_factor,
            rope_short_factor: self.rope_short_factor,
            rope_long_factor: self.rope_long_factor,
            rope_freq_alpha: flag("rope_freq_alpha", self.rope_freq_alpha)?,
            rope_key_norm: flag("rope_key_norm", self.rope_key_norm)?,
            q_latent_scale: self.q_latent_scale,
            kv_latent_scale: self.kv_latent_scale,
            query_scale,
            query_scale_beta: self.query_scale_beta,
            query_scale_length: self.query_scale_length,
            gate,
            sinks: flag("sinks", self.sinks)?,
            sliding_window: self.sliding_window,
            kv_shared: flag("kv_shared", self.kv_shared)?,
            dsa,
            index_n_heads: self.index_n_heads,
            index_head_dim: self.index_head_dim,
            index_topk: self.index_topk,
            index_q_input,
            index_rope,
            index_rope_layout,
            index_k_norm_eps: self.index_k_norm_eps,
            index_q_norm_eps: self.index_q_norm_eps,
            index_query_scale: flag("index_query_scale", self.index_query_scale)?,
            index_cache_dtype,
            index_kpool: self.index_kpool,
            index_kpool_tail: flag("index_kpool_tail", self.index_kpool_tail)?,
        })
    }
}

fn abi_mismatch(got: u32) -> Error {
    err(Status::AbiMismatch, "mla_config.struct_size is ")
        .n(got as usize)
        .s(", this library expects ")
        .n(size_of::<mla_config>())
}

/// Reads a caller's `mla_config`: `struct_size` first, so that a smaller struct
/// from another ABI is never read past its end; then the enum fields
/// ([`mla_config::to_config`]). The dimensions are not validated here.
///
/// # Safety
/// `c` is NULL or points to at least 4 readable bytes, and to a whole
/// `mla_config` when those bytes hold `sizeof(mla_config)`.
pub(crate) unsafe fn read_config(c: *const mla_config) -> Result<Config> {
    // SAFETY: `struct_size` is the first field; the caller guarantees 4 bytes.
    let Some(size) = (unsafe { boundary::read(c.cast::<u32>()) }) else {
        return Err(err(Status::NullPointer, "config pointer is NULL"));
    };
    if size as usize != size_of::<mla_config>() {
        return Err(abi_mismatch(size));
    }
    // SAFETY: the caller's struct has our size, so all of it is readable.
    match unsafe { boundary::read(c) } {
        Some(cfg) => cfg.to_config(),
        None => Err(err(Status::NullPointer, "config pointer is NULL")),
    }
}
