//! The engine: the forward pass, top to bottom, in memory the caller provides.
//!
//! Memory: [`Engine::memory_bytes`] is the exact size of the buffer [`Engine::new`]
//! needs (align 64): the latent cache, the RoPE table and all scratch, laid out
//! by the memory plan ([`crate::plan`], which tables every region). Nothing else
//! is used; the engine never allocates.
//!
//! Threads: [`Engine::set_parallel`] (Rust) or [`Engine::set_parallel_host`] (C)
//! give the engine a parallel-for; the projections are split into fixed output
//! row blocks and attention into head groups and cached-row ranges (see
//! [`crate::parallel`]); results do not depend on the thread count.

use crate::attention::{self, Inputs, Scratch, Selection};
use crate::cache::LatentCache;
use crate::config::{AttnMode, Config, Dims, Dsa, Gate, QueryScale};
use crate::dsa::run::{index_tokens, IndexCall, IndexWork};
use crate::dsa::{IndexCache, IndexDType, IndexerWeights};
use crate::dtype::Elems;
use crate::kernels::{self, linear_par, rmsnorm, Isa};
use crate::parallel::{HostParallelFor, Parallel, ParallelFor};
use crate::plan::{self, Place, Regions};
use crate::rope::{self, RopeParams};
use crate::status::{err, Error, Result, Status};
use crate::weights::{Tensor, Weights};

mod batch;
mod share;
mod steps;
#[cfg(test)]
use batch::batchable;
pub use batch::{forward_batch_in, EngineBatch};
pub use share::Sharing;
pub(crate) use steps::window_start;
use steps::{
    apply_gate, attention_fault, fuse_latent, indexer_weights, lerope, query_scale, split_fused,
};

/// An MLA layer with its latent cache, living in caller memory.
///
/// `'w` is the lifetime of the borrowed weights, `'m` of the memory.
pub struct Engine<'w, 'm> {
    cfg: Config,
    dims: Dims,
    weights: Weights<'w>,
    scale: f32,
    rope: RopeParams,
    rope_scaling: f64,
    cache: LatentCache<'m>,
    /// DSA `Full`: the indexer's tensors and key cache (same length as `cache`).
    indexer: Option<(IndexerWeights<'w>, IndexCache<'m>)>,
    /// Positions `start..start + n` whose selection `work.selection` holds
    /// (the last successful call of a DSA layer; `n` = 0: none).
    last_selection: (usize, usize),
    /// The memory plan's regions; `work.cache` is empty (its bytes are `cache`'s).
    work: Regions<Place<'m>>,
    par: Parallel<'m>,
    par_min_work: usize,
    /// Instruction set of the attention kernels (the projections detect their own).
    pub(crate) isa: Isa,
}

impl<'w, 'm> Engine<'w, 'm> {
    /// Required alignment of the memory given to [`Engine::new`].
    pub const MEMORY_ALIGN: usize = plan::ALIGN;

    /// Exact bytes of memory an engine for `cfg` needs (cache, RoPE table, scratch).
    pub fn memory_bytes(cfg: &Config) -> Result<usize> {
        let dims = cfg.dims()?;
        Regions::count(cfg, &dims)
            .map(|plan| plan.bytes)
            .map_err(|_| {
                err(
                    Status::InvalidConfig,
                    "max_seq_len: engine memory overflows usize",
                )
            })
    }

    /// [`Engine::memory_bytes`] for const contexts (e.g. the size of a `static`
    /// arena in firmware): the same plan, 0 where that is an error.
    pub const fn memory_bytes_const(cfg: &Config) -> usize {
        plan::memory_bytes(cfg)
    }

    /// Builds an engine for `cfg` over `weights`, inside `mem`.
    ///
    /// Errors: `InvalidConfig`, `WeightShape` (missing, unexpected or mis-shaped
    /// tensor), `Misaligned` (`mem` not 64-byte aligned), `BufferTooSmall`
    /// (`mem.len() < memory_bytes(cfg)`).
    pub fn new(cfg: &Config, weights: &Weights<'w>, mem: &'m mut [u8]) -> Result<Self> {
        Self::with_indexer(cfg, weights, None, mem)
    }

