// qemu_strtosz(): QEMU 7.2's size syntax, its rounding and its two errors.
// The expected values are what QEMU 7.2's qemu-img accepts as image sizes.
#include <cerrno>

#include <catch2/catch.hpp>

#include "qemu/cutils.h"

using namespace qemu;

namespace {
int strtosz(const char* s, uint64_t& v, char default_suffix = 'B')
{
    v = 12345;
    return qemu_strtosz(s, v, default_suffix);
}
}  // namespace

TEST_CASE("qemu_strtosz accepts what QEMU accepts", "[strtosz]")
{
    struct Case {
        const char* text;
        uint64_t value;
    };
    const Case cases[] = {
        {"0", 0},
        {"512", 512},
        {"+1", 1},
        {" 1k", 1024},
        {"1K", 1024},
        {"1.k", 1024},
        {"1.0", 1},
        {"1.0b", 1},
        {"00012", 12},
        {"012k", 12288},
        {"1.5k", 1536},
        {"0.0005k", 1},                           // rounded half up
        {"1.1111111111111111111111111111111k", 1138},  // exact fixed point, not double
        {"7.9999999999999999E", 9223372036854775680ULL},
        {"0x10", 16},
        {"0X10", 16},
        {"1.5e", 3ULL << 59},
        {"18446744073709551615", UINT64_MAX},
    };
    for (const Case& c : cases) {
        INFO(c.text);
        uint64_t v;
        REQUIRE(strtosz(c.text, v) == 0);
        REQUIRE(v == c.value);
    }
    uint64_t v;
    REQUIRE(strtosz("64", v, 'M') == 0);
    REQUIRE(v == 64ULL << 20);
}

TEST_CASE("qemu_strtosz tells malformed from too large", "[strtosz]")
{
    for (const char* bad : {"", " ", "k", "-1", "1x", "1 k", "1k ", "1kB", "1KiB", "0.5", "0.1",
                            ".5k", "1e3", "1e-3k", "1.e3k", "nan", "inf", "0x", "0xg", "00x10",
                            "0x1.5k", "99999999999999999999k"}) {
        INFO(bad);
        uint64_t v;
        REQUIRE(strtosz(bad, v) == -EINVAL);
        REQUIRE(v == 12345);
    }
    for (const char* big : {"16E", "18446744073709551616", "99999999999999999999"}) {
        INFO(big);
        uint64_t v;
        REQUIRE(strtosz(big, v) == -ERANGE);
    }
}
