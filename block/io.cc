// The generic request path between a parent and a node's driver.
//
// Responsibilities, in order: reject malformed ranges; pad requests that are
// not aligned to the node's request_alignment (reads through a bounce for
// the head and tail; writes by read-modify-write); keep such RMW writes
// serialised against every overlapping request; split at max_transfer;
// zero-fill reads beyond the end of the node; emulate FUA and write-zeroes
// when the driver lacks them; skip flushes when nothing was written since
// the last one.
#include <algorithm>
#include <cstring>

#include "block/block_int.h"

namespace qemu {

// An in-flight request, visible to overlapping ones.  A serialising request
// (an RMW write) covers its aligned range and excludes everything
// overlapping it; ordinary requests only wait for serialising ones that
// arrived before them.
struct BlockDriverState::TrackedRequest {
    uint64_t offset;
    uint64_t bytes;
    bool serialising;
    uint64_t seq;
};

namespace {

bool ranges_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return a < b + blen && b < a + alen;
}

}  // namespace

void BlockDriverState::track_request(TrackedRequest& req)
{
    req.seq = next_request_seq_++;
    tracked_requests_.push_back(&req);
}

void BlockDriverState::untrack_request(TrackedRequest& req)
{
    tracked_requests_.erase(std::find(tracked_requests_.begin(), tracked_requests_.end(), &req));
    if (!serialising_waiters_.empty()) {
        serialising_waiters_.restart_all();
    }
}

bool BlockDriverState::has_conflict(const TrackedRequest& req) const
{
    for (const TrackedRequest* other : tracked_requests_) {
        if (other == &req || other->seq > req.seq) {
            continue;
        }
        if ((req.serialising || other->serialising) &&
            ranges_overlap(req.offset, req.bytes, other->offset, other->bytes)) {
            return true;
        }
    }
    return false;
}

Task<void> BlockDriverState::wait_for_conflicts(const TrackedRequest& req)
{
    while (has_conflict(req)) {
        co_await serialising_waiters_.wait();
    }
}

namespace {

// Registers a request for its lifetime and waits for conflicting earlier
// requests to finish.
class RequestTracker {
public:
    RequestTracker(BlockDriverState* bs, uint64_t offset, uint64_t bytes, bool serialising)
        : bs_(bs), req_{offset, bytes, serialising, 0}
    {
        bs_->track_request(req_);
    }
    ~RequestTracker() { bs_->untrack_request(req_); }
    RequestTracker(const RequestTracker&) = delete;
    RequestTracker& operator=(const RequestTracker&) = delete;

    Task<void> wait_for_conflicts() { return bs_->wait_for_conflicts(req_); }

private:
    BlockDriverState* bs_;
    BlockDriverState::TrackedRequest req_;
};

uint64_t align_down(uint64_t v, uint64_t a)
{
    return v / a * a;
}

uint64_t align_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) / a * a;
}

bool request_is_sane(uint64_t offset, uint64_t bytes)
{
    constexpr uint64_t kMax = uint64_t(INT64_MAX);
    return offset <= kMax && bytes <= kMax && offset + bytes <= kMax;
}

Task<int> copy_on_readv(BlockDriverState* bs, uint64_t offset, uint64_t bytes, IOVector& qiov,
                        size_t qiov_offset, unsigned flags);

// Reads an aligned range, splitting at max_transfer and zero-filling what
// lies beyond the end of the node.
Task<int> aligned_preadv(BlockDriverState* bs, uint64_t offset, uint64_t bytes, IOVector& qiov,
                         size_t qiov_offset, unsigned flags)
{
    if (flags & BDRV_REQ_COPY_ON_READ) {
        co_return co_await copy_on_readv(bs, offset, bytes, qiov, qiov_offset,
                                         flags & ~BDRV_REQ_COPY_ON_READ);
    }
    const BlockLimits& bl = bs->limits();
    uint64_t total = align_up(bs->total_bytes(), bl.request_alignment);
    uint64_t max_chunk = bl.max_transfer ? align_down(bl.max_transfer, bl.request_alignment) : 0;
    if (max_chunk == 0) {
        max_chunk = UINT64_MAX;
    }
    uint64_t done = 0;
    while (done < bytes) {
        uint64_t pos = offset + done;
        if (pos >= total) {
            qiov.memset(qiov_offset + done, 0, bytes - done);
            break;
        }
        uint64_t n = std::min({bytes - done, max_chunk, total - pos});
        int ret = co_await bs->drv_preadv(pos, n, qiov, qiov_offset + done, flags);
        if (ret < 0) {
            co_return ret;
        }
        done += n;
    }
    co_return 0;
}

