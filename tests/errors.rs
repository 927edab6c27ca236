//! Bad input through the Rust API of the CPU engine (docs/design.md section 5):
//! every `Status` that `mla_core::{Config, Weights, Tensor, Engine}` and the
//! safetensors binder can return is provoked here, each with its status and a
//! check of its message, and no failure may change anything.
//!
//! Statuses the CPU Rust API cannot return (see [`provoked_by`], an exhaustive
//! `match`: a new `Status` does not compile until it is placed):
//! - `NullPointer`: Rust references are never NULL; only the C ABI takes pointers;
//! - `AbiMismatch`: `struct_size` exists only in the C `mla_config`; the Rust
//!   `Config` is the type itself;
//! - `Unsupported`: no CPU path of this build returns it (it is the C ABI's and
//!   the CUDA engine's answer for what a build does not do);
//! - `Device`: CUDA driver failures, CUDA engine only;
//! - `Internal`: a caught panic or an inconsistent internal plan; no input
//!   reaches it (that is what the fuzz targets and the no-panic link check hold).
//!
//! "Nothing changed" after a failure on an engine is checked on the whole
//! memory arena, byte for byte, and on `len()`. The engine borrows its arena
//! exclusively for as long as it lives, so Rust gives no way to read the arena
//! while the engine that failed still exists; instead each case runs three
//! engines, in three arenas filled alike: `a` gets the history and then the
//! failing call, `b` and `c` only the history. Once all three are dropped the
//! arenas must be identical: `b == c` shows the history is reproducible byte
//! for byte (the engine is deterministic), and then `a == b` shows the failing
//! call wrote nothing at all: no cache row, no scratch, no table. A fourth
//! pair checks that the failed engine goes on exactly like one that never saw
//! the failure (same next output, bit for bit). Failures without an engine
//! (`Engine::new`, the binder) must leave the caller's buffer untouched.
// `mla_core::Error` carries its message inline (no allocator): ~200 bytes.
#![allow(clippy::result_large_err)]

use mla_core::safetensors::{bind_weights, config_from_metadata, SafeTensors};
use mla_core::{AttnMode, Config, DType, Engine, Error, Result, Status, Tensor, Weights};
use mla_testkit::Arena;

// ---------------------------------------------------------------------------
// Coverage.

/// The scenario of this file that provokes `s`, or why the CPU Rust API cannot
/// return it.
fn provoked_by(s: Status) -> std::result::Result<&'static str, &'static str> {
    match s {
        Status::Ok => Err("not an error"),
        Status::NullPointer => Err("Rust references are never NULL (C ABI only)"),
        Status::InvalidConfig => Ok("invalid_config"),
        Status::WeightShape => Ok("weight_shape"),
        Status::WeightDtype => Ok("weight_dtype"),
        Status::Misaligned => Ok("misaligned"),
        Status::BufferTooSmall => Ok("buffer_too_small"),
        Status::CacheFull => Ok("cache_full"),
        Status::InvalidArgument => Ok("invalid_argument"),
        Status::NonFinite => Ok("non_finite"),
        Status::Unsupported => Err("no CPU path of this build returns it"),
        Status::Device => Err("CUDA engine only"),
        Status::AbiMismatch => Err("struct_size exists only in the C mla_config"),
        Status::Internal => Err("a caught panic or inconsistent plan; no input reaches it"),
    }
}

/// A scenario: provokes one status (and records every status it checked).
type Scenario = fn(&mut Seen);

const SCENARIOS: [(&str, Scenario); 8] = [
    ("invalid_config", invalid_config),
    ("weight_shape", weight_shape),
    ("weight_dtype", weight_dtype),
    ("misaligned", misaligned),
    ("buffer_too_small", buffer_too_small),
    ("cache_full", cache_full),
    ("invalid_argument", invalid_argument),
    ("non_finite", non_finite),
];

/// Statuses a scenario checked.
type Seen = Vec<Status>;

