#include "mem-driver.h"

namespace qemu::test {

namespace {
struct Yield {
    AioContext& ctx;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) { ctx.schedule(h); }
    void await_resume() const noexcept {}
};
}  // namespace

Task<int> MemState::drv_open(QDict& options, Error& err)
{
    auto size = take_size(options, "size", 1 << 20, err);
    auto align = take_number(options, "align", 1, err);
    auto max_transfer = take_size(options, "max-transfer", 0, err);
    auto fua = take_bool(options, "fua", false, err);
    auto zeroes = take_bool(options, "write-zeroes", false, err);
    auto zone_size = take_size(options, "zone-size", 0, err);
    if (!size || !align || !max_transfer || !fua || !zeroes || !zone_size) {
        co_return -EINVAL;
    }
    data.assign(*size, 0);
    align_ = uint32_t(*align);
    max_transfer_ = *max_transfer;
    fua_ = *fua;
    zeroes_ = *zeroes;
    if (*zone_size) {
        zoned_.zoned = BlockZoneModel::HostManaged;
        zoned_.zone_size = *zone_size;
        zoned_.zone_capacity = *zone_size;
        zoned_.nr_zones = uint32_t(*size / *zone_size);
        zoned_.max_open_zones = 4;
        zoned_.max_active_zones = 8;
        zoned_.max_append_bytes = 65536;
        zoned_.write_granularity = 512;
    }
    set_total_bytes(*size);
    co_return 0;
}

Task<void> MemState::maybe_yield()
{
    in_flight++;
    max_in_flight = std::max(max_in_flight, in_flight);
    if (yield_in_io) {
        co_await Yield{ctx()};
    }
    in_flight--;
}

Task<int> MemState::drv_preadv(uint64_t offset, uint64_t bytes, IOVector& qiov, size_t qiov_offset,
                               unsigned flags)
{
    log.push_back({'r', offset, bytes, flags});
    co_await maybe_yield();
    qiov.from_buf(qiov_offset, data.data() + offset, bytes);
    co_return 0;
}

Task<int> MemState::drv_pwritev(uint64_t offset, uint64_t bytes, IOVector& qiov, size_t qiov_offset,
                                unsigned flags)
{
    log.push_back({'w', offset, bytes, flags});
    co_await maybe_yield();
    qiov.to_buf(qiov_offset, data.data() + offset, bytes);
    co_return 0;
}

Task<int> MemState::drv_pwrite_zeroes(uint64_t offset, uint64_t bytes, unsigned flags)
{
    if (!zeroes_) {
        co_return -ENOTSUP;
    }
    log.push_back({'z', offset, bytes, flags});
    memset(data.data() + offset, 0, bytes);
    co_return 0;
}

Task<int> MemState::drv_pdiscard(uint64_t offset, uint64_t bytes)
{
    log.push_back({'d', offset, bytes, 0});
    co_return 0;
}

Task<int> MemState::drv_flush_to_disk()
{
    log.push_back({'f', 0, 0, 0});
    co_return 0;
}

void MemState::drv_refresh_limits(BlockLimits& bl)
{
    bl.request_alignment = align_;
    bl.max_transfer = max_transfer_;
    bl.inherit_zoned(zoned_);
}

namespace {
class MemDriver : public BlockDriver {
public:
    std::string_view name() const override { return "test-mem"; }
    bool is_protocol() const override { return true; }
    std::string_view protocol_prefix() const override { return "test-mem"; }
    bool needs_filename() const override { return false; }
    const OptionSchema& open_schema() const override
    {
        static const OptionSchema schema = {
            {"size", OptionType::Size, "", ""},
            {"align", OptionType::Number, "", ""},
            {"max-transfer", OptionType::Size, "", ""},
            {"fua", OptionType::Bool, "", ""},
            {"write-zeroes", OptionType::Bool, "", ""},
            {"zone-size", OptionType::Size, "", ""},
        };
        return schema;
    }
    std::shared_ptr<BlockDriverState> new_node(AioContext& ctx) const override
    {
        return std::make_shared<MemState>(*this, ctx);
    }
};
}  // namespace

const BlockDriver& mem_driver()
{
    static const MemDriver driver;
    bdrv_init();
    bdrv_register(&driver);
    return driver;
}

}  // namespace qemu::test
