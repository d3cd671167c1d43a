// The nbd protocol driver (block/nbd.cc, block/nbd-client-*.cc): file
// names and their errors, the whole data path against Debian's qemu-nbd
// (skipped when it is not installed), and what a dying or lying server
// does to us, against a scripted fake server.
#include <catch2/catch.hpp>

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <functional>
#include <optional>
#include <thread>
#include <vector>

#include "block/block-backend.h"
#include "block/block_int.h"
#include "block/nbd.h"
#include "qemu/bswap.h"
#include "qemu/iothread.h"
#include "qemu/sockets.h"
#include "temp-dir.h"

using namespace qemu;
using namespace qemu::nbd;

namespace {

std::unique_ptr<BlockBackend> open_nbd(AioContext& ctx, const std::string& filename, Error& err,
                                       int flags = BDRV_O_RDWR, const std::string& opts = "")
{
    bdrv_init();
    QDict o;
    if (!opts.empty()) {
        REQUIRE(keyval_parse(o, opts, nullptr, err));
    }
    if (filename.empty()) {
        return BlockBackend::open(std::nullopt, o, flags | BDRV_O_PROTOCOL, ctx, err);
    }
    return BlockBackend::open(filename, o, flags | BDRV_O_PROTOCOL, ctx, err);
}

int run(const std::string& cmd)
{
    return system(cmd.c_str());
}

// Debian's qemu-nbd serving a fresh qcow2 image on a Unix socket.
class QemuNbd {
public:
    explicit QemuNbd(const TempDir& dir, const std::string& extra = "")
        : sock_(dir.file("nbd.sock")), pidfile_(dir.file("nbd.pid"))
    {
        std::string img = dir.file("img.qcow2");
        REQUIRE(run("qemu-img create -q -f qcow2 " + img + " 4M") == 0);
        REQUIRE(run("qemu-io -f qcow2 -c 'write -q -P 0x5a 1M 64k' " + img) == 0);
        REQUIRE(run("qemu-nbd --fork --pid-file=" + pidfile_ + " -f qcow2 -k " + sock_ +
                    " -t -x exp " + extra + " " + img) == 0);
        std::ifstream(pidfile_) >> pid_;
        REQUIRE(pid_ > 0);
    }
    ~QemuNbd() { kill(pid_, SIGTERM); }
    const std::string& sock() const { return sock_; }
    std::string uri() const { return "nbd+unix:///exp?socket=" + sock_; }

private:
    std::string sock_, pidfile_;
    pid_t pid_ = 0;
};

// Tests against Debian's qemu-nbd warn and return when it is absent.
bool skip_without_qemu_nbd()
{
    if (access("/usr/bin/qemu-nbd", X_OK) == 0 && access("/usr/bin/qemu-img", X_OK) == 0 &&
        access("/usr/bin/qemu-io", X_OK) == 0) {
        return false;
    }
    WARN("Debian's qemu-nbd is not installed: skipped");
    return true;
}

// A fresh export of Debian's qemu-nbd, opened read-write by our driver
// unless `open` is false.  Without qemu-nbd there is no server (the
// test warns and returns).  Members go in reverse: the backend closes
// (sending DISC) while its context and the server still exist.
struct Served {
    explicit Served(const std::string& extra = "", bool open = true)
    {
        if (skip_without_qemu_nbd()) {
            return;
        }
        server.emplace(dir, extra);
        if (open) {
            blk = open_nbd(ctx, server->uri(), err);
        }
    }
    TempDir dir{"/tmp/nbd-client-test-"};
    std::optional<QemuNbd> server;
    AioContext ctx;
    Error err;
    std::unique_ptr<BlockBackend> blk;
};

// What the fake server says in the handshake.
struct FakeHandshake {
    bool extended = false;  // acknowledge EXTENDED_HEADERS
    bool send_export_info = true;
    uint32_t block_sizes[3] = {0, 0, 0};  // INFO_BLOCK_SIZE when min is not 0
    bool modern = true;  // false: no GO, no structured replies (EXPORT_NAME only)
    uint32_t go_error = 0;  // an NBD_REP_ERR_* answering GO, with a message
};

// A scripted server on a Unix socket: one connection, in a thread, with
// blocking I/O.  It negotiates structured replies (or extended headers)
// and base:allocation (context id 7) for a 1 MiB export, then runs
// `transmission` with the connected fd.
class FakeServer {
public:
    using Script = std::function<void(int fd)>;

