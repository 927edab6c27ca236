//! Batched decode throughput (`Engine::forward_batch`) beside its memory limit.
//!
//!     cargo run --release --example serve_bench -- [--ctx 1024,4096] [--n 1,2,4,8,16]
//!         [--threads 1,2] [--dtype f32,bf16] [--cache f32] [--layers N] [--budget 1.5]
//!
//! V2-Lite dims (d 2048, H 16, r 512, n 128, p 64, v 128, q_proj), random
//! weights (`--dtype`: f32, bf16, f16 or f8, the last FP8 E4M3 with 128 x 128
//! block scales), latent caches in `--cache` (f32, bf16, f16 or f8, the FP8
//! layout of the cache). Each of `--layers` layers has its own weights and 16 engines with
//! their own caches filled to the context (rows appended, no prefill); steps
//! go round the layers, so the weights are cold at every call: by default
//! enough layers (at least 3) that their weights are twice the last-level
//! cache, within a third of the available memory. A step is one `forward_batch` of `n` tokens (one per
//! engine, each engine truncated back after it). Memory limit: bytes a step
//! must read (weights once + `n` caches) / measured read bandwidth on at most
//! the same number of threads (mla_testkit::probe, as examples/bench.rs: the
//! best of several walks over 256 MiB, whole sweeps and 4 MiB chunks), as
//! tokens/s.
//! Tokens/s come from CPU time per step (process CPU time / steps / threads):
//! on a machine shared with other jobs the wall time also counts their time
//! slices; both are printed.

use std::time::Instant;

use mla_core::parallel::ParallelFor;
use mla_core::{Config, DType, Engine};
use mla_testkit::{probe, Arena, RandomWeights, Rng};

/// Two threads: this one and one spawned per call (even / odd tasks).
struct Two;

impl ParallelFor for Two {
    fn run(&self, n_tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        std::thread::scope(|s| {
            s.spawn(|| (1..n_tasks).step_by(2).for_each(task));
            (0..n_tasks).step_by(2).for_each(task);
        });
    }
}

fn list<T: std::str::FromStr>(s: &str) -> Vec<T> {
    s.split(',')
        .map(|v| v.parse().unwrap_or_else(|_| panic!("bad value {v}")))
        .collect()
}

/// Read bandwidth (GB/s) on up to `threads` threads (1 or 2: this benchmark's
/// thread pool is [`Two`]): the best of the shared probe
/// ([`mla_testkit::probe::read_bandwidth`], the same as examples/bench.rs uses)
/// over a 256 MiB buffer on 1 and, for 2, on 2 threads, so that the limit is a
/// rate the machine was seen to reach and the engine cannot beat.
fn bandwidth(threads: usize) -> f64 {
    let buf: Vec<f32> = (0..64usize << 20).map(|i| (i % 7) as f32).collect();
    let two = Two;
    let mut best = probe::read_bandwidth(&buf, 1, None, 5, 1).1;
    if threads > 1 {
        best = best.max(probe::read_bandwidth(&buf, 2, Some(&two), 5, 1).1);
    }
    best
}

/// CPU seconds of this process so far (user + system, /proc/self/stat; 0
/// where that is unavailable). With other jobs on the machine, wall time per
/// step counts their time slices too; CPU time does not.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    // Fields 14 and 15 of stat (utime, stime), counted after the ")".
    (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
}

/// The dtype named on the command line.
fn dtype_of(s: &str) -> DType {
    match s {
        "f32" => DType::F32,
        "bf16" => DType::BF16,
        "f16" => DType::F16,
        "f8" | "f8_e4m3" => DType::F8E4M3,
        _ => panic!("dtype {s}: f32, bf16, f16 or f8"),
    }
}

