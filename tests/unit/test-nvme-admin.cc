// The NVMe model's admin command set (hw/nvme/identify.cc, features.cc,
// log-pages.cc, controller.cc): Identify structures, features, log pages,
// asynchronous events, Abort and keep-alive expiry.
#include <catch2/catch.hpp>

#include <optional>

#include "nvme-test-util.h"

using namespace qemu;
using namespace nvme_test;

namespace {

constexpr uint16_t kInvalidField = 0x02 | kDnr;

// An admin queue, enabled, with namespaces: 1 (512-byte blocks, 1 MiB),
// 2 (4 KiB blocks on a 4 KiB-aligned node, 2 MiB), 3 (read-only).
struct AdminFixture : Fixture {
    uint16_t cntlid = 0;
    Queue* q = nullptr;
    explicit AdminFixture(uint32_t max_data_transfer = 0)
    {
        port.max_data_transfer = max_data_transfer;
        attach(open_mem(ctx, "size=1M"));
        attach(open_mem(ctx, "size=2M,align=4096"));
        attach(open_mem(ctx, "size=1M", 0));
        q = &admin(cntlid);
    }
    Result cmd(const NvmeSqe& s, std::vector<uint8_t>& buf) { return run(*q, s, buf); }
    Result cmd(const NvmeSqe& s) { return run(*q, s); }
};

std::string text_at(const std::vector<uint8_t>& b, size_t off, size_t len)
{
    return std::string(reinterpret_cast<const char*>(&b[off]), len);
}

// Parks an AER on q; its result lands in `out`.
void post_aer(Fixture& f, Queue& q, std::optional<Result>& out)
{
    co_spawn([](NvmeQueuePair& qp, std::optional<Result>& r) -> Task<void> {
        Result res = co_await co_exec(qp, sqe(0x0c), nullptr, 0);
        r = res;
    }(*q.qp, out));
    while (f.ctx.poll(false)) {
    }
}

void settle(Fixture& f)
{
    while (f.ctx.poll(false)) {
    }
}

}  // namespace

TEST_CASE("nvme admin: Identify Controller satisfies the Linux host's checks", "[nvme]")
{
    AdminFixture f(1 << 20);
    std::vector<uint8_t> id(4096);
    REQUIRE(f.cmd(identify(1), id).status == 0);
    CHECK(text_at(id, 4, 20) == "SERIAL0001          ");
    CHECK(text_at(id, 24, 15) == "qemu-zoned test");
    CHECK(id[76] == 0x02);  // CMIC: several controllers, no ANA
    CHECK(id[77] == 8);     // MDTS: 4 KiB << 8 = 1 MiB
    CHECK(load_le16(&id[78]) == f.cntlid);
    CHECK(load_le32(&id[80]) == 0x00010400);
    CHECK(load_le32(&id[92]) == 1u << 8);  // OAES: namespace attribute notices
    CHECK(id[111] == 1);
    CHECK(id[259] == 3);  // AERL
    CHECK(id[261] == 0x06);
    CHECK(load_le16(&id[320]) == 10);  // KAS
    CHECK(id[512] == 0x66);
    CHECK(id[513] == 0x44);
    CHECK(load_le16(&id[514]) == 128);  // MAXCMD
    CHECK(load_le32(&id[516]) == 1024);
    CHECK(load_le16(&id[520]) == 0x0d);  // ONCS: Compare, DSM, Write Zeroes
    CHECK(id[525] == 0x07);
    CHECK(load_le32(&id[536]) == (1u | 1u << 20));
    CHECK(std::string(reinterpret_cast<const char*>(&id[768])) == kSubnqn);
    CHECK(load_le32(&id[1792]) == (64 + 8192) / 16);
    CHECK(load_le32(&id[1796]) == 1);
    CHECK(load_le16(&id[1800]) == 0);
    CHECK(id[1803] == 1);
    // A buffer too small for the structure.
    std::vector<uint8_t> small(1024);
    CHECK(f.cmd(identify(1), small).status == (0x0f | kDnr));
    CHECK(f.cmd(identify(0x10), id).status == kInvalidField);
    CHECK(f.cmd(sqe(0x01)).status == (0x01 | kDnr));  // Create I/O SQ: not on fabrics
    NvmeSqe fused = identify(1);
    fused.bytes[1] |= 1;
    CHECK(f.cmd(fused, id).status == kInvalidField);
    NvmeSqe prp = identify(1);
    prp.bytes[1] = 0;
    CHECK(f.cmd(prp, id).status == kInvalidField);
}

