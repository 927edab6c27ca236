//! The engine with DSA layers against the golden cases of tests/data/families
//! whose layers need nothing beyond docs/design.md section 2 and the indexer (deepseek_v32,
//! glm_moe_dsa's full layers); configs built by hand from the golden metadata.

use crate::attention::tests::aligned;
use crate::config::{AttnMode, Config, Dsa, IndexRope, RopeLayout};
use crate::dsa::IndexerWeights;
use crate::engine::Engine;
use crate::parallel::ParallelFor;
use crate::safetensors::SafeTensors;
use crate::weights::{Tensor, Weights};
use crate::DType;
use std::collections::HashMap;
use std::path::PathBuf;

/// f32 tensors of a safetensors file by name: (values, shape).
fn load(path: PathBuf) -> HashMap<String, (Vec<f32>, Vec<usize>)> {
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let st = SafeTensors::parse(&bytes).unwrap();
    st.iter()
        .filter(|(_, t)| t.dtype.name() == "F32")
        .map(|(name, t)| {
            let v = t
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name.as_str().unwrap().to_owned(), (v, t.dims().to_vec()))
        })
        .collect()
}

struct Case {
    model: HashMap<String, (Vec<f32>, Vec<usize>)>,
    golden: HashMap<String, (Vec<f32>, Vec<usize>)>,
    layout: RopeLayout,
}

const T: usize = 64;
const P: usize = 40;
const D: usize = 64;

impl Case {
    fn load(case: &str, layout: RopeLayout) -> Case {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/data/families")
            .join(case);
        Case {
            model: load(dir.join("model.safetensors")),
            golden: load(dir.join("golden.safetensors")),
            layout,
        }
    }

    /// The layer's config (golden metadata: d 64, H 4, r_q 24, r 16, n p v 8,
    /// interleaved default RoPE, latent eps 1e-6; indexer Hi 8, Di 16, K 16,
    /// k_norm eps 1e-6, RoPE on the first p dims).
    fn config(&self, dsa: Dsa) -> Config {
        Config {
            hidden_size: 64,
            num_heads: 4,
            q_lora_rank: 24,
            kv_lora_rank: 16,
            qk_nope_head_dim: 8,
            qk_rope_head_dim: 8,
            v_head_dim: 8,
            max_seq_len: T as u32,
            max_tokens_per_call: T as u32,
            q_norm: true,
            rms_norm_eps: 1e-6,
            dsa,
            index_n_heads: 8,
            index_head_dim: 16,
            index_topk: 16,
            index_rope: IndexRope::First,
            index_rope_layout: self.layout,
            ..Config::plain()
        }
    }

