// The qemu-img commands.  Each takes the command line from the command name
// on (argv[0] is "create", ...) and returns the exit status.
#pragma once

#include <vector>

#include "block/block-common.h"

namespace qemu::img {

int img_amend(int argc, char** argv);
int img_bench(int argc, char** argv);
int img_check(int argc, char** argv);
int img_commit(int argc, char** argv);
int img_compare(int argc, char** argv);
int img_convert(int argc, char** argv);
int img_create(int argc, char** argv);
int img_dd(int argc, char** argv);
int img_info(int argc, char** argv);
int img_map(int argc, char** argv);
int img_measure(int argc, char** argv);
int img_rebase(int argc, char** argv);
int img_resize(int argc, char** argv);
int img_snapshot(int argc, char** argv);

// The snapshot listing of qemu-img snapshot -l and qemu-img info: nothing
// when there are no snapshots.
void dump_snapshots(const std::vector<SnapshotInfo>& snapshots);

}  // namespace qemu::img
