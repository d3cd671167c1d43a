// qemu-io's zone commands (zone_report, zone_open/close/finish/reset,
// zone_offline, zone_readonly, zone_append), as upstream QEMU's qemu-io has
// them since 8.1.
#include <getopt.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "qemu-io/commands.h"
#include "qemu/cutils.h"
#include "qemu/units.h"

namespace qemu::qemu_io {

namespace {

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
    int64_t offset = 0;
    std::unique_ptr<RequestMemory> mem;
    if ((ret = parse_offset_and_iovec(s, zone_append_cmd, argc, argv, 0xcd, offset, mem)) < 0) {
        return ret;
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

}  // namespace

std::vector<const CommandInfo*> zone_commands()
{
    return {
        &zone_report_cmd, &zone_open_cmd, &zone_close_cmd, &zone_finish_cmd, &zone_reset_cmd,
        &zone_offline_cmd, &zone_readonly_cmd, &zone_append_cmd,
    };
}

}  // namespace qemu::qemu_io
