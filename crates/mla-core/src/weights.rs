//! Borrowed weights in the canonical layout (Hugging Face DeepSeek tensor names).
//!
//! Every matrix is PyTorch `nn.Linear` layout, row-major `[out][in]`, so
//! `y = W x (+ b)`. Norms and biases are `[1][len]`. Tensors are borrowed,
//! zero-copy, in f32, f16 or bf16; [`Weights::check`] verifies presence, shapes and
//! dtypes against a [`Config`] before an engine uses them.

use crate::config::{Config, Dims};
use crate::dtype::{DType, Elems};
use crate::status::{err, Result, Status};

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

    /// A tensor over raw bytes of `dtype`: checks length (`WeightShape`) and
    /// alignment (`Misaligned`: f32 needs 4 bytes, f16/bf16 2).
    pub fn from_bytes(
        bytes: &'w [u8],
        dtype: DType,
        rows: usize,
        cols: usize,
    ) -> Result<Tensor<'w>> {
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
#[derive(Clone, Copy, Debug)]
pub struct Weights<'w> {
    /// `[H*(n+p)][d]`, only when `q_lora_rank == 0`.
    pub q_proj: Option<Tensor<'w>>,
    /// `[r_q][d]`, only when `q_lora_rank > 0`.
    pub q_a_proj: Option<Tensor<'w>>,
    /// `[1][r_q]`, only when `q_norm`.
    pub q_a_layernorm: Option<Tensor<'w>>,
    /// `[H*(n+p)][r_q]`, only when `q_lora_rank > 0`.
    pub q_b_proj: Option<Tensor<'w>>,
    /// `[r + p][d]` (shared rope key) or `[r + H*p][d]` (per head).
    pub kv_a_proj_with_mqa: Tensor<'w>,
    /// `[1][r]`.
    pub kv_a_layernorm: Tensor<'w>,
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
}

fn expect(name: &str, t: Option<&Tensor>, rows: usize, cols: usize) -> Result<()> {
    match t {
        None => Err(err(Status::WeightShape, name)
            .s(": missing, expected ")
            .n(rows)
            .s(" x ")
            .n(cols)),
        Some(t) if t.rows != rows || t.cols != cols => Err(err(Status::WeightShape, name)
            .s(": expected ")
            .n(rows)
            .s(" x ")
            .n(cols)
            .s(", got ")
            .n(t.rows)
            .s(" x ")
            .n(t.cols)),
        Some(t) if t.data.len() != rows * cols => {
            Err(err(Status::WeightShape, name).s(": data length does not match its shape"))
        }
        Some(_) => Ok(()),
    }
}

fn absent(name: &str, t: Option<&Tensor>, why: &str) -> Result<()> {
    match t {
        None => Ok(()),
        Some(_) => Err(err(Status::WeightShape, name)
            .s(": must be absent (")
            .s(why)
            .s(")")),
    }
}

impl<'w> Weights<'w> {
    /// Checks that every tensor the config needs is present with the right shape,
    /// that tensors it does not use are absent, and that biases have their length.
    pub fn check(&self, cfg: &Config) -> Result<Dims> {
        let dims = cfg.dims()?;
        if dims.rq == 0 {
            expect("q_proj", self.q_proj.as_ref(), dims.q_width, dims.d)?;
            absent("q_a_proj", self.q_a_proj.as_ref(), "q_lora_rank is 0")?;
            absent("q_b_proj", self.q_b_proj.as_ref(), "q_lora_rank is 0")?;
            absent(
                "q_a_proj_bias",
                self.q_a_proj_bias.as_ref(),
                "q_lora_rank is 0",
            )?;
        } else {
            absent(
                "q_proj",
                self.q_proj.as_ref(),
                "q_lora_rank > 0 uses q_a_proj/q_b_proj",
            )?;
            expect("q_a_proj", self.q_a_proj.as_ref(), dims.rq, dims.d)?;
            expect("q_b_proj", self.q_b_proj.as_ref(), dims.q_width, dims.rq)?;
            if self.q_a_proj_bias.is_some() {
                expect("q_a_proj_bias", self.q_a_proj_bias.as_ref(), 1, dims.rq)?;
            }
        }
        if cfg.q_norm {
            expect("q_a_layernorm", self.q_a_layernorm.as_ref(), 1, dims.rq)?;
        } else {
            absent("q_a_layernorm", self.q_a_layernorm.as_ref(), "q_norm is 0")?;
        }
        expect(
            "kv_a_proj_with_mqa",
            Some(&self.kv_a_proj_with_mqa),
            dims.kv_a_rows,
            dims.d,
        )?;
        expect("kv_a_layernorm", Some(&self.kv_a_layernorm), 1, dims.r)?;
        expect("kv_b_proj", Some(&self.kv_b_proj), dims.kv_b_rows, dims.r)?;
        expect("o_proj", Some(&self.o_proj), dims.d, dims.o_cols)?;
        if self.kv_a_proj_bias.is_some() {
            expect(
                "kv_a_proj_bias",
                self.kv_a_proj_bias.as_ref(),
                1,
                dims.kv_a_rows,
            )?;
        }
        if self.o_proj_bias.is_some() {
            expect("o_proj_bias", self.o_proj_bias.as_ref(), 1, dims.d)?;
        }
        Ok(dims)
    }
}
