# Our qemu-nbd with Linux's own NBD client (nbd.ko, through qemu-nbd -c):
# an ext4 file system made on a qcow2 image through /dev/nbd0 survives
# unmount, disconnect (qemu-nbd -d), a new qemu-nbd and e2fsck -n, data
# intact; a zoned qcow2 image served over NBD (a plain device to the
# client) takes writes at the write pointer and fails one off it with EIO.
# kernels: 6.12 6.1
# timeout: 240

IMG=/tmp/fs.qcow2
ZIMG=/tmp/zoned.qcow2
MKE2FS=/usr/sbin/mke2fs     # busybox's applets would come first in $PATH
E2FSCK=/usr/sbin/e2fsck

dev_size() { [ "$(cat /sys/block/$1/size)" != 0 ]; }
dev_free() { [ "$(cat /sys/block/$1/size)" = 0 ]; }
gone() { ! kill -0 "$(cat "$1")"; }

# nbd_connect DEV IMAGE PIDFILE [OPTIONS...]: qemu-nbd -c forks, and its
# parent returns once the kernel has the socket.
nbd_connect() {
    _dev=$1 _img=$2 _pid=$3
    shift 3
    $BUILD/qemu-nbd -c "/dev/$_dev" -f qcow2 --pid-file "$_pid" "$@" "$_img" ||
        die "qemu-nbd -c /dev/$_dev failed"
    wait_for 100 dev_size "$_dev" || die "/dev/$_dev has no size"
    echo "/dev/$_dev: $(cat /sys/block/$_dev/size) sectors"
}

# nbd_disconnect DEV PIDFILE: qemu-nbd -d, then the server must exit by
# itself (its only client, the kernel, has gone).
nbd_disconnect() {
    $BUILD/qemu-nbd -d "/dev/$1" || die "qemu-nbd -d failed"
    wait_for 100 gone "$2" || die "qemu-nbd did not exit after the disconnect"
    wait_for 50 dev_free "$1" || die "/dev/$1 still has a size"
}

setup() {
    modprobe nbd || die "no nbd module"
    modprobe ext4 || die "no ext4 module"
    [ -b /dev/nbd0 ] || die "no /dev/nbd0"
    mkdir -p /var/lock   # qemu-nbd -c's default socket directory
    $BUILD/qemu-img create -q -f qcow2 "$IMG" 128M
}

mkfs_and_write() {
    nbd_connect nbd0 "$IMG" /tmp/nbd0.pid
    $MKE2FS -q -t ext4 /dev/nbd0 || die "mke2fs failed"
    mount -t ext4 /dev/nbd0 /mnt || die "mount failed"
    dd if=/dev/urandom of=/mnt/random bs=1M count=16 2>/dev/null
    mkdir /mnt/dir
    for i in 1 2 3 4 5 6 7 8; do
        dd if=/dev/urandom of=/mnt/dir/file$i bs=4k count=$((i * 3)) 2>/dev/null
    done
    cp /usr/sbin/e2fsck /mnt/dir/
    (cd /mnt && md5sum random dir/*) > /tmp/sums
    umount /mnt || die "umount failed"
    nbd_disconnect nbd0 /tmp/nbd0.pid
    $BUILD/qemu-img check "$IMG"
}

fsck_and_verify() {
    nbd_connect nbd0 "$IMG" /tmp/nbd0.pid
    $E2FSCK -n -f /dev/nbd0 || die "e2fsck -n reports problems (exit $?)"
    mount -t ext4 -o ro /dev/nbd0 /mnt || die "mount failed"
    (cd /mnt && md5sum -c /tmp/sums) || die "data differ"
    umount /mnt
    nbd_disconnect nbd0 /tmp/nbd0.pid
}

# 8 MiB in 1 MiB sequential zones.  Writes at the write pointer land;
# one off it is refused by the server and is EIO for the client.
zoned_write_pointer() {
    $BUILD/qemu-img create -q -f qcow2 -o zone.mode=host-managed,zone.size=1M "$ZIMG" 8M
    $BUILD/qemu-nbd -v -c /dev/nbd1 -f qcow2 --pid-file /tmp/nbd1.pid "$ZIMG" \
        2>/tmp/nbd1.log &
    wait_for 100 dev_size nbd1 || die "/dev/nbd1 has no size"
    dd if=/dev/urandom of=/tmp/blocks bs=4k count=2 2>/dev/null
    dd if=/tmp/blocks of=/dev/nbd1 bs=4k count=2 oflag=direct ||
        die "a write at the write pointer failed"
    dd if=/tmp/blocks of=/dev/nbd1 bs=4k count=1 seek=2 oflag=direct ||
        die "a write at the moved write pointer failed"
    if dd if=/tmp/blocks of=/dev/nbd1 bs=4k count=1 seek=64 oflag=direct 2>/tmp/dd.err; then
        die "a write off the write pointer succeeded"
    fi
    cat /tmp/dd.err
    grep -q 'Input/output error' /tmp/dd.err || die "the write did not fail with EIO"
    dd if=/dev/nbd1 of=/tmp/back bs=4k count=2 iflag=direct 2>/dev/null
    cmp /tmp/blocks /tmp/back || die "data at the write pointer differ"
    nbd_disconnect nbd1 /tmp/nbd1.pid
    echo "server log:"
    cat /tmp/nbd1.log
    $BUILD/qemu-io -f qcow2 -c "zrp 0 2" "$ZIMG"
}

step nbd-setup setup
step nbd-mkfs-write-disconnect mkfs_and_write
step nbd-reconnect-fsck-data fsck_and_verify
step nbd-zoned-write-pointer zoned_write_pointer
