// Crash consistency of zoned qcow2 images (docs/devel/crash-testing.rst).
//
// Each scenario: a small random zoned image, then one or two rounds of a
// random workload at a random queue depth (sequential writes, zone appends,
// conventional writes, FUA, flushes, zone management and fault injection,
// reads) on top of crash-sim, a crash at a random request and a random
// CrashOutcome settled onto the media.  After each crash the surviving image
// is checked: it opens without repair (a dirty image with lazy refcounts is
// sometimes crashed again while being repaired), qemu-img check's code finds
// no corruption, and every zone's write pointer and contents agree with what
// the workload was told.  The second round starts from what the first crash
// left.  Last, the scenario writes on from the write pointers, finishes
// zones, closes, reopens and checks again.
//
// QZ_CRASH_SEED=<seed> reruns one scenario (failures print theirs);
// QZ_CRASH_POINTS=<n> changes how many crashes run (default 1000);
// QZ_CRASH_KEEP=<file> saves the image as the last crash left it;
// QZ_CRASH_VERBOSE=1 prints a line per failing scenario, =2 one per scenario.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <random>
#include <sstream>

#include "block/block-backend.h"
#include "block/crash-sim.h"
#include "qemu/units.h"

using namespace qemu;

namespace {

constexpr uint64_t kSector = 512;

uint64_t splitmix(uint64_t& x)
{
    uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// --- The media ----------------------------------------------------------------
// Named in-memory files ("crash-test-store:NAME") that outlive the node
// graphs opened on them.  The driver completes every request at once, so a
// run depends on its seed only; images are created in memory too.

std::map<std::string, std::vector<uint8_t>>& stores()
{
    static std::map<std::string, std::vector<uint8_t>> s;
    return s;
}

class StoreState : public BlockDriverState {
public:
    using BlockDriverState::BlockDriverState;

    Task<int> drv_open(QDict& options, Error& err) override
    {
        std::string name = take_string(options, "filename");
        auto it = stores().find(name);
        if (it == stores().end()) {
            err.set("No store '%s'", name.c_str());
            co_return -ENOENT;
        }
        data_ = &it->second;
        set_total_bytes(data_->size());
        co_return 0;
    }
    Task<int> drv_preadv(uint64_t offset, uint64_t bytes, IOVector& qiov, size_t qiov_offset,
                         unsigned) override
    {
        uint64_t have = offset < data_->size() ? std::min<uint64_t>(bytes, data_->size() - offset) : 0;
        qiov.from_buf(qiov_offset, data_->data() + offset, have);
        qiov.memset(qiov_offset + have, 0, bytes - have);
        co_return 0;
    }
    Task<int> drv_pwritev(uint64_t offset, uint64_t bytes, IOVector& qiov, size_t qiov_offset,
                          unsigned) override
    {
        grow(offset + bytes);
        qiov.to_buf(qiov_offset, data_->data() + offset, bytes);
        co_return 0;
    }
    Task<int> drv_pwrite_zeroes(uint64_t offset, uint64_t bytes, unsigned) override
    {
        grow(offset + bytes);
        memset(data_->data() + offset, 0, bytes);
        co_return 0;
    }
    Task<int> drv_truncate(uint64_t offset, bool, PreallocMode, unsigned, Error&) override
    {
        data_->resize(offset);
        set_total_bytes(offset);
        co_return 0;
    }

private:
    void grow(uint64_t end)
    {
        if (end > data_->size()) {
            data_->resize(end);
        }
    }
    std::vector<uint8_t>* data_ = nullptr;
};

class StoreDriver : public BlockDriver {
public:
    std::string_view name() const override { return "crash-test-store"; }
    bool is_protocol() const override { return true; }
    std::string_view protocol_prefix() const override { return "crash-test-store"; }
    const OptionSchema& open_schema() const override
    {
        static const OptionSchema schema = {{"filename", OptionType::String, "", ""}};
        return schema;
    }
    const OptionSchema* create_schema() const override
    {
        static const OptionSchema schema;
        return &schema;
    }
    Task<int> co_create(const std::string& filename, QDict&, AioContext&, Error&) const override
    {
        stores()[filename.substr(name().size() + 1)].clear();
        co_return 0;
    }
    std::shared_ptr<BlockDriverState> new_node(AioContext& ctx) const override
    {
        return std::make_shared<StoreState>(*this, ctx);
    }
};

void register_store_driver()
{
    static const StoreDriver driver;
    bdrv_init();
    bdrv_register(&driver);
}

// Sends this thread's stderr to a file while alive (what a crashed close and
// qemu-img check print), so it can be shown with a failure.
class StderrCapture {
public:
    StderrCapture()
    {
        char tmpl[] = "/tmp/qz-crash-stderr-XXXXXX";
        fd_ = mkstemp(tmpl);
        unlink(tmpl);
        fflush(stderr);
        saved_ = dup(2);
        dup2(fd_, 2);
    }
    ~StderrCapture()
    {
        fflush(stderr);
        dup2(saved_, 2);
        close(saved_);
        close(fd_);
    }
    std::string text() const
    {
        fflush(stderr);
        std::string out;
        char buf[4096];
        ssize_t n;
        off_t off = 0;
        while ((n = pread(fd_, buf, sizeof(buf), off)) > 0 && out.size() < 16384) {
            out.append(buf, size_t(n));
            off += n;
        }
        return out;
    }

private:
    int fd_ = -1;
    int saved_ = -1;
};

// --- Image geometry -------------------------------------------------------------

struct Geometry {
    uint32_t cluster_size;
    uint64_t zone_size;
    uint64_t zone_capacity;
    uint64_t size;
    uint32_t nr_zones;
    uint32_t conventional;
    uint32_t max_open;
    uint32_t max_active;
    uint64_t max_append;
    bool lazy_refcounts;

    static Geometry random(std::mt19937_64& rng)
    {
        auto pick = [&](uint64_t lo, uint64_t hi) {
            return std::uniform_int_distribution<uint64_t>(lo, hi)(rng);
        };
        Geometry g;
        static const uint32_t clusters[] = {512, 4096, 4096, 16384, 65536};
        g.cluster_size = clusters[pick(0, 4)];
        do {
            g.zone_size = 64 * KiB << pick(0, 3);
        } while (g.zone_size < 2 * g.cluster_size);
        g.nr_zones = uint32_t(pick(4, 10));
        g.size = g.nr_zones * g.zone_size;
        if (pick(0, 4) == 0) {
            g.size -= g.zone_size / 2;  // a short last zone
        }
        g.zone_capacity = g.zone_size;
        if (pick(0, 2) == 0) {
            g.zone_capacity -= kSector * pick(1, g.zone_size / (4 * kSector));
        }
        static const uint32_t conventional[] = {0, 0, 1, 2};
        g.conventional = conventional[pick(0, 3)];
        uint32_t seq = g.nr_zones - g.conventional;
        g.max_active = pick(0, 3) == 0 ? 0 : uint32_t(pick(1, seq));
        g.max_open = g.max_active ? uint32_t(pick(1, g.max_active)) : (pick(0, 1) ? uint32_t(pick(1, seq)) : 0);
        // Appends up to 32 KiB, smaller than the smallest zone's capacity.
        uint64_t last_cap = std::min(g.zone_capacity, g.size - uint64_t(g.nr_zones - 1) * g.zone_size);
        g.max_append = std::min<uint64_t>(kSector * pick(1, 64), (last_cap - kSector) / kSector * kSector);
        g.lazy_refcounts = pick(0, 6) == 0;
        return g;
    }

    std::string create_options() const
    {
        std::ostringstream o;
        o << "size=" << size << ",cluster_size=" << cluster_size << ",zone.mode=host-managed"
          << ",zone.size=" << zone_size << ",zone.capacity=" << zone_capacity
          << ",zone.conventional_zones=" << conventional << ",zone.max_open_zones=" << max_open
          << ",zone.max_active_zones=" << max_active << ",zone.max_append_bytes=" << max_append;
        if (lazy_refcounts) {
            o << ",lazy_refcounts=on";
        }
        return o.str();
    }
};

// Creates the image with our qcow2 driver in store `name`.
void create_image(const Geometry& g, const std::string& name)
{
    AioContext ctx;
    Error err;
    QDict o;
    REQUIRE(keyval_parse(o, g.create_options(), nullptr, err));
    int ret = run_sync(ctx, bdrv_co_create(*bdrv_find_driver("qcow2"), "crash-test-store:" + name, o, ctx, err));
    INFO(g.create_options() << ": " << err.message);
    REQUIRE(ret == 0);
}

// The contents of one sector written by write `id` (0: never written).
void fill_sector(uint8_t* p, uint32_t id, uint64_t sector)
{
    if (id == 0) {
        memset(p, 0, kSector);
        return;
    }
    uint64_t x = (uint64_t(id) << 40) ^ sector;
    for (size_t i = 0; i < kSector; i += 8) {
        uint64_t v = splitmix(x);
        memcpy(p + i, &v, 8);
    }
}

bool sector_is(const uint8_t* p, uint32_t id, uint64_t sector)
{
    uint8_t want[kSector];
    fill_sector(want, id, sector);
    return memcmp(p, want, kSector) == 0;
}

bool is_zone_errno(int ret)
{
    return zone_error_of(ret) != ZoneError::None;
}

// --- What the workload was told ---------------------------------------------------

constexpr uint64_t kNever = UINT64_MAX;
// The "write" that left the bytes a round found on the image (a round after
// a crash starts from what that crash left).
constexpr uint32_t kBaseline = UINT32_MAX - 1;

struct WriteRecord {
    enum class State { InFlight, Done, Rejected, Unknown };
    uint32_t zone;
    uint64_t life;  // the zone's life (resets) it was written in
    uint64_t start;
    uint64_t end;
    bool fua;
    State state = State::InFlight;
    uint64_t done_seq = kNever;
    bool durable = false;
};

struct ZoneModel {
    bool conventional = false;
    uint64_t start = 0;
    uint64_t length = 0;
    uint64_t cap_end = 0;
    // Sequential zones, for the current life (a reset starts a new one).
    uint64_t life = 0;
    uint64_t base_end = 0;  // the baseline's write pointer
    std::vector<uint32_t> ids;  // per sector: the write that put data there
    std::vector<uint32_t> life_writes;
    uint64_t lb = 0;  // the write pointer may not come back below this
    bool finish_issued = false;
    uint64_t finish_done_seq = kNever;
    int resets_pending = 0;
    int mgmt_pending = 0;
    // Fault injection: the zone was made read-only or offline (issued; done
    // once the operation completed, which makes it durable).  Such zones
    // get no further requests.
    BlockZoneState condition = BlockZoneState::Empty;
    bool condition_done = false;
    bool has_condition() const { return condition != BlockZoneState::Empty; }
    int reads_pending = 0;
    // Conventional zones, per sector: the version known durable and the
    // versions written since (any of which may survive).
    std::vector<uint32_t> durable;
    std::vector<std::vector<uint32_t>> later;
    std::vector<uint32_t> busy;  // a write or read in flight
};

class Workload {
public:
    // `baseline`: the image's contents when the round starts (empty: a new
    // image).
    Workload(uint64_t seed, const Geometry& g, BlockBackend& blk, CrashSimState& sim, AioContext& ctx,
             const std::vector<uint8_t>& baseline)
        : rng_(seed), g_(g), blk_(blk), sim_(sim), ctx_(ctx), baseline_(baseline)
    {
        for (uint32_t z = 0; z < g.nr_zones; z++) {
            ZoneModel m;
            m.conventional = z < g.conventional;
            m.start = uint64_t(z) * g.zone_size;
            m.length = std::min(g.zone_size, g.size - m.start);
            m.cap_end = m.start + (m.conventional ? m.length : std::min(g.zone_capacity, m.length));
            uint64_t sectors = m.length / kSector;
            if (m.conventional) {
                m.durable.assign(sectors, 0);
                m.later.resize(sectors);
                m.busy.assign(sectors, 0);
            } else {
                m.ids.assign(sectors, 0);
                m.lb = m.base_end = m.start;
            }
            zones_.push_back(std::move(m));
        }
        if (!baseline_.empty()) {
            // What is on disk now is durable: it survived a crash.
            for (uint32_t z = 0; z < g.nr_zones; z++) {
                ZoneModel& m = zones_[z];
                if (m.conventional) {
                    std::fill(m.durable.begin(), m.durable.end(), kBaseline);
                    continue;
                }
                BlockZoneDescriptor d = report(z);
                if (d.state == BlockZoneState::ReadOnly || d.state == BlockZoneState::Offline) {
                    m.condition = d.state;
                    m.condition_done = true;
                }
                m.lb = m.base_end = d.state == BlockZoneState::Full ? m.cap_end : d.wp;
                std::fill(m.ids.begin(), m.ids.begin() + (m.base_end - m.start) / kSector, kBaseline);
            }
        }
        qd_ = std::array<unsigned, 4>{1, 4, 16, 32}[pick(0, 3)];
        // Rare flushes leave much in the cache when the crash comes.
        flush_weight_ = std::array<unsigned, 3>{2, 6, 14}[pick(0, 2)];
        fua_one_in_ = std::array<unsigned, 3>{0, 20, 6}[pick(0, 2)];
    }

    void run(unsigned ops)
    {
        for (unsigned i = 0; i < ops && !sim_.crashed() && failures_.empty(); i++) {
            while (in_flight_ >= qd_ && !sim_.crashed()) {
                poll();
            }
            if (sim_.crashed()) {
                break;
            }
            issue_one();
        }
        while (in_flight_ > 0 && failures_.empty()) {
            poll();
        }
    }

    // Checks the reopened image against the model.
    void verify_after_crash(BlockBackend& blk, std::vector<uint8_t>& image);

    const std::vector<std::string>& failures() const { return failures_; }
    std::string trace() const
    {
        std::string out;
        for (const std::string& line : trace_) {
            out += line + "\n";
        }
        return out;
    }
    unsigned queue_depth() const { return qd_; }
    uint32_t next_id() const { return uint32_t(writes_.size() + 1); }

private:
    uint64_t pick(uint64_t lo, uint64_t hi) { return std::uniform_int_distribution<uint64_t>(lo, hi)(rng_); }
    bool matches(const uint8_t* p, uint32_t id, uint64_t sector) const
    {
        if (id == kBaseline) {
            return memcmp(p, baseline_.data() + sector * kSector, kSector) == 0;
        }
        return sector_is(p, id, sector);
    }
    void fail(const std::string& what)
    {
        if (failures_.size() < 20) {
            failures_.push_back(what);
        }
    }
    void log(const std::string& line)
    {
        trace_.push_back(line);
        if (trace_.size() > 400) {
            trace_.pop_front();
        }
    }
    // A host error (not a zone error) that crash-sim injected: the request
    // failed and, being a zone operation, changed nothing.
    bool host_error_injected(int ret) const
    {
        return ret < 0 && !is_zone_errno(ret) && !sim_.crashed() && sim_.stats().injected > 0;
    }
    void poll()
    {
        if (!ctx_.poll(false)) {
            fail("deadlock: " + std::to_string(in_flight_) + " requests in flight and nothing to run");
            in_flight_ = 0;  // give up on them
        }
    }
    BlockZoneDescriptor report(uint32_t z)
    {
        BlockZoneDescriptor d;
        uint32_t n = 1;
        int ret = run_sync(ctx_, blk_.co_zone_report(zones_[z].start, n, &d));
        if (ret < 0 || n != 1) {
            fail("zone report failed: " + std::to_string(ret));
        }
        return d;
    }

    void issue_one();
    void issue_seq_write(bool append);
    void issue_conventional_write();
    void issue_read();
    void issue_flush();
    void issue_mgmt();

    Task<void> do_write(uint32_t id, bool append, std::vector<uint8_t> data);
    Task<void> do_read(uint32_t z, uint64_t offset, uint64_t bytes, std::vector<uint32_t> expect);
    Task<void> do_flush(uint64_t issue_seq);
    Task<void> do_mgmt(BlockZoneOp op, uint32_t first, uint32_t last);

    void make_durable(uint32_t id);
    void write_done(uint32_t id, int ret, bool maybe_done = false);
    std::vector<uint8_t> pattern(uint32_t id, uint64_t start, uint64_t end)
    {
        std::vector<uint8_t> data(end - start);
        for (uint64_t off = start; off < end; off += kSector) {
            fill_sector(data.data() + (off - start), id, off / kSector);
        }
        return data;
    }

    std::mt19937_64 rng_;
    Geometry g_;
    BlockBackend& blk_;
    CrashSimState& sim_;
    AioContext& ctx_;
    const std::vector<uint8_t> baseline_;
    unsigned qd_;
    unsigned flush_weight_;
    unsigned fua_one_in_;  // 0: no FUA writes
    unsigned in_flight_ = 0;
    uint64_t seq_ = 0;  // completions so far
    std::vector<ZoneModel> zones_;
    std::vector<WriteRecord> writes_;  // write id - 1
    std::vector<uint32_t> undurable_;  // done, not known durable
    std::vector<std::string> failures_;
    std::deque<std::string> trace_;
};

void Workload::issue_one()
{
    // Weights: writes 38, appends 15, conventional writes 10, reads 10,
    // flushes flush_weight_, zone management 14.
    uint64_t r = pick(0, 86 + flush_weight_);
    if (r < 38) {
        issue_seq_write(false);
    } else if (r < 53) {
        issue_seq_write(true);
    } else if (r < 63) {
        if (g_.conventional) {
            issue_conventional_write();
        }
    } else if (r < 73) {
        issue_read();
    } else if (r < 87) {
        issue_mgmt();
    } else {
        issue_flush();
    }
}

void Workload::issue_seq_write(bool append)
{
    // Mostly zones that are already active, so that the limits leave room.
    std::vector<uint32_t> candidates, active;
    for (uint32_t z = g_.conventional; z < g_.nr_zones; z++) {
        // Writes race open, close and finish (a write admitted first belongs
        // to the zone being finished); whether one lands before or after a
        // reset cannot be told, so zones being reset get none.
        const ZoneModel& m = zones_[z];
        if (m.resets_pending || m.has_condition()) {
            continue;
        }
        BlockZoneDescriptor d = report(z);
        if (d.state == BlockZoneState::Full) {
            continue;
        }
        candidates.push_back(z);
        if (d.state != BlockZoneState::Empty) {
            active.push_back(z);
        }
    }
    if (candidates.empty()) {
        return;
    }
    const std::vector<uint32_t>& from = !active.empty() && pick(0, 3) ? active : candidates;
    uint32_t z = from[pick(0, from.size() - 1)];
    ZoneModel& m = zones_[z];
    uint64_t wp = report(z).wp;
    uint64_t room = (m.cap_end - wp) / kSector;
    static const uint64_t sizes[] = {1, 8, 32, 128};
    uint64_t most = std::min(room, append ? g_.max_append / kSector : sizes[pick(0, 3)]);
    uint64_t len = pick(1, most) * kSector;
    uint32_t id = next_id();
    bool fua = fua_one_in_ && pick(1, fua_one_in_) == 1;
    writes_.push_back({z, m.life, wp, wp + len, fua});
    // Admission happens when the request is submitted, so the data lands at
    // the write pointer seen now (for appends too).
    for (uint64_t off = wp; off < wp + len; off += kSector) {
        m.ids[(off - m.start) / kSector] = id;
    }
    m.life_writes.push_back(id);
    log(std::string(append ? "append" : "write") + " #" + std::to_string(id) + " zone " + std::to_string(z) +
        " [" + std::to_string(wp) + ", +" + std::to_string(len) + ")" + (fua ? " FUA" : ""));
    in_flight_++;
    co_spawn(do_write(id, append, pattern(id, wp, wp + len)));
}

void Workload::issue_conventional_write()
{
    uint32_t z = uint32_t(pick(0, g_.conventional - 1));
    ZoneModel& m = zones_[z];
    uint64_t sectors = m.length / kSector;
    uint64_t first = pick(0, sectors - 1);
    uint64_t n = std::min(sectors - first, pick(1, 64));
    for (uint64_t s = first; s < first + n; s++) {
        if (m.busy[s]) {
            return;  // overlapping requests would leave the outcome open
        }
    }
    uint32_t id = next_id();
    bool fua = fua_one_in_ && pick(1, fua_one_in_) == 1;
    uint64_t start = m.start + first * kSector;
    writes_.push_back({z, 0, start, start + n * kSector, fua});
    for (uint64_t s = first; s < first + n; s++) {
        m.busy[s] = id;
        m.later[s].push_back(id);
    }
    log("cwrite #" + std::to_string(id) + " zone " + std::to_string(z) + " [" + std::to_string(start) +
        ", +" + std::to_string(n * kSector) + ")" + (fua ? " FUA" : ""));
    in_flight_++;
    co_spawn(do_write(id, false, pattern(id, start, start + n * kSector)));
}

Task<void> Workload::do_write(uint32_t id, bool append, std::vector<uint8_t> data)
{
    // (a copy: writes_ grows while this runs)
    const WriteRecord w = writes_[id - 1];
    IOVector q(data.data(), data.size());
    unsigned flags = w.fua ? unsigned(BDRV_REQ_FUA) : 0u;
    int ret;
    if (append) {
        uint64_t pos = zones_[w.zone].start;
        ret = co_await blk_.co_zone_append(pos, q, flags);
        if (ret >= 0 && pos != w.start) {
            fail("append #" + std::to_string(id) + " landed at " + std::to_string(pos) +
                 ", the write pointer at submission was " + std::to_string(w.start));
        }
    } else {
        ret = co_await blk_.co_pwritev(w.start, data.size(), q, flags);
    }
    bool maybe_done = false;
    if (w.fua && host_error_injected(ret) && !zones_[w.zone].conventional) {
        // Failed: its data write (undone, or doomed by an earlier failed
        // write: the write pointer went back below it), or the flush after
        // its data (done, not known durable).
        BlockZoneDescriptor d;
        uint32_t n = 1;
        const ZoneModel& m = zones_[w.zone];
        maybe_done = co_await blk_.co_zone_report(m.start, n, &d) == 0 && d.wp > w.start &&
                     m.ids[(w.start - m.start) / kSector] == id;
    }
    write_done(id, ret, maybe_done);
    in_flight_--;
}

void Workload::write_done(uint32_t id, int ret, bool maybe_done)
{
    WriteRecord& w = writes_[id - 1];
    ZoneModel& m = zones_[w.zone];
    if (m.conventional) {
        for (uint64_t off = w.start; off < w.end; off += kSector) {
            m.busy[(off - m.start) / kSector] = 0;
        }
    }
    if (ret >= 0) {
        w.state = WriteRecord::State::Done;
        w.done_seq = ++seq_;
        log("done #" + std::to_string(id));
        if (w.fua) {
            make_durable(id);
        } else {
            undurable_.push_back(id);
        }
        return;
    }
    bool injected = host_error_injected(ret);
    if ((!is_zone_errno(ret) && !injected) || sim_.crashed()) {
        if (!sim_.crashed()) {
            fail("write #" + std::to_string(id) + " failed: " + result_strerror(ret));
        }
        w.state = WriteRecord::State::Unknown;  // may or may not be on disk
        log("failed #" + std::to_string(id) + " (crash)");
        return;
    }
    if (injected && (m.conventional || maybe_done)) {
        // Any part of it may be there: its sectors stay unknown.
        w.state = WriteRecord::State::Unknown;
        for (uint64_t off = w.start; m.conventional && off < w.end; off += kSector) {
            m.busy[(off - m.start) / kSector] = UINT32_MAX;
        }
        log("failed #" + std::to_string(id) + ": " + result_strerror(ret));
        return;
    }
    // Refused at admission (resources, full zone), or failed by an
    // injected error and undone (it, and the writes after it in its zone):
    // nothing was written below the write pointer.
    w.state = WriteRecord::State::Rejected;
    log("refused #" + std::to_string(id) + ": " + result_strerror(ret));
    if (m.conventional) {
        fail("conventional write #" + std::to_string(id) + " refused: " + result_strerror(ret));
        return;
    }
    for (uint64_t off = w.start; off < w.end; off += kSector) {
        uint32_t& s = m.ids[(off - m.start) / kSector];
        if (s == id) {
            s = 0;
        }
    }
}

void Workload::make_durable(uint32_t id)
{
    WriteRecord& w = writes_[id - 1];
    ZoneModel& m = zones_[w.zone];
    w.durable = true;
    if (!m.conventional) {
        if (w.life == m.life) {
            m.lb = std::max(m.lb, w.end);
        }
        return;
    }
    for (uint64_t off = w.start; off < w.end; off += kSector) {
        uint64_t s = (off - m.start) / kSector;
        auto& later = m.later[s];
        auto it = std::find(later.begin(), later.end(), id);
        if (it != later.end()) {
            later.erase(later.begin(), it + 1);
            m.durable[s] = id;
        }
    }
}

void Workload::issue_read()
{
    uint32_t z = uint32_t(pick(0, g_.nr_zones - 1));
    ZoneModel& m = zones_[z];
    if (m.resets_pending || m.has_condition()) {
        return;
    }
    uint64_t sectors = m.length / kSector;
    uint64_t first = pick(0, sectors - 1);
    uint64_t n = std::min(sectors - first, pick(1, 256));
    // What can be known now: data of finished writes; -1: anything.
    std::vector<uint32_t> expect(n, UINT32_MAX);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t s = first + i;
        if (m.conventional) {
            if (!m.busy[s]) {
                expect[i] = m.later[s].empty() ? m.durable[s] : m.later[s].back();
                m.busy[s] = UINT32_MAX;
            }
        } else if (uint32_t id = m.ids[s];
                   id == kBaseline || (id && writes_[id - 1].state == WriteRecord::State::Done)) {
            expect[i] = id;
        }
    }
    m.reads_pending++;
    in_flight_++;
    log("read zone " + std::to_string(z) + " [" + std::to_string(m.start + first * kSector) + ", +" +
        std::to_string(n * kSector) + ")");
    co_spawn(do_read(z, m.start + first * kSector, n * kSector, std::move(expect)));
}

Task<void> Workload::do_read(uint32_t z, uint64_t offset, uint64_t bytes, std::vector<uint32_t> expect)
{
    std::vector<uint8_t> buf(bytes);
    IOVector q(buf.data(), bytes);
    int ret = co_await blk_.co_preadv(offset, bytes, q);
    ZoneModel& m = zones_[z];
    m.reads_pending--;
    for (uint64_t i = 0; i < expect.size(); i++) {
        uint64_t s = offset / kSector + i;
        if (m.conventional && expect[i] != UINT32_MAX) {
            m.busy[s - m.start / kSector] = 0;
        }
        if (ret >= 0 && expect[i] != UINT32_MAX && !matches(buf.data() + i * kSector, expect[i], s)) {
            fail("read of zone " + std::to_string(z) + " returned wrong data at " +
                 std::to_string(s * kSector) + " (expected write #" + std::to_string(expect[i]) + ")");
            break;
        }
    }
    if (ret < 0 && !sim_.crashed() && !host_error_injected(ret)) {
        fail(std::string("read failed: ") + result_strerror(ret));
    }
    in_flight_--;
}

void Workload::issue_flush()
{
    log("flush (after completion " + std::to_string(seq_) + ")");
    in_flight_++;
    co_spawn(do_flush(seq_));
}

Task<void> Workload::do_flush(uint64_t issue_seq)
{
    int ret = co_await blk_.co_flush();
    if (ret >= 0) {
        log("flush done (covers completion " + std::to_string(issue_seq) + ")");
        std::vector<uint32_t> still;
        for (uint32_t id : undurable_) {
            if (writes_[id - 1].done_seq <= issue_seq) {
                make_durable(id);
            } else {
                still.push_back(id);
            }
        }
        undurable_.swap(still);
        for (ZoneModel& m : zones_) {
            if (!m.conventional && m.finish_done_seq <= issue_seq) {
                m.lb = m.cap_end;
            }
        }
    } else if (!sim_.crashed() && !host_error_injected(ret)) {
        fail(std::string("flush failed: ") + result_strerror(ret));
    }
    in_flight_--;
}

void Workload::issue_mgmt()
{
    uint64_t r = pick(0, 99);
    BlockZoneOp op = r < 20   ? BlockZoneOp::Open
                     : r < 40 ? BlockZoneOp::Close
                     : r < 58 ? BlockZoneOp::Finish
                     : r < 60 ? (r == 58 ? BlockZoneOp::SetReadOnly : BlockZoneOp::SetOffline)
                              : BlockZoneOp::Reset;
    uint32_t first, last;
    if (op == BlockZoneOp::Reset && r >= 96) {
        first = g_.conventional;  // over the whole device
        last = g_.nr_zones - 1;
    } else {
        first = last = uint32_t(pick(g_.conventional, g_.nr_zones - 1));
    }
    for (uint32_t z = first; z <= last; z++) {
        if (zones_[z].mgmt_pending || zones_[z].reads_pending || (first == last && zones_[z].has_condition())) {
            return;
        }
    }
    for (uint32_t z = first; z <= last; z++) {
        ZoneModel& m = zones_[z];
        m.mgmt_pending++;
        if (op == BlockZoneOp::Reset && !m.has_condition()) {
            m.resets_pending++;
        }
        if (op == BlockZoneOp::SetReadOnly) {
            m.condition = BlockZoneState::ReadOnly;
        } else if (op == BlockZoneOp::SetOffline) {
            m.condition = BlockZoneState::Offline;
        }
    }
    log(std::string(zone_op_name(op)) + " zones " + std::to_string(first) + ".." + std::to_string(last));
    in_flight_++;
    co_spawn(do_mgmt(op, first, last));
}

Task<void> Workload::do_mgmt(BlockZoneOp op, uint32_t first, uint32_t last)
{
    bool whole = first != last;
    uint64_t offset = whole ? 0 : zones_[first].start;
    uint64_t len = whole ? g_.size : zones_[first].length;
    // Finish is issued for its effect on the upper bound: from now on the
    // zone may come back full.
    bool was_finish_issued = zones_[first].finish_issued;
    if (op == BlockZoneOp::Finish) {
        zones_[first].finish_issued = true;
    }
    int ret = co_await blk_.co_zone_mgmt(op, offset, len);
    log(std::string(zone_op_name(op)) + " zones " + std::to_string(first) + ".." + std::to_string(last) +
        " -> " + std::to_string(ret));
    for (uint32_t z = first; z <= last; z++) {
        ZoneModel& m = zones_[z];
        m.mgmt_pending--;
        if (op == BlockZoneOp::Reset && m.has_condition()) {
            continue;  // reset-all leaves read-only and offline zones alone
        }
        int zret = ret;
        if (ret < 0 && whole && host_error_injected(ret)) {
            // A range reset fails zone by zone: those before the failing
            // one are reset (empty now; nothing else touches them while
            // the reset is pending), the others unchanged.
            BlockZoneDescriptor d;
            uint32_t n = 1;
            if (co_await blk_.co_zone_report(m.start, n, &d) == 0 && n == 1 &&
                d.state == BlockZoneState::Empty) {
                zret = 0;
            }
        }
        if (zret < 0) {
            if (sim_.crashed()) {
                continue;  // the operation may or may not have happened
            }
            if (!is_zone_errno(ret) && !host_error_injected(ret)) {
                fail(std::string("zone ") + zone_op_name(op) + " failed: " + result_strerror(ret));
            }
            if (op == BlockZoneOp::Reset) {
                m.resets_pending--;
            }
            if (op == BlockZoneOp::Finish) {
                m.finish_issued = was_finish_issued;
            }
            if (op == BlockZoneOp::SetReadOnly || op == BlockZoneOp::SetOffline) {
                m.condition = BlockZoneState::Empty;
            }
            continue;
        }
        if (op == BlockZoneOp::SetReadOnly || op == BlockZoneOp::SetOffline) {
            m.condition_done = true;  // persisted before it completes
        }
        if (op == BlockZoneOp::Reset) {
            // Durable once done: a new, empty life.
            m.resets_pending--;
            m.life++;
            std::fill(m.ids.begin(), m.ids.end(), 0);
            m.life_writes.clear();
            m.lb = m.base_end = m.start;
            m.finish_issued = false;
            m.finish_done_seq = kNever;
        } else if (op == BlockZoneOp::Finish) {
            m.finish_done_seq = ++seq_;
        }
    }
    in_flight_--;
}

void Workload::verify_after_crash(BlockBackend& blk, std::vector<uint8_t>& image)
{
    image.assign(g_.size, 0);
    for (uint32_t z = 0; z < g_.nr_zones; z++) {
        const ZoneModel& m = zones_[z];
        BlockZoneDescriptor d;
        uint32_t n = 1;
        if (run_sync(ctx_, blk.co_zone_report(m.start, n, &d)) < 0 || n != 1) {
            fail("zone report failed after the crash");
            return;
        }
        std::string where = "zone " + std::to_string(z) + ": ";
        bool unusable = d.state == BlockZoneState::ReadOnly || d.state == BlockZoneState::Offline;
        if (unusable && d.state != m.condition) {
            fail(where + "came back " + zone_state_name(d.state));
            continue;
        }
        if (m.condition_done && d.state != m.condition) {
            fail(where + "lost its condition " + zone_state_name(m.condition) + ": came back " +
                 zone_state_name(d.state));
            continue;
        }
        int ret = blk.pread(m.start, m.length, image.data() + m.start);
        if (d.state == BlockZoneState::Offline) {
            if (ret != zone_error_code(ZoneError::Offline)) {
                fail(where + "offline, but reading it returned " + std::to_string(ret));
            }
            continue;
        }
        if (ret < 0) {
            fail(where + "reading it after the crash failed: " + result_strerror(ret));
            continue;
        }
        if (m.conventional) {
            for (uint64_t s = 0; s < m.length / kSector; s++) {
                uint64_t sector = m.start / kSector + s;
                const uint8_t* p = image.data() + sector * kSector;
                bool ok = matches(p, m.durable[s], sector);
                for (uint32_t id : m.later[s]) {
                    ok = ok || matches(p, id, sector);
                }
                if (!ok) {
                    fail(where + "sector " + std::to_string(sector) + " holds none of the versions "
                         "written there (durable: #" + std::to_string(m.durable[s]) + ")");
                    break;
                }
            }
            continue;
        }
        uint64_t wp = d.state == BlockZoneState::Full ? m.cap_end : d.wp;
        if (d.state == BlockZoneState::ReadOnly) {
            // Reported at the capacity: where the data ends tells where the
            // write pointer is.
            for (wp = m.start; wp < m.cap_end; wp += kSector) {
                uint32_t id = m.ids[(wp - m.start) / kSector];
                if ((id == 0 && !m.finish_issued) || !matches(image.data() + wp, id, wp / kSector)) {
                    break;
                }
            }
        }
        if (m.resets_pending && wp == m.start) {
            continue;  // the reset happened
        }
        uint64_t ub = m.finish_issued ? m.cap_end : m.base_end;
        for (uint32_t id : m.life_writes) {
            if (writes_[id - 1].state != WriteRecord::State::Rejected) {
                ub = std::max(ub, writes_[id - 1].end);
            }
        }
        if (wp < m.lb) {
            fail(where + "write pointer " + std::to_string(wp) + " fell below " + std::to_string(m.lb) +
                 ", where flushes and FUA writes had put it");
        }
        if (wp > ub) {
            fail(where + "write pointer " + std::to_string(wp) + " above anything written (" +
                 std::to_string(ub) + ")");
        }
        for (uint64_t off = m.start; off < m.start + m.length; off += kSector) {
            uint64_t s = (off - m.start) / kSector;
            const uint8_t* p = image.data() + off;
            if (off >= wp) {
                if (!buffer_is_zero(p, kSector)) {
                    fail(where + "data above the write pointer at " + std::to_string(off));
                    break;
                }
                continue;
            }
            uint32_t id = m.ids[s];
            if (id == 0 && !m.finish_issued) {
                fail(where + "nothing was written at " + std::to_string(off) + ", below the write pointer " +
                     std::to_string(wp));
                break;
            }
            if (!matches(p, id, off / kSector)) {
                fail(where + "wrong data at " + std::to_string(off) + " below the write pointer " +
                     std::to_string(wp) + " (expected " + (id ? "write #" + std::to_string(id) : "zeroes") +
                     (buffer_is_zero(p, kSector) ? ", found zeroes)" : ")"));
                break;
            }
        }
    }
}

struct CrashPointResult {
    unsigned crashes = 0;
    std::vector<std::string> failures;
    std::string trace;
    std::string description;
};

int check_image(AioContext& ctx, const std::string& store, BdrvCheckResult& result)
{
    QDict o;
    o.set("driver", "qcow2");
    o.set("file.driver", "crash-test-store");
    o.set("file.filename", store);
    Error err;
    auto blk = BlockBackend::open(std::nullopt, o, BDRV_O_CHECK, ctx, err);
    if (!blk) {
        return -EINVAL;
    }
    return run_sync(ctx, blk->bs()->drv_check(result, 0));
}

std::unique_ptr<BlockBackend> open_image(AioContext& ctx, const std::string& store, Error& err)
{
    QDict o;
    o.set("driver", "qcow2");
    o.set("file.driver", "crash-test-store");
    o.set("file.filename", store);
    return BlockBackend::open(std::nullopt, o, BDRV_O_RDWR, ctx, err);
}

// Writes on from the write pointers of the image that survived, finishes
// some zones, closes it cleanly and checks it is all there.
void write_on(AioContext& ctx, const std::string& store, const Geometry& g, std::mt19937_64& rng,
              std::vector<uint8_t>& image, std::vector<std::string>& failures)
{
    Error err;
    auto blk = open_image(ctx, store, err);
    if (!blk) {
        failures.push_back("reopen for writing on failed: " + err.message);
        return;
    }
    uint32_t id = 0xF00000;
    std::string actions;
    for (uint32_t z = g.conventional; z < g.nr_zones; z++) {
        BlockZoneDescriptor d;
        uint32_t n = 1;
        if (run_sync(ctx, blk->co_zone_report(uint64_t(z) * g.zone_size, n, &d)) < 0 ||
            d.state == BlockZoneState::Full || d.state == BlockZoneState::ReadOnly ||
            d.state == BlockZoneState::Offline) {
            continue;
        }
        if (rng() % 3 == 0 && d.state != BlockZoneState::Empty) {
            int ret = run_sync(ctx, blk->co_zone_mgmt(BlockZoneOp::Finish, d.start, d.length));
            actions += "finished zone " + std::to_string(z) + " (write pointer was " + std::to_string(d.wp) + "); ";
            if (ret < 0) {
                failures.push_back("finishing zone " + std::to_string(z) + " failed: " + result_strerror(ret));
            }
            continue;  // what lies above the old write pointer must read as zeroes
        }
        uint64_t len = std::min<uint64_t>(d.start + d.capacity - d.wp, kSector * (1 + rng() % 16));
        std::vector<uint8_t> data(len);
        id++;
        for (uint64_t off = 0; off < len; off += kSector) {
            fill_sector(data.data() + off, id, (d.wp + off) / kSector);
        }
        int ret = blk->pwrite(d.wp, len, data.data());
        actions += "wrote #" + std::to_string(id) + " at " + std::to_string(d.wp) + ", +" + std::to_string(len) +
                   " in zone " + std::to_string(z) + " -> " + std::to_string(ret) + "; ";
        if (ret == 0) {
            memcpy(image.data() + d.wp, data.data(), len);
        } else if (!is_zone_errno(ret)) {
            failures.push_back("writing on in zone " + std::to_string(z) + " failed: " + result_strerror(ret));
        }
    }
    blk.reset();
    blk = open_image(ctx, store, err);
    if (!blk) {
        failures.push_back("reopen after writing on failed: " + err.message);
        return;
    }
    std::vector<uint8_t> now(g.size);
    for (uint32_t z = 0; z < g.nr_zones; z++) {
        // (offline zones cannot be read: they compare as zeroes)
        uint64_t start = uint64_t(z) * g.zone_size;
        uint64_t len = std::min(g.zone_size, g.size - start);
        int ret = blk->pread(start, len, now.data() + start);
        if (ret < 0 && ret != zone_error_code(ZoneError::Offline)) {
            failures.push_back("reading zone " + std::to_string(z) + " after writing on failed");
        }
    }
    if (now != image) {
        uint64_t off = 0;
        while (now[off] == image[off]) {
            off++;
        }
        failures.push_back("after writing on, closing and reopening, the data differs at " +
                           std::to_string(off) + (buffer_is_zero(now.data() + off / kSector * kSector, kSector)
                                                      ? " (zeroes)"
                                                      : "") + "; " + actions);
    }
    blk.reset();
    BdrvCheckResult result;
    int ret = check_image(ctx, store, result);
    if (ret < 0 || result.corruptions || result.check_errors) {
        failures.push_back("check after writing on and closing: ret " + std::to_string(ret) + ", " +
                           std::to_string(result.corruptions) + " corruptions, " +
                           std::to_string(result.check_errors) + " check errors");
    }
}

uint64_t incompatible_features(const std::string& store)
{
    const std::vector<uint8_t>& bytes = stores()[store];
    uint64_t incompat = 0;
    for (int i = 0; i < 8; i++) {
        incompat = incompat << 8 | bytes[72 + i];
    }
    return incompat;
}

// Opening a dirty image (lazy refcounts) repairs its refcounts: crashes
// during the repair must leave an image that is still repairable, with the
// same contents.
void crash_during_repair(std::mt19937_64& rng, const std::string& store, AioContext& ctx, CrashPointResult& res)
{
    uint64_t crash_after = 1 + rng() % 60;
    CrashOutcome outcome = CrashOutcome(rng() % 5);
    QDict o;
    o.set("driver", "qcow2");
    o.set("file.driver", "crash-sim");
    o.set("file.seed", std::to_string(rng()));
    o.set("file.crash-after", std::to_string(crash_after));
    o.set("file.file.driver", "crash-test-store");
    o.set("file.file.filename", store);
    Error err;
    auto blk = BlockBackend::open(std::nullopt, o, BDRV_O_RDWR, ctx, err);
    res.description += "\nopened over crash-sim crashing at request " + std::to_string(crash_after) + ": ";
    if (!blk) {
        res.description += "the open failed (cache lost)";
        return;
    }
    auto sim = std::dynamic_pointer_cast<CrashSimState>(blk->bs()->file()->bs);
    sim->crash();
    int ret = run_sync(ctx, sim->settle(outcome));
    if (ret < 0) {
        res.failures.push_back(std::string("settle failed: ") + result_strerror(ret));
    }
    res.description += std::string("the open worked, then ") + crash_outcome_name(outcome);
}

// One crash: a random workload over crash-sim, a crash at a random request,
// a random outcome, and the checks of what it left.  `image` holds what the
// image contains when the round starts (empty: it is new) and receives what
// it contains after the crash.
void run_round(std::mt19937_64& rng, const Geometry& g, const std::string& store, AioContext& ctx,
               std::vector<uint8_t>& image, CrashPointResult& res)
{
    CrashOutcome outcome = CrashOutcome(rng() % 5);
    unsigned ops = unsigned(20 + rng() % 280);
    std::ostringstream desc;
    desc << "round " << (image.empty() ? 1 : 2) << ": " << crash_outcome_name(outcome) << "; " << ops << " ops";
    QDict o;
    o.set("driver", "qcow2");
    o.set("file.driver", "crash-sim");
    o.set("file.seed", std::to_string(rng()));
    o.set("file.max-delay", std::to_string(rng() % 6));
    o.set("file.file.driver", "crash-test-store");
    o.set("file.file.filename", store);
    Error err;
    auto blk = BlockBackend::open(std::nullopt, o, BDRV_O_RDWR, ctx, err);
    if (!blk) {
        res.failures.push_back("the image does not open: " + err.message);
        return;
    }
    auto sim = std::dynamic_pointer_cast<CrashSimState>(blk->bs()->file()->bs);
    REQUIRE(sim);
    uint64_t crash_at = sim->stats().requests + 1 + rng() % (uint64_t(ops) * 2);
    sim->crash_at_request(crash_at);
    // Half of the rounds also fail one request before the crash with EIO,
    // which the zone operation it belongs to must undo.
    if (rng() % 2) {
        uint64_t fail_at = sim->stats().requests + 1 + rng() % (crash_at - sim->stats().requests);
        sim->fail_request(fail_at, EIO);
        desc << ", EIO at request " << fail_at;
    }
    Workload w(rng(), g, *blk, *sim, ctx, image);
    w.run(ops);
    sim->crash();
    desc << ", queue depth " << w.queue_depth() << ", crash at request " << crash_at << " of "
         << sim->stats().requests << " (" << sim->stats().pending_at_crash << " pending, "
         << sim->stats().completed_at_crash << " completed, " << sim->stats().flushes << " flushes)";
    while (ctx.poll(false)) {
        // what the driver still had in flight fails now
    }
    int ret = run_sync(ctx, sim->settle(outcome));
    if (ret < 0) {
        res.failures.push_back(std::string("settle failed: ") + result_strerror(ret));
    }
    desc << ", " << sim->stats().survivors << " survived";
    res.description += "\n" + desc.str();
    blk.reset();  // the close fails: the disk is gone
    res.trace = w.trace();
    res.failures.insert(res.failures.end(), w.failures().begin(), w.failures().end());
    if (const char* keep = getenv("QZ_CRASH_KEEP")) {
        // The image as the crash left it, for a closer look.
        std::ofstream out(keep, std::ios::binary);
        out.write(reinterpret_cast<const char*>(stores()[store].data()), std::streamsize(stores()[store].size()));
    }
    if (!res.failures.empty()) {
        return;
    }

    // The image as a restart finds it.
    uint64_t incompat = incompatible_features(store);
    if ((incompat & 1) && rng() % 2) {
        crash_during_repair(rng, store, ctx, res);
        incompat = incompatible_features(store);
    }
    if (incompat & 2) {
        res.failures.push_back("the image is marked corrupt");
    }
    if ((incompat & 1) && !g.lazy_refcounts) {
        res.failures.push_back("the image is marked dirty without lazy refcounts");
    }
    if (!(incompat & 1)) {
        BdrvCheckResult result;
        ret = check_image(ctx, store, result);
        if (ret < 0 || result.corruptions || result.check_errors) {
            res.failures.push_back("check: ret " + std::to_string(ret) + ", " + std::to_string(result.corruptions) +
                                   " corruptions, " + std::to_string(result.check_errors) + " check errors");
        }
    }
    if (!res.failures.empty()) {
        return;
    }
    auto again = open_image(ctx, store, err);
    if (!again) {
        res.failures.push_back("the image does not open read-write: " + err.message);
        return;
    }
    w.verify_after_crash(*again, image);
    res.trace = w.trace();
    res.failures = w.failures();
}

// A crash point: a new image, one or two rounds (the second starts from
// what the first crash left), then writing on from there.
CrashPointResult run_crash_point(uint64_t seed)
{
    register_store_driver();
    CrashPointResult res;
    std::mt19937_64 rng(seed);
    Geometry g = Geometry::random(rng);
    unsigned rounds = unsigned(1 + rng() % 2);
    std::string store = "crash-" + std::to_string(seed);
    create_image(g, store);
    res.description = g.create_options();
    StderrCapture capture;
    {
        AioContext ctx;
        std::vector<uint8_t> image;
        for (unsigned r = 0; r < rounds && res.failures.empty(); r++) {
            run_round(rng, g, store, ctx, image, res);
            res.crashes++;
        }
        if (res.failures.empty()) {
            write_on(ctx, store, g, rng, image, res.failures);
        }
    }
    if (!res.failures.empty()) {
        res.trace += "--- stderr:\n" + capture.text();
    }
    stores().erase(store);
    return res;
}

uint64_t env_number(const char* name, uint64_t def)
{
    const char* v = getenv(name);
    return v && *v ? strtoull(v, nullptr, 0) : def;
}

}  // namespace

