// qemu-io's zone commands (zone_report, zone_open/close/finish/reset,
// zone_append and our zone_offline/zone_readonly) run through a
// QemuIoSession on a real zoned qcow2 image: their output lines, their
// errors and their argument parsing, as upstream QEMU's qemu-io has them.
#include <glib.h>
#include <unistd.h>

#include <algorithm>
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


// 8 MiB in zones of 1 MiB (0x800 sectors) with 512 KiB (0x400 sectors)
// capacity; zone 0 is conventional; at most 2 open and 3 active zones;
// appends up to 64 KiB.
constexpr const char* kGeometry =
    "size=8M,zone.mode=host-managed,zone.size=1M,zone.capacity=512k,"
    "zone.conventional_zones=1,zone.max_open_zones=2,zone.max_active_zones=3";

// A zoned qcow2 image in /var/tmp, removed with the object.
class ZonedImage {
public:
    ZonedImage()
    {
        char tmpl[] = "/var/tmp/qemu-io-zone-XXXXXX";
        int fd = mkstemp(tmpl);
        REQUIRE(fd >= 0);
        close(fd);
        path_ = tmpl;
        bdrv_init();
        AioContext ctx;
        Error err;
        QDict opts;
        REQUIRE(keyval_parse(opts, kGeometry, nullptr, err));
        int ret = run_sync(ctx, bdrv_co_create(*bdrv_find_driver("qcow2"), path_, opts, ctx, err));
        INFO(err.message);
        REQUIRE(ret == 0);
    }
    ~ZonedImage() { unlink(path_.c_str()); }
    ZonedImage(const ZonedImage&) = delete;
    ZonedImage& operator=(const ZonedImage&) = delete;

    // Opens the image in s, read-write unless told otherwise.
    void open_in(QemuIoSession& s, bool writable = true) const
    {
        set_program_name("qemu-io");
        ImageOpenMode mode;
        if (writable) {
            mode.flags |= BDRV_O_RDWR;
        }
        QDict opts;
        opts.set("driver", "qcow2");
        CapturedOutput quiet;  // keep open messages out of the test log
        REQUIRE(s.open(&path_, opts, mode));
    }

private:
    std::string path_;
};

// The report line of a sequential zone (sector values).
std::string seq_zone(uint64_t start, uint64_t wp, unsigned cond)
{
    char line[160];
    snprintf(line, sizeof(line),
             "start: 0x%llx, len 0x800, cap 0x400, wptr 0x%llx, zcond:%u, [type: 2]\n",
             (unsigned long long)start, (unsigned long long)wp, cond);
    return line;
}

const std::string kConventionalZone =
    "start: 0x0, len 0x800, cap 0x800, wptr 0x0, zcond:0, [type: 1]\n";

}  // namespace

TEST_CASE("zone_report prints the zones in sectors", "[qemu-io][zoned]")
{
    ZonedImage img;
    AioContext ctx;
    QemuIoSession s(ctx, false, false);
    img.open_in(s);

    auto three = run(s, "zone_report 0 3");
    REQUIRE(three.ret == 0);
    REQUIRE(three.out == kConventionalZone + seq_zone(0x800, 0x800, 1) + seq_zone(0x1000, 0x1000, 1));
    REQUIRE(three.err.empty());

    // The alias, an offset inside a zone, and more zones than are left.
    REQUIRE(run(s, "zrp 1536k 1").out == seq_zone(0x800, 0x800, 1));
    REQUIRE(run(s, "zrp 7M 5").out == seq_zone(0x3800, 0x3800, 1));
    REQUIRE(run(s, "zrp 0x700000 5").out == seq_zone(0x3800, 0x3800, 1));
    auto none = run(s, "zrp 0 0");
    REQUIRE(none.ret == 0);
    REQUIRE(none.out.empty());

    // The largest count is accepted (without allocating for it).
    auto all = run(s, "zrp 0 4294967295");
    REQUIRE(all.ret == 0);
    REQUIRE(std::count(all.out.begin(), all.out.end(), '\n') == 8);
    auto too_many = run(s, "zrp 0 4294967296");
    REQUIRE(too_many.ret == -ERANGE);
    REQUIRE(too_many.out == "Number of zones must be less than 2^32\n");

    auto past_end = run(s, "zrp 8M 1");
    REQUIRE(past_end.ret == zone_error_code(ZoneError::InvalidRequest));
    REQUIRE(past_end.out == "zone report failed: Invalid argument\n");

    // Arguments are positional numbers: "-p" is not an option here.
    auto word = run(s, "zrp -p 1");
    REQUIRE(word.ret == -EINVAL);
    REQUIRE(word.out ==
            "Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- -p\n");
    auto huge = run(s, "zrp 0 9E");
    REQUIRE(huge.ret == -ERANGE);
    REQUIRE(huge.out == "Parsing error: argument too large -- 9E\n");

    auto count = run(s, "zrp 0");
    REQUIRE(count.ret == -EINVAL);
    REQUIRE(count.err == "bad argument count 1 to zrp, expected 2 arguments\n");
    REQUIRE(count.out.empty());
}

