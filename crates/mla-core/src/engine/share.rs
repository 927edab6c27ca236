//! Layers that read another layer's state: cross-layer KV sharing (a
//! `kv_shared` layer attends over its producer's latent cache) and shared
//! top-k (a `dsa` shared layer reuses its producer's selection). Each producer
//! is borrowed per call, so nothing outlives it.

use super::*;

impl<'w, 'm> Engine<'w, 'm> {
    /// Checks that `producer` can lend its top-k selection to this engine
    /// (`dsa = Shared` here, `Full` or `Shared` there, the same `index_topk`
    /// and `max_tokens_per_call`): `InvalidArgument` naming the mismatch
    /// otherwise. For hosts that register the pair once (`mla_engine_share_topk`).
    pub fn check_share_topk(&self, producer: &Engine) -> Result<()> {
        let bad = |what: &str| Err(err(Status::InvalidArgument, "share_topk: ").s(what));
        if self.cfg.dsa != Dsa::Shared {
            return bad("the consumer's dsa is not shared");
        }
        if producer.cfg.dsa == Dsa::None {
            return bad("the producer has no sparse attention (dsa none)");
        }
        if producer.dims.index_topk != self.dims.index_topk {
            return Err(err(Status::InvalidArgument, "share_topk: index_topk ")
                .n(self.dims.index_topk)
                .s(" differs from the producer's ")
                .n(producer.dims.index_topk));
        }
        if producer.dims.max_tok < self.dims.max_tok {
            return bad("the producer's max_tokens_per_call is smaller");
        }
        Ok(())
    }

    /// [`Engine::forward_mode`] for a `dsa = Shared` layer: attends over the
    /// rows `producer` selected in its last call for the same positions (run
    /// the producer first on the same tokens). Errors (nothing changes):
    /// [`Engine::check_share_topk`]'s, and `InvalidArgument` when the
    /// producer's last call did not cover this call's positions.
    pub fn forward_shared_topk(
        &mut self,
        producer: &Engine,
        x: &[f32],
        out: &mut [f32],
        mode: AttnMode,
    ) -> Result<()> {
        if self.cfg.kv_shared && self.cfg.dsa == Dsa::Shared {
            return Err(err(
                Status::Unsupported,
                "forward: a layer that reads another layer's cache and another layer's top-k (kv_shared with dsa shared) is not built in this version",
            ));
        }
        self.check_share_topk(producer)?;
        let t = self.check_call(x, out)?;
        let start = self.len();
        let (p0, pn) = producer.last_selection;
        if start < p0 || start + t > p0 + pn {
            return Err(err(Status::InvalidArgument, "share_topk: positions ")
                .n(start)
                .s("..")
                .n(start + t)
                .s(" are not those of the producer's last call (")
                .n(p0)
                .s("..")
                .n(p0 + pn)
                .s(")"));
        }
        let k = self.dims.index_topk;
        let off = start - p0;
        // The selection region is about to hold this call's rows.
        self.last_selection = (0, 0);
        let (Some(rows), Some(lens), Some(dst_rows), Some(dst_lens)) = (
            producer.work.selection.get(off * k..(off + t) * k),
            producer.work.selection_len.get(off..off + t),
            self.work.selection.get_mut(..t * k),
            self.work.selection_len.get_mut(..t),
        ) else {
            return Err(err(
                Status::Internal,
                "share_topk: selection sizes disagree with the memory plan",
            ));
        };
        dst_rows.copy_from_slice(rows);
        dst_lens.copy_from_slice(lens);
        self.forward_inner(None, x, out, mode, t)
    }

    /// KV sharing as a standing link (`mla_engine_share_cache`): not built, always
    /// `Unsupported`, nothing changes. In Rust a `kv_shared` engine passes its
    /// producer per call to [`Engine::forward_shared`] (checked by
    /// [`Engine::check_share`]); the C handle would have to keep the producer
    /// pointer to do the same, and `mla_engine_init` refuses `kv_shared` until it
    /// does.
    pub fn share_cache(&mut self, producer: &Engine<'_, '_>) -> Result<()> {
        let _ = producer;
        Err(err(
            Status::Unsupported,
            "share_cache: KV sharing between engines is not built in this version",
        ))
    }

