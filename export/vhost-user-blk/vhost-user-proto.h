// The vhost-user wire protocol as a back end sees it (QEMU's
// docs/interop/vhost-user.rst): message ids, payload layouts, and the
// framing of one message with the file descriptors that travel with it as
// SCM_RIGHTS.  Shared by the back end (export/vhost-user-blk/), our test
// front end (tests/vhost-user/) and the fuzz harness.
//
// Everything here is in host byte order, as the protocol is.  Every
// message is hostile until vhost_user_check() accepted it: the payload size
// is checked per request type and the number of fds per message, so the
// handlers read fixed-size payloads they can trust to be complete.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "qemu/aio.h"
#include "qemu/coroutine.h"
#include "qemu/error.h"

namespace qemu {

// An owned file descriptor, closed when dropped.
class UniqueFd {
public:
    UniqueFd() = default;
    explicit UniqueFd(int fd) : fd_(fd) {}
    ~UniqueFd() { reset(); }
    UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
    UniqueFd& operator=(UniqueFd&& o) noexcept
    {
        if (this != &o) {
            reset(o.release());
        }
        return *this;
    }
    int get() const { return fd_; }
    bool valid() const { return fd_ >= 0; }
    int release()
    {
        int fd = fd_;
        fd_ = -1;
        return fd;
    }
    void reset(int fd = -1);

private:
    int fd_ = -1;
};

namespace vhost_user {

enum Request : uint32_t {
    GET_FEATURES = 1,
    SET_FEATURES = 2,
    SET_OWNER = 3,
    RESET_OWNER = 4,
    SET_MEM_TABLE = 5,
    SET_LOG_BASE = 6,
    SET_LOG_FD = 7,
    SET_VRING_NUM = 8,
    SET_VRING_ADDR = 9,
    SET_VRING_BASE = 10,
    GET_VRING_BASE = 11,
    SET_VRING_KICK = 12,
    SET_VRING_CALL = 13,
    SET_VRING_ERR = 14,
    GET_PROTOCOL_FEATURES = 15,
    SET_PROTOCOL_FEATURES = 16,
    GET_QUEUE_NUM = 17,
    SET_VRING_ENABLE = 18,
    SEND_RARP = 19,
    NET_SET_MTU = 20,
    SET_BACKEND_REQ_FD = 21,
    IOTLB_MSG = 22,
    SET_VRING_ENDIAN = 23,
    GET_CONFIG = 24,
    SET_CONFIG = 25,
    GET_INFLIGHT_FD = 31,
    SET_INFLIGHT_FD = 32,
    RESET_DEVICE = 34,
    GET_MAX_MEM_SLOTS = 36,
    ADD_MEM_REG = 37,
    REM_MEM_REG = 38,
    SET_STATUS = 39,
    GET_STATUS = 40,
};

// Header flags.
constexpr uint32_t kVersion = 1;
constexpr uint32_t kVersionMask = 3;
constexpr uint32_t kFlagReply = 1u << 2;
constexpr uint32_t kFlagNeedReply = 1u << 3;

// Virtio feature bit 30: the protocol-features messages are available.
constexpr uint64_t kFeatureProtocolFeatures = 1ull << 30;

// Protocol feature bits.
enum : uint64_t {
    PROTOCOL_F_MQ = 1ull << 0,
    PROTOCOL_F_LOG_SHMFD = 1ull << 1,
    PROTOCOL_F_REPLY_ACK = 1ull << 3,
    PROTOCOL_F_BACKEND_REQ = 1ull << 5,
    PROTOCOL_F_CONFIG = 1ull << 9,
    PROTOCOL_F_INFLIGHT_SHMFD = 1ull << 12,
    PROTOCOL_F_CONFIGURE_MEM_SLOTS = 1ull << 15,
};

constexpr size_t kHeaderSize = 12;
// Regions in one SET_MEM_TABLE, and fds in one message.
constexpr unsigned kMaxRegions = 8;
constexpr unsigned kMaxFds = 8;
constexpr uint32_t kMaxConfigSize = 256;
// The largest payload of any request we accept (SET_MEM_TABLE: 8 + 8 × 32;
// the config messages: 12 + 256).
constexpr uint32_t kMaxPayload = 12 + kMaxConfigSize;

// The fd-carrying vring messages' u64: index in bits 0-7, bit 8 "no fd".
constexpr uint64_t kVringIndexMask = 0xff;
constexpr uint64_t kVringNoFd = 1ull << 8;

// Wire layouts (packed in the protocol; these have no padding anyway).
struct VringState {
    uint32_t index;
    uint32_t num;
};
struct VringAddr {
    uint32_t index;
    uint32_t flags;  // bit 0: VHOST_VRING_F_LOG
    uint64_t desc_user_addr;
    uint64_t used_user_addr;
    uint64_t avail_user_addr;
    uint64_t log_guest_addr;
};
struct MemRegion {
    uint64_t guest_phys_addr;
    uint64_t memory_size;
    uint64_t userspace_addr;
    uint64_t mmap_offset;
};
struct ConfigHeader {
    uint32_t offset;
    uint32_t size;
    uint32_t flags;  // 0: a front-end write, 1: migration
};
static_assert(sizeof(VringState) == 8 && sizeof(VringAddr) == 40 && sizeof(MemRegion) == 32 &&
              sizeof(ConfigHeader) == 12);

// One message: header fields, payload, and the fds that came with it
// (owned: closed when the message is dropped, unless a handler took them).
struct Message {
    uint32_t request = 0;
    uint32_t flags = 0;
    std::vector<uint8_t> payload;
    std::vector<UniqueFd> fds;

