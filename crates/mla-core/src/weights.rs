//! Borrowed weights in the canonical layout (Hugging Face DeepSeek tensor names).
//!
//! Every matrix is PyTorch `nn.Linear` layout, row-major `[out][in]`, so
//! `y = W x (+ b)`. Norms and biases are `[1][len]`. Tensors are borrowed,
//! zero-copy, in f32, f16 or bf16, and the projection matrices also in FP8 E4M3
//! with 128 x 128 block scales ([`Tensor::f8`]); [`Weights::check`] verifies presence, shapes and
//! dtypes against a [`Config`] before an engine uses them.

use crate::config::{Config, Dims, Dsa, Gate, IndexQInput, QueryScale};
use crate::dtype::{DType, Elems, F8Elems};
use crate::status::{err, Error, Result, Status};

/// A borrowed row-major matrix `[rows][cols]`.
#[derive(Clone, Copy, Debug)]
pub struct Tensor<'w> {
    /// The `rows * cols` elements.
    pub data: Elems<'w>,
    /// Rows (output features).
    pub rows: usize,
    /// Columns (input features).
    pub cols: usize,
}

impl<'w> Tensor<'w> {
    /// An f32 tensor; fails if `data.len() != rows * cols`.
    pub fn f32(data: &'w [f32], rows: usize, cols: usize) -> Result<Tensor<'w>> {
        Tensor::new(Elems::F32(data), rows, cols)
    }

    /// A tensor over typed elements; fails if the element count is not `rows * cols`.
    pub fn new(data: Elems<'w>, rows: usize, cols: usize) -> Result<Tensor<'w>> {
        match rows.checked_mul(cols) {
            Some(n) if n == data.len() => Ok(Tensor { data, rows, cols }),
            _ => Err(err(Status::WeightShape, "tensor: ")
                .n(data.len())
                .s(" elements for ")
                .n(rows)
                .s(" x ")
                .n(cols)),
        }
    }

    /// An FP8 E4M3 tensor with its block scales `[ceil(rows/128)][ceil(cols/128)]`
    /// (see [`F8Elems::new`] for the checks and their statuses).
    pub fn f8(codes: &'w [u8], scales: &'w [f32], rows: usize, cols: usize) -> Result<Tensor<'w>> {
        let data = Elems::F8(F8Elems::new(codes, scales, rows, cols)?);
        Ok(Tensor { data, rows, cols })
    }

    /// A tensor over raw bytes of `dtype`: checks length (`WeightShape`) and
    /// alignment (`Misaligned`: f32 needs 4 bytes, f16/bf16 2). FP8 needs its
    /// block scales ([`Tensor::f8`]): `WeightDtype` here.
    pub fn from_bytes(
        bytes: &'w [u8],
        dtype: DType,
        rows: usize,
        cols: usize,
    ) -> Result<Tensor<'w>> {
        if dtype == DType::F8E4M3 {
            return Err(err(
                Status::WeightDtype,
                "tensor: f8_e4m3 weights need their block scales (Tensor::f8)",
            ));
        }
        let want = rows
            .checked_mul(cols)
            .and_then(|n| n.checked_mul(dtype.size()))
            .ok_or_else(|| err(Status::WeightShape, "tensor: rows * cols overflows"))?;
        if bytes.len() != want {
            return Err(err(Status::WeightShape, "tensor: ")
                .n(bytes.len())
                .s(" bytes for ")
                .n(rows)
                .s(" x ")
                .n(cols)
                .s(" ")
                .s(dtype.name()));
        }
        match Elems::from_bytes(bytes, dtype) {
            Some(data) => Ok(Tensor { data, rows, cols }),
            None => Err(err(Status::Misaligned, "tensor: ")
                .s(dtype.name())
                .s(" data must be aligned to ")
                .n(dtype.size())
                .s(" bytes")),
        }
    }

    /// Row `i` (`cols` elements), or `None` out of range.
    pub fn row(&self, i: usize) -> Option<Elems<'w>> {
        self.data.slice(i.checked_mul(self.cols)?, self.cols)
    }

    /// Rows `start..start + count` as a tensor, or `None` out of range.
    pub fn rows(&self, start: usize, count: usize) -> Option<Tensor<'w>> {
        let data = self
            .data
            .slice(start.checked_mul(self.cols)?, count.checked_mul(self.cols)?)?;
        Some(Tensor {
            data,
            rows: count,
            cols: self.cols,
        })
    }
}

