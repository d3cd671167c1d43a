#include "convert-copy.h"

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstring>

#include "qemu/coroutine-lock.h"
#include "rate-limit.h"
#include "tool.h"

namespace qemu::img {

namespace {

// QEMU's BDRV_REQUEST_MAX_SECTORS: block status is asked for at most this.
constexpr uint64_t kMaxRequestSectors = (INT32_MAX & ~uint64_t(kSectorBytes - 1)) / kSectorBytes;

constexpr int kInProgress = 1;  // ConvertJob::ret_ while nothing failed

// Data is read and written, Zero written as zeroes (unless the target reads
// as zeroes already), BackingFile left alone: the target's backing file has
// it (QEMU's BLK_DATA, BLK_ZERO, BLK_BACKING_FILE).
enum class PieceStatus { Data, Zero, BackingFile };

bool sector_is_zero(const uint8_t* sector)
{
    return buffer_is_zero(sector, kSectorBytes);
}

// QEMU's is_allocated_sectors(): whether the first sector of buf[0, n) holds
// data, with `run` set to the number of sectors after it in the same state.
// A run is extended or shortened so that it ends on an `alignment`
// boundary of the image where that saves the target a read-modify-write.
bool leading_run_has_data(const uint8_t* buf, uint64_t n, uint64_t sector_num,
                          uint64_t alignment, uint64_t& run)
{
    bool zero = sector_is_zero(buf);
    uint64_t i = 1;
    while (i < n && sector_is_zero(buf + i * kSectorBytes) == zero) {
        i++;
    }
    if (i == n) {
        run = n;
        return !zero;
    }
    uint64_t tail = (sector_num + i) & (alignment - 1);
    if (tail) {
        if (zero && i <= tail) {
            // The data after it rewrites this block anyway.
            zero = false;
        }
        if (!zero) {
            i = std::min(i + alignment - tail, n);
        } else {
            i -= tail;
        }
    }
    run = i;
    return !zero;
}

// QEMU's is_allocated_sectors_min(): like leading_run_has_data(), but a
// data run swallows zero runs shorter than `min` sectors, so that small
// holes do not split writes.
bool leading_run_has_data_min(const uint8_t* buf, uint64_t n, uint64_t min,
                              uint64_t sector_num, uint64_t alignment, uint64_t& run)
{
    min = std::min(min, n);
    if (!leading_run_has_data(buf, n, sector_num, alignment, run)) {
        return false;
    }
    uint64_t used = run;
    uint64_t checked = run;
    buf += run * kSectorBytes;
    sector_num += run;
    n -= run;
    while (n > 0) {
        uint64_t len;
        bool data = leading_run_has_data(buf, n, sector_num, alignment, len);
        buf += len * kSectorBytes;
        sector_num += len;
        n -= len;
        checked += len;
        if (data) {
            used = checked;
        } else if (len >= min) {
            break;
        }
    }
    run = used;
    return true;
}

class ConvertJob {
public:
    ConvertJob(std::vector<ConvertSource>& sources, BlockBackend& target,
               const ConvertParams& params, ProgressMeter& progress)
        : sources_(sources), target_(target), p_(params), progress_(progress),
          limiter_(params.rate_limit)
    {
        for (const ConvertSource& src : sources_) {
            source_start_.push_back(total_sectors_);
            total_sectors_ += src.sectors;
        }
    }

    int run()
    {
        if (!p_.has_zero_init && p_.target_is_new && p_.min_sparse) {
            p_.has_zero_init = target_.bs()->drv_has_zero_init();
        }
        if (p_.zoned) {
            // A sequential zone takes writes only at its write pointer:
            // in order, holes included (see write_zeroes).
            p_.in_order = true;
        }
        if (p_.compressed) {
            // Compressed clusters are written whole, one per request.
            if (p_.cluster_sectors == 0 || p_.cluster_sectors > p_.buf_sectors) {
                error_report("invalid cluster size");
                return -EINVAL;
            }
            p_.buf_sectors = p_.cluster_sectors;
        }
        AioContext& ctx = target_.ctx();
        int ret = run_sync(ctx, count_allocated());
        if (ret < 0) {
            return ret;
        }

        sector_next_status_ = 0;
        ret_ = kInProgress;
        running_ = p_.num_coroutines;
        for (unsigned i = 0; i < p_.num_coroutines; i++) {
            co_spawn(worker());
        }
        while (running_ > 0) {
            ctx.poll(true);
        }
        if (ret_ != kInProgress) {
            return ret_;
        }
        if (p_.compressed) {
            // The end of the compressed stream: the driver tidies up.
            IOVector empty;
            ret = run_sync(ctx, target_.co_pwritev(0, 0, empty, BDRV_REQ_WRITE_COMPRESSED));
            if (ret < 0) {
                error_report("error while finishing the compressed image: %s", result_strerror(ret));
                return ret;
            }
        }
        return 0;
    }

private:
    // The source holding sector_num and where it starts.
    size_t select_source(uint64_t sector_num) const
    {
        auto it = std::upper_bound(source_start_.begin(), source_start_.end(), sector_num);
        size_t i = size_t(it - source_start_.begin()) - 1;
        // Skip empty sources: the sector belongs to the next non-empty one.
        while (sources_[i].sectors == 0 || sector_num - source_start_[i] >= sources_[i].sectors) {
            i++;
        }
        return i;
    }

