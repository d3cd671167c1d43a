// The NBD protocol's wire constants, shared by the server (export/nbd/) and
// the client driver (block/nbd.cc).  Names follow the protocol document
// (NetworkBlockDevice/nbd doc/proto.md, with the extended-headers
// extension).  Every integer on the wire is big-endian: read and write
// them with include/qemu/bswap.h.
#pragma once

#include <cstdint>

namespace qemu::nbd {

constexpr uint16_t kDefaultPort = 10809;

// Magic numbers.
constexpr uint64_t kInitPasswd = 0x4e42444d41474943ULL;  // "NBDMAGIC"
constexpr uint64_t kOptsMagic = 0x49484156454F5054ULL;   // "IHAVEOPT"
constexpr uint64_t kRepMagic = 0x0003e889045565a9ULL;
constexpr uint32_t kRequestMagic = 0x25609513;
constexpr uint32_t kExtendedRequestMagic = 0x21e41c71;
constexpr uint32_t kSimpleReplyMagic = 0x67446698;
constexpr uint32_t kStructuredReplyMagic = 0x668e33ef;
constexpr uint32_t kExtendedReplyMagic = 0x6e8a278c;

// Handshake flags (server, u16) and client flags (u32).
constexpr uint16_t kFlagFixedNewstyle = 1 << 0;
constexpr uint16_t kFlagNoZeroes = 1 << 1;
constexpr uint32_t kFlagCFixedNewstyle = 1 << 0;
constexpr uint32_t kFlagCNoZeroes = 1 << 1;

// Options.
enum Option : uint32_t {
    kOptExportName = 1,
    kOptAbort = 2,
    kOptList = 3,
    kOptStartTls = 5,
    kOptInfo = 6,
    kOptGo = 7,
    kOptStructuredReply = 8,
    kOptListMetaContext = 9,
    kOptSetMetaContext = 10,
    kOptExtendedHeaders = 11,
};

// Option replies; errors have bit 31 set.
constexpr uint32_t kRepErrBit = 1U << 31;
enum OptionReply : uint32_t {
    kRepAck = 1,
    kRepServer = 2,
    kRepInfo = 3,
    kRepMetaContext = 4,
    kRepErrUnsup = kRepErrBit | 1,
    kRepErrPolicy = kRepErrBit | 2,
    kRepErrInvalid = kRepErrBit | 3,
    kRepErrPlatform = kRepErrBit | 4,
    kRepErrTlsReqd = kRepErrBit | 5,
    kRepErrUnknown = kRepErrBit | 6,
    kRepErrShutdown = kRepErrBit | 7,
    kRepErrBlockSizeReqd = kRepErrBit | 8,
    kRepErrTooBig = kRepErrBit | 9,
    kRepErrExtHeaderReqd = kRepErrBit | 10,
};

// Information types in kRepInfo (and requested by INFO/GO).
enum Info : uint16_t {
    kInfoExport = 0,
    kInfoName = 1,
    kInfoDescription = 2,
    kInfoBlockSize = 3,
};

// Transmission flags (u16).
enum TransmissionFlag : uint16_t {
    kFlagHasFlags = 1 << 0,
    kFlagReadOnly = 1 << 1,
    kFlagSendFlush = 1 << 2,
    kFlagSendFua = 1 << 3,
    kFlagRotational = 1 << 4,
    kFlagSendTrim = 1 << 5,
    kFlagSendWriteZeroes = 1 << 6,
    kFlagSendDf = 1 << 7,
    kFlagCanMultiConn = 1 << 8,
    kFlagSendResize = 1 << 9,
    kFlagSendCache = 1 << 10,
    kFlagSendFastZero = 1 << 11,
    kFlagBlockStatPayload = 1 << 12,
};

// Commands and their flags.
enum Command : uint16_t {
    kCmdRead = 0,
    kCmdWrite = 1,
    kCmdDisc = 2,
    kCmdFlush = 3,
    kCmdTrim = 4,
    kCmdCache = 5,
    kCmdWriteZeroes = 6,
    kCmdBlockStatus = 7,
};
enum CommandFlag : uint16_t {
    kCmdFlagFua = 1 << 0,
    kCmdFlagNoHole = 1 << 1,
    kCmdFlagDf = 1 << 2,
    kCmdFlagReqOne = 1 << 3,
    kCmdFlagFastZero = 1 << 4,
    kCmdFlagPayloadLen = 1 << 5,
};

// Structured and extended reply chunks.
constexpr uint16_t kReplyFlagDone = 1 << 0;
enum ReplyType : uint16_t {
    kReplyTypeNone = 0,
    kReplyTypeOffsetData = 1,
    kReplyTypeOffsetHole = 2,
    kReplyTypeBlockStatus = 5,
    kReplyTypeBlockStatusExt = 6,
    kReplyTypeError = (1 << 15) + 1,
    kReplyTypeErrorOffset = (1 << 15) + 2,
};
constexpr bool reply_type_is_error(uint16_t type) { return type & (1 << 15); }

// Wire sizes of the fixed parts.
constexpr unsigned kRequestSize = 28;
constexpr unsigned kExtendedRequestSize = 32;
constexpr unsigned kSimpleReplySize = 16;
constexpr unsigned kStructuredReplySize = 20;
constexpr unsigned kExtendedReplySize = 32;
constexpr unsigned kOptionHeaderSize = 16;
constexpr unsigned kOptionReplyHeaderSize = 20;

// Metadata contexts and their flags.
constexpr const char* kContextBaseAllocation = "base:allocation";
constexpr const char* kContextAllocationDepth = "qemu:allocation-depth";
constexpr uint32_t kStateHole = 1 << 0;
constexpr uint32_t kStateZero = 1 << 1;

// QEMU's limits: payloads (READ/WRITE/CACHE, option data) up to 32 MiB,
// names and query strings up to 4096 bytes.
constexpr uint32_t kMaxBufferSize = 32 << 20;
constexpr uint32_t kMaxStringSize = 4096;

// Errors on the wire and QEMU's mapping to and from host errnos.
enum WireError : uint32_t {
    kEperm = 1,
    kEio = 5,
    kEnomem = 12,
    kEinval = 22,
    kEnospc = 28,
    kEoverflow = 75,
    kEnotsup = 95,
    kEshutdown = 108,
};
// Host errno (either sign) to wire value: EPERM/EROFS 1, EIO 5, ENOMEM 12,
// EDQUOT/EFBIG/ENOSPC 28, EOVERFLOW 75, ENOTSUP 95, ESHUTDOWN 108, any
// other EINVAL (22).
uint32_t errno_to_wire(int err);
// Wire value to a positive host errno; unknown values are EINVAL.
int wire_to_errno(uint32_t err);

}  // namespace qemu::nbd
