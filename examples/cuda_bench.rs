//! Decode latency of the CUDA engine against context length, beside the card's
//! own memory bandwidth measured in the same run (feature `cuda`).
//!
//!     cargo run --release --features cuda --example cuda_bench
//!
//! Model: DeepSeek-V2-Lite attention dims (`Config::deepseek_v2_lite()`, one
//! layer, random weights), capacity 32768 + 16 tokens. For each context length L
//! in 1, 256, 1024, 4096, 16384, 32768 the cache is brought to L - 1 tokens of
//! pseudo-random rows (`CudaEngine::append_random_rows`: no long prefill, no
//! zeros) and one decode step (attending over L positions, `forward_device`,
//! input and output on the device) is timed `MLA_BENCH_STEPS` times (default 30)
//! after 3 warm-up steps; medians are printed.
//!
//! Columns: host microseconds per step (the synchronous call: launches, waiting,
//! the flag read back); device microseconds per step (CUDA events around the
//! step's work on the engine's stream); the bytes one step must read (all weights
//! plus L cache rows per head group) over the device time = effective bandwidth;
//! and that as a share of the device-to-device copy bandwidth measured first
//! (`cuMemcpyDtoDAsync` of 2 x 1 GiB, read + write bytes, events, median of 10):
//! the ceiling a memory-bound decode can approach.
//!
//! Variants: f32 weights + f32 cache (CUDA cores); bf16 weights + bf16 cache with
//! the automatic attention path (tensor cores on sm_80+); the same forced onto
//! CUDA cores. Then, at the longest context, bf16 with the number of context
//! splits forced to fractions and multiples of the multiprocessor count (the
//! automatic choice is one wave of blocks). The CPU engine (all cores) is timed
//! beside the f32 rows up to `MLA_BENCH_CPU_MAX` (default 1024; 0 = off).
//!
//! The module info (which image, JIT-compiled for which GPU) and the JIT log's
//! registers / spills of the attention kernels are printed first.
//!
//! `MLA_BENCH_QUICK=1` runs the tutorial config at short lengths (a smoke test,
//! e.g. under the CPU emulator of tools/cuda-stub). `MLA_BENCH_VARIANTS` (default
//! `f32,bf16,bf16cc,splits`) picks the tables, `MLA_BENCH_CONTEXTS` (e.g. `1,32768`)
//! the context lengths.

