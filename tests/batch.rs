//! Batched decode (`Engine::forward_batch`): one token for each of several
//! engines that share config and weights, against separate calls, and its
//! all-or-nothing errors (the arenas compared byte for byte, as in errors.rs).
#![allow(clippy::result_large_err)]

use mla_core::engine::{forward_batch_in, EngineBatch};
use mla_core::kernels::PACK_MIN_ROWS;
use mla_core::{AttnMode, Config, DType, Engine, Status};
use mla_testkit::golden::{cases, rel_err, Golden};
use mla_testkit::random::{RandomWeights, Rng};
use mla_testkit::Arena;

/// V2-Lite's shape, small: d 64, H 4, plain q_proj, r 32, n 16, p 8, v 16;
/// capacity 24 tokens (or `max_tok` if more), `max_tok` per call.
fn small(max_tok: u32) -> Config {
    let mut c = Config::deepseek_v2_lite();
    c.hidden_size = 64;
    c.num_heads = 4;
    c.kv_lora_rank = 32;
    c.qk_nope_head_dim = 16;
    c.qk_rope_head_dim = 8;
    c.v_head_dim = 16;
    c.max_seq_len = max_tok.max(24);
    c.max_tokens_per_call = max_tok;
    c.validate().unwrap();
    c
}

/// Fills `e` with `len` tokens of history drawn from `seed` (calls of up to
/// `max_tokens_per_call`).
fn history(e: &mut Engine, len: usize, seed: u64) {
    let d = e.dims().d;
    let step = e.dims().max_tok;
    let x = Rng::new(seed).vec(len * d, 1.0);
    let mut out = vec![0f32; x.len()];
    for (xc, oc) in x.chunks(step * d).zip(out.chunks_mut(step * d)) {
        e.forward(xc, oc).unwrap();
    }
    assert_eq!(e.len(), len);
}

/// Context lengths of a batch of `n`: engine 0 empty, the last one (n > 1)
/// one short of full, the others spread.
fn lengths(n: usize, cap: usize) -> Vec<usize> {
    (0..n)
        .map(|i| match i {
            0 => 0,
            _ if i == n - 1 => cap - 1,
            _ => (i * 7) % (cap - 1),
        })
        .collect()
}

/// Runs a batch of `n` engines at `lens` and the same engines one call each
/// (attention mode `mode`); returns (batched, separate) outputs and checks the
/// caches end alike.
fn batch_and_separate(
    cfg: &Config,
    w: &mla_core::Weights,
    lens: &[usize],
    mode: AttnMode,
) -> (Vec<f32>, Vec<f32>) {
    let n = lens.len();
    let d = cfg.hidden_size as usize;
    let mut arenas: Vec<Arena> = (0..2 * n).map(|_| Arena::for_config(cfg)).collect();
    let (a, b) = arenas.split_at_mut(n);
    let mut batch: Vec<Engine> = a
        .iter_mut()
        .map(|m| Engine::new(cfg, w, m.get()).unwrap())
        .collect();
    let mut alone: Vec<Engine> = b
        .iter_mut()
        .map(|m| Engine::new(cfg, w, m.get()).unwrap())
        .collect();
    for (i, &len) in lens.iter().enumerate() {
        history(&mut batch[i], len, 100 + i as u64);
        history(&mut alone[i], len, 100 + i as u64);
    }
    let x = Rng::new(7 + n as u64).vec(n * d, 1.0);
    let mut got = vec![f32::NAN; n * d];
    let mut refs: Vec<&mut Engine> = batch.iter_mut().collect();
    Engine::forward_batch(&mut refs, &x, &mut got).unwrap();
    let mut want = vec![f32::NAN; n * d];
    for (i, e) in alone.iter_mut().enumerate() {
        e.forward_mode(&x[i * d..(i + 1) * d], &mut want[i * d..(i + 1) * d], mode)
            .unwrap();
    }
    for (i, (p, q)) in batch.iter().zip(&alone).enumerate() {
        assert_eq!(p.len(), lens[i] + 1, "engine {i}: one token appended");
        assert_eq!(q.len(), p.len());
        let (mut wp, mut wq) = (vec![0f32; p.len() * 600], vec![0f32; q.len() * 600]);
        let rp = p.cache().rows(0, p.len(), &mut wp).to_vec();
        let rq = q.cache().rows(0, q.len(), &mut wq).to_vec();
        if n < PACK_MIN_ROWS {
            let same = rp.iter().zip(&rq).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "engine {i}: cache rows differ");
        } else {
            // Packed kv_a projection: the new row differs by f32 rounding.
            assert!(rel_err(&rp, &rq) <= 1e-5, "engine {i}: cache rows differ");
        }
    }
    (got, want)
}

