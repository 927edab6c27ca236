//! Arena-size regression tests: the exact bytes an engine needs for the presets
//! are recorded here, so any change to the memory plan shows up in review; and
//! the size query is exact (one byte less is refused, exactly enough works);
//! and the plan's count mode (the size) and place mode (the engine's layout)
//! agree region by region for random configs.

use mla_core::plan::{absorbed_slot_bytes, naive_slot_bytes, widened_rows, Regions};
use mla_core::{Config, DType, Engine, RopeKey, Status, Tensor, Weights};
use mla_testkit::*;

/// (preset, cache dtype, max_seq_len, max_tokens_per_call) -> recorded bytes.
fn cases() -> Vec<(&'static str, Config, usize)> {
    let with = |c: Config, dt: DType, seq: u32, tok: u32| Config {
        cache_dtype: dt,
        max_seq_len: seq,
        max_tokens_per_call: tok,
        ..c
    };
    vec![
        (
            "tutorial f32 1024/128",
            with(Config::tutorial(), DType::F32, 1024, 128),
            RECORDED[0],
        ),
        (
            "tutorial bf16 256/16",
            with(Config::tutorial(), DType::BF16, 256, 16),
            RECORDED[1],
        ),
        (
            "v2-lite f32 4096/256",
            with(Config::deepseek_v2_lite(), DType::F32, 4096, 256),
            RECORDED[2],
        ),
        (
            "v2-lite bf16 32768/1",
            with(Config::deepseek_v2_lite(), DType::BF16, 32768, 1),
            RECORDED[3],
        ),
        (
            "v3 f32 4096/256",
            with(Config::deepseek_v3(), DType::F32, 4096, 256),
            RECORDED[4],
        ),
    ]
}

/// Update deliberately (and say why in the commit) when the memory plan changes.
/// Same on x86-64 and aarch64 (checked under qemu); 32-bit targets plan smaller
/// task scratch and are not covered by this record.
///
/// The tutorial's packed panels are sized by its projections: the widest split is
/// kv_a_proj's 640 rows, 10 tasks of 64 rows, each a panel of 64 x min(d, 256)
/// f32 (was 16 panels for any config): 6 * 64 * 256 * 4 = 393216 bytes less than
/// before in both tutorial cases; V2-Lite's q_proj (3072 rows) and V3's q_b_proj
/// split into all 16, so they keep their size. The absorbed slot's per-block
/// weights are one column since the latent sum reads the probabilities heads
/// across: V3 (128 heads) 61989376 -> 61729280. Projections pack from 32 rows
/// (`PACK_MIN_ROWS`, was 16), so the tutorial at 16 tokens a call has no packed
/// panels: 3032576 -> 2115072.
const RECORDED: [usize; 5] = [5083648, 2115072, 20091392, 41521920, 61729280];

#[test]
fn memory_bytes_match_the_recorded_plan() {
    let mut report = String::new();
    let mut ok = true;
    for (name, cfg, want) in cases() {
        let got = Engine::memory_bytes(&cfg).unwrap();
        let cache = cfg.max_seq_len as usize * cfg.cache_bytes_per_token().unwrap();
        report += &format!(
            "{name}: {got} bytes (cache {cache}, rest {})\n",
            got - cache
        );
        // The latent cache is part of the plan.
        assert!(got > cache, "{name}");
        ok &= got == want;
    }
    print!("{report}");
    assert!(
        ok,
        "memory plan changed; recorded {RECORDED:?}, now:\n{report}"
    );
}

#[test]
fn size_query_is_exact() {
    let g = Golden::load("tutorial");
    let cfg = g.config(64);
    let w = g.weights(&cfg);
    let need = Engine::memory_bytes(&cfg).unwrap();
    let mut arena = Arena::new(need + 64);
    let mem = arena.get();
    let e = Engine::new(&cfg, &w, &mut mem[..need - 1]).err().unwrap();
    assert_eq!(e.status(), Status::BufferTooSmall);
    assert!(e.message().contains(&need.to_string()), "{}", e.message());
    assert_eq!(
        Engine::new(&cfg, &w, &mut mem[1..need + 1])
            .err()
            .unwrap()
            .status(),
        Status::Misaligned
    );
    let mut e = Engine::new(&cfg, &w, &mut mem[..need]).unwrap();
    let x = g.inputs();
    let mut out = vec![0f32; x.len()];
    e.forward(&x, &mut out).unwrap();
    assert!(rel_err(&out, &g.outputs()) <= 1e-5);
}