TEST_CASE("zoned qcow2 keeps its promises across crashes", "[zoned-crash]")
{
    // Scenarios (each one or two crashes) until enough crashes have run.
    const char* one = getenv("QZ_CRASH_SEED");
    uint64_t target = one ? 1 : env_number("QZ_CRASH_POINTS", 1000);
    uint64_t base = 0x5eed2024;
    uint64_t crashes = 0;
    std::string first_failure;
    std::vector<uint64_t> failed;
    auto start = std::chrono::steady_clock::now();
    for (uint64_t i = 0; crashes < target; i++) {
        uint64_t mix = base + i;
        uint64_t seed = one ? strtoull(one, nullptr, 0) : splitmix(mix);
        CrashPointResult r = run_crash_point(seed);
        crashes += std::max(r.crashes, 1u);
        if (r.failures.empty()) {
            if (env_number("QZ_CRASH_VERBOSE", 0) > 1) {
                printf("0x%llx: ok | %s\n", (unsigned long long)seed, r.description.c_str());
            }
            continue;
        }
        failed.push_back(seed);
        if (getenv("QZ_CRASH_VERBOSE")) {
            printf("0x%llx: %s | %s\n", (unsigned long long)seed, r.failures[0].c_str(), r.description.c_str());
        }
        if (first_failure.empty()) {
            std::ostringstream msg;
            msg << "rerun with QZ_CRASH_SEED=0x" << std::hex << seed << std::dec << "\n" << r.description << "\n";
            for (const std::string& f : r.failures) {
                msg << "  " << f << "\n";
            }
            msg << "--- last operations:\n" << r.trace;
            first_failure = msg.str();
        }
    }
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!failed.empty()) {
        std::ostringstream seeds;
        for (size_t i = 0; i < failed.size() && i < 50; i++) {
            seeds << " 0x" << std::hex << failed[i];
        }
        FAIL(failed.size() << " scenarios failed (" << crashes << " crashes in " << secs << " s); seeds:"
                           << seeds.str() << "\nthe first one: " << first_failure);
    }
}

