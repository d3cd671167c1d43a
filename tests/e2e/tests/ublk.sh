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

# qsd_start IMAGE: the daemon in the background with the
# image exported over ublk and a QMP monitor on TCP port 4444; returns
# once the disk exists (the daemon writes its pid file after its exports
# are up) and leaves its name in /tmp/disk.
qsd_start() {
    rm -f "$QSD_PID"
    $BUILD/qemu-storage-daemon \
        --blockdev driver=file,node-name=f0,filename="$1",cache.direct=off \
        --blockdev driver=qcow2,node-name=n0,file=f0 \
        --export type=ublk,id=e0,node-name=n0,writable=on \
        --chardev socket,id=m0,host=127.0.0.1,port=4444,server=on,wait=off \
        --monitor chardev=m0 --pidfile "$QSD_PID" > /tmp/qsd.log 2>&1 &
    wait_for 300 test -s "$QSD_PID" || { cat /tmp/qsd.log; die "the daemon did not start"; }
    d=$(ublk_disks)
    [ "$(echo "$d" | wc -w)" = 1 ] || die "expected one ublk disk, have: $d"
    wait_for 100 test -b "/dev/$d" || die "/dev/$d did not appear"
    echo "$d" > /tmp/disk
    echo "daemon $(cat "$QSD_PID") serves /dev/$d"
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
    $BUILD/qemu-img create -q -f qcow2 /tmp/plain.qcow2 64M || return 1
    if $BUILD/qemu-storage-daemon --blockdev driver=file,node-name=f0,filename=/tmp/plain.qcow2 \
           --blockdev driver=qcow2,node-name=n0,file=f0 \
           --export type=ublk,id=e0,node-name=n0,writable=on 2> /tmp/err; then
        die "the daemon ran without ublk_drv"
    fi
    cat /tmp/err
    grep -qx "qemu-storage-daemon: --export type=ublk,id=e0,node-name=n0,writable=on: ublk: /dev/ublk-control: No such file or directory; load the ublk_drv module" /tmp/err
}

setup() {
    modprobe ublk_drv || die "no ublk_drv module"
    modprobe btrfs || die "no btrfs module"
    modprobe f2fs || die "no f2fs module"
    wait_for 50 test -c /dev/ublk-control || die "no /dev/ublk-control"
    make_image || return 1
    qsd_start "$IMG"
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
step ublk-geometry ublk_geometry
step ublk-write-pointer write_pointer
step ublk-fio-zbd fio_zbd
make_files
step ublk-btrfs-zoned btrfs_zoned
step ublk-restart-keeps-zones-and-files restart_keeps
step ublk-f2fs-conventional f2fs_conventional
step ublk-sigkill-keeps-flushed-writes sigkill_keeps_flushed
