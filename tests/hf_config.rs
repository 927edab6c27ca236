//! `Config::from_hf_json` against the layer specs of tools/reference/families.py
//! (`derive_layers`, checked against transformers' own modules):
//!
//! - every default config of tests/data/hf_configs, every layer, against
//!   expected.json;
//! - every tiny checkpoint's config.json (tests/data/families), every layer,
//!   against the `layer.L.spec` metadata of its golden.safetensors and its
//!   `all_layers` list.
//!
//! Every field of a spec is compared (an unknown field fails the test, so a spec
//! field nothing maps to cannot go unnoticed). Non-MLA layers must be
//! `Unsupported` with their kind in the message.

use mla_core::config::{
    hf_layer_info, Config, Dsa, Gate, IndexQInput, IndexRope, LayerInfo, QueryScale, RopeLayout,
    RopeType,
};
use mla_core::dtype::Elems;
use mla_core::safetensors::{bind_layer, SafeTensors};
use mla_core::Status;
use mla_testkit::{data_dir, AlignedBytes, Json, Writer};

/// f64 from the spec equals the config's f32 (the spec's double rounded to f32;
/// one f32 ulp of slack for a libm that rounds a transcendental the other way).
fn same(what: &str, want: f64, got: f32) {
    let w = want as f32;
    let ok = w == got || (w - got).abs() <= f32::EPSILON * w.abs();
    assert!(ok, "{what}: want {want} ({w}), got {got}");
}

/// Compares one MLA layer spec with `cfg` and `info`; every key of the spec must
/// be known here.
fn check_spec(ctx: &str, spec: &Json, cfg: &Config, info: &LayerInfo) {
    let i = info.layer;
    let u = |k: &str| spec.at(k).u64();
    for (key, val) in spec.obj() {
        let what = format!("{ctx} layer {i}: {key}");
        match key.as_str() {
            "layer" => assert_eq!(val.u64(), u64::from(i), "{what}"),
            "kind" => assert_eq!(val.str(), info.kind().as_str(), "{what}"),
            "prefix" => assert_eq!(val.str(), info.prefix.as_str(), "{what}"),
            "hidden_size" => assert_eq!(u(key), u64::from(cfg.hidden_size), "{what}"),
            "num_heads" => assert_eq!(u(key), u64::from(cfg.num_heads), "{what}"),
            "q_lora_rank" => assert_eq!(u(key), u64::from(cfg.q_lora_rank), "{what}"),
            "kv_lora_rank" => assert_eq!(u(key), u64::from(cfg.kv_lora_rank), "{what}"),
            "qk_nope_head_dim" => assert_eq!(u(key), u64::from(cfg.qk_nope_head_dim), "{what}"),
            "qk_rope_head_dim" => assert_eq!(u(key), u64::from(cfg.qk_rope_head_dim), "{what}"),
            "v_head_dim" => assert_eq!(u(key), u64::from(cfg.v_head_dim), "{what}"),
            "q_norm_eps" => {
                assert_eq!(!val.is_null(), cfg.q_norm, "{what}");
                if !val.is_null() {
                    same(&what, val.f64(), cfg.rms_norm_eps);
                }
            }
            "kv_norm_eps" => same(&what, val.f64(), cfg.rms_norm_eps),
            "attention_bias" => assert_eq!(val.bool(), info.attention_bias, "{what}"),
            "rope" => check_rope(&what, val, cfg),
            "rope_key_norm_eps" => {
                assert_eq!(!val.is_null(), cfg.rope_key_norm, "{what}");
                if !val.is_null() {
                    same(&what, val.f64(), cfg.rms_norm_eps);
                }
            }
            "softmax_scale" => same(&what, val.f64(), cfg.softmax_scale),
            "sliding_window" => {
                assert_eq!(val.u64(), u64::from(cfg.sliding_window), "{what}");
                assert_eq!(cfg.sliding_window > 0, info.sliding, "{what}");
            }
            "latent_scale_q" => same(&what, val.f64(), cfg.q_latent_scale),
            "latent_scale_kv" => same(&what, val.f64(), cfg.kv_latent_scale),
            "query_scale" => match val {
                Json::Null => assert_eq!(cfg.query_scale, QueryScale::None, "{what}"),
                q => match q.at("type").str() {
                    "llama4" => {
                        assert_eq!(cfg.query_scale, QueryScale::Llama4, "{what}");
                        same(&what, q.at("beta").f64(), cfg.query_scale_beta);
                        assert_eq!(
                            q.at("original_max_position_embeddings").u64(),
                            u64::from(cfg.query_scale_length),
                            "{what}"
                        );
                        assert_eq!(q.obj().len(), 3, "{what}: unknown keys");
                    }
                    "learned_log_position" => {
                        assert_eq!(cfg.query_scale, QueryScale::LearnedLogPos, "{what}");
                        assert_eq!(q.obj().len(), 1, "{what}: unknown keys");
                    }
                    other => panic!("{what}: unknown query_scale type {other}"),
                },
            },
            "gate" => {
                let want = match val {
                    Json::Null => Gate::None,
                    g => match g.str() {
                        "per_head" => Gate::PerHead,
                        "per_channel" => Gate::PerChannel,
                        "fused_q_gate" => Gate::FusedQ,
                        other => panic!("{what}: unknown gate {other}"),
                    },
                };
                assert_eq!(cfg.gate, want, "{what}");
            }
            "sinks" => assert_eq!(val.bool(), cfg.sinks, "{what}"),
            "kv_source_layer" => {
                assert_eq!(val.u64(), u64::from(info.kv_source_layer), "{what}");
                assert_eq!(info.kv_source_layer != i, cfg.kv_shared, "{what}");
                assert_eq!(info.kv_shared, cfg.kv_shared, "{what}");
            }
            "dsa" => check_dsa(&what, val, cfg, info),
            "tensors" => {} // the binding tests use it
            other => panic!("{what}: a spec field this test does not know: {other}"),
        }
    }
    assert_eq!(cfg.rope_key, mla_core::RopeKey::Shared, "{ctx} layer {i}");
    assert_eq!(
        info.nope,
        cfg.rope_type == RopeType::None,
        "{ctx} layer {i}"
    );
}

