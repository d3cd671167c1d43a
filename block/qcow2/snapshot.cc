// qcow2 internal snapshots: the snapshot table, and taking, reverting to and
// deleting snapshots the way QEMU's qcow2 driver does, so that each program
// manages the other's snapshots.  A snapshot of a zoned image also keeps a
// copy of the zone state (docs/interop/qcow2-zoned.rst, "Internal
// snapshots"); docs/devel/qcow2.rst describes the design.
//
// Refcounts: a snapshot holds one reference to its L1 table, one to every L2
// table that L1 table names and, through each of those tables, one to every
// data cluster it maps: a cluster mapped by a table that two L1 tables share
// is referenced twice, as `qemu-img check` counts.  COPIED flags mark the
// active tables and clusters whose refcount is exactly 1; writes copy any
// other cluster first (cluster.cc).
//
// Crash safety.  Every step is synced before the next, and no header names a
// table whose clusters' refcounts are not on disk:
//   create: the snapshot's L1 table (and zone state copies) are written and
//     the refcounts of everything the active L1 table references raised,
//     COPIED flags cleared; then a new snapshot table is written and the
//     header switched to it (one sector); the old table is freed after;
//   goto: the refcounts of everything the snapshot references are raised, a
//     new active L1 table is written, the header switches to it (one
//     sector), and only then are the old table's references dropped;
//   delete: the snapshot table without the snapshot is switched to first,
//     the snapshot's references are dropped after.
// A crash in between leaves refcounts that are too high (leaks), never too
// low, and COPIED flags that may disagree with them; v3 images are marked
// dirty meanwhile so that the next open repairs both (see SnapshotOperation).  Zone
// state: see restore_zone_state.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <set>
#include <unordered_set>

#include "qcow2.h"
#include "qemu/bswap.h"

