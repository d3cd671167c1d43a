// qemu-img convert: copies one image, or several concatenated, into a new
// (or, with -n, an existing) image of any format, with QEMU 7.2's options,
// checks, messages and resulting allocation.
//
// The checks run in QEMU's order, so that a command line with several
// problems gets QEMU's first complaint.  The target is created only when
// every check that does not need it has passed; if the convert fails after
// that, a target file it created (and a data file created with it) is
// removed again, unlike QEMU, which leaves a half-made image that may pass
// for a copy.  A file that existed before, or a target given with -n, is
// never removed.
//
// A target with a backing file (-B, or -o backing_file) gets only what the
// source's top layer allocates: the rest is left to its backing file,
// which must hold what the source's backing chain holds.
//
// Not supported yet, each refused with an error: internal snapshots of the
// source (-l), persistent bitmaps (--bitmaps) and user-creatable objects
// (--object).
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

#include "commands.h"
#include "convert-copy.h"
#include "convert-zoned.h"
#include "create-options.h"
#include "progress.h"
#include "qemu/qemu-opts.h"
#include "qemu/cutils.h"
#include "tool.h"

namespace qemu::img {

namespace {

constexpr unsigned kMaxCoroutines = 16;
constexpr uint64_t kMaxBufSectors = 32768;   // 16 MiB
constexpr uint64_t kDefaultBufSectors = 4096;  // 2 MiB

struct ConvertCommand {
    ImageSpec source;  // filename unused: one per source
    std::vector<std::string> source_names;
    std::optional<std::string> target;  // none without a source
    std::optional<std::string> out_fmt;  // -O
    bool target_image_opts = false;
    std::optional<std::string> options;  // -o, accumulated
    std::optional<std::string> backing;  // -B
    std::optional<std::string> backing_fmt;  // -F
    std::optional<std::string> snapshot;  // -l
    std::string cache = "unsafe";
    std::string src_cache = "writeback";
    bool skip_create = false;  // -n
    bool progress = false;
    bool bitmaps = false;
    bool skip_broken_bitmaps = false;
    bool explicit_min_sparse = false;
    ConvertParams params;
};

uint64_t pow2floor(uint64_t v)
{
    return v ? uint64_t(1) << (63 - __builtin_clzll(v)) : 0;
}

// The long options that have no short form.
enum ConvertLongOption {
    kObject = 256,
    kImageOpts,
    kTargetImageOpts,
    kSalvage,
    kTargetIsZero,
    kBitmaps,
    kSkipBrokenBitmaps,
};

// Applies one option from getopt to cmd; false (after saying why) if its
// argument is refused.
bool apply_option(int c, ConvertCommand& cmd)
{
    ConvertParams& p = cmd.params;
    switch (c) {
    case 'f':
        cmd.source.format = optarg;
        break;
    case 'O':
        cmd.out_fmt = optarg;
        break;
    case 'B':
        cmd.backing = optarg;
        break;
    case 'F':
        cmd.backing_fmt = optarg;
        break;
    case 'C':
        p.copy_verbatim = true;
        break;
    case 'c':
        p.compressed = true;
        break;
    case 'o':
        if (!is_valid_option_list(optarg)) {
            error_report("Invalid option list: %s", optarg);
            return false;
        }
        cmd.options = cmd.options ? *cmd.options + "," + optarg : std::string(optarg);
        break;
    case 'l':
        cmd.snapshot = optarg;
        break;
    case 'S': {
        int64_t sval = parse_size_argument("buffer size for sparse output", optarg, 0,
                                           INT64_MAX);
        if (sval < 0) {
            return false;
        }
        if (sval % kSectorBytes || uint64_t(sval) / kSectorBytes > kMaxBufSectors) {
            error_report("Invalid buffer size for sparse output specified. Valid sizes are "
                         "multiples of %llu up to %llu. Select 0 to disable sparse detection "
                         "(fully allocates output).",
                         (unsigned long long)kSectorBytes,
                         (unsigned long long)(kMaxBufSectors * kSectorBytes));
            return false;
        }
        p.min_sparse = uint64_t(sval) / kSectorBytes;
        cmd.explicit_min_sparse = true;
        break;
    }
    case 'p':
        cmd.progress = true;
        break;
    case 't':
        cmd.cache = optarg;
        break;
    case 'T':
        cmd.src_cache = optarg;
        break;
    case 'q':
        p.quiet = true;
        break;
    case 'n':
        cmd.skip_create = true;
        break;
    case 'm': {
        auto n = parse_ulong_argument(optarg, kMaxCoroutines);
        if (!n || *n < 1) {
            error_report("Invalid number of coroutines. Allowed number of coroutines is "
                         "between 1 and %u", kMaxCoroutines);
            return false;
        }
        p.num_coroutines = unsigned(*n);
        break;
    }
    case 'W':
        p.in_order = false;
        break;
    case 'U':
        cmd.source.force_share = true;
        break;
    case 'r': {
        int64_t rate = parse_size_argument("rate limit", optarg, 0, INT64_MAX);
        if (rate < 0) {
            return false;
        }
        p.rate_limit = uint64_t(rate);
        break;
    }
    case kObject:
        error_report("--object is not supported");
        return false;
    case kImageOpts:
        cmd.source.image_opts = true;
        break;
    case kSalvage:
        p.salvage = true;
        break;
    case kTargetImageOpts:
        cmd.target_image_opts = true;
        break;
    case kTargetIsZero:
        // The user's word that the target reads as zeroes.
        p.has_zero_init = true;
        break;
    case kBitmaps:
        cmd.bitmaps = true;
        break;
    case kSkipBrokenBitmaps:
        cmd.skip_broken_bitmaps = true;
        break;
    }
    return true;
}

// QEMU's checks of the options against each other, after all are read.
bool check_option_combinations(const ConvertCommand& cmd)
{
    const ConvertParams& p = cmd.params;
    if (cmd.skip_broken_bitmaps && !cmd.bitmaps) {
        error_report("Use of --skip-broken-bitmaps requires --bitmaps");
        return false;
    }
    if (p.compressed && p.copy_verbatim) {
        error_report("Cannot enable copy offloading when -c is used");
        return false;
    }
    if (cmd.explicit_min_sparse && p.copy_verbatim) {
        error_report("Cannot enable copy offloading when -S is used");
        return false;
    }
    if (p.copy_verbatim && p.salvage) {
        error_report("Cannot use copy offloading in salvaging mode");
        return false;
    }
    if (cmd.target_image_opts && !cmd.skip_create) {
        error_report("--target-image-opts requires use of -n flag");
        return false;
    }
    if (cmd.skip_create && cmd.options) {
        error_report("-o has no effect when skipping image creation");
        return false;
    }
    if (p.has_zero_init && !cmd.skip_create) {
        error_report("--target-is-zero requires use of -n flag");
        return false;
    }
    return true;
}

// Parses the command line into cmd; false (after saying why) on an error.
bool parse_command_line(int argc, char** argv, ConvertCommand& cmd)
{
    static const option long_options[] = {
        {"help", no_argument, nullptr, 'h'},
        {"object", required_argument, nullptr, kObject},
        {"image-opts", no_argument, nullptr, kImageOpts},
        {"force-share", no_argument, nullptr, 'U'},
        {"target-image-opts", no_argument, nullptr, kTargetImageOpts},
        {"salvage", no_argument, nullptr, kSalvage},
        {"target-is-zero", no_argument, nullptr, kTargetIsZero},
        {"bitmaps", no_argument, nullptr, kBitmaps},
        {"skip-broken-bitmaps", no_argument, nullptr, kSkipBrokenBitmaps},
        {nullptr, 0, nullptr, 0},
    };
    int c;
    while ((c = get_option(argc, argv, ":hf:O:B:CcF:o:l:S:pt:T:qnm:WUr:", long_options)) != -1) {
        if (!apply_option(c, cmd)) {
            return false;
        }
    }
    if (!cmd.out_fmt && !cmd.target_image_opts) {
        cmd.out_fmt = "raw";
    }

    if (!check_option_combinations(cmd)) {
        return false;
    }

    int src_num = argc - optind - 1;
    for (int i = 0; i < src_num; i++) {
        cmd.source_names.emplace_back(argv[optind + i]);
    }
    if (src_num >= 1) {
        cmd.target = argv[argc - 1];
    }
    return true;
}

// QEMU's checks of -c against the target format and its options.
bool compression_is_possible(const BlockDriver& drv, const CreateOptions& opts)
{
    if (!drv.supports_compressed_writes()) {
        error_report("Compression not supported for this file format");
        return false;
    }
    QDict values = opts.to_qdict();
    const std::string* encryption = values.get("encryption");
    if ((encryption && *encryption == "on") || values.has("encrypt.format")) {
        error_report("Compression and encryption not supported at the same time");
        return false;
    }
    const std::string* prealloc = values.get("preallocation");
    if (prealloc && *prealloc != "off") {
        error_report("Compression and preallocation not supported at the same time");
        return false;
    }
    return true;
}

class Converter {
public:
    explicit Converter(ConvertCommand& cmd) : cmd_(cmd), p_(cmd.params) {}

