#!/usr/bin/env bash
# .ci/cuda.sh: the `cuda` feature on a machine without a GPU (called by .ci/run;
# runnable on its own).
#
#  1. installs what it needs on a fresh Debian machine (as root, else sudo):
#     clang-14 + llvm-14 (NVPTX back end for the kernels), a C/C++ compiler;
#  2. builds a fake CUDA install (tools/cuda-stub/make-fake-cuda.sh): a stub
#     libcuda.so.1 whose every entry point fails with CUDA_ERROR_STUB_LIBRARY,
#     and a CPU emulator libcuda.so.1 that runs the real kernels on fibers;
#     checks the stub's symbol list against cust_raw's bindings;
#  3. `cargo build --features cuda` (library, examples, the cuda tests): cust's
#     build script finds the fake install through CUDA_PATH / CUDA_LIBRARY_PATH
#     and everything links (binaries record only the soname libcuda.so.1);
#     mla-cuda's build script compiles kernels/mla.cu with clang-14; the
#     mla-cuda unit tests (launch planning: shared memory, splits);
#  4. checks that PTX (sm_72 with ISA 6.4, sm_80 with ISA 7.0): every kernel of
#     the architecture's list is an entry, nothing calls out to libdevice, no
#     kernel uses local memory (a register array indexed at run time), the
#     sm_72 PTX has no mma.sync / cp.async and the sm_80 one has both; and the
#     libcuda entry points the binaries import against the CUDA version that
#     introduced each;
#  5. runs tests/cuda.rs against the stub: every test must print
#     "SKIPPED: no CUDA device (...)" (counted and shown, never silent);
#  6. runs tests/cuda.rs on the CPU emulator as an sm_80 device (the tensor-core
#     and cp.async paths) and as an sm_72 device (CUDA cores, register-staged
#     copies): every test must run and pass except the ones that need a real GPU
#     or sm_80, which print SKIPPED (counted and shown);
#  7. runs examples/cuda_bench in its quick mode on the emulator (smoke test);
#     checks that tools/gpu's scripts parse and that ncu_steps.py reads a
#     recorded H200 profile (tests/data/ncu);
#  8. clippy --features cuda --all-targets -D warnings, rustfmt --check of the
#     CUDA files, and checks the default build does not pull in cust.
#
# Environment: CARGO_TARGET_DIR (default ./target), FAKE_CUDA (default
# $CARGO_TARGET_DIR/fake-cuda), CUDA_CI_THREADS (test threads, default 2).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case $CARGO_TARGET_DIR in /*) ;; *) CARGO_TARGET_DIR=$ROOT/$CARGO_TARGET_DIR ;; esac
FAKE=${FAKE_CUDA:-$CARGO_TARGET_DIR/fake-cuda}
THREADS=${CUDA_CI_THREADS:-2}
START=$SECONDS
STEP_START=$SECONDS
TIMES=""

step() {
    if [ -n "${STEP_NAME:-}" ]; then
        TIMES="$TIMES$(printf '  %4ds  %s' $((SECONDS - STEP_START)) "$STEP_NAME")"$'\n'
    fi
    STEP_NAME="$*"
    STEP_START=$SECONDS
    printf '\n== cuda.sh [%3ds] %s\n' $((SECONDS - START)) "$*"
}

# 1. Tools.
step "tools (clang-14, llvm-14, cc, c++)"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
need=""
command -v clang-14 >/dev/null || need="$need clang-14"
command -v llc-14 >/dev/null || need="$need llvm-14"
command -v cc >/dev/null && command -v c++ >/dev/null || need="$need build-essential"
if [ -n "$need" ]; then
    echo "apt-get install$need"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $need >/dev/null
fi
clang-14 --version | head -n 1

# 2. Fake CUDA install.
step "fake CUDA install (stub + CPU emulator) in $FAKE"
cargo fetch --quiet
tools/cuda-stub/make-fake-cuda.sh --check
tools/cuda-stub/make-fake-cuda.sh "$FAKE"
export CUDA_PATH=$FAKE CUDA_LIBRARY_PATH=$FAKE

