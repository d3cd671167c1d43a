// I/O accounting (see include/block/accounting.h).
#include "block/accounting.h"

#include "qemu/aio.h"

namespace qemu {

void BlockAcctStats::done(BlockAcctType type, uint64_t bytes, int64_t start_ns, int ret)
{
    BlockAcctCounters& c = c_[size_t(type)];
    int64_t now = AioContext::now_ns();
    last_done_ns_ = now;
    if (ret < 0) {
        c.failed++;
        return;
    }
    c.bytes += bytes;
    c.ops++;
    c.total_time_ns += uint64_t(now - start_ns);
}

void BlockAcctStats::invalid(BlockAcctType type)
{
    c_[size_t(type)].invalid++;
    last_done_ns_ = AioContext::now_ns();
}

}  // namespace qemu
