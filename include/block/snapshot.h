// Internal snapshots from the callers' side (what QEMU's block/snapshot.c
// offers): qemu-img snapshot and qemu-img info use these; drivers implement
// the drv_snapshot_* methods (include/block/block_int.h).
#pragma once

#include <string>
#include <vector>

#include "block/block_int.h"

namespace qemu {

// The node's snapshots, in the driver's order; -ENOTSUP for a format
// without snapshots.
int bdrv_snapshot_list(BlockDriverState* bs, std::vector<SnapshotInfo>& out);
// The first snapshot called `name`: by name only, as QEMU's
// bdrv_snapshot_find() (qemu-img snapshot -d looks snapshots up this way).
bool bdrv_snapshot_find(BlockDriverState* bs, const std::string& name, SnapshotInfo& out);
// Takes a snapshot named sn.name with sn's date and clocks; sets sn.id.
Task<int> bdrv_snapshot_create(BlockDriverState* bs, SnapshotInfo& sn);
// Reverts to the snapshot with that ID, else the first with that name.
// On failure err says why ("Failed to load snapshot: ..." unless the
// driver knew better).
Task<int> bdrv_snapshot_goto(BlockDriverState* bs, const std::string& id_or_name, Error& err);
// Deletes the first snapshot with this ID and name (either may be empty,
// not both).
Task<int> bdrv_snapshot_delete(BlockDriverState* bs, const std::string& id,
                               const std::string& name, Error& err);

// One line of QEMU's snapshot listing (bdrv_snapshot_dump()), without the
// newline: the column titles for nullptr, else the snapshot.  The date is
// in local time.
std::string bdrv_snapshot_dump(const SnapshotInfo* sn);

}  // namespace qemu
