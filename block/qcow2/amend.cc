// qemu-img amend for qcow2: changing the compatibility level (0.10 <-> 1.1),
// lazy refcounts, the refcount width, the size and the external data file
// name of an existing image, in the order and with the checks and messages
// of QEMU 7.2 (docs/devel/qcow2.rst, "Amend").
#include <cassert>
#include <algorithm>

#include "qcow2.h"
#include "qemu/bswap.h"

namespace qemu::qcow2 {

namespace {

constexpr uint64_t kRefTableOffsetMask = ~0x1ffULL;

// The operations one amend may run, in order; progress is reported over
// all of them, as QEMU's qcow2_amend_helper_cb() does: the work done so far
// plus a projection of what the operations not started yet will take.
class AmendProgressCombiner {
public:
    AmendProgressCombiner(const BlockDriverState::AmendProgress& out, int total_operations)
        : out_(out), total_(total_operations)
    {
    }
    void start(int operation) { current_ = operation; }
    BlockDriverState::AmendProgress callback()
    {
        return [this](int64_t done, int64_t work) { report(done, work); };
    }

private:
    void report(int64_t done, int64_t work)
    {
        if (current_ != last_) {
            if (last_ != 0) {
                offset_completed_ += last_work_;
                completed_++;
            }
            last_ = current_;
        }
        last_work_ = work;
        int64_t current_work = offset_completed_ + work;
        int64_t projected = current_work * (total_ - completed_ - 1) / (completed_ + 1);
        if (out_) {
            out_(offset_completed_ + done, current_work + projected);
        }
    }

