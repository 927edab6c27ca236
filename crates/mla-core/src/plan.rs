//! The memory plan: every byte an engine uses, named, in one place.
//!
//! An engine lives in one caller buffer (64-byte aligned). Like tflite-micro's
//! recording allocator, one layout routine both sizes and places it: each
//! layout below is written once, as a list of named regions, and `layout!`
//! expands it in two modes:
//!
//! - **count** (`const fn count`): every region's [`Span`] and the total bytes.
//!   [`crate::Engine::memory_bytes`] (the C `mla_engine_size`) reads the total;
//!   [`memory_bytes`] is the same, `const`, for sizing a `static` arena at
//!   compile time;
//! - **place** (`fn place`): the same regions carved, in the same order, out
//!   of a buffer ([`crate::Engine::new`]; attention tasks carve their scratch
//!   slot the same way).
//!
//! Both modes run the same lines, so size and placement cannot drift
//! (tests/memory.rs also checks count == place for random configs). Adding a
//! region is one line in a layout: its name, element type and length.
//!
//! # The engine's memory ([`Regions`])
//!
//! ```text
//!   offset 0  +---------------------+
//!             | cache               |  the state: latent cache rows
//!             +---------------------+
//!             | rope_inv_freq       |  fixed after Engine::new
//!             | rope_cos, rope_sin  |
//!             +---------------------+  ---- scratch of one forward call ----
//!             | q_latent, q         |  projections of the call's tokens
//!             | kv_new, o           |
//!             +---------------------+
//!             | absorbed_q(_t)      |  attention, a group of query tokens
//!             | task_slots          |  one slot per attention task
//!             +---------------------+
//!             | pack_panels         |  packed weight panels of the projections
//!   bytes     +---------------------+  = Engine::memory_bytes
//! ```
//!
//! Every region starts at a multiple of 64 bytes. `T` = `max_tokens_per_call`,
//! `Hp` = `H` rounded up to 16, `cache_row` = `r + rope_k` (`rope_k` = `p`
//! shared, `H*p` per head), `(ab, nb)` = [`crate::attention::blocks`], `G` =
//! [`crate::attention::absorb_tokens`] (`min(8, T)`).
//!
//! | region          | type | shape                                  | what                                   |
//! |-----------------|------|----------------------------------------|----------------------------------------|
//! | `cache`         | u8   | `[cache_rows][cache_row_bytes]` (`cache_row` of `cache_dtype`, or FP8's layout) | latent `c` and rope key(s) per token (a ring with a window) |
//! | `index_cache`   | u8   | `[max_seq_len][row_bytes(index_cache_dtype, Di)]` (DSA full) | indexer key per token |
//! | `rope_inv_freq` | f64  | `[p/2]`                                | RoPE inverse frequencies (YaRN applied)|
//! | `rope_cos`      | f32  | `[p/2]`                                | one position's rotation                |
//! | `rope_sin`      | f32  | `[p/2]`                                | one position's rotation                |
//! | `q_latent`      | f32  | `[T][r_q]` (`[T][2 r_q]` fused gate)   | query latent (empty when `r_q` = 0)    |
//! | `q_fused`       | f32  | `[T][H*(n+p+v)]`, fused gate only      | fused query+gate projection            |
//! | `gate`          | f32  | `[T][H]` / `[T][H*v]`, gated only      | output gate logits                     |
//! | `head_params`   | f32  | `[3][H]`, sinks / learned scale only   | sinks, query-scale `s`, `b` (widened)  |
//! | `q`             | f32  | `[T][H][n+p]`                          | queries, `q_pe` rotated in place       |
//! | `kv_new`        | f32  | `[T][cache_row]`                       | new cache rows before storage rounding |
//! | `o`             | f32  | `[T][H][v]`                            | attention output per head              |
//! | `index_x`       | f32  | `[T][d]` (DSA full, LayerNorm(x) input) | indexer query input                   |
//! | `index_q`, `index_w`, `index_k` | f32 | `[T][Hi][Di]`, `[T][Hi]`, `[T][Di]` (DSA full) | indexer queries, head weights, new keys |
//! | `index_qt`      | f32  | `[Di][Hi]` (DSA full)                  | one token's indexer query, transposed  |
//! | `index_scores`  | f32  | `[max_seq_len]` (DSA full)             | index scores of one query token        |
//! | `index_widen`, `index_dots` | f32 | `[S][64][Di]`, `[S][64][Hi]` (DSA full; `S` = [`crate::dsa::score_slots`]) | per scoring task: widened keys, dot products |
//! | `selection`, `selection_len` | u32 | `[T][index_topk]`, `[T]` (DSA) | each token's selected rows             |
//! | `absorbed_q`    | f32  | `[G][H][r+p]`                          | `[W_UK_h^T q_nope_h \| q_pe_h]` of `G` tokens, then their latent sums `[H][r]` in place |
//! | `absorbed_q_t`  | f32  | `[r+p][Hp]`                            | the same transposed (zero padding)     |
//! | `task_slots`    | f32  | [`task_slots_bytes`]                   | absorbed or naive task slots (layouts below), whichever path needs more |
//! | `pack_panels`   | f32  | [`pack_panels_len`], `T >= 16`         | packed panels of the projections: the widest split, `pack_tasks(rows) x pack_len(cols)` |
//!
//! Scratch is sized by what the config's splits can use, not by the thread
//! count (a split's tasks are fixed by shapes; a pool runs them on any number
//! of threads, each task in its own slot):
//!
//! - `task_slots`: the larger of [`crate::attention::absorbed_splits`] absorbed
//!   slots and [`crate::attention::head_groups`] naive slots, each path at its
//!   own slot size. The absorbed row ranges are at most
//!   `min(ceil(keys / 256), n_slots)` (`keys`: the most rows a token attends
//!   over, `max_seq_len` or a sliding window's ring); the naive head groups at
//!   most `n_slots` = `min(max(ceil(max_seq_len / 256), H), 16)`;
//! - `index_widen`, `index_dots` (DSA scoring): [`crate::dsa::score_slots`] =
//!   `min(ceil(max_seq_len / 1024), n_slots)` tasks;
//! - `pack_panels`: a packed projection of `rows` outputs runs
//!   [`crate::kernels::pack_tasks`]`(rows)` tasks (blocks of a multiple of 64
//!   rows, at most 16), each packing a panel of `64 x min(cols, 256)` f32; the
//!   region holds the largest such split of the layer's projections
//!   ([`pack_panels_len`]). A product given less fails (`Status::Internal`).
//!
//! `cargo run --example memory_plan` prints every region's bytes for the
//! presets.
//!
//! A task slot is one of ([`absorbed_slot_bytes`], [`naive_slot_bytes`]):
//!
//! | absorbed ([`AbsorbedSlot`]) | shape           | naive ([`NaiveSlot`]) | shape             |
//! |-----------------------------|-----------------|-----------------------|-------------------|
//! | `latent_acc`                | `[Hp][r]`       | `keys`                | `[nb][n+p]`       |
//! | `max`, `sum`                | `[Hp]` each     | `values`              | `[nb][v]`         |
//! | `weights`                   | `[ab]`          | `scores`              | `[T][nb]`         |
//! | `rows` (f16/bf16/FP8 or DSA) | `[ab][cache_row]` | `max`, `sum`       | `[T]` each        |
//! | `scores_t`                  | `[ab][Hp]`      | `rows` (f16/bf16/FP8 or DSA)| `[nb][cache_row]` |
//! | `rescale`                   | `[Hp]`          | packing scratch       | [`naive_pack_len`] (`pack_len(max(n+p, r))` when `T >= 16`) |
//!
//! Slot parts are 64-byte aligned too (slots are whole multiples of 64 bytes).