# 3. Build and link.
step "cargo build --features cuda (lib, examples, tests/cuda.rs)"
PTXDIR=$CARGO_TARGET_DIR/cuda-ci   # logs of this script
mkdir -p "$PTXDIR"
cargo build --features cuda --lib --examples
cargo test --features cuda --test cuda --no-run 2>&1 | tail -n 3
bin=$(cargo test --features cuda --test cuda --no-run --message-format=json 2>/dev/null |
    grep -o '"executable":"[^"]*"' | tail -n 1 | sed 's/"executable":"\(.*\)"/\1/')
[ -x "$bin" ] || { echo "cuda test binary not found" >&2; exit 1; }
if command -v readelf >/dev/null; then
    echo "test binary needs: $(readelf -d "$bin" | grep -o 'libcuda[^]]*' | tr '\n' ' ')"
fi
n_tests=$(LD_LIBRARY_PATH=$FAKE/lib64 "$bin" --list 2>/dev/null | grep -c ": test$")
echo "$n_tests CUDA tests (2 of them child processes of others, ignored when run directly)"
n_run=$((n_tests - 2))
unit=$(cargo test --quiet -p mla-cuda --lib 2>&1) || { echo "$unit" >&2; echo "mla-cuda unit tests failed" >&2; exit 1; }
echo "mla-cuda unit tests (launch planning): $(echo "$unit" | grep '^test result' | tail -n 1)"

# 4. The PTX build.rs compiled (clang-14: sm_72 with ISA 6.4, sm_80 with ISA
#    7.0), from mla-cuda's OUT_DIR; the driver entry points the binaries import.
step "PTX checks: crates/mla-cuda/kernels/mla.cu as build.rs compiled it, sm_72 and sm_80"
outdir=$(cargo build --features cuda --lib --message-format=json 2>/dev/null |
    grep '"reason":"build-script-executed"' | grep -o '"out_dir":"[^"]*"' |
    sed 's/"out_dir":"\(.*\)"/\1/' | grep '/mla-cuda-' | tail -n 1)
SRC=crates/mla-cuda/kernels/mla.cu
list() { # kernel names of one MLA_KERNEL_LIST_* macro
    sed -n "/#define MLA_KERNEL_LIST_$1(X)/,/^\$/p" "$SRC" | grep -o 'X(mla_[a-z0-9_]*)' | sed 's/X(\(.*\))/\1/'
}
common=$(list COMMON)
sm80=$(list SM80)
[ -n "$common" ] && [ -n "$sm80" ] || { echo "kernel lists not found in $SRC" >&2; exit 1; }
for arch in sm_72 sm_80; do
    ptx=$outdir/mla_${arch/_/}.ptx
    [ -s "$ptx" ] || { echo "$ptx missing (mla-cuda's build script)" >&2; exit 1; }
    want_ver=6.4
    [ "$arch" = sm_80 ] && want_ver=7.0
    head -n 20 "$ptx" | grep -q "^\.version $want_ver" || { echo "$ptx: not PTX ISA $want_ver" >&2; exit 1; }
    head -n 20 "$ptx" | grep -q "^\.target $arch" || { echo "$ptx: not .target $arch" >&2; exit 1; }
    kernels=$common
    [ "$arch" = sm_80 ] && kernels="$common $sm80"
    for k in $kernels; do
        grep -q "\.entry $k(" "$ptx" || { echo "kernel $k missing from $ptx" >&2; exit 1; }
    done
    nk=$(echo $kernels | wc -w)
    [ "$(grep -c '\.entry' "$ptx")" = "$nk" ] || { echo "$ptx: $(grep -c '\.entry' "$ptx") entries, the list has $nk" >&2; exit 1; }
    if grep -q '^\s*call' "$ptx"; then
        echo "$ptx calls an external function (libdevice is not linked):" >&2
        grep '^\s*call' "$ptx" | sort -u >&2
        exit 1
    fi
    if grep -q '__local_depot' "$ptx"; then
        echo "$ptx: kernels with local memory (register arrays indexed at run time?):" >&2
        awk '/\.entry/{k=$3} /__local_depot[0-9]+\[/{print k, $0}' "$ptx" >&2
        exit 1
    fi
    mma=$(grep -c 'mma.sync' "$ptx" || true)
    cpa=$(grep -c 'cp.async' "$ptx" || true)
    if [ "$arch" = sm_72 ] && [ "$mma$cpa" != 00 ]; then
        echo "$ptx has sm_80 instructions (mma.sync $mma, cp.async $cpa)" >&2
        exit 1
    fi
    if [ "$arch" = sm_80 ] && { [ "$mma" = 0 ] || [ "$cpa" = 0 ]; }; then
        echo "$ptx lacks mma.sync ($mma) or cp.async ($cpa)" >&2
        exit 1
    fi
    echo "$arch: $(wc -c <"$ptx") bytes, $nk kernels, mma.sync $mma, cp.async $cpa, $(head -n 8 "$ptx" | grep -E '^\.(version|target)' | tr '\n' ' ')"
