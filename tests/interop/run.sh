#!/bin/bash
# The qcow2 interoperability suite: images written by our driver must be
# valid and identical for Debian's QEMU (qemu-img check, qemu-io read -P,
# qemu-img compare against a raw reference), and images QEMU wrote must read
# back identically through our driver and stay valid when ours writes on.
# See docs/devel/testing-interop.rst.
#
#   tests/interop/run.sh [BUILD_DIR [NAME_FILTER]]
#
# BUILD_DIR defaults to build/; NAME_FILTER runs only the cases whose name
# contains it.  Prints PASS/FAIL per case (a failure shows the commands that
# reproduce it) and ends with "interop: N passed, N failed"; the exit status
# is non-zero when a case failed.  INTEROP_JOBS cases run at once (default
# 2), INTEROP_TIMEOUT bounds each command (seconds, default 300) and
# INTEROP_KEEP=1 keeps the scratch images.
set -uo pipefail

INTEROP_DIR=$(cd "$(dirname "$0")" && pwd)
build=${1:-$INTEROP_DIR/../../build}
filter=${2:-}
if ! build=$(cd "$build" 2>/dev/null && pwd); then
    echo "interop: no build directory '${1:-build}'"
    echo "interop: 0 passed, 1 failed"
    exit 1
fi
OURS_IMG=$build/qemu-img
OURS_IO=$build/qemu-io
OURS_CMP=$build/tests/interop/interop-compare
QEMU_IMG=/usr/bin/qemu-img
QEMU_IO=/usr/bin/qemu-io
for prog in "$OURS_IMG" "$OURS_IO" "$OURS_CMP" "$QEMU_IMG" "$QEMU_IO"; do
    if [ ! -x "$prog" ]; then
        echo "interop: missing $prog"
        echo "interop: 0 passed, 1 failed"
        exit 1
    fi
done

# shellcheck source=tests/interop/lib.sh
. "$INTEROP_DIR/lib.sh"

work=$(mktemp -d "${TMPDIR:-/tmp}/interop.XXXXXX")
if [ "${INTEROP_KEEP:-0}" = 1 ]; then
    echo "interop: scratch images kept in $work"
else
    trap 'rm -rf "$work"' EXIT
fi

KiB=1024
MiB=$((1024 * 1024))
GiB=$((1024 * MiB))
passed=0
failed=0
skips=()
queue=()

# run_case NAME FUNCTION ARGS...: queues one case (see run_queue).
run_case() {
    if [ -n "$filter" ] && [[ $1 != *"$filter"* ]]; then
        return
    fi
    queue+=("$(printf '%q ' "$@")")
}

skip_case() {
    if [ -n "$filter" ] && [[ $1 != *"$filter"* ]]; then
        return
    fi
    skips+=("SKIP $1: $2")
}

# Runs queued case $1 in a subshell with set -e; writes its report to
# $work/report-$1 (first line PASS or FAIL).
run_one() {
    local i=$1 name rc out start end report
    eval "set -- ${queue[$i]}"
    name=$1
    shift
    CASE_DIR=$work/case-$i
    mkdir -p "$CASE_DIR"
    : > "$CASE_DIR/history"
    printf 'mkdir -p %q\n' "$CASE_DIR" > "$CASE_DIR/commands"
    start=$(date +%s%N)
    out=$( (set -e; ours_write_count=0; "$@") 2>&1)
    rc=$?
    end=$(date +%s%N)
    if [ "$rc" -eq 0 ]; then
        report=$(printf 'PASS %s (%d ms)' "$name" $(((end - start) / 1000000)))
    else
        report=$(printf 'FAIL %s\n' "$name"
                 sed 's/^/    /' <<<"$out"
                 echo "    reproduce with:"
                 sed 's/^/      /' "$CASE_DIR/commands")
    fi
    if [ "${INTEROP_KEEP:-0}" != 1 ]; then
        rm -rf "$CASE_DIR"
    fi
    printf '%s\n' "$report" > "$work/report-$i.tmp"
    mv "$work/report-$i.tmp" "$work/report-$i"
}

