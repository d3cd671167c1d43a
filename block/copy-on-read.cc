// The copy-on-read filter (QEMU's block/copy-on-read.c): every read through
// it copies what its child does not hold yet from the child's backing chain
// into the child (BDRV_REQ_COPY_ON_READ, see copy_on_readv in io.cc), so
// that an overlay fills up with what the guest reads.  Everything else
// passes through.  QEMU's `bottom` option (copy only from above a given
// node) is not supported and is refused as an unknown option.
#include "block/block_int.h"

namespace qemu {

namespace {

class CopyOnReadState : public BlockDriverState {
public:
    using BlockDriverState::BlockDriverState;

    Task<int> drv_open(QDict& options, Error& err) override
    {
        if (read_only()) {
            err.set("Block node is read-only");
            co_return -EINVAL;
        }
        if (!file()) {
            BdrvChild* c = co_await open_child("file", options, false, err);
            if (!c) {
                co_return -EINVAL;
            }
        }
        set_total_bytes(file()->bs->total_bytes());
        co_return 0;
    }
    Task<int> drv_preadv(uint64_t offset, uint64_t bytes, IOVector& qiov, size_t qiov_offset,
                         unsigned flags) override
    {
        co_return co_await bdrv_co_preadv(file(), offset, bytes, qiov, qiov_offset,
                                          flags | BDRV_REQ_COPY_ON_READ);
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
                           Error& err) override
    {
        int ret = co_await bdrv_co_truncate(file(), offset, exact, prealloc, flags, err);
        if (ret >= 0) {
            set_total_bytes(file()->bs->total_bytes());
        }
        co_return ret;
    }
    // A filter: the child answers for every byte.
    Task<int> drv_block_status(bool, uint64_t offset, uint64_t bytes, BlockStatus& out) override
    {
        out.pnum = bytes;
        out.flags = BDRV_BLOCK_RAW | BDRV_BLOCK_OFFSET_VALID;
        out.map = offset;
        out.file = file()->bs.get();
        co_return 0;
    }
    // The copies write data the child already shows: WRITE_UNCHANGED on
    // top of what the parents need, as QEMU's cor_child_perm().
    void drv_child_perm(const BdrvChild&, uint64_t parent_perm, uint64_t parent_shared,
                        uint64_t& perm, uint64_t& shared) const override
    {
        perm = parent_perm;
        if (parent_perm & BLK_PERM_CONSISTENT_READ) {
            perm |= BLK_PERM_WRITE_UNCHANGED;
        }
        shared = parent_shared | BLK_PERM_WRITE_UNCHANGED;
    }
    int drv_get_info(BlockDriverInfo& info) override { return file()->bs->drv_get_info(info); }
    bool drv_has_zero_init() override { return file()->bs->drv_has_zero_init(); }
};

class CopyOnReadDriver : public BlockDriver {
public:
    std::string_view name() const override { return "copy-on-read"; }
    const OptionSchema& open_schema() const override
    {
        static const OptionSchema schema;
        return schema;
    }
    std::shared_ptr<BlockDriverState> new_node(AioContext& ctx) const override
    {
        return std::make_shared<CopyOnReadState>(*this, ctx);
    }
};

}  // namespace

const BlockDriver& bdrv_copy_on_read_driver()
{
    static const CopyOnReadDriver driver;
    return driver;
}

}  // namespace qemu
