//! DeepSeek Sparse Attention decode benchmark: one layer at DeepSeek-V3.2
//! attention dims, dense beside sparse in the same run, per context length.
//!
//!     cargo run --release --example dsa_bench -- [--heads 64] [--topk 2048]
//!         [--ctx 1024,2048,4096,8192,16384,32768,65536] [--weights bf16|f32]
//!         [--index-cache f32|bf16] [--threads 1] [--budget 1.0]
//!
//! Dims: d 7168, r_q 1536, r 512, n 128, p 64, v 128 (DeepSeek-V3.2); H = 128
//! there (the default), `--heads` cuts it for small machines; indexer Hi 64,
//! Di 128, top-k 2048. Weights random (fixed seed), caches filled with random
//! rows (`append_cache_rows` / `append_indexed_rows`). Per context L, the median
//! time of one decode step (the engine at L tokens, one more token, then
//! truncated back to L; the least of the repetitions, in thread CPU time on
//! Linux, so that other processes on a shared machine do not count;
//! use `--threads 1` for that to hold):
//!
//! - `proj`: the projections, the same for both (a step at context 1);
//! - `dense`: dense attention (`dsa` none) = step - proj;
//! - `sparse`: the sparse layer's step - proj: the indexer (its projections,
//!   the scores of all L keys, the top-k) plus attention over the 2048 selected
//!   rows only;
//! - `indexer`: of `sparse`, the scores of the L keys and the top-k alone
//!   (`mla_core::dsa::score_cache` + `select_topk` on the engine's own index
//!   cache, same thread count) — the part that grows with the context;
//! - `top-k ms`: of `indexer`, the top-k selection alone;
//! - `(share)`: indexer / sparse;
//! - `speedup`: dense / sparse.

use mla_core::config::{Dsa, IndexRope, RopeLayout};
use mla_core::dsa::{self, IndexShape, IndexerWeights, SCORE_BLOCK};
use mla_core::kernels::isa;
use mla_core::parallel::{ParallelFor, ThreadPool};
use mla_core::{AttnMode, Config, DType, Engine};
use mla_testkit::random::Init;
use mla_testkit::{Arena, Mat, RandomWeights, Rng};
use std::time::Instant;

struct Opts {
    heads: u32,
    topk: u32,
    ctx: Vec<usize>,
    weights: DType,
    index_cache: DType,
    threads: usize,
    budget: f64,
}

fn dtype(s: &str) -> DType {
    match s {
        "f32" => DType::F32,
        "bf16" => DType::BF16,
        _ => panic!("dtype {s}: f32 or bf16"),
    }
}

fn opts() -> Opts {
    let mut o = Opts {
        heads: 128,
        topk: 2048,
        ctx: vec![1024, 2048, 4096, 8192, 16384, 32768, 65536],
        weights: DType::BF16,
        index_cache: DType::F32,
        threads: 1,
        budget: 1.0,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--heads" => o.heads = v.parse().expect("--heads N"),
            "--topk" => o.topk = v.parse().expect("--topk N"),
            "--ctx" => o.ctx = v.split(',').map(|c| c.parse().expect("--ctx")).collect(),
            "--weights" => o.weights = dtype(&v),
            "--index-cache" => o.index_cache = dtype(&v),
            "--threads" => o.threads = v.parse().expect("--threads N"),
            "--budget" => o.budget = v.parse().expect("--budget seconds"),
            a => panic!("unknown option {a}"),
        }
        i += 2;
    }
    o.ctx.sort();
    o
}

/// CPU time of the calling thread in seconds (Linux: CLOCK_THREAD_CPUTIME_ID,
/// the time it ran, not the time it waited for a core), else `None`.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn thread_cpu() -> Option<f64> {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec (two 64-bit fields on 64-bit
    // Linux); clock_gettime writes only it.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then_some(ts.sec as f64 + ts.nsec as f64 * 1e-9)
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
fn thread_cpu() -> Option<f64> {
    None
}

/// Least seconds of `step` over at least 3 runs (until `budget` seconds of wall
/// time): thread CPU time where the OS reports it (single-threaded runs on a
/// shared machine), else wall time; the minimum, as noise only adds.
fn time_it(budget: f64, mut step: impl FnMut()) -> f64 {
    step();
    let mut t = Vec::new();
    let t0 = Instant::now();
    while t.len() < 3 || (t0.elapsed().as_secs_f64() < budget && t.len() < 100) {
        let (c, s) = (thread_cpu(), Instant::now());
        step();
        t.push(match (c, thread_cpu()) {
            (Some(a), Some(b)) => b - a,
            _ => s.elapsed().as_secs_f64(),
        });
    }
    t.iter().copied().fold(f64::INFINITY, f64::min)
}