#[test]
fn every_status_the_rust_api_can_return_is_provoked() {
    for v in 0..=u32::MAX {
        let Some(s) = Status::from_u32(v) else { break };
        let mut seen = Seen::new();
        match provoked_by(s) {
            Ok(name) => {
                let (_, run) = SCENARIOS
                    .iter()
                    .find(|(n, _)| *n == name)
                    .unwrap_or_else(|| panic!("no scenario {name}"));
                run(&mut seen);
                assert!(seen.contains(&s), "{name} did not provoke {s:?}");
                eprintln!("{s:?}: provoked by {name} ({} checks)", seen.len());
            }
            Err(why) => eprintln!("{s:?}: not reachable through the CPU Rust API: {why}"),
        }
    }
}

/// Checks `r` failed with `want` and a message containing every part of `has`.
fn expect_err<T: std::fmt::Debug>(
    seen: &mut Seen,
    r: Result<T>,
    want: Status,
    has: &[&str],
) -> Error {
    let e = match r {
        Ok(v) => panic!("expected {want:?} ({has:?}), got Ok({v:?})"),
        Err(e) => e,
    };
    assert_eq!(e.status(), want, "status of: {}", e.message());
    for part in has {
        assert!(
            e.message().contains(part),
            "{want:?}: message {:?} lacks {part:?}",
            e.message()
        );
    }
    // Display: the status description, then the message.
    assert_eq!(e.to_string(), format!("{}: {}", want.as_str(), e.message()));
    seen.push(want);
    e
}

// ---------------------------------------------------------------------------
// A small DeepSeek-form layer: query LoRA with RMSNorm, shared rope key, YaRN,
// biases on kv_a_proj_with_mqa and o_proj.

const D: usize = 32;
const MAX_SEQ: u32 = 8;
const MAX_TOK: u32 = 4;

fn small() -> Config {
    Config {
        hidden_size: D as u32,
        num_heads: 2,
        q_lora_rank: 24,
        kv_lora_rank: 16,
        qk_nope_head_dim: 8,
        qk_rope_head_dim: 8,
        v_head_dim: 8,
        max_seq_len: MAX_SEQ,
        max_tokens_per_call: MAX_TOK,
        original_max_position: 16,
        rope_factor: 4.0,
        ..Config::deepseek_v3()
    }
}

/// Owned f32 weights for `cfg` (fixed-seed values).
struct Model {
    cfg: Config,
    /// q_a, q_a_norm, q_b, kv_a, kv_a_bias, kv_a_norm, kv_b, o, o_bias: (data, rows, cols).
    mats: Vec<(Vec<f32>, usize, usize)>,
}

impl Model {
    fn new(cfg: Config) -> Model {
        let dm = cfg.dims().unwrap();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut mat = |rows: usize, cols: usize, base: f32, scale: f32| {
            let v = (0..rows * cols)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    base + scale * ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
                })
                .collect();
            (v, rows, cols)
        };
        let mats = vec![
            mat(dm.rq, dm.d, 0.0, 0.4),
            mat(1, dm.rq, 1.0, 0.2),
            mat(dm.q_width, dm.rq, 0.0, 0.4),
            mat(dm.kv_a_rows, dm.d, 0.0, 0.4),
            mat(1, dm.kv_a_rows, 0.0, 0.1),
            mat(1, dm.r, 1.0, 0.2),
            mat(dm.kv_b_rows, dm.r, 0.0, 0.4),
            mat(dm.d, dm.o_cols, 0.0, 0.4),
            mat(1, dm.d, 0.0, 0.1),
        ];
        Model { cfg, mats }
    }

    fn t(&self, i: usize) -> Tensor<'_> {
        let (v, r, c) = &self.mats[i];
        Tensor::f32(v, *r, *c).unwrap()
    }

    fn weights(&self) -> Weights<'_> {
        Weights {
            q_a_proj: Some(self.t(0)),
            q_a_layernorm: Some(self.t(1)),
            q_b_proj: Some(self.t(2)),
            kv_a_proj_with_mqa: Some(self.t(3)),
            kv_a_layernorm: Some(self.t(5)),
            kv_a_proj_bias: Some(self.t(4)),
            o_proj_bias: Some(self.t(8)),
            ..Weights::new(self.t(6), self.t(7))
        }
    }
}

/// `n` input tokens starting at position `pos` (deterministic, finite).
fn tokens(pos: usize, n: usize) -> Vec<f32> {
    (0..n * D)
        .map(|i| ((pos * D + i) as f32 * 0.37).sin() + 0.1 * pos as f32)
        .collect()
}

