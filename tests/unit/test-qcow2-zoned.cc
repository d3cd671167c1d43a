// Zoned qcow2 images through the block layer: ordering at queue depth,
// appends, persistence, reset, conditions, and the zoned limits.
#include <catch2/catch.hpp>

#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "block/block-backend.h"
#include "qemu/units.h"
#include "qcow2-test-util.h"

using namespace qemu;

namespace {

using ZonedImage = qcow2_test::CreatedImage;

using qcow2_test::report_zone;

// Runs `count` coroutines produced by make(i) with `depth` in flight.
template <typename F>
void run_queued(AioContext& ctx, int count, int depth, F make)
{
    int next = 0, done = 0;
    std::function<void()> issue = [&] {
        if (next < count) {
            int i = next++;
            co_spawn([](F& mk, int idx, int& d, std::function<void()>& again) -> Task<void> {
                co_await mk(idx);
                d++;
                again();
            }(make, i, done, issue));
        }
    };
    for (int i = 0; i < depth; i++) {
        issue();
    }
    while (done < count) {
        ctx.poll(true);
    }
}

constexpr const char* kOpts = "size=64M,zone.mode=host-managed,zone.size=4M,zone.max_open_zones=4,"
                              "zone.max_active_zones=6,zone.max_append_bytes=256k,zone.conventional_zones=1";

}  // namespace

TEST_CASE("zoned qcow2: limits are published, also through raw", "[qcow2][zoned]")
{
    ZonedImage img(kOpts);
    AioContext ctx;
    auto blk = img.open(ctx);
    const BlockLimits& bl = blk->bs()->limits();
    REQUIRE(bl.zoned == BlockZoneModel::HostManaged);
    REQUIRE(bl.zone_size == 4 * MiB);
    REQUIRE(bl.zone_capacity == 4 * MiB);
    REQUIRE(bl.nr_zones == 16);
    REQUIRE(bl.max_open_zones == 4);
    REQUIRE(bl.max_active_zones == 6);
    REQUIRE(bl.max_append_bytes == 256 * KiB);
    blk.reset();

    Error err;
    QDict o;
    REQUIRE(keyval_parse(o, "driver=raw,file.driver=qcow2,file.file.driver=file,file.file.filename=" + img.path,
                         nullptr, err));
    auto raw = BlockBackend::open(std::nullopt, o, BDRV_O_RDWR, ctx, err);
    INFO(err.message);
    REQUIRE(raw);
    REQUIRE(raw->bs()->limits().zoned == BlockZoneModel::HostManaged);
    REQUIRE(raw->bs()->limits().nr_zones == 16);
    BlockZoneDescriptor d = report_zone(ctx, *raw, 4 * MiB);
    REQUIRE(d.start == 4 * MiB);
    REQUIRE(d.state == BlockZoneState::Empty);
}

TEST_CASE("zoned qcow2: sequential writes at queue depth 32 are accepted in order", "[qcow2][zoned]")
{
    ZonedImage img(kOpts);
    AioContext ctx;
    auto blk = img.open(ctx);
    std::vector<int> results(1024, 1);
    run_queued(ctx, 1024, 32, [&](int i) -> Task<void> {
        std::vector<uint8_t> data(4096, uint8_t(i));
        IOVector q(data.data(), data.size());
        results[i] = co_await blk->co_pwritev(4 * MiB + uint64_t(i) * 4096, 4096, q);
    });
    for (int r : results) {
        REQUIRE(r == 0);
    }
    REQUIRE(report_zone(ctx, *blk, 4 * MiB).state == BlockZoneState::Full);
    std::vector<uint8_t> back(4 * MiB);
    REQUIRE(blk->pread(4 * MiB, back.size(), back.data()) == 0);
    for (int i = 0; i < 1024; i++) {
        REQUIRE(back[size_t(i) * 4096] == uint8_t(i));
    }
}

