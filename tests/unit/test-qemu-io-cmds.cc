// qemu-io's commands, run through a QemuIoSession on the in-memory driver:
// their output lines, their results and what reaches the driver.
#include <glib.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <string>

#include "mem-driver.h"
#include "qemu-io-capture.h"
#include "qemu-io/qemu-io.h"

using namespace qemu;
using qemu::test::CommandResult;
using qemu::test::run;
using qemu::test::CapturedOutput;

namespace {


// A session on raw over a 64 KiB test-mem node (extra: more options).
void open_mem(QemuIoSession& s, const ImageOpenMode& mode, const std::string& extra = "")
{
    set_program_name("qemu-io");
    test::mem_driver();
    QDict opts;
    Error err;
    std::string text = "driver=raw,file.driver=test-mem,file.size=64k" + extra;
    REQUIRE(keyval_parse(opts, text, nullptr, err));
    CapturedOutput quiet;  // keep open messages out of the test log
    REQUIRE(s.open(nullptr, opts, mode));
}

ImageOpenMode read_write()
{
    ImageOpenMode mode;
    mode.flags |= BDRV_O_RDWR;
    return mode;
}

test::MemState& mem_node(QemuIoSession& s)
{
    return dynamic_cast<test::MemState&>(*s.blk()->bs()->file()->bs);
}

// The first line of the statistics, which carry no timing.
std::string first_line(const std::string& s)
{
    return s.substr(0, s.find('\n'));
}

}  // namespace

TEST_CASE("write and read report their transfers and verify patterns", "[qemu-io]")
{
    AioContext ctx;
    QemuIoSession s(ctx, false, false);
    open_mem(s, read_write());

    auto w = run(s, "write -P 0x11 512 4k");
    REQUIRE(w.ret == 0);
    REQUIRE(first_line(w.out) == "wrote 4096/4096 bytes at offset 512");
    REQUIRE(w.out.find("\n4 KiB, 1 ops; ") != std::string::npos);

    auto ok = run(s, "read -q -P 0x11 512 4k");
    REQUIRE(ok.ret == 0);
    REQUIRE(ok.out.empty());

    auto bad = run(s, "read -q -P 0x11 0 1k");
    REQUIRE(bad.ret == -EINVAL);
    REQUIRE(bad.out == "Pattern verification failed at offset 0, 1024 bytes\n");

    auto dump = run(s, "read -v 508 8");
    REQUIRE(dump.out.substr(0, dump.out.find('\n') + 1) ==
            "000001fc:  00 00 00 00 11 11 11 11  ........\n");

    auto past_end = run(s, "read 64k 1");
    REQUIRE(past_end.ret == -EIO);
    REQUIRE(past_end.out == "read failed: Input/output error\n");
}

TEST_CASE("size arguments follow qemu_strtosz", "[qemu-io]")
{
    AioContext ctx;
    QemuIoSession s(ctx, false, false);
    open_mem(s, read_write());

    REQUIRE(first_line(run(s, "read 1.5k 1").out) == "read 1/1 bytes at offset 1536");
    REQUIRE(first_line(run(s, "read 0x10 0x10").out) == "read 16/16 bytes at offset 16");
    REQUIRE(first_line(run(s, "read 1.k 1").out) == "read 1/1 bytes at offset 1024");

    auto hex_suffix = run(s, "read 0x1k 1");
    REQUIRE(hex_suffix.err ==
            "qemu-io: warning: Using a multiplier suffix on hex numbers is deprecated: 0x1k\n");
    REQUIRE(first_line(hex_suffix.out) == "read 1/1 bytes at offset 1024");

    auto fraction = run(s, "read 1.5 1");
    REQUIRE(fraction.ret == -EINVAL);
    REQUIRE(fraction.out ==
            "Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- 1.5\n");

    auto huge = run(s, "read 8e 1");
    REQUIRE(huge.ret == -ERANGE);
    REQUIRE(huge.out == "Parsing error: argument too large -- 8e\n");

    auto too_long = run(s, "read 0 2G");
    REQUIRE(too_long.ret == -EINVAL);
    REQUIRE(too_long.out == "length cannot exceed 2147483136, given 2G\n");
}

TEST_CASE("commands check the image and their argument count", "[qemu-io]")
{
    AioContext ctx;
    QemuIoSession s(ctx, false, false);
    set_program_name("qemu-io");

    auto no_file = run(s, "read 0 1");
    REQUIRE(no_file.ret == -EINVAL);
    REQUIRE(no_file.err == "no file open, try 'help open'\n");

    auto unknown = run(s, "frobnicate");
    REQUIRE(unknown.ret == -EINVAL);
    REQUIRE(unknown.err == "command \"frobnicate\" not found\n");

    open_mem(s, read_write());
    auto count = run(s, "length 1");
    REQUIRE(count.err == "bad argument count 1 to length, expected 0 arguments\n");
    auto usage = run(s, "read 0 1 2");
    REQUIRE(usage.out ==
            "read [-abCqv] [-P pattern [-s off] [-l len]] off len -- reads a number of bytes at "
            "a specified offset\n");
    REQUIRE(run(s, "length").out == "64 KiB\n");
    REQUIRE(run(s, "l").out == "64 KiB\n");
}

TEST_CASE("read-only images refuse the commands that write", "[qemu-io]")
{
    AioContext ctx;
    QemuIoSession s(ctx, false, false);
    open_mem(s, ImageOpenMode());

    for (const char* cmd : {"write 0 1", "writev 0 1", "aio_write 0 1", "discard 0 1", "truncate 0"}) {
        auto r = run(s, cmd);
        INFO(cmd);
        REQUIRE(r.ret == -EPERM);
        REQUIRE(r.err == "qemu-io: Block node is read-only\n");
    }
    REQUIRE(run(s, "read 0 1").ret == 0);
}

