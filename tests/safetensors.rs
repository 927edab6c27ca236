//! The safetensors reader on the golden files in tests/data (written by the Python
//! safetensors library): every file parses, its metadata gives a valid config, and
//! its weights bind zero-copy with the shapes that config needs.

use mla_core::dtype::Elems;
use mla_core::safetensors::{bind_weights, config_from_metadata, FileDType, SafeTensors};
use mla_core::{AttnMode, Config, DType, RopeKey, RopeLayout, Status};
use mla_testkit::configs::{tiny_qlora, tiny_qproj, tiny_tutorial};
use mla_testkit::*;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The file at `path`, raw (the golden files come from tools/reference/make_golden.py).
fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn f32_at(st: &SafeTensors, name: &str, i: usize) -> f32 {
    let t = st.tensor(name).unwrap().unwrap();
    assert_eq!(t.dtype, FileDType::F32, "{name}");
    f32::from_le_bytes(t.data[4 * i..4 * i + 4].try_into().unwrap())
}

#[test]
fn tutorial_file_binds_with_its_metadata_config() {
    let buf = AlignedBytes::read(&data_dir().join("tutorial.safetensors"));
    let st = SafeTensors::parse(buf.get()).unwrap();
    assert_eq!(st.metadata("variant"), Some("tutorial"));
    assert_eq!(st.metadata("n_tokens"), Some("16"));

    let cfg = config_from_metadata(&st, &Config::tutorial()).unwrap();
    cfg.validate().unwrap();
    // The metadata repeats the tutorial preset except the YaRN L0 (unused: factor 1).
    let mut want = Config::tutorial();
    want.original_max_position = 128;
    assert_eq!(cfg, want);
    assert_eq!(cfg.rope_layout, RopeLayout::Half);
    assert_eq!(cfg.rope_key, RopeKey::PerHead);

    let w = bind_weights(buf.get(), PREFIX, &cfg).unwrap();
    assert!(w.q_proj.is_none() && w.q_a_layernorm.is_none());
    let qa = w.q_a_proj.unwrap();
    let qb = w.q_b_proj.unwrap();
    assert_eq!((qa.rows, qa.cols), (192, 256));
    assert_eq!((qb.rows, qb.cols), (8 * (32 + 64), 192));
    let (kva, kvn) = (w.kv_a_proj_with_mqa.unwrap(), w.kv_a_layernorm.unwrap());
    assert_eq!((kva.rows, kva.cols), (128 + 8 * 64, 256));
    assert_eq!((kvn.rows, kvn.cols), (1, 128));
    assert_eq!((w.kv_b_proj.rows, w.kv_b_proj.cols), (8 * 64, 128));
    assert_eq!((w.o_proj.rows, w.o_proj.cols), (256, 256));
    assert!(w.q_a_proj_bias.is_none() && w.kv_a_proj_bias.is_none());
    let ob = w.o_proj_bias.unwrap();
    assert_eq!((ob.rows, ob.cols), (1, 256));

    // Values as the Python reader sees them, and zero-copy (pointers into the file).
    let Elems::F32(b) = ob.data else {
        panic!("o_proj.bias should be f32")
    };
    assert_eq!(b[0], 0.013_061_985);
    assert_eq!(b[255], 0.086_410_15);
    let Elems::F32(kvb) = w.kv_b_proj.data else {
        panic!("kv_b_proj should be f32")
    };
    assert_eq!(kvb[128 + 2], -0.031_548_534);
    assert!(buf
        .get()
        .as_ptr_range()
        .contains(&kvb.as_ptr().cast::<u8>()));
    assert_eq!(f32_at(&st, "inputs", 0), 0.302_701_68);
}

