// qemu-img dd: copies an image, or a part of it given in blocks, into a new
// image, with QEMU 7.2's operands (bs=, count=, skip=, if=, of=), options
// and messages.  One deliberate difference: count= counts the blocks copied
// after the skip=, as dd(1) and QEMU's documentation say; QEMU 7.2 counts
// them from the start of the input (docs/qemu-img.rst).
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "commands.h"
#include "create-options.h"
#include "qemu/units.h"
#include "tool.h"

namespace qemu::img {

namespace {

struct DdOperands {
    int64_t block_size = 512;
    std::optional<int64_t> count;  // blocks
    std::optional<int64_t> skip;   // blocks
    std::optional<std::string> input;
    std::optional<std::string> output;
};

// One "name=value" operand; false after QEMU's message.
bool parse_operand(const char* arg, DdOperands& ops)
{
    const char* eq = strchr(arg, '=');
    if (!eq) {
        error_report("unrecognized operand %s", arg);
        return false;
    }
    std::string name(arg, eq - arg);
    const char* value = eq + 1;
    if (name == "bs") {
        int64_t bs = parse_size_argument("bs", value, 1, INT32_MAX);
        if (bs < 0) {
            return false;
        }
        ops.block_size = bs;
    } else if (name == "count" || name == "skip") {
        int64_t n = parse_size_argument(name.c_str(), value, 0, INT64_MAX);
        if (n < 0) {
            return false;
        }
        (name == "count" ? ops.count : ops.skip) = n;
    } else if (name == "if") {
        ops.input = value;
    } else if (name == "of") {
        ops.output = value;
    } else {
        error_report("unrecognized operand %s", name.c_str());
        return false;
    }
    return true;
}

// Bytes from `start` to `end` of the input, in chunks of whole blocks.
bool copy(BlockBackend& in, BlockBackend& out, AioContext& ctx, uint64_t start, uint64_t end,
          uint64_t block_size)
{
    // Many blocks at a time: the result is the same, the copy faster.
    const uint64_t chunk = std::max<uint64_t>(block_size, (1 * MiB) / block_size * block_size);
    std::vector<uint8_t> buf(std::min(chunk, std::max<uint64_t>(end - start, 1)));
    for (uint64_t pos = start; pos < end;) {
        uint64_t n = std::min<uint64_t>(buf.size(), end - pos);
        IOVector rq(buf.data(), n);
        int ret = run_sync(ctx, in.co_preadv(pos, n, rq));
        if (ret < 0) {
            error_report("error while reading from input image file: %s", result_strerror(ret));
            return false;
        }
        IOVector wq(buf.data(), n);
        ret = run_sync(ctx, out.co_pwritev(pos - start, n, wq));
        if (ret < 0) {
            error_report("error while writing to output image file: %s", result_strerror(ret));
            return false;
        }
        pos += n;
    }
    return true;
}

}  // namespace

int img_dd(int argc, char** argv)
{
    enum { kObject = 256, kImageOpts };
    static const option long_options[] = {
        {"help", no_argument, nullptr, 'h'},
        {"object", required_argument, nullptr, kObject},
        {"image-opts", no_argument, nullptr, kImageOpts},
        {"force-share", no_argument, nullptr, 'U'},
        {nullptr, 0, nullptr, 0},
    };
    ImageSpec in_spec;
    std::string out_fmt = "raw";
    int c;
    while ((c = get_option(argc, argv, ":hf:O:U", long_options)) != -1) {
        switch (c) {
        case 'O':
            out_fmt = optarg;
            break;
        case 'f':
            in_spec.format = optarg;
            break;
        case 'U':
            in_spec.force_share = true;
            break;
        case kObject:
            error_report("--object is not supported");
            return 1;
        case kImageOpts:
            in_spec.image_opts = true;
            break;
        }
    }
    DdOperands ops;
    for (int i = optind; i < argc; i++) {
        if (!parse_operand(argv[i], ops)) {
            return 1;
        }
    }
    if (!ops.input || !ops.output) {
        error_report("Must specify both input and output files");
        return 1;
    }

    AioContext ctx;
    in_spec.filename = *ops.input;
    auto in = open_image(in_spec, 0, ctx);
    if (!in) {
        return 1;
    }
    const BlockDriver* drv = bdrv_find_driver(out_fmt);
    if (!drv) {
        error_report("Unknown file format");
        return 1;
    }
    Error err;
    auto schema = create_schema(out_fmt, ops.output->c_str(), err);
    if (!schema) {
        report_error(err);
        return 1;
    }

    // The part of the input to copy: from skip= blocks on, count= blocks.
    const uint64_t size = in->getlength();
    const uint64_t bs = uint64_t(ops.block_size);
    uint64_t start = 0;
    bool skip_beyond_end = false;
    if (ops.skip) {
        if (uint64_t(*ops.skip) > size / bs) {
            skip_beyond_end = true;  // dd(1) copies nothing then
            start = size;
        } else {
            start = uint64_t(*ops.skip) * bs;
        }
    }
    uint64_t end = size;
    if (ops.count && uint64_t(*ops.count) <= (size - start) / bs) {
        end = start + uint64_t(*ops.count) * bs;
    }

    CreateOptions opts(*schema);
    opts.set_size(end - start);
    QDict dict = opts.to_qdict();
    int ret = run_sync(ctx, bdrv_co_create(*drv, *ops.output, dict, ctx, err));
    if (ret < 0) {
        report_error(err, *ops.output + ": error while creating output image: ");
        return 1;
    }
    ImageSpec out_spec;
    out_spec.filename = *ops.output;
    out_spec.format = out_fmt;
    auto out = open_image(out_spec, BDRV_O_RDWR, ctx);
    if (!out) {
        return 1;
    }
    if (skip_beyond_end) {
        // As dd(1) and QEMU: said, and an empty output.
        error_report("%s: cannot skip to specified offset", ops.input->c_str());
    }
    return copy(*in, *out, ctx, start, end, bs) ? 0 : 1;
}

}  // namespace qemu::img
