//! Results do not depend on the thread count: every golden case, in every
//! schedule (one call, uneven chunks, token by token) and both attention paths,
//! gives bitwise the same outputs sequentially, on 1, 2 and 3 pool threads and
//! through the C-style host parallel-for; and still matches the reference.
//!
//! The golden cases are small: `set_parallel_min_work(0)` makes every call go
//! to the threads anyway. A long-context case with V2-Lite-like head counts
//! checks the same at sizes where the row ranges and head groups are many.

use mla_core::parallel::{HostParallelFor, ParallelFor, TaskFn, ThreadPool};
use mla_core::{AttnMode, Config, DType};
use mla_testkit::*;
use std::ffi::c_void;

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
                for sched in Schedule::ALL {
                    let chunks = sched.chunks(t);
                    let base = run(&cfg, &w, &x, &chunks, mode);
                    let tol = if cd == DType::F32 { 1e-5 } else { 1e-2 };
                    let e = rel_err(&base, &want);
                    assert!(e <= tol, "{name} {cd:?} {mode:?}: rel err {e:e}");
                    for (i, pool) in pools.iter().enumerate() {
                        let got = Run::mode(mode).on(pool).run(&cfg, &w, &x, &chunks);
                        assert!(
                            same_bits(&got, &base),
                            "{name} {cd:?} {mode:?} chunks {chunks:?}: {} threads differ",
                            i + 1
                        );
                    }
                    let got = Run::mode(mode).on_host(host).run(&cfg, &w, &x, &chunks);
                    assert!(
                        same_bits(&got, &base),
                        "{name} {cd:?} {mode:?}: host parallel-for differs"
                    );
                }
            }
        }
        println!("{name}: sequential, 1/2/3 pool threads and a C host parallel-for agree bitwise");
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
    let own = RandomWeights::new(&cfg, DType::F32, 5);
    let w = own.weights();
    let d = cfg.hidden_size as usize;
    // 1000 tokens of prefill in chunks of 40 (naive), then 40 decode steps (absorbed).
    let x = Rng::new(1).vec(1040 * d, 0.5);
    let mut chunks = vec![40; 1000 / 40];
    chunks.extend([1; 40]);
    let pools: Vec<ThreadPool> = [2, 3].into_iter().map(ThreadPool::new).collect();
    let base = run(&cfg, &w, &x, &chunks, AttnMode::Auto);
    assert!(base.iter().all(|v| v.is_finite()));
    for pool in &pools {
        let got = Run::mode(AttnMode::Auto)
            .on(pool)
            .run(&cfg, &w, &x, &chunks);
        assert!(same_bits(&got, &base), "{} threads differ", pool.threads());
    }
    // The naive path throughout agrees with auto to f32 rounding.
    let naive =
        Run::mode(AttnMode::Naive)
            .on(&pools[0])
            .run(&cfg, &w, &x[..120 * d], &[40, 40, 40]);
    let e = rel_err(&naive, &base[..120 * d]);
    assert!(e < 1e-5, "naive vs auto: {e:e}");
}
