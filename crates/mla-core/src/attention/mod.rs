//! Attention over the latent cache: the naive and the absorbed path.
//!
//! Both compute, for query token `t` at position `pos` and head `h`,
//! `o_h = sum_{s <= pos} softmax_s(score_h(s)) v_h(s)` with
//! `score_h(s) = (q_nope_h . W_UK_h c_s + q_pe_h . k_pe_s) * scale` (DESIGN.md 2.1);
//! with a sliding window `W` only keys `pos - W < s` (the cache is then a ring:
//! blocks of cached rows never cross its end, see `LatentCache::contiguous`).
//!
//! - [`absorbed()`] (decode): `q~_h = W_UK_h^T q_nope_h` (r values); a block of
//!   [`BLOCK`] cached rows is read once for all heads: scores
//!   `S[h][b] = [q~_h | q_pe_h] . [c_b | k_pe_b]` (one blocked product over
//!   `r + p`), an online softmax per head, then `acc_h += P[h] C` (a second
//!   blocked product); at the end `o_h = W_UV_h acc_h / l_h`;
//! - [`naive()`] (prefill): per head, decompress `k_nope` and `v` for a block of
//!   [`NAIVE_BLOCK`] cached rows with `kv_b_proj` (blocked products), score
//!   every query token of the call against the block, online softmax, `O += P V`.
//!
//! The softmax is online over blocks (running max and sum, rescaling the
//! accumulator), so scratch does not grow with the context. The scratch layout
//! is part of the memory plan ([`crate::plan`]). The unit tests check both paths
//! against `reference`, a plain scalar transcription of DESIGN.md 2.1.
//!
//! # Tasks (see [`crate::parallel`])
//!
//! - absorbed, per query token: (a) absorbed queries by groups of heads;
//!   (b) the cached rows `0..=pos` in up to [`n_slots`] fixed ranges (at least
//!   [`SPLIT_ROWS`] rows each, whole blocks), each with its own partial max, sum
//!   and accumulator in its scratch slot; (c) by groups of heads: combine the
//!   ranges in order, then `W_UV_h`.
//! - naive: groups of heads, each with its own scratch slot.
//!
//! The number of tasks depends only on the configuration and the position,
//! never on the thread count, so results are bitwise reproducible.
//!
//! # Failures
//!
//! Attention gets only checked input; what can still go wrong is a bug (a
//! buffer that does not match the plan). Tasks cannot return through the
//! parallel-for, so each records the first such [`Fault`] in a shared
//! [`FirstFault`]; the caller checks it after the tasks ran and the engine
//! returns `Status::Internal` naming it, with the cache length not committed.

mod absorbed;
mod naive;
#[cfg(test)]
mod reference;
#[cfg(test)]
pub(crate) mod tests;

pub use absorbed::absorbed;
pub use naive::naive;

use crate::cache::LatentCache;
use crate::config::{Dims, RopeKey};
use crate::kernels::{self, Isa, Mat, MatE, MatMut};
use crate::parallel::{Parallel, MAX_TASKS};
use crate::plan::{absorbed_slot_bytes, ceil_div, max, min, naive_slot_bytes, round16};
use crate::weights::Tensor;
use core::sync::atomic::{AtomicU8, Ordering};

/// Cached rows per block of the absorbed path (a multiple of 16; less for a
/// small `max_seq_len`, see [`blocks`]).
pub const BLOCK: usize = 32;
/// Cached rows per block of the naive path (a multiple of 16; less for a
/// small `max_seq_len`, see [`blocks`]).
pub const NAIVE_BLOCK: usize = 64;
/// Query tokens whose absorbed products (`W_UK` before, `W_UV` after the
/// latent sums) run as one product per head: each head's weights are read
/// once per group of this many tokens (fewer when `max_tokens_per_call` is
/// smaller, see [`absorb_tokens`]).
pub const ABSORB_TOKENS: usize = 8;
/// Least cached rows per range of the absorbed path's row split.
pub const SPLIT_ROWS: usize = 256;
/// Most scratch slots (row ranges or head groups running at once).
pub const MAX_SLOTS: usize = 16;