/// An arena for `cfg`, every byte 0xA5.
fn arena(cfg: &Config) -> Arena {
    let mut a = Arena::new(Engine::memory_bytes(cfg).unwrap());
    a.get().fill(0xA5);
    a
}

/// Forwards `n` tokens from position `e.len()`; panics on failure.
fn step(e: &mut Engine<'_, '_>, n: usize) -> Vec<f32> {
    let x = tokens(e.len(), n);
    let mut out = vec![0f32; x.len()];
    e.forward(&x, &mut out).unwrap();
    out
}

/// Runs `history` then `fail` (which must fail with `want`, message parts `has`)
/// and checks that the failure changed nothing: `len()`, the whole arena (against
/// twins that ran only `history`), and the next call's output.
fn on_engine(
    seen: &mut Seen,
    model: &Model,
    history: &dyn Fn(&mut Engine<'_, '_>),
    fail: &dyn Fn(&mut Engine<'_, '_>) -> Result<()>,
    want: Status,
    has: &[&str],
) {
    let cfg = model.cfg;
    let w = model.weights();
    let (mut a, mut b, mut c) = (arena(&cfg), arena(&cfg), arena(&cfg));
    {
        let mut e = Engine::new(&cfg, &w, a.get()).unwrap();
        history(&mut e);
        let len = e.len();
        expect_err(seen, fail(&mut e), want, has);
        assert_eq!(e.len(), len, "{want:?}: len changed");
    }
    for twin in [&mut b, &mut c] {
        let mut e = Engine::new(&cfg, &w, twin.get()).unwrap();
        history(&mut e);
    }
    assert!(
        b.get() == c.get(),
        "the history is not reproducible byte for byte"
    );
    let diff = a.get().iter().zip(b.get()).filter(|(x, y)| x != y).count();
    assert_eq!(
        diff, 0,
        "{want:?}: the failed call changed {diff} bytes of the arena"
    );

    // The failed engine goes on like one that never saw the failure.
    let (mut a, mut b) = (arena(&cfg), arena(&cfg));
    let mut ea = Engine::new(&cfg, &w, a.get()).unwrap();
    let mut eb = Engine::new(&cfg, &w, b.get()).unwrap();
    history(&mut ea);
    history(&mut eb);
    assert!(fail(&mut ea).is_err());
    if ea.len() < ea.capacity() {
        assert_eq!(
            step(&mut ea, 1),
            step(&mut eb, 1),
            "{want:?}: next output differs"
        );
    } else {
        ea.truncate(0).unwrap();
        eb.truncate(0).unwrap();
        assert_eq!(
            step(&mut ea, 1),
            step(&mut eb, 1),
            "{want:?}: next output differs"
        );
    }
}

/// `Engine::new` fails with `want` (message parts `has`) and leaves `mem` as it was.
fn init_fails(
    seen: &mut Seen,
    cfg: &Config,
    w: &Weights<'_>,
    mem: &mut [u8],
    want: Status,
    has: &[&str],
) {
    let before = mem.to_vec();
    let r = Engine::new(cfg, w, mem).map(|e| e.len());
    expect_err(seen, r, want, has);
    assert!(
        mem == &before[..],
        "{want:?}: failed Engine::new wrote to mem"
    );
}

// ---------------------------------------------------------------------------
// Scenarios, one per status.

fn cache_full(seen: &mut Seen) {
    let model = Model::new(small());
    // 7 of 8 slots used: 2 more do not fit, nothing is appended.
    let seven = |e: &mut Engine<'_, '_>| {
        step(e, 4);
        step(e, 3);
    };
    let two = |e: &mut Engine<'_, '_>| {
        let x = tokens(7, 2);
        e.forward(&x, &mut vec![0f32; x.len()])
    };
    on_engine(
        seen,
        &model,
        &seven,
        &two,
        Status::CacheFull,
        &["cache", "7 + 2", "max_seq_len 8"],
    );
    // Full: even one token is refused, in every attention mode.
    let full = |e: &mut Engine<'_, '_>| {
        seven(e);
        step(e, 1);
    };
    for mode in [AttnMode::Auto, AttnMode::Naive, AttnMode::Absorb] {
        let one = move |e: &mut Engine<'_, '_>| {
            let x = tokens(8, 1);
            e.forward_mode(&x, &mut [0f32; D], mode)
        };
        on_engine(
            seen,
            &model,
            &full,
            &one,
            Status::CacheFull,
            &["8 + 1", "max_seq_len 8"],
        );
    }
    // Restored rows: the same rule.
    let dm = model.cfg.dims().unwrap();
    let rows = |e: &mut Engine<'_, '_>| e.append_cache_rows(&vec![0.25f32; 2 * dm.cache_row]);
    on_engine(
        seen,
        &model,
        &seven,
        &rows,
        Status::CacheFull,
        &["7 + 2", "max_seq_len 8"],
    );
}