fn check_rope(what: &str, rope: &Json, cfg: &Config) {
    if rope.is_null() {
        assert_eq!(cfg.rope_type, RopeType::None, "{what}");
        assert!(!cfg.rope_freq_alpha, "{what}");
        return;
    }
    let ty = rope.at("type").str();
    let want = match ty {
        "default" => RopeType::Default,
        "yarn" => RopeType::Yarn,
        "linear" => RopeType::Linear,
        "llama3" => RopeType::Llama3,
        "longrope" => RopeType::LongRope,
        other => panic!("{what}: rope type {other}"),
    };
    assert_eq!(cfg.rope_type, want, "{what}");
    let mut alpha = false;
    for (key, val) in rope.obj() {
        let what = format!("{what}.{key}");
        match key.as_str() {
            "type" => {}
            "theta" => same(&what, val.f64(), cfg.rope_theta),
            "dim" => assert_eq!(val.u64(), u64::from(cfg.qk_rope_head_dim), "{what}"),
            "layout" => {
                let l = match val.str() {
                    "interleaved" => RopeLayout::Interleaved,
                    "half" => RopeLayout::Half,
                    other => panic!("{what}: {other}"),
                };
                assert_eq!(cfg.rope_layout, l, "{what}");
            }
            "attention_scaling" => same(&what, val.f64(), cfg.rope_attention_factor),
            "factor" => same(&what, val.f64(), cfg.rope_factor),
            "original_max_position_embeddings" => {
                assert_eq!(val.u64(), u64::from(cfg.original_max_position), "{what}")
            }
            "beta_fast" => same(&what, val.f64(), cfg.beta_fast),
            "beta_slow" => same(&what, val.f64(), cfg.beta_slow),
            "truncate" => assert_eq!(val.bool(), cfg.rope_yarn_truncate, "{what}"),
            "low_freq_factor" => same(&what, val.f64(), cfg.rope_low_freq_factor),
            "high_freq_factor" => same(&what, val.f64(), cfg.rope_high_freq_factor),
            "short_factor" | "long_factor" => {
                let got = if key == "short_factor" {
                    &cfg.rope_short_factor
                } else {
                    &cfg.rope_long_factor
                };
                let want = val.arr();
                assert_eq!(want.len() as u32, cfg.qk_rope_head_dim / 2, "{what}");
                for (j, w) in want.iter().enumerate() {
                    same(&format!("{what}[{j}]"), w.f64(), got[j]);
                }
            }
            "frequency_multiplier" => {
                assert_eq!(val.str(), "exp(alpha)", "{what}");
                alpha = true;
            }
            // MRoPE with text positions (all three axes equal) is plain RoPE; the
            // sections matter only for image tokens, which the engine does not see.
            "mrope_section" => {}
            "max_position_embeddings" => panic!("{what}: dynamic RoPE is not expected"),
            other => panic!("{what}: a rope field this test does not know: {other}"),
        }
    }
    assert_eq!(cfg.rope_freq_alpha, alpha, "{what}: frequency_multiplier");
    if ty == "default" || ty == "linear" || ty == "llama3" {
        same(
            &format!("{what}: cos/sin factor"),
            1.0,
            cfg.rope_attention_factor,
        );
    }
}

