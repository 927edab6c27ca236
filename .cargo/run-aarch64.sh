#!/bin/sh
# Cargo runner for aarch64-unknown-linux-gnu (.cargo/config.toml). Cargo applies a
# target's runner to host builds too, so on an aarch64 machine (a Jetson building
# natively) the binary runs directly; elsewhere it runs under qemu-aarch64 user-mode
# emulation with the cross glibc (QEMU_LD_PREFIX, default /usr/aarch64-linux-gnu).
if [ "$(uname -m)" = aarch64 ] || [ "$(uname -m)" = arm64 ]; then
    exec "$@"
fi
exec qemu-aarch64 -L "${QEMU_LD_PREFIX:-/usr/aarch64-linux-gnu}" "$@"
