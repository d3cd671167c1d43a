// crash-sim: a filter driver that turns its file child into a disk with a
// volatile write cache, so that tests can crash it at any instant and look at
// what a power loss or a killed process would have left on the child.
//
//   driver=qcow2,file.driver=crash-sim,file.file.driver=file,file.file.filename=x.qcow2
//
// Writes, write-zeroes, discards (which read back as zeroes, like a punched
// hole) and truncates are kept in memory, in arrival order, and reads see
// them on top of the child; a flush writes the ones that had completed when
// it arrived to the child, which holds the durable state.  Each request
// completes after a random number (0..max-delay) of event loop iterations,
// so requests overlap and complete out of order as on a real disk.
//
// crash() (or the crash-after option) stops the disk at that instant: every
// request from then on fails with -EIO and nothing more reaches the child.
// Once nothing is in flight, settle() writes to the child what survives
// under the chosen CrashOutcome; the child then holds the image a restart
// would see.  Closing a node flushes it first, so a clean shutdown loses
// nothing.
//
// Besides crashes it injects host errors that leave the disk working:
// fail_request() fails one request with an errno (a transient EIO), and
// set_full() makes every write, write-zeroes, discard and growing truncate
// fail with -ENOSPC (a full host disk) until it is cleared.
//
// Options: seed (drives every random choice; default 0), max-delay
// (default 0: requests complete without yielding), crash-after (crash when
// the Nth request arrives, counting from open; 0: never), fail-at and
// fail-errno (fail request N with that errno, default EIO; 0: none),
// full-after (from request N on, the disk is full; 0: never).
// See docs/devel/crash-testing.rst.
#pragma once

#include <list>
#include <memory>
#include <random>
#include <vector>

#include "block/block_int.h"

namespace qemu {

// What survives a crash besides what completed flushes made durable.
enum class CrashOutcome {
    // Power loss: the cache is lost.
    PowerLossCacheLost,
    // Power loss after the cache wrote back its oldest entries in order: a
    // random prefix of the pending changes.
    PowerLossPrefix,
    // Power loss after the cache wrote back a random subset of whole
    // pending changes, in any order.
    PowerLossSubset,
    // Power loss with torn writes: each 512-byte sector of each pending
    // write independently written back or not (so each sector may hold any
    // of the versions written since the last flush).
    PowerLossTorn,
    // The process was killed: every completed request survives (the host
    // kernel has it); each one in flight survives whole, torn, or not at all.
    ProcessKilled,
};
const char* crash_outcome_name(CrashOutcome outcome);

struct CrashSimStats {
    uint64_t requests = 0;  // reads, writes, zeroes, discards, truncates, flushes
    uint64_t flushes = 0;
    uint64_t injected = 0;  // requests failed by fail_request() or a full disk
    // At the crash: pending changes, and how many of them had completed.
    uint64_t pending_at_crash = 0;
    uint64_t completed_at_crash = 0;
    // Pending changes settle() wrote to the child (torn ones included).
    uint64_t survivors = 0;
};

class CrashSimState : public BlockDriverState {
public:
    using BlockDriverState::BlockDriverState;

    // Stops the disk now.
    void crash();
    // Crashes when request number `n` (counted from open, 1-based) arrives;
    // that request fails.
    void crash_at_request(uint64_t n) { crash_at_ = n; }
    bool crashed() const { return crashed_; }
    // Fails request number `n` (1-based, counted from open) with -errnum,
    // without crashing; 0 cancels.
    void fail_request(uint64_t n, int errnum)
    {
        fail_at_ = n;
        fail_errno_ = errnum;
    }
    // While full, changes fail with -ENOSPC; reads and flushes still work.
    void set_full(bool full) { full_ = full; }
    // Requests counted so far (the number the next one will have, minus 1).
    uint64_t requests() const { return stats_.requests; }
    const CrashSimStats& stats() const { return stats_; }

    // After crash(), with no request in flight (-EBUSY otherwise): writes
    // what survives under `outcome` to the child and forgets the rest.
    Task<int> settle(CrashOutcome outcome);

    // --- BlockDriverState ---------------------------------------------------
    Task<int> drv_open(QDict& options, Error& err) override;
    Task<int> drv_preadv(uint64_t offset, uint64_t bytes, IOVector& qiov, size_t qiov_offset,
                         unsigned flags) override;
    Task<int> drv_pwritev(uint64_t offset, uint64_t bytes, IOVector& qiov, size_t qiov_offset,
                          unsigned flags) override;
    unsigned supported_zero_flags() const override { return BDRV_REQ_MAY_UNMAP; }
    Task<int> drv_pwrite_zeroes(uint64_t offset, uint64_t bytes, unsigned flags) override;
    Task<int> drv_pdiscard(uint64_t offset, uint64_t bytes) override;
    Task<int> drv_flush_to_os() override;
    Task<int> drv_truncate(uint64_t offset, bool exact, PreallocMode prealloc, unsigned flags,
                           Error& err) override;
    Task<int> drv_block_status(bool want_zero, uint64_t offset, uint64_t bytes,
                               BlockStatus& out) override;
    void drv_refresh_limits(BlockLimits& bl) override;

private:
    // A change the child does not have yet.
    struct Change {
        enum class Kind : uint8_t { Write, Zero, Truncate };
        Kind kind;
        uint64_t offset;  // Truncate: the new size
        uint64_t bytes;
        std::vector<uint8_t> data;  // Write
        PreallocMode prealloc = PreallocMode::Off;
        bool completed = false;
        bool transferred = false;  // on the child (a flush is done with it)
    };
    using ChangePtr = std::shared_ptr<Change>;

    // Counts the request and returns the error it fails with: -EIO if
    // the disk has crashed (or crashes now), an injected error, -ENOSPC for
    // a change to a full disk; 0 to go on.  Every request calls it first.
    int admit(bool change);
    // Lets the loop run `n` (random) times before the request completes.
    Task<void> delay();
    // Records a change and completes it after a delay.
    Task<int> submit(ChangePtr change);
    // Applies a change (or, with `sectors`, only those of its 512-byte
    // sectors) to the child.
    Task<int> apply(const Change& change, const std::vector<bool>* sectors = nullptr);
    static void overlay(const Change& change, uint64_t offset, uint64_t bytes, uint8_t* buf);

    std::list<ChangePtr> pending_;
    CoMutex transfer_lock_;  // one flush writes to the child at a time
    std::mt19937_64 rng_;
    uint32_t max_delay_ = 0;
    uint64_t crash_at_ = 0;
    uint64_t fail_at_ = 0;
    int fail_errno_ = EIO;
    uint64_t full_after_ = 0;
    bool full_ = false;
    bool crashed_ = false;
    unsigned in_flight_ = 0;
    CrashSimStats stats_;
};

}  // namespace qemu
