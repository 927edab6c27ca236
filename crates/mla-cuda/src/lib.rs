//! The CUDA engine: the same MLA layer as [`mla_core::Engine`] on an
//! NVIDIA GPU, through the CUDA driver API (`cust::sys`).
//!
//! [`CudaEngine::create`] validates the config and weights exactly like the CPU
//! engine ([`Config::dims`], [`Weights::check`]), then, once: uploads the weights in
//! their own dtype (f32, f16 or bf16; norms and biases widened to f32), the RoPE
//! cos/sin tables for every position (computed on the host by [`mla_core::rope`], so
//! both engines rotate with identical values), allocates the latent cache
//! (`max_seq_len` rows of `r + rope_k` values in `cache_dtype`) and all scratch for
//! `max_tokens_per_call` tokens, and creates one stream. A forward call allocates
//! nothing on the device.
//!
//! Per process and device, the first engine retains the device's primary context
//! and loads the kernel module (kernels/mla.cu: PTX for sm_72 or sm_80 by the
//! device's compute capability, or an nvcc fatbin); later engines share both, and
//! neither is released before the process exits.
//!
//! Per call (n tokens at positions `len() ..`), six or seven kernel launches: the
//! query projection(s) and `kv_a_proj_with_mqa` in one launch (the query-latent
//! RMSNorm folded into `q_b_proj`'s launch), one launch that normalises the latents,
//! rotates the rope keys and appends the rows to the cache while it computes the
//! absorbed queries `q~_h = W_UK_h^T q_nope_h`, one attention launch that reads
//! each cached row once per group of heads (split over the context,
//! flash-decoding style; tensor cores on sm_80+ for f16/bf16 caches), a combine
//! launch, the up-projection `W_UV_h ctx_h` and `o_proj`. Prefill uses the same
//! absorbed path per token. Sums are f32 throughout; results agree with the CPU
//! engine to f32 rounding (f16/bf16 caches: see docs/cuda.md).
//!
//! Errors and state follow the CPU engine: everything is validated before the
//! first launch and a failed call leaves `len()` and the cached rows unchanged;
//! CUDA failures are [`Status::Device`] with the driver's error name and text.
//!
//! # Streams and contexts
//! The engine runs on the device's *primary* context (the one the CUDA runtime
//! uses too) and on a stream of its own, created with default flags: it is
//! ordered after work on the legacy default stream (stream 0), and after nothing
//! else. Work on other streams that produces the input of
//! [`CudaEngine::forward_device`] must be complete (synchronise it, or wait on an
//! event) before the call; every call returns only after its own work finished.
//! Contexts created with `cuCtxCreate` are not supported: a pointer from one is
//! not valid in the primary context.
//!
//! # Finding a failing kernel
//! Kernel faults (an illegal address, say) surface on a GPU at the next
//! synchronisation, named only by the driver's error; they are sticky: the
//! context, and with it every engine of the process on that device, is unusable
//! afterwards (later calls fail at once, naming the first fault). With
//! [`CudaOptions::sync_after_launch`] or the environment variable
//! `MLA_CUDA_SYNC=1` the engine synchronises after every launch and names the
//! kernel that failed.

// crate::Error carries its message inline (no allocation in the core), so every
// Result is large by design.
#![allow(clippy::result_large_err)]
#![deny(missing_docs)]

mod device;
mod forward;
mod params;
mod plan;
mod probe;

/// The `cust` crate this engine is built on (for device buffers in tests and
/// programs that pass device pointers).
pub use cust;
pub use plan::{AttnPlan, CopyMode};
pub use probe::{
    device_count, device_name, failed_module_log, module_info, selftest_mma, ModuleInfo,
};

use core::ffi::c_void;
use std::sync::Arc;

use cust::sys as cu;

use device::{check, DevBuf, DeviceState, Events, Stream};
use mla_core::config::{Config, Dims, RopeKey, RopeLayout};
use mla_core::dtype::{DType, Elems};
use mla_core::rope::{self, RopeParams};
use mla_core::status::{err, Result, Status};
use mla_core::weights::{Tensor, Weights};
use params::{AttnP, CombineP, LinP, PrepP, SelftestP};