    /// Top-k sharing (`Dsa::Shared` layers), registration form (the C
    /// `mla_engine_share_topk`): checks the pair ([`Engine::check_share_topk`]'s
    /// errors), then answers `Unsupported`, as the C ABI does not yet pass the
    /// producer to each call. Rust callers run each call with
    /// [`Engine::forward_shared_topk`]. Nothing changes either way.
    pub fn share_topk(&mut self, producer: &Engine<'_, '_>) -> Result<()> {
        self.check_share_topk(producer)?;
        Err(err(
            Status::Unsupported,
            "share_topk: registration is not wired to forward; Rust callers use Engine::forward_shared_topk",
        ))
    }

    /// Cross-layer KV sharing (`kv_shared` layers, mistral_large4): like
    /// [`Engine::forward`], attending over `producer`'s latent cache instead of
    /// a cache of its own. This engine projects and rotates its own queries,
    /// applies its own `kv_b_proj` to the producer's cached latents and rotated
    /// rope keys, and writes no cache rows (it has none: `cache_rows` 0); its
    /// `len()` counts the positions it has run.
    ///
    /// The producer is borrowed for the call only, so nothing can outlive it.
    /// Per call the producer must already hold this call's positions:
    /// `producer.len() == self.len() + n_tokens`; and the two must agree on
    /// what a cache row is ([`Engine::check_share`]). Otherwise
    /// `InvalidArgument` naming the mismatch, nothing changed.
    pub fn forward_shared(
        &mut self,
        producer: &Engine<'_, '_>,
        x: &[f32],
        out: &mut [f32],
    ) -> Result<()> {
        self.forward_shared_mode(producer, x, out, self.cfg.attn_mode)
    }

    /// [`Engine::forward_shared`] with an explicit attention mode for this call.
    pub fn forward_shared_mode(
        &mut self,
        producer: &Engine<'_, '_>,
        x: &[f32],
        out: &mut [f32],
        mode: AttnMode,
    ) -> Result<()> {
        if self.cfg.kv_shared && self.cfg.dsa == Dsa::Shared {
            return Err(err(
                Status::Unsupported,
                "forward: a layer that reads another layer's cache and another layer's top-k (kv_shared with dsa shared) is not built in this version",
            ));
        }
        self.check_share(producer)?;
        let t = self.check_call(x, out)?;
        if producer.len() != self.len() + t {
            return Err(err(
                Status::InvalidArgument,
                "forward_shared: the producer holds ",
            )
            .n(producer.len())
            .s(" positions; this call needs exactly ")
            .n(self.len() + t)
            .s(" (run the producer's call first)"));
        }
        self.forward_inner(Some(&producer.cache), x, out, mode, t)
    }

    /// `Ok` when this engine (a `kv_shared` layer) can read `producer`'s cache:
    /// the producer has a full cache of its own (not kv_shared, no sliding
    /// window) with the same row (`kv_lora_rank`, `qk_rope_head_dim`, rope key
    /// layout) in the same dtype, and at least this engine's capacity; else
    /// `InvalidArgument` naming the mismatch.
    pub fn check_share(&self, producer: &Engine<'_, '_>) -> Result<()> {
        let (c, pc) = (&self.cfg, &producer.cfg);
        let bad = |what: &str| Err(err(Status::InvalidArgument, "share: ").s(what));
        if !c.kv_shared {
            return bad("this layer is not kv_shared (it has a cache of its own)");
        }
        if pc.kv_shared {
            return bad("the producer is kv_shared itself (it has no cache)");
        }
        if pc.sliding_window != 0 {
            return bad("the producer has a sliding window (its cache is a ring)");
        }
        if pc.kv_lora_rank != c.kv_lora_rank
            || pc.qk_rope_head_dim != c.qk_rope_head_dim
            || pc.rope_key != c.rope_key
            || producer.dims.cache_row != self.dims.cache_row
        {
            return bad("kv_lora_rank, qk_rope_head_dim or rope_key differ from the producer's");
        }
        if pc.cache_dtype != c.cache_dtype {
            return bad("cache_dtype differs from the producer's");
        }
        if producer.capacity() < self.capacity() {
            return bad("the producer's max_seq_len is below this engine's");
        }
        Ok(())
    }
}
