// qemu-img convert and zoned images (convert-zoned.h).
#include "convert-zoned.h"

#include "convert-copy.h"
#include "qemu/error.h"

namespace qemu::img {

namespace {

// Every zone of a zoned node, or an empty vector after reporting an error.
std::vector<BlockZoneDescriptor> report_all(BlockBackend& blk, const std::string& name)
{
    uint32_t n = blk.bs()->limits().nr_zones;
    std::vector<BlockZoneDescriptor> zones(n);
    int ret = run_sync(blk.ctx(), blk.co_zone_report(0, n, zones.data()));
    if (ret < 0) {
        error_report("%s: Could not report the zones: %s", name.c_str(), result_strerror(ret));
        return {};
    }
    zones.resize(n);
    return zones;
}

bool is_zoned(BlockBackend& blk)
{
    return blk.bs()->limits().zoned != BlockZoneModel::None;
}

const char* zone_op_verb(BlockZoneOp op)
{
    switch (op) {
    case BlockZoneOp::Finish:
        return "finish";
    case BlockZoneOp::SetReadOnly:
        return "make read-only";
    case BlockZoneOp::Close:
        return "close";
    case BlockZoneOp::Open:
        return "open";
    default:
        return zone_op_name(op);
    }
}

bool same_layout(const std::vector<BlockZoneDescriptor>& a, const std::vector<BlockZoneDescriptor>& b)
{
    if (a.size() != b.size()) {
        return false;
    }
    for (size_t i = 0; i < a.size(); i++) {
        if (a[i].start != b[i].start || a[i].length != b[i].length || a[i].capacity != b[i].capacity ||
            a[i].type != b[i].type) {
            return false;
        }
    }
    return true;
}

// Resets every sequential zone of the target that is not empty.  Resets
// come before any write: a written zone takes writes only at its write
// pointer, and an open or closed zone counts against the device's open and
// active limits.
bool reset_written_zones(BlockBackend& target, const std::string& target_name,
                         const std::vector<BlockZoneDescriptor>& zones)
{
    for (const BlockZoneDescriptor& z : zones) {
        if (z.type == BlockZoneType::Conventional || z.state == BlockZoneState::Empty) {
            continue;
        }
        int ret = run_sync(target.ctx(), target.co_zone_mgmt(BlockZoneOp::Reset, z.start, z.length));
        if (ret < 0) {
            error_report("%s: Could not reset the zone at byte %llu: %s", target_name.c_str(),
                         (unsigned long long)z.start, result_strerror(ret));
            return false;
        }
    }
    return true;
}

}  // namespace

bool prepare_zoned_target(std::vector<ConvertSource>& sources,
                          const std::vector<std::string>& source_names, BlockBackend& target,
                          const std::string& target_name, ZonedTarget& zt)
{
    std::vector<BlockZoneDescriptor> zones = report_all(target, target_name);
    if (zones.empty()) {
        return false;
    }
    zt.zone_size = target.bs()->limits().zone_size;
    zt.sequential.clear();
    zt.fill_end.clear();
    for (const BlockZoneDescriptor& z : zones) {
        zt.sequential.push_back(z.type != BlockZoneType::Conventional);
        zt.fill_end.push_back(z.start);
    }
    size_t zoned_sources = 0;
    for (ConvertSource& src : sources) {
        zoned_sources += is_zoned(*src.blk);
    }
    if (zoned_sources == 0) {
        return reset_written_zones(target, target_name, zones);  // written up to the data found
    }
    if (sources.size() > 1) {
        error_report("%s: Cannot carry the zone state of several images into one zoned image",
                     target_name.c_str());
        return false;
    }
    std::vector<BlockZoneDescriptor> from = report_all(*sources[0].blk, source_names[0]);
    if (from.empty()) {
        return false;
    }
    if (!same_layout(from, zones)) {
        error_report("%s: Cannot carry the zone state over: the zone layout differs from that of '%s'",
                     target_name.c_str(), source_names[0].c_str());
        return false;
    }
    for (size_t i = 0; i < from.size(); i++) {
        const BlockZoneDescriptor& z = from[i];
        if (z.state == BlockZoneState::Offline) {
            error_report("%s: Cannot convert: zone %zu is offline, its data cannot be read",
                         source_names[0].c_str(), i);
            return false;
        }
        if (zt.sequential[i]) {
            zt.fill_end[i] = z.wp;  // full and read-only zones: start + capacity
        }
    }
    zt.fill_known = true;
    zt.source_zones = std::move(from);
    return reset_written_zones(target, target_name, zones);
}

int finish_zoned_target(BlockBackend& target, const std::string& target_name, const ZonedTarget& zt)
{
    for (const BlockZoneDescriptor& z : zt.source_zones) {
        // The copy left the written zones implicitly open.
        BlockZoneOp op;
        if (z.state == BlockZoneState::Full) {
            op = BlockZoneOp::Finish;
        } else if (z.state == BlockZoneState::ReadOnly) {
            op = BlockZoneOp::SetReadOnly;
        } else if (z.state == BlockZoneState::Closed) {
            op = BlockZoneOp::Close;
        } else if (z.state == BlockZoneState::ExplicitlyOpen) {
            op = BlockZoneOp::Open;
        } else {
            continue;
        }
        int ret = run_sync(target.ctx(), target.co_zone_mgmt(op, z.start, z.length));
        if (ret < 0) {
            error_report("%s: Could not %s the zone at byte %llu: %s", target_name.c_str(),
                         zone_op_verb(op),
                         (unsigned long long)z.start, result_strerror(ret));
            return ret;
        }
    }
    return 0;
}

void warn_zone_layout_dropped(std::vector<ConvertSource>& sources,
                              const std::vector<std::string>& source_names, BlockBackend& target)
{
    if (is_zoned(target)) {
        return;
    }
    for (size_t i = 0; i < sources.size(); i++) {
        if (is_zoned(*sources[i].blk)) {
            error_report("warning: %s: The zone layout is dropped: the target is not zoned (create it "
                         "with -o zone.mode=... to keep it)",
                         source_names[i].c_str());
        }
    }
}

}  // namespace qemu::img
