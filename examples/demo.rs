//! The main job, in Rust: run the tutorial-config MLA model shipped in
//! tests/data end to end on the CPU and say what happened.
//!
//!     cargo run --release --example demo [-- path/to/model.safetensors]
//!
//! It binds the weights zero-copy from the safetensors file, prefills the first
//! half of the stored input hidden states in one call, decodes the rest one token
//! per step, and compares every output row with the PyTorch reference stored in
//! the same file. Exits non-zero if the error passes 1e-5.

use mla_core::safetensors::{bind_weights, config_from_metadata, SafeTensors};
use mla_core::{Config, Engine};
use mla_testkit::{rel_err, AlignedBytes, Arena};
use std::time::Instant;

fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/tutorial.safetensors"
        )
        .into()
    });
    let raw = std::fs::read(&path).unwrap_or_else(|e| fail(&format!("{path}: {e}")));
    // Copy into 8-byte aligned storage so f32 tensors can be borrowed in place.
    let file = AlignedBytes::new(&raw);
    let bytes = file.get();

    let st = SafeTensors::parse(bytes).unwrap_or_else(|e| fail(e.message()));
    let mut cfg =
        config_from_metadata(&st, &Config::tutorial()).unwrap_or_else(|e| fail(e.message()));
    let f32s = |name: &str| -> Vec<f32> {
        let t = st
            .tensor(name)
            .ok()
            .flatten()
            .unwrap_or_else(|| fail(&format!("no tensor {name}")));
        t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    let (x, want) = (f32s("inputs"), f32s("outputs"));
    let d = cfg.hidden_size as usize;
    let n = x.len() / d;
    cfg.max_seq_len = 256;
    cfg.max_tokens_per_call = 64;
    cfg.validate().unwrap_or_else(|e| fail(e.message()));
    let weights = bind_weights(bytes, "model.layers.0.self_attn.", &cfg)
        .unwrap_or_else(|e| fail(e.message()));

    // The engine's memory: one caller buffer, Engine::MEMORY_ALIGN (64) aligned.
    let need = Engine::memory_bytes(&cfg).unwrap_or_else(|e| fail(e.message()));
    let mut arena = Arena::new(need);
    let mut engine = Engine::new(&cfg, &weights, arena.get()).unwrap_or_else(|e| fail(e.message()));

    println!("model      : {path}");
    println!(
        "config     : d {} H {} r_q {} r {} n {} p {} v {} ({:?} rope key, {:?} layout)",
        cfg.hidden_size,
        cfg.num_heads,
        cfg.q_lora_rank,
        cfg.kv_lora_rank,
        cfg.qk_nope_head_dim,
        cfg.qk_rope_head_dim,
        cfg.v_head_dim,
        cfg.rope_key,
        cfg.rope_layout
    );
    println!(
        "engine mem : {need} bytes in one caller buffer (capacity {} tokens)",
        cfg.max_seq_len
    );

    let mut out = vec![0f32; x.len()];
    let prefill = n / 2;
    let t0 = Instant::now();
    engine
        .forward(&x[..prefill * d], &mut out[..prefill * d])
        .unwrap_or_else(|e| fail(e.message()));
    println!(
        "prefill    : {prefill} tokens in {:.3} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    for t in prefill..n {
        let t1 = Instant::now();
        engine
            .forward(&x[t * d..(t + 1) * d], &mut out[t * d..(t + 1) * d])
            .unwrap_or_else(|e| fail(e.message()));
        println!(
            "decode     : token {t:2} in {:.3} ms",
            t1.elapsed().as_secs_f64() * 1e3
        );
    }
    let err = rel_err(&out, &want);
    let latent = cfg.cache_bytes_per_token().unwrap_or(0);
    let full = cfg.full_kv_bytes_per_token().unwrap_or(0);
    println!("tokens     : {} processed, cache holds {}", n, engine.len());
    println!(
        "max error  : {err:.3e} (max-abs error / max-abs reference, PyTorch float64 reference)"
    );
    println!(
        "cache/token: {latent} bytes latent vs {full} bytes full K/V ({:.1}x smaller)",
        full as f64 / latent as f64
    );
    if err.is_nan() || err > 1e-5 {
        fail("error above 1e-5");
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("demo: {msg}");
    std::process::exit(1);
}
