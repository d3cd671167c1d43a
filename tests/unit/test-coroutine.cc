// Coroutine tasks and coroutine locks.
#include <catch2/catch.hpp>

#include <vector>

#include "qemu/aio.h"
#include "qemu/coroutine-lock.h"

using namespace qemu;

namespace {
Task<int> add(int a, int b)
{
    co_return a + b;
}

Task<int> add_one(int a)
{
    co_return a + 1;
}

Task<long> sum_loop(int n)
{
    long sum = 0;
    for (int i = 0; i < n; i++) {
        sum += co_await add_one(i);
    }
    co_return sum;
}

struct Yield {
    AioContext& ctx;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) { ctx.schedule(h); }
    void await_resume() const noexcept {}
};
}  // namespace

TEST_CASE("Task returns values through co_await", "[coroutine]")
{
    AioContext ctx;
    REQUIRE(run_sync(ctx, add(2, 3)) == 5);
}

TEST_CASE("loops of synchronously completing awaits use constant stack", "[coroutine]")
{
    // Millions of iterations would overflow the stack if each completed
    // co_await nested a resume() (as symmetric transfer does without tail
    // calls in sanitizer builds).
    AioContext ctx;
    REQUIRE(run_sync(ctx, sum_loop(3000000)) == 3000000L * 3000001L / 2);
}

TEST_CASE("a task runs eagerly until its first suspension", "[coroutine]")
{
    AioContext ctx;
    bool before = false, after = false;
    auto t = [](AioContext& c, bool& b, bool& a) -> Task<void> {
        b = true;
        co_await Yield{c};
        a = true;
    }(ctx, before, after);
    REQUIRE(before);
    REQUIRE_FALSE(after);
    REQUIRE_FALSE(t.done());
    run_sync(ctx, std::move(t));
    REQUIRE(after);
}

TEST_CASE("co_spawn runs until the first suspension", "[coroutine]")
{
    AioContext ctx;
    std::vector<int> order;
    co_spawn([](AioContext& c, std::vector<int>& o) -> Task<void> {
        o.push_back(1);
        co_await Yield{c};
        o.push_back(3);
    }(ctx, order));
    order.push_back(2);
    while (order.size() < 3) {
        ctx.poll(true);
    }
    REQUIRE(order == std::vector<int>{1, 2, 3});
}

TEST_CASE("CoMutex gives the lock to waiters in FIFO order", "[coroutine][lock]")
{
    AioContext ctx;
    CoMutex mutex;
    std::vector<int> order;
    int done = 0;
    auto worker = [](AioContext& c, CoMutex& m, std::vector<int>& o, int id, int& d) -> Task<void> {
        co_await m.lock();
        o.push_back(id);
        co_await Yield{c};  // hold the lock across a suspension
        o.push_back(id);
        m.unlock();
        d++;
    };
    for (int i = 0; i < 4; i++) {
        co_spawn(worker(ctx, mutex, order, i, done));
    }
    while (done < 4) {
        ctx.poll(true);
    }
    REQUIRE(order == std::vector<int>{0, 0, 1, 1, 2, 2, 3, 3});
    REQUIRE_FALSE(mutex.locked());
}

TEST_CASE("CoMutex scoped_lock releases on scope exit", "[coroutine][lock]")
{
    AioContext ctx;
    CoMutex mutex;
    run_sync(ctx, [](CoMutex& m) -> Task<void> {
        {
            auto guard = co_await m.scoped_lock();
            REQUIRE(m.locked());
        }
        REQUIRE_FALSE(m.locked());
    }(mutex));
}

TEST_CASE("CoRwlock: readers share, writers exclude, writers are not starved", "[coroutine][lock]")
{
    AioContext ctx;
    CoRwlock lock;
    std::vector<std::string> log;
    int done = 0;
    auto reader = [](AioContext& c, CoRwlock& l, std::vector<std::string>& lg, std::string n,
                     int& d) -> Task<void> {
        co_await l.rdlock();
        lg.push_back(n + "+");
        co_await Yield{c};
        lg.push_back(n + "-");
        l.unlock();
        d++;
    };
    auto writer = [](AioContext& c, CoRwlock& l, std::vector<std::string>& lg, int& d) -> Task<void> {
        co_await l.wrlock();
        lg.push_back("w+");
        co_await Yield{c};
        lg.push_back("w-");
        l.unlock();
        d++;
    };
    co_spawn(reader(ctx, lock, log, "r1", done));
    co_spawn(reader(ctx, lock, log, "r2", done));
    co_spawn(writer(ctx, lock, log, done));
    co_spawn(reader(ctx, lock, log, "r3", done));  // queues behind the writer
    while (done < 4) {
        ctx.poll(true);
    }
    REQUIRE(log == std::vector<std::string>{"r1+", "r2+", "r1-", "r2-", "w+", "w-", "r3+", "r3-"});
}

TEST_CASE("CoQueue wakes waiters one at a time or all", "[coroutine][lock]")
{
    AioContext ctx;
    CoQueue q;
    int woken = 0;
    auto waiter = [](CoQueue& queue, int& w) -> Task<void> {
        co_await queue.wait();
        w++;
    };
    for (int i = 0; i < 3; i++) {
        co_spawn(waiter(q, woken));
    }
    REQUIRE(q.next());
    ctx.poll(false);
    REQUIRE(woken == 1);
    q.restart_all();
    ctx.poll(false);
    REQUIRE(woken == 3);
    REQUIRE_FALSE(q.next());
}
