// qemu-img commit: writes what an image holds over its backing file into
// that backing file (or, with -b, into a file further down the chain), with
// QEMU 7.2's options, checks, messages and resulting allocation.
//
// QEMU runs its active commit job, a mirror of the top image into the base:
// the base is reopened read-write and grown to the size of the top image;
// every range some image above the base allocates is marked, in chunks of
// the base's cluster size (4 KiB to 64 KiB); the marked runs are then
// written into the base as the top image reads them: data as data, whole
// chunks that read as zeroes as zeroes (unmapping what the base held there),
// whole chunks allocated nowhere as discards.  Unless -d or -b is given, the
// top image is then emptied, so that it reads what the base now holds.
// (With -b the images in between may now read differently: QEMU's "-b
// implies -d" keeps at least the top image valid.)
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "commands.h"
#include "progress.h"
#include "rate-limit.h"
#include "tool.h"

namespace qemu::img {

namespace {

constexpr uint64_t kBufferSize = 16 << 20;  // QEMU's DEFAULT_MIRROR_BUF_SIZE
constexpr uint64_t kMaxIoBytes = 1 << 20;   // QEMU's MAX_IO_BYTES

// Replaces the read-only node of `child` (a backing file in the chain) by
// the same image opened read-write, as QEMU reopens the commit base.  The
// old node goes first: it holds image locks that would refuse the new one.
Task<int> reopen_read_write(BlockBackend& blk, BdrvChild* child, Error& err)
{
    BlockDriverState* old = child->bs.get();
    QDict options = old->options();
    if (old->backing() && old->backing()->implicit) {
        // Its own backing file comes from its header again.
        options.take_subtree("backing");
    }
    options.set("read-only", "off");
    AioContext& ctx = old->ctx();
    co_await bdrv_co_close(old);
    bdrv_replace_child_bs(child, nullptr);
    bdrv_replace_child_bs(child, co_await bdrv_co_open(std::nullopt, std::move(options),
                                                       BDRV_O_RDWR, ctx, err));
    if (!child->bs) {
        co_return -EIO;
    }
    co_return blk.set_perm(blk.perm(), blk.shared_perm(), err);
}

// QEMU's bdrv_get_default_bitmap_granularity() of the base: the chunk in
// which the mirror tracks what to copy.
uint64_t commit_granularity(BlockDriverState* base)
{
    BlockDriverInfo bdi;
    if (base->drv_get_info(bdi) >= 0 && bdi.cluster_size > 0) {
        return std::clamp<uint64_t>(bdi.cluster_size, 4096, 65536);
    }
    return 65536;
}

class Commit {
public:
    Commit(BlockBackend& top, BdrvChild* base, uint64_t rate_limit, bool writethrough,
           ProgressMeter& progress)
        : top_(top), base_(base), limiter_(rate_limit),
          write_flags_(writethrough ? unsigned(BDRV_REQ_FUA) : 0u), progress_(progress)
    {
    }

    // Returns 0 or -errno.
    Task<int> run()
    {
        length_ = top_.getlength();
        if (length_ > base_->bs->total_bytes()) {
            Error err;
            int ret = co_await bdrv_co_truncate(base_, length_, false, PreallocMode::Off, 0, err);
            if (ret < 0) {
                co_return ret;
            }
        }
        granularity_ = commit_granularity(base_->bs.get());
        int ret = co_await mark_allocated_above_base();
        if (ret < 0) {
            co_return ret;
        }
        uint64_t chunks = dirty_.size();
        for (uint64_t first = 0; first < chunks;) {
            if (!dirty_[first]) {
                first++;
                continue;
            }
            uint64_t run = 1;
            while (first + run < chunks && dirty_[first + run] &&
                   (run + 1) * granularity_ <= kBufferSize) {
                run++;
            }
            ret = co_await copy_run(first * granularity_, run);
            if (ret < 0) {
                co_return ret;
            }
            first += run;
        }
        co_return co_await bdrv_co_flush(base_->bs.get());
    }

private:
    // Marks every chunk that a layer above the base allocates.
    Task<int> mark_allocated_above_base()
    {
        dirty_.assign((length_ + granularity_ - 1) / granularity_, false);
        for (uint64_t offset = 0; offset < length_;) {
            uint64_t pnum;
            int ret = co_await bdrv_co_is_allocated_above(top_.bs(), base_->bs.get(), offset,
                                                          length_ - offset, pnum);
            if (ret < 0) {
                co_return ret;
            }
            if (ret) {
                for (uint64_t c = offset / granularity_; c * granularity_ < offset + pnum; c++) {
                    dirty_[c] = true;
                    total_ += granularity_;
                }
            }
            offset += pnum;
        }
        co_return 0;
    }

