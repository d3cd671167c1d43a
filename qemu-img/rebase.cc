// qemu-img rebase: gives an image another backing file, with QEMU 7.2's
// options, checks, messages and resulting allocation.
//
// Safe mode (the default) keeps what the guest reads: wherever the image
// itself allocates nothing (and, when the new backing file is further down
// the current chain, wherever the layers in between allocate nothing
// either, there being nothing to preserve), the old and the new backing
// file are compared in 512-byte sectors and every run of differing sectors
// is copied from the old one into the image (written as zeroes where the
// old one ends).  Only then is the header changed, so a crash in between
// leaves the image reading as before.  "-b ''" makes the image standalone.
//
// Unsafe mode (-u) only rewrites the header; the old backing file is not
// even opened, so it can fix the name of a moved or renamed one.
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>

#include "commands.h"
#include "progress.h"
#include "tool.h"

namespace qemu::img {

namespace {

constexpr uint64_t kBufferSize = 2 << 20;  // QEMU's IO_BUF_SIZE
constexpr uint64_t kSectorSize = 512;

struct RebaseCommand {
    ImageSpec spec;
    std::optional<std::string> backing;  // -b
    std::optional<std::string> backing_fmt;  // -F
    bool unsafe = false;
    bool compress = false;  // -c: what is copied is written compressed
    std::string cache = "writeback";
    std::string src_cache = "writeback";
};

// QEMU's compare_buffers(): whether the first sector of the two buffers
// differs, and in `run` how many bytes from the start (whole sectors, or up
// to `len`) share that answer.
bool sectors_differ(const uint8_t* a, const uint8_t* b, uint64_t len, uint64_t& run)
{
    uint64_t first = std::min(len, kSectorSize);
    bool differ = memcmp(a, b, first) != 0;
    run = first;
    while (run < len) {
        uint64_t n = std::min(len - run, kSectorSize);
        if ((memcmp(a + run, b + run, n) != 0) != differ) {
            break;
        }
        run += n;
    }
    return differ;
}

class Rebase {
public:
    Rebase(RebaseCommand& cmd, ProgressMeter& progress) : cmd_(cmd), progress_(progress) {}

    int run()
    {
        int flags = BDRV_O_RDWR | (cmd_.unsafe ? BDRV_O_NO_BACKING : 0);
        bool writethrough = false;
        if (!parse_cache_option(cmd_.cache, flags, writethrough)) {
            return 1;
        }
        src_flags_ = 0;
        bool src_writethrough;  // sources are only read
        if (!bdrv_parse_cache_mode(cmd_.src_cache, src_flags_, src_writethrough)) {
            error_report("Invalid source cache option: %s", cmd_.src_cache.c_str());
            return 1;
        }
        write_flags_ = writethrough ? unsigned(BDRV_REQ_FUA) : 0u;
        blk_ = open_image(cmd_.spec, flags, ctx_);
        if (!blk_) {
            return 1;
        }
        if (cmd_.compress) {
            BlockDriverInfo bdi;
            if (!(blk_->bs()->supported_write_flags() & BDRV_REQ_WRITE_COMPRESSED) ||
                blk_->bs()->drv_get_info(bdi) < 0 || !bdi.cluster_size) {
                error_report("Compression not supported for this file format");
                return 1;
            }
            cluster_size_ = bdi.cluster_size;
        }
        if (cmd_.backing_fmt && !bdrv_find_driver(*cmd_.backing_fmt)) {
            error_report("Invalid format name: '%s'", cmd_.backing_fmt->c_str());
            return 1;
        }
        if (!cmd_.unsafe && (!open_new_backing() || !copy_differences())) {
            return 1;
        }
        if (!change_backing_file()) {
            return 1;
        }
        progress_.update(100, 0);
        return 0;
    }

private:
    // The new backing file to compare with: a node of the current chain
    // when it is one (then only what lies above it can differ), else the
    // file opened on its own.  None for "-b ''".
    bool open_new_backing()
    {
        BlockDriverState* bs = blk_->bs();
        if (cmd_.backing->empty()) {
            return true;
        }
        Error err;
        auto real = bdrv_full_backing_filename(bs->filename(), *cmd_.backing, err);
        if (!real) {
            report_error(err, "Could not resolve backing filename: ");
            return false;
        }
        prefix_chain_ = bdrv_find_backing_image(bs, *real);
        if (prefix_chain_) {
            new_backing_ = prefix_chain_;
            return true;
        }
        QDict options;
        if (cmd_.backing_fmt) {
            options.set("driver", *cmd_.backing_fmt);
        }
        if (cmd_.spec.force_share) {
            options.set("force-share", "on");
        }
        new_blk_ = BlockBackend::open(*real, std::move(options), src_flags_, ctx_, err);
        if (!new_blk_) {
            report_error(err, "Could not open new backing file '" + *cmd_.backing + "': ");
            return false;
        }
        new_backing_ = new_blk_->root();
        return true;
    }

