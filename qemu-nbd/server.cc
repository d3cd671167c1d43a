// qemu-nbd's server mode: one image, one export, one NbdServer in the main
// thread's AioContext; the kernel client of -c in a thread of its own
// (NBD_DO_IT blocks); SIGTERM/SIGINT/SIGHUP received by a sigwait() thread.
#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>

#include "block/nbd.h"
#include "export/nbd-server.h"
#include "nbd-client.h"
#include "nbd-device.h"
#include "qemu-img/tool.h"
#include "qemu-nbd.h"
#include "qemu/error.h"
#include "qemu/sockets.h"

namespace qemu::nbd_tool {
namespace {

// What the main loop waits for.  Set from the context's thread (last
// client gone) or posted to it (signals, the kernel client's end).
struct ServerState {
    bool terminate = false;
    bool had_client = false;
};

SocketAddress listen_address(const Options& opts, std::string& sockpath)
{
    SocketAddress addr;
    sockpath = opts.sockpath;
    if (sockpath.empty() && !opts.device.empty()) {
        std::string dev = opts.device;
        sockpath = "/var/lock/qemu-nbd-" + dev.substr(dev.rfind('/') + 1);
    }
    if (!sockpath.empty()) {
        addr.type = SocketAddress::Type::Unix;
        addr.path = sockpath;
    } else {
        addr.type = SocketAddress::Type::Inet;
        addr.host = opts.bind.empty() ? "0.0.0.0" : opts.bind;
        addr.port = opts.port.empty() ? std::to_string(qemu::nbd::kDefaultPort) : opts.port;
    }
    return addr;
}

// -c: connects to our own socket in simple mode, hands the socket to the
// kernel and serves the device until it is disconnected; then asks the
// main loop to stop.  Returns the process's exit status.
int kernel_client(const Options& opts, const SocketAddress& addr, void (*release_pipe)(),
                  AioContext& ctx, ServerState& state)
{
    int status = EXIT_FAILURE;
    Error err;
    int dev_fd = -1;
    int sock = socket_connect(addr, err);
    qemu::nbd::SimpleExport exp;
    if (sock < 0 || !qemu::nbd::open_simple_export(sock, opts.export_name, exp, err)) {
        report_error(err);
    } else if ((dev_fd = open(opts.device.c_str(), O_RDWR)) < 0) {
        error_report("Failed to open %s: %s", opts.device.c_str(), strerror(errno));
    } else if (!qemu::nbd::kernel_device_init(dev_fd, sock, exp.size, exp.flags, 0, err)) {
        report_error(err);
    } else {
        // The kernel reads the partition table on the next open.
        std::thread([dev = opts.device] {
            int fd = open(dev.c_str(), O_RDWR);
            if (fd >= 0) {
                close(fd);
            }
        }).detach();
        if (opts.verbose && !opts.fork_process) {
            fprintf(stderr, "NBD device %s is now connected to %s\n", opts.device.c_str(),
                    opts.filename.c_str());
        } else {
            release_pipe();
        }
        status = qemu::nbd::kernel_device_run(dev_fd) < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
    }
    if (dev_fd >= 0) {
        close(dev_fd);
    }
    if (sock >= 0) {
        close(sock);
    }
    ctx.post([&state] { state.terminate = true; });
    return status;
}

std::unique_ptr<BlockBackend> open_export_image(const Options& opts, AioContext& ctx)
{
    qemu::img::ImageSpec spec;
    spec.filename = opts.filename;
    spec.format = opts.format;
    spec.image_opts = opts.image_opts;
    spec.aio = opts.aio;
    std::string prefix = "Failed to blk_new_open '" + opts.filename + "': ";
    return qemu::img::open_image(spec, opts.flags, ctx, &prefix);
}

int write_pid_file(const std::string& path)
{
    FILE* f = fopen(path.c_str(), "w");
    if (!f || fprintf(f, "%d\n", int(getpid())) < 0 || fclose(f) != 0) {
        error_report("Failed to write PID file '%s': %s", path.c_str(), strerror(errno));
        return -1;
    }
    return 0;
}

// Blocks the termination signals in every thread (call before any is
// created) and returns the set for the sigwait() thread.
sigset_t block_termination_signals()
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    return set;
}

}  // namespace

int run_server(const Options& opts, void (*release_pipe)())
{
    sigset_t signals = block_termination_signals();
    AioContext ctx;
    bdrv_init();
    ServerState state;
    std::string sockpath;
    SocketAddress addr = listen_address(opts, sockpath);

    NbdServerOptions sopts;
    sopts.max_connections = uint32_t(opts.shared);
    sopts.on_clients_changed = [&state, persistent = opts.persistent](unsigned n) {
        state.had_client |= n > 0;
        if (n == 0 && state.had_client && !persistent) {
            state.terminate = true;
        }
    };
    Error err;
    std::unique_ptr<NbdServer> server = NbdServer::create(ctx, addr, std::move(sopts), err);
    if (!server) {
        report_error(err);
        return EXIT_FAILURE;
    }
    std::unique_ptr<BlockBackend> blk = open_export_image(opts, ctx);
    NbdExportConfig cfg{.name = opts.export_name, .description = opts.description,
                        .blk = blk.get(), .writable = !opts.read_only,
                        .allocation_depth = opts.allocation_depth,
                        .multi_conn = opts.shared != 1, .writethrough = opts.writethrough};
    if (!blk || !server->add_export(cfg, err)) {
        if (blk) {
            report_error(err);
        }
        run_sync(ctx, server->co_stop());
        if (!sockpath.empty()) {
            unlink(sockpath.c_str());
        }
        return EXIT_FAILURE;
    }

    std::atomic<int> client_status{EXIT_SUCCESS};
    std::thread client_thread;
    if (!opts.device.empty()) {
        client_thread = std::thread([&] {
            client_status = kernel_client(opts, addr, release_pipe, ctx, state);
        });
    }
    std::thread signal_thread([&signals, &ctx, &state] {
        int sig;
        sigwait(&signals, &sig);
        ctx.post([&state] { state.terminate = true; });
    });
    int status = EXIT_SUCCESS;
    if ((!opts.pid_file.empty() && write_pid_file(opts.pid_file) < 0) || chdir("/") < 0) {
        status = EXIT_FAILURE;
        state.terminate = true;
    }
    if (opts.fork_process) {
        release_pipe();
    }
    while (!state.terminate) {
        ctx.poll(true);
    }
    run_sync(ctx, server->co_remove_export(opts.export_name, true));
    run_sync(ctx, server->co_stop());
    server.reset();
    run_sync(ctx, blk->co_close());
    blk.reset();
    if (!sockpath.empty()) {
        unlink(sockpath.c_str());
    }
    pthread_kill(signal_thread.native_handle(), SIGTERM);  // ends its sigwait()
    signal_thread.join();
    if (client_thread.joinable()) {
        client_thread.join();
        status = client_status;
    }
    return status;
}

}  // namespace qemu::nbd_tool
