#!/usr/bin/env bash
# Installs what the demo or the tests need on a fresh Debian/Ubuntu machine (as
# root; through sudo otherwise). Idempotent: what is already there is skipped.
#
#   tools/setup.sh demo   what tools/demo.sh needs: a C compiler and make
#                         (build-essential), curl, and the Rust toolchain.
#   tools/setup.sh test   what tools/test.sh needs (the default): the above, plus
#                         apt: pkg-config, cmake, valgrind, clang-14 and llvm-14
#                         (sanitizers; NVPTX for the CUDA feature), the aarch64
#                         cross gcc and qemu-user, arm-none-eabi gcc/newlib and
#                         qemu-system-arm; rustup: nightly with miri and rust-src
#                         (Miri, cargo-fuzz); cargo: cargo-fuzz.
#
# The Rust toolchain: when rustup is missing it is installed from
# static.rust-lang.org into $CARGO_HOME (default ~/.cargo) with no default
# toolchain; then `rustup toolchain install` installs the one pinned in
# rust-toolchain.toml (version, clippy, rustfmt, the aarch64 and thumbv7em targets),
# and makes it the default toolchain when there is none.
# To use cargo in your own shell afterwards: . "$HOME/.cargo/env"
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${1:-test}
case $MODE in
demo | test) ;;
*)
    echo "usage: tools/setup.sh [demo|test]" >&2
    exit 2
    ;;
esac

SUDO=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "setup: not root and no sudo: cannot install packages" >&2; exit 1; }
    SUDO="sudo"
fi

# --- apt ----------------------------------------------------------------------
APT_PKGS="build-essential curl ca-certificates"
if [ "$MODE" = test ]; then
    APT_PKGS="$APT_PKGS git python3 pkg-config cmake valgrind clang-14 llvm-14 libclang-rt-14-dev
      gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user qemu-system-arm
      gcc-arm-none-eabi libnewlib-arm-none-eabi binutils-arm-none-eabi"
fi
missing=""
for p in $APT_PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "setup: apt-get install$missing"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# --- rustup and the pinned toolchain -------------------------------------------
CARGO_BIN=${CARGO_HOME:-$HOME/.cargo}/bin
export PATH="$CARGO_BIN:$PATH"
if ! command -v rustup >/dev/null; then
    echo "setup: installing rustup into ${CARGO_BIN%/bin} (from static.rust-lang.org)"
    curl --proto '=https' --tlsv1.2 -sSf https://static.rust-lang.org/rustup/rustup-init.sh |
        sh -s -- -y --profile minimal --default-toolchain none
fi
# Without an argument, `rustup toolchain install` (rustup 1.28 and later) installs the
# toolchain that rust-toolchain.toml names, with its components and targets; older
# rustups do that on `rustup show`.
rustup_version=$(rustup --version 2>/dev/null | sed -n 's/^rustup \([0-9]*\.[0-9]*\).*/\1/p')
if [ "$(printf '%s\n' 1.28 "$rustup_version" | sort -V | head -n1)" = 1.28 ]; then
    rustup toolchain install
else
    rustup show >/dev/null
fi
# Outside this repository (e.g. a project that depends on mla-core, as the README
# shows) rustup uses the default toolchain: make it the pinned one if there is none.
if ! rustup default >/dev/null 2>&1; then
    rustup default "$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)"
fi
rustc --version
cargo --version

if [ "$MODE" = test ]; then
    if ! rustup run nightly rustc --version >/dev/null 2>&1; then
        rustup toolchain install nightly --profile minimal
    fi
    if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^miri'; then
        rustup component add miri rust-src --toolchain nightly
    fi
    if ! cargo fuzz --version >/dev/null 2>&1; then
        cargo install cargo-fuzz --locked
    fi
fi
echo "setup: done ($MODE)"
