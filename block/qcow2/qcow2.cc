// qcow2: the node (open, I/O paths, flush, resize, status, info) and the
// driver (probe, create).  See block/qcow2/qcow2.h for the design.
#include "block/block-events.h"
#include "qcow2.h"

#include <cassert>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdarg>
#include <cstring>

#include <unistd.h>

#include "qemu/bswap.h"
#include "qemu/cutils.h"

namespace qemu::qcow2 {

namespace {

constexpr uint64_t kDefaultL2CacheMax = 32 * MiB;
constexpr uint64_t kDefaultCacheCleanInterval = 600;
// Deferred frees are applied at flushes; this many pending ranges force an
// early metadata flush so that memory and leaked space stay bounded.
constexpr size_t kMaxPendingFrees = 4096;

}  // namespace

DataIoGuard::DataIoGuard(Qcow2State& s, uint64_t h, uint64_t l) : host(h), len(l), s_(s)
{
    s_.data_io_.push_back(this);
}

DataIoGuard::~DataIoGuard()
{
    auto& v = s_.data_io_;
    v.erase(std::find(v.begin(), v.end(), this));
}

Qcow2State::~Qcow2State() = default;

// --- Corruption, header updates, dirty bit ----------------------------------

int Qcow2State::signal_corruption(bool fatal, const char* fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    bool first = !corrupt_;
    fatal = fatal && !read_only();
    if (first) {
        // QEMU prints these without a program name.
        if (fatal) {
            report_plain("qcow2: Marking image as corrupt: %s; further corruption events will "
                         "be suppressed\n", msg);
        } else {
            report_plain("qcow2: Image is corrupt: %s; further non-fatal corruption events will "
                         "be suppressed\n", msg);
        }
        block_event_image_corrupted({node_name(), msg, std::nullopt, std::nullopt, fatal});
    }
    corrupt_ = true;
    if (fatal && !(header_.incompatible_features & INCOMPAT_CORRUPT)) {
        header_.incompatible_features |= INCOMPAT_CORRUPT;
        corrupt_header_write_ = write_header_fields();
    }
    return -EIO;
}

Task<int> Qcow2State::write_header_fields()
{
    std::vector<uint8_t> buf;
    Error err;
    if (!header_.serialize(buf, err)) {
        co_return -EINVAL;
    }
    // Only the fixed fields: extensions after them stay untouched.
    uint64_t len = header_.version == 2 ? kV2HeaderLength : kV3MinHeaderLength;
    IOVector qiov(buf.data(), len);
    co_return co_await bdrv_co_pwritev(file(), 0, len, qiov);
}

Task<int> Qcow2State::rewrite_header(Error& err)
{
    std::vector<uint8_t> buf;
    if (!header_.serialize(buf, err)) {
        co_return -EINVAL;
    }
    IOVector qiov(buf.data(), buf.size());
    int ret = co_await bdrv_co_pwritev(file(), 0, buf.size(), qiov);
    if (ret < 0) {
        err.set_errno(-ret, "Could not write qcow2 header");
    }
    co_return ret;
}

Task<int> Qcow2State::mark_dirty()
{
    if (dirty_marked_) {
        co_return 0;
    }
    header_.incompatible_features |= INCOMPAT_DIRTY;
    int ret = co_await write_header_fields();
    if (ret >= 0) {
        ret = co_await bdrv_co_flush(file()->bs.get());
    }
    if (ret >= 0) {
        dirty_marked_ = true;
    }
    co_return ret;
}

Task<int> Qcow2State::mark_clean()
{
    if (!(header_.incompatible_features & INCOMPAT_DIRTY)) {
        co_return 0;
    }
    header_.incompatible_features &= ~INCOMPAT_DIRTY;
    int ret = co_await write_header_fields();
    if (ret >= 0) {
        ret = co_await bdrv_co_flush(file()->bs.get());
    }
    dirty_marked_ = false;
    co_return ret;
}

Task<int> Qcow2State::sync_all_metadata()
{
    int ret = co_await flush_metadata();
    if (ret >= 0) {
        ret = co_await refblock_cache_->write_back();
    }
    if (ret >= 0) {
        ret = co_await write_reftable_entries();
    }
    if (ret >= 0) {
        ret = co_await bdrv_co_flush(file()->bs.get());
    }
    co_return ret;
}

Task<int> Qcow2State::flush_metadata()
{
    assert(lock_.locked());
    // Caller holds lock_.
    bool l2_dirty = l2_cache_->has_dirty() || !dirty_l1_.empty();
    int ret = 0;
    if (lazy_refcounts_ && l2_dirty) {
        // Refcounts may lag behind mappings only while the dirty bit is on
        // disk: the next open then repairs them.
        ret = co_await mark_dirty();
        if (ret < 0) {
            co_return ret;
        }
    }
    if (!(lazy_refcounts_ && dirty_marked_)) {
        ret = co_await refblock_cache_->write_back();
        if (ret >= 0 && !dirty_reftable_.empty()) {
            ret = co_await bdrv_co_flush(file()->bs.get());
            if (ret >= 0) {
                ret = co_await write_reftable_entries();
            }
        }
        if (ret < 0) {
            co_return ret;
        }
    }
    if (l2_dirty) {
        // Data and refcounts first, then the L2 tables that point at them,
        // then the L1 entries that point at those tables.
        ret = co_await bdrv_co_flush(file()->bs.get());
        if (ret >= 0 && data_file_) {
            ret = co_await bdrv_co_flush(data_file_->bs.get());  // the data lives there
        }
        if (ret >= 0) {
            ret = co_await l2_cache_->write_back();
        }
        if (ret >= 0 && !dirty_l1_.empty()) {
            ret = co_await bdrv_co_flush(file()->bs.get());
            if (ret >= 0) {
                ret = co_await write_l1_entries();
            }
        }
        if (ret < 0) {
            co_return ret;
        }
    }
    if (!pending_frees_.empty()) {
        // Nothing on disk may reference a cluster whose refcount drops.
        ret = co_await bdrv_co_flush(file()->bs.get());
        if (ret >= 0) {
            ret = co_await apply_pending_frees();
        }
        if (ret >= 0 && !(lazy_refcounts_ && dirty_marked_)) {
            ret = co_await refblock_cache_->write_back();
        }
        if (ret < 0) {
            co_return ret;
        }
    }
    co_return 0;
}

// --- Open and close ----------------------------------------------------------

bool Qcow2State::take_open_options(QDict& options, OpenOptions& o, Error& err)
{
    Error opt_err;
    o.l2_cache = options.take("l2-cache-size");
    o.refcount_cache = options.take("refcount-cache-size");
    o.cache = options.take("cache-size");
    o.l2_entry = options.take("l2-cache-entry-size");
    auto clean_interval = take_number(options, "cache-clean-interval", kDefaultCacheCleanInterval, opt_err);
    o.lazy = options.take("lazy-refcounts");
    o.pass_request = options.take("pass-discard-request");
    auto pass_snapshot = take_bool(options, "pass-discard-snapshot", true, opt_err);
    auto pass_other = take_bool(options, "pass-discard-other", false, opt_err);
    o.overlap = take_string(options, "overlap-check", "cached");
    if (opt_err || !clean_interval || !pass_snapshot || !pass_other) {
        err = opt_err;
        return false;
    }
    if (o.overlap != "none" && o.overlap != "constant" && o.overlap != "cached" && o.overlap != "all") {
        err.set("Unsupported value '%s' for qcow2 option 'overlap-check'. Allowed are any of the "
                "following: none, constant, cached, all", o.overlap.c_str());
        return false;
    }
    o.clean_interval = *clean_interval;
    o.pass_snapshot = *pass_snapshot;
    o.pass_other = *pass_other;
    return true;
}

Task<int> Qcow2State::read_header(Error& err)
{
    // The header cluster (its size is known only once cluster_bits is).
    uint64_t file_size = file()->bs->total_bytes();
    uint64_t head_len = std::min<uint64_t>(file_size, 1ULL << kMaxClusterBits);
    AlignedBuffer head(std::max<uint64_t>(head_len, 512), 4096);
    memset(head.data(), 0, head.size());
    if (head_len) {
        IOVector qiov(head.data(), head_len);
        int ret = co_await bdrv_co_preadv(file(), 0, head_len, qiov);
        if (ret < 0) {
            err.set_errno(-ret, "Could not read qcow2 header");
            co_return ret;
        }
    }
    header_.tolerate_header_faults = open_flags() & BDRV_O_CHECK;
    if (!header_.parse(head.data(), head_len, file_size, err)) {
        co_return -EINVAL;
    }
    cluster_bits_ = header_.cluster_bits;
    cluster_size_ = 1ULL << cluster_bits_;
    extended_l2_ = header_.incompatible_features & INCOMPAT_EXTL2;
    subcluster_bits_ = extended_l2_ ? cluster_bits_ - kSubclustersPerClusterBits : cluster_bits_;
    subcluster_size_ = 1ULL << subcluster_bits_;
    l2_bits_ = cluster_bits_ - (extended_l2_ ? 4 : 3);  // 16- or 8-byte entries
    l2_entries_ = 1ULL << l2_bits_;
    refcount_bits_ = header_.refcount_bits();
    refcount_block_bits_ = cluster_bits_ + 3 - header_.refcount_order;
    refcount_block_entries_ = 1ULL << refcount_block_bits_;
    refcount_max_ = refcount_bits_ == 64 ? UINT64_MAX : (1ULL << refcount_bits_) - 1;
    co_return 0;
}

bool Qcow2State::apply_open_options(const OpenOptions& o, Error& err)
{
    bool lazy = header_.compatible_features & COMPAT_LAZY_REFCOUNTS;
    if (o.lazy) {
        auto v = parse_bool_option("lazy-refcounts", *o.lazy, err);
        if (!v) {
            return false;
        }
        lazy = *v;
    }
    if (lazy && header_.version < 3) {
        err.set("Lazy refcounts require a qcow2 image with at least qemu 1.1 compatibility level");
        return false;
    }
    lazy_refcounts_ = lazy;
    pass_discard_other_ = o.pass_other;
    pass_discard_snapshot_ = o.pass_snapshot;
    overlap_snapshot_l2_ = o.overlap == "all";
    bool pass_req = open_flags() & BDRV_O_UNMAP;
    if (o.pass_request) {
        auto v = parse_bool_option("pass-discard-request", *o.pass_request, err);
        if (!v) {
            return false;
        }
        pass_req = *v;
    }
    discard_passthrough_ = pass_req;
    if (!create_caches(o, err)) {
        return false;
    }
    if (o.clean_interval > uint64_t(UINT32_MAX)) {
        err.set("Cache clean interval too big");
        return false;
    }
    cache_clean_interval_ns_ = int64_t(o.clean_interval) * 1000000000;
    start_cache_clean_timer(ctx());
    return true;
}

bool Qcow2State::create_caches(const OpenOptions& o, Error& err)
{
    // Cache sizes: by default the L2 cache covers the whole disk, up to
    // 32 MiB; the refcount cache is a quarter of it, at least 4 clusters.
    uint64_t l2_tables_needed = std::max<uint64_t>(l1_size_for(header_.size, cluster_bits_, extended_l2_), 1);
    uint64_t max_l2_bytes = l2_tables_needed * cluster_size_;  // covers the whole disk
    uint64_t l2_bytes = std::min(max_l2_bytes, std::max(kDefaultL2CacheMax, 2 * cluster_size_));
    uint64_t rc_bytes = std::max(l2_bytes / 4, 4 * cluster_size_);
    auto parse_cache = [&](const std::optional<std::string>& v, const char* name, uint64_t& out) {
        if (!v) {
            return true;
        }
        auto n = parse_size_option(name, *v, err);
        if (!n) {
            return false;
        }
        out = *n;
        return true;
    };
    uint64_t total = 0;
    uint64_t entry_size = cluster_size_;
    if (!parse_cache(o.l2_cache, "l2-cache-size", l2_bytes) ||
        !parse_cache(o.refcount_cache, "refcount-cache-size", rc_bytes) ||
        !parse_cache(o.cache, "cache-size", total) ||
        !parse_cache(o.l2_entry, "l2-cache-entry-size", entry_size)) {
        return false;
    }
    // QEMU's read_cache_sizes(): the L2 cache never exceeds what covers
    // the disk, and cache-size is split between the two.
    uint64_t l2_setting = l2_bytes;
    l2_bytes = std::min(l2_bytes, max_l2_bytes);
    if (o.cache) {
        uint64_t min_rc = 4 * cluster_size_;
        if (o.l2_cache && o.refcount_cache) {
            err.set("cache-size, l2-cache-size and refcount-cache-size may not be set at the same "
                    "time");
            return false;
        } else if (o.l2_cache && l2_setting > total) {
            err.set("l2-cache-size may not exceed cache-size");
            return false;
        } else if (o.refcount_cache && rc_bytes > total) {
            err.set("refcount-cache-size may not exceed cache-size");
            return false;
        }
        if (o.l2_cache) {
            rc_bytes = total - l2_bytes;
        } else if (o.refcount_cache) {
            l2_bytes = total - rc_bytes;
        } else if (total >= max_l2_bytes + min_rc) {
            l2_bytes = max_l2_bytes;
            rc_bytes = total - l2_bytes;
        } else {
            rc_bytes = std::min(total, min_rc);
            l2_bytes = total - rc_bytes;
        }
    }
    // The entry size is checked as QEMU does; our cache entries are whole
    // L2 tables whatever it is (the byte budget is the same).
    if (entry_size < 512 || entry_size > cluster_size_ || (entry_size & (entry_size - 1))) {
        err.set("L2 cache entry size must be a power of two between 512 and the cluster size "
                "(%llu)", (unsigned long long)cluster_size_);
        return false;
    }
    if (l2_bytes / cluster_size_ > uint64_t(INT32_MAX)) {
        err.set("L2 cache size too big");
        return false;
    }
    if (rc_bytes / cluster_size_ > uint64_t(INT32_MAX)) {
        err.set("Refcount cache size too big");
        return false;
    }
    l2_cache_ = std::make_unique<Qcow2Cache>(file(), cluster_size_, std::max<uint64_t>(l2_bytes / cluster_size_, 2), META_L2);
    refblock_cache_ = std::make_unique<Qcow2Cache>(file(), cluster_size_, std::max<uint64_t>(rc_bytes / cluster_size_, 4),
                                                   META_REFCOUNT_BLOCK);
    l2_cache_->before_write_back = [this]() { return flush_metadata(); };
    refblock_cache_->before_write_back = nullptr;  // refcount blocks may be written any time
    if (o.overlap != "none") {
        l2_cache_->overlap_check = [this](uint64_t off, size_t len) { return check_overlap(off, len, META_L2); };
        refblock_cache_->overlap_check = [this](uint64_t off, size_t len) {
            return check_overlap(off, len, META_REFCOUNT_BLOCK);
        };
    }
    return true;
}

Task<int> Qcow2State::load_l1_table(Error& err)
{
    int ret = co_await read_table(header_.l1_table_offset, header_.l1_size, l1_);
    if (ret < 0) {
        err.set_errno(-ret, "Could not read L1 table");
    }
    co_return ret;
}

Task<int> Qcow2State::prepare_writable(Error& err)
{
    if ((header_.incompatible_features & INCOMPAT_DIRTY) && !(open_flags() & BDRV_O_CHECK)) {
        // Refcounts may be stale after a crash with lazy refcounts.
        BdrvCheckResult result;
        int ret = co_await drv_check(result, BDRV_FIX_ERRORS | BDRV_FIX_LEAKS);
        if (ret < 0 || result.corruptions || result.check_errors) {
            err.set("Could not repair dirty image");
            co_return ret < 0 ? ret : -EIO;
        }
        ret = co_await mark_clean();
        if (ret < 0) {
            err.set_errno(-ret, "Could not clear the dirty bit");
            co_return ret;
        }
    }
    // Autoclear features we do not maintain become invalid as soon as
    // we write, so clear them now as the specification requires.
    if (header_.autoclear_features & ~kSupportedAutoclear) {
        header_.autoclear_features &= kSupportedAutoclear;
        int ret = co_await write_header_fields();
        if (ret >= 0) {
            ret = co_await bdrv_co_flush(file()->bs.get());
        }
        if (ret < 0) {
            err.set_errno(-ret, "Could not update qcow2 header");
            co_return ret;
        }
    }
    co_return 0;
}

Task<int> Qcow2State::drv_open(QDict& options, Error& err)
{
    OpenOptions opts;
    if (!take_open_options(options, opts, err)) {
        co_return -EINVAL;
    }
    if (!file()) {
        if (!co_await open_child("file", options, false, err)) {
            co_return -EINVAL;
        }
    }
    int ret = co_await read_header(err);
    if (ret < 0) {
        co_return ret;
    }
    // The generic layer opens the backing file after us; the zone rules
    // cannot hold over data that shows through from one.
    if (header_.zoned && !header_.backing_file.empty()) {
        err.set("Zoned images cannot have a backing file (image has backing file '%s')",
                header_.backing_file.c_str());
        co_return -ENOTSUP;
    }
    if (header_.zoned && (options.has_subtree("backing") || options.has("backing"))) {
        err.set("Zoned images cannot have a backing file");
        co_return -ENOTSUP;
    }
    set_backing_file(header_.backing_file, header_.backing_format);
    if ((header_.incompatible_features & INCOMPAT_CORRUPT) && !read_only() &&
        !(open_flags() & BDRV_O_CHECK)) {
        err.set("qcow2: Image is corrupt; cannot be opened read/write");
        co_return -EACCES;
    }
    corrupt_ = header_.incompatible_features & INCOMPAT_CORRUPT;
    ret = co_await open_data_file(options, err);
    if (ret < 0) {
        co_return ret;
    }
    if (!apply_open_options(opts, err)) {
        co_return -EINVAL;
    }
    ret = co_await load_l1_table(err);
    if (ret >= 0) {
        ret = co_await load_refcount_table(err);
    }
    if (ret >= 0) {
        ret = co_await read_snapshot_table(err);
    }
    if (ret >= 0) {
        ret = co_await bitmaps_open(err);
    }
    if (ret < 0) {
        co_return ret;
    }
    rebuild_metadata_map();
    // Writing one area would destroy the other; `qemu-img check` must
    // still get to see (and count) such an image.
    if (!read_only() && !(open_flags() & BDRV_O_CHECK) && !validate_metadata_layout(err)) {
        co_return -EINVAL;
    }
    fresh_from_ = (file()->bs->total_bytes() + cluster_size_ - 1) >> cluster_bits_;
    set_total_bytes(header_.size);
    if (header_.zoned) {
        ret = co_await zoned_open(err);
        if (ret < 0) {
            co_return ret;
        }
    }
    // Not a conditional expression: g++ 12 evaluates a co_await in one
    // whatever the condition.
    if (read_only()) {
        co_return 0;
    }
    co_return co_await prepare_writable(err);
}

Task<int> Qcow2State::open_data_file(QDict& options, Error& err)
{
    if (open_flags() & BDRV_O_NO_IO) {
        // qemu-img info: an untrusted image must not make us open (or
        // reveal the existence of) another file.
        options.take_subtree("data-file");
        options.erase("data-file");
        co_return 0;
    }
    // A missing child is no error here; a failing one is (err may hold a
    // stale message on entry, so the child gets its own).
    Error child_err;
    data_file_ = co_await open_child("data-file", options, true, child_err);
    if (child_err) {
        err = child_err;
        co_return -EINVAL;
    }
    if (has_data_file()) {
        if (!data_file_ && header_.data_file) {
            // The name from the image is a plain file name: no protocol
            // prefix, no json: (as QEMU since CVE-2024-4467), and like QEMU
            // 7.2 it is not made relative to the image.
            options.set("data-file.filename", *header_.data_file);
            data_file_ = co_await open_child("data-file", options, false, err);
            if (!data_file_) {
                co_return -EINVAL;
            }
        }
        if (!data_file_) {
            err.set("'data-file' is required for this image");
            co_return -EINVAL;
        }
    } else {
        if (data_file_) {
            err.set("'data-file' can only be set for images with an external data file");
            co_return -EINVAL;
        }
        if (data_file_is_raw()) {
            err.set("data-file-raw requires a data file");
            co_return -EINVAL;
        }
    }
    co_return 0;
}

void Qcow2State::start_cache_clean_timer(AioContext& ctx)
{
    if (cache_clean_interval_ns_ <= 0) {
        return;
    }
    cache_clean_timer_ = std::make_unique<Timer>(ctx, [this] {
        // Only when nobody holds the lock: the caches are then idle,
        // and this runs without suspending.
        if (lock_.try_lock()) {
            l2_cache_->drop_idle();
            refblock_cache_->drop_idle();
            lock_.unlock();
        }
        cache_clean_timer_->arm_ns(cache_clean_interval_ns_);
    });
    cache_clean_timer_->arm_ns(cache_clean_interval_ns_);
}

void Qcow2State::drv_attach_aio_context(AioContext& new_ctx)
{
    start_cache_clean_timer(new_ctx);
}

Task<void> Qcow2State::drv_close()
{
    cache_clean_timer_.reset();
    if (corrupt_header_write_.valid()) {
        co_await corrupt_header_write_;
        co_await bdrv_co_flush(file()->bs.get());
    }
    if (read_only() || !l2_cache_ || corrupt_) {
        co_return;  // nothing more is written to a corrupt image
    }
    co_await lock_.lock();
    Error bitmap_err;
    if (co_await bitmaps_store(bitmap_err) < 0) {
        error_report("Lost persistent bitmaps during inactivation of node '%s': %s",
                     node_name().c_str(), bitmap_err.pretty().c_str());
    }
    int ret = co_await flush_metadata();
    if (ret >= 0 && file_extended_) {
        // Give back what was extended ahead and never allocated.
        uint64_t end = fresh_from_ << cluster_bits_;
        if (file()->bs->total_bytes() > end) {
            Error err;
            co_await bdrv_co_truncate(file(), end, false, PreallocMode::Off, 0, err);
        }
    }
    if (ret >= 0 && dirty_marked_) {
        ret = co_await refblock_cache_->write_back();
        if (ret >= 0) {
            ret = co_await write_reftable_entries();
        }
        if (ret >= 0) {
            ret = co_await bdrv_co_flush(file()->bs.get());
        }
        if (ret >= 0) {
            co_await mark_clean();
        }
    }
    lock_.unlock();
}

// --- I/O -----------------------------------------------------------------------

Task<int> Qcow2State::drv_preadv(uint64_t offset, uint64_t bytes, IOVector& qiov,
                                 size_t qiov_offset, unsigned)
{
    if (data_inaccessible()) {
        co_return -EIO;
    }
    if (zones_) {
        co_return co_await zoned_read(offset, bytes, qiov, qiov_offset);
    }
    co_return co_await read_guest(offset, bytes, qiov, qiov_offset);
}

Task<int> Qcow2State::read_guest(uint64_t offset, uint64_t bytes, IOVector& qiov,
                                 size_t qiov_offset)
{
    while (bytes > 0) {
        co_await lock_.lock();
        Mapping m;
        int ret = co_await get_mapping(offset, bytes, m);
        if (ret < 0) {
            lock_.unlock();
            co_return ret;
        }
        switch (m.type) {
        case ClusterType::Unallocated:
            lock_.unlock();
            ret = co_await read_unallocated(offset, m.bytes, qiov, qiov_offset);
            break;
        case ClusterType::ZeroPlain:
        case ClusterType::ZeroAlloc:
            lock_.unlock();
            qiov.memset(qiov_offset, 0, m.bytes);
            break;
        case ClusterType::Normal: {
            DataIoGuard guard(*this, m.host_offset, m.bytes);
            lock_.unlock();
            ret = co_await bdrv_co_preadv(data_child(), m.host_offset, m.bytes, qiov, qiov_offset);
            break;
        }
        case ClusterType::Compressed:
            lock_.unlock();
            ret = co_await read_compressed(m.l2_entry, offset_into_cluster(offset), m.bytes, qiov,
                                           qiov_offset);
            break;
        }
        if (ret < 0) {
            co_return ret;
        }
        offset += m.bytes;
        bytes -= m.bytes;
        qiov_offset += m.bytes;
    }
    co_return 0;
}

Task<int> Qcow2State::read_unallocated(uint64_t offset, uint64_t bytes, IOVector& qiov,
                                       size_t qiov_offset)
{
    if (!backing()) {
        qiov.memset(qiov_offset, 0, bytes);
        co_return 0;
    }
    // The request path reads zeroes past the end of the backing node.
    co_return co_await bdrv_co_preadv(backing(), offset, bytes, qiov, qiov_offset);
}

Task<int> Qcow2State::drv_pwritev(uint64_t offset, uint64_t bytes, IOVector& qiov,
                                  size_t qiov_offset, unsigned flags)
{
    if (corrupt_ || data_inaccessible()) {
        co_return -EIO;
    }
    if ((flags & BDRV_REQ_WRITE_COMPRESSED) && has_data_file()) {
        co_return -ENOTSUP;  // as QEMU: no compressed clusters in a data file
    }
    if (bytes == 0 && (flags & BDRV_REQ_WRITE_COMPRESSED)) {
        // The end of a stream of compressed writes (qemu-img convert -c):
        // as QEMU, the file is rounded up to whole sectors, for readers
        // that read compressed clusters sector by sector.
        Error err;
        co_return co_await bdrv_co_truncate(file(), file()->bs->total_bytes(), false,
                                            PreallocMode::Off, 0, err);
    }
    if (!bitmaps_.empty()) {
        if (int ret = co_await bitmaps_note_change(offset, bytes); ret < 0) {
            co_return ret;
        }
    }
    if (zones_) {
        // Admission happens here, before anything can suspend, so that
        // writes are accepted in the order they were submitted.
        co_return co_await zoned_write(offset, bytes, &qiov, qiov_offset, flags, false, nullptr);
    }
    co_return co_await write_guest(offset, bytes, qiov, qiov_offset, flags);
}

Task<int> Qcow2State::write_guest(uint64_t offset, uint64_t bytes, IOVector& qiov,
                                  size_t qiov_offset, unsigned flags)
{
    if (flags & BDRV_REQ_WRITE_COMPRESSED) {
        // As in QEMU, a request of several clusters is compressed cluster
        // by cluster (write_compressed checks each one's alignment).
        while (bytes > 0) {
            uint64_t n = std::min(bytes, cluster_size_);
            int ret = co_await write_compressed(offset, n, qiov, qiov_offset);
            if (ret < 0) {
                co_return ret;
            }
            offset += n;
            bytes -= n;
            qiov_offset += n;
        }
        co_return 0;
    }
    while (bytes > 0) {
        co_await lock_.lock();
        uint64_t cur = bytes;
        std::shared_ptr<InFlightAlloc> join;
        while (co_await wait_for_dependencies(offset, cur, &join)) {
            cur = bytes;
        }
        if (join) {
            int ret = co_await write_joined(std::move(join), offset, cur, qiov, qiov_offset);
            if (ret == -EAGAIN) {
                continue;  // the allocation failed: start over
            }
            if (ret < 0) {
                co_return ret;
            }
            offset += cur;
            bytes -= cur;
            qiov_offset += cur;
            continue;
        }
        Mapping m;
        int ret = co_await get_mapping(offset, cur, m);
        if (ret < 0) {
            lock_.unlock();
            co_return ret;
        }
        uint64_t done;
        if (m.type == ClusterType::Normal && (m.l2_entry & kCopied)) {
            // Overwrite in place: no metadata changes.
            ret = check_overlap(m.host_offset, m.bytes, MetadataKind(0));
            if (ret < 0) {
                lock_.unlock();
                co_return ret;
            }
            DataIoGuard guard(*this, m.host_offset, m.bytes);
            lock_.unlock();
            ret = co_await bdrv_co_pwritev(data_child(), m.host_offset, m.bytes, qiov, qiov_offset);
            if (ret < 0) {
                co_return ret;
            }
            done = m.bytes;
        } else {
            ret = co_await write_allocating(offset, cur, qiov, qiov_offset);
            if (ret < 0) {
                co_return ret;
            }
            done = uint64_t(ret);
            if (pending_frees_.size() > kMaxPendingFrees) {
                co_await lock_.lock();
                ret = co_await flush_metadata();
                lock_.unlock();
                if (ret < 0) {
                    co_return ret;
                }
            }
        }
        offset += done;
        bytes -= done;
        qiov_offset += done;
    }
    co_return 0;
}

Task<int> Qcow2State::drv_pwrite_zeroes(uint64_t offset, uint64_t bytes, unsigned flags)
{
    if (corrupt_) {
        co_return -EIO;
    }
    if (zones_ && !data_inaccessible()) {
        // As data, through the zone rules, admitted whole: a request
        // crossing the zone capacity changes nothing.
        if (!bitmaps_.empty()) {
            if (int ret = co_await bitmaps_note_change(offset, bytes); ret < 0) {
                co_return ret;
            }
        }
        co_return co_await zoned_write(offset, bytes, nullptr, 0, 0, false, nullptr);
    }
    // Whole clusters, or with extended L2 entries whole subclusters.
    uint64_t unit_mask = subcluster_size_ - 1;
    bool whole = !(offset & unit_mask) && (!(bytes & unit_mask) || offset + bytes == total_bytes());
    if (header_.version < 3 || data_inaccessible()) {
        co_return -ENOTSUP;  // the generic layer writes zeroes instead
    }
    uint64_t unit_start = offset & ~unit_mask;
    uint64_t unit_end = std::min(unit_start + subcluster_size_, total_bytes());
    if (!whole) {
        // A piece of one unit becomes a zero unit only if the rest of it
        // reads as zeroes already (QEMU's qcow2_co_pwrite_zeroes); the
        // unit's type is checked again under the lock below.
        if (offset + bytes > unit_end) {
            co_return -ENOTSUP;
        }
        bool zero = co_await reads_as_zeroes(unit_start, offset - unit_start);
        if (zero) {
            zero = co_await reads_as_zeroes(offset + bytes, unit_end - (offset + bytes));
        }
        if (!zero) {
            co_return -ENOTSUP;
        }
    }
    if (!bitmaps_.empty()) {
        if (int ret = co_await bitmaps_note_change(offset, bytes); ret < 0) {
            co_return ret;
        }
    }
    co_await lock_.lock();
    if (!whole) {
        // Only a unit without data of its own: a write may have allocated
        // it since the check above.
        Mapping m;
        int ret = co_await get_mapping(unit_start, unit_end - unit_start, m);
        if (ret < 0 || m.type == ClusterType::Normal || m.type == ClusterType::Compressed ||
            m.bytes < unit_end - unit_start) {
            lock_.unlock();
            co_return ret < 0 ? ret : -ENOTSUP;
        }
        offset = unit_start;
        bytes = unit_end - unit_start;
    }
    int ret = 0;
    if (data_file_is_raw()) {
        // The raw data file must read as the guest does: zero it first.
        ret = co_await bdrv_co_pwrite_zeroes(data_file_, offset, bytes, flags & BDRV_REQ_MAY_UNMAP);
    }
    if (ret >= 0) {
        ret = co_await zero_clusters(offset, bytes, flags & BDRV_REQ_MAY_UNMAP);
    }
    lock_.unlock();
    co_return ret;
}

// Does [offset, offset + bytes) read as zeroes through the backing chain?
Task<bool> Qcow2State::reads_as_zeroes(uint64_t offset, uint64_t bytes)
{
    while (bytes > 0) {
        BlockStatus st;
        int ret = co_await bdrv_co_block_status_above(this, nullptr, true, offset, bytes, st);
        if (ret < 0 || !(st.flags & BDRV_BLOCK_ZERO) || st.pnum == 0) {
            co_return false;
        }
        uint64_t n = std::min(st.pnum, bytes);
        offset += n;
        bytes -= n;
    }
    co_return true;
}

Task<int> Qcow2State::drv_pdiscard(uint64_t offset, uint64_t bytes)
{
    if (corrupt_) {
        co_return -EIO;
    }
    if (offset_into_cluster(offset) || (offset_into_cluster(bytes) && offset + bytes != total_bytes())) {
        co_return -ENOTSUP;
    }
    if (zones_ || data_inaccessible()) {
        co_return -ENOTSUP;  // zones free their space by reset only
    }
    if (!bitmaps_.empty()) {
        if (int ret = co_await bitmaps_note_change(offset, bytes); ret < 0) {
            co_return ret;
        }
    }
    co_await lock_.lock();
    int ret = co_await discard_clusters(offset, bytes, false);
    lock_.unlock();
    co_return ret;
}

Task<int> Qcow2State::drv_flush_to_os()
{
    if (read_only()) {
        co_return 0;
    }
    if (corrupt_) {
        co_return -EIO;  // its metadata cannot be trusted to write back
    }
    co_await lock_.lock();
    // Write pointers to persist: taken first, so that every write they
    // cover has its mapping in the cache that flush_metadata writes.
    std::vector<std::pair<uint32_t, uint64_t>> wps;
    if (zones_) {
        for (uint32_t z : zones_->take_dirty()) {
            wps.emplace_back(z, zones_->durable_wp(z));
        }
    }
    int ret = co_await flush_metadata();
    if (ret >= 0 && !wps.empty()) {
        ret = co_await zoned_persist(wps);
    }
    if (ret < 0) {
        // Not (all) written: the next flush tries again.
        for (const auto& [z, wp] : wps) {
            zones_->mark_dirty(z);
        }
    }
    lock_.unlock();
    co_return ret;
}

Task<int> Qcow2State::drv_truncate(uint64_t offset, bool exact, PreallocMode prealloc, unsigned,
                                   Error& err)
{
    // As QEMU: snapshots keep their own size (goto restores it); v2
    // snapshot tables may lack it.
    if (!snapshots_.empty() && header_.version < 3) {
        err.set("Can't resize a v2 image which has snapshots");
        co_return -ENOTSUP;
    }
    if (header_.zoned) {
        err.set("Cannot resize a zoned image");
        co_return -ENOTSUP;
    }
    if (offset % 512) {
        err.set("The new size must be a multiple of 512");
        co_return -EINVAL;
    }
    // Bitmaps cover the whole disk: all of them are rewritten at close.
    if (!bitmaps_can_resize(err)) {
        co_return -ENOTSUP;
    }
    if (int ret = bitmaps_.empty() ? 0 : co_await bitmaps_prepare_change(true); ret < 0) {
        err.set_errno(-ret, "Failed to update the bitmap directory");
        co_return ret;
    }
    co_await lock_.lock();
    uint64_t old_size = header_.size;
    // As QEMU: a backing file that reaches into the new area must not
    // show through there, so it is made to read as zeroes.
    bool backing_shows = backing() && backing()->bs->total_bytes() > old_size;
    int ret = 0;
    if (offset < old_size) {
        if (prealloc != PreallocMode::Off) {
            lock_.unlock();
            err.set("Preallocation can't be used for shrinking an image");
            co_return -EINVAL;
        }
        uint64_t from = (offset + cluster_size_ - 1) & ~(cluster_size_ - 1);
        if (from < old_size) {
            ret = co_await discard_clusters(from, old_size - from, true);
        }
        if (ret < 0) {
            lock_.unlock();
            err.set_errno(-ret, "Failed to discard cropped clusters");
            co_return ret;
        }
    } else if (offset > old_size) {
        if (data_file_is_raw() && prealloc == PreallocMode::Off) {
            // A raw data file keeps every cluster mapped 1:1 (as QEMU).
            prealloc = PreallocMode::Metadata;
        }
        ret = co_await grow_l1_table(l1_size_for(offset, cluster_bits_, extended_l2_), err);
        if (ret < 0) {
            lock_.unlock();
            co_return ret;
        }
        if (prealloc != PreallocMode::Off) {
            ret = co_await preallocate(old_size, offset, prealloc, err);
            if (ret < 0) {
                lock_.unlock();
                co_return ret;
            }
        }
        // Whole clusters here, the old last cluster's tail below.
        uint64_t zero_from = (old_size + cluster_size_ - 1) & ~(cluster_size_ - 1);
        if (backing_shows && zero_from < offset) {
            ret = header_.version >= 3 ? co_await zero_clusters(zero_from, offset - zero_from, false)
                                       : -ENOTSUP;  // v2 cannot say "zero"
            if (ret < 0) {
                lock_.unlock();
                err.set_errno(-ret, "Failed to zero out new clusters");
                co_return ret;
            }
        }
    }
    if (data_file_ && prealloc == PreallocMode::Off && offset != old_size) {
        // An external data file follows the disk's size (preallocation
        // sizes it itself).
        ret = co_await bdrv_co_truncate(data_file_, offset, exact, PreallocMode::Off, 0, err);
        if (ret < 0) {
            lock_.unlock();
            co_return ret;
        }
    }
    ret = co_await flush_metadata();
    if (ret >= 0) {
        header_.size = offset;
        ret = co_await write_header_fields();
    }
    if (ret >= 0) {
        set_total_bytes(offset);
        bitmaps_resize(total_bytes());
    }
    lock_.unlock();
    if (ret < 0) {
        err.set_errno(-ret, "Failed to update the image size");
        co_return ret;
    }
    if (offset > old_size && offset_into_cluster(old_size)) {
        // What lies past the old end in its last cluster must read as
        // zeroes now that it is part of the disk.
        uint64_t end = std::min(offset, (old_size + cluster_size_ - 1) & ~(cluster_size_ - 1));
        set_total_bytes(offset);
        std::vector<uint8_t> zeroes(end - old_size, 0);
        IOVector q(zeroes.data(), zeroes.size());
        Mapping m;
        co_await lock_.lock();
        ret = co_await get_mapping(old_size, end - old_size, m);
        lock_.unlock();
        if (ret >= 0 && (m.type == ClusterType::Normal || m.type == ClusterType::Compressed ||
                         (m.type == ClusterType::Unallocated && backing_shows))) {
            ret = co_await drv_pwritev(old_size, end - old_size, q, 0, 0);
        }
        if (ret < 0) {
            err.set_errno(-ret, "Failed to zero the tail of the old last cluster");
            co_return ret;
        }
    }
    co_return 0;
}

// QEMU's qcow2_detect_metadata_preallocation(): when the refcounts claim
// clearly more clusters than the file has allocated on the host, the image
// was preallocated with metadata only and its data clusters may be holes.
// Called with lock_ held.
Task<bool> Qcow2State::detect_metadata_preallocation()
{
    BlockDriverState* f = file()->bs.get();
    int64_t allocated = co_await f->drv_get_allocated_file_size();
    if (allocated < 0) {
        co_return false;
    }
    uint64_t real_clusters = uint64_t(allocated) / cluster_size_;
    uint64_t threshold = std::max(real_clusters * 10 / 9, real_clusters + 2);
    uint64_t end = size_to_clusters(f->total_bytes());
    uint64_t count = 0;
    for (uint64_t i = 0; i < end && count < threshold; i++) {
        uint64_t refcount;
        if (co_await get_refcount(i, refcount) < 0) {
            co_return false;
        }
        count += refcount != 0;
    }
    co_return count >= threshold;
}

Task<int> Qcow2State::drv_block_status(bool, uint64_t offset, uint64_t bytes, BlockStatus& out)
{
    co_await lock_.lock();
    if (!metadata_preallocation_) {
        metadata_preallocation_ = co_await detect_metadata_preallocation();
    }
    Mapping m;
    int ret = co_await get_mapping(offset, bytes, m);
    lock_.unlock();
    if (ret < 0) {
        co_return ret;
    }
    out.pnum = m.bytes;
    switch (m.type) {
    case ClusterType::Unallocated:
        out.flags = 0;
        break;
    case ClusterType::ZeroPlain:
    case ClusterType::ZeroAlloc:
        out.flags = BDRV_BLOCK_ZERO | BDRV_BLOCK_ALLOCATED;
        break;
    case ClusterType::Normal:
        out.flags = BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
        if (*metadata_preallocation_) {
            out.flags |= BDRV_BLOCK_RECURSE;
        }
        break;
    case ClusterType::Compressed:
        out.flags = BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
        break;
    }
    // As QEMU, where there is a host cluster its offset is reported, also
    // for zero and (extended L2) unallocated subclusters.
    if (m.host_allocated && !data_inaccessible()) {
        out.flags |= BDRV_BLOCK_OFFSET_VALID;
        out.map = m.host_offset;
        out.file = data_child()->bs.get();
    }
    co_return 0;
}

void Qcow2State::drv_refresh_limits(BlockLimits& bl)
{
    // Any byte range works: partial clusters are handled here, and the
    // file layer pads what it must for its own alignment.
    bl.request_alignment = 1;
    bl.max_transfer = 0;
    bl.pdiscard_alignment = uint32_t(cluster_size_);
    bl.pwrite_zeroes_alignment = uint32_t(subcluster_size_);
    bl.max_pdiscard = 0;
    bl.max_pwrite_zeroes = 0;
    if (header_.zoned) {
        const ZonedExtension& z = *header_.zoned;
        bl.zoned = z.model == 2 ? BlockZoneModel::HostAware : BlockZoneModel::HostManaged;
        bl.zone_size = z.zone_size;
        bl.zone_capacity = z.zone_capacity;
        bl.nr_zones = z.nr_zones;
        bl.max_open_zones = z.max_open_zones;
        bl.max_active_zones = z.max_active_zones;
        bl.max_append_bytes = z.max_append_bytes;
        bl.zone_desc_ext_size = z.zd_extension_size;
        bl.write_granularity = 512;
        // One guest request is one admission: no splitting or padding
        // behind the zone rules' back (write-zeroes included).
        bl.request_alignment = 512;
        bl.pwrite_zeroes_alignment = 512;
    }
}

Task<int> Qcow2State::drv_change_backing_file(const std::string& name, const std::string& format,
                                               Error& err)
{
    if (!name.empty() && data_file_is_raw()) {
        // The raw data file alone would no longer say what the disk holds.
        err.set("A raw external data file cannot be combined with a backing file");
        co_return -EINVAL;
    }
    if (!name.empty() && header_.zoned) {
        err.set("Zoned images cannot have a backing file");
        co_return -ENOTSUP;
    }
    if (name.size() > kMaxBackingFileNameBytes) {
        err.set("Backing file name too long");
        co_return -EINVAL;
    }
    co_await lock_.lock();
    std::string old_file = std::move(header_.backing_file);
    std::string old_format = std::move(header_.backing_format);
    header_.backing_file = name;
    header_.backing_format = format;
    std::vector<uint8_t> buf;
    int ret = header_.serialize(buf, err) ? co_await rewrite_header(err) : -ENOSPC;
    if (ret >= 0) {
        ret = co_await bdrv_co_flush(file()->bs.get());
        if (ret < 0) {
            err.set_errno(-ret, "Could not write qcow2 header");
        }
    }
    if (ret < 0) {
        header_.backing_file = std::move(old_file);
        header_.backing_format = std::move(old_format);
    } else {
        set_backing_file(name, format);
    }
    lock_.unlock();
    co_return ret;
}

Task<int> Qcow2State::drv_make_empty(Error& err)
{
    if (corrupt_) {
        err.set("Image is corrupt");
        co_return -EIO;
    }
    // The whole disk changes (it reads the backing file again): persistent
    // bitmaps record it (QEMU's make_empty leaves them unaware).
    if (!bitmaps_.empty()) {
        if (int ret = co_await bitmaps_note_change(0, total_bytes()); ret < 0) {
            err.set_errno(-ret, "Failed to update the bitmap directory");
            co_return ret;
        }
    }
    co_await lock_.lock();
    // As QEMU's qcow2_make_empty(): images with nothing but the active
    // clusters get QEMU's fresh layout back; others discard every cluster.
    uint64_t l1_clusters = size_to_clusters(uint64_t(l1_.size()) * 8);
    bool completely = header_.version >= 3 && snapshots_.empty() && bitmaps_ext_.nb_bitmaps == 0 &&
                      3 + l1_clusters <= refcount_block_entries_ && !has_data_file() &&
                      !header_.zoned;
    int ret = completely ? co_await make_completely_empty()
                         : co_await discard_clusters(0, total_bytes(), true);
    if (ret >= 0) {
        ret = co_await flush_metadata();
    }
    lock_.unlock();
    if (ret < 0) {
        err.set_errno(-ret, "Failed to empty %s", filename().c_str());
    }
    co_return ret;
}

Task<int> Qcow2State::make_completely_empty()
{
    const uint64_t cs = cluster_size_;
    const uint64_t l1_clusters = size_to_clusters(uint64_t(l1_.size()) * 8);
    const uint64_t used = 3 + l1_clusters;
    // Whatever is cached goes out first; afterwards the old tables are
    // forgotten, their clusters are reused.
    int ret = co_await flush_metadata();
    if (ret < 0) {
        co_return ret;
    }
    for (uint64_t e : l1_) {
        if (e & kOffsetMask) {
            l2_cache_->discard(e & kOffsetMask);
        }
    }
    for (uint64_t e : refcount_table_) {
        if (e & ~kRefTableReservedMask) {
            refblock_cache_->discard(e & ~kRefTableReservedMask);
        }
    }
    // The refcounts are wrong until the end: the dirty bit makes the next
    // open repair them if we crash before.
    ret = co_await mark_dirty();
    if (ret < 0) {
        co_return ret;
    }
    // QEMU's layout of a new image: header, refcount table, its first
    // refcount block, the (empty) L1 table.
    ret = co_await bdrv_co_pwrite_zeroes(file(), header_.l1_table_offset, l1_clusters * cs, 0);
    if (ret >= 0) {
        ret = co_await bdrv_co_pwrite_zeroes(file(), cs, (used - 1) * cs, 0);
    }
    if (ret >= 0) {
        header_.l1_table_offset = 3 * cs;
        header_.refcount_table_offset = cs;
        header_.refcount_table_clusters = 1;
        ret = co_await write_header_fields();
    }
    AlignedBuffer block(cs, 4096);
    memset(block.data(), 0, cs);
    if (ret >= 0) {
        store_be64(block.data(), 2 * cs);
        IOVector q(block.data(), 8);
        ret = co_await bdrv_co_pwritev(file(), cs, 8, q);
    }
    if (ret >= 0) {
        memset(block.data(), 0, 8);
        for (uint64_t c = 0; c < used; c++) {
            refcount_entry_set(block.data(), c, refcount_bits_, 1);
        }
        IOVector q(block.data(), cs);
        ret = co_await bdrv_co_pwritev(file(), 2 * cs, cs, q);
    }
    if (ret >= 0) {
        ret = co_await bdrv_co_flush(file()->bs.get());
    }
    if (ret < 0) {
        co_return ret;  // the dirty bit stays: the next open repairs
    }
    std::fill(l1_.begin(), l1_.end(), 0);
    dirty_l1_.clear();
    refcount_table_.assign(cs / 8, 0);
    refcount_table_[0] = 2 * cs;
    dirty_reftable_.clear();
    pending_frees_.clear();  // their clusters are free already
    free_cluster_index_ = used;
    fresh_from_ = used;
    free_byte_offset_ = 0;
    metadata_preallocation_.reset();
    rebuild_metadata_map();
    ret = co_await mark_clean();
    if (ret >= 0) {
        Error err;
        ret = co_await bdrv_co_truncate(file(), used * cs, false, PreallocMode::Off, 0, err);
        file_extended_ = false;
    }
    co_return ret;
}

int Qcow2State::drv_get_info(BlockDriverInfo& info)
{
    info.cluster_size = uint32_t(cluster_size_);
    info.subcluster_size = uint32_t(subcluster_size_);
    // Where QEMU would keep saved VM state: after the L1 entries the disk needs.
    info.vm_state_offset = l1_size_for(total_bytes(), cluster_bits_, extended_l2_)
                           << (cluster_bits_ + l2_bits_);
    info.is_dirty = header_.incompatible_features & INCOMPAT_DIRTY;
    return 0;
}

void Qcow2State::drv_get_specific_info(nlohmann::ordered_json& info) const
{
    nlohmann::ordered_json data;
    if (header_.version == 2) {
        data["compat"] = "0.10";
        data["compression-type"] = header_.compression_type == CompressionType::Zstd ? "zstd" : "zlib";
        data["refcount-bits"] = refcount_bits_;
    } else {
        data["compat"] = "1.1";
        // Members are added in QEMU's schema order (it decides the order
        // of members that share a hash bucket; see include/qemu/qjson.h).
        if (header_.data_file) {
            data["data-file"] = *header_.data_file;
        }
        if (has_data_file()) {
            data["data-file-raw"] = data_file_is_raw();
        }
        data["compression-type"] = header_.compression_type == CompressionType::Zstd ? "zstd" : "zlib";
        data["lazy-refcounts"] = bool(header_.compatible_features & COMPAT_LAZY_REFCOUNTS);
        data["refcount-bits"] = refcount_bits_;
        if (!bitmaps_.empty()) {
            data["bitmaps"] = bitmaps_info();
        }
        data["corrupt"] = bool(header_.incompatible_features & INCOMPAT_CORRUPT);
        data["extended-l2"] = bool(header_.incompatible_features & INCOMPAT_EXTL2);
        if (const auto& z = header_.zoned) {
            nlohmann::ordered_json zoned;
            zoned["mode"] = z->model == 2 ? "host-aware" : "host-managed";
            zoned["zone-size"] = z->zone_size;
            zoned["zone-capacity"] = z->zone_capacity;
            zoned["nr-zones"] = z->nr_zones;
            zoned["conventional-zones"] = z->conventional_zones;
            zoned["max-open-zones"] = z->max_open_zones;
            zoned["max-active-zones"] = z->max_active_zones;
            zoned["max-append-bytes"] = z->max_append_bytes;
            zoned["descriptor-extension-size"] = z->zd_extension_size;
            data["zoned"] = zoned;
        }
    }
    info["type"] = "qcow2";
    info["data"] = data;
}

// --- The driver ------------------------------------------------------------------

namespace {

struct CreateParams {
    std::optional<ZonedExtension> zoned;
    uint64_t size = 0;
    uint32_t version = 3;
    uint32_t cluster_bits = kDefaultClusterBits;
    uint32_t refcount_order = 4;
    bool lazy_refcounts = false;
    CompressionType compression = CompressionType::Zlib;
    PreallocMode prealloc = PreallocMode::Off;
    bool extended_l2 = false;
    std::optional<std::string> data_file;  // created by co_create
    bool data_file_raw = false;
    std::optional<std::string> backing_file;  // recorded as given, not opened
    std::optional<std::string> backing_format;
};

// zone.* options: defaults as documented in docs/interop/qcow2-zoned.rst;
// every inconsistency is an error naming the option, nothing is clamped.
bool parse_zone_params(QDict& opts, CreateParams& p, Error& err)
{
    auto mode = opts.take("zone.mode");
    const char* names[] = {"zone.size", "zone.capacity", "zone.conventional_zones",
                           "zone.max_open_zones", "zone.max_active_zones", "zone.max_append_bytes",
                           "zone.descriptor_extension_size"};
    if (!mode) {
        for (const char* n : names) {
            if (opts.has(n)) {
                err.set("%s requires zone.mode", n);
                return false;
            }
        }
        return true;
    }
    ZonedExtension z;
    if (*mode == "host-managed") {
        z.model = 1;
    } else if (*mode == "host-aware") {
        z.model = 2;
    } else {
        err.set("Parameter 'zone.mode' does not accept value '%s' (host-managed, host-aware)", mode->c_str());
        return false;
    }
    const uint64_t cs = 1ULL << p.cluster_bits;
    auto size = take_size(opts, "zone.size", 256 * MiB, err);
    if (!size) {
        return false;
    }
    if (*size == 0 || *size % cs) {
        err.set("zone.size (%llu) must be a non-zero multiple of the cluster size (%llu)",
                (unsigned long long)*size, (unsigned long long)cs);
        return false;
    }
    if (*size > kMaxZoneSize) {
        err.set("zone.size (%llu) exceeds the limit of %llu (2 TiB - 512)",
                (unsigned long long)*size, (unsigned long long)kMaxZoneSize);
        return false;
    }
    auto cap = take_size(opts, "zone.capacity", *size, err);
    if (!cap) {
        return false;
    }
    if (*cap == 0 || *cap > *size || *cap % 512) {
        err.set("zone.capacity (%llu) must be a non-zero multiple of 512 no larger than zone.size (%llu)",
                (unsigned long long)*cap, (unsigned long long)*size);
        return false;
    }
    uint64_t nr = (p.size + *size - 1) / *size;
    if (nr == 0 || nr > (UINT32_MAX / 8)) {
        err.set("size (%llu) must give between 1 and %u zones of zone.size (%llu)",
                (unsigned long long)p.size, UINT32_MAX / 8, (unsigned long long)*size);
        return false;
    }
    auto conv = take_number(opts, "zone.conventional_zones", 0, err);
    auto max_open = take_number(opts, "zone.max_open_zones", 0, err);
    auto max_active = take_number(opts, "zone.max_active_zones", 0, err);
    auto max_append = take_size(opts, "zone.max_append_bytes", 64 * KiB, err);
    auto zdes = take_size(opts, "zone.descriptor_extension_size", 0, err);
    if (!conv || !max_open || !max_active || !max_append || !zdes) {
        return false;
    }
    if (*conv >= nr) {
        err.set("zone.conventional_zones (%llu) must be smaller than the number of zones (%llu)",
                (unsigned long long)*conv, (unsigned long long)nr);
        return false;
    }
    uint64_t seq = nr - *conv;
    if (*max_active > seq) {
        err.set("zone.max_active_zones (%llu) exceeds the number of sequential zones (%llu)",
                (unsigned long long)*max_active, (unsigned long long)seq);
        return false;
    }
    if (*max_open > seq) {
        err.set("zone.max_open_zones (%llu) exceeds the number of sequential zones (%llu)",
                (unsigned long long)*max_open, (unsigned long long)seq);
        return false;
    }
    if (*max_active && *max_open > *max_active) {
        err.set("zone.max_open_zones (%llu) exceeds zone.max_active_zones (%llu)",
                (unsigned long long)*max_open, (unsigned long long)*max_active);
        return false;
    }
    if (*max_append == 0 || *max_append % 512 || *max_append >= *cap || *max_append > UINT32_MAX) {
        err.set("zone.max_append_bytes (%llu) must be a non-zero multiple of 512 smaller than "
                "zone.capacity (%llu)", (unsigned long long)*max_append, (unsigned long long)*cap);
        return false;
    }
    if (*zdes % 64 || *zdes > 255 * 64) {
        err.set("zone.descriptor_extension_size (%llu) must be a multiple of 64 up to 16320",
                (unsigned long long)*zdes);
        return false;
    }
    if (*size > p.size) {
        err.set("zone.size (%llu) must not be larger than size (%llu)", (unsigned long long)*size,
                (unsigned long long)p.size);
        return false;
    }
    z.zone_size = *size;
    z.zone_capacity = *cap;
    z.nr_zones = uint32_t(nr);
    z.conventional_zones = uint32_t(*conv);
    z.max_open_zones = uint32_t(*max_open);
    z.max_active_zones = uint32_t(*max_active);
    z.max_append_bytes = uint32_t(*max_append);
    z.zd_extension_size = uint32_t(*zdes);
    p.zoned = z;
    return true;
}

bool parse_create_params(QDict& opts, CreateParams& p, Error& err)
{
    auto size = take_size(opts, "size", 0, err);
    if (!size) {
        return false;
    }
    // As QEMU: the virtual size is rounded up to whole sectors (1234
    // bytes make a 1536-byte disk).
    if (*size > UINT64_MAX - 511) {
        err.set("Image size must be less than 8 EiB!");
        return false;
    }
    p.size = (*size + 511) & ~uint64_t(511);
    std::string compat = take_string(opts, "compat", "1.1");
    if (compat == "0.10" || compat == "v2") {
        p.version = 2;
    } else if (compat == "1.1" || compat == "v3") {
        p.version = 3;
    } else {
        err.set("Parameter 'version' does not accept value '%s'", compat.c_str());
        return false;
    }
    for (const char* unsupported : {"encrypt.format", "encryption"}) {
        if (opts.has(unsupported) && !(std::string(unsupported) == "encryption" &&
                                       *opts.get(unsupported) == "off")) {
            err.set("Option '%s' is not supported by this qcow2 driver yet", unsupported);
            return false;
        }
    }
    opts.erase("encryption");
    // The checks come in QEMU's order, so that the same options fail with
    // the same message.
    auto extended_l2 = take_bool(opts, "extended_l2", false, err);
    if (!extended_l2) {
        return false;
    }
    p.extended_l2 = *extended_l2;
    if (p.extended_l2 && p.version < 3) {
        err.set("Extended L2 entries are only supported with compatibility level 1.1 and above "
                "(use version=v3 or greater)");
        return false;
    }
    auto cluster_size = take_size(opts, "cluster_size", 1ULL << kDefaultClusterBits, err);
    if (!cluster_size) {
        return false;
    }
    if (*cluster_size < 512 || *cluster_size > 2 * MiB || (*cluster_size & (*cluster_size - 1))) {
        err.set("Cluster size must be a power of two between 512 and 2048k");
        return false;
    }
    p.cluster_bits = uint32_t(__builtin_ctzll(*cluster_size));
    if (p.extended_l2 && p.cluster_bits < kMinExtendedL2ClusterBits) {
        err.set("Extended L2 entries are only supported with cluster sizes of at least %u bytes",
                1u << kMinExtendedL2ClusterBits);
        return false;
    }
    p.data_file = opts.take("data_file");
    auto raw = take_bool(opts, "data_file_raw", false, err);
    if (!raw) {
        return false;
    }
    p.data_file_raw = *raw;
    std::string prealloc = take_string(opts, "preallocation", "off");
    if (!parse_prealloc_mode(prealloc, p.prealloc)) {
        err.set("Parameter 'preallocation' does not accept value '%s'", prealloc.c_str());
        return false;
    }
    p.backing_file = opts.take("backing_file");
    p.backing_format = opts.take("backing_fmt");
    if (p.backing_file && p.prealloc != PreallocMode::Off && !p.extended_l2) {
        // Preallocated clusters would hide the backing file.
        err.set("Backing file and preallocation can only be used at the same time if "
                "extended_l2 is on");
        return false;
    }
    if (p.backing_format && !p.backing_file) {
        err.set("Backing format cannot be used without backing file");
        return false;
    }
    auto lazy = take_bool(opts, "lazy_refcounts", false, err);
    if (!lazy) {
        return false;
    }
    p.lazy_refcounts = *lazy;
    auto refcount_bits = take_number(opts, "refcount_bits", 16, err);
    if (!refcount_bits) {
        return false;
    }
    if (*refcount_bits == 0 || *refcount_bits > 64 || (*refcount_bits & (*refcount_bits - 1))) {
        err.set("Refcount width must be a power of two and may not exceed 64 bits");
        return false;
    }
    p.refcount_order = uint32_t(__builtin_ctzll(*refcount_bits));
    std::string ct = take_string(opts, "compression_type", "zlib");
    if (ct == "zstd") {
        p.compression = CompressionType::Zstd;
    } else if (ct != "zlib") {
        err.set("Parameter 'compression-type' does not accept value '%s'", ct.c_str());
        return false;
    }
    if (!parse_zone_params(opts, p, err)) {
        return false;
    }
    if (p.version == 2) {
        if (p.zoned) {
            err.set("Zoned images require compatibility level 1.1 (use compat=1.1)");
            return false;
        }
        if (p.lazy_refcounts) {
            err.set("Lazy refcounts only supported with compatibility level 1.1 and above (use "
                    "version=v3 or greater)");
            return false;
        }
        if (p.refcount_order != 4) {
            err.set("Different refcount widths than 16 bits require compatibility level 1.1 or "
                    "above (use version=v3 or greater)");
            return false;
        }
    }
    if (p.data_file && p.version < 3) {
        err.set("External data files are only supported with compatibility level 1.1 and above "
                "(use version=v3 or greater)");
        return false;
    }
    if (p.data_file_raw && !p.data_file) {
        err.set("data-file-raw requires data-file");
        return false;
    }
    if (p.data_file_raw && p.backing_file) {
        err.set("Backing file and data-file-raw cannot be used at the same time");
        return false;
    }
    if (p.data_file && p.zoned) {
        err.set("Zoned images cannot have an external data file");
        return false;
    }
    if (p.backing_file && p.zoned) {
        err.set("Zoned images cannot have a backing file");
        return false;
    }
    if (p.data_file_raw && p.prealloc == PreallocMode::Off) {
        // A raw data file must be usable without the metadata, and the
        // metadata must agree: every cluster mapped, 1:1 (as QEMU).
        p.prealloc = PreallocMode::Metadata;
    }
    if (p.version == 2) {
        if (p.compression != CompressionType::Zlib) {
            err.set("Non-zlib compression type is only supported with compatibility level 1.1 "
                    "and above (use version=v3 or greater)");
            return false;
        }
    }
    return true;
}

class Qcow2Driver : public BlockDriver {
public:
    std::string_view name() const override { return "qcow2"; }
    bool supports_backing() const override { return true; }
    bool supports_compressed_writes() const override { return true; }

