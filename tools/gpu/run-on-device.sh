#!/usr/bin/env bash
# The one script a GPU session runs on the device machine (NVIDIA driver and
# nvcc, no Rust), in the repository root, with gpu-bin/ built beforehand on the
# development machine by tools/gpu/build-binaries.sh and carried along.
# See docs/cuda.md ("Running on a GPU") for the exact calls.
#
#   tools/gpu/run-on-device.sh [phase ...]     phases: info ptx tests sanitize bench
#                                               (default: all of them, in that order)
#
#   info      nvidia-smi, nvcc version, what gpu-bin holds
#   ptx       ptxas -v of the embedded PTX for this GPU (registers, spills, shared
#             memory per kernel) and nvcc -ptx of crates/mla-cuda/kernels/mla.cu (the nvcc path of
#             crates/mla-cuda/build.rs), also through ptxas
#   tests     gpu-bin/cuda-tests (tests/cuda.rs: golden cases against the CPU
#             engine and PyTorch, f16/bf16, errors, C ABI, long contexts); if the
#             embedded PTX does not load, again with the nvcc-built PTX
#             (MLA_CUDA_PTX_FILE)
#   sanitize  compute-sanitizer memcheck, racecheck and synccheck on two small tests
#   bench     gpu-bin/cuda_bench: decode latency vs context, effective bandwidth
#             vs device-to-device copy, CPU engine beside it (f32 and bf16)
#
# Output goes to the terminal and to $OUT (the device tool's folder; default
# /tmp/mla-gpu-out): info.txt, ptxas.txt, tests.log, sanitize.log, bench.txt.
# Exit status: 0 when every phase run passed.
set -uo pipefail

BIN=${MLA_GPU_BIN:-gpu-bin}
OUTDIR=${OUT:-/tmp/mla-gpu-out}
mkdir -p "$OUTDIR"
PHASES=${*:-info ptx tests sanitize bench}
T0=$SECONDS
FAILED=""
SUMMARY=""

section() { printf '\n== run-on-device [%3ds] %s\n' $((SECONDS - T0)) "$*"; }
result() { # name status
    SUMMARY="$SUMMARY$(printf '  %-9s %s' "$1" "$2")"$'\n'
    [ "$2" = ok ] || FAILED="$FAILED $1"
}

if [ ! -x "$BIN/cuda-tests" ] || [ ! -x "$BIN/cuda_bench" ]; then
    echo "run-on-device: $BIN/cuda-tests and $BIN/cuda_bench are missing: build them with" >&2
    echo "tools/gpu/build-binaries.sh and pass carry: [\"gpu-bin\"] to the device tool" >&2
    exit 2
fi
# The tests find tests/data under the repository path they were built in.
MD=$(cat "$BIN/manifest_dir" 2>/dev/null || echo "$PWD")
if [ ! -d "$MD/tests/data" ]; then
    mkdir -p "$(dirname "$MD")" && ln -sfn "$PWD" "$MD" && echo "linked $MD -> $PWD (tests/data)"
fi
SM=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d '. ')
SM=${SM:-90}
NVCC_PTX=$OUTDIR/mla-nvcc.ptx

