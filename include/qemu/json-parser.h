// QEMU's JSON dialect, parsed as QEMU parses it: RFC 8259 plus
// single-quoted strings ('..', where \' is an escape too), with QEMU's
// error messages ("JSON parse error, premature EOI", "... expecting
// value", "... stray 'x'", "Expecting at most one JSON value") and its
// limits (64 MiB of tokens, 2 Mi tokens, nesting depth 1024 per value).
// json: pseudo-filenames and QMP input use it; values come out as
// nlohmann::ordered_json (integers as int64, or uint64 above INT64_MAX, else
// double; \u0000 as the modified-UTF-8 bytes C0 80, as QEMU stores it).
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "qemu/error.h"

namespace qemu {

// Splits a byte stream into top-level JSON values as QEMU's QMP monitor
// does: a value ends when its braces and brackets balance (a scalar at
// top level is a value by itself); a lexical error or a limit reached
// ends the current value with an error, and lexing resumes at the next
// structural or control character (a client can resynchronise by
// sending 0xFF or a newline).
class JsonStreamParser {
public:
    // Called once per value: with the value, or with nullopt and the error.
    using Emit = std::function<void(std::optional<nlohmann::ordered_json> value, const Error& err)>;
    explicit JsonStreamParser(Emit emit);
    ~JsonStreamParser();
    JsonStreamParser(const JsonStreamParser&) = delete;
    JsonStreamParser& operator=(const JsonStreamParser&) = delete;

    void feed(std::string_view bytes);
    // End of input: finishes (or fails) a value in progress.
    void flush();

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// One JSON value from text, as QEMU's qobject_from_json(): nullopt and err
// set on error, on more than one value ("Expecting at most one JSON
// value") and on none ("Expecting a JSON value").
std::optional<nlohmann::ordered_json> json_parse_qemu(std::string_view text, Error& err);

}  // namespace qemu
