// host_device's zoned parts that need no zoned device: the sysfs geometry
// (from a fake queue directory) and the conversion of BLKREPORTZONE's
// zones.  The ioctls themselves run in tests/e2e (null_blk in a guest).
#include <catch2/catch.hpp>

#include <linux/blkzoned.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "block/file-posix-zoned.h"
#include "block/zone-error.h"
#include "qemu/aio.h"
#include "qemu/error.h"
#include "temp-dir.h"

using namespace qemu;

namespace {

// A temporary directory standing in for /sys/dev/block/M:m/queue.
class FakeQueue {
public:
    // sysfs files end with a newline.
    void set(const std::string& name, const std::string& value)
    {
        std::ofstream(dir_.file(name)) << value << "\n";
    }
    void remove(const std::string& name) { std::filesystem::remove(dir_.file(name)); }
    const std::string& dir() const { return dir_.path(); }

private:
    TempDir dir_{"/tmp/fake-queue."};
};

// What Linux 6.12 shows for a null_blk device with 64 MiB zones, 4 KiB
// blocks and open/active limits.
void fill_null_blk(FakeQueue& q)
{
    const std::map<std::string, std::string> attrs = {
        {"zoned", "host-managed"},          {"chunk_sectors", "131072"},
        {"nr_zones", "8"},                  {"max_open_zones", "2"},
        {"max_active_zones", "3"},          {"zone_append_max_bytes", "126976"},
        {"physical_block_size", "4096"},    {"logical_block_size", "4096"},
    };
    for (const auto& [name, value] : attrs) {
        q.set(name, value);
    }
}

blk_zone make_zone(uint64_t start, uint64_t len, uint64_t wp, uint8_t type, uint8_t cond,
                   uint64_t capacity)
{
    blk_zone z{};
    z.start = start;
    z.len = len;
    z.wp = wp;
    z.type = type;
    z.cond = cond;
    z.capacity = capacity;
    return z;
}

}  // namespace

TEST_CASE("host_device zones: geometry of a zoned null_blk from sysfs", "[file-posix-zoned]")
{
    FakeQueue q;
    fill_null_blk(q);
    SysfsZoned z;
    Error err;
    REQUIRE(read_sysfs_zoned(q.dir(), z, err) == 0);
    CHECK(z.model == BlockZoneModel::HostManaged);
    CHECK(z.zone_size == 64ULL << 20);
    CHECK(z.nr_zones == 8);
    CHECK(z.max_open_zones == 2);
    CHECK(z.max_active_zones == 3);
    CHECK(z.max_append_bytes == 126976);
    CHECK(z.physical_block_size == 4096);
    CHECK(z.logical_block_size == 4096);

    q.set("zoned", "host-aware");
    REQUIRE(read_sysfs_zoned(q.dir(), z, err) == 0);
    CHECK(z.model == BlockZoneModel::HostAware);
}

TEST_CASE("host_device zones: devices that are not zoned", "[file-posix-zoned]")
{
    FakeQueue q;
    fill_null_blk(q);
    SysfsZoned z;
    Error err;
    SECTION("zoned says none")
    {
        q.set("zoned", "none");
    }
    SECTION("no zoned file (a partition, an old kernel)")
    {
        q.remove("zoned");
    }
    SECTION("a model QEMU does not know")
    {
        q.set("zoned", "host-shingled");
    }
    REQUIRE(read_sysfs_zoned(q.dir(), z, err) == 0);
    CHECK(z.model == BlockZoneModel::None);
    CHECK(z.zone_size == 0);
    CHECK(err.message.empty());
}

TEST_CASE("host_device zones: the mandatory attributes of a zoned device", "[file-posix-zoned]")
{
    FakeQueue q;
    fill_null_blk(q);
    SysfsZoned z;
    Error err;
    SECTION("no chunk_sectors")
    {
        q.remove("chunk_sectors");
        CHECK(read_sysfs_zoned(q.dir(), z, err) == -ENOENT);
        CHECK(err.message == "Unable to read chunk_sectors sysfs attribute: No such file or directory");
    }
    SECTION("chunk_sectors 0")
    {
        q.set("chunk_sectors", "0");
        CHECK(read_sysfs_zoned(q.dir(), z, err) == -EINVAL);
        CHECK(err.message == "Read 0 from chunk_sectors sysfs attribute");
    }
    SECTION("chunk_sectors not a number")
    {
        q.set("chunk_sectors", "lots");
        CHECK(read_sysfs_zoned(q.dir(), z, err) == -EINVAL);
        CHECK(err.message == "Unable to read chunk_sectors sysfs attribute: Invalid argument");
    }
    SECTION("nr_zones 0")
    {
        q.set("nr_zones", "0");
        CHECK(read_sysfs_zoned(q.dir(), z, err) == -EINVAL);
        CHECK(err.message == "Read 0 from nr_zones sysfs attribute");
    }
    SECTION("no nr_zones")
    {
        q.remove("nr_zones");
        CHECK(read_sysfs_zoned(q.dir(), z, err) == -ENOENT);
        CHECK(err.message == "Unable to read nr_zones sysfs attribute: No such file or directory");
    }
}

TEST_CASE("host_device zones: optional limits default to none", "[file-posix-zoned]")
{
    FakeQueue q;
    fill_null_blk(q);
    q.remove("max_open_zones");
    q.set("max_active_zones", "-1");
    q.remove("zone_append_max_bytes");
    q.set("physical_block_size", "4096 junk");
    SysfsZoned z;
    Error err;
    REQUIRE(read_sysfs_zoned(q.dir(), z, err) == 0);
    CHECK(z.max_open_zones == 0);
    CHECK(z.max_active_zones == 0);
    CHECK(z.max_append_bytes == 0);
    CHECK(z.physical_block_size == 0);
    CHECK(z.logical_block_size == 4096);
}

