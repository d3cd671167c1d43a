#!/bin/bash
# Installs, builds and runs every test: the unit tests (normal build,
# AddressSanitizer/UndefinedBehaviorSanitizer build, and the concurrency
# tests under ThreadSanitizer), and qemu-iotests
# against our binaries and, for tests whose behaviour QEMU shares, against
# Debian's qemu-img/qemu-io; interoperability, end-to-end tests in a Linux
# guest, fuzzing.  The last line is "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh || { echo "dependency installation failed"; echo "0 passed, 1 failed"; exit 1; }

passed=0
failed=0
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT

# Adds the counts from a Catch2 run's summary to the totals.
count_catch2() {
    local out=$1 line p f
    line=$(grep -E "^(All tests passed|test cases:)" "$out" | tail -n 1)
    if [[ $line =~ ^All\ tests\ passed.*in\ ([0-9]+)\ test\ case ]]; then
        p=${BASH_REMATCH[1]}; f=0
    elif [[ $line =~ test\ cases:\ *([0-9]+)\ \|\ *([0-9]+)\ passed\ \|\ *([0-9]+)\ failed ]]; then
        p=${BASH_REMATCH[2]}; f=${BASH_REMATCH[3]}
    else
        p=0; f=1   # crashed before printing a summary
    fi
    passed=$((passed + p)); failed=$((failed + f))
    echo "  $p passed, $f failed"
}

# Adds the counts from a qemu-iotests run to the totals.
count_iotests() {
    local out=$1 line
    line=$(grep -E "^iotests: [0-9]+ passed, [0-9]+ failed" "$out" | tail -n 1)
    if [[ $line =~ ([0-9]+)\ passed,\ ([0-9]+)\ failed ]]; then
        passed=$((passed + BASH_REMATCH[1])); failed=$((failed + BASH_REMATCH[2]))
    else
        failed=$((failed + 1))
    fi
}

step() { echo "=== $*"; }

step "build"
if ! scripts/build.sh build; then
    echo "build failed"
    echo "0 passed, 1 failed"
    exit 1
fi

step "unit tests"
build/tests/unit-tests > "$log/unit" 2>&1
tail -n 20 "$log/unit" | grep -vE "^\s*$" | tail -n 8
count_catch2 "$log/unit"

step "unit tests (ASan + UBSan)"
if scripts/build.sh build-sanitizers -Db_sanitize=address,undefined -Db_lundef=false; then
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 build-sanitizers/tests/unit-tests > "$log/asan" 2>&1
    tail -n 20 "$log/asan" | grep -vE "^\s*$" | tail -n 8
    count_catch2 "$log/asan"
else
    echo "sanitizer build failed"; failed=$((failed + 1))
fi

# The tests of what runs in several threads (IOThreads, the thread pool,
# the event loop, drain, the graph, the file driver with aio=threads), not
# the whole suite: TSan slows the single-threaded image tests down many
# times (the whole suite, also free of reports, took 9.5 minutes on the
# shared 2-core machine against 45 s without TSan) and they start
# no threads.
# halt_on_error turns a report into a crash, which counts as a failure.
step "unit tests (ThreadSanitizer: [thread], [aio], [drain], [graph], [file-posix])"
if scripts/build.sh build-tsan -Db_sanitize=thread -Db_lundef=false; then
    TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
        build-tsan/tests/unit-tests "[thread],[aio],[drain],[graph],[file-posix]" > "$log/tsan" 2>&1
    grep -m1 -A3 "WARNING: ThreadSanitizer" "$log/tsan"
    tail -n 20 "$log/tsan" | grep -vE "^\s*$" | tail -n 8
    count_catch2 "$log/tsan"
else
    echo "ThreadSanitizer build failed"; failed=$((failed + 1))
fi

