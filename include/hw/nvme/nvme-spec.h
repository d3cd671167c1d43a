// NVMe wire layouts shared by the controller model (hw/nvme/) and the
// transports (export/nvme-tcp/): the 64-byte submission queue entry, the
// 16-byte completion, opcodes and status codes (NVMe Base 2.0, NVMe over
// Fabrics 1.1, ZNS 1.1).  Multi-byte fields are little-endian on the wire;
// the accessors convert, so the structs can be copied to and from PDUs as
// they are.
#pragma once

#include <cstdint>
#include <cstring>

#include "qemu/bswap.h"

namespace qemu {

// A submission queue entry, kept as its 64 wire bytes.
struct NvmeSqe {
    uint8_t bytes[64];

    uint8_t opcode() const { return bytes[0]; }
    // FUSE 1:0, PSDT 7:6 (2 or 1: SGL; 0: PRP, which fabrics never use)
    uint8_t flags() const { return bytes[1]; }
    uint16_t cid() const { return le16_at(2); }
    uint32_t nsid() const { return le32_at(4); }
    // Fabrics commands (opcode 7Fh) keep their type in byte 4.
    uint8_t fctype() const { return bytes[4]; }
    // The one SGL descriptor of DPTR (bytes 24-39): address, length, type.
    uint64_t sgl_address() const { return le64_at(24); }
    uint32_t sgl_length() const { return le32_at(32); }
    uint8_t sgl_type() const { return bytes[39]; }  // type << 4 | subtype
    // Command dword N (10..15 for most commands; 2, 3 too).
    uint32_t cdw(unsigned n) const { return le32_at(4 * n); }
    void set_cdw(unsigned n, uint32_t v) { set_le32_at(4 * n, v); }

    uint16_t le16_at(unsigned off) const { return load_le16(bytes + off); }
    uint32_t le32_at(unsigned off) const { return load_le32(bytes + off); }
    uint64_t le64_at(unsigned off) const { return load_le64(bytes + off); }
    void set_le16_at(unsigned off, uint16_t v) { store_le16(bytes + off, v); }
    void set_le32_at(unsigned off, uint32_t v) { store_le32(bytes + off, v); }
    void set_le64_at(unsigned off, uint64_t v) { store_le64(bytes + off, v); }
};
static_assert(sizeof(NvmeSqe) == 64);

// A completion queue entry, kept as its 16 wire bytes.
struct NvmeCqe {
    uint8_t bytes[16];

    uint32_t dw0() const { return load_le32(bytes); }
    uint32_t dw1() const { return load_le32(bytes + 4); }
    uint16_t sqhd() const { return load_le16(bytes + 8); }
    uint16_t sqid() const { return load_le16(bytes + 10); }
    uint16_t cid() const { return load_le16(bytes + 12); }
    // Status field without the phase bit: DNR 14, M 13, CRD 12:11, SCT
    // 10:8, SC 7:0 (0 = success).
    uint16_t status() const { return uint16_t(load_le16(bytes + 14) >> 1); }

    void set_dw0(uint32_t v) { store_le32(bytes, v); }
    void set_dw1(uint32_t v) { store_le32(bytes + 4, v); }
    void set_sqhd(uint16_t v) { store_le16(bytes + 8, v); }
    void set_sqid(uint16_t v) { store_le16(bytes + 10, v); }
    void set_cid(uint16_t v) { store_le16(bytes + 12, v); }
    void set_status(uint16_t status) { store_le16(bytes + 14, uint16_t(status << 1)); }
};
static_assert(sizeof(NvmeCqe) == 16);

// Which way a command's data flows (opcode bits 1:0; Fabrics: fctype bits 1:0).
enum class NvmeDataDirection : uint8_t { None = 0, HostToCtrl = 1, CtrlToHost = 2, Both = 3 };
inline NvmeDataDirection nvme_data_direction(const NvmeSqe& sqe)
{
    uint8_t code = sqe.opcode() == 0x7f ? sqe.fctype() : sqe.opcode();
    return NvmeDataDirection(code & 3);
}

// SGL descriptor types (type << 4 | subtype) that fabrics hosts send.
enum : uint8_t {
    NVME_SGL_DATA_BLOCK_OFFSET = 0x01,     // in-capsule data, address = offset
    NVME_SGL_TRANSPORT_DATA_BLOCK = 0x5a,  // data moved by the transport (R2T/C2H)
};

enum : uint8_t {
    NVMF_TRTYPE_TCP = 3,
    NVMF_ADRFAM_IPV4 = 1,
    NVMF_ADRFAM_IPV6 = 2,
    NVME_OPC_FABRICS = 0x7f,
    NVMF_FCTYPE_PROPERTY_SET = 0x00,
    NVMF_FCTYPE_CONNECT = 0x01,
    NVMF_FCTYPE_PROPERTY_GET = 0x04,
};

// Status values as NvmeCqe::set_status() takes them (SCT << 8 | SC, DNR
// 0x4000).  Generic (SCT 0) ones the transports need themselves; the model
// has the rest.
enum : uint16_t {
    NVME_SC_SUCCESS = 0x0000,
    NVME_SC_INVALID_OPCODE = 0x0001,
    NVME_SC_INVALID_FIELD = 0x0002,
    NVME_SC_DATA_TRANSFER_ERROR = 0x0004,
    NVME_SC_INTERNAL = 0x0006,
    NVME_SC_ABORT_SQ_DELETION = 0x0008,
    NVME_SC_COMMAND_SEQUENCE_ERROR = 0x000c,
    NVME_SC_SGL_INVALID_DATA_LENGTH = 0x000f,
    NVME_SC_SGL_INVALID_TYPE = 0x0011,
    NVME_SC_SGL_INVALID_OFFSET = 0x0016,
    NVME_SC_DNR = 0x4000,
};

inline constexpr const char kNvmeDiscoveryNqn[] = "nqn.2014-08.org.nvmexpress.discovery";

}  // namespace qemu
