// The driver interface.
//
// A driver is two classes:
//   - a BlockDriver: one registered object per driver that knows its name,
//     its option schemas, how to probe for its format, how to create an image
//     and how to make a node;
//   - a BlockDriverState subclass: one object per open node, implementing
//     that node's I/O through the virtual drv_* methods below.
//
// Callers never invoke drv_* directly: they use the bdrv_co_* functions at the
// end of this file (or a BlockBackend), which check bounds, enforce the
// node's alignment (read-modify-write for unaligned writes), split requests
// larger than max_transfer, emulate missing features (FUA, write-zeroes) and
// serialise requests that overlap an in-flight read-modify-write.  Drivers
// therefore only ever see requests that are in range and aligned to their
// own request_alignment.
//
// All drv_* coroutines may run concurrently with each other: a driver that
// needs mutual exclusion takes a CoMutex around its metadata, never around
// data I/O.
#pragma once

#include <algorithm>
#include <cerrno>
#include <functional>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "block/block-common.h"
#include "block/zoned.h"
#include "qemu/aio.h"
#include "qemu/coroutine-lock.h"
#include "qemu/error.h"
#include "qemu/iov.h"
#include "qemu/option.h"

namespace qemu {

class BlockBackend;
class BlockDriver;
class BlockGraph;

// The requests in flight on a node or a backend, for drained sections:
// each request holds a Guard while it runs; a drainer waits with
// wait_idle() until count() is 0.  Only the owner's thread touches it.
class RequestCounter {
public:
    class Guard {
    public:
        explicit Guard(RequestCounter& c) : c_(&c) { c_->count_++; }
        ~Guard()
        {
            if (--c_->count_ == 0 && !c_->idle_waiters_.empty()) {
                c_->idle_waiters_.restart_all();
            }
        }
        Guard(const Guard&) = delete;
        Guard& operator=(const Guard&) = delete;

    private:
        RequestCounter* c_;
    };

    uint64_t count() const { return count_; }
    // Resumes the caller after a request ends that leaves none.
    CoQueue::WaitOp wait_idle() { return idle_waiters_.wait(); }

private:
    uint64_t count_ = 0;
    CoQueue idle_waiters_;
};

// An edge of the graph: a parent's named reference to a child node.  The
// parent is a node (`parent`) or a BlockBackend (`backend`, the edge
// "root"); the child lists the edge in its parents() while it exists.
struct BdrvChild {
    std::string name;  // "file", "backing", ...
    std::shared_ptr<BlockDriverState> bs;
    BlockDriverState* parent = nullptr;
    BlockBackend* backend = nullptr;
    uint64_t perm = 0;    // what the parent does with the child
    uint64_t shared = 0;  // what the parent lets others do
    // A backing child opened from the parent's own record of its backing
    // file, with no options from the user: it does not make the parent's
    // name a json:{...} one.
    bool implicit = false;
};

class BlockDriverState {
public:
    BlockDriverState(const BlockDriver& drv, AioContext& ctx);
    virtual ~BlockDriverState();
    BlockDriverState(const BlockDriverState&) = delete;
    BlockDriverState& operator=(const BlockDriverState&) = delete;

    const BlockDriver& drv() const { return drv_; }
    // The context whose thread runs every request of this node.  It
    // changes only while the node is drained (bdrv_co_change_aio_context).
    AioContext& ctx() const { return *ctx_; }
    // The graph that holds this node by name, or nullptr for the private
    // graphs the tools open (no names are shared there).
    BlockGraph* graph() const { return graph_; }
    const std::string& node_name() const { return node_name_; }
    // The user-visible name: the file name, or json:{...} for nodes whose
    // options cannot be expressed as a plain file name.
    const std::string& filename() const { return filename_; }
    int open_flags() const { return open_flags_; }
    bool read_only() const { return !(open_flags_ & BDRV_O_RDWR); }
    const BlockLimits& limits() const { return bl_; }
    // Virtual size in bytes, kept current by open and truncate.
    uint64_t total_bytes() const { return total_bytes_; }
    // The options this node was opened with (flattened, children included).
    const QDict& options() const { return options_; }

    BdrvChild* file() const { return file_; }
    BdrvChild* child(std::string_view name) const;
    // The backing child of formats that support backing files (see
    // BlockDriver::supports_backing), nullptr without one.
    BdrvChild* backing() const { return backing_; }
    // The backing file the image names, as stored in it (QEMU's
    // bs->backing_file: a relative name is relative to the image's
    // directory), and the format it records; empty for none.  drv_open
    // and drv_change_backing_file set them.
    const std::string& backing_file() const { return backing_file_; }
    const std::string& backing_format() const { return backing_format_; }
    const std::vector<std::unique_ptr<BdrvChild>>& children() const { return children_; }
    // The edges that point at this node, oldest first: its parents' child
    // edges and the roots of BlockBackends.
    const std::vector<BdrvChild*>& parents() const { return parents_; }
    // The permissions this node holds, for all its parents together.
    uint64_t perm() const { return perm_; }
    uint64_t shared_perm() const { return shared_; }

