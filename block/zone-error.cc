// Zone error result codes and their front-end statuses (include/block/zone-error.h).
#include "block/zone-error.h"

#include <cerrno>

#include "qemu/error.h"

namespace qemu {

namespace {

constexpr unsigned kKindShift = 12;
constexpr unsigned kErrnoMask = (1u << kKindShift) - 1;
constexpr uint8_t kLastKind = uint8_t(ZoneError::InvalidTransition);
static_assert(kLastKind < (kResultCodeBase >> kKindShift), "kinds must fit below the base bit");

// NVMe status codes (NVMe base 2.0 and ZNS 1.1; QEMU include/block/nvme.h).
constexpr uint8_t kSctGeneric = 0x0;
constexpr uint8_t kSctCommandSpecific = 0x1;
constexpr uint8_t kSctMedia = 0x2;
constexpr uint8_t kScInvalidField = 0x02;
constexpr uint8_t kScInternalError = 0x06;
constexpr uint8_t kScAbortRequested = 0x07;
constexpr uint8_t kScCapacityExceeded = 0x81;
constexpr uint8_t kScWriteFault = 0x80;        // media
constexpr uint8_t kScUnrecoveredRead = 0x81;   // media
constexpr uint8_t kScInvalidOpcode = 0x01;

}  // namespace

int zone_error_errno(ZoneError e)
{
    switch (e) {
    case ZoneError::None: return 0;
    case ZoneError::InvalidRequest: return EINVAL;
    case ZoneError::InvalidWrite: return ESPIPE;  // "Illegal seek"
    case ZoneError::Boundary: return ERANGE;
    case ZoneError::Full: return ENOSPC;
    case ZoneError::ReadOnly: return EROFS;
    case ZoneError::Offline: return ENXIO;
    case ZoneError::TooManyOpen: return ETOOMANYREFS;
    case ZoneError::TooManyActive: return EOVERFLOW;
    case ZoneError::InvalidTransition: return EPERM;
    }
    return EIO;
}

int zone_error_code(ZoneError e)
{
    if (e == ZoneError::None) {
        return 0;
    }
    return -int(unsigned(kResultCodeBase) | unsigned(e) << kKindShift | unsigned(zone_error_errno(e)));
}

ZoneError zone_error_of(int ret)
{
    if (ret >= 0 || unsigned(-ret) < unsigned(kResultCodeBase)) {
        return ZoneError::None;
    }
    unsigned code = unsigned(-ret);
    unsigned kind = (code & ~unsigned(kResultCodeBase)) >> kKindShift;
    if (kind == 0 || kind > kLastKind) {
        return ZoneError::None;
    }
    ZoneError e = ZoneError(kind);
    return (code & kErrnoMask) == unsigned(zone_error_errno(e)) ? e : ZoneError::None;
}

NvmeStatus nvme_status_from_result(int ret, BlockRequestKind kind)
{
    if (ret >= 0) {
        return {};
    }
    switch (zone_error_of(ret)) {
    case ZoneError::None: break;
    case ZoneError::InvalidRequest: return {kSctGeneric, kScInvalidField, true};
    case ZoneError::InvalidWrite: return {kSctCommandSpecific, 0xbc, true};
    case ZoneError::Boundary: return {kSctCommandSpecific, 0xb8, true};
    case ZoneError::Full: return {kSctCommandSpecific, 0xb9, true};
    case ZoneError::ReadOnly: return {kSctCommandSpecific, 0xba, true};
    case ZoneError::Offline: return {kSctCommandSpecific, 0xbb, true};
    case ZoneError::TooManyActive: return {kSctCommandSpecific, 0xbd, true};
    case ZoneError::TooManyOpen: return {kSctCommandSpecific, 0xbe, true};
    case ZoneError::InvalidTransition: return {kSctCommandSpecific, 0xbf, true};
    }
    // A host error: as QEMU's hw/nvme (nvme_aio_err), except that a full
    // host disk is the namespace's capacity being exceeded.
    switch (ret) {
    case -ENOSPC: return {kSctGeneric, kScCapacityExceeded, true};
    case -ECANCELED: return {kSctGeneric, kScAbortRequested, false};
    case -ENOTSUP: return {kSctGeneric, kScInvalidOpcode, true};
    default: break;
    }
    switch (kind) {
    case BlockRequestKind::Read: return {kSctMedia, kScUnrecoveredRead, false};
    case BlockRequestKind::Write:
    case BlockRequestKind::Flush:
    case BlockRequestKind::ZoneAppend: return {kSctMedia, kScWriteFault, false};
    default: return {kSctGeneric, kScInternalError, false};
    }
}

VirtioBlkStatus virtio_blk_status_from_result(int ret)
{
    if (ret >= 0) {
        return VIRTIO_BLK_S_OK;
    }
    switch (zone_error_of(ret)) {
    case ZoneError::None: return ret == -ENOTSUP ? VIRTIO_BLK_S_UNSUPP : VIRTIO_BLK_S_IOERR;
    case ZoneError::InvalidWrite: return VIRTIO_BLK_S_ZONE_UNALIGNED_WP;
    case ZoneError::TooManyOpen: return VIRTIO_BLK_S_ZONE_OPEN_RESOURCE;
    case ZoneError::TooManyActive: return VIRTIO_BLK_S_ZONE_ACTIVE_RESOURCE;
    case ZoneError::InvalidRequest:
    case ZoneError::Boundary:
    case ZoneError::Full:
    case ZoneError::ReadOnly:
    case ZoneError::Offline:
    case ZoneError::InvalidTransition: return VIRTIO_BLK_S_ZONE_INVALID_CMD;
    }
    return VIRTIO_BLK_S_IOERR;
}

}  // namespace qemu
