// null-co: a protocol node that stores nothing.  Writes vanish, reads return
// zeroes only with read-zeroes=on (otherwise the buffer is left alone, the
// cheapest possible read).  It measures the cost of the block layer itself.
#include "block/block_int.h"

namespace qemu {

namespace {

class NullState : public BlockDriverState {
public:
    using BlockDriverState::BlockDriverState;

    Task<int> drv_open(QDict& options, Error& err) override
    {
        auto size = take_size(options, "size", 1ULL << 30, err);
        auto latency = take_number(options, "latency-ns", 0, err);
        auto zeroes = take_bool(options, "read-zeroes", false, err);
        if (!size || !latency || !zeroes) {
            co_return -EINVAL;
        }
        // Sizes are whole sectors, as in QEMU.
        *size = (*size + 511) / 512 * 512;
        latency_ns_ = int64_t(*latency);
        read_zeroes_ = *zeroes;
        set_total_bytes(*size);
        co_return 0;
    }
    Task<int> drv_preadv(uint64_t, uint64_t bytes, IOVector& qiov, size_t qiov_offset,
                         unsigned) override
    {
        if (read_zeroes_) {
            qiov.memset(qiov_offset, 0, bytes);
        }
        co_return co_await delay();
    }
    Task<int> drv_pwritev(uint64_t, uint64_t, IOVector&, size_t, unsigned) override
    {
        co_return co_await delay();
    }
    unsigned supported_write_flags() const override { return BDRV_REQ_FUA; }
    Task<int> drv_pwrite_zeroes(uint64_t, uint64_t, unsigned) override
    {
        co_return co_await delay();
    }
    Task<int> drv_flush_to_disk() override { co_return co_await delay(); }
    Task<int> drv_block_status(bool, uint64_t offset, uint64_t bytes, BlockStatus& out) override
    {
        out.pnum = bytes;
        out.map = offset;
        out.file = this;
        out.flags = BDRV_BLOCK_OFFSET_VALID | (read_zeroes_ ? unsigned(BDRV_BLOCK_ZERO) : 0u);
        co_return 0;
    }
    Task<int64_t> drv_get_allocated_file_size() override { co_return 0; }

private:
    Task<int> delay()
    {
        if (latency_ns_ > 0) {
            co_await ctx().sleep_ns(latency_ns_);
        }
        co_return 0;
    }

    int64_t latency_ns_ = 0;
    bool read_zeroes_ = false;
};

// null-co and null-aio differ in QEMU only in how they complete requests
// internally; here both are the same coroutine driver under two names.
class NullDriver : public BlockDriver {
public:
    explicit NullDriver(std::string_view name) : name_(name) {}
    std::string_view name() const override { return name_; }
    bool is_protocol() const override { return true; }
    std::string_view protocol_prefix() const override { return name_; }
    bool needs_filename() const override { return false; }
    // The name selects the driver and carries nothing else.
    bool parse_filename(const std::string& filename, QDict&, Error& err) const override
    {
        std::string only = std::string(name_) + "://";
        if (filename != only) {
            err.set("The only allowed filename for this driver is '%s'", only.c_str());
            return false;
        }
        return true;
    }
    std::vector<std::string> strong_options() const override
    {
        return {"size", "read-zeroes", "latency-ns"};
    }
    const OptionSchema& open_schema() const override
    {
        static const OptionSchema schema = {
            {"size", OptionType::Size, "size of the null block", "1073741824"},
            {"latency-ns", OptionType::Number, "nanoseconds (approximated) to wait before completing request", "0"},
            {"read-zeroes", OptionType::Bool, "return zeroes when read", "off"},
        };
        return schema;
    }
    std::shared_ptr<BlockDriverState> new_node(AioContext& ctx) const override
    {
        return std::make_shared<NullState>(*this, ctx);
    }

private:
    std::string_view name_;
};

}  // namespace

const BlockDriver& bdrv_null_co_driver()
{
    static const NullDriver driver("null-co");
    return driver;
}

const BlockDriver& bdrv_null_aio_driver()
{
    static const NullDriver driver("null-aio");
    return driver;
}

}  // namespace qemu
