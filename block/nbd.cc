// The `nbd` protocol driver: a node whose data lives in an export of an
// NBD server (QEMU's block/nbd.c without reconnection or TLS).  The file
// names it takes are in nbd-uri.cc, the handshake and the transmission
// phase in nbd-client-*.cc; this file maps block-layer requests onto NBD
// commands and the server's promises onto the node's limits.
#include <algorithm>
#include <cerrno>
#include <climits>
#include <memory>
#include <vector>
#include <unistd.h>

#include "block/block_int.h"
#include "nbd-client.h"
#include "nbd-uri.h"
#include "qemu/sockets.h"

namespace qemu {

namespace {

using namespace nbd;

// QEMU's messages for an incomplete server address.
bool check_server_keys(const QDict& options, Error& err)
{
    const std::string* type = options.get("server.type");
    if (!type) {
        err.set("NBD server address missing");
        return false;
    }
    std::vector<std::string> keys;
    if (*type == "inet") {
        keys = {"host", "port"};
    } else if (*type == "unix") {
        keys = {"path"};
    }
    for (const std::string& key : keys) {
        if (!options.has("server." + key)) {
            err.set("Parameter '%s' is missing", key.c_str());
            return false;
        }
    }
    return true;
}

class NbdState : public BlockDriverState {
public:
    using BlockDriverState::BlockDriverState;

    ~NbdState() override = default;

    Task<int> drv_open(QDict& options, Error& err) override;
    Task<int> drv_preadv(uint64_t offset, uint64_t bytes, IOVector& qiov, size_t qiov_offset,
                         unsigned flags) override;
    Task<int> drv_pwritev(uint64_t offset, uint64_t bytes, IOVector& qiov, size_t qiov_offset,
                          unsigned flags) override;
    unsigned supported_write_flags() const override
    {
        return has(kFlagSendFua) ? unsigned(BDRV_REQ_FUA) : 0u;
    }
    unsigned supported_zero_flags() const override;
    Task<int> drv_pwrite_zeroes(uint64_t offset, uint64_t bytes, unsigned flags) override;
    Task<int> drv_pdiscard(uint64_t offset, uint64_t bytes) override;
    // QEMU flushes an NBD node at its flush_to_os step: the server's
    // cache is the OS cache we write to.
    Task<int> drv_flush_to_os() override;
    Task<int> drv_truncate(uint64_t offset, bool exact, PreallocMode prealloc, unsigned flags,
                           Error& err) override;
    Task<int> drv_block_status(bool want_zero, uint64_t offset, uint64_t bytes,
                               BlockStatus& out) override;
    void drv_refresh_limits(BlockLimits& bl) override;
    std::string drv_exact_filename() const override { return uri_; }
    // A drained connection has nothing pending in the old context: it only
    // needs to know its new one.
    void drv_attach_aio_context(AioContext& new_ctx) override
    {
        if (conn_) {
            conn_->set_context(new_ctx);
        }
    }
    Task<void> drv_close() override;

private:
    bool has(uint16_t flag) const { return conn_ && (conn_->info().flags & flag); }
    // Bytes of [offset, offset + bytes) inside the export: the node's size
    // is rounded up to whole sectors, the server's need not be.
    uint64_t in_export(uint64_t offset, uint64_t bytes) const
    {
        uint64_t size = conn_->info().size;
        return offset >= size ? 0 : std::min(bytes, size - offset);
    }

