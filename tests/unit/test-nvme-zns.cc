// The Zoned Namespace command set of the NVMe model (hw/nvme/zns-cmds.cc,
// identify.cc) on zoned qcow2 images: geometry from BlockLimits, Zone
// Management Send and Receive, Zone Append, every ZNS status code, and zone
// state that persists across a restart.
#include <catch2/catch.hpp>

#include "crash-sim-test-util.h"
#include "nvme-test-util.h"

using namespace qemu;
using namespace nvme_test;

namespace {

using ZonedImage = qcow2_test::CreatedImage;

// 16 zones of 1 MiB (2048 blocks), capacity 768 KiB (1536 blocks).
constexpr const char* kZonedOpts =
    "size=16M,zone.mode=host-managed,zone.size=1M,zone.capacity=768k,zone.max_open_zones=2,"
    "zone.max_active_zones=3,zone.max_append_bytes=64k,zone.descriptor_extension_size=128";
constexpr uint64_t kZone = 2048;  // blocks
constexpr uint64_t kCap = 1536;
constexpr uint16_t kInvalidField = 0x02 | kDnr;

enum : uint8_t { kClose = 1, kFinish = 2, kOpen = 3, kReset = 4, kOffline = 5, kSetZde = 0x10 };

NvmeSqe zms(uint32_t nsid, uint64_t slba, uint8_t zsa, bool all = false)
{
    NvmeSqe s = sqe(0x79, nsid);
    s.set_cdw(10, uint32_t(slba));
    s.set_cdw(11, uint32_t(slba >> 32));
    s.set_cdw(13, zsa | (all ? 1u << 8 : 0));
    return s;
}

NvmeSqe zmr(uint32_t nsid, uint64_t slba, uint32_t bytes, uint8_t zra = 0, uint8_t zrasf = 0,
            bool partial = false)
{
    NvmeSqe s = sqe(0x7a, nsid);
    s.set_cdw(10, uint32_t(slba));
    s.set_cdw(11, uint32_t(slba >> 32));
    s.set_cdw(12, bytes / 4 - 1);
    s.set_cdw(13, zra | uint32_t(zrasf) << 8 | (partial ? 1u << 16 : 0));
    return s;
}

struct Zone {
    uint8_t type, state, attrs;
    uint64_t zcap, zslba, wp;
};

// A connected host with the zoned image as namespace 1 (and, when given,
// more nodes after it); CC.CSS selects every I/O command set.
struct ZnsFixture : Fixture {
    ZonedImage img;
    Queue* adm = nullptr;
    Queue* io = nullptr;
    uint16_t cntlid = 0;
    explicit ZnsFixture(const std::string& opts = kZonedOpts, uint32_t cc = kCcEnableAll)
        : img(opts)
    {
        attach(img.open(ctx));
        adm = &admin(cntlid, cc);
        io = &io_queue(cntlid, 1);
    }
    BlockBackend& blk() { return *blks[0]; }
    Result cmd(const NvmeSqe& s, std::vector<uint8_t>& buf) { return run(*io, s, buf); }
    Result cmd(const NvmeSqe& s) { return run(*io, s); }
    uint16_t write(uint64_t slba, uint32_t nlb)
    {
        std::vector<uint8_t> data(nlb * 512, uint8_t(slba));
        return cmd(rw(0x01, 1, slba, nlb), data).status;
    }
    // The zones from slba's on, as a full report (up to 16).
    std::vector<Zone> report(uint64_t slba = 0, uint8_t zrasf = 0)
    {
        std::vector<uint8_t> buf(64 + 16 * 64);
        Result r = cmd(zmr(1, slba, uint32_t(buf.size()), 0, zrasf, true), buf);
        REQUIRE(r.status == 0);
        std::vector<Zone> zones;
        for (uint64_t i = 0; i < load_le64(&buf[0]); i++) {
            const uint8_t* d = &buf[64 + 64 * i];
            zones.push_back({d[0], uint8_t(d[1] >> 4), d[2], load_le64(d + 8), load_le64(d + 16),
                             load_le64(d + 24)});
        }
        return zones;
    }
    uint8_t state(unsigned zone) { return report(zone * kZone)[0].state; }
    void fault(BlockZoneOp op, unsigned zone)
    {
        REQUIRE(run_sync(ctx, blk().co_zone_mgmt(op, zone * kZone * 512, kZone * 512)) == 0);
    }
};

constexpr uint8_t kEmpty = 1, kImplicit = 2, kExplicit = 3, kClosed = 4, kReadOnly = 0xd,
                  kFull = 0xe, kOfflineState = 0xf;

}  // namespace

