//! Weights rounded to f16/bf16 ([`Converted`]), a layer's tensors by name, and a
//! layer written into a safetensors file.

use crate::st_file::Writer;
use half::{bf16, f16};
use mla_core::dtype::{f8_blocks, Elems};
use mla_core::{DType, Tensor, Weights};

/// The Hugging Face names (after the layer prefix) of [`named_tensors`]' entries.
pub const TENSOR_NAMES: [&str; 11] = [
    "q_proj.weight",
    "q_a_proj.weight",
    "q_a_layernorm.weight",
    "q_b_proj.weight",
    "kv_a_proj_with_mqa.weight",
    "kv_a_layernorm.weight",
    "kv_b_proj.weight",
    "o_proj.weight",
    "q_a_proj.bias",
    "kv_a_proj_with_mqa.bias",
    "o_proj.bias",
];

/// Every tensor of `w` with its Hugging Face name (absent optional ones as `None`).
pub fn named_tensors<'w>(w: &Weights<'w>) -> [(&'static str, Option<Tensor<'w>>); 11] {
    let t = [
        w.q_proj,
        w.q_a_proj,
        w.q_a_layernorm,
        w.q_b_proj,
        w.kv_a_proj_with_mqa,
        w.kv_a_layernorm,
        Some(w.kv_b_proj),
        Some(w.o_proj),
        w.q_a_proj_bias,
        w.kv_a_proj_bias,
        w.o_proj_bias,
    ];
    std::array::from_fn(|i| (TENSOR_NAMES[i], t[i]))
}

/// Weights from tensors in the order of [`TENSOR_NAMES`] (the required ones present).
pub(crate) fn from_named<'w>(t: &[Option<Tensor<'w>>]) -> Weights<'w> {
    let need = |i: usize| t[i].unwrap_or_else(|| panic!("{} is required", TENSOR_NAMES[i]));
    Weights {
        q_proj: t[0],
        q_a_proj: t[1],
        q_a_layernorm: t[2],
        q_b_proj: t[3],
        kv_a_proj_with_mqa: t[4],
        kv_a_layernorm: t[5],
        q_a_proj_bias: t[8],
        kv_a_proj_bias: t[9],
        o_proj_bias: t[10],
        ..Weights::new(need(6), need(7))
    }
}

/// The little-endian bytes of a tensor and its safetensors dtype name.
pub fn tensor_bytes(t: &Tensor) -> (&'static str, Vec<u8>) {
    match t.data {
        Elems::F32(v) => ("F32", v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        Elems::F16(v) => (
            "F16",
            v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect(),
        ),
        Elems::BF16(v) => (
            "BF16",
            v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect(),
        ),
        // The codes only; the block scales are a tensor of their own
        // (`write_weights` adds `<name>_scale_inv`).
        Elems::F8(f) => ("F8_E4M3", f.codes().to_vec()),
    }
}

/// Quantizes a row-major `[rows][cols]` f32 matrix the way DeepSeek's FP8
/// checkpoints are made: per 128 x 128 block the scale `amax / 448` (1 for an
/// all-zero block), codes `e4m3(w / scale)` rounded to nearest even. Returns
/// the codes, the scales `[ceil(rows/128)][ceil(cols/128)]` and the
/// dequantized matrix (`code * scale` in f32, what the engine computes with).
pub fn quantize_f8(w: &[f32], rows: usize, cols: usize) -> (Vec<u8>, Vec<f32>, Vec<f32>) {
    use mla_core::dtype::F8_BLOCK;
    use mla_core::fp8;
    assert_eq!(w.len(), rows * cols);
    let (br, bc) = (f8_blocks(rows), f8_blocks(cols));
    let mut scales = vec![0f32; br * bc];
    for i in 0..rows {
        for j in 0..cols {
            let s = &mut scales[(i / F8_BLOCK) * bc + j / F8_BLOCK];
            *s = s.max(w[i * cols + j].abs());
        }
    }
    for s in &mut scales {
        *s = if *s > 0.0 { *s / fp8::MAX } else { 1.0 };
    }
    let mut codes = vec![0u8; rows * cols];
    let mut deq = vec![0f32; rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            let s = scales[(i / F8_BLOCK) * bc + j / F8_BLOCK];
            let c = fp8::from_f32(w[i * cols + j] / s);
            codes[i * cols + j] = c;
            deq[i * cols + j] = fp8::to_f32(c) * s;
        }
    }
    (codes, scales, deq)
}

/// Adds every tensor of `w` to `file` under `prefix` with its Hugging Face name:
/// matrices as `[rows, cols]`, norms and biases as `[len]` (as checkpoints store them).
pub fn write_weights(mut file: Writer, prefix: &str, w: &Weights) -> Writer {
    for (name, t) in named_tensors(w) {
        let Some(t) = t else { continue };
        let (dtype, bytes) = tensor_bytes(&t);
        let one_d = name.ends_with(".bias") || name.ends_with("layernorm.weight");
        let shape = if one_d {
            vec![t.cols]
        } else {
            vec![t.rows, t.cols]
        };
        file = file.tensor(&format!("{prefix}{name}"), dtype, &shape, bytes);
        if let Elems::F8(f) = t.data {
            let shape = [f8_blocks(t.rows), f8_blocks(t.cols)];
            let bytes = f.scales().iter().flat_map(|x| x.to_le_bytes()).collect();
            file = file.tensor(&format!("{prefix}{name}_scale_inv"), "F32", &shape, bytes);
        }
    }
    file
}

/// Weights converted to another dtype, owned.
pub struct Converted {
    store: Vec<Option<(Vec<u16>, usize, usize)>>,
    dtype: DType,
}

impl Converted {
    /// Rounds every tensor of `w` (any dtype) to `dtype` (F16 or BF16).
    pub fn new(w: &Weights, dtype: DType) -> Converted {
        assert!(
            matches!(dtype, DType::F16 | DType::BF16),
            "convert to f16 or bf16"
        );
        let store = named_tensors(w)
            .iter()
            .map(|(_, t)| {
                let t = t.as_ref()?;
                let mut f = vec![0f32; t.data.len()];
                t.data.widen_into(&mut f);
                let bits: Vec<u16> = match dtype {
                    DType::F16 => f.iter().map(|&x| f16::from_f32(x).to_bits()).collect(),
                    _ => f.iter().map(|&x| bf16::from_f32(x).to_bits()).collect(),
                };
                Some((bits, t.rows, t.cols))
            })
            .collect();
        Converted { store, dtype }
    }

    /// The converted weights, borrowed.
    pub fn weights(&self) -> Weights<'_> {
        let t: Vec<Option<Tensor>> = self
            .store
            .iter()
            .map(|s| {
                let (bits, rows, cols) = s.as_ref()?;
                let e = match self.dtype {
                    DType::F16 => Elems::F16(bytemuck::cast_slice(bits)),
                    _ => Elems::BF16(bytemuck::cast_slice(bits)),
                };
                Some(Tensor::new(e, *rows, *cols).expect("converted tensor"))
            })
            .collect();
        from_named(&t)
    }
}
