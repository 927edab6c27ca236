//! A random sequence of engine calls (forward with any token count, including 0 and
//! too many, NaN/inf input, truncate to any length, reset) on a small fixed model.
//!
//! Two engines run side by side: `a` gets every call, `b` only the calls that
//! succeed on `a`. Every success must give bit-identical outputs on both, and a
//! failed call must leave `a` exactly as it was (same length, and the same outputs
//! on every later call as `b`, which never saw it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mla_core::{AttnMode, Config, DType, Engine, Status};
use mla_testkit::configs::{tiny_qlora, tiny_tutorial, with_capacity};
use mla_testkit::{Arena, RandomWeights};
use std::sync::OnceLock;

/// A small fixed model: its config and random weights (with every bias it allows).
struct Model {
    cfg: Config,
    weights: RandomWeights,
}

fn models() -> &'static [Model; 2] {
    static M: OnceLock<[Model; 2]> = OnceLock::new();
    M.get_or_init(|| {
        let a = with_capacity(tiny_qlora(), 12, 5);
        let b = Config {
            cache_dtype: DType::BF16,
            ..with_capacity(tiny_tutorial(), 12, 5)
        };
        [a, b].map(|cfg| Model {
            cfg,
            weights: RandomWeights::with_biases(&cfg, DType::F32, 1),
        })
    })
}

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes(data);
    let Some(which) = input.byte() else { return };
    let model = &models()[(which & 1) as usize];
    let w = model.weights.weights();
    let cfg = model.cfg;
    let d = cfg.hidden_size as usize;
    let max_tok = cfg.max_tokens_per_call as usize;
    let need = Engine::memory_bytes(&cfg).unwrap();
    let (mut ma, mut mb) = (Arena::new(need), Arena::new(need));
    let mut a = Engine::new(&cfg, &w, ma.get()).unwrap();
    let mut b = Engine::new(&cfg, &w, mb.get()).unwrap();

    while let Some(op) = input.byte() {
        let arg = input.byte().unwrap_or(0);
        match op % 5 {
            0 | 1 => {
                // forward / forward_mode with n in 0 ..= max_tok + 2
                let n = arg as usize % (max_tok + 3);
                let salt = input.byte().unwrap_or(0);
                let mut x: Vec<f32> = (0..n * d)
                    .map(|i| ((i as f32 + salt as f32) * 0.61).sin())
                    .collect();
                if salt & 0x80 != 0 && !x.is_empty() {
                    let bad = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][salt as usize % 3];
                    let at = (salt as usize * 7) % x.len();
                    x[at] = bad;
                }
                // Sometimes a wrong output length.
                let out_len = if salt & 0x40 != 0 { n * d + 1 } else { n * d };
                let mode = AttnMode::from_u32((salt % 3) as u32).unwrap();
                let before = a.len();
                let mut out_a = vec![0f32; out_len];
                let ra = if op % 5 == 0 {
                    a.forward(&x, &mut out_a)
                } else {
                    a.forward_mode(&x, &mut out_a, mode)
                };
                match ra {
                    Ok(()) => {
                        assert!(n >= 1 && n <= max_tok && out_len == n * d);
                        assert!(x.iter().all(|v| v.is_finite()));
                        assert_eq!(a.len(), before + n);
                        assert!(out_a.iter().all(|v| v.is_finite()), "finite in, finite out");
                        let mut out_b = vec![0f32; out_len];
                        let rb = if op % 5 == 0 {
                            b.forward(&x, &mut out_b)
                        } else {
                            b.forward_mode(&x, &mut out_b, mode)
                        };
                        rb.expect("b accepts what a accepted");
                        let same = out_a
                            .iter()
                            .zip(&out_b)
                            .all(|(p, q)| p.to_bits() == q.to_bits());
                        assert!(same, "a failed call changed a's state");
                    }
                    Err(e) => {
                        assert_eq!(a.len(), before, "failed forward changed len");
                        // Any status that applies is fine (the contract fixes no order).
                        let applies = match e.status() {
                            Status::InvalidArgument => n == 0 || n > max_tok || out_len != n * d,
                            Status::CacheFull => before + n > a.capacity(),
                            Status::NonFinite => x.iter().any(|v| !v.is_finite()),
                            _ => false,
                        };
                        assert!(applies, "{:?}: {}", e.status(), e.message());
                    }
                }
            }
            2 => {
                let len = arg as usize % (a.len() + 3);
                match a.truncate(len) {
                    Ok(()) => {
                        assert!(len <= b.len());
                        b.truncate(len).unwrap();
                        assert_eq!(a.len(), len);
                    }
                    Err(e) => {
                        assert_eq!(e.status(), Status::InvalidArgument);
                        assert!(len > a.len());
                    }
                }
            }
            3 => {
                a.reset();
                b.reset();
                assert!(a.is_empty());
            }
            _ => {
                // Probe: both engines agree on one more token (then roll it back).
                if a.len() < a.capacity() {
                    let x: Vec<f32> = (0..d)
                        .map(|i| (i as f32 * 0.3 + arg as f32).cos())
                        .collect();
                    let (mut oa, mut ob) = (vec![0f32; d], vec![0f32; d]);
                    let l = a.len();
                    a.forward(&x, &mut oa).unwrap();
                    b.forward(&x, &mut ob).unwrap();
                    assert!(oa.iter().zip(&ob).all(|(p, q)| p.to_bits() == q.to_bits()));
                    a.truncate(l).unwrap();
                    b.truncate(l).unwrap();
                }
            }
        }
        assert_eq!(a.len(), b.len());
    }
});
