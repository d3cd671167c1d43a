// The NBD client's transmission phase, request side (see nbd-client.h):
// cookies, slots, sending under a lock, waiting for the reader's verdict.
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "nbd-client-request.h"
#include "qemu/bswap.h"
#include "qemu/sockets.h"

namespace qemu::nbd {

// Suspends a request's coroutine until the reader completes it.
struct ClientConnection::DoneOp {
    Request& req;
    bool await_ready() const noexcept { return req.done; }
    void await_suspend(std::coroutine_handle<> h) noexcept { req.waiter = h; }
    void await_resume() const noexcept {}
};

ClientConnection::ClientConnection(AioContext& ctx, int fd, const ExportInfo& info)
    : ctx_(&ctx), fd_(fd), info_(info)
{
}

ClientConnection::~ClientConnection()
{
    ::close(fd_);
}

void ClientConnection::complete(Request& req)
{
    in_flight_.erase(req.cookie);
    req.done = true;
    if (req.waiter) {
        ctx_->schedule(req.waiter);
    }
    slot_waiters_.next();
}

void ClientConnection::fail_all()
{
    if (!dead_) {
        dead_ = true;
        // Wakes the reader (it sees end-of-stream) and any blocked sender.
        shutdown(fd_, SHUT_RDWR);
    }
    while (!in_flight_.empty()) {
        Request& req = *in_flight_.begin()->second;
        req.ret = -EIO;
        complete(req);
    }
    slot_waiters_.restart_all();
}

Task<int> ClientConnection::send_request(Request& req, uint16_t flags, IOVector* payload)
{
    uint8_t hdr[kExtendedRequestSize];
    size_t hdr_len;
    if (info_.extended) {
        if (payload) {
            flags |= kCmdFlagPayloadLen;
        }
        store_be32(hdr, kExtendedRequestMagic);
        store_be64(hdr + 24, req.len);
        hdr_len = kExtendedRequestSize;
    } else {
        store_be32(hdr, kRequestMagic);
        store_be32(hdr + 24, uint32_t(req.len));
        hdr_len = kRequestSize;
    }
    store_be16(hdr + 4, flags);
    store_be16(hdr + 6, req.type);
    store_be64(hdr + 8, req.cookie);
    store_be64(hdr + 16, req.offset);
    IOVector out(hdr, hdr_len);
    if (payload) {
        out.add_slice(*payload, req.qiov_offset, req.len);
    }
    auto guard = co_await send_lock_.scoped_lock();
    if (dead_) {
        co_return -EIO;
    }
    co_return co_await co_send_full(*ctx_, fd_, out.data(), out.count());
}

Task<int> ClientConnection::submit(Request& req, uint16_t flags, IOVector* payload)
{
    while (!dead_ && in_flight_.size() >= kMaxInFlight) {
        co_await slot_waiters_.wait();
    }
    if (dead_) {
        co_return -EIO;
    }
    req.cookie = next_cookie_++;
    in_flight_[req.cookie] = &req;
    if (!reader_running_) {
        reader_running_ = true;
        co_spawn(reader());
    }
    int r = co_await send_request(req, flags, payload);
    if (r < 0 && !req.done) {
        fail_all();
    }
    co_await DoneOp{req};
    co_return req.ret;
}

Task<int> ClientConnection::read(uint64_t offset, uint64_t len, IOVector& qiov,
                                 size_t qiov_offset)
{
    Request req(kCmdRead, offset, len);
    req.qiov = &qiov;
    req.qiov_offset = qiov_offset;
    co_return co_await submit(req, 0, nullptr);
}

Task<int> ClientConnection::write(uint64_t offset, uint64_t len, IOVector& qiov,
                                  size_t qiov_offset, uint16_t flags)
{
    Request req(kCmdWrite, offset, len);
    req.qiov_offset = qiov_offset;
    co_return co_await submit(req, flags, &qiov);
}

Task<int> ClientConnection::command(Command type, uint16_t flags, uint64_t offset, uint64_t len)
{
    Request req(type, offset, len);
    co_return co_await submit(req, flags, nullptr);
}

Task<int> ClientConnection::block_status(uint64_t offset, uint64_t len, uint64_t& ext_len,
                                         uint32_t& ext_flags)
{
    Request req(kCmdBlockStatus, offset, len);
    int r = co_await submit(req, kCmdFlagReqOne, nullptr);
    if (r == 0) {
        ext_len = req.ext_len;
        ext_flags = req.ext_flags;
    }
    co_return r;
}

Task<void> ClientConnection::close()
{
    if (!dead_) {
        // Nothing is in flight once the node is closed; DISC has no reply.
        Request disc(kCmdDisc, 0, 0);
        disc.cookie = next_cookie_++;
        int r = co_await send_request(disc, 0, nullptr);
        (void)r;  // the server may be gone already: nothing to do about it
        fail_all();
    }
    if (reader_running_) {
        struct ExitOp {
            ClientConnection& c;
            bool await_ready() const noexcept { return !c.reader_running_; }
            void await_suspend(std::coroutine_handle<> h) noexcept { c.reader_exit_waiter_ = h; }
            void await_resume() const noexcept {}
        };
        co_await ExitOp{*this};
    }
}

}  // namespace qemu::nbd
