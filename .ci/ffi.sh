#!/usr/bin/env bash
# .ci/ffi.sh: checks of the C ABI (called by .ci/run; runnable on its own).
#
#  1. builds the library (release: libmla.a, libmla.so), which regenerates
#     include/mla.h, and fails if that changed the header (stale header), also
#     `git diff --exit-code include/mla.h` when the header is tracked;
#  2. compiles mla.h alone as C11 and C++17, with and without MLA_FEATURE_CUDA,
#     and mla.hpp as C++17, with gcc and clang (-Wall -Wextra -Werror -pedantic);
#  3. runs tests/ffi_header.rs (header values against the crate);
#  4. builds the C and C++ demos against the static and the shared library;
#     4b. runs ffi-examples/checkpoint.c on every layer of every family case;
#     (ffi-examples/Makefile) and runs them on tests/data/tutorial.safetensors;
#  5. builds tests/c/status_test.c (static and shared) and runs it;
#  6. runs the status test and the demos under valgrind (--leak-check=full);
#  7. runs them built with clang-14 -fsanitize=address,undefined (static lib);
#  8. installs into a temporary prefix (make install) and builds ffi-examples/tiny.c
#     through pkg-config (`--libs mla`: shared, runs through the rpath mla.pc gives;
#     `--static --libs mla-static`: static, no libmla.so) and CMake
#     (find_package(mla), ffi-examples/host-cmake: mla::mla, mla::mla_shared);
#  9. with FFI_CROSS=1: cross-builds the demos for aarch64 and runs them in qemu.
#
# On a fresh Debian machine, run as root: missing tools are apt-get installed.
# Environment: CARGO_TARGET_DIR (default ./target), FFI_OUT (scratch directory,
# default $CARGO_TARGET_DIR/ffi-ci), FFI_CROSS=1 for step 9.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case $CARGO_TARGET_DIR in /*) ;; *) CARGO_TARGET_DIR=$ROOT/$CARGO_TARGET_DIR ;; esac
OUT=${FFI_OUT:-$CARGO_TARGET_DIR/ffi-ci}
LIBDIR=$CARGO_TARGET_DIR/release
DATA=$ROOT/tests/data/tutorial.safetensors
# What the Rust static library needs from the system (`cargo rustc -p mla-rt --release --lib
# --crate-type staticlib -- --print native-static-libs` on x86-64 / aarch64 Linux).
NATIVE_LIBS="-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc"
WARN="-Wall -Wextra -Werror -pedantic"
START=$SECONDS
STEP_START=$SECONDS

step() {
    printf '\n== ffi.sh [%3ds, last step %3ds] %s\n' $((SECONDS - START)) $((SECONDS - STEP_START)) "$*"
    STEP_START=$SECONDS
}

# --- 0. tools -----------------------------------------------------------------
step "tools"
declare -A PKG=([cc]=gcc [c++]=g++ [clang-14]=clang-14 [clang++-14]=clang-14 [valgrind]=valgrind
    [cmake]=cmake [pkg-config]=pkg-config [make]=make [git]=git)