fn check_dsa(what: &str, dsa: &Json, cfg: &Config, info: &LayerInfo) {
    if dsa.is_null() {
        assert_eq!(cfg.dsa, Dsa::None, "{what}");
        assert_eq!(info.dsa, Dsa::None, "{what}");
        return;
    }
    let mode = match dsa.at("mode").str() {
        "full" => Dsa::Full,
        "shared" => Dsa::Shared,
        other => panic!("{what}: mode {other}"),
    };
    assert_eq!(cfg.dsa, mode, "{what}");
    assert_eq!(info.dsa, mode, "{what}");
    for (key, val) in dsa.obj() {
        let what = format!("{what}.{key}");
        match key.as_str() {
            "mode" => {}
            "index_n_heads" => assert_eq!(val.u64(), u64::from(cfg.index_n_heads), "{what}"),
            "index_head_dim" => assert_eq!(val.u64(), u64::from(cfg.index_head_dim), "{what}"),
            "index_topk" => assert_eq!(val.u64(), u64::from(cfg.index_topk), "{what}"),
            "topk_source_layer" => {
                assert_eq!(val.u64(), u64::from(info.topk_source_layer), "{what}")
            }
            "q_input" => {
                let (input, scaled) = match val.str() {
                    "q_latent" => (IndexQInput::QLatent, false),
                    "q_latent_scaled" => (IndexQInput::QLatent, true),
                    "hidden_layernorm" => (IndexQInput::HiddenLayerNorm, false),
                    other => panic!("{what}: {other}"),
                };
                assert_eq!(cfg.index_q_input, input, "{what}");
                // The scaled latent is the latent times q_latent_scale (dots3_note).
                assert_eq!(cfg.q_latent_scale != 1.0, scaled, "{what}");
            }
            "q_norm_eps" => {
                if !val.is_null() {
                    same(&what, val.f64(), cfg.index_q_norm_eps);
                    assert_eq!(cfg.index_q_input, IndexQInput::HiddenLayerNorm, "{what}");
                }
            }
            "query_scale" => {
                let learned = match val {
                    Json::Null => false,
                    v => {
                        assert_eq!(v.str(), "learned_log_position", "{what}");
                        true
                    }
                };
                assert_eq!(cfg.index_query_scale, learned, "{what}");
            }
            "k_norm_eps" => same(&what, val.f64(), cfg.index_k_norm_eps),
            "rope_part" => {
                let want = match val {
                    Json::Null => IndexRope::None,
                    v => match v.str() {
                        "first" => IndexRope::First,
                        "last" => IndexRope::Last,
                        other => panic!("{what}: {other}"),
                    },
                };
                assert_eq!(cfg.index_rope, want, "{what}");
            }
            "rope_layout" => {
                if !val.is_null() {
                    let l = match val.str() {
                        "interleaved" => RopeLayout::Interleaved,
                        "half" => RopeLayout::Half,
                        other => panic!("{what}: {other}"),
                    };
                    assert_eq!(cfg.index_rope_layout, l, "{what}");
                } else {
                    assert_eq!(cfg.index_rope, IndexRope::None, "{what}");
                }
            }
            // Fixed by the indexer's definition (docs/families.md 2.8): Di^-0.5 and
            // Hi^-0.5; the config carries Di and Hi.
            "score_scale" => same(
                &what,
                val.f64(),
                (cfg.index_head_dim as f64).powf(-0.5) as f32,
            ),
            "weights_scale" => same(
                &what,
                val.f64(),
                (cfg.index_n_heads as f64).powf(-0.5) as f32,
            ),
            "kpool" => assert_eq!(val.u64(), u64::from(cfg.index_kpool), "{what}"),
            "always_select_tail" => assert_eq!(val.bool(), cfg.index_kpool_tail, "{what}"),
            other => panic!("{what}: a dsa field this test does not know: {other}"),
        }
    }
    if mode == Dsa::Full && dsa.get("kpool").is_none() {
        assert_eq!(cfg.index_kpool, 0, "{what}: kpool");
    }
}

