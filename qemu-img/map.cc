// qemu-img map: which ranges of an image hold data, which read as zeroes,
// and where in which file the data lives, in QEMU 7.2's human and JSON
// formats.
//
// The image is walked with block status queries; neighbouring ranges with
// the same status (and, for mapped ranges, contiguous host offsets in the
// same file) are merged into one entry before it is printed, so the output
// does not depend on how the driver splits its answers.
#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>

#include "commands.h"
#include "tool.h"

namespace qemu::img {

namespace {

// QEMU's MapEntry.
struct MapEntry {
    uint64_t start = 0;
    uint64_t length = 0;
    bool data = false;
    bool zero = false;
    bool present = false;  // allocated in some layer (BDRV_BLOCK_ALLOCATED)
    int depth = 0;         // backing links down to the layer that answers
    std::optional<uint64_t> offset;
    std::optional<std::string> filename;  // the file holding the data

    // Can `next`, which starts where this entry ends, extend it?
    bool mergeable_with(const MapEntry& next) const
    {
        if (length == 0) {
            return false;
        }
        if (zero != next.zero || data != next.data || depth != next.depth ||
            present != next.present || filename.has_value() != next.filename.has_value() ||
            offset.has_value() != next.offset.has_value()) {
            return false;
        }
        if (filename && *filename != *next.filename) {
            return false;
        }
        return !offset || *offset + length == *next.offset;
    }
};

enum class OutputFormat { Human, Json };

// QEMU's get_block_status(): asks each layer of the backing chain in turn,
// from the top, until one says data or zeroes (or the chain ends).
int query_entry(BlockDriverState& top, uint64_t offset, uint64_t bytes, MapEntry& e)
{
    BlockDriverState* bs = &top;
    BlockStatus st;
    int depth = 0;
    for (;;) {
        int ret = run_sync(bs->ctx(), bdrv_co_block_status_layer(bs, offset, bytes, st));
        if (ret < 0) {
            return ret;
        }
        if ((st.flags & (BDRV_BLOCK_DATA | BDRV_BLOCK_ZERO)) || !bs->backing()) {
            break;
        }
        bs = bs->backing()->bs.get();
        bytes = st.pnum;
        depth++;
    }
    e = MapEntry{};
    e.depth = depth;
    e.start = offset;
    e.length = st.pnum;
    e.data = st.flags & BDRV_BLOCK_DATA;
    e.zero = st.flags & BDRV_BLOCK_ZERO;
    e.present = st.flags & BDRV_BLOCK_ALLOCATED;
    if (st.flags & BDRV_BLOCK_OFFSET_VALID) {
        e.offset = st.map;
        if (st.file) {
            e.filename = st.file->filename();
        }
    }
    return 0;
}

// Prints `e`; `next` is the entry that will follow (nullptr for the last).
// Returns false after reporting an entry the human format cannot express.
bool dump_entry(OutputFormat format, const MapEntry& e, MapEntry* next)
{
    switch (format) {
    case OutputFormat::Human:
        if (e.data && !e.offset) {
            error_report("File contains external, encrypted or compressed clusters.");
            return false;
        }
        if (e.data && !e.zero) {
            printf("%#-16" PRIx64 "%#-16" PRIx64 "%#-16" PRIx64 "%s\n", e.start, e.length,
                   e.offset.value_or(0), e.filename ? e.filename->c_str() : "");
        }
        // The table shows data only: zero ranges, whether allocated or not,
        // are all gaps, so let them merge into one.
        if (next && (!next->data || next->zero)) {
            next->data = false;
            next->zero = true;
        }
        break;
    case OutputFormat::Json:
        printf("{ \"start\": %" PRIu64 ", \"length\": %" PRIu64 ", \"depth\": %d,"
               " \"present\": %s, \"zero\": %s, \"data\": %s",
               e.start, e.length, e.depth, e.present ? "true" : "false",
               e.zero ? "true" : "false", e.data ? "true" : "false");
        if (e.offset) {
            printf(", \"offset\": %" PRIu64, *e.offset);
        }
        putchar('}');
        if (next) {
            puts(",");
        }
        break;
    }
    return true;
}

}  // namespace

int img_map(int argc, char** argv)
{
    enum { kOutput = 256, kObject, kImageOpts };
    static const option long_options[] = {
        {"help", no_argument, nullptr, 'h'},
        {"format", required_argument, nullptr, 'f'},
        {"output", required_argument, nullptr, kOutput},
        {"object", required_argument, nullptr, kObject},
        {"image-opts", no_argument, nullptr, kImageOpts},
        {"force-share", no_argument, nullptr, 'U'},
        {"start-offset", required_argument, nullptr, 's'},
        {"max-length", required_argument, nullptr, 'l'},
        {nullptr, 0, nullptr, 0},
    };
    ImageSpec spec;
    const char* output = nullptr;
    int64_t start_offset = 0;
    int64_t max_length = -1;
    int c;
    while ((c = get_option(argc, argv, ":f:s:l:hU", long_options)) != -1) {
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
        case 's':
            start_offset = parse_size_argument("start offset", optarg, 0, INT64_MAX);
            if (start_offset < 0) {
                return 1;
            }
            break;
        case 'l':
            max_length = parse_size_argument("max length", optarg, 0, INT64_MAX);
            if (max_length < 0) {
                return 1;
            }
            break;
        case kObject:
            error_report("--object is not supported");
            return 1;
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
    if (output && strcmp(output, "json") == 0) {
        format = OutputFormat::Json;
    } else if (output && strcmp(output, "human") != 0) {
        error_report("--output must be used with human or json as argument.");
        return 1;
    }

    AioContext ctx;
    auto blk = open_image(spec, 0, ctx);
    if (!blk) {
        return 1;
    }
    BlockDriverState& bs = *blk->bs();

    if (format == OutputFormat::Human) {
        printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
    } else {
        putchar('[');
    }

    uint64_t length = blk->getlength();
    if (max_length != -1) {
        // Both are below 2^63, so the sum cannot wrap.
        length = std::min(uint64_t(start_offset) + uint64_t(max_length), length);
    }

    MapEntry curr;
    curr.start = uint64_t(start_offset);
    while (curr.start + curr.length < length) {
        uint64_t offset = curr.start + curr.length;
        MapEntry next;
        int ret = query_entry(bs, offset, length - offset, next);
        if (ret < 0) {
            error_report("Could not read file metadata: %s", result_strerror(ret));
            return 1;
        }
        if (curr.mergeable_with(next)) {
            curr.length += next.length;
            continue;
        }
        if (curr.length > 0 && !dump_entry(format, curr, &next)) {
            return 1;
        }
        curr = next;
    }
    if (!dump_entry(format, curr, nullptr)) {
        return 1;
    }
    if (format == OutputFormat::Json) {
        puts("]");
    }
    return 0;
}

}  // namespace qemu::img
