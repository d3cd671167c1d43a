// The NBD server (include/export/nbd-server.h) driven by a raw-socket
// client written from the protocol document: negotiation, every command
// in simple, structured and extended modes, QEMU's errors, and hostile
// clients being dropped while others keep working.
#include <catch2/catch.hpp>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <exception>
#include <set>
#include <thread>

#include "block/nbd.h"
#include "export/nbd-server.h"
#include "graph-test-util.h"
#include "qcow2-test-util.h"
#include "qemu/bswap.h"
#include "qemu/iothread.h"
#include "temp-dir.h"

using namespace qemu;

namespace {

// A blocking client; every helper fails the test on a short read.
struct RawClient {
    int fd = -1;
    bool structured = false, extended = false;

    explicit RawClient(const std::string& path)
    {
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
        REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
    }
    ~RawClient() { close(fd); }

    void send(const void* p, size_t n) { REQUIRE(::send(fd, p, n, MSG_NOSIGNAL) == ssize_t(n)); }
    // false at end of stream.
    bool try_recv(void* p, size_t n)
    {
        size_t got = 0;
        while (got < n) {
            ssize_t r = ::recv(fd, static_cast<char*>(p) + got, n - got, 0);
            if (r <= 0) {
                return false;
            }
            got += size_t(r);
        }
        return true;
    }
    std::vector<uint8_t> recv(size_t n)
    {
        std::vector<uint8_t> v(n);
        REQUIRE(try_recv(v.data(), n));
        return v;
    }
    bool at_eof()
    {
        char c;
        return ::recv(fd, &c, 1, 0) == 0;
    }

    void hello(uint32_t flags = nbd::kFlagCFixedNewstyle | nbd::kFlagCNoZeroes)
    {
        std::vector<uint8_t> h = recv(18);
        REQUIRE(load_be64(h.data()) == nbd::kInitPasswd);
        REQUIRE(load_be64(h.data() + 8) == nbd::kOptsMagic);
        REQUIRE(load_be16(h.data() + 16) == 3);
        uint8_t f[4];
        store_be32(f, flags);
        send(f, 4);
    }
    void option(uint32_t opt, const std::vector<uint8_t>& data = {})
    {
        uint8_t h[16];
        store_be64(h, nbd::kOptsMagic);
        store_be32(h + 8, opt);
        store_be32(h + 12, uint32_t(data.size()));
        send(h, 16);
        if (!data.empty()) {
            send(data.data(), data.size());
        }
    }
    struct Rep {
        uint32_t opt, type;
        std::vector<uint8_t> data;
        std::string text() const { return std::string(data.begin(), data.end()); }
    };
    Rep reply()
    {
        std::vector<uint8_t> h = recv(20);
        REQUIRE(load_be64(h.data()) == nbd::kRepMagic);
        Rep r{load_be32(h.data() + 8), load_be32(h.data() + 12), {}};
        r.data = recv(load_be32(h.data() + 16));
        return r;
    }
    void ack(uint32_t opt)
    {
        option(opt);
        Rep r = reply();
        REQUIRE(r.type == nbd::kRepAck);
        structured |= opt == nbd::kOptStructuredReply;
        extended |= opt == nbd::kOptExtendedHeaders;
    }
    static std::vector<uint8_t> info_data(const std::string& name, std::vector<uint16_t> reqs)
    {
        std::vector<uint8_t> d(4 + name.size() + 2 + 2 * reqs.size());
        store_be32(d.data(), uint32_t(name.size()));
        memcpy(d.data() + 4, name.data(), name.size());
        store_be16(d.data() + 4 + name.size(), uint16_t(reqs.size()));
        for (size_t i = 0; i < reqs.size(); i++) {
            store_be16(d.data() + 6 + name.size() + 2 * i, reqs[i]);
        }
        return d;
    }
    // NBD_OPT_GO; returns the size and transmission flags.
    std::pair<uint64_t, uint16_t> go(const std::string& name, std::vector<uint16_t> reqs = {})
    {
        option(nbd::kOptGo, info_data(name, reqs));
        std::pair<uint64_t, uint16_t> out{0, 0};
        for (;;) {
            Rep r = reply();
            if (r.type == nbd::kRepAck) {
                return out;
            }
            REQUIRE(r.type == nbd::kRepInfo);
            if (load_be16(r.data.data()) == nbd::kInfoExport) {
                out = {load_be64(r.data.data() + 2), load_be16(r.data.data() + 10)};
            }
        }
    }
    std::vector<uint8_t> meta_data(const std::string& name, std::vector<std::string> queries)
    {
        std::vector<uint8_t> d(8 + name.size());
        store_be32(d.data(), uint32_t(name.size()));
        memcpy(d.data() + 4, name.data(), name.size());
        store_be32(d.data() + 4 + name.size(), uint32_t(queries.size()));
        for (const std::string& q : queries) {
            uint8_t l[4];
            store_be32(l, uint32_t(q.size()));
            d.insert(d.end(), l, l + 4);
            d.insert(d.end(), q.begin(), q.end());
        }
        return d;
    }

