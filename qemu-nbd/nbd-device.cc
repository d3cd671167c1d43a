#include "nbd-device.h"

#include <linux/fs.h>
#include <linux/nbd.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <cerrno>

#include "block/nbd.h"

namespace qemu::nbd {

bool kernel_device_init(int dev_fd, int sock_fd, uint64_t size, uint16_t flags, uint32_t min_block,
                        Error& err)
{
    if (ioctl(dev_fd, NBD_SET_SOCK, (unsigned long)sock_fd) < 0) {
        err.set("Failed to set NBD socket");
        return false;
    }
    unsigned long sector_size = std::max<uint32_t>(512, min_block);
    // A tail shorter than a sector is not reachable through the device
    // (QEMU ignores it too).
    unsigned long sectors = size / sector_size;
    if (ioctl(dev_fd, NBD_SET_BLKSIZE, sector_size) < 0) {
        err.set("Failed setting NBD block size");
        return false;
    }
    if (ioctl(dev_fd, NBD_SET_SIZE_BLOCKS, sectors) < 0) {
        err.set("Failed setting size (in blocks)");
        return false;
    }
    if (ioctl(dev_fd, NBD_SET_FLAGS, (unsigned long)flags) < 0) {
        if (errno != ENOTTY) {
            err.set("Failed setting flags");
            return false;
        }
        int read_only = (flags & kFlagReadOnly) != 0;
        if (ioctl(dev_fd, BLKROSET, &read_only) < 0) {
            err.set("Failed setting read-only attribute");
            return false;
        }
    }
    return true;
}

int kernel_device_run(int dev_fd)
{
    int ret = ioctl(dev_fd, NBD_DO_IT);
    // The kernel reports a disconnect asked for with -d as EPIPE.
    int result = (ret < 0 && errno != EPIPE) ? -errno : 0;
    ioctl(dev_fd, NBD_CLEAR_QUE);
    ioctl(dev_fd, NBD_CLEAR_SOCK);
    return result;
}

void kernel_device_disconnect(int dev_fd)
{
    ioctl(dev_fd, NBD_CLEAR_QUE);
    ioctl(dev_fd, NBD_DISCONNECT);
    ioctl(dev_fd, NBD_CLEAR_SOCK);
}

}  // namespace qemu::nbd
