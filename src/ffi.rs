//! The C ABI (DESIGN.md section 3), exported as `mla_*` symbols; cbindgen turns
//! this module into `include/mla.h`.
//!
//! Every entry point is thin: it checks its arguments (NULL pointers, the
//! `struct_size` of `mla_config`, enum values arriving as `uint32_t`, pointer
//! alignment and the token count) before touching anything, converts the C
//! structs into [`Config`] and [`Weights`], and calls the safe core. Outputs are
//! written only on success; on failure an engine is left exactly as it was and
//! its last-error text says what was wrong.
//!
//! The engine handle (`mla_engine`) lives at the start of the caller's memory
//! (64-byte aligned), followed by the engine's own memory (latent cache, RoPE
//! table, scratch): [`mla_engine_size`] is the sum of both. Lifetimes are erased
//! to `'static` at the boundary: that the weights outlive the engine, and that
//! `mem` is not touched while the engine is in use, is the C caller's contract.
//!
//! With the `std` feature every entry point runs inside `catch_unwind` and turns
//! a panic into `MLA_ERR_INTERNAL`. Without `std` there is no unwinding, so this
//! module is written panic-free: no indexing, no `unwrap`, no formatting, only
//! checked arithmetic.
#![allow(non_camel_case_types)]
// `Error` (status + inline message, no allocation) is the crate-wide error type.
#![allow(clippy::result_large_err)]

use core::ffi::{c_char, c_void, CStr};
use core::mem::{align_of, size_of};
use core::ptr;

use mla_core::config::{AttnMode, Config, RopeKey, RopeLayout};
use mla_core::dtype::{DType, Elems};
use mla_core::engine::Engine;
use mla_core::status::{err, Error, Result, Status, MESSAGE_CAPACITY};
use mla_core::weights::{Tensor, Weights};

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

/// Bytes of the last-error text, NUL included.
const LAST_ERROR_BYTES: usize = MLA_MESSAGE_MAX;
const _: () = assert!(MLA_MESSAGE_MAX == MESSAGE_CAPACITY + 1);

/// An engine: opaque, placed by `mla_engine_init` at the start of the caller's
/// memory. Use one engine from one thread at a time; there is nothing to free.
pub struct mla_engine {
    /// The core engine; its memory is the rest of the caller's buffer and its
    /// weights are the caller's tensors (lifetimes erased, see the module doc).
    engine: Engine<'static, 'static>,
    /// NUL-terminated UTF-8 text of the last failure ("" before any).
    last_error: [u8; LAST_ERROR_BYTES],
}

/// Alignment of the caller's memory (`mem` of `mla_engine_init`).
const MEM_ALIGN: usize = 64;

/// Bytes reserved for the handle at the start of `mem` (a multiple of 64, so the
/// engine's own memory after it keeps the 64-byte alignment).
const HANDLE_BYTES: usize = (size_of::<mla_engine>() + (MEM_ALIGN - 1)) & !(MEM_ALIGN - 1);

const _: () = {
    assert!(align_of::<mla_engine>() <= MEM_ALIGN);
    assert!(Engine::MEMORY_ALIGN <= MEM_ALIGN);
    assert!(HANDLE_BYTES >= size_of::<mla_engine>());
};

impl mla_engine {
    /// Records `e` as the last error (cut to the buffer, always NUL-terminated).
    fn set_error(&mut self, e: &Error) {
        store(&mut self.last_error, e);
    }
}

/// Copies `e`'s message into `buf`, cut to fit and always NUL-terminated.
fn store(buf: &mut [u8; LAST_ERROR_BYTES], e: &Error) {
    let msg = e.message().as_bytes();
    for (i, b) in buf.iter_mut().enumerate() {
        *b = msg.get(i).copied().unwrap_or(0);
    }
    if let Some(last) = buf.last_mut() {
        *last = 0;
    }
}

#[cfg(feature = "std")]
std::thread_local! {
    /// Text of this thread's last failed call that had no engine to hold it
    /// (what `mla_last_error(NULL)` returns; NUL-terminated, "" if none).
    static DETACHED_ERROR: core::cell::RefCell<[u8; LAST_ERROR_BYTES]> =
        const { core::cell::RefCell::new([0; LAST_ERROR_BYTES]) };
}

/// Records the failure of a call without an engine (std builds: per thread;
/// without `std` there is no thread-local storage and nothing is kept).
fn record_detached(e: &Error) {
    #[cfg(feature = "std")]
    {
        // try_with / try_borrow_mut: during thread teardown, or if a caller's
        // pointer from mla_last_error(NULL) were being read re-entrantly, skip.
        let _ = DETACHED_ERROR.try_with(|b| {
            if let Ok(mut buf) = b.try_borrow_mut() {
                store(&mut buf, e);
            }
        });
    }
    #[cfg(not(feature = "std"))]
    let _ = e;
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
        // SAFETY: data is non-NULL and aligned to the element size (checked above);
        // the caller guarantees `rows * cols` elements (`bytes`, which fits in
        // isize) are readable and stay valid for 'a.
        let raw = unsafe { core::slice::from_raw_parts(self.data.cast::<u8>(), bytes) };
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
                Some(&w.kv_a_proj_with_mqa),
            )?,
            kv_a_layernorm: mla_tensor::from_tensor("kv_a_layernorm", Some(&w.kv_a_layernorm))?,
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
            kv_a_proj_with_mqa: required("kv_a_proj_with_mqa", &self.kv_a_proj_with_mqa)?,
            kv_a_layernorm: required("kv_a_layernorm", &self.kv_a_layernorm)?,
            kv_b_proj: required("kv_b_proj", &self.kv_b_proj)?,
            o_proj: required("o_proj", &self.o_proj)?,
            q_a_proj_bias: unsafe { self.q_a_proj_bias.to_tensor("q_a_proj_bias") }?,
            kv_a_proj_bias: unsafe { self.kv_a_proj_bias.to_tensor("kv_a_proj_bias") }?,
            o_proj_bias: unsafe { self.o_proj_bias.to_tensor("o_proj_bias") }?,
        })
    }
}