    // Requests inside this node: bdrv_co_* calls that have not returned.
    // Only the node's thread touches it.
    uint64_t in_flight() const { return requests_.count(); }
    // For the request path (block/io.cc): every bdrv_co_* request holds
    // one while it runs.
    RequestCounter::Guard start_request() { return RequestCounter::Guard(requests_); }
    // Inside a drained section (bdrv_co_drained_begin)?
    bool quiesced() const { return quiesce_counter_ > 0; }

    // --- Driver interface --------------------------------------------------

    // Opens the node.  The driver removes the options it consumes from
    // `options` (already type-checked against its open schema); the caller
    // reports whatever remains as unsupported.  Format drivers open their
    // data child with open_child().
    virtual Task<int> drv_open(QDict& options, Error& err) = 0;

    // Reads/writes `bytes` at `offset` from/into qiov starting at
    // qiov_offset.  Requests are aligned and within the node's size.  The
    // one empty request a driver sees is a compressed write of 0 bytes: it
    // ends a stream of compressed writes (drivers that take
    // BDRV_REQ_WRITE_COMPRESSED may tidy up their file then).
    virtual Task<int> drv_preadv(uint64_t offset, uint64_t bytes, IOVector& qiov,
                                 size_t qiov_offset, unsigned flags) = 0;
    virtual Task<int> drv_pwritev(uint64_t offset, uint64_t bytes, IOVector& qiov,
                                  size_t qiov_offset, unsigned flags) = 0;
    // Request flags the driver handles itself (others are emulated).
    virtual unsigned supported_write_flags() const { return 0; }
    virtual unsigned supported_zero_flags() const { return 0; }

    // -ENOTSUP lets the generic layer fall back (zero buffer writes for
    // write_zeroes; discard is advisory and then does nothing).
    virtual Task<int> drv_pwrite_zeroes(uint64_t offset, uint64_t bytes, unsigned flags);
    virtual Task<int> drv_pdiscard(uint64_t offset, uint64_t bytes);

    // Flushing happens in two steps, then recurses into the children:
    // flush_to_os writes driver caches (qcow2 metadata) to the child,
    // flush_to_disk makes the node's own storage durable (fdatasync).
    virtual Task<int> drv_flush_to_os();
    virtual Task<int> drv_flush_to_disk();

    // Resizes to `offset` bytes; `exact` demands exactly that file size.
    // On success the driver sets the node's new size (set_total_bytes).
    virtual Task<int> drv_truncate(uint64_t offset, bool exact, PreallocMode prealloc,
                                   unsigned flags, Error& err);

    // Allocation status of [offset, offset+bytes) as in QEMU's
    // bdrv_co_block_status; `out.pnum` must be > 0 and <= bytes.  The
    // generic layer adds ALLOCATED to DATA and ZERO results, and ZERO to
    // unallocated ranges of formats that support backing files but have
    // none, or whose backing file ends before the range (want_zero).
    // The default reports data (and for nodes with a file child and no
    // mapping of their own, the caller should override).
    virtual Task<int> drv_block_status(bool want_zero, uint64_t offset, uint64_t bytes,
                                       BlockStatus& out);

    // Applies the driver's own limits on top of what the children imposed.
    virtual void drv_refresh_limits(BlockLimits& bl);

    // Permissions this node needs on a child, given what its parents need
    // from it.  The default suits formats that store data in `file`.
    virtual void drv_child_perm(const BdrvChild& child, uint64_t parent_perm,
                                uint64_t parent_shared, uint64_t& perm, uint64_t& shared) const;
    // Protocol drivers enforce permissions (the file driver's image locks).
    virtual int drv_set_perm(uint64_t perm, uint64_t shared, Error& err);

