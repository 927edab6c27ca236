use mla_core::safetensors::bind_weights;
use mla_core::{Config, Engine};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The weights: a safetensors file, copied into 8-byte aligned memory, because
    // the tensors are borrowed in place (zero-copy) and f32 needs 4-byte alignment.
    let path = std::env::args().nth(1);
    let raw = std::fs::read(path.as_deref().unwrap_or("tests/data/tutorial.safetensors"))?;
    let mut words = vec![0u64; raw.len().div_ceil(8)];
    bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..raw.len()].copy_from_slice(&raw);
    let file = &bytemuck::cast_slice::<u64, u8>(&words)[..raw.len()];

    // A config: a preset (or deepseek_v2_lite(), deepseek_v3()), fields changed, checked.
    let mut cfg = Config::tutorial();
    cfg.max_seq_len = 256; // cache capacity, tokens
    cfg.max_tokens_per_call = 64; // sizes the scratch
    cfg.validate()?;
    let weights = bind_weights(file, "model.layers.0.self_attn.", &cfg)?;

    // Memory: one 64-byte aligned buffer holds the cache, the RoPE tables and all
    // scratch; the engine never allocates. A `static` works as well as a Vec.
    let need = Engine::memory_bytes(&cfg)?;
    let mut buf = vec![0u8; need + Engine::MEMORY_ALIGN];
    let off = buf.as_ptr().align_offset(Engine::MEMORY_ALIGN);
    let mut engine = Engine::new(&cfg, &weights, &mut buf[off..off + need])?;

    // Prefill 4 tokens in one call, then decode 3, one per call.
    // x and out are [n_tokens][hidden_size] f32.
    let d = cfg.hidden_size as usize;
    let x: Vec<f32> = (0..4 * d).map(|i| (i % 17) as f32 / 17.0 - 0.5).collect();
    let mut out = vec![0.0f32; 4 * d];
    engine.forward(&x, &mut out)?; // positions 0..3
    for t in 0..3 {
        engine.forward(&x[t * d..(t + 1) * d], &mut out[..d])?; // positions 4, 5, 6
    }
    println!("{} tokens cached, out[0] = {:.6}", engine.len(), out[0]);

    engine.truncate(5)?; // roll back to the first 5 tokens; reset() empties
    println!("after truncate(5): {} tokens cached", engine.len());
    Ok(())
}
