// GuestMemory: the driver's address space as the transport mapped it.
// Every guest address a device uses goes through translate(), which
// checks the whole range arithmetically before building a pointer, so
// that no address or length a driver chose can make us point outside a
// mapping (or wrap around the address space).
#include "hw/virtio/virtqueue.h"

#include <algorithm>

namespace qemu {

// The last address of a region; size is never 0 there.
static uint64_t region_last(const GuestMemory::Region& r)
{
    return r.guest_addr + (r.size - 1);
}

bool GuestMemory::add_region(const Region& r)
{
    if (r.size == 0 || r.host == nullptr || r.guest_addr > UINT64_MAX - (r.size - 1)) {
        return false;
    }
    auto pos = std::lower_bound(regions_.begin(), regions_.end(), r.guest_addr,
                                [](const Region& a, uint64_t addr) { return a.guest_addr < addr; });
    if (pos != regions_.end() && pos->guest_addr <= region_last(r)) {
        return false;
    }
    if (pos != regions_.begin() && region_last(*(pos - 1)) >= r.guest_addr) {
        return false;
    }
    regions_.insert(pos, r);
    return true;
}

// The region holding addr, or nullptr.
static const GuestMemory::Region* find_region(const std::vector<GuestMemory::Region>& regions,
                                              uint64_t addr)
{
    auto pos = std::upper_bound(regions.begin(), regions.end(), addr,
                                [](uint64_t a, const GuestMemory::Region& r) { return a < r.guest_addr; });
    if (pos == regions.begin()) {
        return nullptr;
    }
    const GuestMemory::Region& r = *(pos - 1);
    return addr <= region_last(r) ? &r : nullptr;
}

bool GuestMemory::translate(uint64_t addr, uint64_t len, bool want_write,
                            std::vector<iovec>& out) const
{
    if (len == 0) {
        return true;
    }
    // [addr, addr + len) must not wrap: then every partial step below
    // stays below 2^64.
    if (addr > UINT64_MAX - (len - 1)) {
        return false;
    }
    size_t first = out.size();
    while (len > 0) {
        const Region* r = find_region(regions_, addr);
        if (r == nullptr || (want_write && !r->writable)) {
            out.resize(first);
            return false;
        }
        uint64_t offset = addr - r->guest_addr;
        uint64_t n = std::min(len, r->size - offset);
        out.push_back(iovec{r->host + offset, size_t(n)});
        addr += n;
        len -= n;
    }
    return true;
}

uint8_t* GuestMemory::translate_contiguous(uint64_t addr, uint64_t len, bool want_write) const
{
    const Region* r = find_region(regions_, addr);
    if (r == nullptr || (want_write && !r->writable)) {
        return nullptr;
    }
    uint64_t offset = addr - r->guest_addr;
    if (len > r->size - offset) {
        return nullptr;
    }
    return r->host + offset;
}

}  // namespace qemu
