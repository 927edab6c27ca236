//! The one home of the helpers that the tests, fuzz targets and examples of mla-rt
//! share (not published):
//!
//! - [`golden`]: the golden cases of `tests/data` ([`Golden`], [`cases`]) and the
//!   error measure of docs/design.md ([`rel_err`]);
//! - [`family`]: the tiny Hugging Face checkpoints of `tests/data/families`
//!   ([`FamilyCase`]: config.json, model.safetensors, golden tensors per layer,
//!   a layer's `(Config, Weights)` through `from_hf_json` + `bind_layer`);
//! - [`json_tree`]: a JSON value tree read with mla-core's scanner ([`Json`]);
//! - [`arena`]: 64-byte aligned, zeroed engine memory ([`Arena`]);
//! - [`mod@run`]: a case through a fresh engine in one call, uneven chunks or token by
//!   token, any attention mode, optionally on threads ([`run()`], [`Run`],
//!   [`Schedule`]);
//! - [`configs`]: small configs (q_lora, plain q_proj, per-head rope keys) and the
//!   presets by name;
//! - [`random`]: seeded xorshift values and random weights in any dtype
//!   ([`Rng`], [`RandomWeights`]);
//! - [`convert`]: weights rounded to f16/bf16 ([`Converted`]);
//! - [`st_file`]: safetensors files built in memory ([`Writer`]) and 8-byte aligned
//!   byte buffers ([`AlignedBytes`]). It uses only `std`, so mla-core's own unit
//!   tests compile the same file.
//!
//! Helpers panic on misuse and on I/O errors (with the path): they are for tests.

pub mod arena;
pub mod configs;
pub mod convert;
pub mod family;
pub mod golden;
pub mod json_tree;
pub mod probe;
pub mod random;
pub mod run;
pub mod st_file;

// For configs.rs, which mla-core's unit tests compile too (as `crate::Config` there).
use mla_core::{Config, RopeKey, RopeLayout};

pub use arena::Arena;
pub use convert::{named_tensors, Converted, TENSOR_NAMES};
pub use family::{family_cases, FamilyCase};
pub use golden::{cases, data_dir, rel_err, Golden, PREFIX};
pub use json_tree::Json;
pub use random::{Mat, RandomWeights, Rng};
pub use run::{forward_chunks, run, same_bits, uneven, Run, Schedule};
pub use st_file::{file, AlignedBytes, Writer};
