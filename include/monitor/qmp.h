// The QMP dispatcher: QEMU's command table, request checks, capability
// negotiation and reply shapes (qapi/qmp-dispatch.c, monitor/qmp.c).
//
//   {"execute": "query-version", "id": 1}
//   -> {"return": {"qemu": {...}, "package": "..."}, "id": 1}
//
// A session starts in capabilities mode (only qmp_capabilities works, other
// commands get CommandNotFound "Expecting capabilities negotiation with
// 'qmp_capabilities'"); events reach it only after negotiation.  Requests
// are checked as QEMU does ("QMP input member 'X' is unexpected", "QMP
// input lacks member 'execute'", "The command X has not been found"), and
// each handler reads its arguments through QmpArgs, which reports QEMU's
// visitor messages ("Parameter 'x' is missing", "Invalid parameter type
// for 'x', expected: string", "Parameter 'x' is unexpected").
//
// Threads: the dispatcher and its handlers run in the monitor's (main)
// context; handlers reach nodes in other contexts with co_run_in().
#pragma once

#include <map>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "monitor/monitor.h"
#include "monitor/qmp-stream.h"
#include "qemu/coroutine.h"
#include "qemu/error.h"

namespace qemu {

// QEMU's QapiErrorClass values we use, and the description.
struct QmpError {
    std::string cls = "GenericError";
    std::string desc;

    bool is_set() const { return !desc.empty(); }
    void set(std::string d, std::string c = "GenericError")
    {
        desc = std::move(d);
        cls = std::move(c);
    }
    // A block-layer Error (its message; hints are not part of QMP).
    void set(const Error& err) { set(err.message); }
};

// The arguments of one command.  The take_* functions remove a member and
// return false with err set when it has the wrong JSON type, or is missing
// and `required`; an absent optional member leaves `out` untouched.  They
// are called in the order of the QAPI schema's members, which is the order
// QEMU reports errors in; finish() then reports a member left over.
class QmpArgs {
public:
    explicit QmpArgs(nlohmann::ordered_json args) : args_(std::move(args)) {}

    bool take_str(const char* name, std::optional<std::string>& out, bool required, QmpError& err);
    bool take_bool(const char* name, std::optional<bool>& out, bool required, QmpError& err);
    bool take_int(const char* name, std::optional<int64_t>& out, bool required, QmpError& err);
    // Any JSON value (for nested structures the handler checks itself).
    bool take_any(const char* name, std::optional<nlohmann::ordered_json>& out, bool required,
                  QmpError& err);
    bool finish(QmpError& err) const;

    // Checks, without taking them, that the members named in `types` have
    // the JSON type given ("string", "boolean", "integer", "object"), for
    // boxed commands whose arguments go on as a whole (blockdev-add).
    bool check_types(const std::map<std::string, std::string>& types, QmpError& err) const;
    // All members left, for boxed commands.
    nlohmann::ordered_json take_all() { return std::exchange(args_, nlohmann::ordered_json::object()); }

private:
    bool take(const char* name, const char* type, bool required, nlohmann::ordered_json& out,
              QmpError& err);
    nlohmann::ordered_json args_;
};

// A command: fills `ret` (an empty object unless it returns something) or
// sets err.
using QmpHandler = Task<void> (*)(MonitorContext& mon, QmpArgs& args, nlohmann::ordered_json& ret,
                                  QmpError& err);

// The state of one monitor connection.
struct QmpSession {
    bool negotiated = false;  // qmp_capabilities done: commands and events
    bool oob = false;         // the "oob" capability was enabled
};

class QmpDispatcher {
public:
    // Registers every command the daemon has (qmp_register_*_commands).
    explicit QmpDispatcher(MonitorContext& mon);

    void add(const std::string& name, QmpHandler handler) { commands_[name] = handler; }
    bool has(const std::string& name) const { return commands_.count(name) != 0; }

    // The reply to one input of session s, as QEMU builds it (the caller
    // prints it with to_qemu_json and "\r\n").
    Task<nlohmann::ordered_json> co_dispatch(QmpSession& s, const QmpInput& in);

    // The greeting sent on connect.
    static nlohmann::ordered_json greeting();

private:
    // Checks the request's members (exec-oob only with `allow_oob`); sets
    // name.
    bool check_request(const nlohmann::ordered_json& req, bool allow_oob, std::string& name,
                       QmpError& err) const;
    void negotiate(QmpSession& s, QmpArgs& args, QmpError& err) const;

    MonitorContext& mon_;
    std::map<std::string, QmpHandler> commands_;
};

// query-version's value: {"qemu": {"major", "minor", "micro"}, "package"}.
nlohmann::ordered_json qmp_version_info();

// Each family of commands (monitor/qmp-cmds-*.cc).
void qmp_register_control_commands(QmpDispatcher& d);
void qmp_register_block_commands(QmpDispatcher& d);
void qmp_register_export_commands(QmpDispatcher& d);
void qmp_register_blockstats_commands(QmpDispatcher& d);
// Also registers the `nbd` export type.
void qmp_register_nbd_commands(QmpDispatcher& d);

}  // namespace qemu