TEST_CASE("zoned qcow2: concurrent appends get distinct offsets and their data lands there",
          "[qcow2][zoned][append]")
{
    ZonedImage img(kOpts);
    AioContext ctx;
    auto blk = img.open(ctx);
    std::vector<uint64_t> where(256, UINT64_MAX);
    run_queued(ctx, 256, 32, [&](int i) -> Task<void> {
        std::vector<uint8_t> data(8192, uint8_t(i + 1));
        IOVector q(data.data(), data.size());
        uint64_t off = 8 * MiB;
        if (co_await blk->co_zone_append(off, q) == 0) {
            where[i] = off;
        }
    });
    std::vector<uint64_t> sorted = where;
    std::sort(sorted.begin(), sorted.end());
    for (int i = 0; i < 256; i++) {
        REQUIRE(sorted[i] == 8 * MiB + uint64_t(i) * 8192);  // distinct and contiguous
    }
    for (int i = 0; i < 256; i++) {
        uint8_t b[8192];
        REQUIRE(blk->pread(where[i], sizeof(b), b) == 0);
        REQUIRE(std::all_of(b, b + sizeof(b), [&](uint8_t v) { return v == uint8_t(i + 1); }));
    }
    REQUIRE(report_zone(ctx, *blk, 8 * MiB).wp == 8 * MiB + 256 * 8192);
}

TEST_CASE("zoned qcow2: zone rules on writes, appends and reads", "[qcow2][zoned]")
{
    ZonedImage img("size=16M,zone.mode=host-managed,zone.size=4M,zone.capacity=2M,zone.max_append_bytes=64k");
    AioContext ctx;
    auto blk = img.open(ctx);
    std::vector<uint8_t> d(8192, 7);
    REQUIRE(blk->pwrite(4096, 4096, d.data()) == zone_error_code(ZoneError::InvalidWrite));  // not at the write pointer
    REQUIRE(blk->pwrite(0, 8192, d.data()) == 0);
    REQUIRE(blk->pwrite(2 * MiB - 4096, 8192, d.data()) == zone_error_code(ZoneError::InvalidWrite));
    std::vector<uint8_t> big(2 * MiB, 1);
    REQUIRE(blk->pwrite(8192, big.size(), big.data()) == zone_error_code(ZoneError::Boundary));  // beyond the capacity
    IOVector q(big.data(), 128 * 1024);
    uint64_t off = 4 * MiB;
    REQUIRE(run_sync(ctx, blk->co_zone_append(off, q)) == zone_error_code(ZoneError::InvalidRequest));  // above max append
    // Data above the write pointer reads as zeroes, also past the capacity.
    std::vector<uint8_t> back(16384, 0xff);
    REQUIRE(blk->pread(0, back.size(), back.data()) == 0);
    REQUIRE(std::all_of(back.begin(), back.begin() + 8192, [](uint8_t v) { return v == 7; }));
    REQUIRE(std::all_of(back.begin() + 8192, back.end(), [](uint8_t v) { return v == 0; }));
    BlockZoneDescriptor z = report_zone(ctx, *blk, 0);
    REQUIRE(z.capacity == 2 * MiB);
    REQUIRE(z.state == BlockZoneState::ImplicitlyOpen);
    REQUIRE(run_sync(ctx, blk->co_zone_mgmt(BlockZoneOp::Finish, 0, 4 * MiB)) == 0);
    REQUIRE(report_zone(ctx, *blk, 0).wp == 2 * MiB);  // start + capacity, not the zone end
    REQUIRE(blk->pwrite(2 * MiB, 4096, d.data()) == zone_error_code(ZoneError::Full));
    REQUIRE(run_sync(ctx, blk->co_zone_mgmt(BlockZoneOp::Open, 0, 4 * MiB)) == zone_error_code(ZoneError::InvalidTransition));
    REQUIRE(run_sync(ctx, blk->co_zone_mgmt(BlockZoneOp::Open, 4096, 4 * MiB)) == zone_error_code(ZoneError::InvalidRequest));
}

