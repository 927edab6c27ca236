//! Engine memory: zeroed and 64-byte aligned (`Engine::MEMORY_ALIGN`).

use mla_core::{Config, Engine};

/// 64-byte aligned, zeroed memory of a given length.
pub struct Arena {
    blocks: Vec<Block>,
    len: usize,
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Block([u8; 64]);

impl Arena {
    /// `len` zero bytes at a 64-byte boundary.
    pub fn new(len: usize) -> Arena {
        Arena {
            blocks: vec![Block([0; 64]); len.div_ceil(64)],
            len,
        }
    }

    /// Exactly the memory an engine for `cfg` needs (`Engine::memory_bytes`).
    pub fn for_config(cfg: &Config) -> Arena {
        Arena::new(Engine::memory_bytes(cfg).expect("Engine::memory_bytes"))
    }

    /// The bytes.
    pub fn get(&mut self) -> &mut [u8] {
        // SAFETY: Block is 64 plain bytes with no padding, so the Vec's
        // `blocks.len() * 64` bytes are initialised u8s; the slice borrows `self`
        // mutably, so nothing else reads or writes them meanwhile.
        let all = unsafe {
            std::slice::from_raw_parts_mut(
                self.blocks.as_mut_ptr() as *mut u8,
                self.blocks.len() * 64,
            )
        };
        &mut all[..self.len]
    }
}
