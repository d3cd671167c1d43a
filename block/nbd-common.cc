// What the NBD server and client share beyond constants (block/nbd.h).
#include "block/nbd.h"

#include <cerrno>
#include <cstdlib>

namespace qemu::nbd {

uint32_t errno_to_wire(int err)
{
    switch (std::abs(err)) {
    case EPERM:
    case EROFS:
        return kEperm;
    case EIO:
        return kEio;
    case ENOMEM:
        return kEnomem;
    case EDQUOT:
    case EFBIG:
    case ENOSPC:
        return kEnospc;
    case EOVERFLOW:
        return kEoverflow;
    case ENOTSUP:
        return kEnotsup;
    case ESHUTDOWN:
        return kEshutdown;
    default:
        return kEinval;
    }
}

int wire_to_errno(uint32_t err)
{
    switch (err) {
    case kEperm:
        return EPERM;
    case kEio:
        return EIO;
    case kEnomem:
        return ENOMEM;
    case kEnospc:
        return ENOSPC;
    case kEoverflow:
        return EOVERFLOW;
    case kEnotsup:
        return ENOTSUP;
    case kEshutdown:
        return ESHUTDOWN;
    default:
        return EINVAL;
    }
}

}  // namespace qemu::nbd
