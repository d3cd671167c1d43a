// The pass-through part of filter nodes (block/filter.h).
#include "block/filter.h"

namespace qemu {

Task<int> FilterState::drv_open(QDict& options, Error& err)
{
    if (!file()) {
        BdrvChild* c = co_await open_child("file", options, false, err);
        if (!c) {
            co_return -EINVAL;
        }
    }
    set_total_bytes(file()->bs->total_bytes());
    co_return 0;
}

Task<int> FilterState::drv_truncate(uint64_t offset, bool exact, PreallocMode prealloc,
                                    unsigned flags, Error& err)
{
    int ret = co_await bdrv_co_truncate(file(), offset, exact, prealloc, flags, err);
    if (ret >= 0) {
        set_total_bytes(file()->bs->total_bytes());
    }
    co_return ret;
}

}  // namespace qemu
