//! [`Config::derive_dims`] and its checks: every field's rule, in order, and the
//! derived sizes, all in `const fn` so a firmware can size a `static` arena.

use super::*;

/// `?` for const fns (the `Try` trait is not const).
macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return Err(e),
        }
    };
}

const fn bad(field: &'static str, rule: &'static str) -> ConfigFault {
    ConfigFault {
        field,
        rule,
        value: None,
    }
}

const fn pos(field: &'static str, v: u32) -> core::result::Result<usize, ConfigFault> {
    if v == 0 {
        Err(bad(field, "must be > 0"))
    } else {
        Ok(v as usize)
    }
}

const fn finite_pos(field: &'static str, x: f32) -> core::result::Result<(), ConfigFault> {
    if x.is_finite() && x > 0.0 {
        Ok(())
    } else {
        Err(bad(field, "must be finite and > 0"))
    }
}

/// The value of a checked size computation, or the fault "`what`: dimensions overflow".
const fn fits(v: Option<usize>, what: &'static str) -> core::result::Result<usize, ConfigFault> {
    match v {
        Some(x) => Ok(x),
        None => Err(bad(what, "dimensions overflow")),
    }
}

/// `v` when it is a byte count one object can hold (at most `isize::MAX`).
const fn addressable(v: Option<usize>) -> Option<usize> {
    match v {
        Some(x) if x <= isize::MAX as usize => Some(x),
        _ => None,
    }
}

/// `v` when it fits a 32-bit tensor dimension.
const fn below_u32(v: Option<usize>) -> Option<usize> {
    match v {
        Some(x) if x <= u32::MAX as usize => Some(x),
        _ => None,
    }
}

impl Config {
    /// [`Config::dims`] for const contexts (a firmware sizing a `static` arena):
    /// the same checks, in the same order, with the fault as plain strings.
    pub const fn derive_dims(&self) -> core::result::Result<Dims, ConfigFault> {
        let d = tri!(pos("hidden_size", self.hidden_size));
        let h = tri!(pos("num_heads", self.num_heads));
        let r = tri!(pos("kv_lora_rank", self.kv_lora_rank));
        let n = tri!(pos("qk_nope_head_dim", self.qk_nope_head_dim));
        // p = 0 (no rope slot) only without rotation (NoPE).
        let p = if matches!(self.rope_type, RopeType::None) {
            self.qk_rope_head_dim as usize
        } else {
            tri!(pos("qk_rope_head_dim", self.qk_rope_head_dim))
        };
        let v = tri!(pos("v_head_dim", self.v_head_dim));
        let max_seq = tri!(pos("max_seq_len", self.max_seq_len));
        let max_tok = tri!(pos("max_tokens_per_call", self.max_tokens_per_call));
        let rq = self.q_lora_rank as usize;
        if p % 2 != 0 {
            return Err(bad("qk_rope_head_dim", "must be even (RoPE rotates pairs)"));
        }
        if max_tok > max_seq {
            return Err(bad("max_tokens_per_call", "must be <= max_seq_len"));
        }
        if self.q_norm && rq == 0 {
            return Err(bad(
                "q_norm",
                "needs q_lora_rank > 0 (the norm acts on the query latent)",
            ));
        }
        tri!(finite_pos("rms_norm_eps", self.rms_norm_eps));
        if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
            return Err(bad("rope_theta", "must be finite and > 1"));
        }
        tri!(self.check_rope(p));
        tri!(self.check_mechanisms(rq, p));
        if !(self.softmax_scale.is_finite() && self.softmax_scale >= 0.0) {
            return Err(bad(
                "softmax_scale",
                "must be finite and >= 0 (0 = derived)",
            ));
        }

