// UblkRing (see ublk-ring.h).
#include "ublk-ring.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace qemu {

// One command in flight: the CQE's user_data points here (the awaiting
// coroutine's frame keeps it alive until the completion resumes it).
struct UblkRing::CmdOp {
    UblkRing& ring;
    int fd;
    uint32_t cmd_op;
    const void* payload;
    size_t len;
    int result = 0;
    std::coroutine_handle<> waiter = {};

    bool await_ready() const noexcept { return false; }
    bool await_suspend(std::coroutine_handle<> h)
    {
        waiter = h;
        return ring.submit(*this, fd, cmd_op, payload, len);
    }
    int await_resume() const noexcept { return result; }
};

std::unique_ptr<UblkRing> UblkRing::create(AioContext& ctx, unsigned entries, Error& err)
{
    std::unique_ptr<UblkRing> r(new UblkRing(ctx));
    io_uring_params p;
    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_SQE128;
    int ret = io_uring_queue_init_params(entries, &r->ring_, &p);
    if (ret < 0) {
        err.set_errno(ret, "ublk: cannot create an io_uring with 128-byte entries");
        return nullptr;
    }
    r->ring_ready_ = true;
    r->event_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (r->event_fd_ < 0) {
        err.set_errno(errno, "ublk: eventfd");
        return nullptr;
    }
    ret = io_uring_register_eventfd(&r->ring_, r->event_fd_);
    if (ret < 0) {
        err.set_errno(ret, "ublk: cannot register an eventfd with the io_uring");
        return nullptr;
    }
    r->reaper_ = r->co_reap();
    return r;
}

UblkRing::~UblkRing()
{
    if (ring_ready_) {
        io_uring_queue_exit(&ring_);
    }
    if (event_fd_ >= 0) {
        close(event_fd_);
    }
}

bool UblkRing::submit(CmdOp& op, int fd, uint32_t cmd_op, const void* payload, size_t len)
{
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (!sqe) {
        // Sized for every command the export keeps in flight: a bug.
        op.result = -EBUSY;
        return false;
    }
    memset(sqe, 0, 2 * sizeof(*sqe));  // one 128-byte entry
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->fd = fd;
    sqe->cmd_op = cmd_op;
    memcpy(sqe->cmd, payload, len);
    io_uring_sqe_set_data(sqe, &op);
    int ret = io_uring_submit(&ring_);
    if (ret < 0) {
        op.result = ret;
        return false;
    }
    return true;
}

Task<int> UblkRing::co_cmd(int fd, uint32_t cmd_op, const void* payload, size_t len)
{
    if (len > 80) {
        co_return -EINVAL;
    }
    int r = co_await CmdOp{*this, fd, cmd_op, payload, len};
    co_return r;
}

Task<void> UblkRing::co_reap()
{
    while (!closing_) {
        co_await ctx_.poll_in(event_fd_);
        uint64_t n;
        while (read(event_fd_, &n, sizeof(n)) < 0 && errno == EINTR) {
        }
        io_uring_cqe* cqe;
        while (io_uring_peek_cqe(&ring_, &cqe) == 0) {
            auto* op = static_cast<CmdOp*>(io_uring_cqe_get_data(cqe));
            op->result = cqe->res;
            io_uring_cqe_seen(&ring_, cqe);
            ctx_.schedule(op->waiter);
        }
    }
}

Task<void> UblkRing::co_close()
{
    closing_ = true;
    uint64_t one = 1;
    [[maybe_unused]] ssize_t w = write(event_fd_, &one, sizeof(one));  // cannot fail: one add
    co_await reaper_;
}

}  // namespace qemu
