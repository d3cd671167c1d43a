# Our NVMe/TCP export (qemu-storage-daemon on the host, tests/nvme-tcp.host)
# with Linux's own NVMe/TCP host driver and nvme-cli, through -nic user
# (the host's 127.0.0.1 is 10.0.2.2).  Four exports: z (zoned, 64 MiB zones
# of 62 MiB capacity: fio and btrfs), l (zoned, 4 MiB zones of 3 MiB, at
# most 2 open and 3 active, 64-byte zone descriptor extensions, zone 14
# read-only and 15 offline: the errors), k (zoned: writes cut by SIGKILL),
# p (plain).
# Boot 1: discover, connect, list, the ZNS identify values against the
# images' geometry, zone reports (nvme-cli, blkzone and, once the daemon
# has stopped, our qemu-io on the host: all equal), fio zbd write+verify,
# btrfs -O zoned, every ZNS error the kernel can meet, then SIGTERM.
# Boot 2: the daemon restarted on the same images: zones and files as they
# were; SIGKILL during writes, restart, reconnect: flushed writes intact,
# write pointers at least where the last flush left them, no zone open.
# kernels: 6.12 6.1
# timeout: 900
# boots: 2

S=/ctl/guest            # kept between the boots (on the host, with the logs)
KVER=$(uname -r)
MIB=1048576

# wait_for COUNT COMMAND...: retries COMMAND every 0.1 s, COUNT times.
wait_for() {
    local _n=$1
    shift
    while ! "$@" 2>/dev/null; do
        _n=$((_n - 1))
        [ $_n -gt 0 ] || return 1
        sleep 0.1
    done
}

# The port and NQN of export $1 (z, l, k, p), from the host's "start".
port_of() { awk -v n="$1" '$2 == n {print $3}' $S/ports; }
nqn_of() { awk -v n="$1" '$2 == n {print $4}' $S/ports; }

