# host_device on zoned null_blk devices: our qemu-io against QEMU 10.0's,
# zone states against blkzone, BlockLimits in qemu-img info (also through a
# raw node), qemu-img convert between a zoned qcow2 image and the device,
# and ordered writes at queue depth 32.
# kernels: 6.12 6.1
# timeout: 480

ZS=64M
MIB=$((1024 * 1024))

# nullb_create NAME CONVENTIONAL MAX_OPEN MAX_ACTIVE: a 512 MiB zoned
# null_blk device of eight 64 MiB zones with 4 KiB blocks, memory backed.
nullb_create() {
    d=/sys/kernel/config/nullb/$1
    mkdir "$d" || return 1
    echo 512 > "$d/size"
    echo 4096 > "$d/blocksize"
    echo 1 > "$d/memory_backed"
    echo 1 > "$d/zoned"
    echo 64 > "$d/zone_size"
    echo "$2" > "$d/zone_nr_conv"
    echo "$3" > "$d/zone_max_open"
    echo "$4" > "$d/zone_max_active"
    echo 1 > "$d/power" || return 1
    i=0
    while [ ! -b "/dev/$1" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    [ -b "/dev/$1" ] || die "/dev/$1 did not appear"
}

setup() {
    modprobe null_blk nr_devices=0 || return 1
    nullb_create nullb0 0 0 0 &&     # sequential zones only, no limits
    nullb_create nullb1 2 0 0 &&     # two conventional zones first
    nullb_create nullb2 0 2 3 &&     # at most 2 open and 3 active zones
    for d in nullb0 nullb1 nullb2; do
        echo "$d: zoned=$(cat /sys/block/$d/queue/zoned) nr_zones=$(cat /sys/block/$d/queue/nr_zones)" \
             "chunk_sectors=$(cat /sys/block/$d/queue/chunk_sectors)" \
             "max_open=$(cat /sys/block/$d/queue/max_open_zones)" \
             "max_active=$(cat /sys/block/$d/queue/max_active_zones)" \
             "scheduler=$(cat /sys/block/$d/queue/scheduler)"
    done
}

# with_commands FILE PROGRAM ARGS...: runs PROGRAM ARGS with a "-c LINE"
# for each line of FILE but comments (qemu-io takes options after its
# file name too).
with_commands() {
    _f=$1
    shift
    while IFS= read -r _c; do
        case $_c in ''|'#'*) ;; *) set -- "$@" -c "$_c" ;; esac
    done < "$_f"
    "$@"
}

# Runs qemu-io (ours or QEMU 10.0's: $1 = ours|qemu10) with O_DIRECT on
# device $2, with the commands of file $3; stdout (timings cut) and stderr
# into file $4 apart, as the order in which the two streams interleave in
# a pipe is a matter of buffering.  QEMU 10.0's raw format does not pass
# zones through (ours does): both open the host_device node itself.
run_qemu_io() {
    _opts="driver=host_device,filename=$2,cache.direct=on"
    if [ "$1" = ours ]; then
        with_commands "$3" $BUILD/qemu-io --image-opts "$_opts" 2> "$4"
    else
        with_commands "$3" qemu10 qemu-io --image-opts "$_opts" 2> "$4"
    fi | sed -E 's/; [0-9:.]+ sec \(.*\)$/; (timing)/'
}

# One line per zone, "start wptr cond type" in sectors, from our zone
# report (zones_blkzone, in guest/lib.sh, gives blkzone's).
zones_qemu() {
    $BUILD/qemu-io -f raw -c "zrp 0 1000" "$1" |
        sed -nE 's/start: (0x[0-9a-f]+), len (0x[0-9a-f]+), cap (0x[0-9a-f]+), wptr (0x[0-9a-f]+), zcond:([0-9]+), \[type: ([0-9]+)\]/\1 \4 \5 \6/p' |
        while read -r s w c t; do
            [ "$t" = 1 ] && w=0 || w=$((w))
            echo "$((s)) $w $c $t"
        done
}

