// Zoned block devices under host_device: see block/file-posix-zoned.h.
#include "block/file-posix-zoned.h"

#include <linux/blkzoned.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "block/zone-error.h"
#include "qemu/error.h"

namespace qemu {

namespace {

constexpr unsigned kSectorBits = 9;

// One sysfs attribute's first line, without its newline; -errno if absent.
int read_attr(const std::string& dir, const char* name, std::string& out)
{
    std::string path = dir + "/" + name;
    FILE* f = fopen(path.c_str(), "re");
    if (!f) {
        return -errno;
    }
    char buf[256];
    bool ok = fgets(buf, sizeof(buf), f) != nullptr;
    fclose(f);
    if (!ok) {
        return -EIO;
    }
    out = buf;
    while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) {
        out.pop_back();
    }
    return 0;
}

// A numeric attribute; -errno if absent, -EINVAL if not a number.
int64_t read_number(const std::string& dir, const char* name)
{
    std::string s;
    int ret = read_attr(dir, name, s);
    if (ret < 0) {
        return ret;
    }
    char* end = nullptr;
    errno = 0;
    long long v = strtoll(s.c_str(), &end, 10);
    if (s.empty() || errno || *end != '\0' || v < 0) {
        return -EINVAL;
    }
    return v;
}

// An optional 32-bit limit: 0 when absent or unreadable, as QEMU.
uint32_t read_limit(const std::string& dir, const char* name)
{
    int64_t v = read_number(dir, name);
    return v > 0 && v <= UINT32_MAX ? uint32_t(v) : 0;
}

int ioctl_retry(int fd, unsigned long request, void* arg)
{
    int ret;
    do {
        ret = ioctl(fd, request, arg);
    } while (ret < 0 && errno == EINTR);
    return ret < 0 ? -errno : 0;
}

}  // namespace

int read_sysfs_zoned(const std::string& queue_dir, SysfsZoned& out, Error& err)
{
    out = SysfsZoned{};
    std::string model;
    if (read_attr(queue_dir, "zoned", model) < 0 || model == "none") {
        return 0;
    }
    if (model == "host-managed") {
        out.model = BlockZoneModel::HostManaged;
    } else if (model == "host-aware") {
        out.model = BlockZoneModel::HostAware;
    } else {
        return 0;  // a model QEMU does not know: used as a plain device
    }
    int64_t v = read_number(queue_dir, "chunk_sectors");
    if (v < 0) {
        err.set_errno(int(-v), "Unable to read chunk_sectors sysfs attribute");
        return int(v);
    }
    if (v == 0) {
        err.set("Read 0 from chunk_sectors sysfs attribute");
        return -EINVAL;
    }
    out.zone_size = uint64_t(v) << kSectorBits;
    v = read_number(queue_dir, "nr_zones");
    if (v < 0) {
        err.set_errno(int(-v), "Unable to read nr_zones sysfs attribute");
        return int(v);
    }
    if (v == 0 || v > UINT32_MAX) {
        err.set("Read %" PRId64 " from nr_zones sysfs attribute", v);
        return -EINVAL;
    }
    out.nr_zones = uint32_t(v);
    out.max_open_zones = read_limit(queue_dir, "max_open_zones");
    out.max_active_zones = read_limit(queue_dir, "max_active_zones");
    int64_t append = read_number(queue_dir, "zone_append_max_bytes");
    out.max_append_bytes = append > 0 ? uint64_t(append) : 0;
    out.physical_block_size = read_limit(queue_dir, "physical_block_size");
    out.logical_block_size = read_limit(queue_dir, "logical_block_size");
    return 0;
}

int zone_from_blk_zone(const blk_zone& z, bool has_capacity, BlockZoneDescriptor& out)
{
    out.start = z.start << kSectorBits;
    out.length = z.len << kSectorBits;
    out.wp = z.wp << kSectorBits;
    out.capacity = (has_capacity ? z.capacity : z.len) << kSectorBits;
    out.desc_ext_valid = false;
    switch (z.type) {
    case BLK_ZONE_TYPE_CONVENTIONAL:
        out.type = BlockZoneType::Conventional;
        break;
    case BLK_ZONE_TYPE_SEQWRITE_REQ:
        out.type = BlockZoneType::SequentialWriteRequired;
        break;
    case BLK_ZONE_TYPE_SEQWRITE_PREF:
        out.type = BlockZoneType::SequentialWritePreferred;
        break;
    default:
        error_report("Unsupported zone type: 0x%x", z.type);
        return -ENOTSUP;
    }
    switch (z.cond) {
    case BLK_ZONE_COND_NOT_WP:
        out.state = BlockZoneState::NotWritePointer;
        break;
    case BLK_ZONE_COND_EMPTY:
        out.state = BlockZoneState::Empty;
        break;
    case BLK_ZONE_COND_IMP_OPEN:
        out.state = BlockZoneState::ImplicitlyOpen;
        break;
    case BLK_ZONE_COND_EXP_OPEN:
        out.state = BlockZoneState::ExplicitlyOpen;
        break;
    case BLK_ZONE_COND_CLOSED:
        out.state = BlockZoneState::Closed;
        break;
    case BLK_ZONE_COND_READONLY:
        out.state = BlockZoneState::ReadOnly;
        break;
    case BLK_ZONE_COND_FULL:
        out.state = BlockZoneState::Full;
        break;
    case BLK_ZONE_COND_OFFLINE:
        out.state = BlockZoneState::Offline;
        break;
    default:
        error_report("Unsupported zone state: 0x%x", z.cond);
        return -ENOTSUP;
    }
    return 0;
}

