#!/usr/bin/env bash
# Runs every test of mla-rt, from a fresh Debian machine: installs what it needs
# (tools/setup.sh test), then format, clippy, the Rust tests (unit, golden vectors,
# no-allocation, parallel determinism), the README's examples as written, the C ABI
# (header freshness, C/C++ programs under valgrind and ASan+UBSan, CMake/pkg-config),
# Miri, fuzzing, the aarch64 and bare-metal builds under qemu, and the CUDA feature
# without a GPU. Stops at the first failure; at the end prints a summary of the key
# figures (the README quotes them). .ci/run calls this script.
#
# Every step's output is also kept in $CARGO_TARGET_DIR/test-logs/ (default
# target/test-logs/), which the summary reads.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
step() { printf '\n=== %s (%ss) ===\n' "$*" "$((SECONDS - start))"; }

T="${CARGO_TARGET_DIR:-$PWD/target}"
case $T in /*) ;; *) T=$PWD/$T ;; esac
LOGS=$T/test-logs
mkdir -p "$LOGS"
# logged NAME CMD...: runs CMD with its output on stdout and in $LOGS/NAME.log.
logged() {
    local name=$1
    shift
    "$@" 2>&1 | tee "$LOGS/$name.log"
}

step "setup"
bash tools/setup.sh test
# rustup may have just been installed: its bin directory is not on our PATH yet.
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

step "format"
cargo fmt --all -- --check

step "clippy (host, no_std core, aarch64, thumbv7em)"
cargo clippy --all-targets -- -D warnings
cargo clippy --lib --target aarch64-unknown-linux-gnu -- -D warnings
cargo clippy -p mla-core --target thumbv7em-none-eabihf -- -D warnings
# no_std: the staticlib crate type needs a panic handler (the feature supplies it).
# `-p mla-rt`: without it the default members are checked too, and mla-testkit's
# mla-core with `std` would be unified into this no_std build.
cargo clippy -p mla-rt --lib --no-default-features --features panic-handler \
    --target thumbv7em-none-eabihf -- -D warnings

step "Rust tests (x86-64)"
cargo test
# The golden test again, with its per-case worst errors shown (nothing is rebuilt).
logged golden cargo test -q --test golden f32_matches_reference -- --nocapture
# The FP8 latent cache's per-case errors (its README table).
logged fp8 cargo test -q --test fp8_cache fp8_cache_within -- --nocapture

step "benchmarks and demos build"
cargo build --release --examples

step "the README's examples, as written (.ci/readme.sh)"
logged readme bash .ci/readme.sh

# One target dir for every script but the CUDA one. Since the workspace split, the
# firmware builds mla-core (an rlib with hashed file names) and every other build of
# the root package here uses its default features, so nothing overwrites another
# build's output. The `cuda` feature does: it builds the root package with other
# features, and the package's unhashed deps/libmla.rlib (it is also a staticlib and
# a cdylib) is then replaced, so the next default build links the wrong one. Hence
# target/cuda for .ci/cuda.sh.

step "C ABI, C/C++ programs, valgrind, sanitizers, CMake, pkg-config"
logged ffi bash .ci/ffi.sh

step "Miri"
bash .ci/miri.sh

step "fuzzing"
bash .ci/fuzz.sh

step "aarch64 (qemu) and bare-metal Cortex-M"
logged cross bash .ci/cross.sh

step "CUDA feature without a GPU"
CARGO_TARGET_DIR="$T/cuda" logged cuda bash .ci/cuda.sh

step "done"
echo "every test passed in $((SECONDS - start)) s"
echo "$((SECONDS - start))" >"$LOGS/seconds"

# ---------------------------------------------------------------- summary
echo
echo "=== summary (from $LOGS) ==="
echo "golden cases, f32, worst relative error over 9 runs each (bound 1e-5):"
grep -E '^[a-z0-9_]+: [0-9]+ tokens, 9 runs, worst rel err' "$LOGS/golden.log" | sed 's/^/  /'
echo "FP8 latent cache against the f32 reference (bound 5e-2):"
grep -E '^\| ' "$LOGS/fp8.log" | sed 's/^/  /'
echo "C status test (tests/c/status_test.c):"
grep -E '^[0-9]+ checks, [0-9]+ failures' "$LOGS/ffi.log" | head -n 1 | sed 's/^/  /'
echo "README examples:"
tail -n 1 "$LOGS/readme.log" | sed 's/^/  /'
echo "tutorial demos, max error (x86-64, then aarch64 under qemu):"
sed -n '/^x86-64:$/,/^aarch64 and x86-64\|^note: aarch64/p' "$LOGS/cross.log" | sed 's/^/  /'
echo "firmware (Rust) on qemu-system-arm:"
grep -E '^  \| (engine memory|mla-firmware: PASS)' "$LOGS/cross.log" | sed 's/^  | /  /'
echo "firmware .text (arm-none-eabi-size -A):"
grep -E '^firmware(-c)? \.text: ' "$LOGS/cross.log" | sed 's/^/  /'
echo "CUDA (no GPU): stub driver, then the CPU emulator:"
grep -E 'CUDA tests SKIPPED' "$LOGS/cuda.log" | sed 's/^/  /'
grep -E '^test result' "$LOGS/cuda.log" | tail -n 1 | sed 's/^/  /'
echo "toolchain: $(rustc --version)"
echo
echo "python3 tools/readme_figures.py writes these figures into README.md."