TEST_CASE("nvme zns: the namespace shows the node's geometry and limits", "[nvme][zns]")
{
    ZnsFixture f;
    std::vector<uint8_t> id(4096);
    REQUIRE(f.run(*f.adm, identify(5, 1, 2), id).status == 0);
    CHECK(load_le16(&id[0]) == 0);       // ZOC
    CHECK(load_le16(&id[2]) == 1);       // OZCS: RAZB
    CHECK(load_le32(&id[4]) == 2);       // MAR = max active - 1
    CHECK(load_le32(&id[8]) == 1);       // MOR = max open - 1
    CHECK(load_le64(&id[2816]) == kZone);  // ZSZE
    CHECK(id[2824] == 2);                // ZDES: 128 bytes
    REQUIRE(f.run(*f.adm, identify(6, 0, 2), id).status == 0);
    CHECK(id[0] == 4);  // ZASL: 64 KiB = 4 KiB << 4
    REQUIRE(f.run(*f.adm, identify(0, 1), id).status == 0);
    CHECK(load_le64(&id[0]) == 16 * kZone);
    REQUIRE(f.run(*f.adm, identify(3, 1), id).status == 0);
    CHECK(id[52] == 4);
    CHECK(id[56] == 2);  // CSI: zoned
    REQUIRE(f.run(*f.adm, identify(7, 0, 2), id).status == 0);
    CHECK(load_le32(&id[0]) == 1);

    auto zones = f.report();
    REQUIRE(zones.size() == 16);
    CHECK(zones[3].type == 2);
    CHECK(zones[3].state == kEmpty);
    CHECK(zones[3].zcap == kCap);
    CHECK(zones[3].zslba == 3 * kZone);
    CHECK(zones[3].wp == 3 * kZone);
}

TEST_CASE("nvme zns: no limits are FFFFFFFFh; zoned namespaces need CC.CSS 110b", "[nvme][zns]")
{
    ZnsFixture f("size=8M,zone.mode=host-managed,zone.size=1M", kCcEnableNvm);
    std::vector<uint8_t> id(4096);
    // Under CC.CSS 000b the zoned namespace is not there.
    REQUIRE(f.run(*f.adm, identify(2, 0), id).status == 0);
    CHECK(load_le32(&id[0]) == 0);
    std::vector<uint8_t> buf(512);
    CHECK(f.cmd(rw(0x02, 1, 0, 1), buf).status == (0x0b | kDnr));
    // Enabled again with every command set, it is.
    REQUIRE(f.run(*f.adm, property_set(0x14, 0)).status == 0);
    REQUIRE(f.run(*f.adm, property_set(0x14, kCcEnableAll)).status == 0);
    REQUIRE(f.run(*f.adm, identify(5, 1, 2), id).status == 0);
    CHECK(load_le32(&id[4]) == 0xffffffff);
    CHECK(load_le32(&id[8]) == 0xffffffff);
    CHECK(id[2824] == 0);
    // ZASL follows the node's append limit (zoned qcow2's default here).
    uint64_t limit = f.blk().bs()->limits().max_append_bytes;
    REQUIRE(limit >= 4096);
    REQUIRE(f.run(*f.adm, identify(6, 0, 2), id).status == 0);
    CHECK((4096ull << id[0]) <= limit);
    CHECK((4096ull << (id[0] + 1)) > limit);
}

TEST_CASE("nvme zns: nodes a ZNS namespace cannot show are refused", "[nvme][zns]")
{
    Fixture f;
    auto refused = [&](const std::string& opts) {
        ZonedImage img(opts);
        auto blk = img.open(f.ctx);
        Error err;
        CHECK(run_sync(f.ctx, f.subsys->co_add_namespace(*blk, {}, err)) == 0);
        return err.message;
    };
    CHECK(refused("size=8M,zone.mode=host-managed,zone.size=1M,zone.conventional_zones=1") ==
          "the node has conventional zones, which a ZNS namespace cannot show (export them as a "
          "separate namespace through a raw node)");
    CHECK(refused("size=8M,zone.mode=host-aware,zone.size=1M") ==
          "a host-aware zoned node cannot be a ZNS namespace");
    CHECK(refused("size=9M,zone.mode=host-managed,zone.size=2M") ==
          "the node's size 9437184 is not a multiple of its zone size 2097152");
}