    // QEMU's convert_iteration_sectors(): the length of the next piece from
    // sector_num, with its status in status_.  Block status is asked again
    // only when the range it last described is used up.
    Task<int64_t> next_piece(uint64_t sector_num)
    {
        size_t cur = select_source(sector_num);
        uint64_t cur_start = source_start_[cur];
        uint64_t n = std::min(total_sectors_ - sector_num, kMaxRequestSectors);

        // Zeroes past the end of the target's backing file are there
        // already: pieces stop at that end.
        bool past_target_backing = false;
        if (p_.target_backing_sectors >= 0) {
            uint64_t end = uint64_t(p_.target_backing_sectors);
            if (sector_num >= end) {
                past_target_backing = true;
            } else if (sector_num + n > end) {
                n = end - sector_num;
            }
        }

        if (sector_next_status_ <= sector_num) {
            uint64_t offset = (sector_num - cur_start) * kSectorBytes;
            BlockDriverState* bs = sources_[cur].blk->bs();
            // The whole backing chain, or with a target backing file only
            // the source's top layer.
            const BlockDriverState* base =
                p_.target_has_backing && bs->backing() ? bs->backing()->bs.get() : nullptr;
            BlockStatus st;
            uint64_t count;
            for (;;) {
                int ret = co_await bdrv_co_block_status_above(bs, base, true, offset,
                                                              n * kSectorBytes, st);
                if (ret >= 0) {
                    count = st.pnum;
                    break;
                }
                if (!p_.salvage) {
                    error_report("error while reading block status at offset %" PRIu64 ": %s",
                                 offset, result_strerror(ret));
                    co_return ret;
                }
                if (n == 1) {
                    if (!p_.quiet) {
                        error_report("warning: error while reading block status at offset "
                                     "%" PRIu64 ": %s", offset, result_strerror(ret));
                    }
                    st.flags = BDRV_BLOCK_DATA;  // then just try to read it
                    count = kSectorBytes;
                    break;
                }
                n = (n + 3) / 4;  // retry on a shorter range
            }
            n = (count + kSectorBytes - 1) / kSectorBytes;

            // Keep the next query aligned to the source's clusters.
            uint64_t tail = (sector_num - cur_start + n) % sources_[cur].alignment;
            if (n > tail) {
                n -= tail;
            }
            if (st.flags & BDRV_BLOCK_ZERO) {
                status_ = past_target_backing ? PieceStatus::BackingFile : PieceStatus::Zero;
            } else if (st.flags & BDRV_BLOCK_DATA) {
                status_ = PieceStatus::Data;
            } else {
                status_ = p_.target_has_backing ? PieceStatus::BackingFile : PieceStatus::Data;
            }
            sector_next_status_ = sector_num + n;
        }

        n = std::min(n, sector_next_status_ - sector_num);
        if (status_ == PieceStatus::Data) {
            n = std::min(n, p_.buf_sectors);
        }
        if (p_.compressed) {
            // A compressed write covers a whole cluster: a shorter piece
            // is filled up to one, data or not.
            if (n < p_.cluster_sectors) {
                n = std::min(p_.cluster_sectors, total_sectors_ - sector_num);
                status_ = PieceStatus::Data;
            } else {
                n = n / p_.cluster_sectors * p_.cluster_sectors;
            }
        }
        co_return int64_t(n);
    }

    bool counts_for_progress(PieceStatus status) const
    {
        return status == PieceStatus::Data || (!p_.min_sparse && status == PieceStatus::Zero);
    }

    // A first pass over the sources: how much will be written, for -p.
    Task<int> count_allocated()
    {
        uint64_t sector_num = 0;
        while (sector_num < total_sectors_) {
            int64_t n = co_await next_piece(sector_num);
            if (n < 0) {
                co_return int(n);
            }
            if (counts_for_progress(status_)) {
                allocated_sectors_ += uint64_t(n);
            }
            if (p_.zoned && !p_.zoned->fill_known && status_ == PieceStatus::Data) {
                note_zoned_data(sector_num, uint64_t(n));
            }
            sector_num += uint64_t(n);
        }
        co_return 0;
    }

