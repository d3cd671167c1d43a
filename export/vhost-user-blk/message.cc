// vhost-user message framing and validation (vhost-user-proto.h).
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "vhost-user-proto.h"

namespace qemu {

void UniqueFd::reset(int fd)
{
    if (fd_ >= 0) {
        close(fd_);
    }
    fd_ = fd;
}

namespace vhost_user {

namespace {

struct RequestInfo {
    uint32_t id;
    const char* name;
};

constexpr RequestInfo kRequests[] = {
    {GET_FEATURES, "GET_FEATURES"},
    {SET_FEATURES, "SET_FEATURES"},
    {SET_OWNER, "SET_OWNER"},
    {RESET_OWNER, "RESET_OWNER"},
    {SET_MEM_TABLE, "SET_MEM_TABLE"},
    {SET_LOG_BASE, "SET_LOG_BASE"},
    {SET_LOG_FD, "SET_LOG_FD"},
    {SET_VRING_NUM, "SET_VRING_NUM"},
    {SET_VRING_ADDR, "SET_VRING_ADDR"},
    {SET_VRING_BASE, "SET_VRING_BASE"},
    {GET_VRING_BASE, "GET_VRING_BASE"},
    {SET_VRING_KICK, "SET_VRING_KICK"},
    {SET_VRING_CALL, "SET_VRING_CALL"},
    {SET_VRING_ERR, "SET_VRING_ERR"},
    {GET_PROTOCOL_FEATURES, "GET_PROTOCOL_FEATURES"},
    {SET_PROTOCOL_FEATURES, "SET_PROTOCOL_FEATURES"},
    {GET_QUEUE_NUM, "GET_QUEUE_NUM"},
    {SET_VRING_ENABLE, "SET_VRING_ENABLE"},
    {SET_BACKEND_REQ_FD, "SET_BACKEND_REQ_FD"},
    {GET_CONFIG, "GET_CONFIG"},
    {SET_CONFIG, "SET_CONFIG"},
    {GET_INFLIGHT_FD, "GET_INFLIGHT_FD"},
    {SET_INFLIGHT_FD, "SET_INFLIGHT_FD"},
    {RESET_DEVICE, "RESET_DEVICE"},
    {GET_MAX_MEM_SLOTS, "GET_MAX_MEM_SLOTS"},
    {ADD_MEM_REG, "ADD_MEM_REG"},
    {REM_MEM_REG, "REM_MEM_REG"},
    {SET_STATUS, "SET_STATUS"},
    {GET_STATUS, "GET_STATUS"},
};

// The payload sizes a request may have: [min, max], and for the variable
// ones the rule is finished in check().
struct Layout {
    uint32_t min;
    uint32_t max;
};

Layout layout(uint32_t request)
{
    switch (request) {
    case GET_FEATURES:
    case GET_PROTOCOL_FEATURES:
    case GET_QUEUE_NUM:
    case GET_MAX_MEM_SLOTS:
    case GET_STATUS:
        // No payload; some front ends send a zeroed u64.
        return {0, 8};
    case SET_OWNER:
    case RESET_OWNER:
    case RESET_DEVICE:
        return {0, 0};
    case SET_FEATURES:
    case SET_PROTOCOL_FEATURES:
    case SET_VRING_KICK:
    case SET_VRING_CALL:
    case SET_VRING_ERR:
    case SET_LOG_FD:
    case SET_BACKEND_REQ_FD:
    case SET_STATUS:
        return {8, 8};
    case SET_VRING_NUM:
    case SET_VRING_BASE:
    case GET_VRING_BASE:
    case SET_VRING_ENABLE:
        return {sizeof(VringState), sizeof(VringState)};
    case SET_VRING_ADDR:
        return {sizeof(VringAddr), sizeof(VringAddr)};
    case SET_MEM_TABLE:
        return {8, 8 + kMaxRegions * sizeof(MemRegion)};
    case ADD_MEM_REG:
    case REM_MEM_REG:
        return {8 + sizeof(MemRegion), 8 + sizeof(MemRegion)};
    case SET_LOG_BASE:
        return {16, 16};
    case GET_CONFIG:
    case SET_CONFIG:
        return {sizeof(ConfigHeader), sizeof(ConfigHeader) + kMaxConfigSize};
    case GET_INFLIGHT_FD:
    case SET_INFLIGHT_FD:
        return {20, 24};  // 20 bytes of fields, padded to 24 by some
    default:
        return {0, kMaxPayload};
    }
}

// How many fds `msg` must carry.
unsigned expected_fds(const Message& msg)
{
    switch (msg.request) {
    case SET_MEM_TABLE:
        return msg.get<uint32_t>();
    case ADD_MEM_REG:
    case SET_LOG_BASE:
    case SET_LOG_FD:
    case SET_BACKEND_REQ_FD:
    case SET_INFLIGHT_FD:
        return 1;
    case SET_VRING_KICK:
    case SET_VRING_CALL:
    case SET_VRING_ERR:
        return (msg.u64() & kVringNoFd) ? 0 : 1;
    default:
        return 0;
    }
}

// Receives a message in pieces: the header, then the payload the header
// announced.  want()/advance() tell a read loop where the next bytes go.
class Reader {
public:
    explicit Reader(Message& msg) : msg_(msg) {}