const _: () = assert!(BLOCK & 15 == 0 && NAIVE_BLOCK & 15 == 0 && kernels::SOFTMAX_MULTIPLE == 16);
const _: () = assert!(MAX_SLOTS <= MAX_TASKS);

/// Block sizes `(absorbed, naive)` for a config: [`BLOCK`] and [`NAIVE_BLOCK`],
/// or `max_seq_len` rounded up to 16 if that is smaller (small engines keep
/// small scratch).
pub const fn blocks(dims: &Dims) -> (usize, usize) {
    let cap = match round16(dims.max_seq) {
        Some(c) => max(c, 16),
        None => BLOCK,
    };
    (min(BLOCK, cap), min(NAIVE_BLOCK, cap))
}

/// Query tokens per group of the absorbed products: [`ABSORB_TOKENS`], or
/// `max_tokens_per_call` if smaller (at least 1).
pub const fn absorb_tokens(dims: &Dims) -> usize {
    max(min(ABSORB_TOKENS, dims.max_tok), 1)
}

/// The most tasks of a split: enough for the cache's row ranges and for the
/// heads, at most [`MAX_SLOTS`]. It fixes how the absorbed path splits rows and
/// how heads are grouped (so results depend on it); the scratch holds only the
/// slots a split can use ([`absorbed_splits`], [`head_groups`]).
pub const fn n_slots(dims: &Dims) -> usize {
    max(
        min(max(ceil_div(dims.max_seq, SPLIT_ROWS), dims.h), MAX_SLOTS),
        1,
    )
}

/// Row ranges the absorbed path can split a query token's keys into: at most
/// [`n_slots`], and no more than the most keys a token attends over has ranges
/// of [`SPLIT_ROWS`]: `max_seq_len`, or with a sliding window `W` at most `W`,
/// which the ring's `cache_rows` (`min(max_seq_len, W - 1 + T)`) covers (a
/// layer reading another's cache has no rows of its own: `max_seq_len`).
pub const fn absorbed_splits(dims: &Dims) -> usize {
    let keys = if dims.cache_rows > 0 {
        min(dims.cache_rows, dims.max_seq)
    } else {
        dims.max_seq
    };
    max(min(ceil_div(keys, SPLIT_ROWS), n_slots(dims)), 1)
}

/// Head groups of a split by heads: `(groups, heads per group)`, at most
/// [`n_slots`] groups of equal size (the last may be smaller).
pub const fn head_groups(dims: &Dims) -> (usize, usize) {
    let h = max(dims.h, 1);
    let per = max(ceil_div(h, min(h, n_slots(dims))), 1);
    (ceil_div(h, per), per)
}

/// The attention regions of the memory plan (see [`crate::plan::Regions`]).
pub struct Scratch<'a> {
    /// `[G][H][r + p]` ([`absorb_tokens`] `G`): absorbed queries of a group of
    /// tokens (`q~_h`, then `q_pe_h`); once a token's rows are summed, its
    /// combined latent sums `[H][r]` replace `q~` in place.
    pub absorbed_q: &'a mut [f32],
    /// `[r + p][Hp]`: one token's absorbed queries, transposed (`Hp`: `H`
    /// rounded up to 16, zero padding).
    pub absorbed_q_t: &'a mut [f32],
    /// Task slots: [`absorbed_splits`] of [`crate::plan::AbsorbedSlot`] or
    /// [`head_groups`] of [`crate::plan::NaiveSlot`] and its packing scratch
    /// ([`crate::plan::task_slots_bytes`]).
    pub task_slots: &'a mut [f32],
}

/// The caches of a batched decode call (one query token per sequence): query
/// token `t` attends over rows `0 ..= len()` of cache `t`, its own new row
/// written at `len()` and not yet committed.
pub trait Caches<'m>: Sync {
    /// Query token `t`'s cache (`None` past the batch).
    fn cache(&self, t: usize) -> Option<&LatentCache<'m>>;
}