/// Checks every layer of one config.json against `specs` (index = layer).
fn check_config(ctx: &str, json: &[u8], specs: &[Json]) -> (usize, usize) {
    let (mut mla, mut other) = (0, 0);
    for (i, spec) in specs.iter().enumerate() {
        let i = i as u32;
        assert_eq!(spec.at("layer").u64(), u64::from(i), "{ctx}");
        let info = hf_layer_info(json, i).unwrap_or_else(|e| panic!("{ctx} layer {i}: {e}"));
        assert_eq!(info.num_layers as usize, specs.len(), "{ctx}: num_layers");
        assert_eq!(
            info.kind().as_str(),
            spec.at("kind").str(),
            "{ctx} layer {i}"
        );
        if spec.at("kind").str() == "linear_attention" {
            assert!(!info.mla);
            let e = Config::from_hf_json(json, i, 64, 8).unwrap_err();
            assert_eq!(e.status(), Status::Unsupported, "{ctx} layer {i}: {e}");
            assert!(
                e.message().contains("linear_attention, not MLA")
                    && e.message().starts_with(&format!("layer {i} of ")),
                "{ctx}: {e}"
            );
            other += 1;
            continue;
        }
        let (cfg, info2) = Config::from_hf_json(json, i, 4096, 128)
            .unwrap_or_else(|e| panic!("{ctx} layer {i}: {e}"));
        assert_eq!(info, info2, "{ctx} layer {i}");
        assert_eq!((cfg.max_seq_len, cfg.max_tokens_per_call), (4096, 128));
        check_spec(ctx, spec, &cfg, &info);
        mla += 1;
    }
    // One past the last layer: out of range, naming the count.
    let n = specs.len() as u32;
    let e = Config::from_hf_json(json, n, 64, 8).unwrap_err();
    assert_eq!(e.status(), Status::InvalidConfig);
    assert!(
        e.message()
            .starts_with(&format!("layer: {n} is out of range"))
            && e.message().ends_with(&format!("has {n} attention layers)")),
        "{ctx}: {e}"
    );
    (mla, other)
}

#[test]
fn default_configs_give_expected_json() {
    let dir = data_dir().join("hf_configs");
    let expected =
        Json::parse(&std::fs::read_to_string(dir.join("expected.json")).expect("expected.json"));
    let fams = expected.at("families").obj();
    assert_eq!(fams.len(), 20, "20 families in expected.json");
    let (mut mla, mut other) = (0, 0);
    for (name, fam) in fams {
        let file = fam.at("file").str();
        let json = std::fs::read(dir.join(file)).expect(file);
        let (m, o) = check_config(name, &json, fam.at("layers").arr());
        let info = hf_layer_info(&json, 0).unwrap();
        assert_eq!(info.family.model_type(), name.as_str());
        // The prefix template of the family.
        let tmpl = fam.at("tensor_names").at("prefix").str();
        let want = tmpl
            .replace("{i2}", "0")
            .replace("{j}", "0")
            .replace("{i}", "0");
        assert_eq!(info.prefix.as_str(), want, "{name}");
        mla += m;
        other += o;
    }
    eprintln!("hf_configs: {mla} MLA layers and {other} linear-attention layers checked");
    assert!(mla > 900 && other > 50, "{mla} {other}");
}

#[test]
fn tiny_checkpoint_configs_give_the_golden_specs() {
    let dir = data_dir().join("families");
    let mut cases = 0;
    for entry in std::fs::read_dir(&dir).expect("tests/data/families") {
        let path = entry.unwrap().path();
        if !path.is_dir() {
            continue;
        }
        let case = path.file_name().unwrap().to_str().unwrap().to_owned();
        let json = std::fs::read(path.join("config.json")).unwrap();
        let golden = AlignedBytes::read(&path.join("golden.safetensors"));
        let st = SafeTensors::parse(golden.get()).unwrap();
        // Metadata values with escapes (the JSON specs) through the tree reader.
        let header = Json::parse(st.header());
        let meta = header.at("__metadata__");
        let all: Vec<(u32, String)> = meta
            .at("all_layers")
            .str()
            .split(',')
            .map(|s| {
                let (i, k) = s.split_once(':').unwrap();
                (i.parse().unwrap(), k.to_owned())
            })
            .collect();
        let specs: Vec<Json> = all
            .iter()
            .map(|(i, kind)| match meta.get(&format!("layer.{i}.spec")) {
                Some(s) => Json::parse(s.str()),
                None => {
                    assert_eq!(kind, "linear_attention", "{case} layer {i} has no spec");
                    Json::parse(&format!("{{\"layer\": {i}, \"kind\": \"{kind}\"}}"))
                }
            })
            .collect();
        check_config(&case, &json, &specs);
        assert_eq!(
            hf_layer_info(&json, 0).unwrap().family.model_type(),
            meta.at("model_type").str(),
            "{case}"
        );
        cases += 1;
    }
    assert_eq!(cases, 20, "the 20 golden family cases");
}