    // The steps from opening the sources on; returns the exit status.
    int run(ProgressMeter& progress)
    {
        int status = convert(progress);
        if (status != 0 && !created_.empty()) {
            target_.reset();  // closed before its files go
            for (const CreatedFile& f : created_) {
                f.remove();
            }
        }
        return status;
    }

private:
    // A regular file that create_target() brought into existence.
    struct CreatedFile {
        std::string path;
        dev_t dev;
        ino_t ino;

        // Removes the file if `path` still names it (not a file that
        // replaced it meanwhile).
        void remove() const
        {
            struct stat st;
            if (lstat(path.c_str(), &st) == 0 && st.st_dev == dev && st.st_ino == ino) {
                unlink(path.c_str());
            }
        }
    };

    int convert(ProgressMeter& progress)
    {
        if (!open_sources() || !check_snapshot()) {
            return 1;
        }
        std::optional<CreateOptions> opts;
        const BlockDriver* drv = nullptr;
        if (!cmd_.skip_create) {
            drv = prepare_create(opts);
            if (!drv) {
                return 1;
            }
        }
        if (!check_backing(opts)) {
            return 1;
        }
        if (p_.compressed && drv && !compression_is_possible(*drv, *opts)) {
            return 1;
        }
        if (cmd_.bitmaps) {
            error_report(sources_.size() > 1 ? "Copying bitmaps only possible with single source"
                                             : "Source lacks bitmap support");
            return 1;
        }

        // The target's cache mode is checked before the target is created
        // (QEMU checks it after, and leaves the new image behind).
        int flags = p_.min_sparse ? BDRV_O_RDWR | BDRV_O_UNMAP : BDRV_O_RDWR;
        bool writethrough;
        if (!parse_cache_option(cmd_.cache, flags, writethrough)) {
            return 1;
        }
        if (flags & BDRV_O_NOCACHE) {
            // O_DIRECT may need the target grown to a whole physical block.
            flags |= BDRV_O_RESIZE;
        }
        if (writethrough) {
            p_.write_flags |= BDRV_REQ_FUA;
        }

        if (!cmd_.skip_create && !create_target(*drv, *opts)) {
            return 1;
        }
        p_.target_is_new = !cmd_.skip_create;
        if (!open_target(flags)) {
            return 1;
        }
        warn_zone_layout_dropped(sources_, cmd_.source_names, *target_);
        if (target_->bs()->limits().zoned != BlockZoneModel::None) {
            p_.zoned.emplace();
            if (!prepare_zoned_target(sources_, cmd_.source_names, *target_, *cmd_.target, *p_.zoned)) {
                return 1;
            }
        }
        int ret = convert_copy(sources_, *target_, p_, progress);
        if (ret < 0) {
            return 1;
        }
        if (p_.zoned && finish_zoned_target(*target_, *cmd_.target, *p_.zoned) < 0) {
            return 1;
        }
        progress.update(100, 0);
        return 0;
    }

