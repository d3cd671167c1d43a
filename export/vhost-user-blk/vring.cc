// The vhost-user-blk back end's virtqueues: starting them from what the
// front end described, the kick loop, and one coroutine per request
// (session.h).
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "session.h"

namespace qemu {

using namespace vhost_user;

bool VhostUserBlkSession::try_start(Vring& v, Error& err)
{
    if (v.vq.started() || !v.kicked || !v.enabled) {
        return true;
    }
    if (!mem_ || !v.num || !v.addr) {
        err.set("vhost-user: vring %u kicked before its memory, size and addresses were set",
                v.index);
        return false;
    }
    const VringAddr& a = *v.addr;
    bool event_idx = features_ & VIRTIO_RING_F_EVENT_IDX;
    uint64_t num = v.num;
    VirtQueue::Rings r;
    r.desc = mem_->qva_to_host(a.desc_user_addr, 16 * num);
    r.avail = mem_->qva_to_host(a.avail_user_addr, 6 + 2 * num);
    r.used = mem_->qva_to_host(a.used_user_addr, 6 + 8 * num);
    if (!r.desc || !r.avail || !r.used || (a.desc_user_addr % 16) || (a.avail_user_addr % 2) ||
        (a.used_user_addr % 4)) {
        err.set("vhost-user: vring %u: rings at desc 0x%llx avail 0x%llx used 0x%llx are "
                "misaligned or outside the memory table",
                v.index, (unsigned long long)a.desc_user_addr,
                (unsigned long long)a.avail_user_addr, (unsigned long long)a.used_user_addr);
        return false;
    }
    v.vq.start(uint16_t(v.num), r, event_idx, v.base);
    v.stop_loop = false;
    v.loop_running = true;
    co_spawn(co_kick_loop(v));
    return true;
}

Task<void> VhostUserBlkSession::co_quiesce(Vring& v)
{
    if (v.loop_running) {
        v.stop_loop = true;
        eventfd_write(v.kick.get(), 1);  // wakes the loop's poll
    }
    while (v.loop_running || v.inflight) {
        co_await v.idle.wait();
    }
    if (v.vq.started()) {
        v.base = v.vq.last_avail_idx();
        v.vq.stop();
    }
}

Task<void> VhostUserBlkSession::co_kick_loop(Vring& v)
{
    process(v);
    while (!v.stop_loop) {
        int mask = co_await ctx_.poll_in(v.kick.get());
        if (v.stop_loop) {
            break;
        }
        if (mask < 0 || (mask & (POLLERR | POLLNVAL))) {
            error_report("vhost-user: vring %u: cannot wait for kicks", v.index);
            break;
        }
        eventfd_t count;
        if (read(v.kick.get(), &count, sizeof(count)) < 0 && errno != EAGAIN) {
            break;
        }
        process(v);
    }
    v.loop_running = false;
    v.idle.restart_all();
}

void VhostUserBlkSession::process(Vring& v)
{
    if (v.vq.broken()) {
        return;
    }
    for (;;) {
        // Kicks are not needed while we drain; after re-enabling them one
        // more look catches a request that came in between.
        v.vq.set_notification(false);
        VirtQueue::PopResult r;
        for (;;) {
            VirtQueueElement elem;
            r = v.vq.pop(mem_->guest(), elem);
            if (r != VirtQueue::PopResult::Element) {
                break;
            }
            v.inflight++;
            co_spawn(co_request(v, std::move(elem)));
        }
        v.vq.set_notification(true);
        if (r == VirtQueue::PopResult::Empty) {
            VirtQueueElement elem;
            r = v.vq.pop(mem_->guest(), elem);
            if (r == VirtQueue::PopResult::Element) {
                v.inflight++;
                co_spawn(co_request(v, std::move(elem)));
                continue;
            }
        }
        if (r == VirtQueue::PopResult::Broken) {
            error_report("vhost-user: vring %u: the driver broke the queue", v.index);
            if (v.err.valid()) {
                eventfd_write(v.err.get(), 1);
            }
        }
        return;
    }
}

Task<void> VhostUserBlkSession::co_request(Vring& v, VirtQueueElement elem)
{
    uint32_t written = co_await dev_.co_handle(elem);
    // The queue is only stopped once every request has been pushed.
    v.vq.push(elem, written);
    // One notification for all the requests that complete in this turn of
    // the loop, not one eventfd write (and driver wakeup) each.  The flush
    // counts as in flight, so the ring outlives it.
    if (!v.notify_pending) {
        v.notify_pending = true;
        v.inflight++;
        ctx_.post([this, &v] {
            v.notify_pending = false;
            if (v.vq.should_notify() && v.call.valid()) {
                eventfd_write(v.call.get(), 1);
            }
            finished(v);
        });
    }
    finished(v);
}

void VhostUserBlkSession::finished(Vring& v)
{
    if (--v.inflight == 0) {
        v.idle.restart_all();
    }
}

}  // namespace qemu