done
# The driver entry points the binaries import, against the CUDA version that
# introduced each (docs/cuda.md states the oldest driver from this list).
declare -A since=(
    [cuInit]=2.0 [cuDeviceGet]=2.0 [cuDeviceGetAttribute]=2.0 [cuDeviceGetCount]=2.0
    [cuDeviceGetName]=2.0 [cuModuleGetFunction]=2.0 [cuModuleLoadDataEx]=2.1
    [cuStreamCreate]=2.0 [cuStreamSynchronize]=2.0 [cuEventCreate]=2.0 [cuEventRecord]=2.0
    [cuEventSynchronize]=2.0 [cuEventElapsedTime]=2.0 [cuMemAlloc_v2]=3.2 [cuMemFree_v2]=3.2
    [cuMemcpyHtoD_v2]=3.2 [cuMemcpyDtoH_v2]=3.2 [cuMemcpyHtoDAsync_v2]=3.2
    [cuMemcpyDtoHAsync_v2]=3.2 [cuMemcpyDtoDAsync_v2]=3.2 [cuMemsetD8_v2]=3.2
    [cuMemsetD8Async]=3.2 [cuMemsetD32_v2]=3.2 [cuCtxSetCurrent]=4.0 [cuLaunchKernel]=4.0
    [cuStreamDestroy_v2]=4.0 [cuEventDestroy_v2]=4.0 [cuGetErrorName]=6.0
    [cuGetErrorString]=6.0 [cuOccupancyMaxActiveBlocksPerMultiprocessor]=6.5
    [cuDevicePrimaryCtxRetain]=7.0 [cuFuncGetAttribute]=2.2 [cuFuncSetAttribute]=9.0
)
newest=0
for sym in $(nm -D --undefined-only "$bin" "$CARGO_TARGET_DIR/debug/examples/cuda_bench" 2>/dev/null |
    grep -o ' cu[A-Za-z0-9_]*' | sort -u); do
    v=${since[$sym]:-}
    [ -n "$v" ] || { echo "the binaries import $sym: add it (and the CUDA version that introduced it) here and to docs/cuda.md" >&2; exit 1; }
    newest=$(printf '%s\n%s\n' "$newest" "$v" | sort -V | tail -n 1)
done
echo "libcuda entry points imported: all in CUDA $newest and later drivers"

# 5. Stub driver: every test skips, visibly.
step "tests/cuda.rs against the stub libcuda (expect $n_run SKIPPED)"
LOG=$PTXDIR/stub.log
# The harness counts a test that returned early as passed: its summary line is
# marked here, and the count of SKIPPED lines is what this step reports.
LD_LIBRARY_PATH=$FAKE/lib64 "$bin" --test-threads=1 2>&1 | tee "$LOG" |
    sed -E 's/^(test result: ok\. [0-9]+ passed.*)$/\1   <- passed = returned early: SKIPPED, see below/'
