//! Both attention paths, through the engine, against the scalar reference
//! (docs/design.md section 2) on small random layers: shared and per-head rope keys, query
//! LoRA on and off (with and without its norm), biases, YaRN, f32 and bf16
//! weights; every instruction set this machine has; one call and uneven chunks.

use super::reference;
use crate::config::{AttnMode, Config, Gate, QueryScale, RopeKey, RopeLayout, RopeType};
use crate::dtype::{DType, Elems};
use crate::engine::Engine;
use crate::kernels::Isa;
use crate::weights::{Tensor, Weights};
use half::bf16;

/// Relative tolerance of docs/design.md section 6 (f32).
const TOL: f64 = 1e-5;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    /// Uniform in [-1, 1).
    fn uniform(&mut self) -> f32 {
        (self.next() as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.next() as usize % xs.len()]
    }

    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

/// One owned tensor: its values (f32, or bf16 when `bf16`) and shape.
struct Owned {
    f32s: Vec<f32>,
    bf16s: Vec<bf16>,
    rows: usize,
    cols: usize,
}

impl Owned {
    fn tensor(&self) -> Tensor<'_> {
        let data = if self.bf16s.is_empty() {
            Elems::F32(&self.f32s)
        } else {
            Elems::BF16(&self.bf16s)
        };
        Tensor::new(data, self.rows, self.cols).unwrap()
    }
}

/// A random layer: config, weights, inputs.
pub(crate) struct Layer {
    pub(crate) cfg: Config,
    tensors: [Option<Owned>; 17],
    pub(crate) x: Vec<f32>,
}

impl Layer {
    /// Random weights for `cfg` (bf16 when `bf16`), biases where `biases`,
    /// `n_tok` random input tokens.
    pub(crate) fn new(cfg: Config, seed: u64, bf16: bool, biases: bool, n_tok: usize) -> Layer {
        let dims = cfg.dims().unwrap();
        let mut rng = Rng(seed);
        let mut owned = |rows: usize, cols: usize, kind: u8| {
            let f32s: Vec<f32> = (0..rows * cols)
                .map(|_| {
                    let u = rng.uniform();
                    match kind {
                        0 => u * (3.0 / cols as f32).sqrt(),
                        1 => 1.0 + 0.1 * u,
                        3 => 2.0 * u,
                        4 => 0.3 * u,
                        5 => 0.5 * u,
                        _ => 0.1 * u,
                    }
                })
                .collect();
            let bf16s = if bf16 {
                f32s.iter().map(|&v| bf16::from_f32(v)).collect()
            } else {
                Vec::new()
            };
            Some(Owned {
                f32s,
                bf16s,
                rows,
                cols,
            })
        };
        let (lora, norm) = (dims.rq > 0, cfg.q_norm);
        let learned = cfg.query_scale == QueryScale::LearnedLogPos;
        let own_kv = !cfg.kv_shared;
        let tensors = [
            (!lora).then(|| owned(dims.q_width, dims.d, 0)).flatten(),
            lora.then(|| owned(dims.rq, dims.d, 0)).flatten(),
            norm.then(|| owned(1, dims.rq, 1)).flatten(),
            lora.then(|| owned(dims.q_b_rows, dims.q_b_cols, 0))
                .flatten(),
            own_kv.then(|| owned(dims.kv_a_rows, dims.d, 0)).flatten(),
            own_kv.then(|| owned(1, dims.r, 1)).flatten(),
            owned(dims.kv_b_rows, dims.r, 0),
            owned(dims.d, dims.o_cols, 0),
            (biases && lora).then(|| owned(1, dims.rq, 2)).flatten(),
            (biases && own_kv)
                .then(|| owned(1, dims.kv_a_rows, 2))
                .flatten(),
            biases.then(|| owned(1, dims.d, 2)).flatten(),
            match cfg.gate {
                Gate::PerHead => owned(dims.h, dims.d, 0),
                Gate::PerChannel => owned(dims.o_cols, dims.d, 0),
                Gate::None | Gate::FusedQ => None,
            },
            cfg.sinks.then(|| owned(1, dims.h, 3)).flatten(),
            cfg.rope_key_norm.then(|| owned(1, dims.p, 1)).flatten(),
            learned.then(|| owned(1, dims.h, 4)).flatten(),
            learned.then(|| owned(1, dims.h, 1)).flatten(),
            cfg.rope_freq_alpha
                .then(|| owned(1, dims.p / 2, 5))
                .flatten(),
        ];
        let x = (0..n_tok * dims.d).map(|_| rng.uniform()).collect();
        Layer { cfg, tensors, x }
    }

