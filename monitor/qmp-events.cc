// The QMP event bus (see include/monitor/qmp-events.h).
#include "monitor/qmp-events.h"

#include <sys/time.h>

#include "block/block-events.h"

namespace qemu {

int QmpEvents::subscribe(Sink sink)
{
    int handle = next_handle_++;
    sinks_[handle] = std::move(sink);
    return handle;
}

void QmpEvents::emit(const std::string& name, nlohmann::ordered_json data)
{
    // QEMU's qmp_event_build_dict() order: event, timestamp, then data.
    timeval tv;
    gettimeofday(&tv, nullptr);
    nlohmann::ordered_json ev = nlohmann::ordered_json::object();
    ev["event"] = name;
    ev["timestamp"] = {{"seconds", int64_t(tv.tv_sec)}, {"microseconds", int64_t(tv.tv_usec)}};
    ev["data"] = std::move(data);
    // A sink may unsubscribe (its connection failed) while we iterate.
    std::map<int, Sink> sinks = sinks_;
    for (auto& [handle, sink] : sinks) {
        sink(ev);
    }
}

void QmpEvents::post_from_any_thread(std::string name, nlohmann::ordered_json data)
{
    main_ctx_.post([this, name = std::move(name), data = std::move(data)]() mutable {
        emit(name, std::move(data));
    });
}

void QmpEvents::install_block_listener()
{
    BlockEventListener listener;
    listener.image_corrupted = [this](const BlockImageCorruptedEvent& e) {
        // QAPI's BLOCK_IMAGE_CORRUPTED members, in schema order; a daemon's
        // nodes belong to no device, so "device" is empty as in QEMU.
        nlohmann::ordered_json data = nlohmann::ordered_json::object();
        data["device"] = "";
        if (!e.node_name.empty()) {
            data["node-name"] = e.node_name;
        }
        data["msg"] = e.msg;
        if (e.offset) {
            data["offset"] = int64_t(*e.offset);
        }
        if (e.size) {
            data["size"] = int64_t(*e.size);
        }
        data["fatal"] = e.fatal;
        post_from_any_thread("BLOCK_IMAGE_CORRUPTED", std::move(data));
    };
    set_block_event_listener(std::move(listener));
}

}  // namespace qemu
