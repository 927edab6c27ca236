//! The C types of the ABI: status, dtype and enum constants, `mla_config`,
//! `mla_tensor`, `mla_weights`, their conversions to and from the core types,
//! and the version and status-string functions.
//!
//! The rules every C type and function follows (enums travel as `uint32_t` and
//! an unknown value is an error, never a reinterpretation; `struct_size` guards
//! the config layout; tensors are borrowed, aligned to their element size) are
//! the "Rules" of the README's "C API" section. Nothing here is an entry point
//! with state: the conversions are plain Rust, and the pointer reads go through
//! the boundary module.
#![allow(non_camel_case_types)]

use core::ffi::{c_char, c_void};
use core::mem::size_of;
use core::ptr;

use mla_core::config::{
    AttnMode, Config, Dsa, Gate, IndexQInput, IndexRope, QueryScale, RopeKey, RopeLayout, RopeType,
    MAX_ROPE_FACTORS,
};
use mla_core::dtype::{f8_blocks, DType, Elems, F8_BLOCK};
use mla_core::status::{err, Error, Result, Status};
use mla_core::weights::{Tensor, Weights, WEIGHT_COUNT, WEIGHT_NAMES};

use crate::boundary;

mod config;
mod weights;

pub(crate) use config::read_config;

/// Version of the C ABI. A program built against another value must not use
/// this library (compare with `mla_abi_version()` at start-up).
pub const MLA_ABI_VERSION: u32 = 2;

/// Bytes of the longest message, NUL included, that `mla_last_error` returns or
/// `mla_config_validate` writes: a `msg` buffer this large is never cut.
pub const MLA_MESSAGE_MAX: usize = 192;

/// Result of every fallible function: `MLA_OK` (0) or one of the `MLA_ERR_*` codes.
pub type mla_status = u32;

/// Success.
pub const MLA_OK: mla_status = 0;
/// A required pointer argument was NULL.
pub const MLA_ERR_NULL_POINTER: mla_status = 1;
/// A configuration field is out of range or inconsistent (zero or overflowing
/// dimensions, odd rope dim, unknown enum value, ...).
pub const MLA_ERR_INVALID_CONFIG: mla_status = 2;
/// A weight tensor is missing, unexpected, or has the wrong shape for the config.
pub const MLA_ERR_WEIGHT_SHAPE: mla_status = 3;
/// A weight tensor has an unknown or unsupported dtype.
pub const MLA_ERR_WEIGHT_DTYPE: mla_status = 4;
/// Memory or tensor data is not aligned as required (engine memory: 64 bytes;
/// f32 data: 4; f16/bf16 data: 2).
pub const MLA_ERR_MISALIGNED: mla_status = 5;
/// The memory given is smaller than `mla_engine_size()`.
pub const MLA_ERR_BUFFER_TOO_SMALL: mla_status = 6;
/// The forward call would pass `max_seq_len`; nothing was appended.
pub const MLA_ERR_CACHE_FULL: mla_status = 7;
/// An argument is out of range (`n_tokens` 0 or above `max_tokens_per_call`,
/// truncate length above `mla_len()`, overlapping buffers, bad prefix, ...).
pub const MLA_ERR_INVALID_ARGUMENT: mla_status = 8;
/// The input holds NaN or infinity; nothing was appended.
pub const MLA_ERR_NON_FINITE: mla_status = 9;
/// The operation, format or dtype is not supported by this build.
pub const MLA_ERR_UNSUPPORTED: mla_status = 10;
/// A device (CUDA) call failed.
pub const MLA_ERR_DEVICE: mla_status = 11;
/// `struct_size` does not match: the caller was built against another ABI.
pub const MLA_ERR_ABI_MISMATCH: mla_status = 12;
/// Internal error (a caught panic); the engine state is unchanged.
pub const MLA_ERR_INTERNAL: mla_status = 13;

/// Element type of tensors and of the latent cache (`MLA_DTYPE_*`).
pub type mla_dtype = u32;
/// IEEE binary32.
pub const MLA_DTYPE_F32: mla_dtype = 0;
/// IEEE binary16.
pub const MLA_DTYPE_F16: mla_dtype = 1;
/// bfloat16.
pub const MLA_DTYPE_BF16: mla_dtype = 2;
/// FP8 E4M3 (OCP, as DeepSeek's FP8 checkpoints). As `cache_dtype`: the latent
/// cache in FlashMLA's DeepSeek-V3.2 layout, per token the r latent values as
/// E4M3, one f32 scale per 128 of them, the rope values as bf16 (656 bytes at
/// r 512, p 64). As `index_cache_dtype`: E4M3 keys with one f32 scale per
/// token. As a tensor dtype (projection matrices only): DeepSeek-V3's FP8
/// weights, with one f32 scale per 128 x 128 block in `mla_tensor.scale` and
/// `scale_block` 128.
pub const MLA_DTYPE_F8_E4M3: mla_dtype = 3;

