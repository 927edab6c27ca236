//! Performance benchmark: decode and prefill of one MLA layer beside the
//! machine's limits, measured in the same run.
//!
//!     cargo run --release --example bench -- [--quick | --full] [--json FILE]
//!         [--config tutorial,v2lite,v3] [--weights f32,bf16,f8] [--cache f32,bf16,f8]
//!         [--threads 1,2] [--ctx 1,256,1024,4096,16384] [--prefill 512]
//!         [--layers hot,cold] [--no-probe] [--probe-mib N]
//!
//! What it prints (and writes as JSON lines with --json):
//! - the machine: CPU model, cores, caches, load average, the kernels' ISA;
//! - probes: read bandwidth (a SIMD sum over a buffer much larger than the
//!   last-level cache, walked as one stream, four streams, and four streams
//!   with software prefetch; the limit is the best, over whole sweeps and
//!   over 4 MiB chunks timed one by one, since on a shared machine a short
//!   interval often runs uninterrupted and a long one rarely does) and FMA
//!   peak (independent FMA chains in registers, on the ISA the engine's
//!   kernels use; best also over short bursts), on one
//!   thread and on all threads, through the same thread pool the engine uses;
//!   the limit for `t` threads is the best probe with at most `t` threads;
//! - decode: ms per step at each context length (the cache filled with random
//!   rows by `Engine::append_cache_rows`), bytes moved per step (all weights +
//!   the cache rows read), effective GB/s, GFLOP/s, and two ratios ours /
//!   limit: the bytes-only roofline (bytes / BW) and the compute-aware limit
//!   `weights / BW + max(cache / BW, attention FLOPs / FMA peak)`. BW is the
//!   read probe's best for `cold`, and the best read of a buffer the size of
//!   the layer's working set for `hot` (it may sit in the last-level cache).
//!   The engine's best cold step at the smallest context is checked against
//!   the probe (it cannot read faster). Any ratio below 1 is marked `!!`,
//!   listed at the end, and the bench exits with status 1: a limit is wrong.
//!   `hot`: one layer run step after step (its weights stay in cache if they
//!   fit); `cold`: enough independent layers (own weights and cache each) run
//!   in turn that their working set is twice the last-level cache, as in a
//!   model with many layers: the honest memory-bound figure. Times are per layer.
//! - prefill: tokens/s for a prompt of `--prefill` tokens from an empty cache,
//!   GFLOP/s (useful FLOPs: 2 x the multiply-adds of the projections, the
//!   decompression of the cached rows and the causal attention) and the ratio
//!   ours / limit, limit = FLOPs / FMA peak (same thread count).
//!
//! Weights are random (xorshift, fixed seed). Every figure is the median of the
//! repetitions (the minimum is in the JSON). Default: configs tutorial and
//! v2lite, f32 and bf16 weights, f32 and bf16 caches, 1 and all threads.
//! `--quick`: v2lite only, f32 cache, contexts 1/1024/4096, shorter runs.
//! `--full`: also DeepSeek-V3 attention dims (~190M parameters: 750 MB f32).

use mla_core::parallel::{ParallelFor, ThreadPool};
use mla_core::{AttnMode, Config, DType, Engine, Weights};
use mla_testkit::{configs, probe, Arena, RandomWeights, Rng};
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Instant;

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Opts {
    configs: Vec<String>,
    weights: Vec<DType>,
    caches: Vec<DType>,
    threads: Vec<usize>,
    ctx: Vec<usize>,
    prefill: usize,
    modes: Vec<String>,
    json: Option<String>,
    probe: bool,
    probe_mib: usize,
    budget_s: f64,
}

fn parse_list<T>(s: &str, f: impl Fn(&str) -> Option<T>) -> Vec<T> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(|x| f(x.trim()).unwrap_or_else(|| die(&format!("bad list item {x:?}"))))
        .collect()
}

fn die(msg: &str) -> ! {
    eprintln!("bench: {msg}");
    std::process::exit(2)
}

fn dtype(s: &str) -> Option<DType> {
    match s {
        "f32" => Some(DType::F32),
        "f16" => Some(DType::F16),
        "bf16" => Some(DType::BF16),
        _ => None,
    }
}

/// A cache or weight dtype: those of [`dtype`] and `f8` (the FP8 latent
/// cache; FP8 weights with block scales).
fn cache_dtype(s: &str) -> Option<DType> {
    match s {
        "f8" | "f8_e4m3" => Some(DType::F8E4M3),
        _ => dtype(s),
    }
}

