// Opening images as qemu-img's img_open() does, apart from the rest of
// tool.cc so that other programs (qemu-nbd) link it without qemu-img's
// command table.
#include <cstdio>

#include "qemu/qemu-opts.h"
#include "tool.h"

namespace qemu::img {

namespace {

// --image-opts: the option string, with "file" implied for a leading bare
// name.  Flags are accepted with QEMU's deprecation warning.
QDict parse_image_opts(const std::string& text)
{
    QDict options;
    for (const OptsPair& pair : split_qemu_opts(text, "file")) {
        if (pair.is_flag && pair.name != "help" && pair.name != "?") {
            bool off = pair.value == "off";
            fprintf(stderr, "%s: warning: short-form boolean option '%s%s' deprecated\n",
                    program_name(), off ? "no" : "", pair.name.c_str());
            fprintf(stderr, "Please use %s=%s instead\n", pair.name.c_str(), pair.value.c_str());
        }
        options.set(pair.name, pair.value);
    }
    return options;
}

bool is_posix_protocol(const std::string& driver)
{
    return driver == "file" || driver == "host_device";
}

// QEMU passes the AIO mode down the graph as an open flag that the file
// driver reads; here it becomes the "aio" option of the protocol node: the
// top node when it is one, else its file child when that is (or will be
// probed as) a POSIX file.  Other protocols have no AIO modes and, as in
// QEMU, ignore the request.
void apply_aio_mode(QDict& options, const std::string& filename, const std::string& aio)
{
    const std::string* driver = options.get("driver");
    if (driver) {
        const BlockDriver* drv = bdrv_find_driver(*driver);
        if (drv && drv->is_protocol()) {
            if (is_posix_protocol(*driver)) {
                options.set_default("aio", aio);
            }
            return;
        }
    } else if (filename.find(':') < filename.find('/')) {
        return;  // a "prefix:" file name selects the protocol node itself
    }
    const std::string* file_driver = options.get("file.driver");
    if (!file_driver || is_posix_protocol(*file_driver)) {
        options.set_default("file.aio", aio);
    }
}

}  // namespace

std::unique_ptr<BlockBackend> open_image(const ImageSpec& spec, int flags, AioContext& ctx,
                                         const std::string* open_error_prefix)
{
    QDict options;
    std::optional<std::string> filename;  // none with --image-opts
    if (spec.image_opts) {
        if (!spec.format.empty()) {
            error_report("--image-opts and --format are mutually exclusive");
            return nullptr;
        }
        options = parse_image_opts(spec.filename);
        if (spec.force_share) {
            const std::string* fs = options.get("force-share");
            if (fs && *fs != "on") {
                error_report("--force-share/-U conflicts with image options");
                return nullptr;
            }
            options.set("force-share", "on");
        }
    } else {
        filename = spec.filename;
        if (!spec.format.empty()) {
            options.set("driver", spec.format);
        }
        if (spec.force_share) {
            options.set("force-share", "on");
        }
    }
    if (!spec.aio.empty()) {
        apply_aio_mode(options, filename.value_or(""), spec.aio);
    }
    Error err;
    auto blk = BlockBackend::open(filename, std::move(options), flags, ctx, err);
    if (!blk) {
        report_error(err, open_error_prefix ? *open_error_prefix
                                            : "Could not open '" + spec.filename + "': ");
    }
    return blk;
}

}  // namespace qemu::img