/// Pair order inside a rotated vector of `p` values (`MLA_ROPE_*`).
pub type mla_rope_layout = u32;
/// Pairs `(x[2i], x[2i+1])` (DeepSeek checkpoints, HF `rope_interleave=True`).
pub const MLA_ROPE_INTERLEAVED: mla_rope_layout = 0;
/// Pairs `(x[i], x[i+p/2])` (rotate_half / NeoX; the tutorial).
pub const MLA_ROPE_HALF: mla_rope_layout = 1;

/// Where the rope key comes from (`MLA_ROPE_KEY_*`).
pub type mla_rope_key = u32;
/// One `k_pe` per token from `kv_a_proj_with_mqa`, shared by all heads (DeepSeek).
pub const MLA_ROPE_KEY_SHARED: mla_rope_key = 0;
/// One rope key per head per token, taken from `x` (the tutorial).
pub const MLA_ROPE_KEY_PER_HEAD: mla_rope_key = 1;

/// How attention is computed (`MLA_ATTN_*`).
pub type mla_attn_mode = u32;
/// Picked per call by estimated cost.
pub const MLA_ATTN_AUTO: mla_attn_mode = 0;
/// Decompress K and V from the latent cache, then standard attention.
pub const MLA_ATTN_NAIVE: mla_attn_mode = 1;
/// Absorbed form: `W_UK` folded into the query, `W_UV` applied after the latent sum.
pub const MLA_ATTN_ABSORB: mla_attn_mode = 2;

/// Frequency rule of the rotary embedding (`MLA_ROPE_TYPE_*`).
pub type mla_rope_type = u32;
/// `f_i = theta^(-2i/p)`.
pub const MLA_ROPE_TYPE_DEFAULT: mla_rope_type = 0;
/// YaRN (`rope_factor`, `original_max_position`, betas, mscales, truncate).
pub const MLA_ROPE_TYPE_YARN: mla_rope_type = 1;
/// Linear position interpolation: `f_i / rope_factor`.
pub const MLA_ROPE_TYPE_LINEAR: mla_rope_type = 2;
/// Llama 3 (`rope_factor`, low/high frequency factors, `original_max_position`).
pub const MLA_ROPE_TYPE_LLAMA3: mla_rope_type = 3;
/// LongRoPE: `f_i / ext_i` with the short or long factors.
pub const MLA_ROPE_TYPE_LONGROPE: mla_rope_type = 4;
/// No rotation (NoPE).
pub const MLA_ROPE_TYPE_NONE: mla_rope_type = 5;

/// Scaling of the query after RoPE (`MLA_QUERY_SCALE_*`).
pub type mla_query_scale = u32;
/// None.
pub const MLA_QUERY_SCALE_NONE: mla_query_scale = 0;
/// Llama 4: `q *= 1 + beta * ln(1 + floor(pos / L))`.
pub const MLA_QUERY_SCALE_LLAMA4: mla_query_scale = 1;
/// Learned per head: `q_h *= s_h * ln(pos + 1) + b_h` (`query_scale_s`, `query_scale_b`).
pub const MLA_QUERY_SCALE_LEARNED_LOG_POS: mla_query_scale = 2;

/// Output gate before `o_proj` (`MLA_GATE_*`).
pub type mla_gate = u32;
/// No gate.
pub const MLA_GATE_NONE: mla_gate = 0;
/// One sigmoid gate per head from x (`gate_proj` `[H][d]`).
pub const MLA_GATE_PER_HEAD: mla_gate = 1;
/// One sigmoid gate per output channel from x (`gate_proj` `[H*v][d]`).
pub const MLA_GATE_PER_CHANNEL: mla_gate = 2;
/// Gate rows fused into `q_b_proj` (`[H*(n+p+v)][2 r_q]`).
pub const MLA_GATE_FUSED_Q: mla_gate = 3;

/// DeepSeek Sparse Attention mode (`MLA_DSA_*`).
pub type mla_dsa = u32;
/// Dense attention.
pub const MLA_DSA_NONE: mla_dsa = 0;
/// Own indexer; attends to the top-k keys.
pub const MLA_DSA_FULL: mla_dsa = 1;
/// Uses another layer's selection (`mla_engine_share_topk`).
pub const MLA_DSA_SHARED: mla_dsa = 2;

/// Input of the indexer query (`MLA_INDEX_Q_*`).
pub type mla_index_q_input = u32;
/// The normalised query latent: `index_wq_b` is `[Hi*Di][r_q]`.
pub const MLA_INDEX_Q_LATENT: mla_index_q_input = 0;
/// LayerNorm(x): `index_wq_b` is `[Hi*Di][d]`.
pub const MLA_INDEX_Q_HIDDEN_LAYERNORM: mla_index_q_input = 1;

