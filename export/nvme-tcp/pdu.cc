// NVMe/TCP PDU layouts and their validation (include/export/nvme-tcp-pdu.h).
#include "export/nvme-tcp-pdu.h"

#include <algorithm>
#include <cstring>

#include "qemu/crc32c.h"

namespace qemu::nvme_tcp {

namespace {

// The types `rcv` may receive after connection setup, and for each whether
// it must, may or must not carry data.
enum class DataRule { None, Optional, Required, Invalid };

DataRule data_rule(uint8_t type, Receiver rcv)
{
    bool ctrl = rcv == Receiver::Controller;
    switch (type) {
    case kCapsuleCmd: return ctrl ? DataRule::Optional : DataRule::Invalid;
    case kH2CData: return ctrl ? DataRule::Required : DataRule::Invalid;
    case kCapsuleResp:
    case kR2T: return ctrl ? DataRule::Invalid : DataRule::None;
    case kC2HData: return ctrl ? DataRule::Invalid : DataRule::Required;
    default: return DataRule::Invalid;
    }
}

PduError fail(uint16_t fes, uint32_t fei)
{
    return PduError{fes, fei};
}

PduError check_termreq(const CommonHeader& h, PduLayout& out)
{
    if (h.hlen != kTermReqHlen) {
        return fail(kFesInvalidHeaderField, kOffHlen);
    }
    if (h.plen < kTermReqHlen || h.plen > kTermReqHlen + kMaxTermReqData) {
        return fail(kFesInvalidHeaderField, kOffPlen);
    }
    out = PduLayout{kTermReqHlen, kTermReqHlen, h.plen - uint32_t(kTermReqHlen), 0};
    return {};
}

}  // namespace

CommonHeader parse_common(const uint8_t* p)
{
    return CommonHeader{p[0], p[1], p[2], p[3], load_le32(p + 4)};
}

void put_common(uint8_t* p, const CommonHeader& h)
{
    p[0] = h.type;
    p[1] = h.flags;
    p[2] = h.hlen;
    p[3] = h.pdo;
    store_le32(p + 4, h.plen);
}

PduError check_header(const CommonHeader& h, Receiver rcv, const Digests& dg, uint32_t max_data,
                      uint32_t pdo_align, PduLayout& out)
{
    uint8_t own_termreq = rcv == Receiver::Controller ? kH2CTermReq : kC2HTermReq;
    if (h.type == own_termreq) {
        return check_termreq(h, out);
    }
    if (h.type == kICReq || h.type == kICResp) {
        return fail(kFesPduSequenceError, kOffType);
    }
    DataRule rule = data_rule(h.type, rcv);
    if (rule == DataRule::Invalid) {
        return fail(kFesInvalidHeaderField, kOffType);
    }
    uint32_t hlen = h.type == kCapsuleCmd ? kCapsuleCmdHlen : kShortHlen;
    if (h.hlen != hlen) {
        return fail(kFesInvalidHeaderField, kOffHlen);
    }
    if (bool(h.flags & kFlagHdgst) != dg.header) {
        return fail(kFesInvalidHeaderField, kOffFlags);
    }
    uint32_t header_bytes = hlen + (dg.header ? kDigestSize : 0);
    if (h.plen < header_bytes) {
        return fail(kFesInvalidHeaderField, kOffPlen);
    }
    bool has_data = h.plen > header_bytes;
    if ((has_data && rule == DataRule::None) || (!has_data && rule == DataRule::Required)) {
        return fail(kFesInvalidHeaderField, kOffPlen);
    }
    if (bool(h.flags & kFlagDdgst) != (has_data && dg.data)) {
        return fail(kFesInvalidHeaderField, kOffFlags);
    }
    if (!has_data) {
        out = PduLayout{header_bytes, h.plen, 0, 0};
        return {};
    }
    uint32_t ddgst = dg.data ? kDigestSize : 0;
    if (h.pdo < header_bytes || h.pdo % pdo_align || uint64_t(h.pdo) + ddgst >= h.plen) {
        return fail(kFesInvalidHeaderField, kOffPdo);
    }
    uint32_t data_len = h.plen - h.pdo - ddgst;
    if (data_len > max_data) {
        return fail(kFesDataLimitExceeded, kOffPlen);
    }
    out = PduLayout{header_bytes, h.pdo, data_len, ddgst};
    return {};
}

uint32_t header_digest(const uint8_t* hdr, size_t hlen)
{
    return crc32c(0, hdr, hlen);
}

bool header_digest_ok(const uint8_t* hdr, size_t hlen)
{
    return load_le32(hdr + hlen) == header_digest(hdr, hlen);
}

PduError parse_icreq(const uint8_t* p, size_t len, ICReq& out)
{
    CommonHeader h = parse_common(p);
    if (h.type != kICReq) {
        return fail(kFesPduSequenceError, kOffType);
    }
    if (h.hlen != kICSize) {
        return fail(kFesInvalidHeaderField, kOffHlen);
    }
    if (h.plen != kICSize || len < kICSize) {
        return fail(kFesInvalidHeaderField, kOffPlen);
    }
    out.pfv = load_le16(p + kOffIcPfv);
    out.hpda = p[kOffIcHpda];
    out.dg = Digests{bool(p[kOffIcDgst] & 1), bool(p[kOffIcDgst] & 2)};
    out.maxr2t = load_le32(p + 12);
    if (out.pfv != 0) {
        return fail(kFesUnsupportedParameter, kOffIcPfv);
    }
    if (out.hpda > 31) {
        return fail(kFesInvalidHeaderField, kOffIcHpda);
    }
    return {};
}

namespace {

std::vector<uint8_t> build_ic(uint8_t type, uint8_t align, const Digests& dg, uint32_t word)
{
    std::vector<uint8_t> b(kICSize, 0);
    put_common(b.data(), CommonHeader{type, 0, uint8_t(kICSize), 0, uint32_t(kICSize)});
    store_le16(b.data() + kOffIcPfv, 0);
    b[kOffIcHpda] = align;
    b[kOffIcDgst] = uint8_t((dg.header ? 1 : 0) | (dg.data ? 2 : 0));
    store_le32(b.data() + 12, word);
    return b;
}

}  // namespace

std::vector<uint8_t> build_icreq(const ICReq& req)
{
    return build_ic(kICReq, req.hpda, req.dg, req.maxr2t);
}

std::vector<uint8_t> build_icresp(const ICResp& resp)
{
    return build_ic(kICResp, resp.cpda, resp.dg, resp.maxh2cdata);
}

bool parse_icresp(const uint8_t* p, size_t len, ICResp& out, const char*& why)
{
    CommonHeader h = parse_common(p);
    out.pfv = load_le16(p + kOffIcPfv);
    out.cpda = p[kOffIcHpda];
    out.dg = Digests{bool(p[kOffIcDgst] & 1), bool(p[kOffIcDgst] & 2)};
    out.maxh2cdata = load_le32(p + 12);
    why = nullptr;
    if (len < kICSize || h.type != kICResp || h.plen != kICSize || h.hlen != kICSize) {
        why = "not an ICResp of 128 bytes";
    } else if (out.pfv != 0) {
        why = "unsupported PFV";
    } else if (out.cpda != 0) {
        why = "CPDA is not 0";
    } else if (out.maxh2cdata < 4096 || out.maxh2cdata % 4) {
        why = "MAXH2CDATA below 4096 or not a multiple of 4";
    }
    return !why;
}

std::vector<uint8_t> build_termreq(uint8_t type, const PduError& e, const uint8_t* hdr,
                                   size_t hdr_len)
{
    size_t echo = std::min(hdr_len, kMaxTermReqData);
    std::vector<uint8_t> b(kTermReqHlen + echo, 0);
    put_common(b.data(), CommonHeader{type, 0, uint8_t(kTermReqHlen), 0, uint32_t(b.size())});
    store_le16(b.data() + 8, e.fes);
    store_le32(b.data() + 10, e.fei);
    if (echo) {
        memcpy(b.data() + kTermReqHlen, hdr, echo);
    }
    return b;
}

DataHeader parse_data_header(const uint8_t* p)
{
    return DataHeader{load_le16(p + kOffCccid), load_le16(p + kOffTtag), load_le32(p + kOffDatao),
                      load_le32(p + kOffDatal)};
}

namespace {

// Finishes a header of hlen bytes: the digest after it when enabled.
size_t seal(uint8_t* out, size_t hlen, const Digests& dg)
{
    if (!dg.header) {
        return hlen;
    }
    out[1] |= kFlagHdgst;
    store_le32(out + hlen, header_digest(out, hlen));
    return hlen + kDigestSize;
}

void put_data_fields(uint8_t* out, const DataHeader& d)
{
    store_le16(out + kOffCccid, d.cccid);
    store_le16(out + kOffTtag, d.ttag);
    store_le32(out + kOffDatao, d.offset);
    store_le32(out + kOffDatal, d.length);
    memset(out + 20, 0, 4);
}

uint32_t round_up(uint32_t v, uint32_t align)
{
    return (v + align - 1) / align * align;
}

}  // namespace

size_t build_capsule_resp(uint8_t* out, const Digests& dg, const NvmeCqe& cqe)
{
    uint32_t hb = kShortHlen + (dg.header ? kDigestSize : 0);
    put_common(out, CommonHeader{kCapsuleResp, 0, uint8_t(kShortHlen), 0, hb});
    memcpy(out + 8, cqe.bytes, sizeof(cqe.bytes));
    return seal(out, kShortHlen, dg);
}

size_t build_r2t(uint8_t* out, const Digests& dg, const DataHeader& d)
{
    uint32_t hb = kShortHlen + (dg.header ? kDigestSize : 0);
    put_common(out, CommonHeader{kR2T, 0, uint8_t(kShortHlen), 0, hb});
    put_data_fields(out, d);
    return seal(out, kShortHlen, dg);
}

size_t build_data_header(uint8_t* out, uint8_t type, uint8_t flags, const Digests& dg,
                         uint32_t pdo_align, const DataHeader& d)
{
    uint32_t hb = kShortHlen + (dg.header ? kDigestSize : 0);
    uint32_t pdo = round_up(hb, pdo_align);
    uint32_t plen = pdo + d.length + (dg.data ? kDigestSize : 0);
    flags = uint8_t((flags & (kFlagDataLast | kFlagDataSuccess)) | (dg.data ? kFlagDdgst : 0));
    put_common(out, CommonHeader{type, flags, uint8_t(kShortHlen), uint8_t(pdo), plen});
    put_data_fields(out, d);
    size_t n = seal(out, kShortHlen, dg);
    memset(out + n, 0, pdo - n);
    return pdo;
}

size_t build_capsule_cmd(uint8_t* out, const Digests& dg, const NvmeSqe& sqe, uint32_t data_len)
{
    uint32_t hb = kCapsuleCmdHlen + (dg.header ? kDigestSize : 0);
    uint8_t flags = data_len && dg.data ? kFlagDdgst : 0;
    uint32_t plen = hb + data_len + (data_len && dg.data ? kDigestSize : 0);
    put_common(out, CommonHeader{kCapsuleCmd, flags, uint8_t(kCapsuleCmdHlen),
                                 uint8_t(data_len ? hb : 0), plen});
    memcpy(out + 8, sqe.bytes, sizeof(sqe.bytes));
    return seal(out, kCapsuleCmdHlen, dg);
}

}  // namespace qemu::nvme_tcp
