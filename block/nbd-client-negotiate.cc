// The NBD client's handshake (see nbd-client.h): fixed newstyle, option
// haggling as QEMU's client does it, and the checks QEMU makes on what the
// server says.
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "nbd-client.h"
#include "qemu/bswap.h"
#include "qemu/sockets.h"

namespace qemu::nbd {

namespace {

constexpr uint64_t kOldstyleMagic = 0x0000420281861253ULL;

bool is_power_of_2(uint32_t v) { return v && !(v & (v - 1)); }

// QEMU's nbd_opt_lookup(): how messages name an option.
const char* opt_name(uint32_t opt)
{
    switch (opt) {
    case kOptExportName: return "export name";
    case kOptAbort: return "abort";
    case kOptList: return "list";
    case kOptStartTls: return "starttls";
    case kOptInfo: return "info";
    case kOptGo: return "go";
    case kOptStructuredReply: return "structured reply";
    case kOptListMetaContext: return "list meta context";
    case kOptSetMetaContext: return "set meta context";
    case kOptExtendedHeaders: return "extended headers";
    default: return "<unknown>";
    }
}

struct OptionReply {
    uint32_t type = 0;
    std::vector<uint8_t> data;
};

// One handshake on one socket; err collects the first failure.
class Negotiation {
public:
    Negotiation(AioContext& ctx, int fd, Error& err) : ctx_(ctx), fd_(fd), err_(err) {}

    Task<int> run(const std::string& name, ExportInfo& info);

private:
    Task<int> recv(void* buf, size_t len, const char* what);
    Task<int> send_option(uint32_t opt, const std::vector<uint8_t>& payload);
    Task<int> recv_reply(uint32_t opt, OptionReply& reply);
    int reply_error(uint32_t opt, const OptionReply& reply);
    Task<int> simple_option(uint32_t opt);
    Task<int> set_meta_context(const std::string& name, ExportInfo& info);
    Task<int> go(const std::string& name, ExportInfo& info);
    int parse_info(const OptionReply& reply, ExportInfo& info, bool& got_export);
    Task<int> export_name(const std::string& name, bool zeroes, ExportInfo& info);

