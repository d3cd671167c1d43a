// qcow2 refcounts: every host cluster's reference count lives in a refcount
// block, found through the refcount table.  Allocation finds clusters with
// refcount 0; frees are deferred until no on-disk metadata references the
// clusters any more (see flush_metadata in qcow2.cc).
#include <algorithm>
#include <cstring>

#include "qcow2.h"
#include "qemu/bswap.h"

namespace qemu::qcow2 {

namespace {

constexpr uint64_t kRefTableOffsetMask = ~0x1ffULL;

// The kind QEMU would name for a mask: the lowest one (QEMU's ffs()).
MetadataKind lowest_kind(uint32_t mask)
{
    return MetadataKind(__builtin_ctz(mask));
}

}  // namespace

uint64_t refcount_entry_get(const uint8_t* block, uint64_t index, uint32_t bits)
{
    switch (bits) {
    case 8: return block[index];
    case 16: return load_be16(block + index * 2);
    case 32: return load_be32(block + index * 4);
    case 64: return load_be64(block + index * 8);
    default: {
        // Sub-byte widths: bit 0 of an entry is the least significant.
        uint64_t bit = index * bits;
        return (block[bit / 8] >> (bit % 8)) & ((1u << bits) - 1);
    }
    }
}

void refcount_entry_set(uint8_t* block, uint64_t index, uint32_t bits, uint64_t value)
{
    switch (bits) {
    case 8: block[index] = uint8_t(value); break;
    case 16: store_be16(block + index * 2, uint16_t(value)); break;
    case 32: store_be32(block + index * 4, uint32_t(value)); break;
    case 64: store_be64(block + index * 8, value); break;
    default: {
        uint64_t bit = index * bits;
        uint8_t mask = uint8_t(((1u << bits) - 1) << (bit % 8));
        block[bit / 8] = uint8_t((block[bit / 8] & ~mask) | ((value << (bit % 8)) & mask));
        break;
    }
    }
}


Task<int> Qcow2State::load_refcount_table(Error& err)
{
    uint64_t entries = (uint64_t(header_.refcount_table_clusters) << cluster_bits_) / 8;
    int ret = co_await read_table(header_.refcount_table_offset, entries, refcount_table_);
    if (ret < 0) {
        err.set_errno(-ret, "Could not read refcount table");
    }
    co_return ret;
}

Task<int> Qcow2State::read_table(uint64_t offset, uint64_t entries, std::vector<uint64_t>& out)
{
    out.assign(entries, 0);
    if (!entries) {
        co_return 0;
    }
    AlignedBuffer buf(entries * 8, 4096);
    IOVector qiov(buf.data(), entries * 8);
    int ret = co_await bdrv_co_preadv(file(), offset, entries * 8, qiov);
    if (ret < 0) {
        co_return ret;
    }
    for (size_t i = 0; i < entries; i++) {
        out[i] = load_be64(buf.data() + i * 8);
    }
    co_return 0;
}

Task<int> Qcow2State::load_refcount_block(uint64_t ti, Qcow2Cache::Ref& out)
{
    out.reset();
    uint64_t block_offset = ti < refcount_table_.size() ? refcount_table_[ti] & kRefTableOffsetMask : 0;
    if (!block_offset) {
        co_return 0;
    }
    if (offset_into_cluster(block_offset)) {
        co_return signal_corruption(true, "Refblock offset %#llx unaligned (reftable index: %#llx)",
                                    (unsigned long long)block_offset, (unsigned long long)ti);
    }
    co_return co_await refblock_cache_->get(block_offset, true, out);
}

Task<int> Qcow2State::get_refcount(uint64_t cluster_index, uint64_t& refcount)
{
    refcount = 0;
    Qcow2Cache::Ref block;
    int ret = co_await load_refcount_block(cluster_index >> refcount_block_bits_, block);
    if (ret < 0 || !block) {
        co_return ret;
    }
    refcount = refcount_entry_get(block.data(), cluster_index & (refcount_block_entries_ - 1),
                                   refcount_bits_);
    co_return 0;
}

namespace {

// Grows the refcount table so that index `needed_ti` exists.  The new
// table and the refcount blocks that describe it go into a fresh area right
// after the space the old table covers; they describe themselves, so the
// switch is one header update.
struct RefcountAreaPlan {
    uint64_t area_start;   // cluster index
    uint64_t first_ti;     // table index of the first new block
    uint64_t nb_blocks;
    uint64_t table_entries;
    uint64_t table_clusters;
};

RefcountAreaPlan plan_refcount_area(uint64_t old_entries, uint64_t needed_ti, uint64_t rbe,
                                    uint64_t cluster_size, uint64_t min_start)
{
    RefcountAreaPlan p{};
    // Start past anything the allocator may already have handed out.
    p.area_start = std::max(old_entries * rbe, min_start);
    p.first_ti = p.area_start / rbe;
    for (p.nb_blocks = 1;; p.nb_blocks++) {
        p.table_entries = std::max(p.first_ti + p.nb_blocks, needed_ti + 1);
        p.table_entries += p.table_entries / 2;  // headroom, as tables only grow
        p.table_clusters = (p.table_entries * 8 + cluster_size - 1) / cluster_size;
        p.table_entries = p.table_clusters * cluster_size / 8;
        uint64_t area_end = p.area_start + p.nb_blocks + p.table_clusters;
        if (area_end <= (p.first_ti + p.nb_blocks) * rbe) {
            return p;
        }
    }
}

}  // namespace

Task<int> Qcow2State::update_refcount(uint64_t offset, uint64_t length, int64_t addend)
{
    if (length == 0) {
        co_return 0;
    }
    uint64_t first = offset >> cluster_bits_;
    uint64_t last = (offset + length - 1) >> cluster_bits_;
    for (uint64_t c = first; c <= last; c++) {
        uint64_t ti = c >> refcount_block_bits_;
        if (ti >= refcount_table_.size()) {
            // A table that cannot hold entry ti is too big whatever the
            // plan; checking first keeps the plan's search short when a
            // corrupt entry names a cluster exabytes away.
            if ((ti + 1) * 8 > kMaxRefcountTableBytes) {
                co_return -EFBIG;
            }
            // Grow the table: new area after what the old table covers.
            RefcountAreaPlan p = plan_refcount_area(refcount_table_.size(), ti,
                                                    refcount_block_entries_, cluster_size_,
                                                    std::max(free_cluster_index_, fresh_from_));
            if (p.table_clusters * cluster_size_ > kMaxRefcountTableBytes) {
                co_return -EFBIG;
            }
            std::vector<uint64_t> table = refcount_table_;
            table.resize(p.table_entries, 0);
            uint64_t area_bytes = (p.nb_blocks + p.table_clusters) << cluster_bits_;
            AlignedBuffer area(area_bytes, 4096);
            memset(area.data(), 0, area_bytes);
            for (uint64_t b = 0; b < p.nb_blocks; b++) {
                table[p.first_ti + b] = (p.area_start + b) << cluster_bits_;
            }
            // Refcount 1 for every cluster of the area, recorded in the
            // area's own blocks.
            for (uint64_t ac = p.area_start; ac < p.area_start + p.nb_blocks + p.table_clusters; ac++) {
                uint64_t b = (ac >> refcount_block_bits_) - p.first_ti;
                refcount_entry_set(area.data() + (b << cluster_bits_), ac & (refcount_block_entries_ - 1),
                                     refcount_bits_, 1);
            }
            uint8_t* table_bytes = area.data() + (p.nb_blocks << cluster_bits_);
            for (uint64_t i = 0; i < table.size(); i++) {
                store_be64(table_bytes + i * 8, table[i]);
            }
            uint64_t area_offset = p.area_start << cluster_bits_;
            int ret = check_overlap_mask(area_offset, area_bytes, 0);
            if (ret < 0) {
                co_return ret;
            }
            IOVector qiov(area.data(), area_bytes);
            ret = co_await bdrv_co_pwritev(file(), area_offset, area_bytes, qiov);
            if (ret < 0) {
                co_return ret;
            }
            // Old blocks with pending changes first, then the switch.
            ret = co_await refblock_cache_->write_back();
            if (ret >= 0) {
                ret = co_await write_reftable_entries();
            }
            if (ret >= 0) {
                ret = co_await bdrv_co_flush(file()->bs.get());
            }
            if (ret < 0) {
                co_return ret;
            }
            uint64_t old_offset = header_.refcount_table_offset;
            uint64_t old_bytes = uint64_t(header_.refcount_table_clusters) << cluster_bits_;
            header_.refcount_table_offset = area_offset + (p.nb_blocks << cluster_bits_);
            header_.refcount_table_clusters = uint32_t(p.table_clusters);
            ret = co_await write_header_fields();
            if (ret < 0) {
                co_return ret;
            }
            unregister_metadata(old_offset, old_bytes, META_REFCOUNT_TABLE);
            refcount_table_ = std::move(table);
            register_metadata(area_offset, p.nb_blocks << cluster_bits_, META_REFCOUNT_BLOCK);
            register_metadata(header_.refcount_table_offset, p.table_clusters << cluster_bits_,
                              META_REFCOUNT_TABLE);
            fresh_from_ = std::max(fresh_from_, p.area_start + p.nb_blocks + p.table_clusters);
            free_clusters_later(old_offset, old_bytes, FreeReason::Other);
        }
        if (!(refcount_table_[ti] & kRefTableOffsetMask)) {
            // A new refcount block.  Placed inside the range it describes
            // (the usual case), it holds its own refcount.
            int64_t found = co_await find_free_run(1);
            if (found < 0) {
                co_return int(found);
            }
            uint64_t candidate = uint64_t(found) >> cluster_bits_;
            uint64_t block_offset = candidate << cluster_bits_;
            bool self_describing = (candidate >> refcount_block_bits_) == ti;
            int ret = claim_metadata(block_offset, cluster_size_, META_REFCOUNT_BLOCK);
            if (ret < 0) {
                co_return ret;
            }
            Qcow2Cache::Ref block;
            ret = co_await refblock_cache_->get(block_offset, false, block);
            if (ret < 0) {
                co_return ret;
            }
            if (self_describing) {
                refcount_entry_set(block.data(), candidate & (refcount_block_entries_ - 1),
                                     refcount_bits_, 1);
            }
            block.mark_dirty();
            block.reset();
            refcount_table_[ti] = block_offset;
            dirty_reftable_.push_back(uint32_t(ti));
            if (!self_describing) {
                ret = co_await update_refcount(block_offset, cluster_size_, 1);
                if (ret < 0) {
                    co_return ret;
                }
            }
        }
        Qcow2Cache::Ref block;
        int ret = co_await load_refcount_block(ti, block);
        if (ret < 0) {
            co_return ret;
        }
        uint64_t idx = c & (refcount_block_entries_ - 1);
        uint64_t old = refcount_entry_get(block.data(), idx, refcount_bits_);
        if ((addend < 0 && old < uint64_t(-addend)) ||
            (addend > 0 && old > refcount_max_ - uint64_t(addend))) {
            co_return -EINVAL;  // as QEMU, for overflow too
        }
        uint64_t now = old + uint64_t(addend);
        refcount_entry_set(block.data(), idx, refcount_bits_, now);
        block.mark_dirty();
        if (now == 0) {
            free_cluster_index_ = std::min(free_cluster_index_, c);
            auto meta = metadata_clusters_.find(c);
            if (meta != metadata_clusters_.end()) {
                if (meta->second & kind_bit(META_L2)) {
                    l2_cache_->discard(c << cluster_bits_);
                }
                if (meta->second & kind_bit(META_REFCOUNT_BLOCK)) {
                    refblock_cache_->discard(c << cluster_bits_);
                }
                metadata_clusters_.erase(meta);
            }
        }
    }
    co_return 0;
}

Task<int64_t> Qcow2State::find_free_run(uint64_t n)
{
    // The hint moves past every run handed out, so a refcount block
    // allocated while the run's refcounts are being set cannot land in it.
    for (;;) {
        uint64_t start = free_cluster_index_;
        bool found = true;
        for (uint64_t i = 0; i < n; i++) {
            uint64_t c = free_cluster_index_++;
            if ((c + 1) << cluster_bits_ > kOffsetMask) {
                co_return -EFBIG;
            }
            // A metadata area in a cluster with refcount 0 (a corrupt
            // image, or one whose refcounts a leak repair by another
            // program dropped) stays where it is.
            if (metadata_clusters_.contains(c)) {
                found = false;
                break;
            }
            uint64_t rc;
            int ret = co_await get_refcount(c, rc);
            if (ret < 0) {
                co_return ret;
            }
            if (rc != 0) {
                found = false;
                break;
            }
        }
        if (found) {
            fresh_from_ = std::max(fresh_from_, start + n);
            co_return int64_t(start << cluster_bits_);
        }
    }
}

Task<int64_t> Qcow2State::alloc_clusters(uint64_t bytes)
{
    uint64_t n = size_to_clusters(bytes);
    if (n == 0) {
        co_return -EINVAL;
    }
    int64_t offset = co_await find_free_run(n);
    if (offset < 0) {
        co_return offset;
    }
    int ret = co_await update_refcount(uint64_t(offset), n << cluster_bits_, 1);
    if (ret < 0) {
        co_return ret;
    }
    co_return offset;
}

Task<int64_t> Qcow2State::alloc_bytes(uint64_t bytes)
{
    // QEMU's qcow2_alloc_bytes(), so that compressed images come out alike:
    // compressed data is packed after the previous one in its cluster, and
    // what does not fit there continues into the next cluster when that is
    // the one allocated next and has a refcount block already (QEMU gives
    // the span up when it must allocate one); a cluster whose refcount
    // cannot grow any more is left.  Every cluster the bytes touch gets one
    // more reference.
    uint64_t off = free_byte_offset_;
    if (off) {
        uint64_t refcount;
        int ret = co_await get_refcount(off >> cluster_bits_, refcount);
        if (ret < 0) {
            co_return ret;
        }
        if (refcount >= refcount_max_) {
            off = 0;
        }
    }
    uint64_t free_in_cluster = off ? cluster_size_ - offset_into_cluster(off) : 0;
    if (free_in_cluster < bytes) {
        int64_t fresh = co_await find_free_run(1);
        if (fresh < 0) {
            co_return fresh;
        }
        uint64_t ti = uint64_t(fresh) >> (cluster_bits_ + refcount_block_bits_);
        bool has_block = ti < refcount_table_.size() && (refcount_table_[ti] & kRefTableOffsetMask);
        if (!off || ((off + cluster_size_ - 1) & ~(cluster_size_ - 1)) != uint64_t(fresh) ||
            !has_block) {
            off = uint64_t(fresh);
        }
    }
    int ret = co_await update_refcount(off, bytes, 1);
    if (ret < 0) {
        co_return ret;
    }
    free_byte_offset_ = offset_into_cluster(off + bytes) ? off + bytes : 0;
    co_return int64_t(off);
}

void Qcow2State::free_clusters_later(uint64_t offset, uint64_t bytes, FreeReason reason)
{
    if (bytes) {
        pending_frees_.push_back({offset, bytes, reason});
    }
}

void Qcow2State::free_l2_entry_later(uint64_t entry, FreeReason reason)
{
    switch (l2_cluster_type(entry)) {
    case ClusterType::Normal:
    case ClusterType::ZeroAlloc:
        // Data in an external data file has no refcount (see
        // release_l2_entry for giving its space back).
        if (!has_data_file()) {
            free_clusters_later(entry & kOffsetMask, cluster_size_, reason);
        }
        break;
    case ClusterType::Compressed: {
        uint64_t host, len;
        compressed_range(entry, host, len);
        free_clusters_later(host, len, reason);
        break;
    }
    default:
        break;
    }
}

Task<int> Qcow2State::apply_pending_frees()
{
    std::vector<PendingFree> frees;
    frees.swap(pending_frees_);
    // Host ranges whose clusters dropped to refcount 0 and go back to the
    // host, merged into runs (one hole punch per run).
    std::vector<std::pair<uint64_t, uint64_t>> punch;
    for (const PendingFree& f : frees) {
        bool in_use = false;
        for (const DataIoGuard* g : data_io_) {
            in_use |= f.offset < g->host + g->len && g->host < f.offset + f.bytes;
        }
        if (in_use) {
            pending_frees_.push_back(f);  // a request in flight still uses it
            continue;
        }
        int ret = co_await update_refcount(f.offset, f.bytes, -1);
        if (ret < 0) {
            co_return ret;
        }
        if (!discard_passes_down(f.reason)) {
            continue;
        }
        uint64_t first = f.offset >> cluster_bits_;
        uint64_t last = (f.offset + f.bytes - 1) >> cluster_bits_;
        for (uint64_t c = first; c <= last; c++) {
            uint64_t rc;
            ret = co_await get_refcount(c, rc);
            if (ret < 0) {
                co_return ret;
            }
            if (rc != 0) {
                continue;
            }
            uint64_t off = c << cluster_bits_;
            if (!punch.empty() && punch.back().first + punch.back().second == off) {
                punch.back().second += cluster_size_;
            } else {
                punch.emplace_back(off, cluster_size_);
            }
        }
    }
    for (auto [off, len] : punch) {
        co_await bdrv_co_pdiscard(file(), off, len);
    }
    co_return 0;
}

Task<int> Qcow2State::write_reftable_entries()
{
    co_return co_await write_dirty_entries(dirty_reftable_, refcount_table_, header_.refcount_table_offset,
                                           uint64_t(header_.refcount_table_clusters) << cluster_bits_,
                                           META_REFCOUNT_TABLE);
}

Task<int> Qcow2State::write_dirty_entries(std::vector<uint32_t>& dirty, const std::vector<uint64_t>& table,
                                          uint64_t table_offset, uint64_t table_bytes, MetadataKind kind)
{
    std::sort(dirty.begin(), dirty.end());
    // Whole 512-byte sectors of the table around each changed entry (the
    // last one may be partial).
    constexpr uint64_t kPerSector = 512 / 8;
    uint8_t sector[512];
    uint64_t last_sector = UINT64_MAX;
    for (uint32_t idx : dirty) {
        uint64_t s = idx / kPerSector;
        if (s == last_sector || s * 512 >= table_bytes) {
            continue;
        }
        last_sector = s;
        for (uint64_t i = 0; i < kPerSector; i++) {
            uint64_t e = s * kPerSector + i;
            store_be64(sector + i * 8, e < table.size() ? table[e] : 0);
        }
        uint64_t off = table_offset + s * 512;
        uint64_t len = std::min<uint64_t>(512, table_bytes - s * 512);
        int ret = check_overlap(off, len, kind);
        if (ret < 0) {
            co_return ret;
        }
        IOVector qiov(sector, len);
        ret = co_await bdrv_co_pwritev(file(), off, len, qiov);
        if (ret < 0) {
            co_return ret;
        }
    }
    dirty.clear();
    co_return 0;
}

namespace {
constexpr uint32_t kL2Kinds = kind_bit(META_L2) | kind_bit(META_SNAPSHOT_L2);

// The kinds in `mask` (a cluster's) that a write allowed to replace the
// kinds in `allowed` must not meet.  An active L2 table may be a
// snapshot's too (shared until a write copies it): writing it as the
// active table is no overlap; anything else on a snapshot's L2 table is.
uint32_t conflicting_kinds(uint32_t mask, uint32_t allowed)
{
    if ((allowed & kind_bit(META_L2)) && (mask & kind_bit(META_L2))) {
        allowed |= kind_bit(META_SNAPSHOT_L2);
    }
    return mask & ~allowed;
}
}  // namespace

void Qcow2State::register_metadata(uint64_t offset, uint64_t len, MetadataKind kind)
{
    for (uint64_t c = offset >> cluster_bits_; c < (offset + len + cluster_size_ - 1) >> cluster_bits_; c++) {
        uint32_t& mask = metadata_clusters_[c];
        uint32_t others = mask & ~kind_bit(kind);
        if (kind_bit(kind) & kL2Kinds) {
            others &= ~kL2Kinds;  // an L2 table shared by the active L1 and a snapshot
        }
        if (others && !metadata_overlap_.first) {
            metadata_overlap_ = {lowest_kind(others), kind};
        }
        mask |= kind_bit(kind);
    }
}

void Qcow2State::unregister_metadata(uint64_t offset, uint64_t len, MetadataKind kind)
{
    for (uint64_t c = offset >> cluster_bits_; c < (offset + len + cluster_size_ - 1) >> cluster_bits_; c++) {
        auto it = metadata_clusters_.find(c);
        if (it != metadata_clusters_.end() && !(it->second &= ~kind_bit(kind))) {
            metadata_clusters_.erase(it);
        }
    }
}

void Qcow2State::rebuild_metadata_map()
{
    metadata_clusters_.clear();
    metadata_overlap_ = {};
    register_metadata(0, cluster_size_, META_HEADER);
    register_metadata(header_.l1_table_offset, uint64_t(header_.l1_size) * 8, META_L1);
    register_metadata(header_.refcount_table_offset,
                      uint64_t(header_.refcount_table_clusters) << cluster_bits_, META_REFCOUNT_TABLE);
    for (uint64_t e : refcount_table_) {
        if (e & kRefTableOffsetMask) {
            register_metadata(e & kRefTableOffsetMask, cluster_size_, META_REFCOUNT_BLOCK);
        }
    }
    for (uint64_t e : l1_) {
        if (e & kOffsetMask) {
            register_metadata(e & kOffsetMask, cluster_size_, META_L2);
        }
    }
    for (const Snapshot& sn : snapshots_) {
        for (uint64_t l2 : sn.l2_tables) {
            register_metadata(l2, cluster_size_, META_SNAPSHOT_L2);
        }
    }
    register_metadata(header_.snapshots_offset, snapshots_size_, META_SNAPSHOT_TABLE);
    // Bitmaps: the directory and the tables of the valid ones (stale
    // tables were never checked; data clusters are not tracked, as in QEMU).
    register_metadata(bitmaps_ext_.dir_offset, bitmaps_ext_.dir_size, META_BITMAP_DIRECTORY);
    for (const PersistentBitmap& bm : bitmaps_) {
        if (!bm.stale) {
            register_metadata(bm.entry.table_offset, uint64_t(bm.entry.table_size) * 8, META_BITMAP);
        }
    }
    for (const Snapshot& sn : snapshots_) {
        register_metadata(sn.l1_table_offset, uint64_t(sn.l1_size) * 8, META_SNAPSHOT_L1);
    }
    if (const auto& z = header_.zoned) {
        register_metadata(z->meta_offset, z->meta_size, META_ZONE_WP);
        register_metadata(z->cond_offset, z->cond_size, META_ZONE_COND);
        register_metadata(z->zde_offset, z->zde_size, META_ZONE_DESC);
        for (const Snapshot& sn : snapshots_) {
            if (const auto& copy = sn.zone_state) {
                register_metadata(copy->wp_offset, z->meta_size, META_SNAPSHOT_ZONED);
                register_metadata(copy->cond_offset, copy->cond_offset ? uint64_t(z->nr_zones) : 0,
                                  META_SNAPSHOT_ZONED);
                register_metadata(copy->zde_offset, copy->zde_offset ? z->zde_size : 0,
                                  META_SNAPSHOT_ZONED);
            }
        }
    }
}

bool Qcow2State::validate_metadata_layout(Error& err) const
{
    auto [first, second] = metadata_overlap_;
    if (!first) {
        return true;
    }
    // Named as the write that would destroy the other: the header is never
    // rewritten over a table, a table of the lower kind is the older one.
    if (first == META_HEADER) {
        err.set("%s overlaps with %s", metadata_kind_name(second), metadata_kind_name(first));
    } else {
        err.set("%s overlaps with %s", metadata_kind_name(first), metadata_kind_name(second));
    }
    return false;
}

int Qcow2State::claim_metadata(uint64_t offset, uint64_t len, MetadataKind kind)
{
    int ret = check_overlap_mask(offset, len, 0);
    if (ret >= 0) {
        register_metadata(offset, len, kind);
    }
    return ret;
}

int Qcow2State::check_overlap(uint64_t offset, uint64_t len, MetadataKind kind)
{
    // Guest data in an external data file cannot hit metadata.
    if (kind == MetadataKind(0) && data_file_) {
        return 0;
    }
    return check_overlap_mask(offset, len, kind ? kind_bit(kind) : 0);
}

int Qcow2State::check_overlap_mask(uint64_t offset, uint64_t len, uint32_t allowed)
{
    if (len == 0) {
        return 0;
    }
    for (uint64_t c = offset >> cluster_bits_; c <= (offset + len - 1) >> cluster_bits_; c++) {
        auto it = metadata_clusters_.find(c);
        uint32_t conflicts = it != metadata_clusters_.end() ? conflicting_kinds(it->second, allowed) : 0;
        if (conflicts) {
            return signal_corruption(true, "Preventing invalid write on metadata (overlaps with %s)",
                                     metadata_kind_name(lowest_kind(conflicts)));
        }
    }
    return 0;
}

}  // namespace qemu::qcow2
