//! Every golden case (tests/data, written by tools/reference/make_golden.py from
//! PyTorch) through the engine: one prefill call, uneven chunks, token by token,
//! naive and absorbed; f16/bf16 weights and caches; truncate and re-forward.

use mla_core::{AttnMode, Config, DType, Engine, Weights};
use mla_testkit::*;

const F32_TOL: f32 = 1e-5;
const HALF_TOL: f32 = 1e-2;

/// Runs `x` through a fresh engine in calls of the given sizes; returns all outputs.
fn run(cfg: &Config, w: &Weights, x: &[f32], chunks: &[usize], mode: AttnMode) -> Vec<f32> {
    let d = cfg.hidden_size as usize;
    let mut arena = Arena::new(Engine::memory_bytes(cfg).unwrap());
    let mut e = Engine::new(cfg, w, arena.get()).unwrap();
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
        assert_eq!(e.len(), t0);
    }
    assert_eq!(t0 * d, x.len(), "chunks must cover the input");
    out
}

/// Uneven chunk sizes covering `t` tokens: 3, 1, 5, 2, 7, ...
fn uneven(t: usize) -> Vec<usize> {
    let pattern = [3, 1, 5, 2, 7];
    let mut v = Vec::new();
    let mut left = t;
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
fn f32_matches_reference_in_every_schedule_and_mode() {
    for name in cases() {
        let g = Golden::load(&name);
        let t = g.n_tokens();
        let cfg = g.config(t as u32 + 8);
        let w = g.weights(&cfg);
        let (x, want) = (g.inputs(), g.outputs());
        let mut seen = Vec::new();
        let mut worst = 0f32;
        for mode in [AttnMode::Naive, AttnMode::Absorb, AttnMode::Auto] {
            for (label, chunks) in [
                ("one call", vec![t]),
                ("uneven", uneven(t)),
                ("decode", vec![1; t]),
            ] {
                let got = run(&cfg, &w, &x, &chunks, mode);
                let e = rel_err(&got, &want);
                assert!(e <= F32_TOL, "{name} {mode:?} {label}: rel err {e:e}");
                worst = worst.max(e);
                seen.push(got);
            }
        }
        // All schedules and modes agree with each other to f32 rounding.
        for s in &seen[1..] {
            let e = rel_err(s, &seen[0]);
            assert!(e <= F32_TOL, "{name}: paths disagree by {e:e}");
        }
        println!("{name}: {t} tokens, 9 runs, worst rel err {worst:.2e}");
    }
}

#[test]
fn half_weights_and_caches_within_1e_2() {
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
                for (mode, chunks) in [(AttnMode::Naive, vec![t]), (AttnMode::Absorb, uneven(t))] {
                    let got = run(&cfg, &w, &x, &chunks, mode);
                    let e = rel_err(&got, &want);
                    assert!(
                        e <= HALF_TOL,
                        "{name} weights {wd:?} cache {cd:?} {mode:?}: {e:e}"
                    );
                    // Not silently f32: rounding must show (bf16 has 8 bits).
                    assert!(e > 1e-7, "{name} {wd:?}/{cd:?}: suspiciously exact ({e:e})");
                }
            }
        }
    }
}

#[test]
fn truncate_then_reforward_reproduces_outputs() {
    for name in cases() {
        let g = Golden::load(&name);
        let t = g.n_tokens();
        let cfg = g.config(t as u32);
        let w = g.weights(&cfg);
        let d = cfg.hidden_size as usize;
        let (x, want) = (g.inputs(), g.outputs());
        let mut arena = Arena::new(Engine::memory_bytes(&cfg).unwrap());
        let mut e = Engine::new(&cfg, &w, arena.get()).unwrap();
        let mut out = vec![0f32; x.len()];
        e.forward(&x, &mut out).unwrap();
        assert_eq!(e.len(), t);
        // The cache is full: one more token is refused and nothing changes.
        let mut one = vec![0f32; d];
        assert_eq!(
            e.forward(&x[..d], &mut one).unwrap_err().status(),
            mla_core::Status::CacheFull
        );
        for k in [t / 2, 1, 0, t - 1] {
            e.truncate(k).unwrap();
            assert_eq!(e.len(), k);
            let mut tail = vec![0f32; (t - k) * d];
            e.forward(&x[k * d..], &mut tail).unwrap();
            let err = rel_err(&tail, &want[k * d..]);
            assert!(
                err <= F32_TOL,
                "{name}: truncate to {k} then re-forward: {err:e}"
            );
        }
        assert_eq!(
            e.truncate(t + 1).unwrap_err().status(),
            mla_core::Status::InvalidArgument
        );
        e.reset();
        assert_eq!(e.len(), 0);
        e.forward(&x, &mut out).unwrap();
        assert!(rel_err(&out, &want) <= F32_TOL);
    }
}

#[test]
fn rope_and_scale_match_the_reference() {
    use mla_core::rope::{cos_sin, softmax_scale, RopeParams};
    for name in cases() {
        let g = Golden::load(&name);
        let cfg = g.config(g.n_tokens() as u32);
        let p = cfg.qk_rope_head_dim as usize;
        let rp = RopeParams::from_config(&cfg);
        let mut f = vec![0f64; p / 2];
        rp.inv_freqs(&mut f);
        let want_f = g.f32s("rope_inv_freq");
        for (i, (&a, &b)) in f.iter().zip(&want_f).enumerate() {
            assert!(
                ((a as f32) - b).abs() <= 1e-6 * b.abs(),
                "{name}: inv_freq[{i}] {a} vs {b}"
            );
        }
        let (cos_ref, sin_ref) = (g.f32s("rope_cos"), g.f32s("rope_sin"));
        let (mut c, mut s) = (vec![0f32; p / 2], vec![0f32; p / 2]);
        for pos in 0..g.n_tokens() {
            cos_sin(&f, rp.attention_scaling(), pos, &mut c, &mut s);
            // The reference lays cos/sin out as cat(freqs, freqs): compare both halves.
            for i in 0..p {
                let (rc, rs) = (cos_ref[pos * p + i], sin_ref[pos * p + i]);
                assert!(
                    (c[i % (p / 2)] - rc).abs() < 2e-6,
                    "{name}: cos pos {pos} i {i}"
                );
                assert!(
                    (s[i % (p / 2)] - rs).abs() < 2e-6,
                    "{name}: sin pos {pos} i {i}"
                );
            }
        }
        let want_scale = g.f32s("softmax_scale")[0];
        let got = softmax_scale(&cfg);
        assert!(
            (got - want_scale).abs() <= 1e-6 * want_scale,
            "{name}: scale {got} vs {want_scale}"
        );
    }
}

#[test]
fn yarn_cases_really_use_yarn() {
    // Guards the reference itself: the YaRN cases must differ from plain RoPE.
    for name in ["ds_yarn", "ds_v3_yarn_small"] {
        let g = Golden::load(name);
        let cfg = g.config(g.n_tokens() as u32);
        assert!(cfg.rope_factor > 1.0, "{name}: factor {}", cfg.rope_factor);
        let plain = Config {
            rope_factor: 1.0,
            ..cfg
        };
        let w = g.weights(&cfg);
        let x = g.inputs();
        let t = g.n_tokens();
        let got = run(&plain, &w, &x, &[t], AttnMode::Naive);
        assert!(
            rel_err(&got, &g.outputs()) > 1e-3,
            "{name}: YaRN made no difference"
        );
    }
}
