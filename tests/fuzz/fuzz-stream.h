// Shared by the socket-fed fuzz harnesses (fuzz-nbd-server, fuzz-nvme-tcp):
// writing the input into one end of a socketpair and draining what the
// server answers, both as coroutines of the server's context.
#pragma once

#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
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

// One fuzz input through a socketpair: serve(fd) hands the server its end;
// the loop runs until the input is sent, the answers are drained and
// busy() (the server still has connections) is false.
template <typename Serve, typename Busy>
void run_input(AioContext& ctx, const uint8_t* data, size_t size, Serve serve, Busy busy)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        abort();
    }
    bool fed = false, drained = false;
    serve(sv[0]);
    co_spawn(co_feed(ctx, sv[1], data, size, fed));
    co_spawn(co_drain(ctx, sv[1], drained));
    while (!fed || !drained || busy()) {
        ctx.poll(true);
    }
    // The finished connection is freed from the loop.
    ctx.poll(false);
    close(sv[1]);
}

}  // namespace qemu::fuzz
