// BlockBackend: the handle through which users (tools, front ends) do I/O.
//
// It owns the root of a node graph, holds the permissions its user needs and
// checks every request against the device size.  Byte-granular offsets are
// fine: the node graph takes care of alignment.  The co_* functions are for
// coroutines; the plain ones run the same request synchronously on the
// backend's AioContext (for tools and tests).
//
// Threads: a backend belongs to the context of its root node (ctx()); its
// requests run there and only there.  It counts its requests in flight and,
// while its node is drained (bdrv_co_drained_begin), holds new ones back
// until the drained section ends, so that a node can be flushed, closed,
// removed or moved to another context while its users keep submitting.
#pragma once

#include <cerrno>
#include <memory>
#include <string>

#include "block/accounting.h"
#include "block/block_int.h"

namespace qemu {

class BlockBackend {
public:
    // Opens filename/options (see bdrv_co_open) with `flags` (BDRV_O_*).
    // With BDRV_O_SNAPSHOT the backend's node is a temporary qcow2 overlay
    // on the image opened read-only,
    // as QEMU's -s: see blk_co_open_temp_snapshot().
    // The backend takes CONSISTENT_READ, plus WRITE with BDRV_O_RDWR and
    // RESIZE with BDRV_O_RESIZE; it shares everything unless BDRV_O_NO_SHARE.
    // No filename (--image-opts) differs from an empty one ('').
    static std::unique_ptr<BlockBackend> open(std::optional<std::string> filename, QDict options,
                                              int flags, AioContext& ctx, Error& err);
    // The same as a coroutine, for callers already running in ctx.
    static Task<std::unique_ptr<BlockBackend>> co_open(std::optional<std::string> filename,
                                                       QDict options, int flags, AioContext& ctx,
                                                       Error& err);
    // A backend on an existing node (an export of a graph's node), taking
    // `perm` and sharing `shared`; nullptr and err set when other users of
    // the node conflict (QEMU's "Permission conflict on node ..." message)
    // or it is read-only and perm has WRITE.  `name` (may be empty) is how
    // permission errors call it ("block device 'NAME'").
    static std::unique_ptr<BlockBackend> attach(std::shared_ptr<BlockDriverState> node,
                                                uint64_t perm, uint64_t shared,
                                                const std::string& name, Error& err);
    // Takes no permissions: see attach() and set_perm().
    explicit BlockBackend(std::shared_ptr<BlockDriverState> root);
    // Closes as co_close() would, polling ctx() (so from its thread, and
    // not from a coroutine of it), unless co_close() ran already.
    ~BlockBackend();

    // Waits for the backend's own requests, then lets go of the node:
    // flushes and closes it when nobody else uses it, else drops the
    // backend's permissions on it.  The backend serves no request
    // afterwards.  Runs in ctx().
    Task<void> co_close();

    // "block device 'NAME'" in permission errors; empty: "an unnamed
    // block device".
    const std::string& name() const { return name_; }
    // Requests that have passed the drain gate and not returned.
    uint64_t in_flight() const { return requests_.count(); }

    BlockDriverState* bs() const { return root_.bs.get(); }
    AioContext& ctx() const { return root_.bs->ctx(); }
    BdrvChild* root() { return &root_; }
    uint64_t getlength() const { return root_.bs->total_bytes(); }
    bool is_read_only() const { return root_.bs->read_only(); }

    // The permissions the backend holds and shares (BLK_PERM_*).
    uint64_t perm() const { return root_.perm; }
    uint64_t shared_perm() const { return root_.shared; }
    // Changes them, as QEMU's blk_set_perm(): writing needs a writable
    // node, and taking more may conflict with other users of the node
    // (other parents in the graph, image locks of other processes); on
    // failure nothing changes and err says why.
    int set_perm(uint64_t perm, uint64_t shared, Error& err);