namespace qemu::qcow2 {

namespace {

// The table entry (docs/interop/qcow2.txt): 40 fixed bytes, extra data, ID,
// name; every entry starts 8-byte aligned.  QEMU's limits.
constexpr size_t kFixedEntryBytes = 40;
constexpr uint32_t kMaxExtraData = 1024;
constexpr uint64_t kMaxTableBytes = 1024 * 65536;
// Extra data: QEMU 7.2's fields...
constexpr size_t kExtraDiskSize = 8;
constexpr size_t kExtraIcount = 16;
constexpr size_t kKnownExtraBytes = 24;
// ...then ours, the zone state copies: magic, flags (0), three offsets.
constexpr size_t kZoneStateAt = 24;
constexpr uint32_t kZoneStateMagic = 0x7a6e7373;  // "znss"
constexpr size_t kZoneStateBytes = 32;

uint64_t align8(uint64_t n)
{
    return (n + 7) & ~uint64_t(7);
}

}  // namespace

bool parse_snapshot_table(const uint8_t* buf, size_t len, uint32_t count, uint64_t file_size,
                          uint32_t cluster_bits, std::vector<Snapshot>& out, uint64_t& table_bytes,
                          Error& err)
{
    out.clear();
    table_bytes = 0;
    uint64_t cluster_mask = (1ULL << cluster_bits) - 1;
    std::unordered_set<std::string> ids;
    size_t pos = 0;
    for (uint32_t i = 0; i < count; i++) {
        pos = align8(pos);
        if (pos > len || len - pos < kFixedEntryBytes) {
            err.set("Snapshot table is truncated");
            return false;
        }
        const uint8_t* e = buf + pos;
        Snapshot sn;
        sn.l1_table_offset = load_be64(e);
        sn.l1_size = load_be32(e + 8);
        uint16_t id_len = load_be16(e + 12);
        uint16_t name_len = load_be16(e + 14);
        sn.date_sec = load_be32(e + 16);
        sn.date_nsec = load_be32(e + 20);
        sn.vm_clock_nsec = load_be64(e + 24);
        sn.vm_state_size = load_be32(e + 32);
        uint32_t extra_len = load_be32(e + 36);
        if (extra_len > kMaxExtraData) {
            err.set("Too much extra metadata in snapshot table entry %u", i);
            return false;
        }
        size_t entry_len = kFixedEntryBytes + extra_len + id_len + name_len;
        if (len - pos < entry_len) {
            err.set("Snapshot table is truncated");
            return false;
        }
        if (pos + entry_len > kMaxTableBytes) {
            err.set("Snapshot table is too big");
            return false;
        }
        const uint8_t* extra = e + kFixedEntryBytes;
        sn.extra_data.assign(extra, extra + extra_len);
        if (extra_len >= kExtraDiskSize) {
            sn.vm_state_size = load_be64(extra);
        }
        if (extra_len >= kExtraIcount) {
            sn.disk_size = load_be64(extra + kExtraDiskSize);
        }
        if (extra_len >= kKnownExtraBytes) {
            sn.icount = load_be64(extra + kExtraIcount);
        }
        if (extra_len >= kZoneStateAt + kZoneStateBytes &&
            load_be32(extra + kZoneStateAt) == kZoneStateMagic) {
            if (load_be32(extra + kZoneStateAt + 4) != 0) {
                err.set("Snapshot table entry %u has unknown zone state flags", i);
                return false;
            }
            sn.zone_state = SnapshotZoneState{load_be64(extra + kZoneStateAt + 8),
                                              load_be64(extra + kZoneStateAt + 16),
                                              load_be64(extra + kZoneStateAt + 24)};
        }
        sn.id.assign(reinterpret_cast<const char*>(extra + extra_len), id_len);
        sn.name.assign(reinterpret_cast<const char*>(extra + extra_len + id_len), name_len);
        if ((sn.l1_table_offset & cluster_mask) || sn.l1_size > kMaxL1Bytes / 8 ||
            sn.l1_table_offset + uint64_t(sn.l1_size) * 8 > file_size + cluster_mask) {
            err.set("Snapshot L1 table offset invalid");
            return false;
        }
        // IDs name snapshots unambiguously (qemu-img snapshot -a, QEMU's
        // loadvm): a table that repeats one is corrupt.
        if (!ids.insert(sn.id).second) {
            err.set("Snapshot table is corrupt: the ID '%s' is used twice", sn.id.c_str());
            return false;
        }
        pos += entry_len;
        table_bytes = pos;
        out.push_back(std::move(sn));
    }
    return true;
}

namespace {

// An entry's extra data as written: every field we know, then whatever
// unknown data followed them.
std::vector<uint8_t> encode_extra_data(const Snapshot& sn)
{
    size_t known = sn.zone_state ? kZoneStateAt + kZoneStateBytes : kKnownExtraBytes;
    std::vector<uint8_t> extra(std::max(known, sn.extra_data.size()), 0);
    std::copy(sn.extra_data.begin(), sn.extra_data.end(), extra.begin());
    store_be64(extra.data(), sn.vm_state_size);
    store_be64(extra.data() + kExtraDiskSize, sn.disk_size);
    store_be64(extra.data() + kExtraIcount, sn.icount);
    if (const auto& z = sn.zone_state) {
        store_be32(extra.data() + kZoneStateAt, kZoneStateMagic);
        store_be32(extra.data() + kZoneStateAt + 4, 0);
        store_be64(extra.data() + kZoneStateAt + 8, z->wp_offset);
        store_be64(extra.data() + kZoneStateAt + 16, z->cond_offset);
        store_be64(extra.data() + kZoneStateAt + 24, z->zde_offset);
    }
    return extra;
}

}  // namespace

std::vector<uint8_t> serialize_snapshot_table(const std::vector<Snapshot>& table)
{
    std::vector<uint8_t> out;
    for (const Snapshot& sn : table) {
        out.resize(align8(out.size()), 0);
        std::vector<uint8_t> extra = encode_extra_data(sn);
        uint8_t fixed[kFixedEntryBytes] = {};
        store_be64(fixed, sn.l1_table_offset);
        store_be32(fixed + 8, sn.l1_size);
        store_be16(fixed + 12, uint16_t(sn.id.size()));
        store_be16(fixed + 14, uint16_t(sn.name.size()));
        store_be32(fixed + 16, sn.date_sec);
        store_be32(fixed + 20, sn.date_nsec);
        store_be64(fixed + 24, sn.vm_clock_nsec);
        // A VM state too big for this field makes older readers see a
        // disk-only snapshot rather than a truncated one (as QEMU).
        store_be32(fixed + 32, sn.vm_state_size <= UINT32_MAX ? uint32_t(sn.vm_state_size) : 0);
        store_be32(fixed + 36, uint32_t(extra.size()));
        out.insert(out.end(), fixed, fixed + sizeof(fixed));
        out.insert(out.end(), extra.begin(), extra.end());
        out.insert(out.end(), sn.id.begin(), sn.id.end());
        out.insert(out.end(), sn.name.begin(), sn.name.end());
    }
    return out;
}

namespace {

// Reads table bytes [table.size(), need) from the table at `offset`, and
// some more ahead (the entries' lengths are known one at a time).
Task<int> read_table_bytes(BdrvChild* file, uint64_t offset, uint64_t need,
                           std::vector<uint8_t>& table, Error& err)
{
    uint64_t file_size = file->bs->total_bytes();
    if (need > kMaxTableBytes + kFixedEntryBytes) {
        err.set("Snapshot table is too big");
        co_return -EFBIG;
    }
    if (offset + need > file_size) {
        err.set("Snapshot table is truncated");
        co_return -EINVAL;
    }
    uint64_t have = table.size();
    uint64_t want = std::min(std::max(need, have + 64 * KiB), file_size - offset);
    table.resize(want);
    IOVector q(table.data() + have, want - have);
    int ret = co_await bdrv_co_preadv(file, offset + have, want - have, q);
    if (ret < 0) {
        err.set_errno(-ret, "Failed to read snapshot table");
    }
    co_return ret;
}

// Is [offset, offset + size) a cluster-aligned area inside the file?
// The L2 tables an L1 table names.
std::vector<uint64_t> l2_table_offsets(const std::vector<uint64_t>& l1)
{
    std::vector<uint64_t> out;
    for (uint64_t e : l1) {
        if (e & kOffsetMask) {
            out.push_back(e & kOffsetMask);
        }
    }
    return out;
}

bool area_in_file(uint64_t offset, uint64_t size, uint64_t cluster_size, uint64_t file_size)
{
    uint64_t file_end = (file_size + cluster_size - 1) & ~(cluster_size - 1);
    return offset && offset % cluster_size == 0 && offset <= file_end && size <= file_end - offset;
}

}  // namespace

Task<int> Qcow2State::read_snapshot_table(Error& err)
{
    snapshots_.clear();
    snapshots_size_ = 0;
    uint32_t count = header_.nb_snapshots;
    if (!count) {
        co_return 0;
    }
    std::vector<uint8_t> table;
    uint64_t pos = 0;
    for (uint32_t i = 0; i < count; i++) {
        pos = align8(pos);
        if (table.size() < pos + kFixedEntryBytes) {
            int ret = co_await read_table_bytes(file(), header_.snapshots_offset,
                                                pos + kFixedEntryBytes, table, err);
            if (ret < 0) {
                co_return ret;
            }
        }
        const uint8_t* e = table.data() + pos;
        if (load_be32(e + 36) > kMaxExtraData) {
            err.set("Too much extra metadata in snapshot table entry %u", i);
            co_return -EFBIG;
        }
        pos += kFixedEntryBytes + uint64_t(load_be32(e + 36)) + load_be16(e + 12) + load_be16(e + 14);
        if (table.size() < pos) {
            int ret = co_await read_table_bytes(file(), header_.snapshots_offset, pos, table, err);
            if (ret < 0) {
                co_return ret;
            }
        }
    }
    uint64_t file_size = file()->bs->total_bytes();
    if (!parse_snapshot_table(table.data(), pos, count, file_size, cluster_bits_, snapshots_,
                              snapshots_size_, err)) {
        snapshots_.clear();
        co_return -EINVAL;
    }
    for (Snapshot& sn : snapshots_) {
        if (sn.extra_data.size() < kExtraIcount) {
            // Older writers: the image's size in whole sectors (QEMU).
            sn.disk_size = (header_.size + 511) / 512 * 512;
        }
        const auto& z = sn.zone_state;
        if (!z) {
            continue;
        }
        const auto& ext = header_.zoned;
        bool ok = ext && area_in_file(z->wp_offset, ext->meta_size, cluster_size_, file_size) &&
                  (!z->cond_offset || area_in_file(z->cond_offset, ext->nr_zones, cluster_size_, file_size)) &&
                  bool(z->zde_offset) == bool(ext->zd_extension_size) &&
                  (!z->zde_offset || area_in_file(z->zde_offset, ext->zde_size, cluster_size_, file_size));
        if (!ok) {
            snapshots_.clear();
            err.set("Image is corrupt: the zone state of snapshot '%s' is misplaced", sn.id.c_str());
            co_return -EINVAL;
        }
    }
    if (overlap_snapshot_l2_) {
        for (Snapshot& sn : snapshots_) {
            std::vector<uint64_t> l1;
            int ret = co_await read_table(sn.l1_table_offset, sn.l1_size, l1);
            if (ret < 0) {
                snapshots_.clear();
                err.set_errno(-ret, "Could not read the L1 table of snapshot '%s'", sn.id.c_str());
                co_return ret;
            }
            sn.l2_tables = l2_table_offsets(l1);
        }
    }
    co_return 0;
}

// Refcount increments made by an operation in progress, undone if it fails:
// the references they stand for never reached the disk, so dropping them
// at once is safe.
class RefcountJournal {
public:
    explicit RefcountJournal(Qcow2State& s) : s_(s) {}

