#include "block/zone-state-machine.h"

#include <algorithm>

namespace qemu {

ZoneStateMachine::ZoneStateMachine(const ZoneGeometry& g) : g_(g), zones_(g.nr_zones)
{
    for (uint32_t z = 0; z < g_.nr_zones; z++) {
        Zone& zone = zones_[z];
        zone.wp = zone.durable_wp = zone_start(z);
        zone.lru_prev = zone.lru_next = kNone;
        zone.state = uint8_t(is_conventional(z) ? BlockZoneState::NotWritePointer : BlockZoneState::Empty);
        zone.dirty = false;
        zone.desc_ext_valid = false;
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
    // A finished zone may carry its end or its capacity as write pointer.
    zone.wp = zone.durable_wp = std::min(wp, start + zone_capacity(z));
    BlockZoneState s;
    if (cond == PersistentCondition::ReadOnly) {
        s = BlockZoneState::ReadOnly;
    } else if (cond == PersistentCondition::Offline) {
        s = BlockZoneState::Offline;
        desc_ext_valid = false;
    } else if (zone.wp == start && !desc_ext_valid) {
        s = BlockZoneState::Empty;
    } else if (zone.wp == start + zone_capacity(z)) {
        s = BlockZoneState::Full;
    } else {
        s = BlockZoneState::Closed;  // open zones come back closed
    }
    zone.state = uint8_t(s);
    zone.desc_ext_valid = desc_ext_valid;
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
    Zone& zone = zones_[z];
    if (zone.lru_prev != kNone) {
        zones_[zone.lru_prev].lru_next = zone.lru_next;
    } else {
        lru_head_ = zone.lru_next;
    }
    if (zone.lru_next != kNone) {
        zones_[zone.lru_next].lru_prev = zone.lru_prev;
    } else {
        lru_tail_ = zone.lru_prev;
    }
    zone.lru_prev = zone.lru_next = kNone;
}

void ZoneStateMachine::lru_push_front(uint32_t z)
{
    Zone& zone = zones_[z];
    zone.lru_prev = kNone;
    zone.lru_next = lru_head_;
    if (lru_head_ != kNone) {
        zones_[lru_head_].lru_prev = z;
    } else {
        lru_tail_ = z;
    }
    lru_head_ = z;
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
    if (!zones_[z].dirty) {
        zones_[z].dirty = true;
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
        if (lru_tail_ != kNone) {
            if (evicted) {
                *evicted = lru_tail_;
            }
            set_state(lru_tail_, BlockZoneState::Closed);
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
        pos = zone.wp;
    } else {
        if (!host_aware && offset != zone.wp) {
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
        lru_remove(z);  // most recently used now
        lru_push_front(z);
    }
    zone.wp = std::max(zone.wp, pos + len);
    if (zone.wp == cap_end && BlockZoneState(zone.state) != BlockZoneState::Full) {
        set_state(z, BlockZoneState::Full);
    }
    ticket = WriteTicket{z, pos, pos + len, s, next_ticket_++, evicted, false};
    in_flight_[z].push_back({ticket.id, pos, pos + len, &ticket, false, false});
    return ZoneError::None;
}

BlockZoneState ZoneStateMachine::state_after_undo(uint32_t z, BlockZoneState before) const
{
    const Zone& zone = zones_[z];
    BlockZoneState now = BlockZoneState(zone.state);
    bool unwritten = zone.wp == zone_start(z) && !zone.desc_ext_valid;
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
    Zone& zone = zones_[ticket.zone];
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
            uint64_t top = std::max(zone.durable_wp, ticket.start);
            for (auto p = q.begin(); p != self; ++p) {
                top = std::max(top, p->failed ? p->start : p->end);
            }
            zone.wp = std::min(zone.wp, top);
        } else {
            zone.wp = ticket.start;
        }
        // With earlier writes in flight, `before` is what they made it.
        set_state(ticket.zone, state_after_undo(ticket.zone, ticket.before));
        if (ticket.evicted != kNone && BlockZoneState(zones_[ticket.evicted].state) == BlockZoneState::Closed &&
            (!g_.max_open || nr_open_ < g_.max_open)) {
            set_state(ticket.evicted, BlockZoneState::ImplicitlyOpen);
        }
    }
    uint64_t before = zone.durable_wp;
    while (!q.empty() && q.front().done) {
        if (!q.front().failed) {
            zone.durable_wp = std::max(zone.durable_wp, q.front().end);
        }
        q.pop_front();
    }
    if (q.empty()) {
        in_flight_.erase(it);
    }
    if (zone.durable_wp != before) {
        mark_dirty(ticket.zone);
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
    const Zone& zone = zones_[z];
    return ZoneSnapshot{zone.wp, zone.durable_wp, BlockZoneState(zone.state), zone.desc_ext_valid};
}

void ZoneStateMachine::restore_zone(uint32_t z, const ZoneSnapshot& snap)
{
    Zone& zone = zones_[z];
    set_state(z, snap.state);
    zone.wp = snap.wp;
    zone.durable_wp = snap.durable_wp;
    zone.desc_ext_valid = snap.desc_ext_valid;
    mark_dirty(z);
}

ZoneError ZoneStateMachine::manage(BlockZoneOp op, uint32_t z)
{
    if (z >= g_.nr_zones || is_conventional(z)) {
        return ZoneError::InvalidRequest;
    }
    Zone& zone = zones_[z];
    uint64_t start = zone_start(z);
    BlockZoneState s = BlockZoneState(zone.state);
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
        set_state(z, zone.wp == start && !zone.desc_ext_valid ? BlockZoneState::Empty
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
        zone.wp = zone.durable_wp = start + zone_capacity(z);
        mark_dirty(z);
        return ZoneError::None;
    case BlockZoneOp::Reset:
        if (unusable) {
            return ZoneError::InvalidTransition;
        }
        set_state(z, BlockZoneState::Empty);
        if (zone.desc_ext_valid) {
            zone.desc_ext_valid = false;
            mark_dirty(z);
        }
        if (zone.wp != start || zone.durable_wp != start) {
            zone.wp = zone.durable_wp = start;
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
        zone.desc_ext_valid = false;
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
    zones_[z].desc_ext_valid = true;
    mark_dirty(z);
    return ZoneError::None;
}

BlockZoneDescriptor ZoneStateMachine::describe(uint32_t z) const
{
    BlockZoneDescriptor d;
    const Zone& zone = zones_[z];
    d.start = zone_start(z);
    d.length = zone_length(z);
    d.state = BlockZoneState(zone.state);
    if (is_conventional(z)) {
        d.type = BlockZoneType::Conventional;
        d.capacity = d.length;
        d.wp = d.start;
        return d;
    }
    d.type = g_.model == BlockZoneModel::HostAware ? BlockZoneType::SequentialWritePreferred
                                                  : BlockZoneType::SequentialWriteRequired;
    d.capacity = zone_capacity(z);
    d.desc_ext_valid = zone.desc_ext_valid;
    switch (d.state) {
    case BlockZoneState::Full:
    case BlockZoneState::ReadOnly:
        d.wp = d.start + d.capacity;
        break;
    case BlockZoneState::Offline:
        d.wp = d.start;
        break;
    default:
        d.wp = zone.wp;
        break;
    }
    return d;
}

uint64_t ZoneStateMachine::readable_end(uint32_t z) const
{
    if (is_conventional(z)) {
        return zone_start(z) + zone_length(z);
    }
    return zones_[z].wp;
}

PersistentCondition ZoneStateMachine::persistent_condition(uint32_t z) const
{
    switch (BlockZoneState(zones_[z].state)) {
    case BlockZoneState::ReadOnly: return PersistentCondition::ReadOnly;
    case BlockZoneState::Offline: return PersistentCondition::Offline;
    default: return PersistentCondition::None;
    }
}

std::vector<uint32_t> ZoneStateMachine::take_dirty()
{
    std::vector<uint32_t> out;
    out.swap(dirty_);
    for (uint32_t z : out) {
        zones_[z].dirty = false;
    }
    return out;
}

}  // namespace qemu
