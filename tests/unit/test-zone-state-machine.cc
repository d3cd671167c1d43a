// The zone state machine: ZNS transitions, resource accounting, write
// admission and the durable write pointer.
#include <catch2/catch.hpp>

#include "block/zone-state-machine.h"

using namespace qemu;
using S = BlockZoneState;
using E = ZoneError;
using Op = BlockZoneOp;

namespace {

constexpr uint64_t kZone = 1 << 20;

ZoneGeometry geometry(uint32_t nr_zones, uint32_t conv = 0, uint32_t max_open = 0,
                      uint32_t max_active = 0, uint64_t cap = kZone)
{
    ZoneGeometry g;
    g.device_size = nr_zones * kZone;
    g.zone_size = kZone;
    g.zone_capacity = cap;
    g.nr_zones = nr_zones;
    g.nr_conventional = conv;
    g.max_open = max_open;
    g.max_active = max_active;
    return g;
}

// Writes len bytes at the zone's write pointer and completes the write.
E write_at(ZoneStateMachine& m, uint64_t offset, uint64_t len)
{
    uint64_t pos;
    ZoneStateMachine::WriteTicket t;
    E e = m.admit_write(offset, len, false, pos, t);
    if (e == E::None) {
        m.complete_write(t, true);
    }
    return e;
}

// Drives zone 0 into `s` (on a machine without limits).
void enter(ZoneStateMachine& m, uint32_t z, S s)
{
    uint64_t start = z * kZone;
    switch (s) {
    case S::Empty:
        break;
    case S::ImplicitlyOpen:
        REQUIRE(write_at(m, start, 4096) == E::None);
        break;
    case S::ExplicitlyOpen:
        REQUIRE(m.manage(Op::Open, z) == E::None);
        break;
    case S::Closed:
        REQUIRE(write_at(m, start, 4096) == E::None);
        REQUIRE(m.manage(Op::Close, z) == E::None);
        break;
    case S::Full:
        REQUIRE(m.manage(Op::Finish, z) == E::None);
        break;
    case S::ReadOnly:
        REQUIRE(m.manage(Op::SetReadOnly, z) == E::None);
        break;
    case S::Offline:
        REQUIRE(m.manage(Op::SetOffline, z) == E::None);
        break;
    default:
        FAIL("no such state");
    }
    REQUIRE(m.state(z) == s);
}

}  // namespace

TEST_CASE("zones: every management transition from every state", "[zoned][state]")
{
    // Expected result state (or error) of each operation from each state,
    // per the NVMe ZNS specification.
    struct Row {
        S from;
        Op op;
        E error;
        S to;
    };
    const Row rows[] = {
        {S::Empty, Op::Open, E::None, S::ExplicitlyOpen},
        {S::Empty, Op::Close, E::InvalidTransition, S::Empty},
        {S::Empty, Op::Finish, E::None, S::Full},
        {S::Empty, Op::Reset, E::None, S::Empty},
        {S::ImplicitlyOpen, Op::Open, E::None, S::ExplicitlyOpen},
        {S::ImplicitlyOpen, Op::Close, E::None, S::Closed},
        {S::ImplicitlyOpen, Op::Finish, E::None, S::Full},
        {S::ImplicitlyOpen, Op::Reset, E::None, S::Empty},
        {S::ExplicitlyOpen, Op::Open, E::None, S::ExplicitlyOpen},
        {S::ExplicitlyOpen, Op::Close, E::None, S::Empty},  // nothing written
        {S::ExplicitlyOpen, Op::Finish, E::None, S::Full},
        {S::ExplicitlyOpen, Op::Reset, E::None, S::Empty},
        {S::Closed, Op::Open, E::None, S::ExplicitlyOpen},
        {S::Closed, Op::Close, E::None, S::Closed},
        {S::Closed, Op::Finish, E::None, S::Full},
        {S::Closed, Op::Reset, E::None, S::Empty},
        {S::Full, Op::Open, E::InvalidTransition, S::Full},
        {S::Full, Op::Close, E::InvalidTransition, S::Full},
        {S::Full, Op::Finish, E::None, S::Full},
        {S::Full, Op::Reset, E::None, S::Empty},
        {S::ReadOnly, Op::Open, E::InvalidTransition, S::ReadOnly},
        {S::ReadOnly, Op::Close, E::InvalidTransition, S::ReadOnly},
        {S::ReadOnly, Op::Finish, E::InvalidTransition, S::ReadOnly},
        {S::ReadOnly, Op::Reset, E::InvalidTransition, S::ReadOnly},
        {S::ReadOnly, Op::SetOffline, E::None, S::Offline},
        {S::Offline, Op::Open, E::InvalidTransition, S::Offline},
        {S::Offline, Op::Reset, E::InvalidTransition, S::Offline},
        {S::Offline, Op::SetReadOnly, E::InvalidTransition, S::Offline},
    };
    for (const Row& r : rows) {
        INFO(zone_state_name(r.from) << " + " << zone_op_name(r.op));
        ZoneStateMachine m(geometry(4));
        enter(m, 1, r.from);
        REQUIRE(m.manage(r.op, 1) == r.error);
        REQUIRE(m.state(1) == r.to);
    }
}