    FakeServer(const TempDir& dir, Script transmission, FakeHandshake hs = {})
        : path_(dir.file("fake.sock")), hs_(hs)
    {
        SocketAddress a;
        a.path = path_;
        Error err;
        listen_fd_ = socket_listen(a, err);
        REQUIRE(listen_fd_ >= 0);
        thread_ = std::thread([this, transmission] {
            pollfd p{listen_fd_, POLLIN, 0};
            poll(&p, 1, -1);
            int fd = accept(listen_fd_, nullptr, nullptr);
            if (fd >= 0 && handshake(fd)) {
                transmission(fd);
            }
            if (fd >= 0) {
                close(fd);
            }
        });
    }
    ~FakeServer()
    {
        join();
        close(listen_fd_);
    }
    // Waits until the script has run (or the client never came).
    void join()
    {
        shutdown(listen_fd_, SHUT_RDWR);
        if (thread_.joinable()) {
            thread_.join();
        }
    }
    std::string uri() const { return "nbd+unix:///x?socket=" + path_; }

    static bool read_full(int fd, void* buf, size_t len)
    {
        return len == 0 || recv(fd, buf, len, MSG_WAITALL) == ssize_t(len);
    }
    static void write_full(int fd, const void* buf, size_t len)
    {
        (void)!send(fd, buf, len, MSG_NOSIGNAL);
    }
    struct Req {
        uint16_t type = 0;
        uint64_t cookie = 0, off = 0, len = 0;
    };
    // Reads one request, compact or (extended) 32-byte.
    static bool read_request(int fd, Req& q, bool extended = false)
    {
        uint8_t r[kExtendedRequestSize];
        size_t size = extended ? kExtendedRequestSize : kRequestSize;
        uint32_t magic = extended ? kExtendedRequestMagic : kRequestMagic;
        if (!read_full(fd, r, size) || load_be32(r) != magic) {
            return false;
        }
        q.type = load_be16(r + 6);
        q.cookie = load_be64(r + 8);
        q.off = load_be64(r + 16);
        q.len = extended ? load_be64(r + 24) : load_be32(r + 24);
        return true;
    }
    static void send_ext_chunk(int fd, uint16_t flags, uint16_t type, uint64_t cookie,
                               uint64_t off, const std::vector<uint8_t>& payload)
    {
        uint8_t h[kExtendedReplySize];
        store_be32(h, kExtendedReplyMagic);
        store_be16(h + 4, flags);
        store_be16(h + 6, type);
        store_be64(h + 8, cookie);
        store_be64(h + 16, off);
        store_be64(h + 24, payload.size());
        write_full(fd, h, sizeof(h));
        write_full(fd, payload.data(), payload.size());
    }
    static void send_chunk(int fd, uint16_t flags, uint16_t type, uint64_t cookie,
                           const std::vector<uint8_t>& payload)
    {
        uint8_t h[kStructuredReplySize];
        store_be32(h, kStructuredReplyMagic);
        store_be16(h + 4, flags);
        store_be16(h + 6, type);
        store_be64(h + 8, cookie);
        store_be32(h + 16, uint32_t(payload.size()));
        write_full(fd, h, sizeof(h));
        write_full(fd, payload.data(), payload.size());
    }

private:
    static void reply(int fd, uint32_t opt, uint32_t type, const std::vector<uint8_t>& data)
    {
        uint8_t h[kOptionReplyHeaderSize];
        store_be64(h, kRepMagic);
        store_be32(h + 8, opt);
        store_be32(h + 12, type);
        store_be32(h + 16, uint32_t(data.size()));
        write_full(fd, h, sizeof(h));
        write_full(fd, data.data(), data.size());
    }
    bool handshake(int fd)
    {
        uint8_t hello[18];
        store_be64(hello, kInitPasswd);
        store_be64(hello + 8, kOptsMagic);
        store_be16(hello + 16, kFlagFixedNewstyle | kFlagNoZeroes);
        write_full(fd, hello, sizeof(hello));
        uint8_t cflags[4];
        if (!read_full(fd, cflags, 4)) {
            return false;
        }
        for (;;) {
            uint8_t h[kOptionHeaderSize];
            if (!read_full(fd, h, sizeof(h))) {
                return false;
            }
            uint32_t opt = load_be32(h + 8);
            std::vector<uint8_t> data(load_be32(h + 12));
            if (!read_full(fd, data.data(), data.size())) {
                return false;
            }
            if (opt == kOptExportName) {
                uint8_t exp[10];
                store_be64(exp, 1 << 20);
                store_be16(exp + 8, kFlagHasFlags);
                write_full(fd, exp, sizeof(exp));  // no zeroes: NO_ZEROES was agreed
                return true;
            }
            if (!hs_.modern) {
                reply(fd, opt, kRepErrUnsup, {});
            } else if (opt == kOptStructuredReply ||
                       (opt == kOptExtendedHeaders && hs_.extended)) {
                reply(fd, opt, kRepAck, {});
            } else if (opt == kOptSetMetaContext) {
                std::vector<uint8_t> ctx(4);
                store_be32(ctx.data(), 7);
                const std::string name = kContextBaseAllocation;
                ctx.insert(ctx.end(), name.begin(), name.end());
                reply(fd, opt, kRepMetaContext, ctx);
                reply(fd, opt, kRepAck, {});
            } else if (opt == kOptGo && hs_.go_error) {
                const std::string msg = "not for you";
                reply(fd, opt, hs_.go_error, std::vector<uint8_t>(msg.begin(), msg.end()));
                return false;
            } else if (opt == kOptGo) {
                std::vector<uint8_t> exp(12);
                store_be16(exp.data(), kInfoExport);
                store_be64(exp.data() + 2, 1 << 20);
                store_be16(exp.data() + 10, kFlagHasFlags | kFlagSendFlush);
                if (hs_.send_export_info) {
                    reply(fd, opt, kRepInfo, exp);
                }
                if (hs_.block_sizes[0]) {
                    std::vector<uint8_t> bs(14);
                    store_be16(bs.data(), kInfoBlockSize);
                    for (int i = 0; i < 3; i++) {
                        store_be32(bs.data() + 2 + 4 * i, hs_.block_sizes[i]);
                    }
                    reply(fd, opt, kRepInfo, bs);
                }
                reply(fd, opt, kRepAck, {});
                return true;
            } else {
                reply(fd, opt, kRepErrUnsup, {});
            }
        }
    }

