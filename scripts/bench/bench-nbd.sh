#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# bench-nbd.sh: fio's nbd engine (libnbd) against our qemu-storage-daemon,
# Debian's qemu-nbd 7.2 and, when tests/e2e has unpacked it, QEMU 10.0's
# qemu-storage-daemon, each serving the same preallocated qcow2 image over a
# Unix socket and over TCP, and a table of the results.
#
# Usage: scripts/bench/bench-nbd.sh [OUR_QSD]
#
#   OUR_QSD            our qemu-storage-daemon (default:
#                      build/qemu-storage-daemon); nothing is built
#
# Environment:
#   QEMU_NBD_REF       QEMU 7.2's qemu-nbd (default: /usr/bin/qemu-nbd)
#   E2E_CACHE          where tests/e2e/prepare.sh unpacked QEMU 10.0 (default
#                      /var/tmp/vm-cache); without CACHE/qemu10 its column is "-"
#   BENCH_DIR          where the image lives, not tmpfs (default:
#                      /var/tmp/qemu-zoned-bench)
#   BENCH_RUNTIME      seconds per fio run (default: 5), after 1 s of ramp
#   BENCH_REPEAT       rounds; each cell is the best of them (default: 2)
#
# qemu-nbd 7.2 runs with -t -e 8 -x disk -f qcow2; both daemons with
# --blockdev file + qcow2, --nbd-server on the same address and --export
# type=nbd,name=disk,writable=on.  Every server uses its default cache and
# AIO modes (writeback through the host page cache), so the rows measure the
# servers and the protocol, not the disk.  Each round starts each server once
# per transport in turn (round_order), runs every row against it, and stops
# it.  Rows: 4 KiB random reads and writes at queue depth 1 and 32 (IOPS),
# 1 MiB sequential reads and writes at depth 8 (MiB/s).  "ours/best" divides
# ours by the faster QEMU: above 1 means ours is faster.
set -euo pipefail
shopt -s inherit_errexit
. "$(dirname "$0")/lib.sh"

ours=${1:-build/qemu-storage-daemon}
ref=${QEMU_NBD_REF:-/usr/bin/qemu-nbd}
cache=${E2E_CACHE:-/var/tmp/vm-cache}
dir=${BENCH_DIR:-/var/tmp/qemu-zoned-bench}
runtime=${BENCH_RUNTIME:-5}
repeat=${BENCH_REPEAT:-2}
img=$dir/bench-nbd.qcow2
img_mib=1024
q10sh=$(cd "$(dirname "$0")/../../tests/e2e" && pwd)/qemu10.sh
require_executable "$ours" "build it first"
require_executable "$ref"
command -v fio >/dev/null || die "fio is missing (scripts/install-deps.sh)"
fio --enghelp 2>/dev/null | grep -qw nbd || die "this fio has no nbd engine"
bench_dir_ready "$dir"

servers=(qemu72 ours)
have_q10=0
if [ -x "$cache/qemu10/usr/bin/qemu-storage-daemon" ] &&
   "$q10sh" "$cache" qemu-storage-daemon --version >/dev/null 2>&1; then
    have_q10=1
    servers=(qemu72 qemu10 ours)
fi

if [ "$(/usr/bin/qemu-img info --output=json "$img" 2>/dev/null |
       awk -F'[:,]' '/"virtual-size"/ { print $2 + 0 }')" != $((img_mib << 20)) ]; then
    echo "Creating a preallocated ${img_mib} MiB qcow2 image at $img ..."
    rm -f "$img"
    /usr/bin/qemu-img create -q -f qcow2 -o preallocation=full "$img" ${img_mib}M
fi

sock=$dir/bench-nbd.sock
port=$((20000 + RANDOM % 20000))
server_pid=

