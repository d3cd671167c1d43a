// qemu-img compare: are two images' contents the same?  Messages and exit
// statuses as in QEMU 7.2:
//   0  identical    1  different    2  an image could not be opened
//   3  block status failed          4  a read failed
//
// Both images are walked by the block status of their whole backing chains.
// Ranges that read as zeroes in both are skipped without reading; ranges
// allocated (in some layer) in only one image must be zeroes there; only
// ranges allocated in both are read and compared.
// Where the images differ in size, the common part must match and the rest
// of the larger one must read as zeroes (with -s a size mismatch, or any
// difference in block status, is a difference already).  Mismatches are
// reported at the start of the first differing 512-byte sector.
#include <algorithm>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "commands.h"
#include "progress.h"
#include "tool.h"

namespace qemu::img {

namespace {

constexpr uint64_t kSectorSize = 512;
constexpr uint64_t kBufferSize = 2 << 20;  // the most compared in one go

enum CompareStatus {
    kIdentical = 0,
    kDifferent = 1,
    kOpenFailed = 2,
    kBlockStatusFailed = 3,
    kReadFailed = 4,
};

// One of the two images.
struct Side {
    std::string filename;
    std::unique_ptr<BlockBackend> blk;
    uint64_t size = 0;
    AlignedBuffer buf;
};

// The index of the first 512-byte sector of buf[0, len) holding a non-zero
// byte, in bytes, or -1 if all of it is zero.
int64_t find_nonzero_sector(const uint8_t* buf, uint64_t len)
{
    for (uint64_t i = 0; i < len; i += kSectorSize) {
        if (!buffer_is_zero(buf + i, std::min(kSectorSize, len - i))) {
            return int64_t(i);
        }
    }
    return -1;
}

// The same for the first sector where the two buffers differ.
int64_t find_mismatch_sector(const uint8_t* a, const uint8_t* b, uint64_t len)
{
    for (uint64_t i = 0; i < len; i += kSectorSize) {
        if (memcmp(a + i, b + i, std::min(kSectorSize, len - i)) != 0) {
            return int64_t(i);
        }
    }
    return -1;
}

class Comparison {
public:
    Comparison(Side& a, Side& b, bool quiet, bool strict, ProgressMeter& progress)
        : a_(a), b_(b), quiet_(quiet), strict_(strict), progress_(progress),
          progress_base_(std::max(a.size, b.size))
    {
    }

    int run()
    {
        progress_.update(0, 100);
        if (strict_ && a_.size != b_.size) {
            say("Strict mode: Image size mismatch!\n");
            return kDifferent;
        }
        uint64_t common = std::min(a_.size, b_.size);
        uint64_t offset = 0;
        while (offset < common) {
            uint64_t chunk;
            int ret = compare_chunk(offset, chunk);
            if (ret != kIdentical) {
                return ret;
            }
            offset += chunk;
            advance(chunk);
        }
        if (a_.size != b_.size) {
            say("Warning: Image size mismatch!\n");
            int ret = check_tail(a_.size > b_.size ? a_ : b_, offset);
            if (ret != kIdentical) {
                return ret;
            }
        }
        say("Images are identical.\n");
        return kIdentical;
    }

private:
    void say(const char* fmt, ...) __attribute__((format(printf, 2, 3)))
    {
        if (quiet_) {
            return;
        }
        va_list ap;
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
    }

    void advance(uint64_t bytes)
    {
        progress_.update(float(bytes) / float(progress_base_) * 100, 100);
    }

    int block_status(Side& side, uint64_t offset, BlockStatus& st)
    {
        BlockDriverState* bs = side.blk->bs();
        int ret = run_sync(bs->ctx(), bdrv_co_block_status_above(bs, nullptr, true, offset,
                                                                 side.size - offset, st));
        if (ret < 0) {
            error_report("Sector allocation test failed for %s", side.filename.c_str());
            return kBlockStatusFailed;
        }
        return kIdentical;
    }

    int read(Side& side, uint64_t offset, uint64_t bytes)
    {
        int ret = side.blk->pread(offset, bytes, side.buf.data());
        if (ret < 0) {
            error_report("Error while reading offset %" PRIu64 " of %s: %s", offset,
                         side.filename.c_str(), result_strerror(ret));
            return kReadFailed;
        }
        return kIdentical;
    }

    // The range must read as zeroes in `side` (read into a_'s buffer).
    int check_zeroes(Side& side, uint64_t offset, uint64_t bytes)
    {
        int ret = side.blk->pread(offset, bytes, a_.buf.data());
        if (ret < 0) {
            error_report("Error while reading offset %" PRIu64 " of %s: %s", offset,
                         side.filename.c_str(), result_strerror(ret));
            return kReadFailed;
        }
        int64_t idx = find_nonzero_sector(a_.buf.data(), bytes);
        if (idx >= 0) {
            say("Content mismatch at offset %" PRIu64 "!\n", offset + uint64_t(idx));
            return kDifferent;
        }
        return kIdentical;
    }

