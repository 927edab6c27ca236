//! Generates include/mla.h from the C-facing Rust modules with cbindgen.
//!
//! cbindgen reads the crate root `src/lib.rs`: the package is the C ABI and
//! nothing else, so every public item it declares belongs in the header. The
//! items of the `cuda` module come out wrapped in `#if defined(MLA_FEATURE_CUDA)`
//! (cbindgen.toml `[defines]`).
//! The version macros (`MLA_VERSION_*`) come from Cargo.toml through the
//! `CARGO_PKG_VERSION_*` variables. The header is written only when its bytes
//! change (atomically, through a temporary file), so an unchanged header keeps
//! its mtime and `git diff --exit-code include/mla.h` works as a freshness check.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

/// Regenerates the header; on any failure prints a `cargo:warning` and returns.
pub fn generate() {
    // cbindgen may panic on input it does not understand (a half-written source
    // file while someone edits it): that must not fail the build either.
    match std::panic::catch_unwind(try_generate) {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => println!(
            "cargo:warning=include/mla.h not regenerated: {}",
            one_line(&e)
        ),
        Err(_) => println!("cargo:warning=include/mla.h not regenerated: cbindgen panicked"),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn var(name: &str) -> Result<String, String> {
    env::var(name).map_err(|_| format!("environment variable {name} is not set"))
}

/// The header text for the crate at `manifest_dir`.
pub fn render(manifest_dir: &Path) -> Result<Vec<u8>, String> {
    let mut config = cbindgen::Config::from_file(manifest_dir.join("cbindgen.toml"))?;
    let (major, minor, patch) = (
        var("CARGO_PKG_VERSION_MAJOR")?,
        var("CARGO_PKG_VERSION_MINOR")?,
        var("CARGO_PKG_VERSION_PATCH")?,
    );
    let version = var("CARGO_PKG_VERSION")?;
    let mut after = String::new();
    after.push_str("\n/** Version of the library this header belongs to (Cargo.toml). */\n");
    after.push_str(&format!("#define MLA_VERSION_MAJOR {major}\n"));
    after.push_str(&format!("#define MLA_VERSION_MINOR {minor}\n"));
    after.push_str(&format!("#define MLA_VERSION_PATCH {patch}\n"));
    after.push_str(&format!("#define MLA_VERSION_STRING \"{version}\"\n"));
    if let Some(extra) = config.after_includes.take() {
        after.push_str(&extra);
    }
    config.after_includes = Some(after);

    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(manifest_dir.join("src").join("lib.rs"))
        .generate()
        .map_err(|e| e.to_string())?;
    let mut text = Vec::new();
    bindings.write(&mut text);
    Ok(text)
}

/// Renders the header and writes include/mla.h if it changed; returns whether it did.
fn try_generate() -> Result<bool, String> {
    let manifest_dir = PathBuf::from(var("CARGO_MANIFEST_DIR")?);
    let text = render(&manifest_dir)?;
    let header = manifest_dir.join("include").join("mla.h");
    if fs::read(&header).ok().as_deref() == Some(text.as_slice()) {
        return Ok(false);
    }
    let dir = manifest_dir.join("include");
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // Several builds (different target dirs) may run at once: write a private
    // temporary file, then rename it over the header in one step.
    let tmp = dir.join(format!(".mla.h.{}.tmp", std::process::id()));
    fs::write(&tmp, &text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    fs::rename(&tmp, &header).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("{}: {e}", header.display())
    })?;
    Ok(true)
}
