//! FP8 E4M3 weights with 128 x 128 block scales (DeepSeek-V3's checkpoints)
//! against a run on the same weights dequantized to f32 (DESIGN section 5:
//! within 1e-5): both attention paths, prefill, chunked and decode schedules,
//! a config whose dims are not multiples of 128 (edge blocks, heads of
//! kv_b_proj starting mid-block) and one at DeepSeek-V3's block alignment; a
//! round trip through a safetensors file and `bind_layer`; bad scales refused.
//!
//! `cargo test --release --test fp8_weights -- --nocapture` prints the errors.

use mla_core::dtype::Elems;
use mla_core::safetensors::{bind_layer, bind_weights};
use mla_core::{AttnMode, Config, DType, Status, Tensor, Weights};
use mla_testkit::*;

/// DESIGN's bound for FP8 weights against the dequantized run.
const TOL: f32 = 1e-5;
const P: &str = "model.layers.0.self_attn.";

/// d 200, H 3, r_q 150, r 140, n 40, p 16, v 36: no dimension a multiple of
/// 128, and head h's W_UK starts at row 76 h of kv_b_proj (mid-block).
fn odd_cfg(tokens: u32) -> Config {
    let mut c = Config::deepseek_v3();
    c.hidden_size = 200;
    c.num_heads = 3;
    c.q_lora_rank = 150;
    c.kv_lora_rank = 140;
    c.qk_nope_head_dim = 40;
    c.qk_rope_head_dim = 16;
    c.v_head_dim = 36;
    c.original_max_position = 64;
    configs::with_capacity(c, tokens, tokens)
}

fn input(cfg: &Config, t: usize, seed: u64) -> Vec<f32> {
    Rng::new(seed).vec(t * cfg.hidden_size as usize, 1.0)
}

/// Every schedule and path: FP8 equals the dequantized f32 run within 1e-5,
/// and differs from the unquantized weights by FP8's rounding (so the FP8
/// codes, not some f32 copy, were read). Returns the worst error.
fn check(cfg: &Config, seed: u64, t: usize, schedules: &[Schedule]) -> f32 {
    let w8 = RandomWeights::new(cfg, DType::F8E4M3, seed);
    let deq = w8.to_f32();
    let orig = RandomWeights::new(cfg, DType::F32, seed);
    assert_eq!(
        w8.weights().kv_b_proj.data.dtype(),
        DType::F8E4M3,
        "the weights under test are FP8"
    );
    let x = input(cfg, t, seed + 1);
    let mut worst = 0f32;
    for mode in [AttnMode::Naive, AttnMode::Absorb] {
        let want = run(cfg, &deq.weights(), &x, &[t], mode);
        let unq = run(cfg, &orig.weights(), &x, &[t], mode);
        let q = rel_err(&want, &unq);
        assert!(q > 1e-3, "{mode:?}: quantization changed nothing ({q:e})");
        for s in schedules {
            let got = run(cfg, &w8.weights(), &x, &s.chunks(t), mode);
            let e = rel_err(&got, &want);
            eprintln!(
                "fp8 weights {mode:?} {}: {e:.2e} vs dequantized (quantization itself: {q:.2e})",
                s.label()
            );
            assert!(e <= TOL, "{mode:?} {}: {e:e}", s.label());
            worst = worst.max(e);
        }
    }
    worst
}

#[test]
fn fp8_weights_match_dequantized_f32_on_odd_dims() {
    // 20 tokens: past the 16 rows where projections pack.
    let cfg = odd_cfg(20);
    check(&cfg, 7, 20, &Schedule::ALL);
}

#[test]
fn fp8_weights_match_with_per_head_rope_keys_and_q_proj() {
    let mut cfg = odd_cfg(6);
    cfg.q_lora_rank = 0;
    cfg.q_norm = false;
    cfg.rope_key = mla_core::RopeKey::PerHead;
    check(&cfg, 11, 6, &Schedule::ALL);
}

