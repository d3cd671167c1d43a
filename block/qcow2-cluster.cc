// qcow2 cluster mapping: from guest offsets through the L1 and L2 tables to
// host clusters, and the allocation of new clusters with copy-on-write.
#include <algorithm>
#include <cstring>

#include "block/qcow2.h"
#include "qemu/bswap.h"

namespace qemu::qcow2 {

uint64_t Qcow2State::l1_size_for(uint64_t virtual_size, uint32_t cluster_bits)
{
    uint32_t shift = cluster_bits + (cluster_bits - 3);
    return (virtual_size + (1ULL << shift) - 1) >> shift;
}

Task<int> Qcow2State::get_l2_table(uint64_t offset, bool allocate, Qcow2Cache::Ref& out)
{
    out.reset();
    uint64_t i = l1_index(offset);
    if (i >= l1_.size()) {
        co_return allocate ? -EIO : 0;  // beyond the L1 table: unallocated
    }
    uint64_t l2_offset = l1_[i] & kOffsetMask;
    if (l2_offset && offset_into_cluster(l2_offset)) {
        co_return signal_corruption(true, "L2 table offset %#llx unaligned (L1 index: %#llx)",
                                    (unsigned long long)l2_offset, (unsigned long long)i);
    }
    if (l2_offset && ((l1_[i] & kCopied) || !allocate)) {
        co_return co_await l2_cache_->get(l2_offset, true, out);
    }
    if (!allocate) {
        co_return 0;
    }

    // A new table, or a private copy of one shared with a snapshot.
    int64_t new_offset = co_await alloc_clusters(cluster_size_);
    if (new_offset < 0) {
        co_return int(new_offset);
    }
    register_metadata(uint64_t(new_offset), cluster_size_, META_L2);
    Qcow2Cache::Ref table;
    int ret = co_await l2_cache_->get(uint64_t(new_offset), false, table);
    if (ret < 0) {
        co_return ret;
    }
    if (l2_offset) {
        Qcow2Cache::Ref old;
        ret = co_await l2_cache_->get(l2_offset, true, old);
        if (ret < 0) {
            co_return ret;
        }
        memcpy(table.data(), old.data(), cluster_size_);
        free_clusters_later(l2_offset, cluster_size_, FreeReason::Other);
    }
    table.mark_dirty();
    l1_[i] = uint64_t(new_offset) | kCopied;
    dirty_l1_.push_back(uint32_t(i));
    out = std::move(table);
    co_return 0;
}

Task<int> Qcow2State::get_mapping(uint64_t offset, uint64_t bytes, Mapping& out)
{
    out = Mapping{};
    uint64_t in_cluster = offset_into_cluster(offset);
    uint32_t table_shift = cluster_bits_ + l2_bits_;
    uint64_t table_end = ((offset >> table_shift) + 1) << table_shift;
    bytes = std::min(bytes, table_end - offset);
    uint64_t max_clusters = size_to_clusters(in_cluster + bytes);

    Qcow2Cache::Ref l2;
    int ret = co_await get_l2_table(offset, false, l2);
    if (ret < 0) {
        co_return ret;
    }
    if (!l2) {
        out.type = ClusterType::Unallocated;
        out.bytes = bytes;
        co_return 0;
    }
    uint64_t idx = l2_index(offset);
    uint64_t first = l2.get64(idx);
    ClusterType type = classify_l2_entry(first);
    if (type != ClusterType::Compressed && (first & kL2ReservedMask)) {
        co_return signal_corruption(true, "Cluster allocation offset %#llx has reserved bits set "
                                    "(L2 offset: %#llx, L2 index: %#llx)",
                                    (unsigned long long)first, (unsigned long long)l2.offset(),
                                    (unsigned long long)idx);
    }
    uint64_t n = 1;
    if (type == ClusterType::Normal) {
        uint64_t host = first & kOffsetMask;
        if (offset_into_cluster(host)) {
            co_return signal_corruption(true, "Cluster allocation offset %#llx unaligned (L2 offset: "
                                        "%#llx, L2 index: %#llx)", (unsigned long long)host,
                                        (unsigned long long)l2.offset(), (unsigned long long)idx);
        }
        // Extend over following clusters that are contiguous on the host
        // and share the COPIED flag (writes rely on it for the whole run).
        while (n < max_clusters) {
            uint64_t e = l2.get64(idx + n);
            if (classify_l2_entry(e) != ClusterType::Normal ||
                (e & kOffsetMask) != host + (n << cluster_bits_) || (e & kCopied) != (first & kCopied)) {
                break;
            }
            n++;
        }
        out.host_offset = host + in_cluster;
    } else if (type != ClusterType::Compressed) {
        while (n < max_clusters && classify_l2_entry(l2.get64(idx + n)) == type) {
            n++;
        }
        if (type == ClusterType::ZeroAlloc) {
            out.host_offset = (first & kOffsetMask) + in_cluster;
            n = 1;  // hosts of preallocated zero clusters need not be contiguous
        }
    }
    out.type = type;
    out.l2_entry = first;
    out.bytes = std::min(bytes, (n << cluster_bits_) - in_cluster);
    co_return 0;
}

Task<bool> Qcow2State::wait_for_dependencies(uint64_t offset, uint64_t& bytes,
                                              std::shared_ptr<InFlightAlloc>* join)
{
    uint64_t start = offset & ~(cluster_size_ - 1);
    uint64_t end = (offset + bytes + cluster_size_ - 1) & ~(cluster_size_ - 1);
    for (const auto& a : in_flight_) {
        uint64_t a_end = a->guest_offset + a->bytes;
        if (end <= a->guest_offset || start >= a_end) {
            continue;
        }
        if (offset < a->guest_offset && start < a->guest_offset) {
            bytes = a->guest_offset - offset;  // do the part before it first
            continue;
        }
        uint64_t in_alloc = std::min(bytes, a_end - offset);
        bool overlaps_its_data = offset < a->data_offset + a->data_bytes &&
                                 a->data_offset < offset + in_alloc;
        if (join && a->cow_free && !overlaps_its_data) {
            bytes = in_alloc;
            *join = a;
            co_return false;
        }
        // Our first cluster is being allocated: wait for it to be linked.
        auto keep = a;
        lock_.unlock();
        co_await keep->waiters.wait();
        co_await lock_.lock();
        co_return true;
    }
    co_return false;
}

Task<int> Qcow2State::write_joined(std::shared_ptr<InFlightAlloc> alloc, uint64_t offset,
                                   uint64_t bytes, IOVector& qiov, size_t qiov_offset)
{
    uint64_t host = alloc->host_offset + (offset - alloc->guest_offset);
    int ret = check_overlap(host, bytes, MetadataKind(0));
    if (ret < 0) {
        lock_.unlock();
        co_return ret;
    }
    {
        DataIoGuard guard(*this, host, bytes);
        lock_.unlock();
        ret = co_await bdrv_co_pwritev(file(), host, bytes, qiov, qiov_offset);
    }
    if (ret < 0) {
        co_return ret;
    }
    co_await lock_.lock();
    while (!alloc->linked && !alloc->failed) {
        lock_.unlock();
        co_await alloc->waiters.wait();
        co_await lock_.lock();
    }
    bool failed = alloc->failed;
    lock_.unlock();
    co_return failed ? -EAGAIN : 0;
}

Task<int> Qcow2State::extend_file_for(uint64_t host_end)
{
    uint64_t file_len = file()->bs->total_bytes();
    if (host_end <= file_len) {
        co_return 0;
    }
    // Extending once per megabyte (not once per data write) keeps the
    // file system's size updates and block allocation off the data path:
    // data writes then overwrite allocated (unwritten) extents, which file
    // systems handle in parallel, even with O_DIRECT.
    // Each extension drains the file's in-flight O_DIRECT writes (the file
    // system waits for them), so the step grows with the file: an eighth of
    // it, between 1 and 32 MiB.
    uint64_t step = std::clamp<uint64_t>(file_len / 8, std::max<uint64_t>(MiB, 16 * cluster_size_),
                                         std::max<uint64_t>(32 * MiB, 16 * cluster_size_));
    step = (step + cluster_size_ - 1) & ~(cluster_size_ - 1);
    uint64_t target = (host_end + step - 1) / step * step;
    Error err;
    int ret = co_await bdrv_co_truncate(file(), target, false, PreallocMode::Falloc, 0, err);
    if (ret == -ENOTSUP || ret == -EOPNOTSUPP) {
        ret = co_await bdrv_co_truncate(file(), target, false, PreallocMode::Off, 0, err);
    }
    if (ret >= 0) {
        file_extended_ = true;
    }
    co_return ret;
}

Task<int> Qcow2State::write_allocating(uint64_t offset, uint64_t bytes, IOVector& qiov,
                                       size_t qiov_offset)
{
    // Entered with lock_ held; returns with it released.
    Qcow2Cache::Ref l2;
    int ret = co_await get_l2_table(offset, true, l2);
    if (ret < 0) {
        lock_.unlock();
        co_return ret;
    }
    uint64_t idx = l2_index(offset);
    uint64_t guest_start = offset & ~(cluster_size_ - 1);
    uint64_t max_clusters = size_to_clusters(offset - guest_start + bytes);
    max_clusters = std::min(max_clusters, l2_entries_ - idx);

    // The run of clusters to allocate: stop at one that can be written in
    // place.  A preallocated zero cluster we own is reused as it is.
    std::vector<uint64_t> old(max_clusters);
    uint64_t n = 0;
    bool reuse = false;
    for (; n < max_clusters; n++) {
        uint64_t e = l2.get64(idx + n);
        ClusterType t = classify_l2_entry(e);
        if (t == ClusterType::Normal && (e & kCopied)) {
            break;
        }
        if (t == ClusterType::ZeroAlloc && (e & kCopied)) {
            if (n == 0) {
                reuse = true;
                old[n++] = e;
            }
            break;
        }
        old[n] = e;
    }
    old.resize(n);
    uint64_t alloc_bytes = n << cluster_bits_;
    uint64_t data_bytes = std::min(bytes, guest_start + alloc_bytes - offset);
    uint64_t head = offset - guest_start;
    uint64_t tail = alloc_bytes - head - data_bytes;

    uint64_t fresh_boundary = fresh_from_;
    uint64_t host;
    if (reuse) {
        host = old[0] & kOffsetMask;
    } else {
        int64_t h = co_await alloc_clusters(alloc_bytes);
        if (h < 0) {
            lock_.unlock();
            co_return int(h);
        }
        host = uint64_t(h);
    }
    bool fresh = !reuse && (host >> cluster_bits_) >= fresh_boundary;
    l2.reset();

    auto reads_zero = [](uint64_t entry) {
        ClusterType t = classify_l2_entry(entry);
        return t == ClusterType::Unallocated || t == ClusterType::ZeroPlain || t == ClusterType::ZeroAlloc;
    };
    bool head_needed = head > 0 && !(fresh && reads_zero(old.front()));
    bool tail_needed = tail > 0 && !(fresh && reads_zero(old.back()));

    auto alloc = std::make_shared<InFlightAlloc>();
    alloc->guest_offset = guest_start;
    alloc->bytes = alloc_bytes;
    alloc->host_offset = host;
    alloc->data_offset = offset;
    alloc->data_bytes = data_bytes;
    alloc->cow_free = !head_needed && !tail_needed;
    in_flight_.push_back(alloc);
    ret = check_overlap(host, alloc_bytes, MetadataKind(0));
    if (ret >= 0 && fresh) {
        ret = co_await extend_file_for(host + alloc_bytes);
    }
    auto finish = [&](int result) -> int {
        if (result < 0) {
            alloc->failed = true;
        } else {
            alloc->linked = true;
        }
        in_flight_.remove(alloc);
        alloc->waiters.restart_all();
        lock_.unlock();
        return result;
    };
    if (ret < 0) {
        co_return finish(ret);
    }
    DataIoGuard guard(*this, host, alloc_bytes);
    lock_.unlock();

    // Copy-on-write: the parts of the first and last cluster the request
    // does not cover keep what the old clusters held.  One write carries
    // them together with the new data.
    AlignedBuffer cow_head, cow_tail;
    IOVector write;
    auto fill_region = [&](uint64_t entry, uint64_t in_cluster, uint64_t len,
                           AlignedBuffer& buf) -> Task<int> {
        ClusterType t = classify_l2_entry(entry);
        buf = AlignedBuffer(len, 4096);
        if (t == ClusterType::Normal) {
            IOVector q(buf.data(), len);
            co_return co_await bdrv_co_preadv(file(), (entry & kOffsetMask) + in_cluster, len, q);
        }
        if (t == ClusterType::Compressed) {
            IOVector q(buf.data(), len);
            co_return co_await read_compressed(entry, in_cluster, len, q, 0);
        }
        memset(buf.data(), 0, len);
        co_return 0;
    };
    ret = 0;
    if (head_needed) {
        ret = co_await fill_region(old.front(), 0, head, cow_head);
    }
    if (ret >= 0 && tail_needed) {
        ret = co_await fill_region(old.back(), cluster_size_ - tail, tail, cow_tail);
    }
    if (ret >= 0) {
        uint64_t write_offset = host + (head_needed ? 0 : head);
        if (head_needed) {
            write.add(cow_head.data(), head);
        }
        write.add_slice(qiov, qiov_offset, data_bytes);
        if (tail_needed) {
            write.add(cow_tail.data(), tail);
        }
        ret = co_await bdrv_co_pwritev(file(), write_offset, write.size(), write);
    }

    co_await lock_.lock();
    if (ret < 0) {
        if (!reuse) {
            // Nothing references the new clusters, but requests that
            // joined may still be writing there: free them the safe way.
            free_clusters_later(host, alloc_bytes, FreeReason::Other);
        }
        co_return finish(ret);
    }
    ret = co_await get_l2_table(offset, true, l2);
    if (ret < 0) {
        co_return finish(ret);
    }
    for (uint64_t k = 0; k < n; k++) {
        uint64_t now_entry = l2.get64(idx + k);
        l2.set64(idx + k, (host + (k << cluster_bits_)) | kCopied);
        if (!reuse) {
            free_l2_entry_later(now_entry, FreeReason::Other);
        }
    }
    l2.reset();
    co_return finish(int(data_bytes));
}

Task<int> Qcow2State::zero_clusters(uint64_t offset, uint64_t bytes, bool unmap)
{
    // Caller holds lock_; offset and bytes are cluster aligned (or reach the
    // end of the image).
    while (bytes > 0) {
        uint64_t cur = bytes;
        while (co_await wait_for_dependencies(offset, cur)) {
            cur = bytes;
        }
        Qcow2Cache::Ref l2;
        int ret = co_await get_l2_table(offset, true, l2);
        if (ret < 0) {
            co_return ret;
        }
        uint64_t idx = l2_index(offset);
        uint64_t n = std::min(size_to_clusters(cur), l2_entries_ - idx);
        for (uint64_t k = 0; k < n; k++) {
            uint64_t e = l2.get64(idx + k);
            ClusterType t = classify_l2_entry(e);
            uint64_t now;
            if (t == ClusterType::Compressed || (unmap && (t == ClusterType::Normal || t == ClusterType::ZeroAlloc))) {
                free_l2_entry_later(e, FreeReason::GuestDiscard);
                now = kZero;
            } else if (t == ClusterType::Normal || t == ClusterType::ZeroAlloc) {
                now = (e & (kOffsetMask | kCopied)) | kZero;  // keep the allocation
            } else {
                now = kZero;
            }
            if (now != e) {
                l2.set64(idx + k, now);
            }
        }
        uint64_t done = std::min(bytes, n << cluster_bits_);
        offset += done;
        bytes -= done;
    }
    co_return 0;
}

Task<int> Qcow2State::discard_clusters(uint64_t offset, uint64_t bytes, bool full)
{
    while (bytes > 0) {
        uint64_t cur = bytes;
        while (co_await wait_for_dependencies(offset, cur)) {
            cur = bytes;
        }
        uint64_t idx = l2_index(offset);
        uint64_t n = std::min(size_to_clusters(cur), l2_entries_ - idx);
        Qcow2Cache::Ref l2;
        int ret = co_await get_l2_table(offset, false, l2);
        if (ret < 0) {
            co_return ret;
        }
        if (l2) {
            bool needs_change = false;
            for (uint64_t k = 0; k < n && !needs_change; k++) {
                ClusterType t = classify_l2_entry(l2.get64(idx + k));
                needs_change = t != ClusterType::Unallocated && (full || t != ClusterType::ZeroPlain);
            }
            if (needs_change && !(l1_[l1_index(offset)] & kCopied)) {
                l2.reset();
                ret = co_await get_l2_table(offset, true, l2);  // private copy first
                if (ret < 0) {
                    co_return ret;
                }
            }
            for (uint64_t k = 0; needs_change && k < n; k++) {
                uint64_t e = l2.get64(idx + k);
                ClusterType t = classify_l2_entry(e);
                if (t == ClusterType::Unallocated || (!full && t == ClusterType::ZeroPlain)) {
                    continue;
                }
                free_l2_entry_later(e, full ? FreeReason::Always : FreeReason::GuestDiscard);
                // Without a backing file a zero cluster and an unallocated
                // one read alike; v3 keeps the explicit zero as QEMU does.
                l2.set64(idx + k, (!full && header_.version >= 3) ? kZero : 0);
            }
        }
        uint64_t done = std::min(bytes, n << cluster_bits_);
        offset += done;
        bytes -= done;
    }
    co_return 0;
}

Task<int> Qcow2State::write_l1_entries()
{
    if (dirty_l1_.empty()) {
        co_return 0;
    }
    std::sort(dirty_l1_.begin(), dirty_l1_.end());
    constexpr uint64_t kPerSector = 512 / 8;
    uint8_t sector[512];
    uint64_t last = UINT64_MAX;
    for (uint32_t idx : dirty_l1_) {
        uint64_t s = idx / kPerSector;
        if (s == last) {
            continue;
        }
        last = s;
        uint64_t n = std::min<uint64_t>(kPerSector, l1_.size() - s * kPerSector);
        memset(sector, 0, sizeof(sector));
        for (uint64_t i = 0; i < n; i++) {
            store_be64(sector + i * 8, l1_[s * kPerSector + i]);
        }
        uint64_t off = header_.l1_table_offset + s * 512;
        uint64_t len = std::min<uint64_t>(512, uint64_t(header_.l1_size) * 8 - s * 512);
        int ret = check_overlap(off, len, META_L1);
        if (ret < 0) {
            co_return ret;
        }
        IOVector qiov(sector, len);
        ret = co_await bdrv_co_pwritev(file(), off, len, qiov);
        if (ret < 0) {
            co_return ret;
        }
    }
    dirty_l1_.clear();
    co_return 0;
}

Task<int> Qcow2State::grow_l1_table(uint64_t min_size, Error& err)
{
    if (min_size <= l1_.size()) {
        co_return 0;
    }
    if (min_size > kMaxL1Bytes / 8) {
        err.set("The L1 table would exceed the maximum size of %llu entries",
                (unsigned long long)(kMaxL1Bytes / 8));
        co_return -EFBIG;
    }
    // Whatever the old table references must be on disk before the new
    // table copies it.
    int ret = co_await flush_metadata();
    if (ret < 0) {
        err.set_errno(-ret, "Could not write metadata");
        co_return ret;
    }
    uint64_t new_bytes = min_size * 8;
    int64_t new_offset = co_await alloc_clusters(new_bytes);
    if (new_offset < 0) {
        err.set_errno(-int(new_offset), "Could not allocate the L1 table");
        co_return int(new_offset);
    }
    uint64_t write_bytes = new_bytes;
    AlignedBuffer buf(write_bytes, 4096);
    memset(buf.data(), 0, write_bytes);
    for (size_t i = 0; i < l1_.size(); i++) {
        store_be64(buf.data() + i * 8, l1_[i]);
    }
    register_metadata(uint64_t(new_offset), new_bytes, META_L1);
    IOVector qiov(buf.data(), write_bytes);
    ret = co_await bdrv_co_pwritev(file(), uint64_t(new_offset), write_bytes, qiov);
    if (ret >= 0) {
        ret = co_await refblock_cache_->write_back();
    }
    if (ret >= 0) {
        ret = co_await bdrv_co_flush(file()->bs.get());
    }
    if (ret < 0) {
        err.set_errno(-ret, "Could not write the L1 table");
        co_return ret;
    }
    uint64_t old_offset = header_.l1_table_offset;
    uint64_t old_bytes = uint64_t(header_.l1_size) * 8;
    header_.l1_table_offset = uint64_t(new_offset);
    header_.l1_size = uint32_t(min_size);
    ret = co_await write_header_fields();
    if (ret < 0) {
        err.set_errno(-ret, "Could not update the header");
        co_return ret;
    }
    l1_.resize(min_size, 0);
    if (old_bytes) {
        unregister_metadata(old_offset, old_bytes);
        free_clusters_later(old_offset, old_bytes, FreeReason::Other);
    }
    co_return 0;
}

void Qcow2State::compressed_range(uint64_t entry, uint64_t& host, uint64_t& len) const
{
    uint32_t csize_shift = 62 - (cluster_bits_ - 8);
    uint64_t csize_mask = (1ULL << (cluster_bits_ - 8)) - 1;
    uint64_t offset = entry & ((1ULL << csize_shift) - 1);
    uint64_t nb_sectors = ((entry >> csize_shift) & csize_mask) + 1;
    host = offset & ~511ULL;
    len = nb_sectors * 512;
}

Task<int> Qcow2State::read_compressed(uint64_t entry, uint64_t in_cluster, uint64_t bytes,
                                      IOVector& qiov, size_t qiov_offset)
{
    uint64_t sector_start, sectors_len;
    compressed_range(entry, sector_start, sectors_len);
    uint32_t csize_shift = 62 - (cluster_bits_ - 8);
    uint64_t coffset = entry & ((1ULL << csize_shift) - 1);
    uint64_t csize = sectors_len - (coffset & 511);
    AlignedBuffer in(csize, 4096);
    AlignedBuffer out(cluster_size_, 4096);
    IOVector q(in.data(), csize);
    int ret = co_await bdrv_co_preadv(file(), coffset, csize, q);
    if (ret < 0) {
        co_return ret;
    }
    ret = decompress_cluster(header_.compression_type, in.data(), csize, out.data(), cluster_size_);
    if (ret < 0) {
        co_return -EIO;
    }
    qiov.from_buf(qiov_offset, out.data() + in_cluster, bytes);
    co_return 0;
}

Task<int> Qcow2State::write_compressed(uint64_t offset, uint64_t bytes, IOVector& qiov,
                                       size_t qiov_offset)
{
    if (offset_into_cluster(offset) ||
        (bytes != cluster_size_ && (bytes > cluster_size_ || offset + bytes != total_bytes()))) {
        co_return -EINVAL;
    }
    AlignedBuffer raw(cluster_size_, 4096);
    memset(raw.data(), 0, cluster_size_);
    qiov.to_buf(qiov_offset, raw.data(), bytes);
    AlignedBuffer packed(cluster_size_, 4096);
    ssize_t len = compress_cluster(header_.compression_type, raw.data(), cluster_size_, packed.data(),
                                   cluster_size_ - 1);
    if (len == -ENOSPC) {
        // Incompressible: store it as a normal cluster.
        IOVector q(raw.data(), bytes);
        co_return co_await write_guest(offset, bytes, q, 0, 0);
    }
    if (len < 0) {
        co_return int(len);
    }
    co_await lock_.lock();
    uint64_t cur = cluster_size_;
    while (co_await wait_for_dependencies(offset, cur)) {
        cur = cluster_size_;
    }
    Qcow2Cache::Ref l2;
    int ret = co_await get_l2_table(offset, true, l2);
    if (ret < 0) {
        lock_.unlock();
        co_return ret;
    }
    uint64_t idx = l2_index(offset);
    uint64_t old = l2.get64(idx);
    if (classify_l2_entry(old) != ClusterType::Unallocated && classify_l2_entry(old) != ClusterType::ZeroPlain) {
        lock_.unlock();
        co_return -EIO;  // as QEMU: compression only into unallocated clusters
    }
    l2.reset();
    int64_t host = co_await alloc_bytes(uint64_t(len));
    if (host < 0) {
        lock_.unlock();
        co_return int(host);
    }
    ret = check_overlap(uint64_t(host), uint64_t(len), MetadataKind(0));
    if (ret < 0) {
        lock_.unlock();
        co_return ret;
    }
    auto alloc = std::make_shared<InFlightAlloc>();
    alloc->guest_offset = offset;
    alloc->bytes = cluster_size_;
    alloc->host_offset = uint64_t(host);
    alloc->data_offset = offset;
    alloc->data_bytes = cluster_size_;
    in_flight_.push_back(alloc);
    lock_.unlock();
    IOVector q(packed.data(), uint64_t(len));
    ret = co_await bdrv_co_pwritev(file(), uint64_t(host), uint64_t(len), q);
    co_await lock_.lock();
    if (ret >= 0) {
        ret = co_await get_l2_table(offset, true, l2);
    }
    if (ret >= 0) {
        uint32_t csize_shift = 62 - (cluster_bits_ - 8);
        uint64_t nb_csectors = ((uint64_t(host) + uint64_t(len) - 1) >> 9) - (uint64_t(host) >> 9);
        l2.set64(idx, uint64_t(host) | kCompressed | (nb_csectors << csize_shift));
        l2.reset();
        ret = 0;
    } else {
        free_clusters_later(uint64_t(host), uint64_t(len), FreeReason::Other);
    }
    alloc->linked = ret >= 0;
    alloc->failed = ret < 0;
    in_flight_.remove(alloc);
    alloc->waiters.restart_all();
    lock_.unlock();
    co_return ret;
}

Task<int> Qcow2State::preallocate(uint64_t from, uint64_t to, PreallocMode mode, Error& err)
{
    // Caller holds lock_.  Every unallocated cluster in [from, to) gets a
    // host cluster; host clusters are contiguous per allocation run.
    uint64_t offset = from & ~(cluster_size_ - 1);
    uint64_t host_end = 0;
    while (offset < to) {
        Qcow2Cache::Ref l2;
        int ret = co_await get_l2_table(offset, true, l2);
        if (ret < 0) {
            err.set_errno(-ret, "Could not allocate L2 table");
            co_return ret;
        }
        uint64_t idx = l2_index(offset);
        uint64_t n = std::min(size_to_clusters(to - offset), l2_entries_ - idx);
        uint64_t need = 0;
        for (uint64_t k = 0; k < n; k++) {
            ClusterType t = classify_l2_entry(l2.get64(idx + k));
            need += t == ClusterType::Unallocated || t == ClusterType::ZeroPlain;
        }
        l2.reset();
        if (need) {
            int64_t host = co_await alloc_clusters(need << cluster_bits_);
            if (host < 0) {
                err.set_errno(-int(host), "Could not allocate clusters");
                co_return int(host);
            }
            ret = co_await get_l2_table(offset, true, l2);
            if (ret < 0) {
                co_return ret;
            }
            uint64_t next = uint64_t(host);
            for (uint64_t k = 0; k < n; k++) {
                ClusterType t = classify_l2_entry(l2.get64(idx + k));
                if (t == ClusterType::Unallocated || t == ClusterType::ZeroPlain) {
                    l2.set64(idx + k, next | kCopied);
                    next += cluster_size_;
                }
            }
            host_end = std::max(host_end, next);
            l2.reset();
        }
        offset += n << cluster_bits_;
    }
    if (host_end) {
        // The file must cover what the L2 tables now point to; falloc and
        // full also reserve (or write) the space.
        uint64_t file_len = file()->bs->total_bytes();
        if (host_end > file_len) {
            PreallocMode file_mode = mode == PreallocMode::Metadata ? PreallocMode::Off : mode;
            int ret = co_await bdrv_co_truncate(file(), host_end, false, file_mode, 0, err);
            if (ret < 0) {
                co_return ret;
            }
        }
    }
    co_return 0;
}

}  // namespace qemu::qcow2
