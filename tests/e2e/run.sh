#!/bin/bash
# End-to-end tests in a real Linux guest (docs/devel/testing-e2e.rst).
#
#   tests/e2e/run.sh BUILD_DIR [TEST[@KERNEL]...]    run tests (default: all)
#   tests/e2e/run.sh --shell BUILD_DIR [KERNEL]      a root shell in the guest
#   tests/e2e/run.sh --list                          the tests and their kernels
#
# Each test is tests/e2e/tests/NAME.sh, a busybox sh script that becomes the
# guest's /init after guest/lib.sh (mounts, modules, 9p shares, network,
# the `step` helper).  Its header says which kernels it boots and its
# timeout:
#     # kernels: 6.12 6.1
#     # timeout: 600       (seconds, for each boot)
# The guest prints one "@@STEP name PASS|FAIL" line per step; this script
# prints "PASS test@kernel: step" or "FAIL ..." for each, a FAIL for a boot
# that died, timed out or lost steps (with the console log, which is kept in
# $E2E_LOGS, default BUILD_DIR/e2e-logs), and a last line
# "e2e: N passed, N failed".
#
# A test may boot several times in a row ("# boots: 2"; the guest reads
# e2e.boot=N on its command line) and may have a host side,
# tests/NAME.host (bash): the guest runs its commands with `host WORDS`
# (guest/lib.sh) through a 9p directory that this script serves; it stays
# for all boots of the test and gets "cleanup" at the end.
#
# Environment: E2E_CACHE (default /var/tmp/vm-cache) for the unpacked
# packages and initramfs; E2E_MEM (guest RAM, default 1536M).
set -uo pipefail

E2E_DIR=$(cd "$(dirname "$0")" && pwd)
export E2E_CACHE=${E2E_CACHE:-/var/tmp/vm-cache}
MEM=${E2E_MEM:-1536M}

usage() {
    sed -n '4,6p' "$0" | sed 's/^# *//' >&2
    exit 2
}

# The kernels a test boots (its "# kernels:" header; default 6.12).
test_kernels() {
    local k
    k=$(sed -n 's/^# kernels: *//p' "$1" | head -1)
    echo "${k:-6.12}"
}

test_boots() {
    local b
    b=$(sed -n 's/^# boots: *//p' "$1" | head -1)
    echo "${b:-1}"
}

test_timeout() {
    local t
    t=$(sed -n 's/^# timeout: *//p' "$1" | head -1)
    echo "${t:-300}"
}

# Writes the initrd for one boot: the cached base archive, then /init
# alone in a second archive (the kernel unpacks both, the second on top).
make_initrd() {
    local base=$1 script=$2 out=$3 dir
    dir=$(mktemp -d)
    { cat "$E2E_DIR/guest/lib.sh"; echo; cat "$script"; echo; echo 'finish'; } > "$dir/init"
    chmod 755 "$dir/init"
    cp "$base" "$out"
    (cd "$dir" && echo init | cpio --quiet -o -H newc -R 0:0) >> "$out"
    rm -rf "$dir"
}

# Boots the guest; the console goes to stdout.  $1 vmlinux, $2 initrd,
# $3 extra kernel command line, $4 timeout in seconds (0: none); QEMU
# options in BOOT_EXTRA are added.
BOOT_EXTRA=()
boot() {
    local vmlinux=$1 initrd=$2 cmdline=$3 secs=$4 build=$5 tmo=()
    [ "$secs" -gt 0 ] && tmo=(timeout --foreground -k 10 "$secs")
    "${tmo[@]}" nice -n 5 "$E2E_DIR/qemu10.sh" "$E2E_CACHE" qemu-system-x86_64 \
        -accel tcg -machine q35 -cpu max -m "$MEM" -smp 2 -nographic -no-reboot \
        -kernel "$vmlinux" -initrd "$initrd" \
        -append "console=ttyS0 panic=-1 quiet loglevel=4 $cmdline" \
        -virtfs "local,path=$build,mount_tag=build,security_model=none,id=build" \
        -virtfs "local,path=$E2E_DIR,mount_tag=e2e,security_model=none,id=e2e,readonly=on" \
        -virtfs "local,path=$E2E_CACHE/qemu10,mount_tag=qemu10,security_model=none,id=qemu10,readonly=on" \
        -nic user,model=virtio-net-pci "${BOOT_EXTRA[@]}"
}