    // The request path contract of include/block/block_int.h holds for
    // each co_* request below: called from the thread of ctx() (a
    // coroutine there, or run_sync()/co_spawn()); any byte offset and
    // length (the node pads to its request_alignment and splits at its
    // max_transfer); `qiov` owned by the caller and kept valid until the
    // Task completes, also when it is detached; 0 or a negative errno (or
    // zone error result code), never an exception.  They count as the
    // backend's requests (in_flight()) and wait at the drain gate.
    // Requests outside [0, length) fail with -EIO.  Writes, write-zeroes,
    // discards and zone operations on a read-only backend fail with -EPERM
    // ("Operation not permitted"), as QEMU's block layer returns for them;
    // only a truncate fails with -EACCES ("Image is read-only"), as in QEMU.
    // Requests after co_close() (or held by a drained section during which
    // it closed) fail with -ENOMEDIUM.  Zone rule violations are zone error
    // result codes (include/block/zone-error.h), never errnos.
    Task<int> co_preadv(uint64_t offset, uint64_t bytes, IOVector& qiov, unsigned flags = 0);
    Task<int> co_pwritev(uint64_t offset, uint64_t bytes, IOVector& qiov, unsigned flags = 0);
    Task<int> co_pwrite_zeroes(uint64_t offset, uint64_t bytes, unsigned flags = 0);
    Task<int> co_pdiscard(uint64_t offset, uint64_t bytes);
    Task<int> co_flush();
    Task<int> co_truncate(uint64_t offset, bool exact, PreallocMode prealloc, unsigned flags,
                          Error& err);

    // The zoned API (include/block/zoned.h); -ENOTSUP on non-zoned nodes.
    // Ranges, alignment, buffers and results as bdrv_co_zone_report,
    // bdrv_co_zone_mgmt, bdrv_co_zone_append and the descriptor extension
    // functions in block_int.h (no padding or splitting: the zone limits
    // are the caller's to meet); thread and drain as the requests above.
    Task<int> co_zone_report(uint64_t offset, uint32_t& nr_zones, BlockZoneDescriptor* zones);
    Task<int> co_zone_mgmt(BlockZoneOp op, uint64_t offset, uint64_t len);
    Task<int> co_zone_append(uint64_t& offset, IOVector& qiov, unsigned flags = 0);
    // Zone descriptor extensions: limits().zone_desc_ext_size bytes.
    Task<int> co_zone_set_desc_ext(uint64_t offset, const uint8_t* data);
    Task<int> co_zone_get_desc_ext(uint64_t offset, uint8_t* data);

    // The backend's I/O accounting (query-blockstats): reads, writes and
    // write-zeroes (as writes), discards (unmap), flushes and zone appends
    // that went through it.  Read it in ctx().
    const BlockAcctStats& stats() const { return stats_; }

    // Synchronous forms of co_preadv, co_pwritev and co_flush for tools
    // and tests: they run the request and poll ctx() until it completes,
    // so they are called from ctx()'s thread outside any coroutine of it.
    // `buf` (bytes long) is the caller's and only used during the call.
    // Same results as the coroutine forms.
    int pread(uint64_t offset, uint64_t bytes, void* buf, unsigned flags = 0);
    int pwrite(uint64_t offset, uint64_t bytes, const void* buf, unsigned flags = 0);
    int flush();

private:
    friend struct DrainedSection;
    friend Task<void> bdrv_co_drained_begin(BlockDriverState*);
    friend void bdrv_drained_end(BlockDriverState*);
    friend Task<int> bdrv_co_change_aio_context(BlockDriverState*, AioContext&, Error&);

    int check_request(uint64_t offset, uint64_t bytes) const;
    // The drain gate at the start of every request:
    // `auto in_flight = co_await admit();` passes at once unless the
    // backend is quiesced, and then waits until the drained sections end
    // (again, if a new one began before the request ran).
    struct AdmitOp {
        BlockBackend* blk;
        bool await_ready() const noexcept { return blk->quiesce_counter_ == 0; }
        void await_suspend(std::coroutine_handle<> h) { co_spawn(blk->resume_when_undrained(h)); }
        // Counted from here until the request returns.
        RequestCounter::Guard await_resume() { return RequestCounter::Guard(blk->requests_); }
    };
    AdmitOp admit() { return AdmitOp{this}; }
    Task<void> resume_when_undrained(std::coroutine_handle<> request);
    // Lets go of the root: out of the node's parents, which then drops
    // our permissions.
    void detach();

    BdrvChild root_;
    std::string name_;
    bool closed_ = false;
    RequestCounter requests_;
    unsigned quiesce_counter_ = 0;
    CoQueue queued_requests_;  // new requests held back while drained
    BlockAcctStats stats_;
};

// BDRV_O_SNAPSHOT's open (block/temp-snapshot.cc): filename/options are
// opened read-only to learn their size and description, then reopened as
// the backing file of a new qcow2 overlay in $TMPDIR (else /var/tmp),
// whose file is unlinked once open.
Task<std::unique_ptr<BlockBackend>> blk_co_open_temp_snapshot(std::optional<std::string> filename,
                                                              QDict options, int flags,
                                                              AioContext& ctx, Error& err);

}  // namespace qemu
