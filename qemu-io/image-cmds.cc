// qemu-io's image commands: flush, truncate, length, info, discard, alloc,
// map, with QEMU 7.2's options and output.
#include <getopt.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "block/qapi.h"
#include "qemu-io/commands.h"
#include "qemu/cutils.h"
#include "qemu/units.h"

namespace qemu::qemu_io {

namespace {

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
    nlohmann::ordered_json specific;
    bs->drv_get_specific_info(specific);
    if (specific.is_object()) {
        printf("Format specific information:\n");
        bdrv_image_info_specific_dump(specific.at("data"), 1);
    }
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


// --- alloc, map -----------------------------------------------------------------------

// bdrv_is_allocated(): whether [offset, offset + bytes) starts allocated,
// and for how many bytes (0 past the end of the image).
Task<int> is_allocated(BlockDriverState* bs, int64_t offset, int64_t bytes, int64_t& pnum)
{
    BlockStatus st;
    int ret = co_await bdrv_co_block_status_layer(bs, uint64_t(offset), uint64_t(bytes), st);
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

}  // namespace

std::vector<const CommandInfo*> image_commands()
{
    return {
        &flush_cmd, &truncate_cmd, &length_cmd, &info_cmd, &discard_cmd, &alloc_cmd, &map_cmd,
    };
}

}  // namespace qemu::qemu_io
