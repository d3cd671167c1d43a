#!/bin/bash
# Our NBD server against QEMU's clients: Debian's QEMU 7.2 qemu-io and
# qemu-img (structured replies, base:allocation) and, when the e2e cache
# holds it, QEMU 10.0's qemu-io (extended headers).  The server runs in the
# test host build/tests/nbd/nbd-serve on a Unix socket.
#
#   tests/interop/nbd-server.sh [BUILD_DIR]
#
# Prints PASS/FAIL/SKIP per case and ends with "nbd-interop: N passed,
# N failed"; exit status non-zero when a case failed.  VM_CACHE (default
# /var/tmp/vm-cache, see docs/devel/testing-e2e.rst) is where QEMU 10.0 is
# looked for; without it that case is skipped and says so.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-$here/../../build}" && pwd) || exit 1
SERVE=$build/tests/nbd/nbd-serve
OURS_IMG=$build/qemu-img
OURS_IO=$build/qemu-io
QEMU_IMG=/usr/bin/qemu-img
QEMU_IO=/usr/bin/qemu-io
cache=${VM_CACHE:-/var/tmp/vm-cache}
for prog in "$SERVE" "$OURS_IMG" "$OURS_IO" "$QEMU_IMG" "$QEMU_IO"; do
    if [ ! -x "$prog" ]; then
        echo "nbd-interop: missing $prog"
        echo "nbd-interop: 0 passed, 1 failed"
        exit 1
    fi
done

work=$(mktemp -d "${TMPDIR:-/tmp}/nbd-interop.XXXXXX")
server_pid=
trap 'rm -rf "$work"' EXIT
sock=$work/nbd.sock
uri="nbd+unix:///disk?socket=$sock"
passed=0
failed=0

t() { timeout 120 "$@"; }

# serve ARGS... IMAGE: starts nbd-serve (persistent) and waits for its socket.
serve() {
    rm -f "$sock"
    "$SERVE" -t -k "$sock" -x disk "$@" 2>"$work/serve.err" &
    server_pid=$!
    for _ in $(seq 100); do
        [ -S "$sock" ] && return 0
        sleep 0.1
    done
    echo "nbd-serve did not start: $(cat "$work/serve.err")"
    return 1
}

stop() {
    kill "$server_pid" && wait "$server_pid"
    local rc=$?
    server_pid=
    return $rc
}

# Runs a qemu-io that must succeed without "fail"/"error" in its output.
io_ok() {
    local out
    out=$(t "$@" 2>&1) || { echo "failed: $*"; echo "$out" | head -20; return 1; }
    if grep -qiE "fail|error|mismatch" <<<"$out"; then
        echo "reported a failure: $*"
        echo "$out" | head -20
        return 1
    fi
}

# `qemu-img map --output=json` reduced to start/length/zero/data runs:
# over NBD every range is "present" at depth 0 with the export's offsets,
# while the image map names host offsets and unallocated ranges.
map_runs() {
    python3 -c '
import json, sys
runs = []
for e in json.load(sys.stdin):
    key = (e["zero"], e["data"])
    if runs and tuple(runs[-1][2:]) == key and runs[-1][0] + runs[-1][1] == e["start"]:
        runs[-1][1] += e["length"]
    else:
        runs.append([e["start"], e["length"], *key])
for r in runs:
    print(*r)
'
}

case_io_72() {
    "$OURS_IMG" create -q -f qcow2 "$work/a.qcow2" 64M &&
        io_ok "$OURS_IO" -c "write -P 0x11 0 1M" -c "write -P 0x22 5M 64k" \
            -c "write -P 0x23 7M 1000" "$work/a.qcow2" &&
        serve -f qcow2 "$work/a.qcow2" || return 1
    io_ok "$QEMU_IO" -f raw "$uri" -c "read -P 0x11 0 1M" -c "read -P 0x22 5M 64k" \
        -c "read -P 0x23 7M 1000" -c "read -P 0 8M 1M" &&
        io_ok "$QEMU_IO" -f raw "$uri" -c "write -P 0x33 8M 64k" -c "write -P 0x34 9M 333" \
            -c "write -z 5M 64k" -c "write -z -u 0 128k" -c "discard 10M 64k" -c "flush" &&
        io_ok "$QEMU_IO" -f raw "$uri" -c "read -P 0x33 8M 64k" -c "read -P 0x34 9M 333" \
            -c "read -P 0 5M 64k" -c "read -P 0 0 128k" -c "read -P 0x11 128k 896k" &&
        stop &&
        io_ok "$QEMU_IO" -f qcow2 "$work/a.qcow2" -c "read -P 0x33 8M 64k" -c "read -P 0 0 128k" &&
        t "$QEMU_IMG" check -q "$work/a.qcow2"
}

