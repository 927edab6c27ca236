//! [`Model::layer_config`]: one MLA layer's [`Config`] from the model's values.

use super::*;

impl<'a> Model<'a> {
    /// Layer `i`'s config (`info` from [`Model::layer_info`], an MLA layer).
    pub(super) fn layer_config(
        &self,
        info: &LayerInfo,
        max_seq_len: u32,
        max_tok: u32,
    ) -> Result<Config> {
        let fam = self.fam;
        let i = info.layer;
        let lt = self.ltype(i)?;
        let c = self.view(i, lt)?;
        let dflt = fam.defaults();
        let d = c.u32(k::HIDDEN_SIZE, Some(dflt.hidden_size))?;
        let h = c.u32(k::HEADS, Some(dflt.heads))?;
        let rq = if fam == Family::MistralLarge4 {
            0
        } else {
            c.q_lora_rank(dflt.q_lora_rank)?
        };
        if fam.always_lora() && rq == 0 {
            return Err(self.t.err(
                k::Q_LORA_RANK,
                &[
                    S(fam.model_type()),
                    S(" always uses the query LoRA (must be > 0)"),
                ],
            ));
        }
        let r = c.u32(k::KV_LORA_RANK, Some(dflt.kv_lora_rank))?;
        let n_cfg = c.u32(k::NOPE, Some(dflt.nope))?;
        let p_cfg = c.u32(k::ROPE, Some(dflt.rope))?;
        let v = c.u32(k::V, Some(dflt.v))?;
        let eps_cfg = c.f64(k::RMS_NORM_EPS, Some(dflt.rms_norm_eps))?;
        let eps = if fam.eps_from_config() { eps_cfg } else { 1e-6 };
        if fam == Family::Glm5Next && p_cfg != 0 {
            return Err(c.err(k::ROPE, &[S("must be 0 for glm5_next (NoPE)")]));
        }
        // mistral_large4 NoPE layers: n + p unrotated, no rope slot.
        let (n, p) = if fam == Family::MistralLarge4 && info.nope {
            let np = n_cfg.checked_add(p_cfg).ok_or_else(|| {
                c.err(
                    k::NOPE,
                    &[S("qk_nope_head_dim + qk_rope_head_dim overflows")],
                )
            })?;
            (np, 0)
        } else {
            (n_cfg, p_cfg)
        };

        let mut cfg = Config::plain();
        cfg.hidden_size = d;
        cfg.num_heads = h;
        cfg.q_lora_rank = rq;
        cfg.kv_lora_rank = r;
        cfg.qk_nope_head_dim = n;
        cfg.qk_rope_head_dim = p;
        cfg.v_head_dim = v;
        cfg.max_seq_len = max_seq_len;
        cfg.max_tokens_per_call = max_tok;
        cfg.q_norm = rq > 0;
        cfg.rms_norm_eps = eps as f32;

        // ---- RoPE
        let rope = self.rope(lt)?;
        let layout = match fam {
            Family::Minicpm3 | Family::HyV4 => RopeLayout::Half,
            f if f.reads_rope_interleave() => {
                if c.bool_or(k::ROPE_INTERLEAVE, true)? {
                    RopeLayout::Interleaved
                } else {
                    RopeLayout::Half
                }
            }
            _ => RopeLayout::Interleaved,
        };
        cfg.rope_layout = layout;
        cfg.rope_theta = rope.theta as f32;
        if info.nope {
            cfg.rope_type = RopeType::None;
            cfg.rope_attention_factor = 1.0;
        } else {
            rope.fill(&mut cfg, p)?;
            cfg.rope_freq_alpha = fam == Family::MistralLarge4;
        }
        cfg.rope_key_norm = fam == Family::Dots3Note;

        // ---- softmax scale
        let qk = match fam {
            Family::LongcatFlash => match c.find(k::QK_HEAD_DIM) {
                (Val::At(at), o) => {
                    let v = o.u64_at(k::QK_HEAD_DIM, at)?;
                    if v == 0 {
                        u64::from(n) + u64::from(p)
                    } else {
                        v
                    }
                }
                _ => u64::from(n) + u64::from(p),
            },
            Family::MistralLarge4 => u64::from(n_cfg) + u64::from(p_cfg),
            _ => u64::from(n) + u64::from(p),
        };
        let mut scale = libm::pow(qk as f64, -0.5);
        if !matches!(
            fam,
            Family::KimiLinear | Family::Glm5Next | Family::Dots3Note
        ) && rope.kind != RopeKind::Default
        {
            if let Some(msa) = rope.mscale_all_dim {
                let m = yarn_mscale(rope.factor_for_mscale()?, msa);
                scale = scale * m * m;
            }
        }
        cfg.softmax_scale = scale as f32;

        // ---- window, latent scales, query scaling, gates, sinks
        if info.sliding {
            let w = match c.find(k::SLIDING_WINDOW) {
                (Val::At(at), o) => o.u64_at(k::SLIDING_WINDOW, at)?,
                _ => match self.dots3.map(|d| d.canonical) {
                    Some(false) => self.t.u64_or(k::SLIDING_WINDOW_SIZE, Some(512))?,
                    _ => 512,
                },
            };
            cfg.sliding_window = u32::try_from(w)
                .ok()
                .filter(|&w| w > 0)
                .ok_or_else(|| c.err(k::SLIDING_WINDOW, &[S("must be 1 .. 2^32-1")]))?;
        }
        if matches!(fam, Family::LongcatFlash | Family::Dots3Note) {
            cfg.q_latent_scale = libm::pow(f64::from(d) / f64::from(rq), 0.5) as f32;
            cfg.kv_latent_scale = libm::pow(f64::from(d) / f64::from(r), 0.5) as f32;
        }
        match fam {
            Family::Mistral4 => {
                cfg.query_scale = QueryScale::Llama4;
                cfg.query_scale_beta = rope.llama4_beta.ok_or_else(|| {
                    rope.err(
                        r::LLAMA4_BETA,
                        &[S("missing (Llama 4 query scaling needs it)")],
                    )
                })? as f32;
                cfg.query_scale_length = rope.l0.ok_or_else(|| {
                    rope.err(r::L0, &[S("missing (Llama 4 query scaling needs it)")])
                })?;
            }
            Family::MistralLarge4 => cfg.query_scale = QueryScale::LearnedLogPos,
            _ => {}
        }
        cfg.gate = match fam {
            Family::BailingHybrid | Family::Dots3Note => Gate::PerHead,
            Family::HyV4 | Family::HyV4Vl => Gate::PerChannel,
            Family::Axk2 => Gate::FusedQ,
            _ => Gate::None,
        };
        cfg.sinks = matches!(fam, Family::HyV4 | Family::HyV4Vl);
        cfg.kv_shared = info.kv_shared;

        // ---- sparse attention
        cfg.dsa = info.dsa;
        if info.dsa != Dsa::None {
            cfg.index_n_heads = c.u32(k::INDEX_N_HEADS, Some(dflt.index_n_heads))?;
            cfg.index_head_dim = c.u32(k::INDEX_HEAD_DIM, Some(dflt.index_head_dim))?;
            cfg.index_topk = c.u32(k::INDEX_TOPK, Some(dflt.index_topk))?;
        }
        if info.dsa == Dsa::Full {
            cfg.index_q_input = if fam == Family::MistralLarge4 {
                IndexQInput::HiddenLayerNorm
            } else {
                IndexQInput::QLatent
            };
            cfg.index_q_norm_eps = 1e-6;
            cfg.index_query_scale = fam == Family::MistralLarge4;
            cfg.index_k_norm_eps = if matches!(fam, Family::HyV4 | Family::HyV4Vl) {
                eps_cfg as f32
            } else {
                1e-6
            };
            if info.nope {
                cfg.index_rope = IndexRope::None;
            } else {
                cfg.index_rope = if matches!(fam, Family::HyV4 | Family::HyV4Vl) {
                    IndexRope::Last
                } else {
                    IndexRope::First
                };
                cfg.index_rope_layout =
                    if matches!(fam, Family::DeepseekV32 | Family::Axk2 | Family::HyV4) {
                        RopeLayout::Half
                    } else {
                        RopeLayout::Interleaved
                    };
            }
            if fam == Family::Glm5Next {
                cfg.index_kpool = c.u32(k::INDEX_KPOOL, Some(16))?;
                cfg.index_kpool_tail = c.bool_or(k::INDEX_KPOOL_TAIL, true)?;
            }
        }
        Ok(cfg)
    }
}
