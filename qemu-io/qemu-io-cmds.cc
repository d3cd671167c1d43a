// qemu-io's session: the command table (the data, image and zone commands
// come from rw-cmds.cc, image-cmds.cc and zone-cmds.cc), the control
// commands (open, close, quit, help, sleep, abort, sigraise) and
// QemuIoSession, which runs command lines.  Output follows QEMU 7.2's
// qemu-io byte for byte (test suites compare it).
#include <getopt.h>
#include <glib.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cinttypes>
#include <climits>
#include <cmath>
#include <csignal>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>

#include "qemu-io/commands.h"
#include "qemu/cutils.h"
#include "qemu/units.h"

namespace qemu {

namespace qemu_io {

namespace {

// --- abort, sigraise, sleep -------------------------------------------------------------

int abort_f(QemuIoSession&, int, char**)
{
    abort();
}

const CommandInfo abort_cmd = {
    "abort", nullptr, abort_f, 0, 0, CMD_NOFILE_OK, 0, nullptr,
    "simulate a program crash using abort(3)", nullptr,
};

int sigraise_f(QemuIoSession&, int, char** argv)
{
    int64_t sig = 0;
    int ret;
    if ((ret = parse_size_arg(argv[1], sig)) < 0) {
        return ret;
    }
    if (sig > NSIG) {
        printf("signal argument '%s' is too large to be a valid signal\n", argv[1]);
        return -EINVAL;
    }
    // The signal may end the process before stdio would flush.
    fflush(stdout);
    fflush(stderr);
    raise(int(sig));
    return 0;
}

const CommandInfo sigraise_cmd = {
    "sigraise", nullptr, sigraise_f, 1, 1, CMD_NOFILE_OK, 0, "signal", "raises a signal",
    "\n"
    " raises the given signal\n"
    "\n"
    " Example:\n"
    " 'sigraise 15' - raises SIGTERM\n"
    "\n"
    " Invokes raise(signal), where \"signal\" is the mandatory integer argument\n"
    " given to sigraise.\n"
    "\n",
};

Task<void> sleep_co(AioContext& ctx, int64_t ns)
{
    co_await ctx.sleep_ns(ns);
}

int sleep_f(QemuIoSession& s, int, char** argv)
{
    char* end = nullptr;
    long ms = strtol(argv[1], &end, 0);
    if (ms < 0 || *end != '\0') {
        printf("%s is not a valid number\n", argv[1]);
        return -EINVAL;
    }
    // The event loop keeps running meanwhile: aio_* requests report.
    run_sync(s.ctx(), sleep_co(s.ctx(), int64_t(ms) * 1000000));
    return 0;
}

const CommandInfo sleep_cmd = {
    "sleep", nullptr, sleep_f, 1, 1, CMD_NOFILE_OK, 0, nullptr,
    "waits for the given value in milliseconds", nullptr,
};

// --- open, close, quit ------------------------------------------------------------------

// An option string of open -o or --image-opts, added to dict.
bool parse_option_string(const char* text, QDict& dict)
{
    if (!*text) {
        return true;
    }
    Error err;
    if (!keyval_parse(dict, text, nullptr, err)) {
        error_report("%s", err.pretty().c_str());
        return false;
    }
    return true;
}

int open_f(QemuIoSession& s, int argc, char** argv);

const CommandInfo open_cmd = {
    "open", "o", open_f, 1, -1, CMD_NOFILE_OK, 0,
    "[-rsCnkU] [-t cache] [-d discard] [-o options] [path]",
    "open the file specified by path",
    "\n"
    " opens a new file in the requested mode\n"
    "\n"
    " Example:\n"
    " 'open -n -o driver=raw /tmp/data' - opens raw data file read-write, uncached\n"
    "\n"
    " Opens a file for subsequent use by all of the other qemu-io commands.\n"
    " -r, -- open file read-only\n"
    " -s, -- use snapshot file\n"
    " -C, -- use copy-on-read\n"
    " -n, -- disable host cache, short for -t none\n"
    " -U, -- force shared permissions\n"
    " -k, -- use kernel AIO implementation (Linux only, prefer use of -i)\n"
    " -i, -- use AIO mode (threads, native or io_uring)\n"
    " -t, -- use the given cache mode for the image\n"
    " -d, -- use the given discard mode for the image\n"
    " -o, -- options to be given to the block driver\n",
};

int open_f(QemuIoSession& s, int argc, char** argv)
{
    ImageOpenMode mode;
    bool read_only = false;
    QDict opts;
    int c;
    while ((c = getopt(argc, argv, "snCro:ki:t:d:U")) != -1) {
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
        case 'r':
            read_only = true;
            break;
        case 'k':
            mode.aio = "native";
            break;
        case 't':
            if (!bdrv_parse_cache_mode(optarg, mode.flags, mode.writethrough)) {
                error_report("Invalid cache option: %s", optarg);
                return -EINVAL;
            }
            break;
        case 'd':
            if (!bdrv_parse_discard_flags(optarg, mode.flags)) {
                error_report("Invalid discard option: %s", optarg);
                return -EINVAL;
            }
            break;
        case 'i':
            if (!bdrv_parse_aio(optarg, mode.aio)) {
                error_report("Invalid aio option: %s", optarg);
                return -EINVAL;
            }
            break;
        case 'o':
            if (s.image_opts()) {
                printf("--image-opts and 'open -o' are mutually exclusive\n");
                return -EINVAL;
            }
            if (!parse_option_string(optarg, opts)) {
                return -EINVAL;
            }
            break;
        case 'U':
            mode.force_share = true;
            break;
        default:
            return usage(open_cmd);
        }
    }
    if (!read_only) {
        mode.flags |= BDRV_O_RDWR;
    }
    if (s.image_opts() && optind == argc - 1) {
        if (!parse_option_string(argv[optind], opts)) {
            return -EINVAL;
        }
        optind++;
    }
    bool ok;
    if (optind == argc - 1) {
        std::string filename = argv[optind];
        ok = s.open(&filename, std::move(opts), mode);
    } else if (optind == argc) {
        ok = s.open(nullptr, std::move(opts), mode);
    } else {
        return usage(open_cmd);
    }
    return ok ? 0 : -EINVAL;
}

int close_f(QemuIoSession& s, int, char**)
{
    s.close();
    return 0;
}

const CommandInfo close_cmd = {
    "close", "c", close_f, 0, 0, 0, 0, nullptr, "close the current open file", nullptr,
};

int quit_f(QemuIoSession& s, int, char**)
{
    s.request_quit();
    return 0;
}

const CommandInfo quit_cmd = {
    "quit", "q", quit_f, -1, -1, CMD_GLOBAL, 0, nullptr, "exit the program", nullptr,
};

// --- help ------------------------------------------------------------------------------------

int help_f(QemuIoSession& s, int argc, char** argv);

const CommandInfo help_cmd = {
    "help", "?", help_f, 0, 1, CMD_GLOBAL, 0, "[command]", "help for one or all commands", nullptr,
};

// Sorted by name, as help lists them.
const std::vector<const CommandInfo*>& command_table()
{
    static const std::vector<const CommandInfo*> table = [] {
        std::vector<const CommandInfo*> t = {
            &abort_cmd, &close_cmd, &help_cmd, &open_cmd, &quit_cmd, &sigraise_cmd, &sleep_cmd,
        };
        for (auto family : {read_write_commands, image_commands, zone_commands}) {
            std::vector<const CommandInfo*> cmds = family();
            t.insert(t.end(), cmds.begin(), cmds.end());
        }
        std::sort(t.begin(), t.end(), [](const CommandInfo* a, const CommandInfo* b) {
            return strcmp(a->name, b->name) < 0;
        });
        return t;
    }();
    return table;
}

const CommandInfo* find_command(const char* name)
{
    for (const CommandInfo* ci : command_table()) {
        if (strcmp(ci->name, name) == 0 || (ci->altname && strcmp(ci->altname, name) == 0)) {
            return ci;
        }
    }
    return nullptr;
}

void help_oneline(const char* name, const CommandInfo& ci)
{
    printf("%s ", name);
    if (ci.args) {
        printf("%s ", ci.args);
    }
    printf("-- %s\n", ci.oneline);
}

int help_f(QemuIoSession&, int argc, char** argv)
{
    if (argc < 2) {
        for (const CommandInfo* ci : command_table()) {
            help_oneline(ci->name, *ci);
        }
        printf("\nUse 'help commandname' for extended help.\n");
        return 0;
    }
    const CommandInfo* ci = find_command(argv[1]);
    if (!ci) {
        printf("command %s not found\n", argv[1]);
        return -EINVAL;
    }
    help_oneline(argv[1], *ci);
    if (ci->help) {
        fputs(ci->help, stdout);
    }
    return 0;
}

// Words of a command line: separated by single spaces, empty ones dropped
// (no quoting, like QEMU).
std::vector<std::string> split_words(const std::string& line)
{
    std::vector<std::string> words;
    size_t pos = 0;
    while (pos <= line.size()) {
        size_t sp = line.find(' ', pos);
        if (sp == std::string::npos) {
            sp = line.size();
        }
        if (sp > pos) {
            words.push_back(line.substr(pos, sp - pos));
        }
        pos = sp + 1;
    }
    return words;
}

}  // namespace

}  // namespace qemu_io