    std::string path_;
    FakeHandshake hs_;
    int listen_fd_ = -1;
    std::thread thread_;
};

}  // namespace

TEST_CASE("nbd file names are checked as QEMU checks them", "[nbd]")
{
    AioContext ctx;
    struct Case {
        const char* name;
        const char* message;
    } cases[] = {
        {"nbd://", "No valid URL specified"},
        {"nbd+unix:///exp", "No valid URL specified"},
        {"nbd://h:x/", "No valid URL specified"},
        {"nbd+unix://host/e?socket=/s", "No valid URL specified"},
        {"nbd://h/e?socket=x", "No valid URL specified"},
        {"nbd+unix:///e?socket=/s&x=1", "No valid URL specified"},
        {"nbd:", "NBD server address missing"},
        {"nbd:localhost", "error parsing address 'localhost'"},
        {"nbd+unix:///e?socket=/nonexistent/sock",
         "Failed to connect to '/nonexistent/sock': No such file or directory"},
    };
    for (const Case& c : cases) {
        Error err;
        INFO(c.name);
        CHECK_FALSE(open_nbd(ctx, c.name, err, 0));
        CHECK(err.message == c.message);
    }
    Error err;
    CHECK_FALSE(open_nbd(ctx, "nbd+foo://x/", err, 0));
    CHECK(err.message == "Unknown protocol 'nbd+foo'");
    CHECK_FALSE(open_nbd(ctx, "", err, 0, "driver=nbd,server.type=unix"));
    CHECK(err.message == "Parameter 'path' is missing");
    CHECK_FALSE(open_nbd(ctx, "", err, 0, "driver=nbd,server.type=inet,server.host=localhost"));
    CHECK(err.message == "Parameter 'port' is missing");
    CHECK_FALSE(open_nbd(ctx, "", err, 0, "driver=nbd"));
    CHECK(err.message == "NBD server address missing");
}

