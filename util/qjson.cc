#include "qemu/qjson.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <vector>

namespace qemu {

namespace {

constexpr unsigned kHashBuckets = 512;

// The bucket QEMU's QDict puts a key in (its tdb_hash() modulo 512).
unsigned qdict_bucket(const std::string& key)
{
    uint32_t value = 0x238F13AFu * uint32_t(key.size());
    for (size_t i = 0; i < key.size(); i++) {
        value += uint32_t(static_cast<unsigned char>(key[i])) << (i * 5 % 24);
    }
    return (1103515243u * value + 12345u) % kHashBuckets;
}

// Decodes one code point of (modified) UTF-8 starting at s[pos], as QEMU's
// mod_utf8_codepoint(): -1 for anything invalid (a stray or missing
// continuation byte, overlong forms other than C0 80, surrogates,
// noncharacters, values beyond U+10FFFF).  pos moves past what was read.
int decode_utf8(const std::string& s, size_t& pos)
{
    static const int kMinForLength[] = {0x80, 0x800, 0x10000, 0x200000, 0x4000000};
    unsigned byte = static_cast<unsigned char>(s[pos++]);
    if (byte < 0x80) {
        return int(byte);
    }
    if (byte >= 0xFE || !(byte & 0x40)) {
        return -1;
    }
    unsigned len = 0;
    unsigned mask = 0x80;
    for (; byte & mask; mask >>= 1) {
        len++;
    }
    int cp = int(byte & (mask - 1));
    for (unsigned i = 1; i < len; i++) {
        unsigned next = pos < s.size() ? static_cast<unsigned char>(s[pos]) : 0;
        if ((next & 0xC0) != 0x80) {
            return -1;
        }
        pos++;
        cp = (cp << 6) | int(next & 0x3F);
    }
    if (cp > 0x10FFFF || (cp >= 0xFDD0 && cp <= 0xFDEF) || (cp & 0xFFFE) == 0xFFFE ||
        (cp >= 0xD800 && cp <= 0xDFFF) || (cp < kMinForLength[len - 2] && !(cp == 0 && len == 2))) {
        return -1;
    }
    return cp;
}

void append_quoted(std::string& out, const std::string& s)
{
    char buf[16];
    out += '"';
    for (size_t pos = 0; pos < s.size();) {
        int cp = decode_utf8(s, pos);
        switch (cp) {
        case '"': out += "\\\""; continue;
        case '\\': out += "\\\\"; continue;
        case '\b': out += "\\b"; continue;
        case '\f': out += "\\f"; continue;
        case '\n': out += "\\n"; continue;
        case '\r': out += "\\r"; continue;
        case '\t': out += "\\t"; continue;
        default: break;
        }
        if (cp < 0) {
            cp = 0xFFFD;
        }
        if (cp > 0xFFFF) {
            snprintf(buf, sizeof(buf), "\\u%04X\\u%04X", 0xD800 + ((cp - 0x10000) >> 10),
                     0xDC00 + ((cp - 0x10000) & 0x3FF));
            out += buf;
        } else if (cp < 0x20 || cp >= 0x7F) {
            snprintf(buf, sizeof(buf), "\\u%04X", cp);
            out += buf;
        } else {
            out += char(cp);
        }
    }
    out += '"';
}

class Writer {
public:
    explicit Writer(bool pretty) : pretty_(pretty) {}

    void write(const nlohmann::ordered_json& v, unsigned depth)
    {
        switch (v.type()) {
        case nlohmann::json::value_t::object:
            write_object(v, depth);
            break;
        case nlohmann::json::value_t::array:
            out_ += '[';
            for (size_t i = 0; i < v.size(); i++) {
                separator(i == 0, depth + 1);
                write(v[i], depth + 1);
            }
            newline(depth);
            out_ += ']';
            break;
        case nlohmann::json::value_t::string:
            append_quoted(out_, v.get_ref<const std::string&>());
            break;
        default:
            out_ += scalar_to_string(v);
            break;
        }
    }

    std::string take() { return std::move(out_); }

private:
    void write_object(const nlohmann::ordered_json& v, unsigned depth)
    {
        std::vector<QdictMember> members = qdict_members(v);
        out_ += '{';
        for (size_t i = 0; i < members.size(); i++) {
            separator(i == 0, depth + 1);
            append_quoted(out_, *members[i].key);
            out_ += ": ";
            write(*members[i].value, depth + 1);
        }
        newline(depth);
        out_ += '}';
    }

    // Before a member: a comma unless it is the first, then a new line
    // (pretty) or, between members, a space (compact).
    void separator(bool first, unsigned depth)
    {
        if (!first) {
            out_ += ',';
            if (!pretty_) {
                out_ += ' ';
            }
        }
        newline(depth);
    }

    void newline(unsigned depth)
    {
        if (pretty_) {
            out_ += '\n';
            out_.append(4 * depth, ' ');
        }
    }

    bool pretty_;
    std::string out_;
};

}  // namespace

std::vector<QdictMember> qdict_members(const nlohmann::ordered_json& object)
{
    struct Ranked {
        unsigned bucket;
        size_t inserted;
        QdictMember member;
    };
    std::vector<Ranked> ranked;
    size_t index = 0;
    for (auto it = object.begin(); it != object.end(); ++it) {
        ranked.push_back({qdict_bucket(it.key()), index++, {&it.key(), &it.value()}});
    }
    std::sort(ranked.begin(), ranked.end(), [](const Ranked& a, const Ranked& b) {
        return a.bucket != b.bucket ? a.bucket < b.bucket : a.inserted > b.inserted;
    });
    std::vector<QdictMember> members;
    for (const Ranked& r : ranked) {
        members.push_back(r.member);
    }
    return members;
}

std::string scalar_to_string(const nlohmann::ordered_json& v)
{
    switch (v.type()) {
    case nlohmann::json::value_t::string:
        return v.get<std::string>();
    case nlohmann::json::value_t::boolean:
        return v.get<bool>() ? "true" : "false";
    case nlohmann::json::value_t::number_integer:
        return std::to_string(v.get<int64_t>());
    case nlohmann::json::value_t::number_unsigned:
        return std::to_string(v.get<uint64_t>());
    case nlohmann::json::value_t::number_float: {
        char buf[32];
        snprintf(buf, sizeof(buf), "%.17g", v.get<double>());
        return buf;
    }
    default:
        return "null";
    }
}

std::string to_qemu_json(const nlohmann::ordered_json& value, bool pretty)
{
    Writer writer(pretty);
    writer.write(value, 0);
    return writer.take();
}

}  // namespace qemu
