// QMP commands of QEMU's block-export.json: block-export-add,
// block-export-del, query-block-exports.
#include "export/nvme-tcp.h"
#include "monitor/qmp.h"
#include "export/ublk.h"
#include "export/vduse-blk.h"
#include "monitor/qmp-convert.h"
#include "export/vhost-user-blk.h"

namespace qemu {

namespace {

Task<void> qmp_block_export_add(MonitorContext& mon, QmpArgs& args, nlohmann::ordered_json&,
                                QmpError& err)
{
    static const std::map<std::string, std::string> kTypes = {
        {"type", "string"},      {"id", "string"},         {"node-name", "string"},
        {"iothread", "string"},  {"writable", "boolean"},  {"writethrough", "boolean"},
        {"fixed-iothread", "boolean"},
    };
    if (!args.check_types(kTypes, err)) {
        co_return;
    }
    QDict opts;
    Error e;
    if (!qmp_args_to_qdict(args.take_all(), opts, e)) {
        err.set(e);
        co_return;
    }
    BlockExport* exp = co_await mon.exports.co_add(std::move(opts), e);
    if (!exp) {
        err.set(e);
    }
}

Task<void> qmp_block_export_del(MonitorContext& mon, QmpArgs& args, nlohmann::ordered_json&,
                                QmpError& err)
{
    std::optional<std::string> id, mode;
    if (!args.take_str("id", id, true, err) || !args.take_str("mode", mode, false, err) ||
        !args.finish(err)) {
        co_return;
    }
    if (mode && *mode != "safe" && *mode != "hard") {
        err.set("Parameter 'mode' does not accept value '" + *mode + "'");
        co_return;
    }
    Error e;
    int ret = co_await mon.exports.co_del(*id, mode && *mode == "hard", e);
    if (ret < 0) {
        err.set(e);
    }
}

Task<void> qmp_query_block_exports(MonitorContext& mon, QmpArgs& args,
                                   nlohmann::ordered_json& ret, QmpError& err)
{
    if (!args.finish(err)) {
        co_return;
    }
    // Newest first, as QEMU's list of exports.
    ret = nlohmann::ordered_json::array();
    std::vector<BlockExport*> exports = mon.exports.list();
    for (auto it = exports.rbegin(); it != exports.rend(); ++it) {
        BlockExport* exp = *it;
        nlohmann::ordered_json e = nlohmann::ordered_json::object();
        e["id"] = exp->id();
        e["type"] = exp->options().type;
        e["node-name"] = exp->options().node_name;
        e["shutting-down"] = exp->shutting_down();
        for (const auto& [key, value] : exp->info()) {
            e[key] = value;
        }
        ret.push_back(std::move(e));
    }
}

}  // namespace

void qmp_register_export_commands(QmpDispatcher& d)
{
    nvme_tcp_export_register();
    ublk_export_register();
    vduse_blk_export_register();
    d.add("block-export-add", qmp_block_export_add);
    d.add("block-export-del", qmp_block_export_del);
    d.add("query-block-exports", qmp_query_block_exports);
    vhost_user_blk_export_register();
}

}  // namespace qemu
