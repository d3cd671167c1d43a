// qemu-img check: consistency check of an image and, with -r, its repair;
// output, JSON layout and exit status as in QEMU:
//   0  no errors           2  corruptions found (or left after repair)
//   1  the check failed    3  only leaked clusters found
//  63  the format has no check
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "commands.h"
#include "qemu/qjson.h"
#include "tool.h"

namespace qemu::img {

namespace {

// QEMU's ImageCheck: the result of one check run.
struct ImageCheck {
    std::string filename;
    std::string format;
    BdrvCheckResult result;
};

int collect_image_check(BlockDriverState& bs, const std::string& filename, unsigned fix,
                        ImageCheck& check)
{
    BdrvCheckResult result;
    int ret = run_sync(bs.ctx(), bs.drv_check(result, fix));
    if (ret < 0) {
        return ret;
    }
    check.filename = filename;
    check.format = std::string(bs.drv().name());
    check.result = result;
    return 0;
}

void dump_human(const BdrvCheckResult& r, bool quiet)
{
    if (quiet) {
        return;
    }
    if (!r.corruptions && !r.leaks && !r.check_errors) {
        printf("No errors were found on the image.\n");
    } else {
        if (r.corruptions) {
            printf("\n%d errors were found on the image.\n"
                   "Data may be corrupted, or further writes to the image may corrupt it.\n",
                   r.corruptions);
        }
        if (r.leaks) {
            printf("\n%d leaked clusters were found on the image.\n"
                   "This means waste of disk space, but no harm to data.\n",
                   r.leaks);
        }
        if (r.check_errors) {
            printf("\n%d internal errors have occurred during the check.\n", r.check_errors);
        }
    }
    if (r.total_clusters != 0 && r.allocated_clusters != 0) {
        printf("%llu/%llu = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed clusters\n",
               (unsigned long long)r.allocated_clusters, (unsigned long long)r.total_clusters,
               double(r.allocated_clusters) * 100.0 / double(r.total_clusters),
               double(r.fragmented_clusters) * 100.0 / double(r.allocated_clusters),
               double(r.compressed_clusters) * 100.0 / double(r.allocated_clusters));
    }
    if (r.image_end_offset) {
        printf("Image end offset: %llu\n", (unsigned long long)r.image_end_offset);
    }
}

// The members in the order of QEMU's QAPI ImageCheck (see qemu/qjson.h); the
// optional ones are present when non-zero.
void dump_json(const ImageCheck& check, bool quiet)
{
    const BdrvCheckResult& r = check.result;
    nlohmann::ordered_json obj = nlohmann::ordered_json::object();
    obj["filename"] = check.filename;
    obj["format"] = check.format;
    obj["check-errors"] = r.check_errors;
    auto optional = [&obj](const char* key, uint64_t value) {
        if (value != 0) {
            obj[key] = value;
        }
    };
    optional("image-end-offset", r.image_end_offset);
    optional("corruptions", uint64_t(r.corruptions));
    optional("leaks", uint64_t(r.leaks));
    optional("corruptions-fixed", uint64_t(r.corruptions_fixed));
    optional("leaks-fixed", uint64_t(r.leaks_fixed));
    optional("total-clusters", r.total_clusters);
    optional("allocated-clusters", r.allocated_clusters);
    optional("fragmented-clusters", r.fragmented_clusters);
    optional("compressed-clusters", r.compressed_clusters);
    if (!quiet) {
        printf("%s\n", to_qemu_json(obj, true).c_str());
    }
}

}  // namespace

int img_check(int argc, char** argv)
{
    enum { kOutput = 256, kImageOpts };
    static const option long_options[] = {
        {"help", no_argument, nullptr, 'h'},
        {"format", required_argument, nullptr, 'f'},
        {"repair", required_argument, nullptr, 'r'},
        {"output", required_argument, nullptr, kOutput},
        {"image-opts", no_argument, nullptr, kImageOpts},
        {"force-share", no_argument, nullptr, 'U'},
        {nullptr, 0, nullptr, 0},
    };
    ImageSpec spec;
    const char* output = nullptr;
    const char* cache = "writeback";
    unsigned fix = 0;
    int flags = BDRV_O_CHECK;
    bool quiet = false;
    int c;
    while ((c = get_option(argc, argv, ":hf:r:T:qU", long_options)) != -1) {
        switch (c) {
        case 'f':
            spec.format = optarg;
            break;
        case 'r':
            flags |= BDRV_O_RDWR;
            if (strcmp(optarg, "leaks") == 0) {
                fix = BDRV_FIX_LEAKS;
            } else if (strcmp(optarg, "all") == 0) {
                fix = BDRV_FIX_LEAKS | BDRV_FIX_ERRORS;
            } else {
                error_exit("Unknown option value for -r (expecting 'leaks' or 'all'): %s", optarg);
            }
            break;
        case kOutput:
            output = optarg;
            break;
        case 'T':
            cache = optarg;
            break;
        case 'q':
            quiet = true;
            break;
        case 'U':
            spec.force_share = true;
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

    bool json = false;
    if (output && strcmp(output, "json") == 0) {
        json = true;
    } else if (output && strcmp(output, "human") != 0) {
        error_report("--output must be used with human or json as argument.");
        return 1;
    }
    // Repairs are written through and flushed by the check itself, so
    // writethrough mode changes nothing here; only the cache flags count.
    bool writethrough;
    if (!bdrv_parse_cache_mode(cache, flags, writethrough)) {
        error_report("Invalid source cache option: %s", cache);
        return 1;
    }

    AioContext ctx;
    auto blk = open_image(spec, flags, ctx);
    if (!blk) {
        return 1;
    }
    BlockDriverState& bs = *blk->bs();
    ImageCheck check;
    int ret = collect_image_check(bs, spec.filename, fix, check);
    if (ret == -ENOTSUP) {
        error_report("This image format does not support checks");
        return 63;
    }

    if (ret == 0 && (check.result.corruptions_fixed || check.result.leaks_fixed)) {
        // Report what the repair did, then what a fresh check finds.
        int leaks_fixed = check.result.leaks_fixed;
        int corruptions_fixed = check.result.corruptions_fixed;
        if (!json && !quiet) {
            printf("The following inconsistencies were found and repaired:\n\n"
                   "    %d leaked clusters\n"
                   "    %d corruptions\n\n"
                   "Double checking the fixed image now...\n",
                   leaks_fixed, corruptions_fixed);
        }
        check = ImageCheck{};
        ret = collect_image_check(bs, spec.filename, 0, check);
        check.result.leaks_fixed = leaks_fixed;
        check.result.corruptions_fixed = corruptions_fixed;
    }

    if (ret == 0) {
        if (json) {
            dump_json(check, quiet);
        } else {
            dump_human(check.result, quiet);
        }
    }
    if (ret < 0 || check.result.check_errors) {
        if (ret < 0) {
            error_report("Check failed: %s", result_strerror(ret));
        } else {
            error_report("Check failed");
        }
        return 1;
    }
    if (check.result.corruptions) {
        return 2;
    }
    return check.result.leaks ? 3 : 0;
}

}  // namespace qemu::img
