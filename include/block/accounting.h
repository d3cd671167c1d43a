// I/O accounting of a BlockBackend, as QEMU's block/accounting.c keeps it
// for query-blockstats: per request type, the bytes and operations that
// succeeded, their total latency, and the requests that failed or were
// invalid (outside the device).
//
// Threads: counted and read in the backend's context only (a monitor in
// another thread reads a copy taken there).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace qemu {

// QEMU's BlockAcctType, with its order (the index into the counters).
enum class BlockAcctType { Read, Write, Flush, Unmap, ZoneAppend, Count };

struct BlockAcctCounters {
    uint64_t bytes = 0;
    uint64_t ops = 0;
    uint64_t total_time_ns = 0;
    uint64_t failed = 0;
    uint64_t invalid = 0;
};

class BlockAcctStats {
public:
    // A request that ran: ret < 0 counts as failed (not in bytes/ops/time,
    // as QEMU's block_acct_failed), otherwise done with its latency.
    void done(BlockAcctType type, uint64_t bytes, int64_t start_ns, int ret);
    // A request refused before it ran (out of range): invalid.
    void invalid(BlockAcctType type);
    // A write that succeeded up to `end` (wr_highest_offset).
    void wrote_up_to(uint64_t end)
    {
        if (end > wr_highest_offset_) {
            wr_highest_offset_ = end;
        }
    }

    const BlockAcctCounters& get(BlockAcctType type) const { return c_[size_t(type)]; }
    uint64_t wr_highest_offset() const { return wr_highest_offset_; }
    // When the last request ended (AioContext::now_ns), -1: never.
    int64_t last_done_ns() const { return last_done_ns_; }

private:
    std::array<BlockAcctCounters, size_t(BlockAcctType::Count)> c_{};
    uint64_t wr_highest_offset_ = 0;
    int64_t last_done_ns_ = -1;
};

}  // namespace qemu
