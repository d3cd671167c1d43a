#!/bin/bash
# Obtains and caches everything the end-to-end tests boot: Debian's kernels
# (bookworm-backports Linux 6.12, bookworm Linux 6.1) as uncompressed
# vmlinux files with their modules, bookworm-backports' QEMU 10.0 (system
# emulator and qemu-utils), and one busybox initramfs per kernel.
#
#   tests/e2e/prepare.sh BUILD_DIR [KERNEL...]     KERNEL: 6.12 (default), 6.1
#
# Packages come from Debian's registry through a private APT configuration
# that reuses the machine's bookworm URIs; they are unpacked (dpkg -x) into
# the cache directory, never installed.  The cache is $E2E_CACHE, default
# /var/tmp/vm-cache; later runs reuse it and do not touch the network.
# Prints one line per kernel: "KERNEL KVER VMLINUX INITRAMFS".
# See docs/devel/testing-e2e.rst.
set -euo pipefail

E2E_DIR=$(cd "$(dirname "$0")" && pwd)
C=${E2E_CACHE:-/var/tmp/vm-cache}
BUILD_DIR=$(cd "${1:?usage: prepare.sh BUILD_DIR [KERNEL...]}" && pwd)
shift
KERNELS=("${@:-6.12}")
# Bump when the initramfs layout changes, so cached archives are rebuilt.
INITRAMFS_VERSION=3

die() { echo "e2e: prepare: $*" >&2; exit 1; }
note() { echo "e2e: prepare: $*" >&2; }

mkdir -p "$C" || die "cannot create cache directory $C"
C=$(cd "$C" && pwd)
exec 9>"$C/.lock"
flock 9   # one preparation at a time per cache