# start_server NAME unix|tcp: serves $img in the background until
# stop_server; returns once it accepts connections.
start_server()
{
    local addr=(-k "$sock") qsd_addr=(addr.type=unix,addr.path="$sock")
    if [ "$2" = tcp ]; then
        addr=(-b 127.0.0.1 -p "$port")
        qsd_addr=(addr.type=inet,addr.host=127.0.0.1,addr.port="$port")
    fi
    local qsd_args=(--blockdev driver=file,filename="$img",node-name=file0
                    --blockdev driver=qcow2,file=file0,node-name=disk0
                    --nbd-server "${qsd_addr[0]}"
                    --export type=nbd,id=e0,node-name=disk0,name=disk,writable=on)
    rm -f "$sock"
    case $1 in
        ours) "$ours" "${qsd_args[@]}" & ;;
        qemu72) "$ref" -t -e 8 -x disk -f qcow2 "${addr[@]}" "$img" & ;;
        qemu10) "$q10sh" "$cache" qemu-storage-daemon "${qsd_args[@]}" & ;;
    esac
    server_pid=$!
    local i
    for ((i = 0; i < 100; i++)); do
        if [ "$2" = unix ] && awk -v p="$sock" '$NF == p && $4 == "00010000" { f = 1 } END { exit !f }' \
               /proc/net/unix; then
            return 0
        fi
        # Listening (state 0A) on 127.0.0.1:port; a probe connection would
        # make the servers log a failed negotiation.
        if [ "$2" = tcp ] && awk -v a="$(printf '0100007F:%04X' "$port")" \
               '$2 == a && $4 == "0A" { f = 1 } END { exit !f }' /proc/net/tcp; then
            return 0
        fi
        kill -0 "$server_pid" 2>/dev/null || die "$1 server did not start"
        sleep 0.1
    done
    die "$1 server does not accept connections"
}

stop_server()
{
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
}
trap stop_server EXIT

uri()
{
    if [ "$1" = unix ]; then echo "nbd+unix:///disk?socket=$sock"; else echo "nbd://127.0.0.1:$port/disk"; fi
}

# run_fio URI RW BS DEPTH: IOPS for 4k rows, MiB/s for the others.
run_fio()
{
    local out
    out=$(fio --name=bench --ioengine=nbd --uri="$1" --rw="$2" --bs="$3" --iodepth="$4" \
              --runtime="$runtime" --ramp_time=1 --time_based --output-format=json 2>&1) ||
        die "fio failed: $out"
    python3 -c '
import json, sys
text = sys.stdin.read()
job = json.loads(text[text.index("{"):])["jobs"][0]
side = job["read"] if job["read"]["io_bytes"] else job["write"]
print("%.0f" % side["iops"] if sys.argv[1] == "4k" else "%.1f" % (side["bw"] / 1024.0))
' "$3" <<<"$out"
}

# name      rw         bs  depth
rows=(
    "randread  4k 1"
    "randread  4k 32"
    "randwrite 4k 1"
    "randwrite 4k 32"
    "read      1M 8"
    "write     1M 8"
)

declare -A best
for ((r = 0; r < repeat; r++)); do
    for transport in unix tcp; do
        for s in $(round_order "$r" "${servers[@]}"); do
            start_server "$s" "$transport"
            for row in "${rows[@]}"; do
                read -r rw bs depth <<<"$row"
                v=$(run_fio "$(uri "$transport")" "$rw" "$bs" "$depth")
                key="$transport $row $s"
                if [ -z "${best[$key]:-}" ] || awk -v a="$v" -v b="${best[$key]}" 'BEGIN { exit !(a > b) }'; then
                    best[$key]=$v
                fi
            done
            stop_server
        done
    done
done

echo "Host:    $(uname -srm), $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo))"
echo "Image:   $img (qcow2, preallocation=full, $(stat -f -c %T "$dir"))"
echo "Ours:    $("$ours" --version | head -1)"
echo "QEMU:    $("$ref" --version | head -1)"
[ $have_q10 = 1 ] && echo "QEMU 10: $("$q10sh" "$cache" qemu-storage-daemon --version | head -1)"
echo "fio:     $(fio --version), ${runtime} s per run, best of $repeat"
echo
printf '%-9s %-10s %-3s %-5s %10s %10s %10s %10s\n' transport rw bs depth "nbd 7.2" "QSD 10.0" "our QSD" ours/best
for transport in unix tcp; do
    for row in "${rows[@]}"; do
        read -r rw bs depth <<<"$row"
        a=${best[$transport $row qemu72]}
        b=${best[$transport $row qemu10]:--}
        o=${best[$transport $row ours]}
        ratio=$(awk -v a="$a" -v b="$b" -v o="$o" \
            'BEGIN { q = a; if (b != "-" && b + 0 > q + 0) q = b; printf "%.2f", (q > 0 ? o / q : 0) }')
        printf '%-9s %-10s %-3s %-5s %10s %10s %10s %10s\n' "$transport" "$rw" "$bs" "$depth" "$a" "$b" "$o" "$ratio"
    done
done
echo
echo "4k rows: IOPS; 1M rows: MiB/s.  ours/best above 1: ours is faster."
