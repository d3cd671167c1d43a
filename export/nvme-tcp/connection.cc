// One NVMe/TCP host connection (export/nvme-tcp/nvme-tcp-internal.h): the
// ICReq/ICResp exchange, the receive loop that validates every PDU before
// using a byte of it, commands with in-capsule or R2T-fetched data, and
// C2HData/CapsuleResp completions.  As Linux nvmet (drivers/nvme/target/
// tcp.c) and SPDK (lib/nvmf/tcp.c), a malformed PDU ends the connection
// with a C2HTermReq naming the offending field; errors of a single command
// (a bad SGL, a data digest mismatch) complete only that command.
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "nvme-tcp-internal.h"
#include "qemu/crc32c.h"

namespace qemu {

using namespace nvme_tcp;

namespace {

constexpr size_t kRecvBufferSize = 64 * 1024;
// Room for one PDU header (with digest and padding) and a data digest.
constexpr size_t kSlot = kMaxHeaderSize + kDigestSize;

}  // namespace

struct NvmeTcpConnection::Command {
    NvmeRequest req;
    std::vector<uint8_t> buf;     // the command's data (in-capsule or fetched)
    uint64_t fetch_index = 0;     // 1-based position in the SQ, for SQHD
    uint16_t status = 0;          // a transport error: complete without executing
    // R2T state, touched by the receive loop while co_fetch_h2c() waits.
    uint16_t ttag = 0;
    uint32_t received = 0;
    bool data_done = false;
    bool data_failed = false;
    CoQueue data_ready;
};

NvmeTcpConnection::NvmeTcpConnection(NvmeTarget& target, const NvmePortInfo& port, int fd)
    : ctx_(target.ctx()), target_(target), port_(port), fd_(fd), rbuf_(kRecvBufferSize)
{
}

NvmeTcpConnection::~NvmeTcpConnection()
{
    close(fd_);
}

void NvmeTcpConnection::disconnect()
{
    if (!closing_) {
        closing_ = true;
        shutdown(fd_, SHUT_RDWR);
    }
}

namespace {

// One recv() of whatever has arrived, up to the buffer's size, waiting for
// the first byte.  Returns the count, 0 at end of stream, or -errno.
Task<ssize_t> co_recv_some(AioContext& ctx, int fd, uint8_t* buf, size_t len)
{
    for (;;) {
        ssize_t ret = ::recv(fd, buf, len, MSG_DONTWAIT);
        if (ret < 0) {
            ret = -errno;
        }
        if (ret == -EAGAIN || ret == -EWOULDBLOCK) {
            ret = co_await ctx.recv(fd, buf, len);
        }
        if (ret != -EINTR && ret != -EAGAIN) {
            co_return ret;
        }
    }
}

}  // namespace

// Exactly len bytes, through the receive buffer: one recv() takes in
// whatever has arrived (usually several small PDUs); large data goes
// straight to its destination.  (One co_await statement per loop: GCC 12
// destroyed a suspended callee's frame when this had two in nested blocks.)
Task<int> NvmeTcpConnection::co_recv(void* buf, size_t len)
{
    uint8_t* dst = static_cast<uint8_t*>(buf);
    while (len) {
        size_t n = std::min(len, rend_ - rpos_);
        memcpy(dst, rbuf_.data() + rpos_, n);
        rpos_ += n;
        dst += n;
        len -= n;
        if (len == 0) {
            break;
        }
        bool direct = len >= rbuf_.size();
        uint8_t* into = direct ? dst : rbuf_.data();
        size_t want = direct ? len : rbuf_.size();
        ssize_t got = co_await co_recv_some(ctx_, fd_, into, want);
        if (got <= 0) {
            co_return -EIO;
        }
        if (direct) {
            dst += got;
            len -= size_t(got);
        } else {
            rpos_ = 0;
            rend_ = size_t(got);
        }
    }
    co_return 0;
}

Task<int> NvmeTcpConnection::co_skip(size_t len)
{
    uint8_t scratch[256];
    while (len) {
        size_t n = std::min(len, sizeof(scratch));
        int r = co_await co_recv(scratch, n);
        if (r < 0) {
            co_return -EIO;
        }
        len -= n;
    }
    co_return 0;
}

Task<int> NvmeTcpConnection::co_send(const iovec* iov, unsigned niov)
{
    if (closing_) {
        co_return -EPIPE;
    }
    co_return co_await co_send_full(ctx_, fd_, iov, niov);
}

namespace {

// Resumes the caller at the loop's next iteration.
struct YieldOp {
    AioContext& ctx;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) { ctx.schedule(h); }
    void await_resume() const noexcept {}
};

}  // namespace