    const BlockDriverState::AmendProgress& out_;
    int total_;
    int current_ = 0;
    int last_ = 0;
    int completed_ = 0;
    int64_t offset_completed_ = 0;
    int64_t last_work_ = 0;
};

enum AmendOperation { kUpgrading = 1, kChangingRefcountOrder, kDowngrading };

}  // namespace

// Writes everything cached, refcounts included when they are lazy, and
// clears the dirty bit: the image is clean on disk.
Task<int> Qcow2State::make_clean()
{
    int ret = co_await sync_all_metadata();
    if (ret >= 0) {
        ret = co_await mark_clean();
    }
    co_return ret;
}

Task<int> Qcow2State::update_header(Error& err)
{
    int ret = co_await rewrite_header(err);
    if (ret >= 0) {
        ret = co_await bdrv_co_flush(file()->bs.get());
    }
    if (ret < 0) {
        err.set_errno(-ret, "Failed to update the image header");
    }
    co_return ret;
}

// --- Upgrade and downgrade ----------------------------------------------------

Task<int> Qcow2State::amend_upgrade(const BlockDriverState::AmendProgress& progress, Error& err)
{
    progress(0, 2);
    // Version 3 wants every snapshot's 64-bit VM state size and disk size.
    bool old_snapshots = std::any_of(snapshots_.begin(), snapshots_.end(),
                                     [](const Snapshot& sn) { return sn.extra_data.size() < 16; });
    if (old_snapshots) {
        int ret = co_await rewrite_snapshot_table();
        if (ret < 0) {
            err.set_errno(-ret, "Failed to update the snapshot table");
            co_return ret;
        }
    }
    progress(1, 2);
    header_.version = 3;
    int ret = co_await update_header(err);
    if (ret < 0) {
        header_.version = 2;
        co_return ret;
    }
    progress(2, 2);
    co_return 0;
}

// Does any L2 table of `l1` map a compressed cluster?
Task<int> Qcow2State::has_compressed_clusters(const std::vector<uint64_t>& l1, bool& found)
{
    for (uint64_t l1e : l1) {
        uint64_t l2_offset = l1e & kOffsetMask;
        if (!l2_offset) {
            continue;
        }
        Qcow2Cache::Ref l2;
        int ret = co_await l2_cache_->get(l2_offset, true, l2);
        if (ret < 0) {
            co_return ret;
        }
        for (uint64_t j = 0; j < l2_entries_; j++) {
            if (l2_cluster_type(get_l2_entry(l2, j).entry) == ClusterType::Compressed) {
                found = true;
                co_return 0;
            }
        }
    }
    co_return 0;
}

Task<int> Qcow2State::read_snapshot_l1(const Snapshot& sn, std::vector<uint64_t>& l1)
{
    l1.assign(sn.l1_size, 0);
    if (sn.l1_size == 0) {
        co_return 0;
    }
    std::vector<uint8_t> raw(uint64_t(sn.l1_size) * 8);
    IOVector q(raw.data(), raw.size());
    int ret = co_await bdrv_co_preadv(file(), sn.l1_table_offset, raw.size(), q);
    for (uint32_t i = 0; ret >= 0 && i < sn.l1_size; i++) {
        l1[i] = load_be64(raw.data() + uint64_t(i) * 8);
    }
    co_return ret;
}

// Version 2 has no zero clusters: QEMU's qcow2_expand_zero_clusters().
// Without a backing file, a zero cluster without data becomes unallocated;
// otherwise it gets a zeroed cluster.  A zero cluster with data keeps it,
// now zeroed, unless the data cluster is also referenced from outside this
// L2 table (a snapshot may read it as data): then it gets a new zeroed
// cluster, where QEMU would zero the shared one.  Progress goes by L1 entry
// over the active table and every snapshot's.
Task<int> Qcow2State::expand_zero_clusters_in_l1(const std::vector<uint64_t>& l1, int64_t& visited,
                                                 int64_t total,
                                                 const BlockDriverState::AmendProgress& progress)
{
    const uint64_t cs = cluster_size_;
    const bool backed = !unallocated_reads_zero();
    for (size_t i = 0; i < l1.size(); i++) {
        uint64_t l2_offset = l1[i] & kOffsetMask;
        if (l2_offset) {
            if (offset_into_cluster(l2_offset)) {
                co_return signal_corruption(true,
                                            "L2 table offset %#llx unaligned (L1 index: %#zx)",
                                            (unsigned long long)l2_offset, i);
            }
            uint64_t l2_refcount = 0;
            int ret = co_await get_refcount(l2_offset >> cluster_bits_, l2_refcount);
            if (ret < 0) {
                co_return ret;
            }
            Qcow2Cache::Ref l2;
            ret = co_await l2_cache_->get(l2_offset, true, l2);
            if (ret < 0) {
                co_return ret;
            }
            for (uint64_t j = 0; j < l2_entries_; j++) {
                L2Entry e = get_l2_entry(l2, j);
                ClusterType type = l2_cluster_type(e.entry);
                if (type != ClusterType::ZeroPlain && type != ClusterType::ZeroAlloc) {
                    continue;
                }
                if (type == ClusterType::ZeroPlain && !backed) {
                    set_l2_entry(l2, j, L2Entry{});
                    continue;
                }
                uint64_t data = e.entry & kOffsetMask;
                uint64_t data_refcount = 0;
                if (data) {
                    if (offset_into_cluster(data)) {
                        co_return signal_corruption(true,
                                                    "Cluster allocation offset %#llx unaligned (L2 "
                                                    "offset: %#llx, L2 index: %#llx)",
                                                    (unsigned long long)data,
                                                    (unsigned long long)l2_offset,
                                                    (unsigned long long)j);
                    }
                    ret = co_await get_refcount(data >> cluster_bits_, data_refcount);
                    if (ret < 0) {
                        co_return ret;
                    }
                }
                if (!data || data_refcount > l2_refcount) {
                    // A new cluster, referenced as often as this table is.
                    int64_t fresh = co_await alloc_clusters(cs);
                    if (fresh < 0) {
                        co_return int(fresh);
                    }
                    if (l2_refcount > 1) {
                        ret =
                            co_await update_refcount(uint64_t(fresh), cs, int64_t(l2_refcount) - 1);
                        if (ret < 0) {
                            co_return ret;
                        }
                    }
                    if (data) {
                        ret = co_await update_refcount(data, cs, -int64_t(l2_refcount));
                        if (ret < 0) {
                            co_return ret;
                        }
                    }
                    data = uint64_t(fresh);
                    data_refcount = l2_refcount;
                }
                ret = check_overlap(data, cs, MetadataKind(0));
                if (ret >= 0) {
                    ret = co_await bdrv_co_pwrite_zeroes(file(), data, cs, 0);
                }
                if (ret < 0) {
                    co_return ret;
                }
                set_l2_entry(l2, j, L2Entry{data | (data_refcount == 1 ? kCopied : 0), 0});
            }
        }
        visited++;
        progress(visited, total);
    }
    co_return 0;
}

Task<int> Qcow2State::amend_downgrade(const BlockDriverState::AmendProgress& progress, Error& err)
{
    if (header_.zoned) {
        err.set("Cannot downgrade a zoned image: the zoned format needs compat=1.1");
        co_return -ENOTSUP;
    }
    if (header_.refcount_order != 4) {
        err.set("compat=0.10 requires refcount_bits=16");
        co_return -ENOTSUP;
    }
    if (has_data_file()) {
        err.set("Cannot downgrade an image with a data file");
        co_return -ENOTSUP;
    }
    for (const Snapshot& sn : snapshots_) {
        if (sn.vm_state_size > UINT32_MAX || sn.disk_size != total_bytes()) {
            err.set("Internal snapshots prevent downgrade of image");
            co_return -ENOTSUP;
        }
    }
    // Version 2 has no autoclear bits: bitmaps would be lost (QEMU 7.2
    // drops the bit and leaves the bitmaps' clusters leaked).
    if (!bitmaps_.empty()) {
        err.set("Cannot downgrade an image with persistent dirty bitmaps");
        err.add_hint("Remove them first, e.g. with 'qemu-img bitmap --remove'.");
        co_return -ENOTSUP;
    }
    int ret = 0;
    if ((header_.incompatible_features & INCOMPAT_DIRTY) || dirty_marked_) {
        ret = co_await make_clean();
        if (ret < 0) {
            err.set_errno(-ret, "Failed to make the image clean");
            co_return ret;
        }
    }
    uint64_t other = header_.incompatible_features & ~INCOMPAT_COMPRESSION;
    if (other) {
        err.set("Cannot downgrade an image with incompatible features 0x%llx set",
                (unsigned long long)other);
        co_return -ENOTSUP;
    }
    // zstd cannot be expressed in version 2: only an image without
    // compressed clusters (snapshots included, which QEMU does not look
    // at) can switch to zlib.
    if (header_.compression_type != CompressionType::Zlib) {
        bool found = false;
        ret = co_await has_compressed_clusters(l1_, found);
        for (size_t i = 0; ret >= 0 && !found && i < snapshots_.size(); i++) {
            std::vector<uint64_t> l1;
            ret = co_await read_snapshot_l1(snapshots_[i], l1);
            if (ret >= 0) {
                ret = co_await has_compressed_clusters(l1, found);
            }
        }
        if (ret < 0) {
            err.set("Failed to check block status");
            co_return -EINVAL;
        }
        if (found) {
            err.set("Cannot downgrade an image with zstd compression type and existing "
                    "compressed clusters");
            co_return -ENOTSUP;
        }
    }

    // Lazy refcounts do not exist in version 2 either.
    lazy_refcounts_ = false;
    int64_t total = int64_t(l1_.size());
    for (const Snapshot& sn : snapshots_) {
        total += sn.l1_size;
    }
    int64_t visited = 0;
    ret = co_await expand_zero_clusters_in_l1(l1_, visited, total, progress);
    for (size_t i = 0; ret >= 0 && i < snapshots_.size(); i++) {
        std::vector<uint64_t> l1;
        ret = co_await read_snapshot_l1(snapshots_[i], l1);
        if (ret >= 0) {
            ret = co_await expand_zero_clusters_in_l1(l1, visited, total, progress);
        }
    }
    if (ret >= 0) {
        ret = co_await flush_metadata();
    }
    if (ret >= 0) {
        ret = co_await bdrv_co_flush(file()->bs.get());
    }
    if (ret < 0) {
        err.set_errno(-ret, "Failed to turn zero into data clusters");
        co_return ret;
    }

    Header saved = header_;
    header_.version = 2;
    header_.compatible_features = 0;
    header_.autoclear_features = 0;
    header_.incompatible_features = 0;
    header_.compression_type = CompressionType::Zlib;
    ret = co_await update_header(err);
    if (ret < 0) {
        header_ = saved;
    }
    co_return ret;
}

// --- Refcount width ---------------------------------------------------------------

// The refcount structure for a new width, built as QEMU's
// qcow2_change_refcount_order() does so that the layouts agree: the new
// refcount blocks and the new table are allocated in the old structure
// (first fit), which changes the refcounts they must describe, so the
// allocation is repeated until a round allocates nothing; then they are
// written, the header switches to them and the old ones are freed.
class RefcountOrderChange {
public:
    RefcountOrderChange(Qcow2State& s, uint32_t order, BlockDriverState::AmendProgress progress)
        : s_(s), order_(order), bits_(1u << order), progress_(std::move(progress)),
          entries_per_block_((s.cluster_size_ * 8) >> order)
    {
    }

