//! A random sequence of batched decode calls (`Engine::forward_batch`) among
//! single-engine calls, truncates and probes, on four engines of one small
//! model and a fifth with other weights (alone in a batch it is fine; with the
//! others it is an error).
//!
//! Every engine has a shadow that only ever sees single absorbed calls. A
//! successful batch must give, row for row, bit-identical outputs to the shadow
//! of that row's engine (bitwise while the batch has fewer than 16 rows, which
//! is always the case here); a failed batch must leave every engine exactly as
//! it was (same length, and the same outputs as its shadow on every later
//! call), and its status must be one that applies: `InvalidArgument` (no rows,
//! more rows than `max_tokens_per_call`, wrong `x` / `out` lengths, engines
//! with different weights in the list), `CacheFull` (an engine in the list is full),
//! `NonFinite` (NaN or infinity in `x`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mla_core::{AttnMode, Config, DType, Engine, Status};
use mla_testkit::configs::{tiny_qlora, with_capacity};
use mla_testkit::{Arena, RandomWeights};
use std::sync::OnceLock;

/// Engines of the model; engine `N` (the last) has other weights. Each has a
/// shadow with the same weights.
const N: usize = 4;

struct Model {
    cfg: Config,
    weights: RandomWeights,
    other: RandomWeights,
}

fn model() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| {
        let cfg = with_capacity(tiny_qlora(), 10, 3);
        Model {
            cfg,
            weights: RandomWeights::with_biases(&cfg, DType::F32, 1),
            other: RandomWeights::with_biases(&cfg, DType::F32, 2),
        }
    })
}

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
}