    pub(crate) fn weights(&self) -> Weights<'_> {
        let t = |i: usize| self.tensors[i].as_ref().map(Owned::tensor);
        Weights {
            q_proj: t(0),
            q_a_proj: t(1),
            q_a_layernorm: t(2),
            q_b_proj: t(3),
            kv_a_proj_with_mqa: t(4),
            kv_a_layernorm: t(5),
            q_a_proj_bias: t(8),
            kv_a_proj_bias: t(9),
            o_proj_bias: t(10),
            gate_proj: t(11),
            sinks: t(12),
            rope_key_norm: t(13),
            query_scale_s: t(14),
            query_scale_b: t(15),
            rope_freq_alpha: t(16),
            ..Weights::new(t(6).unwrap(), t(7).unwrap())
        }
    }
}

/// DeepSeek-V2-Lite's kind of layer (shared rope key, no query LoRA, YaRN)
/// at a small size: H 4, r 16, n 8, p 4, v 8.
pub(crate) fn small_v2_lite(hidden_size: u32, max_seq_len: u32, max_tokens: u32) -> Config {
    Config {
        hidden_size,
        num_heads: 4,
        q_lora_rank: 0,
        kv_lora_rank: 16,
        qk_nope_head_dim: 8,
        qk_rope_head_dim: 4,
        v_head_dim: 8,
        max_seq_len,
        max_tokens_per_call: max_tokens,
        original_max_position: 64,
        ..Config::deepseek_v2_lite()
    }
}

/// A 64-byte aligned window of `len` bytes inside `buf`.
pub(crate) fn aligned(buf: &mut Vec<u8>, len: usize) -> &mut [u8] {
    // A fresh zeroed allocation, not `resize`: Miri runs `resize`'s fill loop one
    // byte at a time (minutes for an engine's few megabytes), `vec!` as one write.
    *buf = vec![0u8; len + 64];
    let off = buf.as_ptr().align_offset(64);
    &mut buf[off..off + len]
}

/// Runs `layer` through an engine in chunks of `chunks` tokens with attention
/// on `isa` in `mode`; returns the outputs.
fn run(layer: &Layer, isa: Isa, mode: AttnMode, chunks: &[usize]) -> Vec<f32> {
    run_with(layer, &layer.cfg, &layer.weights(), isa, mode, chunks)
}

/// [`run`] with another config and weights (of the same shapes) for `layer`'s input.
fn run_with(
    layer: &Layer,
    cfg: &Config,
    w: &Weights,
    isa: Isa,
    mode: AttnMode,
    chunks: &[usize],
) -> Vec<f32> {
    let d = cfg.hidden_size as usize;
    let mut buf = Vec::new();
    let mem = aligned(&mut buf, Engine::memory_bytes(cfg).unwrap());
    let mut e = Engine::new(cfg, w, mem).unwrap();
    e.isa = isa;
    let mut out = vec![0f32; layer.x.len()];
    let mut t0 = 0;
    for &n in chunks {
        let (x, o) = (
            &layer.x[t0 * d..(t0 + n) * d],
            &mut out[t0 * d..(t0 + n) * d],
        );
        e.forward_mode(x, o, mode).unwrap();
        t0 += n;
    }
    assert_eq!(t0 * d, layer.x.len(), "chunks cover the input");
    out
}

/// max |got - want| / max |want|.
fn rel_err(got: &[f32], want: &[f64]) -> f64 {
    let num = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).abs())
        .fold(0.0, f64::max);
    let den = want.iter().map(|w| w.abs()).fold(0.0, f64::max);
    assert!(den > 0.0 && got.len() == want.len());
    num / den
}

/// Checks every instruction set and `modes` on every schedule against the reference.
fn check(layer: &Layer, modes: &[AttnMode], schedules: &[Vec<usize>], what: &str) {
    check_worst(layer, modes, schedules, what);
}

/// [`check`], returning the worst relative error.
fn check_worst(layer: &Layer, modes: &[AttnMode], schedules: &[Vec<usize>], what: &str) -> f64 {
    let mut worst = 0f64;
    for isa in Isa::available() {
        for &mode in modes {
            for chunks in schedules {
                let want = reference::forward_calls(&layer.cfg, &layer.weights(), &layer.x, chunks);
                let got = run(layer, isa, mode, chunks);
                let e = rel_err(&got, &want);
                assert!(
                    e <= TOL,
                    "{what}: {} {mode:?} chunks {chunks:?}: rel err {e:e}",
                    isa.name()
                );
                worst = worst.max(e);
            }
        }
    }
    worst
}