/// DeepSeek-V3's layer at its real block alignment (d 7168, r_q 1536, r 512,
/// n 128, p 64, v 128) with 4 of its 128 heads, to stay affordable.
#[test]
fn fp8_weights_match_at_deepseek_v3_alignment() {
    if cfg!(debug_assertions) {
        eprintln!("SKIPPED: DeepSeek-V3-sized FP8 check runs in --release only");
        return;
    }
    let mut cfg = configs::with_capacity(Config::deepseek_v3(), 17, 17);
    cfg.num_heads = 4;
    check(&cfg, 3, 17, &[Schedule::OneCall, Schedule::Decode]);
}

fn hf_json(cfg: &Config) -> String {
    format!(
        r#"{{"model_type": "deepseek_v3", "architectures": ["DeepseekV3ForCausalLM"],
  "hidden_size": {}, "num_attention_heads": {}, "num_key_value_heads": {},
  "q_lora_rank": {}, "kv_lora_rank": {}, "qk_nope_head_dim": {}, "qk_rope_head_dim": {},
  "v_head_dim": {}, "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "rope_interleave": true,
  "max_position_embeddings": 4096, "attention_bias": false, "num_hidden_layers": 1,
  "quantization_config": {{"activation_scheme": "dynamic", "fmt": "e4m3",
    "quant_method": "fp8", "weight_block_size": [128, 128]}}}}"#,
        cfg.hidden_size,
        cfg.num_heads,
        cfg.num_heads,
        cfg.q_lora_rank,
        cfg.kv_lora_rank,
        cfg.qk_nope_head_dim,
        cfg.qk_rope_head_dim,
        cfg.v_head_dim
    )
}

/// FP8 tensors and their `weight_scale_inv` written to a safetensors file,
/// bound zero-copy by `bind_layer`: the same outputs as the in-memory FP8
/// weights (bit for bit: the same codes and scales).
#[test]
fn safetensors_round_trip_binds_f8_and_scales() {
    let json = hf_json(&odd_cfg(8));
    let (cfg, info) = Config::from_hf_json(json.as_bytes(), 0, 8, 8).unwrap();
    assert_eq!(info.prefix.as_str(), P);
    let w8 = RandomWeights::new(&cfg, DType::F8E4M3, 5);
    let buf = w8.write(P, Writer::new()).build();
    let st = mla_core::safetensors::SafeTensors::parse(buf.get()).unwrap();
    let scales = st
        .tensor(&format!("{P}kv_b_proj.weight_scale_inv"))
        .unwrap();
    assert_eq!(scales.unwrap().dims(), [2, 2], "written with its scales");
    let w = bind_layer(buf.get(), &cfg, &info).unwrap();
    for (name, t) in w.named() {
        let Some(t) = t else { continue };
        let want = if t.rows > 1 {
            DType::F8E4M3
        } else {
            DType::F32
        };
        assert_eq!(t.data.dtype(), want, "{name}");
        if t.rows > 1 {
            let p = t.data.as_ptr() as usize;
            let base = buf.get().as_ptr() as usize;
            assert!(p >= base && p < base + buf.get().len(), "{name}: zero-copy");
        }
    }
    let x = input(&cfg, 8, 9);
    for mode in [AttnMode::Naive, AttnMode::Absorb] {
        let a = run(&cfg, &w, &x, &[8], mode);
        let b = run(&cfg, &w8.weights(), &x, &[8], mode);
        assert!(same_bits(&a, &b), "{mode:?}");
    }
}