/// What attention reads: dims, the queries, `kv_b_proj`, the cache (rows
/// `0..start + n_tok` written, the last `n_tok` being this call's tokens) or,
/// for a batch, one cache per token, the softmax scale, and where its tasks run.
pub struct Inputs<'a, 'w, 'm> {
    /// Sizes.
    pub dims: &'a Dims,
    /// `[n_tok][H][n+p]` queries, `q_pe` rotated.
    pub q: &'a [f32],
    /// Rope key per head or shared.
    pub rope_key: RopeKey,
    /// `[H*(n+v)][r]`.
    pub kv_b: &'a Tensor<'w>,
    /// The latent cache.
    pub cache: &'a LatentCache<'m>,
    /// Softmax scale.
    pub scale: f32,
    /// Sliding window `W` (a query at `pos` sees keys `pos - W < t <= pos`);
    /// 0 = none. The cache holds at least the rows the call's queries see.
    pub window: usize,
    /// Per head, a sink logit that joins the softmax denominator unscaled
    /// (`exp(sink_h - m)` next to the scores' sum); `None`: no sinks.
    pub sinks: Option<&'a [f32]>,
    /// Position of the first query token.
    pub start: usize,
    /// A batch: token `t` attends over `batch.cache(t)` instead of `cache`
    /// (`start` unused; all caches have `cache`'s dtype). Absorbed path only.
    pub batch: Option<&'a dyn Caches<'m>>,
    /// Query tokens.
    pub n_tok: usize,
    /// Instruction set of the products and softmax blocks.
    pub isa: Isa,
    /// The parallel-for of the tasks.
    pub par: &'a Parallel<'m>,
    /// Sparse attention (DSA): the cached rows each query token attends to;
    /// `None`: every cached row up to the token's position.
    pub selection: Option<Selection<'a>>,
}

/// The rows each query token of a call attends to (DSA top-k): token `t`'s
/// rows are `rows[t*k .. t*k + lens[t]]`, ascending positions `<= start + t`.
#[derive(Clone, Copy, Debug)]
pub struct Selection<'a> {
    /// `[n_tok][k]` selected positions.
    pub rows: &'a [u32],
    /// `[n_tok]` how many of each token's `k` are used.
    pub lens: &'a [u32],
    /// Row stride of `rows` (`index_topk`).
    pub k: usize,
}

impl<'a> Selection<'a> {
    /// Token `t`'s selected rows, or `None` out of range.
    pub fn of(&self, t: usize) -> Option<&'a [u32]> {
        let n = *self.lens.get(t)? as usize;
        let at = t.checked_mul(self.k)?;
        self.rows.get(at..at.checked_add(n.min(self.k))?)
    }
}

/// The cached rows one query token reads: the kernels see positions
/// `0..len()` of the set, which map to cache rows through `Inputs::read_rows`.
#[derive(Clone, Copy, Debug)]
pub enum RowSet<'a> {
    /// Cache rows `0..n` (dense attention).
    Prefix(usize),
    /// These cache rows, ascending (sparse attention).
    List(&'a [u32]),
}

