// The ublk protocol (Linux's userspace block driver, drivers/block/ublk_drv.c)
// as far as our export uses it, and the pure parts of the export: the
// device parameters derived from a node's BlockLimits, the conversion of
// our zone report to the kernel's struct blk_zone array, and the errno the
// kernel expects for each request result.
//
// The wire structures follow include/uapi/linux/ublk_cmd.h of Linux 6.12
// (the host's headers may be older and lack the zoned parts), written out
// here with the layout the kernel uses; static_asserts pin the sizes.
//
// Nothing here touches a device: export/ublk/ublk-export.cc does.
#pragma once

#include <linux/blkzoned.h>

#include <cstdint>
#include <string>

#include "block/block-common.h"
#include "block/zoned.h"
#include "qemu/error.h"

namespace qemu::ublk {

// Control commands (sent on /dev/ublk-control as io_uring URING_CMD with
// 128-byte SQEs), ioctl-encoded: _IOWR/_IOR('u', nr, ublksrv_ctrl_cmd).
constexpr uint32_t kCmdAddDev = 0x04;
constexpr uint32_t kCmdDelDev = 0x05;
constexpr uint32_t kCmdStartDev = 0x06;
constexpr uint32_t kCmdStopDev = 0x07;
constexpr uint32_t kCmdSetParams = 0x08;
// Per-queue commands on /dev/ublkcN (_IOWR('u', nr, ublksrv_io_cmd)).
constexpr uint32_t kIoFetchReq = 0x20;
constexpr uint32_t kIoCommitAndFetchReq = 0x21;

// The ioctl encoding of command `nr` whose argument is `size` bytes: read
// and write direction, type 'u'.
constexpr uint32_t ioctl_op(uint32_t nr, uint32_t size)
{
    return (3u << 30) | (size << 16) | (uint32_t('u') << 8) | nr;
}

// A fetch completes with this when the device is going away.
constexpr int kIoResAbort = -19;  // -ENODEV

constexpr uint32_t kMaxQueueDepth = 4096;
constexpr uint32_t kMaxQueues = 4096;

// Device flags (ADD_DEV's dev_info.flags; the kernel clears the ones it
// does not know, so the reply says what it accepted).
constexpr uint64_t kFlagUserCopy = 1ull << 7;
constexpr uint64_t kFlagZoned = 1ull << 8;

// Offsets of a request's data in /dev/ublkcN for pread/pwrite (user copy).
constexpr uint64_t kIoBufOffset = 0x80000000ull;
constexpr unsigned kIoBufBits = 25;
constexpr unsigned kTagBits = 16;
constexpr uint64_t io_buf_pos(uint16_t q_id, uint16_t tag)
{
    return kIoBufOffset + (uint64_t(q_id) << (kIoBufBits + kTagBits)) +
           (uint64_t(tag) << kIoBufBits);
}

// Requests (ublksrv_io_desc.op_flags bits 0-7) and their flags (bits 8-31).
enum IoOp : uint8_t {
    kOpRead = 0,
    kOpWrite = 1,
    kOpFlush = 2,
    kOpDiscard = 3,
    kOpWriteSame = 4,
    kOpWriteZeroes = 5,
    kOpZoneOpen = 10,
    kOpZoneClose = 11,
    kOpZoneFinish = 12,
    kOpZoneAppend = 13,
    kOpZoneResetAll = 14,
    kOpZoneReset = 15,
    kOpReportZones = 18,
};
constexpr uint32_t kIoFlagFua = 1u << 13;
constexpr uint32_t kIoFlagNoUnmap = 1u << 15;

struct CtrlCmd {
    uint32_t dev_id;
    uint16_t queue_id;  // 0xffff: not a queue command
    uint16_t len;
    uint64_t addr;
    uint64_t data[1];
    uint16_t dev_path_len;
    uint16_t pad;
    uint32_t reserved;
};
static_assert(sizeof(CtrlCmd) == 32);

struct DevInfo {
    uint16_t nr_hw_queues;
    uint16_t queue_depth;
    uint16_t state;
    uint16_t pad0;
    uint32_t max_io_buf_bytes;
    uint32_t dev_id;
    int32_t ublksrv_pid;
    uint32_t pad1;
    uint64_t flags;
    uint64_t ublksrv_flags;
    uint32_t owner_uid;
    uint32_t owner_gid;
    uint64_t reserved1;
    uint64_t reserved2;
};
static_assert(sizeof(DevInfo) == 64);

struct IoDesc {
    uint32_t op_flags;
    uint32_t nr_sectors;  // nr_zones for kOpReportZones
    uint64_t start_sector;
    uint64_t addr;
};
static_assert(sizeof(IoDesc) == 24);

struct IoCmd {
    uint16_t q_id;
    uint16_t tag;
    int32_t result;
    uint64_t addr;  // zone_append_lba when committing a zone append
};
static_assert(sizeof(IoCmd) == 16);

constexpr uint32_t kAttrReadOnly = 1u << 0;
constexpr uint32_t kAttrVolatileCache = 1u << 2;
constexpr uint32_t kAttrFua = 1u << 3;

constexpr uint32_t kParamBasic = 1u << 0;
constexpr uint32_t kParamDiscard = 1u << 1;
constexpr uint32_t kParamZoned = 1u << 3;

struct ParamBasic {
    uint32_t attrs;
    uint8_t logical_bs_shift;
    uint8_t physical_bs_shift;
    uint8_t io_opt_shift;
    uint8_t io_min_shift;
    uint32_t max_sectors;
    uint32_t chunk_sectors;
    uint64_t dev_sectors;
    uint64_t virt_boundary_mask;
};
struct ParamDiscard {
    uint32_t discard_alignment;
    uint32_t discard_granularity;
    uint32_t max_discard_sectors;
    uint32_t max_write_zeroes_sectors;
    uint16_t max_discard_segments;
    uint16_t reserved0;
};
struct ParamDevt {
    uint32_t char_major;
    uint32_t char_minor;
    uint32_t disk_major;
    uint32_t disk_minor;
};
struct ParamZoned {
    uint32_t max_open_zones;
    uint32_t max_active_zones;
    uint32_t max_zone_append_sectors;
    uint8_t reserved[20];
};
struct Params {
    uint32_t len;
    uint32_t types;
    ParamBasic basic;
    ParamDiscard discard;
    ParamDevt devt;
    ParamZoned zoned;
};
static_assert(sizeof(ParamBasic) == 32 && sizeof(ParamDiscard) == 20 && sizeof(ParamZoned) == 32);
static_assert(sizeof(Params) == 112);

// What the user asked for (--export type=ublk keys) and what the node is.
struct DeviceRequest {
    uint64_t length = 0;            // the node's size in bytes
    const BlockLimits* limits = nullptr;
    bool writable = false;
    bool writethrough = false;       // no volatile cache to flush
    uint32_t logical_block_size = 0;  // 0: derived from the node
    uint32_t max_io_bytes = 0;       // the I/O buffer per request (dev_info.max_io_buf_bytes)
};

// The SET_PARAMS parameters for a node, with Linux's rules checked (block
// sizes powers of two from 512 to 4096; for zoned nodes: host-managed,
// a power-of-two zone size in sectors, no smaller last zone, a zone
// append limit).  On a rule broken: false and err says which, in the
// words of the --export option ("ublk: ...").
bool derive_params(const DeviceRequest& req, Params& out, Error& err);

// One zone of our report as the kernel's struct blk_zone (sectors;
// conventional zones with capacity = length, as Linux requires).
struct blk_zone to_blk_zone(const BlockZoneDescriptor& d);

// The result a request commits: bytes done, or the negative errno whose
// blk_status_t (block/blk-core.c blk_errors[]) says what went wrong:
// zone resource errors -ETOOMANYREFS / -EOVERFLOW (BLK_STS_ZONE_*_RESOURCE),
// an invalid request -EINVAL (BLK_STS_INVAL), host -ENOSPC (BLK_STS_NOSPC),
// -ENOTSUP (BLK_STS_NOTSUPP), every other zone rule or host error -EIO
// (BLK_STS_IOERR, what Linux's own zoned drivers report for writes off the
// write pointer, to full, read-only or offline zones).
int errno_for_result(int ret);

}  // namespace qemu::ublk