    bool need_reply() const { return flags & kFlagNeedReply; }
    // The payload as T, REQUIRES: vhost_user_check() accepted the message
    // and T is its layout (or a prefix of it).
    template <typename T>
    T get(size_t offset = 0) const
    {
        T v;
        std::memcpy(&v, payload.data() + offset, sizeof(T));
        return v;
    }
    uint64_t u64() const { return get<uint64_t>(); }
};

// A reply to `req` with this payload (flags: version | REPLY).
Message make_reply(const Message& req, const void* payload, size_t len);
Message make_u64_reply(const Message& req, uint64_t v);

// The name of a request for messages ("SET_MEM_TABLE", or "request 99").
const char* request_name(uint32_t request);

// Whether a back end knows `request` (vhost_user_check() then knows its
// layout).  Unknown requests pass the framing but not the check.
bool known_request(uint32_t request);

// Checks a message from a front end before any handler sees it: version
// bits 1 and no REPLY flag, a known request, the payload size its type
// requires (exact for fixed layouts, bounded for config and memory table,
// whose inner counts must match the size), and as many fds as it carries
// (memory table: one per region; kick/call/err: one unless "no fd";
// inflight and log fds: one; everything else none).  Returns false with
// err saying what is wrong.
bool check(const Message& msg, Error& err);

// Whether fd is an eventfd (kick, call and err fds must be: we poll,
// read and write them as such, and wake our own kick wait through them).
bool is_eventfd(int fd);

// Framing on a connected AF_UNIX stream socket.
//
// Reads one message: the 12-byte header, then its payload, collecting the
// fds of SCM_RIGHTS on either (at most kMaxFds; more is an error, and the
// kernel closes the ones that did not fit).  A payload over kMaxPayload is
// refused before it is read.  Returns 1 with msg filled, 0 at a clean end
// of stream before a header, -errno on error (-EPROTO with err set for a
// bad header or a stream cut mid-message).  ctx: the caller's context;
// waits for the socket with poll_in.
Task<int> co_recv_message(AioContext& ctx, int fd, Message& msg, Error& err);
// Sends msg (header + payload + its fds as SCM_RIGHTS).  0 or -errno
// (-EINVAL for more than 16 fds).
Task<int> co_send_message(AioContext& ctx, int fd, const Message& msg);

// Synchronous twins for the test front end and tools (blocking socket).
int recv_message(int fd, Message& msg, Error& err);
int send_message(int fd, const Message& msg);

}  // namespace vhost_user
}  // namespace qemu
