// qcow2: internal interfaces of the driver (docs/interop/qcow2.txt in QEMU
// is the format's specification; docs/devel/qcow2.rst explains this code).
//
// The driver is split by concern (all in block/qcow2/):
//   qcow2.cc     the node: open, close, I/O paths, create, resize, info
//   header.cc    header and header extensions: parsing, validation, writing
//   cache.cc     the L2/refcount-block cache and its write ordering
//   cluster.cc   guest-to-host mapping: L1/L2 lookup, allocation, COW
//   refcount.cc  refcounts, cluster allocation, metadata overlap checks
//   compress.cc  zlib/zstd compressed clusters
//   snapshot.cc  internal snapshots and the snapshot table
//   bitmap.cc    persistent dirty bitmaps
//   zoned.cc     zoned images: zone state, write pointers, conditions
//   check.cc     consistency check and repair (qemu-img check)
//   amend.cc     qemu-img amend
//   measure.cc   qemu-img measure
//
// Locking: `lock_` (a CoMutex) protects all metadata: the L1 table, the
// caches, refcounts, the in-flight allocation list and the header.  Guest
// data is read and written with the lock released, so requests to different
// clusters run concurrently.  A request that must allocate registers an
// InFlightAlloc; overlapping requests wait for it.
//
// Write ordering (what makes a crash safe): a new mapping reaches the disk
// only after the data it points to and the refcounts that own it.  Data is
// written before its L2 entry is updated in the cache; dirty L2 tables are
// written back only after the refcount blocks are written and the file is
// synced; the L1 table only after its L2 tables are written and synced.
#pragma once

#include <list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "block/block_int.h"
#include "block/zone-state-machine.h"
#include "qemu/units.h"

namespace qemu::qcow2 {

constexpr uint32_t kMagic = 0x514649fb;  // "QFI\xfb"
constexpr uint32_t kMinClusterBits = 9;
constexpr uint32_t kMaxClusterBits = 21;
constexpr uint32_t kDefaultClusterBits = 16;
constexpr uint64_t kMaxL1Bytes = 32 * MiB;  // QEMU's implementation limit
constexpr uint64_t kMaxRefcountTableBytes = 8 * MiB;
constexpr uint32_t kMaxBackingFileNameBytes = 1023;
constexpr uint32_t kV2HeaderLength = 72;
constexpr uint32_t kV3MinHeaderLength = 104;
constexpr uint32_t kV3HeaderLength = 112;  // with compression_type, padded
constexpr uint64_t kMaxSnapshots = 65536;

// L1/L2/refcount table entry bits.
constexpr uint64_t kOffsetMask = 0x00fffffffffffe00ULL;
constexpr uint64_t kCopied = 1ULL << 63;
constexpr uint64_t kCompressed = 1ULL << 62;
constexpr uint64_t kZero = 1;
constexpr uint64_t kL1ReservedMask = 0x7f000000000001ffULL;
constexpr uint64_t kL2ReservedMask = 0x3f000000000001feULL;
constexpr uint64_t kRefTableReservedMask = 0x1ffULL;

enum IncompatibleFeature : uint64_t {
    INCOMPAT_DIRTY = 1ULL << 0,
    INCOMPAT_CORRUPT = 1ULL << 1,
    INCOMPAT_DATA_FILE = 1ULL << 2,
    INCOMPAT_COMPRESSION = 1ULL << 3,
    INCOMPAT_EXTL2 = 1ULL << 4,
    INCOMPAT_ZONED = 1ULL << 5,  // proposed upstream; see docs/interop/qcow2-zoned.rst
};
enum CompatibleFeature : uint64_t {
    COMPAT_LAZY_REFCOUNTS = 1ULL << 0,
};
enum AutoclearFeature : uint64_t {
    AUTOCLEAR_BITMAPS = 1ULL << 0,
    AUTOCLEAR_DATA_FILE_RAW = 1ULL << 1,
};
// Incompatible features this driver implements (others refuse to open).
constexpr uint64_t kSupportedIncompatible = INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE |
                                            INCOMPAT_COMPRESSION | INCOMPAT_EXTL2 | INCOMPAT_ZONED;
// Autoclear features whose data this driver keeps consistent.
constexpr uint64_t kSupportedAutoclear = AUTOCLEAR_BITMAPS | AUTOCLEAR_DATA_FILE_RAW;

enum ExtensionMagic : uint32_t {
    EXT_END = 0,
    EXT_BACKING_FORMAT = 0xe2792aca,
    EXT_FEATURE_TABLE = 0x6803f857,
    EXT_BITMAPS = 0x23852875,
    EXT_CRYPTO = 0x0537be77,
    EXT_DATA_FILE = 0x44415441,
    EXT_ZONED = 0x007a6264,
};

// The zoned header extension (docs/interop/qcow2-zoned.rst).  The first 56
// bytes are the upstream proposal's layout; the fields after them are ours
// and present only when used (length 96), so that images without them stay
// readable by the proposal's implementation.
struct ZonedExtension {
    static constexpr uint32_t kBaseLength = 56;
    static constexpr uint32_t kFullLength = 96;
    static constexpr uint64_t kConventionalFlag = 1ULL << 59;  // in write pointer entries
    static constexpr uint64_t kWpMask = (1ULL << 59) - 1;

    uint8_t model = 1;  // 1 host-managed, 2 host-aware
    uint64_t zone_size = 0;
    uint64_t zone_capacity = 0;
    uint32_t conventional_zones = 0;
    uint32_t nr_zones = 0;
    uint32_t max_active_zones = 0;
    uint32_t max_open_zones = 0;
    uint32_t max_append_bytes = 0;
    uint64_t meta_size = 0;    // write pointer array: 8 bytes per zone
    uint64_t meta_offset = 0;
    // Ours:
    uint32_t zd_extension_size = 0;  // bytes of descriptor extension per zone
    uint64_t cond_offset = 0;        // per-zone persistent conditions, 1 byte each
    uint64_t cond_size = 0;
    uint64_t zde_offset = 0;         // descriptor extensions
    uint64_t zde_size = 0;

