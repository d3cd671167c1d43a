// qemu-img convert onto a zoned target: zone by zone, in write pointer
// order, so that the target ends with the source's data, write pointers and
// zone conditions.  Sequential zones accept writes only at their write
// pointer, so the general copy engine (parallel, sparse, zero-skipping)
// cannot be used there.
#pragma once

#include <string>
#include <vector>

#include "convert-copy.h"

namespace qemu::img {

// Does this conversion need the zoned copy (the target is zoned)?
bool convert_needs_zones(const BlockBackend& target);

// Copies the one zoned source onto the zoned target `target_name` of the
// same geometry (zone size, zones, their types and capacities): every
// non-empty sequential target zone is reset first, then each zone gets the
// source's data up to its write pointer (conventional zones: all of it)
// and its condition (closed, explicitly open, full).  Refuses, with one
// error naming the target, several sources, a source that is not zoned or
// differs in geometry, and read-only or offline source zones; the target
// is not touched then.  Returns 0 or -errno after reporting the error.
int convert_zoned(std::vector<ConvertSource>& sources, BlockBackend& target,
                  const std::string& target_name, ProgressMeter& progress);

}  // namespace qemu::img
