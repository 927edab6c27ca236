//! Zero-copy, allocation-free reader of the safetensors format, and the binder that
//! turns one layer's Hugging Face tensors into [`Weights`](crate::Weights).
//!
//! File layout: 8 bytes little-endian `N`, then `N` bytes of UTF-8 JSON (the header),
//! then the data section. The header is one JSON object: each key is a tensor name
//! mapped to `{"dtype": "F32", "shape": [rows, cols], "data_offsets": [begin, end]}`
//! (offsets relative to the data section), plus an optional `"__metadata__"` object
//! of string values.
//!
//! [`SafeTensors::parse`] checks everything up front with the crate's strict JSON
//! scanner ([`json`]: no allocation, no recursion, nesting at most [`MAX_DEPTH`]):
//! the header length, UTF-8, the JSON grammar (escapes, numbers, nesting, no
//! trailing bytes), every tensor entry (known dtype, rank <= [`MAX_RANK`], element
//! and byte counts without overflow, `begin <= end <= data length`, `end - begin` =
//! the bytes the shape needs), that no key appears twice (tensor names,
//! `__metadata__`, the fields of an entry, the keys of the metadata), and that the
//! tensors tile the data section exactly (no overlap, no hole, no trailing bytes).
//! Nothing is stored: lookups re-scan the validated header, so a [`SafeTensors`]
//! is a few words and the data stays where it is. Every malformed or hostile input
//! gets a [`Status`](crate::Status), never a panic.
//!
//! Cost: one pass over the header when the tensors are listed in offset order and
//! their names in ascending order, as the safetensors library writes them; other
//! orders cost a sort in a fixed stack buffer ([`MAX_UNORDERED_TENSORS`] offset
//! pairs, [`json::KEY_BLOCK`] name hashes) and at most a few more passes.
//!
//! - [`json`] (= [`crate::json`]): the JSON scanner, shared with the reader of
//!   Hugging Face `config.json`;
//! - `reader`: [`SafeTensors`], [`TensorView`], [`FileDType`];
//! - `binder`: [`bind_weights`], [`config_from_metadata`].

/// The JSON scanner, now [`crate::json`] (config.json is not safetensors); this
/// path stays for existing users.
pub use crate::json;

mod binder;
mod reader;

pub(crate) use crate::status::{error, push, Piece};

pub use binder::{bind_layer, bind_weights, config_from_metadata};
pub use json::MAX_DEPTH;
pub use reader::{
    FileDType, SafeTensors, TensorView, Tensors, MAX_HEADER_BYTES, MAX_RANK, MAX_UNORDERED_TENSORS,
};

/// Formerly the largest header accepted when `data_offsets` are not in header
/// order; the check now sorts the offsets in one pass and has no header limit.
#[deprecated(note = "no longer a limit: out-of-order offsets are sorted in one pass")]
pub const MAX_UNORDERED_HEADER_BYTES: usize = 256 * 1024;

/// A safetensors writer and aligned buffers for the unit tests: the same file as
/// mla-testkit's (`crates/mla-testkit/src/st_file.rs`), which this crate cannot
/// depend on (mla-testkit depends on mla-core).
#[cfg(test)]
#[path = "../../../mla-testkit/src/st_file.rs"]
mod st_file;

/// The small configs of mla-testkit (`crates/mla-testkit/src/configs.rs`), for the
/// unit tests, likewise.
#[cfg(test)]
#[path = "../../../mla-testkit/src/configs.rs"]
mod configs;