    // A zoned target's sequential zones are written up to the end of the
    // data in them.
    void note_zoned_data(uint64_t sector_num, uint64_t n)
    {
        ZonedTarget& zt = *p_.zoned;
        uint64_t off = sector_num * kSectorBytes;
        uint64_t end = off + n * kSectorBytes;
        while (off < end) {
            size_t z = size_t(off / zt.zone_size);
            if (z >= zt.fill_end.size()) {
                break;
            }
            uint64_t zone_end = std::min(end, (uint64_t(z) + 1) * zt.zone_size);
            zt.fill_end[z] = std::max(zt.fill_end[z], zone_end);
            off = zone_end;
        }
    }

    bool in_sequential_zone(uint64_t sector_num) const
    {
        if (!p_.zoned) {
            return false;
        }
        size_t z = size_t(sector_num * kSectorBytes / p_.zoned->zone_size);
        return z < p_.zoned->sequential.size() && p_.zoned->sequential[z];
    }

    // For a zoned target: how many of the `nb_sectors` from sector_num to
    // write in one go (within one zone), and how many to skip (above a
    // sequential zone's fill end).
    uint64_t zoned_chunk(uint64_t sector_num, uint64_t nb_sectors, bool& skip) const
    {
        const ZonedTarget& zt = *p_.zoned;
        uint64_t off = sector_num * kSectorBytes;
        size_t z = size_t(off / zt.zone_size);
        uint64_t zone_end = (uint64_t(z) + 1) * zt.zone_size;
        uint64_t n = std::min(nb_sectors, (zone_end - off) / kSectorBytes);
        skip = false;
        if (z < zt.sequential.size() && zt.sequential[z]) {
            if (off >= zt.fill_end[z]) {
                skip = true;
            } else {
                n = std::min(n, (zt.fill_end[z] - off) / kSectorBytes);
            }
        }
        return n;
    }

    // QEMU's convert_co_read(): a piece may span several sources.
    Task<int> read(uint64_t sector_num, uint64_t nb_sectors, uint8_t* buf)
    {
        uint64_t single_read_until = 0;
        while (nb_sectors > 0) {
            size_t cur = select_source(sector_num);
            ConvertSource& src = sources_[cur];
            uint64_t in_src = sector_num - source_start_[cur];
            uint64_t offset = in_src * kSectorBytes;
            uint64_t n = std::min(nb_sectors, src.sectors - in_src);
            if (single_read_until > offset) {
                n = 1;
            }
            IOVector qiov(buf, n * kSectorBytes);
            int ret = co_await src.blk->co_preadv(offset, n * kSectorBytes, qiov);
            if (ret < 0) {
                if (!p_.salvage) {
                    co_return ret;
                }
                if (n > 1) {
                    // Find the bad sectors one by one.
                    single_read_until = offset + n * kSectorBytes;
                    continue;
                }
                if (!p_.quiet) {
                    error_report("warning: error while reading offset %" PRIu64 ": %s", offset,
                                 result_strerror(ret));
                }
                memset(buf, 0, kSectorBytes);
            }
            sector_num += n;
            nb_sectors -= n;
            buf += n * kSectorBytes;
        }
        co_return 0;
    }

    Task<int> write_data(uint64_t sector_num, uint64_t n, uint8_t* buf)
    {
        uint64_t bytes = n * kSectorBytes;
        co_await limiter_.admit(target_.ctx(), bytes);
        IOVector qiov(buf, bytes);
        unsigned flags = p_.write_flags | (p_.compressed ? BDRV_REQ_WRITE_COMPRESSED : 0u);
        co_return co_await target_.co_pwritev(sector_num * kSectorBytes, bytes, qiov, flags);
    }

    Task<int> write_zeroes(uint64_t sector_num, uint64_t n)
    {
        if (p_.has_zero_init && !in_sequential_zone(sector_num)) {
            co_return 0;
        }
        uint64_t bytes = n * kSectorBytes;
        co_await limiter_.admit(target_.ctx(), bytes);
        co_return co_await target_.co_pwrite_zeroes(sector_num * kSectorBytes, bytes,
                                                    p_.write_flags | BDRV_REQ_MAY_UNMAP);
    }

