// Names of the zoned API (include/block/zoned.h).
#include "block/zoned.h"

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

}  // namespace qemu