    // One more reference to the clusters of [offset, offset + len).  One
    // cluster at a time, so that a failure (a refcount at its maximum)
    // knows which of them it already counted.
    Task<int> add(uint64_t offset, uint64_t len)
    {
        uint64_t first = offset >> s_.cluster_bits_;
        uint64_t end = ((offset + len - 1) >> s_.cluster_bits_) + 1;
        uint64_t c = first;
        int ret = 0;
        for (; c < end && ret >= 0; c++) {
            ret = co_await s_.update_refcount(c << s_.cluster_bits_, 1, 1);
        }
        uint64_t counted = ret < 0 ? c - 1 - first : end - first;
        if (counted) {
            ranges_.emplace_back(first << s_.cluster_bits_, counted << s_.cluster_bits_);
        }
        co_return ret;
    }
    // New clusters (refcount 1) that only the operation would reference.
    Task<int64_t> allocate(uint64_t len)
    {
        int64_t offset = co_await s_.alloc_clusters(len);
        if (offset >= 0) {
            ranges_.emplace_back(uint64_t(offset), len);
        }
        co_return offset;
    }
    Task<void> undo()
    {
        for (auto it = ranges_.rbegin(); it != ranges_.rend(); ++it) {
            co_await s_.update_refcount(it->first, it->second, -1);
        }
        ranges_.clear();
    }
    void commit() { ranges_.clear(); }

private:
    Qcow2State& s_;
    std::vector<std::pair<uint64_t, uint64_t>> ranges_;
};

// The clusters an L1 table references, one L2 table at a time: the data
// (and compressed) clusters the table maps, contiguous ones merged into one
// range, and last the table itself.  Offsets are validated as the read path
// validates them; a bad one marks the image corrupt.
class L1Walk {
public:
    L1Walk(Qcow2State& s, const std::vector<uint64_t>& l1)
        : s_(s), l1_(l1), table_(s.cluster_size_, 4096)
    {
    }

    // Fills `ranges` for the next L2 table: 1, or 0 when done, or -errno.
    Task<int> next(std::vector<std::pair<uint64_t, uint64_t>>& ranges)
    {
        ranges.clear();
        while (index_ < l1_.size() && !(l1_[index_] & kOffsetMask)) {
            index_++;
        }
        if (index_ == l1_.size()) {
            co_return 0;
        }
        uint64_t cs = s_.cluster_size_;
        uint64_t file_size = s_.file()->bs->total_bytes();
        l2_offset_ = l1_[index_] & kOffsetMask;
        if (!area_in_file(l2_offset_, cs, cs, file_size)) {
            co_return s_.signal_corruption(true, "L2 table offset %#llx unaligned or outside the "
                                           "image (L1 index: %#llx)", (unsigned long long)l2_offset_,
                                           (unsigned long long)index_);
        }
        IOVector q(table_.data(), cs);
        int ret = co_await bdrv_co_preadv(s_.file(), l2_offset_, cs, q);
        if (ret < 0) {
            co_return ret;
        }
        for (uint64_t j = 0; j < entries(); j++) {
            uint64_t e = entry(j);
            uint64_t host, len;
            ClusterType type = s_.l2_cluster_type(e);
            switch (type) {
            case ClusterType::Normal:
            case ClusterType::ZeroAlloc:
                host = e & kOffsetMask;
                len = cs;
                if (!area_in_file(host, cs, cs, file_size)) {
                    co_return s_.signal_corruption(true, "Cluster allocation offset %#llx unaligned "
                                                   "or outside the image (L2 offset: %#llx, L2 "
                                                   "index: %#llx)", (unsigned long long)host,
                                                   (unsigned long long)l2_offset_,
                                                   (unsigned long long)j);
                }
                break;
            case ClusterType::Compressed:
                s_.compressed_range(e, host, len);
                if (host + len >= file_size + cs) {
                    co_return s_.signal_corruption(true, "Compressed cluster at %#llx lies outside "
                                                   "the image (L2 offset: %#llx, L2 index: %#llx)",
                                                   (unsigned long long)host,
                                                   (unsigned long long)l2_offset_,
                                                   (unsigned long long)j);
                }
                break;
            default:
                continue;
            }
            if (!ranges.empty() && ranges.back().first + ranges.back().second == host &&
                type != ClusterType::Compressed) {
                ranges.back().second += len;
            } else {
                ranges.emplace_back(host, len);
            }
        }
        ranges.emplace_back(l2_offset_, cs);
        index_++;
        co_return 1;
    }

