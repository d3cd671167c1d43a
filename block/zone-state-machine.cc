#include "block/zone-state-machine.h"

#include <algorithm>
#include <cassert>

namespace qemu {

ZoneStateMachine::ZoneStateMachine(const ZoneGeometry& g)
    : g_(g), zones_(g.nr_zones, Zone{0, 0, uint8_t(BlockZoneState::Empty), 0})
{
    assert(g_.zone_size <= kMaxZoneSize && g_.zone_size % 512 == 0);
    for (uint32_t z = 0; z < g_.nr_conventional && z < g_.nr_zones; z++) {
        zones_[z].state = uint8_t(BlockZoneState::NotWritePointer);
    }
}

uint64_t ZoneStateMachine::zone_length(uint32_t zone) const
{
    uint64_t start = zone_start(zone);
    return std::min(g_.zone_size, g_.device_size - start);
}

uint64_t ZoneStateMachine::zone_capacity(uint32_t zone) const
{
    return std::min(g_.zone_capacity, zone_length(zone));
}

bool ZoneStateMachine::restore(uint32_t z, uint64_t wp, PersistentCondition cond,
                               bool desc_ext_valid)
{
    if (z >= g_.nr_zones || is_conventional(z)) {
        return false;
    }
    uint64_t start = zone_start(z);
    if (wp < start || wp > start + zone_length(z)) {
        return false;
    }
    Zone& zone = zones_[z];
    if (wp % 512) {
        return false;
    }
    // A finished zone may carry its end or its capacity as write pointer.
    wp = std::min(wp, start + zone_capacity(z));
    set_wp(z, wp);
    set_durable_wp(z, wp);
    BlockZoneState s;
    if (cond == PersistentCondition::ReadOnly) {
        s = BlockZoneState::ReadOnly;
    } else if (cond == PersistentCondition::Offline) {
        s = BlockZoneState::Offline;
        desc_ext_valid = false;
    } else if (wp == start && !desc_ext_valid) {
        s = BlockZoneState::Empty;
    } else if (wp == start + zone_capacity(z)) {
        s = BlockZoneState::Full;
    } else {
        s = BlockZoneState::Closed;  // open zones come back closed
    }
    zone.state = uint8_t(s);
    set_desc_ext_flag(z, desc_ext_valid);
    return true;
}

bool ZoneStateMachine::finish_restore()
{
    nr_open_ = nr_active_ = 0;
    for (const Zone& zone : zones_) {
        BlockZoneState s = BlockZoneState(zone.state);
        nr_open_ += is_open(s);
        nr_active_ += is_active(s);
    }
    // More closed zones than the active limit can only come from an image
    // written without limits; they stay usable (finish or reset them), but
    // no further zone can become active until enough of them are.
    return true;
}

void ZoneStateMachine::lru_remove(uint32_t z)
{
    if (lru_pos_.empty()) {
        return;  // no open limit: no hashing on every write
    }
    auto it = lru_pos_.find(z);
    if (it != lru_pos_.end()) {
        lru_.erase(it->second);
        lru_pos_.erase(it);
    }
}

void ZoneStateMachine::lru_push_front(uint32_t z)
{
    if (!g_.max_open) {
        return;  // nothing is ever closed to make room
    }
    lru_.push_front(z);
    lru_pos_[z] = lru_.begin();
}

void ZoneStateMachine::lru_touch(uint32_t z)
{
    if (lru_pos_.empty()) {
        return;
    }
    auto it = lru_pos_.find(z);
    if (it != lru_pos_.end()) {
        lru_.splice(lru_.begin(), lru_, it->second);  // iterators stay valid
    }
}

void ZoneStateMachine::set_state(uint32_t z, BlockZoneState s)
{
    Zone& zone = zones_[z];
    BlockZoneState old = BlockZoneState(zone.state);
    if (old == s) {
        return;
    }
    nr_open_ -= is_open(old);
    nr_active_ -= is_active(old);
    nr_open_ += is_open(s);
    nr_active_ += is_active(s);
    if (old == BlockZoneState::ImplicitlyOpen) {
        lru_remove(z);
    }
    if (s == BlockZoneState::ImplicitlyOpen) {
        lru_push_front(z);
    }
    if ((old == BlockZoneState::ReadOnly || old == BlockZoneState::Offline) !=
        (s == BlockZoneState::ReadOnly || s == BlockZoneState::Offline)) {
        mark_dirty(z);  // the persistent condition changed
    }
    zone.state = uint8_t(s);
}

void ZoneStateMachine::mark_dirty(uint32_t z)
{
    if (!(zones_[z].flags & kDirty)) {
        zones_[z].flags |= kDirty;
        dirty_.push_back(z);
    }
}

ZoneError ZoneStateMachine::acquire_open(uint32_t z, uint32_t* evicted)
{
    BlockZoneState s = BlockZoneState(zones_[z].state);
    if (is_open(s)) {
        return ZoneError::None;
    }
    if (!is_active(s) && g_.max_active && nr_active_ >= g_.max_active && limits_enforced()) {
        return ZoneError::TooManyActive;
    }
    if (g_.max_open && nr_open_ >= g_.max_open) {
        if (!lru_.empty()) {
            uint32_t victim = lru_.back();
            if (evicted) {
                *evicted = victim;
            }
            set_state(victim, BlockZoneState::Closed);
        } else if (limits_enforced()) {
            return ZoneError::TooManyOpen;  // all open zones are explicitly open
        }
    }
    return ZoneError::None;
}

ZoneError ZoneStateMachine::admit_write(uint64_t offset, uint64_t len, bool append, uint64_t& pos,
                                        WriteTicket& ticket)
{
    ticket = WriteTicket{};
    if (offset >= g_.device_size || len > g_.device_size - offset) {
        return ZoneError::InvalidRequest;
    }
    uint32_t z = zone_index(offset);
    if (is_conventional(z)) {
        if (append) {
            return ZoneError::InvalidRequest;
        }
        if (len && !is_conventional(zone_index(offset + len - 1))) {
            return ZoneError::Boundary;
        }
        pos = offset;
        return ZoneError::None;
    }
    if (offset % 512 || len % 512) {
        return ZoneError::InvalidRequest;  // write pointers are kept in blocks
    }
    Zone& zone = zones_[z];
    uint64_t start = zone_start(z);
    uint64_t cap_end = start + zone_capacity(z);
    if (append && offset != start) {
        return ZoneError::InvalidRequest;  // whatever the zone's state
    }
    switch (BlockZoneState(zone.state)) {
    case BlockZoneState::Offline:
        return ZoneError::Offline;
    case BlockZoneState::ReadOnly:
        return ZoneError::ReadOnly;
    case BlockZoneState::Full:
        if (g_.model != BlockZoneModel::HostAware || append) {
            return ZoneError::Full;
        }
        break;
    default:
        break;
    }
    bool host_aware = g_.model == BlockZoneModel::HostAware;
    if (append) {
        pos = wp(z);
    } else {
        if (!host_aware && offset != wp(z)) {
            return ZoneError::InvalidWrite;
        }
        pos = offset;
    }
    if (pos + len > cap_end) {
        return ZoneError::Boundary;
    }
    BlockZoneState s = BlockZoneState(zone.state);
    uint32_t evicted = kNone;
    if (s == BlockZoneState::Empty || s == BlockZoneState::Closed) {
        ZoneError e = acquire_open(z, &evicted);
        if (e != ZoneError::None) {
            return e;
        }
        set_state(z, BlockZoneState::ImplicitlyOpen);
    } else if (s == BlockZoneState::ImplicitlyOpen) {
        lru_touch(z);
    }
    set_wp(z, std::max(wp(z), pos + len));
    if (wp(z) == cap_end && BlockZoneState(zone.state) != BlockZoneState::Full) {
        set_state(z, BlockZoneState::Full);
    }
    ticket = WriteTicket{z, pos, pos + len, s, next_ticket_++, evicted, false};
    in_flight_[z].push_back({ticket.id, pos, pos + len, &ticket, false, false});
    return ZoneError::None;
}

BlockZoneState ZoneStateMachine::state_after_undo(uint32_t z, BlockZoneState before) const
{
    BlockZoneState now = state(z);
    bool unwritten = wp(z) == zone_start(z) && !desc_ext_valid(z);
    // Only what writes did is undone: an explicit open or close, or a
    // fault, since the write's admission stays.
    if (now == BlockZoneState::ImplicitlyOpen || now == BlockZoneState::Full) {
        if (before == BlockZoneState::Empty || before == BlockZoneState::Closed) {
            return unwritten ? BlockZoneState::Empty : BlockZoneState::Closed;
        }
        return before;
    }
    if (now == BlockZoneState::Closed && unwritten) {
        return BlockZoneState::Empty;
    }
    return now;
}

void ZoneStateMachine::complete_write(WriteTicket& ticket, bool ok)
{
    if (ticket.zone == UINT32_MAX) {
        return;
    }
    auto it = in_flight_.find(ticket.zone);
    if (it == in_flight_.end()) {
        return;
    }
    std::deque<Pending>& q = it->second;
    auto self = std::find_if(q.begin(), q.end(), [&](const Pending& p) { return p.id == ticket.id; });
    if (self == q.end()) {
        return;
    }
    self->done = true;
    uint32_t z = ticket.zone;
    if (!ok || ticket.doomed) {
        self->failed = true;
        self->owner = nullptr;  // it returns at once
    }
    if (!ok && !ticket.doomed) {
        // Undo: back to where this write started.  In a host-managed zone
        // every later write lies above it and is doomed (told once: its
        // owner may return as soon as it knows).
        if (g_.model != BlockZoneModel::HostAware) {
            for (auto later = self + 1; later != q.end(); ++later) {
                later->failed = true;
                if (later->owner) {
                    later->owner->doomed = true;
                    later->owner = nullptr;
                }
            }
        }
        if (g_.model == BlockZoneModel::HostAware) {
            uint64_t top = std::max(durable_wp(z), ticket.start);
            for (auto p = q.begin(); p != self; ++p) {
                top = std::max(top, p->failed ? p->start : p->end);
            }
            set_wp(z, std::min(wp(z), top));
        } else {
            set_wp(z, ticket.start);
        }
        // With earlier writes in flight, `before` is what they made it.
        set_state(ticket.zone, state_after_undo(ticket.zone, ticket.before));
        if (ticket.evicted != kNone && BlockZoneState(zones_[ticket.evicted].state) == BlockZoneState::Closed &&
            (!g_.max_open || nr_open_ < g_.max_open)) {
            set_state(ticket.evicted, BlockZoneState::ImplicitlyOpen);
        }
    }
    uint64_t before = durable_wp(z);
    uint64_t durable = before;
    while (!q.empty() && q.front().done) {
        if (!q.front().failed) {
            durable = std::max(durable, q.front().end);
        }
        q.pop_front();
    }
    if (q.empty()) {
        in_flight_.erase(it);
    }
    if (durable != before) {
        set_durable_wp(z, durable);
        mark_dirty(z);
    }
}

bool ZoneStateMachine::doomed_in_flight(uint32_t z) const
{
    auto it = in_flight_.find(z);
    if (it == in_flight_.end()) {
        return false;
    }
    return std::any_of(it->second.begin(), it->second.end(),
                       [](const Pending& p) { return p.failed && !p.done; });
}

ZoneStateMachine::ZoneSnapshot ZoneStateMachine::snapshot(uint32_t z) const
{
    return ZoneSnapshot{wp(z), durable_wp(z), state(z), desc_ext_valid(z)};
}

void ZoneStateMachine::restore_zone(uint32_t z, const ZoneSnapshot& snap)
{
    set_state(z, snap.state);
    set_wp(z, snap.wp);
    set_durable_wp(z, snap.durable_wp);
    set_desc_ext_flag(z, snap.desc_ext_valid);
    mark_dirty(z);
}

ZoneError ZoneStateMachine::manage(BlockZoneOp op, uint32_t z)
{
    if (z >= g_.nr_zones || is_conventional(z)) {
        return ZoneError::InvalidRequest;
    }
    uint64_t start = zone_start(z);
    BlockZoneState s = state(z);
    bool unusable = s == BlockZoneState::ReadOnly || s == BlockZoneState::Offline;
    switch (op) {
    case BlockZoneOp::Open:
        if (s == BlockZoneState::ExplicitlyOpen) {
            return ZoneError::None;
        }
        if (s == BlockZoneState::Full || unusable) {
            return ZoneError::InvalidTransition;
        }
        if (s != BlockZoneState::ImplicitlyOpen) {
            ZoneError e = acquire_open(z);
            if (e != ZoneError::None) {
                return e;
            }
        }
        set_state(z, BlockZoneState::ExplicitlyOpen);
        return ZoneError::None;
    case BlockZoneOp::Close:
        if (s == BlockZoneState::Closed) {
            return ZoneError::None;
        }
        if (!is_open(s)) {
            return ZoneError::InvalidTransition;
        }
        // An open zone nothing was written to goes back to empty, unless
        // its descriptor extension keeps it closed.
        set_state(z, wp(z) == start && !desc_ext_valid(z) ? BlockZoneState::Empty
                                                          : BlockZoneState::Closed);
        return ZoneError::None;
    case BlockZoneOp::Finish:
        if (s == BlockZoneState::Full) {
            return ZoneError::None;
        }
        if (unusable) {
            return ZoneError::InvalidTransition;
        }
        if (s == BlockZoneState::Empty && g_.max_active && nr_active_ >= g_.max_active &&
            limits_enforced()) {
            return ZoneError::TooManyActive;
        }
        set_state(z, BlockZoneState::Full);
        set_wp(z, start + zone_capacity(z));
        set_durable_wp(z, start + zone_capacity(z));
        mark_dirty(z);
        return ZoneError::None;
    case BlockZoneOp::Reset:
        if (unusable) {
            return ZoneError::InvalidTransition;
        }
        set_state(z, BlockZoneState::Empty);
        if (desc_ext_valid(z)) {
            set_desc_ext_flag(z, false);
            mark_dirty(z);
        }
        if (wp(z) != start || durable_wp(z) != start) {
            set_wp(z, start);
            set_durable_wp(z, start);
            mark_dirty(z);
        }
        return ZoneError::None;
    case BlockZoneOp::SetReadOnly:
        if (s == BlockZoneState::Offline) {
            return ZoneError::InvalidTransition;
        }
        set_state(z, BlockZoneState::ReadOnly);
        return ZoneError::None;
    case BlockZoneOp::SetOffline:
        set_state(z, BlockZoneState::Offline);
        set_desc_ext_flag(z, false);
        return ZoneError::None;
    }
    return ZoneError::InvalidRequest;
}

ZoneError ZoneStateMachine::set_desc_ext_valid(uint32_t z)
{
    if (z >= g_.nr_zones || is_conventional(z)) {
        return ZoneError::InvalidRequest;
    }
    if (BlockZoneState(zones_[z].state) != BlockZoneState::Empty) {
        return ZoneError::InvalidTransition;
    }
    if (g_.max_active && nr_active_ >= g_.max_active && limits_enforced()) {
        return ZoneError::TooManyActive;
    }
    set_state(z, BlockZoneState::Closed);
    set_desc_ext_flag(z, true);
    mark_dirty(z);
    return ZoneError::None;
}

BlockZoneDescriptor ZoneStateMachine::describe(uint32_t z) const
{
    BlockZoneDescriptor d;
    d.start = zone_start(z);
    d.length = zone_length(z);
    d.state = state(z);
    if (is_conventional(z)) {
        d.type = BlockZoneType::Conventional;
        d.capacity = d.length;
        d.wp = d.start;
        return d;
    }
    d.type = g_.model == BlockZoneModel::HostAware ? BlockZoneType::SequentialWritePreferred
                                                  : BlockZoneType::SequentialWriteRequired;
    d.capacity = zone_capacity(z);
    d.desc_ext_valid = desc_ext_valid(z);
    switch (d.state) {
    case BlockZoneState::Full:
    case BlockZoneState::ReadOnly:
        d.wp = d.start + d.capacity;
        break;
    case BlockZoneState::Offline:
        d.wp = d.start;
        break;
    default: d.wp = wp(z); break;
    }
    return d;
}

uint64_t ZoneStateMachine::readable_end(uint32_t z) const
{
    if (is_conventional(z)) {
        return zone_start(z) + zone_length(z);
    }
    return wp(z);
}

PersistentCondition ZoneStateMachine::persistent_condition(uint32_t z) const
{
    switch (BlockZoneState(zones_[z].state)) {
    case BlockZoneState::ReadOnly: return PersistentCondition::ReadOnly;
    case BlockZoneState::Offline: return PersistentCondition::Offline;
    default: return PersistentCondition::None;
    }
}

size_t ZoneStateMachine::zone_memory() const
{
    // A list node holds two links and the value; a hash node a link, the
    // key, the iterator and its cached hash, plus a bucket pointer.
    size_t lru_node = 2 * sizeof(void*) + sizeof(uint32_t);
    size_t pos_node = sizeof(void*) + sizeof(uint32_t) + sizeof(void*) + sizeof(size_t);
    return zones_.capacity() * sizeof(Zone) + lru_.size() * lru_node + lru_pos_.size() * pos_node +
           lru_pos_.bucket_count() * sizeof(void*);
}

std::vector<uint32_t> ZoneStateMachine::take_dirty()
{
    std::vector<uint32_t> out;
    out.swap(dirty_);
    for (uint32_t z : out) {
        zones_[z].flags &= uint8_t(~kDirty);
    }
    return out;
}

}  // namespace qemu
