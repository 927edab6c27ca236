//! The engine: memory planning and the forward pass, top to bottom.
//!
//! Memory: [`Engine::memory_bytes`] is the exact size of the buffer [`Engine::new`]
//! needs (align 64). It holds, each region 64-byte aligned, in this order:
//!
//! | region  | shape                         | what                                   |
//! |---------|-------------------------------|----------------------------------------|
//! | cache   | `[max_seq_len][r + rope_k]`   | latent cache, in `cache_dtype`         |
//! | freq    | `[p/2]` f64                   | RoPE inverse frequencies (YaRN applied)|
//! | cos/sin | `[p/2]` f32 each              | one position's rotation                |
//! | qa      | `[T][r_q]`                    | query latent (r_q > 0 only)            |
//! | q       | `[T][H][n+p]`                 | queries, q_pe rotated in place         |
//! | kv      | `[T][r + rope_k]`             | new cache rows before storage rounding |
//! | o       | `[T][H][v]`                   | attention output per head              |
//! | attn.qa | `[H][r + p]`                  | absorbed queries of one token          |
//! | attn.acc| `[H][r]`                      | combined latent sums of one token      |
//! | slots   | see [`attention::Scratch`]    | per-task attention scratch             |
//! | pack    | `[16][32 * min(k, 512)]`, T>=16| packed weight panels of the projections|
//!
//! where `T = max_tokens_per_call`. Nothing else is used; the engine never allocates.
//!
//! Threads: [`Engine::set_parallel`] (Rust) or [`Engine::set_parallel_host`] (C)
//! give the engine a parallel-for; the projections are split into fixed output
//! row blocks and attention into head groups and cached-row ranges (see
//! [`crate::parallel`]); results do not depend on the thread count.

use crate::attention::{self, Inputs};
use crate::cache::LatentCache;
use crate::config::{AttnMode, Config, Dims};
use crate::dtype::DType;
use crate::kernels::{linear_par, pack_len, rmsnorm, PACK_MIN_ROWS, PACK_SLOTS};
use crate::parallel::{HostParallelFor, Parallel, ParallelFor};
use crate::rope::{self, RopeParams};
use crate::status::{err, Result, Status};
use crate::weights::Weights;

/// Number of memory regions (see the module docs).
const REGIONS: usize = 12;

/// Byte sizes of the regions, in placement order.
fn region_bytes(cfg: &Config, dm: &Dims) -> Option<[usize; REGIONS]> {
    let t = dm.max_tok;
    let f = core::mem::size_of::<f32>();
    let a = attention::Scratch::lens(dm, cfg.cache_dtype != DType::F32)?;
    let half = dm.p / 2;
    Some([
        dm.max_seq
            .checked_mul(dm.cache_row)?
            .checked_mul(cfg.cache_dtype.size())?,
        half.checked_mul(core::mem::size_of::<f64>())?,
        half.checked_mul(f)?,
        half.checked_mul(f)?,
        t.checked_mul(dm.rq)?.checked_mul(f)?,
        t.checked_mul(dm.q_width)?.checked_mul(f)?,
        t.checked_mul(dm.kv_a_rows)?.checked_mul(f)?,
        t.checked_mul(dm.o_cols)?.checked_mul(f)?,
        a[0].checked_mul(f)?,
        a[1].checked_mul(f)?,
        a[2].checked_mul(f)?,
        if t >= PACK_MIN_ROWS {
            (PACK_SLOTS * pack_len(dm.d.max(dm.rq).max(dm.o_cols))).checked_mul(f)?
        } else {
            0
        },
    ])
}

fn round_up(x: usize, align: usize) -> Option<usize> {
    x.checked_add(align - 1).map(|v| v / align * align)
}

/// Takes the next region of `bytes` (rounded up to 64) off the front of `mem`.
fn take<'m>(mem: &mut &'m mut [u8], bytes: usize) -> Option<&'m mut [u8]> {
    let padded = round_up(bytes, Engine::MEMORY_ALIGN)?;
    if padded > mem.len() {
        return None;
    }
    let (head, tail) = core::mem::take(mem).split_at_mut(padded);
    *mem = tail;
    head.get_mut(..bytes)
}

fn f32s(b: &mut [u8]) -> Option<&mut [f32]> {
    bytemuck::try_cast_slice_mut(b).ok()
}

/// Scratch of the forward pass (see the module docs for shapes).
struct Work<'m> {
    inv_freq: &'m mut [f64],
    cos: &'m mut [f32],
    sin: &'m mut [f32],
    qa: &'m mut [f32],
    q: &'m mut [f32],
    kv: &'m mut [f32],
    o: &'m mut [f32],
    attn: attention::Scratch<'m>,
    pack: &'m mut [f32],
}