/// Which `p` dims of the indexer query and key are rotated (`MLA_INDEX_ROPE_*`).
pub type mla_index_rope = u32;
/// The first `p` of `index_head_dim`.
pub const MLA_INDEX_ROPE_FIRST: mla_index_rope = 0;
/// The last `p`.
pub const MLA_INDEX_ROPE_LAST: mla_index_rope = 1;
/// None (NoPE layers).
pub const MLA_INDEX_ROPE_NONE: mla_index_rope = 2;

/// Entries of `mla_config.rope_short_factor` / `rope_long_factor` (`p/2` are used).
pub const MLA_MAX_ROPE_FACTORS: usize = 64;

// The numeric values above are the ABI; they must equal the core's enums.
// (Compile-time checks: a mismatch fails the build, it cannot panic at run time.)
const _: () = {
    assert!(MLA_ABI_VERSION == 2);
    assert!(MLA_OK == Status::Ok as u32);
    assert!(MLA_ERR_NULL_POINTER == Status::NullPointer as u32);
    assert!(MLA_ERR_INVALID_CONFIG == Status::InvalidConfig as u32);
    assert!(MLA_ERR_WEIGHT_SHAPE == Status::WeightShape as u32);
    assert!(MLA_ERR_WEIGHT_DTYPE == Status::WeightDtype as u32);
    assert!(MLA_ERR_MISALIGNED == Status::Misaligned as u32);
    assert!(MLA_ERR_BUFFER_TOO_SMALL == Status::BufferTooSmall as u32);
    assert!(MLA_ERR_CACHE_FULL == Status::CacheFull as u32);
    assert!(MLA_ERR_INVALID_ARGUMENT == Status::InvalidArgument as u32);
    assert!(MLA_ERR_NON_FINITE == Status::NonFinite as u32);
    assert!(MLA_ERR_UNSUPPORTED == Status::Unsupported as u32);
    assert!(MLA_ERR_DEVICE == Status::Device as u32);
    assert!(MLA_ERR_ABI_MISMATCH == Status::AbiMismatch as u32);
    assert!(MLA_ERR_INTERNAL == Status::Internal as u32);
    assert!(MLA_DTYPE_F32 == DType::F32 as u32);
    assert!(MLA_DTYPE_F16 == DType::F16 as u32);
    assert!(MLA_DTYPE_BF16 == DType::BF16 as u32);
    assert!(MLA_ROPE_INTERLEAVED == RopeLayout::Interleaved as u32);
    assert!(MLA_ROPE_HALF == RopeLayout::Half as u32);
    assert!(MLA_ROPE_KEY_SHARED == RopeKey::Shared as u32);
    assert!(MLA_ROPE_KEY_PER_HEAD == RopeKey::PerHead as u32);
    assert!(MLA_ATTN_AUTO == AttnMode::Auto as u32);
    assert!(MLA_ATTN_NAIVE == AttnMode::Naive as u32);
    assert!(MLA_ATTN_ABSORB == AttnMode::Absorb as u32);
    assert!(MLA_ROPE_TYPE_DEFAULT == RopeType::Default as u32);
    assert!(MLA_ROPE_TYPE_YARN == RopeType::Yarn as u32);
    assert!(MLA_ROPE_TYPE_LINEAR == RopeType::Linear as u32);
    assert!(MLA_ROPE_TYPE_LLAMA3 == RopeType::Llama3 as u32);
    assert!(MLA_ROPE_TYPE_LONGROPE == RopeType::LongRope as u32);
    assert!(MLA_ROPE_TYPE_NONE == RopeType::None as u32);
    assert!(MLA_QUERY_SCALE_NONE == QueryScale::None as u32);
    assert!(MLA_QUERY_SCALE_LLAMA4 == QueryScale::Llama4 as u32);
    assert!(MLA_QUERY_SCALE_LEARNED_LOG_POS == QueryScale::LearnedLogPos as u32);
    assert!(MLA_GATE_NONE == Gate::None as u32);
    assert!(MLA_GATE_PER_HEAD == Gate::PerHead as u32);
    assert!(MLA_GATE_PER_CHANNEL == Gate::PerChannel as u32);
    assert!(MLA_GATE_FUSED_Q == Gate::FusedQ as u32);
    assert!(MLA_DSA_NONE == Dsa::None as u32);
    assert!(MLA_DSA_FULL == Dsa::Full as u32);
    assert!(MLA_DSA_SHARED == Dsa::Shared as u32);
    assert!(MLA_INDEX_Q_LATENT == IndexQInput::QLatent as u32);
    assert!(MLA_INDEX_Q_HIDDEN_LAYERNORM == IndexQInput::HiddenLayerNorm as u32);
    assert!(MLA_INDEX_ROPE_FIRST == IndexRope::First as u32);
    assert!(MLA_INDEX_ROPE_LAST == IndexRope::Last as u32);
    assert!(MLA_INDEX_ROPE_NONE == IndexRope::None as u32);
    assert!(MLA_MAX_ROPE_FACTORS == MAX_ROPE_FACTORS);
    // mla_weights holds one mla_tensor per core tensor, in the same order.
    assert!(size_of::<mla_weights>() == WEIGHT_COUNT * size_of::<mla_tensor>());
    assert!(MLA_DTYPE_F8_E4M3 == DType::F8E4M3 as u32);
};

