// Option syntaxes: keyval strings, json: filenames, schemas and typed access.
#include <catch2/catch.hpp>

#include "qemu/option.h"

using namespace qemu;

TEST_CASE("keyval strings become flat dotted keys", "[option]")
{
    QDict d;
    Error err;
    REQUIRE(keyval_parse(d, "driver=qcow2,file.driver=file,file.filename=a,,b.img", nullptr, err));
    REQUIRE(d.size() == 3);
    REQUIRE(*d.get("driver") == "qcow2");
    REQUIRE(*d.get("file.filename") == "a,b.img");
}

TEST_CASE("keyval: implied key, help, and malformed input", "[option]")
{
    Error err;
    QDict d;
    REQUIRE(keyval_parse(d, "disk.img,read-only=on", "filename", err));
    REQUIRE(*d.get("filename") == "disk.img");
    QDict h;
    REQUIRE(keyval_parse(h, "help", nullptr, err));
    REQUIRE(h.has("help"));
    QDict bad;
    REQUIRE_FALSE(keyval_parse(bad, "a=1,b", nullptr, err));
    REQUIRE(err.message == "Expected '=' after parameter 'b'");
    QDict empty;
    REQUIRE_FALSE(keyval_parse(empty, "=x", nullptr, err));
}

TEST_CASE("json: options flatten nested objects", "[option]")
{
    QDict d;
    Error err;
    REQUIRE(json_parse_flat(d, R"({"driver":"raw","file":{"driver":"file","filename":"x"},"offset":4096,"read-only":true})", err));
    REQUIRE(*d.get("file.driver") == "file");
    REQUIRE(*d.get("file.filename") == "x");
    REQUIRE(*d.get("offset") == "4096");
    REQUIRE(*d.get("read-only") == "on");
    QDict bad;
    REQUIRE_FALSE(json_parse_flat(bad, R"({"driver":)", err));
    REQUIRE(err.message == "Could not parse the JSON options: JSON parse error, premature EOI");
}

TEST_CASE("take_subtree moves a child's options out", "[option]")
{
    QDict d;
    d.set("driver", "qcow2");
    d.set("file.driver", "file");
    d.set("file.filename", "x");
    d.set("filex", "not a child key");
    QDict child = d.take_subtree("file");
    REQUIRE(child.size() == 2);
    REQUIRE(*child.get("filename") == "x");
    REQUIRE(d.size() == 2);
    REQUIRE(d.has("filex"));
    REQUIRE_FALSE(d.has_subtree("file"));
}

TEST_CASE("to_json round-trips through json_parse_flat", "[option]")
{
    QDict d;
    d.set("driver", "raw");
    d.set("file.driver", "file");
    d.set("file.filename", "a b");
    REQUIRE(d.to_json() == R"({"driver": "raw", "file": {"driver": "file", "filename": "a b"}})");
    QDict back;
    Error err;
    REQUIRE(json_parse_flat(back, d.to_json(), err));
    REQUIRE(*back.get("file.filename") == "a b");
}

TEST_CASE("schemas check types and name the bad parameter", "[option]")
{
    OptionSchema schema = {
        {"size", OptionType::Size, "", ""},
        {"flag", OptionType::Bool, "", ""},
        {"count", OptionType::Number, "", ""},
    };
    Error err;
    QDict ok;
    ok.set("size", "1.5M");
    ok.set("flag", "on");
    ok.set("count", "0x10");
    ok.set("other", "whatever");  // not ours to judge
    REQUIRE(schema.validate(ok, err));

    QDict bad_size;
    bad_size.set("size", "-1");
    REQUIRE_FALSE(schema.validate(bad_size, err));
    REQUIRE(err.message == "Parameter 'size' expects a non-negative number below 2^64");
    REQUIRE(err.hints.size() == 2);

    QDict bad_bool;
    bad_bool.set("flag", "maybe");
    REQUIRE_FALSE(schema.validate(bad_bool, err));
    REQUIRE(err.message == "Parameter 'flag' expects 'on' or 'off'");

    QDict bad_num;
    bad_num.set("count", "12abc");
    REQUIRE_FALSE(schema.validate(bad_num, err));
}

TEST_CASE("typed take_* consume options and apply defaults", "[option]")
{
    QDict d;
    d.set("size", "4k");
    Error err;
    REQUIRE(*take_size(d, "size", 0, err) == 4096);
    REQUIRE_FALSE(d.has("size"));
    REQUIRE(*take_size(d, "size", 77, err) == 77);
    REQUIRE(*take_bool(d, "b", true, err));
    REQUIRE(take_string(d, "s", "dflt") == "dflt");
}

TEST_CASE("to_json prints keys in QEMU's order and keeps JSON types", "[option]")
{
    QDict d;
    Error err;
    REQUIRE(json_parse_flat(d, R"({"driver":"raw","size":"8k","offset":4096,"file":{"filename":"x","driver":"file"},"ro":false})", err));
    // QEMU orders by hash bucket: offset 180, ro 201, driver 239,
    // filename 313, size 318, file 463.
    REQUIRE(d.to_json() ==
            R"({"offset": 4096, "ro": false, "driver": "raw", "size": "8k", "file": {"driver": "file", "filename": "x"}})");
}
