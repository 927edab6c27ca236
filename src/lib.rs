//! mla-rt's C ABI: the library `mla` (`libmla.a`, `libmla.so`) with the header
//! `include/mla.h`, generated from this crate by cbindgen.
//!
//! Everything numeric lives in the `mla-core` crate (re-exported here as
//! [`mla_core`]); this crate only turns C calls into calls on it. Each
//! `extern "C"` function is a few lines: it unpacks its arguments through the
//! one boundary (the private `boundary` module, which checks pointers, catches
//! panics, turns results into `mla_status`, records the last error and writes
//! outputs only on success), calls the core, and is done. Rust programs use
//! `mla-core` directly. The rules a C caller follows are in the README, section
//! "C API", "Rules".
//!
//! Modules, one concern each (their order is the order of the header):
//! - the C types, in [`types`]: status, dtype and enum constants,
//!   `mla_config`, `mla_tensor`, `mla_weights` and their conversions;
//!   `mla_abi_version`, `mla_version`, `mla_status_str`;
//! - configurations, in [`config`]: presets, `mla_config_validate`, the size
//!   queries;
//! - engines, in [`engine`]: `mla_engine_init`, `mla_forward`, `mla_len`,
//!   `mla_truncate`, `mla_reset`, `mla_engine_set_parallel`, `mla_last_error`;
//! - weights from a file, in [`safetensors`]: `mla_weights_from_safetensors`;
//! - RoPE alone, in [`rope`]: `mla_rope_tables`, `mla_rope_apply`;
//! - the GPU, in `cuda` (feature `cuda`): the `mla_cuda_*` entry points over
//!   `mla-cuda`;
//! - all CPU items above in one namespace, in [`ffi`].
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
// Errors carry their message inline (no allocator), so `Result<_, Error>` is
// ~200 bytes; that is the price of a heap-free error with a precise message.
#![allow(clippy::result_large_err)]

pub use mla_core;

mod boundary;

pub mod types;

pub mod config;

pub mod engine;

pub mod safetensors;

pub mod rope;

#[cfg(feature = "cuda")]
pub mod cuda;

/// Every item of the CPU C ABI (types, constants, entry points) in one
/// namespace, as `mla::ffi::*`.
pub mod ffi {
    pub use crate::config::*;
    pub use crate::engine::*;
    pub use crate::rope::*;
    pub use crate::safetensors::*;
    pub use crate::types::*;
}

#[cfg(all(feature = "panic-handler", not(feature = "std"), not(test)))]
mod panic_handler;