// Whole PDUs, in the order of the calls.  The first caller becomes the
// flusher: it lets the other commands that complete in this loop iteration
// queue theirs, then sends everything queued with one sendmsg, until the
// queue is empty; the others wait for their batch.
Task<int> NvmeTcpConnection::co_send_pdus(const iovec* iov, unsigned niov)
{
    OutEntry e{iov, niov};
    out_queue_.push_back(&e);
    if (flushing_) {
        while (!e.done) {
            co_await out_done_.wait();
        }
        co_return e.result;
    }
    flushing_ = true;
    co_await YieldOp{ctx_};
    std::vector<iovec> all;
    while (!out_queue_.empty()) {
        std::vector<OutEntry*> batch(out_queue_.begin(), out_queue_.end());
        out_queue_.clear();
        all.clear();
        for (OutEntry* b : batch) {
            all.insert(all.end(), b->iov, b->iov + b->niov);
        }
        int ret = co_await co_send(all.data(), unsigned(all.size()));
        for (OutEntry* b : batch) {
            b->result = ret;
            b->done = true;
        }
        out_done_.restart_all();
    }
    flushing_ = false;
    co_return e.result;
}

Task<void> NvmeTcpConnection::co_fatal(const PduError& e, const uint8_t* hdr, size_t hdr_len)
{
    std::vector<uint8_t> term = build_termreq(kC2HTermReq, e, hdr, hdr_len);
    iovec iov{term.data(), term.size()};
    co_await co_send_pdus(&iov, 1);
}

Task<void> NvmeTcpConnection::co_run()
{
    int r = co_await co_initialize();
    if (r == 0) {
        qp_ = std::make_unique<NvmeQueuePair>(target_, *this, port_);
        co_await co_receive_loop();
    }
    disconnect();
    fail_data_waiters();
    if (qp_) {
        qp_->cancel_waiting();
    }
    while (in_flight_.count()) {
        co_await in_flight_.wait_idle();
    }
    qp_.reset();
}

Task<int> NvmeTcpConnection::co_initialize()
{
    uint8_t ic[kICSize];
    size_t got = kCommonHeaderSize;
    int r = co_await co_recv(ic, got);
    if (r < 0) {
        co_return -EIO;
    }
    CommonHeader h = parse_common(ic);
    // Only a well-framed ICReq is read whole; parse_icreq() names the bad
    // field of anything else from its first 8 bytes.
    if (h.type == kICReq && h.hlen == kICSize && h.plen == kICSize) {
        r = co_await co_recv(ic + got, kICSize - got);
        if (r < 0) {
            co_return -EIO;
        }
        got = kICSize;
    }
    ICReq req;
    PduError e = parse_icreq(ic, got, req);
    if (e) {
        co_await co_fatal(e, ic, got);
        co_return -EIO;
    }
    dg_ = req.dg;
    c2h_align_ = (uint32_t(req.hpda) + 1) * 4;
    // One R2T per command whatever MAXR2T says; CPDA 0: data right after
    // the header, as the Linux host requires.
    std::vector<uint8_t> resp = build_icresp(ICResp{0, 0, dg_, kNvmeTcpMaxH2CData});
    iovec iov{resp.data(), resp.size()};
    co_return co_await co_send(&iov, 1);
}

uint32_t NvmeTcpConnection::in_capsule_limit() const
{
    // Before Connect the queue's kind is unknown; the Connect data (1 KiB)
    // fits either limit.
    bool io = qp_->connected() && qp_->qid() != 0;
    return io ? port_.in_capsule_data : kNvmeTcpAdminInCapsule;
}

