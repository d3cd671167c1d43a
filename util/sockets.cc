// Sockets: addresses, listen/connect, coroutine stream I/O (see sockets.h).
#include "qemu/sockets.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <vector>

namespace qemu {

std::string SocketAddress::to_string() const
{
    switch (type) {
    case Type::Inet:
        return host + ":" + port;
    case Type::Unix:
        return path;
    case Type::Fd:
        break;
    }
    return str;
}

namespace {

bool take_required(QDict& opts, const std::string& key, std::string& out, Error& err)
{
    std::optional<std::string> v = opts.take(key);
    if (!v) {
        err.set("Parameter '%s' is missing", key.c_str());
        return false;
    }
    out = std::move(*v);
    return true;
}

// Boolean keys QEMU accepts for an address type and that change nothing
// here (we resolve and bind as QEMU's defaults do); they are still
// checked for a well-formed value.
bool take_flags(QDict& opts, const std::string& prefix, std::initializer_list<const char*> keys,
                Error& err)
{
    for (const char* key : keys) {
        if (!take_bool(opts, prefix + key, false, err)) {
            return false;
        }
    }
    return true;
}

int fail(Error& err, int errnum, const char* fmt, const std::string& what)
{
    err.set_errno(errnum, fmt, what.c_str());
    return -errnum;
}

bool fill_unix_addr(const std::string& path, sockaddr_un& sun, Error& err)
{
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    if (path.size() >= sizeof(sun.sun_path)) {
        err.set("UNIX socket path '%s' is too long", path.c_str());
        return false;
    }
    memcpy(sun.sun_path, path.data(), path.size());
    return true;
}

int fd_from_str(const SocketAddress& addr, Error& err)
{
    char* end = nullptr;
    errno = 0;
    long fd = strtol(addr.str.c_str(), &end, 10);
    if (addr.str.empty() || *end || errno || fd < 0 || fd > INT32_MAX || fcntl(int(fd), F_GETFD) < 0) {
        err.set("File descriptor named '%s' has not been found", addr.str.c_str());
        return -EBADF;
    }
    return int(fd);
}

// getaddrinfo for a stream socket; nullptr and err set on failure.
addrinfo* resolve(const SocketAddress& addr, bool passive, Error& err)
{
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = passive ? AI_PASSIVE : 0;
    addrinfo* res = nullptr;
    const char* host = addr.host.empty() ? nullptr : addr.host.c_str();
    int rc = getaddrinfo(host, addr.port.c_str(), &hints, &res);
    if (rc != 0) {
        err.set("address resolution failed for %s: %s", addr.to_string().c_str(), gai_strerror(rc));
        return nullptr;
    }
    return res;
}

// Resolves addr and tries each address in turn: a new socket (with
// `sock_flags`), then attempt(fd, ai).  Returns the first fd attempt()
// accepted, or -errno of the last failure (`none` if there was nothing to
// try) with err set from `fail_fmt`.
template <typename Attempt>
int try_addresses(const SocketAddress& addr, bool passive, int sock_flags, int none,
                  const char* fail_fmt, Error& err, Attempt attempt)
{
    addrinfo* res = resolve(addr, passive, err);
    if (!res) {
        return -EINVAL;
    }
    int last_errno = none;
    int fd = -1;
    for (addrinfo* ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | sock_flags, ai->ai_protocol);
        if (fd < 0) {
            last_errno = errno;
            continue;
        }
        if (attempt(fd, ai)) {
            break;
        }
        last_errno = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        return fail(err, last_errno, fail_fmt, addr.to_string());
    }
    return fd;
}

int listen_inet(const SocketAddress& addr, Error& err)
{
    return try_addresses(addr, true, SOCK_NONBLOCK | SOCK_CLOEXEC, EADDRNOTAVAIL,
                         "Failed to bind socket to %s", err, [](int fd, const addrinfo* ai) {
                             int on = 1;
                             setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
                             if (ai->ai_family == AF_INET6) {
                                 // Listen on IPv4 too where the name covers
                                 // both, as QEMU.
                                 int off = 0;
                                 setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
                             }
                             return bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
                                    listen(fd, SOMAXCONN) == 0;
                         });
}

int listen_unix(const SocketAddress& addr, Error& err)
{
    sockaddr_un sun;
    if (!fill_unix_addr(addr.path, sun, err)) {
        return -EINVAL;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return fail(err, errno, "Failed to create Unix socket for %s", addr.path);
    }
    if (unlink(addr.path.c_str()) < 0 && errno != ENOENT) {
        int e = errno;
        close(fd);
        return fail(err, e, "Failed to unlink socket %s", addr.path);
    }
    if (bind(fd, reinterpret_cast<sockaddr*>(&sun), sizeof(sun)) < 0) {
        int e = errno;
        close(fd);
        return fail(err, e, "Failed to bind socket to %s", addr.path);
    }
    if (listen(fd, SOMAXCONN) < 0) {
        int e = errno;
        close(fd);
        return fail(err, e, "Failed to listen on socket %s", addr.path);
    }
    return fd;
}

int listen_fd(const SocketAddress& addr, Error& err)
{
    int fd = fd_from_str(addr, err);
    if (fd < 0) {
        return fd;
    }
    int listening = 0;
    socklen_t len = sizeof(listening);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 || !listening) {
        err.set("File descriptor %d is not a listening socket", fd);
        return -ENOTSOCK;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    return fd;
}

int connect_inet(const SocketAddress& addr, Error& err)
{
    int fd = try_addresses(addr, false, SOCK_CLOEXEC, ECONNREFUSED, "Failed to connect to '%s'", err,
                           [](int fd, const addrinfo* ai) {
                               int rc;
                               do {
                                   rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
                               } while (rc < 0 && errno == EINTR);
                               return rc == 0;
                           });
    if (fd >= 0) {
        socket_set_nodelay(fd);
    }
    return fd;
}

int connect_unix(const SocketAddress& addr, Error& err)
{
    sockaddr_un sun;
    if (!fill_unix_addr(addr.path, sun, err)) {
        return -EINVAL;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return fail(err, errno, "Failed to create socket for '%s'", addr.path);
    }
    int rc;
    do {
        rc = connect(fd, reinterpret_cast<sockaddr*>(&sun), sizeof(sun));
    } while (rc < 0 && errno == EINTR);
    if (rc < 0) {
        int e = errno;
        close(fd);
        return fail(err, e, "Failed to connect to '%s'", addr.path);
    }
    return fd;
}

}  // namespace

