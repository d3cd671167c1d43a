#include "block/block-events.h"

#include <utility>

namespace qemu {

namespace {
BlockEventListener listener;
}  // namespace

void set_block_event_listener(BlockEventListener new_listener)
{
    listener = std::move(new_listener);
}

void block_event_image_corrupted(const BlockImageCorruptedEvent& event)
{
    if (listener.image_corrupted) {
        listener.image_corrupted(event);
    }
}

}  // namespace qemu
