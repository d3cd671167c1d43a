# shellcheck shell=bash
# Interoperability cases for image maintenance, sourced by run.sh after its
# own cases are defined (they use its helpers: new_reference, *_create,
# *_writes, verify, must, x, first_writes, second_writes).
#
# - bitmaps: images with persistent dirty bitmaps (made by QEMU's qemu-img
#   bitmap) written by ours and by QEMU stay valid for both, and ours and
#   QEMU leave the same bits dirty (QEMU reads them: qemu-nbd -B and
#   qemu-img map), through writes, zero writes, discards and resizes;
# - amend: ours amends (compat, refcount_bits, lazy_refcounts) an image
#   exactly as QEMU does (the results are byte for byte the same), then the
#   other side writes on;
# - zstd: ours compresses with zstd (qemu-img convert -c) what QEMU reads,
#   checks, compares and writes on;
# - measure and dd give what QEMU's give.

# --- Bitmaps -------------------------------------------------------------------

# bitmap_dirty IMAGE NAME: the dirty ranges of a bitmap, as QEMU reads them.
# qemu-nbd runs as our child, so that it is gone (its locks released) as
# soon as it is killed and waited for; nothing between its start and the
# kill can fail, and its output goes to a file (an orphan holding the
# case's output pipe would hang the suite).
bitmap_dirty() {
    local sock=$CASE_DIR/nbd.sock pid tries=0 out
    rm -f "$sock"
    printf '%s\n' "${QEMU_NBD@Q} -r -t -k ${sock@Q} -f qcow2 -B ${2@Q} ${1@Q} &" >> "$CASE_DIR/commands"
    "$QEMU_NBD" -r -t -k "$sock" -f qcow2 -B "$2" "$1" > "$CASE_DIR/nbd.log" 2>&1 < /dev/null &
    pid=$!
    while [ ! -S "$sock" ] && [ $tries -lt 500 ]; do
        sleep 0.01
        tries=$((tries + 1))
    done
    out=$(x "$QEMU_IMG" map --output=json --image-opts \
        "driver=nbd,server.type=unix,server.path=$sock,x-dirty-bitmap=qemu:dirty-bitmap:$2" 2>&1) ||
        true
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    sed -n 's/^.*"start": \([0-9]*\), "length": \([0-9]*\),.*"data": false.*$/\1 \2/p' <<<"$out"
    if ! grep -q '^\[' <<<"$out"; then
        echo "qemu-img map of bitmap $2 failed: $out" >&2
        return 1
    fi
}

# The image and its twin (which QEMU alone wrote since the copy) have the
# same bitmaps, the same bits dirty in each, and both programs list them
# alike.
same_bitmaps() {
    local img=$CASE_DIR/img.qcow2 twin=$CASE_DIR/twin.qcow2 name
    if ! diff <(x "$QEMU_IMG" info --output=json "$img" | grep -v -e '"filename"' -e '"actual-size"') \
              <(x "$QEMU_IMG" info --output=json "$twin" | grep -v -e '"filename"' -e '"actual-size"') \
              > "$CASE_DIR/info.diff"; then
        echo "qemu-img info differs between ours (<) and QEMU's (>) writes:"
        head -n 20 "$CASE_DIR/info.diff"
        return 1
    fi
    if ! diff <(x "$QEMU_IMG" info --output=json "$img") <(x "$OURS_IMG" info --output=json "$img") \
              > "$CASE_DIR/info.diff"; then
        echo "qemu-img info --output=json differs (< QEMU, > ours):"
        head -n 20 "$CASE_DIR/info.diff"
        return 1
    fi
    if x "$QEMU_IMG" info "$img" | grep -q "in-use"; then
        echo "a bitmap was left in use"
        return 1
    fi
    for name in "$@"; do
        bitmap_dirty "$img" "$name" > "$CASE_DIR/dirty-ours"
        bitmap_dirty "$twin" "$name" > "$CASE_DIR/dirty-qemu"
        if [ "$name" = auto ] && [ ! -s "$CASE_DIR/dirty-ours" ]; then
            echo "bitmap auto: nothing dirty after the writes"
            return 1
        fi
        if ! diff "$CASE_DIR/dirty-ours" "$CASE_DIR/dirty-qemu" > "$CASE_DIR/dirty.diff"; then
            echo "bitmap $name: dirty ranges differ (< ours, > QEMU):"
            head -n 20 "$CASE_DIR/dirty.diff"
            return 1
        fi
    done
}

# twin_writes CMD...: QEMU applies the commands to the twin only.
twin_writes() {
    local args=()
    mapfile -d '' args < <(io_args "$@")
    must "$QEMU_IO" -f qcow2 -d unmap "${args[@]}" "$CASE_DIR/twin.qcow2"
}

BITMAPS=(auto fine coarse off)