    bool open_sources()
    {
        int flags = 0;
        bool writethrough;
        bdrv_parse_cache_mode(cmd_.src_cache, flags, writethrough);  // checked by the caller
        for (const std::string& name : cmd_.source_names) {
            ImageSpec spec = cmd_.source;
            spec.filename = name;
            ConvertSource src;
            src.blk = open_image(spec, flags, ctx_);
            if (!src.blk) {
                return false;
            }
            BlockDriverState* bs = src.blk->bs();
            src.sectors = src.blk->getlength() / kSectorBytes;
            src.alignment = (bs->limits().request_alignment + kSectorBytes - 1) / kSectorBytes;
            BlockDriverInfo bdi;
            if (bs->drv_get_info(bdi) >= 0) {
                src.alignment = std::max<uint64_t>(src.alignment, bdi.cluster_size / kSectorBytes);
            }
            total_sectors_ += src.sectors;
            sources_.push_back(std::move(src));
        }
        return true;
    }

    // -l: no driver here can read an internal snapshot in place.
    bool check_snapshot()
    {
        if (!cmd_.snapshot) {
            return true;
        }
        if (!starts_with(*cmd_.snapshot, "snapshot.") && sources_.size() > 1) {
            error_report("No support for concatenating multiple snapshot");
            return false;
        }
        std::string_view fmt = sources_[0].blk->bs()->drv().name();
        error_report("Failed to load snapshot: Block format '%.*s' used by device '' does not "
                     "support temporarily loading internal snapshots",
                     int(fmt.size()), fmt.data());
        return false;
    }

