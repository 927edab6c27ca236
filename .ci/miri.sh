#!/usr/bin/env bash
# Runs the unit tests of the modules that hold unsafe code (or drive it) under Miri:
# undefined behaviour, out-of-bounds and misaligned accesses, provenance.
#
# What runs: mla-core's `attention`, `engine`, `dsa`, `kernels`, `parallel`, `plan`,
# `cache`, `dtype` and `fp8` tests, and every unit test of the C library (mla-rt).
# The other mla-core modules (config, decimal, json, rope, safetensors, status,
# weights) are `#[forbid(unsafe_code)]` in crates/mla-core/src/lib.rs: Miri has
# nothing to find there that the native runs do not, so their tests are left to
# `cargo test`. Tests too slow for Miri (the ISA sweeps, the long engine
# comparisons) carry `#[cfg_attr(miri, ignore)]` in the source and show as
# "ignored"; the rest shrink their sizes under `cfg!(miri)`.
#
# mla-core's tests run as three Miri processes: attention, engine, and the rest
# (then the C library's). libm's x86 sqrt is inline assembly, which Miri cannot run: the
# feature `libm/force-soft-floats` selects its portable (equally exact) code for
# this run only. Installs the nightly toolchain with miri and rust-src when
# missing (as root).
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
core=(cargo +nightly miri test -p mla-core --lib --features libm/force-soft-floats)

start=$(date +%s)
cargo +nightly miri setup
echo "miri: MIRIFLAGS=$MIRIFLAGS"
# The modules of lib.rs not marked forbid(unsafe_code), as test-name filters.
mods=$(awk '/^#\[forbid\(unsafe_code\)\]/ { skip = 1; next }
            /^(pub )?mod [a-z_0-9]+;/ { m = $NF; sub(";", "", m); if (!skip) print m "::"; }
            { skip = 0 }' crates/mla-core/src/lib.rs)
rest=$(echo "$mods" | grep -v -x -e 'attention::' -e 'engine::' | tr '\n' ' ')
echo "miri: mla-core modules with unsafe code: $(echo $mods)"
"${core[@]}" --no-run
# Three processes: attention, engine (each a few minutes), the rest with the C
# library's tests after it. Their logs are shown in turn when all have finished.
logs=${TMPDIR:-/tmp}/mla-miri.$$
mkdir -p "$logs"
"${core[@]}" -- attention:: >"$logs/attention.log" 2>&1 &
pa=$!
"${core[@]}" -- engine:: >"$logs/engine.log" 2>&1 &
pe=$!
rc=0
# shellcheck disable=SC2086 # one filter per word
"${core[@]}" -- $rest || rc=1
cargo +nightly miri test -p mla-rt --lib || rc=1
for p in "$pa:attention" "$pe:engine"; do
    wait "${p%%:*}" || rc=1
    echo "--- mla-core ${p#*:}:: under Miri"
    cat "$logs/${p#*:}.log"
done
rm -rf "$logs"
[ "$rc" = 0 ] || { echo "miri: tests failed (above)" >&2; exit 1; }
echo "miri: clean in $(($(date +%s) - start))s"
