// The initiator's `hostile` command: one malformed stream per case, then
// the C2HTermReq the target answers with ("C2HTermReq fes N fei M") and
// whether it closed the connection afterwards.  tests/interop/nvme-tcp.sh
// checks the values and that the daemon still serves others.
#include <cstdio>
#include <cstring>

#include "initiator.h"
#include "qemu/crc32c.h"

namespace qemu {

using namespace nvme_tcp;

namespace {

// Reads PDUs until a C2HTermReq (printed) and then end of stream.
int expect_termreq(HostQueue& q)
{
    std::vector<uint8_t> pdu;
    while (q.recv_pdu(pdu)) {
        CommonHeader h = parse_common(pdu.data());
        if (h.type != kC2HTermReq || pdu.size() < kTermReqHlen) {
            continue;  // an ICResp or R2T sent before the bad PDU arrived
        }
        printf("C2HTermReq fes %u fei %u\n", load_le16(pdu.data() + 8), load_le32(pdu.data() + 10));
        bool closed = !q.recv_pdu(pdu);
        printf("%s\n", closed ? "connection closed" : "connection still open");
        return closed ? 0 : 1;
    }
    printf("no C2HTermReq: %s\n", q.error().c_str());
    return 1;
}

int send_and_expect(HostQueue& q, const std::vector<uint8_t>& bytes)
{
    if (!q.send_raw(bytes.data(), bytes.size())) {
        die(q.error());
    }
    return expect_termreq(q);
}

// A CapsuleCmd header (no digests) whose plen claims `plen` bytes.
std::vector<uint8_t> capsule_claiming(uint32_t plen)
{
    std::vector<uint8_t> b(kCapsuleCmdHlen, 0);
    put_common(b.data(), CommonHeader{kCapsuleCmd, 0, uint8_t(kCapsuleCmdHlen),
                                      uint8_t(kCapsuleCmdHlen), plen});
    return b;
}

// A controller with one I/O queue and a 16 KiB write on it waiting for its
// data (more than fits in a capsule): returns the R2T.
DataHeader write_waiting_for_data(HostQueue& admin, HostQueue& io, const Target& t, HostCommand& w)
{
    Namespace ns;
    bring_up(admin, t, ns);
    open_io_queue(io, t, ns, 1, 32);
    w.sqe = nvme_sqe_rw(0x01, t.nsid, 0, 16384 / ns.lba_size);
    w.data.assign(16384, 0x5a);
    io.set_in_capsule(0);  // force R2T
    if (!io.submit(w)) {
        die(io.error());
    }
    std::vector<uint8_t> pdu;
    if (!io.recv_pdu(pdu) || parse_common(pdu.data()).type != kR2T) {
        die("hostile: expected an R2T");
    }
    return parse_data_header(pdu.data());
}

std::vector<uint8_t> h2c_data(const DataHeader& d, uint8_t flags)
{
    std::vector<uint8_t> b(kShortHlen + d.length, 0x5a);
    build_data_header(b.data(), kH2CData, flags, Digests{}, 4, d);
    return b;
}

int data_case(const Target& t, bool bad_ttag)
{
    HostQueue admin, io;
    HostCommand w;
    DataHeader r2t = write_waiting_for_data(admin, io, t, w);
    DataHeader d{r2t.cccid, r2t.ttag, 0, 4096};
    if (bad_ttag) {
        d.ttag ^= 0x5555;
    } else {
        d.offset = 4096;  // DATAO must equal the bytes sent so far: 0
    }
    return send_and_expect(io, h2c_data(d, 0));
}

}  // namespace

int hostile_main(const std::string& which, const Target& t)
{
    HostQueue q;
    std::string err;
    if (which == "bad-icreq") {
        if (!q.connect_only(t.host, t.port, t.unix_path, err)) {
            die(err);
        }
        std::vector<uint8_t> ic = build_icreq(ICReq{});
        store_le16(ic.data() + kOffIcPfv, 1);  // PFV 1 does not exist
        return send_and_expect(q, ic);
    }
    if (which == "plen-lie") {
        // 4 GiB of in-capsule data announced; nothing of it may be allocated.
        if (!q.open(t.host, t.port, t.unix_path, Digests{}, err)) {
            die(err);
        }
        return send_and_expect(q, capsule_claiming(0xffffffffu));
    }
    if (which == "short-plen") {
        if (!q.open(t.host, t.port, t.unix_path, Digests{}, err)) {
            die(err);
        }
        return send_and_expect(q, capsule_claiming(16));
    }
    if (which == "header-digest") {
        if (!q.open(t.host, t.port, t.unix_path, Digests{true, false}, err)) {
            die(err);
        }
        std::vector<uint8_t> b(kCapsuleCmdHlen + kDigestSize, 0);
        size_t n = build_capsule_cmd(b.data(), Digests{true, false}, NvmeSqe{}, 0);
        b[n - 1] ^= 0xff;  // corrupt the digest
        return send_and_expect(q, b);
    }
    if (which == "datao-mismatch" || which == "bad-ttag") {
        return data_case(t, which == "bad-ttag");
    }
    die("hostile: unknown case '" + which + "' (bad-icreq, plen-lie, short-plen, header-digest, "
        "datao-mismatch, bad-ttag)");
}

}  // namespace qemu