        // Derived sizes, each checked for overflow; the total engine size is also
        // checked by the memory plan.
        let qk = tri!(fits(n.checked_add(p), "qk_head_dim"));
        let q_width = tri!(fits(h.checked_mul(qk), "num_heads * (n + p)"));
        let rope_k = match self.rope_key {
            RopeKey::Shared => p,
            RopeKey::PerHead => tri!(fits(h.checked_mul(p), "num_heads * p")),
        };
        let kv_a_rows = tri!(fits(r.checked_add(rope_k), "kv_lora_rank + rope"));
        // <= kv_a_rows (rope_k >= p), so this never fails first.
        let absorbed_width = tri!(fits(r.checked_add(p), "kv_lora_rank + p"));
        let nv = tri!(fits(n.checked_add(v), "n + v"));
        let kv_b_rows = tri!(fits(h.checked_mul(nv), "num_heads * (n + v)"));
        let o_cols = tri!(fits(h.checked_mul(v), "num_heads * v"));
        let cache_row = kv_a_rows;
        let cache_bytes_per_token = tri!(fits(
            crate::cache::row_bytes(self.cache_dtype, r, rope_k),
            "cache row"
        ));
        // The cache is one slice: its bytes must fit isize, not just usize.
        tri!(fits(
            addressable(cache_bytes_per_token.checked_mul(max_seq)),
            "max_seq_len * cache row"
        ));
        // Products with d must fit (weights are indexed by row * d).
        tri!(fits(q_width.checked_mul(d), "q rows"));
        tri!(fits(kv_a_rows.checked_mul(d), "kv_a rows"));
        tri!(fits(o_cols.checked_mul(d), "o_proj"));
        tri!(fits(kv_b_rows.checked_mul(r), "kv_b_proj"));
        if rq > 0 {
            let widest = if d > q_width { d } else { q_width };
            tri!(fits(rq.checked_mul(widest), "q_lora_rank"));
        }
        // Every weight's rows and columns must fit the 32-bit fields of the C
        // `mla_tensor` (d, r_q and r are u32 already; these are the derived ones).
        let rope_rows = match self.rope_key {
            RopeKey::Shared => "kv_lora_rank + qk_rope_head_dim",
            RopeKey::PerHead => "kv_lora_rank + num_heads * qk_rope_head_dim",
        };
        let limits = [
            (
                "num_heads * (qk_nope_head_dim + qk_rope_head_dim)",
                q_width,
                " rows of q_proj / q_b_proj, above the 32-bit limit of a weight tensor",
            ),
            (
                rope_rows,
                kv_a_rows,
                " rows of kv_a_proj_with_mqa, above the 32-bit limit of a weight tensor",
            ),
            (
                "num_heads * (qk_nope_head_dim + v_head_dim)",
                kv_b_rows,
                " rows of kv_b_proj, above the 32-bit limit of a weight tensor",
            ),
            (
                "num_heads * v_head_dim",
                o_cols,
                " columns of o_proj, above the 32-bit limit of a weight tensor",
            ),
        ];
        let mut i = 0;
        while i < limits.len() {
            let (field, value, rule) = limits[i];
            if value > u32::MAX as usize {
                return Err(ConfigFault {
                    field,
                    rule,
                    value: Some(value),
                });
            }
            i += 1;
        }
        // The fused query+gate projection (axk2) adds v gate rows per head and
        // reads [RMSNorm(c_q) ; c_q].
        let (q_b_rows, q_b_cols) = if matches!(self.gate, Gate::FusedQ) {
            let rows = tri!(fits(
                below_u32(match qk.checked_add(v) {
                    Some(w) => w.checked_mul(h),
                    None => None,
                }),
                "num_heads * (n + p + v)"
            ));
            (rows, tri!(fits(rq.checked_mul(2), "2 * q_lora_rank")))
        } else {
            (q_width, rq)
        };
        tri!(fits(
            q_b_rows.checked_mul(if q_b_cols > 0 { q_b_cols } else { 1 }),
            "q_b_proj"
        ));
        let cache_rows = if self.kv_shared {
            0
        } else if self.sliding_window > 0 {
            let w = (self.sliding_window as usize - 1).saturating_add(max_tok);
            if w < max_seq {
                w
            } else {
                max_seq
            }
        } else {
            max_seq
        };
        let (index_heads, index_dim) = if matches!(self.dsa, Dsa::Full) {
            (self.index_n_heads as usize, self.index_head_dim as usize)
        } else {
            (0, 0)
        };
        let index_width = tri!(fits(
            below_u32(index_heads.checked_mul(index_dim)),
            "index_n_heads * index_head_dim"
        ));
        tri!(fits(
            index_width.checked_mul(if d > rq { d } else { rq }),
            "index_wq_b"
        ));
        tri!(fits(
            addressable(
                match crate::dsa::IndexDType::from_dtype(self.index_cache_dtype) {
                    Some(dt) => match crate::dsa::row_bytes(dt, index_dim) {
                        Some(b) => b.checked_mul(max_seq),
                        None => None,
                    },
                    // f16: refused by validation; sized as 2 bytes a value.
                    None => match index_dim.checked_mul(self.index_cache_dtype.size()) {
                        Some(b) => b.checked_mul(max_seq),
                        None => None,
                    },
                }
            ),
            "max_seq_len * index_head_dim"
        ));
        Ok(Dims {
            d,
            h,
            rq,
            r,
            n,
            p,
            v,
            qk,
            q_width,
            rope_k,
            absorbed_width,
            kv_a_rows,
            kv_b_rows,
            o_cols,
            cache_row,
            cache_row_bytes: cache_bytes_per_token,
            max_seq,
            max_tok,
            q_b_rows,
            q_b_cols,
            cache_rows,
            index_heads,
            index_dim,
            index_width,
            index_topk: self.index_topk as usize,
        })
    }

    /// The RoPE fields for the configured `rope_type` (`p`: the rotated width).
    const fn check_rope(&self, p: usize) -> core::result::Result<(), ConfigFault> {
        if !(self.rope_attention_factor.is_finite() && self.rope_attention_factor >= 0.0) {
            return Err(bad(
                "rope_attention_factor",
                "must be finite and >= 0 (0 = derived)",
            ));
        }
        tri!(finite_pos("rope_factor", self.rope_factor));
        let needs_l0 = self.original_max_position == 0;
        match self.rope_type {
            RopeType::Default | RopeType::None => {
                if self.rope_factor > 1.0 {
                    return Err(bad(
                        "rope_factor",
                        "> 1 needs rope_type yarn, linear, llama3 or longrope",
                    ));
                }
            }
            RopeType::Linear => {}
            RopeType::Yarn => {
                if needs_l0 {
                    return Err(bad("original_max_position", "must be > 0 for YaRN"));
                }
                tri!(finite_pos("beta_slow", self.beta_slow));
                tri!(finite_pos("beta_fast", self.beta_fast));
                if self.beta_fast <= self.beta_slow {
                    return Err(bad("beta_fast", "must be > beta_slow"));
                }
                if !self.mscale.is_finite() || !self.mscale_all_dim.is_finite() {
                    return Err(bad("mscale", "mscale and mscale_all_dim must be finite"));
                }
            }
            RopeType::Llama3 => {
                if needs_l0 {
                    return Err(bad("original_max_position", "must be > 0 for llama3 RoPE"));
                }
                tri!(finite_pos(
                    "rope_low_freq_factor",
                    self.rope_low_freq_factor
                ));
                tri!(finite_pos(
                    "rope_high_freq_factor",
                    self.rope_high_freq_factor
                ));
                if self.rope_high_freq_factor <= self.rope_low_freq_factor {
                    return Err(bad(
                        "rope_high_freq_factor",
                        "must be > rope_low_freq_factor",
                    ));
                }
            }
            RopeType::LongRope => {
                if needs_l0 {
                    return Err(bad("original_max_position", "must be > 0 for longrope"));
                }
                let half = p / 2;
                if half > MAX_ROPE_FACTORS {
                    return Err(bad(
                        "qk_rope_head_dim",
                        "longrope holds at most 64 factors (p <= 128)",
                    ));
                }
                let mut i = 0;
                while i < half {
                    let (s, l) = (self.rope_short_factor[i], self.rope_long_factor[i]);
                    if !(s.is_finite() && s > 0.0) {
                        return Err(bad(
                            "rope_short_factor",
                            "the first p/2 factors must be finite and > 0",
                        ));
                    }
                    if !(l.is_finite() && l > 0.0) {
                        return Err(bad(
                            "rope_long_factor",
                            "the first p/2 factors must be finite and > 0",
                        ));
                    }
                    i += 1;
                }
            }
        }
        if self.rope_freq_alpha && matches!(self.rope_type, RopeType::None) {
            return Err(bad(
                "rope_freq_alpha",
                "needs a rotary embedding (rope_type is none)",
            ));
        }
        if self.rope_key_norm && p == 0 {
            return Err(bad("rope_key_norm", "needs qk_rope_head_dim > 0"));
        }
        Ok(())
    }

    /// The fields of the mechanisms beyond docs/design.md section 2 (`rq`, `p`: dims).
    const fn check_mechanisms(&self, rq: usize, p: usize) -> core::result::Result<(), ConfigFault> {
        tri!(finite_pos("q_latent_scale", self.q_latent_scale));
        tri!(finite_pos("kv_latent_scale", self.kv_latent_scale));
        if self.q_latent_scale != 1.0 && rq == 0 {
            return Err(bad("q_latent_scale", "needs q_lora_rank > 0"));
        }
        if matches!(self.query_scale, QueryScale::Llama4) {
            if self.query_scale_length == 0 {
                return Err(bad("query_scale_length", "must be > 0 for Llama 4 scaling"));
            }
            if !self.query_scale_beta.is_finite() {
                return Err(bad("query_scale_beta", "must be finite"));
            }
        }
        if matches!(self.gate, Gate::FusedQ) && !(rq > 0 && self.q_norm) {
            return Err(bad(
                "gate",
                "fused query+gate needs q_lora_rank > 0 and q_norm",
            ));
        }
        if self.kv_shared && self.sliding_window > 0 {
            return Err(bad(
                "kv_shared",
                "a layer reading another layer's cache cannot have its own window",
            ));
        }
        match self.dsa {
            Dsa::None => {}
            Dsa::Shared => {
                if self.index_topk == 0 {
                    return Err(bad("index_topk", "must be > 0 for sparse attention"));
                }
            }
            Dsa::Full => {
                if self.index_n_heads == 0 {
                    return Err(bad("index_n_heads", "must be > 0 for sparse attention"));
                }
                if self.index_head_dim == 0 {
                    return Err(bad("index_head_dim", "must be > 0 for sparse attention"));
                }
                if self.index_topk == 0 {
                    return Err(bad("index_topk", "must be > 0 for sparse attention"));
                }
                if !matches!(self.index_rope, IndexRope::None) && (self.index_head_dim as usize) < p
                {
                    return Err(bad(
                        "index_head_dim",
                        "must be >= qk_rope_head_dim (part of it is rotated)",
                    ));
                }
                if matches!(self.index_q_input, IndexQInput::QLatent) && rq == 0 {
                    return Err(bad(
                        "index_q_input",
                        "the query latent needs q_lora_rank > 0",
                    ));
                }
                tri!(finite_pos("index_k_norm_eps", self.index_k_norm_eps));
                tri!(finite_pos("index_q_norm_eps", self.index_q_norm_eps));
                if matches!(self.index_cache_dtype, DType::F16) {
                    return Err(bad("index_cache_dtype", "must be f32, bf16 or f8_e4m3"));
                }
                if self.index_kpool > 0 && self.index_topk < self.index_kpool {
                    return Err(bad("index_topk", "must be >= index_kpool (whole pools)"));
                }
            }
        }
        Ok(())
    }
}