#[test]
fn every_golden_file_binds() {
    let mut names: Vec<PathBuf> = std::fs::read_dir(data_dir())
        .expect("tests/data")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    names.sort();
    assert!(
        names.len() >= 2,
        "expected the golden files in tests/data, found {names:?}"
    );
    for path in &names {
        let what = path.display().to_string();
        let raw = read(path);
        let buf = AlignedBytes::new(&raw);
        let st = SafeTensors::parse(buf.get()).unwrap_or_else(|e| panic!("{what}: {e:?}"));
        let base = Config::tutorial();
        let cfg = config_from_metadata(&st, &base).unwrap_or_else(|e| panic!("{what}: {e:?}"));
        let n_tokens: usize = st.metadata("n_tokens").unwrap().parse().unwrap();
        let mut cfg = cfg;
        cfg.max_seq_len = cfg.max_seq_len.max(n_tokens as u32);
        cfg.validate().unwrap_or_else(|e| panic!("{what}: {e:?}"));
        let dm = cfg.dims().unwrap();
        let w = bind_weights(buf.get(), PREFIX, &cfg).unwrap_or_else(|e| panic!("{what}: {e:?}"));
        assert_eq!(w.check(&cfg).unwrap(), dm, "{what}");
        // Biases follow the file's attention_bias flag (DeepSeek: q_a, kv_a and o;
        // the tutorial: o only).
        let bias = st.metadata("attention_bias") == Some("1");
        assert_eq!(w.o_proj_bias.is_some(), bias, "{what}");
        if st.metadata("variant") == Some("deepseek") {
            assert_eq!(w.kv_a_proj_bias.is_some(), bias, "{what}");
            assert_eq!(w.q_a_proj_bias.is_some(), bias && dm.rq > 0, "{what}");
        }
        for name in ["inputs", "outputs"] {
            let t = st.tensor(name).unwrap().unwrap();
            assert_eq!(t.dims(), &[n_tokens, dm.d], "{what} {name}");
        }
        let sc = st.tensor("softmax_scale").unwrap().unwrap();
        assert_eq!((sc.rank, sc.numel()), (1, 1), "{what}");

        // The same file one byte off 8-byte alignment: the first tensor bound
        // reports Misaligned with its full name.
        let off = AlignedBytes::shifted(&raw, 1);
        let e = bind_weights(off.get(), PREFIX, &cfg).unwrap_err();
        assert_eq!(e.status(), Status::Misaligned, "{what}");
        assert!(
            e.message().starts_with(PREFIX) && e.message().contains("not aligned to 4"),
            "{what}: {}",
            e.message()
        );

        // Truncated copies fail cleanly.
        let hlen = 8 + u64::from_le_bytes(raw[..8].try_into().unwrap()) as usize;
        for cut in [0, 7, 8, hlen / 2, hlen - 1, hlen, hlen + 1, raw.len() - 1] {
            let t = AlignedBytes::new(&raw[..cut]);
            let e = bind_weights(t.get(), PREFIX, &cfg).unwrap_err();
            assert_eq!(e.status(), Status::InvalidArgument, "{what} cut at {cut}");
        }
    }
}

#[test]
fn fuzz_seed_files_parse_and_bind() {
    // The seed corpus of the `safetensors` fuzz target (fuzz/gen_corpus.py) must stay
    // valid, so that fuzzing starts from files that bind.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/safetensors");
    for (name, tensors) in [
        ("qlora", 8),
        ("qproj_bias_reversed", 8),
        ("tutorial_small", 7),
    ] {
        let raw = read(&dir.join(name));
        let buf = AlignedBytes::new(&raw);
        let st = SafeTensors::parse(buf.get()).unwrap();
        assert_eq!(st.len(), tensors, "{name}");
        let cfg = config_from_metadata(&st, &Config::tutorial()).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.hidden_size, 8, "{name}");
        bind_weights(buf.get(), PREFIX, &cfg).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }
    let raw = read(&dir.join("escapes_and_dtypes"));
    let buf = AlignedBytes::new(&raw);
    let st = SafeTensors::parse(buf.get()).unwrap();
    let t = st.tensor("\u{e9}\u{1f600}").unwrap().unwrap();
    assert_eq!((t.dtype, t.dims()), (FileDType::I8, &[2usize, 2][..]));
    assert_eq!(st.tensor("scalar").unwrap().unwrap().numel(), 1);
    assert_eq!(st.metadata("k"), None);
    assert_eq!(st.metadata("hidden_size"), Some("8"));
}

