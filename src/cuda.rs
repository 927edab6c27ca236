//! C ABI of the CUDA engine (feature `cuda`; in include/mla.h behind
//! `#if defined(MLA_FEATURE_CUDA)`).
//!
//! Same conventions as the CPU entry points (src/ffi.rs): every argument is
//! checked before anything changes, a failed call leaves the engine as it was
//! and `mla_cuda_last_error` says why, CUDA failures are `MLA_ERR_DEVICE` with the
//! driver's text, and a panic is caught and reported as `MLA_ERR_INTERNAL`.
//! Unlike `mla_engine_init`, `mla_cuda_engine_create` allocates (host and
//! device memory): release it with `mla_cuda_engine_destroy`. The weights are
//! copied to the device, so the caller's tensors may be freed after create.
//!
//! Device pointers (`mla_cuda_forward_device`) are CUDA device addresses as a
//! CUDA C program holds them (`float *` from `cudaMalloc`/`cuMemAlloc`).
#![allow(non_camel_case_types)]

use core::ffi::{c_char, c_int};
use core::ptr;
use std::cell::RefCell;

use crate::ffi::{mla_config, mla_status, mla_weights, MLA_ERR_NULL_POINTER, MLA_OK};
use mla_core::status::{err, Error, Result, Status, MESSAGE_CAPACITY};
use mla_cuda::CudaEngine;

/// Bytes of a last-error text, NUL included.
const LAST_ERROR_BYTES: usize = MESSAGE_CAPACITY + 1;

/// A CUDA engine (opaque). Create with `mla_cuda_engine_create`, release with
/// `mla_cuda_engine_destroy`. Use one engine from one thread at a time.
pub struct mla_cuda_engine {
    engine: CudaEngine,
    last_error: [u8; LAST_ERROR_BYTES],
}

thread_local! {
    /// Last failure of `mla_cuda_engine_create` on this thread (NUL-terminated).
    static CREATE_ERROR: RefCell<[u8; LAST_ERROR_BYTES]> = const { RefCell::new([0; LAST_ERROR_BYTES]) };
}

/// Copies `e`'s message into `buf`, NUL-terminated.
fn store(buf: &mut [u8; LAST_ERROR_BYTES], e: &Error) {
    let msg = e.message().as_bytes();
    for (i, b) in buf.iter_mut().enumerate() {
        *b = msg.get(i).copied().unwrap_or(0);
    }
    if let Some(last) = buf.last_mut() {
        *last = 0;
    }
}

/// Runs `f`, turning a panic into `Err`.
fn catch<T>(f: impl FnOnce() -> T) -> core::result::Result<T, ()> {
    // AssertUnwindSafe: the engine commits its length last, so after a caught
    // panic it keeps its previous length and is reported as MLA_ERR_INTERNAL.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|_| ())
}

/// Runs `f` on the engine behind `e` and records a failure as its last error.
///
/// # Safety
/// `e` is NULL or a live handle from `mla_cuda_engine_create`, not used by
/// another thread during the call.
unsafe fn with_engine(
    e: *mut mla_cuda_engine,
    what: &str,
    f: impl FnOnce(&mut CudaEngine) -> Result<()>,
) -> mla_status {
    // SAFETY: the function's contract.
    let Some(h) = (unsafe { e.as_mut() }) else {
        return MLA_ERR_NULL_POINTER;
    };
    let r = match catch(|| f(&mut h.engine)) {
        Ok(r) => r,
        Err(()) => Err(err(Status::Internal, what).s(": internal error (panic caught)")),
    };
    match r {
        Ok(()) => MLA_OK,
        Err(e) => {
            store(&mut h.last_error, &e);
            e.status() as u32
        }
    }
}

