//! Decode latency of the CUDA engine against context length, beside the CPU
//! engine and beside the card's own memory bandwidth (feature `cuda`).
//!
//!     cargo run --release --features cuda --example cuda_bench
//!
//! Model: DeepSeek-V2-Lite attention dims (`Config::deepseek_v2_lite()`, one
//! layer, random weights), capacity 32768 + 16 tokens. For each context length L
//! in 1, 256, 1024, 4096, 16384, 32768 the cache is brought to L - 1 tokens
//! (GPU: zero rows appended directly, `CudaEngine::append_zero_rows`; CPU: a real
//! prefill, only up to `MLA_BENCH_CPU_MAX`, default 1024) and one decode step
//! (attending over L positions) is timed, median of `MLA_BENCH_STEPS` (50).
//!
//! Columns: GPU microseconds per step (`forward_device`, synchronous, input and
//! output already on the device); bytes one step must read (all weights plus the
//! L cached rows, times the head groups) over that time = effective bandwidth;
//! the ratio of that to the device-to-device copy bandwidth measured in the same
//! run (`cuMemcpyDtoDAsync` of a 512 MiB buffer, counted as read + write bytes);
//! the CPU engine's microseconds per step (on all cores through
//! `mla_core::parallel::ThreadPool`; `MLA_BENCH_CPU_THREADS` to change) and CPU / GPU.
//! Then the same with bf16 weights and a bf16 cache.
//!
//! `MLA_BENCH_QUICK=1` runs the tutorial config at short lengths (a smoke test,
//! e.g. under the CPU emulator of tools/cuda-stub).
//!
//! Without the `cuda` feature this example only says so (add
//! `required-features = ["cuda"]` to its `[[example]]` entry to skip it).

#[cfg(feature = "cuda")]
mod bench {
    use half::bf16;
    use mla_core::parallel::ThreadPool;
    use mla_core::{Config, DType, Engine, Tensor, Weights};
    use mla_cuda::cust::memory::DeviceBuffer;
    use mla_cuda::cust::sys as cu;
    use mla_cuda::{self as cuda, CudaEngine};
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
                kv_a_proj_with_mqa: t(4),
                kv_a_layernorm: t(5),
                kv_b_proj: t(6),
                o_proj: t(7),
                q_a_proj_bias: None,
                kv_a_proj_bias: None,
                o_proj_bias: None,
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

    /// Device-to-device copy bandwidth in bytes/s (read + write counted).
    fn copy_bandwidth(bytes: usize) -> f64 {
        let a = DeviceBuffer::<u8>::zeroed(bytes).unwrap_or_else(|e| fail(&format!("alloc: {e}")));
        let b = DeviceBuffer::<u8>::zeroed(bytes).unwrap_or_else(|e| fail(&format!("alloc: {e}")));
        let (pa, pb) = (a.as_device_ptr().as_raw(), b.as_device_ptr().as_raw());
        let mut times = Vec::new();
        for i in 0..7 {
            let t0 = Instant::now();
            // SAFETY: both buffers hold `bytes` bytes; null stream; synchronised below.
            unsafe {
                let r = cu::cuMemcpyDtoDAsync_v2(pb, pa, bytes, std::ptr::null_mut());
                if r != cu::CUresult::CUDA_SUCCESS {
                    fail(&format!("cuMemcpyDtoDAsync: {r:?}"));
                }
                let r = cu::cuCtxSynchronize();
                if r != cu::CUresult::CUDA_SUCCESS {
                    fail(&format!("cuCtxSynchronize: {r:?}"));
                }
            }
            if i > 0 {
                times.push(t0.elapsed().as_secs_f64());
            }
        }
        2.0 * bytes as f64 / median(&mut times)
    }

