// The virtio-blk device model (hw/virtio-blk/): feature negotiation, the
// config space, and requests, including the zoned extension (virtio 1.3
// 5.2: ZONE_APPEND, ZONE_REPORT, ZONE_OPEN/CLOSE/FINISH/RESET/RESET_ALL),
// on top of a BlockBackend.  Transport-independent: vhost-user-blk and
// VDUSE pop VirtQueueElements (include/hw/virtio/virtqueue.h) and hand them
// here; ublk, which is not virtio, does not use it.
//
// The config space and the zoned limits come from the node's BlockLimits
// (capacity, alignment, max transfer, discard and write-zeroes limits,
// zone_sectors, max_open/active_zones, max_append_sectors,
// write_granularity, model), never from options of the front end.  Zone
// errors become the zoned virtio statuses through
// virtio_blk_status_from_result() (include/block/zone-error.h), never from
// host errnos.
//
// Threads: a device runs in its BlockBackend's AioContext; co_handle() may
// run for several elements at once (from several queues).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "block/block-backend.h"
#include "hw/virtio/virtqueue.h"
#include "qemu/coroutine.h"
#include "qemu/iov.h"

namespace qemu {

// Feature bits (virtio 1.2 5.2.3, 6).
enum : uint64_t {
    VIRTIO_BLK_F_SIZE_MAX = 1ull << 1,
    VIRTIO_BLK_F_SEG_MAX = 1ull << 2,
    VIRTIO_BLK_F_RO = 1ull << 5,
    VIRTIO_BLK_F_BLK_SIZE = 1ull << 6,
    VIRTIO_BLK_F_FLUSH = 1ull << 9,
    VIRTIO_BLK_F_TOPOLOGY = 1ull << 10,
    VIRTIO_BLK_F_CONFIG_WCE = 1ull << 11,
    VIRTIO_BLK_F_MQ = 1ull << 12,
    VIRTIO_BLK_F_DISCARD = 1ull << 13,
    VIRTIO_BLK_F_WRITE_ZEROES = 1ull << 14,
    VIRTIO_BLK_F_ZONED = 1ull << 17,
    VIRTIO_RING_F_INDIRECT_DESC = 1ull << 28,
    VIRTIO_RING_F_EVENT_IDX = 1ull << 29,
    VIRTIO_F_VERSION_1 = 1ull << 32,
};

// The size of struct virtio_blk_config up to and including the zoned part.
inline constexpr unsigned kVirtioBlkConfigSize = 96;

// Request types (virtio 1.2 5.2.6, 1.3 5.2.6 for the zoned ones).
enum : uint32_t {
    VIRTIO_BLK_T_IN = 0,
    VIRTIO_BLK_T_OUT = 1,
    VIRTIO_BLK_T_FLUSH = 4,
    VIRTIO_BLK_T_GET_ID = 8,
    VIRTIO_BLK_T_DISCARD = 11,
    VIRTIO_BLK_T_WRITE_ZEROES = 13,
    VIRTIO_BLK_T_SECURE_ERASE = 14,
    VIRTIO_BLK_T_ZONE_APPEND = 15,
    VIRTIO_BLK_T_ZONE_REPORT = 16,
    VIRTIO_BLK_T_ZONE_OPEN = 18,
    VIRTIO_BLK_T_ZONE_CLOSE = 20,
    VIRTIO_BLK_T_ZONE_FINISH = 22,
    VIRTIO_BLK_T_ZONE_RESET = 24,
    VIRTIO_BLK_T_ZONE_RESET_ALL = 26,
    VIRTIO_BLK_T_BARRIER = 0x80000000u,  // legacy; masked off
    VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1,
};
// Zone models of config `zoned.model`.
enum : uint8_t { VIRTIO_BLK_Z_NONE = 0, VIRTIO_BLK_Z_HM = 1, VIRTIO_BLK_Z_HA = 2 };
// Sizes on the wire: the out header {le32 type, le32 ioprio, le64 sector},
// a discard/write-zeroes segment, the zone report header and descriptor,
// the GET_ID string.
inline constexpr unsigned kVirtioBlkOutHdrSize = 16;
inline constexpr unsigned kVirtioBlkSegmentSize = 16;
inline constexpr unsigned kVirtioBlkZoneReportHdrSize = 64;
inline constexpr unsigned kVirtioBlkZoneDescSize = 64;
inline constexpr unsigned kVirtioBlkIdBytes = 20;

struct VirtioBlkOptions {
    bool writable = false;
    uint16_t num_queues = 1;
    uint16_t queue_size = 256;
    // 0: the node's request alignment rounded up to 512.
    uint32_t logical_block_size = 0;
    std::string serial;  // GET_ID; at most 20 bytes are sent
    // Offer VIRTIO_BLK_F_ZONED for a zoned node.  A transport whose peer
    // cannot carry it (QEMU's vhost-user-blk-pci filters it out) still
    // gets the plain device by leaving this on: Linux then sees a host-
    // managed disk only when the feature is negotiated.
    bool zoned = true;
};

class VirtioBlkDevice {
public:
    // blk must outlive the device.  Fails (err set, check ok()) for a
    // logical block size that is not a power of two in [512, 64 KiB] or not
    // a multiple of the node's request alignment.
    VirtioBlkDevice(BlockBackend& blk, const VirtioBlkOptions& opts, Error& err);

