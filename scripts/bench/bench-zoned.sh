#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# bench-zoned.sh: the cost of zoned emulation.  The same "qemu-img bench"
# workload of ours on a zoned qcow2 image and on a plain one, in one run, and
# the timings of zone reset and of opening many zones next to their plain
# counterparts.
#
# Usage: scripts/bench/bench-zoned.sh [BUILD_DIR]
#
#   BUILD_DIR   where qemu-img and tests/bench/zone-timings are (default
#               build/); nothing is built
#
# Environment: BENCH_DIR (not tmpfs; default /var/tmp/qemu-zoned-bench),
# BENCH_REPEAT (runs per cell, the fastest counts; default 5), BENCH_SCALE
# (multiplies request counts), BENCH_BASELINE (another build directory, e.g.
# of the commit before a change: the first table gets its zoned time in the
# same rounds, column "base", and "base/zoned", above 1 when this build is
# faster).
#
# Rows (each run on a new 4 GiB image; zoned: host-managed, 256 MiB zones):
#   write   sequential 4 KiB writes from offset 0; on the zoned image they go
#           to each zone's write pointer in turn
#   append  zone appends (qemu-zoned's --zone-append) of 4 KiB to the zone
#           of each sequential offset; the plain column runs the
#           sequential writes of the same bytes
# "zoned/plain" is the plain time divided by the zoned one: above 0.9 is
# the target (issue 4), above 1 means the zoned image was faster.
set -euo pipefail
shopt -s inherit_errexit
. "$(dirname "$0")/lib.sh"

build=${1:-build}
img=$build/qemu-img
timings=$build/tests/bench/zone-timings
dir=${BENCH_DIR:-/var/tmp/qemu-zoned-bench}
repeat=${BENCH_REPEAT:-5}
require_executable "$img" "build it first"
require_executable "$timings" "build it first"
base=${BENCH_BASELINE:-}
[ -z "$base" ] || require_executable "$base/qemu-img" "build it first"
bench_dir_ready "$dir"

plain=$dir/plain.qcow2
zoned=$dir/zoned.qcow2
trap 'rm -f "$plain" "$zoned"' EXIT

new_image()
{
    rm -f "$1"
    if [ "$1" = "$zoned" ]; then
        "$img" create -q -f qcow2 -o zone.mode=host-managed,zone.size=256M "$1" "$2"
    else
        "$img" create -q -f qcow2 "$1" "$2"
    fi
}

# One timed run on a new image: KIND (plain|zoned), then bench arguments.
run_fresh()
{
    local kind=$1 prog=$img
    shift
    local path=$plain
    [ "$kind" = base ] && prog=$base/qemu-img kind=zoned
    [ "$kind" = zoned ] && path=$zoned
    new_image "$path" 4G
    run_once "$prog" bench -f qcow2 "$@" "$path"
}

echo
print_setup "$img" /usr/bin/qemu-img "$dir"
echo "Each cell: the fastest of $repeat runs, in seconds (or as labelled)."
echo
printf '%-7s %5s %-9s %8s %9s %9s %12s' op depth cache requests plain zoned zoned/plain
[ -z "$base" ] || printf ' %9s %10s' base base/zoned
echo
for row in "write 1 writeback 40000" "write 32 writeback 100000" "append 32 writeback 100000" \
    "write 1 none 10000" "write 32 none 40000" "append 32 none 40000"; do
    read -r op depth cache count <<<"$row"
    count=$(scaled "$count")
    args=(-w -t "$cache" -d "$depth" -s 4k -c "$count")
    zargs=("${args[@]}")
    [ "$op" = append ] && zargs+=(--zone-append)
    t_plain="" t_zoned="" t_base=""
    for ((i = 0; i < repeat; i++)); do
        [ -z "$base" ] || t_base=$(min_time "$(run_fresh base "${zargs[@]}")" "$t_base")
        # Alternate which goes first, so that neither always follows the other.
        if ((i % 2)); then
            t_zoned=$(min_time "$(run_fresh zoned "${zargs[@]}")" "$t_zoned")
            t_plain=$(min_time "$(run_fresh plain "${args[@]}")" "$t_plain")
        else
            t_plain=$(min_time "$(run_fresh plain "${args[@]}")" "$t_plain")
            t_zoned=$(min_time "$(run_fresh zoned "${zargs[@]}")" "$t_zoned")
        fi
    done
    printf '%-7s %5s %-9s %8s %9s %9s %12s' "$op" "$depth" "$cache" "$count" "$t_plain" \
        "$t_zoned" "$(ratio "$t_plain" - "$t_zoned")"
    [ -z "$base" ] || printf ' %9s %10s' "$t_base" "$(ratio "$t_base" - "$t_zoned")"
    echo
done

# Reset of a full 256 MiB zone against a discard of the same 256 MiB of a
# plain image (discard=unmap), each followed by the flush that punches the
# freed clusters out of the file.
echo
echo "Freeing 256 MiB of written data (the fastest of $repeat runs, milliseconds):"
best_reset="" best_discard="" best_rflush="" best_dflush=""
for ((i = 0; i < repeat; i++)); do
    for kind in zoned plain; do
        path=$plain
        [ "$kind" = zoned ] && path=$zoned
        new_image "$path" 1G
        "$img" bench -w -f qcow2 -s 1M -c 256 "$path" >/dev/null
        sync
        out=$("$timings" reset "$path") || die "zone-timings reset $path failed"
        read -r _ op_ms _ _ flush_ms _ _ before _ after _ <<<"$out"
        [ "$after" -lt $((before - 200 * 1024 * 1024)) ] ||
            die "the $kind image's file did not shrink: $out"
        if [ $kind = zoned ]; then
            best_reset=$(min_time "$op_ms" "$best_reset")
            best_rflush=$(min_time "${flush_ms}" "$best_rflush")
        else
            best_discard=$(min_time "$op_ms" "$best_discard")
            best_dflush=$(min_time "${flush_ms}" "$best_dflush")
        fi
    done
done
printf '  zone reset %8s ms, then flush %8s ms\n' "$best_reset" "$best_rflush"
printf '  discard    %8s ms, then flush %8s ms\n' "$best_discard" "$best_dflush"

# Opening 100,000 zones (64 KiB each, one cluster) against a plain image of
# the same size.
echo
rm -f "$zoned"
"$img" create -q -f qcow2 -o zone.mode=host-managed,zone.size=64k,zone.max_append_bytes=32k \
    "$zoned" 6400000K
new_image "$plain" 6400000K
read -r _ t_zopen _ nr _ <<<"$("$timings" open "$zoned")"
read -r _ t_popen _ <<<"$("$timings" open "$plain")"
echo "Opening an image of $nr zones: $t_zopen us (plain image of the same size: $t_popen us)"