    bool uses_extra_fields() const { return zd_extension_size || cond_offset || zde_offset; }
    // Checks the extension against the image (virtual size, cluster size,
    // file size); errors name the field.
    bool validate(uint64_t virtual_size, uint32_t cluster_bits, uint64_t file_size, Error& err) const;
    void serialize(std::vector<uint8_t>& out) const;
};

// A zoned image's write pointer array in memory (as stored on disk), in 4
// bytes per zone: a conventional zone's entry is always its start with
// kConventionalFlag, a sequential zone's a multiple of 512 from its start
// to its end (load_zone_state repairs or refuses others), kept as 512-byte
// blocks from the zone start (zone sizes are at most kMaxZoneSize).
class ZoneWpEntries {
public:
    // All entries as a new image has them.  May throw std::bad_alloc.
    void reset(const ZonedExtension& ext);
    uint64_t get(uint32_t zone) const
    {
        uint64_t start = uint64_t(zone) * zone_size_;
        if (zone < conventional_zones_) {
            return start | ZonedExtension::kConventionalFlag;
        }
        return start + (uint64_t(blocks_[zone]) << 9);
    }
    // REQUIRES: `entry` valid for the zone (see above).
    void set(uint32_t zone, uint64_t entry)
    {
        if (zone >= conventional_zones_) {
            blocks_[zone] = uint32_t((entry - uint64_t(zone) * zone_size_) >> 9);
        }
    }
    uint32_t size() const { return uint32_t(blocks_.size()); }
    size_t memory() const { return blocks_.capacity() * sizeof(uint32_t); }

private:
    uint64_t zone_size_ = 0;
    uint32_t conventional_zones_ = 0;
    std::vector<uint32_t> blocks_;
};

enum class CompressionType : uint8_t { Zlib = 0, Zstd = 1 };

enum class FeatureType : uint8_t { Incompatible = 0, Compatible = 1, Autoclear = 2 };

struct FeatureName {
    FeatureType type;
    uint8_t bit;
    std::string name;
};

// A header extension kept as bytes: those we do not interpret are written
// back unchanged whenever the header is rewritten.
struct HeaderExtension {
    uint32_t magic;
    std::vector<uint8_t> data;
};

// The image header and its extensions, in host byte order.
struct Header {
    uint32_t version = 3;
    uint64_t backing_file_offset = 0;
    uint32_t backing_file_size = 0;
    uint32_t cluster_bits = kDefaultClusterBits;
    uint64_t size = 0;
    uint32_t crypt_method = 0;
    uint32_t l1_size = 0;
    uint64_t l1_table_offset = 0;
    uint64_t refcount_table_offset = 0;
    uint32_t refcount_table_clusters = 0;
    uint32_t nb_snapshots = 0;
    uint64_t snapshots_offset = 0;
    uint64_t incompatible_features = 0;
    uint64_t compatible_features = 0;
    uint64_t autoclear_features = 0;
    uint32_t refcount_order = 4;
    uint32_t header_length = kV3HeaderLength;
    CompressionType compression_type = CompressionType::Zlib;
    // Header bytes after the fields we know, up to header_length (kept).
    std::vector<uint8_t> unknown_fields;

    std::string backing_file;
    std::string backing_format;
    // The external data file's name from its header extension, as stored
    // (QEMU 7.2 opens it relative to the working directory, unparsed).
    std::optional<std::string> data_file;
    std::vector<FeatureName> feature_table;
    std::vector<HeaderExtension> extensions;  // all but the ones parsed above
    std::optional<ZonedExtension> zoned;

    uint64_t cluster_size() const { return 1ULL << cluster_bits; }
    uint32_t refcount_bits() const { return 1u << refcount_order; }

    // Parses and validates the first cluster of an image; `file_size` bounds
    // every offset.  Errors name what is wrong ("Image is corrupt: ...").
    bool parse(const uint8_t* buf, size_t len, uint64_t file_size, Error& err);
    // The header cluster as written by this driver: fields, extensions in
    // QEMU's order (with our feature table), end marker, backing file name.
    // Fails if it does not fit in one cluster.
    bool serialize(std::vector<uint8_t>& out, Error& err) const;
    bool serialize_with(std::vector<uint8_t>& out, bool feature_table, Error& err) const;
    // Name of an unsupported feature bit, from the image's table if it has
    // one ("Unsupported IMGFMT feature(s): NAME").
    std::string feature_name(FeatureType type, int bit) const;
    // Set before parse() by a check open: faults of the zoned extension
    // that rewriting the header repairs (non-zero reserved bytes, a length
    // other than 56 or 96) are recorded in header_faults ("reserved bytes
    // of ...") instead of failing.
    bool tolerate_header_faults = false;
    std::vector<std::string> header_faults;

private:
    // The steps of parse(), in order.
    bool parse_fixed_fields(const uint8_t* buf, size_t len, Error& err);
    bool parse_backing_name(const uint8_t* buf, size_t len, uint64_t& ext_end, Error& err);
    bool parse_extensions(const uint8_t* buf, size_t len, uint64_t ext_end, Error& err);
    bool parse_zoned_extension(const uint8_t* data, uint32_t ext_len, Error& err);
    bool check_features(uint64_t file_size, Error& err) const;
    bool check_tables(uint64_t file_size, Error& err) const;
};

// The feature names this driver writes into every v3 header.
const std::vector<FeatureName>& known_feature_names();

// What an L2 entry says about a guest cluster (QEMU's QCow2ClusterType).
// Use Qcow2State::l2_cluster_type(): the answer depends on the image (an
// offset of 0 is a data cluster with an external data file, and the zero
// flag does not exist with extended L2 entries).
enum class ClusterType {
    Unallocated,  // reads from the backing file, or zeroes
    ZeroPlain,    // reads as zeroes, no host cluster
    ZeroAlloc,    // reads as zeroes, host cluster kept (preallocated)
    Normal,       // data at the host offset (extended L2: the cluster has
                  // a host cluster; its subclusters say what they hold)
    Compressed,   // compressed data somewhere in the file
};

// Extended L2 entries (incompatible bit 4): every standard cluster is cut
// into 32 subclusters, and each L2 entry is followed by a 64-bit bitmap:
// bit n (0-31) says subcluster n is allocated, bit 32+n that it reads as
// zeroes.  Compressed clusters have no subclusters (bitmap 0).
constexpr uint32_t kSubclustersPerClusterBits = 5;  // 32 subclusters
constexpr uint32_t kMinExtendedL2ClusterBits = 14;  // QEMU's create-time limit
constexpr uint64_t kBitmapAllAlloc = 0xffffffffULL;
constexpr uint64_t kBitmapAllZero = kBitmapAllAlloc << 32;
// The allocation bits of subclusters [first, end) (end <= 32); shifted
// left by 32, their zero bits.
constexpr uint64_t subcluster_alloc_bits(uint32_t first, uint32_t end)
{
    return ((end >= 32 ? (1ULL << 32) : (1ULL << end)) - 1) & ~((1ULL << first) - 1);
}

// One L2 table entry: the cluster descriptor and, with extended L2
// entries, its subcluster bitmap (always 0 with standard entries).  All
// code reads and writes L2 tables through Qcow2State::get_l2_entry and
// set_l2_entry (or load/store_l2_entry for tables in a buffer), which know
// the entry size (8 or 16 bytes) and the number of entries per table.
struct L2Entry {
    uint64_t entry = 0;
    uint64_t bitmap = 0;
    bool operator==(const L2Entry&) const = default;
};

// What one subcluster reads as (QEMU's QCow2SubclusterType); with standard
// entries a cluster is its own single subcluster.
enum class SubclusterType {
    UnallocatedPlain,  // backing file or zeroes; no host cluster
    UnallocatedAlloc,  // backing file or zeroes; the cluster has a host cluster
    ZeroPlain,
    ZeroAlloc,
    Normal,
    Compressed,
    Invalid,  // the bitmap contradicts the entry (the image is corrupt)
};

// Kinds of metadata area that overlap checks distinguish: QEMU's QCOW2_OL_*
// in QEMU's order (an overlap is reported as the lowest kind it hits, as
// QEMU does), then the kinds only we know.
enum MetadataKind : uint8_t {
    META_HEADER = 1,
    META_L1 = 2,
    META_L2 = 3,
    META_REFCOUNT_TABLE = 4,
    META_REFCOUNT_BLOCK = 5,
    META_SNAPSHOT_TABLE = 6,
    META_SNAPSHOT_L1 = 7,
    // A snapshot's L2 table; entered only with overlap-check=all (as QEMU
    // checks QCOW2_OL_INACTIVE_L2 only then).  It may be an active L2 table
    // as well: the two are shared until a write copies the active one.
    META_SNAPSHOT_L2 = 8,
    META_BITMAP_DIRECTORY = 9,
    META_BITMAP = 10,  // bitmap tables and bitmap data
    META_ZONE_WP = 11,  // the write pointer array
    META_ZONE_COND = 12,  // the zone condition array
    META_ZONE_DESC = 13,  // the zone descriptor extension area
    META_SNAPSHOT_ZONED = 14,  // a snapshot's copies of the zoned metadata
};
const char* metadata_kind_name(MetadataKind kind);
constexpr uint32_t kind_bit(MetadataKind kind)
{
    return 1u << kind;
}

// A cache of cluster-sized metadata tables (L2 tables or refcount blocks)
// read from and written to the image file.  Entries are pinned while a
// caller holds a Ref; unpinned clean entries are evicted least recently used
// first.  Dirty entries are written back only through write_back(), which
// the owner calls after satisfying the ordering its tables need; eviction of
// a dirty entry calls the owner's flush hook first.
class Qcow2Cache {
public:
    struct Entry {
        uint64_t offset = 0;  // 0: unused slot
        AlignedBuffer data;
        unsigned pins = 0;
        bool dirty = false;
        uint64_t lru = 0;
    };