for phase in $PHASES; do
    case $phase in
    info)
        section "info"
        {
            nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total,clocks.max.sm,clocks.max.mem \
                --format=csv 2>&1
            nvcc --version 2>&1 | tail -n 2
            cat "$BIN/BUILD" 2>/dev/null
        } | tee "$OUTDIR/info.txt"
        result info ok
        ;;
    ptx)
        section "ptx: ptxas sm_$SM of the embedded PTX; nvcc -ptx of crates/mla-cuda/kernels/mla.cu"
        st=ok
        {
            echo "# ptxas -v -arch=sm_$SM $BIN/mla.ptx (embedded PTX)"
            timeout 180 ptxas -v -arch="sm_$SM" "$BIN/mla.ptx" -o "$OUTDIR/mla-embedded.cubin" 2>&1 || echo "PTXAS FAILED"
            echo "# nvcc -ptx -arch=compute_$SM -O3 crates/mla-cuda/kernels/mla.cu"
            timeout 180 nvcc -ptx -arch="compute_$SM" -O3 -o "$NVCC_PTX" crates/mla-cuda/kernels/mla.cu 2>&1 || echo "NVCC FAILED"
            if [ -f "$NVCC_PTX" ]; then
                echo "# ptxas -v -arch=sm_$SM (nvcc PTX)"
                timeout 180 ptxas -v -arch="sm_$SM" "$NVCC_PTX" -o "$OUTDIR/mla-nvcc.cubin" 2>&1 || echo "PTXAS FAILED"
            fi
        } >"$OUTDIR/ptxas.txt" 2>&1
        grep -q 'FAILED' "$OUTDIR/ptxas.txt" && st=failed
        # One line per kernel: name, registers, spills, shared memory.
        awk '/^# /{print} /Compiling entry function/{k=$NF} /bytes spill/{s=$0} /Used [0-9]+ registers/{print "  " k ": " $0 " | " s}' \
            "$OUTDIR/ptxas.txt" | sed "s/ptxas info *: //g" | cut -c1-200
        grep -E 'error|FAILED' "$OUTDIR/ptxas.txt" | head -n 20
        result ptx "$st"
        ;;
    tests)
        section "tests: $BIN/cuda-tests"
        timeout 420 "$BIN/cuda-tests" --test-threads=1 --nocapture 2>&1 | tee "$OUTDIR/tests.log"
        st=${PIPESTATUS[0]}
        if [ "$st" != 0 ] && grep -q 'loading the PTX module' "$OUTDIR/tests.log"; then
            [ -f "$NVCC_PTX" ] || nvcc -ptx -arch="compute_$SM" -O3 -o "$NVCC_PTX" crates/mla-cuda/kernels/mla.cu
            section "tests again with MLA_CUDA_PTX_FILE=$NVCC_PTX (the embedded PTX did not load)"
            MLA_CUDA_PTX_FILE=$NVCC_PTX timeout 420 "$BIN/cuda-tests" --test-threads=1 --nocapture 2>&1 |
                tee "$OUTDIR/tests-nvcc.log"
            st=${PIPESTATUS[0]}
            [ "$st" = 0 ] && st="ok-with-nvcc-ptx"
        fi
        if grep -q 'SKIPPED: no CUDA device' "$OUTDIR/tests.log"; then
            echo "tests were SKIPPED: the driver was not found (LD_LIBRARY_PATH / libcuda.so.1)"
            st=skipped
        fi
        case $st in 0) result tests ok ;; ok-with-nvcc-ptx) result tests "$st" ;; *) result tests "failed ($st)" ;; esac
        ;;
    sanitize)
        section "compute-sanitizer (memcheck, racecheck, synccheck) on c_abi_round_trip, odd_sizes"
        st=ok
        : >"$OUTDIR/sanitize.log"
        for tool in memcheck racecheck synccheck; do
            echo "# compute-sanitizer --tool $tool" | tee -a "$OUTDIR/sanitize.log"
            timeout 240 compute-sanitizer --tool "$tool" --error-exitcode 86 \
                "$BIN/cuda-tests" --test-threads=1 c_abi_round_trip odd_sizes_and_per_head_rope_keys \
                >>"$OUTDIR/sanitize.log" 2>&1
            r=$?
            grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|test result' "$OUTDIR/sanitize.log" | tail -n 2
            [ "$r" = 0 ] || { st="failed ($tool: $r)"; grep -m 20 -E '=========' "$OUTDIR/sanitize.log"; }
        done
        result sanitize "$st"
        ;;
    bench)
        section "bench: $BIN/cuda_bench"
        timeout 420 "$BIN/cuda_bench" 2>&1 | tee "$OUTDIR/bench.txt"
        st=${PIPESTATUS[0]}
        [ "$st" = 0 ] && result bench ok || result bench "failed ($st)"
        ;;
    *)
        echo "unknown phase $phase (info ptx tests sanitize bench)" >&2
        exit 2
        ;;
    esac
done

printf '\nrun-on-device summary (%ds):\n%s' $((SECONDS - T0)) "$SUMMARY"
[ -z "$FAILED" ]
