//! Seeded random values (xorshift64*) and random weights in any dtype.

use crate::convert::TENSOR_NAMES;
use crate::st_file::Writer;
use half::{bf16, f16};
use mla_core::dtype::Elems;
use mla_core::{Config, DType, Tensor, Weights};

/// xorshift64*: fast, seeded, the same sequence on every machine.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value, 0 included).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// `n` values uniform in [-scale, scale).
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| scale * self.uniform()).collect()
    }
}

/// How a random tensor is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// Uniform with variance 1/cols (a linear layer's weight).
    Linear,
    /// 1 +- 0.1 (an RMSNorm weight).
    Norm,
    /// +- 0.1 (a bias).
    Bias,
}

enum Store {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    /// E4M3 codes and block scales (DeepSeek's layout, see `quantize_f8`).
    F8(Vec<u8>, Vec<f32>),
}

/// One owned tensor with its Hugging Face name.
pub struct Mat {
    /// The name after the layer prefix (`"kv_b_proj.weight"`).
    pub name: &'static str,
    /// Rows (1 for norms and biases).
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    store: Store,
}

impl Mat {
    /// `rows x cols` values drawn from `rng` as `init` says, rounded to `dtype`.
    pub fn random(
        rng: &mut Rng,
        name: &'static str,
        (rows, cols): (usize, usize),
        dtype: DType,
        init: Init,
    ) -> Mat {
        let a = (3.0 / cols as f32).sqrt();
        let v: Vec<f32> = (0..rows * cols)
            .map(|_| match init {
                Init::Linear => a * rng.uniform(),
                Init::Norm => 1.0 + 0.1 * rng.uniform(),
                Init::Bias => 0.1 * rng.uniform(),
            })
            .collect();
        Mat::from_f32(name, rows, cols, &v, dtype)
    }

    /// A tensor holding `values` rounded to `dtype`.
    pub fn from_f32(
        name: &'static str,
        rows: usize,
        cols: usize,
        values: &[f32],
        dtype: DType,
    ) -> Mat {
        assert_eq!(values.len(), rows * cols, "{name}");
        let store = match dtype {
            DType::F32 => Store::F32(values.to_vec()),
            DType::F16 => Store::F16(values.iter().map(|&x| f16::from_f32(x)).collect()),
            DType::BF16 => Store::BF16(values.iter().map(|&x| bf16::from_f32(x)).collect()),
            DType::F8E4M3 if rows > 1 => {
                let (codes, scales, _) = crate::convert::quantize_f8(values, rows, cols);
                Store::F8(codes, scales)
            }
            // Norms and biases of an FP8 checkpoint stay f32.
            DType::F8E4M3 => Store::F32(values.to_vec()),
        };
        Mat {
            name,
            rows,
            cols,
            store,
        }
    }

    /// The tensor, borrowed.
    pub fn tensor(&self) -> Tensor<'_> {
        let e = match &self.store {
            Store::F32(v) => Elems::F32(v),
            Store::F16(v) => Elems::F16(v),
            Store::BF16(v) => Elems::BF16(v),
            Store::F8(c, s) => {
                return Tensor::f8(c, s, self.rows, self.cols).expect("f8 tensor shape")
            }
        };
        Tensor::new(e, self.rows, self.cols).expect("tensor shape")
    }

    /// Its dtype.
    pub fn dtype(&self) -> DType {
        self.tensor().data.dtype()
    }

    /// Its size in bytes (FP8: codes plus f32 block scales).
    pub fn bytes(&self) -> usize {
        let scales = match &self.store {
            Store::F8(_, s) => 4 * s.len(),
            _ => 0,
        };
        self.rows * self.cols * self.dtype().size() + scales
    }

    /// The same tensor widened (FP8 dequantized) to f32.
    pub fn to_f32(&self) -> Mat {
        let mut v = vec![0f32; self.rows * self.cols];
        self.tensor().data.widen_into(&mut v);
        Mat::from_f32(self.name, self.rows, self.cols, &v, DType::F32)
    }
}

/// Random weights of one layer for a config, owned (the tensors the config needs,
/// optionally the three biases too).
pub struct RandomWeights {
    mats: Vec<Mat>,
}

impl RandomWeights {
    /// Every tensor `cfg` needs, no biases, drawn from `seed`, in `dtype`.
    pub fn new(cfg: &Config, dtype: DType, seed: u64) -> RandomWeights {
        RandomWeights::build(cfg, dtype, seed, false)
    }

    /// Every tensor `cfg` needs plus the biases it allows.
    pub fn with_biases(cfg: &Config, dtype: DType, seed: u64) -> RandomWeights {
        RandomWeights::build(cfg, dtype, seed, true)
    }

    fn build(cfg: &Config, dt: DType, seed: u64, biases: bool) -> RandomWeights {
        let dm = cfg.dims().expect("a valid config");
        let rng = &mut Rng::new(seed);
        let mut mats = Vec::new();
        let mut add = |name, shape, init| mats.push(Mat::random(rng, name, shape, dt, init));
        if dm.rq == 0 {
            add("q_proj.weight", (dm.q_width, dm.d), Init::Linear);
        } else {
            add("q_a_proj.weight", (dm.rq, dm.d), Init::Linear);
            if cfg.q_norm {
                add("q_a_layernorm.weight", (1, dm.rq), Init::Norm);
            }
            add("q_b_proj.weight", (dm.q_width, dm.rq), Init::Linear);
        }
        add(
            "kv_a_proj_with_mqa.weight",
            (dm.kv_a_rows, dm.d),
            Init::Linear,
        );
        add("kv_a_layernorm.weight", (1, dm.r), Init::Norm);
        add("kv_b_proj.weight", (dm.kv_b_rows, dm.r), Init::Linear);
        add("o_proj.weight", (dm.d, dm.o_cols), Init::Linear);
        if biases {
            if dm.rq > 0 {
                add("q_a_proj.bias", (1, dm.rq), Init::Bias);
            }
            add("kv_a_proj_with_mqa.bias", (1, dm.kv_a_rows), Init::Bias);
            add("o_proj.bias", (1, dm.d), Init::Bias);
        }
        RandomWeights { mats }
    }

    /// The weights, borrowed.
    pub fn weights(&self) -> Weights<'_> {
        let t: Vec<Option<Tensor>> = TENSOR_NAMES
            .iter()
            .map(|n| self.get(n).map(Mat::tensor))
            .collect();
        crate::convert::from_named(&t)
    }

    /// The same weights widened to f32 (FP8 dequantized: `code * scale`).
    pub fn to_f32(&self) -> RandomWeights {
        RandomWeights {
            mats: self.mats.iter().map(Mat::to_f32).collect(),
        }
    }

    /// Every tensor.
    pub fn mats(&self) -> &[Mat] {
        &self.mats
    }

    /// The tensor called `name` (after the prefix), if the config has it.
    pub fn get(&self, name: &str) -> Option<&Mat> {
        self.mats.iter().find(|m| m.name == name)
    }

    /// Bytes of all tensors (what one decode step reads).
    pub fn bytes(&self) -> usize {
        self.mats.iter().map(Mat::bytes).sum()
    }

    /// Multiply-adds per token of the projection matrices (norms and biases excluded).
    pub fn macs_per_token(&self) -> usize {
        self.mats
            .iter()
            .filter(|m| m.rows > 1)
            .map(|m| m.rows * m.cols)
            .sum()
    }

    /// Adds the tensors to `file` under `prefix` (see [`crate::convert::write_weights`]).
    pub fn write(&self, prefix: &str, file: Writer) -> Writer {
        crate::convert::write_weights(file, prefix, &self.weights())
    }
}