TEST_CASE("writes carry FUA while the write cache is off", "[qemu-io]")
{
    AioContext ctx;
    auto fua_of_last_write = [](QemuIoSession& s) {
        for (auto it = mem_node(s).log.rbegin(); it != mem_node(s).log.rend(); ++it) {
            if (it->kind == 'w') {
                return bool(it->flags & BDRV_REQ_FUA);
            }
        }
        FAIL("no write reached the driver");
        return false;
    };

    QemuIoSession writethrough(ctx, false, false);
    open_mem(writethrough, read_write(), ",file.fua=on");
    REQUIRE(run(writethrough, "write -q 0 4k").ret == 0);
    REQUIRE(fua_of_last_write(writethrough));

    ImageOpenMode mode = read_write();
    REQUIRE(bdrv_parse_cache_mode("writeback", mode.flags, mode.writethrough));
    QemuIoSession writeback(ctx, false, false);
    open_mem(writeback, mode, ",file.fua=on");
    REQUIRE(run(writeback, "write -q 0 4k").ret == 0);
    REQUIRE_FALSE(fua_of_last_write(writeback));
    REQUIRE(run(writeback, "write -q -f 0 4k").ret == 0);
    REQUIRE(fua_of_last_write(writeback));
}

TEST_CASE("aio requests report at the next loop iteration, newest first", "[qemu-io]")
{
    AioContext ctx;
    QemuIoSession s(ctx, false, false);
    open_mem(s, read_write());
    mem_node(s).yield_in_io = true;

    // Submitting prints nothing: results come once the loop has run.
    auto submitted = run(s, "aio_write -P 1 0 4k");
    REQUIRE(submitted.ret == 0);
    REQUIRE(submitted.out.empty());
    run(s, "aio_write -P 2 4k 4k");
    run(s, "aio_write -P 3 8k 4k");
    REQUIRE(s.has_pending_aio());
    REQUIRE(mem_node(s).in_flight == 3);  // all started, none finished

    auto flushed = run(s, "aio_flush");
    REQUIRE_FALSE(s.has_pending_aio());
    REQUIRE(mem_node(s).in_flight == 0);
    size_t third = flushed.out.find("wrote 4096/4096 bytes at offset 8192\n");
    size_t second = flushed.out.find("wrote 4096/4096 bytes at offset 4096\n");
    size_t first = flushed.out.find("wrote 4096/4096 bytes at offset 0\n");
    REQUIRE(third != std::string::npos);
    REQUIRE(third < second);
    REQUIRE(second < first);
    REQUIRE(first != std::string::npos);

    auto verify = run(s, "aio_read -q -P 2 4k 4k");
    REQUIRE(verify.out.empty());
    REQUIRE(run(s, "aio_flush").out.empty());

    // Requests failing at once report from the loop too.
    auto failing = run(s, "aio_read 64k 1");
    REQUIRE(failing.out.empty());
    REQUIRE(run(s, "aio_flush").out == "readv failed: Input/output error\n");
}

TEST_CASE("help lists the commands sorted; help CMD adds the details", "[qemu-io]")
{
    AioContext ctx;
    QemuIoSession s(ctx, false, false);
    auto all = run(s, "help");
    REQUIRE(all.ret == 0);
    REQUIRE(all.out.find("abort -- simulate a program crash using abort(3)\n") == 0);
    REQUIRE(all.out.find("map  -- prints the allocated areas of a file\n") != std::string::npos);
    REQUIRE(all.out.find("read ") < all.out.find("readv "));
    const std::string tail = "\n\nUse 'help commandname' for extended help.\n";
    REQUIRE(all.out.size() > tail.size());
    REQUIRE(all.out.substr(all.out.size() - tail.size()) == tail);

    auto one = run(s, "help d");
    REQUIRE(one.out.find("d [-Cq] off len -- discards a number of bytes at a specified offset\n\n"
                         " discards a range of bytes from the given offset\n") == 0);
    REQUIRE(run(s, "help nope").out == "command nope not found\n");
}

TEST_CASE("map and alloc report allocation", "[qemu-io]")
{
    AioContext ctx;
    QemuIoSession s(ctx, false, false);
    open_mem(s, read_write());
    REQUIRE(run(s, "map").out == "64 KiB (0x10000) bytes     allocated at offset 0 bytes (0x0)\n");
    REQUIRE(run(s, "alloc 4k 8k").out == "8192/8192 bytes allocated at offset 4 KiB\n");
    REQUIRE(run(s, "alloc 60k 8k").out == "4096/4096 bytes allocated at offset 60 KiB\n");
}

TEST_CASE("open refuses a second image and reports open errors", "[qemu-io]")
{
    AioContext ctx;
    QemuIoSession s(ctx, false, false);
    open_mem(s, read_write());
    auto again = run(s, "open -o driver=raw,file.driver=test-mem");
    REQUIRE(again.ret == -EINVAL);
    REQUIRE(again.err == "qemu-io: file open already, try 'help close'\n");

    REQUIRE(run(s, "close").ret == 0);
    REQUIRE(s.blk() == nullptr);
    auto bad = run(s, "open -o driver=raw,file.driver=test-mem,file.bogus=1");
    REQUIRE(bad.ret == -EINVAL);
    REQUIRE(bad.err.find("qemu-io: can't open: ") == 0);
    auto cache = run(s, "open -t sometimes x");
    REQUIRE(cache.err == "qemu-io: Invalid cache option: sometimes\n");
    REQUIRE(run(s, "open -o driver=raw,file.driver=test-mem").ret == 0);
    REQUIRE(s.blk() != nullptr);
}
