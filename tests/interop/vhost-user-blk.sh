#!/bin/bash
# Our vhost-user-blk export (qemu-storage-daemon --export type=vhost-user-blk)
# driven by our own vhost-user front end (build/tests/vhost-user/): data
# round trips on a plain qcow2 image checked afterwards with qemu-io on the
# image, zone append/report/reset on a zoned image compared with qemu-io's
# zrp, the hostile-front-end cases, reconnect (a new front end after the
# previous one went away, without and with GET_VRING_BASE), the
# one-client-at-a-time rule, QEMU 10.0's vhost-user-blk-pci realizing
# against it (when tests/e2e has unpacked QEMU 10.0), and the export's
# option errors.
#
#   tests/interop/vhost-user-blk.sh [BUILD_DIR]
#
# Prints PASS/FAIL per case and ends with "vhost-user-blk: N passed, N
# failed"; exit status non-zero when a case failed.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-$here/../../build}" && pwd) || exit 1
QSD=$build/qemu-storage-daemon
IMG=$build/qemu-img
IO=$build/qemu-io
CLIENT=$build/tests/vhost-user/vhost-user-blk-client
HOSTILE=$build/tests/vhost-user/vhost-user-hostile
for prog in "$QSD" "$IMG" "$IO" "$CLIENT" "$HOSTILE"; do
    if [ ! -x "$prog" ]; then
        echo "vhost-user-blk: missing $prog"
        echo "vhost-user-blk: 0 passed, 1 failed"
        exit 1
    fi
done

work=$(mktemp -d "${TMPDIR:-/tmp}/vhost-user-blk.XXXXXX")
trap 'rm -rf "$work"' EXIT
sock=$work/vub.sock
daemon_pid=
passed=0
failed=0

t() { timeout 120 "$@"; }

# serve IMAGE FORMAT [EXPORT_OPTS]: starts the daemon and waits for its socket.
serve() {
    rm -f "$sock"
    "$QSD" --blockdev "driver=$2,node-name=n0,file.driver=file,file.filename=$1" \
        --export "type=vhost-user-blk,id=e0,node-name=n0,addr.type=unix,addr.path=$sock,writable=on${3:+,$3}" \
        2>"$work/qsd.err" &
    daemon_pid=$!
    for _ in $(seq 100); do
        [ -S "$sock" ] && return 0
        sleep 0.1
    done
    echo "the daemon did not start: $(cat "$work/qsd.err")"
    return 1
}

stop() {
    kill "$daemon_pid" && wait "$daemon_pid"
    local rc=$?
    daemon_pid=
    return $rc
}

client() { t "$CLIENT" "$sock" "$@"; }

case_plain_round_trip() {
    "$IMG" create -q -f qcow2 "$work/p.qcow2" 64M && serve "$work/p.qcow2" qcow2 || return 1
    local out
    out=$(client -c info -c "write -P 0x5a 0 64k" -c "write -P 0x11 1M 1M" -c "write -P 0x77 63M 4k" \
        -c flush -c "read -P 0x5a 0 64k" -c "read -P 0x11 1M 1M" -c "read -P 0 2M 4k") ||
        { echo "$out"; return 1; }
    grep -q "^capacity: 131072 sectors$" <<<"$out" || { echo "$out"; return 1; }
    stop &&
        t "$IO" -c "read -P 0x5a 0 64k" -c "read -P 0x11 1M 1M" -c "read -P 0x77 63M 4k" \
            -c "read -P 0 64k 960k" "$work/p.qcow2" | grep -v -q "fail\|error" &&
        t "$IMG" check -q "$work/p.qcow2"
}

case_zoned_round_trip() {
    "$IMG" create -q -f qcow2 -o zone.mode=host-managed,zone.size=1M,zone.max_append_bytes=64k \
        "$work/z.qcow2" 8M && serve "$work/z.qcow2" qcow2 || return 1
    local out
    out=$(client --config-size 96 -c info -c "write -P 0x21 0 64k" -c "zap -P 0x22 0 8k" \
        -c "zap -P 0x23 1M 4k" -c "zf 2M" -c "zrs 1M" -c "zap -P 0x24 1M 512" \
        -c "read -P 0x22 64k 8k" -c "zrp 0 8") || { echo "$out"; return 1; }
    grep -q "^zoned: model 1, zone_sectors 2048" <<<"$out" &&
        grep -q "^After zap done, the append sector is 0x80$" <<<"$out" &&
        grep -q "^After zap done, the append sector is 0x800$" <<<"$out" ||
        { echo "$out"; return 1; }
    # A write that is not at the write pointer fails with a zoned status.
    if client --config-size 96 -c "write 4M 4k" -c "write 4M 4k" >"$work/wp.out"; then
        echo "an unaligned write succeeded"
        return 1
    fi
    grep -q "write failed: status 4" "$work/wp.out" || { cat "$work/wp.out"; return 1; }
    # Zones left implicitly open are closed when the image is closed: the
    # report through a restarted daemon equals qemu-io's on the image.
    stop && t "$IO" -c "zrp 0 8" "$work/z.qcow2" >"$work/zrp.image" &&
        serve "$work/z.qcow2" qcow2 &&
        client --config-size 96 -c "zrp 0 8" >"$work/zrp.vhost" && stop || return 1
    diff -u "$work/zrp.image" "$work/zrp.vhost" &&
        t "$IO" -c "read -P 0x22 64k 8k" -c "read -P 0x24 1M 512" "$work/z.qcow2" |
        grep -v -q "fail\|error"
}

