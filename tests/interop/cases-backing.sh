# shellcheck shell=bash
# Interoperability cases for backing chains, sourced by run.sh after its own
# cases are defined (they use its helpers: new_reference, *_create,
# *_writes, verify, must, x, check_clean).
#
# The case's image ($CASE_DIR/img.qcow2) is always the top of the chain:
# push_layer moves it down (renames it) and puts a new, empty overlay in its
# place, named relative to the overlay's directory as users do.  The raw
# reference and the write history then describe what the top image reads
# through its whole chain, so verify checks the chain.  Every lower layer
# must stay clean for both programs' qemu-img check.

# img_of WHO: that side's qemu-img.
img_of() {
    if [ "$1" = qemu ]; then echo "$QEMU_IMG"; else echo "$OURS_IMG"; fi
}

# push_layer NAME WHO [CREATE_OPTIONS]: the image becomes NAME.qcow2, and
# WHO creates the new top image on it.
push_layer() {
    local name=$1 who=$2 opts=${3:-}
    x mv "$CASE_DIR/img.qcow2" "$CASE_DIR/$name.qcow2"
    must "$(img_of "$who")" create -q -f qcow2 ${opts:+-o "$opts"} -b "$name.qcow2" -F qcow2 \
        "$CASE_DIR/img.qcow2"
}

# check_layers NAME...: both checks are clean on the lower layers.
check_layers() {
    local name
    for name in "$@"; do
        check_clean "$QEMU_IMG" "$CASE_DIR/$name.qcow2"
        check_clean "$OURS_IMG" "$CASE_DIR/$name.qcow2"
    done
}

# A chain of three images, each layer written by the other side: reads
# through the chain, copy-on-write from the backing file (partial writes),
# zero clusters and discards over backing data.  EXTRA: more create options
# for every layer.  Version 2 images cannot record zeroes: a discard there
# lets the backing file show through (QEMU's rule too), so their layers get
# no discards.
backing_layers() {
    local first=$1 second=$2 cs=$3 extra=${4:+,$4} ops=()
    new_reference $SIZE
    "${first}_create" "cluster_size=$cs$extra" $SIZE
    writes_by "$first" first_writes "$cs"
    push_layer base "$second" "cluster_size=$cs$extra"
    verify $SIZE
    mapfile -t ops < <(second_writes "$cs" $SIZE)
    if [[ $extra == *compat=0.10* ]]; then
        mapfile -t ops < <(printf '%s\n' "${ops[@]}" | grep -v '^discard')
    fi
    "${second}_writes" "${ops[@]}"
    verify $SIZE
    check_layers base
    push_layer mid "$first" "cluster_size=$cs$extra"
    mapfile -t ops < <(concurrent_writes "$cs" 64)
    "${first}_writes" "${ops[@]}"
    verify $SIZE
    check_layers base mid
}

# first builds a chain of three; second rebases its top image, safely:
# onto an unrelated image (which the case writes first), onto the base
# (dropping the middle), onto nothing; the top image reads the same.
backing_rebase() {
    local first=$1 second=$2 cs=$3
    new_reference $SIZE
    "${first}_create" "cluster_size=$cs" $SIZE
    writes_by "$first" first_writes "$cs"
    push_layer base "$first" "cluster_size=$cs"
    writes_by "$first" second_writes "$cs"
    push_layer mid "$first" "cluster_size=$cs"
    "${first}_writes" "write -P 0x5a $((3 * cs + 7)) $((2 * cs))" \
        "write -z $((11 * cs)) $cs" "write -P 0x5b $((SIZE / 2 - 100)) 300"
    verify $SIZE
    must "$(img_of "$second")" create -q -f qcow2 -o "cluster_size=$cs" "$CASE_DIR/other.qcow2" $SIZE
    must "$QEMU_IO" -f qcow2 -c "write -P 0x11 0 $((8 * cs))" -c "write -P 0x6c $((SIZE / 4)) $MiB" \
        "$CASE_DIR/other.qcow2"
    must "$(img_of "$second")" rebase -b other.qcow2 -F qcow2 "$CASE_DIR/img.qcow2"
    verify $SIZE
    check_layers other mid base
    must "$(img_of "$second")" rebase -b base.qcow2 -F qcow2 "$CASE_DIR/img.qcow2"
    verify $SIZE
    must "$(img_of "$second")" rebase -b "" "$CASE_DIR/img.qcow2"
    verify $SIZE
    if x "$QEMU_IMG" info "$CASE_DIR/img.qcow2" | grep -q "^backing file"; then
        echo "rebase -b '' left a backing file"
        return 1
    fi
}