using namespace qemu_io;


// --- The session ----------------------------------------------------------------------------

QemuIoSession::QemuIoSession(AioContext& ctx, bool image_opts, bool misalign)
    : ctx_(ctx), image_opts_(image_opts), misalign_(misalign)
{
}

QemuIoSession::~QemuIoSession()
{
    close();
}

namespace {

// Where the file driver's aio= option goes: at the top for a protocol node,
// under "file." when a format sits on top (as when probing).
std::string aio_option_key(const std::string* filename, const QDict& options)
{
    const std::string* driver = options.get("driver");
    QDict from_json;
    if (!driver && filename && starts_with(*filename, "json:")) {
        Error ignored;  // a broken json: name fails properly at open
        if (json_parse_flat(from_json, filename->substr(5), ignored)) {
            driver = from_json.get("driver");
        }
    }
    const BlockDriver* drv = driver ? bdrv_find_driver(*driver) : nullptr;
    return drv && drv->is_protocol() ? "aio" : "file.aio";
}

}  // namespace

bool QemuIoSession::open(const std::string* filename, QDict options, const ImageOpenMode& mode)
{
    if (blk_) {
        error_report("file open already, try 'help close'");
        return false;
    }
    if (mode.force_share) {
        const std::string* fs = options.get("force-share");
        if (fs && *fs != "on") {
            error_report("-U conflicts with image options");
            return false;
        }
        options.set("force-share", "on");
    }
    if (!mode.aio.empty()) {
        options.set(aio_option_key(filename, options), mode.aio);
    }
    Error err;
    blk_ = BlockBackend::open(filename ? std::optional<std::string>(*filename) : std::nullopt, std::move(options), mode.flags,
                              ctx_, err);
    if (!blk_) {
        if (filename) {
            error_report("can't open device %s: %s", filename->c_str(), err.pretty().c_str());
        } else {
            error_report("can't open: %s", err.pretty().c_str());
        }
        return false;
    }
    writethrough_ = mode.writethrough;
    return true;
}