TEST_CASE("nvme zns: write rules give the ZNS status codes", "[nvme][zns]")
{
    ZnsFixture f;
    REQUIRE(f.write(0, 8) == 0);
    CHECK(f.state(0) == kImplicit);
    CHECK(f.write(0, 8) == (0x1bc | kDnr));           // Zone Invalid Write: not at the WP
    CHECK(f.write(16, 8) == (0x1bc | kDnr));
    CHECK(f.write(8, kCap) == (0x1b8 | kDnr));        // Zone Boundary Error: past ZCAP
    REQUIRE(f.write(8, kCap - 8) == 0);
    CHECK(f.state(0) == kFull);
    CHECK(f.write(kCap, 1) == (0x1b9 | kDnr));        // Zone Is Full
    // Reads cross zone boundaries (RAZB) and see zeroes above the WP.
    std::vector<uint8_t> buf(4096, 0xff);
    REQUIRE(f.cmd(rw(0x02, 1, kZone - 4, 8), buf).status == 0);
    CHECK(buf[4 * 512] == 0);

    f.fault(BlockZoneOp::SetReadOnly, 2);
    CHECK(f.write(2 * kZone, 1) == (0x1ba | kDnr));   // Zone Is Read Only
    REQUIRE(f.cmd(zms(1, 2 * kZone, kOffline)).status == 0);
    CHECK(f.state(2) == kOfflineState);
    CHECK(f.write(2 * kZone, 1) == (0x1bb | kDnr));   // Zone Is Offline
    CHECK(f.cmd(rw(0x02, 1, 2 * kZone, 1), buf).status == (0x1bb | kDnr));
    // Offline only from read only.
    CHECK(f.cmd(zms(1, 3 * kZone, kOffline)).status == (0x1bf | kDnr));
    REQUIRE(f.cmd(zms(1, 2 * kZone, kOffline)).status == 0);  // already offline

    // Invalid Zone State Transition: open a full zone, close an empty one.
    CHECK(f.cmd(zms(1, 0, kOpen)).status == (0x1bf | kDnr));
    CHECK(f.cmd(zms(1, 5 * kZone, kClose)).status == (0x1bf | kDnr));
}

TEST_CASE("nvme zns: open and active resources", "[nvme][zns]")
{
    ZnsFixture f;
    // Explicitly open zones stay open: the third explicit open has no
    // open resource (MOR 1 = 2 open zones).
    REQUIRE(f.cmd(zms(1, 0, kOpen)).status == 0);
    REQUIRE(f.cmd(zms(1, kZone, kOpen)).status == 0);
    CHECK(f.state(0) == kExplicit);
    CHECK(f.cmd(zms(1, 2 * kZone, kOpen)).status == (0x1be | kDnr));  // Too Many Open Zones
    CHECK(f.write(2 * kZone, 1) == (0x1be | kDnr));
    // Three active zones at most (MAR 2).
    REQUIRE(f.write(0, 1) == 0);
    REQUIRE(f.write(kZone, 1) == 0);
    REQUIRE(f.cmd(zms(1, 0, kClose)).status == 0);
    CHECK(f.state(0) == kClosed);
    REQUIRE(f.write(2 * kZone, 1) == 0);
    CHECK(f.state(2) == kImplicit);
    CHECK(f.write(3 * kZone, 1) == (0x1bd | kDnr));  // Too Many Active Zones
    CHECK(f.cmd(zms(1, 3 * kZone, kFinish)).status == (0x1bd | kDnr));
    // Finishing one frees its resource.
    REQUIRE(f.cmd(zms(1, 0, kFinish)).status == 0);
    CHECK(f.state(0) == kFull);
    REQUIRE(f.write(3 * kZone, 1) == 0);
}