impl RowSet<'_> {
    /// Rows in the set.
    pub fn len(&self) -> usize {
        match self {
            RowSet::Prefix(n) => *n,
            RowSet::List(l) => l.len(),
        }
    }

    /// True when the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<'a, 'm> Inputs<'a, '_, 'm> {
    /// Query token `t`'s cache and the rows it attends over: this call's
    /// cache and [`Self::row_set`], or for a batch its own cache's rows
    /// `0..=len()` (the last one its new row, not yet committed).
    fn token(&self, t: usize) -> Result<(&'a LatentCache<'m>, RowSet<'a>), Fault> {
        match self.batch {
            None => Ok((self.cache, self.row_set(t)?)),
            Some(b) => {
                let c = b.cache(t).ok_or(Fault::Cache)?;
                Ok((c, RowSet::Prefix(c.len() + 1)))
            }
        }
    }

    /// Offset of head `h`'s rope key inside a cache row.
    #[inline]
    fn kpe_offset(&self, h: usize) -> usize {
        match self.rope_key {
            RopeKey::Shared => self.dims.r,
            RopeKey::PerHead => self.dims.r + h * self.dims.p,
        }
    }

    /// The first key position a query at `pos` sees.
    #[inline]
    fn first_key(&self, pos: usize) -> usize {
        crate::engine::window_start(self.window, pos)
    }

    /// The softmax denominator of head `h`: `sum` (of `exp(s - m)` over the
    /// keys) plus the sink's `exp(sink_h - m)` when the layer has sinks.
    #[inline]
    fn denominator(&self, h: usize, m: f32, sum: f32) -> f32 {
        match self.sinks.and_then(|s| s.get(h)) {
            Some(&sink) => sum + libm::expf(sink - m),
            None => sum,
        }
    }

    /// True when cache rows are copied to f32 scratch: widened (f16/bf16/FP8
    /// cache) or gathered (sparse attention). Matches [`crate::plan::widened_rows`].
    fn widen(&self) -> bool {
        self.cache.dtype() != crate::dtype::DType::F32 || self.selection.is_some()
    }

    /// The rows query token `t` (of this call) attends to.
    fn row_set(&self, t: usize) -> Result<RowSet<'a>, Fault> {
        match &self.selection {
            None => Ok(RowSet::Prefix(self.start + t + 1)),
            Some(sel) => sel.of(t).map(RowSet::List).ok_or(Fault::Rows),
        }
    }

    /// Token `t`'s selected rows (`None`: dense).
    fn selected(&self, t: usize) -> Result<Option<&'a [u32]>, Fault> {
        match &self.selection {
            None => Ok(None),
            Some(sel) => sel.of(t).map(Some).ok_or(Fault::Rows),
        }
    }

    /// Rows `b0..b0 + cnt` of `set` in `cache` (the call's, or a batch token's)
    /// as f32 `[cnt][cache_row]`: borrowed from an f32 cache for a prefix, else
    /// widened or gathered into `widen`; empty when out of range.
    fn read_rows<'s>(
        cache: &'s LatentCache<'_>,
        set: RowSet<'_>,
        b0: usize,
        cnt: usize,
        widen: &'s mut [f32],
    ) -> &'s [f32] {
        match set {
            RowSet::Prefix(_) => cache.rows(b0, cnt, widen),
            RowSet::List(list) => match b0.checked_add(cnt).and_then(|e| list.get(b0..e)) {
                Some(ix) => cache.gather(ix, widen),
                None => &[],
            },
        }
    }

    /// f32 per task slot of the absorbed path.
    fn absorbed_slot_len(&self) -> Result<usize, Fault> {
        absorbed_slot_bytes(self.dims, self.widen())
            .map(|b| b / core::mem::size_of::<f32>())
            .ok_or(Fault::Slot)
    }

    /// f32 per task slot of the naive path.
    fn naive_slot_len(&self) -> Result<usize, Fault> {
        naive_slot_bytes(self.dims, self.widen())
            .map(|b| b / core::mem::size_of::<f32>())
            .ok_or(Fault::Slot)
    }

    /// Head groups: `(groups, heads per group)` ([`head_groups`]).
    fn head_groups(&self) -> (usize, usize) {
        head_groups(self.dims)
    }

    /// The heads of group `g`.
    fn group(&self, g: usize, per: usize) -> core::ops::Range<usize> {
        g * per..self.dims.h.min((g + 1) * per)
    }
}

/// An inconsistency between attention's buffers and the memory plan: a bug,
/// never bad input (the engine reports it as `Status::Internal`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// A scratch region is shorter than its layout.
    Scratch = 1,
    /// A task slot does not hold its layout.
    Slot,
    /// A query or output row lies outside its buffer.
    Rows,
    /// Cached rows lie outside the cache (or the widening scratch).
    Cache,
    /// Rows of `kv_b_proj` lie outside the tensor.
    Weights,
    /// The shapes of a product disagree.
    Shapes,
    /// A softmax block is not a whole number of vectors.
    Softmax,
}

impl Fault {
    const ALL: [Fault; 7] = [
        Fault::Scratch,
        Fault::Slot,
        Fault::Rows,
        Fault::Cache,
        Fault::Weights,
        Fault::Shapes,
        Fault::Softmax,
    ];

    /// What was inconsistent.
    pub const fn message(self) -> &'static str {
        match self {
            Fault::Scratch => "a scratch region is shorter than the memory plan",
            Fault::Slot => "a task slot does not hold its layout",
            Fault::Rows => "a query or output row lies outside its buffer",
            Fault::Cache => "cached rows lie outside the cache or its widening scratch",
            Fault::Weights => "kv_b_proj rows lie outside the tensor",
            Fault::Shapes => "the shapes of a matrix product disagree",
            Fault::Softmax => "a softmax block is not a whole number of vectors",
        }
    }
}

