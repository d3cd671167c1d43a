// qcow2: internal interfaces of the driver (docs/interop/qcow2.txt in QEMU
// is the format's specification; docs/devel/qcow2.rst explains this code).
//
// The driver is split by concern:
//   qcow2.cc           the node: open, close, I/O paths, create, resize, info
//   qcow2-header.cc    header and header extensions: parsing, validation, writing
//   qcow2-cache.cc     the L2/refcount-block cache and its write ordering
//   qcow2-cluster.cc   guest-to-host mapping: L1/L2 lookup, allocation, COW
//   qcow2-refcount.cc  refcounts, cluster allocation, metadata overlap checks
//   qcow2-compress.cc  zlib/zstd compressed clusters
//   qcow2-snapshot.cc  the snapshot table
//   qcow2-check.cc     consistency check and repair
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
constexpr uint64_t kSupportedIncompatible =
    INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_COMPRESSION | INCOMPAT_ZONED;
// Autoclear features whose data this driver keeps consistent.
constexpr uint64_t kSupportedAutoclear = 0;

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
};

// The feature names this driver writes into every v3 header.
const std::vector<FeatureName>& known_feature_names();

// What an L2 entry says about a guest cluster.
enum class ClusterType {
    Unallocated,  // reads from the backing file, or zeroes
    ZeroPlain,    // reads as zeroes, no host cluster
    ZeroAlloc,    // reads as zeroes, host cluster kept (preallocated)
    Normal,       // data at the host offset
    Compressed,   // compressed data somewhere in the file
};
ClusterType classify_l2_entry(uint64_t entry);

// Offsets that metadata overlap checks distinguish (QEMU's QCOW2_OL_*).
enum MetadataKind : uint8_t {
    META_HEADER = 1,
    META_L1 = 2,
    META_L2 = 3,
    META_REFCOUNT_TABLE = 4,
    META_REFCOUNT_BLOCK = 5,
    META_SNAPSHOT_TABLE = 6,
    META_SNAPSHOT_L1 = 7,
    META_OTHER = 8,  // extension data (bitmaps, crypto header): never written by us
    META_ZONED = 9,  // write pointers, zone conditions, descriptor extensions
};
const char* metadata_kind_name(MetadataKind kind);

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
        uint64_t get64(size_t index) const;
        void set64(size_t index, uint64_t value);  // and mark dirty
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
    CoQueue slot_waiters_;
};

// One internal snapshot, as read from the snapshot table.
// Reads and writes one entry of a refcount block of any width.
uint64_t refcount_entry_get(const uint8_t* block, uint64_t index, uint32_t bits);
void refcount_entry_set(uint8_t* block, uint64_t index, uint32_t bits, uint64_t value);

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
    std::vector<uint8_t> extra_data;  // all of it, known fields included
};

// Snapshot table parsing (qcow2-snapshot.cc): validates every field against
// the file size and the table's limits.
bool parse_snapshot_table(const uint8_t* buf, size_t len, uint32_t count, uint64_t file_size,
                          uint32_t cluster_bits, std::vector<Snapshot>& out, Error& err);

// Compression (qcow2-compress.cc).  decompress fills exactly `out_len`
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
    uint64_t host_offset = 0;  // for Normal/ZeroAlloc: host offset of `offset`
    uint64_t l2_entry = 0;     // the raw entry of the first cluster
    uint64_t bytes = 0;        // length of the run
};