TEST_CASE("nvme zns: Zone Management Send actions, one zone and Select All", "[nvme][zns]")
{
    ZnsFixture f;
    REQUIRE(f.write(0, 4) == 0);
    REQUIRE(f.write(kZone, 4) == 0);
    REQUIRE(f.cmd(zms(1, 0, kClose, true)).status == 0);  // closes the open ones
    CHECK(f.state(0) == kClosed);
    CHECK(f.state(1) == kClosed);
    REQUIRE(f.cmd(zms(1, 0, kOpen, true)).status == 0);  // opens the closed ones
    CHECK(f.state(0) == kExplicit);
    CHECK(f.state(1) == kExplicit);
    CHECK(f.state(2) == kEmpty);
    REQUIRE(f.cmd(zms(1, 0, kFinish, true)).status == 0);
    CHECK(f.state(0) == kFull);
    CHECK(f.state(1) == kFull);
    CHECK(f.state(2) == kEmpty);
    REQUIRE(f.cmd(zms(1, 0, kReset, true)).status == 0);
    CHECK(f.state(0) == kEmpty);
    CHECK(f.report()[1].wp == kZone);
    f.fault(BlockZoneOp::SetReadOnly, 4);
    f.fault(BlockZoneOp::SetReadOnly, 6);
    REQUIRE(f.cmd(zms(1, 0, kOffline, true)).status == 0);
    CHECK(f.state(4) == kOfflineState);
    CHECK(f.state(6) == kOfflineState);
    CHECK(f.state(5) == kEmpty);
    // One zone: reset of an open zone, finish of an empty one.
    REQUIRE(f.write(8 * kZone, 4) == 0);
    REQUIRE(f.cmd(zms(1, 8 * kZone, kReset)).status == 0);
    CHECK(f.state(8) == kEmpty);
    REQUIRE(f.cmd(zms(1, 9 * kZone, kFinish)).status == 0);
    CHECK(f.report(9 * kZone)[0].wp == 9 * kZone + kCap);

    // Field errors.
    NvmeSqe zrwaa = zms(1, 0, kOpen);
    zrwaa.set_cdw(13, kOpen | 1u << 9);
    CHECK(f.cmd(zrwaa).status == (0x1b6 | kDnr));  // no ZRWA
    CHECK(f.cmd(zms(1, 0, 0x06)).status == kInvalidField);
    CHECK(f.cmd(zms(1, 0, 0x11)).status == kInvalidField);
    CHECK(f.cmd(zms(1, 7, kOpen)).status == kInvalidField);  // not a zone start
    CHECK(f.cmd(zms(1, 16 * kZone, kOpen)).status == (0x80 | kDnr));
    std::vector<uint8_t> ext(128);
    CHECK(f.cmd(zms(1, 0, kSetZde, true), ext).status == kInvalidField);
}

TEST_CASE("nvme zns: descriptor extensions and extended reports", "[nvme][zns]")
{
    ZnsFixture f;
    std::vector<uint8_t> ext(128);
    for (size_t i = 0; i < ext.size(); i++) {
        ext[i] = uint8_t(i + 1);
    }
    REQUIRE(f.cmd(zms(1, 10 * kZone, kSetZde), ext).status == 0);
    CHECK(f.state(10) == kClosed);
    CHECK(f.report(10 * kZone)[0].attrs == 0x80);  // ZDEV
    CHECK(f.cmd(zms(1, 10 * kZone, kSetZde), ext).status == (0x1bf | kDnr));  // not empty
    std::vector<uint8_t> short_ext(64);
    CHECK(f.cmd(zms(1, 11 * kZone, kSetZde), short_ext).status == (0x0f | kDnr));

    constexpr size_t kDesc = 64 + 128;
    std::vector<uint8_t> buf(64 + 2 * kDesc, 0xaa);
    REQUIRE(f.cmd(zmr(1, 10 * kZone, uint32_t(buf.size()), 1, 0, true), buf).status == 0);
    CHECK(load_le64(&buf[0]) == 2);
    CHECK(buf[64 + 2] == 0x80);
    CHECK(std::equal(ext.begin(), ext.end(), buf.begin() + 128));
    CHECK(buf[64 + kDesc + 2] == 0);
    CHECK(buf[64 + kDesc + 64] == 0);  // no extension: zeroes
    CHECK(load_le64(&buf[64 + kDesc + 16]) == 11 * kZone);
    // Reset makes the zone empty and its extension invalid.
    REQUIRE(f.cmd(zms(1, 10 * kZone, kReset)).status == 0);
    CHECK(f.report(10 * kZone)[0].attrs == 0);
}

