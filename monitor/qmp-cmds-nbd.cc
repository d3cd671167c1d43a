// The daemon's NBD server: --nbd-server and QMP nbd-server-start /
// nbd-server-stop (QEMU's blockdev-nbd.c).
//
// The command line takes a flat SocketAddress (addr.type=unix,addr.path=P);
// QMP takes the legacy nested one ({"addr": {"type": "unix", "data":
// {"path": P}}}).  Both end in nbd_server_start_flat().
#include "export/nbd-server.h"
#include "monitor/qmp-convert.h"
#include "monitor/qmp.h"

namespace qemu {

bool nbd_server_start_flat(AioContext& ctx, QDict& opts, const std::string& addr_prefix,
                           Error& err)
{
    SocketAddress addr;
    if (!socket_address_take(opts, addr_prefix, addr, err)) {
        return false;
    }
    // No TLS objects exist here, so no id can name one.
    for (const char* key : {"tls-creds", "tls-authz"}) {
        if (std::optional<std::string> id = opts.take(key)) {
            err.set("No TLS credentials with id '%s'", id->c_str());
            return false;
        }
    }
    std::optional<uint64_t> max_conn = take_number(opts, "max-connections", 100, err);
    std::optional<uint64_t> handshake =
        max_conn ? take_number(opts, "handshake-max-seconds", 10, err) : std::nullopt;
    if (!handshake) {
        return false;
    }
    if (!opts.empty()) {
        err.set("Parameter '%s' is unexpected", opts.begin()->first.c_str());
        return false;
    }
    return nbd_server_start(ctx, addr, uint32_t(*max_conn), uint32_t(*handshake), err);
}

namespace {

Task<void> qmp_nbd_server_start(MonitorContext& mon, QmpArgs& args, nlohmann::ordered_json&,
                                QmpError& err)
{
    static const std::map<std::string, std::string> kTypes = {
        {"addr", "object"},           {"tls-creds", "string"},
        {"tls-authz", "string"},      {"max-connections", "integer"},
        {"handshake-max-seconds", "integer"},
    };
    if (!args.check_types(kTypes, err)) {
        co_return;
    }
    nlohmann::ordered_json all = args.take_all();
    if (!all.contains("addr")) {
        err.set("Parameter 'addr' is missing");
        co_return;
    }
    // SocketAddressLegacy: the type's members under "data".
    nlohmann::ordered_json& addr = all["addr"];
    if (addr.contains("type") && !addr.contains("data")) {
        err.set("Parameter 'addr.data' is missing");
        co_return;
    }
    if (addr.contains("data") && !addr["data"].is_object()) {
        err.set("Invalid parameter type for 'addr.data', expected: object");
        co_return;
    }
    nlohmann::ordered_json data = addr.contains("data") ? addr["data"] : nlohmann::ordered_json::object();
    if (addr.contains("type")) {
        data["type"] = addr["type"];
    }
    addr.erase("data");
    addr.erase("type");
    if (!addr.empty()) {
        err.set("Parameter 'addr." + addr.begin().key() + "' is unexpected");
        co_return;
    }
    all["addr"] = {{"data", data}};
    QDict opts;
    Error e;
    if (!qmp_args_to_qdict(all, opts, e) ||
        !nbd_server_start_flat(mon.graph.main_ctx(), opts, "addr.data.", e)) {
        err.set(e);
    }
}

Task<void> qmp_nbd_server_stop(MonitorContext& mon, QmpArgs& args, nlohmann::ordered_json&,
                               QmpError& err)
{
    if (!args.finish(err)) {
        co_return;
    }
    Error e;
    int ret = co_await nbd_server_co_stop_all(mon.exports, e);
    if (ret < 0) {
        err.set(e);
    }
}

}  // namespace

Task<int> nbd_server_co_stop_all(BlockExportRegistry& exports, Error& err)
{
    if (!nbd_server_get()) {
        err.set("NBD server not running");
        co_return -ENOENT;
    }
    // As QEMU: the server's exports go first (BLOCK_EXPORT_DELETED each).
    for (BlockExport* exp : exports.list()) {
        if (exp->options().type == "nbd" && !exp->shutting_down()) {
            Error ignored;
            co_await exports.co_del(exp->id(), true, ignored);
        }
    }
    co_return co_await nbd_server_co_stop(err);
}

void qmp_register_nbd_commands(QmpDispatcher& d)
{
    nbd_export_register();
    d.add("nbd-server-start", qmp_nbd_server_start);
    d.add("nbd-server-stop", qmp_nbd_server_stop);
}

}  // namespace qemu
