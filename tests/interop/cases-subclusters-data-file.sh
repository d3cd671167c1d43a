# shellcheck shell=bash
# Interoperability cases for extended L2 entries (subclusters) and external
# data files, sourced by run.sh after its own cases are defined (they use
# its helpers: ours_first, qemu_first, verify, header_field, ...).

# Writes aimed at subclusters (32 per cluster): partial subclusters, zeroed
# subclusters (write -z aligned to them, with and without -u), writes into
# zeroed and unmapped ones, whole-cluster zeroes and discards with a
# subcluster written back.  `base` moves them so that a second writer hits
# the first one's subclusters (discards stay cluster aligned: qcow2 ignores
# partial clusters, a raw file does not).
subcluster_writes() {
    local cs=$1 base=$2 pattern=$3 sc=$(($1 / 32))
    cat <<EOF
write -P $((pattern)) $((base + sc / 2)) 100
write -P $((pattern + 1)) $((base + 3 * sc + 7)) $((2 * sc))
write -z $((base + 5 * sc)) $((3 * sc))
write -P $((pattern + 2)) $((base + 6 * sc + 1)) 10
write -z -u $((base + cs + 4 * sc)) $((8 * sc))
write -P $((pattern + 3)) $((base + cs + 5 * sc)) $((sc / 4))
write -P $((pattern + 4)) $((base + 2 * cs - sc / 2)) $sc
write -z $((base + 3 * cs)) $cs
write -P $((pattern + 5)) $((base + 3 * cs + 31 * sc)) $sc
discard $((base / cs * cs + 4 * cs)) $cs
write -P $((pattern + 6)) $((base + 4 * cs + 17 * sc + 3)) 1
write -z $((base + 5 * cs + 30 * sc)) $((4 * sc))
EOF
}

# Extended L2 entries: the general stages, then subcluster-aimed writes by
# each side over the other's subclusters.  OPTS are more create options.
subclusters() {
    local first=$1 second=$2 cs=$3 opts=${4:-} ops=()
    new_reference $SIZE
    "${first}_create" "extended_l2=on,cluster_size=$cs${opts:+,$opts}" $SIZE
    mapfile -t ops < <(first_writes "$cs" $SIZE; subcluster_writes "$cs" $((20 * cs)) 0x40)
    "${first}_writes" "${ops[@]}"
    verify $SIZE
    mapfile -t ops < <(second_writes "$cs" $SIZE; subcluster_writes "$cs" $((20 * cs + cs / 64)) 0x50)
    "${second}_writes" "${ops[@]}"
    verify $SIZE
}

# The raw reference and a raw external data file must be identical, and
# the image must still say so (autoclear bit 1).
check_raw_data_file() {
    if [ "$(header_field 88 8)" -ne 2 ]; then
        echo "the raw external data bit is gone (autoclear features $(header_field 88 8))"
        return 1
    fi
    must "$QEMU_IMG" compare -f raw -F raw "$CASE_DIR/data.raw" "$CASE_DIR/ref.raw"
}

# External data file: created by FIRST with the name relative to the
# case's directory (where every command runs, so both sides resolve it the
# same way), written by both sides in turn.  OPTS are more create options;
# with data_file_raw=on the data file itself must equal the reference.
data_file() {
    local first=$1 second=$2 cs=$3 opts=${4:-} ops=()
    cd "$CASE_DIR"
    new_reference $SIZE
    "${first}_create" "data_file=data.raw,cluster_size=$cs${opts:+,$opts}" $SIZE
    writes_by "$first" first_writes "$cs"
    verify $SIZE
    if [[ $opts == *data_file_raw=on* ]]; then
        check_raw_data_file
    fi
    mapfile -t ops < <(second_writes "$cs" $SIZE)
    if [[ $opts == *extended_l2=on* ]]; then
        mapfile -t -O "${#ops[@]}" ops < <(subcluster_writes "$cs" $((20 * cs)) 0x60)
    fi
    "${second}_writes" "${ops[@]}"
    verify $SIZE
    if [[ $opts == *data_file_raw=on* ]]; then
        check_raw_data_file
    fi
}

# The first writer shrinks and grows a data-file image (the data file
# follows the disk's size); the second writes on.
data_file_resize() {
    local first=$1 second=$2 cs=$3 ops=() size
    cd "$CASE_DIR"
    new_reference $SIZE
    "${first}_create" "data_file=data.raw,cluster_size=$cs" $SIZE
    mapfile -t ops < <(first_writes "$cs" $SIZE)
    "${first}_writes" "${ops[@]}" "truncate $((SIZE / 2 - 3 * cs))" "truncate $SIZE" \
        "write -P 0xd1 $((SIZE / 2 - 4 * cs + 7)) $((2 * cs))"
    size=$(stat -c %s "$CASE_DIR/data.raw")
    if [ "$size" -ne $SIZE ]; then
        echo "the data file is $size bytes, the disk $SIZE"
        return 1
    fi
    verify $SIZE
    writes_by "$second" second_writes "$cs"
    verify $SIZE
}

for cs in 16384 65536 2097152; do
    run_case "subclusters ours-then-qemu cluster_size=$cs" subclusters ours qemu "$cs"
    run_case "subclusters qemu-then-ours cluster_size=$cs" subclusters qemu ours "$cs"
done
run_case "subclusters ours-then-qemu refcount_bits=1 cluster_size=32768" \
    subclusters ours qemu 32768 refcount_bits=1
run_case "subclusters qemu-then-ours preallocation=metadata cluster_size=65536" \
    subclusters qemu ours 65536 preallocation=metadata
run_case "subclusters ours-then-qemu preallocation=metadata cluster_size=65536" \
    subclusters ours qemu 65536 preallocation=metadata
run_case "ours-first extended_l2=on lazy_refcounts=on cluster_size=65536" \
    ours_first "extended_l2=on,lazy_refcounts=on" 65536
run_case "qemu-compressed extended_l2=on cluster_size=65536" qemu_compressed "extended_l2=on" 65536
run_case "qemu-compressed extended_l2=on compression_type=zstd cluster_size=16384" \
    qemu_compressed "extended_l2=on,compression_type=zstd" 16384
if ours_write_compressed_supported; then
    run_case "ours-compressed extended_l2=on cluster_size=65536" \
        ours_compressed "extended_l2=on" 65536
fi

for cs in 4096 65536; do
    run_case "data-file ours-then-qemu cluster_size=$cs" data_file ours qemu "$cs"
    run_case "data-file qemu-then-ours cluster_size=$cs" data_file qemu ours "$cs"
    run_case "data-file-raw ours-then-qemu cluster_size=$cs" data_file ours qemu "$cs" data_file_raw=on
    run_case "data-file-raw qemu-then-ours cluster_size=$cs" data_file qemu ours "$cs" data_file_raw=on
done
run_case "data-file extended_l2=on ours-then-qemu cluster_size=65536" \
    data_file ours qemu 65536 extended_l2=on
run_case "data-file extended_l2=on qemu-then-ours cluster_size=65536" \
    data_file qemu ours 65536 extended_l2=on
run_case "data-file-raw extended_l2=on qemu-then-ours cluster_size=16384" \
    data_file qemu ours 16384 extended_l2=on,data_file_raw=on
run_case "data-file preallocation=falloc ours-then-qemu cluster_size=65536" \
    data_file ours qemu 65536 preallocation=falloc
run_case "data-file-resize ours-then-qemu cluster_size=65536" data_file_resize ours qemu 65536