    // The create options of the new target; its driver, or nullptr.
    const BlockDriver* prepare_create(std::optional<CreateOptions>& opts)
    {
        Error err;
        auto schema = create_schema(*cmd_.out_fmt, cmd_.target->c_str(), err);
        if (!schema) {
            report_error(err);
            return nullptr;
        }
        opts.emplace(*schema);
        if (cmd_.options && !opts->parse(*cmd_.options, err)) {
            report_error(err);
            return nullptr;
        }
        // The size is the sources', whatever -o said.
        opts->set_size(total_sectors_ * kSectorBytes);
        // -B and -F go over -o (string options: setting cannot fail).
        if (cmd_.backing) {
            if (!opts->supports("backing_file")) {
                error_report("Backing file not supported for file format '%s'",
                             cmd_.out_fmt->c_str());
                return nullptr;
            }
            opts->set("backing_file", *cmd_.backing, err);
        }
        if (cmd_.backing_fmt) {
            if (!opts->supports("backing_fmt")) {
                error_report("Backing file format not supported for file format '%s'",
                             cmd_.out_fmt->c_str());
                return nullptr;
            }
            opts->set("backing_fmt", *cmd_.backing_fmt, err);
        }
        return bdrv_find_driver(*cmd_.out_fmt);
    }

    bool check_backing(const std::optional<CreateOptions>& opts)
    {
        QDict values;
        if (opts) {
            values = opts->to_qdict();
        }
        const std::string* backing_param = values.get("backing_file");
        bool has_backing = backing_param || cmd_.backing;
        if (!has_backing) {
            return true;
        }
        if (p_.has_zero_init) {
            error_report("Cannot use --target-is-zero when the destination image has a backing "
                         "file");
            return false;
        }
        if (sources_.size() > 1) {
            error_report("Having a backing file for the target makes no sense when "
                         "concatenating multiple input images");
            return false;
        }
        if (backing_param && !values.has("backing_fmt")) {
            error_report("Use of backing file requires explicit backing format");
            return false;
        }
        p_.target_has_backing = true;
        return true;
    }