/// The PTX of kernels/mla.cu for sm_72 (CUDA cores only; loaded on devices of
/// compute capability below 8.0), built by build.rs and embedded.
pub const PTX_SM72: &str = include_str!(concat!(env!("OUT_DIR"), "/mla_sm72.ptx"));
/// The PTX for sm_80 (adds the tensor-core attention and cp.async copies; loaded
/// on devices of compute capability 8.0 and above: A100, Orin, H100, H200).
pub const PTX_SM80: &str = include_str!(concat!(env!("OUT_DIR"), "/mla_sm80.ptx"));
/// A fatbin built by nvcc (machine code for the architectures nvcc supports among
/// sm_72, sm_87 and sm_90, plus PTX), or empty when build.rs used clang. When
/// present it is loaded instead of the PTX.
pub const FATBIN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/mla.fatbin"));

/// Tokens per warp in the linear / absorb kernels (`MLA_TT`).
const TT: usize = 8;
/// Warps per block (`MLA_WARPS`).
const WARPS: usize = 8;
/// Fewest cached rows a context split gets by default.
const MIN_SPLIT_ROWS: usize = 64;
/// Most context splits per token (bounds the combine kernel's shared memory).
const MAX_SPLITS: usize = 4096;

/// Which attention kernel to run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttentionPath {
    /// Tensor cores where they apply (sm_80+, f16/bf16 cache, `kv_lora_rank <=
    /// 512`), else CUDA cores.
    #[default]
    Auto,
    /// CUDA cores always.
    CudaCores,
    /// Tensor cores; `create` fails with `Unsupported` where they do not apply.
    TensorCores,
}

/// Engine options beyond the model config ([`CudaEngine::create_with`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct CudaOptions {
    /// Synchronise after every kernel launch and name the kernel in the error
    /// when one fails (slower; for finding faults). Also on when the environment
    /// variable `MLA_CUDA_SYNC` is `1`.
    pub sync_after_launch: bool,
    /// The attention kernel.
    pub attention: AttentionPath,
    /// Context splits per token: 0 chooses (enough blocks to fill the GPU once,
    /// at least `min_split_rows` rows each); n uses n (at most what the scratch
    /// holds: the scratch is sized for n).
    pub splits: usize,
    /// Fewest rows per split when choosing automatically (0: 64).
    pub min_split_rows: usize,
    /// Dynamic shared memory a block may use: 0 = the device's opt-in limit; a
    /// smaller value plans as if the device had only that much.
    pub max_shared_memory: usize,
    /// Time each call on the device with CUDA events ([`CudaEngine::last_device_ms`]).
    pub timing: bool,
}

/// A weight matrix on the device, in its own dtype.
struct DevMat {
    buf: DevBuf,
    dtype: DType,
}

/// Raw bytes of a tensor's elements.
fn tensor_bytes<'a>(t: &Tensor<'a>) -> &'a [u8] {
    match t.data {
        Elems::F32(s) => bytemuck::cast_slice(s),
        Elems::F16(s) => bytemuck::cast_slice(s),
        Elems::BF16(s) => bytemuck::cast_slice(s),
        // Refused before any upload (`check_weights_cuda`).
        Elems::F8(f) => f.codes(),
    }
}

impl DevMat {
    fn upload(what: &str, t: &Tensor) -> Result<DevMat> {
        Ok(DevMat {
            buf: DevBuf::from_bytes(what, tensor_bytes(t))?,
            dtype: t.data.dtype(),
        })
    }
}

/// A norm or bias vector, widened to f32 on the device.
fn upload_vec(what: &str, t: &Tensor) -> Result<DevBuf> {
    let mut v = vec![0f32; t.data.len()];
    t.data.widen_into(&mut v);
    DevBuf::from_f32(what, &v)
}

fn upload_opt_vec(what: &str, t: Option<&Tensor>) -> Result<Option<DevBuf>> {
    t.map(|t| upload_vec(what, t)).transpose()
}

/// The weights on the device plus the RoPE tables.
struct DevWeights {
    q_proj: Option<DevMat>,
    q_a_proj: Option<DevMat>,
    q_b_proj: Option<DevMat>,
    kv_a_proj: DevMat,
    kv_b_proj: DevMat,
    o_proj: DevMat,
    q_a_norm: Option<DevBuf>,
    kv_a_norm: DevBuf,
    q_a_bias: Option<DevBuf>,
    kv_a_bias: Option<DevBuf>,
    o_bias: Option<DevBuf>,
    /// `[max_seq][p/2]` cos, YaRN scaling applied.
    cos: DevBuf,
    /// `[max_seq][p/2]` sin, YaRN scaling applied.
    sin: DevBuf,
}

