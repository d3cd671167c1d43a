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

private:
    BlockBackend& blk_;
    VirtioBlkOptions opts_;
    uint64_t driver_features_ = 0;
    bool writeback_ = true;  // config `wce`
};

}  // namespace qemu
