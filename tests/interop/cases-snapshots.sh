# shellcheck shell=bash
# Interoperability cases for internal snapshots managed by both programs,
# sourced by run.sh after its own cases are defined (they use its helpers:
# new_reference, *_create, *_writes, verify, must, x).
#
# Each program takes snapshots the other lists, applies and deletes; both
# list them identically (qemu-img snapshot -l, qemu-img info in both
# formats), every snapshot keeps the data of its moment, writes after an
# apply copy what the snapshots share, and both checks stay clean.

# snapshot_by WHO ARGS...: WHO's qemu-img snapshot on the case's image.
snapshot_by() {
    local who=$1 prog=$OURS_IMG
    shift
    if [ "$who" = qemu ]; then
        prog=$QEMU_IMG
    fi
    must "$prog" snapshot "$@" "$CASE_DIR/img.qcow2"
}

# The model of the image (raw reference and write history) at a snapshot,
# saved when it is taken and brought back when it is applied.
save_state() {
    x cp "$CASE_DIR/ref.raw" "$CASE_DIR/state-$1.raw"
    x cp "$CASE_DIR/history" "$CASE_DIR/state-$1.history"
}
restore_state() {
    x cp "$CASE_DIR/state-$1.raw" "$CASE_DIR/ref.raw"
    x cp "$CASE_DIR/state-$1.history" "$CASE_DIR/history"
}

# Both programs describe the snapshots byte for byte alike.
same_listings() {
    local img=$CASE_DIR/img.qcow2 args
    for args in "snapshot -l" "info" "info --output=json"; do
        # shellcheck disable=SC2086
        if ! diff <(x "$QEMU_IMG" $args "$img" 2>&1) <(x "$OURS_IMG" $args "$img" 2>&1) \
            > "$CASE_DIR/listing.diff"; then
            echo "qemu-img $args differs (< QEMU, > ours):"
            head -n 20 "$CASE_DIR/listing.diff"
            return 1
        fi
    done
    if ! x "$QEMU_IMG" snapshot -l "$img" | grep -q "^Snapshot list:"; then
        echo "QEMU lists no snapshots"
        return 1
    fi
}

# Snapshots taken, applied and deleted by both sides in turn.
snapshots_both_ways() {
    local first=$1 second=$2 cs=$3 opts=${4:-} ops=()
    new_reference $SIZE
    "${first}_create" "cluster_size=$cs${opts:+,$opts}" $SIZE
    writes_by "$first" first_writes "$cs"
    snapshot_by "$first" -c "first's"
    save_state a
    writes_by "$second" second_writes "$cs"
    snapshot_by "$second" -c "second's"
    save_state b
    mapfile -t ops < <(concurrent_writes "$cs" 96)
    "${first}_writes" "${ops[@]}"
    same_listings
    verify $SIZE

    # Each side goes back to the other's snapshot and writes on.
    snapshot_by "$second" -a "first's"
    restore_state a
    verify $SIZE
    writes_by "$second" second_writes "$cs"
    verify $SIZE
    snapshot_by "$first" -a 2
    restore_state b
    verify $SIZE
    mapfile -t ops < <(concurrent_writes "$cs" 112)
    "${first}_writes" "${ops[@]}"
    verify $SIZE

    # Each side deletes the other's snapshot; the data stays.
    snapshot_by "$first" -d "second's"
    same_listings
    verify $SIZE
    snapshot_by "$second" -d "first's"
    verify $SIZE
    if [ -n "$(x "$QEMU_IMG" snapshot -l "$CASE_DIR/img.qcow2")" ]; then
        echo "snapshots left after deleting them all"
        return 1
    fi
}

for cs in 4096 65536; do
    run_case "snapshots ours-then-qemu cluster_size=$cs" snapshots_both_ways ours qemu "$cs"
    run_case "snapshots qemu-then-ours cluster_size=$cs" snapshots_both_ways qemu ours "$cs"
done
run_case "snapshots ours-then-qemu compat=0.10 cluster_size=512" \
    snapshots_both_ways ours qemu 512 compat=0.10
run_case "snapshots qemu-then-ours lazy_refcounts=on cluster_size=65536" \
    snapshots_both_ways qemu ours 65536 lazy_refcounts=on
run_case "snapshots ours-then-qemu refcount_bits=64 cluster_size=65536" \
    snapshots_both_ways ours qemu 65536 refcount_bits=64
