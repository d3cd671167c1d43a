// NVMe/TCP PDU layer (include/export/nvme-tcp-pdu.h) and CRC-32C
// (include/qemu/crc32c.h): header validation per type, digests, ICReq and
// ICResp rules the Linux host and nvmet apply, TermReq layout.
#include <catch2/catch.hpp>

#include <cstring>
#include <string>

#include "export/nvme-tcp-pdu.h"
#include "qemu/crc32c.h"

using namespace qemu;
using namespace qemu::nvme_tcp;

TEST_CASE("crc32c matches the published check values", "[nvme-tcp]")
{
    const std::string digits = "123456789";
    CHECK(crc32c(0, digits.data(), digits.size()) == 0xe3069283u);
    uint8_t buf[32];
    memset(buf, 0, sizeof(buf));
    CHECK(crc32c(0, buf, sizeof(buf)) == 0x8a9136aau);  // RFC 3720 B.4
    memset(buf, 0xff, sizeof(buf));
    CHECK(crc32c(0, buf, sizeof(buf)) == 0x62a8ab43u);
    for (int i = 0; i < 32; i++) {
        buf[i] = uint8_t(i);
    }
    CHECK(crc32c(0, buf, sizeof(buf)) == 0x46dd794eu);
    // Chained pieces and iovecs give the CRC of the whole.
    uint32_t c = crc32c(0, buf, 5);
    CHECK(crc32c(c, buf + 5, 27) == 0x46dd794eu);
    iovec iov[3] = {{buf, 3}, {buf + 3, 20}, {buf + 23, 9}};
    CHECK(crc32c_iov(0, iov, 3, 32) == 0x46dd794eu);
    CHECK(crc32c_iov(0, iov, 3, 5) == crc32c(0, buf, 5));
}

namespace {

CommonHeader hdr(uint8_t type, uint8_t flags, uint8_t hlen, uint8_t pdo, uint32_t plen)
{
    return CommonHeader{type, flags, hlen, pdo, plen};
}

PduError check_ctrl(const CommonHeader& h, Digests dg = {}, uint32_t max = 8192)
{
    PduLayout l;
    return check_header(h, Receiver::Controller, dg, max, 4, l);
}

}  // namespace

TEST_CASE("CapsuleCmd headers: lengths, digests and in-capsule data", "[nvme-tcp]")
{
    PduLayout l;
    // No data: plen = hlen, pdo 0 as Linux sends it.
    REQUIRE_FALSE(check_header(hdr(kCapsuleCmd, 0, 72, 0, 72), Receiver::Controller, {}, 8192, 4, l));
    CHECK(l.header_bytes == 72);
    CHECK(l.data_len == 0);
    // 1 KiB in-capsule at pdo 72.
    REQUIRE_FALSE(check_header(hdr(kCapsuleCmd, 0, 72, 72, 72 + 1024), Receiver::Controller, {}, 8192, 4, l));
    CHECK(l.data_offset == 72);
    CHECK(l.data_len == 1024);
    CHECK(l.data_digest == 0);
    // Both digests: header digest after hlen, data digest after the data.
    Digests both{true, true};
    REQUIRE_FALSE(check_header(hdr(kCapsuleCmd, kFlagHdgst | kFlagDdgst, 72, 76, 76 + 512 + 4),
                               Receiver::Controller, both, 8192, 4, l));
    CHECK(l.header_bytes == 76);
    CHECK(l.data_len == 512);
    CHECK(l.data_digest == 4);
    // Without data the data digest flag must be clear.
    CHECK_FALSE(check_ctrl(hdr(kCapsuleCmd, kFlagHdgst, 72, 0, 76), both));
    CHECK(check_ctrl(hdr(kCapsuleCmd, kFlagHdgst | kFlagDdgst, 72, 0, 76), both).fei == kOffFlags);

    SECTION("hostile lengths and offsets")
    {
        CHECK(check_ctrl(hdr(kCapsuleCmd, 0, 24, 0, 72)).fei == kOffHlen);
        CHECK(check_ctrl(hdr(kCapsuleCmd, 0, 72, 0, 71)).fei == kOffPlen);
        CHECK(check_ctrl(hdr(kCapsuleCmd, 0, 72, 0, 0)).fei == kOffPlen);
        // pdo inside the header, unaligned, or past the end.
        CHECK(check_ctrl(hdr(kCapsuleCmd, 0, 72, 8, 100)).fei == kOffPdo);
        CHECK(check_ctrl(hdr(kCapsuleCmd, 0, 72, 74, 100)).fei == kOffPdo);
        CHECK(check_ctrl(hdr(kCapsuleCmd, 0, 72, 200, 100)).fei == kOffPdo);
        CHECK(check_ctrl(hdr(kCapsuleCmd, 0, 72, 100, 100)).fei == kOffPdo);
        // More in-capsule data than offered; a 4 GiB plen.
        PduError e = check_ctrl(hdr(kCapsuleCmd, 0, 72, 72, 72 + 8193));
        CHECK(e.fes == kFesDataLimitExceeded);
        CHECK(check_ctrl(hdr(kCapsuleCmd, 0, 72, 72, 0xffffffffu)).fes == kFesDataLimitExceeded);
        // Digest flags that differ from the negotiated ones.
        CHECK(check_ctrl(hdr(kCapsuleCmd, kFlagHdgst, 72, 0, 76)).fei == kOffFlags);
        CHECK(check_ctrl(hdr(kCapsuleCmd, 0, 72, 0, 72), Digests{true, false}).fei == kOffFlags);
        CHECK(check_ctrl(hdr(kCapsuleCmd, 0, 72, 72, 80), Digests{false, true}).fei == kOffFlags);
        // A data digest bigger than what is left after pdo.
        CHECK(check_ctrl(hdr(kCapsuleCmd, kFlagDdgst, 72, 72, 76), Digests{false, true}).fei == kOffPdo);
    }
}