    bool create_target(const BlockDriver& drv, const CreateOptions& opts)
    {
        QDict dict = opts.to_qdict();
        std::vector<std::string> paths = {*cmd_.target};
        if (const std::string* data_file = dict.get("data_file")) {
            paths.push_back(*data_file);
        }
        std::vector<std::string> fresh;
        for (const std::string& path : paths) {
            struct stat st;
            if (lstat(path.c_str(), &st) < 0 && errno == ENOENT) {
                fresh.push_back(path);
            }
        }
        Error err;
        int ret = run_sync(ctx_, bdrv_co_create(drv, *cmd_.target, dict, ctx_, err));
        if (ret < 0) {
            report_error(err, *cmd_.target + ": error while converting " + *cmd_.out_fmt + ": ");
            return false;
        }
        // A protocol-prefixed or non-file target names no file here.
        for (const std::string& path : fresh) {
            struct stat st;
            if (lstat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
                created_.push_back({path, st.st_dev, st.st_ino});
            }
        }
        return true;
    }

    bool open_target(int flags)
    {
        ImageSpec spec;
        spec.filename = *cmd_.target;
        spec.format = cmd_.out_fmt.value_or("");
        spec.image_opts = cmd_.target_image_opts;
        target_ = open_image(spec, flags, ctx_);
        if (!target_) {
            return false;
        }
        BlockDriverState* bs = target_->bs();
        if (p_.target_has_backing && p_.target_is_new && bs->backing()) {
            p_.target_backing_sectors = int64_t(bs->backing()->bs->total_bytes() / kSectorBytes);
        }
        if (p_.compressed && !(bs->supported_write_flags() & BDRV_REQ_WRITE_COMPRESSED)) {
            error_report("Compression not supported for this file format");
            return false;
        }
        const BlockLimits& bl = bs->limits();
        p_.buf_sectors = std::min(kMaxBufSectors,
                                  std::max({kDefaultBufSectors, bl.opt_transfer / kSectorBytes,
                                            uint64_t(bl.pdiscard_alignment) / kSectorBytes}));
        // Writes should end on the target's blocks, to spare it RMW cycles.
        p_.alignment = std::max(pow2floor(p_.min_sparse),
                                (bl.request_alignment + kSectorBytes - 1) / kSectorBytes);
        if (cmd_.skip_create && target_->getlength() / kSectorBytes < total_sectors_) {
            error_report("output file is smaller than input file");
            return false;
        }
        BlockDriverInfo bdi;
        if (bs->drv_get_info(bdi) < 0) {
            if (p_.compressed) {
                error_report("could not get block driver info");
                return false;
            }
        } else {
            p_.cluster_sectors = bdi.cluster_size / kSectorBytes;
        }
        return true;
    }

    ConvertCommand& cmd_;
    ConvertParams& p_;
    AioContext ctx_;
    std::vector<ConvertSource> sources_;
    uint64_t total_sectors_ = 0;
    std::unique_ptr<BlockBackend> target_;
    std::vector<CreatedFile> created_;  // removed if the convert fails
};

}  // namespace

int img_convert(int argc, char** argv)
{
    ConvertCommand cmd;
    if (!parse_command_line(argc, argv, cmd)) {
        return 1;
    }
    if (cmd.options && has_help_option(*cmd.options)) {
        if (!cmd.out_fmt) {
            error_report("Option help requires a format be specified");
            return 1;
        }
        Error err;
        if (!print_create_help(cmd.target ? cmd.target->c_str() : nullptr, *cmd.out_fmt, err)) {
            report_error(err);
            return 1;
        }
        return 0;
    }
    if (cmd.source_names.empty()) {
        error_report("Must specify image file name");
        return 1;
    }
    int flags = 0;
    bool writethrough;
    if (!bdrv_parse_cache_mode(cmd.src_cache, flags, writethrough)) {
        error_report("Invalid source cache option: %s", cmd.src_cache.c_str());
        return 1;
    }

    ProgressMeter progress(cmd.progress && !cmd.params.quiet, 1.0);
    progress.update(0, 100);
    int status = Converter(cmd).run(progress);
    progress.end();
    return status;
}

}  // namespace qemu::img
