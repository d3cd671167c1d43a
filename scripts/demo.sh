#!/bin/bash
# The main job: install, build, then create an image and write/read it with
# our qemu-img and qemu-io.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh

img=$(mktemp -d)/demo.raw
trap 'rm -rf "$(dirname "$img")"' EXIT
set -x
build/qemu-img create -f raw "$img" 64M
build/qemu-io -f raw -c "write -P 0xab 0 1M" -c "read -P 0xab 0 1M" -c "read -P 0 1M 1M" "$img"
build/qemu-img info "$img"
