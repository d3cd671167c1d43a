// Block exports: how a front end (NBD, vhost-user-blk, NVMe/TCP, VDUSE,
// ublk) serves a node of the graph, as QEMU's block/export/.
//
//   --export type=nbd,id=e0,node-name=q0,writable=on,iothread=io0,name=disk
//
// An export holds a BlockBackend on a named node of a BlockGraph, with
// CONSISTENT_READ (+ WRITE when writable) and sharing everything the
// driver does not withhold.  It runs in one AioContext: the iothread's
// given by `iothread=` (the node is moved there first), else the node's.
// The registry parses the common keys (BlockExportOptions), creates the
// export through the driver registered for `type`, and deletes it.
//
// Threads: the registry belongs to the graph's main context's thread, as
// the graph does.  An export's own work (connections, requests) runs in
// ctx(); the registry reaches it there with co_run_in().
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "block/block-backend.h"
#include "block/graph.h"
#include "qemu/iothread.h"

namespace qemu {

// The keys every export type has (QEMU's BlockExportOptions base).
struct BlockExportOptions {
    std::string type;
    std::string id;
    std::string node_name;
    bool writable = false;
    // Every write is flushed before it completes (no volatile cache).
    bool writethrough = false;
    std::string iothread;  // empty: stay in the node's context
    bool fixed_iothread = false;
};

class BlockExport {
public:
    // Deleting an export that has not finished co_shutdown() is a bug.
    virtual ~BlockExport() = default;
    BlockExport(const BlockExport&) = delete;
    BlockExport& operator=(const BlockExport&) = delete;

    const BlockExportOptions& options() const { return opts_; }
    const std::string& id() const { return opts_.id; }
    BlockBackend& blk() const { return *blk_; }
    AioContext& ctx() const { return blk_->ctx(); }
    // Set once deletion has begun (query-block-exports' shutting-down).
    bool shutting_down() const { return shutting_down_; }
    // Members of the type's own that query-block-exports adds after QEMU's
    // (ublk: "dev-id", the kernel's device number), in ctx()'s thread.
    virtual std::vector<std::pair<std::string, int64_t>> info() const { return {}; }

    // block-export-del: stops accepting clients and ends the existing ones
    // (mode=hard: at once, dropping requests not yet started; soft: after
    // the clients have disconnected on their own), waits for every request
    // in flight, then closes the backend.  Runs in ctx(); returns when
    // nothing of the export runs any more.  Called once.
    Task<void> co_shutdown(bool hard);

protected:
    BlockExport(BlockExportOptions opts, std::unique_ptr<BlockBackend> blk)
        : opts_(std::move(opts)), blk_(std::move(blk)) {}

    // The driver's part of co_shutdown(): end the clients as `hard` says
    // and return once none of the export's coroutines run any more.
    virtual Task<void> co_stop(bool hard) = 0;

private:
    BlockExportOptions opts_;
    std::unique_ptr<BlockBackend> blk_;
    bool shutting_down_ = false;
};

// An export type.  Drivers are registered once (static storage) and
// looked up by `type`.
struct BlockExportDriver {
    const char* type;
    // Permissions the driver withholds from other users of the node
    // (NBD: BLK_PERM_RESIZE, so that block_resize fails while exported).
    uint64_t unshared_perm = 0;
    // Creates the export in blk's context (called there) from the common
    // options and the type's own keys, which it takes out of `driver_opts`
    // (keys left over are reported by the registry).  nullptr and err set
    // on failure; the backend is then closed by the registry.
    Task<std::unique_ptr<BlockExport>> (*co_create)(const BlockExportOptions& opts,
                                                    QDict& driver_opts,
                                                    std::unique_ptr<BlockBackend> blk, Error& err);
};

void block_export_register(const BlockExportDriver& drv);
const BlockExportDriver* block_export_find_driver(const std::string& type);

class BlockExportRegistry {
public:
    // iothreads: finds an IOThread by id (nullptr: none), for `iothread=`.
    BlockExportRegistry(BlockGraph& graph, std::function<IOThread*(const std::string&)> iothreads);
    // REQUIRES: every export deleted (shutdown_all()).
    ~BlockExportRegistry();

    // --export / block-export-add with QEMU's checks and messages: "Invalid
    // block export id", "Block export id 'X' is already in use", "Cannot
    // find device='' nor node-name='X'", "iothread \"X\" not found",
    // "Cannot export read-only node as writable", "Parameter 'type' does
    // not accept value 'X'", "Parameter 'X' is unexpected".  Returns the
    // export (owned by the registry) or nullptr with err set.
    Task<BlockExport*> co_add(QDict opts, Error& err);

    // block-export-del: "Export 'X' is not found", "Export 'X' is already
    // shutting down"... (see QEMU's messages); on success the export is
    // gone when the task returns and on_deleted has been called.
    Task<int> co_del(const std::string& id, bool hard, Error& err);

    // Deletes every export (hard), for quit and SIGTERM.
    Task<void> co_shutdown_all();

    BlockExport* find(const std::string& id) const;
    // Oldest first.
    std::vector<BlockExport*> list() const;

    // Called with an export's id once it is gone (BLOCK_EXPORT_DELETED).
    void set_on_deleted(std::function<void(const std::string&)> cb) { on_deleted_ = std::move(cb); }

private:
    BlockGraph& graph_;
    std::function<IOThread*(const std::string&)> iothreads_;
    std::map<std::string, std::unique_ptr<BlockExport>> exports_;
    std::vector<BlockExport*> order_;  // exports_ in the order they were added
    std::function<void(const std::string&)> on_deleted_;
};

}  // namespace qemu
