//! Arbitrary bytes as a safetensors file: parse, lookups, metadata, config from
//! metadata, and weight binding with a few configs. Nothing may panic, statuses must
//! be the documented ones, and every view must lie inside the input.
#![no_main]

#[path = "common.rs"]

use common::{cfg_qlora, cfg_qproj, cfg_tutorial, Aligned, PREFIX};
use libfuzzer_sys::fuzz_target;
use mla_core::safetensors::{bind_weights, config_from_metadata, SafeTensors, TensorView};
use mla_core::{Config, Status};

const NAMES: [&str; 8] = [
    "inputs",
    "outputs",
    "model.layers.0.self_attn.q_a_proj.weight",
    "model.layers.0.self_attn.kv_b_proj.weight",
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
            assert!(bind_weights(bytes, PREFIX, &cfg_qlora()).is_err());
            return;
        }
    };
    assert!(st.data().len() <= bytes.len());
    for name in NAMES {
        match st.tensor(name) {
            Ok(Some(v)) => check_view(bytes, &v),
            Ok(None) => {}
            Err(e) => assert_eq!(e.status(), Status::InvalidArgument),
        }
    }
    for key in KEYS {
        let _ = st.metadata(key);
    }
    for cfg in [cfg_qlora(), cfg_qproj(), cfg_tutorial()] {
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
    bind(bytes, &st, "", &cfg_qlora());
}

fuzz_target!(|data: &[u8]| {
    // Aligned, so that alignment depends on the file's offsets, then shifted by one.
    run(Aligned::new(data, 0).get());
    run(Aligned::new(data, 1).get());
});
