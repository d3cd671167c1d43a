// NVMe/TCP connections (export/nvme-tcp/) driven over a socketpair by our
// initiator's host side (tests/nvme/nvme-tcp-host.h) in a thread of its
// own, against the controller model on a qcow2 namespace: in-capsule and
// R2T writes, multi-PDU reads, digests, per-command SGL errors, and
// hostile streams answered with the right C2HTermReq.
#include <catch2/catch.hpp>

#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <thread>

#include "export/nvme-tcp/nvme-tcp-internal.h"
#include "qcow2-test-util.h"
#include "tests/nvme/nvme-tcp-host.h"

using namespace qemu;
using namespace qemu::nvme_tcp;

namespace {

constexpr const char kNqn[] = "nqn.2026-01.org.qemu-zoned:unit";

// A target with one subsystem whose namespace 1 is a qcow2 image, and a
// listener without a socket (connections come from serve()).
struct World {
    qcow2_test::CreatedImage img{"size=16M"};
    AioContext ctx;
    std::unique_ptr<BlockBackend> blk;
    std::unique_ptr<NvmeTarget> target;
    std::unique_ptr<NvmeTcpListener> listener;

    World()
    {
        QDict o;
        o.set("driver", "qcow2");
        o.set("file.driver", "file");
        o.set("file.filename", img.path);
        Error err;
        blk = BlockBackend::open(std::nullopt, o, BDRV_O_RDWR, ctx, err);
        REQUIRE(blk);
        target = std::make_unique<NvmeTarget>(ctx);
        SocketAddress a;
        a.type = SocketAddress::Type::Inet;
        a.host = "127.0.0.1";
        a.port = "4420";
        listener = std::make_unique<NvmeTcpListener>(*target, -1, nvme_tcp_port_info(a, 1));
        NvmeSubsystem* sub = target->add_subsystem(kNqn, listener->port(), "SN", "MN", err);
        REQUIRE(sub);
        REQUIRE(run_sync(ctx, sub->co_add_namespace(*blk, NvmeNamespaceOptions{}, err)) == 1);
    }

    ~World()
    {
        run_sync(ctx, listener->co_stop());
        run_sync(ctx, target->find_subsystem(kNqn)->co_remove_namespace(1));
        run_sync(ctx, target->co_remove_subsystem(kNqn));
        listener.reset();
        target.reset();
        run_sync(ctx, blk->co_close());
    }

    // A connected socket the target serves.  Called from the client
    // thread: the target takes its end in its own thread.
    int connect()
    {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
            return -1;
        }
        pending++;
        ctx.post([this, fd = sv[0]] {
            listener->serve(fd);
            pending--;
        });
        return sv[1];
    }
    std::atomic<int> pending{0};

    // Runs client() in a thread while the target's loop runs here, until
    // the client has returned and its connections are gone.  Returns the
    // client's verdict ("" = fine).
    std::string run(const std::function<std::string()>& client)
    {
        std::atomic<bool> done{false};
        std::string verdict;
        std::thread th([&] {
            verdict = client();
            done = true;
            ctx.notify();
        });
        while (!done || pending || listener->connection_count()) {
            ctx.poll(true);
        }
        th.join();
        return verdict;
    }
};

std::string status_text(const char* what, const HostCommand& c)
{
    char b[96];
    snprintf(b, sizeof(b), "%s: status 0x%03x", what, c.cqe.status() & 0x7ff);
    return b;
}

// Connect + CC.EN on an admin queue; returns "" or what failed.
std::string bring_up(HostQueue& admin, uint16_t& cntlid)
{
    HostCommand c;
    c.sqe = nvme_sqe_connect(0, 31, 0);
    c.data = nvme_connect_data(0xffff, kNqn, "nqn.2026-01.org.qemu-zoned:host");
    if (!admin.execute(c) || c.cqe.status()) {
        return admin.error().empty() ? status_text("Connect", c) : admin.error();
    }
    cntlid = uint16_t(c.cqe.dw0());
    HostCommand cc;
    cc.sqe = nvme_sqe_property_set(0x14, 1 | 6 << 16 | 4 << 20, false);
    if (!admin.execute(cc) || cc.cqe.status()) {
        return status_text("Property Set", cc);
    }
    return "";
}