    const OptionSchema& open_schema() const override
    {
        static const OptionSchema schema = {
            {"l2-cache-size", OptionType::Size, "Maximum L2 table cache size", ""},
            {"l2-cache-entry-size", OptionType::Size, "Size of each entry in the L2 cache", ""},
            {"refcount-cache-size", OptionType::Size, "Maximum refcount block cache size", ""},
            {"cache-size", OptionType::Size, "Maximum combined metadata cache size", ""},
            {"cache-clean-interval", OptionType::Number, "Clean unused cache entries after this time (in seconds)", ""},
            {"lazy-refcounts", OptionType::Bool, "Postpone refcount updates", ""},
            {"pass-discard-request", OptionType::Bool, "Pass guest discard requests to the layer below", ""},
            {"pass-discard-snapshot", OptionType::Bool, "Generate discard requests when snapshot related space is freed", ""},
            {"pass-discard-other", OptionType::Bool, "Generate discard requests when other clusters are freed", ""},
            {"overlap-check", OptionType::String, "Selects which overlap checks to perform from a range of templates (none, constant, cached, all)", ""},
        };
        return schema;
    }

    // Ordered as QEMU prints the "Formatting" line; `-o help` sorts by name.
    const OptionSchema* create_schema() const override
    {
        static const OptionSchema schema = {
            {"encryption", OptionType::Bool, "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)", ""},
            {"encrypt.format", OptionType::String, "Encrypt the image, format choices: 'aes', 'luks'", ""},
            {"cluster_size", OptionType::Size, "qcow2 cluster size", "65536"},
            {"extended_l2", OptionType::Bool, "Extended L2 tables", "off"},
            {"preallocation", OptionType::String, "Preallocation mode (allowed values: off, metadata, falloc, full)", ""},
            {"compression_type", OptionType::String, "Compression method used for image cluster compression", "zlib"},
            {"zone.mode", OptionType::String, "Zone model: host-managed or host-aware (absent: not zoned)", ""},
            {"zone.size", OptionType::Size, "Zone size (default 256 MiB)", ""},
            {"zone.capacity", OptionType::Size, "Writable bytes per zone (default: the zone size)", ""},
            {"zone.conventional_zones", OptionType::Number, "Number of conventional zones at the start (default 0)", ""},
            {"zone.max_append_bytes", OptionType::Size, "Largest zone append (default 64 KiB)", ""},
            {"zone.max_active_zones", OptionType::Number, "Active zone limit (default 0: none)", ""},
            {"zone.max_open_zones", OptionType::Number, "Open zone limit (default 0: none)", ""},
            {"zone.descriptor_extension_size", OptionType::Size, "Zone descriptor extension bytes per zone, a multiple of 64 (default 0)", ""},
            {"size", OptionType::Size, "Virtual disk size", ""},
            {"compat", OptionType::String, "Compatibility level (v2 [0.10] or v3 [1.1])", ""},
            {"backing_file", OptionType::String, "File name of a base image", ""},
            {"backing_fmt", OptionType::String, "Image format of the base image", ""},
            {"data_file", OptionType::String, "File name of an external data file", ""},
            {"data_file_raw", OptionType::Bool, "The external data file must stay valid as a raw image", ""},
            {"lazy_refcounts", OptionType::Bool, "Postpone refcount updates", "off"},
            {"refcount_bits", OptionType::Number, "Width of a reference count entry in bits", "16"},
        };
        return &schema;
    }