namespace {

// BLKREPORTZONE from `sector` for up to `nr` zones, calling fn(zone,
// has_capacity) for each; stops early at the end of the device.  Returns
// the number of zones seen or -errno.  Runs in any thread.
template <typename Fn>
int64_t for_each_reported_zone(int fd, uint64_t sector, uint32_t nr, Fn&& fn)
{
    // At most 4096 zones per call: bounded memory for any request.
    const uint32_t batch = std::min<uint32_t>(nr, 4096);
    std::vector<uint8_t> buf(sizeof(blk_zone_report) + size_t(batch) * sizeof(blk_zone));
    auto* rep = reinterpret_cast<blk_zone_report*>(buf.data());
    uint32_t n = 0;
    while (n < nr) {
        std::fill(buf.begin(), buf.end(), 0);
        rep->sector = sector;
        rep->nr_zones = std::min(batch, nr - n);
        int ret = ioctl_retry(fd, BLKREPORTZONE, rep);
        if (ret < 0) {
            error_report("%d: ioctl BLKREPORTZONE at %" PRIu64 " failed %d", fd, sector, -ret);
            return ret;
        }
        if (rep->nr_zones == 0) {
            break;
        }
        bool cap = rep->flags & BLK_ZONE_REP_CAPACITY;
        for (uint32_t i = 0; i < rep->nr_zones && n < nr; i++, n++) {
            ret = fn(rep->zones[i], cap);
            if (ret < 0) {
                return ret;
            }
            sector = rep->zones[i].start + rep->zones[i].len;
        }
    }
    return n;
}

}  // namespace

HostZones::HostZones(int fd, const SysfsZoned& geometry, BlockingRunner run)
    : fd_(fd), geo_(geometry), run_(std::move(run)), wps_(geometry.nr_zones),
      locks_(std::make_unique<CoMutex[]>(geometry.nr_zones))
{
}

int HostZones::load(Error& err)
{
    // Cross-check sysfs with the ioctls: a geometry the kernel's own zone
    // code disagrees with would send every request to the wrong zone.
    uint32_t sectors = 0, nr = 0;
    if (ioctl_retry(fd_, BLKGETZONESZ, &sectors) == 0 && ioctl_retry(fd_, BLKGETNRZONES, &nr) == 0 &&
        (uint64_t(sectors) << kSectorBits != geo_.zone_size || nr != geo_.nr_zones)) {
        err.set("Zone geometry from sysfs (%" PRIu64 " bytes x %u) differs from the device's "
                "(%" PRIu64 " bytes x %u)",
                geo_.zone_size, geo_.nr_zones, uint64_t(sectors) << kSectorBits, nr);
        return -EINVAL;
    }
    std::vector<Wp> wps;
    int ret = read_wps(0, geo_.nr_zones, false, wps, zone_capacity_);
    if (ret >= 0 && wps.size() != wps_.size()) {
        ret = -EIO;  // fewer zones than the geometry says
    }
    if (ret >= 0) {
        wps_ = std::move(wps);
    }
    if (ret < 0) {
        err.set_errno(-ret, "report wps failed");
        return ret;
    }
    return 0;
}

void HostZones::apply_limits(BlockLimits& bl) const
{
    bl.zoned = geo_.model;
    bl.zone_size = geo_.zone_size;
    bl.zone_capacity = zone_capacity_ ? zone_capacity_ : geo_.zone_size;
    bl.nr_zones = geo_.nr_zones;
    bl.max_open_zones = geo_.max_open_zones;
    bl.max_active_zones = geo_.max_active_zones;
    bl.max_append_bytes = geo_.max_append_bytes;
    bl.write_granularity = write_granularity();
    bl.zone_desc_ext_size = 0;
}

// QEMU's: the physical block size (the logical one when sysfs lacks it).
uint32_t HostZones::write_granularity() const
{
    return geo_.physical_block_size ? geo_.physical_block_size : geo_.logical_block_size;
}