use crate::attention::{absorb_tokens, absorbed_splits, blocks, head_groups};
use crate::config::{Config, Dims, Dsa, Gate, IndexQInput, QueryScale};
use crate::dsa::{row_bytes, score_slots, IndexDType, SCORE_BLOCK};
use crate::dtype::DType;
use crate::kernels::{pack_len, pack_scratch_len, PACK_MIN_ROWS};
use core::marker::PhantomData;
use core::mem::size_of;

/// Alignment of the arena and of every region in it (a cache line; whole SIMD
/// vectors on every ISA).
pub const ALIGN: usize = 64;

/// How a layout is run: what each region becomes.
pub trait Mode {
    /// A region of `T` elements in this mode.
    type Region<T: bytemuck::Pod>;
}

/// Count mode: each region becomes its [`Span`].
#[derive(Debug)]
pub enum Count {}

impl Mode for Count {
    type Region<T: bytemuck::Pod> = Span;
}

/// Place mode: each region becomes a slice of the caller's buffer.
#[derive(Debug)]
pub struct Place<'m>(PhantomData<&'m mut [u8]>);

impl<'m> Mode for Place<'m> {
    type Region<T: bytemuck::Pod> = &'m mut [T];
}

/// Where a counted region lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// Byte offset from the start of the layout (a multiple of [`ALIGN`]).
    pub offset: usize,
    /// Elements.
    pub len: usize,
    /// Bytes (`len` times the element size; the next region starts at
    /// `offset + bytes` rounded up to [`ALIGN`]).
    pub bytes: usize,
}

