//! Rotary position embeddings (RoPE) of every rope type, usable on their own.
//!
//! Frequencies `f_i = theta^(-2i/p)`, i = 0 .. p/2-1; a vector at position `pos` has
//! its pairs rotated by `pos * f_i` (docs/design.md section 2). Pairs are `(x[2i], x[2i+1])`
//! in the interleaved layout and `(x[i], x[i+p/2])` in the half layout.
//!
//! The rope types (`RopeType`, docs/families.md 2.3) change the frequencies:
//!
//! - default: `f_i`;
//! - linear: `f_i / factor`;
//! - llama3: with `wl_i = 2 pi / f_i`, `f_i / factor` when `wl_i > L0 / low`, `f_i`
//!   when `wl_i < L0 / high`, else `(1 - s) f_i / factor + s f_i` with
//!   `s = (L0 / wl_i - low) / (high - low)`;
//! - YaRN: interpolated and original frequencies blended with a linear ramp over the
//!   correction range (floored/ceiled when `rope_yarn_truncate`);
//! - longrope: `f_i / ext_i`, `ext` the long factors when the call's largest
//!   position + 1 exceeds `L0`, else the short ones ([`RopeParams::inv_freqs_for`]);
//! - none (NoPE): no rotation at all ([`RopeParams::rotates`] is false).
//!
//! LeRoPE multiplies every frequency by `exp(alpha_i)`, alpha a weight tensor
//! ([`apply_freq_alpha`]).
//!
//! cos and sin are multiplied by the attention scaling
//! ([`RopeParams::attention_scaling`]): `rope_attention_factor` when non-zero; else
//! YaRN's `mscale(s, mscale) / mscale(s, mscale_all_dim)`, longrope's
//! `sqrt(1 + ln(factor) / ln(L0))` (1 when factor <= 1), 1 for the others. The
//! derived softmax scale gains `mscale(s, mscale_all_dim)^2` with YaRN
//! ([`softmax_scale`]).
//!
//! Frequencies and angles are computed in f64 (`pos * f_i` stays exact far past
//! 2^24 positions), then cos/sin are rounded to f32.

use crate::config::{Config, RopeLayout, RopeType, MAX_ROPE_FACTORS};
use crate::status::{err, Result, Status};

/// The RoPE parameters of a config, in f64.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeParams {
    /// `p`: rotated width (even; 0 only without rotation).
    pub dim: usize,
    /// `theta`: frequency base.
    pub theta: f64,
    /// Frequency rule.
    pub kind: RopeType,
    /// Scaling factor `s` (YaRN, linear, llama3, longrope).
    pub factor: f64,
    /// `L0`: the original context length (YaRN, llama3, longrope).
    pub original_max_position: f64,
    /// YaRN `beta_fast`.
    pub beta_fast: f64,
    /// YaRN `beta_slow`.
    pub beta_slow: f64,
    /// YaRN `mscale`.
    pub mscale: f64,
    /// YaRN `mscale_all_dim`.
    pub mscale_all_dim: f64,
    /// Final cos/sin factor; 0 = derived from the rope type.
    pub attention_factor: f64,
    /// YaRN floors/ceils its correction range.
    pub truncate: bool,
    /// llama3 `low_freq_factor`.
    pub low_freq_factor: f64,
    /// llama3 `high_freq_factor`.
    pub high_freq_factor: f64,
    /// longrope short factors (first `p/2` used).
    pub short_factor: [f32; MAX_ROPE_FACTORS],
    /// longrope long factors (first `p/2` used).
    pub long_factor: [f32; MAX_ROPE_FACTORS],
    /// Pair layout.
    pub layout: RopeLayout,
}