// The cached write pointer of a sequential zone: where the device reports
// it, the zone end for full and read-only zones (nothing more fits), the
// zone start for offline ones, as QEMU keeps them.  Runs in any thread: it
// only fills `out` (one entry per zone from the one holding offset).
int HostZones::read_wps(uint64_t offset, uint32_t nr, bool reset, std::vector<Wp>& out,
                        uint64_t& capacity) const
{
    uint32_t first = uint32_t(offset / geo_.zone_size);
    nr = std::min(nr, geo_.nr_zones - first);
    out.clear();
    out.reserve(nr);
    int64_t ret = for_each_reported_zone(
        fd_, offset >> kSectorBits, nr, [&](const blk_zone& z, bool cap) {
            Wp w;
            w.conventional = z.type == BLK_ZONE_TYPE_CONVENTIONAL;
            uint64_t start = z.start << kSectorBits;
            if (w.conventional) {
                w.wp = start;
            } else {
                if (capacity == 0) {
                    capacity = (cap ? z.capacity : z.len) << kSectorBits;
                }
                switch (z.cond) {
                case BLK_ZONE_COND_FULL:
                case BLK_ZONE_COND_READONLY:
                    w.wp = (z.start + z.len) << kSectorBits;
                    break;
                case BLK_ZONE_COND_OFFLINE:
                    w.wp = start;
                    break;
                default:
                    w.wp = reset ? start : z.wp << kSectorBits;
                    break;
                }
            }
            out.push_back(w);
            return 0;
        });
    return ret < 0 ? int(ret) : 0;
}

// Reads the pointers in a worker thread and stores them in this one, so
// that requests to other zones never see a half-updated table.
Task<int> HostZones::reload_wps(uint64_t offset, uint32_t nr, bool reset)
{
    std::vector<Wp> fresh;
    uint64_t capacity = 0;
    std::vector<Wp>* out = &fresh;
    uint64_t* cap = &capacity;
    std::function<int()> job = [=, this] { return read_wps(offset, nr, reset, *out, *cap); };
    int ret = co_await run_(std::move(job));
    if (ret >= 0) {
        std::copy(fresh.begin(), fresh.end(), wps_.begin() + offset / geo_.zone_size);
    }
    co_return ret;
}

// After a failed request the cached pointers may be stale: the device may
// have written part of it, or another process moved the pointer.
Task<void> HostZones::refresh_wps(uint64_t offset, uint32_t nr)
{
    // Not inside the condition: g++ 12 mishandles co_await there.
    int ret = co_await reload_wps(offset, nr, false);
    if (ret < 0) {
        error_report("update zone wp failed");
    }
}

Task<int> HostZones::report(uint64_t offset, uint32_t& nr_zones, BlockZoneDescriptor* zones)
{
    const uint32_t want = nr_zones;
    const int fd = fd_;
    int ret = co_await run_([fd, offset, want, zones] {
        uint32_t n = 0;
        int64_t r = for_each_reported_zone(fd, offset >> kSectorBits, want,
                                           [&](const blk_zone& z, bool cap) {
                                               return zone_from_blk_zone(z, cap, zones[n++]);
                                           });
        return r < 0 ? int(r) : int(n);
    });
    if (ret < 0) {
        co_return ret;
    }
    nr_zones = uint32_t(ret);
    co_return 0;
}

