#!/usr/bin/env bash
# Cross-compiles the kernel's unit tests for aarch64-unknown-linux-gnu and runs
# them under qemu-user: the NEON path (and the approximate half path on NEON)
# must give the same bits as the reference, as on x86.
#
#   bash scripts/check-aarch64.sh            # the kernel's tests
#   bash scripts/check-aarch64.sh matching   # any test filter (e.g. the engine's)
#
# Installs what it needs when missing (as root, Debian): qemu-user-static and
# the gcc-aarch64-linux-gnu cross linker (which also cross-compiles ring's C
# code), and the Rust target. Builds go to the usual target/ directory
# (target/aarch64-unknown-linux-gnu/). This checks correctness only: qemu says
# nothing about speed on ARM hardware.
set -euo pipefail
cd "$(dirname "$0")/.."

filter="${1:-matching::kernel}"
target=aarch64-unknown-linux-gnu

need=()
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
if ((${#need[@]})); then
    echo "installing ${need[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
rustup target list --installed | grep -qx "$target" || rustup target add "$target"

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64-static -L /usr/aarch64-linux-gnu"
# C dependencies (ring) compiled by the cc crate.
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar

echo "qemu: $(qemu-aarch64-static --version | head -n1)" >&2
nice -n 10 cargo test --lib --target "$target" -- --test-threads 2 "$filter"
