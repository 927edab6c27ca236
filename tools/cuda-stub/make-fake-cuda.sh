#!/bin/sh
# Builds a fake CUDA installation for building, linking and testing mla-rt's
# `cuda` feature on a machine without an NVIDIA driver or toolkit:
#
#   DIR/include/cuda.h      placeholder (some tools test for it)
#   DIR/lib64/libcuda.so.1  stub driver: every call fails with
#                           CUDA_ERROR_STUB_LIBRARY (34)  -> tests print SKIPPED
#   DIR/lib64/libcuda.so    -> libcuda.so.1 (what `-lcuda` links against)
#   DIR/emu/libcuda.so.1    CPU emulator: runs the real kernels on the CPU
#
# Usage: tools/cuda-stub/make-fake-cuda.sh [DIR]        (default /tmp/fake-cuda)
#        tools/cuda-stub/make-fake-cuda.sh --check      (symbols.h vs cust_raw)
# Then:  export CUDA_PATH=DIR CUDA_LIBRARY_PATH=DIR     (cust_raw's build script
#        looks for DIR/lib64 through CUDA_LIBRARY_PATH)
#        LD_LIBRARY_PATH=DIR/lib64 cargo test --features cuda   # stub: skips
#        LD_LIBRARY_PATH=DIR/emu   cargo test --features cuda   # emulator: runs
# Binaries linked this way record only the soname libcuda.so.1, so on a GPU
# machine they load the real driver.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)

if [ "${1:-}" = "--check" ]; then
    bindings=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cust_raw-0.11.3/src/cuda.rs 2>/dev/null | head -n 1)
    if [ -z "$bindings" ]; then
        echo "cust_raw 0.11.3 not in the cargo registry (run cargo fetch)" >&2
        exit 1
    fi
    want=$(grep -oE 'pub fn cu[A-Za-z0-9_]+' "$bindings" | awk '{print $3}' | sort -u |
        grep -v '^cuGetError\(String\|Name\)$')
    have=$(grep -oE '^MLA_CU\([A-Za-z0-9_]+\)' "$HERE/symbols.h" | sed 's/MLA_CU(\(.*\))/\1/' | sort -u)
    if [ "$want" != "$have" ]; then
        echo "tools/cuda-stub/symbols.h differs from $bindings" >&2
        exit 1
    fi
    echo "symbols.h matches cust_raw ($(echo "$have" | wc -l) functions)"
    exit 0
fi

DIR=${1:-/tmp/fake-cuda}
CC=${CC:-cc}
CXX=${CXX:-c++}
mkdir -p "$DIR/include" "$DIR/lib64" "$DIR/emu"
echo "/* placeholder: fake CUDA install for mla-rt CI (tools/cuda-stub) */" >"$DIR/include/cuda.h"
$CC -O2 -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$DIR/lib64/libcuda.so.1" "$HERE/stub.c"
ln -sf libcuda.so.1 "$DIR/lib64/libcuda.so"
# The emulator: its runtime (emu.cpp), the rest of the API (emu_rest.c) and the
# kernels compiled twice (sm_72 and sm_80 code paths), the two kernel builds in
# parallel. -fno-strict-aliasing: the kernels reinterpret memory like CUDA code.
CXXFLAGS="-std=c++17 -O2 -fPIC -Wall -Wno-unknown-pragmas -fno-strict-aliasing"
$CC -O2 -fPIC -c -o "$DIR/emu/emu_rest.o" "$HERE/emu_rest.c"
$CXX $CXXFLAGS -DMLA_EMU_ARCH=720 -c -o "$DIR/emu/emu_k720.o" "$HERE/emu_kernels.cpp" &
k720=$!
$CXX $CXXFLAGS -DMLA_EMU_ARCH=800 -c -o "$DIR/emu/emu_k800.o" "$HERE/emu_kernels.cpp"
$CXX $CXXFLAGS -c -o "$DIR/emu/emu.o" "$HERE/emu.cpp"
wait $k720
$CXX -shared -Wl,-soname,libcuda.so.1 -o "$DIR/emu/libcuda.so.1" "$DIR/emu/emu.o" \
    "$DIR/emu/emu_k720.o" "$DIR/emu/emu_k800.o" "$DIR/emu/emu_rest.o"
ln -sf libcuda.so.1 "$DIR/emu/libcuda.so"
rm -f "$DIR/emu/"*.o
echo "fake CUDA in $DIR: stub $DIR/lib64/libcuda.so.1, emulator $DIR/emu/libcuda.so.1"
