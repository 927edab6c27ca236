//! The CUDA engine against the CPU engine and the PyTorch golden outputs
//! (feature `cuda`). Every golden case: one prefill call, uneven chunks, token by
//! token; f16/bf16 weights and caches; errors leave the engine unchanged;
//! device-pointer forward; the C ABI; long contexts (many splits, more than 256
//! of them, exactly 5), odd sizes, per-head rope keys with a partial last head
//! group over a full cache, kv_lora_rank above 2048; both attention paths; the
//! tensor-core fragment layout; kernel faults named with MLA_CUDA_SYNC=1 (in a
//! child process: a fault poisons the process's context); JIT logs of a bad
//! module; the shared-memory limit.
//!
//! Without a usable CUDA driver (e.g. CI, which links against the stub
//! libcuda of tools/cuda-stub) every test prints
//! `SKIPPED: no CUDA device (...)` straight to stderr (not captured by the test
//! harness) and returns. With the CPU emulator of tools/cuda-stub (`emu`) or a
//! real GPU they run in full, except `long_context_against_cpu_gpu_only`, which
//! needs a real GPU (it prints SKIPPED on the emulator).
#![cfg(feature = "cuda")]

use mla_core::{Config, DType, Engine, RopeKey, RopeLayout, Status, Tensor, Weights};
use mla_cuda::cust;
use mla_cuda::cust::memory::CopyDestination;
use mla_cuda::{self as cuda, AttentionPath, CudaEngine, CudaOptions};
use mla_testkit::*;
use std::io::Write;

const F32_TOL: f32 = 1e-4;
const HALF_TOL: f32 = 1e-2;

/// Relative error allowed between the GPU and the CPU engine with the same
/// f16/bf16 cache (both store the same rounded values; the tensor-core path
/// splits its other operand into hi + lo parts).
const HALF_VS_CPU_TOL: f32 = 2e-3;

/// True when a CUDA device is usable; otherwise prints the SKIPPED line.
fn gpu(test: &str) -> bool {
    match cuda::device_count() {
        Ok(n) if n > 0 => true,
        r => {
            let why = match r {
                Ok(_) => "device count is 0".to_string(),
                Err(e) => e.message().to_string(),
            };
            skipped(&format!("no CUDA device ({why})"), test);
            false
        }
    }
}

/// Prints a SKIPPED line straight to the process's stderr (visible even when the
/// harness captures output).
fn skipped(why: &str, test: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why} [cuda::{test}]");
}

/// True on the CPU emulator of tools/cuda-stub.
fn emulator() -> bool {
    cuda::device_name(0).is_ok_and(|n| n.contains("emulator"))
}

/// Runs `x` through the CPU engine in calls of the given sizes.
fn run_cpu(cfg: &Config, w: &Weights, x: &[f32], chunks: &[usize]) -> Vec<f32> {
    run_cpu_threads(cfg, w, x, chunks, 1)
}

/// `run_cpu` on `threads` threads.
fn run_cpu_threads(
    cfg: &Config,
    w: &Weights,
    x: &[f32],
    chunks: &[usize],
    threads: usize,
) -> Vec<f32> {
    let d = cfg.hidden_size as usize;
    let pool = mla_core::parallel::ThreadPool::new(threads);
    let mut arena = Arena::new(Engine::memory_bytes(cfg).unwrap());
    let mut e = Engine::new(cfg, w, arena.get()).unwrap();
    if threads > 1 {
        e.set_parallel(Some(&pool));
    }
    let mut out = vec![0f32; x.len()];
    let mut t0 = 0;
    for &n in chunks {
        e.forward(&x[t0 * d..(t0 + n) * d], &mut out[t0 * d..(t0 + n) * d])
            .unwrap();
        t0 += n;
    }
    out
}

/// Runs `x` through a CUDA engine in calls of the given sizes.
fn run_gpu(e: &mut CudaEngine, x: &[f32], chunks: &[usize]) -> Vec<f32> {
    let d = e.config().hidden_size as usize;
    let mut out = vec![0f32; x.len()];
    let mut t0 = e.len();
    let base = t0;
    for &n in chunks {
        let (a, b) = ((t0 - base) * d, (t0 - base + n) * d);
        e.forward(&x[a..b], &mut out[a..b]).unwrap();
        t0 += n;
        assert_eq!(e.len(), t0);
    }
    out
}

/// Uneven chunk sizes covering `t` tokens: 3, 1, 5, 2, 7, ...
fn uneven(t: usize) -> Vec<usize> {
    let pattern = [3, 1, 5, 2, 7];
    let (mut v, mut left) = (Vec::new(), t);
    for i in 0.. {
        if left == 0 {
            break;
        }
        let n = pattern[i % pattern.len()].min(left);
        v.push(n);
        left -= n;
    }
    v
}

#[test]
fn golden_f32_matches_reference_and_cpu() {
    if !gpu("golden_f32_matches_reference_and_cpu") {
        return;
    }
    for name in cases() {
        let g = Golden::load(&name);
        let t = g.n_tokens();
        let cfg = g.config(t as u32 + 8);
        let w = g.weights(&cfg);
        let (x, want) = (g.inputs(), g.outputs());
        let cpu = run_cpu(&cfg, &w, &x, &[t]);
        let mut e = CudaEngine::create(&cfg, &w, 0).unwrap();
        let mut worst = (0f32, 0f32);
        for (label, chunks) in [
            ("one call", vec![t]),
            ("uneven", uneven(t)),
            ("decode", vec![1; t]),
        ] {
            e.reset();
            let got = run_gpu(&mut e, &x, &chunks);
            let (er, ec) = (rel_err(&got, &want), rel_err(&got, &cpu));
            assert!(er <= F32_TOL, "{name} {label}: rel err vs reference {er:e}");
            assert!(
                ec <= F32_TOL,
                "{name} {label}: rel err vs CPU engine {ec:e}"
            );
            worst = (worst.0.max(er), worst.1.max(ec));
        }
        println!(
            "{name}: {t} tokens on {}, worst rel err {:.2e} vs reference, {:.2e} vs CPU",
            e.device_name(),
            worst.0,
            worst.1
        );
    }
}