TEST_CASE("zone management commands change zone states or say why not", "[qemu-io][zoned]")
{
    ZonedImage img;
    AioContext ctx;
    QemuIoSession s(ctx, false, false);
    img.open_in(s);

    auto open = run(s, "zone_open 1M 1M");
    REQUIRE(open.ret == 0);
    REQUIRE(open.out.empty());
    REQUIRE(run(s, "zrp 1M 1").out == seq_zone(0x800, 0x800, 3));
    REQUIRE(run(s, "zc 1M 1M").ret == 0);  // nothing written: empty again
    REQUIRE(run(s, "zrp 1M 1").out == seq_zone(0x800, 0x800, 1));
    REQUIRE(run(s, "zone_finish 2M 1M").ret == 0);  // to start + capacity
    REQUIRE(run(s, "zrp 2M 1").out == seq_zone(0x1000, 0x1400, 14));
    REQUIRE(run(s, "zo 3M 1M").ret == 0);
    REQUIRE(run(s, "zone_reset 2M 2M").ret == 0);
    REQUIRE(run(s, "zrp 2M 2").out == seq_zone(0x1000, 0x1000, 1) + seq_zone(0x1800, 0x1800, 1));

    auto conventional = run(s, "zo 0 1M");
    REQUIRE(conventional.ret == zone_error_code(ZoneError::InvalidRequest));
    REQUIRE(conventional.out == "zone open failed: Invalid argument\n");
    REQUIRE(run(s, "zone_close 1M 1M").out == "zone close failed: Operation not permitted\n");
    REQUIRE(run(s, "zf 1M 512k").out == "zone finish failed: Invalid argument\n");
    // Past the end: an I/O error, as QEMU's blk_co_zone_mgmt.
    REQUIRE(run(s, "zrs 1M 8M").out == "zone reset failed: Input/output error\n");

    // Resource limits: 2 open, 3 active.
    REQUIRE(run(s, "zo 1M 1M").ret == 0);
    REQUIRE(run(s, "zo 2M 1M").ret == 0);
    auto open_limit = run(s, "zo 3M 1M");
    REQUIRE(open_limit.ret == zone_error_code(ZoneError::TooManyOpen));
    REQUIRE(open_limit.out == "zone open failed: Too many references: cannot splice\n");
    REQUIRE(run(s, "write -q 3M 4k").out == "write failed: Too many references: cannot splice\n");
    REQUIRE(run(s, "write -q 1M 4k").ret == 0);
    REQUIRE(run(s, "write -q 2M 4k").ret == 0);
    REQUIRE(run(s, "zc 1M 2M").ret == 0);
    REQUIRE(run(s, "write -q 3M 4k").ret == 0);
    auto active_limit = run(s, "zo 4M 1M");
    REQUIRE(active_limit.ret == zone_error_code(ZoneError::TooManyActive));
    REQUIRE(active_limit.out == "zone open failed: Value too large for defined data type\n");

    // Reset over the whole device skips the conventional zone.
    REQUIRE(run(s, "zrs 0 8M").ret == 0);
    REQUIRE(run(s, "zrp 1M 3").out == seq_zone(0x800, 0x800, 1) + seq_zone(0x1000, 0x1000, 1) +
                                          seq_zone(0x1800, 0x1800, 1));

    auto parse = run(s, "zo 1M lots");
    REQUIRE(parse.ret == -EINVAL);
    REQUIRE(parse.out ==
            "Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- lots\n");
    auto count = run(s, "zone_finish 1M 1M 1M");
    REQUIRE(count.err == "bad argument count 3 to zone_finish, expected 2 arguments\n");
}