fn non_finite(seen: &mut Seen) {
    let model = Model::new(small());
    let three = |e: &mut Engine<'_, '_>| {
        step(e, 3);
    };
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        // Token 1, column 5 of a 2-token call: nothing of the call is appended,
        // not even token 0, which is fine.
        let call = move |e: &mut Engine<'_, '_>| {
            let mut x = tokens(3, 2);
            x[D + 5] = bad;
            e.forward(&x, &mut vec![0f32; x.len()])
        };
        on_engine(
            seen,
            &model,
            &three,
            &call,
            Status::NonFinite,
            &["x", "token 1", "column 5"],
        );
    }
    let dm = model.cfg.dims().unwrap();
    let rows = move |e: &mut Engine<'_, '_>| {
        let mut r = vec![0.5f32; 2 * dm.cache_row];
        r[dm.cache_row + 1] = f32::NAN;
        e.append_cache_rows(&r)
    };
    on_engine(
        seen,
        &model,
        &three,
        &rows,
        Status::NonFinite,
        &["rows", "row 1"],
    );
}

fn invalid_argument(seen: &mut Seen) {
    let model = Model::new(small());
    let two = |e: &mut Engine<'_, '_>| {
        step(e, 2);
    };
    type Call = Box<dyn Fn(&mut Engine<'_, '_>) -> Result<()>>;
    let cases: Vec<(Call, Vec<&str>)> = vec![
        // 0 tokens.
        (
            Box::new(|e: &mut Engine<'_, '_>| e.forward(&[], &mut [])),
            vec!["x", "length 0", "hidden_size 32"],
        ),
        // Not a whole number of tokens.
        (
            Box::new(|e: &mut Engine<'_, '_>| {
                e.forward(&tokens(2, 1)[..D - 1], &mut [0f32; D - 1])
            }),
            vec!["x", "length 31", "hidden_size 32"],
        ),
        // More than max_tokens_per_call.
        (
            Box::new(|e: &mut Engine<'_, '_>| e.forward(&tokens(2, 5), &mut vec![0f32; 5 * D])),
            vec!["n_tokens", "5", "max_tokens_per_call 4"],
        ),
        // Output length differs from the input's, shorter and longer.
        (
            Box::new(|e: &mut Engine<'_, '_>| e.forward(&tokens(2, 2), &mut [0f32; D])),
            vec!["out", "length 32", "64"],
        ),
        (
            Box::new(|e: &mut Engine<'_, '_>| e.forward(&tokens(2, 1), &mut vec![0f32; 2 * D])),
            vec!["out", "length 64", "32"],
        ),
        // Truncate past the length.
        (
            Box::new(|e: &mut Engine<'_, '_>| e.truncate(3)),
            vec!["truncate", "len 3", "cache length 2"],
        ),
        (
            Box::new(|e: &mut Engine<'_, '_>| e.truncate(usize::MAX)),
            vec!["truncate", "cache length 2"],
        ),
        // Restored rows that are not whole rows.
        (
            Box::new(|e: &mut Engine<'_, '_>| e.append_cache_rows(&[1.0; 5])),
            vec!["rows", "length 5", "cache row 24"],
        ),
        (
            Box::new(|e: &mut Engine<'_, '_>| e.append_cache_rows(&[])),
            vec!["rows", "length 0"],
        ),
    ];
    for (call, has) in &cases {
        on_engine(seen, &model, &two, &**call, Status::InvalidArgument, has);
    }
    // Truncate to the length, or below, is fine (and not a failure).
    let w = model.weights();
    let mut a = arena(&model.cfg);
    let mut e = Engine::new(&model.cfg, &w, a.get()).unwrap();
    step(&mut e, 2);
    e.truncate(2).unwrap();
    e.truncate(1).unwrap();
    assert_eq!(e.len(), 1);

    // A malformed safetensors file.
    let mut f = StFile::layer(&model);
    let bytes = f.build();
    let mut cut_buf = placed(&bytes[..bytes.len() - 3], 0);
    let cut: &[u8] = cut_buf.get();
    expect_err(
        seen,
        bind_weights(cut, PREFIX, &model.cfg),
        Status::InvalidArgument,
        &[],
    );
    f.meta.push(("hidden_size".into(), "lots".into()));
    let mut file_buf = placed(&f.build(), 0);
    let file: &[u8] = file_buf.get();
    let st = SafeTensors::parse(file).unwrap();
    expect_err(
        seen,
        config_from_metadata(&st, &Config::tutorial()),
        Status::InvalidArgument,
        &["hidden_size", "lots"],
    );
}