Task<void> NvmeTcpConnection::co_receive_loop()
{
    uint8_t hdr[kMaxHeaderSize];
    while (!closing_) {
        int r = co_await co_recv(hdr, kCommonHeaderSize);
        if (r < 0) {
            break;
        }
        CommonHeader h = parse_common(hdr);
        uint32_t max_data = h.type == kCapsuleCmd ? in_capsule_limit()
                            : h.type == kH2CData  ? kNvmeTcpMaxH2CData
                                                  : uint32_t(kMaxTermReqData);
        PduLayout l;
        PduError e = check_header(h, Receiver::Controller, dg_, max_data, 4, l);
        if (e) {
            co_await co_fatal(e, hdr, kCommonHeaderSize);
            break;
        }
        r = co_await co_recv(hdr + kCommonHeaderSize, l.header_bytes - kCommonHeaderSize);
        if (r < 0) {
            break;
        }
        if (h.type == kH2CTermReq) {
            break;  // the host gives up on us: nothing to answer
        }
        if (dg_.header && !header_digest_ok(hdr, h.hlen)) {
            co_await co_fatal(PduError{kFesHeaderDigestError, 0}, hdr, l.header_bytes);
            break;
        }
        // No co_await inside a conditional expression (GCC 12).
        int ret;
        if (h.type == kCapsuleCmd) {
            ret = co_await co_receive_capsule(hdr, l);
        } else {
            ret = co_await co_receive_h2c_data(hdr, l);
        }
        if (ret < 0) {
            break;
        }
    }
}

// Reads the data part of a validated PDU (padding, data, digest) into dst.
Task<int> NvmeTcpConnection::co_recv_data(uint8_t* dst, const PduLayout& l, bool& digest_ok)
{
    int ret = co_await co_skip(l.data_offset - l.header_bytes);
    if (ret == 0) {
        ret = co_await co_recv(dst, l.data_len);
    }
    if (ret < 0) {
        co_return -EIO;
    }
    digest_ok = true;
    if (l.data_digest) {
        uint8_t d[kDigestSize];
        int r = co_await co_recv(d, sizeof(d));
        if (r < 0) {
            co_return -EIO;
        }
        digest_ok = load_le32(d) == crc32c(0, dst, l.data_len);
    }
    co_return 0;
}

Task<int> NvmeTcpConnection::co_receive_capsule(const uint8_t* hdr, const PduLayout& l)
{
    auto cmd = std::make_unique<Command>();
    memcpy(cmd->req.sqe.bytes, hdr + kCommonHeaderSize, sizeof(cmd->req.sqe.bytes));
    cmd->fetch_index = ++fetched_;
    std::vector<uint8_t> capsule_data(l.data_len);
    bool digest_ok = true;
    if (l.data_len) {
        int ret = co_await co_recv_data(capsule_data.data(), l, digest_ok);
        if (ret < 0) {
            co_return -EIO;
        }
    }
    // More commands than a queue holds: a host that ignores SQ flow
    // control.  They complete at once instead of queueing without bound.
    if (in_flight_.count() >= port_.max_queue_entries) {
        cmd->status = NVME_SC_INTERNAL | NVME_SC_DNR;
    } else if (!digest_ok) {
        cmd->status = NVME_SC_DATA_TRANSFER_ERROR;
    } else {
        cmd->status = map_data(*cmd, capsule_data);
    }
    co_spawn(co_command(std::move(cmd)));
    co_return 0;
}

// Checks the command's one SGL descriptor and sets up its data: a slice of
// the in-capsule data, or a buffer to fetch (R2T) or fill (C2H).  Returns a
// status to complete the command with, or 0.
uint16_t NvmeTcpConnection::map_data(Command& cmd, std::vector<uint8_t>& capsule_data)
{
    const NvmeSqe& sqe = cmd.req.sqe;
    uint8_t psdt = sqe.flags() >> 6;
    uint32_t len = sqe.sgl_length();
    NvmeDataDirection dir = nvme_data_direction(sqe);
    if (psdt != 1 && psdt != 2) {
        return NVME_SC_INVALID_FIELD | NVME_SC_DNR;  // PRPs: not on fabrics
    }
    if (sqe.sgl_type() == NVME_SGL_DATA_BLOCK_OFFSET) {
        uint64_t off = sqe.sgl_address();
        if (dir != NvmeDataDirection::HostToCtrl) {
            return NVME_SC_SGL_INVALID_TYPE | NVME_SC_DNR;
        }
        if (off > capsule_data.size()) {
            return NVME_SC_SGL_INVALID_OFFSET | NVME_SC_DNR;
        }
        if (len > capsule_data.size() - off) {
            return NVME_SC_SGL_INVALID_DATA_LENGTH | NVME_SC_DNR;
        }
        if (off == 0 && len == capsule_data.size()) {
            cmd.buf = std::move(capsule_data);
        } else {
            cmd.buf.assign(capsule_data.begin() + off, capsule_data.begin() + off + len);
        }
    } else if (sqe.sgl_type() == NVME_SGL_TRANSPORT_DATA_BLOCK) {
        if (!capsule_data.empty()) {
            return NVME_SC_SGL_INVALID_TYPE | NVME_SC_DNR;
        }
        if (len > port_.max_data_transfer ||
            (len && dir != NvmeDataDirection::HostToCtrl && dir != NvmeDataDirection::CtrlToHost)) {
            return NVME_SC_SGL_INVALID_DATA_LENGTH | NVME_SC_DNR;
        }
        cmd.buf.assign(len, 0);
    } else {
        return NVME_SC_SGL_INVALID_TYPE | NVME_SC_DNR;
    }
    cmd.req.data_len = len;
    if (len) {
        cmd.req.data = IOVector(cmd.buf.data(), len);
    }
    return 0;
}

