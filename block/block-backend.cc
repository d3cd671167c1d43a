#include "block/block-backend.h"

namespace qemu {

std::unique_ptr<BlockBackend> BlockBackend::open(std::optional<std::string> filename,
                                                 QDict options, int flags, AioContext& ctx,
                                                 Error& err)
{
    auto bs = run_sync(ctx, bdrv_co_open(filename, std::move(options), flags, ctx, err));
    if (!bs) {
        return nullptr;
    }
    uint64_t perm = BLK_PERM_CONSISTENT_READ;
    if (flags & BDRV_O_RDWR) {
        // The user asked to write but the node came out read-only
        // (read-only=on in the options): as QEMU, refuse rather than
        // silently open read-only.
        if (bs->read_only()) {
            err.set("Block node is read-only");
            return nullptr;
        }
        perm |= BLK_PERM_WRITE;
    }
    if (flags & BDRV_O_RESIZE) {
        perm |= BLK_PERM_RESIZE;
    }
    uint64_t shared = (flags & BDRV_O_NO_SHARE) ? BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE_UNCHANGED
                                                : BLK_PERM_ALL;
    if (const std::string* fs = bs->options().get("force-share"); fs && *fs == "on") {
        shared = BLK_PERM_ALL;
    }
    if (bs->update_permissions(perm, shared, err) < 0) {
        return nullptr;
    }
    auto blk = std::make_unique<BlockBackend>(std::move(bs));
    blk->root_.perm = perm;
    blk->root_.shared = shared;
    return blk;
}

BlockBackend::BlockBackend(std::shared_ptr<BlockDriverState> root)
{
    root_.name = "root";
    root_.bs = std::move(root);
}

BlockBackend::~BlockBackend()
{
    // Whatever the driver still caches must reach the disk before the node
    // goes away, as QEMU's bdrv_close() flushes.
    if (root_.bs && root_.bs.use_count() == 1) {
        run_sync(ctx(), bdrv_co_close(root_.bs.get()));
    }
}

int BlockBackend::check_request(uint64_t offset, uint64_t bytes) const
{
    uint64_t len = getlength();
    if (offset > len || bytes > len - offset) {
        return -EIO;
    }
    return 0;
}

Task<int> BlockBackend::co_preadv(uint64_t offset, uint64_t bytes, IOVector& qiov, unsigned flags)
{
    int ret = check_request(offset, bytes);
    if (ret < 0) {
        co_return ret;
    }
    co_return co_await bdrv_co_preadv(&root_, offset, bytes, qiov, 0, flags);
}

Task<int> BlockBackend::co_pwritev(uint64_t offset, uint64_t bytes, IOVector& qiov, unsigned flags)
{
    int ret = check_request(offset, bytes);
    if (ret < 0) {
        co_return ret;
    }
    co_return co_await bdrv_co_pwritev(&root_, offset, bytes, qiov, 0, flags);
}

Task<int> BlockBackend::co_pwrite_zeroes(uint64_t offset, uint64_t bytes, unsigned flags)
{
    int ret = check_request(offset, bytes);
    if (ret < 0) {
        co_return ret;
    }
    co_return co_await bdrv_co_pwrite_zeroes(&root_, offset, bytes, flags);
}

Task<int> BlockBackend::co_pdiscard(uint64_t offset, uint64_t bytes)
{
    int ret = check_request(offset, bytes);
    if (ret < 0) {
        co_return ret;
    }
    co_return co_await bdrv_co_pdiscard(&root_, offset, bytes);
}

Task<int> BlockBackend::co_flush()
{
    co_return co_await bdrv_co_flush(root_.bs.get());
}

Task<int> BlockBackend::co_truncate(uint64_t offset, bool exact, PreallocMode prealloc,
                                    unsigned flags, Error& err)
{
    co_return co_await bdrv_co_truncate(&root_, offset, exact, prealloc, flags, err);
}

Task<int> BlockBackend::co_zone_report(uint64_t offset, uint32_t& nr_zones,
                                       BlockZoneDescriptor* zones)
{
    co_return co_await bdrv_co_zone_report(root_.bs.get(), offset, nr_zones, zones);
}

Task<int> BlockBackend::co_zone_mgmt(BlockZoneOp op, uint64_t offset, uint64_t len)
{
    if (is_read_only()) {
        co_return -EPERM;
    }
    // As QEMU's blk_co_zone_mgmt: a range past the end is an I/O error
    // (zone report and append have no such check there).
    int ret = check_request(offset, len);
    if (ret < 0) {
        co_return ret;
    }
    co_return co_await bdrv_co_zone_mgmt(root_.bs.get(), op, offset, len);
}

Task<int> BlockBackend::co_zone_append(uint64_t& offset, IOVector& qiov, unsigned flags)
{
    if (is_read_only()) {
        co_return -EPERM;
    }
    int ret = check_request(offset, qiov.size());
    if (ret < 0) {
        co_return ret;
    }
    co_return co_await bdrv_co_zone_append(root_.bs.get(), offset, qiov, flags);
}

Task<int> BlockBackend::co_zone_set_desc_ext(uint64_t offset, const uint8_t* data)
{
    if (is_read_only()) {
        co_return -EPERM;
    }
    co_return co_await bdrv_co_zone_set_desc_ext(root_.bs.get(), offset, data);
}

Task<int> BlockBackend::co_zone_get_desc_ext(uint64_t offset, uint8_t* data)
{
    co_return co_await bdrv_co_zone_get_desc_ext(root_.bs.get(), offset, data);
}

int BlockBackend::pread(uint64_t offset, uint64_t bytes, void* buf, unsigned flags)
{
    IOVector qiov(buf, bytes);
    return run_sync(ctx(), co_preadv(offset, bytes, qiov, flags));
}

int BlockBackend::pwrite(uint64_t offset, uint64_t bytes, const void* buf, unsigned flags)
{
    IOVector qiov(const_cast<void*>(buf), bytes);
    return run_sync(ctx(), co_pwritev(offset, bytes, qiov, flags));
}

int BlockBackend::flush()
{
    return run_sync(ctx(), co_flush());
}

}  // namespace qemu