fn buffer_too_small(seen: &mut Seen) {
    let model = Model::new(small());
    let w = model.weights();
    let need = Engine::memory_bytes(&model.cfg).unwrap();
    let mut a = arena(&model.cfg);
    for len in [need - 1, need - 64, 0] {
        let mem = &mut a.get()[..len];
        init_fails(
            seen,
            &model.cfg,
            &w,
            mem,
            Status::BufferTooSmall,
            &[
                "mem",
                &format!("{len} bytes given"),
                &format!("{need} needed"),
            ],
        );
    }
    // Exactly enough is enough.
    assert!(Engine::new(&model.cfg, &w, a.get()).is_ok());
}

fn misaligned(seen: &mut Seen) {
    let model = Model::new(small());
    let w = model.weights();
    let need = Engine::memory_bytes(&model.cfg).unwrap();
    let mut big = Arena::new(need + 64);
    big.get().fill(0x5A);
    for shift in [1, 4, 8, 32, 63] {
        let mem = &mut big.get()[shift..shift + need];
        init_fails(
            seen,
            &model.cfg,
            &w,
            mem,
            Status::Misaligned,
            &["mem", "aligned to 64 bytes"],
        );
    }
    // Tensor data not aligned to its element size.
    let words = [0u32; 8];
    let bytes: &[u8] = bytemuck::cast_slice(&words);
    expect_err(
        seen,
        Tensor::from_bytes(&bytes[1..13], DType::F32, 1, 3),
        Status::Misaligned,
        &["f32", "aligned to 4 bytes"],
    );
    expect_err(
        seen,
        Tensor::from_bytes(&bytes[1..7], DType::BF16, 1, 3),
        Status::Misaligned,
        &["bf16", "aligned to 2 bytes"],
    );
    // A safetensors file one byte off its alignment: its f32 data is misaligned.
    let mut file_buf = placed(&StFile::layer(&model).build(), 1);
    let file = &file_buf.get()[1..];
    expect_err(
        seen,
        bind_weights(file, PREFIX, &model.cfg),
        Status::Misaligned,
        &[PREFIX, "aligned to 4 bytes"],
    );
}

