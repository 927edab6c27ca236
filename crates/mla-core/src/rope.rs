//! Rotary position embeddings (RoPE) with YaRN, usable on their own.
//!
//! Frequencies `f_i = theta^(-2i/p)`, i = 0 .. p/2-1; a vector at position `pos` has
//! its pairs rotated by `pos * f_i` (DESIGN.md 2.2). Pairs are `(x[2i], x[2i+1])`
//! in the interleaved layout and `(x[i], x[i+p/2])` in the half layout.
//!
//! YaRN (when `rope_factor > 1`) blends interpolated and original frequencies with
//! a linear ramp over the correction range and scales cos/sin by
//! `mscale(s, mscale) / mscale(s, mscale_all_dim)`; the softmax scale gains
//! `mscale(s, mscale_all_dim)^2` ([`softmax_scale`]).
//!
//! Angles are computed in f64 (`pos * f_i` stays exact far past 2^24 positions),
//! then cos/sin are rounded to f32.

use crate::config::{Config, RopeLayout};
use crate::status::{err, Result, Status};

/// The RoPE parameters of a config, in f64.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeParams {
    /// `p`: rotated width (even).
    pub dim: usize,
    /// `theta`: frequency base.
    pub theta: f64,
    /// YaRN factor `s` (`<= 1`: plain RoPE).
    pub factor: f64,
    /// YaRN `L0`.
    pub original_max_position: f64,
    /// YaRN `beta_fast`.
    pub beta_fast: f64,
    /// YaRN `beta_slow`.
    pub beta_slow: f64,
    /// YaRN `mscale`.
    pub mscale: f64,
    /// YaRN `mscale_all_dim`.
    pub mscale_all_dim: f64,
    /// Pair layout.
    pub layout: RopeLayout,
}

impl RopeParams {
    /// The parameters of a validated config.
    pub fn from_config(cfg: &Config) -> RopeParams {
        RopeParams {
            dim: cfg.qk_rope_head_dim as usize,
            theta: cfg.rope_theta as f64,
            factor: cfg.rope_factor as f64,
            original_max_position: cfg.original_max_position as f64,
            beta_fast: cfg.beta_fast as f64,
            beta_slow: cfg.beta_slow as f64,
            mscale: cfg.mscale as f64,
            mscale_all_dim: cfg.mscale_all_dim as f64,
            layout: cfg.rope_layout,
        }
    }

    /// True when YaRN applies.
    pub fn yarn(&self) -> bool {
        self.factor > 1.0
    }

    /// The multiplier of cos and sin: `mscale(s, mscale) / mscale(s, mscale_all_dim)`
    /// with YaRN, else 1.
    pub fn attention_scaling(&self) -> f64 {
        if self.yarn() {
            yarn_mscale(self.factor, self.mscale) / yarn_mscale(self.factor, self.mscale_all_dim)
        } else {
            1.0
        }
    }

    /// YaRN correction range `(low, high)` over pair indices (DESIGN.md 2.2).
    pub fn correction_range(&self) -> (f64, f64) {
        let p = self.dim as f64;
        let corr = |rotations: f64| {
            p * libm::log(self.original_max_position / (2.0 * core::f64::consts::PI * rotations))
                / (2.0 * libm::log(self.theta))
        };
        let low = libm::floor(corr(self.beta_fast)).max(0.0);
        let high = libm::ceil(corr(self.beta_slow)).min(p - 1.0);
        if low == high {
            (low, high + 0.001)
        } else {
            (low, high)
        }
    }

    /// Inverse frequency of pair `i` (0 .. p/2-1), YaRN applied.
    pub fn inv_freq(&self, i: usize) -> f64 {
        let f = 1.0 / libm::pow(self.theta, (2 * i) as f64 / self.dim as f64);
        if self.yarn() {
            let (low, high) = self.correction_range();
            let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
            f / self.factor * ramp + f * (1.0 - ramp)
        } else {
            f
        }
    }

    /// Fills `out[i]` (i = 0 .. p/2-1) with [`RopeParams::inv_freq`].
    /// Writes `min(out.len(), p/2)` values.
    pub fn inv_freqs(&self, out: &mut [f64]) {
        for (i, f_out) in out.iter_mut().enumerate().take(self.dim / 2) {
            *f_out = self.inv_freq(i);
        }
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
    if cfg.rope_factor > 1.0 {
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
/// `[n_pos][p/2]`, already multiplied by the YaRN attention scaling. `inv_freq` is
/// scratch of `p/2` values. Fails with `InvalidArgument` on wrong lengths.
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
    params.inv_freqs(inv_freq);
    let scaling = params.attention_scaling();
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
/// `start + j / (p/2)`, with the YaRN attention scaling applied. Needs no
/// frequency scratch (each frequency is recomputed); for the C entry point
/// `mla_rope_tables`.
pub fn fill_tables_direct(params: &RopeParams, start: usize, cos: &mut [f32], sin: &mut [f32]) {
    let half = (params.dim / 2).max(1);
    let scaling = params.attention_scaling();
    for (j, (cv, sv)) in cos.iter_mut().zip(sin.iter_mut()).enumerate() {
        let angle = (start as f64 + (j / half) as f64) * params.inv_freq(j % half);
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
        // DESIGN.md 2.2: V3 -> 192^-0.5 * 1.873854 = 0.135234.
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
        let plain = |i: usize| 1.0 / 10000f64.powf(2.0 * i as f64 / 64.0);
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
}
