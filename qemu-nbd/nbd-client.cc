#include "nbd-client.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "block/nbd.h"
#include "qemu/bswap.h"

namespace qemu::nbd {
namespace {

// Reads exactly len bytes; false with err set on end of stream or error.
bool read_full(int fd, void* buf, size_t len, const char* what, Error& err)
{
    auto* p = static_cast<uint8_t*>(buf);
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            if (n == 0) {
                err.set("Failed to read %s: Unexpected end-of-file before all data were read", what);
            } else {
                err.set_errno(errno, "Failed to read %s", what);
            }
            return false;
        }
        p += n;
        len -= size_t(n);
    }
    return true;
}

bool write_full(int fd, const void* buf, size_t len, Error& err)
{
    const auto* p = static_cast<const uint8_t*>(buf);
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            err.set_errno(errno, "Failed to send option request");
            return false;
        }
        p += n;
        len -= size_t(n);
    }
    return true;
}

bool send_option(int fd, uint32_t opt, const std::string& data, Error& err)
{
    std::string msg(kOptionHeaderSize, '\0');
    store_be64(msg.data(), kOptsMagic);
    store_be32(msg.data() + 8, opt);
    store_be32(msg.data() + 12, uint32_t(data.size()));
    msg += data;
    return write_full(fd, msg.data(), msg.size(), err);
}

// One option reply: its type and payload (bounded by QEMU's 32 MiB).
struct OptionReplyMsg {
    uint32_t type = 0;
    std::string data;
};

bool read_reply(int fd, uint32_t opt, OptionReplyMsg& rep, Error& err)
{
    uint8_t hdr[kOptionReplyHeaderSize];
    if (!read_full(fd, hdr, sizeof(hdr), "option reply", err)) {
        return false;
    }
    if (load_be64(hdr) != kRepMagic) {
        err.set("Unexpected option reply magic");
        return false;
    }
    if (load_be32(hdr + 8) != opt) {
        err.set("Unexpected option type %u, expected %u", load_be32(hdr + 8), opt);
        return false;
    }
    rep.type = load_be32(hdr + 12);
    uint32_t len = load_be32(hdr + 16);
    if (len > kMaxBufferSize) {
        err.set("server's reply to option %u is too long (%u bytes)", opt, len);
        return false;
    }
    rep.data.resize(len);
    return read_full(fd, rep.data.data(), len, "option reply payload", err);
}

// An error reply as QEMU's nbd_handle_reply_err() words the common ones;
// the server's own message follows.
void set_reply_error(const OptionReplyMsg& rep, uint32_t opt, Error& err)
{
    const char* what;
    switch (rep.type) {
    case kRepErrUnsup: what = "Unsupported option"; break;
    case kRepErrPolicy: what = "Denied by server for option"; break;
    case kRepErrInvalid: what = "Invalid parameters for option"; break;
    case kRepErrPlatform: what = "Server lacks support for option"; break;
    case kRepErrTlsReqd: what = "TLS negotiation required before option"; break;
    case kRepErrUnknown: what = "Requested export not available for option"; break;
    case kRepErrShutdown: what = "Server shutting down before option"; break;
    case kRepErrBlockSizeReqd: what = "Server requires INFO_BLOCK_SIZE for option"; break;
    case kRepErrTooBig: what = "Server rejected request as too large for option"; break;
    default: what = "Unknown error code when asking for option"; break;
    }
    err.set("%s %u", what, opt);
    if (!rep.data.empty()) {
        err.message += "\nserver reported: " + rep.data.substr(0, kMaxStringSize);
    }
}

// Sends an option without payload and reads its one reply.  Returns 1 on
// ACK, 0 when the server refuses it (any error reply), -1 with err set.
int simple_option(int fd, uint32_t opt, Error& err)
{
    OptionReplyMsg rep;
    if (!send_option(fd, opt, "", err) || !read_reply(fd, opt, rep, err)) {
        return -1;
    }
    if (rep.type == kRepAck && rep.data.empty()) {
        return 1;
    }
    if (rep.type & kRepErrBit) {
        return 0;
    }
    err.set("Unexpected reply type %u to option %u", rep.type, opt);
    return -1;
}