// The unit copy-on-read copies: the format's allocation unit (a qcow2
// subcluster or cluster), never less than the request alignment.
uint64_t copy_on_read_granularity(BlockDriverState* bs)
{
    uint64_t g = bs->limits().request_alignment;
    BlockDriverInfo bdi;
    if (bs->drv_get_info(bdi) >= 0) {
        uint64_t unit = bdi.subcluster_size ? bdi.subcluster_size : bdi.cluster_size;
        if (unit > g && unit % g == 0) {
            g = unit;
        }
    }
    return g;
}

Task<int> complete_write(BlockDriverState* bs, unsigned flags, unsigned driver_flags);
Task<int> aligned_pwritev(BlockDriverState* bs, uint64_t offset, uint64_t bytes, IOVector& qiov,
                          size_t qiov_offset, unsigned flags);

// Copies [offset, offset + bytes) of what reads through this node into
// it: all-zero data as write-zeroes (a zero cluster), the rest as data.
Task<int> copy_into_layer(BlockDriverState* bs, uint64_t offset, uint64_t bytes, IOVector& data)
{
    if (data.is_zero(0, bytes)) {
        int ret = co_await bs->drv_pwrite_zeroes(offset, bytes, 0);
        if (ret >= 0) {
            ret = co_await complete_write(bs, 0, 0);
        }
        if (ret != -ENOTSUP) {
            co_return ret;
        }
    }
    co_return co_await aligned_pwritev(bs, offset, bytes, data, 0, 0);
}

// Copy-on-read (QEMU's bdrv_co_do_copy_on_readv): the parts of the
// request's allocation units that this layer does not hold are read from
// below, written into this layer unchanged, and the request is served from
// that copy; the parts it holds are read directly.  The caller's tracker
// serialises the whole range.  A failed copy fails the read, as in QEMU.
// REQUIRES: offset and bytes aligned to the request alignment.
Task<int> copy_on_readv(BlockDriverState* bs, uint64_t offset, uint64_t bytes, IOVector& qiov,
                        size_t qiov_offset, unsigned flags)
{
    constexpr uint64_t kMaxBounce = 1 << 20;
    const BlockLimits& bl = bs->limits();
    uint64_t g = copy_on_read_granularity(bs);
    // Only whole blocks inside the node are copied: a copy must never grow it.
    uint64_t node_end = align_down(bs->total_bytes(), bl.request_alignment);
    uint64_t end = std::min(align_up(offset + bytes, g), node_end);
    uint64_t pos = align_down(offset, g);
    if (pos >= end) {
        co_return co_await aligned_preadv(bs, offset, bytes, qiov, qiov_offset, flags);
    }
    AlignedBuffer bounce;
    while (pos < end) {
        BlockStatus st;
        int ret = co_await bdrv_co_block_status(bs, false, pos, end - pos, st);
        if (ret < 0) {
            co_return ret;
        }
        uint64_t n = std::min(align_up(st.pnum, bl.request_alignment), end - pos);
        uint64_t rs = std::max(pos, offset);
        if (st.flags & BDRV_BLOCK_ALLOCATED) {
            uint64_t re = std::min(pos + n, offset + bytes);
            if (rs < re) {
                ret = co_await aligned_preadv(bs, rs, re - rs, qiov, qiov_offset + (rs - offset), flags);
            }
        } else {
            n = std::min(n, kMaxBounce);
            if (pos + n < end) {
                n = std::min(std::max(align_down(n, g), g), end - pos);
            }
            if (bounce.size() < n) {
                bounce = AlignedBuffer(size_t(n), std::max<uint32_t>(bl.min_mem_alignment, 4096));
            }
            IOVector data(bounce.data(), n);
            ret = co_await aligned_preadv(bs, pos, n, data, 0, flags);
            if (ret >= 0) {
                ret = co_await copy_into_layer(bs, pos, n, data);
            }
            uint64_t re = std::min(pos + n, offset + bytes);
            if (ret >= 0 && rs < re) {
                qiov.from_buf(qiov_offset + (rs - offset), bounce.data() + (rs - pos), re - rs);
            }
        }
        if (ret < 0) {
            co_return ret;
        }
        pos += n;
    }
    // What lies beyond the last whole block of the node reads normally.
    if (offset + bytes > end) {
        uint64_t rs = std::max(end, offset);
        co_return co_await aligned_preadv(bs, rs, offset + bytes - rs, qiov,
                                          qiov_offset + (rs - offset), flags);
    }
    co_return 0;
}

// After the driver completed a write: counts it (flushes skip nodes that
// have not been written since the last one) and, when the request asked for
// FUA that the driver did not take (`driver_flags`), flushes instead, as
// QEMU emulates FUA.
Task<int> complete_write(BlockDriverState* bs, unsigned flags, unsigned driver_flags)
{
    bs->note_write();
    if ((flags & BDRV_REQ_FUA) && !(driver_flags & BDRV_REQ_FUA)) {
        co_return co_await bdrv_co_flush(bs);
    }
    co_return 0;
}