TEST_CASE("nbd reads, writes, zeroes and maps an export of Debian's qemu-nbd", "[nbd]")
{
    Served s;
    if (!s.server) {
        return;
    }
    INFO(s.err.message);
    REQUIRE(s.blk);
    AioContext& ctx = s.ctx;
    auto& blk = s.blk;
    BlockDriverState* bs = blk->bs();
    CHECK(bs->drv().name() == "nbd");
    CHECK(bs->filename() == s.server->uri());
    CHECK(blk->getlength() == 4 << 20);
    CHECK(bs->limits().request_alignment == 1);
    CHECK(bs->limits().max_transfer == 32 << 20);

    std::vector<uint8_t> buf(128 << 10, 0xee);
    REQUIRE(blk->pread(1 << 20, buf.size(), buf.data()) == 0);
    CHECK(std::all_of(buf.begin(), buf.begin() + (64 << 10), [](uint8_t b) { return b == 0x5a; }));
    CHECK(std::all_of(buf.begin() + (64 << 10), buf.end(), [](uint8_t b) { return b == 0; }));

    std::vector<uint8_t> pattern(70000);
    for (size_t i = 0; i < pattern.size(); i++) {
        pattern[i] = uint8_t(i * 7);
    }
    REQUIRE(blk->pwrite(3 << 20, pattern.size(), pattern.data(), BDRV_REQ_FUA) == 0);
    REQUIRE(blk->flush() == 0);
    std::vector<uint8_t> back(pattern.size());
    REQUIRE(blk->pread(3 << 20, back.size(), back.data()) == 0);
    CHECK(back == pattern);

    BlockStatus st;
    REQUIRE(run_sync(ctx, bdrv_co_block_status(bs, true, 0, 4 << 20, st)) == 0);
    CHECK(st.pnum == 1 << 20);
    CHECK((st.flags & (BDRV_BLOCK_DATA | BDRV_BLOCK_ZERO)) == BDRV_BLOCK_ZERO);
    REQUIRE(run_sync(ctx, bdrv_co_block_status(bs, true, 1 << 20, 3 << 20, st)) == 0);
    CHECK(st.pnum == 64 << 10);
    CHECK((st.flags & (BDRV_BLOCK_DATA | BDRV_BLOCK_ZERO)) == BDRV_BLOCK_DATA);

    int r = run_sync(ctx, blk->co_pwrite_zeroes(1 << 20, 64 << 10, BDRV_REQ_MAY_UNMAP));
    REQUIRE(r == 0);
    REQUIRE(blk->pread(1 << 20, 4096, buf.data()) == 0);
    CHECK(std::all_of(buf.begin(), buf.begin() + 4096, [](uint8_t b) { return b == 0; }));
    r = run_sync(ctx, blk->co_pdiscard(3 << 20, 64 << 10));
    CHECK(r == 0);
    blk.reset();
}

TEST_CASE("nbd keeps many requests in flight and matches each reply to its request", "[nbd]")
{
    Served s;
    if (!s.server) {
        return;
    }
    REQUIRE(s.blk);
    AioContext& ctx = s.ctx;
    auto& blk = s.blk;
    constexpr int kN = 40;  // more than the 16 slots: some wait for one
    std::vector<std::vector<uint8_t>> data(kN, std::vector<uint8_t>(8192));
    std::vector<std::vector<uint8_t>> got(kN, std::vector<uint8_t>(8192));
    int failures = 0;
    int finished = 0;
    auto one = [&](int i) -> Task<void> {
        std::fill(data[i].begin(), data[i].end(), uint8_t(i + 1));
        IOVector w(data[i].data(), data[i].size());
        int r = co_await blk->co_pwritev(uint64_t(i) * 8192, 8192, w);
        failures += r < 0;
        IOVector rd(got[i].data(), got[i].size());
        r = co_await blk->co_preadv(uint64_t(i) * 8192, 8192, rd);
        failures += r < 0;
        finished++;
    };
    for (int i = 0; i < kN; i++) {
        co_spawn(one(i));
    }
    while (finished < kN) {
        ctx.poll(true);
    }
    CHECK(failures == 0);
    CHECK(got == data);
    blk.reset();
}

