// --chardev socket (QEMU's chardev/char-socket.c options, QemuOpts syntax).
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>

#include "daemon.h"
#include "qemu/qemu-opts.h"

namespace qemu {

namespace {

// QemuOpts booleans: "on"/"off" (and a bare "server"/"noserver" flag).
bool opts_bool(const OptsPair& p, bool& out, Error& err)
{
    if (p.is_flag) {
        out = p.name.rfind("no", 0) != 0 || p.name == "nodelay";
        return true;
    }
    if (p.value == "on" || p.value == "yes" || p.value == "true") {
        out = true;
    } else if (p.value == "off" || p.value == "no" || p.value == "false") {
        out = false;
    } else {
        err.set("Parameter '%s' expects 'on' or 'off'", p.name.c_str());
        return false;
    }
    return true;
}

// The option's name without a flag's "no" prefix.
std::string opts_name(const OptsPair& p)
{
    if (p.is_flag && p.name.rfind("no", 0) == 0 && p.name != "nodelay") {
        return p.name.substr(2);
    }
    return p.name;
}

bool parse_socket_opts(const std::vector<OptsPair>& pairs, Chardev& c, bool& have_addr,
                       Error& err)
{
    for (size_t i = 1; i < pairs.size(); i++) {
        const OptsPair& p = pairs[i];
        std::string name = opts_name(p);
        if (name == "id") {
            c.id = p.value;
        } else if (name == "path") {
            c.addr.type = SocketAddress::Type::Unix;
            c.addr.path = p.value;
            have_addr = true;
        } else if (name == "host" || name == "port") {
            c.addr.type = SocketAddress::Type::Inet;
            (name == "host" ? c.addr.host : c.addr.port) = p.value;
            have_addr = true;
        } else if (name == "fd") {
            c.addr.type = SocketAddress::Type::Fd;
            c.addr.str = p.value;
            have_addr = true;
        } else if (name == "server" || name == "wait") {
            if (!opts_bool(p, name == "server" ? c.server : c.wait, err)) {
                return false;
            }
        } else {
            err.set("Invalid parameter '%s'", name.c_str());
            return false;
        }
    }
    return true;
}

}  // namespace

bool chardev_parse_and_open(const std::string& text, Chardev& c, Error& err)
{
    std::vector<OptsPair> pairs = split_qemu_opts(text, "backend");
    std::string backend = pairs.empty() ? "" : pairs[0].value;
    bool have_addr = false;
    if (!parse_socket_opts(pairs, c, have_addr, err)) {
        return false;
    }
    if (c.id.empty()) {
        err.set("chardev: no id specified");
        return false;
    }
    if (backend != "socket") {
        err.set("'%s' is not a valid char driver name", backend.c_str());
        return false;
    }
    if (c.addr.type == SocketAddress::Type::Inet && c.addr.port.empty()) {
        err.set("chardev: socket: no port given");
        return false;
    }
    if (!have_addr) {
        err.set("Unable to parse FD number ");  // QEMU 7.2's text, space included
        return false;
    }
    if (!c.server) {
        int fd = socket_connect(c.addr, err);
        if (fd < 0) {
            return false;
        }
        c.client_fd = fd;
        return true;
    }
    c.listen_fd = socket_listen(c.addr, err);
    if (c.listen_fd < 0) {
        return false;
    }
    if (c.wait) {
        // As QEMU: startup goes on once the first client is there.
        const char* kind = c.addr.type == SocketAddress::Type::Unix ? "unix:" :
                           c.addr.type == SocketAddress::Type::Inet ? "tcp:" : "fd:";
        fprintf(stderr, "%s: --chardev %s: info: QEMU waiting for connection on: "
                "disconnected:%s%s,server=on\n",
                program_name(), text.c_str(), kind, c.addr.to_string().c_str());
        // The listening socket is non-blocking: wait for the client.
        int fd;
        do {
            pollfd pfd = {c.listen_fd, POLLIN, 0};
            poll(&pfd, 1, -1);
            fd = accept4(c.listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
        } while (fd < 0 && (errno == EINTR || errno == EAGAIN));
        if (fd < 0) {
            err.set_errno(errno, "Failed to accept connection");
            close(c.listen_fd);
            return false;
        }
        c.client_fd = fd;
    }
    return true;
}

}  // namespace qemu
