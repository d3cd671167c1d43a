// The NBD client's transmission phase, reply side (see nbd-client.h): the
// one reader coroutine that parses simple replies and structured or
// extended chunks and completes the requests they answer.  Anything a
// correct server cannot send ends the connection (every request fails
// with -EIO): a lying server is never trusted with our buffers.
#include <algorithm>
#include <cerrno>
#include <utility>

#include "nbd-client-request.h"
#include "qemu/bswap.h"
#include "qemu/sockets.h"

namespace qemu::nbd {

namespace {
// A reply payload can be a whole READ (32 MiB) plus its offset; anything
// longer is a lie.
constexpr uint64_t kMaxChunkPayload = kMaxBufferSize + 64;
}  // namespace

Task<int> ClientConnection::recv(void* buf, size_t len)
{
    ssize_t r = co_await co_recv_full(*ctx_, fd_, buf, len);
    co_return r == ssize_t(len) ? 0 : -EIO;
}

Task<int> ClientConnection::recv_into(IOVector& qiov, size_t offset, size_t len)
{
    IOVector part;
    part.add_slice(qiov, offset, len);
    for (const iovec& v : part.iovs()) {
        int r = co_await recv(v.iov_base, v.iov_len);
        if (r < 0) {
            co_return r;
        }
    }
    co_return 0;
}

Task<int> ClientConnection::discard(uint64_t len)
{
    uint8_t scratch[4096];
    while (len > 0) {
        size_t step = std::min<uint64_t>(len, sizeof(scratch));
        int r = co_await recv(scratch, step);
        if (r < 0) {
            co_return r;
        }
        len -= step;
    }
    co_return 0;
}

ClientConnection::Request* ClientConnection::find(uint64_t cookie)
{
    auto it = in_flight_.find(cookie);
    return it == in_flight_.end() ? nullptr : it->second;
}

Task<void> ClientConnection::reader()
{
    // Only while requests wait for replies: an idle connection has no
    // receive pending, so its node can move to another context.
    while (!dead_ && !in_flight_.empty()) {
        int r = co_await receive_reply();
        if (r < 0) {
            fail_all();  // the connection cannot go on: nobody waits forever
            break;
        }
    }
    reader_running_ = false;
    if (reader_exit_waiter_) {
        ctx_->schedule(std::exchange(reader_exit_waiter_, {}));
    }
}

// Reads one reply header (the kind the session negotiated) and what
// follows it.  0, or -EIO when the connection cannot go on.
Task<int> ClientConnection::receive_reply()
{
    uint8_t hdr[kExtendedReplySize];
    int r = co_await recv(hdr, 4);
    if (r < 0) {
        co_return -EIO;
    }
    uint32_t magic = load_be32(hdr);
    if (magic == kSimpleReplyMagic && !info_.extended) {
        r = co_await recv(hdr + 4, kSimpleReplySize - 4);
        if (r < 0) {
            co_return -EIO;
        }
        co_return co_await receive_simple(load_be64(hdr + 8), load_be32(hdr + 4));
    }
    if (magic == kStructuredReplyMagic && info_.structured && !info_.extended) {
        r = co_await recv(hdr + 4, kStructuredReplySize - 4);
        if (r < 0) {
            co_return -EIO;
        }
        co_return co_await receive_chunk(load_be16(hdr + 4), load_be16(hdr + 6),
                                         load_be64(hdr + 8), load_be32(hdr + 16));
    }
    if (magic == kExtendedReplyMagic && info_.extended) {
        r = co_await recv(hdr + 4, kExtendedReplySize - 4);
        if (r < 0) {
            co_return -EIO;
        }
        co_return co_await receive_chunk(load_be16(hdr + 4), load_be16(hdr + 6),
                                         load_be64(hdr + 8), load_be64(hdr + 24));
    }
    co_return -EIO;
}

Task<int> ClientConnection::receive_simple(uint64_t cookie, uint32_t error)
{
    Request* req = find(cookie);
    if (!req) {
        co_return -EIO;
    }
    if (error) {
        req->ret = -wire_to_errno(error);
    } else if (req->type == kCmdRead) {
        // With structured replies a read's data must come in chunks.
        if (info_.structured) {
            co_return -EIO;
        }
        int r = co_await recv_into(*req->qiov, req->qiov_offset, req->len);
        if (r < 0) {
            co_return -EIO;
        }
    }
    complete(*req);
    co_return 0;
}

Task<int> ClientConnection::receive_chunk(uint16_t flags, uint16_t type, uint64_t cookie,
                                          uint64_t length)
{
    Request* req = find(cookie);
    if (!req || length > kMaxChunkPayload) {
        co_return -EIO;
    }
    int r;
    if (type == kReplyTypeNone) {
        r = (length == 0 && (flags & kReplyFlagDone)) ? 0 : -EIO;
    } else if (reply_type_is_error(type)) {
        r = co_await receive_error_chunk(*req, type, length);
    } else if (req->type == kCmdRead &&
               (type == kReplyTypeOffsetData || type == kReplyTypeOffsetHole)) {
        r = co_await receive_read_chunk(*req, type, length);
    } else if (req->type == kCmdBlockStatus &&
               type == (info_.extended ? kReplyTypeBlockStatusExt : kReplyTypeBlockStatus)) {
        r = co_await receive_status_chunk(*req, type, length);
    } else {
        r = -EIO;
    }
    if (r < 0) {
        co_return r;
    }
    if (flags & kReplyFlagDone) {
        // A successful reply must have said everything asked for.
        if (req->ret == 0 && ((req->type == kCmdRead && req->received != req->len) ||
                              (req->type == kCmdBlockStatus && !req->got_status))) {
            req->ret = -EIO;
        }
        complete(*req);
    }
    co_return 0;
}

// OFFSET_DATA and OFFSET_HOLE: must lie inside the request.
Task<int> ClientConnection::receive_read_chunk(Request& req, uint16_t type, uint64_t length)
{
    uint8_t hdr[12];
    uint64_t fixed = type == kReplyTypeOffsetData ? 8 : 12;
    if (length < fixed || (type == kReplyTypeOffsetHole && length != 12)) {
        co_return -EIO;
    }
    int r = co_await recv(hdr, fixed);
    if (r < 0) {
        co_return -EIO;
    }
    uint64_t off = load_be64(hdr);
    uint64_t n = type == kReplyTypeOffsetData ? length - 8 : load_be32(hdr + 8);
    if (n == 0 || off < req.offset || off - req.offset > req.len ||
        n > req.len - (off - req.offset)) {
        co_return -EIO;
    }
    size_t at = req.qiov_offset + (off - req.offset);
    if (type == kReplyTypeOffsetData) {
        r = co_await recv_into(*req.qiov, at, n);
        if (r < 0) {
            co_return -EIO;
        }
    } else {
        req.qiov->memset(at, 0, n);
    }
    req.received += n;
    co_return 0;
}

// One BLOCK_STATUS(_EXT) chunk for base:allocation; with REQ_ONE only its
// first extent counts.  Extents are cut to the request and, as QEMU does,
// to the server's minimum block size.
Task<int> ClientConnection::receive_status_chunk(Request& req, uint16_t type, uint64_t length)
{
    bool ext = type == kReplyTypeBlockStatusExt;
    uint8_t buf[24];
    size_t head = ext ? 24 : 12;
    size_t desc = ext ? 16 : 8;
    if (req.got_status || length < head || (length - (head - desc)) % desc) {
        co_return -EIO;
    }
    int r = co_await recv(buf, head);
    if (r < 0) {
        co_return -EIO;
    }
    if (load_be32(buf) != info_.context_id ||
        (ext && load_be32(buf + 4) != (length - 8) / 16)) {
        co_return -EIO;
    }
    uint64_t len = ext ? load_be64(buf + 8) : load_be32(buf + 4);
    uint64_t flags = ext ? load_be64(buf + 16) : load_be32(buf + 8);
    r = co_await discard(length - head);
    if (len == 0 || r < 0) {
        co_return -EIO;
    }
    len = std::min(len, req.len);
    if (info_.min_block && len % info_.min_block) {
        if (len > info_.min_block) {
            len -= len % info_.min_block;
        } else {
            len = info_.min_block;
            flags = 0;  // a mix of states: say data, the safe answer
        }
    }
    req.ext_len = len;
    req.ext_flags = uint32_t(flags);
    req.got_status = true;
    co_return 0;
}

// ERROR and ERROR_OFFSET (and error types we do not know): the first
// error of a reply is its result; the message is read and dropped.
Task<int> ClientConnection::receive_error_chunk(Request& req, uint16_t type, uint64_t length)
{
    uint8_t hdr[6];
    if (length < sizeof(hdr)) {
        co_return -EIO;
    }
    int r = co_await recv(hdr, sizeof(hdr));
    if (r < 0) {
        co_return -EIO;
    }
    uint32_t error = load_be32(hdr);
    uint16_t msglen = load_be16(hdr + 4);
    uint64_t rest = length - sizeof(hdr);
    if (error == 0 || msglen > rest ||
        (type == kReplyTypeError && rest != msglen) ||
        (type == kReplyTypeErrorOffset && rest != uint64_t(msglen) + 8)) {
        co_return -EIO;
    }
    r = co_await discard(rest);
    if (r < 0) {
        co_return -EIO;
    }
    if (req.ret == 0) {
        req.ret = -wire_to_errno(error);
    }
    co_return 0;
}

}  // namespace qemu::nbd
