// QMP events: the bus through which the daemon's events reach every
// negotiated monitor connection, in QEMU's shape:
//   {"event": "BLOCK_EXPORT_DELETED", "data": {"id": "e0"},
//    "timestamp": {"seconds": S, "microseconds": US}}
//
// Threads: emit() and the subscriptions belong to the main context's
// thread.  Events raised elsewhere (BLOCK_IMAGE_CORRUPTED in an iothread)
// come through post_from_any_thread().
#pragma once

#include <functional>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "qemu/aio.h"

namespace qemu {

class QmpEvents {
public:
    using Sink = std::function<void(const nlohmann::ordered_json& event)>;

    explicit QmpEvents(AioContext& main_ctx) : main_ctx_(main_ctx) {}

    // Returns a handle for unsubscribe().
    int subscribe(Sink sink);
    void unsubscribe(int handle) { sinks_.erase(handle); }

    // Builds the event (timestamped now) and hands it to every sink.
    void emit(const std::string& name, nlohmann::ordered_json data);
    // emit() from any thread: runs it in the main context.  REQUIRES: this
    // bus outlives the main context's loop.
    void post_from_any_thread(std::string name, nlohmann::ordered_json data);

    // Listens to the block layer's events (block-events.h) for the rest of
    // the process: BLOCK_IMAGE_CORRUPTED.
    void install_block_listener();

private:
    AioContext& main_ctx_;
    std::map<int, Sink> sinks_;
    int next_handle_ = 1;
};

}  // namespace qemu
