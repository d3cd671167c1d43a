// What every qemu-img command shares: QEMU-style messages, command line
// parsing with QEMU's error texts, and opening images the way qemu-img does.
//
// Messages go to stderr as "PROG: MESSAGE", PROG being the basename of
// argv[0] like QEMU's error_report(); stdout stays fully buffered when it is
// not a terminal, so the interleaving of the two matches QEMU's.
#pragma once

#include <getopt.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "block/block-backend.h"
#include "qemu/error.h"

namespace qemu::img {

// Messages go through qemu/error.h (error_report, report_error), with the
// program name set by main().
// A usage error: the message, "Try 'qemu-img --help' ...", exit status 1.
[[noreturn]] void error_exit(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// The full help text, exit status 0 (main.cc).
[[noreturn]] void help();

// getopt_long() for a command: `shortopts` must start with ':' so that
// missing arguments and unknown options end here with QEMU's messages, and
// 'h' shows the help.  Returns the next option or -1 at the end.
int get_option(int argc, char** argv, const char* shortopts, const option* longopts);

// qemu-img's cvtnum(): a size argument (qemu_strtosz) within [min, max], or
// -1 after printing why not, naming the argument ("image size").
int64_t parse_size_argument(const char* name, const char* value, int64_t min, int64_t max);

// strtoul() of a whole argument, as QEMU's qemu_strtoul(): nullopt if it is
// not a number or exceeds `max`.
std::optional<uint64_t> parse_ulong_argument(const char* value, uint64_t max);

// bdrv_parse_cache_mode() for the -t/-T options of the commands that write
// images; reports QEMU's "Invalid cache option: MODE" when it fails.
bool parse_cache_option(const std::string& mode, int& flags, bool& writethrough);

// How the user names the image to open.
struct ImageSpec {
    std::string filename;  // a file name, or the option string with image_opts
    std::string format;    // -f, empty to probe
    bool image_opts = false;
    bool force_share = false;
    // "-i"/"-n": the AIO mode of the protocol node, empty for its default.
    std::string aio;
};

// Opens the image like qemu-img's img_open(): errors are reported as
// "Could not open 'NAME': ..." (or open_error_prefix followed by the
// block layer's message: qemu-nbd's "Failed to blk_new_open 'NAME': ") and
// yield nullptr.
std::unique_ptr<BlockBackend> open_image(const ImageSpec& spec, int flags, AioContext& ctx,
                                         const std::string* open_error_prefix = nullptr);

}  // namespace qemu::img
