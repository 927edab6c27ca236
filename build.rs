//! Build script: generates include/mla.h (cbindgen, see build/header.rs). The
//! CUDA kernels are built by crates/mla-cuda's own build script.
//!
//! Header generation never fails the build: a problem is reported as a
//! `cargo:warning` and the committed header is left as it is (CI checks that
//! it is fresh with `git diff --exit-code include/mla.h`).

#[path = "build/header.rs"]
mod header;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build");
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    header::generate();
    // An unversioned SONAME, so programs linked with `-lmla` (or the CMake
    // target mla::mla_shared) record `libmla.so`, not the build path.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libmla.so");
    }
}
