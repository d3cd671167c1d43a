// What qemu-io's commands share: arguments, output formats and request
// memory, as QEMU 7.2's qemu-io has them (see commands.h).
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cinttypes>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>

#include "qemu-io/commands.h"
#include "qemu/cutils.h"
#include "qemu/units.h"

namespace qemu::qemu_io {

int parse_size_arg(const char* arg, int64_t& value, const char* shown)
{
    uint64_t v;
    int ret = qemu_strtosz(arg, v);
    if (ret == 0 && v > uint64_t(INT64_MAX)) {
        ret = -ERANGE;
    }
    if (ret == 0) {
        value = int64_t(v);
        return 0;
    }
    if (ret == -ERANGE) {
        printf("Parsing error: argument too large -- %s\n", shown ? shown : arg);
    } else {
        printf("Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- %s\n",
               shown ? shown : arg);
    }
    return ret;
}

int parse_offset_length(char** argv, int& optind, int64_t& offset, int64_t& length,
                        bool check_limit, const char* qualifier)
{
    int ret = parse_size_arg(argv[optind], offset);
    if (ret < 0) {
        return ret;
    }
    optind++;
    ret = parse_size_arg(argv[optind], length);
    if (ret < 0) {
        return ret;
    }
    if (check_limit && length > kMaxRequestBytes) {
        printf("length cannot exceed %" PRIu64 "%s, given %s\n", uint64_t(kMaxRequestBytes),
               qualifier, argv[optind]);
        return -EINVAL;
    }
    return 0;
}

int parse_pattern(const char* arg)
{
    char* end = nullptr;
    long pattern = strtol(arg, &end, 0);
    if (pattern < 0 || pattern > UCHAR_MAX || *end != '\0') {
        printf("%s is not a valid pattern byte\n", arg);
        return -1;
    }
    return int(pattern);
}

std::string human_size(double value)
{
    static const struct {
        uint64_t unit;
        const char* suffix;
    } units[] = {{EiB, " EiB"}, {PiB, " PiB"}, {TiB, " TiB"},
                 {GiB, " GiB"}, {MiB, " MiB"}, {KiB, " KiB"}};
    char buf[64];
    const char* suffix = " bytes";
    bool scaled = false;
    for (const auto& u : units) {
        if (value >= double(u.unit)) {
            snprintf(buf, sizeof(buf) - 4, "%.3f", value / double(u.unit));
            suffix = u.suffix;
            scaled = true;
            break;
        }
    }
    if (!scaled) {
        snprintf(buf, sizeof(buf) - 6, "%f", value);
    }
    std::string s = buf;
    size_t trim = s.find(".000");
    if (trim != std::string::npos) {
        s.erase(trim);
    }
    return s + suffix;
}

timespec now_monotonic()
{
    timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t;
}

timespec elapsed_since(const timespec& start)
{
    timespec t = now_monotonic();
    t.tv_sec -= start.tv_sec;
    t.tv_nsec -= start.tv_nsec;
    if (t.tv_nsec < 0) {
        t.tv_nsec += 1000000000;
        t.tv_sec--;
    }
    return t;
}

double per_second(double value, const timespec& t)
{
    return value / (double(t.tv_sec) + double(t.tv_nsec) / 1e9);
}

std::string format_elapsed(const timespec& t, bool fixed)
{
    char buf[64];
    double frac = double(t.tv_nsec) / 1e9;
    if (fixed || t.tv_sec) {
        snprintf(buf, sizeof(buf), "%u:%02u:%05.2f", unsigned(t.tv_sec / 3600),
                 unsigned(t.tv_sec % 3600 / 60), double(t.tv_sec % 60) + frac);
    } else {
        snprintf(buf, sizeof(buf), "%05.2f sec", frac);
    }
    return buf;
}

void print_report(const char* op, const timespec& t, int64_t offset, int64_t count,
                  int64_t total, int ops, bool machine)
{
    std::string ts = format_elapsed(t, machine);
    if (!machine) {
        printf("%s %" PRId64 "/%" PRId64 " bytes at offset %" PRId64 "\n", op, total, count, offset);
        printf("%s, %d ops; %s (%s/sec and %.4f ops/sec)\n", human_size(double(total)).c_str(),
               ops, ts.c_str(), human_size(per_second(double(total), t)).c_str(),
               per_second(ops, t));
    } else {
        printf("%" PRId64 ",%d,%s,%.3f,%.3f\n", total, ops, ts.c_str(),
               per_second(double(total), t), per_second(ops, t));
    }
}

void dump_buffer(const uint8_t* buf, int64_t offset, int64_t len)
{
    for (int64_t i = 0; i < len; i += 16) {
        int64_t n = std::min<int64_t>(16, len - i);
        printf("%08" PRIx64 ":  ", uint64_t(offset + i));
        for (int64_t j = 0; j < n; j++) {
            printf("%02x ", buf[i + j]);
        }
        printf(" ");
        for (int64_t j = 0; j < n; j++) {
            putchar(isalnum(buf[i + j]) ? buf[i + j] : '.');
        }
        printf("\n");
    }
}

int parse_offset_and_iovec(const QemuIoSession& s, const CommandInfo& ci, int argc, char** argv,
                           int pattern, int64_t& offset, std::unique_ptr<RequestMemory>& mem)
{
    if (optind > argc - 2) {
        return usage(ci);
    }
    if (int ret = parse_size_arg(argv[optind], offset); ret < 0) {
        return ret;
    }
    optind++;
    mem = create_iovec(s, &argv[optind], argc - optind, pattern);
    return mem ? 0 : -EINVAL;
}

std::unique_ptr<RequestMemory> create_iovec(const QemuIoSession& s, char** lens, int n,
                                            int pattern)
{
    std::vector<size_t> sizes;
    int64_t count = 0;
    for (int i = 0; i < n; i++) {
        int64_t len = 0;
        if (parse_size_arg(lens[i], len) < 0) {
            return nullptr;
        }
        if (len > kMaxRequestBytes) {
            printf("Argument '%s' exceeds maximum size %" PRIu64 "\n", lens[i],
                   uint64_t(kMaxRequestBytes));
            return nullptr;
        }
        if (count > kMaxRequestBytes - len) {
            printf("The total number of bytes exceed the maximum size %" PRIu64 "\n",
                   uint64_t(kMaxRequestBytes));
            return nullptr;
        }
        sizes.push_back(size_t(len));
        count += len;
    }
    auto mem = std::make_unique<RequestMemory>(IoBuffer(s, size_t(count), pattern), IOVector());
    uint8_t* p = mem->buf.data();
    for (size_t len : sizes) {
        mem->qiov.add(p, len);
        p += len;
    }
    return mem;
}

std::unique_ptr<IoBuffer> buffer_from_file(const QemuIoSession& s, size_t len,
                                           const char* file_name)
{
    FILE* f = fopen(file_name, "r");
    if (!f) {
        perror(file_name);
        return nullptr;
    }
    auto buf = std::make_unique<IoBuffer>(s, len, 0);
    size_t pattern_len = fread(buf->data(), 1, len, f);
    bool failed = ferror(f);
    fclose(f);
    if (failed) {
        perror(file_name);
        return nullptr;
    }
    if (pattern_len == 0) {
        fprintf(stderr, "%s: file is empty\n", file_name);
        return nullptr;
    }
    for (size_t pos = pattern_len; pos < len; pos += pattern_len) {
        memcpy(buf->data() + pos, buf->data(), std::min(pattern_len, len - pos));
    }
    return buf;
}

bool matches_pattern(const uint8_t* buf, size_t len, int pattern)
{
    for (size_t i = 0; i < len; i++) {
        if (buf[i] != uint8_t(pattern)) {
            return false;
        }
    }
    return true;
}

bool status_is_allocated(const BlockStatus& st)
{
    return st.flags & BDRV_BLOCK_ALLOCATED;
}

int usage(const CommandInfo& ci)
{
    printf("%s %s -- %s\n", ci.name, ci.args, ci.oneline);
    return -EINVAL;
}

}  // namespace qemu::qemu_io