# FIRST creates the image and writes; QEMU adds bitmaps; ours writes the
# image while QEMU writes the same to a twin; QEMU writes on both.
bitmaps_written() {
    local first=$1 cs=$2 ops=()
    new_reference $SIZE
    "${first}_create" "cluster_size=$cs" $SIZE
    writes_by "$first" first_writes "$cs"
    must "$QEMU_IMG" bitmap --add "$CASE_DIR/img.qcow2" auto
    must "$QEMU_IMG" bitmap --add -g 512 "$CASE_DIR/img.qcow2" fine
    must "$QEMU_IMG" bitmap --add -g 4M "$CASE_DIR/img.qcow2" coarse
    must "$QEMU_IMG" bitmap --add --disable "$CASE_DIR/img.qcow2" off
    x cp "$CASE_DIR/img.qcow2" "$CASE_DIR/twin.qcow2"
    mapfile -t ops < <(second_writes "$cs" $SIZE)
    ours_writes "${ops[@]}"
    twin_writes "${ops[@]}"
    verify $SIZE
    same_bitmaps "${BITMAPS[@]}"
    ops=("write -P 0xe1 $((7 * cs + 3)) $((cs + 9))" "write -z $((20 * cs)) $((4 * cs))"
         "discard $((40 * cs)) $((2 * cs))")
    qemu_writes "${ops[@]}"
    twin_writes "${ops[@]}"
    verify $SIZE
    same_bitmaps "${BITMAPS[@]}"
}

# Ours grows and shrinks the disk of an image with bitmaps (and writes
# between), QEMU the twin; the bitmaps follow the size alike.
bitmaps_resized() {
    local cs=$1 ops
    new_reference $SIZE
    qemu_create "cluster_size=$cs" $SIZE
    must "$QEMU_IMG" bitmap --add "$CASE_DIR/img.qcow2" auto
    must "$QEMU_IMG" bitmap --add -g 512 "$CASE_DIR/img.qcow2" fine
    must "$QEMU_IMG" bitmap --add -g 4M "$CASE_DIR/img.qcow2" coarse
    must "$QEMU_IMG" bitmap --add --disable "$CASE_DIR/img.qcow2" off
    x cp "$CASE_DIR/img.qcow2" "$CASE_DIR/twin.qcow2"
    ops=("write -P 0xe2 $((SIZE - 3 * cs)) $((2 * cs))" "truncate $((2 * SIZE))"
         "write -P 0xe3 $((SIZE + 5 * cs)) $cs" "truncate $((SIZE / 2 + 512))"
         "write -P 0xe4 $((SIZE / 2 - cs)) $cs" "truncate $SIZE")
    ours_writes "${ops[@]}"
    twin_writes "${ops[@]}"
    verify $SIZE
    same_bitmaps "${BITMAPS[@]}"
}

# --- Amend -----------------------------------------------------------------------

# FIRST creates (with OPTIONS) and writes the image, QEMU takes a snapshot
# when SNAPSHOT is 1; ours amends it with AMEND and QEMU amends a copy: the
# two results must be the same bytes.  Then QEMU writes on ours.
amended() {
    local first=$1 cs=$2 options=$3 snapshot=$4 amend=$5
    new_reference $SIZE
    "${first}_create" "cluster_size=$cs${options:+,$options}" $SIZE
    writes_by "$first" first_writes "$cs"
    if [ "$snapshot" = 1 ]; then
        must "$QEMU_IMG" snapshot -c snap "$CASE_DIR/img.qcow2"
    fi
    x cp "$CASE_DIR/img.qcow2" "$CASE_DIR/twin.qcow2"
    must "$OURS_IMG" amend -o "$amend" "$CASE_DIR/img.qcow2"
    must "$QEMU_IMG" amend -o "$amend" "$CASE_DIR/twin.qcow2"
    if ! cmp "$CASE_DIR/img.qcow2" "$CASE_DIR/twin.qcow2"; then
        echo "amend -o $amend: our image differs from QEMU's"
        return 1
    fi
    verify $SIZE
    writes_by qemu second_writes "$cs"
    verify $SIZE
}

# --- zstd ------------------------------------------------------------------------

# Ours compresses (convert -c) what the reference holds; QEMU's convert of
# the same must give the same bytes (QEMU does not pad the file's end to a
# whole cluster); QEMU verifies and writes on.
ours_convert_compressed() {
    local type=$1 cs=$2 ops=() qemu_len
    new_reference $SIZE
    mapfile -t ops < <(first_writes "$cs" $SIZE)
    reference_writes "${ops[@]}"
    must "$OURS_IMG" convert -c -f raw -O qcow2 -o "compression_type=$type,cluster_size=$cs" \
        "$CASE_DIR/ref.raw" "$CASE_DIR/img.qcow2"
    must "$QEMU_IMG" convert -c -f raw -O qcow2 -o "compression_type=$type,cluster_size=$cs" \
        "$CASE_DIR/ref.raw" "$CASE_DIR/twin.qcow2"
    if ! x "$QEMU_IMG" info "$CASE_DIR/img.qcow2" | grep -q "compression type: $type"; then
        echo "the image does not say compression type $type"
        return 1
    fi
    if x "$QEMU_IMG" check "$CASE_DIR/img.qcow2" | grep -q " 0.00% compressed clusters"; then
        echo "ours made no compressed clusters"
        return 1
    fi
    qemu_len=$(stat -c %s "$CASE_DIR/twin.qcow2")
    if ! cmp -n "$qemu_len" "$CASE_DIR/img.qcow2" "$CASE_DIR/twin.qcow2"; then
        echo "our compressed image differs from QEMU's"
        return 1
    fi
    verify $SIZE
    writes_by qemu second_writes "$cs"
    verify $SIZE
}

