#!/usr/bin/env bash
# The main job: set up, build the library, and run the C demo (then the Rust one)
# on the tutorial-config model shipped in tests/data/tutorial.safetensors.
# Each prints tokens processed, per-step latency, cache bytes per token against a
# full K/V cache, and the max error against the PyTorch reference outputs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh >/dev/null
make -s -C ffi-examples lib build/host/demo_c_static
echo "--- C demo (ffi-examples/demo.c, static libmla.a) ---"
ffi-examples/build/host/demo_c_static tests/data/tutorial.safetensors
echo
echo "--- Rust demo (examples/demo.rs) ---"
cargo run -q --release --example demo -- tests/data/tutorial.safetensors
