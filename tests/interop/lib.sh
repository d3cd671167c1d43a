# shellcheck shell=bash
# Helpers of the qcow2 interoperability suite, sourced by run.sh.
#
# A case builds one qcow2 image with two writers in turn, ours and Debian's
# QEMU, and after every stage has both sides verify it.  Every stage's
# qemu-io commands are also applied by QEMU's qemu-io to a raw reference
# image, so "identical to the reference" needs no model of the format.  A
# stage is checked by:
#   - QEMU's and our qemu-img check: no corruption, no leak;
#   - QEMU's and our qemu-io reading back every byte the commands wrote
#     with read -P (expected-reads.awk works out the runs);
#   - QEMU's qemu-img compare and our interop-compare against the reference.
#
# Case functions run in a subshell with `set -e`; every helper prints what
# went wrong before it fails, and every tool invocation is appended to
# $CASE_DIR/commands so that a failure comes with its reproduction.

# Runs a command, recording it in the case's reproduction script.  A hang
# is a failure (exit status 124) after INTEROP_TIMEOUT seconds.
x() {
    printf '%s\n' "${*@Q}" >> "$CASE_DIR/commands"
    timeout "${INTEROP_TIMEOUT:-300}" "$@"
}

# Runs a command that must succeed and print no failure; shows its output
# when it does not.  With `repairing` set, the messages of the refcount
# repair that opening a dirty image runs are not failures.
must() {
    local out rc=0 messages
    out=$(x "$@" 2>&1) || rc=$?
    messages=$out
    if [ -n "${repairing:-}" ]; then
        messages=$(grep -vE "^(ERROR cluster [0-9]+ refcount=[0-9]+ reference=[0-9]+|Rebuilding refcount structure|Repairing cluster [0-9]+ refcount=[0-9]+ reference=[0-9]+)$" <<<"$out")
    fi
    if [ "$rc" -ne 0 ] || grep -qiE "fail|error|mismatch|corrupt" <<<"$messages"; then
        echo "command failed (exit $rc): ${*@Q}"
        head -n 20 <<<"$out"
        return 1
    fi
}

# qemu-io arguments that run each command of a list.
io_args() {
    local op
    for op in "$@"; do
        printf '%s\0' -c "$op"
    done
}

# The raw reference cannot store compressed data; the bytes are the same.
raw_op() {
    local op=$1
    op=${op/ -c / }
    printf '%s' "$op"
}

# new_reference SIZE: the raw reference image of the case.
new_reference() {
    must "$QEMU_IMG" create -q -f raw "$CASE_DIR/ref.raw" "$1"
}

# ours_create OPTIONS SIZE / qemu_create OPTIONS SIZE: the case's image.
ours_create() {
    must "$OURS_IMG" create -q -f qcow2 -o "$1" "$CASE_DIR/img.qcow2" "$2"
}
qemu_create() {
    must "$QEMU_IMG" create -q -f qcow2 -o "$1" "$CASE_DIR/img.qcow2" "$2"
}

# ours_writes CMD... / qemu_writes CMD...: one writer applies the commands
# to the image, QEMU applies them to the reference, and the commands join
# the case's history.  Discards need a discard=unmap open: ours alternates
# between -d unmap and --image-opts so both spellings are exercised.
ours_writes() {
    local args=()
    mapfile -d '' args < <(io_args "$@")
    if [ $((ours_write_count++ % 2)) -eq 0 ]; then
        must "$OURS_IO" -f qcow2 -d unmap "${args[@]}" "$CASE_DIR/img.qcow2"
    else
        must "$OURS_IO" --image-opts "${args[@]}" \
            "driver=qcow2,discard=unmap,file.filename=$CASE_DIR/img.qcow2"
    fi
    reference_writes "$@"
}
qemu_writes() {
    local args=()
    mapfile -d '' args < <(io_args "$@")
    must "$QEMU_IO" -f qcow2 -d unmap "${args[@]}" "$CASE_DIR/img.qcow2"
    reference_writes "$@"
}
reference_writes() {
    local args=() op raw=()
    for op in "$@"; do
        raw+=("$(raw_op "$op")")
        printf '%s\n' "$op" >> "$CASE_DIR/history"
    done
    mapfile -d '' args < <(io_args "${raw[@]}")
    must "$QEMU_IO" -f raw -d unmap "${args[@]}" "$CASE_DIR/ref.raw"
}

# check_clean QEMU_IMG IMAGE: qemu-img check finds no corruption and no leak
# (exit status 0).
check_clean() {
    local out rc=0
    out=$(x "$1" check -f qcow2 "$2" 2>&1) || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "qemu-img check failed (exit $rc): $1 check -f qcow2 $2"
        head -n 20 <<<"$out"
        return 1
    fi
}