    void request(uint16_t type, uint64_t from, uint64_t len, uint16_t flags = 0,
                 uint64_t cookie = 7, const std::vector<uint8_t>& payload = {})
    {
        uint8_t h[32];
        store_be16(h + 4, flags);
        store_be16(h + 6, type);
        store_be64(h + 8, cookie);
        store_be64(h + 16, from);
        if (extended) {
            store_be32(h, nbd::kExtendedRequestMagic);
            store_be64(h + 24, len);
        } else {
            store_be32(h, nbd::kRequestMagic);
            store_be32(h + 24, uint32_t(len));
        }
        send(h, extended ? 32 : 28);
        if (!payload.empty()) {
            send(payload.data(), payload.size());
        }
    }
    // A simple reply's error (data, if any, is left to read).
    uint32_t simple_reply(uint64_t cookie = 7)
    {
        std::vector<uint8_t> h = recv(16);
        REQUIRE(load_be32(h.data()) == nbd::kSimpleReplyMagic);
        REQUIRE(load_be64(h.data() + 8) == cookie);
        return load_be32(h.data() + 4);
    }
    struct Chunk {
        uint16_t flags, type;
        uint64_t cookie;
        std::vector<uint8_t> payload;
        uint32_t error() const { return load_be32(payload.data()); }
    };
    Chunk chunk()
    {
        std::vector<uint8_t> h = recv(extended ? 32 : 20);
        Chunk c;
        c.flags = load_be16(h.data() + 4);
        c.type = load_be16(h.data() + 6);
        c.cookie = load_be64(h.data() + 8);
        uint64_t len;
        if (extended) {
            REQUIRE(load_be32(h.data()) == nbd::kExtendedReplyMagic);
            len = load_be64(h.data() + 24);
        } else {
            REQUIRE(load_be32(h.data()) == nbd::kStructuredReplyMagic);
            len = load_be32(h.data() + 16);
        }
        c.payload = recv(len);
        return c;
    }
    // The error of a request answered in the negotiated mode (0: success):
    // structured mode still answers success without payload simply.
    uint32_t status(uint64_t cookie = 7)
    {
        if (!extended) {
            uint8_t m[4];
            REQUIRE(::recv(fd, m, 4, MSG_PEEK | MSG_WAITALL) == 4);
            if (load_be32(m) == nbd::kSimpleReplyMagic) {
                return simple_reply(cookie);
            }
        }
        Chunk c = chunk();
        REQUIRE(c.cookie == cookie);
        REQUIRE((c.flags & nbd::kReplyFlagDone));
        return nbd::reply_type_is_error(c.type) ? c.error() : 0;
    }
};

// Runs the client in a thread while this thread serves it from ctx.
void with_client(AioContext& ctx, const std::function<void()>& fn)
{
    std::atomic<bool> done{false};
    std::exception_ptr failure;
    std::thread t([&] {
        try {
            fn();
        } catch (...) {
            failure = std::current_exception();
        }
        done = true;
        ctx.notify();
    });
    while (!done) {
        ctx.poll(true);
    }
    t.join();
    if (failure) {
        std::rethrow_exception(failure);
    }
}

struct Served {
    AioContext ctx;
    TempDir dir{"/tmp/qz-nbd-"};
    std::string sock = dir.file("s");
    std::vector<std::unique_ptr<BlockBackend>> blks;
    std::unique_ptr<NbdServer> server;
    std::vector<unsigned> client_counts;

