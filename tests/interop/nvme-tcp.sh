#!/bin/bash
# Our NVMe/TCP target (qemu-storage-daemon --export type=nvme-tcp) against
# our initiator (build/tests/nvme/nvme-tcp-initiator): Identify, read and
# write round trips (in-capsule and R2T, with and without digests), zone
# append and reports on a zoned qcow2 whose zones persist across a daemon
# restart, and hostile hosts (bad ICReq, plen lies, DATAO mismatch, unknown
# TTAG, header digest errors) answered by the right C2HTermReq while the
# daemon keeps serving.
#
#   tests/interop/nvme-tcp.sh [BUILD_DIR]
#
# Prints PASS/FAIL per case and ends with "nvme-tcp: N passed, N failed";
# exit status non-zero when a case failed.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-$here/../../build}" && pwd) || exit 1
QSD=$build/qemu-storage-daemon
IMG=$build/qemu-img
INI=$build/tests/nvme/nvme-tcp-initiator
for prog in "$QSD" "$IMG" "$INI"; do
    if [ ! -x "$prog" ]; then
        echo "nvme-tcp: missing $prog"
        echo "nvme-tcp: 0 passed, 1 failed"
        exit 1
    fi
done

work=$(mktemp -d "${TMPDIR:-/tmp}/nvme-tcp-interop.XXXXXX")
qsd_pid=
trap '[ -n "$qsd_pid" ] && kill "$qsd_pid" 2>/dev/null; rm -rf "$work"' EXIT
sock=$work/nvme.sock
NQN=nqn.2026-01.org.qemu-zoned:test
passed=0
failed=0

t() { timeout 60 "$@"; }
ini() { t "$INI" -U "$sock" -n "$NQN" "$@"; }

# serve IMAGE [EXPORT_KEYS]: the daemon with one nvme-tcp export of IMAGE
# on the Unix socket; waits for the socket.
serve() {
    local image=$1 keys=${2:-}
    rm -f "$sock"
    "$QSD" --blockdev "driver=file,node-name=f0,filename=$image" \
        --blockdev driver=qcow2,node-name=n0,file=f0 \
        --export "type=nvme-tcp,id=e0,node-name=n0,writable=on,nqn=$NQN,addr.type=unix,addr.path=$sock$keys" \
        2>"$work/qsd.err" &
    qsd_pid=$!
    for _ in $(seq 100); do
        [ -S "$sock" ] && return 0
        sleep 0.1
    done
    echo "the daemon did not start: $(cat "$work/qsd.err")"
    return 1
}

stop() {
    kill "$qsd_pid" && wait "$qsd_pid"
    local rc=$?
    qsd_pid=
    return $rc
}

# expect WANT COMMAND...: COMMAND's output must contain the line WANT.
expect() {
    local want=$1 out
    shift
    out=$("$@" 2>&1)
    if ! grep -qxF -- "$want" <<<"$out"; then
        echo "expected '$want' from: $*"
        echo "$out" | head -20
        return 1
    fi
}

case_identify_plain() {
    t "$IMG" create -q -f qcow2 "$work/p.qcow2" 64M && serve "$work/p.qcow2" ",serial=SN42" || return 1
    expect "nsze 131072" ini identify &&
        expect "lba-size 512" ini identify &&
        expect "zoned no" ini identify &&
        expect "serial SN42" ini identify &&
        stop
}

case_read_write() {
    t "$IMG" create -q -f qcow2 "$work/rw.qcow2" 64M && serve "$work/rw.qcow2" || return 1
    # 4 KiB goes in the capsule, 256 KiB on R2T and in several C2HData PDUs.
    expect "wrote 4096 bytes at lba 8" ini write 8 8 0x11 &&
        expect "wrote 262144 bytes at lba 1024" ini write 1024 512 0x22 &&
        expect "read 4096 bytes at lba 8" ini read 8 8 0x11 &&
        expect "read 262144 bytes at lba 1024" ini read 1024 512 0x22 &&
        expect "read 262144 bytes at lba 1024" ini -H -D read 1024 512 0x22 &&
        expect "wrote 131072 bytes at lba 4096" ini -H -D write 4096 256 0x33 &&
        expect "read 131072 bytes at lba 4096" ini read 4096 256 0x33 &&
        expect "read 4096 bytes at lba 0" ini read 0 8 0 &&
        stop || return 1
    # What the host wrote is in the image.
    t "$build/qemu-io" -f qcow2 -c "read -P 0x22 512k 256k" -c "read -P 0x33 2M 128k" \
        "$work/rw.qcow2" | grep -q "^read 131072" || { echo "data not in the image"; return 1; }
}