Task<int> HostZones::mgmt(BlockZoneOp op, uint64_t offset, uint64_t len, uint64_t device_bytes)
{
    const uint64_t zs = geo_.zone_size;
    if (offset % zs) {
        error_report("sector offset %" PRIu64 " is not aligned to zone size %" PRIu64,
                     offset >> kSectorBits, zs >> kSectorBits);
        co_return zone_error_code(ZoneError::InvalidRequest);
    }
    if ((offset + len < device_bytes && len % zs) || offset + len > device_bytes) {
        error_report("number of sectors %" PRIu64 " is not aligned to zone size %" PRIu64,
                     len >> kSectorBits, zs >> kSectorBits);
        co_return zone_error_code(ZoneError::InvalidRequest);
    }
    const uint32_t first = uint32_t(offset / zs);
    const uint32_t nrz = uint32_t(len / zs);
    const bool whole_device = len == device_bytes;
    if (wps_[first].conventional && !whole_device) {
        error_report("zone mgmt operations are not allowed for conventional zones");
        // QEMU 10.0 fails this with -EIO, and qemu-io prints it; no zone
        // error prints as EIO, so this refusal stays an errno (a front end
        // sees an I/O error, as under QEMU).
        co_return -EIO;
    }
    unsigned long request;
    const char* name;
    switch (op) {
    case BlockZoneOp::Open:
        request = BLKOPENZONE;
        name = "BLKOPENZONE";
        break;
    case BlockZoneOp::Close:
        request = BLKCLOSEZONE;
        name = "BLKCLOSEZONE";
        break;
    case BlockZoneOp::Finish:
        request = BLKFINISHZONE;
        name = "BLKFINISHZONE";
        break;
    case BlockZoneOp::Reset:
        request = BLKRESETZONE;
        name = "BLKRESETZONE";
        break;
    default:
        // Fault injection (read-only, offline) exists on emulated zones only.
        error_report("Unsupported zone op: 0x%x", unsigned(op));
        co_return -ENOTSUP;
    }
    const int fd = fd_;
    int ret = co_await run_([fd, request, offset, len] {
        blk_zone_range range{};
        range.sector = offset >> kSectorBits;
        range.nr_sectors = len >> kSectorBits;
        return ioctl_retry(fd, request, &range);
    });
    if (ret < 0) {
        co_await refresh_wps(offset, std::max<uint32_t>(nrz, 1));
        error_report("ioctl %s failed %d", name, ret);
        co_return ret;
    }
    if (op == BlockZoneOp::Reset && whole_device) {
        ret = co_await reload_wps(0, geo_.nr_zones, true);
        if (ret < 0) {
            error_report("reporting single wp failed");
            co_return ret;
        }
    } else if (op == BlockZoneOp::Reset) {
        for (uint32_t i = 0; i < nrz; i++) {
            wps_[first + i].wp = offset + uint64_t(i) * zs;
        }
    } else if (op == BlockZoneOp::Finish) {
        for (uint32_t i = 0; i < nrz; i++) {
            wps_[first + i].wp = std::min(offset + uint64_t(i + 1) * zs, offset + len);
        }
    }
    co_return 0;
}

Task<int> HostZones::write(uint64_t offset, uint64_t bytes, const WriteFn& io)
{
    const uint64_t zs = geo_.zone_size;
    const uint32_t first = uint32_t(offset / zs);
    const uint64_t last_byte = bytes ? offset + bytes - 1 : offset;
    const uint32_t last = uint32_t(std::min<uint64_t>(last_byte / zs, geo_.nr_zones - 1));
    // Sequential zones only (conventional ones take writes in any order),
    // in ascending order: two writes spanning the same zones cannot each
    // hold one the other waits for.
    for (uint32_t z = first; z <= last; z++) {
        if (!wps_[z].conventional) {
            co_await locks_[z].lock();
        }
    }
    int ret = co_await io(offset);
    if (ret >= 0) {
        Wp& w = wps_[first];
        uint64_t end = std::min(offset + bytes, uint64_t(first + 1) * zs);
        if (!w.conventional && end > w.wp) {
            w.wp = end;
        }
    } else {
        co_await refresh_wps(offset, 1);
    }
    for (uint32_t z = first; z <= last; z++) {
        if (!wps_[z].conventional) {
            locks_[z].unlock();
        }
    }
    co_return ret;
}

Task<int> HostZones::append(uint64_t& offset, uint64_t bytes, const WriteFn& io)
{
    const uint32_t zone = uint32_t(offset / geo_.zone_size);
    if (wps_[zone].conventional) {
        co_return zone_error_code(ZoneError::InvalidRequest);  // no write pointer to append at
    }
    co_await locks_[zone].lock();
    const uint64_t at = wps_[zone].wp;
    int ret = co_await io(at);
    if (ret >= 0) {
        offset = at;
        wps_[zone].wp = std::max(wps_[zone].wp, at + bytes);
    } else {
        co_await refresh_wps(at, 1);
    }
    locks_[zone].unlock();
    co_return ret;
}

int HostZones::check_append(uint64_t offset, const std::vector<size_t>& segment_lengths) const
{
    if (offset / geo_.zone_size >= geo_.nr_zones) {
        return zone_error_code(ZoneError::InvalidRequest);  // callers below a BlockBackend are not range-checked
    }
    if (offset % geo_.zone_size) {
        error_report("sector offset %" PRIu64 " is not aligned to zone size %" PRIu64,
                     offset >> kSectorBits, geo_.zone_size >> kSectorBits);
        return zone_error_code(ZoneError::InvalidRequest);
    }
    const uint64_t wg = write_granularity();
    for (size_t i = 0; wg && i < segment_lengths.size(); i++) {
        if (segment_lengths[i] % wg) {
            error_report("len of IOVector[%zu] %zu is not aligned to block size %" PRIu64, i,
                         segment_lengths[i], wg);
            return zone_error_code(ZoneError::InvalidRequest);
        }
    }
    return 0;
}

}  // namespace qemu