    explicit Served(uint32_t max_connections = 0)
    {
        NbdServerOptions o;
        o.max_connections = max_connections;
        o.on_clients_changed = [this](unsigned n) { client_counts.push_back(n); };
        SocketAddress a;
        a.path = sock;
        Error err;
        server = NbdServer::create(ctx, a, o, err);
        REQUIRE(server);
    }
    void add(const std::string& name, const qcow2_test::CreatedImage& img, bool writable,
             bool depth = false, const std::string& desc = "")
    {
        blks.push_back(img.open(ctx, "", writable ? BDRV_O_RDWR : 0));
        NbdExportConfig c{name, desc, blks.back().get(), writable, depth, true};
        Error err;
        REQUIRE(server->add_export(c, err));
    }
    ~Served()
    {
        run_sync(ctx, server->co_stop());
        for (const std::string& n : server->export_names()) {
            run_sync(ctx, server->co_remove_export(n, true));
        }
    }
};

std::vector<uint8_t> bytes(size_t n, uint8_t v)
{
    return std::vector<uint8_t>(n, v);
}

}  // namespace

TEST_CASE("nbd server: options as QEMU answers them", "[nbd]")
{
    qcow2_test::CreatedImage img("size=4M");
    Served s;
    qcow2_test::CreatedImage img2("size=4M");
    s.add("disk", img, true, false, "a disk");
    s.add("ro", img2, false);
    with_client(s.ctx, [&] {
        RawClient c(s.sock);
        c.hello();
        c.option(nbd::kOptList);
        std::vector<std::string> names;
        for (RawClient::Rep r = c.reply(); r.type != nbd::kRepAck; r = c.reply()) {
            REQUIRE(r.type == nbd::kRepServer);
            uint32_t l = load_be32(r.data.data());
            names.emplace_back(r.data.begin() + 4, r.data.begin() + 4 + l);
        }
        CHECK(names == std::vector<std::string>{"disk", "ro"});
        c.option(nbd::kOptList, {1});
        CHECK(c.reply().type == nbd::kRepErrInvalid);
        c.option(77, {1, 2, 3});
        RawClient::Rep r = c.reply();
        CHECK(r.type == nbd::kRepErrUnsup);
        CHECK(r.text() == "Unsupported option 77 (<unknown>)");
        c.option(nbd::kOptStartTls);
        r = c.reply();
        CHECK(r.type == nbd::kRepErrPolicy);
        CHECK(r.text() == "TLS not configured");
        c.option(nbd::kOptInfo, RawClient::info_data("nope", {}));
        r = c.reply();
        CHECK(r.type == nbd::kRepErrUnknown);
        CHECK(r.text() == "export 'nope' not present");
        c.option(nbd::kOptInfo, {0, 0, 0, 9, 'x'});
        CHECK(c.reply().type == nbd::kRepErrInvalid);
        // Meta contexts need structured replies first.
        c.option(nbd::kOptListMetaContext, c.meta_data("disk", {}));
        CHECK(c.reply().type == nbd::kRepErrInvalid);
        c.ack(nbd::kOptStructuredReply);
        c.option(nbd::kOptStructuredReply);
        CHECK(c.reply().type == nbd::kRepErrInvalid);
        // INFO: name, description, block size, export; stays negotiating.
        c.option(nbd::kOptInfo,
                 RawClient::info_data("disk", {nbd::kInfoName, nbd::kInfoBlockSize}));
        std::vector<uint16_t> infos;
        for (r = c.reply(); r.type == nbd::kRepInfo; r = c.reply()) {
            infos.push_back(load_be16(r.data.data()));
            if (infos.back() == nbd::kInfoBlockSize) {
                CHECK(load_be32(r.data.data() + 2) == 1);
                CHECK(load_be32(r.data.data() + 6) == 4096);
                CHECK(load_be32(r.data.data() + 10) == 32 * 1024 * 1024);
            }
            if (infos.back() == nbd::kInfoDescription) {
                CHECK(std::string(r.data.begin() + 2, r.data.end()) == "a disk");
            }
        }
        CHECK(r.type == nbd::kRepAck);
        CHECK(infos == std::vector<uint16_t>{nbd::kInfoName, nbd::kInfoDescription,
                                             nbd::kInfoBlockSize, nbd::kInfoExport});
        c.option(nbd::kOptListMetaContext, c.meta_data("disk", {}));
        r = c.reply();
        CHECK(r.type == nbd::kRepMetaContext);
        CHECK(std::string(r.data.begin() + 4, r.data.end()) == "base:allocation");
        CHECK(c.reply().type == nbd::kRepAck);
        // GO on the read-only export: QEMU's daemon flags with DF.
        auto [size, flags] = c.go("ro");
        CHECK(size == 4 * 1024 * 1024);
        CHECK(flags == 0x058f);
        c.request(nbd::kCmdDisc, 0, 0);
        CHECK(c.at_eof());
    });
}