missing=()
for tool in "${!PKG[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("${PKG[$tool]}")
done
if [ ${#missing[@]} -gt 0 ]; then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    echo "installing: ${missing[*]}"
    if [ "$(id -u)" != 0 ]; then
        echo "ffi.sh: not root, cannot install ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" libc6-dev >/dev/null
fi
for tool in cc c++ clang-14 valgrind cmake pkg-config; do
    printf '  %-11s %s\n' "$tool" "$("$tool" --version 2>&1 | head -n1)"
done
rm -rf "$OUT"
mkdir -p "$OUT"

# --- 1. library and header freshness ------------------------------------------
step "cargo build --release --lib (regenerates include/mla.h)"
before=$(sha256sum include/mla.h 2>/dev/null | cut -d' ' -f1 || true)
cargo build --release --lib 2>&1 | tee "$OUT/cargo-build.log"
if grep -q "mla.h not regenerated" "$OUT/cargo-build.log"; then
    echo "ffi.sh: header generation failed (see the cargo warning above)" >&2
    exit 1
fi
after=$(sha256sum include/mla.h | cut -d' ' -f1)
if [ "$before" != "$after" ]; then
    echo "ffi.sh: include/mla.h was stale: the build regenerated it (commit the new one)" >&2
    git --no-pager diff --stat -- include/mla.h >&2 || true
    exit 1
fi
if git ls-files --error-unmatch include/mla.h >/dev/null 2>&1; then
    git --no-pager diff --exit-code -- include/mla.h
    echo "include/mla.h: fresh (git diff clean)"
else
    echo "include/mla.h: fresh (regeneration left it unchanged; not tracked by git yet)"
fi
test -f "$LIBDIR/libmla.a" && test -f "$LIBDIR/libmla.so"

# --- 2. the headers compile alone ----------------------------------------------
step "headers compile alone (C11, C++17, with/without MLA_FEATURE_CUDA; gcc and clang)"
for cc in cc clang-14; do
    for def in "" "-DMLA_FEATURE_CUDA"; do
        echo '#include "mla.h"' | $cc -std=c11 $WARN $def -Iinclude -x c -fsyntax-only -
        echo '#include "mla.h"' | $cc -std=c99 $WARN $def -Iinclude -x c -fsyntax-only -
    done
done
for cxx in c++ clang++-14; do
    for def in "" "-DMLA_FEATURE_CUDA"; do
        echo '#include "mla.h"' | $cxx -std=c++17 $WARN $def -Iinclude -x c++ -fsyntax-only -
    done
    echo '#include "mla.hpp"' | $cxx -std=c++17 $WARN -Iinclude -x c++ -fsyntax-only -
done
echo "ok"

# --- 3. header values against the crate ----------------------------------------
step "cargo test --release --test ffi_header"
cargo test --release --test ffi_header

# --- 4. demos, static and shared -------------------------------------------------
step "demos: C and C++, static and shared (make -C ffi-examples)"
make -C ffi-examples --no-print-directory BUILD="$OUT/examples" NATIVE_LIBS="$NATIVE_LIBS" all
make -C ffi-examples --no-print-directory BUILD="$OUT/examples" NATIVE_LIBS="$NATIVE_LIBS" run | tee "$OUT/demo.log"
# (ldd output is captured first: `grep -q` closing the pipe early would make
# ldd fail under pipefail.)
links_to() { local deps; deps=$(ldd "$1"); grep -q "$2" <<<"$deps"; }
for p in demo_c_shared demo_cpp_shared; do
    links_to "$OUT/examples/$p" "libmla.so => $LIBDIR/libmla.so" ||
        { echo "ffi.sh: $p does not load $LIBDIR/libmla.so" >&2; exit 1; }
done
for p in demo_c_static demo_cpp_static; do
    ! links_to "$OUT/examples/$p" libmla ||
        { echo "ffi.sh: $p should not need libmla.so" >&2; exit 1; }
done

# --- 4b. checkpoint.c over every layer of every family case ----------------------
step "ffi-examples/checkpoint.c: every layer of tests/data/families/*, from config.json"
exact=0 refused=0 linear=0
for dir in tests/data/families/*/; do
    for layer in 0 1 2 3 4 5 6 7; do
        rc=0
        out=$("$OUT/examples/checkpoint" "$dir" "$layer" 2>&1) || rc=$?
        last=$(tail -n 1 <<<"$out")
        case $rc in
            0) exact=$((exact + 1)) ;;
            2) refused=$((refused + 1)); echo "  refused: $(basename "$dir") $last"
               if grep -q "is linear_attention, not MLA" <<<"$last"; then linear=$((linear + 1)); fi ;;
            *) if grep -q "is out of range" <<<"$last"; then break; fi
               echo "$out" >&2; echo "ffi.sh: checkpoint $dir $layer failed" >&2; exit 1 ;;
        esac
    done
done
echo "checkpoint.c: $exact layers naive = absorbed within 1e-5 (shared KV / top-k layers with their producers), $refused refused with UNSUPPORTED ($linear of them linear-attention layers, not MLA; the rest listed above with the reason)"
[ "$exact" -ge 51 ] || { echo "ffi.sh: expected at least 51 layers to run (as measured when this check was written)" >&2; exit 1; }

# --- 5. status test ----------------------------------------------------------
step "status test (tests/c/status_test.c), static and shared"
cc -std=c11 $WARN -O1 -g -Iinclude tests/c/status_test.c "$LIBDIR/libmla.a" $NATIVE_LIBS \
    -o "$OUT/status_test_static"
cc -std=c11 $WARN -O1 -g -Iinclude tests/c/status_test.c -L"$LIBDIR" -lmla \
    -Wl,-rpath,"$LIBDIR" -lm -o "$OUT/status_test_shared"
"$OUT/status_test_static" "$DATA" | tail -n 16
"$OUT/status_test_shared" "$DATA" | tail -n 1

# --- 6. valgrind ---------------------------------------------------------------
step "valgrind --leak-check=full (status test, demos)"
VG=(valgrind -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect,possible)
"${VG[@]}" "$OUT/status_test_static" "$DATA" | tail -n 1
"${VG[@]}" "$OUT/status_test_shared" "$DATA" | tail -n 1
for p in demo_c_static demo_cpp_static demo_c_shared demo_cpp_shared; do
    "${VG[@]}" "$OUT/examples/$p" "$DATA" | tail -n 1
done

# --- 7. ASan + UBSan -------------------------------------------------------------
step "clang-14 -fsanitize=address,undefined (static library)"
SAN="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -O1 -g"
clang-14 -std=c11 $WARN $SAN -Iinclude tests/c/status_test.c "$LIBDIR/libmla.a" $NATIVE_LIBS \
    -o "$OUT/status_test_asan"
clang-14 -std=c11 $WARN $SAN -Iinclude ffi-examples/demo.c "$LIBDIR/libmla.a" $NATIVE_LIBS \
    -o "$OUT/demo_c_asan"
clang++-14 -std=c++17 $WARN $SAN -Iinclude ffi-examples/demo.cpp "$LIBDIR/libmla.a" $NATIVE_LIBS \
    -o "$OUT/demo_cpp_asan"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# The sanitizer runtime must really be in the binary (not silently dropped).
syms=$(nm "$OUT/status_test_asan")
grep -q __asan_init <<<"$syms" || { echo "ffi.sh: no ASan runtime" >&2; exit 1; }
"$OUT/status_test_asan" "$DATA" | tail -n 1
"$OUT/demo_c_asan" "$DATA" | tail -n 1
"$OUT/demo_cpp_asan" "$DATA" | tail -n 1
unset ASAN_OPTIONS UBSAN_OPTIONS

# --- 8. install; pkg-config and CMake hosts ------------------------------------
step "make install; pkg-config (mla, mla-static) and find_package(mla) host projects"
PREFIX=$OUT/prefix
make -C ffi-examples --no-print-directory NATIVE_LIBS="$NATIVE_LIBS" install PREFIX="$PREFIX"
export PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig
for pc in mla mla-static; do
    echo "pkg-config $pc $(pkg-config --modversion $pc): --cflags $(pkg-config --cflags $pc)" \
        "--libs $(pkg-config --libs $pc) --static --libs $(pkg-config --static --libs $pc)"
    test "$(pkg-config --modversion $pc)" = "$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
done
# Exactly the flags pkg-config gives: the shared program must find libmla.so through
# mla.pc's rpath (no LD_LIBRARY_PATH), the static one must not need it at all.
# shellcheck disable=SC2046
cc -std=c11 $WARN ffi-examples/tiny.c $(pkg-config --cflags --libs mla) -o "$OUT/host_pc_shared"
# shellcheck disable=SC2046
cc -std=c11 $WARN ffi-examples/tiny.c $(pkg-config --static --cflags --libs mla-static) \
    -o "$OUT/host_pc_static"
(unset LD_LIBRARY_PATH; "$OUT/host_pc_shared" "$DATA"; "$OUT/host_pc_static" "$DATA")
links_to "$OUT/host_pc_shared" "libmla.so => $PREFIX/lib/libmla.so" ||
    { echo "ffi.sh: host_pc_shared does not load $PREFIX/lib/libmla.so" >&2; exit 1; }
! links_to "$OUT/host_pc_static" libmla ||
    { echo "ffi.sh: host_pc_static (pkg-config --static mla-static) needs libmla.so" >&2; exit 1; }
unset PKG_CONFIG_PATH
# CMAKE_SKIP_BUILD_RPATH: no rpath from CMake itself, as in an installed program;
# mla::mla_shared programs must still find libmla.so (the package's own rpath).
cmake -S ffi-examples/host-cmake -B "$OUT/host-cmake" -DCMAKE_PREFIX_PATH="$PREFIX" \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_SKIP_BUILD_RPATH=ON \
    -DCMAKE_C_FLAGS="$WARN" -DCMAKE_CXX_FLAGS="$WARN" \
    >"$OUT/cmake.log" || { cat "$OUT/cmake.log"; exit 1; }
cmake --build "$OUT/host-cmake" -- --no-print-directory >/dev/null
(
    unset LD_LIBRARY_PATH
    "$OUT/host-cmake/tiny" "$DATA"
    "$OUT/host-cmake/tiny_shared" "$DATA"
    "$OUT/host-cmake/host_cpp"
)
! links_to "$OUT/host-cmake/tiny" libmla ||
    { echo "ffi.sh: host-cmake/tiny (mla::mla) needs libmla.so" >&2; exit 1; }
links_to "$OUT/host-cmake/tiny_shared" "libmla.so => $PREFIX/lib/libmla.so" ||
    { echo "ffi.sh: host-cmake/tiny_shared does not load $PREFIX/lib/libmla.so" >&2; exit 1; }
readelf -d "$OUT/host-cmake/tiny_shared" | grep -E 'R(UN)?PATH' | grep -q "$PREFIX/lib" ||
    { echo "ffi.sh: tiny_shared has no rpath to $PREFIX/lib" >&2; exit 1; }

# --- 9. cross build (optional) -------------------------------------------------
if [ "${FFI_CROSS:-0}" = 1 ]; then
    step "aarch64 cross build of the demos, run in qemu"
    make -C ffi-examples --no-print-directory TARGET=aarch64-unknown-linux-gnu \
        CC=aarch64-linux-gnu-gcc CXX=aarch64-linux-gnu-g++ BUILD="$OUT/examples-aarch64" \
        NATIVE_LIBS="$NATIVE_LIBS" RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu" lib all run
else
    step "aarch64 cross build: skipped (set FFI_CROSS=1 to run it)"
fi

step "ffi.sh: all passed in $((SECONDS - START)) s"