#[test]
fn golden_half_weights_and_caches() {
    if !gpu("golden_half_weights_and_caches") {
        return;
    }
    for name in cases() {
        let g = Golden::load(&name);
        let t = g.n_tokens();
        let cfg = g.config(t as u32);
        let w32 = g.weights(&cfg);
        let (x, want) = (g.inputs(), g.outputs());
        let mut worst_cpu = 0f32;
        for wd in [DType::F32, DType::F16, DType::BF16] {
            let conv = (wd != DType::F32).then(|| Converted::new(&w32, wd));
            let w = conv.as_ref().map_or(w32, |c| c.weights());
            for cd in [DType::F32, DType::F16, DType::BF16] {
                if wd == DType::F32 && cd == DType::F32 {
                    continue;
                }
                let cfg = Config {
                    cache_dtype: cd,
                    ..cfg
                };
                let cpu = run_cpu(&cfg, &w, &x, &[t]);
                let mut e = CudaEngine::create(&cfg, &w, 0).unwrap();
                for chunks in [vec![t], uneven(t)] {
                    e.reset();
                    let got = run_gpu(&mut e, &x, &chunks);
                    let (er, ec) = (rel_err(&got, &want), rel_err(&got, &cpu));
                    assert!(
                        er <= HALF_TOL,
                        "{name} weights {wd:?} cache {cd:?}: {er:e} vs reference"
                    );
                    // Same weights and cache dtype as the CPU engine: much closer.
                    assert!(
                        ec <= HALF_VS_CPU_TOL,
                        "{name} weights {wd:?} cache {cd:?}: {ec:e} vs CPU ({})",
                        e.attention_plan().kernel
                    );
                    worst_cpu = worst_cpu.max(ec);
                    assert!(
                        er > 1e-7,
                        "{name} {wd:?}/{cd:?}: suspiciously exact ({er:e})"
                    );
                }
            }
        }
        println!(
            "{name}: f16/bf16 weights and caches within {HALF_TOL:e} of the reference, \
             {worst_cpu:.2e} of the CPU engine"
        );
    }
}

#[test]
fn errors_leave_the_engine_unchanged() {
    if !gpu("errors_leave_the_engine_unchanged") {
        return;
    }
    let g = Golden::load("tutorial");
    let t = g.n_tokens();
    let cfg = g.config(t as u32);
    let w = g.weights(&cfg);
    let d = cfg.hidden_size as usize;
    let (x, want) = (g.inputs(), g.outputs());
    let mut e = CudaEngine::create(&cfg, &w, 0).unwrap();
    let half = t / 2;
    let mut out = vec![0f32; x.len()];
    e.forward(&x[..half * d], &mut out[..half * d]).unwrap();

    let mut o1 = vec![0f32; d];
    // n_tokens 0, bad lengths, too many tokens.
    assert_eq!(
        e.forward(&[], &mut []).unwrap_err().status(),
        Status::InvalidArgument
    );
    assert_eq!(
        e.forward(&x[..d + 1], &mut o1).unwrap_err().status(),
        Status::InvalidArgument
    );
    assert_eq!(
        e.forward(&x[..d], &mut out[..2 * d]).unwrap_err().status(),
        Status::InvalidArgument
    );
    let mut big = vec![0f32; (t + 1) * d];
    let xb = vec![0.5f32; (t + 1) * d];
    assert_eq!(
        e.forward(&xb, &mut big).unwrap_err().status(),
        Status::InvalidArgument
    );
    // Cache full: t - half + 1 tokens do not fit.
    let n_full = t - half + 1;
    assert_eq!(
        e.forward(&xb[..n_full * d], &mut big[..n_full * d])
            .unwrap_err()
            .status(),
        Status::CacheFull
    );
    // NaN / infinity.
    let mut bad = x[half * d..(half + 1) * d].to_vec();
    bad[3] = f32::NAN;
    assert_eq!(
        e.forward(&bad, &mut o1).unwrap_err().status(),
        Status::NonFinite
    );
    bad[3] = f32::INFINITY;
    assert_eq!(
        e.forward(&bad, &mut o1).unwrap_err().status(),
        Status::NonFinite
    );
    // Truncate past the end.
    assert_eq!(
        e.truncate(half + 1).unwrap_err().status(),
        Status::InvalidArgument
    );
    assert_eq!(e.len(), half);
    // Device path: NULL, n_tokens 0, cache full, NaN.
    // SAFETY: NULL and zero-token calls are rejected before any device access.
    unsafe {
        assert_eq!(
            e.forward_device(0, 0, 1).unwrap_err().status(),
            Status::NullPointer
        );
    }
    let xd = cust::memory::DeviceBuffer::from_slice(&bad).unwrap();
    let od = cust::memory::DeviceBuffer::from_slice(&vec![7f32; d]).unwrap();
    let (xp, op) = (xd.as_device_ptr().as_raw(), od.as_device_ptr().as_raw());
    // SAFETY: xd and od hold d floats each (one token).
    unsafe {
        assert_eq!(
            e.forward_device(xp, op, 0).unwrap_err().status(),
            Status::InvalidArgument
        );
        assert_eq!(
            e.forward_device(xp, op, 1).unwrap_err().status(),
            Status::NonFinite
        );
        assert_eq!(
            e.forward_device(xp + 2, op, 1).unwrap_err().status(),
            Status::Misaligned
        );
        assert_eq!(
            e.forward_device(xp, op + 1, 1).unwrap_err().status(),
            Status::Misaligned
        );
    }
    let mut back = vec![0f32; d];
    od.copy_to(&mut back[..]).unwrap();
    assert!(
        back.iter().all(|&v| v == 7.0),
        "out_dev written although the input was NaN"
    );
    assert_eq!(e.len(), half);

    // The cache is intact: the rest of the sequence gives the reference outputs.
    e.forward(&x[half * d..], &mut out[half * d..]).unwrap();
    let err = rel_err(&out, &want);
    assert!(err <= F32_TOL, "after refused calls: rel err {err:e}");
    // And now it is full.
    assert_eq!(
        e.forward(&x[..d], &mut o1).unwrap_err().status(),
        Status::CacheFull
    );
    assert_eq!(e.len(), t);
    println!("error statuses leave len and cache unchanged");
}