#[test]
fn a_batch_equals_separate_absorbed_calls_bitwise_below_the_packing_size() {
    for dtype in [DType::F32, DType::BF16] {
        let cfg = small(9);
        let rw = RandomWeights::with_biases(&cfg, dtype, 3);
        let w = rw.weights();
        for n in 1..=9 {
            let lens = lengths(n, 24);
            let (got, want) = batch_and_separate(&cfg, &w, &lens, AttnMode::Absorb);
            assert!(got.iter().all(|v| v.is_finite()));
            let same = got
                .iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{dtype:?} n {n}: rel err {}", rel_err(&got, &want));
            // Auto picks the naive path for the empty engine: f32 rounding.
            let (got, want) = batch_and_separate(&cfg, &w, &lens, AttnMode::Auto);
            let e = rel_err(&got, &want);
            assert!(e <= 1e-5, "{dtype:?} n {n} auto: rel err {e}");
        }
    }
}

#[test]
fn a_packed_batch_equals_separate_calls_within_rounding() {
    let n = PACK_MIN_ROWS + 1;
    let cfg = small(n as u32);
    let rw = RandomWeights::new(&cfg, DType::F32, 5);
    let lens = lengths(n, 24);
    let (got, want) = batch_and_separate(&cfg, &rw.weights(), &lens, AttnMode::Absorb);
    let e = rel_err(&got, &want);
    assert!(e <= 1e-5, "n {n}: rel err {e}");
    // The packed projections sum in another order: not bitwise.
    assert!(
        e > 0.0,
        "n {n}: packed and unpacked sums agree bitwise (suspicious)"
    );
}

#[test]
fn every_golden_case_batched_gives_its_reference_outputs() {
    for name in cases() {
        let g = Golden::load(&name);
        let t = g.n_tokens();
        let cfg = g.config(t as u32 + 4);
        let w = g.weights(&cfg);
        let d = cfg.hidden_size as usize;
        let (x, want) = (g.inputs(), g.outputs());
        // Engine k holds tokens 0..k and gets token k: its output is the
        // case's output k.
        let mut arenas: Vec<Arena> = (0..t).map(|_| Arena::for_config(&cfg)).collect();
        let mut engines: Vec<Engine> = arenas
            .iter_mut()
            .map(|m| Engine::new(&cfg, &w, m.get()).unwrap())
            .collect();
        for (k, e) in engines.iter_mut().enumerate() {
            if k > 0 {
                e.forward(&x[..k * d], &mut vec![0f32; k * d]).unwrap();
            }
        }
        let xb: Vec<f32> = (0..t)
            .flat_map(|k| x[k * d..(k + 1) * d].to_vec())
            .collect();
        let mut out = vec![0f32; t * d];
        let mut refs: Vec<&mut Engine> = engines.iter_mut().collect();
        Engine::forward_batch(&mut refs, &xb, &mut out).unwrap();
        let e = rel_err(&out, &want);
        assert!(e <= 1e-5, "{name}: batched rel err {e}");
    }
}

/// A batch that names engines through an index map (to provoke duplicates,
/// which `&mut` slices cannot hold).
struct Mapped<'a, 'w, 'm> {
    engines: &'a mut [Engine<'w, 'm>],
    map: Vec<usize>,
}

impl<'w, 'm> EngineBatch<'w, 'm> for Mapped<'_, 'w, 'm> {
    fn count(&self) -> usize {
        self.map.len()
    }
    fn engine(&self, i: usize) -> Option<&Engine<'w, 'm>> {
        self.engines.get(*self.map.get(i)?)
    }
    fn engine_mut(&mut self, i: usize) -> Option<&mut Engine<'w, 'm>> {
        self.engines.get_mut(*self.map.get(i)?)
    }
}

/// Three engines with histories 2, 5, 0, in arenas; `call` fails with
/// `status` and a message containing `parts`, and afterwards every arena is
/// byte for byte that of engines that only saw the history.
fn fails_cleanly(
    cfg: &Config,
    w: &mla_core::Weights,
    full: bool,
    call: &dyn Fn(&mut [Engine]) -> mla_core::Result<()>,
    status: Status,
    parts: &[&str],
) {
    let lens = [2, if full { 24 } else { 5 }, 0];
    let run = |fail: bool| -> Vec<Vec<u8>> {
        let mut arenas: Vec<Arena> = (0..3).map(|_| Arena::for_config(cfg)).collect();
        {
            let mut engines: Vec<Engine> = arenas
                .iter_mut()
                .map(|m| Engine::new(cfg, w, m.get()).unwrap())
                .collect();
            for (i, &len) in lens.iter().enumerate() {
                history(&mut engines[i], len, 40 + i as u64);
            }
            if fail {
                let e = call(&mut engines).unwrap_err();
                assert_eq!(e.status(), status, "{}", e.message());
                for p in parts {
                    assert!(e.message().contains(p), "{:?} lacks {p:?}", e.message());
                }
            }
        }
        arenas.iter_mut().map(|a| a.get().to_vec()).collect()
    };
    let (failed, clean, again) = (run(true), run(false), run(false));
    assert!(clean == again, "histories are not reproducible");
    for (i, (a, b)) in failed.iter().zip(&clean).enumerate() {
        assert!(a == b, "{parts:?}: engine {i}'s arena changed");
    }
}

