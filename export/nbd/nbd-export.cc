// The daemon's NBD server (nbd-server-start/stop) and the `nbd` export type
// (QEMU's block/export/nbd... in nbd/server.c and blockdev-nbd.c).
#include <cassert>

#include "export/nbd-server.h"
#include "block/nbd.h"
#include "qemu/iothread.h"

namespace qemu {

namespace {

// The global server; shared with the exports made on it, which check that
// it is still the running one when they stop.
std::shared_ptr<NbdServer>& global_server()
{
    static std::shared_ptr<NbdServer> server;
    return server;
}

class NbdBlockExport : public BlockExport {
public:
    NbdBlockExport(const BlockExportOptions& o, std::unique_ptr<BlockBackend> blk,
                   std::weak_ptr<NbdServer> server, std::string name)
        : BlockExport(o, std::move(blk)), server_(std::move(server)), name_(std::move(name))
    {
    }

protected:
    // Removes the export from the server that still runs (in its context);
    // with `hard` its clients are disconnected, else they are waited for.
    Task<void> co_stop(bool hard) override
    {
        std::shared_ptr<NbdServer> s = server_.lock();
        if (!s || s != global_server()) {
            co_return;  // the server was stopped: it has no clients any more
        }
        co_await co_run_in<void>(s->ctx(), [&]() { return s->co_remove_export(name_, hard); });
    }

private:
    std::weak_ptr<NbdServer> server_;
    std::string name_;
};

Task<std::unique_ptr<BlockExport>> nbd_export_create(const BlockExportOptions& o, QDict& opts,
                                                     std::unique_ptr<BlockBackend> blk, Error& err)
{
    NbdExportConfig cfg;
    cfg.name = opts.has("name") ? take_string(opts, "name") : o.node_name;
    cfg.description = take_string(opts, "description");
    std::optional<bool> depth = take_bool(opts, "allocation-depth", false, err);
    bool bitmaps = false;
    for (const auto& [key, value] : opts) {
        bitmaps |= key == "bitmaps" || key.rfind("bitmaps.", 0) == 0;
    }
    std::shared_ptr<NbdServer> s = global_server();
    const char* fail = nullptr;
    if (!depth) {
        fail = "";  // err already says why
    } else if (bitmaps) {
        fail = "Exporting dirty bitmaps over NBD is not supported";
    } else if (!s) {
        fail = "NBD server not running";
    } else if (cfg.name.size() > nbd::kMaxStringSize) {
        err.set("export name '%s' too long", cfg.name.c_str());
        fail = "";
    } else if (cfg.description.size() > nbd::kMaxStringSize) {
        err.set("description '%s' too long", cfg.description.c_str());
        fail = "";
    }
    if (fail) {
        if (*fail) {
            err.set("%s", fail);
        }
        co_await blk->co_close();
        co_return nullptr;
    }
    cfg.blk = blk.get();
    cfg.writable = o.writable;
    cfg.allocation_depth = *depth;
    cfg.multi_conn = true;
    cfg.writethrough = o.writethrough;
    bool ok = co_await co_run_in<int>(
        s->ctx(), [&]() -> Task<int> { co_return s->add_export(cfg, err) ? 1 : 0; });
    if (!ok) {
        co_await blk->co_close();
        co_return nullptr;
    }
    co_return std::make_unique<NbdBlockExport>(o, std::move(blk), s, cfg.name);
}

// Other users may not resize the node under the clients' feet.
const BlockExportDriver kNbdExportDriver = {"nbd", BLK_PERM_RESIZE, nbd_export_create};

}  // namespace

bool nbd_server_start(AioContext& ctx, const SocketAddress& addr, uint32_t max_connections,
                      uint32_t handshake_max_seconds, Error& err)
{
    if (global_server()) {
        err.set("NBD server already running");
        return false;
    }
    NbdServerOptions opts;
    opts.max_connections = max_connections;
    opts.handshake_max_seconds = handshake_max_seconds;
    std::unique_ptr<NbdServer> s = NbdServer::create(ctx, addr, std::move(opts), err);
    if (!s) {
        return false;
    }
    global_server() = std::move(s);
    return true;
}

NbdServer* nbd_server_get()
{
    return global_server().get();
}

Task<int> nbd_server_co_stop(Error& err)
{
    std::shared_ptr<NbdServer> s = global_server();
    if (!s) {
        err.set("NBD server not running");
        co_return -ENOENT;
    }
    global_server().reset();
    co_await s->co_stop();
    for (const std::string& name : s->export_names()) {
        co_await s->co_remove_export(name, true);
    }
    co_return 0;
}

void nbd_export_register()
{
    block_export_register(kNbdExportDriver);
}

}  // namespace qemu