// --- The bugs the random test found, as fixed scenarios -------------------------

namespace {

// A zoned image in a store, opened over crash-sim.
struct SimImage {
    std::string store;
    uint64_t seed;
    unsigned max_delay;
    AioContext ctx;
    std::unique_ptr<BlockBackend> blk;
    std::shared_ptr<CrashSimState> sim;

    SimImage(const std::string& name, const std::string& options, uint64_t seed_, unsigned max_delay_)
        : store(name), seed(seed_), max_delay(max_delay_)
    {
        register_store_driver();
        Error err;
        QDict c;
        REQUIRE(keyval_parse(c, options, nullptr, err));
        REQUIRE(run_sync(ctx, bdrv_co_create(*bdrv_find_driver("qcow2"), "crash-test-store:" + store, c, ctx,
                                             err)) == 0);
        open();
    }
    ~SimImage()
    {
        blk.reset();
        stores().erase(store);
    }

    void open()
    {
        QDict o;
        o.set("driver", "qcow2");
        o.set("file.driver", "crash-sim");
        o.set("file.seed", std::to_string(seed));
        o.set("file.max-delay", std::to_string(max_delay));
        o.set("file.file.driver", "crash-test-store");
        o.set("file.file.filename", store);
        Error err;
        blk = BlockBackend::open(std::nullopt, o, BDRV_O_RDWR, ctx, err);
        INFO(err.message);
        REQUIRE(blk);
        sim = std::dynamic_pointer_cast<CrashSimState>(blk->bs()->file()->bs);
    }

