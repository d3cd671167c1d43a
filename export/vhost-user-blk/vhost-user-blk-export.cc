// The vhost-user-blk export: options, the listener, and one session at a
// time (include/export/vhost-user-blk.h).
#include "export/vhost-user-blk.h"

#include <sys/socket.h>
#include <unistd.h>

#include "export/export.h"
#include "qemu/sockets.h"
#include "session.h"

namespace qemu {

namespace {

class VhostUserBlkExport : public BlockExport {
public:
    VhostUserBlkExport(const BlockExportOptions& o, std::unique_ptr<BlockBackend> blk,
                       VirtioBlkOptions dev_opts, int listen_fd)
        : BlockExport(o, std::move(blk)), dev_opts_(std::move(dev_opts)), listen_fd_(listen_fd)
    {
        accepting_ = true;
        co_spawn(co_accept_loop());
    }

    ~VhostUserBlkExport() override
    {
        if (listen_fd_ >= 0) {
            close(listen_fd_);
        }
    }

protected:
    Task<void> co_stop(bool) override
    {
        stopping_ = true;
        shutdown(listen_fd_, SHUT_RDWR);  // wakes co_accept()
        if (session_) {
            session_->disconnect();
        }
        while (accepting_ || session_) {
            co_await done_.wait();
        }
    }

private:
    Task<void> co_accept_loop();
    Task<void> co_serve();

    VirtioBlkOptions dev_opts_;
    int listen_fd_;
    bool stopping_ = false;
    bool accepting_ = false;
    std::unique_ptr<VirtioBlkDevice> dev_;  // the session's device
    std::unique_ptr<VhostUserBlkSession> session_;
    CoQueue done_;  // the accept loop or the session ended
};

Task<void> VhostUserBlkExport::co_accept_loop()
{
    while (!stopping_) {
        int fd = co_await co_accept(ctx(), listen_fd_);
        if (fd == -EINTR || fd == -ECONNABORTED || fd == -EAGAIN) {
            continue;
        }
        if (fd < 0 || stopping_) {
            if (fd >= 0) {
                close(fd);
            } else if (!stopping_) {
                error_report("vhost-user-blk export '%s': accept failed: %s", id().c_str(),
                             result_strerror(fd));
            }
            break;
        }
        if (session_) {
            warn_report("Only one vhost-user client is allowed to connect the server one time");
            close(fd);
            continue;
        }
        Error err;
        dev_ = std::make_unique<VirtioBlkDevice>(blk(), dev_opts_, err);
        session_ = std::make_unique<VhostUserBlkSession>(ctx(), fd, *dev_);
        co_spawn(co_serve());
    }
    accepting_ = false;
    done_.restart_all();
}

Task<void> VhostUserBlkExport::co_serve()
{
    co_await session_->co_run();  // returns with every request finished
    session_.reset();
    dev_.reset();
    done_.restart_all();
}

Task<std::unique_ptr<BlockExport>> vhost_user_blk_create(const BlockExportOptions& o,
                                                         QDict& opts,
                                                         std::unique_ptr<BlockBackend> blk,
                                                         Error& err)
{
    SocketAddress addr;
    VirtioBlkOptions dev_opts;
    dev_opts.writable = o.writable;
    bool ok = socket_address_take(opts, "addr.", addr, err);
    std::optional<uint64_t> lbs, nq;
    if (ok) {
        lbs = take_size(opts, "logical-block-size", 512, err);
        nq = lbs ? take_number(opts, "num-queues", 1, err) : std::nullopt;
        ok = lbs && nq;
    }
    if (ok && addr.type != SocketAddress::Type::Unix && addr.type != SocketAddress::Type::Fd) {
        err.set("Only socket address types 'unix' and 'fd' are supported");
        ok = false;
    } else if (ok && (*lbs < 512 || *lbs > 2 * 1024 * 1024 || (*lbs & (*lbs - 1)))) {
        err.set("parameter logical-block-size must be a power of 2 between 512 and 2097152");
        ok = false;
    } else if (ok && *nq == 0) {
        err.set("num-queues must be greater than 0");
        ok = false;
    } else if (ok && *nq > 256) {
        err.set("num-queues must not exceed 256");  // the vring index is 8 bits
        ok = false;
    } else if (ok && o.writethrough) {
        err.set("vhost-user-blk exports do not support writethrough=on");
        ok = false;
    }
    if (ok) {
        dev_opts.logical_block_size = uint32_t(*lbs);
        dev_opts.num_queues = uint16_t(*nq);
        // The options are checked here once: the device each session makes
        // from them then cannot fail.
        VirtioBlkDevice probe(*blk, dev_opts, err);
        ok = !err.is_set();
    }
    int fd = ok ? socket_listen(addr, err) : -1;
    if (fd < 0) {
        co_await blk->co_close();
        co_return nullptr;
    }
    co_return std::make_unique<VhostUserBlkExport>(o, std::move(blk), std::move(dev_opts), fd);
}

const BlockExportDriver kVhostUserBlkDriver = {"vhost-user-blk", 0, vhost_user_blk_create};

}  // namespace

void vhost_user_blk_export_register()
{
    block_export_register(kVhostUserBlkDriver);
}

}  // namespace qemu