TEST_CASE("nvme zns: a node without extensions refuses them", "[nvme][zns]")
{
    ZnsFixture f("size=8M,zone.mode=host-managed,zone.size=1M");
    std::vector<uint8_t> buf(4096);
    CHECK(f.cmd(zms(1, 0, kSetZde), buf).status == kInvalidField);
    CHECK(f.cmd(zmr(1, 0, 4096, 1), buf).status == kInvalidField);
}

TEST_CASE("nvme zns: report filters, partial reports and field checks", "[nvme][zns]")
{
    ZnsFixture f;
    // One zone in each state: 0 implicitly open, 1 explicitly open, 2
    // closed, 3 full, 4 read only, 5 offline, the rest empty.
    REQUIRE(f.cmd(zms(1, 3 * kZone, kFinish)).status == 0);
    REQUIRE(f.write(0, 1) == 0);
    REQUIRE(f.write(2 * kZone, 1) == 0);
    REQUIRE(f.cmd(zms(1, 2 * kZone, kClose)).status == 0);
    REQUIRE(f.cmd(zms(1, kZone, kOpen)).status == 0);
    f.fault(BlockZoneOp::SetReadOnly, 4);
    f.fault(BlockZoneOp::SetReadOnly, 5);
    f.fault(BlockZoneOp::SetOffline, 5);
    const struct {
        uint8_t zrasf;
        uint8_t state;
        unsigned count;
        unsigned first;
    } filters[] = {
        {1, kEmpty, 10, 6},  {2, kImplicit, 1, 0}, {3, kExplicit, 1, 1},     {4, kClosed, 1, 2},
        {5, kFull, 1, 3},    {6, kReadOnly, 1, 4}, {7, kOfflineState, 1, 5},
    };
    for (const auto& flt : filters) {
        INFO("ZRASF " << int(flt.zrasf));
        auto zones = f.report(0, flt.zrasf);
        REQUIRE(zones.size() == flt.count);
        CHECK(zones[0].state == flt.state);
        CHECK(zones[0].zslba == flt.first * kZone);
    }
    // Partial: the header counts what fits; otherwise every match from
    // SLBA's zone to the end.
    std::vector<uint8_t> buf(64 + 2 * 64);
    REQUIRE(f.cmd(zmr(1, 0, uint32_t(buf.size()), 0, 0, true), buf).status == 0);
    CHECK(load_le64(&buf[0]) == 2);
    REQUIRE(f.cmd(zmr(1, 5 * kZone + 7, uint32_t(buf.size()), 0, 0, false), buf).status == 0);
    CHECK(load_le64(&buf[0]) == 11);
    CHECK(load_le64(&buf[64 + 16]) == 5 * kZone);  // from the zone holding SLBA
    CHECK(load_le64(&buf[64 + 24]) == 5 * kZone);  // WP of an offline zone: its start
    REQUIRE(f.cmd(zmr(1, 0, 64, 0, 1, false), buf).status == 0);  // header only
    CHECK(load_le64(&buf[0]) == 10);

    CHECK(f.cmd(zmr(1, 0, uint32_t(buf.size()), 2), buf).status == kInvalidField);
    CHECK(f.cmd(zmr(1, 0, uint32_t(buf.size()), 0, 8), buf).status == kInvalidField);
    CHECK(f.cmd(zmr(1, 0, 32), buf).status == kInvalidField);
    CHECK(f.cmd(zmr(1, 16 * kZone, uint32_t(buf.size())), buf).status == (0x80 | kDnr));
    CHECK(f.cmd(zmr(1, 0, 4096), buf).status == (0x0f | kDnr));
}

