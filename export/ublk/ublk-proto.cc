// ublk parameters, zone report conversion and errno mapping (see
// ublk-proto.h).
#include "ublk-proto.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>

#include "block/zone-error.h"

namespace qemu::ublk {

namespace {

uint8_t log2_of(uint64_t v)
{
    return uint8_t(std::bit_width(v) - 1);
}

bool derive_block_sizes(const DeviceRequest& req, Params& p, Error& err)
{
    const BlockLimits& bl = *req.limits;
    uint32_t lbs = req.logical_block_size;
    if (lbs == 0) {
        // Writes the node cannot take in smaller pieces decide: a zoned
        // node's write granularity, an O_DIRECT file's alignment.
        lbs = std::max<uint32_t>({512, bl.request_alignment, bl.write_granularity});
        if (!std::has_single_bit(lbs) || lbs > 4096) {
            err.set("ublk: the node's block size %u is not one Linux accepts (512 to 4096, a "
                    "power of two); set logical-block-size", lbs);
            return false;
        }
    } else if (!std::has_single_bit(lbs) || lbs < 512 || lbs > 4096) {
        err.set("ublk: logical-block-size must be a power of two from 512 to 4096");
        return false;
    } else if (bl.zoned != BlockZoneModel::None && lbs < bl.write_granularity) {
        err.set("ublk: logical-block-size %u is smaller than the zone write granularity %u",
                lbs, bl.write_granularity);
        return false;
    }
    uint32_t pbs = std::max<uint32_t>(lbs, bl.request_alignment);
    pbs = std::has_single_bit(pbs) && pbs <= 4096 ? pbs : lbs;
    p.basic.logical_bs_shift = log2_of(lbs);
    p.basic.physical_bs_shift = log2_of(pbs);
    p.basic.io_min_shift = log2_of(pbs);
    uint64_t opt = bl.opt_transfer && std::has_single_bit(bl.opt_transfer) ? bl.opt_transfer : pbs;
    p.basic.io_opt_shift = log2_of(std::max<uint64_t>(opt, pbs));
    p.basic.dev_sectors = req.length / lbs * lbs / 512;
    uint64_t max_bytes = req.max_io_bytes;
    if (bl.max_transfer) {
        max_bytes = std::min(max_bytes, bl.max_transfer);
    }
    max_bytes = max_bytes / lbs * lbs;
    if (max_bytes < lbs) {
        err.set("ublk: the node's largest request (%llu bytes) is below the block size %u",
                (unsigned long long)bl.max_transfer, lbs);
        return false;
    }
    p.basic.max_sectors = uint32_t(max_bytes / 512);
    return true;
}

void derive_discard(const DeviceRequest& req, Params& p)
{
    const BlockLimits& bl = *req.limits;
    uint32_t lbs = 1u << p.basic.logical_bs_shift;
    p.types |= kParamDiscard;
    uint32_t gran = std::max<uint32_t>(lbs, bl.pdiscard_alignment);
    p.discard.discard_granularity = std::has_single_bit(gran) ? gran : lbs;
    auto sectors = [&](uint64_t limit) {
        uint64_t s = limit ? limit / 512 : UINT32_MAX;
        // Whole blocks, as the kernel splits requests on them.
        s = std::min<uint64_t>(s, UINT32_MAX) / (lbs / 512) * (lbs / 512);
        return uint32_t(s);
    };
    p.discard.max_discard_sectors = sectors(bl.max_pdiscard);
    p.discard.max_write_zeroes_sectors = sectors(bl.max_pwrite_zeroes);
    p.discard.max_discard_segments = 1;
}

bool derive_zoned(const DeviceRequest& req, Params& p, Error& err)
{
    const BlockLimits& bl = *req.limits;
    if (bl.zoned == BlockZoneModel::HostAware) {
        // Linux ublk has no host-aware model: it would be a zoned disk
        // with host-managed rules that our node does not enforce.
        err.set("ublk: host-aware zoned nodes cannot be exported (Linux ublk is host-managed "
                "only)");
        return false;
    }
    uint64_t zone_sectors = bl.zone_size / 512;
    if (bl.zone_size % 512 || !std::has_single_bit(zone_sectors) || zone_sectors > UINT32_MAX) {
        err.set("ublk: zone size %llu is not a power of two in sectors, which Linux requires",
                (unsigned long long)bl.zone_size);
        return false;
    }
    if (req.length % bl.zone_size) {
        err.set("ublk: the last zone is smaller than the others (size %llu, zone size %llu), "
                "which Linux ublk cannot report",
                (unsigned long long)req.length, (unsigned long long)bl.zone_size);
        return false;
    }
    p.types |= kParamZoned;
    p.basic.chunk_sectors = uint32_t(zone_sectors);
    p.zoned.max_open_zones = bl.max_open_zones;
    p.zoned.max_active_zones = bl.max_active_zones;
    uint64_t append = bl.max_append_bytes ? bl.max_append_bytes / 512 : p.basic.max_sectors;
    append = std::min<uint64_t>({append, p.basic.max_sectors, zone_sectors});
    uint32_t lbs_sectors = (1u << p.basic.logical_bs_shift) / 512;
    append = append / lbs_sectors * lbs_sectors;
    if (append == 0) {
        err.set("ublk: the node's zone append limit is below one block");
        return false;
    }
    p.zoned.max_zone_append_sectors = uint32_t(append);
    return true;
}

}  // namespace

bool derive_params(const DeviceRequest& req, Params& out, Error& err)
{
    Params p{};
    p.len = sizeof(Params);
    p.types = kParamBasic;
    if (!derive_block_sizes(req, p, err)) {
        return false;
    }
    if (p.basic.dev_sectors == 0) {
        err.set("ublk: the node is smaller than one block");
        return false;
    }
    if (!req.writable) {
        p.basic.attrs |= kAttrReadOnly;
    } else {
        if (!req.writethrough) {
            p.basic.attrs |= kAttrVolatileCache | kAttrFua;
        }
        derive_discard(req, p);
    }
    if (req.limits->zoned != BlockZoneModel::None && !derive_zoned(req, p, err)) {
        return false;
    }
    out = p;
    return true;
}

struct blk_zone to_blk_zone(const BlockZoneDescriptor& d)
{
    struct blk_zone z;
    memset(&z, 0, sizeof(z));
    z.start = d.start / 512;
    z.len = d.length / 512;
    z.type = uint8_t(d.type);
    z.cond = uint8_t(d.state);
    if (d.type == BlockZoneType::Conventional) {
        z.capacity = z.len;
        z.wp = z.start + z.len;
    } else {
        z.capacity = d.capacity / 512;
        z.wp = d.wp / 512;
    }
    return z;
}

int errno_for_result(int ret)
{
    if (ret >= 0) {
        return ret;
    }
    switch (zone_error_of(ret)) {
    case ZoneError::None:
        break;
    case ZoneError::TooManyOpen:
        return -ETOOMANYREFS;
    case ZoneError::TooManyActive:
        return -EOVERFLOW;
    case ZoneError::InvalidRequest:
        return -EINVAL;
    default:
        return -EIO;
    }
    switch (-ret) {
    case ENOSPC:
        return -ENOSPC;
    case ENOTSUP:
        return -EOPNOTSUPP;
    default:
        return -EIO;
    }
}

}  // namespace qemu::ublk