// detect-zeroes: an aligned write of nothing but zeroes goes to the
// driver as write-zeroes, as QEMU's bdrv_aligned_pwritev() does.  Returns
// -ENOTSUP when it does not apply, or the driver cannot: the caller then
// writes the data.
Task<int> write_detected_zeroes(BlockDriverState* bs, uint64_t offset, uint64_t bytes,
                                IOVector& qiov, size_t qiov_offset, unsigned flags)
{
    const BlockLimits& bl = bs->limits();
    if (!(bs->open_flags() & BDRV_O_DETECT_ZEROES) || (flags & BDRV_REQ_WRITE_COMPRESSED) ||
        (bl.max_pwrite_zeroes && bytes > bl.max_pwrite_zeroes) ||
        (bl.pwrite_zeroes_alignment && (offset | bytes) % bl.pwrite_zeroes_alignment) ||
        !qiov.is_zero(qiov_offset, bytes)) {
        co_return -ENOTSUP;
    }
    unsigned zero_flags = (flags & BDRV_REQ_FUA) |
                          ((bs->open_flags() & BDRV_O_DETECT_ZEROES_UNMAP) ? unsigned(BDRV_REQ_MAY_UNMAP) : 0u);
    unsigned drv_flags = zero_flags & bs->supported_zero_flags();
    int ret = co_await bs->drv_pwrite_zeroes(offset, bytes, drv_flags);
    if (ret < 0) {
        co_return ret;
    }
    if (offset + bytes > bs->total_bytes()) {
        bs->set_total_bytes(offset + bytes);
    }
    co_return co_await complete_write(bs, flags, drv_flags);
}

Task<int> aligned_pwritev(BlockDriverState* bs, uint64_t offset, uint64_t bytes, IOVector& qiov,
                          size_t qiov_offset, unsigned flags)
{
    if (int ret = co_await write_detected_zeroes(bs, offset, bytes, qiov, qiov_offset, flags);
        ret != -ENOTSUP) {
        co_return ret;
    }
    const BlockLimits& bl = bs->limits();
    uint64_t max_chunk = bl.max_transfer ? align_down(bl.max_transfer, bl.request_alignment) : 0;
    if (max_chunk == 0) {
        max_chunk = UINT64_MAX;
    }
    unsigned drv_flags = flags & bs->supported_write_flags();
    uint64_t done = 0;
    while (done < bytes) {
        uint64_t n = std::min(bytes - done, max_chunk);
        int ret = co_await bs->drv_pwritev(offset + done, n, qiov, qiov_offset + done, drv_flags);
        if (ret < 0) {
            co_return ret;
        }
        done += n;
    }
    // A write past the end grows the node (formats extend their file).
    if (offset + bytes > bs->total_bytes()) {
        bs->set_total_bytes(offset + bytes);
    }
    co_return co_await complete_write(bs, flags, drv_flags);
}

// The aligned superset of an unaligned request, with bounce buffers for the
// partial head and tail blocks.
struct Padding {
    uint64_t offset;  // aligned start
    uint64_t bytes;   // aligned length
    uint64_t head;    // bytes before the request in the first block
    uint64_t tail;    // bytes after the request in the last block
    AlignedBuffer buf;  // head block followed by tail block
    IOVector qiov;

    Padding(uint64_t req_offset, uint64_t req_bytes, uint32_t align, uint32_t mem_align)
    {
        offset = align_down(req_offset, align);
        uint64_t end = align_up(req_offset + req_bytes, align);
        bytes = end - offset;
        head = req_offset - offset;
        tail = end - (req_offset + req_bytes);
        buf = AlignedBuffer(2 * size_t(align), std::max<uint32_t>(mem_align, 64));
    }

    bool same_block() const { return bytes == uint64_t(head_block_len()); }
    uint64_t head_block_len() const { return buf.size() / 2; }
    uint8_t* head_buf() const { return buf.data(); }
    uint8_t* tail_buf() const { return buf.data() + buf.size() / 2; }

    // [head bytes][caller's data][tail bytes], all over the aligned range.
    void build(IOVector& orig, size_t orig_offset, uint64_t req_bytes)
    {
        uint64_t align = head_block_len();
        qiov.clear();
        if (same_block()) {
            qiov.add(head_buf(), head);
            qiov.add_slice(orig, orig_offset, req_bytes);
            qiov.add(head_buf() + head + req_bytes, tail);
            return;
        }
        qiov.add(head_buf(), head);
        qiov.add_slice(orig, orig_offset, req_bytes);
        qiov.add(tail_buf() + (align - tail), tail);
    }
};

}  // namespace

