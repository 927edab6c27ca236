//! Shared by the fuzz targets: the small configs the seed corpus was written for
//! (fuzz/gen_corpus.py writes files for exactly these), and aligned copies.
#![allow(dead_code)]

use mla_core::{Config, RopeKey, RopeLayout};

/// Weight prefix used by the seed files.
pub const PREFIX: &str = "model.layers.0.self_attn.";

/// d 8, H 2, r_q 6 with q_norm, r 4, n 4, p 2, v 4, shared key, interleaved.
pub fn cfg_qlora() -> Config {
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

/// d 8, H 2, plain q_proj, r 4, n 2, p 2, v 2, shared key, half layout, biases.
pub fn cfg_qproj() -> Config {
    let mut c = cfg_qlora();
    c.q_lora_rank = 0;
    c.q_norm = false;
    c.qk_nope_head_dim = 2;
    c.v_head_dim = 2;
    c.rope_layout = RopeLayout::Half;
    c.rope_factor = 1.0;
    c
}

/// d 8, H 2, r_q 4 without norm, r 4, n 2, p 2, v 2, per-head key (the tutorial's form).
pub fn cfg_tutorial() -> Config {
    let mut c = cfg_qproj();
    c.q_lora_rank = 4;
    c.rope_key = RopeKey::PerHead;
    c
}

/// `bytes` copied to the start of 8-byte aligned storage (plus `shift` bytes).
pub struct Aligned {
    words: Vec<u64>,
    shift: usize,
    len: usize,
}

impl Aligned {
    pub fn new(bytes: &[u8], shift: usize) -> Aligned {
        let mut words = vec![0u64; (bytes.len() + shift).div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[shift..shift + bytes.len()]
            .copy_from_slice(bytes);
        Aligned {
            words,
            shift,
            len: bytes.len(),
        }
    }

    pub fn get(&self) -> &[u8] {
        &bytemuck::cast_slice::<u64, u8>(&self.words)[self.shift..self.shift + self.len]
    }
}

/// 64-byte aligned, zeroed memory for an engine.
pub struct Aligned64 {
    blocks: Vec<Block>,
    len: usize,
}

#[derive(Clone, Copy, bytemuck::Zeroable, bytemuck::Pod)]
#[repr(C, align(64))]
struct Block([u8; 64]);

impl Aligned64 {
    pub fn new(len: usize) -> Aligned64 {
        Aligned64 {
            blocks: vec![Block([0; 64]); len.div_ceil(64)],
            len,
        }
    }

    pub fn get(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut::<Block, u8>(&mut self.blocks)[..self.len]
    }
}
