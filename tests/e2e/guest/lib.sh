#!/bin/sh
# The start of every guest /init (busybox sh): the test script follows it,
# then a call of `finish`.  See docs/devel/testing-e2e.rst.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run

# "@@ <uptime> <text>": progress, with the guest's clock for timing.
mark() { echo "@@ $(cut -d' ' -f1 /proc/uptime) $*"; }

# step NAME COMMAND...: runs COMMAND (a shell function usually) in a
# subshell, prints its output, then the marker the host counts:
# "@@STEP NAME PASS" or "@@STEP NAME FAIL <why>".  A step fails when
# COMMAND returns non-zero or calls die.
E2E_FAILED=0
step() {
    _name=$1
    shift
    mark "step $_name"
    if ("$@") > /tmp/step.out 2>&1; then
        sed 's/^/  /' /tmp/step.out
        echo "@@STEP $_name PASS"
    else
        _rc=$?
        sed 's/^/  /' /tmp/step.out
        echo "@@STEP $_name FAIL exit status $_rc"
        E2E_FAILED=1
    fi
}

# For step functions, which run in a subshell: fails the step.
die() {
    echo "error: $*"
    exit 1
}

# expect_same WHAT FILE1 FILE2: the files are identical, or their diff.
expect_same() {
    if cmp -s "$2" "$3"; then
        return 0
    fi
    echo "error: $1 differ:"
    diff -u "$2" "$3" | head -n 80
    return 1
}

finish() {
    mark "end"
    echo "@@E2E-END failed=$E2E_FAILED"
    sync
    poweroff -f
}

# Modules first: 6.1 has virtio_pci as a module (9p needs it first); 6.12
# has it built in, and busybox modprobe is fine with that.
for m in virtio_pci 9pnet_virtio 9p virtio_net configfs; do
    modprobe "$m" 2>/dev/null || true
done
mkdir -p /host /e2e /qemu10
for t in build:/host e2e:/e2e qemu10:/qemu10; do
    mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 "${t%%:*}" "${t#*:}" ||
        echo "@@STEP mount-${t%%:*} FAIL 9p mount failed"
done
mount -t configfs none /sys/kernel/config 2>/dev/null || true
ip link set lo up
if ip link set eth0 up 2>/dev/null; then
    ip addr add 10.0.2.15/24 dev eth0
    ip route add default via 10.0.2.2
fi
# Our binaries and QEMU 10.0's, which brings its own libraries over 9p.
export BUILD=/host
export Q10_LIB=/qemu10/usr/lib/x86_64-linux-gnu:/qemu10/lib/x86_64-linux-gnu
qemu10() { prog=$1; shift; LD_LIBRARY_PATH=$Q10_LIB "/qemu10/usr/bin/$prog" "$@"; }

# Which boot of the test this is (run.sh: "# boots: N"), and the test's
# host side (tests/NAME.host), reached through the 9p directory /ctl.
E2E_BOOT=$(sed -n 's/.*e2e\.boot=\([0-9]*\).*/\1/p' /proc/cmdline)
if grep -q 'e2e\.host=1' /proc/cmdline; then
    mkdir -p /ctl
    mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 ctl /ctl ||
        echo "@@STEP mount-ctl FAIL 9p mount failed"
fi

# host WORDS...: runs "tests/NAME.host WORDS" on the host and prints its
# output; returns its exit status, 124 when no answer came in $HOST_WAIT
# seconds (default 180).
host() {
    [ -d /ctl ] || { echo "error: this test has no host side (tests/NAME.host)"; return 1; }
    _n=$(($(cat /tmp/.host-req 2>/dev/null || echo 0) + 1))
    echo $_n > /tmp/.host-req
    _id=$E2E_BOOT-$_n
    echo "$*" > "/ctl/tmp.$_id"
    mv "/ctl/tmp.$_id" "/ctl/req.$_id"
    _t=$((${HOST_WAIT:-180} * 10))
    while [ ! -f "/ctl/rc.$_id" ]; do
        _t=$((_t - 1))
        if [ $_t -le 0 ]; then
            echo "error: the host side did not answer '$*' in ${HOST_WAIT:-180} s"
            return 124
        fi
        sleep 0.1
    done
    cat "/ctl/out.$_id"
    return "$(cat "/ctl/rc.$_id")"
}
mark "init kernel=$(uname -r) boot=$E2E_BOOT"

# --- Helpers for test steps (wait_for, zones_blkzone) ---

# wait_for COUNT COMMAND...: retries COMMAND every 0.1 s, COUNT times.
wait_for() {
    _n=$1
    shift
    while ! "$@" 2>/dev/null; do
        _n=$((_n - 1))
        [ $_n -gt 0 ] || return 1
        sleep 0.1
    done
}

# zones_blkzone DEV: one line per zone of DEV, "start wptr cond type" in
# sectors (wptr absolute; 0 for conventional zones), from blkzone, whose
# wptr is relative to the zone start.
zones_blkzone() {
    blkzone report "$1" | sed -nE 's/.*start: (0x[0-9a-f]+), len (0x[0-9a-f]+), cap (0x[0-9a-f]+), wptr (0x[0-9a-f]+) .*zcond: *([0-9]+).*type: *([0-9]+).*/\1 \4 \5 \6/p' |
        while read -r s w c t; do
            [ "$t" = 1 ] && w=0 || w=$((s + w))
            echo "$((s)) $w $c $t"
        done
}
