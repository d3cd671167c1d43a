#include "block/block-backend.h"

namespace qemu {

std::unique_ptr<BlockBackend> BlockBackend::open(std::optional<std::string> filename,
                                                 QDict options, int flags, AioContext& ctx,
                                                 Error& err)
{
    return run_sync(ctx, co_open(std::move(filename), std::move(options), flags, ctx, err));
}

Task<std::unique_ptr<BlockBackend>> BlockBackend::co_open(std::optional<std::string> filename,
                                                          QDict options, int flags,
                                                          AioContext& ctx, Error& err)
{
    if (flags & BDRV_O_SNAPSHOT) {
        co_return co_await blk_co_open_temp_snapshot(std::move(filename), std::move(options), flags,
                                                     ctx, err);
    }
    auto bs = co_await bdrv_co_open(filename, std::move(options), flags, ctx, err);
    if (!bs) {
        co_return nullptr;
    }
    uint64_t perm = BLK_PERM_CONSISTENT_READ;
    if (flags & BDRV_O_RDWR) {
        // The user asked to write but the node came out read-only
        // (read-only=on in the options): as QEMU, refuse rather than
        // silently open read-only.
        if (bs->read_only()) {
            err.set("Block node is read-only");
            co_return nullptr;
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
    co_return attach(std::move(bs), perm, shared, "", err);
}

std::unique_ptr<BlockBackend> BlockBackend::attach(std::shared_ptr<BlockDriverState> node,
                                                   uint64_t perm, uint64_t shared,
                                                   const std::string& name, Error& err)
{
    auto blk = std::make_unique<BlockBackend>(std::move(node));
    blk->name_ = name;
    if (blk->set_perm(perm, shared, err) < 0) {
        // Nothing was done with the node: it goes without a close.
        blk->detach();
        return nullptr;
    }
    return blk;
}

BlockBackend::BlockBackend(std::shared_ptr<BlockDriverState> root)
{
    root_.name = "root";
    root_.backend = this;
    bdrv_replace_child_bs(&root_, std::move(root));
}

BlockBackend::~BlockBackend()
{
    if (!closed_) {
        // Taken first: the eager co_close() may detach the root before
        // run_sync's other argument is evaluated.
        AioContext& context = ctx();
        run_sync(context, co_close());
    }
}

void BlockBackend::detach()
{
    closed_ = true;
    // Requests held back by a drained section will not get a node: they
    // fail now (-ENOMEDIUM) rather than wait for a section end that this
    // backend, out of the graph, would not see.
    quiesce_counter_ = 0;
    queued_requests_.restart_all();
    std::shared_ptr<BlockDriverState> bs = root_.bs;
    bdrv_replace_child_bs(&root_, nullptr);
    if (bs && bs.use_count() > 1) {
        Error ignored;
        bs->refresh_perms(ignored);
    }
}

Task<void> BlockBackend::co_close()
{
    if (closed_) {
        co_return;
    }
    while (requests_.count() > 0) {
        co_await requests_.wait_idle();
    }
    // Whatever the driver still caches must reach the disk before the node
    // goes away, as QEMU's bdrv_close() flushes.
    if (root_.bs.use_count() == 1) {
        co_await bdrv_co_close(root_.bs.get());
    }
    detach();
}

int BlockBackend::set_perm(uint64_t perm, uint64_t shared, Error& err)
{
    if ((perm & BLK_PERM_WRITE) && is_read_only()) {
        err.set("Block node is read-only");
        return -EPERM;
    }
    uint64_t old_perm = root_.perm, old_shared = root_.shared;
    root_.perm = perm;
    root_.shared = shared;
    int ret = root_.bs->refresh_perms(err);
    if (ret < 0) {
        root_.perm = old_perm;
        root_.shared = old_shared;
    }
    return ret;
}

Task<void> BlockBackend::resume_when_undrained(std::coroutine_handle<> request)
{
    while (quiesce_counter_ > 0) {
        co_await queued_requests_.wait();
    }
    request.resume();
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
    auto in_flight = co_await admit();
    if (closed_) {
        co_return -ENOMEDIUM;  // closed while the request waited
    }
    int ret = check_request(offset, bytes);
    if (ret < 0) {
        stats_.invalid(BlockAcctType::Read);
        co_return ret;
    }
    int64_t start = AioContext::now_ns();
    ret = co_await bdrv_co_preadv(&root_, offset, bytes, qiov, 0, flags);
    stats_.done(BlockAcctType::Read, bytes, start, ret);
    co_return ret;
}

Task<int> BlockBackend::co_pwritev(uint64_t offset, uint64_t bytes, IOVector& qiov, unsigned flags)
{
    auto in_flight = co_await admit();
    if (closed_) {
        co_return -ENOMEDIUM;  // closed while the request waited
    }
    int ret = check_request(offset, bytes);
    if (ret < 0) {
        stats_.invalid(BlockAcctType::Write);
        co_return ret;
    }
    int64_t start = AioContext::now_ns();
    ret = co_await bdrv_co_pwritev(&root_, offset, bytes, qiov, 0, flags);
    stats_.done(BlockAcctType::Write, bytes, start, ret);
    if (ret >= 0) {
        stats_.wrote_up_to(offset + bytes);
    }
    co_return ret;
}

Task<int> BlockBackend::co_pwrite_zeroes(uint64_t offset, uint64_t bytes, unsigned flags)
{
    auto in_flight = co_await admit();
    if (closed_) {
        co_return -ENOMEDIUM;  // closed while the request waited
    }
    int ret = check_request(offset, bytes);
    if (ret < 0) {
        stats_.invalid(BlockAcctType::Write);
        co_return ret;
    }
    int64_t start = AioContext::now_ns();
    ret = co_await bdrv_co_pwrite_zeroes(&root_, offset, bytes, flags);
    stats_.done(BlockAcctType::Write, bytes, start, ret);
    if (ret >= 0) {
        stats_.wrote_up_to(offset + bytes);
    }
    co_return ret;
}

Task<int> BlockBackend::co_pdiscard(uint64_t offset, uint64_t bytes)
{
    auto in_flight = co_await admit();
    if (closed_) {
        co_return -ENOMEDIUM;  // closed while the request waited
    }
    int ret = check_request(offset, bytes);
    if (ret < 0) {
        stats_.invalid(BlockAcctType::Unmap);
        co_return ret;
    }
    int64_t start = AioContext::now_ns();
    ret = co_await bdrv_co_pdiscard(&root_, offset, bytes);
    stats_.done(BlockAcctType::Unmap, bytes, start, ret);
    co_return ret;
}

Task<int> BlockBackend::co_flush()
{
    auto in_flight = co_await admit();
    if (closed_) {
        co_return -ENOMEDIUM;  // closed while the request waited
    }
    int64_t start = AioContext::now_ns();
    int ret = co_await bdrv_co_flush(root_.bs.get());
    stats_.done(BlockAcctType::Flush, 0, start, ret);
    co_return ret;
}

Task<int> BlockBackend::co_truncate(uint64_t offset, bool exact, PreallocMode prealloc,
                                    unsigned flags, Error& err)
{
    auto in_flight = co_await admit();
    if (closed_) {
        co_return -ENOMEDIUM;  // closed while the request waited
    }
    co_return co_await bdrv_co_truncate(&root_, offset, exact, prealloc, flags, err);
}

Task<int> BlockBackend::co_zone_report(uint64_t offset, uint32_t& nr_zones,
                                       BlockZoneDescriptor* zones)
{
    auto in_flight = co_await admit();
    if (closed_) {
        co_return -ENOMEDIUM;  // closed while the request waited
    }
    co_return co_await bdrv_co_zone_report(root_.bs.get(), offset, nr_zones, zones);
}

Task<int> BlockBackend::co_zone_mgmt(BlockZoneOp op, uint64_t offset, uint64_t len)
{
    auto in_flight = co_await admit();
    if (closed_) {
        co_return -ENOMEDIUM;  // closed while the request waited
    }
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
    auto in_flight = co_await admit();
    if (closed_) {
        co_return -ENOMEDIUM;  // closed while the request waited
    }
    if (is_read_only()) {
        co_return -EPERM;
    }
    int ret = check_request(offset, qiov.size());
    if (ret < 0) {
        stats_.invalid(BlockAcctType::ZoneAppend);
        co_return ret;
    }
    int64_t start = AioContext::now_ns();
    ret = co_await bdrv_co_zone_append(root_.bs.get(), offset, qiov, flags);
    stats_.done(BlockAcctType::ZoneAppend, qiov.size(), start, ret);
    if (ret >= 0) {
        stats_.wrote_up_to(offset + qiov.size());
    }
    co_return ret;
}

Task<int> BlockBackend::co_zone_set_desc_ext(uint64_t offset, const uint8_t* data)
{
    auto in_flight = co_await admit();
    if (closed_) {
        co_return -ENOMEDIUM;  // closed while the request waited
    }
    if (is_read_only()) {
        co_return -EPERM;
    }
    co_return co_await bdrv_co_zone_set_desc_ext(root_.bs.get(), offset, data);
}

Task<int> BlockBackend::co_zone_get_desc_ext(uint64_t offset, uint8_t* data)
{
    auto in_flight = co_await admit();
    if (closed_) {
        co_return -ENOMEDIUM;  // closed while the request waited
    }
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
