// Sockets: address options, listen/connect, and coroutine stream I/O on
// the AioContext (include/qemu/sockets.h).
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "qemu/sockets.h"
#include "temp-dir.h"

using namespace qemu;

namespace {

SocketAddress unix_addr(const std::string& path)
{
    SocketAddress a;
    a.type = SocketAddress::Type::Unix;
    a.path = path;
    return a;
}

// A listener, a connected client and the server's end of the connection.
struct Pair {
    int listener = -1, client = -1, server = -1;
    ~Pair()
    {
        for (int fd : {listener, client, server}) {
            if (fd >= 0) {
                close(fd);
            }
        }
    }
};

void connect_pair(AioContext& ctx, const SocketAddress& addr, Pair& p)
{
    Error err;
    p.listener = socket_listen(addr, err);
    REQUIRE(p.listener >= 0);
    SocketAddress target = addr;
    if (addr.type == SocketAddress::Type::Inet) {
        sockaddr_in sin{};
        socklen_t len = sizeof(sin);
        REQUIRE(getsockname(p.listener, reinterpret_cast<sockaddr*>(&sin), &len) == 0);
        target.port = std::to_string(ntohs(sin.sin_port));
    }
    p.client = socket_connect(target, err);
    REQUIRE(p.client >= 0);
    p.server = run_sync(ctx, co_accept(ctx, p.listener));
    REQUIRE(p.server >= 0);
}

}  // namespace

TEST_CASE("socket addresses are taken from flat options as QEMU's", "[sockets]")
{
    Error err;
    SocketAddress a;
    QDict o;
    o.set("addr.type", "inet");
    o.set("addr.host", "127.0.0.1");
    o.set("addr.port", "10809");
    o.set("addr.ipv4", "on");
    o.set("x", "1");
    REQUIRE(socket_address_take(o, "addr.", a, err));
    CHECK(a.type == SocketAddress::Type::Inet);
    CHECK(a.to_string() == "127.0.0.1:10809");
    CHECK(o.size() == 1);  // the caller's key stays

    QDict missing;
    missing.set("addr.type", "unix");
    CHECK_FALSE(socket_address_take(missing, "addr.", a, err));
    CHECK(err.message == "Parameter 'addr.path' is missing");

    QDict bad;
    bad.set("server.type", "xyz");
    CHECK_FALSE(socket_address_take(bad, "server.", a, err));
    CHECK(err.message == "Parameter 'server.type' does not accept value 'xyz'");

    QDict badbool;
    badbool.set("addr.type", "inet");
    badbool.set("addr.host", "h");
    badbool.set("addr.port", "1");
    badbool.set("addr.numeric", "maybe");
    CHECK_FALSE(socket_address_take(badbool, "addr.", a, err));
    CHECK(err.message == "Parameter 'addr.numeric' expects 'on' or 'off'");
}

TEST_CASE("a Unix stream carries a megabyte both ways in pieces", "[sockets]")
{
    AioContext ctx;
    TempDir dir("/tmp/qz-sock-");
    Pair p;
    connect_pair(ctx, unix_addr(dir.file("s")), p);

    std::vector<char> out(1 << 20), in(1 << 20);
    for (size_t i = 0; i < out.size(); i++) {
        out[i] = char(i * 7 + 3);
    }
    // Both ends run at once: the socket buffer is far smaller than 1 MiB.
    bool sent = false;
    int send_ret = -1;
    co_spawn([](AioContext& c, int fd, std::vector<char>& buf, int& ret, bool& done) -> Task<void> {
        iovec iov[3] = {{buf.data(), 5}, {buf.data() + 5, 0}, {buf.data() + 5, buf.size() - 5}};
        ret = co_await co_send_full(c, fd, iov, 3);
        done = true;
    }(ctx, p.client, out, send_ret, sent));
    ssize_t got = run_sync(ctx, co_recv_full(ctx, p.server, in.data(), in.size()));
    CHECK(got == ssize_t(in.size()));
    while (!sent) {
        ctx.poll(true);
    }
    CHECK(send_ret == 0);
    CHECK(in == out);
}

TEST_CASE("end of stream and shutdown wake a reader", "[sockets]")
{
    AioContext ctx;
    TempDir dir("/tmp/qz-sock-");
    Pair p;
    connect_pair(ctx, unix_addr(dir.file("s")), p);

    // The peer sends 3 bytes and closes: a read of 8 returns 3, then 0.
    REQUIRE(write(p.client, "abc", 3) == 3);
    close(p.client);
    p.client = -1;
    char buf[8];
    CHECK(run_sync(ctx, co_recv_full(ctx, p.server, buf, 8)) == 3);
    CHECK(run_sync(ctx, co_recv_full(ctx, p.server, buf, 8)) == 0);
    // Writing to a closed peer is an error, not a SIGPIPE.
    int ret = 0;
    for (int i = 0; i < 4 && ret == 0; i++) {
        ret = run_sync(ctx, co_send_full(ctx, p.server, buf, 8));
    }
    CHECK(ret == -EPIPE);

    // A reader blocked on a live connection returns once its own end is
    // shut down.
    Pair q;
    connect_pair(ctx, unix_addr(dir.file("t")), q);
    bool done = false;
    ssize_t result = -1;
    co_spawn([](AioContext& c, int fd, ssize_t& r, bool& d) -> Task<void> {
        char b[4];
        r = co_await co_recv_full(c, fd, b, 4);
        d = true;
    }(ctx, q.server, result, done));
    ctx.poll(false);
    CHECK_FALSE(done);
    shutdown(q.server, SHUT_RDWR);
    while (!done) {
        ctx.poll(true);
    }
    CHECK(result == 0);
}

TEST_CASE("TCP on the loopback, and a listener shut down under co_accept", "[sockets]")
{
    AioContext ctx;
    SocketAddress a;
    a.type = SocketAddress::Type::Inet;
    a.host = "127.0.0.1";
    a.port = "0";
    Pair p;
    connect_pair(ctx, a, p);
    char buf[2] = {};
    REQUIRE(run_sync(ctx, co_send_full(ctx, p.client, "hi", 2)) == 0);
    CHECK(run_sync(ctx, co_recv_full(ctx, p.server, buf, 2)) == 2);
    CHECK(memcmp(buf, "hi", 2) == 0);

    bool done = false;
    int result = 0;
    co_spawn([](AioContext& c, int fd, int& r, bool& d) -> Task<void> {
        r = co_await co_accept(c, fd);
        d = true;
    }(ctx, p.listener, result, done));
    ctx.poll(false);
    CHECK_FALSE(done);
    shutdown(p.listener, SHUT_RDWR);
    while (!done) {
        ctx.poll(true);
    }
    CHECK(result == -EINVAL);
}

TEST_CASE("connecting to nothing is one clear error", "[sockets]")
{
    TempDir dir("/tmp/qz-sock-");
    Error err;
    CHECK(socket_connect(unix_addr(dir.file("none")), err) == -ENOENT);
    CHECK(err.message == "Failed to connect to '" + dir.file("none") + "': No such file or directory");
}