#[test]
fn a_failing_batch_changes_no_engine() {
    let cfg = small(4);
    let rw = RandomWeights::new(&cfg, DType::F32, 9);
    let w = rw.weights();
    let d = cfg.hidden_size as usize;
    let x3 = Rng::new(1).vec(3 * d, 1.0);
    let batch = |map: Vec<usize>, x: Vec<f32>| {
        move |es: &mut [Engine]| {
            let mut b = Mapped {
                engines: es,
                map: map.clone(),
            };
            let mut out = vec![0f32; x.len()];
            forward_batch_in(&mut b, &x, &mut out)
        }
    };
    let bad = Status::InvalidArgument;
    fails_cleanly(&cfg, &w, false, &batch(vec![], vec![]), bad, &["n is 0"]);
    let five = Rng::new(2).vec(5 * d, 1.0);
    fails_cleanly(
        &cfg,
        &w,
        false,
        &batch(vec![0, 1, 2, 0, 1], five),
        bad,
        &["n is 5", "max_tokens_per_call 4"],
    );
    fails_cleanly(
        &cfg,
        &w,
        false,
        &batch(vec![0, 1, 2], x3[..2 * d].to_vec()),
        bad,
        &["192 floats"],
    );
    fails_cleanly(
        &cfg,
        &w,
        false,
        &batch(vec![0, 2, 0], x3.clone()),
        bad,
        &["engines[2] is engines[0]"],
    );
    fails_cleanly(
        &cfg,
        &w,
        true,
        &batch(vec![0, 1, 2], x3.clone()),
        Status::CacheFull,
        &["engines[1] is full"],
    );
    let mut nan = x3.clone();
    nan[2 * d + 5] = f32::NAN;
    fails_cleanly(
        &cfg,
        &w,
        false,
        &batch(vec![0, 1, 2], nan),
        Status::NonFinite,
        &["row 2, column 5"],
    );
}

#[test]
fn engines_with_other_weights_or_config_are_refused() {
    let cfg = small(4);
    let rw = RandomWeights::new(&cfg, DType::F32, 9);
    let copy = RandomWeights::new(&cfg, DType::F32, 9); // same values, other data
    let d = cfg.hidden_size as usize;
    let x = Rng::new(1).vec(2 * d, 1.0);
    let other_cfg = Config {
        max_seq_len: 30,
        ..cfg
    };
    for (cfg1, w1) in [(cfg, copy.weights()), (other_cfg, rw.weights())] {
        let (mut m0, mut m1) = (Arena::for_config(&cfg), Arena::for_config(&cfg1));
        let mut e0 = Engine::new(&cfg, &rw.weights(), m0.get()).unwrap();
        let mut e1 = Engine::new(&cfg1, &w1, m1.get()).unwrap();
        let mut out = vec![0f32; 2 * d];
        let err = Engine::forward_batch(&mut [&mut e0, &mut e1], &x, &mut out).unwrap_err();
        assert_eq!(err.status(), Status::InvalidArgument);
        assert!(err
            .message()
            .contains("engines[1] has other weights/config"));
        assert_eq!((e0.len(), e1.len()), (0, 0));
        assert!(out.iter().all(|&v| v == 0.0), "out written on failure");
    }
}

/// Every task on its own scoped thread, last index first.
struct Threads;

impl mla_core::parallel::ParallelFor for Threads {
    fn run(&self, n_tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        std::thread::scope(|s| {
            for i in (0..n_tasks).rev() {
                s.spawn(move || task(i));
            }
        });
    }
}

#[test]
fn a_batch_on_threads_equals_the_batch_on_one_thread_bitwise() {
    let cfg = small(9);
    let rw = RandomWeights::new(&cfg, DType::F32, 13);
    let w = rw.weights();
    let d = cfg.hidden_size as usize;
    let lens = lengths(7, 24);
    let x = Rng::new(17).vec(7 * d, 1.0);
    let threads = Threads;
    let mut outs = Vec::new();
    for parallel in [false, true] {
        let mut arenas: Vec<Arena> = (0..7).map(|_| Arena::for_config(&cfg)).collect();
        let mut engines: Vec<Engine> = arenas
            .iter_mut()
            .map(|m| Engine::new(&cfg, &w, m.get()).unwrap())
            .collect();
        for (i, e) in engines.iter_mut().enumerate() {
            history(e, lens[i], 60 + i as u64);
        }
        if parallel {
            // Only engines[0]'s parallel-for is used.
            engines[0].set_parallel(Some(&threads));
            engines[0].set_parallel_min_work(0);
        }
        let mut out = vec![0f32; 7 * d];
        let mut refs: Vec<&mut Engine> = engines.iter_mut().collect();
        Engine::forward_batch(&mut refs, &x, &mut out).unwrap();
        outs.push(out);
    }
    let same = outs[0]
        .iter()
        .zip(&outs[1])
        .all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same, "threads changed the batch's results");
}