# Both qemu-io on the same commands, each on the device as blkzone
# reset it: identical transcripts (timings aside), identical zone states
# afterwards, and our report agreeing with blkzone's.
compare_with_qemu10() {
    dev=/dev/$1 cmds=/e2e/tests/host-device/$2.qemu-io
    blkzone reset "$dev" || return 1
    run_qemu_io ours "$dev" "$cmds" /tmp/ours.err > /tmp/ours.out
    zones_blkzone "$dev" > /tmp/ours.zones
    zones_qemu "$dev" > /tmp/ours.zrp
    blkzone reset "$dev" || return 1
    run_qemu_io qemu10 "$dev" "$cmds" /tmp/qemu10.err > /tmp/qemu10.out
    zones_blkzone "$dev" > /tmp/qemu10.zones
    cat /tmp/ours.out /tmp/ours.err
    [ "$(grep -c 'zcond' /tmp/ours.out)" -gt 0 ] || die "no zone report in the transcript"
    expect_same "transcripts (QEMU 10.0, ours)" /tmp/qemu10.out /tmp/ours.out &&
        expect_same "error messages (QEMU 10.0, ours)" /tmp/qemu10.err /tmp/ours.err &&
        expect_same "zone states after the runs (blkzone)" /tmp/qemu10.zones /tmp/ours.zones &&
        expect_same "zone states (blkzone, our zone report)" /tmp/ours.zones /tmp/ours.zrp
}

# qemu-img info's zoned section, as the device's sysfs says it must be
# (sorted: the human-readable dump follows QEMU's dictionary order).
expected_info() {
    q=/sys/block/$1/queue
    cat <<EOF | sort
    zoned:
        mode: $(cat $q/zoned)
        zone size: $(($(cat $q/chunk_sectors) * 512))
        zone capacity: $(($(cat $q/chunk_sectors) * 512))
        nr zones: $(cat $q/nr_zones)
        max open zones: $(cat $q/max_open_zones)
        max active zones: $(cat $q/max_active_zones)
        max append bytes: $(cat $q/zone_append_max_bytes)
        write granularity: $(cat $q/physical_block_size)
EOF
}

limits() {
    for d in nullb0 nullb1 nullb2; do
        expected_info $d > /tmp/want
        $BUILD/qemu-img info /dev/$d > /tmp/info || die "qemu-img info /dev/$d failed"
        cat /tmp/info
        sed -n '/^Format specific information:/,$p' /tmp/info | sed 1d | sort > /tmp/got
        expect_same "zoned limits of /dev/$d (sysfs, qemu-img info)" /tmp/want /tmp/got || return 1
        # The same through an explicit raw node over host_device.
        $BUILD/qemu-img info --image-opts \
            "driver=raw,file.driver=host_device,file.filename=/dev/$d" > /tmp/info2 ||
            die "qemu-img info --image-opts raw over /dev/$d failed"
        sed -n '/^Format specific information:/,$p' /tmp/info2 | sed 1d | sort > /tmp/got2
        expect_same "zoned limits through raw (/dev/$d)" /tmp/want /tmp/got2 || return 1
        $BUILD/qemu-img info --output=json /dev/$d | grep -q '"nr-zones": 8' ||
            die "JSON info of /dev/$d lacks nr-zones"
    done
    # A raw window (offset) must not pass zones through.
    $BUILD/qemu-io -c "zrp 0 1" --image-opts \
        "driver=raw,offset=64M,file.driver=host_device,file.filename=/dev/nullb0" > /tmp/win 2>&1
    cat /tmp/win
    grep -q "zone report failed: Operation not supported" /tmp/win ||
        die "a raw node with an offset forwarded zones"
}

# Zoned qcow2 images with nullb1's geometry: 8 x 64 MiB, 2 conventional.
ZOPTS="zone.mode=host-managed,zone.size=64M,zone.capacity=64M,zone.conventional_zones=2,zone.max_append_bytes=1M"

