//! Arbitrary bytes as every field of a Config (enums through from_u32, floats as raw
//! bits): validation and everything derived from a valid config must not panic or
//! overflow. When the config is small, an engine is built over random weights
//! and runs one token, so config-dependent paths (YaRN, layouts, dtypes) are covered.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mla_core::rope::RopeParams;
use mla_core::{AttnMode, Config, DType, Engine, RopeKey, RopeLayout, Status};
use mla_testkit::{Arena, RandomWeights};

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        let n = self.0.len().min(4);
        b[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        u32::from_le_bytes(b)
    }
    fn f32(&mut self) -> f32 {
        f32::from_bits(self.u32())
    }
}

/// 23 fields x 4 bytes, in mla_config order; unknown enum values end the input.
fn config(data: &[u8]) -> Option<Config> {
    let mut r = Reader(data);
    Some(Config {
        hidden_size: r.u32(),
        num_heads: r.u32(),
        q_lora_rank: r.u32(),
        kv_lora_rank: r.u32(),
        qk_nope_head_dim: r.u32(),
        qk_rope_head_dim: r.u32(),
        v_head_dim: r.u32(),
        max_seq_len: r.u32(),
        max_tokens_per_call: r.u32(),
        rope_layout: RopeLayout::from_u32(r.u32())?,
        rope_key: RopeKey::from_u32(r.u32())?,
        q_norm: match r.u32() {
            0 => false,
            1 => true,
            _ => return None,
        },
        // 0..=3: f32, f16, bf16 and the FP8 cache (FlashMLA's layout).
        cache_dtype: DType::from_u32(r.u32())?,
        attn_mode: AttnMode::from_u32(r.u32())?,
        original_max_position: r.u32(),
        rms_norm_eps: r.f32(),
        rope_theta: r.f32(),
        rope_factor: r.f32(),
        beta_fast: r.f32(),
        beta_slow: r.f32(),
        mscale: r.f32(),
        mscale_all_dim: r.f32(),
        softmax_scale: r.f32(),
        // The ABI 2 fields keep their defaults here (the engine refuses the
        // mechanisms it does not run yet).
        ..Config::plain()
    })
}

/// Runs one token through an engine for `cfg` if its weights and memory are small.
fn small_engine(cfg: &Config) {
    let Ok(dm) = cfg.dims() else { return };
    let Ok(mem_bytes) = Engine::memory_bytes(cfg) else {
        return;
    };
    let shapes = [
        (dm.q_width, if dm.rq == 0 { dm.d } else { dm.rq }),
        (dm.rq, dm.d),
        (dm.kv_a_rows, dm.d),
        (dm.kv_b_rows, dm.r),
        (dm.d, dm.o_cols),
    ];
    let elems: usize = shapes
        .iter()
        .map(|(r, c)| r.saturating_mul(*c))
        .fold(0, usize::saturating_add);
    if elems > 1 << 16 || mem_bytes > 1 << 22 {
        return;
    }
    let rw = RandomWeights::new(cfg, DType::F32, 1);
    let w = rw.weights();
    let mut arena = Arena::new(mem_bytes);
    let mut e = Engine::new(cfg, &w, arena.get()).expect("engine for a valid config");
    let x: Vec<f32> = (0..dm.d).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut out = vec![0f32; dm.d];
    e.forward(&x, &mut out).expect("one token");
    assert_eq!(e.len(), 1);
}

fuzz_target!(|data: &[u8]| {
    let Some(cfg) = config(data) else { return };
    match cfg.validate() {
        Ok(()) => {
            let dm = cfg.dims().expect("dims of a valid config");
            assert_eq!(cfg.cache_values_per_token().unwrap(), dm.cache_row);
            let _ = cfg.cache_bytes_per_token();
            let _ = cfg.full_kv_bytes_per_token();
            let _ = Engine::memory_bytes(&cfg);
            let rp = RopeParams::from_config(&cfg);
            let mut inv = vec![0f64; (dm.p / 2).min(1 << 12)];
            if inv.len() == dm.p / 2 {
                rp.inv_freqs(&mut inv);
            }
            let _ = rp.attention_scaling();
            let _ = mla_core::rope::softmax_scale(&cfg);
            small_engine(&cfg);
        }
        Err(e) => assert_eq!(e.status(), Status::InvalidConfig),
    }
});
