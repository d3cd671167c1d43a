// qemu-img convert and zoned images.  A zoned target is written zone by
// zone from each zone's start, in order, with the holes before data written
// as zeroes (a sequential zone takes writes only at its write pointer), up
// to where the data ends -- or, from a zoned source of the same zone
// layout, up to the source's write pointer, after which full and read-only
// zones are made full and read-only too, closed and explicitly open zones
// closed and opened: the zone state is carried over.  The target may hold
// data already (convert -n onto a zoned device or a used image): its
// written sequential zones are reset first.  A refused conversion leaves
// the target untouched.
// A zoned source converted into a plain image loses its zone layout, which
// convert says.
#pragma once

#include <string>
#include <vector>

#include "block/block-backend.h"

namespace qemu::img {

struct ConvertSource;

struct ZonedTarget {
    uint64_t zone_size = 0;
    std::vector<bool> sequential;    // per zone
    std::vector<uint64_t> fill_end;  // per zone: where writing it stops (bytes)
    bool fill_known = false;         // from a zoned source; else from the data found
    std::vector<BlockZoneDescriptor> source_zones;  // a zoned source's, to carry over
};

// Describes a zoned target for the copy and resets the target's written
// sequential zones, so that the copy writes each from its start; false
// (after reporting why, naming the target) when the zone state cannot be
// carried over -- the target untouched then -- or a reset failed.
// `target` is zoned.
bool prepare_zoned_target(std::vector<ConvertSource>& sources,
                          const std::vector<std::string>& source_names, BlockBackend& target,
                          const std::string& target_name, ZonedTarget& zt);
// After the copy: makes the zones that are full, read-only, closed or
// explicitly open in the source so in the target; 0 or a negative error,
// reported.
int finish_zoned_target(BlockBackend& target, const std::string& target_name, const ZonedTarget& zt);
// A zoned source into a target that is not: warns that the zone layout is
// dropped.
void warn_zone_layout_dropped(std::vector<ConvertSource>& sources,
                              const std::vector<std::string>& source_names, BlockBackend& target);

}  // namespace qemu::img
