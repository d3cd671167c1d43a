// A zone operation on a zoned qcow2 image either completes, durably once
// acknowledged, or fails and leaves the zones as they were, in memory and
// on disk: EIO is injected (crash-sim's fail_request) at every request
// index of mixed zone workloads.  Also the zone rules that refuse a request
// whole (docs/zoned.rst).
#include <catch2/catch.hpp>

#include <random>
#include <sstream>

#include "block/block-backend.h"
#include "block/crash-sim.h"
#include "block/zone-error.h"
#include "qemu/units.h"
#include "crash-sim-test-util.h"

using namespace qemu;

namespace {

constexpr const char* kOpts =
    "size=6M,cluster_size=4k,zone.mode=host-managed,zone.size=1M,zone.capacity=768k,"
    "zone.conventional_zones=1,zone.max_open_zones=2,zone.max_active_zones=3,zone.max_append_bytes=64k";
constexpr uint64_t kZone = 1 * MiB;
constexpr uint64_t kSize = 6 * MiB;
constexpr uint32_t kZones = 6;

struct Image : qcow2_test::SimImage {
    Image() : SimImage(kOpts) {}

    std::vector<BlockZoneDescriptor> report()
    {
        std::vector<BlockZoneDescriptor> d(kZones);
        uint32_t n = kZones;
        REQUIRE(run_sync(ctx, blk->co_zone_report(0, n, d.data())) == 0);
        REQUIRE(n == kZones);
        return d;
    }
    // What the zones hold: below each write pointer (an offline zone
    // cannot be read: nothing).
    std::vector<uint8_t> contents(const std::vector<BlockZoneDescriptor>& zones)
    {
        std::vector<uint8_t> all(kSize, 0);
        for (const BlockZoneDescriptor& z : zones) {
            uint64_t end = z.type == BlockZoneType::Conventional ? z.start + z.length : z.wp;
            if (z.state == BlockZoneState::Offline || end == z.start) {
                continue;
            }
            REQUIRE(blk->pread(z.start, end - z.start, all.data() + z.start) == 0);
        }
        return all;
    }
};

std::string describe(const std::vector<BlockZoneDescriptor>& zones)
{
    std::ostringstream s;
    for (const BlockZoneDescriptor& z : zones) {
        s << "[" << z.start / kZone << ": wp +" << (z.wp - z.start) << " " << zone_state_name(z.state) << "] ";
    }
    return s.str();
}

// What a restart makes of a zone: open zones come back closed, or empty
// when nothing was written.
BlockZoneDescriptor after_restart(BlockZoneDescriptor z)
{
    if (z.state == BlockZoneState::ImplicitlyOpen || z.state == BlockZoneState::ExplicitlyOpen) {
        z.state = z.wp == z.start ? BlockZoneState::Empty : BlockZoneState::Closed;
    }
    return z;
}

bool same(const BlockZoneDescriptor& a, const BlockZoneDescriptor& b)
{
    return a.wp == b.wp && a.state == b.state;
}

// A mixed workload at queue depth 1, decided by `seed` and by what the
// zones report (so that it adapts to failed operations).
class Workload {
public:
    // `fail_at`: the request (counted over the operations, from 1) that
    // fails with EIO; 0: none.
    Workload(Image& t, uint64_t seed, uint64_t fail_at) : t_(t), rng_(seed), fail_in_(fail_at) {}

    uint64_t requests() const { return requests_; }
    const std::string& trace() const { return trace_; }

