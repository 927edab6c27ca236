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
use mla_core::engine::{Engine, Sharing};
use mla_core::parallel::HostParallelFor;
use mla_core::status::{err, Result, Status};
use mla_core::weights::Weights;

use crate::boundary::{self, CEngine, Handle, Slot};
use crate::types::{mla_config, mla_status, mla_weights, read_config, MLA_OK};

/// An engine: opaque, placed by `mla_engine_init` at the start of the caller's
/// memory. Use one engine from one thread at a time; there is nothing to free.
pub struct mla_engine {
    handle: Handle<Engine<'static, 'static>>,
    /// The engine whose latent cache this one reads (`mla_engine_share_cache`;
    /// NULL until then). Checked non-NULL, aligned and not this engine when
    /// stored; that it stays alive is the caller's contract.
    cache_from: *const mla_engine,
    /// The engine whose top-k this one reuses (`mla_engine_share_topk`), as
    /// `cache_from`.
    topk_from: *const mla_engine,
}

impl CEngine for mla_engine {
    type Engine = Engine<'static, 'static>;
    const SLOT: Slot = Slot::Cpu;
    const RECORD_NULL_ENGINE: bool = true;
    fn handle(&self) -> &Handle<Self::Engine> {
        &self.handle
    }
    fn handle_mut(&mut self) -> &mut Handle<Self::Engine> {
        &mut self.handle
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
/// pooled indexer keys) (`*out` is written only on success).
/// A layer that reads another layer's state (`kv_shared` = 1, `dsa` =
/// MLA_DSA_SHARED) is placed like any other, then needs its producers
/// registered (`mla_engine_share_cache`, `mla_engine_share_topk`) before its
/// first `mla_forward`.
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
    let engine = Engine::new(cfg, weights, region)?;
    let handle = base.cast::<mla_engine>();
    // SAFETY: `base` is 64-aligned (>= align_of::<mla_engine>()) and its first
    // HANDLE_BYTES bytes belong to the handle.
    unsafe {
        ptr::write(
            handle,
            mla_engine {
                handle: Handle::new(engine),
                cache_from: ptr::null(),
                topk_from: ptr::null(),
            },
        )
    };
    Ok(handle)
}

/// Runs `n_tokens` rows of `x` (`[n_tokens][hidden_size]` floats) at positions
/// `mla_len(e) ..`, attending causally over everything cached, and writes
/// `[n_tokens][hidden_size]` floats to `out` (must not overlap `x`). One token is
/// a decode step, more a prefill chunk; chunked prefill equals one call.
/// Errors (engine unchanged, nothing appended, `out` unwritten): MLA_ERR_NULL_POINTER,
/// MLA_ERR_INVALID_ARGUMENT (n_tokens 0 or > max_tokens_per_call, overlap),
/// MLA_ERR_MISALIGNED (x or out not 4-byte aligned), MLA_ERR_CACHE_FULL,
/// MLA_ERR_NON_FINITE. A consumer layer (`kv_shared`, `dsa` shared) attends
/// over its registered producers' state: MLA_ERR_INVALID_ARGUMENT when a share
/// call it needs has not been made, or when a producer has not yet run these
/// positions (run every producer first, on the same tokens).
///
/// # Safety
/// `e` is NULL or an engine from `mla_engine_init`, not used by another thread during the
/// call; `x` and `out` are NULL or hold `n_tokens * hidden_size` floats; the engines
/// registered as `e`'s producers are alive and not written during the call.
#[no_mangle]
pub unsafe extern "C" fn mla_forward(
    e: *mut mla_engine,
    x: *const f32,
    n_tokens: u32,
    out: *mut f32,
) -> mla_status {
    let what = "mla_forward";
    // SAFETY: `e` is NULL, misaligned or a live engine (contract).
    let (cache_from, topk_from) = unsafe { producers(e) };
    // SAFETY: `e`, `x` and `out` as this function's contract says.
    unsafe {
        boundary::on_engine(e, what, |engine| {
            let (xs, os) = boundary::forward_io(what, engine.config(), x, n_tokens, out)?;
            let (cache, topk) = registered(engine, cache_from, topk_from, what)?;
            let mode = engine.config().attn_mode;
            engine.forward_with(&Sharing { cache, topk }, xs, os, mode)
        })
    }
}

/// The producers registered on `e` (NULL for NULL, misaligned or none).
///
/// # Safety
/// `e` is NULL, misaligned or a live engine from `mla_engine_init`.
unsafe fn producers(e: *const mla_engine) -> (*const mla_engine, *const mla_engine) {
    if !boundary::aligned(e) {
        return (ptr::null(), ptr::null());
    }
    // SAFETY: NULL (None) or aligned and live (contract); only two pointer
    // fields are copied out, no reference outlives this line.
    match unsafe { e.as_ref() } {
        Some(h) => (h.cache_from, h.topk_from),
        None => (ptr::null(), ptr::null()),
    }
}

/// The engines `engine` needs for its calls, from its registered producers:
/// `InvalidArgument` naming the share call still missing.
///
/// # Safety
/// `cache_from` and `topk_from` are NULL or (checked when stored: aligned and
/// not the consumer) live engines not written during `'a` (the caller's
/// contract of the share calls).
unsafe fn registered<'a>(
    engine: &Engine<'static, 'static>,
    cache_from: *const mla_engine,
    topk_from: *const mla_engine,
    what: &str,
) -> Result<(
    Option<&'a Engine<'static, 'static>>,
    Option<&'a Engine<'static, 'static>>,
)> {
    let (need_cache, need_topk) = engine.needs_producers();
    // SAFETY: this function's contract.
    let cache = unsafe { boundary::engine_ref(cache_from) };
    // SAFETY: this function's contract.
    let topk = unsafe { boundary::engine_ref(topk_from) };
    if need_cache && cache.is_none() {
        return Err(err(Status::InvalidArgument, what).s(
            ": this engine is kv_shared: call mla_engine_share_cache(consumer, producer) first",
        ));
    }
    if need_topk && topk.is_none() {
        return Err(err(Status::InvalidArgument, what).s(
            ": this engine's dsa is shared: call mla_engine_share_topk(consumer, producer) first",
        ));
    }
    Ok((cache.filter(|_| need_cache), topk.filter(|_| need_topk)))
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
/// to drop a rejected speculative draft. A consumer (`kv_shared`) keeps no
/// cache: truncate its producer to the same length too. Errors:
/// MLA_ERR_NULL_POINTER, MLA_ERR_INVALID_ARGUMENT (`len` > `mla_len(e)`; a
/// consumer whose share call is missing; nothing changes).
///
/// # Safety
/// `e` is NULL or an engine from `mla_engine_init`, not used by another thread during the
/// call.
#[no_mangle]
pub unsafe extern "C" fn mla_truncate(e: *mut mla_engine, len: u32) -> mla_status {
    // SAFETY: `e` is NULL, misaligned or a live engine (contract).
    let (cache_from, topk_from) = unsafe { producers(e) };
    // SAFETY: this function's contract.
    unsafe {
        boundary::on_engine(e, "mla_truncate", |engine| {
            unshared(engine, cache_from, topk_from, "mla_truncate")?;
            engine.truncate(len as usize)
        })
    }
}

/// `InvalidArgument` naming the share call a consumer still misses (the
/// pointers are only compared with NULL, never read).
fn unshared(
    engine: &Engine<'static, 'static>,
    cache_from: *const mla_engine,
    topk_from: *const mla_engine,
    what: &str,
) -> Result<()> {
    let (need_cache, need_topk) = engine.needs_producers();
    if need_cache && cache_from.is_null() {
        return Err(err(Status::InvalidArgument, what).s(
            ": this engine is kv_shared: call mla_engine_share_cache(consumer, producer) first",
        ));
    }
    if need_topk && topk_from.is_null() {
        return Err(err(Status::InvalidArgument, what).s(
            ": this engine's dsa is shared: call mla_engine_share_topk(consumer, producer) first",
        ));
    }
    Ok(())
}

/// Empties the cache (as `mla_truncate(e, 0)`). NULL: does nothing. A
/// consumer whose share call is missing is left as it is (it has run nothing)
/// and `mla_last_error(e)` names the missing call.
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
    // SAFETY: `e` is NULL, misaligned or a live engine (contract).
    let (cache_from, topk_from) = unsafe { producers(e) };
    // SAFETY: this function's contract. A failure is recorded on `e`.
    let _ = unsafe {
        boundary::on_engine(e, "mla_reset", |engine| {
            unshared(engine, cache_from, topk_from, "mla_reset")?;
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

/// Which producer a share call registers.
#[derive(Clone, Copy)]
enum Share {
    Cache,
    Topk,
}

/// Shared body of `mla_engine_share_cache` and `mla_engine_share_topk`: checks
/// the pair, then stores `producer` in the consumer's handle (only on success).
///
/// # Safety
/// `consumer` as in [`boundary::on_engine`]; `producer` is NULL, misaligned or a
/// live engine not written by another thread during the call.
unsafe fn share(
    consumer: *mut mla_engine,
    producer: *const mla_engine,
    what: &str,
    kind: Share,
) -> mla_status {
    // SAFETY: this function's contract.
    let status = unsafe {
        boundary::on_engine(consumer, what, |engine| {
            // Compared as addresses before any reference to the producer exists:
            // the same engine would be borrowed mutably and shared at once.
            if ptr::eq(consumer.cast_const(), producer) {
                return Err(err(Status::InvalidArgument, what)
                    .s(": consumer and producer are the same engine"));
            }
            if !producer.is_null() && !boundary::aligned(producer) {
                return Err(err(Status::Misaligned, what).s(": producer is misaligned"));
            }
            let p = boundary::engine_ref(producer)
                .ok_or_else(|| err(Status::NullPointer, what).s(": producer is NULL"))?;
            match kind {
                Share::Cache => engine.check_share(p),
                Share::Topk => engine.check_share_topk(p),
            }
        })
    };
    if status == MLA_OK {
        // SAFETY: MLA_OK means `consumer` is non-NULL, aligned and live
        // (on_engine checked it), and no reference to it is alive any more.
        unsafe {
            match kind {
                Share::Cache => (*consumer).cache_from = producer,
                Share::Topk => (*consumer).topk_from = producer,
            }
        }
    }
    status
}

/// KV sharing (mistral_large4's `kv_source_layers`): registers `producer` as
/// the engine whose latent cache `consumer` (a layer with `kv_shared` = 1)
/// attends over; the consumer writes no cache of its own. The producer must
/// own a cache (not kv_shared, no sliding window) with the consumer's
/// `kv_lora_rank`, `qk_rope_head_dim`, rope key layout and `cache_dtype`, and
/// at least its `max_seq_len`. Call once after init (again to replace it).
///
/// Lifetime and order: the producer must stay alive (its memory untouched)
/// while the consumer is used; for every `mla_forward` of the consumer, run
/// the producer first on the same tokens (the producer then holds exactly
/// `mla_len(consumer) + n_tokens` positions); truncate and reset both alike.
///
/// Errors leave both engines unchanged: MLA_ERR_NULL_POINTER,
/// MLA_ERR_MISALIGNED, MLA_ERR_INVALID_ARGUMENT (the same engine twice; the
/// consumer not kv_shared; the producer kv_shared itself, with a sliding
/// window, or with other dims, dtype or a smaller `max_seq_len`; the message
/// names which).
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
    unsafe { share(consumer, producer, "mla_engine_share_cache", Share::Cache) }
}

/// Top-k sharing: registers `producer` as the engine whose sparse-attention
/// selection `consumer` (a layer with `dsa` = MLA_DSA_SHARED) reuses. The
/// producer must run sparse attention (`dsa` full, or shared and registered
/// itself) with the same `index_topk` and at least the consumer's
/// `max_tokens_per_call`. Call once after init (again to replace it).
///
/// Lifetime and order: as `mla_engine_share_cache`: the producer outlives the
/// consumer's use, and runs first on the same tokens (the consumer reads the
/// selection of the producer's last call, which must cover its positions).
///
/// Errors leave both engines unchanged: MLA_ERR_NULL_POINTER,
/// MLA_ERR_MISALIGNED, MLA_ERR_INVALID_ARGUMENT (the same engine twice; the
/// consumer's dsa not shared; the producer without sparse attention, or with
/// another `index_topk` or a smaller `max_tokens_per_call`).
///
/// # Safety
/// As `mla_engine_share_cache`.
#[no_mangle]
pub unsafe extern "C" fn mla_engine_share_topk(
    consumer: *mut mla_engine,
    producer: *const mla_engine,
) -> mla_status {
    // SAFETY: this function's contract.
    unsafe { share(consumer, producer, "mla_engine_share_topk", Share::Topk) }
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
