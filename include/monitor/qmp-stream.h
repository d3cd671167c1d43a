// QMP input framing: splits the byte stream of a monitor connection into
// top-level JSON values and parses each, as QEMU's json-streamer and
// json-parser do for a QMP monitor.
//
// QEMU's extensions are accepted: single-quoted strings ('...', with \'
// inside) are read as ordinary strings.  A control character outside a
// string (0x1b, say) or a byte 0xFF aborts the value being read ("JSON
// parse error, stray '\u001B'"), which is how clients reset the parser.
// Limits are QEMU's: 64 MiB of text per value, nesting depth 1024.
//
// Parsing itself is nlohmann-json's; its failures are reported with the
// nearest of QEMU's messages ("JSON parse error, expecting value",
// "... missing : in object pair", "... key is not a string in object",
// "... invalid keyword 'x'").
//
// Not thread-safe; one parser per connection.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace qemu {

// One top-level value of the stream: parsed, or a parse error message.
struct QmpInput {
    bool ok = false;
    nlohmann::ordered_json value;  // when ok
    std::string error;     // when !ok: "JSON parse error, ..."
};

class QmpStreamParser {
public:
    static constexpr size_t kMaxValueBytes = 64u << 20;
    static constexpr unsigned kMaxDepth = 1024;

    // Consumes len bytes; each value completed by them is appended to out,
    // in order.  Incomplete values are kept for the next call.
    void feed(const char* data, size_t len, std::vector<QmpInput>& out);

private:
    void feed_byte(char c, std::vector<QmpInput>& out);
    void finish(std::vector<QmpInput>& out);
    void fail(const std::string& msg, std::vector<QmpInput>& out);
    void reset();

    std::string buf_;      // the value so far, single quotes made double
    unsigned depth_ = 0;   // open { and [
    char quote_ = 0;       // inside a string: its quote character
    bool escape_ = false;  // after a backslash inside a string
    bool scalar_ = false;  // a top-level scalar (1, true) is being read
};

// Parses one complete value as QmpStreamParser does (for tests and the
// fuzzer).
QmpInput qmp_parse_value(const std::string& text);

}  // namespace qemu
