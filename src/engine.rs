//! Engine entry points: `mla_engine_init`, `mla_forward`, `mla_forward_batch`, `mla_len`,
//! `mla_truncate`, `mla_reset`, `mla_engine_set_parallel`, `mla_last_error`.
//!
//! The engine handle (`mla_engine`) lives at the start of the caller's memory
//! (64-byte aligned), followed by the engine's own memory (latent cache, RoPE
//! table, scratch): `mla_engine_size` is the sum of both. Lifetimes are erased
//! to `'static` here: that the weights outlive the engine, and that `mem` is not
//! touched while the engine is in use, is the C caller's contract.
//!
//! Every function hands its pointers to the boundary, which checks them, runs
//! the call under the panic guard, records a failure as the engine's last error
//! (or the thread's, when there is no engine) and leaves the engine as it was.
//! The README's "C API" section, "Rules", states the conventions for callers.
#![allow(non_camel_case_types)]

use core::ffi::{c_char, c_void};
use core::mem::{align_of, size_of};
use core::ptr;

use mla_core::config::Config;
use mla_core::engine::Engine;
use mla_core::parallel::HostParallelFor;
use mla_core::status::{err, Result, Status};
use mla_core::weights::Weights;

use crate::boundary::{self, CEngine, Handle, Slot};
use crate::types::{mla_config, mla_status, mla_weights, read_config};

/// An engine: opaque, placed by `mla_engine_init` at the start of the caller's
/// memory. Use one engine from one thread at a time; there is nothing to free.
pub struct mla_engine(Handle<Engine<'static, 'static>>);

