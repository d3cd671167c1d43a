// QMP input framing (see include/monitor/qmp-stream.h).
#include "monitor/qmp-stream.h"

#include "qemu/error.h"

namespace qemu {

namespace {

bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

// A byte that aborts the value: control characters outside strings and
// 0xFF, which is never valid UTF-8.
bool is_stray(char c, bool in_string)
{
    unsigned char u = static_cast<unsigned char>(c);
    return u == 0xff || (!in_string && u < 0x20 && !is_space(c));
}

// QEMU's name for a stray byte: \u001B, or U+FFFD for invalid UTF-8.
std::string stray_name(char c)
{
    unsigned char u = static_cast<unsigned char>(c);
    return u == 0xff ? "\\uFFFD" : string_printf("\\u%04X", u);
}

// QEMU's message for what nlohmann-json could not parse.
std::string parse_error_message(const std::string& text, const std::string& what)
{
    if (what.find("invalid literal") != std::string::npos) {
        size_t start = text.find_first_not_of(" \t\r\n{[:,");
        size_t end = text.find_first_of(" \t\r\n,]}:", start);
        std::string word = start == std::string::npos ? "" : text.substr(start, end - start);
        return "JSON parse error, invalid keyword '" + word + "'";
    }
    if (what.find("object separator") != std::string::npos) {
        return "JSON parse error, missing : in object pair";
    }
    if (what.find("object key") != std::string::npos &&
        what.find("expected string literal") != std::string::npos) {
        return "JSON parse error, key is not a string in object";
    }
    return "JSON parse error, expecting value";
}

}  // namespace

QmpInput qmp_parse_value(const std::string& text)
{
    QmpInput in;
    try {
        in.value = nlohmann::ordered_json::parse(text);
        in.ok = true;
    } catch (const nlohmann::json::exception& e) {
        in.error = parse_error_message(text, e.what());
    }
    return in;
}

void QmpStreamParser::reset()
{
    buf_.clear();
    depth_ = 0;
    quote_ = 0;
    escape_ = false;
    scalar_ = false;
}

void QmpStreamParser::fail(const std::string& msg, std::vector<QmpInput>& out)
{
    QmpInput in;
    in.error = msg;
    out.push_back(std::move(in));
    reset();
}

void QmpStreamParser::finish(std::vector<QmpInput>& out)
{
    out.push_back(qmp_parse_value(buf_));
    reset();
}

void QmpStreamParser::feed(const char* data, size_t len, std::vector<QmpInput>& out)
{
    for (size_t i = 0; i < len; i++) {
        feed_byte(data[i], out);
    }
}

void QmpStreamParser::feed_byte(char c, std::vector<QmpInput>& out)
{
    if (is_stray(c, quote_ != 0)) {
        fail("JSON parse error, stray '" + stray_name(c) + "'", out);
        return;
    }
    if (buf_.size() >= kMaxValueBytes) {
        fail("JSON token size limit exceeded", out);
        return;
    }
    if (quote_) {
        if (escape_) {
            escape_ = false;
            // \' is only an escape in single-quoted strings; made plain.
            if (c == '\'') {
                buf_.back() = '\'';
                return;
            }
        } else if (c == '\\') {
            escape_ = true;
        } else if (c == quote_) {
            quote_ = 0;
            buf_ += '"';
            if (depth_ == 0) {
                finish(out);  // a top-level string
            }
            return;
        } else if (c == '"') {
            buf_ += '\\';  // a double quote inside a single-quoted string
        }
        buf_ += c;
        return;
    }
    if (scalar_ && (is_space(c) || c == '{' || c == '[' || c == '}' || c == ']' ||
                    c == '"' || c == '\'' || c == ',' || c == ':')) {
        finish(out);  // the delimiter starts the next value
    }
    if (depth_ == 0 && !scalar_) {
        if (is_space(c)) {
            return;
        }
        if (c != '{' && c != '[' && c != '"' && c != '\'') {
            buf_ += c;
            if (c == '}' || c == ']' || c == ',' || c == ':') {
                finish(out);  // a stray closing bracket or separator
            } else {
                scalar_ = true;
            }
            return;
        }
    }
    if (c == '"' || c == '\'') {
        quote_ = c;
        buf_ += '"';
        return;
    }
    buf_ += c;
    if (c == '{' || c == '[') {
        if (++depth_ > kMaxDepth) {
            fail("JSON nesting depth limit exceeded", out);
        }
    } else if ((c == '}' || c == ']') && depth_ > 0 && --depth_ == 0) {
        finish(out);
    }
}

}  // namespace qemu
