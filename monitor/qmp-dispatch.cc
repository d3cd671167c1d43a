// The QMP dispatcher (see include/monitor/qmp.h).
#include "monitor/qmp.h"

namespace qemu {

QmpDispatcher::QmpDispatcher(MonitorContext& mon) : mon_(mon)
{
    qmp_register_control_commands(*this);
    qmp_register_block_commands(*this);
    qmp_register_export_commands(*this);
    qmp_register_nbd_commands(*this);
}

nlohmann::ordered_json QmpDispatcher::greeting()
{
    nlohmann::ordered_json qmp = nlohmann::ordered_json::object();
    qmp["version"] = qmp_version_info();
    // Offered as QEMU's socket monitors do; none of our commands is
    // allow-oob, so enabling it only makes exec-oob get its refusal.
    qmp["capabilities"] = nlohmann::ordered_json::array({"oob"});
    return {{"QMP", qmp}};
}

// QEMU's qmp_dispatch_check_obj().
bool QmpDispatcher::check_request(const nlohmann::ordered_json& req, bool allow_oob,
                                  std::string& name, QmpError& err) const
{
    bool has_exec = false, has_oob = false;
    for (auto it = req.begin(); it != req.end(); ++it) {
        const std::string& key = it.key();
        if (key == "execute" || (key == "exec-oob" && allow_oob)) {
            if (!it->is_string()) {
                err.set("QMP input member '" + key + "' must be a string");
                return false;
            }
            (key == "execute" ? has_exec : has_oob) = true;
            name = it->get<std::string>();
        } else if (key == "arguments") {
            if (!it->is_object()) {
                err.set("QMP input member 'arguments' must be an object");
                return false;
            }
        } else if (key != "id") {
            err.set("QMP input member '" + key + "' is unexpected");
            return false;
        }
    }
    if (has_exec && has_oob) {
        err.set("QMP input must not contain both 'execute' and 'exec-oob'");
        return false;
    }
    if (!has_exec && !has_oob) {
        err.set("QMP input lacks member 'execute'");
        return false;
    }
    if (has_oob) {
        err.set("The command " + name + " does not support OOB");
        return false;
    }
    return true;
}

void QmpDispatcher::negotiate(QmpSession& s, QmpArgs& args, QmpError& err) const
{
    std::optional<nlohmann::ordered_json> enable;
    if (!args.take_any("enable", enable, false, err) || !args.finish(err)) {
        return;
    }
    if (enable && !enable->is_array()) {
        err.set("Invalid parameter type for 'enable', expected: array");
        return;
    }
    bool oob = false;
    for (const auto& cap : enable.value_or(nlohmann::ordered_json::array())) {
        // QEMU 7.2's input visitor names list elements 'null'.
        if (!cap.is_string()) {
            err.set("Invalid parameter type for 'null', expected: string");
            return;
        }
        if (cap.get<std::string>() != "oob") {
            err.set("Parameter 'null' does not accept value '" + cap.get<std::string>() + "'");
            return;
        }
        oob = true;
    }
    s.oob = oob;
    s.negotiated = true;
}

Task<nlohmann::ordered_json> QmpDispatcher::co_dispatch(QmpSession& s, const QmpInput& in)
{
    QmpError err;
    nlohmann::ordered_json ret = nlohmann::ordered_json::object();
    const nlohmann::ordered_json* id = nullptr;
    std::string name;
    if (!in.ok) {
        err.set(in.error);
    } else if (!in.value.is_object()) {
        err.set("QMP input must be a JSON object");
    } else {
        auto id_it = in.value.find("id");
        id = id_it == in.value.end() ? nullptr : &*id_it;
        if (check_request(in.value, s.oob, name, err)) {
            auto args_it = in.value.find("arguments");
            QmpArgs args(args_it == in.value.end() ? nlohmann::ordered_json::object() : *args_it);
            if (name == "qmp_capabilities" && !s.negotiated) {
                negotiate(s, args, err);
            } else if (!s.negotiated) {
                err.set("Expecting capabilities negotiation with 'qmp_capabilities'",
                        "CommandNotFound");
            } else if (name == "qmp_capabilities") {
                err.set("Capabilities negotiation is already complete, command ignored",
                        "CommandNotFound");
            } else if (!has(name)) {
                err.set("The command " + name + " has not been found", "CommandNotFound");
            } else {
                co_await commands_.at(name)(mon_, args, ret, err);
            }
        }
    }
    nlohmann::ordered_json rsp = nlohmann::ordered_json::object();
    if (err.is_set()) {
        rsp["error"] = {{"class", err.cls}, {"desc", err.desc}};
    } else {
        rsp["return"] = std::move(ret);
    }
    if (id) {
        rsp["id"] = *id;
    }
    co_return rsp;
}

}  // namespace qemu
