#!/usr/bin/env bash
# Cross builds, tested under emulation. Called by tools/test.sh; runs alone too:
#   bash .ci/cross.sh            everything below
#   bash .ci/cross.sh aarch64    only (a) and (b)
#   bash .ci/cross.sh baremetal  only (c), (d) and (e)
#
# (a) aarch64 Linux (NVIDIA Jetson): every test (unit, golden vectors, ...) built for
#     aarch64-unknown-linux-gnu and run under qemu-aarch64 (the runner is set in
#     .cargo/config.toml). Release profile: the tests run much faster under qemu
#     than a debug build's; the step prints how long it took.
# (b) The C and C++ demos (ffi-examples/Makefile) cross-built against the aarch64
#     libraries, run under qemu-aarch64, and compared with the same demos on x86-64.
# (c) Bare metal: ffi-examples/firmware (no std, no allocator) for thumbv7em-none-eabihf;
#     its .text against ffi-examples/size-budget.txt (fails above +10%).
# (d) The firmware booted on an emulated Cortex-M4F (qemu-system-arm -M mps2-an386):
#     the tutorial golden case, error <= 1e-5, reported over semihosting.
# (e) The no-panic link check: the staticlib (no_std, LTO, panic-handler feature) linked
#     with --gc-sections into ffi-examples/firmware-c, which calls every C entry point.
#     It must link (no panic reachable), run and pass under qemu; a probe build with a
#     deliberately panicking entry point must fail to link (the check is not vacuous).
#
# Installs what is missing (as root on Debian/Ubuntu: apt packages, rustup targets).
# Environment: CARGO_TARGET_DIR (default <repo>/target); outputs go under
# $CARGO_TARGET_DIR/cross-ci. SIZE_BUDGET_UPDATE=1 writes the measured .text sizes
# into ffi-examples/size-budget.txt (after a deliberate change; commit the file).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case "$CARGO_TARGET_DIR" in /*) ;; *) CARGO_TARGET_DIR=$ROOT/$CARGO_TARGET_DIR ;; esac
OUT=$CARGO_TARGET_DIR/cross-ci
mkdir -p "$OUT"
WHAT=${1:-all}

A64=aarch64-unknown-linux-gnu
M4=thumbv7em-none-eabihf
QEMU_A64=(qemu-aarch64 -L /usr/aarch64-linux-gnu)
QEMU_M4=(qemu-system-arm -M mps2-an386 -nographic -semihosting-config enable=on,target=native)
BUDGET=ffi-examples/size-budget.txt
TOL=1e-5

T_ALL=$(date +%s)
T_STEP=
step() { # prints the previous step's duration, then the new step's title
    local now
    now=$(date +%s)
    [ -z "$T_STEP" ] || echo "   ($((now - T_STEP)) s)"
    T_STEP=$now
    echo "== cross: $*"
}
fail() {
    echo "cross: FAIL: $*" >&2
    exit 1
}

