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
no_disk() { [ -z "$(vd_disks)" ]; }
detach_hook() { vdpa dev del vduse0 || die "vdpa dev del failed"; }
attach_hook() {
    vdpa dev add name vduse0 mgmtdev vduse || die "vdpa dev add failed"
    disk_found vd_disks
}

# qsd_start: the daemon exporting the image as VDUSE device vduse0 (two
# queues), attached; leaves the disk's name in /tmp/disk.
qsd_start() {
    qsd_run type=vduse-blk,id=e0,node-name=n0,name=vduse0,writable=on,num-queues=2
    attach_hook
}

# qsd_stop: detach (vdpa dev del), then SIGTERM: the daemon destroys the
# device and exits.
qsd_stop() {
    detach_hook
    wait_for 100 no_disk || die "the virtio disk stayed after vdpa dev del"
    p=$(cat "$QSD_PID")
    kill -TERM "$p"
    wait_for 600 gone "$p" || die "the daemon did not exit after SIGTERM"
    cat /tmp/qsd.log
    [ ! -e /dev/vduse/vduse0 ] || die "/dev/vduse/vduse0 is left after the daemon exited"
}

refuses_without_module() {
    [ ! -e /dev/vduse/control ] || die "/dev/vduse/control exists before modprobe"
    qsd_refused type=vduse-blk,id=e0,node-name=n0,name=vduse0 \
        "vduse-blk: /dev/vduse/control: No such file or directory; load the vduse module"
}

setup() {
    for m in vduse vdpa virtio_vdpa virtio_blk btrfs f2fs; do
        modprobe $m || die "no $m module"
    done
    wait_for 50 test -c /dev/vduse/control || die "no /dev/vduse/control"
    make_image || return 1
    qsd_start
}

step vduse-refused-without-module refuses_without_module
step vduse-setup setup
zoned_disk_steps vduse \
    '{"type":"vduse-blk","id":"e0","node-name":"n0","name":"vduse0","writable":true,"num-queues":2}'