    // Crashes, keeps what `outcome` keeps and opens the image again.
    void crash_and_reopen(CrashOutcome outcome)
    {
        sim->crash();
        while (ctx.poll(false)) {
            // requests in flight fail now
        }
        REQUIRE(run_sync(ctx, sim->settle(outcome)) == 0);
        sim.reset();
        {
            StderrCapture quiet;  // the close fails
            blk.reset();
        }
        open();
    }
};

}  // namespace

TEST_CASE("a zone write that completed is durable after a flush", "[zoned-crash]")
{
    // Sixteen writes in flight in one zone, completing in random order at
    // the disk; as soon as the first returns, a flush, then a power loss.
    // The write pointer must cover every write that had returned: the
    // durable write pointer cannot pass a write still in flight, so zone
    // writes return in write pointer order.
    for (uint64_t seed = 0; seed < 20; seed++) {
        SimImage img("order", "size=4M,cluster_size=4096,zone.mode=host-managed,zone.size=1M", seed, 5);
        std::vector<uint64_t> returned;
        std::vector<uint8_t> buf(4096, 0x5a);
        for (uint64_t i = 0; i < 16; i++) {
            co_spawn([](BlockBackend& blk, uint8_t* p, uint64_t i, std::vector<uint64_t>& returned) -> Task<void> {
                IOVector q(p, 4096);
                if (co_await blk.co_pwritev(i * 4096, 4096, q) == 0) {
                    returned.push_back(i);
                }
            }(*img.blk, buf.data(), i, returned));
        }
        while (returned.empty()) {
            img.ctx.poll(true);
        }
        std::vector<uint64_t> before_flush = returned;
        REQUIRE(img.blk->flush() == 0);
        img.crash_and_reopen(CrashOutcome::PowerLossCacheLost);
        BlockZoneDescriptor d;
        uint32_t n = 1;
        REQUIRE(run_sync(img.ctx, img.blk->co_zone_report(0, n, &d)) == 0);
        uint64_t last = *std::max_element(before_flush.begin(), before_flush.end());
        INFO("seed " << seed << ": write " << last << " had returned");
        CHECK(d.wp >= (last + 1) * 4096);
    }
}

