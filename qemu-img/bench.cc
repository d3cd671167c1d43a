// qemu-img bench: a simple I/O benchmark with QEMU 7.2's options, output and
// request pattern.
//
// `depth` worker coroutines keep that many requests in flight; each issues
// its next request as soon as its previous one completes, at an offset that
// advances by `step` per request and wraps at the end of the image.  With
// --flush-interval a flush follows every N requests, by default after the
// queue has drained (--no-drain: at once, alongside the requests).
//
// All requests share one aligned buffer, filled with the pattern byte: the
// data read is never looked at, and the data written is the same for every
// request.  QEMU 7.2 does the same in effect (it allocates a buffer per
// request but hands every request the first one), and it matters: 32
// buffers of 1 MiB no longer fit the CPU caches, which makes page cache
// reads half as fast.  Nothing is allocated per request by the benchmark.
// The buffer sits on huge pages, so that an O_DIRECT request is one DMA
// segment however small: on a virtio disk, 64 KiB requests at depth 32 are
// up to 2x faster than from 16 scattered pages.  QEMU's buffer is on 4 KiB
// pages.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "commands.h"
#include "qemu/coroutine-lock.h"
#include "tool.h"

namespace qemu::img {

namespace {

struct BenchParams {
    int count = 75000;
    int depth = 64;
    int64_t offset = 0;
    int bufsize = 4096;
    int step = 0;  // 0: bufsize
    int pattern = 0;
    int flush_interval = 0;
    bool drain_on_flush = true;
    bool write = false;
    bool writethrough = false;  // writes with FUA, like QEMU without a write cache
    bool zone_append = false;   // ours: each write is a zone append (see img_bench)
};

// -n and -i accumulate like QEMU's BDRV_O_NATIVE_AIO and BDRV_O_IO_URING
// flags: native beats io_uring beats an explicit "threads".
struct AioModeFlags {
    bool native = false;
    bool io_uring = false;
    bool threads = false;

    bool parse(const std::string& mode)
    {
        if (mode == "native") {
            native = true;
        } else if (mode == "io_uring") {
            io_uring = true;
        } else if (mode == "threads") {
            threads = true;
        } else {
            return false;
        }
        return true;
    }
    // The file driver's aio= value, empty for its default.
    std::string mode() const
    {
        return native ? "native" : io_uring ? "io_uring" : threads ? "threads" : "";
    }
};

[[noreturn]] void fail(const char* what, int ret)
{
    error_report("%s: %s", what, result_strerror(ret));
    exit(EXIT_FAILURE);
}

class Bench {
public:
    Bench(BlockBackend& blk, const BenchParams& p, uint8_t* buffer)
        : blk_(blk),
          image_size_(blk.getlength()),
          bufsize_(uint64_t(p.bufsize)),
          step_(uint64_t(p.step)),
          write_(p.write),
          req_flags_(p.write && p.writethrough ? unsigned(BDRV_REQ_FUA) : 0u),
          zone_append_(p.zone_append),
          zone_size_(blk.bs()->limits().zone_size),
          flush_interval_(p.flush_interval),
          drain_on_flush_(p.drain_on_flush),
          depth_(unsigned(p.depth)),
          n_(p.count),
          offset_(uint64_t(p.offset)),
          qiov_(buffer, bufsize_)
    {
    }

    // Runs the benchmark; returns the seconds until the last request
    // completed (a flush issued by the last completion is not timed, as in
    // QEMU).
    double run()
    {
        AioContext& ctx = blk_.ctx();
        auto start = std::chrono::steady_clock::now();
        // More workers than requests would find nothing to do.
        workers_ = unsigned(std::min<int64_t>(depth_, n_));
        for (unsigned i = workers_; i > 0; i--) {
            co_spawn(worker());
        }
        while (n_ > 0) {
            ctx.poll(true);
        }
        auto end = std::chrono::steady_clock::now();
        while (workers_ > 0 || flushes_ > 0) {
            ctx.poll(true);
        }
        return std::chrono::duration<double>(end - start).count();
    }

private:
    Task<void> worker()
    {
        for (;;) {
            while (draining_) {
                co_await resume_.wait();
            }
            if (n_ <= in_flight_) {
                break;
            }
            uint64_t offset = next_offset();
            in_flight_++;
            int ret = co_await submit(offset);
            if (ret < 0) {
                fail("Failed request", ret);
            }
            if (completed()) {
                co_await drained_flush();
            }
        }
        workers_--;
    }

