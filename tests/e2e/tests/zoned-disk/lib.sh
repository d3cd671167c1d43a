# Helpers of the tests that put a zoned qcow2 image in front of the
# guest's kernel through our daemon (ublk.sh, vduse.sh): each test defines
# qsd_start IMAGE (daemon up, disk name in /tmp/disk) and qsd_stop (daemon
# gone, disk removed) for its transport, then runs the steps below on
# /dev/$(cat /tmp/disk).  See docs/devel/testing-e2e.rst.

IMG=/tmp/zoned.qcow2
ZS=$((16 * 1024 * 1024))
QSD_PID=/tmp/qsd.pid
DD=/usr/bin/dd   # coreutils: oflag=dsync

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

gone() { ! kill -0 "$1"; }

# qmp COMMAND-JSON...: the replies of the commands, one line each, after
# the greeting and qmp_capabilities (bash for /dev/tcp).
qmp() {
    /usr/bin/bash -c '
        exec 3<>/dev/tcp/127.0.0.1/4444 || exit 1
        read -r greeting <&3
        echo "{\"execute\":\"qmp_capabilities\"}" >&3
        read -r caps <&3
        for c in "$@"; do echo "$c" >&3; read -r reply <&3; echo "$reply"; done
    ' qmp "$@"
}

# zones_blkzone DEV, zones_image IMAGE: one line per zone, "start wptr
# cond type" in sectors (conventional zones: wptr 0), from blkzone (whose
# wptr is relative to the zone start) and from our zone report of the
# image (taken while no daemon has it open).
zones_blkzone() {
    blkzone report "$1" | sed -nE 's/.*start: (0x[0-9a-f]+), len (0x[0-9a-f]+), cap (0x[0-9a-f]+), wptr (0x[0-9a-f]+) .*zcond: *([0-9]+).*type: *([0-9]+).*/\1 \4 \5 \6/p' |
        while read -r s w c t; do
            [ "$t" = 1 ] && w=0 || w=$((s + w))
            echo "$((s)) $w $c $t"
        done
}

zones_image() {
    $BUILD/qemu-io -f qcow2 -r -c "zrp 0 10000" "$1" |
        sed -nE 's/start: (0x[0-9a-f]+), len (0x[0-9a-f]+), cap (0x[0-9a-f]+), wptr (0x[0-9a-f]+), zcond:([0-9]+), \[type: ([0-9]+)\]/\1 \4 \5 \6/p' |
        while read -r s w c t; do
            [ "$t" = 1 ] && w=0 || w=$((w))
            echo "$((s)) $w $c $t"
        done
}

# make_image: 32 zones of 16 MiB, the first 4 conventional.
make_image() {
    $BUILD/qemu-img create -q -f qcow2 -o zone.mode=host-managed,zone.size=16M \
        -o zone.conventional_zones=4,zone.max_append_bytes=256K "$IMG" 512M
}

# geometry: the disk is host-managed with the image's zones and limits.
geometry() {
    d=$(cat /tmp/disk)
    q=/sys/block/$d/queue
    for f in zoned chunk_sectors nr_zones max_open_zones max_active_zones zone_append_max_bytes \
             logical_block_size max_hw_sectors_kb write_cache fua; do
        echo "$f: $(cat $q/$f)"
    done
    lsblk -z "/dev/$d"
    [ "$(lsblk -n -d -o ZONED "/dev/$d" | tr -d ' ')" = host-managed ] || die "lsblk: not host-managed"
    [ "$(cat $q/chunk_sectors)" = $((ZS / 512)) ] || die "zone size"
    [ "$(cat $q/nr_zones)" = 32 ] || die "number of zones"
    [ "$(cat $q/zone_append_max_bytes)" = 262144 ] || die "zone append limit"
    [ "$(cat /sys/block/$d/size)" = $((512 * 2048)) ] || die "capacity"
}

fio_zbd() {
    d=/dev/$(cat /tmp/disk)
    blkzone reset "$d" || return 1
    for depth in 1 8; do
        fio --name=zbd$depth --filename="$d" --direct=1 --zonemode=zbd --ioengine=libaio \
            --iodepth=$depth --rw=write --bs=64k --offset=$((4 * ZS)) --size=$((4 * ZS)) \
            --verify=crc32c --do_verify=1 --verify_fatal=1 --output-format=terse --minimal \
            > /tmp/fio.out 2> /tmp/fio.err || { cat /tmp/fio.out /tmp/fio.err; die "fio at depth $depth"; }
        echo "fio depth $depth: $(cut -d';' -f3,5,6 /tmp/fio.out) (name;errors;read KiB)"
        blkzone reset -o $((4 * ZS / 512)) -l $((4 * ZS / 512)) "$d" || return 1
    done
}

