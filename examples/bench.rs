//! Performance benchmark: decode and prefill of one MLA layer beside the
//! machine's limits, measured in the same run.
//!
//!     cargo run --release --example bench -- [--quick | --full] [--json FILE]
//!         [--config tutorial,v2lite,v3] [--weights f32,bf16] [--cache f32,bf16,f8]
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
use mla_testkit::{configs, Arena, RandomWeights, Rng};
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

/// A cache dtype: those of [`dtype`] and `f8` (the FP8 latent cache).
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
            "--weights" => o.weights = parse_list(&val(), dtype),
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

fn parse_size(s: &str) -> usize {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix('K') {
        (n, 1024)
    } else if let Some(n) = s.strip_suffix('M') {
        (n, 1024 * 1024)
    } else {
        (s, 1)
    };
    num.parse::<usize>().unwrap_or(0) * mult
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
    let mut caches = Vec::new();
    let mut llc = 0;
    for i in 0..8 {
        let base = format!("/sys/devices/system/cpu/cpu0/cache/index{i}");
        let size = read(&format!("{base}/size"));
        if size.is_empty() {
            break;
        }
        let level = read(&format!("{base}/level")).trim().to_string();
        let ty = read(&format!("{base}/type")).trim().to_string();
        let bytes = parse_size(&size);
        llc = llc.max(bytes);
        let short = match ty.as_str() {
            "Data" => "d",
            "Instruction" => "i",
            _ => "",
        };
        caches.push((format!("L{level}{short}"), bytes));
    }
    let mem_available = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemAvailable"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<usize>().ok())
        .map_or(4 << 30, |k| k * 1024);
    Machine {
        model,
        cpus: all_threads(),
        caches,
        llc_bytes: if llc == 0 { 32 << 20 } else { llc },
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

mod probe {
    /// How a read probe walks its buffer.
    #[derive(Clone, Copy, Debug)]
    pub enum Walk {
        /// One sequential stream, 8 vector accumulators.
        One,
        /// Four independent streams (the buffer in quarters, walked at once),
        /// two vectors per stream per step, 8 accumulators.
        Four,
        /// `Four` with a software prefetch 1 KiB ahead on every stream.
        FourPrefetch,
    }

    /// Every walk the probe tries.
    pub const WALKS: [Walk; 3] = [Walk::One, Walk::Four, Walk::FourPrefetch];

    /// Sums `v` with wide SIMD loads (the widest the engine's ISA has) the way
    /// `walk` says; returns (the sum, bytes read).
    pub fn sum(v: &[f32], walk: Walk) -> (f32, usize) {
        let isa = mla_core::kernels::isa().name();
        #[cfg(target_arch = "x86_64")]
        {
            if isa == "avx512" && std::is_x86_feature_detected!("avx512f") {
                // SAFETY: AVX-512F detected.
                return unsafe { x86::sum512(v, walk) };
            }
            if isa != "scalar" && std::is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 detected.
                return unsafe { x86::sum256(v, walk) };
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if isa != "scalar" {
                // SAFETY: NEON is part of the aarch64 base ABI.
                return unsafe { arm::sum(v, walk) };
            }
        }
        let _ = (isa, walk);
        let mut acc = [0f32; 16];
        let n = v.len() / 16 * 16;
        for c in v[..n].chunks_exact(16) {
            for (a, &x) in acc.iter_mut().zip(c) {
                *a += x;
            }
        }
        (acc.iter().sum(), n * 4)
    }

    /// Stream starts and the elements each stream reads (a multiple of `step`).
    #[allow(dead_code)]
    fn streams(v: &[f32], walk: Walk, step: usize) -> (Vec<*const f32>, usize) {
        let n = match walk {
            Walk::One => 1,
            Walk::Four | Walk::FourPrefetch => 4,
        };
        let per = v.len() / n / step * step;
        // SAFETY: s * per <= v.len() for s < n.
        let starts = (0..n).map(|s| unsafe { v.as_ptr().add(s * per) }).collect();
        (starts, per)
    }

    /// Runs `iters` rounds of independent FMA chains (at least 1); returns
    /// (a value to keep, flops).
    pub fn fma(iters: usize) -> (f32, f64) {
        let isa = mla_core::kernels::isa().name();
        #[cfg(target_arch = "x86_64")]
        {
            if isa == "avx512" && std::is_x86_feature_detected!("avx512f") {
                // SAFETY: AVX-512F detected.
                return unsafe { x86::fma512(iters) };
            }
            if isa == "avx2"
                && std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("fma")
            {
                // SAFETY: AVX2 and FMA detected.
                return unsafe { x86::fma256(iters) };
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if isa == "neon" {
                // SAFETY: NEON is part of the aarch64 base ABI.
                return unsafe { arm::fma(iters) };
            }
        }
        let _ = isa;
        {
            let mut a = [1.0f32; 16];
            for _ in 0..iters.max(1) {
                for x in a.iter_mut() {
                    *x = x.mul_add(0.999_999, 1e-7);
                }
            }
            (a.iter().sum(), iters.max(1) as f64 * 32.0)
        }
    }

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use std::arch::x86_64::*;

        /// Bytes a prefetch runs ahead of the loads.
        const AHEAD: usize = 1024;

        #[target_feature(enable = "avx512f")]
        pub unsafe fn sum512(v: &[f32], walk: super::Walk) -> (f32, usize) {
            let (st, per) = super::streams(v, walk, 32);
            let pf = matches!(walk, super::Walk::FourPrefetch);
            let mut a = [_mm512_setzero_ps(); 8];
            let mut i = 0;
            while i < per {
                for (s, &p) in st.iter().enumerate() {
                    if pf {
                        // A prefetch never faults, whatever the address.
                        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(i + AHEAD / 4).cast::<i8>());
                    }
                    // SAFETY: i + 32 <= per: inside stream s.
                    unsafe {
                        a[2 * s] = _mm512_add_ps(a[2 * s], _mm512_loadu_ps(p.add(i)));
                        a[2 * s + 1] = _mm512_add_ps(a[2 * s + 1], _mm512_loadu_ps(p.add(i + 16)));
                    }
                }
                i += 32;
            }
            let sum = a.iter().map(|&x| _mm512_reduce_add_ps(x)).sum();
            (sum, per * st.len() * 4)
        }

        #[target_feature(enable = "avx2")]
        pub unsafe fn sum256(v: &[f32], walk: super::Walk) -> (f32, usize) {
            let (st, per) = super::streams(v, walk, 16);
            let pf = matches!(walk, super::Walk::FourPrefetch);
            let mut a = [_mm256_setzero_ps(); 8];
            let mut i = 0;
            while i < per {
                for (s, &p) in st.iter().enumerate() {
                    if pf {
                        // A prefetch never faults, whatever the address.
                        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(i + AHEAD / 4).cast::<i8>());
                    }
                    // SAFETY: i + 16 <= per: inside stream s.
                    unsafe {
                        a[2 * s] = _mm256_add_ps(a[2 * s], _mm256_loadu_ps(p.add(i)));
                        a[2 * s + 1] = _mm256_add_ps(a[2 * s + 1], _mm256_loadu_ps(p.add(i + 8)));
                    }
                }
                i += 16;
            }
            let mut out = [0f32; 8];
            let mut s = _mm256_setzero_ps();
            for x in a {
                s = _mm256_add_ps(s, x);
            }
            // SAFETY: out has 8 floats.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), s) };
            (out.iter().sum(), per * st.len() * 4)
        }

        /// 16 independent chains of 512-bit FMAs in registers (inline asm, so
        /// that the compiler cannot reorder, spill or fold them).
        #[target_feature(enable = "avx512f")]
        pub unsafe fn fma512(iters: usize) -> (f32, f64) {
            // SAFETY: AVX-512F is enabled for this function (caller detected it);
            // the asm touches only the registers it declares.
            unsafe {
                std::arch::asm!(
                    "vxorps zmm0, zmm0, zmm0", "vxorps zmm1, zmm1, zmm1", "vxorps zmm2, zmm2, zmm2",
                    "vxorps zmm3, zmm3, zmm3", "vxorps zmm4, zmm4, zmm4", "vxorps zmm5, zmm5, zmm5",
                    "vxorps zmm6, zmm6, zmm6", "vxorps zmm7, zmm7, zmm7", "vxorps zmm8, zmm8, zmm8",
                    "vxorps zmm9, zmm9, zmm9", "vxorps zmm10, zmm10, zmm10", "vxorps zmm11, zmm11, zmm11",
                    "vxorps zmm12, zmm12, zmm12", "vxorps zmm13, zmm13, zmm13", "vxorps zmm14, zmm14, zmm14",
                    "vxorps zmm15, zmm15, zmm15",
                    "2:",
                    "vfmadd231ps zmm0, zmm16, zmm17", "vfmadd231ps zmm1, zmm16, zmm17",
                    "vfmadd231ps zmm2, zmm16, zmm17", "vfmadd231ps zmm3, zmm16, zmm17",
                    "vfmadd231ps zmm4, zmm16, zmm17", "vfmadd231ps zmm5, zmm16, zmm17",
                    "vfmadd231ps zmm6, zmm16, zmm17", "vfmadd231ps zmm7, zmm16, zmm17",
                    "vfmadd231ps zmm8, zmm16, zmm17", "vfmadd231ps zmm9, zmm16, zmm17",
                    "vfmadd231ps zmm10, zmm16, zmm17", "vfmadd231ps zmm11, zmm16, zmm17",
                    "vfmadd231ps zmm12, zmm16, zmm17", "vfmadd231ps zmm13, zmm16, zmm17",
                    "vfmadd231ps zmm14, zmm16, zmm17", "vfmadd231ps zmm15, zmm16, zmm17",
                    "dec {n}",
                    "jnz 2b",
                    n = inout(reg) iters.max(1) => _,
                    in("zmm16") _mm512_set1_ps(0.999_999),
                    in("zmm17") _mm512_set1_ps(1e-7),
                    out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _,
                    out("zmm4") _, out("zmm5") _, out("zmm6") _, out("zmm7") _,
                    out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _,
                    out("zmm12") _, out("zmm13") _, out("zmm14") _, out("zmm15") _,
                    options(nostack, nomem),
                );
            }
            (0.0, iters.max(1) as f64 * 16.0 * 16.0 * 2.0)
        }

        /// 12 independent chains of 256-bit FMAs (inline asm).
        #[target_feature(enable = "avx2,fma")]
        pub unsafe fn fma256(iters: usize) -> (f32, f64) {
            // SAFETY: AVX2 and FMA are enabled (caller detected them); the asm
            // touches only the registers it declares.
            unsafe {
                std::arch::asm!(
                    "vxorps ymm0, ymm0, ymm0", "vxorps ymm1, ymm1, ymm1", "vxorps ymm2, ymm2, ymm2",
                    "vxorps ymm3, ymm3, ymm3", "vxorps ymm4, ymm4, ymm4", "vxorps ymm5, ymm5, ymm5",
                    "vxorps ymm6, ymm6, ymm6", "vxorps ymm7, ymm7, ymm7", "vxorps ymm8, ymm8, ymm8",
                    "vxorps ymm9, ymm9, ymm9", "vxorps ymm10, ymm10, ymm10", "vxorps ymm11, ymm11, ymm11",
                    "2:",
                    "vfmadd231ps ymm0, ymm12, ymm13", "vfmadd231ps ymm1, ymm12, ymm13",
                    "vfmadd231ps ymm2, ymm12, ymm13", "vfmadd231ps ymm3, ymm12, ymm13",
                    "vfmadd231ps ymm4, ymm12, ymm13", "vfmadd231ps ymm5, ymm12, ymm13",
                    "vfmadd231ps ymm6, ymm12, ymm13", "vfmadd231ps ymm7, ymm12, ymm13",
                    "vfmadd231ps ymm8, ymm12, ymm13", "vfmadd231ps ymm9, ymm12, ymm13",
                    "vfmadd231ps ymm10, ymm12, ymm13", "vfmadd231ps ymm11, ymm12, ymm13",
                    "dec {n}",
                    "jnz 2b",
                    n = inout(reg) iters.max(1) => _,
                    in("ymm12") _mm256_set1_ps(0.999_999),
                    in("ymm13") _mm256_set1_ps(1e-7),
                    out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _,
                    out("ymm4") _, out("ymm5") _, out("ymm6") _, out("ymm7") _,
                    out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
                    options(nostack, nomem),
                );
            }
            (0.0, iters.max(1) as f64 * 12.0 * 8.0 * 2.0)
        }
    }

    #[cfg(target_arch = "aarch64")]
    mod arm {
        use std::arch::aarch64::*;

        #[target_feature(enable = "neon")]
        pub unsafe fn sum(v: &[f32], walk: super::Walk) -> (f32, usize) {
            let (st, per) = super::streams(v, walk, 8);
            let pf = matches!(walk, super::Walk::FourPrefetch);
            let mut a = [vdupq_n_f32(0.0); 8];
            let mut i = 0;
            while i < per {
                for (s, &p) in st.iter().enumerate() {
                    if pf {
                        // PRFM never faults and has no architectural effect.
                        unsafe {
                            std::arch::asm!("prfm pldl1keep, [{0}]", in(reg) p.wrapping_add(i + 256), options(nostack, readonly, preserves_flags))
                        };
                    }
                    // SAFETY: i + 8 <= per: inside stream s.
                    unsafe {
                        a[2 * s] = vaddq_f32(a[2 * s], vld1q_f32(p.add(i)));
                        a[2 * s + 1] = vaddq_f32(a[2 * s + 1], vld1q_f32(p.add(i + 4)));
                    }
                }
                i += 8;
            }
            (a.iter().map(|&x| vaddvq_f32(x)).sum(), per * st.len() * 4)
        }

        /// 16 independent chains of 128-bit FMLAs (inline asm).
        #[target_feature(enable = "neon")]
        pub unsafe fn fma(iters: usize) -> (f32, f64) {
            // SAFETY: NEON is always present on aarch64; the asm touches only
            // the registers it declares.
            unsafe {
                std::arch::asm!(
                    "movi v0.4s, #0", "movi v1.4s, #0", "movi v2.4s, #0", "movi v3.4s, #0",
                    "movi v4.4s, #0", "movi v5.4s, #0", "movi v6.4s, #0", "movi v7.4s, #0",
                    "movi v8.4s, #0", "movi v9.4s, #0", "movi v10.4s, #0", "movi v11.4s, #0",
                    "movi v12.4s, #0", "movi v13.4s, #0", "movi v14.4s, #0", "movi v15.4s, #0",
                    "2:",
                    "fmla v0.4s, v16.4s, v17.4s", "fmla v1.4s, v16.4s, v17.4s",
                    "fmla v2.4s, v16.4s, v17.4s", "fmla v3.4s, v16.4s, v17.4s",
                    "fmla v4.4s, v16.4s, v17.4s", "fmla v5.4s, v16.4s, v17.4s",
                    "fmla v6.4s, v16.4s, v17.4s", "fmla v7.4s, v16.4s, v17.4s",
                    "fmla v8.4s, v16.4s, v17.4s", "fmla v9.4s, v16.4s, v17.4s",
                    "fmla v10.4s, v16.4s, v17.4s", "fmla v11.4s, v16.4s, v17.4s",
                    "fmla v12.4s, v16.4s, v17.4s", "fmla v13.4s, v16.4s, v17.4s",
                    "fmla v14.4s, v16.4s, v17.4s", "fmla v15.4s, v16.4s, v17.4s",
                    "subs {n}, {n}, #1",
                    "b.ne 2b",
                    n = inout(reg) iters.max(1) => _,
                    in("v16") vdupq_n_f32(0.999_999),
                    in("v17") vdupq_n_f32(1e-7),
                    out("v0") _, out("v1") _, out("v2") _, out("v3") _,
                    out("v4") _, out("v5") _, out("v6") _, out("v7") _,
                    out("v8") _, out("v9") _, out("v10") _, out("v11") _,
                    out("v12") _, out("v13") _, out("v14") _, out("v15") _,
                    options(nostack, nomem),
                );
            }
            (0.0, iters.max(1) as f64 * 16.0 * 4.0 * 2.0)
        }
    }
}