    std::unique_ptr<ClientConnection> conn_;
    std::string uri_;
};

Task<int> NbdState::drv_open(QDict& options, Error& err)
{
    SocketAddress addr;
    if (!check_server_keys(options, err) || !socket_address_take(options, "server.", addr, err)) {
        co_return -EINVAL;
    }
    std::optional<std::string> exp = options.take("export");
    if (auto delay = take_number(options, "reconnect-delay", 0, err); !delay) {
        co_return -EINVAL;
    } else if (*delay) {
        err.set("reconnect-delay is not supported: this client never reconnects");
        co_return -ENOTSUP;
    }
    if (options.has("tls-creds")) {
        err.set("TLS is not supported by this NBD client");
        co_return -ENOTSUP;
    }
    int fd = socket_connect(addr, err);
    if (fd < 0) {
        co_return fd;
    }
    ExportInfo info;
    int r = co_await client_negotiate(ctx(), fd, exp.value_or(""), info, err);
    if (r < 0) {
        ::close(fd);
        co_return r;
    }
    conn_ = std::make_unique<ClientConnection>(ctx(), fd, info);
    if ((info.flags & kFlagReadOnly) && !read_only()) {
        co_await conn_->close();
        conn_.reset();
        err.set("NBD export is read-only");
        co_return -EACCES;
    }
    uri_ = uri_for(addr, exp);
    set_total_bytes(info.size);
    co_return 0;
}

void NbdState::drv_refresh_limits(BlockLimits& bl)
{
    const ExportInfo& info = conn_->info();
    uint32_t min = info.min_block;
    if (!min) {
        // QEMU's guess when the server is silent: byte granularity is safe
        // where the size is unaligned or block status works in bytes.
        min = (info.size % 512 || info.base_allocation) ? 1 : 512;
    }
    uint64_t max = info.max_block ? std::min(info.max_block, kMaxBufferSize) : kMaxBufferSize;
    bl.request_alignment = min;
    bl.max_transfer = max / min * min;
    bl.opt_transfer = std::max<uint64_t>(bl.opt_transfer, info.opt_block);
    // Compact requests carry 32-bit lengths; extended ones need no cap.
    bl.max_pdiscard = info.extended ? 0 : uint64_t(INT_MAX) / min * min;
    bl.max_pwrite_zeroes = info.extended ? 0 : bl.max_pdiscard;
}

Task<int> NbdState::drv_preadv(uint64_t offset, uint64_t bytes, IOVector& qiov,
                               size_t qiov_offset, unsigned)
{
    uint64_t n = in_export(offset, bytes);
    if (n < bytes) {
        qiov.memset(qiov_offset + n, 0, bytes - n);  // the sector tail past the export
    }
    if (n == 0) {
        co_return 0;
    }
    co_return co_await conn_->read(offset, n, qiov, qiov_offset);
}

Task<int> NbdState::drv_pwritev(uint64_t offset, uint64_t bytes, IOVector& qiov,
                                size_t qiov_offset, unsigned flags)
{
    if (in_export(offset, bytes) != bytes) {
        co_return -EIO;  // the server cannot store past its end
    }
    uint16_t cmd_flags = (flags & BDRV_REQ_FUA) ? kCmdFlagFua : 0;
    co_return co_await conn_->write(offset, bytes, qiov, qiov_offset, cmd_flags);
}

unsigned NbdState::supported_zero_flags() const
{
    if (!has(kFlagSendWriteZeroes)) {
        return 0;
    }
    unsigned f = BDRV_REQ_MAY_UNMAP;
    f |= has(kFlagSendFua) ? unsigned(BDRV_REQ_FUA) : 0u;
    f |= has(kFlagSendFastZero) ? unsigned(BDRV_REQ_NO_FALLBACK) : 0u;
    return f;
}

Task<int> NbdState::drv_pwrite_zeroes(uint64_t offset, uint64_t bytes, unsigned flags)
{
    if (!has(kFlagSendWriteZeroes) ||
        ((flags & BDRV_REQ_NO_FALLBACK) && !has(kFlagSendFastZero))) {
        co_return -ENOTSUP;
    }
    if (in_export(offset, bytes) != bytes) {
        co_return -EIO;
    }
    uint16_t cmd_flags = 0;
    cmd_flags |= (flags & BDRV_REQ_FUA) ? kCmdFlagFua : 0;
    cmd_flags |= (flags & BDRV_REQ_MAY_UNMAP) ? 0 : kCmdFlagNoHole;
    cmd_flags |= (flags & BDRV_REQ_NO_FALLBACK) ? kCmdFlagFastZero : 0;
    co_return co_await conn_->command(kCmdWriteZeroes, cmd_flags, offset, bytes);
}

Task<int> NbdState::drv_pdiscard(uint64_t offset, uint64_t bytes)
{
    uint64_t n = in_export(offset, bytes);
    if (!has(kFlagSendTrim) || n == 0) {
        co_return 0;  // discard is advisory
    }
    co_return co_await conn_->command(kCmdTrim, 0, offset, n);
}

Task<int> NbdState::drv_flush_to_os()
{
    if (!has(kFlagSendFlush)) {
        co_return 0;
    }
    co_return co_await conn_->command(kCmdFlush, 0, 0, 0);
}

Task<int> NbdState::drv_truncate(uint64_t offset, bool exact, PreallocMode, unsigned, Error& err)
{
    // As QEMU: the size is the server's; only a no-op or a shrink that
    // need not be exact is accepted.
    if (offset != total_bytes() && exact) {
        err.set("Cannot resize NBD nodes");
        co_return -ENOTSUP;
    }
    if (offset > total_bytes()) {
        err.set("Cannot grow NBD nodes");
        co_return -EINVAL;
    }
    co_return 0;
}

Task<int> NbdState::drv_block_status(bool, uint64_t offset, uint64_t bytes, BlockStatus& out)
{
    out.map = offset;
    out.file = this;
    uint64_t n = in_export(offset, bytes);
    if (n == 0) {
        out.pnum = bytes;  // the sector tail past the export reads as zeroes
        out.flags = BDRV_BLOCK_ZERO | BDRV_BLOCK_OFFSET_VALID;
        co_return 0;
    }
    if (!conn_->info().base_allocation) {
        out.pnum = n;
        out.flags = BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID;
        co_return 0;
    }
    uint64_t align = limits().request_alignment;
    uint64_t len = conn_->info().extended ? n : std::min<uint64_t>(n, INT_MAX / align * align);
    uint64_t ext_len = 0;
    uint32_t state = 0;
    int r = co_await conn_->block_status(offset, len, ext_len, state);
    if (r < 0) {
        co_return r;
    }
    out.pnum = ext_len;
    out.flags = ((state & kStateHole) ? 0u : unsigned(BDRV_BLOCK_DATA)) |
                ((state & kStateZero) ? unsigned(BDRV_BLOCK_ZERO) : 0u) | BDRV_BLOCK_OFFSET_VALID;
    co_return 0;
}

Task<void> NbdState::drv_close()
{
    if (conn_) {
        co_await conn_->close();
    }
}

class NbdDriver : public BlockDriver {
public:
    std::string_view name() const override { return "nbd"; }
    bool is_protocol() const override { return true; }
    std::string_view protocol_prefix() const override { return "nbd"; }
    bool claims_prefix(std::string_view prefix) const override
    {
        return prefix == "nbd" || prefix == "nbd+tcp" || prefix == "nbd+unix";
    }
    bool needs_filename() const override { return false; }
    bool parse_filename(const std::string& filename, QDict& options, Error& err) const override
    {
        return nbd::parse_filename(filename, options, err);
    }
    const OptionSchema& open_schema() const override
    {
        static const OptionSchema schema = {
            {"export", OptionType::String, "Name of the NBD export to open", ""},
            {"server.type", OptionType::String, "Transport: inet or unix", ""},
            {"server.host", OptionType::String, "Host name or address (inet)", ""},
            {"server.port", OptionType::String, "Port number or service name (inet)", ""},
            {"server.path", OptionType::String, "Socket path (unix)", ""},
            {"reconnect-delay", OptionType::Number, "Reconnection delay (only 0)", "0"},
        };
        return schema;
    }
    std::shared_ptr<BlockDriverState> new_node(AioContext& ctx) const override
    {
        return std::make_shared<NbdState>(*this, ctx);
    }
};

}  // namespace

const BlockDriver& bdrv_nbd_driver()
{
    static const NbdDriver driver;
    return driver;
}

}  // namespace qemu