fn weight_shape(seen: &mut Seen) {
    let model = Model::new(small());
    let cfg = model.cfg;
    let w = model.weights();
    let mut a = arena(&cfg);
    let (one, other) = (vec![1.0f32; 24], vec![0.5f32; 31 * 16]);
    let cases: Vec<(Weights<'_>, Vec<&str>)> = vec![
        // Missing: q_a_layernorm although q_norm is on.
        (
            Weights {
                q_a_layernorm: None,
                ..w
            },
            vec!["q_a_layernorm", "missing", "1 x 24"],
        ),
        // Missing: q_a_proj although q_lora_rank > 0.
        (
            Weights {
                q_a_proj: None,
                ..w
            },
            vec!["q_a_proj", "missing"],
        ),
        // Extra: q_proj although q_lora_rank > 0.
        (
            Weights {
                q_proj: Some(model.t(2)),
                ..w
            },
            vec!["q_proj", "must be absent"],
        ),
        // Mis-shaped: kv_b_proj 31 x 16 instead of 32 x 16.
        (
            Weights {
                kv_b_proj: Tensor::f32(&other, 31, 16).unwrap(),
                ..w
            },
            vec!["kv_b_proj", "expected 32 x 16", "got 31 x 16"],
        ),
        // Mis-shaped bias: o_proj_bias [1][24] instead of [1][32].
        (
            Weights {
                o_proj_bias: Some(Tensor::f32(&one, 1, 24).unwrap()),
                ..w
            },
            vec!["o_proj_bias", "expected 1 x 32", "got 1 x 24"],
        ),
        // Transposed o_proj.
        (
            Weights {
                o_proj: Tensor::f32(&model.mats[7].0, 16, 32).unwrap(),
                ..w
            },
            vec!["o_proj", "expected 32 x 16", "got 16 x 32"],
        ),
    ];
    for (bad, has) in &cases {
        expect_err(seen, bad.check(&cfg), Status::WeightShape, has);
        init_fails(seen, &cfg, bad, a.get(), Status::WeightShape, has);
    }
    // A tensor whose element count does not match its shape.
    expect_err(
        seen,
        Tensor::f32(&one, 5, 5),
        Status::WeightShape,
        &["24 elements", "5 x 5"],
    );
    expect_err(
        seen,
        Tensor::from_bytes(&[0u8; 10], DType::F16, 2, 3),
        Status::WeightShape,
        &["10 bytes", "2 x 3"],
    );

    // The binder: missing, extra and mis-shaped tensors in a file.
    let full = StFile::layer(&model);
    let bind = |f: &StFile| {
        let mut file_buf = placed(&f.build(), 0);
        let file: &[u8] = file_buf.get();
        bind_weights(file, PREFIX, &cfg).map(|_| ())
    };
    bind(&full).unwrap();
    let mut f = full.clone();
    f.remove("o_proj.weight");
    expect_err(
        seen,
        bind(&f),
        Status::WeightShape,
        &[PREFIX, "o_proj.weight", "missing", "[32, 16]"],
    );
    let mut f = full.clone();
    f.add_f32("q_proj.weight", &[32, 32], &vec![0.0; 32 * 32]);
    expect_err(
        seen,
        bind(&f),
        Status::WeightShape,
        &["q_proj.weight", "unused by the config"],
    );
    let mut f = full.clone();
    f.remove("kv_b_proj.weight");
    f.add_f32("kv_b_proj.weight", &[16, 32], &vec![0.0; 32 * 16]);
    expect_err(
        seen,
        bind(&f),
        Status::WeightShape,
        &["kv_b_proj.weight", "expected [32, 16]", "got [16, 32]"],
    );
}

fn weight_dtype(seen: &mut Seen) {
    let model = Model::new(small());
    let full = StFile::layer(&model);
    for (dtype, size) in [("F64", 8), ("I32", 4), ("U8", 1)] {
        let mut f = full.clone();
        f.remove("kv_a_layernorm.weight");
        f.add("kv_a_layernorm.weight", dtype, &[16], vec![0u8; 16 * size]);
        let mut file_buf = placed(&f.build(), 0);
        let file: &[u8] = file_buf.get();
        expect_err(
            seen,
            bind_weights(file, PREFIX, &model.cfg),
            Status::WeightDtype,
            &[PREFIX, "kv_a_layernorm.weight", dtype, "not supported"],
        );
        let st = SafeTensors::parse(file).unwrap();
        let view = st
            .tensor(&format!("{PREFIX}kv_a_layernorm.weight"))
            .unwrap()
            .unwrap();
        expect_err(
            seen,
            view.elems(),
            Status::WeightDtype,
            &[dtype, "not supported"],
        );
    }
}