TEST_CASE("nvme admin: Identify namespaces, lists and descriptors", "[nvme]")
{
    AdminFixture f;
    std::vector<uint8_t> id(4096);
    REQUIRE(f.cmd(identify(0, 1), id).status == 0);
    CHECK(load_le64(&id[0]) == 2048);  // NSZE
    CHECK(load_le64(&id[8]) == 2048);
    CHECK(id[130] == 9);  // LBAF0 LBADS
    CHECK(id[99] == 0);
    REQUIRE(f.cmd(identify(0, 2), id).status == 0);
    CHECK(load_le64(&id[0]) == 512);
    CHECK(id[130] == 12);
    REQUIRE(f.cmd(identify(0, 3), id).status == 0);
    CHECK(id[99] == 1);  // NSATTR: write protected
    // An NSID without a namespace reads as zeroes; 0 and beyond NN do not.
    REQUIRE(f.cmd(identify(0, 7), id).status == 0);
    CHECK(load_le64(&id[0]) == 0);
    CHECK(f.cmd(identify(0, 0), id).status == (0x0b | kDnr));
    CHECK(f.cmd(identify(0, 2000), id).status == (0x0b | kDnr));

    REQUIRE(f.cmd(identify(2, 0), id).status == 0);
    CHECK(load_le32(&id[0]) == 1);
    CHECK(load_le32(&id[4]) == 2);
    CHECK(load_le32(&id[8]) == 3);
    CHECK(load_le32(&id[12]) == 0);
    REQUIRE(f.cmd(identify(2, 2), id).status == 0);
    CHECK(load_le32(&id[0]) == 3);
    CHECK(load_le32(&id[4]) == 0);
    CHECK(f.cmd(identify(2, 0xfffffffe), id).status == (0x0b | kDnr));
    REQUIRE(f.cmd(identify(7, 0, 0), id).status == 0);  // NVM namespaces
    CHECK(load_le32(&id[8]) == 3);
    REQUIRE(f.cmd(identify(7, 0, 2), id).status == 0);  // zoned: none
    CHECK(load_le32(&id[0]) == 0);

    // Descriptors: EUI-64, NGUID, UUID, CSI; distinct per namespace and
    // stable (derived from the subsystem NQN and NSID).
    REQUIRE(f.cmd(identify(3, 1), id).status == 0);
    CHECK(id[0] == 1);
    CHECK(id[1] == 8);
    CHECK(id[12] == 2);
    CHECK(id[13] == 16);
    CHECK(id[32] == 3);
    CHECK(id[33] == 16);
    CHECK(id[52] == 4);
    CHECK(id[53] == 1);
    CHECK(id[56] == 0);  // CSI NVM
    CHECK(id[57] == 0);  // end of the list
    std::vector<uint8_t> uuid1(&id[36], &id[52]);
    CHECK((uuid1[6] >> 4) == 8);  // version 8 (name-based, custom)
    REQUIRE(f.cmd(identify(3, 2), id).status == 0);
    CHECK(std::vector<uint8_t>(&id[36], &id[52]) != uuid1);
    CHECK(f.cmd(identify(3, 9), id).status == (0x0b | kDnr));

    // Command-set specific structures.
    REQUIRE(f.cmd(identify(5, 1, 0), id).status == 0);
    CHECK(f.cmd(identify(5, 1, 2), id).status == kInvalidField);
    CHECK(f.cmd(identify(5, 1, 1), id).status == kInvalidField);
    REQUIRE(f.cmd(identify(6, 0, 0), id).status == 0);
    CHECK(f.cmd(identify(6, 0, 1), id).status == kInvalidField);
    REQUIRE(f.cmd(identify(8, 3), id).status == 0);
    CHECK(id[8] == 1);   // write protected
    CHECK(id[13] == 1);  // ready
    REQUIRE(f.cmd(identify(0x1c), id).status == 0);
    CHECK(load_le64(&id[0]) == 0x5);  // NVM + Zoned
}

