// ZoneStateMachine: the zones of an emulated zoned device, without I/O.
//
// It holds every zone's condition and write pointer and applies the NVMe
// ZNS rules (ZBC's, where they differ only in naming): which writes are
// accepted, which management operations are valid from which state, and
// the open/active resource limits, with implicitly opened zones closed
// least-recently-used first when the open limit is reached.  A driver
// (qcow2's zoned mode) owns one, does the I/O and persists what it reports.
//
// Writes are admitted at submission: admit_write() checks the request
// against the write pointer and advances it at once, so requests submitted
// in order are accepted in order and may then run concurrently.  When a
// write finishes, complete_write() moves the zone's durable frontier: the
// offset below which every admitted write has finished.  Only the frontier
// may be persisted as the write pointer (a crash must never leave a write
// pointer above data that is not there); a failed write counts as nothing:
// see complete_write().
//
// A failed operation changes nothing: a failed write is undone (its write
// pointer and the zone's condition go back; the writes admitted after it
// in its zone fail too, since they would lie above a hole), and a
// management operation whose I/O failed is undone with snapshot() and
// restore_zone().
//
// Memory: 12 bytes per zone (write pointers as 32-bit block counts from the
// zone start, so a zone is at most kMaxZoneSize), plus a small record per
// write in flight and, when an open limit is set, per implicitly open zone.
#pragma once

#include <cstdint>
#include <deque>
#include <list>
#include <unordered_map>
#include <vector>

#include "block/block-common.h"
#include "block/zoned.h"

namespace qemu {

// Write pointers are kept in 512-byte blocks from the zone start, in 32
// bits: the largest zone this can describe.
constexpr uint64_t kMaxZoneSize = uint64_t(UINT32_MAX) * 512;

// REQUIRES: zone_size, zone_capacity and device_size multiples of 512,
// zone_size <= kMaxZoneSize.
struct ZoneGeometry {
    BlockZoneModel model = BlockZoneModel::HostManaged;
    uint64_t device_size = 0;
    uint64_t zone_size = 0;
    uint64_t zone_capacity = 0;  // of every full-size zone
    uint32_t nr_zones = 0;
    uint32_t nr_conventional = 0;
    uint32_t max_open = 0;    // 0: no limit
    uint32_t max_active = 0;  // 0: no limit
};

// Conditions a zone keeps across restarts beyond what its write pointer
// says (set by fault injection).
enum class PersistentCondition : uint8_t { None = 0, ReadOnly = 1, Offline = 2 };

// Host-aware zones follow the same states, but their open and active
// limits are only the optimum (ZBC's "optimal number of open sequential
// write preferred zones"): exceeding them is never an error.  Implicitly
// open zones are still closed least-recently-used first to stay within the
// open limit while one can be.

class ZoneStateMachine {
public:
    // A write admitted and not yet completed.
    struct WriteTicket {
        uint32_t zone = UINT32_MAX;  // UINT32_MAX: conventional, nothing tracked
        uint64_t start = 0;
        uint64_t end = 0;
        BlockZoneState before = BlockZoneState::Empty;  // the zone's state at admission
        uint64_t id = 0;
        // The implicitly open zone closed to make room for this one.
        uint32_t evicted = UINT32_MAX;
        // Set when an earlier write of the zone failed: this one must fail
        // too, whatever its own I/O did.
        bool doomed = false;
    };

    // What a management operation may change in a zone.
    struct ZoneSnapshot {
        uint64_t wp;
        uint64_t durable_wp;
        BlockZoneState state;
        bool desc_ext_valid;
    };

    explicit ZoneStateMachine(const ZoneGeometry& g);

    const ZoneGeometry& geometry() const { return g_; }
    uint32_t zone_index(uint64_t offset) const { return uint32_t(offset / g_.zone_size); }
    uint64_t zone_start(uint32_t zone) const { return uint64_t(zone) * g_.zone_size; }
    uint64_t zone_length(uint32_t zone) const;
    uint64_t zone_capacity(uint32_t zone) const;
    bool is_conventional(uint32_t zone) const { return zone < g_.nr_conventional; }

    // Restores a zone from persisted state (at open).  A partly written
    // zone comes back Closed, as after a power loss, and so does an
    // unwritten one with a valid descriptor extension.  Returns false if
    // the values are impossible (the caller reports the image as corrupt).
    bool restore(uint32_t zone, uint64_t wp, PersistentCondition cond, bool desc_ext_valid);
    // Recounts open/active resources after all zones are restored; false
    // if more zones are active than the limit allows.
    bool finish_restore();

    // Checks a write of `len` bytes at `offset` (or, with append, to the
    // zone starting at `offset`) and advances the write pointer.  `pos` is
    // where the data goes.  Host-aware zones accept writes anywhere and
    // track the highest written offset.  The ticket must stay alive until
    // complete_write() and, if the write succeeded, until it is no longer
    // busy() or the durable write pointer has passed its end: until then
    // an earlier write's failure may set its `doomed`.  Offsets and lengths
    // in sequential zones that are not multiples of 512 are refused
    // (InvalidRequest).
    ZoneError admit_write(uint64_t offset, uint64_t len, bool append, uint64_t& pos,
                          WriteTicket& ticket);
    // The write has finished.  A failed one (`ok` false) is undone: the
    // write pointer goes back to its start, the zone's condition to what it
    // was before it when no earlier write of the zone is in flight (without
    // checking the open and active limits: the zone held those resources a
    // moment ago), an implicitly open zone it closed to make room is open
    // again if it is still closed, and every later write admitted to the
    // zone is doomed.
    // Neither a failed nor a doomed write moves the durable write pointer.
    void complete_write(WriteTicket& ticket, bool ok);
    // Doomed writes of the zone are still in flight: a write admitted now
    // must not start its I/O before they finish, or their data could land
    // over its own.
    bool doomed_in_flight(uint32_t zone) const;

