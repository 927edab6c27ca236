//! The oracle of the unit tests: one MLA layer exactly as docs/design.md section 2
//! (and 2.2, 2.3) writes it, top to bottom, in f64.
//!
//! Slow and obviously right: no latent cache, no absorption, no blocking, no
//! online softmax, no threads; every head's keys and values are decompressed
//! from every token's latent, and every buffer is a `Vec` with its shape in a
//! comment. Only the unit tests build it (it allocates).

use crate::config::{Config, Gate, QueryScale, RopeKey, RopeLayout, RopeType};
use crate::weights::{Tensor, Weights};

/// A tensor's elements widened to f64, row-major `[rows][cols]`.
fn widen(t: &Tensor) -> Vec<f64> {
    let mut f = vec![0f32; t.data.len()];
    t.data.widen_into(&mut f);
    f.into_iter().map(f64::from).collect()
}

/// `y = W x (+ b)`: `W` is `[out][in]`, `x` is `[in]`, `y` is `[out]`.
fn linear(w: &Tensor, b: Option<&Tensor>, x: &[f64]) -> Vec<f64> {
    let wv = widen(w);
    let bias = b.map(widen);
    (0..w.rows)
        .map(|o| {
            let row = &wv[o * w.cols..(o + 1) * w.cols];
            let dot: f64 = row.iter().zip(x).map(|(a, b)| a * b).sum();
            dot + bias.as_ref().map_or(0.0, |b| b[o])
        })
        .collect()
}

/// `y_i = w_i * x_i / sqrt(mean(x^2) + eps)`.
fn rmsnorm(x: &[f64], w: &Tensor, eps: f64) -> Vec<f64> {
    let wv = widen(w);
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let inv = 1.0 / (ms + eps).sqrt();
    x.iter().zip(&wv).map(|(v, w)| w * v * inv).collect()
}

/// YaRN's `mscale(s, m) = 0.1 m ln(s) + 1` (1 when `s <= 1`).
fn mscale(s: f64, m: f64) -> f64 {
    if s <= 1.0 {
        1.0
    } else {
        0.1 * m * s.ln() + 1.0
    }
}

/// Inverse frequency of pair `i` of `p` (docs/families.md 2.3) for a call whose
/// largest position is `seq_len - 1`.
fn frequency(cfg: &Config, i: usize, p: usize, seq_len: usize) -> f64 {
    let theta = cfg.rope_theta as f64;
    let s = cfg.rope_factor as f64;
    let l0 = cfg.original_max_position as f64;
    let f = theta.powf(-((2 * i) as f64) / p as f64);
    match cfg.rope_type {
        RopeType::Default | RopeType::None => f,
        RopeType::Linear => f / s,
        RopeType::Yarn if s > 1.0 => {
            // Correction range over pair indices.
            let corr = |k: f64| {
                p as f64 * (l0 / (2.0 * std::f64::consts::PI * k)).ln() / (2.0 * theta.ln())
            };
            let (mut low, mut high) = (corr(cfg.beta_fast as f64), corr(cfg.beta_slow as f64));
            if cfg.rope_yarn_truncate {
                low = low.floor();
                high = high.ceil();
            }
            let low = low.max(0.0);
            let mut high = high.min(p as f64 - 1.0);
            if low == high {
                high += 0.001;
            }
            let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
            f / s * ramp + f * (1.0 - ramp)
        }
        RopeType::Yarn => f,
        RopeType::Llama3 => {
            let (lo, hi) = (
                cfg.rope_low_freq_factor as f64,
                cfg.rope_high_freq_factor as f64,
            );
            let wavelen = 2.0 * std::f64::consts::PI / f;
            if wavelen < l0 / hi {
                f
            } else if wavelen > l0 / lo {
                f / s
            } else {
                let smooth = (l0 / wavelen - lo) / (hi - lo);
                (1.0 - smooth) * f / s + smooth * f
            }
        }
        RopeType::LongRope => {
            let ext = if seq_len as f64 > l0 {
                cfg.rope_long_factor[i]
            } else {
                cfg.rope_short_factor[i]
            };
            f / ext as f64
        }
    }
}