#[test]
fn truncate_reset_and_device_pointers() {
    if !gpu("truncate_reset_and_device_pointers") {
        return;
    }
    for name in ["tutorial", "ds_yarn"] {
        let g = Golden::load(name);
        let t = g.n_tokens();
        let cfg = g.config(t as u32);
        let w = g.weights(&cfg);
        let d = cfg.hidden_size as usize;
        let (x, want) = (g.inputs(), g.outputs());
        let mut e = CudaEngine::create(&cfg, &w, 0).unwrap();
        let mut out = vec![0f32; x.len()];
        e.forward(&x, &mut out).unwrap();
        for k in [t / 2, 1, 0, t - 1] {
            e.truncate(k).unwrap();
            assert_eq!(e.len(), k);
            let mut tail = vec![0f32; (t - k) * d];
            e.forward(&x[k * d..], &mut tail).unwrap();
            let err = rel_err(&tail, &want[k * d..]);
            assert!(
                err <= F32_TOL,
                "{name}: truncate to {k}, re-forward: {err:e}"
            );
        }
        e.reset();
        assert!(e.is_empty());
        // Device pointers, token by token, must equal the host path.
        let xd = cust::memory::DeviceBuffer::from_slice(&x).unwrap();
        let od = cust::memory::DeviceBuffer::from_slice(&vec![0f32; x.len()]).unwrap();
        for i in 0..t {
            let off = (i * d * 4) as u64;
            // SAFETY: xd and od hold t * d floats; token i is inside.
            unsafe {
                e.forward_device(
                    xd.as_device_ptr().as_raw() + off,
                    od.as_device_ptr().as_raw() + off,
                    1,
                )
                .unwrap();
            }
        }
        let mut got = vec![0f32; x.len()];
        od.copy_to(&mut got[..]).unwrap();
        let err = rel_err(&got, &want);
        assert!(err <= F32_TOL, "{name}: forward_device: {err:e}");
        println!("{name}: truncate/reset/forward_device ok ({err:.2e})");
    }
}

#[test]
fn c_abi_round_trip() {
    use mla::cuda::*;
    use mla::ffi::{mla_config, mla_weights};
    if !gpu("c_abi_round_trip") {
        return;
    }
    let g = Golden::load("ds_bias");
    let t = g.n_tokens();
    let cfg = g.config(t as u32);
    let w = g.weights(&cfg);
    let d = cfg.hidden_size as usize;
    let (x, want) = (g.inputs(), g.outputs());
    let c = mla_config::from_config(&cfg);
    let cw = mla_weights::from_weights(&w).unwrap();
    let mut out = vec![0f32; x.len()];
    // SAFETY: valid config/weights pointers, buffers of the sizes passed.
    unsafe {
        let mut e: *mut mla_cuda_engine = std::ptr::null_mut();
        assert_eq!(mla_cuda_engine_create(&c, &cw, 0, std::ptr::null_mut()), 1);
        assert_eq!(mla_cuda_engine_create(&c, &cw, -1, &mut e), 8);
        let msg = std::ffi::CStr::from_ptr(mla_cuda_last_error(std::ptr::null()));
        assert!(msg.to_str().unwrap().contains("negative"), "{msg:?}");
        let mut bad = c;
        bad.struct_size += 4;
        assert_eq!(mla_cuda_engine_create(&bad, &cw, 0, &mut e), 12);
        assert!(e.is_null());
        assert_eq!(mla_cuda_engine_create(&c, &cw, 0, &mut e), 0);
        assert!(!e.is_null());
        assert_eq!(
            mla_cuda_forward(e, std::ptr::null(), 1, out.as_mut_ptr()),
            1
        );
        assert_eq!(mla_cuda_forward(e, x.as_ptr(), 0, out.as_mut_ptr()), 8);
        let msg = std::ffi::CStr::from_ptr(mla_cuda_last_error(e));
        assert!(msg.to_str().unwrap().contains("n_tokens"), "{msg:?}");
        assert_eq!(mla_cuda_len(e), 0);
        assert_eq!(
            mla_cuda_forward(e, x.as_ptr(), t as u32, out.as_mut_ptr()),
            0
        );
        assert_eq!(mla_cuda_len(e), t as u32);
        assert!(rel_err(&out, &want) <= F32_TOL);
        assert_eq!(mla_cuda_forward(e, x.as_ptr(), 1, out.as_mut_ptr()), 7);
        assert_eq!(mla_cuda_truncate(e, t as u32 + 1), 8);
        assert_eq!(mla_cuda_truncate(e, 2), 0);
        let mut tail = vec![0f32; (t - 2) * d];
        assert_eq!(
            mla_cuda_forward(e, x[2 * d..].as_ptr(), (t - 2) as u32, tail.as_mut_ptr()),
            0
        );
        assert!(rel_err(&tail, &want[2 * d..]) <= F32_TOL);
        mla_cuda_reset(e);
        assert_eq!(mla_cuda_len(e), 0);
        assert_eq!(
            mla_cuda_forward_device(e, std::ptr::null(), 1, std::ptr::null_mut()),
            1
        );
        mla_cuda_engine_destroy(e);
        mla_cuda_engine_destroy(std::ptr::null_mut());
        mla_cuda_reset(std::ptr::null_mut());
        assert_eq!(mla_cuda_len(std::ptr::null()), 0);
    }
    println!("C ABI ok");
}

