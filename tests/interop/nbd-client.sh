#!/bin/bash
# Our nbd client against Debian's qemu-nbd 7.2 (and QEMU 10.0's qemu-nbd,
# which negotiates extended headers, when the e2e cache holds it): every
# output of our qemu-img and qemu-io on an nbd:// image must equal, byte
# for byte, what Debian's qemu-img and qemu-io print against the same
# server; writes through us must read back through QEMU; a server killed
# under a running qemu-io must make it fail promptly, not hang.
#
#   tests/interop/nbd-client.sh [BUILD_DIR]
#
# Prints PASS/FAIL/SKIP per case and ends with "nbd-client: N passed, N
# failed"; the exit status is non-zero when a case failed.  E2E_CACHE
# (default /var/tmp/vm-cache) is where tests/e2e unpacked QEMU 10.0.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-$here/../../build}" 2>/dev/null && pwd) || {
    echo "nbd-client: no build directory"; echo "nbd-client: 0 passed, 1 failed"; exit 1; }
OURS_IMG=$build/qemu-img
OURS_IO=$build/qemu-io
QEMU_IMG=/usr/bin/qemu-img
QEMU_IO=/usr/bin/qemu-io
QEMU_NBD=/usr/bin/qemu-nbd
CACHE=${E2E_CACHE:-/var/tmp/vm-cache}
for prog in "$OURS_IMG" "$OURS_IO" "$QEMU_IMG" "$QEMU_IO" "$QEMU_NBD"; do
    if [ ! -x "$prog" ]; then
        echo "nbd-client: missing $prog"; echo "nbd-client: 0 passed, 1 failed"; exit 1
    fi
done

work=$(mktemp -d "${TMPDIR:-/tmp}/nbd-client.XXXXXX")
servers=()
cleanup() {
    local pid
    for pid in "${servers[@]}"; do
        kill "$pid" 2>/dev/null
    done
    rm -rf "$work"
}
trap cleanup EXIT
passed=0
failed=0

pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1"; shift; printf '  %s\n' "$@"; failed=$((failed + 1)); }