TEST_CASE("zones: closing a written explicitly open zone keeps it closed", "[zoned][state]")
{
    ZoneStateMachine m(geometry(2));
    REQUIRE(m.manage(Op::Open, 0) == E::None);
    REQUIRE(write_at(m, 0, 512) == E::None);
    REQUIRE(m.state(0) == S::ExplicitlyOpen);  // writes keep it explicit
    REQUIRE(m.manage(Op::Close, 0) == E::None);
    REQUIRE(m.state(0) == S::Closed);
}

TEST_CASE("zones: write errors, each with its own kind", "[zoned][write]")
{
    ZoneStateMachine m(geometry(4, 1, 0, 0, kZone / 2));
    uint64_t pos;
    ZoneStateMachine::WriteTicket t;
    REQUIRE(write_at(m, kZone + 4096, 512) == E::InvalidWrite);
    REQUIRE(write_at(m, kZone, kZone / 2 + 512) == E::Boundary);  // beyond capacity
    REQUIRE(write_at(m, kZone, kZone / 2) == E::None);
    REQUIRE(m.state(1) == S::Full);  // filled to capacity
    REQUIRE(write_at(m, kZone + kZone / 2, 512) == E::Full);
    REQUIRE(m.admit_write(kZone, 512, true, pos, t) == E::Full);
    REQUIRE(m.manage(Op::SetReadOnly, 2) == E::None);
    REQUIRE(write_at(m, 2 * kZone, 512) == E::ReadOnly);
    REQUIRE(m.manage(Op::SetOffline, 3) == E::None);
    REQUIRE(write_at(m, 3 * kZone, 512) == E::Offline);
    REQUIRE(m.admit_write(kZone + 512, 512, true, pos, t) == E::InvalidRequest);  // not a zone start
    REQUIRE(m.admit_write(0, 512, true, pos, t) == E::InvalidRequest);  // conventional
    REQUIRE(write_at(m, 4 * kZone, 1) == E::InvalidRequest);           // beyond the device
    // Conventional zones take writes anywhere, but not into the next zone.
    REQUIRE(write_at(m, 1000, 3000) == E::None);
    REQUIRE(write_at(m, kZone - 512, 1024) == E::Boundary);
    REQUIRE(m.manage(Op::Reset, 0) == E::InvalidRequest);
}

TEST_CASE("zones: the last zone may be smaller", "[zoned][geometry]")
{
    ZoneGeometry g = geometry(3);
    g.device_size = 2 * kZone + kZone / 4;
    ZoneStateMachine m(g);
    BlockZoneDescriptor d = m.describe(2);
    REQUIRE(d.length == kZone / 4);
    REQUIRE(d.capacity == kZone / 4);
    REQUIRE(write_at(m, 2 * kZone, kZone / 4) == E::None);
    REQUIRE(m.state(2) == S::Full);
}