#[test]
fn count_and_place_agree_on_random_configs() {
    let mut s = 0x9e3779b97f4a7c15u64;
    let mut rand = |lo: u32, hi: u32| {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        lo + ((s >> 33) as u32) % (hi - lo + 1)
    };
    for case in 0..200 {
        let max_seq_len = rand(1, 3000);
        let q_lora_rank = if rand(0, 1) == 1 { rand(1, 200) } else { 0 };
        let cfg = Config {
            hidden_size: rand(1, 300),
            num_heads: rand(1, 20),
            q_lora_rank,
            kv_lora_rank: rand(1, 300),
            qk_nope_head_dim: rand(1, 64),
            qk_rope_head_dim: 2 * rand(1, 32),
            v_head_dim: rand(1, 64),
            max_seq_len,
            max_tokens_per_call: rand(1, max_seq_len.min(300)),
            rope_key: [RopeKey::Shared, RopeKey::PerHead][rand(0, 1) as usize],
            q_norm: q_lora_rank > 0 && rand(0, 1) == 1,
            cache_dtype: [DType::F32, DType::F16, DType::BF16][rand(0, 2) as usize],
            ..Config::tutorial()
        };
        let dims = cfg.dims().unwrap();
        let what = format!("case {case}: {cfg:?}");
        let need = Engine::memory_bytes(&cfg).unwrap();
        assert_eq!(Engine::memory_bytes_const(&cfg), need, "{what}");
        let count = Regions::count(&cfg, &dims).unwrap();
        assert_eq!(count.bytes, need, "{what}");

        // Place mode consumes exactly the counted bytes, region by region.
        let mut arena = Arena::new(need);
        let mem = arena.get();
        let base = mem.as_ptr();
        let placed = Regions::place(mem, &cfg, &dims).unwrap();
        assert_eq!(placed.bytes, need, "{what}");
        for ((name, got), (_, want)) in placed.regions.spans_from(base).zip(count.regions.spans()) {
            assert_eq!(got, want, "{what}: region {name}");
        }

        // And the engine places itself in exactly that much, not one byte less
        // (zero weights: their values do not matter here).
        let widest = [dims.q_width * dims.d.max(dims.rq), dims.kv_a_rows * dims.d]
            .into_iter()
            .chain([
                dims.kv_b_rows * dims.r,
                dims.d * dims.o_cols,
                dims.rq * dims.d,
            ])
            .max()
            .unwrap();
        let zeros = vec![0f32; widest];
        let t = |rows: usize, cols: usize| Tensor::f32(&zeros[..rows * cols], rows, cols).unwrap();
        let lora = dims.rq > 0;
        let w = Weights {
            q_proj: (!lora).then(|| t(dims.q_width, dims.d)),
            q_a_proj: lora.then(|| t(dims.rq, dims.d)),
            q_a_layernorm: cfg.q_norm.then(|| t(1, dims.rq)),
            q_b_proj: lora.then(|| t(dims.q_width, dims.rq)),
            kv_a_proj_with_mqa: Some(t(dims.kv_a_rows, dims.d)),
            kv_a_layernorm: Some(t(1, dims.r)),
            ..Weights::new(t(dims.kv_b_rows, dims.r), t(dims.d, dims.o_cols))
        };
        let mem = arena.get();
        let e = Engine::new(&cfg, &w, &mut mem[..need - 1]).err().unwrap();
        assert_eq!(e.status(), Status::BufferTooSmall, "{what}");
        assert!(Engine::new(&cfg, &w, mem).is_ok(), "{what}");
    }
}