/// Engine configuration. Fill it with a preset (`mla_config_tutorial()`, ...),
/// then change fields; `struct_size` must stay `sizeof(mla_config)`.
/// Notation: d = hidden_size, H = num_heads, r_q = q_lora_rank, r = kv_lora_rank,
/// n = qk_nope_head_dim, p = qk_rope_head_dim, v = v_head_dim.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct mla_config {
    /// `sizeof(mla_config)`: guards against a caller built with another ABI.
    pub struct_size: u32,
    /// d: model width; inputs and outputs are `[n_tokens][d]` floats.
    pub hidden_size: u32,
    /// H: attention heads.
    pub num_heads: u32,
    /// r_q: query LoRA rank; 0 = a plain `q_proj`.
    pub q_lora_rank: u32,
    /// r: latent width cached per token.
    pub kv_lora_rank: u32,
    /// n: per-head query/key width without RoPE.
    pub qk_nope_head_dim: u32,
    /// p: per-head rotated width (even).
    pub qk_rope_head_dim: u32,
    /// v: per-head value width.
    pub v_head_dim: u32,
    /// Cache capacity in tokens.
    pub max_seq_len: u32,
    /// Most tokens one `mla_forward` call may take (sizes the scratch memory).
    pub max_tokens_per_call: u32,
    /// `MLA_ROPE_INTERLEAVED` or `MLA_ROPE_HALF`.
    pub rope_layout: mla_rope_layout,
    /// `MLA_ROPE_KEY_SHARED` or `MLA_ROPE_KEY_PER_HEAD`.
    pub rope_key: mla_rope_key,
    /// 1: RMSNorm on the query latent (`q_a_layernorm`, needs r_q > 0); 0: none.
    pub q_norm: u32,
    /// Storage type of the latent cache (`MLA_DTYPE_*`; F8_E4M3: FlashMLA's
    /// FP8 layout, see `mla_cache_bytes_per_token`).
    pub cache_dtype: mla_dtype,
    /// `MLA_ATTN_AUTO`, `MLA_ATTN_NAIVE` or `MLA_ATTN_ABSORB`.
    pub attn_mode: mla_attn_mode,
    /// YaRN L0: the pre-training context length (used when rope_factor > 1).
    pub original_max_position: u32,
    /// RMSNorm epsilon (> 0).
    pub rms_norm_eps: f32,
    /// RoPE base theta (> 1).
    pub rope_theta: f32,
    /// YaRN scale factor s; <= 1 disables YaRN.
    pub rope_factor: f32,
    /// YaRN beta_fast (> beta_slow).
    pub beta_fast: f32,
    /// YaRN beta_slow (> 0).
    pub beta_slow: f32,
    /// YaRN mscale (cos/sin numerator).
    pub mscale: f32,
    /// YaRN mscale_all_dim (cos/sin denominator; softmax scale squared).
    pub mscale_all_dim: f32,
    /// Softmax scale; 0 derives `(n+p)^-0.5` times YaRN's `mscale(s, mscale_all_dim)^2`.
    pub softmax_scale: f32,

    // ---- ABI version 2: appended; the fields above keep their offsets. ----
    /// `MLA_ROPE_TYPE_*`: the frequency rule (`MLA_ROPE_TYPE_NONE`: no rotation).
    pub rope_type: mla_rope_type,
    /// Final cos/sin factor; 0 derives it (YaRN: `mscale(s, mscale) /
    /// mscale(s, mscale_all_dim)`; otherwise 1).
    pub rope_attention_factor: f32,
    /// YaRN: 1 floors/ceils the correction range (default), 0 keeps it fractional.
    pub rope_yarn_truncate: u32,
    /// Llama 3 `low_freq_factor`.
    pub rope_low_freq_factor: f32,
    /// Llama 3 `high_freq_factor`.
    pub rope_high_freq_factor: f32,
    /// LongRoPE short factors (the first p/2 are used).
    pub rope_short_factor: [f32; MLA_MAX_ROPE_FACTORS],
    /// LongRoPE long factors (the first p/2 are used).
    pub rope_long_factor: [f32; MLA_MAX_ROPE_FACTORS],
    /// 1: LeRoPE, inverse frequencies times `exp(alpha)` (weight `rope_freq_alpha`).
    pub rope_freq_alpha: u32,
    /// 1: RMSNorm on the rope key before RoPE (weight `rope_key_norm`).
    pub rope_key_norm: u32,
    /// Multiplies the normalised query latent; 1 = none.
    pub q_latent_scale: f32,
    /// Multiplies the normalised KV latent before it is cached; 1 = none.
    pub kv_latent_scale: f32,
    /// `MLA_QUERY_SCALE_*`.
    pub query_scale: mla_query_scale,
    /// Llama 4 `beta`.
    pub query_scale_beta: f32,
    /// Llama 4 `L` (positions per step).
    pub query_scale_length: u32,
    /// `MLA_GATE_*` (weights `gate_proj`, or fused into `q_b_proj`).
    pub gate: mla_gate,
    /// 1: a learned sink logit per head joins the softmax (weight `sinks`).
    pub sinks: u32,
    /// Sliding window W (keys `pos - W < t <= pos`); 0 = none.
    pub sliding_window: u32,
    /// 1: the layer attends over another engine's latent cache
    /// (`mla_engine_share_cache`) and has no `kv_a` weights of its own.
    pub kv_shared: u32,
    /// `MLA_DSA_*`.
    pub dsa: mla_dsa,
    /// Indexer heads Hi.
    pub index_n_heads: u32,
    /// Indexer head width Di.
    pub index_head_dim: u32,
    /// Keys selected per query K.
    pub index_topk: u32,
    /// `MLA_INDEX_Q_*`.
    pub index_q_input: mla_index_q_input,
    /// `MLA_INDEX_ROPE_*`.
    pub index_rope: mla_index_rope,
    /// `MLA_ROPE_INTERLEAVED` or `MLA_ROPE_HALF`: the indexer's rotation.
    pub index_rope_layout: mla_rope_layout,
    /// LayerNorm eps of the indexer key.
    pub index_k_norm_eps: f32,
    /// LayerNorm eps of the indexer query input (`MLA_INDEX_Q_HIDDEN_LAYERNORM`).
    pub index_q_norm_eps: f32,
    /// 1: learned log-position scale on the indexer query.
    pub index_query_scale: u32,
    /// Storage of the indexer-key cache: `MLA_DTYPE_F32`, `_BF16` or
    /// `_F8_E4M3` (E4M3 with one f32 scale per token).
    pub index_cache_dtype: mla_dtype,
    /// Pooled indexer keys: tokens per pool; 0 = none.
    pub index_kpool: u32,
    /// Pooled indexer: 1 always selects the query's own incomplete pool.
    pub index_kpool_tail: u32,
}