# serve NAME IMAGE [QEMU_NBD_CMD...]: qemu-nbd for IMAGE (qcow2) on
# $work/NAME.sock as export "exp"; prints nothing, records the pid.
serve() {
    local name=$1 img=$2
    shift 2
    local cmd=("$@")
    [ ${#cmd[@]} -gt 0 ] || cmd=("$QEMU_NBD")
    "${cmd[@]}" ${SERVE_EXTRA:+"$SERVE_EXTRA"} --fork --pid-file="$work/$name.pid" -f qcow2 -k "$work/$name.sock" -x exp -t "$img" ||
        return 1
    servers+=("$(cat "$work/$name.pid")")
}

# same NAME CMD...: runs CMD with our tool and with Debian's (the first
# word is "img" or "io"); both outputs (stdout+stderr) and exit codes must
# be equal, and the exit code 0 unless the case is an error case
# (same_error).  Timing lines of qemu-io are dropped.
same() {
    local name=$1 tool=$2
    shift 2
    local ours theirs ours_rc=0 theirs_rc=0
    if [ "$tool" = img ]; then
        ours=$(timeout 60 "$OURS_IMG" "$@" 2>&1) || ours_rc=$?
        theirs=$(timeout 60 "${REF_IMG:-$QEMU_IMG}" "$@" 2>&1) || theirs_rc=$?
    else
        ours=$(timeout 60 "$OURS_IO" "$@" 2>&1 | grep -v ' ops; ') || true
        theirs=$(timeout 60 "$QEMU_IO" "$@" 2>&1 | grep -v ' ops; ') || true
    fi
    if [ "$ours" == "$theirs" ] && [ $ours_rc -eq $theirs_rc ] &&
       { [ "${expect_error:-0}" = 1 ] || [ $ours_rc -eq 0 ]; }; then
        pass "$name"
    else
        fail "$name" "command: $tool ${*@Q}" "ours (exit $ours_rc):" "$ours" \
            "QEMU's (exit $theirs_rc):" "$theirs"
    fi
}

# writes_read_back NAME URI: data (FUA too), zeroes and a discard written
# by our qemu-io, read back by Debian's.
writes_read_back() {
    local name=$1 uri=$2
    if timeout 60 "$OURS_IO" -f raw -c 'write -P 0x61 0 70000' -c 'write -z 1M 1M' \
           -c 'write -f -P 0x62 5M 4k' -c 'discard 2M 64k' "$uri" > "$work/wrb-w.out" 2>&1 &&
       timeout 60 "$QEMU_IO" -f raw -c 'read -P 0x61 0 70000' -c 'read -P 0 1M 1M' \
           -c 'read -P 0x62 5M 4k' "$uri" > "$work/wrb-r.out" 2>&1 &&
       ! grep -qi 'fail\|error\|mismatch' "$work/wrb-w.out" "$work/wrb-r.out"; then
        pass "$name"
    else
        fail "$name" "$(cat "$work/wrb-w.out" "$work/wrb-r.out")"
    fi
}

# The image: data, a zeroed range, holes, a compressed cluster, and an
# unaligned tail of data.
img=$work/img.qcow2
"$QEMU_IMG" create -q -f qcow2 "$img" 64M
"$QEMU_IO" -f qcow2 -c 'write -P 0x5a 1M 192k' -c 'write -z 4M 1M' -c 'write -P 0x11 5M 4k' \
    -c 'write -c -P 0x22 8M 64k' -c 'write -P 0x33 63M 1000' "$img" > /dev/null
serve main "$img" || { echo "nbd-client: qemu-nbd did not start"; exit 1; }
# A copy that differs in one byte, for compare's first-difference message.
wdiff=$work/diff.qcow2
cp "$img" "$wdiff"
"$QEMU_IO" -f qcow2 -c 'write -P 0x66 3000000 1' "$wdiff" > /dev/null
S=$work/main.sock
U="nbd+unix:///exp?socket=$S"
OPTS="driver=nbd,server.type=unix,server.path=$S,export=exp"

same "info (probed)" img info "$U"
same "info -f raw" img info -f raw "$U"
same "info --output=json" img info --output=json -f raw "$U"
same "info --image-opts" img info --image-opts "$OPTS"
same "info json: name" img info "json:{\"driver\":\"nbd\",\"server\":{\"type\":\"unix\",\"path\":\"$S\"},\"export\":\"exp\"}"
same "info json: raw over nbd" img info "json:{\"driver\":\"raw\",\"file\":{\"driver\":\"nbd\",\"server\":{\"type\":\"unix\",\"path\":\"$S\"},\"export\":\"exp\"}}"
same "info legacy name" img info "nbd:unix:$S:exportname=exp"
same "map --output=json" img map --output=json -f raw "$U"
same "map (human)" img map -f raw "$U"
same "map --image-opts" img map --output=json --image-opts "$OPTS"
same "compare with the image" img compare -U -f raw -F qcow2 "$U" "$img"
same_error() { expect_error=1 same "$@"; }
same_error "check refuses" img check -f raw "$U"
same_error "missing export" img info "nbd+unix:///nope?socket=$S"
same_error "no server" img info "nbd+unix:///exp?socket=$work/none.sock"
same_error "bad URL" img info "nbd://h/e?socket=x"
same_error "bad legacy address" img info "nbd:localhost"
same_error "missing address" img info --image-opts driver=nbd
same_error "compare finds a difference" img compare -U -f raw -F qcow2 "$U" "$wdiff"
same "read -v" io -f raw -c 'read -v 1040384 8192' -c 'read -v 66060288 1536' -c 'read -q -P 0x22 8M 64k' "$U"
same "read past a data run" io -f raw -r -c 'read -P 0x5a 1M 200k' "$U"

# TCP, under every name QEMU takes for it.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cp "$img" "$work/tcp.qcow2"
if "$QEMU_NBD" --fork --pid-file="$work/tcp2.pid" -f qcow2 -b 127.0.0.1 -p "$port" -x exp -t -r "$work/tcp.qcow2"; then
    servers+=("$(cat "$work/tcp2.pid")")
    same "TCP: info nbd://" img info -f raw "nbd://127.0.0.1:$port/exp"
    same "TCP: info nbd+tcp://" img info -f raw "nbd+tcp://127.0.0.1:$port/exp"
    same "TCP: legacy name" img info -f raw "nbd:127.0.0.1:$port:exportname=exp"
    same "TCP: --image-opts" img map --output=json --image-opts "driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=$port,export=exp"
    same_error "TCP: missing export" img info -f raw "nbd://127.0.0.1:$port/nope"
else
    fail "TCP server" "qemu-nbd -p $port did not start"
fi

# convert skips holes as QEMU does: both copies have the same map.
if timeout 120 "$OURS_IMG" convert -f raw -O qcow2 "$U" "$work/ours.qcow2" &&
   "$QEMU_IMG" convert -f raw -O qcow2 "$U" "$work/theirs.qcow2" &&
   "$QEMU_IMG" compare -U -q "$work/ours.qcow2" "$img" &&
   [ "$("$QEMU_IMG" map --output=json "$work/ours.qcow2")" == "$("$QEMU_IMG" map --output=json "$work/theirs.qcow2")" ]; then
    pass "convert from nbd"
else
    fail "convert from nbd" "$("$QEMU_IMG" map "$work/ours.qcow2" 2>&1)"
fi

if out=$(timeout 120 "$OURS_IMG" bench -f raw -c 2000 -d 16 -s 4k "$U" 2>&1) &&
   grep -q '^Sending 2000 read requests' <<<"$out"; then
    pass "bench (queue depth 16)"
else
    fail "bench (queue depth 16)" "$out"
fi

# Writes through us, every kind; QEMU reads them back.
wimg=$work/w.qcow2
"$QEMU_IMG" create -q -f qcow2 "$wimg" 16M
"$QEMU_IO" -f qcow2 -c 'write -P 0x77 0 16M' "$wimg" > /dev/null
serve w "$wimg"
W="nbd+unix:///exp?socket=$work/w.sock"
if timeout 60 "$OURS_IO" -f raw -c 'write -P 0x44 4096 70000' -c 'write -f -P 0x45 1M 64k' \
       -c 'write -z 2M 1M' -c 'write -z -u 3M 1M' -c 'discard 5M 1M' -c 'flush' "$W" > "$work/w.out" 2>&1 &&
   timeout 60 "$QEMU_IO" -f raw -c 'read -P 0x44 4096 70000' -c 'read -P 0x45 1M 64k' \
       -c 'read -P 0 2M 2M' -c 'read -P 0x77 6M 1M' "$W" > "$work/r.out" 2>&1 &&
   ! grep -qi 'fail\|error\|mismatch' "$work/w.out" "$work/r.out"; then
    pass "writes, FUA, zeroes, discard read back by QEMU"
else
    fail "writes, FUA, zeroes, discard read back by QEMU" "$(cat "$work/w.out" "$work/r.out")"
fi
same "map after zeroes (unmapped ranges)" img map --output=json -f raw "$W"

# A server that dies: a request after its death fails as QEMU's does.
killed() {
    local tool=$1 out
    cp "$img" "$work/k.qcow2"
    serve k "$work/k.qcow2" || { echo "qemu-nbd did not start"; return; }
    local pid=${servers[-1]}
    ( sleep 1; kill -9 "$pid" ) &
    out=$(timeout 30 "$tool" -f raw -c 'read -q 0 64k' -c 'sleep 2500' -c 'read 0 64k' \
          -c 'write 0 4k' "nbd+unix:///exp?socket=$work/k.sock" 2>&1; echo "exit $?")
    wait
    printf '%s\n' "$out"
}
ours=$(killed "$OURS_IO")
theirs=$(killed "$QEMU_IO")
if [ "$ours" == "$theirs" ]; then
    pass "server killed between requests"
else
    fail "server killed between requests" "ours:" "$ours" "QEMU's:" "$theirs"
fi
# ... and one killed under a stream of large reads: we fail, promptly.
cp "$img" "$work/k2.qcow2"
serve k2 "$work/k2.qcow2" || echo "qemu-nbd did not start"
pid=${servers[-1]}
# Far more reads than fit in the 60 s limit, so that the kill after 1 s
# lands mid-stream however fast the machine is (200 once finished first).
reads=()
for i in $(seq 4000); do reads+=(-c "read -q 0 32M"); done
( sleep 1; kill -9 "$pid" ) &
start=$SECONDS
timeout 60 "$OURS_IO" -f raw "${reads[@]}" "nbd+unix:///exp?socket=$work/k2.sock" > "$work/k2.out" 2>&1
rc=$?
wait
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q 'Input/output error' "$work/k2.out"; then
    pass "server killed mid-request (exit $rc after $((SECONDS - start)) s)"
else
    fail "server killed mid-request" "exit $rc" "$(head -5 "$work/k2.out")"
fi

# QEMU 10.0's qemu-nbd negotiates extended headers with us.
if [ -x "$CACHE/qemu10/usr/bin/qemu-nbd" ]; then
    cp "$img" "$work/q10.qcow2"
    SERVE_EXTRA="--trace=enable=nbd_negotiate_send_rep_len,file=$work/q10.trace" \
        serve q10 "$work/q10.qcow2" "$here/../e2e/qemu10.sh" "$CACHE" qemu-nbd ||
        fail "QEMU 10 server" "its qemu-nbd did not start"
    T="nbd+unix:///exp?socket=$work/q10.sock"
    REF_IMG=$QEMU_IMG same "QEMU 10 server: map --output=json" img map --output=json -f raw "$T"
    REF_IMG=$QEMU_IMG same "QEMU 10 server: info" img info -f raw "$T"
    same "QEMU 10 server: read -v" io -f raw -c 'read -v 1040384 8192' "$T"
    same "QEMU 10 server: compare" img compare -U -f raw -F qcow2 "$T" "$img"
    if grep -q 'opt=11 (extended headers), type=1 (ack)' "$work/q10.trace" 2>/dev/null; then
        pass "QEMU 10 server: extended headers negotiated"
    else
        fail "QEMU 10 server: extended headers negotiated" "$(head -5 "$work/q10.trace" 2>&1)"
    fi
    writes_read_back "QEMU 10 server: writes with extended headers read back by QEMU 7.2" "$T"
else
    echo "SKIP QEMU 10 server: $CACHE/qemu10 not unpacked (tests/e2e/prepare.sh)"
fi

# Our own NBD server (tests/nbd/nbd-serve, branch nbd-server) with our
# client, against Debian's client on the same server.
if [ -x "$build/tests/nbd/nbd-serve" ]; then
    cp "$img" "$work/o.qcow2"
    "$build/tests/nbd/nbd-serve" -k "$work/o.sock" -x exp -f qcow2 -t -e 4 "$work/o.qcow2" \
        > "$work/o.log" 2>&1 &
    servers+=($!)
    for _ in $(seq 100); do [ -S "$work/o.sock" ] && break; sleep 0.1; done
    O="nbd+unix:///exp?socket=$work/o.sock"
    same "our server: info" img info -f raw "$O"
    same "our server: map --output=json" img map --output=json -f raw "$O"
    same "our server: read -v" io -f raw -c 'read -v 1040384 8192' -c 'read -v 66060288 1536' "$O"
    same "our server: compare" img compare -U -f raw -F qcow2 "$O" "$img"
    writes_read_back "our server: our writes read back by QEMU 7.2" "$O"
else
    echo "SKIP our server: $build/tests/nbd/nbd-serve not built (branch nbd-server)"
fi

echo "nbd-client: $passed passed, $failed failed"
[ $failed -eq 0 ]