skipped=$(grep -o 'SKIPPED: no CUDA device' "$LOG" | wc -l)
echo "$skipped of $n_run CUDA tests SKIPPED (stub driver: no device); they run on the emulator next"
[ "$skipped" = "$n_run" ] || { echo "expected every CUDA test to skip on the stub" >&2; exit 1; }

# 6. CPU emulator, as an sm_80 and as an sm_72 device: every test runs and
#    passes; the only skips are those that need a real GPU (or sm_80).
emu_run() { # cc, expected SKIPPED count
    local LOG=$PTXDIR/emu-$1.log
    MLA_EMU_CC=$1 LD_LIBRARY_PATH=$FAKE/emu "$bin" --test-threads="$THREADS" 2>&1 | tee "$LOG"
    if grep -q 'SKIPPED: no CUDA device' "$LOG"; then
        echo "a CUDA test found no device on the emulator" >&2
        exit 1
    fi
    local n
    n=$(grep -o 'SKIPPED: .*\[cuda::[a-z0-9_]*\]' "$LOG" | wc -l)
    echo "emulator sm_${1/./}: $n test(s) SKIPPED (expected $2):"
    grep -o 'SKIPPED: .*\[cuda::[a-z0-9_]*\]' "$LOG" || true
    [ "$n" = "$2" ] || { echo "unexpected number of SKIPPED tests" >&2; exit 1; }
}
step "tests/cuda.rs on the CPU emulator as sm_80 (tensor cores, cp.async)"
emu_run 8.0 1
step "tests/cuda.rs on the CPU emulator as sm_72 (CUDA cores, staged copies)"
emu_run 7.2 2

# 7. Benchmark smoke test on the emulator.
step "examples/cuda_bench (MLA_BENCH_QUICK=1) on the CPU emulator"
MLA_BENCH_QUICK=1 LD_LIBRARY_PATH=$FAKE/emu cargo run --quiet --features cuda --example cuda_bench

# 7b. The GPU session's scripts: they run only on a GPU machine, so check here
# that they parse, and that the profile summary reads a recorded ncu CSV (an
# H200's; a step's kernels, medians of the two timed steps, checked by hand).
step "tools/gpu: bash -n, and ncu_steps.py on a recorded H200 profile"
for f in tools/gpu/*.sh; do bash -n "$f"; done
prof=$(python3 tools/gpu/ncu_steps.py tests/data/ncu/h200_f32_ctx1.csv 1 f32 2)
echo "$prof"
for want in '1\. mla_linear_f32 +20\.2 us +29\.93 MB' '2\. mla_prep_cf32_wf32 +43\.9 us +4\.23 MB' \
    '3\. mla_attn_cc_f32_g16 +29\.9 us' 'sum +115\.1 us'; do
    echo "$prof" | grep -Eq "$want" || { echo "ncu_steps.py: no line matching '$want'" >&2; exit 1; }
done
# A step count that does not match the CSV: no table, exit status 1.
if python3 tools/gpu/ncu_steps.py tests/data/ncu/h200_f32_ctx1.csv 1 f32 3 >/dev/null; then
    echo "ncu_steps.py: accepted a CSV with the wrong number of steps" >&2
    exit 1
fi

# 8. Lints; the default build stays free of CUDA.
step "clippy --features cuda, rustfmt, default build without cust"
cargo clippy --quiet --features cuda --all-targets -- -D warnings
cargo fmt --all --check   # includes crates/mla-cuda, which default builds skip
if cargo tree -p mla-rt -e normal 2>/dev/null | grep -q 'cust'; then
    echo "the default build depends on cust" >&2
    exit 1
fi
echo "default build: no cust, no CUDA needed"

step "done"
printf '\ncuda.sh step times:\n%s  total %ds\n' "$TIMES" $((SECONDS - START))
