//! Build script of mla-cuda: compiles `kernels/mla.cu` to `$OUT_DIR/mla.ptx`,
//! which `src/lib.rs` embeds with `include_str!`.
//!
//! Compiler, first found wins:
//! 1. `MLA_CUDA_PTX=<file>`: use this prebuilt PTX as it is (no compiler);
//! 2. nvcc: `$NVCC`, `$CUDA_PATH/bin/nvcc`, `nvcc` on `PATH`,
//!    `/usr/local/cuda/bin/nvcc`: `nvcc -ptx -arch=compute_XX -O3`;
//! 3. clang's NVPTX back end: `$MLA_CUDA_CLANG`, else `clang-14` .. `clang-19`,
//!    `clang` on `PATH`: `-x cuda --cuda-device-only -nocudainc -nocudalib
//!    --cuda-gpu-arch=sm_XX -O3 -S` with PTX ISA 6.4 for sm_7x (`+ptx64`: CUDA
//!    10.1 and later drivers load it), the lowest ISA that supports the arch
//!    above that (sm_80: 7.0, sm_86: 7.1, sm_87: 7.4), or `MLA_CUDA_PTX_ISA`
//!    (e.g. `ptx75`).
//!
//! Architecture: `MLA_CUDA_ARCH` (`sm_72` by default: Jetson Xavier; the driver
//! JIT-compiles the PTX for newer GPUs such as Orin `sm_87`, A100 `sm_80`, H100
//! `sm_90`). nvcc 13 cannot target compute_72: with the default arch, nvcc is
//! retried with compute_75. `MLA_CUDA_COMPILER=nvcc|clang` forces one of the two.
//! With no compiler the build fails with a message saying what to install.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels");
    build();
}

/// Builds `$OUT_DIR/mla.ptx`.
fn build() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default());
    let src = manifest.join("kernels").join("mla.cu");
    let out = out_dir.join("mla.ptx");
    println!("cargo:rerun-if-changed={}", src.display());
    for var in [
        "MLA_CUDA_ARCH",
        "MLA_CUDA_PTX",
        "MLA_CUDA_COMPILER",
        "MLA_CUDA_CLANG",
        "MLA_CUDA_PTX_ISA",
        "NVCC",
        "CUDA_PATH",
        "PATH",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    if let Some(pre) = env::var_os("MLA_CUDA_PTX") {
        println!("cargo:rerun-if-changed={}", Path::new(&pre).display());
        if let Err(e) = std::fs::copy(&pre, &out) {
            fail(&format!(
                "MLA_CUDA_PTX={}: cannot copy: {e}",
                Path::new(&pre).display()
            ));
        }
        return;
    }

    let arch_set = env::var("MLA_CUDA_ARCH").ok();
    let arch = arch_set.clone().unwrap_or_else(|| "sm_72".to_string());
    let digits = arch
        .trim_start_matches("sm_")
        .trim_start_matches("compute_");
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_alphanumeric()) {
        fail(&format!("MLA_CUDA_ARCH={arch}: expected the form sm_72"));
    }
    let force = env::var("MLA_CUDA_COMPILER").unwrap_or_default();

    let mut tried = Vec::new();
    if force != "clang" {
        if let Some(nvcc) = find_nvcc() {
            // CUDA 13 no longer compiles for compute_72: without an explicit
            // MLA_CUDA_ARCH, fall back to compute_75 (Turing and newer).
            let mut archs = vec![digits.to_string()];
            if arch_set.is_none() {
                archs.push("75".to_string());
            }
            for a in archs {
                let mut cmd = Command::new(&nvcc);
                cmd.arg("-ptx")
                    .arg(format!("-arch=compute_{a}"))
                    .arg("-O3")
                    .arg("-o")
                    .arg(&out)
                    .arg(&src);
                if run(&mut cmd, &out) {
                    if a != digits {
                        println!("cargo:warning=mla-rt cuda: nvcc cannot target compute_{digits}; built PTX for compute_{a}");
                    }
                    return;
                }
            }
            tried.push(nvcc.display().to_string());
        }
    }
    if force != "nvcc" {
        let isa = env::var("MLA_CUDA_PTX_ISA").unwrap_or_else(|_| ptx_isa_for(digits).to_string());
        for clang in clang_candidates() {
            let mut cmd = Command::new(&clang);
            cmd.args([
                "-x",
                "cuda",
                "--cuda-device-only",
                "-nocudainc",
                "-nocudalib",
            ])
            .arg(format!("--cuda-gpu-arch=sm_{digits}"))
            .args(["-Xclang", "-target-feature", "-Xclang"])
            .arg(format!("+{isa}"))
            .args(["-O3", "-S", "-o"])
            .arg(&out)
            .arg(&src);
            match cmd.output() {
                Err(_) => continue, // not installed
                Ok(o) if o.status.success() && out.is_file() => return,
                Ok(o) => {
                    eprintln!("{} failed:\n{}", clang, String::from_utf8_lossy(&o.stderr));
                    tried.push(clang);
                }
            }
        }
    }
    let what = if tried.is_empty() {
        "no CUDA compiler found".to_string()
    } else {
        format!("compiling kernels/mla.cu failed with: {}", tried.join(", "))
    };
    fail(&format!(
        "{what}.\nThe `cuda` feature compiles kernels/mla.cu to PTX with nvcc (set NVCC or \
         CUDA_PATH) or with clang's NVPTX back end (apt-get install clang-14 llvm-14, or set \
         MLA_CUDA_CLANG), or takes a prebuilt file from MLA_CUDA_PTX."
    ));
}

