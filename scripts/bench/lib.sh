# SPDX-License-Identifier: GPL-2.0-or-later
# Shared by the scripts/bench/*.sh benchmarks (sourced, not run).

die()
{
    echo "${0##*/}: $*" >&2
    exit 1
}

# require_executable PATH [HINT]: dies unless PATH can be run.
require_executable()
{
    [ -x "$1" ] || die "'$1' is not an executable${2:+ ($2)}"
}

# bench_dir_ready DIR: creates DIR, which must not be on tmpfs (it has no
# O_DIRECT, and the page cache rows would measure memory copies only).
bench_dir_ready()
{
    mkdir -p "$1"
    [ "$(stat -f -c %T "$1")" != tmpfs ] || die "$1 is on tmpfs; set BENCH_DIR"
}

# scaled COUNT: COUNT times $BENCH_SCALE (default 1), at least 1.
scaled()
{
    awk -v c="$1" -v s="${BENCH_SCALE:-1}" 'BEGIN { n = int(c * s); print (n > 0 ? n : 1) }'
}

# Seconds of one "qemu-img bench" run ("Run completed in 0.123 seconds.");
# fails loudly.
run_once()
{
    local out
    sync
    out=$("$@" 2>&1) || die "failed: $* -> $out"
    awk '/^Run completed in/ { print $4 }' <<<"$out"
}

# min_time A B: the smaller of two times, "" counting as infinite.
min_time()
{
    if [ -z "$2" ] || awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; then
        echo "$1"
    else
        echo "$2"
    fi
}

# ratio REF_THREADS REF_URING OURS: the faster reference over ours.
ratio()
{
    awk -v a="$1" -v b="$2" -v o="$3" \
        'BEGIN { q = a; if (b != "-" && b + 0 < q + 0) q = b; printf "%.2f", (o > 0 ? q / o : 0) }'
}

# Prints the machine and program lines every table starts with.
print_setup()
{
    local ours=$1 ref=$2 dir=$3
    echo "Host:    $(uname -srm), $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo))"
    echo "Storage: $dir ($(stat -f -c %T "$dir"))"
    echo "Ours:    $("$ours" --version | head -1)"
    echo "QEMU:    $("$ref" --version | head -1)"
}

# round_order I NAME...: the NAMEs in the order for round I of a row: one
# run per program per round, each round starting with the next program, so
# that drift on the host (other guests, the host page cache) hits all of
# them alike and none always runs right after another.
round_order()
{
    local i=$1 k
    shift
    for ((k = 0; k < $#; k++)); do
        local idx=$(((i + k) % $# + 1))
        echo "${!idx}"
    done
}
