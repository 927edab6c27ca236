// The run plan, shared by build.rs (which sizes the engine's memory from it) and
// src/main.rs. Plain `const` items only: build.rs `include!`s this file.

/// Tokens in the golden case (checked against the file at run time).
pub const T: usize = 16;
/// Tokens per forward call: the prefill chunk (`max_tokens_per_call`).
pub const CHUNK: usize = 8;
