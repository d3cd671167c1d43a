// IOThreads: an AioContext per thread, coroutines run in another thread's
// context, nodes bound to one context at a time and moved while drained,
// and I/O on two nodes in two threads at once (run under ThreadSanitizer
// by CI: the "[thread]" tag).
#include <catch2/catch.hpp>

#include <cstring>
#include <thread>

#include "block/block-backend.h"
#include "block/graph.h"
#include "graph-test-util.h"
#include "qcow2-test-util.h"
#include "qemu/iothread.h"
#include "qemu/thread-pool.h"

using namespace qemu;

TEST_CASE("iothread: a task runs in the thread's context and returns there", "[thread]")
{
    IOThread io("io0");
    REQUIRE(io.id() == "io0");
    REQUIRE_FALSE(io.ctx().in_own_thread());
    std::thread::id here = std::this_thread::get_id();
    std::thread::id there = io.run<std::thread::id>([]() -> Task<std::thread::id> {
        co_await AioContext::current().sleep_ns(1000);
        co_return std::this_thread::get_id();
    });
    REQUIRE(there != here);

    // From a coroutine of the main context: the caller resumes at home.
    AioContext ctx;
    auto task = [](AioContext& target) -> Task<std::pair<std::thread::id, std::thread::id>> {
        std::thread::id inner = co_await co_run_in<std::thread::id>(
            target, []() -> Task<std::thread::id> {
                // Blocking work goes to the iothread's own pool.  (No
                // assertion here: Catch2's are for the test's thread.)
                int r = co_await AioContext::current().thread_pool().run([] { return 7; });
                co_return r == 7 ? std::this_thread::get_id() : std::thread::id();
            });
        co_return std::make_pair(inner, std::this_thread::get_id());
    };
    auto [inner, after] = run_sync(ctx, task(io.ctx()));
    REQUIRE(inner == there);
    REQUIRE(after == here);
    // A void task, run in the caller's own context.
    bool ran = false;
    run_in<void>(ctx, [&ran]() -> Task<void> {
        ran = true;
        co_return;
    });
    REQUIRE(ran);
}

namespace {

constexpr uint64_t kRW = BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE;

// Writes then reads back `n` 64 KiB chunks with a pattern of its own.
Task<int> write_and_check(BlockBackend& blk, uint8_t seed, int n)
{
    std::vector<uint8_t> buf(65536), back(65536);
    for (int i = 0; i < n; i++) {
        memset(buf.data(), uint8_t(seed + i), buf.size());
        IOVector qiov(buf.data(), buf.size());
        int ret = co_await blk.co_pwritev(uint64_t(i) * buf.size(), buf.size(), qiov);
        if (ret < 0) {
            co_return ret;
        }
    }
    for (int i = 0; i < n; i++) {
        IOVector qiov(back.data(), back.size());
        int ret = co_await blk.co_preadv(uint64_t(i) * back.size(), back.size(), qiov);
        if (ret < 0) {
            co_return ret;
        }
        for (uint8_t b : back) {
            if (b != uint8_t(seed + i)) {
                co_return -EIO;
            }
        }
    }
    co_return co_await blk.co_flush();
}

}  // namespace

TEST_CASE("iothread: two nodes do I/O in two threads at once", "[thread]")
{
    qcow2_test::CreatedImage img0("size=8M"), img1("size=8M");
    IOThread io0("io0"), io1("io1");
    auto open_in = [](IOThread& io, const std::string& path, const std::string& aio) {
        return io.run<std::unique_ptr<BlockBackend>>([&]() -> Task<std::unique_ptr<BlockBackend>> {
            QDict o;
            o.set("driver", "qcow2");
            o.set("file.aio", aio);
            Error err;
            co_return co_await BlockBackend::co_open(path, o, BDRV_O_RDWR, io.ctx(), err);
        });
    };
    // One node on io_uring, the other on the thread pool.
    auto blk0 = open_in(io0, img0.path, "io_uring");
    auto blk1 = open_in(io1, img1.path, "threads");
    REQUIRE(blk0);
    REQUIRE(blk1);
    REQUIRE(&blk0->ctx() == &io0.ctx());
    REQUIRE(&blk1->ctx() == &io1.ctx());

    // Both run from the main context's coroutines, concurrently.
    AioContext ctx;
    int ret0 = 1, ret1 = 1;
    auto drive = [](IOThread& io, BlockBackend& blk, uint8_t seed, int& ret) -> Task<void> {
        ret = co_await co_run_in<int>(io.ctx(), [&]() { return write_and_check(blk, seed, 64); });
    };
    co_spawn(drive(io0, *blk0, 0x10, ret0));
    co_spawn(drive(io1, *blk1, 0x80, ret1));
    while (ret0 == 1 || ret1 == 1) {
        ctx.poll(true);
    }
    REQUIRE(ret0 == 0);
    REQUIRE(ret1 == 0);

    // Closed in their own threads, before the threads go.
    io0.run<void>([&]() { return blk0->co_close(); });
    io1.run<void>([&]() { return blk1->co_close(); });
}

TEST_CASE("iothread: a graph's node moves to an iothread and back while drained", "[thread][graph]")
{
    qcow2_test::CreatedImage img("size=4M");
    AioContext ctx;
    IOThread io("io0");
    BlockGraph graph(ctx);
    Error err;
    graph_test::add_file_and_qcow2(graph, img.path);
    auto q0 = graph.lookup("q0");
    auto exp = BlockBackend::attach(q0, kRW, BLK_PERM_ALL, "exp0", err);
    REQUIRE(exp);

    REQUIRE(run_sync(ctx, bdrv_co_change_aio_context(q0.get(), io.ctx(), err)) == 0);
    // The whole connected graph moved, and the export with it.
    REQUIRE(&q0->ctx() == &io.ctx());
    REQUIRE(&graph.lookup("f0")->ctx() == &io.ctx());
    REQUIRE(&exp->ctx() == &io.ctx());
    REQUIRE_FALSE(q0->quiesced());
    REQUIRE(io.run<int>([&]() { return write_and_check(*exp, 0x33, 16); }) == 0);

    // A node there cannot be the child of a new node of the main loop.
    QDict r;
    r.set("driver", "raw");
    r.set("node-name", "r0");
    r.set("read-only", "on");
    r.set("file", "f0");
    Error err2;
    REQUIRE_FALSE(graph.add(r, err2));
    REQUIRE(err2.pretty() == "Node 'f0' is in another iothread; move it back to the main loop first");

    // Back: the move runs in the node's context (the iothread), while the
    // main loop runs to take the node over.
    REQUIRE(run_sync(ctx, co_run_in<int>(io.ctx(), [&]() {
                return bdrv_co_change_aio_context(q0.get(), ctx, err);
            })) == 0);
    REQUIRE(&exp->ctx() == &ctx);
    REQUIRE(run_sync(ctx, write_and_check(*exp, 0x44, 16)) == 0);
    run_sync(ctx, exp->co_close());
    REQUIRE(graph.del("q0", err) == 0);
}
