// qemu-io's commands: the table, their argument parsing and their output,
// which follows QEMU 7.2's qemu-io byte for byte (test suites compare it).
#include <getopt.h>
#include <glib.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cinttypes>
#include <climits>
#include <cmath>
#include <csignal>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>

#include "qemu-io.h"
#include "qemu/cutils.h"
#include "qemu/units.h"

namespace qemu {

namespace {

// QEMU's BDRV_REQUEST_MAX_BYTES: INT_MAX rounded down to whole sectors.
constexpr int64_t kMaxRequestBytes = (INT_MAX >> BDRV_SECTOR_BITS) << BDRV_SECTOR_BITS;

// --- Numbers in arguments --------------------------------------------------

// qemu-io's cvtnum() plus its error message: parses a size argument into
// value, or prints why not and returns -EINVAL / -ERANGE.  `shown` is what
// the message quotes (QEMU's truncate quotes the wrong word; see there).
int parse_size_arg(const char* arg, int64_t& value, const char* shown = nullptr)
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

// Parses the "OFFSET LENGTH" arguments at argv[optind] (leaving optind on
// LENGTH) and, with check_limit, refuses a length beyond one request as
// QEMU does; `qualifier` completes QEMU's message (" without -n").
int parse_offset_length(char** argv, int& optind, int64_t& offset, int64_t& length,
                        bool check_limit, const char* qualifier = "")
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

// A -P argument: one byte, in any base strtol() accepts.
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

// --- Output formats --------------------------------------------------------

// QEMU qemu-io's cvtstr(): three decimals in the largest binary unit, with
// ".000" dropped ("4 KiB", "1.500 KiB", "411.772408 bytes").
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

// "00.00 sec" for short intervals, "H:MM:SS.ss" otherwise or when fixed.
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

// The statistics of a finished request; `machine` is -C's CSV form.
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

// -v: 16 bytes a line, hex then alphanumerics.
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

// --- Request memory --------------------------------------------------------

constexpr size_t kMisalignBytes = 16;

// The data of one request, aligned for O_DIRECT, or misaligned on purpose
// by 16 bytes with -m to exercise the block layer's bounce buffers.
class IoBuffer {
public:
    IoBuffer(const QemuIoSession& s, size_t len, int fill)
        : shift_(s.misalign() ? kMisalignBytes : 0),
          mem_(len + shift_, alignment_for(s.blk())),
          len_(len)
    {
        memset(mem_.data(), fill, len + shift_);
    }
    uint8_t* data() const { return mem_.data() + shift_; }
    size_t size() const { return len_; }

private:
    static size_t alignment_for(const BlockBackend* blk)
    {
        const BlockLimits& bl = blk->bs()->limits();
        return std::max<size_t>({bl.opt_mem_alignment, bl.min_mem_alignment, sizeof(void*)});
    }

