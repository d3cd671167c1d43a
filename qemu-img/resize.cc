// qemu-img resize: grows or shrinks an image's virtual size, with QEMU
// 7.2's checks and messages.  The size is absolute, or relative with a
// leading '+' or '-'; shrinking needs --shrink, and preallocation only
// applies to growing.  The driver resizes with exact=true: the image must
// end up with the requested size, not merely at least that large.
#include <cstdio>
#include <cstring>
#include <string>

#include "commands.h"
#include "tool.h"

namespace qemu::img {

int img_resize(int argc, char** argv)
{
    // The size goes first, so that getopt never sees a "-1G" as options.
    if (argc < 3) {
        error_exit("Not enough arguments");
    }
    const char* size_arg = argv[--argc];

    enum { kObject = 256, kImageOpts, kPreallocation, kShrink };
    static const option long_options[] = {
        {"help", no_argument, nullptr, 'h'},
        {"object", required_argument, nullptr, kObject},
        {"image-opts", no_argument, nullptr, kImageOpts},
        {"preallocation", required_argument, nullptr, kPreallocation},
        {"shrink", no_argument, nullptr, kShrink},
        {nullptr, 0, nullptr, 0},
    };
    ImageSpec spec;
    PreallocMode prealloc = PreallocMode::Off;
    bool quiet = false;
    bool shrink = false;
    int c;
    while ((c = get_option(argc, argv, ":f:hq", long_options)) != -1) {
        switch (c) {
        case 'f':
            spec.format = optarg;
            break;
        case 'q':
            quiet = true;
            break;
        case kObject:
            error_report("--object is not supported");
            return 1;
        case kImageOpts:
            spec.image_opts = true;
            break;
        case kPreallocation:
            if (!parse_prealloc_mode(optarg, prealloc)) {
                error_report("Invalid preallocation mode '%s'", optarg);
                return 1;
            }
            break;
        case kShrink:
            shrink = true;
            break;
        }
    }
    if (optind != argc - 1) {
        error_exit("Expecting image file name and size");
    }
    spec.filename = argv[optind];

    int relative = 0;
    if (size_arg[0] == '+') {
        relative = 1;
        size_arg++;
    } else if (size_arg[0] == '-') {
        relative = -1;
        size_arg++;
    }
    Error err;
    auto n = parse_size_option("size", size_arg, err);
    if (!n) {
        report_error(err);
        return 1;
    }

    AioContext ctx;
    auto blk = open_image(spec, BDRV_O_RDWR | BDRV_O_RESIZE, ctx);
    if (!blk) {
        return 1;
    }
    uint64_t current_size = blk->getlength();
    // QEMU computes in int64_t: sizes of 2^63 and more come out negative
    // and are refused as such.
    int64_t total_size = relative ? int64_t(current_size + uint64_t(relative) * *n)
                                  : int64_t(*n);
    if (total_size <= 0) {
        error_report("New image size must be positive");
        return 1;
    }
    if (uint64_t(total_size) <= current_size && prealloc != PreallocMode::Off) {
        error_report("Preallocation can only be used for growing images");
        return 1;
    }
    if (uint64_t(total_size) < current_size && !shrink) {
        error_report("Use the --shrink option to perform a shrink operation.");
        error_report("warning: Shrinking an image will delete all data beyond the shrunken "
                     "image's end. Before performing such an operation, make sure there is no "
                     "important data there.");
        return 1;
    }

    int ret = run_sync(ctx, blk->co_truncate(uint64_t(total_size), true, prealloc, 0, err));
    if (ret < 0) {
        report_error(err);
        return 1;
    }
    if (!quiet) {
        printf("Image resized.\n");
    }
    return 0;
}

}  // namespace qemu::img
