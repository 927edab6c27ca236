#!/usr/bin/env bash
# Installs everything the demo and the tests need on a fresh Debian machine (as
# root; uses sudo otherwise). Idempotent: what is already there is skipped.
#   apt: C/C++ toolchains (host, aarch64 cross, arm-none-eabi), qemu (user and
#        system), clang-14 (sanitizers, NVPTX for the CUDA feature), valgrind,
#        cmake, pkg-config.
#   rustup: aarch64-unknown-linux-gnu and thumbv7em-none-eabihf targets; clippy,
#        rustfmt; nightly with miri and rust-src (Miri, cargo-fuzz).
#   cargo: cargo-fuzz.
set -euo pipefail
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

APT_PKGS="build-essential pkg-config cmake valgrind clang-14 llvm-14 libclang-rt-14-dev
  gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user qemu-system-arm
  gcc-arm-none-eabi libnewlib-arm-none-eabi binutils-arm-none-eabi"
missing=""
for p in $APT_PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup: apt-get install$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

rustup component add clippy rustfmt >/dev/null 2>&1 || true
installed_targets=$(rustup target list --installed)
for t in aarch64-unknown-linux-gnu thumbv7em-none-eabihf; do
  echo "$installed_targets" | grep -qx "$t" || rustup target add "$t"
done
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal
fi
rustup component add miri rust-src --toolchain nightly >/dev/null 2>&1
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
echo "setup: done"
