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
mod params;
mod plan;

/// The `cust` crate this engine is built on (for device buffers in tests and
/// programs that pass device pointers).
pub use cust;
pub use plan::{AttnPlan, CopyMode};

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

/// Initialises the driver and returns the number of CUDA devices.
/// Fails with [`Status::Device`] when there is no usable driver (e.g. the stub
/// libcuda of CI) or no device.
pub fn device_count() -> Result<u32> {
    device::init()?;
    let mut n: core::ffi::c_int = 0;
    // SAFETY: writes one int through a pointer to a local.
    check("cuDeviceGetCount", unsafe { cu::cuDeviceGetCount(&mut n) })?;
    Ok(u32::try_from(n).unwrap_or(0))
}

/// Name of device `ordinal` (e.g. "NVIDIA H200").
pub fn device_name(ordinal: u32) -> Result<String> {
    Ok(DeviceState::get(ordinal)?.name.clone())
}

/// What was loaded on a device (initialising it if needed).
#[derive(Clone, Debug)]
pub struct ModuleInfo {
    /// The device's name.
    pub device: String,
    /// Compute capability (major, minor).
    pub compute_capability: (u32, u32),
    /// Multiprocessors.
    pub multiprocessors: usize,
    /// Opt-in shared memory per block, bytes.
    pub shared_memory_optin: usize,
    /// Which image was loaded (embedded PTX for sm_72 / sm_80, a fatbin, or the
    /// file named by `MLA_CUDA_MODULE_FILE` / `MLA_CUDA_PTX_FILE`).
    pub image: String,
    /// The JIT compiler's log (verbose: registers, spills and shared memory per
    /// kernel when the driver compiled PTX).
    pub jit_log: String,
}

/// The module and device information of device `ordinal`.
pub fn module_info(ordinal: u32) -> Result<ModuleInfo> {
    let d = DeviceState::get(ordinal)?;
    Ok(ModuleInfo {
        device: d.name.clone(),
        compute_capability: d.cc,
        multiprocessors: d.sm_count,
        shared_memory_optin: d.smem_optin,
        image: d.module_desc.clone(),
        jit_log: d.jit_log.clone(),
    })
}

/// The whole JIT error and info log of the last module load that failed in this
/// process (the error message holds only its first line); "" if none failed.
pub fn failed_module_log() -> String {
    device::failed_jit_log()
}