/// The weights of one MLA layer. Absent tensors are `None`.
///
/// Build one from [`Weights::new`] (the two tensors every layer has) and set the
/// others, so that fields added later keep old code compiling:
/// `Weights { q_proj: Some(q), ..Weights::new(kv_b, o) }`.
#[derive(Clone, Copy, Debug)]
pub struct Weights<'w> {
    /// `[H*(n+p)][d]`, only when `q_lora_rank == 0`.
    pub q_proj: Option<Tensor<'w>>,
    /// `[r_q][d]`, only when `q_lora_rank > 0`.
    pub q_a_proj: Option<Tensor<'w>>,
    /// `[1][r_q]`, only when `q_norm`.
    pub q_a_layernorm: Option<Tensor<'w>>,
    /// `[H*(n+p)][r_q]`, only when `q_lora_rank > 0`; with the fused gate
    /// (`Gate::FusedQ`) `[H*(n+p+v)][2 r_q]` (see [`Dims::q_b_rows`]).
    pub q_b_proj: Option<Tensor<'w>>,
    /// `[r + p][d]` (shared rope key) or `[r + H*p][d]` (per head); absent on a
    /// layer that reads another layer's cache (`kv_shared`).
    pub kv_a_proj_with_mqa: Option<Tensor<'w>>,
    /// `[1][r]`; absent when `kv_shared`.
    pub kv_a_layernorm: Option<Tensor<'w>>,
    /// `[H*(n+v)][r]`: per head `n` rows of W_UK then `v` rows of W_UV.
    pub kv_b_proj: Tensor<'w>,
    /// `[d][H*v]`.
    pub o_proj: Tensor<'w>,
    /// Optional `[1][r_q]` bias of q_a_proj.
    pub q_a_proj_bias: Option<Tensor<'w>>,
    /// Optional `[1][r + rope]` bias of kv_a_proj_with_mqa.
    pub kv_a_proj_bias: Option<Tensor<'w>>,
    /// Optional `[1][d]` bias of o_proj.
    pub o_proj_bias: Option<Tensor<'w>>,

    // ---- ABI version 2 (the order of `mla_weights`) ----
    /// Output gate from x: `[H][d]` (`Gate::PerHead`) or `[H*v][d]`
    /// (`Gate::PerChannel`).
    pub gate_proj: Option<Tensor<'w>>,
    /// `[1][H]`: one sink logit per head (`sinks`).
    pub sinks: Option<Tensor<'w>>,
    /// `[1][p]`: RMSNorm weight of the rope key (`rope_key_norm`).
    pub rope_key_norm: Option<Tensor<'w>>,
    /// `[1][H]`: `s` of the learned log-position query scale.
    pub query_scale_s: Option<Tensor<'w>>,
    /// `[1][H]`: `b` of the learned log-position query scale.
    pub query_scale_b: Option<Tensor<'w>>,
    /// `[1][p/2]`: LeRoPE exponents `alpha` (`rope_freq_alpha`).
    pub rope_freq_alpha: Option<Tensor<'w>>,
    /// `[Hi*Di][r_q]` (`IndexQInput::QLatent`) or `[Hi*Di][d]` (`HiddenLayerNorm`).
    pub index_wq_b: Option<Tensor<'w>>,
    /// `[Di][d]`: indexer key projection.
    pub index_wk: Option<Tensor<'w>>,
    /// `[1][Di]`: indexer key LayerNorm weight.
    pub index_k_norm: Option<Tensor<'w>>,
    /// `[1][Di]`: indexer key LayerNorm bias.
    pub index_k_norm_bias: Option<Tensor<'w>>,
    /// `[Hi][d]`: per-head weights of the index score.
    pub index_weights_proj: Option<Tensor<'w>>,
    /// `[1][d]`: LayerNorm weight of the indexer query input (`HiddenLayerNorm`).
    pub index_q_norm: Option<Tensor<'w>>,
    /// `[1][d]`: its bias.
    pub index_q_norm_bias: Option<Tensor<'w>>,
    /// `[1][Hi]`: `s` of the indexer's log-position query scale.
    pub index_query_scale_s: Option<Tensor<'w>>,
    /// `[1][Hi]`: its `b`.
    pub index_query_scale_b: Option<Tensor<'w>>,
    /// `[P][Di]`: pooled indexer, positional term of the pool softmax.
    pub index_kpool_ape: Option<Tensor<'w>>,
    /// `[Di][d]`: pooled indexer, gate projection of the pool softmax.
    pub index_kpool_gate: Option<Tensor<'w>>,
}

