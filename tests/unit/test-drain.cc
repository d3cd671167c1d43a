// Drained sections: in-flight requests are waited for, new ones held back
// until the section ends, and a node can be flushed, closed and removed
// under load without losing a write that was acknowledged.
#include <catch2/catch.hpp>

#include <cstring>
#include <map>

#include "block/block-backend.h"
#include "block/graph.h"
#include "graph-test-util.h"
#include "mem-driver.h"
#include "qcow2-test-util.h"

using namespace qemu;

namespace {

std::unique_ptr<BlockBackend> open_mem(AioContext& ctx, test::MemState*& mem)
{
    test::mem_driver();
    QDict o;
    o.set("driver", "test-mem");
    o.set("size", "1048576");
    Error err;
    auto blk = BlockBackend::open(std::nullopt, o, BDRV_O_RDWR, ctx, err);
    REQUIRE(blk);
    mem = static_cast<test::MemState*>(blk->bs());
    mem->yield_in_io = true;
    return blk;
}

Task<void> write_one(BlockBackend& blk, uint64_t offset, int& ret)
{
    std::vector<uint8_t> buf(512, uint8_t(offset >> 9));
    IOVector qiov(buf.data(), buf.size());
    ret = co_await blk.co_pwritev(offset, buf.size(), qiov);
}

}  // namespace

TEST_CASE("drain waits for requests in flight and holds back new ones", "[drain]")
{
    AioContext ctx;
    test::MemState* mem;
    auto blk = open_mem(ctx, mem);
    constexpr int kWrites = 8;
    int rets[kWrites + 1];
    for (int i = 0; i < kWrites; i++) {
        rets[i] = 1;
        co_spawn(write_one(*blk, uint64_t(i) * 512, rets[i]));
    }
    REQUIRE(blk->in_flight() == kWrites);
    REQUIRE(mem->max_in_flight == kWrites);

    run_sync(ctx, bdrv_co_drained_begin(blk->bs()));
    REQUIRE(blk->bs()->quiesced());
    REQUIRE(blk->in_flight() == 0);
    REQUIRE(blk->bs()->in_flight() == 0);
    for (int i = 0; i < kWrites; i++) {
        REQUIRE(rets[i] == 0);
    }

    // A request that arrives now waits for the end of the section...
    rets[kWrites] = 1;
    co_spawn(write_one(*blk, 64 * 1024, rets[kWrites]));
    for (int i = 0; i < 10; i++) {
        ctx.poll(false);
    }
    REQUIRE(rets[kWrites] == 1);
    REQUIRE(blk->in_flight() == 0);
    // ...while the drainer's own requests (a flush) go through.
    REQUIRE(run_sync(ctx, bdrv_co_flush(blk->bs())) == 0);
    size_t logged = mem->log.size();

    bdrv_drained_end(blk->bs());
    REQUIRE_FALSE(blk->bs()->quiesced());
    while (rets[kWrites] == 1) {
        ctx.poll(true);
    }
    REQUIRE(rets[kWrites] == 0);
    REQUIRE(mem->log.size() > logged);
}

TEST_CASE("a drained node does not hold back the users of other nodes", "[drain]")
{
    AioContext ctx;
    test::MemState *mem_a, *mem_b;
    auto a = open_mem(ctx, mem_a);
    auto b = open_mem(ctx, mem_b);
    run_sync(ctx, bdrv_co_drained_begin(a->bs()));
    int ret_a = 1, ret_b = 1;
    co_spawn(write_one(*a, 0, ret_a));
    co_spawn(write_one(*b, 0, ret_b));
    while (ret_b == 1) {
        ctx.poll(true);
    }
    REQUIRE(ret_b == 0);
    REQUIRE(ret_a == 1);
    bdrv_drained_end(a->bs());
    while (ret_a == 1) {
        ctx.poll(true);
    }
    REQUIRE(ret_a == 0);
}