TEST_CASE("PDU types each side may receive", "[nvme-tcp]")
{
    PduLayout l;
    // A second ICReq is a sequence error; controller-to-host types are
    // invalid at the controller and the other way round.
    CHECK(check_ctrl(hdr(kICReq, 0, 128, 0, 128)).fes == kFesPduSequenceError);
    for (uint8_t t : {uint8_t(kICResp), uint8_t(kC2HTermReq), uint8_t(kCapsuleResp), uint8_t(kC2HData),
                      uint8_t(kR2T), uint8_t(8), uint8_t(10), uint8_t(255)}) {
        PduError e = check_ctrl(hdr(t, 0, 24, 0, 24));
        CHECK(e.fes != 0);
        CHECK(e.fei == kOffType);
    }
    CHECK(check_header(hdr(kCapsuleCmd, 0, 72, 0, 72), Receiver::Host, {}, 8192, 4, l).fei == kOffType);
    CHECK_FALSE(check_header(hdr(kCapsuleResp, 0, 24, 0, 24), Receiver::Host, {}, 0, 4, l));
    CHECK_FALSE(check_header(hdr(kR2T, 0, 24, 0, 24), Receiver::Host, {}, 0, 4, l));
    // A CapsuleResp or R2T with data is malformed.
    CHECK(check_header(hdr(kCapsuleResp, 0, 24, 24, 28), Receiver::Host, {}, 4096, 4, l).fei == kOffPlen);
    // H2CData without data is malformed; with data it is bounded by max_data.
    CHECK(check_ctrl(hdr(kH2CData, 0, 24, 0, 24)).fei == kOffPlen);
    CHECK_FALSE(check_ctrl(hdr(kH2CData, 0, 24, 24, 24 + 4096), {}, 4096));
    CHECK(check_ctrl(hdr(kH2CData, 0, 24, 24, 24 + 4100), {}, 4096).fes == kFesDataLimitExceeded);
    // TermReq: 24..152 bytes, no digests.
    REQUIRE_FALSE(check_header(hdr(kH2CTermReq, 0, 24, 0, 24 + 128), Receiver::Controller, {true, true}, 0, 4, l));
    CHECK(l.data_len == 128);
    CHECK(check_ctrl(hdr(kH2CTermReq, 0, 24, 0, 24 + 129)).fei == kOffPlen);
    CHECK(check_ctrl(hdr(kH2CTermReq, 0, 72, 0, 72)).fei == kOffHlen);
}

