// A filter node: one child, `file`, that holds every byte; the filter sees
// what passes through (QEMU's is_filter drivers).  Requests go down
// unchanged unless a subclass changes them: copy-on-read marks its reads,
// compress its writes.  Private to block/.
#pragma once

#include "block/block_int.h"

namespace qemu {

class FilterState : public BlockDriverState {
public:
    using BlockDriverState::BlockDriverState;

    // Opens the `file` child and takes its size; subclasses check what
    // they need of it afterwards.
    Task<int> drv_open(QDict& options, Error& err) override;
    Task<int> drv_preadv(uint64_t offset, uint64_t bytes, IOVector& qiov, size_t qiov_offset,
                         unsigned flags) override
    {
        co_return co_await bdrv_co_preadv(file(), offset, bytes, qiov, qiov_offset, flags);
    }
    Task<int> drv_pwritev(uint64_t offset, uint64_t bytes, IOVector& qiov, size_t qiov_offset,
                          unsigned flags) override
    {
        co_return co_await bdrv_co_pwritev(file(), offset, bytes, qiov, qiov_offset, flags);
    }
    unsigned supported_write_flags() const override
    {
        return BDRV_REQ_FUA | BDRV_REQ_WRITE_COMPRESSED;
    }
    unsigned supported_zero_flags() const override
    {
        return BDRV_REQ_FUA | BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK;
    }
    Task<int> drv_pwrite_zeroes(uint64_t offset, uint64_t bytes, unsigned flags) override
    {
        co_return co_await bdrv_co_pwrite_zeroes(file(), offset, bytes, flags);
    }
    Task<int> drv_pdiscard(uint64_t offset, uint64_t bytes) override
    {
        co_return co_await bdrv_co_pdiscard(file(), offset, bytes);
    }
    Task<int> drv_truncate(uint64_t offset, bool exact, PreallocMode prealloc, unsigned flags,
                           Error& err) override;
    // The child answers for every byte.
    Task<int> drv_block_status(bool, uint64_t offset, uint64_t bytes, BlockStatus& out) override
    {
        out.pnum = bytes;
        out.flags = BDRV_BLOCK_RAW | BDRV_BLOCK_OFFSET_VALID;
        out.map = offset;
        out.file = file()->bs.get();
        co_return 0;
    }
    int drv_get_info(BlockDriverInfo& info) override { return file()->bs->drv_get_info(info); }
    bool drv_has_zero_init() override { return file()->bs->drv_has_zero_init(); }
};

// The driver half of a filter: no options of its own.
template <typename State>
class FilterDriver : public BlockDriver {
public:
    explicit FilterDriver(std::string_view name) : name_(name) {}
    std::string_view name() const override { return name_; }
    const OptionSchema& open_schema() const override
    {
        static const OptionSchema schema;
        return schema;
    }
    std::shared_ptr<BlockDriverState> new_node(AioContext& ctx) const override
    {
        return std::make_shared<State>(*this, ctx);
    }

private:
    std::string_view name_;
};

}  // namespace qemu
