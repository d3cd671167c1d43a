// qemu-img's JSON output: QEMU's member order, layout and string escapes.
// The expected texts are what QEMU 7.2's qemu-img prints.
#include <catch2/catch.hpp>

#include "qemu/qjson.h"

using namespace qemu;
using Json = nlohmann::ordered_json;

TEST_CASE("members come out in QEMU's hash order", "[qjson]")
{
    // Filled in the order of QEMU's ImageInfo schema.
    Json info = Json::object();
    info["filename"] = "a.raw";
    info["format"] = "raw";
    info["dirty-flag"] = false;
    info["actual-size"] = 4096;
    info["virtual-size"] = 1048576;
    REQUIRE(to_qemu_json(info, true) ==
            "{\n"
            "    \"virtual-size\": 1048576,\n"
            "    \"filename\": \"a.raw\",\n"
            "    \"format\": \"raw\",\n"
            "    \"actual-size\": 4096,\n"
            "    \"dirty-flag\": false\n"
            "}");

    // qcow2's format-specific data, in the order of its QAPI schema.
    Json data = Json::object();
    data["compat"] = "1.1";
    data["extended-l2"] = false;
    data["lazy-refcounts"] = false;
    data["corrupt"] = false;
    data["refcount-bits"] = 16;
    data["compression-type"] = "zlib";
    REQUIRE(to_qemu_json(data, false) ==
            R"({"compat": "1.1", "compression-type": "zlib", "lazy-refcounts": false, )"
            R"("refcount-bits": 16, "corrupt": false, "extended-l2": false})");
}

TEST_CASE("keys sharing a bucket print newest first", "[qjson]")
{
    // "a", "rb" and "rr" hash to the same bucket.
    Json obj = Json::object();
    obj["a"] = 1;
    obj["rb"] = 2;
    obj["rr"] = 3;
    REQUIRE(to_qemu_json(obj, false) == R"({"rr": 3, "rb": 2, "a": 1})");
}

TEST_CASE("compact output is QEMU's json: file name syntax", "[qjson]")
{
    Json obj = Json::object();
    obj["driver"] = "raw";
    obj["file"] = Json::object({{"driver", "file"}, {"filename", "sub/a.raw"}});
    obj["offset"] = "512";
    obj["size"] = "1024";
    REQUIRE(to_qemu_json(obj, false) ==
            R"({"offset": "512", "driver": "raw", "size": "1024", )"
            R"("file": {"driver": "file", "filename": "sub/a.raw"}})");
}

TEST_CASE("nesting, arrays and empty containers", "[qjson]")
{
    Json list = Json::array({Json::object({{"format", "raw"}}), 2});
    REQUIRE(to_qemu_json(list, true) ==
            "[\n"
            "    {\n"
            "        \"format\": \"raw\"\n"
            "    },\n"
            "    2\n"
            "]");
    REQUIRE(to_qemu_json(Json::object(), true) == "{\n}");
    REQUIRE(to_qemu_json(Json::array(), false) == "[]");
    REQUIRE(to_qemu_json(Json(-5), false) == "-5");
    REQUIRE(to_qemu_json(Json(nullptr), false) == "null");
}

TEST_CASE("strings are escaped as QEMU does", "[qjson]")
{
    REQUIRE(to_qemu_json(Json("x\"y\\z\t\u00e9.raw"), false) == R"("x\"y\\z\t\u00E9.raw")");
    REQUIRE(to_qemu_json(Json("/a/b\n\r\b\f"), false) == R"("/a/b\n\r\b\f")");
    REQUIRE(to_qemu_json(Json("\x01\x7f"), false) == R"("\u0001\u007F")");
    // Beyond the BMP: a surrogate pair.
    REQUIRE(to_qemu_json(Json("\xf0\x9f\x98\x80"), false) == R"("\uD83D\uDE00")");
    // Invalid UTF-8 (a stray continuation byte, a truncated sequence, an
    // overlong form) becomes U+FFFD; QEMU's C0 80 is NUL.
    REQUIRE(to_qemu_json(Json(std::string("a\x80") + "b"), false) == R"("a\uFFFDb")");
    REQUIRE(to_qemu_json(Json(std::string("\xe2\x82")), false) == R"("\uFFFD")");
    REQUIRE(to_qemu_json(Json(std::string("\xe0\x80\xaf")), false) == R"("\uFFFD")");
    REQUIRE(to_qemu_json(Json(std::string("\xc0\x80")), false) == R"("\u0000")");
}
