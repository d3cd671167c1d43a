// Spacing writes out to an average rate (qemu-img's -r option), as QEMU's
// write throttling of convert and of block jobs does.
#pragma once

#include <algorithm>
#include <cstdint>

#include "qemu/aio.h"

namespace qemu::img {

class RateLimiter {
public:
    // 0: no limit.
    explicit RateLimiter(uint64_t bytes_per_second) : rate_(bytes_per_second) {}

    // Waits until `bytes` more may be written without exceeding the rate
    // on average.
    Task<void> admit(AioContext& ctx, uint64_t bytes)
    {
        if (rate_ == 0) {
            co_return;
        }
        int64_t now = AioContext::now_ns();
        int64_t start = std::max(next_ns_, now);
        next_ns_ = start + int64_t(double(bytes) * 1e9 / double(rate_));
        if (start > now) {
            co_await ctx.sleep_ns(start - now);
        }
    }

private:
    uint64_t rate_;
    int64_t next_ns_ = 0;
};

}  // namespace qemu::img