#[cfg(feature = "cuda")]
mod bench {
    use half::bf16;
    use mla_core::parallel::ThreadPool;
    use mla_core::{Config, DType, Engine, Tensor, Weights};
    use mla_cuda::cust::memory::DeviceBuffer;
    use mla_cuda::cust::sys as cu;
    use mla_cuda::{self as cuda, AttentionPath, CudaEngine, CudaOptions};
    use std::time::Instant;

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
    }

    /// Random weights for `cfg`, f32 and bf16 copies.
    struct Model {
        f32s: Vec<Vec<f32>>,
        bf16s: Vec<Vec<bf16>>,
        shapes: Vec<(usize, usize)>,
    }

    impl Model {
        fn new(cfg: &Config) -> Model {
            let dm = cfg.dims().expect("config");
            let shapes = vec![
                (dm.q_width, dm.d),
                (dm.rq, dm.d),
                (1, dm.rq),
                (dm.q_width, dm.rq),
                (dm.kv_a_rows, dm.d),
                (1, dm.r),
                (dm.kv_b_rows, dm.r),
                (dm.d, dm.o_cols),
            ];
            let mut rng = Rng(0x1234_5678_9abc_def1);
            let f32s: Vec<Vec<f32>> = shapes
                .iter()
                .enumerate()
                .map(|(i, &(r, c))| {
                    let s = if i == 2 || i == 5 {
                        0.0
                    } else {
                        1.0 / (c.max(1) as f32).sqrt()
                    };
                    (0..r * c)
                        .map(|_| if s == 0.0 { 1.0 } else { rng.next() * s })
                        .collect()
                })
                .collect();
            let bf16s = f32s
                .iter()
                .map(|v| v.iter().map(|&x| bf16::from_f32(x)).collect())
                .collect();
            Model {
                f32s,
                bf16s,
                shapes,
            }
        }

        fn weights(&self, cfg: &Config, dtype: DType) -> Weights<'_> {
            let t = |i: usize| {
                let (r, c) = self.shapes[i];
                match dtype {
                    DType::BF16 => Tensor::new(mla_core::dtype::Elems::BF16(&self.bf16s[i]), r, c),
                    _ => Tensor::f32(&self.f32s[i], r, c),
                }
                .expect("tensor")
            };
            let lora = cfg.q_lora_rank > 0;
            Weights {
                q_proj: (!lora).then(|| t(0)),
                q_a_proj: lora.then(|| t(1)),
                q_a_layernorm: cfg.q_norm.then(|| t(2)),
                q_b_proj: lora.then(|| t(3)),
                kv_a_proj_with_mqa: Some(t(4)),
                kv_a_layernorm: Some(t(5)),
                ..Weights::new(t(6), t(7))
            }
        }
    }

    fn env_usize(name: &str, default: usize) -> usize {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    fn median(v: &mut [f64]) -> f64 {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    }

    fn fail(msg: &str) -> ! {
        eprintln!("cuda_bench: {msg}");
        std::process::exit(1);
    }

    fn ck(what: &str, r: cu::CUresult) {
        if r != cu::CUresult::CUDA_SUCCESS {
            fail(&format!("{what}: {r:?}"));
        }
    }

    /// Device-to-device copy bandwidth in bytes/s (read + write counted), timed
    /// with events on the legacy stream, median of 10 after 2 warm-ups.
    fn copy_bandwidth(bytes: usize) -> f64 {
        let a = DeviceBuffer::<u8>::zeroed(bytes).unwrap_or_else(|e| fail(&format!("alloc: {e}")));
        let b = DeviceBuffer::<u8>::zeroed(bytes).unwrap_or_else(|e| fail(&format!("alloc: {e}")));
        let (pa, pb) = (a.as_device_ptr().as_raw(), b.as_device_ptr().as_raw());
        let mut times = Vec::new();
        // SAFETY: both buffers hold `bytes` bytes; the events are created, used
        // and destroyed here on the legacy stream, which is synchronised.
        unsafe {
            let (mut e0, mut e1): (cu::CUevent, cu::CUevent) =
                (std::ptr::null_mut(), std::ptr::null_mut());
            ck("cuEventCreate", cu::cuEventCreate(&mut e0, 0));
            ck("cuEventCreate", cu::cuEventCreate(&mut e1, 0));
            for i in 0..12 {
                ck("cuEventRecord", cu::cuEventRecord(e0, std::ptr::null_mut()));
                ck(
                    "cuMemcpyDtoDAsync",
                    cu::cuMemcpyDtoDAsync_v2(pb, pa, bytes, std::ptr::null_mut()),
                );
                ck("cuEventRecord", cu::cuEventRecord(e1, std::ptr::null_mut()));
                ck("cuEventSynchronize", cu::cuEventSynchronize(e1));
                let mut ms = 0f32;
                ck(
                    "cuEventElapsedTime",
                    cu::cuEventElapsedTime(&mut ms, e0, e1),
                );
                if i >= 2 {
                    times.push(f64::from(ms) * 1e-3);
                }
            }
            cu::cuEventDestroy_v2(e0);
            cu::cuEventDestroy_v2(e1);
        }
        2.0 * bytes as f64 / median(&mut times)
    }

    /// Median (host seconds, device seconds) of one decode step at context `l`.
    fn gpu_step(e: &mut CudaEngine, l: usize, steps: usize, xd: u64, od: u64) -> (f64, f64) {
        e.reset();
        e.append_random_rows(l - 1, 0x5eed + l as u64)
            .unwrap_or_else(|err| fail(err.message()));
        let (mut host, mut dev) = (Vec::new(), Vec::new());
        for i in 0..steps + 3 {
            e.truncate(l - 1).unwrap_or_else(|err| fail(err.message()));
            let t0 = Instant::now();
            // SAFETY: xd and od hold one token (hidden_size floats) each.
            unsafe { e.forward_device(xd, od, 1) }.unwrap_or_else(|err| fail(err.message()));
            let h = t0.elapsed().as_secs_f64();
            if i >= 3 {
                host.push(h);
                dev.push(f64::from(e.last_device_ms().unwrap_or(f32::NAN)) * 1e-3);
            }
        }
        (median(&mut host), median(&mut dev))
    }

    /// Median seconds of one decode step at context length `l` on the CPU (a real
    /// prefill of l - 1 random tokens first), on `pool`.
    fn cpu_step(cfg: &Config, w: &Weights, pool: &ThreadPool, l: usize, steps: usize) -> f64 {
        let d = cfg.hidden_size as usize;
        let bytes = Engine::memory_bytes(cfg).unwrap_or_else(|e| fail(e.message()));
        let mut mem = vec![0u64; bytes.div_ceil(8) + 8];
        let base = mem.as_mut_ptr() as usize;
        let off = (base.next_multiple_of(64) - base) / 8;
        let arena = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut mem[off..])[..bytes];
        let mut e = Engine::new(cfg, w, arena).unwrap_or_else(|e| fail(e.message()));
        e.set_parallel(Some(pool));
        let mut rng = Rng(77);
        let chunk = cfg.max_tokens_per_call as usize;
        let mut left = l - 1;
        while left > 0 {
            let n = left.min(chunk);
            let x: Vec<f32> = (0..n * d).map(|_| rng.next()).collect();
            let mut out = vec![0f32; n * d];
            e.forward(&x, &mut out)
                .unwrap_or_else(|e| fail(e.message()));
            left -= n;
        }
        let x: Vec<f32> = (0..d).map(|_| rng.next()).collect();
        let mut out = vec![0f32; d];
        let mut times = Vec::new();
        for i in 0..steps.min(10) + 1 {
            e.truncate(l - 1).unwrap_or_else(|e| fail(e.message()));
            let t0 = Instant::now();
            e.forward(&x, &mut out)
                .unwrap_or_else(|e| fail(e.message()));
            if i >= 1 {
                times.push(t0.elapsed().as_secs_f64());
            }
        }
        median(&mut times)
    }

    /// Registers, stack and spills per kernel from a verbose JIT log, for the
    /// kernels whose names contain `filter`.
    fn jit_summary(log: &str, filter: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur: Option<String> = None;
        let mut frame = String::new();
        for line in log.lines() {
            if let Some(i) = line.find("entry function '") {
                let rest = &line[i + 16..];
                cur = rest.split('\'').next().map(str::to_string);
                frame.clear();
            } else if line.contains("stack frame") {
                frame = line.trim().to_string();
            } else if let (Some(k), true) = (&cur, line.contains("Used")) {
                if k.contains(filter) {
                    let used = line
                        .split("info")
                        .last()
                        .unwrap_or(line)
                        .trim_start_matches([' ', ':']);
                    out.push(format!("  {k}: {used}; {frame}"));
                }
                cur = None;
            }
        }
        out
    }

    pub fn main() {
        let quick = std::env::var("MLA_BENCH_QUICK").is_ok_and(|v| v != "0");
        let steps = env_usize("MLA_BENCH_STEPS", if quick { 3 } else { 30 });
        let cpu_max = env_usize("MLA_BENCH_CPU_MAX", if quick { 16 } else { 1024 });
        let (base, lens, copy_bytes): (Config, Vec<usize>, usize) = if quick {
            (Config::tutorial(), vec![1, 16, 64], 1 << 20)
        } else {
            (
                Config::deepseek_v2_lite(),
                vec![1, 256, 1024, 4096, 16384, 32768],
                1 << 30,
            )
        };
        // MLA_BENCH_CONTEXTS=1,32768: only these context lengths (profiling runs).
        let lens: Vec<usize> = match std::env::var("MLA_BENCH_CONTEXTS") {
            Ok(v) => v
                .split(',')
                .map(|c| {
                    c.trim()
                        .parse()
                        .ok()
                        .filter(|&n: &usize| n >= 1)
                        .unwrap_or_else(|| fail(&format!("MLA_BENCH_CONTEXTS: bad length {c:?}")))
                })
                .collect(),
            Err(_) => lens,
        };
        let max_len = *lens.iter().max().unwrap_or(&1);
        let cfg = Config {
            max_seq_len: max_len as u32 + 16,
            max_tokens_per_call: 64,
            ..base
        };

        let n_dev = cuda::device_count()
            .unwrap_or_else(|e| fail(&format!("no CUDA device: {}", e.message())));
        if n_dev == 0 {
            fail("no CUDA device");
        }
        let info = cuda::module_info(0).unwrap_or_else(|e| {
            eprintln!("{}", cuda::failed_module_log());
            fail(e.message())
        });
        let cpu_threads = env_usize(
            "MLA_BENCH_CPU_THREADS",
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        );
        let pool = ThreadPool::new(cpu_threads);
        let model = Model::new(&cfg);
        let d = cfg.hidden_size as usize;
        println!(
            "mla-rt cuda_bench: {} attention dims (d {}, H {}, r {}, p {}), one layer, random weights",
            if quick {
                "tutorial"
            } else {
                "DeepSeek-V2-Lite"
            },
            cfg.hidden_size,
            cfg.num_heads,
            cfg.kv_lora_rank,
            cfg.qk_rope_head_dim
        );
        println!(
            "device 0: {} (sm_{}{}, {} SMs, {} KiB shared memory per block); kernels: {}",
            info.device,
            info.compute_capability.0,
            info.compute_capability.1,
            info.multiprocessors,
            info.shared_memory_optin / 1024,
            info.image
        );
        let summary = jit_summary(&info.jit_log, "mla_attn");
        if !summary.is_empty() {
            println!("JIT (registers, spills) of the attention kernels:");
            for l in &summary {
                println!("{l}");
            }
        }
        let copy_bw = copy_bandwidth(copy_bytes);
        println!(
            "device-to-device copy bandwidth (measured, read + write): {:.1} GB/s",
            copy_bw / 1e9
        );

        let mut rng = Rng(5);
        let x: Vec<f32> = (0..d).map(|_| rng.next()).collect();
        let xd = DeviceBuffer::from_slice(&x).unwrap_or_else(|e| fail(&e.to_string()));
        let od = DeviceBuffer::from_slice(&vec![0f32; d]).unwrap_or_else(|e| fail(&e.to_string()));
        let (xp, op) = (xd.as_device_ptr().as_raw(), od.as_device_ptr().as_raw());
        let mut headline = Vec::new();

        let variants = std::env::var("MLA_BENCH_VARIANTS")
            .unwrap_or_else(|_| "f32,bf16,bf16cc,splits".to_string());
        let want = |k: &str| variants.split(',').any(|v| v.trim() == k);
        for (key, label, wd, cd, path) in [
            (
                "f32",
                "f32 weights, f32 cache",
                DType::F32,
                DType::F32,
                AttentionPath::Auto,
            ),
            (
                "bf16",
                "bf16 weights, bf16 cache",
                DType::BF16,
                DType::BF16,
                AttentionPath::Auto,
            ),
            (
                "bf16cc",
                "bf16 weights, bf16 cache, CUDA cores forced",
                DType::BF16,
                DType::BF16,
                AttentionPath::CudaCores,
            ),
        ] {
            if !want(key) {
                continue;
            }
            let cfg = Config {
                cache_dtype: cd,
                ..cfg
            };
            let w = model.weights(&cfg, wd);
            let opts = CudaOptions {
                attention: path,
                timing: true,
                ..CudaOptions::default()
            };
            let t0 = Instant::now();
            let mut e =
                CudaEngine::create_with(&cfg, &w, 0, &opts).unwrap_or_else(|e| fail(e.message()));
            let create_s = t0.elapsed().as_secs_f64();
            let plan = e.attention_plan().clone();
            let row_bytes = cfg.cache_bytes_per_token().unwrap_or(0);
            println!();
            println!(
                "{label}: {} ({} heads x {} groups, {} rows per tile, {:?} copies, {} KiB shared), \
                 weights {:.1} MB, cache row {} B, create {:.2} s",
                plan.kernel,
                plan.heads_per_block,
                plan.groups,
                plan.tile_rows,
                plan.copy,
                plan.smem / 1024,
                e.weight_bytes() as f64 / 1e6,
                row_bytes,
                create_s,
            );
            println!(
                "{:>7} | {:>6} | {:>10} | {:>10} | {:>9} | {:>8} | {:>10} | {:>7}",
                "context",
                "splits",
                "host us",
                "device us",
                "eff GB/s",
                "of copy",
                "CPU us",
                "CPU/GPU"
            );
            let with_cpu = cpu_max > 0 && wd == DType::F32;
            for &l in &lens {
                let (h, g) = gpu_step(&mut e, l, steps, xp, op);
                let (ns, _) = e.splits_for(l - 1, 1);
                let bytes = e.weight_bytes() + plan.groups * l * row_bytes;
                let bw = bytes as f64 / g;
                let cpu = (with_cpu && l <= cpu_max).then(|| cpu_step(&cfg, &w, &pool, l, steps));
                let (cpu_s, ratio) = match cpu {
                    Some(c) => (format!("{:.1}", c * 1e6), format!("{:.1}x", c / h)),
                    None => ("-".to_string(), "-".to_string()),
                };
                println!(
                    "{:>7} | {:>6} | {:>10.1} | {:>10.1} | {:>9.1} | {:>7.1}% | {:>10} | {:>7}",
                    l,
                    ns,
                    h * 1e6,
                    g * 1e6,
                    bw / 1e9,
                    100.0 * bw / copy_bw,
                    cpu_s,
                    ratio
                );
                if l == max_len {
                    headline.push(format!(
                        "{label} [{}]: context {l}: {:.1} us/step on the device, {:.0} GB/s = {:.0}% of copy bandwidth",
                        plan.kernel,
                        g * 1e6,
                        bw / 1e9,
                        100.0 * bw / copy_bw
                    ));
                }
            }
        }

        // Context splits at the longest context, bf16, automatic attention path.
        if !want("splits") {
            println!();
            for h in &headline {
                println!("HEADLINE {h}");
            }
            return;
        }
        let cfg_b = Config {
            cache_dtype: DType::BF16,
            ..cfg
        };
        let w = model.weights(&cfg_b, DType::BF16);
        let sms = info.multiprocessors;
        let mut counts = vec![0usize, sms / 4, sms / 2, sms, 2 * sms, 4 * sms];
        counts.retain(|&c| c == 0 || c >= 1);
        counts.dedup();
        println!();
        println!("splits at context {max_len} (bf16, automatic path; 0 = automatic):");
        println!(
            "{:>6} | {:>10} | {:>9} | {:>8}",
            "splits", "device us", "eff GB/s", "of copy"
        );
        for &n in &counts {
            let opts = CudaOptions {
                splits: n,
                timing: true,
                ..CudaOptions::default()
            };
            let mut e =
                CudaEngine::create_with(&cfg_b, &w, 0, &opts).unwrap_or_else(|e| fail(e.message()));
            let (_, g) = gpu_step(&mut e, max_len, steps, xp, op);
            let (ns, _) = e.splits_for(max_len - 1, 1);
            let bytes = e.weight_bytes()
                + e.head_groups().1 * max_len * cfg_b.cache_bytes_per_token().unwrap_or(0);
            let bw = bytes as f64 / g;
            println!(
                "{:>6} | {:>10.1} | {:>9.1} | {:>7.1}%",
                if n == 0 {
                    format!("{ns}*")
                } else {
                    ns.to_string()
                },
                g * 1e6,
                bw / 1e9,
                100.0 * bw / copy_bw
            );
        }
        println!();
        println!(
            "eff GB/s = (weights + context x cache row x head groups) bytes / device time per step; \
             'of copy' = that / the device-to-device copy bandwidth above (goal at long context: \
             >= 70%); host us = the whole synchronous call; CPU: this machine's CPU engine \
             ({cpu_threads} threads), up to context {cpu_max} (MLA_BENCH_CPU_MAX)."
        );
        for h in &headline {
            println!("HEADLINE {h}");
        }
    }
}

#[cfg(feature = "cuda")]
fn main() {
    bench::main();
}

#[cfg(not(feature = "cuda"))]
fn main() {
    eprintln!("cuda_bench needs the `cuda` feature: cargo run --release --features cuda --example cuda_bench");
    std::process::exit(2);
}
