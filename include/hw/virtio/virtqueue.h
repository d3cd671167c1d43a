// Split virtqueues (virtio 1.2, 2.7) as a device sees them, and the guest
// memory they point into.  Shared by every virtio transport
// (export/vhost-user-blk, export/vduse-blk): the transport maps the
// driver's memory, tells the queue where its rings are, and calls pop() /
// push() when kicked; the device model (hw/virtio-blk) consumes the
// elements.
//
// Everything a driver writes is hostile: descriptor indices, lengths,
// addresses, chain loops, indirect tables inside indirect tables, rings
// that move under us.  pop() validates a whole chain against the memory
// table before handing out an element, bounds the walk by the queue size
// (and the indirect table's length), and never dereferences a guest
// address that GuestMemory did not translate.
//
// Threads: a VirtQueue is used by one thread at a time (its queue's
// AioContext); GuestMemory is immutable while queues use it (the
// transport replaces it only with the queues stopped).
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <vector>

namespace qemu {

// The driver's memory as regions of guest-physical (vhost-user) or IOVA
// (VDUSE) addresses, each mapped into our address space by the transport,
// which owns the mappings and keeps them alive while the table is in use.
class GuestMemory {
public:
    struct Region {
        uint64_t guest_addr;  // first address of the region in the driver's space
        uint64_t size;
        uint8_t* host;        // where its first byte is mapped here
        bool writable;        // the device may write to it
    };

    // Regions must not overlap; returns false (nothing added) if r does,
    // or if it wraps around the address space.
    bool add_region(const Region& r);
    const std::vector<Region>& regions() const { return regions_; }

    // Appends host iovecs covering [addr, addr + len) to out (several when
    // the range spans adjacent regions).  Returns false, with out
    // unchanged, if any byte is unmapped or (want_write) read-only.
    bool translate(uint64_t addr, uint64_t len, bool want_write, std::vector<iovec>& out) const;
    // A pointer to [addr, addr + len) when it lies inside one region, else nullptr.
    uint8_t* translate_contiguous(uint64_t addr, uint64_t len, bool want_write) const;

private:
    std::vector<Region> regions_;  // sorted by guest_addr
};

// One request popped from a queue: the descriptor chain's buffers, split
// into the driver-readable ("out") and device-writable ("in") parts, in
// order.  out_bytes/in_bytes are their totals.
struct VirtQueueElement {
    uint16_t head = 0;  // the chain's first descriptor index, returned by push()
    std::vector<iovec> out;
    std::vector<iovec> in;
    uint64_t out_bytes = 0;
    uint64_t in_bytes = 0;
};

// Split ring layout (virtio 1.2, 2.7): descriptor flags, ring flags, and
// the largest queue.  A test driver or a transport builds rings with these.
enum : uint16_t {
    VRING_DESC_F_NEXT = 1,
    VRING_DESC_F_WRITE = 2,
    VRING_DESC_F_INDIRECT = 4,
    VRING_AVAIL_F_NO_INTERRUPT = 1,
    VRING_USED_F_NO_NOTIFY = 1,
};
inline constexpr unsigned kVirtQueueMaxSize = 32768;
// One descriptor as it sits in a table (little-endian, 16 bytes).
struct VringDesc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};
static_assert(sizeof(VringDesc) == 16);

class VirtQueue {
public:
    // Where the rings live, as host pointers the transport translated
    // (they must stay mapped while the queue runs).
    struct Rings {
        void* desc = nullptr;   // num × 16 bytes
        void* avail = nullptr;  // 6 + 2 × num bytes
        void* used = nullptr;   // 6 + 8 × num bytes
    };

    // REQUIRES: num a power of two in [1, 32768]; rings not null and
    // aligned as the spec requires (the transport checks and refuses
    // otherwise).  `last_avail_idx` resumes where a previous back end left
    // off (vhost-user SET_VRING_BASE; 0 for a fresh queue).
    void start(uint16_t num, const Rings& rings, bool event_idx, uint16_t last_avail_idx);
    void stop();
    bool started() const { return num_ != 0; }

    enum class PopResult { Element, Empty, Broken };
    // Takes the next available chain.  Broken: the chain is malformed
    // (out-of-range index, a loop, an address outside mem, a readable
    // descriptor after a writable one, a bad indirect table); the queue
    // stays broken and the transport reports NEEDS_RESET.
    // The rules (docs/devel/virtio-blk.rst): the avail index may run at
    // most num ahead of last_avail_idx(); a chain holds at most num
    // descriptors of the table, or is one descriptor with INDIRECT (and
    // no NEXT) pointing at a table of len / 16 entries (len a non-zero
    // multiple of 16, at most kVirtQueueMaxSize entries, inside one
    // memory region), whose entries have no INDIRECT; no descriptor has
    // length 0; no readable descriptor follows a writable one.  Each
    // descriptor is read once, so a driver changing it meanwhile cannot
    // make a checked value differ from the one used.  On Broken, elem is
    // cleared and last_avail_idx() does not move.
    PopResult pop(const GuestMemory& mem, VirtQueueElement& elem);
    // Puts a finished element on the used ring with the number of bytes
    // written into its in-buffers.  Elements may be pushed in any order.
    // On a stopped queue, push(), should_notify() (false) and
    // set_notification() do nothing: the rings may be unmapped already.
    void push(const VirtQueueElement& elem, uint32_t written);
    // After one or more push(): whether the driver wants a notification
    // (event index or NO_INTERRUPT), and resets the tracking.
    bool should_notify();
    // Ask the driver not to kick (while the queue is being drained by
    // polling) or to kick again; with event_idx this moves avail_event.
    void set_notification(bool enabled);

    uint16_t num() const { return num_; }
    uint16_t last_avail_idx() const { return last_avail_idx_; }  // vhost-user GET_VRING_BASE
    bool broken() const { return broken_; }

private:
    bool walk_chain(const GuestMemory& mem, uint16_t head, VirtQueueElement& elem);
    void set_avail_event(uint16_t idx);

    uint16_t num_ = 0;
    Rings rings_;
    bool event_idx_ = false;
    bool broken_ = false;
    uint16_t last_avail_idx_ = 0;
    uint16_t used_idx_ = 0;
    uint16_t signalled_used_ = 0;  // used_idx_ when the driver was last notified
    bool signalled_used_valid_ = false;
    bool notification_ = true;  // set_notification()
};

}  // namespace qemu