    // Runs `ops` operations; returns the first broken promise, or "".
    std::string run(unsigned ops)
    {
        for (unsigned i = 0; i < ops; i++) {
            std::vector<BlockZoneDescriptor> before = t_.report();
            // What the zones read matters only where the error may hit.
            std::vector<uint8_t> data_before;
            if (fail_in_) {
                data_before = t_.contents(before);
            }
            uint64_t injected = t_.sim->stats().injected;
            // Only the operations' own requests count (and may fail).
            uint64_t first = t_.sim->requests();
            if (fail_in_) {
                t_.sim->fail_request(first + fail_in_, EIO);
            }
            std::string what;
            int ret = one(before, what);
            uint64_t used = t_.sim->requests() - first;
            t_.sim->fail_request(0, EIO);
            requests_ += used;
            trace_ += what + " -> " + std::to_string(ret) + " (" + std::to_string(used) + " requests)\n";
            fail_in_ = fail_in_ > used ? fail_in_ - used : 0;
            std::vector<BlockZoneDescriptor> now = t_.report();
            if (ret < 0 && zone_error_of(ret) == ZoneError::None) {
                if (t_.sim->stats().injected == injected) {
                    return what + " failed without an injected error: " + result_strerror(ret);
                }
                if (what.find(" all") != std::string::npos) {
                    continue;  // zone by zone: those before the failing one are done
                }
                // A host error: nothing may have changed.
                for (uint32_t z = 0; z < kZones; z++) {
                    if (!same(before[z], now[z])) {
                        return what + " failed (" + result_strerror(ret) + ") but changed zone " +
                               std::to_string(z) + ": " + describe(before) + " -> " + describe(now);
                    }
                }
                if (t_.contents(now) != data_before) {
                    return what + " failed but changed what the zones read";
                }
            } else if (ret < 0) {
                // Zone errors refuse the request whole (an implicitly
                // open zone closed to make room for an open stays closed).
                for (uint32_t z = 0; z < kZones; z++) {
                    bool made_room = before[z].state == BlockZoneState::ImplicitlyOpen &&
                                     now[z].state == BlockZoneState::Closed && before[z].wp == now[z].wp;
                    if (!same(before[z], now[z]) && !made_room) {
                        return what + " refused (" + result_strerror(ret) + ") but changed zone " +
                               std::to_string(z);
                    }
                }
            }
        }
        return "";
    }

private:
    uint64_t pick(uint64_t lo, uint64_t hi) { return std::uniform_int_distribution<uint64_t>(lo, hi)(rng_); }

    int one(const std::vector<BlockZoneDescriptor>& zones, std::string& what)
    {
        uint32_t z = uint32_t(pick(1, kZones - 1));
        const BlockZoneDescriptor& d = zones[z];
        uint64_t room = d.start + d.capacity > d.wp ? d.start + d.capacity - d.wp : 0;
        uint64_t len = std::max<uint64_t>(512, std::min<uint64_t>(room, pick(1, 96) * 512));
        std::vector<uint8_t> buf(len);
        for (auto& b : buf) {
            b = uint8_t(rng_());
        }
        IOVector q(buf.data(), len);
        uint64_t r = pick(0, 99);
        std::ostringstream s;
        int ret;
        if (r < 30) {
            s << "write zone " << z << " +" << len;
            ret = run_sync(t_.ctx, t_.blk->co_pwritev(d.wp, len, q));
        } else if (r < 45) {
            s << "append zone " << z << " +" << std::min<uint64_t>(len, 64 * KiB);
            IOVector qa(buf.data(), std::min<uint64_t>(len, 64 * KiB));
            uint64_t where = d.start;
            ret = run_sync(t_.ctx, t_.blk->co_zone_append(where, qa));
        } else if (r < 55) {
            s << "write zeroes zone " << z << " +" << len;
            ret = run_sync(t_.ctx, t_.blk->co_pwrite_zeroes(d.wp, len));
        } else if (r < 60) {
            uint64_t off = pick(0, kZone / 512 - 8) * 512;
            s << "conventional write at " << off;
            std::vector<uint8_t> c(4096, uint8_t(rng_()));
            IOVector qc(c.data(), c.size());
            ret = run_sync(t_.ctx, t_.blk->co_pwritev(off, c.size(), qc));
        } else if (r < 64) {
            s << "flush";
            ret = run_sync(t_.ctx, t_.blk->co_flush());
        } else {
            static const BlockZoneOp ops[] = {BlockZoneOp::Open,   BlockZoneOp::Close, BlockZoneOp::Finish,
                                              BlockZoneOp::Reset,  BlockZoneOp::Reset, BlockZoneOp::Finish,
                                              BlockZoneOp::SetReadOnly, BlockZoneOp::SetOffline};
            uint64_t k = pick(0, 59);
            BlockZoneOp op = ops[k < 58 ? k % 6 : (k == 58 ? 6 : 7)];
            bool whole = pick(0, 9) == 0 && op != BlockZoneOp::SetReadOnly && op != BlockZoneOp::SetOffline;
            s << zone_op_name(op) << (whole ? " all" : " zone " + std::to_string(z));
            ret = run_sync(t_.ctx, whole ? t_.blk->co_zone_mgmt(op, 0, kSize)
                                         : t_.blk->co_zone_mgmt(op, d.start, kZone));
        }
        what = s.str();
        return ret;
    }