void QemuIoSession::close()
{
    drain();
    blk_.reset();
}

void QemuIoSession::drain()
{
    while (aio_pending_ > 0) {
        ctx_.poll(true);
    }
}

void QemuIoSession::ReportTurn::await_suspend(std::coroutine_handle<> h)
{
    s_.report_queue_.emplace_back(seq_, h);
    if (s_.report_queue_.size() == s_.aio_pending_ && !s_.report_scheduled_) {
        s_.report_scheduled_ = true;
        co_spawn(s_.report_completed());
    }
}

namespace {
// co_await NextIteration{ctx}: continue from the event loop's next iteration,
// like a QEMU bottom half.
struct NextIteration {
    AioContext& ctx;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) { ctx.schedule(h); }
    void await_resume() const noexcept {}
};
}  // namespace

Task<void> QemuIoSession::report_completed()
{
    co_await NextIteration{ctx_};
    report_scheduled_ = false;
    auto batch = std::move(report_queue_);
    report_queue_.clear();
    std::sort(batch.begin(), batch.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    for (auto& entry : batch) {
        entry.second.resume();
    }
}

int QemuIoSession::run_command(const std::string& line)
{
    std::vector<std::string> words = split_words(line);
    if (words.empty()) {
        return 0;
    }
    const CommandInfo* ci = find_command(words[0].c_str());
    if (!ci) {
        fprintf(stderr, "command \"%s\" not found\n", words[0].c_str());
        return -EINVAL;
    }
    if (!(ci->flags & CMD_GLOBAL) && !(ci->flags & CMD_NOFILE_OK) && !blk_) {
        fprintf(stderr, "no file open, try 'help open'\n");
        return -EINVAL;
    }
    int nargs = int(words.size()) - 1;
    if (nargs < ci->argmin || (ci->argmax != -1 && nargs > ci->argmax)) {
        if (ci->argmax == -1) {
            fprintf(stderr, "bad argument count %d to %s, expected at least %d arguments\n",
                    nargs, words[0].c_str(), ci->argmin);
        } else if (ci->argmin == ci->argmax) {
            fprintf(stderr, "bad argument count %d to %s, expected %d arguments\n", nargs,
                    words[0].c_str(), ci->argmin);
        } else {
            fprintf(stderr, "bad argument count %d to %s, expected between %d and %d arguments\n",
                    nargs, words[0].c_str(), ci->argmin, ci->argmax);
        }
        return -EINVAL;
    }
    // Like QEMU, take the permissions a command needs when it first runs,
    // and keep them: after truncate, qemu-io holds the resize permission.
    if (blk_ && (ci->perm & ~blk_->perm())) {
        Error err;
        int ret = blk_->set_perm(blk_->perm() | ci->perm, blk_->shared_perm(), err);
        if (ret < 0) {
            error_report("%s", err.pretty().c_str());
            return ret;
        }
    }
    std::vector<char*> argv;
    for (std::string& w : words) {
        argv.push_back(w.data());
    }
    argv.push_back(nullptr);
    optind = 0;  // glibc: restart getopt() from scratch for this argv
    return ci->func(*this, int(words.size()), argv.data());
}

}  // namespace qemu