    // A pinned entry; unpins on destruction.
    class Ref {
    public:
        Ref() = default;
        Ref(Qcow2Cache* c, Entry* e) : cache_(c), entry_(e) {}
        Ref(Ref&& o) noexcept;
        Ref& operator=(Ref&& o) noexcept;
        Ref(const Ref&) = delete;
        ~Ref() { reset(); }
        void reset();
        explicit operator bool() const { return entry_ != nullptr; }
        uint8_t* data() const { return entry_->data.data(); }
        uint64_t offset() const { return entry_->offset; }
        void mark_dirty() { entry_->dirty = true; }

    private:
        Qcow2Cache* cache_ = nullptr;
        Entry* entry_ = nullptr;
    };

    Qcow2Cache(BdrvChild* file, size_t table_size, size_t nb_entries, MetadataKind kind);

    // Loads the table at `offset` (read=false: a new table, zero-filled).
    Task<int> get(uint64_t offset, bool read, Ref& out);
    // Writes every dirty entry.  `check` validates each target against
    // other metadata first (overlap checks).
    Task<int> write_back();
    // Forgets a table whose cluster was freed (its contents are dropped).
    void discard(uint64_t offset);
    // Drops clean, unpinned entries not used since the last call (the
    // cache-clean-interval timer).
    void drop_idle();
    bool has_dirty() const;
    size_t capacity() const { return entries_.size(); }

    // Called before a dirty entry is written during eviction; must make the
    // write safe (write other caches, sync the file).
    std::function<Task<int>()> before_write_back;
    // Checks that writing this table does not overwrite other metadata.
    std::function<int(uint64_t offset, size_t len)> overlap_check;

private:
    Task<int> write_entry(Entry& e);
    Entry* find_victim();

