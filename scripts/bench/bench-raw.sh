#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# bench-raw.sh: "qemu-img bench" of our qemu-img against QEMU's on one raw
# image, and a table of the times.
#
# Usage: scripts/bench/bench-raw.sh [OUR_QEMU_IMG]
#
#   OUR_QEMU_IMG       our qemu-img (default: build/qemu-img); nothing is built
#
# Environment:
#   QEMU_IMG_REF       the reference (default: /usr/bin/qemu-img)
#   BENCH_DIR          where the image lives; must not be tmpfs, or the
#                      O_DIRECT rows measure nothing (default: /var/tmp/qemu-zoned-bench)
#   BENCH_REPEAT       runs per cell, the fastest counts (default: 5)
#   BENCH_SCALE        multiplies every request count (default: 1)
#   BENCH_MAX_LOAD     on a shared machine: before each row, wait (up to ten
#                      minutes) until the 1-minute load average is below this
#
# The image is 1 GiB of random data, written once and kept for later runs,
# so that reads hit real data.  Each row runs the same requests with:
#   QEMU threads    QEMU's default AIO mode
#   QEMU io_uring   QEMU with -i io_uring (when it supports it)
#   ours            our default AIO mode (io_uring)
# and "QEMU/ours" is the faster QEMU time divided by ours: above 1 means ours
# is faster.  "writeback" rows go through the host page cache, "none" rows
# use O_DIRECT (-t none).  Dirty data is synced before every run so runs do
# not pay for each other's writeback.
set -euo pipefail
shopt -s inherit_errexit
. "$(dirname "$0")/lib.sh"

ours=${1:-build/qemu-img}
ref=${QEMU_IMG_REF:-/usr/bin/qemu-img}
dir=${BENCH_DIR:-/var/tmp/qemu-zoned-bench}
repeat=${BENCH_REPEAT:-5}
max_load=${BENCH_MAX_LOAD:-}
img=$dir/bench.raw
img_mib=1024
require_executable "$ours" "build it first"
require_executable "$ref"
bench_dir_ready "$dir"

if [ "$(stat -c %s "$img" 2>/dev/null || echo 0)" != $((img_mib << 20)) ]; then
    echo "Writing a ${img_mib} MiB image of random data to $img ..."
    dd if=/dev/urandom of="$img" bs=1M count=$img_mib conv=fsync status=none
fi

# Waits for the machine to calm down when BENCH_MAX_LOAD asks for it.
wait_for_quiet()
{
    local waited=0
    [ -n "$max_load" ] || return 0
    while ! awk -v max="$max_load" '{ exit !($1 < max) }' /proc/loadavg; do
        if [ $waited -ge 600 ]; then
            echo "${0##*/}: load still $(cut -d' ' -f1 /proc/loadavg) after 10 minutes; going on" >&2
            return 0
        fi
        sleep 10
        waited=$((waited + 10))
    done
}

have_uring=0
if "$ref" bench -c 1 -f raw -i io_uring "$img" >/dev/null 2>&1; then
    have_uring=1
fi

# size  rw     depth cache      requests (sized for roughly a second each)
rows=(
    "4k    read  1  writeback 100000"
    "4k    read  32 writeback 200000"
    "4k    write 1  writeback 100000"
    "4k    write 32 writeback 150000"
    "1M    read  1  writeback 20000"
    "1M    read  32 writeback 20000"
    "1M    write 1  writeback 15000"
    "1M    write 32 writeback 15000"
    "4k    read  1  none      15000"
    "4k    read  32 none      60000"
    "4k    write 1  none      15000"
    "4k    write 32 none      80000"
    "1M    read  1  none      2000"
    "1M    read  32 none      2000"
    "1M    write 1  none      4000"
    "1M    write 32 none      4000"
)

echo
echo "Host:    $(uname -srm), $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo))"
echo "Image:   $img ($(df --output=fstype "$dir" | tail -1) on $(df --output=source "$dir" | tail -1), ${img_mib} MiB)"
echo "Load:    $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min) at the start"
echo "Ours:    $("$ours" --version | head -1)"
echo "QEMU:    $("$ref" --version | head -1)"
echo "Each cell: the fastest of $repeat runs, in seconds."
echo
printf '%-5s %-5s %5s %-9s %8s %12s %13s %8s %9s\n' \
    size rw depth cache requests "QEMU threads" "QEMU io_uring" ours QEMU/ours
for row in "${rows[@]}"; do
    read -r size rw depth cache count <<<"$row"
    count=$(scaled "$count")
    args=(bench -f raw -t "$cache" -d "$depth" -s "$size" -c "$count")
    if [ "$rw" = write ]; then
        args+=(-w)
    fi
    wait_for_quiet
    progs=(thr ours)
    if [ $have_uring = 1 ]; then
        progs=(thr uring ours)
    fi
    t_thr="" t_uring="" t_ours=""
    for ((i = 0; i < repeat; i++)); do
        for prog in $(round_order $i "${progs[@]}"); do
            case $prog in
            thr)
                t=$(run_once "$ref" "${args[@]}" -i threads "$img")
                t_thr=$(min_time "$t" "$t_thr")
                ;;
            uring)
                t=$(run_once "$ref" "${args[@]}" -i io_uring "$img")
                t_uring=$(min_time "$t" "$t_uring")
                ;;
            ours)
                t=$(run_once "$ours" "${args[@]}" "$img")
                t_ours=$(min_time "$t" "$t_ours")
                ;;
            esac
        done
    done
    t_uring=${t_uring:--}
    printf '%-5s %-5s %5s %-9s %8s %12s %13s %8s %9s\n' \
        "$size" "$rw" "$depth" "$cache" "$count" "$t_thr" "$t_uring" "$t_ours" \
        "$(ratio "$t_thr" "$t_uring" "$t_ours")"
done
echo
echo "Load:    $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min) at the end"
