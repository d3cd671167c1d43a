// IOThread: a thread that runs one AioContext's loop, as QEMU's
// `--object iothread,id=...`, and the ways to run a coroutine in another
// thread's context.
//
// Coroutines never migrate: a task runs, suspends and resumes in the thread
// of the context it was started in.  To do I/O on a node bound to another
// context, start the work *there*: co_run_in() from a coroutine (the caller
// resumes in its own context with the result), run_in() from plain code in
// any thread that does not own the target (it blocks until the result is
// there).  Both copy nothing but the result: the factory and what it
// references must stay valid until the result arrives.
#pragma once

#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>

#include "qemu/aio.h"
#include "qemu/coroutine.h"

namespace qemu {

namespace detail {

// The result slot of a task run elsewhere; `void` tasks fill in a bool.
template <typename T>
using RunResult = std::conditional_t<std::is_void_v<T>, bool, T>;

template <typename T>
Task<void> run_into(std::function<Task<T>()> fn, std::optional<RunResult<T>>& out)
{
    if constexpr (std::is_void_v<T>) {
        co_await fn();
        out.emplace(true);
    } else {
        out.emplace(co_await fn());
    }
}

template <typename T>
T unwrap(std::optional<RunResult<T>>& r)
{
    if constexpr (!std::is_void_v<T>) {
        return std::move(*r);
    }
}

// Awaited by co_run_in(): starts fn() in `target`, and once it has finished
// there, resumes the awaiting coroutine in `home`.
template <typename T>
struct RunInOp {
    AioContext& target;
    AioContext& home;
    std::function<Task<T>()> fn;
    std::optional<RunResult<T>> result;

    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h)
    {
        target.post([this, h] { co_spawn(body(h)); });
    }
    Task<void> body(std::coroutine_handle<> h)
    {
        co_await run_into<T>(fn, result);
        home.post([h] { h.resume(); });
    }
    void await_resume() const noexcept {}
};

}  // namespace detail

// From a coroutine running in the calling thread's context: runs fn() as a
// coroutine in `target` and returns its result here.  With target being
// the caller's own context it simply awaits fn().
template <typename T>
Task<T> co_run_in(AioContext& target, std::function<Task<T>()> fn)
{
    if (target.in_own_thread()) {
        co_return co_await fn();
    }
    detail::RunInOp<T> op{target, AioContext::current(), std::move(fn), {}};
    co_await op;
    co_return detail::unwrap<T>(op.result);
}

// From plain code: runs fn() as a coroutine in `target` and waits for its
// result, polling target itself when the caller owns it (run_sync), else
// blocking the calling thread until target's thread has finished the task.
// REQUIRES: not called from a coroutine; target's loop is running (its
// IOThread) when the caller does not own it.
template <typename T>
T run_in(AioContext& target, std::function<Task<T>()> fn)
{
    if (target.in_own_thread()) {
        return run_sync(target, fn());
    }
    std::mutex lock;
    std::condition_variable cond;
    std::optional<detail::RunResult<T>> result;
    bool done = false;
    target.post([&] {
        co_spawn([](std::function<Task<T>()> f, std::optional<detail::RunResult<T>>& r,
                    std::mutex& l, std::condition_variable& c, bool& d) -> Task<void> {
            co_await detail::run_into<T>(std::move(f), r);
            std::lock_guard<std::mutex> guard(l);
            d = true;
            c.notify_one();
        }(std::move(fn), result, lock, cond, done));
    });
    std::unique_lock<std::mutex> guard(lock);
    cond.wait(guard, [&] { return done; });
    return detail::unwrap<T>(result);
}

class IOThread {
public:
    // Starts the thread; its AioContext exists when the constructor returns.
    explicit IOThread(std::string id);
    // Stops the loop and joins the thread; the context goes with it.
    // REQUIRES: no node is bound to the context any more, and no task of
    // it still waits for anything.
    ~IOThread();
    IOThread(const IOThread&) = delete;
    IOThread& operator=(const IOThread&) = delete;

    const std::string& id() const { return id_; }
    // Owned by the thread; nodes are bound to it with
    // bdrv_try_change_aio_context().
    AioContext& ctx() const { return *ctx_; }

    // run_in(ctx(), fn): from plain code in another thread.
    template <typename T>
    T run(std::function<Task<T>()> fn)
    {
        return run_in<T>(*ctx_, std::move(fn));
    }

private:
    std::string id_;
    AioContext* ctx_ = nullptr;  // set by the thread before it signals ready
    bool stop_ = false;          // only touched in the thread
    std::thread thread_;
};

}  // namespace qemu