    BdrvChild* file_;
    size_t table_size_;
    MetadataKind kind_;
    std::vector<Entry> entries_;
    std::unordered_map<uint64_t, Entry*> index_;
    uint64_t lru_clock_ = 0;
    uint64_t clean_mark_ = 0;
};

// Reads and writes one entry of a refcount block of any width.
uint64_t refcount_entry_get(const uint8_t* block, uint64_t index, uint32_t bits);
void refcount_entry_set(uint8_t* block, uint64_t index, uint32_t bits, uint64_t value);

// Where a snapshot of a zoned image keeps its copy of the zone state
// (docs/interop/qcow2-zoned.rst, "Internal snapshots"): clusters holding
// the write pointer array, the condition array (0: there was none) and the
// descriptor extension area (0: none), each as large as the live one.
struct SnapshotZoneState {
    uint64_t wp_offset = 0;
    uint64_t cond_offset = 0;
    uint64_t zde_offset = 0;
};

// One internal snapshot, as read from (and written to) the snapshot table.
struct Snapshot {
    uint64_t l1_table_offset = 0;
    uint32_t l1_size = 0;
    std::string id;
    std::string name;
    uint32_t date_sec = 0;
    uint32_t date_nsec = 0;
    uint64_t vm_clock_nsec = 0;
    uint64_t vm_state_size = 0;
    uint64_t disk_size = 0;
    uint64_t icount = UINT64_MAX;  // UINT64_MAX: not recorded
    std::optional<SnapshotZoneState> zone_state;
    // The extra data as read: what we do not interpret is written back.
    std::vector<uint8_t> extra_data;
    // In memory only, with overlap-check=all: the offsets of the L2 tables
    // its L1 table names (entered as META_SNAPSHOT_L2).
    std::vector<uint64_t> l2_tables;
};

// The snapshot table (snapshot.cc).  Parsing validates the entries
// against the file size and QEMU's limits (extra data, table size) and
// refuses duplicate IDs; `table_bytes` is the table's length, as QEMU
// counts it (no padding after the last entry).  Serialising writes every
// entry with at least QEMU 7.2's 24 bytes of extra data.
bool parse_snapshot_table(const uint8_t* buf, size_t len, uint32_t count, uint64_t file_size,
                          uint32_t cluster_bits, std::vector<Snapshot>& out, uint64_t& table_bytes,
                          Error& err);
std::vector<uint8_t> serialize_snapshot_table(const std::vector<Snapshot>& table);

// Persistent dirty bitmaps (bitmap.cc), QEMU's bitmaps extension:
// the extension points to a directory of bitmaps; each names a table with
// one entry per cluster of bitmap data (0: all zeroes, 1: all ones, else
// the cluster's offset).  Bit i of the data, least significant bit of
// byte i / 8 first, says whether guest bytes [i << granularity_bits,
// (i + 1) << granularity_bits) changed.
constexpr uint32_t kBitmapFlagInUse = 1u << 0;  // the data may be stale
constexpr uint32_t kBitmapFlagAuto = 1u << 1;   // guest writes are recorded
constexpr uint64_t kBitmapTableOffsetMask = 0x00fffffffffffe00ULL;
constexpr uint64_t kBitmapTableAllOnes = 1;

struct BitmapsExtension {
    uint32_t nb_bitmaps = 0;
    uint64_t dir_size = 0;
    uint64_t dir_offset = 0;
};

struct BitmapEntry {
    std::string name;
    uint64_t table_offset = 0;
    uint32_t table_size = 0;  // entries
    uint32_t flags = 0;
    uint8_t granularity_bits = 0;
};

// Parse the extension and the directory with QEMU's checks and messages
// (the directory against `disk_size`, the virtual size); the extension's
// directory must lie inside a file of `file_size` bytes.
bool parse_bitmaps_extension(const std::vector<uint8_t>& data, uint32_t cluster_bits,
                             uint64_t file_size, BitmapsExtension& out, Error& err);
bool parse_bitmap_directory(const uint8_t* dir, uint64_t size, uint32_t count,
                            uint32_t cluster_bits, uint64_t disk_size,
                            std::vector<BitmapEntry>& out, Error& err);
// Is a bitmap table entry well formed (reserved bits clear, data cluster
// aligned and inside a file of `file_size` bytes)?
bool bitmap_table_entry_valid(uint64_t entry, uint32_t cluster_bits, uint64_t file_size);
// The number of table entries a bitmap of a disk of `disk_size` bytes has.
uint64_t bitmap_table_entries(uint64_t disk_size, uint8_t granularity_bits,
                              uint32_t cluster_bits);

// qemu-img measure (measure.cc), QEMU's arithmetic: the refcount
// table and blocks that count `clusters` clusters and themselves, a fully
// allocated image of `virtual_size` bytes, and the driver's measure.
uint64_t refcount_metadata_bytes(uint64_t clusters, uint64_t cluster_size, uint32_t refcount_order);
uint64_t fully_allocated_bytes(uint64_t virtual_size, uint64_t cluster_size, uint32_t refcount_order,
                               bool extended_l2);
Task<int> qcow2_co_measure(QDict& opts, BlockDriverState* in_bs, BlockMeasureInfo& out, Error& err);

// Compression (compress.cc).  decompress fills exactly `out_len`
// bytes or fails; compress returns the compressed size, or -ENOSPC when the
// result would not be smaller than the input.
ssize_t compress_cluster(CompressionType type, const uint8_t* in, size_t in_len, uint8_t* out,
                         size_t out_cap);
int decompress_cluster(CompressionType type, const uint8_t* in, size_t in_len, uint8_t* out,
                       size_t out_len);

// An allocation in progress: the guest clusters [guest_offset,
// guest_offset + bytes) are being given the host clusters at host_offset.
// Requests touching those guest clusters wait until it is linked into L2,
// except that when the allocating request writes nothing but its own data
// (cow_free: fresh clusters needing no copy-on-write), requests for other
// bytes of the clusters "join" it: they write into the new host clusters at
// once and complete when the allocation is linked.  Sequential writes at
// queue depth N then keep N requests in flight instead of one per cluster.
struct InFlightAlloc {
    uint64_t guest_offset;
    uint64_t bytes;
    uint64_t host_offset;
    uint64_t data_offset;  // the allocating request's own guest bytes
    uint64_t data_bytes;
    bool cow_free = false;
    bool linked = false;
    bool failed = false;
    CoQueue waiters;
};

// A run of guest bytes with one mapping (the result of a lookup).
struct Mapping {
    ClusterType type = ClusterType::Unallocated;
    // Whether the run has a host cluster (Normal, ZeroAlloc, and with
    // extended L2 entries Unallocated subclusters of an allocated
    // cluster), and then the host offset of `offset` in data_child().
    bool host_allocated = false;
    uint64_t host_offset = 0;
    uint64_t l2_entry = 0;     // the raw entry of the first cluster
    uint64_t bytes = 0;        // length of the run
};

class Qcow2State;
// Friends of Qcow2State: the parts of the driver that are a concept of
// their own, each defined in the file named.
class Checker;              // check.cc: one run of qemu-img check
class RefcountOrderChange;  // amend.cc: a new refcount width
class RefcountJournal;      // snapshot.cc: refcount increments to undo
class L1Walk;               // snapshot.cc: the clusters an L1 table references
class SnapshotOperation;    // snapshot.cc: the frame of a snapshot operation

// Marks a host range as in use by guest I/O for the guard's lifetime, so
// that a deferred free of it waits (apply_pending_frees keeps it pending):
// a read must not see a cluster reused under it.
class DataIoGuard {
public:
    DataIoGuard(Qcow2State& s, uint64_t host, uint64_t len);
    ~DataIoGuard();
    DataIoGuard(const DataIoGuard&) = delete;
    DataIoGuard& operator=(const DataIoGuard&) = delete;
    uint64_t host;
    uint64_t len;

private:
    Qcow2State& s_;
};

class Qcow2State : public BlockDriverState {
public:
    using BlockDriverState::BlockDriverState;
    ~Qcow2State() override;

    // --- BlockDriverState interface (qcow2.cc) ---------------------------
    Task<int> drv_open(QDict& options, Error& err) override;
    Task<void> drv_close() override;
    // The cache-clean timer belongs to the node's context: it moves along.
    void drv_detach_aio_context() override { cache_clean_timer_.reset(); }
    void drv_attach_aio_context(AioContext& new_ctx) override;
    Task<int> drv_preadv(uint64_t offset, uint64_t bytes, IOVector& qiov, size_t qiov_offset,
                         unsigned flags) override;
    Task<int> drv_pwritev(uint64_t offset, uint64_t bytes, IOVector& qiov, size_t qiov_offset,
                          unsigned flags) override;
    unsigned supported_write_flags() const override { return BDRV_REQ_WRITE_COMPRESSED; }
    unsigned supported_zero_flags() const override
    {
        return BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK;
    }
    Task<int> drv_pwrite_zeroes(uint64_t offset, uint64_t bytes, unsigned flags) override;
    Task<bool> reads_as_zeroes(uint64_t offset, uint64_t bytes);
    Task<int> drv_pdiscard(uint64_t offset, uint64_t bytes) override;
    Task<int> drv_flush_to_os() override;
    Task<int> drv_truncate(uint64_t offset, bool exact, PreallocMode prealloc, unsigned flags,
                           Error& err) override;
    Task<int> drv_block_status(bool want_zero, uint64_t offset, uint64_t bytes,
                               BlockStatus& out) override;
    void drv_refresh_limits(BlockLimits& bl) override;
    int drv_get_info(BlockDriverInfo& info) override;
    void drv_get_specific_info(nlohmann::ordered_json& info) const override;
    // As QEMU: an image without preallocated metadata reads as zeroes; a
    // preallocated one (its first L2 table exists) only if the file
    // holding its data does.
    // An overlay reads as its backing file.
    bool drv_has_zero_init() override
    {
        bool preallocated = !l1_.empty() && l1_[0] != 0;
        return !backing() && (!preallocated || data_child()->bs->drv_has_zero_init());
    }
    // check.cc: counts every reference the metadata makes to each host
    // cluster and compares the counts with the refcounts, as QEMU's check
    // does (same messages on stderr, same counters); with BDRV_FIX_* it
    // repairs in place, rebuilding the refcount structure when it cannot be
    // trusted.  Takes lock_.
    Task<int> drv_check(BdrvCheckResult& result, unsigned fix) override;
    // amend.cc: qemu-img amend (compat, lazy_refcounts, refcount_bits,
    // size, data_file, data_file_raw), as QEMU 7.2 does it.
    Task<int> drv_amend(QDict& opts, const AmendProgress& progress, bool force,
                        Error& err) override;
    // Rewrites the header with the new backing file name and format
    // extension (the whole header cluster, as QEMU's qcow2_update_header).
    Task<int> drv_change_backing_file(const std::string& file, const std::string& format,
                                      Error& err) override;
    // Every cluster becomes unallocated and is freed, as QEMU's
    // qcow2_make_empty(): v3 images without snapshots, bitmaps or a data
    // file get the layout of a new image back (make_completely_empty),
    // others a full discard of the whole disk.  No request may be in
    // flight.
    Task<int> drv_make_empty(Error& err) override;
    Task<int> drv_zone_report(uint64_t offset, uint32_t& nr_zones, BlockZoneDescriptor* zones) override;
    Task<int> drv_zone_mgmt(BlockZoneOp op, uint64_t offset, uint64_t len) override;
    Task<int> drv_zone_append(uint64_t& offset, IOVector& qiov, unsigned flags) override;
    // snapshot.cc: internal snapshots, kept as QEMU keeps them; a
    // snapshot of a zoned image also keeps the zone state.  Each takes
    // lock_ and fails with -EBUSY while requests are in flight.
    int drv_snapshot_list(std::vector<SnapshotInfo>& out) const override;
    Task<int> drv_snapshot_create(SnapshotInfo& sn) override;
    Task<int> drv_snapshot_goto(const std::string& id_or_name, Error& err) override;
    Task<int> drv_snapshot_delete(const std::string& id, const std::string& name,
                                  Error& err) override;
    Task<int> drv_zone_set_desc_ext(uint64_t offset, const uint8_t* data) override;
    Task<int> drv_zone_get_desc_ext(uint64_t offset, uint8_t* data) override;