Task<int> bdrv_co_preadv(BdrvChild* child, uint64_t offset, uint64_t bytes, IOVector& qiov,
                         size_t qiov_offset, unsigned flags)
{
    BlockDriverState* bs = child->bs.get();
    auto in_flight = bs->start_request();
    if (!request_is_sane(offset, bytes)) {
        co_return -EIO;
    }
    if (bytes == 0) {
        co_return 0;
    }
    const BlockLimits& bl = bs->limits();
    uint32_t align = bl.request_alignment;
    bool aligned = offset % align == 0 && bytes % align == 0;
    if (bs->open_flags() & BDRV_O_COPY_ON_READ) {
        flags |= BDRV_REQ_COPY_ON_READ;
    }
    // A copy-on-read excludes every overlapping request over the whole
    // clusters it may copy, so that no write lands between its read and
    // its copy (QEMU marks it serialising too).
    uint64_t track_align = (flags & BDRV_REQ_COPY_ON_READ) ? copy_on_read_granularity(bs) : align;
    RequestTracker tracker(bs, align_down(offset, track_align),
                           align_up(offset + bytes, track_align) - align_down(offset, track_align),
                           (flags & BDRV_REQ_COPY_ON_READ) != 0);
    co_await tracker.wait_for_conflicts();
    if (aligned) {
        co_return co_await aligned_preadv(bs, offset, bytes, qiov, qiov_offset, flags);
    }
    Padding pad(offset, bytes, align, bl.min_mem_alignment);
    pad.build(qiov, qiov_offset, bytes);
    co_return co_await aligned_preadv(bs, pad.offset, pad.bytes, pad.qiov, 0, flags);
}

// A zoned device writes whole logical blocks: a partial one would move a
// write pointer by a block for less data (a read-modify-write), so it is
// refused as a zone append of that size is.
static int check_zoned_write(const BlockLimits& bl, uint64_t offset, uint64_t bytes)
{
    if (bl.zoned != BlockZoneModel::None && (offset % bl.request_alignment || bytes % bl.request_alignment)) {
        return zone_error_code(ZoneError::InvalidRequest);
    }
    return 0;
}

Task<int> bdrv_co_pwritev(BdrvChild* child, uint64_t offset, uint64_t bytes, IOVector& qiov,
                          size_t qiov_offset, unsigned flags)
{
    BlockDriverState* bs = child->bs.get();
    auto in_flight = bs->start_request();
    if (!request_is_sane(offset, bytes)) {
        co_return -EIO;
    }
    if (bs->read_only()) {
        co_return -EPERM;
    }
    if ((flags & BDRV_REQ_WRITE_COMPRESSED) && !(bs->supported_write_flags() & BDRV_REQ_WRITE_COMPRESSED)) {
        co_return -ENOTSUP;
    }
    if (bytes == 0) {
        // An empty compressed write ends a stream of them: the driver may
        // tidy up (as QEMU's blk_pwrite_compressed(blk, 0, 0, NULL)).
        if (flags & BDRV_REQ_WRITE_COMPRESSED) {
            co_return co_await bs->drv_pwritev(offset, 0, qiov, qiov_offset, flags);
        }
        co_return 0;
    }
    const BlockLimits& bl = bs->limits();
    uint32_t align = bl.request_alignment;
    if (int ret = check_zoned_write(bl, offset, bytes); ret < 0) {
        co_return ret;
    }
    if (offset % align == 0 && bytes % align == 0) {
        RequestTracker tracker(bs, offset, bytes, false);
        co_await tracker.wait_for_conflicts();
        co_return co_await aligned_pwritev(bs, offset, bytes, qiov, qiov_offset, flags);
    }

    // Read-modify-write of the partial blocks, excluding every overlapping
    // request so that concurrent writers to the same block cannot lose
    // each other's bytes.
    Padding pad(offset, bytes, align, bl.min_mem_alignment);
    RequestTracker tracker(bs, pad.offset, pad.bytes, true);
    co_await tracker.wait_for_conflicts();
    uint64_t block = pad.head_block_len();
    if (pad.head > 0 || pad.same_block()) {
        IOVector head(pad.head_buf(), block);
        int ret = co_await aligned_preadv(bs, pad.offset, block, head, 0, 0);
        if (ret < 0) {
            co_return ret;
        }
    }
    if (pad.tail > 0 && !pad.same_block()) {
        IOVector tail(pad.tail_buf(), block);
        int ret = co_await aligned_preadv(bs, pad.offset + pad.bytes - block, block, tail, 0, 0);
        if (ret < 0) {
            co_return ret;
        }
    }
    pad.build(qiov, qiov_offset, bytes);
    co_return co_await aligned_pwritev(bs, pad.offset, pad.bytes, pad.qiov, 0, flags);
}

const AlignedBuffer& zero_buffer()
{
    static const AlignedBuffer zeroes = [] {
        AlignedBuffer b(1 << 20, 4096);
        memset(b.data(), 0, b.size());
        return b;
    }();
    return zeroes;
}