TEST_CASE("ICReq and ICResp", "[nvme-tcp]")
{
    ICReq req;
    req.hpda = 3;
    req.dg = Digests{true, false};
    req.maxr2t = 7;
    std::vector<uint8_t> b = build_icreq(req);
    REQUIRE(b.size() == 128);
    ICReq got;
    REQUIRE_FALSE(parse_icreq(b.data(), b.size(), got));
    CHECK(got.hpda == 3);
    CHECK(got.dg.header);
    CHECK_FALSE(got.dg.data);
    CHECK(got.maxr2t == 7);

    SECTION("what the target refuses")
    {
        std::vector<uint8_t> bad = b;
        store_le16(bad.data() + kOffIcPfv, 1);
        PduError e = parse_icreq(bad.data(), bad.size(), got);
        CHECK(e.fes == kFesUnsupportedParameter);
        CHECK(e.fei == kOffIcPfv);
        bad = b;
        store_le32(bad.data() + 4, 132);
        CHECK(parse_icreq(bad.data(), bad.size(), got).fei == kOffPlen);
        bad = b;
        bad[2] = 24;
        CHECK(parse_icreq(bad.data(), bad.size(), got).fei == kOffHlen);
        bad = b;
        bad[kOffIcHpda] = 32;
        CHECK(parse_icreq(bad.data(), bad.size(), got).fei == kOffIcHpda);
        bad = b;
        bad[0] = kCapsuleCmd;
        CHECK(parse_icreq(bad.data(), bad.size(), got).fes == kFesPduSequenceError);
    }

    SECTION("what the Linux host refuses in an ICResp")
    {
        ICResp resp{0, 0, Digests{true, true}, 131072};
        std::vector<uint8_t> r = build_icresp(resp);
        ICResp out;
        const char* why = nullptr;
        REQUIRE(parse_icresp(r.data(), r.size(), out, why));
        CHECK(out.maxh2cdata == 131072);
        CHECK(out.dg.header);
        CHECK(out.dg.data);
        resp.maxh2cdata = 4094;
        r = build_icresp(resp);
        CHECK_FALSE(parse_icresp(r.data(), r.size(), out, why));
        resp.maxh2cdata = 8190;
        r = build_icresp(resp);
        CHECK_FALSE(parse_icresp(r.data(), r.size(), out, why));
        resp.maxh2cdata = 8192;
        resp.cpda = 1;
        r = build_icresp(resp);
        CHECK_FALSE(parse_icresp(r.data(), r.size(), out, why));
    }
}

TEST_CASE("Built headers pass the receiver's checks", "[nvme-tcp]")
{
    uint8_t buf[kMaxHeaderSize + 256];
    PduLayout l;
    for (Digests dg : {Digests{false, false}, Digests{true, false}, Digests{false, true}, Digests{true, true}}) {
        NvmeCqe cqe{};
        cqe.set_cid(0xbeef);
        size_t n = build_capsule_resp(buf, dg, cqe);
        CommonHeader h = parse_common(buf);
        REQUIRE_FALSE(check_header(h, Receiver::Host, dg, 0, 4, l));
        CHECK(n == l.header_bytes);
        CHECK(h.plen == n);
        if (dg.header) {
            CHECK(header_digest_ok(buf, 24));
            buf[10] ^= 1;
            CHECK_FALSE(header_digest_ok(buf, 24));
        }

        DataHeader d{7, 0, 8192, 4096};
        for (uint32_t align : {4u, 128u}) {
            n = build_data_header(buf, kC2HData, kFlagDataLast, dg, align, d);
            h = parse_common(buf);
            REQUIRE_FALSE(check_header(h, Receiver::Host, dg, 4096, align, l));
            CHECK(n == h.pdo);
            CHECK(h.pdo % align == 0);
            CHECK(l.data_len == 4096);
            CHECK((h.flags & kFlagDataLast) != 0);
            DataHeader back = parse_data_header(buf);
            CHECK(back.cccid == 7);
            CHECK(back.offset == 8192);
            CHECK(back.length == 4096);
        }

        NvmeSqe sqe{};
        sqe.bytes[0] = 0x01;
        n = build_capsule_cmd(buf, dg, sqe, 512);
        h = parse_common(buf);
        REQUIRE_FALSE(check_header(h, Receiver::Controller, dg, 8192, 4, l));
        CHECK(l.data_offset == n);
        CHECK(l.data_len == 512);
        n = build_capsule_cmd(buf, dg, sqe, 0);
        REQUIRE_FALSE(check_header(parse_common(buf), Receiver::Controller, dg, 8192, 4, l));
        CHECK(l.data_len == 0);

        n = build_r2t(buf, dg, DataHeader{3, 9, 0, 65536});
        REQUIRE_FALSE(check_header(parse_common(buf), Receiver::Host, dg, 0, 4, l));
        CHECK(parse_data_header(buf).ttag == 9);
    }
}

TEST_CASE("TermReq echoes at most 128 header bytes", "[nvme-tcp]")
{
    uint8_t offending[200];
    for (int i = 0; i < 200; i++) {
        offending[i] = uint8_t(i);
    }
    std::vector<uint8_t> t = build_termreq(kC2HTermReq, PduError{kFesDataOutOfRange, 12}, offending, 200);
    REQUIRE(t.size() == 24 + 128);
    CommonHeader h = parse_common(t.data());
    CHECK(h.type == kC2HTermReq);
    CHECK(h.hlen == 24);
    CHECK(h.plen == 152);
    CHECK(load_le16(t.data() + 8) == kFesDataOutOfRange);
    CHECK(load_le32(t.data() + 10) == 12);
    CHECK(memcmp(t.data() + 24, offending, 128) == 0);
    t = build_termreq(kC2HTermReq, PduError{kFesPduSequenceError, 0}, offending, 8);
    CHECK(t.size() == 32);
}
