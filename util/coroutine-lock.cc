#include "qemu/coroutine-lock.h"

#include "qemu/aio.h"

namespace qemu {

bool CoQueue::next()
{
    if (waiters_.empty()) {
        return false;
    }
    AioContext::current().schedule(waiters_.front());
    waiters_.pop_front();
    return true;
}

void CoQueue::restart_all()
{
    while (next()) {
    }
}

Task<CoMutex::Guard> CoMutex::scoped_lock()
{
    co_await lock();
    co_return Guard(this);
}

void CoMutex::unlock()
{
    if (waiters_.empty()) {
        locked_ = false;
        return;
    }
    // Hand over: the mutex stays locked on behalf of the woken coroutine.
    AioContext::current().schedule(waiters_.front());
    waiters_.pop_front();
}

bool CoRwlock::try_rdlock()
{
    if (writer_ || !waiters_.empty()) {
        return false;
    }
    readers_++;
    return true;
}

bool CoRwlock::try_wrlock()
{
    if (writer_ || readers_ > 0 || !waiters_.empty()) {
        return false;
    }
    writer_ = true;
    return true;
}

void CoRwlock::unlock()
{
    if (writer_) {
        writer_ = false;
    } else {
        readers_--;
    }
    wake_waiters();
}

void CoRwlock::wake_waiters()
{
    AioContext& ctx = AioContext::current();
    while (!waiters_.empty()) {
        Waiter w = waiters_.front();
        if (w.writer) {
            if (readers_ > 0 || writer_) {
                return;
            }
            writer_ = true;
            waiters_.pop_front();
            ctx.schedule(w.h);
            return;
        }
        if (writer_) {
            return;
        }
        readers_++;
        waiters_.pop_front();
        ctx.schedule(w.h);
    }
}

}  // namespace qemu