/// Uneven chunks covering `n` tokens, none above `max`.
fn uneven(rng: &mut Rng, n: usize, max: usize) -> Vec<usize> {
    let mut chunks = Vec::new();
    let mut left = n;
    while left > 0 {
        let c = (1 + rng.next() as usize % 5).min(max).min(left);
        chunks.push(c);
        left -= c;
    }
    chunks
}

#[test]
fn both_paths_match_the_reference_on_random_layers() {
    let mut rng = Rng(0x5eed);
    // Up to 50 tokens: some cases pack their projections (PACK_MIN_ROWS).
    // Miri runs one, drawn as 3 + r % 30 capped at 17 tokens (every ISA, both
    // paths, the unsafe task splits: a few minutes; the draw of 3 + r % 48
    // gives it 17 tokens, which took Miri over 20 minutes; the packed product
    // has its own Miri tests in kernels).
    let cases = if cfg!(miri) { 1 } else { 12 };
    for case in 0..cases {
        let r = rng.next() as usize;
        let n_tok = if cfg!(miri) {
            (3 + r % 30).min(17)
        } else {
            3 + r % 48
        };
        let q_lora_rank = rng.pick(&[0, 12, 20]);
        let yarn = rng.coin();
        let cfg = Config {
            hidden_size: rng.pick(&[16, 24, 32]),
            num_heads: rng.pick(&[1, 2, 3, 4, 5]),
            q_lora_rank,
            kv_lora_rank: rng.pick(&[8, 16, 24]),
            qk_nope_head_dim: rng.pick(&[4, 8]),
            qk_rope_head_dim: rng.pick(&[2, 4, 8]),
            v_head_dim: rng.pick(&[4, 8, 12]),
            max_seq_len: n_tok as u32 + rng.pick(&[0, 5]),
            max_tokens_per_call: n_tok as u32,
            rope_layout: rng.pick(&[RopeLayout::Interleaved, RopeLayout::Half]),
            rope_key: rng.pick(&[RopeKey::Shared, RopeKey::PerHead]),
            q_norm: q_lora_rank > 0 && rng.coin(),
            cache_dtype: DType::F32,
            attn_mode: AttnMode::Auto,
            original_max_position: 8,
            rms_norm_eps: 1e-6,
            rope_theta: rng.pick(&[10000.0, 500.0]),
            rope_factor: if yarn { 4.0 } else { 1.0 },
            beta_fast: 32.0,
            beta_slow: 1.0,
            mscale: 0.707,
            mscale_all_dim: rng.pick(&[0.707, 1.0]),
            softmax_scale: 0.0,
            rope_type: if yarn {
                RopeType::Yarn
            } else {
                RopeType::Default
            },
            ..Config::plain()
        };
        let layer = Layer::new(cfg, case, rng.coin(), rng.coin(), n_tok);
        let schedules = [vec![n_tok], uneven(&mut rng, n_tok, n_tok)];
        // Auto runs the same code as the other two (it picks one per call):
        // Miri, which checks the unsafe code, leaves it out (a third of its
        // longest test).
        let modes: &[AttnMode] = if cfg!(miri) {
            &[AttnMode::Naive, AttnMode::Absorb]
        } else {
            &[AttnMode::Naive, AttnMode::Absorb, AttnMode::Auto]
        };
        check(&layer, modes, &schedules, &format!("case {case} {cfg:?}"));
    }
}

#[test]
#[cfg_attr(miri, ignore)] // 300 tokens on every ISA: too slow under Miri
fn long_context_with_several_row_ranges_matches_the_reference() {
    // 300 cached rows: the absorbed path splits them into two ranges (SPLIT_ROWS
    // 256, blocks of 32) and combines them; the naive path runs 64-row blocks.
    let cfg = small_v2_lite(16, 300, 64);
    let layer = Layer::new(cfg, 7, false, true, 300);
    let mut chunks = vec![64; 4];
    chunks.extend([8, 8, 8]);
    chunks.extend([1; 20]);
    check(
        &layer,
        &[AttnMode::Auto, AttnMode::Absorb],
        &[chunks],
        "long context",
    );
}