    virtual int drv_get_info(BlockDriverInfo& info);
    // The format-specific section of qemu-img info: {"type": ..., "data":
    // {...}} as in QEMU's ImageInfoSpecific; left empty when there is none.
    virtual void drv_get_specific_info(nlohmann::ordered_json& info) const;
    // Checks (and with BDRV_FIX_* repairs) the image's consistency;
    // -ENOTSUP for formats without checks.
    virtual Task<int> drv_check(BdrvCheckResult& result, unsigned fix);
    // Formats with backing files: records `file` (empty: none) and its
    // `format` (may be empty) as the image's backing file, as QEMU's
    // bdrv_change_backing_file(); the open backing child stays as it is.
    // -ENOTSUP (the default): the format has no such record.
    virtual Task<int> drv_change_backing_file(const std::string& file, const std::string& format,
                                              Error& err);
    // Makes the whole node unallocated, so that it reads from its backing
    // file again (QEMU's bdrv_make_empty, which qemu-img commit uses).
    // -ENOTSUP (the default): the format cannot.
    virtual Task<int> drv_make_empty(Error& err);
    // qemu-img amend: changes format options of the open image in place.
    // `opts` holds only the options the user gave, type-checked against
    // the driver's amend_schema(); `progress(done, total)` reports how far
    // the work is.  `force` allows changes the driver would otherwise
    // refuse as dangerous.  -ENOTSUP (the default): the format cannot.
    using AmendProgress = std::function<void(int64_t done, int64_t total)>;
    virtual Task<int> drv_amend(QDict& /*opts*/, const AmendProgress& /*progress*/,
                                bool /*force*/, Error& /*err*/)
    {
        co_return -ENOTSUP;
    }
    // Internal snapshots (block/snapshot.cc has the callers' side).  The
    // defaults say the format has none: list and create fail with
    // -ENOTSUP, goto sets "Block driver does not support snapshots".
    // Drivers need an idle node (no requests in flight) and may fail with
    // -EBUSY otherwise.  The snapshots in table order:
    virtual int drv_snapshot_list(std::vector<SnapshotInfo>& out) const;
    // Takes a snapshot of the current state; fills in sn.id.
    virtual Task<int> drv_snapshot_create(SnapshotInfo& sn);
    // Makes the snapshot with this ID, or else the first with this name,
    // the current state.  Sets err when it knows more than an errno says.
    virtual Task<int> drv_snapshot_goto(const std::string& id_or_name, Error& err);
    // Deletes the first snapshot with this ID and name (empty: any).
    virtual Task<int> drv_snapshot_delete(const std::string& id, const std::string& name,
                                          Error& err);
    // Called once before the node goes away, after a final flush: the place
    // to leave the image clean (clear a dirty bit).  Children are closed
    // after their parents.
    virtual Task<void> drv_close();

    // Moving between AioContexts (bdrv_co_change_aio_context), while the
    // node is drained: detach runs in the old context's thread and drops
    // what is bound to it (timers), attach in the new one's.
    virtual void drv_detach_aio_context() {}
    virtual void drv_attach_aio_context(AioContext& /*new_ctx*/) {}

    // Zoned nodes (limits().zoned != None).  Offsets and lengths in bytes;
    // errors as in include/block/zoned.h.  The defaults forward to the
    // file child for pass-through drivers (see forwards_zones()) and
    // otherwise fail with -ENOTSUP.
    //
    // Reports up to `nr_zones` zones starting with the one containing
    // `offset`; sets nr_zones to the number filled in.  `offset` may be
    // past the end (a device reports no zones there, zoned qcow2 refuses it with
    // ZoneError::InvalidRequest).
    virtual Task<int> drv_zone_report(uint64_t offset, uint32_t& nr_zones,
                                      BlockZoneDescriptor* zones);
    // Applies op to every zone in [offset, offset + len); offset must be a
    // zone start and len a multiple of the zone size (or reach the end).
    virtual Task<int> drv_zone_mgmt(BlockZoneOp op, uint64_t offset, uint64_t len);
    // Appends qiov to the zone starting at `offset`; on success `offset`
    // is where the data was written.
    virtual Task<int> drv_zone_append(uint64_t& offset, IOVector& qiov, unsigned flags);
    // Zone descriptor extensions (limits().zone_desc_ext_size bytes per
    // zone; see ZoneStateMachine::set_desc_ext_valid): stores `data` for
    // the empty zone starting at `offset`, which becomes closed; or reads
    // a zone's extension into `data` (zeroes while it is not valid).
    virtual Task<int> drv_zone_set_desc_ext(uint64_t offset, const uint8_t* data);
    virtual Task<int> drv_zone_get_desc_ext(uint64_t offset, uint8_t* data);
    // Pass-through drivers (raw without offset/size) forward zone requests
    // to their file child unchanged.
    virtual bool forwards_zones() const { return false; }
    // Bytes used on the host, or -errno; the default sums the children.
    virtual Task<int64_t> drv_get_allocated_file_size();
    // Does the node read as zeroes wherever nothing was written since it
    // was created (QEMU's bdrv_has_zero_init)?  qemu-img convert then
    // skips writing zeroes to a new target.  When unsure, say no.
    virtual bool drv_has_zero_init() { return false; }
    // Protocol nodes whose options are not a file name (nbd's server.*)
    // name themselves here (QEMU's refresh_filename); "" for the generic
    // name from the "filename" option.
    virtual std::string drv_exact_filename() const { return ""; }