    int probe(const uint8_t* buf, size_t len, const std::string&) const override
    {
        if (len >= 8 && load_be32(buf) == kMagic && load_be32(buf + 4) >= 2) {
            return 100;
        }
        return 0;
    }

    Task<int> co_create(const std::string& filename, QDict& opts, AioContext& ctx,
                        Error& err) const override;

    // qemu-img amend's options, QEMU's list (amend.cc has the rules);
    // encryption is never present, so the encrypt.* options only fail.
    const OptionSchema* amend_schema() const override
    {
        static const OptionSchema schema = {
            {"encrypt.state", OptionType::String, "Select new state of affected keyslots (active/inactive)", ""},
            {"encrypt.keyslot", OptionType::Number, "Select a single keyslot to modify explicitly", ""},
            {"encrypt.old-secret", OptionType::String, "Select all keyslots that match this password", ""},
            {"encrypt.new-secret", OptionType::String, "New secret to set in the matching keyslots. Empty string to erase", ""},
            {"encrypt.iter-time", OptionType::Number, "Time to spend in PBKDF in milliseconds", ""},
            {"size", OptionType::Size, "Virtual disk size", ""},
            {"compat", OptionType::String, "Compatibility level (v2 [0.10] or v3 [1.1])", ""},
            {"backing_file", OptionType::String, "File name of a base image", ""},
            {"backing_fmt", OptionType::String, "Image format of the base image", ""},
            {"data_file", OptionType::String, "File name of an external data file", ""},
            {"data_file_raw", OptionType::Bool, "The external data file must stay valid as a raw image", ""},
            {"lazy_refcounts", OptionType::Bool, "Postpone refcount updates", ""},
            {"refcount_bits", OptionType::Number, "Width of a reference count entry in bits", ""},
        };
        return &schema;
    }