/// A small deterministic generator (xorshift) for random weights.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

/// Owned random weights for `cfg` (f32).
struct RandomWeights {
    mats: Vec<(Vec<f32>, usize, usize)>,
}

impl RandomWeights {
    fn new(cfg: &Config, seed: u64) -> RandomWeights {
        let dm = cfg.dims().unwrap();
        let mut rng = Rng(seed);
        let shapes = [
            (dm.q_width, dm.d),
            (dm.rq, dm.d),
            (1, dm.rq),
            (dm.q_width, dm.rq),
            (dm.kv_a_rows, dm.d),
            (1, dm.r),
            (dm.kv_b_rows, dm.r),
            (dm.d, dm.o_cols),
            (1, dm.rq),
            (1, dm.kv_a_rows),
            (1, dm.d),
        ];
        let mats = shapes
            .iter()
            .enumerate()
            .map(|(i, &(r, c))| {
                let v = if i == 2 || i == 5 {
                    (0..r * c).map(|_| 1.0 + 0.2 * rng.next()).collect()
                } else {
                    rng.vec(r * c, 1.0 / (c as f32).sqrt())
                };
                (v, r, c)
            })
            .collect();
        RandomWeights { mats }
    }

    fn weights(&self, cfg: &Config) -> Weights<'_> {
        let t = |i: usize| {
            let (v, r, c) = &self.mats[i];
            Tensor::f32(v, *r, *c).unwrap()
        };
        let lora = cfg.q_lora_rank > 0;
        Weights {
            q_proj: (!lora).then(|| t(0)),
            q_a_proj: lora.then(|| t(1)),
            q_a_layernorm: cfg.q_norm.then(|| t(2)),
            q_b_proj: lora.then(|| t(3)),
            kv_a_proj_with_mqa: Some(t(4)),
            kv_a_layernorm: Some(t(5)),
            q_a_proj_bias: lora.then(|| t(8)),
            kv_a_proj_bias: Some(t(9)),
            o_proj_bias: Some(t(10)),
            ..Weights::new(t(6), t(7))
        }
    }
}

/// Prefill `pre` tokens in chunks of `chunk`, then decode `dec` tokens one by one;
/// GPU against CPU. Returns the relative error.
fn long_run(cfg: &Config, seed: u64, pre: usize, chunk: usize, dec: usize) -> f32 {
    long_run_with(cfg, seed, pre, chunk, dec, &CudaOptions::default()).0
}

/// `long_run` with engine options; also returns the engine's attention kernel.
fn long_run_with(
    cfg: &Config,
    seed: u64,
    pre: usize,
    chunk: usize,
    dec: usize,
    opts: &CudaOptions,
) -> (f32, String) {
    let rw = RandomWeights::new(cfg, seed);
    let w = rw.weights(cfg);
    let d = cfg.hidden_size as usize;
    let mut rng = Rng(seed ^ 0x9e37_79b9);
    let x = rng.vec((pre + dec) * d, 1.0);
    let mut chunks: Vec<usize> = (0..pre / chunk).map(|_| chunk).collect();
    if !pre.is_multiple_of(chunk) {
        chunks.push(pre % chunk);
    }
    chunks.extend(std::iter::repeat_n(1, dec));
    let cpu = run_cpu(cfg, &w, &x, &chunks);
    let mut e = CudaEngine::create_with(cfg, &w, 0, opts).unwrap();
    let got = run_gpu(&mut e, &x, &chunks);
    let (gs, ng) = e.head_groups();
    let plan = e.attention_plan().clone();
    let (ns, sl) = e.splits_for(pre + dec - 1, 1);
    let err = rel_err(&got, &cpu);
    println!(
        "H {} r {} p {} {:?}/{:?} cache {:?}: {} tokens, {ng} head group(s) of {gs}, {} \
         ({} rows/tile, {:?} copies), last step {ns} split(s) of {sl}: rel err {err:.2e}",
        cfg.num_heads,
        cfg.kv_lora_rank,
        cfg.qk_rope_head_dim,
        cfg.rope_key,
        cfg.rope_layout,
        cfg.cache_dtype,
        pre + dec,
        plan.kernel,
        plan.tile_rows,
        plan.copy,
    );
    (err, plan.kernel)
}

#[test]
fn long_context_splits_and_head_groups() {
    if !gpu("long_context_splits_and_head_groups") {
        return;
    }
    // More than 16 heads: two head groups, the second partial. Context > 64 rows
    // per split several times over: several splits per token.
    let cfg = Config {
        hidden_size: 64,
        num_heads: 20,
        q_lora_rank: 0,
        kv_lora_rank: 32,
        qk_nope_head_dim: 8,
        qk_rope_head_dim: 8,
        v_head_dim: 8,
        max_seq_len: 300,
        max_tokens_per_call: 64,
        rope_layout: RopeLayout::Interleaved,
        rope_key: RopeKey::Shared,
        ..Config::deepseek_v2_lite()
    };
    let e = long_run(&cfg, 1, 290, 64, 4);
    assert!(e <= F32_TOL, "long context: {e:e}");
    let e = long_run(
        &Config {
            cache_dtype: DType::BF16,
            ..cfg
        },
        2,
        200,
        50,
        3,
    );
    assert!(e <= HALF_TOL, "long context bf16 cache: {e:e}");
}