/// Runs `n` tasks on `par` (or inline).
fn run_tasks(par: Option<&dyn ParallelFor>, n: usize, f: &(dyn Fn(usize) + Sync)) {
    match par {
        Some(p) => p.run(n, f),
        None => (0..n).for_each(f),
    }
}

/// Read bandwidth in GB/s, the buffer split into one part per thread, for
/// every walk of [`probe::WALKS`]: (median of the best walk, best time of
/// any walk, the best walk's name).
fn probe_bw(
    buf: &[f32],
    threads: usize,
    par: Option<&dyn ParallelFor>,
    reps: usize,
    sweeps: usize,
) -> (f64, f64, String) {
    // Each task also times its part chunk by chunk (4 MiB, well under a
    // scheduler slice): on a shared machine a whole sweep is nearly always
    // interrupted, one chunk often is not, and the engine's best step is timed
    // the same way. Best = the sum over the tasks of their best chunk rates.
    const CHUNK: usize = 1 << 20;
    let part = buf.len() / threads;
    let sink = std::sync::atomic::AtomicU32::new(0);
    let (mut best_med, mut best, mut name) = (0.0f64, 0.0f64, String::new());
    for walk in probe::WALKS {
        let mut times = Vec::new();
        let bytes = std::sync::atomic::AtomicUsize::new(0);
        let chunk_best = std::sync::Mutex::new(vec![0.0f64; threads]);
        for _ in 0..reps {
            bytes.store(0, std::sync::atomic::Ordering::Relaxed);
            let t = Instant::now();
            run_tasks(par, threads, &|i| {
                let mut task_best = 0.0f64;
                for _ in 0..sweeps {
                    for c in buf[i * part..(i + 1) * part].chunks(CHUNK) {
                        let t = Instant::now();
                        let (s, b) = probe::sum(c, walk);
                        let dt = t.elapsed().as_secs_f64();
                        if dt > 0.0 {
                            task_best = task_best.max(b as f64 / dt);
                        }
                        sink.fetch_add(s.to_bits() & 1, std::sync::atomic::Ordering::Relaxed);
                        bytes.fetch_add(b, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                let mut cb = chunk_best.lock().unwrap();
                cb[i] = cb[i].max(task_best);
            });
            times.push(t.elapsed().as_secs_f64());
        }
        let bytes = bytes.load(std::sync::atomic::Ordering::Relaxed) as f64;
        let (med, min) = med_min(&mut times);
        if bytes / med > best_med {
            best_med = bytes / med;
            name = format!("{walk:?}");
        }
        let chunks: f64 = chunk_best.lock().unwrap().iter().sum();
        best = best.max(bytes / min).max(chunks);
    }
    (best_med / 1e9, best / 1e9, name)
}

/// Best read bandwidth (GB/s) over a buffer of `bytes` (a working set that
/// may fit a cache: the limit of a `hot` layer) on each of `pars` (thread
/// count, pool): the buffer swept repeatedly inside each task (at least 64 MiB
/// in all, so that starting the tasks costs little), after one untimed pass.
fn probe_bw_ws(bytes: usize, pars: &[(usize, Option<&dyn ParallelFor>)], reps: usize) -> f64 {
    let n = (bytes / 4).max(64 * 1024);
    let buf: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let sweeps = (64 << 20) / (n * 4) + 1;
    let mut best = f64::NAN;
    for &(t, par) in pars {
        probe_bw(&buf, t, par, 1, 1);
        best = best.max(probe_bw(&buf, t, par, reps, sweeps).1);
    }
    best
}

/// FMA peak in GFLOP/s on `threads` threads.
fn probe_fma(threads: usize, par: Option<&dyn ParallelFor>, reps: usize) -> (f64, f64) {
    // Median: whole calls of `iters` rounds. Best: each task also times short
    // bursts (well under a scheduler slice) and keeps its best; summed over
    // the tasks.
    let (iters, burst) = (4_000_000, 100_000);
    let per_round = probe::fma(1).1;
    let flops = threads as f64 * per_round * iters as f64;
    let mut times = Vec::new();
    let sink = std::sync::atomic::AtomicU32::new(0);
    let burst_best = std::sync::Mutex::new(vec![0.0f64; threads]);
    for _ in 0..reps {
        let t = Instant::now();
        run_tasks(par, threads, &|i| {
            let (v, _) = probe::fma(iters);
            sink.fetch_add(v.to_bits() & 1, std::sync::atomic::Ordering::Relaxed);
            let mut task_best = 0.0f64;
            for _ in 0..8 {
                let t = Instant::now();
                let (v, _) = probe::fma(burst);
                let dt = t.elapsed().as_secs_f64();
                if dt > 0.0 {
                    task_best = task_best.max(per_round * burst as f64 / dt);
                }
                sink.fetch_add(v.to_bits() & 1, std::sync::atomic::Ordering::Relaxed);
            }
            let mut bb = burst_best.lock().unwrap();
            bb[i] = bb[i].max(task_best);
        });
        times.push(t.elapsed().as_secs_f64());
    }
    let (med, min) = med_min(&mut times);
    let bursts: f64 = burst_best.lock().unwrap().iter().sum();
    (flops / med / 1e9, (flops / min).max(bursts) / 1e9)
}

fn med_min(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0])
}

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
    med_min(&mut times)
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
                probe_bw(&buf, t, par, if o.budget_s < 1.0 { 5 } else { 9 }, 1);
            let (fl, fl_max) = probe_fma(t, par, 7);
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
                probe_bw_ws(wbytes + row_bytes * (ctx + 1), &pars, 5)
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
