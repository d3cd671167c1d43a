// crash-sim: a disk with a volatile write cache over the file child, for
// crash tests (include/block/crash-sim.h, docs/devel/crash-testing.rst).
#include "block/crash-sim.h"

#include <algorithm>
#include <cstring>

namespace qemu {

namespace {

constexpr uint64_t kSector = 512;

struct Yield {
    AioContext& ctx;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) { ctx.schedule(h); }
    void await_resume() const noexcept {}
};

// Counts a request as in flight for its lifetime (settle() needs none).
class InFlight {
public:
    explicit InFlight(unsigned& n) : n_(n) { n_++; }
    ~InFlight() { n_--; }
    InFlight(const InFlight&) = delete;
    InFlight& operator=(const InFlight&) = delete;

private:
    unsigned& n_;
};

}  // namespace

const char* crash_outcome_name(CrashOutcome outcome)
{
    switch (outcome) {
    case CrashOutcome::PowerLossCacheLost: return "power loss, cache lost";
    case CrashOutcome::PowerLossPrefix: return "power loss, a prefix of the cache written";
    case CrashOutcome::PowerLossSubset: return "power loss, a subset of the cache written";
    case CrashOutcome::PowerLossTorn: return "power loss, torn writes";
    case CrashOutcome::ProcessKilled: return "process killed";
    }
    return "?";
}

Task<int> CrashSimState::drv_open(QDict& options, Error& err)
{
    auto seed = take_number(options, "seed", 0, err);
    auto max_delay = take_number(options, "max-delay", 0, err);
    auto crash_after = take_number(options, "crash-after", 0, err);
    auto fail_at = take_number(options, "fail-at", 0, err);
    auto fail_errno = take_number(options, "fail-errno", EIO, err);
    auto full_after = take_number(options, "full-after", 0, err);
    if (!seed || !max_delay || !crash_after || !fail_at || !fail_errno || !full_after) {
        co_return -EINVAL;
    }
    if (*max_delay > 1000) {
        err.set("crash-sim: max-delay must be at most 1000");
        co_return -EINVAL;
    }
    if (*fail_errno == 0 || *fail_errno >= 4096) {
        err.set("crash-sim: fail-errno must be an errno value (1 to 4095)");
        co_return -EINVAL;
    }
    if (!co_await open_child("file", options, false, err)) {
        co_return -EINVAL;
    }
    rng_.seed(*seed);
    max_delay_ = uint32_t(*max_delay);
    crash_at_ = *crash_after;
    fail_at_ = *fail_at;
    fail_errno_ = int(*fail_errno);
    full_after_ = *full_after;
    set_total_bytes(file()->bs->total_bytes());
    co_return 0;
}

void CrashSimState::crash()
{
    if (crashed_) {
        return;
    }
    crashed_ = true;
    stats_.pending_at_crash = pending_.size();
    stats_.completed_at_crash = size_t(
        std::count_if(pending_.begin(), pending_.end(), [](const ChangePtr& c) { return c->completed; }));
}

int CrashSimState::admit(bool change)
{
    stats_.requests++;
    if (crash_at_ && stats_.requests >= crash_at_) {
        crash();
    }
    if (crashed_) {
        return -EIO;
    }
    if (fail_at_ && stats_.requests == fail_at_) {
        stats_.injected++;
        return -fail_errno_;
    }
    if (full_after_ && stats_.requests >= full_after_) {
        full_ = true;
    }
    if (change && full_) {
        stats_.injected++;
        return -ENOSPC;
    }
    return 0;
}

Task<void> CrashSimState::delay()
{
    if (max_delay_ == 0) {
        co_return;
    }
    uint32_t n = std::uniform_int_distribution<uint32_t>(0, max_delay_)(rng_);
    for (uint32_t i = 0; i < n; i++) {
        co_await Yield{ctx()};
    }
}

void CrashSimState::overlay(const Change& c, uint64_t offset, uint64_t bytes, uint8_t* buf)
{
    uint64_t end = offset + bytes;
    uint64_t from = std::max(offset, c.offset);
    uint64_t to = c.kind == Change::Kind::Truncate ? end : std::min(end, c.offset + c.bytes);
    if (from >= to) {
        return;
    }
    if (c.kind == Change::Kind::Write) {
        memcpy(buf + (from - offset), c.data.data() + (from - c.offset), to - from);
    } else {
        // Zeroes, discards and what a shrink cut off all read as zeroes.
        memset(buf + (from - offset), 0, to - from);
    }
}

