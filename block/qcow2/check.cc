// qcow2 consistency check and repair: what `qemu-img check` runs, and what
// repairs an image whose dirty bit says its refcounts may be stale (lazy
// refcounts after a crash).
//
// The check counts, for every host cluster, the references the metadata
// makes to it (header, L1 and L2 tables, data and compressed clusters,
// snapshots, the refcount table and blocks) and compares those counts with
// the refcounts on disk, as QEMU's qcow2 check does.  Its messages (on
// stderr) and counters are QEMU's, so `qemu-img check` prints the same.
//
// Repairs never drop a reference, so no guest data is lost: a refcount that
// is too high (a leak) is lowered, one that is too low is raised, COPIED
// flags are set to what the refcounts say.  When the refcount structure
// itself cannot be trusted (a referenced cluster with refcount 0, a broken
// refcount table entry), a new one is written from the computed counts into
// clusters that nothing references, then switched to by one header update;
// the old one is left as leaked clusters, which the leak repair frees.
// Repairs are written through to the file, and cached copies of what was
// rewritten behind the caches' back are dropped.
#include <cerrno>
#include <cinttypes>
#include <climits>
#include <cstdio>
#include <cstring>

#include "qcow2.h"
#include "qemu/bswap.h"

namespace qemu::qcow2 {

namespace {

constexpr uint64_t kRefTableOffsetMask = ~kRefTableReservedMask;

// Reference counts of host clusters held in memory in the image's own
// refcount format and always a whole number of refcount blocks long, so that
// a rebuild can write slices of it as refcount blocks.
class RefcountArray {
public:
    RefcountArray(uint32_t refcount_bits, uint32_t cluster_bits, uint32_t refcount_block_bits)
        : bits_(refcount_bits), cluster_bits_(cluster_bits), block_bits_(refcount_block_bits)
    {
    }

    // Clusters covered.
    uint64_t size() const { return clusters_; }
    // Grows to cover `clusters` clusters; new counts are zero.
    void grow(uint64_t clusters)
    {
        if (clusters <= clusters_) {
            return;
        }
        uint64_t blocks = (clusters + (1ULL << block_bits_) - 1) >> block_bits_;
        bytes_.resize(blocks << cluster_bits_, 0);
        clusters_ = clusters;
    }
    uint64_t get(uint64_t cluster) const
    {
        return cluster < clusters_ ? refcount_entry_get(bytes_.data(), cluster, bits_) : 0;
    }
    void set(uint64_t cluster, uint64_t value)
    {
        refcount_entry_set(bytes_.data(), cluster, bits_, value);
    }
    // Refcount block `index` as it would be written to disk.
    const uint8_t* block(uint64_t index) const { return bytes_.data() + (index << cluster_bits_); }
    void zero() { std::fill(bytes_.begin(), bytes_.end(), 0); }

private:
    uint32_t bits_;
    uint32_t cluster_bits_;
    uint32_t block_bits_;
    uint64_t clusters_ = 0;
    std::vector<uint8_t> bytes_;
};

}  // namespace

// One run of the check (a friend of Qcow2State).  The caller holds lock_ and has written all cached
// metadata, so that the disk and the caches agree.
class Checker {
public:
    Checker(Qcow2State& s, BdrvCheckResult& res, unsigned fix)
        : s_(s), res_(res), fix_(fix),
          counts_(s.refcount_bits_, s.cluster_bits_, s.refcount_block_bits_)
    {
    }

    Task<int> run();
    // Writes what the repairs left in the refcount cache, and drops cached
    // copies of tables that were rewritten directly.
    Task<int> finish_repairs();

private:
    // Walking the metadata.
    Task<int> calculate_refcounts(unsigned fix);
    int add_reference(uint64_t offset, uint64_t size);
    Task<int> check_l1(uint64_t l1_offset, uint32_t l1_size, bool active, unsigned fix);
    Task<int> check_l2(uint64_t l2_offset, bool active, unsigned fix);
    Task<int> zero_l2_entry(uint64_t l2_offset, uint8_t* table, uint64_t index, bool& overlap);
    Task<int> check_refblocks(unsigned fix);
    Task<int> count_bitmaps();

    // Comparing with the disk and repairing.
    Task<int> read_refcount(uint64_t cluster, uint64_t& refcount);
    Task<void> compare_refcounts(unsigned fix, uint64_t& highest);
    Task<int> check_copied_flags();

    // Rebuilding the refcount structure.
    int64_t alloc_in_memory(uint64_t count, uint64_t& first_free);
    Task<int> write_refblocks(uint64_t first, uint64_t end, std::vector<uint64_t>& reftable);
    Task<int> rebuild_refcount_structure();
    int check_rebuild_overlap(uint64_t offset, uint64_t len);

    uint64_t cluster_size() const { return s_.cluster_size_; }
    uint64_t file_length() const { return s_.file()->bs->total_bytes(); }

