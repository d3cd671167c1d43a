// The NVMe/TCP listener: accepts connections on one address and runs each
// until it ends (export/nvme-tcp/nvme-tcp-internal.h).  The same lifecycle
// as the NBD server's (export/nbd/server.cc).
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>

#include "nvme-tcp-internal.h"

namespace qemu {

NvmePortInfo nvme_tcp_port_info(const SocketAddress& addr, uint16_t portid)
{
    NvmePortInfo p;
    p.trtype = NVMF_TRTYPE_TCP;
    p.adrfam = addr.host.find(':') != std::string::npos ? NVMF_ADRFAM_IPV6 : NVMF_ADRFAM_IPV4;
    p.portid = portid;
    p.traddr = addr.type == SocketAddress::Type::Inet ? addr.host : addr.to_string();
    p.trsvcid = addr.type == SocketAddress::Type::Inet ? addr.port : "";
    p.in_capsule_data = kNvmeTcpIoInCapsule;
    p.max_data_transfer = kNvmeTcpMaxTransfer;
    p.max_queue_entries = kNvmeTcpQueueEntries;
    return p;
}

NvmeTcpListener::NvmeTcpListener(NvmeTarget& target, int listen_fd, NvmePortInfo port)
    : target_(target), listen_fd_(listen_fd), port_(std::move(port))
{
    if (listen_fd_ >= 0) {
        accepting_ = true;
        co_spawn(co_accept_loop());
    }
}

std::unique_ptr<NvmeTcpListener> NvmeTcpListener::create(NvmeTarget& target,
                                                         const SocketAddress& addr,
                                                         uint16_t portid, Error& err)
{
    int fd = socket_listen(addr, err);
    if (fd < 0) {
        return nullptr;
    }
    return std::make_unique<NvmeTcpListener>(target, fd, nvme_tcp_port_info(addr, portid));
}

NvmeTcpListener::~NvmeTcpListener()
{
    assert(!accepting_ && conns_.empty());
    if (listen_fd_ >= 0) {
        close(listen_fd_);
    }
}

Task<void> NvmeTcpListener::co_accept_loop()
{
    while (!stopping_) {
        int fd = co_await co_accept(target_.ctx(), listen_fd_);
        if (fd == -EINTR || fd == -ECONNABORTED || fd == -EAGAIN) {
            continue;
        }
        if (fd < 0) {
            if (!stopping_) {
                error_report("NVMe/TCP: accept failed: %s", result_strerror(fd));
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

void NvmeTcpListener::serve(int fd)
{
    socket_set_nodelay(fd);
    conns_.push_back(std::make_unique<NvmeTcpConnection>(target_, port_, fd));
    NvmeTcpConnection* c = conns_.back().get();
    co_spawn([](NvmeTcpListener* l, NvmeTcpConnection* c) -> Task<void> {
        co_await c->co_run();
        l->connection_finished(c);
    }(this, c));
}

void NvmeTcpListener::connection_finished(NvmeTcpConnection* c)
{
    auto it = std::find_if(conns_.begin(), conns_.end(),
                           [&](const std::unique_ptr<NvmeTcpConnection>& p) { return p.get() == c; });
    assert(it != conns_.end());
    // The coroutine calling us still runs on the connection's frame: free
    // the connection from the loop.
    std::shared_ptr<NvmeTcpConnection> dead(std::move(*it));
    conns_.erase(it);
    target_.ctx().post([dead]() {});
    if (conns_.empty()) {
        conns_gone_.restart_all();
    }
}

Task<void> NvmeTcpListener::co_stop()
{
    stopping_ = true;
    if (listen_fd_ >= 0) {
        shutdown(listen_fd_, SHUT_RDWR);  // wakes co_accept()
    }
    while (accepting_) {
        co_await accept_done_.wait();
    }
    for (const auto& c : conns_) {
        c->disconnect();
    }
    while (!conns_.empty()) {
        co_await conns_gone_.wait();
    }
}

}  // namespace qemu