/// The name printed for a dtype.
fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        DType::F8E4M3 => "f8_e4m3",
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |k: &str, d: &str| -> String {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1).cloned())
            .unwrap_or_else(|| d.to_string())
    };
    let ctxs: Vec<usize> = list(&opt("--ctx", "1024,4096"));
    let ns: Vec<usize> = list(&opt("--n", "1,2,4,8,16"));
    let threads: Vec<usize> = list(&opt("--threads", "1,2"));
    assert!(
        threads.iter().all(|t| (1..=2).contains(t)),
        "--threads: 1 or 2 (the benchmark's pool runs two threads)"
    );
    let dtypes: Vec<String> = opt("--dtype", "f32,bf16")
        .split(',')
        .map(str::to_string)
        .collect();
    let caches: Vec<DType> = opt("--cache", "f32").split(',').map(dtype_of).collect();
    let layers_opt: Option<usize> = args
        .iter()
        .position(|a| a == "--layers")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap());
    let budget: f64 = opt("--budget", "1.5").parse().unwrap();
    let n_max = *ns.iter().max().unwrap();
    let ctx_max = *ctxs.iter().max().unwrap();

    let bw: Vec<(usize, f64)> = threads.iter().map(|&t| (t, bandwidth(t))).collect();
    println!(
        "serve_bench: V2-Lite dims, {n_max} engines a layer, last-level cache {} MiB, read bandwidth {}",
        probe::last_level_cache_bytes() >> 20,
        bw.iter()
            .map(|(t, b)| format!("{b:.1} GB/s ({t} thr)"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let two = Two;
    for (dt, &cache) in dtypes
        .iter()
        .flat_map(|dt| caches.iter().map(move |c| (dt, c)))
    {
        let dtype = dtype_of(dt);
        let mut cfg = Config::deepseek_v2_lite();
        cfg.max_seq_len = (ctx_max + 1) as u32;
        cfg.max_tokens_per_call = n_max as u32;
        cfg.cache_dtype = cache;
        cfg.validate().unwrap();
        let dims = cfg.dims().unwrap();
        let d = dims.d;
        let wbytes = RandomWeights::new(&cfg, dtype, 1).bytes();
        let arena_bytes = Engine::memory_bytes(&cfg).unwrap();
        let layers = layers_opt.unwrap_or_else(|| {
            let want = (2 * probe::last_level_cache_bytes())
                .div_ceil(wbytes)
                .max(3);
            let fit = probe::mem_available() / 3 / (wbytes + n_max * arena_bytes).max(1);
            want.min(fit).max(1)
        });
        let ws: Vec<RandomWeights> = (0..layers)
            .map(|l| RandomWeights::new(&cfg, dtype, 1 + l as u64))
            .collect();
        let weights: Vec<_> = ws.iter().map(|w| w.weights()).collect();
        let mut arenas: Vec<Arena> = (0..layers * n_max)
            .map(|_| Arena::for_config(&cfg))
            .collect();
        let mut engines: Vec<Engine> = arenas
            .iter_mut()
            .enumerate()
            .map(|(i, a)| Engine::new(&cfg, &weights[i / n_max], a.get()).unwrap())
            .collect();
        let rows = Rng::new(9).vec(ctx_max * dims.cache_row, 1.0);
        let x = Rng::new(10).vec(n_max * d, 1.0);
        let mut out = vec![0f32; n_max * d];
        for &ctx in &ctxs {
            for e in engines.iter_mut() {
                e.reset();
                e.append_cache_rows(&rows[..ctx * dims.cache_row]).unwrap();
            }
            for &(t, bwt) in &bw {
                for e in engines.iter_mut() {
                    e.set_parallel(if t > 1 { Some(&two) } else { None });
                }
                println!(
                    "\n{dt} weights ({} MB/layer, {layers} layers), {} cache, context {ctx}, {t} thread(s):",
                    wbytes >> 20,
                    dtype_name(cache)
                );
                println!(
                    "   n  wall ms/step  cpu ms/step  tokens/s(cpu)  limit tok/s  of limit  vs n=1"
                );
                let mut base = 0.0;
                for &n in &ns {
                    let mut times = Vec::new();
                    let t0 = Instant::now();
                    let c0 = cpu_seconds();
                    let mut layer = 0;
                    while times.len() < 3 * layers
                        || (t0.elapsed().as_secs_f64() < budget && times.len() < 300)
                    {
                        let group = &mut engines[layer * n_max..layer * n_max + n];
                        let mut refs: Vec<&mut Engine> = group.iter_mut().collect();
                        let t1 = Instant::now();
                        Engine::forward_batch(&mut refs, &x[..n * d], &mut out[..n * d]).unwrap();
                        times.push(t1.elapsed().as_secs_f64());
                        for e in refs {
                            e.truncate(ctx).unwrap();
                        }
                        layer = (layer + 1) % layers;
                    }
                    let cpu = (cpu_seconds() - c0) / times.len() as f64 / t as f64;
                    times.sort_by(f64::total_cmp);
                    let med = times[times.len() / 2];
                    let tps = n as f64 / cpu.max(1e-9);
                    let bytes = wbytes + n * (ctx + 1) * dims.cache_row_bytes;
                    let limit = n as f64 * bwt * 1e9 / bytes as f64;
                    if n == ns[0] {
                        base = tps / n.max(1) as f64 * ns[0] as f64;
                    }
                    println!(
                        "{n:>4} {:>13.3} {:>12.3} {tps:>14.1} {limit:>12.1} {:>8.2}x {:>6.2}x",
                        med * 1e3,
                        cpu * 1e3,
                        tps / limit,
                        tps / base
                    );
                }
            }
        }
    }
}