TEST_CASE("nbd server: simple replies as the Linux client needs them", "[nbd]")
{
    qcow2_test::CreatedImage img("size=4M");
    Served s(1);  // one connection: no multi-conn, as qemu-nbd
    s.add("", img, true);
    with_client(s.ctx, [&] {
        RawClient c(s.sock);
        c.hello();
        auto [size, flags] = c.go("");
        CHECK(size == 4 * 1024 * 1024);
        CHECK(flags == 0x0c6d);
        c.request(nbd::kCmdWrite, 4096, 8192, nbd::kCmdFlagFua, 1, bytes(8192, 0xab));
        CHECK(c.simple_reply(1) == 0);
        c.request(nbd::kCmdRead, 4096, 8192, 0, 2);
        REQUIRE(c.simple_reply(2) == 0);
        CHECK(c.recv(8192) == bytes(8192, 0xab));
        c.request(nbd::kCmdWriteZeroes, 4096, 4096, nbd::kCmdFlagNoHole, 3);
        CHECK(c.simple_reply(3) == 0);
        c.request(nbd::kCmdTrim, 8192, 4096, 0, 4);
        CHECK(c.simple_reply(4) == 0);
        // Zeroed reads as zeroes; trimmed (advisory) may keep its data.
        c.request(nbd::kCmdRead, 4096, 4096, 0, 5);
        REQUIRE(c.simple_reply(5) == 0);
        CHECK(c.recv(4096) == bytes(4096, 0));
        c.request(nbd::kCmdFlush, 0, 0, 0, 6);
        CHECK(c.simple_reply(6) == 0);
        c.request(nbd::kCmdCache, 0, 65536, 0, 7);
        CHECK(c.simple_reply(7) == 0);
        // QEMU's errors: past the end, bad flags, unknown commands,
        // block status without contexts.
        c.request(nbd::kCmdWrite, size - 512, 1024, 0, 8, bytes(1024, 1));
        CHECK(c.simple_reply(8) == nbd::kEnospc);
        c.request(nbd::kCmdRead, size, 1, 0, 9);
        CHECK(c.simple_reply(9) == nbd::kEinval);
        c.request(nbd::kCmdRead, 0, 512, nbd::kCmdFlagDf, 10);
        CHECK(c.simple_reply(10) == nbd::kEinval);
        c.request(42, 0, 0, 0, 11);
        CHECK(c.simple_reply(11) == nbd::kEinval);
        c.request(nbd::kCmdBlockStatus, 0, 512, 0, 12);
        CHECK(c.simple_reply(12) == nbd::kEinval);
        // Several requests in flight; replies may come in any order.
        for (uint64_t i = 0; i < 20; i++) {
            c.request(nbd::kCmdWrite, i * 4096, 4096, 0, 100 + i, bytes(4096, uint8_t(i)));
        }
        std::set<uint64_t> cookies;
        for (int i = 0; i < 20; i++) {
            std::vector<uint8_t> h = c.recv(16);
            CHECK(load_be32(h.data() + 4) == 0);
            cookies.insert(load_be64(h.data() + 8));
        }
        CHECK(cookies.size() == 20);
        c.request(nbd::kCmdDisc, 0, 0);
        CHECK(c.at_eof());
    });
    CHECK(s.client_counts == std::vector<unsigned>{1, 0});
}