    // --- Helpers for drivers ------------------------------------------------

    // Opens the child `name` from the "name." subtree of options (or from
    // `filename` for the file child of a node opened by file name).
    // `allow_none` permits a missing child.
    Task<BdrvChild*> open_child(const std::string& name, QDict& options, bool allow_none,
                                Error& err);

    // Sizes are whole 512-byte sectors, as in QEMU: a 100000-byte file is
    // a 100352-byte node whose tail reads as zeroes.
    void set_total_bytes(uint64_t bytes) { total_bytes_ = (bytes + 511) / 512 * 512; }

    // Recomputes limits from the children up (call after the graph changes).
    void refresh_limits();
    // Applies `perm`/`shared` as this node's permissions and propagates
    // them down the graph: each child gets what drv_child_perm() derives,
    // combined with its other parents' (refresh_perms).  -errno when a
    // protocol driver cannot take them (image locks held elsewhere).
    int update_permissions(uint64_t perm, uint64_t shared, Error& err);
    // Recomputes this node's permissions from all its parents and applies
    // them (update_permissions).  Fails without changing anything when two
    // parents conflict, anywhere below, with QEMU's message ("Permission
    // conflict on node 'f0': permissions 'write, resize' are both required
    // by node 'q0' (uses node 'f0' as 'file' child) and unshared by node
    // 'q1' (uses node 'f0' as 'file' child).").
    int refresh_perms(Error& err);


    // For the generic request path (block/io.cc): the node's requests in
    // flight, which serialising requests order themselves against, and the
    // write generation that lets a flush with nothing new be skipped.
    // Node's thread only.
    struct TrackedRequest;
    // Enters `req` (the caller's, alive until untrack_request) and gives
    // it the next sequence number.
    void track_request(TrackedRequest& req);
    // Removes `req` and wakes the requests waiting for one to end.
    void untrack_request(TrackedRequest& req);
    // Returns once no request tracked before `req` conflicts with it.
    Task<void> wait_for_conflicts(const TrackedRequest& req);
    // Counts a completed write (anything a flush must make durable).
    void note_write() { write_gen_++; }
    uint64_t write_gen() const { return write_gen_; }
    // The write generation the last successful flush covered.
    uint64_t flushed_gen() const { return flushed_gen_; }
    void note_flushed(uint64_t gen) { flushed_gen_ = std::max(flushed_gen_, gen); }
    // Set when a raw image was opened by probing: writes to block 0 that
    // would turn it into another format are refused (QEMU's protection).
    bool probed_raw_ = false;
    // The file name the user gave for a format node, handed to its file
    // child by open_child() as that child's own file name (so the protocol
    // driver parses it, as QEMU's bdrv_open_child_bs does).
    std::optional<std::string> file_child_filename_;

protected:
    BdrvChild* add_child(const std::string& name, std::shared_ptr<BlockDriverState> bs);
    // Detaches and frees a child edge added by add_child.
    void remove_child(BdrvChild* child);
    // For drv_open and drv_change_backing_file (see backing_file()).
    void set_backing_file(std::string file, std::string format)
    {
        backing_file_ = std::move(file);
        backing_format_ = std::move(format);
    }

private:
    bool has_conflict(const TrackedRequest& req) const;

    std::vector<TrackedRequest*> tracked_requests_;
    CoQueue serialising_waiters_;
    // Orders tracked requests; per node, as they are compared only with
    // the node's own.
    uint64_t next_request_seq_ = 0;
    // Bumped by every completed write; a flush with nothing new is skipped.
    uint64_t write_gen_ = 0;
    uint64_t flushed_gen_ = 0;
    bool closed_ = false;

    friend Task<void> bdrv_co_close(BlockDriverState* bs);
    friend Task<std::shared_ptr<BlockDriverState>> bdrv_co_open(std::optional<std::string>, QDict,
                                                                 int, AioContext&, Error&,
                                                                 const BlockDriverState*,
                                                                 BlockGraph*);
    friend class BlockBackend;
    friend class BlockGraph;
    friend struct DrainedSection;
    friend Task<void> bdrv_co_drained_begin(BlockDriverState*);
    friend void bdrv_drained_end(BlockDriverState*);
    friend Task<int> bdrv_co_change_aio_context(BlockDriverState*, AioContext&, Error&);
    friend void bdrv_replace_child_bs(BdrvChild*, std::shared_ptr<BlockDriverState>);