/// An MLA layer with its latent cache, living in caller memory.
///
/// `'w` is the lifetime of the borrowed weights, `'m` of the memory.
pub struct Engine<'w, 'm> {
    cfg: Config,
    dm: Dims,
    w: Weights<'w>,
    scale: f32,
    rope_scaling: f64,
    cache: LatentCache<'m>,
    work: Work<'m>,
    par: Parallel<'m>,
    par_min_work: usize,
}

impl<'w, 'm> Engine<'w, 'm> {
    /// Required alignment of the memory given to [`Engine::new`].
    pub const MEMORY_ALIGN: usize = 64;

    /// Exact bytes of memory an engine for `cfg` needs (cache, RoPE table, scratch).
    pub fn memory_bytes(cfg: &Config) -> Result<usize> {
        let dm = cfg.dims()?;
        let too_big = || {
            err(
                Status::InvalidConfig,
                "max_seq_len: engine memory overflows usize",
            )
        };
        let regions = region_bytes(cfg, &dm).ok_or_else(too_big)?;
        let mut total: usize = 0;
        for b in regions {
            total = round_up(b, Self::MEMORY_ALIGN)
                .and_then(|b| total.checked_add(b))
                .ok_or_else(too_big)?;
        }
        Ok(total)
    }

    /// Builds an engine for `cfg` over `weights`, inside `mem`.
    ///
    /// Errors: `InvalidConfig`, `WeightShape` (missing, unexpected or mis-shaped
    /// tensor), `Misaligned` (`mem` not 64-byte aligned), `BufferTooSmall`
    /// (`mem.len() < memory_bytes(cfg)`).
    pub fn new(cfg: &Config, weights: &Weights<'w>, mem: &'m mut [u8]) -> Result<Self> {
        let dm = weights.check(cfg)?;
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
        let internal = || err(Status::Internal, "memory plan inconsistent");
        let sizes = region_bytes(cfg, &dm).ok_or_else(internal)?;
        let mut rest: &'m mut [u8] = mem;
        let mut region = |i: usize| -> Result<&'m mut [u8]> {
            let b = sizes.get(i).copied().ok_or_else(internal)?;
            take(&mut rest, b).ok_or_else(internal)
        };
        let cache_mem = region(0)?;
        let cache = LatentCache::new(cache_mem, cfg.cache_dtype, dm.cache_row, dm.max_seq)
            .ok_or_else(internal)?;
        let inv_freq: &mut [f64] =
            bytemuck::try_cast_slice_mut(region(1)?).map_err(|_| internal())?;
        let mut f = |i: usize| -> Result<&'m mut [f32]> { f32s(region(i)?).ok_or_else(internal) };
        let cos = f(2)?;
        let sin = f(3)?;
        let qa = f(4)?;
        let q = f(5)?;
        let kv = f(6)?;
        let o = f(7)?;
        let attn = attention::Scratch {
            qa: f(8)?,
            acc: f(9)?,
            slots: f(10)?,
        };
        let pack = f(11)?;
        let rp = RopeParams::from_config(cfg);
        rp.inv_freqs(inv_freq);
        Ok(Engine {
            cfg: *cfg,
            dm,
            w: *weights,
            scale: rope::softmax_scale(cfg),
            rope_scaling: rp.attention_scaling(),
            cache,
            work: Work {
                inv_freq,
                cos,
                sin,
                qa,
                q,
                kv,
                o,
                attn,
                pack,
            },
            par: Parallel::SEQUENTIAL,
            par_min_work: crate::parallel::MIN_PARALLEL_WORK,
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
        &self.dm
    }

    /// The latent cache (read-only).
    pub fn cache(&self) -> &LatentCache<'m> {
        &self.cache
    }

