// crash-sim: the volatile write cache model that the crash tests rely on.
// The child is test-mem, whose bytes are the "media" checked here.
#include <catch2/catch.hpp>

#include <set>

#include "block/block-backend.h"
#include "block/crash-sim.h"
#include "mem-driver.h"

using namespace qemu;

namespace {

struct Disk {
    AioContext ctx;
    std::unique_ptr<BlockBackend> blk;
    std::shared_ptr<CrashSimState> sim;
    test::MemState* media = nullptr;

    explicit Disk(uint64_t seed = 0, unsigned max_delay = 0, uint64_t crash_after = 0)
    {
        test::mem_driver();
        QDict o;
        o.set("driver", "crash-sim");
        o.set("seed", std::to_string(seed));
        o.set("max-delay", std::to_string(max_delay));
        o.set("crash-after", std::to_string(crash_after));
        o.set("discard", "unmap");
        o.set("file.driver", "test-mem");
        o.set("file.size", "65536");
        Error err;
        blk = BlockBackend::open(std::nullopt, o, BDRV_O_RDWR, ctx, err);
        INFO(err.message);
        REQUIRE(blk);
        sim = std::dynamic_pointer_cast<CrashSimState>(blk->root()->bs);
        media = dynamic_cast<test::MemState*>(sim->file()->bs.get());
        REQUIRE(media);
    }
    int write(uint64_t offset, uint64_t bytes, uint8_t pattern)
    {
        std::vector<uint8_t> buf(bytes, pattern);
        return blk->pwrite(offset, bytes, buf.data());
    }
    uint8_t read_byte(uint64_t offset)
    {
        uint8_t b = 0xee;
        REQUIRE(blk->pread(offset, 1, &b) == 0);
        return b;
    }
    uint8_t media_byte(uint64_t offset) const { return media->data[offset]; }
    void crash_and_settle(CrashOutcome outcome)
    {
        sim->crash();
        REQUIRE(run_sync(ctx, sim->settle(outcome)) == 0);
    }
};

}  // namespace

TEST_CASE("crash-sim: writes reach the media at flushes", "[crash-sim]")
{
    Disk d;
    REQUIRE(d.write(0, 4096, 0xaa) == 0);
    CHECK(d.read_byte(100) == 0xaa);  // reads see the cache
    CHECK(d.media_byte(100) == 0);
    REQUIRE(d.blk->flush() == 0);
    CHECK(d.media_byte(100) == 0xaa);
    CHECK(d.media_byte(4095) == 0xaa);
    CHECK(d.media_byte(4096) == 0);
}

TEST_CASE("crash-sim: a power loss loses what was not flushed", "[crash-sim]")
{
    Disk d;
    REQUIRE(d.write(0, 512, 0x11) == 0);
    REQUIRE(d.blk->flush() == 0);
    REQUIRE(d.write(0, 512, 0x22) == 0);
    REQUIRE(d.write(1024, 512, 0x33) == 0);
    d.crash_and_settle(CrashOutcome::PowerLossCacheLost);
    CHECK(d.media_byte(0) == 0x11);
    CHECK(d.media_byte(1024) == 0);
    CHECK(d.sim->stats().pending_at_crash == 2);
    CHECK(d.sim->stats().survivors == 0);
}

TEST_CASE("crash-sim: a killed process keeps every completed write", "[crash-sim]")
{
    Disk d;
    REQUIRE(d.write(0, 512, 0x11) == 0);
    REQUIRE(d.write(0, 512, 0x22) == 0);
    REQUIRE(d.write(4096, 1024, 0x33) == 0);
    d.crash_and_settle(CrashOutcome::ProcessKilled);
    CHECK(d.media_byte(0) == 0x22);
    CHECK(d.media_byte(4096 + 1023) == 0x33);
}

