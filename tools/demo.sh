#!/usr/bin/env bash
# The main job: set up (tools/setup.sh demo: a C compiler and the Rust toolchain),
# build the library, and run the C demo, then the Rust one, on the tutorial-config
# model shipped in tests/data/tutorial.safetensors. Each prints tokens processed,
# per-step latency, cache bytes per token against a full K/V cache, and the max
# error against the PyTorch reference outputs.
#
# Standard output is the demos' output only: set-up and build output goes to a log
# ($CARGO_TARGET_DIR or target/, file demo-build.log), shown only when a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
case $TARGET_DIR in /*) ;; *) TARGET_DIR=$PWD/$TARGET_DIR ;; esac
export CARGO_TARGET_DIR=$TARGET_DIR
mkdir -p "$TARGET_DIR"
LOG=$TARGET_DIR/demo-build.log
: >"$LOG"

quiet() { # runs a command with its output in the log; on failure shows the log and stops
    if ! "$@" >>"$LOG" 2>&1; then
        echo "tools/demo.sh: '$*' failed; the end of $LOG:" >&2
        tail -n 40 "$LOG" >&2
        exit 1
    fi
}

echo "tools/demo.sh: setting up and building (a few minutes on the first run; log: $LOG)" >&2
quiet bash tools/setup.sh demo
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
quiet make -C ffi-examples lib build/host/demo_c_static
quiet cargo build --release --example demo

echo "--- C demo (ffi-examples/demo.c, static libmla.a) ---"
ffi-examples/build/host/demo_c_static tests/data/tutorial.safetensors
echo
echo "--- Rust demo (examples/demo.rs) ---"
"$TARGET_DIR/release/examples/demo" tests/data/tutorial.safetensors
