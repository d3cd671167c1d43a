# Helpers of the tests that put a zoned qcow2 image in front of the
# guest's kernel through our daemon (ublk.sh, vduse.sh): each test defines
# qsd_start (daemon up, disk name in /tmp/disk) and qsd_stop (daemon
# gone, disk removed) for its transport, then runs the steps below on
# /dev/$(cat /tmp/disk).  See docs/devel/testing-e2e.rst.

IMG=/tmp/zoned.qcow2
ZS=$((16 * 1024 * 1024))
QSD_PID=/tmp/qsd.pid
DD=/usr/bin/dd   # coreutils: oflag=dsync

gone() { ! kill -0 "$1"; }

# qmp COMMAND-JSON...: the replies of the commands, one line each, after
# the greeting and qmp_capabilities, events left out (bash for /dev/tcp).
qmp() {
    /usr/bin/bash -c '
        exec 3<>/dev/tcp/127.0.0.1/4444 || exit 1
        read -r greeting <&3
        echo "{\"execute\":\"qmp_capabilities\"}" >&3
        read -r caps <&3
        for c in "$@"; do
            echo "$c" >&3
            # Events (BLOCK_EXPORT_DELETED) may come first.
            while read -r reply <&3; do
                case $reply in "{\"return\""*|"{\"error\""*) break ;; esac
            done
            echo "$reply"
        done
    ' qmp "$@" | tr -d '\r'   # QMP ends its lines with CR LF
}

# zones_image IMAGE: our zone report of the image (taken while no daemon
# has it open) in the lines of zones_blkzone (guest/lib.sh).
zones_image() {
    $BUILD/qemu-io -f qcow2 -r -c "zrp 0 10000" "$1" |
        sed -nE 's/start: (0x[0-9a-f]+), len (0x[0-9a-f]+), cap (0x[0-9a-f]+), wptr (0x[0-9a-f]+), zcond:([0-9]+), \[type: ([0-9]+)\]/\1 \4 \5 \6/p' |
        while read -r s w c t; do
            [ "$t" = 1 ] && w=0 || w=$((w))
            echo "$((s)) $w $c $t"
        done
}

# qsd_run EXPORT: the daemon in the background on $IMG with the --export
# EXPORT and a QMP monitor on TCP port 4444; returns once it has written
# its pid file, which it does after its exports are up.
qsd_run() {
    rm -f "$QSD_PID"
    $BUILD/qemu-storage-daemon \
        --blockdev driver=file,node-name=f0,filename="$IMG",cache.direct=off \
        --blockdev driver=qcow2,node-name=n0,file=f0 \
        --export "$1" \
        --chardev socket,id=m0,host=127.0.0.1,port=4444,server=on,wait=off \
        --monitor chardev=m0 --pidfile "$QSD_PID" > /tmp/qsd.log 2>&1 &
    wait_for 300 test -s "$QSD_PID" || { cat /tmp/qsd.log; die "the daemon did not start"; }
}

has_disk() { [ -n "$($1)" ]; }

# disk_found LISTER: waits until the function LISTER names a disk, which
# must be the only one, and its device node; records it in /tmp/disk.
disk_found() {
    wait_for 300 has_disk "$1" || { cat /tmp/qsd.log; die "no disk appeared"; }
    d=$($1)
    [ "$(echo "$d" | wc -w)" = 1 ] || die "expected one disk, have: $d"
    wait_for 100 test -b "/dev/$d" || die "/dev/$d did not appear"
    echo "$d" > /tmp/disk
    echo "daemon $(cat "$QSD_PID") serves /dev/$d"
}