    Task<int> submit(uint64_t offset)
    {
        if (zone_append_) {
            // The append goes to the zone the offset is in; the device
            // picks where in it (the assigned offset is not needed here).
            uint64_t zone_start = offset - offset % zone_size_;
            co_return co_await blk_.co_zone_append(zone_start, qiov_, req_flags_);
        }
        if (write_) {
            co_return co_await blk_.co_pwritev(offset, bufsize_, qiov_, req_flags_);
        }
        co_return co_await blk_.co_preadv(offset, bufsize_, qiov_);
    }

    uint64_t next_offset()
    {
        uint64_t offset = offset_;
        offset_ += step_;
        if (image_size_ > 0) {
            offset_ %= image_size_;
        }
        return offset;
    }

    // QEMU's accounting after each request: with a flush interval, a flush
    // is due when the number of requests neither completed nor in flight is
    // a multiple of it.  Draining stops new requests until the ones in
    // flight are done; true when this completion was the last of them and
    // must flush.
    bool completed()
    {
        int64_t remaining = n_ - in_flight_;
        n_--;
        in_flight_--;
        if (flush_interval_ == 0 || remaining % flush_interval_ != 0) {
            return false;
        }
        if (!drain_on_flush_) {
            flushes_++;
            co_spawn(undrained_flush());
            return false;
        }
        draining_ = true;
        return in_flight_ == 0;
    }

    Task<void> drained_flush()
    {
        flushes_++;
        int ret = co_await blk_.co_flush();
        flushes_--;
        if (ret < 0) {
            fail("Failed request", ret);
        }
        draining_ = false;
        resume_.restart_all();
    }

    Task<void> undrained_flush()
    {
        int ret = co_await blk_.co_flush();
        if (ret < 0) {
            fail("Failed flush request", ret);
        }
        flushes_--;
    }

    BlockBackend& blk_;
    const uint64_t image_size_;
    const uint64_t bufsize_;
    const uint64_t step_;
    const bool write_;
    const unsigned req_flags_;
    const bool zone_append_;
    const uint64_t zone_size_;
    const int64_t flush_interval_;
    const bool drain_on_flush_;
    const unsigned depth_;

