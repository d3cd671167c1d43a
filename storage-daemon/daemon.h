// qemu-storage-daemon's state and the handlers of its options (QEMU's
// storage-daemon/qemu-storage-daemon.c): what --blockdev, --object,
// --export, --chardev and --monitor create, the QMP monitors, and the
// orderly shutdown of SIGTERM/SIGINT/SIGHUP and quit.
//
// Threads: a StorageDaemon lives in the main thread and runs its main
// context there; IOThreads (--object iothread) run their own.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "block/graph.h"
#include "export/export.h"
#include "monitor/monitor.h"
#include "monitor/qmp-server.h"
#include "qemu/iothread.h"
#include "qemu/sockets.h"

namespace qemu {

// A --chardev socket: where it listens (server=on) or connects to.
struct Chardev {
    std::string id;
    SocketAddress addr;
    bool server = false;
    bool wait = true;     // server=on: wait for a client before going on
    int listen_fd = -1;   // server=on: listening; -1 once a monitor took it
    int client_fd = -1;   // the accepted (wait=on) or connected client
};

// Parses QEMU's "socket,id=ID,path=P,server=on,wait=off" (QemuOpts) into
// c and opens it: listens, accepts with wait=on, connects with server=off.
// false and err set on failure, with QEMU's messages.
bool chardev_parse_and_open(const std::string& text, Chardev& c, Error& err);

class StorageDaemon {
public:
    StorageDaemon();
    // Runs the shutdown if main_loop() did not.
    ~StorageDaemon();
    StorageDaemon(const StorageDaemon&) = delete;
    StorageDaemon& operator=(const StorageDaemon&) = delete;

    // The option handlers; each returns false with err set (the caller
    // prints it with the option's location and exits 1).
    bool add_blockdev(const std::string& text, Error& err);
    bool add_object(const std::string& text, Error& err);
    bool add_export(const std::string& text, Error& err);
    bool add_chardev(const std::string& text, Error& err);
    bool add_monitor(const std::string& text, Error& err);
    bool start_nbd_server(const std::string& text, Error& err);

    // Runs until quit or a termination signal (install_signal_handlers),
    // then shuts down: monitors, exports (BLOCK_EXPORT_DELETED), then every
    // node is drained and flushed.  Returns the exit status (0).
    int main_loop();

    void request_quit() { quit_ = true; }

private:
    IOThread* find_iothread(const std::string& id);
    Task<void> co_wait_for_signal();
    Task<void> co_shutdown();
    // "{...}" is JSON, anything else keyval with implied_key.
    static bool parse_option(const std::string& text, const char* implied_key, QDict& opts,
                             Error& err);

    AioContext ctx_;
    // Declared before the graph: nodes bound to an iothread are closed in
    // it when the graph goes.
    std::map<std::string, std::unique_ptr<IOThread>> iothreads_;
    BlockGraph graph_;
    BlockExportRegistry exports_;
    QmpEvents events_;
    MonitorContext mon_;
    QmpDispatcher dispatcher_;
    QmpServer server_;
    std::map<std::string, Chardev> chardevs_;
    RequestCounter signal_waiter_;  // co_wait_for_signal() runs
    bool quit_ = false;
    bool shut_down_ = false;
};

// Process-level parts (storage-daemon/os-posix.cc).
//
// SIGINT, SIGHUP and SIGTERM make signal_fd() readable; SIGPIPE is ignored.
void install_signal_handlers();
int signal_fd();
// Makes signal_fd() readable without a signal (to end its waiter).
void signal_wake();
// --pidfile: creates and locks the file and writes our pid; it is removed
// by remove_pidfile() (at exit).  false and err set on failure.
bool write_pidfile(const std::string& path, Error& err);
void remove_pidfile();
// --daemonize: forks; the parent waits until daemonize_ready() (exit 0) or
// the child's exit (exit 1) and never returns.  Call before any thread or
// AioContext exists.
void daemonize_start();
// The child finished starting: the parent exits 0, and we leave the
// terminal and the current directory (stdio to /dev/null, chdir /).
void daemonize_ready();

}  // namespace qemu
