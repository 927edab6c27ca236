//! DeepSeek Sparse Attention: the lightning indexer of mla_core::dsa against the
//! golden DSA cases of tests/data/families (docs/families.md 2.8). Every query
//! row's top-k selection must equal the reference's (`layer.L.selected`); the
//! bf16 and FP8 index caches are measured against the f32 one.

use mla_core::config::{Dsa, IndexRope, RopeLayout};
use mla_core::dsa::{self, IndexCache, IndexDType, IndexShape, SCORE_BLOCK};
use mla_core::dtype::Elems;
use mla_core::kernels::isa;
use mla_core::safetensors::SafeTensors;
use mla_testkit::st_file::AlignedBytes;
use std::path::PathBuf;

fn case_dir(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/families")
        .join(case)
}

/// The text after `"key":` (trimmed) inside `json`.
fn after<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\":");
    let i = json.find(&pat)?;
    Some(json[i + pat.len()..].trim_start())
}

/// The flat object `"key": {...}` inside `json` (no nested braces).
fn object<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let s = after(json, key)?;
    if !s.starts_with('{') {
        return None;
    }
    Some(&s[..=s.find('}')?])
}

fn num(json: &str, key: &str) -> Option<f64> {
    let s = after(json, key)?;
    let end = s.find([',', '}']).unwrap_or(s.len());
    s[..end].trim().parse().ok()
}

fn string(json: &str, key: &str) -> Option<String> {
    let s = after(json, key)?;
    let s = s.strip_prefix('"')?;
    Some(s[..s.find('"')?].to_owned())
}

struct File {
    bytes: AlignedBytes,
}

impl File {
    fn read(path: PathBuf) -> File {
        File {
            bytes: AlignedBytes::read(&path),
        }
    }
    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::parse(self.bytes.get()).unwrap()
    }
    /// A metadata string, unescaped (the specs are JSON inside a JSON string).
    fn meta(&self, key: &str) -> String {
        let header = self.st().header();
        let pat = format!("\"{key}\":");
        let at = header.find(&pat).unwrap_or_else(|| panic!("no {key}")) + pat.len();
        let rest = header[at..]
            .trim_start()
            .strip_prefix('"')
            .expect("a string");
        let mut out = String::new();
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => return out,
                '\\' => out.push(chars.next().expect("escape")),
                c => out.push(c),
            }
        }
        panic!("unterminated {key}")
    }
    fn f32s(&self, name: &str) -> Vec<f32> {
        let st = self.st();
        let t = st
            .tensor(name)
            .unwrap()
            .unwrap_or_else(|| panic!("no {name}"));
        t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }
    fn i32s(&self, name: &str) -> Vec<i32> {
        let st = self.st();
        let t = st
            .tensor(name)
            .unwrap()
            .unwrap_or_else(|| panic!("no {name}"));
        t.data()
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }
}

