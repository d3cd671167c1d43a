// The copy-on-read filter (QEMU's block/copy-on-read.c): every read through
// it copies what its child does not hold yet from the child's backing chain
// into the child (BDRV_REQ_COPY_ON_READ, see copy_on_readv in io.cc), so
// that an overlay fills up with what the guest reads.  Everything else
// passes through.  QEMU's `bottom` option (copy only from above a given
// node) is not supported and is refused as an unknown option.
#include "block/filter.h"

namespace qemu {

namespace {

class CopyOnReadState : public FilterState {
public:
    using FilterState::FilterState;

    Task<int> drv_open(QDict& options, Error& err) override
    {
        if (read_only()) {
            err.set("Block node is read-only");
            co_return -EINVAL;
        }
        co_return co_await FilterState::drv_open(options, err);
    }
    Task<int> drv_preadv(uint64_t offset, uint64_t bytes, IOVector& qiov, size_t qiov_offset,
                         unsigned flags) override
    {
        co_return co_await bdrv_co_preadv(file(), offset, bytes, qiov, qiov_offset,
                                          flags | BDRV_REQ_COPY_ON_READ);
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
};

}  // namespace

const BlockDriver& bdrv_copy_on_read_driver()
{
    static const FilterDriver<CopyOnReadState> driver("copy-on-read");
    return driver;
}

}  // namespace qemu