    uint8_t* want_ptr() { return in_header() ? header_ + got_ : msg_.payload.data() + (got_ - kHeaderSize); }
    size_t want_len() const
    {
        return in_header() ? kHeaderSize - got_ : kHeaderSize + msg_.payload.size() - got_;
    }
    bool started() const { return got_ > 0; }
    bool done() const { return got_ >= kHeaderSize && got_ == kHeaderSize + msg_.payload.size(); }

    // n bytes arrived at want_ptr(); false with err set for a bad header.
    bool advance(size_t n, Error& err)
    {
        got_ += n;
        if (got_ != kHeaderSize) {
            return true;
        }
        std::memcpy(&msg_.request, header_, 4);
        std::memcpy(&msg_.flags, header_ + 4, 4);
        uint32_t size;
        std::memcpy(&size, header_ + 8, 4);
        if (size > kMaxPayload) {
            err.set("vhost-user message %s: payload of %u bytes exceeds the maximum of %u",
                    request_name(msg_.request), size, kMaxPayload);
            return false;
        }
        msg_.payload.resize(size);
        return true;
    }

private:
    bool in_header() const { return got_ < kHeaderSize; }

    Message& msg_;
    uint8_t header_[kHeaderSize];
    size_t got_ = 0;
};

// One recvmsg into buf, appending any SCM_RIGHTS fds to fds.  Bytes read,
// 0 at end of stream, or -errno (-EPROTO when fds were truncated).
ssize_t recv_with_fds(int fd, void* buf, size_t len, std::vector<UniqueFd>& fds, int flags)
{
    iovec iov = {buf, len};
    alignas(cmsghdr) char control[CMSG_SPACE(kMaxFds * sizeof(int))];
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = control;
    mh.msg_controllen = sizeof(control);
    ssize_t n = recvmsg(fd, &mh, flags | MSG_CMSG_CLOEXEC);
    if (n < 0) {
        return -errno;
    }
    for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
            continue;
        }
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; i++) {
            int f;
            std::memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            fds.emplace_back(f);
        }
    }
    if ((mh.msg_flags & MSG_CTRUNC) || fds.size() > kMaxFds) {
        return -EPROTO;
    }
    return n;
}

// What a read loop does with one recv result: 1 go on, 0 clean end, <0 error.
int after_recv(ssize_t n, Reader& r, Error& err)
{
    if (n == -EPROTO) {
        // The fds come with the first bytes: the header may not be read yet.
        err.set("vhost-user: a message with more than %u file descriptors", kMaxFds);
        return -EPROTO;
    }
    if (n < 0) {
        err.set_errno(int(n), "vhost-user: failed to read message");
        return int(n);
    }
    if (n == 0) {
        if (!r.started()) {
            return 0;
        }
        err.set("vhost-user: connection closed in the middle of a message");
        return -EPROTO;
    }
    return r.advance(size_t(n), err) ? 1 : -EPROTO;
}