/// The `Weights` field each key of a spec's `tensors` map binds to.
fn field_of(key: &str) -> &'static str {
    match key {
        "q_proj" => "q_proj",
        "q_a_proj" => "q_a_proj",
        "q_a_proj.bias" => "q_a_proj_bias",
        "q_a_norm" => "q_a_layernorm",
        "q_b_proj" | "q_gate_proj" => "q_b_proj",
        "kv_a_proj" => "kv_a_proj_with_mqa",
        "kv_a_proj.bias" => "kv_a_proj_bias",
        "kv_a_norm" => "kv_a_layernorm",
        "kv_b_proj" => "kv_b_proj",
        "o_proj" => "o_proj",
        "o_proj.bias" => "o_proj_bias",
        "gate_proj" => "gate_proj",
        "sinks" => "sinks",
        "k_rope_norm" => "rope_key_norm",
        "q_scale" => "query_scale_s",
        "q_scale.bias" => "query_scale_b",
        "rope_alpha" => "rope_freq_alpha",
        "idx.wq_b" => "index_wq_b",
        "idx.wk" => "index_wk",
        "idx.k_norm" => "index_k_norm",
        "idx.k_norm.bias" => "index_k_norm_bias",
        "idx.weights_proj" => "index_weights_proj",
        "idx.q_norm" => "index_q_norm",
        "idx.q_norm.bias" => "index_q_norm_bias",
        "idx.q_scale" => "index_query_scale_s",
        "idx.q_scale.bias" => "index_query_scale_b",
        "idx.kpool_ape" => "index_kpool_ape",
        "idx.kpool_gate" => "index_kpool_gate",
        other => panic!("a spec tensor key this test does not know: {other}"),
    }
}

/// One tiny family case: config.json, model.safetensors (aligned) and the golden
/// metadata's layer specs of its MLA layers.
struct Case {
    name: String,
    json: Vec<u8>,
    model: AlignedBytes,
    specs: Vec<(u32, Json)>,
}

fn family_cases() -> Vec<Case> {
    let dir = data_dir().join("families");
    let mut out = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/data/families")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    names.sort();
    for path in names {
        let golden = AlignedBytes::read(&path.join("golden.safetensors"));
        let st = SafeTensors::parse(golden.get()).unwrap();
        let header = Json::parse(st.header());
        let meta = header.at("__metadata__");
        let specs = meta
            .at("layers")
            .str()
            .split(',')
            .map(|l| {
                let i: u32 = l.parse().unwrap();
                (i, Json::parse(meta.at(&format!("layer.{i}.spec")).str()))
            })
            .collect();
        out.push(Case {
            name: path.file_name().unwrap().to_str().unwrap().to_owned(),
            json: std::fs::read(path.join("config.json")).unwrap(),
            model: AlignedBytes::read(&path.join("model.safetensors")),
            specs,
        });
    }
    assert_eq!(out.len(), 20, "the 20 golden family cases");
    out
}

fn f32_ptr(e: &Elems) -> *const f32 {
    match e {
        Elems::F32(s) => s.as_ptr(),
        _ => panic!("the tiny checkpoints are f32"),
    }
}