/// One token's input, different for every (seed, row).
fn token(d: usize, seed: u8, row: usize) -> Vec<f32> {
    (0..d)
        .map(|i| ((i as f32 + 0.37 * seed as f32 + 1.9 * row as f32) * 0.61).sin())
        .collect()
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits())
}

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes(data);
    let m = model();
    let (cfg, w, wo) = (m.cfg, m.weights.weights(), m.other.weights());
    let d = cfg.hidden_size as usize;
    let max_tok = cfg.max_tokens_per_call as usize;
    let need = Engine::memory_bytes(&cfg).unwrap();
    let mut arenas: Vec<Arena> = (0..2 * (N + 1)).map(|_| Arena::new(need)).collect();
    let mut mems = arenas.iter_mut().map(Arena::get);
    let mut make = |j: usize| {
        let weights = if j == N { &wo } else { &w };
        Engine::new(&cfg, weights, mems.next().unwrap()).unwrap()
    };
    let mut engines: Vec<Engine> = (0..=N).map(&mut make).collect();
    let mut shadows: Vec<Engine> = (0..=N).map(&mut make).collect();

    for _ in 0..64 {
        if input.0.is_empty() {
            break;
        }
        let op = input.byte();
        match op % 4 {
            0 => {
                // One engine (and its shadow) takes 1..=3 tokens alone.
                let j = (op as usize / 4) % (N + 1);
                let k = 1 + input.byte() as usize % 3;
                let seed = input.byte();
                let x: Vec<f32> = (0..k).flat_map(|r| token(d, seed, r)).collect();
                let (mut oa, mut ob) = (vec![0f32; k * d], vec![0f32; k * d]);
                let ra = engines[j].forward_mode(&x, &mut oa, AttnMode::Absorb);
                let rb = shadows[j].forward_mode(&x, &mut ob, AttnMode::Absorb);
                assert_eq!(ra.is_ok(), rb.is_ok());
                if ra.is_ok() {
                    assert!(same_bits(&oa, &ob));
                }
            }
            1 => {
                // A batch: n rows (0 ..= max_tok + 2), each from a distinct engine,
                // sometimes the foreign one; sometimes a bad length or a NaN.
                let n = input.byte() as usize % (max_tok + 3);
                let order = input.byte();
                let flags = input.byte();
                let seed = input.byte();
                let with_foreign = flags & 1 != 0 && n > 0;
                // Which engine each row uses: a rotation of 0..N (distinct), the
                // foreign engine (index N) at one slot when asked.
                let mut pick: Vec<usize> = (0..n).map(|i| (i + order as usize) % (N + 1)).collect();
                if with_foreign {
                    let at = (flags as usize >> 1) % n;
                    if !pick.contains(&N) {
                        pick[at] = N;
                    }
                }
                pick.truncate(N + 1); // at most every engine once
                let pick: Vec<usize> = {
                    let mut seen = [false; N + 1];
                    pick.into_iter()
                        .filter(|&j| !std::mem::replace(&mut seen[j], true))
                        .collect()
                };
                let n = pick.len();
                let mut x: Vec<f32> = (0..n).flat_map(|r| token(d, seed, r)).collect();
                if flags & 0x10 != 0 && !x.is_empty() {
                    let at = (seed as usize * 5) % x.len();
                    x[at] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][seed as usize % 3];
                }
                let x_len = if flags & 0x20 != 0 {
                    x.len() + 1
                } else {
                    x.len()
                };
                x.resize(x_len, 0.25);
                let out_len = if flags & 0x40 != 0 { n * d + d } else { n * d };
                let lens: Vec<usize> = engines.iter().map(Engine::len).collect();
                let any_full = pick
                    .iter()
                    .any(|&j| engines[j].len() >= engines[j].capacity());
                // Engines with both weights in one batch.
                let mixed = pick.contains(&N) && pick.iter().any(|&j| j != N);
                let mut out = vec![0f32; out_len];
                let res = {
                    let mut slots: Vec<Option<&mut Engine>> =
                        engines.iter_mut().map(Some).collect();
                    let mut batch: Vec<&mut Engine> =
                        pick.iter().map(|&j| slots[j].take().unwrap()).collect();
                    Engine::forward_batch(&mut batch, &x, &mut out)
                };
                match res {
                    Ok(()) => {
                        assert!(n >= 1 && n <= max_tok, "n {n} max {max_tok}");
                        assert!(!mixed, "engines with other weights in one batch: {pick:?}");
                        assert!(x_len == n * d && out_len == n * d && !any_full);
                        assert!(x.iter().all(|v| v.is_finite()));
                        for (r, &j) in pick.iter().enumerate() {
                            assert_eq!(engines[j].len(), lens[j] + 1);
                            let mut o = vec![0f32; d];
                            shadows[j]
                                .forward_mode(&x[r * d..(r + 1) * d], &mut o, AttnMode::Absorb)
                                .expect("the shadow accepts what the batch accepted");
                            assert!(same_bits(&o, &out[r * d..(r + 1) * d]), "row {r}");
                        }
                    }
                    Err(e) => {
                        let now: Vec<usize> = engines.iter().map(Engine::len).collect();
                        assert_eq!(now, lens, "a failed batch changed a length");
                        assert!(out.iter().all(|&v| v == 0.0), "a failed batch wrote out");
                        let applies = match e.status() {
                            Status::InvalidArgument => {
                                n == 0 || n > max_tok || x_len != n * d || out_len != n * d || mixed
                            }
                            Status::CacheFull => any_full,
                            Status::NonFinite => x.iter().any(|v| !v.is_finite()),
                            _ => false,
                        };
                        assert!(applies, "{:?}: {}", e.status(), e.message());
                    }
                }
            }
            2 => {
                let j = (op as usize / 4) % (N + 1);
                let len = input.byte() as usize % (engines[j].len() + 1);
                engines[j].truncate(len).unwrap();
                shadows[j].truncate(len).unwrap();
            }
            _ => {
                // Probe: every engine agrees with its shadow on one more token.
                let seed = input.byte();
                for (e, s) in engines.iter_mut().zip(shadows.iter_mut()) {
                    assert_eq!(e.len(), s.len());
                    if e.len() < e.capacity() {
                        let x = token(d, seed, 0);
                        let (mut oa, mut ob) = (vec![0f32; d], vec![0f32; d]);
                        let l = e.len();
                        e.forward_mode(&x, &mut oa, AttnMode::Absorb).unwrap();
                        s.forward_mode(&x, &mut ob, AttnMode::Absorb).unwrap();
                        assert!(same_bits(&oa, &ob), "an engine drifted from its shadow");
                        e.truncate(l).unwrap();
                        s.truncate(l).unwrap();
                    }
                }
            }
        }
    }
});