    fn t(&self, layer: usize, name: &str) -> Tensor<'_> {
        let key = format!("model.layers.{layer}.self_attn.{name}");
        let (v, shape) = self.model.get(&key).unwrap_or_else(|| panic!("no {key}"));
        let (rows, cols) = match shape[..] {
            [r, c] => (r, c),
            [c] => (1, c),
            _ => panic!("{key}"),
        };
        Tensor::f32(v, rows, cols).unwrap()
    }

    fn weights(&self, layer: usize) -> (Weights<'_>, IndexerWeights<'_>) {
        (self.dense_weights(layer), self.indexer(layer))
    }

    fn dense_weights(&self, layer: usize) -> Weights<'_> {
        Weights {
            q_a_proj: Some(self.t(layer, "q_a_proj.weight")),
            q_a_layernorm: Some(self.t(layer, "q_a_layernorm.weight")),
            q_b_proj: Some(self.t(layer, "q_b_proj.weight")),
            kv_a_proj_with_mqa: Some(self.t(layer, "kv_a_proj_with_mqa.weight")),
            kv_a_layernorm: Some(self.t(layer, "kv_a_layernorm.weight")),
            ..Weights::new(
                self.t(layer, "kv_b_proj.weight"),
                self.t(layer, "o_proj.weight"),
            )
        }
    }

    /// The layer's weights with its indexer tensors inside (`Engine::new`).
    fn full_weights(&self, layer: usize) -> Weights<'_> {
        let iw = self.indexer(layer);
        Weights {
            index_wq_b: Some(iw.wq_b),
            index_wk: Some(iw.wk),
            index_k_norm: Some(iw.k_norm),
            index_k_norm_bias: Some(iw.k_norm_bias),
            index_weights_proj: Some(iw.weights_proj),
            ..self.dense_weights(layer)
        }
    }

    fn indexer(&self, layer: usize) -> IndexerWeights<'_> {
        IndexerWeights {
            wq_b: self.t(layer, "indexer.wq_b.weight"),
            wk: self.t(layer, "indexer.wk.weight"),
            k_norm: self.t(layer, "indexer.k_norm.weight"),
            k_norm_bias: self.t(layer, "indexer.k_norm.bias"),
            weights_proj: self.t(layer, "indexer.weights_proj.weight"),
            q_norm: None,
            query_scale: None,
        }
    }

    fn golden(&self, name: &str) -> &[f32] {
        &self
            .golden
            .get(name)
            .unwrap_or_else(|| panic!("no {name}"))
            .0
    }

    /// The layer over `chunks` of its inputs, on `par` when given.
    fn run(
        &self,
        layer: usize,
        cfg: &Config,
        chunks: &[usize],
        mode: AttnMode,
        par: Option<&dyn ParallelFor>,
    ) -> Vec<f32> {
        let (w, iw) = self.weights(layer);
        let mut buf = Vec::new();
        let mem = aligned(&mut buf, Engine::memory_bytes(cfg).unwrap());
        let iw = (cfg.dsa == Dsa::Full).then_some(iw);
        let mut e = Engine::with_indexer(cfg, &w, iw, mem).unwrap();
        e.set_parallel(par);
        if par.is_some() {
            e.set_parallel_min_work(0);
        }
        let x = self.golden(&format!("layer.{layer}.inputs"));
        let mut out = vec![0f32; T * D];
        let mut at = 0;
        for &n in chunks {
            e.forward_mode(
                &x[at * D..(at + n) * D],
                &mut out[at * D..(at + n) * D],
                mode,
            )
            .unwrap();
            at += n;
        }
        assert_eq!(e.len(), T);
        out
    }
}

fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    let m = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f32, |e, (x, y)| e.max((x - y).abs())) / m
}

fn decode_chunks() -> Vec<usize> {
    let mut c = vec![P];
    c.extend(std::iter::repeat_n(1, T - P));
    c
}

const CASES: [(&str, RopeLayout, [usize; 2]); 2] = [
    ("deepseek_v32", RopeLayout::Half, [0, 1]),
    ("glm_moe_dsa", RopeLayout::Interleaved, [0, 3]),
];

#[test]
fn dsa_layers_match_the_golden_prefill_and_decode_in_both_paths() {
    for (case, layout, layers) in CASES {
        let c = Case::load(case, layout);
        let cfg = c.config(Dsa::Full);
        for layer in layers {
            let prefill = c.golden(&format!("layer.{layer}.prefill"));
            let decode = c.golden(&format!("layer.{layer}.decode"));
            for mode in [AttnMode::Naive, AttnMode::Absorb, AttnMode::Auto] {
                let got = c.run(layer, &cfg, &[T], mode, None);
                let e = rel_err(&got, prefill);
                eprintln!("{case} layer {layer} prefill {mode:?}: {e:.2e}");
                assert!(e <= 1e-5, "{case} layer {layer} prefill {mode:?}: {e}");
                let got = c.run(layer, &cfg, &decode_chunks(), mode, None);
                let e = rel_err(&got, decode);
                eprintln!("{case} layer {layer} decode {mode:?}: {e:.2e}");
                assert!(e <= 1e-5, "{case} layer {layer} decode {mode:?}: {e}");
            }
            // Dense attention is far from the sparse reference.
            let dense = c.run(layer, &c.config(Dsa::None), &[T], AttnMode::Naive, None);
            let e = rel_err(&dense, prefill);
            eprintln!("{case} layer {layer} dense vs sparse reference: {e:.2e}");
            assert!(
                e > 1e-3,
                "{case} layer {layer}: dense is within {e} of sparse"
            );
        }
    }
}

/// Every task on its own scoped thread, last index first.
struct Threads;

impl ParallelFor for Threads {
    fn run(&self, n_tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        std::thread::scope(|s| {
            for i in (0..n_tasks).rev() {
                s.spawn(move || task(i));
            }
        });
    }
}