/// Checks the tensor-core fragment layout the kernels use (kernels/mla.cu,
/// `frag_*`) on the device: one `mma.sync` per dtype and B layout against a plain
/// matrix product of the same numbers. Returns the largest relative error, or
/// `None` when the loaded module has no tensor-core kernels (compute capability
/// below 8.0). A layout mistake gives errors of order 1; a correct one, f32
/// rounding.
pub fn selftest_mma(ordinal: u32) -> Result<Option<f64>> {
    let d = DeviceState::get(ordinal)?;
    d.check_usable()?;
    d.make_current()?;
    let Some(f) = d.function("mla_selftest_mma")? else {
        return Ok(None);
    };
    let mut worst = 0f64;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    for dtype in [1u32, 2] {
        let to_bits = |v: f32| -> u16 {
            if dtype == 1 {
                half::f16::from_f32(v).to_bits()
            } else {
                half::bf16::from_f32(v).to_bits()
            }
        };
        let from_bits = |b: u16| -> f64 {
            if dtype == 1 {
                half::f16::from_bits(b).to_f64()
            } else {
                half::bf16::from_bits(b).to_f64()
            }
        };
        let a: Vec<u16> = (0..256).map(|_| to_bits(next())).collect();
        let b_kn: Vec<u16> = (0..128).map(|_| to_bits(next())).collect();
        let b_nk: Vec<u16> = (0..128)
            .map(|i| *b_kn.get((i % 16) * 8 + i / 16).unwrap_or(&0))
            .collect();
        let c: Vec<f32> = (0..128).map(|_| next()).collect();
        let bufs = [
            DevBuf::from_bytes("selftest a", bytemuck::cast_slice(&a))?,
            DevBuf::from_bytes("selftest b", bytemuck::cast_slice(&b_kn))?,
            DevBuf::from_bytes("selftest b", bytemuck::cast_slice(&b_nk))?,
            DevBuf::from_f32("selftest c", &c)?,
            DevBuf::alloc("selftest d", 256 * 4)?,
        ];
        let p = SelftestP {
            a: bufs[0].ptr(),
            b_kn: bufs[1].ptr(),
            b_nk: bufs[2].ptr(),
            c: bufs[3].ptr(),
            d: bufs[4].ptr(),
            dtype,
            pad0: 0,
        };
        d.check(
            "mla_selftest_mma",
            device::launch(f, core::ptr::null_mut(), [1, 1, 1], 0, &p),
        )?;
        let mut out = vec![0f32; 256];
        // SAFETY: the buffer holds 256 floats; the copy on the legacy stream
        // waits for the kernel.
        d.check("mla_selftest_mma (result)", unsafe {
            cu::cuMemcpyDtoH_v2(out.as_mut_ptr().cast(), bufs[4].ptr(), 1024)
        })?;
        for pass in 0..2 {
            for m in 0..16 {
                for n in 0..8 {
                    let mut want = f64::from(*c.get(m * 8 + n).unwrap_or(&0.0));
                    let mut mag = want.abs();
                    for k in 0..16 {
                        let x = from_bits(*a.get(m * 16 + k).unwrap_or(&0));
                        let y = from_bits(*b_kn.get(k * 8 + n).unwrap_or(&0));
                        want += x * y;
                        mag += (x * y).abs();
                    }
                    let got = f64::from(*out.get(pass * 128 + m * 8 + n).unwrap_or(&f32::NAN));
                    let e = (got - want).abs() / mag.max(1e-30);
                    worst = if e.is_nan() {
                        f64::INFINITY
                    } else {
                        worst.max(e)
                    };
                }
            }
        }
    }
    Ok(Some(worst))
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
        DType::BF16 => 2,
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

    /// Device time of the last successful call, in milliseconds, when the engine
    /// was created with [`CudaOptions::timing`].
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
                    }
                }
                // SAFETY: rows len .. end lie inside the cache allocation; the
                // host buffer holds `bytes` bytes (synchronous copy).
                self.dev.check("cuMemcpyHtoD(cache rows)", unsafe {
                    cu::cuMemcpyHtoD_v2(self.cache.ptr() + off, host.as_ptr().cast(), bytes)
                })?;
            }
        }
        self.finish(&Launches { n: 0, last: "" })?;
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

    /// Appends the tokens `x` (`[n_tokens][hidden_size]`, host memory) at
    /// positions `len()..`, attends causally over everything cached and writes
    /// `[n_tokens][hidden_size]` to `out`. Same checks and statuses as
    /// [`mla_core::Engine::forward`] (`InvalidArgument`, `CacheFull`, `NonFinite`),
    /// plus `Device`; on any error nothing is appended.
    pub fn forward(&mut self, x: &[f32], out: &mut [f32]) -> Result<()> {
        let d = self.dm.d;
        if x.is_empty() || !x.len().is_multiple_of(d) {
            return Err(err(Status::InvalidArgument, "x: length ")
                .n(x.len())
                .s(" is not a positive multiple of hidden_size ")
                .n(d));
        }
        let t = x.len() / d;
        self.check_tokens(t)?;
        if out.len() != x.len() {
            return Err(err(Status::InvalidArgument, "out: length ")
                .n(out.len())
                .s(" differs from x's ")
                .n(x.len()));
        }
        let end = self.check_room(t)?;
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(err(Status::NonFinite, "x: token ")
                .n(i / d)
                .s(", column ")
                .n(i % d)
                .s(" is NaN or infinite"));
        }
        self.dev.check_usable()?;
        self.dev.make_current()?;
        let stream = self.stream.0;
        let bytes = core::mem::size_of_val(x);
        let mut l = Launches { n: 0, last: "" };
        self.record(0, &l)?;
        // SAFETY: `x` is `bytes` readable host bytes and the scratch `x` holds
        // max_tok * d floats >= t * d; the copy is complete when the stream syncs
        // below, before `x` can be released by the caller.
        self.dev.check("cuMemcpyHtoDAsync(x)", unsafe {
            cu::cuMemcpyHtoDAsync_v2(self.s.x.ptr(), x.as_ptr().cast(), bytes, stream)
        })?;
        self.enqueue(self.s.x.ptr(), t, None, self.s.out.ptr(), &mut l)?;
        // SAFETY: `out` is `bytes` writable host bytes (same length as x), the
        // scratch output holds them; the stream is synchronised before return.
        let r = unsafe {
            cu::cuMemcpyDtoHAsync_v2(out.as_mut_ptr().cast(), self.s.out.ptr(), bytes, stream)
        };
        self.check_in_call("cuMemcpyDtoHAsync(out)", r, &l)?;
        self.record(1, &l)?;
        self.finish(&l)?;
        self.len = end;
        Ok(())
    }

    /// [`CudaEngine::forward`] with the input and output in device memory:
    /// `x_dev` and `out_dev` are device addresses (in the device's primary
    /// context) of `n_tokens * hidden_size` floats each (row-major
    /// `[n_tokens][hidden_size]`), 4-byte aligned (`Misaligned` otherwise). The
    /// call is synchronous: when it returns, `out_dev` is written (on success
    /// only). It is ordered after the legacy default stream only: work on other
    /// streams that produces `x_dev` must be complete before the call.
    /// Non-finite input is detected on the device: `NonFinite`, nothing appended,
    /// `out_dev` untouched.
    ///
    /// # Safety
    /// `x_dev` must be readable and `out_dev` writable device memory of the
    /// engine's device (or unified/mapped memory) holding `n_tokens * hidden_size`
    /// floats, and must not overlap each other.
    pub unsafe fn forward_device(
        &mut self,
        x_dev: u64,
        out_dev: u64,
        n_tokens: usize,
    ) -> Result<()> {
        if x_dev == 0 || out_dev == 0 {
            return Err(err(Status::NullPointer, "forward_device: x or out is NULL"));
        }
        if !x_dev.is_multiple_of(4) || !out_dev.is_multiple_of(4) {
            return Err(err(
                Status::Misaligned,
                "forward_device: x and out must be 4-byte aligned",
            ));
        }
        self.check_tokens(n_tokens)?;
        let end = self.check_room(n_tokens)?;
        self.dev.check_usable()?;
        self.dev.make_current()?;
        let gen = match self.gen.wrapping_add(1) {
            0 => 1,
            g => g,
        };
        self.gen = gen;
        let mut l = Launches { n: 0, last: "" };
        self.record(0, &l)?;
        self.enqueue(x_dev, n_tokens, Some(gen), out_dev, &mut l)?;
        let mut flag: u32 = 0;
        // SAFETY: copies 4 bytes into a local u32; the stream is synchronised
        // before `flag` is read.
        let r = unsafe {
            cu::cuMemcpyDtoHAsync_v2(
                (&mut flag as *mut u32).cast::<c_void>(),
                self.s.flag.ptr(),
                4,
                self.stream.0,
            )
        };
        self.check_in_call("cuMemcpyDtoHAsync(flag)", r, &l)?;
        self.record(1, &l)?;
        self.finish(&l)?;
        if flag == gen {
            self.last_ms = None;
            return Err(err(
                Status::NonFinite,
                "x: the input holds NaN or infinite values",
            ));
        }
        self.len = end;
        Ok(())
    }

    /// Records timing event `i` (0 before, 1 after) when timing is on.
    fn record(&self, i: usize, l: &Launches) -> Result<()> {
        if let Some(ev) = &self.events {
            let e = if i == 0 { ev.0 } else { ev.1 };
            // SAFETY: the event and stream belong to this engine.
            let r = unsafe { cu::cuEventRecord(e, self.stream.0) };
            self.check_in_call("cuEventRecord", r, l)?;
        }
        Ok(())
    }

    /// The error of a driver call made after this call's launches (`at`): a
    /// sticky error there is a kernel fault of the call, which the driver does
    /// not name.
    fn call_error(&self, at: &str, r: cu::CUresult, l: &Launches) -> mla_core::Error {
        let e = if device::is_sticky(r) && l.n > 0 {
            err(Status::Device, at)
                .s(": ")
                .s(&device::error_name(r))
                .s(": a kernel fault in one of this call's ")
                .n(l.n)
                .s(" kernels (last ")
                .s(l.last)
                .s("); MLA_CUDA_SYNC=1 names it")
        } else {
            device::dev_error(at, r)
        };
        self.dev.note(r, &e);
        e
    }

    /// `check` for driver calls after the call's first launch.
    fn check_in_call(&self, at: &str, r: cu::CUresult, l: &Launches) -> Result<()> {
        if r == cu::CUresult::CUDA_SUCCESS {
            Ok(())
        } else {
            Err(self.call_error(at, r, l))
        }
    }

    /// Waits for the call's work; a failure names what was launched.
    fn finish(&mut self, l: &Launches) -> Result<()> {
        // SAFETY: the stream belongs to this engine.
        let r = unsafe { cu::cuStreamSynchronize(self.stream.0) };
        self.check_in_call("cuStreamSynchronize", r, l)?;
        self.last_ms = None;
        if let Some(ev) = &self.events {
            let mut ms = 0f32;
            // SAFETY: both events were recorded on this engine's stream, which
            // has completed.
            self.dev.check("cuEventElapsedTime", unsafe {
                cu::cuEventElapsedTime(&mut ms, ev.0, ev.1)
            })?;
            self.last_ms = Some(ms);
        }
        Ok(())
    }

    /// One kernel launch of a call; with `sync_after_launch`, waits for it and
    /// names it when it failed.
    fn run<T: Copy>(
        &self,
        l: &mut Launches,
        what: &'static str,
        f: cu::CUfunction,
        grid: [u32; 3],
        smem: usize,
        p: &T,
    ) -> Result<()> {
        let smem = u32_of("shared memory", smem)?;
        let r = device::launch(f, self.stream.0, grid, smem, p);
        if r != cu::CUresult::CUDA_SUCCESS {
            // A sticky error here comes from an earlier kernel of the call.
            let e = if device::is_sticky(r) && l.n > 0 {
                self.call_error("cuLaunchKernel", r, l)
            } else {
                err(Status::Device, what)
                    .s(": launch failed: ")
                    .s(&device::error_name(r))
            };
            self.dev.note(r, &e);
            return Err(e);
        }
        l.n += 1;
        l.last = what;
        if self.opts.sync_after_launch {
            // SAFETY: the stream belongs to this engine.
            let r = unsafe { cu::cuStreamSynchronize(self.stream.0) };
            if r != cu::CUresult::CUDA_SUCCESS {
                let e = err(Status::Device, what)
                    .s(" failed (kernel ")
                    .n(l.n)
                    .s(" of the call): ")
                    .s(&device::error_name(r));
                self.dev.note(r, &e);
                return Err(e);
            }
        }
        Ok(())
    }

    /// A linear-kernel launch.
    fn linear(&self, l: &mut Launches, what: &'static str, dt: DType, p: &LinP) -> Result<()> {
        let rows = p.rows as usize + p.rows2 as usize;
        let grid = [
            u32_of(what, div_ceil(rows, WARPS))?,
            u32_of(what, div_ceil(p.n_tok as usize, TT))?,
            1,
        ];
        self.run(l, what, self.k.linear[dt_index(dt)], grid, 0, p)
    }

    /// Queues the forward pass of `t` tokens at positions `len()..` reading `x`
    /// (device) and writing `out` (device). `gate`: the generation number of a
    /// `forward_device` call (x is checked for NaN/inf on the device and `out` is
    /// written only when it is finite).
    fn enqueue(
        &self,
        x: u64,
        t: usize,
        gate: Option<u32>,
        out: u64,
        l: &mut Launches,
    ) -> Result<()> {
        let dm = &self.dm;
        let (w, s) = (&self.w, &self.s);
        let u = |what: &str, v: usize| u32_of(what, v);
        let t32 = u("n_tokens", t)?;
        let start = u("position", self.len)?;
        let eps = self.cfg.rms_norm_eps;
        let layout = match self.cfg.rope_layout {
            RopeLayout::Interleaved => 0,
            RopeLayout::Half => 1,
        };
        let opt = |b: &Option<DevBuf>| b.as_ref().map_or(0, |b| b.ptr());
        let gen = gate.unwrap_or(0);
        let flag_set = if gate.is_some() { s.flag.ptr() } else { 0 };
        let d = dm.d;
        let lin =
            |wm: &DevMat, bias: u64, x: u64, y: u64, rows: usize, cols: usize| -> Result<LinP> {
                Ok(LinP {
                    x,
                    w: wm.buf.ptr(),
                    bias,
                    y,
                    n_tok: t32,
                    rows: u("rows", rows)?,
                    cols: u("cols", cols)?,
                    x_stride: u("cols", cols)?,
                    y_stride: u("rows", rows)?,
                    grp_rows: u("rows", rows)?,
                    vec: vec_mode(wm.dtype, cols, cols, 0, x),
                    gen,
                    eps,
                    ..LinP::default()
                })
            };

        // 1. The query projection and kv_a_proj_with_mqa (one launch when their
        //    weights share a dtype); x is checked for NaN/inf here (forward_device).
        let (q_first, q_first_bias, q_first_out, q_first_rows) = match (&w.q_a_proj, &w.q_proj) {
            (Some(qa), _) => (qa, opt(&w.q_a_bias), s.qa.ptr(), dm.rq),
            (None, Some(qp)) => (qp, 0, s.q.ptr(), dm.q_width),
            _ => return Err(err(Status::Internal, "query weights missing")),
        };
        let mut p1 = lin(q_first, q_first_bias, x, q_first_out, q_first_rows, d)?;
        p1.flag_set = flag_set;
        let kva = &w.kv_a_proj;
        if kva.dtype == q_first.dtype {
            p1.w2 = kva.buf.ptr();
            p1.bias2 = opt(&w.kv_a_bias);
            p1.y2 = s.kva.ptr();
            p1.rows2 = u("kv_a rows", dm.kv_a_rows)?;
            p1.y2_stride = p1.rows2;
            self.linear(l, "q + kv_a projections [mla_linear]", q_first.dtype, &p1)?;
        } else {
            self.linear(l, "query projection [mla_linear]", q_first.dtype, &p1)?;
            let p2 = lin(kva, opt(&w.kv_a_bias), x, s.kva.ptr(), dm.kv_a_rows, d)?;
            self.linear(l, "kv_a_proj_with_mqa [mla_linear]", kva.dtype, &p2)?;
        }
        if let Some(qb) = &w.q_b_proj {
            let mut p = lin(qb, 0, s.qa.ptr(), s.q.ptr(), dm.q_width, dm.rq)?;
            if let Some(norm) = &w.q_a_norm {
                p.xnorm = norm.ptr();
            }
            self.linear(l, "q_b_proj (+ q_a_layernorm) [mla_linear]", qb.dtype, &p)?;
        }

        // 2. Cache rows (RMSNorm, rope keys) and absorbed queries, one launch.
        let h32 = u("num_heads", dm.h)?;
        let absorb_blocks = div_ceil(dm.r, 256) * dm.h * div_ceil(t, TT);
        let n_rope = if self.cfg.rope_key == RopeKey::PerHead {
            dm.h
        } else {
            1
        };
        let pp = PrepP {
            kva: s.kva.ptr(),
            norm_w: w.kv_a_norm.ptr(),
            cache: self.cache.ptr(),
            cos_t: w.cos.ptr(),
            sin_t: w.sin.ptr(),
            q: s.q.ptr(),
            kvb: w.kv_b_proj.buf.ptr(),
            qt: s.qt.ptr(),
            n_tok: t32,
            kva_stride: u("kv_a rows", dm.kv_a_rows)?,
            cache_row: u("cache row", dm.cache_row)?,
            r: u("kv_lora_rank", dm.r)?,
            p: u("qk_rope_head_dim", dm.p)?,
            n_rope: u("rope keys", n_rope)?,
            start,
            layout,
            n_heads: h32,
            n: u("qk_nope_head_dim", dm.n)?,
            v: u("v_head_dim", dm.v)?,
            qk: u("n + p", dm.qk)?,
            absorb_blocks: u("prep grid", absorb_blocks)?,
            eps,
        };
        let grid = [u("prep grid", absorb_blocks + t)?, 1, 1];
        self.run(
            l,
            "cache append + absorbed queries [mla_prep]",
            self.k.prep,
            grid,
            0,
            &pp,
        )?;

        // 3. Attention over the cache, split over the context.
        let (n_split, split_len) = self.splits_for(self.len, t);
        let ns32 = u("splits", n_split)?;
        let ap = AttnP {
            qt: s.qt.ptr(),
            q: s.q.ptr(),
            cache: self.cache.ptr(),
            part_acc: s.part_acc.ptr(),
            part_ml: s.part_ml.ptr(),
            cos_t: w.cos.ptr(),
            sin_t: w.sin.ptr(),
            n_tok: t32,
            n_heads: h32,
            r: u("kv_lora_rank", dm.r)?,
            p: u("qk_rope_head_dim", dm.p)?,
            qk: u("n + p", dm.qk)?,
            n: u("qk_nope_head_dim", dm.n)?,
            cache_row: u("cache row", dm.cache_row)?,
            per_head: (self.cfg.rope_key == RopeKey::PerHead) as u32,
            start,
            split_len: u("split length", split_len)?,
            n_split: ns32,
            // The tensor-core kernel always computes 16 heads (zero rows past H);
            // `g` sizes its per-head rope-key area: the heads a group can have.
            g: u(
                "heads per block",
                if self.plan.tensor_cores {
                    self.plan.heads_per_block.min(dm.h)
                } else {
                    self.plan.heads_per_block
                },
            )?,
            layout,
            tile_rows: u("tile rows", self.plan.tile_rows)?,
            mode: self.plan.copy as u32,
            scale: self.scale,
            ..AttnP::default()
        };
        let grid = [u("head groups", self.plan.groups)?, ns32, t32];
        self.run(
            l,
            "attention [mla_attn]",
            self.k.attn,
            grid,
            self.plan.smem,
            &ap,
        )?;
        let cp = CombineP {
            part_acc: s.part_acc.ptr(),
            part_ml: s.part_ml.ptr(),
            ctx: s.ctx.ptr(),
            n_tok: t32,
            n_heads: h32,
            r: u("kv_lora_rank", dm.r)?,
            n_split: ns32,
        };
        let grid = [h32, t32, u("combine grid", div_ceil(dm.r, 32))?];
        self.run(
            l,
            "split combine [mla_attn_combine]",
            self.k.combine,
            grid,
            n_split * 4,
            &cp,
        )?;

        // 4. Up-projection o[t][h][..v] = W_UV_h ctx[t][h] (a grouped linear).
        let kvb = &w.kv_b_proj;
        let mut p = lin(kvb, 0, s.ctx.ptr(), s.o.ptr(), dm.o_cols, dm.r)?;
        p.x_stride = u("num_heads * kv_lora_rank", dm.h * dm.r)?;
        p.grp_rows = u("v_head_dim", dm.v)?;
        p.w_grp_stride = u("n + v", dm.n + dm.v)?;
        p.w_row_off = u("qk_nope_head_dim", dm.n)?;
        p.x_grp_off = u("kv_lora_rank", dm.r)?;
        p.vec = vec_mode(kvb.dtype, dm.r, dm.h * dm.r, dm.r, s.ctx.ptr());
        self.linear(l, "kv_b_proj (W_UV) [mla_linear]", kvb.dtype, &p)?;

        // 5. out = o_proj o (+ b), written only for finite input (forward_device).
        let op = &w.o_proj;
        let mut p = lin(op, opt(&w.o_bias), s.o.ptr(), out, d, dm.o_cols)?;
        if gate.is_some() {
            p.flag_gate = s.flag.ptr();
        }
        self.linear(l, "o_proj [mla_linear]", op.dtype, &p)
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
/// its cache is not a ring, and it has no sparse-attention indexer.
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
        _ => None,
    };
    match what {
        Some(w) => Err(err(Status::Unsupported, w).s(": not built in the CUDA engine")),
        None => Ok(()),
    }
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
        let cases: [(&str, Config); 10] = [
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
        ];
        for (name, cfg) in cases {
            let e = check_supported_cuda(&cfg).unwrap_err();
            assert_eq!(e.status(), Status::Unsupported, "{name}");
            assert!(e.message().contains(name), "{name}: {}", e.message());
        }
    }
}
