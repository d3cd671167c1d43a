// String and number helpers shared by the tools and option parsing.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace qemu {

// QEMU 7.2's qemu_strtosz(): a non-negative decimal number (a fraction is
// allowed with a suffix, rounded to the nearest byte) or a 0x hex number,
// optionally followed by one of B K M G T P E (case-insensitive, powers of
// 1024); `default_suffix` applies when none is given.  Returns 0, -EINVAL
// (not a size) or -ERANGE (above 2^64 - 1).  A suffix on a hex number is
// deprecated: like QEMU, this prints a warning on stderr.
int qemu_strtosz(std::string_view str, uint64_t& result, char default_suffix = 'B');

// qemu_strtosz() for callers that need no reason: nullopt on any error.
std::optional<uint64_t> parse_size(std::string_view str, char default_suffix = 'B');

// Parses a plain integer (decimal, 0x hex, 0 octal, optional sign) like
// qemu_strtoi64(); the whole string must be consumed.
std::optional<int64_t> parse_int64(std::string_view str);

// "4 KiB", "1.5 MiB", "512 bytes": QEMU's size_to_str(), used by qemu-img
// info and qemu-io's statistics line.
std::string size_to_str(uint64_t bytes);

// QEMU's id_wellformed(), for node names and object/export ids: a
// letter, then letters, digits, '-', '.', '_'.
bool id_wellformed(const std::string& id);

// Does the string start with prefix?
inline bool starts_with(std::string_view s, std::string_view prefix)
{
    return s.substr(0, prefix.size()) == prefix;
}

}  // namespace qemu