TEST_CASE("nbd names a missing export as QEMU does and refuses writes to a read-only one",
          "[nbd]")
{
    Served s("-r -e 4", false);
    if (!s.server) {
        return;
    }
    AioContext& ctx = s.ctx;
    Error& err = s.err;
    const QemuNbd& server = *s.server;
    CHECK_FALSE(open_nbd(ctx, "nbd+unix:///nope?socket=" + server.sock(), err, 0));
    CHECK(err.pretty() == "Requested export not available\n"
                          "server reported: export 'nope' not present");
    err.clear();
    CHECK_FALSE(open_nbd(ctx, server.uri(), err, BDRV_O_RDWR));
    CHECK(err.message == "NBD export is read-only");
    err.clear();
    auto ro = open_nbd(ctx, "nbd:unix:" + server.sock() + ":exportname=exp", err, 0);
    INFO(err.message);
    REQUIRE(ro);
    CHECK(ro->bs()->filename() == server.uri());
    ro.reset();
}

TEST_CASE("nbd fails pending and later requests with EIO when the server goes away", "[nbd]")
{
    TempDir dir("/tmp/nbd-client-test-");
    // Reads the first request and hangs up without answering it.
    FakeServer server(dir, [](int fd) {
        FakeServer::Req q;
        FakeServer::read_request(fd, q);
    });
    AioContext ctx;
    Error err;
    auto blk = open_nbd(ctx, server.uri(), err, 0);
    INFO(err.message);
    REQUIRE(blk);
    std::vector<uint8_t> buf(4096);
    CHECK(blk->pread(0, 4096, buf.data()) == -EIO);
    CHECK(blk->pread(4096, 4096, buf.data()) == -EIO);
    CHECK(blk->flush() == -EIO);
    blk.reset();
}

TEST_CASE("nbd drops a server that answers outside the request", "[nbd]")
{
    TempDir dir("/tmp/nbd-client-test-");
    FakeServer server(dir, [](int fd) {
        FakeServer::Req q;
        if (!FakeServer::read_request(fd, q)) {
            return;
        }
        // A data chunk that claims to lie past the end of the read.
        std::vector<uint8_t> chunk(8 + 512);
        store_be64(chunk.data(), q.off + q.len);
        FakeServer::send_chunk(fd, kReplyFlagDone, kReplyTypeOffsetData, q.cookie, chunk);
        FakeServer::read_request(fd, q);  // until we hang up
    });
    AioContext ctx;
    Error err;
    auto blk = open_nbd(ctx, server.uri(), err, 0);
    REQUIRE(blk);
    std::vector<uint8_t> buf(4096);
    CHECK(blk->pread(0, 4096, buf.data()) == -EIO);
    CHECK(blk->pread(0, 4096, buf.data()) == -EIO);
    blk.reset();
}

