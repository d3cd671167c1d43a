// nbd-serve: a test-only host for the NBD server (tests/interop/
// nbd-server.sh), serving one image on a Unix socket until SIGTERM/SIGINT
// or, without --persistent, until its last client has left.  Not a product
// tool: qemu-nbd is.
//
//   nbd-serve -k SOCKET [-x NAME] [-f FORMAT] [-r] [-A] [-t] [-e N] FILE
//
// -r read-only, -A offers qemu:allocation-depth, -t persistent, -e the
// number of connections served at once (default 1 as qemu-nbd's --shared).
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "block/block-backend.h"
#include "export/nbd-server.h"

using namespace qemu;

namespace {

struct Args {
    std::string socket, name, format, file;
    bool read_only = false, depth = false, persistent = false;
    uint32_t shared = 1;
};

bool parse(int argc, char** argv, Args& a)
{
    int c;
    while ((c = getopt(argc, argv, "k:x:f:rAte:")) != -1) {
        switch (c) {
        case 'k': a.socket = optarg; break;
        case 'x': a.name = optarg; break;
        case 'f': a.format = optarg; break;
        case 'r': a.read_only = true; break;
        case 'A': a.depth = true; break;
        case 't': a.persistent = true; break;
        case 'e': a.shared = uint32_t(strtoul(optarg, nullptr, 10)); break;
        default: return false;
        }
    }
    if (optind + 1 != argc || a.socket.empty()) {
        return false;
    }
    a.file = argv[optind];
    return true;
}

// Sets `stop` when SIGTERM or SIGINT arrives.
Task<void> co_watch_signals(AioContext& ctx, int sfd, bool& stop)
{
    co_await ctx.poll_in(sfd);
    stop = true;
}

}  // namespace

int main(int argc, char** argv)
{
    set_program_name(argv[0]);
    Args a;
    if (!parse(argc, argv, a)) {
        fprintf(stderr,
                "usage: nbd-serve -k SOCKET [-x NAME] [-f FORMAT] [-r] [-A] [-t] [-e N] FILE\n");
        return 1;
    }
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigprocmask(SIG_BLOCK, &mask, nullptr);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC);

    bdrv_init();
    AioContext ctx;
    Error err;
    QDict opts;
    if (!a.format.empty()) {
        opts.set("driver", a.format);
    }
    std::unique_ptr<BlockBackend> blk =
        BlockBackend::open(a.file, opts, a.read_only ? 0 : BDRV_O_RDWR, ctx, err);
    if (!blk) {
        report_error(err, a.file + ": ");
        return 1;
    }
    bool stop = false;
    NbdServerOptions so;
    so.max_connections = a.shared;
    so.on_clients_changed = [&](unsigned n) {
        if (n == 0 && !a.persistent) {
            stop = true;
        }
    };
    SocketAddress addr;
    addr.path = a.socket;
    std::unique_ptr<NbdServer> server = NbdServer::create(ctx, addr, so, err);
    NbdExportConfig cfg{a.name, "", blk.get(), !a.read_only, a.depth, a.shared != 1};
    if (!server || !server->add_export(cfg, err)) {
        report_error(err);
        return 1;
    }
    co_spawn(co_watch_signals(ctx, sfd, stop));
    while (!stop) {
        ctx.poll(true);
    }
    run_sync(ctx, server->co_stop());
    run_sync(ctx, server->co_remove_export(a.name, true));
    run_sync(ctx, blk->co_close());
    // The signal watcher may still wait on sfd: it ends with the process.
    return 0;
}