impl RopeParams {
    /// The parameters of a validated config.
    pub fn from_config(cfg: &Config) -> RopeParams {
        RopeParams {
            dim: cfg.qk_rope_head_dim as usize,
            theta: cfg.rope_theta as f64,
            kind: cfg.rope_type,
            factor: cfg.rope_factor as f64,
            original_max_position: cfg.original_max_position as f64,
            beta_fast: cfg.beta_fast as f64,
            beta_slow: cfg.beta_slow as f64,
            mscale: cfg.mscale as f64,
            mscale_all_dim: cfg.mscale_all_dim as f64,
            attention_factor: cfg.rope_attention_factor as f64,
            truncate: cfg.rope_yarn_truncate,
            low_freq_factor: cfg.rope_low_freq_factor as f64,
            high_freq_factor: cfg.rope_high_freq_factor as f64,
            short_factor: cfg.rope_short_factor,
            long_factor: cfg.rope_long_factor,
            layout: cfg.rope_layout,
        }
    }

    /// True when YaRN applies (rope type yarn with a factor above 1).
    pub fn yarn(&self) -> bool {
        self.kind == RopeType::Yarn && self.factor > 1.0
    }

    /// True when vectors are rotated at all (not NoPE, and `p > 0`).
    pub fn rotates(&self) -> bool {
        self.kind != RopeType::None && self.dim > 0
    }

    /// True when the frequencies depend on the call (longrope).
    pub fn per_call(&self) -> bool {
        self.kind == RopeType::LongRope
    }

    /// The multiplier of cos and sin: `attention_factor` when non-zero; else
    /// `mscale(s, mscale) / mscale(s, mscale_all_dim)` with YaRN,
    /// `sqrt(1 + ln(s) / ln(L0))` for longrope with `s > 1`, else 1.
    pub fn attention_scaling(&self) -> f64 {
        if self.attention_factor > 0.0 {
            return self.attention_factor;
        }
        match self.kind {
            RopeType::Yarn if self.yarn() => {
                yarn_mscale(self.factor, self.mscale)
                    / yarn_mscale(self.factor, self.mscale_all_dim)
            }
            RopeType::LongRope if self.factor > 1.0 && self.original_max_position > 1.0 => {
                libm::sqrt(1.0 + libm::log(self.factor) / libm::log(self.original_max_position))
            }
            _ => 1.0,
        }
    }

    /// YaRN correction range `(low, high)` over pair indices (docs/design.md section 2;
    /// floored/ceiled when `truncate`).
    pub fn correction_range(&self) -> (f64, f64) {
        let p = self.dim as f64;
        let corr = |rotations: f64| {
            p * libm::log(self.original_max_position / (2.0 * core::f64::consts::PI * rotations))
                / (2.0 * libm::log(self.theta))
        };
        let (mut low, mut high) = (corr(self.beta_fast), corr(self.beta_slow));
        if self.truncate {
            low = libm::floor(low);
            high = libm::ceil(high);
        }
        let low = low.max(0.0);
        let high = high.min(p - 1.0);
        if low == high {
            (low, high + 0.001)
        } else {
            (low, high)
        }
    }

    /// True when a call whose largest position is `seq_len - 1` uses longrope's long
    /// factors.
    pub fn long(&self, seq_len: usize) -> bool {
        self.kind == RopeType::LongRope && seq_len as f64 > self.original_max_position
    }

    /// Inverse frequency of pair `i` (0 .. p/2-1) for a call of short positions
    /// (longrope: the short factors); see [`RopeParams::inv_freq_for`].
    pub fn inv_freq(&self, i: usize) -> f64 {
        self.inv_freq_at(i, false)
    }

    /// Inverse frequency of pair `i` for a call whose largest position is
    /// `seq_len - 1` (only longrope depends on it).
    pub fn inv_freq_for(&self, i: usize, seq_len: usize) -> f64 {
        self.inv_freq_at(i, self.long(seq_len))
    }