/// Device scratch for `max_tokens_per_call` tokens (f32 unless noted), left
/// uninitialised: every kernel writes its part before another reads it.
struct Scratch {
    /// `[T][d]`: input of `forward` (uploaded).
    x: DevBuf,
    /// `[T][d]`: output of `forward` before it is copied out.
    out: DevBuf,
    /// `[T][r_q]`: query latent.
    qa: DevBuf,
    /// `[T][H][n+p]`: queries.
    q: DevBuf,
    /// `[T][r + rope_k]`: kv_a_proj_with_mqa output.
    kva: DevBuf,
    /// `[T][H][r]`: absorbed queries.
    qt: DevBuf,
    /// `[T][H][r]`: normalised latent sums.
    ctx: DevBuf,
    /// `[T][H][v]`: attention output per head.
    o: DevBuf,
    /// `[slots][H][r]`: per-split unnormalised latent sums.
    part_acc: DevBuf,
    /// `[slots][H][2]`: per-split softmax (max, sum).
    part_ml: DevBuf,
    /// One u32 (zeroed at creation): `forward_device`'s non-finite-input flag,
    /// set to the call's generation number by the first projection kernel.
    flag: DevBuf,
}

/// Kernel handles (valid for the process: the module is never unloaded).
struct Kernels {
    linear: [cu::CUfunction; 3],
    prep: cu::CUfunction,
    attn: cu::CUfunction,
    combine: cu::CUfunction,
}

/// Launch bookkeeping of one call (for error messages).
struct Launches {
    n: usize,
    last: &'static str,
}

fn dt_index(dt: DType) -> usize {
    match dt {
        DType::F32 => 0,
        DType::F16 => 1,
        // FP8 is no weight dtype (the core refuses it); as cache dtype
        // `check_supported_cuda` refuses it before any kernel is chosen.
        DType::BF16 | DType::F8E4M3 => 2,
    }
}

fn div_ceil(a: usize, b: usize) -> usize {
    if b == 0 {
        0
    } else {
        a.div_ceil(b)
    }
}

fn u32_of(what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| {
        err(Status::Unsupported, what)
            .s(": ")
            .n(v)
            .s(" does not fit the kernels' 32-bit sizes")
    })
}

/// The linear kernels' load width: 8 (16-byte loads of f16/bf16 rows), 4 or 1
/// (see `linear_impl`); `x_addr` is the input's device address.
fn vec_mode(wdt: DType, cols: usize, x_stride: usize, x_grp_off: usize, x_addr: u64) -> u32 {
    let x_ok =
        x_stride.is_multiple_of(4) && x_grp_off.is_multiple_of(4) && x_addr.is_multiple_of(16);
    if !x_ok || !cols.is_multiple_of(4) {
        0
    } else if wdt != DType::F32 && cols.is_multiple_of(8) {
        8
    } else {
        4
    }
}

/// An MLA layer with its latent cache on a CUDA device.
///
/// Use from one thread at a time (it is `Send`, not `Sync`); every call makes the
/// device's primary context current on the calling thread.
pub struct CudaEngine {
    cfg: Config,
    dm: Dims,
    len: usize,
    scale: f32,
    opts: CudaOptions,
    plan: AttnPlan,
    /// Attention blocks resident on the whole GPU at once.
    block_slots: usize,
    /// Partial-result slots (token x split) the scratch holds.
    slots: usize,
    /// Generation number of the last `forward_device` call (never 0).
    gen: u32,
    last_ms: Option<f32>,
    k: Kernels,
    // Device memory and handles: dropped in this order, with the context
    // current (Drop below), the device state (context, module) last.
    w: DevWeights,
    s: Scratch,
    /// `[max_seq][r + rope_k]` in `cache_dtype`.
    cache: DevBuf,
    events: Option<Events>,
    stream: Stream,
    dev: Arc<DeviceState>,
}

impl core::fmt::Debug for CudaEngine {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CudaEngine")
            .field("device", &self.dev.name)
            .field("len", &self.len)
            .field("capacity", &self.dm.max_seq)
            .field("attention", &self.plan)
            .finish_non_exhaustive()
    }
}

