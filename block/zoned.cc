// Names and errno mapping of the zoned API (include/block/zoned.h).
#include "block/zoned.h"

#include <cerrno>

namespace qemu {

const char* zone_state_name(BlockZoneState state)
{
    switch (state) {
    case BlockZoneState::NotWritePointer: return "not write pointer";
    case BlockZoneState::Empty: return "empty";
    case BlockZoneState::ImplicitlyOpen: return "implicitly open";
    case BlockZoneState::ExplicitlyOpen: return "explicitly open";
    case BlockZoneState::Closed: return "closed";
    case BlockZoneState::ReadOnly: return "read-only";
    case BlockZoneState::Full: return "full";
    case BlockZoneState::Offline: return "offline";
    }
    return "unknown";
}

const char* zone_op_name(BlockZoneOp op)
{
    switch (op) {
    case BlockZoneOp::Open: return "open";
    case BlockZoneOp::Close: return "close";
    case BlockZoneOp::Finish: return "finish";
    case BlockZoneOp::Reset: return "reset";
    case BlockZoneOp::SetReadOnly: return "read-only";
    case BlockZoneOp::SetOffline: return "offline";
    }
    return "unknown";
}

int zone_error_to_errno(ZoneError e)
{
    switch (e) {
    case ZoneError::None: return 0;
    case ZoneError::InvalidRequest: return -EINVAL;
    case ZoneError::UnalignedWrite: return -ESPIPE;  // "Illegal seek"
    case ZoneError::BoundaryCrossed: return -ERANGE;
    case ZoneError::ZoneFull: return -ENOSPC;
    case ZoneError::ZoneReadOnly: return -EROFS;
    case ZoneError::ZoneOffline: return -ENXIO;
    case ZoneError::TooManyOpen: return -ETOOMANYREFS;
    case ZoneError::TooManyActive: return -EOVERFLOW;
    case ZoneError::InvalidTransition: return -EPERM;
    }
    return -EIO;
}

ZoneError zone_error_from_errno(int err)
{
    switch (err) {
    case -EINVAL: return ZoneError::InvalidRequest;
    case -ESPIPE: return ZoneError::UnalignedWrite;
    case -ERANGE: return ZoneError::BoundaryCrossed;
    case -ENOSPC: return ZoneError::ZoneFull;
    case -EROFS: return ZoneError::ZoneReadOnly;
    case -ENXIO: return ZoneError::ZoneOffline;
    case -ETOOMANYREFS: return ZoneError::TooManyOpen;
    case -EOVERFLOW: return ZoneError::TooManyActive;
    case -EPERM: return ZoneError::InvalidTransition;
    default: return ZoneError::None;
    }
}

const char* zone_error_name(ZoneError e)
{
    switch (e) {
    case ZoneError::None: return "no error";
    case ZoneError::InvalidRequest: return "invalid zone request";
    case ZoneError::UnalignedWrite: return "write not at the write pointer";
    case ZoneError::BoundaryCrossed: return "zone boundary crossed";
    case ZoneError::ZoneFull: return "zone is full";
    case ZoneError::ZoneReadOnly: return "zone is read-only";
    case ZoneError::ZoneOffline: return "zone is offline";
    case ZoneError::TooManyOpen: return "too many open zones";
    case ZoneError::TooManyActive: return "too many active zones";
    case ZoneError::InvalidTransition: return "invalid zone state transition";
    }
    return "unknown zone error";
}

}  // namespace qemu