# --- measure and dd ----------------------------------------------------------------

# Both programs measure the image (and dd it) alike.
same_measure_dd() {
    local first=$1 cs=$2 args out
    new_reference $SIZE
    "${first}_create" "cluster_size=$cs" $SIZE
    writes_by "$first" first_writes "$cs"
    must "$QEMU_IMG" bitmap --add "$CASE_DIR/img.qcow2" auto
    for args in "-O raw" "-O qcow2" "-O qcow2 --output=json" "-O qcow2 -o cluster_size=2M" \
                "-O qcow2 -o refcount_bits=1,extended_l2=on" "-O qcow2 -o compat=0.10" \
                "-O qcow2 -o preallocation=full"; do
        # shellcheck disable=SC2086
        if ! diff <(x "$QEMU_IMG" measure $args "$CASE_DIR/img.qcow2" 2>&1) \
                  <(x "$OURS_IMG" measure $args "$CASE_DIR/img.qcow2" 2>&1) > "$CASE_DIR/measure.diff"; then
            echo "qemu-img measure $args differs (< QEMU, > ours):"
            head -n 20 "$CASE_DIR/measure.diff"
            return 1
        fi
    done
    for out in raw qcow2; do
        must "$OURS_IMG" dd -f qcow2 -O $out bs=$((3 * cs)) skip=5 if="$CASE_DIR/img.qcow2" \
            of="$CASE_DIR/dd-ours.$out"
        must "$QEMU_IMG" dd -f qcow2 -O $out bs=$((3 * cs)) skip=5 if="$CASE_DIR/img.qcow2" \
            of="$CASE_DIR/dd-qemu.$out"
        must "$QEMU_IMG" compare -f $out -F $out "$CASE_DIR/dd-ours.$out" "$CASE_DIR/dd-qemu.$out"
    done
    check_clean "$QEMU_IMG" "$CASE_DIR/dd-ours.qcow2"
}

# --- The cases ---------------------------------------------------------------------

QEMU_NBD=/usr/bin/qemu-nbd
if [ -x "$QEMU_NBD" ]; then
    for cs in 4096 65536; do
        run_case "bitmaps qemu-then-ours cluster_size=$cs" bitmaps_written qemu "$cs"
        run_case "bitmaps ours-then-ours cluster_size=$cs" bitmaps_written ours "$cs"
    done
    run_case "bitmaps resized cluster_size=65536" bitmaps_resized 65536
else
    skip_case "bitmaps" "no $QEMU_NBD to read bitmaps with"
fi

for cs in 512 65536; do
    run_case "amend compat=0.10 qemu-first cluster_size=$cs" amended qemu "$cs" "" 0 compat=0.10
    run_case "amend compat=0.10 ours-first cluster_size=$cs" amended ours "$cs" "" 0 compat=0.10
    run_case "amend compat=1.1 qemu-first cluster_size=$cs" amended qemu "$cs" compat=0.10 0 compat=1.1
done
run_case "amend compat=0.10 snapshot cluster_size=65536" amended qemu 65536 "" 1 compat=0.10
run_case "amend compat=1.1 snapshot cluster_size=65536" amended qemu 65536 compat=0.10 1 compat=1.1
for rb in 1 2 8 32 64; do
    run_case "amend refcount_bits=$rb cluster_size=65536" amended ours 65536 "" 0 "refcount_bits=$rb"
done
run_case "amend refcount_bits=2 snapshot cluster_size=4096" amended qemu 4096 "" 1 refcount_bits=2
run_case "amend refcount_bits=64 from 1 cluster_size=512" \
    amended qemu 512 refcount_bits=1 0 refcount_bits=64
run_case "amend lazy_refcounts=on cluster_size=65536" amended ours 65536 "" 0 lazy_refcounts=on
run_case "amend lazy_refcounts=off cluster_size=65536" \
    amended qemu 65536 lazy_refcounts=on 0 lazy_refcounts=off
run_case "amend refcount_bits=16,compat=0.10 from refcount_bits=8 cluster_size=65536" \
    amended qemu 65536 refcount_bits=8 0 refcount_bits=16,compat=0.10

for cs in 512 4096 65536 2097152; do
    run_case "ours-convert-compressed compression_type=zstd cluster_size=$cs" \
        ours_convert_compressed zstd "$cs"
done
run_case "ours-convert-compressed compression_type=zlib cluster_size=65536" \
    ours_convert_compressed zlib 65536

for cs in 4096 65536; do
    run_case "measure-dd qemu-written cluster_size=$cs" same_measure_dd qemu "$cs"
    run_case "measure-dd ours-written cluster_size=$cs" same_measure_dd ours "$cs"
done