TEST_CASE("nbd server: structured reads, block status and read-only errors", "[nbd]")
{
    qcow2_test::CreatedImage img("size=4M");
    Served s;
    qcow2_test::CreatedImage img2("size=4M");
    s.add("disk", img, true, true);
    s.add("ro", img2, false);
    with_client(s.ctx, [&] {
        RawClient c(s.sock);
        c.hello();
        c.ack(nbd::kOptStructuredReply);
        c.option(nbd::kOptSetMetaContext,
                 c.meta_data("disk", {"base:allocation", "qemu:allocation-depth", "x:y"}));
        RawClient::Rep r = c.reply();
        REQUIRE(r.type == nbd::kRepMetaContext);
        CHECK(load_be32(r.data.data()) == 0);
        r = c.reply();
        REQUIRE(r.type == nbd::kRepMetaContext);
        CHECK(load_be32(r.data.data()) == 1);
        CHECK(c.reply().type == nbd::kRepAck);
        auto [size, flags] = c.go("disk");
        CHECK(flags == 0x0ded);
        c.request(nbd::kCmdWrite, 65536, 65536, 0, 1, bytes(65536, 0x5a));
        CHECK(c.status(1) == 0);
        // A hole, then data.
        c.request(nbd::kCmdRead, 0, 131072, 0, 2);
        RawClient::Chunk h = c.chunk();
        CHECK(h.type == nbd::kReplyTypeOffsetHole);
        CHECK(load_be64(h.payload.data()) == 0);
        CHECK(load_be32(h.payload.data() + 8) == 65536);
        CHECK_FALSE((h.flags & nbd::kReplyFlagDone));
        RawClient::Chunk d = c.chunk();
        CHECK(d.type == nbd::kReplyTypeOffsetData);
        CHECK((d.flags & nbd::kReplyFlagDone));
        CHECK(load_be64(d.payload.data()) == 65536);
        CHECK(std::vector<uint8_t>(d.payload.begin() + 8, d.payload.end()) == bytes(65536, 0x5a));
        // DF: one data chunk.
        c.request(nbd::kCmdRead, 0, 4096, nbd::kCmdFlagDf, 3);
        d = c.chunk();
        CHECK(d.type == nbd::kReplyTypeOffsetData);
        CHECK(d.payload.size() == 8 + 4096);
        // Block status: both contexts, DONE on the last.
        c.request(nbd::kCmdBlockStatus, 0, 196608, 0, 4);
        RawClient::Chunk b0 = c.chunk(), b1 = c.chunk();
        CHECK(b0.type == nbd::kReplyTypeBlockStatus);
        CHECK(load_be32(b0.payload.data()) == 0);
        REQUIRE(b0.payload.size() == 4 + 3 * 8);
        CHECK(load_be32(b0.payload.data() + 4) == 65536);
        CHECK(load_be32(b0.payload.data() + 8) == (nbd::kStateHole | nbd::kStateZero));
        CHECK(load_be32(b0.payload.data() + 16) == 0);
        CHECK_FALSE((b0.flags & nbd::kReplyFlagDone));
        CHECK(load_be32(b1.payload.data()) == 1);
        CHECK(load_be32(b1.payload.data() + 16) == 1);  // depth 1: the top layer
        CHECK((b1.flags & nbd::kReplyFlagDone));
        c.request(nbd::kCmdBlockStatus, 0, 196608, nbd::kCmdFlagReqOne, 5);
        CHECK(c.chunk().payload.size() == 12);
        CHECK(c.chunk().payload.size() == 12);
        c.request(nbd::kCmdBlockStatus, 0, 0, 0, 6);
        RawClient::Chunk e = c.chunk();
        CHECK(e.type == nbd::kReplyTypeError);
        CHECK(e.error() == nbd::kEinval);
        CHECK(std::string(e.payload.begin() + 6, e.payload.end()) == "need non-zero length");
    });
    with_client(s.ctx, [&] {
        RawClient c(s.sock);
        c.hello();
        c.ack(nbd::kOptStructuredReply);
        c.go("ro");
        c.request(nbd::kCmdWrite, 0, 512, 0, 1, bytes(512, 1));
        RawClient::Chunk e = c.chunk();
        CHECK(e.error() == nbd::kEperm);
        CHECK(std::string(e.payload.begin() + 6, e.payload.end()) == "Export is read-only");
        c.request(nbd::kCmdTrim, 0, 512, 0, 2);
        CHECK(c.status(2) == nbd::kEperm);
    });
}

