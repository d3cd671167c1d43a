// ThreadPool: runs blocking system calls off the event loop thread.
//
// Used where io_uring cannot help (aio=threads, ioctls such as the Linux
// zone ioctls, operations the kernel lacks an io_uring opcode for).  A
// coroutine does `int ret = co_await pool.run(fn);`: fn runs on a worker
// thread and the coroutine resumes in its own AioContext with fn's result.
// Workers are started on demand up to max_threads and live until the pool is
// destroyed.
#pragma once

#include <condition_variable>
#include <coroutine>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace qemu {

class AioContext;

class ThreadPool {
public:
    explicit ThreadPool(AioContext& ctx, unsigned max_threads = 64);
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    class RunOp {
    public:
        RunOp(ThreadPool& pool, std::function<int()> fn) : pool_(pool), fn_(std::move(fn)) {}
        bool await_ready() const noexcept { return false; }
        void await_suspend(std::coroutine_handle<> h);
        int await_resume() const noexcept { return result_; }

    private:
        friend class ThreadPool;
        ThreadPool& pool_;
        std::function<int()> fn_;
        std::coroutine_handle<> waiter_;
        int result_ = 0;
    };

    RunOp run(std::function<int()> fn) { return RunOp(*this, std::move(fn)); }

private:
    void submit(RunOp* op);
    void worker();

    AioContext& ctx_;
    unsigned max_threads_;
    std::mutex lock_;
    std::condition_variable cond_;
    std::deque<RunOp*> queue_;
    std::vector<std::thread> threads_;
    unsigned idle_ = 0;
    bool stopping_ = false;
};

}  // namespace qemu
