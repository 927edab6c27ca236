//! Results do not depend on the thread count: every golden case, in every
//! schedule (one call, uneven chunks, token by token) and both attention paths,
//! gives bitwise the same outputs sequentially, on 1, 2 and 3 pool threads and
//! through the C-style host parallel-for; and still matches the reference.
//!
//! The golden cases are small: `set_parallel_min_work(0)` makes every call go
//! to the threads anyway. A long-context case with V2-Lite-like head counts
//! checks the same at sizes where the row ranges and head groups are many.

use mla_core::parallel::{HostParallelFor, ParallelFor, TaskFn, ThreadPool};
use mla_core::{AttnMode, Config, DType, Engine, Weights};
use mla_testkit::*;
use std::ffi::c_void;

fn run_with(
    cfg: &Config,
    w: &Weights,
    x: &[f32],
    chunks: &[usize],
    mode: AttnMode,
    par: Option<&dyn ParallelFor>,
    host: Option<HostParallelFor>,
) -> Vec<f32> {
    let d = cfg.hidden_size as usize;
    let mut arena = Arena::new(Engine::memory_bytes(cfg).unwrap());
    let mut e = Engine::new(cfg, w, arena.get()).unwrap();
    // Every parallel-for call really goes to the threads, even the small ones.
    e.set_parallel_min_work(0);
    if host.is_some() {
        e.set_parallel_host(host);
    } else {
        e.set_parallel(par);
    }
    let mut out = vec![0f32; x.len()];
    let mut t0 = 0;
    for &n in chunks {
        e.forward_mode(
            &x[t0 * d..(t0 + n) * d],
            &mut out[t0 * d..(t0 + n) * d],
            mode,
        )
        .unwrap();
        t0 += n;
    }
    out
}

/// A C host's parallel-for: runs the tasks on `std::thread::scope` threads,
/// `*(host_ctx as *const usize)` of them, each taking every k-th index.
unsafe extern "C" fn host_threads(
    host_ctx: *mut c_void,
    n_tasks: u32,
    task: TaskFn,
    task_ctx: *mut c_void,
) {
    // SAFETY: the test passes a pointer to a usize.
    let threads = unsafe { *(host_ctx as *const usize) };
    let ctx = task_ctx as usize;
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                for i in (t as u32..n_tasks).step_by(threads) {
                    // SAFETY: the engine's task function with its own context,
                    // each index once.
                    unsafe { task(ctx as *mut c_void, i) };
                }
            });
        }
    });
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn uneven(t: usize) -> Vec<usize> {
    let mut v = Vec::new();
    let mut left = t;
    for n in [3, 1, 5, 2, 7].iter().cycle() {
        if left == 0 {
            break;
        }
        let n = (*n).min(left);
        v.push(n);
        left -= n;
    }
    v
}

#[test]
fn golden_cases_are_bitwise_identical_on_1_2_3_threads() {
    let pools: Vec<ThreadPool> = [1, 2, 3].into_iter().map(ThreadPool::new).collect();
    let mut host_threads_n = 3usize;
    // SAFETY: host_threads is a valid parallel-for; its context (a usize) outlives the runs.
    let host = unsafe {
        HostParallelFor::new(
            host_threads,
            &mut host_threads_n as *mut usize as *mut c_void,
        )
    };
    for name in cases() {
        let g = Golden::load(&name);
        let t = g.n_tokens();
        for cd in [DType::F32, DType::BF16] {
            let cfg = Config {
                cache_dtype: cd,
                ..g.config(t as u32)
            };
            let w = g.weights(&cfg);
            let (x, want) = (g.inputs(), g.outputs());
            for mode in [AttnMode::Naive, AttnMode::Absorb, AttnMode::Auto] {
                for chunks in [vec![t], uneven(t), vec![1; t]] {
                    let base = run_with(&cfg, &w, &x, &chunks, mode, None, None);
                    let tol = if cd == DType::F32 { 1e-5 } else { 1e-2 };
                    let e = rel_err(&base, &want);
                    assert!(e <= tol, "{name} {cd:?} {mode:?}: rel err {e:e}");
                    for (i, pool) in pools.iter().enumerate() {
                        let got = run_with(&cfg, &w, &x, &chunks, mode, Some(pool), None);
                        assert!(
                            bits(&got) == bits(&base),
                            "{name} {cd:?} {mode:?} chunks {chunks:?}: {} threads differ",
                            i + 1
                        );
                    }
                    let got = run_with(&cfg, &w, &x, &chunks, mode, None, Some(host));
                    assert!(
                        bits(&got) == bits(&base),
                        "{name} {cd:?} {mode:?}: host parallel-for differs"
                    );
                }
            }
        }
        println!("{name}: sequential, 1/2/3 pool threads and a C host parallel-for agree bitwise");
    }
}