// SAFETY: the raw handles (CUfunction, CUstream, CUevent, device pointers)
// belong to the process-wide module and context or to this engine, and the CUDA
// driver API may use them from any thread once the context is current, which
// every method that touches the device ensures first. The engine has no
// thread-affine state.
unsafe impl Send for CudaEngine {}

impl CudaEngine {
    /// Builds an engine on device `device_ordinal` with default options (and
    /// `MLA_CUDA_SYNC=1` from the environment honoured).
    ///
    /// Errors: `InvalidConfig`, `WeightShape` (as [`mla_core::Engine::new`]);
    /// `Unsupported` for dimensions the kernels cannot take (a size above 2^32,
    /// `kv_lora_rank > 8192`, `max_tokens_per_call` or `num_heads` above 65535,
    /// attention whose shared memory exceeds the device's opt-in limit even with
    /// one head and one row per tile); `Device` when the driver, the device, an
    /// allocation, an upload or the module load fails (the message holds the
    /// first line of the JIT log; [`failed_module_log`] the rest).
    pub fn create(cfg: &Config, weights: &Weights, device_ordinal: u32) -> Result<CudaEngine> {
        CudaEngine::create_with(cfg, weights, device_ordinal, &CudaOptions::default())
    }

    /// [`CudaEngine::create`] with options.
    pub fn create_with(
        cfg: &Config,
        weights: &Weights,
        device_ordinal: u32,
        options: &CudaOptions,
    ) -> Result<CudaEngine> {
        let dm = weights.check(cfg)?;
        cfg.check_supported()?;
        check_supported_cuda(cfg)?;
        check_weights_cuda(weights)?;
        let per_head = cfg.rope_key == RopeKey::PerHead;
        let mut opts = *options;
        if std::env::var("MLA_CUDA_SYNC").is_ok_and(|v| v == "1") {
            opts.sync_after_launch = true;
        }
        // Every size the kernels take as u32, and index products they form.
        for (what, v) in [
            ("hidden_size", dm.d),
            ("q rows", dm.q_width),
            ("kv_a rows", dm.kv_a_rows),
            ("kv_b rows", dm.kv_b_rows),
            ("num_heads * v", dm.o_cols),
            ("num_heads * kv_lora_rank", dm.h.saturating_mul(dm.r)),
            (
                "max_tokens_per_call * hidden_size",
                dm.max_tok.saturating_mul(dm.d),
            ),
            ("max_seq_len", dm.max_seq),
            (
                "prep grid",
                div_ceil(dm.r, 256)
                    .saturating_mul(dm.h)
                    .saturating_mul(div_ceil(dm.max_tok, TT))
                    .saturating_add(dm.max_tok)
                    .saturating_mul(2),
            ),
        ] {
            u32_of(what, v)?;
        }
        if dm.max_tok > 65535 || dm.h > 65535 {
            return Err(err(
                Status::Unsupported,
                "max_tokens_per_call and num_heads must be <= 65535 for the CUDA engine",
            ));
        }

        // Device, context, module (once per process), stream.
        let dev = DeviceState::get(device_ordinal)?;
        dev.check_usable()?;
        dev.make_current()?;
        let tc_name = format!("mla_attn_tc_{}", cfg.cache_dtype.name());
        let target = plan::Target {
            arch: dev.cc.0 * 10 + dev.cc.1,
            smem_limit: if opts.max_shared_memory > 0 {
                opts.max_shared_memory.min(dev.smem_optin)
            } else {
                dev.smem_optin
            },
            has_tc: cfg.cache_dtype != DType::F32 && dev.function(&tc_name)?.is_some(),
            allow_tc: opts.attention != AttentionPath::CudaCores,
            require_tc: opts.attention == AttentionPath::TensorCores,
        };
        let plan = plan::plan(&dm, per_head, cfg.cache_dtype, &target)
            .map_err(|m| err(Status::Unsupported, &m))?;
        let attn = dev.required(&plan.kernel)?;
        let attn_max = dev.allow_smem(attn, &plan.kernel)?;
        if plan.smem > attn_max {
            return Err(err(Status::Unsupported, &plan.kernel)
                .s(": ")
                .n(plan.smem)
                .s(" bytes of dynamic shared memory, the device allows ")
                .n(attn_max));
        }
        // Its dynamic shared memory (4 bytes per split) stays below 48 KiB.
        let combine = dev.required("mla_attn_combine")?;
        let k = Kernels {
            linear: [
                dev.required("mla_linear_f32")?,
                dev.required("mla_linear_f16")?,
                dev.required("mla_linear_bf16")?,
            ],
            prep: dev.required(&format!(
                "mla_prep_c{}_w{}",
                cfg.cache_dtype.name(),
                weights.kv_b_proj.data.dtype().name()
            ))?,
            attn,
            combine,
        };
        let block_slots = dev.sm_count * dev.occupancy(attn, plan.smem)?;
        let split_cap = if opts.splits > 0 {
            opts.splits
        } else {
            (block_slots / plan.groups).max(1)
        }
        .min(MAX_SPLITS);
        let slots = dm.max_tok.max(split_cap);
        let stream = Stream::new()?;
        let events = if opts.timing {
            Some(Events::new()?)
        } else {
            None
        };

        // Weights and RoPE tables.
        let w = weights;
        let opt_mat =
            |name: &str, t: Option<&Tensor>| t.map(|t| DevMat::upload(name, t)).transpose();
        // check_supported refused kv_shared layers, so the layer has its own kv_a.
        let (Some(kv_a), Some(kv_norm)) =
            (w.kv_a_proj_with_mqa.as_ref(), w.kv_a_layernorm.as_ref())
        else {
            return Err(err(
                Status::WeightShape,
                "kv_a_proj_with_mqa / kv_a_layernorm missing",
            ));
        };
        let half = dm.p / 2;
        let table = dm.max_seq.checked_mul(half).ok_or_else(|| {
            err(
                Status::InvalidConfig,
                "max_seq_len * qk_rope_head_dim overflows",
            )
        })?;
        let (mut cos, mut sin) = (vec![0f32; table], vec![0f32; table]);
        let mut inv_freq = vec![0f64; half];
        rope::fill_tables(
            &RopeParams::from_config(cfg),
            0,
            &mut inv_freq,
            &mut cos,
            &mut sin,
        )?;
        let dw = DevWeights {
            q_proj: opt_mat("q_proj", w.q_proj.as_ref())?,
            q_a_proj: opt_mat("q_a_proj", w.q_a_proj.as_ref())?,
            q_b_proj: opt_mat("q_b_proj", w.q_b_proj.as_ref())?,
            kv_a_proj: DevMat::upload("kv_a_proj_with_mqa", kv_a)?,
            kv_b_proj: DevMat::upload("kv_b_proj", &w.kv_b_proj)?,
            o_proj: DevMat::upload("o_proj", &w.o_proj)?,
            q_a_norm: upload_opt_vec("q_a_layernorm", w.q_a_layernorm.as_ref())?,
            kv_a_norm: upload_vec("kv_a_layernorm", kv_norm)?,
            q_a_bias: upload_opt_vec("q_a_proj_bias", w.q_a_proj_bias.as_ref())?,
            kv_a_bias: upload_opt_vec("kv_a_proj_bias", w.kv_a_proj_bias.as_ref())?,
            o_bias: upload_opt_vec("o_proj_bias", w.o_proj_bias.as_ref())?,
            cos: DevBuf::from_f32("rope cos table", &cos)?,
            sin: DevBuf::from_f32("rope sin table", &sin)?,
        };

        // Cache and scratch, uninitialised (the emulator poisons fresh memory).
        let f = |what: &str, elems: &[usize]| -> Result<DevBuf> {
            let mut n: usize = 4;
            for &e in elems {
                n = n
                    .checked_mul(e)
                    .ok_or_else(|| err(Status::InvalidConfig, what).s(": size overflows"))?;
            }
            DevBuf::alloc(what, n)
        };
        let cache_bytes = dm
            .max_seq
            .checked_mul(dm.cache_row)
            .and_then(|n| n.checked_mul(cfg.cache_dtype.size()))
            .ok_or_else(|| err(Status::InvalidConfig, "cache size overflows"))?;
        let cache = DevBuf::alloc("latent cache", cache_bytes)?;
        let t = dm.max_tok;
        let s = Scratch {
            x: f("x", &[t, dm.d])?,
            out: f("out", &[t, dm.d])?,
            qa: f("qa", &[t, dm.rq])?,
            q: f("q", &[t, dm.q_width])?,
            kva: f("kva", &[t, dm.kv_a_rows])?,
            qt: f("qt", &[t, dm.h, dm.r])?,
            ctx: f("ctx", &[t, dm.h, dm.r])?,
            o: f("o", &[t, dm.o_cols])?,
            part_acc: f("part_acc", &[slots, dm.h, dm.r])?,
            part_ml: f("part_ml", &[slots, dm.h, 2])?,
            flag: f("flag", &[1])?,
        };
        // SAFETY: the flag is this engine's 4-byte allocation.
        check("cuMemsetD32(flag)", unsafe {
            cu::cuMemsetD32_v2(s.flag.ptr(), 0, 1)
        })?;

        Ok(CudaEngine {
            cfg: *cfg,
            dm,
            len: 0,
            scale: rope::softmax_scale(cfg),
            opts,
            plan,
            block_slots,
            slots,
            gen: 0,
            last_ms: None,
            k,
            w: dw,
            s,
            cache,
            events,
            stream,
            dev,
        })
    }

