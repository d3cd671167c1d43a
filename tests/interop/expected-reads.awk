# Turns a list of qemu-io write commands (one per line, as given to -c)
# into the qemu-io reads that verify the final contents, one per maximal run
# of bytes that hold one value.  Only bytes some command touched are read;
# the comparison with the raw reference covers the rest.
#
#   awk -v size=VIRTUAL_SIZE -f expected-reads.awk < commands
#
# Understood: "write [-c] [-u] [-z] [-P PATTERN] OFF LEN" (no -P: 0xcd) and
# the same as aio_write (callers keep concurrent writes apart), flushes,
# "discard OFF LEN" (callers only discard whole clusters, which then read
# as zeroes) and "truncate SIZE" (bytes past SIZE read as zeroes).  Numbers
# are plain bytes.  Run boundaries are at most a few hundred, so the
# quadratic scans below are cheap.
# Numbers go through "%.0f": mawk's "%d" may truncate to 32 bits.

function add_range(start, end, value) {
    n++
    op_start[n] = start; op_end[n] = end; op_value[n] = value
    add_boundary(start); add_boundary(end)
}

function add_boundary(b) {
    if (!(b in seen)) {
        seen[b] = 1
        nb++
        bound[nb] = b
    }
}

{
    value = 205   # qemu-io's default pattern 0xcd
    if ($1 == "write" || $1 == "aio_write") {
        for (i = 2; i <= NF - 2; i++) {
            if ($i == "-z") {
                value = 0
            } else if ($i == "-P") {
                value = $(i + 1) + 0
                if ($(i + 1) ~ /^0x/) {
                    value = hex($(i + 1))
                }
                i++
            }
        }
        add_range($(NF - 1) + 0, $(NF - 1) + $NF, value)
    } else if ($1 == "discard") {
        add_range($2 + 0, $2 + $3, 0)
    } else if ($1 == "truncate") {
        if ($2 + 0 < size) {
            add_range($2 + 0, size, 0)
        }
        size = $2 + 0
    } else if ($1 == "flush" || $1 == "aio_flush") {
        next
    } else if (NF > 0) {
        printf "expected-reads.awk: cannot model '%s'\n", $0 > "/dev/stderr"
        exit 2
    }
}

function hex(s,    i, d, v) {
    v = 0
    s = tolower(substr(s, 3))
    for (i = 1; i <= length(s); i++) {
        d = index("0123456789abcdef", substr(s, i, 1)) - 1
        v = v * 16 + d
    }
    return v
}

END {
    # Insertion sort of the boundaries (mawk has no asort).
    for (i = 2; i <= nb; i++) {
        b = bound[i]
        for (j = i - 1; j >= 1 && bound[j] > b; j--) {
            bound[j + 1] = bound[j]
        }
        bound[j + 1] = b
    }
    run_start = -1
    for (i = 1; i < nb; i++) {
        lo = bound[i]; hi = bound[i + 1]
        if (lo >= size) {
            break
        }
        if (hi > size) {
            hi = size
        }
        v = -1
        for (k = n; k >= 1; k--) {
            if (op_start[k] <= lo && op_end[k] >= hi) {
                v = op_value[k]
                break
            }
        }
        if (run_start >= 0 && (v != run_value || lo != run_end)) {
            emit()
        }
        if (v >= 0) {
            if (run_start < 0) {
                run_start = lo; run_value = v
            }
            run_end = hi
        }
    }
    if (run_start >= 0) {
        emit()
    }
}

function emit() {
    printf "read -P %d %.0f %.0f\n", run_value, run_start, run_end - run_start
    run_start = -1
}
