//! mla-rt's C ABI: the library `mla` (`libmla.a`, `libmla.so`) with the header
//! `include/mla.h`, generated from this crate by cbindgen.
//!
//! Everything numeric lives in the `mla-core` crate (re-exported here as
//! [`mla_core`]); this crate only turns C calls into calls on it: thin
//! `extern "C"` functions over one boundary that checks pointers, catches
//! panics, records the last error and writes outputs only on success.
//! Rust programs use `mla-core` directly.
//!
//! - [`ffi`]: every `mla_*` entry point of the CPU engine;
//! - `cuda` (feature `cuda`): the `mla_cuda_*` entry points over `mla-cuda`.
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
// Errors carry their message inline (no allocator), so `Result<_, Error>` is
// ~200 bytes; that is the price of a heap-free error with a precise message.
#![allow(clippy::result_large_err)]

pub use mla_core;

pub mod ffi;

#[cfg(feature = "cuda")]
pub mod cuda;

#[cfg(all(feature = "panic-handler", not(feature = "std"), not(test)))]
mod panic_handler;
