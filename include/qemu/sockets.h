// Sockets: QEMU's SocketAddress, listening and connecting, and coroutine
// I/O on stream sockets through the calling thread's AioContext.
//
// Addresses come from options as QEMU's flat SocketAddress under a prefix
// (--nbd-server addr.type=unix,addr.path=/run/nbd.sock; the nbd driver's
// server.type=inet,server.host=h,server.port=10809).
//
// Ownership: the fds returned here belong to the caller, who closes them.
// Cancelling: a coroutine blocked in co_recv_full()/co_accept() on fd is
// woken by shutdown(fd, SHUT_RDWR) from its context's thread (it then
// returns end-of-stream or an error); close the fd only after that
// coroutine has returned, never under it.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <cstdint>
#include <string>

#include "qemu/aio.h"
#include "qemu/coroutine.h"
#include "qemu/error.h"
#include "qemu/option.h"

namespace qemu {

struct SocketAddress {
    enum class Type { Inet, Unix, Fd };
    Type type = Type::Unix;
    std::string host;  // Inet: name or address; empty listens on all
    std::string port;  // Inet: a number or a service name (a string, as in QAPI)
    std::string path;  // Unix
    std::string str;   // Fd: the number of an fd the process inherited

    // How messages name it: "host:port", the path, or the fd's number.
    std::string to_string() const;
};

// Takes `prefix`type and the keys of that type (host, port, ipv4, ipv6,
// numeric, to, keep-alive; path, abstract, tight; str) out of opts.  QEMU's
// messages: "Parameter 'addr.path' is missing", "Parameter 'addr.type'
// does not accept value 'x'"; `vsock` is refused as not supported here.
// Keys left in opts after this are the caller's to report.
bool socket_address_take(QDict& opts, const std::string& prefix, SocketAddress& addr, Error& err);

// A listening socket (SOMAXCONN backlog, non-blocking, close-on-exec) for
// addr: Unix paths are unlinked first, as QEMU does; an Fd address must be
// a listening stream socket already.  -errno and err set on failure.
int socket_listen(const SocketAddress& addr, Error& err);

// A connected stream socket (blocking connect, then TCP_NODELAY for Inet);
// -errno and err set on failure ("Failed to connect to 'ADDR': REASON").
int socket_connect(const SocketAddress& addr, Error& err);

// Sets TCP_NODELAY (a no-op on Unix sockets): requests are small and
// latency-bound, as QEMU's qio_channel_set_delay(false).
void socket_set_nodelay(int fd);

// The coroutine side.  ctx is the calling coroutine's own context.
//
// Reads exactly len bytes into buf.  Returns len; fewer (possibly 0) when
// the peer closed its end first; or -errno.
Task<ssize_t> co_recv_full(AioContext& ctx, int fd, void* buf, size_t len);
// Writes all of iov (niov entries).  Returns 0 or -errno (-EPIPE: the peer
// is gone).  iov is not modified; the buffers must stay valid until return.
Task<int> co_send_full(AioContext& ctx, int fd, const iovec* iov, unsigned niov);
Task<int> co_send_full(AioContext& ctx, int fd, const void* buf, size_t len);
// Waits for and accepts one connection on a socket_listen() socket.
// Returns the new blocking, close-on-exec fd, or -errno (-EINVAL after a
// shutdown() of listen_fd).
Task<int> co_accept(AioContext& ctx, int listen_fd);

}  // namespace qemu
