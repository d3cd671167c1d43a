// NBD fixed-newstyle handshake and option negotiation, as QEMU's server
// (nbd/server.c nbd_negotiate*): every option with its reply, QEMU's
// limits, and the connection dropped on framing errors.
#include <sys/socket.h>

#include <cstdarg>
#include <cstring>

#include "nbd-internal.h"
#include "qemu/bswap.h"

namespace qemu {

namespace {

// Reads the fields of one option's data; each getter fails (false) past
// the end instead of reading beyond it.
struct OptReader {
    const uint8_t* p;
    size_t left;
    explicit OptReader(const std::vector<uint8_t>& d) : p(d.data()), left(d.size()) {}
    template <typename T, T (*load)(const void*)>
    bool num(T& v)
    {
        if (left < sizeof(T)) {
            return false;
        }
        v = load(p);
        p += sizeof(T);
        left -= sizeof(T);
        return true;
    }
    bool u16(uint16_t& v) { return num<uint16_t, load_be16>(v); }
    bool u32(uint32_t& v) { return num<uint32_t, load_be32>(v); }
    bool str(size_t n, std::string& s)
    {
        if (left < n) {
            return false;
        }
        s.assign(reinterpret_cast<const char*>(p), n);
        p += n;
        left -= n;
        return true;
    }
};

const char* opt_name(uint32_t opt)
{
    switch (opt) {
    case nbd::kOptExportName: return "export name";
    case nbd::kOptAbort: return "abort";
    case nbd::kOptList: return "list";
    case nbd::kOptStartTls: return "starttls";
    case nbd::kOptInfo: return "info";
    case nbd::kOptGo: return "go";
    case nbd::kOptStructuredReply: return "structured reply";
    case nbd::kOptListMetaContext: return "list meta context";
    case nbd::kOptSetMetaContext: return "set meta context";
    case nbd::kOptExtendedHeaders: return "extended headers";
    default: return "<unknown>";
    }
}

bool has_nul(const std::string& s)
{
    return s.find('\0') != std::string::npos;
}

}  // namespace

NbdClient::NbdClient(NbdServer& server, int fd) : server_(server), ctx_(server.ctx()), fd_(fd) {}

NbdClient::~NbdClient()
{
    close(fd_);
}

void NbdClient::disconnect()
{
    if (!closing_) {
        closing_ = true;
        shutdown(fd_, SHUT_RDWR);
    }
}

Task<int> NbdClient::co_recv(void* buf, size_t len)
{
    ssize_t r = co_await co_recv_full(ctx_, fd_, buf, len);
    co_return r == ssize_t(len) ? 0 : -EIO;
}

Task<int> NbdClient::co_send_rep(uint32_t opt, uint32_t type, const void* data, size_t len)
{
    WireBuf w;
    w.u64(nbd::kRepMagic);
    w.u32(opt);
    w.u32(type);
    w.u32(uint32_t(len));
    w.bytes(data, len);
    co_return co_await co_send_full(ctx_, fd_, w.b.data(), w.b.size());
}

Task<int> NbdClient::co_send_rep_err(uint32_t opt, uint32_t type, std::string msg)
{
    co_return co_await co_send_rep(opt, type, msg.data(), msg.size());
}

uint16_t NbdClient::transmission_flags(const NbdExportEntry& e) const
{
    uint16_t f = nbd::kFlagHasFlags | nbd::kFlagSendFlush | nbd::kFlagSendFua | nbd::kFlagSendCache;
    if (e.cfg.multi_conn && server_.options().max_connections != 1) {
        f |= nbd::kFlagCanMultiConn;
    }
    if (e.cfg.writable) {
        f |= nbd::kFlagSendTrim | nbd::kFlagSendWriteZeroes | nbd::kFlagSendFastZero;
    } else {
        f |= nbd::kFlagReadOnly;
    }
    if (mode_ != NbdMode::Simple) {
        f |= nbd::kFlagSendDf;
    }
    return f;
}

Task<int> NbdClient::co_negotiate()
{
    uint8_t hello[18];
    store_be64(hello, nbd::kInitPasswd);
    store_be64(hello + 8, nbd::kOptsMagic);
    store_be16(hello + 16, nbd::kFlagFixedNewstyle | nbd::kFlagNoZeroes);
    if (co_await co_send_full(ctx_, fd_, hello, sizeof(hello)) < 0) {
        co_return -EIO;
    }
    uint8_t fl[4];
    ssize_t r = co_await co_recv_full(ctx_, fd_, fl, 4);
    if (r == 0) {
        co_return -EIO;  // a port probe: nothing to report
    }
    if (r != 4) {
        warn_report("NBD client: failed to read client flags");
        co_return -EIO;
    }
    uint32_t flags = load_be32(fl);
    bool fixed = flags & nbd::kFlagCFixedNewstyle;
    bool no_zeroes = flags & nbd::kFlagCNoZeroes;
    flags &= ~(nbd::kFlagCFixedNewstyle | nbd::kFlagCNoZeroes);
    if (flags) {
        warn_report("NBD client: Unknown client flags 0x%x received", flags);
        co_return -EIO;
    }
    co_return co_await co_option_loop(fixed, no_zeroes);
}

Task<int> NbdClient::co_option_loop(bool fixed, bool no_zeroes)
{
    for (;;) {
        uint8_t hdr[nbd::kOptionHeaderSize];
        if (co_await co_recv(hdr, sizeof(hdr)) < 0) {
            co_return -EIO;
        }
        if (load_be64(hdr) != nbd::kOptsMagic) {
            warn_report("NBD client: Bad magic received");
            co_return -EIO;
        }
        uint32_t opt = load_be32(hdr + 8);
        uint32_t len = load_be32(hdr + 12);
        if (len > nbd::kMaxBufferSize) {
            warn_report("NBD client: len (%u) is larger than max len (%u)", len,
                        nbd::kMaxBufferSize);
            co_return -EIO;
        }
        std::vector<uint8_t> data(len);
        if (len) {
            int ret = co_await co_recv(data.data(), len);
            if (ret < 0) {
                co_return -EIO;
            }
        }
        if (!fixed && opt != nbd::kOptExportName) {
            warn_report("NBD client: Unsupported option %u (%s)", opt, opt_name(opt));
            co_return -EIO;
        }
        int ret = co_await co_handle_option(opt, data, no_zeroes);
        if (ret != 0) {
            co_return ret > 0 ? 0 : ret;  // > 0: the client enters transmission
        }
    }
}

// 0: stay in negotiation; 1: transmission begins; <0: drop the connection.
Task<int> NbdClient::co_handle_option(uint32_t opt, std::vector<uint8_t>& data, bool no_zeroes)
{
    bool no_data = data.empty();
    int ret;
    switch (opt) {
    case nbd::kOptExportName: co_return co_await co_opt_export_name(data, no_zeroes);
    case nbd::kOptAbort:
        // The spec wants a reply but lets the client leave without reading it.
        co_await co_send_rep(opt, nbd::kRepAck, nullptr, 0);
        co_return -EIO;
    case nbd::kOptList: co_return co_await co_opt_list(opt, data);
    case nbd::kOptStartTls:
        if (!no_data) {
            co_await co_send_rep_err(
                opt, nbd::kRepErrInvalid,
                string_printf("option '%s' has unexpected length", opt_name(opt)));
            co_return -EIO;
        }
        ret = co_await co_send_rep_err(opt, nbd::kRepErrPolicy, "TLS not configured");
        break;
    case nbd::kOptInfo:
    case nbd::kOptGo: co_return co_await co_opt_info(opt, data);
    case nbd::kOptStructuredReply:
    case nbd::kOptExtendedHeaders: {
        NbdMode want = opt == nbd::kOptStructuredReply ? NbdMode::Structured : NbdMode::Extended;
        if (!no_data) {
            ret = co_await co_send_rep_err(
                opt, nbd::kRepErrInvalid,
                string_printf("option '%s' has unexpected length", opt_name(opt)));
        } else if (mode_ == NbdMode::Extended && want == NbdMode::Structured) {
            ret = co_await co_send_rep_err(opt, nbd::kRepErrExtHeaderReqd,
                                           "extended headers already negotiated");
        } else if (mode_ == want) {
            ret = co_await co_send_rep_err(opt, nbd::kRepErrInvalid,
                                           string_printf("%s already negotiated", opt_name(opt)));
        } else {
            ret = co_await co_send_rep(opt, nbd::kRepAck, nullptr, 0);
            mode_ = want;
        }
        break;
    }
    case nbd::kOptListMetaContext:
    case nbd::kOptSetMetaContext: co_return co_await co_opt_meta_context(opt, data);
    default:
        ret = co_await co_send_rep_err(
            opt, nbd::kRepErrUnsup,
            string_printf("Unsupported option %u (%s)", opt, opt_name(opt)));
        break;
    }
    co_return ret < 0 ? -EIO : 0;
}

Task<int> NbdClient::co_opt_export_name(const std::vector<uint8_t>& data, bool no_zeroes)
{
    if (mode_ == NbdMode::Extended) {
        warn_report("NBD client: Extended headers already negotiated");
        co_return -EIO;
    }
    if (data.size() > nbd::kMaxStringSize) {
        warn_report("NBD client: Bad length received");
        co_return -EIO;
    }
    std::string name(data.begin(), data.end());
    std::shared_ptr<NbdExportEntry> e = server_.find_export(name);
    if (!e) {
        // Only a disconnect can say "no such export" to EXPORT_NAME.
        warn_report("NBD client: export '%s' not present", name.c_str());
        co_return -EIO;
    }
    uint8_t reply[8 + 2 + 124] = {};
    store_be64(reply, e->size);
    store_be16(reply + 8, transmission_flags(*e));
    size_t len = no_zeroes ? 10 : sizeof(reply);
    if (co_await co_send_full(ctx_, fd_, reply, len) < 0) {
        co_return -EIO;
    }
    exp_ = std::move(e);
    contexts_ = {};  // no contexts were negotiated for it
    co_return 1;
}

Task<int> NbdClient::co_opt_list(uint32_t opt, const std::vector<uint8_t>& data)
{
    if (!data.empty()) {
        int r = co_await co_send_rep_err(
            opt, nbd::kRepErrInvalid,
            string_printf("option '%s' has unexpected length", opt_name(opt)));
        co_return r < 0 ? -EIO : 0;
    }
    for (const std::string& name : server_.export_names()) {
        std::shared_ptr<NbdExportEntry> e = server_.find_export(name);
        WireBuf w;
        w.u32(uint32_t(name.size()));
        w.str(name);
        w.str(e->cfg.description);
        if (co_await co_send_rep(opt, nbd::kRepServer, w.b.data(), w.b.size()) < 0) {
            co_return -EIO;
        }
    }
    co_return co_await co_send_rep(opt, nbd::kRepAck, nullptr, 0) < 0 ? -EIO : 0;
}

// NBD_OPT_INFO and NBD_OPT_GO (QEMU's nbd_negotiate_handle_info).
Task<int> NbdClient::co_opt_info(uint32_t opt, const std::vector<uint8_t>& data)
{
    OptReader rd(data);
    uint32_t namelen = 0;
    uint16_t nreq = 0;
    std::string name;
    const char* bad = nullptr;
    if (!rd.u32(namelen) || namelen > rd.left || !rd.str(namelen, name) || !rd.u16(nreq) ||
        rd.left != size_t(nreq) * 2) {
        bad = "option '%s' has unexpected length";
    } else if (namelen > nbd::kMaxStringSize) {
        bad = "option '%s' name too long";
    } else if (has_nul(name)) {
        bad = "option '%s' name contains NUL";
    }
    if (bad) {
        int r =
            co_await co_send_rep_err(opt, nbd::kRepErrInvalid, string_printf(bad, opt_name(opt)));
        co_return r < 0 ? -EIO : 0;
    }
    bool send_name = false, blocksize = false;
    for (unsigned i = 0; i < nreq; i++) {
        uint16_t req;
        rd.u16(req);
        send_name |= req == nbd::kInfoName;
        blocksize |= req == nbd::kInfoBlockSize;
    }
    std::shared_ptr<NbdExportEntry> e = server_.find_export(name);
    if (!e) {
        int r = co_await co_send_rep_err(opt, nbd::kRepErrUnknown,
                                         string_printf("export '%s' not present", name.c_str()));
        co_return r < 0 ? -EIO : 0;
    }
    WireBuf w;
    if (send_name) {
        w.u16(nbd::kInfoName);
        w.str(name);
        if (co_await co_send_rep(opt, nbd::kRepInfo, w.b.data(), w.b.size()) < 0) {
            co_return -EIO;
        }
    }
    if (!e->cfg.description.empty()) {
        w.b.clear();
        w.u16(nbd::kInfoDescription);
        w.str(e->cfg.description);
        if (co_await co_send_rep(opt, nbd::kRepInfo, w.b.data(), w.b.size()) < 0) {
            co_return -EIO;
        }
    }
    // Minimum 1 for clients that would not obey more, unless they asked.
    const BlockLimits& bl = e->cfg.blk->bs()->limits();
    uint32_t align = bl.request_alignment;
    uint32_t min_block = (opt == nbd::kOptInfo || blocksize) ? align : 1;
    uint64_t max_xfer = bl.max_transfer ? bl.max_transfer : nbd::kMaxBufferSize;
    w.b.clear();
    w.u16(nbd::kInfoBlockSize);
    w.u32(min_block);
    w.u32(std::max<uint32_t>(4096, min_block));
    w.u32(uint32_t(std::min<uint64_t>(max_xfer, nbd::kMaxBufferSize)));
    if (co_await co_send_rep(opt, nbd::kRepInfo, w.b.data(), w.b.size()) < 0) {
        co_return -EIO;
    }
    uint16_t flags = transmission_flags(*e);
    if (mode_ == NbdMode::Extended && (contexts_.count() || opt == nbd::kOptInfo)) {
        flags |= nbd::kFlagBlockStatPayload;
    }
    w.b.clear();
    w.u16(nbd::kInfoExport);
    w.u64(e->size);
    w.u16(flags);
    if (co_await co_send_rep(opt, nbd::kRepInfo, w.b.data(), w.b.size()) < 0) {
        co_return -EIO;
    }
    if (opt == nbd::kOptInfo && !blocksize && align > 1) {
        int r = co_await co_send_rep_err(opt, nbd::kRepErrBlockSizeReqd,
                                         "request NBD_INFO_BLOCK_SIZE to use this export");
        co_return r < 0 ? -EIO : 0;
    }
    if (co_await co_send_rep(opt, nbd::kRepAck, nullptr, 0) < 0) {
        co_return -EIO;
    }
    if (opt == nbd::kOptInfo) {
        co_return 0;
    }
    if (contexts_name_ != name) {
        contexts_ = {};  // contexts chosen for another export do not apply
    }
    check_align_ = blocksize ? align : 0;
    exp_ = std::move(e);
    co_return 1;
}

// Sends one REP_META_CONTEXT.
Task<int> NbdClient::co_send_meta_reply(uint32_t opt, uint32_t id, const char* name)
{
    WireBuf w;
    w.u32(id);
    w.bytes(name, strlen(name));
    co_return co_await co_send_rep(opt, nbd::kRepMetaContext, w.b.data(), w.b.size());
}

// NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT (QEMU's
// nbd_negotiate_meta_queries): unknown queries are ignored, not errors.
Task<int> NbdClient::co_opt_meta_context(uint32_t opt, const std::vector<uint8_t>& data)
{
    bool set = opt == nbd::kOptSetMetaContext;
    auto invalid = [&](const char* msg) -> Task<int> {
        int r =
            co_await co_send_rep_err(opt, nbd::kRepErrInvalid, string_printf(msg, opt_name(opt)));
        co_return r < 0 ? -EIO : 0;
    };
    if (set) {
        contexts_ = {};
        contexts_name_.clear();
    }
    if (mode_ == NbdMode::Simple) {
        co_return co_await invalid("request option '%s' when structured reply is not negotiated");
    }
    OptReader rd(data);
    uint32_t namelen = 0, nq = 0;
    std::string name;
    if (!rd.u32(namelen) || !rd.str(namelen, name) || !rd.u32(nq)) {
        co_return co_await invalid("option '%s' has unexpected length");
    }
    if (namelen > nbd::kMaxStringSize || has_nul(name)) {
        co_return co_await invalid("option '%s' has an invalid export name");
    }
    std::shared_ptr<NbdExportEntry> e = server_.find_export(name);
    if (!e) {
        int r = co_await co_send_rep_err(opt, nbd::kRepErrUnknown,
                                         string_printf("export '%s' not present", name.c_str()));
        co_return r < 0 ? -EIO : 0;
    }
    NbdMetaContexts m;
    if (nq == 0 && !set) {
        m.base_allocation = true;
        m.allocation_depth = e->cfg.allocation_depth;
    }
    for (uint32_t i = 0; i < nq; i++) {
        uint32_t qlen;
        std::string q;
        if (!rd.u32(qlen) || !rd.str(qlen, q)) {
            co_return co_await invalid("option '%s' has unexpected length");
        }
        if (qlen > nbd::kMaxStringSize || has_nul(q)) {
            continue;  // as QEMU: skipped, not an error
        }
        m.base_allocation |= q == nbd::kContextBaseAllocation || (!set && q == "base:");
        m.allocation_depth |= e->cfg.allocation_depth &&
                              (q == nbd::kContextAllocationDepth || (!set && q == "qemu:"));
    }
    if (rd.left) {
        co_return co_await invalid("option '%s' has unexpected length");
    }
    // One statement per co_await: GCC 12 miscompiles one inside &&.
    if (m.base_allocation) {
        int ret = co_await co_send_meta_reply(opt, set ? kMetaIdBaseAllocation : 0,
                                              nbd::kContextBaseAllocation);
        if (ret < 0) {
            co_return -EIO;
        }
    }
    if (m.allocation_depth) {
        int ret = co_await co_send_meta_reply(opt, set ? kMetaIdAllocationDepth : 0,
                                              nbd::kContextAllocationDepth);
        if (ret < 0) {
            co_return -EIO;
        }
    }
    if (set) {
        contexts_ = m;
        contexts_name_ = name;
    }
    co_return co_await co_send_rep(opt, nbd::kRepAck, nullptr, 0) < 0 ? -EIO : 0;
}

}  // namespace qemu
