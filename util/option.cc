#include "qemu/option.h"

#include <nlohmann/json.hpp>

#include "qemu/cutils.h"
#include "qemu/json-parser.h"

namespace qemu {

const std::string* QDict::get(const std::string& key) const
{
    auto it = map_.find(key);
    return it == map_.end() ? nullptr : &it->second;
}

std::optional<std::string> QDict::take(const std::string& key)
{
    auto it = map_.find(key);
    if (it == map_.end()) {
        return std::nullopt;
    }
    std::string v = std::move(it->second);
    map_.erase(it);
    literals_.erase(key);
    return v;
}

void QDict::copy_from(const QDict& other, const std::string& key)
{
    if (const std::string* v = other.get(key)) {
        if (other.literals_.count(key)) {
            set_literal(key, *v);
        } else {
            set(key, *v);
        }
    }
}

void QDict::merge_defaults(const QDict& other)
{
    for (const auto& [k, v] : other.map_) {
        if (map_.emplace(k, v).second && other.literals_.count(k)) {
            literals_.insert(k);
        }
    }
}

QDict QDict::take_subtree(const std::string& prefix)
{
    QDict out;
    std::string dotted = prefix + ".";
    for (auto it = map_.lower_bound(dotted); it != map_.end() && starts_with(it->first, dotted);) {
        std::string key = it->first.substr(dotted.size());
        out.map_[key] = std::move(it->second);
        if (literals_.erase(it->first)) {
            out.literals_.insert(key);
        }
        it = map_.erase(it);
    }
    return out;
}

bool QDict::has_subtree(const std::string& prefix) const
{
    std::string dotted = prefix + ".";
    auto it = map_.lower_bound(dotted);
    return it != map_.end() && starts_with(it->first, dotted);
}

void QDict::merge_subtree(const std::string& prefix, const QDict& other)
{
    for (const auto& [k, v] : other.map_) {
        map_[prefix + "." + k] = v;
        if (other.literals_.count(k)) {
            literals_.insert(prefix + "." + k);
        }
    }
}

namespace {

// The bucket QEMU's QDict puts a key in (its tdb_hash modulo the table
// size); QEMU iterates buckets in order, and so prints json: names in it.
unsigned qdict_bucket(const std::string& key)
{
    uint32_t v = 0x238F13AFu * uint32_t(key.size());
    for (size_t i = 0; i < key.size(); i++) {
        v += uint32_t(uint8_t(key[i])) << (i * 5 % 24);
    }
    return (1103515243u * v + 12345u) % 512;
}

void append_json_string(std::string& out, const std::string& s)
{
    out += nlohmann::json(s).dump();
}

}  // namespace

std::string QDict::to_json() const
{
    // Group the flat keys by their first component.
    std::map<std::string, QDict> nested;
    std::vector<std::string> order;
    for (const auto& [key, value] : map_) {
        size_t dot = key.find('.');
        std::string head = dot == std::string::npos ? key : key.substr(0, dot);
        if (!nested.count(head)) {
            order.push_back(head);
        }
        if (dot != std::string::npos) {
            QDict& sub = nested[head];
            std::string rest = key.substr(dot + 1);
            sub.map_[rest] = value;
            if (literals_.count(key)) {
                sub.literals_.insert(rest);
            }
        } else {
            nested[head];
        }
    }
    std::stable_sort(order.begin(), order.end(), [](const std::string& a, const std::string& b) {
        return qdict_bucket(a) < qdict_bucket(b);
    });
    std::string out = "{";
    bool first = true;
    for (const std::string& head : order) {
        if (!first) {
            out += ", ";
        }
        first = false;
        append_json_string(out, head);
        out += ": ";
        auto it = map_.find(head);
        if (it == map_.end()) {
            out += nested[head].to_json();
        } else if (literals_.count(head)) {
            const std::string& v = it->second;
            out += v == "on" ? "true" : v == "off" ? "false" : v;
        } else {
            append_json_string(out, it->second);
        }
    }
    return out + "}";
}

bool keyval_parse(QDict& dict, std::string_view text, const char* implied_key, Error& err)
{
    size_t pos = 0;
    bool first = true;
    while (pos <= text.size()) {
        // Read one element up to an unescaped comma.
        std::string elem;
        while (pos < text.size()) {
            if (text[pos] == ',') {
                if (pos + 1 < text.size() && text[pos + 1] == ',') {
                    elem += ',';
                    pos += 2;
                    continue;
                }
                break;
            }
            elem += text[pos++];
        }
        pos++;  // skip the comma (or step past the end)
        if (elem.empty()) {
            if (pos > text.size() && !first) {
                break;
            }
            err.set("Invalid parameter ''");
            return false;
        }
        size_t eq = elem.find('=');
        if (eq == std::string::npos) {
            if (elem == "help" || elem == "?") {
                dict.set("help", "on");
            } else if (first && implied_key) {
                dict.set(implied_key, elem);
            } else {
                err.set("Expected '=' after parameter '%s'", elem.c_str());
                return false;
            }
        } else {
            std::string key = elem.substr(0, eq);
            if (key.empty()) {
                err.set("Invalid parameter ''");
                return false;
            }
            dict.set(key, elem.substr(eq + 1));
        }
        first = false;
        if (pos > text.size()) {
            break;
        }
    }
    return true;
}

namespace {
bool flatten_json(QDict& dict, const nlohmann::ordered_json& node, const std::string& prefix, Error& err)
{
    for (auto it = node.begin(); it != node.end(); ++it) {
        std::string key = prefix.empty() ? it.key() : prefix + "." + it.key();
        const nlohmann::ordered_json& v = it.value();
        if (v.is_object()) {
            if (!flatten_json(dict, v, key, err)) {
                return false;
            }
        } else if (v.is_string()) {
            dict.set(key, v.get<std::string>());
        } else if (v.is_boolean()) {
            dict.set_literal(key, v.get<bool>() ? "on" : "off");
        } else if (v.is_number_unsigned()) {
            dict.set_literal(key, std::to_string(v.get<uint64_t>()));
        } else if (v.is_number_integer()) {
            dict.set_literal(key, std::to_string(v.get<int64_t>()));
        } else if (v.is_number_float()) {
            // QEMU's JSON writer prints doubles with %.17g (1e3 is "1000").
            dict.set_literal(key, string_printf("%.17g", v.get<double>()));
        } else if (v.is_null()) {
            dict.set_literal(key, "null");
        } else {
            err.set("Parameter '%s' has an unsupported type (arrays are not accepted)", key.c_str());
            return false;
        }
    }
    return true;
}
}  // namespace

bool json_parse_flat(QDict& dict, std::string_view json_text, Error& err)
{
    Error parse_err;
    std::optional<nlohmann::ordered_json> parsed = json_parse_qemu(json_text, parse_err);
    if (!parsed) {
        err.set("Could not parse the JSON options: %s", parse_err.message.c_str());
        return false;
    }
    const nlohmann::ordered_json& root = *parsed;
    if (!root.is_object()) {
        err.set("Invalid JSON object given");
        return false;
    }
    return flatten_json(dict, root, "", err);
}

void OptionSchema::append(const OptionSchema& other)
{
    for (const auto& d : other.descs_) {
        if (!find(d.name)) {
            descs_.push_back(d);
        }
    }
}

const OptionDesc* OptionSchema::find(std::string_view name) const
{
    for (const auto& d : descs_) {
        if (d.name == name) {
            return &d;
        }
    }
    return nullptr;
}

bool OptionSchema::validate(const QDict& dict, Error& err) const
{
    for (const auto& [key, value] : dict) {
        const OptionDesc* d = find(key);
        if (!d) {
            continue;
        }
        switch (d->type) {
        case OptionType::String:
            break;
        case OptionType::Bool:
            if (!parse_bool_option(key, value, err)) {
                return false;
            }
            break;
        case OptionType::Size:
            if (!parse_size_option(key, value, err)) {
                return false;
            }
            break;
        case OptionType::Number:
            if (!parse_number_option(key, value, err)) {
                return false;
            }
            break;
        }
    }
    return true;
}

std::optional<bool> parse_bool_option(const std::string& name, const std::string& value, Error& err)
{
    if (value == "on" || value == "true" || value == "yes" || value == "y") {
        return true;
    }
    if (value == "off" || value == "false" || value == "no" || value == "n") {
        return false;
    }
    err.set("Parameter '%s' expects 'on' or 'off'", name.c_str());
    return std::nullopt;
}

std::optional<uint64_t> parse_size_option(const std::string& name, const std::string& value, Error& err)
{
    uint64_t v;
    int ret = qemu_strtosz(value, v);
    if (ret == -ERANGE) {
        err.set("Value '%s' is out of range for parameter '%s'", value.c_str(), name.c_str());
        return std::nullopt;
    }
    if (ret < 0) {
        err.set("Parameter '%s' expects a non-negative number below 2^64", name.c_str());
        err.add_hint("Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-");
        err.add_hint("and exabytes, respectively.");
        return std::nullopt;
    }
    return v;
}

std::optional<uint64_t> parse_number_option(const std::string& name, const std::string& value, Error& err)
{
    // QEMU's qemu_strtou64(): strtoull's syntax, so a negative number
    // wraps around ("-1" is 2^64 - 1) and a larger limit then applies.
    char* end = nullptr;
    errno = 0;
    unsigned long long v = strtoull(value.c_str(), &end, 0);
    if (errno == ERANGE) {
        err.set("Value '%s' is too large for parameter '%s'", value.c_str(), name.c_str());
        return std::nullopt;
    }
    if (errno == 0 && end != value.c_str() && *end == '\0') {
        return v;
    }
    err.set("Parameter '%s' expects a number", name.c_str());
    return std::nullopt;
}

std::optional<bool> take_bool(QDict& dict, const std::string& key, bool def, Error& err)
{
    auto v = dict.take(key);
    return v ? parse_bool_option(key, *v, err) : std::optional<bool>(def);
}

std::optional<uint64_t> take_size(QDict& dict, const std::string& key, uint64_t def, Error& err)
{
    auto v = dict.take(key);
    return v ? parse_size_option(key, *v, err) : std::optional<uint64_t>(def);
}

std::optional<uint64_t> take_number(QDict& dict, const std::string& key, uint64_t def, Error& err)
{
    auto v = dict.take(key);
    return v ? parse_number_option(key, *v, err) : std::optional<uint64_t>(def);
}

std::string take_string(QDict& dict, const std::string& key, const std::string& def)
{
    auto v = dict.take(key);
    return v ? *v : def;
}

}  // namespace qemu
