//! The CUDA engine against the CPU engine and the PyTorch golden outputs
//! (feature `cuda`). Every golden case: one prefill call, uneven chunks, token by
//! token; f16/bf16 weights and caches; errors leave the engine unchanged;
//! device-pointer forward; the C ABI; long contexts (many splits) and odd sizes.
//!
//! Without a usable CUDA driver (e.g. CI, which links against the stub
//! libcuda of tools/cuda-stub) every test prints
//! `SKIPPED: no CUDA device (...)` straight to stderr (not captured by the test
//! harness) and returns. With the CPU emulator of tools/cuda-stub (`emu`) or a
//! real GPU they run in full.
#![cfg(feature = "cuda")]

use mla_core::{Config, DType, Engine, RopeKey, RopeLayout, Status, Tensor, Weights};
use mla_cuda::cust;
use mla_cuda::cust::memory::CopyDestination;
use mla_cuda::{self as cuda, CudaEngine};
use mla_testkit::*;
use std::io::Write;

const F32_TOL: f32 = 1e-4;
const HALF_TOL: f32 = 1e-2;

/// True when a CUDA device is usable; otherwise prints the SKIPPED line.
fn gpu(test: &str) -> bool {
    match cuda::device_count() {
        Ok(n) if n > 0 => true,
        r => {
            let why = match r {
                Ok(_) => "device count is 0".to_string(),
                Err(e) => e.message().to_string(),
            };
            // Straight to the process's stderr: visible even when output is captured.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: no CUDA device ({why}) [cuda::{test}]"
            );
            false
        }
    }
}

/// Runs `x` through the CPU engine in calls of the given sizes.
fn run_cpu(cfg: &Config, w: &Weights, x: &[f32], chunks: &[usize]) -> Vec<f32> {
    let d = cfg.hidden_size as usize;
    let mut arena = Arena::new(Engine::memory_bytes(cfg).unwrap());
    let mut e = Engine::new(cfg, w, arena.get()).unwrap();
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
                    assert!(
                        ec <= HALF_TOL,
                        "{name} weights {wd:?} cache {cd:?}: {ec:e} vs CPU"
                    );
                    assert!(
                        er > 1e-7,
                        "{name} {wd:?}/{cd:?}: suspiciously exact ({er:e})"
                    );
                }
            }
        }
        println!("{name}: f16/bf16 weights and caches within {HALF_TOL:e}");
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
            kv_a_proj_with_mqa: t(4),
            kv_a_layernorm: t(5),
            kv_b_proj: t(6),
            o_proj: t(7),
            q_a_proj_bias: lora.then(|| t(8)),
            kv_a_proj_bias: Some(t(9)),
            o_proj_bias: Some(t(10)),
        }
    }
}

/// Prefill `pre` tokens in chunks of `chunk`, then decode `dec` tokens one by one;
/// GPU against CPU. Returns the relative error.
fn long_run(cfg: &Config, seed: u64, pre: usize, chunk: usize, dec: usize) -> f32 {
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
    let mut e = CudaEngine::create(cfg, &w, 0).unwrap();
    let got = run_gpu(&mut e, &x, &chunks);
    let (gs, ng) = e.head_groups();
    let err = rel_err(&got, &cpu);
    println!(
        "H {} r {} p {} {:?}/{:?} cache {:?}: {} tokens, {ng} head group(s) of {gs}: rel err {err:.2e}",
        cfg.num_heads,
        cfg.kv_lora_rank,
        cfg.qk_rope_head_dim,
        cfg.rope_key,
        cfg.rope_layout,
        cfg.cache_dtype,
        pre + dec
    );
    err
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