/// Random weights in the canonical layout for `cfg` (f32), owned.
struct Owned {
    mats: Vec<(Vec<f32>, usize, usize)>,
}

impl Owned {
    fn new(cfg: &Config, seed: u64) -> Owned {
        let dm = cfg.dims().unwrap();
        let mut s = seed;
        let mut rand = |rows: usize, cols: usize, norm: bool| {
            let v: Vec<f32> = (0..rows * cols)
                .map(|_| {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let u = ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
                    if norm {
                        1.0 + 0.1 * u
                    } else {
                        u * (3.0 / cols as f32).sqrt()
                    }
                })
                .collect();
            (v, rows, cols)
        };
        Owned {
            mats: vec![
                rand(dm.q_width, dm.d, false),
                rand(dm.kv_a_rows, dm.d, false),
                rand(1, dm.r, true),
                rand(dm.kv_b_rows, dm.r, false),
                rand(dm.d, dm.o_cols, false),
            ],
        }
    }

    fn weights(&self) -> Weights<'_> {
        let t = |i: usize| {
            let (v, r, c) = &self.mats[i];
            mla_core::Tensor::f32(v, *r, *c).unwrap()
        };
        Weights {
            q_proj: Some(t(0)),
            q_a_proj: None,
            q_a_layernorm: None,
            q_b_proj: None,
            kv_a_proj_with_mqa: t(1),
            kv_a_layernorm: t(2),
            kv_b_proj: t(3),
            o_proj: t(4),
            q_a_proj_bias: None,
            kv_a_proj_bias: None,
            o_proj_bias: None,
        }
    }
}

#[test]
fn long_context_work_is_spread_and_identical() {
    // V2-Lite-like heads and ranks at a small hidden size: the attention work is
    // far above MIN_PARALLEL_WORK, so the row ranges and head groups really run
    // on several threads.
    let cfg = Config {
        hidden_size: 256,
        num_heads: 16,
        kv_lora_rank: 128,
        qk_nope_head_dim: 32,
        qk_rope_head_dim: 16,
        v_head_dim: 32,
        max_seq_len: 1100,
        max_tokens_per_call: 40,
        original_max_position: 256,
        ..Config::deepseek_v2_lite()
    };
    let own = Owned::new(&cfg, 5);
    let w = own.weights();
    let d = cfg.hidden_size as usize;
    let mut s = 1u64;
    let x: Vec<f32> = (0..1060 * d)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect();
    // 1020 tokens of prefill in chunks of 40 (naive), then 40 decode steps (absorbed).
    let mut chunks = vec![40; 1020 / 40];
    chunks.extend([1; 40]);
    let pools: Vec<ThreadPool> = [2, 3].into_iter().map(ThreadPool::new).collect();
    let base = run_with(&cfg, &w, &x, &chunks, AttnMode::Auto, None, None);
    assert!(base.iter().all(|v| v.is_finite()));
    for pool in &pools {
        let got = run_with(&cfg, &w, &x, &chunks, AttnMode::Auto, Some(pool), None);
        assert!(
            bits(&got) == bits(&base),
            "{} threads differ",
            pool.threads()
        );
    }
    // The naive path throughout agrees with auto to f32 rounding.
    let naive = run_with(
        &cfg,
        &w,
        &x[..120 * d],
        &[40, 40, 40],
        AttnMode::Naive,
        Some(&pools[0]),
        None,
    );
    let e = rel_err(&naive, &base[..120 * d]);
    assert!(e < 1e-5, "naive vs auto: {e:e}");
}