    /// Tokens in the cache (the position of the next token).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Cache capacity in tokens (`max_seq_len`).
    pub fn capacity(&self) -> usize {
        self.dm.max_seq
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The options in effect (`MLA_CUDA_SYNC` included).
    pub fn options(&self) -> &CudaOptions {
        &self.opts
    }

    /// The device's name.
    pub fn device_name(&self) -> &str {
        &self.dev.name
    }

    /// The attention kernel and its launch shape.
    pub fn attention_plan(&self) -> &AttnPlan {
        &self.plan
    }

    /// Heads per attention block and number of head groups (each cached row is
    /// read from memory once per group; one group when all heads fit).
    pub fn head_groups(&self) -> (usize, usize) {
        (self.plan.heads_per_block, self.plan.groups)
    }

    /// `(splits, rows per split)` a call of `n_tokens` tokens at cache length
    /// `len` would use (the last token attends over `len + n_tokens` positions).
    pub fn splits_for(&self, len: usize, n_tokens: usize) -> (usize, usize) {
        let t = n_tokens.max(1);
        let min_rows = if self.opts.min_split_rows > 0 {
            self.opts.min_split_rows
        } else {
            MIN_SPLIT_ROWS
        };
        plan::splits(
            len + t,
            t,
            &plan::SplitPolicy {
                groups: self.plan.groups,
                block_slots: self.block_slots,
                cap: self.slots / t,
                want: self.opts.splits,
                min_rows,
                align: self.plan.tile_rows,
            },
        )
    }

    /// Device time of the last successful forward call, in milliseconds, when
    /// the engine was created with [`CudaOptions::timing`]; `None` after
    /// `append_zero_rows` / `append_random_rows` (they are not timed).
    pub fn last_device_ms(&self) -> Option<f32> {
        self.last_ms
    }

    /// Device memory held by the engine, in bytes (weights, tables, cache, scratch).
    pub fn device_bytes(&self) -> usize {
        let w = &self.w;
        let vecs = [&w.q_a_norm, &w.q_a_bias, &w.kv_a_bias, &w.o_bias]
            .iter()
            .map(|b| b.as_ref().map_or(0, |b| b.len()))
            .sum::<usize>()
            + w.kv_a_norm.len()
            + w.cos.len()
            + w.sin.len();
        let s = &self.s;
        let scratch = [
            &s.x,
            &s.out,
            &s.qa,
            &s.q,
            &s.kva,
            &s.qt,
            &s.ctx,
            &s.o,
            &s.part_acc,
            &s.part_ml,
            &s.flag,
        ]
        .iter()
        .map(|b| b.len())
        .sum::<usize>();
        self.weight_bytes() + vecs + scratch + self.cache.len()
    }

    /// Bytes of weights one decode step reads (all matrices, in their dtypes).
    pub fn weight_bytes(&self) -> usize {
        let w = &self.w;
        [&w.q_proj, &w.q_a_proj, &w.q_b_proj]
            .iter()
            .map(|m| m.as_ref().map_or(0, |m| m.buf.len()))
            .sum::<usize>()
            + w.kv_a_proj.buf.len()
            + w.kv_b_proj.buf.len()
            + w.o_proj.buf.len()
    }

    /// Rolls the cache back to `len` tokens; `InvalidArgument` if `len > self.len()`.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len > self.len {
            return Err(err(Status::InvalidArgument, "truncate: len ")
                .n(len)
                .s(" is past the cache length ")
                .n(self.len));
        }
        self.len = len;
        Ok(())
    }

    /// Empties the cache.
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// For benchmarks: appends `n` all-zero cache rows without running the model.
    /// `CacheFull` if that passes `max_seq_len`.
    pub fn append_zero_rows(&mut self, n: usize) -> Result<()> {
        self.append_rows(n, None)
    }

    /// For benchmarks: appends `n` cache rows of pseudo-random values in [-1, 1)
    /// (from `seed`, converted to `cache_dtype`) without running the model, so a
    /// decode step can be timed at a long context on realistic data without a
    /// long prefill. `CacheFull` if that passes `max_seq_len`.
    pub fn append_random_rows(&mut self, n: usize, seed: u64) -> Result<()> {
        self.append_rows(n, Some(seed))
    }

    fn append_rows(&mut self, n: usize, seed: Option<u64>) -> Result<()> {
        let end = self.check_room(n)?;
        self.dev.check_usable()?;
        let es = self.cfg.cache_dtype.size();
        let row_bytes = self.dm.cache_row * es;
        let off = (self.len * row_bytes) as u64;
        let bytes = n * row_bytes;
        self.dev.make_current()?;
        match seed {
            None => {
                // SAFETY: rows len .. end lie inside the cache allocation (end <= max_seq).
                self.dev.check("cuMemsetD8Async", unsafe {
                    cu::cuMemsetD8Async(self.cache.ptr() + off, 0, bytes, self.stream.0)
                })?;
            }
            Some(seed) => {
                let mut s = seed | 1;
                let vals = n * self.dm.cache_row;
                let mut host = vec![0u8; bytes];
                for i in 0..vals {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    let v = ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
                    let at = i * es;
                    match self.cfg.cache_dtype {
                        DType::F32 => host[at..at + 4].copy_from_slice(&v.to_ne_bytes()),
                        DType::F16 => host[at..at + 2]
                            .copy_from_slice(&half::f16::from_f32(v).to_bits().to_ne_bytes()),
                        DType::BF16 => host[at..at + 2]
                            .copy_from_slice(&half::bf16::from_f32(v).to_bits().to_ne_bytes()),
                        // Refused by `check_supported_cuda` at create.
                        DType::F8E4M3 => {}
                    }
                }
                // SAFETY: rows len .. end lie inside the cache allocation; the
                // host buffer holds `bytes` bytes (synchronous copy).
                self.dev.check("cuMemcpyHtoD(cache rows)", unsafe {
                    cu::cuMemcpyHtoD_v2(self.cache.ptr() + off, host.as_ptr().cast(), bytes)
                })?;
            }
        }
        self.wait(&Launches { n: 0, last: "" })?;
        self.len = end;
        Ok(())
    }

    /// `len() + n` if it fits the cache, else `CacheFull`.
    fn check_room(&self, n: usize) -> Result<usize> {
        match self.len.checked_add(n) {
            Some(end) if end <= self.dm.max_seq => Ok(end),
            _ => Err(err(Status::CacheFull, "cache: ")
                .n(self.len)
                .s(" + ")
                .n(n)
                .s(" tokens would pass max_seq_len ")
                .n(self.dm.max_seq)),
        }
    }

    fn check_tokens(&self, n: usize) -> Result<()> {
        if n == 0 || n > self.dm.max_tok {
            return Err(err(Status::InvalidArgument, "n_tokens: ")
                .n(n)
                .s(" must be 1 ..= max_tokens_per_call ")
                .n(self.dm.max_tok));
        }
        Ok(())
    }
}

