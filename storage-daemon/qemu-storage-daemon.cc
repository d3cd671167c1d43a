// qemu-storage-daemon: serves block nodes through exports and a QMP
// monitor, with QEMU's command line (storage-daemon/qemu-storage-daemon.c).
//
// Two passes over argv, as QEMU: the first handles -h, -V, --daemonize and
// --pidfile; the second creates everything else strictly in command-line
// order, and any failure there exits 1 with
// "qemu-storage-daemon: --OPTION ARG: MESSAGE".
#include <getopt.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "daemon.h"

using namespace qemu;

namespace {

enum {
    kOptBlockdev = 256,
    kOptChardev,
    kOptDaemonize,
    kOptExport,
    kOptMonitor,
    kOptNbdServer,
    kOptObject,
    kOptPidfile,
};

const option kLongOptions[] = {
    {"blockdev", required_argument, nullptr, kOptBlockdev},
    {"chardev", required_argument, nullptr, kOptChardev},
    {"daemonize", no_argument, nullptr, kOptDaemonize},
    {"export", required_argument, nullptr, kOptExport},
    {"help", no_argument, nullptr, 'h'},
    {"monitor", required_argument, nullptr, kOptMonitor},
    {"nbd-server", required_argument, nullptr, kOptNbdServer},
    {"object", required_argument, nullptr, kOptObject},
    {"pidfile", required_argument, nullptr, kOptPidfile},
    {"version", no_argument, nullptr, 'V'},
    {nullptr, 0, nullptr, 0},
};

// Leading '-': non-options come back in order as 1; ':' not given, so
// getopt prints its own messages for bad options.
const char kShortOptions[] = "-hV";

void help()
{
    printf("Usage: %s [options]\n"
           "QEMU storage daemon\n"
           "\n"
           "  -h, --help             display this help and exit\n"
           "  -V, --version          output version information and exit\n"
           "\n"
           "  --blockdev [driver=]<driver>[,node-name=<N>][,discard=ignore|unmap]\n"
           "             [,cache.direct=on|off][,cache.no-flush=on|off]\n"
           "             [,read-only=on|off][,auto-read-only=on|off]\n"
           "             [,force-share=on|off][,detect-zeroes=on|off|unmap]\n"
           "             [,driver specific parameters...]\n"
           "                         configure a block backend\n"
           "\n"
           "  --chardev socket,id=<id>,path=<path>|host=<host>,port=<port>\n"
           "            [,server=on|off][,wait=on|off]\n"
           "                         configure a character device backend\n"
           "\n"
           "  --daemonize            daemonize the process, and have the parent exit\n"
           "                         once startup is complete\n"
           "\n"
           "  --export [type=]nbd,id=<id>,node-name=<node-name>[,name=<export-name>]\n"
           "           [,writable=on|off][,writethrough=on|off][,iothread=<id>]\n"
           "           [,description=<text>][,allocation-depth=on|off]\n"
           "                         export the specified block node over NBD\n"
           "                         (requires --nbd-server)\n"
           "\n"
           "  --export [type=]ublk,id=<id>,node-name=<node-name>[,writable=on|off]\n"
           "           [,num-queues=<num-queues>][,queue-depth=<queue-depth>]\n"
           "           [,logical-block-size=<logical-block-size>]\n"
           "                         export the specified block node as a local\n"
           "                         /dev/ublkbN disk (Linux ublk)\n"
           "\n"
           "  --export [type=]vduse-blk,id=<id>,node-name=<node-name>\n"
           "           ,name=<vduse-name>[,writable=on|off]\n"
           "           [,num-queues=<num-queues>][,queue-size=<queue-size>]\n"
           "           [,logical-block-size=<logical-block-size>]\n"
           "           [,serial=<serial-number>]\n"
           "                         export the specified block node as a\n"
           "                         vduse-blk device\n"
           "\n"
           "  --monitor [chardev=]name[,mode=control][,pretty[=on|off]]\n"
           "                         configure a QMP monitor\n"
           "\n"
           "  --nbd-server addr.type=inet,addr.host=<host>,addr.port=<port>\n"
           "               [,max-connections=<n>][,handshake-max-seconds=<n>]\n"
           "  --nbd-server addr.type=unix,addr.path=<path>\n"
           "               [,max-connections=<n>][,handshake-max-seconds=<n>]\n"
           "                         start an NBD server for exporting block nodes\n"
           "\n"
           "  --object iothread,id=<id>\n"
           "                         create an I/O thread\n"
           "\n"
           "  --pidfile <path>       write process ID to a file after startup\n"
           "\n"
           "qemu-zoned implements the QEMU storage daemon's interfaces; see\n"
           "docs/storage-daemon.rst for what it supports.\n",
           program_name());
}

void version()
{
    printf("%s version 7.2.0 (qemu-zoned " QEMU_ZONED_VERSION ")\n"
           "Copyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers\n",
           program_name());
}

// The words of the option getopt just returned, as typed: "--export ARG"
// or "--export=ARG" (QEMU's location in error messages).
std::string option_location(char** argv)
{
    if (optind >= 2 && argv[optind - 1] == optarg) {
        return std::string(argv[optind - 2]) + " " + optarg;
    }
    return argv[optind - 1];
}

// Pass 1: -h, -V, --daemonize, --pidfile; bad options exit here.
void process_early_options(int argc, char** argv, bool& daemonize, std::string& pidfile)
{
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, kShortOptions, kLongOptions, nullptr)) != -1) {
        switch (c) {
        case '?':
            exit(1);
        case 'h':
            help();
            exit(0);
        case 'V':
            version();
            exit(0);
        case kOptDaemonize:
            daemonize = true;
            break;
        case kOptPidfile:
            pidfile = optarg;
            break;
        case 1:
            fprintf(stderr, "%s: %s: Unexpected argument\n", program_name(), optarg);
            exit(1);
        }
    }
}