bool socket_address_take(QDict& opts, const std::string& prefix, SocketAddress& addr, Error& err)
{
    std::string type;
    if (!take_required(opts, prefix + "type", type, err)) {
        return false;
    }
    if (type == "inet") {
        addr.type = SocketAddress::Type::Inet;
        if (!take_required(opts, prefix + "host", addr.host, err) ||
            !take_required(opts, prefix + "port", addr.port, err)) {
            return false;
        }
        std::optional<uint64_t> to = take_number(opts, prefix + "to", 0, err);
        return to && take_flags(opts, prefix, {"ipv4", "ipv6", "numeric", "keep-alive"}, err);
    }
    if (type == "unix") {
        addr.type = SocketAddress::Type::Unix;
        if (!take_required(opts, prefix + "path", addr.path, err)) {
            return false;
        }
        if (opts.has(prefix + "abstract")) {
            err.set("Parameter '%sabstract' is not supported here", prefix.c_str());
            return false;
        }
        return take_flags(opts, prefix, {"tight"}, err);
    }
    if (type == "fd") {
        addr.type = SocketAddress::Type::Fd;
        return take_required(opts, prefix + "str", addr.str, err);
    }
    err.set("Parameter '%stype' does not accept value '%s'", prefix.c_str(), type.c_str());
    return false;
}