    Image& t_;
    std::mt19937_64 rng_;
    uint64_t fail_in_;
    uint64_t requests_ = 0;
    std::string trace_;
};

// One run with EIO injected at request `fail_at` of the workload (0: none);
// returns the requests the workload made, and the first broken promise in
// `failure`.
uint64_t run_with_eio(uint64_t seed, unsigned ops, uint64_t fail_at, std::string& failure)
{
    Image t;
    Workload w(t, seed, fail_at);
    failure = w.run(ops);
    uint64_t used = w.requests();
    if (!failure.empty()) {
        return used;
    }
    if (fail_at && fail_at <= used && t.sim->stats().injected != 1) {
        failure = "the injected error did not happen";
        return used;
    }
    // Acknowledged is durable: a restart finds what the zones said.
    std::vector<BlockZoneDescriptor> before = t.report();
    std::vector<uint8_t> data = t.contents(before);
    t.reopen();
    std::vector<BlockZoneDescriptor> now = t.report();
    for (uint32_t z = 0; z < kZones; z++) {
        if (!same(after_restart(before[z]), now[z])) {
            failure = "after a restart zone " + std::to_string(z) + " changed: " + describe(before) + " -> " +
                      describe(now) + "\n" + w.trace();
            return used;
        }
    }
    if (t.contents(now) != data) {
        failure = "after a restart the zones read differently";
    }
    return used;
}

}  // namespace

TEST_CASE("zone undo: EIO at every request of mixed zone workloads", "[zoned][undo]")
{
    for (uint64_t seed : {1, 2, 3}) {
        std::string failure;
        uint64_t requests = run_with_eio(seed, 40, 0, failure);
        {
            INFO("seed " << seed << " without injection");
            REQUIRE(failure == "");
        }
        for (uint64_t k = 1; k <= requests; k++) {
            INFO("seed " << seed << ", EIO at request " << k << " of " << requests);
            run_with_eio(seed, 40, k, failure);
            REQUIRE(failure == "");
        }
    }
}

TEST_CASE("zone undo: a failed reset keeps the zone, a retry resets it", "[zoned][undo]")
{
    Image t;
    std::vector<uint8_t> d(64 * KiB, 0x61);
    REQUIRE(t.blk->pwrite(kZone, d.size(), d.data()) == 0);
    REQUIRE(run_sync(t.ctx, t.blk->co_flush()) == 0);
    // Every request the reset makes, one at a time.
    for (uint64_t k = 1;; k++) {
        uint64_t before = t.sim->requests();
        t.sim->fail_request(before + k, EIO);
        int ret = run_sync(t.ctx, t.blk->co_zone_mgmt(BlockZoneOp::Reset, kZone, kZone));
        t.sim->fail_request(0, EIO);
        if (ret == 0) {
            break;
        }
        INFO("EIO at request " << k << " of the reset");
        REQUIRE(ret == -EIO);
        REQUIRE(t.report()[1].wp == kZone + d.size());
        t.reopen();
        REQUIRE(t.report()[1].wp == kZone + d.size());
        std::vector<uint8_t> back(d.size());
        REQUIRE(t.blk->pread(kZone, back.size(), back.data()) == 0);
        REQUIRE(back == d);
    }
    REQUIRE(t.report()[1].state == BlockZoneState::Empty);
    t.reopen();
    REQUIRE(t.report()[1].state == BlockZoneState::Empty);
}

TEST_CASE("zone undo: a failed finish persists no write pointer", "[zoned][undo]")
{
    Image t;
    std::vector<uint8_t> d(6 * KiB, 0x62);  // the finish zeroes the rest of its cluster
    REQUIRE(t.blk->pwrite(2 * kZone, d.size(), d.data()) == 0);
    t.sim->fail_request(t.sim->requests() + 1, EIO);
    REQUIRE(run_sync(t.ctx, t.blk->co_zone_mgmt(BlockZoneOp::Finish, 2 * kZone, kZone)) == -EIO);
    REQUIRE(t.report()[2].wp == 2 * kZone + d.size());
    REQUIRE(run_sync(t.ctx, t.blk->co_flush()) == 0);
    t.reopen();
    REQUIRE(t.report()[2].wp == 2 * kZone + d.size());
    REQUIRE(t.report()[2].state == BlockZoneState::Closed);
}