/// `y[t] = W x[t]` for `W` `[rows][cols]`, in f64 sums rounded to f32.
fn linear(w: &[f32], x: &[f32], cols: usize) -> Vec<f32> {
    let rows = w.len() / cols;
    x.chunks_exact(cols)
        .flat_map(|xt| {
            w.chunks_exact(cols)
                .map(|wr| {
                    wr.iter()
                        .zip(xt)
                        .map(|(&a, &b)| a as f64 * b as f64)
                        .sum::<f64>() as f32
                })
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>()
        .into_iter()
        .take(rows * (x.len() / cols))
        .collect()
}

fn rms(x: &mut [f32], w: &[f32], eps: f32) {
    let ms = x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / x.len() as f64;
    let inv = 1.0 / (ms + eps as f64).sqrt();
    for (v, &g) in x.iter_mut().zip(w) {
        *v = (*v as f64 * inv * g as f64) as f32;
    }
}

/// One full-indexer layer of a golden case, run through mla_core::dsa.
struct IndexerLayer {
    shape: IndexShape,
    topk: usize,
    t: usize,
    /// `[T][Hi*Di]` finished queries, `[T][Hi]` scaled weights, `[T][Di]` keys.
    q: Vec<f32>,
    w: Vec<f32>,
    k: Vec<f32>,
    /// `[T][K']` reference selection (-1 padded).
    selected: Vec<i32>,
    /// glm5_next: pool size (0: none), always-select-tail, `[T][Di]` gate
    /// logits `index_kpool_gate x`, `[P][Di]` ape.
    kpool: usize,
    tail: bool,
    gates: Vec<f32>,
    ape: Vec<f32>,
}

impl IndexerLayer {
    fn load(case: &str, layer: usize) -> IndexerLayer {
        let golden = File::read(case_dir(case).join("golden.safetensors"));
        let model = File::read(case_dir(case).join("model.safetensors"));
        let spec = golden.meta(&format!("layer.{layer}.spec"));
        let dsa_spec = object(&spec, "dsa").expect("dsa spec");
        let tensors = object(&spec, "tensors").expect("tensors");
        // Top-level keys: the spec without its dsa object (which repeats some).
        let spec = spec.replace(dsa_spec, "{}");
        let tensor =
            |role: &str| model.f32s(&string(tensors, role).unwrap_or_else(|| panic!("{role}")));
        let d = num(&spec, "hidden_size").unwrap() as usize;
        let p = num(&spec, "qk_rope_head_dim").unwrap() as usize;
        let (hi, di, topk) = (
            num(dsa_spec, "index_n_heads").unwrap() as usize,
            num(dsa_spec, "index_head_dim").unwrap() as usize,
            num(dsa_spec, "index_topk").unwrap() as usize,
        );
        let rope = match string(dsa_spec, "rope_part").as_deref() {
            Some("first") => IndexRope::First,
            Some("last") => IndexRope::Last,
            _ => IndexRope::None,
        };
        let layout = match string(dsa_spec, "rope_layout").as_deref() {
            Some("interleaved") => RopeLayout::Interleaved,
            _ => RopeLayout::Half,
        };
        let shape = IndexShape {
            heads: hi,
            dim: di,
            rope_dims: p,
            rope,
            layout,
        };
        assert_eq!(
            num(dsa_spec, "score_scale").unwrap() as f32,
            shape.score_scale()
        );
        assert_eq!(
            num(dsa_spec, "weights_scale").unwrap() as f32,
            shape.weights_scale()
        );
        let x = golden.f32s(&format!("layer.{layer}.inputs"));
        let t = x.len() / d;
        // Indexer query input.
        let u = match string(dsa_spec, "q_input").as_deref() {
            Some("hidden_layernorm") => {
                let (g, b) = (tensor("idx.q_norm"), tensor("idx.q_norm.bias"));
                let eps = num(dsa_spec, "q_norm_eps").unwrap() as f32;
                let mut u = x.clone();
                u.chunks_exact_mut(d)
                    .for_each(|r| dsa::layer_norm(r, Elems::F32(&g), Elems::F32(&b), eps));
                u
            }
            Some(q) => {
                let rq = num(&spec, "q_lora_rank").unwrap() as usize;
                let mut u = linear(&tensor("q_a_proj"), &x, d);
                let g = tensor("q_a_norm");
                let eps = num(&spec, "q_norm_eps").unwrap() as f32;
                let scale = if q == "q_latent_scaled" {
                    num(&spec, "latent_scale_q").unwrap() as f32
                } else {
                    1.0
                };
                for r in u.chunks_exact_mut(rq) {
                    rms(r, &g, eps);
                    r.iter_mut().for_each(|v| *v *= scale);
                }
                u
            }
            None => panic!("q_input"),
        };
        let cols = u.len() / t;
        let mut q = linear(&tensor("idx.wq_b"), &u, cols);
        let mut w = linear(&tensor("idx.weights_proj"), &x, d);
        let mut k = linear(&tensor("idx.wk"), &x, d);
        // RoPE tables as transformers computes them (f32 angles), with LeRoPE.
        let half = p / 2;
        let mut inv = if rope != IndexRope::None {
            golden.f32s(&format!("layer.{layer}.rope_inv_freq"))
        } else {
            vec![]
        };
        if let Some(alpha) = string(tensors, "rope_alpha") {
            let a = model.f32s(&alpha);
            inv.iter_mut().zip(&a).for_each(|(f, a)| *f *= a.exp());
        }
        let rope_spec = object(&spec, "rope");
        let att = rope_spec
            .and_then(|r| num(r, "attention_scaling"))
            .unwrap_or(1.0) as f32;
        let log_scale = (string(dsa_spec, "query_scale").as_deref()
            == Some("learned_log_position"))
        .then(|| (tensor("idx.q_scale"), tensor("idx.q_scale.bias")));
        let (kg, kb) = (tensor("idx.k_norm"), tensor("idx.k_norm.bias"));
        let keps = num(dsa_spec, "k_norm_eps").unwrap() as f32;
        for pos in 0..t {
            let (mut cos, mut sin) = (vec![0f32; half], vec![0f32; half]);
            for i in 0..inv.len().min(half) {
                let a = pos as f32 * inv[i];
                cos[i] = a.cos() * att;
                sin[i] = a.sin() * att;
            }
            dsa::finish_key(
                &shape,
                &mut k[pos * di..(pos + 1) * di],
                Elems::F32(&kg),
                Elems::F32(&kb),
                keps,
                &cos,
                &sin,
            );
            dsa::finish_query(
                &shape,
                &mut q[pos * hi * di..(pos + 1) * hi * di],
                &mut w[pos * hi..(pos + 1) * hi],
                pos,
                log_scale
                    .as_ref()
                    .map(|(s, b)| (Elems::F32(s), Elems::F32(b))),
                &cos,
                &sin,
            );
        }
        let kpool = num(dsa_spec, "kpool").unwrap_or(0.0) as usize;
        let (gates, ape) = if kpool > 0 {
            (
                linear(&tensor("idx.kpool_gate"), &x, d),
                tensor("idx.kpool_ape"),
            )
        } else {
            (vec![], vec![])
        };
        IndexerLayer {
            shape,
            topk,
            t,
            q,
            w,
            k,
            selected: golden.i32s(&format!("layer.{layer}.selected")),
            kpool,
            tail: after(dsa_spec, "always_select_tail").is_some_and(|v| v.starts_with("true")),
            gates,
            ape,
        }
    }

    /// Selections `[T]` (ascending positions) with the keys in a `dtype` cache.
    fn select(&self, dtype: IndexDType) -> (Vec<Vec<u32>>, Vec<Vec<f32>>) {
        let (hi, di) = (self.shape.heads, self.shape.dim);
        let mut mem = vec![0u64; (dsa::row_bytes(dtype, di).unwrap() * self.t).div_ceil(8)];
        let mut cache =
            IndexCache::new(bytemuck::cast_slice_mut(&mut mem), dtype, di, self.t).unwrap();
        let (mut widen, mut dots) = (vec![0f32; SCORE_BLOCK * di], vec![0f32; SCORE_BLOCK * hi]);
        let (mut sels, mut all_scores) = (vec![], vec![]);
        let mut q_t = vec![0f32; hi * di];
        for pos in 0..self.t {
            assert!(cache.write(pos, &self.k[pos * di..(pos + 1) * di]));
            assert!(dsa::transpose_query(
                &self.shape,
                &self.q[pos * hi * di..(pos + 1) * hi * di],
                &mut q_t
            ));
            let mut scores = vec![0f32; pos + 1];
            assert!(dsa::score_cache(
                isa(),
                &self.shape,
                &cache,
                pos + 1,
                &q_t,
                &self.w[pos * hi..(pos + 1) * hi],
                &mut widen,
                &mut dots,
                &mut scores,
            ));
            let mut out = vec![0u32; self.topk];
            let n = dsa::select_topk(&scores, self.topk, &mut out);
            out.truncate(n);
            sels.push(out);
            all_scores.push(scores);
        }
        (sels, all_scores)
    }

    fn reference(&self, pos: usize) -> Vec<u32> {
        let width = self.selected.len() / self.t;
        self.selected[pos * width..(pos + 1) * width]
            .iter()
            .filter(|&&v| v >= 0)
            .map(|&v| v as u32)
            .collect()
    }
}

/// The full-indexer DSA layers of the golden cases (glm5_next's pooled indexer
/// is not built: see docs/dsa.md).
const CASES: &[(&str, &[usize])] = &[
    ("deepseek_v32", &[0, 1]),
    ("glm_moe_dsa", &[0, 3]),
    ("axk2", &[0, 1]),
    ("hy_v4", &[0, 1]),
    ("hy_v4_vl", &[0, 1]),
    ("dots3_note", &[0, 2]),
    ("mistral_large4", &[0, 1, 3, 4]),
];

#[test]
fn indexer_selection_equals_the_reference_on_every_query_row() {
    for &(case, layers) in CASES {
        for &layer in layers {
            let l = IndexerLayer::load(case, layer);
            let (sels, _) = l.select(IndexDType::F32);
            for (pos, sel) in sels.iter().enumerate() {
                assert_eq!(sel, &l.reference(pos), "{case} layer {layer} query {pos}");
            }
            // The top-k really is sparse for the later queries.
            assert_eq!(sels[l.t - 1].len(), l.topk);
            assert!(l.t > 2 * l.topk);
        }
    }
}

#[test]
fn quantised_index_caches_against_f32() {
    // Selection overlap (|sel_q ∩ sel_f32| / K over the rows with pos >= K) and
    // the largest score error relative to the row's largest |score|.
    for dtype in [IndexDType::BF16, IndexDType::F8E4M3] {
        let (mut common, mut total, mut worst) = (0usize, 0usize, 0f32);
        for &(case, layers) in CASES {
            for &layer in layers {
                let l = IndexerLayer::load(case, layer);
                let (exact, exact_scores) = l.select(IndexDType::F32);
                let (got, got_scores) = l.select(dtype);
                for pos in l.topk..l.t {
                    common += got[pos].iter().filter(|t| exact[pos].contains(t)).count();
                    total += l.topk;
                    let m = exact_scores[pos].iter().fold(0f32, |m, v| m.max(v.abs()));
                    for (a, b) in got_scores[pos].iter().zip(&exact_scores[pos]) {
                        worst = worst.max((a - b).abs() / m);
                    }
                }
            }
        }
        let overlap = common as f64 / total as f64;
        eprintln!(
            "index cache {dtype:?}: top-k overlap with f32 {:.4} ({common}/{total}), max score error {worst:.2e} of the row max",
            overlap
        );
        match dtype {
            IndexDType::BF16 => {
                assert!(overlap > 0.97 && worst < 1e-2, "{overlap} {worst}")
            }
            _ => assert!(overlap > 0.9 && worst < 0.1, "{overlap} {worst}"),
        }
    }
}

#[test]
fn pooled_selection_equals_the_reference_on_every_query_row() {
    // glm5_next layer 1: pools of 4 keys, the best 16 / 4 complete pools plus
    // the query's own incomplete pool.
    let l = IndexerLayer::load("glm5_next", 1);
    let (hi, di, p) = (l.shape.heads, l.shape.dim, l.kpool);
    assert_eq!((p, l.tail), (4, true));
    let npool = l.t / p;
    let mut pool_keys = vec![0f32; npool * di];
    for j in 0..npool {
        assert!(dsa::pool_key(
            &l.k[j * p * di..(j + 1) * p * di],
            &l.gates[j * p * di..(j + 1) * p * di],
            Elems::F32(&l.ape),
            p,
            &mut pool_keys[j * di..(j + 1) * di],
        ));
    }
    let mut q_t = vec![0f32; hi * di];
    let mut dots = vec![0f32; npool * hi];
    let mut scores = vec![0f32; npool];
    let (mut chosen, mut out) = (vec![0u32; l.topk / p], vec![0u32; l.topk + p - 1]);
    for pos in 0..l.t {
        assert!(dsa::transpose_query(
            &l.shape,
            &l.q[pos * hi * di..(pos + 1) * hi * di],
            &mut q_t
        ));
        let visible = (pos + 1) / p;
        assert!(dsa::score_block(
            isa(),
            &l.shape,
            &q_t,
            &l.w[pos * hi..(pos + 1) * hi],
            &pool_keys,
            visible,
            &mut dots,
            &mut scores,
        ));
        let n = dsa::pooled_select(
            &scores[..visible],
            l.topk,
            p,
            pos,
            l.tail,
            &mut chosen,
            &mut out,
        );
        assert_eq!(&out[..n], &l.reference(pos)[..], "glm5_next query {pos}");
    }
}

/// Every DSA family case end to end: config.json through `Config::from_hf_json`,
/// the checkpoint through `bind_layer`, `Engine::new`, every layer through
/// `Engine::forward_with` with the producers the case names (shared top-k,
/// shared KV cache, or both), both schedules, both paths, within 1e-5 of the
/// golden outputs. A case with a layer the engine does not run yet (a mechanism
/// still `Unsupported`) is reported SKIPPED with the reason.
#[test]
fn dsa_families_end_to_end() {
    use mla_core::engine::Sharing;
    use mla_core::{AttnMode, Engine};
    use mla_testkit::family::FamilyCase;
    use mla_testkit::{rel_err, Arena};
    let mut passed = vec![];
    for case in [
        "deepseek_v32",
        "glm_moe_dsa",
        "axk2",
        "hy_v4",
        "hy_v4_vl",
        "dots3_note",
        "mistral_large4",
        "glm5_next",
    ] {
        let c = FamilyCase::load(case);
        let layers: Vec<_> = c.layers.iter().map(|&l| (l, c.layer(l))).collect();
        // Layer I's producer J of `kind` ("kind:J->I", kind "kv" or "topk").
        let source = |kind: &str, i: u32| {
            c.producers.iter().find_map(|p| {
                let (j, to) = p.strip_prefix(kind)?.strip_prefix(':')?.split_once("->")?;
                (to.parse::<u32>().ok()? == i).then(|| j.parse::<u32>().unwrap())
            })
        };
        let mut arenas: Vec<Arena> = layers
            .iter()
            .map(|(_, (cfg, _))| Arena::new(Engine::memory_bytes(cfg).unwrap_or(64)))
            .collect();
        let unsupported = layers
            .iter()
            .zip(arenas.iter_mut())
            .find_map(|((l, (cfg, w)), a)| {
                Engine::new(cfg, w, a.get())
                    .err()
                    .map(|e| format!("layer {l}: {}", e.message()))
            });
        if let Some(why) = unsupported {
            eprintln!("SKIPPED: {case} end to end: {why}");
            continue;
        }
        let t = c.tokens;
        let mut decode = vec![c.prefill];
        decode.extend(std::iter::repeat_n(1, t - c.prefill));
        let mut worst = 0f32;
        for (schedule, chunks) in [("prefill", vec![t]), ("decode", decode)] {
            for mode in [AttnMode::Naive, AttnMode::Absorb] {
                let mut engines: Vec<Engine> = layers
                    .iter()
                    .zip(arenas.iter_mut())
                    .map(|((_, (cfg, w)), a)| Engine::new(cfg, w, a.get()).unwrap())
                    .collect();
                let inputs: Vec<Vec<f32>> =
                    layers.iter().map(|(l, _)| c.golden(*l, "inputs")).collect();
                let mut outs: Vec<Vec<f32>> = inputs.iter().map(|x| vec![0f32; x.len()]).collect();
                let mut at = 0;
                for &n in &chunks {
                    for (k, (l, (cfg, _))) in layers.iter().enumerate() {
                        let d = cfg.hidden_size as usize;
                        let r = at * d..(at + n) * d;
                        let (x, out) = (&inputs[k][r.clone()], &mut outs[k][r]);
                        let index_of = |j: u32| layers.iter().position(|(m, _)| *m == j).unwrap();
                        let (head, tail) = engines.split_at_mut(k);
                        let share = Sharing {
                            cache: source("kv", *l).map(|j| &head[index_of(j)]),
                            topk: source("topk", *l).map(|j| &head[index_of(j)]),
                        };
                        assert_eq!(
                            (share.cache.is_some(), share.topk.is_some()),
                            (cfg.kv_shared, cfg.dsa == Dsa::Shared),
                            "{case} layer {l}: producers against the config"
                        );
                        tail[0]
                            .forward_with(&share, x, out, mode)
                            .unwrap_or_else(|e| panic!("{case} layer {l}: {e}"));
                    }
                    at += n;
                }
                for (k, (l, _)) in layers.iter().enumerate() {
                    let e = rel_err(&outs[k], &c.golden(*l, schedule));
                    assert!(e <= 1e-5, "{case} layer {l} {schedule} {mode:?}: {e}");
                    worst = worst.max(e);
                }
            }
        }
        eprintln!("{case}: largest relative error {worst:.2e} (layers, schedules, paths)");
        passed.push(case);
    }
    eprintln!("DSA families end to end within 1e-5: {passed:?}");
}

/// mistral_large4's layer 2 reads layer 1's cache and layer 1's top-k at once.
/// Every wrong way to call it (a producer missing, one too many, one with
/// other dims or another `index_topk`, producers that have not run this
/// call's positions) is `InvalidArgument` naming the problem, and changes
/// nothing: afterwards the right call gives the same output, bit for bit, as
/// on an engine that never saw the bad calls.
#[test]
fn a_layer_reading_two_producers_refuses_bad_producers_and_changes_nothing() {
    use mla_core::engine::Sharing;
    use mla_core::status::Status;
    use mla_core::{AttnMode, Engine};
    use mla_testkit::family::FamilyCase;
    use mla_testkit::Arena;
    let c = FamilyCase::load("mistral_large4");
    let (cfg0, w0) = c.layer(0);
    let (cfg1, w1) = c.layer(1);
    let (cfg2, w2) = c.layer(2);
    let (cfg3, w3) = c.layer(3);
    assert!(cfg2.kv_shared && cfg2.dsa == Dsa::Shared);
    let d = cfg1.hidden_size as usize;
    let x1 = c.golden(1, "inputs");
    let x2 = c.golden(2, "inputs");
    let mut a1 = Arena::for_config(&cfg1);
    let mut a1b = Arena::for_config(&cfg1);
    let mut a2 = Arena::for_config(&cfg2);
    let mut a3 = Arena::for_config(&cfg3);
    let mut a0 = Arena::for_config(&cfg0);
    let mut fewer = cfg1;
    fewer.index_topk = 8;
    let mut a_fewer = Arena::for_config(&fewer);
    let mut p1 = Engine::new(&cfg1, &w1, a1.get()).unwrap();
    // The same producer, run on positions 0..4 only.
    let mut p1_short = Engine::new(&cfg1, &w1, a1b.get()).unwrap();
    let mut p3 = Engine::new(&cfg3, &w3, a3.get()).unwrap();
    let mut p_fewer = Engine::new(&fewer, &w1, a_fewer.get()).unwrap();
    let mut e0 = Engine::new(&cfg0, &w0, a0.get()).unwrap();
    let mut scratch = vec![0f32; 8 * d];
    p1.forward(&x1[..8 * d], &mut scratch).unwrap();
    p1_short
        .forward(&x1[..4 * d], &mut scratch[..4 * d])
        .unwrap();
    p3.forward(&x1[..8 * d], &mut scratch).unwrap();
    p_fewer.forward(&x1[..8 * d], &mut scratch).unwrap();
    let mut c2 = Engine::new(&cfg2, &w2, a2.get()).unwrap();
    let none = Sharing::default();
    let both = |cache, topk| Sharing {
        cache: Some(cache),
        topk: Some(topk),
    };
    let sentinel = vec![7f32; 8 * d];
    let mut out = sentinel.clone();
    let x = &x2[..8 * d];
    let bad: Vec<(Sharing, &str)> = vec![
        (none, "needs the engine whose cache it reads"),
        (
            Sharing {
                cache: Some(&p1),
                topk: None,
            },
            "needs the engine whose top-k it reuses",
        ),
        (
            Sharing {
                cache: None,
                topk: Some(&p1),
            },
            "needs the engine whose cache it reads",
        ),
        (both(&p3, &p1), "qk_rope_head_dim"),
        (
            both(&p1, &p_fewer),
            "index_topk 16 differs from the producer's 8",
        ),
        (both(&p1_short, &p1), "the producer holds 4 positions"),
        (both(&p1, &p1_short), "positions 0..8 are not those"),
    ];
    for (share, want) in &bad {
        for mode in [AttnMode::Naive, AttnMode::Absorb] {
            let e = c2.forward_with(share, x, &mut out, mode).unwrap_err();
            assert_eq!(e.status(), Status::InvalidArgument, "{e}");
            assert!(e.message().contains(want), "{} lacks {want:?}", e.message());
            assert_eq!(c2.len(), 0);
            assert_eq!(out, sentinel, "out written on {want:?}");
        }
    }
    // A layer that needs no producer refuses one it is given.
    let mut o0 = sentinel.clone();
    let e = e0
        .forward_with(&both(&p1, &p1), x, &mut o0, AttnMode::Naive)
        .unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument);
    assert!(e.message().contains("not kv_shared"), "{}", e.message());
    assert!(e0.is_empty() && o0 == sentinel);
    // The right call after all that equals one on a fresh engine.
    c2.forward_with(&both(&p1, &p1), x, &mut out, AttnMode::Absorb)
        .unwrap();
    let mut a2b = Arena::for_config(&cfg2);
    let mut fresh = Engine::new(&cfg2, &w2, a2b.get()).unwrap();
    let mut want = vec![0f32; 8 * d];
    fresh
        .forward_with(&both(&p1, &p1), x, &mut want, AttnMode::Absorb)
        .unwrap();
    assert_eq!(out, want);
    assert_eq!(c2.len(), 8);
    // And it is the golden output of those positions (prefill schedule rows).
    let golden = c.golden(2, "prefill");
    let rel = mla_testkit::rel_err(&out, &golden[..8 * d]);
    assert!(rel <= 1e-5, "{rel}");
}
