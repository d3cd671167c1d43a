// Events of the block layer that a monitor passes on to its clients as QMP
// events.  Tools install no listener: the matching message has already been
// reported through qemu/error.h.
//
// Thread: events are raised in the thread of the node's AioContext (an
// iothread in a daemon); a listener must be safe to call from any of them.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace qemu {

// QEMU's BLOCK_IMAGE_CORRUPTED: a format found its metadata corrupt; with
// `fatal` the image is marked corrupt and further writes are refused.
struct BlockImageCorruptedEvent {
    std::string node_name;
    std::string msg;
    std::optional<uint64_t> offset;  // the corrupt area, when known
    std::optional<uint64_t> size;
    bool fatal = false;
};

struct BlockEventListener {
    std::function<void(const BlockImageCorruptedEvent&)> image_corrupted;
};

// Installs the process's listener (an empty one removes it).
// REQUIRES: no block I/O runs concurrently (set it at startup).
void set_block_event_listener(BlockEventListener listener);

void block_event_image_corrupted(const BlockImageCorruptedEvent& event);

}  // namespace qemu