impl<'w> Weights<'w> {
    /// Weights with the two tensors every layer has and every other one absent.
    pub const fn new(kv_b_proj: Tensor<'w>, o_proj: Tensor<'w>) -> Weights<'w> {
        Weights {
            q_proj: None,
            q_a_proj: None,
            q_a_layernorm: None,
            q_b_proj: None,
            kv_a_proj_with_mqa: None,
            kv_a_layernorm: None,
            kv_b_proj,
            o_proj,
            q_a_proj_bias: None,
            kv_a_proj_bias: None,
            o_proj_bias: None,
            gate_proj: None,
            sinks: None,
            rope_key_norm: None,
            query_scale_s: None,
            query_scale_b: None,
            rope_freq_alpha: None,
            index_wq_b: None,
            index_wk: None,
            index_k_norm: None,
            index_k_norm_bias: None,
            index_weights_proj: None,
            index_q_norm: None,
            index_q_norm_bias: None,
            index_query_scale_s: None,
            index_query_scale_b: None,
            index_kpool_ape: None,
            index_kpool_gate: None,
        }
    }

    /// Every tensor in the order of the fields (and of `mla_weights`).
    pub fn tensors(&self) -> [Option<Tensor<'w>>; WEIGHT_COUNT] {
        [
            self.q_proj,
            self.q_a_proj,
            self.q_a_layernorm,
            self.q_b_proj,
            self.kv_a_proj_with_mqa,
            self.kv_a_layernorm,
            Some(self.kv_b_proj),
            Some(self.o_proj),
            self.q_a_proj_bias,
            self.kv_a_proj_bias,
            self.o_proj_bias,
            self.gate_proj,
            self.sinks,
            self.rope_key_norm,
            self.query_scale_s,
            self.query_scale_b,
            self.rope_freq_alpha,
            self.index_wq_b,
            self.index_wk,
            self.index_k_norm,
            self.index_k_norm_bias,
            self.index_weights_proj,
            self.index_q_norm,
            self.index_q_norm_bias,
            self.index_query_scale_s,
            self.index_query_scale_b,
            self.index_kpool_ape,
            self.index_kpool_gate,
        ]
    }

    /// The inverse of [`Weights::tensors`]: tensors in field order; `None` when
    /// `kv_b_proj` or `o_proj` (which every layer has) is absent.
    pub fn from_tensors(t: [Option<Tensor<'w>>; WEIGHT_COUNT]) -> Option<Weights<'w>> {
        let [q_proj, q_a_proj, q_a_layernorm, q_b_proj, kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj, o_proj, q_a_proj_bias, kv_a_proj_bias, o_proj_bias, gate_proj, sinks, rope_key_norm, query_scale_s, query_scale_b, rope_freq_alpha, index_wq_b, index_wk, index_k_norm, index_k_norm_bias, index_weights_proj, index_q_norm, index_q_norm_bias, index_query_scale_s, index_query_scale_b, index_kpool_ape, index_kpool_gate] =
            t;
        Some(Weights {
            q_proj,
            q_a_proj,
            q_a_layernorm,
            q_b_proj,
            kv_a_proj_with_mqa,
            kv_a_layernorm,
            kv_b_proj: kv_b_proj?,
            o_proj: o_proj?,
            q_a_proj_bias,
            kv_a_proj_bias,
            o_proj_bias,
            gate_proj,
            sinks,
            rope_key_norm,
            query_scale_s,
            query_scale_b,
            rope_freq_alpha,
            index_wq_b,
            index_wk,
            index_k_norm,
            index_k_norm_bias,
            index_weights_proj,
            index_q_norm,
            index_q_norm_bias,
            index_query_scale_s,
            index_query_scale_b,
            index_kpool_ape,
            index_kpool_gate,
        })
    }

    /// Every tensor with its field name ([`WEIGHT_NAMES`]), in field order.
    pub fn named(&self) -> [(&'static str, Option<Tensor<'w>>); WEIGHT_COUNT] {
        let t = self.tensors();
        core::array::from_fn(|i| (WEIGHT_NAMES[i], t[i]))
    }
}

/// Number of tensors of [`Weights`] (`mla_weights`).
pub const WEIGHT_COUNT: usize = 28;

/// The field names of [`Weights`] (and of `mla_weights`), in order.
pub const WEIGHT_NAMES: [&str; WEIGHT_COUNT] = [
    "q_proj",
    "q_a_proj",
    "q_a_layernorm",
    "q_b_proj",
    "kv_a_proj_with_mqa",
    "kv_a_layernorm",
    "kv_b_proj",
    "o_proj",
    "q_a_proj_bias",
    "kv_a_proj_bias",
    "o_proj_bias",
    "gate_proj",
    "sinks",
    "rope_key_norm",
    "query_scale_s",
    "query_scale_b",
    "rope_freq_alpha",
    "index_wq_b",
    "index_wk",
    "index_k_norm",
    "index_k_norm_bias",
    "index_weights_proj",
    "index_q_norm",
    "index_q_norm_bias",
    "index_query_scale_s",
    "index_query_scale_b",
    "index_kpool_ape",
    "index_kpool_gate",
];

/// The expected shape of every tensor of [`Weights`] under a config, in the
/// order of [`Weights::named`]: `Some((rows, cols))` when the config uses it,
/// `None` when it must be absent; biases (q_a, kv_a, o) are `Some` when they may
/// be present (they are optional).
pub fn expected_shapes(cfg: &Config) -> Result<[Option<(usize, usize)>; WEIGHT_COUNT]> {
    let dm = cfg.dims()?;
    let on = |c: bool, rows: usize, cols: usize| c.then_some((rows, cols));
    let lora = dm.rq > 0;
    let own_kv = !cfg.kv_shared;
    let full = cfg.dsa == Dsa::Full;
    let learned = cfg.query_scale == QueryScale::LearnedLogPos;
    let gate_rows = match cfg.gate {
        Gate::PerHead => Some(dm.h),
        Gate::PerChannel => Some(dm.o_cols),
        Gate::None | Gate::FusedQ => None,
    };
    let q_in = if cfg.index_q_input == IndexQInput::HiddenLayerNorm {
        dm.d
    } else {
        dm.rq
    };
    let hidden_ln = full && cfg.index_q_input == IndexQInput::HiddenLayerNorm;
    let pooled = full && cfg.index_kpool > 0;
    Ok([
        on(!lora, dm.q_width, dm.d),
        on(lora, dm.rq, dm.d),
        on(cfg.q_norm, 1, dm.rq),
        on(lora, dm.q_b_rows, dm.q_b_cols),
        on(own_kv, dm.kv_a_rows, dm.d),
        on(own_kv, 1, dm.r),
        Some((dm.kv_b_rows, dm.r)),
        Some((dm.d, dm.o_cols)),
        on(lora, 1, dm.rq),
        on(own_kv, 1, dm.kv_a_rows),
        Some((1, dm.d)),
        gate_rows.map(|rows| (rows, dm.d)),
        on(cfg.sinks, 1, dm.h),
        on(cfg.rope_key_norm, 1, dm.p),
        on(learned, 1, dm.h),
        on(learned, 1, dm.h),
        on(cfg.rope_freq_alpha, 1, dm.p / 2),
        on(full, dm.index_width, q_in),
        on(full, dm.index_dim, dm.d),
        on(full, 1, dm.index_dim),
        on(full, 1, dm.index_dim),
        on(full, dm.index_heads, dm.d),
        on(hidden_ln, 1, dm.d),
        on(hidden_ln, 1, dm.d),
        on(full && cfg.index_query_scale, 1, dm.index_heads),
        on(full && cfg.index_query_scale, 1, dm.index_heads),
        on(pooled, cfg.index_kpool as usize, dm.index_dim),
        on(pooled, dm.index_dim, dm.d),
    ])
}

/// Which tensors of [`Weights::named`] are optional when the config uses them
/// (the three biases).
pub const OPTIONAL: [bool; WEIGHT_COUNT] = {
    let mut o = [false; WEIGHT_COUNT];
    o[8] = true;
    o[9] = true;
    o[10] = true;
    o
};

/// Which tensors of [`Weights::named`] may be FP8 (the projection matrices
/// that the kernels read through [`crate::kernels::MatE`]); norms, biases and
/// the other per-head or per-channel vectors may not.
pub const F8_ALLOWED: [bool; WEIGHT_COUNT] = {
    let mut o = [false; WEIGHT_COUNT];
    let mats = [0, 1, 3, 4, 6, 7, 11, 17, 18, 21, 27];
    let mut i = 0;
    while i < mats.len() {
        o[mats[i]] = true;
        i += 1;
    }
    o
};

/// Why a tensor must be absent, for messages (index of [`Weights::named`]).
pub(crate) fn absent_reason(i: usize) -> &'static str {
    match i {
        0 => "q_lora_rank > 0 uses q_a_proj/q_b_proj",
        1 | 3 | 8 => "q_lora_rank is 0",
        2 => "q_norm is 0",
        4 | 5 | 9 => "kv_shared: the layer reads another layer's cache",
        11 => "gate is not per_head or per_channel",
        12 => "sinks is 0",
        13 => "rope_key_norm is 0",
        14 | 15 => "query_scale is not learned_log_pos",
        16 => "rope_freq_alpha is 0",
        17..=21 => "dsa is not full (no own indexer)",
        22 | 23 => "index_q_input is not hidden_layernorm",
        24 | 25 => "index_query_scale is 0",
        _ => "index_kpool is 0",
    }
}