/// The lowest PTX ISA version that can target `sm_<digits>` (never below 6.4,
/// which the warp-synchronous shuffles need; CUDA 10.1 drivers load it).
fn ptx_isa_for(digits: &str) -> &'static str {
    match digits
        .trim_end_matches(|c: char| c.is_ascii_alphabetic())
        .parse::<u32>()
    {
        Ok(a) if a >= 89 => "ptx78",
        Ok(a) if a >= 87 => "ptx74",
        Ok(a) if a >= 86 => "ptx71",
        Ok(a) if a >= 80 => "ptx70",
        _ => "ptx64",
    }
}

/// The nvcc to use, if any.
fn find_nvcc() -> Option<PathBuf> {
    if let Some(p) = env::var_os("NVCC") {
        return Some(PathBuf::from(p));
    }
    if let Some(root) = env::var_os("CUDA_PATH") {
        let p = Path::new(&root).join("bin").join("nvcc");
        if p.is_file() {
            return Some(p);
        }
    }
    if let Some(paths) = env::var_os("PATH") {
        for dir in env::split_paths(&paths) {
            let p = dir.join("nvcc");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let p = PathBuf::from("/usr/local/cuda/bin/nvcc");
    p.is_file().then_some(p)
}

/// clang executables to try, in order.
fn clang_candidates() -> Vec<String> {
    if let Ok(c) = env::var("MLA_CUDA_CLANG") {
        return vec![c];
    }
    let mut v: Vec<String> = (14..=19).map(|n| format!("clang-{n}")).collect();
    v.push("clang".to_string());
    v
}

/// Runs a compiler; true when it succeeded and wrote `out`.
fn run(cmd: &mut Command, out: &Path) -> bool {
    match cmd.output() {
        Ok(o) if o.status.success() && out.is_file() => true,
        Ok(o) => {
            eprintln!(
                "{:?} failed:\n{}{}",
                cmd,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            false
        }
        Err(e) => {
            eprintln!("{cmd:?}: {e}");
            false
        }
    }
}

/// Stops the build with a message (only reached with the `cuda` feature on).
fn fail(msg: &str) -> ! {
    eprintln!("error: mla-rt `cuda` feature: {msg}");
    println!(
        "cargo:warning=mla-rt cuda: {}",
        msg.lines().next().unwrap_or(msg)
    );
    std::process::exit(1);
}