#[test]
fn odd_sizes_and_per_head_rope_keys() {
    if !gpu("odd_sizes_and_per_head_rope_keys") {
        return;
    }
    // Sizes that are not multiples of 4 (scalar kernel paths), per-head rope keys,
    // half layout, query LoRA with norm, a rank above 512 (the g4 kernel variant).
    let cfg = Config {
        hidden_size: 70,
        num_heads: 3,
        q_lora_rank: 27,
        kv_lora_rank: 30,
        qk_nope_head_dim: 10,
        qk_rope_head_dim: 6,
        v_head_dim: 14,
        max_seq_len: 90,
        max_tokens_per_call: 13,
        rope_layout: RopeLayout::Half,
        rope_key: RopeKey::PerHead,
        q_norm: true,
        ..Config::tutorial()
    };
    let e = long_run(&cfg, 3, 80, 13, 5);
    assert!(e <= F32_TOL, "odd sizes: {e:e}");
    let wide = Config {
        hidden_size: 32,
        num_heads: 5,
        q_lora_rank: 0,
        q_norm: false,
        kv_lora_rank: 520,
        qk_nope_head_dim: 4,
        qk_rope_head_dim: 4,
        v_head_dim: 4,
        max_seq_len: 40,
        max_tokens_per_call: 9,
        rope_key: RopeKey::Shared,
        ..cfg
    };
    let e = long_run(&wide, 4, 30, 9, 3);
    assert!(e <= F32_TOL, "kv_lora_rank 520: {e:e}");
}

#[test]
fn v2_lite_dims_all_heads_in_one_block() {
    if !gpu("v2_lite_dims_all_heads_in_one_block") {
        return;
    }
    // DeepSeek-V2-Lite attention dims (d 2048, H 16, r 512, p 64, YaRN): all 16
    // heads share one attention block, which needs more than 48 KiB of shared
    // memory (the opt-in path).
    let cfg = Config {
        max_seq_len: 72,
        max_tokens_per_call: 16,
        ..Config::deepseek_v2_lite()
    };
    let e = long_run(&cfg, 5, 40, 16, 3);
    assert!(e <= F32_TOL, "V2-Lite dims: {e:e}");
}

#[test]
fn per_head_keys_partial_last_group_full_cache() {
    if !gpu("per_head_keys_partial_last_group_full_cache") {
        return;
    }
    // 20 heads with per-head rope keys: head groups of 16 and 4. The cache ends
    // exactly full, so its last row ends at the allocation's end (a guard page on
    // the emulator): a tile copy that read the rope keys of heads the partial
    // group does not have would run off the end.
    let cfg = Config {
        hidden_size: 48,
        num_heads: 20,
        q_lora_rank: 0,
        kv_lora_rank: 32,
        qk_nope_head_dim: 8,
        qk_rope_head_dim: 8,
        v_head_dim: 8,
        max_seq_len: 70,
        max_tokens_per_call: 16,
        rope_layout: RopeLayout::Half,
        rope_key: RopeKey::PerHead,
        q_norm: false,
        ..Config::tutorial()
    };
    for (cd, tol) in [
        (DType::F32, F32_TOL),
        (DType::F16, HALF_VS_CPU_TOL),
        (DType::BF16, HALF_VS_CPU_TOL),
    ] {
        let cfg = Config {
            cache_dtype: cd,
            ..cfg
        };
        let (e, kernel) = long_run_with(&cfg, 11, 64, 16, 6, &CudaOptions::default());
        assert!(
            e <= tol,
            "per-head keys, H 20, {cd:?} cache ({kernel}): {e:e}"
        );
    }
}

#[test]
fn exact_and_many_splits() {
    if !gpu("exact_and_many_splits") {
        return;
    }
    let base = Config {
        hidden_size: 32,
        num_heads: 3,
        q_lora_rank: 0,
        kv_lora_rank: 16,
        qk_nope_head_dim: 8,
        qk_rope_head_dim: 8,
        v_head_dim: 8,
        max_seq_len: 610,
        max_tokens_per_call: 100,
        rope_layout: RopeLayout::Interleaved,
        rope_key: RopeKey::Shared,
        q_norm: false,
        ..Config::tutorial()
    };
    // About 300 cached rows in exactly 5 splits.
    let opts = CudaOptions {
        splits: 5,
        ..CudaOptions::default()
    };
    let (e, _) = long_run_with(&base, 21, 300, 100, 4, &opts);
    assert!(e <= F32_TOL, "5 splits: {e:e}");
    // More than 256 splits (the combine kernel loops over them), 2 rows each
    // (at most 300 asked for: ceil(577 / 300) = 2 rows, so 289 splits).
    let opts = CudaOptions {
        splits: 300,
        ..CudaOptions::default()
    };
    let rw = RandomWeights::new(&base, 22);
    let w = rw.weights(&base);
    let eng = CudaEngine::create_with(&base, &w, 0, &opts).unwrap();
    let (ns, len) = eng.splits_for(576, 1);
    assert!(ns > 256, "{ns} splits of {len}");
    drop(eng);
    let (e, _) = long_run_with(&base, 22, 576, 100, 3, &opts);
    assert!(e <= F32_TOL, "{ns} splits: {e:e}");
    // The same rows with the automatic choice, f16 cache.
    let cfg = Config {
        cache_dtype: DType::F16,
        ..base
    };
    let (e, _) = long_run_with(&cfg, 23, 600, 100, 3, &CudaOptions::default());
    assert!(
        e <= HALF_VS_CPU_TOL,
        "600 rows, automatic splits, f16: {e:e}"
    );
}

#[test]
fn kv_lora_rank_above_2048() {
    if !gpu("kv_lora_rank_above_2048") {
        return;
    }
    // The one-head-per-block variant (r > 2048): r = 2050 (element copies) and
    // r = 2064 with a bf16 cache (16-byte copies); and the g4 variant.
    let cfg = Config {
        hidden_size: 32,
        num_heads: 2,
        q_lora_rank: 0,
        kv_lora_rank: 2050,
        qk_nope_head_dim: 4,
        qk_rope_head_dim: 4,
        v_head_dim: 4,
        max_seq_len: 40,
        max_tokens_per_call: 12,
        rope_layout: RopeLayout::Interleaved,
        rope_key: RopeKey::Shared,
        q_norm: false,
        ..Config::tutorial()
    };
    let (e, kernel) = long_run_with(&cfg, 31, 30, 12, 3, &CudaOptions::default());
    assert!(kernel.ends_with("_g1"), "{kernel}");
    assert!(e <= F32_TOL, "r 2050: {e:e}");
    // The four-heads-per-block variant (1024 < r <= 2048), 5 heads: a partial
    // second group.
    let g4 = Config {
        kv_lora_rank: 1100,
        num_heads: 5,
        ..cfg
    };
    let (e, kernel) = long_run_with(&g4, 33, 30, 12, 3, &CudaOptions::default());
    assert!(kernel.ends_with("_g4"), "{kernel}");
    assert!(e <= F32_TOL, "r 1100: {e:e}");
    let cfg = Config {
        kv_lora_rank: 2064,
        cache_dtype: DType::BF16,
        max_seq_len: 24,
        ..cfg
    };
    let (e, _) = long_run_with(&cfg, 32, 20, 12, 2, &CudaOptions::default());
    assert!(e <= HALF_VS_CPU_TOL, "r 2064, bf16 cache: {e:e}");
}

