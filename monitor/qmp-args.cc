// Command arguments with QEMU's QAPI visitor messages (see
// include/monitor/qmp.h).
#include "monitor/qmp.h"

namespace qemu {

namespace {

bool has_type(const nlohmann::ordered_json& v, const std::string& type)
{
    if (type == "string") {
        return v.is_string();
    }
    if (type == "boolean") {
        return v.is_boolean();
    }
    if (type == "integer") {
        // QEMU's input visitor takes a float that is an integer (1.5e3).
        return v.is_number_integer() ||
               (v.is_number_float() && v.get<double>() == double(int64_t(v.get<double>())));
    }
    if (type == "object") {
        return v.is_object();
    }
    return v.is_array();
}

}  // namespace

bool QmpArgs::take(const char* name, const char* type, bool required, nlohmann::ordered_json& out,
                   QmpError& err)
{
    auto it = args_.find(name);
    if (it == args_.end()) {
        if (required) {
            err.set(string_printf("Parameter '%s' is missing", name));
            return false;
        }
        return true;
    }
    if (type && !has_type(*it, type)) {
        err.set(string_printf("Invalid parameter type for '%s', expected: %s", name, type));
        return false;
    }
    out = std::move(*it);
    args_.erase(it);
    return true;
}

bool QmpArgs::take_str(const char* name, std::optional<std::string>& out, bool required,
                       QmpError& err)
{
    nlohmann::ordered_json v;
    if (!take(name, "string", required, v, err)) {
        return false;
    }
    if (!v.is_null()) {
        out = v.get<std::string>();
    }
    return true;
}

bool QmpArgs::take_bool(const char* name, std::optional<bool>& out, bool required, QmpError& err)
{
    nlohmann::ordered_json v;
    if (!take(name, "boolean", required, v, err)) {
        return false;
    }
    if (!v.is_null()) {
        out = v.get<bool>();
    }
    return true;
}

bool QmpArgs::take_int(const char* name, std::optional<int64_t>& out, bool required,
                       QmpError& err)
{
    nlohmann::ordered_json v;
    if (!take(name, "integer", required, v, err)) {
        return false;
    }
    if (v.is_number_float()) {
        out = int64_t(v.get<double>());
    } else if (!v.is_null()) {
        out = v.get<int64_t>();
    }
    return true;
}

bool QmpArgs::take_any(const char* name, std::optional<nlohmann::ordered_json>& out, bool required,
                       QmpError& err)
{
    nlohmann::ordered_json v;
    if (!take(name, nullptr, required, v, err)) {
        return false;
    }
    if (!v.is_null()) {
        out = std::move(v);
    }
    return true;
}

bool QmpArgs::finish(QmpError& err) const
{
    if (!args_.empty()) {
        err.set(string_printf("Parameter '%s' is unexpected", args_.begin().key().c_str()));
        return false;
    }
    return true;
}

bool QmpArgs::check_types(const std::map<std::string, std::string>& types, QmpError& err) const
{
    for (const auto& [name, type] : types) {
        auto it = args_.find(name);
        if (it != args_.end() && !has_type(*it, type)) {
            err.set(string_printf("Invalid parameter type for '%s', expected: %s", name.c_str(),
                                  type.c_str()));
            return false;
        }
    }
    return true;
}

}  // namespace qemu