fn all_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn parse_args() -> Opts {
    let all = all_threads();
    let mut o = Opts {
        configs: vec!["tutorial".into(), "v2lite".into()],
        weights: vec![DType::F32, DType::BF16],
        caches: vec![DType::F32, DType::BF16],
        threads: if all > 1 { vec![1, all] } else { vec![1] },
        ctx: vec![1, 256, 1024, 4096, 16384],
        prefill: 512,
        modes: vec!["hot".into(), "cold".into()],
        json: None,
        probe: true,
        probe_mib: 0,
        budget_s: 1.0,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    let mut explicit_configs = false;
    let mut full = false;
    while i < args.len() {
        let a = args[i].as_str();
        let mut val = || {
            i += 1;
            args.get(i)
                .cloned()
                .unwrap_or_else(|| die(&format!("{a} needs a value")))
        };
        match a {
            "--quick" => {
                o.configs = vec!["v2lite".into()];
                o.caches = vec![DType::F32];
                o.ctx = vec![1, 1024, 4096];
                o.budget_s = 0.4;
            }
            "--full" => full = true,
            "--json" => o.json = Some(val()),
            "--config" => {
                o.configs = parse_list(&val(), |s| Some(s.to_string()));
                explicit_configs = true;
            }
            // f8: DeepSeek-V3's FP8 weights (1 byte per element plus one f32
            // scale per 128 x 128 block; the weight bytes of the limits count both).
            "--weights" => o.weights = parse_list(&val(), cache_dtype),
            "--cache" => o.caches = parse_list(&val(), cache_dtype),
            "--threads" => o.threads = parse_list(&val(), |s| s.parse().ok().filter(|&t| t > 0)),
            "--ctx" => o.ctx = parse_list(&val(), |s| s.parse().ok()),
            "--prefill" => o.prefill = val().parse().unwrap_or_else(|_| die("--prefill N")),
            "--layers" => {
                o.modes = parse_list(&val(), |s| {
                    ["hot", "cold"].contains(&s).then(|| s.to_string())
                })
            }
            "--no-probe" => o.probe = false,
            "--probe-mib" => o.probe_mib = val().parse().unwrap_or_else(|_| die("--probe-mib N")),
            "--budget" => o.budget_s = val().parse().unwrap_or_else(|_| die("--budget SECONDS")),
            "-h" | "--help" => {
                let doc: Vec<&str> = include_str!("bench.rs")
                    .lines()
                    .take_while(|l| l.starts_with("//!"))
                    .map(|l| l.trim_start_matches("//!"))
                    .collect();
                println!("{}", doc.join("\n"));
                std::process::exit(0);
            }
            _ => die(&format!("unknown argument {a} (see --help)")),
        }
        i += 1;
    }
    if full && !explicit_configs && !o.configs.iter().any(|c| c == "v3") {
        o.configs.push("v3".into());
    }
    o.ctx.sort_unstable();
    o.ctx.dedup();
    o
}

// ---------------------------------------------------------------------------
// Machine description
// ---------------------------------------------------------------------------

struct Machine {
    model: String,
    cpus: usize,
    caches: Vec<(String, usize)>,
    llc_bytes: usize,
    mem_available: usize,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn machine() -> Machine {
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find(|l| {
            l.starts_with("model name") || l.starts_with("Model") || l.starts_with("CPU part")
        })
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let caches = probe::caches();
    let mem_available = probe::mem_available();
    Machine {
        model,
        cpus: all_threads(),
        caches,
        llc_bytes: probe::last_level_cache_bytes(),
        mem_available,
    }
}

fn loadavg() -> String {
    read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------
// Probes: read bandwidth and FMA peak
// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// Configs and weights (random: mla_testkit::RandomWeights, xorshift, fixed seeds)
// ---------------------------------------------------------------------------

fn config(name: &str) -> Config {
    configs::preset(name)
        .unwrap_or_else(|| die(&format!("unknown config {name} (tutorial, v2lite, v3)")))
}

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

struct Out {
    json: Option<std::fs::File>,
}

impl Out {
    fn emit(&mut self, line: String) {
        if let Some(f) = self.json.as_mut() {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// A JSON number (`null` when not finite: a ratio to a limit that was not measured).
fn jnum(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.5}")
    } else {
        "null".to_string()
    }
}

fn dt_name(d: DType) -> &'static str {
    d.name()
}

/// Times `step` (repeat until `budget` seconds and at least 3 times, at most 200);
/// returns (median, min) seconds.
fn time_it(budget: f64, mut step: impl FnMut()) -> (f64, f64) {
    step(); // warm-up
    let mut times = Vec::new();
    let t0 = Instant::now();
    while times.len() < 3 || (t0.elapsed().as_secs_f64() < budget && times.len() < 200) {
        let t = Instant::now();
        step();
        times.push(t.elapsed().as_secs_f64());
    }
    probe::med_min(&mut times)
}

/// The probes' best figures per thread count (the limits: the fastest the
/// machine went, so a ratio ours / limit below 1 means a probe is wrong), and
/// the ratios that came out below 1 (reported loudly at the end).
struct Limits {
    bw: Vec<(usize, f64)>,
    fma: Vec<(usize, f64)>,
    below: std::cell::RefCell<Vec<String>>,
}

impl Limits {
    /// Best over the probes with at most `t` threads (`t` threads can do
    /// what fewer did; on a loaded machine the wider probe may come out lower).
    fn best(v: &[(usize, f64)], t: usize) -> f64 {
        v.iter()
            .filter(|x| x.0 <= t)
            .map(|x| x.1)
            .fold(f64::NAN, f64::max)
    }
    fn bw(&self, t: usize) -> f64 {
        Self::best(&self.bw, t)
    }
    fn fma(&self, t: usize) -> f64 {
        Self::best(&self.fma, t)
    }
    /// Checks a ratio ours / limit: below 1 is recorded (and marked "!!").
    fn check(&self, what: String, ratio: f64) -> &'static str {
        if ratio < 1.0 {
            self.below.borrow_mut().push(format!("{what}: {ratio:.3}"));
            " !! BELOW LIMIT"
        } else {
            ""
        }
    }
}

// ---------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------

fn main() {
    let o = parse_args();
    let m = machine();
    let mut out = Out {
        json: o.json.as_ref().map(|p| {
            if let Some(dir) = std::path::Path::new(p).parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            std::fs::File::create(p).unwrap_or_else(|e| die(&format!("{p}: {e}")))
        }),
    };
    let isa = mla_core::kernels::isa().name();
    let caches = m
        .caches
        .iter()
        .map(|(n, b)| format!("{n} {}", human(*b)))
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "machine: {} | {} CPUs | {caches} | kernels: {isa} | load average {}",
        m.model,
        m.cpus,
        loadavg()
    );
    out.emit(format!(
        "{{\"kind\":\"machine\",\"model\":{:?},\"cpus\":{},\"caches\":{:?},\"isa\":\"{isa}\",\"loadavg\":{:?},\"version\":\"{}\"}}",
        m.model,
        m.cpus,
        caches,
        loadavg(),
        mla_core::VERSION
    ));

    // One pool per thread count, alive for the whole run (engines borrow them).
    let pools: Vec<(usize, Option<ThreadPool>)> = o
        .threads
        .iter()
        .map(|&t| (t, (t > 1).then(|| ThreadPool::new(t))))
        .collect();
    let par_of = |t: usize| -> Option<&dyn ParallelFor> {
        pools
            .iter()
            .find(|p| p.0 == t)
            .and_then(|p| p.1.as_ref())
            .map(|p| p as &dyn ParallelFor)
    };

    // ---- probes
    let mut lim = Limits {
        bw: vec![],
        fma: vec![],
        below: Default::default(),
    };
    if o.probe {
        let mib = if o.probe_mib > 0 {
            o.probe_mib
        } else {
            (2 * m.llc_bytes).max(256 << 20).min(m.mem_available / 4) >> 20
        };
        let buf: Vec<f32> = (0..(mib << 20) / 4).map(|i| (i % 7) as f32).collect();
        println!("\nprobes (read buffer {mib} MiB; walks: one stream, four streams, four + prefetch; limit = best):");
        println!(
            "{:>8} {:>16} {:>14} {:>14} {:>16} {:>16}",
            "threads", "best walk", "read GB/s", "best GB/s", "FMA GFLOP/s", "best GFLOP/s"
        );
        for &t in &o.threads {
            let par = par_of(t);
            let (bw, bw_max, walk) =
                probe::read_bandwidth(&buf, t, par, if o.budget_s < 1.0 { 5 } else { 9 }, 1);
            let (fl, fl_max) = probe::fma_peak(t, par, 7);
            println!("{t:>8} {walk:>16} {bw:>14.2} {bw_max:>14.2} {fl:>16.1} {fl_max:>16.1}");
            lim.bw.push((t, bw_max));
            lim.fma.push((t, fl_max));
            out.emit(format!(
                "{{\"kind\":\"probe\",\"threads\":{t},\"walk\":\"{walk}\",\"read_gbps\":{bw:.3},\"read_gbps_best\":{bw_max:.3},\"fma_gflops\":{fl:.2},\"fma_gflops_best\":{fl_max:.2},\"buffer_mib\":{mib},\"isa\":\"{isa}\"}}"
            ));
        }
    }

    // ---- decode
    println!("\ndecode (ms per step per layer; roof = (weights + cache read) / BW; limit = weights / BW + max(cache / BW, attention FLOPs / FMA peak);");
    println!("        BW: the read probe's best (cold), or the best read of a buffer the size of the layer's working set (hot); x = ours / limit >= 1):");
    println!(
        "{:<9} {:>4} {:>5} {:>4} {:>4} {:>6} {:>9} {:>9} {:>9} {:>8} {:>9} {:>7} {:>9} {:>7} {:>9}",
        "config",
        "wt",
        "cache",
        "mode",
        "thr",
        "ctx",
        "ms",
        "ms(min)",
        "MB/step",
        "GB/s",
        "roof ms",
        "x roof",
        "limit ms",
        "x limit",
        "GFLOP/s"
    );
    for name in &o.configs {
        for &wd in &o.weights {
            for &cd in &o.caches {
                for mode in &o.modes {
                    if mode == "cold" && name == "tutorial" {
                        continue;
                    }
                    decode(&o, &m, &lim, &mut out, name, wd, cd, mode, &par_of);
                }
            }
        }
    }

    // ---- prefill
    if o.prefill > 0 {
        println!(
            "\nprefill ({} tokens from an empty cache; peak = FMA probe, same threads):",
            o.prefill
        );
        println!(
            "{:<9} {:>4} {:>5} {:>4} {:>10} {:>10} {:>10} {:>9} {:>7} {:>10} {:>7}",
            "config",
            "wt",
            "cache",
            "thr",
            "ms",
            "ms(min)",
            "tokens/s",
            "GFLOP/s",
            "% peak",
            "limit ms",
            "x limit"
        );
        for name in &o.configs {
            for &wd in &o.weights {
                for &cd in &o.caches {
                    prefill(&o, &lim, &mut out, name, wd, cd, &par_of);
                }
            }
        }
    }
    println!("\nload average at the end: {}", loadavg());
    let below = lim.below.borrow();
    if !below.is_empty() {
        eprintln!("\n!!!!!!!! bench: {} ratio(s) ours / limit BELOW 1.0: a limit (probe) is wrong !!!!!!!!", below.len());
        for b in below.iter() {
            eprintln!("!!   {b}");
        }
        std::process::exit(1);
    }
}

fn human(b: usize) -> String {
    if b >= 1 << 20 {
        format!("{} MiB", b >> 20)
    } else {
        format!("{} KiB", b >> 10)
    }
}

#[allow(clippy::too_many_arguments)]
fn decode<'p>(
    o: &Opts,
    m: &Machine,
    lim: &Limits,
    out: &mut Out,
    name: &str,
    wd: DType,
    cd: DType,
    mode: &str,
    par_of: &dyn Fn(usize) -> Option<&'p dyn ParallelFor>,
) {
    let max_ctx = *o.ctx.last().unwrap_or(&1);
    let cfg = Config {
        max_seq_len: (max_ctx + 1) as u32,
        max_tokens_per_call: 1,
        cache_dtype: cd,
        attn_mode: AttnMode::Auto,
        ..config(name)
    };
    let dm = cfg.dims().expect("config");
    let probe_layer = RandomWeights::new(&cfg, wd, 1);
    let wbytes = probe_layer.bytes();
    let macs = probe_layer.macs_per_token();
    let row_bytes = dm.cache_row_bytes;
    let layer_ws = wbytes + row_bytes * max_ctx;
    let mem_bytes = Engine::memory_bytes(&cfg).expect("memory");
    let n_layers = if mode == "cold" {
        let want = (2 * m.llc_bytes).div_ceil(wbytes + row_bytes * 1024).max(2);
        let fit = (m.mem_available / 3) / (layer_ws + mem_bytes).max(1);
        want.min(fit).clamp(1, 64)
    } else {
        1
    };
    drop(probe_layer);
    let layers: Vec<RandomWeights> = (0..n_layers)
        .map(|i| RandomWeights::new(&cfg, wd, 1 + i as u64))
        .collect();
    let ws: Vec<Weights> = layers.iter().map(|l| l.weights()).collect();
    let mut arenas: Vec<Arena> = (0..n_layers).map(|_| Arena::new(mem_bytes)).collect();
    let mut engines: Vec<Engine> = arenas
        .iter_mut()
        .zip(&ws)
        .map(|(a, w)| Engine::new(&cfg, w, a.get()).expect("engine"))
        .collect();
    // Random cache rows (latent ~ RMS-normalised, rope keys ~ unit scale).
    let mut rng = Rng::new(77);
    let pool: Vec<f32> = (0..max_ctx.max(1) * dm.cache_row)
        .map(|_| 1.7 * rng.uniform())
        .collect();
    let x: Vec<f32> = (0..dm.d).map(|_| rng.uniform()).collect();
    let mut y = vec![0f32; dm.d];
    for &t in &o.threads {
        let par = par_of(t);
        for e in engines.iter_mut() {
            e.set_parallel(par);
            e.reset();
        }
        for &ctx in &o.ctx {
            for e in engines.iter_mut() {
                let have = e.len();
                if ctx > have {
                    e.append_cache_rows(&pool[have * dm.cache_row..ctx * dm.cache_row])
                        .expect("fill");
                }
                e.truncate(ctx).expect("truncate");
            }
            let (med, min) = time_it(o.budget_s, || {
                for e in engines.iter_mut() {
                    e.forward(&x, &mut y).expect("forward");
                }
                for e in engines.iter_mut() {
                    e.truncate(ctx).expect("truncate");
                }
            });
            let (med, min) = (med / n_layers as f64, min / n_layers as f64);
            let bytes = wbytes + row_bytes * (ctx + 1);
            let flops = 2.0 * (macs as f64 + (dm.h * (ctx + 1) * (2 * dm.r + dm.p)) as f64);
            let bw = if mode == "hot" && o.probe {
                let pars: Vec<(usize, Option<&dyn ParallelFor>)> = o
                    .threads
                    .iter()
                    .filter(|&&u| u <= t)
                    .map(|&u| (u, par_of(u)))
                    .collect();
                probe::read_bandwidth_ws(wbytes + row_bytes * (ctx + 1), &pars, 5)
            } else {
                lim.bw(t)
            };
            let roof = bytes as f64 / (bw * 1e9);
            let cache_bytes = (row_bytes * (ctx + 1)) as f64;
            let attn_flops = 2.0 * (dm.h * (ctx + 1) * (2 * dm.r + dm.p)) as f64;
            let limit = wbytes as f64 / (bw * 1e9)
                + (cache_bytes / (bw * 1e9)).max(attn_flops / (lim.fma(t) * 1e9));
            let what = format!(
                "decode {name} {} {} {mode} t{t} ctx {ctx}",
                dt_name(wd),
                dt_name(cd)
            );
            let flag = lim.check(format!("{what} x roof"), med / roof).to_string()
                + lim.check(format!("{what} x limit"), med / limit);
            let mut line = String::new();
            let _ = write!(
                line,
                "{:<9} {:>4} {:>5} {:>4} {:>4} {:>6} {:>9.3} {:>9.3} {:>9.2} {:>8.2} {:>9.3} {:>7.2} {:>9.3} {:>7.2} {:>9.2}{flag}",
                name,
                dt_name(wd),
                dt_name(cd),
                mode,
                t,
                ctx,
                med * 1e3,
                min * 1e3,
                bytes as f64 / 1e6,
                bytes as f64 / med / 1e9,
                roof * 1e3,
                med / roof,
                limit * 1e3,
                med / limit,
                flops / med / 1e9
            );
            if mode == "cold" && ctx == o.ctx[0] {
                let _ = write!(line, "   ({n_layers} layers)");
            }
            println!("{line}");
            if mode == "cold" && ctx == o.ctx[0] && o.probe {
                // Cross-check of the probe: the engine's fastest cold step
                // cannot read memory faster than the probe's best.
                let engine_bw = bytes as f64 / min / 1e9;
                let ok = engine_bw <= lim.bw(t);
                println!(
                    "          check: engine's best cold ctx-{ctx} step reads {engine_bw:.2} GB/s, probe's best {:.2} GB/s: {}",
                    lim.bw(t),
                    if ok { "ok (probe >= engine)" } else { "!! PROBE BELOW ENGINE: the probe is wrong" }
                );
                if !ok {
                    lim.below.borrow_mut().push(format!(
                        "{what}: engine {engine_bw:.2} GB/s > probe {:.2} GB/s",
                        lim.bw(t)
                    ));
                }
            }
            out.emit(format!(
                "{{\"kind\":\"decode\",\"config\":\"{name}\",\"weights\":\"{}\",\"cache\":\"{}\",\"mode\":\"{mode}\",\"layers\":{n_layers},\"threads\":{t},\"ctx\":{ctx},\"ms\":{:.5},\"ms_min\":{:.5},\"bytes\":{bytes},\"gbps\":{:.3},\"bw_gbps\":{},\"roofline_ms\":{},\"x_roofline\":{},\"limit_ms\":{},\"x_limit\":{},\"gflops\":{:.3}}}",
                dt_name(wd),
                dt_name(cd),
                med * 1e3,
                min * 1e3,
                bytes as f64 / med / 1e9,
                jnum(bw),
                jnum(roof * 1e3),
                jnum(med / roof),
                jnum(limit * 1e3),
                jnum(med / limit),
                flops / med / 1e9
            ));
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn prefill<'p>(
    o: &Opts,
    lim: &Limits,
    out: &mut Out,
    name: &str,
    wd: DType,
    cd: DType,
    par_of: &dyn Fn(usize) -> Option<&'p dyn ParallelFor>,
) {
    let tn = o.prefill;
    let cfg = Config {
        max_seq_len: tn as u32,
        max_tokens_per_call: tn as u32,
        cache_dtype: cd,
        attn_mode: AttnMode::Auto,
        ..config(name)
    };
    let dm = cfg.dims().expect("config");
    let layer = RandomWeights::new(&cfg, wd, 1);
    let w = layer.weights();
    let mut arena = Arena::new(Engine::memory_bytes(&cfg).expect("memory"));
    let mut e = Engine::new(&cfg, &w, arena.get()).expect("engine");
    let mut rng = Rng::new(99);
    let x: Vec<f32> = (0..tn * dm.d).map(|_| rng.uniform()).collect();
    let mut y = vec![0f32; x.len()];
    let pairs = tn * (tn + 1) / 2;
    let macs = (tn * layer.macs_per_token()) as f64 + (pairs * dm.h * (dm.n + dm.p + dm.v)) as f64;
    let flops = 2.0 * macs;
    for &t in &o.threads {
        e.set_parallel(par_of(t));
        let budget = if name == "v3" {
            o.budget_s.min(0.5)
        } else {
            o.budget_s
        };
        let (med, min) = time_it(budget, || {
            e.reset();
            e.forward(&x, &mut y).expect("forward");
        });
        let peak = lim.fma(t);
        let gf = flops / med / 1e9;
        let limit = flops / (peak * 1e9);
        let flag = lim.check(
            format!("prefill {name} {} {} t{t}", dt_name(wd), dt_name(cd)),
            med / limit,
        );
        println!(
            "{:<9} {:>4} {:>5} {:>4} {:>10.2} {:>10.2} {:>10.0} {:>9.2} {:>6.1}% {:>10.2} {:>7.2}{flag}",
            name,
            dt_name(wd),
            dt_name(cd),
            t,
            med * 1e3,
            min * 1e3,
            tn as f64 / med,
            gf,
            100.0 * gf / peak,
            limit * 1e3,
            med / limit
        );
        out.emit(format!(
            "{{\"kind\":\"prefill\",\"config\":\"{name}\",\"weights\":\"{}\",\"cache\":\"{}\",\"threads\":{t},\"tokens\":{tn},\"ms\":{:.4},\"ms_min\":{:.4},\"tok_s\":{:.1},\"gflops\":{:.3},\"peak_frac\":{},\"limit_ms\":{},\"x_limit\":{}}}",
            dt_name(wd),
            dt_name(cd),
            med * 1e3,
            min * 1e3,
            tn as f64 / med,
            gf,
            jnum(gf / peak),
            jnum(limit * 1e3),
            jnum(med / limit)
        ));
    }
}
