//! Build script of mla-cuda: compiles `kernels/mla.cu` into
//!   - `$OUT_DIR/mla_sm72.ptx`: PTX for sm_72 (CUDA-core kernels only), loaded on
//!     devices of compute capability < 8.0 (Xavier; Turing JITs it too);
//!   - `$OUT_DIR/mla_sm80.ptx`: PTX for sm_80 (adds the tensor-core attention and
//!     cp.async), loaded on 8.0 and newer (A100, Orin sm_87, H100/H200 sm_90);
//!   - `$OUT_DIR/mla.fatbin`: with nvcc, a fatbin holding machine code (SASS)
//!     for sm_72 (when this nvcc still supports it), sm_87 and sm_90, plus PTX
//!     for compute_72 (or 75) and compute_80; the engine then loads it instead of
//!     the PTX. Empty with clang (clang emits PTX only; SASS needs NVIDIA's ptxas),
//!     or when `MLA_CUDA_FATBIN=0`.
//!
//! `src/lib.rs` embeds all three.
//!
//! Compiler, first found wins:
//! 1. `MLA_CUDA_PTX_DIR=<dir>` holding prebuilt `mla_sm72.ptx` and `mla_sm80.ptx`
//!    (no compiler, no fatbin);
//! 2. nvcc: `$NVCC`, `$CUDA_PATH/bin/nvcc`, `nvcc` on `PATH`,
//!    `/usr/local/cuda/bin/nvcc`: `nvcc -ptx -arch=compute_72 -O3` (CUDA 13 dropped
//!    compute_72: then compute_75) and `-arch=compute_80`;
//! 3. clang's NVPTX back end: `$MLA_CUDA_CLANG`, else `clang-14` .. `clang-19`,
//!    `clang` on `PATH`: `-x cuda --cuda-device-only -nocudainc -nocudalib
//!    --cuda-gpu-arch=sm_72 -O3 -S` with PTX ISA 6.4, and sm_80 with ISA 7.0 (the
//!    first ISA with sm_80, mma.sync .bf16 and cp.async; JetPack 5's CUDA 11.4
//!    driver loads up to 7.4).
//!
//! `MLA_CUDA_COMPILER=nvcc|clang` forces one of the two. With no compiler the
//! build fails with a message saying what to install.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels");
    build();
}

/// The two PTX builds: (file, clang arch, clang PTX ISA feature, nvcc archs to try).
const PTX_BUILDS: [(&str, &str, &str, &[&str]); 2] = [
    ("mla_sm72.ptx", "sm_72", "+ptx64", &["72", "75"]),
    ("mla_sm80.ptx", "sm_80", "+ptx70", &["80"]),
];

fn build() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default());
    let src = manifest.join("kernels").join("mla.cu");
    println!("cargo:rerun-if-changed={}", src.display());
    for var in [
        "MLA_CUDA_PTX_DIR",
        "MLA_CUDA_COMPILER",
        "MLA_CUDA_CLANG",
        "MLA_CUDA_FATBIN",
        "NVCC",
        "CUDA_PATH",
        "PATH",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let fatbin = out_dir.join("mla.fatbin");
    // Empty unless nvcc builds one below.
    if let Err(e) = std::fs::write(&fatbin, b"") {
        fail(&format!("cannot write {}: {e}", fatbin.display()));
    }

    if let Some(dir) = env::var_os("MLA_CUDA_PTX_DIR") {
        for (file, ..) in PTX_BUILDS {
            let pre = Path::new(&dir).join(file);
            println!("cargo:rerun-if-changed={}", pre.display());
            if let Err(e) = std::fs::copy(&pre, out_dir.join(file)) {
                fail(&format!(
                    "MLA_CUDA_PTX_DIR: cannot copy {}: {e}",
                    pre.display()
                ));
            }
        }
        return;
    }

    let force = env::var("MLA_CUDA_COMPILER").unwrap_or_default();
    let mut tried = Vec::new();
    if force != "clang" {
        if let Some(nvcc) = find_nvcc() {
            if build_nvcc(&nvcc, &src, &out_dir) {
                if env::var("MLA_CUDA_FATBIN").ok().as_deref() != Some("0") {
                    build_fatbin(&nvcc, &src, &fatbin);
                }
                return;
            }
            tried.push(nvcc.display().to_string());
        }
    }
    if force != "nvcc" {
        for clang in clang_candidates() {
            match build_clang(&clang, &src, &out_dir) {
                None => continue, // not installed
                Some(true) => return,
                Some(false) => tried.push(clang),
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
         MLA_CUDA_CLANG), or takes prebuilt files from MLA_CUDA_PTX_DIR."
    ));
}