fn invalid_config(seen: &mut Seen) {
    let good = small();
    let model = Model::new(good);
    let w = model.weights();
    let mut a = arena(&good);
    // (what to change, the field the message must name)
    type Edit = fn(&mut Config);
    let cases: &[(Edit, &str)] = &[
        (|c| c.hidden_size = 0, "hidden_size"),
        (|c| c.num_heads = 0, "num_heads"),
        (|c| c.kv_lora_rank = 0, "kv_lora_rank"),
        (|c| c.qk_nope_head_dim = 0, "qk_nope_head_dim"),
        (|c| c.qk_rope_head_dim = 0, "qk_rope_head_dim"),
        (|c| c.v_head_dim = 0, "v_head_dim"),
        (|c| c.max_seq_len = 0, "max_seq_len"),
        (|c| c.max_tokens_per_call = 0, "max_tokens_per_call"),
        (|c| c.qk_rope_head_dim = 7, "qk_rope_head_dim"),
        (
            |c| c.max_tokens_per_call = c.max_seq_len + 1,
            "max_tokens_per_call",
        ),
        (|c| c.q_lora_rank = 0, "q_norm"),
        (|c| c.rms_norm_eps = 0.0, "rms_norm_eps"),
        (|c| c.rms_norm_eps = -1e-6, "rms_norm_eps"),
        (|c| c.rms_norm_eps = f32::NAN, "rms_norm_eps"),
        (|c| c.rms_norm_eps = f32::INFINITY, "rms_norm_eps"),
        (|c| c.rope_theta = 1.0, "rope_theta"),
        (|c| c.rope_theta = f32::INFINITY, "rope_theta"),
        (|c| c.rope_theta = f32::NAN, "rope_theta"),
        (|c| c.rope_factor = 0.0, "rope_factor"),
        (|c| c.rope_factor = f32::NAN, "rope_factor"),
        (|c| c.rope_factor = f32::INFINITY, "rope_factor"),
        (|c| c.original_max_position = 0, "original_max_position"),
        (|c| c.beta_slow = 0.0, "beta_slow"),
        (|c| c.beta_slow = f32::NAN, "beta_slow"),
        (|c| c.beta_fast = f32::INFINITY, "beta_fast"),
        (|c| c.beta_fast = c.beta_slow, "beta_fast"),
        (|c| c.mscale = f32::NAN, "mscale"),
        (|c| c.mscale_all_dim = f32::INFINITY, "mscale"),
        (|c| c.softmax_scale = -0.5, "softmax_scale"),
        (|c| c.softmax_scale = f32::NAN, "softmax_scale"),
        (|c| c.softmax_scale = f32::INFINITY, "softmax_scale"),
        // Overflowing products.
        (
            |c| {
                c.hidden_size = u32::MAX;
                c.num_heads = u32::MAX;
                c.max_seq_len = u32::MAX;
            },
            "overflow",
        ),
        // Weights no C mla_tensor can describe: q_proj with 2.8e14 rows.
        (
            |c| {
                *c = Config::tutorial();
                c.num_heads = 0xFFFF_FFF0;
                c.qk_nope_head_dim = 0xFFFF;
            },
            "num_heads * (qk_nope_head_dim + qk_rope_head_dim)",
        ),
        // An engine above isize::MAX bytes (query scratch 2^31 x 2^30 floats).
        (
            |c| {
                c.hidden_size = 1;
                c.num_heads = 1 << 14;
                c.q_lora_rank = 0;
                c.q_norm = false;
                c.kv_lora_rank = 1;
                c.qk_nope_head_dim = (1 << 16) - 2;
                c.qk_rope_head_dim = 2;
                c.v_head_dim = 1;
                c.max_seq_len = 1 << 31;
                c.max_tokens_per_call = 1 << 31;
            },
            "max_seq_len",
        ),
    ];
    let mut file_buf = placed(&StFile::layer(&model).build(), 0);
    let file: &[u8] = file_buf.get();
    for (edit, field) in cases {
        let mut c = good;
        edit(&mut c);
        let e = expect_err(seen, c.validate(), Status::InvalidConfig, &[field]);
        if c.dims().is_ok() {
            // Only the engine size is wrong: dims() leaves it to validate(), and
            // Engine::memory_bytes answers a number no buffer can have.
            assert!(field.starts_with("max_seq_len"), "{field}");
            assert!(Engine::memory_bytes(&c).unwrap() > isize::MAX as usize);
            let r = Engine::new(&c, &w, a.get()).map(|e| e.len());
            assert!(r.is_err(), "{field}");
            continue;
        }
        // Everything that takes a config gives the same answer.
        assert_eq!(c.dims().unwrap_err(), e, "{field}");
        assert_eq!(c.cache_bytes_per_token().unwrap_err(), e, "{field}");
        assert_eq!(Engine::memory_bytes(&c).unwrap_err(), e, "{field}");
        assert_eq!(w.check(&c).unwrap_err(), e, "{field}");
        let bound = bind_weights(file, PREFIX, &c).map(|_| ());
        assert_eq!(bound.unwrap_err(), e, "{field}");
        init_fails(seen, &c, &w, a.get(), Status::InvalidConfig, &[field]);
    }
    // A file's metadata can make a config invalid too.
    let mut f = StFile::layer(&model);
    f.meta.push(("qk_rope_head_dim".into(), "7".into()));
    let mut file_buf = placed(&f.build(), 0);
    let file: &[u8] = file_buf.get();
    let st = SafeTensors::parse(file).unwrap();
    let c = config_from_metadata(&st, &good).unwrap();
    expect_err(
        seen,
        c.validate(),
        Status::InvalidConfig,
        &["qk_rope_head_dim", "even"],
    );
    expect_err(
        seen,
        bind_weights(file, PREFIX, &c),
        Status::InvalidConfig,
        &["qk_rope_head_dim"],
    );
}