TEST_CASE("nbd server: extended headers with 64-bit lengths and payloads", "[nbd]")
{
    qcow2_test::CreatedImage img("size=4M");
    Served s;
    s.add("disk", img, true);
    with_client(s.ctx, [&] {
        RawClient c(s.sock);
        c.hello();
        c.ack(nbd::kOptExtendedHeaders);
        c.option(nbd::kOptStructuredReply);
        CHECK(c.reply().type == nbd::kRepErrExtHeaderReqd);
        c.option(nbd::kOptSetMetaContext, c.meta_data("disk", {"base:allocation"}));
        CHECK(c.reply().type == nbd::kRepMetaContext);
        CHECK(c.reply().type == nbd::kRepAck);
        auto [size, flags] = c.go("disk");
        CHECK(flags == (0x0ded | nbd::kFlagBlockStatPayload));
        c.request(nbd::kCmdWrite, 0, 4096, nbd::kCmdFlagPayloadLen, 1, bytes(4096, 3));
        CHECK(c.status(1) == 0);
        c.request(nbd::kCmdFlush, 0, 0, 0, 2);
        RawClient::Chunk n = c.chunk();
        CHECK(n.type == nbd::kReplyTypeNone);
        CHECK((n.flags & nbd::kReplyFlagDone));
        // Zeroing the whole export in one 64-bit request.
        c.request(nbd::kCmdWriteZeroes, 0, size, 0, 3);
        CHECK(c.status(3) == 0);
        c.request(nbd::kCmdBlockStatus, 0, size, 0, 4);
        RawClient::Chunk b = c.chunk();
        CHECK(b.type == nbd::kReplyTypeBlockStatusExt);
        CHECK(load_be32(b.payload.data() + 4) == 1);
        CHECK(load_be64(b.payload.data() + 8) == size);
        // Block status with a payload naming context 0.
        std::vector<uint8_t> p(12);
        store_be64(p.data(), 4096);
        store_be32(p.data() + 8, 0);
        c.request(nbd::kCmdBlockStatus, 0, 12, nbd::kCmdFlagPayloadLen, 5, p);
        b = c.chunk();
        CHECK(b.type == nbd::kReplyTypeBlockStatusExt);
        CHECK(load_be64(b.payload.data() + 8) == 4096);
        // A payload on a command that takes none is skipped, then refused.
        c.request(nbd::kCmdFlush, 0, 16, nbd::kCmdFlagPayloadLen, 6, bytes(16, 0));
        CHECK(c.status(6) == nbd::kEinval);
        c.request(nbd::kCmdRead, 0, 512, 0, 7);
        RawClient::Chunk d = c.chunk();
        CHECK(d.type == nbd::kReplyTypeOffsetHole);
    });
}