/// Checks tensor `i` of [`Weights::named`] against its expected shape. Out of
/// line, once: inlined into the loop over 28 tensors it would be copied 28 times.
#[inline(never)]
fn check_one(
    i: usize,
    name: &str,
    t: Option<&Tensor>,
    shape: Option<(usize, usize)>,
) -> Result<()> {
    if let Some(t) = t {
        if t.data.dtype() == DType::F8E4M3 && !F8_ALLOWED.get(i).copied().unwrap_or(false) {
            return Err(err(Status::WeightDtype, name)
                .s(": f8_e4m3 is for projection matrices only (use f32, f16 or bf16)"));
        }
        if let Elems::F8(f) = t.data {
            if f.cols() != t.cols || f.offset().checked_rem(t.cols).unwrap_or(0) != 0 {
                return Err(err(Status::WeightShape, name)
                    .s(": f8 codes do not start a row of a tensor of its column count"));
            }
        }
    }
    match (shape, t) {
        (Some((rows, cols)), Some(t)) => {
            if t.rows != rows || t.cols != cols {
                Err(shape_error(name, ": expected ", rows, cols, Some(t)))
            } else if rows.checked_mul(cols) != Some(t.data.len()) {
                Err(err(Status::WeightShape, name).s(": data length does not match its shape"))
            } else {
                Ok(())
            }
        }
        (Some((rows, cols)), None) if !OPTIONAL.get(i).copied().unwrap_or(false) => {
            Err(shape_error(name, ": missing, expected ", rows, cols, None))
        }
        (Some(_), None) | (None, None) => Ok(()),
        (None, Some(_)) => Err(err(Status::WeightShape, name)
            .s(": must be absent (")
            .s(absent_reason(i))
            .s(")")),
    }
}

/// `name` + `what` + `rows x cols` (+ `, got r x c`).
#[cold]
#[inline(never)]
fn shape_error(name: &str, what: &str, rows: usize, cols: usize, got: Option<&Tensor>) -> Error {
    let e = err(Status::WeightShape, name)
        .s(what)
        .n(rows)
        .s(" x ")
        .n(cols);
    match got {
        Some(t) => e.s(", got ").n(t.rows).s(" x ").n(t.cols),
        None => e,
    }
}

impl Weights<'_> {
    /// Checks that every tensor the config needs is present with the right shape,
    /// that tensors it does not use are absent, and that biases have their length
    /// ([`expected_shapes`]).
    pub fn check(&self, cfg: &Config) -> Result<Dims> {
        let dm = cfg.dims()?;
        let want = expected_shapes(cfg)?;
        for (i, ((name, t), shape)) in self.named().iter().zip(want).enumerate() {
            check_one(i, name, t.as_ref(), shape)?;
        }
        Ok(dm)
    }
}