    /// Inverse frequency of pair `i`; `long`: longrope's long factors.
    fn inv_freq_at(&self, i: usize, long: bool) -> f64 {
        let f = 1.0 / libm::pow(self.theta, (2 * i) as f64 / self.dim.max(1) as f64);
        let s = self.factor;
        match self.kind {
            RopeType::Default | RopeType::None => f,
            RopeType::Linear => f / s,
            RopeType::Yarn => {
                if self.yarn() {
                    let (low, high) = self.correction_range();
                    let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                    f / s * ramp + f * (1.0 - ramp)
                } else {
                    f
                }
            }
            RopeType::Llama3 => {
                let wavelen = 2.0 * core::f64::consts::PI / f;
                let l0 = self.original_max_position;
                let (lf, hf) = (self.low_freq_factor, self.high_freq_factor);
                if wavelen > l0 / lf {
                    f / s
                } else if wavelen < l0 / hf {
                    f
                } else {
                    let smooth = (l0 / wavelen - lf) / (hf - lf);
                    (1.0 - smooth) * f / s + smooth * f
                }
            }
            RopeType::LongRope => {
                let table = if long {
                    &self.long_factor
                } else {
                    &self.short_factor
                };
                let ext = table.get(i).copied().unwrap_or(1.0) as f64;
                1.0 / (ext * libm::pow(self.theta, (2 * i) as f64 / self.dim.max(1) as f64))
            }
        }
    }

    /// Fills `out[i]` (i = 0 .. p/2-1) with [`RopeParams::inv_freq`].
    /// Writes `min(out.len(), p/2)` values.
    pub fn inv_freqs(&self, out: &mut [f64]) {
        self.inv_freqs_for(0, out);
    }

    /// Fills `out[i]` (i = 0 .. p/2-1) with [`RopeParams::inv_freq_for`] for a call
    /// whose largest position is `seq_len - 1`. Writes `min(out.len(), p/2)` values.
    pub fn inv_freqs_for(&self, seq_len: usize, out: &mut [f64]) {
        let long = self.long(seq_len);
        for (i, f_out) in out.iter_mut().enumerate().take(self.dim / 2) {
            *f_out = self.inv_freq_at(i, long);
        }
    }
}

/// LeRoPE: multiplies each inverse frequency by `exp(alpha_i)` (pairs without an
/// alpha are left as they are).
pub fn apply_freq_alpha(inv_freq: &mut [f64], alpha: &[f32]) {
    for (f, &a) in inv_freq.iter_mut().zip(alpha) {
        *f *= libm::exp(a as f64);
    }
}

/// YaRN's magnitude correction `0.1 * m * ln(s) + 1` (1 when `s <= 1`).
pub fn yarn_mscale(s: f64, m: f64) -> f64 {
    if s <= 1.0 {
        1.0
    } else {
        0.1 * m * libm::log(s) + 1.0
    }
}

/// The softmax scale: the config's override if non-zero, else
/// `(n+p)^-0.5`, times `mscale(s, mscale_all_dim)^2` with YaRN.
pub fn softmax_scale(cfg: &Config) -> f32 {
    if cfg.softmax_scale > 0.0 {
        return cfg.softmax_scale;
    }
    let qk = (cfg.qk_nope_head_dim as f64) + (cfg.qk_rope_head_dim as f64);
    let mut s = 1.0 / libm::sqrt(qk);
    if cfg.rope_type == RopeType::Yarn && cfg.rope_factor > 1.0 {
        let m = yarn_mscale(cfg.rope_factor as f64, cfg.mscale_all_dim as f64);
        s *= m * m;
    }
    s as f32
}

/// cos and sin of one position: `cos[i] = cos(pos * inv_freq[i]) * scaling`, same for sin.
/// Writes `min(cos.len(), sin.len(), inv_freq.len())` values.
pub fn cos_sin(inv_freq: &[f64], scaling: f64, pos: usize, cos: &mut [f32], sin: &mut [f32]) {
    for ((f, c), s) in inv_freq.iter().zip(cos.iter_mut()).zip(sin.iter_mut()) {
        let angle = pos as f64 * f;
        *c = (libm::cos(angle) * scaling) as f32;
        *s = (libm::sin(angle) * scaling) as f32;
    }
}