/// A borrowed row-major tensor `[rows][cols]` (PyTorch `nn.Linear` layout `[out][in]`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct mla_tensor {
    /// The `rows * cols` elements, aligned to the element size; NULL = absent.
    pub data: *const c_void,
    /// `MLA_DTYPE_F32`, `MLA_DTYPE_F16`, `MLA_DTYPE_BF16` or (projection
    /// matrices, with `scale`) `MLA_DTYPE_F8_E4M3`.
    pub dtype: mla_dtype,
    /// Rows (output features).
    pub rows: u32,
    /// Columns (input features).
    pub cols: u32,
    /// ABI 2: block scales of an FP8 tensor, `[ceil(rows/scale_block)]
    /// [ceil(cols/scale_block)]` f32 (`W = W8 * scale`), each finite and
    /// positive; required with MLA_DTYPE_F8_E4M3, NULL for every other dtype.
    pub scale: *const f32,
    /// ABI 2: rows and columns per scale block: 128 (DeepSeek FP8; other
    /// values MLA_ERR_UNSUPPORTED); 0 without scales.
    pub scale_block: u32,
}

/// The weights of one MLA layer, Hugging Face DeepSeek names. Tensors the config
/// does not use must be absent (data NULL). Norms and biases are `[1][len]`.
/// The struct itself may be discarded after `mla_engine_init`; the tensor data
/// must outlive the engine (it is borrowed, not copied).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct mla_weights {
    /// `[H*(n+p)][d]`, only when q_lora_rank == 0.
    pub q_proj: mla_tensor,
    /// `[r_q][d]`, only when q_lora_rank > 0.
    pub q_a_proj: mla_tensor,
    /// `[1][r_q]`, only when q_norm.
    pub q_a_layernorm: mla_tensor,
    /// `[H*(n+p)][r_q]`, only when q_lora_rank > 0.
    pub q_b_proj: mla_tensor,
    /// `[r + p][d]` (shared rope key) or `[r + H*p][d]` (per-head rope key).
    pub kv_a_proj_with_mqa: mla_tensor,
    /// `[1][r]`.
    pub kv_a_layernorm: mla_tensor,
    /// `[H*(n+v)][r]`: per head, n rows of W_UK then v rows of W_UV.
    pub kv_b_proj: mla_tensor,
    /// `[d][H*v]`.
    pub o_proj: mla_tensor,
    /// Optional `[1][r_q]` bias of q_a_proj.
    pub q_a_proj_bias: mla_tensor,
    /// Optional `[1][rows of kv_a_proj_with_mqa]` bias.
    pub kv_a_proj_bias: mla_tensor,
    /// Optional `[1][d]` bias of o_proj.
    pub o_proj_bias: mla_tensor,

    // ---- ABI version 2: appended, in the order of the core `Weights`. ----
    /// Output gate from x: `[H][d]` (per head) or `[H*v][d]` (per channel).
    pub gate_proj: mla_tensor,
    /// `[1][H]`: one sink logit per head.
    pub sinks: mla_tensor,
    /// `[1][p]`: RMSNorm weight of the rope key.
    pub rope_key_norm: mla_tensor,
    /// `[1][H]`: `s` of the learned log-position query scale.
    pub query_scale_s: mla_tensor,
    /// `[1][H]`: `b` of the learned log-position query scale.
    pub query_scale_b: mla_tensor,
    /// `[1][p/2]`: LeRoPE exponents.
    pub rope_freq_alpha: mla_tensor,
    /// `[Hi*Di][r_q]` or `[Hi*Di][d]` (`MLA_INDEX_Q_HIDDEN_LAYERNORM`): indexer query.
    pub index_wq_b: mla_tensor,
    /// `[Di][d]`: indexer key projection.
    pub index_wk: mla_tensor,
    /// `[1][Di]`: indexer key LayerNorm weight.
    pub index_k_norm: mla_tensor,
    /// `[1][Di]`: its bias.
    pub index_k_norm_bias: mla_tensor,
    /// `[Hi][d]`: per-head weights of the index score.
    pub index_weights_proj: mla_tensor,
    /// `[1][d]`: LayerNorm weight of the indexer query input.
    pub index_q_norm: mla_tensor,
    /// `[1][d]`: its bias.
    pub index_q_norm_bias: mla_tensor,
    /// `[1][Hi]`: `s` of the indexer's log-position query scale.
    pub index_query_scale_s: mla_tensor,
    /// `[1][Hi]`: its `b`.
    pub index_query_scale_b: mla_tensor,
    /// `[P][Di]`: pooled indexer, positional term.
    pub index_kpool_ape: mla_tensor,
    /// `[Di][d]`: pooled indexer, gate projection.
    pub index_kpool_gate: mla_tensor,
}

