// Error: how the block layer reports what went wrong, QEMU style.
//
// Functions that can fail for reasons worth a sentence (open, create, option
// parsing) take an `Error& err` and fill it; data-path operations return a
// negative errno instead.  A message is one line without a trailing period;
// hints are extra lines printed after it (e.g. "Is another process using the
// image [x]?").  Tools print it as "PROG: MESSAGE", or with a location prefix.
#pragma once

#include <cstdarg>
#include <string>
#include <vector>

namespace qemu {

struct Error {
    std::string message;
    std::vector<std::string> hints;

    bool is_set() const { return !message.empty(); }
    explicit operator bool() const { return is_set(); }

    // printf-style; replaces any earlier message.
    void set(const char* fmt, ...) __attribute__((format(printf, 2, 3)));
    // Like set(), followed by ": " and result_strerror(errnum) (an errno
    // of either sign or a result code).
    void set_errno(int errnum, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
    // Puts "context: " in front of the existing message.
    void prepend(const std::string& context);
    void add_hint(std::string hint) { hints.push_back(std::move(hint)); }
    void clear() { message.clear(); hints.clear(); }
    // Message and hints, each on its own line, for stderr.
    std::string pretty() const;
};

// Request results are 0 or negative: a negative errno, or a result code
// from -kResultCodeBase down, which no errno reaches (Linux errnos end at
// 4095).  A result code is a block-layer status that is not a host error
// (a zone error, include/block/zone-error.h) and carries in its low 12
// bits the errno it prints as, so that tools keep printing QEMU's messages.
constexpr int kResultCodeBase = 1 << 16;
// The errno that `ret` prints as, positive; `ret` may be an errno of
// either sign or a result code.
int result_errno(int ret);
// strerror(result_errno(ret)).
const char* result_strerror(int ret);

std::string string_printf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string vstring_printf(const char* fmt, va_list ap);

// Messages that no caller's Error can carry: a tool's own diagnostics,
// and events deep in the block layer (a qcow2 image being marked corrupt,
// qemu-img check's findings).  The block layer never writes to stderr
// itself; it reports here, and the process decides where reports go.
//
// The program name that error_report() and warn_report() put in front of
// messages ("qemu-img"); tools set it from argv[0] at startup.
void set_program_name(const char* argv0);
const char* program_name();

enum class ReportKind {
    Error,    // "PROG: MESSAGE" (QEMU's error_report)
    Warning,  // "PROG: warning: MESSAGE" (QEMU's warn_report)
    Plain,    // MESSAGE exactly as given, newline included: what QEMU prints
              // with a bare fprintf(stderr) (qemu-img check's findings)
};
// Receives every report, without the program name (and, but for Plain,
// without a newline).  The
// default sink writes the line to stderr as described above; a daemon
// installs its own (a log, monitor events).  Process-wide: set it before
// starting threads.  nullptr restores the default.
using ReportSink = void (*)(ReportKind kind, const std::string& message);
void set_report_sink(ReportSink sink);

void error_report(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void warn_report(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void report_plain(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
// "PROG: PREFIXMESSAGE" followed by the error's hint lines, one report.
void report_error(const Error& err, const std::string& prefix = "");

}  // namespace qemu
