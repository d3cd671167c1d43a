// An in-process virtio driver for unit tests: one block of "guest memory"
// (mapped at a guest address that is not 0, so that a device using an
// untranslated address would fault), a split virtqueue laid out in it as a
// driver would, and helpers to build descriptor chains (direct or through
// an indirect table), make them available and read the used ring.  Also
// the way to write hostile rings: raw descriptors and indices.
//
// Everything is little-endian and 16-byte aligned as the spec requires.
// The driver side runs in the test's thread, like the device; no kicks or
// interrupts, the test pops and pushes itself.
#pragma once

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "hw/virtio/virtqueue.h"
#include "qemu/bswap.h"

namespace qemu::test {

class VirtioTestDriver {
public:
    struct Buf {
        uint64_t addr;  // guest address
        uint32_t len;
        bool write;  // device-writable
    };

    // `mem_size` bytes of guest memory at `base`; the rings of a queue of
    // `num` entries at its start.
    explicit VirtioTestDriver(uint16_t num = 16, size_t mem_size = 4 << 20, uint64_t base = 0x100000)
        : num_(num), base_(base), mem_(mem_size + 15, 0)
    {
        host_ = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(mem_.data()) + 15) & ~uintptr_t(15));
        size_ = mem_size;
        GuestMemory::Region r{base, mem_size, host_, true};
        memory_.add_region(r);
        desc_ = alloc(16 * size_t(num));
        avail_ = alloc(6 + 2 * size_t(num));
        used_ = alloc(6 + 8 * size_t(num));
    }

    GuestMemory& memory() { return memory_; }
    uint16_t num() const { return num_; }
    uint64_t base() const { return base_; }
    uint64_t end() const { return base_ + size_; }

    VirtQueue::Rings rings() { return {host(desc_), host(avail_), host(used_)}; }

    // Guest memory from a bump allocator (never freed: tests are short).
    uint64_t alloc(size_t len, size_t align = 16)
    {
        uint64_t at = (next_ + align - 1) / align * align;
        if (at + len > size_) {
            throw std::runtime_error("test driver out of guest memory");
        }
        next_ = at + len;
        return base_ + at;
    }
    uint8_t* host(uint64_t guest_addr) { return host_ + (guest_addr - base_); }

    // A buffer allocated and filled with `data`.
    Buf out_buf(const void* data, size_t len)
    {
        uint64_t a = alloc(len);
        memcpy(host(a), data, len);
        return {a, uint32_t(len), false};
    }
    Buf in_buf(size_t len, uint8_t fill = 0xa5)
    {
        uint64_t a = alloc(len);
        memset(host(a), fill, len);
        return {a, uint32_t(len), true};
    }

    // Descriptor i of the queue's table (or of a table at `table`).
    void set_desc(uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next,
                  uint64_t table = 0)
    {
        uint8_t* d = host(table ? table : desc_) + 16 * size_t(i);
        store_le64(d, addr);
        store_le32(d + 8, len);
        store_le16(d + 12, flags);
        store_le16(d + 14, next);
    }

    // Writes bufs as a chain of the queue's table (starting at the next
    // free descriptor, wrapping), or as an indirect table that one
    // descriptor points to; makes it available and returns its head.
    uint16_t add_chain(const std::vector<Buf>& bufs, bool indirect = false)
    {
        uint16_t head = next_desc_;
        if (indirect) {
            uint64_t table = alloc(16 * bufs.size());
            for (size_t i = 0; i < bufs.size(); i++) {
                bool last = i + 1 == bufs.size();
                set_desc(uint16_t(i), bufs[i].addr, bufs[i].len,
                         uint16_t((bufs[i].write ? VRING_DESC_F_WRITE : 0) | (last ? 0 : VRING_DESC_F_NEXT)),
                         uint16_t(last ? 0 : i + 1), table);
            }
            set_desc(head, table, uint32_t(16 * bufs.size()), VRING_DESC_F_INDIRECT, 0);
            next_desc_ = uint16_t((next_desc_ + 1) % num_);
        } else {
            for (size_t i = 0; i < bufs.size(); i++) {
                uint16_t d = next_desc_;
                next_desc_ = uint16_t((next_desc_ + 1) % num_);
                bool last = i + 1 == bufs.size();
                set_desc(d, bufs[i].addr, bufs[i].len,
                         uint16_t((bufs[i].write ? VRING_DESC_F_WRITE : 0) | (last ? 0 : VRING_DESC_F_NEXT)),
                         last ? 0 : next_desc_);
            }
        }
        publish(head);
        return head;
    }

    // Puts `head` in the next avail slot and moves the avail index on.
    void publish(uint16_t head)
    {
        uint16_t idx = avail_idx();
        store_le16(host(avail_) + 4 + 2 * size_t(idx % num_), head);
        set_avail_idx(uint16_t(idx + 1));
    }
    uint16_t avail_idx() { return load_le16(host(avail_) + 2); }
    void set_avail_idx(uint16_t idx) { __atomic_store_n(reinterpret_cast<uint16_t*>(host(avail_) + 2), idx, __ATOMIC_RELEASE); }
    void set_avail_flags(uint16_t flags) { store_le16(host(avail_), flags); }
    void set_used_event(uint16_t idx) { store_le16(host(avail_) + 4 + 2 * size_t(num_), idx); }

    uint16_t used_idx() { return __atomic_load_n(reinterpret_cast<uint16_t*>(host(used_) + 2), __ATOMIC_ACQUIRE); }
    // As a ring handed over from an earlier back end.
    void set_used_idx(uint16_t idx) { store_le16(host(used_) + 2, idx); }
    uint16_t used_flags() { return load_le16(host(used_)); }
    uint16_t avail_event() { return load_le16(host(used_) + 4 + 8 * size_t(num_)); }
    // Used element `idx` (free-running): {id, len}.
    std::pair<uint32_t, uint32_t> used_elem(uint16_t idx)
    {
        const uint8_t* e = host(used_) + 4 + 8 * size_t(idx % num_);
        return {load_le32(e), load_le32(e + 4)};
    }

private:
    uint16_t num_;
    uint64_t base_;
    std::vector<uint8_t> mem_;
    uint8_t* host_ = nullptr;
    size_t size_ = 0;
    size_t next_ = 0;
    GuestMemory memory_;
    uint64_t desc_ = 0, avail_ = 0, used_ = 0;
    uint16_t next_desc_ = 0;
};

}  // namespace qemu::test