Task<int> NvmeTcpConnection::co_receive_h2c_data(const uint8_t* hdr, const PduLayout& l)
{
    DataHeader d = parse_data_header(hdr);
    auto it = awaiting_data_.find(d.ttag);
    PduError e;
    if (it == awaiting_data_.end()) {
        e = PduError{kFesInvalidHeaderField, kOffTtag};
    } else if (it->second->req.sqe.cid() != d.cccid) {
        e = PduError{kFesInvalidHeaderField, kOffCccid};
    } else if (d.length != l.data_len) {
        e = PduError{kFesInvalidHeaderField, kOffDatal};
    } else if (d.offset != it->second->received) {
        e = PduError{kFesDataOutOfRange, kOffDatao};
    } else if (d.length > it->second->req.data_len - d.offset) {
        e = PduError{kFesDataOutOfRange, kOffDatal};
    } else if ((hdr[1] & kFlagDataLast) && d.offset + d.length != it->second->req.data_len) {
        e = PduError{kFesPduSequenceError, kOffFlags};
    }
    if (e) {
        co_await co_fatal(e, hdr, l.header_bytes);
        co_return -EIO;
    }
    Command& cmd = *it->second;
    bool digest_ok = true;
    int r = co_await co_recv_data(cmd.buf.data() + d.offset, l, digest_ok);
    if (r < 0) {
        co_return -EIO;
    }
    cmd.data_failed |= !digest_ok;
    cmd.received += d.length;
    if (cmd.received == cmd.req.data_len) {
        awaiting_data_.erase(it);
        cmd.data_done = true;
        cmd.data_ready.restart_all();
    }
    co_return 0;
}

void NvmeTcpConnection::fail_data_waiters()
{
    std::map<uint16_t, Command*> waiters = std::move(awaiting_data_);
    awaiting_data_.clear();
    for (auto& [ttag, cmd] : waiters) {
        cmd->data_failed = true;
        cmd->data_done = true;
        cmd->data_ready.restart_all();
    }
}

// Asks for the command's data with one R2T and waits until the receive
// loop has placed all of it.  0, or a status to complete the command with.
Task<int> NvmeTcpConnection::co_fetch_h2c(Command& cmd)
{
    while (awaiting_data_.count(next_ttag_)) {
        next_ttag_++;
    }
    cmd.ttag = next_ttag_++;
    awaiting_data_[cmd.ttag] = &cmd;
    uint8_t h[kShortHlen + kDigestSize];
    size_t n = build_r2t(h, dg_, DataHeader{cmd.req.sqe.cid(), cmd.ttag, 0, cmd.req.data_len});
    iovec iov{h, n};
    int ret = co_await co_send_pdus(&iov, 1);
    if (ret < 0) {
        auto it = awaiting_data_.find(cmd.ttag);
        if (it != awaiting_data_.end() && it->second == &cmd) {
            awaiting_data_.erase(it);
        }
        disconnect();
        co_return NVME_SC_DATA_TRANSFER_ERROR;
    }
    while (!cmd.data_done) {
        co_await cmd.data_ready.wait();
    }
    co_return cmd.data_failed ? NVME_SC_DATA_TRANSFER_ERROR : 0;
}