#[test]
fn dsa_chunking_and_threads_do_not_change_the_result() {
    let c = Case::load("deepseek_v32", RopeLayout::Half);
    let cfg = c.config(Dsa::Full);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for mode in [AttnMode::Naive, AttnMode::Absorb] {
        let one = c.run(0, &cfg, &[T], mode, None);
        let threaded = c.run(0, &cfg, &[T], mode, Some(&Threads));
        assert_eq!(
            bits(&one),
            bits(&threaded),
            "{mode:?}: threads changed bits"
        );
        let chunked = c.run(0, &cfg, &[5, 11, 1, 30, 17], mode, None);
        assert!(rel_err(&chunked, &one) <= 1e-6, "{mode:?}: chunked differs");
        let dec = c.run(0, &cfg, &decode_chunks(), mode, None);
        let dec_threaded = c.run(0, &cfg, &decode_chunks(), mode, Some(&Threads));
        assert_eq!(
            bits(&dec),
            bits(&dec_threaded),
            "{mode:?}: threads changed bits"
        );
    }
}

#[test]
fn dsa_truncate_keeps_the_index_cache_in_step() {
    let c = Case::load("deepseek_v32", RopeLayout::Half);
    let cfg = c.config(Dsa::Full);
    let (w, iw) = c.weights(1);
    let mut buf = Vec::new();
    let mem = aligned(&mut buf, Engine::memory_bytes(&cfg).unwrap());
    let mut e = Engine::with_indexer(&cfg, &w, Some(iw), mem).unwrap();
    let x = c.golden("layer.1.inputs");
    let want = c.golden("layer.1.prefill");
    let mut out = vec![0f32; T * D];
    // 50 tokens, back to 30, then the rest: as one call.
    e.forward(&x[..50 * D], &mut out[..50 * D]).unwrap();
    e.truncate(30).unwrap();
    e.forward(&x[30 * D..], &mut out[30 * D..]).unwrap();
    assert!(rel_err(&out, want) <= 1e-5);
    // Reset, then again.
    e.reset();
    e.forward(x, &mut out).unwrap();
    assert!(rel_err(&out, want) <= 1e-5);
    // A bf16 index cache changes little here.
    let mut bcfg = cfg;
    bcfg.index_cache_dtype = DType::BF16;
    let got = c.run(1, &bcfg, &[T], AttnMode::Absorb, None);
    eprintln!("bf16 index cache: {:.2e}", rel_err(&got, want));
}

