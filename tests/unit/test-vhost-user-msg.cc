// vhost-user message framing and validation
// (export/vhost-user-blk/vhost-user-proto.h).
#include <catch2/catch.hpp>

#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "export/vhost-user-blk/vhost-user-proto.h"

using namespace qemu;
using namespace qemu::vhost_user;

namespace {

Message msg_of(uint32_t request, std::vector<uint8_t> payload, uint32_t flags = kVersion)
{
    Message m;
    m.request = request;
    m.flags = flags;
    m.payload = std::move(payload);
    return m;
}

std::vector<uint8_t> u64_payload(uint64_t v)
{
    std::vector<uint8_t> p(8);
    std::memcpy(p.data(), &v, 8);
    return p;
}

UniqueFd memfd()
{
    return UniqueFd(memfd_create("test", MFD_CLOEXEC));
}

bool accepted(const Message& m)
{
    Error err;
    bool ok = check(m, err);
    CHECK(ok == !err.is_set());
    return ok;
}

struct SocketPair {
    int fd[2];
    SocketPair() { REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fd) == 0); }
    ~SocketPair()
    {
        close(fd[0]);
        if (fd[1] >= 0) {
            close(fd[1]);
        }
    }
};

// Writes raw bytes (a header and what follows) to the socket.
void send_raw(int fd, uint32_t request, uint32_t flags, uint32_t size, const void* rest = nullptr,
              size_t rest_len = 0)
{
    uint8_t hdr[12];
    std::memcpy(hdr, &request, 4);
    std::memcpy(hdr + 4, &flags, 4);
    std::memcpy(hdr + 8, &size, 4);
    REQUIRE(write(fd, hdr, 12) == 12);
    if (rest_len) {
        REQUIRE(write(fd, rest, rest_len) == ssize_t(rest_len));
    }
}

}  // namespace

TEST_CASE("vhost-user check: header flags and unknown requests", "[vhost-user]")
{
    CHECK(accepted(msg_of(GET_FEATURES, {})));
    CHECK_FALSE(accepted(msg_of(GET_FEATURES, {}, 0)));                      // version 0
    CHECK_FALSE(accepted(msg_of(GET_FEATURES, {}, 2)));                      // version 2
    CHECK_FALSE(accepted(msg_of(GET_FEATURES, {}, kVersion | kFlagReply)));  // a reply
    CHECK(accepted(msg_of(SET_OWNER, {}, kVersion | kFlagNeedReply)));
    CHECK_FALSE(accepted(msg_of(99, {})));
    CHECK_FALSE(accepted(msg_of(0, {})));
    Error err;
    check(msg_of(99, {}), err);
    CHECK(err.message == "vhost-user: unknown request 99");
}

TEST_CASE("vhost-user check: payload sizes per request", "[vhost-user]")
{
    CHECK(accepted(msg_of(SET_FEATURES, u64_payload(1))));
    CHECK_FALSE(accepted(msg_of(SET_FEATURES, {})));
    CHECK_FALSE(accepted(msg_of(SET_FEATURES, std::vector<uint8_t>(9))));
    CHECK_FALSE(accepted(msg_of(SET_OWNER, std::vector<uint8_t>(8))));
    CHECK(accepted(msg_of(SET_VRING_NUM, std::vector<uint8_t>(8))));
    CHECK_FALSE(accepted(msg_of(SET_VRING_NUM, std::vector<uint8_t>(4))));
    CHECK(accepted(msg_of(SET_VRING_ADDR, std::vector<uint8_t>(40))));
    CHECK_FALSE(accepted(msg_of(SET_VRING_ADDR, std::vector<uint8_t>(32))));

    // Config: the header's size must be what follows it, 1..256 bytes.
    auto config = [](uint32_t offset, uint32_t size, size_t data) {
        ConfigHeader h = {offset, size, 0};
        std::vector<uint8_t> p(sizeof(h) + data);
        std::memcpy(p.data(), &h, sizeof(h));
        return p;
    };
    CHECK(accepted(msg_of(GET_CONFIG, config(0, 60, 60))));
    CHECK_FALSE(accepted(msg_of(GET_CONFIG, config(0, 60, 59))));
    CHECK_FALSE(accepted(msg_of(GET_CONFIG, config(0, 0, 0))));
    CHECK_FALSE(accepted(msg_of(SET_CONFIG, config(0, 257, 257))));
    CHECK(accepted(msg_of(SET_CONFIG, config(32, 1, 1))));
}

TEST_CASE("vhost-user check: memory table regions and fds", "[vhost-user]")
{
    auto table = [](uint32_t n, size_t regions) {
        std::vector<uint8_t> p(8 + regions * sizeof(MemRegion));
        std::memcpy(p.data(), &n, 4);
        return p;
    };
    Message m = msg_of(SET_MEM_TABLE, table(2, 2));
    m.fds.push_back(memfd());
    CHECK_FALSE(accepted(m));  // 2 regions, 1 fd
    m.fds.push_back(memfd());
    CHECK(accepted(m));
    m.fds.push_back(memfd());
    CHECK_FALSE(accepted(m));  // 3 fds

    Message bad = msg_of(SET_MEM_TABLE, table(3, 2));  // count and size disagree
    CHECK_FALSE(accepted(bad));
    CHECK_FALSE(accepted(msg_of(SET_MEM_TABLE, table(0, 0))));
    CHECK_FALSE(accepted(msg_of(SET_MEM_TABLE, table(9, 9))));  // over 264 bytes anyway
}

