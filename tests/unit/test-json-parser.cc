// QEMU's JSON dialect and messages (include/qemu/json-parser.h).  The
// expected messages are what QEMU 7.2's qemu-img prints for the same
// json: filenames.
#include <catch2/catch.hpp>

#include <vector>

#include "qemu/json-parser.h"

using namespace qemu;

namespace {

std::string parse_error(const std::string& text)
{
    Error err;
    CHECK_FALSE(json_parse_qemu(text, err));
    return err.message;
}

nlohmann::ordered_json parse_ok(const std::string& text)
{
    Error err;
    std::optional<nlohmann::ordered_json> v = json_parse_qemu(text, err);
    INFO(err.message);
    REQUIRE(v);
    return *v;
}

}  // namespace

TEST_CASE("json: QEMU's dialect: single quotes, escapes, numbers", "[json]")
{
    CHECK(parse_ok("{'driver':'raw\\'x'}")["driver"] == "raw'x");
    CHECK(parse_ok("{'a':\"b'c\"}")["a"] == "b'c");
    CHECK(parse_ok("{\"a\":\"\\u00e9\\/\\t\"}")["a"] == "\xC3\xA9/\t");
    CHECK(parse_ok("\"\\uDBFF\\uDFFD\"") == "\xF4\x8F\xBF\xBD");
    CHECK(parse_ok("\"\\u0000\"").get<std::string>() == std::string("\xC0\x80"));
    CHECK(parse_ok("-12").get<int64_t>() == -12);
    CHECK(parse_ok("18446744073709551615").get<uint64_t>() == UINT64_MAX);
    CHECK(parse_ok("18446744073709551616").is_number_float());
    CHECK(parse_ok("1.5e3").get<double>() == 1500.0);
    CHECK(parse_ok(" [true, false, null, {}] ").size() == 4);
}

TEST_CASE("json: QEMU's error messages", "[json]")
{
    CHECK(parse_error("{") == "JSON parse error, premature EOI");
    CHECK(parse_error("{\"a\":") == "JSON parse error, premature EOI");
    CHECK(parse_error("{\"driver\":\"raw\",}") == "JSON parse error, expecting value");
    CHECK(parse_error("{\"a\":1}}") == "Expecting at most one JSON value");
    CHECK(parse_error("{\"a\":1} 1") == "Expecting at most one JSON value");
    CHECK(parse_error("") == "Expecting a JSON value");
    CHECK(parse_error("   ") == "Expecting a JSON value");
    CHECK(parse_error("{\"a\":@}") == "JSON parse error, stray '@'");
    CHECK(parse_error("{\"a\":\"r\\q\"}") == "JSON parse error, invalid escape sequence in string");
    CHECK(parse_error("{\"a\":\"\\ud800\"}") == "JSON parse error, \\ud800 is not a valid Unicode character");
    CHECK(parse_error("{\"a\":\"\\uFFFF\"}") == "JSON parse error, \\uFFFF is not a valid Unicode character");
    CHECK(parse_error("{\"a\":tru}") == "JSON parse error, invalid keyword 'tru'");
    CHECK(parse_error("{\"a\":1e}") == "JSON parse error, stray '1e}'");
    CHECK(parse_error("{\"a\":01}") == "JSON parse error, stray '01'");
    CHECK(parse_error("{\"a\":1,\"a\":2}") == "JSON parse error, duplicate key");
    CHECK(parse_error("{1:2}") == "JSON parse error, key is not a string in object");
    CHECK(parse_error("{\"a\" 1}") == "JSON parse error, missing : in object pair");
    CHECK(parse_error("{\"a\":1 \"b\":2}") == "JSON parse error, expected separator in dict");
    CHECK(parse_error("[1 2]") == "JSON parse error, expected separator in list");
    CHECK(parse_error("{\"a\":[1,]}") == "JSON parse error, expecting value");
    CHECK(parse_error("\"\xC0\x81\"") == "JSON parse error, invalid UTF-8 sequence in string");
    CHECK(parse_error(std::string(1025, '[')) == "JSON nesting depth limit exceeded");
}

TEST_CASE("json: the stream parser cuts values and resynchronises as QMP's", "[json]")
{
    std::vector<std::string> got;
    JsonStreamParser p([&](std::optional<nlohmann::ordered_json> v, const Error& err) {
        got.push_back(v ? v->dump() : "error: " + err.message);
    });
    // Two commands in one read, a third split across reads.
    p.feed("{\"execute\":\"a\"}{\"execute\":");
    p.feed("\"b\"} {\"exec");
    CHECK(got == std::vector<std::string>{"{\"execute\":\"a\"}", "{\"execute\":\"b\"}"});
    p.feed("ute\":\"c\"}");
    CHECK(got.back() == "{\"execute\":\"c\"}");
    // A stray byte fails (and drops) the value in progress; lexing resumes
    // at the next structural or control character, so the following
    // command still parses.
    got.clear();
    p.feed("{\"x\": #junk\n{\"execute\":\"d\"}");
    CHECK(got == std::vector<std::string>{"error: JSON parse error, stray '#'", "{\"execute\":\"d\"}"});
    // 0xFF resets a half-sent value (QMP's documented resynchronisation).
    got.clear();
    p.feed("{\"a\":\"unfinished");
    p.feed("\xFF");
    p.feed("{\"execute\":\"e\"}");
    CHECK(got.back() == "{\"execute\":\"e\"}");
    // End of input finishes what is pending.
    got.clear();
    p.feed("{\"a\":1");
    p.flush();
    CHECK(got == std::vector<std::string>{"error: JSON parse error, premature EOI"});
}
