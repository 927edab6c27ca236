//! Arbitrary bytes as a safetensors file: parse, lookups, iteration, metadata, config
//! from metadata, and weight binding with a few configs. Nothing may panic, statuses
//! must be the documented ones, every view must lie inside the input, and a file that
//! parses has distinct names (decoded) and distinct metadata keys.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mla_core::json::Scanner;
use mla_core::safetensors::{bind_weights, config_from_metadata, SafeTensors, TensorView};
use mla_core::{Config, Status};
use mla_testkit::configs::{tiny_qlora, tiny_qproj, tiny_tutorial};
use mla_testkit::{AlignedBytes, PREFIX};
use std::collections::HashSet;

const NAMES: [&str; 9] = [
    "inputs",
    "outputs",
    "model.layers.0.self_attn.q_a_proj.weight",
    "model.layers.0.self_attn.kv_b_proj.weight",
    "model.layers.0.self_attn.kv_b_proj.weight_scale_inv",
    "model.layers.0.self_attn.o_proj.bias",
    "a.b",
    "",
    "\u{e9}\u{1f600}",
];

const KEYS: [&str; 5] = ["variant", "hidden_size", "rope_layout", "q_norm", ""];

fn check_view(bytes: &[u8], v: &TensorView) {
    let bits = v.numel() as u128 * v.dtype.bits() as u128;
    assert_eq!(bits, v.data.len() as u128 * 8, "view size");
    assert!(v.rank <= mla_core::safetensors::MAX_RANK);
    let r = bytes.as_ptr_range();
    let d = v.data.as_ptr_range();
    assert!(
        r.start <= d.start && d.end <= r.end,
        "view outside the file"
    );
    if let Err(e) = v.elems() {
        assert!(matches!(
            e.status(),
            Status::WeightDtype | Status::Misaligned
        ));
    }
}

fn bind(bytes: &[u8], st: &SafeTensors, prefix: &str, cfg: &Config) {
    let a = st.weights(prefix, cfg);
    let b = bind_weights(bytes, prefix, cfg);
    match (&a, &b) {
        (Ok(w), Ok(_)) => {
            w.check(cfg).expect("bound weights pass check");
            // Every bound tensor widens (FP8: dequantized with its block
            // scales, which binding found finite and positive).
            for (_, t) in w.named() {
                let Some(t) = t else { continue };
                let mut v = vec![0f32; t.data.len()];
                t.data.widen_into(&mut v);
                if let (mla_core::DType::F8E4M3, Some(last)) =
                    (t.data.dtype(), t.rows.checked_sub(1))
                {
                    let mut row = vec![0f32; t.cols];
                    t.row(last).expect("last row").widen_into(&mut row);
                    // Bits, not values: NaN codes (0x7f, 0xff) dequantize
                    // to NaN in both.
                    let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&row),
                        bits(&v[v.len() - t.cols..]),
                        "a row slice keeps its scales"
                    );
                }
            }
        }
        (Err(x), Err(y)) => {
            assert_eq!(x, y, "parse-then-bind and bind_weights disagree");
            assert!(
                matches!(
                    x.status(),
                    Status::InvalidConfig
                        | Status::InvalidArgument
                        | Status::WeightShape
                        | Status::WeightDtype
                        | Status::Misaligned
                        | Status::NonFinite
                ),
                "unexpected status {:?}",
                x.status()
            );
        }
        _ => panic!("parse-then-bind and bind_weights disagree"),
    }
}

fn run(bytes: &[u8]) {
    let st = match SafeTensors::parse(bytes) {
        Ok(st) => st,
        Err(e) => {
            assert_eq!(e.status(), Status::InvalidArgument);
            assert!(bind_weights(bytes, PREFIX, &tiny_qlora()).is_err());
            return;
        }
    };
    assert!(st.data().len() <= bytes.len());
    for name in NAMES {
        // Names are unique once parsed: a lookup cannot fail.
        if let Some(v) = st.tensor(name).expect("lookup after parse") {
            check_view(bytes, &v);
        }
    }
    // Every tensor, once, with distinct (decoded) names; the views as lookups give them.
    let mut names = HashSet::new();
    let mut count = 0;
    for (name, v) in st.iter() {
        check_view(bytes, &v);
        let decoded: String = name.chars().collect();
        let again = st.tensor(&decoded).unwrap().expect("listed name found");
        assert_eq!(again.data.as_ptr(), v.data.as_ptr());
        assert!(names.insert(decoded), "a name twice in a parsed file");
        count += 1;
    }
    assert_eq!(count, st.len());
    // The header's own keys and metadata keys are distinct too (read with the scanner).
    let mut sc = Scanner::new(st.header());
    let top = sc.object().expect("header object");
    let mut keys = HashSet::new();
    while let Some(k) = sc.next_key(&top).expect("parsed header") {
        assert!(keys.insert(k.chars().collect::<String>()), "a key twice");
        if k.eq_str("__metadata__") {
            let m = sc.object().expect("metadata object");
            let mut mk = HashSet::new();
            while let Some(k) = sc.next_key(&m).expect("parsed metadata") {
                let key: String = k.chars().collect();
                let v = sc.string().expect("string value");
                assert_eq!(st.metadata(&key), v.as_str());
                assert!(mk.insert(key), "a metadata key twice");
            }
        }
    }
    sc.finish().expect("parsed header");
    for key in KEYS {
        let _ = st.metadata(key);
    }
    for cfg in [tiny_qlora(), tiny_qproj(), tiny_tutorial()] {
        bind(bytes, &st, PREFIX, &cfg);
        match config_from_metadata(&st, &cfg) {
            Ok(c) => {
                if c.validate().is_ok() {
                    bind(bytes, &st, PREFIX, &c);
                }
            }
            Err(e) => assert_eq!(e.status(), Status::InvalidArgument),
        }
    }
    bind(bytes, &st, "", &tiny_qlora());
}

fuzz_target!(|data: &[u8]| {
    // Aligned, so that alignment depends on the file's offsets, then shifted by one.
    run(AlignedBytes::new(data).get());
    run(AlignedBytes::shifted(data, 1).get());
});