impl Drop for CudaEngine {
    fn drop(&mut self) {
        // The buffers, events and stream are released after this, in field
        // order, and need the context current on this thread. Errors (e.g. after
        // a sticky fault) cannot be reported.
        let _ = self.dev.make_current();
        // SAFETY: the stream belongs to this engine.
        let _ = unsafe { cu::cuStreamSynchronize(self.stream.0) };
    }
}

/// What the CPU engine runs but this CUDA engine does not yet: its RoPE table is
/// precomputed for every position (no per-call longrope switch, no NoPE), it
/// applies no latent or query scales, gates, sinks, rope-key norm or LeRoPE,
/// its cache is not a ring and not FP8, and it has no sparse-attention indexer.
fn check_supported_cuda(cfg: &Config) -> Result<()> {
    use mla_core::config::{QueryScale, RopeType};
    let what = match cfg.rope_type {
        RopeType::LongRope => Some("rope_type longrope"),
        RopeType::None => Some("rope_type none (NoPE)"),
        _ if cfg.q_latent_scale != 1.0 || cfg.kv_latent_scale != 1.0 => Some("latent scales"),
        _ if cfg.query_scale != QueryScale::None => Some("query_scale"),
        _ if cfg.sliding_window != 0 => Some("sliding_window"),
        _ if cfg.gate != mla_core::config::Gate::None => Some("output gates"),
        _ if cfg.sinks => Some("attention sinks"),
        _ if cfg.rope_key_norm => Some("rope_key_norm"),
        _ if cfg.rope_freq_alpha => Some("rope_freq_alpha (LeRoPE)"),
        _ if cfg.kv_shared => Some("kv_shared (cross-layer KV sharing)"),
        _ if cfg.dsa != mla_core::config::Dsa::None => Some("dsa (sparse attention)"),
        _ if cfg.cache_dtype == DType::F8E4M3 => Some("cache_dtype f8_e4m3 (FP8 latent cache)"),
        _ => None,
    };
    match what {
        Some(w) => Err(err(Status::Unsupported, w).s(": not built in the CUDA engine")),
        None => Ok(()),
    }
}

