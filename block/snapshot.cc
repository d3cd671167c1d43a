// Internal snapshots: the generic layer between tools and drivers, and the
// defaults of formats without snapshots.  Messages are QEMU's.
#include "block/snapshot.h"

#include <cinttypes>
#include <ctime>

#include "qemu/cutils.h"

namespace qemu {

int BlockDriverState::drv_snapshot_list(std::vector<SnapshotInfo>&) const
{
    return -ENOTSUP;
}

Task<int> BlockDriverState::drv_snapshot_create(SnapshotInfo&)
{
    co_return -ENOTSUP;
}

Task<int> BlockDriverState::drv_snapshot_goto(const std::string&, Error& err)
{
    err.set("Block driver does not support snapshots");
    co_return -ENOTSUP;
}

Task<int> BlockDriverState::drv_snapshot_delete(const std::string&, const std::string&, Error& err)
{
    err.set("Block format '%.*s' used by device '' does not support internal snapshot deletion",
            int(drv().name().size()), drv().name().data());
    co_return -ENOTSUP;
}

int bdrv_snapshot_list(BlockDriverState* bs, std::vector<SnapshotInfo>& out)
{
    out.clear();
    int ret = bs->drv_snapshot_list(out);
    return ret < 0 ? ret : int(out.size());
}

bool bdrv_snapshot_find(BlockDriverState* bs, const std::string& name, SnapshotInfo& out)
{
    std::vector<SnapshotInfo> list;
    if (bdrv_snapshot_list(bs, list) < 0) {
        return false;
    }
    for (const SnapshotInfo& sn : list) {
        if (sn.name == name) {
            out = sn;
            return true;
        }
    }
    return false;
}

Task<int> bdrv_snapshot_create(BlockDriverState* bs, SnapshotInfo& sn)
{
    co_return co_await bs->drv_snapshot_create(sn);
}

Task<int> bdrv_snapshot_goto(BlockDriverState* bs, const std::string& id_or_name, Error& err)
{
    int ret = co_await bs->drv_snapshot_goto(id_or_name, err);
    if (ret < 0 && !err) {
        err.set_errno(-ret, "Failed to load snapshot");
    }
    co_return ret;
}

Task<int> bdrv_snapshot_delete(BlockDriverState* bs, const std::string& id,
                               const std::string& name, Error& err)
{
    if (id.empty() && name.empty()) {
        err.set("snapshot_id and name are both NULL");
        co_return -EINVAL;
    }
    int ret = co_await bs->drv_snapshot_delete(id, name, err);
    if (ret < 0 && !err) {
        err.set_errno(-ret, "Could not delete the snapshot");
    }
    co_return ret;
}

std::string bdrv_snapshot_dump(const SnapshotInfo* sn)
{
    if (!sn) {
        return string_printf("%-10s%-17s%8s%20s%13s%11s", "ID", "TAG", "VM SIZE", "DATE",
                             "VM CLOCK", "ICOUNT");
    }
    time_t t = sn->date_sec;
    struct tm tm;
    localtime_r(&t, &tm);
    char date[128];
    strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
    uint64_t secs = sn->vm_clock_nsec / 1000000000;
    std::string clock = string_printf("%02d:%02d:%02d.%03d", int(secs / 3600), int((secs / 60) % 60),
                                      int(secs % 60), int((sn->vm_clock_nsec / 1000000) % 1000));
    std::string icount;
    if (sn->icount != UINT64_MAX) {
        icount = string_printf("%" PRId64, int64_t(sn->icount));
    }
    return string_printf("%-9s %-16s %8s%20s%13s%11s", sn->id.c_str(), sn->name.c_str(),
                         size_to_str(sn->vm_state_size).c_str(), date, clock.c_str(),
                         icount.c_str());
}

}  // namespace qemu
