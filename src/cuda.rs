//! C ABI of the CUDA engine (feature `cuda`; in include/mla.h behind
//! `#if defined(MLA_FEATURE_CUDA)`).
//!
//! Same conventions as the CPU entry points, through the same boundary: every
//! argument is checked before anything changes, a failed call leaves the engine
//! as it was and `mla_cuda_last_error` says why, CUDA failures are
//! `MLA_ERR_DEVICE` with the driver's text, and a panic is caught and reported as
//! `MLA_ERR_INTERNAL` (the README's "C API" section, "Rules").
//! Unlike `mla_engine_init`, `mla_cuda_engine_create` allocates (host and
//! device memory): release it with `mla_cuda_engine_destroy`. The weights are
//! copied to the device, so the caller's tensors may be freed after create.
//!
//! Device pointers (`mla_cuda_forward_device`) are CUDA device addresses as a
//! CUDA C program holds them (`float *` from `cudaMalloc`/`cuMemAlloc`).
#![allow(non_camel_case_types)]

use core::ffi::{c_char, c_int};

use mla_core::status::{err, Status};
use mla_cuda::CudaEngine;

use crate::boundary::{self, CEngine, Handle, Slot};
use crate::types::{mla_config, mla_status, mla_weights, read_config};

/// A CUDA engine (opaque). Create with `mla_cuda_engine_create`, release with
/// `mla_cuda_engine_destroy`. Use one engine from one thread at a time.
pub struct mla_cuda_engine(Handle<CudaEngine>);

impl CEngine for mla_cuda_engine {
    type Engine = CudaEngine;
    const SLOT: Slot = Slot::Cuda;
    // mla_cuda_last_error(NULL) is documented to hold create failures only.
    const RECORD_NULL_ENGINE: bool = false;
    fn handle(&self) -> &Handle<CudaEngine> {
        &self.0
    }
    fn handle_mut(&mut self) -> &mut Handle<CudaEngine> {
        &mut self.0
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
    let what = "mla_cuda_engine_create";
    let null = "mla_cuda_engine_create: w or out is NULL";
    // SAFETY: every pointer is NULL or what its type says (C contract); the
    // tensors' data is valid for the duration of this call, and the engine copies
    // it to the device and keeps no reference.
    unsafe {
        boundary::produce(Slot::Cuda, what, out, null, || {
            let cw = boundary::read(w).ok_or_else(|| err(Status::NullPointer, null))?;
            let cfg = read_config(c)?;
            let weights = cw.to_weights()?;
            let ordinal = u32::try_from(device_ordinal).map_err(|_| {
                err(
                    Status::InvalidArgument,
                    "mla_cuda_engine_create: device_ordinal is negative",
                )
            })?;
            let engine = CudaEngine::create(&cfg, &weights, ordinal)?;
            Ok(Box::into_raw(Box::new(mla_cuda_engine(Handle::new(
                engine,
            )))))
        })
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
    // SAFETY: `e`, `x` and `out` as this function's contract says.
    unsafe {
        boundary::on_engine(e, "mla_cuda_forward", |engine| {
            let (xs, os) =
                boundary::forward_io("mla_cuda_forward", engine.config(), x, n_tokens, out)?;
            engine.forward(xs, os)
        })
    }
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
    // SAFETY: `e` as this function's contract says; `x` and `out` are device
    // memory of the right size (contract), never dereferenced on the host; NULL
    // is rejected by forward_device.
    unsafe {
        boundary::on_engine(e, "mla_cuda_forward_device", |engine| {
            if !boundary::aligned(x) || !boundary::aligned(out) {
                return Err(err(
                    Status::Misaligned,
                    "mla_cuda_forward_device: x and out must be 4-byte aligned",
                ));
            }
            engine.forward_device(x as usize as u64, out as usize as u64, n_tokens as usize)
        })
    }
}

/// Tokens in the cache (the next position); 0 for NULL.
///
/// # Safety
/// `e` is NULL or a live engine.
#[no_mangle]
pub unsafe extern "C" fn mla_cuda_len(e: *const mla_cuda_engine) -> u32 {
    // SAFETY: NULL or a live handle (contract).
    match unsafe { boundary::engine_ref(e) } {
        Some(engine) => u32::try_from(engine.len()).unwrap_or(u32::MAX),
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
        boundary::on_engine(e, "mla_cuda_truncate", |engine| {
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
    // NULL is a documented no-op.
    if e.is_null() {
        return;
    }
    // SAFETY: the function's contract. The status can only be MLA_OK here.
    let _ = unsafe {
        boundary::on_engine(e, "mla_cuda_reset", |engine| {
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
    unsafe { boundary::last_error(e) }
}

/// Releases an engine and its device memory. NULL: does nothing.
///
/// # Safety
/// `e` is NULL or a live engine from `mla_cuda_engine_create`, not used
/// afterwards (nor by another thread during the call).
#[no_mangle]
pub unsafe extern "C" fn mla_cuda_engine_destroy(e: *mut mla_cuda_engine) {
    // SAFETY: NULL or a live engine from mla_cuda_engine_create (Box::into_raw),
    // not used afterwards (contract).
    unsafe { boundary::release(e) }
}