TEST_CASE("drained sections nest and cover the nodes below", "[drain]")
{
    qcow2_test::CreatedImage img("size=1M");
    AioContext ctx;
    Error err;
    auto blk = qcow2_test::open_rw(ctx, img.path, err);
    REQUIRE(blk);
    BlockDriverState* file = blk->bs()->file()->bs.get();
    run_sync(ctx, [](BlockDriverState* top, BlockDriverState* below) -> Task<void> {
        auto outer = co_await DrainedSection::begin(below);
        // Draining the file quiesces its users above as well.
        REQUIRE(top->quiesced());
        {
            auto inner = co_await DrainedSection::begin(top);
            REQUIRE(below->quiesced());
        }
        REQUIRE(top->quiesced());
        REQUIRE(below->quiesced());
    }(blk->bs(), file));
    REQUIRE_FALSE(blk->bs()->quiesced());
    REQUIRE_FALSE(file->quiesced());
}

namespace {

// Writers that keep writing their own sectors of an export and remember
// which writes were acknowledged, until the export goes away.
struct Load {
    BlockBackend* blk;
    std::map<uint64_t, uint8_t> acked;  // offset -> pattern
    int running = 0;
    int failures = 0;

    Task<void> writer(int id)
    {
        running++;
        std::vector<uint8_t> buf(4096);
        for (unsigned round = 1;; round++) {
            uint64_t offset = (uint64_t(id) * 16 + round % 16) * 4096;
            uint8_t pattern = uint8_t(id * 31 + round);
            memset(buf.data(), pattern, buf.size());
            IOVector qiov(buf.data(), buf.size());
            int ret = co_await blk->co_pwritev(offset, buf.size(), qiov);
            if (ret < 0) {
                if (ret != -ENOMEDIUM) {
                    failures++;
                }
                break;
            }
            acked[offset] = pattern;
        }
        running--;
    }
};

}  // namespace

TEST_CASE("removing an export's node under load loses no acknowledged write", "[drain][graph]")
{
    qcow2_test::CreatedImage img("size=4M");
    Load load;
    {
        AioContext ctx;
        BlockGraph graph(ctx);
        Error err;
        graph_test::add_file_and_qcow2(graph, img.path);
        auto exp = BlockBackend::attach(graph.lookup("q0"), BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE,
                                        BLK_PERM_ALL, "exp0", err);
        REQUIRE(exp);
        load.blk = exp.get();
        for (int id = 0; id < 8; id++) {
            co_spawn(load.writer(id));
        }
        // Let the load run a while (not timed: a number of loop turns).
        for (int i = 0; i < 200 || load.acked.size() < 32; i++) {
            ctx.poll(true);
        }
        REQUIRE(load.running == 8);
        // The export goes away as the daemon's block-export-del would: the
        // node is drained (the writers' next requests wait), the export
        // closed, the section ended (the waiting requests fail), the nodes
        // deleted (flushed and closed).
        run_sync(ctx, [](BlockBackend& blk) -> Task<void> {
            auto section = co_await DrainedSection::begin(blk.bs());
            REQUIRE(blk.in_flight() == 0);
            co_await blk.co_close();
        }(*exp));
        while (load.running > 0) {
            ctx.poll(true);
        }
        REQUIRE(load.failures == 0);
        REQUIRE(graph.del("q0", err) == 0);
        REQUIRE(graph.del("f0", err) == 0);
    }
    REQUIRE(load.acked.size() >= 32);
    AioContext ctx;
    Error err;
    auto blk = qcow2_test::open_rw(ctx, img.path, err);
    REQUIRE(blk);
    std::vector<uint8_t> buf(4096);
    for (const auto& [offset, pattern] : load.acked) {
        REQUIRE(blk->pread(offset, buf.size(), buf.data()) == 0);
        INFO("offset " << offset);
        REQUIRE(std::all_of(buf.begin(), buf.end(), [p = pattern](uint8_t b) { return b == p; }));
    }
}
