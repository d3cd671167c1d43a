// UblkRing: an io_uring with 128-byte SQEs for ublk's URING_CMD commands,
// driven by an AioContext.
//
// ublk takes its commands only as io_uring passthrough commands with 128-
// byte SQEs (IORING_SETUP_SQE128), which the AioContext's own ring does not
// have.  So each ublk export has this ring of its own: commands are
// submitted at once, their completions signal an eventfd registered with
// the ring, and a coroutine in the AioContext waits on that eventfd
// (AioContext::poll_in) and resumes the commands' coroutines.
//
// ublk requires every command of a queue to come from one thread: the
// ring belongs to the thread of its AioContext, like the context itself.
#pragma once

#include <liburing.h>

#include <cstddef>
#include <cstdint>
#include <memory>

#include "qemu/aio.h"
#include "qemu/error.h"

namespace qemu {

class UblkRing {
public:
    // A ring of `entries` SQEs (the most commands in flight at once);
    // nullptr and err set when the kernel refuses it.  From ctx's thread.
    static std::unique_ptr<UblkRing> create(AioContext& ctx, unsigned entries, Error& err);
    // REQUIRES: co_close() has returned.
    ~UblkRing();
    UblkRing(const UblkRing&) = delete;
    UblkRing& operator=(const UblkRing&) = delete;

    // Sends IORING_OP_URING_CMD `cmd_op` to fd with `len` bytes (at most
    // 80) of command payload, copied at once; returns the command's result
    // (the CQE's res: 0 or a negative errno for ublk).
    Task<int> co_cmd(int fd, uint32_t cmd_op, const void* payload, size_t len);

    // Stops the completion coroutine.  REQUIRES: no co_cmd() pending.
    Task<void> co_close();

private:
    struct CmdOp;
    UblkRing(AioContext& ctx) : ctx_(ctx) {}
    bool submit(CmdOp& op, int fd, uint32_t cmd_op, const void* payload, size_t len);
    Task<void> co_reap();

    AioContext& ctx_;
    io_uring ring_{};
    bool ring_ready_ = false;
    int event_fd_ = -1;
    bool closing_ = false;
    Task<void> reaper_;
};

}  // namespace qemu
