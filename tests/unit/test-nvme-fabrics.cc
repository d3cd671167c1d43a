// The NVMe model's Fabrics side (hw/nvme/fabrics.cc, controller.cc,
// queue-pair.cc): Connect and its error paths, Property Get/Set and the
// CC/CSTS state machine, commands before Connect or enable, the discovery
// subsystem, and teardown (admin queue gone, subsystem removed).
#include <catch2/catch.hpp>

#include "nvme-test-util.h"

using namespace qemu;
using namespace nvme_test;

namespace {

constexpr uint16_t kInvalidParam = 0x182 | kDnr;
constexpr uint16_t kCmdSeqError = 0x0c | kDnr;

std::string nqn_at(const std::vector<uint8_t>& buf, size_t off)
{
    return std::string(reinterpret_cast<const char*>(&buf[off]));
}

}  // namespace

TEST_CASE("nvme fabrics: commands before Connect are command sequence errors", "[nvme]")
{
    Fixture f;
    Queue& q = f.new_queue();
    std::vector<uint8_t> buf(4096);
    CHECK(f.run(q, identify(1), buf).status == kCmdSeqError);
    CHECK(f.run(q, property_get(0x00, true)).status == kCmdSeqError);
    CHECK(f.run(q, property_set(0x14, 1)).status == kCmdSeqError);
    CHECK(f.run(q, rw(0x02, 1, 0, 1), buf).status == kCmdSeqError);
    CHECK_FALSE(q.qp->connected());
    // An unknown Fabrics command type is an invalid opcode.
    CHECK(f.run(q, fabrics(0x05)).status == (0x01 | kDnr));
}

TEST_CASE("nvme fabrics: admin Connect creates controllers with dynamic IDs", "[nvme]")
{
    Fixture f;
    Queue& a = f.new_queue();
    auto data = connect_data(kSubnqn, kHostnqn);
    Result r = f.run(a, connect_sqe(0, 31, 5000), data);
    REQUIRE(r.status == 0);
    uint16_t first = uint16_t(r.dw0);
    CHECK(first >= 1);
    CHECK(first <= 0xffef);
    CHECK(a.qp->connected());
    CHECK(a.qp->qid() == 0);
    CHECK(a.qp->queue_size() == 32);
    CHECK(a.qp->keep_alive_ms() == 5000);
    // A second host connection gets a controller of its own.
    Queue& b = f.new_queue();
    r = f.run(b, connect_sqe(0, 31), data);
    REQUIRE(r.status == 0);
    CHECK(uint16_t(r.dw0) != first);
    // Connect again on a connected queue.
    CHECK(f.run(a, connect_sqe(0, 31), data).status == kCmdSeqError);
}

TEST_CASE("nvme fabrics: Connect refuses bad parameters with IATTR/IPO", "[nvme]")
{
    Fixture f;
    auto try_connect = [&](NvmeSqe s, std::vector<uint8_t> data) {
        Queue& q = f.new_queue();
        Result r = f.run(q, s, data);
        CHECK_FALSE(q.qp->connected());
        return r;
    };
    auto good = connect_data(kSubnqn, kHostnqn);
    constexpr uint32_t kData = 1u << 16;

    NvmeSqe recfmt = connect_sqe(0, 31);
    recfmt.set_le16_at(40, 1);
    CHECK(try_connect(recfmt, good).status == (0x180 | kDnr));

    CHECK(try_connect(connect_sqe(0, 31), std::vector<uint8_t>(512)).status == (0x0f | kDnr));

    Result r = try_connect(connect_sqe(0, 0), good);
    CHECK(r.status == kInvalidParam);
    CHECK(r.dw0 == 44);
    r = try_connect(connect_sqe(0, 128), good);  // MQES is 127
    CHECK(r.status == kInvalidParam);
    CHECK(r.dw0 == 44);

    r = try_connect(connect_sqe(0, 31), connect_data("nqn.2026-12.org.example:nobody", kHostnqn));
    CHECK(r.status == kInvalidParam);
    CHECK(r.dw0 == (kData | 256));

    auto unterminated = good;
    std::fill(unterminated.begin() + 256, unterminated.begin() + 512, 'a');
    r = try_connect(connect_sqe(0, 31), unterminated);
    CHECK(r.dw0 == (kData | 256));

    r = try_connect(connect_sqe(0, 31), connect_data(kSubnqn, ""));
    CHECK(r.status == kInvalidParam);
    CHECK(r.dw0 == (kData | 512));

    r = try_connect(connect_sqe(0, 31), connect_data(kSubnqn, kHostnqn, 7));
    CHECK(r.status == kInvalidParam);
    CHECK(r.dw0 == (kData | 16));
}

