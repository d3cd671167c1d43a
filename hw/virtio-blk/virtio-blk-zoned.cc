// The zoned requests of virtio-blk (virtio 1.3 5.2.6.3): report, the
// management operations, append.  The zone rules are the block layer's
// (include/block/zoned.h); what it refuses comes back as a zone error and
// becomes the zoned status through status_of().  The checks made here are
// those QEMU's device makes before calling the block layer (range,
// append alignment and size).
#include <algorithm>

#include "block/zoned.h"
#include "hw/virtio/virtio-blk.h"
#include "qemu/bswap.h"

namespace qemu {

namespace {

// Zones asked of the block layer at a time: the report's memory stays
// bounded whatever buffer the driver offers.
constexpr uint32_t kReportBatch = 64;

void encode_zone(const BlockZoneDescriptor& z, uint8_t* d)
{
    std::fill(d, d + kVirtioBlkZoneDescSize, 0);
    store_le64(d + 0, z.capacity / 512);
    store_le64(d + 8, z.start / 512);
    store_le64(d + 16, z.wp / 512);
    d[24] = uint8_t(z.type);   // BlockZoneType has virtio's ZT_* numbers
    d[25] = uint8_t(z.state);  // BlockZoneState has virtio's ZS_* numbers
}

}  // namespace

Task<uint8_t> VirtioBlkDevice::co_zone_report(Request& req)
{
    if (!negotiated(VIRTIO_BLK_F_ZONED)) {
        co_return VIRTIO_BLK_S_UNSUPP;
    }
    // Room for the header and one descriptor at least (QEMU).
    size_t room = req.data_in.size();
    if (room < kVirtioBlkZoneReportHdrSize + kVirtioBlkZoneDescSize ||
        req.sector > capacity_sectors()) {
        co_return VIRTIO_BLK_S_ZONE_INVALID_CMD;
    }
    const BlockLimits& bl = blk_.bs()->limits();
    uint64_t wanted = std::min<uint64_t>((room - kVirtioBlkZoneReportHdrSize) / kVirtioBlkZoneDescSize,
                                         bl.nr_zones);
    uint64_t offset = req.sector * 512;
    uint64_t filled = 0;
    BlockZoneDescriptor zones[kReportBatch];
    while (filled < wanted && offset < blk_.getlength()) {
        uint32_t n = uint32_t(std::min<uint64_t>(wanted - filled, kReportBatch));
        int ret = co_await blk_.co_zone_report(offset, n, zones);
        if (ret < 0) {
            co_return status_of(ret);
        }
        for (uint32_t i = 0; i < n; i++) {
            uint8_t d[kVirtioBlkZoneDescSize];
            encode_zone(zones[i], d);
            req.data_in.from_buf(kVirtioBlkZoneReportHdrSize + (filled + i) * kVirtioBlkZoneDescSize, d,
                                 sizeof(d));
        }
        filled += n;
        if (n == 0) {
            break;
        }
        offset = zones[n - 1].start + zones[n - 1].length;
    }
    uint8_t hdr[kVirtioBlkZoneReportHdrSize] = {};
    store_le64(hdr, filled);
    req.data_in.from_buf(0, hdr, sizeof(hdr));
    co_return VIRTIO_BLK_S_OK;
}

Task<uint8_t> VirtioBlkDevice::co_zone_mgmt(Request& req)
{
    if (!negotiated(VIRTIO_BLK_F_ZONED)) {
        co_return VIRTIO_BLK_S_UNSUPP;
    }
    uint64_t length = blk_.getlength();
    uint64_t offset = 0;
    uint64_t len = length;  // RESET_ALL: the whole disk
    BlockZoneOp op = BlockZoneOp::Reset;
    switch (req.type) {
    case VIRTIO_BLK_T_ZONE_OPEN:
        op = BlockZoneOp::Open;
        break;
    case VIRTIO_BLK_T_ZONE_CLOSE:
        op = BlockZoneOp::Close;
        break;
    case VIRTIO_BLK_T_ZONE_FINISH:
        op = BlockZoneOp::Finish;
        break;
    default:
        break;
    }
    if (req.type != VIRTIO_BLK_T_ZONE_RESET_ALL) {
        // One zone (the last one may be shorter).
        if (req.sector >= capacity_sectors()) {
            co_return VIRTIO_BLK_S_ZONE_INVALID_CMD;
        }
        offset = req.sector * 512;
        len = std::min(blk_.bs()->limits().zone_size, length - offset);
    }
    if (!opts_.writable) {
        co_return VIRTIO_BLK_S_IOERR;
    }
    int ret = co_await blk_.co_zone_mgmt(op, offset, len);
    co_return status_of(ret);
}

Task<uint8_t> VirtioBlkDevice::co_zone_append(Request& req)
{
    if (!negotiated(VIRTIO_BLK_F_ZONED)) {
        co_return VIRTIO_BLK_S_UNSUPP;
    }
    // The in-header is le64 append_sector before the status byte.
    if (req.data_in.size() < 8) {
        co_return VIRTIO_BLK_S_IOERR;
    }
    if (!opts_.writable) {
        co_return VIRTIO_BLK_S_IOERR;
    }
    const BlockLimits& bl = blk_.bs()->limits();
    uint64_t capacity = capacity_sectors();
    uint64_t len = req.data_out.size();
    if (req.sector > capacity || len / 512 > capacity - req.sector) {
        co_return VIRTIO_BLK_S_ZONE_INVALID_CMD;
    }
    uint64_t offset = req.sector * 512;
    uint32_t granularity = std::max(bl.write_granularity, lbs_);
    if (offset % granularity) {
        co_return VIRTIO_BLK_S_ZONE_UNALIGNED_WP;
    }
    if (len == 0 || len % lbs_ || len > bl.max_append_bytes) {
        co_return bl.max_append_bytes ? VIRTIO_BLK_S_ZONE_INVALID_CMD : VIRTIO_BLK_S_UNSUPP;
    }
    int ret = co_await blk_.co_zone_append(offset, req.data_out, write_flags());
    if (ret < 0) {
        co_return status_of(ret);
    }
    uint8_t sector[8];
    store_le64(sector, offset / 512);
    req.data_in.from_buf(0, sector, sizeof(sector));
    co_return VIRTIO_BLK_S_OK;
}

}  // namespace qemu
