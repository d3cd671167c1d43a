// The spellings of the open modes that users type (-t, -d, -i, cache=...),
// shared by every tool so that they accept exactly the same words.
#include "block/block-common.h"

namespace qemu {

bool bdrv_parse_cache_mode(const std::string& mode, int& flags, bool& writethrough)
{
    int cache_flags;
    bool wt;
    if (mode == "off" || mode == "none") {
        cache_flags = BDRV_O_NOCACHE;
        wt = false;
    } else if (mode == "directsync") {
        cache_flags = BDRV_O_NOCACHE;
        wt = true;
    } else if (mode == "writeback") {
        cache_flags = 0;
        wt = false;
    } else if (mode == "unsafe") {
        cache_flags = BDRV_O_NO_FLUSH;
        wt = false;
    } else if (mode == "writethrough") {
        cache_flags = 0;
        wt = true;
    } else {
        return false;
    }
    flags = (flags & ~(BDRV_O_NOCACHE | BDRV_O_NO_FLUSH)) | cache_flags;
    writethrough = wt;
    return true;
}

bool bdrv_parse_discard_flags(const std::string& mode, int& flags)
{
    if (mode == "off" || mode == "ignore") {
        flags &= ~BDRV_O_UNMAP;
    } else if (mode == "on" || mode == "unmap") {
        flags |= BDRV_O_UNMAP;
    } else {
        return false;
    }
    return true;
}

bool bdrv_parse_aio(const std::string& mode, std::string& aio)
{
    if (mode != "threads" && mode != "native" && mode != "io_uring") {
        return false;
    }
    aio = mode;
    return true;
}

}  // namespace qemu