/// FP8 block-scaled weights: the CPU engine dequantizes them in its kernels;
/// this engine's kernels read f32, f16 and bf16 only.
fn check_weights_cuda(w: &Weights) -> Result<()> {
    for (name, t) in w.named() {
        if t.is_some_and(|t| t.data.dtype() == DType::F8E4M3) {
            return Err(err(Status::Unsupported, name)
                .s(": f8_e4m3 weights (FP8 with block scales): not built in the CUDA engine"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_supported_cuda;
    use mla_core::config::{Config, Dsa, Gate, QueryScale, RopeType};
    use mla_core::status::Status;

    /// Every mechanism the CPU engine runs and this engine does not is refused
    /// by name before any device work; the plain presets pass.
    #[test]
    fn mechanisms_not_built_on_the_gpu_are_unsupported() {
        let base = Config::deepseek_v2_lite();
        assert!(check_supported_cuda(&base).is_ok());
        assert!(check_supported_cuda(&Config::tutorial()).is_ok());
        let cases: [(&str, Config); 11] = [
            (
                "longrope",
                Config {
                    rope_type: RopeType::LongRope,
                    ..base
                },
            ),
            (
                "NoPE",
                Config {
                    rope_type: RopeType::None,
                    ..base
                },
            ),
            (
                "latent scales",
                Config {
                    kv_latent_scale: 2.0,
                    ..base
                },
            ),
            (
                "query_scale",
                Config {
                    query_scale: QueryScale::Llama4,
                    ..base
                },
            ),
            (
                "sliding_window",
                Config {
                    sliding_window: 8,
                    ..base
                },
            ),
            (
                "output gates",
                Config {
                    gate: Gate::PerHead,
                    ..base
                },
            ),
            (
                "attention sinks",
                Config {
                    sinks: true,
                    ..base
                },
            ),
            (
                "rope_key_norm",
                Config {
                    rope_key_norm: true,
                    ..base
                },
            ),
            (
                "kv_shared",
                Config {
                    kv_shared: true,
                    ..base
                },
            ),
            (
                "dsa",
                Config {
                    dsa: Dsa::Full,
                    ..base
                },
            ),
            (
                "cache_dtype f8_e4m3",
                Config {
                    cache_dtype: mla_core::DType::F8E4M3,
                    ..base
                },
            ),
        ];
        for (name, cfg) in cases {
            let e = check_supported_cuda(&cfg).unwrap_err();
            assert_eq!(e.status(), Status::Unsupported, "{name}");
            assert!(e.message().contains(name), "{name}: {}", e.message());
        }
    }
}