#[test]
fn shared_topk_layers_match_the_golden_and_bad_pairs_change_nothing() {
    // glm_moe_dsa: layers 1 and 2 attend over layer 0's selection.
    let c = Case::load("glm_moe_dsa", RopeLayout::Interleaved);
    let (full, shared) = (c.config(Dsa::Full), c.config(Dsa::Shared));
    let (w0, iw0) = c.weights(0);
    let w1 = c.dense_weights(1);
    let w2 = c.dense_weights(2);
    for (schedule, chunks) in [("prefill", vec![T]), ("decode", decode_chunks())] {
        for mode in [AttnMode::Naive, AttnMode::Absorb] {
            let (mut b0, mut b1, mut b2) = (Vec::new(), Vec::new(), Vec::new());
            let mut e0 = Engine::with_indexer(
                &full,
                &w0,
                Some(iw0),
                aligned(&mut b0, Engine::memory_bytes(&full).unwrap()),
            )
            .unwrap();
            let bytes = Engine::memory_bytes(&shared).unwrap();
            let mut e1 = Engine::new(&shared, &w1, aligned(&mut b1, bytes)).unwrap();
            let mut e2 = Engine::new(&shared, &w2, aligned(&mut b2, bytes)).unwrap();
            let (x0, x1, x2) = (
                c.golden("layer.0.inputs"),
                c.golden("layer.1.inputs"),
                c.golden("layer.2.inputs"),
            );
            let mut outs = vec![vec![0f32; T * D]; 3];
            let mut at = 0;
            for &n in &chunks {
                let r = at * D..(at + n) * D;
                // Before the producer ran these positions: a clear error.
                if at > 0 {
                    let err = e1
                        .forward_shared_topk(&e0, &x1[r.clone()], &mut outs[1][r.clone()], mode)
                        .unwrap_err();
                    assert_eq!(err.status(), crate::Status::InvalidArgument);
                    assert_eq!(e1.len(), at);
                }
                e0.forward_mode(&x0[r.clone()], &mut outs[0][r.clone()], mode)
                    .unwrap();
                e1.forward_shared_topk(&e0, &x1[r.clone()], &mut outs[1][r.clone()], mode)
                    .unwrap();
                // Layer 2 takes it from layer 1 (shared layers pass theirs on).
                e2.forward_shared_topk(&e1, &x2[r.clone()], &mut outs[2][r.clone()], mode)
                    .unwrap();
                at += n;
            }
            for (layer, got) in outs.iter().enumerate() {
                let want = c.golden(&format!("layer.{layer}.{schedule}"));
                let e = rel_err(got, want);
                eprintln!("glm_moe_dsa layer {layer} {schedule} {mode:?}: {e:.2e}");
                assert!(e <= 1e-5, "layer {layer} {schedule} {mode:?}: {e}");
            }
        }
    }
    // Bad pairs: a shared layer alone, a mismatched top-k, a dense producer.
    let mut b1 = Vec::new();
    let bytes = Engine::memory_bytes(&shared).unwrap();
    let mut e1 = Engine::new(&shared, &w1, aligned(&mut b1, bytes)).unwrap();
    let x1 = c.golden("layer.1.inputs");
    let mut out = vec![0f32; 4 * D];
    let err = e1.forward(&x1[..4 * D], &mut out).unwrap_err();
    assert_eq!(err.status(), crate::Status::InvalidArgument);
    let mut other = full;
    other.index_topk = 8;
    let mut b0 = Vec::new();
    let e0 = Engine::with_indexer(
        &other,
        &w0,
        Some(iw0),
        aligned(&mut b0, Engine::memory_bytes(&other).unwrap()),
    )
    .unwrap();
    let err = e1
        .forward_shared_topk(&e0, &x1[..4 * D], &mut out, AttnMode::Auto)
        .unwrap_err();
    assert_eq!(err.status(), crate::Status::InvalidArgument);
    assert!(err.message().contains("index_topk"), "{}", err.message());
    let dense = c.config(Dsa::None);
    let mut bd = Vec::new();
    let ed = Engine::new(
        &dense,
        &w0,
        aligned(&mut bd, Engine::memory_bytes(&dense).unwrap()),
    )
    .unwrap();
    assert!(e1.check_share_topk(&ed).is_err());
    assert_eq!(e1.len(), 0);
}

#[test]
fn appended_indexed_rows_continue_like_the_prefill_that_made_them() {
    let c = Case::load("deepseek_v32", RopeLayout::Half);
    let cfg = c.config(Dsa::Full);
    let (w, iw) = c.weights(0);
    let x = c.golden("layer.0.inputs");
    let bytes = Engine::memory_bytes(&cfg).unwrap();
    let (mut ba, mut bb) = (Vec::new(), Vec::new());
    let mut a = Engine::with_indexer(&cfg, &w, Some(iw), aligned(&mut ba, bytes)).unwrap();
    let mut b = Engine::with_indexer(&cfg, &w, Some(iw), aligned(&mut bb, bytes)).unwrap();
    let mut out = vec![0f32; T * D];
    a.forward(&x[..P * D], &mut out[..P * D]).unwrap();
    let mut widen = vec![0f32; P * a.dims().cache_row];
    let rows = a.cache().rows(0, P, &mut widen).to_vec();
    let mut kw = vec![0f32; P * 16];
    let keys = a.index_cache().unwrap().rows(0, P, &mut kw).to_vec();
    // Wrong key count, a dense append: errors, nothing changes.
    assert!(b.append_indexed_rows(&rows, &keys[16..]).is_err());
    assert!(b.append_cache_rows(&rows).is_err());
    assert_eq!(b.len(), 0);
    b.append_indexed_rows(&rows, &keys).unwrap();
    let mut out_b = vec![0f32; T * D];
    for t in P..T {
        let r = t * D..(t + 1) * D;
        a.forward(&x[r.clone()], &mut out[r.clone()]).unwrap();
        b.forward(&x[r.clone()], &mut out_b[r.clone()]).unwrap();
    }
    assert_eq!(&out[P * D..], &out_b[P * D..]);
}

