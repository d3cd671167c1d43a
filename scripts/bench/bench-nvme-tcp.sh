#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# bench-nvme-tcp.sh: the cost of our NVMe/TCP transport.  On the same image
# and machine: our "qemu-img bench" directly on the image, against our
# initiator (build/tests/nvme/nvme-tcp-initiator bench) through our
# daemon's nvme-tcp export on 127.0.0.1; and zone appends at depth 32
# through the export of a zoned image against sequential writes of the
# same size through the export of a plain one.
#
# Usage: scripts/bench/bench-nvme-tcp.sh [BUILD_DIR]
#
#   BUILD_DIR   where qemu-img, qemu-storage-daemon and
#               tests/nvme/nvme-tcp-initiator are (default build/); nothing
#               is built
#
# Environment: BENCH_DIR (not tmpfs; default /var/tmp/qemu-zoned-bench),
# BENCH_REPEAT (runs per cell, the fastest counts; default 3), BENCH_SCALE
# (multiplies request counts).
#
# Rows (1 GiB qcow2 images, writeback cache, 4 KiB requests, depth 32):
#   read/write       qemu-img bench (sequential: it has no random mode)
#                    vs the initiator's sequential and random rows
#   zoned append     zone appends on a zoned image (64 MiB zones) vs
#                    sequential writes on a plain image, both over NVMe/TCP
# "ratio" is direct time / NVMe-TCP time (target >= 0.7) and plain time /
# zoned time (target >= 0.9).
set -euo pipefail
shopt -s inherit_errexit
. "$(dirname "$0")/lib.sh"

build=${1:-build}
img=$build/qemu-img
qsd=$build/qemu-storage-daemon
ini=$build/tests/nvme/nvme-tcp-initiator
dir=${BENCH_DIR:-/var/tmp/qemu-zoned-bench}
repeat=${BENCH_REPEAT:-3}
for p in "$img" "$qsd" "$ini"; do
    require_executable "$p" "build it first"
done
bench_dir_ready "$dir"

plain=$dir/nvme-plain.qcow2
zoned=$dir/nvme-zoned.qcow2
port=$((20000 + RANDOM % 20000))
nqn=nqn.2026-01.org.qemu-zoned:bench
qsd_pid=
stop_daemon()
{
    [ -n "$qsd_pid" ] || return 0
    kill "$qsd_pid" 2>/dev/null || true
    wait "$qsd_pid" 2>/dev/null || true
    qsd_pid=
}
trap 'stop_daemon; rm -f "$plain" "$zoned"' EXIT

count=$(scaled 200000)

# A fully written plain image (reads return data) and an empty zoned one.
"$img" create -q -f qcow2 "$plain" 1G
"$img" bench -w -f qcow2 -c 262144 -d 32 -s 4k -S 4k "$plain" >/dev/null
"$img" create -q -f qcow2 -o zone.mode=host-managed,zone.size=64M "$zoned" 1G

start_daemon()
{
    "$qsd" --blockdev "driver=file,node-name=f0,filename=$1" \
        --blockdev driver=qcow2,node-name=n0,file=f0 \
        --export "type=nvme-tcp,id=e0,node-name=n0,writable=on,nqn=$nqn,addr.type=inet,addr.host=127.0.0.1,addr.port=$port" &
    qsd_pid=$!
    local i
    for ((i = 0; i < 100; i++)); do
        if awk -v a="$(printf '0100007F:%04X' "$port")" \
               '$2 == a && $4 == "0A" { f = 1 } END { exit !f }' /proc/net/tcp; then
            return 0
        fi
        kill -0 "$qsd_pid" 2>/dev/null || die "the daemon did not start"
        sleep 0.1
    done
    die "the daemon does not listen on 127.0.0.1:$port"
}

# best_of CMD...: the fastest "Run completed in" time of $repeat runs.
best_of()
{
    local best="" r v
    for ((r = 0; r < repeat; r++)); do
        v=$(run_once "$@")
        best=$(min_time "$v" "$best")
    done
    echo "$best"
}

nvme()
{
    best_of "$ini" -a 127.0.0.1 -s "$port" -n "$nqn" bench -b 4096 -q 32 -c "$count" "$@"
}

direct_read=$(best_of "$img" bench -f qcow2 -t writeback -c "$count" -d 32 -s 4k -S 4k "$plain")
direct_write=$(best_of "$img" bench -w -f qcow2 -t writeback -c "$count" -d 32 -s 4k -S 4k "$plain")
start_daemon "$plain"
tcp_read=$(nvme -w read)
tcp_randread=$(nvme -w randread)
tcp_write=$(nvme -w write)
tcp_randwrite=$(nvme -w randwrite)
stop_daemon
start_daemon "$zoned"
zoned_append=$(nvme -w zone-append)
stop_daemon

ratio2() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
iops() { awk -v c="$count" -v s="$1" 'BEGIN { printf "%.0f", (s > 0 ? c / s : 0) }'; }

echo "Host:    $(uname -srm), $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo))"
echo "Storage: $dir ($(stat -f -c %T "$dir")); $count requests of 4 KiB at depth 32, best of $repeat"
echo
printf '%-34s %10s %10s %8s\n' "row" "seconds" "IOPS" "ratio"
row() { printf '%-34s %10s %10s %8s\n' "$1" "$2" "$(iops "$2")" "$3"; }
row "read   qemu-img bench (direct)" "$direct_read" "-"
row "read   NVMe/TCP sequential" "$tcp_read" "$(ratio2 "$direct_read" "$tcp_read")"
row "read   NVMe/TCP random" "$tcp_randread" "$(ratio2 "$direct_read" "$tcp_randread")"
row "write  qemu-img bench (direct)" "$direct_write" "-"
row "write  NVMe/TCP sequential" "$tcp_write" "$(ratio2 "$direct_write" "$tcp_write")"
row "write  NVMe/TCP random" "$tcp_randwrite" "$(ratio2 "$direct_write" "$tcp_randwrite")"
row "zoned  NVMe/TCP zone append" "$zoned_append" "$(ratio2 "$tcp_write" "$zoned_append")"
echo
echo "ratio: direct/NVMe-TCP time for read and write rows (target >= 0.7);"
echo "       plain sequential write / zoned append time for the zoned row (target >= 0.9)"
