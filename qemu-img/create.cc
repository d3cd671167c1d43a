// qemu-img create: a new image of a given format and size.
#include <cerrno>
#include <cstdio>
#include <string>

#include "commands.h"
#include "create-options.h"
#include "qemu/qemu-opts.h"
#include "tool.h"

namespace qemu::img {

namespace {

constexpr uint64_t kNoSize = UINT64_MAX;  // QEMU's "-1": no size given

// -b, -F and -u.
struct BackingSpec {
    std::optional<std::string> file;
    std::optional<std::string> format;
    bool no_open = false;  // -u: the backing file need not exist yet
};

// Opens the backing file of a new image, as QEMU does for its size and to
// make sure it exists: read-only, with its own backing chain, sharing it
// with whoever uses it.  nullptr after setting err.
std::unique_ptr<BlockBackend> open_backing_image(const std::string& filename,
                                                 const std::string& backing_file,
                                                 const std::optional<std::string>& backing_fmt,
                                                 AioContext& ctx, Error& err)
{
    auto full = bdrv_full_backing_filename(filename, backing_file, err);
    if (!full) {
        return nullptr;
    }
    QDict options;
    if (backing_fmt) {
        options.set("driver", *backing_fmt);
    }
    options.set("force-share", "on");
    auto blk = BlockBackend::open(*full, std::move(options), 0, ctx, err);
    if (!blk) {
        err.add_hint("Could not open backing image.");
    }
    return blk;
}

// QEMU's bdrv_img_create(): checks the options, announces the image and has
// the driver create it.  On failure nothing new is left on disk.
bool create_image(const std::string& filename, const std::string& fmt,
                  const std::optional<std::string>& options, const BackingSpec& backing,
                  uint64_t img_size, bool quiet, Error& err)
{
    auto schema = create_schema(fmt, filename.c_str(), err);
    if (!schema) {
        return false;
    }
    CreateOptions opts(*schema);
    if (options && !opts.parse(*options, err)) {
        return false;
    }
    if (!opts.has("size")) {
        opts.set_size(img_size);
    } else if (img_size != kNoSize) {
        err.set("The image size must be specified only once");
        return false;
    }
    // -b and -F override -o backing_file and backing_fmt (string options:
    // setting them cannot fail).
    if (backing.file) {
        if (!opts.supports("backing_file")) {
            err.set("Backing file not supported for file format '%s'", fmt.c_str());
            return false;
        }
        opts.set("backing_file", *backing.file, err);
    }
    if (backing.format) {
        if (!opts.supports("backing_fmt")) {
            err.set("Backing file format not supported for file format '%s'", fmt.c_str());
            return false;
        }
        opts.set("backing_fmt", *backing.format, err);
    }
    QDict given = opts.to_qdict();
    std::optional<std::string> backing_file = given.take("backing_file");
    std::optional<std::string> backing_fmt = given.take("backing_fmt");
    if (backing_file && *backing_file == filename) {
        err.set("Error: Trying to create an image with the same filename as the backing file");
        return false;
    }
    if (backing_file && backing_file->empty()) {
        err.set("Expected backing file name, got empty string");
        return false;
    }
    // QEMU 7.2 insists on the backing format: probing it is unsafe.  The
    // backing file is opened unless -u says it may not exist yet; then it
    // also gives the size when none was given.
    AioContext ctx;
    if (backing_file && !backing.no_open) {
        auto blk = open_backing_image(filename, *backing_file, backing_fmt, ctx, err);
        if (!blk) {
            return false;
        }
        if (!backing_fmt) {
            err.set("Backing file specified without backing format");
            err.add_hint(string_printf("Detected format of %.*s.",
                                       int(blk->bs()->drv().name().size()),
                                       blk->bs()->drv().name().data()));
            return false;
        }
        if (*opts.size() == kNoSize) {
            opts.set_size(blk->getlength());
        }
    } else if (backing_file && !backing_fmt) {
        err.set("Backing file specified without backing format");
        return false;
    }
    if (*opts.size() == kNoSize) {
        err.set("Image creation needs a size parameter");
        return false;
    }
    if (!quiet) {
        printf("Formatting '%s', fmt=%s %s\n", filename.c_str(), fmt.c_str(),
               opts.to_string().c_str());
        fflush(stdout);
    }

    QDict dict = opts.to_qdict();
    int ret = run_sync(ctx, bdrv_co_create(*bdrv_find_driver(fmt), filename, dict, ctx, err));
    if (ret == -EFBIG) {
        // Better than the driver's "File too large", and a hint for formats
        // whose metadata limits the size.
        err.set("The image size is too large for file format '%s'%s", fmt.c_str(),
                opts.size_or_default("cluster_size") ? " (try using a larger cluster size)" : "");
    }
    return ret >= 0;
}

}  // namespace

int img_create(int argc, char** argv)
{
    static const option long_options[] = {
        {"help", no_argument, nullptr, 'h'},
        {nullptr, 0, nullptr, 0},
    };
    std::string fmt = "raw";
    std::optional<std::string> options;
    BackingSpec backing;
    bool quiet = false;
    int c;
    while ((c = get_option(argc, argv, ":F:b:f:ho:qu", long_options)) != -1) {
        switch (c) {
        case 'F':
            backing.format = optarg;
            break;
        case 'b':
            backing.file = optarg;
            break;
        case 'f':
            fmt = optarg;
            break;
        case 'u':
            backing.no_open = true;
            break;
        case 'o':
            if (!is_valid_option_list(optarg)) {
                error_report("Invalid option list: %s", optarg);
                return 1;
            }
            options = options ? *options + "," + optarg : std::string(optarg);
            break;
        case 'q':
            quiet = true;
            break;
        }
    }

    const char* filename = optind < argc ? argv[optind] : nullptr;
    if (options && has_help_option(*options)) {
        Error err;
        if (!print_create_help(filename, fmt, err)) {
            report_error(err);
            return 1;
        }
        return 0;
    }
    if (!filename) {
        error_exit("Expecting image file name");
    }
    optind++;

    uint64_t img_size = kNoSize;
    if (optind < argc) {
        int64_t size = parse_size_argument("image size", argv[optind++], 0, INT64_MAX);
        if (size < 0) {
            return 1;
        }
        img_size = uint64_t(size);
    }
    if (optind != argc) {
        error_exit("Unexpected argument: %s", argv[optind]);
    }

    Error err;
    if (!create_image(filename, fmt, options, backing, img_size, quiet, err)) {
        report_error(err, std::string(filename) + ": ");
        return 1;
    }
    return 0;
}

}  // namespace qemu::img