if [ -x qemu-iotests/check ]; then
    for fmt in raw qcow2; do
        step "qemu-iotests -$fmt (our binaries)"
        (cd qemu-iotests && QEMU_BUILD_DIR="$PWD/../build" ./check "-$fmt") > "$log/iotests-$fmt" 2>&1
        tail -n 30 "$log/iotests-$fmt"
        count_iotests "$log/iotests-$fmt"

        step "qemu-iotests -$fmt -system (Debian's QEMU $(qemu-img --version | head -n1 | awk '{print $3}'))"
        (cd qemu-iotests && ./check -system "-$fmt") > "$log/iotests-system-$fmt" 2>&1
        tail -n 30 "$log/iotests-system-$fmt"
        count_iotests "$log/iotests-system-$fmt"
    done
fi

# Runs a script that prints one PASS/FAIL line per case and ends with
# "NAME: N passed, N failed"; shows what did not pass and adds the counts.
#   run_cases NAME LINES COMMAND...
run_cases() {
    local name=$1 lines=$2 line
    shift 2
    "$@" > "$log/$name" 2>&1
    grep -vE "^PASS " "$log/$name" | head -n "$lines"
    line=$(grep -E "^$name: [0-9]+ passed, [0-9]+ failed" "$log/$name" | tail -n 1)
    if [[ $line =~ ([0-9]+)\ passed,\ ([0-9]+)\ failed ]]; then
        echo "  ${BASH_REMATCH[1]} passed, ${BASH_REMATCH[2]} failed"
        passed=$((passed + BASH_REMATCH[1])); failed=$((failed + BASH_REMATCH[2]))
    else
        echo "  $name did not finish"
        failed=$((failed + 1))
    fi
}

# --- qcow2 interoperability with Debian's QEMU (tests/interop) -------------
# One pass/fail per case; see docs/devel/testing-interop.rst.
step "qcow2 interoperability (ours <-> Debian's QEMU)"
run_cases interop 60 tests/interop/run.sh build

# --- End-to-end tests in a Linux guest (tests/e2e) --------------------------
# Debian's kernels and QEMU 10.0, unpacked into E2E_CACHE (default
# /var/tmp/vm-cache); one pass/fail per guest step, and a failure for a
# guest that died or timed out (its console log is shown).  Not obtaining
# the packages is a failure too.  See docs/devel/testing-e2e.rst.  The
# nvme-tcp test runs build/qemu-storage-daemon on the host (its host side,
# tests/e2e/tests/nvme-tcp.host) and boots each kernel twice.  It runs
# before the NBD interoperability steps, which use its QEMU 10.0.
step "end-to-end tests in a Linux guest (tests/e2e)"
run_cases e2e 400 tests/e2e/run.sh build

# --- The nbd client against Debian's qemu-nbd (tests/interop/nbd-client.sh) --
step "nbd client interoperability (ours -> Debian's and QEMU 10's qemu-nbd)"
run_cases nbd-client 60 tests/interop/nbd-client.sh build

# --- Our NBD server with QEMU 7.2's and 10.0's clients (tests/interop) -----
step "NBD server interoperability (Debian's QEMU clients)"
run_cases nbd-interop 60 tests/interop/nbd-server.sh build

# --- Our NVMe/TCP target with our initiator (tests/interop/nvme-tcp.sh) -----
step "NVMe/TCP target (our initiator: round trips, persistence, hostile hosts)"
run_cases nvme-tcp 60 tests/interop/nvme-tcp.sh build

# --- The vhost-user-blk export with our own front end (tests/interop) ------
step "vhost-user-blk export (our front end, hostile messages, reconnect)"
run_cases vhost-user-blk 60 tests/interop/vhost-user-blk.sh build

