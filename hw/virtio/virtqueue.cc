// Split virtqueues, device side.  The driver shares the rings with us and
// may change any byte of them at any time, so each value is loaded once
// into a local (read_once) before it is checked and used, and the index
// loads and stores carry the ordering virtio 1.2 2.7.13 requires: the
// avail index with acquire before the ring entries behind it, the used
// index with release after the used elements.
#include "hw/virtio/virtqueue.h"

#include <atomic>
#include <cstring>

#include "qemu/bswap.h"

namespace qemu {

namespace {

// Byte offsets inside the rings (virtio 1.2 2.7.6, 2.7.8).
constexpr size_t kAvailIdx = 2;
constexpr size_t kAvailRing = 4;
constexpr size_t kUsedIdx = 2;
constexpr size_t kUsedRing = 4;

uint16_t load_acquire16(const void* p)
{
    return __atomic_load_n(static_cast<const uint16_t*>(p), __ATOMIC_ACQUIRE);
}

uint16_t load_relaxed16(const void* p)
{
    return __atomic_load_n(static_cast<const uint16_t*>(p), __ATOMIC_RELAXED);
}

void store_relaxed16(void* p, uint16_t v)
{
    __atomic_store_n(static_cast<uint16_t*>(p), v, __ATOMIC_RELAXED);
}

// A descriptor copied out of shared memory.  The signal fence keeps the
// compiler from reading the shared bytes again in place of the copy.
VringDesc read_once(const uint8_t* p)
{
    VringDesc d;
    memcpy(&d, p, sizeof(d));
    std::atomic_signal_fence(std::memory_order_seq_cst);
    d.addr = load_le64(&d.addr);
    d.len = load_le32(&d.len);
    d.flags = load_le16(&d.flags);
    d.next = load_le16(&d.next);
    return d;
}

// Adds one buffer to the element.  A readable buffer after a writable one,
// an empty one (QEMU refuses them too) or one outside mem breaks the chain.
bool add_buffer(const GuestMemory& mem, const VringDesc& d, VirtQueueElement& elem)
{
    if (d.len == 0) {
        return false;
    }
    if (d.flags & VRING_DESC_F_WRITE) {
        if (!mem.translate(d.addr, d.len, true, elem.in)) {
            return false;
        }
        elem.in_bytes += d.len;
        return true;
    }
    if (!elem.in.empty() || !mem.translate(d.addr, d.len, false, elem.out)) {
        return false;
    }
    elem.out_bytes += d.len;
    return true;
}

// Walks the chain from index `first` of a table of `max` descriptors,
// visiting at most `max` of them (more means a loop).  Indirect
// descriptors are not allowed here: the caller has dealt with the one
// place they may be.
bool walk_table(const GuestMemory& mem, const uint8_t* table, uint32_t max, uint32_t first,
                VirtQueueElement& elem)
{
    uint32_t i = first;
    for (uint32_t count = 0;; count++) {
        if (count == max || i >= max) {
            return false;
        }
        VringDesc d = read_once(table + size_t(i) * sizeof(VringDesc));
        if ((d.flags & VRING_DESC_F_INDIRECT) || !add_buffer(mem, d, elem)) {
            return false;
        }
        if (!(d.flags & VRING_DESC_F_NEXT)) {
            return true;
        }
        i = d.next;
    }
}

}  // namespace

void VirtQueue::start(uint16_t num, const Rings& rings, bool event_idx, uint16_t last_avail_idx)
{
    num_ = num;
    rings_ = rings;
    event_idx_ = event_idx;
    broken_ = false;
    last_avail_idx_ = last_avail_idx;
    // Resume the used index where the ring says it is: a fresh ring has
    // 0, a ring handed over from an earlier back end has that one's.
    used_idx_ = load_relaxed16(static_cast<uint8_t*>(rings.used) + kUsedIdx);
    signalled_used_valid_ = false;
    notification_ = true;
    if (event_idx_) {
        set_avail_event(last_avail_idx_);
    }
}

void VirtQueue::stop()
{
    num_ = 0;
    rings_ = Rings{};
}

void VirtQueue::set_avail_event(uint16_t idx)
{
    uint8_t* used = static_cast<uint8_t*>(rings_.used);
    store_relaxed16(used + kUsedRing + 8 * size_t(num_), idx);
}

bool VirtQueue::walk_chain(const GuestMemory& mem, uint16_t head, VirtQueueElement& elem)
{
    const uint8_t* desc = static_cast<const uint8_t*>(rings_.desc);
    VringDesc d = read_once(desc + size_t(head) * sizeof(VringDesc));
    if (!(d.flags & VRING_DESC_F_INDIRECT)) {
        return walk_table(mem, desc, num_, head, elem);
    }
    // One table per chain, and the chain is that table alone.
    if ((d.flags & VRING_DESC_F_NEXT) || d.len == 0 || d.len % sizeof(VringDesc) ||
        d.len / sizeof(VringDesc) > kVirtQueueMaxSize) {
        return false;
    }
    const uint8_t* table = mem.translate_contiguous(d.addr, d.len, false);
    if (table == nullptr) {
        return false;
    }
    return walk_table(mem, table, d.len / sizeof(VringDesc), 0, elem);
}

VirtQueue::PopResult VirtQueue::pop(const GuestMemory& mem, VirtQueueElement& elem)
{
    elem.out.clear();
    elem.in.clear();
    elem.out_bytes = 0;
    elem.in_bytes = 0;
    if (num_ == 0) {
        return PopResult::Empty;
    }
    if (broken_) {
        return PopResult::Broken;
    }
    const uint8_t* avail = static_cast<const uint8_t*>(rings_.avail);
    uint16_t avail_idx = load_acquire16(avail + kAvailIdx);
    uint16_t pending = uint16_t(avail_idx - last_avail_idx_);
    if (pending == 0) {
        return PopResult::Empty;
    }
    // More than a ring's worth of new entries: the driver moved the index
    // to somewhere it never filled.
    if (pending > num_) {
        broken_ = true;
        return PopResult::Broken;
    }
    uint16_t head = load_relaxed16(avail + kAvailRing + 2 * size_t(last_avail_idx_ % num_));
    if (head >= num_ || !walk_chain(mem, head, elem)) {
        elem.out.clear();
        elem.in.clear();
        elem.out_bytes = 0;
        elem.in_bytes = 0;
        broken_ = true;
        return PopResult::Broken;
    }
    elem.head = head;
    last_avail_idx_++;
    if (event_idx_ && notification_) {
        set_avail_event(last_avail_idx_);
    }
    return PopResult::Element;
}

void VirtQueue::push(const VirtQueueElement& elem, uint32_t written)
{
    if (num_ == 0) {
        return;  // stopped while the request ran: the rings are gone
    }
    uint8_t* used = static_cast<uint8_t*>(rings_.used);
    uint8_t* slot = used + kUsedRing + 8 * size_t(used_idx_ % num_);
    store_le32(slot, elem.head);
    store_le32(slot + 4, written);
    used_idx_++;
    // The element before the index that publishes it.
    __atomic_store_n(reinterpret_cast<uint16_t*>(used + kUsedIdx), used_idx_, __ATOMIC_RELEASE);
}

bool VirtQueue::should_notify()
{
    // The used index we published must be visible before we read what the
    // driver wants; the driver does the converse (virtio 1.2 2.7.10).
    if (num_ == 0) {
        return false;
    }
    std::atomic_thread_fence(std::memory_order_seq_cst);
    const uint8_t* avail = static_cast<const uint8_t*>(rings_.avail);
    if (!event_idx_) {
        return !(load_relaxed16(avail) & VRING_AVAIL_F_NO_INTERRUPT);
    }
    bool valid = signalled_used_valid_;
    uint16_t old_used = signalled_used_;
    signalled_used_ = used_idx_;
    signalled_used_valid_ = true;
    if (!valid) {
        return true;
    }
    uint16_t used_event = load_relaxed16(avail + kAvailRing + 2 * size_t(num_));
    // vring_need_event(): did used_idx_ pass used_event since old_used?
    return uint16_t(used_idx_ - used_event - 1) < uint16_t(used_idx_ - old_used);
}

void VirtQueue::set_notification(bool enabled)
{
    notification_ = enabled;
    if (num_ == 0) {
        return;
    }
    uint8_t* used = static_cast<uint8_t*>(rings_.used);
    if (event_idx_) {
        // Kick again once anything past what we have seen is made
        // available; while disabled, pop() stops moving it on, so the
        // driver kicks at most once more.
        const uint8_t* avail = static_cast<const uint8_t*>(rings_.avail);
        set_avail_event(load_relaxed16(avail + kAvailIdx));
    } else {
        uint16_t flags = load_relaxed16(used);
        store_relaxed16(used, enabled ? uint16_t(flags & ~VRING_USED_F_NO_NOTIFY)
                                      : uint16_t(flags | VRING_USED_F_NO_NOTIFY));
    }
    if (enabled) {
        // Our request for kicks before the caller looks at the avail
        // index again: else a buffer made available meanwhile would go
        // unnoticed (neither kicked nor seen).
        std::atomic_thread_fence(std::memory_order_seq_cst);
    }
}

}  // namespace qemu