Task<int> CrashSimState::drv_preadv(uint64_t offset, uint64_t bytes, IOVector& qiov,
                                    size_t qiov_offset, unsigned)
{
    if (int ret = admit(false); ret < 0) {
        co_return ret;
    }
    InFlight guard(in_flight_);
    // The changes are taken before the child is read: one that a flush
    // writes to the child meanwhile is then applied twice, which is harmless,
    // rather than not at all.
    std::vector<ChangePtr> changes;
    for (const ChangePtr& c : pending_) {
        if (c->offset < offset + bytes && (c->kind == Change::Kind::Truncate || offset < c->offset + c->bytes)) {
            changes.push_back(c);
        }
    }
    AlignedBuffer buf(bytes, 4096);
    IOVector q(buf.data(), bytes);
    int ret = co_await bdrv_co_preadv(file(), offset, bytes, q);
    if (ret < 0) {
        co_return ret;
    }
    for (const ChangePtr& c : changes) {
        overlay(*c, offset, bytes, buf.data());
    }
    co_await delay();
    if (crashed_) {
        co_return -EIO;
    }
    qiov.from_buf(qiov_offset, buf.data(), bytes);
    co_return 0;
}

Task<int> CrashSimState::submit(ChangePtr change)
{
    InFlight guard(in_flight_);
    pending_.push_back(change);
    co_await delay();
    if (crashed_) {
        co_return -EIO;  // in flight at the crash: never acknowledged
    }
    change->completed = true;
    co_return 0;
}

Task<int> CrashSimState::drv_pwritev(uint64_t offset, uint64_t bytes, IOVector& qiov,
                                     size_t qiov_offset, unsigned)
{
    if (int ret = admit(true); ret < 0) {
        co_return ret;
    }
    auto c = std::make_shared<Change>(Change{Change::Kind::Write, offset, bytes, {}});
    c->data.resize(bytes);
    qiov.to_buf(qiov_offset, c->data.data(), bytes);
    co_return co_await submit(std::move(c));
}

Task<int> CrashSimState::drv_pwrite_zeroes(uint64_t offset, uint64_t bytes, unsigned)
{
    if (int ret = admit(true); ret < 0) {
        co_return ret;
    }
    co_return co_await submit(std::make_shared<Change>(Change{Change::Kind::Zero, offset, bytes, {}}));
}

Task<int> CrashSimState::drv_pdiscard(uint64_t offset, uint64_t bytes)
{
    // A discard punches a hole: it reads back as zeroes, once it is durable.
    co_return co_await drv_pwrite_zeroes(offset, bytes, 0);
}

Task<int> CrashSimState::drv_truncate(uint64_t offset, bool, PreallocMode prealloc, unsigned,
                                      Error& err)
{
    if (int ret = admit(offset > total_bytes()); ret < 0) {
        err.set_errno(-ret, "crash-sim: cannot truncate");
        co_return ret;
    }
    auto c = std::make_shared<Change>(Change{Change::Kind::Truncate, offset, 0, {}});
    c->prealloc = prealloc;
    set_total_bytes(offset);
    int ret = co_await submit(std::move(c));
    if (ret < 0) {
        err.set("crash-sim: the disk has crashed");
    }
    co_return ret;
}

Task<int> CrashSimState::apply(const Change& c, const std::vector<bool>* sectors)
{
    if (c.kind == Change::Kind::Truncate) {
        Error err;
        co_return co_await bdrv_co_truncate(file(), c.offset, false, c.prealloc, 0, err);
    }
    // Runs of the change's 512-byte sectors (all of them without a mask).
    uint64_t first = c.offset / kSector;
    uint64_t end = c.offset + c.bytes;
    uint64_t n = (end + kSector - 1) / kSector - first;
    uint64_t i = 0;
    while (i < n) {
        if (sectors && !(*sectors)[i]) {
            i++;
            continue;
        }
        uint64_t j = i + 1;
        while (j < n && (!sectors || (*sectors)[j])) {
            j++;
        }
        uint64_t from = std::max(c.offset, (first + i) * kSector);
        uint64_t to = std::min(end, (first + j) * kSector);
        int ret;
        if (c.kind == Change::Kind::Write) {
            IOVector q(const_cast<uint8_t*>(c.data.data()) + (from - c.offset), to - from);
            ret = co_await bdrv_co_pwritev(file(), from, to - from, q);
        } else {
            ret = co_await bdrv_co_pwrite_zeroes(file(), from, to - from, 0);
        }
        if (ret < 0) {
            co_return ret;
        }
        i = j;
    }
    co_return 0;
}

