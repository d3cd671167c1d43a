// qemu-nbd: serves one image over NBD with QEMU's command line, lists a
// server's exports (-L) and attaches Linux's NBD client to an image or
// detaches it (-c, -d).  See docs/qemu-nbd.rst.
#pragma once

#include <cstdint>
#include <string>

namespace qemu::nbd_tool {

// Everything the command line says.  Pointers into argv are kept as
// strings; "set" flags tell an option given from its default, as QEMU's
// checks need them.
struct Options {
    std::string bind;      // -b, empty: 0.0.0.0 (server) / localhost (-L)
    std::string port;      // -p, empty: 10809
    std::string sockpath;  // -k, absolute
    bool persistent = false;
    int shared = 1;  // -e: 0 = unlimited
    bool have_export_name = false;
    std::string export_name;  // -x
    bool have_description = false;
    std::string description;  // -D
    bool allocation_depth = false;
    bool list = false;
    bool fork_process = false;
    std::string pid_file;
    std::string device;  // -c
    bool disconnect = false;
    bool verbose = false;
    std::string format;
    bool read_only = false;
    bool image_opts = false;
    int flags = 0;             // BDRV_O_*: cache and discard modes
    bool writethrough = false;  // --cache's guest write cache (off for qemu-nbd's default)
    bool seen_cache = false, seen_aio = false, seen_discard = false;
    std::string aio;
    std::string filename;  // the one argument (FILE, or DEV with -d)
    bool have_filename = false;
};

// Parses argv into opts with QEMU's messages; exits (0 for -h/-V, 1 for
// errors) when there is nothing more to do.
void parse_command_line(int argc, char** argv, Options& opts);

// Runs the server for opts (after any --fork/-c daemonising): opens the
// image, listens, exports it, and returns the exit status once the server
// has stopped (last client gone without -t, SIGTERM/SIGINT, or the kernel
// client ended).  release_pipe is called once the server is ready.
int run_server(const Options& opts, void (*release_pipe)());

}  // namespace qemu::nbd_tool