/// A file whose kv_b_proj scales are edited: the bind fails with the status
/// and message for it, naming the tensor.
#[test]
fn bad_scales_are_refused_with_their_status() {
    let cfg = odd_cfg(4);
    let w8 = RandomWeights::new(&cfg, DType::F8E4M3, 5);
    let scale_name = format!("{P}kv_b_proj.weight_scale_inv");
    let edit = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut file = w8.write(P, Writer::new());
        let e = file.entry_mut("kv_b_proj.weight_scale_inv").unwrap();
        f(&mut e.data);
        file.build()
    };
    for (bits, status) in [
        (f32::NAN.to_bits(), Status::NonFinite),
        (f32::INFINITY.to_bits(), Status::NonFinite),
        (0f32.to_bits(), Status::WeightShape),
        ((-1f32).to_bits(), Status::WeightShape),
    ] {
        let buf = edit(&|d| d[4..8].copy_from_slice(&bits.to_le_bytes()));
        let e = bind_weights(buf.get(), P, &cfg).unwrap_err();
        assert_eq!(e.status(), status, "{}", e.message());
        assert_eq!(
            e.message(),
            format!(
                "{P}kv_b_proj.weight: f8 tensor: block scale 1 is {}",
                if status == Status::NonFinite {
                    "not finite"
                } else {
                    "not positive"
                }
            )
        );
    }
    // Missing: named, with the shape expected ([ceil(228/128), ceil(140/128)]).
    let buf = w8
        .write(P, Writer::new())
        .without("kv_b_proj.weight_scale_inv")
        .build();
    let e = bind_weights(buf.get(), P, &cfg).unwrap_err();
    assert_eq!(e.status(), Status::WeightShape);
    assert!(
        e.message()
            .starts_with(&format!("{scale_name}: missing, expected [2, 2]")),
        "{}",
        e.message()
    );
}

/// The fuzz seed with FP8 weights (fuzz/gen_corpus.py) binds, so the fuzzer
/// starts inside the FP8 paths.
#[test]
fn fuzz_seed_binds_fp8() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/safetensors/qlora_f8");
    let buf = AlignedBytes::read(&path);
    let w = bind_weights(buf.get(), PREFIX, &configs::tiny_qlora()).unwrap();
    for t in [w.kv_b_proj, w.o_proj, w.q_b_proj.unwrap()] {
        assert_eq!(t.data.dtype(), DType::F8E4M3);
    }
}

/// `forward_batch` over engines sharing FP8 weights equals separate calls;
/// engines whose FP8 tensors share codes but not scales do not share weights.
#[test]
fn forward_batch_with_fp8_weights() {
    use mla_core::Engine;
    let cfg = odd_cfg(4);
    let d = cfg.hidden_size as usize;
    let w8 = RandomWeights::new(&cfg, DType::F8E4M3, 21);
    let w = w8.weights();
    let mut arenas: Vec<Arena> = (0..4).map(|_| Arena::for_config(&cfg)).collect();
    let mut engines: Vec<Engine> = arenas
        .iter_mut()
        .map(|a| Engine::new(&cfg, &w, a.get()).unwrap())
        .collect();
    let x = Rng::new(3).vec(2 * d, 1.0);
    let (mut got, mut want) = (vec![0f32; 2 * d], vec![0f32; 2 * d]);
    let (batch, alone) = engines.split_at_mut(2);
    let mut refs: Vec<&mut Engine> = batch.iter_mut().collect();
    Engine::forward_batch(&mut refs, &x, &mut got).unwrap();
    for (i, e) in alone.iter_mut().enumerate() {
        e.forward(&x[i * d..(i + 1) * d], &mut want[i * d..(i + 1) * d])
            .unwrap();
    }
    assert!(rel_err(&got, &want) <= TOL, "{:e}", rel_err(&got, &want));

    // Same codes, other scales (a copy): not the same weights.
    let Elems::F8(f) = w.kv_b_proj.data else {
        panic!("fp8")
    };
    let scales2 = f.scales().to_vec();
    let kv_b2 = Tensor::f8(f.codes(), &scales2, w.kv_b_proj.rows, w.kv_b_proj.cols).unwrap();
    let w2 = Weights {
        kv_b_proj: kv_b2,
        ..w
    };
    let mut a2 = Arena::for_config(&cfg);
    let mut other = Engine::new(&cfg, &w2, a2.get()).unwrap();
    let mut refs: Vec<&mut Engine> = vec![&mut engines[0], &mut other];
    let e = Engine::forward_batch(&mut refs, &x, &mut got).unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument, "{}", e.message());
}

