// Zoned block devices under the host_device driver (Linux): the geometry
// from sysfs and the zone ioctls, zone report and management through
// BLKREPORTZONE and BLK{OPEN,CLOSE,FINISH,RESET}ZONE, and zone append
// emulated with a cached write pointer per zone, as QEMU's file-posix does
// (Linux has no zone append for user space).
//
// Threading: a HostZones belongs to one PosixFileState and is used from its
// AioContext's thread only; blocking ioctls run through the caller's
// BlockingRunner (a thread pool), never in that thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "block/block-common.h"
#include "block/zoned.h"
#include "qemu/coroutine-lock.h"
#include "qemu/coroutine.h"
#include "qemu/error.h"

struct blk_zone;

namespace qemu {

// The zoned attributes of a block queue directory (/sys/dev/block/M:m/queue).
struct SysfsZoned {
    BlockZoneModel model = BlockZoneModel::None;
    uint64_t zone_size = 0;  // bytes (chunk_sectors)
    uint32_t nr_zones = 0;
    uint32_t max_open_zones = 0;    // 0: no limit
    uint32_t max_active_zones = 0;  // 0: no limit
    uint64_t max_append_bytes = 0;  // 0: unknown
    uint32_t physical_block_size = 0;
    uint32_t logical_block_size = 0;
};

// Reads `queue_dir`'s zoned, chunk_sectors, nr_zones, max_open_zones,
// max_active_zones, zone_append_max_bytes, physical_block_size and
// logical_block_size.  A missing or "none" `zoned` file is a device that
// is not zoned (0, model None).  A zoned device must have a non-zero
// chunk_sectors and nr_zones: otherwise -errno with err set, as QEMU.
// The optional limits are left 0 when absent.
int read_sysfs_zoned(const std::string& queue_dir, SysfsZoned& out, Error& err);

// Converts a zone from BLKREPORTZONE (sectors) into bytes and QEMU's
// types; `has_capacity`: the report carried BLK_ZONE_REP_CAPACITY (else
// the capacity is the length).  -ENOTSUP for a type or condition QEMU does
// not know (with QEMU's error_report).
int zone_from_blk_zone(const blk_zone& z, bool has_capacity, BlockZoneDescriptor& out);

// Runs a blocking function off the event loop thread; returns its result.
using BlockingRunner = std::function<Task<int>(std::function<int()>)>;

// Runs in the node's AioContext.  Bound to none: blocking work goes through
// `run` (the node's current context's thread pool), and the zone locks are
// held only inside requests, which a drained node has none of -- so the
// node moves between AioContexts (bdrv_co_change_aio_context) with nothing
// to rebind, and the cached write pointers stay valid across the move.
//
// Errors: the driver's own zone-rule checks (misaligned or out-of-range
// zone management, appends to a conventional zone, past the last zone or
// misaligned) return zone error result codes (block/zone-error.h) that
// print as QEMU 10.0's errnos, so qemu-io's output is QEMU's; a zone
// operation aimed at a conventional zone is -EIO, as QEMU (no zone error
// prints as EIO).  Failures of the kernel's ioctls and writes are host
// errors: -errno.
class HostZones {
public:
    // `fd` stays owned by the caller and must outlive this object.
    HostZones(int fd, const SysfsZoned& geometry, BlockingRunner run);

    // Reads every zone's write pointer (and the zone capacity) from the
    // device; call once before use.  -errno with err set on failure.
    int load(Error& err);
    // Fills the zoned members of bl.
    void apply_limits(BlockLimits& bl) const;

    Task<int> report(uint64_t offset, uint32_t& nr_zones, BlockZoneDescriptor* zones);
    // `device_bytes`: the device size (a last, smaller zone ends there).
    Task<int> mgmt(BlockZoneOp op, uint64_t offset, uint64_t len, uint64_t device_bytes);

    // A write (or append, at the zone's cached write pointer) of `bytes`:
    // holds the locks of the sequential zones it touches until it is done,
    // so that writes to one zone reach the device in the order they were
    // issued and appends never race, calls `io` with the device offset, and
    // then advances the cached write pointer, or re-reads it from the
    // device when the write failed.  For an append, `offset` is the zone
    // start on entry and where the data went on success.
    using WriteFn = std::function<Task<int>(uint64_t offset)>;
    Task<int> write(uint64_t offset, uint64_t bytes, const WriteFn& io);
    Task<int> append(uint64_t& offset, uint64_t bytes, const WriteFn& io);
    // QEMU's checks of an append: `offset` a zone start (with QEMU's
    // message), every segment a multiple of the write granularity.
    int check_append(uint64_t offset, const std::vector<size_t>& segment_lengths) const;

private:
    struct Wp {
        uint64_t wp = 0;
        bool conventional = false;
    };
    // Reads the write pointers of nr zones from the one holding offset;
    // `reset`: take the zone starts (after a reset of the whole device).
    int read_wps(uint64_t offset, uint32_t nr, bool reset, std::vector<Wp>& out,
                 uint64_t& capacity) const;
    Task<int> reload_wps(uint64_t offset, uint32_t nr, bool reset);
    uint32_t write_granularity() const;
    Task<void> refresh_wps(uint64_t offset, uint32_t nr);

    const int fd_;
    const SysfsZoned geo_;
    BlockingRunner run_;
    uint64_t zone_capacity_ = 0;
    std::vector<Wp> wps_;
    std::unique_ptr<CoMutex[]> locks_;  // one per zone
};

}  // namespace qemu