    Task<int> run(Error& err)
    {
        int ret = co_await check_widths(err);
        if (ret < 0) {
            co_return ret;
        }
        int walk = 0;
        bool allocated;
        do {
            int total_walks = std::max(walk + 2, 3);
            allocated = false;
            ret = co_await allocate_blocks(walk++, total_walks, allocated, err);
            if (ret < 0) {
                co_return co_await fail(ret);
            }
            if (allocated) {
                if (table_offset_) {
                    ret = co_await s_.update_refcount(table_offset_, table_bytes(allocated_table_entries_), -1);
                    if (ret < 0) {
                        co_return co_await fail(ret);
                    }
                }
                int64_t off = co_await s_.alloc_clusters(table_bytes(table_.size()));
                if (off < 0) {
                    table_offset_ = 0;
                    err.set_errno(int(-off), "Failed to allocate the new reftable");
                    co_return co_await fail(int(off));
                }
                table_offset_ = uint64_t(off);
                allocated_table_entries_ = table_.size();
            }
        } while (allocated);

        ret = co_await write_blocks(walk, walk + 1, err);
        if (ret < 0) {
            co_return co_await fail(ret);
        }
        ret = co_await write_table(err);
        if (ret < 0) {
            co_return co_await fail(ret);
        }
        co_return co_await switch_over(err);
    }

private:
    uint64_t table_bytes(uint64_t entries) const { return entries * 8; }
    uint64_t old_clusters() const { return uint64_t(s_.refcount_table_.size()) << s_.refcount_block_bits_; }

