//! Build script of the firmware:
//! - puts memory.x where the linker finds it (cortex-m-rt's link.x includes it);
//! - sizes the engine's static memory exactly: reads the tutorial golden file's
//!   config (host build of mla-core), applies the run plan (src/plan.rs) and writes
//!   `ARENA_BYTES = Engine::memory_bytes(&cfg)` to $OUT_DIR/arena.rs.
use mla_core::safetensors::{config_from_metadata, SafeTensors};
use mla_core::{Config, Engine};
use std::{env, fs, path::PathBuf};

include!("src/plan.rs");

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    fs::write(out.join("memory.x"), include_bytes!("memory.x")).expect("write memory.x");
    println!("cargo:rustc-link-search={}", out.display());

    let golden = dir.join("../../tests/data/tutorial.safetensors");
    let bytes = fs::read(&golden).unwrap_or_else(|e| panic!("{}: {e}", golden.display()));
    let st = SafeTensors::parse(&bytes).expect("tutorial.safetensors: parse");
    let mut cfg = config_from_metadata(&st, &Config::tutorial()).expect("tutorial config");
    cfg.max_seq_len = T as u32;
    cfg.max_tokens_per_call = CHUNK as u32;
    let need = Engine::memory_bytes(&cfg).expect("Engine::memory_bytes");
    fs::write(
        out.join("arena.rs"),
        format!(
            "/// `Engine::memory_bytes` of the run plan (computed by build.rs).\n\
             pub const ARENA_BYTES: usize = {need};\n"
        ),
    )
    .expect("write arena.rs");

    for f in ["memory.x", "build.rs", "src/plan.rs", "../../crates/mla-core/src"] {
        println!("cargo:rerun-if-changed={f}");
    }
    println!("cargo:rerun-if-changed={}", golden.display());
}