# What convert_roundtrip writes, read back with patterns: qemu-io's
# options and the image as arguments.
read_patterns() {
    $BUILD/qemu-io -c "read -q -P 0x11 0 1M" -c "read -q -P 0 1M 1M" -c "read -q -P 0x12 65M 4k" \
        -c "read -q -P 0x21 128M 3M" -c "read -q -P 0x31 192M 1M" -c "read -q -P 0x41 256M 64k" \
        -c "read -q -P 0x61 384M 2M" -c "read -q -P 0x62 386M 4k" "$@" > /tmp/reads 2>&1
    cat /tmp/reads
    ! grep -q "verification failed" /tmp/reads
}

convert_roundtrip() {
    img=/tmp/src.qcow2
    $BUILD/qemu-img create -q -f qcow2 -o "$ZOPTS" $img 512M || return 1
    # Data in every kind of zone and zone condition.
    $BUILD/qemu-io -f qcow2 \
        -c "write -P 0x11 0 1M" -c "write -P 0x12 65M 4k" \
        -c "write -P 0x21 128M 3M" \
        -c "write -P 0x31 192M 1M" -c "zc 192M 64M" \
        -c "write -P 0x41 256M 64k" -c "zf 256M 64M" \
        -c "zo 320M 64M" \
        -c "write -P 0x61 384M 2M" -c "write -P 0x62 386M 4k" \
        $img > /dev/null || die "writing the source image failed"
    # Leave something on the device that must go.
    blkzone reset /dev/nullb1
    $BUILD/qemu-io -f raw -t none -c "write -P 0x99 448M 1M" -c "write -P 0x98 128M 8M" /dev/nullb1 > /dev/null

    $BUILD/qemu-img convert -n -f qcow2 -O raw -t none $img /dev/nullb1 || die "convert to the device failed"
    $BUILD/qemu-io -f qcow2 -c "zrp 0 8" $img > /tmp/src.zrp
    $BUILD/qemu-io -f raw -c "zrp 0 8" /dev/nullb1 > /tmp/dev.zrp
    cat /tmp/dev.zrp
    # Conventional zones have no write pointer to compare.
    grep -v 'type: 1' /tmp/src.zrp > /tmp/a; grep -v 'type: 1' /tmp/dev.zrp > /tmp/b
    expect_same "zone reports (qcow2 source, device)" /tmp/a /tmp/b || return 1
    zones_blkzone /dev/nullb1 > /tmp/bz; zones_qemu /dev/nullb1 > /tmp/qz
    expect_same "zone states (blkzone, our zone report)" /tmp/bz /tmp/qz || return 1
    # Beyond a write pointer the data is the device's business (null_blk
    # reads 0xff there, qcow2 zeroes): the written data must be there.
    read_patterns -f raw -t none /dev/nullb1 || die "data differs after convert"

    back=/tmp/back.qcow2
    $BUILD/qemu-img create -q -f qcow2 -o "$ZOPTS" $back 512M || return 1
    $BUILD/qemu-img convert -n -f raw -O qcow2 /dev/nullb1 $back || die "convert from the device failed"
    $BUILD/qemu-io -f qcow2 -c "zrp 0 8" $back > /tmp/back.zrp
    grep -v 'type: 1' /tmp/back.zrp > /tmp/c
    expect_same "zone reports (qcow2 source, qcow2 copied back)" /tmp/a /tmp/c || return 1
    read_patterns -f qcow2 $back || die "data differs after the way back"
}

convert_refusals() {
    $BUILD/qemu-io -f raw -c "zrp 0 8" /dev/nullb1 > /tmp/before
    $BUILD/qemu-img create -q -f qcow2 \
        -o "zone.mode=host-managed,zone.size=32M,zone.capacity=32M,zone.conventional_zones=4,zone.max_append_bytes=1M" \
        /tmp/other.qcow2 512M || return 1
    $BUILD/qemu-img convert -n -f qcow2 -O raw /tmp/other.qcow2 /dev/nullb1 > /tmp/err 2>&1 &&
        die "convert between different zone geometries succeeded"
    cat /tmp/err
    grep -q "^qemu-img: /dev/nullb1: Cannot carry the zone state over: the zone layout differs from that of '/tmp/other.qcow2'" /tmp/err ||
        die "unexpected message"
    $BUILD/qemu-img create -q -f qcow2 -o "$ZOPTS" /tmp/offline.qcow2 512M || return 1
    $BUILD/qemu-io -f qcow2 -c "write -P 0x71 192M 64k" -c "zoff 256M 64M" /tmp/offline.qcow2 > /dev/null ||
        return 1
    $BUILD/qemu-img convert -n -f qcow2 -O raw /tmp/offline.qcow2 /dev/nullb1 > /tmp/err 2>&1 &&
        die "convert from an image with an offline zone succeeded"
    cat /tmp/err
    grep -q "^qemu-img: /tmp/offline.qcow2: Cannot convert: zone 4 is offline, its data cannot be read" /tmp/err ||
        die "unexpected message"
    $BUILD/qemu-io -f raw -c "zrp 0 8" /dev/nullb1 > /tmp/after
    expect_same "zones of the refused target (before, after)" /tmp/before /tmp/after
}