#[test]
fn attention_paths_agree() {
    if !gpu("attention_paths_agree") {
        return;
    }
    // Tensor cores and CUDA cores on the same f16/bf16 cache, two head groups.
    let cfg = Config {
        hidden_size: 64,
        num_heads: 20,
        q_lora_rank: 24,
        kv_lora_rank: 64,
        qk_nope_head_dim: 16,
        qk_rope_head_dim: 16,
        v_head_dim: 16,
        max_seq_len: 120,
        max_tokens_per_call: 32,
        rope_layout: RopeLayout::Interleaved,
        rope_key: RopeKey::Shared,
        q_norm: true,
        ..Config::tutorial()
    };
    let sm80 = cuda::module_info(0).unwrap().compute_capability.0 >= 8;
    for cd in [DType::F16, DType::BF16] {
        let cfg = Config {
            cache_dtype: cd,
            ..cfg
        };
        let cc = CudaOptions {
            attention: AttentionPath::CudaCores,
            ..CudaOptions::default()
        };
        let (e, k) = long_run_with(&cfg, 41, 100, 32, 4, &cc);
        assert!(k.starts_with("mla_attn_cc_"), "{k}");
        assert!(e <= HALF_VS_CPU_TOL, "CUDA cores, {cd:?}: {e:e}");
        let tc = CudaOptions {
            attention: AttentionPath::TensorCores,
            ..CudaOptions::default()
        };
        if sm80 {
            let (e, k) = long_run_with(&cfg, 41, 100, 32, 4, &tc);
            assert!(k.starts_with("mla_attn_tc_"), "{k}");
            assert!(e <= HALF_VS_CPU_TOL, "tensor cores, {cd:?}: {e:e}");
            // 32-row tiles (as on A100 / Orin for V2-Lite): the scores' K split
            // over two warps per row block. 64-row tiles need 37120 bytes here.
            let tc32 = CudaOptions {
                max_shared_memory: 30_000,
                ..tc
            };
            let rw = RandomWeights::new(&cfg, 41);
            let eng = CudaEngine::create_with(&cfg, &rw.weights(&cfg), 0, &tc32).unwrap();
            assert_eq!(
                eng.attention_plan().tile_rows,
                32,
                "{:?}",
                eng.attention_plan()
            );
            drop(eng);
            let (e, _) = long_run_with(&cfg, 41, 100, 32, 4, &tc32);
            assert!(
                e <= HALF_VS_CPU_TOL,
                "tensor cores, 32-row tiles, {cd:?}: {e:e}"
            );
        } else {
            let rw = RandomWeights::new(&cfg, 41);
            let err = CudaEngine::create_with(&cfg, &rw.weights(&cfg), 0, &tc).unwrap_err();
            assert_eq!(err.status(), Status::Unsupported, "{}", err.message());
            println!("tensor cores refused below sm_80: {}", err.message());
        }
    }
    // Sizes that are not multiples of 4 or 16 (element copies, zero-padded
    // tiles): shared and per-head rope keys, f16 and bf16.
    for (rope_key, cd) in [
        (RopeKey::Shared, DType::F16),
        (RopeKey::PerHead, DType::BF16),
    ] {
        let odd = Config {
            hidden_size: 40,
            num_heads: 5,
            q_lora_rank: 0,
            q_norm: false,
            kv_lora_rank: 30,
            qk_nope_head_dim: 6,
            qk_rope_head_dim: 6,
            v_head_dim: 10,
            max_seq_len: 80,
            max_tokens_per_call: 16,
            rope_layout: RopeLayout::Half,
            rope_key,
            cache_dtype: cd,
            ..cfg
        };
        let (e, k) = long_run_with(&odd, 43, 70, 16, 4, &CudaOptions::default());
        assert!(
            e <= HALF_VS_CPU_TOL,
            "odd sizes, {rope_key:?}, {cd:?} ({k}): {e:e}"
        );
        if sm80 {
            assert!(k.starts_with("mla_attn_tc_"), "{k}");
        }
    }
    // An f32 cache never takes tensor cores.
    let rw = RandomWeights::new(&cfg, 42);
    let tc = CudaOptions {
        attention: AttentionPath::TensorCores,
        ..CudaOptions::default()
    };
    let err = CudaEngine::create_with(&cfg, &rw.weights(&cfg), 0, &tc).unwrap_err();
    assert_eq!(err.status(), Status::Unsupported);
}

#[test]
fn mma_fragment_layout() {
    if !gpu("mma_fragment_layout") {
        return;
    }
    let r = cuda::selftest_mma(0).unwrap_or_else(|e| {
        // A module that does not load: its whole JIT log, then fail.
        eprintln!("{}", cuda::failed_module_log());
        panic!("{:?}: {}", e.status(), e.message())
    });
    match r {
        None => skipped(
            "the loaded module has no tensor-core kernels (compute capability below 8.0)",
            "mma_fragment_layout",
        ),
        Some(e) => {
            println!(
                "mma.sync m16n8k16 fragments on {}: worst rel err {e:.2e}",
                cuda::device_name(0).unwrap()
            );
            assert!(
                e < 1e-5,
                "tensor-core fragment layout is wrong: rel err {e:e}"
            );
        }
    }
}