Task<int> CrashSimState::drv_flush_to_os()
{
    if (int ret = admit(false); ret < 0) {
        co_return ret;
    }
    stats_.flushes++;
    InFlight guard(in_flight_);
    // A flush covers what had completed when it arrived.
    std::vector<ChangePtr> done;
    for (const ChangePtr& c : pending_) {
        if (c->completed) {
            done.push_back(c);
        }
    }
    co_await delay();
    co_await transfer_lock_.lock();
    int ret = 0;
    for (const ChangePtr& c : done) {
        if (crashed_) {
            ret = -EIO;
            break;
        }
        if (c->transferred) {
            continue;  // a later flush got there first
        }
        ret = co_await apply(*c);
        if (ret < 0) {
            break;
        }
        c->transferred = true;
    }
    pending_.remove_if([](const ChangePtr& c) { return c->transferred; });
    transfer_lock_.unlock();
    co_return crashed_ ? -EIO : ret;
}

Task<int> CrashSimState::settle(CrashOutcome outcome)
{
    if (!crashed_) {
        co_return -EINVAL;
    }
    if (in_flight_) {
        co_return -EBUSY;
    }
    std::vector<ChangePtr> changes(pending_.begin(), pending_.end());
    pending_.clear();
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    double p = unit(rng_);
    size_t prefix = std::uniform_int_distribution<size_t>(0, changes.size())(rng_);
    // Surviving changes are applied in arrival order: a sector can hold any
    // version written since the last flush, but an older version never
    // replaces a newer one that reached the disk (its cache kept only the
    // newest), which a subset of the changes in order models exactly.
    for (size_t i = 0; i < changes.size(); i++) {
        const Change& c = *changes[i];
        bool whole = false;
        bool torn = false;
        switch (outcome) {
        case CrashOutcome::PowerLossCacheLost:
            break;
        case CrashOutcome::PowerLossPrefix:
            whole = i < prefix;
            break;
        case CrashOutcome::PowerLossSubset:
            whole = unit(rng_) < p;
            break;
        case CrashOutcome::PowerLossTorn:
            torn = c.kind != Change::Kind::Truncate;
            whole = !torn && unit(rng_) < p;
            break;
        case CrashOutcome::ProcessKilled:
            if (c.completed) {
                whole = true;
            } else {
                int pick = std::uniform_int_distribution<int>(0, 2)(rng_);
                whole = pick == 1;
                torn = pick == 2 && c.kind != Change::Kind::Truncate;
            }
            break;
        }
        int ret = 0;
        if (whole) {
            ret = co_await apply(c);
            stats_.survivors++;
        } else if (torn) {
            uint64_t first = c.offset / kSector;
            uint64_t n = (c.offset + c.bytes + kSector - 1) / kSector - first;
            std::vector<bool> sectors(n);
            bool any = false;
            for (uint64_t s = 0; s < n; s++) {
                sectors[s] = unit(rng_) < p;
                any |= sectors[s];
            }
            if (any) {
                ret = co_await apply(c, &sectors);
                stats_.survivors++;
            }
        }
        if (ret < 0) {
            co_return ret;
        }
    }
    co_return 0;
}

Task<int> CrashSimState::drv_block_status(bool, uint64_t offset, uint64_t bytes, BlockStatus& out)
{
    // Pending changes make the child's allocation meaningless: all data.
    out.pnum = bytes;
    out.flags = BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID;
    out.map = offset;
    out.file = this;
    co_return 0;
}

void CrashSimState::drv_refresh_limits(BlockLimits& bl)
{
    // A disk writes whole sectors; torn writes tear between them.
    bl.request_alignment = std::max<uint32_t>(bl.request_alignment, kSector);
}

namespace {

class CrashSimDriver : public BlockDriver {
public:
    std::string_view name() const override { return "crash-sim"; }
    const OptionSchema& open_schema() const override
    {
        static const OptionSchema schema = {
            {"seed", OptionType::Number, "Seed of the random delays and crash outcomes", "0"},
            {"max-delay", OptionType::Number,
             "Most event loop iterations a request waits before completing", "0"},
            {"crash-after", OptionType::Number,
             "Crash when this request arrives (counted from 1; 0: never)", "0"},
            {"fail-at", OptionType::Number,
             "Fail this request (counted from 1) without crashing (0: none)", "0"},
            {"fail-errno", OptionType::Number, "The errno fail-at fails with", "5"},
            {"full-after", OptionType::Number,
             "From this request on, writes fail with ENOSPC (0: never)", "0"},
        };
        return schema;
    }
    std::shared_ptr<BlockDriverState> new_node(AioContext& ctx) const override
    {
        return std::make_shared<CrashSimState>(*this, ctx);
    }
};

}  // namespace

const BlockDriver& bdrv_crash_sim_driver()
{
    static const CrashSimDriver driver;
    return driver;
}

}  // namespace qemu