#[test]
fn every_tiny_checkpoint_layer_binds_with_its_family_names() {
    let mut layers = 0;
    let mut tensors = 0;
    for case in family_cases() {
        let st = SafeTensors::parse(case.model.get()).unwrap();
        for (i, spec) in &case.specs {
            let ctx = format!("{} layer {i}", case.name);
            let (cfg, info) = Config::from_hf_json(&case.json, *i, 64, 8)
                .unwrap_or_else(|e| panic!("{ctx}: {e}"));
            let w =
                bind_layer(case.model.get(), &cfg, &info).unwrap_or_else(|e| panic!("{ctx}: {e}"));
            // Same through the parsed file.
            let w2 = st.layer_weights(&cfg, &info).unwrap();
            let want: Vec<(&str, &str)> = spec
                .at("tensors")
                .obj()
                .iter()
                .map(|(k, v)| (field_of(k), v.str()))
                .collect();
            for ((field, got), (_, got2)) in w.named().iter().zip(w2.named()) {
                let ctx = format!("{ctx}: {field}");
                match want.iter().find(|(f, _)| f == field) {
                    Some((_, name)) => {
                        let t = got.unwrap_or_else(|| panic!("{ctx}: {name} not bound"));
                        // The very tensor of the file (zero-copy), with its shape.
                        let v = st.tensor(name).unwrap().expect(name);
                        let (rows, cols) = match v.dims() {
                            [n] => (1, *n),
                            [r, c] => (*r, *c),
                            d => panic!("{ctx}: rank {}", d.len()),
                        };
                        assert_eq!((t.rows, t.cols), (rows, cols), "{ctx}");
                        let Elems::F32(file) = v.elems().unwrap() else {
                            panic!("{ctx}: f32 expected")
                        };
                        assert_eq!(f32_ptr(&t.data), file.as_ptr(), "{ctx}: {name}");
                        assert_eq!(f32_ptr(&got2.unwrap().data), file.as_ptr(), "{ctx}");
                        tensors += 1;
                    }
                    None => assert!(got.is_none(), "{ctx}: bound but not in the spec"),
                }
            }
            w.check(&cfg).unwrap();
            layers += 1;
        }
    }
    eprintln!("bound {layers} MLA layers, {tensors} tensors");
    // 14 cases with 2 MLA layers, mistral_large4 5, five cases with 4.
    assert_eq!(layers, 53);
}

#[test]
fn renamed_or_missing_family_tensors_are_named() {
    let cases = family_cases();
    let case = |n: &str| cases.iter().find(|c| c.name == n).unwrap();
    // A file without one tensor of the layer: the family's full name, the shape,
    // and what the prefix holds.
    let drop = |c: &Case, gone: &str| -> (Status, String) {
        let st = SafeTensors::parse(c.model.get()).unwrap();
        let mut wr = Writer::new();
        for (name, v) in st.iter() {
            let name = name.as_str().expect("plain name").to_owned();
            if name != gone {
                wr = wr.tensor(&name, v.dtype.name(), v.dims(), v.data.to_vec());
            }
        }
        let buf = wr.build();
        let (cfg, info) = Config::from_hf_json(&c.json, 1, 64, 8).unwrap();
        let e = bind_layer(buf.get(), &cfg, &info).unwrap_err();
        (e.status(), e.message().to_owned())
    };
    let (s, m) = drop(
        case("bailing_hybrid"),
        "model.layers.1.attention.g_proj.weight",
    );
    assert_eq!(s, Status::WeightShape);
    assert!(
        m.starts_with(
            "model.layers.1.attention.g_proj.weight: missing, expected [4, 64]; the prefix holds"
        ),
        "{m}"
    );
    let (s, m) = drop(case("mistral_large4"), "lerope.alpha");
    assert_eq!(s, Status::WeightShape);
    assert!(m.starts_with("lerope.alpha: missing, expected ["), "{m}");
    let (s, m) = drop(
        case("hy_v4"),
        "model.layers.1.self_attn.learnable_sink_param",
    );
    assert_eq!(s, Status::WeightShape);
    assert!(
        m.starts_with("model.layers.1.self_attn.learnable_sink_param: missing, expected ["),
        "{m}"
    );
    // A DeepSeek name where the family has its own: bound by bind_weights (the
    // canonical names) it is missing under its canonical name.
    let c = case("mistral_large4");
    let (cfg, info) = Config::from_hf_json(&c.json, 1, 64, 8).unwrap();
    let e = mla_core::safetensors::bind_weights(c.model.get(), &info.prefix, &cfg).unwrap_err();
    assert_eq!(e.status(), Status::WeightShape);
    assert!(
        e.message()
            .starts_with("layers.1.attention.q_proj.weight: missing"),
        "{e}"
    );
    // Weights::check on a kv_shared layer: no kv_a of its own.
    let (cfg1, info1) = Config::from_hf_json(&c.json, 1, 64, 8).unwrap();
    let (cfg2, info2) = Config::from_hf_json(&c.json, 2, 64, 8).unwrap();
    assert!(cfg2.kv_shared && !cfg1.kv_shared);
    let w1 = bind_layer(c.model.get(), &cfg1, &info1).unwrap();
    let w2 = bind_layer(c.model.get(), &cfg2, &info2).unwrap();
    assert!(w2.kv_a_proj_with_mqa.is_none() && w2.kv_a_layernorm.is_none());
    let bad = mla_core::Weights {
        kv_a_layernorm: w1.kv_a_layernorm,
        ..w2
    };
    let e = bad.check(&cfg2).unwrap_err();
    assert_eq!(e.status(), Status::WeightShape);
    assert_eq!(
        e.message(),
        "kv_a_layernorm: must be absent (kv_shared: the layer reads another layer's cache)"
    );
    let e = w2.check(&cfg1).unwrap_err();
    assert_eq!(e.status(), Status::WeightShape);
    assert!(
        e.message().starts_with("kv_a_proj_with_mqa: missing"),
        "{e}"
    );
    // A linear-attention layer does not bind.
    let c = case("kimi_linear");
    let info = hf_layer_info(&c.json, 0).unwrap();
    let (cfg, _) = Config::from_hf_json(&c.json, 1, 64, 8).unwrap();
    let e = bind_layer(c.model.get(), &cfg, &info).unwrap_err();
    assert_eq!(e.status(), Status::Unsupported);
    assert_eq!(
        e.message(),
        "layer 0 of kimi_linear is linear_attention, not MLA"
    );
}