/// A small random layer for the mechanism tests: H 3, r 16, n 8, p 8, v 8, d 24,
/// query LoRA with its norm; `f` sets the mechanism.
fn mechanism_cfg(n_tok: usize, f: impl FnOnce(&mut Config)) -> Config {
    let mut cfg = Config {
        hidden_size: 24,
        num_heads: 3,
        q_lora_rank: 12,
        kv_lora_rank: 16,
        qk_nope_head_dim: 8,
        qk_rope_head_dim: 8,
        v_head_dim: 8,
        max_seq_len: n_tok as u32,
        max_tokens_per_call: n_tok as u32,
        rope_layout: RopeLayout::Interleaved,
        rope_key: RopeKey::Shared,
        q_norm: true,
        cache_dtype: DType::F32,
        attn_mode: AttnMode::Auto,
        original_max_position: 16,
        rms_norm_eps: 1e-6,
        rope_theta: 500.0,
        rope_factor: 1.0,
        beta_fast: 32.0,
        beta_slow: 1.0,
        mscale: 1.0,
        mscale_all_dim: 1.0,
        softmax_scale: 0.0,
        rope_type: RopeType::Default,
        ..Config::plain()
    };
    f(&mut cfg);
    cfg
}

/// Sets a mechanism on a config.
type Setter = Box<dyn Fn(&mut Config)>;

/// The mechanism variants of the tests below, by name.
fn mechanisms() -> Vec<(&'static str, Setter)> {
    let factors = |c: &mut Config| {
        for i in 0..4 {
            c.rope_short_factor[i] = 1.0 + 0.5 * i as f32;
            c.rope_long_factor[i] = 2.0 + 3.0 * i as f32;
        }
    };
    vec![
        (
            "linear",
            Box::new(|c: &mut Config| {
                c.rope_type = RopeType::Linear;
                c.rope_factor = 4.0;
            }),
        ),
        (
            "llama3",
            Box::new(|c: &mut Config| {
                // L0 64, theta 500, p 8: wavelengths 6.3, 30, 140, 664 against 64/4
                // and 64/1 -> one pair kept, one smoothed, two divided.
                c.rope_type = RopeType::Llama3;
                c.original_max_position = 64;
                c.rope_factor = 8.0;
                c.rope_low_freq_factor = 1.0;
                c.rope_high_freq_factor = 4.0;
            }),
        ),
        (
            "yarn truncate",
            Box::new(|c: &mut Config| {
                c.rope_type = RopeType::Yarn;
                c.rope_factor = 4.0;
                c.mscale = 0.9;
            }),
        ),
        (
            "yarn no truncate",
            Box::new(|c: &mut Config| {
                // theta 500, p 8, L0 4096: correction range (1.94, 4.17), truncated
                // (1, 5): pairs 2 and 3 ramp differently.
                c.rope_type = RopeType::Yarn;
                c.rope_factor = 4.0;
                c.original_max_position = 4096;
                c.rope_yarn_truncate = false;
            }),
        ),
        (
            "yarn attention factor",
            Box::new(|c: &mut Config| {
                c.rope_type = RopeType::Yarn;
                c.rope_factor = 4.0;
                c.rope_attention_factor = 1.25;
            }),
        ),
        (
            "longrope",
            Box::new(move |c: &mut Config| {
                c.rope_type = RopeType::LongRope;
                c.rope_factor = 4.0;
                factors(c);
            }),
        ),
        (
            "nope p 8",
            Box::new(|c: &mut Config| c.rope_type = RopeType::None),
        ),
        (
            "nope p 0",
            Box::new(|c: &mut Config| {
                c.rope_type = RopeType::None;
                c.qk_rope_head_dim = 0;
                c.qk_nope_head_dim = 16;
                c.softmax_scale = 0.25;
            }),
        ),
        (
            "latent scales",
            Box::new(|c: &mut Config| {
                c.q_latent_scale = 24f32.sqrt() / 12f32.sqrt();
                c.kv_latent_scale = 24f32.sqrt() / 16f32.sqrt();
            }),
        ),
        (
            "llama4 query scale",
            Box::new(|c: &mut Config| {
                c.query_scale = QueryScale::Llama4;
                c.query_scale_beta = 0.5;
                c.query_scale_length = 8;
            }),
        ),
        (
            "sliding window",
            Box::new(|c: &mut Config| c.sliding_window = 5),
        ),
        ("sinks", Box::new(|c: &mut Config| c.sinks = true)),
        (
            "per-head gate",
            Box::new(|c: &mut Config| c.gate = Gate::PerHead),
        ),
        (
            "per-channel gate",
            Box::new(|c: &mut Config| c.gate = Gate::PerChannel),
        ),
        (
            "fused query gate",
            Box::new(|c: &mut Config| c.gate = Gate::FusedQ),
        ),
        (
            "rope key norm",
            Box::new(|c: &mut Config| c.rope_key_norm = true),
        ),
        (
            "learned query scale",
            Box::new(|c: &mut Config| c.query_scale = QueryScale::LearnedLogPos),
        ),
        (
            "lerope",
            Box::new(|c: &mut Config| {
                c.rope_freq_alpha = true;
                c.rope_type = RopeType::Yarn;
                c.rope_factor = 4.0;
                c.rope_attention_factor = 1.0;
            }),
        ),
    ]
}