// Pass 2: everything else, in order.  false after reporting a failure.
bool process_options(StorageDaemon& d, int argc, char** argv)
{
    int c;
    optind = 1;
    opterr = 0;  // reported by pass 1 already
    while ((c = getopt_long(argc, argv, kShortOptions, kLongOptions, nullptr)) != -1) {
        Error err;
        bool ok = true;
        switch (c) {
        case kOptBlockdev:
            ok = d.add_blockdev(optarg, err);
            break;
        case kOptChardev:
            ok = d.add_chardev(optarg, err);
            break;
        case kOptExport:
            ok = d.add_export(optarg, err);
            break;
        case kOptMonitor:
            ok = d.add_monitor(optarg, err);
            break;
        case kOptNbdServer:
            ok = d.start_nbd_server(optarg, err);
            break;
        case kOptObject:
            ok = d.add_object(optarg, err);
            break;
        }
        if (!ok) {
            report_error(err, option_location(argv) + ": ");
            return false;
        }
    }
    return true;
}

}  // namespace

int main(int argc, char** argv)
{
    set_program_name(argv[0]);
    bdrv_init();
    bool daemonize = false;
    std::string pidfile;
    process_early_options(argc, argv, daemonize, pidfile);
    if (daemonize) {
        daemonize_start();
    }
    install_signal_handlers();
    int status = 1;
    {
        // On failure, what was created goes in order (d's destructor)
        // before we exit 1: nothing has been served.
        StorageDaemon d;
        Error err;
        if (!process_options(d, argc, argv)) {
            return 1;
        }
        if (!pidfile.empty() && !write_pidfile(pidfile, err)) {
            err.prepend("cannot create PID file: ");
            report_error(err);
            return 1;
        }
        daemonize_ready();
        status = d.main_loop();
    }
    remove_pidfile();
    return status;
}
