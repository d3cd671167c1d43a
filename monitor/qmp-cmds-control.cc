// QMP commands of QEMU's control.json: query-version and quit
// (qmp_capabilities is the dispatcher's own, see qmp-dispatch.cc).
#include "monitor/qmp.h"

namespace qemu {

namespace {

// The QEMU release whose interfaces we follow (as qemu-img -V says).
constexpr int kQemuMajor = 7, kQemuMinor = 2, kQemuMicro = 0;

Task<void> qmp_query_version(MonitorContext&, QmpArgs& args, nlohmann::ordered_json& ret,
                             QmpError& err)
{
    if (args.finish(err)) {
        ret = qmp_version_info();
    }
    co_return;
}

Task<void> qmp_quit(MonitorContext& mon, QmpArgs& args, nlohmann::ordered_json&, QmpError& err)
{
    if (args.finish(err)) {
        mon.request_quit();
    }
    co_return;
}

}  // namespace

nlohmann::ordered_json qmp_version_info()
{
    nlohmann::ordered_json v = nlohmann::ordered_json::object();
    // Schema order (major, minor, micro) decides the printed order.
    v["qemu"] = {{"major", kQemuMajor}, {"minor", kQemuMinor}, {"micro", kQemuMicro}};
    v["package"] = "qemu-zoned " QEMU_ZONED_VERSION;
    return v;
}

void qmp_register_control_commands(QmpDispatcher& d)
{
    d.add("query-version", qmp_query_version);
    d.add("quit", qmp_quit);
}

}  // namespace qemu