    // Writes `nb_chunks` marked chunks from `offset` into the base (QEMU's
    // mirror_iteration()).
    Task<int> copy_run(uint64_t offset, uint64_t nb_chunks)
    {
        while (nb_chunks > 0 && offset < length_) {
            BlockStatus st;
            uint64_t bytes = nb_chunks * granularity_;
            int ret = co_await bdrv_co_block_status_above(top_.bs(), nullptr, true, offset,
                                                          std::min(bytes, length_ - offset), st);
            bool data = ret < 0 || (st.flags & BDRV_BLOCK_DATA);
            uint64_t io_bytes = ret < 0 ? std::min(bytes, kMaxIoBytes)
                                        : data ? std::min(st.pnum, kMaxIoBytes) : st.pnum;
            io_bytes -= io_bytes % granularity_;
            enum class Method { Copy, Zero, Discard } method = Method::Copy;
            if (io_bytes < granularity_) {
                io_bytes = granularity_;
            } else if (!data) {
                method = (st.flags & BDRV_BLOCK_ZERO) ? Method::Zero : Method::Discard;
            }
            io_bytes = std::min(io_bytes, length_ - offset);
            co_await limiter_.admit(top_.ctx(), method == Method::Copy ? io_bytes : 0);
            switch (method) {
            case Method::Copy:
                ret = co_await copy(offset, io_bytes);
                break;
            case Method::Zero:
                ret = co_await bdrv_co_pwrite_zeroes(base_, offset, io_bytes,
                                                     BDRV_REQ_MAY_UNMAP | write_flags_);
                break;
            case Method::Discard:
                ret = co_await bdrv_co_pdiscard(base_, offset, io_bytes);
                break;
            }
            if (ret < 0) {
                co_return ret;
            }
            offset += io_bytes;
            uint64_t done_chunks = (io_bytes + granularity_ - 1) / granularity_;
            nb_chunks -= std::min(nb_chunks, done_chunks);
            done_ = std::min(total_, done_ + done_chunks * granularity_);
            progress_.update(float(done_) / float(total_) * 100, 0);
        }
        co_return 0;
    }

    Task<int> copy(uint64_t offset, uint64_t bytes)
    {
        AlignedBuffer buf(bytes, 4096);
        IOVector qiov(buf.data(), bytes);
        int ret = co_await top_.co_preadv(offset, bytes, qiov);
        if (ret >= 0) {
            ret = co_await bdrv_co_pwritev(base_, offset, bytes, qiov, 0, write_flags_);
        }
        co_return ret;
    }

    BlockBackend& top_;
    BdrvChild* base_;
    RateLimiter limiter_;
    unsigned write_flags_;
    ProgressMeter& progress_;
    uint64_t length_ = 0;
    uint64_t granularity_ = 0;
    std::vector<bool> dirty_;
    uint64_t total_ = 0;  // bytes marked
    uint64_t done_ = 0;
};

}  // namespace

int img_commit(int argc, char** argv)
{
    enum { kObject = 256, kImageOpts };
    static const option long_options[] = {
        {"help", no_argument, nullptr, 'h'},
        {"object", required_argument, nullptr, kObject},
        {"image-opts", no_argument, nullptr, kImageOpts},
        {nullptr, 0, nullptr, 0},
    };
    ImageSpec spec;
    std::string cache = "writeback";
    std::optional<std::string> base_name;
    bool progress = false, quiet = false, drop = false;
    uint64_t rate_limit = 0;
    int c;
    while ((c = get_option(argc, argv, ":f:ht:b:dpqr:", long_options)) != -1) {
        switch (c) {
        case 'f':
            spec.format = optarg;
            break;
        case 't':
            cache = optarg;
            break;
        case 'b':
            base_name = optarg;
            drop = true;  // -b implies -d
            break;
        case 'd':
            drop = true;
            break;
        case 'p':
            progress = true;
            break;
        case 'q':
            quiet = true;
            break;
        case 'r': {
            int64_t rate = parse_size_argument("rate limit", optarg, 0, INT64_MAX);
            if (rate < 0) {
                return 1;
            }
            rate_limit = uint64_t(rate);
            break;
        }
        case kObject:
            error_report("--object is not supported");
            return 1;
        case kImageOpts:
            spec.image_opts = true;
            break;
        }
    }
    if (quiet) {
        progress = false;
    }
    if (optind != argc - 1) {
        error_exit("Expecting one image file name");
    }
    spec.filename = argv[optind];

    int flags = BDRV_O_RDWR | BDRV_O_UNMAP;
    bool writethrough = false;
    if (!parse_cache_option(cache, flags, writethrough)) {
        return 1;
    }
    AioContext ctx;
    auto blk = open_image(spec, flags, ctx);
    if (!blk) {
        return 1;
    }
    BlockDriverState* bs = blk->bs();

    ProgressMeter meter(progress, 1.0);
    meter.update(0, 100);
    Error err;
    int ret = 0;
    // The traditional qemu-img default (unlike QMP's): the backing file
    // right below.
    BdrvChild* base = base_name ? bdrv_find_backing_image(bs, *base_name) : bs->backing();
    if (!base && base_name) {
        err.set("Did not find '%s' in the backing chain of '%s'", base_name->c_str(),
                spec.filename.c_str());
        ret = -EINVAL;
    } else if (!base) {
        err.set("Image does not have a backing file");
        ret = -EINVAL;
    }
    if (ret >= 0 && base->bs->read_only()) {
        ret = run_sync(ctx, reopen_read_write(*blk, base, err));
    }
    if (ret >= 0) {
        ret = run_sync(ctx, Commit(*blk, base, rate_limit, writethrough, meter).run());
        if (ret < 0) {
            err.set_errno(-ret, "Block job failed");
        } else {
            meter.update(100, 0);
        }
    }
    if (ret >= 0 && !drop) {
        ret = run_sync(ctx, bs->drv_make_empty(err));
        if (ret == -ENOTSUP) {
            ret = 0;
        }
    }
    meter.end();
    blk.reset();
    if (ret < 0) {
        report_error(err);
        return 1;
    }
    if (!quiet) {
        printf("Image committed.\n");
    }
    return 0;
}

}  // namespace qemu::img
