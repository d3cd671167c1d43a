// The io_uring event loop: file operations, timers, cross-thread posts,
// the thread pool and GLib integration.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <glib.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "qemu/aio.h"
#include "qemu/thread-pool.h"

using namespace qemu;

namespace {
struct TempFile {
    std::string path;
    int fd;
    TempFile()
    {
        char tmpl[] = "/tmp/qz-aio-XXXXXX";
        fd = mkstemp(tmpl);
        path = tmpl;
    }
    ~TempFile()
    {
        close(fd);
        unlink(path.c_str());
    }
};
}  // namespace

TEST_CASE("io_uring writes and reads a file", "[aio]")
{
    AioContext ctx;
    TempFile f;
    char out[4096], in[4096] = {};
    memset(out, 0x5a, sizeof(out));
    int ret = run_sync(ctx, [](AioContext& c, int fd, char* o, char* i) -> Task<int> {
        iovec wv{o, 4096};
        int r = co_await c.pwritev(fd, &wv, 1, 8192);
        if (r != 4096) {
            co_return r;
        }
        r = co_await c.fdatasync(fd);
        if (r < 0) {
            co_return r;
        }
        iovec rv{i, 4096};
        co_return co_await c.preadv(fd, &rv, 1, 8192);
    }(ctx, f.fd, out, in));
    REQUIRE(ret == 4096);
    REQUIRE(memcmp(in, out, sizeof(in)) == 0);
}

TEST_CASE("io_uring reports errors as -errno", "[aio]")
{
    AioContext ctx;
    char buf[16];
    int ret = run_sync(ctx, [](AioContext& c, char* b) -> Task<int> {
        iovec v{b, 16};
        co_return co_await c.preadv(-1, &v, 1, 0);
    }(ctx, buf));
    REQUIRE(ret == -EBADF);
}

TEST_CASE("many operations in flight complete together", "[aio]")
{
    AioContext ctx(64);  // fewer SQ entries than requests: the ring must cope
    TempFile f;
    REQUIRE(ftruncate(f.fd, 1 << 20) == 0);
    int done = 0;
    std::vector<std::vector<char>> bufs(300, std::vector<char>(512, 'x'));
    for (int i = 0; i < 300; i++) {
        co_spawn([](AioContext& c, int fd, char* b, int idx, int& d) -> Task<void> {
            iovec v{b, 512};
            int r = co_await c.pwritev(fd, &v, 1, uint64_t(idx) * 512);
            REQUIRE(r == 512);
            d++;
        }(ctx, f.fd, bufs[i].data(), i, done));
    }
    while (done < 300) {
        ctx.poll(true);
    }
    REQUIRE(done == 300);
}

TEST_CASE("device operations are held back only to be merged", "[aio]")
{
    AioContext ctx;
    TempFile f;
    REQUIRE(ftruncate(f.fd, 1 << 20) == 0);
    int done = 0;
    std::vector<std::vector<char>> bufs(24, std::vector<char>(512));
    // Request idx reads 512 bytes at block `block`.
    auto read = [&](int idx, int block, IoPath path) {
        co_spawn([](AioContext& c, int fd, char* b, int blk, IoPath p, int& d) -> Task<void> {
            iovec v{b, 512};
            auto ret = co_await c.preadv(fd, &v, 1, uint64_t(blk) * 512, p);
            REQUIRE(ret == 512);
            d++;
        }(ctx, f.fd, bufs[idx].data(), block, path, done));
    };

    // Page-cache reads wait for the loop, however many there are.
    for (int i = 0; i < 10; i++) {
        read(i, i, i % 2 ? IoPath::Cached : IoPath::CachedOffload);
    }
    REQUIRE(ctx.unsubmitted() == 10);
    // A device read that continues nothing goes at once, with whatever was
    // queued before it.
    read(10, 100, IoPath::Device);
    REQUIRE(ctx.unsubmitted() == 0);
    // Reads that continue it wait for four of them.
    for (int i = 11; i < 14; i++) {
        read(i, 90 + i, IoPath::Device);
        REQUIRE(ctx.unsubmitted() == unsigned(i - 10));
    }
    read(14, 104, IoPath::Device);
    REQUIRE(ctx.unsubmitted() == 0);
    read(15, 105, IoPath::Device);
    read(16, 106, IoPath::Device);
    REQUIRE(ctx.unsubmitted() == 2);
    // A jump elsewhere sends the held ones along.
    read(17, 300, IoPath::Device);
    REQUIRE(ctx.unsubmitted() == 0);
    // Page-cache reads in between neither count nor break the run.
    read(18, 301, IoPath::Device);
    read(19, 500, IoPath::Cached);
    REQUIRE(ctx.unsubmitted() == 2);
    // Strided reads go one by one.
    for (int i = 20; i < 24; i++) {
        read(i, 400 + 8 * i, IoPath::Device);
        REQUIRE(ctx.unsubmitted() == 0);
    }

    while (done < 24) {
        ctx.poll(true);
    }
    REQUIRE(ctx.unsubmitted() == 0);
}

TEST_CASE("sleep_ns waits at least the requested time", "[aio][timer]")
{
    AioContext ctx;
    int64_t start = AioContext::now_ns();
    run_sync(ctx, [](AioContext& c) -> Task<void> { co_await c.sleep_ns(20 * 1000 * 1000); }(ctx));
    REQUIRE(AioContext::now_ns() - start >= 20 * 1000 * 1000);
}