# verify SIZE [IMAGE]: every check of a stage, against the history so far;
# SIZE is the virtual size the case started with (truncates in the history
# move it).  IMAGE is the case's image unless given (another image that must
# read the same, through its backing chain if it has one).
verify() {
    local img=${2:-$CASE_DIR/img.qcow2} ref=$CASE_DIR/ref.raw reads=() args=()
    mapfile -t reads < <(awk -v size="$1" -f "$INTEROP_DIR/expected-reads.awk" "$CASE_DIR/history")
    mapfile -d '' args < <(io_args "${reads[@]}")

    check_clean "$QEMU_IMG" "$img"
    check_clean "$OURS_IMG" "$img"
    # The reference checks the model itself: a failure here is a test bug.
    must "$QEMU_IO" -r -f raw "${args[@]}" "$ref"
    must "$QEMU_IO" -r -f qcow2 "${args[@]}" "$img"
    must "$OURS_IO" -r -f qcow2 "${args[@]}" "$img"
    must "$QEMU_IMG" compare -f qcow2 -F raw "$img" "$ref"
    must "$OURS_CMP" -f qcow2 "$img" "$ref"
}

# --- Command lists ------------------------------------------------------------
# Both take the cluster size and the virtual size and print one qemu-io
# command per line.  Discards cover whole clusters (partial ones are
# ignored by qcow2 but zero a raw file).

# A first writer's commands: aligned, unaligned, cross-cluster, sparse,
# overwriting, zeroing (with and without unmap) and discarding writes.
first_writes() {
    local cs=$1 size=$2
    local l2_span=$((cs * cs / 8))
    cat <<EOF
write -P 0x11 0 $((4 * cs))
write -P 0x22 $((cs / 2 + 7)) 1000
write -P 0x33 $((6 * cs - 300)) $((cs + 600))
write -P 0x44 $((size / 2 + 12345)) 7777
write -P 0x55 $((size - 3 * cs)) $((3 * cs))
write -P 0x66 $((cs + 100)) $((2 * cs))
write -z $((2 * cs)) $cs
write -z -u $((3 * cs)) $cs
write -z $((6 * cs - 100)) 200
write -P 0x77 $((10 * cs)) $((4 * cs))
discard $((11 * cs)) $((2 * cs))
write -P 0x88 $((size / 4 + 1)) $((1024 * 1024 + 3))
write -P 0x99 $((3 * cs + 10)) 20
EOF
    if [ $((l2_span + cs)) -lt $((size / 4)) ]; then
        echo "write -P 0xab $((l2_span - cs / 2 - 3)) $((cs + 5))"
    fi
}

# A second writer's commands over the first one's data: in-place partial
# overwrites, writes into zero, unmapped and discarded clusters, zeroing
# and discarding clusters the other side allocated.
second_writes() {
    local cs=$1 size=$2
    cat <<EOF
write -P 0xa1 $((cs / 4)) $((cs / 2))
write -P 0xa2 $((2 * cs + 5)) 100
write -P 0xa3 $((3 * cs + 200)) 300
write -z $((5 * cs)) $((2 * cs))
discard $cs $cs
write -P 0xa4 $((11 * cs)) $((cs / 2))
write -P 0xa5 $((size / 2)) $((2 * cs + 1))
write -z -u $((size - 3 * cs)) $cs
write -P 0xa6 $((size - 1000)) 1000
write -P 0xa7 $((size / 4 + 4096)) 65536
discard $((10 * cs)) $cs
write -z -u $((12 * cs)) $cs
write -P 0xa8 $((12 * cs + cs / 2)) 17
EOF
}

# writes_by WRITER LIST CS: WRITER (ours, qemu, ...: its WRITER_writes)
# runs the commands that LIST (first_writes, second_writes) gives for
# cluster size CS on an image of $SIZE bytes.
writes_by() {
    local ops=()
    mapfile -t ops < <("$2" "$3" "$SIZE")
    "$1_writes" "${ops[@]}"
}

# Concurrent writes (qemu-io aio_write, then aio_flush): eight requests
# into each of a few clusters, disjoint but sharing clusters, so that they
# race to allocate the same cluster or to update the same L2 table.
# Patterns start at `pattern`.
concurrent_writes() {
    local cs=$1 pattern=$2 base k
    for base in 0 $((30 * cs)) $((40 * cs - cs / 2)); do
        for ((k = 0; k < 8; k++)); do
            echo "aio_write -P $((pattern + k)) $((base + k * cs / 8)) $((cs / 8))"
        done
    done
    echo "aio_write -z $((50 * cs)) $((2 * cs))"
    echo "aio_write -z -u $((52 * cs)) $cs"
    echo "aio_write -P $((pattern + 8)) $((53 * cs + 3)) $((3 * cs))"
    echo "aio_flush"
}

# Many writes spread over the disk (stride apart from `first`) so that the
# image outgrows its first refcount table.
spread_writes() {
    local first=$1 stride=$2 count=$3 len=$4 pattern=$5 i
    for ((i = 0; i < count; i++)); do
        echo "write -P $pattern $((first + i * stride)) $len"
    done
}