    // A child that names an existing node of the graph (file=NAME):
    // attached with this node's permissions checked against its other
    // users; nullptr and err set when there is no such node or a conflict.
    BdrvChild* attach_reference(const std::string& name, const std::string& reference,
                                Error& err);

    // Opens the backing child after drv_open (see bdrv_co_open): from the
    // "backing." options, or from backing_file() resolved against this
    // node's directory, read-only.
    Task<int> open_backing(QDict& options, Error& err);

    const BlockDriver& drv_;
    AioContext* ctx_;
    BlockGraph* graph_ = nullptr;
    std::string node_name_;
    std::string filename_;
    int open_flags_ = 0;
    uint64_t total_bytes_ = 0;
    QDict options_;
    BlockLimits bl_;
    std::vector<std::unique_ptr<BdrvChild>> children_;
    BdrvChild* file_ = nullptr;
    BdrvChild* backing_ = nullptr;
    std::string backing_file_;
    std::string backing_format_;
    // While this node is being opened as the backing file of another: that
    // overlay (the chain above is checked for loops).
    const BlockDriverState* opening_overlay_ = nullptr;
    uint64_t perm_ = 0;
    uint64_t shared_ = BLK_PERM_ALL;
    std::vector<BdrvChild*> parents_;
    RequestCounter requests_;
    unsigned quiesce_counter_ = 0;
};

// What qemu-img measure reports (QEMU's BlockMeasureInfo): the bytes a new
// image needs for the given data, the bytes it needs fully allocated, and
// for formats that can store persistent bitmaps, the bytes the source's
// bitmaps would take.
struct BlockMeasureInfo {
    uint64_t required = 0;
    uint64_t fully_allocated = 0;
    std::optional<uint64_t> bitmaps;
};

class BlockDriver {
public:
    virtual ~BlockDriver() = default;

    // The driver= name ("qcow2", "file", "null-co").
    virtual std::string_view name() const = 0;
    // Protocol drivers sit at the bottom and are addressed by file names;
    // formats interpret the bytes of their `file` child.
    virtual bool is_protocol() const { return false; }
    // Filename prefix that selects this protocol ("null-co" for
    // "null-co://"), empty for none.
    virtual std::string_view protocol_prefix() const { return {}; }
    // Does a file name starting with "prefix:" select this protocol?  The
    // default claims protocol_prefix() alone (nbd also claims nbd+unix).
    virtual bool claims_prefix(std::string_view prefix) const
    {
        return !protocol_prefix().empty() && prefix == protocol_prefix();
    }
    // Can nodes of this format have a backing file?  Their unallocated
    // ranges then read from it, or as zeroes when there is none.
    virtual bool supports_backing() const { return false; }
    // Can its nodes store compressed data (BDRV_REQ_WRITE_COMPRESSED)?
    // Lets qemu-img convert -c refuse a format before creating the image.
    virtual bool supports_compressed_writes() const { return false; }
    // Does this protocol driver need a filename option?
    virtual bool needs_filename() const { return is_protocol(); }
    // Turns a file name given for this protocol into options (QEMU's
    // bdrv_parse_filename); the default stores it as "filename".
    virtual bool parse_filename(const std::string& filename, QDict& options, Error& err) const;

    virtual const OptionSchema& open_schema() const = 0;
    // Open options that change what the guest sees (raw's offset and size):
    // a node using any of them cannot be named by a plain file name, so its
    // filename() becomes json:{...} with these options, as in QEMU.
    virtual std::vector<std::string> strong_options() const { return {}; }
    // nullptr: the driver cannot create images.
    virtual const OptionSchema* create_schema() const { return nullptr; }

    // Format probing: a score 0..100 for the image's first bytes.
    virtual int probe(const uint8_t* buf, size_t len, const std::string& filename) const;
    // Protocol probing by file name (host_device claims /dev/*).
    virtual int probe_device(const std::string& filename) const;

    // Creates an image.  `opts` holds the create options (type-checked); the
    // driver removes the ones it uses.
    virtual Task<int> co_create(const std::string& filename, QDict& opts, AioContext& ctx,
                                Error& err) const;

    // The options qemu-img amend accepts; nullptr: the format cannot amend.
    virtual const OptionSchema* amend_schema() const { return nullptr; }
    // qemu-img measure: the size of a new image made with the create
    // options `opts` (size included when no source is given), holding the
    // data of `in_bs` when it is not null.  -ENOTSUP (the default): the
    // driver cannot tell.
    virtual Task<int> co_measure(QDict& /*opts*/, BlockDriverState* /*in_bs*/,
                                 BlockMeasureInfo& /*out*/, Error& /*err*/) const
    {
        co_return -ENOTSUP;
    }

