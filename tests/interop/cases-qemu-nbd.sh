# shellcheck shell=bash
# Interoperability cases for our qemu-nbd, sourced by run.sh after its own
# cases are defined (they use its helpers: must, x, $CASE_DIR).
#
# - Debian's QEMU 7.2 tools as clients of our qemu-nbd: qemu-io -f raw over
#   nbd+unix reads, writes, zeroes and discards what the image then holds
#   for QEMU too; qemu-img map over NBD shows the data and zero ranges
#   QEMU's map of the image does; qemu-img convert copies the export;
# - our qemu-nbd exits after its last client unless -t;
# - -L: ours prints what QEMU 7.2's qemu-nbd -L prints (less the
#   "transaction size" line 7.2 predates), against our server and against
#   QEMU's; QEMU 10.0's (unpacked by tests/e2e, when present) byte for byte.

OURS_NBD=$build/qemu-nbd
QEMU_NBD=/usr/bin/qemu-nbd
Q10_SH=$INTEROP_DIR/../e2e/qemu10.sh
Q10_CACHE=${E2E_CACHE:-/var/tmp/vm-cache}

# nbd_start PROGRAM ARGS...: a server on $CASE_DIR/nbd.sock (as our child,
# output to a file: an orphan holding the case's pipe would hang the
# suite); sets nbd_pid once the socket exists.
nbd_start() {
    local sock=$CASE_DIR/nbd.sock tries=0
    rm -f "$sock"
    printf '%s &\n' "${*@Q} -k ${sock@Q}" >> "$CASE_DIR/commands"
    "$@" -k "$sock" > "$CASE_DIR/nbd.log" 2>&1 < /dev/null &
    nbd_pid=$!
    # The socket file appears at bind(), before listen(); a probe would
    # count as a client (ending a server without -t), so wait for the file
    # and then for the listening state in /proc/net/unix (01 = ACC flag).
    while [ $tries -lt 500 ] &&
          ! awk -v p="$sock" '$NF == p && $4 == "00010000" { f = 1 } END { exit !f }' /proc/net/unix; do
        if ! kill -0 "$nbd_pid" 2>/dev/null; then
            echo "server did not start: $(cat "$CASE_DIR/nbd.log")"
            return 1
        fi
        sleep 0.01
        tries=$((tries + 1))
    done
    [ -S "$sock" ] || { echo "no socket after 5 s"; return 1; }
}

nbd_stop() {
    kill "$nbd_pid" 2>/dev/null || true
    wait "$nbd_pid" 2>/dev/null || true
}

nbd_uri() { echo "nbd+unix:///${1:-}?socket=$CASE_DIR/nbd.sock"; }

# The data/zero runs of a map --output=json, merged, one "start length
# data zero" per line: the shape both an image and an NBD export have
# (offsets, depth and "present" differ by what sits below).
map_runs() {
    python3 -c '
import json, sys
runs = []
for e in json.load(sys.stdin):
    key = (e["data"], e["zero"])
    if runs and runs[-1][2] == key and runs[-1][0] + runs[-1][1] == e["start"]:
        runs[-1][1] += e["length"]
    else:
        runs.append([e["start"], e["length"], key])
for s, l, (d, z) in runs:
    print(s, l, d, z)
'
}

nbd_qemu_io_rw() {
    local img=$CASE_DIR/img.qcow2
    must "$OURS_IMG" create -f qcow2 "$img" 64M
    must "$OURS_IO" -f qcow2 -c "write -P 0x11 0 1M" -c "write -P 0x12 8M 64k" "$img"
    nbd_start "$OURS_NBD" -t --discard=unmap -f qcow2 "$img"
    must "$QEMU_IO" -f raw -c "read -P 0x11 0 1M" -c "read -P 0x12 8M 64k" -c "read -P 0 9M 1M" \
        -c "write -P 0x21 4M 256k" -c "write -z 0 64k" -c "discard 8M 64k" \
        -c "write -P 0x22 63M 1M" -c "flush" "$(nbd_uri)"
    must "$QEMU_IO" -f raw -c "read -P 0 0 64k" -c "read -P 0x11 64k 960k" \
        -c "read -P 0x21 4M 256k" -c "read -P 0 8M 64k" -c "read -P 0x22 63M 1M" "$(nbd_uri)"
    nbd_stop
    check_clean "$QEMU_IMG" "$img"
    must "$QEMU_IO" -f qcow2 -c "read -P 0 0 64k" -c "read -P 0x11 64k 960k" \
        -c "read -P 0x21 4M 256k" -c "read -P 0 8M 64k" -c "read -P 0x22 63M 1M" "$img"
}

