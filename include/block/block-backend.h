// BlockBackend: the handle through which users (tools, front ends) do I/O.
//
// It owns the root of a node graph, holds the permissions its user needs and
// checks every request against the device size.  Byte-granular offsets are
// fine: the node graph takes care of alignment.  The co_* functions are for
// coroutines; the plain ones run the same request synchronously on the
// backend's AioContext (for tools and tests).
#pragma once

#include <cerrno>
#include <memory>
#include <string>

#include "block/block_int.h"

namespace qemu {

class BlockBackend {
public:
    // Opens filename/options (see bdrv_co_open) with `flags` (BDRV_O_*).
    // The backend takes CONSISTENT_READ, plus WRITE with BDRV_O_RDWR and
    // RESIZE with BDRV_O_RESIZE; it shares everything unless BDRV_O_NO_SHARE.
    // No filename (--image-opts) differs from an empty one ('').
    static std::unique_ptr<BlockBackend> open(std::optional<std::string> filename, QDict options,
                                              int flags, AioContext& ctx, Error& err);
    explicit BlockBackend(std::shared_ptr<BlockDriverState> root);
    ~BlockBackend();

    BlockDriverState* bs() const { return root_.bs.get(); }
    AioContext& ctx() const { return root_.bs->ctx(); }
    BdrvChild* root() { return &root_; }
    uint64_t getlength() const { return root_.bs->total_bytes(); }
    bool is_read_only() const { return root_.bs->read_only(); }

    // The permissions the backend holds and shares (BLK_PERM_*).
    uint64_t perm() const { return root_.perm; }
    uint64_t shared_perm() const { return root_.shared; }
    // Changes them, as QEMU's blk_set_perm(): writing needs a writable
    // node, and taking more may conflict with other users of the image
    // (image locks); on failure err says why.
    int set_perm(uint64_t perm, uint64_t shared, Error& err)
    {
        if ((perm & BLK_PERM_WRITE) && is_read_only()) {
            err.set("Block node is read-only");
            return -EPERM;
        }
        int ret = root_.bs->update_permissions(perm, shared, err);
        if (ret < 0) {
            return ret;
        }
        root_.perm = perm;
        root_.shared = shared;
        return 0;
    }

    // Requests outside [0, length) fail with -EIO.  Writes, write-zeroes,
    // discards and zone operations on a read-only backend fail with -EPERM
    // ("Operation not permitted"), as QEMU's block layer returns for them;
    // only a truncate fails with -EACCES ("Image is read-only"), as in QEMU.
    // Zone rule violations are zone error result codes
    // (include/block/zone-error.h), never errnos.
    Task<int> co_preadv(uint64_t offset, uint64_t bytes, IOVector& qiov, unsigned flags = 0);
    Task<int> co_pwritev(uint64_t offset, uint64_t bytes, IOVector& qiov, unsigned flags = 0);
    Task<int> co_pwrite_zeroes(uint64_t offset, uint64_t bytes, unsigned flags = 0);
    Task<int> co_pdiscard(uint64_t offset, uint64_t bytes);
    Task<int> co_flush();
    Task<int> co_truncate(uint64_t offset, bool exact, PreallocMode prealloc, unsigned flags,
                          Error& err);

    // The zoned API (include/block/zoned.h); -ENOTSUP on non-zoned nodes.
    Task<int> co_zone_report(uint64_t offset, uint32_t& nr_zones, BlockZoneDescriptor* zones);
    Task<int> co_zone_mgmt(BlockZoneOp op, uint64_t offset, uint64_t len);
    Task<int> co_zone_append(uint64_t& offset, IOVector& qiov, unsigned flags = 0);
    // Zone descriptor extensions: limits().zone_desc_ext_size bytes.
    Task<int> co_zone_set_desc_ext(uint64_t offset, const uint8_t* data);
    Task<int> co_zone_get_desc_ext(uint64_t offset, uint8_t* data);

    int pread(uint64_t offset, uint64_t bytes, void* buf, unsigned flags = 0);
    int pwrite(uint64_t offset, uint64_t bytes, const void* buf, unsigned flags = 0);
    int flush();

private:
    int check_request(uint64_t offset, uint64_t bytes) const;

    BdrvChild root_;
};

}  // namespace qemu
