#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# bench-vhost-user.sh: our vhost-user front end (build/tests/vhost-user/
# vhost-user-blk-client, guest memory in a memfd, no VM) against our
# qemu-storage-daemon's vhost-user-blk export and QEMU 10.0's, both
# exporting the same preallocated qcow2 image; then zoned sequential
# writes against plain ones through ours.
#
# Usage: scripts/bench/bench-vhost-user.sh [BUILD_DIR]
#
# Environment:
#   E2E_CACHE       where tests/e2e/prepare.sh unpacked QEMU 10.0 (default
#                   /var/tmp/vm-cache); required
#   BENCH_DIR       where the images live, not tmpfs (default:
#                   /var/tmp/qemu-zoned-bench)
#   BENCH_RUNTIME   seconds per run (default: 5)
#   BENCH_REPEAT    rounds; each cell is the best of them (default: 3)
#
# Both daemons get the same command line (default cache mode: writeback
# through the host page cache, so the rows measure the daemons and the
# protocol, not the disk) and the same client.  Each round starts each
# daemon once in turn (round_order) and runs every row against it.  Rows:
# 4 KiB random reads and writes at queue depth 1 and 32 (IOPS), 1 MiB
# sequential reads and writes at depth 8 (MiB/s).  "ours/QEMU" above 1
# means ours is faster.  The zoned table writes whole zones sequentially at
# depth 32 (each zone reset before its first write) into a host-managed
# image of 64 MiB zones and the same writes into the plain image.
set -euo pipefail
shopt -s inherit_errexit
. "$(dirname "$0")/lib.sh"

build=${1:-build}
cache=${E2E_CACHE:-/var/tmp/vm-cache}
dir=${BENCH_DIR:-/var/tmp/qemu-zoned-bench}
runtime=${BENCH_RUNTIME:-5}
repeat=${BENCH_REPEAT:-3}
ours=$build/qemu-storage-daemon
client=$build/tests/vhost-user/vhost-user-blk-client
q10sh=$(cd "$(dirname "$0")/../../tests/e2e" && pwd)/qemu10.sh
img=$dir/bench-vhost-user.qcow2
zimg=$dir/bench-vhost-user-zoned.qcow2
img_mib=1024
require_executable "$ours" "build it first"
require_executable "$client" "build it first"
[ -x "$cache/qemu10/usr/bin/qemu-storage-daemon" ] ||
    die "no QEMU 10.0 in $cache (tests/e2e/prepare.sh unpacks it)"
bench_dir_ready "$dir"

if [ "$(/usr/bin/qemu-img info --output=json "$img" 2>/dev/null |
       awk -F'[:,]' '/"virtual-size"/ { print $2 + 0 }')" != $((img_mib << 20)) ]; then
    echo "Creating a preallocated ${img_mib} MiB qcow2 image at $img ..."
    rm -f "$img"
    /usr/bin/qemu-img create -q -f qcow2 -o preallocation=full "$img" ${img_mib}M
fi

sock=$dir/bench-vhost-user.sock
daemon_pid=

# start_daemon ours|qemu10 IMAGE: exports IMAGE until stop_daemon.
start_daemon()
{
    local args=(--blockdev "driver=qcow2,node-name=n0,file.driver=file,file.filename=$2"
                --export "type=vhost-user-blk,id=e0,node-name=n0,addr.type=unix,addr.path=$sock,writable=on")
    rm -f "$sock"
    case $1 in
        ours) "$ours" "${args[@]}" & ;;
        qemu10) "$q10sh" "$cache" qemu-storage-daemon "${args[@]}" & ;;
    esac
    daemon_pid=$!
    local i
    for ((i = 0; i < 100; i++)); do
        [ -S "$sock" ] && return 0
        kill -0 "$daemon_pid" 2>/dev/null || die "$1 daemon did not start"
        sleep 0.1
    done
    die "$1 daemon does not listen"
}

stop_daemon()
{
    [ -n "$daemon_pid" ] || return 0
    kill "$daemon_pid" 2>/dev/null || true
    wait "$daemon_pid" 2>/dev/null || true
    daemon_pid=
}
trap stop_daemon EXIT