TEST_CASE("zone_append writes 0xcd at the write pointer and -p says where", "[qemu-io][zoned]")
{
    ZonedImage img;
    AioContext ctx;
    QemuIoSession s(ctx, false, false);
    img.open_in(s);

    auto first = run(s, "zone_append -p 1M 4k 8k");
    REQUIRE(first.ret == 0);
    REQUIRE(first.out == "After zap done, the append sector is 0x800\n");
    auto quiet = run(s, "zap 1M 512 512");  // three arguments without -p
    REQUIRE(quiet.ret == 0);
    REQUIRE(quiet.out.empty());
    REQUIRE(run(s, "write -q -P 0x11 1037k 1k").ret == 0);
    REQUIRE(run(s, "zap -p 1M 2k").out == "After zap done, the append sector is 0x81c\n");
    REQUIRE(run(s, "zrp 1M 1").out == seq_zone(0x800, 0x820, 2));
    REQUIRE(run(s, "read -q -P 0xcd 1M 13k").out.empty());
    REQUIRE(run(s, "read -q -P 0x11 1037k 1k").out.empty());
    REQUIRE(run(s, "read -q -P 0xcd 1038k 2k").out.empty());
    REQUIRE(run(s, "read -q -P 0 1040k 4k").out.empty());

    // -p counts as one of at most four arguments.
    auto bare = run(s, "zap 1M 4k");
    REQUIRE(bare.ret == -EINVAL);
    REQUIRE(bare.err == "bad argument count 2 to zap, expected between 3 and 4 arguments\n");
    auto five = run(s, "zap -p 1M 1k 1k 1k");
    REQUIRE(five.err == "bad argument count 5 to zap, expected between 3 and 4 arguments\n");
    const std::string usage =
        "zone_append offset len [len..] -- append write a number of bytes at a specified offset\n";
    auto bad_option = run(s, "zap -x 1M 4k");
    REQUIRE(bad_option.ret == -EINVAL);
    REQUIRE(bad_option.out == usage);
    REQUIRE(bad_option.err == "zap: invalid option -- 'x'\n");
    REQUIRE(run(s, "zap -p -p 1M").out == usage);

    // What a zoned drive refuses.
    REQUIRE(run(s, "zap -p 1028k 4k").out == "zone append failed: Invalid argument\n");
    REQUIRE(run(s, "zap -p 1M 100").out == "zone append failed: Invalid argument\n");
    REQUIRE(run(s, "zap -p 1M 64k 512").out == "zone append failed: Invalid argument\n");
    REQUIRE(run(s, "zap -p 0 4k").out == "zone append failed: Invalid argument\n");
    REQUIRE(run(s, "zap -p 8M 4k").out == "zone append failed: Input/output error\n");
    REQUIRE(run(s, "zap -p 1M 3G").out == "Argument '3G' exceeds maximum size 2147483136\n");
    REQUIRE(run(s, "zap -p 1M x").out ==
            "Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- x\n");
    REQUIRE(run(s, "zf 2M 1M").ret == 0);
    auto full = run(s, "zap -p 2M 4k");
    REQUIRE(full.ret == zone_error_code(ZoneError::Full));
    REQUIRE(full.out == "zone append failed: No space left on device\n");
    for (int i = 0; i < 7; i++) {  // 16 KiB + 7 * 64 KiB of the 512 KiB capacity
        REQUIRE(run(s, "zap 1M 32k 32k").ret == 0);
    }
    auto crossing = run(s, "zap -p 1M 32k 32k");
    REQUIRE(crossing.ret == zone_error_code(ZoneError::Boundary));
    REQUIRE(crossing.out == "zone append failed: Numerical result out of range\n");
    REQUIRE(run(s, "zap -p 1M 32k 16k").out == "After zap done, the append sector is 0xba0\n");
    REQUIRE(run(s, "zrp 1M 1").out == seq_zone(0x800, 0xc00, 14));
}

TEST_CASE("zone_offline and zone_readonly inject zone faults", "[qemu-io][zoned]")
{
    ZonedImage img;
    AioContext ctx;
    {
        QemuIoSession s(ctx, false, false);
        img.open_in(s);
        REQUIRE(run(s, "write -q -P 0x22 1M 4k").ret == 0);
        auto ro = run(s, "zone_readonly 1M 1M");
        REQUIRE(ro.ret == 0);
        REQUIRE(ro.out.empty());
        REQUIRE(run(s, "zoff 2M 2M").ret == 0);
        REQUIRE(run(s, "zrp 1M 3").out == seq_zone(0x800, 0xc00, 13) +
                                              seq_zone(0x1000, 0x1000, 15) +
                                              seq_zone(0x1800, 0x1800, 15));

        REQUIRE(run(s, "write -q 1028k 4k").out == "write failed: Read-only file system\n");
        REQUIRE(run(s, "zap -p 1M 4k").out == "zone append failed: Read-only file system\n");
        REQUIRE(run(s, "zrs 1M 1M").out == "zone reset failed: Operation not permitted\n");
        REQUIRE(run(s, "read -q -P 0x22 1M 4k").out.empty());
        REQUIRE(run(s, "read -q 2M 4k").out == "read failed: No such device or address\n");
        REQUIRE(run(s, "zro 2M 1M").out == "zone readonly failed: Operation not permitted\n");
        auto conventional = run(s, "zoff 0 1M");
        REQUIRE(conventional.ret == zone_error_code(ZoneError::InvalidRequest));
        REQUIRE(conventional.out == "zone offline failed: Invalid argument\n");
        REQUIRE(run(s, "zone_offline 1M").err ==
                "bad argument count 1 to zone_offline, expected 2 arguments\n");
    }
    // The conditions are kept in the image.
    QemuIoSession s(ctx, false, false);
    img.open_in(s);
    REQUIRE(run(s, "zrp 1M 2").out == seq_zone(0x800, 0xc00, 13) + seq_zone(0x1000, 0x1000, 15));
    REQUIRE(run(s, "read -q -P 0x22 1M 4k").out.empty());
}