nbd_map_and_convert() {
    local img=$CASE_DIR/img.qcow2 a b
    must "$QEMU_IMG" create -f qcow2 "$img" 64M
    must "$QEMU_IO" -f qcow2 -c "write -P 0x31 0 1M" -c "write -z 2M 1M" -c "write -P 0x32 5M 64k" \
        -c "write -P 0x33 40M 4M" -c "write -z -u 41M 1M" "$img"
    a=$(x "$QEMU_IMG" map --output=json -f qcow2 "$img" | map_runs)
    nbd_start "$OURS_NBD" -t -r -f qcow2 "$img"
    b=$(x "$QEMU_IMG" map --output=json -f raw "$(nbd_uri)" | map_runs)
    if [ "$a" != "$b" ]; then
        echo "map over NBD differs from the image's:"
        diff <(echo "$a") <(echo "$b")
        return 1
    fi
    must "$QEMU_IMG" convert -f raw -O raw "$(nbd_uri)" "$CASE_DIR/copy.raw"
    nbd_stop
    must "$QEMU_IMG" compare -f qcow2 -F raw "$img" "$CASE_DIR/copy.raw"
}

nbd_exit_after_last_client() {
    local img=$CASE_DIR/img.qcow2 rc=0
    must "$OURS_IMG" create -f qcow2 "$img" 16M
    nbd_start "$OURS_NBD" -f qcow2 "$img"
    must "$QEMU_IO" -f raw -c "write -P 0x41 0 64k" "$(nbd_uri)"
    for _ in $(seq 500); do
        kill -0 "$nbd_pid" 2>/dev/null || break
        sleep 0.01
    done
    if kill -0 "$nbd_pid" 2>/dev/null; then
        echo "qemu-nbd without -t still runs after its client left"
        nbd_stop
        return 1
    fi
    wait "$nbd_pid" || rc=$?
    [ "$rc" = 0 ] || { echo "qemu-nbd exited with $rc"; return 1; }
    [ ! -e "$CASE_DIR/nbd.sock" ] || { echo "the socket was left behind"; return 1; }
    must "$QEMU_IO" -f qcow2 -c "read -P 0x41 0 64k" "$img"
}

# list_equal WHAT REF OURS: the two -L outputs are the same, or a diff.
list_equal() {
    [ "$2" = "$3" ] && return 0
    echo "-L output differs from $1's:"
    diff <(echo "$2") <(echo "$3")
    return 1
}

# nbd_list_compare SERVER: -L of ours against SERVER (ours|qemu) serving
# the image with several sets of options, compared with QEMU 10.0's -L
# (which negotiates extended headers as ours does) and, against QEMU 7.2's
# server (no extended headers), with QEMU 7.2's -L less the "transaction
# size" line 7.2 predates.
nbd_list_compare() {
    local img=$CASE_DIR/img.qcow2 server=$OURS_NBD ours ref opts ok=0
    [ "$1" = qemu ] && server=$QEMU_NBD
    must "$OURS_IMG" create -f qcow2 "$img" 64M
    for opts in "-x exp1 -D my-description" "-r -A -e 2 -x other" "-e 0"; do
        # shellcheck disable=SC2086
        nbd_start "$server" -t -f qcow2 $opts "$img"
        ours=$(x "$OURS_NBD" -L -k "$CASE_DIR/nbd.sock" 2>&1)
        if [ "$1" = qemu ]; then
            ref=$(x "$QEMU_NBD" -L -k "$CASE_DIR/nbd.sock" 2>&1)
            list_equal "QEMU 7.2" "$ref" "$(grep -v '^  transaction size: 32-bit$' <<<"$ours")" || ok=1
        fi
        if [ -x "$Q10_CACHE/qemu10/usr/bin/qemu-nbd" ]; then
            ref=$(x "$Q10_SH" "$Q10_CACHE" qemu-nbd -L -k "$CASE_DIR/nbd.sock" 2>&1)
            list_equal "QEMU 10.0" "$ref" "$ours" || ok=1
        fi
        nbd_stop
    done
    return $ok
}

run_case "qemu-nbd qemu-io-7.2-read-write-zero-discard" nbd_qemu_io_rw
run_case "qemu-nbd qemu-img-7.2-map-convert" nbd_map_and_convert
run_case "qemu-nbd exits-after-last-client" nbd_exit_after_last_client
run_case "qemu-nbd list-vs-qemu-against-qemu-7.2" nbd_list_compare qemu
if [ -x "$Q10_CACHE/qemu10/usr/bin/qemu-nbd" ]; then
    run_case "qemu-nbd list-vs-qemu-10.0-against-ours" nbd_list_compare ours
else
    skip_case "qemu-nbd list-vs-qemu-10.0" "QEMU 10.0 not unpacked in $Q10_CACHE (tests/e2e/prepare.sh)"
fi
