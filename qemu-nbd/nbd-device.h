// Linux's NBD client (nbd.ko) driven through its ioctls, as QEMU's
// nbd_init(), nbd_client() and nbd_disconnect() in nbd/client.c: qemu-nbd
// -c hands a negotiated socket to /dev/nbdX, -d detaches a device.
#pragma once

#include <cstdint>

#include "qemu/error.h"

namespace qemu::nbd {

// Gives the kernel device open as dev_fd the socket sock_fd, which is in
// the transmission phase of an export of `size` bytes with transmission
// `flags` (simple replies only): block size max(512, min_block) and the
// size in blocks, then the flags (BLKROSET when the kernel has no
// NBD_SET_FLAGS).  false with err set (QEMU's messages) on failure.
bool kernel_device_init(int dev_fd, int sock_fd, uint64_t size, uint16_t flags, uint32_t min_block,
                        Error& err);

// Serves the device until it is disconnected (NBD_DO_IT blocks the calling
// thread), then clears its queue and socket.  Returns 0 or -errno.
int kernel_device_run(int dev_fd);

// -d: asks the kernel to disconnect the device (NBD_CLEAR_QUE,
// NBD_DISCONNECT, NBD_CLEAR_SOCK).
void kernel_device_disconnect(int dev_fd);

}  // namespace qemu::nbd
