// Memory per zone (issue 12): a 4 TiB image of 64 KiB zones has 64 Mi
// zones, so what is kept for each must stay at a few bytes.  The budget is
// 16 bytes per zone for everything a zoned qcow2 node holds: the state
// machine's zones and the in-memory copy of the write pointer array.
#include <catch2/catch.hpp>

#include "block/qcow2/qcow2.h"
#include "block/zone-state-machine.h"
#include "qcow2-test-util.h"

using namespace qemu;

namespace {

constexpr size_t kBudgetPerZone = 16;
constexpr uint64_t kZone = 64 * 1024;

ZoneGeometry many_zones(uint32_t nr, uint32_t max_open)
{
    ZoneGeometry g;
    g.device_size = uint64_t(nr) * kZone;
    g.zone_size = kZone;
    g.zone_capacity = kZone;
    g.nr_zones = nr;
    g.nr_conventional = 4;
    g.max_open = max_open;
    return g;
}

}  // namespace

TEST_CASE("zone memory: a zoned node keeps at most 16 bytes per zone", "[zoned][memory]")
{
    constexpr uint32_t kZones = 1 << 20;
    ZoneStateMachine m(many_zones(kZones, 0));
    qcow2::ZonedExtension ext;
    ext.zone_size = kZone;
    ext.zone_capacity = kZone;
    ext.nr_zones = kZones;
    ext.conventional_zones = 4;
    qcow2::ZoneWpEntries wps;
    wps.reset(ext);
    size_t per_zone = (m.zone_memory() + wps.memory()) / kZones;
    INFO("bytes per zone: " << per_zone);
    CHECK(per_zone <= kBudgetPerZone);

    // Writing to every zone without an open limit opens them all: that
    // must cost nothing more per zone.
    for (uint32_t z = 4; z < kZones; z++) {
        uint64_t pos;
        ZoneStateMachine::WriteTicket t;
        REQUIRE(m.admit_write(uint64_t(z) * kZone, 4096, false, pos, t) == ZoneError::None);
        m.complete_write(t, true);
    }
    CHECK(m.open_count() == kZones - 4);
    CHECK((m.zone_memory() + wps.memory()) / kZones <= kBudgetPerZone);
}

TEST_CASE("zone memory: the open-zone LRU grows with the open limit, not the zone count",
          "[zoned][memory]")
{
    constexpr uint32_t kZones = 1 << 16;
    ZoneStateMachine m(many_zones(kZones, 8));
    size_t empty = m.zone_memory();
    for (uint32_t z = 4; z < kZones; z++) {
        uint64_t pos;
        ZoneStateMachine::WriteTicket t;
        REQUIRE(m.admit_write(uint64_t(z) * kZone, 4096, false, pos, t) == ZoneError::None);
        m.complete_write(t, true);
    }
    CHECK(m.open_count() == 8);
    // 8 LRU entries and their hash buckets: far below a byte per zone.
    CHECK(m.zone_memory() - empty < kZones / 16);
}

TEST_CASE("zone memory: write pointer entries round-trip in 4 bytes", "[zoned][memory]")
{
    qcow2::ZonedExtension ext;
    ext.zone_size = kMaxZoneSize;
    ext.zone_capacity = kMaxZoneSize;
    ext.nr_zones = 3;
    ext.conventional_zones = 1;
    qcow2::ZoneWpEntries wps;
    wps.reset(ext);
    CHECK(wps.get(0) == qcow2::ZonedExtension::kConventionalFlag);
    CHECK(wps.get(1) == kMaxZoneSize);
    // The largest entry: a finished zone whose write pointer is its end.
    wps.set(1, 2 * kMaxZoneSize);
    wps.set(2, 2 * kMaxZoneSize + 512);
    CHECK(wps.get(1) == 2 * kMaxZoneSize);
    CHECK(wps.get(2) == 2 * kMaxZoneSize + 512);
    CHECK(wps.memory() == 3 * sizeof(uint32_t));
}

TEST_CASE("zone memory: write pointers are kept in blocks, so sequential zones take only "
          "whole blocks", "[zoned][memory]")
{
    ZoneStateMachine m(many_zones(16, 0));
    uint64_t pos;
    ZoneStateMachine::WriteTicket t;
    CHECK(m.admit_write(4 * kZone, 100, false, pos, t) == ZoneError::InvalidRequest);
    CHECK(m.admit_write(4 * kZone + 100, 512, false, pos, t) == ZoneError::InvalidRequest);
    CHECK(m.admit_write(4 * kZone, 512, true, pos, t) == ZoneError::None);
    m.complete_write(t, true);
    CHECK(m.durable_wp(4) == 4 * kZone + 512);
    // Conventional zones track nothing and take any bytes.
    CHECK(m.admit_write(100, 1000, false, pos, t) == ZoneError::None);
    m.complete_write(t, true);
}

TEST_CASE("zone memory: zones larger than 32-bit block counts can describe are refused",
          "[zoned][memory]")
{
    qcow2_test::TempImage img;
    AioContext ctx;
    Error err;
    int ret = qcow2_test::create(ctx, img.path, "size=8T,zone.mode=host-managed,zone.size=4T", err);
    CHECK(ret < 0);
    CHECK(err.message == "zone.size (4398046511104) exceeds the limit of 2199023255040 (2 TiB - 512)");
    CHECK(access(img.path.c_str(), F_OK) != 0);
    // The largest zone size that is a multiple of the cluster size (64 KiB)
    // and within the limit is accepted.
    ret = qcow2_test::create(ctx, img.path,
                             "size=4T,zone.mode=host-managed,zone.size=2199023190016", err);
    CHECK(ret == 0);
}