// ---------------------------------------------------------------------------
// Panic boundary and small helpers.

/// Runs `f`; with `std`, a panic is caught and reported as `Err(())`.
#[cfg(feature = "std")]
fn catch<T>(f: impl FnOnce() -> T) -> core::result::Result<T, ()> {
    // AssertUnwindSafe: the closures given here only check their arguments and
    // call the core. The core's one multi-step mutation, Engine::forward, writes
    // new cache rows into slots at and past len() and commits the length as its
    // very last step (truncate and reset only set the length), so after a caught
    // panic the engine still has its previous length and its previous, intact
    // cache rows: the state the caller sees is consistent. Only `out` may hold
    // partial results, and the caller gets MLA_ERR_INTERNAL for it.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|_| ())
}

/// Runs `f` (no unwinding without `std`: this module has no reachable panic).
#[cfg(not(feature = "std"))]
fn catch<T>(f: impl FnOnce() -> T) -> core::result::Result<T, ()> {
    Ok(f())
}

/// Status code of a core result.
fn code(r: Result<()>) -> mla_status {
    match r {
        Ok(()) => MLA_OK,
        Err(e) => e.status() as u32,
    }
}

/// Runs a function that has no engine; a failure goes to `mla_last_error(NULL)`.
fn plain(what: &str, f: impl FnOnce() -> Result<()>) -> mla_status {
    let r = catch(f)
        .unwrap_or_else(|()| Err(err(Status::Internal, what).s(": internal error (panic caught)")));
    if let Err(e) = &r {
        record_detached(e);
    }
    code(r)
}

/// Runs `f` on the engine behind `e`; records a failure as its last error.
///
/// # Safety
/// `e` is NULL or a handle from `mla_engine_init` not used elsewhere meanwhile.
unsafe fn with_engine(
    e: *mut mla_engine,
    what: &str,
    f: impl FnOnce(&mut Engine<'static, 'static>) -> Result<()>,
) -> mla_status {
    // SAFETY: this function's contract.
    let Some(h) = (unsafe { e.as_mut() }) else {
        record_detached(&err(Status::NullPointer, what).s(": engine is NULL"));
        return MLA_ERR_NULL_POINTER;
    };
    let r = match catch(|| f(&mut h.engine)) {
        Ok(r) => r,
        Err(()) => Err(err(Status::Internal, what).s(": internal error (panic caught)")),
    };
    match r {
        Ok(()) => MLA_OK,
        Err(err) => {
            h.set_error(&err);
            err.status() as u32
        }
    }
}

/// Reads a caller's `mla_config`: `struct_size` first, so that a smaller struct
/// from another ABI is never read past its end.
///
/// # Safety
/// `c` is NULL or points to at least 4 readable bytes, and to a whole
/// `mla_config` when those bytes hold `sizeof(mla_config)`.
pub(crate) unsafe fn read_config(c: *const mla_config) -> Result<Config> {
    if c.is_null() {
        return Err(err(Status::NullPointer, "config pointer is NULL"));
    }
    // SAFETY: `struct_size` is the first field; the caller guarantees 4 bytes.
    let size = unsafe { ptr::read_unaligned(c.cast::<u32>()) };
    if size as usize != size_of::<mla_config>() {
        return Err(abi_mismatch(size));
    }
    // SAFETY: the caller's struct has our size, so all of it is readable.
    unsafe { ptr::read_unaligned(c) }.to_config()
}

/// Writes `v` through `p` (which the caller checked is not NULL).
///
/// # Safety
/// `p` must be valid for a write of `T` (any alignment).
unsafe fn put<T>(p: *mut T, v: T) {
    // SAFETY: forwarded from the caller.
    unsafe { ptr::write_unaligned(p, v) }
}

/// Copies `text` into `msg` (capacity `msg_len` bytes, NUL included), cut on a
/// UTF-8 character boundary. Nothing is written when `msg_len` is 0.
///
/// # Safety
/// `msg` must be valid for `msg_len` bytes of writes when `msg_len > 0`.
unsafe fn write_message(msg: *mut c_char, msg_len: usize, text: &str) {
    if msg.is_null() || msg_len == 0 {
        return;
    }
    let mut n = text.len().min(msg_len - 1);
    while n > 0 && !text.is_char_boundary(n) {
        n -= 1;
    }
    // SAFETY: `n < msg_len` bytes of `text` go into the caller's buffer, then the
    // NUL at index n < msg_len; `text` and `msg` cannot overlap (ours is Rust data).
    unsafe {
        ptr::copy_nonoverlapping(text.as_ptr(), msg.cast::<u8>(), n);
        put(msg.add(n), 0);
    }
}

