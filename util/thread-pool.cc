#include "qemu/thread-pool.h"

#include "qemu/aio.h"

namespace qemu {

ThreadPool::ThreadPool(AioContext& ctx, unsigned max_threads)
    : ctx_(ctx), max_threads_(max_threads ? max_threads : 1)
{
}

ThreadPool::~ThreadPool()
{
    {
        std::lock_guard<std::mutex> guard(lock_);
        stopping_ = true;
    }
    cond_.notify_all();
    for (auto& t : threads_) {
        t.join();
    }
}

void ThreadPool::RunOp::await_suspend(std::coroutine_handle<> h)
{
    waiter_ = h;
    pool_.submit(this);
}

void ThreadPool::submit(RunOp* op)
{
    std::lock_guard<std::mutex> guard(lock_);
    queue_.push_back(op);
    if (idle_ == 0 && threads_.size() < max_threads_) {
        threads_.emplace_back([this] { worker(); });
    } else {
        cond_.notify_one();
    }
}

void ThreadPool::worker()
{
    std::unique_lock<std::mutex> guard(lock_);
    for (;;) {
        while (queue_.empty() && !stopping_) {
            idle_++;
            cond_.wait(guard);
            idle_--;
        }
        if (queue_.empty()) {
            return;
        }
        RunOp* op = queue_.front();
        queue_.pop_front();
        guard.unlock();
        op->result_ = op->fn_();
        ctx_.post([op] { op->waiter_.resume(); });
        guard.lock();
    }
}

}  // namespace qemu