# qsd_refused EXPORT MESSAGE: the daemon refuses --export EXPORT with
# "qemu-storage-daemon: --export EXPORT: MESSAGE".
qsd_refused() {
    [ -f /tmp/plain.qcow2 ] || $BUILD/qemu-img create -q -f qcow2 /tmp/plain.qcow2 64M || return 1
    if $BUILD/qemu-storage-daemon --blockdev driver=file,node-name=f0,filename=/tmp/plain.qcow2 \
           --blockdev driver=qcow2,node-name=n0,file=f0 --export "$1" 2> /tmp/err; then
        die "the daemon accepted --export $1"
    fi
    cat /tmp/err
    grep -qxF "qemu-storage-daemon: --export $1: $2" /tmp/err || die "not the expected message"
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
# after a zone report writing goes on at the write pointer.  (After a
# failed write Linux 6.12 fails every write to the zone until a report,
# reset or finish updates its write pointer, on null_blk too.)
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

# fs_check TYPE: the file system on the disk holds the tree intact.
fs_check() {
    mount -t "$1" "/dev/$(cat /tmp/disk)" /mnt || die "mount -t $1 failed"
    (cd /mnt && md5sum -c /tmp/tree.md5 > /tmp/md5.out) || { cat /tmp/md5.out; die "files differ"; }
    echo "$(wc -l < /tmp/md5.out) files intact"
    umount /mnt || die "umount failed"
}

# fs_make TYPE MKFS...: MKFS on the reset disk, the tree copied in.
fs_make() {
    t=$1
    shift
    d=/dev/$(cat /tmp/disk)
    blkzone reset "$d" || return 1
    "$@" "$d" || die "$* failed"
    mount -t "$t" "$d" /mnt || die "mount -t $t failed"
    cp -r /tmp/tree/. /mnt/ && sync
    umount /mnt || die "umount failed"
}

btrfs_zoned() {
    fs_make btrfs mkfs.btrfs -q -f -O zoned && fs_check btrfs
}

# Open zones as the image has them after the daemon closed it: closed.
closed() { awk '{ if ($3 == 2 || $3 == 3) $3 = 4; print }'; }

# The daemon restarts (SIGTERM, then again): zones and the file system
# stay; blkzone's report through the transport equals our report of the
# image, taken while no daemon runs.
restart_keeps() {
    zones_blkzone "/dev/$(cat /tmp/disk)" | closed > /tmp/zones.before
    qsd_stop
    zones_image "$IMG" > /tmp/zones.image
    qsd_start
    zones_blkzone "/dev/$(cat /tmp/disk)" > /tmp/zones.after
    cat /tmp/zones.image
    expect_same "zone states (blkzone before the restart, our report of the image)" \
        /tmp/zones.before /tmp/zones.image &&
        expect_same "zone states (our report of the image, blkzone after the restart)" \
            /tmp/zones.image /tmp/zones.after &&
        fs_check btrfs
}

# export_del_add EXPORT-JSON: block-export-del removes the disk (the
# test's detach hook first), block-export-add brings it back (then its
# attach hook) with the data: the btrfs files.
export_del_add() {
    detach_hook
    r=$(qmp '{"execute":"block-export-del","arguments":{"id":"e0"}}')
    echo "$r"
    [ "$r" = '{"return": {}}' ] || die "block-export-del failed"
    wait_for 100 no_disk || die "the disk stayed after block-export-del"
    r=$(qmp "{\"execute\":\"block-export-add\",\"arguments\":$1}")
    echo "$r"
    [ "$r" = '{"return": {}}' ] || die "block-export-add failed"
    attach_hook
    fs_check btrfs
}

# f2fs keeps its metadata in the conventional zones (mkfs.f2fs -m).
f2fs_conventional() {
    fs_make f2fs mkfs.f2fs -q -f -m && fs_check f2fs || return 1
    qsd_stop
    qsd_start
    fs_check f2fs
}

# writes_done N: the writer below has completed N writes.
writes_done() { [ "$(cat /tmp/done)" -ge "$1" ]; }

# Writes of 64 KiB with O_DSYNC into zones 16-19, one dd each, while the
# daemon is killed: every write that completed is in the image.  (Through
# VDUSE the write in flight never completes once the daemon is gone: its
# dd is left behind, not waited for.)  conv=nocreat: once the daemon is
# dead the kernel may delete the disk (ublk does), and a dd started after
# that would otherwise create a regular file of that name in /dev and
# "complete" a write that no disk ever saw.
sigkill_keeps_flushed() {
    d=/dev/$(cat /tmp/disk)
    blkzone reset "$d" || return 1
    dd if=/dev/urandom of=/tmp/pattern bs=64k count=1024 2>/dev/null
    echo 0 > /tmp/done
    (
        i=0
        while [ $i -lt 1024 ] &&
            $DD if=/tmp/pattern of="$d" bs=64k count=1 skip=$i seek=$((16 * ZS / 65536 + i)) \
                oflag=direct,dsync conv=nocreat 2>/dev/null; do
            i=$((i + 1))
            echo $i > /tmp/done.new && mv /tmp/done.new /tmp/done   # never read half-written
        done
    ) &
    # Killed in the middle of the run: after the 8th write, before the end.
    wait_for 3000 writes_done 8 || die "the writes do not progress"
    kill -KILL "$(cat "$QSD_PID")"
    wait_for 100 gone "$(cat "$QSD_PID")" || die "the daemon survived SIGKILL"
    n=$(cat /tmp/done)
    [ ! -f "$d" ] || die "$d became a regular file: a write went there, not to the disk"
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

# zoned_disk_steps NAME EXPORT-JSON: the steps, named NAME-..., after the
# test's own refusal and setup steps; EXPORT-JSON is the export for
# block-export-add.  The test defines the geometry step's function as
# NAME_geometry if it checks more than geometry() does.
zoned_disk_steps() {
    g=geometry
    type "$1_geometry" > /dev/null 2>&1 && g=$1_geometry
    step "$1-geometry" $g
    step "$1-write-pointer" write_pointer
    step "$1-fio-zbd" fio_zbd
    make_files
    step "$1-btrfs-zoned" btrfs_zoned
    step "$1-restart-keeps-zones-and-files" restart_keeps
    step "$1-block-export-del-add" export_del_add "$2"
    step "$1-f2fs-conventional" f2fs_conventional
    step "$1-sigkill-keeps-flushed-writes" sigkill_keeps_flushed
}
