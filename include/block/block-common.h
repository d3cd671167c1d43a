// Types shared by the block layer, its drivers and its users.
#pragma once

#include <cstdint>
#include <string>

namespace qemu {

class BlockDriverState;

// Flags for one request (QEMU's BdrvRequestFlags).
enum BdrvRequestFlags : unsigned {
    BDRV_REQ_NONE = 0,
    // read: copy what the read finds below this layer into it first
    // (QEMU's copy-on-read; see bdrv_co_preadv).
    BDRV_REQ_COPY_ON_READ = 0x1,
    // pwrite_zeroes: the range may be deallocated instead of written.
    BDRV_REQ_MAY_UNMAP = 0x4,
    // Data must be on stable storage when the request completes.
    BDRV_REQ_FUA = 0x10,
    // Store the (whole-cluster) data compressed; formats without
    // compression fail the write with -ENOTSUP.
    BDRV_REQ_WRITE_COMPRESSED = 0x20,
    // pwrite_zeroes: fail with -ENOTSUP rather than write a zero buffer.
    BDRV_REQ_NO_FALLBACK = 0x100,
};

// Flags for opening a node (QEMU's BDRV_O_*).
enum BdrvOpenFlags : int {
    BDRV_O_RDWR = 0x0002,
    // copy-on-read (qemu-io -C): every read of the node is a
    // BDRV_REQ_COPY_ON_READ one.  Needs a writable node; not inherited.
    BDRV_O_COPY_ON_READ = 0x0400,
    BDRV_O_NOCACHE = 0x0020,    // cache.direct=on: bypass the host page cache
    BDRV_O_NO_BACKING = 0x0100,  // do not open the backing file (qemu-img info, rebase -u)
    BDRV_O_NO_FLUSH = 0x0200,   // cache.no-flush=on: flushes are no-ops
    // Opened to be checked (qemu-img check): formats skip their automatic
    // repair at open and let images marked corrupt open read-write.
    BDRV_O_CHECK = 0x1000,
    BDRV_O_PROTOCOL = 0x8000,   // the filename names a protocol node, no format probing
    BDRV_O_UNMAP = 0x4000,      // discard=unmap: discards reach the file
    BDRV_O_NO_SHARE = 0x10000,  // take no shared permissions (qemu-img's exclusive opens)
    BDRV_O_RESIZE = 0x20000,    // the user intends to resize (take the resize permission)
    // No guest data will be read or written (qemu-img info): formats open
    // only their metadata, e.g. qcow2 not its external data file, so that
    // looking at an untrusted image touches no other file.
    BDRV_O_NO_IO = 0x40000,
    // QEMU's -s / snapshot=on: the image is opened read-only as the backing
    // file of a temporary qcow2 overlay that takes every write and is
    // deleted with the backend (BlockBackend::open handles it).
    BDRV_O_SNAPSHOT = 0x0008,
    // detect-zeroes=on|unmap (QEMU keeps it beside the flags): a write
    // whose data is all zeroes becomes a write-zeroes request, with
    // BDRV_REQ_MAY_UNMAP for unmap.  Not inherited by children.
    BDRV_O_DETECT_ZEROES = 0x80000,
    BDRV_O_DETECT_ZEROES_UNMAP = 0x100000,
};

// The user-facing spellings of the open modes, as QEMU's
// bdrv_parse_cache_mode(), bdrv_parse_discard_flags() and bdrv_parse_aio():
// each returns false for an unknown mode and then changes nothing.
//   cache: none|off, directsync, writeback, unsafe, writethrough; sets
//          BDRV_O_NOCACHE and BDRV_O_NO_FLUSH in `flags` (clearing the other)
//          and whether the guest write cache is off (`writethrough`).
//   discard: off|ignore, on|unmap; sets or clears BDRV_O_UNMAP.
//   aio: threads, native, io_uring; the file driver's aio= value.
bool bdrv_parse_cache_mode(const std::string& mode, int& flags, bool& writethrough);
bool bdrv_parse_discard_flags(const std::string& mode, int& flags);
bool bdrv_parse_aio(const std::string& mode, std::string& aio);

// Permissions a parent takes on a node and shares with others (QEMU's
// BLK_PERM_*).  The file driver turns them into OFD byte locks compatible
// with QEMU's, so our tools and QEMU's see each other's claims.
enum BlockPermission : uint64_t {
    BLK_PERM_CONSISTENT_READ = 0x01,
    BLK_PERM_WRITE = 0x02,
    BLK_PERM_WRITE_UNCHANGED = 0x04,
    BLK_PERM_RESIZE = 0x08,
    BLK_PERM_ALL = 0x0f,
};
const char* block_permission_name(uint64_t single_perm);

// Result bits of block_status (QEMU's BDRV_BLOCK_*).
enum BlockStatusFlags : unsigned {
    BDRV_BLOCK_DATA = 0x01,          // reads come from the file (or a format's data)
    BDRV_BLOCK_ZERO = 0x02,          // reads return zeroes
    BDRV_BLOCK_OFFSET_VALID = 0x04,  // map/file are meaningful
    BDRV_BLOCK_RAW = 0x08,           // pass-through: ask `file` at `map`
    BDRV_BLOCK_ALLOCATED = 0x10,     // allocated in this layer
    BDRV_BLOCK_EOF = 0x20,           // the range reaches the end of the node
    // With DATA and OFFSET_VALID from a format driver: the data may never
    // have been written (metadata preallocation), so the generic layer asks
    // `file` at `map` whether the range reads as zeroes.
    BDRV_BLOCK_RECURSE = 0x40,
};

struct BlockStatus {
    unsigned flags = 0;
    uint64_t pnum = 0;  // bytes from the queried offset with this status
    uint64_t map = 0;   // offset in `file` when OFFSET_VALID
    BlockDriverState* file = nullptr;
};

enum class PreallocMode { Off, Metadata, Falloc, Full };
const char* prealloc_mode_name(PreallocMode mode);
bool parse_prealloc_mode(const std::string& s, PreallocMode& mode);

// Zoned block device model (QEMU's BlockZoneModel).
enum class BlockZoneModel : uint8_t { None = 0, HostManaged = 1, HostAware = 2 };

// What `qemu-img check` finds and repairs (QEMU's BdrvCheckResult).
struct BdrvCheckResult {
    int corruptions = 0;
    int leaks = 0;
    int check_errors = 0;
    int corruptions_fixed = 0;
    int leaks_fixed = 0;
    uint64_t image_end_offset = 0;
    // Fragmentation statistics, printed when allocated_clusters > 0.
    uint64_t total_clusters = 0;
    uint64_t allocated_clusters = 0;
    uint64_t fragmented_clusters = 0;
    uint64_t compressed_clusters = 0;
};
enum BdrvCheckMode : unsigned {
    BDRV_FIX_LEAKS = 1,
    BDRV_FIX_ERRORS = 2,
};

// An internal snapshot as tools see it (QEMU's QEMUSnapshotInfo).
struct SnapshotInfo {
    std::string id;    // unique in the image; chosen by the driver
    std::string name;  // the user's tag; need not be unique
    uint64_t vm_state_size = 0;
    uint32_t date_sec = 0;
    uint32_t date_nsec = 0;
    uint64_t vm_clock_nsec = 0;
    uint64_t icount = UINT64_MAX;  // UINT64_MAX: not recorded
};

// What a tool may ask of any node (qemu-img info, qemu-io info).
struct BlockDriverInfo {
    uint32_t cluster_size = 0;
    // The allocation unit (a subcluster with extended L2 entries); 0:
    // the same as cluster_size.
    uint32_t subcluster_size = 0;
    // Where saved VM state would start in the guest-visible address space
    // (qcow2 keeps it after the disk); 0 for formats without VM state.
    uint64_t vm_state_offset = 0;
    bool is_dirty = false;
};

// Limits of a node, computed bottom-up: each node starts from its children's
// limits and applies its own (BlockDriverState::refresh_limits).  Zero means
// "no limit" or "no preference" unless noted.
struct BlockLimits {
    uint32_t request_alignment = 1;  // requests must be multiples of this (never 0)
    uint64_t max_transfer = 0;       // largest single request in bytes
    uint64_t opt_transfer = 0;       // preferred request size
    uint32_t pdiscard_alignment = 0;
    uint64_t max_pdiscard = 0;
    uint32_t pwrite_zeroes_alignment = 0;
    uint64_t max_pwrite_zeroes = 0;
    uint32_t min_mem_alignment = 1;  // buffer alignment required (O_DIRECT)
    uint32_t opt_mem_alignment = 1;
    uint32_t max_iov = 1024;

    // Zoned geometry and limits; meaningful when zoned != None.
    BlockZoneModel zoned = BlockZoneModel::None;
    uint64_t zone_size = 0;
    uint64_t zone_capacity = 0;
    uint32_t nr_zones = 0;
    uint32_t max_open_zones = 0;
    uint32_t max_active_zones = 0;
    uint64_t max_append_bytes = 0;
    uint32_t write_granularity = 0;
    uint32_t zone_desc_ext_size = 0;  // descriptor extension bytes per zone (NVMe ZDES x 64)

    // Copies the zoned fields from another node's limits; pass-through
    // drivers call this so a zoned child stays visible through them.
    void inherit_zoned(const BlockLimits& child);
};

}  // namespace qemu
