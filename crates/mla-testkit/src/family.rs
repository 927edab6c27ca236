//! The tiny Hugging Face checkpoints of `tests/data/families` (one per MLA
//! family, written by tools/reference/make_families.py; see its README): the
//! model's `config.json`, its `model.safetensors` with the real checkpoint
//! names, and `golden.safetensors` with inputs and transformers' outputs per
//! MLA layer. [`FamilyCase::layer`] gives a layer's `(Config, Weights)` the way
//! a host would: `Config::from_hf_json` on the config.json, then `bind_layer`
//! with the family's names.

use crate::golden::data_dir;
use crate::json_tree::Json;
use crate::st_file::AlignedBytes;
use mla_core::config::{Config, LayerInfo};
use mla_core::safetensors::{bind_layer, SafeTensors};
use mla_core::Weights;

/// One case of `tests/data/families/<name>/`.
pub struct FamilyCase {
    /// The case name (directory), e.g. `dots3_note`.
    pub name: String,
    /// `config.json`, as saved.
    pub config_json: Vec<u8>,
    /// `model.safetensors`, 8-byte aligned (zero-copy f32 views need 4).
    pub model: AlignedBytes,
    /// `golden.safetensors`, 8-byte aligned.
    pub golden: AlignedBytes,
    /// Tokens per golden sequence `T`.
    pub tokens: usize,
    /// Tokens of the decode reference's first call `P`.
    pub prefill: usize,
    /// The MLA layers with golden tensors (transformers' layer_idx).
    pub layers: Vec<u32>,
    /// Every decoder layer's kind (`index:kind` of `all_layers`).
    pub all_layers: Vec<(u32, String)>,
    /// Producer links (`kv:1->2`: layer 2 reads layer 1's latent cache;
    /// `topk:1->2`: layer 2 uses layer 1's top-k selection), in the metadata's order.
    pub producers: Vec<String>,
}

/// Every family case name (`tests/data/families/*/`), sorted.
pub fn family_cases() -> Vec<String> {
    let dir = data_dir().join("families");
    let mut v: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| {
            let p = e.ok()?.path();
            p.is_dir()
                .then(|| p.file_name()?.to_str().map(str::to_owned))?
        })
        .collect();
    v.sort();
    v
}

impl FamilyCase {
    /// Loads `tests/data/families/<name>/`.
    pub fn load(name: &str) -> FamilyCase {
        let dir = data_dir().join("families").join(name);
        let config_json = std::fs::read(dir.join("config.json"))
            .unwrap_or_else(|e| panic!("{}/config.json: {e}", dir.display()));
        let model = AlignedBytes::read(&dir.join("model.safetensors"));
        let golden = AlignedBytes::read(&dir.join("golden.safetensors"));
        let meta = {
            let st = SafeTensors::parse(golden.get())
                .unwrap_or_else(|e| panic!("{name}/golden.safetensors: {e}"));
            Json::parse(st.header()).at("__metadata__").clone()
        };
        let layers: Vec<u32> = meta
            .at("layers")
            .str()
            .split(',')
            .map(|s| s.parse().expect("layer index"))
            .collect();
        let all_layers = meta
            .at("all_layers")
            .str()
            .split(',')
            .map(|s| {
                let (i, k) = s.split_once(':').expect("index:kind");
                (i.parse().expect("layer index"), k.to_owned())
            })
            .collect();
        let producers = meta
            .at("producers")
            .str()
            .split(';')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let count = |key: &str| -> usize {
            meta.at(key)
                .str()
                .parse()
                .unwrap_or_else(|_| panic!("{name}: metadata {key}"))
        };
        FamilyCase {
            name: name.to_owned(),
            tokens: count("n_tokens"),
            prefill: count("n_prefill_decode"),
            config_json,
            model,
            golden,
            layers,
            all_layers,
            producers,
        }
    }

    /// The parsed golden file.
    pub fn golden_st(&self) -> SafeTensors<'_> {
        SafeTensors::parse(self.golden.get())
            .unwrap_or_else(|e| panic!("{}: {}", self.name, e.message()))
    }

    /// `layer.<layer>.<what>` of the golden file (`inputs`, `prefill`, `decode`,
    /// `rope_inv_freq`, ...) as f32 values; `selected` (I32) converted.
    pub fn golden(&self, layer: u32, what: &str) -> Vec<f32> {
        let name = format!("layer.{layer}.{what}");
        let st = self.golden_st();
        let v = st
            .tensor(&name)
            .unwrap_or_else(|e| panic!("{}: {name}: {e}", self.name))
            .unwrap_or_else(|| panic!("{}: no tensor {name}", self.name));
        match v.dtype.name() {
            "F32" => v
                .data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            "I32" => v
                .data
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32)
                .collect(),
            other => panic!("{}: {name} is {other}", self.name),
        }
    }

    /// Layer `layer`'s config (capacity `max_seq_len`, `max_tokens_per_call`) and
    /// layer info from config.json, as `Config::from_hf_json` gives them.
    pub fn config(
        &self,
        layer: u32,
        max_seq_len: u32,
        max_tokens_per_call: u32,
    ) -> (Config, LayerInfo) {
        Config::from_hf_json(&self.config_json, layer, max_seq_len, max_tokens_per_call)
            .unwrap_or_else(|e| panic!("{} layer {layer}: {e}", self.name))
    }

    /// Layer `layer`'s config (capacity `T`, one call up to `T` tokens) and its
    /// weights bound zero-copy with the family's checkpoint names.
    pub fn layer(&self, layer: u32) -> (Config, Weights<'_>) {
        let t = self.tokens as u32;
        let (cfg, info) = self.config(layer, t, t);
        let w = bind_layer(self.model.get(), &cfg, &info)
            .unwrap_or_else(|e| panic!("{} layer {layer}: {e}", self.name));
        (cfg, w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_loads_and_binds() {
        let names = family_cases();
        assert_eq!(names.len(), 20);
        for name in names {
            let c = FamilyCase::load(&name);
            assert!(c.tokens == 32 || c.tokens == 64, "{name}: T {}", c.tokens);
            assert!(c.prefill < c.tokens);
            for &l in &c.layers {
                let (cfg, w) = c.layer(l);
                let d = cfg.hidden_size as usize;
                assert_eq!(c.golden(l, "inputs").len(), c.tokens * d, "{name}");
                assert_eq!(c.golden(l, "prefill").len(), c.tokens * d, "{name}");
                assert_eq!(c.golden(l, "decode").len(), c.tokens * d, "{name}");
                w.check(&cfg).unwrap();
            }
        }
        let m = FamilyCase::load("mistral_large4");
        assert_eq!(m.producers, ["kv:1->2", "topk:1->2", "kv:1->4"]);
        assert_eq!((m.tokens, m.prefill), (64, 40));
        assert_eq!(m.all_layers.len(), 5);
        let k = FamilyCase::load("kimi_linear");
        assert_eq!(k.layers, [1, 3]);
        assert_eq!(k.all_layers[0], (0, "linear_attention".to_owned()));
    }
}