    // The table last returned by next(), as read, and its entries'
    // descriptors (the subcluster bitmaps of extended entries stay as
    // they are).
    uint64_t l2_offset() const { return l2_offset_; }
    uint8_t* table() const { return table_.data(); }
    uint64_t entries() const { return s_.cluster_size_ / s_.l2_entry_bytes(); }
    uint64_t entry(uint64_t j) const { return s_.load_l2_entry(table_.data(), j).entry; }
    void set_entry(uint64_t j, uint64_t e)
    {
        L2Entry full = s_.load_l2_entry(table_.data(), j);
        full.entry = e;
        s_.store_l2_entry(table_.data(), j, full);
    }

private:
    Qcow2State& s_;
    const std::vector<uint64_t>& l1_;
    AlignedBuffer table_;
    size_t index_ = 0;
    uint64_t l2_offset_ = 0;
};

// One more reference to everything `l1` references.  Its L2 tables are
// shared then, so their COPIED flags are cleared on disk, but only once the
// new refcounts are there (QEMU orders its L2 cache after its refcount
// cache for the same reason).  A cached copy of a rewritten table is
// dropped.
Task<int> Qcow2State::reference_l1(const std::vector<uint64_t>& l1, RefcountJournal& journal)
{
    std::vector<std::pair<uint64_t, uint64_t>> ranges;
    int ret;
    {
        L1Walk walk(*this, l1);
        while ((ret = co_await walk.next(ranges)) > 0) {
            for (auto [offset, len] : ranges) {
                ret = co_await journal.add(offset, len);
                if (ret < 0) {
                    co_return ret;
                }
            }
        }
    }
    if (ret >= 0) {
        ret = co_await sync_all_metadata();
    }
    L1Walk walk(*this, l1);
    while (ret >= 0 && (ret = co_await walk.next(ranges)) > 0) {
        bool changed = false;
        for (uint64_t j = 0; j < walk.entries(); j++) {
            uint64_t e = walk.entry(j);
            if (e & kCopied) {
                walk.set_entry(j, e & ~kCopied);
                changed = true;
            }
        }
        if (!changed) {
            continue;
        }
        ret = check_overlap(walk.l2_offset(), cluster_size_, META_L2);
        if (ret >= 0) {
            IOVector q(walk.table(), cluster_size_);
            ret = co_await bdrv_co_pwritev(file(), walk.l2_offset(), cluster_size_, q);
        }
        l2_cache_->discard(walk.l2_offset());
    }
    co_return ret;
}

// Checks everything `l1` references (as reference_l1 would) and, with
// `release`, queues the drop of one reference to each: applied by the next
// flush_metadata, after the metadata that stops referencing it is on disk.
// Tables of `l1` that the active L1 table does not name leave the cache.
Task<int> Qcow2State::walk_for_release(const std::vector<uint64_t>& l1, bool release)
{
    std::set<uint64_t> active;
    for (uint64_t e : l1_) {
        active.insert(e & kOffsetMask);
    }
    L1Walk walk(*this, l1);
    std::vector<std::pair<uint64_t, uint64_t>> ranges;
    int ret;
    while ((ret = co_await walk.next(ranges)) > 0) {
        if (!release) {
            continue;
        }
        for (auto [offset, len] : ranges) {
            free_clusters_later(offset, len, Qcow2State::FreeReason::Snapshot);
        }
        if (!active.count(walk.l2_offset())) {
            l2_cache_->discard(walk.l2_offset());
        }
    }
    co_return ret;
}

// Sets the COPIED flag of every table and cluster the active L1 table
// references exactly where its refcount is 1 (QEMU's
// qcow2_update_snapshot_refcount with addend 0), in the caches.
Task<int> Qcow2State::update_copied_flags()
{
    for (size_t i = 0; i < l1_.size(); i++) {
        uint64_t l2_offset = l1_[i] & kOffsetMask;
        if (!l2_offset) {
            continue;
        }
        uint64_t refcount;
        int ret = co_await get_refcount(l2_offset >> cluster_bits_, refcount);
        if (ret < 0) {
            co_return ret;
        }
        uint64_t l1_entry = refcount == 1 ? l1_[i] | kCopied : l1_[i] & ~kCopied;
        if (l1_entry != l1_[i]) {
            l1_[i] = l1_entry;
            dirty_l1_.push_back(uint32_t(i));
        }
        Qcow2Cache::Ref table;
        ret = co_await l2_cache_->get(l2_offset, true, table);
        if (ret < 0) {
            co_return ret;
        }
        for (uint64_t j = 0; j < cluster_size_ / l2_entry_bytes(); j++) {
            L2Entry entry = get_l2_entry(table, j);
            uint64_t e = entry.entry;
            uint64_t want = e & ~kCopied;
            ClusterType type = l2_cluster_type(e);
            if (type == ClusterType::Normal || type == ClusterType::ZeroAlloc) {
                ret = co_await get_refcount((e & kOffsetMask) >> cluster_bits_, refcount);
                if (ret < 0) {
                    co_return ret;
                }
                if (refcount == 1) {
                    want |= kCopied;
                }
            }
            if (want != e) {
                entry.entry = want;
                set_l2_entry(table, j, entry);
            }
        }
    }
    co_return 0;
}

// Makes `table` the snapshot table: written and synced, with its refcount,
// before the header names it; the old table is freed after.  When the
// header write itself fails, `header_unknown` is set: the disk may name
// either table, so the caller must keep the references of both.
Task<int> Qcow2State::write_snapshot_table(std::vector<Snapshot> table, bool& header_unknown)
{
    header_unknown = false;
    std::vector<uint8_t> bytes = serialize_snapshot_table(table);
    if (bytes.size() > kMaxTableBytes) {
        co_return -EFBIG;
    }
    uint64_t offset = 0;
    if (!bytes.empty()) {
        int64_t allocated = co_await alloc_clusters(bytes.size());
        if (allocated < 0) {
            co_return int(allocated);
        }
        offset = uint64_t(allocated);
        int ret = check_overlap(offset, bytes.size(), META_SNAPSHOT_TABLE);
        if (ret >= 0) {
            IOVector q(bytes.data(), bytes.size());
            ret = co_await bdrv_co_pwritev(file(), offset, bytes.size(), q);
        }
        if (ret >= 0) {
            ret = co_await sync_all_metadata();
        }
        if (ret < 0) {
            co_await update_refcount(offset, bytes.size(), -1);  // nothing names it
            co_return ret;
        }
    }
    uint64_t old_offset = header_.snapshots_offset;
    header_.nb_snapshots = uint32_t(table.size());
    header_.snapshots_offset = offset;
    int ret = co_await write_header_fields();
    if (ret >= 0) {
        ret = co_await bdrv_co_flush(file()->bs.get());
    }
    if (ret < 0) {
        header_unknown = true;
        header_.nb_snapshots = uint32_t(snapshots_.size());
        header_.snapshots_offset = old_offset;
        co_return ret;
    }
    free_clusters_later(old_offset, snapshots_size_, Qcow2State::FreeReason::Snapshot);
    for (Snapshot& sn : table) {
        sn.extra_data = encode_extra_data(sn);  // what is on disk now
    }
    snapshots_ = std::move(table);
    snapshots_size_ = bytes.size();
    rebuild_metadata_map();
    co_return 0;
}

Task<int> Qcow2State::read_l1_table(uint64_t offset, uint32_t size, std::vector<uint64_t>& out)
{
    out.assign(size, 0);
    if (!size) {
        co_return 0;
    }
    AlignedBuffer buf(uint64_t(size) * 8, 4096);
    IOVector q(buf.data(), uint64_t(size) * 8);
    int ret = co_await bdrv_co_preadv(file(), offset, uint64_t(size) * 8, q);
    for (uint32_t i = 0; ret >= 0 && i < size; i++) {
        out[i] = load_be64(buf.data() + uint64_t(i) * 8);
    }
    co_return ret;
}

// Writes an L1 table (host order in, big-endian out) to new clusters.
Task<int64_t> Qcow2State::write_new_l1_table(const std::vector<uint64_t>& l1, MetadataKind kind,
                                             RefcountJournal& journal)
{
    if (l1.empty()) {
        co_return 0;
    }
    uint64_t bytes = l1.size() * 8;
    int64_t offset = co_await journal.allocate(bytes);
    if (offset < 0) {
        co_return offset;
    }
    AlignedBuffer buf(bytes, 4096);
    for (size_t i = 0; i < l1.size(); i++) {
        store_be64(buf.data() + i * 8, l1[i]);
    }
    int ret = check_overlap(uint64_t(offset), bytes, kind);
    if (ret >= 0) {
        IOVector q(buf.data(), bytes);
        ret = co_await bdrv_co_pwritev(file(), uint64_t(offset), bytes, q);
    }
    co_return ret < 0 ? int64_t(ret) : offset;
}

// Copies `len` bytes of the file at `from` into new clusters.
Task<int64_t> Qcow2State::copy_to_new_clusters(uint64_t from, uint64_t len,
                                               RefcountJournal& journal)
{
    AlignedBuffer buf(len, 4096);
    IOVector q(buf.data(), len);
    int ret = co_await bdrv_co_preadv(file(), from, len, q);
    if (ret < 0) {
        co_return ret;
    }
    int64_t to = co_await journal.allocate(len);
    if (to < 0) {
        co_return to;
    }
    ret = check_overlap(uint64_t(to), len, META_SNAPSHOT_ZONED);
    if (ret >= 0) {
        ret = co_await bdrv_co_pwritev(file(), uint64_t(to), len, q);
    }
    co_return ret < 0 ? int64_t(ret) : to;
}

// The zone state as persisted (write pointers, conditions, descriptor
// extensions), copied for a snapshot.
Task<int> Qcow2State::capture_zone_state(SnapshotZoneState& out, RefcountJournal& journal)
{
    const ZonedExtension& ext = *header_.zoned;
    struct Area {
        uint64_t from, len;
        uint64_t* to;
    } areas[] = {{ext.meta_offset, ext.meta_size, &out.wp_offset},
                 {ext.cond_offset, ext.cond_size, &out.cond_offset},
                 {ext.zde_offset, ext.zde_size, &out.zde_offset}};
    for (const Area& a : areas) {
        if (!a.from) {
            continue;
        }
        int64_t to = co_await copy_to_new_clusters(a.from, a.len, journal);
        if (to < 0) {
            co_return int(to);
        }
        *a.to = uint64_t(to);
    }
    co_return 0;
}

// A snapshot's zone state, read and validated before anything changes.
struct Qcow2State::ZoneStateCopy {
    ZoneWpEntries wps;           // write pointer entries as stored
    std::vector<uint8_t> conds;  // all 0 when the snapshot had no array
    bool has_conds = false;
    std::vector<uint8_t> zde;    // empty without descriptor extensions
};

Task<int> Qcow2State::read_zone_state_copy(const SnapshotZoneState& copy, ZoneStateCopy& out,
                                           Error& err)
{
    std::unique_ptr<ZoneStateMachine> machine;  // validates like an open does
    int ret = co_await load_zone_state(copy.wp_offset, copy.cond_offset, out.wps, &out.conds,
                                       machine, err);
    if (ret < 0) {
        co_return ret;
    }
    out.has_conds = copy.cond_offset != 0;
    if (copy.zde_offset) {
        out.zde.resize(header_.zoned->zde_size);
        IOVector q(out.zde.data(), out.zde.size());
        ret = co_await bdrv_co_preadv(file(), copy.zde_offset, out.zde.size(), q);
        if (ret < 0) {
            err.set_errno(-ret, "Could not read the zone descriptor extensions");
        }
    }
    co_return ret;
}

// The write pointers of sequential zones that `target` needs persisted:
// each zone's target, or with `lower_only` the smaller of it and the live
// one.
std::vector<std::pair<uint32_t, uint64_t>> Qcow2State::wp_updates(const ZoneWpEntries& target,
                                                                  bool lower_only) const
{
    std::vector<std::pair<uint32_t, uint64_t>> out;
    for (uint32_t z = header_.zoned->conventional_zones; z < target.size(); z++) {
        uint64_t live = wp_on_disk_.get(z);
        uint64_t want = lower_only ? std::min(target.get(z), live) : target.get(z);
        if (want != live) {
            out.emplace_back(z, want);
        }
    }
    return out;
}

// Writes a snapshot's zone state over the live one and reloads the zone
// state machine from disk.  goto calls this in two steps around its switch
// of the active L1 table, so that a crash at any point leaves every zone's
// write pointer at or below data that is there: first the write pointers
// go down to the lower of the live and the snapshot's value (the data below
// that is present in both), then, once the snapshot's data is the active
// data, the descriptor extensions, the conditions and the snapshot's write
// pointers.  A crash between the steps leaves zones that read less than
// the snapshot held; applying the snapshot again completes it.
Task<int> Qcow2State::restore_zone_state(const ZoneStateCopy& copy, Error& err)
{
    ZonedExtension& ext = *header_.zoned;
    int ret = 0;
    if (!copy.zde.empty()) {
        ret = check_overlap(ext.zde_offset, ext.zde_size, META_ZONE_DESC);
        if (ret >= 0) {
            IOVector q(const_cast<uint8_t*>(copy.zde.data()), copy.zde.size());
            ret = co_await bdrv_co_pwritev(file(), ext.zde_offset, copy.zde.size(), q);
        }
        if (ret >= 0) {
            ret = co_await bdrv_co_flush(file()->bs.get());
        }
    }
    if (ret >= 0 && copy.has_conds) {
        ret = co_await zone_condition_array();
    }
    if (ret >= 0 && ext.cond_offset) {
        ret = check_overlap(ext.cond_offset, ext.cond_size, META_ZONE_COND);
        if (ret >= 0) {
            IOVector q(const_cast<uint8_t*>(copy.conds.data()), copy.conds.size());
            ret = co_await bdrv_co_pwritev(file(), ext.cond_offset, copy.conds.size(), q);
        }
        if (ret >= 0) {
            ret = co_await bdrv_co_flush(file()->bs.get());
        }
    }
    if (ret >= 0) {
        ret = co_await zoned_persist(wp_updates(copy.wps, false));
    }
    if (ret >= 0) {
        ret = co_await bdrv_co_flush(file()->bs.get());
    }
    if (ret < 0) {
        err.set_errno(-ret, "Could not restore the zone state");
        co_return ret;
    }
    co_return co_await zoned_open(err);
}

// The frame of every snapshot operation (caller holds lock_).  It needs an
// idle, writable, consistent node whose metadata is all on disk.  While it
// changes refcounts and COPIED flags, a crash can leave them disagreeing
// (refcounts too high, flags of clusters whose refcount changed): v3 images
// are marked dirty meanwhile, so that the next read-write open, ours or
// QEMU's, repairs that; v2 images have no dirty bit (qemu-img check -r all
// repairs them).
class SnapshotOperation {
public:
    explicit SnapshotOperation(Qcow2State& s) : s_(s) {}

