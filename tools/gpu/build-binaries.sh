#!/usr/bin/env bash
# Builds, on this machine (no GPU needed), everything tools/gpu/run-on-device.sh
# runs on a GPU machine that has the NVIDIA driver and nvcc but no Rust:
#
#   gpu-bin/cuda-tests     tests/cuda.rs (release), stripped
#   gpu-bin/cuda_bench     examples/cuda_bench.rs (release), stripped
#   gpu-bin/mla.ptx        the PTX embedded in both (clang-14 or nvcc, crates/mla-cuda/build.rs)
#   gpu-bin/manifest_dir   the path the binaries look for tests/data under
#   gpu-bin/BUILD          what was built, from which commit, with which compilers
#
# The binaries link against the stub libcuda of tools/cuda-stub (only the soname
# libcuda.so.1 is recorded), so on the GPU machine they load the real driver.
# gpu-bin/ is added to .git/info/exclude: pass it to the device tool with
# carry: ["gpu-bin"] (about 10 MB).
#
# Usage: tools/gpu/build-binaries.sh [OUT_DIR]   (default: gpu-bin in the repo root)
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=${1:-$ROOT/gpu-bin}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case $CARGO_TARGET_DIR in /*) ;; *) CARGO_TARGET_DIR=$ROOT/$CARGO_TARGET_DIR ;; esac
FAKE=${FAKE_CUDA:-$CARGO_TARGET_DIR/fake-cuda}

[ -x "$FAKE/lib64/libcuda.so.1" ] || tools/cuda-stub/make-fake-cuda.sh "$FAKE"
export CUDA_PATH=$FAKE CUDA_LIBRARY_PATH=$FAKE

exe() { # the executable of a cargo build's JSON messages on stdin
    grep -o '"executable":"[^"]*"' | tail -n 1 | sed 's/"executable":"\(.*\)"/\1/'
}
tests=$(cargo test --release --features cuda --test cuda --no-run --message-format=json | exe)
json=$(cargo build --release --features cuda --example cuda_bench --message-format=json)
bench=$(echo "$json" | exe)
[ -x "$tests" ] && [ -x "$bench" ] || { echo "build-binaries: no executables built" >&2; exit 1; }
# The OUT_DIR of mla-rt's build script (holds the PTX that was embedded).
ptx=$(echo "$json" | grep '"reason":"build-script-executed"' | grep -o '"out_dir":"[^"]*"' |
    sed 's/"out_dir":"\(.*\)"/\1/' | grep '/mla-rt-' | tail -n 1)/mla.ptx
[ -f "$ptx" ] || { echo "build-binaries: $ptx not found" >&2; exit 1; }

mkdir -p "$OUT"
cp "$tests" "$OUT/cuda-tests"
cp "$bench" "$OUT/cuda_bench"
cp "$ptx" "$OUT/mla.ptx"
strip --strip-debug "$OUT/cuda-tests" "$OUT/cuda_bench" 2>/dev/null || true
echo "$ROOT" >"$OUT/manifest_dir"
{
    echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m) from $ROOT"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo none) $(git status --porcelain 2>/dev/null | wc -l) changed files"
    rustc --version
    echo "PTX: $(head -n 8 "$OUT/mla.ptx" | grep -E '^\.(version|target)' | tr '\n' ' ')($(wc -c <"$OUT/mla.ptx") bytes)"
    echo "tests: $(LD_LIBRARY_PATH=$FAKE/lib64 "$OUT/cuda-tests" --list 2>/dev/null | grep -c ': test$') CUDA tests"
    echo "needs: $(readelf -d "$OUT/cuda-tests" 2>/dev/null | grep -o 'lib[a-z_0-9.]*so[0-9.]*' | sort -u | tr '\n' ' ')"
} >"$OUT/BUILD"
if [ -d .git ] && ! grep -qx '/gpu-bin/' .git/info/exclude 2>/dev/null; then
    [ "$OUT" = "$ROOT/gpu-bin" ] && echo '/gpu-bin/' >>.git/info/exclude
fi
cat "$OUT/BUILD"
ls -la "$OUT"
