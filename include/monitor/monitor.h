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

}  // namespace qemu