    // Progress as QEMU reports it: one step per entry of the old table in
    // each walk over it.
    void walk_progress(int walk, int total_walks)
    {
        const int64_t n = int64_t(s_.refcount_table_.size());
        for (int64_t i = 0; i < n; i++) {
            progress_(walk * n + i, total_walks * n);
        }
        progress_((walk + 1) * n, total_walks * n);
    }

    // Calls f(cluster, refcount) for every cluster with a refcount, in
    // order.
    template <typename F>
    Task<int> for_each_refcount(F f)
    {
        for (uint64_t ti = 0; ti < s_.refcount_table_.size(); ti++) {
            uint64_t block = s_.refcount_table_[ti] & kRefTableOffsetMask;
            if (!block) {
                continue;
            }
            if (s_.offset_into_cluster(block)) {
                co_return s_.signal_corruption(true, "Refblock offset %#llx unaligned (reftable index: %#llx)",
                                               (unsigned long long)block, (unsigned long long)ti);
            }
            Qcow2Cache::Ref ref;
            int ret = co_await s_.refblock_cache_->get(block, true, ref);
            if (ret < 0) {
                co_return ret;
            }
            for (uint64_t i = 0; i < s_.refcount_block_entries_; i++) {
                uint64_t rc = refcount_entry_get(ref.data(), i, s_.refcount_bits_);
                if (rc) {
                    f((ti << s_.refcount_block_bits_) + i, rc);
                }
            }
        }
        co_return 0;
    }