TEST_CASE("nvme fabrics: I/O queues join their controller by CNTLID, host NQN and host ID",
          "[nvme]")
{
    Fixture f;
    uint16_t cntlid;
    Queue& admin = f.admin(cntlid, 0);  // connected, not enabled
    auto io_connect = [&](uint16_t qid, std::vector<uint8_t> data, uint16_t sqsize = 127) {
        Queue& q = f.new_queue();
        return f.run(q, connect_sqe(qid, sqsize), data);
    };
    constexpr uint32_t kData = 1u << 16;
    // Before CC.EN: no I/O queue.
    CHECK(io_connect(1, connect_data(kSubnqn, kHostnqn, cntlid)).status == kCmdSeqError);
    REQUIRE(f.run(admin, property_set(0x14, kCcEnableAll)).status == 0);

    Result r = io_connect(1, connect_data(kSubnqn, kHostnqn, uint16_t(cntlid + 100)));
    CHECK(r.status == kInvalidParam);
    CHECK(r.dw0 == (kData | 16));
    r = io_connect(1, connect_data(kSubnqn, "nqn.2014-08.org.nvmexpress:uuid:host-b", cntlid));
    CHECK(r.status == kInvalidParam);
    CHECK(r.dw0 == (kData | 512));
    r = io_connect(1, connect_data(kSubnqn, kHostnqn, cntlid, 9));
    CHECK(r.status == kInvalidParam);
    CHECK(r.dw0 == (kData | 0));
    r = io_connect(1, connect_data(kSubnqn, kHostnqn, cntlid), 0);
    CHECK(r.dw0 == 44);

    // Number of Queues bounds the QIDs.
    r = f.run(admin, features(true, 0x07, 1u | 1u << 16));
    REQUIRE(r.status == 0);
    CHECK(r.dw0 == (1u | 1u << 16));
    r = io_connect(3, connect_data(kSubnqn, kHostnqn, cntlid));
    CHECK(r.status == kInvalidParam);
    CHECK(r.dw0 == 42);

    Queue& io = f.io_queue(cntlid, 1);
    CHECK(io.qp->qid() == 1);
    CHECK(io.qp->queue_size() == 128);
    r = io_connect(1, connect_data(kSubnqn, kHostnqn, cntlid));  // QID 1 is taken
    CHECK(r.status == kInvalidParam);
    CHECK(r.dw0 == 42);
    f.io_queue(cntlid, 2);
    // Properties belong to the admin queue; admin commands sent on an I/O
    // queue are I/O opcodes.
    CHECK(f.run(io, property_get(0x00, true)).status == (0x01 | kDnr));
}

