// NBD transmission phase, as QEMU's server (nbd/server.c nbd_trip and
// below): requests are read one after the other by the connection's
// receive loop and each runs in a coroutine of its own (up to 16 at once);
// their replies are serialized on the socket by send_lock_.
#include <sys/socket.h>

#include <cinttypes>
#include <cstring>

#include "block/zone-error.h"
#include "nbd-internal.h"
#include "qemu/bswap.h"
#include "qemu/iothread.h"

namespace qemu {

namespace {

// QEMU's bound on extents per BLOCK_STATUS chunk.
constexpr size_t kMaxBlockStatusExtents = 128 * 1024;

const char* cmd_name(uint16_t type)
{
    switch (type) {
    case nbd::kCmdRead: return "NBD_CMD_READ";
    case nbd::kCmdWrite: return "NBD_CMD_WRITE";
    case nbd::kCmdDisc: return "NBD_CMD_DISC";
    case nbd::kCmdFlush: return "NBD_CMD_FLUSH";
    case nbd::kCmdTrim: return "NBD_CMD_TRIM";
    case nbd::kCmdCache: return "NBD_CMD_CACHE";
    case nbd::kCmdWriteZeroes: return "NBD_CMD_WRITE_ZEROES";
    case nbd::kCmdBlockStatus: return "NBD_CMD_BLOCK_STATUS";
    default: return "<unknown>";
    }
}

// The wire error for a block-layer result: zone rule violations have no
// NBD error of their own and are EIO; errnos map as QEMU's.
uint32_t wire_error(int ret)
{
    if (zone_error_of(ret) != ZoneError::None) {
        return nbd::kEio;
    }
    return nbd::errno_to_wire(result_errno(ret));
}

}  // namespace

Task<void> NbdClient::co_run()
{
    Timer deadline(ctx_, [this]() { disconnect(); });
    uint32_t secs = server_.options().handshake_max_seconds;
    if (secs) {
        deadline.arm_ns(int64_t(secs) * 1000000000);
    }
    int ret = co_await co_negotiate();
    deadline.cancel();
    if (ret < 0 || closing_ || exp_->removed) {
        co_return;
    }
    std::shared_ptr<NbdExportEntry> e = exp_;
    e->users++;
    co_await co_transmission();
    if (--e->users == 0) {
        e->users_gone.restart_all();
    }
}

Task<void> NbdClient::co_transmission()
{
    for (;;) {
        while (in_flight_.count() >= kNbdMaxRequests) {
            co_await slot_free_.wait();
        }
        if (closing_) {
            break;
        }
        auto req = std::make_unique<NbdRequest>();
        std::string msg;
        bool complete = true;
        int ret = co_await co_receive_request(*req, msg, complete);
        if (ret == -EIO) {
            break;  // NBD_CMD_DISC, end of stream or a framing error
        }
        if (ret < 0) {
            RequestCounter::Guard g(in_flight_);
            int r = co_await co_generic_reply(*req, ret, msg.c_str());
            if (r < 0 || !complete) {
                break;
            }
            continue;
        }
        co_spawn(co_handle(std::move(req)));
    }
    // As QEMU on NBD_CMD_DISC: the requests in flight finish and reply.
    while (in_flight_.count()) {
        co_await in_flight_.wait_idle();
    }
    disconnect();
}

// QEMU's nbd_co_receive_request.
Task<int> NbdClient::co_receive_request(NbdRequest& req, std::string& msg, bool& complete)
{
    bool ext = mode_ == NbdMode::Extended;
    uint8_t h[nbd::kExtendedRequestSize];
    size_t hlen = ext ? nbd::kExtendedRequestSize : nbd::kRequestSize;
    if (co_await co_recv(h, hlen) < 0) {
        co_return -EIO;
    }
    uint32_t magic = load_be32(h);
    if (magic != (ext ? nbd::kExtendedRequestMagic : nbd::kRequestMagic)) {
        warn_report("NBD client: invalid magic (got 0x%" PRIx32 ")", magic);
        co_return -EIO;
    }
    req.flags = load_be16(h + 4);
    req.type = load_be16(h + 6);
    req.cookie = load_be64(h + 8);
    req.from = load_be64(h + 16);
    req.len = ext ? load_be64(h + 24) : load_be32(h + 24);

    bool ext_payload = ext && (req.flags & nbd::kCmdFlagPayloadLen);
    uint64_t payload_len = ext_payload ? req.len : 0;
    bool check_length = ext_payload, check_rofs = false, payload_okay = false, buffer = false;
    unsigned valid = nbd::kCmdFlagFua;
    switch (req.type) {
    case nbd::kCmdDisc: co_return -EIO;
    case nbd::kCmdRead:
        valid |= mode_ != NbdMode::Simple ? unsigned(nbd::kCmdFlagDf) : 0u;
        check_length = buffer = true;
        break;
    case nbd::kCmdWrite:
        valid |= ext ? unsigned(nbd::kCmdFlagPayloadLen) : 0u;
        payload_okay = check_length = buffer = check_rofs = true;
        payload_len = req.len;
        break;
    case nbd::kCmdFlush: break;
    case nbd::kCmdTrim: check_rofs = true; break;
    case nbd::kCmdCache: check_length = true; break;
    case nbd::kCmdWriteZeroes:
        valid |= nbd::kCmdFlagNoHole | nbd::kCmdFlagFastZero;
        check_rofs = true;
        break;
    case nbd::kCmdBlockStatus:
        if (ext_payload) {
            int r = co_await co_read_block_status_payload(req, msg);
            if (r < 0) {
                complete = r != -EIO;
                co_return r == -EIO ? -EINVAL : r;
            }
            check_length = false;
            payload_len = 0;
            valid |= nbd::kCmdFlagPayloadLen;
        } else {
            req.contexts = contexts_;
        }
        valid |= nbd::kCmdFlagReqOne;
        break;
    default: break;  // refused by co_dispatch()
    }
    if (check_length && req.len > nbd::kMaxBufferSize) {
        msg = string_printf("len (%" PRIu64 ") is larger than max len (%u)", req.len,
                            nbd::kMaxBufferSize);
        complete = payload_len == 0;
        co_return -EINVAL;
    }
    if (payload_len && !payload_okay) {
        req.len = 0;  // an unsupported payload: skipped, then EINVAL for the flag
    }
    if (buffer) {
        req.data.resize(req.len);
    }
    if (payload_len) {
        if (payload_okay) {
            if (co_await co_recv(req.data.data(), payload_len) < 0) {
                co_return -EIO;
            }
        } else {
            std::vector<uint8_t> sink(payload_len);
            if (co_await co_recv(sink.data(), payload_len) < 0) {
                co_return -EIO;
            }
        }
    }
    if (check_rofs && !exp_->cfg.writable) {
        msg = "Export is read-only";
        co_return -EROFS;
    }
    if (req.from > exp_->size || req.len > exp_->size - req.from) {
        msg =
            string_printf("operation past EOF; From: %" PRIu64 ", Len: %" PRIu64 ", Size: %" PRIu64,
                          req.from, req.len, exp_->size);
        co_return (req.type == nbd::kCmdWrite || req.type == nbd::kCmdWriteZeroes) ? -ENOSPC
                                                                                   : -EINVAL;
    }
    if (req.flags & ~valid) {
        msg = string_printf("unsupported flags for command %s (got 0x%x)", cmd_name(req.type),
                            req.flags);
        co_return -EINVAL;
    }
    co_return 0;
}

// The payload of an extended BLOCK_STATUS: u64 effect length, then the
// ids of the contexts wanted (a subset of those negotiated).  -EIO: the
// payload could not be consumed (drop the connection).
Task<int> NbdClient::co_read_block_status_payload(NbdRequest& req, std::string& msg)
{
    uint64_t plen = req.len;
    if (plen > nbd::kMaxBufferSize) {
        msg = string_printf("len (%" PRIu64 ") is larger than max len (%u)", plen,
                            nbd::kMaxBufferSize);
        co_return -EIO;
    }
    std::vector<uint8_t> p(plen);
    if (plen) {
        int ret = co_await co_recv(p.data(), plen);
        if (ret < 0) {
            co_return -EIO;
        }
    }
    req.len = 0;
    if (plen < 12 || (plen - 8) % 4) {
        msg = "Invalid CMD_BLOCK_STATUS payload";
        co_return -EINVAL;
    }
    req.len = load_be64(p.data());
    for (size_t i = 8; i < plen; i += 4) {
        uint32_t id = load_be32(p.data() + i);
        if (id == kMetaIdBaseAllocation && contexts_.base_allocation) {
            req.contexts.base_allocation = true;
        } else if (id == kMetaIdAllocationDepth && contexts_.allocation_depth) {
            req.contexts.allocation_depth = true;
        } else {
            req.contexts = {};  // an id never negotiated: the payload is not valid
            break;
        }
    }
    co_return 0;
}

Task<void> NbdClient::co_handle(std::unique_ptr<NbdRequest> req)
{
    {
        RequestCounter::Guard g(in_flight_);
        if (co_await co_dispatch(*req) < 0) {
            disconnect();  // the reply could not be sent
        }
    }
    slot_free_.next();
}

Task<int> NbdClient::co_blk_call(std::function<Task<int>()> fn)
{
    co_return co_await co_run_in<int>(exp_->cfg.blk->ctx(), std::move(fn));
}

void NbdClient::log_request_failure(const NbdRequest& req, int ret)
{
    if (zone_error_of(ret) != ZoneError::None) {
        warn_report("NBD export '%s': %s at offset %" PRIu64 " length %" PRIu64
                    " broke a zone rule (%s); replied EIO",
                    exp_->cfg.name.c_str(), cmd_name(req.type), req.from, req.len,
                    result_strerror(ret));
    }
}

// QEMU's nbd_handle_request: runs one valid request and replies.  Returns
// <0 only when the reply could not be sent.
Task<int> NbdClient::co_dispatch(NbdRequest& req)
{
    BlockBackend* blk = exp_->cfg.blk;
    int ret;
    bool fua = (req.flags & nbd::kCmdFlagFua) || exp_->cfg.writethrough;
    unsigned flags = fua ? unsigned(BDRV_REQ_FUA) : 0u;
    switch (req.type) {
    case nbd::kCmdRead: co_return co_await co_do_read(req);
    case nbd::kCmdCache: {
        // No copy-on-read here: reading warms the node's caches.
        std::vector<uint8_t> scratch(req.len);
        ret = co_await co_blk_call([&]() -> Task<int> {
            IOVector q(scratch.data(), scratch.size());
            co_return co_await blk->co_preadv(req.from, req.len, q);
        });
        co_return co_await co_generic_reply(req, ret, "caching data failed");
    }
    case nbd::kCmdWrite:
        ret = co_await co_blk_call([&]() -> Task<int> {
            IOVector q(req.data.data(), req.data.size());
            co_return co_await blk->co_pwritev(req.from, req.len, q, flags);
        });
        log_request_failure(req, ret);
        co_return co_await co_generic_reply(req, ret, "writing to file failed");
    case nbd::kCmdWriteZeroes:
        flags |= (req.flags & nbd::kCmdFlagNoHole) ? 0u : unsigned(BDRV_REQ_MAY_UNMAP);
        flags |= (req.flags & nbd::kCmdFlagFastZero) ? unsigned(BDRV_REQ_NO_FALLBACK) : 0u;
        ret =
            co_await co_blk_call([&]() { return blk->co_pwrite_zeroes(req.from, req.len, flags); });
        log_request_failure(req, ret);
        co_return co_await co_generic_reply(req, ret, "writing to file failed");
    case nbd::kCmdFlush:
        ret = co_await co_blk_call([&]() { return blk->co_flush(); });
        co_return co_await co_generic_reply(req, ret, "flush failed");
    case nbd::kCmdTrim:
        ret = co_await co_blk_call([&]() -> Task<int> {
            int r = co_await blk->co_pdiscard(req.from, req.len);
            if (r >= 0 && fua) {
                r = co_await blk->co_flush();
            }
            co_return r;
        });
        log_request_failure(req, ret);
        co_return co_await co_generic_reply(req, ret, "discard failed");
    case nbd::kCmdBlockStatus: {
        unsigned remaining = req.contexts.count();
        if (!remaining) {
            co_return co_await co_generic_reply(req, -EINVAL,
                                                contexts_.count()
                                                    ? "CMD_BLOCK_STATUS payload not valid"
                                                    : "CMD_BLOCK_STATUS not negotiated");
        }
        if (!req.len) {
            co_return co_await co_generic_reply(req, -EINVAL, "need non-zero length");
        }
        // One statement per co_await: GCC 12 miscompiles one inside &&.
        if (req.contexts.base_allocation) {
            int ret = co_await co_block_status(req, kMetaIdBaseAllocation, !--remaining);
            if (ret < 0) {
                co_return -EIO;
            }
        }
        if (req.contexts.allocation_depth) {
            int ret = co_await co_block_status(req, kMetaIdAllocationDepth, !--remaining);
            if (ret < 0) {
                co_return -EIO;
            }
        }
        co_return 0;
    }
    default: {
        std::string msg = string_printf("invalid request type (%u) received", req.type);
        co_return co_await co_generic_reply(req, -EINVAL, msg.c_str());
    }
    }
}

Task<int> NbdClient::co_do_read(NbdRequest& req)
{
    BlockBackend* blk = exp_->cfg.blk;
    if (req.flags & nbd::kCmdFlagFua) {
        int r = co_await co_blk_call([&]() { return blk->co_flush(); });
        if (r < 0) {
            co_return co_await co_generic_reply(req, r, "flush failed");
        }
    }
    if (mode_ != NbdMode::Simple && !(req.flags & nbd::kCmdFlagDf) && req.len) {
        co_return co_await co_sparse_read(req);
    }
    int ret = co_await co_blk_call([&]() -> Task<int> {
        IOVector q(req.data.data(), req.data.size());
        co_return co_await blk->co_preadv(req.from, req.len, q);
    });
    if (ret < 0) {
        co_return co_await co_generic_reply(req, ret, "reading from file failed");
    }
    if (mode_ == NbdMode::Simple) {
        co_return co_await co_simple_reply(req, 0, req.data.data(), req.len);
    }
    if (!req.len) {
        co_return co_await co_chunk(req, nbd::kReplyFlagDone, nbd::kReplyTypeNone, nullptr, 0);
    }
    uint8_t off[8];
    store_be64(off, req.from);
    iovec iov[2] = {{off, 8}, {req.data.data(), req.len}};
    co_return co_await co_chunk(req, nbd::kReplyFlagDone, nbd::kReplyTypeOffsetData, iov, 2);
}

// Holes as OFFSET_HOLE chunks, the rest as OFFSET_DATA (QEMU's
// nbd_co_send_sparse_read).
Task<int> NbdClient::co_sparse_read(NbdRequest& req)
{
    BlockBackend* blk = exp_->cfg.blk;
    uint64_t progress = 0;
    while (progress < req.len) {
        uint64_t off = req.from + progress;
        BlockStatus st;
        int status = co_await co_blk_call([&]() {
            return bdrv_co_block_status_above(blk->bs(), nullptr, true, off, req.len - progress,
                                              st);
        });
        if (status < 0 || st.pnum == 0) {
            co_return co_await co_chunk_error(req, status < 0 ? status : -EIO,
                                              "unable to check for holes");
        }
        uint64_t pnum = std::min<uint64_t>(st.pnum, req.len - progress);
        bool final = progress + pnum == req.len;
        uint16_t done = final ? nbd::kReplyFlagDone : 0;
        uint8_t hdr[12];
        store_be64(hdr, off);
        int r;
        if (st.flags & BDRV_BLOCK_ZERO) {
            store_be32(hdr + 8, uint32_t(pnum));
            iovec iov = {hdr, 12};
            r = co_await co_chunk(req, done, nbd::kReplyTypeOffsetHole, &iov, 1);
        } else {
            uint8_t* buf = req.data.data() + progress;
            int rr = co_await co_blk_call([&]() -> Task<int> {
                IOVector q(buf, pnum);
                co_return co_await blk->co_preadv(off, pnum, q);
            });
            if (rr < 0) {
                co_return co_await co_chunk_error(req, rr, "reading from file failed");
            }
            iovec iov[2] = {{hdr, 8}, {buf, pnum}};
            r = co_await co_chunk(req, done, nbd::kReplyTypeOffsetData, iov, 2);
        }
        if (r < 0) {
            co_return r;
        }
        progress += pnum;
    }
    co_return 0;
}

// One BLOCK_STATUS (or _EXT) chunk for context `id` over the request's
// range: adjacent extents with equal flags merged, one extent with
// REQ_ONE, at most kMaxBlockStatusExtents.
Task<int> NbdClient::co_block_status(NbdRequest& req, uint32_t id, bool last)
{
    BlockBackend* blk = exp_->cfg.blk;
    bool ext = mode_ == NbdMode::Extended;
    size_t max_extents = (req.flags & nbd::kCmdFlagReqOne) ? 1 : kMaxBlockStatusExtents;
    // Compact extents have 32-bit lengths.
    uint64_t bytes = ext ? req.len : std::min<uint64_t>(req.len, UINT32_MAX);
    std::vector<std::pair<uint64_t, uint32_t>> ext_list;
    uint64_t off = req.from;
    while (bytes) {
        BlockStatus st;
        unsigned depth = 0;
        int r = co_await co_blk_call([&]() {
            return bdrv_co_block_status_above(blk->bs(), nullptr, id == kMetaIdBaseAllocation, off,
                                              bytes, st, &depth);
        });
        if (r < 0 || st.pnum == 0) {
            co_return co_await co_chunk_error(req, r < 0 ? r : -EIO, "can't get block status");
        }
        uint32_t flags;
        if (id == kMetaIdBaseAllocation) {
            flags = ((st.flags & BDRV_BLOCK_DATA) ? 0 : nbd::kStateHole) |
                    ((st.flags & BDRV_BLOCK_ZERO) ? nbd::kStateZero : 0);
        } else {
            flags = (st.flags & BDRV_BLOCK_ALLOCATED) ? depth + 1 : 0;
        }
        uint64_t num = std::min(st.pnum, bytes);
        if (!ext_list.empty() && ext_list.back().second == flags &&
            (ext || ext_list.back().first + num <= UINT32_MAX)) {
            ext_list.back().first += num;
        } else if (ext_list.size() < max_extents) {
            ext_list.emplace_back(num, flags);
        } else {
            break;
        }
        off += num;
        bytes -= num;
    }
    WireBuf w;
    w.u32(id);
    if (ext) {
        w.u32(uint32_t(ext_list.size()));
    }
    for (const auto& [len, flags] : ext_list) {
        if (ext) {
            w.u64(len);
            w.u64(flags);
        } else {
            w.u32(uint32_t(len));
            w.u32(flags);
        }
    }
    iovec iov = {w.b.data(), w.b.size()};
    co_return co_await co_chunk(req, last ? nbd::kReplyFlagDone : 0,
                                ext ? nbd::kReplyTypeBlockStatusExt : nbd::kReplyTypeBlockStatus,
                                &iov, 1);
}

// QEMU's nbd_send_generic_reply: an error chunk, a NONE chunk (extended
// mode) or a simple reply.
Task<int> NbdClient::co_generic_reply(const NbdRequest& req, int ret, const char* msg)
{
    if (mode_ != NbdMode::Simple && ret < 0) {
        co_return co_await co_chunk_error(req, ret, msg);
    }
    if (mode_ == NbdMode::Extended) {
        co_return co_await co_chunk(req, nbd::kReplyFlagDone, nbd::kReplyTypeNone, nullptr, 0);
    }
    co_return co_await co_simple_reply(req, ret < 0 ? wire_error(ret) : 0, nullptr, 0);
}

Task<int> NbdClient::co_simple_reply(const NbdRequest& req, uint32_t err, const void* data,
                                     size_t len)
{
    uint8_t h[nbd::kSimpleReplySize];
    store_be32(h, nbd::kSimpleReplyMagic);
    store_be32(h + 4, err);
    store_be64(h + 8, req.cookie);
    iovec iov[2] = {{h, sizeof(h)}, {const_cast<void*>(data), len}};
    auto guard = co_await send_lock_.scoped_lock();
    co_return co_await co_send_full(ctx_, fd_, iov, len ? 2 : 1);
}

Task<int> NbdClient::co_chunk(const NbdRequest& req, uint16_t flags, uint16_t type,
                              const iovec* payload, unsigned niov)
{
    size_t plen = 0;
    std::vector<iovec> iov(niov + 1);
    for (unsigned i = 0; i < niov; i++) {
        plen += payload[i].iov_len;
        iov[i + 1] = payload[i];
    }
    uint8_t h[nbd::kExtendedReplySize];
    if (mode_ == NbdMode::Extended) {
        store_be32(h, nbd::kExtendedReplyMagic);
        store_be64(h + 16, req.from);
        store_be64(h + 24, plen);
    } else {
        store_be32(h, nbd::kStructuredReplyMagic);
        store_be32(h + 16, uint32_t(plen));
    }
    store_be16(h + 4, flags);
    store_be16(h + 6, type);
    store_be64(h + 8, req.cookie);
    iov[0] = {h, mode_ == NbdMode::Extended ? nbd::kExtendedReplySize : nbd::kStructuredReplySize};
    auto guard = co_await send_lock_.scoped_lock();
    co_return co_await co_send_full(ctx_, fd_, iov.data(), unsigned(iov.size()));
}

Task<int> NbdClient::co_chunk_error(const NbdRequest& req, int err, const char* msg)
{
    size_t mlen = strlen(msg);
    uint8_t h[6];
    store_be32(h, wire_error(err));
    store_be16(h + 4, uint16_t(mlen));
    iovec iov[2] = {{h, 6}, {const_cast<char*>(msg), mlen}};
    co_return co_await co_chunk(req, nbd::kReplyFlagDone, nbd::kReplyTypeError, iov, 2);
}

}  // namespace qemu