    Task<int> check_widths(Error& err)
    {
        if (bits_ >= 64) {
            co_return 0;
        }
        uint64_t bad_cluster = 0, bad_refcount = 0;
        int ret = co_await for_each_refcount([&](uint64_t c, uint64_t rc) {
            if (!bad_refcount && (rc >> bits_)) {
                bad_cluster = c;
                bad_refcount = rc;
            }
        });
        if (ret < 0) {
            err.set_errno(-ret, "Failed to retrieve refblock");
            co_return ret;
        }
        if (bad_refcount) {
            err.set("Cannot decrease refcount entry width to %u bits: Cluster at offset %#llx has a "
                    "refcount of %llu", bits_, (unsigned long long)(bad_cluster << s_.cluster_bits_),
                    (unsigned long long)bad_refcount);
            co_return -EINVAL;
        }
        co_return 0;
    }

    // One round: every new block that has a non-zero refcount gets a
    // cluster.  A cluster allocated here lands in some block's range; a
    // later block sees it in this round, an earlier one in the next.
    Task<int> allocate_blocks(int walk, int total_walks, bool& allocated, Error& err)
    {
        std::vector<bool> used;
        int ret = co_await for_each_refcount([&](uint64_t c, uint64_t) {
            uint64_t k = c / entries_per_block_;
            if (k >= used.size()) {
                used.resize(k + 1, false);
            }
            used[k] = true;
        });
        if (ret < 0) {
            err.set_errno(-ret, "Failed to retrieve refblock");
            co_return ret;
        }
        walk_progress(walk, total_walks);
        const uint64_t per_table_cluster = s_.cluster_size_ / 8;
        for (uint64_t k = 0; k < used.size(); k++) {
            if (!used[k]) {
                continue;
            }
            if (k >= table_.size()) {
                uint64_t size = (k + 1 + per_table_cluster - 1) / per_table_cluster * per_table_cluster;
                if (size * 8 > kMaxRefcountTableBytes) {
                    err.set("This operation would make the refcount table grow beyond the maximum "
                            "size supported by QEMU, aborting");
                    co_return -ENOTSUP;
                }
                table_.resize(size, 0);
            }
            if (table_[k]) {
                continue;
            }
            int64_t off = co_await s_.alloc_clusters(s_.cluster_size_);
            if (off < 0) {
                err.set_errno(int(-off), "Failed to allocate refblock");
                co_return int(off);
            }
            table_[k] = uint64_t(off);
            allocated = true;
            uint64_t landed = (uint64_t(off) >> s_.cluster_bits_) / entries_per_block_;
            if (landed >= used.size()) {
                used.resize(landed + 1, false);
            }
            used[landed] = true;
        }
        co_return 0;
    }

    Task<int> write_blocks(int walk, int total_walks, Error& err)
    {
        // The refcounts now final, block by block in the new width.
        std::vector<std::vector<uint8_t>> blocks(table_.size());
        bool missing = false;
        int ret = co_await for_each_refcount([&](uint64_t c, uint64_t rc) {
            uint64_t k = c / entries_per_block_;
            if (k >= table_.size() || !table_[k]) {
                missing = true;
                return;
            }
            if (blocks[k].empty()) {
                blocks[k].assign(s_.cluster_size_, 0);
            }
            refcount_entry_set(blocks[k].data(), c % entries_per_block_, bits_, rc);
        });
        if (ret < 0) {
            err.set_errno(-ret, "Failed to retrieve refblock");
            co_return ret;
        }
        if (missing) {
            err.set("Failed to allocate refblock");  // cannot happen after a quiet round
            co_return -EIO;
        }
        walk_progress(walk, total_walks);
        for (uint64_t k = 0; k < table_.size(); k++) {
            if (!table_[k]) {
                continue;
            }
            if (blocks[k].empty()) {
                blocks[k].assign(s_.cluster_size_, 0);
            }
            ret = s_.check_overlap(table_[k], s_.cluster_size_, MetadataKind(0));
            if (ret >= 0) {
                IOVector q(blocks[k].data(), s_.cluster_size_);
                ret = co_await bdrv_co_pwritev(s_.file(), table_[k], s_.cluster_size_, q);
            }
            if (ret < 0) {
                err.set_errno(-ret, "Failed to write refblock");
                co_return ret;
            }
        }
        co_return 0;
    }