    // Features offered (VERSION_1 always; ZONED for a zoned node; RO for a
    // read-only export).  The driver's choice is accepted by
    // set_driver_features() only if it is a subset that contains
    // VERSION_1; returns false otherwise (FEATURES_OK must not be set).
    uint64_t device_features() const;
    bool set_driver_features(uint64_t features);
    uint64_t driver_features() const { return driver_features_; }

    // struct virtio_blk_config, kVirtioBlkConfigSize bytes, little-endian.
    std::vector<uint8_t> config() const;
    // A driver write to the config space (only `wce` is writable); returns
    // false for a write outside it.
    bool write_config(uint32_t offset, const uint8_t* data, uint32_t len);

    // Executes one request and writes its status (and data) into the
    // element's in-buffers.  Returns the number of bytes written there, for
    // VirtQueue::push().  A request whose headers do not fit gets IOERR, or
    // 0 bytes when there is not even room for the status byte.
    Task<uint32_t> co_handle(const VirtQueueElement& elem);

    const VirtioBlkOptions& options() const { return opts_; }
    BlockBackend& blk() const { return blk_; }

    // The logical block size the driver sees (config blk_size).
    uint32_t logical_block_size() const { return lbs_; }

private:
    // One request with its header parsed: `data_out` is the out-buffers
    // after the header, `data_in` the in-buffers before the status byte
    // (both point into the element's buffers: no copies).
    struct Request {
        uint32_t type;
        uint64_t sector;
        IOVector& data_out;
        IOVector& data_in;
    };
    Task<uint8_t> co_execute(Request& req);
    Task<uint8_t> co_read_write(Request& req, bool is_write);
    uint8_t get_id(Request& req) const;
    Task<uint8_t> co_discard_write_zeroes(Request& req);
    // hw/virtio-blk/virtio-blk-zoned.cc
    Task<uint8_t> co_zone_report(Request& req);
    Task<uint8_t> co_zone_mgmt(Request& req);
    Task<uint8_t> co_zone_append(Request& req);

    bool negotiated(uint64_t feature) const { return driver_features_ & feature; }
    // Is [sector, sector + bytes) a request QEMU's device accepts: inside
    // the disk, aligned to the logical block size, not larger than the
    // block layer takes in one request?
    bool range_ok(uint64_t sector, uint64_t bytes) const;
    // The status for a block-layer result; the zoned statuses only when
    // the driver knows them (ZONED negotiated), else IOERR.
    uint8_t status_of(int ret) const;
    // Writes are durable on completion while the cache is write-through.
    unsigned write_flags() const { return writeback_ ? 0u : unsigned(BDRV_REQ_FUA); }
    // The disk size in 512-byte sectors (it follows a resize).
    uint64_t capacity_sectors() const { return blk_.getlength() / 512; }
    uint32_t seg_max() const;
    uint32_t max_discard_sectors(uint64_t limit) const;
    void zoned_config(uint8_t* cfg) const;

    BlockBackend& blk_;
    VirtioBlkOptions opts_;
    uint32_t lbs_ = 512;
    uint64_t driver_features_ = 0;
    // Config `wce`.  Read and written in the device's AioContext (the
    // transport forwards config writes there).
    bool writeback_ = true;
};

}  // namespace qemu