TEST_CASE("crash-sim: after the crash nothing more reaches the media", "[crash-sim]")
{
    Disk d(0, 0, 3);  // the third request crashes the disk
    REQUIRE(d.write(0, 512, 0x11) == 0);
    REQUIRE(d.blk->flush() == 0);
    CHECK(d.write(512, 512, 0x22) == -EIO);
    CHECK(d.sim->crashed());
    CHECK(d.blk->flush() == -EIO);
    uint8_t b;
    CHECK(d.blk->pread(0, 1, &b) == -EIO);
    REQUIRE(run_sync(d.ctx, d.sim->settle(CrashOutcome::ProcessKilled)) == 0);
    CHECK(d.media_byte(0) == 0x11);
    CHECK(d.media_byte(512) == 0);
}

TEST_CASE("crash-sim: a power loss leaves some version of each sector", "[crash-sim]")
{
    // Versions 1..4 of two sectors, none flushed: whatever survives, each
    // sector holds one of them (or the original), and over many crashes
    // every outcome kind shows up.
    std::set<std::pair<uint8_t, uint8_t>> seen;
    for (uint64_t seed = 0; seed < 200; seed++) {
        CrashOutcome outcome = CrashOutcome(seed % 4);  // the power loss kinds
        Disk d(seed);
        for (uint8_t v = 1; v <= 4; v++) {
            REQUIRE(d.write(0, 1024, v) == 0);
        }
        d.crash_and_settle(outcome);
        uint8_t a = d.media_byte(0), b = d.media_byte(512);
        CHECK(a <= 4);
        CHECK(b <= 4);
        CHECK(d.media_byte(511) == a);  // sectors are atomic
        if (outcome != CrashOutcome::PowerLossTorn) {
            CHECK(a == b);  // whole writes
        }
        if (outcome == CrashOutcome::PowerLossCacheLost) {
            CHECK(a == 0);
        }
        seen.insert({a, b});
    }
    CHECK(seen.count({0, 0}));
    CHECK(seen.count({4, 4}));
    CHECK(seen.count({2, 2}));
    bool torn = false;
    for (auto [a, b] : seen) {
        torn |= a != b;
    }
    CHECK(torn);
}

TEST_CASE("crash-sim: discards and truncates are cached too", "[crash-sim]")
{
    Disk d;
    REQUIRE(d.write(0, 8192, 0x55) == 0);
    REQUIRE(d.blk->flush() == 0);
    REQUIRE(run_sync(d.ctx, d.blk->co_pdiscard(0, 4096)) == 0);
    CHECK(d.read_byte(0) == 0);  // a discard reads back as zeroes
    CHECK(d.media_byte(0) == 0x55);
    REQUIRE(d.blk->flush() == 0);
    CHECK(d.media_byte(0) == 0);
    CHECK(d.media_byte(4096) == 0x55);
    // (test-mem cannot resize: the truncate stays in the cache.)
    Error err;
    REQUIRE(run_sync(d.ctx, bdrv_co_truncate(d.blk->root(), 16384, false, PreallocMode::Off, 0, err)) == 0);
    CHECK(d.sim->total_bytes() == 16384);
    CHECK(d.read_byte(4096) == 0x55);
    d.crash_and_settle(CrashOutcome::PowerLossCacheLost);
    CHECK(d.media->total_bytes() == 65536);
}

TEST_CASE("crash-sim: requests overlap and complete out of order", "[crash-sim]")
{
    Disk d(7, 8);
    std::vector<int> order;
    std::vector<std::vector<uint8_t>> bufs(16, std::vector<uint8_t>(512, 1));
    int done = 0;
    for (int i = 0; i < 16; i++) {
        co_spawn([](Disk& d, std::vector<uint8_t>& buf, int i, std::vector<int>& order, int& done) -> Task<void> {
            IOVector q(buf.data(), 512);
            auto ret = co_await d.blk->co_pwritev(uint64_t(i) * 512, 512, q);
            REQUIRE(ret == 0);
            order.push_back(i);
            done++;
        }(d, bufs[i], i, order, done));
    }
    while (done < 16) {
        d.ctx.poll(true);
    }
    CHECK_FALSE(std::is_sorted(order.begin(), order.end()));
    // A crash now: all sixteen completed, so a killed process keeps them.
    d.crash_and_settle(CrashOutcome::ProcessKilled);
    CHECK(d.media_byte(15 * 512) == 1);
}
