#!/usr/bin/env bash
# The one command a GPU session runs on the device machine (NVIDIA driver, nvcc
# and compute-sanitizer, no Rust), in the repository root, with gpu-bin/ built
# beforehand on the development machine by tools/gpu/build-binaries.sh and
# carried along (device tool: carry ["gpu-bin"]). docs/cuda.md, "Running on a
# GPU", has the exact call.
#
# Phases, in this order, each under a time limit (seconds; the sum is 460, well
# inside a 600 s command and a 15-minute device lease with start-up), each
# followed by a rewrite of $OUT/summary.txt:
#   check     10  ldd of the binaries (libcuda found, glibc), nvidia-smi (GPU,
#                 driver, CUDA version, compute capability), nvcc and
#                 compute-sanitizer versions, the bundle's BUILD note
#   selftest  50  the tensor-core fragment layout (mma_fragment_layout) and the
#                 module load with its JIT log (the first JIT compile of the
#                 PTX is in here): so that a layout mistake or a JIT failure is
#                 diagnosed before anything else
#   tests    140  every test of gpu-bin/cuda-tests in a process of its own (at most
#                 60 s each, 90 s for the long-context one), so a kernel fault, which poisons its process's
#                 context, cannot fail the tests after it; a failed test is rerun
#                 once with MLA_CUDA_SYNC=1, which names the faulting kernel
#   bench     80  gpu-bin/cuda_bench (the embedded clang PTX, JIT-compiled); then
#                 the bf16 rows again with the nvcc fatbin built in the background
#                 (MLA_CUDA_MODULE_FILE) when it is ready
#   sanitize 120  compute-sanitizer memcheck, racecheck and initcheck (40 s each)
#                 on small tests
#   profile   60  Nsight Compute over the benchmark's f32 and bf16 steps at
#                 contexts 1, 4096 and 32768: each kernel's time and DRAM bytes
#                 (kernels one at a time, cold caches), summed up per step by
#                 tools/gpu/ncu_steps.py into profile.txt
# From the start, in the background (16 cores): nvcc -fatbin of
# crates/mla-cuda/kernels/mla.cu for sm_90 (SASS) + compute_80 (PTX) with
# -Xptxas -v: registers, spills and shared memory per kernel, and proof that nvcc
# compiles the source (the bundle's PTX comes from clang).
#
# $OUT (the device tool's folder; default /tmp/mla-gpu-out) gets four files:
# summary.txt (one line per phase and per failed test), log.txt (everything),
# bench.txt (the benchmark) and profile.txt (the per-kernel profile).
# CUDA_CACHE_PATH is a folder of this run, so the PTX is JIT-compiled once and
# every later test process loads the cached code.
#
#   tools/gpu/run-on-device.sh [phase ...]   (default: all, in the order above)
#
# Environment:
#   MLA_GPU_BIN=<dir>      the bundle (default gpu-bin)
#   MLA_GPU_DRYRUN=<dir>   a dry run without a GPU: the CPU emulator of the fake
#                          CUDA install <dir> (tools/cuda-stub/make-fake-cuda.sh)
#                          stands in for the driver; nvidia-smi, nvcc and
#                          compute-sanitizer are skipped when absent; the
#                          benchmark runs in its quick mode
#   MLA_GPU_SCALE=<n>      multiplies every time limit (dry runs: the emulator is
#                          slow)
# Exit status: 0 when every phase passed.
set -uo pipefail

BIN=${MLA_GPU_BIN:-gpu-bin}
OUTDIR=${OUT:-/tmp/mla-gpu-out}
SCALE=${MLA_GPU_SCALE:-1}
PHASES=${*:-check selftest tests bench sanitize profile}
mkdir -p "$OUTDIR"
WORK=$(mktemp -d /tmp/mla-gpu.XXXXXX)
LOG=$OUTDIR/log.txt
SUMMARY=$OUTDIR/summary.txt
: >"$LOG"
T0=$SECONDS
ROWS=""
DETAILS=""
FAILED=""
HEADER="mla-rt GPU run $(date -u +%Y-%m-%dT%H:%M:%SZ)"

