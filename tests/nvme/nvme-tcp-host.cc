// The initiator's NVMe/TCP host side (tests/nvme/nvme-tcp-host.h).
#include "nvme-tcp-host.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "qemu/crc32c.h"

namespace qemu {

using namespace nvme_tcp;

namespace {

int connect_socket(const std::string& host, const std::string& port, const std::string& path,
                   std::string& error)
{
    if (!path.empty()) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_un sa{};
        sa.sun_family = AF_UNIX;
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path.c_str());
        if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) < 0) {
            error = "connect to " + path + ": " + strerror(errno);
            if (fd >= 0) {
                close(fd);
            }
            return -1;
        }
        return fd;
    }
    addrinfo hints{}, *res = nullptr;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
    if (rc != 0) {
        error = "resolving " + host + ": " + gai_strerror(rc);
        return -1;
    }
    int fd = -1;
    for (addrinfo* a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) < 0) {
            error = "connect to " + host + ":" + port + ": " + strerror(errno);
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd >= 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    return fd;
}

}  // namespace

HostQueue::~HostQueue()
{
    if (fd_ >= 0) {
        close(fd_);
    }
}

bool HostQueue::fail(const std::string& why)
{
    error_ = why;
    return false;
}

// Through a buffer: one read() takes in several PDUs at a time.
bool HostQueue::read_full(void* buf, size_t len)
{
    uint8_t* p = static_cast<uint8_t*>(buf);
    while (len) {
        size_t n = std::min(len, rend_ - rpos_);
        memcpy(p, rbuf_.data() + rpos_, n);
        rpos_ += n;
        p += n;
        len -= n;
        if (!len) {
            break;
        }
        ssize_t got = read(fd_, rbuf_.data(), rbuf_.size());
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got <= 0) {
            return fail(got == 0 ? "connection closed by the target" : strerror(errno));
        }
        rpos_ = 0;
        rend_ = size_t(got);
    }
    return true;
}

bool HostQueue::write_iov(const iovec* iov, unsigned niov)
{
    std::vector<iovec> rest(iov, iov + niov);
    size_t i = 0;
    while (i < rest.size()) {
        msghdr msg{};
        msg.msg_iov = rest.data() + i;
        msg.msg_iovlen = rest.size() - i;
        ssize_t n = sendmsg(fd_, &msg, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return fail(std::string("send: ") + strerror(errno));
        }
        while (i < rest.size() && size_t(n) >= rest[i].iov_len) {
            n -= ssize_t(rest[i++].iov_len);
        }
        if (i < rest.size()) {
            rest[i].iov_base = static_cast<uint8_t*>(rest[i].iov_base) + n;
            rest[i].iov_len -= size_t(n);
        }
    }
    return true;
}

bool HostQueue::send_raw(const void* buf, size_t len)
{
    iovec iov{const_cast<void*>(buf), len};
    return write_iov(&iov, 1);
}

bool HostQueue::connect_only(const std::string& host, const std::string& port,
                             const std::string& unix_path, std::string& error)
{
    fd_ = connect_socket(host, port, unix_path, error);
    return fd_ >= 0;
}

bool HostQueue::open(const std::string& host, const std::string& port,
                     const std::string& unix_path, Digests dg, std::string& error)
{
    return connect_only(host, port, unix_path, error) && handshake(dg, error);
}

bool HostQueue::handshake(Digests dg, std::string& error)
{
    ICReq req;
    req.dg = dg;
    std::vector<uint8_t> ic = build_icreq(req);
    uint8_t resp[kICSize];
    ICResp r;
    const char* why = nullptr;
    if (!send_raw(ic.data(), ic.size()) || !read_full(resp, sizeof(resp))) {
        error = error_;
        return false;
    }
    if (!parse_icresp(resp, sizeof(resp), r, why)) {
        error = std::string("bad ICResp: ") + why;
        return false;
    }
    if (r.dg.header != dg.header || r.dg.data != dg.data) {
        error = "bad ICResp: digests differ from those requested";
        return false;
    }
    dg_ = dg;
    maxh2cdata_ = r.maxh2cdata;
    return true;
}

bool HostQueue::recv_pdu(std::vector<uint8_t>& pdu)
{
    pdu.resize(kCommonHeaderSize);
    if (!read_full(pdu.data(), kCommonHeaderSize)) {
        return false;
    }
    CommonHeader h = parse_common(pdu.data());
    if (h.plen < kCommonHeaderSize || h.plen > 64 * 1024 * 1024) {
        return fail("PDU length " + std::to_string(h.plen) + " out of range");
    }
    pdu.resize(h.plen);
    return read_full(pdu.data() + kCommonHeaderSize, h.plen - kCommonHeaderSize);
}

