// qemu-img's option strings (-o, --image-opts) and its create options: how
// QEMU splits them, checks them and prints the "Formatting" line.
#include <catch2/catch.hpp>

#include "../../qemu-img/create-options.h"
#include "qemu/qemu-opts.h"

using namespace qemu;
using qemu::img::CreateOptions;

namespace {

std::string describe(const std::vector<OptsPair>& pairs)
{
    std::string out;
    for (const OptsPair& p : pairs) {
        out += "[" + p.name + "=" + p.value + (p.is_flag ? " flag" : "") + "]";
    }
    return out;
}

// The create options of raw on a file, in QEMU's order.
OptionSchema raw_file_schema()
{
    OptionSchema schema = {{"size", OptionType::Size, "Virtual disk size", ""}};
    schema.append(OptionSchema{
        {"size", OptionType::Size, "Virtual disk size", ""},
        {"nocow", OptionType::Bool, "Turn off copy-on-write (valid only on btrfs)", ""},
        {"preallocation", OptionType::String, "Preallocation mode", ""},
        {"extent_size_hint", OptionType::Size, "Extent size hint", ""},
    });
    return schema;
}

}  // namespace

TEST_CASE("option strings split like QemuOpts", "[qemu-opts]")
{
    REQUIRE(describe(split_qemu_opts("a=1,b=x,,y,flag,noflag", nullptr)) ==
            "[a=1][b=x,y][flag=on flag][flag=off flag]");
    // Names end at the first ',': "a,,b" is the flags "a", "" and "b".
    REQUIRE(describe(split_qemu_opts("a,,b", nullptr)) == "[a=on flag][=on flag][b=on flag]");
    REQUIRE(describe(split_qemu_opts("=1", nullptr)) == "[=1]");
    REQUIRE(describe(split_qemu_opts("size=1M,", nullptr)) == "[size=1M]");
    REQUIRE(describe(split_qemu_opts("", nullptr)).empty());
    // An implied name takes a leading bare value, commas and all.
    REQUIRE(describe(split_qemu_opts("a,,b.img,driver=raw", "file")) ==
            "[file=a,b.img][driver=raw]");
    REQUIRE(describe(split_qemu_opts("driver=raw,ro", "file")) == "[driver=raw][ro=on flag]");
}

TEST_CASE("help and list validity as QEMU judges them", "[qemu-opts]")
{
    REQUIRE(has_help_option("size=1M,help"));
    REQUIRE(has_help_option("?"));
    REQUIRE_FALSE(has_help_option("help=1"));
    REQUIRE_FALSE(has_help_option("a,,help"));  // one element: "a,help"

    REQUIRE(is_valid_option_list("size=1M"));
    REQUIRE(is_valid_option_list("size=1M,,"));
    REQUIRE(is_valid_option_list("a,,b"));
    REQUIRE_FALSE(is_valid_option_list(""));
    REQUIRE_FALSE(is_valid_option_list(",size=1M"));
    REQUIRE_FALSE(is_valid_option_list("size=1M,"));
    REQUIRE_FALSE(is_valid_option_list("size=1M,,,"));
}

TEST_CASE("create options print in schema order with QEMU's value forms", "[qemu-opts]")
{
    CreateOptions opts(raw_file_schema());
    Error err;
    REQUIRE(opts.parse("extent_size_hint=1M,nocow=yes,preallocation=a,,b", err));
    REQUIRE(opts.parse("size=1.5k", err));
    REQUIRE(opts.to_string() ==
            "size=1536 nocow=yes preallocation=a,,b extent_size_hint=1048576");
    QDict dict = opts.to_qdict();
    REQUIRE(*dict.get("nocow") == "on");
    REQUIRE(*dict.get("preallocation") == "a,b");
    REQUIRE(*dict.get("size") == "1536");

    CreateOptions big(raw_file_schema());
    big.set_size(uint64_t(1) << 63);
    REQUIRE(big.to_string() == "size=-9223372036854775808");
    REQUIRE(*big.size() == uint64_t(1) << 63);
}

TEST_CASE("create options fail on the first bad element given", "[qemu-opts]")
{
    Error err;
    CreateOptions a(raw_file_schema());
    REQUIRE_FALSE(a.parse("size=abc,nocow=maybe", err));
    REQUIRE(err.message == "Parameter 'size' expects a non-negative number below 2^64");
    CreateOptions b(raw_file_schema());
    REQUIRE_FALSE(b.parse("nocow=maybe,size=abc", err));
    REQUIRE(err.message == "Parameter 'nocow' expects 'on' or 'off'");
    CreateOptions c(raw_file_schema());
    REQUIRE_FALSE(c.parse("nocow", err));  // a flag: nocow=on would be fine, "cow" is unknown
    REQUIRE(err.message == "Invalid parameter 'cow'");
    CreateOptions d(raw_file_schema());
    REQUIRE_FALSE(d.parse("size=16E", err));
    REQUIRE(err.message == "Value '16E' is out of range for parameter 'size'");
    // "id" belongs to QemuOpts itself and is ignored.
    CreateOptions e(raw_file_schema());
    REQUIRE(e.parse("id=x,size=1k", err));
    REQUIRE(e.to_string() == "size=1024");
}

TEST_CASE("defaults appear in the Formatting line", "[qemu-opts]")
{
    OptionSchema schema = {
        {"cluster_size", OptionType::Size, "qcow2 cluster size", "65536"},
        {"extended_l2", OptionType::Bool, "Extended L2 tables", "off"},
        {"size", OptionType::Size, "Virtual disk size", ""},
        {"backing_file", OptionType::String, "File name of a base image", ""},
        {"refcount_bits", OptionType::Number, "Width of a reference count entry in bits", "16"},
    };
    CreateOptions opts(schema);
    Error err;
    REQUIRE(opts.parse("refcount_bits=0x8,backing_file=b,,c", err));
    opts.set_size(1048576);
    REQUIRE(opts.to_string() ==
            "cluster_size=65536 extended_l2=off size=1048576 backing_file=b,,c refcount_bits=8");
    REQUIRE(opts.size_or_default("cluster_size") == 65536);
    REQUIRE(opts.size_or_default("refcount_bits") == 8);
    REQUIRE(opts.size_or_default("unknown") == 0);
}