int socket_listen(const SocketAddress& addr, Error& err)
{
    switch (addr.type) {
    case SocketAddress::Type::Inet:
        return listen_inet(addr, err);
    case SocketAddress::Type::Unix:
        return listen_unix(addr, err);
    case SocketAddress::Type::Fd:
        break;
    }
    return listen_fd(addr, err);
}

int socket_connect(const SocketAddress& addr, Error& err)
{
    switch (addr.type) {
    case SocketAddress::Type::Inet:
        return connect_inet(addr, err);
    case SocketAddress::Type::Unix:
        return connect_unix(addr, err);
    case SocketAddress::Type::Fd:
        break;
    }
    return fd_from_str(addr, err);
}

void socket_set_nodelay(int fd)
{
    int on = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
}

// Both directions first try the system call without blocking: the data or
// the room for it is usually there already, and going through the ring
// costs a loop iteration per step, which at queue depth 1 is most of a
// request's latency.  Only when the socket would block does the ring wait.
Task<ssize_t> co_recv_full(AioContext& ctx, int fd, void* buf, size_t len)
{
    size_t done = 0;
    while (done < len) {
        char* p = static_cast<char*>(buf) + done;
        ssize_t ret = ::recv(fd, p, len - done, MSG_DONTWAIT);
        if (ret < 0) {
            ret = -errno;
        }
        if (ret == -EAGAIN || ret == -EWOULDBLOCK) {
            ret = co_await ctx.recv(fd, p, len - done);
        }
        if (ret == -EINTR || ret == -EAGAIN) {
            continue;
        }
        if (ret < 0) {
            co_return ret;
        }
        if (ret == 0) {
            break;
        }
        done += size_t(ret);
    }
    co_return ssize_t(done);
}

Task<int> co_send_full(AioContext& ctx, int fd, const iovec* iov, unsigned niov)
{
    // sendmsg may take part of the data; continue from where it stopped on
    // a private copy of the vector.
    std::vector<iovec> rest(iov, iov + niov);
    size_t first = 0;
    while (first < rest.size()) {
        if (rest[first].iov_len == 0) {
            first++;
            continue;
        }
        msghdr msg{};
        msg.msg_iov = rest.data() + first;
        msg.msg_iovlen = std::min<size_t>(rest.size() - first, IOV_MAX);
        ssize_t ret = ::sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (ret < 0) {
            ret = -errno;
        }
        if (ret == -EAGAIN || ret == -EWOULDBLOCK) {
            ret = co_await ctx.sendmsg(fd, &msg);
        }
        if (ret == -EINTR || ret == -EAGAIN) {
            continue;
        }
        if (ret < 0) {
            co_return ret;
        }
        size_t sent = size_t(ret);
        while (sent > 0) {
            size_t step = std::min(sent, rest[first].iov_len);
            rest[first].iov_base = static_cast<char*>(rest[first].iov_base) + step;
            rest[first].iov_len -= step;
            sent -= step;
            if (rest[first].iov_len == 0) {
                first++;
            }
        }
    }
    co_return 0;
}

Task<int> co_send_full(AioContext& ctx, int fd, const void* buf, size_t len)
{
    iovec iov{const_cast<void*>(buf), len};
    co_return co_await co_send_full(ctx, fd, &iov, 1);
}

Task<int> co_accept(AioContext& ctx, int listen_fd)
{
    bool hung_up = false;
    for (;;) {
        int fd = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd >= 0) {
            co_return fd;
        }
        int e = errno;
        if (e == EINTR || e == ECONNABORTED) {
            continue;
        }
        if ((e == EAGAIN || e == EWOULDBLOCK) && hung_up) {
            // A shut down Unix listener keeps failing accept() with EAGAIN
            // (TCP's says EINVAL) while poll reports it hung up.
            co_return -EINVAL;
        }
        if (e != EAGAIN && e != EWOULDBLOCK) {
            co_return -e;
        }
        int mask = co_await ctx.poll_in(listen_fd);
        if (mask < 0) {
            co_return mask;
        }
        hung_up = mask & (POLLHUP | POLLERR | POLLNVAL);
    }
}

}  // namespace qemu
