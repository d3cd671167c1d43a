// QMP commands of QEMU's block-core.json for the graph: blockdev-add,
// blockdev-del, query-named-block-nodes, block_resize.
#include "block/qapi.h"
#include "monitor/qmp-convert.h"
#include "monitor/qmp.h"

namespace qemu {

namespace {

Task<void> qmp_blockdev_add(MonitorContext& mon, QmpArgs& args, nlohmann::ordered_json&,
                            QmpError& err)
{
    // BlockdevOptions' base members with their QAPI types; the driver's
    // own keys are checked by its option schema.
    static const std::map<std::string, std::string> kTypes = {
        {"driver", "string"},       {"node-name", "string"},     {"discard", "string"},
        {"cache", "object"},        {"read-only", "boolean"},    {"auto-read-only", "boolean"},
        {"force-share", "boolean"}, {"detect-zeroes", "string"},
    };
    if (!args.check_types(kTypes, err)) {
        co_return;
    }
    QDict opts;
    Error e;
    if (!qmp_args_to_qdict(args.take_all(), opts, e) || !blockdev_options_check(opts, e)) {
        err.set(e);
        co_return;
    }
    BlockDriverState* bs = co_await mon.graph.co_add(std::move(opts), e);
    if (!bs) {
        err.set(e);
    }
}

Task<void> qmp_blockdev_del(MonitorContext& mon, QmpArgs& args, nlohmann::ordered_json&,
                            QmpError& err)
{
    std::optional<std::string> node;
    if (!args.take_str("node-name", node, true, err) || !args.finish(err)) {
        co_return;
    }
    Error e;
    int ret = co_await mon.graph.co_del(*node, e);
    if (ret < 0) {
        err.set(e);
    }
}

const char* zone_model_name(BlockZoneModel m)
{
    return m == BlockZoneModel::HostManaged ? "host-managed" : "host-aware";
}

// qemu-zoned's addition to BlockDeviceInfo ("x-zoned"): QEMU's QMP has
// no zone geometry.
nlohmann::ordered_json zoned_info(const BlockLimits& bl)
{
    nlohmann::ordered_json z = nlohmann::ordered_json::object();
    z["model"] = zone_model_name(bl.zoned);
    z["zone-size"] = int64_t(bl.zone_size);
    z["zone-capacity"] = int64_t(bl.zone_capacity);
    z["nr-zones"] = int64_t(bl.nr_zones);
    z["max-open-zones"] = int64_t(bl.max_open_zones);
    z["max-active-zones"] = int64_t(bl.max_active_zones);
    z["max-append-bytes"] = int64_t(bl.max_append_bytes);
    return z;
}

bool option_on(const BlockDriverState& bs, const char* key)
{
    const std::string* v = bs.options().get(key);
    return v && *v == "on";
}

// QEMU's BlockDeviceInfo (bdrv_block_device_info) members, schema order;
// I/O throttling is not supported, so its limits are all 0.
Task<nlohmann::ordered_json> block_device_info(std::shared_ptr<BlockDriverState> bs)
{
    ImageInfo image = co_await co_run_in<ImageInfo>(
        bs->ctx(), [&]() { return bdrv_co_query_image_info(*bs); });
    nlohmann::ordered_json info = nlohmann::ordered_json::object();
    info["file"] = bs->filename();
    info["node-name"] = bs->node_name();
    info["ro"] = bs->read_only();
    info["drv"] = std::string(bs->drv().name());
    if (!bs->backing_file().empty()) {
        info["backing_file"] = bs->backing_file();
    }
    int depth = 0;
    for (BdrvChild* b = bs->backing(); b; b = b->bs->backing()) {
        depth++;
    }
    info["backing_file_depth"] = depth;
    info["encrypted"] = false;
    const std::string* dz = bs->options().get("detect-zeroes");
    info["detect_zeroes"] = dz ? *dz : "off";
    for (const char* k : {"bps", "bps_rd", "bps_wr", "iops", "iops_rd", "iops_wr"}) {
        info[k] = 0;
    }
    info["image"] = image_info_to_json(image);
    info["cache"] = {{"writeback", true},
                     {"direct", option_on(*bs, "cache.direct")},
                     {"no-flush", option_on(*bs, "cache.no-flush")}};
    info["write_threshold"] = 0;
    if (bs->limits().zoned != BlockZoneModel::None) {
        info["x-zoned"] = zoned_info(bs->limits());
    }
    co_return info;
}

Task<void> qmp_query_named_block_nodes(MonitorContext& mon, QmpArgs& args,
                                       nlohmann::ordered_json& ret, QmpError& err)
{
    std::optional<bool> flat;
    if (!args.take_bool("flat", flat, false, err) || !args.finish(err)) {
        co_return;
    }
    // Newest first, as QEMU's list (built by prepending).
    ret = nlohmann::ordered_json::array();
    std::vector<std::shared_ptr<BlockDriverState>> nodes = mon.graph.nodes();
    for (auto it = nodes.rbegin(); it != nodes.rend(); ++it) {
        nlohmann::ordered_json info = co_await block_device_info(*it);
        ret.push_back(std::move(info));
    }
}

// Truncates the node through a backend of its own (RESIZE permission,
// sharing everything) in the node's context.  Not drained, unlike QEMU's
// qmp_block_resize: our backends hold requests back while their node is
// drained, this one's truncate included.
Task<int> resize_node(std::shared_ptr<BlockDriverState> bs, int64_t size, Error& err)
{
    std::unique_ptr<BlockBackend> blk =
        BlockBackend::attach(bs, BLK_PERM_RESIZE, BLK_PERM_ALL, "", err);
    if (!blk) {
        co_return -EPERM;
    }
    co_return co_await co_run_in<int>(bs->ctx(), [&]() -> Task<int> {
        int ret = co_await blk->co_truncate(uint64_t(size), false, PreallocMode::Off, 0, err);
        co_await blk->co_close();
        co_return ret;
    });
}

Task<void> qmp_block_resize(MonitorContext& mon, QmpArgs& args, nlohmann::ordered_json&,
                            QmpError& err)
{
    std::optional<std::string> device, node_name;
    std::optional<int64_t> size;
    if (!args.take_str("device", device, false, err) ||
        !args.take_str("node-name", node_name, false, err) ||
        !args.take_int("size", size, true, err) || !args.finish(err)) {
        co_return;
    }
    // The daemon has no devices (named BlockBackends): only node names.
    std::shared_ptr<BlockDriverState> bs = node_name ? mon.graph.lookup(*node_name) : nullptr;
    if (!bs) {
        err.set(string_printf("Cannot find device='%s' nor node-name='%s'",
                              device.value_or("").c_str(), node_name.value_or("").c_str()));
        co_return;
    }
    if (*size < 0) {
        err.set("Parameter 'size' expects a >0 size");
        co_return;
    }
    Error e;
    int ret = co_await resize_node(bs, *size, e);
    if (ret < 0) {
        err.set(e);
    }
}

}  // namespace

void qmp_register_block_commands(QmpDispatcher& d)
{
    d.add("blockdev-add", qmp_blockdev_add);
    d.add("blockdev-del", qmp_blockdev_del);
    d.add("query-named-block-nodes", qmp_query_named_block_nodes);
    d.add("block_resize", qmp_block_resize);
    qmp_register_blockstats_commands(d);
}

}  // namespace qemu
