//! Helpers shared by the tests, fuzz targets and examples of mla-rt: golden
//! files, aligned arenas, weight conversion, error measures. Not published.

use half::{bf16, f16};
use mla_core::dtype::Elems;
use mla_core::safetensors::{bind_weights, config_from_metadata, SafeTensors};
use mla_core::{Config, DType, Tensor, Weights};
use std::path::PathBuf;

/// Weight prefix of the golden files.
pub const PREFIX: &str = "model.layers.0.self_attn.";

/// File bytes in 8-byte aligned storage (zero-copy f32 views need 4).
pub struct Bytes {
    words: Vec<u64>,
    len: usize,
}

impl Bytes {
    pub fn read(path: &std::path::Path) -> Bytes {
        let raw = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut words = vec![0u64; raw.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..raw.len()].copy_from_slice(&raw);
        Bytes {
            words,
            len: raw.len(),
        }
    }

    pub fn get(&self) -> &[u8] {
        &bytemuck::cast_slice::<u64, u8>(&self.words)[..self.len]
    }
}

pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data")
}

/// Every golden case name (tests/data/*.safetensors), sorted; panics if there are none.
pub fn cases() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(data_dir())
        .expect("tests/data")
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "safetensors").then(|| p.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    v.sort();
    assert!(
        v.len() >= 6,
        "expected the golden cases in tests/data, found {v:?}"
    );
    v
}

/// A loaded golden case.
pub struct Golden {
    pub name: String,
    pub bytes: Bytes,
}

impl Golden {
    pub fn load(name: &str) -> Golden {
        Golden {
            name: name.to_owned(),
            bytes: Bytes::read(&data_dir().join(format!("{name}.safetensors"))),
        }
    }

    pub fn st(&self) -> SafeTensors<'_> {
        SafeTensors::parse(self.bytes.get()).unwrap()
    }

    /// The case's config, capacity `max_seq_len`, one call up to `n_tokens`.
    pub fn config(&self, max_seq_len: u32) -> Config {
        let mut c = config_from_metadata(&self.st(), &Config::tutorial()).unwrap();
        c.max_seq_len = max_seq_len;
        c.max_tokens_per_call = self.n_tokens() as u32;
        c.validate().unwrap();
        c
    }

    pub fn weights(&self, cfg: &Config) -> Weights<'_> {
        bind_weights(self.bytes.get(), PREFIX, cfg).unwrap()
    }

    /// An f32 tensor by name, as a flat vector.
    pub fn f32s(&self, name: &str) -> Vec<f32> {
        let st = self.st();
        let t = st
            .tensor(name)
            .unwrap()
            .unwrap_or_else(|| panic!("{}: no {name}", self.name));
        t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    pub fn inputs(&self) -> Vec<f32> {
        self.f32s("inputs")
    }

    pub fn outputs(&self) -> Vec<f32> {
        self.f32s("outputs")
    }

    pub fn n_tokens(&self) -> usize {
        self.st().metadata("n_tokens").unwrap().parse().unwrap()
    }
}

/// max |a - b| / max |b|: the relative error measure of DESIGN.md section 5.
pub fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let num = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let den = b.iter().map(|y| y.abs()).fold(0f32, f32::max);
    if a.iter().any(|x| !x.is_finite()) {
        return f32::INFINITY;
    }
    num / den
}

/// 64-byte aligned memory.
pub struct Arena {
    words: Vec<Align64>,
    len: usize,
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Align64([u8; 64]);

impl Arena {
    pub fn new(len: usize) -> Arena {
        Arena {
            words: vec![Align64([0; 64]); len.div_ceil(64)],
            len,
        }
    }

    pub fn get(&mut self) -> &mut [u8] {
        // SAFETY: Align64 is 64 plain bytes with no padding; the Vec owns len.div_ceil(64) of them.
        let all = unsafe {
            std::slice::from_raw_parts_mut(
                self.words.as_mut_ptr() as *mut u8,
                self.words.len() * 64,
            )
        };
        &mut all[..self.len]
    }
}

/// Weights converted to another dtype, owned.
pub struct Converted {
    store: Vec<(Vec<u16>, usize, usize)>,
    dtype: DType,
    present: Vec<bool>,
}

fn all_tensors<'w>(w: &Weights<'w>) -> [Option<Tensor<'w>>; 11] {
    [
        w.q_proj,
        w.q_a_proj,
        w.q_a_layernorm,
        w.q_b_proj,
        Some(w.kv_a_proj_with_mqa),
        Some(w.kv_a_layernorm),
        Some(w.kv_b_proj),
        Some(w.o_proj),
        w.q_a_proj_bias,
        w.kv_a_proj_bias,
        w.o_proj_bias,
    ]
}

impl Converted {
    /// Rounds every tensor of `w` (f32) to `dtype` (F16 or BF16).
    pub fn new(w: &Weights, dtype: DType) -> Converted {
        let mut store = Vec::new();
        let mut present = Vec::new();
        for t in all_tensors(w) {
            present.push(t.is_some());
            let Some(t) = t else {
                store.push((Vec::new(), 0, 0));
                continue;
            };
            let mut f = vec![0f32; t.data.len()];
            t.data.widen_into(&mut f);
            let bits: Vec<u16> = match dtype {
                DType::F16 => f.iter().map(|&x| f16::from_f32(x).to_bits()).collect(),
                DType::BF16 => f.iter().map(|&x| bf16::from_f32(x).to_bits()).collect(),
                DType::F32 => panic!("convert to f16 or bf16"),
            };
            store.push((bits, t.rows, t.cols));
        }
        Converted {
            store,
            dtype,
            present,
        }
    }

    pub fn weights(&self) -> Weights<'_> {
        let t: Vec<Option<Tensor>> = self
            .store
            .iter()
            .zip(&self.present)
            .map(|((bits, rows, cols), &p)| {
                p.then(|| {
                    let e = match self.dtype {
                        DType::F16 => Elems::F16(bytemuck::cast_slice(bits)),
                        _ => Elems::BF16(bytemuck::cast_slice(bits)),
                    };
                    Tensor::new(e, *rows, *cols).unwrap()
                })
            })
            .collect();
        Weights {
            q_proj: t[0],
            q_a_proj: t[1],
            q_a_layernorm: t[2],
            q_b_proj: t[3],
            kv_a_proj_with_mqa: t[4].unwrap(),
            kv_a_layernorm: t[5].unwrap(),
            kv_b_proj: t[6].unwrap(),
            o_proj: t[7].unwrap(),
            q_a_proj_bias: t[8],
            kv_a_proj_bias: t[9],
            o_proj_bias: t[10],
        }
    }
}
