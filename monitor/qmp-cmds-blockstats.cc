// query-blockstats (QEMU's block-core.json BlockStats, with the zone
// append counters of QEMU >= 8.1).
//
// Without query-nodes QEMU lists its named BlockBackends; the daemon's
// backends are its exports', named by their ids, so each export is listed
// with "device" = its id and its backend's accounting (block/accounting.h).
// With query-nodes, every node, whose own counters (QEMU keeps none but
// wr_highest_offset per node) are zero.
#include "monitor/qmp.h"

namespace qemu {

namespace {

// BlockDeviceStats, schema order.
nlohmann::ordered_json device_stats(const BlockAcctStats* s)
{
    static const BlockAcctStats kNone;
    const BlockAcctStats& st = s ? *s : kNone;
    auto c = [&](BlockAcctType t) -> const BlockAcctCounters& { return st.get(t); };
    using T = BlockAcctType;
    nlohmann::ordered_json j = nlohmann::ordered_json::object();
    j["rd_bytes"] = c(T::Read).bytes;
    j["wr_bytes"] = c(T::Write).bytes;
    j["zone_append_bytes"] = c(T::ZoneAppend).bytes;
    j["unmap_bytes"] = c(T::Unmap).bytes;
    j["rd_operations"] = c(T::Read).ops;
    j["wr_operations"] = c(T::Write).ops;
    j["zone_append_operations"] = c(T::ZoneAppend).ops;
    j["flush_operations"] = c(T::Flush).ops;
    j["unmap_operations"] = c(T::Unmap).ops;
    j["rd_total_time_ns"] = c(T::Read).total_time_ns;
    j["wr_total_time_ns"] = c(T::Write).total_time_ns;
    j["zone_append_total_time_ns"] = c(T::ZoneAppend).total_time_ns;
    j["flush_total_time_ns"] = c(T::Flush).total_time_ns;
    j["unmap_total_time_ns"] = c(T::Unmap).total_time_ns;
    j["wr_highest_offset"] = st.wr_highest_offset();
    // Requests are not merged above the drivers.
    for (const char* k : {"rd_merged", "wr_merged", "zone_append_merged", "unmap_merged"}) {
        j[k] = 0;
    }
    if (st.last_done_ns() >= 0) {
        j["idle_time_ns"] = AioContext::now_ns() - st.last_done_ns();
    }
    j["failed_rd_operations"] = c(T::Read).failed;
    j["failed_wr_operations"] = c(T::Write).failed;
    j["failed_zone_append_operations"] = c(T::ZoneAppend).failed;
    j["failed_flush_operations"] = c(T::Flush).failed;
    j["failed_unmap_operations"] = c(T::Unmap).failed;
    j["invalid_rd_operations"] = c(T::Read).invalid;
    j["invalid_wr_operations"] = c(T::Write).invalid;
    j["invalid_zone_append_operations"] = c(T::ZoneAppend).invalid;
    j["invalid_flush_operations"] = c(T::Flush).invalid;
    j["invalid_unmap_operations"] = c(T::Unmap).invalid;
    // Backends count failed and invalid requests; nodes count nothing.
    j["account_invalid"] = s != nullptr;
    j["account_failed"] = s != nullptr;
    j["timed_stats"] = nlohmann::ordered_json::array();
    return j;
}

// A node's BlockStats: its (zero) counters, then its file ("parent") and
// backing children, as QEMU's bdrv_query_bds_stats.
nlohmann::ordered_json node_stats(const BlockDriverState& bs, const BlockAcctStats* acct,
                                  const std::string* device)
{
    nlohmann::ordered_json j = nlohmann::ordered_json::object();
    if (device) {
        j["device"] = *device;
    }
    if (!bs.node_name().empty()) {
        j["node-name"] = bs.node_name();
    }
    j["stats"] = device_stats(acct);
    if (BdrvChild* file = bs.file()) {
        j["parent"] = node_stats(*file->bs, nullptr, nullptr);
    }
    if (BdrvChild* backing = bs.backing()) {
        j["backing"] = node_stats(*backing->bs, nullptr, nullptr);
    }
    return j;
}

Task<void> qmp_query_blockstats(MonitorContext& mon, QmpArgs& args, nlohmann::ordered_json& ret,
                                QmpError& err)
{
    std::optional<bool> query_nodes;
    if (!args.take_bool("query-nodes", query_nodes, false, err) || !args.finish(err)) {
        co_return;
    }
    ret = nlohmann::ordered_json::array();
    if (query_nodes.value_or(false)) {
        for (const auto& bs : mon.graph.nodes()) {
            ret.push_back(node_stats(*bs, nullptr, nullptr));
        }
        co_return;
    }
    for (BlockExport* exp : mon.exports.list()) {
        // The counters belong to the export's context: copied there.
        BlockAcctStats acct = co_await co_run_in<BlockAcctStats>(
            exp->ctx(), [&]() -> Task<BlockAcctStats> { co_return exp->blk().stats(); });
        ret.push_back(node_stats(*exp->blk().bs(), &acct, &exp->id()));
    }
}

}  // namespace

void qmp_register_blockstats_commands(QmpDispatcher& d)
{
    d.add("query-blockstats", qmp_query_blockstats);
}

}  // namespace qemu