bool HostQueue::submit(HostCommand& cmd)
{
    while (by_cid_[next_cid_]) {
        next_cid_++;
    }
    uint16_t cid = next_cid_++;
    cmd.done = false;
    cmd.c2h_received = 0;
    cmd.sqe.set_le16_at(2, cid);
    cmd.sqe.bytes[1] = uint8_t((cmd.sqe.bytes[1] & 0x3f) | 0x40);  // PSDT: SGL
    bool h2c = nvme_data_direction(cmd.sqe) == NvmeDataDirection::HostToCtrl;
    uint32_t len = uint32_t(cmd.data.size());
    bool inline_data = h2c && len && len <= in_capsule_;
    cmd.sqe.set_le64_at(24, 0);
    cmd.sqe.set_le32_at(32, len);
    cmd.sqe.bytes[39] = inline_data ? NVME_SGL_DATA_BLOCK_OFFSET : NVME_SGL_TRANSPORT_DATA_BLOCK;
    uint8_t hdr[kMaxHeaderSize];
    uint32_t ilen = inline_data ? len : 0;
    size_t hb = build_capsule_cmd(hdr, dg_, cmd.sqe, ilen);
    uint8_t digest[kDigestSize];
    store_le32(digest, ilen && dg_.data ? crc32c(0, cmd.data.data(), ilen) : 0);
    iovec iov[3] = {{hdr, hb}, {cmd.data.data(), ilen}, {digest, ilen && dg_.data ? kDigestSize : 0}};
    by_cid_[cid] = &cmd;
    in_flight_++;
    if (!corked_) {
        return write_iov(iov, 3);
    }
    for (const iovec& v : iov) {
        const uint8_t* b = static_cast<const uint8_t*>(v.iov_base);
        out_.insert(out_.end(), b, b + v.iov_len);
    }
    return true;
}

bool HostQueue::flush()
{
    if (out_.empty()) {
        return true;
    }
    iovec iov{out_.data(), out_.size()};
    bool ok = write_iov(&iov, 1);
    out_.clear();
    return ok;
}

bool HostQueue::send_h2c(HostCommand& cmd, const DataHeader& r2t)
{
    if (r2t.length == 0 || r2t.offset > cmd.data.size() || r2t.length > cmd.data.size() - r2t.offset) {
        return fail("R2T outside the command's data");
    }
    for (uint32_t off = 0; off < r2t.length;) {
        uint32_t n = std::min(r2t.length - off, maxh2cdata_);
        uint8_t hdr[kMaxHeaderSize];
        bool last = off + n == r2t.length;
        uint8_t* data = cmd.data.data() + r2t.offset + off;
        size_t hb = build_data_header(hdr, kH2CData, last ? kFlagDataLast : 0, dg_, 4,
                                      DataHeader{r2t.cccid, r2t.ttag, r2t.offset + off, n});
        uint8_t digest[kDigestSize];
        store_le32(digest, dg_.data ? crc32c(0, data, n) : 0);
        iovec iov[3] = {{hdr, hb}, {data, n}, {digest, dg_.data ? kDigestSize : 0}};
        if (!write_iov(iov, 3)) {
            return false;
        }
        off += n;
    }
    return true;
}