Task<int> write_zero_buffer(BdrvChild* child, uint64_t offset, uint64_t bytes, unsigned flags)
{
    const AlignedBuffer& zeroes = zero_buffer();
    while (bytes > 0) {
        uint64_t n = std::min<uint64_t>(bytes, zeroes.size());
        IOVector qiov(zeroes.data(), n);
        int ret = co_await bdrv_co_pwritev(child, offset, n, qiov, 0, flags & BDRV_REQ_FUA);
        if (ret < 0) {
            co_return ret;
        }
        offset += n;
        bytes -= n;
    }
    co_return 0;
}

namespace {

// A piece of a write-zeroes request smaller than the node's zeroing unit
// (a qcow2 subcluster): the driver may still make the unit a zero cluster
// when the rest of it reads as zeroes already, as QEMU asks it to; else
// (-ENOTSUP) zeroes are written as data, unless the caller wants no
// fallback.  The whole unit is serialised: the driver looks at all of it.
Task<int> write_zeroes_partial(BdrvChild* child, uint64_t offset, uint64_t bytes, unsigned flags)
{
    BlockDriverState* bs = child->bs.get();
    const BlockLimits& bl = bs->limits();
    if (offset % bl.request_alignment == 0 && bytes % bl.request_alignment == 0 &&
        bl.pwrite_zeroes_alignment > bl.request_alignment) {
        uint64_t unit = bl.pwrite_zeroes_alignment;
        RequestTracker tracker(bs, align_down(offset, unit), unit, true);
        co_await tracker.wait_for_conflicts();
        unsigned drv_flags = flags & bs->supported_zero_flags();
        int ret = co_await bs->drv_pwrite_zeroes(offset, bytes, drv_flags);
        if (ret >= 0) {
            ret = co_await complete_write(bs, flags, drv_flags);
        }
        if (ret != -ENOTSUP) {
            co_return ret;
        }
    }
    if (flags & BDRV_REQ_NO_FALLBACK) {
        co_return -ENOTSUP;
    }
    co_return co_await write_zero_buffer(child, offset, bytes, flags);
}

}  // namespace

Task<int> bdrv_co_pwrite_zeroes(BdrvChild* child, uint64_t offset, uint64_t bytes, unsigned flags)
{
    BlockDriverState* bs = child->bs.get();
    auto in_flight = bs->start_request();
    if (!request_is_sane(offset, bytes)) {
        co_return -EIO;
    }
    if (bs->read_only()) {
        co_return -EPERM;
    }
    if (bytes == 0) {
        co_return 0;
    }
    if (!(bs->open_flags() & BDRV_O_UNMAP)) {
        flags &= ~BDRV_REQ_MAY_UNMAP;
    }
    const BlockLimits& bl = bs->limits();
    if (int ret = check_zoned_write(bl, offset, bytes); ret < 0) {
        co_return ret;
    }
    uint64_t align = std::max<uint64_t>(bl.request_alignment, bl.pwrite_zeroes_alignment);
    uint64_t start = align_up(offset, align);
    uint64_t end = align_down(offset + bytes, align);
    if (start >= end) {
        // Within one unit, or across the border of two.
        uint64_t border = align_down(offset + bytes, align);
        if (border > offset) {
            int ret = co_await write_zeroes_partial(child, offset, border - offset, flags);
            if (ret < 0) {
                co_return ret;
            }
            co_return co_await write_zeroes_partial(child, border, offset + bytes - border, flags);
        }
        co_return co_await write_zeroes_partial(child, offset, bytes, flags);
    }
    // Unaligned head and tail: partial units.
    if (start > offset) {
        int ret = co_await write_zeroes_partial(child, offset, start - offset, flags);
        if (ret < 0) {
            co_return ret;
        }
    }
    {
        RequestTracker tracker(bs, start, end - start, false);
        co_await tracker.wait_for_conflicts();
        uint64_t max_chunk = bl.max_pwrite_zeroes ? align_down(bl.max_pwrite_zeroes, align) : 0;
        if (max_chunk == 0) {
            max_chunk = end - start;
        }
        for (uint64_t pos = start; pos < end;) {
            uint64_t n = std::min(end - pos, max_chunk);
            unsigned drv_flags = flags & bs->supported_zero_flags();
            int ret = co_await bs->drv_pwrite_zeroes(pos, n, drv_flags);
            if (ret == -ENOTSUP && !(flags & BDRV_REQ_NO_FALLBACK)) {
                // Fall back for this chunk; the tracker is ours, so go to
                // the driver through the aligned path directly.
                const AlignedBuffer& zeroes = zero_buffer();
                for (uint64_t done = 0; done < n;) {
                    uint64_t m = std::min<uint64_t>(n - done, zeroes.size());
                    IOVector qiov(zeroes.data(), m);
                    ret = co_await aligned_pwritev(bs, pos + done, m, qiov, 0, flags & BDRV_REQ_FUA);
                    if (ret < 0) {
                        co_return ret;
                    }
                    done += m;
                }
            } else if (ret < 0) {
                co_return ret;
            } else {
                ret = co_await complete_write(bs, flags, drv_flags);
                if (ret < 0) {
                    co_return ret;
                }
            }
            pos += n;
        }
    }
    if (end < offset + bytes) {
        co_return co_await write_zeroes_partial(child, end, offset + bytes - end, flags);
    }
    co_return 0;
}