TEST_CASE("finishing a zone after a crash reads zeroes above the old write pointer", "[zoned-crash]")
{
    // A reset persists the empty write pointer at once and unmaps the zone
    // at the next flush.  A power loss in between leaves the old clusters
    // mapped in an empty zone; finishing it must not make their data
    // readable.
    SimImage img("finish", "size=4M,cluster_size=4096,zone.mode=host-managed,zone.size=1M", 0, 0);
    std::vector<uint8_t> data(65536, 0xd7);
    REQUIRE(img.blk->pwrite(0, data.size(), data.data()) == 0);
    REQUIRE(img.blk->flush() == 0);
    REQUIRE(run_sync(img.ctx, img.blk->co_zone_mgmt(BlockZoneOp::Reset, 0, 1 * MiB)) == 0);
    img.crash_and_reopen(CrashOutcome::PowerLossCacheLost);
    REQUIRE(run_sync(img.ctx, img.blk->co_zone_mgmt(BlockZoneOp::Finish, 0, 1 * MiB)) == 0);
    std::vector<uint8_t> back(1 * MiB, 0xee);
    REQUIRE(img.blk->pread(0, back.size(), back.data()) == 0);
    CHECK(buffer_is_zero(back.data(), back.size()));
    // And the same once the finish is on disk.
    REQUIRE(img.blk->flush() == 0);
    img.crash_and_reopen(CrashOutcome::PowerLossCacheLost);
    REQUIRE(img.blk->pread(0, back.size(), back.data()) == 0);
    CHECK(buffer_is_zero(back.data(), back.size()));
}