    // --- For the driver's callers ----------------------------------------
    // Formats a new image, opened read-write and otherwise empty, as zoned
    // (qemu-img create).  Takes lock_.
    Task<int> format_zoned(const ZonedExtension& ext, Error& err);
    // What copying this image's bitmaps into a v3 image of `cluster_size`
    // takes (qemu-img measure's "bitmaps size"); none for a v2 image,
    // which has no bitmaps to copy.
    std::optional<uint64_t> measure_bitmaps_size(uint64_t cluster_size) const;
    // Metadata overlap checks: is writing [offset, offset+len) as `kind`
    // (0 for guest data) allowed?  Returns 0 or, after signalling
    // corruption, -EIO.
    int check_overlap(uint64_t offset, uint64_t len, MetadataKind kind);

    // Types the driver's files share (the state that uses them is private).
    // Why clusters are freed; decides whether the space is given back to
    // the host (QEMU's pass-discard-* classes).
    enum class FreeReason {
        GuestDiscard,  // discard / write-zeroes with unmap: pass-discard-request
        Always,        // shrinking, zone reset: the space must come back
        Other,         // copy-on-write, moved tables: pass-discard-other
        Snapshot,      // deleted or reverted snapshot data: pass-discard-snapshot
    };
    // A bitmap of the directory.  Bitmaps we change (guest writes reach an
    // enabled one, a resize reaches all) are first marked in use on disk;
    // at close their data, new tables and a new directory are written and
    // the marks go.  Bitmaps in use when the image was opened are stale
    // (another writer crashed) and are left alone.
    struct PersistentBitmap {
        BitmapEntry entry;
        bool stale = false;           // in use when opened
        bool marked = false;          // marked in use by us: rewritten at close
        std::vector<uint64_t> dirty;  // granules written since marked (enabled ones)
    };

private:
    friend class DataIoGuard;
    friend class Checker;
    friend class RefcountOrderChange;
    friend class RefcountJournal;
    friend class L1Walk;
    friend class SnapshotOperation;

    // Rewrites the image as header, refcount table, one refcount block and
    // an empty L1 table, and truncates the file after them.  Caller holds
    // lock_.
    Task<int> make_completely_empty();

    // --- State shared by the driver's files -------------------------------
    Header header_;
    uint64_t cluster_size_ = 0;
    uint32_t cluster_bits_ = 0;
    uint64_t l2_entries_ = 0;  // entries per L2 table
    uint32_t l2_bits_ = 0;
    // Extended L2 entries: 16-byte entries, 32 subclusters per cluster.
    // Without them a subcluster is the whole cluster.
    bool extended_l2_ = false;
    uint32_t subcluster_bits_ = 0;
    uint64_t subcluster_size_ = 0;
    // The external data file (incompatible bit 2): guest data lives there
    // at host offset == guest offset, and only metadata is refcounted.
    // Null without one (and when opened with BDRV_O_NO_IO).
    BdrvChild* data_file_ = nullptr;
    uint32_t refcount_bits_ = 16;
    uint64_t refcount_block_entries_ = 0;
    uint32_t refcount_block_bits_ = 0;
    uint64_t refcount_max_ = 0;

    std::vector<uint64_t> l1_;           // the active L1 table, host order
    std::vector<uint32_t> dirty_l1_;     // indices changed in memory only
    std::vector<uint64_t> refcount_table_;
    std::vector<uint32_t> dirty_reftable_;
    std::unique_ptr<Qcow2Cache> l2_cache_;
    std::unique_ptr<Qcow2Cache> refblock_cache_;
    std::vector<Snapshot> snapshots_;
    uint64_t snapshots_size_ = 0;  // bytes of the snapshot table on disk

    CoMutex lock_;
    std::list<std::shared_ptr<InFlightAlloc>> in_flight_;
    // The file was extended ahead of allocations; trimmed back at close.
    bool file_extended_ = false;
    // Whether space freed for this reason is given back to the host.
    bool discard_passes_down(FreeReason reason) const
    {
        switch (reason) {
        case FreeReason::GuestDiscard: return discard_passthrough_;
        case FreeReason::Always: return true;
        case FreeReason::Other: return pass_discard_other_;
        case FreeReason::Snapshot: return pass_discard_snapshot_;
        }
        return false;
    }
    struct PendingFree {
        uint64_t offset;
        uint64_t bytes;
        FreeReason reason;
    };
    // Frees wait until the metadata that stopped referencing the clusters
    // is on disk (see flush_metadata), and until no request in flight uses
    // them (DataIoGuard).
    std::vector<PendingFree> pending_frees_;
    bool pass_discard_other_ = false;
    bool pass_discard_snapshot_ = true;
    uint64_t free_cluster_index_ = 0;  // no free cluster below this
    uint64_t fresh_from_ = 0;          // clusters from here on read as zeroes
    uint64_t free_byte_offset_ = 0;    // packing point for compressed clusters
    // Which metadata areas occupy each cluster: a mask of 1 << MetadataKind
    // per cluster index (clusters without metadata are absent).  The
    // allocator never hands out a cluster found here, whatever its refcount.
    std::unordered_map<uint64_t, uint32_t> metadata_clusters_;
    // The first two kinds found sharing a cluster since the last
    // rebuild_metadata_map() (0 when none): open refuses such images.
    std::pair<MetadataKind, MetadataKind> metadata_overlap_{};
    std::vector<const DataIoGuard*> data_io_;