/// A sparse-attention layer (DeepSeek-V3.2's, from its family case) with every
/// matrix that may be FP8 quantized, the indexer's included: the same outputs
/// as with the dequantized matrices, prefill then decode, both paths.
#[test]
fn dsa_layer_with_fp8_indexer_matches_dequantized() {
    use mla_core::config::Dsa;
    use mla_core::weights::{F8_ALLOWED, WEIGHT_COUNT};
    use mla_core::Engine;
    use mla_testkit::family::FamilyCase;
    let c = FamilyCase::load("deepseek_v32");
    let (layer, (cfg, w)) = c
        .layers
        .iter()
        .map(|&l| (l, c.layer(l)))
        .find(|(_, (cfg, _))| cfg.dsa == Dsa::Full && !cfg.kv_shared)
        .expect("a layer with its own indexer");
    // Owned FP8 codes, scales and dequantized values of every allowed matrix.
    let named = w.named();
    type Quantized = (Vec<u8>, Vec<f32>, Vec<f32>);
    let quant: Vec<Option<Quantized>> = named
        .iter()
        .enumerate()
        .map(|(i, (_, t))| {
            let t = t.filter(|t| F8_ALLOWED[i] && t.rows > 1)?;
            let mut v = vec![0f32; t.data.len()];
            t.data.widen_into(&mut v);
            Some(convert::quantize_f8(&v, t.rows, t.cols))
        })
        .collect();
    assert!(
        quant[17].is_some() && quant[18].is_some(),
        "indexer wq_b, wk quantized"
    );
    let mut t8: [Option<Tensor>; WEIGHT_COUNT] = w.tensors();
    let mut t32: [Option<Tensor>; WEIGHT_COUNT] = w.tensors();
    for (i, q) in quant.iter().enumerate() {
        if let (Some((codes, scales, deq)), Some(t)) = (q, named[i].1) {
            t8[i] = Some(Tensor::f8(codes, scales, t.rows, t.cols).unwrap());
            t32[i] = Some(Tensor::f32(deq, t.rows, t.cols).unwrap());
        }
    }
    let (w8, w32) = (
        Weights::from_tensors(t8).unwrap(),
        Weights::from_tensors(t32).unwrap(),
    );
    let x = c.golden(layer, "inputs");
    let t = c.tokens;
    let mut decode = vec![c.prefill];
    decode.extend(std::iter::repeat_n(1, t - c.prefill));
    for chunks in [vec![t], decode] {
        for mode in [AttnMode::Naive, AttnMode::Absorb] {
            let out = |w: &Weights| {
                let mut a = Arena::for_config(&cfg);
                let mut e = Engine::new(&cfg, w, a.get()).unwrap();
                forward_chunks(&mut e, &x, &chunks, mode)
            };
            let (got, want) = (out(&w8), out(&w32));
            let e = rel_err(&got, &want);
            eprintln!("deepseek_v32 fp8 {mode:?} {} calls: {e:.2e}", chunks.len());
            assert!(e <= TOL, "{mode:?}: {e:e}");
        }
    }
}

/// FP8 weights on 2 and 3 threads: bitwise the run on one thread (every sum's
/// order depends on the shapes alone, not on how rows are split into tasks).
#[test]
fn fp8_weights_bitwise_independent_of_threads() {
    use mla_core::parallel::ThreadPool;
    let cfg = odd_cfg(20);
    let w8 = RandomWeights::new(&cfg, DType::F8E4M3, 13);
    let x = input(&cfg, 20, 14);
    let pools: Vec<ThreadPool> = [2, 3].into_iter().map(ThreadPool::new).collect();
    for mode in [AttnMode::Naive, AttnMode::Absorb] {
        for s in [Schedule::OneCall, Schedule::Decode] {
            let chunks = s.chunks(20);
            let one = Run::mode(mode).run(&cfg, &w8.weights(), &x, &chunks);
            for p in &pools {
                let got = Run::mode(mode).on(p).run(&cfg, &w8.weights(), &x, &chunks);
                assert!(same_bits(&got, &one), "{mode:?} {}", s.label());
            }
        }
    }
}