/// The C entry points agree with the core on every layer of every tiny case:
/// `mla_config_from_hf_json` gives the core's config (when the engine runs it)
/// or the core's status and message, and leaves `out` alone on error;
/// `mla_weights_from_checkpoint` binds the very tensors `bind_layer` binds.
#[test]
fn c_entry_points_agree_with_the_core() {
    use mla::ffi::*;
    use std::ffi::CStr;
    let last = || {
        // SAFETY: mla_last_error returns a NUL-terminated string.
        unsafe { CStr::from_ptr(mla_last_error(std::ptr::null())) }
            .to_str()
            .unwrap()
            .to_owned()
    };
    let (mut ok, mut refused) = (0, 0);
    for case in family_cases() {
        let n = hf_layer_info(&case.json, 0).unwrap().num_layers;
        for i in 0..n {
            let ctx = format!("{} layer {i}", case.name);
            let sentinel = mla_config::from_config(&Config::tutorial());
            let mut out = sentinel;
            // SAFETY: json holds json.len() bytes; out is a writable mla_config.
            let s = unsafe {
                mla_config_from_hf_json(
                    case.json.as_ptr().cast(),
                    case.json.len(),
                    i,
                    128,
                    8,
                    &mut out,
                )
            };
            let core = match Config::from_hf_json(&case.json, i, 128, 8) {
                Ok((c, info)) => c.check_supported().map(|_| (c, info)),
                Err(e) => Err(e),
            };
            match core {
                Ok((cfg, info)) => {
                    assert_eq!(s, MLA_OK, "{ctx}: {}", last());
                    assert_eq!(out, mla_config::from_config(&cfg), "{ctx}");
                    assert_eq!(out.to_config().unwrap(), cfg, "{ctx}");
                    let mut w = mla_weights::ABSENT;
                    // SAFETY: the buffers hold their lengths; out and w are valid.
                    let s = unsafe {
                        mla_weights_from_checkpoint(
                            case.model.get().as_ptr().cast(),
                            case.model.get().len(),
                            case.json.as_ptr().cast(),
                            case.json.len(),
                            i,
                            &out,
                            &mut w,
                        )
                    };
                    assert_eq!(s, MLA_OK, "{ctx}: {}", last());
                    let core_w = bind_layer(case.model.get(), &cfg, &info).unwrap();
                    let want = mla_weights::from_weights(&core_w).unwrap();
                    assert_eq!(format!("{w:?}"), format!("{want:?}"), "{ctx}");
                    ok += 1;
                }
                Err(e) => {
                    assert_eq!(s, e.status() as u32, "{ctx}");
                    assert_eq!(last(), e.message(), "{ctx}");
                    assert_eq!(out, sentinel, "{ctx}: out written on error");
                    refused += 1;
                }
            }
        }
    }
    eprintln!("C: {ok} layers configured, {refused} refused (not MLA, or not built yet)");
    if ok == 0 {
        eprintln!(
            "NOTE: no layer passes Config::check_supported in this build, so the success \
             path of the C entry points is covered by tests/c/status_test.c only"
        );
    }
    // 53 MLA layers and 6 linear-attention layers.
    assert_eq!(ok + refused, 59);
}