TEST_CASE("nbd passes the server's errors and its hole chunks through", "[nbd]")
{
    TempDir dir("/tmp/nbd-client-test-");
    FakeServer server(dir, [](int fd) {
        FakeServer::Req q;
        while (FakeServer::read_request(fd, q) && q.type != kCmdDisc) {
            if (q.type == kCmdWrite) {
                std::vector<uint8_t> payload(q.len);
                FakeServer::read_full(fd, payload.data(), q.len);
                std::vector<uint8_t> e(6 + 3);
                store_be32(e.data(), kEnospc);
                store_be16(e.data() + 4, 3);
                memcpy(e.data() + 6, "no!", 3);
                FakeServer::send_chunk(fd, kReplyFlagDone, kReplyTypeError, q.cookie, e);
                continue;
            }
            // Reads: the first half a hole, the second half data of 0x11.
            std::vector<uint8_t> hole(12);
            store_be64(hole.data(), q.off);
            store_be32(hole.data() + 8, q.len / 2);
            FakeServer::send_chunk(fd, 0, kReplyTypeOffsetHole, q.cookie, hole);
            std::vector<uint8_t> data(8 + q.len / 2, 0x11);
            store_be64(data.data(), q.off + q.len / 2);
            FakeServer::send_chunk(fd, kReplyFlagDone, kReplyTypeOffsetData, q.cookie, data);
        }
    });
    AioContext ctx;
    Error err;
    auto blk = open_nbd(ctx, server.uri(), err);
    REQUIRE(blk);
    std::vector<uint8_t> buf(4096, 0xee);
    REQUIRE(blk->pread(0, 4096, buf.data()) == 0);
    CHECK(std::all_of(buf.begin(), buf.begin() + 2048, [](uint8_t b) { return b == 0; }));
    CHECK(std::all_of(buf.begin() + 2048, buf.end(), [](uint8_t b) { return b == 0x11; }));
    CHECK(blk->pwrite(0, 4096, buf.data()) == -ENOSPC);
    blk.reset();
}

TEST_CASE("nbd speaks extended headers: 64-bit requests, extended chunks and status", "[nbd]")
{
    TempDir dir("/tmp/nbd-client-test-");
    FakeHandshake hs;
    hs.extended = true;
    FakeServer server(dir, [](int fd) {
        FakeServer::Req q;
        while (FakeServer::read_request(fd, q, true) && q.type != kCmdDisc) {
            if (q.type == kCmdBlockStatus) {
                // One extent of 64 KiB, a hole that reads as zeroes.
                std::vector<uint8_t> st(8 + 16);
                store_be32(st.data(), 7);
                store_be32(st.data() + 4, 1);
                store_be64(st.data() + 8, 64 << 10);
                store_be64(st.data() + 16, kStateHole | kStateZero);
                FakeServer::send_ext_chunk(fd, kReplyFlagDone, kReplyTypeBlockStatusExt, q.cookie,
                                           q.off, st);
            } else {
                std::vector<uint8_t> data(8 + q.len, 0x3c);
                store_be64(data.data(), q.off);
                FakeServer::send_ext_chunk(fd, kReplyFlagDone, kReplyTypeOffsetData, q.cookie, q.off,
                                           data);
            }
        }
    }, hs);
    AioContext ctx;
    Error err;
    auto blk = open_nbd(ctx, server.uri(), err, 0);
    INFO(err.message);
    REQUIRE(blk);
    BlockStatus st;
    REQUIRE(run_sync(ctx, bdrv_co_block_status(blk->bs(), true, 0, 1 << 20, st)) == 0);
    CHECK(st.pnum == 64 << 10);
    CHECK((st.flags & (BDRV_BLOCK_DATA | BDRV_BLOCK_ZERO)) == BDRV_BLOCK_ZERO);
    std::vector<uint8_t> buf(8192);
    REQUIRE(blk->pread(4096, buf.size(), buf.data()) == 0);
    CHECK(std::all_of(buf.begin(), buf.end(), [](uint8_t b) { return b == 0x3c; }));
    blk.reset();
}

TEST_CASE("nbd refuses a server whose handshake lies", "[nbd]")
{
    struct Case {
        FakeHandshake hs;
        const char* message;
    } cases[] = {
        {{false, false, {0, 0, 0}, true}, "broken server omitted NBD_INFO_EXPORT"},
        {{false, true, {3, 4096, 1 << 20}, true},
         "server minimum block size 3 is not a power of two"},
        {{false, true, {512, 256, 1 << 20}, true},
         "server preferred block size 256 is smaller than minimum block size 512"},
        {{false, true, {4096, 4096, 1000}, true},
         "server maximum block size 1000 is not a multiple of minimum block size 4096"},
    };
    for (const Case& c : cases) {
        TempDir dir("/tmp/nbd-client-test-");
        FakeServer server(dir, [](int) {}, c.hs);
        AioContext ctx;
        Error err;
        CHECK_FALSE(open_nbd(ctx, server.uri(), err, 0));
        CHECK(err.message == c.message);
    }
    TempDir dir("/tmp/nbd-client-test-");
    FakeHandshake denied;
    denied.go_error = kRepErrPolicy;
    FakeServer server(dir, [](int) {}, denied);
    AioContext ctx;
    Error err;
    CHECK_FALSE(open_nbd(ctx, server.uri(), err, 0));
    CHECK(err.pretty() == "Denied by server for option 7 (go)\nserver reported: not for you");
}