TEST_CASE("nvme fabrics: properties and the CC/CSTS state machine", "[nvme]")
{
    Fixture f;
    uint16_t cntlid;
    Queue& q = f.admin(cntlid, 0);
    Result r = f.run(q, property_get(0x00, true));
    REQUIRE(r.status == 0);
    uint64_t cap = uint64_t(r.dw1) << 32 | r.dw0;
    CHECK((cap & 0xffff) == 127);        // MQES
    CHECK((cap >> 16 & 1) == 1);         // CQR
    CHECK((cap >> 24 & 0xff) == 15);     // TO
    CHECK((cap >> 37 & 0xff) == 0x41);   // CSS: NVM + I/O command sets
    CHECK((cap >> 48 & 0xf) == 0);       // MPSMIN
    CHECK(f.run(q, property_get(0x00, false)).status == (0x02 | kDnr));
    CHECK(f.run(q, property_get(0x08, false)).dw0 == 0x00010400);
    CHECK(f.run(q, property_get(0x08, true)).status == (0x02 | kDnr));
    CHECK(f.run(q, property_get(0x20, false)).status == (0x02 | kDnr));
    CHECK(f.run(q, property_set(0x08, 0)).status == (0x02 | kDnr));
    CHECK(f.run(q, property_get(0x1c, false)).dw0 == 0);

    // Admin commands wait for CSTS.RDY.
    std::vector<uint8_t> id(4096);
    CHECK(f.run(q, identify(1), id).status == kCmdSeqError);

    auto csts = [&] { return f.run(q, property_get(0x1c, false)).dw0; };
    // Enable with fields nvmet refuses: CFS, not RDY.
    for (uint32_t bad : {1u | 6u << 4 | 7u << 16 | 4u << 20,  // IOSQES 7
                         kCcEnableAll | 1u << 7,              // MPS 1
                         kCcEnableAll | 1u << 11,             // AMS 1
                         1u | 1u << 4 | 6u << 16 | 4u << 20}) {  // CSS 001b
        REQUIRE(f.run(q, property_set(0x14, bad)).status == 0);
        CHECK(csts() == 2);
        REQUIRE(f.run(q, property_set(0x14, 0)).status == 0);
        CHECK(csts() == 0);
    }
    REQUIRE(f.run(q, property_set(0x14, kCcEnableAll)).status == 0);
    CHECK(csts() == 1);
    CHECK(f.run(q, property_get(0x14, false)).dw0 == kCcEnableAll);
    CHECK(f.run(q, identify(1), id).status == 0);
    // Shutdown: SHST complete; clearing SHN clears it.
    REQUIRE(f.run(q, property_set(0x14, kCcEnableAll | 1u << 14)).status == 0);
    CHECK(csts() == (1 | 2u << 2));
    REQUIRE(f.run(q, property_set(0x14, kCcEnableAll)).status == 0);
    CHECK(csts() == 1);
    // Disable: not ready.
    REQUIRE(f.run(q, property_set(0x14, 0)).status == 0);
    CHECK(csts() == 0);
    CHECK(f.run(q, identify(1), id).status == kCmdSeqError);
}

TEST_CASE("nvme fabrics: the discovery subsystem lists the port's subsystems", "[nvme]")
{
    Fixture f;
    Error err;
    NvmePortInfo other = f.port;
    other.portid = 2;
    REQUIRE(f.target->add_subsystem("nqn.2026-12.org.qemu-zoned:other-port", other, "S2", "M2", err));
    NvmePortInfo same = f.port;
    same.trsvcid = "4421";
    REQUIRE(f.target->add_subsystem("nqn.2026-12.org.qemu-zoned:second", same, "S3", "M3", err));

    uint16_t cntlid;
    Queue& q = f.admin(cntlid, 1u, 0, kNvmeDiscoveryNqn);  // no I/O queue entry sizes needed
    std::vector<uint8_t> id(4096);
    REQUIRE(f.run(q, identify(1), id).status == 0);
    CHECK(id[111] == 2);  // CNTRLTYPE: discovery
    CHECK(load_le16(&id[78]) == cntlid);
    CHECK(nqn_at(id, 768) == kNvmeDiscoveryNqn);
    CHECK(load_le16(&id[320]) != 0);  // KAS
    CHECK(f.run(q, identify(0, 1), id).status == (0x02 | kDnr));

    std::vector<uint8_t> log(3 * 1024);
    Result r = f.run(q, get_log(0x70, uint32_t(log.size())), log);
    REQUIRE(r.status == 0);
    CHECK(load_le64(&log[0]) != 0);  // GENCTR
    REQUIRE(load_le64(&log[8]) == 2);
    const uint8_t* e = &log[1024];
    CHECK(e[0] == NVMF_TRTYPE_TCP);
    CHECK(e[1] == NVMF_ADRFAM_IPV4);
    CHECK(e[2] == 2);
    CHECK(load_le16(e + 4) == 1);
    CHECK(load_le16(e + 6) == 0xffff);
    CHECK(nqn_at(log, 1024 + 32) == "4420");
    CHECK(nqn_at(log, 1024 + 256) == kSubnqn);
    CHECK(nqn_at(log, 1024 + 512) == "127.0.0.1");
    CHECK(nqn_at(log, 2048 + 32) == "4421");
    CHECK(nqn_at(log, 2048 + 256) == "nqn.2026-12.org.qemu-zoned:second");
    // A window of the log: the second entry's NQN alone.
    std::vector<uint8_t> part(256);
    REQUIRE(f.run(q, get_log(0x70, 256, 2048 + 256), part).status == 0);
    CHECK(nqn_at(part, 0) == "nqn.2026-12.org.qemu-zoned:second");
    // The discovery controller has no other log, no I/O queue.
    CHECK(f.run(q, get_log(0x02, 512), log).status == (0x109 | kDnr));
    Queue& io = f.new_queue();
    auto data = connect_data(kNvmeDiscoveryNqn, kHostnqn, cntlid);
    r = f.run(io, connect_sqe(1, 31), data);
    CHECK(r.status == kInvalidParam);
    CHECK(r.dw0 == 42);

    run_sync(f.ctx, f.target->co_remove_subsystem("nqn.2026-12.org.qemu-zoned:other-port"));
    run_sync(f.ctx, f.target->co_remove_subsystem("nqn.2026-12.org.qemu-zoned:second"));
    REQUIRE(f.run(q, get_log(0x70, uint32_t(log.size())), log).status == 0);
    CHECK(load_le64(&log[8]) == 1);
}