/// A small valid deepseek_v3 config.json.
const BASE: &str = r#"{"model_type": "deepseek_v3", "num_hidden_layers": 2,
    "hidden_size": 64, "num_attention_heads": 4, "q_lora_rank": 24,
    "kv_lora_rank": 16, "qk_nope_head_dim": 8, "qk_rope_head_dim": 8,
    "v_head_dim": 8, "rope_interleave": true, "rms_norm_eps": 1e-6,
    "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16,
                     "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0}}"#;

fn refused(json: &str, layer: u32) -> (Status, String) {
    let e = Config::from_hf_json(json.as_bytes(), layer, 64, 8).unwrap_err();
    (e.status(), e.message().to_owned())
}

#[test]
fn bad_config_json_gets_a_status_and_names_the_key() {
    let (cfg, info) = Config::from_hf_json(BASE.as_bytes(), 1, 64, 8).unwrap();
    assert_eq!((cfg.hidden_size, cfg.rope_type), (64, RopeType::Yarn));
    assert_eq!(info.prefix.as_str(), "model.layers.1.self_attn.");
    let edit = |f: &dyn Fn(&mut Json)| {
        let mut j = Json::parse(BASE);
        f(&mut j);
        j.dump()
    };
    let num = mla_testkit::json_tree::num;
    // A missing key takes the class default (DeepseekV3Config: hidden_size 7168).
    let (c, _) =
        Config::from_hf_json(edit(&|j| j.remove("hidden_size")).as_bytes(), 0, 64, 8).unwrap();
    assert_eq!(c.hidden_size, 7168);
    let cases: Vec<(String, Status, &str)> = vec![
        ("{\"model_type\": ".into(), Status::InvalidConfig, ""),
        ("[1, 2]".into(), Status::InvalidConfig, ""),
        (
            edit(&|j| *j.entry("model_type") = Json::Str("llama".into())),
            Status::Unsupported,
            "llama",
        ),
        (
            edit(&|j| j.remove("model_type")),
            Status::InvalidConfig,
            "model_type",
        ),
        (
            edit(&|j| *j.entry("hidden_size") = num(0.0)),
            Status::InvalidConfig,
            "hidden_size",
        ),
        (
            edit(&|j| *j.entry("hidden_size") = num(1e12)),
            Status::InvalidConfig,
            "hidden_size",
        ),
        (
            edit(&|j| *j.entry("hidden_size") = Json::Str("64".into())),
            Status::InvalidConfig,
            "hidden_size",
        ),
        (
            edit(&|j| *j.entry("qk_rope_head_dim") = num(7.0)),
            Status::InvalidConfig,
            "qk_rope_head_dim",
        ),
        (
            edit(&|j| *j.entry("num_attention_heads") = num(-4.0)),
            Status::InvalidConfig,
            "num_attention_heads",
        ),
        (
            edit(&|j| *j.entry("rope_scaling").entry("type") = Json::Str("warp".into())),
            Status::Unsupported,
            "warp",
        ),
        (
            edit(&|j| *j.entry("rope_scaling").entry("factor") = Json::Str("x".into())),
            Status::InvalidConfig,
            "factor",
        ),
        (
            edit(&|j| *j.entry("rope_scaling") = num(3.0)),
            Status::InvalidConfig,
            "rope_scaling",
        ),
    ];
    for (json, status, key) in &cases {
        let (s, m) = refused(json, 0);
        eprintln!("{s:?}: {m}");
        assert_eq!(s, *status, "{json}: {m}");
        assert!(m.contains(key), "{json}: the message names {key}: {m}");
        assert!(!m.is_empty());
    }
    // Layer out of range; a duplicate key.
    let (s, m) = refused(BASE, 2);
    assert_eq!(s, Status::InvalidConfig);
    assert!(m.starts_with("layer: 2 is out of range"), "{m}");
    let dup = BASE.replacen(
        "\"hidden_size\": 64,",
        "\"hidden_size\": 64, \"hidden_size\": 64,",
        1,
    );
    let (s, m) = refused(&dup, 0);
    assert_eq!(s, Status::InvalidConfig);
    assert!(m.contains("hidden_size"), "{m}");
}
