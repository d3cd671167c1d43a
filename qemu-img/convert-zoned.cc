// qemu-img convert onto a zoned target: see convert-zoned.h.
#include "convert-zoned.h"

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstring>

#include "qemu/aio.h"
#include "qemu/iov.h"
#include "tool.h"

namespace qemu::img {

namespace {

constexpr uint64_t kChunkBytes = 1 << 20;
constexpr uint32_t kReportBatch = 1024;

Task<int> report_all(BlockBackend& blk, std::vector<BlockZoneDescriptor>& zones)
{
    const BlockLimits& bl = blk.bs()->limits();
    const uint64_t size = blk.bs()->total_bytes();
    zones.clear();
    uint64_t offset = 0;
    while (offset < size) {
        std::vector<BlockZoneDescriptor> batch(kReportBatch);
        uint32_t n = kReportBatch;
        int ret = co_await blk.co_zone_report(offset, n, batch.data());
        if (ret < 0) {
            co_return ret;
        }
        if (n == 0) {
            break;
        }
        zones.insert(zones.end(), batch.begin(), batch.begin() + n);
        offset = zones.back().start + zones.back().length;
    }
    co_return zones.size() == bl.nr_zones ? 0 : -EIO;
}

// Where the source zone's data ends: its write pointer, the capacity for
// full zones (the pointer of a full zone means nothing), none for empty.
uint64_t data_end(const BlockZoneDescriptor& z)
{
    switch (z.state) {
    case BlockZoneState::NotWritePointer:
    case BlockZoneState::Full:
        return z.start + z.capacity;
    case BlockZoneState::Empty:
        return z.start;
    default:
        return std::min(z.wp, z.start + z.capacity);
    }
}

class ZonedCopy {
public:
    ZonedCopy(BlockBackend& src, BlockBackend& dst, const std::string& name, ProgressMeter& progress)
        : src_(src), dst_(dst), name_(name), progress_(progress)
    {
    }

    Task<int> run()
    {
        if (src_.bs()->limits().zoned == BlockZoneModel::None) {
            error_report("%s: Cannot convert to a zoned target from a source that is not zoned",
                         name_.c_str());
            co_return -EINVAL;
        }
        int ret = co_await report_all(src_, szones_);
        if (ret < 0) {
            error_report("Could not report the source's zones: %s", strerror(-ret));
            co_return ret;
        }
        ret = co_await report_all(dst_, dzones_);
        if (ret < 0) {
            error_report("%s: Could not report zones: %s", name_.c_str(), strerror(-ret));
            co_return ret;
        }
        if (!check_geometry()) {
            co_return -EINVAL;
        }
        buf_ = AlignedBuffer(kChunkBytes);
        zero_ = AlignedBuffer(kChunkBytes);
        memset(zero_.data(), 0, kChunkBytes);
        // Resets first: a reset ends the zone's open or closed state, which
        // counts against the target's open and active limits.
        for (const BlockZoneDescriptor& d : dzones_) {
            if (d.type != BlockZoneType::Conventional && d.state != BlockZoneState::Empty) {
                ret = co_await dst_.co_zone_mgmt(BlockZoneOp::Reset, d.start, d.length);
                if (ret < 0) {
                    co_return fail("reset zone", d.start, ret);
                }
            }
        }
        for (size_t i = 0; i < szones_.size(); i++) {
            ret = co_await copy_zone(szones_[i]);
            if (ret < 0) {
                co_return ret;
            }
            progress_.update(100.0f / float(szones_.size()), 100);
        }
        ret = co_await dst_.co_flush();
        co_return ret < 0 ? fail("flush", 0, ret) : 0;
    }

private:
    bool check_geometry()
    {
        const BlockLimits& s = src_.bs()->limits();
        const BlockLimits& d = dst_.bs()->limits();
        bool same = szones_.size() == dzones_.size();
        for (size_t i = 0; same && i < szones_.size(); i++) {
            const BlockZoneDescriptor& a = szones_[i];
            const BlockZoneDescriptor& b = dzones_[i];
            same = a.start == b.start && a.length == b.length && a.capacity == b.capacity &&
                   (a.type == BlockZoneType::Conventional) == (b.type == BlockZoneType::Conventional);
        }
        if (!same) {
            error_report("%s: Zone geometry differs from the source's (source: %u zones of %" PRIu64
                         " bytes, capacity %" PRIu64 "; target: %u zones of %" PRIu64
                         " bytes, capacity %" PRIu64 ")",
                         name_.c_str(), s.nr_zones, s.zone_size, s.zone_capacity, d.nr_zones,
                         d.zone_size, d.zone_capacity);
            return false;
        }
        for (const BlockZoneDescriptor& z : szones_) {
            if (z.state == BlockZoneState::ReadOnly || z.state == BlockZoneState::Offline) {
                error_report("%s: Cannot copy the source's %s zone at offset %" PRIu64,
                             name_.c_str(), zone_state_name(z.state), z.start);
                return false;
            }
        }
        return true;
    }