# The block device (nvmeXnY) and controller (nvmeX) of the NQN $1.  With
# native multipath the disk is the subsystem's head node, else the
# controller's; the directory above it has the subsystem NQN either way.
ns_dev() {
    local _d _p
    for _d in /sys/block/nvme*n*; do
        [ -e "$_d" ] || continue
        case ${_d##*/} in nvme*c*n*) continue ;; esac
        _p=$(readlink -f "$_d")
        if [ "$(cat "${_p%/*}/subsysnqn" 2>/dev/null)" = "$1" ]; then
            echo "${_d##*/}"
            return 0
        fi
    done
    return 1
}
ctrl_dev() {
    local _c
    for _c in /sys/class/nvme/nvme*; do
        if [ "$(cat "$_c/subsysnqn" 2>/dev/null)" = "$1" ]; then
            echo "${_c##*/}"
            return 0
        fi
    done
    return 1
}
has_ns() { ns_dev "$1" > /dev/null; }

# dev NAME: /dev/nvmeXnY of export NAME; when it is not connected, a path
# that cannot exist or be created, so that whatever uses it fails.
dev() {
    local _n
    _n=$(ns_dev "$(nqn_of "$1")") || { echo "/nonexistent/no-namespace-for-$1"; return 1; }
    echo "/dev/$_n"
}

# connect NAME: nvme connect, then waits for the namespace's disk.  k gives
# up quickly when its target dies (the SIGKILL case: pending I/O fails and
# the controller goes instead of reconnecting with the old requests).
connect() {
    local _nqn _extra=""
    _nqn=$(nqn_of "$1")
    [ "$1" = k ] && _extra="--ctrl-loss-tmo=3 --reconnect-delay=1"
    # shellcheck disable=SC2086
    nvme connect -t tcp -a 10.0.2.2 -s "$(port_of "$1")" -n "$_nqn" \
        --hostnqn="$(cat /etc/nvme/hostnqn)" --hostid="$(cat /etc/nvme/hostid)" $_extra ||
        die "nvme connect to $_nqn failed"
    wait_for 200 has_ns "$_nqn" || die "no namespace appeared for $_nqn"
    echo "$1: $_nqn -> $(dev "$1") ($(ctrl_dev "$_nqn"))"
}

# Modules and the host identity (kept for boot 2: the same host comes back).
# Linux 6.12 wants the host NQN's UUID to be the host ID.  Native multipath
# is off: the namespace is then a request-based disk whose scheduler can be
# set to mq-deadline, which 6.1 needs for zoned writes at depth > 1; and on
# 6.12 btrfs -O zoned fails its writes on the multipath head node (seen with
# Linux's own nvmet-tcp target over zoned null_blk too: "BTRFS error ...
# errs: wr 1" with no NVMe error), while it works on the plain disk.
nvme_modules() {
    modprobe nvme-core multipath=N || die "modprobe nvme-core failed"
    for m in nvme-fabrics nvme-tcp btrfs; do modprobe $m || die "modprobe $m failed"; done
    mkdir -p $S /etc/nvme
    if [ ! -f $S/hostid ]; then
        cat /proc/sys/kernel/random/uuid > $S/hostid
    fi
    cp $S/hostid /etc/nvme/hostid
    echo "nqn.2014-08.org.nvmexpress:uuid:$(cat $S/hostid)" > /etc/nvme/hostnqn
    echo "multipath: $(cat /sys/module/nvme_core/parameters/multipath)"
}

start_daemon() {
    host start > /tmp/start.out
    _rc=$?
    cat /tmp/start.out
    [ $_rc = 0 ] || die "the host could not start qemu-storage-daemon"
    grep '^port ' /tmp/start.out > $S/ports
}

setup() {
    nvme_modules
    host create || die "the host could not create the images"
    start_daemon
}

discover() {
    for n in z l k p; do
        nvme discover -t tcp -a 10.0.2.2 -s "$(port_of $n)" > /tmp/disc.$n 2>&1
        _rc=$?
        cat /tmp/disc.$n
        [ $_rc = 0 ] || die "nvme discover on port $(port_of $n) failed"
        grep -q "subnqn: *$(nqn_of $n)\$" /tmp/disc.$n || die "discovery does not list $(nqn_of $n)"
    done
}

connect_all() {
    for n in z l k p; do connect $n; done
    lsblk
}

list() {
    nvme list > /tmp/list || die "nvme list failed"
    cat /tmp/list
    for n in z l k p; do
        grep -q "^$(dev $n) " /tmp/list || die "nvme list does not show $(dev $n)"
    done
}

# field FILE NAME: the value of "NAME : VALUE" in nvme-cli's output.
field() { sed -n "s/^$2 *: *\\([^ ]*\\).*/\\1/p" "$1" | head -1; }

# lba_size NAME: the namespace's logical block size in bytes.
lba_size() {
    nvme id-ns "$(dev "$1")" > /tmp/idns.$1 || return 1
    _ds=$(sed -n 's/^lbaf *[0-9]* *:.*lbads:\([0-9]*\).*(in use).*/\1/p' /tmp/idns.$1)
    echo $((1 << _ds))
}

# expect WHAT GOT WANTED
expect() {
    if [ "$2" != "$3" ]; then
        echo "error: $1 is '$2', expected '$3'"
        return 1
    fi
    echo "$1 = $2"
}

# ZASL = log2(the images' 64 KiB zone append limit / 4 KiB, CAP.MPSMIN)
zns_id_ctrl() {
    _c=/dev/$(ctrl_dev "$(nqn_of z)")
    nvme zns id-ctrl "$_c" > /tmp/zidctrl || die "nvme zns id-ctrl $_c failed"
    cat /tmp/zidctrl
    expect zasl "$(field /tmp/zidctrl zasl)" 4
}

# id_ns NAME SIZE ZONE_SIZE MAR MOR ZDES: nsze, zsze, mar, mor, zdes.
id_ns() {
    _l=$(lba_size "$1") || die "nvme id-ns $(dev "$1") failed"
    nvme zns id-ns "$(dev "$1")" > /tmp/zidns.$1 || die "nvme zns id-ns $(dev "$1") failed"
    sed "s/^/$1: /" /tmp/zidns.$1
    _bi=0
    expect "$1 lba size" "$_l" 512 || _bi=1
    expect "$1 nsze" "$(($(field /tmp/idns.$1 nsze)))" $(($2 / _l)) || _bi=1
    _lbafe=$(grep '(in use)' /tmp/zidns.$1 | sed -n 's/.*zsze:\(0x[0-9a-f]*\) zdes:\([0-9]*\).*/\1 \2/p')
    expect "$1 zsze" "$((${_lbafe% *}))" $(($3 / _l)) || _bi=1
    expect "$1 zdes" "${_lbafe#* }" "$6" || _bi=1
    expect "$1 mar" "$(field /tmp/zidns.$1 mar)" "$4" || _bi=1
    expect "$1 mor" "$(field /tmp/zidns.$1 mor)" "$5" || _bi=1
    expect "$1 zoc" "$(field /tmp/zidns.$1 zoc)" 0 || _bi=1
    [ $_bi = 0 ]
}

zns_id_ns() {
    _bad=0
    id_ns z $((1024 * MIB)) $((64 * MIB)) 0xffffffff 0xffffffff 0 || _bad=1
    id_ns l $((64 * MIB)) $((4 * MIB)) 0x2 0x1 1 || _bad=1
    id_ns k $((256 * MIB)) $((16 * MIB)) 0xffffffff 0xffffffff 0 || _bad=1
    for n in z l k p; do
        echo "$n: zoned=$(cat /sys/block/$(dev $n | cut -c6-)/queue/zoned)" \
             "nr_zones=$(cat /sys/block/$(dev $n | cut -c6-)/queue/nr_zones)"
    done
    expect "p zoned" "$(cat /sys/block/$(dev p | cut -c6-)/queue/zoned)" none || _bad=1
    if nvme zns id-ns "$(dev p)" > /tmp/zidns.p 2>&1; then
        cat /tmp/zidns.p
        echo "error: nvme zns id-ns succeeds on the plain namespace"
        _bad=1
    fi
    [ $_bad = 0 ]
}

# Zone lists, one line per zone: "start len cap wp cond" in 512-byte
# sectors, wp absolute; "-" for the write pointer of a zone whose write
# pointer has no meaning (full, read-only, offline).
norm() {
    while read -r _s _len _cap _wp _cond; do
        case $_cond in 1|2|3|4) _w=$((_wp)) ;; *) _w=- ;; esac
        echo "$((_s)) $((_len)) $((_cap)) $_w $_cond"
    done
}
zlist_blkzone() {
    blkzone report "$1" > /tmp/blkzone.out || return 1
    sed -nE 's/.*start: (0x[0-9a-f]+), len (0x[0-9a-f]+), cap (0x[0-9a-f]+), wptr (0x[0-9a-f]+) .*zcond: *([0-9]+).*/\1 \2 \3 \4 \5/p' /tmp/blkzone.out |
        while read -r _s _len _cap _wp _cond; do echo "$_s $_len $_cap $((_s + _wp)) $_cond"; done | norm
}
# zlist_nvme NAME: nvme zns report-zones, in LBAs, converted.
zlist_nvme() {
    _l=$(lba_size "$1") || return 1
    _f=$((_l / 512))
    _zsze=$(sed -n 's/.*(in use).*zsze:\(0x[0-9a-f]*\).*/\1/p;s/.*zsze:\(0x[0-9a-f]*\).*(in use).*/\1/p' /tmp/zidns.$1 | head -1)
    nvme zns report-zones "$(dev "$1")" > /tmp/report-zones.out || return 1
    sed -nE 's/.*SLBA: *(0x[0-9a-f]+|0) +WP: *(0x[0-9a-f]+|0) +Cap: *(0x[0-9a-f]+|0) +State: *(0x[0-9a-f]+|0).*/\1 \2 \3 \4/p' /tmp/report-zones.out |
        while read -r _s _wp _cap _st; do
            echo "$((_s * _f)) $((_zsze * _f)) $((_cap * _f)) $((_wp * _f)) $((_st >> 4))"
        done | norm
}
# zlist_host NAME: our qemu-io's zone report of the image on the host.
zlist_host() {
    host zrp "$1" > /tmp/zrp.$1 || { cat /tmp/zrp.$1; return 1; }
    sed -nE 's/^start: (0x[0-9a-f]+), len (0x[0-9a-f]+), cap (0x[0-9a-f]+), wptr (0x[0-9a-f]+), zcond:([0-9]+),.*/\1 \2 \3 \4 \5/p' /tmp/zrp.$1 | norm
}