TEST_CASE("zoned qcow2: write pointers survive a restart, open zones come back closed",
          "[qcow2][zoned][persistence]")
{
    ZonedImage img(kOpts);
    {
        AioContext ctx;
        auto blk = img.open(ctx);
        std::vector<uint8_t> d(65536, 3);
        REQUIRE(blk->pwrite(4 * MiB, d.size(), d.data()) == 0);
        REQUIRE(run_sync(ctx, blk->co_zone_mgmt(BlockZoneOp::Open, 12 * MiB, 4 * MiB)) == 0);
        REQUIRE(run_sync(ctx, blk->co_zone_mgmt(BlockZoneOp::Finish, 16 * MiB, 4 * MiB)) == 0);
        REQUIRE(run_sync(ctx, blk->co_zone_mgmt(BlockZoneOp::SetReadOnly, 20 * MiB, 4 * MiB)) == 0);
        REQUIRE(run_sync(ctx, blk->co_zone_mgmt(BlockZoneOp::SetOffline, 24 * MiB, 4 * MiB)) == 0);
    }
    AioContext ctx;
    auto blk = img.open(ctx);
    BlockZoneDescriptor z = report_zone(ctx, *blk, 4 * MiB);
    REQUIRE(z.wp == 4 * MiB + 65536);
    REQUIRE(z.state == BlockZoneState::Closed);
    REQUIRE(report_zone(ctx, *blk, 12 * MiB).state == BlockZoneState::Empty);
    REQUIRE(report_zone(ctx, *blk, 16 * MiB).state == BlockZoneState::Full);
    REQUIRE(report_zone(ctx, *blk, 20 * MiB).state == BlockZoneState::ReadOnly);
    REQUIRE(report_zone(ctx, *blk, 24 * MiB).state == BlockZoneState::Offline);
    REQUIRE(report_zone(ctx, *blk, 0).type == BlockZoneType::Conventional);
    std::vector<uint8_t> back(65536);
    REQUIRE(blk->pread(4 * MiB, back.size(), back.data()) == 0);
    REQUIRE(std::all_of(back.begin(), back.end(), [](uint8_t v) { return v == 3; }));
    uint8_t b[512] = {};
    REQUIRE(blk->pwrite(20 * MiB, 512, b) == zone_error_code(ZoneError::ReadOnly));
    REQUIRE(blk->pread(24 * MiB, 512, b) == zone_error_code(ZoneError::Offline));
}

TEST_CASE("zoned qcow2: reset frees the zone's clusters", "[qcow2][zoned][reset]")
{
    ZonedImage img("size=512M,zone.mode=host-managed,zone.size=256M");
    AioContext ctx;
    auto blk = img.open(ctx);
    std::vector<uint8_t> d(4 * MiB, 9);
    for (uint64_t off = 0; off < 256 * MiB; off += d.size()) {
        REQUIRE(blk->pwrite(off, d.size(), d.data()) == 0);
    }
    REQUIRE(blk->flush() == 0);
    struct stat before, after;
    REQUIRE(stat(img.path.c_str(), &before) == 0);
    int64_t t0 = AioContext::now_ns();
    REQUIRE(run_sync(ctx, blk->co_zone_mgmt(BlockZoneOp::Reset, 0, 256 * MiB)) == 0);
    int64_t reset_ns = AioContext::now_ns() - t0;
    WARN("resetting a full 256 MiB zone took " << reset_ns / 1000 << " us");
    // The space goes back to the host with the next flush.
    REQUIRE(blk->flush() == 0);
    REQUIRE(stat(img.path.c_str(), &after) == 0);
    REQUIRE(after.st_blocks * 512 < before.st_blocks * 512 - 250 * int64_t(MiB));
    BlockZoneDescriptor z = report_zone(ctx, *blk, 0);
    REQUIRE(z.state == BlockZoneState::Empty);
    REQUIRE(z.wp == 0);
    std::vector<uint8_t> back(1 * MiB, 1);
    REQUIRE(blk->pread(0, back.size(), back.data()) == 0);
    REQUIRE(std::all_of(back.begin(), back.end(), [](uint8_t v) { return v == 0; }));
    // The zone takes writes again from its start.
    REQUIRE(blk->pwrite(0, 4096, d.data()) == 0);
}