    // cache-clean-interval: drops cache entries unused for that long.
    std::unique_ptr<Timer> cache_clean_timer_;
    int64_t cache_clean_interval_ns_ = 0;
    // Arms cache_clean_timer_ in ctx when an interval is set.
    void start_cache_clean_timer(AioContext& ctx);
    bool lazy_refcounts_ = false;
    // overlap-check=all: snapshots' L2 tables are protected too (their
    // offsets are read at open and kept in Snapshot::l2_tables).
    bool overlap_snapshot_l2_ = false;
    bool dirty_marked_ = false;   // the dirty bit is set on disk
    bool corrupt_ = false;        // corruption seen: refuse writes
    // Writes the corrupt bit; started by signal_corruption, awaited at close.
    Task<int> corrupt_header_write_;
    bool discard_passthrough_ = false;
    // Decided at the first block status query (see
    // detect_metadata_preallocation): data clusters answer with RECURSE.
    std::optional<bool> metadata_preallocation_;

    // --- bitmap.cc (persistent dirty bitmaps) ---------------------
    std::vector<PersistentBitmap> bitmaps_;
    BitmapsExtension bitmaps_ext_;   // nb_bitmaps 0: no (valid) extension
    // Reads and checks the extension, the directory and the tables (as
    // QEMU does at open); an extension a writer without bitmap support
    // left behind is reported and, read-write, dropped.
    Task<int> bitmaps_open(Error& err);
    // Before guest data changes: marks the enabled bitmaps (all of them
    // with `all`, for a resize) in use on disk.  Takes lock_.
    Task<int> bitmaps_prepare_change(bool all);
    // Records a change of guest bytes in the marked enabled bitmaps.
    void bitmaps_mark_dirty(uint64_t offset, uint64_t bytes);
    // Both, before guest bytes [offset, offset + bytes) change.  The write
    // paths call it only when the image has bitmaps (bitmaps_ not empty),
    // so that images without any pay nothing.
    Task<int> bitmaps_note_change(uint64_t offset, uint64_t bytes);
    // After a resize: the marked bitmaps cover the new size.
    void bitmaps_resize(uint64_t new_size);
    // Fails (QEMU's message) if a stale bitmap forbids a resize.
    bool bitmaps_can_resize(Error& err) const;
    // At close (lock_ held): writes the marked bitmaps, a new directory
    // and the header, then frees what they replace.
    Task<int> bitmaps_store(Error& err);
    // qemu-img info's "bitmaps" list; empty when there are none.
    nlohmann::ordered_json bitmaps_info() const;
    // What copying these bitmaps into an image of `cluster_size` takes
    // (qemu-img measure's "bitmaps size").
    uint64_t bitmaps_copy_size(uint64_t cluster_size) const;

    // --- zoned.cc (zoned images only) --------------------------------
    std::unique_ptr<ZoneStateMachine> zones_;
    // The write pointer array as it is on disk, so that persisting some
    // zones never needs to read the others back.
    ZoneWpEntries wp_on_disk_;
    CoQueue zone_writes_done_;  // woken as zone writes complete
    // Loads write pointers and conditions and builds the state machine.
    Task<int> zoned_open(Error& err);
    // A zone whose persisted state the format forbids, and its repair.
    struct ZoneFault {
        uint32_t zone;
        std::string what;  // "write pointer of zone 1 (0x40064) is not ..."
        uint64_t entry;    // the repaired write pointer entry
        uint8_t cond;      // the repaired condition byte
    };
    // Found by a check open (BDRV_O_CHECK), which loads the zones repaired
    // in memory; drv_check reports them, and the header's header_faults,
    // and with BDRV_FIX_ERRORS writes the repairs (check_zone_faults).
    std::vector<ZoneFault> zone_faults_;
    // Reads and validates zone state kept at these offsets (cond_offset 0:
    // no condition array): the write pointer entries as stored, the
    // conditions, and a state machine restored from them.  A zone the
    // format forbids fails, or with `faults` is recorded there and loaded
    // repaired.
    // The arrays are read a chunk at a time, so that memory stays at what
    // is kept per zone; `conds` (null: not wanted) gets every condition.
    Task<int> load_zone_state(uint64_t wp_offset, uint64_t cond_offset, ZoneWpEntries& entries,
                              std::vector<uint8_t>* conds,
                              std::unique_ptr<ZoneStateMachine>& machine, Error& err,
                              std::vector<ZoneFault>* faults = nullptr);
    Task<int> check_zone_faults(BdrvCheckResult& result, unsigned fix);
    // Gives the image its condition array (every zone 0) if it has none.
    Task<int> zone_condition_array();
    // Formats a new image as zoned (create time).
    Task<int> zoned_format(const ZonedExtension& ext, Error& err);
    // Writes the durable write pointers that changed; the data and mappings
    // below them are on disk when this runs (see drv_flush_to_os).
    Task<int> zoned_persist(const std::vector<std::pair<uint32_t, uint64_t>>& wps);
    // The write path of a zoned image: admission of the whole request,
    // then the write (of zeroes without `qiov`).  A failure is undone in
    // the zone state (ZoneStateMachine::complete_write).
    Task<int> zoned_write(uint64_t offset, uint64_t bytes, IOVector* qiov, size_t qiov_offset,
                          unsigned flags, bool append, uint64_t* pos);
    Task<int> write_guest_zeroes(uint64_t offset, uint64_t bytes);
    Task<int> zoned_read(uint64_t offset, uint64_t bytes, IOVector& qiov, size_t qiov_offset);
    Task<int> zone_set_condition(uint32_t zone);
    Task<int> zone_reset_data(uint32_t zone, bool desc_ext_before);
    // One zone management operation, undone if its I/O fails.
    Task<int> zone_mgmt_one(BlockZoneOp op, uint32_t zone);
    // Open or close a range of zones: all of them or none.
    Task<int> zone_open_close_range(BlockZoneOp op, uint32_t first, uint32_t last,
                                    bool whole_device);
    // Puts a zone back as it was before a failed operation (caller holds
    // lock_); rewrites its condition byte when the operation wrote it.
    Task<void> zone_undo(uint32_t zone, const ZoneStateMachine::ZoneSnapshot& before,
                         bool condition_written);
    // Makes [wp, capacity) of a zone being finished read as zeroes.
    Task<int> zone_finish_data(uint32_t zone, uint64_t wp);
    Task<void> wait_zone_idle(uint32_t zone);

    // --- snapshot.cc ---------------------------------------------------
    // Reads and validates the snapshot table the header names (at open).
    Task<int> read_snapshot_table(Error& err);
    // Writes the snapshot table anew (qemu-img amend's upgrade to v3).
    Task<int> rewrite_snapshot_table();
    // qemu-img check: v3 entries need at least 16 bytes of extra data
    // (counted as corruptions in `res`), and the repair writes them anew.
    void check_snapshot_table(BdrvCheckResult& res, unsigned fix) const;
    Task<int> fix_snapshot_table(BdrvCheckResult& res, unsigned fix);