    int fail(const char* what, uint64_t offset, int ret)
    {
        error_report("%s: Could not %s at offset %" PRIu64 ": %s", name_.c_str(), what, offset,
                     strerror(-ret));
        return ret;
    }

    // Writes run in order; all-zero chunks are held back and written only
    // when data follows, so a zone finished early is finished, not filled.
    Task<int> copy_zone(const BlockZoneDescriptor& z)
    {
        const bool sequential = z.type != BlockZoneType::Conventional;
        if (sequential && z.state == BlockZoneState::ExplicitlyOpen) {
            int ret = co_await dst_.co_zone_mgmt(BlockZoneOp::Open, z.start, z.length);
            if (ret < 0) {
                co_return fail("open zone", z.start, ret);
            }
        }
        const uint64_t end = data_end(z);
        uint64_t written = z.start;
        for (uint64_t pos = z.start; pos < end; pos += kChunkBytes) {
            uint64_t n = std::min(kChunkBytes, end - pos);
            IOVector rq;
            rq.add(buf_.data(), n);
            int ret = co_await src_.co_preadv(pos, n, rq);
            if (ret < 0) {
                error_report("error while reading at byte %" PRIu64 ": %s", pos, strerror(-ret));
                co_return ret;
            }
            bool zero = sequential && z.state == BlockZoneState::Full &&
                        memcmp(buf_.data(), zero_.data(), n) == 0;
            if (zero) {
                continue;
            }
            while (written < pos) {  // the zeroes held back
                uint64_t m = std::min(kChunkBytes, pos - written);
                IOVector zq;
                zq.add(zero_.data(), m);
                ret = co_await dst_.co_pwritev(written, m, zq);
                if (ret < 0) {
                    co_return fail("write", written, ret);
                }
                written += m;
            }
            IOVector wq;
            wq.add(buf_.data(), n);
            ret = co_await dst_.co_pwritev(pos, n, wq);
            if (ret < 0) {
                co_return fail("write", pos, ret);
            }
            written = pos + n;
        }
        if (!sequential) {
            co_return 0;
        }
        BlockZoneOp op;
        if (z.state == BlockZoneState::Full && written < z.start + z.capacity) {
            op = BlockZoneOp::Finish;
        } else if (z.state == BlockZoneState::Closed) {
            op = BlockZoneOp::Close;
        } else {
            co_return 0;
        }
        int ret = co_await dst_.co_zone_mgmt(op, z.start, z.length);
        co_return ret < 0 ? fail(op == BlockZoneOp::Finish ? "finish zone" : "close zone", z.start,
                                 ret)
                          : 0;
    }

    BlockBackend& src_;
    BlockBackend& dst_;
    const std::string& name_;
    ProgressMeter& progress_;
    std::vector<BlockZoneDescriptor> szones_;
    std::vector<BlockZoneDescriptor> dzones_;
    AlignedBuffer buf_;
    AlignedBuffer zero_;
};

}  // namespace

bool convert_needs_zones(const BlockBackend& target)
{
    return target.bs()->limits().zoned != BlockZoneModel::None;
}

int convert_zoned(std::vector<ConvertSource>& sources, BlockBackend& target,
                  const std::string& target_name, ProgressMeter& progress)
{
    if (sources.size() != 1) {
        error_report("%s: Cannot concatenate images onto a zoned target", target_name.c_str());
        return -EINVAL;
    }
    ZonedCopy copy(*sources[0].blk, target, target_name, progress);
    return run_sync(target.ctx(), copy.run());
}

}  // namespace qemu::img