TEST_CASE("nbd falls back to EXPORT_NAME and simple replies with an old server", "[nbd]")
{
    TempDir dir("/tmp/nbd-client-test-");
    FakeHandshake hs;
    hs.modern = false;
    bool disconnected = false;  // written by the server thread before join()
    FakeServer server(dir, [&disconnected](int fd) {
        FakeServer::Req q;
        while (FakeServer::read_request(fd, q)) {
            if (q.type == kCmdDisc) {
                disconnected = true;
                break;
            }
            uint8_t r[kSimpleReplySize];
            store_be32(r, kSimpleReplyMagic);
            store_be32(r + 4, 0);
            store_be64(r + 8, q.cookie);
            std::vector<uint8_t> data(q.len, uint8_t(q.off >> 12));
            FakeServer::write_full(fd, r, sizeof(r));
            FakeServer::write_full(fd, data.data(), data.size());
        }
    }, hs);
    AioContext ctx;
    Error err;
    auto blk = open_nbd(ctx, server.uri(), err, 0);
    INFO(err.message);
    REQUIRE(blk);
    CHECK(blk->getlength() == 1 << 20);
    // Without a minimum block or block status, QEMU's guess: 512.
    CHECK(blk->bs()->limits().request_alignment == 512);
    std::vector<uint8_t> buf(4096);
    REQUIRE(blk->pread(8192, buf.size(), buf.data()) == 0);
    CHECK(std::all_of(buf.begin(), buf.end(), [](uint8_t b) { return b == 2; }));
    BlockStatus st;
    REQUIRE(run_sync(ctx, bdrv_co_block_status(blk->bs(), true, 0, 1 << 20, st)) == 0);
    CHECK(st.pnum == 1 << 20);
    CHECK((st.flags & BDRV_BLOCK_DATA) != 0);
    blk.reset();
    server.join();
    CHECK(disconnected);  // closing the node said goodbye with NBD_CMD_DISC
}

TEST_CASE("nbd: a drained nbd node moves to an iothread and back", "[nbd]")
{
    Served s;
    if (!s.server) {
        return;
    }
    REQUIRE(s.blk);
    AioContext& ctx = s.ctx;
    Error& err = s.err;
    auto& blk = s.blk;
    IOThread io("io0");
    BlockDriverState* bs = blk->bs();
    std::vector<uint8_t> buf(4096);
    REQUIRE(blk->pread(1 << 20, buf.size(), buf.data()) == 0);

    REQUIRE(run_sync(ctx, bdrv_co_change_aio_context(bs, io.ctx(), err)) == 0);
    REQUIRE(&bs->ctx() == &io.ctx());
    std::vector<uint8_t> pattern(8192, 0x6b);
    int r = io.run<int>([&]() -> Task<int> {
        IOVector w(pattern.data(), pattern.size());
        int ret = co_await blk->co_pwritev(2 << 20, pattern.size(), w);
        if (ret < 0) {
            co_return ret;
        }
        IOVector rd(buf.data(), buf.size());
        co_return co_await blk->co_preadv(1 << 20, buf.size(), rd);
    });
    REQUIRE(r == 0);
    CHECK(std::all_of(buf.begin(), buf.end(), [](uint8_t b) { return b == 0x5a; }));

    REQUIRE(run_sync(ctx, co_run_in<int>(io.ctx(), [&]() {
                return bdrv_co_change_aio_context(bs, ctx, err);
            })) == 0);
    std::vector<uint8_t> back(pattern.size());
    REQUIRE(blk->pread(2 << 20, back.size(), back.data()) == 0);
    CHECK(back == pattern);
    run_sync(ctx, blk->co_close());
}