    /// Rolls the cache back to `len` tokens; `InvalidArgument` if `len > self.len()`.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if self.cache.truncate(len) {
            Ok(())
        } else {
            Err(err(Status::InvalidArgument, "truncate: len ")
                .n(len)
                .s(" is past the cache length ")
                .n(self.cache.len()))
        }
    }

    /// Appends precomputed cache rows at positions `len()..`: `rows` is
    /// `[n][r + rope_k]` f32, each row the normalised latent `c` followed by the
    /// rotated rope key(s), as [`Engine::cache`] holds them (rounded to the cache
    /// dtype). For restoring a saved prompt cache, and for benchmarks that need a
    /// long context without running its prefill.
    ///
    /// Errors (nothing changes): `InvalidArgument` (length not a positive
    /// multiple of the row), `CacheFull`, `NonFinite`.
    pub fn append_cache_rows(&mut self, rows: &[f32]) -> Result<()> {
        let row = self.dm.cache_row.max(1);
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
    }

    /// Appends the tokens `x` (`[n_tokens][hidden_size]`) at positions `len()..`,
    /// attends causally over everything cached, and writes `[n_tokens][hidden_size]`
    /// to `out`. Uses the configured attention mode.
    pub fn forward(&mut self, x: &[f32], out: &mut [f32]) -> Result<()> {
        self.forward_mode(x, out, self.cfg.attn_mode)
    }

    /// Checks a call's arguments; returns its token count.
    fn check_call(&self, x: &[f32], out: &[f32]) -> Result<usize> {
        let d = self.dm.d.max(1);
        if x.is_empty() || x.len().checked_rem(d) != Some(0) {
            return Err(err(Status::InvalidArgument, "x: length ")
                .n(x.len())
                .s(" is not a positive multiple of hidden_size ")
                .n(d));
        }
        let t = x.len() / d;
        if t > self.dm.max_tok {
            return Err(err(Status::InvalidArgument, "n_tokens: ")
                .n(t)
                .s(" is above max_tokens_per_call ")
                .n(self.dm.max_tok));
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
        let t = self.check_call(x, out)?;
        let dm = self.dm;
        let (d, r, p) = (dm.d, dm.r, dm.p);
        let start = self.cache.len();
        let w = &self.w;
        let wk = &mut self.work;
        let par = &self.par;
        let eps = self.cfg.rms_norm_eps;
        let internal = || err(Status::Internal, "forward: buffer sizes inconsistent");

        // 1. Queries q[T][H][n+p].
        let ok = match (w.q_a_proj.as_ref(), w.q_b_proj.as_ref(), w.q_proj.as_ref()) {
            (Some(qa), Some(qb), _) => {
                let ok = linear_par(
                    par,
                    qa,
                    w.q_a_proj_bias.as_ref(),
                    x,
                    d,
                    t,
                    wk.qa,
                    Some(wk.pack),
                );
                if let Some(norm) = w.q_a_layernorm.as_ref() {
                    for row in wk.qa.chunks_exact_mut(dm.rq.max(1)).take(t) {
                        rmsnorm(row, norm.data, eps);
                    }
                }
                ok && linear_par(par, qb, None, wk.qa, dm.rq, t, wk.q, Some(wk.pack))
            }
            (_, _, Some(qp)) => linear_par(par, qp, None, x, d, t, wk.q, Some(wk.pack)),
            _ => return Err(err(Status::Internal, "query weights missing")),
        };

        // 2. New cache rows kv[T][r + rope_k] = kv_a_proj_with_mqa x (+ b).
        let ok = ok
            && linear_par(
                par,
                &w.kv_a_proj_with_mqa,
                w.kv_a_proj_bias.as_ref(),
                x,
                d,
                t,
                wk.kv,
                Some(wk.pack),
            );
        if !ok {
            return Err(internal());
        }

        // 3. Per token at pos: c = RMSNorm(kv[..r]); rotate the rope key(s) and every
        //    head's q_pe; store the row in cache slot pos (>= len: not yet state).
        for (i, (kv, q)) in wk
            .kv
            .chunks_exact_mut(dm.kv_a_rows.max(1))
            .zip(wk.q.chunks_exact_mut(dm.q_width.max(1)))
            .take(t)
            .enumerate()
        {
            let pos = start + i;
            rope::cos_sin(wk.inv_freq, self.rope_scaling, pos, wk.cos, wk.sin);
            let (c, kpe) = kv.split_at_mut(r.min(kv.len()));
            rmsnorm(c, w.kv_a_layernorm.data, eps);
            for k in kpe.chunks_exact_mut(p.max(1)) {
                rope::rotate(k, wk.cos, wk.sin, self.cfg.rope_layout);
            }
            for qh in q.chunks_exact_mut(dm.qk.max(1)) {
                if let Some(q_pe) = qh.get_mut(dm.n..) {
                    rope::rotate(q_pe, wk.cos, wk.sin, self.cfg.rope_layout);
                }
            }
            self.cache.write_row(pos, kv);
        }

        // 4. Attention o[T][H][v] over cache rows 0 .. start + T.
        let inp = Inputs {
            dm: &dm,
            rope_key: self.cfg.rope_key,
            kv_b: &w.kv_b_proj,
            cache: &self.cache,
            scale: self.scale,
            start,
            n_tok: t,
        };
        let absorb = match mode {
            AttnMode::Naive => false,
            AttnMode::Absorb => true,
            AttnMode::Auto => {
                let (naive, absorbed) = attention::cost(&dm, start, t);
                absorbed <= naive
            }
        };
        let ok = if absorb {
            attention::absorbed(&inp, par, wk.q, &mut wk.attn, wk.o)
        } else {
            attention::naive(&inp, par, wk.q, &mut wk.attn, wk.o)
        };

        // 5. out[T][d] = o_proj o (+ b); then the new rows become state.
        if !ok
            || !linear_par(
                par,
                &w.o_proj,
                w.o_proj_bias.as_ref(),
                wk.o,
                dm.o_cols,
                t,
                out,
                Some(wk.pack),
            )
        {
            return Err(internal());
        }
        if !self.cache.commit(t) {
            return Err(err(Status::Internal, "cache commit failed"));
        }
        Ok(())
    }
}