# run_client TYPE BS DEPTH: IOPS for 4k rows, MiB/s for the others.
run_client()
{
    local out
    out=$("$client" --depth 32 "$sock" -c "bench -t $1 -b $2 -d $3 -s $runtime" 2>&1) ||
        die "client failed: $out"
    awk -v bs="$2" '/^bench / {
        for (i = 1; i <= NF; i++) {
            if ($(i + 1) == "IOPS,") iops = $i
            if ($(i + 1) == "MiB/s,") mibs = $i
        }
        print (bs == "4k" ? iops : mibs) }' <<<"$out"
}

# keep_best KEY VALUE: best[KEY] = max(best[KEY], VALUE).
declare -A best
keep_best()
{
    if [ -z "${best[$1]:-}" ] || awk -v a="$2" -v b="${best[$1]}" 'BEGIN { exit !(a > b) }'; then
        best[$1]=$2
    fi
}

# type      bs  depth
rows=(
    "randread  4k 1"
    "randread  4k 32"
    "randwrite 4k 1"
    "randwrite 4k 32"
    "read      1M 8"
    "write     1M 8"
)

for ((r = 0; r < repeat; r++)); do
    for s in $(round_order "$r" qemu10 ours); do
        start_daemon "$s" "$img"
        for row in "${rows[@]}"; do
            read -r type bs depth <<<"$row"
            keep_best "$row $s" "$(run_client "$type" "$bs" "$depth")"
        done
        stop_daemon
    done
done

# Zoned against plain: 16 zones of 64 MiB, sequential 4 KiB and 64 KiB
# writes at depth 32, through our daemon only.
rm -f "$zimg"
"$build/qemu-img" create -q -f qcow2 -o zone.mode=host-managed,zone.size=64M "$zimg" ${img_mib}M
for ((r = 0; r < repeat; r++)); do
    for kind in zoned plain; do
        if [ $kind = zoned ]; then start_daemon ours "$zimg"; else start_daemon ours "$img"; fi
        for bs in 4k 64k; do
            t=write
            [ $kind = zoned ] && t=zwrite
            out=$("$client" --depth 32 --config-size 96 "$sock" -c "bench -t $t -b $bs -d 32 -s $runtime" 2>&1) ||
                die "client failed: $out"
            keep_best "z $bs $kind" "$(awk '/^bench / { for (i = 1; i <= NF; i++) if ($(i + 1) == "MiB/s,") print $i }' <<<"$out")"
        done
        stop_daemon
    done
done

echo "Host:    $(uname -srm), $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo))"
echo "Image:   $img (qcow2, preallocation=full, $(stat -f -c %T "$dir"))"
echo "QEMU 10: $("$q10sh" "$cache" qemu-storage-daemon --version | head -1)"
echo "Client:  $client, ${runtime} s per run, best of $repeat"
echo
printf '%-10s %-3s %-5s %10s %10s %10s\n' type bs depth "QEMU 10.0" ours ours/QEMU
for row in "${rows[@]}"; do
    read -r type bs depth <<<"$row"
    q=${best[$row qemu10]}
    o=${best[$row ours]}
    printf '%-10s %-3s %-5s %10s %10s %10s\n' "$type" "$bs" "$depth" "$q" "$o" \
        "$(awk -v q="$q" -v o="$o" 'BEGIN { printf "%.2f", (q > 0 ? o / q : 0) }')"
done
echo
echo "4k rows: IOPS; 1M rows: MiB/s.  ours/QEMU above 1: ours is faster."
echo
printf '%-22s %-4s %10s %10s %12s\n' "sequential writes" bs plain zoned zoned/plain
for bs in 4k 64k; do
    p=${best[z $bs plain]}
    z=${best[z $bs zoned]}
    printf '%-22s %-4s %10s %10s %12s\n' "depth 32, MiB/s" "$bs" "$p" "$z" \
        "$(awk -v p="$p" -v z="$z" 'BEGIN { printf "%.2f", (p > 0 ? z / p : 0) }')"
done