// ---------------------------------------------------------------------------
// Entry points: versions and status strings (they cannot fail).

/// The ABI version of the library (`MLA_ABI_VERSION` of the header it was built with).
#[no_mangle]
pub extern "C" fn mla_abi_version() -> u32 {
    MLA_ABI_VERSION
}

/// The library version, e.g. "0.1.0" (static, NUL-terminated).
#[no_mangle]
pub extern "C" fn mla_version() -> *const c_char {
    boundary::static_str(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes())
}

/// A fixed description of a status code (static, NUL-terminated); "unknown status"
/// for a value that is not an `mla_status`.
#[no_mangle]
pub extern "C" fn mla_status_str(s: mla_status) -> *const c_char {
    boundary::static_str(match Status::from_u32(s) {
        Some(Status::Ok) => b"ok\0",
        Some(Status::NullPointer) => b"null pointer\0",
        Some(Status::InvalidConfig) => b"invalid configuration\0",
        Some(Status::WeightShape) => b"weight shape mismatch\0",
        Some(Status::WeightDtype) => b"weight dtype mismatch\0",
        Some(Status::Misaligned) => b"misaligned memory\0",
        Some(Status::BufferTooSmall) => b"buffer too small\0",
        Some(Status::CacheFull) => b"latent cache full\0",
        Some(Status::InvalidArgument) => b"invalid argument\0",
        Some(Status::NonFinite) => b"non-finite input\0",
        Some(Status::Unsupported) => b"unsupported\0",
        Some(Status::Device) => b"device error\0",
        Some(Status::AbiMismatch) => b"ABI mismatch\0",
        Some(Status::Internal) => b"internal error\0",
        None => b"unknown status\0",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::ffi::CStr;

    #[test]
    fn config_round_trip_and_layout() {
        for cfg in [
            Config::tutorial(),
            Config::deepseek_v2_lite(),
            Config::deepseek_v3(),
        ] {
            let c = mla_config::from_config(&cfg);
            assert_eq!(c.struct_size, 724);
            assert_eq!(c.to_config().unwrap(), cfg);
            // SAFETY: a whole mla_config on the stack.
            assert_eq!(unsafe { read_config(&c) }.unwrap(), cfg);
        }
        // The 24 fields of ABI 1 keep their offsets; 29 4-byte fields and two
        // 64-float arrays are appended.
        assert_eq!(
            size_of::<mla_config>(),
            16 * 4 + 8 * 4 + 29 * 4 + 2 * 64 * 4
        );
        assert_eq!(core::mem::offset_of!(mla_config, original_max_position), 60);
        assert_eq!(core::mem::offset_of!(mla_config, rms_norm_eps), 64);
        assert_eq!(core::mem::offset_of!(mla_config, softmax_scale), 92);
        assert_eq!(core::mem::offset_of!(mla_config, rope_type), 96);
        assert_eq!(core::mem::offset_of!(mla_config, rope_short_factor), 116);
        assert_eq!(
            core::mem::offset_of!(mla_config, rope_long_factor),
            116 + 256
        );
        assert_eq!(
            core::mem::offset_of!(mla_config, rope_freq_alpha),
            116 + 512
        );
        assert_eq!(
            core::mem::offset_of!(mla_config, index_kpool_tail),
            size_of::<mla_config>() - 4
        );
        assert_eq!(
            core::mem::offset_of!(mla_tensor, dtype),
            size_of::<*const c_void>()
        );
        assert_eq!(
            core::mem::offset_of!(mla_tensor, scale),
            // data, dtype, rows, cols, then padding to the pointer's alignment.
            (size_of::<*const c_void>() + 12).next_multiple_of(core::mem::align_of::<*const f32>())
        );
        // mla_weights: the 11 tensors of ABI 1 first, then 17 appended.
        let t = size_of::<mla_tensor>();
        assert_eq!(size_of::<mla_weights>(), 28 * t);
        assert_eq!(core::mem::offset_of!(mla_weights, o_proj_bias), 10 * t);
        assert_eq!(core::mem::offset_of!(mla_weights, gate_proj), 11 * t);
        assert_eq!(core::mem::offset_of!(mla_weights, index_kpool_gate), 27 * t);
    }

    #[test]
    fn config_enum_and_size_checks() {
        let good = mla_config::from_config(&Config::tutorial());
        let mut c = good;
        c.struct_size = 92;
        assert_eq!(c.to_config().unwrap_err().status(), Status::AbiMismatch);
        // SAFETY: a whole mla_config on the stack; NULL is allowed.
        unsafe {
            let e = read_config(&c).unwrap_err();
            assert_eq!(e.status(), Status::AbiMismatch);
            assert_eq!(
                e.message(),
                "mla_config.struct_size is 92, this library expects 724"
            );
            let e = read_config(ptr::null()).unwrap_err();
            assert_eq!(e.status(), Status::NullPointer);
        }
        for f in [
            |c: &mut mla_config| c.rope_layout = 2,
            |c: &mut mla_config| c.rope_key = 7,
            |c: &mut mla_config| c.cache_dtype = 4,
            |c: &mut mla_config| c.attn_mode = u32::MAX,
            |c: &mut mla_config| c.q_norm = 2,
            |c: &mut mla_config| c.rope_type = 6,
            |c: &mut mla_config| c.rope_yarn_truncate = 2,
            |c: &mut mla_config| c.query_scale = 3,
            |c: &mut mla_config| c.gate = 4,
            |c: &mut mla_config| c.sinks = 5,
            |c: &mut mla_config| c.kv_shared = 2,
            |c: &mut mla_config| c.dsa = 3,
            |c: &mut mla_config| c.index_q_input = 2,
            |c: &mut mla_config| c.index_rope = 3,
            |c: &mut mla_config| c.index_rope_layout = 2,
            |c: &mut mla_config| c.index_cache_dtype = 9,
            |c: &mut mla_config| c.index_kpool_tail = 2,
            |c: &mut mla_config| c.rope_freq_alpha = 2,
            |c: &mut mla_config| c.rope_key_norm = 2,
            |c: &mut mla_config| c.index_query_scale = 2,
        ] {
            let mut c = good;
            f(&mut c);
            let e = c.to_config().unwrap_err();
            assert_eq!(e.status(), Status::InvalidConfig, "{}", e.message());
            assert!(e.message().contains("unknown value"), "{}", e.message());
        }
    }

    #[test]
    fn fp8_caches_are_accepted() {
        let mut c = mla_config::from_config(&Config::tutorial());
        c.cache_dtype = MLA_DTYPE_F8_E4M3;
        c.index_cache_dtype = MLA_DTYPE_F8_E4M3;
        let got = c.to_config().unwrap();
        assert_eq!(got.cache_dtype, DType::F8E4M3);
        assert_eq!(got.index_cache_dtype, DType::F8E4M3);
        assert_eq!(mla_config::from_config(&got).cache_dtype, MLA_DTYPE_F8_E4M3);
    }

    #[test]
    fn status_strings_match_the_core() {
        // SAFETY (each block): the library's static NUL-terminated strings.
        for v in 0..14u32 {
            let s = unsafe { CStr::from_ptr(mla_status_str(v)) }
                .to_str()
                .unwrap();
            assert_eq!(s, Status::from_u32(v).unwrap().as_str());
        }
        let s = unsafe { CStr::from_ptr(mla_status_str(14)) }
            .to_str()
            .unwrap();
        assert_eq!(s, "unknown status");
        let v = unsafe { CStr::from_ptr(mla_version()) }.to_str().unwrap();
        assert_eq!(v, env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn tensor_checks() {
        // SAFETY (each block): `t` describes `data` (6 readable f32) or is NULL
        // or deliberately misaligned, which to_tensor refuses before reading;
        // `add(1)` stays inside `data`.
        let data = [1.0f32; 6];
        let mut t = mla_tensor {
            data: data.as_ptr().cast(),
            dtype: MLA_DTYPE_F32,
            rows: 2,
            cols: 3,
            ..mla_tensor::ABSENT
        };
        let ok = unsafe { t.to_tensor("t") }.unwrap().unwrap();
        assert_eq!((ok.rows, ok.cols, ok.data.len()), (2, 3, 6));
        t.dtype = 9;
        assert_eq!(
            unsafe { t.to_tensor("t") }.unwrap_err().status(),
            Status::WeightDtype
        );
        t.dtype = MLA_DTYPE_F32;
        t.data = unsafe { data.as_ptr().cast::<u8>().add(1) }.cast();
        assert_eq!(
            unsafe { t.to_tensor("t") }.unwrap_err().status(),
            Status::Misaligned
        );
        // FP8 with block scales: 2 x 3 codes, one block, one scale.
        let codes = [0x38u8, 0x40, 0xb8, 0x00, 0x01, 0x7e]; // 1, 2, -1, 0, 2^-9, 448
        t.data = codes.as_ptr().cast();
        t.dtype = MLA_DTYPE_F8_E4M3;
        let e = unsafe { t.to_tensor("t") }.unwrap_err();
        assert_eq!(e.status(), Status::Unsupported, "scale_block 0");
        assert_eq!(
            e.message(),
            "t: scale_block 0 (only 128 x 128 FP8 blocks are supported)"
        );
        t.scale_block = 128;
        let e = unsafe { t.to_tensor("t") }.unwrap_err();
        assert_eq!(e.status(), Status::WeightShape, "NULL scale");
        assert!(e.message().contains("scale is NULL"), "{}", e.message());
        let mut scales = [0.5f32; 1];
        t.scale = scales.as_ptr();
        let f8 = unsafe { t.to_tensor("t") }.unwrap().unwrap();
        let mut w = [0f32; 6];
        f8.data.widen_into(&mut w);
        assert_eq!(w, [0.5, 1.0, -0.5, 0.0, 1.0 / 1024.0, 224.0]);
        let back = mla_tensor::from_tensor("t", Some(&f8)).unwrap();
        assert_eq!((back.scale, back.scale_block), (scales.as_ptr(), 128));
        t.scale_block = 64;
        assert_eq!(
            unsafe { t.to_tensor("t") }.unwrap_err().status(),
            Status::Unsupported
        );
        t.scale_block = 128;
        for (bad, status) in [
            (f32::NAN, Status::NonFinite),
            (f32::INFINITY, Status::NonFinite),
            (0.0, Status::WeightShape),
            (-1.0, Status::WeightShape),
        ] {
            scales[0] = bad;
            t.scale = scales.as_ptr();
            let e = unsafe { t.to_tensor("t") }.unwrap_err();
            assert_eq!(e.status(), status, "scale {bad}");
            assert!(
                e.message().starts_with("t: f8 tensor: block scale 0"),
                "{}",
                e.message()
            );
        }
        // Scales on a non-FP8 tensor mean nothing.
        t.data = data.as_ptr().cast();
        t.dtype = MLA_DTYPE_F32;
        let e = unsafe { t.to_tensor("t") }.unwrap_err();
        assert_eq!(e.status(), Status::InvalidArgument);
        assert!(
            e.message().starts_with("t: block scales"),
            "{}",
            e.message()
        );
        t.scale = ptr::null();
        assert_eq!(
            unsafe { t.to_tensor("t") }.unwrap_err().status(),
            Status::InvalidArgument
        );
        t.scale_block = 0;
        t.data = ptr::null();
        assert!(unsafe { t.to_tensor("t") }.unwrap().is_none());
        let back = mla_tensor::from_tensor("t", Some(&ok)).unwrap();
        assert_eq!(
            (back.data, back.rows, back.cols),
            (data.as_ptr().cast(), 2, 3)
        );
    }
}