/// `Ok` when `ok`, else `Err(fault)` (for the kernels' `bool` results).
fn ensure(ok: bool, fault: Fault) -> Result<(), Fault> {
    if ok {
        Ok(())
    } else {
        Err(fault)
    }
}

/// `C += A B` (see [`kernels::gemm_nn`]); disagreeing shapes are a fault.
fn gemm_nn(isa: Isa, a: &Mat<f32>, b: &MatE, c: &mut MatMut) -> Result<(), Fault> {
    ensure(kernels::gemm_nn_with(isa, a, b, c), Fault::Shapes)
}

/// `C = A B^T` (see [`kernels::gemm_nt_packed`]); disagreeing shapes are a fault.
fn gemm_nt(
    isa: Isa,
    a: &Mat<f32>,
    b: &MatE,
    c: &mut MatMut,
    pack: Option<&mut [f32]>,
) -> Result<(), Fault> {
    ensure(kernels::gemm_nt_packed(isa, a, b, c, pack), Fault::Shapes)
}

/// The first [`Fault`] any task of a call met (tasks run on other threads and
/// cannot return it).
pub struct FirstFault(AtomicU8);

impl FirstFault {
    /// No fault yet.
    pub const fn new() -> Self {
        FirstFault(AtomicU8::new(0))
    }

    /// Records `result`'s fault unless one is recorded already.
    pub fn record(&self, result: Result<(), Fault>) {
        if let Err(f) = result {
            let _ = self
                .0
                .compare_exchange(0, f as u8, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    /// The recorded fault, if any (call after the tasks ran).
    pub fn get(&self) -> Result<(), Fault> {
        match self.0.load(Ordering::Acquire) {
            0 => Ok(()),
            code => Err(Fault::ALL
                .into_iter()
                .find(|f| *f as u8 == code)
                .unwrap_or(Fault::Scratch)),
        }
    }
}

impl Default for FirstFault {
    fn default() -> Self {
        FirstFault::new()
    }
}

/// Estimated multiply-adds of each path for a call; auto mode takes the cheaper.
/// `window`: the sliding window (0 = none). Returns `(naive, absorbed)`.
pub fn cost(dims: &Dims, start: usize, n_tok: usize, window: usize) -> (u64, u64) {
    let (h, r, n, p, v) = (
        dims.h as u64,
        dims.r as u64,
        dims.n as u64,
        dims.p as u64,
        dims.v as u64,
    );
    // Rows the naive path decompresses, and keys attended summed over the
    // call's tokens (causal, within the window).
    let first = crate::engine::window_start(window, start) as u64;
    let total = (start + n_tok) as u64 - first;
    let t = n_tok as u64;
    let pairs = if window == 0 {
        t * start as u64 + t * (t + 1) / 2
    } else {
        (0..n_tok).map(|i| (start + i + 1).min(window) as u64).sum()
    };
    let naive = total * h * (n + v) * r + pairs * h * (n + p + v);
    let absorbed = t * h * (n + v) * r + pairs * h * (2 * r + p);
    (naive, absorbed)
}

/// [`cost`] for a sparse layer attending to at most `k` rows per token
/// (`None`: dense): the naive path masks (it still scores every causal row),
/// the absorbed path reads only the selected rows.
pub fn cost_sparse(
    dims: &Dims,
    start: usize,
    n_tok: usize,
    window: usize,
    k: Option<usize>,
) -> (u64, u64) {
    let (naive, absorbed) = cost(dims, start, n_tok, window);
    let Some(k) = k else {
        return (naive, absorbed);
    };
    let (h, r, n, p, v) = (
        dims.h as u64,
        dims.r as u64,
        dims.n as u64,
        dims.p as u64,
        dims.v as u64,
    );
    let t = n_tok as u64;
    let rows = ((start + n_tok) as u64).min(k as u64);
    (
        naive,
        absorbed.min(t * h * (n + v) * r + t * rows * h * (2 * r + p)),
    )
}
