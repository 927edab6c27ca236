//! A Hugging Face config.json (the input after its first two bytes) and a layer
//! index (the first two bytes, little-endian): `Config::from_hf_json` and
//! `hf_layer_info` must not panic; an error is InvalidConfig or Unsupported with a
//! message; a result validates, is the layer asked for, has the capacity asked
//! for, and agrees with `hf_layer_info`. Seeds: every config of
//! tests/data/hf_configs and tests/data/families (fuzz/gen_corpus.py).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mla_core::config::{hf_layer_info, Config, Dsa, RopeType};
use mla_core::Status;

fuzz_target!(|data: &[u8]| {
    let (layer, json) = match data {
        [a, b, rest @ ..] => (u32::from(u16::from_le_bytes([*a, *b])), rest),
        _ => return,
    };
    let info = hf_layer_info(json, layer);
    match Config::from_hf_json(json, layer, 64, 8) {
        Ok((cfg, got)) => {
            cfg.validate().expect("from_hf_json returns a valid config");
            assert_eq!(got.layer, layer);
            assert!(got.mla && layer < got.num_layers);
            assert_eq!((cfg.max_seq_len, cfg.max_tokens_per_call), (64, 8));
            assert_eq!(info.as_ref().ok(), Some(&got), "hf_layer_info agrees");
            assert!(!got.prefix.is_empty());
            assert_eq!(got.nope, cfg.rope_type == RopeType::None);
            assert_eq!(got.kv_shared, cfg.kv_shared);
            assert_eq!(got.dsa, cfg.dsa);
            assert_eq!(got.sliding, cfg.sliding_window > 0);
            if cfg.dsa == Dsa::Full {
                assert_eq!(got.topk_source_layer, layer);
            }
            assert!(cfg.softmax_scale.is_finite() && cfg.softmax_scale > 0.0);
            assert!(cfg.rms_norm_eps.is_finite() && cfg.rms_norm_eps > 0.0);
            let _ = cfg.check_supported();
            let _ = got.kind();
        }
        Err(e) => {
            assert!(
                matches!(e.status(), Status::InvalidConfig | Status::Unsupported),
                "{e}"
            );
            assert!(!e.message().is_empty());
            if let Ok(i) = &info {
                // The layer exists: refused only as not MLA or for its values.
                assert!(layer < i.num_layers);
            }
        }
    }
});