case_map_72() {
    "$OURS_IMG" create -q -f qcow2 "$work/m.qcow2" 64M &&
        io_ok "$OURS_IO" -c "write -P 0x11 0 1M" -c "write -P 0x22 5M 64k" -c "write -z 9M 128k" \
            -c "write -P 1 20M 3M" -c "discard 21M 1M" "$work/m.qcow2" &&
        t "$QEMU_IMG" map --output=json -f qcow2 "$work/m.qcow2" | map_runs > "$work/map.image" &&
        serve -f qcow2 "$work/m.qcow2" &&
        t "$QEMU_IMG" map --output=json -f raw "$uri" | map_runs > "$work/map.nbd" &&
        stop || return 1
    if ! diff -u "$work/map.image" "$work/map.nbd"; then
        echo "qemu-img map over NBD differs from the image's map"
        return 1
    fi
}

case_convert_compare_72() {
    "$OURS_IMG" create -q -f qcow2 "$work/c.qcow2" 32M &&
        io_ok "$OURS_IO" -c "write -P 0x5a 1M 3M" -c "write -P 0x6b 17M 4k" "$work/c.qcow2" &&
        serve -r -f qcow2 "$work/c.qcow2" &&
        t "$QEMU_IMG" convert -f raw -O raw "$uri" "$work/c.raw" &&
        t "$QEMU_IMG" convert -f raw -O qcow2 "$uri" "$work/c2.qcow2" &&
        t "$QEMU_IMG" compare -f raw -F raw "$uri" "$work/c.raw" >/dev/null || return 1
    # A read-only export refuses writes, and the server keeps serving.
    if t "$QEMU_IO" -f raw "$uri" -c "write 0 4k" 2>&1 | grep -q "^wrote"; then
        echo "a read-only export accepted a write"
        return 1
    fi
    stop &&
        t "$QEMU_IMG" compare -f qcow2 -F raw "$work/c.qcow2" "$work/c.raw" >/dev/null &&
        t "$QEMU_IMG" compare -f qcow2 -F qcow2 "$work/c.qcow2" "$work/c2.qcow2" >/dev/null
}

case_zoned_72() {
    "$OURS_IMG" create -q -f qcow2 -o zone.mode=host-managed,zone.size=4M "$work/z.qcow2" 16M &&
        serve -f qcow2 "$work/z.qcow2" &&
        io_ok "$QEMU_IO" -f raw "$uri" -c "write -P 0x44 0 64k" -c "write -P 0x45 64k 64k" || return 1
    # A write off the write pointer fails (EIO) and the server says why.
    if t "$QEMU_IO" -f raw "$uri" -c "write 1M 4k" 2>&1 | grep -q "^wrote"; then
        echo "a write off the write pointer succeeded"
        return 1
    fi
    stop || return 1
    if ! grep -q "broke a zone rule" "$work/serve.err"; then
        echo "no log line for the zone error"
        return 1
    fi
}

case_extended_qemu10() {
    if [ ! -x "$cache/qemu10/usr/bin/qemu-io" ]; then
        echo "SKIP extended_qemu10 (no QEMU 10.0 in $cache; tests/e2e/prepare.sh unpacks it)"
        return 2
    fi
    local q10=("$here/../e2e/qemu10.sh" "$cache" qemu-io)
    "$OURS_IMG" create -q -f qcow2 "$work/e.qcow2" 64M &&
        serve -A -f qcow2 "$work/e.qcow2" &&
        io_ok "${q10[@]}" -f raw "$uri" -c "write -P 0x55 0 2M" -c "write -z 0 64k" \
            -c "discard 1M 64k" -c "read -P 0 0 64k" -c "read -P 0x55 64k 960k" || return 1
    if ! t "${q10[@]}" --trace 'nbd_receive_option_reply' -f raw "$uri" -c "read 0 4k" 2>&1 |
        grep -q "extended headers), type 1 (ack)"; then
        echo "QEMU 10.0 did not negotiate extended headers"
        return 1
    fi
    io_ok "${q10[@]}" -f raw "$uri" -c "write -z 0 64M" -c "read -P 0 0 64M" && stop
}

for c in io_72 map_72 convert_compare_72 zoned_72 extended_qemu10; do
    # A case that fails leaves its server running: its subshell ends it.
    out=$( (trap '[ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null' EXIT; "case_$c") 2>&1)
    rc=$?
    if [ $rc -eq 2 ]; then
        echo "$out"
    elif [ $rc -eq 0 ]; then
        echo "PASS $c"
        passed=$((passed + 1))
    else
        echo "FAIL $c"
        echo "$out" | sed 's/^/    /'
        failed=$((failed + 1))
    fi
done
echo "nbd-interop: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