    // QEMU's convert_co_write(): data runs are written, zero runs inside
    // data are skipped like zero pieces.
    Task<int> write(uint64_t sector_num, uint64_t nb_sectors, uint8_t* buf, PieceStatus status)
    {
        if (status == PieceStatus::BackingFile) {
            co_return 0;
        }
        while (nb_sectors > 0) {
            uint64_t n = nb_sectors;
            if (p_.zoned) {
                bool skip;
                n = zoned_chunk(sector_num, nb_sectors, skip);
                if (skip) {
                    sector_num += n;
                    nb_sectors -= n;
                    buf += n * kSectorBytes;
                    continue;
                }
            }
            bool data = false;
            if (status == PieceStatus::Data) {
                if (!p_.min_sparse || p_.copy_verbatim) {
                    data = true;
                } else if (p_.compressed) {
                    data = !buffer_is_zero(buf, n * kSectorBytes);
                } else {
                    data = leading_run_has_data_min(buf, n, p_.min_sparse, sector_num,
                                                    p_.alignment, n);
                }
            }
            int ret = data ? co_await write_data(sector_num, n, buf)
                           : co_await write_zeroes(sector_num, n);
            if (ret < 0) {
                co_return ret;
            }
            sector_num += n;
            nb_sectors -= n;
            buf += n * kSectorBytes;
        }
        co_return 0;
    }

    void fail(int ret)
    {
        if (ret_ == kInProgress) {
            ret_ = ret;
        }
    }

    // QEMU's convert_co_do_copy(): one of the workers.
    Task<void> worker()
    {
        const BlockLimits& bl = target_.bs()->limits();
        AlignedBuffer buf(p_.buf_sectors * kSectorBytes,
                          std::max<size_t>(bl.opt_mem_alignment, 4096));
        for (;;) {
            co_await lock_.lock();
            if (ret_ != kInProgress || sector_num_ >= total_sectors_) {
                lock_.unlock();
                break;
            }
            int64_t len = co_await next_piece(sector_num_);
            if (len < 0) {
                lock_.unlock();
                fail(int(len));
                break;
            }
            uint64_t n = uint64_t(len);
            uint64_t sector_num = sector_num_;
            PieceStatus status = status_;
            if (!p_.min_sparse && status == PieceStatus::Zero) {
                n = std::min(n, p_.buf_sectors);  // written as data: fits the buffer
            }
            // The next worker may go on reading beyond this piece.
            sector_num_ += n;
            lock_.unlock();

            if (counts_for_progress(status)) {
                allocated_done_ += n;
                progress_.update(float(100.0 * double(allocated_done_) /
                                       double(allocated_sectors_)),
                                 0);
            }

            if (status == PieceStatus::Data) {
                int ret = co_await read(sector_num, n, buf.data());
                if (ret < 0) {
                    error_report("error while reading at byte %" PRIu64 ": %s",
                                 sector_num * kSectorBytes, result_strerror(ret));
                    fail(ret);
                }
            } else if (!p_.min_sparse && status == PieceStatus::Zero) {
                status = PieceStatus::Data;  // -S 0: zeroes are written as data
                memset(buf.data(), 0, n * kSectorBytes);
            }

            if (p_.in_order) {
                while (write_offset_ != sector_num && ret_ == kInProgress) {
                    co_await write_turn_.wait();
                }
            }
            if (ret_ == kInProgress) {
                int ret = co_await write(sector_num, n, buf.data(), status);
                if (ret < 0) {
                    error_report("error while writing at byte %" PRIu64 ": %s",
                                 sector_num * kSectorBytes, result_strerror(ret));
                    fail(ret);
                }
            }
            if (p_.in_order) {
                write_offset_ = sector_num + n;
                write_turn_.restart_all();
            }
        }
        running_--;
        if (p_.in_order) {
            write_turn_.restart_all();  // waiters must see a failure
        }
    }

    std::vector<ConvertSource>& sources_;
    BlockBackend& target_;
    ConvertParams p_;
    ProgressMeter& progress_;
    RateLimiter limiter_;
    std::vector<uint64_t> source_start_;  // first sector of each source
    uint64_t total_sectors_ = 0;

    // The walk over the sources, shared by the workers under lock_.
    CoMutex lock_;
    uint64_t sector_num_ = 0;           // the next piece starts here
    uint64_t sector_next_status_ = 0;   // status_ holds up to here
    PieceStatus status_ = PieceStatus::Data;

    uint64_t allocated_sectors_ = 0;
    uint64_t allocated_done_ = 0;
    int ret_ = kInProgress;  // the first error, else kInProgress
    unsigned running_ = 0;
    uint64_t write_offset_ = 0;  // in order: the next write must start here
    CoQueue write_turn_;
};

}  // namespace

int convert_copy(std::vector<ConvertSource>& sources, BlockBackend& target,
                 const ConvertParams& params, ProgressMeter& progress)
{
    return ConvertJob(sources, target, params, progress).run();
}

}  // namespace qemu::img
