//! The core allocates nothing: a counting global allocator sees zero allocations
//! during Engine::new, forward (prefill and decode, both paths), truncate and reset.

use mla_core::{AttnMode, Engine};
use mla_testkit::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn engine_calls_allocate_nothing() {
    let g = Golden::load("tutorial");
    let t = g.n_tokens();
    let cfg = g.config(64);
    let w = g.weights(&cfg);
    let x = g.inputs();
    let d = cfg.hidden_size as usize;
    let mut out = vec![0f32; x.len()];
    let mut arena = Arena::new(Engine::memory_bytes(&cfg).unwrap());
    let mem = arena.get();

    let before = ALLOCS.load(Ordering::SeqCst);
    let mut e = Engine::new(&cfg, &w, mem).unwrap();
    e.forward_mode(&x, &mut out, AttnMode::Naive).unwrap();
    for i in 0..4 {
        let (xi, oi) = (&x[i * d..(i + 1) * d], &mut out[i * d..(i + 1) * d]);
        e.forward_mode(xi, oi, AttnMode::Absorb).unwrap();
    }
    e.truncate(t).unwrap();
    let bad = e.forward(&x[..0], &mut out[..0]).unwrap_err();
    e.reset();
    let after = ALLOCS.load(Ordering::SeqCst);
    assert_eq!(after - before, 0, "the core allocated");
    assert_eq!(bad.status(), mla_core::Status::InvalidArgument);
}
