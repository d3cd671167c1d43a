#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# bench-qcow2.sh: "qemu-img bench" of our qemu-img against QEMU's on qcow2
# images, as a table of times and ratios.
#
# Usage: scripts/bench/bench-qcow2.sh [OUR_QEMU_IMG]
#
# Environment: QEMU_IMG_REF (default /usr/bin/qemu-img), BENCH_DIR (not
# tmpfs; default /var/tmp/qemu-zoned-bench), BENCH_REPEAT (runs per cell,
# the fastest counts; default 3), BENCH_SCALE (multiplies request counts).
#
# Rows:
#   fresh     writes into a new, empty 4 GiB image (every write of a new
#             cluster allocates); a new image for every run
#   prealloc  writes and reads on an image created with
#             preallocation=falloc, so nothing is allocated during the run
#   seq       consecutive requests; "stride" steps 1 MiB + size between
#             requests, so that consecutive requests never share a cluster
#             (wrapping around at the end of the preallocated image)
#             (qemu-img bench has no random mode: a fixed large stride is
#             the non-sequential pattern both programs can run)
# Columns: QEMU with its default AIO (threads), QEMU with -i io_uring, ours;
# QEMU/ours = faster QEMU time / ours (above 1: ours is faster).
set -euo pipefail
shopt -s inherit_errexit
. "$(dirname "$0")/lib.sh"

ours=${1:-build/qemu-img}
ref=${QEMU_IMG_REF:-/usr/bin/qemu-img}
dir=${BENCH_DIR:-/var/tmp/qemu-zoned-bench}
repeat=${BENCH_REPEAT:-3}
require_executable "$ours" "build it first"
require_executable "$ref"
bench_dir_ready "$dir"

fresh=$dir/fresh.qcow2
prealloc=$dir/prealloc.qcow2
trap 'rm -f "$fresh"' EXIT
if [ ! -f "$prealloc" ]; then
    echo "Creating a preallocated 4 GiB qcow2 image at $prealloc ..."
    "$ref" create -q -f qcow2 -o preallocation=falloc "$prealloc" 4G
    "$ref" bench -q -w -f qcow2 -t none -d 32 -s 1M -c 4096 "$prealloc" >/dev/null
fi

# One timed run of PROGRAM on the image kind, with a new image for "fresh".
run_kind()
{
    local kind=$1 prog=$2
    shift 2
    if [ "$kind" = fresh ]; then
        rm -f "$fresh"
        "$prog" create -q -f qcow2 "$fresh" 4G
        run_once "$prog" "$@" "$fresh"
    else
        run_once "$prog" "$@" "$prealloc"
    fi
}

have_uring=0
if "$ref" bench -c 1 -f qcow2 -i io_uring "$prealloc" >/dev/null 2>&1; then
    have_uring=1
fi

# image    rw    size pattern depth cache     requests
rows=()
for cache in writeback none; do
    for kind in fresh prealloc; do
        for rw in write read; do
            [ "$kind/$rw" = fresh/read ] && continue
            for size in 4k 64k; do
                for pattern in seq stride; do
                    for depth in 1 32; do
                        n=40000
                        [ $size = 64k ] && n=10000
                        [ $cache = none ] && [ $depth = 1 ] && n=$((n / 4))
                        # The device-bound rows last long enough to ride
                        # out the host's bursts of speed and slowness.
                        [ $cache = none ] && [ $depth = 32 ] && n=$((n * 2))
                        # Page-cache reads are memory copies that finish in
                        # tens of milliseconds; four times as many make a
                        # row longer than the host's scheduling hiccups.
                        [ $cache = writeback ] && [ $rw = read ] && n=$((n * 4))
                        # Fresh strided writes stop before they wrap around
                        # the 4 GiB image (3500 x 1 MiB), so that each
                        # allocates; on the preallocated image they wrap.
                        [ $kind/$pattern = fresh/stride ] && [ $n -gt 3500 ] && n=3500
                        rows+=("$kind $rw $size $pattern $depth $cache $n")
                    done
                done
            done
        done
    done
done

# Issue 3's target: 200,000 allocating 4 KiB sequential writes at depth 32
# (at least 1.5x QEMU 7.2).
rows+=("fresh write 4k seq 32 writeback 200000" "fresh write 4k seq 32 none 200000")

echo
print_setup "$ours" "$ref" "$dir"
echo "Each cell: the fastest of $repeat runs, in seconds."
echo
printf '%-8s %-5s %-4s %-6s %5s %-9s %8s %12s %13s %8s %9s\n' \
    image rw size order depth cache requests "QEMU threads" "QEMU io_uring" ours QEMU/ours
for row in "${rows[@]}"; do
    read -r kind rw size pattern depth cache count <<<"$row"
    count=$(scaled "$count")
    args=(bench -f qcow2 -t "$cache" -d "$depth" -s "$size" -c "$count")
    [ "$rw" = write ] && args+=(-w)
    if [ "$pattern" = stride ]; then
        bytes=$(numfmt --from=iec "${size^^}")
        args+=(-S $((1048576 + bytes)))
    fi
    progs=(thr ours)
    [ $have_uring = 1 ] && progs=(thr uring ours)
    t_thr="" t_uring="" t_ours=""
    for ((i = 0; i < repeat; i++)); do
        for prog in $(round_order $i "${progs[@]}"); do
            case $prog in
            thr) t_thr=$(min_time "$(run_kind "$kind" "$ref" "${args[@]}" -i threads)" "$t_thr") ;;
            uring) t_uring=$(min_time "$(run_kind "$kind" "$ref" "${args[@]}" -i io_uring)" "$t_uring") ;;
            ours) t_ours=$(min_time "$(run_kind "$kind" "$ours" "${args[@]}")" "$t_ours") ;;
            esac
        done
    done
    t_uring=${t_uring:--}
    printf '%-8s %-5s %-4s %-6s %5s %-9s %8s %12s %13s %8s %9s\n' "$kind" "$rw" "$size" \
        "$pattern" "$depth" "$cache" "$count" "$t_thr" "$t_uring" "$t_ours" \
        "$(ratio "$t_thr" "$t_uring" "$t_ours")"
done
