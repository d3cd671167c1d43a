// qemu-io: command line, -c command list and the stdin prompt loop.
#include <getopt.h>
#include <glib-unix.h>
#include <glib.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "qemu-io.h"

namespace qemu {
namespace {

void usage()
{
    const char* name = program_name();
    printf("Usage: %s [OPTIONS]... [-c STRING]... [file]\n"
           "QEMU Disk exerciser\n"
           "\n"
           "  --object OBJECTDEF   define an object such as 'secret' for\n"
           "                       passwords and/or encryption keys\n"
           "  --image-opts         treat file as option string\n"
           "  -c, --cmd STRING     execute command with its arguments\n"
           "                       from the given string\n"
           "  -f, --format FMT     specifies the block driver to use\n"
           "  -r, --read-only      export read-only\n"
           "  -s, --snapshot       use snapshot file\n"
           "  -n, --nocache        disable host cache, short for -t none\n"
           "  -C, --copy-on-read   enable copy-on-read\n"
           "  -m, --misalign       misalign allocations for O_DIRECT\n"
           "  -k, --native-aio     use kernel AIO implementation\n"
           "                       (Linux only, prefer use of -i)\n"
           "  -i, --aio=MODE       use AIO mode (threads, native or io_uring)\n"
           "  -t, --cache=MODE     use the given cache mode for the image\n"
           "  -d, --discard=MODE   use the given discard mode for the image\n"
           "  -T, --trace [[enable=]<pattern>][,events=<file>][,file=<file>]\n"
           "                       specify tracing options\n"
           "                       see qemu-img(1) man page for full description\n"
           "  -U, --force-share    force shared permissions\n"
           "  -h, --help           display this help and exit\n"
           "  -V, --version        output version information and exit\n"
           "\n"
           "See '%s -c help' for information on available commands.\n"
           "\n"
           "See <https://qemu.org/contribute/report-a-bug> for how to report bugs.\n"
           "More information on the QEMU project at <https://qemu.org>.\n",
           name, name);
}

// Lines from stdin, read with our own buffer so that we know whether a
// complete line is already at hand without touching the descriptor.
class StdinLines {
public:
    // A complete line (or end of input) is buffered.
    bool line_buffered() const { return eof_ || buf_.find('\n') != std::string::npos; }