// Senders may pass more fds than a receiver accepts (to test that it
// refuses them), up to this many.
constexpr unsigned kMaxSendFds = 16;

// One message on its way out: header, payload and fds in a msghdr that
// sent() moves past what a (possibly short) sendmsg took.
class Sender {
public:
    explicit Sender(const Message& msg) : left_(kHeaderSize + msg.payload.size())
    {
        uint32_t size = uint32_t(msg.payload.size());
        std::memcpy(hdr_, &msg.request, 4);
        std::memcpy(hdr_ + 4, &msg.flags, 4);
        std::memcpy(hdr_ + 8, &size, 4);
        iov_[0] = {hdr_, kHeaderSize};
        iov_[1] = {const_cast<uint8_t*>(msg.payload.data()), msg.payload.size()};
        mh_.msg_iov = iov_;
        mh_.msg_iovlen = msg.payload.empty() ? 1 : 2;
        too_many_fds_ = msg.fds.size() > kMaxSendFds;
        if (msg.fds.empty() || too_many_fds_) {
            return;
        }
        std::memset(control_, 0, sizeof(control_));
        mh_.msg_control = control_;
        mh_.msg_controllen = CMSG_SPACE(msg.fds.size() * sizeof(int));
        cmsghdr* c = CMSG_FIRSTHDR(&mh_);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(msg.fds.size() * sizeof(int));
        for (size_t i = 0; i < msg.fds.size(); i++) {
            int f = msg.fds[i].get();
            std::memcpy(CMSG_DATA(c) + i * sizeof(int), &f, sizeof(int));
        }
    }
    Sender(const Sender&) = delete;

    bool too_many_fds() const { return too_many_fds_; }
    bool done() const { return left_ == 0; }
    const msghdr* mh() const { return &mh_; }
    // What to do with a sendmsg result: 0 go on (after moving past n
    // bytes, or to retry), <0 give up with it.
    int sent(ssize_t n)
    {
        if (n == -EINTR || n == -EAGAIN) {
            return 0;
        }
        if (n < 0) {
            return int(n);
        }
        left_ -= size_t(n);
        mh_.msg_control = nullptr;  // the fds went with the first byte
        mh_.msg_controllen = 0;
        size_t skip = size_t(n);
        while (skip > 0 && mh_.msg_iovlen > 0) {
            size_t step = std::min(skip, mh_.msg_iov[0].iov_len);
            mh_.msg_iov[0].iov_base = static_cast<uint8_t*>(mh_.msg_iov[0].iov_base) + step;
            mh_.msg_iov[0].iov_len -= step;
            skip -= step;
            if (mh_.msg_iov[0].iov_len == 0) {
                mh_.msg_iov++;
                mh_.msg_iovlen--;
            }
        }
        return 0;
    }

private:
    uint8_t hdr_[kHeaderSize];
    iovec iov_[2];
    alignas(cmsghdr) char control_[CMSG_SPACE(kMaxSendFds * sizeof(int))];
    msghdr mh_{};
    size_t left_;
    bool too_many_fds_ = false;
};

}  // namespace

const char* request_name(uint32_t request)
{
    for (const RequestInfo& r : kRequests) {
        if (r.id == request) {
            return r.name;
        }
    }
    thread_local char buf[32];
    snprintf(buf, sizeof(buf), "request %u", request);
    return buf;
}

bool known_request(uint32_t request)
{
    for (const RequestInfo& r : kRequests) {
        if (r.id == request) {
            return true;
        }
    }
    return false;
}

bool is_eventfd(int fd)
{
    char path[64], target[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, target, sizeof(target) - 1);
    if (n < 0) {
        return false;
    }
    target[n] = 0;
    return strcmp(target, "anon_inode:[eventfd]") == 0;
}

