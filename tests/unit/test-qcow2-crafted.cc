// Crafted (hostile) qcow2 images, as tests/fuzz/make-corpus.sh makes them
// for the fuzzer too.  Metadata overlap protection
// (block/qcow2/refcount.cc): images whose metadata areas overlap each
// other or the header are refused at a read-write open and left untouched;
// metadata in clusters whose refcount is 0 is never handed out by the
// allocator, and `check -r all` repairs the refcounts afterwards.  Zoned
// headers and write pointers that docs/interop/qcow2-zoned.rst forbids are
// refused at open with one line saying what is wrong.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "block/qcow2/qcow2.h"  // check_overlap and the metadata kinds
#include "block/block-backend.h"
#include "block/block-events.h"
#include "block/snapshot.h"
#include "qemu/units.h"
#include "qcow2-test-util.h"
#include "qemu-io-capture.h"

using namespace qemu;
using namespace qcow2_test;

namespace {

constexpr uint32_t kZonedMagic = 0x007a6264;

std::vector<uint8_t> file_bytes(const std::string& path)
{
    std::ifstream f(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

uint64_t l1_offset(const std::string& path)
{
    return get_be64(path, 40);
}

// The refcount entry (16 bits, the default width) of the cluster at
// `offset` (64 KiB clusters), found through the refcount table.
uint64_t refcount_entry_at(const std::string& path, uint64_t offset)
{
    uint64_t cluster = offset / (64 * KiB);
    uint64_t reftable = get_be64(path, 48);
    uint64_t block = get_be64(path, reftable + (cluster / 32768) * 8);
    REQUIRE(block != 0);
    return block + (cluster % 32768) * 2;
}

void set_refcount(const std::string& path, uint64_t offset, uint16_t value)
{
    uint8_t b[2];
    store_be16(b, value);
    patch_file(path, refcount_entry_at(path, offset), b, 2);
}

uint16_t get_refcount(const std::string& path, uint64_t offset)
{
    uint8_t b[2];
    read_file(path, refcount_entry_at(path, offset), b, 2);
    return load_be16(b);
}

// Where the data of the zoned header extension starts in the file.
uint64_t zoned_extension(const std::string& path)
{
    uint8_t b[4];
    read_file(path, 100, b, 4);
    uint64_t at = load_be32(b);
    for (;;) {
        read_file(path, at, b, 4);
        uint32_t magic = load_be32(b);
        REQUIRE(magic != 0);
        read_file(path, at + 4, b, 4);
        uint32_t len = load_be32(b);
        if (magic == kZonedMagic) {
            return at + 8;
        }
        at += 8 + ((len + 7) & ~7u);
    }
}

std::string open_error(const std::string& path, int flags)
{
    AioContext ctx;
    Error err;
    auto blk = open_rw(ctx, path, err, "", flags);
    return blk ? "" : err.message;
}

struct CheckRun {
    int ret = 0;
    BdrvCheckResult result;
    std::string out, messages;
};

CheckRun check(const std::string& path, unsigned fix)
{
    AioContext ctx;
    Error err;
    auto blk = open_rw(ctx, path, err, "", BDRV_O_CHECK | (fix ? BDRV_O_RDWR : 0));
    INFO(err.message);
    REQUIRE(blk);
    CheckRun run;
    test::CapturedOutput capture;
    run.ret = run_sync(ctx, blk->bs()->drv_check(run.result, fix));
    capture.finish(run.out, run.messages);
    return run;
}

// `check -r all` fixes exactly the refcounts it is expected to, after which
// the image is clean.
void repair_and_require_clean(const std::string& path, int corruptions)
{
    CheckRun before = check(path, 0);
    INFO(before.messages);
    CHECK(before.result.corruptions == corruptions);
    CheckRun fix = check(path, BDRV_FIX_ERRORS | BDRV_FIX_LEAKS);
    INFO(fix.messages);
    CHECK(fix.result.corruptions_fixed == corruptions);
    CheckRun after = check(path, 0);
    INFO(after.messages);
    CHECK(after.result.corruptions == 0);
    CHECK(after.result.leaks == 0);
}

// Writes `len` bytes of pattern `seed` at `offset`; returns them.
std::vector<uint8_t> write_pattern(const CreatedImage& img, uint64_t offset, size_t len, uint32_t seed)
{
    AioContext ctx;
    auto blk = img.open(ctx);
    auto data = pattern(len, seed);
    REQUIRE(blk->pwrite(offset, data.size(), data.data()) == 0);
    return data;
}

void create_snapshot(const CreatedImage& img, const char* name)
{
    AioContext ctx;
    auto blk = img.open(ctx);
    SnapshotInfo sn;
    sn.name = name;
    REQUIRE(run_sync(ctx, bdrv_snapshot_create(blk->bs(), sn)) == 0);
}

std::vector<uint8_t> read_back(const CreatedImage& img, uint64_t offset, size_t len)
{
    AioContext ctx;
    auto blk = img.open(ctx, "", 0);
    std::vector<uint8_t> data(len);
    REQUIRE(blk->pread(offset, data.size(), data.data()) == 0);
    return data;
}

}  // namespace

TEST_CASE("qcow2 overlap: an L1 table on the header is refused at a read-write open",
          "[qcow2][overlap]")
{
    CreatedImage img("size=64M");
    write_pattern(img, 0, 64 * KiB, 1);
    set_be64(img.path, 40, 0);
    auto before = file_bytes(img.path);
    CHECK(open_error(img.path, BDRV_O_RDWR) == "active L1 table overlaps with qcow2_header");
    CHECK(file_bytes(img.path) == before);
    // Read-only opens and the check still get to the image.
    CHECK(open_error(img.path, 0) == "");
    CHECK(check(img.path, 0).ret == 0);
    CHECK(file_bytes(img.path) == before);
}

TEST_CASE("qcow2 overlap: an L1 table with refcount 0 is not allocated over", "[qcow2][overlap]")
{
    CreatedImage img("size=1G");
    auto a = write_pattern(img, 0, 64 * KiB, 2);
    uint64_t l1 = l1_offset(img.path);
    set_refcount(img.path, l1, 0);
    // Needs a second L2 table: the first free cluster is the L1's.
    auto b = write_pattern(img, 768 * MiB, 64 * KiB, 3);
    CHECK(read_back(img, 0, a.size()) == a);
    CHECK(read_back(img, 768 * MiB, b.size()) == b);
    repair_and_require_clean(img.path, 1);
    CHECK(get_refcount(img.path, l1) == 1);
}

TEST_CASE("qcow2 overlap: a write pointer array with refcount 0 keeps the zone state",
          "[qcow2][overlap][zoned]")
{
    CreatedImage img("size=64M,zone.mode=host-managed,zone.size=4M");
    uint64_t wp_array = get_be64(img.path, zoned_extension(img.path) + 48);
    set_refcount(img.path, wp_array, 0);
    auto data = pattern(128 * KiB, 4);
    SECTION("check -r all repairs it before any write")
    {
        repair_and_require_clean(img.path, 1);
    }
    SECTION("the first allocating write goes elsewhere; check -r all repairs it after")
    {
        write_pattern(img, 4 * MiB, data.size(), 4);
        repair_and_require_clean(img.path, 1);
    }
    AioContext ctx;
    auto blk = img.open(ctx);
    REQUIRE(blk->pwrite(0, data.size(), data.data()) == 0);
    CHECK(report_zone(ctx, *blk, 0).wp == 128 * KiB);
    CHECK(report_zone(ctx, *blk, 8 * MiB).wp == 8 * MiB);
    std::vector<uint8_t> back(data.size());
    REQUIRE(blk->pread(0, back.size(), back.data()) == 0);
    CHECK(back == data);
    CHECK(get_refcount(img.path, wp_array) == 1);
}

TEST_CASE("qcow2 overlap: a condition array on the L1 table or with refcount 0",
          "[qcow2][overlap][zoned]")
{
    CreatedImage img("size=64M,zone.mode=host-managed,zone.size=4M");
    {
        AioContext ctx;
        auto blk = img.open(ctx);
        REQUIRE(run_sync(ctx, blk->co_zone_mgmt(BlockZoneOp::SetReadOnly, 12 * MiB, 4 * MiB)) == 0);
    }
    uint64_t ext = zoned_extension(img.path);
    uint64_t conds = get_be64(img.path, ext + 64);
    REQUIRE(conds != 0);

    SECTION("on the L1 table: refused at a read-write open")
    {
        set_be64(img.path, ext + 64, l1_offset(img.path));
        auto before = file_bytes(img.path);
        CHECK(open_error(img.path, BDRV_O_RDWR) == "active L1 table overlaps with zone condition array");
        CHECK(file_bytes(img.path) == before);
    }
    SECTION("with refcount 0: not allocated over")
    {
        set_refcount(img.path, conds, 0);
        auto data = write_pattern(img, 0, 64 * KiB, 5);
        CHECK(read_back(img, 0, data.size()) == data);
        {
            AioContext ctx;
            auto blk = img.open(ctx);
            CHECK(report_zone(ctx, *blk, 12 * MiB).state == BlockZoneState::ReadOnly);
        }
        repair_and_require_clean(img.path, 1);
    }
}

TEST_CASE("qcow2 overlap: a snapshot whose L1 table is the active one cannot be applied",
          "[qcow2][overlap][snapshot]")
{
    CreatedImage img("size=64M");
    write_pattern(img, 0, 64 * KiB, 6);
    create_snapshot(img, "s");
    uint64_t table = get_be64(img.path, 64);
    set_be64(img.path, table, l1_offset(img.path));
    auto before = file_bytes(img.path);
    CHECK(open_error(img.path, BDRV_O_RDWR) == "active L1 table overlaps with inactive L1 table");
    CHECK(file_bytes(img.path) == before);
}

namespace {

// `img` (64 KiB clusters) gets data in guest cluster 0 and one snapshot;
// the write after it copied the active L2 table, so that the old one is
// the snapshot's only.  Returns that table's offset.
uint64_t image_with_snapshot_l2(const CreatedImage& img)
{
    write_pattern(img, 0, 64 * KiB, 1);
    create_snapshot(img, "s");
    write_pattern(img, 0, 64 * KiB, 2);
    constexpr uint64_t kL1OffsetMask = 0x00fffffffffffe00ULL;
    uint64_t snapshot_l1 = get_be64(img.path, get_be64(img.path, 64));
    uint64_t snapshot_l2 = get_be64(img.path, snapshot_l1) & kL1OffsetMask;
    uint64_t active_l2 = get_be64(img.path, l1_offset(img.path)) & kL1OffsetMask;
    REQUIRE(snapshot_l2 != 0);
    REQUIRE(active_l2 != snapshot_l2);
    return snapshot_l2;
}

}  // namespace

TEST_CASE("qcow2 overlap: with overlap-check=all a write onto a snapshot's L2 table is refused",
          "[qcow2][overlap][snapshot]")
{
    CreatedImage img("size=4M");
    uint64_t snapshot_l2 = image_with_snapshot_l2(img);
    auto snapshot_table = [&] {
        std::vector<uint8_t> b(64 * KiB);
        read_file(img.path, snapshot_l2, b.data(), b.size());
        return b;
    };
    auto before = snapshot_table();
    SECTION("guest data mapped onto it")
    {
        // Guest cluster 1 crafted to point (COPIED: written in place) at
        // the snapshot's L2 table.
        uint64_t active_l2 = get_be64(img.path, l1_offset(img.path)) & 0x00fffffffffffe00ULL;
        set_be64(img.path, active_l2 + 8, snapshot_l2 | (1ULL << 63));
        AioContext ctx;
        auto blk = img.open(ctx, "overlap-check=all");
        auto data = pattern(4 * KiB, 3);
        std::string out, messages;
        {
            test::CapturedOutput capture;
            CHECK(blk->pwrite(64 * KiB, data.size(), data.data()) == -EIO);
            capture.finish(out, messages);
        }
        CHECK(messages == "qcow2: Marking image as corrupt: Preventing invalid write on metadata "
                          "(overlaps with inactive L2 table); further corruption events will be "
                          "suppressed\n");
    }
    SECTION("its refcount crafted to 0: not allocated over")
    {
        set_refcount(img.path, snapshot_l2, 0);
        AioContext ctx;
        auto blk = img.open(ctx, "overlap-check=all");
        auto data = pattern(256 * KiB, 5);
        REQUIRE(blk->pwrite(1 * MiB, data.size(), data.data()) == 0);
    }
    CHECK(snapshot_table() == before);
}

TEST_CASE("qcow2 overlap: with overlap-check=all snapshots work as usual", "[qcow2][overlap][snapshot]")
{
    CreatedImage img("size=4M");
    image_with_snapshot_l2(img);
    {
        AioContext ctx;
        auto blk = img.open(ctx, "overlap-check=all");
        auto data = pattern(128 * KiB, 6);
        REQUIRE(blk->pwrite(0, data.size(), data.data()) == 0);
        SnapshotInfo sn;
        sn.name = "t";
        REQUIRE(run_sync(ctx, bdrv_snapshot_create(blk->bs(), sn)) == 0);
        REQUIRE(blk->pwrite(64 * KiB, data.size(), data.data()) == 0);
        Error err;
        REQUIRE(run_sync(ctx, bdrv_snapshot_goto(blk->bs(), "s", err)) == 0);
        REQUIRE(blk->pwrite(0, data.size(), data.data()) == 0);
        REQUIRE(run_sync(ctx, bdrv_snapshot_delete(blk->bs(), "", "t", err)) == 0);
        REQUIRE(blk->pwrite(2 * MiB, data.size(), data.data()) == 0);
    }
    CheckRun after = check(img.path, 0);
    INFO(after.messages);
    CHECK(after.result.corruptions == 0);
    CHECK(after.result.leaks == 0);
}

TEST_CASE("qcow2 overlap: writes onto other metadata are refused and mark the image corrupt",
          "[qcow2][overlap]")
{
    CreatedImage img("size=64M");
    AioContext ctx;
    auto blk = img.open(ctx);
    auto data = pattern(64 * KiB, 7);
    REQUIRE(blk->pwrite(0, data.size(), data.data()) == 0);
    auto* s = static_cast<qcow2::Qcow2State*>(blk->bs());
    uint64_t l1 = l1_offset(img.path);
    std::string out, messages;
    {
        test::CapturedOutput capture;
        CHECK(s->check_overlap(l1, 512, qcow2::META_L2) == -EIO);
        CHECK(s->check_overlap(0, 4096, qcow2::MetadataKind(0)) == -EIO);
        capture.finish(out, messages);
    }
    CHECK(messages == "qcow2: Marking image as corrupt: Preventing invalid write on metadata "
                      "(overlaps with active L1 table); further corruption events will be "
                      "suppressed\n");
    CHECK(s->check_overlap(l1, 512, qcow2::META_L1) == 0);
}

TEST_CASE("qcow2 overlap: marking an image corrupt raises BLOCK_IMAGE_CORRUPTED once",
          "[qcow2][overlap][events]")
{
    CreatedImage img("size=64M");
    AioContext ctx;
    auto blk = img.open(ctx);
    auto* s = static_cast<qcow2::Qcow2State*>(blk->bs());
    std::vector<BlockImageCorruptedEvent> events;
    set_block_event_listener({[&](const BlockImageCorruptedEvent& e) { events.push_back(e); }});
    {
        test::CapturedOutput capture;
        CHECK(s->check_overlap(l1_offset(img.path), 512, qcow2::META_L2) == -EIO);
        CHECK(s->check_overlap(0, 4096, qcow2::META_L2) == -EIO);  // suppressed
        std::string out, messages;
        capture.finish(out, messages);
    }
    set_block_event_listener({});
    REQUIRE(events.size() == 1);
    CHECK(events[0].node_name == blk->bs()->node_name());
    CHECK(events[0].msg == "Preventing invalid write on metadata (overlaps with active L1 table)");
    CHECK(events[0].fatal);
}

namespace {

// A zoned image of 4 zones of 256 KiB (4 KiB clusters, zone 0
// conventional) with data in zone 1 and zone 3 offline, so that it has a
// condition array; `craft` changes its file, then opening it must fail
// with `expected`.  With `repairable`, `check` reports the zone as one
// corruption and `check -r all` repairs it, after which the image opens.
void require_refused(const std::function<void(const std::string& path, uint64_t ext, uint64_t wps)>& craft,
                     const std::string& expected, bool repairable = false)
{
    CreatedImage img("size=1M,cluster_size=4096,zone.mode=host-managed,zone.size=256k,"
                     "zone.conventional_zones=1");
    write_pattern(img, 256 * KiB, 8 * KiB, 8);
    {
        AioContext ctx;
        auto blk = img.open(ctx);
        REQUIRE(run_sync(ctx, blk->co_zone_mgmt(BlockZoneOp::SetOffline, 768 * KiB, 256 * KiB)) == 0);
    }
    uint64_t ext = zoned_extension(img.path);
    craft(img.path, ext, get_be64(img.path, ext + 48));
    auto before = file_bytes(img.path);
    CHECK(open_error(img.path, BDRV_O_RDWR) == expected);
    CHECK(open_error(img.path, 0) == expected);
    CHECK(file_bytes(img.path) == before);
    if (repairable) {
        repair_and_require_clean(img.path, 1);
        CHECK(open_error(img.path, BDRV_O_RDWR) == "");
    }
}

void set_be32(const std::string& path, uint64_t offset, uint32_t value)
{
    uint8_t b[4];
    store_be32(b, value);
    patch_file(path, offset, b, 4);
}

void set_le64(const std::string& path, uint64_t offset, uint64_t value)
{
    uint8_t b[8];
    store_le64(b, value);
    patch_file(path, offset, b, 8);
}

}  // namespace

TEST_CASE("qcow2 crafted zoned headers: forbidden values are refused at open", "[qcow2][zoned][crafted]")
{
    SECTION("a virtual size that is not a multiple of 512")
    {
        require_refused([](const std::string& p, uint64_t, uint64_t) { set_be64(p, 24, 1 * MiB - 100); },
                        "Image is corrupt: zoned extension: the virtual size is not a multiple of 512");
    }
    SECTION("a zone size larger than the virtual size")
    {
        // Otherwise consistent: one sequential, empty zone of 2 MiB on a
        // 1 MiB disk.
        require_refused(
            [](const std::string& p, uint64_t ext, uint64_t wps) {
                set_be64(p, ext + 4, 2 * MiB);
                set_be32(p, ext + 20, 0);
                set_be32(p, ext + 24, 1);
                set_be64(p, ext + 40, 8);
                set_be64(p, ext + 72, 1);
                set_le64(p, wps, 0);
            },
            "Image is corrupt: zoned extension: the zone size is larger than the virtual size");
    }
    SECTION("2^32-1 zones")
    {
        require_refused(
            [](const std::string& p, uint64_t ext, uint64_t) {
                set_be64(p, 24, 4294967295ULL * 4096);
                set_be64(p, ext + 4, 4096);
                set_be64(p, ext + 12, 4096);
                set_be32(p, ext + 24, 4294967295u);
                set_be32(p, ext + 36, 2048);
                set_be64(p, ext + 40, 4294967295ULL * 8);
            },
            "Image is corrupt: zoned extension: 4294967295 zones exceed the limit of 536870911");
    }
    SECTION("non-zero reserved bytes after the descriptor extension size")
    {
        require_refused([](const std::string& p, uint64_t ext, uint64_t) { set_be32(p, ext + 60, 1); },
                        "Image is corrupt: reserved bytes of the zoned extension are not zero", true);
    }
    SECTION("an extension length other than 56 or 96")
    {
        require_refused([](const std::string& p, uint64_t ext, uint64_t) { set_be32(p, ext - 4, 64); },
                        "Image is corrupt: zoned extension length 64 is neither 56 nor 96", true);
    }
    SECTION("a write pointer that is not a multiple of 512")
    {
        require_refused([](const std::string& p, uint64_t, uint64_t wps) { set_le64(p, wps + 8, 256 * KiB + 100); },
                        "Image is corrupt: write pointer of zone 1 (0x40064) is not a multiple of 512", true);
    }
    SECTION("a write pointer between the capacity and the zone end")
    {
        require_refused(
            [](const std::string& p, uint64_t ext, uint64_t wps) {
                set_be64(p, ext + 12, 128 * KiB);
                set_le64(p, wps + 8, 256 * KiB + 192 * KiB);
            },
            "Image is corrupt: write pointer of zone 1 (0x70000) lies between the zone capacity and "
            "the zone end", true);
    }
    SECTION("a conventional zone's entry other than its start")
    {
        require_refused(
            [](const std::string& p, uint64_t, uint64_t wps) { set_le64(p, wps, (1ULL << 59) | 4096); },
            "Image is corrupt: write pointer entry of zone 0 (0x800000000001000) is malformed", true);
    }
    SECTION("a condition for a conventional zone")
    {
        require_refused(
            [](const std::string& p, uint64_t ext, uint64_t) {
                uint8_t offline = 2;
                patch_file(p, get_be64(p, ext + 64), &offline, 1);
            },
            "Image is corrupt: conventional zone 0 has condition 2", true);
    }
}
