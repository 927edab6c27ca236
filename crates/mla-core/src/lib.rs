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
//! - [`safetensors`]: a zero-copy safetensors reader and the weight binder;
//! - [`json`]: the one JSON reader (safetensors headers, `config.json`).
//!
//! Feature `std` (off by default) adds runtime CPU-feature detection and a
//! thread pool (`parallel::ThreadPool`); without it the crate needs only `core`.
//! The C ABI over this crate is the `mla-rt` package (library `mla`).
//!
//! # Example
//!
//! One attention layer of the tutorial model (the golden file of the tests), its
//! config from the preset and the file's metadata, its weights bound zero-copy,
//! a prefill, a decode step, then a truncate and another step from there:
//!
//! ```
//! use mla_core::safetensors::{config_from_metadata, SafeTensors};
//! use mla_core::{Config, Engine};
//!
//! // Zero-copy f32 views want the file 4-byte aligned: a static with an alignment.
//! #[repr(C, align(8))]
//! struct Aligned<B: ?Sized>(B);
//! static FILE: &Aligned<[u8]> =
//!     &Aligned(*include_bytes!("../../../tests/data/tutorial.safetensors"));
//!
//! let st = SafeTensors::parse(&FILE.0)?; // checks the whole file, copies nothing
//! let mut cfg = config_from_metadata(&st, &Config::tutorial())?;
//! cfg.max_seq_len = 32; // cache capacity, in tokens
//! cfg.max_tokens_per_call = 8; // most tokens one forward call takes
//! cfg.validate()?;
//! let weights = st.weights("model.layers.0.self_attn.", &cfg)?;
//!
//! // All of the engine's memory: one caller buffer, Engine::MEMORY_ALIGN aligned.
//! let need = Engine::memory_bytes(&cfg)?;
//! let mut buf = vec![0u8; need + Engine::MEMORY_ALIGN];
//! let at = buf.as_ptr().align_offset(Engine::MEMORY_ALIGN);
//! let mut engine = Engine::new(&cfg, &weights, &mut buf[at..at + need])?;
//!
//! // The file's input hidden states [T][d] and PyTorch's outputs for them.
//! let f32s = |name: &str| -> Vec<f32> {
//!     let t = st.tensor(name).ok().flatten().expect(name);
//!     t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
//! };
//! let (x, want) = (f32s("inputs"), f32s("outputs"));
//! let d = cfg.hidden_size as usize;
//! let close = |got: &[f32], want: &[f32]| {
//!     let max = want.iter().fold(0f32, |m, v| m.max(v.abs()));
//!     got.iter().zip(want).all(|(a, b)| (a - b).abs() <= 1e-5 * max)
//! };
//!
//! // Prefill 8 tokens in one call, then decode one.
//! let mut out = vec![0f32; 9 * d];
//! engine.forward(&x[..8 * d], &mut out[..8 * d])?;
//! engine.forward(&x[8 * d..9 * d], &mut out[8 * d..])?;
//! assert_eq!(engine.len(), 9);
//! assert!(close(&out, &want[..9 * d]));
//!
//! // Forget the last 4 tokens (say, rejected draft tokens) and go on from token 5.
//! engine.truncate(5)?;
//! engine.forward(&x[5 * d..6 * d], &mut out[..d])?;
//! assert_eq!(engine.len(), 6);
//! assert!(close(&out[..d], &want[5 * d..6 * d]));
//! # Ok::<(), mla_core::Error>(())
//! ```
// `no_std` always, except in its own unit tests (which use Vec and friends).
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
// Errors carry their message inline (no allocator), so `Result<_, Error>` is
// ~200 bytes; that is the price of a heap-free error with a precise message.
#![allow(clippy::result_large_err)]

#[cfg(all(feature = "std", not(test)))]
extern crate std;

// The modules marked `forbid(unsafe_code)` hold no unsafe code and never will:
// .ci/miri.sh runs the unit tests of the others (where undefined behaviour could
// hide) under Miri and leaves these to the native runs.
pub mod attention;
pub mod cache;
#[forbid(unsafe_code)]
pub mod config;
#[forbid(unsafe_code)]
mod decimal;
pub mod dsa;
pub mod dtype;
pub mod engine;
pub mod fp8;
#[forbid(unsafe_code)]
pub mod json;
pub mod kernels;
pub mod parallel;
pub mod plan;
#[forbid(unsafe_code)]
pub mod rope;
#[forbid(unsafe_code)]
pub mod safetensors;
#[forbid(unsafe_code)]
pub mod status;
#[forbid(unsafe_code)]
pub mod weights;

pub use config::{AttnMode, Config, Dims, RopeKey, RopeLayout};
pub use dtype::DType;
pub use engine::Engine;
pub use status::{Error, Result, Status};
pub use weights::{Tensor, Weights};

/// The crate version, from Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
