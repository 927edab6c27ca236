//! The core allocates nothing: a counting global allocator sees zero allocations
//! on the calling thread during Engine::new, forward (prefill and decode, both
//! paths), forward_batch, truncate and reset. (The core has no threads of its own
//! and these tests give it no parallel-for, so everything it does runs on the
//! test's thread; the test harness's threads allocate whenever they like and are
//! not counted.)

use mla_core::{AttnMode, Engine};
use mla_testkit::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    /// Allocations made by this thread. Const-initialised and without a
    /// destructor: reading it never allocates and works at any point of a
    /// thread's life.
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

/// Allocations made so far by the calling thread.
fn allocs() -> usize {
    ALLOCS.with(Cell::get)
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|n| n.set(n.get() + 1));
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
    // The counter sees this thread's allocations.
    let n0 = allocs();
    let probe = std::hint::black_box(vec![1u8; 3]);
    assert_eq!(allocs() - n0, 1, "the counting allocator is not in use");
    drop(probe);
    // The one-time CPU-feature detection may allocate (std reads the auxiliary
    // vector, under qemu from /proc); it runs once per process, before any engine.
    let _ = mla_core::kernels::isa();
    let g = Golden::load("tutorial");
    let t = g.n_tokens();
    let cfg = g.config(64);
    let w = g.weights(&cfg);
    let x = g.inputs();
    let d = cfg.hidden_size as usize;
    let mut out = vec![0f32; x.len()];
    let mut arena = Arena::new(Engine::memory_bytes(&cfg).unwrap());
    let mut arena2 = Arena::new(Engine::memory_bytes(&cfg).unwrap());
    let mem = arena.get();

    let before = allocs();
    let mut e = Engine::new(&cfg, &w, mem).unwrap();
    e.forward_mode(&x, &mut out, AttnMode::Naive).unwrap();
    for i in 0..4 {
        let (xi, oi) = (&x[i * d..(i + 1) * d], &mut out[i * d..(i + 1) * d]);
        e.forward_mode(xi, oi, AttnMode::Absorb).unwrap();
    }
    e.truncate(t).unwrap();
    let bad = e.forward(&x[..0], &mut out[..0]).unwrap_err();
    // A batched decode step over two engines (the batch is a stack array).
    let mut e2 = Engine::new(&cfg, &w, arena2.get()).unwrap();
    Engine::forward_batch(&mut [&mut e, &mut e2], &x[..2 * d], &mut out[..2 * d]).unwrap();
    e.reset();
    let after = allocs();
    assert_eq!(after - before, 0, "the core allocated");
    assert_eq!(bad.status(), mla_core::Status::InvalidArgument);
}

#[test]
fn sparse_attention_allocates_nothing() {
    // The one-time CPU-feature detection may allocate (std reads the auxiliary
    // vector, under qemu from /proc); it runs once per process, before any engine.
    let _ = mla_core::kernels::isa();
    use mla_core::config::Dsa;
    use mla_core::dsa::IndexerWeights;
    use mla_testkit::random::Init;
    let dense = mla_core::Config {
        max_seq_len: 300,
        max_tokens_per_call: 64,
        ..configs::tiny_qlora()
    };
    let full = mla_core::Config {
        dsa: Dsa::Full,
        index_n_heads: 4,
        index_head_dim: 16,
        index_topk: 16,
        ..dense
    };
    let shared = mla_core::Config {
        dsa: Dsa::Shared,
        ..full
    };
    let dm = full.dims().unwrap();
    let rw = RandomWeights::new(&dense, mla_core::DType::F32, 3);
    let w = rw.weights();
    let rng = &mut Rng::new(5);
    let f32 = mla_core::DType::F32;
    let mats = [
        Mat::random(rng, "wq_b", (64, dm.rq), f32, Init::Linear),
        Mat::random(rng, "wk", (16, dm.d), f32, Init::Linear),
        Mat::random(rng, "k_norm", (1, 16), f32, Init::Norm),
        Mat::random(rng, "k_norm_bias", (1, 16), f32, Init::Bias),
        Mat::random(rng, "weights_proj", (4, dm.d), f32, Init::Linear),
    ];
    let iw = IndexerWeights {
        wq_b: mats[0].tensor(),
        wk: mats[1].tensor(),
        k_norm: mats[2].tensor(),
        k_norm_bias: mats[3].tensor(),
        weights_proj: mats[4].tensor(),
        q_norm: None,
        query_scale: None,
    };
    let d = dm.d;
    let x: Vec<f32> = (0..100 * d).map(|_| rng.uniform()).collect();
    let mut out = vec![0f32; x.len()];
    let (mut a0, mut a1) = (
        Arena::new(Engine::memory_bytes(&full).unwrap()),
        Arena::new(Engine::memory_bytes(&shared).unwrap()),
    );
    let (m0, m1) = (a0.get(), a1.get());

    let before = allocs();
    let mut p = Engine::with_indexer(&full, &w, Some(iw), m0).unwrap();
    let mut c = Engine::new(&shared, &w, m1).unwrap();
    p.forward_mode(&x[..64 * d], &mut out[..64 * d], AttnMode::Naive)
        .unwrap();
    c.forward_shared_topk(&p, &x[..64 * d], &mut out[..64 * d], AttnMode::Naive)
        .unwrap();
    for i in 64..100 {
        let (xi, oi) = (&x[i * d..(i + 1) * d], &mut out[i * d..(i + 1) * d]);
        p.forward_mode(xi, oi, AttnMode::Absorb).unwrap();
        c.forward_shared_topk(&p, xi, oi, AttnMode::Absorb).unwrap();
    }
    p.truncate(50).unwrap();
    let bad = c.forward(&x[..d], &mut out[..d]).unwrap_err();
    p.reset();
    let after = allocs();
    assert_eq!(after - before, 0, "the core allocated");
    assert_eq!(bad.status(), mla_core::Status::InvalidArgument);
}