#[test]
fn mechanism_regions_are_sized_by_their_mechanism() {
    use mla_core::config::{Gate, QueryScale};
    let base = Config {
        max_seq_len: 512,
        max_tokens_per_call: 16,
        ..Config::tutorial()
    };
    let span = |cfg: &Config, region: &str| {
        let dims = cfg.dims().unwrap();
        let plan = Regions::count(cfg, &dims).unwrap();
        let (_, s) = plan
            .regions
            .spans()
            .find(|(n, _)| *n == region)
            .unwrap_or_else(|| panic!("no region {region}"));
        s.len
    };
    let dims = base.dims().unwrap();
    let (t, h, v) = (16, dims.h, dims.v);
    // Without mechanisms the new regions are empty (the recorded presets keep
    // their sizes).
    for region in ["q_fused", "gate", "head_params"] {
        assert_eq!(span(&base, region), 0, "{region}");
    }
    let with = |f: &dyn Fn(&mut Config)| {
        let mut c = base;
        f(&mut c);
        c
    };
    assert_eq!(span(&with(&|c| c.gate = Gate::PerHead), "gate"), t * h);
    assert_eq!(
        span(&with(&|c| c.gate = Gate::PerChannel), "gate"),
        t * h * v
    );
    let fused = with(&|c| {
        c.gate = Gate::FusedQ;
        c.q_norm = true;
    });
    assert_eq!(span(&fused, "gate"), t * h * v);
    assert_eq!(span(&fused, "q_fused"), t * h * (dims.qk + v));
    assert_eq!(span(&fused, "q_latent"), t * 2 * dims.rq);
    assert_eq!(span(&with(&|c| c.sinks = true), "head_params"), 3 * h);
    let learned = with(&|c| c.query_scale = QueryScale::LearnedLogPos);
    assert_eq!(span(&learned, "head_params"), 3 * h);
    // A sliding window holds a ring of W - 1 + T rows; a kv_shared layer none.
    let row_bytes = dims.cache_row * 4;
    let window = with(&|c| c.sliding_window = 100);
    assert_eq!(span(&window, "cache"), (99 + t) * row_bytes);
    assert_eq!(
        span(&with(&|c| c.sliding_window = 600), "cache"),
        512 * row_bytes
    );
    assert_eq!(span(&with(&|c| c.kv_shared = true), "cache"), 0);
    // Task slots: the absorbed path's row ranges (keys / 256, the window's ring
    // with one) of absorbed slots, or the naive path's head groups of naive
    // slots, whichever is more. 4 heads, 4096 rows: 16 ranges; with a window of
    // 200 (a ring of 215 rows) one range.
    let four = Config {
        num_heads: 4,
        max_seq_len: 4096,
        ..base
    };
    let slots = |c: &Config| {
        let dims = c.dims().unwrap();
        let w = widened_rows(c);
        (
            absorbed_slot_bytes(&dims, w).unwrap() / 4,
            naive_slot_bytes(&dims, w).unwrap() / 4,
        )
    };
    let (a, n) = slots(&four);
    assert_eq!(span(&four, "task_slots"), (16 * a).max(4 * n));
    let ring = Config {
        sliding_window: 200,
        ..four
    };
    let (a, n) = slots(&ring);
    assert_eq!(span(&ring, "task_slots"), a.max(4 * n));
    // memory_bytes follows: the windowed engine is smaller by the rows it drops.
    let saved = Engine::memory_bytes(&base).unwrap() - Engine::memory_bytes(&window).unwrap();
    assert_eq!(saved, (512 - 115) * row_bytes);
}

#[test]
fn the_tutorials_scratch_is_what_its_regions_use() {
    // Tutorial dims, T = 64: d 256, H 8, r_q 192, r 128, n 32, p 64 per head, v 32.
    let cfg = Config {
        max_tokens_per_call: 64,
        ..Config::tutorial()
    };
    let dims = cfg.dims().unwrap();
    let plan = Regions::count(&cfg, &dims).unwrap();
    let bytes = |name: &str| {
        plan.regions
            .spans()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no region {name}"))
            .1
            .bytes
    };
    let (t, f) = (64, 4);
    // Packed panels: the widest split of the five projections. kv_a_proj, 640
    // rows of d = 256: 10 tasks of 64 rows, a 64 x 256 panel each (q_b_proj, 768
    // rows of 192: 12 x 64 x 192, is smaller; q_a 192 rows, o_proj 256 rows fewer).
    assert_eq!(bytes("pack_panels"), 10 * 64 * 256 * f);
    // Task slots: 8 head groups of naive slots; 4 row ranges of 256 (1024 rows)
    // of absorbed slots need less.
    let slot = naive_slot_bytes(&dims, widened_rows(&cfg)).unwrap();
    let absorbed = absorbed_slot_bytes(&dims, widened_rows(&cfg)).unwrap();
    assert!(4 * absorbed < 8 * slot);
    assert_eq!(bytes("task_slots"), 8 * slot);
    // The naive slot at T = 64: keys 64 x 96, values 64 x 32, scores 64 x 64,
    // max and sum 64 each, packing scratch 64 x 128.
    assert_eq!(slot, (64 * 96 + 64 * 32 + 64 * 64 + 2 * 64 + 64 * 128) * f);
    let per_token = t * (192 + 8 * 96 + 640 + 8 * 32) * f; // q_latent, q, kv_new, o
    let attention = (8 * 8 * 192 + 192 * 16) * f; // absorbed_q, absorbed_q_t
    let scratch = per_token + attention + 8 * slot + 10 * 64 * 256 * f;
    let state = bytes("cache") + bytes("rope_inv_freq") + bytes("rope_cos") + bytes("rope_sin");
    assert_eq!(plan.bytes - state, scratch);
    assert_eq!(scratch, 1851392);
    // Less scratch than cache (2.6 MB) at T = 64.
    assert!(scratch < bytes("cache"), "{scratch}");
}
