//! The CUDA engine: the same MLA layer as [`mla_core::Engine`] on an
//! NVIDIA GPU, through the CUDA driver API (`cust`).
//!
//! [`CudaEngine::create`] validates the config and weights exactly like the CPU
//! engine ([`Config::dims`], [`Weights::check`]), then, once: uploads the weights in
//! their own dtype (f32, f16 or bf16; norms and biases widened to f32), the RoPE
//! cos/sin tables for every position (computed on the host by [`mla_core::rope`], so
//! both engines rotate with identical values), allocates the latent cache
//! (`max_seq_len` rows of `r + rope_k` values in `cache_dtype`) and all scratch for
//! `max_tokens_per_call` tokens, creates one stream and loads the kernels from the
//! PTX that build.rs compiled from `kernels/mla.cu`. A forward call allocates
//! nothing on the device.
//!
//! Per call (n tokens at positions `len() ..`): query projections (with the
//! optional query-latent RMSNorm), `kv_a_proj_with_mqa`, one kernel that
//! normalises the latents, rotates the rope keys and appends the rows to the
//! cache, RoPE on `q_pe`, the absorbed queries `q~_h = W_UK_h^T q_nope_h`, one
//! fused attention kernel that reads each cached row once for a whole group of
//! heads (all heads when they fit in shared memory; split over the context,
//! flash-decoding style), a combine kernel, the up-projection `W_UV_h ctx_h` and
//! `o_proj`. Prefill uses the same absorbed path per token. Sums are f32
//! throughout; results agree with the CPU engine to f32 rounding.
//!
//! Errors and state follow the CPU engine: everything is validated before the
//! first launch and a failed call leaves `len()` and the cached rows unchanged;
//! CUDA failures are [`Status::Device`] with the driver's error text.

// crate::Error carries its message inline (no allocation in the core), so every
// Result is large by design.
#![allow(clippy::result_large_err)]

mod device;

/// The `cust` crate this engine is built on (for device buffers in tests and
/// programs that pass device pointers).
pub use cust;

use core::ffi::c_int;

use cust::context::{Context, CurrentContext};
use cust::device::Device;
use cust::module::Module;
use cust::stream::{Stream, StreamFlags};
use cust::sys as cu;
use cust::CudaFlags;

use device::{check, dev_err, launch, Args, DevBuf, THREADS};
use mla_core::config::{Config, Dims, RopeKey, RopeLayout};
use mla_core::dtype::{DType, Elems};
use mla_core::rope::{self, RopeParams};
use mla_core::status::{err, Result, Status};
use mla_core::weights::{Tensor, Weights};

/// The PTX of kernels/mla.cu, built by build.rs and embedded.
/// At run time the environment variable `MLA_CUDA_PTX_FILE=<path>` makes
/// [`CudaEngine::create`] load that PTX file instead (same kernel names and
/// signatures; e.g. one built with `nvcc -ptx` on the target machine).
pub const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/mla.ptx"));

/// Cached rows per shared-memory tile of the attention kernel (`MLA_TILE`).
const TILE: usize = 8;
/// Tokens per warp in the linear / absorb kernels (`MLA_TT`).
const TT: usize = 8;
/// Warps per block (`MLA_WARPS`).
const WARPS: usize = 8;
/// Fewest cached rows a context split gets (more splits only for longer contexts).
const MIN_SPLIT_ROWS: usize = 64;
/// Dynamic shared memory a kernel may use without opting in.
const SMEM_DEFAULT: usize = 48 * 1024;
/// Most context splits per token (bounds the combine kernel's shared memory).
const MAX_SPLITS: usize = 4096;

/// Initialises the driver and returns the number of CUDA devices.
/// Fails with [`Status::Device`] when there is no usable driver (e.g. the stub
/// libcuda of CI) or no device.
pub fn device_count() -> Result<u32> {
    cust::init(CudaFlags::empty()).map_err(|e| dev_err("cuInit", e))?;
    Device::num_devices().map_err(|e| dev_err("cuDeviceGetCount", e))
}

