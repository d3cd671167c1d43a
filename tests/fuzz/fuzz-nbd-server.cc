// libFuzzer harness: the fuzz input is everything an NBD client sends.
//
// Each input is written into one end of a socketpair whose other end the
// server serves (NbdServer::serve(), the same path as an accepted
// connection), then that end is shut for writing; the harness reads and
// drops whatever the server answers until the server closes.  So the
// input goes through the handshake, option negotiation (lengths, names,
// meta-context queries, INFO requests) and, once it has chosen an export,
// request parsing and every command on a null-co node (64 MiB, reads
// zeroes, writes dropped: nothing touches the disk).  Two exports are
// offered: "rw" (writable, allocation depth) and "" (read-only).
//
// Errors and dropped connections are expected; crashes, sanitizer reports,
// hangs and leaks are bugs.  Build: CXX=clang++ meson setup build-fuzz
// -Dfuzzing=true; seeds: tests/fuzz/make-nbd-corpus.sh OUT_DIR.
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <vector>

#include "block/block-backend.h"
#include "export/nbd-server.h"
#include "fuzz-stream.h"

namespace qemu::fuzz {
namespace {

struct World {
    AioContext ctx;
    std::unique_ptr<BlockBackend> rw, ro;
    std::unique_ptr<NbdServer> server;

    World()
    {
        bdrv_init();
        rw = open(true);
        ro = open(false);
        NbdServerOptions o;
        o.handshake_max_seconds = 0;  // no timers: runs are deterministic
        server = NbdServer::create_on_fd(ctx, -1, o);
        Error err;
        if (!server->add_export({"rw", "fuzzing", rw.get(), true, true, true}, err) ||
            !server->add_export({"", "", ro.get(), false, false, true}, err)) {
            abort();
        }
    }
    std::unique_ptr<BlockBackend> open(bool writable)
    {
        QDict o;
        o.set("driver", "null-co");
        o.set("size", "64M");
        o.set("read-zeroes", "on");
        Error err;
        auto blk = BlockBackend::open(std::nullopt, o, writable ? BDRV_O_RDWR : 0, ctx, err);
        if (!blk) {
            abort();
        }
        return blk;
    }
};

}  // namespace
}  // namespace qemu::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    using namespace qemu;
    using namespace qemu::fuzz;
    static World* w = new World();
    run_input(
        w->ctx, data, size, [&](int fd) { w->server->serve(fd); },
        [&]() { return w->server->client_count() != 0; });
    return 0;
}
