// The run plan of src/main.rs (which sizes the engine's static memory from it).

/// Tokens in the golden case (checked against the file at run time).
pub const T: usize = 16;
/// Tokens per forward call: the prefill chunk (`max_tokens_per_call`).
pub const CHUNK: usize = 8;
