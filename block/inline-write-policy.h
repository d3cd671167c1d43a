// SPDX-License-Identifier: GPL-2.0-or-later
//
// When the file driver copies a page-cache write into the cache in the
// event-loop thread instead of handing it to io_uring.
//
// A buffered write is mostly a memory copy into the page cache.  io_uring
// first tries it without blocking, but file systems without nonblocking
// buffered writes (ext4 among them) refuse, and io_uring then passes every
// such write to a kernel worker, one at a time per file: a cross-CPU
// wake-up and two context switches per request, several times the cost of
// the copy itself (measured on ext4 in a 2-CPU VM: 4 KiB writes at depth 1
// 10x faster inline, 1 MiB writes 1.7x).
//
// The price is that the event loop stands still while the kernel blocks a
// write: dirty-page throttling, or a partial page that must first be read
// from disk.  A write that ran slower than a memory copy runs is taken for
// such a block, and writes go back to io_uring for a while, so that other
// requests of the same AioContext do not wait behind throttled ones.
#pragma once

#include <algorithm>
#include <cstdint>

namespace qemu {

class InlineWritePolicy {
public:
    // An inline write is "slow" when it took longer than this and longer
    // than one nanosecond per byte (1 GB/s: far below memory copies).
    static constexpr int64_t kSlowNs = 1'000'000;
    // How long writes go to io_uring after a slow one.
    static constexpr int64_t kBackoffNs = 100'000'000;

    // Whether a write starting at `now_ns` may run inline.
    bool allows(int64_t now_ns) const { return now_ns >= resume_ns_; }

    // Records an inline write of `bytes` that ran from start_ns to end_ns.
    void record(int64_t start_ns, int64_t end_ns, uint64_t bytes)
    {
        int64_t limit = std::max<int64_t>(kSlowNs, int64_t(std::min<uint64_t>(bytes, INT64_MAX)));
        if (end_ns - start_ns > limit) {
            resume_ns_ = end_ns + kBackoffNs;
        }
    }

    // The file system accepts RWF_NOWAIT buffered writes (XFS, btrfs) until
    // one is refused with EOPNOTSUPP (ext4); then writes block inline.
    bool try_nowait() const { return nowait_supported_; }
    void nowait_unsupported() { nowait_supported_ = false; }

private:
    int64_t resume_ns_ = 0;
    bool nowait_supported_ = true;
};

}  // namespace qemu
