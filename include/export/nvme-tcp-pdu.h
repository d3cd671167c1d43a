// NVMe/TCP PDUs (NVMe/TCP Transport Specification 1.0; Linux
// include/linux/nvme-tcp.h): the 8-byte common header, the per-type
// layouts, their validation, and builders for what each side sends.  Shared
// by the target (export/nvme-tcp/), our initiator (tests/nvme/) and the
// tests.  Pure functions on byte buffers: no sockets, no state.
//
// Layout of every PDU: [common header + type header: hlen bytes]
// [header digest: 4 if enabled] [padding up to pdo] [data] [data digest: 4
// if enabled and data is present]; plen counts all of it.  ICReq, ICResp
// and TermReq never carry digests.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "hw/nvme/nvme-spec.h"

namespace qemu::nvme_tcp {

enum PduType : uint8_t {
    kICReq = 0,
    kICResp = 1,
    kH2CTermReq = 2,
    kC2HTermReq = 3,
    kCapsuleCmd = 4,
    kCapsuleResp = 5,
    kH2CData = 6,
    kC2HData = 7,
    kR2T = 9,
};

enum : uint8_t {
    kFlagHdgst = 1,
    kFlagDdgst = 2,
    kFlagDataLast = 4,
    kFlagDataSuccess = 8,
};

// Fatal Error Status of a TermReq.
enum Fes : uint16_t {
    kFesInvalidHeaderField = 1,
    kFesPduSequenceError = 2,
    kFesHeaderDigestError = 3,
    kFesDataOutOfRange = 4,
    kFesDataLimitExceeded = 5,  // "R2T Limit Exceeded" / data limit
    kFesUnsupportedParameter = 6,
};

constexpr size_t kCommonHeaderSize = 8;
constexpr size_t kICSize = 128;          // ICReq and ICResp: hlen = plen
constexpr size_t kTermReqHlen = 24;
constexpr size_t kMaxTermReqData = 128;  // offending header bytes echoed
constexpr size_t kCapsuleCmdHlen = 72;
constexpr size_t kShortHlen = 24;  // CapsuleResp, H2CData, C2HData, R2T
constexpr size_t kDigestSize = 4;
// The largest header with its digest; every header fits in this buffer.
constexpr size_t kMaxHeaderSize = kICSize + kDigestSize;

// Offsets of header fields, for a TermReq's FEI.
enum : uint32_t {
    kOffType = 0,
    kOffFlags = 1,
    kOffHlen = 2,
    kOffPdo = 3,
    kOffPlen = 4,
    kOffCccid = 8,   // H2CData/C2HData/R2T
    kOffTtag = 10,
    kOffDatao = 12,
    kOffDatal = 16,
    kOffIcPfv = 8,   // ICReq/ICResp
    kOffIcHpda = 10,
    kOffIcDgst = 11,
};

struct CommonHeader {
    uint8_t type = 0;
    uint8_t flags = 0;
    uint8_t hlen = 0;
    uint8_t pdo = 0;
    uint32_t plen = 0;
};
CommonHeader parse_common(const uint8_t* p);
void put_common(uint8_t* p, const CommonHeader& h);

// A validation failure: the TermReq to send (fes 0: no failure).
struct PduError {
    uint16_t fes = 0;
    uint32_t fei = 0;  // the offending field's byte offset in the header
    explicit operator bool() const { return fes != 0; }
};

struct Digests {
    bool header = false;
    bool data = false;
};

// Where the parts of a validated PDU are, relative to its start.
struct PduLayout {
    uint32_t header_bytes = 0;  // hlen + header digest
    uint32_t data_offset = 0;   // pdo, or plen when there is no data
    uint32_t data_len = 0;
    uint32_t data_digest = 0;   // 4 when a data digest follows the data
};

// Which side receives the PDU being checked.
enum class Receiver { Controller, Host };

// Checks the common header of a PDU received after the ICReq/ICResp
// exchange: a type the sender may send (TermReq and data-carrying types),
// its fixed hlen, digest flags as negotiated, pdo aligned to `pdo_align`
// and inside the PDU, plen consistent, data no longer than max_data.
// Fills `out` on success.
PduError check_header(const CommonHeader& h, Receiver rcv, const Digests& dg, uint32_t max_data,
                      uint32_t pdo_align, PduLayout& out);

// The header digest of hdr[0, hlen) as stored little-endian after it.
uint32_t header_digest(const uint8_t* hdr, size_t hlen);
bool header_digest_ok(const uint8_t* hdr, size_t hlen);

// --- Initialize Connection ---------------------------------------------

struct ICReq {
    uint16_t pfv = 0;
    uint8_t hpda = 0;      // host PDU data alignment, 0's based dwords
    Digests dg;
    uint32_t maxr2t = 0;   // 0's based
};
// Validates a whole 128-byte ICReq (plen, hlen, PFV 0, HPDA <= 31).
PduError parse_icreq(const uint8_t* p, size_t len, ICReq& out);
std::vector<uint8_t> build_icreq(const ICReq& req);

struct ICResp {
    uint16_t pfv = 0;
    uint8_t cpda = 0;
    Digests dg;
    uint32_t maxh2cdata = 0;
};
std::vector<uint8_t> build_icresp(const ICResp& resp);
// What the Linux host checks (type, plen, PFV 0, CPDA 0, MAXH2CDATA >= 4096
// and a multiple of 4); false with the reason in `why`.
bool parse_icresp(const uint8_t* p, size_t len, ICResp& out, const char*& why);

// --- Termination ----------------------------------------------------------

// A TermReq of `type` (kC2HTermReq or kH2CTermReq) echoing up to 128 bytes
// of the offending header.
std::vector<uint8_t> build_termreq(uint8_t type, const PduError& e, const uint8_t* hdr,
                                   size_t hdr_len);

// --- Headers of the data-phase PDUs ---------------------------------------
// Each builder writes hlen bytes (+ the header digest when dg.header) and
// returns that size; data and its digest are the caller's to send.

struct DataHeader {
    uint16_t cccid = 0;
    uint16_t ttag = 0;
    uint32_t offset = 0;  // DATAO / R2TO
    uint32_t length = 0;  // DATAL / R2TL
};
DataHeader parse_data_header(const uint8_t* p);

size_t build_capsule_resp(uint8_t* out, const Digests& dg, const NvmeCqe& cqe);
size_t build_r2t(uint8_t* out, const Digests& dg, const DataHeader& d);
// C2HData or H2CData with d.length bytes of data following after pdo,
// which the header places at hlen + digest rounded up to pdo_align.
size_t build_data_header(uint8_t* out, uint8_t type, uint8_t flags, const Digests& dg,
                         uint32_t pdo_align, const DataHeader& d);
// A CapsuleCmd with data_len bytes of in-capsule data after it.
size_t build_capsule_cmd(uint8_t* out, const Digests& dg, const NvmeSqe& sqe, uint32_t data_len);

}  // namespace qemu::nvme_tcp