Task<int> bdrv_co_pdiscard(BdrvChild* child, uint64_t offset, uint64_t bytes)
{
    BlockDriverState* bs = child->bs.get();
    auto in_flight = bs->start_request();
    if (!request_is_sane(offset, bytes)) {
        co_return -EIO;
    }
    if (bs->read_only()) {
        co_return -EPERM;
    }
    // Discard is advisory: without discard=unmap, or where the driver
    // cannot, nothing happens and the caller is told it worked.
    if (!(bs->open_flags() & BDRV_O_UNMAP)) {
        co_return 0;
    }
    const BlockLimits& bl = bs->limits();
    uint64_t align = std::max<uint64_t>(bl.request_alignment, bl.pdiscard_alignment);
    uint64_t start = align_up(offset, align);
    uint64_t end = align_down(offset + bytes, align);
    if (offset + bytes == bs->total_bytes()) {
        end = offset + bytes;  // the unaligned tail at the end of the node
    }
    if (start >= end) {
        co_return 0;
    }
    RequestTracker tracker(bs, start, end - start, false);
    co_await tracker.wait_for_conflicts();
    uint64_t max_chunk = bl.max_pdiscard ? align_down(bl.max_pdiscard, align) : 0;
    if (max_chunk == 0) {
        max_chunk = end - start;
    }
    for (uint64_t pos = start; pos < end;) {
        uint64_t n = std::min(end - pos, max_chunk);
        int ret = co_await bs->drv_pdiscard(pos, n);
        if (ret < 0 && ret != -ENOTSUP) {
            co_return ret;
        }
        pos += n;
    }
    bs->note_write();
    co_return 0;
}

Task<int> bdrv_co_flush(BlockDriverState* bs)
{
    auto in_flight = bs->start_request();
    uint64_t gen = bs->write_gen();
    int ret = co_await bs->drv_flush_to_os();
    if (ret < 0) {
        co_return ret;
    }
    if (!(bs->open_flags() & BDRV_O_NO_FLUSH) && gen != bs->flushed_gen()) {
        ret = co_await bs->drv_flush_to_disk();
        if (ret < 0) {
            co_return ret;
        }
    }
    bs->note_flushed(gen);
    for (const auto& c : bs->children()) {
        ret = co_await bdrv_co_flush(c->bs.get());
        if (ret < 0) {
            co_return ret;
        }
    }
    co_return 0;
}

Task<int> bdrv_co_truncate(BdrvChild* child, uint64_t offset, bool exact, PreallocMode prealloc,
                           unsigned flags, Error& err)
{
    BlockDriverState* bs = child->bs.get();
    auto in_flight = bs->start_request();
    if (offset > BDRV_MAX_LENGTH) {
        err.set("offset(%lld) exceeds maximum(%lld)", (long long)offset,
                (long long)BDRV_MAX_LENGTH);
        co_return -EFBIG;
    }
    if (bs->read_only()) {
        err.set("Image is read-only");
        co_return -EACCES;
    }
    // Nothing may be in flight across the boundary while the size changes.
    RequestTracker tracker(bs, std::min(offset, bs->total_bytes()), UINT64_MAX / 2, true);
    co_await tracker.wait_for_conflicts();
    // The driver sets the new size: a device keeps its own whatever was asked.
    int ret = co_await bs->drv_truncate(offset, exact, prealloc, flags, err);
    if (ret < 0) {
        co_return ret;
    }
    bs->note_write();
    bs->refresh_limits();
    co_return 0;
}

