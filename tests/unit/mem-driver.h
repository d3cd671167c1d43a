// "test-mem": an in-memory protocol driver for unit tests.  Its alignment,
// transfer limit and zoned limits are set through options, and it records
// every request the generic layer hands it, so tests can check what drivers
// really see.
#pragma once

#include <cstring>
#include <vector>

#include "block/block_int.h"

namespace qemu::test {

struct MemRequest {
    char kind;  // 'r', 'w', 'z' (write zeroes), 'd' (discard), 'f' (flush)
    uint64_t offset;
    uint64_t bytes;
    unsigned flags;
};

class MemState : public BlockDriverState {
public:
    using BlockDriverState::BlockDriverState;

    Task<int> drv_open(QDict& options, Error& err) override;
    Task<int> drv_preadv(uint64_t offset, uint64_t bytes, IOVector& qiov, size_t qiov_offset,
                         unsigned flags) override;
    Task<int> drv_pwritev(uint64_t offset, uint64_t bytes, IOVector& qiov, size_t qiov_offset,
                          unsigned flags) override;
    unsigned supported_write_flags() const override { return fua_ ? unsigned(BDRV_REQ_FUA) : 0u; }
    Task<int> drv_pwrite_zeroes(uint64_t offset, uint64_t bytes, unsigned flags) override;
    // With write-zeroes=on, MAY_UNMAP reaches the log (for tests of who passes it).
    unsigned supported_zero_flags() const override { return zeroes_ ? unsigned(BDRV_REQ_MAY_UNMAP) : 0u; }
    Task<int> drv_pdiscard(uint64_t offset, uint64_t bytes) override;
    Task<int> drv_flush_to_disk() override;
    void drv_refresh_limits(BlockLimits& bl) override;

    std::vector<uint8_t> data;
    std::vector<MemRequest> log;
    // When set, requests suspend once (to the loop) before completing, so
    // several can be in flight at once.
    bool yield_in_io = false;
    size_t in_flight = 0;
    size_t max_in_flight = 0;

private:
    Task<void> maybe_yield();
    uint32_t align_ = 1;
    uint64_t max_transfer_ = 0;
    bool fua_ = false;
    bool zeroes_ = false;
    BlockLimits zoned_;
};

// Registers test-mem (idempotent) and returns the driver.
const BlockDriver& mem_driver();

}  // namespace qemu::test
