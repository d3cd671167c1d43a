// Size parsing and printing, as QEMU's qemu_strtosz() and size_to_str().
#include <catch2/catch.hpp>

#include "qemu/cutils.h"

using namespace qemu;

TEST_CASE("parse_size accepts QEMU's size syntax", "[cutils]")
{
    REQUIRE(*parse_size("0") == 0);
    REQUIRE(*parse_size("512") == 512);
    REQUIRE(*parse_size("4k") == 4096);
    REQUIRE(*parse_size("4K") == 4096);
    REQUIRE(*parse_size("1M") == 1048576);
    REQUIRE(*parse_size("1.5M") == 1572864);
    REQUIRE(*parse_size("2G") == 2147483648ULL);
    REQUIRE(*parse_size("1E") == 1ULL << 60);
    REQUIRE(*parse_size("0x1000") == 4096);
    REQUIRE(*parse_size("18446744073709551615") == UINT64_MAX);
    REQUIRE(*parse_size("64", 'M') == 64ULL << 20);
}

TEST_CASE("parse_size rejects what QEMU rejects", "[cutils]")
{
    for (const char* bad : {"", "-1", "1Q", "abc", "1.5", "1.5B", "16E", "18446744073709551616",
                            "0x1.5k", "1M2", " ", "k"}) {
        INFO(bad);
        REQUIRE_FALSE(parse_size(bad));
    }
}

TEST_CASE("size_to_str matches QEMU's human sizes", "[cutils]")
{
    REQUIRE(size_to_str(0) == "0 B");
    REQUIRE(size_to_str(512) == "512 B");
    REQUIRE(size_to_str(4096) == "4 KiB");
    REQUIRE(size_to_str(1048576) == "1 MiB");
    REQUIRE(size_to_str(1572864) == "1.5 MiB");
    REQUIRE(size_to_str(1000 * 1024) == "0.977 MiB");
    REQUIRE(size_to_str(805306368) == "768 MiB");
    REQUIRE(size_to_str(32ULL << 30) == "32 GiB");
}

TEST_CASE("parse_int64 takes whole integers only", "[cutils]")
{
    REQUIRE(*parse_int64("-5") == -5);
    REQUIRE(*parse_int64("0x10") == 16);
    REQUIRE_FALSE(parse_int64("5x"));
    REQUIRE_FALSE(parse_int64(""));
}