std::string connect_io(HostQueue& io, uint16_t cntlid)
{
    HostCommand c;
    c.sqe = nvme_sqe_connect(1, 31, 0);
    c.data = nvme_connect_data(cntlid, kNqn, "nqn.2026-01.org.qemu-zoned:host");
    if (!io.execute(c) || c.cqe.status()) {
        return io.error().empty() ? status_text("I/O Connect", c) : io.error();
    }
    return "";
}

// A controller with one I/O queue on two connections of w.
struct Session {
    HostQueue admin, io;
    std::string open(World& w, Digests dg)
    {
        admin.adopt(w.connect());
        io.adopt(w.connect());
        std::string err;
        uint16_t cntlid = 0;
        if (!admin.handshake(dg, err) || !io.handshake(dg, err)) {
            return err;
        }
        err = bring_up(admin, cntlid);
        return err.empty() ? connect_io(io, cntlid) : err;
    }
};

// Runs body on a fresh controller with one I/O queue, in the client
// thread; its verdict, or what failed on the way.
std::string run_session(World& w, Digests dg, const std::function<std::string(Session&)>& body)
{
    return w.run([&]() -> std::string {
        Session s;
        std::string err = s.open(w, dg);
        return err.empty() ? body(s) : err;
    });
}

// One I/O command of len bytes of `fill` at slba; its status, "" = success.
std::string io_cmd(HostQueue& q, uint8_t opc, uint64_t slba, std::vector<uint8_t>& data)
{
    HostCommand c;
    c.sqe = nvme_sqe_rw(opc, 1, slba, uint32_t(data.size() / 512));
    c.data = std::move(data);
    bool ok = q.execute(c);
    data = std::move(c.data);
    if (!ok) {
        return q.error();
    }
    return c.cqe.status() ? status_text("I/O", c) : "";
}

// Reads one PDU and describes a C2HTermReq as "fes F fei I".
std::string termreq_of(HostQueue& q)
{
    std::vector<uint8_t> pdu;
    while (q.recv_pdu(pdu)) {
        if (parse_common(pdu.data()).type == kC2HTermReq && pdu.size() >= kTermReqHlen) {
            std::string r = "fes " + std::to_string(load_le16(pdu.data() + 8)) + " fei " +
                            std::to_string(load_le32(pdu.data() + 10));
            // The target closes after its TermReq.
            return q.recv_pdu(pdu) ? r + " (still open)" : r;
        }
    }
    return "no TermReq: " + q.error();
}

// A write of 16 KiB on s.io without in-capsule data; returns its R2T.
std::string write_awaiting_r2t(Session& s, HostCommand& w, DataHeader& r2t)
{
    w.sqe = nvme_sqe_rw(0x01, 1, 0, 32);
    w.data.assign(16384, 0x77);
    s.io.set_in_capsule(0);
    std::vector<uint8_t> pdu;
    if (!s.io.submit(w) || !s.io.recv_pdu(pdu)) {
        return s.io.error();
    }
    if (parse_common(pdu.data()).type != kR2T) {
        return "no R2T";
    }
    r2t = parse_data_header(pdu.data());
    return r2t.length == 16384 && r2t.offset == 0 ? "" : "R2T for the wrong range";
}

std::vector<uint8_t> h2c(const DataHeader& d, uint8_t flags)
{
    std::vector<uint8_t> b(kShortHlen + d.length, 0x77);
    build_data_header(b.data(), kH2CData, flags, Digests{}, 4, d);
    return b;
}

}  // namespace

