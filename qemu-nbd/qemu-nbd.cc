// qemu-nbd's main(): the modes that need no image (-L, -d), daemonising
// (--fork, -c without -v) with QEMU's error pipe, then the server.
#include "qemu-nbd.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "block/nbd.h"
#include "nbd-client.h"
#include "nbd-device.h"
#include "qemu/error.h"
#include "qemu/sockets.h"

namespace qemu::nbd_tool {
namespace {

// -L: connects to -k, else to -b (default 0.0.0.0 as in QEMU, which Linux
// treats as the local host) and -p.
int list_exports(const Options& opts)
{
    SocketAddress addr;
    if (!opts.sockpath.empty()) {
        addr.type = SocketAddress::Type::Unix;
        addr.path = opts.sockpath;
    } else {
        addr.type = SocketAddress::Type::Inet;
        addr.host = opts.bind.empty() ? "0.0.0.0" : opts.bind;
        addr.port = opts.port.empty() ? std::to_string(qemu::nbd::kDefaultPort) : opts.port;
    }
    Error err;
    int fd = socket_connect(addr, err);
    if (fd < 0) {
        report_error(err);
        return EXIT_FAILURE;
    }
    qemu::nbd::ExportList list;
    bool ok = qemu::nbd::receive_export_list(fd, list, err);
    close(fd);
    if (!ok) {
        report_error(err);
        return EXIT_FAILURE;
    }
    qemu::nbd::print_export_list(list);
    return EXIT_SUCCESS;
}

int disconnect_device(const char* dev)
{
    int fd = open(dev, O_RDWR);
    if (fd < 0) {
        error_report("Cannot open %s: %s", dev, strerror(errno));
        return EXIT_FAILURE;
    }
    qemu::nbd::kernel_device_disconnect(fd);
    close(fd);
    printf("%s disconnected\n", dev);
    return EXIT_SUCCESS;
}

// While daemonised, stderr goes to the parent through a pipe so that
// startup errors reach the user and set the parent's exit status; once the
// server runs, stderr goes where stdout went (/dev/null).
// release_pipe() may run in the main thread (--fork) and in -c's client
// thread.
int g_release_to = -1;
std::mutex g_release_lock;

void release_pipe()
{
    std::lock_guard<std::mutex> guard(g_release_lock);
    if (g_release_to < 0) {
        return;
    }
    if (dup2(g_release_to, STDERR_FILENO) < 0) {
        error_report("Could not release pipe to parent: %s", strerror(errno));
        exit(EXIT_FAILURE);
    }
    if (g_release_to != STDOUT_FILENO) {
        close(g_release_to);
    }
    g_release_to = -1;
}

// The parent's side: relays the child's messages until the pipe closes;
// exits 1 if there were any (QEMU's rule), else 0.
[[noreturn]] void relay_child_stderr(int fd)
{
    bool errors = false;
    char buf[1024];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) != 0) {
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            error_report("Cannot read from daemon: %s", strerror(errno));
            exit(EXIT_FAILURE);
        }
        errors = true;
        if (write(STDERR_FILENO, buf, size_t(n)) != n) {
            exit(EXIT_FAILURE);
        }
    }
    exit(errors ? EXIT_FAILURE : EXIT_SUCCESS);
}

// QEMU's --fork (and -c without -v): the child becomes a daemon (new
// session, stdin/stdout on /dev/null) with stderr on the pipe until
// release_pipe(); the parent never returns.
void daemonize(const Options& opts)
{
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) < 0) {
        error_report("Error setting up communication pipe: %s", strerror(errno));
        exit(EXIT_FAILURE);
    }
    pid_t pid = fork();
    if (pid < 0) {
        error_report("Failed to fork: %s", strerror(errno));
        exit(EXIT_FAILURE);
    }
    if (pid > 0) {
        close(pipefd[1]);
        relay_child_stderr(pipefd[0]);
    }
    close(pipefd[0]);
    g_release_to = STDOUT_FILENO;
    if (opts.verbose) {
        g_release_to = dup(STDERR_FILENO);  // verbose: errors keep going to the user
        if (g_release_to < 0) {
            error_report("Could not dup original stderr: %s", strerror(errno));
            exit(EXIT_FAILURE);
        }
    }
    int null_fd = open("/dev/null", O_RDWR);
    if (setsid() < 0 || null_fd < 0 || dup2(null_fd, STDIN_FILENO) < 0 ||
        dup2(null_fd, STDOUT_FILENO) < 0 || dup2(pipefd[1], STDERR_FILENO) < 0) {
        dprintf(pipefd[1], "%s: Failed to daemonize: %s\n", program_name(), strerror(errno));
        exit(EXIT_FAILURE);
    }
    close(null_fd);
    close(pipefd[1]);
}

}  // namespace
}  // namespace qemu::nbd_tool

int main(int argc, char** argv)
{
    using namespace qemu::nbd_tool;
    qemu::set_program_name(argv[0]);
    signal(SIGPIPE, SIG_IGN);
    Options opts;
    parse_command_line(argc, argv, opts);
    if (opts.list) {
        return list_exports(opts);
    }
    if (opts.disconnect) {
        return disconnect_device(opts.filename.c_str());
    }
    if ((!opts.device.empty() && !opts.verbose) || opts.fork_process) {
        daemonize(opts);
    }
    return run_server(opts, release_pipe);
}
