#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# bench-instructions.sh: instructions executed (valgrind's callgrind) by the
# same "qemu-img bench" runs of two builds, e.g. the commits before and after
# a change.  Unlike times, instruction counts do not depend on how loaded
# the machine is; they still vary by a percent or two between runs of the
# same binary (how often the event loop wakes up depends on when io_uring
# completes).
#
# Usage: scripts/bench/bench-instructions.sh OLD_BUILD_DIR NEW_BUILD_DIR
#
# Environment: BENCH_DIR (default /var/tmp/qemu-zoned-bench), BENCH_COUNT
# (requests per run; default 20000).
#
# Rows: 4 KiB requests with -i io_uring on preallocated images (a plain
# qcow2 and, new for every run, a host-managed one of 256 MiB zones).
# Allocating writes are left out: under valgrind 3.19 requests handed to
# the thread pool never complete (valgrind seems to keep its lock across
# io_uring_enter, so the workers never run).
set -euo pipefail
shopt -s inherit_errexit
. "$(dirname "$0")/lib.sh"

[ $# = 2 ] || die "usage: $0 OLD_BUILD_DIR NEW_BUILD_DIR"
old=$1 new=$2
dir=${BENCH_DIR:-/var/tmp/qemu-zoned-bench}
count=${BENCH_COUNT:-20000}
require_executable "$old/qemu-img" "build it first"
require_executable "$new/qemu-img" "build it first"
command -v valgrind >/dev/null || die "valgrind is not installed"
bench_dir_ready "$dir"

plain=$dir/instr-plain.qcow2
zoned=$dir/instr-zoned.qcow2
written=$dir/instr-written.qcow2
trap 'rm -f "$plain" "$zoned" "$written"' EXIT
zone_opts=zone.mode=host-managed,zone.size=256M,preallocation=falloc
"$new/qemu-img" create -q -f qcow2 -o preallocation=falloc "$plain" 1G

# Instructions of one run of PROGRAM bench ARGS...
instructions()
{
    local prog=$1 out
    shift
    out=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null "$prog" bench -f qcow2 \
        -i io_uring -s 4k -c "$count" "$@" 2>&1) || die "failed: $prog bench $* -> $out"
    awk '/Collected :/ { print $4 }' <<<"$out"
}

# row NAME IMAGE ARGS...: IMAGE "zoned" means a new zoned image per run.
row()
{
    local name=$1 image=$2 counts=()
    shift 2
    for build in "$old" "$new"; do
        local path=$image
        if [ "$image" = zoned ]; then
            rm -f "$zoned"
            "$build/qemu-img" create -q -f qcow2 -o "$zone_opts" "$zoned" 1G
            path=$zoned
        fi
        counts+=("$(instructions "$build/qemu-img" "$@" "$path")")
    done
    awk -v n="$name" -v a="${counts[0]}" -v b="${counts[1]}" \
        'BEGIN { printf "%-26s %14d %14d %+7.2f%%\n", n, a, b, (b - a) * 100 / a }'
}

echo "Old: $old  New: $new  ($count requests of 4 KiB per run)"
printf '%-26s %14s %14s %8s\n' row old new change
row "prealloc write, depth 1" "$plain" -w -d 1
row "prealloc write, depth 32" "$plain" -w -d 32
row "prealloc read, depth 1" "$plain" -d 1
row "zoned write, depth 1" zoned -w -d 1
row "zoned write, depth 32" zoned -w -d 32
row "zoned append, depth 1" zoned -w -d 1 --zone-append
"$new/qemu-img" create -q -f qcow2 -o "$zone_opts" "$written" 1G
"$new/qemu-img" bench -f qcow2 -w -s 4k -c "$count" "$written" >/dev/null
row "zoned read, depth 1" "$written" -d 1