#[test]
fn long_context_selection_and_output_do_not_depend_on_threads() {
    // 2500 cached rows: the indexer splits its keys over several tasks and the
    // absorbed path gathers 16 rows out of thousands.
    let c = Case::load("deepseek_v32", RopeLayout::Half);
    let mut cfg = c.config(Dsa::Full);
    cfg.max_seq_len = 2600;
    let (w, iw) = c.weights(0);
    let n = 2500;
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    };
    let rows: Vec<f32> = (0..n * 24).map(|_| 1.7 * rnd()).collect();
    let keys: Vec<f32> = (0..n * 16).map(|_| 1.7 * rnd()).collect();
    let x = c.golden("layer.0.inputs");
    let run = |mode: AttnMode, par: Option<&dyn ParallelFor>| {
        let mut buf = Vec::new();
        let mem = aligned(&mut buf, Engine::memory_bytes(&cfg).unwrap());
        let mut e = Engine::with_indexer(&cfg, &w, Some(iw), mem).unwrap();
        e.set_parallel(par);
        e.set_parallel_min_work(0);
        e.append_indexed_rows(&rows, &keys).unwrap();
        let mut out = vec![0f32; 8 * D];
        e.forward_mode(&x[..4 * D], &mut out[..4 * D], mode)
            .unwrap();
        for t in 4..8 {
            e.forward_mode(&x[t * D..(t + 1) * D], &mut out[t * D..(t + 1) * D], mode)
                .unwrap();
        }
        out
    };
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for mode in [AttnMode::Naive, AttnMode::Absorb] {
        let one = run(mode, None);
        let many = run(mode, Some(&Threads));
        assert_eq!(bits(&one), bits(&many), "{mode:?}");
    }
    let (naive, absorbed) = (run(AttnMode::Naive, None), run(AttnMode::Absorb, None));
    assert!(rel_err(&absorbed, &naive) < 1e-5);
}

#[test]
fn indexer_tensors_of_the_wrong_shape_are_refused() {
    let c = Case::load("deepseek_v32", RopeLayout::Half);
    let cfg = c.config(Dsa::Full);
    let (w, iw) = c.weights(0);
    let bytes = Engine::memory_bytes(&cfg).unwrap();
    let mut buf = Vec::new();
    let mut bad = iw;
    bad.wk = iw.weights_proj;
    let e = Engine::with_indexer(&cfg, &w, Some(bad), aligned(&mut buf, bytes));
    let err = e.err().unwrap();
    assert_eq!(err.status(), crate::Status::WeightShape);
    assert_eq!(err.message(), "index_wk: expected 16 x 64, got 8 x 64");
    let mut extra = iw;
    extra.query_scale = Some((iw.k_norm, iw.k_norm));
    let e = Engine::with_indexer(&cfg, &w, Some(extra), aligned(&mut buf, bytes));
    assert_eq!(e.err().unwrap().status(), crate::Status::WeightShape);
    // Exactly memory_bytes fits; one 64-byte block less does not.
    assert!(Engine::with_indexer(&cfg, &w, Some(iw), aligned(&mut buf, bytes)).is_ok());
    let e = Engine::with_indexer(&cfg, &w, Some(iw), aligned(&mut buf, bytes - 64));
    assert_eq!(e.err().unwrap().status(), crate::Status::BufferTooSmall);
}

#[test]
fn engine_new_takes_the_indexer_from_the_weights() {
    let c = Case::load("deepseek_v32", RopeLayout::Half);
    let cfg = c.config(Dsa::Full);
    let w = c.full_weights(1);
    let mut buf = Vec::new();
    let mem = aligned(&mut buf, Engine::memory_bytes(&cfg).unwrap());
    let mut e = Engine::new(&cfg, &w, mem).unwrap();
    let mut out = vec![0f32; T * D];
    e.forward(c.golden("layer.1.inputs"), &mut out).unwrap();
    assert!(rel_err(&out, c.golden("layer.1.prefill")) <= 1e-5);
    // Without them: a precise error.
    let bare = c.dense_weights(1);
    let mem = aligned(&mut buf, Engine::memory_bytes(&cfg).unwrap());
    let err = Engine::new(&cfg, &bare, mem).err().unwrap();
    assert_eq!(err.status(), crate::Status::WeightShape);
    assert!(err.message().contains("index_"), "{}", err.message());
}