/// The factor of cos and sin (docs/families.md 2.3).
fn cos_sin_factor(cfg: &Config) -> f64 {
    let s = cfg.rope_factor as f64;
    if cfg.rope_attention_factor > 0.0 {
        return cfg.rope_attention_factor as f64;
    }
    match cfg.rope_type {
        RopeType::Yarn => mscale(s, cfg.mscale as f64) / mscale(s, cfg.mscale_all_dim as f64),
        RopeType::LongRope if s > 1.0 => {
            (1.0 + s.ln() / (cfg.original_max_position as f64).ln()).sqrt()
        }
        _ => 1.0,
    }
}

/// Rotates `x` (`p` values) to position `pos` in a call whose largest position
/// is `seq_len - 1`, each frequency times `exp(alpha_i)` when `alpha` (LeRoPE);
/// NoPE leaves it as it is.
fn rope(cfg: &Config, x: &mut [f64], pos: usize, seq_len: usize, alpha: Option<&[f64]>) {
    if cfg.rope_type == RopeType::None {
        return;
    }
    let p = x.len();
    let m = cos_sin_factor(cfg);
    for i in 0..p / 2 {
        let f = frequency(cfg, i, p, seq_len) * alpha.map_or(1.0, |a| a[i].exp());
        let (c, sn) = ((pos as f64 * f).cos() * m, (pos as f64 * f).sin() * m);
        let (a, b) = match cfg.rope_layout {
            RopeLayout::Interleaved => (2 * i, 2 * i + 1),
            RopeLayout::Half => (i, i + p / 2),
        };
        let (x0, x1) = (x[a], x[b]);
        x[a] = x0 * c - x1 * sn;
        x[b] = x1 * c + x0 * sn;
    }
}

/// The factor of the whole query at `pos` after RoPE (1 when none).
fn query_factor(cfg: &Config, pos: usize) -> f64 {
    match cfg.query_scale {
        QueryScale::Llama4 => {
            let steps = (pos / cfg.query_scale_length as usize) as f64;
            1.0 + cfg.query_scale_beta as f64 * (1.0 + steps).ln()
        }
        _ => 1.0,
    }
}

/// The layer for tokens `x` (`[T][d]`) at positions `0..T` run as calls of
/// `calls` tokens each (only longrope depends on the calls): returns `[T][d]`.
pub fn forward_calls(cfg: &Config, w: &Weights, x: &[f32], calls: &[usize]) -> Vec<f64> {
    forward_impl(cfg, w, x, calls, None)
}

/// [`forward_calls`] for a `kv_shared` layer: the latents and rope keys are the
/// producer's (its config, weights and inputs), the rest this layer's.
pub fn forward_shared_calls(
    cfg: &Config,
    w: &Weights,
    x: &[f32],
    calls: &[usize],
    producer: (&Config, &Weights, &[f32]),
) -> Vec<f64> {
    forward_impl(cfg, w, x, calls, Some(producer))
}

/// The latent `c` (`[r]`) and the rope key(s) (`[rope_k]`) token `t` (input
/// `xt`) leaves in the cache, in a call whose largest position is `end - 1`.
fn cache_row(cfg: &Config, w: &Weights, xt: &[f64], t: usize, end: usize) -> (Vec<f64>, Vec<f64>) {
    let dims = cfg.dims().unwrap();
    let (r, p) = (dims.r, dims.p);
    let eps = cfg.rms_norm_eps as f64;
    let alpha = w.rope_freq_alpha.as_ref().map(widen); // [p/2]
    let kv_a = w.kv_a_proj_with_mqa.as_ref().unwrap();
    let a = linear(kv_a, w.kv_a_proj_bias.as_ref(), xt); // [r + rope_k]
    let c = rmsnorm(&a[..r], w.kv_a_layernorm.as_ref().unwrap(), eps)
        .iter()
        .map(|v| v * cfg.kv_latent_scale as f64)
        .collect();
    let mut k_pe = a[r..].to_vec();
    if let Some(norm) = w.rope_key_norm.as_ref() {
        k_pe = k_pe.chunks(p).flat_map(|k| rmsnorm(k, norm, eps)).collect();
    }
    if p > 0 {
        for key in k_pe.chunks_mut(p) {
            rope(cfg, key, t, end, alpha.as_deref());
        }
    }
    (c, k_pe)
}