# same_zones WHAT FILE1 FILE2: two zone lists, both non-empty, are equal.
same_zones() {
    [ -s "$2" ] && [ -s "$3" ] || { echo "error: $1: a zone list is empty"; return 1; }
    expect_same "$@"
}

# expected_zones COUNT LEN CAP [N:COND...]: a fresh image's zone list,
# every zone empty but those listed.
expected_zones() {
    _cnt=$1 _len=$2 _cap=$3
    shift 3
    _i=0
    while [ $_i -lt "$_cnt" ]; do
        _c=1
        for _x in "$@"; do [ "${_x%:*}" = $_i ] && _c=${_x#*:}; done
        echo "$((_i * _len)) $_len $_cap $((_i * _len)) $_c"
        _i=$((_i + 1))
    done | norm
}

zone_reports() {
    _bad=0
    for n in z l k; do
        zlist_blkzone "$(dev $n)" > /tmp/zb.$n || _bad=1
        zlist_nvme $n > /tmp/zn.$n || _bad=1
        same_zones "$n: blkzone and nvme zns report-zones" /tmp/zb.$n /tmp/zn.$n || _bad=1
    done
    expected_zones 16 131072 126976 > /tmp/ze.z
    expected_zones 16 8192 6144 14:13 15:15 > /tmp/ze.l
    expected_zones 16 32768 32768 > /tmp/ze.k
    for n in z l k; do
        same_zones "$n: zones and the image's geometry" /tmp/ze.$n /tmp/zb.$n || _bad=1
    done
    cat /tmp/zb.l
    [ $_bad = 0 ]
}

# 6.1: mq-deadline keeps zoned writes in order at depth > 1.
scheduler() {
    _q=/sys/block/$(dev "$1" | cut -c6-)/queue/scheduler
    if [ -f "$_q" ]; then
        echo mq-deadline > "$_q" 2>/dev/null
        echo "$1 scheduler: $(cat "$_q")"
    else
        die "$1 has no scheduler file (a multipath head node?)"
    fi
}

# fio_zbd ENGINE DEPTH ZONE: 16 MiB written sequentially from zone ZONE of
# z (two zones of room), then verified (small: TCG on a loaded host moves
# 2-5 MiB/s).
fio_zbd() {
    scheduler z
    fio --name="zbd-$1-qd$2" --filename="$(dev z)" --direct=1 --ioengine="$1" --iodepth="$2" \
        --zonemode=zbd --rw=write --bs=64k --offset=$(($3 * 64))M --size=128M --io_size=16M \
        --verify=crc32c --do_verify=1 --verify_fatal=1 --output=/tmp/fio.out
    _rc=$?
    grep -E 'err=|WRITE:|READ:|verify' /tmp/fio.out
    [ $_rc = 0 ] || { cat /tmp/fio.out; die "fio failed (exit $_rc)"; }
    grep -q 'err= 0' /tmp/fio.out || die "fio reports an error"
    blkzone report -o $(($3 * 131072)) -c 2 "$(dev z)"
}

btrfs_zoned() {
    blkzone reset "$(dev z)" || die "blkzone reset failed"
    mkfs.btrfs -q -f -O zoned "$(dev z)" || die "mkfs.btrfs -O zoned failed"
    mount -t btrfs "$(dev z)" /mnt || die "mount failed"
    mkdir /mnt/dir
    dd if=/dev/urandom of=/mnt/random bs=1M count=8 2>/dev/null
    cp /usr/bin/fio /usr/sbin/nvme /mnt/dir/ || die "copy failed"
    for i in 1 2 3 4 5 6; do
        dd if=/dev/urandom of=/mnt/dir/f$i bs=4k count=$((i * 5)) 2>/dev/null
    done
    (cd /mnt && md5sum random dir/*) > $S/sums
    umount /mnt || die "umount failed"
    mount -t btrfs "$(dev z)" /mnt || die "remount failed"
    (cd /mnt && md5sum -c $S/sums) || die "files differ after remount"
    btrfs filesystem df /mnt
    umount /mnt || die "umount failed"
}

# --- ZNS errors on l (4 MiB zones = 8192 sectors, capacity 6144) ---------
LZ=8192
lba() { echo $(($1 / $(cat /tmp/lba.l))); }     # sectors -> LBAs of l

errors_setup() {
    lba_size l > /tmp/lba.l && echo $(($(cat /tmp/lba.l) / 512)) > /tmp/lba.l
    blkzone reset -o 0 -c 14 "$(dev l)" || die "blkzone reset failed"
    scheduler l
}

# dd_err WHAT ERRNO_TEXT DD-ARGS...: GNU dd fails with that error text.
dd_err() {
    _what=$1 _want=$2
    shift 2
    if /usr/bin/dd "$@" 2>/tmp/dd.err; then
        die "$_what succeeded"
    fi
    cat /tmp/dd.err
    grep -q "$_want" /tmp/dd.err || die "$_what did not fail with '$_want'"
    echo "$_what: $_want, as expected"
    # Linux 6.12 fails further writes to a zone whose write failed until a
    # zone report has told it the write pointer again.
    [ -n "$DEVL" ] && blkzone report "$DEVL" > /dev/null
}

# nvme_err WHAT STATUS NVME-ARGS...: nvme-cli passthrough fails with that
# NVMe status (SCT 1, DNR set: 0x4000 | STATUS).
nvme_err() {
    _what=$1 _want=$2
    shift 2
    if nvme "$@" > /tmp/nvme.err 2>&1; then
        cat /tmp/nvme.err
        die "$_what (passthrough) succeeded"
    fi
    cat /tmp/nvme.err
    grep -qi "(0x4$_want)" /tmp/nvme.err ||
        die "$_what (passthrough): not NVMe status 0x4$_want"
}

# dmesg_has WHAT SC: the kernel logged an NVMe error with SCT 1 / SC
# (since the last dmesg -c).
dmesg_has() {
    dmesg -c > /tmp/dmesg
    grep -E 'nvme|I/O error|zones' /tmp/dmesg
    grep -q "sct 0x1 / sc 0x$2" /tmp/dmesg || die "$1: dmesg shows no status sct 0x1 / sc 0x$2"
}

# The kernel's own checks may refuse a write before the device sees it
# (6.12's zone write plugging knows the write pointers, and treats
# read-only and offline zones as full): then the status comes from the
# passthrough command only, and dmesg is checked on 6.1.
dmesg_if_sent() {
    dmesg -c > /tmp/dmesg
    grep -E 'nvme|I/O error|zones' /tmp/dmesg
    if grep -q 'I/O Cmd' /tmp/dmesg; then
        grep -q "sct 0x1 / sc 0x$2" /tmp/dmesg || die "$1: dmesg shows no status sct 0x1 / sc 0x$2"
    else
        case $KVER in
            6.1.*) die "$1: dmesg shows no NVMe error" ;;
            *) echo "$1: refused by the kernel itself (no command reached the target)" ;;
        esac
    fi
}

DEVL=""
err_off_wp() {
    DEVL=$(dev l)
    dmesg -c > /dev/null
    dd_err "a write off the write pointer" "Input/output error" \
        if=/dev/zero of="$DEVL" bs=4k count=1 seek=2 oflag=direct
    dmesg_if_sent "write off the write pointer" bc
    nvme_err "a write off the write pointer" 1bc write "$DEVL" -s "$(lba 16)" -c 7 -z 4096 -d /dev/zero
    # and the same at the write pointer works
    dd if=/dev/zero of="$DEVL" bs=4k count=1 oflag=direct || die "a write at the write pointer failed"
}

# Zone 1 written up to 4 KiB below its capacity: an 8 KiB write crosses the
# capacity (Zone Boundary Error), then the zone is filled and a write to it
# is one to a full zone (Zone Is Full).
err_capacity() {
    DEVL=$(dev l)
    dd if=/dev/zero of="$DEVL" bs=4k count=767 seek=1024 oflag=direct || die "filling zone 1 failed"
    dmesg -c > /dev/null
    nvme_err "a write over the zone capacity" 1b8 write "$DEVL" -s "$(lba $((LZ + 6136)))" -c "$(($(lba 16) - 1))" -z 8192 -d /dev/zero
    # one 8 KiB write (GNU dd: busybox's has no seek_bytes)
    dd_err "a write over the zone capacity" "Input/output error" \
        if=/dev/zero of="$DEVL" bs=8k count=1 seek=$((1791 * 4096)) oflag=direct,seek_bytes
    dmesg_if_sent "write over the zone capacity" b8
    dd if=/dev/zero of="$DEVL" bs=4k count=1 seek=1791 oflag=direct || die "the last block of zone 1 failed"
    blkzone report -o $LZ -c 1 "$DEVL"
    dd_err "a write to a full zone" "Input/output error" \
        if=/dev/zero of="$DEVL" bs=4k count=1 seek=1792 oflag=direct
    dmesg_if_sent "write to a full zone" b9
    nvme_err "a write to a full zone" 1b9 write "$DEVL" -s "$(lba $((LZ + 6144)))" -c "$(($(lba 8) - 1))" -z 4096 -d /dev/zero
}

# At most 2 open zones: zones 2 and 3 explicitly open, a third open (zone 4)
# is Too Many Open Zones (ETOOMANYREFS), so is a write that would open one.
err_open_limit() {
    DEVL=$(dev l)
    blkzone reset -o 0 -c 2 "$DEVL" || die "reset failed"
    blkzone open -o $((2 * LZ)) -c 2 "$DEVL" || die "opening zones 2 and 3 failed"
    limit_refused "a third open zone" "Too many references" be 4
}

# limit_refused WHAT ERRNO_TEXT SC ZONE: with a zone resource limit reached,
# opening zone ZONE (BLKOPENZONE) and a write into zone 5 fail with
# ERRNO_TEXT and NVMe status 1SC (in dmesg), so does nvme-cli's open of
# zone 6 (in its answer).
limit_refused() {
    dmesg -c > /dev/null
    if blkzone open -o $(($4 * LZ)) -c 1 "$DEVL" 2>/tmp/bz.err; then die "$1: the open succeeded"; fi
    cat /tmp/bz.err
    grep -q "$2" /tmp/bz.err || die "$1: the open did not fail with '$2'"
    dmesg_has "$1: open" "$3"
    dd_err "$1: a write" "$2" if=/dev/zero of="$DEVL" bs=4k count=1 seek=$((5 * LZ / 8)) oflag=direct
    dmesg_has "$1: write" "$3"
    nvme_err "$1: open" "1$3" zns open-zone "$DEVL" -s "$(lba $((6 * LZ)))"
}

# At most 3 active zones: zones 2, 3 and 4 written and closed (3 active; a
# zone closed with nothing written would go back to empty); opening zone 5,
# or writing to it, is Too Many Active Zones (EOVERFLOW).
err_active_limit() {
    DEVL=$(dev l)
    for z in 2 3 4; do
        dd if=/dev/zero of="$DEVL" bs=4k count=1 seek=$((z * LZ / 8)) oflag=direct ||
            die "a write to zone $z failed"
        blkzone close -o $((z * LZ)) -c 1 "$DEVL" || die "closing zone $z failed"
    done
    blkzone report -o $((2 * LZ)) -c 4 "$DEVL"
    limit_refused "a 4th active zone" "Value too large" bd 5
    blkzone reset -o $((2 * LZ)) -c 3 "$DEVL" || die "reset failed"
}

# Zone 14 read-only: reads work, writes are Zone Is Read Only; zone 15
# offline: reads and writes are Zone Is Offline.
err_read_only() {
    DEVL=$(dev l)
    dd if="$DEVL" of=/dev/null bs=4k count=4 skip=$((14 * LZ / 8)) iflag=direct ||
        die "a read of the read-only zone failed"
    dmesg -c > /dev/null
    dd_err "a write to the read-only zone" "Input/output error" \
        if=/dev/zero of="$DEVL" bs=4k count=1 seek=$((14 * LZ / 8)) oflag=direct
    dmesg_if_sent "write to the read-only zone" ba
    nvme_err "a write to the read-only zone" 1ba write "$DEVL" -s "$(lba $((14 * LZ)))" -c "$(($(lba 8) - 1))" -z 4096 -d /dev/zero
}
err_offline() {
    DEVL=$(dev l)
    dmesg -c > /dev/null
    dd_err "a read of the offline zone" "Input/output error" \
        if="$DEVL" of=/dev/null bs=4k count=1 skip=$((15 * LZ / 8)) iflag=direct
    dmesg_has "read of the offline zone" bb
    dd_err "a write to the offline zone" "Input/output error" \
        if=/dev/zero of="$DEVL" bs=4k count=1 seek=$((15 * LZ / 8)) oflag=direct
    dmesg_if_sent "write to the offline zone" bb
    nvme_err "a read of the offline zone" 1bb read "$DEVL" -s "$(lba $((15 * LZ)))" -c "$(($(lba 8) - 1))" -z 4096
}

# The plain namespace: 8 MiB of random data written and read back (kept
# for boot 2), fio verify at depth 8.
plain() {
    _p=$(dev p) || die "p is not connected"
    dd if=/dev/urandom of=$S/plain.bin bs=1M count=8 2>/dev/null
    dd if=$S/plain.bin of="$_p" bs=1M seek=16 oflag=direct conv=fsync || die "write failed"
    dd if="$_p" of=/tmp/plain.back bs=1M skip=16 count=8 iflag=direct || die "read failed"
    cmp $S/plain.bin /tmp/plain.back || die "data differ"
    fio --name=plain --filename="$_p" --direct=1 --ioengine=io_uring --iodepth=8 --rw=randwrite \
        --bs=16k --offset=64M --size=16M --verify=crc32c --verify_fatal=1 --output=/tmp/fio.out
    _rc=$?
    grep -E 'err=|WRITE:|READ:' /tmp/fio.out
    [ $_rc = 0 ] || { cat /tmp/fio.out; die "fio failed (exit $_rc)"; }
}

# A zone list as it must come back after the target stopped: open zones
# (implicitly or explicitly) closed, or empty when nothing was written.
closed_form() {
    awk '$5 == 2 || $5 == 3 { $5 = ($4 > $1) ? 4 : 1 } { print }' "$1"
}

# Zone Append through nvme-cli (an NVMe passthrough ioctl) into zone 5 of
# k: each returns the LBA it wrote at, the zone's write pointer.
zone_append() {
    _k=$(dev k) || die "k is not connected"
    _z=$((5 * 32768))
    dd if=/dev/urandom of=/tmp/app bs=4k count=2 2>/dev/null
    dd if=/tmp/app of=/tmp/app1 bs=4k count=1 2>/dev/null
    dd if=/tmp/app of=/tmp/app2 bs=4k skip=1 count=1 2>/dev/null
    for i in 1 2; do
        nvme zns zone-append "$_k" -s $_z -z 4096 -d /tmp/app$i > /tmp/zap.$i 2>&1
        _rc=$?
        cat /tmp/zap.$i
        [ $_rc = 0 ] || die "zone append $i failed"
    done
    # nvme-cli prints the LBA in hex without a prefix
    for i in 1 2; do
        _lba=$(sed -n 's/.*appended data to LBA \([0-9a-f][0-9a-f]*\)$/\1/p' /tmp/zap.$i)
        [ -n "$_lba" ] || die "no LBA in nvme-cli's answer to append $i"
        expect "append $i's LBA" $((0x$_lba)) $((_z + (i - 1) * 8)) || return 1
    done
    dd if="$_k" of=/tmp/app.back bs=4k skip=$((_z / 8)) count=2 iflag=direct 2>/dev/null
    cmp /tmp/app /tmp/app.back || die "appended data differ"
    blkzone report -o $_z -c 1 "$_k"
}

# Saves the zone lists, disconnects, stops the daemon with SIGTERM; our
# qemu-io's zone report of each image must then equal what the kernel saw,
# open zones closed.  Zones 1-3 of k are left open for that: 1 implicitly
# (written), 2 explicitly with nothing written (comes back empty), 3
# explicitly and written.
stop_and_compare() {
    _k=$(dev k) || die "k is not connected"
    dd if=/dev/urandom of="$_k" bs=4k count=1 seek=$((1 * 4096)) oflag=direct || die "write to k zone 1 failed"
    blkzone open -o $((2 * 32768)) -c 2 "$_k" || die "open of k zones 2-3 failed"
    dd if=/dev/urandom of="$_k" bs=4k count=1 seek=$((3 * 4096)) oflag=direct || die "write to k zone 3 failed"
    for n in z l k; do zlist_blkzone "$(dev $n)" > $S/zones.$n || die "blkzone report of $n failed"; done
    expect "k zones 1-3 before the stop" "$(awk 'NR >= 2 && NR <= 4 {printf "%s ", $5}' $S/zones.k)" "2 3 3 " || return 1
    for n in z l k; do closed_form $S/zones.$n > $S/closed.$n; done
    nvme disconnect-all || die "nvme disconnect-all failed"
    host stop || die "stopping the daemon failed"
    _bad=0
    for n in z l k; do
        zlist_host $n > /tmp/zh.$n || _bad=1
        same_zones "$n: the guest's zones (open ones closed) and qemu-io's on the image" \
            $S/closed.$n /tmp/zh.$n || _bad=1
    done
    [ $_bad = 0 ]
}

# --- boot 2 ---------------------------------------------------------------
restart() {
    nvme_modules
    [ -f $S/ports ] || die "boot 1 left no state"
    start_daemon
    connect_all
}

persist_zones() {
    _bad=0
    for n in z l k; do
        zlist_blkzone "$(dev $n)" > /tmp/zb.$n || _bad=1
        same_zones "$n: zones before the restart (open ones closed) and after" $S/closed.$n /tmp/zb.$n || _bad=1
    done
    expect "k zones 1-3 after the restart" "$(awk 'NR >= 2 && NR <= 4 {printf "%s ", $5}' /tmp/zb.k)" "4 1 4 " || _bad=1
    [ $_bad = 0 ]
}

persist_files() {
    mount -t btrfs "$(dev z)" /mnt || die "mount failed"
    (cd /mnt && md5sum -c $S/sums) || die "files differ after the restart"
    umount /mnt || die "umount failed"
    dd if="$(dev p)" of=/tmp/plain.back bs=1M skip=16 count=8 iflag=direct || die "read failed"
    cmp $S/plain.bin /tmp/plain.back || die "plain namespace data differ after the restart"
}

# Writer: 64 KiB chunks of /tmp/src into zone 0 of k, each O_DIRECT then
# flushed (fsync); after each flush the count goes to /tmp/flushed.
writer() {
    _i=0
    while [ $_i -lt 200 ]; do
        dd if=/tmp/src of="$1" bs=64k count=1 skip=$_i seek=$_i oflag=direct conv=fsync,notrunc \
            2>/dev/null || break
        _i=$((_i + 1))
        echo $_i > /tmp/flushed
    done
}
zone_written() {
    blkzone report -o "$2" -c 1 "$1" | grep -vq 'zcond: *1('
}
k_gone() { ! ctrl_dev "$(nqn_of k)" > /dev/null; }
flushed_at_least() { [ "$(cat /tmp/flushed 2>/dev/null || echo 0)" -ge "$1" ]; }

kill_during_writes() {
    _k=$(dev k) || die "k is not connected"
    dd if=/dev/urandom of=/tmp/src bs=64k count=200 2>/dev/null
    rm -f /tmp/flushed
    fio --name=load --filename="$_k" --direct=1 --ioengine=libaio --iodepth=4 --zonemode=zbd \
        --rw=write --bs=64k --offset=128M --size=128M --fsync=8 --time_based --runtime=120 \
        --output=/tmp/fio-load.out &
    _fio=$!
    # fio has written into its first zone (its start under TCG is slow)
    wait_for 1200 zone_written "$_k" $((8 * 32768)) || die "fio did not start writing"
    writer "$_k" &
    _w=$!
    wait_for 1200 flushed_at_least 20 || die "the writer did not get 20 flushed chunks through"
    zlist_blkzone "$_k" > /tmp/zk.before || die "blkzone report failed"
    echo "open zones just before the kill: $(awk '$5 == 2 || $5 == 3 {printf "%s ", $1}' /tmp/zk.before)"
    awk 'NR == 1 && $5 == 2 {ok = 1} END {exit !ok}' /tmp/zk.before || die "zone 0 is not implicitly open before the kill"
    host kill9 || die "SIGKILL failed"
    _before=$(cat /tmp/flushed)
    echo "killed the daemon after $_before flushed chunks"
    # ctrl-loss-tmo=3: pending I/O fails and the controller goes.
    wait $_w
    kill $_fio 2>/dev/null
    wait $_fio
    _flushed=$(cat /tmp/flushed)
    echo "writer stopped after $_flushed flushed chunks; fio:"
    grep -E 'err=' /tmp/fio-load.out
    wait_for 200 k_gone || die "the controller of k is still there"
    host start > /dev/null || die "restarting the daemon failed"
    connect k
    _k=$(dev k) || die "k is not connected"
    zlist_blkzone "$_k" > /tmp/zk || die "blkzone report failed"
    cat /tmp/zk
    _w0=$(awk 'NR == 1 {print $4}' /tmp/zk)
    [ "$_w0" = - ] && _w0=32768
    [ "$_w0" -ge $((_flushed * 128)) ] ||
        die "zone 0's write pointer $_w0 is below the last flush ($((_flushed * 128)) sectors)"
    if awk '$5 == 2 || $5 == 3' /tmp/zk | grep -q .; then
        die "zones came back open"
    fi
    dd if="$_k" of=/tmp/back bs=64k count="$_flushed" iflag=direct 2>/dev/null || die "read-back failed"
    dd if=/tmp/src of=/tmp/want bs=64k count="$_flushed" 2>/dev/null
    cmp /tmp/want /tmp/back || die "flushed data differ"
    echo "all $_flushed flushed chunks read back; zone 0 wp $_w0"
    cp /tmp/zk $S/zones.k
}

stop_and_compare_k() {
    nvme disconnect-all || die "nvme disconnect-all failed"
    host stop || die "stopping the daemon failed"
    zlist_host k > /tmp/zh.k || die "qemu-io zrp failed"
    same_zones "k: the guest's zones and qemu-io's on the image" $S/zones.k /tmp/zh.k
}

if [ "$E2E_BOOT" = 1 ]; then
    step nvme-setup setup
    step nvme-discover discover
    step nvme-connect connect_all
    step nvme-list list
    step zns-id-ctrl zns_id_ctrl
    step zns-id-ns zns_id_ns
    step zone-reports zone_reports
    step fio-zbd-libaio-qd1 fio_zbd libaio 1 0
    step fio-zbd-libaio-qd8 fio_zbd libaio 8 2
    step fio-zbd-io_uring-qd1 fio_zbd io_uring 1 4
    step fio-zbd-io_uring-qd8 fio_zbd io_uring 8 6
    step btrfs-zoned btrfs_zoned
    step plain-namespace plain
    step zone-append zone_append
    step err-setup errors_setup
    step err-write-off-wp err_off_wp
    step err-over-capacity-and-full err_capacity
    step err-open-limit err_open_limit
    step err-active-limit err_active_limit
    step err-read-only-zone err_read_only
    step err-offline-zone err_offline
    step sigterm-zones-equal-qemu-io stop_and_compare
else
    step restart-daemon-and-connect restart
    step persist-zones persist_zones
    step persist-files persist_files
    step sigkill-during-writes kill_during_writes
    step sigkill-zones-equal-qemu-io stop_and_compare_k
fi