    Task<int> begin()
    {
        if (s_.read_only()) {
            co_return -EACCES;
        }
        if (s_.corrupt_) {
            co_return -EIO;
        }
        bool busy = !s_.in_flight_.empty() || !s_.data_io_.empty();
        for (uint32_t z = 0; s_.zones_ && !busy && z < s_.zones_->geometry().nr_zones; z++) {
            busy = s_.zones_->busy(z);
        }
        if (busy) {
            co_return -EBUSY;
        }
        int ret = co_await s_.sync_all_metadata();
        if (ret >= 0 && s_.header_.version >= 3 && !s_.dirty_marked_) {
            ret = co_await s_.mark_dirty();
            marked_dirty_ = ret >= 0;
        }
        co_return ret;
    }

    // Ends the operation with its result: what it changed goes to disk and
    // the dirty bit goes.  A failure that may have left the disk unsure
    // (`settled` false) keeps the bit, for the repair.
    Task<int> finish(int ret, bool settled = true)
    {
        if (ret < 0 && !settled) {
            co_return ret;
        }
        int synced = co_await s_.sync_all_metadata();
        if (synced >= 0 && marked_dirty_) {
            synced = co_await s_.mark_clean();
        }
        co_return ret < 0 ? ret : synced;
    }

private:
    Qcow2State& s_;
    bool marked_dirty_ = false;
};

namespace {

// QEMU's rule for new IDs: one more than the largest numeric ID.
std::string next_snapshot_id(const std::vector<Snapshot>& table)
{
    unsigned long max_id = 0;
    for (const Snapshot& sn : table) {
        max_id = std::max(max_id, strtoul(sn.id.c_str(), nullptr, 10));
    }
    return std::to_string(max_id + 1);
}

}  // namespace

int Qcow2State::drv_snapshot_list(std::vector<SnapshotInfo>& out) const
{
    if (has_data_file()) {
        return -ENOTSUP;  // as QEMU: snapshots would not cover the data file
    }
    for (const Snapshot& sn : snapshots_) {
        out.push_back({sn.id, sn.name, sn.vm_state_size, sn.date_sec, sn.date_nsec, sn.vm_clock_nsec,
                       sn.icount});
    }
    return 0;
}

Task<int> Qcow2State::drv_snapshot_create(SnapshotInfo& info)
{
    if (snapshots_.size() >= kMaxSnapshots) {
        co_return -EFBIG;
    }
    if (has_data_file()) {
        co_return -ENOTSUP;
    }
    int ret = co_await drv_flush_to_os();  // zones' write pointers too
    if (ret < 0) {
        co_return ret;
    }
    co_await lock_.lock();
    SnapshotOperation op(*this);
    ret = co_await op.begin();
    if (ret < 0) {
        ret = co_await op.finish(ret);
        lock_.unlock();
        co_return ret;
    }
    Snapshot sn;
    sn.id = next_snapshot_id(snapshots_);
    sn.name = info.name;
    sn.date_sec = info.date_sec;
    sn.date_nsec = info.date_nsec;
    sn.vm_clock_nsec = info.vm_clock_nsec;
    sn.vm_state_size = info.vm_state_size;
    sn.icount = info.icount;
    sn.disk_size = total_bytes();
    sn.l1_size = uint32_t(l1_.size());
    if (overlap_snapshot_l2_) {
        sn.l2_tables = l2_table_offsets(l1_);
    }

    RefcountJournal journal(*this);
    int64_t l1_offset = co_await write_new_l1_table(l1_, META_SNAPSHOT_L1, journal);
    ret = l1_offset < 0 ? int(l1_offset) : 0;
    sn.l1_table_offset = l1_offset < 0 ? 0 : uint64_t(l1_offset);
    if (ret >= 0 && zones_) {
        sn.zone_state.emplace();
        ret = co_await capture_zone_state(*sn.zone_state, journal);
    }
    if (ret >= 0) {
        ret = co_await reference_l1(l1_, journal);
    }
    if (ret >= 0) {
        ret = co_await update_copied_flags();  // shared now: all cleared
    }
    if (ret >= 0) {
        ret = co_await sync_all_metadata();
    }
    bool header_unknown = false;
    if (ret >= 0) {
        std::vector<Snapshot> table = snapshots_;
        table.push_back(sn);
        ret = co_await write_snapshot_table(std::move(table), header_unknown);
    }
    if (ret < 0 && !header_unknown) {
        co_await journal.undo();
        co_await update_copied_flags();
    } else if (ret >= 0) {
        journal.commit();
        info.id = sn.id;
    }
    ret = co_await op.finish(ret, !header_unknown);
    lock_.unlock();
    co_return ret;
}

Task<int> Qcow2State::drv_snapshot_goto(const std::string& id_or_name, Error& err)
{
    if (has_data_file()) {
        co_return -ENOTSUP;
    }
    auto it = std::find_if(snapshots_.begin(), snapshots_.end(),
                           [&](const Snapshot& sn) { return sn.id == id_or_name; });
    if (it == snapshots_.end()) {
        it = std::find_if(snapshots_.begin(), snapshots_.end(),
                          [&](const Snapshot& sn) { return sn.name == id_or_name; });
    }
    if (it == snapshots_.end()) {
        co_return -ENOENT;
    }
    const Snapshot sn = *it;
    if (zones_ && !sn.zone_state) {
        err.set("Snapshot '%s' holds no zone state; it cannot be applied to a zoned image",
                sn.id.c_str());
        co_return -ENOTSUP;
    }
    if (zones_ && sn.disk_size != total_bytes()) {
        err.set("Image is corrupt: snapshot '%s' of a zoned image has a different size", sn.id.c_str());
        co_return -EINVAL;
    }
    uint64_t new_l1_size = std::max<uint64_t>(sn.l1_size, l1_size_for(sn.disk_size, cluster_bits_, extended_l2_));
    if (sn.disk_size > BDRV_MAX_LENGTH || new_l1_size > kMaxL1Bytes / 8) {
        err.set("Snapshot '%s' is too large", sn.id.c_str());
        co_return -EFBIG;
    }
    int ret = co_await drv_flush_to_os();
    if (ret < 0) {
        co_return ret;
    }
    co_await lock_.lock();
    SnapshotOperation op(*this);
    ret = co_await op.begin();
    std::vector<uint64_t> new_l1;
    if (ret >= 0) {
        ret = co_await read_l1_table(sn.l1_table_offset, sn.l1_size, new_l1);
    }
    ZoneStateCopy zone_copy;
    if (ret >= 0 && zones_) {
        ret = co_await read_zone_state_copy(*sn.zone_state, zone_copy, err);
    }

    // The snapshot's references, once more for the new active table, and
    // that table (its L2 tables are shared now: no COPIED flags).
    RefcountJournal journal(*this);
    if (ret >= 0) {
        ret = co_await reference_l1(new_l1, journal);
    }
    new_l1.resize(new_l1_size, 0);
    for (uint64_t& e : new_l1) {
        e &= ~kCopied;
    }
    int64_t l1_offset = 0;
    if (ret >= 0) {
        l1_offset = co_await write_new_l1_table(new_l1, META_L1, journal);
        ret = l1_offset < 0 ? int(l1_offset) : 0;
    }
    if (ret >= 0) {
        ret = co_await sync_all_metadata();
    }
    bool zones_lowered = false;
    if (ret >= 0 && zones_) {
        // Durable before the switch (zoned_persist syncs only before).
        ret = co_await zoned_persist(wp_updates(zone_copy.wps, true));
        zones_lowered = true;
        if (ret >= 0) {
            ret = co_await bdrv_co_flush(file()->bs.get());
        }
    }

    // The switch: one sector of the header names the new table and size.
    const uint64_t old_l1_offset = header_.l1_table_offset;
    const uint32_t old_l1_size = header_.l1_size;
    const uint64_t old_size = header_.size;
    if (ret >= 0) {
        header_.l1_table_offset = uint64_t(l1_offset);
        header_.l1_size = uint32_t(new_l1_size);
        header_.size = sn.disk_size;
        ret = co_await write_header_fields();
        if (ret >= 0) {
            ret = co_await bdrv_co_flush(file()->bs.get());
        }
        if (ret < 0) {
            header_.l1_table_offset = old_l1_offset;
            header_.l1_size = old_l1_size;
            header_.size = old_size;
            journal.commit();  // the disk may name either table now: leak rather than free
            ret = co_await op.finish(ret, false);
            lock_.unlock();
            co_return ret;
        }
    }
    if (ret < 0) {
        co_await journal.undo();
        if (zones_lowered) {
            Error ignored;
            co_await zoned_open(ignored);  // what the disk says now
        }
        ret = co_await op.finish(ret);
        lock_.unlock();
        co_return ret;
    }
    journal.commit();

    // The old table's references go once nothing on disk names them.
    std::vector<uint64_t> old_l1 = std::move(l1_);
    l1_ = std::move(new_l1);
    dirty_l1_.clear();
    ret = co_await walk_for_release(old_l1, true);
    free_clusters_later(old_l1_offset, uint64_t(old_l1_size) * 8, FreeReason::Snapshot);
    rebuild_metadata_map();
    set_total_bytes(sn.disk_size);
    if (ret >= 0) {
        ret = co_await sync_all_metadata();
    }
    if (ret >= 0) {
        ret = co_await update_copied_flags();
    }
    if (ret >= 0 && zones_) {
        ret = co_await restore_zone_state(zone_copy, err);
    }
    ret = co_await op.finish(ret, false);
    lock_.unlock();
    co_return ret;
}

Task<int> Qcow2State::drv_snapshot_delete(const std::string& id, const std::string& name,
                                          Error& err)
{
    if (has_data_file()) {
        co_return -ENOTSUP;
    }
    auto it = std::find_if(snapshots_.begin(), snapshots_.end(), [&](const Snapshot& sn) {
        return (id.empty() || sn.id == id) && (name.empty() || sn.name == name);
    });
    if (it == snapshots_.end()) {
        err.set("Can't find the snapshot");
        co_return -ENOENT;
    }
    size_t index = size_t(it - snapshots_.begin());
    const Snapshot sn = *it;
    int ret = co_await drv_flush_to_os();
    if (ret < 0) {
        err.set_errno(-ret, "Failed to remove snapshot from snapshot list");
        co_return ret;
    }
    co_await lock_.lock();
    SnapshotOperation op(*this);
    ret = co_await op.begin();
    std::vector<uint64_t> l1;
    if (ret >= 0) {
        ret = co_await read_l1_table(sn.l1_table_offset, sn.l1_size, l1);
    }
    if (ret >= 0) {
        ret = co_await walk_for_release(l1, false);  // what is bad fails here
    }
    bool header_unknown = false;  // either way the snapshot's references stay
    if (ret >= 0) {
        std::vector<Snapshot> table = snapshots_;
        table.erase(table.begin() + ptrdiff_t(index));
        ret = co_await write_snapshot_table(std::move(table), header_unknown);
    }
    if (ret < 0) {
        ret = co_await op.finish(ret, !header_unknown);
        lock_.unlock();
        err.set_errno(-ret, "Failed to remove snapshot from snapshot list");
        co_return ret;
    }

    // Nothing on disk names the snapshot any more: its references go.
    ret = co_await walk_for_release(l1, true);
    free_clusters_later(sn.l1_table_offset, uint64_t(sn.l1_size) * 8, FreeReason::Snapshot);
    if (const auto& z = sn.zone_state) {
        const ZonedExtension& ext = *header_.zoned;
        free_clusters_later(z->wp_offset, ext.meta_size, FreeReason::Snapshot);
        free_clusters_later(z->cond_offset, z->cond_offset ? ext.nr_zones : 0, FreeReason::Snapshot);
        free_clusters_later(z->zde_offset, z->zde_offset ? ext.zde_size : 0, FreeReason::Snapshot);
    }
    if (ret >= 0) {
        ret = co_await sync_all_metadata();
    }
    if (ret >= 0) {
        ret = co_await update_copied_flags();
    }
    ret = co_await op.finish(ret, false);
    lock_.unlock();
    if (ret < 0) {
        err.set_errno(-ret, "Failed to free the cluster and L1 table");
    }
    co_return ret;
}

// For qemu-img amend (amend.cc): the table written again, every
// entry in the current format.  Caller holds lock_.
Task<int> Qcow2State::rewrite_snapshot_table()
{
    bool header_unknown = false;
    co_return co_await write_snapshot_table(snapshots_, header_unknown);
}

void Qcow2State::check_snapshot_table(BdrvCheckResult& res, unsigned fix) const
{
    if (header_.version < 3) {
        return;
    }
    for (size_t i = 0; i < snapshots_.size(); i++) {
        if (snapshots_[i].extra_data.size() < kExtraIcount) {
            res.corruptions++;
            report_plain("%s snapshot table entry %zu is incomplete\n",
                    fix & BDRV_FIX_ERRORS ? "Repairing" : "ERROR", i);
        }
    }
}

// Caller holds lock_.
Task<int> Qcow2State::fix_snapshot_table(BdrvCheckResult& res, unsigned fix)
{
    if (!res.corruptions || !(fix & BDRV_FIX_ERRORS)) {
        co_return 0;
    }
    int ret = co_await rewrite_snapshot_table();
    if (ret < 0) {
        res.check_errors++;
        report_plain("ERROR failed to update snapshot table: %s\n", strerror(-ret));
        co_return ret;
    }
    res.corruptions_fixed += res.corruptions;
    res.corruptions = 0;
    co_return 0;
}

}  // namespace qemu::qcow2