bool HostQueue::handle_pdu(const std::vector<uint8_t>& pdu,
                           const std::function<void(HostCommand&)>& on_done)
{
    CommonHeader h = parse_common(pdu.data());
    PduLayout l;
    PduError e = check_header(h, Receiver::Host, dg_, 64 * 1024 * 1024, 4, l);
    if (e) {
        return fail("malformed PDU from the target (FES " + std::to_string(e.fes) + " at byte " +
                    std::to_string(e.fei) + ")");
    }
    if (h.type == kC2HTermReq) {
        return fail("C2HTermReq FES " + std::to_string(load_le16(pdu.data() + 8)) + " FEI " +
                    std::to_string(load_le32(pdu.data() + 10)));
    }
    if (dg_.header && !header_digest_ok(pdu.data(), h.hlen)) {
        return fail("header digest mismatch");
    }
    uint16_t cid = h.type == kCapsuleResp ? load_le16(pdu.data() + 8 + 12) : load_le16(pdu.data() + kOffCccid);
    HostCommand* cmd = by_cid_[cid];
    if (!cmd) {
        return fail("PDU for unknown command " + std::to_string(cid));
    }
    if (h.type == kR2T) {
        return send_h2c(*cmd, parse_data_header(pdu.data()));
    }
    if (h.type == kC2HData) {
        DataHeader d = parse_data_header(pdu.data());
        const uint8_t* data = pdu.data() + l.data_offset;
        if (d.length != l.data_len || d.offset > cmd->data.size() ||
            d.length > cmd->data.size() - d.offset) {
            return fail("C2HData outside the command's buffer");
        }
        if (l.data_digest && load_le32(data + l.data_len) != crc32c(0, data, l.data_len)) {
            return fail("data digest mismatch");
        }
        memcpy(cmd->data.data() + d.offset, data, d.length);
        cmd->c2h_received += d.length;
        if (!(h.flags & kFlagDataSuccess)) {
            return true;
        }
        cmd->cqe = NvmeCqe{};
        cmd->cqe.set_cid(cid);
    } else {
        memcpy(cmd->cqe.bytes, pdu.data() + 8, sizeof(cmd->cqe.bytes));
    }
    by_cid_[cid] = nullptr;
    in_flight_--;
    cmd->done = true;
    on_done(*cmd);
    return true;
}

bool HostQueue::poll(const std::function<void(HostCommand&)>& on_done)
{
    bool completed = false;
    auto cb = [&](HostCommand& c) {
        completed = true;
        on_done(c);
    };
    std::vector<uint8_t> pdu;
    while (!completed) {
        if (!recv_pdu(pdu) || !handle_pdu(pdu, cb)) {
            return false;
        }
    }
    return true;
}

bool HostQueue::execute(HostCommand& cmd)
{
    if (!submit(cmd)) {
        return false;
    }
    while (!cmd.done) {
        if (!poll([](HostCommand&) {})) {
            return false;
        }
    }
    return true;
}

NvmeSqe nvme_sqe_connect(uint16_t qid, uint16_t sqsize, uint32_t kato_ms)
{
    NvmeSqe s{};
    s.bytes[0] = NVME_OPC_FABRICS;
    s.bytes[4] = NVMF_FCTYPE_CONNECT;
    s.set_le16_at(42, qid);
    s.set_le16_at(44, sqsize);
    s.set_le32_at(48, kato_ms);
    return s;
}

std::vector<uint8_t> nvme_connect_data(uint16_t cntlid, const std::string& subnqn,
                                       const std::string& hostnqn)
{
    std::vector<uint8_t> d(1024, 0);
    for (int i = 0; i < 16; i++) {
        d[i] = uint8_t(0x51 + i);  // a fixed host ID
    }
    store_le16(d.data() + 16, cntlid);
    memcpy(d.data() + 256, subnqn.data(), std::min<size_t>(subnqn.size(), 255));
    memcpy(d.data() + 512, hostnqn.data(), std::min<size_t>(hostnqn.size(), 255));
    return d;
}

NvmeSqe nvme_sqe_property_get(uint32_t offset, bool eight_bytes)
{
    NvmeSqe s{};
    s.bytes[0] = NVME_OPC_FABRICS;
    s.bytes[4] = NVMF_FCTYPE_PROPERTY_GET;
    s.bytes[40] = eight_bytes ? 1 : 0;
    s.set_le32_at(44, offset);
    return s;
}

NvmeSqe nvme_sqe_property_set(uint32_t offset, uint64_t value, bool eight_bytes)
{
    NvmeSqe s{};
    s.bytes[0] = NVME_OPC_FABRICS;
    s.bytes[4] = NVMF_FCTYPE_PROPERTY_SET;
    s.bytes[40] = eight_bytes ? 1 : 0;
    s.set_le32_at(44, offset);
    s.set_le64_at(48, value);
    return s;
}

NvmeSqe nvme_sqe_identify(uint8_t cns, uint8_t csi, uint32_t nsid)
{
    NvmeSqe s{};
    s.bytes[0] = 0x06;
    s.set_le32_at(4, nsid);
    s.set_cdw(10, cns);
    s.set_cdw(11, uint32_t(csi) << 24);
    return s;
}

NvmeSqe nvme_sqe_rw(uint8_t opcode, uint32_t nsid, uint64_t slba, uint32_t nlb)
{
    NvmeSqe s{};
    s.bytes[0] = opcode;
    s.set_le32_at(4, nsid);
    s.set_le64_at(40, slba);
    s.set_cdw(12, nlb - 1);
    return s;
}

}  // namespace qemu
