// The front end's memory as a vhost-user back end maps it: the regions of
// SET_MEM_TABLE, each an fd mapped at its mmap_offset, seen both by
// guest-physical address (descriptor buffers, through GuestMemory) and by
// the front end's own virtual address (the ring addresses of
// SET_VRING_ADDR, which QEMU sends as its userspace addresses).
//
// Ownership: the table owns its mappings and unmaps them when replaced or
// destroyed; nothing may use a pointer it handed out after that.  One
// thread (the connection's context).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "hw/virtio/virtqueue.h"
#include "vhost-user-proto.h"

namespace qemu {

class VhostUserMemTable {
public:
    VhostUserMemTable() = default;
    ~VhostUserMemTable() { clear(); }
    VhostUserMemTable(const VhostUserMemTable&) = delete;
    VhostUserMemTable& operator=(const VhostUserMemTable&) = delete;

    // Maps the regions of a checked SET_MEM_TABLE message (its fds are
    // consumed: closed once mapped) into a new table.  Refuses regions of
    // size 0, whose guest, user or file ranges wrap around, that overlap
    // in either address space, or whose fd cannot be mapped for the whole
    // range; err says which.  On failure nothing is mapped.
    static std::unique_ptr<VhostUserMemTable> create(vhost_user::Message& msg, Error& err);

    const GuestMemory& guest() const { return guest_; }
    // [qva, qva + len) in the front end's address space as a pointer here,
    // when it lies inside one region; nullptr otherwise.
    uint8_t* qva_to_host(uint64_t qva, uint64_t len) const;

private:
    struct Mapping {
        vhost_user::MemRegion region;
        void* base;       // the mmap of [0, mmap_offset + memory_size) of the fd
        size_t map_len;
        uint8_t* start;   // base + mmap_offset: the region's first byte
    };
    bool add(const vhost_user::MemRegion& r, int fd, Error& err);
    void clear();

    std::vector<Mapping> maps_;
    GuestMemory guest_;
};

}  // namespace qemu