fn forward_impl(
    cfg: &Config,
    w: &Weights,
    x: &[f32],
    calls: &[usize],
    producer: Option<(&Config, &Weights, &[f32])>,
) -> Vec<f64> {
    let dims = cfg.dims().unwrap();
    let (d, h, r, n, p, v) = (dims.d, dims.h, dims.r, dims.n, dims.p, dims.v);
    let eps = cfg.rms_norm_eps as f64;
    let n_tok = x.len() / d;
    let scale = if cfg.softmax_scale > 0.0 {
        cfg.softmax_scale as f64
    } else {
        let m = if cfg.rope_type == RopeType::Yarn {
            mscale(cfg.rope_factor as f64, cfg.mscale_all_dim as f64)
        } else {
            1.0
        };
        ((n + p) as f64).powf(-0.5) * m * m
    };

    // The end of each token's call (the call's largest position + 1).
    let mut call_end = Vec::new(); // [T]
    for &c in calls {
        let end = call_end.len() + c;
        call_end.extend(std::iter::repeat_n(end, c));
    }
    assert_eq!(call_end.len(), x.len() / d, "calls cover the tokens");

    let alpha = w.rope_freq_alpha.as_ref().map(widen); // [p/2]
    let sinks = w.sinks.as_ref().map(widen); // [H]
    let learned = match (w.query_scale_s.as_ref(), w.query_scale_b.as_ref()) {
        (Some(s), Some(b)) => Some((widen(s), widen(b))), // [H], [H]
        _ => None,
    };

    // Per token: the query (rotated), the gate logits, and the latent + rope
    // key(s) the cache would hold.
    let mut q = vec![vec![0f64; h * (n + p)]; n_tok]; // [T][H][n+p]
    let mut gate = vec![Vec::new(); n_tok]; // [T][H] or [T][H*v] (empty: no gate)
    let mut c = vec![vec![0f64; r]; n_tok]; // [T][r]
    let mut k_pe = vec![vec![0f64; dims.rope_k]; n_tok]; // [T][p] or [T][H][p]
    for t in 0..n_tok {
        let xt: Vec<f64> = x[t * d..(t + 1) * d].iter().map(|&v| v as f64).collect(); // [d]
        q[t] = if cfg.gate == Gate::FusedQ {
            // u = [RMSNorm(c_q) ; c_q]; rows of head hh: [q_nope | q_pe | gate].
            let qa = linear(w.q_a_proj.as_ref().unwrap(), w.q_a_proj_bias.as_ref(), &xt);
            let mut u = rmsnorm(&qa, w.q_a_layernorm.as_ref().unwrap(), eps);
            u.extend_from_slice(&qa); // [2 r_q]
            let y = linear(w.q_b_proj.as_ref().unwrap(), None, &u); // [H*(n+p+v)]
            let mut qt = Vec::new();
            for hh in 0..h {
                let row = &y[hh * (n + p + v)..(hh + 1) * (n + p + v)];
                qt.extend_from_slice(&row[..n + p]);
                gate[t].extend_from_slice(&row[n + p..]);
            }
            qt
        } else if dims.rq > 0 {
            let qa = linear(w.q_a_proj.as_ref().unwrap(), w.q_a_proj_bias.as_ref(), &xt); // [r_q]
            let qa = match w.q_a_layernorm.as_ref() {
                Some(norm) => rmsnorm(&qa, norm, eps),
                None => qa,
            };
            let qa: Vec<f64> = qa.iter().map(|v| v * cfg.q_latent_scale as f64).collect();
            linear(w.q_b_proj.as_ref().unwrap(), None, &qa)
        } else {
            linear(w.q_proj.as_ref().unwrap(), None, &xt)
        };
        (c[t], k_pe[t]) = match producer {
            None => cache_row(cfg, w, &xt, t, call_end[t]),
            Some((pc, pw, px)) => {
                let pxt: Vec<f64> = px[t * d..(t + 1) * d].iter().map(|&v| v as f64).collect();
                cache_row(pc, pw, &pxt, t, call_end[t])
            }
        };
        if let Some(g) = w.gate_proj.as_ref() {
            gate[t] = linear(g, None, &xt);
        }
        for head in 0..h {
            rope(
                cfg,
                &mut q[t][head * (n + p) + n..(head + 1) * (n + p)],
                t,
                call_end[t],
                alpha.as_deref(),
            );
        }
        let f = query_factor(cfg, t);
        for (j, v) in q[t].iter_mut().enumerate() {
            *v *= f;
            if let Some((s, b)) = &learned {
                let hh = j / (n + p);
                *v *= s[hh] * ((t + 1) as f64).ln() + b[hh];
            }
        }
    }

    // Keys and values of every head and token: k_h = [W_UK_h c | k_pe], v_h = W_UV_h c.
    let kv_b = widen(&w.kv_b_proj); // [H*(n+v)][r]
    let mut keys = vec![vec![vec![0f64; n + p]; n_tok]; h]; // [H][T][n+p]
    let mut values = vec![vec![vec![0f64; v]; n_tok]; h]; // [H][T][v]
    for head in 0..h {
        for t in 0..n_tok {
            for j in 0..n + v {
                let row = &kv_b[(head * (n + v) + j) * r..(head * (n + v) + j + 1) * r];
                let y: f64 = row.iter().zip(&c[t]).map(|(a, b)| a * b).sum();
                if j < n {
                    keys[head][t][j] = y;
                } else {
                    values[head][t][j - n] = y;
                }
            }
            let kpe = match cfg.rope_key {
                RopeKey::Shared => &k_pe[t][..p],
                RopeKey::PerHead => &k_pe[t][head * p..(head + 1) * p],
            };
            keys[head][t][n..].copy_from_slice(kpe);
        }
    }

    // Causal softmax attention per head, then o_proj.
    let mut out = vec![0f64; n_tok * d]; // [T][d]
    for t in 0..n_tok {
        let mut o = vec![0f64; h * v]; // [H][v]: concat_h o_h
        for head in 0..h {
            let qh = &q[t][head * (n + p)..(head + 1) * (n + p)]; // [n+p]
                                                                  // Visible keys: s <= t, and t - W < s with a window W.
            let w = cfg.sliding_window as usize;
            let first = if w > 0 { (t + 1).saturating_sub(w) } else { 0 };
            let scores: Vec<f64> = (0..=t)
                .map(|s| {
                    qh.iter()
                        .zip(&keys[head][s])
                        .map(|(a, b)| a * b)
                        .sum::<f64>()
                        * scale
                })
                .enumerate()
                .map(|(s, v)| if s < first { f64::NEG_INFINITY } else { v })
                .collect(); // [t+1]
                            // A sink logit joins the denominator (and the max) unscaled.
            let sink = sinks.as_ref().map(|s| s[head]);
            let max = scores
                .iter()
                .cloned()
                .chain(sink)
                .fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect(); // [t+1]
            let sum: f64 = e.iter().sum::<f64>() + sink.map_or(0.0, |s| (s - max).exp());
            for (s, &es) in e.iter().enumerate() {
                for j in 0..v {
                    o[head * v + j] += es / sum * values[head][s][j];
                }
            }
            // Output gate: o_h *= sigmoid(g) per head or per channel.
            let sigmoid = |g: f64| 1.0 / (1.0 + (-g).exp());
            for j in 0..v {
                o[head * v + j] *= match cfg.gate {
                    Gate::None => 1.0,
                    Gate::PerHead => sigmoid(gate[t][head]),
                    Gate::PerChannel | Gate::FusedQ => sigmoid(gate[t][head * v + j]),
                };
            }
        }
        let y = linear(&w.o_proj, w.o_proj_bias.as_ref(), &o); // [d]
        out[t * d..(t + 1) * d].copy_from_slice(&y);
    }
    out
}