# The zone rules through the kernel: a write at the write pointer
# succeeds, one off it fails with EIO and leaves the zone as it was, and
# writing on at the write pointer still works once the kernel has re-read
# the zone after the error (its zone write plug does that in a work item;
# a write issued at once failed in one run, see docs/devel/ublk.rst).
write_pointer() {
    d=/dev/$(cat /tmp/disk)
    z=$((10 * ZS))
    blkzone reset -o $((z / 512)) -c 1 "$d" || return 1
    dd if=/dev/urandom of="$d" bs=4k count=4 seek=$((z / 4096)) oflag=direct 2> /tmp/dd.err ||
        { cat /tmp/dd.err /tmp/qsd.log; die "a write at the write pointer failed"; }
    if dd if=/dev/zero of="$d" bs=4k count=1 seek=$(((z + 32768) / 4096)) oflag=direct 2> /tmp/dd.err; then
        die "a write off the write pointer succeeded"
    fi
    grep -q "Input/output error" /tmp/dd.err || { cat /tmp/dd.err; die "not EIO"; }
    blkzone report -o $((z / 512)) -c 1 "$d"
    blkzone report -o $((z / 512)) -c 1 "$d" | grep -q "wptr 0x000020 " || die "wrong write pointer"
    sleep 1
    dd if=/dev/urandom of="$d" bs=4k count=4 seek=$(((z + 16384) / 4096)) oflag=direct 2> /tmp/dd.err ||
        { cat /tmp/dd.err /tmp/qsd.log; dmesg | tail -5; die "writing on at the write pointer failed"; }
    blkzone report -o $((z / 512)) -c 1 "$d" | grep -q "wptr 0x000040 " || die "wrong write pointer"
}

make_files() {
    dd if=/dev/urandom of=/tmp/f1 bs=1M count=6 2>/dev/null
    dd if=/dev/urandom of=/tmp/f2 bs=64k count=5 2>/dev/null
    mkdir -p /tmp/tree && cp /tmp/f1 /tmp/f2 /tmp/tree/ && cp -r /e2e/tests /tmp/tree/
    (cd /tmp/tree && find . -type f | sort | xargs md5sum) > /tmp/tree.md5
}

check_files() {
    (cd /mnt && md5sum -c /tmp/tree.md5 > /tmp/md5.out) || { cat /tmp/md5.out; die "files differ"; }
    echo "$(wc -l < /tmp/md5.out) files intact"
}

btrfs_zoned() {
    d=/dev/$(cat /tmp/disk)
    blkzone reset "$d" || return 1
    mkfs.btrfs -q -f -O zoned "$d" || die "mkfs.btrfs -O zoned failed"
    mount -t btrfs "$d" /mnt || die "mount failed"
    cp -r /tmp/tree/. /mnt/ && sync
    check_files
    umount /mnt || die "umount failed"
}

# Open zones as the image has them after the daemon closed it: closed.
closed() { awk '{ if ($3 == 2 || $3 == 3) $3 = 4; print }'; }

# The daemon restarts (SIGTERM, then again): zones and the file system
# stay; blkzone's report through ublk equals our report of the image,
# taken while no daemon runs.
restart_keeps() {
    zones_blkzone "/dev/$(cat /tmp/disk)" | closed > /tmp/zones.before
    qsd_stop
    zones_image "$IMG" > /tmp/zones.image
    qsd_start "$IMG"
    zones_blkzone "/dev/$(cat /tmp/disk)" > /tmp/zones.after
    cat /tmp/zones.image
    expect_same "zone states (blkzone before the restart, our report of the image)" \
        /tmp/zones.before /tmp/zones.image &&
        expect_same "zone states (our report of the image, blkzone after the restart)" \
            /tmp/zones.image /tmp/zones.after || return 1
    mount -t btrfs "/dev/$(cat /tmp/disk)" /mnt || die "mount after the restart failed"
    check_files
    umount /mnt
}

f2fs_conventional() {
    d=/dev/$(cat /tmp/disk)
    blkzone reset "$d" || return 1
    mkfs.f2fs -q -f -m "$d" || die "mkfs.f2fs -m failed"
    mount -t f2fs "$d" /mnt || die "mount failed"
    cp -r /tmp/tree/. /mnt/ && sync
    check_files
    umount /mnt || die "umount failed"
    qsd_stop
    qsd_start "$IMG"
    mount -t f2fs "/dev/$(cat /tmp/disk)" /mnt || die "mount after the restart failed"
    check_files
    umount /mnt
}

# Writes of 64 KiB with O_DSYNC into zones 16-19, one dd each, while the
# daemon is killed: every write that completed is in the image.  (Through
# VDUSE the write in flight never completes once the daemon is gone: its
# dd is left behind, not waited for.)
sigkill_keeps_flushed() {
    d=/dev/$(cat /tmp/disk)
    blkzone reset "$d" || return 1
    dd if=/dev/urandom of=/tmp/pattern bs=64k count=1024 2>/dev/null
    echo 0 > /tmp/done
    (
        i=0
        while [ $i -lt 1024 ] &&
            $DD if=/tmp/pattern of="$d" bs=64k count=1 skip=$i seek=$((16 * ZS / 65536 + i)) \
                oflag=direct,dsync 2>/dev/null; do
            i=$((i + 1))
            echo $i > /tmp/done
        done
    ) &
    sleep 3
    kill -KILL "$(cat "$QSD_PID")"
    wait_for 100 gone "$(cat "$QSD_PID")" || die "the daemon survived SIGKILL"
    n=$(cat /tmp/done)
    [ "$n" -gt 0 ] || die "no write completed before the kill"
    echo "at least $n of 1024 writes completed before the kill"
    $BUILD/qemu-img convert -f qcow2 -O raw "$IMG" /tmp/image.raw || die "convert failed"
    cmp -n $((n * 65536)) /tmp/pattern /tmp/image.raw 0 $((16 * ZS)) ||
        die "a completed write is missing from the image"
    rm -f /tmp/image.raw
    # The write pointers of zones 16-19 cover the completed writes.
    written=$(zones_image "$IMG" |
              awk -v s=$((16 * ZS / 512)) -v e=$((20 * ZS / 512)) '$1 >= s && $1 < e {t += $2 - $1} END {print t}')
    echo "zones 16-19 hold $written sectors"
    [ "$written" -ge $((n * 128)) ] || die "the write pointers lost completed writes"
}
