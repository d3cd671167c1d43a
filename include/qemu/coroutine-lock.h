// Coroutine synchronisation: CoQueue, CoMutex and CoRwlock.
//
// These suspend the calling coroutine instead of blocking the thread.  They
// are for coroutines sharing one AioContext (one thread); a woken coroutine
// is resumed from the event loop at its next iteration, never from inside the
// waker, so wakers are not re-entered.
//
//   co_await mutex.lock();  ...  mutex.unlock();
//   { auto guard = co_await mutex.scoped_lock(); ... }
#pragma once

#include <coroutine>
#include <cstddef>
#include <deque>

#include "qemu/coroutine.h"

namespace qemu {

class AioContext;

// A FIFO of suspended coroutines (QEMU's CoQueue).
class CoQueue {
public:
    // co_await queue.wait(): suspend until next()/restart_all() wakes us.
    struct WaitOp {
        CoQueue& q;
        bool await_ready() const noexcept { return false; }
        void await_suspend(std::coroutine_handle<> h) { q.waiters_.push_back(h); }
        void await_resume() const noexcept {}
    };
    WaitOp wait() { return WaitOp{*this}; }

    // Wakes the first waiter; returns false if there was none.
    bool next();
    // Wakes every waiter.
    void restart_all();
    bool empty() const { return waiters_.empty(); }

private:
    std::deque<std::coroutine_handle<>> waiters_;
};

class CoMutex {
public:
    struct LockOp {
        CoMutex& m;
        bool await_ready() const noexcept { return m.try_lock(); }
        void await_suspend(std::coroutine_handle<> h) { m.waiters_.push_back(h); }
        void await_resume() const noexcept {}
    };

    // Releases the mutex when destroyed.
    class Guard {
    public:
        explicit Guard(CoMutex* m) : m_(m) {}
        Guard(Guard&& o) noexcept : m_(o.m_) { o.m_ = nullptr; }
        Guard(const Guard&) = delete;
        ~Guard()
        {
            if (m_) {
                m_->unlock();
            }
        }

    private:
        CoMutex* m_;
    };

    LockOp lock() { return LockOp{*this}; }
    Task<Guard> scoped_lock();
    bool try_lock()
    {
        if (locked_) {
            return false;
        }
        locked_ = true;
        return true;
    }
    // Ownership passes straight to the first waiter, so a stream of new
    // lockers cannot starve it.
    void unlock();
    bool locked() const { return locked_; }

private:
    bool locked_ = false;
    std::deque<std::coroutine_handle<>> waiters_;
};

// Readers share, writers exclude; once a writer waits, new readers queue
// behind it so writers are not starved.
class CoRwlock {
public:
    struct ReadOp {
        CoRwlock& l;
        bool await_ready() const noexcept { return l.try_rdlock(); }
        void await_suspend(std::coroutine_handle<> h) { l.waiters_.push_back({h, false}); }
        void await_resume() const noexcept {}
    };
    struct WriteOp {
        CoRwlock& l;
        bool await_ready() const noexcept { return l.try_wrlock(); }
        void await_suspend(std::coroutine_handle<> h) { l.waiters_.push_back({h, true}); }
        void await_resume() const noexcept {}
    };

    ReadOp rdlock() { return ReadOp{*this}; }
    WriteOp wrlock() { return WriteOp{*this}; }
    void unlock();

private:
    bool try_rdlock();
    bool try_wrlock();
    void wake_waiters();

    struct Waiter {
        std::coroutine_handle<> h;
        bool writer;
    };
    size_t readers_ = 0;
    bool writer_ = false;
    std::deque<Waiter> waiters_;
};

}  // namespace qemu