TEST_CASE("zone rules: requests refused whole", "[zoned][undo]")
{
    Image t;
    std::vector<uint8_t> d(kZone, 0x63);
    REQUIRE(t.blk->pwrite(kZone, 512 * KiB, d.data()) == 0);
    // Write-zeroes over the capacity: a boundary error, nothing written.
    int ret = run_sync(t.ctx, t.blk->co_pwrite_zeroes(kZone + 512 * KiB, 512 * KiB));
    REQUIRE(zone_error_of(ret) == ZoneError::Boundary);
    REQUIRE(t.report()[1].wp == kZone + 512 * KiB);
    REQUIRE(run_sync(t.ctx, t.blk->co_pwrite_zeroes(kZone + 512 * KiB, 256 * KiB)) == 0);
    REQUIRE(t.report()[1].state == BlockZoneState::Full);

    // Writes of part of a logical block: refused as appends of that size are.
    ret = t.blk->pwrite(2 * kZone, 100, d.data());
    REQUIRE(zone_error_of(ret) == ZoneError::InvalidRequest);
    REQUIRE(std::string(result_strerror(ret)) == "Invalid argument");
    REQUIRE(t.report()[2].wp == 2 * kZone);
    REQUIRE(zone_error_of(run_sync(t.ctx, t.blk->co_pwrite_zeroes(2 * kZone, 100))) == ZoneError::InvalidRequest);
    REQUIRE(zone_error_of(t.blk->pwrite(512, 1000, d.data())) == ZoneError::InvalidRequest);  // conventional too
    REQUIRE(t.report()[2].state == BlockZoneState::Empty);
}

TEST_CASE("zone rules: a range open that fails part-way opens nothing", "[zoned][undo]")
{
    Image t;
    // Two open zones at most: opening zones 2 to 4 fails at zone 4.
    int ret = run_sync(t.ctx, t.blk->co_zone_mgmt(BlockZoneOp::Open, 2 * kZone, 3 * kZone));
    REQUIRE(zone_error_of(ret) == ZoneError::TooManyOpen);
    for (uint32_t z = 1; z < kZones; z++) {
        REQUIRE(t.report()[z].state == BlockZoneState::Empty);
    }
    REQUIRE(run_sync(t.ctx, t.blk->co_zone_mgmt(BlockZoneOp::Open, 2 * kZone, 2 * kZone)) == 0);
    REQUIRE(t.report()[3].state == BlockZoneState::ExplicitlyOpen);
    // Closing zones 2 to 4: zone 4 is empty, an invalid transition; zones
    // 2 and 3 stay open.
    ret = run_sync(t.ctx, t.blk->co_zone_mgmt(BlockZoneOp::Close, 2 * kZone, 3 * kZone));
    REQUIRE(zone_error_of(ret) == ZoneError::InvalidTransition);
    REQUIRE(t.report()[2].state == BlockZoneState::ExplicitlyOpen);
    REQUIRE(t.report()[3].state == BlockZoneState::ExplicitlyOpen);
}

TEST_CASE("zone rules: finishing all zones finishes the open and closed ones", "[zoned][undo]")
{
    Image t;
    std::vector<uint8_t> d(4096, 0x64);
    REQUIRE(t.blk->pwrite(kZone, 4096, d.data()) == 0);                                   // open
    REQUIRE(run_sync(t.ctx, t.blk->co_zone_mgmt(BlockZoneOp::Open, 3 * kZone, kZone)) == 0);  // open, no data
    REQUIRE(run_sync(t.ctx, t.blk->co_zone_mgmt(BlockZoneOp::Finish, 0, kSize)) == 0);
    std::vector<BlockZoneDescriptor> z = t.report();
    REQUIRE(z[1].state == BlockZoneState::Full);
    REQUIRE(z[2].state == BlockZoneState::Empty);
    REQUIRE(z[3].state == BlockZoneState::Full);
    REQUIRE(z[4].state == BlockZoneState::Empty);
    REQUIRE(z[5].state == BlockZoneState::Empty);
}
