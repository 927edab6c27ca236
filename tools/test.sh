#!/usr/bin/env bash
# Runs every test of mla-rt, from a fresh Debian machine: installs what it needs
# (tools/setup.sh), then format, clippy, the Rust tests (unit, golden vectors,
# no-allocation, parallel determinism), the C ABI (header freshness, C/C++
# programs under valgrind and ASan+UBSan, CMake/pkg-config), Miri, fuzzing, the
# aarch64 and bare-metal builds under qemu, and the CUDA feature without a GPU.
# Stops at the first failure. .ci/run calls this script.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
step() { printf '\n=== %s (%ss) ===\n' "$*" "$((SECONDS - start))"; }

step "setup"
bash tools/setup.sh

step "format"
cargo fmt --all -- --check

step "clippy (host, no_std core, aarch64, thumbv7em)"
cargo clippy --all-targets -- -D warnings
cargo clippy --lib --target aarch64-unknown-linux-gnu -- -D warnings
# no_std: the staticlib crate type needs a panic handler (the feature supplies it).
cargo clippy --lib --no-default-features --features panic-handler \
    --target thumbv7em-none-eabihf -- -D warnings

step "Rust tests (x86-64)"
cargo test

step "benchmarks and demos build"
cargo build --release --examples

# Each script below gets its own target dir. The library's crate types include
# staticlib/cdylib, so cargo names its rlib without a hash (deps/libmla.rlib):
# a build with other features or flags in the same dir (the firmware's host
# build, the cuda feature) overwrites it, and a later build links two `half`s.
T="${CARGO_TARGET_DIR:-$PWD/target}"

step "C ABI, C/C++ programs, valgrind, sanitizers, CMake, pkg-config"
CARGO_TARGET_DIR="$T/ffi-ci" bash .ci/ffi.sh

step "Miri"
CARGO_TARGET_DIR="$T/miri-ci" bash .ci/miri.sh

step "fuzzing"
bash .ci/fuzz.sh

step "aarch64 (qemu) and bare-metal Cortex-M"
CARGO_TARGET_DIR="$T/cross-ci" bash .ci/cross.sh

step "CUDA feature without a GPU"
CARGO_TARGET_DIR="$T/cuda-ci" bash .ci/cuda.sh

step "done"
echo "every test passed in $((SECONDS - start)) s"