#[test]
// Over 13 minutes under Miri even cut to four mechanisms and 6 tokens: the
// memory paths of the plain layer stay covered there by the test above and by
// the batch, ring and sharing unit tests.
#[cfg_attr(miri, ignore)]
fn every_mechanism_matches_the_reference_in_both_paths() {
    // 28 tokens: longrope crosses L0 16 within the prefill and in the decode steps.
    let n_tok = if cfg!(miri) { 6 } else { 28 };
    let modes = [AttnMode::Naive, AttnMode::Absorb];
    let schedules = [
        vec![n_tok],
        vec![5, 7, 1, 3, 1, 1, 4, 6],
        vec![12; 1]
            .into_iter()
            .chain(std::iter::repeat_n(1, 16))
            .collect(),
    ];
    let schedules: Vec<Vec<usize>> = schedules
        .into_iter()
        .filter(|s| s.iter().sum::<usize>() == n_tok)
        .collect();
    // Miri (about a minute per layer): the mechanisms with memory paths of
    // their own, f32 weights, 6 tokens in one call.
    let dtypes: &[bool] = if cfg!(miri) { &[false] } else { &[false, true] };
    let under_miri = ["nope p 0", "fused query gate", "sinks", "sliding window"];
    for (seed, (name, set)) in mechanisms().into_iter().enumerate() {
        if cfg!(miri) && !under_miri.contains(&name) {
            continue;
        }
        for &bf16 in dtypes {
            let cfg = mechanism_cfg(n_tok, &*set);
            let layer = Layer::new(cfg, 100 + seed as u64, bf16, true, n_tok);
            let worst = check_worst(&layer, &modes, &schedules, name);
            eprintln!("{name} (bf16 weights {bf16}): worst rel err {worst:.2e}");
        }
    }
}

#[test]
#[cfg_attr(miri, ignore)] // too slow for Miri; the reference test keeps a few mechanisms there
fn every_mechanism_moves_the_output() {
    // Switching a mechanism off must move the output far above the 1e-5
    // tolerance, so the reference comparison above is sensitive to it.
    let n_tok = if cfg!(miri) { 6 } else { 28 };
    for (seed, (name, set)) in mechanisms().into_iter().enumerate() {
        let cfg = mechanism_cfg(n_tok, &*set);
        let mut base = mechanism_cfg(n_tok, |_| {});
        // Dims and the softmax scale as the mechanism has them; only the mechanism off.
        base.qk_rope_head_dim = cfg.qk_rope_head_dim;
        base.qk_nope_head_dim = cfg.qk_nope_head_dim;
        base.softmax_scale = cfg.softmax_scale;
        if cfg.rope_type == RopeType::Yarn && name != "yarn truncate" {
            // The YaRN variants: everything as the mechanism's config but the
            // one switch (truncate back on, attention factor back to derived).
            base = cfg;
            base.rope_yarn_truncate = true;
            base.rope_attention_factor = 0.0;
        }
        if cfg.qk_rope_head_dim == 0 {
            // NoPE without a rope slot has nothing to switch off (no rotation
            // exists at p = 0); its exactness is the test above.
            continue;
        }
        let on = Layer::new(cfg, 200 + seed as u64, false, true, n_tok);
        let a = run(&on, Isa::Scalar, AttnMode::Absorb, &[n_tok]);
        // The mechanisms with weights of their own: the same layer with the
        // mechanism's flag cleared and its tensor dropped (the fused gate: its
        // gate rows zeroed, sigmoid 1/2).
        let mut w_off = on.weights();
        let mut c_off = cfg;
        let zeroed;
        match name {
            "sinks" => (c_off.sinks, w_off.sinks) = (false, None),
            "per-head gate" | "per-channel gate" => {
                (c_off.gate, w_off.gate_proj) = (Gate::None, None)
            }
            "rope key norm" => (c_off.rope_key_norm, w_off.rope_key_norm) = (false, None),
            "learned query scale" => {
                c_off.query_scale = QueryScale::None;
                (w_off.query_scale_s, w_off.query_scale_b) = (None, None);
            }
            "lerope" => (c_off.rope_freq_alpha, w_off.rope_freq_alpha) = (false, None),
            "fused query gate" => {
                let q_b = w_off.q_b_proj.unwrap();
                let mut f = vec![0f32; q_b.data.len()];
                q_b.data.widen_into(&mut f);
                let dims = cfg.dims().unwrap();
                for (i, row) in f.chunks_mut(q_b.cols).enumerate() {
                    if i % (dims.qk + dims.v) >= dims.qk {
                        row.iter_mut().for_each(|x| *x = 0.0);
                    }
                }
                zeroed = f;
                w_off.q_b_proj = Some(Tensor::f32(&zeroed, q_b.rows, q_b.cols).unwrap());
            }
            _ => {
                let off = Layer::new(base, 200 + seed as u64, false, true, n_tok);
                (c_off, w_off) = (base, off.weights());
                let b = run_with(&on, &c_off, &w_off, Isa::Scalar, AttnMode::Absorb, &[n_tok]);
                let b64: Vec<f64> = b.iter().map(|&v| v as f64).collect();
                let moved = rel_err(&a, &b64);
                eprintln!("{name}: switching it off moves the output by {moved:.2e}");
                assert!(moved > 1e-3, "{name}: moved only {moved:e}");
                continue;
            }
        }
        let b = run_with(&on, &c_off, &w_off, Isa::Scalar, AttnMode::Absorb, &[n_tok]);
        let b64: Vec<f64> = b.iter().map(|&v| v as f64).collect();
        let moved = rel_err(&a, &b64);
        eprintln!("{name}: switching it off moves the output by {moved:.2e}");
        assert!(moved > 1e-3, "{name}: moved only {moved:e}");
    }
}

