// The compress filter (QEMU's block/filter-compress.c): every write through
// it is stored compressed by the format below (BDRV_REQ_WRITE_COMPRESSED),
// which therefore must be able to compress (qcow2).  Requests are aligned
// to the child's clusters, so partial writes become read-modify-write of
// whole clusters, each compressed.
#include "block/filter.h"

namespace qemu {

namespace {

class CompressState : public FilterState {
public:
    using FilterState::FilterState;

    Task<int> drv_open(QDict& options, Error& err) override
    {
        int ret = co_await FilterState::drv_open(options, err);
        if (ret < 0) {
            co_return ret;
        }
        BlockDriverState* child = file()->bs.get();
        if (child->drv().is_protocol() ||
            !(child->supported_write_flags() & BDRV_REQ_WRITE_COMPRESSED)) {
            err.set("Compression is not supported for underlying format: %.*s",
                    int(child->drv().name().size()), child->drv().name().data());
            co_return -ENOTSUP;
        }
        co_return 0;
    }
    Task<int> drv_pwritev(uint64_t offset, uint64_t bytes, IOVector& qiov, size_t qiov_offset,
                          unsigned flags) override
    {
        co_return co_await bdrv_co_pwritev(file(), offset, bytes, qiov, qiov_offset,
                                           flags | BDRV_REQ_WRITE_COMPRESSED);
    }
    void drv_refresh_limits(BlockLimits& bl) override
    {
        BlockDriverInfo bdi;
        if (file() && file()->bs->drv_get_info(bdi) >= 0 && bdi.cluster_size) {
            bl.request_alignment = bdi.cluster_size;
        }
    }
};

}  // namespace

const BlockDriver& bdrv_compress_driver()
{
    static const FilterDriver<CompressState> driver("compress");
    return driver;
}

}  // namespace qemu
