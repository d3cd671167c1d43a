#!/bin/bash
# Writes the seed corpus of fuzz-qcow2-open into OUT_DIR: small qcow2
# images made by Debian's QEMU and by our tools, covering the format's
# variants (cluster sizes, refcount widths, v2/v3, lazy refcounts and a
# dirty image, compressed clusters in zlib and zstd, snapshots, bitmaps,
# a backing file, extended L2 entries, zero and discarded clusters) and
# our zoned extension (docs/interop/qcow2-zoned.rst).
# Generated rather than committed: the images are kilobytes to a few
# hundred kilobytes each.
#
#   tests/fuzz/make-corpus.sh OUT_DIR [BUILD_DIR]
set -euo pipefail

out=${1:?usage: make-corpus.sh OUT_DIR [BUILD_DIR]}
build=${2:-$(dirname "$0")/../../build}
QEMU_IMG=/usr/bin/qemu-img
QEMU_IO=/usr/bin/qemu-io
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Some data of every kind: normal, unaligned, zeroed, unmapped, discarded.
io_writes=(-c "write -P 0x11 0 8k" -c "write -P 0x22 70000 3000" -c "write -z 4k 4k"
           -c "write -z -u 512k 8k" -c "write -P 0x33 600k 8k" -c "discard 600k 4k")

# qemu_image NAME CREATE_OPTIONS [SIZE]: QEMU creates and writes.
qemu_image() {
    "$QEMU_IMG" create -q -f qcow2 -o "$2" "$out/$1.qcow2" "${3:-1M}"
    "$QEMU_IO" -d unmap "${io_writes[@]}" "$out/$1.qcow2" >/dev/null
}

# ours_image NAME CREATE_OPTIONS [SIZE]: ours creates and writes.
ours_image() {
    "$build/qemu-img" create -q -f qcow2 -o "$2" "$out/$1.qcow2" "${3:-1M}"
    "$build/qemu-io" -d unmap "${io_writes[@]}" "$out/$1.qcow2" >/dev/null
}

qemu_image qemu-c512 cluster_size=512
qemu_image qemu-c4k-rb1 cluster_size=4096,refcount_bits=1
qemu_image qemu-c4k-rb64 cluster_size=4096,refcount_bits=64
qemu_image qemu-c4k-v2 cluster_size=4096,compat=0.10
"$QEMU_IMG" create -q -f qcow2 "$out/qemu-c64k.qcow2" 1M
"$QEMU_IO" -c "write -P 0x11 0 512" "$out/qemu-c64k.qcow2" >/dev/null
qemu_image qemu-c16k-extl2 cluster_size=16384,extended_l2=on
qemu_image qemu-c4k-zstd cluster_size=4096,compression_type=zstd

# Lazy refcounts with the dirty bit set (bit 0 of the incompatible
# features, the header's byte 79), as a crash leaves them.
qemu_image qemu-dirty cluster_size=4096,lazy_refcounts=on
printf '\x01' | dd of="$out/qemu-dirty.qcow2" bs=1 seek=79 conv=notrunc status=none

# Compressed clusters.
"$QEMU_IMG" create -q -f raw "$tmp/data.raw" 1M
"$QEMU_IO" -f raw -c "write -P 0x55 0 64k" -c "write -P 0x66 300k 5000" "$tmp/data.raw" >/dev/null
for ct in zlib zstd; do
    "$QEMU_IMG" convert -c -f raw -O qcow2 -o "cluster_size=4096,compression_type=$ct" \
        "$tmp/data.raw" "$out/qemu-compressed-$ct.qcow2"
done

# A snapshot table and a bitmap directory.
qemu_image qemu-snapshot cluster_size=4096
"$QEMU_IMG" snapshot -c snap1 "$out/qemu-snapshot.qcow2"
"$QEMU_IO" -c "write -P 0x77 0 4k" "$out/qemu-snapshot.qcow2" >/dev/null
qemu_image qemu-bitmap cluster_size=4096
"$QEMU_IMG" bitmap --add "$out/qemu-bitmap.qcow2" bitmap0

# A backing file reference (header string and backing format extension).
"$QEMU_IMG" create -q -f qcow2 -o cluster_size=4096 "$tmp/base.qcow2" 1M
"$QEMU_IMG" create -q -f qcow2 -o cluster_size=4096 -b "$tmp/base.qcow2" -F qcow2 \
    "$out/qemu-backing.qcow2"

ours_image ours-c512 cluster_size=512
ours_image ours-c4k-rb16 cluster_size=4096
ours_image ours-c4k-rb64-lazy cluster_size=4096,refcount_bits=64,lazy_refcounts=on
ours_image ours-c4k-v2 cluster_size=4096,compat=0.10
"$build/qemu-img" create -q -f qcow2 -o cluster_size=4096,preallocation=metadata \
    "$out/ours-c4k-prealloc.qcow2" 128k
"$build/qemu-io" -c "write -P 0x11 4k 8k" "$out/ours-c4k-prealloc.qcow2" >/dev/null

# Zoned: a conventional zone, then sequential zones with write pointers in
# several states (implicitly opened by a write, explicitly opened, appended).
"$build/qemu-img" create -q -f qcow2 -o cluster_size=4096,zone.mode=host-managed,zone.size=256k \
    -o zone.conventional_zones=1,zone.max_open_zones=2,zone.max_active_zones=3 \
    "$out/ours-zoned.qcow2" 1M
"$build/qemu-io" -c "write -P 0x11 0 8k" -c "write -P 0x22 256k 8k" -c "zone_open 512k 256k" \
    -c "zone_append -p 512k 4k" "$out/ours-zoned.qcow2" >/dev/null