impl CEngine for mla_engine {
    type Engine = Engine<'static, 'static>;
    const SLOT: Slot = Slot::Cpu;
    const RECORD_NULL_ENGINE: bool = true;
    fn handle(&self) -> &Handle<Self::Engine> {
        &self.0
    }
    fn handle_mut(&mut self) -> &mut Handle<Self::Engine> {
        &mut self.0
    }
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

/// Handle bytes plus the core engine's memory for `cfg` (`mla_engine_size`).
pub(crate) fn engine_size(cfg: &Config) -> Result<usize> {
    Engine::memory_bytes(cfg)?
        .checked_add(HANDLE_BYTES)
        .filter(|&b| b <= isize::MAX as usize)
        .ok_or_else(|| {
            err(
                Status::InvalidConfig,
                "max_seq_len, max_tokens_per_call: engine size overflows",
            )
        })
}

/// Places an engine in `mem` (`mem_len` >= `mla_engine_size`, 64-byte aligned) and
/// writes its handle (== `mem`) to `*out`. The weights are borrowed: their data
/// must stay valid and unchanged while the engine is used; `*w` itself may go.
/// Nothing needs freeing: stop using the engine, then reuse or free `mem`.
/// Errors: MLA_ERR_NULL_POINTER, MLA_ERR_ABI_MISMATCH, MLA_ERR_INVALID_CONFIG,
/// MLA_ERR_WEIGHT_SHAPE, MLA_ERR_WEIGHT_DTYPE, MLA_ERR_MISALIGNED,
/// MLA_ERR_BUFFER_TOO_SMALL, MLA_ERR_UNSUPPORTED (a mechanism not built, e.g.
/// pooled indexer keys; `kv_shared` and `dsa` shared layers, which read another
/// layer's cache or top-k, not wired through this API yet) (`*out` is written
/// only on success).
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
    let null = "mla_engine_init: NULL argument";
    // SAFETY: every pointer is NULL or what its type says (C contract).
    unsafe {
        boundary::produce(Slot::Cpu, "mla_engine_init", out, null, || {
            if w.is_null() || mem.is_null() {
                return Err(err(Status::NullPointer, null));
            }
            let cfg = read_config(c)?;
            let bytes = engine_size(&cfg)?;
            // 'static stands for "as long as the caller keeps the tensor data"
            // (C contract).
            let cw = boundary::read(w).ok_or_else(|| err(Status::NullPointer, null))?;
            let weights: Weights<'static> = cw.to_weights()?;
            weights.check(&cfg)?;
            if !(mem as usize).is_multiple_of(MEM_ALIGN) {
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
            place(&cfg, &weights, mem.cast::<u8>(), bytes)
        })
    }
}

/// Builds the engine in the caller's `bytes` bytes at `base` (checked: not NULL,
/// 64-byte aligned, `bytes` = `engine_size(cfg)` <= `mem_len`) and writes the
/// handle at `base`.
///
/// # Safety
/// `base` holds `bytes` writable bytes, untouched by others while the engine lives.
unsafe fn place(
    cfg: &Config,
    weights: &Weights<'static>,
    base: *mut u8,
    bytes: usize,
) -> Result<*mut mla_engine> {
    let internal = || {
        err(
            Status::Internal,
            "mla_engine_init: memory plan inconsistent",
        )
    };
    let engine_bytes = bytes.checked_sub(HANDLE_BYTES).ok_or_else(internal)?;
    // SAFETY: HANDLE_BYTES <= bytes, so the engine's part starts inside `mem`.
    let region = unsafe { base.add(HANDLE_BYTES) };
    // SAFETY: the engine's part, after the handle (so the two never overlap), is
    // writable and ours while the engine lives ('static: the caller keeps `mem`).
    let region = unsafe { boundary::slice_mut(region, engine_bytes) }.ok_or_else(internal)?;
    if cfg.kv_shared {
        // The core runs it (Engine::forward_shared, the producer passed per
        // call); this handle does not keep a producer yet.
        return Err(err(
            Status::Unsupported,
            "kv_shared: KV sharing is not wired through the C API yet",
        ));
    }
    if cfg.dsa == mla_core::config::Dsa::Shared {
        // The core runs it (Engine::forward_shared_topk, the producer passed per
        // call); this handle does not keep a producer yet.
        return Err(err(
            Status::Unsupported,
            "dsa shared: a layer that reuses another layer's top-k is not wired through the C API yet",
        ));
    }
    let engine = Engine::new(cfg, weights, region)?;
    let handle = base.cast::<mla_engine>();
    // SAFETY: `base` is 64-aligned (>= align_of::<mla_engine>()) and its first
    // HANDLE_BYTES bytes belong to the handle.
    unsafe { ptr::write(handle, mla_engine(Handle::new(engine))) };
    Ok(handle)
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
    // SAFETY: `e`, `x` and `out` as this function's contract says.
    unsafe {
        boundary::on_engine(e, "mla_forward", |engine| {
            let (xs, os) = boundary::forward_io("mla_forward", engine.config(), x, n_tokens, out)?;
            engine.forward(xs, os)
        })
    }
}

/// One decode step for each of `n` sequences at once: row `i` of `x`
/// (`[n][hidden_size]` floats) is appended to `engines[i]` at `mla_len(engines[i])`,
/// attends over that engine's cache only, and its output goes to row `i` of
/// `out`. The engines must share one config and the same weight data (as from
/// one `mla_weights`); every weight matrix is read once for all `n` tokens.
/// Scratch and the parallel-for are `engines[0]`'s: `n <= max_tokens_per_call`.
/// Results equal `n` separate `mla_forward` calls on the absorbed path, up to
/// f32 rounding (bitwise for `n` < 16, see docs/serving.md).
/// All or nothing: on an error no engine changes and `out` is unwritten; the
/// text goes to `mla_last_error(engines[0])` (when that is an engine) and to
/// `mla_last_error(NULL)`. Errors: MLA_ERR_NULL_POINTER (engines, an
/// engines[i], x or out NULL), MLA_ERR_MISALIGNED, MLA_ERR_INVALID_ARGUMENT
/// (n 0 or > max_tokens_per_call, an engine twice, other weights/config,
/// overlap), MLA_ERR_CACHE_FULL (any engine full), MLA_ERR_NON_FINITE.
///
/// # Safety
/// `engines` is NULL or holds `n` pointers, each NULL or an engine from
/// `mla_engine_init`, none used by another thread during the call; `x` and
/// `out` are NULL or hold `n * hidden_size` floats.
#[no_mangle]
pub unsafe extern "C" fn mla_forward_batch(
    engines: *const *mut mla_engine,
    n: u32,
    x: *const f32,
    out: *mut f32,
) -> mla_status {
    let what = "mla_forward_batch";
    let r = boundary::guard(what, || {
        // SAFETY: `engines` holds `n` pointers (contract).
        let mut batch = unsafe { boundary::cpu_batch(what, engines, n) }?;
        let cfg = *mla_core::engine::EngineBatch::engine(&batch, 0)
            .ok_or_else(|| err(Status::Internal, what).s(": engines[0] went away"))?
            .config();
        // SAFETY: `x` / `out` hold n * hidden_size floats (contract); the
        // check of n against max_tokens_per_call is forward_io's.
        let (xs, os) = unsafe { boundary::forward_io(what, &cfg, x, n, out) }?;
        mla_core::engine::forward_batch_in(&mut batch, xs, os)
    });
    let first = if engines.is_null() || n == 0 || !boundary::aligned(engines) {
        ptr::null_mut()
    } else {
        // SAFETY: `engines` holds at least one pointer (n > 0, contract), aligned.
        unsafe { *engines }
    };
    // SAFETY: `first` is NULL or engines[0] (contract: a live handle or NULL).
    unsafe { boundary::record_batch(first, &r) };
    boundary::status(&r)
}

/// Tokens in the cache (the next position); 0 for NULL.
///
/// # Safety
/// `e` is NULL or an engine from `mla_engine_init`.
#[no_mangle]
pub unsafe extern "C" fn mla_len(e: *const mla_engine) -> u32 {
    // SAFETY: NULL or a handle from mla_engine_init (C contract).
    match unsafe { boundary::engine_ref(e) } {
        // len <= max_seq_len, a u32.
        Some(engine) => u32::try_from(engine.len()).unwrap_or(u32::MAX),
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
    unsafe { boundary::on_engine(e, "mla_truncate", |engine| engine.truncate(len as usize)) }
}

/// Empties the cache (as `mla_truncate(e, 0)`). NULL: does nothing.
///
/// # Safety
/// `e` is NULL or an engine from `mla_engine_init`, not used by another thread during the
/// call.
#[no_mangle]
pub unsafe extern "C" fn mla_reset(e: *mut mla_engine) {
    // NULL is a documented no-op: nothing to run, nothing to record.
    if e.is_null() {
        return;
    }
    // SAFETY: this function's contract. The status can only be MLA_OK here.
    let _ = unsafe {
        boundary::on_engine(e, "mla_reset", |engine| {
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
    // SAFETY: this function's contract; for HostParallelFor::new, the function
    // behaves as documented and host_ctx stays valid (also the contract).
    unsafe {
        boundary::on_engine(e, "mla_engine_set_parallel", |engine| {
            engine.set_parallel_host(parallel_for.map(|f| HostParallelFor::new(f, host_ctx)));
            Ok(())
        })
    }
}

/// Shared body of `mla_engine_share_cache` and `mla_engine_share_topk`.
///
/// # Safety
/// `consumer` as in [`boundary::on_engine`]; `producer` is NULL, misaligned or a
/// live engine not written by another thread during the call.
unsafe fn share(
    consumer: *mut mla_engine,
    producer: *const mla_engine,
    what: &str,
    body: fn(&mut Engine<'static, 'static>, &Engine<'static, 'static>) -> Result<()>,
) -> mla_status {
    // SAFETY: this function's contract.
    unsafe {
        boundary::on_engine(consumer, what, |engine| {
            // Compared as addresses before any reference to the producer exists:
            // the same engine would be borrowed mutably and shared at once.
            if ptr::eq(consumer.cast_const(), producer) {
                return Err(err(Status::InvalidArgument, what)
                    .s(": consumer and producer are the same engine"));
            }
            let p = boundary::engine_ref(producer).ok_or_else(|| {
                err(Status::NullPointer, what).s(": producer is NULL or misaligned")
            })?;
            body(engine, p)
        })
    }
}

/// KV sharing (ABI 2; DESIGN: mistral_large4's `kv_source_layers`): the consumer
/// (a layer with `kv_shared` = 1) attends over the producer's latent cache and
/// writes none of its own. Call once after init; then, for each call, run the
/// producer first on the same tokens. Errors leave both engines unchanged:
/// MLA_ERR_NULL_POINTER, MLA_ERR_MISALIGNED, MLA_ERR_INVALID_ARGUMENT (the same
/// engine twice), MLA_ERR_UNSUPPORTED (this build: KV sharing is not built yet,
/// and a `kv_shared` config is refused by `mla_engine_init`).
///
/// # Safety
/// `consumer` and `producer` are NULL or engines from `mla_engine_init`, not used by
/// another thread during the call.
#[no_mangle]
pub unsafe extern "C" fn mla_engine_share_cache(
    consumer: *mut mla_engine,
    producer: *const mla_engine,
) -> mla_status {
    // SAFETY: this function's contract.
    unsafe {
        share(consumer, producer, "mla_engine_share_cache", |c, p| {
            c.share_cache(p)
        })
    }
}

/// Top-k sharing (ABI 2): the consumer (a layer with `dsa` = MLA_DSA_SHARED) uses
/// the producer's last sparse-attention selection for the same positions. Call
/// once after init; then run the producer first on the same tokens. Errors as
/// `mla_engine_share_cache` (MLA_ERR_UNSUPPORTED in this build).
///
/// # Safety
/// As `mla_engine_share_cache`.
#[no_mangle]
pub unsafe extern "C" fn mla_engine_share_topk(
    consumer: *mut mla_engine,
    producer: *const mla_engine,
) -> mla_status {
    // SAFETY: this function's contract.
    unsafe {
        share(consumer, producer, "mla_engine_share_topk", |c, p| {
            c.share_topk(p)
        })
    }
}

/// Text of the engine's last failure (NUL-terminated UTF-8, "" before any; valid
/// until the next call on `e`).
/// For NULL: the text of the calling thread's last failed call that had no engine
/// to hold it (`mla_engine_init`, `mla_weights_from_safetensors`,
/// `mla_weights_from_checkpoint`, `mla_config_from_hf_json`, `mla_engine_size`,
/// `mla_cache_bytes_per_token`, `mla_config_validate`, or a call given a NULL
/// engine); "" if none; valid until the next such failure on this thread. Builds
/// without the `std` feature keep no such text and return a fixed one.
///
/// # Safety
/// `e` is NULL or an engine from `mla_engine_init`.
#[no_mangle]
pub unsafe extern "C" fn mla_last_error(e: *const mla_engine) -> *const c_char {
    // SAFETY: NULL or a handle from mla_engine_init (C contract).
    unsafe { boundary::last_error(e) }
}
