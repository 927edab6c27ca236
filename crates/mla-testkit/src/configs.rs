//! Small configs (weights of a few hundred values: fast under Miri and in fuzz
//! targets; fuzz/gen_corpus.py writes seed files for exactly these) and the
//! presets by name.
//!
//! mla-core's unit tests compile this same file (through `#[path]`, since mla-core
//! cannot depend on this crate): it names the config types as `crate::`, which
//! both crates provide.
#![allow(dead_code)]

use crate::{Config, RopeKey, RopeLayout};

/// d 8, H 2, r_q 6 with q_norm, r 4, n 4, p 2, v 4, shared rope key, interleaved
/// layout, YaRN factor 4 over L0 8; capacity 16 tokens, 4 per call.
pub fn tiny_qlora() -> Config {
    let mut c = Config::deepseek_v3();
    c.hidden_size = 8;
    c.num_heads = 2;
    c.q_lora_rank = 6;
    c.kv_lora_rank = 4;
    c.qk_nope_head_dim = 4;
    c.qk_rope_head_dim = 2;
    c.v_head_dim = 4;
    c.max_seq_len = 16;
    c.max_tokens_per_call = 4;
    c.original_max_position = 8;
    c.rope_factor = 4.0;
    c
}

/// d 8, H 2, plain q_proj (r_q 0), r 4, n 2, p 2, v 2, shared key, half layout, no YaRN.
pub fn tiny_qproj() -> Config {
    let mut c = tiny_qlora();
    c.q_lora_rank = 0;
    c.q_norm = false;
    c.qk_nope_head_dim = 2;
    c.v_head_dim = 2;
    c.rope_layout = RopeLayout::Half;
    c.rope_factor = 1.0;
    c
}

/// The tutorial's form, tiny: d 8, H 2, r_q 4 without norm, r 4, n 2, p 2, v 2,
/// per-head rope keys, half layout.
pub fn tiny_tutorial() -> Config {
    let mut c = tiny_qproj();
    c.q_lora_rank = 4;
    c.rope_key = RopeKey::PerHead;
    c
}

/// The same config with another capacity and call size.
pub fn with_capacity(cfg: Config, max_seq_len: u32, max_tokens_per_call: u32) -> Config {
    Config {
        max_seq_len,
        max_tokens_per_call,
        ..cfg
    }
}

/// A preset by name: `tutorial`, `v2lite`, `v3`.
pub fn preset(name: &str) -> Option<Config> {
    match name {
        "tutorial" => Some(Config::tutorial()),
        "v2lite" => Some(Config::deepseek_v2_lite()),
        "v3" => Some(Config::deepseek_v3()),
        _ => None,
    }
}
