// The nbd driver's file names, as QEMU's block/nbd.c parses them:
//   nbd://HOST[:PORT]/[EXPORT], nbd+tcp://..., nbd+unix:///[EXPORT]?socket=PATH,
//   nbd:HOST:PORT[:exportname=EXPORT], nbd:unix:PATH[:exportname=EXPORT].
#include "nbd-uri.h"

#include <cctype>
#include <string_view>

#include "block/nbd.h"
#include "qemu/cutils.h"

namespace qemu::nbd {

namespace {

int hex_value(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    c = char(tolower(static_cast<unsigned char>(c)));
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

// %XX escapes decoded; false for a malformed escape.
bool percent_decode(std::string_view in, std::string& out)
{
    out.clear();
    for (size_t i = 0; i < in.size(); i++) {
        if (in[i] != '%') {
            out += in[i];
            continue;
        }
        if (i + 2 >= in.size()) {
            return false;
        }
        int hi = hex_value(in[i + 1]);
        int lo = hex_value(in[i + 2]);
        if (hi < 0 || lo < 0) {
            return false;
        }
        out += char(hi * 16 + lo);
        i += 2;
    }
    return true;
}

bool is_port(std::string_view s)
{
    if (s.empty() || s.size() > 5) {
        return false;
    }
    for (char c : s) {
        if (!isdigit(static_cast<unsigned char>(c))) {
            return false;
        }
    }
    return std::stoul(std::string(s)) <= 65535;
}

// "host", "host:port", "[v6]" or "[v6]:port" of a URI's authority.
bool split_authority(std::string_view auth, std::string& host, std::string& port)
{
    size_t at = auth.rfind('@');
    if (at != std::string_view::npos) {
        auth.remove_prefix(at + 1);  // user info names nobody here
    }
    std::string_view rest;
    if (!auth.empty() && auth[0] == '[') {
        size_t close = auth.find(']');
        if (close == std::string_view::npos) {
            return false;
        }
        host = std::string(auth.substr(1, close - 1));
        rest = auth.substr(close + 1);
    } else {
        size_t colon = auth.find(':');
        host = std::string(auth.substr(0, colon));
        rest = colon == std::string_view::npos ? std::string_view() : auth.substr(colon);
    }
    if (rest.empty()) {
        port.clear();
        return true;
    }
    if (rest[0] != ':') {
        return false;
    }
    port = std::string(rest.substr(1));
    return port.empty() || is_port(port);
}

bool parse_uri(const std::string& filename, QDict& options)
{
    size_t sep = filename.find("://");
    std::string scheme = filename.substr(0, sep);
    bool is_unix = scheme == "nbd+unix";
    if (!is_unix && scheme != "nbd" && scheme != "nbd+tcp") {
        return false;
    }
    std::string_view rest = std::string_view(filename).substr(sep + 3);
    rest = rest.substr(0, rest.find('#'));
    size_t q = rest.find('?');
    std::string_view query = q == std::string_view::npos ? "" : rest.substr(q + 1);
    rest = rest.substr(0, q);
    size_t slash = rest.find('/');
    std::string_view auth = rest.substr(0, slash);
    std::string_view path = slash == std::string_view::npos ? "" : rest.substr(slash + 1);
    std::string host, port, exp;
    if (!split_authority(auth, host, port) || !percent_decode(path, exp)) {
        return false;
    }
    if (is_unix) {
        // Exactly one query parameter, socket=PATH, and no authority.
        std::string socket;
        if (!auth.empty() || !starts_with(query, "socket=") || query.find('&') != query.npos ||
            query.find(';') != query.npos || !percent_decode(query.substr(7), socket)) {
            return false;
        }
        options.set("server.type", "unix");
        options.set("server.path", socket);
    } else {
        if (host.empty() || !query.empty()) {
            return false;
        }
        options.set("server.type", "inet");
        options.set("server.host", host);
        options.set("server.port", port.empty() ? std::to_string(kDefaultPort) : port);
    }
    if (!exp.empty()) {
        options.set("export", exp);
    }
    return true;
}

// nbd:HOST:PORT and nbd:unix:PATH, each with an optional :exportname=X.
bool parse_legacy(const std::string& filename, QDict& options, Error& err)
{
    std::string spec = filename;
    constexpr std::string_view kExportOpt = ":exportname=";
    size_t en = spec.find(kExportOpt);
    if (en != std::string::npos) {
        std::string exp = spec.substr(en + kExportOpt.size());
        if (exp.empty()) {
            return true;  // QEMU ignores the whole name then
        }
        options.set("export", exp);
        spec.resize(en);
    }
    if (!starts_with(spec, "nbd:")) {
        err.set("File name string for NBD must start with 'nbd:'");
        return false;
    }
    std::string host_spec = spec.substr(4);
    if (host_spec.empty()) {
        return true;
    }
    if (starts_with(host_spec, "unix:")) {
        options.set("server.type", "unix");
        options.set("server.path", host_spec.substr(5));
        return true;
    }
    std::string host, port;
    size_t colon = host_spec.rfind(':');
    bool ok = colon != std::string::npos && colon + 1 < host_spec.size();
    if (ok) {
        host = host_spec.substr(0, colon);
        port = host_spec.substr(colon + 1);
        if (!host.empty() && host[0] == '[') {
            ok = host.back() == ']';
            host = host.substr(1, host.size() - 2);
        }
    }
    if (!ok) {
        err.set("error parsing address '%s'", host_spec.c_str());
        return false;
    }
    options.set("server.type", "inet");
    options.set("server.host", host);
    options.set("server.port", port);
    return true;
}

}  // namespace

bool parse_filename(const std::string& filename, QDict& options, Error& err)
{
    if (filename.find("://") != std::string::npos) {
        if (!parse_uri(filename, options)) {
            err.set("No valid URL specified");
            return false;
        }
        return true;
    }
    return parse_legacy(filename, options, err);
}

std::string uri_for(const SocketAddress& addr, const std::optional<std::string>& exp)
{
    switch (addr.type) {
    case SocketAddress::Type::Unix:
        return exp ? "nbd+unix:///" + *exp + "?socket=" + addr.path
                   : "nbd+unix://?socket=" + addr.path;
    case SocketAddress::Type::Inet:
        return "nbd://" + addr.host + ":" + addr.port + (exp ? "/" + *exp : "");
    case SocketAddress::Type::Fd:
        break;
    }
    return "";
}

}  // namespace qemu::nbd