#[test]
#[cfg_attr(miri, ignore)] // too slow for Miri; the reference test keeps a few mechanisms there
fn longrope_decode_differs_from_prefill_past_l0() {
    // The long factors apply to the calls whose largest position reaches L0: a
    // prefill of all tokens rotates every key with them, a decode keeps the
    // early keys' short rotation (docs/families.md 2.3).
    let n_tok = 28;
    let all = mechanisms();
    let longrope = all.iter().find(|(name, _)| *name == "longrope").unwrap();
    let cfg = mechanism_cfg(n_tok, &*longrope.1);
    let layer = Layer::new(cfg, 9, false, false, n_tok);
    let prefill = run(&layer, Isa::Scalar, AttnMode::Naive, &[n_tok]);
    let mut decode = vec![12];
    decode.extend(std::iter::repeat_n(1, 16));
    let stepped = run(&layer, Isa::Scalar, AttnMode::Naive, &decode);
    let p64: Vec<f64> = prefill.iter().map(|&v| v as f64).collect();
    assert!(rel_err(&stepped, &p64) > 1e-3);
}

#[test]
#[cfg_attr(miri, ignore)] // too slow for Miri; the reference test keeps a few mechanisms there
fn a_sliding_window_in_a_ring_matches_the_reference() {
    // W 5, at most 7 tokens per call: a ring of 11 rows for 28 positions, so
    // blocks stop at its end and new rows overwrite old ones.
    let n_tok = 28;
    let schedules = [vec![7; 4], vec![5, 7, 1, 3, 1, 1, 4, 6], vec![1; 28]];
    let modes = [AttnMode::Naive, AttnMode::Absorb, AttnMode::Auto];
    for (seed, rope_key) in [RopeKey::Shared, RopeKey::PerHead].into_iter().enumerate() {
        for bf16 in [false, true] {
            let cfg = mechanism_cfg(n_tok, |c| {
                c.sliding_window = 5;
                c.max_tokens_per_call = 7;
                c.rope_key = rope_key;
            });
            assert_eq!(cfg.dims().unwrap().cache_rows, 11);
            let layer = Layer::new(cfg, 300 + seed as u64, bf16, true, n_tok);
            let worst = check_worst(&layer, &modes, &schedules, "ring");
            eprintln!("sliding window ring ({rope_key:?}, bf16 {bf16}): worst rel err {worst:.2e}");
        }
    }
}