/// Creates a CUDA engine on device `device_ordinal` (0 = first GPU) for config
/// `*c` and weights `*w` (same rules as `mla_engine_init`; the tensors are
/// copied to the device and may be freed afterwards). On success `*out` is the
/// new engine. Errors: MLA_ERR_NULL_POINTER, MLA_ERR_ABI_MISMATCH,
/// MLA_ERR_INVALID_CONFIG, MLA_ERR_WEIGHT_SHAPE, MLA_ERR_WEIGHT_DTYPE,
/// MLA_ERR_MISALIGNED, MLA_ERR_INVALID_ARGUMENT (negative ordinal),
/// MLA_ERR_UNSUPPORTED (sizes the kernels cannot take), MLA_ERR_DEVICE (no
/// driver or device, out of device memory, module load failure). `*out` is
/// written only on success; the failure's text is `mla_cuda_last_error(NULL)` on
/// the calling thread.
///
/// # Safety
/// `c` is NULL or points to an `mla_config`; `w` is NULL or points to an
/// `mla_weights` whose non-NULL tensors hold `rows * cols` elements of their
/// dtype; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mla_cuda_engine_create(
    c: *const mla_config,
    w: *const mla_weights,
    device_ordinal: c_int,
    out: *mut *mut mla_cuda_engine,
) -> mla_status {
    let run = || -> Result<*mut mla_cuda_engine> {
        if out.is_null() || w.is_null() {
            return Err(err(
                Status::NullPointer,
                "mla_cuda_engine_create: w or out is NULL",
            ));
        }
        // SAFETY: the function's contract.
        let cfg = unsafe { crate::ffi::read_config(c) }?;
        // SAFETY: `w` is not NULL and points to an mla_weights (contract); read
        // unaligned to accept any placement.
        let cw = unsafe { ptr::read_unaligned(w) };
        // SAFETY: the tensors' data is valid for the duration of this call
        // (contract); the engine copies it to the device and keeps no reference.
        let weights = unsafe { cw.to_weights() }?;
        let ordinal = u32::try_from(device_ordinal).map_err(|_| {
            err(
                Status::InvalidArgument,
                "mla_cuda_engine_create: device_ordinal is negative",
            )
        })?;
        let engine = CudaEngine::create(&cfg, &weights, ordinal)?;
        Ok(Box::into_raw(Box::new(mla_cuda_engine {
            engine,
            last_error: [0; LAST_ERROR_BYTES],
        })))
    };
    let r = match catch(run) {
        Ok(r) => r,
        Err(()) => Err(err(
            Status::Internal,
            "mla_cuda_engine_create: internal error (panic caught)",
        )),
    };
    match r {
        Ok(h) => {
            // SAFETY: `out` is not NULL (checked in `run`) and writable (contract).
            unsafe { ptr::write_unaligned(out, h) };
            MLA_OK
        }
        Err(e) => {
            CREATE_ERROR.with(|b| store(&mut b.borrow_mut(), &e));
            e.status() as u32
        }
    }
}

/// Appends `n_tokens` rows of `x` (host memory, `[n_tokens][hidden_size]` f32)
/// at positions `mla_cuda_len(e)..`, attends causally over the cache, writes
/// `[n_tokens][hidden_size]` to `out` (host memory). Statuses as `mla_forward`,
/// plus MLA_ERR_DEVICE; on any error nothing is appended.
///
/// # Safety
/// `e` is NULL or a live engine; `x` / `out` are NULL or hold `n_tokens *
/// hidden_size` readable / writable floats and do not overlap.
#[no_mangle]
pub unsafe extern "C" fn mla_cuda_forward(
    e: *mut mla_cuda_engine,
    x: *const f32,
    n_tokens: u32,
    out: *mut f32,
) -> mla_status {
    let run = |engine: &mut CudaEngine| -> Result<()> {
        // SAFETY: x and out hold n_tokens * hidden_size floats (C contract).
        let (xs, os) = unsafe {
            crate::ffi::forward_args("mla_cuda_forward", engine.config(), x, n_tokens, out)
        }?;
        engine.forward(xs, os)
    };
    // SAFETY: the function's contract.
    unsafe { with_engine(e, "mla_cuda_forward", run) }
}