    Task<int> write_table(Error& err)
    {
        uint64_t bytes = table_bytes(table_.size());
        std::vector<uint8_t> raw(bytes);
        for (uint64_t i = 0; i < table_.size(); i++) {
            store_be64(raw.data() + i * 8, table_[i]);
        }
        int ret = s_.check_overlap(table_offset_, bytes, MetadataKind(0));
        if (ret >= 0) {
            IOVector q(raw.data(), bytes);
            ret = co_await bdrv_co_pwritev(s_.file(), table_offset_, bytes, q);
        }
        if (ret < 0) {
            err.set_errno(-ret, "Failed to write the new reftable");
            co_return ret;
        }
        // The old structure's own pending changes, then everything synced.
        ret = co_await s_.refblock_cache_->write_back();
        if (ret >= 0) {
            ret = co_await s_.write_reftable_entries();
        }
        if (ret >= 0) {
            ret = co_await bdrv_co_flush(s_.file()->bs.get());
        }
        if (ret < 0) {
            err.set_errno(-ret, "Failed to flush the refblock cache");
        }
        co_return ret;
    }

    Task<int> switch_over(Error& err)
    {
        Header saved = s_.header_;
        s_.header_.refcount_order = order_;
        s_.header_.refcount_table_offset = table_offset_;
        s_.header_.refcount_table_clusters = uint32_t(table_bytes(table_.size()) >> s_.cluster_bits_);
        int ret = co_await s_.rewrite_header(err);
        if (ret >= 0) {
            ret = co_await bdrv_co_flush(s_.file()->bs.get());
        }
        if (ret < 0) {
            s_.header_ = saved;
            err.set_errno(-ret, "Failed to update the qcow2 header");
            co_return co_await fail(ret);
        }
        // From here on the new structure is the image's.
        std::vector<uint64_t> old_table = std::move(s_.refcount_table_);
        uint64_t old_table_offset = saved.refcount_table_offset;
        uint64_t old_table_bytes = uint64_t(saved.refcount_table_clusters) << s_.cluster_bits_;
        s_.refcount_table_ = table_;
        s_.dirty_reftable_.clear();
        s_.refcount_bits_ = bits_;
        s_.refcount_block_bits_ = s_.cluster_bits_ + 3 - order_;
        s_.refcount_block_entries_ = 1ULL << s_.refcount_block_bits_;
        s_.refcount_max_ = bits_ == 64 ? UINT64_MAX : (1ULL << bits_) - 1;
        // The cached blocks are of the old width: a fresh cache, same hooks.
        auto cache = std::make_unique<Qcow2Cache>(s_.file(), s_.cluster_size_,
                                                  s_.refblock_cache_->capacity(), META_REFCOUNT_BLOCK);
        cache->overlap_check = s_.refblock_cache_->overlap_check;
        cache->before_write_back = s_.refblock_cache_->before_write_back;
        s_.refblock_cache_ = std::move(cache);
        s_.free_cluster_index_ = 0;
        s_.rebuild_metadata_map();
        for (uint64_t e : old_table) {
            if (e & kRefTableOffsetMask) {
                ret = co_await s_.update_refcount(e & kRefTableOffsetMask, s_.cluster_size_, -1);
                if (ret < 0) {
                    break;
                }
            }
        }
        if (ret >= 0) {
            ret = co_await s_.update_refcount(old_table_offset, old_table_bytes, -1);
        }
        if (ret >= 0) {
            ret = co_await s_.flush_metadata();
        }
        if (ret < 0) {
            err.set_errno(-ret, "Failed to free the old refcount structure");
        }
        co_return ret;
    }

    // Gives back what was allocated for the new structure (it was never
    // named by the header).
    Task<int> fail(int ret)
    {
        for (uint64_t off : table_) {
            if (off) {
                co_await s_.update_refcount(off, s_.cluster_size_, -1);
            }
        }
        if (table_offset_) {
            co_await s_.update_refcount(table_offset_, table_bytes(allocated_table_entries_), -1);
        }
        table_.clear();
        table_offset_ = 0;
        co_return ret;
    }