TEST_CASE("host_device zones: BLKREPORTZONE zones in bytes and QEMU's codes", "[file-posix-zoned]")
{
    BlockZoneDescriptor d;
    // Sectors in, bytes out; the write pointer stays absolute.
    REQUIRE(zone_from_blk_zone(make_zone(0x40000, 0x20000, 0x41800, BLK_ZONE_TYPE_SEQWRITE_REQ,
                                         BLK_ZONE_COND_IMP_OPEN, 0x1f000),
                               true, d) == 0);
    CHECK(d.start == 0x40000ULL * 512);
    CHECK(d.length == 0x20000ULL * 512);
    CHECK(d.wp == 0x41800ULL * 512);
    CHECK(d.capacity == 0x1f000ULL * 512);
    CHECK(d.type == BlockZoneType::SequentialWriteRequired);
    CHECK(d.state == BlockZoneState::ImplicitlyOpen);

    // Without BLK_ZONE_REP_CAPACITY the capacity is the length.
    REQUIRE(zone_from_blk_zone(make_zone(0, 0x20000, 0, BLK_ZONE_TYPE_SEQWRITE_REQ,
                                         BLK_ZONE_COND_EMPTY, 0x1f000),
                               false, d) == 0);
    CHECK(d.capacity == 0x20000ULL * 512);

    const std::pair<uint8_t, BlockZoneType> types[] = {
        {BLK_ZONE_TYPE_CONVENTIONAL, BlockZoneType::Conventional},
        {BLK_ZONE_TYPE_SEQWRITE_REQ, BlockZoneType::SequentialWriteRequired},
        {BLK_ZONE_TYPE_SEQWRITE_PREF, BlockZoneType::SequentialWritePreferred},
    };
    for (const auto& [linux_type, type] : types) {
        REQUIRE(zone_from_blk_zone(make_zone(0, 8, 0, linux_type, BLK_ZONE_COND_EMPTY, 8), true,
                                   d) == 0);
        CHECK(d.type == type);
    }
    const std::pair<uint8_t, BlockZoneState> conds[] = {
        {BLK_ZONE_COND_NOT_WP, BlockZoneState::NotWritePointer},
        {BLK_ZONE_COND_EMPTY, BlockZoneState::Empty},
        {BLK_ZONE_COND_IMP_OPEN, BlockZoneState::ImplicitlyOpen},
        {BLK_ZONE_COND_EXP_OPEN, BlockZoneState::ExplicitlyOpen},
        {BLK_ZONE_COND_CLOSED, BlockZoneState::Closed},
        {BLK_ZONE_COND_READONLY, BlockZoneState::ReadOnly},
        {BLK_ZONE_COND_FULL, BlockZoneState::Full},
        {BLK_ZONE_COND_OFFLINE, BlockZoneState::Offline},
    };
    for (const auto& [cond, state] : conds) {
        REQUIRE(zone_from_blk_zone(make_zone(0, 8, 0, BLK_ZONE_TYPE_SEQWRITE_REQ, cond, 8), true,
                                   d) == 0);
        CHECK(unsigned(d.state) == unsigned(state));
    }
}

TEST_CASE("host_device zones: unknown zone types and conditions", "[file-posix-zoned]")
{
    BlockZoneDescriptor d;
    CHECK(zone_from_blk_zone(make_zone(0, 8, 0, 0x7, BLK_ZONE_COND_EMPTY, 8), true, d) ==
          -ENOTSUP);
    CHECK(zone_from_blk_zone(make_zone(0, 8, 0, BLK_ZONE_TYPE_SEQWRITE_REQ, 0x9, 8), true, d) ==
          -ENOTSUP);
}

TEST_CASE("host_device zones: the driver's own refusals are zone errors printing QEMU's errno",
          "[file-posix-zoned]")
{
    // Refused before any ioctl: no device (and no blocking work) needed.
    SysfsZoned geo;
    geo.model = BlockZoneModel::HostManaged;
    geo.zone_size = 64 << 20;
    geo.nr_zones = 8;
    geo.logical_block_size = 4096;
    HostZones zones(-1, geo, [](std::function<int()>) -> Task<int> { co_return -EBADF; });
    auto is_invalid_request = [](int ret) {
        return zone_error_of(ret) == ZoneError::InvalidRequest && result_errno(ret) == EINVAL;
    };
    CHECK(is_invalid_request(zones.check_append(8 * geo.zone_size, {4096})));  // past the last zone
    CHECK(is_invalid_request(zones.check_append(4096, {4096})));                // not a zone start
    CHECK(is_invalid_request(zones.check_append(geo.zone_size, {4096, 512})));  // a misaligned segment
    CHECK(zones.check_append(geo.zone_size, {4096, 8192}) == 0);

    AioContext ctx;
    const uint64_t device = 8 * geo.zone_size;
    CHECK(is_invalid_request(run_sync(ctx, zones.mgmt(BlockZoneOp::Reset, 4096, geo.zone_size, device))));
    CHECK(is_invalid_request(run_sync(ctx, zones.mgmt(BlockZoneOp::Reset, 0, 4096, device))));
    CHECK(is_invalid_request(
        run_sync(ctx, zones.mgmt(BlockZoneOp::Reset, 7 * geo.zone_size, 2 * geo.zone_size, device))));
}