    /// [`Engine::new`] with the indexer tensors of a DSA `Full` layer given
    /// apart (they replace `weights`' `index_*` tensors; `None`: `weights`'
    /// own). Errors as [`Engine::new`].
    pub fn with_indexer(
        cfg: &Config,
        weights: &Weights<'w>,
        index_weights: Option<IndexerWeights<'w>>,
        mem: &'m mut [u8],
    ) -> Result<Self> {
        let mut merged = *weights;
        if let Some(iw) = index_weights {
            merged.index_wq_b = Some(iw.wq_b);
            merged.index_wk = Some(iw.wk);
            merged.index_k_norm = Some(iw.k_norm);
            merged.index_k_norm_bias = Some(iw.k_norm_bias);
            merged.index_weights_proj = Some(iw.weights_proj);
            (merged.index_q_norm, merged.index_q_norm_bias) = iw.q_norm.unzip();
            (merged.index_query_scale_s, merged.index_query_scale_b) = iw.query_scale.unzip();
        }
        let weights = &merged;
        let dims = weights.check(cfg)?;
        cfg.check_supported()?;
        let need = Self::memory_bytes(cfg)?;
        if (mem.as_ptr() as usize) & (Self::MEMORY_ALIGN - 1) != 0 {
            return Err(err(Status::Misaligned, "mem: must be aligned to 64 bytes"));
        }
        if mem.len() < need {
            return Err(err(Status::BufferTooSmall, "mem: ")
                .n(mem.len())
                .s(" bytes given, ")
                .n(need)
                .s(" needed"));
        }
        let placed = Regions::place(mem, cfg, &dims).map_err(|region| {
            err(Status::Internal, "memory plan: region ")
                .s(region)
                .s(" does not fit")
        })?;
        if placed.bytes != need {
            return Err(err(Status::Internal, "memory plan: placed ")
                .n(placed.bytes)
                .s(" bytes, counted ")
                .n(need));
        }
        let mut work = placed.regions;
        let cache = LatentCache::ring_split(
            core::mem::take(&mut work.cache),
            cfg.cache_dtype,
            dims.r,
            dims.rope_k,
            dims.cache_rows,
            dims.max_seq,
        )
        .ok_or_else(|| {
            err(
                Status::Internal,
                "memory plan: region cache does not hold the cache",
            )
        })?;
        let indexer = match cfg.dsa {
            Dsa::Full => {
                // Shapes checked with the other weights (Weights::check).
                let iw = indexer_weights(weights)?;
                let dt = IndexDType::from_dtype(cfg.index_cache_dtype)
                    .ok_or_else(|| err(Status::Unsupported, "index_cache_dtype: not built"))?;
                let ic = IndexCache::new(
                    core::mem::take(&mut work.index_cache),
                    dt,
                    dims.index_dim,
                    dims.max_seq,
                )
                .ok_or_else(|| {
                    err(
                        Status::Internal,
                        "memory plan: region index_cache does not hold the index cache",
                    )
                })?;
                Some((iw, ic))
            }
            Dsa::None | Dsa::Shared => None,
        };
        let rope_params = RopeParams::from_config(cfg);
        rope_params.inv_freqs(work.rope_inv_freq);
        lerope(weights, work.rope_inv_freq, work.rope_cos);
        // Per-head parameters widened once: sinks, then the learned query scale's
        // s and b (zeros where the layer has none).
        let h = dims.h;
        work.head_params.iter_mut().for_each(|v| *v = 0.0);
        for (i, t) in [weights.sinks, weights.query_scale_s, weights.query_scale_b]
            .iter()
            .enumerate()
        {
            if let (Some(t), Some(dst)) = (t, work.head_params.get_mut(i * h..(i + 1) * h)) {
                t.data.widen_into(dst);
            }
        }
        Ok(Engine {
            cfg: *cfg,
            dims,
            weights: *weights,
            scale: rope::softmax_scale(cfg),
            rope: rope_params,
            rope_scaling: rope_params.attention_scaling(),
            cache,
            indexer,
            last_selection: (0, 0),
            work,
            par: Parallel::SEQUENTIAL,
            par_min_work: crate::parallel::MIN_PARALLEL_WORK,
            isa: kernels::isa(),
        })
    }

    /// Runs the engine's work on `par` (`None`: sequentially on the calling
    /// thread, the default). Results are bitwise the same whatever `par` does.
    pub fn set_parallel(&mut self, par: Option<&'m dyn ParallelFor>) {
        let min = self.par_min_work;
        self.par = par
            .map_or(Parallel::SEQUENTIAL, Parallel::borrowed)
            .with_min_work(min);
    }

    /// Runs the engine's work on a C host's parallel-for (`None`: sequentially).
    pub fn set_parallel_host(&mut self, host: Option<HostParallelFor>) {
        let min = self.par_min_work;
        self.par = host
            .map_or(Parallel::SEQUENTIAL, Parallel::host)
            .with_min_work(min);
    }

    /// Parallel-for calls of less than `work` multiply-adds run on the calling
    /// thread (default [`crate::parallel::MIN_PARALLEL_WORK`]; 0 sends every
    /// call to the parallel-for). Changes speed only, never results.
    pub fn set_parallel_min_work(&mut self, work: usize) {
        self.par_min_work = work;
        self.par = self.par.with_min_work(work);
    }

    /// Tokens in the cache (the position of the next token).
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// True when the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// Cache capacity in tokens (`max_seq_len`).
    pub fn capacity(&self) -> usize {
        self.cache.capacity()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The derived sizes.
    pub fn dims(&self) -> &Dims {
        &self.dims
    }

    /// The latent cache (read-only).
    pub fn cache(&self) -> &LatentCache<'m> {
        &self.cache
    }

