#!/usr/bin/env bash
# Builds the cargo-fuzz targets in fuzz/ and runs each for a bounded time
# (FUZZ_SECONDS, default 30; two at a time, one per core) starting from the
# committed seeds in fuzz/corpus/<target>/. Fails if any target crashes, panics,
# leaks past the RSS limit or hangs. New corpus entries go to a temporary
# folder; a crashing input is saved under fuzz/artifacts/<target>/ (libFuzzer
# prints the path).
#
# Installs what it needs on a fresh machine (as root): the nightly toolchain and
# cargo-fuzz, each skipped when already present.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS="${FUZZ_SECONDS:-30}"
TARGETS="${FUZZ_TARGETS:-safetensors json config engine_calls batch_calls hf_config}"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

start=$(date +%s)
echo "fuzz: building targets ($(rustc +nightly --version))"
# Default flags: release, debug assertions and overflow checks on, AddressSanitizer.
(cd fuzz && cargo +nightly fuzz build)

# One target, its output on stdout; non-zero when it found a crash.
run_target() {
    local t=$1 work
    work=$(mktemp -d)
    echo "fuzz: running $t for ${SECS}s (seeds: fuzz/corpus/$t)"
    if ! (cd fuzz && cargo +nightly fuzz run "$t" "$work" "corpus/$t" -- \
            -max_total_time="$SECS" -timeout=20 -rss_limit_mb=2048 \
            -print_final_stats=1 2>&1 | grep -v -E '^#[0-9]+\s+(NEW|REDUCE|pulse)'); then
        echo "fuzz: FAILED: target $t found a crash (see fuzz/artifacts/$t/)"
        rm -rf "$work"
        return 1
    fi
    echo "fuzz: $t ok, corpus grew to $(ls "$work" | wc -l) new inputs"
    rm -rf "$work"
}

# Targets one after another, stopping at the first crash.
lane() {
    local t
    for t in "$@"; do
        run_target "$t" || return 1
    done
}

# Each libFuzzer run uses one core: the targets go in two lanes, one per core
# of a two-core machine, each target still for its full $SECS. Each lane's
# output is kept apart and printed whole once both are done.
read -r -a all <<<"$TARGETS"
lane_a=() lane_b=()
for i in "${!all[@]}"; do
    if ((i % 2 == 0)); then lane_a+=("${all[$i]}"); else lane_b+=("${all[$i]}"); fi
done
logs=$(mktemp -d)
rc=0
lane "${lane_a[@]}" >"$logs/a.log" 2>&1 &
pa=$!
if ((${#lane_b[@]} > 0)); then lane "${lane_b[@]}" >"$logs/b.log" 2>&1 || rc=1; fi
wait "$pa" || rc=1
cat "$logs/a.log"
[ -f "$logs/b.log" ] && cat "$logs/b.log"
rm -rf "$logs"
[ "$rc" = 0 ] || exit 1
echo "fuzz: all targets ok ($TARGETS) in $(( $(date +%s) - start ))s"