#[test]
fn golden_file_under_a_wrong_prefix_says_where_the_layer_is() {
    let g = Golden::load("tutorial");
    let cfg = g.config(16);
    let e = bind_weights(g.bytes.get(), "model.layers.0.", &cfg).unwrap_err();
    assert_eq!(e.status(), Status::WeightShape);
    assert_eq!(
        e.message(),
        "model.layers.0.q_a_proj.weight: missing, expected [192, 256]; layer tensors are under \
         'model.layers.0.self_attn.'; the prefix holds 7: self_attn.kv_a_layernorm.weight (+6 more)"
    );
    let e = bind_weights(g.bytes.get(), "model.layers.1.self_attn.", &cfg).unwrap_err();
    assert!(
        e.message().ends_with(
            "; no tensor under this prefix; layer tensors are under 'model.layers.0.self_attn.'"
        ),
        "{}",
        e.message()
    );
}

/// Random weights of every small config and dtype, written with the testkit writer
/// (in the library's order, and reversed), bind back to the same values.
#[test]
fn written_weights_bind_back_bit_exact() {
    for (cfg, label) in [
        (tiny_qlora(), "qlora"),
        (tiny_qproj(), "qproj"),
        (tiny_tutorial(), "per-head"),
    ] {
        for dt in [DType::F32, DType::F16, DType::BF16] {
            let rw = RandomWeights::with_biases(&cfg, dt, 7);
            for reversed in [false, true] {
                let mut file = rw.write(PREFIX, Writer::new().meta("variant", "test"));
                if reversed {
                    file = file.reversed();
                }
                let buf = file.build();
                let w = bind_weights(&buf, PREFIX, &cfg)
                    .unwrap_or_else(|e| panic!("{label} {dt:?}: {}", e.message()));
                for ((name, a), (_, b)) in
                    named_tensors(&w).iter().zip(named_tensors(&rw.weights()))
                {
                    let (a, b) = match (a, b) {
                        (Some(a), Some(b)) => (a, b),
                        (None, None) => continue,
                        _ => panic!("{label} {dt:?} {name}: present in one only"),
                    };
                    assert_eq!((a.rows, a.cols), (b.rows, b.cols), "{name}");
                    assert_eq!(a.data.dtype(), dt, "{name}");
                    let (mut fa, mut fb) = (vec![0f32; a.data.len()], vec![0f32; b.data.len()]);
                    a.data.widen_into(&mut fa);
                    b.data.widen_into(&mut fb);
                    assert!(same_bits(&fa, &fb), "{label} {dt:?} {name}");
                }
                // And they run: same outputs as the weights they were written from.
                let x = Rng::new(3).vec(4 * cfg.hidden_size as usize, 1.0);
                let got = run(&cfg, &w, &x, &[4], AttnMode::Auto);
                let want = run(&cfg, &rw.weights(), &x, &[4], AttnMode::Auto);
                assert!(same_bits(&got, &want), "{label} {dt:?}");
            }
        }
    }
}

/// The out-of-order check used to compare every tensor with every other by
/// re-scanning the header (1.15 s in release, 35 s in debug, for this file); it now
/// sorts the offsets in one pass. The bound below is far above the new cost and far
/// below the old one in either profile.
#[test]
#[cfg_attr(miri, ignore)]
fn a_1024_tensor_header_out_of_offset_order_parses_fast() {
    let n = mla_core::safetensors::MAX_UNORDERED_TENSORS;
    let mut w = Writer::new().reversed();
    for i in 0..n {
        w = w.tensor(&format!("model.layers.{i}.w"), "F32", &[4], vec![0; 16]);
    }
    let buf = w.build();
    // The fastest of 5 parses (the machine may be busy).
    let mut took = std::time::Duration::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let st = SafeTensors::parse(&buf).unwrap();
        took = took.min(t.elapsed());
        assert_eq!(st.len(), n);
    }
    // Names in descending order too (one run per name): the duplicate check's
    // blocked path runs as well.
    println!(
        "parse of a {n}-tensor header, offsets and names reversed ({} bytes): {:.3} ms",
        buf.len() - n * 16,
        took.as_secs_f64() * 1e3
    );
    assert!(took.as_secs_f64() < 2.0, "took {took:?}");
    // One name repeated, far apart: found.
    let w = w.tensor("model.layers.3.w", "F32", &[4], vec![0; 16]);
    let e = SafeTensors::parse(&w.build()).unwrap_err();
    assert_eq!(
        e.message(),
        "safetensors: tensor name model.layers.3.w appears twice in the header"
    );
}