TEST_CASE("zoned qcow2: descriptor extensions persist and are cleared by reset",
          "[qcow2][zoned][desc-ext]")
{
    ZonedImage img("size=64M,zone.mode=host-managed,zone.size=4M,zone.conventional_zones=1,"
                   "zone.max_active_zones=3,zone.descriptor_extension_size=128");
    std::vector<uint8_t> ext(128), back(128, 0xff);
    for (size_t i = 0; i < ext.size(); i++) {
        ext[i] = uint8_t(i * 7 + 1);
    }
    {
        AioContext ctx;
        auto blk = img.open(ctx);
        REQUIRE(blk->bs()->limits().zone_desc_ext_size == 128);
        REQUIRE(run_sync(ctx, blk->co_zone_get_desc_ext(4 * MiB, back.data())) == 0);
        REQUIRE(std::all_of(back.begin(), back.end(), [](uint8_t v) { return v == 0; }));
        REQUIRE(run_sync(ctx, blk->co_zone_set_desc_ext(0, ext.data())) == zone_error_code(ZoneError::InvalidRequest));  // conventional
        REQUIRE(run_sync(ctx, blk->co_zone_set_desc_ext(4 * MiB + 512, ext.data())) == zone_error_code(ZoneError::InvalidRequest));
        REQUIRE(run_sync(ctx, blk->co_zone_set_desc_ext(4 * MiB, ext.data())) == 0);
        REQUIRE(report_zone(ctx, *blk, 4 * MiB).state == BlockZoneState::Closed);
        REQUIRE(report_zone(ctx, *blk, 4 * MiB).desc_ext_valid);
        REQUIRE(run_sync(ctx, blk->co_zone_set_desc_ext(4 * MiB, ext.data())) == zone_error_code(ZoneError::InvalidTransition));
        // A written zone cannot take one.
        REQUIRE(blk->pwrite(8 * MiB, 4096, ext.data()) == 0);
        REQUIRE(run_sync(ctx, blk->co_zone_set_desc_ext(8 * MiB, ext.data())) == zone_error_code(ZoneError::InvalidTransition));
        REQUIRE(run_sync(ctx, blk->co_zone_set_desc_ext(12 * MiB, ext.data())) == 0);
        // Three active zones now: the limit.
        REQUIRE(run_sync(ctx, blk->co_zone_set_desc_ext(16 * MiB, ext.data())) == zone_error_code(ZoneError::TooManyActive));
        REQUIRE(run_sync(ctx, blk->co_zone_mgmt(BlockZoneOp::Reset, 12 * MiB, 4 * MiB)) == 0);
    }
    AioContext ctx;
    auto blk = img.open(ctx);
    BlockZoneDescriptor z = report_zone(ctx, *blk, 4 * MiB);
    REQUIRE(z.state == BlockZoneState::Closed);
    REQUIRE(z.wp == 4 * MiB);
    REQUIRE(z.desc_ext_valid);
    REQUIRE(run_sync(ctx, blk->co_zone_get_desc_ext(4 * MiB, back.data())) == 0);
    REQUIRE(back == ext);
    REQUIRE(report_zone(ctx, *blk, 12 * MiB).state == BlockZoneState::Empty);
    REQUIRE_FALSE(report_zone(ctx, *blk, 12 * MiB).desc_ext_valid);
    REQUIRE(run_sync(ctx, blk->co_zone_get_desc_ext(12 * MiB, back.data())) == 0);
    REQUIRE(std::all_of(back.begin(), back.end(), [](uint8_t v) { return v == 0; }));
    // The zone takes writes at its start like any closed zone.
    REQUIRE(blk->pwrite(4 * MiB, 4096, ext.data()) == 0);
    REQUIRE(run_sync(ctx, blk->co_zone_mgmt(BlockZoneOp::Reset, 4 * MiB, 4 * MiB)) == 0);
    REQUIRE_FALSE(report_zone(ctx, *blk, 4 * MiB).desc_ext_valid);
    // Images without extensions refuse the requests.
    ZonedImage plain(kOpts);
    auto pblk = plain.open(ctx);
    REQUIRE(run_sync(ctx, pblk->co_zone_set_desc_ext(4 * MiB, ext.data())) == zone_error_code(ZoneError::InvalidRequest));
}