impl Span {
    /// The region inside `mem` (the buffer the layout was placed in, or a
    /// read-only view of it) as elements of `T`; `None` if out of bounds or
    /// misaligned.
    pub fn get<'a, T: bytemuck::Pod>(&self, mem: &'a [u8]) -> Option<&'a [T]> {
        let end = self.offset.checked_add(self.bytes)?;
        let data: &[T] = bytemuck::try_cast_slice(mem.get(self.offset..end)?).ok()?;
        (data.len() == self.len).then_some(data)
    }
}

/// A layout run in one mode: its regions and the bytes it spans.
#[derive(Debug)]
pub struct Plan<R> {
    /// The named regions ([`Span`]s when counted, slices when placed).
    pub regions: R,
    /// Bytes from the start to the end of the last region, rounded up to
    /// [`ALIGN`]: the size to allocate (count) or the bytes used (place).
    pub bytes: usize,
}

/// `x` rounded up to a multiple of [`ALIGN`]; `None` on overflow.
const fn round_up(x: usize) -> Option<usize> {
    match x.checked_add(ALIGN - 1) {
        Some(v) => Some(v / ALIGN * ALIGN),
        None => None,
    }
}

/// Bytes of `len` elements of `size` bytes, and the same rounded up to [`ALIGN`].
const fn extent(len: Option<usize>, size: usize) -> Option<(usize, usize)> {
    let Some(len) = len else { return None };
    let Some(bytes) = len.checked_mul(size) else {
        return None;
    };
    match round_up(bytes) {
        Some(padded) => Some((bytes, padded)),
        None => None,
    }
}

/// The counting arena: advances an offset, records spans.
#[derive(Debug)]
pub struct Counter {
    at: usize,
    failed: Option<&'static str>,
}

impl Counter {
    /// An empty arena.
    pub const fn new() -> Counter {
        Counter {
            at: 0,
            failed: None,
        }
    }

    /// The next region: `len` elements of `T` (`None`: its size overflowed).
    /// After a failure every span is empty and [`Counter::finish`] names the
    /// first region that failed.
    #[inline(never)] // see Placer::carve
    pub const fn take<T>(&mut self, name: &'static str, len: Option<usize>) -> Span {
        let empty = Span {
            offset: self.at,
            len: 0,
            bytes: 0,
        };
        if self.failed.is_some() {
            return empty;
        }
        let (Some(len), Some((bytes, padded))) = (len, extent(len, size_of::<T>())) else {
            self.failed = Some(name);
            return empty;
        };
        let Some(end) = self.at.checked_add(padded) else {
            self.failed = Some(name);
            return empty;
        };
        let span = Span {
            offset: self.at,
            len,
            bytes,
        };
        self.at = end;
        span
    }

    /// Total bytes, or the name of the first region whose size overflowed.
    pub const fn finish(&self) -> Result<usize, &'static str> {
        match self.failed {
            Some(name) => Err(name),
            None => Ok(self.at),
        }
    }
}

impl Default for Counter {
    fn default() -> Self {
        Counter::new()
    }
}

/// The placing arena: carves regions off the front of a buffer.
#[derive(Debug)]
pub struct Placer<'m> {
    rest: &'m mut [u8],
    at: usize,
    failed: Option<&'static str>,
}

impl<'m> Placer<'m> {
    /// An arena over `mem` (its start must be aligned for every element type
    /// placed; [`ALIGN`] for the engine).
    pub fn new(mem: &'m mut [u8]) -> Placer<'m> {
        Placer {
            rest: mem,
            at: 0,
            failed: None,
        }
    }

    /// The next region: `len` elements of `T`, or an empty slice after a
    /// failure (`len` overflowed, the buffer is too short or misaligned), which
    /// [`Placer::finish`] reports by name.
    pub fn take<T: bytemuck::Pod>(
        &mut self,
        name: &'static str,
        len: Option<usize>,
    ) -> &'m mut [T] {
        if self.failed.is_none() {
            if let Some(s) = self.carve(len) {
                return s;
            }
            self.failed = Some(name);
        }
        &mut []
    }

    // Not inlined: a layout has a dozen regions but only three element types,
    // and firmware counts every byte of code.
    #[inline(never)]
    fn carve<T: bytemuck::Pod>(&mut self, len: Option<usize>) -> Option<&'m mut [T]> {
        let (bytes, padded) = extent(len, size_of::<T>())?;
        if padded > self.rest.len() {
            return None;
        }
        let (head, tail) = core::mem::take(&mut self.rest).split_at_mut(padded);
        self.rest = tail;
        self.at = self.at.checked_add(padded)?;
        bytemuck::try_cast_slice_mut(head.get_mut(..bytes)?).ok()
    }

    /// Bytes used, or the name of the first region that could not be placed.
    pub fn finish(&self) -> Result<usize, &'static str> {
        match self.failed {
            Some(name) => Err(name),
            None => Ok(self.at),
        }
    }
}