    // A new, unopened node of this driver.
    virtual std::shared_ptr<BlockDriverState> new_node(AioContext& ctx) const = 0;
};

// --- The driver registry (block/block.cc) ----------------------------------

void bdrv_register(const BlockDriver* drv);
const BlockDriver* bdrv_find_driver(std::string_view name);
const std::vector<const BlockDriver*>& bdrv_drivers();
// Registers every built-in driver once; tools call this at startup.
void bdrv_init();
// The protocol driver a file name selects, as QEMU's bdrv_find_protocol():
// a device node's driver (host_device for /dev/...), else the driver of its
// "prefix:" (a '/' before the ':' means no prefix), else "file".  An
// unknown prefix fails with "Unknown protocol 'prefix'".
const BlockDriver* bdrv_find_protocol(const std::string& filename, Error& err);

// --- Opening and creating (block/block.cc) ----------------------------------

// The largest size a node can have (QEMU's BDRV_MAX_LENGTH).
constexpr uint64_t BDRV_MAX_LENGTH = uint64_t(INT64_MAX) / (1ULL << 30) * (1ULL << 30);

// Opens a node graph from a filename and/or options.  `filename` may be a
// json:{...} pseudo-filename or carry a protocol prefix; without a "driver"
// option the format is probed (BDRV_O_PROTOCOL skips the format layer).
// Formats that support backing files then get their backing child, as in
// QEMU: from the "backing." options, else from the backing file the image
// names (relative names resolved against the image's directory, the
// recorded format as its driver), opened read-only; "backing": null (or,
// deprecated, "") and BDRV_O_NO_BACKING open none.  Errors there read
// "Could not open backing file: ...".  `overlay` is the node whose backing
// file is being opened, if any: a chain that leads back to a file above it
// is refused as an infinite loop.  With a `graph`, the node and the
// children it opens take their names there (unique, QEMU's rules), and
// `file`, `backing` and `data-file` may name existing nodes of it
// (file=NAME); without one, as in the tools, no such reference resolves.
Task<std::shared_ptr<BlockDriverState>> bdrv_co_open(std::optional<std::string> filename,
                                                     QDict options, int flags, AioContext& ctx,
                                                     Error& err,
                                                     const BlockDriverState* overlay = nullptr,
                                                     BlockGraph* graph = nullptr);

// The options that define a node's data, its children's included (what
// QEMU writes into a json:{...} name): enough to open the same data again.
QDict bdrv_strong_description(const BlockDriverState& bs);

// QEMU's bdrv_get_full_backing_filename_from_filename(): the name to open
// for the backing file `backing` of the image named `backed`: `backing`
// itself when it is absolute or has a protocol prefix, else `backing`
// in `backed`'s directory.  Fails ("Cannot use relative backing file
// names for ...") when `backed` is empty or a json: name.
std::optional<std::string> bdrv_full_backing_filename(const std::string& backed,
                                                      const std::string& backing, Error& err);
// The same for the backing file an open node names (QEMU's
// bdrv_get_full_backing_filename()): relative to the directory of the file
// holding the node; "" when it names none.
std::optional<std::string> bdrv_backing_filename_to_open(const BlockDriverState& bs, Error& err);
// QEMU's bdrv_find_backing_image(): the backing child in bs's chain whose
// node is the file `name`, where name is compared with what the image above
// records (as given, or resolved: relative names against that image's
// directory, both sides with symlinks resolved); for a backing file opened
// from options, with the node's own name.  nullptr if there is none.
BdrvChild* bdrv_find_backing_image(BlockDriverState* bs, const std::string& name);

// Creates an image with drv; no file is left behind on failure.
Task<int> bdrv_co_create(const BlockDriver& drv, const std::string& filename, QDict& opts,
                         AioContext& ctx, Error& err);
// Creates the protocol-level file for filename (used by format drivers).
Task<int> bdrv_co_create_file(const std::string& filename, QDict& opts, AioContext& ctx,
                              Error& err);

// --- The request path (block/io.cc) ---------------------------------------
//
// The contract every bdrv_co_* function below shares, unless it says
// otherwise:
// - Thread: the thread running the node's AioContext (bs->ctx()), from a
//   coroutine or through run_sync()/co_spawn() there.  Never another
//   thread: move the node with bdrv_co_change_aio_context first.
// - Ranges: any byte offset and length with offset + bytes <= INT64_MAX
//   (else -EIO).  Requests need not be aligned: the request path pads them
//   to limits().request_alignment (read-modify-write for writes, serialised
//   against overlapping requests) and splits them at max_transfer, so
//   callers never see either limit.  Reads past the end of the node return
//   zeroes; writes past it grow the node.
// - Buffers: `qiov` (from `qiov_offset` on, `bytes` long) is owned by the
//   caller and must stay valid until the returned Task has completed.  Tasks
//   start eagerly and may be detached (co_spawn): then the caller keeps the
//   buffer alive until the completion it waits for.
// - Results: 0 (or, where documented, a positive count) on success; a
//   negative errno from the host, or a zone error result code
//   (include/block/zone-error.h) on zoned nodes; never an exception.
// - Writes need a writable node (-EPERM otherwise) and, through a
//   BlockBackend, the write permission (checked there).  While the node is
//   drained, requests through a BlockBackend wait at its gate; requests
//   issued by parents inside the drained section proceed.

// 1 MiB of zeroes (4 KiB aligned), the source for writes of zeroes as
// data; shared, never written.
const AlignedBuffer& zero_buffer();
// Writes `bytes` zeroes at `offset` of the child from zero_buffer(), a
// buffer at a time (for drivers that need zeroes as data); flags: only
// BDRV_REQ_FUA is passed on.
Task<int> write_zero_buffer(BdrvChild* child, uint64_t offset, uint64_t bytes, unsigned flags);

// Reads into qiov.  flags: none defined for reads (0).
Task<int> bdrv_co_preadv(BdrvChild* child, uint64_t offset, uint64_t bytes, IOVector& qiov,
                         size_t qiov_offset = 0, unsigned flags = 0);
// Writes qiov.  flags: BDRV_REQ_FUA (durable when the Task completes; a
// flush emulates it for drivers without FUA), BDRV_REQ_WRITE_COMPRESSED
// (-ENOTSUP where the format has no compression; an empty compressed
// write ends a stream of them).
Task<int> bdrv_co_pwritev(BdrvChild* child, uint64_t offset, uint64_t bytes, IOVector& qiov,
                          size_t qiov_offset = 0, unsigned flags = 0);
// Makes the range read as zeroes.  flags: BDRV_REQ_MAY_UNMAP (the range
// may be deallocated), BDRV_REQ_FUA, BDRV_REQ_NO_FALLBACK (-ENOTSUP rather
// than writing a buffer of zeroes when the driver cannot do it directly).
Task<int> bdrv_co_pwrite_zeroes(BdrvChild* child, uint64_t offset, uint64_t bytes,
                                unsigned flags);
// Advisory: without discard=unmap, or for the unaligned head and tail of
// the range, nothing happens and 0 is returned.  Discarded data reads
// back as whatever the format says (zeroes, or the backing file's data).
Task<int> bdrv_co_pdiscard(BdrvChild* child, uint64_t offset, uint64_t bytes);
// Makes every completed write to bs and its children durable; skipped
// (0) when nothing was written since the last flush, a no-op with
// cache.no-flush.
Task<int> bdrv_co_flush(BlockDriverState* bs);
// Changes the node's size; waits until no request crosses the boundary.
// -EFBIG beyond BDRV_MAX_LENGTH, -EACCES on a read-only node, with err set.
Task<int> bdrv_co_truncate(BdrvChild* child, uint64_t offset, bool exact, PreallocMode prealloc,
                           unsigned flags, Error& err);
// One node's status (its driver's answer) for [offset, offset + out.pnum):
// out.pnum > 0 unless the range is empty or past the end.
Task<int> bdrv_co_block_status(BlockDriverState* bs, bool want_zero, uint64_t offset,
                               uint64_t bytes, BlockStatus& out);
// Like block_status, but follows BDRV_BLOCK_RAW down to the node that really
// holds the data (QEMU's bdrv_block_status(): one layer of a backing
// chain, what qemu-io alloc and map report).
Task<int> bdrv_co_block_status_layer(BlockDriverState* bs, uint64_t offset, uint64_t bytes,
                                     BlockStatus& out);
// The status of a backing chain (QEMU's bdrv_block_status_above()): that of
// the first node from bs down the backing children, stopping before `base`
// (nullptr: the whole chain), where the range is allocated; a range past
// the end of a shorter backing file is allocated zeroes there.  pnum is cut
// where any layer's status changes.  `depth` (optional) gets the number of
// backing links followed to the answering node.
Task<int> bdrv_co_block_status_above(BlockDriverState* bs, const BlockDriverState* base,
                                     bool want_zero, uint64_t offset, uint64_t bytes,
                                     BlockStatus& out, unsigned* depth = nullptr);
// QEMU's bdrv_is_allocated_above(top, base, include_base=false): 1 when
// [offset, offset + pnum) is allocated in a node from top down to base
// (exclusive), 0 when in none of them, or -errno.
Task<int> bdrv_co_is_allocated_above(BlockDriverState* top, const BlockDriverState* base,
                                     uint64_t offset, uint64_t bytes, uint64_t& pnum);

// The zoned API (include/block/zoned.h): checks that the node is zoned
// (-ENOTSUP), writable where it must be (-EPERM) and, for management and
// descriptor extensions, that the range is inside it; then calls the
// driver.  A report's offset may be past the end: the driver judges it, as
// in QEMU.  Zone rule violations return zone error result codes; nothing
// changes then (a failed operation leaves the zones as they were).  Thread,
// buffer lifetime and results as in the request path contract above; zone
// requests are neither padded nor split (the limits below are the
// caller's to meet).
//
// Reports the zones from the one holding `offset` on into `zones`, which
// the caller owns and which has room for nr_zones descriptors; nr_zones
// comes back as the number filled (0 past the last zone where the driver
// allows that offset).
Task<int> bdrv_co_zone_report(BlockDriverState* bs, uint64_t offset, uint32_t& nr_zones,
                              BlockZoneDescriptor* zones);
// Opens, closes, finishes, resets (or, where the driver emulates them,
// makes read-only or offline) the zones of [offset, offset + len): offset
// a zone start, len a multiple of limits().zone_size or reaching the end
// of the node; the whole node means "all zones" as in ZNS (conventional
// and, for finish and reset, empty zones are skipped).  A zone error code
// when a zone refuses.
Task<int> bdrv_co_zone_mgmt(BlockDriverState* bs, BlockZoneOp op, uint64_t offset, uint64_t len);
// Appends qiov to the zone starting at `offset` (its start, not its
// write pointer); qiov.size() is a non-zero multiple of the logical block
// size (limits().write_granularity) up to limits().max_append_bytes.  On
// success `offset` is where the data landed.  flags: BDRV_REQ_FUA.  The
// caller keeps qiov and `offset` alive until the Task completes.
Task<int> bdrv_co_zone_append(BlockDriverState* bs, uint64_t& offset, IOVector& qiov, unsigned flags);
// `data` holds limits().zone_desc_ext_size bytes, owned by the caller
// until the Task completes; a zone error (invalid request) when the node
// has no descriptor extensions or offset is not a zone start.  Setting it
// is allowed on an empty zone only, which becomes closed (ZNS).
Task<int> bdrv_co_zone_set_desc_ext(BlockDriverState* bs, uint64_t offset, const uint8_t* data);
Task<int> bdrv_co_zone_get_desc_ext(BlockDriverState* bs, uint64_t offset, uint8_t* data);

// Flushes and closes bs and then the children no other parent uses (see
// drv_close).  Runs in bs's context; the caller has stopped its users.
Task<void> bdrv_co_close(BlockDriverState* bs);

// --- Drain (block/io.cc) -----------------------------------------------------
//
// QEMU's bdrv_drained_begin/end: a drained section gives exclusive access
// to a node.  Begin quiesces bs, every node below it and every user above
// them (BlockBackends queue new requests until the section ends; requests
// already inside the graph, and the ones they issue, go on), then waits
// until none of those nodes and backends has a request in flight.
// Sections nest.  Both run in bs's context; requests issued by the drainer
// itself (a flush, a close) go through: it bypasses the backends.
Task<void> bdrv_co_drained_begin(BlockDriverState* bs);
void bdrv_drained_end(BlockDriverState* bs);
// RAII form for coroutines: `auto section = co_await DrainedSection::begin(bs);`.
struct DrainedSection {
    static Task<DrainedSection> begin(BlockDriverState* bs);
    DrainedSection(DrainedSection&& o) noexcept : bs(std::exchange(o.bs, nullptr)) {}
    DrainedSection(const DrainedSection&) = delete;
    ~DrainedSection()
    {
        if (bs) {
            bdrv_drained_end(bs);
        }
    }
    BlockDriverState* bs;

private:
    explicit DrainedSection(BlockDriverState* b) : bs(b) {}
};

// Binds bs, and every node connected to it (parents and children), to
// new_ctx, as QEMU's bdrv_try_change_aio_context(); its BlockBackends
// follow.  Runs in bs's current context and returns there.  Drains the
// nodes itself; fails (-EBUSY) while a backend above them has requests
// queued by an earlier drained section, which would resume in the old
// thread.
Task<int> bdrv_co_change_aio_context(BlockDriverState* bs, AioContext& new_ctx, Error& err);

// Points `child` at another node (nullptr: none), keeping both nodes'
// parents() right; the caller refreshes permissions (set_perm of the
// backend above, or refresh_perms).
void bdrv_replace_child_bs(BdrvChild* child, std::shared_ptr<BlockDriverState> bs);

// The protocol node at the bottom of bs's file chain.
BlockDriverState* bdrv_protocol_node(BlockDriverState* bs);

}  // namespace qemu
