// libFuzzer harness: the fuzz input is everything an NVMe/TCP host sends.
//
// As fuzz-nbd-server: each input is written into one end of a socketpair
// whose other end the target serves (NvmeTcpListener::serve(), the path of
// an accepted connection), that end is then shut for writing and whatever
// the target answers is read and dropped until it closes the connection.
// The input goes through ICReq, PDU framing and validation, digests,
// Fabrics Connect (subsystem "nqn.2026-01.org.qemu-zoned:fuzz", host NQN
// anything), property and admin commands, and I/O commands with in-capsule
// or R2T data (TTAGs count from 0, so inputs can answer an R2T blindly) on
// a 64 MiB null-co namespace (reads zeroes, writes dropped).
//
// Errors, TermReqs and dropped connections are expected; crashes, sanitizer
// reports, hangs and leaks are bugs.  Build: CXX=clang++ meson setup
// build-fuzz -Dfuzzing=true; seeds: tests/fuzz/make-nvme-tcp-corpus.sh DIR.
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <vector>

#include "block/block-backend.h"
#include "export/nvme-tcp/nvme-tcp-internal.h"
#include "fuzz-stream.h"

namespace qemu::fuzz {
namespace {

struct World {
    AioContext ctx;
    std::unique_ptr<BlockBackend> blk;
    std::unique_ptr<NvmeTarget> target;
    std::unique_ptr<NvmeTcpListener> listener;

    World()
    {
        bdrv_init();
        QDict o;
        o.set("driver", "null-co");
        o.set("size", "64M");
        o.set("read-zeroes", "on");
        Error err;
        blk = BlockBackend::open(std::nullopt, o, BDRV_O_RDWR, ctx, err);
        if (!blk) {
            abort();
        }
        target = std::make_unique<NvmeTarget>(ctx);
        SocketAddress addr;
        addr.type = SocketAddress::Type::Inet;
        addr.host = "127.0.0.1";
        addr.port = "4420";
        listener = std::make_unique<NvmeTcpListener>(*target, -1, nvme_tcp_port_info(addr, 1));
        NvmeSubsystem* sub = target->add_subsystem("nqn.2026-01.org.qemu-zoned:fuzz",
                                                   listener->port(), "fuzz", "fuzz", err);
        if (!sub || !run_sync(ctx, sub->co_add_namespace(*blk, NvmeNamespaceOptions{}, err))) {
            abort();
        }
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
        w->ctx, data, size, [&](int fd) { w->listener->serve(fd); },
        [&]() { return w->listener->connection_count() != 0; });
    return 0;
}
