// qemu-img amend: changes format options of an existing image in place
// (for qcow2: compat, lazy_refcounts, refcount_bits, size, data_file,
// data_file_raw), with QEMU 7.2's command line, checks and messages.  The
// driver does the work (BlockDriverState::drv_amend); options that only
// make sense at creation are refused with QEMU's hint.
#include <cstdio>
#include <string>

#include "commands.h"
#include "create-options.h"
#include "progress.h"
#include "qemu/qemu-opts.h"
#include "tool.h"

namespace qemu::img {

namespace {

// "-o help": the amend options of a format, or why there are none.
int print_amend_help(const std::string& format)
{
    const BlockDriver* drv = bdrv_find_driver(format);
    if (!drv) {
        error_report("Unknown file format '%s'", format.c_str());
        return 1;
    }
    if (!drv->amend_schema()) {
        error_report("Format driver '%s' does not support option amendment", format.c_str());
        return 1;
    }
    printf("Amend options for '%s':\n", format.c_str());
    print_option_help(*drv->amend_schema());
    return 0;
}

// Parses the -o list against the amend options; an option only the
// create options know gets QEMU's hint.
bool parse_amend_options(const BlockDriver& drv, const std::string& text, QDict& out, Error& err)
{
    CreateOptions opts(*drv.amend_schema());
    if (!opts.parse(text, err)) {
        OptionSchema both = *drv.amend_schema();
        if (drv.create_schema()) {
            both.append(*drv.create_schema());
        }
        CreateOptions with_create(both);
        Error ignored;
        if (with_create.parse(text, ignored)) {
            err.add_hint("This option is only supported for image creation");
        }
        return false;
    }
    out = opts.to_qdict();
    return true;
}

// The body of the command once the arguments are read; `progress` is
// ended by the caller whatever happens (QEMU prints the final newline of
// -p even for -o help).
int amend(ImageSpec& spec, const std::string& options, const std::string& cache,
          ProgressMeter& progress, bool force)
{
    int flags = BDRV_O_RDWR;
    bool writethrough;
    if (!parse_cache_option(cache, flags, writethrough)) {
        return 1;
    }
    AioContext ctx;
    auto blk = open_image(spec, flags, ctx);
    if (!blk) {
        return 1;
    }
    BlockDriverState* bs = blk->bs();
    std::string format(bs->drv().name());
    if (has_help_option(options)) {
        return print_amend_help(format);
    }
    if (!bs->drv().amend_schema()) {
        error_report("Format driver '%s' does not support option amendment", format.c_str());
        return 1;
    }
    QDict opts;
    Error err;
    if (!parse_amend_options(bs->drv(), options, opts, err)) {
        report_error(err);
        return 1;
    }
    progress.update(0, 0);
    int ret = run_sync(ctx, bs->drv_amend(opts, [&progress](int64_t done, int64_t total) {
        progress.update(100.0f * float(done) / float(total), 0);
    }, force, err));
    progress.update(100, 0);
    if (ret < 0) {
        report_error(err);
        return 1;
    }
    return 0;
}

}  // namespace

int img_amend(int argc, char** argv)
{
    enum { kObject = 256, kImageOpts, kForce };
    static const option long_options[] = {
        {"help", no_argument, nullptr, 'h'},
        {"object", required_argument, nullptr, kObject},
        {"image-opts", no_argument, nullptr, kImageOpts},
        {"force", no_argument, nullptr, kForce},
        {nullptr, 0, nullptr, 0},
    };
    ImageSpec spec;
    std::optional<std::string> options;
    std::string cache = "writeback";
    bool quiet = false;
    bool show_progress = false;
    bool force = false;
    int c;
    while ((c = get_option(argc, argv, ":ho:f:t:pq", long_options)) != -1) {
        switch (c) {
        case 'o':
            if (!is_valid_option_list(optarg)) {
                error_report("Invalid option list: %s", optarg);
                return 1;
            }
            options = options ? *options + "," + optarg : std::string(optarg);
            break;
        case 'f':
            spec.format = optarg;
            break;
        case 't':
            cache = optarg;
            break;
        case 'p':
            show_progress = true;
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
        case kForce:
            force = true;
            break;
        }
    }
    if (!options) {
        error_exit("Must specify options (-o)");
    }
    ProgressMeter progress(show_progress && !quiet, 1.0f);
    int ret;
    if (!spec.format.empty() && has_help_option(*options)) {
        ret = print_amend_help(spec.format);
    } else if (optind != argc - 1) {
        error_report("Expecting one image file name");
        ret = 1;
    } else {
        spec.filename = argv[argc - 1];
        ret = amend(spec, *options, cache, progress, force);
    }
    progress.end();
    return ret;
}

}  // namespace qemu::img