/// Writes a layout once and expands it into a struct of named regions
/// (generic over [`Mode`]), a const `count` and a `place`.
///
/// ```text
/// layout! {
///     /// docs
///     pub struct Name(arg: Type, ...) {
///         let local = ...;          // shared by both modes (const-evaluable)
///     } {
///         /// docs
///         region: [ElemType; length_expr],   // length: Option<usize>
///     }
/// }
/// ```
macro_rules! layout {
    (
        $(#[$meta:meta])*
        pub struct $name:ident($($arg:ident: $argty:ty),* $(,)?) {
            $($pre:tt)*
        } {
            $($(#[$fmeta:meta])* $field:ident: [$ty:ty; $len:expr],)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug)]
        pub struct $name<M: Mode> {
            $($(#[$fmeta])* pub $field: M::Region<$ty>,)*
        }

        impl $name<Count> {
            /// The regions' names, in placement order.
            pub const NAMES: &'static [&'static str] = &[$(stringify!($field)),*];

            /// Every region's name and span, in placement order.
            pub fn spans(&self) -> impl Iterator<Item = (&'static str, Span)> {
                [$((stringify!($field), self.$field)),*].into_iter()
            }

            /// Count mode: every region's span and the total bytes, or the
            /// name of the first region whose size overflows `usize`.
            pub const fn count($($arg: $argty),*) -> Result<Plan<Self>, &'static str> {
                $($pre)*
                let mut arena = Counter::new();
                let regions = $name::<Count> {
                    $($field: arena.take::<$ty>(stringify!($field), $len),)*
                };
                match arena.finish() {
                    Ok(bytes) => Ok(Plan { regions, bytes }),
                    Err(name) => Err(name),
                }
            }
        }

        impl Default for $name<Place<'_>> {
            /// Every region empty (a layout taken out of its engine).
            fn default() -> Self {
                $name::<Place<'_>> {
                    $($field: &mut [],)*
                }
            }
        }

        impl<'m> $name<Place<'m>> {
            /// Every region's name and its span relative to `base` (the start of
            /// the buffer it was placed in), in placement order.
            pub fn spans_from(&self, base: *const u8) -> impl Iterator<Item = (&'static str, Span)> {
                fn span<T>(s: &[T], base: *const u8) -> Span {
                    Span {
                        offset: (s.as_ptr() as usize).wrapping_sub(base as usize),
                        len: s.len(),
                        bytes: core::mem::size_of_val(s),
                    }
                }
                [$((stringify!($field), span(&*self.$field, base))),*].into_iter()
            }

            /// Place mode: the regions of [`Self::count`], carved in order out of
            /// `mem`, which must hold [`Self::count`]'s bytes and be aligned to
            /// [`ALIGN`] (else `Err` with the first region that did not fit).
            pub fn place(mem: &'m mut [u8], $($arg: $argty),*) -> Result<Plan<Self>, &'static str> {
                $($pre)*
                let mut arena = Placer::new(mem);
                let regions = $name::<Place<'m>> {
                    $($field: arena.take::<$ty>(stringify!($field), $len),)*
                };
                arena.finish().map(|bytes| Plan { regions, bytes })
            }
        }
    };
}

layout! {
    /// The engine's memory (the table in the module docs).
    pub struct Regions(cfg: &Config, dims: &Dims) {
        let t = dims.max_tok;
        let Some(heads_padded) = round16(dims.h) else {
            return Err("absorbed_q_t");
        };
        let Some(slots) = task_slots_bytes(dims, widened_rows(cfg)) else {
            return Err("task_slots");
        };
        let full = matches!(cfg.dsa, Dsa::Full);
        let sparse = !matches!(cfg.dsa, Dsa::None);
        let index_row = match IndexDType::from_dtype(cfg.index_cache_dtype) {
            Some(dt) if full => row_bytes(dt, dims.index_dim),
            _ => Some(0),
        };
        let index_x = if full && matches!(cfg.index_q_input, IndexQInput::HiddenLayerNorm) {
            prod(&[t, dims.d])
        } else {
            Some(0)
        };
        let gate_width = match cfg.gate {
            Gate::None => 0,
            Gate::PerHead => dims.h,
            Gate::PerChannel | Gate::FusedQ => dims.o_cols,
        };
        let fused = matches!(cfg.gate, Gate::FusedQ);
        let head_params = if cfg.sinks || matches!(cfg.query_scale, QueryScale::LearnedLogPos) {
            3
        } else {
            0
        };
    } {
        /// `[cache_rows][cache_row_bytes]`: `cache_row` elements of
        /// `cache_dtype` per row, or the FP8 layout of
        /// [`crate::cache::row_bytes`] (`cache_rows`: `max_seq_len`, or the
        /// ring of a sliding window).
        cache: [u8; prod(&[dims.cache_rows, dims.cache_row_bytes])],
        /// DSA `Full`: `[max_seq_len]` indexer keys of `index_cache_dtype`
        /// ([`crate::dsa::row_bytes`] each), as bytes.
        index_cache: [u8; match index_row {
            Some(row) => prod(&[dims.max_seq, row]),
            None => None,
        }],
        /// `[p/2]` RoPE inverse frequencies (YaRN applied).
        rope_inv_freq: [f64; Some(dims.p / 2)],
        /// `[p/2]` cosines of one position.
        rope_cos: [f32; Some(dims.p / 2)],
        /// `[p/2]` sines of one position.
        rope_sin: [f32; Some(dims.p / 2)],
        /// `[T][r_q]` query latent (`[T][2 r_q]`, `[RMSNorm(c_q) ; c_q]`, with a
        /// fused query gate).
        q_latent: [f32; prod(&[t, dims.q_b_cols])],
        /// `[T][H*(n+p+v)]` fused query+gate projection (fused gate only).
        q_fused: [f32; if fused { prod(&[t, dims.q_b_rows]) } else { Some(0) }],
        /// `[T][H]` or `[T][H*v]` output gate logits (gated layers only).
        gate: [f32; prod(&[t, gate_width])],
        /// `[3][H]` sinks, learned query-scale `s` and `b`, widened to f32 (layers
        /// with sinks or a learned query scale only).
        head_params: [f32; prod(&[head_params, dims.h])],
        /// `[T][H][n+p]` queries.
        q: [f32; prod(&[t, dims.q_width])],
        /// `[T][cache_row]` new cache rows in f32.
        kv_new: [f32; prod(&[t, dims.kv_a_rows])],
        /// `[T][H][v]` attention output.
        o: [f32; prod(&[t, dims.o_cols])],
        /// DSA `Full`, `index_q_input` hidden LayerNorm: `[T][d]` `LayerNorm(x)`.
        index_x: [f32; index_x],
        /// DSA `Full`: `[T][Hi][Di]` indexer queries.
        index_q: [f32; prod(&[t, dims.index_width])],
        /// DSA `Full`: `[Di][Hi]` one token's indexer query, transposed.
        index_qt: [f32; Some(dims.index_width)],
        /// DSA `Full`: `[T][Hi]` indexer head weights.
        index_w: [f32; prod(&[t, dims.index_heads])],
        /// DSA `Full`: `[T][Di]` new indexer keys.
        index_k: [f32; prod(&[t, dims.index_dim])],
        /// DSA `Full`: `[max_seq_len]` index scores of one query token.
        index_scores: [f32; if full { Some(dims.max_seq) } else { Some(0) }],
        /// DSA `Full`: `[score_slots][SCORE_BLOCK][Di]` widened indexer keys of a
        /// block, per scoring task ([`crate::dsa::score_slots`]).
        index_widen: [f32; prod(&[score_slots(dims), SCORE_BLOCK, dims.index_dim])],
        /// DSA `Full`: `[score_slots][SCORE_BLOCK][Hi]` dot products of a block,
        /// per scoring task.
        index_dots: [f32; prod(&[score_slots(dims), SCORE_BLOCK, dims.index_heads])],
        /// DSA: `[T][index_topk]` selected positions of the call's tokens.
        selection: [u32; if sparse { prod(&[t, dims.index_topk]) } else { Some(0) }],
        /// DSA: `[T]` how many of each token's `index_topk` are used.
        selection_len: [u32; if sparse { Some(t) } else { Some(0) }],
        /// `[G][H][r+p]` absorbed queries (then latent sums) of a token group.
        absorbed_q: [f32; prod(&[absorb_tokens(dims), dims.h, dims.absorbed_width])],
        /// `[r+p][Hp]` the same, transposed.
        absorbed_q_t: [f32; prod(&[dims.absorbed_width, heads_padded])],
        /// Attention task scratch: the slots a split can use, of either path
        /// ([`task_slots_bytes`]).
        task_slots: [f32; Some(slots / size_of::<f32>())],
        /// Packed weight panels of the projections, when `T >= PACK_MIN_ROWS`
        /// (fewer rows do not pack): [`pack_panels_len`], the most any
        /// projection of the layer uses.
        pack_panels: [f32; if t >= PACK_MIN_ROWS {
            Some(pack_panels_len(cfg, dims))
        } else {
            Some(0)
        }],
    }
}

layout! {
    /// One task slot of the absorbed path: a range of cached rows for all heads.
    /// `widen`: the cache is f16/bf16 (its rows are widened to f32 per block).
    pub struct AbsorbedSlot(dims: &Dims, widen: bool) {
        let (ab, _) = blocks(dims);
        let Some(heads_padded) = round16(dims.h) else {
            return Err("running_max");
        };
    } {
        /// `[Hp][r]` partial latent sums (a head's sums contiguous).
        latent_acc: [f32; prod(&[heads_padded, dims.r])],
        /// `[Hp]` running max per head.
        running_max: [f32; Some(heads_padded)],
        /// `[Hp]` running sum per head.
        running_sum: [f32; Some(heads_padded)],
        /// `[ab]` one head's rope scores of a block (per-head rope keys).
        weights: [f32; Some(ab)],
        /// `[ab][cache_row]` a block of cache rows widened to f32.
        widened_rows: [f32; if widen { prod(&[ab, dims.cache_row]) } else { Some(0) }],
        /// `[ab][Hp]` scores of a block, transposed (heads across).
        scores_t: [f32; prod(&[ab, heads_padded])],
        /// `[Hp]` rescale factors of the running sums.
        rescale: [f32; Some(heads_padded)],
    }
}

layout! {
    /// One task slot of the naive path: a group of heads over the whole cache.
    /// `widen`: the cache is f16/bf16 (its rows are widened to f32 per block).
    pub struct NaiveSlot(dims: &Dims, widen: bool) {
        let t = dims.max_tok;
        let (_, nb) = blocks(dims);
    } {
        /// `[nb][n+p]` decompressed keys of a block.
        keys: [f32; prod(&[nb, dims.qk])],
        /// `[nb][v]` decompressed values of a block.
        values: [f32; prod(&[nb, dims.v])],
        /// `[T][nb]` scores of the call's tokens against a block.
        scores: [f32; prod(&[t, nb])],
        /// `[T]` running max per token.
        running_max: [f32; Some(t)],
        /// `[T]` running sum per token.
        running_sum: [f32; Some(t)],
        /// `[nb][cache_row]` a block of cache rows widened to f32.
        widened_rows: [f32; if widen { prod(&[nb, dims.cache_row]) } else { Some(0) }],
    }
}

/// f32 of packing scratch the layer's projections need (`pack_panels` when
/// `T >= PACK_MIN_ROWS`): the largest [`pack_scratch_len`]`(rows, cols)` over the
/// projections the forward call runs through `linear_par` with it, each
/// `[rows][cols]`: `q_a_proj` `[r_q][d]` and `q_b_proj` `[q_b rows][q_b cols]`
/// (or `q_proj` `[H(n+p)][d]`), `kv_a_proj_with_mqa` `[r+rope_k][d]` (own cache
/// only), `gate_proj` `[H or H*v][d]`, `o_proj` `[d][H*v]` and, DSA `Full`, the
/// indexer's `wq_b` `[Hi*Di][r_q or d]`, `weights_proj` `[Hi][d]`, `wk` `[Di][d]`.
/// A projection missing here would make its product fail (`Status::Internal`),
/// never run with less scratch.
pub const fn pack_panels_len(cfg: &Config, dims: &Dims) -> usize {
    let d = dims.d;
    let query = if dims.rq > 0 {
        max(
            pack_scratch_len(dims.rq, d),
            pack_scratch_len(dims.q_b_rows, dims.q_b_cols),
        )
    } else {
        pack_scratch_len(dims.q_width, d)
    };
    let kv_a = if cfg.kv_shared {
        0
    } else {
        pack_scratch_len(dims.kv_a_rows, d)
    };
    let gate = match cfg.gate {
        Gate::PerHead => pack_scratch_len(dims.h, d),
        Gate::PerChannel => pack_scratch_len(dims.o_cols, d),
        Gate::None | Gate::FusedQ => 0,
    };
    let index_q_cols = match cfg.index_q_input {
        IndexQInput::HiddenLayerNorm => d,
        IndexQInput::QLatent => dims.rq,
    };
    let index = max(
        pack_scratch_len(dims.index_width, index_q_cols),
        max(
            pack_scratch_len(dims.index_heads, d),
            pack_scratch_len(dims.index_dim, d),
        ),
    );
    max(
        max(query, kv_a),
        max(max(gate, pack_scratch_len(d, dims.o_cols)), index),
    )
}

/// True when attention copies cache rows to f32 scratch: the cache is f16/bf16
/// (widened per block) or FP8 (decoded per block: codes times their group's
/// scale, rope from bf16), or the layer is sparse (its selected rows are
/// gathered). The scratch is one block of rows per task, never the cache.
pub const fn widened_rows(cfg: &Config) -> bool {
    !matches!(cfg.cache_dtype, DType::F32) || !matches!(cfg.dsa, Dsa::None)
}

/// Bytes of one task slot of the absorbed path ([`AbsorbedSlot`]).
pub const fn absorbed_slot_bytes(dims: &Dims, widen: bool) -> Option<usize> {
    match AbsorbedSlot::count(dims, widen) {
        Ok(plan) => Some(plan.bytes),
        Err(_) => None,
    }
}

/// f32 of packing scratch after the naive path's slot layout ([`NaiveSlot`]);
/// its products (`k` = `r` and `n+p`) pack when it holds [`pack_len`]`(k)`.
/// Up to `cap` = [`pack_len`]`(max(n+p, r))`: all of it when
/// `T >= PACK_MIN_ROWS`; with fewer tokens, the room an absorbed slot
/// ([`absorbed_slot_bytes`]) has beyond the naive layout (a decompressed block
/// of at least 16 cached rows then packs whenever the two slot layouts leave
/// room for a panel; every result stays what it was when both paths shared one
/// slot size).
pub const fn naive_pack_len(dims: &Dims, widen: bool) -> Option<usize> {
    let (Some(absorbed), Ok(naive)) = (
        absorbed_slot_bytes(dims, widen),
        NaiveSlot::count(dims, widen),
    ) else {
        return None;
    };
    let cap = pack_len(max(dims.qk, dims.r));
    let want = if dims.max_tok >= PACK_MIN_ROWS {
        cap
    } else {
        0
    };
    let room = absorbed.saturating_sub(naive.bytes) / size_of::<f32>();
    Some(min(max(want, room), cap))
}

/// Bytes of one task slot of the naive path: [`NaiveSlot`], then
/// [`naive_pack_len`] f32 of packing scratch.
pub const fn naive_slot_bytes(dims: &Dims, widen: bool) -> Option<usize> {
    let (Ok(naive), Some(pack)) = (NaiveSlot::count(dims, widen), naive_pack_len(dims, widen))
    else {
        return None;
    };
    let Some((_, pack)) = extent(Some(pack), size_of::<f32>()) else {
        return None;
    };
    naive.bytes.checked_add(pack)
}

/// Bytes of the `task_slots` region: the slots of whichever path needs more
/// (a call runs one path): [`crate::attention::absorbed_splits`] absorbed slots
/// or [`crate::attention::head_groups`] naive slots. Each path carves its
/// slots at its own slot size from the start of the region.
pub const fn task_slots_bytes(dims: &Dims, widen: bool) -> Option<usize> {
    let (Some(absorbed), Some(naive)) = (
        absorbed_slot_bytes(dims, widen),
        naive_slot_bytes(dims, widen),
    ) else {
        return None;
    };
    match (
        absorbed.checked_mul(absorbed_splits(dims)),
        naive.checked_mul(head_groups(dims).0),
    ) {
        (Some(a), Some(n)) => Some(max(a, n)),
        _ => None,
    }
}

/// Exact bytes of memory an engine for `cfg` needs, for const contexts (a
/// firmware's `static` arena): the same layout as [`crate::Engine::memory_bytes`],
/// 0 where that is an error (invalid config, or a size that overflows `usize`).
///
/// Evaluated at compile time it plans for the target's own `usize`.
pub const fn memory_bytes(cfg: &Config) -> usize {
    let Ok(dims) = cfg.derive_dims() else {
        return 0;
    };
    match Regions::count(cfg, &dims) {
        Ok(plan) => plan.bytes,
        Err(_) => 0,
    }
}

/// `a * b * ...`; `None` on overflow.
pub(crate) const fn prod(factors: &[usize]) -> Option<usize> {
    let mut acc = 1usize;
    let mut rest = factors;
    while let [f, tail @ ..] = rest {
        acc = match acc.checked_mul(*f) {
            Some(v) => v,
            None => return None,
        };
        rest = tail;
    }
    Some(acc)
}

/// `x` rounded up to a multiple of 16 (64 bytes of f32); `None` on overflow.
pub(crate) const fn round16(x: usize) -> Option<usize> {
    match x.checked_add(15) {
        Some(v) => Some(v / 16 * 16),
        None => None,
    }
}

/// `ceil(a / b)`, 0 when `b` is 0 (no panic path).
pub(crate) const fn ceil_div(a: usize, b: usize) -> usize {
    match (a.checked_div(b), a.checked_rem(b)) {
        (Some(q), Some(r)) => q + (r != 0) as usize,
        _ => 0,
    }
}

/// The larger of two sizes (`Ord::max` is not const).
pub(crate) const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

/// The smaller of two sizes (`Ord::min` is not const).
pub(crate) const fn min(a: usize, b: usize) -> usize {
    if a < b {
        a
    } else {
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::tests::aligned;

    /// Evaluated by the compiler: a firmware can size a `static` with it.
    const V3_BYTES: usize = memory_bytes(&Config::deepseek_v3());

    #[test]
    fn const_size_is_the_engine_size() {
        assert_eq!(
            V3_BYTES,
            crate::Engine::memory_bytes(&Config::deepseek_v3()).unwrap()
        );
        let mut bad = Config::tutorial();
        bad.rms_norm_eps = f32::NAN;
        assert_eq!(memory_bytes(&bad), 0);
        assert!(crate::Engine::memory_bytes(&bad).is_err());
    }

    #[test]
    fn counted_spans_are_ordered_aligned_and_exact() {
        let cfg = Config {
            cache_dtype: DType::BF16,
            ..Config::tutorial()
        };
        let dims = cfg.dims().unwrap();
        let plan = Regions::count(&cfg, &dims).unwrap();
        let mut end = 0;
        for (name, span) in plan.regions.spans() {
            assert_eq!(
                span.offset, end,
                "{name} starts where the previous region ends"
            );
            assert_eq!(span.offset % ALIGN, 0, "{name}");
            end = round_up(span.bytes).unwrap() + span.offset;
        }
        assert_eq!(end, plan.bytes);
        // Shapes of the table: [max_seq][cache_row] bf16, [T][H][n+p] f32.
        assert_eq!(plan.regions.cache.bytes, 1024 * 640 * 2);
        assert_eq!(plan.regions.q.len, 128 * 8 * 96);
        assert_eq!(Regions::NAMES.first(), Some(&"cache"));
    }

    #[test]
    fn placing_takes_the_counted_spans_and_reports_what_does_not_fit() {
        // T = PACK_MIN_ROWS: pack_panels is the last region.
        let t = PACK_MIN_ROWS as u32;
        let cfg = crate::attention::tests::small_v2_lite(16, 4 * t, t);
        let dims = cfg.dims().unwrap();
        let count = Regions::count(&cfg, &dims).unwrap();
        let mut buf = Vec::new();
        let mem = aligned(&mut buf, count.bytes);
        let base = mem.as_ptr();
        let placed = Regions::place(mem, &cfg, &dims).unwrap();
        assert_eq!(placed.bytes, count.bytes);
        assert!(placed.regions.spans_from(base).eq(count.regions.spans()));

        let mem = aligned(&mut buf, count.bytes - 1);
        assert_eq!(Regions::place(mem, &cfg, &dims).err(), Some("pack_panels"));
        let mem = aligned(&mut buf, count.bytes + 64);
        assert_eq!(
            Regions::place(&mut mem[1..], &cfg, &dims).err(),
            Some("rope_inv_freq")
        );
    }

    #[test]
    fn naive_packing_scratch_follows_its_rule() {
        let slot = |cfg: &Config| {
            let dims = cfg.dims().unwrap();
            let w = widened_rows(cfg);
            let (abs, naive) = (
                absorbed_slot_bytes(&dims, w).unwrap(),
                NaiveSlot::count(&dims, w).unwrap().bytes,
            );
            (abs, naive, naive_pack_len(&dims, w).unwrap(), dims)
        };
        // T >= PACK_MIN_ROWS: the whole cap, pack_len(max(n+p, r)) = 64 x 128
        // (tutorial).
        let (_, _, pack, _) = slot(&Config {
            max_tokens_per_call: PACK_MIN_ROWS as u32,
            ..Config::tutorial()
        });
        assert_eq!(pack, 64 * 128);
        // T = 1, tutorial: the absorbed slot is smaller than the naive layout.
        let (abs, naive, pack, _) = slot(&Config {
            max_tokens_per_call: 1,
            ..Config::tutorial()
        });
        assert!(abs < naive);
        assert_eq!(pack, 0);
        // T = 1, V3 dims (H 128, r 512): the absorbed slot leaves more than a
        // panel, pack_len(512) = 64 x 256.
        let (abs, naive, pack, dims) = slot(&Config {
            max_tokens_per_call: 1,
            ..Config::deepseek_v3()
        });
        assert!(abs - naive > 64 * 256 * 4);
        assert_eq!(pack, 64 * 256);
        assert_eq!(naive_slot_bytes(&dims, false), Some(naive + 64 * 256 * 4));
    }

    #[test]
    fn overflow_names_the_region() {
        // A capacity whose cache region size does not fit usize.
        let dims = Dims {
            max_seq: usize::MAX / 2,
            cache_rows: usize::MAX / 2,
            ..Config::tutorial().dims().unwrap()
        };
        assert_eq!(
            Regions::count(&Config::tutorial(), &dims).err(),
            Some("cache")
        );
        assert_eq!(prod(&[usize::MAX, 2]), None);
        assert_eq!(prod(&[]), Some(1));
        assert_eq!((ceil_div(7, 2), ceil_div(8, 2), ceil_div(1, 0)), (4, 4, 0));
        assert_eq!((round16(17), round16(usize::MAX)), (Some(32), None));
    }
}