// The greeting: NBDMAGIC, IHAVEOPT and the server's flags; answers with
// the client flags.  Only fixed newstyle servers are accepted (as QEMU's
// list mode and Linux's nbd-client do).  no_zeroes: the 124 bytes of
// padding after an NBD_OPT_EXPORT_NAME reply are left out.
bool start_negotiate(int fd, bool& no_zeroes, Error& err)
{
    uint8_t hello[18];
    if (!read_full(fd, hello, sizeof(hello), "initial magic", err)) {
        return false;
    }
    if (load_be64(hello) != kInitPasswd) {
        err.set("Bad initial magic received: 0x%" PRIx64, load_be64(hello));
        return false;
    }
    if (load_be64(hello + 8) != kOptsMagic) {
        err.set("Server does not support the fixed newstyle handshake");
        return false;
    }
    uint16_t server_flags = load_be16(hello + 16);
    if (!(server_flags & kFlagFixedNewstyle)) {
        err.set("Server does not support the fixed newstyle handshake");
        return false;
    }
    no_zeroes = server_flags & kFlagNoZeroes;
    uint8_t reply[4];
    store_be32(reply, kFlagCFixedNewstyle | (no_zeroes ? kFlagCNoZeroes : 0));
    return write_full(fd, reply, sizeof(reply), err);
}

std::string name_payload(const std::string& name)
{
    std::string data(4, '\0');
    store_be32(data.data(), uint32_t(name.size()));
    return data + name;
}

// Sends opt with data, then reads its replies until the ACK: each of type
// `type` goes to take(payload), which returns false for a malformed one
// ("Invalid reply to NAME"); an error reply fails with its message.
template <typename Take>
bool replies_until_ack(int fd, uint32_t opt, const std::string& data, uint32_t type,
                       const char* name, Take take, Error& err)
{
    if (!send_option(fd, opt, data, err)) {
        return false;
    }
    for (;;) {
        OptionReplyMsg rep;
        if (!read_reply(fd, opt, rep, err)) {
            return false;
        }
        if (rep.type == kRepAck) {
            return true;
        }
        if (rep.type & kRepErrBit) {
            set_reply_error(rep, opt, err);
            return false;
        }
        if (rep.type != type || !take(rep.data)) {
            err.set("Invalid reply to %s", name);
            return false;
        }
    }
}

// NBD_OPT_LIST: names and descriptions.
bool list_names(int fd, std::vector<ExportListing>& out, Error& err)
{
    auto take = [&out](const std::string& d) {
        if (d.size() < 4) {
            return false;
        }
        uint32_t len = load_be32(d.data());
        if (len > d.size() - 4 || len > kMaxStringSize || d.size() - 4 - len > kMaxStringSize) {
            return false;
        }
        ExportListing exp;
        exp.name = d.substr(4, len);
        exp.description = d.substr(4 + len);
        out.push_back(std::move(exp));
        return true;
    };
    return replies_until_ack(fd, kOptList, "", kRepServer, "NBD_OPT_LIST", take, err);
}

// Parses one NBD_REP_INFO into exp; false on a malformed one.
bool parse_info(const std::string& d, ExportListing& exp, SimpleExport* simple)
{
    if (d.size() < 2) {
        return false;
    }
    switch (load_be16(d.data())) {
    case kInfoExport:
        if (d.size() != 12) {
            return false;
        }
        exp.size = load_be64(d.data() + 2);
        exp.flags = load_be16(d.data() + 10);
        exp.have_info = true;
        if (simple) {
            simple->size = exp.size;
            simple->flags = exp.flags;
        }
        return true;
    case kInfoBlockSize:
        if (d.size() != 14) {
            return false;
        }
        exp.min_block = load_be32(d.data() + 2);
        exp.opt_block = load_be32(d.data() + 6);
        exp.max_block = load_be32(d.data() + 10);
        return true;
    default:
        return true;  // names and descriptions: -L prints LIST's
    }
}

// NBD_OPT_INFO (block sizes requested) or GO (nothing requested) for
// exp.name.  Returns 1 when answered, 0 on ERR_UNSUP, -1 with err set.
int info_or_go(int fd, uint32_t opt, ExportListing& exp, SimpleExport* simple, Error& err)
{
    std::string data = name_payload(exp.name);
    bool request_sizes = opt == kOptInfo;
    uint8_t req[4];
    store_be16(req, request_sizes ? 1 : 0);
    store_be16(req + 2, kInfoBlockSize);
    data.append(reinterpret_cast<char*>(req), request_sizes ? 4 : 2);
    if (!send_option(fd, opt, data, err)) {
        return -1;
    }
    for (;;) {
        OptionReplyMsg rep;
        if (!read_reply(fd, opt, rep, err)) {
            return -1;
        }
        if (rep.type == kRepAck) {
            if (!exp.have_info) {
                err.set("broken server omitted NBD_INFO_EXPORT");
                return -1;
            }
            return 1;
        }
        if (rep.type == kRepErrUnsup) {
            return 0;
        }
        if (rep.type & kRepErrBit) {
            set_reply_error(rep, opt, err);
            return -1;
        }
        if (rep.type != kRepInfo || !parse_info(rep.data, exp, simple)) {
            err.set("Invalid reply to option %u", opt);
            return -1;
        }
    }
}