/// Name of device `ordinal` (e.g. "NVIDIA H100 80GB HBM3").
pub fn device_name(ordinal: u32) -> Result<String> {
    cust::init(CudaFlags::empty()).map_err(|e| dev_err("cuInit", e))?;
    let dev = Device::get_device(ordinal).map_err(|e| dev_err("cuDeviceGet", e))?;
    dev.name().map_err(|e| dev_err("cuDeviceGetName", e))
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
        Elems::F16(s) => {
            // SAFETY: half::f16 is a repr(transparent) u16: the slice's memory is
            // s.len() * 2 initialised bytes, borrowed for 'a like `s`.
            unsafe { core::slice::from_raw_parts(s.as_ptr().cast::<u8>(), s.len() * 2) }
        }
        Elems::BF16(s) => {
            // SAFETY: half::bf16 is a repr(transparent) u16 (as above).
            unsafe { core::slice::from_raw_parts(s.as_ptr().cast::<u8>(), s.len() * 2) }
        }
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

/// Device scratch for `max_tokens_per_call` tokens (f32 unless noted).
struct Scratch {
    /// `[T][d]`: input of `forward` (uploaded).
    x: DevBuf,
    /// `[T][d]`: output before it is copied out.
    out: DevBuf,
    /// `[T][r_q]`: query latent.
    qa: DevBuf,
    /// `[T][H][n+p]`: queries (q_pe rotated in place).
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
    /// One u32: non-finite input flag of `forward_device`.
    flag: DevBuf,
}

/// Kernel handles (valid while the module is loaded).
struct Kernels {
    linear: [cu::CUfunction; 3],
    q_absorb: [cu::CUfunction; 3],
    kv_append: cu::CUfunction,
    rmsnorm: cu::CUfunction,
    rope_q: cu::CUfunction,
    attn: cu::CUfunction,
    combine: cu::CUfunction,
    check_finite: cu::CUfunction,
    copy_if_ok: cu::CUfunction,
}

/// Launch geometry of the attention kernel, fixed at creation.
#[derive(Clone, Copy, Debug)]
struct Plan {
    /// Heads per attention block.
    group: usize,
    /// Head groups (`ceil(H / group)`).
    n_groups: usize,
    /// Dynamic shared memory of the attention kernel, bytes.
    attn_smem: usize,
    /// Most context splits per token.
    split_cap: usize,
    /// Partial-result slots (token x split) the scratch holds.
    slots: usize,
}

/// Shared memory (bytes) of the attention kernel for `g` heads per block.
fn attn_smem(dm: &Dims, per_head: bool, g: usize) -> Option<usize> {
    let rg = if per_head { g.checked_mul(dm.p)? } else { dm.p };
    let q = g.checked_mul(dm.r.checked_add(dm.p)?)?;
    let t = TILE.checked_mul(dm.r.checked_add(rg)?)?;
    let rest = g.checked_mul(TILE + 3)?;
    q.checked_add(t)?.checked_add(rest)?.checked_mul(4)
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

/// Shapes of one linear-kernel launch (see `linear_impl` in kernels/mla.cu).
#[derive(Clone, Copy)]
struct Lin {
    rows: usize,
    cols: usize,
    x_stride: usize,
    y_stride: usize,
    grp_rows: usize,
    w_grp_stride: usize,
    w_row_off: usize,
    x_grp_off: usize,
}

impl Lin {
    /// A plain layer `[rows][cols]` over contiguous rows.
    fn plain(rows: usize, cols: usize) -> Lin {
        Lin {
            rows,
            cols,
            x_stride: cols,
            y_stride: rows,
            grp_rows: rows,
            w_grp_stride: 0,
            w_row_off: 0,
            x_grp_off: 0,
        }
    }
}

/// An MLA layer with its latent cache on a CUDA device.
///
/// Use from one thread at a time (it is `Send`, not `Sync`); every call makes the
/// engine's context current on the calling thread.
pub struct CudaEngine {
    cfg: Config,
    dm: Dims,
    len: usize,
    scale: f32,
    plan: Plan,
    device_name: String,
    k: Kernels,
    // Device memory and handles: dropped in this order, the context last.
    w: DevWeights,
    s: Scratch,
    /// `[max_seq][r + rope_k]` in `cache_dtype`.
    cache: DevBuf,
    stream: Stream,
    _module: Module,
    ctx: Context,
}

// SAFETY: the raw handles (CUfunction) belong to the module owned by the engine
// and stay valid while it lives; the CUDA driver API may be called from any
// thread once the context is current, which every method that touches the
// device ensures first. The engine has no thread-affine state.
unsafe impl Send for CudaEngine {}

impl CudaEngine {
    /// Builds an engine on device `device_ordinal`.
    ///
    /// Errors: `InvalidConfig`, `WeightShape` (as [`mla_core::Engine::new`]);
    /// `Unsupported` for dimensions the kernels cannot take (a size above
    /// 2^32, `kv_lora_rank > 8192`, `max_tokens_per_call` or `num_heads` above
    /// 65535, shared memory beyond the device's limit); `Device` when the driver,
    /// the device, an allocation, an upload or the module load fails.
    pub fn create(cfg: &Config, weights: &Weights, device_ordinal: u32) -> Result<CudaEngine> {
        let dm = weights.check(cfg)?;
        cfg.check_supported()?;
        let per_head = cfg.rope_key == RopeKey::PerHead;
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
        ] {
            u32_of(what, v)?;
        }
        if dm.max_tok > 65535 || dm.h > 65535 {
            return Err(err(
                Status::Unsupported,
                "max_tokens_per_call and num_heads must be <= 65535 for the CUDA engine",
            ));
        }
        let (gmax, variant) = match dm.r {
            0..=512 => (16, "g16"),
            513..=2048 => (4, "g4"),
            2049..=8192 => (1, "g1"),
            _ => {
                return Err(err(Status::Unsupported, "kv_lora_rank: ")
                    .n(dm.r)
                    .s(" is above the CUDA kernels' 8192"))
            }
        };

        // Device, context, stream.
        cust::init(CudaFlags::empty()).map_err(|e| dev_err("cuInit", e))?;
        let dev = Device::get_device(device_ordinal).map_err(|e| dev_err("cuDeviceGet", e))?;
        let ctx = Context::new(dev).map_err(|e| dev_err("cuDevicePrimaryCtxRetain", e))?;
        CurrentContext::set_current(&ctx).map_err(|e| dev_err("cuCtxSetCurrent", e))?;
        let device_name = dev.name().unwrap_or_else(|_| "unknown device".to_string());
        let attr = |a: cu::CUdevice_attribute, what: &str| -> Result<usize> {
            let mut v: c_int = 0;
            // SAFETY: writes one int through a pointer to a local; `dev` is valid.
            check(what, unsafe {
                cu::cuDeviceGetAttribute(&mut v, a, dev.as_raw())
            })?;
            Ok(usize::try_from(v).unwrap_or(0))
        };
        let sm_count = attr(
            cu::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            "cuDeviceGetAttribute(MULTIPROCESSOR_COUNT)",
        )?
        .max(1);
        let smem_optin = attr(
            cu::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
            "cuDeviceGetAttribute(MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)",
        )?
        .max(SMEM_DEFAULT);

        // Heads per attention block: as many as fit (all, for V2-Lite and the tutorial).
        let mut group = gmax.min(dm.h);
        let smem = loop {
            match attn_smem(&dm, per_head, group) {
                Some(b) if b <= smem_optin => break b,
                _ if group > 1 => group -= 1,
                _ => {
                    return Err(err(Status::Unsupported, "attention tile needs ")
                        .n(attn_smem(&dm, per_head, 1).unwrap_or(usize::MAX))
                        .s(" bytes of shared memory, the device allows ")
                        .n(smem_optin))
                }
            }
        };
        let n_groups = div_ceil(dm.h, group);
        let split_cap = (4 * sm_count / n_groups).clamp(1, MAX_SPLITS);
        let plan = Plan {
            group,
            n_groups,
            attn_smem: smem,
            split_cap,
            slots: dm.max_tok.max(split_cap),
        };

        // Kernels.
        let ptx_file;
        let ptx = match std::env::var_os("MLA_CUDA_PTX_FILE") {
            Some(path) => {
                ptx_file = std::fs::read_to_string(&path).map_err(|e| {
                    err(Status::Device, "MLA_CUDA_PTX_FILE: cannot read ")
                        .s(&path.to_string_lossy())
                        .s(": ")
                        .s(&e.to_string())
                })?;
                ptx_file.as_str()
            }
            None => PTX,
        };
        let module =
            Module::from_ptx(ptx, &[]).map_err(|e| dev_err("loading the PTX module", e))?;
        let func = |name: &str| -> Result<cu::CUfunction> {
            module
                .get_function(name)
                .map(|f| f.to_raw())
                .map_err(|e| dev_err(name, e))
        };
        let by_dtype = |base: &str| -> Result<[cu::CUfunction; 3]> {
            Ok([
                func(&format!("{base}_f32"))?,
                func(&format!("{base}_f16"))?,
                func(&format!("{base}_bf16"))?,
            ])
        };
        let cache_sfx = cfg.cache_dtype.name();
        let k = Kernels {
            linear: by_dtype("mla_linear")?,
            q_absorb: by_dtype("mla_q_absorb")?,
            kv_append: func(&format!("mla_kv_append_{cache_sfx}"))?,
            rmsnorm: func("mla_rmsnorm")?,
            rope_q: func("mla_rope_q")?,
            attn: func(&format!("mla_attn_{cache_sfx}_{variant}"))?,
            combine: func("mla_attn_combine")?,
            check_finite: func("mla_check_finite")?,
            copy_if_ok: func("mla_copy_if_ok")?,
        };
        if smem > SMEM_DEFAULT {
            // SAFETY: `k.attn` is a function of the loaded module.
            check(
                "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)",
                unsafe {
                    cu::cuFuncSetAttribute(
                        k.attn,
                        cu::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                        c_int::try_from(smem).unwrap_or(c_int::MAX),
                    )
                },
            )?;
        }
        let stream =
            Stream::new(StreamFlags::DEFAULT, None).map_err(|e| dev_err("cuStreamCreate", e))?;

        // Weights and RoPE tables.
        let w = weights;
        let opt_mat =
            |name: &str, t: Option<&Tensor>| t.map(|t| DevMat::upload(name, t)).transpose();
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
            kv_a_proj: DevMat::upload("kv_a_proj_with_mqa", &w.kv_a_proj_with_mqa)?,
            kv_b_proj: DevMat::upload("kv_b_proj", &w.kv_b_proj)?,
            o_proj: DevMat::upload("o_proj", &w.o_proj)?,
            q_a_norm: upload_opt_vec("q_a_layernorm", w.q_a_layernorm.as_ref())?,
            kv_a_norm: upload_vec("kv_a_layernorm", &w.kv_a_layernorm)?,
            q_a_bias: upload_opt_vec("q_a_proj_bias", w.q_a_proj_bias.as_ref())?,
            kv_a_bias: upload_opt_vec("kv_a_proj_bias", w.kv_a_proj_bias.as_ref())?,
            o_bias: upload_opt_vec("o_proj_bias", w.o_proj_bias.as_ref())?,
            cos: DevBuf::from_f32("rope cos table", &cos)?,
            sin: DevBuf::from_f32("rope sin table", &sin)?,
        };

        // Cache and scratch.
        let f = |what: &str, elems: &[usize]| -> Result<DevBuf> {
            let mut n: usize = 4;
            for &e in elems {
                n = n
                    .checked_mul(e)
                    .ok_or_else(|| err(Status::InvalidConfig, what).s(": size overflows"))?;
            }
            DevBuf::zeroed(what, n)
        };
        let cache_bytes = dm
            .max_seq
            .checked_mul(dm.cache_row)
            .and_then(|n| n.checked_mul(cfg.cache_dtype.size()))
            .ok_or_else(|| err(Status::InvalidConfig, "cache size overflows"))?;
        let cache = DevBuf::zeroed("latent cache", cache_bytes)?;
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
            part_acc: f("part_acc", &[plan.slots, dm.h, dm.r])?,
            part_ml: f("part_ml", &[plan.slots, dm.h, 2])?,
            flag: f("flag", &[1])?,
        };

        Ok(CudaEngine {
            cfg: *cfg,
            dm,
            len: 0,
            scale: rope::softmax_scale(cfg),
            plan,
            device_name,
            k,
            w: dw,
            s,
            cache,
            stream,
            _module: module,
            ctx,
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

    /// The device's name.
    pub fn device_name(&self) -> &str {
        &self.device_name
    }

    /// Heads per attention block and number of head groups (each cached row is
    /// read from memory once per group; one group when all heads fit).
    pub fn head_groups(&self) -> (usize, usize) {
        (self.plan.group, self.plan.n_groups)
    }

    /// Device memory held by the engine, in bytes (weights, tables, cache, scratch).
    pub fn device_bytes(&self) -> usize {
        let w = &self.w;
        let mats = [&w.q_proj, &w.q_a_proj, &w.q_b_proj]
            .iter()
            .map(|m| m.as_ref().map_or(0, |m| m.buf.len()))
            .sum::<usize>()
            + w.kv_a_proj.buf.len()
            + w.kv_b_proj.buf.len()
            + w.o_proj.buf.len();
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
        mats + vecs + scratch + self.cache.len()
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

    /// For benchmarks: appends `n` all-zero cache rows without running the model
    /// (so a decode step can be timed at a long context without a long prefill).
    /// `CacheFull` if that passes `max_seq_len`.
    pub fn append_zero_rows(&mut self, n: usize) -> Result<()> {
        let end = self.check_room(n)?;
        let row_bytes = self.dm.cache_row * self.cfg.cache_dtype.size();
        let off = (self.len * row_bytes) as u64;
        self.make_current()?;
        // SAFETY: rows len .. end lie inside the cache allocation (end <= max_seq).
        check("cuMemsetD8Async", unsafe {
            cu::cuMemsetD8Async(
                self.cache.ptr() + off,
                0,
                n * row_bytes,
                self.stream.as_inner(),
            )
        })?;
        self.sync()?;
        self.len = end;
        Ok(())
    }

    fn make_current(&self) -> Result<()> {
        CurrentContext::set_current(&self.ctx).map_err(|e| dev_err("cuCtxSetCurrent", e))
    }

    fn sync(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| dev_err("cuStreamSynchronize", e))
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
        self.make_current()?;
        let stream = self.stream.as_inner();
        let bytes = core::mem::size_of_val(x);
        // SAFETY: `x` is `bytes` readable host bytes and the scratch `x` holds
        // max_tok * d floats >= t * d; the copy is complete when the stream syncs
        // below, before `x` can be released by the caller.
        check("cuMemcpyHtoDAsync(x)", unsafe {
            cu::cuMemcpyHtoDAsync_v2(self.s.x.ptr(), x.as_ptr().cast(), bytes, stream)
        })?;
        self.enqueue(self.s.x.ptr(), t)?;
        // SAFETY: `out` is `bytes` writable host bytes (same length as x), the
        // scratch output holds them; the stream is synchronised before return.
        check("cuMemcpyDtoHAsync(out)", unsafe {
            cu::cuMemcpyDtoHAsync_v2(out.as_mut_ptr().cast(), self.s.out.ptr(), bytes, stream)
        })?;
        self.sync()?;
        self.len = end;
        Ok(())
    }

    /// [`CudaEngine::forward`] with the input and output in device memory:
    /// `x_dev` and `out_dev` are device addresses of `n_tokens * hidden_size`
    /// floats each (row-major `[n_tokens][hidden_size]`). The call is synchronous:
    /// when it returns, `out_dev` is written (on success only). Work the caller
    /// queued on other streams that produces `x_dev` must be complete (the
    /// engine's stream is ordered after the legacy default stream only).
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
        self.check_tokens(n_tokens)?;
        let end = self.check_room(n_tokens)?;
        self.make_current()?;
        let stream = self.stream.as_inner();
        let n = n_tokens * self.dm.d; // fits u32: checked at creation
        let n32 = u32_of("n_tokens * hidden_size", n)?;
        let flag = self.s.flag.ptr();
        // SAFETY: `flag` is this engine's 4-byte allocation.
        check("cuMemsetD32Async(flag)", unsafe {
            cu::cuMemsetD32Async(flag, 0, 1, stream)
        })?;
        let blocks = div_ceil(n, THREADS as usize).clamp(1, 1024) as u32;
        launch(
            "mla_check_finite",
            self.k.check_finite,
            stream,
            [blocks, 1, 1],
            0,
            Args::new().p(x_dev).u(n32).p(flag),
        )?;
        self.enqueue(x_dev, n_tokens)?;
        launch(
            "mla_copy_if_ok",
            self.k.copy_if_ok,
            stream,
            [blocks, 1, 1],
            0,
            Args::new().p(self.s.out.ptr()).p(out_dev).u(n32).p(flag),
        )?;
        let mut bad: u32 = 0;
        // SAFETY: copies 4 bytes into a local u32; the stream is synchronised
        // before `bad` is read.
        check("cuMemcpyDtoHAsync(flag)", unsafe {
            cu::cuMemcpyDtoHAsync_v2((&mut bad as *mut u32).cast(), flag, 4, stream)
        })?;
        self.sync()?;
        if bad != 0 {
            return Err(err(
                Status::NonFinite,
                "x: the input holds NaN or infinite values",
            ));
        }
        self.len = end;
        Ok(())
    }

    /// A linear-kernel launch: `y = W x (+ bias)` for `t` tokens.
    fn linear(
        &self,
        what: &str,
        m: &DevMat,
        bias: u64,
        (x, y): (u64, u64),
        t: usize,
        l: Lin,
    ) -> Result<()> {
        let f = match m.dtype {
            DType::F32 => self.k.linear[0],
            DType::F16 => self.k.linear[1],
            DType::BF16 => self.k.linear[2],
        };
        // Four-wide loads need 16-byte aligned x rows (x may be the caller's
        // device pointer) and weight rows (allocations are 256-byte aligned).
        let vec4 = l.cols.is_multiple_of(4)
            && l.x_stride.is_multiple_of(4)
            && l.x_grp_off.is_multiple_of(4)
            && x.is_multiple_of(16);
        let grid = [
            u32_of(what, div_ceil(l.rows, WARPS))?,
            u32_of(what, div_ceil(t, TT))?,
            1,
        ];
        let args = Args::new()
            .p(x)
            .p(m.buf.ptr())
            .p(bias)
            .p(y)
            .u(u32_of(what, t)?)
            .u(u32_of(what, l.rows)?)
            .u(u32_of(what, l.cols)?)
            .u(u32_of(what, l.x_stride)?)
            .u(u32_of(what, l.y_stride)?)
            .u(u32_of(what, l.grp_rows)?)
            .u(u32_of(what, l.w_grp_stride)?)
            .u(u32_of(what, l.w_row_off)?)
            .u(u32_of(what, l.x_grp_off)?)
            .u(vec4 as u32);
        launch(what, f, self.stream.as_inner(), grid, 0, args)
    }

    /// Queues the forward pass of `t` tokens at positions `len()..` reading `x`
    /// (device) and leaving the output in the scratch `out`.
    fn enqueue(&self, x: u64, t: usize) -> Result<()> {
        let dm = &self.dm;
        let (w, s) = (&self.w, &self.s);
        let stream = self.stream.as_inner();
        let u = |what: &str, v: usize| u32_of(what, v);
        let t32 = u("n_tokens", t)?;
        let start = u("position", self.len)?;
        let eps = self.cfg.rms_norm_eps;
        let layout = match self.cfg.rope_layout {
            RopeLayout::Interleaved => 0,
            RopeLayout::Half => 1,
        };
        let opt = |b: &Option<DevBuf>| b.as_ref().map_or(0, |b| b.ptr());

        // 1. Queries q[T][H][n+p].
        match (&w.q_a_proj, &w.q_b_proj, &w.q_proj) {
            (Some(qa), Some(qb), _) => {
                let l = Lin::plain(dm.rq, dm.d);
                self.linear("q_a_proj", qa, opt(&w.q_a_bias), (x, s.qa.ptr()), t, l)?;
                if let Some(norm) = &w.q_a_norm {
                    let args = Args::new()
                        .p(s.qa.ptr())
                        .p(norm.ptr())
                        .u(t32)
                        .u(u("q_lora_rank", dm.rq)?)
                        .u(u("q_lora_rank", dm.rq)?)
                        .f(eps);
                    launch(
                        "mla_rmsnorm(q)",
                        self.k.rmsnorm,
                        stream,
                        [t32, 1, 1],
                        0,
                        args,
                    )?;
                }
                self.linear(
                    "q_b_proj",
                    qb,
                    0,
                    (s.qa.ptr(), s.q.ptr()),
                    t,
                    Lin::plain(dm.q_width, dm.rq),
                )?;
            }
            (_, _, Some(qp)) => {
                self.linear(
                    "q_proj",
                    qp,
                    0,
                    (x, s.q.ptr()),
                    t,
                    Lin::plain(dm.q_width, dm.d),
                )?;
            }
            _ => return Err(err(Status::Internal, "query weights missing")),
        }

        // 2. kva[T][r + rope_k] = kv_a_proj_with_mqa x (+ b).
        self.linear(
            "kv_a_proj_with_mqa",
            &w.kv_a_proj,
            opt(&w.kv_a_bias),
            (x, s.kva.ptr()),
            t,
            Lin::plain(dm.kv_a_rows, dm.d),
        )?;

        // 3. Normalise the latents, rotate the rope keys, append to the cache.
        let n_rope = if self.cfg.rope_key == RopeKey::PerHead {
            dm.h
        } else {
            1
        };
        let args = Args::new()
            .p(s.kva.ptr())
            .u(u("kv_a rows", dm.kv_a_rows)?)
            .p(w.kv_a_norm.ptr())
            .p(self.cache.ptr())
            .u(u("cache row", dm.cache_row)?)
            .u(u("kv_lora_rank", dm.r)?)
            .u(u("qk_rope_head_dim", dm.p)?)
            .u(u("rope keys", n_rope)?)
            .p(w.cos.ptr())
            .p(w.sin.ptr())
            .u(start)
            .u(t32)
            .f(eps)
            .u(layout);
        launch(
            "mla_kv_append",
            self.k.kv_append,
            stream,
            [t32, 1, 1],
            0,
            args,
        )?;

        // 4. RoPE on q_pe.
        let h32 = u("num_heads", dm.h)?;
        let args = Args::new()
            .p(s.q.ptr())
            .u(t32)
            .u(h32)
            .u(u("n + p", dm.qk)?)
            .u(u("qk_nope_head_dim", dm.n)?)
            .u(u("qk_rope_head_dim", dm.p)?)
            .p(w.cos.ptr())
            .p(w.sin.ptr())
            .u(start)
            .u(layout);
        launch("mla_rope_q", self.k.rope_q, stream, [t32, 1, 1], 0, args)?;

        // 5. Absorbed queries qt[T][H][r].
        let kvb = &w.kv_b_proj;
        let fa = match kvb.dtype {
            DType::F32 => self.k.q_absorb[0],
            DType::F16 => self.k.q_absorb[1],
            DType::BF16 => self.k.q_absorb[2],
        };
        let args = Args::new()
            .p(s.q.ptr())
            .p(kvb.buf.ptr())
            .p(s.qt.ptr())
            .u(t32)
            .u(h32)
            .u(u("qk_nope_head_dim", dm.n)?)
            .u(u("v_head_dim", dm.v)?)
            .u(u("kv_lora_rank", dm.r)?)
            .u(u("n + p", dm.qk)?);
        let grid = [
            u("absorb grid", div_ceil(dm.r, THREADS as usize))?,
            h32,
            u("absorb grid", div_ceil(t, TT))?,
        ];
        launch("mla_q_absorb", fa, stream, grid, 0, args)?;

        // 6. Fused attention over the cache, split over the context.
        let lk = self.len + t;
        let per_tok = (self.plan.slots / t).max(1);
        let mut n_split = div_ceil(lk, MIN_SPLIT_ROWS).clamp(1, self.plan.split_cap.min(per_tok));
        let split_len = div_ceil(div_ceil(lk, n_split), TILE) * TILE;
        n_split = div_ceil(lk, split_len);
        let ns32 = u("splits", n_split)?;
        let per_head = (self.cfg.rope_key == RopeKey::PerHead) as u32;
        let args = Args::new()
            .p(s.qt.ptr())
            .p(s.q.ptr())
            .p(self.cache.ptr())
            .p(s.part_acc.ptr())
            .p(s.part_ml.ptr())
            .u(t32)
            .u(h32)
            .u(u("kv_lora_rank", dm.r)?)
            .u(u("qk_rope_head_dim", dm.p)?)
            .u(u("n + p", dm.qk)?)
            .u(u("qk_nope_head_dim", dm.n)?)
            .u(u("cache row", dm.cache_row)?)
            .u(per_head)
            .u(start)
            .u(u("split length", split_len)?)
            .u(ns32)
            .u(u("head group", self.plan.group)?)
            .f(self.scale);
        let grid = [u("head groups", self.plan.n_groups)?, ns32, t32];
        let smem = u("shared memory", self.plan.attn_smem)?;
        launch("mla_attn", self.k.attn, stream, grid, smem, args)?;
        let args = Args::new()
            .p(s.part_acc.ptr())
            .p(s.part_ml.ptr())
            .p(s.ctx.ptr())
            .u(t32)
            .u(h32)
            .u(u("kv_lora_rank", dm.r)?)
            .u(ns32);
        let grid = [h32, t32, u("combine grid", div_ceil(dm.r, 32))?];
        launch(
            "mla_attn_combine",
            self.k.combine,
            stream,
            grid,
            ns32 * 4,
            args,
        )?;

        // 7. Up-projection o[t][h][..v] = W_UV_h ctx[t][h] (grouped linear over heads).
        self.linear(
            "kv_b_proj (W_UV)",
            kvb,
            0,
            (s.ctx.ptr(), s.o.ptr()),
            t,
            Lin {
                rows: dm.o_cols,
                cols: dm.r,
                x_stride: dm.h * dm.r,
                y_stride: dm.o_cols,
                grp_rows: dm.v,
                w_grp_stride: dm.n + dm.v,
                w_row_off: dm.n,
                x_grp_off: dm.r,
            },
        )?;

        // 8. out = o_proj o (+ b).
        self.linear(
            "o_proj",
            &w.o_proj,
            opt(&w.o_bias),
            (s.o.ptr(), s.out.ptr()),
            t,
            Lin::plain(dm.d, dm.o_cols),
        )
    }
}

impl Drop for CudaEngine {
    fn drop(&mut self) {
        // The buffers, stream and module are released after this, in field order,
        // and need the context current on this thread. Errors cannot be reported.
        let _ = self.make_current();
        let _ = self.sync();
    }
}
