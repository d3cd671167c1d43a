// Zoned block devices: the types of the block layer's zoned API.
//
// A zoned node (BlockLimits::zoned != None) is split into zones of
// zone_size bytes (the last may be smaller); the first conventional zones
// accept writes anywhere, the others must be written sequentially at their
// write pointer (host-managed) or should be (host-aware).  The node exposes
// zone report, zone management and zone append through BlockDriverState's
// drv_zone_* methods and the bdrv_co_zone_* functions in block_int.h.
//
// Zone errors are result codes of their own, apart from host errnos
// (include/block/zone-error.h), with the mapping to NVMe and virtio-blk
// statuses.
#pragma once

#include <cstdint>

#include "block/zone-error.h"

namespace qemu {

// Numbers as in QEMU's BlockZoneType / the virtio and NVMe zone types.
enum class BlockZoneType : uint8_t {
    Conventional = 1,
    SequentialWriteRequired = 2,
    SequentialWritePreferred = 3,
};

// Numbers as in QEMU's BlockZoneState (the ZBC/ZNS condition codes).
enum class BlockZoneState : uint8_t {
    NotWritePointer = 0x0,  // conventional zone
    Empty = 0x1,
    ImplicitlyOpen = 0x2,
    ExplicitlyOpen = 0x3,
    Closed = 0x4,
    ReadOnly = 0xd,
    Full = 0xe,
    Offline = 0xf,
};

const char* zone_state_name(BlockZoneState state);

// One zone as reported: all values in bytes.  For full, read-only and
// offline zones the write pointer is not meaningful (reported as
// start + capacity, start + capacity, and start respectively).
struct BlockZoneDescriptor {
    uint64_t start = 0;
    uint64_t length = 0;
    uint64_t capacity = 0;
    uint64_t wp = 0;
    BlockZoneType type = BlockZoneType::SequentialWriteRequired;
    BlockZoneState state = BlockZoneState::Empty;
    bool desc_ext_valid = false;  // NVMe's ZDEV: the zone has descriptor extension data
};

// Zone management operations.  SetReadOnly and SetOffline are fault
// injection (NVMe's Offline action, and what a failing drive does by
// itself); they persist like a real drive's zone conditions.
enum class BlockZoneOp {
    Open,
    Close,
    Finish,
    Reset,
    SetReadOnly,
    SetOffline,
};

const char* zone_op_name(BlockZoneOp op);

}  // namespace qemu