    int64_t n_;  // requests not yet completed
    int64_t in_flight_ = 0;
    uint64_t offset_;
    bool draining_ = false;
    CoQueue resume_;
    unsigned workers_ = 0;
    unsigned flushes_ = 0;
    IOVector qiov_;  // the shared buffer
};

// What the command line asks for.
struct BenchCommand {
    BenchParams p;
    ImageSpec spec;
    AioModeFlags aio;
    int flags = 0;  // BDRV_O_*
};

// qemu-img bench's command line (QEMU's img_bench argument loop); false
// after printing why it is refused.
bool parse_bench_command_line(int argc, char** argv, BenchCommand& cmd)
{
    enum { kFlushInterval = 256, kImageOpts, kPattern, kNoDrain, kZoneAppend };
    static const option long_options[] = {
        {"help", no_argument, nullptr, 'h'},
        {"flush-interval", required_argument, nullptr, kFlushInterval},
        {"image-opts", no_argument, nullptr, kImageOpts},
        {"pattern", required_argument, nullptr, kPattern},
        {"no-drain", no_argument, nullptr, kNoDrain},
        {"force-share", no_argument, nullptr, 'U'},
        {"zone-append", no_argument, nullptr, kZoneAppend},
        {nullptr, 0, nullptr, 0},
    };
    int c;
    while ((c = get_option(argc, argv, ":hc:d:f:ni:o:qs:S:t:wU", long_options)) != -1) {
        switch (c) {
        case 'c': {
            auto v = parse_ulong_argument(optarg, INT_MAX);
            if (!v) {
                error_report("Invalid request count specified");
                return false;
            }
            cmd.p.count = int(*v);
            break;
        }
        case 'd': {
            auto v = parse_ulong_argument(optarg, INT_MAX);
            if (!v) {
                error_report("Invalid queue depth specified");
                return false;
            }
            cmd.p.depth = int(*v);
            break;
        }
        case 'f':
            cmd.spec.format = optarg;
            break;
        case 'n':
            cmd.aio.native = true;
            break;
        case 'i':
            if (!cmd.aio.parse(optarg)) {
                error_report("Invalid aio option: %s", optarg);
                return false;
            }
            break;
        case 'o': {
            int64_t v = parse_size_argument("offset", optarg, 0, INT64_MAX);
            if (v < 0) {
                return false;
            }
            cmd.p.offset = v;
            break;
        }
        case 'q':
            break;  // bench prints the same either way, as in QEMU
        case 's': {
            int64_t v = parse_size_argument("buffer size", optarg, 0, INT_MAX);
            if (v < 0) {
                return false;
            }
            cmd.p.bufsize = int(v);
            break;
        }
        case 'S': {
            int64_t v = parse_size_argument("step_size", optarg, 0, INT_MAX);
            if (v < 0) {
                return false;
            }
            cmd.p.step = int(v);
            break;
        }
        case 't':
            if (!bdrv_parse_cache_mode(optarg, cmd.flags, cmd.p.writethrough)) {
                error_report("Invalid cache mode");
                return false;
            }
            break;
        case 'w':
            cmd.flags |= BDRV_O_RDWR;
            cmd.p.write = true;
            break;
        case 'U':
            cmd.spec.force_share = true;
            break;
        case kPattern: {
            auto v = parse_ulong_argument(optarg, 0xff);
            if (!v) {
                error_report("Invalid pattern byte specified");
                return false;
            }
            cmd.p.pattern = int(*v);
            break;
        }
        case kFlushInterval: {
            auto v = parse_ulong_argument(optarg, INT_MAX);
            if (!v) {
                error_report("Invalid flush interval specified");
                return false;
            }
            cmd.p.flush_interval = int(*v);
            break;
        }
        case kNoDrain:
            cmd.p.drain_on_flush = false;
            break;
        case kImageOpts:
            cmd.spec.image_opts = true;
            break;
        case kZoneAppend:
            cmd.p.zone_append = true;
            break;
        }
    }
    if (optind != argc - 1) {
        error_exit("Expecting one image file name");
    }
    cmd.spec.filename = argv[argc - 1];
    cmd.spec.aio = cmd.aio.mode();

    if (cmd.p.zone_append && !cmd.p.write) {
        error_report("--zone-append is only available in write tests");
        return false;
    }
    if (!cmd.p.write && cmd.p.flush_interval) {
        error_report("--flush-interval is only available in write tests");
        return false;
    }
    if (cmd.p.flush_interval && cmd.p.flush_interval < cmd.p.depth) {
        error_report("Flush interval can't be smaller than depth");
        return false;
    }
    // QEMU waits forever for requests it never sends.
    if (cmd.p.depth == 0 && cmd.p.count > 0) {
        error_report("Invalid queue depth specified");
        return false;
    }
    return true;
}

}  // namespace

int img_bench(int argc, char** argv)
{
    BenchCommand cmd;
    if (!parse_bench_command_line(argc, argv, cmd)) {
        return 1;
    }
    BenchParams& p = cmd.p;
    AioContext ctx;
    auto blk = open_image(cmd.spec, cmd.flags, ctx);
    if (!blk) {
        return 1;
    }
    if (p.zone_append && blk->bs()->limits().zoned == BlockZoneModel::None) {
        error_report("--zone-append needs a zoned image");
        return 1;
    }
    if (p.step == 0) {
        p.step = p.bufsize;
    }
    printf("Sending %d %s requests, %d bytes each, %d in parallel "
           "(starting at offset %lld, step size %d)\n",
           p.count, p.zone_append ? "zone append" : p.write ? "write" : "read", p.bufsize, p.depth, (long long)p.offset, p.step);
    if (p.flush_interval) {
        printf("Sending flush every %d requests\n", p.flush_interval);
    }

    AlignedBuffer buffer;
    try {
        buffer = AlignedBuffer::on_huge_pages(
            size_t(p.bufsize), std::max<size_t>(blk->bs()->limits().opt_mem_alignment, 1));
    } catch (const std::bad_alloc&) {
        error_report("Could not allocate a request buffer of %d bytes: %s", p.bufsize,
                     strerror(ENOMEM));
        return 1;
    }
    memset(buffer.data(), p.pattern, size_t(p.bufsize));

    Bench bench(*blk, p, buffer.data());
    double seconds = bench.run();
    printf("Run completed in %3.3f seconds.\n", seconds);
    return 0;
}

}  // namespace qemu::img