/// Both PTX files with nvcc; false if one failed.
fn build_nvcc(nvcc: &Path, src: &Path, out_dir: &Path) -> bool {
    for (file, _, _, archs) in PTX_BUILDS {
        let out = out_dir.join(file);
        let mut ok = false;
        for (i, a) in archs.iter().enumerate() {
            let mut cmd = Command::new(nvcc);
            cmd.arg("-ptx")
                .arg(format!("-arch=compute_{a}"))
                .arg("-O3")
                .arg("-o")
                .arg(&out)
                .arg(src);
            if run(&mut cmd, &out) {
                if i > 0 {
                    println!(
                        "cargo:warning=mla-rt cuda: nvcc cannot target compute_{}; {file} is compute_{a}",
                        archs.first().copied().unwrap_or("?")
                    );
                }
                ok = true;
                break;
            }
        }
        if !ok {
            return false;
        }
    }
    true
}

/// The fatbin: SASS for the listed GPUs this nvcc supports, PTX for compute_72
/// (or 75) and compute_80. A failure leaves it empty (the PTX is used) with a warning.
fn build_fatbin(nvcc: &Path, src: &Path, fatbin: &Path) {
    let supported = Command::new(nvcc)
        .arg("--list-gpu-code")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    let has = |code: &str| {
        supported
            .as_deref()
            .is_none_or(|s| s.lines().any(|l| l.trim() == code))
    };
    let mut gencode = Vec::new();
    if has("sm_72") {
        gencode.push("arch=compute_72,code=[sm_72,compute_72]".to_string());
    } else if has("sm_75") {
        gencode.push("arch=compute_75,code=compute_75".to_string());
    }
    gencode.push("arch=compute_80,code=compute_80".to_string());
    for sm in ["87", "90"] {
        if has(&format!("sm_{sm}")) {
            gencode.push(format!("arch=compute_{sm},code=sm_{sm}"));
        }
    }
    let mut cmd = Command::new(nvcc);
    cmd.arg("-fatbin").arg("-O3");
    for g in &gencode {
        cmd.arg("-gencode").arg(g);
    }
    cmd.arg("-o").arg(fatbin).arg(src);
    if !run(&mut cmd, fatbin) {
        let _ = std::fs::write(fatbin, b"");
        println!("cargo:warning=mla-rt cuda: nvcc -fatbin failed; the engine loads the PTX");
    }
}

/// Both PTX files with one clang; None if it is not installed.
fn build_clang(clang: &str, src: &Path, out_dir: &Path) -> Option<bool> {
    for (file, arch, isa, _) in PTX_BUILDS {
        let out = out_dir.join(file);
        let mut cmd = Command::new(clang);
        cmd.args([
            "-x",
            "cuda",
            "--cuda-device-only",
            "-nocudainc",
            "-nocudalib",
        ])
        .arg(format!("--cuda-gpu-arch={arch}"))
        .args(["-Xclang", "-target-feature", "-Xclang", isa])
        .args(["-O3", "-S", "-o"])
        .arg(&out)
        .arg(src);
        match cmd.output() {
            Err(_) => return None,
            Ok(o) if o.status.success() && out.is_file() => {}
            Ok(o) => {
                eprintln!("{clang} failed:\n{}", String::from_utf8_lossy(&o.stderr));
                return Some(false);
            }
        }
    }
    Some(true)
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