    // --- qcow2.cc ----------------------------------------------------------
    // The steps of drv_open, in order.  The open options are taken from
    // the QDict before the file child is opened and applied once the
    // header (its cluster size, its lazy refcounts bit) is known.
    struct OpenOptions {
        std::optional<std::string> l2_cache, refcount_cache, cache, lazy, pass_request, l2_entry;
        uint64_t clean_interval = 0;
        bool pass_snapshot = true;
        bool pass_other = false;
        std::string overlap;
    };
    bool take_open_options(QDict& options, OpenOptions& o, Error& err);
    // Reads and validates the header; sets the geometry members.
    Task<int> read_header(Error& err);
    // Lazy refcounts, discard passing, the caches and their timer.
    bool apply_open_options(const OpenOptions& o, Error& err);
    bool create_caches(const OpenOptions& o, Error& err);
    Task<int> load_l1_table(Error& err);
    // On read-write opens: repairs a dirty image, clears autoclear bits we
    // do not maintain.
    Task<int> prepare_writable(Error& err);
    // Opens the external data file child (option data-file.*, else the
    // name in the header), with QEMU's checks and messages.
    Task<int> open_data_file(QDict& options, Error& err);
    // Opened with BDRV_O_NO_IO, an image with an external data file has no
    // data child: its guest data cannot be read or written.
    bool data_inaccessible() const { return has_data_file() && !data_file_; }
    Task<bool> detect_metadata_preallocation();
    // The guest write and read paths (without zone rules).
    Task<int> write_guest(uint64_t offset, uint64_t bytes, IOVector& qiov, size_t qiov_offset,
                          unsigned flags);
    Task<int> read_guest(uint64_t offset, uint64_t bytes, IOVector& qiov, size_t qiov_offset);
    // Guest bytes this image does not allocate: the backing file's (zeroes
    // past its end), or zeroes without one.
    Task<int> read_unallocated(uint64_t offset, uint64_t bytes, IOVector& qiov, size_t qiov_offset);
    // Marks the image corrupt (on disk too, unless read-only), prints
    // QEMU's message and returns -EIO for the failing request.
    int signal_corruption(bool fatal, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
    // Writes header fields after a change (one sector write).
    Task<int> write_header_fields();
    // Rewrites the whole header cluster (extensions included).
    Task<int> rewrite_header(Error& err);
    Task<int> mark_dirty();
    Task<int> mark_clean();
    // Writes dirty metadata in crash-safe order (see the top of this file),
    // then applies the deferred frees.
    Task<int> flush_metadata();
    // flush_metadata(), then refcounts too when they are lazy, then a sync:
    // everything cached is on disk.  Header switches (snapshots, amend)
    // must never name clusters whose refcounts are not on disk.
    Task<int> sync_all_metadata();

    // --- cluster.cc --------------------------------------------------
    uint64_t offset_into_cluster(uint64_t off) const { return off & (cluster_size_ - 1); }
    uint64_t l1_index(uint64_t guest) const { return guest >> (cluster_bits_ + l2_bits_); }
    uint64_t l2_index(uint64_t guest) const { return (guest >> cluster_bits_) & (l2_entries_ - 1); }
    uint64_t size_to_clusters(uint64_t bytes) const { return (bytes + cluster_size_ - 1) >> cluster_bits_; }
    // L1 entries needed for a virtual size (an L2 table maps fewer
    // clusters with extended L2 entries).
    static uint64_t l1_size_for(uint64_t virtual_size, uint32_t cluster_bits, bool extended_l2);
    bool has_data_file() const { return header_.incompatible_features & INCOMPAT_DATA_FILE; }
    bool data_file_is_raw() const { return header_.autoclear_features & AUTOCLEAR_DATA_FILE_RAW; }
    // Where guest data lives: the external data file, or the image file.
    BdrvChild* data_child() const { return data_file_ ? data_file_ : file(); }
    // Without a backing file, unallocated ranges read as zeroes.
    bool unallocated_reads_zero() const { return !backing(); }

    // L2 table entries (see L2Entry): `index` counts entries, not bytes.
    uint32_t l2_entry_bytes() const { return extended_l2_ ? 16 : 8; }
    L2Entry load_l2_entry(const uint8_t* table, uint64_t index) const;
    void store_l2_entry(uint8_t* table, uint64_t index, const L2Entry& e) const;
    L2Entry get_l2_entry(const Qcow2Cache::Ref& l2, uint64_t index) const
    {
        return load_l2_entry(l2.data(), index);
    }
    // Stores the entry and marks the table dirty.
    void set_l2_entry(Qcow2Cache::Ref& l2, uint64_t index, const L2Entry& e);
    // QEMU's qcow2_get_cluster_type() and qcow2_get_subcluster_type().
    ClusterType l2_cluster_type(uint64_t entry) const;
    SubclusterType subcluster_type(const L2Entry& e, uint32_t subcluster) const;
    uint32_t subcluster_index(uint64_t guest) const
    {
        return uint32_t(offset_into_cluster(guest) >> subcluster_bits_);
    }

    // Looks up the mapping of guest `offset` for up to `bytes` bytes; the
    // run stops at a mapping change or at the end of the L2 table.  Caller
    // holds lock_.
    Task<int> get_mapping(uint64_t offset, uint64_t bytes, Mapping& out);
    // The L2 table covering `offset`; with allocate, creates it (or copies a
    // shared one).  Caller holds lock_.
    Task<int> get_l2_table(uint64_t offset, bool allocate, Qcow2Cache::Ref& out);
    // Writes guest data that needs new clusters.  Takes and releases lock_.
    Task<int> write_allocating(uint64_t offset, uint64_t bytes, IOVector& qiov, size_t qiov_offset);
    // Makes [offset, offset+bytes) read as zeroes in the L2 tables (the
    // data file of a raw external data file is the caller's business):
    // whole clusters, or with extended L2 entries whole subclusters (the
    // end may be the end of the image).  Partial clusters that are
    // compressed cannot be zeroed: -ENOTSUP before anything changed.
    Task<int> zero_clusters(uint64_t offset, uint64_t bytes, bool unmap);
    // Discards whole clusters in [offset, offset+bytes): `full` leaves them
    // unallocated (shrinking, zone reset), otherwise they read as zeroes.
    Task<int> discard_clusters(uint64_t offset, uint64_t bytes, bool full);
    // A changed L2 entry no longer references the data of `old`: frees its
    // clusters (later), or with an external data file passes a discard of
    // its range to the data file when `reason` says so.
    Task<int> release_l2_entry(uint64_t old, FreeReason reason);
    // Whether subclusters [from, to) of a cluster (offsets in the cluster)
    // read as zeroes according to its entry.
    bool range_reads_zero(const L2Entry& e, uint64_t from, uint64_t to) const;
    // Checks the entry that maps guest `offset` before its data is used;
    // signals corruption (QEMU's messages) and returns -EIO when it is
    // invalid.  `l2_offset`/`index` locate it for the message.
    int validate_l2_entry(const L2Entry& e, uint64_t offset, uint64_t l2_offset, uint64_t index);
    Task<int> grow_l1_table(uint64_t min_size, Error& err);
    Task<int> write_l1_entries();
    Task<int> read_compressed(uint64_t l2_entry, uint64_t offset_in_cluster, uint64_t bytes,
                              IOVector& qiov, size_t qiov_offset);
    Task<int> write_compressed(uint64_t offset, uint64_t bytes, IOVector& qiov, size_t qiov_offset);
    Task<int> preallocate(uint64_t from, uint64_t to, PreallocMode mode, Error& err);
    // Host range of a compressed cluster's data.
    void compressed_range(uint64_t l2_entry, uint64_t& host, uint64_t& len) const;
    // Waits while an in-flight allocation overlaps [offset, offset+bytes)
    // and shortens bytes so the request stops before the next one.
    // Returns true if it had to wait (the caller must look up again).  With
    // `join`, a request that may join an allocation (see InFlightAlloc)
    // gets it there instead of waiting, bytes shortened to fit in it.
    Task<bool> wait_for_dependencies(uint64_t offset, uint64_t& bytes,
                                     std::shared_ptr<InFlightAlloc>* join = nullptr);
    // Writes guest data into an allocation in flight, then waits until it
    // is linked.  Entered with lock_ held, returns with it released;
    // -EAGAIN if the allocation failed and the caller must try again.
    Task<int> write_joined(std::shared_ptr<InFlightAlloc> alloc, uint64_t offset, uint64_t bytes,
                           IOVector& qiov, size_t qiov_offset);
    // Extends the file ahead of fresh allocations (caller holds lock_).
    Task<int> extend_file_for(uint64_t host_end);

    // --- refcount.cc -------------------------------------------------
    Task<int> load_refcount_table(Error& err);
    Task<int> get_refcount(uint64_t cluster_index, uint64_t& refcount);
    // Adds `addend` to the refcount of every cluster overlapping
    // [offset, offset+length).  Caller holds lock_.
    Task<int> update_refcount(uint64_t offset, uint64_t length, int64_t addend);
    // Finds n free clusters in a row (refcounts untouched) and moves the
    // search hint past them.
    Task<int64_t> find_free_run(uint64_t n);
    // Allocates `bytes` of contiguous clusters (refcount 1); returns the
    // host offset or -errno.  Caller holds lock_.
    Task<int64_t> alloc_clusters(uint64_t bytes);
    // Allocates space for compressed data, packing into partly used clusters.
    Task<int64_t> alloc_bytes(uint64_t bytes);
    // Defers dropping one reference to the clusters of a host range.
    void free_clusters_later(uint64_t offset, uint64_t bytes, FreeReason reason);
    // Frees whatever an L2 entry points to (a cluster or compressed bytes).
    void free_l2_entry_later(uint64_t l2_entry, FreeReason reason);
    Task<int> apply_pending_frees();
    Task<int> write_reftable_entries();
    // Writes the sectors of a table (at `table_offset`, `table_bytes` long,
    // of kind `kind`) that hold the entries in `dirty`, then clears `dirty`.
    Task<int> write_dirty_entries(std::vector<uint32_t>& dirty, const std::vector<uint64_t>& table,
                                  uint64_t table_offset, uint64_t table_bytes, MetadataKind kind);
    // The refcount block of refcount table entry `ti`, pinned in `out`
    // (left empty when the entry has no block).
    Task<int> load_refcount_block(uint64_t ti, Qcow2Cache::Ref& out);
    // Reads a table of `entries` big-endian 64-bit entries (L1, refcount
    // table) into `out`.
    Task<int> read_table(uint64_t offset, uint64_t entries, std::vector<uint64_t>& out);
    // check_overlap() for a write that may replace the kinds in `allowed` (a mask
    // of 1 << MetadataKind) as well.
    int check_overlap_mask(uint64_t offset, uint64_t len, uint32_t allowed);
    // Enters [offset, offset+len) as an area of `kind`; an area sharing a
    // cluster with one of another kind is recorded in metadata_overlap_.
    void register_metadata(uint64_t offset, uint64_t len, MetadataKind kind);
    void unregister_metadata(uint64_t offset, uint64_t len, MetadataKind kind);
    // Enters a newly allocated area, before anything is written to it;
    // -EIO (corruption signalled) when metadata is there already.
    int claim_metadata(uint64_t offset, uint64_t len, MetadataKind kind);
    // The map from the header, the tables in memory and the snapshot table.
    void rebuild_metadata_map();
    // Fails, naming the two kinds, when rebuild_metadata_map() found
    // overlapping areas.
    bool validate_metadata_layout(Error& err) const;

    // --- amend.cc: the steps of drv_amend (lock_ held) -------------------
    struct AmendRequest;
    Task<int> make_clean();
    Task<int> update_header(Error& err);
    Task<int> amend_upgrade(const AmendProgress& progress, Error& err);
    Task<int> has_compressed_clusters(const std::vector<uint64_t>& l1, bool& found);
    Task<int> read_snapshot_l1(const Snapshot& sn, std::vector<uint64_t>& l1);
    Task<int> expand_zero_clusters_in_l1(const std::vector<uint64_t>& l1, int64_t& visited,
                                         int64_t total, const AmendProgress& progress);
    Task<int> amend_downgrade(const AmendProgress& progress, Error& err);
    std::optional<AmendRequest> parse_amend_options(QDict& opts, Error& err) const;
    Task<int> change_refcount_width(const AmendRequest& req, const AmendProgress& progress,
                                    Error& err);
    Task<int> amend_header(const AmendRequest& req, Error& err);
    Task<int> set_lazy_refcounts(bool lazy, int version, Error& err);

    // --- check.cc --------------------------------------------------------
    // Clears the corrupt bit once a repair has left nothing wrong.
    Task<int> mark_consistent();

    // --- cluster.cc: the steps of write_allocating ----------------------
    struct CowBounds;
    struct AllocatingWrite;
    CowBounds cow_bounds(const std::vector<L2Entry>& old, bool reuse, uint64_t w_start,
                         uint64_t w_end) const;
    int allocation_run(Qcow2Cache::Ref& l2, uint64_t idx, uint64_t guest_start,
                       uint64_t max_clusters, std::vector<L2Entry>& old, bool& reuse);
    Task<int> write_with_cow(const AllocatingWrite& w, IOVector& qiov, size_t qiov_offset);
    void link_clusters(Qcow2Cache::Ref& l2, uint64_t idx, uint64_t n, const AllocatingWrite& w,
                       bool reuse);

    // --- snapshot.cc: the steps of the snapshot operations (lock_ held) --
    struct ZoneStateCopy;
    Task<int> reference_l1(const std::vector<uint64_t>& l1, RefcountJournal& journal);
    Task<int> walk_for_release(const std::vector<uint64_t>& l1, bool release);
    Task<int> update_copied_flags();
    Task<int> write_snapshot_table(std::vector<Snapshot> table, bool& header_unknown);
    Task<int> read_l1_table(uint64_t offset, uint32_t size, std::vector<uint64_t>& out);
    Task<int64_t> write_new_l1_table(const std::vector<uint64_t>& l1, MetadataKind kind,
                                     RefcountJournal& journal);
    Task<int64_t> copy_to_new_clusters(uint64_t from, uint64_t len, RefcountJournal& journal);
    Task<int> capture_zone_state(SnapshotZoneState& out, RefcountJournal& journal);
    Task<int> read_zone_state_copy(const SnapshotZoneState& copy, ZoneStateCopy& out, Error& err);
    std::vector<std::pair<uint32_t, uint64_t>> wp_updates(const ZoneWpEntries& target,
                                                          bool lower_only) const;
    Task<int> restore_zone_state(const ZoneStateCopy& copy, Error& err);

    // --- bitmap.cc: the steps of bitmaps_store (lock_ held) -------------
    struct FreedArea;
    Task<int> rewrite_bitmap(PersistentBitmap& bm, std::vector<FreedArea>& old, Error& err);
};

}  // namespace qemu::qcow2
