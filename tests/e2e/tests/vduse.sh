# Our qemu-storage-daemon, run in the guest, serves a zoned qcow2 image to
# the guest's own kernel as a virtio-blk device through VDUSE (attached
# with iproute2's vdpa; virtio_vdpa and virtio_blk make it /dev/vdX): the
# refusal without the vduse module, the zoned geometry Linux's virtio_blk
# reads from our config space, blkzone's report against our zone report of
# the image, fio's zbd write+verify at depth 1 and 8, btrfs -O zoned and
# f2fs (on the conventional zones) surviving a daemon restart, and every
# write flushed before a SIGKILL of the daemon found in the image.
# kernels: 6.12
# timeout: 1500

. /e2e/tests/zoned-disk/lib.sh

vd_disks() { ls /sys/block | grep '^vd' || true; }

# qsd_start IMAGE: the daemon in the background with the image exported
# as VDUSE device vduse0 and a QMP monitor on TCP port 4444, the device
# attached; returns once the disk exists and leaves its name in /tmp/disk.
qsd_start() {
    rm -f "$QSD_PID"
    $BUILD/qemu-storage-daemon \
        --blockdev driver=file,node-name=f0,filename="$1",cache.direct=off \
        --blockdev driver=qcow2,node-name=n0,file=f0 \
        --export type=vduse-blk,id=e0,node-name=n0,name=vduse0,writable=on,num-queues=2 \
        --chardev socket,id=m0,host=127.0.0.1,port=4444,server=on,wait=off \
        --monitor chardev=m0 --pidfile "$QSD_PID" > /tmp/qsd.log 2>&1 &
    wait_for 300 test -s "$QSD_PID" || { cat /tmp/qsd.log; die "the daemon did not start"; }
    vdpa dev add name vduse0 mgmtdev vduse || { cat /tmp/qsd.log; die "vdpa dev add failed"; }
    wait_for 300 test -n "$(vd_disks)" || { cat /tmp/qsd.log; die "no virtio disk appeared"; }
    d=$(vd_disks)
    [ "$(echo "$d" | wc -w)" = 1 ] || die "expected one virtio disk, have: $d"
    wait_for 100 test -b "/dev/$d" || die "/dev/$d did not appear"
    echo "$d" > /tmp/disk
    echo "daemon $(cat "$QSD_PID") serves /dev/$d"
}

# qsd_stop: detach (vdpa dev del), then SIGTERM: the daemon destroys the
# device and exits.
qsd_stop() {
    vdpa dev del vduse0 || die "vdpa dev del failed"
    wait_for 100 test -z "$(vd_disks)" || die "the virtio disk stayed after vdpa dev del"
    p=$(cat "$QSD_PID")
    kill -TERM "$p"
    wait_for 600 gone "$p" || die "the daemon did not exit after SIGTERM"
    cat /tmp/qsd.log
    [ ! -e /dev/vduse/vduse0 ] || die "/dev/vduse/vduse0 is left after the daemon exited"
}

refuses_without_module() {
    [ ! -e /dev/vduse/control ] || die "/dev/vduse/control exists before modprobe"
    $BUILD/qemu-img create -q -f qcow2 /tmp/plain.qcow2 64M || return 1
    if $BUILD/qemu-storage-daemon --blockdev driver=file,node-name=f0,filename=/tmp/plain.qcow2 \
           --blockdev driver=qcow2,node-name=n0,file=f0 \
           --export type=vduse-blk,id=e0,node-name=n0,name=vduse0 2> /tmp/err; then
        die "the daemon ran without the vduse module"
    fi
    cat /tmp/err
    grep -qx "qemu-storage-daemon: --export type=vduse-blk,id=e0,node-name=n0,name=vduse0: vduse-blk: /dev/vduse/control: No such file or directory; load the vduse module" /tmp/err
}

setup() {
    for m in vduse vdpa virtio_vdpa virtio_blk btrfs f2fs; do
        modprobe $m || die "no $m module"
    done
    wait_for 50 test -c /dev/vduse/control || die "no /dev/vduse/control"
    make_image || return 1
    qsd_start "$IMG"
}

step vduse-refused-without-module refuses_without_module
step vduse-setup setup
step vduse-geometry geometry
step vduse-write-pointer write_pointer
step vduse-fio-zbd fio_zbd
make_files
step vduse-btrfs-zoned btrfs_zoned
step vduse-restart-keeps-zones-and-files restart_keeps
step vduse-f2fs-conventional f2fs_conventional
step vduse-sigkill-keeps-flushed-writes sigkill_keeps_flushed
