# Our qemu-storage-daemon, run in the guest, serves a zoned qcow2 image to
# the guest's own kernel through ublk (/dev/ublkbN, zoned since Linux 6.6):
# the refusal without ublk_drv, the disk's zoned geometry and limits,
# blkzone's report against our zone report of the image, fio's zbd
# write+verify at depth 1 and 8, btrfs -O zoned and f2fs (on the
# conventional zones) surviving a daemon restart, and every write flushed
# before a SIGKILL of the daemon found in the image afterwards.
# kernels: 6.12
# timeout: 1500

. /e2e/tests/zoned-disk/lib.sh

ublk_disks() { ls /sys/block | grep '^ublkb' || true; }
no_disk() { [ -z "$(ublk_disks)" ]; }
detach_hook() { :; }
attach_hook() { disk_found ublk_disks; }

# qsd_start: the daemon exporting the image over ublk; leaves the disk's
# name in /tmp/disk.
qsd_start() {
    qsd_run type=ublk,id=e0,node-name=n0,writable=on
    disk_found ublk_disks
}

# qsd_stop: SIGTERM; the daemon deletes the device and exits.
qsd_stop() {
    p=$(cat "$QSD_PID")
    kill -TERM "$p"
    wait_for 600 gone "$p" || die "the daemon did not exit after SIGTERM"
    cat /tmp/qsd.log
    [ -z "$(ublk_disks)" ] || die "a ublk disk is left after the daemon exited: $(ublk_disks)"
    ! ls /dev/ublkc* > /dev/null 2>&1 || die "a ublk char device is left: $(ls /dev/ublkc*)"
}

refuses_without_module() {
    [ ! -e /dev/ublk-control ] || die "/dev/ublk-control exists before modprobe"
    qsd_refused type=ublk,id=e0,node-name=n0,writable=on \
        "ublk: /dev/ublk-control: No such file or directory; load the ublk_drv module"
}

setup() {
    modprobe ublk_drv || die "no ublk_drv module"
    modprobe btrfs || die "no btrfs module"
    modprobe f2fs || die "no f2fs module"
    wait_for 50 test -c /dev/ublk-control || die "no /dev/ublk-control"
    make_image || return 1
    qsd_start
}

# The zoned geometry, and the device number in query-block-exports.
ublk_geometry() {
    geometry || return 1
    d=$(cat /tmp/disk)
    r=$(qmp '{"execute":"query-block-exports"}')
    echo "$r"
    echo "$r" | grep -q '"type": *"ublk"' && echo "$r" | grep -qE "\"dev-id\": *${d#ublkb}[,}]" ||
        die "query-block-exports does not show dev-id ${d#ublkb}"
}

step ublk-refused-without-module refuses_without_module
step ublk-setup setup
zoned_disk_steps ublk \
    '{"type":"ublk","id":"e0","node-name":"n0","writable":true}'