TEST_CASE("nvme admin: a given UUID and NSID, and namespaces refused", "[nvme]")
{
    Fixture f;
    NvmeNamespaceOptions opts;
    opts.nsid = 5;
    opts.uuid = "0123abcd-4567-89ef-0123-456789abcdef";
    CHECK(f.attach(open_mem(f.ctx, "size=1M"), opts) == 5);
    uint16_t cntlid;
    Queue& q = f.admin(cntlid);
    std::vector<uint8_t> id(4096);
    REQUIRE(f.run(q, identify(3, 5), id).status == 0);
    CHECK(id[36] == 0x01);
    CHECK(id[37] == 0x23);
    CHECK(id[51] == 0xef);

    auto refused = [&](const std::string& node, NvmeNamespaceOptions o) {
        auto blk = open_mem(f.ctx, node);
        Error err;
        uint32_t nsid = run_sync(f.ctx, f.subsys->co_add_namespace(*blk, o, err));
        CHECK(nsid == 0);
        return err.message;
    };
    CHECK(refused("size=1M", opts) == "NSID 5 is in use");
    NvmeNamespaceOptions o;
    o.nsid = 1025;
    CHECK(refused("size=1M", o) == "NSID 1025 is out of range (1 to 1024)");
    o = {};
    o.uuid = "not-a-uuid";
    CHECK(refused("size=1M", o) == "'not-a-uuid' is not a UUID");
    o = {};
    o.logical_block_size = 1024;
    CHECK(refused("size=1M", o) == "logical block size 1024 is not 512 or 4096");
    o.logical_block_size = 512;
    CHECK(refused("size=1M,align=4096", o) ==
          "logical block size 512 is not a multiple of the node's request alignment 4096");
    o.logical_block_size = 4096;
    CHECK(refused("size=6k", o) ==
          "the node's size 6144 is not a non-zero multiple of the logical block size 4096");
}

TEST_CASE("nvme admin: features", "[nvme]")
{
    AdminFixture f;
    auto get = [&](uint8_t fid, unsigned sel = 0) {
        NvmeSqe s = features(false, fid);
        s.set_cdw(10, fid | sel << 8);
        return f.cmd(s);
    };
    CHECK(get(0x06).dw0 == 1);  // volatile write cache on
    REQUIRE(f.cmd(features(true, 0x06, 0)).status == 0);
    CHECK(get(0x06).dw0 == 0);
    CHECK(get(0x06, 1).dw0 == 1);  // default
    CHECK(get(0x06, 2).dw0 == 1);  // saved: not saveable, so the default
    CHECK(get(0x06, 3).dw0 == 4);  // changeable
    CHECK(get(0x06, 4).status == kInvalidField);

    CHECK(f.cmd(features(true, 0x07, 0xffff)).status == kInvalidField);
    Result r = f.cmd(features(true, 0x07, 3u | 5u << 16));
    REQUIRE(r.status == 0);
    CHECK(r.dw0 == (3u | 3u << 16));  // pairs: the smaller request
    CHECK(get(0x07).dw0 == (3u | 3u << 16));
    CHECK(f.cmd(features(true, 0x07, 9u | 9u << 16)).dw0 == (3u | 3u << 16));  // granted once

    CHECK(f.cmd(features(true, 0x0b, 1)).status == kInvalidField);  // SMART warnings: never sent
    REQUIRE(f.cmd(features(true, 0x0b, 1u << 8)).status == 0);
    CHECK(get(0x0b).dw0 == 1u << 8);
    REQUIRE(f.cmd(features(true, 0x0f, 120000)).status == 0);
    CHECK(get(0x0f).dw0 == 120000);
    CHECK(f.q->qp->keep_alive_ms() == 120000);
    REQUIRE(f.cmd(features(true, 0x01, 7)).status == 0);
    CHECK(get(0x01).dw0 == 7);
    CHECK(f.cmd(features(true, 0x02, 0)).status == 0);
    CHECK(f.cmd(features(true, 0x02, 1)).status == kInvalidField);
    CHECK(get(0x02).dw0 == 0);

    CHECK(get(0x04).status == kInvalidField);  // temperature threshold: none
    CHECK(f.cmd(features(true, 0x0e, 0)).status == kInvalidField);
    NvmeSqe save = features(true, 0x06, 1);
    save.set_cdw(10, 0x06 | 1u << 31);
    CHECK(f.cmd(save).status == (0x10d | kDnr));
}

