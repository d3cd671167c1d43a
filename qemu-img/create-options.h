// The options of "qemu-img create": the -o lists checked against the create
// schemas of the format driver and of the protocol driver under it, the way
// QEMU's QemuOpts handles them.
//
// The schemas' order matters: the "Formatting ..." line lists the options in
// schema order (format first, then protocol), each with the value given or
// else its default, so that a qcow2 schema ordered like QEMU's prints
//   fmt=qcow2 cluster_size=65536 extended_l2=off compression_type=zlib size=...
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "qemu/error.h"
#include "qemu/option.h"

namespace qemu::img {

class CreateOptions {
public:
    explicit CreateOptions(OptionSchema schema) : schema_(std::move(schema)) {}

    // Takes one -o list.  Fails on the first element (in the order given)
    // that names no option of the schema or has a malformed value, with
    // QEMU's message.  A later value of an option replaces an earlier one.
    bool parse(std::string_view text, Error& err);
    // Sets one option, checked like an element of a -o list.
    bool set(const std::string& name, const std::string& value, Error& err);
    bool supports(const std::string& name) const { return schema_.find(name) != nullptr; }

    // The "size" option: absent, or the number given (which, as in QEMU,
    // may be 2^64 - 1, meaning "no size").
    std::optional<uint64_t> size() const;
    void set_size(uint64_t bytes);
    // A size or number option: the value given, else its default, else 0.
    uint64_t size_or_default(const std::string& name) const;
    bool has(const std::string& name) const { return values_.count(name) != 0; }

    // "size=1048576 nocow=on": what QEMU prints after "fmt=FMT ".
    std::string to_string() const;

    // The options for the drivers, values in canonical form (sizes and
    // numbers in decimal, booleans on/off).
    QDict to_qdict() const;

private:
    struct Value {
        std::string text;     // as given, printed for strings and booleans
        uint64_t number = 0;  // parsed sizes and numbers
        bool flag = false;    // parsed booleans
    };

    OptionSchema schema_;
    std::map<std::string, Value> values_;
};

// "-o help": the schema's options, one "  name=<type>    - help" line each,
// sorted by name as QEMU prints them.
void print_option_help(const OptionSchema& schema);

// The create schema of format `fmt`, followed by that of the protocol the
// file name selects (when one is given), as qemu-img create and convert
// append them; nullopt and err (QEMU's messages) when the format is unknown
// or a driver cannot create images.
std::optional<OptionSchema> create_schema(const std::string& fmt, const char* filename,
                                          Error& err);

// "-o help" (QEMU's print_block_option_help()): prints the create options
// of `fmt`, and of the protocol of `filename` when one is given; false and
// err when create_schema() fails.
bool print_create_help(const char* filename, const std::string& fmt, Error& err);

}  // namespace qemu::img