#[test]
#[cfg_attr(miri, ignore)] // too slow for Miri; the reference test keeps a few mechanisms there
fn a_ring_truncates_while_it_holds_the_window() {
    let cfg = mechanism_cfg(28, |c| {
        c.sliding_window = 5;
        c.max_tokens_per_call = 7;
    });
    let layer = Layer::new(cfg, 5, false, false, 28);
    let w = layer.weights();
    let d = 24;
    let mut buf = Vec::new();
    let mem = aligned(&mut buf, Engine::memory_bytes(&cfg).unwrap());
    let mut e = Engine::new(&cfg, &w, mem).unwrap();
    let mut out = vec![0f32; 28 * d];
    for i in 0..4 {
        let r = i * 7 * d..(i + 1) * 7 * d;
        e.forward(&layer.x[r.clone()], &mut out[r]).unwrap();
    }
    // 28 positions in 11 rows: 17..27 held. Rolling back to 22 needs 18..21.
    assert_eq!(e.cache().oldest(), 17);
    let err = e.truncate(20).unwrap_err();
    assert_eq!(err.status(), crate::status::Status::InvalidArgument);
    assert!(
        err.message().contains("no longer holds"),
        "{}",
        err.message()
    );
    assert_eq!(e.len(), 28);
    e.truncate(22).unwrap();
    // Re-running 22..28 gives the same outputs.
    let mut again = vec![0f32; 6 * d];
    e.forward(&layer.x[22 * d..], &mut again).unwrap();
    assert_eq!(again, out[22 * d..].to_vec());
}

#[test]
#[cfg_attr(miri, ignore)] // too slow for Miri; the reference test keeps a few mechanisms there
fn a_kv_shared_layer_reads_its_producers_cache() {
    // Producer: YaRN, biases; consumer: its own queries (learned log-position
    // scale, sinks), kv_b_proj and o_proj over the producer's latents.
    let n_tok = 20;
    let pcfg = mechanism_cfg(n_tok, |c| {
        c.rope_type = RopeType::Yarn;
        c.rope_factor = 4.0;
    });
    let ccfg = Config {
        kv_shared: true,
        sinks: true,
        query_scale: QueryScale::LearnedLogPos,
        ..pcfg
    };
    assert_eq!(ccfg.dims().unwrap().cache_rows, 0);
    for bf16 in [false, true] {
        let prod = Layer::new(pcfg, 41, bf16, true, n_tok);
        let cons = Layer::new(ccfg, 42, bf16, true, n_tok);
        let (pw, cw) = (prod.weights(), cons.weights());
        let d = 24;
        for chunks in [vec![n_tok], vec![5, 1, 7, 2, 5], vec![1; n_tok]] {
            let want = reference::forward_shared_calls(
                &ccfg,
                &cw,
                &cons.x,
                &chunks,
                (&pcfg, &pw, &prod.x),
            );
            for mode in [AttnMode::Naive, AttnMode::Absorb] {
                let (mut pb, mut cb) = (Vec::new(), Vec::new());
                let pmem = aligned(&mut pb, Engine::memory_bytes(&pcfg).unwrap());
                let cmem = aligned(&mut cb, Engine::memory_bytes(&ccfg).unwrap());
                let mut p = Engine::new(&pcfg, &pw, pmem).unwrap();
                let mut c = Engine::new(&ccfg, &cw, cmem).unwrap();
                let (mut pout, mut out) = (vec![0f32; n_tok * d], vec![0f32; n_tok * d]);
                let mut t0 = 0;
                for &n in &chunks {
                    let r = t0 * d..(t0 + n) * d;
                    p.forward(&prod.x[r.clone()], &mut pout[r.clone()]).unwrap();
                    c.forward_shared_mode(&p, &cons.x[r.clone()], &mut out[r], mode)
                        .unwrap();
                    t0 += n;
                }
                let e = rel_err(&out, &want);
                assert!(e <= TOL, "shared {mode:?} {chunks:?} bf16 {bf16}: {e:e}");
                eprintln!("kv shared {mode:?} {chunks:?} bf16 {bf16}: rel err {e:.2e}");
            }
        }
    }
}