#[test]
fn shared_memory_limit_gives_unsupported() {
    if !gpu("shared_memory_limit_gives_unsupported") {
        return;
    }
    let g = Golden::load("ds_yarn");
    let t = g.n_tokens();
    let cfg = g.config(t as u32);
    let w = g.weights(&cfg);
    // Less than one head and one cached row need (668 bytes here).
    let tiny = CudaOptions {
        max_shared_memory: 600,
        ..CudaOptions::default()
    };
    let e = CudaEngine::create_with(&cfg, &w, 0, &tiny).unwrap_err();
    assert_eq!(e.status(), Status::Unsupported, "{}", e.message());
    assert!(e.message().contains("shared memory"), "{}", e.message());
    // A small limit still works, with fewer heads per block and rows per tile.
    let small = CudaOptions {
        max_shared_memory: 12 * 1024,
        ..CudaOptions::default()
    };
    let mut eng = CudaEngine::create_with(&cfg, &w, 0, &small).unwrap();
    let plan = eng.attention_plan().clone();
    assert!(plan.smem <= 12 * 1024, "{plan:?}");
    let got = run_gpu(&mut eng, &g.inputs(), &[t]);
    let err = rel_err(&got, &g.outputs());
    assert!(err <= F32_TOL, "{plan:?}: {err:e}");
    println!(
        "12 KiB of shared memory: {} heads x {} rows per tile, rel err {err:.2e}",
        plan.heads_per_block, plan.tile_rows
    );
}

#[test]
fn sync_after_launch_same_results() {
    if !gpu("sync_after_launch_same_results") {
        return;
    }
    let g = Golden::load("ds_qlora_interleave");
    let t = g.n_tokens();
    let cfg = g.config(t as u32);
    let w = g.weights(&cfg);
    let opts = CudaOptions {
        sync_after_launch: true,
        timing: true,
        ..CudaOptions::default()
    };
    let mut e = CudaEngine::create_with(&cfg, &w, 0, &opts).unwrap();
    assert!(e.options().sync_after_launch);
    let got = run_gpu(&mut e, &g.inputs(), &uneven(t));
    let err = rel_err(&got, &g.outputs());
    assert!(err <= F32_TOL, "{err:e}");
    let ms = e.last_device_ms().expect("timing on");
    assert!(ms >= 0.0 && ms.is_finite(), "{ms}");
}

/// The benchmark's cache filling with timing on: appending rows leaves no
/// timing (the driver refuses the elapsed time of events never recorded, which
/// an H200 run showed), the next forward call is timed, the rows are the seed's
/// (same seed, same output; another seed, another output), and a fill past the
/// capacity is `CacheFull` with the length unchanged.
#[test]
fn appended_rows_then_timed_forward() {
    if !gpu("appended_rows_then_timed_forward") {
        return;
    }
    let g = Golden::load("ds_qlora_interleave");
    let cfg = g.config(16);
    let w = g.weights(&cfg);
    let opts = CudaOptions {
        timing: true,
        ..CudaOptions::default()
    };
    let x = &g.inputs()[..cfg.hidden_size as usize];
    let step = |seed: u64| {
        let mut e = CudaEngine::create_with(&cfg, &w, 0, &opts).unwrap();
        e.append_random_rows(9, seed).unwrap();
        e.append_zero_rows(2).unwrap();
        assert_eq!(e.len(), 11);
        assert_eq!(e.last_device_ms(), None);
        let err = e.append_random_rows(6, seed).unwrap_err();
        assert_eq!(err.status(), Status::CacheFull, "{}", err.message());
        assert_eq!(e.len(), 11);
        let mut out = vec![0f32; cfg.hidden_size as usize];
        e.forward(x, &mut out).unwrap();
        let ms = e.last_device_ms().expect("timing on");
        assert!(ms >= 0.0 && ms.is_finite(), "{ms}");
        assert_eq!(e.len(), 12);
        out
    };
    let a = step(5);
    assert!(a.iter().all(|v| v.is_finite()));
    assert_eq!(a, step(5));
    assert_ne!(a, step(6));
}

/// Runs the ignored test `child` of this test binary in a new process with
/// `env` set; returns its stdout and stderr.
fn run_child(child: &str, env: &[(&str, &str)]) -> String {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            child,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("MLA_TEST_CHILD", "1")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The text after `tag` on the first line that has it.
fn tagged<'a>(out: &'a str, tag: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.split_once(tag).map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no {tag} line in the child's output:\n{out}"))
}

#[test]
#[ignore = "a child process of kernel_faults_are_named"]
fn child_fault() {
    if std::env::var("MLA_TEST_CHILD").is_err() || !gpu("child_fault") {
        return;
    }
    let g = Golden::load("tutorial");
    let t = g.n_tokens();
    let cfg = g.config(t as u32);
    let w = g.weights(&cfg);
    let d = cfg.hidden_size as usize;
    let mut e = CudaEngine::create(&cfg, &w, 0).unwrap();
    let od = cust::memory::DeviceBuffer::from_slice(&vec![0f32; d]).unwrap();
    // An aligned address nothing is mapped at: the first kernel's reads of x fault.
    // SAFETY: deliberately invalid device memory; the fault stays on the device.
    let r = unsafe { e.forward_device(0x100, od.as_device_ptr().as_raw(), 1) };
    let m = |r: Result<(), mla_core::Error>| match r {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("{:?}: {}", e.status(), e.message()),
    };
    println!("CHILD-FAULT: {}", m(r));
    let x = g.inputs();
    let mut out = vec![0f32; d];
    println!("CHILD-AFTER: {}", m(e.forward(&x[..d], &mut out)));
    println!(
        "CHILD-CREATE: {}",
        m(CudaEngine::create(&cfg, &w, 0).map(drop))
    );
}