    AioContext& ctx_;
    int fd_;
    Error& err_;
};

Task<int> Negotiation::recv(void* buf, size_t len, const char* what)
{
    ssize_t r = co_await co_recv_full(ctx_, fd_, buf, len);
    if (r < 0) {
        err_.set_errno(int(-r), "Failed to read %s", what);
        co_return int(r);
    }
    if (size_t(r) != len) {
        err_.set("Failed to read %s: Unexpected end-of-file before all data were read", what);
        co_return -EIO;
    }
    co_return 0;
}

Task<int> Negotiation::send_option(uint32_t opt, const std::vector<uint8_t>& payload)
{
    uint8_t hdr[kOptionHeaderSize];
    store_be64(hdr, kOptsMagic);
    store_be32(hdr + 8, opt);
    store_be32(hdr + 12, uint32_t(payload.size()));
    iovec iov[2] = {{hdr, sizeof(hdr)}, {const_cast<uint8_t*>(payload.data()), payload.size()}};
    int r = co_await co_send_full(ctx_, fd_, iov, 2);
    if (r < 0) {
        err_.set_errno(-r, "Failed to send option request %u", opt);
    }
    co_return r;
}

// Reads one option reply, payload included, and checks that it answers opt.
Task<int> Negotiation::recv_reply(uint32_t opt, OptionReply& reply)
{
    uint8_t hdr[kOptionReplyHeaderSize];
    int r = co_await recv(hdr, sizeof(hdr), "option reply");
    if (r < 0) {
        co_return r;
    }
    if (load_be64(hdr) != kRepMagic) {
        err_.set("Unexpected option reply magic");
        co_return -EINVAL;
    }
    if (load_be32(hdr + 8) != opt) {
        err_.set("Unexpected option type %u (%s), expected %u (%s)", load_be32(hdr + 8),
                 opt_name(load_be32(hdr + 8)), opt, opt_name(opt));
        co_return -EINVAL;
    }
    reply.type = load_be32(hdr + 12);
    uint32_t len = load_be32(hdr + 16);
    if (len > kMaxBufferSize) {
        err_.set("server's reply to option %u (%s) is too long (%u bytes)", opt, opt_name(opt),
                 len);
        co_return -EINVAL;
    }
    reply.data.resize(len);
    co_return co_await recv(reply.data.data(), len, "option reply payload");
}

// 1 for a success reply, 0 for ERR_UNSUP (the caller falls back), or
// -EINVAL with err set for any other error (the server's text as a hint).
int Negotiation::reply_error(uint32_t opt, const OptionReply& reply)
{
    if (!(reply.type & kRepErrBit)) {
        return 1;
    }
    switch (reply.type) {
    case kRepErrUnsup:
        return 0;
    case kRepErrPolicy:
        err_.set("Denied by server for option %u (%s)", opt, opt_name(opt));
        break;
    case kRepErrInvalid:
        err_.set("Invalid parameters for option %u (%s)", opt, opt_name(opt));
        break;
    case kRepErrPlatform:
        err_.set("Server lacks support for option %u (%s)", opt, opt_name(opt));
        break;
    case kRepErrTlsReqd:
        err_.set("TLS negotiation required before option %u (%s)", opt, opt_name(opt));
        err_.add_hint("Did you forget a valid tls-creds?");
        break;
    case kRepErrUnknown:
        err_.set("Requested export not available");
        break;
    case kRepErrShutdown:
        err_.set("Server shutting down before option %u (%s)", opt, opt_name(opt));
        break;
    case kRepErrBlockSizeReqd:
        err_.set("Server requires INFO_BLOCK_SIZE for option %u (%s)", opt, opt_name(opt));
        break;
    case kRepErrTooBig:
        err_.set("Server considers option %u (%s) too large", opt, opt_name(opt));
        break;
    case kRepErrExtHeaderReqd:
        err_.set("Server wants extended headers before option %u (%s)", opt, opt_name(opt));
        break;
    default:
        err_.set("Unknown error code when asking for option %u (%s)", opt, opt_name(opt));
        break;
    }
    if (!reply.data.empty()) {
        err_.add_hint("server reported: " +
                      std::string(reply.data.begin(), reply.data.end()));
    }
    return -EINVAL;
}

// An option without payload answered by a bare ACK (STRUCTURED_REPLY,
// EXTENDED_HEADERS): 1 acknowledged, 0 unsupported, or -errno.
Task<int> Negotiation::simple_option(uint32_t opt)
{
    int r = co_await send_option(opt, {});
    OptionReply reply;
    if (r >= 0) {
        r = co_await recv_reply(opt, reply);
    }
    if (r < 0) {
        co_return r;
    }
    r = reply_error(opt, reply);
    if (r <= 0) {
        // Any refusal of an optional feature only means doing without it.
        err_.clear();
        co_return 0;
    }
    if (reply.type != kRepAck || !reply.data.empty()) {
        err_.set("Unexpected reply type %u (length %zu) to option %u (%s)", reply.type,
                 reply.data.size(), opt, opt_name(opt));
        co_return -EINVAL;
    }
    co_return 1;
}

void put_string(std::vector<uint8_t>& out, const std::string& s)
{
    uint8_t len[4];
    store_be32(len, uint32_t(s.size()));
    out.insert(out.end(), len, len + 4);
    out.insert(out.end(), s.begin(), s.end());
}

Task<int> Negotiation::set_meta_context(const std::string& name, ExportInfo& info)
{
    std::vector<uint8_t> payload;
    put_string(payload, name);
    uint8_t n[4];
    store_be32(n, 1);
    payload.insert(payload.end(), n, n + 4);
    put_string(payload, kContextBaseAllocation);
    int r = co_await send_option(kOptSetMetaContext, payload);
    for (bool first = true; r >= 0; first = false) {
        OptionReply reply;
        r = co_await recv_reply(kOptSetMetaContext, reply);
        if (r < 0) {
            break;
        }
        r = reply_error(kOptSetMetaContext, reply);
        if (r <= 0) {
            co_return r;  // unsupported: no block status, as with QEMU
        }
        if (reply.type == kRepAck && reply.data.empty()) {
            co_return 0;
        }
        const std::string want = kContextBaseAllocation;
        if (reply.type != kRepMetaContext || !first || reply.data.size() != 4 + want.size() ||
            memcmp(reply.data.data() + 4, want.data(), want.size()) != 0) {
            err_.set("Unexpected reply type %u to option %u (%s)", reply.type,
                     unsigned(kOptSetMetaContext), opt_name(kOptSetMetaContext));
            co_return -EINVAL;
        }
        info.base_allocation = true;
        info.context_id = load_be32(reply.data.data());
    }
    co_return r;
}

// One NBD_REP_INFO: the export's size and flags, or its block sizes;
// other information is not asked for and ignored.
int Negotiation::parse_info(const OptionReply& reply, ExportInfo& info, bool& got_export)
{
    if (reply.data.size() < 2) {
        err_.set("Unexpected length %zu of NBD_REP_INFO", reply.data.size());
        return -EINVAL;
    }
    const uint8_t* p = reply.data.data();
    switch (load_be16(p)) {
    case kInfoExport:
        if (reply.data.size() != 12) {
            err_.set("Invalid length %zu of NBD_INFO_EXPORT", reply.data.size());
            return -EINVAL;
        }
        info.size = load_be64(p + 2);
        info.flags = load_be16(p + 10);
        got_export = true;
        return 0;
    case kInfoBlockSize:
        if (reply.data.size() != 14) {
            err_.set("Invalid length %zu of NBD_INFO_BLOCK_SIZE", reply.data.size());
            return -EINVAL;
        }
        info.min_block = load_be32(p + 2);
        info.opt_block = load_be32(p + 6);
        info.max_block = load_be32(p + 10);
        return 0;
    default:
        return 0;
    }
}

// GO: 1 in transmission, 0 when the server does not know GO, or -errno.
Task<int> Negotiation::go(const std::string& name, ExportInfo& info)
{
    std::vector<uint8_t> payload;
    put_string(payload, name);
    uint8_t req[4];
    store_be16(req, 1);
    store_be16(req + 2, kInfoBlockSize);
    payload.insert(payload.end(), req, req + 4);
    int r = co_await send_option(kOptGo, payload);
    bool got_export = false;
    while (r >= 0) {
        OptionReply reply;
        r = co_await recv_reply(kOptGo, reply);
        if (r < 0) {
            break;
        }
        r = reply_error(kOptGo, reply);
        if (r <= 0) {
            co_return r;
        }
        if (reply.type == kRepAck) {
            if (!reply.data.empty()) {
                err_.set("server sent invalid NBD_REP_ACK");
                co_return -EINVAL;
            }
            if (!got_export) {
                err_.set("broken server omitted NBD_INFO_EXPORT");
                co_return -EINVAL;
            }
            co_return 1;
        }
        if (reply.type != kRepInfo) {
            err_.set("unexpected reply type %u, expected %u", reply.type, unsigned(kRepInfo));
            co_return -EINVAL;
        }
        r = parse_info(reply, info, got_export);
    }
    co_return r;
}

Task<int> Negotiation::export_name(const std::string& name, bool zeroes, ExportInfo& info)
{
    int r = co_await send_option(kOptExportName, std::vector<uint8_t>(name.begin(), name.end()));
    uint8_t buf[10];
    if (r >= 0) {
        r = co_await recv(buf, sizeof(buf), "export length and flags");
    }
    if (r < 0) {
        co_return r;
    }
    info.size = load_be64(buf);
    info.flags = load_be16(buf + 8);
    if (zeroes) {
        uint8_t pad[124];
        r = co_await recv(pad, sizeof(pad), "reserved block");
    }
    co_return r;
}

Task<int> Negotiation::run(const std::string& name, ExportInfo& info)
{
    uint8_t hello[18];
    int r = co_await recv(hello, 16, "initial magic");
    if (r < 0) {
        co_return r;
    }
    if (load_be64(hello) != kInitPasswd) {
        err_.set("Invalid magic received");
        co_return -EINVAL;
    }
    if (load_be64(hello + 8) == kOldstyleMagic) {
        err_.set("Server uses the oldstyle handshake, which is not supported");
        co_return -ENOTSUP;
    }
    if (load_be64(hello + 8) != kOptsMagic) {
        err_.set("Bad server magic received");
        co_return -EINVAL;
    }
    r = co_await recv(hello + 16, 2, "server flags");
    if (r < 0) {
        co_return r;
    }
    uint16_t server_flags = load_be16(hello + 16);
    bool fixed = server_flags & kFlagFixedNewstyle;
    bool zeroes = !(server_flags & kFlagNoZeroes);
    uint8_t client_flags[4];
    store_be32(client_flags, (fixed ? kFlagCFixedNewstyle : 0) | (zeroes ? 0 : kFlagCNoZeroes));
    r = co_await co_send_full(ctx_, fd_, client_flags, 4);
    if (r < 0) {
        err_.set_errno(-r, "Failed to send clientflags field");
        co_return r;
    }
    if (!fixed) {
        // A plain newstyle server only knows EXPORT_NAME.
        co_return co_await export_name(name, zeroes, info);
    }
    r = co_await simple_option(kOptExtendedHeaders);
    if (r > 0) {
        info.extended = info.structured = true;
    } else if (r == 0) {
        r = co_await simple_option(kOptStructuredReply);
        info.structured = r > 0;
    }
    if (r >= 0 && info.structured) {
        r = co_await set_meta_context(name, info);
    }
    if (r >= 0) {
        r = co_await go(name, info);
        if (r == 0) {
            info.min_block = info.opt_block = info.max_block = 0;
            r = co_await export_name(name, zeroes, info);
        }
    }
    co_return r < 0 ? r : 0;
}

}  // namespace

Task<int> client_negotiate(AioContext& ctx, int fd, const std::string& name, ExportInfo& info,
                           Error& err)
{
    if (name.size() > kMaxStringSize) {
        err.set("export name too long to send to server");
        co_return -EINVAL;
    }
    Negotiation n(ctx, fd, err);
    int r = co_await n.run(name, info);
    if (r < 0) {
        // A courtesy to the server, as QEMU: we are not going on.
        uint8_t abort_opt[kOptionHeaderSize];
        store_be64(abort_opt, kOptsMagic);
        store_be32(abort_opt + 8, kOptAbort);
        store_be32(abort_opt + 12, 0);
        send(fd, abort_opt, sizeof(abort_opt), MSG_NOSIGNAL | MSG_DONTWAIT);
        co_return r;
    }
    co_return check_export_info(info, err) ? 0 : -EINVAL;
}

bool check_export_info(const ExportInfo& info, Error& err)
{
    if (info.min_block || info.opt_block || info.max_block) {
        if (!is_power_of_2(info.min_block)) {
            err.set("server minimum block size %u is not a power of two", info.min_block);
            return false;
        }
        if (!is_power_of_2(info.opt_block)) {
            err.set("server preferred block size %u is not a power of two", info.opt_block);
            return false;
        }
        if (info.opt_block < info.min_block) {
            err.set("server preferred block size %u is smaller than minimum block size %u",
                    info.opt_block, info.min_block);
            return false;
        }
        if (info.max_block < info.min_block ||
            (info.max_block != UINT32_MAX && info.max_block % info.min_block)) {
            err.set("server maximum block size %u is not a multiple of minimum block size %u",
                    info.max_block, info.min_block);
            return false;
        }
        if (info.size % info.min_block) {
            err.set("server export size %llu is not a multiple of minimum block size %u",
                    (unsigned long long)info.size, info.min_block);
            return false;
        }
    }
    if (info.size > uint64_t(INT64_MAX)) {
        err.set("server export size %llu is too large", (unsigned long long)info.size);
        return false;
    }
    return true;
}

}  // namespace qemu::nbd