Task<void> NvmeTcpConnection::co_command(std::unique_ptr<Command> cmd)
{
    RequestCounter::Guard g(in_flight_);
    const NvmeSqe& sqe = cmd->req.sqe;
    bool needs_fetch = sqe.sgl_type() == NVME_SGL_TRANSPORT_DATA_BLOCK &&
                       nvme_data_direction(sqe) == NvmeDataDirection::HostToCtrl &&
                       cmd->req.data_len > 0;
    if (!cmd->status && needs_fetch) {
        int st = co_await co_fetch_h2c(*cmd);
        cmd->status = uint16_t(st);
    }
    if (!cmd->status && !closing_) {
        co_await qp_->co_execute(cmd->req);
        if (sqe.opcode() == NVME_OPC_FABRICS && sqe.fctype() == NVMF_FCTYPE_CONNECT &&
            cmd->req.cqe.status() == 0) {
            sqflow_disabled_ = sqe.bytes[46] & 4;  // CATTR: SQ flow control disable
        }
    } else {
        cmd->req.cqe = NvmeCqe{};
        cmd->req.cqe.set_status(cmd->status ? cmd->status : uint16_t(NVME_SC_ABORT_SQ_DELETION));
    }
    int r = co_await co_complete(*cmd);
    if (r < 0) {
        disconnect();
    }
}

// The command's C2H data and its CapsuleResp, as one unit on the socket.
Task<int> NvmeTcpConnection::co_complete(Command& cmd)
{
    NvmeCqe& cqe = cmd.req.cqe;
    uint32_t c2h = 0;
    if (nvme_data_direction(cmd.req.sqe) == NvmeDataDirection::CtrlToHost && !cmd.status &&
        cqe.status() == 0) {
        c2h = std::min(cmd.req.c2h_bytes, cmd.req.data_len);
    }
    // DATA_SUCCESS stands for a CapsuleResp of zeros and success; legal
    // only when the host disabled SQ flow control (it then needs no SQHD).
    bool success = c2h && sqflow_disabled_ && cqe.status() == 0 && cqe.dw0() == 0 && cqe.dw1() == 0;
    // Every PDU of the completion goes out in one sendmsg(): per chunk a
    // header slot (header, then the data digest) in `slots`.
    size_t chunks = (c2h + kNvmeTcpC2HChunk - 1) / kNvmeTcpC2HChunk;
    std::vector<uint8_t> slots((chunks + 1) * kSlot);
    std::vector<iovec> iov;
    add_c2h(cmd, c2h, success, slots.data(), iov);
    if (!success) {
        bool connected = qp_->connected();
        uint16_t qsize = connected ? qp_->queue_size() : 0;
        cqe.set_cid(cmd.req.sqe.cid());
        cqe.set_sqid(connected ? qp_->qid() : 0);
        cqe.set_sqhd(uint16_t(qsize ? cmd.fetch_index % qsize : cmd.fetch_index));
        uint8_t* h = slots.data() + chunks * kSlot;
        iov.push_back({h, build_capsule_resp(h, dg_, cqe)});
    }
    co_return co_await co_send_pdus(iov.data(), unsigned(iov.size()));
}

// Appends len bytes of the command's buffer as C2HData PDUs of up to
// kNvmeTcpC2HChunk bytes to iov, their headers and digests in `slots`.
void NvmeTcpConnection::add_c2h(Command& cmd, uint32_t len, bool success, uint8_t* slots,
                                std::vector<iovec>& iov)
{
    for (uint32_t off = 0; off < len; off += kNvmeTcpC2HChunk, slots += kSlot) {
        uint32_t n = std::min(len - off, kNvmeTcpC2HChunk);
        bool last = off + n == len;
        uint8_t flags = last ? uint8_t(kFlagDataLast | (success ? kFlagDataSuccess : 0)) : 0;
        size_t hb = build_data_header(slots, kC2HData, flags, dg_, c2h_align_,
                                      DataHeader{cmd.req.sqe.cid(), 0, off, n});
        iov.push_back({slots, hb});
        iov.push_back({cmd.buf.data() + off, n});
        if (dg_.data) {
            uint8_t* digest = slots + kMaxHeaderSize;
            store_le32(digest, crc32c(0, cmd.buf.data() + off, n));
            iov.push_back({digest, kDigestSize});
        }
    }
}

}  // namespace qemu