    size_t shift_;
    AlignedBuffer mem_;
    size_t len_;
};

// A request's buffer and the vector describing it.
struct RequestMemory {
    IoBuffer buf;
    IOVector qiov;
};

// The "len [len..]" arguments of readv/writev/aio_*: one iovec element per
// length over a single buffer filled with `pattern`.  Prints QEMU's message
// and returns null on a bad length.
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

// write -s: the buffer holds the file's bytes, repeated to fill it.
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

// Is this block status "allocated" in QEMU's bdrv_is_allocated() sense?
// QEMU marks every range that reads as data or zeroes from this layer.
bool status_is_allocated(const BlockStatus& st)
{
    return st.flags & BDRV_BLOCK_ALLOCATED;
}

// --- The command table -----------------------------------------------------

enum CommandFlags : unsigned {
    CMD_GLOBAL = 0x1,     // runs whatever the state (help, quit)
    CMD_NOFILE_OK = 0x2,  // runs without an open image
};

struct CommandInfo {
    const char* name;
    const char* altname;  // one-letter alias, or null
    int (*func)(QemuIoSession& s, int argc, char** argv);
    int argmin;
    int argmax;  // -1: no limit
    unsigned flags;
    uint64_t perm;  // BLK_PERM_* the command needs on the image
    const char* args;
    const char* oneline;
    const char* help;  // extended help for "help CMD", or null
};

// A usage error: the command's one-line synopsis.
int usage(const CommandInfo& ci)
{
    printf("%s %s -- %s\n", ci.name, ci.args, ci.oneline);
    return -EINVAL;
}

// --- read ---------------------------------------------------------------------

int read_f(QemuIoSession& s, int argc, char** argv);

const CommandInfo read_cmd = {
    "read", "r", read_f, 2, -1, 0, 0,
    "[-abCqv] [-P pattern [-s off] [-l len]] off len",
    "reads a number of bytes at a specified offset",
    "\n"
    " reads a range of bytes from the given offset\n"
    "\n"
    " Example:\n"
    " 'read -v 512 1k' - dumps 1 kilobyte read from 512 bytes into the file\n"
    "\n"
    " Reads a segment of the currently open file, optionally dumping it to the\n"
    " standard output stream (with -v option) for subsequent inspection.\n"
    " -b, -- read from the VM state rather than the virtual disk\n"
    " -C, -- report statistics in a machine parsable format\n"
    " -l, -- length for pattern verification (only with -P)\n"
    " -p, -- ignored for backwards compatibility\n"
    " -P, -- use a pattern to verify read data\n"
    " -q, -- quiet mode, do not show I/O statistics\n"
    " -s, -- start offset for pattern verification (only with -P)\n"
    " -v, -- dump buffer to standard output\n"
    "\n",
};

int read_f(QemuIoSession& s, int argc, char** argv)
{
    bool machine = false, quiet = false, verbose = false, vmstate = false;
    bool pattern_given = false, pattern_offset_given = false, pattern_count_given = false;
    int pattern = 0;
    int64_t pattern_offset = 0, pattern_count = 0;
    int c, ret;
    while ((c = getopt(argc, argv, "bCl:pP:qs:v")) != -1) {
        switch (c) {
        case 'b':
            vmstate = true;
            break;
        case 'C':
            machine = true;
            break;
        case 'l':
            pattern_count_given = true;
            if ((ret = parse_size_arg(optarg, pattern_count)) < 0) {
                return ret;
            }
            break;
        case 'p':
            break;  // accepted for backwards compatibility
        case 'P':
            pattern_given = true;
            if ((pattern = parse_pattern(optarg)) < 0) {
                return -EINVAL;
            }
            break;
        case 'q':
            quiet = true;
            break;
        case 's':
            pattern_offset_given = true;
            if ((ret = parse_size_arg(optarg, pattern_offset)) < 0) {
                return ret;
            }
            break;
        case 'v':
            verbose = true;
            break;
        default:
            return usage(read_cmd);
        }
    }
    if (optind != argc - 2) {
        return usage(read_cmd);
    }
    int64_t offset = 0, count = 0;
    if ((ret = parse_offset_length(argv, optind, offset, count, true)) < 0) {
        return ret;
    }
    if (!pattern_given && (pattern_count_given || pattern_offset_given)) {
        return usage(read_cmd);
    }
    if (!pattern_count_given) {
        pattern_count = count - pattern_offset;
    }
    if (pattern_count < 0 || pattern_count + pattern_offset > count) {
        printf("pattern verification range exceeds end of read data\n");
        return -EINVAL;
    }
    if (vmstate) {
        if (offset % BDRV_SECTOR_SIZE) {
            printf("%" PRId64 " is not a sector-aligned value for 'offset'\n", offset);
            return -EINVAL;
        }
        if (count % BDRV_SECTOR_SIZE) {
            printf("%" PRId64 " is not a sector-aligned value for 'count'\n", count);
            return -EINVAL;
        }
    }

    IoBuffer buf(s, size_t(count), 0xab);
    IOVector qiov(buf.data(), buf.size());
    timespec start = now_monotonic();
    if (vmstate) {
        // No driver of this block layer stores VM state; QEMU answers the
        // same for raw and file nodes.
        ret = -ENOTSUP;
    } else {
        ret = run_sync(s.ctx(), s.blk()->co_preadv(uint64_t(offset), uint64_t(count), qiov));
    }
    timespec t = elapsed_since(start);
    if (ret < 0) {
        printf("read failed: %s\n", result_strerror(ret));
        return ret;
    }
    ret = 0;
    if (pattern_given && !matches_pattern(buf.data() + pattern_offset, size_t(pattern_count),
                                          pattern)) {
        printf("Pattern verification failed at offset %" PRId64 ", %" PRId64 " bytes\n",
               offset + pattern_offset, pattern_count);
        ret = -EINVAL;
    }
    if (quiet) {
        return ret;
    }
    if (verbose) {
        dump_buffer(buf.data(), offset, count);
    }
    print_report("read", t, offset, count, count, 1, machine);
    return ret;
}

// --- readv ----------------------------------------------------------------------

int readv_f(QemuIoSession& s, int argc, char** argv);

const CommandInfo readv_cmd = {
    "readv", nullptr, readv_f, 2, -1, 0, 0,
    "[-Cqv] [-P pattern] off len [len..]",
    "reads a number of bytes at a specified offset",
    "\n"
    " reads a range of bytes from the given offset into multiple buffers\n"
    "\n"
    " Example:\n"
    " 'readv -v 512 1k 1k ' - dumps 2 kilobytes read from 512 bytes into the file\n"
    "\n"
    " Reads a segment of the currently open file, optionally dumping it to the\n"
    " standard output stream (with -v option) for subsequent inspection.\n"
    " Uses multiple iovec buffers if more than one byte range is specified.\n"
    " -C, -- report statistics in a machine parsable format\n"
    " -P, -- use a pattern to verify read data\n"
    " -v, -- dump buffer to standard output\n"
    " -q, -- quiet mode, do not show I/O statistics\n"
    "\n",
};

int readv_f(QemuIoSession& s, int argc, char** argv)
{
    bool machine = false, quiet = false, verbose = false, pattern_given = false;
    int pattern = 0;
    int c, ret;
    while ((c = getopt(argc, argv, "CP:qv")) != -1) {
        switch (c) {
        case 'C':
            machine = true;
            break;
        case 'P':
            pattern_given = true;
            if ((pattern = parse_pattern(optarg)) < 0) {
                return -EINVAL;
            }
            break;
        case 'q':
            quiet = true;
            break;
        case 'v':
            verbose = true;
            break;
        default:
            return usage(readv_cmd);
        }
    }
    if (optind > argc - 2) {
        return usage(readv_cmd);
    }
    int64_t offset = 0;
    if ((ret = parse_size_arg(argv[optind], offset)) < 0) {
        return ret;
    }
    optind++;
    auto mem = create_iovec(s, &argv[optind], argc - optind, 0xab);
    if (!mem) {
        return -EINVAL;
    }
    size_t size = mem->qiov.size();
    timespec start = now_monotonic();
    ret = run_sync(s.ctx(), s.blk()->co_preadv(uint64_t(offset), size, mem->qiov));
    timespec t = elapsed_since(start);
    if (ret < 0) {
        printf("readv failed: %s\n", result_strerror(ret));
        return ret;
    }
    ret = 0;
    if (pattern_given && !matches_pattern(mem->buf.data(), size, pattern)) {
        printf("Pattern verification failed at offset %" PRId64 ", %zu bytes\n", offset, size);
        ret = -EINVAL;
    }
    if (quiet) {
        return ret;
    }
    if (verbose) {
        dump_buffer(mem->buf.data(), offset, int64_t(size));
    }
    print_report("read", t, offset, int64_t(size), int64_t(size), 1, machine);
    return ret;
}

// --- write --------------------------------------------------------------------------

int write_f(QemuIoSession& s, int argc, char** argv);

const CommandInfo write_cmd = {
    "write", "w", write_f, 2, -1, 0, BLK_PERM_WRITE,
    "[-bcCfnquz] [-P pattern | -s source_file] off len",
    "writes a number of bytes at a specified offset",
    "\n"
    " writes a range of bytes from the given offset\n"
    "\n"
    " Example:\n"
    " 'write 512 1k' - writes 1 kilobyte at 512 bytes into the open file\n"
    "\n"
    " Writes into a segment of the currently open file, using a buffer\n"
    " filled with a set pattern (0xcdcdcdcd).\n"
    " -b, -- write to the VM state rather than the virtual disk\n"
    " -c, -- write compressed data with blk_write_compressed\n"
    " -f, -- use Force Unit Access semantics\n"
    " -n, -- with -z, don't allow slow fallback\n"
    " -p, -- ignored for backwards compatibility\n"
    " -P, -- use different pattern to fill file\n"
    " -s, -- use a pattern file to fill the write buffer\n"
    " -C, -- report statistics in a machine parsable format\n"
    " -q, -- quiet mode, do not show I/O statistics\n"
    " -u, -- with -z, allow unmapping\n"
    " -z, -- write zeroes using blk_co_pwrite_zeroes\n"
    "\n",
};

int write_f(QemuIoSession& s, int argc, char** argv)
{
    bool machine = false, quiet = false, vmstate = false, compressed = false;
    bool pattern_given = false, zeroes = false, from_file = false;
    unsigned flags = 0;
    int pattern = 0xcd;
    const char* file_name = nullptr;
    int c, ret;
    while ((c = getopt(argc, argv, "bcCfnpP:qs:uz")) != -1) {
        switch (c) {
        case 'b':
            vmstate = true;
            break;
        case 'c':
            compressed = true;
            break;
        case 'C':
            machine = true;
            break;
        case 'f':
            flags |= BDRV_REQ_FUA;
            break;
        case 'n':
            flags |= BDRV_REQ_NO_FALLBACK;
            break;
        case 'p':
            break;  // accepted for backwards compatibility
        case 'P':
            pattern_given = true;
            if ((pattern = parse_pattern(optarg)) < 0) {
                return -EINVAL;
            }
            break;
        case 'q':
            quiet = true;
            break;
        case 's':
            from_file = true;
            file_name = optarg;
            break;
        case 'u':
            flags |= BDRV_REQ_MAY_UNMAP;
            break;
        case 'z':
            zeroes = true;
            break;
        default:
            return usage(write_cmd);
        }
    }
    if (optind != argc - 2) {
        return usage(write_cmd);
    }
    if (vmstate && zeroes) {
        printf("-b and -z cannot be specified at the same time\n");
        return -EINVAL;
    }
    if ((flags & BDRV_REQ_FUA) && (vmstate || compressed)) {
        printf("-f and -b or -c cannot be specified at the same time\n");
        return -EINVAL;
    }
    if ((flags & BDRV_REQ_NO_FALLBACK) && !zeroes) {
        printf("-n requires -z to be specified\n");
        return -EINVAL;
    }
    if ((flags & BDRV_REQ_MAY_UNMAP) && !zeroes) {
        printf("-u requires -z to be specified\n");
        return -EINVAL;
    }
    if (int(zeroes) + int(pattern_given) + int(from_file) > 1) {
        printf("Only one of -z, -P, and -s can be specified at the same time\n");
        return -EINVAL;
    }
    int64_t offset = 0, count = 0;
    ret = parse_offset_length(argv, optind, offset, count, !(flags & BDRV_REQ_NO_FALLBACK), " without -n");
    if (ret < 0) {
        return ret;
    }
    if (vmstate || compressed) {
        if (offset % BDRV_SECTOR_SIZE) {
            printf("%" PRId64 " is not a sector-aligned value for 'offset'\n", offset);
            return -EINVAL;
        }
        if (count % BDRV_SECTOR_SIZE) {
            printf("%" PRId64 " is not a sector-aligned value for 'count'\n", count);
            return -EINVAL;
        }
    }

    std::unique_ptr<IoBuffer> buf;
    if (!zeroes) {
        buf = from_file ? buffer_from_file(s, size_t(count), file_name)
                        : std::make_unique<IoBuffer>(s, size_t(count), pattern);
        if (!buf) {
            return -EINVAL;
        }
    }
    flags |= s.write_flags();
    timespec start = now_monotonic();
    if (vmstate) {
        // No driver of this block layer stores VM state yet; QEMU gives
        // raw and file nodes the same answer.
        ret = -ENOTSUP;
    } else if (zeroes) {
        // As in QEMU, -z wins over -c.
        ret = run_sync(s.ctx(), s.blk()->co_pwrite_zeroes(uint64_t(offset), uint64_t(count), flags));
    } else {
        if (compressed) {
            flags |= BDRV_REQ_WRITE_COMPRESSED;
        }
        IOVector qiov(buf->data(), buf->size());
        ret = run_sync(s.ctx(),
                       s.blk()->co_pwritev(uint64_t(offset), uint64_t(count), qiov, flags));
    }
    timespec t = elapsed_since(start);
    if (ret < 0) {
        printf("write failed: %s\n", result_strerror(ret));
        return ret;
    }
    if (!quiet) {
        print_report("wrote", t, offset, count, count, 1, machine);
    }
    return 0;
}

// --- writev ---------------------------------------------------------------------

int writev_f(QemuIoSession& s, int argc, char** argv);

const CommandInfo writev_cmd = {
    "writev", nullptr, writev_f, 2, -1, 0, BLK_PERM_WRITE,
    "[-Cfq] [-P pattern] off len [len..]",
    "writes a number of bytes at a specified offset",
    "\n"
    " writes a range of bytes from the given offset source from multiple buffers\n"
    "\n"
    " Example:\n"
    " 'writev 512 1k 1k' - writes 2 kilobytes at 512 bytes into the open file\n"
    "\n"
    " Writes into a segment of the currently open file, using a buffer\n"
    " filled with a set pattern (0xcdcdcdcd).\n"
    " -P, -- use different pattern to fill file\n"
    " -C, -- report statistics in a machine parsable format\n"
    " -f, -- use Force Unit Access semantics\n"
    " -q, -- quiet mode, do not show I/O statistics\n"
    "\n",
};

int writev_f(QemuIoSession& s, int argc, char** argv)
{
    bool machine = false, quiet = false;
    unsigned flags = 0;
    int pattern = 0xcd;
    int c, ret;
    while ((c = getopt(argc, argv, "CfP:q")) != -1) {
        switch (c) {
        case 'C':
            machine = true;
            break;
        case 'f':
            flags |= BDRV_REQ_FUA;
            break;
        case 'q':
            quiet = true;
            break;
        case 'P':
            if ((pattern = parse_pattern(optarg)) < 0) {
                return -EINVAL;
            }
            break;
        default:
            return usage(writev_cmd);
        }
    }
    if (optind > argc - 2) {
        return usage(writev_cmd);
    }
    int64_t offset = 0;
    if ((ret = parse_size_arg(argv[optind], offset)) < 0) {
        return ret;
    }
    optind++;
    auto mem = create_iovec(s, &argv[optind], argc - optind, pattern);
    if (!mem) {
        return -EINVAL;
    }
    size_t size = mem->qiov.size();
    flags |= s.write_flags();
    timespec start = now_monotonic();
    ret = run_sync(s.ctx(), s.blk()->co_pwritev(uint64_t(offset), size, mem->qiov, flags));
    timespec t = elapsed_since(start);
    if (ret < 0) {
        printf("writev failed: %s\n", result_strerror(ret));
        return ret;
    }
    if (!quiet) {
        print_report("wrote", t, offset, int64_t(size), int64_t(size), 1, machine);
    }
    return 0;
}

// --- aio_read / aio_write / aio_flush -----------------------------------------

// What an aio_* request prints once it completes.
struct AioReportOptions {
    bool machine = false;
    bool quiet = false;
    bool verbose = false;
    bool pattern_given = false;
    int pattern = 0;
};

Task<void> aio_read_request(QemuIoSession& s, int64_t offset, std::unique_ptr<RequestMemory> mem,
                            AioReportOptions opts)
{
    uint64_t seq = s.aio_started();
    timespec start = now_monotonic();
    size_t size = mem->qiov.size();
    int ret = co_await s.blk()->co_preadv(uint64_t(offset), size, mem->qiov);
    co_await s.report_turn(seq);
    timespec t = elapsed_since(start);
    if (ret < 0) {
        printf("readv failed: %s\n", result_strerror(ret));
    } else {
        if (opts.pattern_given && !matches_pattern(mem->buf.data(), size, opts.pattern)) {
            printf("Pattern verification failed at offset %" PRId64 ", %zu bytes\n", offset,
                   size);
        }
        if (!opts.quiet) {
            if (opts.verbose) {
                dump_buffer(mem->buf.data(), offset, int64_t(size));
            }
            print_report("read", t, offset, int64_t(size), int64_t(size), 1, opts.machine);
        }
    }
    s.aio_finished();
}

// mem is null for a zero write of `bytes`.
Task<void> aio_write_request(QemuIoSession& s, int64_t offset, uint64_t bytes,
                             std::unique_ptr<RequestMemory> mem, unsigned flags,
                             AioReportOptions opts)
{
    uint64_t seq = s.aio_started();
    timespec start = now_monotonic();
    int ret;
    if (mem) {
        ret = co_await s.blk()->co_pwritev(uint64_t(offset), bytes, mem->qiov, flags);
    } else {
        ret = co_await s.blk()->co_pwrite_zeroes(uint64_t(offset), bytes, flags);
    }
    co_await s.report_turn(seq);
    timespec t = elapsed_since(start);
    if (ret < 0) {
        printf("aio_write failed: %s\n", result_strerror(ret));
    } else if (!opts.quiet) {
        print_report("wrote", t, offset, int64_t(bytes), int64_t(bytes), 1, opts.machine);
    }
    s.aio_finished();
}

int aio_read_f(QemuIoSession& s, int argc, char** argv);

const CommandInfo aio_read_cmd = {
    "aio_read", nullptr, aio_read_f, 2, -1, 0, 0,
    "[-Ciqv] [-P pattern] off len [len..]",
    "asynchronously reads a number of bytes",
    "\n"
    " asynchronously reads a range of bytes from the given offset\n"
    "\n"
    " Example:\n"
    " 'aio_read -v 512 1k 1k ' - dumps 2 kilobytes read from 512 bytes into the file\n"
    "\n"
    " Reads a segment of the currently open file, optionally dumping it to the\n"
    " standard output stream (with -v option) for subsequent inspection.\n"
    " The read is performed asynchronously and the aio_flush command must be\n"
    " used to ensure all outstanding aio requests have been completed.\n"
    " Note that due to its asynchronous nature, this command will be\n"
    " considered successful once the request is submitted, independently\n"
    " of potential I/O errors or pattern mismatches.\n"
    " -C, -- report statistics in a machine parsable format\n"
    " -P, -- use a pattern to verify read data\n"
    " -i, -- treat request as invalid, for exercising stats\n"
    " -v, -- dump buffer to standard output\n"
    " -q, -- quiet mode, do not show I/O statistics\n"
    "\n",
};

int aio_read_f(QemuIoSession& s, int argc, char** argv)
{
    AioReportOptions opts;
    int c, ret;
    while ((c = getopt(argc, argv, "CiP:qv")) != -1) {
        switch (c) {
        case 'C':
            opts.machine = true;
            break;
        case 'P':
            opts.pattern_given = true;
            if ((opts.pattern = parse_pattern(optarg)) < 0) {
                return -EINVAL;
            }
            break;
        case 'i':
            // QEMU counts an invalid request in its I/O accounting, which
            // only a monitor can see; this block layer keeps no such
            // statistics, so the message is all there is to it.
            printf("injecting invalid read request\n");
            return 0;
        case 'q':
            opts.quiet = true;
            break;
        case 'v':
            opts.verbose = true;
            break;
        default:
            return usage(aio_read_cmd);
        }
    }
    if (optind > argc - 2) {
        return usage(aio_read_cmd);
    }
    int64_t offset = 0;
    if ((ret = parse_size_arg(argv[optind], offset)) < 0) {
        return ret;
    }
    optind++;
    auto mem = create_iovec(s, &argv[optind], argc - optind, 0xab);
    if (!mem) {
        return -EINVAL;
    }
    co_spawn(aio_read_request(s, offset, std::move(mem), opts));
    return 0;
}

int aio_write_f(QemuIoSession& s, int argc, char** argv);

const CommandInfo aio_write_cmd = {
    "aio_write", nullptr, aio_write_f, 2, -1, 0, BLK_PERM_WRITE,
    "[-Cfiquz] [-P pattern] off len [len..]",
    "asynchronously writes a number of bytes",
    "\n"
    " asynchronously writes a range of bytes from the given offset source\n"
    " from multiple buffers\n"
    "\n"
    " Example:\n"
    " 'aio_write 512 1k 1k' - writes 2 kilobytes at 512 bytes into the open file\n"
    "\n"
    " Writes into a segment of the currently open file, using a buffer\n"
    " filled with a set pattern (0xcdcdcdcd).\n"
    " The write is performed asynchronously and the aio_flush command must be\n"
    " used to ensure all outstanding aio requests have been completed.\n"
    " Note that due to its asynchronous nature, this command will be\n"
    " considered successful once the request is submitted, independently\n"
    " of potential I/O errors or pattern mismatches.\n"
    " -P, -- use different pattern to fill file\n"
    " -C, -- report statistics in a machine parsable format\n"
    " -f, -- use Force Unit Access semantics\n"
    " -i, -- treat request as invalid, for exercising stats\n"
    " -q, -- quiet mode, do not show I/O statistics\n"
    " -u, -- with -z, allow unmapping\n"
    " -z, -- write zeroes using blk_aio_pwrite_zeroes\n"
    "\n",
};

int aio_write_f(QemuIoSession& s, int argc, char** argv)
{
    AioReportOptions opts;
    unsigned flags = 0;
    bool zeroes = false;
    int pattern = 0xcd;
    int c, ret;
    while ((c = getopt(argc, argv, "CfiP:quz")) != -1) {
        switch (c) {
        case 'C':
            opts.machine = true;
            break;
        case 'f':
            flags |= BDRV_REQ_FUA;
            break;
        case 'q':
            opts.quiet = true;
            break;
        case 'u':
            flags |= BDRV_REQ_MAY_UNMAP;
            break;
        case 'P':
            // QEMU 7.2 does not reject -P together with -z: the pattern is
            // simply unused then.
            if ((pattern = parse_pattern(optarg)) < 0) {
                return -EINVAL;
            }
            break;
        case 'i':
            printf("injecting invalid write request\n");  // see aio_read -i
            return 0;
        case 'z':
            zeroes = true;
            break;
        default:
            return usage(aio_write_cmd);
        }
    }
    if (optind > argc - 2) {
        return usage(aio_write_cmd);
    }
    if (zeroes && optind != argc - 2) {
        printf("-z supports only a single length parameter\n");
        return -EINVAL;
    }
    if ((flags & BDRV_REQ_MAY_UNMAP) && !zeroes) {
        printf("-u requires -z to be specified\n");
        return -EINVAL;
    }
    int64_t offset = 0;
    if ((ret = parse_size_arg(argv[optind], offset)) < 0) {
        return ret;
    }
    optind++;
    flags |= s.write_flags();
    if (zeroes) {
        int64_t count = 0;
        if ((ret = parse_size_arg(argv[optind], count)) < 0) {
            return ret;
        }
        co_spawn(aio_write_request(s, offset, uint64_t(count), nullptr, flags, opts));
    } else {
        auto mem = create_iovec(s, &argv[optind], argc - optind, pattern);
        if (!mem) {
            return -EINVAL;
        }
        uint64_t bytes = mem->qiov.size();
        co_spawn(aio_write_request(s, offset, bytes, std::move(mem), flags, opts));
    }
    return 0;
}

int aio_flush_f(QemuIoSession& s, int, char**)
{
    s.drain();
    return 0;
}

const CommandInfo aio_flush_cmd = {
    "aio_flush", nullptr, aio_flush_f, 0, 0, 0, 0, nullptr,
    "completes all outstanding aio requests", nullptr,
};

// --- flush, truncate, length, info ----------------------------------------------

int flush_f(QemuIoSession& s, int, char**)
{
    return run_sync(s.ctx(), s.blk()->co_flush());
}

const CommandInfo flush_cmd = {
    "flush", "f", flush_f, 0, 0, 0, 0, nullptr, "flush all in-core file state to disk", nullptr,
};

int truncate_f(QemuIoSession& s, int argc, char** argv);

const CommandInfo truncate_cmd = {
    "truncate", "t", truncate_f, 1, 3, 0, BLK_PERM_WRITE | BLK_PERM_RESIZE,
    "[-m prealloc_mode] off", "truncates the current file at the given offset", nullptr,
};

int truncate_f(QemuIoSession& s, int argc, char** argv)
{
    PreallocMode prealloc = PreallocMode::Off;
    int c, ret;
    while ((c = getopt(argc, argv, "m:")) != -1) {
        switch (c) {
        case 'm':
            if (!parse_prealloc_mode(optarg, prealloc)) {
                error_report("Invalid preallocation mode '%s'", optarg);
                return -EINVAL;
            }
            break;
        default:
            return usage(truncate_cmd);
        }
    }
    if (optind >= argc) {
        return usage(truncate_cmd);
    }
    // QEMU quotes the first word in the message, even when that is -m.
    int64_t offset = 0;
    if ((ret = parse_size_arg(argv[optind], offset, argv[1])) < 0) {
        return ret;
    }
    Error err;
    ret = run_sync(s.ctx(), s.blk()->co_truncate(uint64_t(offset), false, prealloc, 0, err));
    if (ret < 0) {
        if (!err) {
            err.set_errno(-ret, "Failed to resize the image");
        }
        error_report("%s", err.pretty().c_str());
        return ret;
    }
    return 0;
}

int length_f(QemuIoSession& s, int, char**)
{
    printf("%s\n", human_size(double(s.blk()->getlength())).c_str());
    return 0;
}

const CommandInfo length_cmd = {
    "length", "l", length_f, 0, 0, 0, 0, nullptr, "gets the length of the current file", nullptr,
};

int info_f(QemuIoSession& s, int, char**)
{
    BlockDriverState* bs = s.blk()->bs();
    std::string name(bs->drv().name());
    // QEMU prints the format name, then again the protocol name, which
    // protocol drivers have as well.
    printf("format name: %s\n", name.c_str());
    if (bs->drv().is_protocol()) {
        printf("format name: %s\n", name.c_str());
    }
    BlockDriverInfo bdi;
    int ret = bs->drv_get_info(bdi);
    if (ret) {
        return ret;
    }
    printf("cluster size: %s\n", human_size(bdi.cluster_size).c_str());
    printf("vm state offset: %s\n", human_size(double(bdi.vm_state_offset)).c_str());
    return 0;
}

const CommandInfo info_cmd = {
    "info", "i", info_f, 0, 0, 0, 0, nullptr, "prints information about the current file", nullptr,
};

// --- discard -----------------------------------------------------------------------

int discard_f(QemuIoSession& s, int argc, char** argv);

const CommandInfo discard_cmd = {
    "discard", "d", discard_f, 2, -1, 0, BLK_PERM_WRITE,
    "[-Cq] off len",
    "discards a number of bytes at a specified offset",
    "\n"
    " discards a range of bytes from the given offset\n"
    "\n"
    " Example:\n"
    " 'discard 512 1k' - discards 1 kilobyte from 512 bytes into the file\n"
    "\n"
    " Discards a segment of the currently open file.\n"
    " -C, -- report statistics in a machine parsable format\n"
    " -q, -- quiet mode, do not show I/O statistics\n"
    "\n",
};

int discard_f(QemuIoSession& s, int argc, char** argv)
{
    bool machine = false, quiet = false;
    int c, ret;
    while ((c = getopt(argc, argv, "Cq")) != -1) {
        switch (c) {
        case 'C':
            machine = true;
            break;
        case 'q':
            quiet = true;
            break;
        default:
            return usage(discard_cmd);
        }
    }
    if (optind != argc - 2) {
        return usage(discard_cmd);
    }
    int64_t offset = 0, bytes = 0;
    if ((ret = parse_offset_length(argv, optind, offset, bytes, true)) < 0) {
        return ret;
    }
    timespec start = now_monotonic();
    ret = run_sync(s.ctx(), s.blk()->co_pdiscard(uint64_t(offset), uint64_t(bytes)));
    timespec t = elapsed_since(start);
    if (ret < 0) {
        printf("discard failed: %s\n", result_strerror(ret));
        return ret;
    }
    if (!quiet) {
        print_report("discard", t, offset, bytes, bytes, 1, machine);
    }
    return 0;
}

// --- zone_report, zone management, zone_append ------------------------------------

// Upstream QEMU's qemu-io has these since 8.1 (QEMU 7.2 does not): byte
// offsets and lengths in, 512-byte sectors out.  zone_report and the zone
// management commands take no options: argv[1] and argv[2] are parsed as
// numbers whatever they look like.

uint64_t to_sectors(uint64_t bytes)
{
    return bytes >> BDRV_SECTOR_BITS;
}

int zone_report_f(QemuIoSession& s, int, char** argv)
{
    int64_t offset = 0, requested = 0;
    int ret;
    if ((ret = parse_size_arg(argv[1], offset)) < 0) {
        return ret;
    }
    if ((ret = parse_size_arg(argv[2], requested)) < 0) {
        return ret;
    }
    if (requested > int64_t(UINT32_MAX)) {
        printf("Number of zones must be less than 2^32\n");
        return -ERANGE;
    }
    // No report can hold more zones than the device has, so a huge count
    // costs no memory.
    uint32_t nr_zones = std::min(uint32_t(requested), s.blk()->bs()->limits().nr_zones);
    std::vector<BlockZoneDescriptor> zones(nr_zones);
    ret = run_sync(s.ctx(), s.blk()->co_zone_report(uint64_t(offset), nr_zones, zones.data()));
    if (ret < 0) {
        printf("zone report failed: %s\n", result_strerror(ret));
        return ret;
    }
    for (uint32_t i = 0; i < nr_zones; i++) {
        const BlockZoneDescriptor& z = zones[i];
        printf("start: 0x%" PRIx64 ", len 0x%" PRIx64 ", cap 0x%" PRIx64 ", wptr 0x%" PRIx64
               ", zcond:%u, [type: %u]\n",
               to_sectors(z.start), to_sectors(z.length), to_sectors(z.capacity),
               to_sectors(z.wp), unsigned(z.state), unsigned(z.type));
    }
    return 0;
}

const CommandInfo zone_report_cmd = {
    "zone_report", "zrp", zone_report_f, 2, 2, 0, 0,
    "offset number", "report zone information", nullptr,
};

// zone_open and its siblings: `what` names the operation in the error
// message ("zone open failed: ...").
int zone_mgmt_command(QemuIoSession& s, char** argv, BlockZoneOp op, const char* what)
{
    int64_t offset = 0, len = 0;
    int ret;
    if ((ret = parse_size_arg(argv[1], offset)) < 0) {
        return ret;
    }
    if ((ret = parse_size_arg(argv[2], len)) < 0) {
        return ret;
    }
    ret = run_sync(s.ctx(), s.blk()->co_zone_mgmt(op, uint64_t(offset), uint64_t(len)));
    if (ret < 0) {
        printf("zone %s failed: %s\n", what, result_strerror(ret));
        return ret;
    }
    return 0;
}

int zone_open_f(QemuIoSession& s, int, char** argv)
{
    return zone_mgmt_command(s, argv, BlockZoneOp::Open, "open");
}

int zone_close_f(QemuIoSession& s, int, char** argv)
{
    return zone_mgmt_command(s, argv, BlockZoneOp::Close, "close");
}

int zone_finish_f(QemuIoSession& s, int, char** argv)
{
    return zone_mgmt_command(s, argv, BlockZoneOp::Finish, "finish");
}

int zone_reset_f(QemuIoSession& s, int, char** argv)
{
    return zone_mgmt_command(s, argv, BlockZoneOp::Reset, "reset");
}

int zone_offline_f(QemuIoSession& s, int, char** argv)
{
    return zone_mgmt_command(s, argv, BlockZoneOp::SetOffline, "offline");
}

int zone_readonly_f(QemuIoSession& s, int, char** argv)
{
    return zone_mgmt_command(s, argv, BlockZoneOp::SetReadOnly, "readonly");
}

const CommandInfo zone_open_cmd = {
    "zone_open", "zo", zone_open_f, 2, 2, 0, BLK_PERM_WRITE,
    "offset len", "explicit open a range of zones in zone block device", nullptr,
};

const CommandInfo zone_close_cmd = {
    "zone_close", "zc", zone_close_f, 2, 2, 0, BLK_PERM_WRITE,
    "offset len", "close a range of zones in zone block device", nullptr,
};

const CommandInfo zone_finish_cmd = {
    "zone_finish", "zf", zone_finish_f, 2, 2, 0, BLK_PERM_WRITE,
    "offset len", "finish a range of zones in zone block device", nullptr,
};

const CommandInfo zone_reset_cmd = {
    "zone_reset", "zrs", zone_reset_f, 2, 2, 0, BLK_PERM_WRITE,
    "offset len", "reset a zone write pointer in zone block device", nullptr,
};

// Not in QEMU: fault injection for testing what users of a zoned device do
// when its zones fail.
const CommandInfo zone_offline_cmd = {
    "zone_offline", "zoff", zone_offline_f, 2, 2, 0, BLK_PERM_WRITE,
    "offset len", "take a range of zones offline (fault injection)",
    "\n"
    " takes the zones in the given range offline, as a failing zoned drive does\n"
    "\n"
    " Example:\n"
    " 'zone_offline 64M 64M' - takes the zone at 64 MiB offline (64 MiB zones)\n"
    "\n"
    " Not a QEMU command: it injects a fault for testing.  An offline zone\n"
    " can be neither read nor written; zone operations on it fail, and zone\n"
    " reports show zcond:15 with the write pointer at the zone start.  The\n"
    " condition is stored in the image and survives closing it; nothing\n"
    " brings the zone back.  offset must be a zone start and len a multiple of\n"
    " the zone size (or reach the end of the device).\n"
    "\n",
};

const CommandInfo zone_readonly_cmd = {
    "zone_readonly", "zro", zone_readonly_f, 2, 2, 0, BLK_PERM_WRITE,
    "offset len", "make a range of zones read-only (fault injection)",
    "\n"
    " makes the zones in the given range read-only, as a failing zoned drive does\n"
    "\n"
    " Example:\n"
    " 'zone_readonly 0 64M' - makes the first zone read-only (64 MiB zones)\n"
    "\n"
    " Not a QEMU command: it injects a fault for testing.  A read-only zone\n"
    " keeps its data readable, but writes, appends and zone operations on it\n"
    " fail; zone reports show zcond:13.  The condition is stored in the image\n"
    " and survives closing it; only zone_offline changes it further.  offset\n"
    " must be a zone start and len a multiple of the zone size (or reach the\n"
    " end of the device).\n"
    "\n",
};

int zone_append_f(QemuIoSession& s, int argc, char** argv);

// As in QEMU, -p counts as one of the at most four arguments, so a single
// buffer needs -p ("zap -p 0 4k") and "zap 0 4k" is an argument count error.
const CommandInfo zone_append_cmd = {
    "zone_append", "zap", zone_append_f, 3, 4, 0, BLK_PERM_WRITE,
    "offset len [len..]", "append write a number of bytes at a specified offset", nullptr,
};

int zone_append_f(QemuIoSession& s, int argc, char** argv)
{
    bool print_sector = false;
    int c, ret;
    while ((c = getopt(argc, argv, "p")) != -1) {
        switch (c) {
        case 'p':
            print_sector = true;
            break;
        default:
            return usage(zone_append_cmd);
        }
    }
    if (optind > argc - 2) {
        return usage(zone_append_cmd);
    }
    int64_t offset = 0;
    if ((ret = parse_size_arg(argv[optind], offset)) < 0) {
        return ret;
    }
    optind++;
    auto mem = create_iovec(s, &argv[optind], argc - optind, 0xcd);
    if (!mem) {
        return -EINVAL;
    }
    uint64_t where = uint64_t(offset);
    ret = run_sync(s.ctx(), s.blk()->co_zone_append(where, mem->qiov, s.write_flags()));
    if (ret < 0) {
        printf("zone append failed: %s\n", result_strerror(ret));
        return ret;
    }
    if (print_sector) {
        printf("After zap done, the append sector is 0x%" PRIx64 "\n", to_sectors(where));
    }
    return 0;
}

// --- alloc, map -----------------------------------------------------------------------

// bdrv_is_allocated(): whether [offset, offset + bytes) starts allocated,
// and for how many bytes (0 past the end of the image).
Task<int> is_allocated(BlockDriverState* bs, int64_t offset, int64_t bytes, int64_t& pnum)
{
    BlockStatus st;
    int ret = co_await bdrv_co_block_status_above(bs, uint64_t(offset), uint64_t(bytes), st);
    if (ret < 0) {
        co_return ret;
    }
    pnum = int64_t(st.pnum);
    co_return status_is_allocated(st) ? 1 : 0;
}

Task<int> alloc_co(BlockDriverState* bs, int64_t offset, int64_t count)
{
    int64_t start = offset, remaining = count, allocated = 0;
    while (remaining) {
        int64_t num = 0;
        int ret = co_await is_allocated(bs, offset, remaining, num);
        if (ret < 0) {
            printf("is_allocated failed: %s\n", result_strerror(ret));
            co_return ret;
        }
        offset += num;
        remaining -= num;
        if (ret) {
            allocated += num;
        }
        if (num == 0) {
            // The image ended: count only what exists.
            count -= remaining;
            remaining = 0;
        }
    }
    printf("%" PRId64 "/%" PRId64 " bytes allocated at offset %s\n", allocated, count,
           human_size(double(start)).c_str());
    co_return 0;
}

int alloc_f(QemuIoSession& s, int argc, char** argv)
{
    int64_t offset = 0, count = BDRV_SECTOR_SIZE;
    int ret;
    if ((ret = parse_size_arg(argv[1], offset)) < 0) {
        return ret;
    }
    if (argc == 3 && (ret = parse_size_arg(argv[2], count)) < 0) {
        return ret;
    }
    return run_sync(s.ctx(), alloc_co(s.blk()->bs(), offset, count));
}

const CommandInfo alloc_cmd = {
    "alloc", "a", alloc_f, 1, 2, 0, 0, "offset [count]",
    "checks if offset is allocated in the file", nullptr,
};

// The extent of one allocation state starting at offset, merging runs the
// block layer reports piecewise (QEMU's map_is_allocated()).
Task<int> allocation_run(BlockDriverState* bs, int64_t offset, int64_t bytes, int64_t& pnum)
{
    int64_t num = 0;
    int first = co_await is_allocated(bs, offset, bytes, num);
    if (first < 0) {
        co_return first;
    }
    pnum = num;
    while (bytes > 0) {
        offset += num;
        bytes -= num;
        int ret = co_await is_allocated(bs, offset, bytes, num);
        if (ret != first || num == 0) {
            break;
        }
        pnum += num;
    }
    co_return first;
}

Task<int> map_co(BlockDriverState* bs, int64_t bytes)
{
    int64_t offset = 0;
    while (bytes) {
        int64_t num = 0;
        int ret = co_await allocation_run(bs, offset, bytes, num);
        if (ret < 0) {
            error_report("Failed to get allocation status: %s", result_strerror(ret));
            co_return ret;
        }
        if (num == 0) {
            error_report("Unexpected end of image");
            co_return -EIO;
        }
        printf("%s (0x%" PRIx64 ") bytes %s at offset %s (0x%" PRIx64 ")\n",
               human_size(double(num)).c_str(), uint64_t(num),
               ret ? "    allocated" : "not allocated", human_size(double(offset)).c_str(),
               uint64_t(offset));
        offset += num;
        bytes -= num;
    }
    co_return 0;
}

int map_f(QemuIoSession& s, int, char**)
{
    return run_sync(s.ctx(), map_co(s.blk()->bs(), int64_t(s.blk()->getlength())));
}

const CommandInfo map_cmd = {
    "map", nullptr, map_f, 0, 0, 0, 0, "", "prints the allocated areas of a file", nullptr,
};

// --- abort, sigraise, sleep -------------------------------------------------------------

int abort_f(QemuIoSession&, int, char**)
{
    abort();
}

const CommandInfo abort_cmd = {
    "abort", nullptr, abort_f, 0, 0, CMD_NOFILE_OK, 0, nullptr,
    "simulate a program crash using abort(3)", nullptr,
};

int sigraise_f(QemuIoSession&, int, char** argv)
{
    int64_t sig = 0;
    int ret;
    if ((ret = parse_size_arg(argv[1], sig)) < 0) {
        return ret;
    }
    if (sig > NSIG) {
        printf("signal argument '%s' is too large to be a valid signal\n", argv[1]);
        return -EINVAL;
    }
    // The signal may end the process before stdio would flush.
    fflush(stdout);
    fflush(stderr);
    raise(int(sig));
    return 0;
}

const CommandInfo sigraise_cmd = {
    "sigraise", nullptr, sigraise_f, 1, 1, CMD_NOFILE_OK, 0, "signal", "raises a signal",
    "\n"
    " raises the given signal\n"
    "\n"
    " Example:\n"
    " 'sigraise 15' - raises SIGTERM\n"
    "\n"
    " Invokes raise(signal), where \"signal\" is the mandatory integer argument\n"
    " given to sigraise.\n"
    "\n",
};

Task<void> sleep_co(AioContext& ctx, int64_t ns)
{
    co_await ctx.sleep_ns(ns);
}

int sleep_f(QemuIoSession& s, int, char** argv)
{
    char* end = nullptr;
    long ms = strtol(argv[1], &end, 0);
    if (ms < 0 || *end != '\0') {
        printf("%s is not a valid number\n", argv[1]);
        return -EINVAL;
    }
    // The event loop keeps running meanwhile: aio_* requests report.
    run_sync(s.ctx(), sleep_co(s.ctx(), int64_t(ms) * 1000000));
    return 0;
}

const CommandInfo sleep_cmd = {
    "sleep", nullptr, sleep_f, 1, 1, CMD_NOFILE_OK, 0, nullptr,
    "waits for the given value in milliseconds", nullptr,
};

// --- open, close, quit ------------------------------------------------------------------

// An option string of open -o or --image-opts, added to dict.
bool parse_option_string(const char* text, QDict& dict)
{
    if (!*text) {
        return true;
    }
    Error err;
    if (!keyval_parse(dict, text, nullptr, err)) {
        error_report("%s", err.pretty().c_str());
        return false;
    }
    return true;
}

int open_f(QemuIoSession& s, int argc, char** argv);

const CommandInfo open_cmd = {
    "open", "o", open_f, 1, -1, CMD_NOFILE_OK, 0,
    "[-rsCnkU] [-t cache] [-d discard] [-o options] [path]",
    "open the file specified by path",
    "\n"
    " opens a new file in the requested mode\n"
    "\n"
    " Example:\n"
    " 'open -n -o driver=raw /tmp/data' - opens raw data file read-write, uncached\n"
    "\n"
    " Opens a file for subsequent use by all of the other qemu-io commands.\n"
    " -r, -- open file read-only\n"
    " -s, -- use snapshot file\n"
    " -C, -- use copy-on-read\n"
    " -n, -- disable host cache, short for -t none\n"
    " -U, -- force shared permissions\n"
    " -k, -- use kernel AIO implementation (Linux only, prefer use of -i)\n"
    " -i, -- use AIO mode (threads, native or io_uring)\n"
    " -t, -- use the given cache mode for the image\n"
    " -d, -- use the given discard mode for the image\n"
    " -o, -- options to be given to the block driver\n",
};

int open_f(QemuIoSession& s, int argc, char** argv)
{
    ImageOpenMode mode;
    bool read_only = false;
    QDict opts;
    int c;
    while ((c = getopt(argc, argv, "snCro:ki:t:d:U")) != -1) {
        switch (c) {
        case 's':
            error_report("snapshot mode (-s) is not supported");
            return -EINVAL;
        case 'n':
            mode.flags |= BDRV_O_NOCACHE;
            mode.writethrough = false;
            break;
        case 'C':
            error_report("copy-on-read (-C) is not supported");
            return -EINVAL;
        case 'r':
            read_only = true;
            break;
        case 'k':
            mode.aio = "native";
            break;
        case 't':
            if (!bdrv_parse_cache_mode(optarg, mode.flags, mode.writethrough)) {
                error_report("Invalid cache option: %s", optarg);
                return -EINVAL;
            }
            break;
        case 'd':
            if (!bdrv_parse_discard_flags(optarg, mode.flags)) {
                error_report("Invalid discard option: %s", optarg);
                return -EINVAL;
            }
            break;
        case 'i':
            if (!bdrv_parse_aio(optarg, mode.aio)) {
                error_report("Invalid aio option: %s", optarg);
                return -EINVAL;
            }
            break;
        case 'o':
            if (s.image_opts()) {
                printf("--image-opts and 'open -o' are mutually exclusive\n");
                return -EINVAL;
            }
            if (!parse_option_string(optarg, opts)) {
                return -EINVAL;
            }
            break;
        case 'U':
            mode.force_share = true;
            break;
        default:
            return usage(open_cmd);
        }
    }
    if (!read_only) {
        mode.flags |= BDRV_O_RDWR;
    }
    if (s.image_opts() && optind == argc - 1) {
        if (!parse_option_string(argv[optind], opts)) {
            return -EINVAL;
        }
        optind++;
    }
    bool ok;
    if (optind == argc - 1) {
        std::string filename = argv[optind];
        ok = s.open(&filename, std::move(opts), mode);
    } else if (optind == argc) {
        ok = s.open(nullptr, std::move(opts), mode);
    } else {
        return usage(open_cmd);
    }
    return ok ? 0 : -EINVAL;
}

int close_f(QemuIoSession& s, int, char**)
{
    s.close();
    return 0;
}

const CommandInfo close_cmd = {
    "close", "c", close_f, 0, 0, 0, 0, nullptr, "close the current open file", nullptr,
};

int quit_f(QemuIoSession& s, int, char**)
{
    s.request_quit();
    return 0;
}

const CommandInfo quit_cmd = {
    "quit", "q", quit_f, -1, -1, CMD_GLOBAL, 0, nullptr, "exit the program", nullptr,
};

// --- help ------------------------------------------------------------------------------------

int help_f(QemuIoSession& s, int argc, char** argv);

const CommandInfo help_cmd = {
    "help", "?", help_f, 0, 1, CMD_GLOBAL, 0, "[command]", "help for one or all commands", nullptr,
};

// Sorted by name, as help lists them.
const std::vector<const CommandInfo*>& command_table()
{
    static const std::vector<const CommandInfo*> table = [] {
        std::vector<const CommandInfo*> t = {
            &abort_cmd, &aio_flush_cmd, &aio_read_cmd, &aio_write_cmd, &alloc_cmd,
            &close_cmd, &discard_cmd, &flush_cmd, &help_cmd, &info_cmd,
            &length_cmd, &map_cmd, &open_cmd, &quit_cmd, &read_cmd,
            &readv_cmd, &sigraise_cmd, &sleep_cmd, &truncate_cmd, &write_cmd,
            &writev_cmd, &zone_append_cmd, &zone_close_cmd, &zone_finish_cmd,
            &zone_offline_cmd, &zone_open_cmd, &zone_readonly_cmd, &zone_report_cmd,
            &zone_reset_cmd,
        };
        std::sort(t.begin(), t.end(), [](const CommandInfo* a, const CommandInfo* b) {
            return strcmp(a->name, b->name) < 0;
        });
        return t;
    }();
    return table;
}

const CommandInfo* find_command(const char* name)
{
    for (const CommandInfo* ci : command_table()) {
        if (strcmp(ci->name, name) == 0 || (ci->altname && strcmp(ci->altname, name) == 0)) {
            return ci;
        }
    }
    return nullptr;
}

void help_oneline(const char* name, const CommandInfo& ci)
{
    printf("%s ", name);
    if (ci.args) {
        printf("%s ", ci.args);
    }
    printf("-- %s\n", ci.oneline);
}

int help_f(QemuIoSession&, int argc, char** argv)
{
    if (argc < 2) {
        for (const CommandInfo* ci : command_table()) {
            help_oneline(ci->name, *ci);
        }
        printf("\nUse 'help commandname' for extended help.\n");
        return 0;
    }
    const CommandInfo* ci = find_command(argv[1]);
    if (!ci) {
        printf("command %s not found\n", argv[1]);
        return -EINVAL;
    }
    help_oneline(argv[1], *ci);
    if (ci->help) {
        fputs(ci->help, stdout);
    }
    return 0;
}

// Words of a command line: separated by single spaces, empty ones dropped
// (no quoting, like QEMU).
std::vector<std::string> split_words(const std::string& line)
{
    std::vector<std::string> words;
    size_t pos = 0;
    while (pos <= line.size()) {
        size_t sp = line.find(' ', pos);
        if (sp == std::string::npos) {
            sp = line.size();
        }
        if (sp > pos) {
            words.push_back(line.substr(pos, sp - pos));
        }
        pos = sp + 1;
    }
    return words;
}

}  // namespace

// --- The session ----------------------------------------------------------------------------

QemuIoSession::QemuIoSession(AioContext& ctx, bool image_opts, bool misalign)
    : ctx_(ctx), image_opts_(image_opts), misalign_(misalign)
{
}

QemuIoSession::~QemuIoSession()
{
    close();
}

namespace {

// Where the file driver's aio= option goes: at the top for a protocol node,
// under "file." when a format sits on top (as when probing).
std::string aio_option_key(const std::string* filename, const QDict& options)
{
    const std::string* driver = options.get("driver");
    QDict from_json;
    if (!driver && filename && starts_with(*filename, "json:")) {
        Error ignored;  // a broken json: name fails properly at open
        if (json_parse_flat(from_json, filename->substr(5), ignored)) {
            driver = from_json.get("driver");
        }
    }
    const BlockDriver* drv = driver ? bdrv_find_driver(*driver) : nullptr;
    return drv && drv->is_protocol() ? "aio" : "file.aio";
}

}  // namespace

bool QemuIoSession::open(const std::string* filename, QDict options, const ImageOpenMode& mode)
{
    if (blk_) {
        error_report("file open already, try 'help close'");
        return false;
    }
    if (mode.force_share) {
        const std::string* fs = options.get("force-share");
        if (fs && *fs != "on") {
            error_report("-U conflicts with image options");
            return false;
        }
        options.set("force-share", "on");
    }
    if (!mode.aio.empty()) {
        options.set(aio_option_key(filename, options), mode.aio);
    }
    Error err;
    blk_ = BlockBackend::open(filename ? std::optional<std::string>(*filename) : std::nullopt, std::move(options), mode.flags,
                              ctx_, err);
    if (!blk_) {
        if (filename) {
            error_report("can't open device %s: %s", filename->c_str(), err.pretty().c_str());
        } else {
            error_report("can't open: %s", err.pretty().c_str());
        }
        return false;
    }
    writethrough_ = mode.writethrough;
    return true;
}

void QemuIoSession::close()
{
    drain();
    blk_.reset();
}

void QemuIoSession::drain()
{
    while (aio_pending_ > 0) {
        ctx_.poll(true);
    }
}

void QemuIoSession::ReportTurn::await_suspend(std::coroutine_handle<> h)
{
    s_.report_queue_.emplace_back(seq_, h);
    if (s_.report_queue_.size() == s_.aio_pending_ && !s_.report_scheduled_) {
        s_.report_scheduled_ = true;
        co_spawn(s_.report_completed());
    }
}

namespace {
// co_await NextIteration{ctx}: continue from the event loop's next iteration,
// like a QEMU bottom half.
struct NextIteration {
    AioContext& ctx;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) { ctx.schedule(h); }
    void await_resume() const noexcept {}
};
}  // namespace