TEST_CASE("nvme fabrics: closing the admin queue disconnects the I/O queues", "[nvme]")
{
    Fixture f;
    uint16_t cntlid;
    Queue& admin = f.admin(cntlid);
    Queue& io1 = f.io_queue(cntlid, 1);
    Queue& io2 = f.io_queue(cntlid, 2);
    f.queues.front().reset();  // the admin queue
    (void)admin;
    CHECK(io1.transport.disconnects == 1);
    CHECK(io2.transport.disconnects == 1);
    std::vector<uint8_t> buf(512);
    CHECK(f.run(io1, rw(0x02, 1, 0, 1), buf).status == 0x08);  // Aborted - SQ Deletion
    // The CNTLID is gone: no new I/O queue joins it.
    Queue& late = f.new_queue();
    auto data = connect_data(kSubnqn, kHostnqn, cntlid);
    CHECK(f.run(late, connect_sqe(3, 31), data).status == kInvalidParam);
}

TEST_CASE("nvme fabrics: removing a subsystem disconnects its controllers", "[nvme]")
{
    Fixture f;
    uint16_t cntlid;
    Queue& admin = f.admin(cntlid);
    Queue& io = f.io_queue(cntlid, 1);
    run_sync(f.ctx, f.target->co_remove_subsystem(kSubnqn));
    CHECK(admin.transport.disconnects == 1);
    CHECK(io.transport.disconnects == 1);
    CHECK(f.target->find_subsystem(kSubnqn) == nullptr);
    std::vector<uint8_t> id(4096);
    CHECK(f.run(admin, identify(1), id).status == 0x08);
}

TEST_CASE("nvme fabrics: subsystem NQN, serial and model are checked", "[nvme]")
{
    AioContext ctx;
    NvmeTarget t(ctx);
    NvmePortInfo port;
    Error err;
    CHECK_FALSE(t.add_subsystem("not-an-nqn", port, "S", "M", err));
    CHECK(err.message.find("is not an NQN") != std::string::npos);
    CHECK_FALSE(t.add_subsystem(kNvmeDiscoveryNqn, port, "S", "M", err));
    CHECK_FALSE(t.add_subsystem(kSubnqn, port, std::string(21, 'x'), "M", err));
    CHECK(err.message.find("serial number") != std::string::npos);
    CHECK_FALSE(t.add_subsystem(kSubnqn, port, "S", std::string(41, 'x'), err));
    REQUIRE(t.add_subsystem(kSubnqn, port, "S", "M", err));
    CHECK_FALSE(t.add_subsystem(kSubnqn, port, "S", "M", err));
    CHECK(err.message == std::string("subsystem '") + kSubnqn + "' already exists");
    run_sync(ctx, t.co_remove_subsystem(kSubnqn));
}
