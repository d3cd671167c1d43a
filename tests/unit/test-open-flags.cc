// The open-mode spellings every tool shares (block/open-flags.cc), and the
// report sink that carries messages without a caller (util/error.cc).
#include <catch2/catch.hpp>

#include <string>
#include <utility>
#include <vector>

#include "block/block-common.h"
#include "qemu/error.h"

using namespace qemu;

TEST_CASE("cache modes set the cache flags and the write-through bit", "[open-flags]")
{
    struct Case {
        const char* mode;
        int flags;
        bool writethrough;
    };
    const Case cases[] = {
        {"none", BDRV_O_NOCACHE, false},       {"off", BDRV_O_NOCACHE, false},
        {"directsync", BDRV_O_NOCACHE, true},  {"writeback", 0, false},
        {"unsafe", BDRV_O_NO_FLUSH, false},    {"writethrough", 0, true},
    };
    for (const Case& c : cases) {
        INFO(c.mode);
        // Other flags survive; the previous cache flags do not.
        int flags = BDRV_O_RDWR | BDRV_O_NOCACHE | BDRV_O_NO_FLUSH;
        bool writethrough = !c.writethrough;
        REQUIRE(bdrv_parse_cache_mode(c.mode, flags, writethrough));
        CHECK(flags == (BDRV_O_RDWR | c.flags));
        CHECK(writethrough == c.writethrough);
    }
}

TEST_CASE("an unknown open mode is refused and changes nothing", "[open-flags]")
{
    int flags = BDRV_O_RDWR | BDRV_O_NOCACHE;
    bool writethrough = true;
    std::string aio = "threads";
    CHECK_FALSE(bdrv_parse_cache_mode("direct", flags, writethrough));
    CHECK_FALSE(bdrv_parse_discard_flags("yes", flags));
    CHECK_FALSE(bdrv_parse_aio("posix", aio));
    CHECK(flags == (BDRV_O_RDWR | BDRV_O_NOCACHE));
    CHECK(writethrough);
    CHECK(aio == "threads");
}

TEST_CASE("discard and aio modes", "[open-flags]")
{
    int flags = 0;
    REQUIRE(bdrv_parse_discard_flags("unmap", flags));
    CHECK(flags == BDRV_O_UNMAP);
    REQUIRE(bdrv_parse_discard_flags("ignore", flags));
    CHECK(flags == 0);
    REQUIRE(bdrv_parse_discard_flags("on", flags));
    CHECK(flags == BDRV_O_UNMAP);
    REQUIRE(bdrv_parse_discard_flags("off", flags));
    CHECK(flags == 0);
    std::string aio;
    for (const char* mode : {"threads", "native", "io_uring"}) {
        REQUIRE(bdrv_parse_aio(mode, aio));
        CHECK(aio == mode);
    }
}

namespace {
std::vector<std::pair<ReportKind, std::string>> reports;
void collect(ReportKind kind, const std::string& message)
{
    reports.emplace_back(kind, message);
}
}  // namespace

TEST_CASE("reports reach an installed sink, without the program name", "[error]")
{
    reports.clear();
    set_report_sink(collect);
    error_report("disk %s is %d%% full", "x", 100);
    warn_report("old syntax");
    report_plain("ERROR cluster %d refcount=%d reference=%d\n", 5, 1, 2);
    Error err;
    err.set("bad header");
    err.add_hint("try again");
    report_error(err, "x.qcow2: ");
    set_report_sink(nullptr);
    REQUIRE(reports.size() == 4);
    CHECK(reports[0] == std::make_pair(ReportKind::Error, std::string("disk x is 100% full")));
    CHECK(reports[1] == std::make_pair(ReportKind::Warning, std::string("old syntax")));
    CHECK(reports[2] == std::make_pair(ReportKind::Plain, std::string("ERROR cluster 5 refcount=1 reference=2\n")));
    CHECK(reports[3] == std::make_pair(ReportKind::Error, std::string("x.qcow2: bad header\ntry again")));
}
