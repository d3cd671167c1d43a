#include "tool.h"

#include <cerrno>
#include <climits>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "qemu/qemu-opts.h"
#include "qemu/cutils.h"

namespace qemu::img {

void error_exit(const char* fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    std::string message = vstring_printf(fmt, ap);
    va_end(ap);
    error_report("%s", message.c_str());
    fprintf(stderr, "Try 'qemu-img --help' for more information\n");
    exit(EXIT_FAILURE);
}

int get_option(int argc, char** argv, const char* shortopts, const option* longopts)
{
    int c = getopt_long(argc, argv, shortopts, longopts, nullptr);
    switch (c) {
    case ':':
        error_exit("missing argument for option '%s'", argv[optind - 1]);
    case '?':
        error_exit("unrecognized option '%s'", argv[optind - 1]);
    case 'h':
        help();
    default:
        return c;
    }
}

int64_t parse_size_argument(const char* name, const char* value, int64_t min, int64_t max)
{
    uint64_t size;
    int ret = qemu_strtosz(value, size);
    if (ret < 0 && ret != -ERANGE) {
        error_report("Invalid %s specified. You may use k, M, G, T, P or E suffixes for", name);
        error_report("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
        return -1;
    }
    if (ret == -ERANGE || size > uint64_t(max) || int64_t(size) < min) {
        error_report("Invalid %s specified. Must be between %lld and %lld.", name,
                     (long long)min, (long long)max);
        return -1;
    }
    return int64_t(size);
}

std::optional<uint64_t> parse_ulong_argument(const char* value, uint64_t max)
{
    char* end = nullptr;
    errno = 0;
    unsigned long v = strtoul(value, &end, 0);
    if (end == value || *end != '\0' || errno == ERANGE || v > max) {
        return std::nullopt;
    }
    return v;
}

bool parse_cache_option(const std::string& mode, int& flags, bool& writethrough)
{
    if (!bdrv_parse_cache_mode(mode, flags, writethrough)) {
        error_report("Invalid cache option: %s", mode.c_str());
        return false;
    }
    return true;
}

}  // namespace qemu::img