    // Compares the range from `offset` on over which neither image's block
    // status changes; `chunk` says how far that was.
    int compare_chunk(uint64_t offset, uint64_t& chunk)
    {
        BlockStatus st1, st2;
        int ret = block_status(a_, offset, st1);
        if (ret == kIdentical) {
            ret = block_status(b_, offset, st2);
        }
        if (ret != kIdentical) {
            return ret;
        }
        bool allocated1 = st1.flags & BDRV_BLOCK_ALLOCATED;
        bool allocated2 = st2.flags & BDRV_BLOCK_ALLOCATED;
        chunk = std::min(st1.pnum, st2.pnum);
        if (strict_ && st1.flags != st2.flags) {
            say("Strict mode: Offset %" PRIu64 " block status mismatch!\n", offset);
            return kDifferent;
        }
        if ((st1.flags & BDRV_BLOCK_ZERO) && (st2.flags & BDRV_BLOCK_ZERO)) {
            return kIdentical;
        }
        if (allocated1 != allocated2) {
            chunk = std::min(chunk, kBufferSize);
            return check_zeroes(allocated1 ? a_ : b_, offset, chunk);
        }
        if (!allocated1) {
            return kIdentical;  // allocated nowhere in either chain
        }
        chunk = std::min(chunk, kBufferSize);
        ret = read(a_, offset, chunk);
        if (ret == kIdentical) {
            ret = read(b_, offset, chunk);
        }
        if (ret != kIdentical) {
            return ret;
        }
        int64_t idx = find_mismatch_sector(a_.buf.data(), b_.buf.data(), chunk);
        if (idx >= 0) {
            say("Content mismatch at offset %" PRIu64 "!\n", offset + uint64_t(idx));
            return kDifferent;
        }
        return kIdentical;
    }

    // What the larger image has beyond the smaller one must be zeroes.
    int check_tail(Side& larger, uint64_t offset)
    {
        while (offset < progress_base_) {
            BlockStatus st;
            BlockDriverState* bs = larger.blk->bs();
            int ret = run_sync(bs->ctx(),
                               bdrv_co_block_status_above(bs, nullptr, true, offset,
                                                          progress_base_ - offset, st));
            if (ret < 0) {
                error_report("Sector allocation test failed for %s", larger.filename.c_str());
                return kBlockStatusFailed;
            }
            uint64_t chunk = st.pnum;
            if ((st.flags & BDRV_BLOCK_ALLOCATED) && !(st.flags & BDRV_BLOCK_ZERO)) {
                chunk = std::min(chunk, kBufferSize);
                ret = check_zeroes(larger, offset, chunk);
                if (ret != kIdentical) {
                    return ret;
                }
            }
            offset += chunk;
            advance(chunk);
        }
        return kIdentical;
    }

    Side& a_;
    Side& b_;
    bool quiet_;
    bool strict_;
    ProgressMeter& progress_;
    uint64_t progress_base_;
};

}  // namespace

int img_compare(int argc, char** argv)
{
    enum { kObject = 256, kImageOpts };
    static const option long_options[] = {
        {"help", no_argument, nullptr, 'h'},
        {"object", required_argument, nullptr, kObject},
        {"image-opts", no_argument, nullptr, kImageOpts},
        {"force-share", no_argument, nullptr, 'U'},
        {nullptr, 0, nullptr, 0},
    };
    ImageSpec spec1, spec2;
    const char* cache = "writeback";
    bool progress = false, quiet = false, strict = false;
    int c;
    while ((c = get_option(argc, argv, ":hf:F:T:pqsU", long_options)) != -1) {
        switch (c) {
        case 'f':
            spec1.format = optarg;
            break;
        case 'F':
            spec2.format = optarg;
            break;
        case 'T':
            cache = optarg;
            break;
        case 'p':
            progress = true;
            break;
        case 'q':
            quiet = true;
            break;
        case 's':
            strict = true;
            break;
        case 'U':
            spec1.force_share = spec2.force_share = true;
            break;
        case kObject:
            error_report("--object is not supported");
            return kOpenFailed;
        case kImageOpts:
            spec1.image_opts = spec2.image_opts = true;
            break;
        }
    }
    if (quiet) {
        progress = false;
    }
    if (optind != argc - 2) {
        error_exit("Expecting two image file names");
    }
    spec1.filename = argv[optind++];
    spec2.filename = argv[optind++];

    ProgressMeter meter(progress, 2.0);
    int status = [&] {
        int flags = 0;
        bool writethrough;
        if (!bdrv_parse_cache_mode(cache, flags, writethrough)) {
            error_report("Invalid source cache option: %s", cache);
            return int(kOpenFailed);
        }
        AioContext ctx;
        Side a, b;
        a.filename = spec1.filename;
        a.blk = open_image(spec1, flags, ctx);
        if (!a.blk) {
            return int(kOpenFailed);
        }
        b.filename = spec2.filename;
        b.blk = open_image(spec2, flags, ctx);
        if (!b.blk) {
            return int(kOpenFailed);
        }
        for (Side* side : {&a, &b}) {
            side->size = side->blk->getlength();
            side->buf = AlignedBuffer(kBufferSize);
        }
        return Comparison(a, b, quiet, strict, meter).run();
    }();
    meter.end();
    return status;
}

}  // namespace qemu::img