    /// The indexer key cache of a DSA `Full` layer (rows `0..len()` valid).
    pub fn index_cache(&self) -> Option<&IndexCache<'m>> {
        self.indexer.as_ref().map(|(_, ic)| ic)
    }

    /// Rolls the cache back to `len` tokens; `InvalidArgument` if `len > self.len()`.
    ///
    /// With a sliding window of `W` the cache is a ring of
    /// `min(max_seq_len, W - 1 + max_tokens_per_call)` rows: rolling back works
    /// while the `W - 1` positions before `len` (the keys the next token sees)
    /// are still in the ring, i.e. `len - (W - 1) >= ` the oldest position held;
    /// otherwise `InvalidArgument` (nothing changes).
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len > self.cache.len() {
            return Err(err(Status::InvalidArgument, "truncate: len ")
                .n(len)
                .s(" is past the cache length ")
                .n(self.cache.len()));
        }
        let needed = window_start(self.cfg.sliding_window as usize, len);
        if needed < self.cache.oldest() {
            return Err(err(Status::InvalidArgument, "truncate: len ")
                .n(len)
                .s(" needs position ")
                .n(needed)
                .s(", which the sliding-window ring no longer holds (oldest ")
                .n(self.cache.oldest())
                .s(")"));
        }
        if self.cache.truncate(len) {
            self.last_selection = (0, 0);
            Ok(())
        } else {
            Err(err(Status::Internal, "truncate: cache refused"))
        }
    }

    /// Appends precomputed cache rows at positions `len()..`: `rows` is
    /// `[n][r + rope_k]` f32, each row the normalised latent `c` followed by the
    /// rotated rope key(s), as [`Engine::cache`] holds them (rounded to the cache
    /// dtype). For restoring a saved prompt cache, and for benchmarks that need a
    /// long context without running its prefill.
    ///
    /// Errors (nothing changes): `InvalidArgument` (a kv_shared layer; length not a positive
    /// multiple of the row), `CacheFull`, `NonFinite`.
    pub fn append_cache_rows(&mut self, rows: &[f32]) -> Result<()> {
        if self.cfg.kv_shared {
            return Err(err(
                Status::InvalidArgument,
                "append_cache_rows: a kv_shared layer has no cache of its own",
            ));
        }
        if self.indexer.is_some() {
            return Err(err(
                Status::InvalidArgument,
                "append_cache_rows: a dsa full layer also needs the rows' indexer keys (append_indexed_rows)",
            ));
        }
        self.append_rows(rows, &[])
    }

    /// [`Engine::append_cache_rows`] for a DSA `Full` layer: `index_keys` is
    /// `[n][index_head_dim]`, the finished indexer key of each row (after its
    /// LayerNorm and RoPE), stored in the index cache dtype. Errors (nothing
    /// changes): those of `append_cache_rows`, and `InvalidArgument` when the
    /// layer has no indexer or `index_keys` does not hold `n` keys.
    pub fn append_indexed_rows(&mut self, rows: &[f32], index_keys: &[f32]) -> Result<()> {
        if self.indexer.is_none() {
            return Err(err(
                Status::InvalidArgument,
                "append_indexed_rows: the layer has no indexer (dsa is not full)",
            ));
        }
        self.append_rows(rows, index_keys)
    }

    /// Appends cache rows and (DSA full) their indexer keys.
    fn append_rows(&mut self, rows: &[f32], index_keys: &[f32]) -> Result<()> {
        let row = self.dims.cache_row.max(1);
        if rows.is_empty() || rows.len().checked_rem(row) != Some(0) {
            return Err(err(Status::InvalidArgument, "rows: length ")
                .n(rows.len())
                .s(" is not a positive multiple of the cache row ")
                .n(row));
        }
        let n = rows.len() / row;
        if n > self.capacity() - self.len() {
            return Err(err(Status::CacheFull, "cache: ")
                .n(self.len())
                .s(" + ")
                .n(n)
                .s(" rows would pass max_seq_len ")
                .n(self.capacity()));
        }
        if let Some(i) = rows.iter().position(|v| !v.is_finite()) {
            return Err(err(Status::NonFinite, "rows: row ")
                .n(i / row)
                .s(" is not finite"));
        }
        let di = self.dims.index_dim;
        if let Some((_, ic)) = self.indexer.as_mut() {
            if Some(index_keys.len()) != n.checked_mul(di) {
                return Err(err(Status::InvalidArgument, "index_keys: length ")
                    .n(index_keys.len())
                    .s(" is not ")
                    .n(n)
                    .s(" rows x index_head_dim ")
                    .n(di));
            }
            if let Some(i) = index_keys.iter().position(|v| !v.is_finite()) {
                return Err(err(Status::NonFinite, "index_keys: row ")
                    .n(i / di.max(1))
                    .s(" is not finite"));
            }
            let start = self.cache.len();
            for (i, k) in index_keys.chunks_exact(di.max(1)).enumerate() {
                if !ic.write(start + i, k) {
                    return Err(err(Status::Internal, "index cache write failed"));
                }
            }
        }
        let start = self.len();
        for (i, r) in rows.chunks_exact(row).enumerate() {
            self.cache.write_row(start + i, r);
        }
        if !self.cache.commit(n) {
            return Err(err(Status::Internal, "cache commit failed"));
        }
        Ok(())
    }

    /// Empties the cache.
    pub fn reset(&mut self) {
        self.cache.reset();
        self.last_selection = (0, 0);
    }

    /// Appends the tokens `x` (`[n_tokens][hidden_size]`) at positions `len()..`,
    /// attends causally over everything cached, and writes `[n_tokens][hidden_size]`
    /// to `out`. Uses the configured attention mode.
    pub fn forward(&mut self, x: &[f32], out: &mut [f32]) -> Result<()> {
        self.forward_mode(x, out, self.cfg.attn_mode)
    }

    /// Checks a call's arguments; returns its token count.
    fn check_call(&self, x: &[f32], out: &[f32]) -> Result<usize> {
        let d = self.dims.d.max(1);
        if x.is_empty() || x.len().checked_rem(d) != Some(0) {
            return Err(err(Status::InvalidArgument, "x: length ")
                .n(x.len())
                .s(" is not a positive multiple of hidden_size ")
                .n(d));
        }
        let t = x.len() / d;
        if t > self.dims.max_tok {
            return Err(err(Status::InvalidArgument, "n_tokens: ")
                .n(t)
                .s(" is above max_tokens_per_call ")
                .n(self.dims.max_tok));
        }
        if out.len() != x.len() {
            return Err(err(Status::InvalidArgument, "out: length ")
                .n(out.len())
                .s(" differs from x's ")
                .n(x.len()));
        }
        if t > self.capacity() - self.len() {
            return Err(err(Status::CacheFull, "cache: ")
                .n(self.len())
                .s(" + ")
                .n(t)
                .s(" tokens would pass max_seq_len ")
                .n(self.capacity()));
        }
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(err(Status::NonFinite, "x: token ")
                .n(i / d)
                .s(", column ")
                .n(i % d)
                .s(" is NaN or infinite"));
        }
        Ok(t)
    }

    /// [`Engine::forward`] with an explicit attention mode for this call.
    pub fn forward_mode(&mut self, x: &[f32], out: &mut [f32], mode: AttnMode) -> Result<()> {
        if self.cfg.kv_shared {
            return Err(err(
                Status::InvalidArgument,
                "forward: a kv_shared layer has no cache of its own; call forward_with (or forward_shared) with the engine of the layer whose cache it reads",
            ));
        }
        let t = self.check_call(x, out)?;
        if self.cfg.dsa == Dsa::Shared {
            return Err(err(
                Status::InvalidArgument,
                "forward: a dsa shared layer runs with its producer's selection (forward_with or forward_shared_topk)",
            ));
        }
        self.forward_inner(None, x, out, mode, t)
    }

    /// The forward pass of `t` checked tokens over this engine's cache (`shared`
    /// None) or another engine's (`kv_shared` layers: no cache rows are made or
    /// written); a DSA `Shared` layer's selection is already in `work.selection`.
    fn forward_inner(
        &mut self,
        shared: Option<&LatentCache<'_>>,
        x: &[f32],
        out: &mut [f32],
        mode: AttnMode,
        t: usize,
    ) -> Result<()> {
        // Until this call succeeds, no selection is lent to consumers (the
        // selection region is rewritten below).
        self.last_selection = (0, 0);
        let own = shared.is_none();
        let dims = self.dims;
        let (d, r, p) = (dims.d, dims.r, dims.p);
        let start = self.cache.len();
        let w = &self.weights;
        let work = &mut self.work;
        let par = &self.par;
        let eps = self.cfg.rms_norm_eps;
        let projection = |name: &str| {
            err(Status::Internal, "forward: ")
                .s(name)
                .s(": buffer sizes disagree with the memory plan")
        };
        let pack = &mut *work.pack_panels;

        // 1. Queries q[T][H][n+p].
        match (w.q_a_proj.as_ref(), w.q_b_proj.as_ref(), w.q_proj.as_ref()) {
            (Some(q_a), Some(q_b), _) if self.cfg.gate == Gate::FusedQ => {
                // axk2: [RMSNorm(c_q) ; c_q] through q_b_proj, whose rows per head
                // are [q_nope | q_pe | gate].
                let q_latent = &mut *work.q_latent;
                if !linear_par(
                    par,
                    q_a,
                    w.q_a_proj_bias.as_ref(),
                    x,
                    d,
                    t,
                    q_latent,
                    Some(pack),
                ) {
                    return Err(projection("q_a_proj"));
                }
                let Some(norm) = w.q_a_layernorm.as_ref() else {
                    return Err(projection("q_a_layernorm"));
                };
                fuse_latent(q_latent, dims.rq, t, norm.data, eps)
                    .ok_or_else(|| projection("q_latent"))?;
                let cols = dims.q_b_cols;
                if !linear_par(par, q_b, None, q_latent, cols, t, work.q_fused, Some(pack)) {
                    return Err(projection("q_b_proj"));
                }
                split_fused(work.q_fused, work.q, work.gate, &dims, t)
                    .ok_or_else(|| projection("q_fused"))?;
            }
            (Some(q_a), Some(q_b), _) => {
                let q_latent = &mut *work.q_latent;
                if !linear_par(
                    par,
                    q_a,
                    w.q_a_proj_bias.as_ref(),
                    x,
                    d,
                    t,
                    q_latent,
                    Some(pack),
                ) {
                    return Err(projection("q_a_proj"));
                }
                if let Some(norm) = w.q_a_layernorm.as_ref() {
                    for row in q_latent.chunks_exact_mut(dims.rq.max(1)).take(t) {
                        rmsnorm(row, norm.data, eps);
                    }
                }
                // The latent scale (longcat_flash, dots3_note) multiplies the
                // normalised latent.
                let q_scale = self.cfg.q_latent_scale;
                if q_scale != 1.0 {
                    for v in q_latent.iter_mut().take(t.saturating_mul(dims.rq)) {
                        *v *= q_scale;
                    }
                }
                if !linear_par(par, q_b, None, q_latent, dims.rq, t, work.q, Some(pack)) {
                    return Err(projection("q_b_proj"));
                }
            }
            (_, _, Some(q_proj)) => {
                if !linear_par(par, q_proj, None, x, d, t, work.q, Some(pack)) {
                    return Err(projection("q_proj"));
                }
            }
            _ => return Err(err(Status::Internal, "query weights missing")),
        }

        // 2. New cache rows kv_new[T][r + rope_k] = kv_a_proj_with_mqa x (+ b)
        //    (none for a kv_shared layer: it reads the producer's).
        let kv_norm = match (own, w.kv_a_proj_with_mqa.as_ref(), w.kv_a_layernorm) {
            (false, _, _) => None,
            (true, Some(kv_a), Some(kv_norm)) => {
                if !linear_par(
                    par,
                    kv_a,
                    w.kv_a_proj_bias.as_ref(),
                    x,
                    d,
                    t,
                    work.kv_new,
                    Some(pack),
                ) {
                    return Err(projection("kv_a_proj_with_mqa"));
                }
                Some(kv_norm)
            }
            (true, _, _) => return Err(projection("kv_a_proj_with_mqa")),
        };

        // Output gate logits from x (per head / per channel).
        if matches!(self.cfg.gate, Gate::PerHead | Gate::PerChannel) {
            let Some(g) = w.gate_proj.as_ref() else {
                return Err(projection("gate_proj"));
            };
            if !linear_par(par, g, None, x, d, t, work.gate, Some(pack)) {
                return Err(projection("gate_proj"));
            }
        }

        // 3. Per token at pos: c = RMSNorm(kv[..r]) * kv_latent_scale; rotate the
        //    rope key(s) and every head's q_pe (not with NoPE); scale the query
        //    (query_scale); store the row in cache slot pos (>= len: not yet state).
        //    (Rows by index: a zip of two chunk iterators keeps a division-by-zero
        //    panic path on some targets.)
        let rotates = self.rope.rotates();
        if rotates && self.rope.per_call() {
            // longrope: this call's keys and queries use the factors of its
            // largest position (cached keys keep theirs).
            self.rope
                .inv_freqs_for(start.saturating_add(t), work.rope_inv_freq);
            lerope(w, work.rope_inv_freq, work.rope_cos);
        }
        let head_params: &[f32] = work.head_params;
        let (learned_s, learned_b) = if self.cfg.query_scale == QueryScale::LearnedLogPos {
            (
                head_params.get(dims.h..2 * dims.h),
                head_params.get(2 * dims.h..3 * dims.h),
            )
        } else {
            (None, None)
        };
        let kv_scale = self.cfg.kv_latent_scale;
        let (kv_width, q_width) = (dims.kv_a_rows, dims.q_width);
        for i in 0..t {
            let (Some(kv), Some(q)) = (
                work.kv_new.get_mut(i * kv_width..(i + 1) * kv_width),
                work.q.get_mut(i * q_width..(i + 1) * q_width),
            ) else {
                return Err(projection("kv_new or q"));
            };
            let pos = start + i;
            let (c, kpe) = kv.split_at_mut(r.min(kv.len()));
            // A kv_shared layer makes no cache row: empty latent and rope key.
            let (c, kpe) = match kv_norm {
                Some(_) => (c, kpe),
                None => (&mut [][..], &mut [][..]),
            };
            if let Some(kv_norm) = kv_norm {
                rmsnorm(c, kv_norm.data, eps);
            }
            if kv_scale != 1.0 {
                for v in c.iter_mut() {
                    *v *= kv_scale;
                }
            }
            if let Some(norm) = w.rope_key_norm.as_ref() {
                // dots3_note: RMSNorm on the rope key before RoPE.
                for k in kpe.chunks_exact_mut(p.max(1)) {
                    rmsnorm(k, norm.data, eps);
                }
            }
            if rotates {
                let (cos, sin) = (&mut *work.rope_cos, &mut *work.rope_sin);
                rope::cos_sin(work.rope_inv_freq, self.rope_scaling, pos, cos, sin);
                for k in kpe.chunks_exact_mut(p.max(1)) {
                    rope::rotate(k, cos, sin, self.cfg.rope_layout);
                }
                for qh in q.chunks_exact_mut(dims.qk.max(1)) {
                    if let Some(q_pe) = qh.get_mut(dims.n..) {
                        rope::rotate(q_pe, cos, sin, self.cfg.rope_layout);
                    }
                }
            }
            if let Some(f) = query_scale(&self.cfg, pos) {
                for v in q.iter_mut() {
                    *v *= f;
                }
            }
            if let (Some(s_h), Some(b_h)) = (learned_s, learned_b) {
                // q_h *= s_h ln(pos + 1) + b_h, in f32.
                let lp = libm::logf((pos + 1) as f32);
                for ((qh, &s), &b) in q.chunks_exact_mut(dims.qk.max(1)).zip(s_h).zip(b_h) {
                    let f = s * lp + b;
                    qh.iter_mut().for_each(|v| *v *= f);
                }
            }
            if own {
                self.cache.write_row(pos, kv);
            }
        }

        // 3b. DSA: the indexer keys of the call's tokens (slots >= len, not yet
        //     state) and each token's top-k.
        let selection = match self.indexer.as_mut() {
            Some((iw, ic)) => {
                let call = IndexCall {
                    cfg: &self.cfg,
                    dims: &dims,
                    iw,
                    x,
                    q_latent: work.q_latent,
                    t,
                    start,
                    inv_freq: work.rope_inv_freq,
                    rope_scaling: self.rope_scaling,
                    par,
                    isa: self.isa,
                    slots: attention::n_slots(&dims),
                };
                let scratch = IndexWork {
                    x_norm: &mut *work.index_x,
                    q: &mut *work.index_q,
                    q_t: &mut *work.index_qt,
                    w: &mut *work.index_w,
                    k: &mut *work.index_k,
                    scores: &mut *work.index_scores,
                    widen: &mut *work.index_widen,
                    dots: &mut *work.index_dots,
                    cos: &mut *work.rope_cos,
                    sin: &mut *work.rope_sin,
                    pack: &mut *pack,
                    sel: &mut *work.selection,
                    sel_len: &mut *work.selection_len,
                };
                index_tokens(&call, ic, scratch)?;
                Some(Selection {
                    rows: &*work.selection,
                    lens: &*work.selection_len,
                    k: dims.index_topk,
                })
            }
            None if self.cfg.dsa == Dsa::Shared => Some(Selection {
                rows: &*work.selection,
                lens: &*work.selection_len,
                k: dims.index_topk,
            }),
            None => None,
        };

        // 4. Attention o[T][H][v] over cache rows 0 .. start + T (DSA: each
        //    token's selected rows).
        let inputs = Inputs {
            dims: &dims,
            q: work.q,
            rope_key: self.cfg.rope_key,
            kv_b: &w.kv_b_proj,
            cache: shared.unwrap_or(&self.cache),
            scale: self.scale,
            window: self.cfg.sliding_window as usize,
            sinks: if self.cfg.sinks {
                head_params.get(..dims.h)
            } else {
                None
            },
            start,
            batch: None,
            n_tok: t,
            isa: self.isa,
            par,
            selection,
        };
        let absorb = match mode {
            AttnMode::Naive => false,
            AttnMode::Absorb => true,
            AttnMode::Auto => {
                let window = self.cfg.sliding_window as usize;
                let sparse = self.cfg.dsa != Dsa::None;
                let k = if sparse { Some(dims.index_topk) } else { None };
                let (naive, absorbed) = attention::cost_sparse(&dims, start, t, window, k);
                absorbed <= naive
            }
        };
        let mut scratch = Scratch {
            absorbed_q: work.absorbed_q,
            absorbed_q_t: work.absorbed_q_t,
            task_slots: work.task_slots,
        };
        let attended = if absorb {
            attention::absorbed(&inputs, &mut scratch, work.o)
        } else {
            attention::naive(&inputs, &mut scratch, work.o)
        };
        attended.map_err(|fault| attention_fault(absorb, fault))?;

        // Output gate: o *= sigmoid(g), in f32.
        if self.cfg.gate != Gate::None {
            apply_gate(self.cfg.gate, work.gate, work.o, &dims, t)
                .ok_or_else(|| projection("gate"))?;
        }

        // 5. out[T][d] = o_proj o (+ b); then the new rows become state.
        if !linear_par(
            par,
            &w.o_proj,
            w.o_proj_bias.as_ref(),
            work.o,
            dims.o_cols,
            t,
            out,
            Some(pack),
        ) {
            return Err(projection("o_proj"));
        }
        if !self.cache.commit(t) {
            return Err(err(Status::Internal, "cache commit failed"));
        }
        self.last_selection = (start, t);
        Ok(())
    }

    /// One decode step for each of several sequences at once: token `i`
    /// (row `i` of `x`, `[n][hidden_size]`) is appended to `engines[i]` at
    /// position `engines[i].len()`, attends over that engine's cache only, and
    /// its output goes to row `i` of `out`.
    ///
    /// The engines must share one configuration and the same weights (the same
    /// tensor data). Every weight matrix is then read once for all `n` tokens:
    /// the projections run with `n` rows, and the absorbed products `W_UK` /
    /// `W_UV` with one row per token, in groups of
    /// [`crate::attention::ABSORB_TOKENS`]. Scratch and threads are those of
    /// `engines[0]`, so `n <= max_tokens_per_call`.
    ///
    /// Results: attention always takes the absorbed path. Each row equals
    /// [`Engine::forward_mode`] on its engine alone with [`AttnMode::Absorb`],
    /// bitwise while `n` is below [`crate::kernels::PACK_MIN_ROWS`] (every
    /// product then sums each output in the same order for one row or many);
    /// from that many rows on, the projections pack their weights (f16, bf16
    /// and FP8 weights; f32 except on AVX2) and sum in another order, so rows
    /// differ by f32 rounding. Against a naive-path call
    /// (what [`AttnMode::Auto`] picks for a first token) they differ by f32
    /// rounding too.
    ///
    /// All or nothing: on any error no engine changes and `out` is unwritten.
    /// Errors: `InvalidArgument` (`n` = 0, `n` > `max_tokens_per_call` of
    /// `engines[0]`, `x`/`out` lengths, an engine twice, `engines[i]` with
    /// other weights or config), `CacheFull` (any engine full), `NonFinite`
    /// (any row of `x`).
    pub fn forward_batch(
        engines: &mut [&mut Engine<'w, 'm>],
        x: &[f32],
        out: &mut [f32],
    ) -> Result<()> {
        forward_batch_in(engines, x, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::tests::{aligned, small_v2_lite, Layer};

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

    /// Bits of the cache's valid rows.
    fn state(e: &Engine) -> (usize, Vec<u32>) {
        let c = e.cache();
        let mut widen = vec![0f32; c.len() * c.row_len()];
        let rows = c.rows(0, c.len(), &mut widen);
        (c.len(), rows.iter().map(|v| v.to_bits()).collect())
    }

    #[test]
    fn a_batch_equals_separate_absorbed_calls() {
        // Three engines at lengths 0, 2 and 5; one token each, batched and alone.
        let cfg = small_v2_lite(32, 12, 4);
        let layer = Layer::new(cfg, 5, false, true, 8);
        let (w, d) = (layer.weights(), 32);
        let x = &layer.x;
        let lens = [0usize, 2, 5];
        let mut bufs: Vec<Vec<u8>> = (0..6).map(|_| Vec::new()).collect();
        let mut mems = bufs.iter_mut();
        let mut make = |len: usize| {
            let mem = aligned(mems.next().unwrap(), Engine::memory_bytes(&cfg).unwrap());
            let mut e = Engine::new(&cfg, &w, mem).unwrap();
            let mut o = vec![0f32; 4 * d];
            let mut done = 0;
            while done < len {
                let k = (len - done).min(4);
                e.forward(&x[done * d..(done + k) * d], &mut o[..k * d])
                    .unwrap();
                done += k;
            }
            e
        };
        let mut batch: Vec<Engine> = lens.iter().map(|&l| make(l)).collect();
        let mut alone: Vec<Engine> = lens.iter().map(|&l| make(l)).collect();
        let xb = &x[5 * d..8 * d];
        let mut got = vec![0f32; 3 * d];
        let mut refs: Vec<&mut Engine> = batch.iter_mut().collect();
        Engine::forward_batch(&mut refs, xb, &mut got).unwrap();
        let mut want = vec![0f32; 3 * d];
        for (i, e) in alone.iter_mut().enumerate() {
            let (xi, oi) = (&xb[i * d..(i + 1) * d], &mut want[i * d..(i + 1) * d]);
            e.forward_mode(xi, oi, AttnMode::Absorb).unwrap();
        }
        assert!(got
            .iter()
            .zip(&want)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        for (b, a) in batch.iter().zip(&alone) {
            assert!(state(b) == state(a));
        }
    }

    #[test]
    fn a_buffer_off_the_plan_is_an_internal_error_that_changes_nothing() {
        let cfg = small_v2_lite(32, 40, 4);
        let layer = Layer::new(cfg, 11, false, false, 8);
        let (w, d) = (layer.weights(), 32);
        let (x, mut out) = (&layer.x, vec![0f32; 8 * 32]);
        let mut buf = Vec::new();
        let mem = aligned(&mut buf, Engine::memory_bytes(&cfg).unwrap());
        let mut e = Engine::new(&cfg, &w, mem).unwrap();
        let threads = Threads;
        e.set_parallel(Some(&threads));
        e.set_parallel_min_work(0);
        e.forward(&x[..4 * d], &mut out[..4 * d]).unwrap();
        let next = &x[4 * d..5 * d];
        // Both paths fail with `message`, leaving the state as it was.
        let fails_cleanly = |e: &mut Engine, message: &str| {
            let before = state(e);
            for (mode, path) in [(AttnMode::Absorb, "absorbed"), (AttnMode::Naive, "naive")] {
                let err = e.forward_mode(next, &mut [0f32; 32], mode).unwrap_err();
                assert_eq!(err.status(), Status::Internal);
                assert_eq!(err.message(), format!("{path} attention: {message}"));
                assert!(state(e) == before, "{path}: the state changed");
            }
        };

        // kv_b_proj with one row: the tasks fail inside the parallel-for.
        let kv_b = e.weights.kv_b_proj;
        e.weights.kv_b_proj = kv_b.rows(0, 1).unwrap();
        fails_cleanly(&mut e, "kv_b_proj rows lie outside the tensor");
        e.weights.kv_b_proj = kv_b;

        // The state is intact: the rest of the input gives what one engine
        // running it without the failures gives.
        e.forward(&x[4 * d..], &mut out[4 * d..]).unwrap();
        let mut buf2 = Vec::new();
        let mem2 = aligned(&mut buf2, Engine::memory_bytes(&cfg).unwrap());
        let mut clean = Engine::new(&cfg, &w, mem2).unwrap();
        let mut want = vec![0f32; 8 * d];
        clean.forward(&x[..4 * d], &mut want[..4 * d]).unwrap();
        clean.forward(&x[4 * d..], &mut want[4 * d..]).unwrap();
        assert!(out
            .iter()
            .zip(&want)
            .all(|(a, b)| a.to_bits() == b.to_bits()));

        // Task slots shorter than either path's slots (checked before any task
        // runs; the region holds the larger of the two).
        let dims = cfg.dims().unwrap();
        let widen = crate::plan::widened_rows(&cfg);
        let absorbed = crate::plan::absorbed_slot_bytes(&dims, widen).unwrap()
            * crate::attention::absorbed_splits(&dims);
        let naive = crate::plan::naive_slot_bytes(&dims, widen).unwrap()
            * crate::attention::head_groups(&dims).0;
        let slots = core::mem::take(&mut e.work.task_slots);
        assert_eq!(slots.len() * 4, absorbed.max(naive));
        let short = absorbed.min(naive) / 4 - 16;
        e.work.task_slots = &mut slots[..short];
        e.truncate(4).unwrap();
        fails_cleanly(&mut e, "a scratch region is shorter than the memory plan");
    }

    #[test]
    #[cfg_attr(miri, ignore)] // two 32-token forwards: ~2 10^5 multiply-adds
    fn pack_panels_shorter_than_the_plan_fail_the_projection_not_silently() {
        // T = PACK_MIN_ROWS tokens pack; d 32 and kv_a rows 16 + 4 = 20:
        // every projection is one task of pack_len(32) = 64 * 32 f32, which is
        // what the plan holds.
        const T: usize = crate::kernels::PACK_MIN_ROWS;
        let cfg = small_v2_lite(32, 2 * T as u32, T as u32);
        let dims = cfg.dims().unwrap();
        let layer = Layer::new(cfg, 12, false, false, T);
        let (w, d) = (layer.weights(), 32);
        let mut buf = Vec::new();
        let mem = aligned(&mut buf, Engine::memory_bytes(&cfg).unwrap());
        let mut e = Engine::new(&cfg, &w, mem).unwrap();
        assert_eq!(e.work.pack_panels.len(), 64 * 32);
        assert_eq!(crate::plan::pack_panels_len(&cfg, &dims), 64 * 32);
        let mut out = vec![0f32; T * d];
        e.forward(&layer.x[..T * d], &mut out).unwrap();
        e.truncate(0).unwrap();
        let pack = core::mem::take(&mut e.work.pack_panels);
        let short = pack.len() - 1;
        e.work.pack_panels = &mut pack[..short];
        let err = e.forward(&layer.x[..T * d], &mut out).unwrap_err();
        assert_eq!(err.status(), Status::Internal);
        assert!(err.message().contains("q_proj"), "{}", err.message());
        assert_eq!(e.len(), 0);
        // Fewer tokens than PACK_MIN_ROWS do not pack: they run.
        e.forward(&layer.x[..(T - 1) * d], &mut out[..(T - 1) * d])
            .unwrap();
        assert_eq!(e.len(), T - 1);
    }

    #[test]
    fn the_batch_refuses_every_mechanism_it_does_not_carry() {
        use crate::config::RopeType;
        let base = small_v2_lite(32, 12, 4);
        assert!(batchable(&base).is_ok());
        let mut yarn = base;
        yarn.rope_type = RopeType::Yarn;
        assert!(batchable(&yarn).is_ok());
        type Set = fn(&mut Config);
        let cases: [(&str, Set); 15] = [
            ("rope types", |c| c.rope_type = RopeType::Linear),
            ("rope types", |c| c.rope_type = RopeType::Llama3),
            ("rope types", |c| c.rope_type = RopeType::LongRope),
            ("rope types", |c| c.rope_type = RopeType::None),
            ("rope_freq_alpha", |c| c.rope_freq_alpha = true),
            ("rope_key_norm", |c| c.rope_key_norm = true),
            ("latent scales", |c| c.q_latent_scale = 2.0),
            ("latent scales", |c| c.kv_latent_scale = 0.5),
            ("query_scale", |c| c.query_scale = QueryScale::Llama4),
            ("output gates", |c| c.gate = Gate::PerHead),
            ("output gates", |c| c.gate = Gate::FusedQ),
            ("attention sinks", |c| c.sinks = true),
            ("sliding_window", |c| c.sliding_window = 4),
            ("kv_shared", |c| c.kv_shared = true),
            ("dsa", |c| c.dsa = Dsa::Full),
        ];
        for (name, set) in cases {
            let mut c = base;
            set(&mut c);
            let e = batchable(&c).unwrap_err();
            assert_eq!(e.status(), Status::Unsupported, "{name}");
            assert!(e.message().contains(name), "{name}: {}", e.message());
        }
        let mut shared = base;
        shared.dsa = Dsa::Shared;
        assert_eq!(
            batchable(&shared).unwrap_err().status(),
            Status::Unsupported
        );
    }
}
