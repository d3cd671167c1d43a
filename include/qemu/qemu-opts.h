// QEMU's QemuOpts option strings, the syntax of "qemu-img create -o" and of
// "--image-opts": "name=value,flag,noflag".
//
// Unlike keyval (qemu/option.h), an element without '=' is a boolean flag
// ("nocow" means nocow=on, "nonocow" nocow=off) and a name ends at the first
// ',' or '=', while values write a literal comma as ",,".  These rules decide
// which messages users see for malformed input, so they follow QEMU exactly.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace qemu {

struct OptsPair {
    std::string name;
    std::string value;
    bool is_flag = false;  // written without '=': "name" or "noname"
};

// Splits text into its elements, in order.  `implied_name` names a leading
// element without '=' (QEMU's implied_opt_name), nullptr for none.
std::vector<OptsPair> split_qemu_opts(std::string_view text, const char* implied_name);

// Is any element exactly "help" or "?" (QEMU's has_help_option())?
bool has_help_option(std::string_view text);

// QEMU's test for a -o argument: not empty, no leading ',', and no odd
// number of trailing commas (",," is an escaped comma, a single one would
// start an empty element).
bool is_valid_option_list(std::string_view text);

}  // namespace qemu