# --- libFuzzer runs (tests/fuzz) ---------------------------------------------
# A clang build of each harness only, a generated seed corpus, then some
# seconds of fuzzing; any crash, sanitizer report, leak or timeout is one
# failure, and the input that caused it is kept for reproduction.
#   fuzz_run NAME HARNESS SECONDS SEED_DIR [LIBFUZZER_ARGS...]
# REQUIRES: build-fuzz is set up and SEED_DIR filled.
fuzz_run() {
    local name=$1 harness=$2 seconds=$3 seeds=$4 crashes
    shift 4
    crashes=$(mktemp -d "${TMPDIR:-/tmp}/$name-fuzz-crash.XXXXXX")
    mkdir -p "$log/$name-fuzz-corpus"
    if "build-fuzz/tests/fuzz/$harness" -max_total_time="$seconds" -timeout=30 \
           -rss_limit_mb=2048 -close_fd_mask=3 -print_final_stats=1 \
           -artifact_prefix="$crashes/" "$@" \
           "$log/$name-fuzz-corpus" "$seeds" > "$log/$name-fuzz" 2>&1; then
        grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb)" "$log/$name-fuzz"
        echo "  1 passed, 0 failed"
        passed=$((passed + 1))
        rmdir "$crashes"
    else
        grep -vE "^#[0-9]+" "$log/$name-fuzz" | tail -n 40
        echo "  crashing input kept in $crashes (reproduce: build-fuzz/tests/fuzz/$harness FILE)"
        echo "  0 passed, 1 failed"
        failed=$((failed + 1))
    fi
}

fuzz_seconds=${FUZZ_SECONDS:-150}
step "fuzzing qcow2 (libFuzzer, ${fuzz_seconds}s)"
if { [ -f build-fuzz/build.ninja ] || CXX=clang++ meson setup build-fuzz -Dfuzzing=true >/dev/null; } &&
   ninja -C build-fuzz tests/fuzz/fuzz-qcow2-open >/dev/null &&
   tests/fuzz/make-corpus.sh "$log/fuzz-seeds" build; then
    fuzz_run qcow2 fuzz-qcow2-open "$fuzz_seconds" "$log/fuzz-seeds" -dict=tests/fuzz/qcow2.dict
else
    echo "fuzzer build or corpus generation failed"; failed=$((failed + 1))
fi

# fuzz_harness NAME HARNESS SECONDS WHAT SEEDS [SEEDGEN]: builds HARNESS in
# build-fuzz, fills SEEDS with SEEDGEN (when given; else SEEDS is a folder
# of the tree) and fuzzes with fuzz_run; a failed build or seed generation
# is one failure.
fuzz_harness() {
    local name=$1 harness=$2 seconds=$3 what=$4 seeds=$5 seedgen=${6:-}
    step "fuzzing $what (libFuzzer, ${seconds}s)"
    if [ -f build-fuzz/build.ninja ] && ninja -C build-fuzz "tests/fuzz/$harness" >/dev/null &&
       { [ -z "$seedgen" ] || "$seedgen" "$seeds"; }; then
        fuzz_run "$name" "$harness" "$seconds" "$seeds"
    else
        echo "$what: fuzzer build or seed generation failed"; failed=$((failed + 1))
    fi
}

# Hostile bytes from outside, each through the parser that takes them: QMP
# framing and the dispatcher, the NBD server's negotiation and requests, the
# NVMe/TCP target's PDUs and commands, driver memory through the virtqueue
# walker and virtio-blk, vhost-user message streams.
fuzz_harness qmp fuzz-qmp "${QMP_FUZZ_SECONDS:-30}" "the QMP monitor" tests/fuzz/qmp-seeds
fuzz_harness nbd fuzz-nbd-server "${NBD_FUZZ_SECONDS:-40}" "the NBD server" \
    "$log/nbd-fuzz-seeds" tests/fuzz/make-nbd-corpus.sh
fuzz_harness nvme-tcp fuzz-nvme-tcp "${NVME_TCP_FUZZ_SECONDS:-30}" "the NVMe/TCP target" \
    "$log/nvme-tcp-fuzz-seeds" tests/fuzz/make-nvme-tcp-corpus.sh
fuzz_harness virtqueue fuzz-virtqueue "${VIRTQUEUE_FUZZ_SECONDS:-30}" \
    "the virtqueue walker and virtio-blk" "$log/virtqueue-fuzz-seeds" tests/fuzz/make-virtqueue-corpus.py
fuzz_harness vhost-user fuzz-vhost-user "${VHOST_USER_FUZZ_SECONDS:-30}" \
    "the vhost-user-blk back end" "$log/vhost-user-fuzz-seeds" tests/fuzz/make-vhost-user-corpus.sh

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
