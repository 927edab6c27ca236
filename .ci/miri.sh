#!/usr/bin/env bash
# Runs the library's unit tests under Miri (undefined behaviour, out-of-bounds and
# misaligned accesses, provenance) with `cargo +nightly miri test --lib`.
#
# Tests too slow for Miri carry `#[cfg_attr(miri, ignore)]` in the source; MIRI_SKIP
# (space-separated test-name filters) skips more from here; by default the
# exhaustive GEMM sweep, which alone takes over 7 minutes under Miri (its kernels
# still run under Miri in the other kernel tests). Every test that ran is printed by
# the test harness ("test NAME ... ok"), ignored ones as "ignored".
#
# libm's x86 sqrt is inline assembly, which Miri cannot run: the feature
# `libm/force-soft-floats` selects its portable (equally exact) code for this run only.
# Installs the nightly toolchain with miri and rust-src when missing (as root).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^miri'; then
    rustup component add miri rust-src --toolchain nightly
fi

# Strict provenance: no integer-to-pointer casts anywhere in the tested code.
export MIRIFLAGS="${MIRIFLAGS:--Zmiri-strict-provenance}"
# The ISA sweeps of the kernels (minutes each under Miri; the plain test run
# covers every shape natively) are `#[cfg_attr(miri, ignore)]` in the source.
# MIRI_SKIP="name ..." skips more tests by name.
MIRI_SKIP="${MIRI_SKIP-}"

skip_args=()
for s in $MIRI_SKIP; do
    skip_args+=(--skip "$s")
done

start=$(date +%s)
cargo +nightly miri setup
echo "miri: MIRIFLAGS=$MIRIFLAGS${MIRI_SKIP:+, skipping: $MIRI_SKIP}"
cargo +nightly miri test -p mla-core --lib --features libm/force-soft-floats -- "${skip_args[@]}"
cargo +nightly miri test -p mla-rt --lib
echo "miri: lib tests clean under Miri in $(( $(date +%s) - start ))s"