# --- A private APT view of bookworm, its updates, security and backports ----
APT_READY=""
apt_setup() {
    [ -n "$APT_READY" ] && return 0
    local A=$C/apt uri sec
    mkdir -p "$A/lists/partial" "$A/cache/archives/partial"
    read -r uri sec < <(apt-get indextargets --no-release-info \
            --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' | sort -u |
        awk '$3=="main" && $2=="bookworm" && !u {u=$1}
             $3=="main" && $2=="bookworm-security" && !s {s=$1} END {print u, s}')
    [ -n "$uri" ] || die "no bookworm 'main' source is configured in /etc/apt (needed to reach Debian's registry)"
    [ -n "$sec" ] || sec=http://deb.debian.org/debian-security/
    local kr=/usr/share/keyrings/debian-archive-keyring.gpg
    [ -f "$kr" ] || die "$kr missing (install debian-archive-keyring)"
    { for s in bookworm bookworm-updates bookworm-backports; do
          echo "deb [signed-by=$kr] $uri $s main"
      done
      echo "deb [signed-by=$kr] $sec bookworm-security main"; } > "$A/sources.list"
    printf 'Dir::Etc::sourcelist "%s";\nDir::Etc::sourceparts "-";\nDir::State::Lists "%s";\nDir::Cache "%s";\n' \
        "$A/sources.list" "$A/lists" "$A/cache" > "$A/apt.conf"
    export APT_CONFIG=$A/apt.conf
    note "apt-get update (private view: bookworm, -updates, -security, -backports)"
    apt-get update -qq >&2 || die "apt-get update failed: Debian's package registry is not reachable"
    APT_READY=1
}

# Downloads the given packages into $1 (replacing what was there).
download() {
    local dir=$1; shift
    rm -rf "$dir"; mkdir -p "$dir"
    (cd "$dir" && apt-get download -q "$@" >&2) || die "apt-get download $* failed"
}

# --- Kernels -------------------------------------------------------------------
# $C/kernel-<K>/{root,vmlinux,kver}; root holds the unpacked package.
prepare_kernel() {
    local k=$1 dir=$C/kernel-$1 sel pkg kver
    [ -f "$dir/done" ] && return 0
    apt_setup
    case $k in
        6.12) sel=linux-image-amd64/bookworm-backports ;;
        6.1) sel=linux-image-amd64/bookworm ;;
        *) die "unknown kernel '$k' (known: 6.12, 6.1)" ;;
    esac
    # The candidate of that suite; for 6.1 a newer build from -security wins.
    [ "$k" = 6.1 ] && sel=linux-image-amd64
    pkg=$(apt-cache depends "$sel" | awk '$1=="Depends:" && $2~/^linux-image-[0-9]/ {print $2; exit}')
    [ -n "$pkg" ] || die "cannot resolve $sel to a kernel package"
    kver=${pkg#linux-image-}
    note "kernel $k: $pkg"
    rm -rf "$dir"; mkdir -p "$dir"
    download "$dir/debs" "$pkg"
    dpkg -x "$dir"/debs/*.deb "$dir/root"
    depmod -b "$dir/root" "$kver"
    extract_vmlinux "$dir/root/boot/vmlinuz-$kver" "$dir/vmlinux"
    rm -rf "$dir/debs"
    echo "$kver" > "$dir/kver"
    touch "$dir/done"
}

# Uncompressed ELF from a bzImage (6.1: XZ payload, 6.12: zstd), booted
# through PVH: saves the kernel's self-decompression under TCG.
extract_vmlinux() {
    local in=$1 out=$2 off
    if off=$(LC_ALL=C grep -obUaP '\x28\xb5\x2f\xfd' "$in" | head -1 | cut -d: -f1) && [ -n "$off" ]; then
        # zstd complains about the size word after the frame: ignore it.
        tail -c +$((off + 1)) "$in" | zstd -dcq > "$out" 2>/dev/null || true
    else
        python3 - "$in" "$out" <<'EOF'
import lzma, sys
d = open(sys.argv[1], 'rb').read()
i = d.find(b'\xfd7zXZ\x00')
if i < 0:
    sys.exit('no XZ or zstd payload in ' + sys.argv[1])
open(sys.argv[2], 'wb').write(lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(d[i:]))
EOF
    fi
    [ "$(head -c 4 "$out" | od -An -tx1 | tr -d ' ')" = 7f454c46 ] || die "could not extract an ELF vmlinux from $in"
}

# --- QEMU 10.0 ------------------------------------------------------------------
# What installing it would add to this host, downloaded and unpacked into
# $C/qemu10 (the host keeps its own qemu-utils 7.2).
prepare_qemu10() {
    local dir=$C/qemu10 pkgs
    [ -f "$dir/done" ] && return 0
    apt_setup
    pkgs=$(apt-get -s install --no-install-recommends -t bookworm-backports qemu-system-x86 qemu-utils |
           sed -n 's/^Inst \([^ ]*\) \(\[[^]]*\] \)\?(\([^ ]*\) .*/\1=\3/p')
    [ -n "$pkgs" ] || die "apt cannot resolve qemu-system-x86 and qemu-utils from bookworm-backports"
    note "QEMU 10.0: $(echo $pkgs | wc -w) packages"
    rm -rf "$dir" "$C/debs-qemu10"
    # shellcheck disable=SC2086
    download "$C/debs-qemu10" $pkgs
    for d in "$C"/debs-qemu10/*.deb; do dpkg -x "$d" "$dir"; done
    rm -rf "$C/debs-qemu10"
    "$E2E_DIR/qemu10.sh" "$C" qemu-io --version | grep -q 'version 10\.' ||
        die "the unpacked QEMU 10.0 qemu-io does not run"
    touch "$dir/done"
}

# --- Initramfs --------------------------------------------------------------------
# Modules each kernel's guest may load (with their dependencies).
modules_for() {
    local common="configfs null_blk nvme nvme-core nvme-fabrics nvme-tcp nvmet nvmet-tcp btrfs f2fs
                  zonefs dm-zoned loop virtio_blk virtio_net 9p 9pnet_virtio scsi_debug sd_mod
                  nbd ext4"
    case $1 in
        6.1) echo "$common virtio_pci" ;;
        *) echo "$common nvme-loop vduse vdpa virtio_vdpa vhost_vdpa ublk_drv" ;;
    esac
}

# Host programs the guest runs (from /usr: /bin may hold busybox links).
GUEST_TOOLS="/usr/sbin/blkzone /usr/sbin/blkdiscard /usr/bin/lsblk /usr/sbin/nvme /usr/bin/fio
             /usr/sbin/mkfs.btrfs /usr/bin/btrfs /usr/sbin/mkfs.f2fs /usr/bin/bash /usr/bin/ip
             /usr/sbin/vdpa /usr/bin/cmp /usr/bin/diff /usr/bin/md5sum /usr/bin/dd /usr/bin/od
             /usr/sbin/mke2fs /usr/sbin/e2fsck"

# The shared libraries (resolved paths) of the given programs; with
# $1 = a directory, libraries found below it are left out (they reach the
# guest over 9p).
lib_closure() {
    local skip=$1; shift
    ldd "$@" 2>/dev/null | awk '/=> \// {print $3} /^[ \t]*\/lib64\/ld-linux/ {print $1}' |
        { if [ -n "$skip" ]; then grep -v "^$skip/"; else cat; fi; } | sort -u
}

# Builds $C/kernel-<K>/base-<hash>.cpio unless it exists; prints its path.
# The hash covers what goes in, so a new library dependency of our
# binaries or of QEMU 10.0's qemu-io makes a new archive.
prepare_initramfs() {
    local k=$1 kdir=$C/kernel-$1 kver libs q10libs hash out root m f
    kver=$(cat "$kdir/kver")
    local ours=()
    for f in qemu-img qemu-io qemu-nbd; do
        [ -x "$BUILD_DIR/$f" ] || die "$BUILD_DIR/$f not built"
        ours+=("$BUILD_DIR/$f")
    done
    for f in $GUEST_TOOLS; do [ -x "$f" ] || die "$f missing: run scripts/install-deps.sh"; done
    [ -x /bin/busybox ] || die "/bin/busybox missing: run scripts/install-deps.sh (busybox-static)"
    # shellcheck disable=SC2086
    libs=$(lib_closure "" $GUEST_TOOLS "${ours[@]}")
    q10libs=$(LD_LIBRARY_PATH=$("$E2E_DIR/qemu10.sh" "$C" --libpath) \
              lib_closure "$C/qemu10" "$C/qemu10/usr/bin/qemu-io" "$C/qemu10/usr/bin/qemu-img")
    hash=$(printf '%s\n' "$INITRAMFS_VERSION" "$kver" $libs $q10libs $GUEST_TOOLS "$(modules_for "$k")" |
           md5sum | cut -c1-12)
    out=$kdir/base-$hash.cpio
    if [ -f "$out" ]; then echo "$out"; return 0; fi
    note "building the initramfs for $kver"
    root=$(mktemp -d "$C/initramfs.XXXXXX")
    (
        cd "$root"
        mkdir -p bin usr/bin usr/sbin usr/lib/x86_64-linux-gnu usr/lib64 proc sys dev tmp mnt \
                 host qemu10 etc/nvme run var root
        ln -s bin sbin; ln -s usr/lib lib; ln -s usr/lib64 lib64
        cp /bin/busybox bin/busybox
        for a in $(bin/busybox --list); do [ -e "bin/$a" ] || ln -s busybox "bin/$a"; done
        # shellcheck disable=SC2086
        for f in $GUEST_TOOLS $libs $q10libs; do cp --parents -L "$f" .; done
        for m in $(modules_for "$k"); do
            modprobe -d "$kdir/root" -S "$kver" --show-depends "$m" >/dev/null 2>&1 ||
                die "module $m not found for $kver"
            modprobe -d "$kdir/root" -S "$kver" --show-depends "$m" | awk '$1=="insmod" {print $2}'
        done | sort -u | while read -r f; do
            rel=${f#"$kdir/root"}
            mkdir -p ".$(dirname "$rel")"
            case $f in
                *.xz) xz -dc "$f" > ".${rel%.xz}" ;;   # busybox modprobe has no xz
                *.zst) zstd -dcq "$f" > ".${rel%.zst}" ;;
                *) cp "$f" ".$rel" ;;
            esac
        done
        for f in modules.order modules.builtin modules.builtin.modinfo; do
            cp "$kdir/root/lib/modules/$kver/$f" "lib/modules/$kver/" 2>/dev/null || true
        done
        depmod -b "$root" "$kver"
        echo 'root:x:0:0:root:/root:/bin/sh' > etc/passwd
        echo 'root:x:0:' > etc/group
        find . -print0 | cpio --quiet --null -o -H newc -R 0:0 > "$out.tmp"
    ) || { rm -rf "$root"; die "initramfs build failed"; }
    rm -rf "$root"
    rm -f "$kdir"/base-*.cpio
    mv "$out.tmp" "$out"
    echo "$out"
}

prepare_qemu10
for k in "${KERNELS[@]}"; do prepare_kernel "$k"; done
for k in "${KERNELS[@]}"; do
    img=$(prepare_initramfs "$k")
    echo "$k $(cat "$C/kernel-$k/kver") $C/kernel-$k/vmlinux $img"
done