# Runs the queue, INTEROP_JOBS cases at a time (default 2: the tools spend
# most of their time waiting for fsync), printing reports in queue order.
run_queue() {
    local jobs=${INTEROP_JOBS:-2} running=0 next_report=0 i
    for ((i = 0; i < ${#queue[@]}; i++)); do
        if [ "$running" -ge "$jobs" ]; then
            wait -n
            running=$((running - 1))
        fi
        run_one "$i" &
        running=$((running + 1))
        print_reports
    done
    wait
    print_reports
}

# Prints the finished reports that are next in queue order.
print_reports() {
    while [ "$next_report" -lt "${#queue[@]}" ] && [ -f "$work/report-$next_report" ]; do
        cat "$work/report-$next_report"
        if grep -q '^PASS' "$work/report-$next_report"; then
            passed=$((passed + 1))
        else
            failed=$((failed + 1))
        fi
        next_report=$((next_report + 1))
    done
}

# Reads a big-endian header field of the case's image.
header_field() {
    local offset=$1 bytes=$2
    od -An -tx1 -j "$offset" -N "$bytes" "$CASE_DIR/img.qcow2" | tr -d ' \n' |
        { read -r hex; echo $((16#$hex)); }
}

# --- Cases ------------------------------------------------------------------------

SIZE=$((64 * MiB))

# Ours creates and writes, QEMU verifies, writes on and verifies again (and
# so do we).
ours_first() {
    local opts=$1 cs=$2
    new_reference $SIZE
    ours_create "$opts,cluster_size=$cs" $SIZE
    writes_by ours first_writes "$cs"
    verify $SIZE
    writes_by qemu second_writes "$cs"
    verify $SIZE
}

# The other way round.
qemu_first() {
    local opts=$1 cs=$2
    new_reference $SIZE
    qemu_create "$opts,cluster_size=$cs" $SIZE
    writes_by qemu first_writes "$cs"
    verify $SIZE
    writes_by ours second_writes "$cs"
    verify $SIZE
}

# QEMU compresses every data cluster (qemu-img convert -c); ours reads them
# and then overwrites, zeroes and discards parts of them.
qemu_compressed() {
    local opts=$1 cs=$2 ops=() out
    new_reference $SIZE
    mapfile -t ops < <(first_writes "$cs" $SIZE)
    reference_writes "${ops[@]}"
    must "$QEMU_IMG" convert -c -f raw -O qcow2 -o "$opts,cluster_size=$cs" \
        "$CASE_DIR/ref.raw" "$CASE_DIR/img.qcow2"
    out=$(x "$QEMU_IMG" check "$CASE_DIR/img.qcow2")
    if grep -q " 0.00% compressed clusters" <<<"$out"; then
        echo "qemu-img convert -c made no compressed clusters: $out"
        return 1
    fi
    verify $SIZE
    writes_by ours second_writes "$cs"
    verify $SIZE
}

# Ours writes compressed clusters (qemu-io write -c), QEMU reads them and
# overwrites parts of them.
ours_compressed() {
    local opts=$1 cs=$2 ops=()
    new_reference $SIZE
    ours_create "$opts,cluster_size=$cs" $SIZE
    ops=("write -c -P 0x31 0 $((8 * cs))"
         "write -c -P 0x32 $((16 * cs)) $cs"
         "write -c -P 0x33 $((SIZE - 2 * cs)) $((2 * cs))"
         "write -c -P 0x34 $((20 * cs)) $cs")
    ours_writes "${ops[@]}"
    verify $SIZE
    writes_by qemu second_writes "$cs"
    verify $SIZE
}

# Ours creates a preallocated image; QEMU checks it empty, after our writes
# and after its own.
ours_preallocated() {
    local mode=$1 cs=$2
    new_reference $SIZE
    ours_create "preallocation=$mode,cluster_size=$cs" $SIZE
    verify $SIZE
    writes_by ours first_writes "$cs"
    verify $SIZE
    writes_by qemu second_writes "$cs"
    verify $SIZE
}

# 512-byte clusters and ~20 MiB of data spread out: the image outgrows its
# first refcount table (and its L2 tables fill the file) with the first
# writer; the second writer grows it further.
refcount_growth() {
    local first=$1 second=$2 refcount_bits=$3 size=$((512 * MiB)) ops=() clusters
    new_reference $size
    "${first}_create" "cluster_size=512,refcount_bits=$refcount_bits" $size
    clusters=$(header_field 56 4)
    mapfile -t ops < <(spread_writes 0 $MiB 160 $((128 * KiB)) 0x5b)
    "${first}_writes" "${ops[@]}"
    if [ "$(header_field 56 4)" -le "$clusters" ]; then
        echo "the refcount table did not grow ($clusters clusters)"
        return 1
    fi
    verify $size
    clusters=$(header_field 56 4)
    mapfile -t ops < <(spread_writes $((200 * MiB + 300)) $((MiB + 512)) 120 $((128 * KiB)) 0x5c)
    "${second}_writes" "${ops[@]}"
    if [ "$(header_field 56 4)" -le "$clusters" ]; then
        echo "the refcount table did not grow ($clusters clusters)"
        return 1
    fi
    verify $size
}

# The first writer grows the disk (qemu-io truncate, which moves the L1
# table) and writes past the old end; the second grows it again with
# `resize` (QEMU's qemu-img resize, or our qemu-io truncate) and writes on.
l1_growth() {
    local first=$1 second=$2 cs=$3 ops=() l1 grown=$((GiB + 3 * MiB)) final=$((2 * GiB))
    new_reference $SIZE
    "${first}_create" "cluster_size=$cs" $SIZE
    mapfile -t ops < <(first_writes "$cs" $SIZE)
    l1=$(header_field 36 4)
    "${first}_writes" "${ops[@]}" "truncate $grown" \
        "write -P 0xc1 $((SIZE - 100)) $((2 * cs))" \
        "write -P 0xc2 $((grown - 5000)) 5000"
    if [ "$(header_field 36 4)" -le "$l1" ]; then
        echo "the L1 table did not grow ($l1 entries)"
        return 1
    fi
    verify $SIZE
    if [ "$second" = qemu ]; then
        must "$QEMU_IMG" resize -q -f qcow2 "$CASE_DIR/img.qcow2" $final
        reference_writes "truncate $final"
        qemu_writes "write -P 0xc3 $((final - 7 * cs - 3)) $((3 * cs))" \
            "write -P 0xc4 $((grown - 10)) 20"
    else
        ours_writes "truncate $final" \
            "write -P 0xc3 $((final - 7 * cs - 3)) $((3 * cs))" \
            "write -P 0xc4 $((grown - 10)) 20"
    fi
    verify $SIZE
}

# The first writer shrinks the disk to half (dropping the data past it) and
# grows it back, where it must read as zeroes; the second writes on.
shrink_grow() {
    local first=$1 second=$2 cs=$3 ops=()
    new_reference $SIZE
    "${first}_create" "cluster_size=$cs" $SIZE
    mapfile -t ops < <(first_writes "$cs" $SIZE)
    "${first}_writes" "${ops[@]}" "truncate $((SIZE / 2 - 3 * cs))" "truncate $SIZE" \
        "write -P 0xd1 $((SIZE / 2 - 4 * cs + 7)) $((2 * cs))"
    verify $SIZE
    writes_by "$second" second_writes "$cs"
    verify $SIZE
}

# Both writers issue concurrent requests: the first into unallocated
# clusters (after its ordinary writes), the second over allocated ones.
concurrent() {
    local first=$1 second=$2 cs=$3 ops=() more=()
    new_reference $SIZE
    "${first}_create" "cluster_size=$cs" $SIZE
    mapfile -t ops < <(first_writes "$cs" $SIZE)
    mapfile -t more < <(concurrent_writes "$cs" 64)
    "${first}_writes" "${ops[@]}" "${more[@]}"
    verify $SIZE
    mapfile -t ops < <(concurrent_writes "$cs" 96)
    "${second}_writes" "${ops[@]}"
    verify $SIZE
}

# Internal snapshots: the first writer's data is kept in a snapshot taken
# by QEMU; the second writer must copy every cluster it touches (refcount
# 2, no COPIED flag).  The snapshot must still hold the old data, and
# deleting it must leave consistent refcounts.
snapshot() {
    local first=$1 second=$2 cs=$3
    new_reference $SIZE
    "${first}_create" "cluster_size=$cs" $SIZE
    writes_by "$first" first_writes "$cs"
    must "$QEMU_IMG" snapshot -c snap1 "$CASE_DIR/img.qcow2"
    x cp "$CASE_DIR/ref.raw" "$CASE_DIR/snap1.raw"
    writes_by "$second" second_writes "$cs"
    verify $SIZE
    must "$QEMU_IMG" convert -l snap1 -f qcow2 -O raw "$CASE_DIR/img.qcow2" "$CASE_DIR/snap1-now.raw"
    must "$QEMU_IMG" compare -f raw -F raw "$CASE_DIR/snap1-now.raw" "$CASE_DIR/snap1.raw"
    must "$QEMU_IMG" snapshot -d snap1 "$CASE_DIR/img.qcow2"
    verify $SIZE
}

# killed_writes WHO CMD...: WHO's qemu-io runs the commands and a flush,
# then dies (SIGKILL) without closing the image.
killed_writes() {
    local who=$1 io out op args=()
    shift
    io=$OURS_IO
    if [ "$who" = qemu ]; then
        io=$QEMU_IO
    fi
    mapfile -d '' args < <(io_args "$@" flush "sigraise 9")
    out=$( (x "$io" -f qcow2 -d unmap "${args[@]}" "$CASE_DIR/img.qcow2"; true) 2>&1)
    if grep -qiE "fail|error" <<<"$out"; then
        echo "command failed: $io ... $CASE_DIR/img.qcow2"
        head -n 20 <<<"$out"
        return 1
    fi
    reference_writes "$@"
}

# Lazy refcounts, and the first writer dies: the image is left dirty with
# refcounts behind.  The second writer must repair it when it opens it.
lazy_refcounts_dirty() {
    local first=$1 second=$2 cs=$3 ops=() out
    new_reference $SIZE
    "${first}_create" "cluster_size=$cs,lazy_refcounts=on" $SIZE
    mapfile -t ops < <(first_writes "$cs" $SIZE)
    killed_writes "$first" "${ops[@]}"
    out=$(x "$QEMU_IMG" info "$CASE_DIR/img.qcow2")
    if ! grep -q "^cleanly shut down: no" <<<"$out"; then
        echo "the killed writer left the image marked clean"
        return 1
    fi
    mapfile -t ops < <(second_writes "$cs" $SIZE)
    repairing=1 "${second}_writes" "${ops[@]}"
    verify $SIZE
}

# Does our qemu-io write compressed clusters?
ours_write_compressed_supported() {
    local img=$work/probe.qcow2 out
    "$OURS_IMG" create -q -f qcow2 "$img" 1M >/dev/null 2>&1 || return 1
    out=$("$OURS_IO" -c "write -c 0 64k" "$img" 2>&1)
    rm -f "$img"
    ! grep -q "write failed" <<<"$out"
}

cluster_sizes=(512 4096 65536 2097152)

for cs in "${cluster_sizes[@]}"; do
    for rb in 1 16 64; do
        run_case "ours-first compat=1.1 cluster_size=$cs refcount_bits=$rb" \
            ours_first "compat=1.1,refcount_bits=$rb" "$cs"
        run_case "qemu-first compat=1.1 cluster_size=$cs refcount_bits=$rb" \
            qemu_first "compat=1.1,refcount_bits=$rb" "$cs"
    done
    run_case "ours-first compat=0.10 cluster_size=$cs" ours_first "compat=0.10" "$cs"
    run_case "qemu-first compat=0.10 cluster_size=$cs" qemu_first "compat=0.10" "$cs"
done
for cs in 512 65536; do
    run_case "ours-first lazy_refcounts=on cluster_size=$cs" ours_first "lazy_refcounts=on" "$cs"
    run_case "qemu-first lazy_refcounts=on cluster_size=$cs" qemu_first "lazy_refcounts=on" "$cs"
done
run_case "ours-first compression_type=zstd cluster_size=65536" \
    ours_first "compression_type=zstd" 65536
run_case "qemu-first compression_type=zstd cluster_size=65536" \
    qemu_first "compression_type=zstd" 65536

for cs in 512 4096 65536 2097152; do
    run_case "qemu-compressed compression_type=zlib cluster_size=$cs" \
        qemu_compressed "compression_type=zlib" "$cs"
done
for cs in 4096 65536 2097152; do
    run_case "qemu-compressed compression_type=zstd cluster_size=$cs" \
        qemu_compressed "compression_type=zstd" "$cs"
done
run_case "qemu-compressed compat=0.10 cluster_size=65536" qemu_compressed "compat=0.10" 65536
run_case "qemu-compressed refcount_bits=1 cluster_size=4096" qemu_compressed "refcount_bits=1" 4096

if ours_write_compressed_supported; then
    for ct in zlib zstd; do
        for cs in 4096 65536; do
            run_case "ours-compressed compression_type=$ct cluster_size=$cs" \
                ours_compressed "compression_type=$ct" "$cs"
        done
    done
else
    skip_case "ours-compressed" "our qemu-io does not support write -c"
fi

for mode in metadata falloc full; do
    run_case "ours-preallocation=$mode cluster_size=65536" ours_preallocated "$mode" 65536
done
run_case "ours-preallocation=metadata cluster_size=512" ours_preallocated metadata 512

for rb in 16 64; do
    run_case "refcount-table-growth ours-then-qemu refcount_bits=$rb" refcount_growth ours qemu "$rb"
    run_case "refcount-table-growth qemu-then-ours refcount_bits=$rb" refcount_growth qemu ours "$rb"
done
for cs in 512 65536; do
    run_case "l1-growth ours-then-qemu cluster_size=$cs" l1_growth ours qemu "$cs"
    run_case "l1-growth qemu-then-ours cluster_size=$cs" l1_growth qemu ours "$cs"
done

for cs in 4096 65536; do
    run_case "snapshot qemu-then-ours cluster_size=$cs" snapshot qemu ours "$cs"
    run_case "snapshot ours-then-ours cluster_size=$cs" snapshot ours ours "$cs"
    run_case "lazy-refcounts-dirty qemu-then-ours cluster_size=$cs" lazy_refcounts_dirty qemu ours "$cs"
    run_case "lazy-refcounts-dirty ours-then-qemu cluster_size=$cs" lazy_refcounts_dirty ours qemu "$cs"
done
run_case "snapshot ours-then-qemu cluster_size=512" snapshot ours qemu 512
for cs in 512 4096 65536; do
    run_case "concurrent ours-then-qemu cluster_size=$cs" concurrent ours qemu "$cs"
    run_case "concurrent qemu-then-ours cluster_size=$cs" concurrent qemu ours "$cs"
done
for cs in 512 65536; do
    run_case "shrink-grow ours-then-qemu cluster_size=$cs" shrink_grow ours qemu "$cs"
    run_case "shrink-grow qemu-then-ours cluster_size=$cs" shrink_grow qemu ours "$cs"
done
# shellcheck source=tests/interop/cases-subclusters-data-file.sh
. "$INTEROP_DIR/cases-subclusters-data-file.sh"
# shellcheck source=tests/interop/cases-snapshots.sh
. "$INTEROP_DIR/cases-snapshots.sh"
# shellcheck source=tests/interop/cases-maintenance.sh
. "$INTEROP_DIR/cases-maintenance.sh"
# shellcheck source=tests/interop/cases-backing.sh
. "$INTEROP_DIR/cases-backing.sh"
# shellcheck source=tests/interop/cases-qemu-nbd.sh
. "$INTEROP_DIR/cases-qemu-nbd.sh"
run_queue
if [ ${#skips[@]} -gt 0 ]; then
    printf '%s\n' "${skips[@]}"
fi
echo "interop: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