    // Blocks for the next line, without its newline; false at end of input.
    bool next(std::string& line)
    {
        while (!line_buffered()) {
            char chunk[4096];
            ssize_t n = read(STDIN_FILENO, chunk, sizeof(chunk));
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n <= 0) {
                eof_ = true;
                break;
            }
            buf_.append(chunk, size_t(n));
        }
        size_t nl = buf_.find('\n');
        if (nl == std::string::npos) {
            if (buf_.empty()) {
                return false;
            }
            line = std::move(buf_);  // a last line without newline
            buf_.clear();
            return true;
        }
        line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return true;
    }

private:
    std::string buf_;
    bool eof_ = false;
};

gboolean stdin_became_ready(gint, GIOCondition, gpointer ready)
{
    *static_cast<bool*>(ready) = true;
    return G_SOURCE_REMOVE;
}

// While qemu-io waits for its next command, the event loop keeps running so
// that aio_* requests report, as QEMU's main loop does: at least one
// iteration, and until stdin has something to read.
void wait_for_input(QemuIoSession& s, GMainContext* gctx, const StdinLines& in)
{
    if (!s.has_pending_aio()) {
        return;
    }
    bool ready = in.line_buffered();
    GSource* watch = nullptr;
    if (!ready) {
        watch = g_unix_fd_source_new(STDIN_FILENO, GIOCondition(G_IO_IN | G_IO_HUP | G_IO_ERR));
        g_source_set_callback(watch, G_SOURCE_FUNC(stdin_became_ready), &ready, nullptr);
        g_source_attach(watch, gctx);
    }
    do {
        g_main_context_iteration(gctx, !ready);
    } while (!ready);
    if (watch) {
        g_source_destroy(watch);
        g_source_unref(watch);
    }
}

// The GLib main context stdin mode waits in; it must outlive the
// AioContext whose GSource it holds.
class MainContext {
public:
    MainContext() : gctx_(g_main_context_new()) {}
    ~MainContext() { g_main_context_unref(gctx_); }
    MainContext(const MainContext&) = delete;
    MainContext& operator=(const MainContext&) = delete;
    GMainContext* get() const { return gctx_; }

private:
    GMainContext* gctx_;
};

int command_loop(QemuIoSession& s, GMainContext* gctx, const std::vector<std::string>& commands)
{
    int last_error = 0;
    if (!commands.empty()) {
        for (size_t i = 0; !s.quit_requested() && i < commands.size(); i++) {
            int ret = s.run_command(commands[i]);
            if (ret < 0) {
                last_error = ret;
            }
        }
        return last_error;
    }

    g_source_attach(s.ctx().gsource(), gctx);
    StdinLines in;
    bool tty = isatty(STDIN_FILENO);
    std::string prompt = std::string(program_name()) + "> ";
    while (!s.quit_requested()) {
        printf("%s", prompt.c_str());
        fflush(stdout);
        wait_for_input(s, gctx, in);
        std::string line;
        if (!in.next(line)) {
            if (tty) {
                printf("\n");
            }
            break;
        }
        int ret = s.run_command(line);
        if (ret < 0) {
            last_error = ret;
        }
    }
    return last_error;
}

enum LongOnlyOptions {
    OPTION_OBJECT = 256,
    OPTION_IMAGE_OPTS = 257,
};

int qemu_io_main(int argc, char** argv)
{
    set_program_name(argv[0]);
    signal(SIGPIPE, SIG_IGN);

    static const option long_options[] = {
        {"help", no_argument, nullptr, 'h'},
        {"version", no_argument, nullptr, 'V'},
        {"cmd", required_argument, nullptr, 'c'},
        {"format", required_argument, nullptr, 'f'},
        {"read-only", no_argument, nullptr, 'r'},
        {"snapshot", no_argument, nullptr, 's'},
        {"nocache", no_argument, nullptr, 'n'},
        {"copy-on-read", no_argument, nullptr, 'C'},
        {"misalign", no_argument, nullptr, 'm'},
        {"native-aio", no_argument, nullptr, 'k'},
        {"aio", required_argument, nullptr, 'i'},
        {"discard", required_argument, nullptr, 'd'},
        {"cache", required_argument, nullptr, 't'},
        {"trace", required_argument, nullptr, 'T'},
        {"object", required_argument, nullptr, OPTION_OBJECT},
        {"image-opts", no_argument, nullptr, OPTION_IMAGE_OPTS},
        {"force-share", no_argument, nullptr, 'U'},
        {nullptr, 0, nullptr, 0},
    };
    ImageOpenMode mode;
    bool read_only = false, image_opts = false, misalign = false;
    const char* format = nullptr;
    std::vector<std::string> commands;
    int c;
    while ((c = getopt_long(argc, argv, "hVc:d:f:rsnCmki:t:T:U", long_options, nullptr)) != -1) {
        switch (c) {
        case 's':
            mode.flags |= BDRV_O_SNAPSHOT;
            break;
        case 'n':
            mode.flags |= BDRV_O_NOCACHE;
            mode.writethrough = false;
            break;
        case 'C':
            mode.flags |= BDRV_O_COPY_ON_READ;
            break;
        case 'd':
            if (!bdrv_parse_discard_flags(optarg, mode.flags)) {
                error_report("Invalid discard option: %s", optarg);
                return 1;
            }
            break;
        case 'f':
            format = optarg;
            break;
        case 'c':
            commands.emplace_back(optarg);
            break;
        case 'r':
            read_only = true;
            break;
        case 'm':
            misalign = true;
            break;
        case 'k':
            mode.aio = "native";
            break;
        case 'i':
            if (!bdrv_parse_aio(optarg, mode.aio)) {
                error_report("Invalid aio option: %s", optarg);
                return 1;
            }
            break;
        case 't':
            if (!bdrv_parse_cache_mode(optarg, mode.flags, mode.writethrough)) {
                error_report("Invalid cache option: %s", optarg);
                return 1;
            }
            break;
        case 'T':
            error_report("tracing (-T) is not supported");
            return 1;
        case 'V':
            printf("%s version %s (qemu-zoned)\n", program_name(), QEMU_ZONED_VERSION);
            return 0;
        case 'h':
            usage();
            return 0;
        case 'U':
            mode.force_share = true;
            break;
        case OPTION_OBJECT:
            error_report("--object is not supported");
            return 1;
        case OPTION_IMAGE_OPTS:
            image_opts = true;
            break;
        default:
            usage();
            return 1;
        }
    }
    if (argc - optind > 1) {
        usage();
        return 1;
    }
    if (format && image_opts) {
        error_report("--image-opts and -f are mutually exclusive");
        return 1;
    }

    MainContext gctx;
    AioContext ctx;
    bdrv_init();
    int ret;
    {
        QemuIoSession session(ctx, image_opts, misalign);
        if (!read_only) {
            mode.flags |= BDRV_O_RDWR;
        }
        if (argc - optind == 1) {
            QDict opts;
            bool ok;
            if (image_opts) {
                Error err;
                if (*argv[optind] && !keyval_parse(opts, argv[optind], nullptr, err)) {
                    error_report("%s", err.pretty().c_str());
                    return 1;
                }
                ok = session.open(nullptr, std::move(opts), mode);
            } else {
                if (format) {
                    opts.set("driver", format);
                }
                std::string filename = argv[optind];
                ok = session.open(&filename, std::move(opts), mode);
            }
            if (!ok) {
                return 1;
            }
        }
        ret = command_loop(session, gctx.get(), commands);
        // Leaving the scope lets outstanding aio_* requests report and
        // closes the image.
    }
    return ret < 0 ? 1 : 0;
}

}  // namespace
}  // namespace qemu

int main(int argc, char** argv)
{
    return qemu::qemu_io_main(argc, argv);
}
