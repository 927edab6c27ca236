//! mla-rt: DeepSeek Multi-Head Latent Attention (MLA) and RoPE, exactly, in memory
//! the caller provides.
//!
//! The core is `#![no_std]` and never allocates: [`Engine::memory_bytes`] says how
//! many bytes an engine needs for a [`Config`], [`Engine::new`] places the latent
//! cache, the RoPE table and all scratch inside the caller's buffer, and
//! [`Engine::forward`] appends tokens and writes the attention output.
//!
//! Where the math lives:
//! - [`config`]: dimensions and parameters of both variants, validation, presets;
//! - [`rope`]: rotary embeddings and YaRN;
//! - [`weights`]: borrowed weights in the canonical (Hugging Face) layout;
//! - [`cache`]: the fixed-capacity latent cache;
//! - [`kernels`]: the numeric loops (linear layers, RMSNorm, dot products);
//! - [`attention`]: naive and absorbed attention over the cache;
//! - [`engine`]: the forward pass, top to bottom, and memory planning.
//!
//! The C ABI is in [`ffi`]; the CUDA path (feature `cuda`) in `cuda`.
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
// Errors carry their message inline (no allocator), so `Result<_, Error>` is
// ~200 bytes; that is the price of a heap-free error with a precise message.
#![allow(clippy::result_large_err)]

pub mod attention;
pub mod cache;
pub mod config;
pub mod dtype;
pub mod engine;
pub mod ffi;
pub mod kernels;
pub mod parallel;
pub mod rope;
pub mod safetensors;
pub mod status;
pub mod weights;

#[cfg(feature = "cuda")]
pub mod cuda;

#[cfg(all(feature = "panic-handler", not(feature = "std"), not(test)))]
mod panic_handler;

pub use config::{AttnMode, Config, Dims, RopeKey, RopeLayout};
pub use dtype::DType;
pub use engine::Engine;
pub use status::{Error, Result, Status};
pub use weights::{Tensor, Weights};

/// The crate version, from Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Version of the C ABI (`MLA_ABI_VERSION`).
pub const ABI_VERSION: u32 = 1;
