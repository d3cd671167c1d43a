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
//   - a failed zone operation is undone: a write's admission (and those
//     after it in its zone) in memory, a reset, finish or fault by putting
//     the zone back and persisting its old write pointer (mappings first)
//     and condition again; what cannot be undone (a reset's unmapping)
//     comes last and cannot fail the operation;
//   - a zone write completes only once the earlier writes of its zone have,
//     so that what completed lies below the durable write pointer and the
//     next flush (or its own FUA) makes it durable.
// docs/devel/crash-testing.rst describes the tests that check all this.
#include <cassert>
#include <algorithm>
#include <cstring>

#include "qcow2.h"
#include "qemu/bswap.h"

namespace qemu::qcow2 {

namespace {
// Bit 7 of a zone's condition byte: its descriptor extension is valid
// (docs/interop/qcow2-zoned.rst).
constexpr uint8_t kCondDescExtValid = 0x80;

// What docs/interop/qcow2-zoned.rst forbids in zone `z`'s write pointer
// entry and condition byte, or "" when nothing.  Either way `entry` and
// `cond` come back as a valid state: a misplaced write pointer at the zone
// start (nothing above it was acknowledged as written), an unaligned one
// rounded down, one past the capacity at the capacity (full), an unknown
// condition as 0.
std::string zone_fault(const ZonedExtension& ext, uint64_t disk_size, uint32_t z, uint64_t& entry,
                       uint8_t& cond)
{
    uint64_t start = uint64_t(z) * ext.zone_size;
    uint64_t end = std::min(start + ext.zone_size, disk_size);
    uint64_t cap_end = start + std::min(ext.zone_capacity, end - start);
    std::string fault;
    auto note = [&](std::string what) {
        if (fault.empty()) {
            fault = std::move(what);
        }
    };
    if (z < ext.conventional_zones) {
        uint64_t expected = start | ZonedExtension::kConventionalFlag;
        if (entry != expected) {
            note(string_printf("write pointer entry of zone %u (0x%llx) is malformed", z,
                               (unsigned long long)entry));
            entry = expected;
        }
        if (cond) {
            note(string_printf("conventional zone %u has condition %u", z, cond));
            cond = 0;
        }
        return fault;
    }
    uint64_t wp = entry & ZonedExtension::kWpMask;
    if (entry >> 59) {
        note(string_printf("write pointer entry of zone %u (0x%llx) is malformed", z,
                           (unsigned long long)entry));
    }
    if ((cond & ~kCondDescExtValid) > uint8_t(PersistentCondition::Offline) ||
        ((cond & kCondDescExtValid) && !ext.zd_extension_size)) {
        note(string_printf("unknown condition %u of zone %u", cond, z));
        cond = 0;
    }
    if (wp % 512) {
        note(string_printf("write pointer of zone %u (0x%llx) is not a multiple of 512", z,
                           (unsigned long long)wp));
        wp -= wp % 512;
    }
    if (wp < start || wp > end) {
        note(string_printf("write pointer of zone %u (0x%llx) lies outside the zone", z,
                           (unsigned long long)wp));
        wp = start;
    } else if (wp > cap_end && wp != end) {
        // Past the capacity only a finished zone's end is allowed.
        note(string_printf("write pointer of zone %u (0x%llx) lies between the zone capacity and "
                           "the zone end", z, (unsigned long long)wp));
        wp = cap_end;
    }
    entry = wp;
    return fault;
}
}  // namespace

void ZoneWpEntries::reset(const ZonedExtension& ext)
{
    zone_size_ = ext.zone_size;
    conventional_zones_ = ext.conventional_zones;
    blocks_.assign(ext.nr_zones, 0);
}

Task<int> Qcow2State::load_zone_state(uint64_t wp_offset, uint64_t cond_offset,
                                      ZoneWpEntries& entries, std::vector<uint8_t>* conds,
                                      std::unique_ptr<ZoneStateMachine>& machine, Error& err,
                                      std::vector<ZoneFault>* faults)
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
    constexpr uint32_t kChunkZones = 64 * 1024;
    std::unique_ptr<ZoneStateMachine> zones;
    AlignedBuffer wps;
    std::vector<uint8_t> chunk_conds(std::min(kChunkZones, ext.nr_zones), 0);
    // The zone count is bounded by the format, not by this host's memory.
    try {
        zones = std::make_unique<ZoneStateMachine>(g);
        wps = AlignedBuffer(uint64_t(chunk_conds.size()) * 8, 4096);
        entries.reset(ext);
        if (conds) {
            conds->assign(ext.nr_zones, 0);
        }
    } catch (const std::bad_alloc&) {
        err.set("Could not allocate memory for the state of %u zones", ext.nr_zones);
        co_return -ENOMEM;
    }
    for (uint32_t first = 0; first < ext.nr_zones; first += kChunkZones) {
        uint32_t n = std::min(kChunkZones, ext.nr_zones - first);
        IOVector q(wps.data(), uint64_t(n) * 8);
        int ret =
            co_await bdrv_co_preadv(file(), wp_offset + uint64_t(first) * 8, uint64_t(n) * 8, q);
        if (ret < 0) {
            err.set_errno(-ret, "Could not read the zone write pointers");
            co_return ret;
        }
        if (cond_offset) {
            IOVector qc(chunk_conds.data(), n);
            ret = co_await bdrv_co_preadv(file(), cond_offset + first, n, qc);
            if (ret < 0) {
                err.set_errno(-ret, "Could not read the zone conditions");
                co_return ret;
            }
        }
        for (uint32_t i = 0; i < n; i++) {
            uint32_t z = first + i;
            // Little-endian on disk, as the upstream proposal writes them on x86.
            uint64_t fixed_entry = load_le64(wps.data() + uint64_t(i) * 8);
            uint8_t fixed_cond = chunk_conds[i];
            std::string fault = zone_fault(ext, header_.size, z, fixed_entry, fixed_cond);
            if (!fault.empty()) {
                if (!faults) {
                    err.set("Image is corrupt: %s", fault.c_str());
                    co_return -EINVAL;
                }
                faults->push_back({z, fault, fixed_entry, fixed_cond});
            }
            entries.set(z, fixed_entry);
            if (conds) {
                (*conds)[z] = fixed_cond;
            }
            if (z >= ext.conventional_zones) {
                zones->restore(z, fixed_entry & ZonedExtension::kWpMask,
                               PersistentCondition(fixed_cond & ~kCondDescExtValid),
                               fixed_cond & kCondDescExtValid);
            }
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
    zone_faults_.clear();
    co_return co_await load_zone_state(ext.meta_offset, ext.cond_offset, wp_on_disk_, nullptr,
                                       zones_, err,
                                       (open_flags() & BDRV_O_CHECK) ? &zone_faults_ : nullptr);
}

Task<int> Qcow2State::check_zone_faults(BdrvCheckResult& result, unsigned fix)
{
    bool repair = fix & BDRV_FIX_ERRORS;
    for (const std::string& what : header_.header_faults) {
        report_plain("%s %s\n", repair ? "Repairing" : "ERROR", what.c_str());
        (repair ? result.corruptions_fixed : result.corruptions)++;
    }
    if (repair && !header_.header_faults.empty()) {
        // The header as we write it has the canonical length and zeroes.
        Error err;
        int ret = co_await rewrite_header(err);
        if (ret >= 0) {
            ret = co_await bdrv_co_flush(file()->bs.get());
        }
        if (ret < 0) {
            report_plain("ERROR rewriting the header: %s\n", strerror(-ret));
            result.corruptions_fixed -= int(header_.header_faults.size());
            result.corruptions += int(header_.header_faults.size());
            result.check_errors++;
            co_return ret;
        }
        header_.header_faults.clear();
    }
    for (const ZoneFault& f : zone_faults_) {
        report_plain("%s %s\n", repair ? "Repairing" : "ERROR", f.what.c_str());
        if (!repair) {
            result.corruptions++;
            continue;
        }
        const ZonedExtension& ext = *header_.zoned;
        uint8_t entry[8];
        store_le64(entry, f.entry);
        uint64_t at = ext.meta_offset + uint64_t(f.zone) * 8;
        int ret = check_overlap(at, 8, META_ZONE_WP);
        if (ret >= 0) {
            IOVector q(entry, 8);
            ret = co_await bdrv_co_pwritev(file(), at, 8, q);
        }
        if (ret >= 0 && ext.cond_offset) {
            uint8_t cond = f.cond;
            ret = check_overlap(ext.cond_offset + f.zone, 1, META_ZONE_COND);
            if (ret >= 0) {
                IOVector q(&cond, 1);
                ret = co_await bdrv_co_pwritev(file(), ext.cond_offset + f.zone, 1, q);
            }
        }
        if (ret < 0) {
            report_plain("ERROR writing the state of zone %u: %s\n", f.zone, strerror(-ret));
            result.check_errors++;
            continue;
        }
        wp_on_disk_.set(f.zone, f.entry);
        result.corruptions_fixed++;
    }
    if (repair && !zone_faults_.empty()) {
        zone_faults_.clear();
        int ret = co_await bdrv_co_flush(file()->bs.get());
        if (ret < 0) {
            result.check_errors++;
            co_return ret;
        }
    }
    co_return 0;
}

Task<int> Qcow2State::format_zoned(const ZonedExtension& ext, Error& err)
{
    co_await lock_.lock();
    int ret = co_await zoned_format(ext, err);
    lock_.unlock();
    co_return ret;
}

Task<int> Qcow2State::zoned_format(const ZonedExtension& requested, Error& err)
{
    assert(lock_.locked());
    // Caller holds lock_ on a freshly created image.
    ZonedExtension ext = requested;
    ext.meta_size = uint64_t(ext.nr_zones) * 8;
    int64_t meta = co_await alloc_clusters(ext.meta_size);
    if (meta < 0) {
        err.set_errno(-int(meta), "Could not allocate clusters for zoned metadata");
        co_return int(meta);
    }
    ext.meta_offset = uint64_t(meta);
    // Written a chunk at a time: the areas may be gigabytes.
    constexpr uint64_t kChunk = 1 * MiB;
    AlignedBuffer buf(kChunk, 4096);
    int ret = 0;
    for (uint64_t at = 0; ret >= 0 && at < ext.meta_size; at += kChunk) {
        uint64_t len = std::min(kChunk, ext.meta_size - at);
        for (uint64_t i = 0; i < len / 8; i++) {
            uint64_t z = at / 8 + i;
            uint64_t entry = z * ext.zone_size;
            if (z < ext.conventional_zones) {
                entry |= ZonedExtension::kConventionalFlag;
            }
            store_le64(buf.data() + i * 8, entry);
        }
        IOVector q(buf.data(), len);
        ret = co_await bdrv_co_pwritev(file(), ext.meta_offset + at, len, q);
    }
    if (ret >= 0 && ext.zd_extension_size) {
        ext.zde_size = uint64_t(ext.nr_zones) * ext.zd_extension_size;
        int64_t zde = co_await alloc_clusters(ext.zde_size);
        if (zde < 0) {
            ret = int(zde);
        } else {
            ext.zde_offset = uint64_t(zde);
            ret = co_await write_zero_buffer(file(), ext.zde_offset, ext.zde_size, 0);
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
    assert(lock_.locked());
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
        uint64_t entries[kPerSector];
        for (uint32_t k = 0; k < n; k++) {
            entries[k] = wp_on_disk_.get(first + k);
        }
        for (; i < sorted.size() && sorted[i].first / kPerSector == sector; i++) {
            entries[sorted[i].first - first] = sorted[i].second;
        }
        uint8_t buf[512];
        for (uint32_t k = 0; k < n; k++) {
            store_le64(buf + uint64_t(k) * 8, entries[k]);
        }
        IOVector q(buf, uint64_t(n) * 8);
        uint64_t off = ext.meta_offset + uint64_t(first) * 8;
        ret = check_overlap(off, uint64_t(n) * 8, META_ZONE_WP);
        if (ret >= 0) {
            ret = co_await bdrv_co_pwritev(file(), off, uint64_t(n) * 8, q);
        }
        if (ret < 0) {
            co_return ret;
        }
        for (uint32_t k = 0; k < n; k++) {
            wp_on_disk_.set(first + k, entries[k]);
        }
    }
    co_return 0;
}

Task<void> Qcow2State::wait_zone_idle(uint32_t zone)
{
    while (zones_->busy(zone)) {
        co_await zone_writes_done_.wait();
    }
}

Task<int> Qcow2State::write_guest_zeroes(uint64_t offset, uint64_t bytes)
{
    // Zones are written as data: their clusters must hold what a read
    // below the write pointer returns.
    const AlignedBuffer& zeroes = zero_buffer();
    while (bytes > 0) {
        uint64_t n = std::min<uint64_t>(bytes, zeroes.size());
        IOVector q(const_cast<uint8_t*>(zeroes.data()), n);
        int ret = co_await write_guest(offset, n, q, 0, 0);
        if (ret < 0) {
            co_return ret;
        }
        offset += n;
        bytes -= n;
    }
    co_return 0;
}

Task<int> Qcow2State::zoned_write(uint64_t offset, uint64_t bytes, IOVector* qiov,
                                  size_t qiov_offset, unsigned flags, bool append, uint64_t* pos)
{
    // The whole request is admitted or refused: nothing is written unless
    // all of it may be.
    uint64_t at;
    ZoneStateMachine::WriteTicket ticket;
    ZoneError e = zones_->admit_write(offset, bytes, append, at, ticket);
    if (e != ZoneError::None) {
        co_return zone_error_code(e);
    }
    bool tracked = ticket.zone != UINT32_MAX;
    // Writes doomed by an earlier failure may still be writing where this
    // one writes now (the write pointer went back): let them land first.
    while (tracked && !ticket.doomed && zones_->doomed_in_flight(ticket.zone)) {
        co_await zone_writes_done_.wait();
    }
    int ret = -EIO;
    if (!ticket.doomed) {
        ret = qiov ? co_await write_guest(at, bytes, *qiov, qiov_offset,
                                          flags & ~BDRV_REQ_WRITE_COMPRESSED)
                   : co_await write_guest_zeroes(at, bytes);
    }
    zones_->complete_write(ticket, ret >= 0);
    zone_writes_done_.restart_all();
    if (ret < 0) {
        co_return ret;
    }
    // Completion in write pointer order: until the earlier writes of the
    // zone finish, the durable write pointer stays below this write, so a
    // flush after its completion (or its FUA) could not make it durable.
    // If one of them fails, this write fails too: it lies above the hole.
    while (tracked && !ticket.doomed && zones_->busy(ticket.zone) &&
           zones_->durable_wp(ticket.zone) < ticket.end) {
        co_await zone_writes_done_.wait();
    }
    if (ticket.doomed) {
        co_return -EIO;
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
            co_return zone_error_code(ZoneError::Offline);
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
        co_return zone_error_code(ZoneError::InvalidRequest);
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
    assert(lock_.locked());
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
    int ret = co_await write_zero_buffer(file(), uint64_t(area), ext.nr_zones, 0);
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
    register_metadata(ext.cond_offset, ext.cond_size, META_ZONE_COND);
    Error err;
    ret = co_await rewrite_header(err);
    if (ret >= 0) {
        ret = co_await bdrv_co_flush(file()->bs.get());
    }
    if (ret < 0) {
        // Not known to be in the header: not in use (its clusters leak).
        // A header that did reach the disk names an array of zeroes, and
        // the next attempt writes the header anew.
        unregister_metadata(ext.cond_offset, ext.cond_size, META_ZONE_COND);
        ext.cond_offset = 0;
        ext.cond_size = 0;
    }
    co_return ret;
}

Task<int> Qcow2State::zone_set_condition(uint32_t zone)
{
    assert(lock_.locked());
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
    ret = check_overlap(ext.cond_offset + zone, 1, META_ZONE_COND);
    if (ret >= 0) {
        ret = co_await bdrv_co_pwritev(file(), ext.cond_offset + zone, 1, q);
    }
    if (ret >= 0) {
        ret = co_await bdrv_co_flush(file()->bs.get());
    }
    co_return ret;
}

Task<int> Qcow2State::zone_reset_data(uint32_t zone, bool desc_ext_before)
{
    assert(lock_.locked());
    // Caller holds lock_.  What can fail comes first and is undone by the
    // caller: the empty write pointer, durably, then the condition byte
    // that no longer names a descriptor extension (a crash in between
    // leaves an unwritten zone still closed by its extension).  Only then
    // may the zone's clusters lose their mapping; that cannot be undone,
    // but the reset is complete without it (clusters above a write
    // pointer read as zeroes and are rewritten in place): its failure
    // only keeps their space allocated.
    uint64_t start = zones_->zone_start(zone);
    std::vector<std::pair<uint32_t, uint64_t>> wp;
    wp.emplace_back(zone, start);
    int ret = co_await zoned_persist(wp);
    if (ret >= 0) {
        ret = co_await bdrv_co_flush(file()->bs.get());
    }
    if (ret >= 0 && desc_ext_before) {
        ret = co_await zone_set_condition(zone);
    }
    if (ret < 0) {
        co_return ret;
    }
    co_await discard_clusters(start, zones_->zone_length(zone), true);
    co_return 0;
}

Task<int> Qcow2State::zone_finish_data(uint32_t zone, uint64_t wp)
{
    assert(lock_.locked());
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

Task<int> Qcow2State::zone_mgmt_one(BlockZoneOp op, uint32_t z)
{
    // Resetting or finishing a zone with writes in flight would let them
    // land in the zone's next life, or below a write pointer persisted
    // before their data.  Writes are admitted without the lock: the zone
    // must be idle once it is held.
    bool drain = op == BlockZoneOp::Reset || op == BlockZoneOp::Finish;
    co_await lock_.lock();
    while (drain && zones_->busy(z)) {
        lock_.unlock();
        co_await wait_zone_idle(z);
        co_await lock_.lock();
    }
    ZoneStateMachine::ZoneSnapshot before = zones_->snapshot(z);
    ZoneError e = zones_->manage(op, z);
    int ret = zone_error_code(e);
    bool condition_written = false;
    if (e == ZoneError::None) {
        if (op == BlockZoneOp::Reset && before.state != BlockZoneState::Empty) {
            ret = co_await zone_reset_data(z, before.desc_ext_valid);
            condition_written = before.desc_ext_valid;
        } else if (op == BlockZoneOp::Finish && before.state != BlockZoneState::Full) {
            ret = co_await zone_finish_data(z, before.wp);
        } else if (op == BlockZoneOp::SetReadOnly || op == BlockZoneOp::SetOffline) {
            ret = co_await zone_set_condition(z);
            condition_written = true;
        }
        if (ret < 0) {
            co_await zone_undo(z, before, condition_written);
        }
    }
    lock_.unlock();
    co_return ret;
}

Task<void> Qcow2State::zone_undo(uint32_t z, const ZoneStateMachine::ZoneSnapshot& before,
                                 bool condition_written)
{
    assert(lock_.locked());
    // Caller holds lock_.  The zone's old write pointer and condition
    // byte are written again now, over whatever the failed operation may
    // have written (a reset's write pointer may sit in the disk's cache),
    // if the disk lets us; the zone also stays dirty, so the next flush
    // writes it once more.  What the operation did above the old write
    // pointer reads as zeroes.
    // As a flush does it: the mappings of the data below that write
    // pointer first, then the write pointer.
    zones_->restore_zone(z, before);
    std::vector<std::pair<uint32_t, uint64_t>> wp;
    wp.emplace_back(z, zones_->durable_wp(z));
    // (No co_await inside && or ||: GCC 12 miscompiles it.)
    int ret = co_await flush_metadata();
    if (ret >= 0) {
        ret = co_await zoned_persist(wp);
    }
    if (ret >= 0) {
        co_await bdrv_co_flush(file()->bs.get());
    }
    if (condition_written) {
        co_await zone_set_condition(z);
    }
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
        co_return zone_error_code(ZoneError::InvalidRequest);
    }
    // Resets and finishes change what the zones read: persistent bitmaps
    // record them like writes (conservatively, the whole range).
    if ((op == BlockZoneOp::Reset || op == BlockZoneOp::Finish) && !bitmaps_.empty()) {
        if (int ret = co_await bitmaps_note_change(offset, len); ret < 0) {
            co_return ret;
        }
    }
    bool whole_device = offset == 0 && end == g.device_size;
    uint32_t first = zones_->zone_index(offset);
    uint32_t last = zones_->zone_index(end - 1);
    if (op == BlockZoneOp::Open || op == BlockZoneOp::Close) {
        co_return co_await zone_open_close_range(op, first, last, whole_device);
    }
    // Finish, reset and the faults act zone by zone, each durable before
    // the next: when one fails, the zones before it stay as they became
    // (as a range of single-zone commands leaves them), the failing zone
    // and those after it are unchanged.
    for (uint32_t z = first; z <= last; z++) {
        if (zones_->is_conventional(z)) {
            // Over the whole device, an operation skips conventional zones
            // (QEMU's reset-all); aimed at one, it is an error.
            if (whole_device) {
                continue;
            }
            co_return zone_error_code(ZoneError::InvalidRequest);
        }
        // Over the whole device, reset and finish are NVMe's "select all":
        // reset acts on open, closed and full zones, finish on open and
        // closed ones; the others are left alone.
        BlockZoneState s = zones_->state(z);
        bool unusable = s == BlockZoneState::Empty || s == BlockZoneState::ReadOnly ||
                        s == BlockZoneState::Offline;
        if (whole_device && ((op == BlockZoneOp::Reset && unusable) ||
                             (op == BlockZoneOp::Finish && (unusable || s == BlockZoneState::Full)))) {
            continue;
        }
        if (int ret = co_await zone_mgmt_one(op, z); ret < 0) {
            co_return ret;
        }
    }
    // The reset zones' clusters are unmapped now; like every free, they
    // return to the allocator and the host (hole punching) with the next
    // flush, once the unmapped tables are on disk.
    co_return 0;
}

Task<int> Qcow2State::zone_open_close_range(BlockZoneOp op, uint32_t first, uint32_t last,
                                            bool whole_device)
{
    // No I/O: the whole range changes at once, or, when one zone refuses,
    // not at all (the zones changed before it are put back).  Implicitly
    // open zones closed to make room stay closed, as a device may close
    // them at any time.  Under lock_, so that no failing reset or finish
    // puts back a zone in between.
    co_await lock_.lock();
    std::vector<std::pair<uint32_t, ZoneStateMachine::ZoneSnapshot>> done;
    int ret = 0;
    for (uint32_t z = first; z <= last; z++) {
        if (zones_->is_conventional(z)) {
            if (whole_device) {
                continue;
            }
            ret = zone_error_code(ZoneError::InvalidRequest);
            break;
        }
        ZoneStateMachine::ZoneSnapshot before = zones_->snapshot(z);
        ZoneError e = zones_->manage(op, z);
        if (e != ZoneError::None) {
            ret = zone_error_code(e);
            break;
        }
        done.emplace_back(z, before);
    }
    if (ret < 0) {
        for (auto it = done.rbegin(); it != done.rend(); ++it) {
            zones_->restore_zone(it->first, it->second);
        }
    }
    lock_.unlock();
    co_return ret;
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
        co_return zone_error_code(ZoneError::InvalidRequest);
    }
    // The zone's new bytes are known only afterwards: the marks first.
    if (int ret = bitmaps_.empty() ? 0 : co_await bitmaps_prepare_change(false); ret < 0) {
        co_return ret;
    }
    uint64_t pos;
    int ret = co_await zoned_write(offset, len, &qiov, 0, flags, true, &pos);
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
    ZoneStateMachine::ZoneSnapshot before = zones_->snapshot(z);
    ZoneError e = zones_->set_desc_ext_valid(z);
    int ret = zone_error_code(e);
    if (e == ZoneError::None) {
        // The data durably first, then the condition byte that makes it
        // valid (zone_set_condition syncs).
        uint64_t at = ext.zde_offset + uint64_t(z) * ext.zd_extension_size;
        IOVector q(const_cast<uint8_t*>(data), ext.zd_extension_size);
        ret = check_overlap(at, ext.zd_extension_size, META_ZONE_DESC);
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
            co_await zone_undo(z, before, true);
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
        co_return zone_error_code(ZoneError::InvalidRequest);
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
