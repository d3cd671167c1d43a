// Mapping the vhost-user memory table (mem-table.h).
#include "mem-table.h"

#include <sys/mman.h>
#include <sys/stat.h>

namespace qemu {

using namespace vhost_user;

namespace {

bool ranges_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return a < b + blen && b < a + alen;
}

}  // namespace

std::unique_ptr<VhostUserMemTable> VhostUserMemTable::create(Message& msg, Error& err)
{
    auto t = std::unique_ptr<VhostUserMemTable>(new VhostUserMemTable());
    uint32_t n = msg.get<uint32_t>();
    for (uint32_t i = 0; i < n; i++) {
        MemRegion r = msg.get<MemRegion>(8 + i * sizeof(MemRegion));
        UniqueFd fd = std::move(msg.fds[i]);
        if (!t->add(r, fd.get(), err)) {
            err.prepend(string_printf("memory region %u", i));
            return nullptr;  // t unmaps what it mapped
        }
    }
    return t;
}

bool VhostUserMemTable::add(const MemRegion& r, int fd, Error& err)
{
    uint64_t end;
    if (r.memory_size == 0 || __builtin_add_overflow(r.guest_phys_addr, r.memory_size - 1, &end) ||
        __builtin_add_overflow(r.userspace_addr, r.memory_size - 1, &end) ||
        __builtin_add_overflow(r.mmap_offset, r.memory_size, &end) || end > uint64_t(SIZE_MAX)) {
        err.set("bad size 0x%llx at guest 0x%llx, user 0x%llx, offset 0x%llx",
                (unsigned long long)r.memory_size, (unsigned long long)r.guest_phys_addr,
                (unsigned long long)r.userspace_addr, (unsigned long long)r.mmap_offset);
        return false;
    }
    for (const Mapping& m : maps_) {
        if (ranges_overlap(m.region.userspace_addr, m.region.memory_size, r.userspace_addr,
                           r.memory_size)) {
            err.set("overlaps another region");
            return false;
        }
    }
    // The file must cover the range: touching a page past its end would
    // kill us with SIGBUS (hugetlbfs and memfd alike).
    struct stat st;
    if (fstat(fd, &st) < 0) {
        err.set_errno(errno, "cannot inspect its file descriptor");
        return false;
    }
    if ((S_ISREG(st.st_mode) || st.st_size > 0) && uint64_t(st.st_size) < end) {
        err.set("its file descriptor holds 0x%llx bytes, fewer than 0x%llx",
                (unsigned long long)st.st_size, (unsigned long long)end);
        return false;
    }
    void* base = mmap(nullptr, size_t(end), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        err.set_errno(errno, "cannot map it");
        return false;
    }
    Mapping m = {r, base, size_t(end), static_cast<uint8_t*>(base) + r.mmap_offset};
    if (!guest_.add_region({r.guest_phys_addr, r.memory_size, m.start, true})) {
        munmap(base, size_t(end));
        err.set("overlaps another region");
        return false;
    }
    maps_.push_back(m);
    return true;
}

uint8_t* VhostUserMemTable::qva_to_host(uint64_t qva, uint64_t len) const
{
    for (const Mapping& m : maps_) {
        uint64_t off = qva - m.region.userspace_addr;
        if (qva >= m.region.userspace_addr && off < m.region.memory_size &&
            len <= m.region.memory_size - off) {
            return m.start + off;
        }
    }
    return nullptr;
}

void VhostUserMemTable::clear()
{
    for (const Mapping& m : maps_) {
        munmap(m.base, m.map_len);
    }
    maps_.clear();
}

}  // namespace qemu