TEST_CASE("nvme admin: log pages honour length and offset", "[nvme]")
{
    AdminFixture f;
    // Error information: the newest failure first.
    NvmeSqe bad = identify(0x10);
    bad.set_le16_at(2, 0x1234);
    std::vector<uint8_t> id(4096);
    REQUIRE(f.cmd(bad, id).status == kInvalidField);
    std::vector<uint8_t> errs(1024);
    REQUIRE(f.cmd(get_log(0x01, 1024), errs).status == 0);
    CHECK(load_le64(&errs[0]) == 1);
    CHECK(load_le16(&errs[8]) == 0);
    CHECK(load_le16(&errs[10]) == 0x1234);
    CHECK(load_le16(&errs[12]) == uint16_t(kInvalidField << 1));
    CHECK(load_le64(&errs[64]) == 0);  // one entry only
    REQUIRE(f.cmd(identify(0x11), id).status == kInvalidField);
    REQUIRE(f.cmd(get_log(0x01, 1024), errs).status == 0);
    CHECK(load_le64(&errs[0]) == 2);
    CHECK(load_le64(&errs[64]) == 1);
    CHECK(load_le16(&errs[64 + 10]) == 0x1234);

    std::vector<uint8_t> log(4096);
    // Commands supported and effects, per command set.
    REQUIRE(f.cmd(get_log(0x05, 4096, 0, 0, 0), log).status == 0);
    CHECK(load_le32(&log[4 * 0x06]) == 1);         // Identify
    CHECK(load_le32(&log[1024 + 4 * 0x01]) == 3);  // Write: CSUPP + LBCC
    CHECK(load_le32(&log[1024 + 4 * 0x02]) == 1);  // Read
    CHECK(load_le32(&log[1024 + 4 * 0x7d]) == 0);
    REQUIRE(f.cmd(get_log(0x05, 4096, 0, 0, 2), log).status == 0);
    CHECK(load_le32(&log[1024 + 4 * 0x7d]) == 3);  // Zone Append
    CHECK(load_le32(&log[1024 + 4 * 0x7a]) == 1);
    CHECK(f.cmd(get_log(0x05, 4096, 0, 0, 1), log).status == kInvalidField);
    std::vector<uint8_t> part(8, 0xaa);
    REQUIRE(f.cmd(get_log(0x05, 8, 1024 + 4), part).status == 0);
    CHECK(load_le32(&part[0]) == 3);
    CHECK(load_le32(&part[4]) == 1);
    CHECK(f.cmd(get_log(0x05, 8, 2), part).status == kInvalidField);     // not dword-aligned
    CHECK(f.cmd(get_log(0x05, 8, 8192), part).status == kInvalidField);  // past the end
    CHECK(f.cmd(get_log(0x05, 4096), part).status == (0x0f | kDnr));     // buffer too small
    CHECK(f.cmd(get_log(0xbf, 4096), log).status == (0x109 | kDnr));     // no zone-changed AEN
    CHECK(f.cmd(get_log(0x70, 4096), log).status == (0x109 | kDnr));

    // Firmware slot.
    std::vector<uint8_t> fw(512);
    REQUIRE(f.cmd(get_log(0x03, 512), fw).status == 0);
    CHECK(fw[0] == 1);
    CHECK(text_at(fw, 8, 5) == QEMU_ZONED_VERSION);

    // SMART: counters of this controller's I/O.
    Queue& io = f.io_queue(f.cntlid, 1);
    std::vector<uint8_t> data(4096, 0x5a);
    REQUIRE(f.run(io, rw(0x01, 1, 0, 8), data).status == 0);
    REQUIRE(f.run(io, rw(0x02, 1, 0, 8), data).status == 0);
    REQUIRE(f.run(io, rw(0x02, 1, 0, 8), data).status == 0);
    std::vector<uint8_t> smart(512);
    REQUIRE(f.cmd(get_log(0x02, 512, 0, 0xffffffff), smart).status == 0);
    CHECK(smart[3] == 100);
    CHECK(load_le64(&smart[32]) == 1);  // data units read (1000 x 512 bytes, rounded up)
    CHECK(load_le64(&smart[48]) == 1);
    CHECK(load_le64(&smart[64]) == 2);  // host read commands
    CHECK(load_le64(&smart[80]) == 1);
    CHECK(load_le64(&smart[176]) == 8);  // errors so far in this test
    CHECK(f.cmd(get_log(0x02, 512, 0, 1), smart).status == kInvalidField);
}

