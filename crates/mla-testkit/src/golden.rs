//! The golden cases in `tests/data` (written by tools/reference/make_golden.py from
//! PyTorch): canonical weights under [`PREFIX`], `inputs`/`outputs` `[T][d]`, the
//! config as `__metadata__`.

use crate::st_file::AlignedBytes;
use mla_core::safetensors::{bind_weights, config_from_metadata, SafeTensors};
use mla_core::{Config, Weights};
use std::path::PathBuf;

/// Weight prefix of the golden files.
pub const PREFIX: &str = "model.layers.0.self_attn.";

/// `tests/data` of the repository.
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data")
}

/// Every golden case name (tests/data/*.safetensors), sorted; panics if there are
/// fewer than the six the repository holds.
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
    /// The case name (file stem).
    pub name: String,
    /// The file, 8-byte aligned (zero-copy f32 views need 4).
    pub bytes: AlignedBytes,
}

impl Golden {
    /// tests/data/`name`.safetensors.
    pub fn load(name: &str) -> Golden {
        Golden {
            name: name.to_owned(),
            bytes: AlignedBytes::read(&data_dir().join(format!("{name}.safetensors"))),
        }
    }

    /// The parsed file.
    pub fn st(&self) -> SafeTensors<'_> {
        SafeTensors::parse(self.bytes.get())
            .unwrap_or_else(|e| panic!("{}: {}", self.name, e.message()))
    }

    /// The case's config (from the tutorial preset and the metadata), capacity
    /// `max_seq_len`, one call up to all of the case's tokens; validated.
    pub fn config(&self, max_seq_len: u32) -> Config {
        let mut c = config_from_metadata(&self.st(), &Config::tutorial()).unwrap();
        c.max_seq_len = max_seq_len;
        c.max_tokens_per_call = self.n_tokens() as u32;
        c.validate().unwrap();
        c
    }

    /// The weights, bound zero-copy.
    pub fn weights(&self, cfg: &Config) -> Weights<'_> {
        bind_weights(self.bytes.get(), PREFIX, cfg)
            .unwrap_or_else(|e| panic!("{}: {}", self.name, e.message()))
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

    /// The input hidden states, `[T][d]`.
    pub fn inputs(&self) -> Vec<f32> {
        self.f32s("inputs")
    }

    /// The reference outputs, `[T][d]`.
    pub fn outputs(&self) -> Vec<f32> {
        self.f32s("outputs")
    }

    /// T, the number of tokens.
    pub fn n_tokens(&self) -> usize {
        self.st().metadata("n_tokens").unwrap().parse().unwrap()
    }
}

/// max |a - b| / max |b|: the relative error measure of docs/design.md section 6
/// (infinite when `a` holds a NaN or infinity).
pub fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    if a.iter().any(|x| !x.is_finite()) {
        return f32::INFINITY;
    }
    let num = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let den = b.iter().map(|y| y.abs()).fold(0f32, f32::max);
    num / den
}