#[test]
fn kernel_faults_are_named() {
    if !gpu("kernel_faults_are_named") {
        return;
    }
    for sync in ["1", "0"] {
        let out = run_child("child_fault", &[("MLA_CUDA_SYNC", sync)]);
        let fault = tagged(&out, "CHILD-FAULT: ");
        // An illegal address (the emulator's and, expectedly, a GPU's report).
        assert!(
            fault.starts_with("Device")
                && ["ILLEGAL_ADDRESS", "INVALID_ADDRESS_SPACE", "LAUNCH_FAILED"]
                    .iter()
                    .any(|n| fault.contains(&format!("CUDA_ERROR_{n}"))),
            "MLA_CUDA_SYNC={sync}: {fault}"
        );
        if sync == "1" {
            // Synchronised after each launch: the first kernel, which reads x, is named.
            assert!(
                fault.contains("[mla_linear] failed (kernel 1 of the call)"),
                "{fault}"
            );
        } else {
            assert!(fault.contains("MLA_CUDA_SYNC=1 names it"), "{fault}");
        }
        // The context is unusable afterwards, for this engine and new ones.
        for tag in ["CHILD-AFTER: ", "CHILD-CREATE: "] {
            let after = tagged(&out, tag);
            assert!(
                after.starts_with("Device") && after.contains("unusable"),
                "{tag}{after}"
            );
        }
        println!("MLA_CUDA_SYNC={sync}: {fault}");
    }
}

#[test]
#[ignore = "a child process of bad_module_reports_the_jit_log"]
fn child_bad_module() {
    if std::env::var("MLA_TEST_CHILD").is_err() || !gpu("child_bad_module") {
        return;
    }
    let g = Golden::load("tutorial");
    let cfg = g.config(g.n_tokens() as u32);
    let w = g.weights(&cfg);
    match CudaEngine::create(&cfg, &w, 0) {
        Ok(_) => println!("CHILD-MODULE: ok"),
        Err(e) => println!("CHILD-MODULE: {:?}: {}", e.status(), e.message()),
    }
    println!(
        "CHILD-LOG: {}",
        cuda::failed_module_log().replace('\n', " | ")
    );
}

#[test]
fn bad_module_reports_the_jit_log() {
    if !gpu("bad_module_reports_the_jit_log") {
        return;
    }
    let path = std::env::temp_dir().join(format!("mla-bad-{}.ptx", std::process::id()));
    std::fs::write(
        &path,
        ".version 7.0\n.target sm_72\n.address_size 64\nthis is not PTX;\n",
    )
    .unwrap();
    let out = run_child(
        "child_bad_module",
        &[("MLA_CUDA_MODULE_FILE", path.to_str().unwrap())],
    );
    let _ = std::fs::remove_file(&path);
    let msg = tagged(&out, "CHILD-MODULE: ");
    assert!(
        msg.starts_with("Device") && msg.contains("loading the kernels") && msg.contains("JIT log"),
        "{msg}"
    );
    let log = tagged(&out, "CHILD-LOG: ");
    assert!(log.contains("MLA_CUDA_MODULE_FILE"), "{log}");
    println!("bad module: {msg}");
}

#[test]
fn long_context_against_cpu_gpu_only() {
    if !gpu("long_context_against_cpu_gpu_only") {
        return;
    }
    if emulator() {
        skipped(
            "needs a real GPU (4k-32k contexts take hours on the CPU emulator)",
            "long_context_against_cpu_gpu_only",
        );
        return;
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let base = Config {
        hidden_size: 64,
        num_heads: 4,
        q_lora_rank: 0,
        kv_lora_rank: 64,
        qk_nope_head_dim: 16,
        qk_rope_head_dim: 16,
        v_head_dim: 16,
        max_tokens_per_call: 512,
        rope_layout: RopeLayout::Interleaved,
        rope_key: RopeKey::Shared,
        q_norm: false,
        ..Config::tutorial()
    };
    // 4096 in every cache dtype, 16384 with f32 (CUDA cores), 32768 with bf16
    // (tensor cores on sm_80+); the CPU reference costs O(context^2).
    for (lk, dtypes) in [
        (4096usize, &[DType::F32, DType::F16, DType::BF16][..]),
        (16384, &[DType::F32][..]),
        (32768, &[DType::BF16][..]),
    ] {
        for &cd in dtypes {
            let cfg = Config {
                max_seq_len: lk as u32 + 4,
                cache_dtype: cd,
                ..base
            };
            let rw = RandomWeights::new(&cfg, 51);
            let w = rw.weights(&cfg);
            let d = cfg.hidden_size as usize;
            let x = Rng(52).vec((lk + 4) * d, 1.0);
            let mut chunks = vec![512; lk / 512];
            chunks.extend([1, 1, 1, 1]);
            let t0 = std::time::Instant::now();
            let cpu = run_cpu_threads(&cfg, &w, &x, &chunks, threads);
            let cpu_s = t0.elapsed().as_secs_f64();
            let mut e = CudaEngine::create(&cfg, &w, 0).unwrap();
            let got = run_gpu(&mut e, &x, &chunks);
            let (ns, sl) = e.splits_for(lk + 3, 1);
            // The last chunk and the decode steps (the longest contexts).
            let tail = (512 + 4) * d;
            let err = rel_err(&got[got.len() - tail..], &cpu[cpu.len() - tail..]);
            let tol = if cd == DType::F32 {
                F32_TOL
            } else {
                HALF_VS_CPU_TOL
            };
            println!(
                "context {lk}, {cd:?} cache, {}: decode in {ns} splits of {sl}: rel err {err:.2e} \
                 (CPU reference {cpu_s:.1} s on {threads} threads)",
                e.attention_plan().kernel
            );
            assert!(ns >= 8, "only {ns} splits at context {lk}");
            assert!(err <= tol, "context {lk}, {cd:?}: {err:e}");
        }
    }
}