    ZoneSnapshot snapshot(uint32_t zone) const;
    // Puts a zone back as `snap` recorded it, to undo a management
    // operation whose I/O failed (the limits are not checked, as in
    // complete_write).  The zone is marked dirty, so that the next flush
    // writes its old write pointer over whatever the failed operation may
    // have written.
    void restore_zone(uint32_t zone, const ZoneSnapshot& snap);

    ZoneError manage(BlockZoneOp op, uint32_t zone);
    // NVMe's Set Zone Descriptor Extension: an empty zone becomes Closed
    // (taking an active resource) with its descriptor extension valid.
    // The extension stays valid until the zone becomes empty again or
    // goes offline.  The caller stores the data.
    ZoneError set_desc_ext_valid(uint32_t zone);
    bool desc_ext_valid(uint32_t zone) const { return zones_[zone].flags & kDescExtValid; }
    // Writes admitted to the zone and not yet completed.
    bool busy(uint32_t zone) const { return in_flight_.count(zone) != 0; }

    BlockZoneDescriptor describe(uint32_t zone) const;
    BlockZoneState state(uint32_t zone) const { return BlockZoneState(zones_[zone].state); }
    // Reads at or above this offset (within the zone) return zeroes.
    uint64_t readable_end(uint32_t zone) const;

    // What to persist: the durable write pointer and the condition.
    uint64_t durable_wp(uint32_t zone) const { return block_offset(zone, zones_[zone].durable_wp); }
    PersistentCondition persistent_condition(uint32_t zone) const;
    // Zones whose durable write pointer or condition changed since the last
    // call (cleared by it).
    std::vector<uint32_t> take_dirty();
    // Marks a zone to persist again (a flush that took it failed).
    void mark_dirty(uint32_t zone);

    uint32_t open_count() const { return nr_open_; }
    uint32_t active_count() const { return nr_active_; }

    // The state kept for every zone (tests check that it stays small).
    static constexpr size_t kBytesPerZone = 12;
    // Heap bytes held for the zones and the implicitly open zones' LRU
    // (writes in flight and zones waiting to be persisted not counted).
    size_t zone_memory() const;

private:
    // Write pointers in 512-byte blocks from the zone start.
    struct Zone {
        uint32_t wp;          // submission write pointer
        uint32_t durable_wp;  // every admitted write below it has finished
        uint8_t state;        // BlockZoneState
        uint8_t flags;        // kDirty, kDescExtValid
    };
    static constexpr uint8_t kDirty = 1;
    static constexpr uint8_t kDescExtValid = 2;
    static_assert(sizeof(Zone) == kBytesPerZone, "keep zones small: there may be millions");
    struct Pending {
        uint64_t id;
        uint64_t start;
        uint64_t end;
        WriteTicket* owner;  // to tell it that it is doomed; null once told, or once it returns
        bool done;
        bool failed;  // failed or doomed: it does not move the durable write pointer
    };
    static constexpr uint32_t kNone = UINT32_MAX;

    uint64_t block_offset(uint32_t zone, uint32_t blocks) const
    {
        return zone_start(zone) + (uint64_t(blocks) << 9);
    }
    uint64_t wp(uint32_t zone) const { return block_offset(zone, zones_[zone].wp); }
    // REQUIRES: `offset` a multiple of 512 inside the zone or at its end.
    void set_wp(uint32_t zone, uint64_t offset)
    {
        zones_[zone].wp = uint32_t((offset - zone_start(zone)) >> 9);
    }
    void set_durable_wp(uint32_t zone, uint64_t offset)
    {
        zones_[zone].durable_wp = uint32_t((offset - zone_start(zone)) >> 9);
    }
    void set_desc_ext_flag(uint32_t zone, bool valid)
    {
        zones_[zone].flags =
            uint8_t((zones_[zone].flags & ~kDescExtValid) | (valid ? kDescExtValid : 0));
    }
    void set_state(uint32_t zone, BlockZoneState s);
    void lru_remove(uint32_t zone);
    void lru_push_front(uint32_t zone);
    // Makes an implicitly open zone the most recently used.
    void lru_touch(uint32_t zone);
    bool is_open(BlockZoneState s) const
    {
        return s == BlockZoneState::ImplicitlyOpen || s == BlockZoneState::ExplicitlyOpen;
    }
    bool is_active(BlockZoneState s) const { return is_open(s) || s == BlockZoneState::Closed; }
    bool limits_enforced() const { return g_.model != BlockZoneModel::HostAware; }
    // Makes room to open `zone` (which needs an active resource too when
    // it is not active yet), closing the LRU implicitly open zone if the
    // open limit is reached (returned in `evicted`, else kNone).
    ZoneError acquire_open(uint32_t zone, uint32_t* evicted = nullptr);
    // After a failed write: the state the zone returns to.
    BlockZoneState state_after_undo(uint32_t zone, BlockZoneState before) const;

    ZoneGeometry g_;
    std::vector<Zone> zones_;
    // Implicitly open zones, most recently used first: kept only with an
    // open limit (the only use is choosing the zone to close), so that
    // unlimited images pay nothing per open zone.
    std::list<uint32_t> lru_;
    std::unordered_map<uint32_t, std::list<uint32_t>::iterator> lru_pos_;
    uint32_t nr_open_ = 0;
    uint32_t nr_active_ = 0;
    std::unordered_map<uint32_t, std::deque<Pending>> in_flight_;
    uint64_t next_ticket_ = 1;
    std::vector<uint32_t> dirty_;
};

}  // namespace qemu