    // Reads [offset, offset + len) of a backing node; false after saying so.
    bool read_backing(BdrvChild* child, uint64_t offset, uint64_t len, uint8_t* buf,
                      const char* which)
    {
        IOVector qiov(buf, len);
        if (run_sync(ctx_, bdrv_co_preadv(child, offset, len, qiov)) < 0) {
            error_report("error while reading from %s backing file", which);
            return false;
        }
        return true;
    }

    bool copy_differences()
    {
        BlockDriverState* bs = blk_->bs();
        BdrvChild* old_backing = bs->backing();
        uint64_t size = blk_->getlength();
        uint64_t old_size = old_backing ? old_backing->bs->total_bytes() : 0;
        uint64_t new_size = new_backing_ ? new_backing_->bs->total_bytes() : 0;
        // As QEMU: the step, in percent, of one buffer's worth (an integer
        // number of buffers divides the image).
        float step = size ? 100.0f / float(size / std::min(size, kBufferSize)) : 0;
        AlignedBuffer buf_old(kBufferSize, 4096), buf_new(kBufferSize, 4096);

        uint64_t n;
        for (uint64_t offset = 0; offset < size; offset += n) {
            n = std::min(kBufferSize, size - offset);
            // What the image allocates itself stays as it is.
            int ret = run_sync(ctx_, bdrv_co_is_allocated_above(
                                         bs, old_backing ? old_backing->bs.get() : nullptr,
                                         offset, n, n));
            if (ret < 0) {
                error_report("error while reading image metadata: %s", result_strerror(ret));
                return false;
            }
            if (ret) {
                continue;
            }
            if (prefix_chain_) {
                // Where no layer between the image and its new backing
                // file allocates anything, it reads the same either way.
                // Past the end of the old backing file nothing answers
                // (pnum 0; upstream QEMU before 8.2 looped forever here):
                // what reads as zeroes there is compared like the rest.
                uint64_t bytes = n;
                ret = run_sync(ctx_, bdrv_co_is_allocated_above(old_backing->bs.get(),
                                                                prefix_chain_->bs.get(),
                                                                offset, n, n));
                if (ret < 0) {
                    error_report("error while reading image metadata: %s", result_strerror(ret));
                    return false;
                }
                if (!ret && n) {
                    continue;
                }
                if (!n) {
                    n = bytes;
                }
            }

            // Past the end of a backing file reads as zeroes.
            bool old_is_zero = offset >= old_size;
            if (old_is_zero) {
                memset(buf_old.data(), 0, n);
            } else {
                n = std::min(n, old_size - offset);
                if (!read_backing(old_backing, offset, n, buf_old.data(), "old")) {
                    return false;
                }
            }
            if (!new_backing_ || offset >= new_size) {
                memset(buf_new.data(), 0, n);
            } else {
                n = std::min(n, new_size - offset);
                if (!read_backing(new_backing_, offset, n, buf_new.data(), "new")) {
                    return false;
                }
            }

            for (uint64_t done = 0, run; done < n; done += run) {
                if (!sectors_differ(buf_old.data() + done, buf_new.data() + done, n - done, run)) {
                    continue;
                }
                unsigned flags = write_flags_;
                if (cmd_.compress && !old_is_zero) {
                    // Compressed clusters are written whole: the run grows
                    // to the clusters it touches inside this buffer, where
                    // the image allocates nothing and the old view is at
                    // hand.  A cluster the buffer cuts is written plainly.
                    uint64_t cs = cluster_size_;
                    uint64_t start = std::max((offset + done) / cs * cs, offset);
                    uint64_t end = std::min((offset + done + run + cs - 1) / cs * cs, offset + n);
                    if (start % cluster_size_ == 0 && (end % cluster_size_ == 0 || end == size)) {
                        flags |= BDRV_REQ_WRITE_COMPRESSED;
                    }
                    done = start - offset;
                    run = end - start;
                }
                int wret = old_is_zero
                               ? run_sync(ctx_, blk_->co_pwrite_zeroes(offset + done, run,
                                                                       write_flags_))
                               : blk_->pwrite(offset + done, run, buf_old.data() + done, flags);
                if (wret < 0) {
                    error_report("Error while writing to COW image: %s", result_strerror(wret));
                    return false;
                }
            }
            progress_.update(step, 100);
        }
        return true;
    }

