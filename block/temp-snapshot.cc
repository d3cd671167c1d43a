// Snapshot mode (BDRV_O_SNAPSHOT, QEMU's -s): writes go to a temporary
// qcow2 overlay whose backing file is the image, opened read-only.
//
// QEMU appends the overlay to the node it has opened.  Here the image is
// opened once to learn its size and the options that describe it, and
// the overlay then opens it again as its backing file from those options
// (any protocol, format and json: name reopen that way).  The overlay's
// file is unlinked as soon as it is open: nothing is left behind, even if
// the process is killed.
#include <unistd.h>

#include <cstdlib>

#include "block/block-backend.h"

namespace qemu {

namespace {

// QEMU's get_tmp_filename(): $TMPDIR, else /var/tmp (large, and not a
// tmpfs that refuses O_DIRECT).
std::string make_temp_path(Error& err)
{
    const char* dir = getenv("TMPDIR");
    std::string path = std::string(dir && *dir ? dir : "/var/tmp") + "/vl.XXXXXX";
    int fd = mkstemp(path.data());
    if (fd < 0) {
        err.set_errno(errno, "Could not get temporary filename");
        return "";
    }
    close(fd);
    return path;
}

}  // namespace

Task<std::unique_ptr<BlockBackend>> blk_co_open_temp_snapshot(std::optional<std::string> filename,
                                                              QDict options, int flags,
                                                              AioContext& ctx, Error& err)
{
    int image_flags = flags & ~(BDRV_O_SNAPSHOT | BDRV_O_RDWR | BDRV_O_RESIZE);
    std::optional<std::string> force_share;
    if (const std::string* fs = options.get("force-share")) {
        force_share = *fs;
    }
    std::unique_ptr<BlockBackend> image =
            co_await BlockBackend::co_open(std::move(filename), std::move(options), image_flags, ctx, err);
    if (!image) {
        co_return nullptr;
    }
    uint64_t size = image->getlength();
    QDict backing = bdrv_strong_description(*image->bs());
    co_await image->co_close();

    std::string path = make_temp_path(err);
    if (path.empty()) {
        co_return nullptr;
    }
    QDict create_opts;
    create_opts.set("size", std::to_string(size));
    const BlockDriver* qcow2 = bdrv_find_driver("qcow2");
    if (co_await bdrv_co_create(*qcow2, path, create_opts, ctx, err) < 0) {
        unlink(path.c_str());
        co_return nullptr;
    }
    QDict overlay;
    overlay.set("driver", "qcow2");
    overlay.set("file.driver", "file");
    overlay.set("file.filename", path);
    if (force_share) {
        backing.set("force-share", *force_share);
    }
    overlay.merge_subtree("backing", backing);
    int overlay_flags = flags & ~BDRV_O_SNAPSHOT;
    std::unique_ptr<BlockBackend> blk =
            co_await BlockBackend::co_open(std::nullopt, std::move(overlay), overlay_flags, ctx, err);
    unlink(path.c_str());
    co_return blk;
}

}  // namespace qemu
