// The virtio-blk device model: features, config space and the requests
// every virtio-blk device has.  The zoned requests are in
// virtio-blk-zoned.cc.  Request checks follow QEMU's virtio-blk handler
// (block/export/virtio-blk-handler.c, hw/block/virtio-blk.c): a bad range
// or alignment is IOERR, an unknown type or flag UNSUPP; the data moves
// between the element's buffers and the block layer without a copy.
#include "hw/virtio/virtio-blk.h"

#include <algorithm>
#include <bit>
#include <cstring>

#include "block/zone-error.h"
#include "qemu/bswap.h"

namespace qemu {

namespace {

// QEMU's BDRV_REQUEST_MAX_SECTORS: requests stay below 2 GiB.
constexpr uint64_t kMaxRequestSectors = uint64_t(INT32_MAX) >> 9;

// An IOVector of an element's buffers (pointing into them).
IOVector vector_of(const std::vector<iovec>& iov)
{
    IOVector v;
    for (const iovec& e : iov) {
        v.add(e.iov_base, e.iov_len);
    }
    return v;
}

}  // namespace

VirtioBlkDevice::VirtioBlkDevice(BlockBackend& blk, const VirtioBlkOptions& opts, Error& err)
    : blk_(blk), opts_(opts)
{
    const BlockLimits& bl = blk_.bs()->limits();
    lbs_ = opts.logical_block_size;
    if (lbs_ == 0) {
        lbs_ = std::max<uint32_t>(512, std::bit_ceil(bl.request_alignment));
    }
    if (lbs_ < 512 || lbs_ > 65536 || !std::has_single_bit(lbs_)) {
        err.set("logical-block-size %u must be a power of two between 512 and 65536", lbs_);
        return;
    }
    if (lbs_ % bl.request_alignment) {
        err.set("logical-block-size %u is not a multiple of the node's request alignment %u",
                lbs_, bl.request_alignment);
        return;
    }
    if (opts.num_queues == 0) {
        err.set("num-queues must be at least 1");
        return;
    }
    // seg_max is queue_size - 2 (a request's header and status take two
    // descriptors); split rings have power-of-two sizes.
    if (opts.queue_size < 4 || opts.queue_size > kVirtQueueMaxSize ||
        !std::has_single_bit(unsigned(opts.queue_size))) {
        err.set("queue-size %u must be a power of two between 4 and %u", opts.queue_size,
                kVirtQueueMaxSize);
        return;
    }
    if (bl.zoned != BlockZoneModel::None && opts.zoned) {
        if (bl.zone_size % lbs_ || bl.zone_size / 512 > UINT32_MAX) {
            err.set("zone size %llu cannot be expressed in %u-byte blocks of virtio-blk",
                    (unsigned long long)bl.zone_size, lbs_);
            return;
        }
    }
}

uint64_t VirtioBlkDevice::device_features() const
{
    const BlockLimits& bl = blk_.bs()->limits();
    uint64_t f = VIRTIO_F_VERSION_1 | VIRTIO_RING_F_INDIRECT_DESC | VIRTIO_RING_F_EVENT_IDX |
                 VIRTIO_BLK_F_SEG_MAX | VIRTIO_BLK_F_BLK_SIZE | VIRTIO_BLK_F_TOPOLOGY |
                 VIRTIO_BLK_F_FLUSH | VIRTIO_BLK_F_CONFIG_WCE | VIRTIO_BLK_F_MQ;
    if (bl.max_transfer) {
        f |= VIRTIO_BLK_F_SIZE_MAX;
    }
    if (!opts_.writable) {
        f |= VIRTIO_BLK_F_RO;
    } else {
        f |= VIRTIO_BLK_F_WRITE_ZEROES;
        // As QEMU: a host-managed disk has no discard (a discarded
        // sequential zone would have to be reset).
        if (bl.zoned != BlockZoneModel::HostManaged) {
            f |= VIRTIO_BLK_F_DISCARD;
        }
    }
    if (bl.zoned != BlockZoneModel::None && opts_.zoned) {
        f |= VIRTIO_BLK_F_ZONED;
    }
    return f;
}

bool VirtioBlkDevice::set_driver_features(uint64_t features)
{
    if ((features & ~device_features()) || !(features & VIRTIO_F_VERSION_1)) {
        return false;
    }
    driver_features_ = features;
    // Without FLUSH the driver cannot make writes durable, so they must be
    // durable when completed (virtio 1.2 5.2.5.2).
    writeback_ = features & VIRTIO_BLK_F_FLUSH;
    return true;
}

uint32_t VirtioBlkDevice::seg_max() const
{
    return std::min<uint32_t>(opts_.queue_size - 2, blk_.bs()->limits().max_iov);
}

// Discard and write-zeroes limits in sectors: the node's limit, else the
// largest request, in whole logical blocks.
uint32_t VirtioBlkDevice::max_discard_sectors(uint64_t limit) const
{
    uint64_t sectors = limit ? std::min(limit / 512, kMaxRequestSectors) : kMaxRequestSectors;
    return uint32_t(sectors / (lbs_ / 512) * (lbs_ / 512));
}

void VirtioBlkDevice::zoned_config(uint8_t* cfg) const
{
    const BlockLimits& bl = blk_.bs()->limits();
    store_le32(cfg + 72, uint32_t(bl.zone_size / 512));
    store_le32(cfg + 76, bl.max_open_zones);
    store_le32(cfg + 80, bl.max_active_zones);
    store_le32(cfg + 84, uint32_t(std::min<uint64_t>(bl.max_append_bytes / 512, UINT32_MAX)));
    // Bytes; Linux makes it the physical block size, so never below a
    // logical block.
    store_le32(cfg + 88, std::max(bl.write_granularity, lbs_));
    cfg[92] = bl.zoned == BlockZoneModel::HostManaged ? VIRTIO_BLK_Z_HM : VIRTIO_BLK_Z_HA;
}

std::vector<uint8_t> VirtioBlkDevice::config() const
{
    const BlockLimits& bl = blk_.bs()->limits();
    uint64_t f = device_features();
    std::vector<uint8_t> cfg(kVirtioBlkConfigSize, 0);
    uint8_t* c = cfg.data();
    store_le64(c + 0, capacity_sectors());
    if (f & VIRTIO_BLK_F_SIZE_MAX) {
        uint64_t max_seg = std::min<uint64_t>(bl.max_transfer, UINT32_MAX);
        store_le32(c + 8, uint32_t(std::max<uint64_t>(max_seg / lbs_ * lbs_, lbs_)));
    }
    store_le32(c + 12, seg_max());
    store_le32(c + 20, lbs_);
    // Topology: the physical block is what a zoned disk must be written in
    // (write granularity), else a logical block.
    uint32_t physical = std::max(lbs_, bl.zoned != BlockZoneModel::None ? bl.write_granularity : 0);
    uint32_t blocks = std::has_single_bit(physical) ? physical / lbs_ : 1;
    c[24] = uint8_t(std::countr_zero(blocks));
    c[25] = 0;
    store_le16(c + 26, uint16_t(std::min<uint32_t>(blocks, UINT16_MAX)));  // min_io_size: one physical block
    store_le32(c + 28, uint32_t(std::min<uint64_t>(bl.opt_transfer / lbs_, UINT32_MAX)));
    c[32] = writeback_ ? 1 : 0;
    store_le16(c + 34, opts_.num_queues);
    if (f & VIRTIO_BLK_F_DISCARD) {
        store_le32(c + 36, max_discard_sectors(bl.max_pdiscard));
        store_le32(c + 40, 1);
        store_le32(c + 44, std::max(lbs_, bl.pdiscard_alignment) / 512);
    }
    if (f & VIRTIO_BLK_F_WRITE_ZEROES) {
        store_le32(c + 48, max_discard_sectors(bl.max_pwrite_zeroes));
        store_le32(c + 52, 1);
        c[56] = 1;  // the UNMAP flag is honoured (BDRV_REQ_MAY_UNMAP)
    }
    if (f & VIRTIO_BLK_F_ZONED) {
        zoned_config(c);
    }
    return cfg;
}

bool VirtioBlkDevice::write_config(uint32_t offset, const uint8_t* data, uint32_t len)
{
    if (len == 0 || offset >= kVirtioBlkConfigSize || len > kVirtioBlkConfigSize - offset) {
        return false;
    }
    // Only `wce` is writable; a write of the whole space (QEMU's
    // vhost-user-test-device sends those) changes nothing else.
    constexpr uint32_t kWce = 32;
    if (negotiated(VIRTIO_BLK_F_CONFIG_WCE) && offset <= kWce && kWce - offset < len) {
        writeback_ = data[kWce - offset] != 0;
    }
    return true;
}

bool VirtioBlkDevice::range_ok(uint64_t sector, uint64_t bytes) const
{
    uint64_t capacity = capacity_sectors();
    uint64_t sectors = bytes / 512;
    return bytes % lbs_ == 0 && sectors <= kMaxRequestSectors && sector % (lbs_ / 512) == 0 &&
           sector <= capacity && sectors <= capacity - sector;
}

uint8_t VirtioBlkDevice::status_of(int ret) const
{
    VirtioBlkStatus s = virtio_blk_status_from_result(ret);
    if (s > VIRTIO_BLK_S_UNSUPP && !negotiated(VIRTIO_BLK_F_ZONED)) {
        return VIRTIO_BLK_S_IOERR;
    }
    return s;
}

Task<uint32_t> VirtioBlkDevice::co_handle(const VirtQueueElement& elem)
{
    IOVector in = vector_of(elem.in);
    if (in.size() == 0) {
        co_return 0;
    }
    // QEMU reports the whole in-area as written, whatever the request.
    uint32_t written = uint32_t(std::min<uint64_t>(in.size(), UINT32_MAX));
    IOVector out = vector_of(elem.out);
    uint8_t status = VIRTIO_BLK_S_IOERR;
    uint8_t hdr[kVirtioBlkOutHdrSize];
    if (out.to_buf(0, hdr, sizeof(hdr)) == sizeof(hdr)) {
        IOVector data_out, data_in;
        data_out.add_slice(out, sizeof(hdr), out.size() - sizeof(hdr));
        data_in.add_slice(in, 0, in.size() - 1);
        Request req{load_le32(hdr) & ~VIRTIO_BLK_T_BARRIER, load_le64(hdr + 8), data_out, data_in};
        status = co_await co_execute(req);
    }
    in.from_buf(in.size() - 1, &status, 1);
    co_return written;
}

Task<uint8_t> VirtioBlkDevice::co_execute(Request& req)
{
    switch (req.type) {
    case VIRTIO_BLK_T_IN:
        co_return co_await co_read_write(req, false);
    case VIRTIO_BLK_T_OUT:
        co_return co_await co_read_write(req, true);
    case VIRTIO_BLK_T_FLUSH: {
        int ret = co_await blk_.co_flush();
        co_return status_of(ret);
    }
    case VIRTIO_BLK_T_GET_ID:
        co_return get_id(req);
    case VIRTIO_BLK_T_DISCARD:
    case VIRTIO_BLK_T_WRITE_ZEROES:
        co_return co_await co_discard_write_zeroes(req);
    case VIRTIO_BLK_T_ZONE_REPORT:
        co_return co_await co_zone_report(req);
    case VIRTIO_BLK_T_ZONE_OPEN:
    case VIRTIO_BLK_T_ZONE_CLOSE:
    case VIRTIO_BLK_T_ZONE_FINISH:
    case VIRTIO_BLK_T_ZONE_RESET:
    case VIRTIO_BLK_T_ZONE_RESET_ALL:
        co_return co_await co_zone_mgmt(req);
    case VIRTIO_BLK_T_ZONE_APPEND:
        co_return co_await co_zone_append(req);
    default:
        co_return VIRTIO_BLK_S_UNSUPP;
    }
}

Task<uint8_t> VirtioBlkDevice::co_read_write(Request& req, bool is_write)
{
    if (is_write && !opts_.writable) {
        co_return VIRTIO_BLK_S_IOERR;
    }
    IOVector& data = is_write ? req.data_out : req.data_in;
    if (!range_ok(req.sector, data.size())) {
        co_return VIRTIO_BLK_S_IOERR;
    }
    uint64_t offset = req.sector * 512;
    int ret;
    if (is_write) {
        ret = co_await blk_.co_pwritev(offset, data.size(), data, write_flags());
    } else {
        ret = co_await blk_.co_preadv(offset, data.size(), data);
    }
    co_return status_of(ret);
}

uint8_t VirtioBlkDevice::get_id(Request& req) const
{
    // Up to 20 bytes, NUL-terminated only when shorter (virtio 1.2 5.2.6).
    size_t n = std::min<size_t>({opts_.serial.size() + 1, kVirtioBlkIdBytes, req.data_in.size()});
    req.data_in.from_buf(0, opts_.serial.c_str(), n);
    return VIRTIO_BLK_S_OK;
}

Task<uint8_t> VirtioBlkDevice::co_discard_write_zeroes(Request& req)
{
    bool zeroes = req.type == VIRTIO_BLK_T_WRITE_ZEROES;
    if (!negotiated(zeroes ? VIRTIO_BLK_F_WRITE_ZEROES : VIRTIO_BLK_F_DISCARD)) {
        co_return VIRTIO_BLK_S_UNSUPP;
    }
    if (!opts_.writable) {
        co_return VIRTIO_BLK_S_IOERR;
    }
    // One segment (max_*_seg is 1); more is UNSUPP, less IOERR (QEMU).
    if (req.data_out.size() > kVirtioBlkSegmentSize) {
        co_return VIRTIO_BLK_S_UNSUPP;
    }
    uint8_t seg[kVirtioBlkSegmentSize];
    if (req.data_out.to_buf(0, seg, sizeof(seg)) != sizeof(seg)) {
        co_return VIRTIO_BLK_S_IOERR;
    }
    uint64_t sector = load_le64(seg);
    uint32_t num_sectors = load_le32(seg + 8);
    uint32_t flags = load_le32(seg + 12);
    const BlockLimits& bl = blk_.bs()->limits();
    if (num_sectors > max_discard_sectors(zeroes ? bl.max_pwrite_zeroes : bl.max_pdiscard) ||
        !range_ok(sector, uint64_t(num_sectors) * 512)) {
        co_return VIRTIO_BLK_S_IOERR;
    }
    // Unknown flags, and UNMAP on a discard, are UNSUPP (virtio 1.2 5.2.6.2).
    if ((flags & ~uint32_t(VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP)) ||
        (!zeroes && (flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP))) {
        co_return VIRTIO_BLK_S_UNSUPP;
    }
    uint64_t offset = sector * 512;
    uint64_t bytes = uint64_t(num_sectors) * 512;
    int ret;
    if (zeroes) {
        unsigned f = (flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) ? unsigned(BDRV_REQ_MAY_UNMAP) : 0u;
        ret = co_await blk_.co_pwrite_zeroes(offset, bytes, f | write_flags());
    } else {
        ret = co_await blk_.co_pdiscard(offset, bytes);
    }
    co_return status_of(ret);
}

}  // namespace qemu
