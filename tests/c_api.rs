//! The C status test (tests/c/status_test.c) from `cargo test`: compiled with
//! the system C compiler against the library this very `cargo test` built, run,
//! and held to its exit status and its count of checks.
//!
//! Which library: cargo builds the `mla` library target with all its crate
//! types (staticlib, cdylib, rlib) into the profile's `deps` directory, the
//! directory that also holds this test binary, so `current_exe()`'s directory
//! has the `libmla.a` and `libmla.so` of the same build, for the same target.
//! (They are not copied up to `target/<profile>/` by `cargo test`; that copy
//! would be stale after a `cargo build` of other sources.) The header is
//! `include/mla.h`, which the same build regenerates.
//!
//! Which compiler: `$CC` or `cc` for a host build; for
//! `--target aarch64-unknown-linux-gnu`, `$CC_aarch64_unknown_linux_gnu` or
//! `aarch64-linux-gnu-gcc` (the linker .cargo/config.toml names), and the
//! program runs through the same runner cargo uses, .cargo/run-aarch64.sh
//! (directly on an aarch64 machine, under qemu-aarch64 elsewhere). Without a
//! compiler the test says "SKIPPED: ..." on stderr and passes; any other
//! failure (compile, link, run, a failed check) fails it.
//!
//! The same program runs under valgrind and the sanitizers in .ci/ffi.sh.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Checks the program ran at the time of writing; fewer means checks were lost.
const MIN_CHECKS: u64 = 1112;

/// System libraries the Rust staticlib needs on Linux (`--print native-static-libs`).
const NATIVE_LIBS: &[&str] = &[
    "-lgcc_s",
    "-lutil",
    "-lrt",
    "-lpthread",
    "-lm",
    "-ldl",
    "-lc",
];

const WARN: &[&str] = &[
    "-std=c11",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-pedantic",
    "-O1",
    "-g",
];

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The directory of this test binary: `target/[<triple>/]<profile>/deps`.
fn deps_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .expect("test binary has a directory")
        .to_path_buf()
}

/// The C compiler for this test's target and the runner for its programs, or
/// why there is none.
fn toolchain() -> Result<(String, Option<PathBuf>), String> {
    let (var, default, runner) = if cfg!(target_arch = "aarch64") {
        (
            "CC_aarch64_unknown_linux_gnu",
            "aarch64-linux-gnu-gcc",
            Some(manifest_dir().join(".cargo/run-aarch64.sh")),
        )
    } else {
        ("CC", "cc", None)
    };
    let cc = std::env::var(var).unwrap_or_else(|_| default.to_string());
    match Command::new(&cc).arg("--version").output() {
        Ok(o) if o.status.success() => Ok((cc, runner)),
        Ok(o) => Err(format!("{cc} --version failed: {}", o.status)),
        Err(e) => Err(format!("no C compiler ({cc}: {e})")),
    }
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// `N checks, M failures` from the program's last line.
fn counts(output: &str) -> Option<(u64, u64)> {
    let last = output.lines().rev().find(|l| l.contains(" checks, "))?;
    let mut words = last.split_whitespace();
    let checks = words.next()?.parse().ok()?;
    let failures = words.nth(1)?.parse().ok()?;
    Some((checks, failures))
}

/// Builds status_test.c against `lib_args` into `exe`, runs it, checks the result.
fn build_and_run(cc: &str, runner: Option<&Path>, name: &str, lib_args: &[String]) {
    let root = manifest_dir();
    let out_dir = deps_dir().join("..").join("c_api");
    std::fs::create_dir_all(&out_dir).expect("output directory");
    let exe = out_dir.join(format!("{name}-{}", std::process::id()));
    let mut compile = Command::new(cc);
    compile
        .args(WARN)
        .arg("-I")
        .arg(root.join("include"))
        .arg(root.join("tests/c/status_test.c"))
        .args(lib_args)
        .arg("-o")
        .arg(&exe);
    let (ok, text) = run(&mut compile);
    assert!(
        ok,
        "{name}: compiling tests/c/status_test.c failed:\n{compile:?}\n{text}"
    );

    let data = root.join("tests/data/tutorial.safetensors");
    let mut program = match runner {
        Some(r) => {
            let mut c = Command::new(r);
            c.arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    program.arg(&data).current_dir(&root);
    let (ok, text) = run(&mut program);
    let _ = std::fs::remove_file(&exe);
    let tail: Vec<&str> = text.lines().rev().take(40).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    let tail = tail.join("\n");
    let failed: Vec<&str> = text.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        ok && failed.is_empty(),
        "{name}: status_test failed:\n{}\n...\n{tail}",
        failed.join("\n")
    );
    let (checks, failures) =
        counts(&text).unwrap_or_else(|| panic!("{name}: no 'N checks, M failures' line:\n{tail}"));
    assert_eq!(failures, 0, "{name}:\n{tail}");
    assert!(
        checks >= MIN_CHECKS,
        "{name}: only {checks} checks ran, expected at least {MIN_CHECKS}:\n{tail}"
    );
    assert!(
        text.contains("MLA_ERR_CACHE_FULL") && !text.contains("NOT SEEN"),
        "{name}: not every status was provoked:\n{tail}"
    );
    eprintln!("{name}: {checks} checks passed");
}

fn library(name: &str) -> PathBuf {
    let p = deps_dir().join(name);
    assert!(
        p.is_file(),
        "{} is missing: cargo builds the staticlib and cdylib next to the test binary",
        p.display()
    );
    p
}

#[test]
fn status_test_static() {
    let (cc, runner) = match toolchain() {
        Ok(t) => t,
        Err(why) => {
            eprintln!("SKIPPED: status_test_static: {why}");
            return;
        }
    };
    let mut args = vec![library("libmla.a").display().to_string()];
    args.extend(NATIVE_LIBS.iter().map(|s| s.to_string()));
    build_and_run(&cc, runner.as_deref(), "status_test_static", &args);
}

#[test]
fn status_test_shared() {
    let (cc, runner) = match toolchain() {
        Ok(t) => t,
        Err(why) => {
            eprintln!("SKIPPED: status_test_shared: {why}");
            return;
        }
    };
    let lib = library("libmla.so");
    let dir = lib.parent().expect("deps directory").display().to_string();
    let args = vec![
        lib.display().to_string(),
        format!("-Wl,-rpath,{dir}"),
        // DT_RPATH, not DT_RUNPATH: cargo's LD_LIBRARY_PATH also names the
        // profile directory, where an older `cargo build` may have left a
        // stale libmla.so; RPATH is searched before LD_LIBRARY_PATH.
        "-Wl,--disable-new-dtags".to_string(),
        "-lm".to_string(),
    ];
    build_and_run(&cc, runner.as_deref(), "status_test_shared", &args);
}