class Qcow2State;

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
    // preallocated one (its first L2 table exists) only if its file does.
    bool drv_has_zero_init() override
    {
        bool preallocated = !l1_.empty() && l1_[0] != 0;
        return !preallocated || file()->bs->drv_has_zero_init();
    }
    // qcow2-check.cc: counts every reference the metadata makes to each host
    // cluster and compares the counts with the refcounts, as QEMU's check
    // does (same messages on stderr, same counters); with BDRV_FIX_* it
    // repairs in place, rebuilding the refcount structure when it cannot be
    // trusted.  Takes lock_.
    Task<int> drv_check(BdrvCheckResult& result, unsigned fix) override;
    Task<int> drv_zone_report(uint64_t offset, uint32_t& nr_zones, BlockZoneDescriptor* zones) override;
    Task<int> drv_zone_mgmt(BlockZoneOp op, uint64_t offset, uint64_t len) override;
    Task<int> drv_zone_append(uint64_t& offset, IOVector& qiov, unsigned flags) override;
    Task<int> drv_zone_set_desc_ext(uint64_t offset, const uint8_t* data) override;
    Task<int> drv_zone_get_desc_ext(uint64_t offset, uint8_t* data) override;

    // --- State shared by the driver's files -------------------------------
    Header header_;
    uint64_t cluster_size_ = 0;
    uint32_t cluster_bits_ = 0;
    uint64_t l2_entries_ = 0;  // entries per L2 table
    uint32_t l2_bits_ = 0;
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

    CoMutex lock_;
    std::list<std::shared_ptr<InFlightAlloc>> in_flight_;
    // The file was extended ahead of allocations; trimmed back at close.
    bool file_extended_ = false;
    // Why clusters are freed; decides whether the space is given back to
    // the host (QEMU's pass-discard-* classes).
    enum class FreeReason {
        GuestDiscard,  // discard / write-zeroes with unmap: pass-discard-request
        Always,        // shrinking, zone reset: the space must come back
        Other,         // copy-on-write, moved tables: pass-discard-other
    };
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
    uint64_t free_cluster_index_ = 0;  // no free cluster below this
    uint64_t fresh_from_ = 0;          // clusters from here on read as zeroes
    uint64_t free_byte_offset_ = 0;    // packing point for compressed clusters
    std::unordered_map<uint64_t, MetadataKind> metadata_clusters_;
    std::vector<const DataIoGuard*> data_io_;

    // cache-clean-interval: drops cache entries unused for that long.
    std::unique_ptr<Timer> cache_clean_timer_;
    int64_t cache_clean_interval_ns_ = 0;
    bool lazy_refcounts_ = false;
    bool dirty_marked_ = false;   // the dirty bit is set on disk
    bool corrupt_ = false;        // corruption seen: refuse writes
    // Writes the corrupt bit; started by signal_corruption, awaited at close.
    Task<int> corrupt_header_write_;
    bool discard_passthrough_ = false;
    bool discard_no_unref_ = false;
    // Decided at the first block status query (see
    // detect_metadata_preallocation): data clusters answer with RECURSE.
    std::optional<bool> metadata_preallocation_;

    // --- qcow2-zoned.cc (zoned images only) --------------------------------
    std::unique_ptr<ZoneStateMachine> zones_;
    // The write pointer array as it is on disk (entries, host order), so
    // that persisting some zones never needs to read the others back.
    std::vector<uint64_t> wp_on_disk_;
    CoQueue zone_writes_done_;  // woken as zone writes complete
    // Loads write pointers and conditions and builds the state machine.
    Task<int> zoned_open(Error& err);
    // Formats a new image as zoned (create time).
    Task<int> zoned_format(const ZonedExtension& ext, Error& err);
    // Writes the durable write pointers that changed; the data and mappings
    // below them are on disk when this runs (see drv_flush_to_os).
    Task<int> zoned_persist(const std::vector<std::pair<uint32_t, uint64_t>>& wps);
    // The write path of a zoned image: admission, then the write.
    Task<int> zoned_write(uint64_t offset, uint64_t bytes, IOVector& qiov, size_t qiov_offset,
                          unsigned flags, bool append, uint64_t* pos);
    Task<int> zoned_read(uint64_t offset, uint64_t bytes, IOVector& qiov, size_t qiov_offset);
    Task<int> zone_set_condition(uint32_t zone);
    Task<int> zone_reset_data(uint32_t zone);
    // Makes [wp, capacity) of a zone being finished read as zeroes.
    Task<int> zone_finish_data(uint32_t zone, uint64_t wp);
    Task<void> wait_zone_idle(uint32_t zone);

    // --- qcow2.cc ----------------------------------------------------------
    Task<bool> detect_metadata_preallocation();
    // The guest write and read paths (without zone rules).
    Task<int> write_guest(uint64_t offset, uint64_t bytes, IOVector& qiov, size_t qiov_offset,
                          unsigned flags);
    Task<int> read_guest(uint64_t offset, uint64_t bytes, IOVector& qiov, size_t qiov_offset);
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

    // --- qcow2-cluster.cc --------------------------------------------------
    uint64_t offset_into_cluster(uint64_t off) const { return off & (cluster_size_ - 1); }
    uint64_t l1_index(uint64_t guest) const { return guest >> (cluster_bits_ + l2_bits_); }
    uint64_t l2_index(uint64_t guest) const { return (guest >> cluster_bits_) & (l2_entries_ - 1); }
    uint64_t size_to_clusters(uint64_t bytes) const { return (bytes + cluster_size_ - 1) >> cluster_bits_; }
    static uint64_t l1_size_for(uint64_t virtual_size, uint32_t cluster_bits);

    // Looks up the mapping of guest `offset` for up to `bytes` bytes; the
    // run stops at a mapping change or at the end of the L2 table.  Caller
    // holds lock_.
    Task<int> get_mapping(uint64_t offset, uint64_t bytes, Mapping& out);
    // The L2 table covering `offset`; with allocate, creates it (or copies a
    // shared one).  Caller holds lock_.
    Task<int> get_l2_table(uint64_t offset, bool allocate, Qcow2Cache::Ref& out);
    // Writes guest data that needs new clusters.  Takes and releases lock_.
    Task<int> write_allocating(uint64_t offset, uint64_t bytes, IOVector& qiov, size_t qiov_offset);
    // Zeroes or discards whole clusters in [offset, offset+bytes).
    Task<int> zero_clusters(uint64_t offset, uint64_t bytes, bool unmap);
    Task<int> discard_clusters(uint64_t offset, uint64_t bytes, bool full);
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

    // --- qcow2-refcount.cc -------------------------------------------------
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
    // Metadata overlap checks: is writing [offset, offset+len) as `kind`
    // (0 for guest data) allowed?  Returns 0 or, after signalling
    // corruption, -EIO.
    int check_overlap(uint64_t offset, uint64_t len, MetadataKind kind);
    void register_metadata(uint64_t offset, uint64_t len, MetadataKind kind);
    void unregister_metadata(uint64_t offset, uint64_t len);
    void rebuild_metadata_map();
};

}  // namespace qemu::qcow2