TEST_CASE("timers fire in deadline order", "[aio][timer]")
{
    AioContext ctx;
    std::vector<int> order;
    int done = 0;
    for (int i : {3, 1, 2}) {
        co_spawn([](AioContext& c, int n, std::vector<int>& o, int& d) -> Task<void> {
            co_await c.sleep_ns(n * 5 * 1000 * 1000);
            o.push_back(n);
            d++;
        }(ctx, i, order, done));
    }
    while (done < 3) {
        ctx.poll(true);
    }
    REQUIRE(order == std::vector<int>{1, 2, 3});
}

TEST_CASE("callback timers fire once, can be re-armed, cancelled and destroyed", "[aio][timer]")
{
    AioContext ctx;
    int fired = 0;
    Timer t(ctx, [&] { fired++; });
    t.arm_ns(1000000);
    REQUIRE(t.pending());
    while (t.pending()) {
        ctx.poll(true);
    }
    REQUIRE(fired == 1);
    t.arm_ns(1000000);
    t.arm_ns(2000000);  // replaces the first
    while (t.pending()) {
        ctx.poll(true);
    }
    REQUIRE(fired == 2);
    t.arm_ns(1000000);
    t.cancel();
    {
        Timer gone(ctx, [&] { fired += 100; });
        gone.arm_ns(1000000);
    }
    run_sync(ctx, [](AioContext& c) -> Task<void> { co_await c.sleep_ns(5000000); }(ctx));
    REQUIRE(fired == 2);
}

TEST_CASE("post() from another thread wakes a blocked loop", "[aio]")
{
    AioContext ctx;
    std::atomic<bool> ran{false};
    std::thread t([&] {
        usleep(10000);
        ctx.post([&] { ran = true; });
    });
    while (!ran) {
        ctx.poll(true);
    }
    t.join();
    REQUIRE(ran);
}

TEST_CASE("ThreadPool runs blocking work and resumes in the loop thread", "[aio][threadpool]")
{
    AioContext ctx;
    ThreadPool pool(ctx, 4);
    auto loop_thread = std::this_thread::get_id();
    int done = 0;
    for (int i = 0; i < 16; i++) {
        co_spawn([](ThreadPool& p, int n, std::thread::id tid, int& d) -> Task<void> {
            int r = co_await p.run([n] {
                usleep(1000);
                return n * 2;
            });
            REQUIRE(r == n * 2);
            REQUIRE(std::this_thread::get_id() == tid);
            d++;
        }(pool, i, loop_thread, done));
    }
    while (done < 16) {
        ctx.poll(true);
    }
}

TEST_CASE("a GLib main loop drives the AioContext", "[aio][glib]")
{
    AioContext ctx;
    GMainContext* gctx = g_main_context_new();
    g_source_attach(ctx.gsource(), gctx);
    TempFile f;
    bool done = false;
    char buf[512];
    memset(buf, 1, sizeof(buf));
    co_spawn([](AioContext& c, int fd, char* b, bool& d) -> Task<void> {
        iovec v{b, 512};
        auto ret = co_await c.pwritev(fd, &v, 1, 0);
        REQUIRE(ret == 512);
        co_await c.sleep_ns(1000000);
        d = true;
    }(ctx, f.fd, buf, done));
    for (int i = 0; i < 1000 && !done; i++) {
        g_main_context_iteration(gctx, TRUE);
    }
    REQUIRE(done);
    g_source_destroy(ctx.gsource());
    g_main_context_unref(gctx);
}

TEST_CASE("a GLib main loop wakes for a completion that comes while it sleeps", "[aio][glib]")
{
    AioContext ctx;
    GMainContext* gctx = g_main_context_new();
    g_source_attach(ctx.gsource(), gctx);
    // A read from an empty pipe completes only when another thread writes,
    // by which time the loop is asleep in poll().
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    char buf[4] = {};
    bool done = false;
    co_spawn([](AioContext& c, int fd, char* b, bool& d) -> Task<void> {
        iovec v{b, 4};
        auto ret = co_await c.preadv(fd, &v, 1, uint64_t(-1));
        REQUIRE(ret == 4);
        d = true;
    }(ctx, fds[0], buf, done));
    // Catch2's assertions are for the test's thread only.
    ssize_t written = 0;
    std::thread writer([&] {
        usleep(20000);
        written = write(fds[1], "ping", 4);
    });
    // Without the wakeup, only this timeout would end the wait.
    bool timed_out = false;
    GSource* timeout = g_timeout_source_new(5000);
    g_source_set_callback(
        timeout,
        [](gpointer flag) -> gboolean {
            *static_cast<bool*>(flag) = true;
            return G_SOURCE_REMOVE;
        },
        &timed_out, nullptr);
    g_source_attach(timeout, gctx);
    while (!done && !timed_out) {
        g_main_context_iteration(gctx, TRUE);
    }
    writer.join();
    REQUIRE(written == 4);
    REQUIRE(done);
    REQUIRE_FALSE(timed_out);
    REQUIRE(memcmp(buf, "ping", 4) == 0);
    g_source_destroy(timeout);
    g_source_unref(timeout);
    g_source_destroy(ctx.gsource());
    g_main_context_unref(gctx);
    close(fds[0]);
    close(fds[1]);
}