TEST_CASE("NVMe/TCP: in-capsule and R2T writes, multi-PDU reads, digests", "[nvme-tcp]")
{
    World w;
    for (Digests dg : {Digests{}, Digests{true, true}}) {
        std::string verdict = run_session(w, dg, [&](Session& s) -> std::string {
            std::string err;
            // 4 KiB fits in the capsule; 320 KiB goes on one R2T and
            // three H2CData PDUs (MAXH2CDATA 128 KiB), and comes back in
            // three C2HData PDUs.
            std::vector<uint8_t> small(4096, 0x11), big(320 * 1024);
            for (size_t i = 0; i < big.size(); i++) {
                big[i] = uint8_t(i * 7 + (dg.data ? 1 : 0));
            }
            std::vector<uint8_t> want = big;
            if (!(err = io_cmd(s.io, 0x01, 8, small)).empty() ||
                !(err = io_cmd(s.io, 0x01, 1024, big)).empty()) {
                return err;
            }
            std::vector<uint8_t> back(320 * 1024, 0), back_small(4096, 0);
            if (!(err = io_cmd(s.io, 0x02, 1024, back)).empty() ||
                !(err = io_cmd(s.io, 0x02, 8, back_small)).empty()) {
                return err;
            }
            if (back != want) {
                return "R2T-written data read back differently";
            }
            return back_small == std::vector<uint8_t>(4096, 0x11) ? "" : "in-capsule data lost";
        });
        CHECK(verdict == "");
    }
}

TEST_CASE("NVMe/TCP: many commands in flight on one queue", "[nvme-tcp]")
{
    World w;
    std::string verdict = run_session(w, Digests{}, [&](Session& s) -> std::string {
        std::string err;
        std::vector<HostCommand> cmds(24);
        for (size_t i = 0; i < cmds.size(); i++) {
            cmds[i].sqe = nvme_sqe_rw(0x01, 1, i * 64, 64);  // 32 KiB: R2T
            cmds[i].data.assign(32768, uint8_t(i + 1));
            if (!s.io.submit(cmds[i])) {
                return s.io.error();
            }
        }
        size_t done = 0;
        while (done < cmds.size()) {
            bool ok = s.io.poll([&](HostCommand& c) { done += c.cqe.status() == 0 ? 1 : 1000; });
            if (!ok) {
                return s.io.error();
            }
        }
        if (done != cmds.size()) {
            return "a write failed";
        }
        for (size_t i = 0; i < cmds.size(); i++) {
            std::vector<uint8_t> back(32768, 0);
            if (!(err = io_cmd(s.io, 0x02, i * 64, back)).empty()) {
                return err;
            }
            if (back != std::vector<uint8_t>(32768, uint8_t(i + 1))) {
                return "write " + std::to_string(i) + " read back wrong";
            }
        }
        return "";
    });
    CHECK(verdict == "");
}

TEST_CASE("NVMe/TCP: a bad SGL fails its command only", "[nvme-tcp]")
{
    World w;
    std::string verdict = run_session(w, Digests{}, [&](Session& s) -> std::string {
        std::string err;
        // In-capsule data whose SGL offset points past it.
        NvmeSqe sqe = nvme_sqe_rw(0x01, 1, 0, 1);
        sqe.bytes[1] = 0x40;
        sqe.set_le64_at(24, 4096);
        sqe.set_le32_at(32, 512);
        sqe.bytes[39] = NVME_SGL_DATA_BLOCK_OFFSET;
        std::vector<uint8_t> pdu(kCapsuleCmdHlen + 512, 0);
        build_capsule_cmd(pdu.data(), Digests{}, sqe, 512);
        std::vector<uint8_t> resp;
        if (!s.io.send_raw(pdu.data(), pdu.size()) || !s.io.recv_pdu(resp)) {
            return s.io.error();
        }
        NvmeCqe cqe;
        memcpy(cqe.bytes, resp.data() + 8, 16);
        if (parse_common(resp.data()).type != kCapsuleResp ||
            cqe.status() != (NVME_SC_SGL_INVALID_OFFSET | NVME_SC_DNR)) {
            return "expected SGL Offset Invalid";
        }
        // A transport SGL longer than MDTS.
        HostCommand r;
        r.sqe = nvme_sqe_rw(0x02, 1, 0, 8);
        r.data.assign(kNvmeTcpMaxTransfer + 4096, 0);
        if (!s.io.execute(r) || r.cqe.status() != (NVME_SC_SGL_INVALID_DATA_LENGTH | NVME_SC_DNR)) {
            return "expected SGL Data Length Invalid";
        }
        std::vector<uint8_t> ok(4096, 0x31);
        return io_cmd(s.io, 0x01, 0, ok);
    });
    CHECK(verdict == "");
}

