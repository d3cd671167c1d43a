// ImageInfo of a node (see include/block/qapi.h).
#include "block/qapi.h"

#include <algorithm>
#include <cstdio>

#include "qemu/qjson.h"

namespace qemu {

Task<ImageInfo> bdrv_co_query_image_info(BlockDriverState& bs)
{
    ImageInfo info;
    info.filename = bs.filename();
    info.format = std::string(bs.drv().name());
    info.virtual_size = bs.total_bytes();
    int64_t allocated = co_await bs.drv_get_allocated_file_size();
    if (allocated >= 0) {
        info.actual_size = allocated;
    }
    BlockDriverInfo bdi;
    if (bs.drv_get_info(bdi) >= 0) {
        if (bdi.cluster_size != 0) {
            info.cluster_size = bdi.cluster_size;
        }
        info.dirty_flag = bdi.is_dirty;
    }
    if (!bs.backing_file().empty()) {
        info.backing_filename = bs.backing_file();
        if (!bs.backing_format().empty()) {
            info.backing_format = bs.backing_format();
        }
        Error err;  // as QEMU: no full name, no field, no error
        info.full_backing_filename = bdrv_backing_filename_to_open(bs, err);
    }
    bs.drv_get_specific_info(info.format_specific);
    bdrv_snapshot_list(&bs, info.snapshots);
    co_return info;
}

ImageInfo bdrv_query_image_info(BlockDriverState& bs)
{
    return run_sync(bs.ctx(), bdrv_co_query_image_info(bs));
}

nlohmann::ordered_json image_info_to_json(const ImageInfo& info)
{
    nlohmann::ordered_json obj = nlohmann::ordered_json::object();
    obj["filename"] = info.filename;
    obj["format"] = info.format;
    if (info.dirty_flag) {
        obj["dirty-flag"] = *info.dirty_flag;
    }
    if (info.actual_size) {
        obj["actual-size"] = *info.actual_size;
    }
    obj["virtual-size"] = int64_t(info.virtual_size);
    if (info.cluster_size) {
        obj["cluster-size"] = int64_t(*info.cluster_size);
    }
    if (info.backing_filename) {
        obj["backing-filename"] = *info.backing_filename;
    }
    if (info.full_backing_filename) {
        obj["full-backing-filename"] = *info.full_backing_filename;
    }
    if (info.backing_format) {
        obj["backing-filename-format"] = *info.backing_format;
    }
    if (!info.snapshots.empty()) {
        nlohmann::ordered_json list = nlohmann::ordered_json::array();
        for (const SnapshotInfo& sn : info.snapshots) {
            // QAPI's SnapshotInfo, in schema order.
            nlohmann::ordered_json s = nlohmann::ordered_json::object();
            s["id"] = sn.id;
            s["name"] = sn.name;
            s["vm-state-size"] = int64_t(sn.vm_state_size);
            s["date-sec"] = int64_t(sn.date_sec);
            s["date-nsec"] = int64_t(sn.date_nsec);
            s["vm-clock-sec"] = int64_t(sn.vm_clock_nsec / 1000000000);
            s["vm-clock-nsec"] = int64_t(sn.vm_clock_nsec % 1000000000);
            if (sn.icount != UINT64_MAX) {
                s["icount"] = int64_t(sn.icount);
            }
            list.push_back(s);
        }
        obj["snapshots"] = list;
    }
    if (info.format_specific.is_object()) {
        obj["format-specific"] = info.format_specific;
    }
    return obj;
}

namespace {

void dump_member(const std::string& label, const nlohmann::ordered_json& value, int indent)
{
    bool composite = value.is_object() || value.is_array();
    printf("%*s%s:%c", indent * 4, "", label.c_str(), composite ? '\n' : ' ');
    if (composite) {
        bdrv_image_info_specific_dump(value, indent + 1);
    } else {
        printf("%s\n", scalar_to_string(value).c_str());
    }
}

}  // namespace

void bdrv_image_info_specific_dump(const nlohmann::ordered_json& data, int indent)
{
    if (data.is_array()) {
        for (size_t i = 0; i < data.size(); i++) {
            dump_member("[" + std::to_string(i) + "]", data[i], indent);
        }
        return;
    }
    for (const QdictMember& m : qdict_members(data)) {
        std::string label = *m.key;
        std::replace(label.begin(), label.end(), '-', ' ');
        dump_member(label, *m.value, indent);
    }
}

}  // namespace qemu
