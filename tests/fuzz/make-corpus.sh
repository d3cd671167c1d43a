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

# Crafted images (issue 12), as the unit tests in test-qcow2-crafted.cc
# make them: metadata areas overlapping each other or the header, metadata
# in clusters with refcount 0, and zoned headers and write pointers that
# the format forbids.
poke() {  # FILE OFFSET HEXBYTES
    printf "$(echo "$3" | sed 's/../\\x&/g')" | dd of="$1" bs=1 seek=$(($2)) conv=notrunc status=none
}
peek64() {  # FILE OFFSET: prints the big-endian u64 there
    echo $((16#$(od -An -tx1 -j $(($2)) -N8 "$1" | tr -d ' \n')))
}
be64() { printf '%016x' "$1"; }
be32() { printf '%08x' "$1"; }
# set_refcount FILE OFFSET VALUE (16-bit refcounts, 4 KiB clusters, first
# refcount block)
set_refcount() {
    local block
    block=$(peek64 "$1" "$(peek64 "$1" 48)")
    poke "$1" $((block + $2 / 4096 * 2)) "$(printf '%04x' "$3")"
}
# zoned_ext FILE: prints where the zoned extension's data starts
zoned_ext() {
    local at magic len
    at=$((16#$(od -An -tx1 -j 100 -N4 "$1" | tr -d ' \n')))
    while :; do
        magic=$(od -An -tx1 -j $at -N4 "$1" | tr -d ' \n')
        len=$((16#$(od -An -tx1 -j $((at + 4)) -N4 "$1" | tr -d ' \n')))
        if [ "$magic" = 007a6264 ]; then
            echo $((at + 8))
            return
        fi
        at=$((at + 8 + (len + 7) / 8 * 8))
    done
}

ours_image crafted-l1-on-header cluster_size=4096
poke "$out/crafted-l1-on-header.qcow2" 40 "$(be64 0)"
ours_image crafted-l1-refcount0 cluster_size=4096
set_refcount "$out/crafted-l1-refcount0.qcow2" "$(peek64 "$out/crafted-l1-refcount0.qcow2" 40)" 0
cp "$out/qemu-snapshot.qcow2" "$out/crafted-snapshot-l1-active.qcow2"
f=$out/crafted-snapshot-l1-active.qcow2
poke "$f" "$(peek64 "$f" 64)" "$(be64 "$(peek64 "$f" 40)")"

zoned_opts=cluster_size=4096,zone.mode=host-managed,zone.size=256k,zone.conventional_zones=1
"$build/qemu-img" create -q -f qcow2 -o "$zoned_opts" "$tmp/zoned.qcow2" 1M
"$build/qemu-io" -c "write -P 0x22 256k 8k" -c "zone_offline 768k 256k" "$tmp/zoned.qcow2" >/dev/null
zoned_crafted() {  # NAME: a copy of the zoned image to craft
    cp "$tmp/zoned.qcow2" "$out/crafted-zoned-$1.qcow2"
    f=$out/crafted-zoned-$1.qcow2
    ext=$(zoned_ext "$f")
    wps=$(peek64 "$f" $((ext + 48)))
}
zoned_crafted wp-refcount0
set_refcount "$f" "$wps" 0
zoned_crafted cond-on-l1
poke "$f" $((ext + 64)) "$(be64 "$(peek64 "$f" 40)")"
zoned_crafted cond-refcount0
set_refcount "$f" "$(peek64 "$f" $((ext + 64)))" 0
zoned_crafted size-unaligned
poke "$f" 24 "$(be64 $((1024 * 1024 - 100)))"
zoned_crafted too-many-zones  # 2^32-1 zones of 4 KiB
poke "$f" 24 "$(be64 $((4294967295 * 4096)))"
poke "$f" $((ext + 4)) "$(be64 4096)$(be64 4096)"
poke "$f" $((ext + 24)) "$(be32 4294967295)"
poke "$f" $((ext + 36)) "$(be32 2048)"
poke "$f" $((ext + 40)) "$(be64 $((4294967295 * 8)))"
zoned_crafted zone-larger-than-disk  # one sequential, empty zone of 2 MiB on 1 MiB
poke "$f" $((ext + 4)) "$(be64 $((2 * 1024 * 1024)))"
poke "$f" $((ext + 20)) "$(be32 0)$(be32 1)"
poke "$f" $((ext + 40)) "$(be64 8)"
poke "$f" $((ext + 72)) "$(be64 1)"
poke "$f" "$wps" 0000000000000000
zoned_crafted reserved
poke "$f" $((ext + 60)) "$(be32 1)"
zoned_crafted length-64
poke "$f" $((ext - 4)) "$(be32 64)"
zoned_crafted wp-unaligned
poke "$f" $((wps + 8)) "$(printf '%02x' 100)0004"
zoned_crafted wp-past-capacity  # zone 1: capacity 128k, pointer 192k into the zone
poke "$f" $((ext + 12)) "$(be64 $((128 * 1024)))"
poke "$f" $((wps + 8)) 0000070000000000
zoned_crafted conventional-wp
poke "$f" "$wps" 0010000000000008
zoned_crafted conventional-cond
poke "$f" "$(peek64 "$f" $((ext + 64)))" 02