TEST_CASE("nbd server: lying clients are dropped, others keep working", "[nbd]")
{
    qcow2_test::CreatedImage img("size=4M");
    Served s;
    s.add("disk", img, true);
    with_client(s.ctx, [&] {
        RawClient good(s.sock);
        good.hello();
        good.go("disk");

        RawClient badflags(s.sock);
        badflags.hello(0x80000001);
        CHECK(badflags.at_eof());

        RawClient badopt(s.sock);
        badopt.hello();
        uint8_t junk[16] = {1, 2, 3};
        badopt.send(junk, 16);
        CHECK(badopt.at_eof());

        RawClient huge(s.sock);
        huge.hello();
        uint8_t h[16];
        store_be64(h, nbd::kOptsMagic);
        store_be32(h + 8, nbd::kOptList);
        store_be32(h + 12, 64 << 20);
        huge.send(h, 16);
        CHECK(huge.at_eof());

        RawClient badmagic(s.sock);
        badmagic.hello();
        badmagic.go("disk");
        uint8_t req[28] = {0x12, 0x34};
        badmagic.send(req, 28);
        CHECK(badmagic.at_eof());

        // A write longer than 32 MiB: EINVAL, then the payload cannot be
        // skipped and the connection goes.
        RawClient bigwrite(s.sock);
        bigwrite.hello();
        bigwrite.go("disk");
        bigwrite.request(nbd::kCmdWrite, 0, 33 << 20, 0, 9);
        CHECK(bigwrite.simple_reply(9) == nbd::kEinval);
        CHECK(bigwrite.at_eof());

        // Non-fixed newstyle clients may only use EXPORT_NAME.
        RawClient oldc(s.sock);
        oldc.hello(0);
        oldc.option(nbd::kOptExportName, {'d', 'i', 's', 'k'});
        std::vector<uint8_t> x = oldc.recv(8 + 2 + 124);
        CHECK(load_be64(x.data()) == 4 * 1024 * 1024);
        oldc.request(nbd::kCmdRead, 0, 512, 0, 1);
        CHECK(oldc.simple_reply(1) == 0);
        oldc.recv(512);

        RawClient unknown(s.sock);
        unknown.hello();
        unknown.option(nbd::kOptExportName, {'n', 'o'});
        CHECK(unknown.at_eof());

        good.request(nbd::kCmdWrite, 0, 512, 0, 2, bytes(512, 9));
        CHECK(good.simple_reply(2) == 0);
        good.request(nbd::kCmdRead, 0, 512, 0, 3);
        REQUIRE(good.simple_reply(3) == 0);
        CHECK(good.recv(512) == bytes(512, 9));
    });
}

TEST_CASE("nbd server: a write off a zone's write pointer is EIO, logged", "[nbd][zoned]")
{
    qcow2_test::CreatedImage img("size=16M,zone.mode=host-managed,zone.size=4M");
    Served s;
    s.add("z", img, true);
    with_client(s.ctx, [&] {
        RawClient c(s.sock);
        c.hello();
        c.go("z");
        c.request(nbd::kCmdWrite, 0, 4096, 0, 1, bytes(4096, 1));
        CHECK(c.simple_reply(1) == 0);
        c.request(nbd::kCmdWrite, 65536, 4096, 0, 2, bytes(4096, 1));
        CHECK(c.simple_reply(2) == nbd::kEio);
        c.request(nbd::kCmdWrite, 4096, 4096, 0, 3, bytes(4096, 2));
        CHECK(c.simple_reply(3) == 0);
    });
}

TEST_CASE("nbd server: removing an export disconnects its clients; stop ends all", "[nbd]")
{
    qcow2_test::CreatedImage img("size=4M");
    Served s;
    s.add("a", img, false);
    s.add("b", img, false);
    Error err;
    NbdExportConfig dup{"a", "", s.blks[0].get(), false, false, true};
    CHECK_FALSE(s.server->add_export(dup, err));
    CHECK(err.message == "NBD server already has export named 'a'");
    dup.name = std::string(4097, 'n');
    CHECK_FALSE(s.server->add_export(dup, err));

    RawClient* ca = nullptr;
    RawClient* cb = nullptr;
    with_client(s.ctx, [&] {
        ca = new RawClient(s.sock);
        ca->hello();
        ca->go("a");
        cb = new RawClient(s.sock);
        cb->hello();
        cb->go("b");
        cb->request(nbd::kCmdFlush, 0, 0);
        CHECK(cb->simple_reply() == 0);
    });
    run_sync(s.ctx, s.server->co_remove_export("a", true));
    CHECK_FALSE(s.server->has_export("a"));
    with_client(s.ctx, [&] {
        CHECK(ca->at_eof());
        cb->request(nbd::kCmdFlush, 0, 0);
        CHECK(cb->simple_reply() == 0);
    });
    run_sync(s.ctx, s.server->co_stop());
    CHECK(cb->at_eof());
    CHECK(s.server->client_count() == 0);
    delete ca;
    delete cb;
}