    /// Median seconds of one decode step at context length `l` on the GPU.
    fn gpu_step(e: &mut CudaEngine, l: usize, steps: usize, xd: u64, od: u64) -> f64 {
        e.reset();
        e.append_zero_rows(l - 1)
            .unwrap_or_else(|err| fail(err.message()));
        let mut times = Vec::new();
        for i in 0..steps + 3 {
            e.truncate(l - 1).unwrap_or_else(|err| fail(err.message()));
            let t0 = Instant::now();
            // SAFETY: xd and od hold one token (hidden_size floats) each.
            unsafe { e.forward_device(xd, od, 1) }.unwrap_or_else(|err| fail(err.message()));
            if i >= 3 {
                times.push(t0.elapsed().as_secs_f64());
            }
        }
        median(&mut times)
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
        for i in 0..steps.min(20) + 1 {
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

    pub fn main() {
        let quick = std::env::var("MLA_BENCH_QUICK").is_ok_and(|v| v != "0");
        let steps = env_usize("MLA_BENCH_STEPS", if quick { 3 } else { 50 });
        let cpu_max = env_usize("MLA_BENCH_CPU_MAX", if quick { 64 } else { 1024 });
        let (base, lens, copy_bytes): (Config, Vec<usize>, usize) = if quick {
            (Config::tutorial(), vec![1, 16, 64], 1 << 20)
        } else {
            (
                Config::deepseek_v2_lite(),
                vec![1, 256, 1024, 4096, 16384, 32768],
                512 << 20,
            )
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
        let name = cuda::device_name(0).unwrap_or_else(|e| fail(e.message()));
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
        println!("device 0: {name}; CPU engine on {cpu_threads} thread(s) (MLA_BENCH_CPU_THREADS)");

        for (label, wd, cd) in [
            ("f32 weights, f32 cache", DType::F32, DType::F32),
            ("bf16 weights, bf16 cache", DType::BF16, DType::BF16),
        ] {
            let cfg = Config {
                cache_dtype: cd,
                ..cfg
            };
            let w = model.weights(&cfg, wd);
            let t0 = Instant::now();
            let mut e = CudaEngine::create(&cfg, &w, 0).unwrap_or_else(|e| fail(e.message()));
            let create_s = t0.elapsed().as_secs_f64();
            let copy_bw = copy_bandwidth(copy_bytes);
            let mut rng = Rng(5);
            let x: Vec<f32> = (0..d).map(|_| rng.next()).collect();
            let xd = DeviceBuffer::from_slice(&x).unwrap_or_else(|e| fail(&e.to_string()));
            let od =
                DeviceBuffer::from_slice(&vec![0f32; d]).unwrap_or_else(|e| fail(&e.to_string()));
            let (xp, op) = (xd.as_device_ptr().as_raw(), od.as_device_ptr().as_raw());
            let (group, groups) = e.head_groups();
            let row_bytes = cfg.cache_bytes_per_token().unwrap_or(0);
            println!();
            println!(
                "{label}: weights {:.1} MB, cache row {} B, {} head group(s) of {}, create {:.2} s, \
                 device memory {:.1} MB",
                e.weight_bytes() as f64 / 1e6,
                row_bytes,
                groups,
                group,
                create_s,
                e.device_bytes() as f64 / 1e6
            );
            println!(
                "device-to-device copy bandwidth (measured): {:.1} GB/s",
                copy_bw / 1e9
            );
            println!(
                "{:>7} | {:>11} | {:>10} | {:>9} | {:>11} | {:>8}",
                "context", "GPU us/step", "eff GB/s", "of copy", "CPU us/step", "CPU/GPU"
            );
            for &l in &lens {
                let g = gpu_step(&mut e, l, steps, xp, op);
                let bytes = e.weight_bytes() + groups * l * row_bytes;
                let bw = bytes as f64 / g;
                let cpu = (l <= cpu_max).then(|| cpu_step(&cfg, &w, &pool, l, steps));
                let (cpu_s, ratio) = match cpu {
                    Some(c) => (format!("{:.1}", c * 1e6), format!("{:.1}x", c / g)),
                    None => ("-".to_string(), "-".to_string()),
                };
                println!(
                    "{:>7} | {:>11.1} | {:>10.1} | {:>8.1}% | {:>11} | {:>8}",
                    l,
                    g * 1e6,
                    bw / 1e9,
                    100.0 * bw / copy_bw,
                    cpu_s,
                    ratio
                );
            }
        }
        println!();
        println!(
            "eff GB/s = (weights + context x cache row x head groups) bytes / GPU time per step; \
             'of copy' = that / device-to-device copy bandwidth; CPU: this machine's CPU engine \
             ({cpu_threads} threads), up to context {cpu_max} (MLA_BENCH_CPU_MAX)."
        );
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