TEST_CASE("zone commands that change zones need a writable image", "[qemu-io][zoned]")
{
    ZonedImage img;
    AioContext ctx;
    QemuIoSession s(ctx, false, false);
    img.open_in(s, false);

    for (const char* cmd : {"zo 1M 1M", "zc 1M 1M", "zf 1M 1M", "zrs 1M 1M", "zap -p 1M 4k",
                            "zro 1M 1M", "zoff 1M 1M"}) {
        INFO(cmd);
        auto r = run(s, cmd);
        REQUIRE(r.ret == -EPERM);
        REQUIRE(r.err == "qemu-io: Block node is read-only\n");
        REQUIRE(r.out.empty());
    }
    REQUIRE(run(s, "zrp 1M 1").out == seq_zone(0x800, 0x800, 1));
}

TEST_CASE("zone commands on images that are not zoned", "[qemu-io][zoned]")
{
    AioContext ctx;
    QemuIoSession s(ctx, false, false);
    REQUIRE(run(s, "zrp 0 1").err == "no file open, try 'help open'\n");

    set_program_name("qemu-io");
    test::mem_driver();
    QDict opts;
    Error err;
    REQUIRE(keyval_parse(opts, "driver=raw,file.driver=test-mem,file.size=64k", nullptr, err));
    ImageOpenMode mode;
    mode.flags |= BDRV_O_RDWR;
    {
        CapturedOutput quiet;
        REQUIRE(s.open(nullptr, opts, mode));
    }
    auto report = run(s, "zrp 0 1");
    REQUIRE(report.ret == -ENOTSUP);
    REQUIRE(report.out == "zone report failed: Operation not supported\n");
    REQUIRE(run(s, "zo 0 64k").out == "zone open failed: Operation not supported\n");
    REQUIRE(run(s, "zap -p 0 4k").out == "zone append failed: Operation not supported\n");
}

TEST_CASE("help lists the zone commands with QEMU's synopses", "[qemu-io][zoned]")
{
    AioContext ctx;
    QemuIoSession s(ctx, false, false);
    auto all = run(s, "help");
    for (const char* line : {
             "zone_append offset len [len..] -- append write a number of bytes at a specified "
             "offset\n",
             "zone_close offset len -- close a range of zones in zone block device\n",
             "zone_finish offset len -- finish a range of zones in zone block device\n",
             "zone_offline offset len -- take a range of zones offline (fault injection)\n",
             "zone_open offset len -- explicit open a range of zones in zone block device\n",
             "zone_readonly offset len -- make a range of zones read-only (fault injection)\n",
             "zone_report offset number -- report zone information\n",
             "zone_reset offset len -- reset a zone write pointer in zone block device\n"}) {
        INFO(line);
        REQUIRE(all.out.find(line) != std::string::npos);
    }
    REQUIRE(all.out.find("zone_append") < all.out.find("zone_report"));

    // QEMU's zone commands have no extended help; ours explain themselves.
    REQUIRE(run(s, "help zrp").out == "zrp offset number -- report zone information\n");
    REQUIRE(run(s, "help zap").out ==
            "zap offset len [len..] -- append write a number of bytes at a specified offset\n");
    auto offline = run(s, "help zoff");
    REQUIRE(offline.out.find("zoff offset len -- take a range of zones offline (fault "
                             "injection)\n\n") == 0);
    REQUIRE(offline.out.find("Not a QEMU command") != std::string::npos);
    REQUIRE(run(s, "help zro").out.find("Not a QEMU command") != std::string::npos);
}
