// Shared by the socket-fed fuzz harnesses (fuzz-nbd-server, fuzz-nvme-tcp):
// writing the input into one end of a socketpair and draining what the
// server answers, both as coroutines of the server's context.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <vector>

#include "qemu/sockets.h"

namespace qemu::fuzz {

// Sends the whole input, then shuts the writing side: the server sees the
// end of the stream after it.
inline Task<void> co_feed(AioContext& ctx, int fd, const uint8_t* data, size_t size, bool& done)
{
    co_await co_send_full(ctx, fd, data, size);
    shutdown(fd, SHUT_WR);
    done = true;
}

// Reads and drops the server's answers until it closes its end.
inline Task<void> co_drain(AioContext& ctx, int fd, bool& done)
{
    std::vector<uint8_t> buf(64 * 1024);
    for (;;) {
        ssize_t r = co_await ctx.recv(fd, buf.data(), buf.size());
        if (r <= 0) {
            break;
        }
    }
    done = true;
}

}  // namespace qemu::fuzz