// ---------------------------------------------------------------------------
// Safetensors files, written here.

const PREFIX: &str = "model.layers.0.self_attn.";

/// A safetensors file under construction: metadata and (name, dtype, shape, bytes).
#[derive(Clone, Default)]
struct StFile {
    meta: Vec<(String, String)>,
    tensors: Vec<(String, String, Vec<usize>, Vec<u8>)>,
}

impl StFile {
    /// The model's layer under [`PREFIX`], f32, Hugging Face names.
    fn layer(m: &Model) -> StFile {
        let mut f = StFile::default();
        let names = [
            "q_a_proj.weight",
            "q_a_layernorm.weight",
            "q_b_proj.weight",
            "kv_a_proj_with_mqa.weight",
            "kv_a_proj_with_mqa.bias",
            "kv_a_layernorm.weight",
            "kv_b_proj.weight",
            "o_proj.weight",
            "o_proj.bias",
        ];
        for (name, (v, r, c)) in names.iter().zip(&m.mats) {
            // Norms and biases are 1-D in the file.
            let shape = if *r == 1 { vec![*c] } else { vec![*r, *c] };
            f.add_f32(name, &shape, v);
        }
        f
    }

    fn add(&mut self, name: &str, dtype: &str, shape: &[usize], bytes: Vec<u8>) {
        self.tensors.push((
            format!("{PREFIX}{name}"),
            dtype.into(),
            shape.to_vec(),
            bytes,
        ));
    }

    fn add_f32(&mut self, name: &str, shape: &[usize], v: &[f32]) {
        self.add(name, "F32", shape, bytemuck::cast_slice(v).to_vec());
    }

    fn remove(&mut self, name: &str) {
        let full = format!("{PREFIX}{name}");
        self.tensors.retain(|t| t.0 != full);
    }

    /// The file bytes; the header is padded so the data starts 8-byte aligned.
    fn build(&self) -> Vec<u8> {
        let mut entries = Vec::new();
        if !self.meta.is_empty() {
            let kv: Vec<String> = self
                .meta
                .iter()
                .map(|(k, v)| format!("\"{k}\":\"{v}\""))
                .collect();
            entries.push(format!("\"__metadata__\":{{{}}}", kv.join(",")));
        }
        let mut data = Vec::new();
        for (name, dtype, shape, bytes) in &self.tensors {
            let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            entries.push(format!(
                "\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
                dims.join(","),
                data.len(),
                data.len() + bytes.len()
            ));
            data.extend_from_slice(bytes);
        }
        let mut header = format!("{{{}}}", entries.join(",")).into_bytes();
        while header.len() % 8 != 0 {
            header.push(b' ');
        }
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&header);
        out.extend_from_slice(&data);
        out
    }
}

/// `raw` copied `shift` bytes past a 64-byte boundary (a file read into aligned
/// memory, or deliberately not).
fn placed(raw: &[u8], shift: usize) -> Arena {
    let mut a = Arena::new(shift + raw.len());
    a.get()[shift..].copy_from_slice(raw);
    a
}

// ---------------------------------------------------------------------------
// One test per scenario (the coverage test above runs them all again).

macro_rules! scenario_tests {
    ($($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                let mut seen = Seen::new();
                super::$name(&mut seen);
                assert!(!seen.is_empty());
            }
        )*
    };
}

mod each {
    use super::Seen;
    scenario_tests!(
        invalid_config,
        weight_shape,
        weight_dtype,
        misaligned,
        buffer_too_small,
        cache_full,
        invalid_argument,
        non_finite
    );
}
