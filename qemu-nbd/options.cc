// qemu-nbd's command line, with QEMU's option letters, checks and
// messages (qemu-nbd.c of QEMU 7.2-10.x).
#include <getopt.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "block/block-common.h"
#include "block/nbd.h"
#include "qemu-nbd.h"
#include "qemu/error.h"

namespace qemu::nbd_tool {
namespace {

enum LongOnly {
    OPT_CACHE = 256,
    OPT_AIO,
    OPT_DISCARD,
    OPT_DETECT_ZEROES,
    OPT_OBJECT,
    OPT_TLSCREDS,
    OPT_IMAGE_OPTS,
    OPT_FORK,
    OPT_TLSAUTHZ,
    OPT_PID_FILE,
    OPT_SELINUX_LABEL,
    OPT_TLSHOSTNAME,
};

void usage(const char* name)
{
    printf("Usage: %s [OPTIONS] FILE\n"
           "  or:  %s -L [OPTIONS]\n"
           "QEMU Disk Network Block Device Utility\n"
           "\n"
           "  -h, --help                display this help and exit\n"
           "  -V, --version             output version information and exit\n"
           "\n"
           "Connection properties:\n"
           "  -p, --port=PORT           port to listen on (default `%d')\n"
           "  -b, --bind=IFACE          interface to bind to (default `0.0.0.0')\n"
           "  -k, --socket=PATH         path to the unix socket\n"
           "                            (default '/var/lock/qemu-nbd-DEVICE')\n"
           "  -e, --shared=NUM          device can be shared by NUM clients (default '1')\n"
           "  -t, --persistent          don't exit on the last connection\n"
           "  -v, --verbose             display extra debugging information\n"
           "  -x, --export-name=NAME    expose export by name (default is empty string)\n"
           "  -D, --description=TEXT    export a human-readable description\n"
           "\n"
           "Exposing part of the image:\n"
           "  -A, --allocation-depth    expose the allocation depth\n"
           "\n"
           "General purpose options:\n"
           "  -L, --list                list exports available from another NBD server\n"
           "  --fork                    fork off the server process and exit the parent\n"
           "                            once the server is running\n"
           "  --pid-file=PATH           store the server's process ID in the given file\n"
           "\n"
           "Kernel NBD client support:\n"
           "  -c, --connect=DEV         connect FILE to the local NBD device DEV\n"
           "  -d, --disconnect          disconnect the specified device\n"
           "\n"
           "Block device options:\n"
           "  -f, --format=FORMAT       set image format (raw, qcow2, ...)\n"
           "  -r, --read-only           export read-only\n"
           "  -n, --nocache             disable host cache\n"
           "      --cache=MODE          set cache mode used to access the disk image, the\n"
           "                            valid options are: 'none', 'writeback' (default),\n"
           "                            'writethrough', 'directsync' and 'unsafe'\n"
           "      --aio=MODE            set AIO mode (native, io_uring or threads)\n"
           "      --discard=MODE        set discard mode (ignore, unmap)\n"
           "      --detect-zeroes=MODE  set detect-zeroes mode (off, on, unmap)\n"
           "      --image-opts          treat FILE as a full set of image options\n"
           "\n"
           "Not supported by this build: -o, -B, -s, -l, -T, --object, --tls-*,\n"
           "--selinux-label.\n",
           name, name, qemu::nbd::kDefaultPort);
}

void version(const char* name)
{
    printf("%s 7.2.0 (qemu-zoned " QEMU_ZONED_VERSION ")\n"
           "Written by Anthony Liguori.\n"
           "\n"
           "Copyright (c) the qemu-zoned developers\n"
           "This is free software; see the source for copying conditions.  There is NO\n"
           "warranty; not even for MERCHANTABILITY or FITNESS FOR A PARTICULAR PURPOSE.\n",
           name);
}

[[noreturn]] void fail(const char* fmt, const char* arg = nullptr)
{
    error_report(fmt, arg);
    exit(EXIT_FAILURE);
}

// QEMU's qemu_strtoi(): the whole string a number within int.
bool parse_int(const char* s, int& out)
{
    char* end = nullptr;
    errno = 0;
    long v = strtol(s, &end, 0);
    if (end == s || *end != '\0' || errno == ERANGE || v < INT_MIN || v > INT_MAX) {
        return false;
    }
    out = int(v);
    return true;
}

// --cache, -n, --aio, --discard and --detect-zeroes.  QEMU's wording,
// including its mix of quotes.
void parse_block_option(int ch, const char* arg, Options& opts)
{
    switch (ch) {
    case 'n':
    case OPT_CACHE:
        if (opts.seen_cache) {
            fail("-n and --cache can only be specified once");
        }
        opts.seen_cache = true;
        if (!bdrv_parse_cache_mode(arg, opts.flags, opts.writethrough)) {
            fail("Invalid cache mode `%s'", arg);
        }
        break;
    case OPT_AIO:
        if (opts.seen_aio) {
            fail("--aio can only be specified once");
        }
        opts.seen_aio = true;
        if (!bdrv_parse_aio(arg, opts.aio)) {
            fail("Invalid aio mode '%s'", arg);
        }
        break;
    case OPT_DISCARD:
        if (opts.seen_discard) {
            fail("--discard can only be specified once");
        }
        opts.seen_discard = true;
        if (!bdrv_parse_discard_flags(arg, opts.flags)) {
            fail("Invalid discard mode `%s'", arg);
        }
        break;
    case OPT_DETECT_ZEROES:
        if (strcmp(arg, "off") && strcmp(arg, "on") && strcmp(arg, "unmap")) {
            fail("Failed to parse detect_zeroes mode: invalid parameter value: %s", arg);
        }
        if (!strcmp(arg, "unmap") && !(opts.flags & BDRV_O_UNMAP)) {
            fail("setting detect-zeroes to unmap is not allowed without setting discard "
                 "operation to unmap");
        }
        if (strcmp(arg, "off")) {
            opts.flags |= BDRV_O_DETECT_ZEROES | (strcmp(arg, "unmap") ? 0 : BDRV_O_DETECT_ZEROES_UNMAP);
        }
        break;
    }
}

// Options QEMU has and this build lacks: an error rather than a silently
// different export.
[[noreturn]] void unsupported(int ch)
{
    static const struct {
        int ch;
        const char* name;
    } names[] = {
        {'o', "-o/--offset"}, {'B', "-B/--bitmap"},
        {'l', "-l/--load-snapshot"}, {'T', "-T/--trace"}, {OPT_OBJECT, "--object"},
        {OPT_TLSCREDS, "--tls-creds"}, {OPT_TLSAUTHZ, "--tls-authz"},
        {OPT_TLSHOSTNAME, "--tls-hostname"}, {OPT_SELINUX_LABEL, "--selinux-label"},
    };
    for (const auto& n : names) {
        if (n.ch == ch) {
            fail("%s is not supported by this build", n.name);
        }
    }
    fail("unexpected option");
}

// The consistency checks QEMU makes after parsing.
void check_options(int argc, char** argv, Options& opts)
{
    if (opts.list) {
        if (argc != optind) {
            fail("List mode is incompatible with a file name");
        }
        if (opts.have_export_name || opts.have_description || !opts.device.empty() ||
            opts.disconnect || !opts.format.empty() || opts.allocation_depth || opts.seen_aio ||
            opts.seen_discard || opts.seen_cache) {
            fail("List mode is incompatible with per-device settings");
        }
        if (opts.fork_process) {
            fail("List mode is incompatible with forking");
        }
        return;
    }
    if (argc - optind != 1) {
        error_report("Invalid number of arguments");
        fprintf(stderr, "Try `%s --help' for more information.\n", argv[0]);
        exit(EXIT_FAILURE);
    }
    opts.filename = argv[optind];
    opts.have_filename = true;
    if (opts.image_opts && !opts.format.empty()) {
        fail("--image-opts and -f are mutually exclusive");
    }
}

}  // namespace

void parse_command_line(int argc, char** argv, Options& opts)
{
    static const option lopt[] = {
        {"help", no_argument, nullptr, 'h'}, {"version", no_argument, nullptr, 'V'},
        {"bind", required_argument, nullptr, 'b'}, {"port", required_argument, nullptr, 'p'},
        {"socket", required_argument, nullptr, 'k'}, {"offset", required_argument, nullptr, 'o'},
        {"read-only", no_argument, nullptr, 'r'}, {"allocation-depth", no_argument, nullptr, 'A'},
        {"bitmap", required_argument, nullptr, 'B'}, {"connect", required_argument, nullptr, 'c'},
        {"disconnect", no_argument, nullptr, 'd'}, {"list", no_argument, nullptr, 'L'},
        {"snapshot", no_argument, nullptr, 's'}, {"load-snapshot", required_argument, nullptr, 'l'},
        {"nocache", no_argument, nullptr, 'n'}, {"cache", required_argument, nullptr, OPT_CACHE},
        {"aio", required_argument, nullptr, OPT_AIO},
        {"discard", required_argument, nullptr, OPT_DISCARD},
        {"detect-zeroes", required_argument, nullptr, OPT_DETECT_ZEROES},
        {"shared", required_argument, nullptr, 'e'}, {"format", required_argument, nullptr, 'f'},
        {"persistent", no_argument, nullptr, 't'}, {"verbose", no_argument, nullptr, 'v'},
        {"object", required_argument, nullptr, OPT_OBJECT},
        {"export-name", required_argument, nullptr, 'x'},
        {"description", required_argument, nullptr, 'D'},
        {"tls-creds", required_argument, nullptr, OPT_TLSCREDS},
        {"tls-hostname", required_argument, nullptr, OPT_TLSHOSTNAME},
        {"tls-authz", required_argument, nullptr, OPT_TLSAUTHZ},
        {"image-opts", no_argument, nullptr, OPT_IMAGE_OPTS},
        {"trace", required_argument, nullptr, 'T'}, {"fork", no_argument, nullptr, OPT_FORK},
        {"pid-file", required_argument, nullptr, OPT_PID_FILE},
        {"selinux-label", required_argument, nullptr, OPT_SELINUX_LABEL},
        {nullptr, 0, nullptr, 0},
    };
    opts.flags = BDRV_O_RDWR;
    int ch;
    while ((ch = getopt_long(argc, argv, "hVb:o:p:rsnc:dvk:e:f:tl:x:T:D:AB:L", lopt, nullptr)) != -1) {
        switch (ch) {
        case 'n':
            parse_block_option(ch, "none", opts);
            break;
        case OPT_CACHE: case OPT_AIO: case OPT_DISCARD: case OPT_DETECT_ZEROES:
            parse_block_option(ch, optarg, opts);
            break;
        case 'b': opts.bind = optarg; break;
        case 'p': opts.port = optarg; break;
        case 'r':
            opts.read_only = true;
            opts.flags &= ~BDRV_O_RDWR;
            break;
        case 's': opts.flags |= BDRV_O_SNAPSHOT; break;
        case 'A': opts.allocation_depth = true; break;
        case 'k':
            if (optarg[0] != '/') {
                fail("socket path must be absolute");
            }
            opts.sockpath = optarg;
            break;
        case 'd': opts.disconnect = true; break;
        case 'c': opts.device = optarg; break;
        case 'e':
            if (!parse_int(optarg, opts.shared) || opts.shared < 0) {
                fail("Invalid shared device number '%s'", optarg);
            }
            break;
        case 'f': opts.format = optarg; break;
        case 't': opts.persistent = true; break;
        case 'x':
            if (strlen(optarg) > qemu::nbd::kMaxStringSize) {
                fail("export name '%s' too long", optarg);
            }
            opts.have_export_name = true;
            opts.export_name = optarg;
            break;
        case 'D':
            if (strlen(optarg) > qemu::nbd::kMaxStringSize) {
                fail("export description '%s' too long", optarg);
            }
            opts.have_description = true;
            opts.description = optarg;
            break;
        case 'v': opts.verbose = true; break;
        case 'V': version(argv[0]); exit(EXIT_SUCCESS);
        case 'h': usage(argv[0]); exit(EXIT_SUCCESS);
        case '?': fail("Try `%s --help' for more information.", argv[0]);
        case OPT_IMAGE_OPTS: opts.image_opts = true; break;
        case OPT_FORK: opts.fork_process = true; break;
        case 'L': opts.list = true; break;
        case OPT_PID_FILE: opts.pid_file = optarg; break;
        default: unsupported(ch);
        }
    }
    check_options(argc, argv, opts);
}

}  // namespace qemu::nbd_tool