Task<int> bdrv_co_block_status(BlockDriverState* bs, bool want_zero, uint64_t offset,
                               uint64_t bytes, BlockStatus& out)
{
    auto in_flight = bs->start_request();
    out = BlockStatus{};
    uint64_t total = bs->total_bytes();
    if (offset >= total) {
        out.flags = BDRV_BLOCK_EOF;
        co_return 0;
    }
    bytes = std::min(bytes, total - offset);
    if (bytes == 0) {
        co_return 0;
    }
    int ret = co_await bs->drv_block_status(want_zero, offset, bytes, out);
    if (ret < 0) {
        co_return ret;
    }
    out.pnum = std::min(out.pnum, bytes);
    if (out.pnum == 0) {
        co_return -EIO;  // a driver must make progress
    }
    if (out.flags & (BDRV_BLOCK_DATA | BDRV_BLOCK_ZERO)) {
        out.flags |= BDRV_BLOCK_ALLOCATED;
    } else if (bs->drv().supports_backing() && !bs->backing()) {
        out.flags |= BDRV_BLOCK_ZERO;  // nothing below: reads as zeroes
    } else if (want_zero && bs->backing() && offset >= bs->backing()->bs->total_bytes()) {
        out.flags |= BDRV_BLOCK_ZERO;  // below the end of a shorter backing file
    }
    constexpr unsigned kRecurseNeeds = BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID;
    if (want_zero && (out.flags & BDRV_BLOCK_RECURSE) && out.file && out.file != bs &&
        (out.flags & kRecurseNeeds) == kRecurseNeeds && !(out.flags & BDRV_BLOCK_ZERO)) {
        // Only a refinement: errors below leave the driver's answer as is.
        BlockStatus below;
        if (co_await bdrv_co_block_status(out.file, want_zero, out.map, out.pnum, below) >= 0) {
            if ((below.flags & BDRV_BLOCK_EOF) &&
                (below.pnum == 0 || (below.flags & BDRV_BLOCK_ZERO))) {
                out.flags |= BDRV_BLOCK_ZERO;  // beyond the end of the file
            } else {
                out.pnum = below.pnum;
                out.flags |= below.flags & BDRV_BLOCK_ZERO;
            }
        }
    }
    if (offset + out.pnum == total) {
        out.flags |= BDRV_BLOCK_EOF;
    }
    co_return 0;
}

namespace {

// One layer's status, following BDRV_BLOCK_RAW (bdrv_co_block_status_layer).
Task<int> layer_status(BlockDriverState* bs, bool want_zero, uint64_t offset, uint64_t bytes,
                       BlockStatus& out)
{
    int ret = co_await bdrv_co_block_status(bs, want_zero, offset, bytes, out);
    bool followed = false;
    while (ret == 0 && (out.flags & BDRV_BLOCK_RAW) && out.file) {
        BlockDriverState* next = out.file;
        uint64_t pnum = out.pnum;
        ret = co_await bdrv_co_block_status(next, want_zero, out.map, pnum, out);
        if (ret == 0 && (out.flags & BDRV_BLOCK_EOF) && out.pnum == 0) {
            // The lower node ends first: the rest reads as zeroes.
            out.flags = BDRV_BLOCK_ZERO;
            out.pnum = pnum;
        }
        followed = true;
    }
    // The lower node may have answered for less than the top one asked:
    // as in QEMU, EOF (kept from below) is added where the final range
    // reaches the end of the top node, and only there.
    if (ret == 0 && followed && offset + out.pnum == bs->total_bytes()) {
        out.flags |= BDRV_BLOCK_EOF;
    }
    co_return ret;
}

}  // namespace

Task<int> bdrv_co_block_status_layer(BlockDriverState* bs, uint64_t offset, uint64_t bytes,
                                     BlockStatus& out)
{
    co_return co_await layer_status(bs, true, offset, bytes, out);
}

Task<int> bdrv_co_block_status_above(BlockDriverState* bs, const BlockDriverState* base,
                                     bool want_zero, uint64_t offset, uint64_t bytes,
                                     BlockStatus& out, unsigned* depth)
{
    unsigned links = 0;
    int ret = co_await layer_status(bs, want_zero, offset, bytes, out);
    BlockDriverState* layer = bs;
    while (ret == 0 && !(out.flags & BDRV_BLOCK_ALLOCATED) && out.pnum > 0 && layer->backing() &&
           layer->backing()->bs.get() != base) {
        // Unallocated here: the layer below decides, for at most as much.
        layer = layer->backing()->bs.get();
        uint64_t pnum = out.pnum;
        ret = co_await layer_status(layer, want_zero, offset, pnum, out);
        links++;
        if (ret < 0) {
            break;
        }
        if (out.pnum == 0) {
            // This layer ends before the range: as QEMU, the zeroes read
            // beyond it count as allocated in it.
            out = BlockStatus{};
            out.flags = BDRV_BLOCK_ZERO | BDRV_BLOCK_ALLOCATED;
            out.pnum = pnum;
            out.file = layer;
            break;
        }
        // EOF of a lower layer says nothing about the top one.
        out.flags &= ~BDRV_BLOCK_EOF;
    }
    if (ret == 0 && offset + out.pnum >= bs->total_bytes()) {
        out.flags |= BDRV_BLOCK_EOF;
    }
    if (depth) {
        *depth = links;
    }
    co_return ret;
}

Task<int> bdrv_co_is_allocated_above(BlockDriverState* top, const BlockDriverState* base,
                                     uint64_t offset, uint64_t bytes, uint64_t& pnum)
{
    BlockStatus st;
    int ret = co_await bdrv_co_block_status_above(top, base, false, offset, bytes, st);
    if (ret < 0) {
        co_return ret;
    }
    pnum = st.pnum;
    co_return (st.flags & BDRV_BLOCK_ALLOCATED) ? 1 : 0;
}

}  // namespace qemu