    // The header last: the data it now needs is in the image.  As QEMU,
    // a new backing file needs its format (-F); "-b ''" (or -u without
    // -b) drops the backing file and ignores -F.
    bool change_backing_file()
    {
        BlockDriverState* bs = blk_->bs();
        const std::string name = cmd_.backing.value_or("");
        Error err;
        int ret;
        if (!name.empty() && !cmd_.backing_fmt) {
            ret = -EINVAL;
        } else if (!name.empty()) {
            ret = run_sync(ctx_, bs->drv_change_backing_file(name, *cmd_.backing_fmt, err));
        } else {
            ret = run_sync(ctx_, bs->drv_change_backing_file("", "", err));
        }
        if (ret == -ENOSPC) {
            error_report("Could not change the backing file to '%s': No space left in the file "
                         "header", name.c_str());
        } else if (ret == -EINVAL && !name.empty() && !cmd_.backing_fmt) {
            error_report("Could not change the backing file to '%s': backing format must be "
                         "specified", name.c_str());
        } else if (ret < 0) {
            error_report("Could not change the backing file to '%s': %s", name.c_str(),
                         result_strerror(ret));
        }
        return ret >= 0;
    }

    RebaseCommand& cmd_;
    ProgressMeter& progress_;
    AioContext ctx_;
    int src_flags_ = 0;
    unsigned write_flags_ = 0;
    uint64_t cluster_size_ = 0;  // with -c
    std::unique_ptr<BlockBackend> blk_;
    std::unique_ptr<BlockBackend> new_blk_;
    BdrvChild* new_backing_ = nullptr;   // nullptr: "-b ''"
    BdrvChild* prefix_chain_ = nullptr;  // the new backing file, found in the chain
};

}  // namespace

int img_rebase(int argc, char** argv)
{
    enum { kObject = 256, kImageOpts };
    static const option long_options[] = {
        {"help", no_argument, nullptr, 'h'},
        {"object", required_argument, nullptr, kObject},
        {"image-opts", no_argument, nullptr, kImageOpts},
        {"force-share", no_argument, nullptr, 'U'},
        {nullptr, 0, nullptr, 0},
    };
    RebaseCommand cmd;
    bool progress = false, quiet = false;
    int c;
    while ((c = get_option(argc, argv, ":hf:F:b:upt:T:qUc", long_options)) != -1) {
        switch (c) {
        case 'f':
            cmd.spec.format = optarg;
            break;
        case 'F':
            cmd.backing_fmt = optarg;
            break;
        case 'b':
            cmd.backing = optarg;
            break;
        case 'u':
            cmd.unsafe = true;
            break;
        case 'c':
            cmd.compress = true;
            break;
        case 'p':
            progress = true;
            break;
        case 't':
            cmd.cache = optarg;
            break;
        case 'T':
            cmd.src_cache = optarg;
            break;
        case 'q':
            quiet = true;
            break;
        case 'U':
            cmd.spec.force_share = true;
            break;
        case kObject:
            error_report("--object is not supported");
            return 1;
        case kImageOpts:
            cmd.spec.image_opts = true;
            break;
        }
    }
    if (quiet) {
        progress = false;
    }
    if (optind != argc - 1) {
        error_exit("Expecting one image file name");
    }
    if (!cmd.unsafe && !cmd.backing) {
        error_exit("Must specify backing file (-b) or use unsafe mode (-u)");
    }
    cmd.spec.filename = argv[optind];

    ProgressMeter meter(progress, 2.0);
    meter.update(0, 100);
    int status = Rebase(cmd, meter).run();
    meter.end();
    return status;
}

}  // namespace qemu::img