// --- A real qemu-io process killed with SIGKILL --------------------------------
// qemu-io runs a script of sequential zone writes (some FUA), flushes and
// finishes on a zoned image, on the file directly (a killed process: the
// host keeps every completed write) or through crash-sim (a power loss: only
// what was flushed survives), and is killed at a random command.  qemu-io
// prints its prompt, flushed, before reading each command, so the prompts in
// its output tell which commands had completed.  The kill lands a little
// after the chosen command starts, more or less depending on the machine;
// what is checked holds for any timing.

namespace {

struct ScriptWrite {
    uint32_t zone;
    uint64_t start;
    uint64_t end;
    uint8_t pattern;
    bool fua;
};

// One command of the script: a write, a flush or a finish.
struct ScriptCommand {
    std::string text;
    std::optional<ScriptWrite> write;
    bool flush = false;
    std::optional<uint32_t> finish;
};

std::vector<ScriptCommand> make_script(std::mt19937_64& rng, uint32_t nr_zones, uint64_t zone_size)
{
    std::vector<ScriptCommand> script;
    uint8_t pattern = 1;
    for (uint32_t z = 0; z < nr_zones; z++) {
        uint64_t wp = z * zone_size;
        uint64_t stop = wp + zone_size / 4 * (1 + rng() % 4);
        while (wp < stop) {
            static const uint64_t sizes[] = {4096, 12288, 32768, 65536};
            uint64_t len = std::min(sizes[rng() % 4], stop - wp);
            ScriptCommand write;
            write.write = ScriptWrite{z, wp, wp + len, pattern, rng() % 6 == 0};
            write.text = "write " + std::string(write.write->fua ? "-f " : "") + "-P " + std::to_string(pattern) +
                         " " + std::to_string(wp) + " " + std::to_string(len);
            script.push_back(write);
            pattern = uint8_t(pattern % 250 + 1);
            wp += len;
            if (rng() % 5 == 0) {
                ScriptCommand flush;
                flush.text = "flush";
                flush.flush = true;
                script.push_back(flush);
            }
        }
        if (stop < (z + 1) * zone_size && rng() % 3 == 0) {
            ScriptCommand finish;
            finish.text = "zone_finish " + std::to_string(z * zone_size) + " " + std::to_string(zone_size);
            finish.finish = z;
            script.push_back(finish);
        }
    }
    return script;
}

std::string slurp(const std::string& path)
{
    std::ifstream in(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

size_t count_prompts(const std::string& out)
{
    size_t n = 0;
    for (size_t at = out.find("qemu-io> "); at != std::string::npos; at = out.find("qemu-io> ", at + 1)) {
        n++;
    }
    return n;
}

// Runs qemu-io on the script, kills it while command `kill_after` runs and
// returns how many commands had completed.
size_t run_and_kill(const std::string& qemu_io, const std::vector<std::string>& args,
                    const std::vector<ScriptCommand>& script, const std::string& dir, size_t kill_after)
{
    std::string in_path = dir + "/script", out_path = dir + "/out";
    {
        std::ofstream in(in_path);
        for (const ScriptCommand& c : script) {
            in << c.text << "\n";
        }
    }
    unlink(out_path.c_str());  // the last run's prompts must not count
    std::vector<std::string> argv_s = {qemu_io};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (std::string& a : argv_s) {
        argv.push_back(a.data());
    }
    argv.push_back(nullptr);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        int in = open(in_path.c_str(), O_RDONLY);
        int out = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(in, 0);
        dup2(out, 1);
        dup2(out, 2);
        execv(qemu_io.c_str(), argv.data());
        _exit(127);
    }
    // Kill once `kill_after` commands have completed (and the next one has
    // started), or after 20 s.
    int status = 0;
    for (int waited = 0; waited < 20000; waited++) {
        if (count_prompts(slurp(out_path)) > kill_after || waitpid(pid, &status, WNOHANG) == pid) {
            break;
        }
        usleep(1000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    std::string out = slurp(out_path);
    INFO(out.substr(0, 2000));
    REQUIRE(out.find("failed") == std::string::npos);
    // Prompt k is printed once command k - 1 has completed.
    size_t prompts = count_prompts(out);
    return std::min(script.size(), prompts ? prompts - 1 : 0);
}

// Opens the image a killed qemu-io used.  Its file locks can outlive it for
// a moment: the kernel tears its io_uring (which holds the file) down
// asynchronously.
std::unique_ptr<BlockBackend> open_after_kill(const std::string& image, int flags, AioContext& ctx, Error& err)
{
    for (int attempt = 0;; attempt++) {
        QDict o;
        o.set("driver", "qcow2");
        err = Error();
        auto blk = BlockBackend::open(image, o, flags, ctx, err);
        if (blk || attempt == 100 || err.message.find("lock") == std::string::npos) {
            return blk;
        }
        usleep(20000);
    }
}

}  // namespace

TEST_CASE("zoned qcow2 survives qemu-io being killed", "[zoned-crash][kill]")
{
    std::filesystem::path qemu_io = std::filesystem::read_symlink("/proc/self/exe").parent_path().parent_path() /
                                    "qemu-io";
    if (!std::filesystem::exists(qemu_io)) {
        WARN("no qemu-io next to the unit tests: skipped");
        return;
    }
    bdrv_init();
    constexpr uint32_t kZones = 6;
    constexpr uint64_t kZoneSize = 1 * MiB;
    struct TempDir {
        std::string path;
        ~TempDir() { std::filesystem::remove_all(path); }
    } tmp;
    char tmpl[] = "/var/tmp/qz-kill-XXXXXX";
    REQUIRE(mkdtemp(tmpl));
    tmp.path = tmpl;
    const std::string& dir = tmp.path;
    std::string image = dir + "/z.qcow2";
    for (int iter = 0; iter < 6; iter++) {
        bool power_loss = iter % 2 == 1;
        std::mt19937_64 rng(0x6b696c6c + iter);
        std::vector<ScriptCommand> script = make_script(rng, kZones, kZoneSize);
        AioContext ctx;
        Error err;
        QDict create;
        REQUIRE(keyval_parse(create, "size=6M,cluster_size=4096,zone.mode=host-managed,zone.size=1M", nullptr, err));
        unlink(image.c_str());
        REQUIRE(run_sync(ctx, bdrv_co_create(*bdrv_find_driver("qcow2"), image, create, ctx, err)) == 0);
        std::vector<std::string> args;
        if (power_loss) {
            args = {"--image-opts",
                    "driver=qcow2,file.driver=crash-sim,file.file.driver=file,file.file.filename=" + image};
        } else {
            args = {"-f", "qcow2", image};
        }
        size_t completed = run_and_kill(qemu_io.string(), args, script, dir, rng() % script.size());
        INFO("iteration " << iter << (power_loss ? " (power loss)" : " (killed)") << ": " << completed << " of "
                          << script.size() << " commands completed");

        // What the completed commands promise, and what any command might
        // have done.
        std::vector<uint64_t> lb(kZones), ub(kZones), acked(kZones);
        for (uint32_t z = 0; z < kZones; z++) {
            lb[z] = ub[z] = acked[z] = z * kZoneSize;
        }
        for (size_t i = 0; i < script.size() && i <= completed; i++) {
            const ScriptCommand& c = script[i];
            bool done = i < completed;  // else in flight at the kill
            if (c.write) {
                ub[c.write->zone] = c.write->end;
                if (done) {
                    acked[c.write->zone] = c.write->end;
                    if (c.write->fua) {
                        lb[c.write->zone] = c.write->end;
                    }
                }
            } else if (c.finish) {
                ub[*c.finish] = (*c.finish + 1) * kZoneSize;
                if (done) {
                    acked[*c.finish] = ub[*c.finish];
                }
            } else if (done) {
                for (uint32_t z = 0; z < kZones; z++) {
                    lb[z] = std::max(lb[z], acked[z]);
                }
            }
        }
        std::vector<uint8_t> expected(kZones * kZoneSize, 0);
        for (const ScriptCommand& c : script) {
            if (c.write) {
                memset(expected.data() + c.write->start, c.write->pattern, c.write->end - c.write->start);
            }
        }

        std::string header = slurp(image);
        REQUIRE(header.size() > 80);
        uint64_t incompat = 0;
        for (int i = 0; i < 8; i++) {
            incompat = incompat << 8 | uint8_t(header[72 + i]);
        }
        CHECK((incompat & 3) == 0);  // neither dirty nor corrupt
        {
            auto blk = open_after_kill(image, BDRV_O_CHECK, ctx, err);
            INFO(err.message);
            REQUIRE(blk);
            BdrvCheckResult result;
            StderrCapture quiet;  // leaks are allowed, and listed
            CHECK(run_sync(ctx, blk->bs()->drv_check(result, 0)) == 0);
            CHECK(result.corruptions == 0);
            CHECK(result.check_errors == 0);
        }
        auto blk = open_after_kill(image, BDRV_O_RDWR, ctx, err);
        INFO(err.message);
        REQUIRE(blk);
        std::vector<uint8_t> data(kZones * kZoneSize);
        REQUIRE(blk->pread(0, data.size(), data.data()) == 0);
        for (uint32_t z = 0; z < kZones; z++) {
            BlockZoneDescriptor d;
            uint32_t n = 1;
            REQUIRE(run_sync(ctx, blk->co_zone_report(z * kZoneSize, n, &d)) == 0);
            uint64_t wp = d.state == BlockZoneState::Full ? d.start + d.capacity : d.wp;
            INFO("zone " << z << ": write pointer " << wp << ", at least " << lb[z] << ", at most " << ub[z]);
            CHECK(wp >= lb[z]);
            CHECK(wp <= ub[z]);
            // Below the write pointer: what the script wrote there (zeroes
            // past its writes in a finished zone); above it: zeroes.
            bool same = memcmp(data.data() + z * kZoneSize, expected.data() + z * kZoneSize, wp - z * kZoneSize) == 0;
            CHECK(same);
            CHECK(buffer_is_zero(data.data() + wp, (z + 1) * kZoneSize - wp));
        }
    }
}

TEST_CASE("every acknowledged FUA zone write survives a crash", "[zoned-crash][fua]")
{
    // As the ublk guest test (tests/e2e/tests/zoned-disk/lib.sh) does it:
    // zones used, then all reset, then 64 KiB FUA writes one after another
    // into a zone (every other scenario each followed by a flush, as
    // O_DSYNC on a block device sends one), while the process dies or the
    // power fails at some request.  Every write that returned must be in
    // the image, below the zone's write pointer.
    constexpr uint64_t kZone = 16 * MiB;
    constexpr uint64_t kWrite = 64 * KiB;
    unsigned mid_run = 0;  // crashes between two writes of the run
    for (uint64_t seed = 0; seed < 24; seed++) {
        for (CrashOutcome outcome : {CrashOutcome::ProcessKilled, CrashOutcome::PowerLossCacheLost}) {
            SimImage img("fua-" + std::to_string(seed),
                         "size=512M,zone.mode=host-managed,zone.size=16M,zone.conventional_zones=4,"
                         "zone.max_append_bytes=256K",
                         seed, unsigned(seed % 5));
            std::vector<uint8_t> old(kZone / 8, 0x11);
            for (uint64_t z = 4; z < 24; z++) {
                REQUIRE(img.blk->pwrite(z * kZone, old.size(), old.data()) == 0);
            }
            REQUIRE(img.blk->pwrite(0, old.size(), old.data()) == 0);
            REQUIRE(img.blk->flush() == 0);
            REQUIRE(run_sync(img.ctx, img.blk->co_zone_mgmt(BlockZoneOp::Reset, 0, 512 * MiB)) == 0);
            std::mt19937_64 rng(seed);
            img.sim->crash_at_request(img.sim->requests() + 1 + rng() % 160);
            uint64_t acked = 0;
            bool done = false;
            std::vector<uint8_t> pattern(16 * kWrite);
            for (size_t i = 0; i < pattern.size(); i++) {
                pattern[i] = uint8_t(i / kWrite + 1 + i % 7);
            }
            bool then_flush = seed % 2;
            co_spawn([](BlockBackend& blk, uint8_t* p, bool then_flush, uint64_t& acked, bool& done) -> Task<void> {
                for (uint64_t i = 0; i < 16; i++) {
                    IOVector q(p + i * kWrite, kWrite);
                    int r = co_await blk.co_pwritev(16 * kZone + i * kWrite, kWrite, q, BDRV_REQ_FUA);
                    if (r >= 0 && then_flush) {
                        r = co_await blk.co_flush();
                    }
                    if (r < 0) {
                        break;
                    }
                    acked = i + 1;
                }
                done = true;
            }(*img.blk, pattern.data(), then_flush, acked, done));
            while (!done) {
                img.ctx.poll(true);
            }
            img.crash_and_reopen(outcome);
            BlockZoneDescriptor d;
            uint32_t n = 1;
            REQUIRE(run_sync(img.ctx, img.blk->co_zone_report(16 * kZone, n, &d)) == 0);
            INFO("seed " << seed << " " << crash_outcome_name(outcome) << ": " << acked << " writes returned");
            mid_run += acked > 0 && acked < 16;
            CHECK(d.wp >= 16 * kZone + acked * kWrite);
            std::vector<uint8_t> back(acked * kWrite);
            if (acked) {
                REQUIRE(img.blk->pread(16 * kZone, back.size(), back.data()) == 0);
                CHECK(memcmp(back.data(), pattern.data(), back.size()) == 0);
            }
        }
    }
    // The crash points are drawn so that most land within the run.
    CHECK(mid_run >= 24);
}
