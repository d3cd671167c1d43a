// What the monitor's commands act on: the daemon's graph, exports,
// iothreads and event bus, and how they ask the daemon to exit.
//
// Ownership: the daemon (storage-daemon/) owns everything referenced here
// and outlives every monitor.  Threads: the main context's thread only.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "block/graph.h"
#include "export/export.h"
#include "monitor/qmp-events.h"
#include "qemu/iothread.h"

namespace qemu {

struct MonitorContext {
    BlockGraph& graph;
    BlockExportRegistry& exports;
    QmpEvents& events;
    // quit: the daemon shuts down once the reply has been sent.
    std::function<void()> request_quit;
};

// --nbd-server / nbd-server-start: starts the daemon's NBD server from flat
// options, the address under addr_prefix ("addr." on the command line),
// with max-connections (100) and handshake-max-seconds (10); tls-creds and
// tls-authz name objects that cannot exist here.  false and err set (QEMU's
// messages) on failure.
bool nbd_server_start_flat(AioContext& ctx, QDict& opts, const std::string& addr_prefix,
                           Error& err);
// nbd-server-stop and shutdown: deletes the `nbd` exports, then stops the
// server; -ENOENT and "NBD server not running" when none runs.
Task<int> nbd_server_co_stop_all(BlockExportRegistry& exports, Error& err);

}  // namespace qemu