    Qcow2State& s_;
    uint32_t order_;
    uint32_t bits_;
    BlockDriverState::AmendProgress progress_;
    uint64_t entries_per_block_;
    std::vector<uint64_t> table_;  // the new refcount table (host order)
    uint64_t table_offset_ = 0;
    uint64_t allocated_table_entries_ = 0;
};

// What qemu-img amend asks for, with unset options at the image's values.
struct Qcow2State::AmendRequest {
    int version;
    std::optional<uint64_t> size;
    std::optional<std::string> backing_file;
    std::optional<std::string> backing_fmt;
    std::optional<std::string> data_file;
    bool data_file_raw;
    bool lazy_refcounts;
    uint32_t refcount_bits;
};

// Takes the options out of `opts` and checks them in the order QEMU checks
// its amend option list; nullopt after setting err.
std::optional<Qcow2State::AmendRequest> Qcow2State::parse_amend_options(QDict& opts,
                                                                        Error& err) const
{
    for (const auto& [key, value] : opts) {
        if (key.rfind("encrypt.", 0) == 0) {
            err.set("Can't amend encryption options - encryption not present");
            return std::nullopt;
        }
    }
    AmendRequest req;
    req.version = int(header_.version);
    if (auto size = opts.take("size")) {
        req.size = std::stoull(*size);
    }
    if (auto compat = opts.take("compat")) {
        if (*compat == "0.10" || *compat == "v2") {
            req.version = 2;
        } else if (*compat == "1.1" || *compat == "v3") {
            req.version = 3;
        } else {
            err.set("Unknown compatibility level %s", compat->c_str());
            return std::nullopt;
        }
    }
    req.backing_file = opts.take("backing_file");
    req.backing_fmt = opts.take("backing_fmt");
    req.data_file = opts.take("data_file");
    if (req.data_file && !has_data_file()) {
        err.set("data-file can only be set for images that use an external data file");
        return std::nullopt;
    }
    req.data_file_raw = data_file_is_raw();
    if (auto raw = opts.take("data_file_raw")) {
        req.data_file_raw = *raw == "on";
        if (req.data_file_raw && !data_file_is_raw()) {
            err.set("data-file-raw cannot be set on existing images");
            return std::nullopt;
        }
    }
    req.lazy_refcounts = lazy_refcounts_;
    if (auto v = opts.take("lazy_refcounts")) {
        req.lazy_refcounts = *v == "on";
    }
    req.refcount_bits = refcount_bits_;
    if (auto v = opts.take("refcount_bits")) {
        uint64_t n = std::stoull(*v);
        if (n == 0 || n > 64 || (n & (n - 1))) {
            err.set("Refcount width must be a power of two and may not exceed 64 bits");
            return std::nullopt;
        }
        req.refcount_bits = uint32_t(n);
    }
    return req;
}

// REQUIRES: lock_ held.
Task<int> Qcow2State::change_refcount_width(const AmendRequest& req,
                                            const BlockDriverState::AmendProgress& progress,
                                            Error& err)
{
    assert(lock_.locked());
    if (req.version < 3 && req.refcount_bits != 16) {
        err.set("Refcount widths other than 16 bits require compatibility level 1.1 or above "
                "(use compat=1.1 or greater)");
        co_return -EINVAL;
    }
    // Refcounts must all be on disk before they are copied.
    if (dirty_marked_) {
        int ret = co_await make_clean();
        if (ret < 0) {
            err.set_errno(-ret, "Failed to make the image clean");
            co_return ret;
        }
    }
    RefcountOrderChange change(*this, uint32_t(__builtin_ctz(req.refcount_bits)), progress);
    co_return co_await change.run(err);
}

// The data file settings, then the header, rewritten in any case; then
// the refusal to change the backing file (QEMU checks it after writing).
// REQUIRES: lock_ held.
Task<int> Qcow2State::amend_header(const AmendRequest& req, Error& err)
{
    assert(lock_.locked());
    if (req.data_file_raw) {
        header_.autoclear_features |= AUTOCLEAR_DATA_FILE_RAW;
    } else {
        header_.autoclear_features &= ~AUTOCLEAR_DATA_FILE_RAW;
    }
    if (req.data_file) {
        if (req.data_file->empty()) {
            header_.data_file.reset();
        } else {
            header_.data_file = *req.data_file;
        }
    }
    int ret = co_await update_header(err);
    if (ret < 0) {
        co_return ret;
    }
    if (req.backing_file || req.backing_fmt) {
        auto differs = [](const std::optional<std::string>& given, const std::string& have) {
            return given.has_value() == have.empty() || (given && *given != have);
        };
        if (differs(req.backing_file, header_.backing_file) ||
            differs(req.backing_fmt, header_.backing_format)) {
            err.set("Cannot amend the backing file");
            err.add_hint("You can use 'qemu-img rebase' instead.");
            co_return -EINVAL;
        }
    }
    co_return 0;
}

// Turning lazy refcounts off first makes every refcount correct on disk.
// REQUIRES: lock_ held.
Task<int> Qcow2State::set_lazy_refcounts(bool lazy, int version, Error& err)
{
    assert(lock_.locked());
    if (lazy && version < 3) {
        err.set("Lazy refcounts only supported with compatibility level 1.1 and above "
                "(use compat=1.1 or greater)");
        co_return -EINVAL;
    }
    if (!lazy) {
        int ret = co_await make_clean();
        if (ret < 0) {
            err.set_errno(-ret, "Failed to make the image clean");
            co_return ret;
        }
    }
    uint64_t old_features = header_.compatible_features;
    if (lazy) {
        header_.compatible_features |= COMPAT_LAZY_REFCOUNTS;
    } else {
        header_.compatible_features &= ~COMPAT_LAZY_REFCOUNTS;
    }
    int ret = co_await update_header(err);
    if (ret < 0) {
        header_.compatible_features = old_features;
        co_return ret;
    }
    lazy_refcounts_ = lazy;
    co_return 0;
}

Task<int> Qcow2State::drv_amend(QDict& opts, const AmendProgress& progress, bool, Error& err)
{
    std::optional<AmendRequest> req = parse_amend_options(opts, err);
    if (!req) {
        co_return -EINVAL;
    }
    const int old_version = int(header_.version);

    co_await lock_.lock();
    struct Unlock {
        CoMutex& m;
        ~Unlock() { m.unlock(); }
    } unlock{lock_};

    AmendProgressCombiner combined(progress, int(req->version != old_version) +
                                                 int(req->refcount_bits != refcount_bits_));
    int ret = 0;
    // Upgrade first: what follows may need version 3.
    if (req->version > old_version) {
        combined.start(kUpgrading);
        ret = co_await amend_upgrade(combined.callback(), err);
        if (ret < 0) {
            co_return ret;
        }
    }
    if (req->refcount_bits != refcount_bits_) {
        combined.start(kChangingRefcountOrder);
        ret = co_await change_refcount_width(*req, combined.callback(), err);
        if (ret < 0) {
            co_return ret;
        }
    }
    ret = co_await amend_header(*req, err);
    if (ret < 0) {
        co_return ret;
    }
    if (req->lazy_refcounts != lazy_refcounts_) {
        ret = co_await set_lazy_refcounts(req->lazy_refcounts, req->version, err);
        if (ret < 0) {
            co_return ret;
        }
    }
    if (req->size && *req->size) {
        // Amending means exactly the size asked for.
        if (*req->size > BDRV_MAX_LENGTH) {
            err.set("offset(%lld) exceeds maximum(%lld)", (long long)*req->size,
                    (long long)BDRV_MAX_LENGTH);
            co_return -EFBIG;
        }
        lock_.unlock();
        ret = co_await drv_truncate(*req->size, true, PreallocMode::Off, 0, err);
        co_await lock_.lock();
        if (ret < 0) {
            co_return ret;
        }
        refresh_limits();
    }
    // Downgrade last, once nothing needs version 3 any more.
    if (req->version < old_version) {
        combined.start(kDowngrading);
        ret = co_await amend_downgrade(combined.callback(), err);
        if (ret < 0) {
            co_return ret;
        }
    }
    co_return 0;
}

}  // namespace qemu::qcow2
