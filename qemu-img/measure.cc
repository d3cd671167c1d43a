// qemu-img measure: how large an image of a format would be, for a size or
// for the data of an existing image, with QEMU 7.2's command line, numbers
// (the format drivers' co_measure) and output.
#include <cstdio>
#include <cstring>
#include <string>

#include "commands.h"
#include "create-options.h"
#include "qemu/qemu-opts.h"
#include "qemu/qjson.h"
#include "tool.h"

namespace qemu::img {

namespace {

// The create options of `format` plus those of the file protocol, as QEMU
// parses measure's -o list (whatever the source's protocol).
std::optional<OptionSchema> measure_schema(const std::string& format, Error& err)
{
    auto schema = create_schema(format, nullptr, err);
    if (!schema) {
        return std::nullopt;
    }
    const BlockDriver* file = bdrv_find_driver("file");
    if (file && file->create_schema()) {
        schema->append(*file->create_schema());
    }
    return schema;
}

void print_measure(const BlockMeasureInfo& info, bool json)
{
    if (!json) {
        printf("required size: %llu\n", (unsigned long long)info.required);
        printf("fully allocated size: %llu\n", (unsigned long long)info.fully_allocated);
        if (info.bitmaps) {
            printf("bitmaps size: %llu\n", (unsigned long long)*info.bitmaps);
        }
        return;
    }
    // In the order of QEMU's BlockMeasureInfo (see qemu/qjson.h).
    nlohmann::ordered_json obj = nlohmann::ordered_json::object();
    obj["required"] = int64_t(info.required);
    obj["fully-allocated"] = int64_t(info.fully_allocated);
    if (info.bitmaps) {
        obj["bitmaps"] = int64_t(*info.bitmaps);
    }
    printf("%s\n", to_qemu_json(obj, true).c_str());
}

}  // namespace

int img_measure(int argc, char** argv)
{
    enum { kImageOpts = 256, kObject, kOutput, kSize };
    static const option long_options[] = {
        {"help", no_argument, nullptr, 'h'},
        {"image-opts", no_argument, nullptr, kImageOpts},
        {"object", required_argument, nullptr, kObject},
        {"output", required_argument, nullptr, kOutput},
        {"size", required_argument, nullptr, kSize},
        {"force-share", no_argument, nullptr, 'U'},
        {nullptr, 0, nullptr, 0},
    };
    ImageSpec spec;
    std::string out_fmt = "raw";
    std::optional<std::string> options;
    bool snapshot = false;
    bool json = false;
    std::optional<uint64_t> img_size;
    int c;
    // As in QEMU, getopt reports bad options itself, then the help follows.
    while ((c = getopt_long(argc, argv, "hf:O:o:l:U", long_options, nullptr)) != -1) {
        switch (c) {
        case '?':
        case 'h':
            help();
        case 'f':
            spec.format = optarg;
            break;
        case 'O':
            out_fmt = optarg;
            break;
        case 'o':
            if (!is_valid_option_list(optarg)) {
                error_report("Invalid option list: %s", optarg);
                return 1;
            }
            options = options ? *options + "," + optarg : std::string(optarg);
            break;
        case 'l':
            snapshot = true;
            break;
        case 'U':
            spec.force_share = true;
            break;
        case kObject:
            error_report("--object is not supported");
            return 1;
        case kImageOpts:
            spec.image_opts = true;
            break;
        case kOutput:
            if (strcmp(optarg, "json") == 0) {
                json = true;
            } else if (strcmp(optarg, "human") == 0) {
                json = false;
            } else {
                error_report("--output must be used with human or json as argument.");
                return 1;
            }
            break;
        case kSize: {
            int64_t size = parse_size_argument("image size", optarg, 0, INT64_MAX);
            if (size < 0) {
                return 1;
            }
            img_size = uint64_t(size);
            break;
        }
        }
    }

    if (argc - optind > 1) {
        error_report("At most one filename argument is allowed.");
        return 1;
    }
    bool has_file = argc - optind == 1;
    if (has_file) {
        spec.filename = argv[optind];
    }
    if (!has_file && (spec.image_opts || !spec.format.empty() || snapshot)) {
        error_report("--image-opts, -f, and -l require a filename argument.");
        return 1;
    }
    if (has_file && img_size) {
        error_report("--size N cannot be used together with a filename.");
        return 1;
    }
    if (!has_file && !img_size) {
        error_report("Either --size N or one filename must be specified.");
        return 1;
    }

    AioContext ctx;
    std::unique_ptr<BlockBackend> in;
    if (has_file) {
        in = open_image(spec, 0, ctx);
        if (!in) {
            return 1;
        }
        if (snapshot) {
            error_report("Failed to load snapshot: measuring an internal snapshot is not "
                         "supported");
            return 1;
        }
    }

    Error err;
    auto schema = measure_schema(out_fmt, err);
    if (!schema) {
        report_error(err);
        return 1;
    }
    CreateOptions opts(*schema);
    if (options && !opts.parse(*options, err)) {
        report_error(err);
        error_report("Invalid options for file format '%s'", out_fmt.c_str());
        return 1;
    }
    if (img_size) {
        opts.set_size(*img_size);
    }

    const BlockDriver& drv = *bdrv_find_driver(out_fmt);
    QDict dict = opts.to_qdict();
    BlockMeasureInfo info;
    int ret = run_sync(ctx, drv.co_measure(dict, in ? in->bs() : nullptr, info, err));
    if (ret < 0) {
        if (!err) {
            err.set("Block driver '%s' does not support size measurement", out_fmt.c_str());
        }
        report_error(err);
        return 1;
    }
    print_measure(info, json);
    return 0;
}

}  // namespace qemu::img