// Sends LIST_META_CONTEXT for `query` (none: the server's default set)
// and appends the context names it returns.
bool list_contexts_for(int fd, ExportListing& exp, const char* query, Error& err)
{
    std::string data = name_payload(exp.name);
    uint8_t n[4];
    store_be32(n, query ? 1 : 0);
    data.append(reinterpret_cast<char*>(n), 4);
    if (query) {
        data += name_payload(query);
    }
    auto take = [&exp](const std::string& d) {
        if (d.size() < 4 || d.size() - 4 > kMaxStringSize) {
            return false;
        }
        exp.contexts.push_back(d.substr(4));
        return true;
    };
    return replies_until_ack(fd, kOptListMetaContext, data, kRepMetaContext,
                             "NBD_OPT_LIST_META_CONTEXT", take, err);
}

// As QEMU's nbd_list_meta_contexts(): the default set, then "qemu:" ones
// if the default set named none.
bool list_contexts(int fd, ExportListing& exp, Error& err)
{
    if (!list_contexts_for(fd, exp, nullptr, err)) {
        return false;
    }
    for (const std::string& c : exp.contexts) {
        if (c.starts_with("qemu:")) {
            return true;
        }
    }
    return exp.contexts.empty() || list_contexts_for(fd, exp, "qemu:", err);
}

}  // namespace

bool receive_export_list(int fd, ExportList& list, Error& err)
{
    bool no_zeroes;
    if (!start_negotiate(fd, no_zeroes, err)) {
        return false;
    }
    int r = simple_option(fd, kOptExtendedHeaders, err);
    if (r < 0) {
        return false;
    }
    list.extended_headers = r == 1;
    bool structured = list.extended_headers;
    if (!structured) {
        r = simple_option(fd, kOptStructuredReply, err);
        if (r < 0) {
            return false;
        }
        structured = r == 1;
    }
    if (!list_names(fd, list.exports, err)) {
        return false;
    }
    for (ExportListing& exp : list.exports) {
        r = info_or_go(fd, kOptInfo, exp, nullptr, err);
        if (r < 0) {
            return false;
        }
        if (r == 1 && structured && !list_contexts(fd, exp, err)) {
            return false;
        }
    }
    Error ignored;
    send_option(fd, kOptAbort, "", ignored);  // the server's ACK is optional
    return true;
}

void print_export_list(const ExportList& list)
{
    static const char* const flag_names[] = {
        nullptr, "readonly", "flush", "fua", "rotational", "trim", "zeroes", "df",
        "multi", "resize", "cache", "fast-zero", "block-status-payload",
    };
    printf("exports available: %zu\n", list.exports.size());
    for (const ExportListing& exp : list.exports) {
        printf(" export: '%s'\n", exp.name.c_str());
        if (!exp.description.empty()) {
            printf("  description: %s\n", exp.description.c_str());
        }
        if (exp.flags & kFlagHasFlags) {
            printf("  size:  %" PRIu64 "\n", exp.size);
            printf("  flags: 0x%x (", exp.flags);
            for (size_t bit = 0; bit < std::size(flag_names); bit++) {
                if (flag_names[bit] && (exp.flags & (1U << bit))) {
                    printf(" %s", flag_names[bit]);
                }
            }
            printf(" )\n");
        }
        if (exp.min_block) {
            printf("  min block: %u\n", exp.min_block);
            printf("  opt block: %u\n", exp.opt_block);
            printf("  max block: %u\n", exp.max_block);
        }
        printf("  transaction size: %s\n", list.extended_headers ? "64-bit" : "32-bit");
        if (!exp.contexts.empty()) {
            printf("  available meta contexts: %zu\n", exp.contexts.size());
            for (const std::string& c : exp.contexts) {
                printf("   %s\n", c.c_str());
            }
        }
    }
}

bool open_simple_export(int fd, const std::string& name, SimpleExport& exp, Error& err)
{
    bool no_zeroes;
    if (!start_negotiate(fd, no_zeroes, err)) {
        return false;
    }
    ExportListing listing;
    listing.name = name;
    int r = info_or_go(fd, kOptGo, listing, &exp, err);
    if (r != 0) {
        return r == 1;
    }
    // Servers before NBD_OPT_GO: EXPORT_NAME has no error reply; the
    // server closes the connection for an unknown name.
    if (!send_option(fd, kOptExportName, name, err)) {
        return false;
    }
    uint8_t reply[10];
    if (!read_full(fd, reply, sizeof(reply), "export length", err)) {
        return false;
    }
    exp.size = load_be64(reply);
    exp.flags = load_be16(reply + 8);
    uint8_t zeroes[124];
    return no_zeroes || read_full(fd, zeroes, sizeof(zeroes), "export padding", err);
}

}  // namespace qemu::nbd