TEST_CASE("nvme admin: AERs complete on namespace changes, once per log read", "[nvme]")
{
    AdminFixture f;
    REQUIRE(f.cmd(features(true, 0x0b, 1u << 8)).status == 0);
    std::optional<Result> aer;
    post_aer(f, *f.q, aer);
    CHECK_FALSE(aer);
    uint32_t nsid = f.attach(open_mem(f.ctx, "size=1M"));
    settle(f);
    REQUIRE(aer);
    CHECK(aer->status == 0);
    CHECK(aer->dw0 == 0x040002);  // notice, attribute changed, log 04h

    // Masked until log 04h is read.
    aer.reset();
    post_aer(f, *f.q, aer);
    f.remove_namespace(nsid);
    settle(f);
    CHECK_FALSE(aer);
    std::vector<uint8_t> log(4096);
    REQUIRE(f.cmd(get_log(0x04, 4096), log).status == 0);
    CHECK(load_le32(&log[0]) == nsid);
    CHECK(load_le32(&log[4]) == 0);
    // Read again: empty; the next change is reported.
    REQUIRE(f.cmd(get_log(0x04, 4096), log).status == 0);
    CHECK(load_le32(&log[0]) == 0);
    f.remove_namespace(2);
    settle(f);
    REQUIRE(aer);
    CHECK(aer->dw0 == 0x040002);
    // The removed namespace is gone from the active list.
    REQUIRE(f.cmd(identify(2, 0), log).status == 0);
    CHECK(load_le32(&log[0]) == 1);
    CHECK(load_le32(&log[4]) == 3);
}

TEST_CASE("nvme admin: AER limit, no events while disabled, cancel_waiting", "[nvme]")
{
    AdminFixture f;
    std::optional<Result> aers[5];
    for (int i = 0; i < 4; i++) {
        post_aer(f, *f.q, aers[i]);
        CHECK_FALSE(aers[i]);
    }
    post_aer(f, *f.q, aers[4]);
    REQUIRE(aers[4]);
    CHECK(aers[4]->status == (0x105 | kDnr));
    // Namespace notices are off (Async Event Configuration 0).
    f.remove_namespace(1);
    settle(f);
    CHECK_FALSE(aers[0]);
    f.q->qp->cancel_waiting();
    settle(f);
    for (int i = 0; i < 4; i++) {
        REQUIRE(aers[i]);
        CHECK(aers[i]->status == 0x08);
    }
}

TEST_CASE("nvme admin: Abort answers not aborted; Keep Alive", "[nvme]")
{
    AdminFixture f;
    NvmeSqe abort = sqe(0x08);
    abort.set_cdw(10, 5u << 16);
    Result r = f.cmd(abort);
    CHECK(r.status == 0);
    CHECK(r.dw0 == 1);
    CHECK(f.cmd(sqe(0x18)).status == 0);
}

TEST_CASE("nvme admin: keep-alive expiry drops every queue of the controller", "[nvme]")
{
    Fixture f;
    uint16_t cntlid;
    Queue& admin = f.admin(cntlid, kCcEnableAll, 20);
    Queue& io = f.io_queue(cntlid, 1);
    uint16_t other_cntlid;
    Queue& other = f.admin(other_cntlid);
    // No Keep Alive is sent: the timer fires.
    while (admin.transport.disconnects == 0) {
        f.ctx.poll(true);
    }
    CHECK(io.transport.disconnects == 1);
    CHECK(other.transport.disconnects == 0);
    CHECK((f.run(admin, property_get(0x1c, false)).dw0 & 2) == 2);  // CSTS.CFS
}