    Task<int> co_measure(QDict& opts, BlockDriverState* in_bs, BlockMeasureInfo& out,
                         Error& err) const override
    {
        return qcow2_co_measure(opts, in_bs, out, err);
    }

    std::shared_ptr<BlockDriverState> new_node(AioContext& ctx) const override
    {
        return std::make_shared<Qcow2State>(*this, ctx);
    }
};

// Writes a new image into the (created) file `filename`: header, refcount
// table and block, then the driver itself sizes and preallocates it.
Task<int> format_image(const std::string& filename, const BlockDriver& proto,
                       const BlockDriver* data_proto, const CreateParams& p, AioContext& ctx,
                       Error& err)
{
    QDict file_opts;
    file_opts.set("driver", std::string(proto.name()));
    auto file = co_await bdrv_co_open(filename, file_opts, BDRV_O_RDWR | BDRV_O_PROTOCOL, ctx, err);
    if (!file) {
        co_return -EIO;
    }
    BdrvChild fc;
    fc.name = "file";
    fc.bs = file;

    // Cluster 0: header; 1: refcount table; 2: its first refcount block,
    // which counts clusters 0-2 (QEMU's layout, so images match).
    const uint64_t cs = 1ULL << p.cluster_bits;
    Header h;
    h.version = p.version;
    h.cluster_bits = p.cluster_bits;
    h.refcount_order = p.refcount_order;
    h.refcount_table_offset = cs;
    h.refcount_table_clusters = 1;
    h.header_length = p.version == 2 ? kV2HeaderLength : kV3HeaderLength;
    h.compression_type = p.compression;
    if (p.compression != CompressionType::Zlib) {
        h.incompatible_features |= INCOMPAT_COMPRESSION;
    }
    if (p.extended_l2) {
        h.incompatible_features |= INCOMPAT_EXTL2;
    }
    if (p.data_file) {
        h.incompatible_features |= INCOMPAT_DATA_FILE;
        h.data_file = p.data_file;
    }
    if (p.data_file_raw) {
        h.autoclear_features |= AUTOCLEAR_DATA_FILE_RAW;
    }
    if (p.lazy_refcounts) {
        h.compatible_features |= COMPAT_LAZY_REFCOUNTS;
    }
    std::vector<uint8_t> hdr;
    if (!h.serialize(hdr, err)) {
        co_return -EINVAL;
    }
    AlignedBuffer meta(3 * cs, 4096);
    memset(meta.data(), 0, 3 * cs);
    memcpy(meta.data(), hdr.data(), cs);
    store_be64(meta.data() + cs, 2 * cs);
    for (uint64_t c = 0; c < 3; c++) {
        refcount_entry_set(meta.data() + 2 * cs, c, h.refcount_bits(), 1);
    }
    IOVector q(meta.data(), 3 * cs);
    int ret = co_await bdrv_co_pwritev(&fc, 0, 3 * cs, q);
    if (ret < 0) {
        err.set_errno(-ret, "Could not write qcow2 header");
        co_return ret;
    }

    // Open what we wrote and let the driver do the rest: L1 table, size,
    // preallocation (and the data file's size).
    QDict node_opts;
    node_opts.set("driver", "qcow2");
    node_opts.set("file.driver", std::string(proto.name()));
    if (p.data_file) {
        node_opts.set("data-file.driver", std::string(data_proto->name()));
        node_opts.set("data-file.filename", *p.data_file);
    }
    file.reset();
    fc.bs.reset();
    auto bs = co_await bdrv_co_open(filename, node_opts, BDRV_O_RDWR, ctx, err);
    if (!bs) {
        co_return -EIO;
    }
    BdrvChild root;
    root.name = "root";
    root.bs = bs;
    ret = co_await bdrv_co_truncate(&root, p.size, false, p.prealloc, 0, err);
    if (ret >= 0 && p.zoned) {
        ret = co_await static_cast<Qcow2State*>(bs.get())->format_zoned(*p.zoned, err);
    }
    if (ret >= 0 && p.backing_file) {
        const std::string format = p.backing_format.value_or("");
        ret = co_await bs->drv_change_backing_file(*p.backing_file, format, err);
        if (ret < 0) {
            err.set_errno(-ret, "Could not assign backing file '%s' with format '%s'",
                          p.backing_file->c_str(), format.c_str());
        }
    }
    co_await bdrv_co_close(bs.get());
    co_return ret < 0 ? ret : 0;
}

Task<int> Qcow2Driver::co_create(const std::string& filename, QDict& opts, AioContext& ctx,
                                 Error& err) const
{
    CreateParams p;
    if (!parse_create_params(opts, p, err)) {
        co_return -EINVAL;
    }
    // The protocol layer gets what is left (nocow, ...), and an empty file.
    opts.erase("size");
    const BlockDriver* proto = bdrv_find_protocol(filename, err);
    if (!proto) {
        co_return -EINVAL;
    }
    // The external data file comes first, as in QEMU, with the same
    // protocol options; the driver gives it its size.  It is removed
    // again if the image cannot be made (unless it existed before).
    const BlockDriver* data_proto = nullptr;
    bool data_existed = false;
    if (p.data_file) {
        data_proto = bdrv_find_protocol(*p.data_file, err);
        if (!data_proto) {
            co_return -EINVAL;
        }
        data_existed = access(p.data_file->c_str(), F_OK) == 0;
        QDict data_opts = opts;
        int ret = co_await bdrv_co_create_file(*p.data_file, data_opts, ctx, err);
        if (ret < 0) {
            co_return ret;
        }
    }
    int ret = co_await bdrv_co_create_file(filename, opts, ctx, err);
    if (ret >= 0) {
        ret = co_await format_image(filename, *proto, data_proto, p, ctx, err);
    }
    if (ret < 0 && p.data_file && !data_existed) {
        unlink(p.data_file->c_str());
    }
    co_return ret;
}

}  // namespace

}  // namespace qemu::qcow2

namespace qemu {
const BlockDriver& bdrv_qcow2_driver()
{
    static const qcow2::Qcow2Driver driver;
    return driver;
}
}  // namespace qemu