/// As `mla_cuda_forward` with `x` and `out` in device memory (CUDA device
/// addresses of `n_tokens * hidden_size` floats on the engine's device, e.g.
/// from `cudaMalloc`). Synchronous: when it returns, `out` is written (on success
/// only). Work producing `x` on other streams must be complete before the call.
/// NaN/infinite input is detected on the device: MLA_ERR_NON_FINITE, nothing
/// appended, `out` untouched.
///
/// # Safety
/// `e` is NULL or a live engine; `x` / `out` are NULL or device memory holding
/// `n_tokens * hidden_size` readable / writable floats, not overlapping.
#[no_mangle]
pub unsafe extern "C" fn mla_cuda_forward_device(
    e: *mut mla_cuda_engine,
    x: *const f32,
    n_tokens: u32,
    out: *mut f32,
) -> mla_status {
    let run = |engine: &mut CudaEngine| -> Result<()> {
        if !(x as usize).is_multiple_of(4) || !(out as usize).is_multiple_of(4) {
            return Err(err(
                Status::Misaligned,
                "mla_cuda_forward_device: x and out must be 4-byte aligned",
            ));
        }
        // SAFETY: the function's contract (device memory of the right size); NULL
        // is rejected by forward_device.
        unsafe { engine.forward_device(x as usize as u64, out as usize as u64, n_tokens as usize) }
    };
    // SAFETY: the function's contract.
    unsafe { with_engine(e, "mla_cuda_forward_device", run) }
}

/// Tokens in the cache (the next position); 0 for NULL.
///
/// # Safety
/// `e` is NULL or a live engine.
#[no_mangle]
pub unsafe extern "C" fn mla_cuda_len(e: *const mla_cuda_engine) -> u32 {
    // SAFETY: NULL or a live handle (contract).
    match unsafe { e.as_ref() } {
        Some(h) => u32::try_from(h.engine.len()).unwrap_or(u32::MAX),
        None => 0,
    }
}

/// Rolls the cache back to its first `len` tokens (`len` <= `mla_cuda_len(e)`).
/// Errors: MLA_ERR_NULL_POINTER, MLA_ERR_INVALID_ARGUMENT (nothing changes).
///
/// # Safety
/// `e` is NULL or a live engine, not used by another thread during the call.
#[no_mangle]
pub unsafe extern "C" fn mla_cuda_truncate(e: *mut mla_cuda_engine, len: u32) -> mla_status {
    // SAFETY: the function's contract.
    unsafe {
        with_engine(e, "mla_cuda_truncate", |engine| {
            engine.truncate(len as usize)
        })
    }
}

/// Empties the cache. NULL: does nothing.
///
/// # Safety
/// `e` is NULL or a live engine, not used by another thread during the call.
#[no_mangle]
pub unsafe extern "C" fn mla_cuda_reset(e: *mut mla_cuda_engine) {
    // SAFETY: the function's contract. The status is MLA_OK or, for NULL,
    // MLA_ERR_NULL_POINTER, documented as a no-op.
    let _ = unsafe {
        with_engine(e, "mla_cuda_reset", |engine| {
            engine.reset();
            Ok(())
        })
    };
}

/// Text of the engine's last failure (NUL-terminated UTF-8, "" before any; valid
/// until the next call on `e`). For NULL: the last `mla_cuda_engine_create`
/// failure on the calling thread ("" if none; valid until the next create on
/// this thread).
///
/// # Safety
/// `e` is NULL or a live engine.
#[no_mangle]
pub unsafe extern "C" fn mla_cuda_last_error(e: *const mla_cuda_engine) -> *const c_char {
    // SAFETY: NULL or a live handle (contract).
    match unsafe { e.as_ref() } {
        Some(h) => h.last_error.as_ptr().cast(),
        // The thread-local buffer lives as long as the thread; its address is
        // stable and it changes only in mla_cuda_engine_create on this thread.
        None => CREATE_ERROR.with(|b| b.as_ptr().cast::<c_char>()),
    }
}

/// Releases an engine and its device memory. NULL: does nothing.
///
/// # Safety
/// `e` is NULL or a live engine from `mla_cuda_engine_create`, not used
/// afterwards (nor by another thread during the call).
#[no_mangle]
pub unsafe extern "C" fn mla_cuda_engine_destroy(e: *mut mla_cuda_engine) {
    if e.is_null() {
        return;
    }
    // SAFETY: `e` came from Box::into_raw in mla_cuda_engine_create and is not
    // used again (contract). A panic while dropping is contained.
    let b = unsafe { Box::from_raw(e) };
    let _ = catch(move || drop(b));
}