limit() { echo $(($1 * SCALE)); }
say() { echo "$*" | tee -a "$LOG"; }
section() { say ""; say "== run-on-device [$((SECONDS - T0))s] $*"; }
# Runs a command under a time limit, output to the terminal and the log.
run_logged() { # limit cmd...
    local t=$1
    shift
    timeout -k 5 "$t" "$@" 2>&1 | tee -a "$LOG"
    return "${PIPESTATUS[0]}"
}
write_summary() {
    {
        echo "$HEADER"
        printf '%-9s %-8s %7s %6s  %s\n' phase status seconds limit detail
        printf '%s' "$ROWS"
        [ -n "$DETAILS" ] && printf '\n%s' "$DETAILS"
        echo ""
        echo "total $((SECONDS - T0)) s; full log: log.txt; benchmark: bench.txt; profile: profile.txt"
    } >"$SUMMARY"
}
result() { # phase status start limit detail
    ROWS="$ROWS$(printf '%-9s %-8s %7d %6d  %s' "$1" "$2" $((SECONDS - $3)) "$4" "$5")"$'\n'
    case $2 in ok | skipped) ;; *) FAILED="$FAILED $1" ;; esac
    write_summary
}

if [ ! -x "$BIN/cuda-tests" ] || [ ! -x "$BIN/cuda_bench" ]; then
    echo "run-on-device: $BIN/cuda-tests and $BIN/cuda_bench are missing: build them with" >&2
    echo "tools/gpu/build-binaries.sh and pass carry: [\"gpu-bin\"] to the device tool" >&2
    exit 2
fi
if [ -n "${MLA_GPU_DRYRUN:-}" ]; then
    export LD_LIBRARY_PATH=$MLA_GPU_DRYRUN/emu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    export MLA_BENCH_QUICK=1 # the V2-Lite sizes take hours on the emulator
    HEADER="$HEADER (DRY RUN on the CPU emulator $MLA_GPU_DRYRUN/emu)"
fi
export CUDA_CACHE_PATH=$WORK/cuda-cache CUDA_CACHE_MAXSIZE=4294967296
mkdir -p "$CUDA_CACHE_PATH"
# The tests find tests/data under the repository path they were built in.
MD=$(cat "$BIN/manifest_dir" 2>/dev/null || echo "$PWD")
if [ ! -d "$MD/tests/data" ]; then
    mkdir -p "$(dirname "$MD")" && ln -sfn "$PWD" "$MD" && say "linked $MD -> $PWD (tests/data)"
fi
write_summary

# nvcc in the background: a fatbin (sm_90 SASS, compute_80 PTX) and ptxas -v.
NVCC_FATBIN=$WORK/mla.fatbin
NVCC_LOG=$WORK/nvcc.log
NVCC_PID=""
if command -v nvcc >/dev/null; then
    (timeout 300 nvcc -fatbin -O3 --threads 2 -Xptxas -v \
        -gencode arch=compute_90,code=sm_90 -gencode arch=compute_80,code=compute_80 \
        -o "$NVCC_FATBIN" crates/mla-cuda/kernels/mla.cu >"$NVCC_LOG" 2>&1
        echo "nvcc exit $?" >>"$NVCC_LOG") &
    NVCC_PID=$!
fi

# Test names of the bundle, the GPU-only long test last.
TESTS=$("$BIN/cuda-tests" --list 2>/dev/null | grep ': test$' | sed 's/: test$//' |
    grep -v '^child_' | grep -v '^mma_fragment_layout$' | sort)
TESTS="$(echo "$TESTS" | grep -v long_context_against_cpu_gpu_only) $(echo "$TESTS" | grep long_context_against_cpu_gpu_only)"

# Why a test failed: its panic message (the line after "panicked at"), else
# the first line naming a device error.
why_failed() { # log file
    local m
    m=$(grep -m1 -A1 'panicked at' "$1" | sed -n 2p)
    [ -n "$m" ] || m=$(grep -m1 -E 'Device|error' "$1")
    echo "$m" | cut -c1-300
}

# One test in its own process: prints PASS / FAIL / SKIP / TIMEOUT.
one_test() { # limit name [env...]
    local t=$1 name=$2
    shift 2
    local out=$WORK/test-$name.log
    env "$@" timeout -k 5 "$t" "$BIN/cuda-tests" --exact "$name" --nocapture --test-threads=1 >"$out" 2>&1
    local rc=$?
    cat "$out" >>"$LOG"
    if [ $rc = 124 ] || [ $rc = 137 ]; then
        echo TIMEOUT
    elif [ $rc != 0 ]; then
        echo FAIL
    elif grep -q 'SKIPPED:' "$out"; then
        echo SKIP
    else
        echo PASS
    fi
}