TEST_CASE("nbd export type: keys and QEMU's messages", "[nbd][export][graph]")
{
    nbd_export_register();
    qcow2_test::CreatedImage img("size=4M");
    AioContext ctx;
    BlockGraph graph(ctx);
    graph_test::add_file_and_qcow2(graph, img.path);
    BlockExportRegistry reg(graph, [](const std::string&) { return nullptr; });
    auto add = [&](const std::string& text, Error& err) {
        QDict d;
        REQUIRE(keyval_parse(d, text, "type", err));
        return run_sync(ctx, reg.co_add(d, err));
    };
    Error err;
    CHECK(add("nbd,id=e0,node-name=q0", err) == nullptr);
    CHECK(err.message == "NBD server not running");
    TempDir dir("/tmp/qz-nbd-");
    SocketAddress a;
    a.path = dir.file("s");
    REQUIRE(nbd_server_start(ctx, a, 100, 10, err));
    CHECK_FALSE(nbd_server_start(ctx, a, 100, 10, err));
    CHECK(err.message == "NBD server already running");
    CHECK(add("nbd,id=e0,node-name=q0,bitmaps.0=b0", err) == nullptr);
    CHECK(err.message == "Exporting dirty bitmaps over NBD is not supported");
    CHECK(add("nbd,id=e0,node-name=q0,name=" + std::string(4097, 'x'), err) == nullptr);
    CHECK(err.message == "export name '" + std::string(4097, 'x') + "' too long");
    REQUIRE(add("nbd,id=e0,node-name=q0,writable=on,allocation-depth=on", err));
    CHECK(nbd_server_get()->has_export("q0"));
    CHECK(add("nbd,id=e1,node-name=q0", err) == nullptr);
    CHECK(err.message == "NBD server already has export named 'q0'");
    CHECK(run_sync(ctx, reg.co_del("e0", true, err)) == 0);
    CHECK_FALSE(nbd_server_get()->has_export("q0"));
    CHECK(run_sync(ctx, nbd_server_co_stop(err)) == 0);
    CHECK(run_sync(ctx, nbd_server_co_stop(err)) == -ENOENT);
    CHECK(err.message == "NBD server not running");
    CHECK(graph.del("q0", err) == 0);
}

TEST_CASE("nbd export in an iothread: requests run there, the server in the main loop",
          "[nbd][export][thread]")
{
    nbd_export_register();
    qcow2_test::CreatedImage img("size=4M");
    AioContext ctx;
    IOThread io("io0");
    BlockGraph graph(ctx);
    graph_test::add_file_and_qcow2(graph, img.path);
    BlockExportRegistry reg(graph,
                            [&](const std::string& id) { return id == "io0" ? &io : nullptr; });
    TempDir dir("/tmp/qz-nbd-");
    SocketAddress a;
    a.path = dir.file("s");
    Error err;
    REQUIRE(nbd_server_start(ctx, a, 0, 10, err));
    QDict opts;
    REQUIRE(keyval_parse(opts, "nbd,id=e0,node-name=q0,writable=on,iothread=io0,name=disk", "type",
                         err));
    BlockExport* e = run_sync(ctx, reg.co_add(opts, err));
    INFO(err.message);
    REQUIRE(e);
    REQUIRE(&e->ctx() == &io.ctx());
    with_client(ctx, [&] {
        RawClient c(a.path);
        c.hello();
        c.ack(nbd::kOptStructuredReply);
        c.go("disk");
        for (uint64_t i = 0; i < 8; i++) {
            c.request(nbd::kCmdWrite, i * 65536, 65536, 0, i, bytes(65536, uint8_t(i + 1)));
        }
        for (uint64_t i = 0; i < 8; i++) {
            CHECK(c.status(i) == 0);
        }
        c.request(nbd::kCmdRead, 65536, 4096, nbd::kCmdFlagDf, 9);
        RawClient::Chunk d = c.chunk();
        CHECK(std::vector<uint8_t>(d.payload.begin() + 8, d.payload.end()) == bytes(4096, 2));
    });
    CHECK(run_sync(ctx, reg.co_del("e0", true, err)) == 0);
    CHECK(run_sync(ctx, nbd_server_co_stop(err)) == 0);
    REQUIRE(run_sync(ctx, co_run_in<int>(io.ctx(), [&]() {
                         return bdrv_co_change_aio_context(graph.lookup("q0").get(), ctx, err);
                     })) == 0);
    CHECK(graph.del("q0", err) == 0);
}