Task<void> QemuIoSession::report_completed()
{
    co_await NextIteration{ctx_};
    report_scheduled_ = false;
    auto batch = std::move(report_queue_);
    report_queue_.clear();
    std::sort(batch.begin(), batch.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    for (auto& entry : batch) {
        entry.second.resume();
    }
}

int QemuIoSession::run_command(const std::string& line)
{
    std::vector<std::string> words = split_words(line);
    if (words.empty()) {
        return 0;
    }
    const CommandInfo* ci = find_command(words[0].c_str());
    if (!ci) {
        fprintf(stderr, "command \"%s\" not found\n", words[0].c_str());
        return -EINVAL;
    }
    if (!(ci->flags & CMD_GLOBAL) && !(ci->flags & CMD_NOFILE_OK) && !blk_) {
        fprintf(stderr, "no file open, try 'help open'\n");
        return -EINVAL;
    }
    int nargs = int(words.size()) - 1;
    if (nargs < ci->argmin || (ci->argmax != -1 && nargs > ci->argmax)) {
        if (ci->argmax == -1) {
            fprintf(stderr, "bad argument count %d to %s, expected at least %d arguments\n",
                    nargs, words[0].c_str(), ci->argmin);
        } else if (ci->argmin == ci->argmax) {
            fprintf(stderr, "bad argument count %d to %s, expected %d arguments\n", nargs,
                    words[0].c_str(), ci->argmin);
        } else {
            fprintf(stderr, "bad argument count %d to %s, expected between %d and %d arguments\n",
                    nargs, words[0].c_str(), ci->argmin, ci->argmax);
        }
        return -EINVAL;
    }
    // Like QEMU, take the permissions a command needs when it first runs,
    // and keep them: after truncate, qemu-io holds the resize permission.
    if (blk_ && (ci->perm & ~blk_->perm())) {
        Error err;
        int ret = blk_->set_perm(blk_->perm() | ci->perm, blk_->shared_perm(), err);
        if (ret < 0) {
            error_report("%s", err.pretty().c_str());
            return ret;
        }
    }
    std::vector<char*> argv;
    for (std::string& w : words) {
        argv.push_back(w.data());
    }
    argv.push_back(nullptr);
    optind = 0;  // glibc: restart getopt() from scratch for this argv
    return ci->func(*this, int(words.size()), argv.data());
}

}  // namespace qemu
