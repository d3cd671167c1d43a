// QMP monitors on sockets: QEMU's `--chardev socket,...,server=on` with
// `--monitor chardev=...`.
//
// Each listener serves one client at a time, as a QEMU socket chardev
// does (a second client waits in the listen backlog until the first one
// disconnects); several --monitor options give several listeners.  A
// client gets the greeting, then a reply per input in order, and, once
// negotiated, every event of the bus (QmpEvents) between replies.  Replies
// and events are written whole, never interleaved.
//
// Threads: everything runs in `ctx` (the daemon's main context), which
// must be the calling thread's.
#pragma once

#include <memory>
#include <set>

#include "block/block_int.h"
#include "monitor/qmp.h"
#include "qemu/aio.h"

namespace qemu {

class QmpServer {
public:
    QmpServer(AioContext& ctx, QmpDispatcher& dispatcher, QmpEvents& events);
    // REQUIRES: co_stop() has returned (or nothing was added).
    ~QmpServer();
    QmpServer(const QmpServer&) = delete;
    QmpServer& operator=(const QmpServer&) = delete;

    // Serves QMP on listen_fd (a socket_listen() socket, which the server
    // now owns and closes).  first_client: a connection already accepted
    // on it (a chardev with wait=on), served first; -1 for none.  pretty:
    // replies and events as QEMU's pretty=on monitors print them.
    void add_listener(int listen_fd, int first_client, bool pretty);
    // Serves one connection (a chardev with server=off), owned from now on.
    void add_client(int fd, bool pretty);

    // Stops accepting, ends every connection once what it was sending has
    // been sent, and returns when nothing of the server runs any more.
    Task<void> co_stop();

    // Serves one connected client on fd until it disconnects (owned: the
    // server closes it).  For add_listener, and for tests.
    Task<void> co_serve(int fd, bool pretty);

private:
    struct Client;
    Task<void> co_listen(int listen_fd, int first_client, bool pretty);
    Task<void> co_send(std::shared_ptr<Client> c, std::string text);
    Task<void> co_handle_input(std::shared_ptr<Client> c, const QmpInput& in);

    AioContext& ctx_;
    QmpDispatcher& dispatcher_;
    QmpEvents& events_;
    bool stopping_ = false;
    std::set<int> listen_fds_;
    std::set<Client*> clients_;
    RequestCounter running_;  // listeners, connections and sends
};

}  // namespace qemu