# Serves a test's host side until DIR/stop exists: the guest writes the
# words of a command into DIR/req.ID; "bash SCRIPT WORDS" runs with its
# output into DIR/out.ID, then its exit status goes to DIR/rc.ID.
# SCRIPT sees E2E_HOST_DIR (DIR: its state, kept with the logs), BUILD and
# E2E_CACHE.
host_serve() {
    local script=$1 dir=$2 req id
    while [ ! -e "$dir/stop" ]; do
        for req in "$dir"/req.*; do
            [ -f "$req" ] || continue
            id=${req##*/req.}
            mv "$req" "$dir/cmd.$id"
            # shellcheck disable=SC2046
            E2E_HOST_DIR=$dir BUILD=$BUILD bash "$script" $(cat "$dir/cmd.$id") \
                > "$dir/out.$id" 2>&1 < /dev/null
            echo $? > "$dir/rc.$id.tmp"
            mv "$dir/rc.$id.tmp" "$dir/rc.$id"
        done
        sleep 0.1
    done
}

clean_console() {
    sed -u 's/\r//g; s/\x1b\[[0-9;?]*[a-zA-Z]//g; s/\x1bc//g'
}

passed=0
failed=0
pass() { echo "PASS $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; failed=$((failed + 1)); }

# Runs one test on one kernel (each of its boots) and reports its steps.
run_one() {
    local name=$1 k=$2 script=$E2E_DIR/tests/$1.sh secs log initrd rc steps
    local vmlinux=${VMLINUX[$k]} base=${INITRAMFS[$k]} boots b ends hostdir="" server=""
    secs=$(test_timeout "$script")
    boots=$(test_boots "$script")
    log=$LOGS/$name@$k.log
    : > "$log"
    BOOT_EXTRA=()
    if [ -f "$E2E_DIR/tests/$name.host" ]; then
        hostdir=$LOGS/$name@$k.host
        rm -rf "$hostdir"
        mkdir -p "$hostdir"
        host_serve "$E2E_DIR/tests/$name.host" "$hostdir" &
        server=$!
        BOOT_EXTRA=(-virtfs "local,path=$hostdir,mount_tag=ctl,security_model=none,id=ctl")
    fi
    initrd=$(mktemp "$E2E_CACHE/initrd.XXXXXX")
    make_initrd "$base" "$script" "$initrd"
    local start=$SECONDS
    for ((b = 1; b <= boots; b++)); do
        boot "$vmlinux" "$initrd" "e2e.boot=$b${hostdir:+ e2e.host=1}" "$secs" "$BUILD" \
            < /dev/null 2>&1 | clean_console >> "$log"
        rc=${PIPESTATUS[0]}
        ends=$(grep -ac '^@@E2E-END' "$log")
        [ "$ends" -eq "$b" ] || break    # this boot died: the next one would not make sense
    done
    rm -f "$initrd"
    if [ -n "$server" ]; then
        touch "$hostdir/stop"
        wait "$server"
        E2E_HOST_DIR=$hostdir BUILD=$BUILD bash "$E2E_DIR/tests/$name.host" cleanup \
            >> "$hostdir/cleanup.log" 2>&1 < /dev/null
    fi
    local bad=0
    while read -r _ step result detail; do
        if [ "$result" = PASS ]; then
            pass "$name@$k: $step"
        else
            fail "$name@$k: $step${detail:+ ($detail)}"
            bad=1
        fi
    done < <(grep -a '^@@STEP ' "$log")
    steps=$(grep -ac '^@@STEP ' "$log")
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        fail "$name@$k: timed out after ${secs}s"
        bad=1
    elif [ "$ends" -ne "$boots" ]; then
        fail "$name@$k: the guest stopped before the end of the test (boot $((ends + 1)) of $boots, QEMU exit status $rc)"
        bad=1
    elif [ "$steps" -eq 0 ]; then
        fail "$name@$k: no steps reported"
        bad=1
    fi
    echo "     $name@$k: $((SECONDS - start)) s, console log $log${hostdir:+, host side $hostdir}"
    if [ $bad -ne 0 ]; then
        echo "---- console log of $name@$k (last 150 lines) ----"
        tail -n 150 "$log" | sed 's/^/| /'
        echo "---- end of console log ----"
    fi
}

if [ "${1:-}" = --list ]; then
    for f in "$E2E_DIR"/tests/*.sh; do
        echo "$(basename "$f" .sh): $(test_kernels "$f")"
    done
    exit 0
fi

shell=0
if [ "${1:-}" = --shell ]; then
    shell=1
    shift
fi
[ $# -ge 1 ] || usage
BUILD=$(cd "$1" 2>/dev/null && pwd) || { echo "e2e: build directory '$1' not found"; usage; }
shift
LOGS=${E2E_LOGS:-$BUILD/e2e-logs}
mkdir -p "$LOGS"

declare -A VMLINUX INITRAMFS

# Resolves the kernels and initramfs (fetching and caching them if needed).
prepare() {
    local out k kver v i
    if ! out=$("$E2E_DIR/prepare.sh" "$BUILD" "$@"); then
        fail "e2e: preparing the guest failed (kernels, QEMU 10.0 or initramfs; see the messages above)"
        echo "e2e: $passed passed, $failed failed"
        exit 1
    fi
    while read -r k kver v i; do
        VMLINUX[$k]=$v
        INITRAMFS[$k]=$i
    done <<< "$out"
}

if [ $shell -eq 1 ]; then
    k=${1:-6.12}
    prepare "$k" || exit 1
    initrd=$(mktemp "$E2E_CACHE/initrd.XXXXXX")
    shell_script=$(mktemp)
    printf '%s\n' 'echo "e2e shell: /host is the build directory, /e2e tests/e2e, /qemu10 QEMU 10.0"' \
        'echo "poweroff -f (or Ctrl-a x) ends the VM"' \
        'setsid cttyhack sh -l' > "$shell_script"
    make_initrd "${INITRAMFS[$k]}" "$shell_script" "$initrd"
    rm -f "$shell_script"
    boot "${VMLINUX[$k]}" "$initrd" "" 0 "$BUILD"
    rm -f "$initrd"
    exit 0
fi

# The runs: every test on each of its kernels, or those named.
runs=()
if [ $# -eq 0 ]; then
    for f in "$E2E_DIR"/tests/*.sh; do
        n=$(basename "$f" .sh)
        for k in $(test_kernels "$f"); do runs+=("$n@$k"); done
    done
else
    for a in "$@"; do
        n=${a%@*}
        if [ ! -f "$E2E_DIR/tests/$n.sh" ]; then
            fail "$a: no such test (tests/e2e/tests/$n.sh)"
            continue
        fi
        if [ "$n" != "$a" ]; then
            runs+=("$a")
        else
            for k in $(test_kernels "$E2E_DIR/tests/$n.sh"); do runs+=("$n@$k"); done
        fi
    done
fi

kernels=$(printf '%s\n' "${runs[@]}" | sed 's/.*@//' | sort -u)
if [ ${#runs[@]} -gt 0 ]; then
    # shellcheck disable=SC2086
    prepare $kernels
fi
for r in "${runs[@]}"; do
    run_one "${r%@*}" "${r#*@}"
done
echo "e2e: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
