// Zone errors: how a zoned node says which zone rule a request broke, kept
// apart from host I/O errors all the way to the front ends.
//
// Block-layer requests return 0 or a negative int.  Host failures are
// negative errno values (-EIO, -ENOSPC from a full host disk, ...); a zone
// error is a *result code* from a range no errno can reach (see
// include/qemu/error.h): -(kResultCodeBase | kind << 12 | errno it prints
// as).  So a host -ENOSPC is never mistaken for "Zone Is Full", and tools
// that print strerror(result_errno(ret)) keep QEMU's messages.
//
//   ZoneError          prints as          NVMe status (SCT/SC)           virtio-blk status
//   InvalidRequest     EINVAL             0h/02h Invalid Field           ZONE_INVALID_CMD
//   InvalidWrite       ESPIPE             1h/BCh Zone Invalid Write      ZONE_UNALIGNED_WP
//   Boundary           ERANGE             1h/B8h Zone Boundary Error     ZONE_INVALID_CMD
//   Full               ENOSPC             1h/B9h Zone Is Full            ZONE_INVALID_CMD
//   ReadOnly           EROFS              1h/BAh Zone Is Read Only       ZONE_INVALID_CMD
//   Offline            ENXIO              1h/BBh Zone Is Offline         ZONE_INVALID_CMD
//   TooManyActive      EOVERFLOW          1h/BDh Too Many Active Zones   ZONE_ACTIVE_RESOURCE
//   TooManyOpen        ETOOMANYREFS       1h/BEh Too Many Open Zones     ZONE_OPEN_RESOURCE
//   InvalidTransition  EPERM              1h/BFh Invalid Zone State Tr.  ZONE_INVALID_CMD
//
// (ETOOMANYREFS and EOVERFLOW are what Linux uses for the two resource
// errors.)  Host errors map to NVMe generic/media statuses as QEMU's
// hw/nvme does (write fault, unrecovered read error, internal error), a
// host -ENOSPC to Capacity Exceeded (0h/81h), and to virtio-blk IOERR
// (UNSUPP for -ENOTSUP).  Zone errors carry NVMe's DNR bit: retrying them
// cannot succeed.
#pragma once

#include <cstdint>

namespace qemu {

enum class ZoneError : uint8_t {
    None = 0,
    InvalidRequest,
    InvalidWrite,  // a write not at the write pointer
    Boundary,      // a write crossing the zone capacity
    Full,
    ReadOnly,
    Offline,
    TooManyOpen,
    TooManyActive,
    InvalidTransition,
};

// The result code of a zone error (0 for None).
int zone_error_code(ZoneError e);
// The zone error a request result carries; None for success and for every
// errno (host errors), whatever its value.
ZoneError zone_error_of(int ret);
// The errno a zone error prints as (positive; 0 for None).
int zone_error_errno(ZoneError e);

// What a front end sends for a request's result.  `kind` matters only for
// host errors (a failed read is not a failed write).
enum class BlockRequestKind { Read, Write, Flush, ZoneAppend, ZoneManagement, ZoneReport, Other };

struct NvmeStatus {
    uint8_t sct = 0;  // status code type: 0 generic, 1 command specific, 2 media
    uint8_t sc = 0;   // status code
    bool dnr = false;  // do not retry
    // The status field's SCT/SC bits (and DNR, bit 14) as a completion carries them.
    uint16_t value() const { return uint16_t((dnr ? 0x4000 : 0) | sct << 8 | sc); }
};
NvmeStatus nvme_status_from_result(int ret, BlockRequestKind kind);

// VIRTIO_BLK_S_* values (virtio 1.2, 5.2.6).
enum VirtioBlkStatus : uint8_t {
    VIRTIO_BLK_S_OK = 0,
    VIRTIO_BLK_S_IOERR = 1,
    VIRTIO_BLK_S_UNSUPP = 2,
    VIRTIO_BLK_S_ZONE_INVALID_CMD = 3,
    VIRTIO_BLK_S_ZONE_UNALIGNED_WP = 4,
    VIRTIO_BLK_S_ZONE_OPEN_RESOURCE = 5,
    VIRTIO_BLK_S_ZONE_ACTIVE_RESOURCE = 6,
};
VirtioBlkStatus virtio_blk_status_from_result(int ret);

}  // namespace qemu
