// QMP input framing: splits the byte stream of a monitor connection into
// top-level JSON values and parses each, with QEMU's JSON dialect, error
// messages, resynchronisation and limits (util/json-parser.cc: single
// quotes, "JSON parse error, stray 'x'" for a byte that aborts a value,
// 64 MiB per value, nesting depth 1024).
//
// Not thread-safe; one parser per connection.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "qemu/json-parser.h"

namespace qemu {

// One top-level value of the stream: parsed, or a parse error message.
struct QmpInput {
    bool ok = false;
    nlohmann::ordered_json value;  // when ok
    std::string error;             // when !ok: "JSON parse error, ..."
};

class QmpStreamParser {
public:
    static constexpr size_t kMaxValueBytes = 64u << 20;
    static constexpr unsigned kMaxDepth = 1024;

    QmpStreamParser();

    // Consumes len bytes; each value completed by them is appended to out,
    // in order.  Incomplete values are kept for the next call.
    void feed(const char* data, size_t len, std::vector<QmpInput>& out);

private:
    std::vector<QmpInput>* out_ = nullptr;  // set during feed()
    JsonStreamParser parser_;
};

// Parses one complete value as QmpStreamParser does (for tests and the
// fuzzer).
QmpInput qmp_parse_value(const std::string& text);

}  // namespace qemu