TEST_CASE("zones: open limit closes the least recently used implicit zone", "[zoned][resources]")
{
    ZoneStateMachine m(geometry(8, 0, 2, 4));
    REQUIRE(write_at(m, 0 * kZone, 512) == E::None);
    REQUIRE(write_at(m, 1 * kZone, 512) == E::None);
    REQUIRE(write_at(m, 0 * kZone + 512, 512) == E::None);  // zone 0 is now most recent
    REQUIRE(write_at(m, 2 * kZone, 512) == E::None);        // evicts zone 1
    REQUIRE(m.state(1) == S::Closed);
    REQUIRE(m.state(0) == S::ImplicitlyOpen);
    REQUIRE(m.open_count() == 2);
    REQUIRE(m.active_count() == 3);
    REQUIRE(write_at(m, 3 * kZone, 512) == E::None);  // evicts zone 0: 4 active
    REQUIRE(m.active_count() == 4);
    REQUIRE(write_at(m, 4 * kZone, 512) == E::TooManyActive);
    REQUIRE(m.state(4) == S::Empty);
    // Reopening a closed zone needs only an open resource.
    REQUIRE(write_at(m, 1 * kZone + 512, 512) == E::None);
    REQUIRE(m.state(1) == S::ImplicitlyOpen);
}

TEST_CASE("zones: explicitly open zones are never evicted", "[zoned][resources]")
{
    ZoneStateMachine m(geometry(8, 0, 2, 0));
    REQUIRE(m.manage(Op::Open, 0) == E::None);
    REQUIRE(m.manage(Op::Open, 1) == E::None);
    REQUIRE(m.manage(Op::Open, 2) == E::TooManyOpen);
    REQUIRE(write_at(m, 2 * kZone, 512) == E::TooManyOpen);
    REQUIRE(m.manage(Op::Close, 0) == E::None);  // empty again
    REQUIRE(write_at(m, 2 * kZone, 512) == E::None);
    REQUIRE(m.manage(Op::Open, 3) == E::None);  // evicts implicit zone 2
    REQUIRE(m.state(2) == S::Closed);
}

TEST_CASE("zones: finishing an empty zone needs an active resource", "[zoned][resources]")
{
    ZoneStateMachine m(geometry(4, 0, 1, 1));
    REQUIRE(write_at(m, 0, 512) == E::None);
    REQUIRE(m.manage(Op::Finish, 1) == E::TooManyActive);
    REQUIRE(m.manage(Op::Finish, 0) == E::None);  // releases zone 0's resources
    REQUIRE(m.active_count() == 0);
    REQUIRE(m.manage(Op::Finish, 1) == E::None);
    REQUIRE(m.describe(1).wp == 2 * kZone);
}

TEST_CASE("zones: appends get distinct consecutive offsets at submission", "[zoned][append]")
{
    ZoneStateMachine m(geometry(2));
    std::vector<ZoneStateMachine::WriteTicket> tickets(8);
    for (int i = 0; i < 8; i++) {
        uint64_t pos;
        REQUIRE(m.admit_write(kZone, 4096, true, pos, tickets[i]) == E::None);
        REQUIRE(pos == kZone + uint64_t(i) * 4096);
    }
    REQUIRE(m.describe(1).wp == kZone + 8 * 4096);
}

TEST_CASE("zones: the durable write pointer only covers finished writes", "[zoned][durable]")
{
    ZoneStateMachine m(geometry(2));
    uint64_t pos;
    ZoneStateMachine::WriteTicket a, b, c;
    REQUIRE(m.admit_write(0, 4096, false, pos, a) == E::None);
    REQUIRE(m.admit_write(4096, 4096, false, pos, b) == E::None);
    REQUIRE(m.admit_write(8192, 4096, false, pos, c) == E::None);
    REQUIRE(m.busy(0));
    m.complete_write(c, true);  // out of order: nothing is durable yet
    REQUIRE(m.durable_wp(0) == 0);
    m.complete_write(a, true);
    REQUIRE(m.durable_wp(0) == 4096);
    REQUIRE(m.take_dirty() == std::vector<uint32_t>{0});
    m.complete_write(b, true);
    REQUIRE(m.durable_wp(0) == 12288);
    REQUIRE_FALSE(m.busy(0));
    REQUIRE(m.take_dirty() == std::vector<uint32_t>{0});
    REQUIRE(m.take_dirty().empty());
}