TEST_CASE("nvme zns: Zone Append returns the assigned LBA", "[nvme][zns]")
{
    ZnsFixture f;
    std::vector<uint8_t> data(4 * 512, 0x33);
    auto append = [&](uint64_t zslba, uint32_t nlb, std::vector<uint8_t>& d) {
        return f.cmd(rw(0x7d, 1, zslba, nlb), d);
    };
    Result r = append(kZone, 4, data);
    REQUIRE(r.status == 0);
    CHECK((uint64_t(r.dw1) << 32 | r.dw0) == kZone);
    r = append(kZone, 4, data);
    REQUIRE(r.status == 0);
    CHECK((uint64_t(r.dw1) << 32 | r.dw0) == kZone + 4);
    std::vector<uint8_t> back(512);
    REQUIRE(f.cmd(rw(0x02, 1, kZone + 5, 1), back).status == 0);
    CHECK(back[0] == 0x33);
    CHECK(f.report(kZone)[0].wp == kZone + 8);

    CHECK(append(kZone + 8, 4, data).status == kInvalidField);  // not a zone start
    std::vector<uint8_t> big(129 * 512);
    CHECK(append(0, 129, big).status == kInvalidField);  // beyond ZASL (64 KiB)
    REQUIRE(f.cmd(zms(1, 3 * kZone, kFinish)).status == 0);
    CHECK(append(3 * kZone, 4, data).status == (0x1b9 | kDnr));
    std::vector<uint8_t> fill((kCap - 2) * 512);
    for (uint64_t done = 0; done < kCap - 2; done += 128) {
        std::vector<uint8_t> part(std::min<uint64_t>(128, kCap - 2 - done) * 512);
        REQUIRE(append(4 * kZone, uint32_t(part.size() / 512), part).status == 0);
    }
    CHECK(append(4 * kZone, 4, data).status == (0x1b8 | kDnr));  // crosses ZCAP
}

TEST_CASE("nvme zns: zone state persists; open zones come back closed", "[nvme][zns]")
{
    ZonedImage img(kZonedOpts);
    {
        Fixture f;
        f.attach(img.open(f.ctx));
        uint16_t cntlid;
        f.admin(cntlid);
        Queue& io = f.io_queue(cntlid, 1);
        std::vector<uint8_t> data(8 * 512, 0x44);
        REQUIRE(f.run(io, rw(0x01, 1, 0, 8), data).status == 0);
        REQUIRE(f.run(io, rw(0x01, 1, kZone, 8), data).status == 0);
        REQUIRE(f.run(io, zms(1, kZone, kOpen)).status == 0);
        REQUIRE(f.run(io, sqe(0x00, 1)).status == 0);
    }
    Fixture f;
    f.attach(img.open(f.ctx));
    uint16_t cntlid;
    f.admin(cntlid);
    Queue& io = f.io_queue(cntlid, 1);
    std::vector<uint8_t> buf(64 + 3 * 64);
    REQUIRE(f.run(io, zmr(1, 0, uint32_t(buf.size()), 0, 0, true), buf).status == 0);
    CHECK(buf[64 + 1] >> 4 == kClosed);
    CHECK(load_le64(&buf[64 + 24]) == 8);
    CHECK(buf[128 + 1] >> 4 == kClosed);
    CHECK(load_le64(&buf[128 + 24]) == kZone + 8);
    CHECK(buf[192 + 1] >> 4 == kEmpty);
}

TEST_CASE("nvme zns: host errors under a zoned namespace are never zone statuses", "[nvme][zns]")
{
    ZonedImage img(kZonedOpts);
    Fixture f;
    QDict o = qcow2_test::crash_sim_options(img.path);
    Error err;
    auto blk = BlockBackend::open(std::nullopt, o, BDRV_O_RDWR, f.ctx, err);
    INFO(err.message);
    REQUIRE(blk);
    auto sim = std::dynamic_pointer_cast<CrashSimState>(blk->bs()->file()->bs);
    REQUIRE(sim);
    f.attach(std::move(blk));
    uint16_t cntlid;
    f.admin(cntlid);
    Queue& io = f.io_queue(cntlid, 1);
    std::vector<uint8_t> data(4096, 0x66);
    REQUIRE(f.run(io, rw(0x01, 1, 0, 8), data).status == 0);

    sim->fail_request(sim->requests() + 1, EIO);
    CHECK(f.run(io, rw(0x02, 1, 0, 8), data).status == 0x281);  // Unrecovered Read Error
    sim->fail_request(sim->requests() + 1, EIO);
    CHECK(f.run(io, rw(0x01, 1, 8, 8), data).status == 0x280);  // Write Fault, retryable
    sim->fail_request(0, 0);
    // A full host disk is Capacity Exceeded, not Zone Is Full.
    sim->set_full(true);
    CHECK(f.run(io, rw(0x01, 1, 8, 8), data).status == (0x81 | kDnr));
    sim->set_full(false);
    // The failed writes moved no write pointer: the zone takes the write.
    REQUIRE(f.run(io, rw(0x01, 1, 8, 8), data).status == 0);
}