Message make_reply(const Message& req, const void* payload, size_t len)
{
    Message m;
    m.request = req.request;
    m.flags = kVersion | kFlagReply;
    const uint8_t* p = static_cast<const uint8_t*>(payload);
    m.payload.assign(p, p + len);
    return m;
}

Message make_u64_reply(const Message& req, uint64_t v)
{
    return make_reply(req, &v, sizeof(v));
}

bool check(const Message& msg, Error& err)
{
    const char* name = request_name(msg.request);
    if ((msg.flags & kVersionMask) != kVersion || (msg.flags & kFlagReply)) {
        err.set("vhost-user message %s: bad flags 0x%x", name, msg.flags);
        return false;
    }
    if (!known_request(msg.request)) {
        err.set("vhost-user: unknown %s", name);
        return false;
    }
    Layout l = layout(msg.request);
    size_t size = msg.payload.size();
    if (size < l.min || size > l.max) {
        err.set("vhost-user message %s: bad payload size %zu", name, size);
        return false;
    }
    if (msg.request == SET_MEM_TABLE) {
        uint32_t n = msg.get<uint32_t>();
        if (n == 0 || n > kMaxRegions || size != 8 + n * sizeof(MemRegion)) {
            err.set("vhost-user message %s: %u regions in %zu bytes", name, n, size);
            return false;
        }
    }
    if (msg.request == GET_CONFIG || msg.request == SET_CONFIG) {
        ConfigHeader h = msg.get<ConfigHeader>();
        if (h.size == 0 || h.size > kMaxConfigSize || size != sizeof(h) + h.size) {
            err.set("vhost-user message %s: config size %u in %zu bytes", name, h.size, size);
            return false;
        }
    }
    unsigned want = expected_fds(msg);
    if (msg.fds.size() != want) {
        err.set("vhost-user message %s: %zu file descriptors instead of %u", name,
                msg.fds.size(), want);
        return false;
    }
    return true;
}

Task<int> co_recv_message(AioContext& ctx, int fd, Message& msg, Error& err)
{
    msg = Message();
    Reader r(msg);
    while (!r.done()) {
        ssize_t n = recv_with_fds(fd, r.want_ptr(), r.want_len(), msg.fds, MSG_DONTWAIT);
        if (n == -EAGAIN || n == -EWOULDBLOCK || n == -EINTR) {
            int mask = co_await ctx.poll_in(fd);
            if (mask < 0) {
                err.set_errno(mask, "vhost-user: failed to wait for the socket");
                co_return mask;
            }
            continue;
        }
        int ret = after_recv(n, r, err);
        if (ret <= 0) {
            co_return ret;
        }
    }
    co_return 1;
}

int recv_message(int fd, Message& msg, Error& err)
{
    msg = Message();
    Reader r(msg);
    while (!r.done()) {
        ssize_t n = recv_with_fds(fd, r.want_ptr(), r.want_len(), msg.fds, 0);
        if (n == -EINTR) {
            continue;
        }
        int ret = after_recv(n, r, err);
        if (ret <= 0) {
            return ret;
        }
    }
    return 1;
}

Task<int> co_send_message(AioContext& ctx, int fd, const Message& msg)
{
    Sender out(msg);
    if (out.too_many_fds()) {
        co_return -EINVAL;
    }
    while (!out.done()) {
        int n = co_await ctx.sendmsg(fd, out.mh());
        int ret = out.sent(n);
        if (ret < 0) {
            co_return ret;
        }
    }
    co_return 0;
}

int send_message(int fd, const Message& msg)
{
    Sender out(msg);
    if (out.too_many_fds()) {
        return -EINVAL;
    }
    while (!out.done()) {
        ssize_t n = sendmsg(fd, out.mh(), MSG_NOSIGNAL);
        int ret = out.sent(n < 0 ? -errno : n);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

}  // namespace vhost_user
}  // namespace qemu
