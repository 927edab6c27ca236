//! Layers that read another layer's state: cross-layer KV sharing (a
//! `kv_shared` layer attends over its producer's latent cache) and shared
//! top-k (a `dsa` shared layer reuses its producer's selection), or both at
//! once (mistral_large4's layer 2). Each producer is borrowed per call
//! ([`Sharing`]), so nothing outlives it.

use super::*;

/// The producers a call of [`Engine::forward_with`] reads: `cache` for a
/// `kv_shared` layer (the engine whose latent cache it attends over), `topk`
/// for a `dsa = Shared` layer (the engine whose last selection it reuses).
/// Each must be `Some` exactly when the consumer's config needs it; the two may
/// be the same engine. Both must have run this call's positions already.
#[derive(Clone, Copy, Default)]
pub struct Sharing<'a, 'w, 'm> {
    /// The engine whose latent cache a `kv_shared` layer reads.
    pub cache: Option<&'a Engine<'w, 'm>>,
    /// The engine whose last top-k selection a `dsa = Shared` layer reuses.
    pub topk: Option<&'a Engine<'w, 'm>>,
}

impl<'w, 'm> Engine<'w, 'm> {
    /// Whether this layer needs a cache producer (`kv_shared`) and a top-k
    /// producer (`dsa = Shared`) for each call: `(cache, topk)`.
    pub fn needs_producers(&self) -> (bool, bool) {
        (self.cfg.kv_shared, self.cfg.dsa == Dsa::Shared)
    }

    /// The forward pass of any layer, with the producers its config needs:
    /// [`Engine::forward_mode`] when it needs none, else attention over
    /// `share.cache`'s latent cache (`kv_shared`) and/or `share.topk`'s last
    /// selection for the same positions (`dsa = Shared`). Run each producer
    /// first on the same tokens.
    ///
    /// Errors (nothing changes, neither here nor in a producer):
    /// `InvalidArgument` when a producer the config needs is missing or one it
    /// does not need is given, when a producer does not fit
    /// ([`Engine::check_share`], [`Engine::check_share_topk`]), when the cache
    /// producer does not hold exactly `len() + n_tokens` positions, or when the
    /// top-k producer's last call did not cover this call's positions; and
    /// [`Engine::forward_mode`]'s own errors.
    pub fn forward_with(
        &mut self,
        share: &Sharing<'_, '_, '_>,
        x: &[f32],
        out: &mut [f32],
        mode: AttnMode,
    ) -> Result<()> {
        let (need_cache, need_topk) = self.needs_producers();
        match (need_cache, share.cache) {
            (true, None) => {
                return Err(err(
                    Status::InvalidArgument,
                    "forward: this layer is kv_shared: it needs the engine whose cache it reads (share_cache)",
                ))
            }
            (false, Some(_)) => {
                return Err(err(
                    Status::InvalidArgument,
                    "forward: a cache producer was given to a layer that is not kv_shared",
                ))
            }
            (true, Some(p)) => self.check_share(p)?,
            (false, None) => {}
        }
        match (need_topk, share.topk) {
            (true, None) => {
                return Err(err(
                    Status::InvalidArgument,
                    "forward: this layer's dsa is shared: it needs the engine whose top-k it reuses (share_topk)",
                ))
            }
            (false, Some(_)) => {
                return Err(err(
                    Status::InvalidArgument,
                    "forward: a top-k producer was given to a layer whose dsa is not shared",
                ))
            }
            (true, Some(p)) => self.check_share_topk(p)?,
            (false, None) => {}
        }
        let t = self.check_call(x, out)?;
        let start = self.len();
        if let Some(p) = share.cache {
            if p.len() != start + t {
                return Err(err(
                    Status::InvalidArgument,
                    "forward_shared: the producer holds ",
                )
                .n(p.len())
                .s(" positions; this call needs exactly ")
                .n(start + t)
                .s(" (run the producer's call first)"));
            }
        }
        if let Some(p) = share.topk {
            self.take_selection(p, start, t)?;
        }
        self.forward_inner(share.cache.map(|p| &p.cache), x, out, mode, t)
    }

    /// Copies `producer`'s selection of positions `start..start + t` (its last
    /// call's) into this engine's selection region; `InvalidArgument` when its
    /// last call did not cover them (nothing changes then).
    fn take_selection(&mut self, producer: &Engine<'_, '_>, start: usize, t: usize) -> Result<()> {
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
        // The selection region is about to hold this call's rows.
        self.last_selection = (0, 0);
        // Element-wise (the lengths are equal by construction): no length-check
        // panic path reaches the C API.
        dst_rows.iter_mut().zip(rows).for_each(|(d, s)| *d = *s);
        dst_lens.iter_mut().zip(lens).for_each(|(d, s)| *d = *s);
        Ok(())
    }

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

    /// [`Engine::forward_with`] for a `dsa = Shared` layer that has a cache of
    /// its own: attends over the rows `producer` selected in its last call for
    /// the same positions. Errors as [`Engine::forward_with`].
    pub fn forward_shared_topk(
        &mut self,
        producer: &Engine<'_, '_>,
        x: &[f32],
        out: &mut [f32],
        mode: AttnMode,
    ) -> Result<()> {
        let share = Sharing {
            cache: None,
            topk: Some(producer),
        };
        self.forward_with(&share, x, out, mode)
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
    /// `InvalidArgument` naming the mismatch, nothing changed. A layer that
    /// also reuses a top-k runs through [`Engine::forward_with`].
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
        let share = Sharing {
            cache: Some(producer),
            topk: None,
        };
        self.forward_with(&share, x, out, mode)
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
