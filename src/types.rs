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

use mla_core::config::{AttnMode, Config, RopeKey, RopeLayout, RopeType};
use mla_core::dtype::{DType, Elems};
use mla_core::status::{err, Error, Result, Status};
use mla_core::weights::{Tensor, Weights};

use crate::boundary;

/// Version of the C ABI. A program built against another value must not use
/// this library (compare with `mla_abi_version()` at start-up).
pub const MLA_ABI_VERSION: u32 = 1;

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

// The numeric values above are the ABI; they must equal the core's enums.
// (Compile-time checks: a mismatch fails the build, it cannot panic at run time.)
const _: () = {
    assert!(MLA_ABI_VERSION == 1);
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
    /// Storage type of the latent cache (`MLA_DTYPE_*`).
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
}

/// A borrowed row-major tensor `[rows][cols]` (PyTorch `nn.Linear` layout `[out][in]`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct mla_tensor {
    /// The `rows * cols` elements, aligned to the element size; NULL = absent.
    pub data: *const c_void,
    /// `MLA_DTYPE_F32`, `MLA_DTYPE_F16` or `MLA_DTYPE_BF16`.
    pub dtype: mla_dtype,
    /// Rows (output features).
    pub rows: u32,
    /// Columns (input features).
    pub cols: u32,
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
}

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
        let cache_dtype = DType::from_u32(self.cache_dtype)
            .ok_or_else(|| bad("cache_dtype", self.cache_dtype))?;
        let attn_mode =
            AttnMode::from_u32(self.attn_mode).ok_or_else(|| bad("attn_mode", self.attn_mode))?;
        let q_norm = match self.q_norm {
            0 => false,
            1 => true,
            other => return Err(bad("q_norm", other).s(" (0 or 1)")),
        };
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
            // ABI version 1 has no rope_type: YaRN is `rope_factor > 1`.
            rope_type: if self.rope_factor > 1.0 {
                RopeType::Yarn
            } else {
                RopeType::Default
            },
            ..Config::plain()
        })
    }
}

fn abi_mismatch(got: u32) -> Error {
    err(Status::AbiMismatch, "mla_config.struct_size is ")
        .n(got as usize)
        .s(", this library expects ")
        .n(size_of::<mla_config>())
}

impl mla_tensor {
    /// An absent tensor (data NULL, dtype 0, shape 0 x 0).
    pub const ABSENT: mla_tensor = mla_tensor {
        data: ptr::null(),
        dtype: MLA_DTYPE_F32,
        rows: 0,
        cols: 0,
    };

    /// The C form of a borrowed tensor (`ABSENT` for `None`); `WeightShape` if
    /// a dimension does not fit in 32 bits.
    pub fn from_tensor(name: &str, t: Option<&Tensor<'_>>) -> Result<mla_tensor> {
        let Some(t) = t else {
            return Ok(mla_tensor::ABSENT);
        };
        let dim = |v: usize| {
            u32::try_from(v).map_err(|_| {
                err(Status::WeightShape, name).s(": dimension does not fit in 32 bits")
            })
        };
        let data: *const c_void = match t.data {
            Elems::F32(s) => s.as_ptr().cast(),
            Elems::F16(s) => s.as_ptr().cast(),
            Elems::BF16(s) => s.as_ptr().cast(),
        };
        Ok(mla_tensor {
            data,
            dtype: t.data.dtype() as u32,
            rows: dim(t.rows)?,
            cols: dim(t.cols)?,
        })
    }

    /// The core tensor (`None` when data is NULL).
    ///
    /// Errors: unknown dtype (`WeightDtype`), byte size overflowing (`WeightShape`),
    /// data not aligned to the element size (`Misaligned`).
    ///
    /// # Safety
    /// When `data` is not NULL it must point to `rows * cols` readable elements of
    /// `dtype` that stay valid and unmodified for `'a`.
    pub unsafe fn to_tensor<'a>(&self, name: &str) -> Result<Option<Tensor<'a>>> {
        if self.data.is_null() {
            return Ok(None);
        }
        let dtype = DType::from_u32(self.dtype).ok_or_else(|| {
            err(Status::WeightDtype, name)
                .s(": unknown dtype ")
                .n(self.dtype as usize)
        })?;
        let (rows, cols) = (self.rows as usize, self.cols as usize);
        let bytes = rows
            .checked_mul(cols)
            .and_then(|n| n.checked_mul(dtype.size()))
            .filter(|&b| b <= isize::MAX as usize)
            .ok_or_else(|| err(Status::WeightShape, name).s(": rows * cols overflows"))?;
        if (self.data as usize) & (dtype.size().wrapping_sub(1)) != 0 {
            return Err(err(Status::Misaligned, name)
                .s(": ")
                .s(dtype.name())
                .s(" data must be aligned to ")
                .n(dtype.size())
                .s(" bytes"));
        }
        // SAFETY: data is non-NULL (checked above); the caller guarantees that
        // `rows * cols` elements (`bytes`, which fits in isize) are readable and
        // stay valid for 'a. The slice is of bytes; the element alignment was
        // checked above and is checked again by `Tensor::from_bytes`.
        let raw = unsafe { boundary::slice(self.data.cast::<u8>(), bytes) }
            .ok_or_else(|| err(Status::WeightShape, name).s(": data is not addressable"))?;
        match Tensor::from_bytes(raw, dtype, rows, cols) {
            Ok(t) => Ok(Some(t)),
            Err(e) => Err(err(e.status(), name).s(": ").s(e.message())),
        }
    }
}

