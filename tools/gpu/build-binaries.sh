#!/usr/bin/env bash
# Builds, on this machine (no GPU needed), everything tools/gpu/run-on-device.sh
# runs on a GPU machine that has the NVIDIA driver and nvcc but no Rust:
#
#   gpu-bin/cuda-tests     tests/cuda.rs (release), debug info stripped
#   gpu-bin/cuda_bench     examples/cuda_bench.rs (release), debug info stripped
#   gpu-bin/mla_sm72.ptx   the PTX embedded in both (crates/mla-cuda/build.rs:
#   gpu-bin/mla_sm80.ptx   clang-14 or nvcc), for reading and for ptxas there
#   gpu-bin/manifest_dir   the path the binaries look for tests/data under
#   gpu-bin/BUILD          what was built, from which commit, with which
#                          compilers, the newest glibc symbol version and the
#                          libcuda entry points the binaries import
#
# The binaries link against the stub libcuda of tools/cuda-stub (only the soname
# libcuda.so.1 is recorded), so on the GPU machine they load the real driver.
# gpu-bin/ is in .gitignore: pass it to the device tool with carry: ["gpu-bin"]
# (about 12 MB). The device machine is x86-64: build on x86-64.
#
# Usage: tools/gpu/build-binaries.sh [OUT_DIR]   (default: gpu-bin in the repo root)
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=${1:-$ROOT/gpu-bin}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case $CARGO_TARGET_DIR in /*) ;; *) CARGO_TARGET_DIR=$ROOT/$CARGO_TARGET_DIR ;; esac
FAKE=${FAKE_CUDA:-$CARGO_TARGET_DIR/fake-cuda}

[ "$(uname -m)" = x86_64 ] || echo "build-binaries: warning: $(uname -m) binaries will not run on the x86-64 GPU machine" >&2
[ -x "$FAKE/lib64/libcuda.so.1" ] || tools/cuda-stub/make-fake-cuda.sh "$FAKE"
export CUDA_PATH=$FAKE CUDA_LIBRARY_PATH=$FAKE

exe() { # the executable of a cargo build's JSON messages on stdin
    grep -o '"executable":"[^"]*"' | tail -n 1 | sed 's/"executable":"\(.*\)"/\1/'
}
tests=$(cargo test --release --features cuda --test cuda --no-run --message-format=json | exe)
json=$(cargo build --release --features cuda --example cuda_bench --message-format=json)
bench=$(echo "$json" | exe)
[ -x "$tests" ] && [ -x "$bench" ] || { echo "build-binaries: no executables built" >&2; exit 1; }
# The OUT_DIR of mla-cuda's build script (holds the PTX that was embedded).
ptxdir=$(echo "$json" | grep '"reason":"build-script-executed"' | grep -o '"out_dir":"[^"]*"' |
    sed 's/"out_dir":"\(.*\)"/\1/' | grep '/mla-cuda-' | tail -n 1)
[ -f "$ptxdir/mla_sm80.ptx" ] || { echo "build-binaries: $ptxdir/mla_sm80.ptx not found" >&2; exit 1; }

mkdir -p "$OUT"
cp "$tests" "$OUT/cuda-tests"
cp "$bench" "$OUT/cuda_bench"
cp "$ptxdir/mla_sm72.ptx" "$ptxdir/mla_sm80.ptx" "$OUT/"
strip --strip-debug "$OUT/cuda-tests" "$OUT/cuda_bench" 2>/dev/null || true
echo "$ROOT" >"$OUT/manifest_dir"
{
    echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m) from $ROOT"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo none) ($(git status --porcelain 2>/dev/null | wc -l) changed files)"
    rustc --version
    for a in sm72 sm80; do
        echo "PTX $a: $(head -n 8 "$OUT/mla_$a.ptx" | grep -E '^\.(version|target)' | tr '\n' ' ')($(wc -c <"$OUT/mla_$a.ptx") bytes, $(grep -c '\.entry' "$OUT/mla_$a.ptx") kernels)"
    done
    if [ -s "$ptxdir/mla.fatbin" ]; then echo "fatbin: $(wc -c <"$ptxdir/mla.fatbin") bytes (nvcc)"; else echo "fatbin: none (clang builds PTX only)"; fi
    echo "tests: $(LD_LIBRARY_PATH=$FAKE/lib64 "$OUT/cuda-tests" --list 2>/dev/null | grep -c ': test$') CUDA tests"
    echo "needs: $(readelf -d "$OUT/cuda-tests" 2>/dev/null | grep -o 'lib[a-z_0-9.]*so[0-9.]*' | sort -u | tr '\n' ' ')"
    echo "newest glibc symbol: $(objdump -T "$OUT/cuda-tests" "$OUT/cuda_bench" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n 1)"
    echo "libcuda entry points imported: $(nm -D --undefined-only "$OUT/cuda-tests" "$OUT/cuda_bench" 2>/dev/null | grep -o ' cu[A-Za-z0-9_]*' | sort -u | tr -d ' ' | tr '\n' ' ')"
} >"$OUT/BUILD"
if [ -d .git ] || [ -f .git ]; then
    exclude=$(git rev-parse --git-path info/exclude 2>/dev/null || echo .git/info/exclude)
    if [ "$OUT" = "$ROOT/gpu-bin" ] && ! grep -qx '/gpu-bin/' "$exclude" 2>/dev/null; then
        mkdir -p "$(dirname "$exclude")" && echo '/gpu-bin/' >>"$exclude"
    fi
fi
cat "$OUT/BUILD"
ls -la "$OUT"
du -sh "$OUT"
