#include "create-options.h"

#include <algorithm>
#include <cstdio>
#include <vector>

#include "block/block_int.h"
#include "qemu/qemu-opts.h"
#include "qemu/cutils.h"

namespace qemu::img {

namespace {

// QemuOpts prints string values with their commas doubled, so that the
// line could be pasted back into -o.
std::string escape_commas(const std::string& s)
{
    std::string out;
    for (char c : s) {
        out += c;
        if (c == ',') {
            out += ',';
        }
    }
    return out;
}

const char* type_name(OptionType type)
{
    switch (type) {
    case OptionType::String: return "str";
    case OptionType::Bool: return "bool (on/off)";
    case OptionType::Number: return "num";
    case OptionType::Size: return "size";
    }
    return "str";
}

}  // namespace

bool CreateOptions::parse(std::string_view text, Error& err)
{
    for (const OptsPair& pair : split_qemu_opts(text, nullptr)) {
        if (pair.name == "id") {
            continue;  // QemuOpts takes "id" for itself and ignores it here
        }
        if (!set(pair.name, pair.value, err)) {
            return false;
        }
    }
    return true;
}

bool CreateOptions::set(const std::string& name, const std::string& text, Error& err)
{
    const OptionDesc* desc = schema_.find(name);
    if (!desc) {
        err.set("Invalid parameter '%s'", name.c_str());
        return false;
    }
    Value value;
    value.text = text;
    switch (desc->type) {
    case OptionType::String:
        break;
    case OptionType::Bool: {
        auto b = parse_bool_option(name, text, err);
        if (!b) {
            return false;
        }
        value.flag = *b;
        break;
    }
    case OptionType::Number: {
        auto n = parse_number_option(name, text, err);
        if (!n) {
            return false;
        }
        value.number = *n;
        break;
    }
    case OptionType::Size: {
        auto n = parse_size_option(name, text, err);
        if (!n) {
            return false;
        }
        value.number = *n;
        break;
    }
    }
    values_[name] = std::move(value);
    return true;
}

std::optional<uint64_t> CreateOptions::size() const
{
    auto it = values_.find("size");
    if (it == values_.end()) {
        return std::nullopt;
    }
    return it->second.number;
}

void CreateOptions::set_size(uint64_t bytes)
{
    values_["size"] = Value{std::to_string(int64_t(bytes)), bytes, false};
}

uint64_t CreateOptions::size_or_default(const std::string& name) const
{
    if (auto it = values_.find(name); it != values_.end()) {
        return it->second.number;
    }
    const OptionDesc* desc = schema_.find(name);
    return desc ? parse_size(desc->default_value).value_or(0) : 0;
}

std::string CreateOptions::to_string() const
{
    std::string out;
    for (const OptionDesc& desc : schema_.descs()) {
        auto it = values_.find(desc.name);
        if (it == values_.end() && desc.default_value.empty()) {
            continue;
        }
        if (!out.empty()) {
            out += ' ';
        }
        out += desc.name + "=";
        if (it == values_.end()) {
            out += desc.type == OptionType::String ? escape_commas(desc.default_value)
                                                   : desc.default_value;
            continue;
        }
        switch (desc.type) {
        case OptionType::String:
            out += escape_commas(it->second.text);
            break;
        case OptionType::Bool:
            out += it->second.text;
            break;
        case OptionType::Number:
        case OptionType::Size:
            // QEMU prints these signed: "size=-9223372036854775808".
            out += std::to_string(int64_t(it->second.number));
            break;
        }
    }
    return out;
}

QDict CreateOptions::to_qdict() const
{
    QDict dict;
    for (const auto& [name, value] : values_) {
        switch (schema_.find(name)->type) {
        case OptionType::String:
            dict.set(name, value.text);
            break;
        case OptionType::Bool:
            dict.set(name, value.flag ? "on" : "off");
            break;
        case OptionType::Number:
        case OptionType::Size:
            dict.set(name, std::to_string(value.number));
            break;
        }
    }
    return dict;
}

std::optional<OptionSchema> create_schema(const std::string& fmt, const char* filename,
                                          Error& err)
{
    const BlockDriver* drv = bdrv_find_driver(fmt);
    if (!drv) {
        err.set("Unknown file format '%s'", fmt.c_str());
        return std::nullopt;
    }
    const BlockDriver* proto = nullptr;
    if (filename) {
        proto = bdrv_find_protocol(filename, err);
        if (!proto) {
            return std::nullopt;
        }
    }
    if (!drv->create_schema()) {
        err.set("Format driver '%s' does not support image creation", fmt.c_str());
        return std::nullopt;
    }
    OptionSchema schema = *drv->create_schema();
    if (proto) {
        if (!proto->create_schema()) {
            err.set("Protocol driver '%.*s' does not support image creation",
                    int(proto->name().size()), proto->name().data());
            return std::nullopt;
        }
        schema.append(*proto->create_schema());
    }
    return schema;
}

bool print_create_help(const char* filename, const std::string& fmt, Error& err)
{
    auto schema = create_schema(fmt, filename, err);
    if (!schema) {
        return false;
    }
    if (filename) {
        printf("Supported options:\n");
    } else {
        printf("Supported %s options:\n", fmt.c_str());
    }
    print_option_help(*schema);
    if (!filename) {
        printf("\n"
               "The protocol level may support further options.\n"
               "Specify the target filename to include those options.\n");
    }
    return true;
}

void print_option_help(const OptionSchema& schema)
{
    std::vector<std::string> lines;
    for (const OptionDesc& desc : schema.descs()) {
        std::string line = "  " + desc.name + "=<" + type_name(desc.type) + ">";
        if (!desc.help.empty()) {
            if (line.size() < 24) {
                line.append(24 - line.size(), ' ');
            }
            line += " - " + desc.help;
        }
        lines.push_back(std::move(line));
    }
    std::sort(lines.begin(), lines.end());
    for (const std::string& line : lines) {
        printf("%s\n", line.c_str());
    }
}

}  // namespace qemu::img