#[test]
fn kv_sharing_refuses_what_it_cannot_read_and_changes_nothing() {
    use crate::status::Status;
    let pcfg = mechanism_cfg(8, |_| {});
    let ccfg = Config {
        kv_shared: true,
        ..pcfg
    };
    let prod = Layer::new(pcfg, 1, false, false, 8);
    let cons = Layer::new(ccfg, 2, false, false, 8);
    let (pw, cw) = (prod.weights(), cons.weights());
    let (mut pb, mut cb) = (Vec::new(), Vec::new());
    let mut p = Engine::new(
        &pcfg,
        &pw,
        aligned(&mut pb, Engine::memory_bytes(&pcfg).unwrap()),
    )
    .unwrap();
    let mut c = Engine::new(
        &ccfg,
        &cw,
        aligned(&mut cb, Engine::memory_bytes(&ccfg).unwrap()),
    )
    .unwrap();
    let d = 24;
    let mut out = vec![0f32; 2 * d];
    // A kv_shared layer has no cache to run on alone.
    let e = c.forward(&cons.x[..2 * d], &mut out).unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument);
    assert!(e.message().contains("forward_shared"), "{}", e.message());
    let e = c.append_cache_rows(&[0.0; 24]).unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument);
    // The producer has not run these positions yet.
    let e = c
        .forward_shared(&p, &cons.x[..2 * d], &mut out)
        .unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument);
    assert!(e.message().contains("producer holds 0"), "{}", e.message());
    assert_eq!(c.len(), 0);
    p.forward(&prod.x[..2 * d], &mut out).unwrap();
    // A producer that is not one: the consumer itself has no cache; and
    // producer/consumer swapped.
    let e = p
        .forward_shared(&c, &prod.x[2 * d..4 * d], &mut out)
        .unwrap_err();
    assert!(e.message().contains("not kv_shared"), "{}", e.message());
    assert_eq!(p.len(), 2);
    c.forward_shared(&p, &cons.x[..2 * d], &mut out).unwrap();
    assert_eq!(c.len(), 2);
    // Another rope width cannot be read.
    let other = mechanism_cfg(8, |c| c.qk_rope_head_dim = 4);
    let ol = Layer::new(other, 3, false, false, 8);
    let ow = ol.weights();
    let mut ob = Vec::new();
    let mut o = Engine::new(
        &other,
        &ow,
        aligned(&mut ob, Engine::memory_bytes(&other).unwrap()),
    )
    .unwrap();
    o.forward(&ol.x[..4 * d], &mut vec![0f32; 4 * d]).unwrap();
    let e = c
        .forward_shared(&o, &cons.x[2 * d..4 * d], &mut out)
        .unwrap_err();
    assert!(e.message().contains("qk_rope_head_dim"), "{}", e.message());
    assert_eq!(c.len(), 2);
}

#[test]
#[cfg_attr(miri, ignore)] // threads per task: slow under Miri
fn every_mechanism_is_bitwise_the_same_on_threads() {
    use crate::parallel::ParallelFor;
    /// Every task on its own scoped thread, last index first.
    struct Threads;
    impl ParallelFor for Threads {
        fn run(&self, n_tasks: usize, task: &(dyn Fn(usize) + Sync)) {
            std::thread::scope(|s| {
                for i in (0..n_tasks).rev() {
                    s.spawn(move || task(i));
                }
            });
        }
    }
    let n_tok = 20;
    for (seed, (name, set)) in mechanisms().into_iter().enumerate() {
        let cfg = mechanism_cfg(n_tok, &*set);
        let layer = Layer::new(cfg, 500 + seed as u64, false, true, n_tok);
        let w = layer.weights();
        for mode in [AttnMode::Naive, AttnMode::Absorb] {
            let mut outs = Vec::new();
            for threads in [false, true] {
                let mut buf = Vec::new();
                let mem = aligned(&mut buf, Engine::memory_bytes(&cfg).unwrap());
                let mut e = Engine::new(&cfg, &w, mem).unwrap();
                let pool = Threads;
                if threads {
                    e.set_parallel(Some(&pool));
                    e.set_parallel_min_work(0);
                }
                let mut out = vec![0f32; layer.x.len()];
                let d = 24;
                for (a, b) in [(0, 7), (7, 8), (8, 20)] {
                    e.forward_mode(&layer.x[a * d..b * d], &mut out[a * d..b * d], mode)
                        .unwrap();
                }
                outs.push(out.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            }
            assert!(
                outs[0] == outs[1],
                "{name} {mode:?}: threads change the bits"
            );
        }
    }
}

#[test]
#[cfg_attr(miri, ignore)] // 100 tokens on every ISA: slow under Miri
fn a_long_prefill_with_a_small_window_matches_the_reference() {
    // W 3 over 100 tokens in naive blocks of 64: the later queries skip the
    // first block, the earlier ones the second.
    let n_tok = 100;
    let cfg = mechanism_cfg(n_tok, |c| c.sliding_window = 3);
    let layer = Layer::new(cfg, 77, false, true, n_tok);
    let worst = check_worst(
        &layer,
        &[AttnMode::Naive, AttnMode::Absorb],
        &[vec![n_tok], vec![40, 1, 59]],
        "long window",
    );
    eprintln!("window 3 over 100 tokens: worst rel err {worst:.2e}");
}
