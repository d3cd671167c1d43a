// qcow2 zoned mode: an image that behaves like a zoned drive.  The zone
// rules live in ZoneStateMachine; this file loads and persists its state
// and puts every guest request through it.  Format: docs/interop/qcow2-zoned.rst.
//
// Persistence order (what a crash may leave):
//   - a write pointer is written only after the data below it and the L2
//     entries mapping that data are on disk (drv_flush_to_os writes the
//     metadata, syncs, then the write pointers);
//   - a reset writes the zone's write pointer (and syncs) before the
//     zone's clusters are unmapped, so a crash never leaves a write pointer
//     above unmapped data;
//   - read-only and offline conditions are written and synced at once;
//   - a finish zeroes what lies between the write pointer and the capacity
//     (see zone_finish_data) before its write pointer can be persisted;
//   - a zone write completes only once the earlier writes of its zone have,
//     so that what completed lies below the durable write pointer and the
//     next flush (or its own FUA) makes it durable.
// docs/devel/crash-testing.rst describes the tests that check all this.
#include <cstring>

#include "block/qcow2.h"
#include "qemu/bswap.h"

namespace qemu::qcow2 {

namespace {
// Bit 7 of a zone's condition byte: its descriptor extension is valid
// (docs/interop/qcow2-zoned.rst).
constexpr uint8_t kCondDescExtValid = 0x80;
}  // namespace

Task<int> Qcow2State::load_zone_state(uint64_t wp_offset, uint64_t cond_offset,
                                      std::vector<uint64_t>& entries, std::vector<uint8_t>& conds,
                                      std::unique_ptr<ZoneStateMachine>& machine, Error& err)
{
    const ZonedExtension& ext = *header_.zoned;
    ZoneGeometry g;
    g.model = ext.model == 2 ? BlockZoneModel::HostAware : BlockZoneModel::HostManaged;
    g.device_size = header_.size;
    g.zone_size = ext.zone_size;
    g.zone_capacity = ext.zone_capacity;
    g.nr_zones = ext.nr_zones;
    g.nr_conventional = ext.conventional_zones;
    g.max_open = ext.max_open_zones;
    g.max_active = ext.max_active_zones;
    auto zones = std::make_unique<ZoneStateMachine>(g);

    uint64_t wp_bytes = uint64_t(ext.nr_zones) * 8;
    AlignedBuffer wps(wp_bytes, 4096);
    IOVector q(wps.data(), wp_bytes);
    int ret = co_await bdrv_co_preadv(file(), wp_offset, wp_bytes, q);
    if (ret < 0) {
        err.set_errno(-ret, "Could not read the zone write pointers");
        co_return ret;
    }
    entries.resize(ext.nr_zones);
    conds.assign(ext.nr_zones, 0);
    if (cond_offset) {
        IOVector qc(conds.data(), conds.size());
        ret = co_await bdrv_co_preadv(file(), cond_offset, conds.size(), qc);
        if (ret < 0) {
            err.set_errno(-ret, "Could not read the zone conditions");
            co_return ret;
        }
    }
    for (uint32_t z = 0; z < ext.nr_zones; z++) {
        // Little-endian on disk, as the upstream proposal writes them on x86.
        uint64_t entry = load_le64(wps.data() + uint64_t(z) * 8);
        entries[z] = entry;
        bool conventional = entry & ZonedExtension::kConventionalFlag;
        if (conventional != (z < ext.conventional_zones) || (entry >> 60)) {
            err.set("Image is corrupt: write pointer entry of zone %u (0x%llx) is malformed", z,
                    (unsigned long long)entry);
            co_return -EINVAL;
        }
        if (conventional) {
            continue;
        }
        uint8_t cond = conds[z] & ~kCondDescExtValid;
        bool desc_ext_valid = conds[z] & kCondDescExtValid;
        if (cond > uint8_t(PersistentCondition::Offline) ||
            (desc_ext_valid && !ext.zd_extension_size)) {
            err.set("Image is corrupt: unknown condition %u of zone %u", conds[z], z);
            co_return -EINVAL;
        }
        uint64_t wp = entry & ZonedExtension::kWpMask;
        if (!zones->restore(z, wp, PersistentCondition(cond), desc_ext_valid)) {
            err.set("Image is corrupt: write pointer of zone %u (0x%llx) lies outside the zone", z,
                    (unsigned long long)wp);
            co_return -EINVAL;
        }
    }
    zones->finish_restore();
    machine = std::move(zones);
    co_return 0;
}

Task<int> Qcow2State::zoned_open(Error& err)
{
    // The areas are protected as metadata by rebuild_metadata_map().
    const ZonedExtension& ext = *header_.zoned;
    std::vector<uint8_t> conds;
    co_return co_await load_zone_state(ext.meta_offset, ext.cond_offset, wp_on_disk_, conds, zones_,
                                       err);
}

Task<int> Qcow2State::zoned_format(const ZonedExtension& requested, Error& err)
{
    // Caller holds lock_ on a freshly created image.
    ZonedExtension ext = requested;
    ext.meta_size = uint64_t(ext.nr_zones) * 8;
    int64_t meta = co_await alloc_clusters(ext.meta_size);
    if (meta < 0) {
        err.set_errno(-int(meta), "Could not allocate clusters for zoned metadata");
        co_return int(meta);
    }
    ext.meta_offset = uint64_t(meta);
    AlignedBuffer buf(ext.meta_size, 4096);
    for (uint32_t z = 0; z < ext.nr_zones; z++) {
        uint64_t entry = uint64_t(z) * ext.zone_size;
        if (z < ext.conventional_zones) {
            entry |= ZonedExtension::kConventionalFlag;
        }
        store_le64(buf.data() + uint64_t(z) * 8, entry);
    }
    IOVector q(buf.data(), ext.meta_size);
    int ret = co_await bdrv_co_pwritev(file(), ext.meta_offset, ext.meta_size, q);
    if (ret >= 0 && ext.zd_extension_size) {
        ext.zde_size = uint64_t(ext.nr_zones) * ext.zd_extension_size;
        int64_t zde = co_await alloc_clusters(ext.zde_size);
        if (zde < 0) {
            ret = int(zde);
        } else {
            ext.zde_offset = uint64_t(zde);
            AlignedBuffer zeroes(ext.zde_size, 4096);
            memset(zeroes.data(), 0, ext.zde_size);
            IOVector qz(zeroes.data(), ext.zde_size);
            ret = co_await bdrv_co_pwritev(file(), ext.zde_offset, ext.zde_size, qz);
        }
    }
    if (ret >= 0) {
        ret = co_await flush_metadata();
    }
    if (ret >= 0) {
        ret = co_await bdrv_co_flush(file()->bs.get());
    }
    if (ret < 0) {
        err.set_errno(-ret, "Could not write zoned metadata to disk");
        co_return ret;
    }
    header_.zoned = ext;
    header_.incompatible_features |= INCOMPAT_ZONED;
    ret = co_await rewrite_header(err);
    if (ret < 0) {
        co_return ret;
    }
    rebuild_metadata_map();
    co_return co_await zoned_open(err);
}

Task<int> Qcow2State::zoned_persist(const std::vector<std::pair<uint32_t, uint64_t>>& wps)
{
    // Caller holds lock_ and has just written the metadata; the sync makes
    // data and mappings durable before any write pointer that covers them.
    int ret = co_await bdrv_co_flush(file()->bs.get());
    if (ret < 0) {
        co_return ret;
    }
    const ZonedExtension& ext = *header_.zoned;
    // Whole sectors of the array, built from the values taken at the start
    // of the flush (later completions wait for the next flush) and, for the
    // other zones of a sector, from what is on disk.
    std::vector<std::pair<uint32_t, uint64_t>> sorted = wps;
    std::sort(sorted.begin(), sorted.end());
    constexpr uint32_t kPerSector = 512 / 8;
    size_t i = 0;
    while (i < sorted.size()) {
        uint32_t sector = sorted[i].first / kPerSector;
        uint32_t first = sector * kPerSector;
        uint32_t n = std::min(kPerSector, ext.nr_zones - first);
        std::vector<uint64_t> entries(wp_on_disk_.begin() + first, wp_on_disk_.begin() + first + n);
        for (; i < sorted.size() && sorted[i].first / kPerSector == sector; i++) {
            entries[sorted[i].first - first] = sorted[i].second;
        }
        uint8_t buf[512];
        for (uint32_t k = 0; k < n; k++) {
            store_le64(buf + uint64_t(k) * 8, entries[k]);
        }
        IOVector q(buf, uint64_t(n) * 8);
        uint64_t off = ext.meta_offset + uint64_t(first) * 8;
        ret = check_overlap(off, uint64_t(n) * 8, META_ZONED);
        if (ret >= 0) {
            ret = co_await bdrv_co_pwritev(file(), off, uint64_t(n) * 8, q);
        }
        if (ret < 0) {
            co_return ret;
        }
        std::copy(entries.begin(), entries.end(), wp_on_disk_.begin() + first);
    }
    co_return 0;
}

Task<void> Qcow2State::wait_zone_idle(uint32_t zone)
{
    while (zones_->busy(zone)) {
        co_await zone_writes_done_.wait();
    }
}

Task<int> Qcow2State::zoned_write(uint64_t offset, uint64_t bytes, IOVector& qiov,
                                  size_t qiov_offset, unsigned flags, bool append, uint64_t* pos)
{
    uint64_t at;
    ZoneStateMachine::WriteTicket ticket;
    ZoneError e = zones_->admit_write(offset, bytes, append, at, ticket);
    if (e != ZoneError::None) {
        co_return zone_error_to_errno(e);
    }
    int ret = co_await write_guest(at, bytes, qiov, qiov_offset, flags & ~BDRV_REQ_WRITE_COMPRESSED);
    zones_->complete_write(ticket);
    zone_writes_done_.restart_all();
    if (ret < 0) {
        co_return ret;
    }
    // Completion in write pointer order: until the earlier writes of the
    // zone finish, the durable write pointer stays below this write, so a
    // flush after its completion (or its FUA) could not make it durable.
    while (ticket.zone != UINT32_MAX && zones_->busy(ticket.zone) &&
           zones_->durable_wp(ticket.zone) < ticket.end) {
        co_await zone_writes_done_.wait();
    }
    if (pos) {
        *pos = at;
    }
    co_return 0;
}

Task<int> Qcow2State::zoned_read(uint64_t offset, uint64_t bytes, IOVector& qiov, size_t qiov_offset)
{
    // Zone by zone: what lies at or above a write pointer reads as zeroes
    // (whatever the clusters hold), an offline zone cannot be read.
    while (bytes > 0) {
        uint32_t z = zones_->zone_index(offset);
        uint64_t zone_end = zones_->zone_start(z) + zones_->zone_length(z);
        uint64_t n = std::min(bytes, zone_end - offset);
        if (zones_->state(z) == BlockZoneState::Offline) {
            co_return zone_error_to_errno(ZoneError::ZoneOffline);
        }
        uint64_t readable = zones_->readable_end(z);
        uint64_t data = readable > offset ? std::min(n, readable - offset) : 0;
        if (data) {
            int ret = co_await read_guest(offset, data, qiov, qiov_offset);
            if (ret < 0) {
                co_return ret;
            }
        }
        if (data < n) {
            qiov.memset(qiov_offset + data, 0, n - data);
        }
        offset += n;
        bytes -= n;
        qiov_offset += n;
    }
    co_return 0;
}

Task<int> Qcow2State::drv_zone_report(uint64_t offset, uint32_t& nr_zones, BlockZoneDescriptor* out)
{
    if (!zones_) {
        co_return -ENOTSUP;
    }
    if (offset >= total_bytes()) {
        co_return -EINVAL;
    }
    uint32_t first = zones_->zone_index(offset);
    uint32_t n = std::min(nr_zones, zones_->geometry().nr_zones - first);
    for (uint32_t i = 0; i < n; i++) {
        out[i] = zones_->describe(first + i);
    }
    nr_zones = n;
    co_return 0;
}

Task<int> Qcow2State::zone_condition_array()
{
    // Caller holds lock_.  The array is created on first use, which
    // lengthens the header extension (docs/interop/qcow2-zoned.rst).
    ZonedExtension& ext = *header_.zoned;
    if (ext.cond_offset) {
        co_return 0;
    }
    int64_t area = co_await alloc_clusters(ext.nr_zones);
    if (area < 0) {
        co_return int(area);
    }
    std::vector<uint8_t> conds(ext.nr_zones, 0);
    IOVector q(conds.data(), conds.size());
    int ret = co_await bdrv_co_pwritev(file(), uint64_t(area), conds.size(), q);
    if (ret >= 0) {
        ret = co_await flush_metadata();
    }
    if (ret >= 0) {
        ret = co_await bdrv_co_flush(file()->bs.get());
    }
    if (ret < 0) {
        co_return ret;
    }
    ext.cond_offset = uint64_t(area);
    ext.cond_size = ext.nr_zones;
    register_metadata(ext.cond_offset, ext.cond_size, META_ZONED);
    Error err;
    co_return co_await rewrite_header(err);
}

Task<int> Qcow2State::zone_set_condition(uint32_t zone)
{
    // Caller holds lock_.
    int ret = co_await zone_condition_array();
    if (ret < 0) {
        co_return ret;
    }
    const ZonedExtension& ext = *header_.zoned;
    uint8_t c = uint8_t(zones_->persistent_condition(zone));
    if (zones_->desc_ext_valid(zone)) {
        c |= kCondDescExtValid;
    }
    IOVector q(&c, 1);
    ret = check_overlap(ext.cond_offset + zone, 1, META_ZONED);
    if (ret >= 0) {
        ret = co_await bdrv_co_pwritev(file(), ext.cond_offset + zone, 1, q);
    }
    if (ret >= 0) {
        ret = co_await bdrv_co_flush(file()->bs.get());
    }
    co_return ret;
}

Task<int> Qcow2State::zone_reset_data(uint32_t zone)
{
    // Caller holds lock_.  The empty write pointer first, durably; only
    // then may the zone's clusters lose their mapping.
    uint64_t start = zones_->zone_start(zone);
    std::vector<std::pair<uint32_t, uint64_t>> wp;
    wp.emplace_back(zone, start);
    int ret = co_await zoned_persist(wp);
    if (ret >= 0) {
        ret = co_await bdrv_co_flush(file()->bs.get());
    }
    if (ret >= 0) {
        ret = co_await discard_clusters(start, zones_->zone_length(zone), true);
    }
    co_return ret;
}

Task<int> Qcow2State::zone_finish_data(uint32_t zone, uint64_t wp)
{
    // Caller holds lock_.  Finishing makes [wp, capacity) part of the zone,
    // reading as zeroes.  Clusters there are unmapped unless a crash left
    // them mapped (data whose write pointer never reached the disk, or a
    // reset whose unmapping did not): zero the rest of the write pointer's
    // cluster and unmap the clusters above it.
    uint64_t zone_end = zones_->zone_start(zone) + zones_->zone_length(zone);
    uint64_t cap_end = zones_->zone_start(zone) + zones_->zone_capacity(zone);
    uint64_t next = std::min((wp + cluster_size_ - 1) & ~(cluster_size_ - 1), zone_end);
    uint64_t head = std::min(next, cap_end) - std::min(wp, cap_end);
    // With extended L2 entries the rest of the cluster may be several runs
    // (data, zero or unallocated subclusters): zero each run of data.
    for (uint64_t pos = wp; pos < wp + head;) {
        Mapping m;
        int ret = co_await get_mapping(pos, wp + head - pos, m);
        if (ret < 0) {
            co_return ret;
        }
        if (m.type == ClusterType::Normal) {
            AlignedBuffer zeroes(m.bytes, 4096);
            memset(zeroes.data(), 0, m.bytes);
            IOVector q(zeroes.data(), m.bytes);
            ret = check_overlap(m.host_offset, m.bytes, MetadataKind(0));
            if (ret >= 0) {
                ret = co_await bdrv_co_pwritev(data_child(), m.host_offset, m.bytes, q);
            }
            if (ret < 0) {
                co_return ret;
            }
        }
        pos += m.bytes;
    }
    if (next < zone_end) {
        co_return co_await discard_clusters(next, zone_end - next, true);
    }
    co_return 0;
}

Task<int> Qcow2State::drv_zone_mgmt(BlockZoneOp op, uint64_t offset, uint64_t len)
{
    if (!zones_) {
        co_return -ENOTSUP;
    }
    if (corrupt_) {
        co_return -EIO;
    }
    const ZoneGeometry& g = zones_->geometry();
    uint64_t end = offset + len;
    if (offset % g.zone_size || (len % g.zone_size && end != g.device_size) || len == 0) {
        co_return zone_error_to_errno(ZoneError::InvalidRequest);
    }
    // Resets and finishes change what the zones read: persistent bitmaps
    // record them like writes (conservatively, the whole range).
    if ((op == BlockZoneOp::Reset || op == BlockZoneOp::Finish) && !bitmaps_.empty()) {
        if (int ret = co_await bitmaps_note_change(offset, len); ret < 0) {
            co_return ret;
        }
    }
    // Over the whole device, an operation skips conventional zones (QEMU's
    // reset-all); aimed at one, it is an error.
    bool whole_device = offset == 0 && end == g.device_size;
    uint32_t first = zones_->zone_index(offset);
    uint32_t last = zones_->zone_index(end - 1);
    for (uint32_t z = first; z <= last; z++) {
        if (zones_->is_conventional(z)) {
            if (whole_device) {
                continue;
            }
            co_return zone_error_to_errno(ZoneError::InvalidRequest);
        }
        // Reset-all is NVMe's "select all": it resets the zones that are
        // open, closed or full and leaves the others alone.
        if (whole_device && op == BlockZoneOp::Reset &&
            (zones_->state(z) == BlockZoneState::Empty ||
             zones_->state(z) == BlockZoneState::ReadOnly ||
             zones_->state(z) == BlockZoneState::Offline)) {
            continue;
        }
        // Resetting or finishing a zone with writes in flight would let
        // them land in the zone's next life, or below a write pointer
        // persisted before their data.  Writes are admitted without the
        // lock: the zone must be idle once it is held.
        bool drain = op == BlockZoneOp::Reset || op == BlockZoneOp::Finish;
        co_await lock_.lock();
        while (drain && zones_->busy(z)) {
            lock_.unlock();
            co_await wait_zone_idle(z);
            co_await lock_.lock();
        }
        BlockZoneState before = zones_->state(z);
        uint64_t wp_before = zones_->readable_end(z);
        bool desc_ext_before = zones_->desc_ext_valid(z);
        ZoneError e = zones_->manage(op, z);
        int ret = zone_error_to_errno(e);
        if (e == ZoneError::None) {
            if (op == BlockZoneOp::Reset && before != BlockZoneState::Empty) {
                // The write pointer first: a crash in between leaves an
                // unwritten zone that is still closed by its extension.
                ret = co_await zone_reset_data(z);
                if (ret >= 0 && desc_ext_before) {
                    ret = co_await zone_set_condition(z);
                }
            } else if (op == BlockZoneOp::Finish && before != BlockZoneState::Full) {
                ret = co_await zone_finish_data(z, wp_before);
            } else if (op == BlockZoneOp::SetReadOnly || op == BlockZoneOp::SetOffline) {
                ret = co_await zone_set_condition(z);
            }
        }
        lock_.unlock();
        if (ret < 0) {
            co_return ret;
        }
    }
    // The reset zones' clusters are unmapped now; like every free, they
    // return to the allocator and the host (hole punching) with the next
    // flush, once the unmapped tables are on disk.
    co_return 0;
}

Task<int> Qcow2State::drv_zone_append(uint64_t& offset, IOVector& qiov, unsigned flags)
{
    if (!zones_) {
        co_return -ENOTSUP;
    }
    if (corrupt_) {
        co_return -EIO;
    }
    uint64_t len = qiov.size();
    if (len == 0 || len % 512 || len > header_.zoned->max_append_bytes) {
        co_return zone_error_to_errno(ZoneError::InvalidRequest);
    }
    // The zone's new bytes are known only afterwards: the marks first.
    if (int ret = bitmaps_.empty() ? 0 : co_await bitmaps_prepare_change(false); ret < 0) {
        co_return ret;
    }
    uint64_t pos;
    int ret = co_await zoned_write(offset, len, qiov, 0, flags, true, &pos);
    if (ret >= 0) {
        offset = pos;
        bitmaps_mark_dirty(pos, len);
    }
    co_return ret;
}

Task<int> Qcow2State::drv_zone_set_desc_ext(uint64_t offset, const uint8_t* data)
{
    if (!zones_) {
        co_return -ENOTSUP;
    }
    if (corrupt_) {
        co_return -EIO;
    }
    const ZonedExtension& ext = *header_.zoned;
    uint32_t z = zones_->zone_index(offset);
    co_await lock_.lock();
    ZoneError e = zones_->set_desc_ext_valid(z);
    int ret = zone_error_to_errno(e);
    if (e == ZoneError::None) {
        // The data durably first, then the condition byte that makes it
        // valid (zone_set_condition syncs).
        uint64_t at = ext.zde_offset + uint64_t(z) * ext.zd_extension_size;
        IOVector q(const_cast<uint8_t*>(data), ext.zd_extension_size);
        ret = check_overlap(at, ext.zd_extension_size, META_ZONED);
        if (ret >= 0) {
            ret = co_await bdrv_co_pwritev(file(), at, ext.zd_extension_size, q);
        }
        if (ret >= 0) {
            ret = co_await bdrv_co_flush(file()->bs.get());
        }
        if (ret >= 0) {
            ret = co_await zone_set_condition(z);
        }
        if (ret < 0) {
            // Not valid on disk: not valid here either.
            zones_->manage(BlockZoneOp::Reset, z);
        }
    }
    lock_.unlock();
    co_return ret;
}

Task<int> Qcow2State::drv_zone_get_desc_ext(uint64_t offset, uint8_t* data)
{
    if (!zones_) {
        co_return -ENOTSUP;
    }
    const ZonedExtension& ext = *header_.zoned;
    uint32_t z = zones_->zone_index(offset);
    if (zones_->is_conventional(z)) {
        co_return -EINVAL;
    }
    // Under the lock, so that a concurrent set is seen whole or not at all.
    co_await lock_.lock();
    int ret = 0;
    if (zones_->desc_ext_valid(z)) {
        IOVector q(data, ext.zd_extension_size);
        ret = co_await bdrv_co_preadv(file(), ext.zde_offset + uint64_t(z) * ext.zd_extension_size,
                                      ext.zd_extension_size, q);
    } else {
        memset(data, 0, ext.zd_extension_size);
    }
    lock_.unlock();
    co_return ret;
}

}  // namespace qemu::qcow2