# Unsafe rebase repairs a moved backing file; the other side reads on.
backing_rebase_unsafe() {
    local first=$1 second=$2 cs=$3
    new_reference $SIZE
    "${first}_create" "cluster_size=$cs" $SIZE
    writes_by "$first" first_writes "$cs"
    push_layer base "$first" "cluster_size=$cs"
    writes_by "$first" second_writes "$cs"
    x mv "$CASE_DIR/base.qcow2" "$CASE_DIR/moved.qcow2"
    must "$(img_of "$second")" rebase -u -b moved.qcow2 -F qcow2 "$CASE_DIR/img.qcow2"
    verify $SIZE
    check_layers moved
}

# first builds a chain of three; second commits: the top image into the
# middle one (the top is emptied), then the middle one into the base.
# Every image still reads what the top one did.
backing_commit() {
    local first=$1 second=$2 cs=$3 ops=()
    new_reference $SIZE
    "${first}_create" "cluster_size=$cs" $SIZE
    writes_by "$first" first_writes "$cs"
    push_layer base "$first" "cluster_size=$cs"
    writes_by "$first" second_writes "$cs"
    push_layer mid "$first" "cluster_size=$cs"
    mapfile -t ops < <(concurrent_writes "$cs" 64)
    "${first}_writes" "${ops[@]}"
    verify $SIZE
    must "$(img_of "$second")" commit "$CASE_DIR/img.qcow2"
    verify $SIZE
    verify $SIZE "$CASE_DIR/mid.qcow2"
    must "$(img_of "$second")" commit -d "$CASE_DIR/mid.qcow2"
    verify $SIZE "$CASE_DIR/base.qcow2"
    verify $SIZE
    check_layers mid base
    # The first side writes on and commits straight into the base (-b).
    "${first}_writes" "write -P 0x7e $((5 * cs - 1)) $((2 * cs + 2))" "write -z $cs $cs"
    must "$(img_of "$first")" commit -b base.qcow2 "$CASE_DIR/img.qcow2"
    verify $SIZE
    verify $SIZE "$CASE_DIR/base.qcow2"
}

# first builds a chain; second flattens it (convert) and converts its top
# layer into an overlay on the same base (-B); both results read the same.
backing_convert() {
    local first=$1 second=$2 cs=$3
    new_reference $SIZE
    "${first}_create" "cluster_size=$cs" $SIZE
    writes_by "$first" first_writes "$cs"
    push_layer base "$first" "cluster_size=$cs"
    writes_by "$first" second_writes "$cs"
    verify $SIZE
    must "$(img_of "$second")" convert -O qcow2 -o "cluster_size=$cs" "$CASE_DIR/img.qcow2" \
        "$CASE_DIR/flat.qcow2"
    verify $SIZE "$CASE_DIR/flat.qcow2"
    must "$(img_of "$second")" convert -O qcow2 -B base.qcow2 -F qcow2 "$CASE_DIR/img.qcow2" \
        "$CASE_DIR/over.qcow2"
    verify $SIZE "$CASE_DIR/over.qcow2"
    must "$QEMU_IMG" compare "$CASE_DIR/over.qcow2" "$CASE_DIR/img.qcow2"
    must "$OURS_IMG" compare "$CASE_DIR/flat.qcow2" "$CASE_DIR/over.qcow2"
}

for cs in 512 65536; do
    run_case "backing-layers ours-then-qemu cluster_size=$cs" backing_layers ours qemu "$cs"
    run_case "backing-layers qemu-then-ours cluster_size=$cs" backing_layers qemu ours "$cs"
done
run_case "backing-layers ours-then-qemu compat=0.10" backing_layers ours qemu 65536 compat=0.10
run_case "backing-layers qemu-then-ours compat=0.10" backing_layers qemu ours 65536 compat=0.10
for first in ours qemu; do
    second=qemu
    if [ "$first" = qemu ]; then
        second=ours
    fi
    run_case "backing-rebase $first-then-$second cluster_size=65536" \
        backing_rebase "$first" "$second" 65536
    run_case "backing-rebase-unsafe $first-then-$second" \
        backing_rebase_unsafe "$first" "$second" 65536
    run_case "backing-commit $first-then-$second cluster_size=65536" \
        backing_commit "$first" "$second" 65536
    run_case "backing-convert $first-then-$second cluster_size=65536" \
        backing_convert "$first" "$second" 65536
done
run_case "backing-rebase ours-then-ours cluster_size=4096" backing_rebase ours ours 4096
run_case "backing-commit ours-then-ours cluster_size=512" backing_commit ours ours 512