TEST_CASE("zoned qcow2: create validation names the option", "[qcow2][zoned][create]")
{
    bdrv_init();
    AioContext ctx;
    struct Case {
        const char* opts;
        const char* message;
    };
    const Case cases[] = {
        {"size=64M,zone.size=4M", "zone.size requires zone.mode"},
        {"size=64M,zone.mode=sideways", "Parameter 'zone.mode' does not accept value 'sideways' (host-managed, host-aware)"},
        {"size=64M,zone.mode=host-managed,zone.size=100k", "zone.size (102400) must be a non-zero multiple of the cluster size (65536)"},
        {"size=2M,zone.mode=host-managed,zone.size=4M,zone.capacity=1M", "zone.size (4194304) must not be larger than size (2097152)"},
        {"size=64M,zone.mode=host-managed,zone.size=4M,zone.capacity=5M", "zone.capacity (5242880) must be a non-zero multiple of 512 no larger than zone.size (4194304)"},
        {"size=64M,zone.mode=host-managed,zone.size=4M,zone.conventional_zones=16", "zone.conventional_zones (16) must be smaller than the number of zones (16)"},
        {"size=64M,zone.mode=host-managed,zone.size=4M,zone.max_active_zones=17", "zone.max_active_zones (17) exceeds the number of sequential zones (16)"},
        {"size=64M,zone.mode=host-managed,zone.size=4M,zone.max_open_zones=5,zone.max_active_zones=4", "zone.max_open_zones (5) exceeds zone.max_active_zones (4)"},
        {"size=64M,zone.mode=host-managed,zone.size=4M,zone.max_append_bytes=4M", "zone.max_append_bytes (4194304) must be a non-zero multiple of 512 smaller than zone.capacity (4194304)"},
        {"size=64M,zone.mode=host-managed,zone.descriptor_extension_size=100", "zone.descriptor_extension_size (100) must be a multiple of 64 up to 16320"},
        {"size=64M,compat=0.10,zone.mode=host-managed,zone.size=4M", "Zoned images require compatibility level 1.1 (use compat=1.1)"},
    };
    for (const Case& c : cases) {
        INFO(c.opts);
        char tmpl[] = "/var/tmp/qz-zoned-XXXXXX";
        int fd = mkstemp(tmpl);
        close(fd);
        unlink(tmpl);
        Error err;
        QDict o;
        REQUIRE(keyval_parse(o, c.opts, nullptr, err));
        REQUIRE(run_sync(ctx, bdrv_co_create(*bdrv_find_driver("qcow2"), tmpl, o, ctx, err)) < 0);
        REQUIRE(err.message == c.message);
        REQUIRE(access(tmpl, F_OK) != 0);  // no file left behind
    }
}

TEST_CASE("zoned qcow2: refuses resize, discard and write-zeroes shortcuts", "[qcow2][zoned]")
{
    ZonedImage img(kOpts);
    AioContext ctx;
    auto blk = img.open(ctx, "discard=unmap");
    Error err;
    REQUIRE(run_sync(ctx, blk->co_truncate(128 * MiB, false, PreallocMode::Off, 0, err)) < 0);
    REQUIRE(err.message == "Cannot resize a zoned image");
    // Write-zeroes goes through the zone rules as a data write.
    REQUIRE(run_sync(ctx, blk->co_pwrite_zeroes(8 * MiB, 64 * 1024)) == 0);
    REQUIRE(report_zone(ctx, *blk, 8 * MiB).wp == 8 * MiB + 64 * 1024);
    REQUIRE(run_sync(ctx, blk->co_pwrite_zeroes(8 * MiB, 64 * 1024)) == zone_error_code(ZoneError::InvalidWrite));
}

TEST_CASE("zoned qcow2: an image with 100,000 zones opens quickly", "[qcow2][zoned][scale]")
{
    // 100,000 zones of 64 KiB (one cluster each).
    ZonedImage img("size=6400000k,zone.mode=host-managed,zone.size=64k,zone.max_append_bytes=32k");
    AioContext ctx;
    int64_t t0 = AioContext::now_ns();
    auto blk = img.open(ctx);
    int64_t open_ns = AioContext::now_ns() - t0;
    WARN("opening 100,000 zones took " << open_ns / 1000 << " us");
    REQUIRE(blk->bs()->limits().nr_zones == 100000);
    BlockZoneDescriptor d = report_zone(ctx, *blk, 99999ULL * 64 * 1024);
    REQUIRE(d.start == 99999ULL * 64 * 1024);
}

// AddressSanitizer reserves terabytes of address space for its shadow
// memory, so a child limited to 1.5 GB of it cannot even start an event
// loop: the normal build runs this test.
#ifndef __SANITIZE_ADDRESS__
TEST_CASE("zoned qcow2: a create that runs out of memory fails with one line and leaves no file",
          "[qcow2][zoned][create]")
{
    // 4 TiB of 64 KiB zones: 67,108,864 zones, whose state (16 bytes each,
    // 1 GiB) does not fit in the 768 MiB of address space the child may use.  (An uncaught
    // std::bad_alloc used to abort the tools and leave the file behind.)
    qcow2_test::TempImage img;
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        struct rlimit limit = {768ULL << 20, 768ULL << 20};
        setrlimit(RLIMIT_AS, &limit);
        AioContext ctx;
        Error err;
        int ret = qcow2_test::create(ctx, img.path, "size=4T,zone.mode=host-managed,zone.size=64k,"
                                        "zone.max_append_bytes=32k", err);
        bool ok = ret == -ENOMEM &&
                  err.message == "Could not allocate memory for the state of 67108864 zones" &&
                  access(img.path.c_str(), F_OK) != 0;
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(access(img.path.c_str(), F_OK) != 0);
}
#endif