namespace qemu {

// --- The zoned API ------------------------------------------------------------

Task<int> BlockDriverState::drv_zone_report(uint64_t offset, uint32_t& nr_zones,
                                            BlockZoneDescriptor* zones)
{
    if (forwards_zones() && file()) {
        co_return co_await bdrv_co_zone_report(file()->bs.get(), offset, nr_zones, zones);
    }
    co_return -ENOTSUP;
}

Task<int> BlockDriverState::drv_zone_mgmt(BlockZoneOp op, uint64_t offset, uint64_t len)
{
    if (forwards_zones() && file()) {
        co_return co_await bdrv_co_zone_mgmt(file()->bs.get(), op, offset, len);
    }
    co_return -ENOTSUP;
}

Task<int> BlockDriverState::drv_zone_append(uint64_t& offset, IOVector& qiov, unsigned flags)
{
    if (forwards_zones() && file()) {
        co_return co_await bdrv_co_zone_append(file()->bs.get(), offset, qiov, flags);
    }
    co_return -ENOTSUP;
}

Task<int> BlockDriverState::drv_zone_set_desc_ext(uint64_t offset, const uint8_t* data)
{
    if (forwards_zones() && file()) {
        co_return co_await bdrv_co_zone_set_desc_ext(file()->bs.get(), offset, data);
    }
    co_return -ENOTSUP;
}

Task<int> BlockDriverState::drv_zone_get_desc_ext(uint64_t offset, uint8_t* data)
{
    if (forwards_zones() && file()) {
        co_return co_await bdrv_co_zone_get_desc_ext(file()->bs.get(), offset, data);
    }
    co_return -ENOTSUP;
}

Task<int> bdrv_co_zone_report(BlockDriverState* bs, uint64_t offset, uint32_t& nr_zones,
                              BlockZoneDescriptor* zones)
{
    auto in_flight = bs->start_request();
    if (bs->limits().zoned == BlockZoneModel::None) {
        co_return -ENOTSUP;
    }
    // An offset past the end is the driver's to judge, as in QEMU: Linux
    // reports no zones there, zoned qcow2 refuses it.
    co_return co_await bs->drv_zone_report(offset, nr_zones, zones);
}

Task<int> bdrv_co_zone_mgmt(BlockDriverState* bs, BlockZoneOp op, uint64_t offset, uint64_t len)
{
    auto in_flight = bs->start_request();
    if (bs->limits().zoned == BlockZoneModel::None) {
        co_return -ENOTSUP;
    }
    if (bs->read_only()) {
        co_return -EPERM;
    }
    if (offset >= bs->total_bytes() || len > bs->total_bytes() - offset) {
        co_return zone_error_code(ZoneError::InvalidRequest);
    }
    int ret = co_await bs->drv_zone_mgmt(op, offset, len);
    if (ret >= 0) {
        bs->note_write();  // zone state is persisted by flushes
    }
    co_return ret;
}

Task<int> bdrv_co_zone_append(BlockDriverState* bs, uint64_t& offset, IOVector& qiov, unsigned flags)
{
    auto in_flight = bs->start_request();
    if (bs->limits().zoned == BlockZoneModel::None) {
        co_return -ENOTSUP;
    }
    if (bs->read_only()) {
        co_return -EPERM;
    }
    int ret = co_await bs->drv_zone_append(offset, qiov, flags);
    if (ret < 0) {
        co_return ret;
    }
    co_return co_await complete_write(bs, flags, flags & bs->supported_write_flags());
}

// Checks shared by both descriptor extension requests.
static int check_desc_ext_request(BlockDriverState* bs, uint64_t offset)
{
    const BlockLimits& bl = bs->limits();
    if (bl.zoned == BlockZoneModel::None) {
        return -ENOTSUP;
    }
    if (bl.zone_desc_ext_size == 0 || offset >= bs->total_bytes() || offset % bl.zone_size) {
        return zone_error_code(ZoneError::InvalidRequest);
    }
    return 0;
}

Task<int> bdrv_co_zone_set_desc_ext(BlockDriverState* bs, uint64_t offset, const uint8_t* data)
{
    auto in_flight = bs->start_request();
    int ret = check_desc_ext_request(bs, offset);
    if (ret < 0) {
        co_return ret;
    }
    if (bs->read_only()) {
        co_return -EPERM;
    }
    ret = co_await bs->drv_zone_set_desc_ext(offset, data);
    if (ret >= 0) {
        bs->note_write();
    }
    co_return ret;
}

Task<int> bdrv_co_zone_get_desc_ext(BlockDriverState* bs, uint64_t offset, uint8_t* data)
{
    auto in_flight = bs->start_request();
    int ret = check_desc_ext_request(bs, offset);
    if (ret < 0) {
        co_return ret;
    }
    co_return co_await bs->drv_zone_get_desc_ext(offset, data);
}

}  // namespace qemu
