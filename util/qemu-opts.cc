#include "qemu/qemu-opts.h"

namespace qemu {

namespace {

// Reads a value up to the next single ',' (",," stands for one comma);
// returns the position of that ',' or of the end.
size_t read_value(std::string_view text, size_t pos, std::string& value)
{
    while (pos < text.size()) {
        if (text[pos] == ',') {
            if (pos + 1 < text.size() && text[pos + 1] == ',') {
                value += ',';
                pos += 2;
                continue;
            }
            break;
        }
        value += text[pos++];
    }
    return pos;
}

}  // namespace

std::vector<OptsPair> split_qemu_opts(std::string_view text, const char* implied_name)
{
    std::vector<OptsPair> pairs;
    size_t pos = 0;
    while (pos < text.size()) {
        OptsPair pair;
        size_t name_end = text.find_first_of("=,", pos);
        if (name_end == std::string_view::npos) {
            name_end = text.size();
        }
        if (name_end < text.size() && text[name_end] == '=') {
            pair.name = text.substr(pos, name_end - pos);
            pos = read_value(text, name_end + 1, pair.value);
        } else if (implied_name && pairs.empty()) {
            pair.name = implied_name;
            pos = read_value(text, pos, pair.value);
        } else {
            pair.name = text.substr(pos, name_end - pos);
            pair.is_flag = true;
            if (pair.name.compare(0, 2, "no") == 0) {
                pair.name.erase(0, 2);
                pair.value = "off";
            } else {
                pair.value = "on";
            }
            pos = name_end;
        }
        pairs.push_back(std::move(pair));
        if (pos < text.size()) {
            pos++;  // the ',' ending this element
        }
    }
    return pairs;
}

bool has_help_option(std::string_view text)
{
    size_t pos = 0;
    while (pos < text.size()) {
        std::string element;
        pos = read_value(text, pos, element);
        if (element == "help" || element == "?") {
            return true;
        }
        if (pos < text.size()) {
            pos++;
        }
    }
    return false;
}

bool is_valid_option_list(std::string_view text)
{
    if (text.empty() || text.front() == ',') {
        return false;
    }
    size_t trailing = text.size() - (text.find_last_not_of(',') + 1);
    return trailing % 2 == 0;
}

}  // namespace qemu
