// The NBD server (QEMU's nbd/server.c): fixed-newstyle negotiation, simple,
// structured and extended replies, block status, several clients with
// several requests each.  Used by qemu-nbd (one NbdServer of its own) and
// by the daemon (the global server of nbd-server-start plus the `nbd`
// export type, see nbd_export_register()).
//
// Threads: an NbdServer belongs to the AioContext it was created in
// (ctx()): its listener, its connections' socket I/O and every member
// function run in that context's thread.  An export's BlockBackend may live
// in another context (an iothread); its requests are run there with
// co_run_in() and the results come back to the connection.
//
// Ownership: the server owns its listening socket and its connections.
// Exports reference a BlockBackend they do not own: whoever added the
// export keeps the backend alive until co_remove_export() (or co_stop())
// has returned.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "block/block-backend.h"
#include "export/export.h"
#include "qemu/sockets.h"

namespace qemu {

// One export as clients see it (NBD_OPT_LIST/INFO/GO by name).
struct NbdExportConfig {
    std::string name;             // <= nbd::kMaxStringSize bytes
    std::string description;      // <= nbd::kMaxStringSize bytes; "" = none
    BlockBackend* blk = nullptr;  // not owned
    bool writable = false;
    // Offer the qemu:allocation-depth metadata context.
    bool allocation_depth = false;
    // NBD_FLAG_CAN_MULTI_CONN when the server allows more than one
    // connection (false for qemu-nbd, whose clients are not shared-safe
    // unless -e/--shared > 1).
    bool multi_conn = true;
    // Every write, zero write and trim is made durable before its reply
    // (--export writethrough=on, qemu-nbd --cache=writethrough).
    bool writethrough = false;
};

struct NbdServerOptions {
    // Connections served at once; 0 = unlimited.  Further connections wait
    // in the listen backlog, as with QEMU.
    uint32_t max_connections = 0;
    // Seconds a client may take from connecting to NBD_OPT_GO; 0 = no
    // limit.  On expiry the connection is shut down.
    uint32_t handshake_max_seconds = 10;
    // Called in ctx() with the new number of connections after each
    // connect and disconnect (qemu-nbd exits after its last client).
    std::function<void(unsigned)> on_clients_changed;
};

class NbdClient;
struct NbdExportEntry;

class NbdServer {
public:
    // Listens on addr (socket_listen()); nullptr and err set on failure.
    static std::unique_ptr<NbdServer> create(AioContext& ctx, const SocketAddress& addr,
                                             NbdServerOptions opts, Error& err);
    // Serves on an already listening stream socket, which it then owns.
    static std::unique_ptr<NbdServer> create_on_fd(AioContext& ctx, int listen_fd,
                                                   NbdServerOptions opts);
    // REQUIRES: co_stop() has returned (or the server never started).
    ~NbdServer();
    NbdServer(const NbdServer&) = delete;
    NbdServer& operator=(const NbdServer&) = delete;

    AioContext& ctx() const { return ctx_; }
    const NbdServerOptions& options() const { return opts_; }
    int listen_fd() const { return listen_fd_; }
    unsigned client_count() const { return unsigned(clients_.size()); }

    // Makes an export visible to new clients.  Fails with QEMU's messages:
    // "NBD server already has export named 'X'", "export name 'X' too
    // long", "export description 'X' too long".  The export size is the
    // backend's length rounded down to 512 bytes, read here.
    bool add_export(const NbdExportConfig& cfg, Error& err);
    bool has_export(const std::string& name) const { return exports_.count(name) != 0; }
    std::vector<std::string> export_names() const;

    // Hides export `name` from new clients; with `hard` also disconnects
    // the clients using it at once, else waits for them to leave.  Returns
    // once no client of it runs a request any more (the backend is then
    // free).  Unknown names return at once.
    Task<void> co_remove_export(const std::string& name, bool hard);

    // Stops listening, disconnects every client and waits until all their
    // requests have finished.  Exports stay registered (remove them to free
    // their backends before deleting the server).
    Task<void> co_stop();

    // Serves one connected socket (taking it over) as if accepted: used by
    // the listener and by tests and fuzzers over a socketpair.
    void serve(int fd);

private:
    friend class NbdClient;
    NbdServer(AioContext& ctx, int listen_fd, NbdServerOptions opts);

    Task<void> co_accept_loop();
    // A connection has ended: it leaves the list and is freed.
    void client_finished(NbdClient* client);
    std::shared_ptr<NbdExportEntry> find_export(const std::string& name) const;

    AioContext& ctx_;
    int listen_fd_;
    NbdServerOptions opts_;
    bool accepting_ = false;  // the accept loop runs
    bool stopping_ = false;
    CoQueue accept_done_;   // co_stop() waits here for the loop
    CoQueue slot_free_;     // the loop waits here at max_connections
    CoQueue clients_gone_;  // co_stop() waits here for the clients
    std::vector<std::unique_ptr<NbdClient>> clients_;
    std::map<std::string, std::shared_ptr<NbdExportEntry>> exports_;
};

// --- The daemon's global server (QMP nbd-server-start / nbd-server-stop) ---

// Starts the global server in ctx.  "NBD server already running" when one
// runs; socket errors as socket_listen() reports them.
bool nbd_server_start(AioContext& ctx, const SocketAddress& addr, uint32_t max_connections,
                      uint32_t handshake_max_seconds, Error& err);
// The global server, or nullptr when none runs.  Main context only.
NbdServer* nbd_server_get();
// Stops and frees the global server: "NBD server not running" (-ENOENT)
// when none runs.  The `nbd` exports of the registry stay listed but serve
// nobody; deleting them afterwards is fine (QEMU deletes them first: the
// daemon calls block-export-del for each before this).  Runs in the
// server's context.
Task<int> nbd_server_co_stop(Error& err);

// Registers the `nbd` export type (BlockExportDriver) with its keys name,
// description, allocation-depth and bitmaps (refused: no dirty bitmaps
// here).  Idempotent.
void nbd_export_register();

}  // namespace qemu