TEST_CASE("zones: restore brings partly written zones back closed", "[zoned][restore]")
{
    ZoneStateMachine m(geometry(5, 1, 0, 0, kZone / 2));
    REQUIRE(m.restore(1, kZone, PersistentCondition::None, false));
    REQUIRE(m.restore(2, 2 * kZone + 4096, PersistentCondition::None, false));
    REQUIRE(m.restore(3, 4 * kZone, PersistentCondition::None, false));  // finish set the zone end
    REQUIRE(m.restore(4, 4 * kZone, PersistentCondition::ReadOnly, false));
    REQUIRE_FALSE(m.restore(4, 3 * kZone, PersistentCondition::None, false));  // outside the zone
    REQUIRE_FALSE(m.restore(0, 0, PersistentCondition::None, false));          // conventional
    REQUIRE(m.finish_restore());
    REQUIRE(m.state(1) == S::Empty);
    REQUIRE(m.state(2) == S::Closed);
    REQUIRE(m.state(3) == S::Full);
    REQUIRE(m.describe(3).wp == 3 * kZone + kZone / 2);
    REQUIRE(m.state(4) == S::ReadOnly);
    REQUIRE(m.active_count() == 1);
    REQUIRE(m.open_count() == 0);
    REQUIRE(m.persistent_condition(4) == PersistentCondition::ReadOnly);
}

TEST_CASE("zones: host-aware zones accept writes anywhere", "[zoned][host-aware]")
{
    ZoneGeometry g = geometry(2);
    g.model = BlockZoneModel::HostAware;
    ZoneStateMachine m(g);
    REQUIRE(write_at(m, 8192, 4096) == E::None);
    REQUIRE(m.describe(0).wp == 12288);
    REQUIRE(write_at(m, 0, 4096) == E::None);
    REQUIRE(m.describe(0).wp == 12288);  // tracks the highest write
    REQUIRE(m.describe(0).type == BlockZoneType::SequentialWritePreferred);
}

TEST_CASE("zones: host-aware limits are an optimum, not an error", "[zoned][host-aware]")
{
    ZoneGeometry g = geometry(6, 0, 2, 3);
    g.model = BlockZoneModel::HostAware;
    ZoneStateMachine m(g);
    REQUIRE(m.manage(Op::Open, 0) == E::None);
    REQUIRE(m.manage(Op::Open, 1) == E::None);
    REQUIRE(m.manage(Op::Open, 2) == E::None);  // a host-managed zone would fail here
    REQUIRE(write_at(m, 3 * kZone, 4096) == E::None);
    REQUIRE(m.manage(Op::Finish, 4) == E::None);
    REQUIRE(m.open_count() == 4);
    // Implicitly open zones still make way while an explicit one is over.
    REQUIRE(write_at(m, 5 * kZone, 4096) == E::None);
    REQUIRE(m.state(3) == S::Closed);
    REQUIRE(m.state(5) == S::ImplicitlyOpen);
}

TEST_CASE("zones: descriptor extensions close an empty zone until it is empty again",
          "[zoned][desc-ext]")
{
    ZoneStateMachine m(geometry(5, 1, 0, 2));
    REQUIRE(m.set_desc_ext_valid(0) == E::InvalidRequest);  // conventional
    REQUIRE(m.set_desc_ext_valid(1) == E::None);
    REQUIRE(m.state(1) == S::Closed);
    REQUIRE(m.desc_ext_valid(1));
    REQUIRE(m.describe(1).desc_ext_valid);
    REQUIRE(m.describe(1).wp == kZone);
    REQUIRE(m.active_count() == 1);
    REQUIRE(m.take_dirty() == std::vector<uint32_t>{1});
    REQUIRE(m.set_desc_ext_valid(1) == E::InvalidTransition);  // not empty any more
    // Opened and closed again without a write, it stays closed.
    REQUIRE(m.manage(Op::Open, 1) == E::None);
    REQUIRE(m.manage(Op::Close, 1) == E::None);
    REQUIRE(m.state(1) == S::Closed);
    // It takes an active resource: the second zone fills the limit.
    REQUIRE(m.set_desc_ext_valid(2) == E::None);
    REQUIRE(m.set_desc_ext_valid(3) == E::TooManyActive);
    REQUIRE(m.state(3) == S::Empty);
    // Finishing keeps it; reset and offline clear it.
    REQUIRE(m.manage(Op::Finish, 2) == E::None);
    REQUIRE(m.desc_ext_valid(2));
    m.take_dirty();
    REQUIRE(m.manage(Op::Reset, 2) == E::None);
    REQUIRE_FALSE(m.desc_ext_valid(2));
    REQUIRE(m.take_dirty() == std::vector<uint32_t>{2});
    REQUIRE(m.manage(Op::SetOffline, 1) == E::None);
    REQUIRE_FALSE(m.desc_ext_valid(1));
    REQUIRE(m.set_desc_ext_valid(1) == E::InvalidTransition);
    // Restored with a valid extension, an unwritten zone comes back closed.
    ZoneStateMachine r(geometry(5, 1, 0, 2));
    REQUIRE(r.restore(1, kZone, PersistentCondition::None, true));
    REQUIRE(r.restore(2, 2 * kZone, PersistentCondition::Offline, true));
    REQUIRE(r.finish_restore());
    REQUIRE(r.state(1) == S::Closed);
    REQUIRE(r.desc_ext_valid(1));
    REQUIRE(r.active_count() == 1);
    REQUIRE_FALSE(r.desc_ext_valid(2));
}

