// QMP monitors on sockets (see include/monitor/qmp-server.h).
#include "monitor/qmp-server.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cassert>

#include "qemu/coroutine-lock.h"
#include "qemu/qjson.h"
#include "qemu/sockets.h"

namespace qemu {

struct QmpServer::Client {
    int fd;
    bool pretty;
    QmpSession session;
    QmpStreamParser parser;
    CoMutex send_lock;
    bool broken = false;  // a send failed: the peer is gone

    Client(int f, bool p) : fd(f), pretty(p) {}
    ~Client() { close(fd); }
};

QmpServer::QmpServer(AioContext& ctx, QmpDispatcher& dispatcher, QmpEvents& events)
    : ctx_(ctx), dispatcher_(dispatcher), events_(events)
{
}

QmpServer::~QmpServer()
{
    assert(running_.count() == 0);
}

void QmpServer::add_listener(int listen_fd, int first_client, bool pretty)
{
    listen_fds_.insert(listen_fd);
    co_spawn(co_listen(listen_fd, first_client, pretty));
}

void QmpServer::add_client(int fd, bool pretty)
{
    co_spawn(co_serve(fd, pretty));
}

Task<void> QmpServer::co_listen(int listen_fd, int first_client, bool pretty)
{
    auto guard = RequestCounter::Guard(running_);
    int fd = first_client;
    while (!stopping_) {
        if (fd < 0) {
            fd = co_await co_accept(ctx_, listen_fd);
        }
        if (fd < 0) {
            if (fd == -EINTR || fd == -ECONNABORTED) {
                continue;
            }
            break;  // shut down by co_stop(), or the socket failed
        }
        // One client at a time: the next is accepted after this one.
        co_await co_serve(fd, pretty);
        fd = -1;
    }
    listen_fds_.erase(listen_fd);
    close(listen_fd);
}

Task<void> QmpServer::co_send(std::shared_ptr<Client> c, std::string text)
{
    auto guard = RequestCounter::Guard(running_);
    co_await c->send_lock.lock();
    if (!c->broken) {
        // As QEMU's monitor output: every line ends with CR LF (pretty
        // output has several; strings never hold a raw newline).
        std::string out;
        for (char ch : text) {
            if (ch == '\n') {
                out += '\r';
            }
            out += ch;
        }
        text = out + "\r\n";
        int ret = co_await co_send_full(ctx_, c->fd, text.data(), text.size());
        if (ret < 0) {
            c->broken = true;
        }
    }
    c->send_lock.unlock();
}

Task<void> QmpServer::co_handle_input(std::shared_ptr<Client> c, const QmpInput& in)
{
    nlohmann::ordered_json rsp = co_await dispatcher_.co_dispatch(c->session, in);
    co_await co_send(c, to_qemu_json(rsp, c->pretty));
}

Task<void> QmpServer::co_serve(int fd, bool pretty)
{
    auto guard = RequestCounter::Guard(running_);
    auto c = std::make_shared<Client>(fd, pretty);
    clients_.insert(c.get());
    int sub = events_.subscribe([this, weak = std::weak_ptr<Client>(c)](const auto& ev) {
        std::shared_ptr<Client> client = weak.lock();
        if (client && client->session.negotiated) {
            co_spawn(co_send(client, to_qemu_json(ev, client->pretty)));
        }
    });
    co_await co_send(c, to_qemu_json(QmpDispatcher::greeting(), c->pretty));
    char buf[4096];
    std::vector<QmpInput> inputs;
    while (!c->broken && !stopping_) {
        int n = co_await ctx_.recv(fd, buf, sizeof(buf));
        if (n <= 0) {
            break;  // disconnected, or shut down by co_stop()
        }
        c->parser.feed(buf, size_t(n), inputs);
        for (const QmpInput& in : inputs) {
            if (stopping_) {
                break;  // after quit: nothing more is run
            }
            co_await co_handle_input(c, in);
        }
        inputs.clear();
    }
    events_.unsubscribe(sub);
    clients_.erase(c.get());
    // What is being sent is sent before the connection closes (the
    // reply to quit); the last reference closes the fd.
    co_await c->send_lock.lock();
    c->send_lock.unlock();
}

Task<void> QmpServer::co_stop()
{
    stopping_ = true;
    for (int fd : listen_fds_) {
        shutdown(fd, SHUT_RDWR);
    }
    // Reading ends; a reply or event being written still goes out.
    for (Client* c : clients_) {
        shutdown(c->fd, SHUT_RD);
    }
    while (running_.count() > 0) {
        co_await running_.wait_idle();
    }
}

}  // namespace qemu
