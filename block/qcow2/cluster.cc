// qcow2 cluster mapping: from guest offsets through the L1 and L2 tables to
// host clusters, and the allocation of new clusters with copy-on-write.
#include <cassert>
#include <algorithm>
#include <cstring>

#include "qcow2.h"
#include "qemu/bswap.h"

namespace qemu::qcow2 {

uint64_t Qcow2State::l1_size_for(uint64_t virtual_size, uint32_t cluster_bits, bool extended_l2)
{
    uint32_t l2_bits = cluster_bits - (extended_l2 ? 4 : 3);
    uint32_t shift = cluster_bits + l2_bits;
    return (virtual_size + (1ULL << shift) - 1) >> shift;
}

// --- L2 entries ---------------------------------------------------------------

L2Entry Qcow2State::load_l2_entry(const uint8_t* table, uint64_t index) const
{
    if (!extended_l2_) {
        return {load_be64(table + index * 8), 0};
    }
    return {load_be64(table + index * 16), load_be64(table + index * 16 + 8)};
}

void Qcow2State::store_l2_entry(uint8_t* table, uint64_t index, const L2Entry& e) const
{
    if (!extended_l2_) {
        store_be64(table + index * 8, e.entry);
        return;
    }
    store_be64(table + index * 16, e.entry);
    store_be64(table + index * 16 + 8, e.bitmap);
}

void Qcow2State::set_l2_entry(Qcow2Cache::Ref& l2, uint64_t index, const L2Entry& e)
{
    store_l2_entry(l2.data(), index, e);
    l2.mark_dirty();
}

ClusterType Qcow2State::l2_cluster_type(uint64_t entry) const
{
    if (entry & kCompressed) {
        return ClusterType::Compressed;
    }
    if ((entry & kZero) && !extended_l2_) {
        return (entry & kOffsetMask) ? ClusterType::ZeroAlloc : ClusterType::ZeroPlain;
    }
    if (entry & kOffsetMask) {
        return ClusterType::Normal;
    }
    // Offset 0 is a real data offset in an external data file; there every
    // allocated cluster has COPIED set (its refcount is implicitly 1).
    return has_data_file() && (entry & kCopied) ? ClusterType::Normal : ClusterType::Unallocated;
}

SubclusterType Qcow2State::subcluster_type(const L2Entry& e, uint32_t subcluster) const
{
    ClusterType type = l2_cluster_type(e.entry);
    if (!extended_l2_) {
        switch (type) {
        case ClusterType::Unallocated: return SubclusterType::UnallocatedPlain;
        case ClusterType::ZeroPlain: return SubclusterType::ZeroPlain;
        case ClusterType::ZeroAlloc: return SubclusterType::ZeroAlloc;
        case ClusterType::Normal: return SubclusterType::Normal;
        case ClusterType::Compressed: return SubclusterType::Compressed;
        }
    }
    uint64_t zero_bit = 1ULL << (32 + subcluster);
    uint64_t alloc_bit = 1ULL << subcluster;
    switch (type) {
    case ClusterType::Compressed:
        return SubclusterType::Compressed;
    case ClusterType::Normal:
        // A subcluster cannot be both allocated and zero.
        if ((e.bitmap >> 32) & e.bitmap) {
            return SubclusterType::Invalid;
        }
        if (e.bitmap & zero_bit) {
            return SubclusterType::ZeroAlloc;
        }
        return (e.bitmap & alloc_bit) ? SubclusterType::Normal : SubclusterType::UnallocatedAlloc;
    default:
        // No host cluster: nothing can be allocated.
        if (e.bitmap & kBitmapAllAlloc) {
            return SubclusterType::Invalid;
        }
        return (e.bitmap & zero_bit) ? SubclusterType::ZeroPlain : SubclusterType::UnallocatedPlain;
    }
}

int Qcow2State::validate_l2_entry(const L2Entry& e, uint64_t offset, uint64_t l2_offset, uint64_t index)
{
    auto ull = [](uint64_t v) { return (unsigned long long)v; };
    SubclusterType type = subcluster_type(e, subcluster_index(offset));
    if (type == SubclusterType::Invalid) {
        return signal_corruption(true, "Invalid cluster entry found  (L2 offset: %#llx, L2 index: %#llx)",
                                 ull(l2_offset), ull(index));
    }
    if (type == SubclusterType::Compressed) {
        if (has_data_file()) {
            return signal_corruption(true, "Compressed cluster entry found in image with external "
                                     "data file (L2 offset: %#llx, L2 index: %#llx)", ull(l2_offset),
                                     ull(index));
        }
        return 0;
    }
    if (e.entry & kL2ReservedMask) {
        return signal_corruption(true, "Cluster allocation offset %#llx has reserved bits set "
                                 "(L2 offset: %#llx, L2 index: %#llx)", ull(e.entry), ull(l2_offset),
                                 ull(index));
    }
    if (type == SubclusterType::Normal || type == SubclusterType::ZeroAlloc ||
        type == SubclusterType::UnallocatedAlloc) {
        uint64_t host = e.entry & kOffsetMask;
        if (offset_into_cluster(host)) {
            return signal_corruption(true, "Cluster allocation offset %#llx unaligned (L2 offset: "
                                     "%#llx, L2 index: %#llx)", ull(host), ull(l2_offset), ull(index));
        }
        uint64_t guest_cluster = offset - offset_into_cluster(offset);
        if (has_data_file() && host != guest_cluster) {
            return signal_corruption(true, "External data file host cluster offset %#llx does not "
                                     "match guest cluster offset: %#llx, L2 index: %#llx)", ull(host),
                                     ull(guest_cluster), ull(index));
        }
    }
    return 0;
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
    int ret = claim_metadata(uint64_t(new_offset), cluster_size_, META_L2);
    if (ret < 0) {
        co_return ret;
    }
    Qcow2Cache::Ref table;
    ret = co_await l2_cache_->get(uint64_t(new_offset), false, table);
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
    uint32_t table_shift = cluster_bits_ + l2_bits_;
    uint64_t table_end = ((offset >> table_shift) + 1) << table_shift;
    bytes = std::min(bytes, table_end - offset);

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
    L2Entry first = get_l2_entry(l2, idx);
    ret = validate_l2_entry(first, offset, l2.offset(), idx);
    if (ret < 0) {
        co_return ret;
    }
    out.l2_entry = first.entry;
    uint32_t sc = subcluster_index(offset);
    SubclusterType type = subcluster_type(first, sc);
    if (type == SubclusterType::Compressed) {
        // One cluster at a time: each has its own compressed data.
        out.type = ClusterType::Compressed;
        out.bytes = std::min(bytes, cluster_size_ - offset_into_cluster(offset));
        co_return 0;
    }

    // Extend the run over the following subclusters (with standard entries:
    // clusters) of the same type.  Where they have host clusters, those
    // must be contiguous; data must also share the COPIED flag (writes
    // rely on it for the whole run).
    bool has_host = type == SubclusterType::Normal || type == SubclusterType::ZeroAlloc ||
                    type == SubclusterType::UnallocatedAlloc;
    uint64_t host = (first.entry & kOffsetMask) + (uint64_t(sc) << subcluster_bits_);
    uint64_t in_unit = offset & (subcluster_size_ - 1);
    uint64_t max_units = (in_unit + bytes + subcluster_size_ - 1) >> subcluster_bits_;
    uint32_t per_cluster_bits = cluster_bits_ - subcluster_bits_;
    uint64_t units = 1;
    uint64_t cur_idx = idx;
    L2Entry cur = first;
    while (units < max_units) {
        uint64_t pos = sc + units;  // counted from the start of the first cluster
        uint32_t s = uint32_t(pos & ((1ULL << per_cluster_bits) - 1));
        if (idx + (pos >> per_cluster_bits) != cur_idx) {
            cur_idx = idx + (pos >> per_cluster_bits);
            cur = get_l2_entry(l2, cur_idx);
        }
        if (subcluster_type(cur, s) != type ||
            (has_host && (cur.entry & kOffsetMask) + (uint64_t(s) << subcluster_bits_) !=
                             host + (units << subcluster_bits_)) ||
            (type == SubclusterType::Normal && (cur.entry & kCopied) != (first.entry & kCopied))) {
            break;
        }
        units++;
    }
    switch (type) {
    case SubclusterType::Normal: out.type = ClusterType::Normal; break;
    case SubclusterType::ZeroAlloc: out.type = ClusterType::ZeroAlloc; break;
    case SubclusterType::ZeroPlain: out.type = ClusterType::ZeroPlain; break;
    default: out.type = ClusterType::Unallocated; break;
    }
    if (has_host) {
        out.host_offset = host + in_unit;
        out.host_allocated = true;
    }
    out.bytes = std::min(bytes, (units << subcluster_bits_) - in_unit);
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
        ret = co_await bdrv_co_pwritev(data_child(), host, bytes, qiov, qiov_offset);
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

// Where the copy-on-write around a write to [w_start, w_end) (offsets from
// the start of the first cluster of `old`, the entries being replaced) must
// begin and end: the range the new mapping describes as written.  Without
// subclusters that is every cluster whole.  With them (QEMU's rules), a
// cluster that keeps its host cluster needs only the partly written
// subclusters at either end (none if they already hold data); a new host
// cluster must also take in every allocated subcluster of the old one, and
// a compressed cluster is copied whole.
struct Qcow2State::CowBounds {
    uint64_t from;
    uint64_t to;
};

Qcow2State::CowBounds Qcow2State::cow_bounds(const std::vector<L2Entry>& old, bool reuse,
                                             uint64_t w_start, uint64_t w_end) const
{
    uint64_t cs = cluster_size_;
    uint64_t last_base = (old.size() - 1) * cs;
    if (!extended_l2_) {
        return {0, last_base + cs};
    }
    uint32_t scb = subcluster_bits_;
    uint32_t first_sc = uint32_t(w_start >> scb);
    uint32_t last_sc = uint32_t((w_end - last_base - 1) >> scb);
    CowBounds b{uint64_t(first_sc) << scb, last_base + ((uint64_t(last_sc) + 1) << scb)};
    if (reuse) {
        if (subcluster_type(old.front(), first_sc) == SubclusterType::Normal) {
            b.from = w_start;
        }
        if (subcluster_type(old.back(), last_sc) == SubclusterType::Normal) {
            b.to = w_end;
        }
        return b;
    }
    const L2Entry& head = old.front();
    const L2Entry& tail = old.back();
    uint32_t head_alloc = uint32_t(head.bitmap & kBitmapAllAlloc);
    uint32_t tail_alloc = uint32_t(tail.bitmap & kBitmapAllAlloc);
    switch (l2_cluster_type(head.entry)) {
    case ClusterType::Compressed:
        b.from = 0;
        break;
    case ClusterType::Normal:
        if (head_alloc) {
            b.from = uint64_t(std::min<uint32_t>(first_sc, __builtin_ctz(head_alloc))) << scb;
        }
        break;
    default:
        break;
    }
    switch (l2_cluster_type(tail.entry)) {
    case ClusterType::Compressed:
        b.to = last_base + cs;
        break;
    case ClusterType::Normal:
        if (tail_alloc) {
            uint32_t last_alloc = 31 - __builtin_clz(tail_alloc);
            b.to = last_base + ((uint64_t(std::max(last_sc, last_alloc)) + 1) << scb);
        }
        break;
    default:
        break;
    }
    return b;
}

// The run of clusters from `idx` that one allocating write covers (at
// most `max_clusters`): it stops at a cluster that has a host cluster of its
// own.  Such a cluster is reused (`reuse`) when it comes first: with
// extended L2 entries for its unallocated or zero subclusters, without them
// when it is a preallocated zero cluster.
int Qcow2State::allocation_run(Qcow2Cache::Ref& l2, uint64_t idx, uint64_t guest_start,
                               uint64_t max_clusters, std::vector<L2Entry>& old, bool& reuse)
{
    reuse = false;
    for (uint64_t k = 0; k < max_clusters; k++) {
        L2Entry e = get_l2_entry(l2, idx + k);
        int ret = validate_l2_entry(e, guest_start + (k << cluster_bits_), l2.offset(), idx + k);
        if (ret < 0) {
            return ret;
        }
        ClusterType t = l2_cluster_type(e.entry);
        if ((t == ClusterType::Normal || t == ClusterType::ZeroAlloc) && (e.entry & kCopied)) {
            if (k == 0 && (extended_l2_ || t == ClusterType::ZeroAlloc)) {
                reuse = true;
                old.push_back(e);
            }
            break;
        }
        old.push_back(e);
    }
    return 0;
}

// Where an allocating write puts its data and what it copies around it.
struct Qcow2State::AllocatingWrite {
    uint64_t guest_start;  // the first cluster's guest offset
    uint64_t host;         // the first cluster's host offset
    uint64_t w_start, w_end;  // the new data, relative to guest_start
    CowBounds cow;
    bool head_needed, tail_needed;  // copy [cow.from, w_start), [w_end, cow.to)
};

// Writes the new data of `w` from `qiov` with the copy-on-write around it:
// the written range keeps what the guest reads there now (old clusters,
// zeroes, or the backing file).  The allocation in flight keeps other
// writers away, so the guest's view cannot change meanwhile.  One write
// carries the copies together with the new data.  Runs without lock_.
Task<int> Qcow2State::write_with_cow(const AllocatingWrite& w, IOVector& qiov, size_t qiov_offset)
{
    AlignedBuffer cow_head, cow_tail;
    auto read_current = [&](uint64_t from, uint64_t to, AlignedBuffer& buf) -> Task<int> {
        buf = AlignedBuffer(to - from, 4096);
        IOVector q(buf.data(), to - from);
        co_return co_await read_guest(w.guest_start + from, to - from, q, 0);
    };
    int ret = 0;
    if (w.head_needed) {
        ret = co_await read_current(w.cow.from, w.w_start, cow_head);
    }
    if (ret >= 0 && w.tail_needed) {
        ret = co_await read_current(w.w_end, w.cow.to, cow_tail);
    }
    if (ret < 0) {
        co_return ret;
    }
    IOVector write;
    uint64_t write_from = w.head_needed ? w.cow.from : w.w_start;
    if (w.head_needed) {
        write.add(cow_head.data(), w.w_start - w.cow.from);
    }
    write.add_slice(qiov, qiov_offset, w.w_end - w.w_start);
    if (w.tail_needed) {
        write.add(cow_tail.data(), w.cow.to - w.w_end);
    }
    co_return co_await bdrv_co_pwritev(data_child(), w.host + write_from, write.size(), write);
}

// Points the `n` L2 entries from `idx` at the written host clusters and
// queues what they pointed to for freeing.
void Qcow2State::link_clusters(Qcow2Cache::Ref& l2, uint64_t idx, uint64_t n,
                               const AllocatingWrite& w, bool reuse)
{
    for (uint64_t k = 0; k < n; k++) {
        L2Entry now = get_l2_entry(l2, idx + k);
        L2Entry linked{(w.host + (k << cluster_bits_)) | kCopied, 0};
        if (extended_l2_) {
            // Subclusters outside the written range keep their state.
            uint64_t base = k << cluster_bits_;
            uint64_t from = std::max(w.cow.from, base) - base;
            uint64_t to = std::min(w.cow.to, base + cluster_size_) - base;
            uint64_t written = subcluster_alloc_bits(uint32_t(from >> subcluster_bits_),
                                                     uint32_t(((to - 1) >> subcluster_bits_) + 1));
            uint64_t kept = l2_cluster_type(now.entry) == ClusterType::Compressed ? 0 : now.bitmap;
            linked.bitmap = (kept | written) & ~(written << 32);
        }
        set_l2_entry(l2, idx + k, linked);
        // With an external data file the old mapping was at the same
        // offset: nothing to free.
        if (!reuse && !has_data_file()) {
            free_l2_entry_later(now.entry, Qcow2State::FreeReason::Other);
        }
    }
}

bool Qcow2State::range_reads_zero(const L2Entry& e, uint64_t from, uint64_t to) const
{
    for (uint64_t sc = from >> subcluster_bits_; sc <= (to - 1) >> subcluster_bits_; sc++) {
        switch (subcluster_type(e, uint32_t(sc))) {
        case SubclusterType::ZeroPlain:
        case SubclusterType::ZeroAlloc:
            break;
        case SubclusterType::UnallocatedPlain:
        case SubclusterType::UnallocatedAlloc:
            if (!unallocated_reads_zero()) {
                return false;
            }
            break;
        default:
            return false;
        }
    }
    return true;
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
    AllocatingWrite w;
    w.guest_start = offset & ~(cluster_size_ - 1);
    uint64_t max_clusters = size_to_clusters(offset - w.guest_start + bytes);
    max_clusters = std::min(max_clusters, l2_entries_ - idx);
    std::vector<L2Entry> old;
    bool reuse = false;
    ret = allocation_run(l2, idx, w.guest_start, max_clusters, old, reuse);
    if (ret < 0) {
        lock_.unlock();
        co_return ret;
    }
    uint64_t n = old.size();
    uint64_t alloc_bytes = n << cluster_bits_;
    w.w_start = offset - w.guest_start;
    uint64_t data_bytes = std::min(bytes, alloc_bytes - w.w_start);
    w.w_end = w.w_start + data_bytes;
    w.cow = cow_bounds(old, reuse, w.w_start, w.w_end);

    uint64_t fresh_boundary = fresh_from_;
    if (reuse) {
        w.host = old[0].entry & kOffsetMask;
    } else if (has_data_file()) {
        w.host = w.guest_start;  // guest data sits at its guest offset
    } else {
        int64_t h = co_await alloc_clusters(alloc_bytes);
        if (h < 0) {
            lock_.unlock();
            co_return int(h);
        }
        w.host = uint64_t(h);
    }
    // Clusters past everything ever allocated in the image file read as
    // zeroes: copying zeroes there can be skipped.
    bool fresh = !reuse && !has_data_file() && (w.host >> cluster_bits_) >= fresh_boundary;
    l2.reset();

    uint64_t last_base = (n - 1) << cluster_bits_;
    w.head_needed = w.cow.from < w.w_start && !(fresh && range_reads_zero(old.front(), w.cow.from, w.w_start));
    w.tail_needed = w.w_end < w.cow.to &&
                    !(fresh && range_reads_zero(old.back(), w.w_end - last_base, w.cow.to - last_base));

    auto alloc = std::make_shared<InFlightAlloc>();
    alloc->guest_offset = w.guest_start;
    alloc->bytes = alloc_bytes;
    alloc->host_offset = w.host;
    alloc->data_offset = offset;
    alloc->data_bytes = data_bytes;
    // With subclusters the new entry marks only [cow.from, cow.to) as
    // written, so writes elsewhere in the clusters cannot join.
    alloc->cow_free = !w.head_needed && !w.tail_needed && !extended_l2_;
    in_flight_.push_back(alloc);
    ret = check_overlap(w.host, alloc_bytes, MetadataKind(0));
    if (ret >= 0 && fresh) {
        ret = co_await extend_file_for(w.host + alloc_bytes);
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
    DataIoGuard guard(*this, w.host, alloc_bytes);
    lock_.unlock();
    ret = co_await write_with_cow(w, qiov, qiov_offset);
    co_await lock_.lock();
    if (ret < 0) {
        if (!reuse && !has_data_file()) {
            // Nothing references the new clusters, but requests that
            // joined may still be writing there: free them the safe way.
            free_clusters_later(w.host, alloc_bytes, FreeReason::Other);
        }
        co_return finish(ret);
    }
    ret = co_await get_l2_table(offset, true, l2);
    if (ret < 0) {
        co_return finish(ret);
    }
    link_clusters(l2, idx, n, w, reuse);
    l2.reset();
    co_return finish(int(data_bytes));
}

Task<int> Qcow2State::release_l2_entry(uint64_t old, FreeReason reason)
{
    if (!has_data_file()) {
        free_l2_entry_later(old, reason);
        co_return 0;
    }
    // The data file has no refcounts: only its space can be given back.
    // A raw data file must keep reading as the guest does, so the range
    // is zeroed there (QEMU 7.2 skips this without pass-discard-request
    // and leaves stale data in a file it still calls raw).
    ClusterType t = l2_cluster_type(old);
    if ((t != ClusterType::Normal && t != ClusterType::ZeroAlloc) || !data_file_) {
        co_return 0;
    }
    bool pass = discard_passes_down(reason);
    uint64_t host = old & kOffsetMask;
    // The last cluster may end past the disk: the data file must not grow.
    uint64_t len = std::min(cluster_size_, total_bytes() - std::min(host, total_bytes()));
    if (len == 0) {
        co_return 0;
    }
    if (data_file_is_raw() && (t == ClusterType::Normal || pass)) {
        co_return co_await bdrv_co_pwrite_zeroes(data_file_, host, len,
                                                 pass ? unsigned(BDRV_REQ_MAY_UNMAP) : 0u);
    }
    if (pass) {
        co_await bdrv_co_pdiscard(data_file_, host, len);  // advisory
    }
    co_return 0;
}

Task<int> Qcow2State::zero_clusters(uint64_t offset, uint64_t bytes, bool unmap)
{
    assert(lock_.locked());
    // Caller holds lock_.
    uint64_t end = offset + bytes;
    while (offset < end) {
        uint64_t cur = end - offset;
        while (co_await wait_for_dependencies(offset, cur)) {
            cur = end - offset;
        }
        Qcow2Cache::Ref l2;
        int ret = co_await get_l2_table(offset, true, l2);
        if (ret < 0) {
            co_return ret;
        }
        uint64_t idx = l2_index(offset);
        uint64_t first_cluster = offset & ~(cluster_size_ - 1);
        uint64_t n = std::min(size_to_clusters(offset + cur - first_cluster), l2_entries_ - idx);
        uint64_t run_end = std::min(offset + cur, first_cluster + (n << cluster_bits_));
        for (uint64_t k = 0; k < n; k++) {
            uint64_t cluster = first_cluster + (k << cluster_bits_);
            uint64_t from = std::max(offset, cluster);
            uint64_t to = std::min(run_end, cluster + cluster_size_);
            bool whole = from == cluster && (to == cluster + cluster_size_ || to >= total_bytes());
            L2Entry e = get_l2_entry(l2, idx + k);
            ClusterType t = l2_cluster_type(e.entry);
            L2Entry now = e;
            bool drop = false;
            if (whole) {
                drop = t == ClusterType::Compressed ||
                       (unmap && (t == ClusterType::Normal || t == ClusterType::ZeroAlloc));
                if (drop) {
                    now.entry = 0;
                }
                if (extended_l2_) {
                    now.bitmap = kBitmapAllZero;
                } else {
                    now.entry |= kZero;
                }
            } else {
                // Some subclusters (extended L2 entries only): they read as
                // zeroes, the cluster keeps its host cluster.  Compressed
                // data has no subclusters.
                if (!extended_l2_ || t == ClusterType::Compressed) {
                    co_return -ENOTSUP;
                }
                uint64_t bits = subcluster_alloc_bits(
                    uint32_t((from - cluster) >> subcluster_bits_),
                    uint32_t(((to - cluster - 1) >> subcluster_bits_) + 1));
                now.bitmap = (e.bitmap | (bits << 32)) & ~bits;
            }
            if (now == e) {
                continue;
            }
            set_l2_entry(l2, idx + k, now);
            if (drop) {
                ret = co_await release_l2_entry(e.entry, FreeReason::GuestDiscard);
                if (ret < 0) {
                    co_return ret;
                }
            }
        }
        offset = run_end;
    }
    co_return 0;
}

Task<int> Qcow2State::discard_clusters(uint64_t offset, uint64_t bytes, bool full)
{
    // What a discarded entry becomes (QEMU's discard_in_l2_slice): with
    // `full`, unallocated; otherwise it must read as zeroes, which needs a
    // change only for allocated clusters, or for any with a backing file
    // behind.  Version 2 images cannot say "zero" and unallocate.
    auto discarded = [&](const L2Entry& e) {
        if (full) {
            return L2Entry{};
        }
        ClusterType t = l2_cluster_type(e.entry);
        bool allocated = t == ClusterType::Normal || t == ClusterType::ZeroAlloc ||
                         t == ClusterType::Compressed;
        if (!allocated && unallocated_reads_zero()) {
            return e;
        }
        if (extended_l2_) {
            return L2Entry{0, kBitmapAllZero};
        }
        return L2Entry{header_.version >= 3 ? kZero : 0, 0};
    };
    while (bytes > 0) {
        uint64_t cur = bytes;
        while (co_await wait_for_dependencies(offset, cur)) {
            cur = bytes;
        }
        uint64_t idx = l2_index(offset);
        uint64_t n = std::min(size_to_clusters(cur), l2_entries_ - idx);
        Qcow2Cache::Ref l2;
        int ret = co_await get_l2_table(offset, false, l2);
        if (ret >= 0 && !l2 && !full && !unallocated_reads_zero() &&
            (header_.version >= 3 || extended_l2_)) {
            // As QEMU: the backing file must not show through a discarded
            // range, so even clusters without a table get zero entries.
            ret = co_await get_l2_table(offset, true, l2);
        }
        if (ret < 0) {
            co_return ret;
        }
        if (l2) {
            bool needs_change = false;
            for (uint64_t k = 0; k < n && !needs_change; k++) {
                L2Entry e = get_l2_entry(l2, idx + k);
                needs_change = !(discarded(e) == e);
            }
            if (needs_change && !(l1_[l1_index(offset)] & kCopied)) {
                l2.reset();
                ret = co_await get_l2_table(offset, true, l2);  // private copy first
                if (ret < 0) {
                    co_return ret;
                }
            }
            for (uint64_t k = 0; needs_change && k < n; k++) {
                L2Entry e = get_l2_entry(l2, idx + k);
                L2Entry now = discarded(e);
                if (now == e) {
                    continue;
                }
                set_l2_entry(l2, idx + k, now);
                ret = co_await release_l2_entry(e.entry, full ? FreeReason::Always : FreeReason::GuestDiscard);
                if (ret < 0) {
                    co_return ret;
                }
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
    co_return co_await write_dirty_entries(dirty_l1_, l1_, header_.l1_table_offset,
                                           uint64_t(header_.l1_size) * 8, META_L1);
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
    ret = claim_metadata(uint64_t(new_offset), new_bytes, META_L1);
    if (ret < 0) {
        err.set_errno(-ret, "Could not write the L1 table");
        co_return ret;
    }
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
        unregister_metadata(old_offset, old_bytes, META_L1);
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
    if (has_data_file()) {
        co_return -ENOTSUP;  // the data file holds clusters at their guest offsets only
    }
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
    ClusterType old = l2_cluster_type(get_l2_entry(l2, idx).entry);
    if (old != ClusterType::Unallocated && old != ClusterType::ZeroPlain) {
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
        // Compressed clusters have no subclusters: bitmap 0.
        set_l2_entry(l2, idx, {uint64_t(host) | kCompressed | (nb_csectors << csize_shift), 0});
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
    assert(lock_.locked());
    // Caller holds lock_.  Every unallocated cluster in [from, to) gets a
    // host cluster; host clusters are contiguous per allocation run (with
    // an external data file, each sits at its guest offset).  As in QEMU,
    // subcluster bitmaps stay as they are: preallocated subclusters are
    // unallocated ones with a host cluster.
    uint64_t offset = from & ~(cluster_size_ - 1);
    uint64_t host_end = 0;
    auto needs_host = [&](const L2Entry& e) {
        ClusterType t = l2_cluster_type(e.entry);
        return t == ClusterType::Unallocated || t == ClusterType::ZeroPlain;
    };
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
            need += needs_host(get_l2_entry(l2, idx + k));
        }
        l2.reset();
        if (need) {
            uint64_t next = 0;
            if (!has_data_file()) {
                int64_t host = co_await alloc_clusters(need << cluster_bits_);
                if (host < 0) {
                    err.set_errno(-int(host), "Could not allocate clusters");
                    co_return int(host);
                }
                next = uint64_t(host);
            }
            ret = co_await get_l2_table(offset, true, l2);
            if (ret < 0) {
                co_return ret;
            }
            for (uint64_t k = 0; k < n; k++) {
                L2Entry e = get_l2_entry(l2, idx + k);
                if (!needs_host(e)) {
                    continue;
                }
                uint64_t host = has_data_file() ? offset + (k << cluster_bits_) : next;
                set_l2_entry(l2, idx + k, {host | kCopied, e.bitmap});
                next = host + cluster_size_;
                host_end = std::max(host_end, next);
            }
            l2.reset();
        }
        offset += n << cluster_bits_;
    }
    if (host_end) {
        // The file must cover what the L2 tables now point to (a data file:
        // the disk, to its last byte); falloc and full also reserve (or
        // write) the space.
        BdrvChild* target = data_child();
        uint64_t needed = has_data_file() ? to : host_end;
        if (needed > target->bs->total_bytes()) {
            PreallocMode file_mode = mode == PreallocMode::Metadata ? PreallocMode::Off : mode;
            int ret = co_await bdrv_co_truncate(target, needed, false, file_mode, 0, err);
            if (ret < 0) {
                co_return ret;
            }
        }
    }
    co_return 0;
}

}  // namespace qemu::qcow2
