#!/bin/bash
# The main job: install, build, then use an emulated zoned drive: create a
# zoned qcow2 image, write and append to zones, report them, reset one,
# and show that the state survives a restart.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
img=$dir/zns.qcow2
set -x
build/qemu-img create -f qcow2 "$img" -o size=1G -o zone.mode=host-managed -o zone.size=64M \
    -o zone.capacity=62M -o zone.conventional_zones=1 -o zone.max_open_zones=4 \
    -o zone.max_active_zones=8 -o zone.max_append_bytes=128K
build/qemu-io -f qcow2 -c "write -P 0xab 64M 1M" -c "zap -p 128M 64k" -c "zap -p 128M 64k" \
    -c "zrp 0 4" "$img"
# A restart: open zones come back closed, write pointers where they were.
build/qemu-io -f qcow2 -c "zrp 64M 2" -c "read -P 0xab 64M 1M" -c "zrs 64M 64M" -c "zrp 64M 1" "$img"
build/qemu-img info "$img"
build/qemu-img check "$img"