TEST_CASE("vhost-user check: vring fd messages", "[vhost-user]")
{
    Message kick = msg_of(SET_VRING_KICK, u64_payload(0));
    CHECK_FALSE(accepted(kick));  // no fd and no "no fd" bit
    kick.fds.emplace_back(eventfd(0, EFD_CLOEXEC));
    CHECK(accepted(kick));
    Message nofd = msg_of(SET_VRING_CALL, u64_payload(kVringNoFd | 1));
    CHECK(accepted(nofd));
    nofd.fds.emplace_back(eventfd(0, EFD_CLOEXEC));
    CHECK_FALSE(accepted(nofd));  // "no fd", but one came
    Message owner = msg_of(SET_OWNER, {});
    owner.fds.push_back(memfd());
    CHECK_FALSE(accepted(owner));
}

TEST_CASE("vhost-user is_eventfd", "[vhost-user]")
{
    UniqueFd e(eventfd(0, EFD_CLOEXEC));
    UniqueFd m = memfd();
    CHECK(is_eventfd(e.get()));
    CHECK_FALSE(is_eventfd(m.get()));
    CHECK_FALSE(is_eventfd(-1));
}

TEST_CASE("vhost-user framing: a message and its fds round-trip", "[vhost-user]")
{
    AioContext ctx;
    SocketPair sp;
    Message m = msg_of(SET_MEM_TABLE, std::vector<uint8_t>(8 + 2 * sizeof(MemRegion), 7));
    m.fds.push_back(memfd());
    m.fds.push_back(memfd());
    REQUIRE(send_message(sp.fd[1], m) == 0);
    Message got;
    Error err;
    int r = run_sync(ctx, co_recv_message(ctx, sp.fd[0], got, err));
    REQUIRE(r == 1);
    CHECK(got.request == SET_MEM_TABLE);
    CHECK(got.flags == kVersion);
    CHECK(got.payload == m.payload);
    REQUIRE(got.fds.size() == 2);
    CHECK(got.fds[0].get() != m.fds[0].get());

    // And back through the coroutine sender and the blocking receiver.
    Message reply = make_u64_reply(got, 0x1234);
    REQUIRE(run_sync(ctx, co_send_message(ctx, sp.fd[0], reply)) == 0);
    Message back;
    REQUIRE(recv_message(sp.fd[1], back, err) == 1);
    CHECK(back.request == SET_MEM_TABLE);
    CHECK(back.flags == (kVersion | kFlagReply));
    CHECK(back.u64() == 0x1234);
    CHECK(back.fds.empty());
}

TEST_CASE("vhost-user framing: end of stream, cut messages, oversize payloads", "[vhost-user]")
{
    AioContext ctx;
    Message got;
    Error err;
    SECTION("clean end before a header")
    {
        SocketPair sp;
        close(sp.fd[1]);
        sp.fd[1] = -1;
        CHECK(run_sync(ctx, co_recv_message(ctx, sp.fd[0], got, err)) == 0);
        CHECK_FALSE(err.is_set());
    }
    SECTION("cut in the header")
    {
        SocketPair sp;
        REQUIRE(write(sp.fd[1], "\1\0\0\0\1", 5) == 5);
        close(sp.fd[1]);
        sp.fd[1] = -1;
        CHECK(run_sync(ctx, co_recv_message(ctx, sp.fd[0], got, err)) == -EPROTO);
        CHECK(err.message == "vhost-user: connection closed in the middle of a message");
    }
    SECTION("cut in the payload")
    {
        SocketPair sp;
        send_raw(sp.fd[1], SET_FEATURES, kVersion, 8, "abcd", 4);
        close(sp.fd[1]);
        sp.fd[1] = -1;
        CHECK(run_sync(ctx, co_recv_message(ctx, sp.fd[0], got, err)) == -EPROTO);
    }
    SECTION("a payload over the maximum is refused unread")
    {
        SocketPair sp;
        send_raw(sp.fd[1], SET_MEM_TABLE, kVersion, kMaxPayload + 1);
        CHECK(run_sync(ctx, co_recv_message(ctx, sp.fd[0], got, err)) == -EPROTO);
        CHECK(err.message ==
              "vhost-user message SET_MEM_TABLE: payload of 269 bytes exceeds the maximum of 268");
    }
    SECTION("more fds than a message may carry")
    {
        SocketPair sp;
        Message m = msg_of(SET_OWNER, {});
        for (unsigned i = 0; i < kMaxFds + 1; i++) {
            m.fds.push_back(memfd());
        }
        REQUIRE(send_message(sp.fd[1], m) == 0);
        CHECK(run_sync(ctx, co_recv_message(ctx, sp.fd[0], got, err)) == -EPROTO);
        CHECK(err.message == "vhost-user: a message with more than 8 file descriptors");
    }
}
