#!/bin/bash
# Installs everything qemu-zoned needs to build and test, from Debian
# bookworm's packages.  Safe to run repeatedly; needs root (or sudo).
set -euo pipefail

packages=(
    build-essential meson ninja-build pkg-config
    libglib2.0-dev zlib1g-dev libzstd-dev liburing-dev
    catch2 nlohmann-json3-dev
    qemu-utils           # Debian's QEMU 7.2 tools: the reference peer for tests
    clang libclang-rt-dev  # the libFuzzer harnesses (tests/fuzz): clang and its fuzzer runtime
    # tests/e2e: host tools that build the guest's initramfs and run in it
    busybox-static cpio kmod zstd xz-utils util-linux nvme-cli fio btrfs-progs e2fsprogs
    f2fs-tools iproute2 bash debian-archive-keyring python3
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