# ---------------------------------------------------------------- tools
install_tools() {
    local pkgs=() t
    command -v aarch64-linux-gnu-gcc >/dev/null || pkgs+=(gcc-aarch64-linux-gnu)
    command -v aarch64-linux-gnu-g++ >/dev/null || pkgs+=(g++-aarch64-linux-gnu)
    command -v qemu-aarch64 >/dev/null || pkgs+=(qemu-user)
    command -v qemu-system-arm >/dev/null || pkgs+=(qemu-system-arm)
    command -v arm-none-eabi-gcc >/dev/null || pkgs+=(gcc-arm-none-eabi libnewlib-arm-none-eabi)
    command -v python3 >/dev/null || pkgs+=(python3)
    if [ ${#pkgs[@]} -gt 0 ]; then
        echo "installing: ${pkgs[*]}"
        [ "$(id -u)" = 0 ] || fail "missing ${pkgs[*]}; run as root or install them"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
    fi
    for t in $A64 $M4; do
        rustup target list --installed | grep -qx "$t" || rustup target add "$t"
    done
}

# ---------------------------------------------------------------- (a), (b)
aarch64() {
    step "(a) cargo test --release --target $A64 (under qemu-aarch64)"
    cargo test --release --target $A64 >"$OUT/a64-test.log" 2>&1 ||
        { tail -n 60 "$OUT/a64-test.log"; fail "aarch64 tests (log: $OUT/a64-test.log)"; }
    grep -E "^test result|Running|skipped" "$OUT/a64-test.log"
    grep -q "^test result: ok" "$OUT/a64-test.log" || fail "aarch64: no test results"

    step "(b) C/C++ demos: x86-64 and aarch64 (qemu-aarch64)"
    local host=(make -s -C ffi-examples BUILD="$OUT/ffi-host" CARGO_TARGET_DIR="$CARGO_TARGET_DIR")
    local a64=(make -s -C ffi-examples BUILD="$OUT/ffi-$A64" CARGO_TARGET_DIR="$CARGO_TARGET_DIR"
        TARGET=$A64 CC=aarch64-linux-gnu-gcc CXX=aarch64-linux-gnu-g++ RUNNER="${QEMU_A64[*]}")
    "${host[@]}" lib >/dev/null 2>&1 || "${host[@]}" lib
    "${a64[@]}" lib >/dev/null 2>&1 || "${a64[@]}" lib
    "${host[@]}" run >"$OUT/demos-host.log" 2>&1 || { cat "$OUT/demos-host.log"; fail "host demos"; }
    "${a64[@]}" run >"$OUT/demos-a64.log" 2>&1 || { cat "$OUT/demos-a64.log"; fail "aarch64 demos"; }
    aarch64-linux-gnu-readelf -h "$OUT/ffi-$A64/demo_c_static" | grep -q AArch64 ||
        fail "demo_c_static is not an aarch64 binary"
    local h a
    h=$(grep -E "^== |^max error" "$OUT/demos-host.log")
    a=$(grep -E "^== |^max error" "$OUT/demos-a64.log")
    echo "x86-64:"
    echo "$h" | sed 's/^/  /'
    echo "aarch64:"
    echo "$a" | sed 's/^/  /'
    [ "$(echo "$a" | grep -c '^max error')" = 4 ] || fail "aarch64: expected 4 demos with a max error line"
    [ "$(grep -c '^PASS' "$OUT/demos-a64.log")" = 4 ] || fail "aarch64: expected 4 PASS"
    echo "$a" | awk -v tol=$TOL '/^max error/ { if ($3 + 0 > tol) bad = 1 } END { exit bad }' ||
        fail "aarch64: a max error is above $TOL"
    if [ "$h" = "$a" ]; then
        echo "aarch64 and x86-64 print the same max errors"
    else
        echo "note: aarch64 and x86-64 max errors differ (both within $TOL)"
    fi
}

# ---------------------------------------------------------------- (c)..(e)
text_size() { # .text bytes of an ELF
    arm-none-eabi-size -A "$1" | awk '$1 == ".text" { print $2 }'
}

check_budget() { # name elf
    local name=$1 elf=$2 text budget limit
    arm-none-eabi-size -A "$elf" | awk '$1 ~ /^\.(vector_table|vectors|text|rodata|data|bss)$/'
    text=$(text_size "$elf")
    if [ -n "${SIZE_BUDGET_UPDATE:-}" ]; then
        sed -i "s/^$name [0-9]*\$/$name $text/" "$BUDGET"
        echo "SIZE_BUDGET_UPDATE: $BUDGET now says $name $text"
    fi
    budget=$(awk -v n="$name" '$1 == n { print $2 }' "$BUDGET")
    [ -n "$budget" ] || fail "no '$name' line in $BUDGET (.text is $text)"
    limit=$((budget + budget / 10))
    echo "$name .text: $text bytes (budget $budget, limit +10% = $limit)"
    [ "$text" -le "$limit" ] || fail "$name .text $text is more than 10% above the budget $budget ($BUDGET)"
}

run_m4() { # elf log: boots it, output to log and stdout; returns qemu's status
    local rc=0
    timeout 300 "${QEMU_M4[@]}" -kernel "$1" </dev/null >"$2" 2>&1 || rc=$?
    sed 's/^/  | /' "$2"
    return $rc
}

# Runs a cargo command (in the current directory) into a log; shows the log on failure.
cargo_logged() { # log cargo-args...
    local log=$1
    shift
    cargo "$@" >"$log" 2>&1 || { cat "$log"; fail "cargo $*"; }
}

# Builds the no_std LTO staticlib (extra args go to rustc) and copies it to $1.
# `--crate-type staticlib` alone: with Cargo.toml's rlib beside it cargo skips LTO.
staticlib() {
    local dest=$1
    shift
    CARGO_PROFILE_RELEASE_LTO=true CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 CARGO_PROFILE_RELEASE_PANIC=abort \
        cargo_logged "${dest%.a}.log" rustc -p mla-rt --release --lib --crate-type staticlib --target $M4 \
        --no-default-features --features panic-handler -- "$@"
    cp "$CARGO_TARGET_DIR/$M4/release/libmla.a" "$dest"
}

# Links the C firmware with the panic symbol stubbed and prints the call chains that
# reach the panic handler (args: library, PROBE).
panic_report() {
    local lib=$1 probe=$2 elf=$OUT/fwc/diag-$2.elf
    arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb -mfpu=fpv4-sp-d16 -mfloat-abi=hard -nostdlib \
        -nostartfiles -T ffi-examples/firmware-c/link.ld -Wl,--gc-sections -Wl,-z,noexecstack \
        -Wl,--defsym=mla_panic_is_reachable=0 "$OUT/fwc/main-$probe.o" "$OUT/fwc/startup.o" \
        "$lib" -lgcc -o "$elf"
    arm-none-eabi-objdump -d --no-show-raw-insn -C "$elf" >"${elf%.elf}.dis"
    python3 ffi-examples/firmware-c/panic_paths.py "${elf%.elf}.dis" || true
    # Source lines of the panic calls (innermost frame, then the crate's frames).
    awk '/^[0-9a-f]+ <.*>:$/ { f = $0 }
         /\tbl\t[0-9a-f]+ <core::panicking::/ && f !~ /core::panicking::/ { sub(":", "", $1); print $1 }' \
        "${elf%.elf}.dis" | sort -u | while read -r addr; do
        echo "  panic call at 0x$addr:"
        arm-none-eabi-addr2line -e "$elf" -i -f -C -p "0x$addr" | sed 's|/rustc/[0-9a-f]*/library/|<rust>/|' |
            awk 'NR == 1 || !/<rust>/' | head -4 | sed 's/^/    /'
    done
}

baremetal() {
    step "(c) mla-core for $M4 as it comes: no features, no panic handler"
    cargo_logged "$OUT/core-m4.log" build -p mla-core --release --target $M4

    step "(c) firmware for $M4 (no std, no allocator)"
    (cd ffi-examples/firmware && cargo fmt --check && cargo_logged "$OUT/firmware-build.log" build --release) ||
        fail "firmware: cargo fmt --check or build (see above)"
    local fw=$CARGO_TARGET_DIR/$M4/release/mla-firmware
    check_budget firmware "$fw"

    step "(d) firmware on qemu-system-arm mps2-an386 (Cortex-M4F)"
    run_m4 "$fw" "$OUT/firmware.log" || fail "firmware exited with status $? (log: $OUT/firmware.log)"
    grep -q "^mla-firmware: PASS" "$OUT/firmware.log" || fail "firmware did not print PASS"

    step "(e) no-panic link check (ffi-examples/firmware-c)"
    mkdir -p "$OUT/fwc"
    # Every function the header declares (outside the CUDA block) must be called.
    local missing
    missing=$(python3 - <<'EOF'
import re
h = open("include/mla.h").read()
h = re.sub(r"#if defined\(MLA_FEATURE_CUDA\).*?#endif[^\n]*", "", h, flags=re.S)
decl = set(re.findall(r"^[a-z][\w \*]*?\b(mla_\w+)\(", h, flags=re.M))
used = set(re.findall(r"\b(mla_\w+)\(", open("ffi-examples/firmware-c/main.c").read()))
print(" ".join(sorted(decl - used)))
EOF
)
    [ -z "$missing" ] || fail "ffi-examples/firmware-c/main.c does not call: $missing"
    staticlib "$OUT/fwc/libmla.a"
    local fwc=(make -s -C ffi-examples/firmware-c BUILD="$OUT/fwc")
    if ! "${fwc[@]}" LIB="$OUT/fwc/libmla.a" >"$OUT/fwc/link.log" 2>&1; then
        cat "$OUT/fwc/link.log"
        grep -q "undefined reference to .mla_panic_is_reachable" "$OUT/fwc/link.log" ||
            fail "firmware-c did not link (see above)"
        echo "A panic is reachable from the C API. Call chains (direct calls only):"
        panic_report "$OUT/fwc/libmla.a" 0
        fail "no-panic link check: a panic is reachable from the C entry points (above)"
    fi
    echo "linked: no panic reachable from any C entry point"
    check_budget firmware-c "$OUT/fwc/firmware-c.elf"
    run_m4 "$OUT/fwc/firmware-c.elf" "$OUT/fwc/run.log" || fail "firmware-c exited with status $?"
    grep -q "^firmware-c: PASS" "$OUT/fwc/run.log" || fail "firmware-c did not print PASS"

    # The probe: same program plus a call to an entry point with a reachable panic.
    staticlib "$OUT/fwc/libmla-probe.a" --cfg mla_panic_probe
    if "${fwc[@]}" LIB="$OUT/fwc/libmla-probe.a" PROBE=1 >"$OUT/fwc/probe.log" 2>&1; then
        fail "probe: the link succeeded although mla_panic_probe can panic: the check is vacuous"
    fi
    grep -q "undefined reference to .mla_panic_is_reachable" "$OUT/fwc/probe.log" ||
        { cat "$OUT/fwc/probe.log"; fail "probe: link failed for another reason"; }
    local reach
    reach=$(panic_report "$OUT/fwc/libmla-probe.a" 1 | grep "reaches the panic handler" || true)
    [ "$reach" = "mla_panic_probe reaches the panic handler:" ] ||
        fail "probe: expected only mla_panic_probe to reach the panic handler, got: $reach"
    echo "probe: the link fails as it must (mla_panic_probe reaches the panic handler)"
}

install_tools
case "$WHAT" in
all) aarch64; baremetal ;;
aarch64) aarch64 ;;
baremetal) baremetal ;;
*) fail "unknown step '$WHAT' (all, aarch64, baremetal)" ;;
esac
step "done"
echo "cross: PASS in $(($(date +%s) - T_ALL)) s"
