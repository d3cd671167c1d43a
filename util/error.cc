#include "qemu/error.h"

#include <cstdarg>
#include <cstdio>
#include <cstring>

namespace qemu {

std::string vstring_printf(const char* fmt, va_list ap)
{
    va_list copy;
    va_copy(copy, ap);
    int n = vsnprintf(nullptr, 0, fmt, copy);
    va_end(copy);
    std::string out(n > 0 ? size_t(n) : 0, '\0');
    if (n > 0) {
        vsnprintf(out.data(), out.size() + 1, fmt, ap);
    }
    return out;
}

std::string string_printf(const char* fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    std::string s = vstring_printf(fmt, ap);
    va_end(ap);
    return s;
}

namespace {

std::string program = "qemu-zoned";

void print_to_stderr(ReportKind kind, const std::string& message)
{
    switch (kind) {
    case ReportKind::Error:
        fprintf(stderr, "%s: %s\n", program.c_str(), message.c_str());
        break;
    case ReportKind::Warning:
        fprintf(stderr, "%s: warning: %s\n", program.c_str(), message.c_str());
        break;
    case ReportKind::Plain:
        fputs(message.c_str(), stderr);
        break;
    }
}

ReportSink sink = print_to_stderr;

void vreport(ReportKind kind, const char* fmt, va_list ap)
{
    sink(kind, vstring_printf(fmt, ap));
}

}  // namespace

void set_program_name(const char* argv0)
{
    const char* slash = strrchr(argv0, '/');
    program = slash ? slash + 1 : argv0;
}

const char* program_name()
{
    return program.c_str();
}

void set_report_sink(ReportSink new_sink)
{
    sink = new_sink ? new_sink : print_to_stderr;
}

void error_report(const char* fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(ReportKind::Error, fmt, ap);
    va_end(ap);
}

void warn_report(const char* fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(ReportKind::Warning, fmt, ap);
    va_end(ap);
}

void report_plain(const char* fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(ReportKind::Plain, fmt, ap);
    va_end(ap);
}

void report_error(const Error& err, const std::string& prefix)
{
    sink(ReportKind::Error, prefix + err.pretty());
}

int result_errno(int ret)
{
    unsigned n = ret < 0 ? 0u - unsigned(ret) : unsigned(ret);
    return int(n >= unsigned(kResultCodeBase) ? n & 0xfffu : n);
}

const char* result_strerror(int ret)
{
    return strerror(result_errno(ret));
}

void Error::set(const char* fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    message = vstring_printf(fmt, ap);
    va_end(ap);
    hints.clear();
}

void Error::set_errno(int errnum, const char* fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    message = vstring_printf(fmt, ap) + ": " + result_strerror(errnum);
    va_end(ap);
    hints.clear();
}

void Error::prepend(const std::string& context)
{
    message = context + message;
}

std::string Error::pretty() const
{
    std::string out = message;
    for (const auto& h : hints) {
        out += "\n" + h;
    }
    return out;
}

}  // namespace qemu