TEST_CASE("NVMe/TCP: hostile streams get a C2HTermReq and the connection ends", "[nvme-tcp]")
{
    World w;
    auto raw = [&](const std::vector<uint8_t>& bytes, bool handshake) {
        return w.run([&]() -> std::string {
            HostQueue q;
            q.adopt(w.connect());
            std::string err;
            if (handshake && !q.handshake(Digests{}, err)) {
                return err;
            }
            q.send_raw(bytes.data(), bytes.size());
            return termreq_of(q);
        });
    };
    std::vector<uint8_t> ic = build_icreq(ICReq{});
    store_le16(ic.data() + kOffIcPfv, 1);
    CHECK(raw(ic, false) == "fes 6 fei 8");
    ic = build_icreq(ICReq{});
    ic[0] = kCapsuleCmd;
    CHECK(raw(ic, false) == "fes 2 fei 0");

    std::vector<uint8_t> cap(kCapsuleCmdHlen, 0);
    put_common(cap.data(), CommonHeader{kCapsuleCmd, 0, 72, 72, 0xffffffffu});
    CHECK(raw(cap, true) == "fes 5 fei 4");
    put_common(cap.data(), CommonHeader{kCapsuleCmd, 0, 72, 0, 40});
    CHECK(raw(cap, true) == "fes 1 fei 4");
    put_common(cap.data(), CommonHeader{kCapsuleResp, 0, 24, 0, 24});
    CHECK(raw(cap, true) == "fes 1 fei 0");
    CHECK(raw(build_icreq(ICReq{}), true) == "fes 2 fei 0");
    // H2CData nobody asked for.
    CHECK(raw(h2c(DataHeader{1, 0, 0, 512}, kFlagDataLast), true) == "fes 1 fei 10");

    SECTION("H2CData that does not match its R2T")
    {
        struct Case {
            const char* what;
            std::function<void(DataHeader&)> bend;
            uint8_t flags;
            const char* want;
        };
        const Case cases[] = {
            {"DATAO ahead", [](DataHeader& d) { d.offset = 4096; }, 0, "fes 4 fei 12"},
            {"unknown TTAG", [](DataHeader& d) { d.ttag ^= 0x100; }, 0, "fes 1 fei 10"},
            {"wrong CCCID", [](DataHeader& d) { d.cccid ^= 1; }, 0, "fes 1 fei 8"},
            {"early DATA_LAST", [](DataHeader&) {}, kFlagDataLast, "fes 2 fei 1"},
        };
        for (const Case& c : cases) {
            INFO(c.what);
            std::string verdict = run_session(w, Digests{}, [&](Session& s) -> std::string {
                HostCommand wr;
                DataHeader r2t;
                std::string err = write_awaiting_r2t(s, wr, r2t);
                if (!err.empty()) {
                    return err;
                }
                DataHeader d{r2t.cccid, r2t.ttag, 0, 4096};
                c.bend(d);
                std::vector<uint8_t> b = h2c(d, c.flags);
                s.io.send_raw(b.data(), b.size());
                return termreq_of(s.io);
            });
            CHECK(verdict == c.want);
        }
    }
}
