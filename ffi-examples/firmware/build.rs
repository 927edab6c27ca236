//! Build script of the firmware: puts memory.x where the linker finds it
//! (cortex-m-rt's link.x includes it). The engine's static memory is sized in
//! src/main.rs by the const `Engine::memory_bytes_const`, evaluated by the
//! compiler for this target: no host build of the library is needed.
use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    fs::write(out.join("memory.x"), include_bytes!("memory.x")).expect("write memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    for f in ["memory.x", "build.rs"] {
        println!("cargo:rerun-if-changed={f}");
    }
}
