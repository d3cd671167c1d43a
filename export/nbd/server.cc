// The NBD server's listener, connection list and export table
// (include/export/nbd-server.h).
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>

#include "nbd-internal.h"
#include "qemu/bswap.h"

namespace qemu {

void WireBuf::u16(uint16_t v)
{
    uint8_t x[2];
    store_be16(x, v);
    bytes(x, 2);
}

void WireBuf::u32(uint32_t v)
{
    uint8_t x[4];
    store_be32(x, v);
    bytes(x, 4);
}

void WireBuf::u64(uint64_t v)
{
    uint8_t x[8];
    store_be64(x, v);
    bytes(x, 8);
}

void WireBuf::bytes(const void* p, size_t n)
{
    const uint8_t* c = static_cast<const uint8_t*>(p);
    b.insert(b.end(), c, c + n);
}

NbdServer::NbdServer(AioContext& ctx, int listen_fd, NbdServerOptions opts)
    : ctx_(ctx), listen_fd_(listen_fd), opts_(std::move(opts))
{
}

std::unique_ptr<NbdServer> NbdServer::create(AioContext& ctx, const SocketAddress& addr,
                                             NbdServerOptions opts, Error& err)
{
    int fd = socket_listen(addr, err);
    if (fd < 0) {
        return nullptr;
    }
    return create_on_fd(ctx, fd, std::move(opts));
}

std::unique_ptr<NbdServer> NbdServer::create_on_fd(AioContext& ctx, int listen_fd,
                                                   NbdServerOptions opts)
{
    std::unique_ptr<NbdServer> s(new NbdServer(ctx, listen_fd, std::move(opts)));
    if (listen_fd >= 0) {
        s->accepting_ = true;
        co_spawn(s->co_accept_loop());
    }
    return s;
}

NbdServer::~NbdServer()
{
    assert(!accepting_ && clients_.empty());
    if (listen_fd_ >= 0) {
        close(listen_fd_);
    }
}

Task<void> NbdServer::co_accept_loop()
{
    while (!stopping_) {
        // As QEMU, stop accepting at the limit: newcomers wait in the backlog.
        while (opts_.max_connections && clients_.size() >= opts_.max_connections && !stopping_) {
            co_await slot_free_.wait();
        }
        if (stopping_) {
            break;
        }
        int fd = co_await co_accept(ctx_, listen_fd_);
        if (fd < 0) {
            if (fd == -EINTR || fd == -ECONNABORTED || fd == -EAGAIN) {
                continue;
            }
            if (!stopping_) {
                error_report("NBD server: accept failed: %s", result_strerror(fd));
            }
            break;
        }
        if (stopping_) {
            close(fd);
            break;
        }
        serve(fd);
    }
    accepting_ = false;
    accept_done_.restart_all();
}

void NbdServer::serve(int fd)
{
    socket_set_nodelay(fd);
    clients_.push_back(std::make_unique<NbdClient>(*this, fd));
    NbdClient* c = clients_.back().get();
    if (opts_.on_clients_changed) {
        opts_.on_clients_changed(client_count());
    }
    co_spawn([](NbdServer* s, NbdClient* c) -> Task<void> {
        co_await c->co_run();
        s->client_finished(c);
    }(this, c));
}

void NbdServer::client_finished(NbdClient* client)
{
    auto it = std::find_if(clients_.begin(), clients_.end(),
                           [&](const std::unique_ptr<NbdClient>& p) { return p.get() == client; });
    assert(it != clients_.end());
    // The coroutine that calls us still runs on the client's frame: free
    // it from the loop.
    std::unique_ptr<NbdClient> dead = std::move(*it);
    clients_.erase(it);
    ctx_.post([d = std::shared_ptr<NbdClient>(std::move(dead))]() {});
    slot_free_.next();
    if (clients_.empty()) {
        clients_gone_.restart_all();
    }
    if (opts_.on_clients_changed) {
        opts_.on_clients_changed(client_count());
    }
}

bool NbdServer::add_export(const NbdExportConfig& cfg, Error& err)
{
    if (cfg.name.size() > nbd::kMaxStringSize) {
        err.set("export name '%s' too long", cfg.name.c_str());
        return false;
    }
    if (cfg.description.size() > nbd::kMaxStringSize) {
        err.set("description '%s' too long", cfg.description.c_str());
        return false;
    }
    if (exports_.count(cfg.name)) {
        err.set("NBD server already has export named '%s'", cfg.name.c_str());
        return false;
    }
    auto e = std::make_shared<NbdExportEntry>();
    e->cfg = cfg;
    e->size = cfg.blk->getlength() / 512 * 512;
    exports_[cfg.name] = std::move(e);
    return true;
}

std::vector<std::string> NbdServer::export_names() const
{
    std::vector<std::string> names;
    for (const auto& [name, e] : exports_) {
        names.push_back(name);
    }
    return names;
}

std::shared_ptr<NbdExportEntry> NbdServer::find_export(const std::string& name) const
{
    auto it = exports_.find(name);
    return it == exports_.end() ? nullptr : it->second;
}

Task<void> NbdServer::co_remove_export(const std::string& name, bool hard)
{
    std::shared_ptr<NbdExportEntry> e = find_export(name);
    if (!e) {
        co_return;
    }
    exports_.erase(name);
    e->removed = true;
    if (hard) {
        for (const auto& c : clients_) {
            if (c->export_entry() == e) {
                c->disconnect();
            }
        }
    }
    while (e->users) {
        co_await e->users_gone.wait();
    }
}

Task<void> NbdServer::co_stop()
{
    stopping_ = true;
    slot_free_.restart_all();
    if (listen_fd_ >= 0) {
        // Wakes co_accept(); the fd is closed once the loop has left it.
        shutdown(listen_fd_, SHUT_RDWR);
    }
    while (accepting_) {
        co_await accept_done_.wait();
    }
    if (listen_fd_ >= 0) {
        close(listen_fd_);
        listen_fd_ = -1;
    }
    for (const auto& c : clients_) {
        c->disconnect();
    }
    while (!clients_.empty()) {
        co_await clients_gone_.wait();
    }
}

}  // namespace qemu