case_zoned_persistent() {
    t "$IMG" create -q -f qcow2 -o zone.mode=host-managed,zone.size=4M "$work/z.qcow2" 32M &&
        serve "$work/z.qcow2" || return 1
    expect "zoned yes" ini identify &&
        expect "zone-size 8192" ini identify &&
        expect "appended at lba 8192" ini append 8192 8 0x44 &&
        expect "appended at lba 8200" ini append 8192 16 0x45 &&
        expect "wrote 4096 bytes at lba 8216" ini write 8216 8 0x46 &&
        expect "read 4096 bytes at lba 8200" ini read 8200 8 0x45 &&
        ini report-zones > "$work/zones.before" &&
        grep -qx "zslba 8192 state IMPLICIT_OPEN cap 8192 wp 8224" "$work/zones.before" &&
        stop || { cat "$work/zones.before" 2>/dev/null | head -3; return 1; }
    # A write off the write pointer fails with Zone Invalid Write (1BCh).
    serve "$work/z.qcow2" &&
        expect "status 0x1bc" ini write 8 8 0x47 &&
        ini report-zones > "$work/zones.after" || return 1
    # Open zones come back closed; write pointers stay.
    sed 's/IMPLICIT_OPEN/CLOSED/' "$work/zones.before" | diff -u - "$work/zones.after" || return 1
    stop
}

case_hostile() {
    t "$IMG" create -q -f qcow2 "$work/h.qcow2" 64M && serve "$work/h.qcow2" || return 1
    expect "C2HTermReq fes 6 fei 8" ini hostile bad-icreq &&
        expect "C2HTermReq fes 5 fei 4" ini hostile plen-lie &&
        expect "C2HTermReq fes 1 fei 4" ini hostile short-plen &&
        expect "C2HTermReq fes 3 fei 0" ini hostile header-digest &&
        expect "C2HTermReq fes 4 fei 12" ini hostile datao-mismatch &&
        expect "C2HTermReq fes 1 fei 10" ini hostile bad-ttag &&
        expect "connection closed" ini hostile plen-lie || return 1
    # The daemon still serves.
    kill -0 "$qsd_pid" && expect "read 4096 bytes at lba 0" ini read 0 8 0 && stop
}

case_tcp_listener() {
    local port=$((20000 + $$ % 20000))
    t "$IMG" create -q -f qcow2 "$work/t.qcow2" 16M || return 1
    "$QSD" --blockdev "driver=file,node-name=f0,filename=$work/t.qcow2" \
        --blockdev driver=qcow2,node-name=n0,file=f0 \
        --export "type=nvme-tcp,id=e0,node-name=n0,writable=on,nqn=$NQN,addr.type=inet,addr.host=127.0.0.1,addr.port=$port" \
        2>"$work/qsd.err" &
    qsd_pid=$!
    local ok=1
    for _ in $(seq 50); do
        if t "$INI" -a 127.0.0.1 -s "$port" -n "$NQN" write 0 8 0x5a >/dev/null 2>&1; then
            ok=0
            break
        fi
        sleep 0.1
    done
    [ $ok = 0 ] && expect "read 4096 bytes at lba 0" t "$INI" -a 127.0.0.1 -s "$port" -n "$NQN" read 0 8 0x5a &&
        stop
}

for c in identify_plain read_write zoned_persistent hostile tcp_listener; do
    if "case_$c" > "$work/case.out" 2>&1; then
        echo "PASS $c"
        passed=$((passed + 1))
    else
        echo "FAIL $c"
        sed 's/^/    /' "$work/case.out" | head -30
        failed=$((failed + 1))
        if [ -n "$qsd_pid" ]; then
            kill "$qsd_pid" 2>/dev/null
            wait "$qsd_pid" 2>/dev/null
            qsd_pid=
        fi
    fi
done
echo "nvme-tcp: $passed passed, $failed failed"
[ "$failed" = 0 ]