TEST_CASE("zones: report descriptors", "[zoned][report]")
{
    ZoneStateMachine m(geometry(3, 1, 0, 0, kZone / 2));
    REQUIRE(write_at(m, kZone, 8192) == E::None);
    BlockZoneDescriptor conv = m.describe(0);
    REQUIRE(conv.type == BlockZoneType::Conventional);
    REQUIRE(conv.state == S::NotWritePointer);
    REQUIRE(conv.capacity == kZone);
    BlockZoneDescriptor d = m.describe(1);
    REQUIRE(d.start == kZone);
    REQUIRE(d.length == kZone);
    REQUIRE(d.capacity == kZone / 2);
    REQUIRE(d.wp == kZone + 8192);
    REQUIRE(d.state == S::ImplicitlyOpen);
    REQUIRE(m.readable_end(1) == kZone + 8192);
}

TEST_CASE("zones: a failed write is undone and dooms the later ones", "[zoned][undo]")
{
    ZoneStateMachine m(geometry(2));
    uint64_t pos;
    ZoneStateMachine::WriteTicket a, b, c;
    REQUIRE(m.admit_write(0, 4096, false, pos, a) == E::None);
    REQUIRE(m.admit_write(4096, 4096, false, pos, b) == E::None);
    REQUIRE(m.admit_write(8192, 4096, false, pos, c) == E::None);
    m.complete_write(c, true);
    m.complete_write(b, false);
    REQUIRE(c.doomed);
    REQUIRE_FALSE(a.doomed);
    REQUIRE(m.describe(0).wp == 4096);
    REQUIRE(m.state(0) == S::ImplicitlyOpen);  // a is still in flight
    m.complete_write(a, true);
    REQUIRE(m.durable_wp(0) == 4096);
    REQUIRE_FALSE(m.busy(0));
    // The zone goes on from where the failed write started.
    ZoneStateMachine::WriteTicket d;
    REQUIRE(m.admit_write(4096, 4096, false, pos, d) == E::None);
    m.complete_write(d, true);
    REQUIRE(m.durable_wp(0) == 8192);
}

TEST_CASE("zones: a failed write leaves the zone's condition as it was", "[zoned][undo]")
{
    ZoneStateMachine m(geometry(3, 0, 1, 2));
    uint64_t pos;
    ZoneStateMachine::WriteTicket t;
    REQUIRE(m.admit_write(0, 4096, false, pos, t) == E::None);
    REQUIRE(m.state(0) == S::ImplicitlyOpen);
    m.complete_write(t, false);
    REQUIRE(m.state(0) == S::Empty);
    REQUIRE(m.open_count() == 0);
    REQUIRE(m.active_count() == 0);
    REQUIRE_FALSE(m.busy(0));
    // A write filling the zone fails: the zone is not full.
    REQUIRE(write_at(m, 0, 4096) == E::None);
    REQUIRE(m.admit_write(4096, kZone - 4096, false, pos, t) == E::None);
    REQUIRE(m.state(0) == S::Full);
    m.complete_write(t, false);
    REQUIRE(m.state(0) == S::ImplicitlyOpen);
    REQUIRE(m.describe(0).wp == 4096);
    REQUIRE(m.open_count() == 1);
}
