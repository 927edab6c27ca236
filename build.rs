//! Build script: generates include/mla.h (cbindgen, see build/header.rs) and,
//! with the `cuda` feature, the PTX kernels (build/ptx.rs).
//!
//! Header generation never fails the build: a problem is reported as a
//! `cargo:warning` and the committed header is left as it is (CI checks that
//! it is fresh with `git diff --exit-code include/mla.h`).

#[path = "build/header.rs"]
mod header;
#[path = "build/ptx.rs"]
mod ptx;

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
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        ptx::build();
    }
}