impl mla_weights {
    /// The C form of borrowed weights (pointers into the same data).
    pub fn from_weights(w: &Weights<'_>) -> Result<mla_weights> {
        Ok(mla_weights {
            q_proj: mla_tensor::from_tensor("q_proj", w.q_proj.as_ref())?,
            q_a_proj: mla_tensor::from_tensor("q_a_proj", w.q_a_proj.as_ref())?,
            q_a_layernorm: mla_tensor::from_tensor("q_a_layernorm", w.q_a_layernorm.as_ref())?,
            q_b_proj: mla_tensor::from_tensor("q_b_proj", w.q_b_proj.as_ref())?,
            kv_a_proj_with_mqa: mla_tensor::from_tensor(
                "kv_a_proj_with_mqa",
                w.kv_a_proj_with_mqa.as_ref(),
            )?,
            kv_a_layernorm: mla_tensor::from_tensor("kv_a_layernorm", w.kv_a_layernorm.as_ref())?,
            kv_b_proj: mla_tensor::from_tensor("kv_b_proj", Some(&w.kv_b_proj))?,
            o_proj: mla_tensor::from_tensor("o_proj", Some(&w.o_proj))?,
            q_a_proj_bias: mla_tensor::from_tensor("q_a_proj_bias", w.q_a_proj_bias.as_ref())?,
            kv_a_proj_bias: mla_tensor::from_tensor("kv_a_proj_bias", w.kv_a_proj_bias.as_ref())?,
            o_proj_bias: mla_tensor::from_tensor("o_proj_bias", w.o_proj_bias.as_ref())?,
        })
    }

    /// The core weights. Required tensors with NULL data are `WeightShape`
    /// ("missing"); shapes against the config are checked by the engine.
    ///
    /// # Safety
    /// Every tensor with non-NULL data must satisfy [`mla_tensor::to_tensor`]'s
    /// contract for `'a`.
    pub unsafe fn to_weights<'a>(&self) -> Result<Weights<'a>> {
        let required = |name: &str, t: &mla_tensor| -> Result<Tensor<'a>> {
            // SAFETY: forwarded from this function's contract.
            match unsafe { t.to_tensor(name) }? {
                Some(t) => Ok(t),
                None => Err(err(Status::WeightShape, name).s(": missing (data is NULL)")),
            }
        };
        // SAFETY (each `to_tensor` below): forwarded from this function's contract.
        Ok(Weights {
            q_proj: unsafe { self.q_proj.to_tensor("q_proj") }?,
            q_a_proj: unsafe { self.q_a_proj.to_tensor("q_a_proj") }?,
            q_a_layernorm: unsafe { self.q_a_layernorm.to_tensor("q_a_layernorm") }?,
            q_b_proj: unsafe { self.q_b_proj.to_tensor("q_b_proj") }?,
            kv_a_proj_with_mqa: Some(required("kv_a_proj_with_mqa", &self.kv_a_proj_with_mqa)?),
            kv_a_layernorm: Some(required("kv_a_layernorm", &self.kv_a_layernorm)?),
            q_a_proj_bias: unsafe { self.q_a_proj_bias.to_tensor("q_a_proj_bias") }?,
            kv_a_proj_bias: unsafe { self.kv_a_proj_bias.to_tensor("kv_a_proj_bias") }?,
            o_proj_bias: unsafe { self.o_proj_bias.to_tensor("o_proj_bias") }?,
            ..Weights::new(
                required("kv_b_proj", &self.kv_b_proj)?,
                required("o_proj", &self.o_proj)?,
            )
        })
    }
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
            assert_eq!(c.struct_size, 96);
            assert_eq!(c.to_config().unwrap(), cfg);
            // SAFETY: a whole mla_config on the stack.
            assert_eq!(unsafe { read_config(&c) }.unwrap(), cfg);
        }
        assert_eq!(size_of::<mla_config>(), 16 * 4 + 8 * 4);
        assert_eq!(core::mem::offset_of!(mla_config, original_max_position), 60);
        assert_eq!(core::mem::offset_of!(mla_config, rms_norm_eps), 64);
        assert_eq!(core::mem::offset_of!(mla_config, softmax_scale), 92);
        assert_eq!(
            core::mem::offset_of!(mla_tensor, dtype),
            size_of::<*const c_void>()
        );
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
                "mla_config.struct_size is 92, this library expects 96"
            );
            let e = read_config(ptr::null()).unwrap_err();
            assert_eq!(e.status(), Status::NullPointer);
        }
        for f in [
            |c: &mut mla_config| c.rope_layout = 2,
            |c: &mut mla_config| c.rope_key = 7,
            |c: &mut mla_config| c.cache_dtype = 3,
            |c: &mut mla_config| c.attn_mode = u32::MAX,
            |c: &mut mla_config| c.q_norm = 2,
        ] {
            let mut c = good;
            f(&mut c);
            let e = c.to_config().unwrap_err();
            assert_eq!(e.status(), Status::InvalidConfig, "{}", e.message());
            assert!(e.message().contains("unknown value"), "{}", e.message());
        }
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
        t.data = ptr::null();
        assert!(unsafe { t.to_tensor("t") }.unwrap().is_none());
        let back = mla_tensor::from_tensor("t", Some(&ok)).unwrap();
        assert_eq!(
            (back.data, back.rows, back.cols),
            (data.as_ptr().cast(), 2, 3)
        );
    }
}
