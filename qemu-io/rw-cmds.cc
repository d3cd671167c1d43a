// qemu-io's data commands: read, readv, write, writev, aio_read, aio_write,
// aio_flush, with QEMU 7.2's options and output.
#include <getopt.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "qemu-io/commands.h"
#include "qemu/cutils.h"
#include "qemu/units.h"

namespace qemu::qemu_io {

namespace {

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
    int64_t offset = 0;
    std::unique_ptr<RequestMemory> mem;
    if ((ret = parse_offset_and_iovec(s, readv_cmd, argc, argv, 0xab, offset, mem)) < 0) {
        return ret;
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
    int64_t offset = 0;
    std::unique_ptr<RequestMemory> mem;
    if ((ret = parse_offset_and_iovec(s, writev_cmd, argc, argv, pattern, offset, mem)) < 0) {
        return ret;
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
    int64_t offset = 0;
    std::unique_ptr<RequestMemory> mem;
    if ((ret = parse_offset_and_iovec(s, aio_read_cmd, argc, argv, 0xab, offset, mem)) < 0) {
        return ret;
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

}  // namespace

std::vector<const CommandInfo*> read_write_commands()
{
    return {
        &read_cmd, &readv_cmd, &write_cmd, &writev_cmd, &aio_read_cmd, &aio_write_cmd,
        &aio_flush_cmd,
    };
}

}  // namespace qemu::qemu_io