for phase in $PHASES; do
    start=$SECONDS
    case $phase in
    check)
        lim=$(limit 10)
        section "check (limit ${lim}s): libraries, driver, tools"
        st=ok
        detail=""
        for b in cuda-tests cuda_bench; do
            ldd "$BIN/$b" >"$WORK/ldd-$b.txt" 2>&1
            cat "$WORK/ldd-$b.txt" >>"$LOG"
        done
        if grep -q 'libcuda.so.1 => not found' "$WORK/ldd-cuda-tests.txt"; then
            lib=$(ldconfig -p 2>/dev/null | grep -o '/[^ ]*/libcuda.so.1' | head -n 1)
            [ -n "$lib" ] || lib=$(find /usr/local/nvidia /usr/lib /usr/lib64 /usr/local/cuda* \
                -name libcuda.so.1 2>/dev/null | head -n 1)
            if [ -n "$lib" ]; then
                export LD_LIBRARY_PATH=$(dirname "$lib")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
                say "libcuda.so.1 not on the loader path; using $lib"
            else
                st=failed
                detail="libcuda.so.1 not found; "
            fi
        fi
        grep -E 'not found|GLIBC' "$WORK/ldd-cuda-tests.txt" | grep -v libcuda | tee -a "$LOG" | grep -q . &&
            { st=failed; detail="${detail}missing libraries (ldd); "; }
        say "libcuda: $(ldd "$BIN/cuda-tests" 2>/dev/null | grep libcuda | sed 's/^\s*//')"
        if command -v nvidia-smi >/dev/null; then
            gpu=$(timeout 10 nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total,clocks.max.sm,clocks.max.mem \
                --format=csv,noheader 2>&1 | head -n 1)
            cudav=$(timeout 10 nvidia-smi 2>/dev/null | grep -o 'CUDA Version: [0-9.]*' | head -n 1)
            say "GPU: $gpu; $cudav"
            detail="$detail$gpu; $cudav"
        elif [ -n "${MLA_GPU_DRYRUN:-}" ]; then
            detail="${detail}dry run: no nvidia-smi"
        else
            st=failed
            detail="${detail}no nvidia-smi"
        fi
        say "nvcc: $(nvcc --version 2>/dev/null | tail -n 1 || echo none)"
        say "compute-sanitizer: $(compute-sanitizer --version 2>/dev/null | tail -n 1 || echo none)"
        cat "$BIN/BUILD" 2>/dev/null | tee -a "$LOG"
        result check "$st" "$start" "$lim" "$detail"
        ;;
    selftest)
        lim=$(limit 50)
        section "selftest (limit ${lim}s): mma.sync fragment layout, module load and JIT log"
        r=$(one_test "$lim" mma_fragment_layout)
        line=$(grep -E 'mma.sync m16n8k16|SKIPPED' "$WORK/test-mma_fragment_layout.log" | head -n 1)
        [ "$r" = PASS ] || [ "$r" = SKIP ] || line=$(why_failed "$WORK/test-mma_fragment_layout.log")
        say "mma_fragment_layout: $r $line"
        # The embedded PTX does not load: go on with nvcc's fatbin when it comes.
        if [ "$r" = FAIL ] && grep -q 'loading the kernels' "$WORK/test-mma_fragment_layout.log" &&
            [ -n "$NVCC_PID" ] && [ -z "${MLA_CUDA_MODULE_FILE:-}" ]; then
            say "the embedded PTX did not load; waiting for the nvcc fatbin"
            while [ ! -s "$NVCC_FATBIN" ] && kill -0 "$NVCC_PID" 2>/dev/null &&
                [ $((SECONDS - start)) -lt $((lim - 10)) ]; do sleep 2; done
            if [ -s "$NVCC_FATBIN" ]; then
                export MLA_CUDA_MODULE_FILE=$NVCC_FATBIN
                r2=$(one_test $((lim - (SECONDS - start))) mma_fragment_layout)
                line="$line; embedded PTX failed to load, the rest of the run uses nvcc's fatbin (MLA_CUDA_MODULE_FILE): selftest $r2"
            else
                line="$line; embedded PTX failed to load and no nvcc fatbin in time"
            fi
        fi
        case $r in PASS) st=ok ;; SKIP) st=skipped ;; *) st=failed ;; esac
        result selftest "$st" "$start" "$lim" "$r: $line"
        ;;
    tests)
        lim=$(limit 140)
        per=$(limit 60)
        section "tests (limit ${lim}s, ${per}s each, each in its own process)"
        n_pass=0 n_fail=0 n_skip=0 n_left=0 bad=""
        for t in $TESTS; do
            left=$((lim - (SECONDS - start)))
            if [ $left -lt 5 ]; then
                n_left=$((n_left + 1))
                DETAILS="${DETAILS}  test $t: NOT RUN (tests phase out of time)"$'\n'
                continue
            fi
            cap=$per
            [ "$t" = long_context_against_cpu_gpu_only ] && cap=$(limit 90)
            tl=$((left < cap ? left : cap))
            t1=$SECONDS
            r=$(one_test "$tl" "$t")
            say "  $r  $t ($((SECONDS - t1)) s)"
            case $r in
            PASS) n_pass=$((n_pass + 1)) ;;
            SKIP)
                n_skip=$((n_skip + 1))
                DETAILS="${DETAILS}  test $t: $(grep -o 'SKIPPED: .*' "$WORK/test-$t.log" | head -n 1)"$'\n'
                ;;
            *)
                n_fail=$((n_fail + 1))
                bad="$bad $t"
                why=$(why_failed "$WORK/test-$t.log")
                DETAILS="${DETAILS}  test $t: $r: $why"$'\n'
                left=$((lim - (SECONDS - start)))
                if [ $left -ge 10 ] && [ "$r" = FAIL ]; then
                    r2=$(one_test $((left < per ? left : per)) "$t" MLA_CUDA_SYNC=1)
                    why2=$(why_failed "$WORK/test-$t.log")
                    DETAILS="${DETAILS}    again with MLA_CUDA_SYNC=1: $r2: $why2"$'\n'
                    say "    again with MLA_CUDA_SYNC=1: $r2"
                fi
                ;;
            esac
            write_summary
        done
        st=ok
        [ $n_fail = 0 ] || st=failed
        [ $n_left = 0 ] || st=failed
        result tests "$st" "$start" "$lim" "$n_pass passed, $n_fail failed, $n_skip skipped, $n_left not run${bad:+ (failed:$bad)}"
        ;;
    bench)
        lim=$(limit 80)
        section "bench (limit ${lim}s): gpu-bin/cuda_bench"
        run_logged "$lim" "$BIN/cuda_bench" >"$OUTDIR/bench.txt"
        rc=$?
        head_lines=$(grep '^HEADLINE' "$OUTDIR/bench.txt" | sed 's/^HEADLINE //' | tr '\n' ';')
        st=ok
        [ $rc = 0 ] || st="failed($rc)"
        left=$((lim - (SECONDS - start)))
        if [ -n "$NVCC_PID" ] && [ $left -gt 20 ]; then
            wait "$NVCC_PID" 2>/dev/null
            NVCC_PID=""
            if [ -s "$NVCC_FATBIN" ]; then
                {
                    echo ""
                    echo "=== again with the nvcc fatbin (sm_90 SASS): MLA_CUDA_MODULE_FILE=$NVCC_FATBIN"
                } | tee -a "$OUTDIR/bench.txt" "$LOG"
                MLA_CUDA_MODULE_FILE=$NVCC_FATBIN MLA_BENCH_VARIANTS=bf16,f32 MLA_BENCH_CPU_MAX=0 \
                    run_logged $((left - 5)) "$BIN/cuda_bench" >>"$OUTDIR/bench.txt"
                head_lines="$head_lines nvcc fatbin: $(grep '^HEADLINE' "$OUTDIR/bench.txt" | tail -n 2 | sed 's/^HEADLINE //' | tr '\n' ';')"
            fi
        fi
        result bench "$st" "$start" "$lim" "$head_lines"
        ;;
    sanitize)
        lim=$(limit 120)
        section "sanitize (limit ${lim}s): compute-sanitizer memcheck, racecheck, initcheck"
        if ! command -v compute-sanitizer >/dev/null; then
            result sanitize skipped "$start" "$lim" "no compute-sanitizer"
            continue
        fi
        st=ok
        detail=""
        for spec in memcheck:per_head_keys_partial_last_group_full_cache \
            racecheck:per_head_keys_partial_last_group_full_cache initcheck:c_abi_round_trip; do
            tool=${spec%%:*}
            t=${spec#*:}
            left=$((lim - (SECONDS - start)))
            [ $left -ge 10 ] || { detail="$detail $tool: not run;"; st=failed; continue; }
            tl=$(limit 40)
            tl=$((left < tl ? left : tl))
            say "# compute-sanitizer --tool $tool $t"
            timeout -k 5 "$tl" compute-sanitizer --tool "$tool" --error-exitcode 86 \
                "$BIN/cuda-tests" --exact "$t" --test-threads=1 >"$WORK/san-$tool.log" 2>&1
            rc=$?
            cat "$WORK/san-$tool.log" >>"$LOG"
            sum=$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|test result' "$WORK/san-$tool.log" | tr '\n' ' ')
            say "$tool: exit $rc $sum"
            case $rc in
            0) detail="$detail $tool ok;" ;;
            124 | 137) detail="$detail $tool: timeout;"; st=failed ;;
            *)
                detail="$detail $tool: exit $rc ($(grep -m 3 -E '^========= (Invalid|Race|Uninit|Error|Program hit)' "$WORK/san-$tool.log" | cut -c1-160 | tr '\n' ' '));"
                st=failed
                ;;
            esac
        done
        result sanitize "$st" "$start" "$lim" "$detail"
        ;;
    profile)
        lim=$(limit 60)
        section "profile (limit ${lim}s): Nsight Compute, time and DRAM bytes per kernel"
        NCU=$(command -v ncu || ls -d /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | tail -n 1)
        if [ -z "$NCU" ] || [ -n "${MLA_GPU_DRYRUN:-}" ]; then
            result profile skipped "$start" "$lim" "${NCU:-no ncu}${MLA_GPU_DRYRUN:+ (dry run)}"
            continue
        fi
        ctxs=1,4096,32768 vars=f32,bf16 steps=2
        MLA_BENCH_VARIANTS=$vars MLA_BENCH_CONTEXTS=$ctxs MLA_BENCH_STEPS=$steps MLA_BENCH_CPU_MAX=0 \
            timeout -k 5 "$lim" "$NCU" --clock-control none -k regex:mla_ \
            --metrics gpu__time_duration.sum,dram__bytes_read.sum --csv "$BIN/cuda_bench" \
            >"$WORK/ncu.csv" 2>&1
        rc=$?
        {
            echo "# $($NCU --version 2>/dev/null | tail -n 1); ncu --clock-control none over cuda_bench"
            echo "# (MLA_BENCH_VARIANTS=$vars MLA_BENCH_CONTEXTS=$ctxs MLA_BENCH_STEPS=$steps), exit $rc"
            python3 tools/gpu/ncu_steps.py "$WORK/ncu.csv" "$ctxs" "$vars" "$steps" 2>&1
        } >"$OUTDIR/profile.txt"
        cat "$OUTDIR/profile.txt" >>"$LOG"
        grep -m 3 -E 'ERR|error' "$WORK/ncu.csv" >>"$LOG"
        st=ok
        [ $rc = 0 ] && grep -q ' sum ' "$OUTDIR/profile.txt" || st="failed($rc)"
        result profile "$st" "$start" "$lim" "$(grep -c ' sum ' "$OUTDIR/profile.txt") step tables in profile.txt"
        ;;
    *)
        echo "unknown phase $phase (check selftest tests bench sanitize profile)" >&2
        exit 2
        ;;
    esac
done

# The nvcc build's resource report: registers and spills per kernel.
if [ -n "$NVCC_PID" ]; then
    wait "$NVCC_PID" 2>/dev/null
fi
if [ -s "$NVCC_LOG" ]; then
    section "nvcc -fatbin -Xptxas -v (sm_90 SASS)"
    cat "$NVCC_LOG" >>"$LOG"
    awk '/Compiling entry function/{k=$0; sub(/.*function ./,"",k); sub(/. for .*/,"",k)} /spill stores/{s=$0} /Used [0-9]+ registers/{print "  " k ": " $0 " | " s}' \
        "$NVCC_LOG" | sed 's/ptxas info *: //g' | cut -c1-220 | tee -a "$LOG" >"$WORK/nvcc-summary.txt"
    DETAILS="${DETAILS}nvcc: $(tail -n 1 "$NVCC_LOG"); $(grep -c . "$WORK/nvcc-summary.txt") kernels (registers | spills):"$'\n'"$(cat "$WORK/nvcc-summary.txt")"$'\n'
    write_summary
fi

say ""
cat "$SUMMARY"
rm -rf "$WORK"
[ -z "$FAILED" ]
