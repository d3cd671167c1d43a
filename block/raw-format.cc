// The raw format: guest bytes are file bytes, optionally a window of the
// file (offset/size).  A pass-through node, so it forwards the child's zoned
// geometry and limits upward (upstream QEMU's raw driver drops them).
#include "block/block_int.h"

namespace qemu {

namespace {

constexpr uint64_t kProbeSectorBytes = 512;

class RawState : public BlockDriverState {
public:
    using BlockDriverState::BlockDriverState;

    Task<int> drv_open(QDict& options, Error& err) override;
    Task<int> drv_preadv(uint64_t offset, uint64_t bytes, IOVector& qiov, size_t qiov_offset,
                         unsigned flags) override
    {
        co_return co_await bdrv_co_preadv(file(), offset + offset_, bytes, qiov, qiov_offset, flags);
    }
    Task<int> drv_pwritev(uint64_t offset, uint64_t bytes, IOVector& qiov, size_t qiov_offset,
                          unsigned flags) override;
    unsigned supported_write_flags() const override { return BDRV_REQ_FUA; }
    unsigned supported_zero_flags() const override
    {
        return BDRV_REQ_FUA | BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK;
    }
    Task<int> drv_pwrite_zeroes(uint64_t offset, uint64_t bytes, unsigned flags) override
    {
        co_return co_await bdrv_co_pwrite_zeroes(file(), offset + offset_, bytes, flags);
    }
    Task<int> drv_pdiscard(uint64_t offset, uint64_t bytes) override
    {
        co_return co_await bdrv_co_pdiscard(file(), offset + offset_, bytes);
    }
    Task<int> drv_truncate(uint64_t offset, bool exact, PreallocMode prealloc, unsigned flags,
                           Error& err) override
    {
        if (has_size_ || offset_ != 0) {
            err.set("Cannot resize fixed-size raw disks");
            co_return -ENOTSUP;
        }
        int ret = co_await bdrv_co_truncate(file(), offset, exact, prealloc, flags, err);
        if (ret >= 0) {
            set_total_bytes(file()->bs->total_bytes());
        }
        co_return ret;
    }
    Task<int> drv_block_status(bool, uint64_t offset, uint64_t bytes, BlockStatus& out) override
    {
        out.pnum = bytes;
        out.flags = BDRV_BLOCK_RAW | BDRV_BLOCK_OFFSET_VALID;
        out.map = offset + offset_;
        out.file = file()->bs.get();
        co_return 0;
    }
    void drv_refresh_limits(BlockLimits& bl) override
    {
        if (forwards_zones()) {
            bl.inherit_zoned(file()->bs->limits());
        }
        if (probed_raw_) {
            // Writes to the first sector must be whole so they can be
            // checked (see drv_pwritev).
            bl.request_alignment = std::max<uint32_t>(bl.request_alignment, kProbeSectorBytes);
        }
    }
    void drv_child_perm(const BdrvChild&, uint64_t parent_perm, uint64_t parent_shared,
                        uint64_t& perm, uint64_t& shared) const override
    {
        perm = parent_perm;
        shared = parent_shared | BLK_PERM_WRITE_UNCHANGED;
    }
    // What the file knows (QEMU's raw_get_info): null-co, say, has nothing.
    int drv_get_info(BlockDriverInfo& info) override { return file()->bs->drv_get_info(info); }
    bool drv_has_zero_init() override { return file()->bs->drv_has_zero_init(); }
    // A window (offset/size) would shift zone boundaries: only the whole
    // file passes zones through.
    bool forwards_zones() const override { return offset_ == 0 && !has_size_; }
    // QEMU's raw has no format-specific data; a zoned file's geometry shows
    // through, as its zones do.
    void drv_get_specific_info(nlohmann::ordered_json& info) const override
    {
        if (forwards_zones() && limits().zoned != BlockZoneModel::None) {
            file()->bs->drv_get_specific_info(info);
        }
    }

private:
    uint64_t offset_ = 0;
    bool has_size_ = false;
};

Task<int> RawState::drv_open(QDict& options, Error& err)
{
    auto offset = take_size(options, "offset", 0, err);
    if (!offset) {
        co_return -EINVAL;
    }
    std::optional<uint64_t> size;
    if (options.has("size")) {
        size = take_size(options, "size", 0, err);
        if (!size) {
            co_return -EINVAL;
        }
    }
    if (size && *size % 512) {
        err.set("Specified size is not multiple of 512");
        co_return -EINVAL;
    }
    if (!file()) {
        BdrvChild* c = co_await open_child("file", options, false, err);
        if (!c) {
            co_return -EINVAL;
        }
    }
    uint64_t file_size = file()->bs->total_bytes();
    if (*offset > file_size) {
        err.set("Offset (%llu) cannot be greater than size of the containing file (%llu)",
                (unsigned long long)*offset, (unsigned long long)file_size);
        co_return -EINVAL;
    }
    if (size && *size > file_size - *offset) {
        err.set("The sum of offset (%llu) and size (%llu) has to be smaller or equal to the  actual "
                "size of the containing file (%llu)",
                (unsigned long long)*offset, (unsigned long long)*size,
                (unsigned long long)file_size);
        co_return -EINVAL;
    }
    offset_ = *offset;
    has_size_ = size.has_value();
    set_total_bytes(size ? *size : file_size - *offset);
    co_return 0;
}

Task<int> RawState::drv_pwritev(uint64_t offset, uint64_t bytes, IOVector& qiov, size_t qiov_offset,
                                unsigned flags)
{
    if (probed_raw_ && offset < kProbeSectorBytes) {
        // A raw image found by probing must not become something a later
        // probe would take for another format (QEMU's guard against guests
        // writing a qcow2 header into their disk).
        uint8_t head[kProbeSectorBytes];
        qiov.to_buf(qiov_offset, head, kProbeSectorBytes);
        for (const BlockDriver* d : bdrv_drivers()) {
            if (!d->is_protocol() && d != &drv() && d->probe(head, sizeof(head), "") > 0) {
                co_return -EPERM;
            }
        }
    }
    co_return co_await bdrv_co_pwritev(file(), offset + offset_, bytes, qiov, qiov_offset, flags);
}

class RawDriver : public BlockDriver {
public:
    std::string_view name() const override { return "raw"; }
    const OptionSchema& open_schema() const override
    {
        static const OptionSchema schema = {
            {"offset", OptionType::Size, "offset in the disk where the image starts", ""},
            {"size", OptionType::Size, "virtual disk size", ""},
        };
        return schema;
    }
    std::vector<std::string> strong_options() const override { return {"offset", "size"}; }
    const OptionSchema* create_schema() const override
    {
        static const OptionSchema schema = {
            {"size", OptionType::Size, "Virtual disk size", ""},
        };
        return &schema;
    }
    // The lowest possible score: anything is raw, but any real format wins.
    int probe(const uint8_t*, size_t, const std::string&) const override { return 1; }
    Task<int> co_create(const std::string& filename, QDict& opts, AioContext& ctx,
                        Error& err) const override
    {
        co_return co_await bdrv_co_create_file(filename, opts, ctx, err);
    }
    // Every byte of the disk is in the file, allocated or not (QEMU's
    // raw_measure()): the source's whole size, or the size in sectors.
    Task<int> co_measure(QDict& opts, BlockDriverState* in_bs, BlockMeasureInfo& out,
                         Error& err) const override
    {
        if (in_bs) {
            out.required = in_bs->total_bytes();
        } else {
            auto size = take_size(opts, "size", 0, err);
            if (!size) {
                co_return -EINVAL;
            }
            out.required = (*size + 511) / 512 * 512;
        }
        out.fully_allocated = out.required;
        co_return 0;
    }
    std::shared_ptr<BlockDriverState> new_node(AioContext& ctx) const override
    {
        return std::make_shared<RawState>(*this, ctx);
    }
};

}  // namespace

const BlockDriver& bdrv_raw_driver()
{
    static const RawDriver driver;
    return driver;
}

}  // namespace qemu
