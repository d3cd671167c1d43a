// The copy engine of qemu-img convert: the sources, concatenated, are copied
// to the target by several coroutines at once, the way QEMU 7.2 does it, so
// that the target ends up with the same allocation as QEMU's would.
//
// The image is cut into pieces by block status (ranges that read as zeroes
// and ranges with data, aligned to the sources' clusters) and by the buffer
// size.  Each worker coroutine takes the next piece, reads it (data only),
// and writes it: data as data, except that runs of at least `min_sparse`
// zero sectors inside it are skipped (or written as zeroes when the target
// does not read as zeroes already); zero ranges likewise; ranges left to the
// target's backing file (-B) are not written at all.  Writes happen in
// order unless `in_order` is off (-W).  Compressed targets are written one
// whole cluster at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "block/block-backend.h"
#include "convert-zoned.h"
#include "progress.h"

namespace qemu::img {

constexpr uint64_t kSectorBytes = 512;

struct ConvertSource {
    std::unique_ptr<BlockBackend> blk;
    uint64_t sectors = 0;    // size in 512-byte sectors
    uint64_t alignment = 1;  // sectors: request alignment, or the cluster size if larger
};

struct ConvertParams {
    bool compressed = false;  // -c: BDRV_REQ_WRITE_COMPRESSED, whole clusters
    // -C: data is copied as it is, without looking for zeroes in it, as
    // QEMU's copy offloading does.
    bool copy_verbatim = false;
    bool salvage = false;      // --salvage: unreadable sectors become zeroes
    bool quiet = false;
    bool in_order = true;      // false with -W
    // The target reads as zeroes already (--target-is-zero, or a new image
    // of a driver that says so): zero ranges need no writes.
    bool has_zero_init = false;
    bool target_is_new = false;
    // -B: the target has a backing file that holds what the source's own
    // backing chain holds, so only the source's top layer is copied: its
    // unallocated ranges stay unallocated in the target.
    bool target_has_backing = false;
    // The length of the target's backing file in sectors, -1 when unknown:
    // zeroes past it need no writing (they read as zeroes already).
    int64_t target_backing_sectors = -1;
    unsigned num_coroutines = 8;
    uint64_t min_sparse = 8;       // sectors; 0: write everything (-S 0)
    uint64_t buf_sectors = 4096;   // the largest piece of data
    uint64_t alignment = 8;        // sectors, a power of two: where target writes should end
    uint64_t cluster_sectors = 0;  // the target's cluster size, 0 if unknown
    uint64_t rate_limit = 0;       // bytes per second written, 0: no limit
    unsigned write_flags = 0;      // BDRV_REQ_FUA for a writethrough target
    // A zoned target: written in order, each sequential zone from its start
    // up to its fill end, zeroes included (convert-zoned.h).
    std::optional<ZonedTarget> zoned;
};

// Copies everything; returns 0 or -errno after reporting the error.
int convert_copy(std::vector<ConvertSource>& sources, BlockBackend& target,
                 const ConvertParams& params, ProgressMeter& progress);

}  // namespace qemu::img