/// Rotates one vector `x` of `p = 2 * cos.len()` values in place.
pub fn rotate(x: &mut [f32], cos: &[f32], sin: &[f32], layout: RopeLayout) {
    match layout {
        RopeLayout::Interleaved => {
            for ((pair, &c), &s) in x.chunks_exact_mut(2).zip(cos).zip(sin) {
                if let [a, b] = pair {
                    let (x0, x1) = (*a, *b);
                    *a = x0 * c - x1 * s;
                    *b = x1 * c + x0 * s;
                }
            }
        }
        RopeLayout::Half => {
            let (lo, hi) = x.split_at_mut(x.len() / 2);
            for (((a, b), &c), &s) in lo.iter_mut().zip(hi.iter_mut()).zip(cos).zip(sin) {
                let (x0, x1) = (*a, *b);
                *a = x0 * c - x1 * s;
                *b = x1 * c + x0 * s;
            }
        }
    }
}

/// Fills tables for positions `start .. start + n_pos`: `cos` and `sin` are
/// `[n_pos][p/2]`, already multiplied by the attention scaling, for one call over
/// those positions (longrope picks its factors from `start + n_pos`; NoPE gives
/// cos = 1, sin = 0). `inv_freq` is scratch of `p/2` values. Fails with
/// `InvalidArgument` on wrong lengths.
pub fn fill_tables(
    params: &RopeParams,
    start: usize,
    inv_freq: &mut [f64],
    cos: &mut [f32],
    sin: &mut [f32],
) -> Result<()> {
    let half = params.dim / 2;
    if half == 0
        || inv_freq.len() != half
        || cos.len() != sin.len()
        || !cos.len().is_multiple_of(half)
    {
        return Err(err(
            Status::InvalidArgument,
            "rope tables: inv_freq needs p/2 values; cos and sin the same multiple of p/2",
        ));
    }
    let seq_len = start.saturating_add(cos.len() / half);
    params.inv_freqs_for(seq_len, inv_freq);
    if !params.rotates() {
        inv_freq.fill(0.0);
    }
    let scaling = if params.rotates() {
        params.attention_scaling()
    } else {
        1.0
    };
    for (i, (c, s)) in cos
        .chunks_exact_mut(half)
        .zip(sin.chunks_exact_mut(half))
        .enumerate()
    {
        cos_sin(inv_freq, scaling, start.saturating_add(i), c, s);
    }
    Ok(())
}