    Qcow2State& s_;
    BdrvCheckResult& res_;
    unsigned fix_;
    RefcountArray counts_;
    bool rebuild_ = false;  // the refcount structure must be rebuilt
    bool rebuilt_ = false;
    std::vector<uint64_t> rewritten_l2_;
};

// QEMU's qcow2_inc_refcounts_imrt(): one more reference to every cluster
// overlapping [offset, offset+size).
int Checker::add_reference(uint64_t offset, uint64_t size)
{
    if (size == 0) {
        return 0;
    }
    // The last cluster may be partly beyond the end of the file, no more.
    if (int64_t(offset + size - file_length()) >= int64_t(cluster_size())) {
        report_plain("ERROR: counting reference for region exceeding the end of the file by "
                "one cluster or more: offset 0x%" PRIx64 " size 0x%" PRIx64 "\n", offset, size);
        res_.corruptions++;
        return 0;
    }
    uint64_t first = offset >> s_.cluster_bits_;
    uint64_t last = (offset + size - 1) >> s_.cluster_bits_;
    for (uint64_t c = first; c <= last; c++) {
        counts_.grow(c + 1);
        uint64_t n = counts_.get(c);
        if (n == s_.refcount_max_) {
            report_plain("ERROR: overflow cluster offset=0x%" PRIx64 "\n", c << s_.cluster_bits_);
            report_plain("Use qemu-img amend to increase the refcount entry width or qemu-img "
                    "convert to create a clean copy if the image cannot be opened for writing\n");
            res_.corruptions++;
            continue;
        }
        counts_.set(c, n + 1);
    }
    return 0;
}

// Rewrites a preallocated zero cluster whose offset is unaligned as a plain
// zero cluster: it reads as zeroes either way.  With extended L2 entries the
// cluster loses its host offset and keeps its bitmap (which allocates
// nothing), as in QEMU.  `overlap` reports a failed overlap check, after
// which the table is not looked at any further.
Task<int> Checker::zero_l2_entry(uint64_t l2_offset, uint8_t* table, uint64_t index, bool& overlap)
{
    L2Entry e = s_.load_l2_entry(table, index);
    e.entry = s_.extended_l2_ ? 0 : kZero;
    s_.store_l2_entry(table, index, e);
    uint32_t entry_bytes = s_.l2_entry_bytes();
    uint64_t entry_offset = l2_offset + index * entry_bytes;
    int ret = s_.check_overlap(entry_offset, entry_bytes, META_L2);
    overlap = ret < 0;
    if (ret < 0) {
        report_plain("ERROR: Overlap check failed\n");
        res_.check_errors++;
        co_return ret;
    }
    AlignedBuffer buf(entry_bytes, 4096);
    memcpy(buf.data(), table + index * entry_bytes, entry_bytes);
    IOVector qiov(buf.data(), entry_bytes);
    ret = co_await bdrv_co_pwritev(s_.file(), entry_offset, entry_bytes, qiov);
    if (ret >= 0) {
        ret = co_await bdrv_co_flush(s_.file()->bs.get());
    }
    if (ret < 0) {
        report_plain("ERROR: Failed to overwrite L2 table entry: %s\n", strerror(-ret));
        res_.check_errors++;
        co_return ret;
    }
    rewritten_l2_.push_back(l2_offset);
    res_.corruptions--;
    res_.corruptions_fixed++;
    co_return 0;
}

Task<int> Checker::check_l2(uint64_t l2_offset, bool active, unsigned fix)
{
    AlignedBuffer table(cluster_size(), 4096);
    IOVector qiov(table.data(), cluster_size());
    int ret = co_await bdrv_co_preadv(s_.file(), l2_offset, cluster_size(), qiov);
    if (ret < 0) {
        report_plain("ERROR: I/O error in check_refcounts_l2\n");
        res_.check_errors++;
        co_return ret;
    }
    uint64_t next_contiguous = 0;
    for (uint64_t i = 0; i < s_.l2_entries_; i++) {
        L2Entry l2e = s_.load_l2_entry(table.data(), i);
        uint64_t entry = l2e.entry;
        ClusterType type = s_.l2_cluster_type(entry);
        if (type != ClusterType::Compressed && (entry & kL2ReservedMask)) {
            report_plain("ERROR found l2 entry with reserved bits set: %" PRIx64 "\n", entry);
            res_.corruptions++;
        }
        switch (type) {
        case ClusterType::Compressed: {
            uint32_t csize_shift = 62 - (s_.cluster_bits_ - 8);
            uint64_t coffset = entry & ((1ULL << csize_shift) - 1);
            if (entry & kCopied) {
                report_plain("ERROR: coffset=0x%" PRIx64 ": copied flag must never be set for "
                        "compressed clusters\n", coffset);
                entry &= ~kCopied;
                res_.corruptions++;
            }
            if (s_.has_data_file()) {
                report_plain("ERROR compressed cluster %" PRIu64 " with data file, entry=0x%" PRIx64
                        "\n", i, entry);
                res_.corruptions++;
                break;
            }
            if (l2e.bitmap) {
                report_plain("ERROR compressed cluster %" PRIu64 " with non-zero subcluster "
                        "allocation bitmap, entry=0x%" PRIx64 "\n", i, entry);
                res_.corruptions++;
                break;
            }
            // From the compressed data's first byte to the end of its
            // last sector.
            uint64_t sector_start, sectors_len;
            s_.compressed_range(entry, sector_start, sectors_len);
            add_reference(coffset, sector_start + sectors_len - coffset);
            if (active) {
                // Compressed clusters count as fragmented: neighbours share
                // sectors, which are read again for each.
                res_.allocated_clusters++;
                res_.compressed_clusters++;
                res_.fragmented_clusters++;
            }
            break;
        }
        case ClusterType::Normal:
        case ClusterType::ZeroAlloc: {
            uint64_t offset = entry & kOffsetMask;
            if ((l2e.bitmap >> 32) & l2e.bitmap) {
                res_.corruptions++;
                report_plain("ERROR offset=%" PRIx64 ": Allocated cluster has corrupted subcluster "
                        "allocation bitmap\n", offset);
            }
            if (s_.offset_into_cluster(offset)) {
                res_.corruptions++;
                bool holds_data = s_.extended_l2_ ? bool(l2e.bitmap & kBitmapAllAlloc)
                                                  : type == ClusterType::Normal;
                if (!holds_data) {
                    report_plain("%s offset=%" PRIx64 ": Preallocated cluster is not properly "
                            "aligned; L2 entry corrupted.\n",
                            fix & BDRV_FIX_ERRORS ? "Repairing" : "ERROR", offset);
                    if (fix & BDRV_FIX_ERRORS) {
                        bool overlap = false;
                        ret = co_await zero_l2_entry(l2_offset, table.data(), i, overlap);
                        if (overlap) {
                            co_return ret;
                        }
                        if (ret == 0) {
                            continue;  // nothing references a cluster now
                        }
                    }
                } else {
                    report_plain("ERROR offset=%" PRIx64 ": Data cluster is not properly "
                            "aligned; L2 entry corrupted.\n", offset);
                }
            }
            if (active) {
                res_.allocated_clusters++;
                if (next_contiguous && offset != next_contiguous) {
                    res_.fragmented_clusters++;
                }
                next_contiguous = offset + cluster_size();
            }
            // Data in an external data file is not refcounted.
            if (!s_.has_data_file()) {
                add_reference(offset, cluster_size());
            }
            break;
        }
        case ClusterType::ZeroPlain:
            break;
        case ClusterType::Unallocated:
            if (l2e.bitmap & kBitmapAllAlloc) {
                res_.corruptions++;
                report_plain("ERROR: Unallocated cluster has non-zero subcluster allocation map\n");
            }
            break;
        }
    }
    co_return 0;
}

Task<int> Checker::check_l1(uint64_t l1_offset, uint32_t l1_size, bool active, unsigned fix)
{
    if (l1_size == 0) {
        co_return 0;
    }
    uint64_t bytes = uint64_t(l1_size) * 8;
    add_reference(l1_offset, bytes);
    AlignedBuffer l1(bytes, 4096);
    IOVector qiov(l1.data(), bytes);
    int ret = co_await bdrv_co_preadv(s_.file(), l1_offset, bytes, qiov);
    if (ret < 0) {
        report_plain("ERROR: I/O error in check_refcounts_l1\n");
        res_.check_errors++;
        co_return ret;
    }
    for (uint32_t i = 0; i < l1_size; i++) {
        uint64_t entry = load_be64(l1.data() + uint64_t(i) * 8);
        if (!entry) {
            continue;
        }
        if (entry & kL1ReservedMask) {
            report_plain("ERROR found L1 entry with reserved bits set: %" PRIx64 "\n", entry);
            res_.corruptions++;
        }
        uint64_t l2_offset = entry & kOffsetMask;
        add_reference(l2_offset, cluster_size());
        if (s_.offset_into_cluster(l2_offset)) {
            report_plain("ERROR l2_offset=%" PRIx64 ": Table is not cluster aligned; L1 entry "
                    "corrupted\n", l2_offset);
            res_.corruptions++;
        }
        ret = co_await check_l2(l2_offset, active, fix);
        if (ret < 0) {
            co_return ret;
        }
    }
    co_return 0;
}

Task<int> Checker::check_refblocks(unsigned fix)
{
    for (uint64_t i = 0; i < s_.refcount_table_.size(); i++) {
        uint64_t entry = s_.refcount_table_[i];
        uint64_t offset = entry & kRefTableOffsetMask;
        uint64_t cluster = offset >> s_.cluster_bits_;
        if (entry & kRefTableReservedMask) {
            report_plain("ERROR refcount table entry %" PRIu64 " has reserved bits set\n", i);
            res_.corruptions++;
            rebuild_ = true;
            continue;
        }
        if (s_.offset_into_cluster(offset)) {
            report_plain("ERROR refcount block %" PRIu64 " is not cluster aligned; refcount "
                    "table entry corrupted\n", i);
            res_.corruptions++;
            rebuild_ = true;
            continue;
        }
        if (cluster >= counts_.size()) {
            res_.corruptions++;
            report_plain("%s refcount block %" PRIu64 " is outside image\n",
                    fix & BDRV_FIX_ERRORS ? "Repairing" : "ERROR", i);
            if (!(fix & BDRV_FIX_ERRORS)) {
                continue;
            }
            // Grow the file over the block: it then reads as zeroes, and
            // the refcounts it should hold are rebuilt.
            Error err;
            int ret = -EINVAL;
            if (offset <= uint64_t(INT64_MAX) - cluster_size()) {
                ret = co_await bdrv_co_truncate(s_.file(), offset + cluster_size(), false,
                                                PreallocMode::Off, 0, err);
                if (ret < 0) {
                    error_report("%s", err.message.c_str());
                }
            }
            if (ret >= 0) {
                counts_.grow(s_.size_to_clusters(file_length()));
                ret = cluster < counts_.size() ? 0 : -EINVAL;
            }
            if (ret < 0) {
                rebuild_ = true;
                report_plain("ERROR could not resize image: %s\n", strerror(-ret));
                continue;
            }
            res_.corruptions--;
            res_.corruptions_fixed++;
            add_reference(offset, cluster_size());
            continue;
        }
        if (offset != 0) {
            add_reference(offset, cluster_size());
            if (counts_.get(cluster) != 1) {
                report_plain("ERROR refcount block %" PRIu64 " refcount=%" PRIu64 "\n", i,
                        counts_.get(cluster));
                res_.corruptions++;
                rebuild_ = true;
            }
        }
    }
    co_return 0;
}

Task<int> Checker::calculate_refcounts(unsigned fix)
{
    add_reference(0, cluster_size());  // the header
    int ret = co_await check_l1(s_.header_.l1_table_offset, s_.header_.l1_size, true, fix);
    if (ret < 0) {
        co_return ret;
    }
    for (const Snapshot& sn : s_.snapshots_) {
        ret = co_await check_l1(sn.l1_table_offset, sn.l1_size, false, fix);
        if (ret < 0) {
            co_return ret;
        }
    }
    add_reference(s_.header_.snapshots_offset, s_.snapshots_size_);
    add_reference(s_.header_.refcount_table_offset, s_.refcount_table_.size() * 8);
    if (const auto& z = s_.header_.zoned) {
        // Zoned metadata: write pointers, conditions, descriptor extensions,
        // and the snapshots' copies of them.
        add_reference(z->meta_offset, z->meta_size);
        add_reference(z->cond_offset, z->cond_size);
        add_reference(z->zde_offset, z->zde_size);
        for (const Snapshot& sn : s_.snapshots_) {
            if (const auto& copy = sn.zone_state) {
                add_reference(copy->wp_offset, z->meta_size);
                add_reference(copy->cond_offset, copy->cond_offset ? uint64_t(z->nr_zones) : 0);
                add_reference(copy->zde_offset, copy->zde_offset ? z->zde_size : 0);
            }
        }
    }
    ret = co_await count_bitmaps();
    if (ret < 0) {
        co_return ret;
    }
    co_return co_await check_refblocks(fix);
}

// Persistent dirty bitmaps reference their directory, their tables and the
// clusters holding their data, but only while the extension is valid (the
// autoclear bit set; open checked the rest).  A directory or table that
// QEMU would not load counts as a corruption and ends the check, as in
// QEMU (qcow2_check_bitmaps_refcounts()).
Task<int> Checker::count_bitmaps()
{
    const BitmapsExtension& ext = s_.bitmaps_ext_;
    if (ext.nb_bitmaps == 0) {
        co_return 0;
    }
    add_reference(ext.dir_offset, ext.dir_size);
    AlignedBuffer dir(ext.dir_size, 4096);
    IOVector dir_qiov(dir.data(), ext.dir_size);
    std::vector<BitmapEntry> bitmaps;
    Error err;
    int read = co_await bdrv_co_preadv(s_.file(), ext.dir_offset, ext.dir_size, dir_qiov);
    if (read < 0 ||
        !parse_bitmap_directory(dir.data(), ext.dir_size, ext.nb_bitmaps, s_.cluster_bits_,
                                s_.total_bytes(), bitmaps, err)) {
        res_.corruptions++;
        co_return -EINVAL;
    }
    for (const BitmapEntry& bm : bitmaps) {
        uint64_t bytes = uint64_t(bm.table_size) * 8;
        add_reference(bm.table_offset, bytes);
        AlignedBuffer buf(bytes, 4096);
        IOVector qiov(buf.data(), bytes);
        int ret = co_await bdrv_co_preadv(s_.file(), bm.table_offset, bytes, qiov);
        if (ret < 0) {
            res_.corruptions++;
            co_return ret;
        }
        std::vector<uint64_t> data_offsets;
        for (uint32_t i = 0; i < bm.table_size; i++) {
            uint64_t entry = load_be64(buf.data() + uint64_t(i) * 8);
            // Clusters past the end of the file are the refcount check's
            // business, as for any other reference.
            if (!bitmap_table_entry_valid(entry, s_.cluster_bits_, UINT64_MAX / 2)) {
                res_.corruptions++;
                co_return -EINVAL;
            }
            if (entry & kBitmapTableOffsetMask) {
                data_offsets.push_back(entry & kBitmapTableOffsetMask);
            }
        }
        for (uint64_t offset : data_offsets) {
            add_reference(offset, cluster_size());
        }
    }
    co_return 0;
}

// QEMU's qcow2_get_refcount(), except that a broken refcount table entry is
// reported without marking the image corrupt on disk: the repair may still
// rebuild the structure.
Task<int> Checker::read_refcount(uint64_t cluster, uint64_t& refcount)
{
    refcount = 0;
    uint64_t index = cluster >> s_.refcount_block_bits_;
    if (index >= s_.refcount_table_.size()) {
        co_return 0;
    }
    uint64_t block_offset = s_.refcount_table_[index] & kRefTableOffsetMask;
    if (!block_offset) {
        co_return 0;
    }
    if (s_.offset_into_cluster(block_offset)) {
        co_return s_.signal_corruption(false, "Refblock offset %#" PRIx64 " unaligned (reftable "
                                       "index: %#" PRIx64 ")", block_offset, index);
    }
    Qcow2Cache::Ref block;
    int ret = co_await s_.refblock_cache_->get(block_offset, true, block);
    if (ret < 0) {
        co_return ret;
    }
    refcount = refcount_entry_get(block.data(), cluster & (s_.refcount_block_entries_ - 1),
                                  s_.refcount_bits_);
    co_return 0;
}

Task<void> Checker::compare_refcounts(unsigned fix, uint64_t& highest)
{
    highest = 0;
    for (uint64_t i = 0; i < counts_.size(); i++) {
        uint64_t on_disk;
        int ret = co_await read_refcount(i, on_disk);
        if (ret < 0) {
            report_plain("Can't get refcount for cluster %" PRIu64 ": %s\n", i, strerror(-ret));
            res_.check_errors++;
            continue;
        }
        uint64_t computed = counts_.get(i);
        if (on_disk > 0 || computed > 0) {
            highest = i;
        }
        if (on_disk == computed) {
            continue;
        }
        // A referenced cluster that claims to be free is not raised: the
        // refcount block holding it cannot be trusted, and the structure
        // is rebuilt instead.
        int* fixed = nullptr;
        if (on_disk == 0) {
            rebuild_ = true;
        } else if (on_disk > computed && (fix & BDRV_FIX_LEAKS)) {
            fixed = &res_.leaks_fixed;
        } else if (on_disk < computed && (fix & BDRV_FIX_ERRORS)) {
            fixed = &res_.corruptions_fixed;
        }
        report_plain("%s cluster %" PRIu64 " refcount=%" PRIu64 " reference=%" PRIu64 "\n",
                fixed ? "Repairing" : on_disk < computed ? "ERROR" : "Leaked", i, on_disk, computed);
        if (fixed) {
            int64_t addend = on_disk > computed ? -int64_t(on_disk - computed) : int64_t(computed - on_disk);
            ret = co_await s_.update_refcount(i << s_.cluster_bits_, 1, addend);
            if (ret >= 0 && computed == 0) {
                // Nothing references the cluster: give its space back, as
                // QEMU discards it (and reads of a discarded cluster
                // return zeroes, here too).
                co_await bdrv_co_pwrite_zeroes(s_.file(), i << s_.cluster_bits_, cluster_size(),
                                               BDRV_REQ_MAY_UNMAP);
            }
            if (ret >= 0) {
                (*fixed)++;
                continue;
            }
        }
        if (on_disk < computed) {
            res_.corruptions++;
        } else {
            res_.leaks++;
        }
    }
}

// COPIED must be set exactly on the L1 and L2 entries whose cluster has
// refcount 1 (writes go in place only there).
Task<int> Checker::check_copied_flags()
{
    bool repair;
    if (fix_ & BDRV_FIX_ERRORS) {
        repair = true;
    } else if (fix_ & BDRV_FIX_LEAKS) {
        // The refcounts are right only if nothing else is wrong.
        repair = !res_.check_errors && !res_.corruptions && !res_.leaks;
    } else {
        repair = false;
    }
    AlignedBuffer table(cluster_size(), 4096);
    for (size_t i = 0; i < s_.l1_.size(); i++) {
        uint64_t l1_entry = s_.l1_[i];
        uint64_t l2_offset = l1_entry & kOffsetMask;
        if (!l2_offset) {
            continue;
        }
        uint64_t refcount;
        if (co_await read_refcount(l2_offset >> s_.cluster_bits_, refcount) < 0) {
            continue;  // reported by compare_refcounts already
        }
        if ((refcount == 1) != bool(l1_entry & kCopied)) {
            res_.corruptions++;
            report_plain("%s OFLAG_COPIED L2 cluster: l1_index=%zu l1_entry=%" PRIx64
                    " refcount=%" PRIu64 "\n", repair ? "Repairing" : "ERROR", i, l1_entry, refcount);
            if (repair) {
                s_.l1_[i] = refcount == 1 ? l1_entry | kCopied : l1_entry & ~kCopied;
                s_.dirty_l1_.push_back(uint32_t(i));
                int ret = co_await s_.write_l1_entries();
                if (ret < 0) {
                    res_.check_errors++;
                    co_return ret;
                }
                res_.corruptions--;
                res_.corruptions_fixed++;
            }
        }

        IOVector qiov(table.data(), cluster_size());
        int ret = co_await bdrv_co_preadv(s_.file(), l2_offset, cluster_size(), qiov);
        if (ret < 0) {
            report_plain("ERROR: Could not read L2 table: %s\n", strerror(-ret));
            res_.check_errors++;
            co_return ret;
        }
        int changed = 0;
        for (uint64_t j = 0; j < s_.l2_entries_; j++) {
            L2Entry l2e = s_.load_l2_entry(table.data(), j);
            uint64_t entry = l2e.entry;
            ClusterType type = s_.l2_cluster_type(entry);
            if (type != ClusterType::Normal && type != ClusterType::ZeroAlloc) {
                continue;
            }
            if (s_.has_data_file()) {
                refcount = 1;  // implicitly: guest clusters map 1:1
            } else if (co_await read_refcount((entry & kOffsetMask) >> s_.cluster_bits_, refcount) < 0) {
                continue;
            }
            if ((refcount == 1) != bool(entry & kCopied)) {
                res_.corruptions++;
                report_plain("%s OFLAG_COPIED data cluster: l2_entry=%" PRIx64 " refcount=%" PRIu64
                        "\n", repair ? "Repairing" : "ERROR", entry, refcount);
                if (repair) {
                    l2e.entry = refcount == 1 ? entry | kCopied : entry & ~kCopied;
                    s_.store_l2_entry(table.data(), j, l2e);
                    changed++;
                }
            }
        }
        if (changed) {
            ret = s_.check_overlap(l2_offset, cluster_size(), META_L2);
            if (ret < 0) {
                report_plain("ERROR: Could not write L2 table; metadata overlap check failed: "
                        "%s\n", strerror(-ret));
                res_.check_errors++;
                co_return ret;
            }
            ret = co_await bdrv_co_pwritev(s_.file(), l2_offset, cluster_size(), qiov);
            if (ret < 0) {
                report_plain("ERROR: Could not write L2 table: %s\n", strerror(-ret));
                res_.check_errors++;
                co_return ret;
            }
            rewritten_l2_.push_back(l2_offset);
            res_.corruptions -= changed;
            res_.corruptions_fixed += changed;
        }
    }
    co_return 0;
}

// Allocates `count` contiguous clusters in the in-memory counts (refcount
// 1), at or after `first_free`, growing the array past the end of the image
// if needed.  `first_free` moves to the first free cluster seen.
int64_t Checker::alloc_in_memory(uint64_t count, uint64_t& first_free)
{
    uint64_t cluster = first_free;
    uint64_t run = 0;
    bool first_gap = true;
    for (; cluster < counts_.size() && run < count; cluster++) {
        if (counts_.get(cluster) == 0) {
            run++;
            if (first_gap) {
                first_free = cluster;
                first_gap = false;
            }
        } else {
            run = 0;
        }
    }
    if (run < count) {
        // The run continues into clusters past the end, which are free.
        counts_.grow(cluster + count - run);
    }
    cluster -= run;
    for (uint64_t i = 0; i < count; i++) {
        counts_.set(cluster + i, 1);
    }
    return int64_t(cluster << s_.cluster_bits_);
}

// The old refcount structure is being replaced, so the clusters it occupies
// may be reused (those the walk found referenced are allocated in memory
// and are never chosen); anything else must not be overwritten.
int Checker::check_rebuild_overlap(uint64_t offset, uint64_t len)
{
    return s_.check_overlap_mask(offset, len, kind_bit(META_REFCOUNT_BLOCK) | kind_bit(META_REFCOUNT_TABLE));
}

// Writes a refcount block for every block of clusters in [first, end) that
// has a cluster in use, allocating blocks in memory as needed (their own
// refcounts included).  Entries already in `reftable` are reused; the table
// grows in whole clusters.  Returns whether it grew, or -errno.
Task<int> Checker::write_refblocks(uint64_t first, uint64_t end, std::vector<uint64_t>& reftable)
{
    uint64_t first_free = 0;
    bool grown = false;
    AlignedBuffer buf(cluster_size(), 4096);
    for (uint64_t cluster = first; cluster < end; cluster++) {
        if (counts_.get(cluster) == 0) {
            continue;
        }
        uint64_t index = cluster >> s_.refcount_block_bits_;
        uint64_t block_start = index << s_.refcount_block_bits_;
        uint64_t block_offset;
        if (index < reftable.size() && reftable[index]) {
            block_offset = reftable[index];
        } else {
            // Never inside a block that was written already.
            first_free = std::max(first_free, block_start);
            block_offset = uint64_t(alloc_in_memory(1, first_free));
            uint64_t block_cluster = block_offset >> s_.cluster_bits_;
            if (block_cluster >= end) {
                end = block_cluster + 1;  // the block holding its refcount
            }
            if (index >= reftable.size()) {
                uint64_t per_cluster = cluster_size() / 8;
                reftable.resize((index + per_cluster) / per_cluster * per_cluster, 0);
                grown = true;
            }
            reftable[index] = block_offset;
        }
        int ret = check_rebuild_overlap(block_offset, cluster_size());
        if (ret >= 0) {
            memcpy(buf.data(), counts_.block(index), cluster_size());
            IOVector qiov(buf.data(), cluster_size());
            ret = co_await bdrv_co_pwritev(s_.file(), block_offset, cluster_size(), qiov);
        }
        if (ret < 0) {
            report_plain("ERROR writing refblock: %s\n", strerror(-ret));
            co_return ret;
        }
        cluster = block_start + s_.refcount_block_entries_ - 1;  // this block is done
    }
    co_return grown;
}

// QEMU's rebuild_refcount_structure(): refcount blocks first, then a table
// placed wherever it fits; placing the table changes the counts of the
// blocks covering it, which are written again, and if that needs more
// blocks than the table has room for, the table is placed anew.
Task<int> Checker::rebuild_refcount_structure()
{
    for (uint64_t entry : s_.refcount_table_) {
        if (entry & kRefTableOffsetMask) {
            s_.refblock_cache_->discard(entry & kRefTableOffsetMask);
        }
    }
    std::vector<uint64_t> reftable;
    int ret = co_await write_refblocks(0, counts_.size(), reftable);
    if (ret < 0) {
        res_.check_errors++;
        co_return ret;
    }
    uint64_t table_offset;
    uint64_t table_clusters;
    do {
        table_clusters = s_.size_to_clusters(reftable.size() * 8);
        uint64_t first_free = 0;
        table_offset = uint64_t(alloc_in_memory(table_clusters, first_free));
        uint64_t start = table_offset >> s_.cluster_bits_;
        ret = co_await write_refblocks(start, start + table_clusters, reftable);
        if (ret < 0) {
            res_.check_errors++;
            co_return ret;
        }
    } while (ret);

    uint64_t table_bytes = reftable.size() * 8;
    AlignedBuffer buf(table_bytes, 4096);
    for (size_t i = 0; i < reftable.size(); i++) {
        store_be64(buf.data() + i * 8, reftable[i]);
    }
    ret = check_rebuild_overlap(table_offset, table_bytes);
    if (ret >= 0) {
        IOVector qiov(buf.data(), table_bytes);
        ret = co_await bdrv_co_pwritev(s_.file(), table_offset, table_bytes, qiov);
    }
    if (ret >= 0) {
        // The new structure is complete on disk before the header names it.
        ret = co_await bdrv_co_flush(s_.file()->bs.get());
    }
    if (ret < 0) {
        report_plain("ERROR writing reftable: %s\n", strerror(-ret));
        co_return ret;
    }
    Header old = s_.header_;
    s_.header_.refcount_table_offset = table_offset;
    s_.header_.refcount_table_clusters = uint32_t(table_clusters);
    ret = co_await s_.write_header_fields();
    if (ret >= 0) {
        ret = co_await bdrv_co_flush(s_.file()->bs.get());
    }
    if (ret < 0) {
        s_.header_ = old;
        report_plain("ERROR setting reftable: %s\n", strerror(-ret));
        co_return ret;
    }
    s_.refcount_table_ = std::move(reftable);
    s_.dirty_reftable_.clear();
    s_.rebuild_metadata_map();
    rebuilt_ = true;
    co_return 0;
}

// QEMU's qcow2_check_refcounts().
Task<int> Checker::run()
{
    uint64_t nb_clusters = s_.size_to_clusters(file_length());
    if (nb_clusters > uint64_t(INT_MAX)) {
        res_.check_errors++;
        co_return -EFBIG;
    }
    res_.total_clusters = s_.size_to_clusters(s_.total_bytes());
    counts_.grow(nb_clusters);
    int ret = co_await calculate_refcounts(fix_);
    if (ret < 0) {
        co_return ret;
    }

    // The first comparison only reports; repairs compare again.
    BdrvCheckResult before_compare = res_;
    uint64_t highest;
    co_await compare_refcounts(0, highest);

    if (rebuild_ && (fix_ & BDRV_FIX_ERRORS)) {
        BdrvCheckResult before_rebuild = res_;
        int fresh_leaks = 0;
        report_plain("Rebuilding refcount structure\n");
        ret = co_await rebuild_refcount_structure();
        if (ret < 0) {
            co_return ret;
        }
        // Count again against the new structure.
        res_.corruptions = 0;
        res_.leaks = 0;
        res_.allocated_clusters = 0;
        res_.fragmented_clusters = 0;
        res_.compressed_clusters = 0;
        rebuild_ = false;
        counts_.zero();
        ret = co_await calculate_refcounts(0);
        if (ret < 0) {
            co_return ret;
        }
        if (fix_ & BDRV_FIX_LEAKS) {
            // The old structure is leaked now; what cannot be freed is a
            // leak of the rebuild's own making.
            BdrvCheckResult saved = res_;
            res_ = BdrvCheckResult{};
            co_await compare_refcounts(BDRV_FIX_LEAKS, highest);
            if (rebuild_) {
                report_plain("ERROR rebuilt refcount structure is still broken\n");
            }
            fresh_leaks = res_.leaks;
            res_ = saved;
        }
        if (res_.corruptions < before_rebuild.corruptions) {
            res_.corruptions_fixed += before_rebuild.corruptions - res_.corruptions;
        }
        if (res_.leaks < before_rebuild.leaks) {
            res_.leaks_fixed += before_rebuild.leaks - res_.leaks;
        }
        res_.leaks += fresh_leaks;
    } else if (fix_) {
        if (rebuild_) {
            report_plain("ERROR need to rebuild refcount structures\n");
            res_.check_errors++;
            co_return -EIO;
        }
        if (res_.leaks || res_.corruptions) {
            res_ = before_compare;
            co_await compare_refcounts(fix_, highest);
        }
    }

    ret = co_await check_copied_flags();
    if (ret < 0) {
        co_return ret;
    }
    res_.image_end_offset = (highest + 1) * cluster_size();
    co_return 0;
}

Task<int> Checker::finish_repairs()
{
    int ret = co_await s_.refblock_cache_->write_back();
    if (ret >= 0) {
        ret = co_await s_.write_reftable_entries();
    }
    if (ret >= 0) {
        ret = co_await bdrv_co_flush(s_.file()->bs.get());
    }
    for (uint64_t offset : rewritten_l2_) {
        s_.l2_cache_->discard(offset);
    }
    if (rebuilt_) {
        // The allocator's hints may point into the old structure, and the
        // new one may lie past what was the end of the file.
        s_.free_cluster_index_ = 0;
        s_.free_byte_offset_ = 0;
        s_.fresh_from_ = std::max(s_.fresh_from_, s_.size_to_clusters(file_length()));
    }
    co_return ret;
}

// Clears the corrupt bit once a repair has left nothing wrong.
Task<int> Qcow2State::mark_consistent()
{
    corrupt_ = false;
    if (!(header_.incompatible_features & INCOMPAT_CORRUPT)) {
        co_return 0;
    }
    header_.incompatible_features &= ~INCOMPAT_CORRUPT;
    int ret = co_await write_header_fields();
    if (ret >= 0) {
        ret = co_await bdrv_co_flush(file()->bs.get());
    }
    co_return ret;
}

Task<int> Qcow2State::drv_check(BdrvCheckResult& result, unsigned fix)
{
    result = BdrvCheckResult{};
    co_await lock_.lock();
    // Clusters of an allocation in progress are not referenced yet; they
    // must not look leaked.
    while (!in_flight_.empty()) {
        std::shared_ptr<InFlightAlloc> alloc = in_flight_.front();
        lock_.unlock();
        co_await alloc->waiters.wait();
        co_await lock_.lock();
    }
    // The check reads the disk: everything cached goes there first,
    // refcounts too when they are lazy.
    int ret = co_await sync_all_metadata();
    if (ret < 0) {
        result.check_errors++;
        lock_.unlock();
        co_return ret;
    }

    // As in QEMU: the snapshot table first, repaired after the refcounts
    // (its rewrite allocates clusters), its counts added at the end.
    BdrvCheckResult snapshot_result;
    check_snapshot_table(snapshot_result, fix);
    Checker checker(*this, result, fix);
    ret = co_await checker.run();
    if (fix) {
        int r = co_await checker.finish_repairs();
        if (ret >= 0 && r < 0) {
            result.check_errors++;
            ret = r;
        }
    }
    if (ret >= 0) {
        ret = co_await fix_snapshot_table(snapshot_result, fix);
    }
    if (ret >= 0) {
        ret = co_await check_zone_faults(result, fix);
    }
    result.corruptions += snapshot_result.corruptions;
    result.corruptions_fixed += snapshot_result.corruptions_fixed;
    result.check_errors += snapshot_result.check_errors;
    if (ret >= 0 && fix && !result.check_errors && !result.corruptions) {
        ret = co_await mark_clean();
        if (ret >= 0) {
            ret = co_await mark_consistent();
        }
    }
    lock_.unlock();
    co_return ret;
}

}  // namespace qemu::qcow2
