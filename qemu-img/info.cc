// qemu-img info: what an image is, in QEMU's human and JSON formats.
#include <algorithm>
#include <cstdio>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "block/qapi.h"
#include "block/snapshot.h"
#include "commands.h"
#include "qemu/qjson.h"
#include "qemu/cutils.h"
#include "tool.h"

namespace qemu::img {

namespace {

void dump_human(const ImageInfo& info)
{
    printf("image: %s\n"
           "file format: %s\n"
           "virtual size: %s (%llu bytes)\n"
           "disk size: %s\n",
           info.filename.c_str(), info.format.c_str(), size_to_str(info.virtual_size).c_str(),
           (unsigned long long)info.virtual_size,
           info.actual_size ? size_to_str(uint64_t(*info.actual_size)).c_str() : "unavailable");
    if (info.cluster_size) {
        printf("cluster_size: %llu\n", (unsigned long long)*info.cluster_size);
    }
    if (info.dirty_flag.value_or(false)) {
        printf("cleanly shut down: no\n");
    }
    if (info.backing_filename) {
        printf("backing file: %s", info.backing_filename->c_str());
        if (!info.full_backing_filename) {
            printf(" (cannot determine actual path)");
        } else if (*info.full_backing_filename != *info.backing_filename) {
            printf(" (actual path: %s)", info.full_backing_filename->c_str());
        }
        printf("\n");
        if (info.backing_format) {
            printf("backing file format: %s\n", info.backing_format->c_str());
        }
    }
    dump_snapshots(info.snapshots);
    if (info.format_specific.is_object()) {
        printf("Format specific information:\n");
        bdrv_image_info_specific_dump(info.format_specific.at("data"), 1);
    }
}

enum class OutputFormat { Human, Json };

}  // namespace

int img_info(int argc, char** argv)
{
    enum { kOutput = 256, kBackingChain, kImageOpts };
    static const option long_options[] = {
        {"help", no_argument, nullptr, 'h'},
        {"format", required_argument, nullptr, 'f'},
        {"output", required_argument, nullptr, kOutput},
        {"backing-chain", no_argument, nullptr, kBackingChain},
        {"image-opts", no_argument, nullptr, kImageOpts},
        {"force-share", no_argument, nullptr, 'U'},
        {nullptr, 0, nullptr, 0},
    };
    ImageSpec spec;
    const char* output = nullptr;
    bool chain = false;
    int c;
    while ((c = get_option(argc, argv, ":f:hU", long_options)) != -1) {
        switch (c) {
        case 'f':
            spec.format = optarg;
            break;
        case 'U':
            spec.force_share = true;
            break;
        case kOutput:
            output = optarg;
            break;
        case kBackingChain:
            chain = true;
            break;
        case kImageOpts:
            spec.image_opts = true;
            break;
        }
    }
    if (optind != argc - 1) {
        error_exit("Expecting one image file name");
    }
    spec.filename = argv[optind];

    OutputFormat format = OutputFormat::Human;
    if (output && std::string(output) == "json") {
        format = OutputFormat::Json;
    } else if (output && std::string(output) != "human") {
        error_report("--output must be used with human or json as argument.");
        return 1;
    }

    // The images of the backing chain, top first (QEMU's
    // collect_image_info_list()): each is opened on its own, without its
    // backing file, and named by the full name of the one above.
    std::vector<ImageInfo> images;
    std::set<std::string> seen;
    std::optional<ImageSpec> next = spec;
    while (next) {
        if (!seen.insert(next->filename).second) {
            error_report("Backing file '%s' creates an infinite loop.", next->filename.c_str());
            return 1;
        }
        AioContext ctx;
        // As QEMU (since CVE-2024-4467): no guest data is read, so formats
        // open no other files (a qcow2 image's external data file).
        auto blk = open_image(*next, BDRV_O_NO_IO | BDRV_O_NO_BACKING, ctx);
        if (!blk) {
            return 1;
        }
        images.push_back(bdrv_query_image_info(*blk->bs()));
        next.reset();
        const ImageInfo& info = images.back();
        if (chain && info.full_backing_filename) {
            next = ImageSpec{};
            next->filename = *info.full_backing_filename;
            next->format = info.backing_format.value_or("");
            next->force_share = spec.force_share;
        } else if (chain && info.backing_filename) {
            error_report("Could not determine absolute backing filename, but backing filename "
                         "'%s' present", info.backing_filename->c_str());
            return 1;
        }
    }

    if (format == OutputFormat::Human) {
        for (size_t i = 0; i < images.size(); i++) {
            if (i > 0) {
                printf("\n");
            }
            dump_human(images[i]);
        }
    } else if (chain) {
        nlohmann::ordered_json list = nlohmann::ordered_json::array();
        for (const ImageInfo& info : images) {
            list.push_back(image_info_to_json(info));
        }
        printf("%s\n", to_qemu_json(list, true).c_str());
    } else {
        printf("%s\n", to_qemu_json(image_info_to_json(images.front()), true).c_str());
    }
    return 0;
}

}  // namespace qemu::img
