// IOVector: a scatter/gather list describing a request's memory (QEMU's
// QEMUIOVector).  It does not own the buffers it points to.
#pragma once

#include <sys/uio.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace qemu {

// The total length of an iovec array.
size_t iov_bytes(const iovec* iov, unsigned niov);

class IOVector {
public:
    IOVector() = default;
    IOVector(void* buf, size_t len) { add(buf, len); }

    void add(void* buf, size_t len);
    // Appends the bytes [offset, offset+len) of another vector.
    void add_slice(const IOVector& src, size_t offset, size_t len);
    void clear()
    {
        iov_.clear();
        size_ = 0;
    }

    size_t size() const { return size_; }
    const iovec* data() const { return iov_.data(); }
    unsigned count() const { return unsigned(iov_.size()); }
    const std::vector<iovec>& iovs() const { return iov_; }

    // Copies between the vector (starting at offset) and a flat buffer;
    // return the number of bytes copied.
    size_t to_buf(size_t offset, void* buf, size_t len) const;
    size_t from_buf(size_t offset, const void* buf, size_t len);
    void memset(size_t offset, int c, size_t len);
    // Are the len bytes from offset all zero?
    bool is_zero(size_t offset, size_t len) const;

private:
    // Calls fn(ptr, n) for each piece of [offset, offset+len) in order
    // until it returns false; returns whether every call returned true.
    template <typename Fn>
    bool for_each_piece(size_t offset, size_t len, Fn fn) const
    {
        for (const iovec& v : iov_) {
            if (len == 0) {
                break;
            }
            if (offset >= v.iov_len) {
                offset -= v.iov_len;
                continue;
            }
            size_t n = std::min(v.iov_len - offset, len);
            if (!fn(static_cast<uint8_t*>(v.iov_base) + offset, n)) {
                return false;
            }
            len -= n;
            offset = 0;
        }
        return true;
    }

    std::vector<iovec> iov_;
    size_t size_ = 0;
};

// An aligned heap buffer for bounce buffers and O_DIRECT.  Buffers from half
// a transparent huge page up sit on huge pages (see util/iov.cc).
class AlignedBuffer {
public:
    AlignedBuffer() = default;
    AlignedBuffer(size_t size, size_t alignment = 4096);
    // A buffer that serves many requests for a long time: on huge pages
    // whatever its size, so that every O_DIRECT request from it is one DMA
    // segment; small ones cost a whole huge page.
    static AlignedBuffer on_huge_pages(size_t size, size_t alignment = 4096);
    AlignedBuffer(AlignedBuffer&& o) noexcept;
    AlignedBuffer& operator=(AlignedBuffer&& o) noexcept;
    AlignedBuffer(const AlignedBuffer&) = delete;
    AlignedBuffer& operator=(const AlignedBuffer&) = delete;
    ~AlignedBuffer();

    uint8_t* data() const { return data_; }
    size_t size() const { return size_; }

private:
    AlignedBuffer(size_t size, size_t alignment, bool huge);

    uint8_t* data_ = nullptr;
    size_t size_ = 0;
};

// Is the buffer all zero bytes?
bool buffer_is_zero(const void* buf, size_t len);

}  // namespace qemu