/// Fills `cos`/`sin` (the same length, a multiple of `p/2`) for positions
/// `start, start + 1, ...`: element `j` is frequency `j % (p/2)` of position
/// `start + j / (p/2)`, with the attention scaling applied, for one call over
/// those positions (as [`fill_tables`]). Needs no frequency scratch (each
/// frequency is recomputed); for the C entry point `mla_rope_tables`.
pub fn fill_tables_direct(params: &RopeParams, start: usize, cos: &mut [f32], sin: &mut [f32]) {
    let half = (params.dim / 2).max(1);
    let seq_len = start.saturating_add(cos.len() / half);
    let (rotates, scaling) = if params.rotates() {
        (true, params.attention_scaling())
    } else {
        (false, 1.0)
    };
    for (j, (cv, sv)) in cos.iter_mut().zip(sin.iter_mut()).enumerate() {
        let f = if rotates {
            params.inv_freq_for(j % half, seq_len)
        } else {
            0.0
        };
        let angle = (start as f64 + (j / half) as f64) * f;
        *cv = (libm::cos(angle) * scaling) as f32;
        *sv = (libm::sin(angle) * scaling) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(layout: RopeLayout) -> RopeParams {
        RopeParams::from_config(&Config {
            rope_layout: layout,
            qk_rope_head_dim: 16,
            ..Config::tutorial()
        })
    }

    fn rotated(p: &RopeParams, x: &[f32], pos: usize) -> [f32; 16] {
        let mut f = [0f64; 8];
        p.inv_freqs(&mut f);
        let (mut c, mut s) = ([0f32; 8], [0f32; 8]);
        cos_sin(&f, p.attention_scaling(), pos, &mut c, &mut s);
        let mut y = [0f32; 16];
        y.copy_from_slice(x);
        rotate(&mut y, &c, &s, p.layout);
        y
    }

    fn dot(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn dot_depends_only_on_relative_position() {
        let q: [f32; 16] = core::array::from_fn(|i| (i as f32 * 0.37).sin());
        let k: [f32; 16] = core::array::from_fn(|i| (i as f32 * 0.91 + 1.0).cos());
        for layout in [RopeLayout::Interleaved, RopeLayout::Half] {
            let p = params(layout);
            let a = dot(&rotated(&p, &q, 7), &rotated(&p, &k, 3));
            let b = dot(&rotated(&p, &q, 1004), &rotated(&p, &k, 1000));
            assert!((a - b).abs() < 1e-4, "{layout:?}: {a} vs {b}");
            // ... and really depends on it.
            let c = dot(&rotated(&p, &q, 9), &rotated(&p, &k, 3));
            assert!((a - c).abs() > 1e-3);
            // Rotation preserves the norm (scaling 1 without YaRN).
            let n0 = dot(&q, &q);
            let r = rotated(&p, &q, 12345);
            assert!((dot(&r, &r) - n0).abs() < 1e-4 * n0);
        }
    }

    #[test]
    fn position_zero_is_identity_and_layouts_differ() {
        let x: [f32; 16] = core::array::from_fn(|i| i as f32 - 7.5);
        for layout in [RopeLayout::Interleaved, RopeLayout::Half] {
            assert_eq!(rotated(&params(layout), &x, 0), x);
        }
        let a = rotated(&params(RopeLayout::Interleaved), &x, 5);
        let b = rotated(&params(RopeLayout::Half), &x, 5);
        assert_ne!(a, b);
    }

    #[test]
    fn yarn_v3_scale_matches_design() {
        // docs/design.md section 2: V3 -> 192^-0.5 * 1.873854 = 0.135234.
        let s = softmax_scale(&Config::deepseek_v3());
        assert!((s - 0.135234).abs() < 1e-6, "{s}");
        let p = RopeParams::from_config(&Config::deepseek_v3());
        assert_eq!(p.attention_scaling(), 1.0);
        // V2-Lite: mscale == mscale_all_dim so cos/sin unscaled; softmax scaled.
        let c = Config::deepseek_v2_lite();
        let m = yarn_mscale(40.0, 0.707);
        let want = (1.0 / 192f64.sqrt() * m * m) as f32;
        assert_eq!(softmax_scale(&c), want);
    }

    #[test]
    fn yarn_frequencies_blend() {
        let mut c = Config::deepseek_v3();
        c.qk_rope_head_dim = 64;
        let p = RopeParams::from_config(&c);
        let (low, high) = p.correction_range();
        // p=64, theta=1e4, L0=4096: corr(32) = 10.2 -> 10, corr(1) = 22.9 -> 23.
        assert_eq!((low, high), (10.0, 23.0));
        let mut f = [0f64; 32];
        p.inv_freqs(&mut f);
        let plain = |i: usize| 1.0 / libm::pow(10000.0, 2.0 * i as f64 / 64.0);
        assert_eq!(f[0], plain(0)); // fast dims: extrapolated (unchanged)
        assert!((f[31] - plain(31) / 40.0).abs() < 1e-18); // slow dims: interpolated
        let ramp = (16.0 - 10.0) / 13.0;
        let want = plain(16) / 40.0 * ramp + plain(16) * (1.0 - ramp);
        assert!((f[16] - want).abs() < 1e-15);
    }

    #[test]
    fn tables_match_single_positions() {
        let p = params(RopeLayout::Half);
        let mut f = [0f64; 8];
        let (mut c, mut s) = ([0f32; 24], [0f32; 24]);
        fill_tables(&p, 100, &mut f, &mut c, &mut s).unwrap();
        let (mut c1, mut s1) = ([0f32; 8], [0f32; 8]);
        cos_sin(&f, 1.0, 102, &mut c1, &mut s1);
        assert_eq!(&c[16..], &c1);
        assert_eq!(&s[16..], &s1);
        assert_eq!(
            fill_tables(&p, 0, &mut f, &mut c[..5], &mut s[..5])
                .unwrap_err()
                .status(),
            Status::InvalidArgument
        );
    }

    fn typed(f: impl FnOnce(&mut Config)) -> RopeParams {
        let mut c = Config {
            qk_rope_head_dim: 8,
            rope_theta: 500.0,
            original_max_position: 64,
            rope_factor: 8.0,
            ..Config::tutorial()
        };
        f(&mut c);
        RopeParams::from_config(&c)
    }

    #[test]
    fn llama3_keeps_smooths_and_divides() {
        let p = typed(|c| c.rope_type = RopeType::Llama3);
        let plain = |i: usize| 1.0 / libm::pow(500.0, 2.0 * i as f64 / 8.0);
        // Wavelengths 6.3, 30, 140, 664 against L0/high 16 and L0/low 64.
        assert_eq!(p.inv_freq(0), plain(0));
        let wl = 2.0 * core::f64::consts::PI / plain(1);
        let s = (64.0 / wl - 1.0) / 3.0;
        assert!((p.inv_freq(1) - ((1.0 - s) * plain(1) / 8.0 + s * plain(1))).abs() < 1e-15);
        assert_eq!(p.inv_freq(2), plain(2) / 8.0);
        assert_eq!(p.inv_freq(3), plain(3) / 8.0);
        assert_eq!(p.attention_scaling(), 1.0);
    }

    #[test]
    fn longrope_switches_on_the_calls_largest_position() {
        let p = typed(|c| {
            c.rope_type = RopeType::LongRope;
            c.rope_factor = 4.0;
            c.original_max_position = 16;
            c.rope_short_factor[1] = 2.0;
            c.rope_long_factor[1] = 5.0;
        });
        let plain1 = 1.0 / libm::pow(500.0, 0.25);
        assert_eq!(p.inv_freq_for(1, 16), plain1 / 2.0);
        assert_eq!(p.inv_freq_for(1, 17), plain1 / 5.0);
        let want = libm::sqrt(1.0 + libm::log(4.0) / libm::log(16.0));
        assert!((p.attention_scaling() - want).abs() < 1e-15);
        // A table for positions 10..17 is one call reaching position 16: long.
        let (mut c, mut s) = ([0f32; 28], [0f32; 28]);
        fill_tables_direct(&p, 10, &mut c, &mut s);
        let angle = 10.0 * plain1 / 5.0;
        assert_eq!(c[1], (libm::cos(angle) * want) as f32);
    }

    #[test]
    fn yarn_truncate_and_attention_factor() {
        let p = typed(|c| {
            c.rope_type = RopeType::Yarn;
            c.rope_yarn_truncate = false;
            c.rope_attention_factor = 1.25;
        });
        let (low, high) = p.correction_range();
        assert!(low.fract() != 0.0 || high.fract() != 0.0, "{low} {high}");
        assert_eq!(p.attention_scaling(), 1.25);
        let q = RopeParams {
            truncate: true,
            ..p
        };
        let (l2, h2) = q.correction_range();
        assert_eq!(
            (l2, h2),
            (libm::floor(low).max(0.0), libm::ceil(high).min(7.0))
        );
    }

    #[test]
    fn nope_tables_are_the_identity() {
        let p = typed(|c| {
            c.rope_type = RopeType::None;
            c.rope_factor = 1.0;
        });
        assert!(!p.rotates());
        let (mut c, mut s) = ([0f32; 8], [0f32; 8]);
        fill_tables_direct(&p, 7, &mut c, &mut s);
        assert_eq!((c, s), ([1.0; 8], [0.0; 8]));
    }
}