/// Pointer to a static NUL-terminated byte string.
fn cstr(s: &'static [u8]) -> *const c_char {
    s.as_ptr().cast()
}

// ---------------------------------------------------------------------------
// Entry points (DESIGN.md section 3).

/// The ABI version of the library (`MLA_ABI_VERSION` of the header it was built with).
#[no_mangle]
pub extern "C" fn mla_abi_version() -> u32 {
    MLA_ABI_VERSION
}

/// The library version, e.g. "0.1.0" (static, NUL-terminated).
#[no_mangle]
pub extern "C" fn mla_version() -> *const c_char {
    cstr(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes())
}

/// A fixed description of a status code (static, NUL-terminated); "unknown status"
/// for a value that is not an `mla_status`.
#[no_mangle]
pub extern "C" fn mla_status_str(s: mla_status) -> *const c_char {
    cstr(match Status::from_u32(s) {
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

/// Fills every field of `*c` (struct_size included) with the seed tutorial's
/// config: d 256, H 8, r_q 192, r 128, n = v = 32, p 64, per-head rope key,
/// half layout, no query norm, 1024 tokens, 128 per call. NULL: does nothing.
///
/// # Safety
/// `c` is NULL or points to a writable `mla_config`.
#[no_mangle]
pub unsafe extern "C" fn mla_config_tutorial(c: *mut mla_config) {
    if !c.is_null() {
        // SAFETY: non-NULL and, by the C contract, points to an mla_config.
        unsafe { put(c, mla_config::from_config(&Config::tutorial())) }
    }
}

/// Fills every field of `*c` with DeepSeek-V2-Lite's attention config (d 2048,
/// H 16, no query LoRA, r 512, n 128, p 64, v 128, YaRN s 40 / 4096, mscale 0.707;
/// 4096 tokens, 256 per call). NULL: does nothing.
///
/// # Safety
/// `c` is NULL or points to a writable `mla_config`.
#[no_mangle]
pub unsafe extern "C" fn mla_config_deepseek_v2_lite(c: *mut mla_config) {
    if !c.is_null() {
        // SAFETY: non-NULL and, by the C contract, points to an mla_config.
        unsafe { put(c, mla_config::from_config(&Config::deepseek_v2_lite())) }
    }
}

/// Fills every field of `*c` with DeepSeek-V3's attention config (d 7168, H 128,
/// r_q 1536 with RMSNorm, r 512, n 128, p 64, v 128, YaRN s 40 / 4096;
/// 4096 tokens, 256 per call). NULL: does nothing.
///
/// # Safety
/// `c` is NULL or points to a writable `mla_config`.
#[no_mangle]
pub unsafe extern "C" fn mla_config_deepseek_v3(c: *mut mla_config) {
    if !c.is_null() {
        // SAFETY: non-NULL and, by the C contract, points to an mla_config.
        unsafe { put(c, mla_config::from_config(&Config::deepseek_v3())) }
    }
}

/// Checks every field of `*c`. `msg` receives a NUL-terminated message naming
/// the offending field ("" when valid), cut to `msg_len` bytes; `msg` may be NULL
/// when `msg_len` is 0.
/// Returns MLA_OK, MLA_ERR_INVALID_CONFIG, MLA_ERR_ABI_MISMATCH or MLA_ERR_NULL_POINTER
/// (`c` NULL, or `msg` NULL with `msg_len` > 0).
///
/// # Safety
/// `c` is NULL or points to an `mla_config`; `msg` is NULL or holds `msg_len` writable
/// bytes.
#[no_mangle]
pub unsafe extern "C" fn mla_config_validate(
    c: *const mla_config,
    msg: *mut c_char,
    msg_len: usize,
) -> mla_status {
    if msg.is_null() && msg_len != 0 {
        record_detached(&err(
            Status::NullPointer,
            "mla_config_validate: msg is NULL, msg_len > 0",
        ));
        return MLA_ERR_NULL_POINTER;
    }
    let r = catch(|| {
        // SAFETY: `c` is NULL (checked inside) or points to an mla_config.
        unsafe { read_config(c) }.and_then(|cfg| cfg.validate())
    })
    .unwrap_or_else(|()| Err(err(Status::Internal, "mla_config_validate: internal error")));
    let text = match &r {
        Ok(()) => "",
        Err(e) => {
            record_detached(e);
            e.message()
        }
    };
    // SAFETY: `msg` holds `msg_len` writable bytes (C contract); NULL only with 0.
    unsafe { write_message(msg, msg_len, text) };
    code(r)
}

/// Bytes the latent cache holds per token: `(r + p) * sizeof(cache_dtype)`
/// (shared rope key) or `(r + H*p) * sizeof(cache_dtype)` (per head).
/// Returns MLA_OK, MLA_ERR_NULL_POINTER, MLA_ERR_ABI_MISMATCH or MLA_ERR_INVALID_CONFIG.
///
/// # Safety
/// `c` is NULL or points to an `mla_config`; `bytes` is NULL or points to a writable
/// `size_t`.
#[no_mangle]
pub unsafe extern "C" fn mla_cache_bytes_per_token(
    c: *const mla_config,
    bytes: *mut usize,
) -> mla_status {
    plain("mla_cache_bytes_per_token", || {
        if bytes.is_null() {
            return Err(err(Status::NullPointer, "bytes is NULL"));
        }
        // SAFETY: `c` is NULL (checked inside) or points to an mla_config.
        let n = unsafe { read_config(c) }?.cache_bytes_per_token()?;
        // SAFETY: `bytes` is non-NULL and points to a size_t (C contract).
        unsafe { put(bytes, n) };
        Ok(())
    })
}

/// Bytes of memory `mla_engine_init` needs for config `*c`: the handle plus the
/// latent cache, RoPE tables and all scratch. `mem` must also be 64-byte aligned.
/// Returns MLA_OK, MLA_ERR_NULL_POINTER, MLA_ERR_ABI_MISMATCH or MLA_ERR_INVALID_CONFIG.
///
/// # Safety
/// `c` is NULL or points to an `mla_config`; `bytes` is NULL or points to a writable
/// `size_t`.
#[no_mangle]
pub unsafe extern "C" fn mla_engine_size(c: *const mla_config, bytes: *mut usize) -> mla_status {
    plain("mla_engine_size", || {
        if bytes.is_null() {
            return Err(err(Status::NullPointer, "bytes is NULL"));
        }
        // SAFETY: `c` is NULL (checked inside) or points to an mla_config.
        let total = engine_size(&unsafe { read_config(c) }?)?;
        // SAFETY: `bytes` is non-NULL and points to a size_t (C contract).
        unsafe { put(bytes, total) };
        Ok(())
    })
}

/// Handle bytes plus the core engine's memory for `cfg`.
fn engine_size(cfg: &Config) -> Result<usize> {
    Engine::memory_bytes(cfg)?
        .checked_add(HANDLE_BYTES)
        .filter(|&b| b <= isize::MAX as usize)
        .ok_or_else(|| err(Status::InvalidConfig, "engine size overflows"))
}

/// Places an engine in `mem` (`mem_len` >= `mla_engine_size`, 64-byte aligned) and
/// writes its handle (== `mem`) to `*out`. The weights are borrowed: their data
/// must stay valid and unchanged while the engine is used; `*w` itself may go.
/// Nothing needs freeing: stop using the engine, then reuse or free `mem`.
/// Errors: MLA_ERR_NULL_POINTER, MLA_ERR_ABI_MISMATCH, MLA_ERR_INVALID_CONFIG,
/// MLA_ERR_WEIGHT_SHAPE, MLA_ERR_WEIGHT_DTYPE, MLA_ERR_MISALIGNED,
/// MLA_ERR_BUFFER_TOO_SMALL (`*out` is written only on success).
///
/// # Safety
/// Non-NULL pointers point to what their types say; `mem` holds `mem_len` writable bytes;
/// every tensor with non-NULL data holds `rows * cols` elements; `mem` and the tensor data
/// stay valid, and `mem` otherwise untouched, while the engine is used.
#[no_mangle]
pub unsafe extern "C" fn mla_engine_init(
    c: *const mla_config,
    w: *const mla_weights,
    mem: *mut c_void,
    mem_len: usize,
    out: *mut *mut mla_engine,
) -> mla_status {
    plain("mla_engine_init", || {
        if w.is_null() || mem.is_null() || out.is_null() {
            return Err(err(Status::NullPointer, "mla_engine_init: NULL argument"));
        }
        // SAFETY: `c` is NULL (checked inside) or points to an mla_config.
        let cfg = unsafe { read_config(c) }?;
        let bytes = engine_size(&cfg)?;
        // SAFETY: `w` is non-NULL and points to an mla_weights whose tensors
        // stay valid while the engine is used (the C contract): 'static stands
        // for "as long as the caller keeps them".
        let weights: Weights<'static> = unsafe { ptr::read_unaligned(w).to_weights() }?;
        weights.check(&cfg)?;
        if (mem as usize) & (MEM_ALIGN - 1) != 0 {
            return Err(err(Status::Misaligned, "mem must be aligned to ")
                .n(MEM_ALIGN)
                .s(" bytes"));
        }
        if mem_len < bytes {
            return Err(err(Status::BufferTooSmall, "mem_len is ")
                .n(mem_len)
                .s(", the engine needs ")
                .n(bytes));
        }
        let base = mem.cast::<u8>();
        // SAFETY: mem holds mem_len >= bytes = HANDLE_BYTES + engine bytes
        // writable bytes (C contract) and bytes <= isize::MAX; the engine's part
        // starts after the handle, so the two never overlap. 'static: the caller
        // keeps `mem` for as long as it uses the engine.
        let region: &'static mut [u8] = unsafe {
            core::slice::from_raw_parts_mut(base.add(HANDLE_BYTES), bytes - HANDLE_BYTES)
        };
        let engine = Engine::new(&cfg, &weights, region)?;
        let handle = base.cast::<mla_engine>();
        // SAFETY: mem is 64-aligned (>= align_of::<mla_engine>()) and its first
        // HANDLE_BYTES bytes belong to the handle; `out` is non-NULL.
        unsafe {
            ptr::write(
                handle,
                mla_engine {
                    engine,
                    last_error: [0; LAST_ERROR_BYTES],
                },
            );
            put(out, handle);
        }
        Ok(())
    })
}

/// Runs `n_tokens` rows of `x` (`[n_tokens][hidden_size]` floats) at positions
/// `mla_len(e) ..`, attending causally over everything cached, and writes
/// `[n_tokens][hidden_size]` floats to `out` (must not overlap `x`). One token is
/// a decode step, more a prefill chunk; chunked prefill equals one call.
/// Errors (engine unchanged, nothing appended, `out` unwritten): MLA_ERR_NULL_POINTER,
/// MLA_ERR_INVALID_ARGUMENT (n_tokens 0 or > max_tokens_per_call, overlap),
/// MLA_ERR_MISALIGNED (x or out not 4-byte aligned), MLA_ERR_CACHE_FULL,
/// MLA_ERR_NON_FINITE.
///
/// # Safety
/// `e` is NULL or an engine from `mla_engine_init`, not used by another thread during the
/// call; `x` and `out` are NULL or hold `n_tokens * hidden_size` floats.
#[no_mangle]
pub unsafe extern "C" fn mla_forward(
    e: *mut mla_engine,
    x: *const f32,
    n_tokens: u32,
    out: *mut f32,
) -> mla_status {
    let run = |engine: &mut Engine<'static, 'static>| {
        // SAFETY: x and out hold n_tokens * hidden_size floats (C contract).
        let (xs, os) = unsafe { forward_args("mla_forward", engine.config(), x, n_tokens, out) }?;
        engine.forward(xs, os)
    };
    // SAFETY: this function's contract.
    unsafe { with_engine(e, "mla_forward", run) }
}

/// The `x` / `out` arguments of a forward call with host pointers, checked and
/// borrowed: non-NULL, `1 <= n_tokens <= max_tokens_per_call`, 4-byte aligned,
/// not overlapping. Messages start with `what` (the entry point).
///
/// # Safety
/// `x` / `out` are NULL or hold `n_tokens * cfg.hidden_size` readable / writable
/// floats, valid for `'a`.
pub(crate) unsafe fn forward_args<'a>(
    what: &str,
    cfg: &Config,
    x: *const f32,
    n_tokens: u32,
    out: *mut f32,
) -> Result<(&'a [f32], &'a mut [f32])> {
    if x.is_null() || out.is_null() {
        return Err(err(Status::NullPointer, what).s(": x or out is NULL"));
    }
    let max = cfg.max_tokens_per_call;
    if n_tokens == 0 || n_tokens > max {
        return Err(err(Status::InvalidArgument, what)
            .s(": n_tokens is ")
            .n(n_tokens as usize)
            .s(", must be 1 ..= max_tokens_per_call (")
            .n(max as usize)
            .s(")"));
    }
    // n_tokens <= max_tokens_per_call, so the memory plan checked the product; the
    // check here keeps this function safe on its own.
    let len = (n_tokens as usize)
        .checked_mul(cfg.hidden_size as usize)
        .filter(|&n| n <= isize::MAX as usize / size_of::<f32>())
        .ok_or_else(|| {
            err(Status::InvalidArgument, what).s(": n_tokens * hidden_size overflows")
        })?;
    if !(x as usize).is_multiple_of(align_of::<f32>())
        || !(out as usize).is_multiple_of(align_of::<f32>())
    {
        return Err(err(Status::Misaligned, what).s(": x and out must be 4-byte aligned"));
    }
    let span = len * size_of::<f32>();
    let (xa, oa) = (x as usize, out as usize);
    if xa < oa.wrapping_add(span) && oa < xa.wrapping_add(span) {
        return Err(err(Status::InvalidArgument, what).s(": x and out overlap"));
    }
    // SAFETY: non-NULL, aligned, `len` floats each (caller's contract), disjoint
    // (checked), and len * 4 <= isize::MAX.
    Ok(unsafe {
        (
            core::slice::from_raw_parts(x, len),
            core::slice::from_raw_parts_mut(out, len),
        )
    })
}

/// Tokens in the cache (the next position); 0 for NULL.
///
/// # Safety
/// `e` is NULL or an engine from `mla_engine_init`.
#[no_mangle]
pub unsafe extern "C" fn mla_len(e: *const mla_engine) -> u32 {
    // SAFETY: NULL or a handle from mla_engine_init (C contract).
    match unsafe { e.as_ref() } {
        // len <= max_seq_len, a u32.
        Some(h) => u32::try_from(h.engine.len()).unwrap_or(u32::MAX),
        None => 0,
    }
}

/// Rolls the cache back to its first `len` tokens (`len` <= `mla_len(e)`), e.g.
/// to drop a rejected speculative draft. Errors: MLA_ERR_NULL_POINTER,
/// MLA_ERR_INVALID_ARGUMENT (`len` > `mla_len(e)`; nothing changes).
///
/// # Safety
/// `e` is NULL or an engine from `mla_engine_init`, not used by another thread during the
/// call.
#[no_mangle]
pub unsafe extern "C" fn mla_truncate(e: *mut mla_engine, len: u32) -> mla_status {
    // SAFETY: this function's contract.
    unsafe { with_engine(e, "mla_truncate", |engine| engine.truncate(len as usize)) }
}

/// Empties the cache (as `mla_truncate(e, 0)`). NULL: does nothing.
///
/// # Safety
/// `e` is NULL or an engine from `mla_engine_init`, not used by another thread during the
/// call.
#[no_mangle]
pub unsafe extern "C" fn mla_reset(e: *mut mla_engine) {
    // The status is MLA_OK, or MLA_ERR_NULL_POINTER for NULL, which is documented as a no-op.
    if e.is_null() {
        return;
    }
    // SAFETY: this function's contract.
    let _ = unsafe {
        with_engine(e, "mla_reset", |engine| {
            engine.reset();
            Ok(())
        })
    };
}

/// One task of a parallel-for: `task(task_ctx, index)`.
pub type mla_task_fn = unsafe extern "C" fn(task_ctx: *mut c_void, index: u32);

/// A host's parallel-for (NULL allowed where documented): it must call
/// `task(task_ctx, i)` exactly once for every `i` in `0 .. n_tasks`, on any of its
/// threads, possibly concurrently and in any order, and return only when every
/// call has returned.
pub type mla_parallel_for_fn = Option<
    unsafe extern "C" fn(
        host_ctx: *mut c_void,
        n_tasks: u32,
        task: mla_task_fn,
        task_ctx: *mut c_void,
    ),
>;

/// Lets the engine spread its work (heads, output rows, cached-row ranges) over
/// the host's threads through `parallel_for`; NULL goes back to running
/// everything on the calling thread (the default). The engine has no threads of
/// its own and never calls `parallel_for` from two threads at once. Outputs are
/// bitwise identical whatever the host does: the split into tasks depends only on
/// the config and the call, never on the number of threads.
/// `host_ctx` is passed back to `parallel_for` unchanged and must stay valid while
/// the engine may call it.
/// Returns MLA_OK or MLA_ERR_NULL_POINTER (`e` is NULL).
///
/// # Safety
/// `e` is NULL or an engine from `mla_engine_init`, not used by another thread during
/// the call; `parallel_for` is NULL or behaves as `mla_parallel_for_fn` documents.
#[no_mangle]
pub unsafe extern "C" fn mla_engine_set_parallel(
    e: *mut mla_engine,
    parallel_for: mla_parallel_for_fn,
    host_ctx: *mut c_void,
) -> mla_status {
    // SAFETY: this function's contract.
    unsafe {
        with_engine(e, "mla_engine_set_parallel", |engine| {
            // SAFETY: the function behaves as documented and host_ctx stays valid
            // (this function's contract).
            let host = parallel_for.map(|f| mla_core::parallel::HostParallelFor::new(f, host_ctx));
            engine.set_parallel_host(host);
            Ok(())
        })
    }
}

/// Text of the engine's last failure (NUL-terminated UTF-8, "" before any; valid
/// until the next call on `e`).
/// For NULL: the text of the calling thread's last failed call that had no engine
/// to hold it (`mla_engine_init`, `mla_weights_from_safetensors`, `mla_engine_size`,
/// `mla_cache_bytes_per_token`, `mla_config_validate`, or a call given a NULL
/// engine); "" if none; valid until the next such failure on this thread. Builds
/// without the `std` feature keep no such text and return a fixed one.
///
/// # Safety
/// `e` is NULL or an engine from `mla_engine_init`.
#[no_mangle]
pub unsafe extern "C" fn mla_last_error(e: *const mla_engine) -> *const c_char {
    // SAFETY: NULL or a handle from mla_engine_init (C contract).
    match unsafe { e.as_ref() } {
        Some(h) => h.last_error.as_ptr().cast(),
        None => detached_error(),
    }
}

/// The thread's last failure without an engine (see `mla_last_error`).
#[cfg(feature = "std")]
fn detached_error() -> *const c_char {
    // The thread-local buffer lives as long as the thread and never moves; it is
    // rewritten only by a later failing call on this same thread.
    DETACHED_ERROR
        .try_with(|b| b.as_ptr().cast::<c_char>().cast_const())
        .unwrap_or_else(|_| cstr(b"mla_last_error: thread is exiting\0"))
}

/// Without `std`: a fixed text (no thread-local storage).
#[cfg(not(feature = "std"))]
fn detached_error() -> *const c_char {
    cstr(b"mla_last_error(NULL): details of calls without an engine need the std feature\0")
}

/// Binds weights zero-copy from a safetensors file held in memory (`bytes`,
/// `len`; e.g. mmap-ed, 8-byte aligned start recommended): `*out` points into
/// `bytes`, which must outlive the engine. Tensors are looked up by Hugging Face
/// name under `prefix` (NUL-terminated UTF-8, e.g. "model.layers.0.self_attn.";
/// NULL = ""), with shapes checked against `*c`.
/// Errors: MLA_ERR_NULL_POINTER, MLA_ERR_ABI_MISMATCH, MLA_ERR_INVALID_CONFIG,
/// MLA_ERR_INVALID_ARGUMENT (prefix not UTF-8, malformed file), MLA_ERR_WEIGHT_SHAPE,
/// MLA_ERR_WEIGHT_DTYPE, MLA_ERR_MISALIGNED, MLA_ERR_UNSUPPORTED (`*out` written only on
/// success).
///
/// # Safety
/// `bytes` is NULL or holds `len` readable bytes that outlive the weights; `prefix` is NULL
/// or NUL-terminated; `c` is NULL or points to an `mla_config`; `out` is NULL or points to
/// a writable `mla_weights`.
#[no_mangle]
pub unsafe extern "C" fn mla_weights_from_safetensors(
    bytes: *const c_void,
    len: usize,
    prefix: *const c_char,
    c: *const mla_config,
    out: *mut mla_weights,
) -> mla_status {
    plain("mla_weights_from_safetensors", || {
        if bytes.is_null() || out.is_null() {
            return Err(err(
                Status::NullPointer,
                "mla_weights_from_safetensors: NULL argument",
            ));
        }
        // SAFETY: `c` is NULL (checked inside) or points to an mla_config.
        let cfg = unsafe { read_config(c) }?;
        let prefix = if prefix.is_null() {
            ""
        } else {
            // SAFETY: non-NULL prefix is a NUL-terminated string (C contract).
            unsafe { CStr::from_ptr(prefix) }
                .to_str()
                .map_err(|_| err(Status::InvalidArgument, "prefix is not UTF-8"))?
        };
        if len > isize::MAX as usize {
            return Err(err(Status::InvalidArgument, "len is too large"));
        }
        // SAFETY: `bytes` holds `len` readable bytes that stay valid while the
        // weights are used (C contract; 'static stands for that), len <= isize::MAX.
        let file: &'static [u8] = unsafe { core::slice::from_raw_parts(bytes.cast::<u8>(), len) };
        let weights = mla_core::safetensors::bind_weights(file, prefix, &cfg)?;
        let cw = mla_weights::from_weights(&weights)?;
        // SAFETY: `out` is non-NULL and points to an mla_weights (C contract).
        unsafe { put(out, cw) };
        Ok(())
    })
}

/// True when the byte ranges `[a, a + a_len)` and `[b, b + b_len)` overlap.
fn overlaps(a: usize, a_len: usize, b: usize, b_len: usize) -> bool {
    a < b.wrapping_add(b_len) && b < a.wrapping_add(a_len)
}

/// RoPE on its own (DESIGN.md 2.2): fills `cos` and `sin`, each `[n_pos][p/2]`
/// floats (p = qk_rope_head_dim), with the rotation of positions
/// `start_pos .. start_pos + n_pos` for config `*c`: `cos(pos * f_i) * m` where
/// `f_i` are the (YaRN-adjusted) inverse frequencies and `m` the YaRN cos/sin
/// scaling. Angles are computed in double precision.
/// Returns MLA_OK, MLA_ERR_NULL_POINTER, MLA_ERR_ABI_MISMATCH,
/// MLA_ERR_INVALID_CONFIG, MLA_ERR_MISALIGNED or MLA_ERR_INVALID_ARGUMENT
/// (n_pos = 0, overflow, or `cos` and `sin` overlap). Nothing is written on error.
///
/// # Safety
/// `c` is NULL or points to an `mla_config`; `cos` and `sin` are NULL or each hold
/// `n_pos * p/2` writable floats.
#[no_mangle]
pub unsafe extern "C" fn mla_rope_tables(
    c: *const mla_config,
    start_pos: u32,
    n_pos: u32,
    cos: *mut f32,
    sin: *mut f32,
) -> mla_status {
    plain("mla_rope_tables", || {
        if cos.is_null() || sin.is_null() {
            return Err(err(Status::NullPointer, "cos or sin is NULL"));
        }
        // SAFETY: `c` is NULL (checked inside) or points to an mla_config.
        let cfg = unsafe { read_config(c) }?;
        cfg.validate()?;
        let rp = mla_core::rope::RopeParams::from_config(&cfg);
        // validate(): p is even and > 0, so half >= 1 (max(1) lets the compiler see it).
        let half = (rp.dim / 2).max(1);
        let n = rope_floats(n_pos, half)?;
        let bytes = n * size_of::<f32>();
        if !(cos as usize).is_multiple_of(align_of::<f32>())
            || !(sin as usize).is_multiple_of(align_of::<f32>())
        {
            return Err(err(
                Status::Misaligned,
                "cos and sin must be 4-byte aligned",
            ));
        }
        if overlaps(cos as usize, bytes, sin as usize, bytes) {
            return Err(err(Status::InvalidArgument, "cos and sin overlap"));
        }
        // SAFETY: non-NULL, aligned, n floats each (C contract), disjoint (checked),
        // n * 4 <= isize::MAX (rope_floats).
        let (cs, ss) = unsafe {
            (
                core::slice::from_raw_parts_mut(cos, n),
                core::slice::from_raw_parts_mut(sin, n),
            )
        };
        mla_core::rope::fill_tables_direct(&rp, start_pos as usize, cs, ss);
        Ok(())
    })
}

/// `n_pos * half` floats, checked: > 0 and small enough to address.
fn rope_floats(n_pos: u32, half: usize) -> Result<usize> {
    (n_pos as usize)
        .checked_mul(half)
        .filter(|&n| n > 0 && n <= isize::MAX as usize / size_of::<f32>())
        .ok_or_else(|| {
            err(
                Status::InvalidArgument,
                "n_pos must be > 0 and n_pos * p/2 addressable",
            )
        })
}

/// Rotates `x` in place: `x` is `[n_pos][n_per_pos][p]` floats, and the
/// `n_per_pos` vectors of row k (e.g. the heads of one token) are rotated by row
/// k of `cos` and `sin` (`[n_pos][p/2]`, from [`mla_rope_tables`]) in the config's
/// pair layout (interleaved or half).
/// Returns MLA_OK, MLA_ERR_NULL_POINTER, MLA_ERR_ABI_MISMATCH,
/// MLA_ERR_INVALID_CONFIG, MLA_ERR_MISALIGNED or MLA_ERR_INVALID_ARGUMENT
/// (a count of 0, overflow, or `x` overlapping a table). Nothing is written on error.
///
/// # Safety
/// `c` is NULL or points to an `mla_config`; `x` is NULL or holds
/// `n_pos * n_per_pos * p` writable floats; `cos` and `sin` are NULL or each hold
/// `n_pos * p/2` floats.
#[no_mangle]
pub unsafe extern "C" fn mla_rope_apply(
    c: *const mla_config,
    x: *mut f32,
    n_pos: u32,
    n_per_pos: u32,
    cos: *const f32,
    sin: *const f32,
) -> mla_status {
    plain("mla_rope_apply", || {
        if x.is_null() || cos.is_null() || sin.is_null() {
            return Err(err(Status::NullPointer, "x, cos or sin is NULL"));
        }
        // SAFETY: `c` is NULL (checked inside) or points to an mla_config.
        let cfg = unsafe { read_config(c) }?;
        cfg.validate()?;
        let p = (cfg.qk_rope_head_dim as usize).max(2);
        let half = (p / 2).max(1);
        let nt = rope_floats(n_pos, half)?;
        let row = (n_per_pos as usize)
            .checked_mul(p)
            .filter(|&r| r > 0)
            .ok_or_else(|| err(Status::InvalidArgument, "n_per_pos must be > 0"))?
            .max(1); // > 0 already; max(1) lets the compiler see it (chunk size)
        let nx = rope_floats(n_pos, row)?;
        let al = align_of::<f32>();
        if !(x as usize).is_multiple_of(al)
            || !(cos as usize).is_multiple_of(al)
            || !(sin as usize).is_multiple_of(al)
        {
            return Err(err(
                Status::Misaligned,
                "x, cos and sin must be 4-byte aligned",
            ));
        }
        let (xb, tb) = (nx * size_of::<f32>(), nt * size_of::<f32>());
        if overlaps(x as usize, xb, cos as usize, tb) || overlaps(x as usize, xb, sin as usize, tb)
        {
            return Err(err(Status::InvalidArgument, "x overlaps cos or sin"));
        }
        // SAFETY: non-NULL, aligned, sized per the C contract; x is disjoint from the
        // tables (checked); both sizes <= isize::MAX bytes (rope_floats).
        let (xs, cs, ss) = unsafe {
            (
                core::slice::from_raw_parts_mut(x, nx),
                core::slice::from_raw_parts(cos, nt),
                core::slice::from_raw_parts(sin, nt),
            )
        };
        // Vector m of x belongs to position m / n_per_pos (index arithmetic, no chunk
        // iterators: their size hints divide by the chunk size).
        let per = (n_per_pos as usize).max(1);
        for m in 0..nx / p {
            let k = m / per;
            let (Some(v), Some(crow), Some(srow)) = (
                xs.get_mut(m * p..(m + 1) * p),
                cs.get(k * half..(k + 1) * half),
                ss.get(k * half..(k + 1) * half),
            ) else {
                break;
            };
            mla_core::rope::rotate(v, crow, srow, cfg.rope_layout);
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn validate_writes_truncated_message() {
        let mut c = mla_config::from_config(&Config::tutorial());
        c.qk_rope_head_dim = 63;
        let mut buf = [0x55 as c_char; 8];
        let validate = |c: *const mla_config, m: *mut c_char, n: usize| unsafe {
            mla_config_validate(c, m, n)
        };
        assert_eq!(
            validate(&c, buf.as_mut_ptr(), buf.len()),
            MLA_ERR_INVALID_CONFIG
        );
        let s = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap();
        assert_eq!(s, "qk_rope");
        assert_eq!(validate(&c, ptr::null_mut(), 0), MLA_ERR_INVALID_CONFIG);
        assert_eq!(validate(&c, ptr::null_mut(), 4), MLA_ERR_NULL_POINTER);
        assert_eq!(
            validate(ptr::null(), buf.as_mut_ptr(), 8),
            MLA_ERR_NULL_POINTER
        );
        let good = mla_config::from_config(&Config::tutorial());
        assert_eq!(validate(&good, buf.as_mut_ptr(), 8), MLA_OK);
        assert_eq!(buf[0], 0);
    }

    #[test]
    fn tensor_checks() {
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