fn main() {
    let o = opts();
    let max_ctx = *o.ctx.last().expect("--ctx");
    let dense_cfg = Config {
        num_heads: o.heads,
        max_seq_len: (max_ctx + 1) as u32,
        max_tokens_per_call: 1,
        attn_mode: AttnMode::Absorb,
        ..Config::deepseek_v3()
    };
    let sparse_cfg = Config {
        dsa: Dsa::Full,
        index_n_heads: 64,
        index_head_dim: 128,
        index_topk: o.topk,
        index_rope: IndexRope::First,
        index_rope_layout: RopeLayout::Half,
        index_cache_dtype: o.index_cache,
        ..dense_cfg
    };
    let dm = sparse_cfg.dims().expect("config");
    let (d, rq, hi, di) = (dm.d, dm.rq, dm.index_heads, dm.index_dim);
    let rw = RandomWeights::new(&dense_cfg, o.weights, 7);
    let w = rw.weights();
    let rng = &mut Rng::new(11);
    let mats = [
        Mat::random(rng, "wq_b", (hi * di, rq), o.weights, Init::Linear),
        Mat::random(rng, "wk", (di, d), o.weights, Init::Linear),
        Mat::random(rng, "k_norm", (1, di), DType::F32, Init::Norm),
        Mat::random(rng, "k_norm_bias", (1, di), DType::F32, Init::Bias),
        Mat::random(rng, "weights_proj", (hi, d), o.weights, Init::Linear),
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
    let pool = ThreadPool::new(o.threads);
    let par: Option<&dyn ParallelFor> = (o.threads > 1).then_some(&pool as &dyn ParallelFor);
    let (mut mem_d, mut mem_s) = (
        Arena::for_config(&dense_cfg),
        Arena::for_config(&sparse_cfg),
    );
    let mut dense = Engine::new(&dense_cfg, &w, mem_d.get()).expect("dense engine");
    let mut sparse =
        Engine::with_indexer(&sparse_cfg, &w, Some(iw), mem_s.get()).expect("sparse engine");
    dense.set_parallel(par);
    sparse.set_parallel(par);
    let x: Vec<f32> = (0..d).map(|_| rng.uniform()).collect();
    let mut out = vec![0f32; d];
    println!(
        "DSA decode, one layer: d {d}, H {} (DeepSeek-V3.2: 128), r_q {rq}, r {}, n {}, p {}, v {}; \
         indexer Hi {hi} Di {di} top-k {}; weights {}, latent cache f32, index cache {}; {} thread(s), kernels {:?}",
        dm.h, dm.r, dm.n, dm.p, dm.v, o.topk, o.weights.name(), o.index_cache.name(), o.threads, isa()
    );
    // Projections: a step at context 1 (attention over one row).
    let proj = time_it(o.budget, || {
        dense.forward(&x, &mut out).unwrap();
        dense.truncate(0).unwrap();
    });
    println!(
        "{:>7} {:>9} {:>10} {:>10} {:>10} {:>8} {:>9} {:>8}",
        "context",
        "proj ms",
        "dense ms",
        "sparse ms",
        "indexer ms",
        "top-k ms",
        "(share)",
        "speedup"
    );
    let shape = IndexShape {
        heads: hi,
        dim: di,
        rope_dims: dm.p,
        rope: IndexRope::First,
        layout: RopeLayout::Half,
    };
    let q: Vec<f32> = (0..hi * di).map(|_| rng.uniform()).collect();
    let mut q_t = vec![0f32; hi * di];
    assert!(dsa::transpose_query(&shape, &q, &mut q_t));
    let wts: Vec<f32> = (0..hi).map(|_| rng.uniform()).collect();
    let (mut widen, mut dots) = (vec![0f32; SCORE_BLOCK * di], vec![0f32; SCORE_BLOCK * hi]);
    let mut scores = vec![0f32; max_ctx];
    let mut sel = vec![0u32; o.topk as usize];
    for &ctx in &o.ctx {
        // Fill both caches up to ctx with random rows (and index keys).
        let n = ctx - dense.len();
        if n > 0 {
            let rows: Vec<f32> = (0..n * dm.cache_row).map(|_| 1.7 * rng.uniform()).collect();
            let keys: Vec<f32> = (0..n * di).map(|_| 1.7 * rng.uniform()).collect();
            dense.append_cache_rows(&rows).unwrap();
            sparse.append_indexed_rows(&rows, &keys).unwrap();
        }
        let t_dense = time_it(o.budget, || {
            dense.forward(&x, &mut out).unwrap();
            dense.truncate(ctx).unwrap();
        });
        let t_sparse = time_it(o.budget, || {
            sparse.forward(&x, &mut out).unwrap();
            sparse.truncate(ctx).unwrap();
        });
        let ic = sparse.index_cache().expect("index cache");
        let t_index = time_it(o.budget, || {
            assert!(dsa::score_cache(
                isa(),
                &shape,
                ic,
                ctx,
                &q_t,
                &wts,
                &mut widen,
                &mut dots,
                &mut scores[..ctx],
            ));
            dsa::select_topk(&scores[..ctx], o.topk as usize, &mut sel);
        });
        let t_topk = time_it(o.budget / 4.0, || {
            dsa::select_topk(&scores[..ctx], o.topk as usize, &mut sel);
        });
        let (ad, asp) = (t_dense - proj, t_sparse - proj);
        println!(
            "{:>7} {:>9.2} {:>10.2} {:>10.2} {:>10.2} {:>8.2} {:>8.0}% {:>7.1}x",
            ctx,
            proj * 1e3,
            ad * 1e3,
            asp * 1e3,
            t_index * 1e3,
            t_topk * 1e3,
            100.0 * t_index / asp,
            ad / asp
        );
    }
}
