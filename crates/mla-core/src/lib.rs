//! mla-core: DeepSeek Multi-Head Latent Attention (MLA) and RoPE, exactly, in memory
//! the caller provides.
//!
//! The crate is `#![no_std]` and never allocates: [`Engine::memory_bytes`] says how
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
//! - [`plan`]: the memory plan, every region of the engine's memory named;
//! - [`engine`]: the forward pass, top to bottom;
//! - [`safetensors`]: a zero-copy safetensors reader and the weight binder.
//!
//! Feature `std` (off by default) adds runtime CPU-feature detection and a
//! thread pool ([`parallel::ThreadPool`]); without it the crate needs only `core`.
//! The C ABI over this crate is the `mla-rt` package (library `mla`).
// `no_std` always, except in its own unit tests (which use Vec and friends).
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
// Errors carry their message inline (no allocator), so `Result<_, Error>` is
// ~200 bytes; that is the price of a heap-free error with a precise message.
#![allow(clippy::result_large_err)]

#[cfg(all(feature = "std", not(test)))]
extern crate std;

pub mod attention;
pub mod cache;
pub mod config;
pub mod dtype;
pub mod engine;
pub mod kernels;
pub mod parallel;
pub mod plan;
pub mod rope;
pub mod safetensors;
pub mod status;
pub mod weights;

pub use config::{AttnMode, Config, Dims, RopeKey, RopeLayout};
pub use dtype::DType;
pub use engine::Engine;
pub use status::{Error, Result, Status};
pub use weights::{Tensor, Weights};

/// The crate version, from Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