case_hostile() {
    "$IMG" create -q -f qcow2 "$work/h.qcow2" 16M && serve "$work/h.qcow2" qcow2 || return 1
    t "$HOSTILE" "$sock" || return 1
    kill -0 "$daemon_pid" || { echo "the daemon died"; return 1; }
    stop
}

case_reconnect() {
    "$IMG" create -q -f qcow2 "$work/r.qcow2" 16M && serve "$work/r.qcow2" qcow2 || return 1
    # The first front end vanishes without stopping its rings, the second
    # stops them (GET_VRING_BASE) before going; every one starts over.
    client -c "write -P 0x31 0 128k" >/dev/null &&
        client -c "read -P 0x31 0 128k" -c "write -P 0x32 128k 4k" -c stop >"$work/r.out" &&
        grep -q "^vring 0 base 2$" "$work/r.out" &&
        client -c "read -P 0x32 128k 4k" -c "read -P 0x31 0 128k" >/dev/null || return 1
    # Several queues: the daemon offers MQ up to num-queues.
    stop && serve "$work/r.qcow2" qcow2 num-queues=4 &&
        client --queues 4 -c "read -P 0x31 0 4k" -c stop >"$work/mq.out" &&
        grep -q "^vring 3 base 0$" "$work/mq.out" && stop
}

case_one_client_at_a_time() {
    "$IMG" create -q -f qcow2 "$work/o.qcow2" 16M && serve "$work/o.qcow2" qcow2 || return 1
    # A front end that holds the connection open (reading nothing).
    python3 -c "
import socket, time, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); time.sleep(3)" "$sock" &
    local holder=$!
    sleep 1
    if python3 -c "
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(10)
sys.exit(0 if s.recv(1) == b'' else 1)" "$sock"; then
        :
    else
        echo "a second front end was not turned away"
        return 1
    fi
    wait "$holder"
    grep -q "warning: Only one vhost-user client is allowed to connect the server one time" \
        "$work/qsd.err" || { cat "$work/qsd.err"; return 1; }
    client -c "read 0 4k" >/dev/null && stop
}

# QEMU 10.0's vhost-user-blk-pci realizes against the export (features,
# protocol features, queue number, owner, config): with the VM paused
# before any guest code runs, `info pci` lists the virtio-blk device; more
# queues than exported fail with QEMU's own message.  No guest I/O here.
case_qemu10_realize() {
    local q10=$here/../e2e/qemu10.sh cache=${VM_CACHE:-/var/tmp/vm-cache}
    if [ ! -x "$cache/qemu10/usr/bin/qemu-system-x86_64" ]; then
        echo "SKIP qemu10_realize: no QEMU 10.0 in $cache (tests/e2e/prepare.sh)"
        return 2
    fi
    "$IMG" create -q -f qcow2 "$work/q.qcow2" 1G && serve "$work/q.qcow2" qcow2 || return 1
    vm() {
        (sleep 5; echo "info pci"; sleep 1; echo quit) |
            timeout 60 "$q10" "$cache" qemu-system-x86_64 -machine q35,memory-backend=mem -m 256 \
                -object memory-backend-memfd,id=mem,size=256M,share=on \
                -chardev "socket,id=c0,path=$sock" -device "vhost-user-blk-pci,chardev=c0,$1" \
                -display none -monitor stdio -S 2>&1
    }
    vm num-queues=1 >"$work/vm1.out"
    grep -q "SCSI controller: PCI device 1af4:1001" "$work/vm1.out" || { cat "$work/vm1.out"; return 1; }
    vm num-queues=2 >"$work/vm2.out"
    grep -q "The maximum number of queues supported by the backend is 1" "$work/vm2.out" ||
        { cat "$work/vm2.out"; return 1; }
    kill -0 "$daemon_pid" && stop
}

case_option_errors() {
    "$IMG" create -q -f qcow2 "$work/e.qcow2" 16M || return 1
    local base="--blockdev driver=qcow2,node-name=n0,file.driver=file,file.filename=$work/e.qcow2"
    local exp="type=vhost-user-blk,id=e0,node-name=n0"
    check_err() {
        local want=$1; shift
        local out
        out=$(t "$QSD" $base --export "$exp,$*" 2>&1) && { echo "accepted: $*"; return 1; }
        grep -qF "$want" <<<"$out" || { echo "for $*: $out"; return 1; }
    }
    check_err "Only socket address types 'unix' and 'fd' are supported" \
        "addr.type=inet,addr.host=localhost,addr.port=1234" &&
        check_err "parameter logical-block-size must be a power of 2 between 512 and 2097152" \
            "addr.type=unix,addr.path=$sock,logical-block-size=1000" &&
        check_err "num-queues must be greater than 0" "addr.type=unix,addr.path=$sock,num-queues=0" &&
        check_err "Parameter 'addr.path' is missing" "addr.type=unix"
}

for c in plain_round_trip zoned_round_trip hostile reconnect one_client_at_a_time qemu10_realize \
    option_errors; do
    # A case that fails leaves its daemon running: its subshell ends it.
    out=$( (trap '[ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null' EXIT; "case_$c") 2>&1)
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
echo "vhost-user-blk: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