# 32 writes in flight into one zone, each 4 KiB with its own pattern: all
# must land in order (a reordered write fails on a sequential zone) and
# read back as written.  Then 2048 writes at depth 32 with qemu-img bench.
# host_device keeps a zone's writes in order itself (one at a time per
# zone, as QEMU), so this holds with any I/O scheduler: Linux 6.12 orders
# zoned writes by zone write plugging, 6.1 only under mq-deadline (null_blk's
# default there, yet it takes none too); the step runs with the default
# scheduler and with none.
# qemu-io commands: $1 ("aio_write", "read") of the i-th 4 KiB block with
# pattern i + 1, for the first 32 blocks.
block_commands() {
    i=0
    while [ $i -lt 32 ]; do
        echo "$1 -q -P $((i + 1)) $((i * 4096)) 4k"
        i=$((i + 1))
    done
}

ordered_qd32_with() {
    dev=/dev/nullb0
    if ! echo "$1" > /sys/block/nullb0/queue/scheduler 2>/dev/null; then
        die "the kernel refuses the $1 scheduler for $dev"
    fi
    echo "scheduler: $(cat /sys/block/nullb0/queue/scheduler)"
    blkzone reset $dev || return 1
    block_commands aio_write > /tmp/writes
    echo aio_flush >> /tmp/writes
    with_commands /tmp/writes $BUILD/qemu-io -t none -f raw $dev || die "aio writes failed"
    block_commands read > /tmp/reads.cmd
    with_commands /tmp/reads.cmd $BUILD/qemu-io -t none -f raw $dev > /tmp/reads 2>&1
    cat /tmp/reads
    ! grep -q "Pattern verification failed" /tmp/reads || die "data out of order"
    $BUILD/qemu-io -f raw -c "zrp 0 1" $dev | grep -q "wptr 0x100," || die "write pointer not at 128 KiB"
    $BUILD/qemu-img bench -w -t none -f raw -c 2048 -d 32 -s 4k -o 64M --pattern=0x5a $dev ||
        die "qemu-img bench at depth 32 failed"
    $BUILD/qemu-io -f raw -c "zrp 64M 1" $dev | tee /tmp/z1
    grep -q "wptr 0x24000," /tmp/z1 || die "write pointer not at 64 MiB + 8 MiB"
    $BUILD/qemu-io -t none -f raw -c "read -q -P 0x5a 64M 8M" $dev > /tmp/r 2>&1
    cat /tmp/r
    ! grep -q "verification failed" /tmp/r || die "bench data differs"
}

ordered_qd32() {
    default=$(sed 's/.*\[\(.*\)\].*/\1/' /sys/block/nullb0/queue/scheduler)
    ordered_qd32_with "$default" && ordered_qd32_with none
}

step setup setup
step limits-in-qemu-img-info limits
step qemu-io-vs-qemu10-sequential compare_with_qemu10 nullb0 sequential
step qemu-io-vs-qemu10-conventional compare_with_qemu10 nullb1 conventional
step qemu-io-vs-qemu10-open-limits compare_with_qemu10 nullb2 limits
step convert-qcow2-device-roundtrip convert_roundtrip
step convert-refusals convert_refusals
step ordered-writes-qd32 ordered_qd32
