// Get Log Page (admin 02h): error information, SMART / health, firmware
// slots, changed namespaces, commands supported and effects, and the
// discovery log of discovery controllers.  NUMD, the offset and RAE are
// honoured for every page.
#include <algorithm>
#include <cstring>

#include "hw/nvme/nvme-int.h"

namespace qemu {

namespace {

enum : uint8_t {
    kLidErrorInfo = 0x01,
    kLidSmart = 0x02,
    kLidFirmwareSlot = 0x03,
    kLidChangedNamespaces = 0x04,
    kLidCommandEffects = 0x05,
    kLidDiscovery = 0x70,
};

constexpr uint32_t kCsupp = 1u << 0;  // command supported
constexpr uint32_t kLbcc = 1u << 1;   // it may change logical block content

std::vector<uint8_t> error_log(const NvmeController& c)
{
    constexpr size_t kEntry = 64;
    std::vector<uint8_t> log(kEntry * kNvmeErrorLogEntries);
    uint8_t* e = log.data();
    for (const auto& err : c.errors()) {
        store_le64(e + 0, err.count);
        store_le16(e + 8, err.sqid);
        store_le16(e + 10, err.cid);
        store_le16(e + 12, uint16_t(err.status << 1));  // status field, phase 0
        store_le16(e + 14, 0xffff);                     // no parameter location
        store_le64(e + 16, err.lba);
        store_le32(e + 24, err.nsid);
        e[29] = c.port().trtype;
        e += kEntry;
    }
    return log;
}

// A 128-bit little-endian counter from a 64-bit value.
void put_u128(uint8_t* p, uint64_t v)
{
    store_le64(p, v);
    store_le64(p + 8, 0);
}

std::vector<uint8_t> smart_log(NvmeController& c)
{
    std::vector<uint8_t> log(512);
    const auto& n = c.counters();
    // No temperature sensor: composite temperature 0 K (see docs).
    log[3] = 100;  // available spare, %
    log[4] = 10;   // its threshold
    constexpr uint64_t kDataUnit = 512 * 1000;
    put_u128(&log[32], (n.bytes_read + kDataUnit - 1) / kDataUnit);
    put_u128(&log[48], (n.bytes_written + kDataUnit - 1) / kDataUnit);
    put_u128(&log[64], n.read_cmds);
    put_u128(&log[80], n.write_cmds);
    uint64_t hours = uint64_t(AioContext::now_ns() - c.created_ns()) / 3600000000000ull;
    put_u128(&log[128], hours);
    put_u128(&log[160], n.media_errors);
    put_u128(&log[176], c.error_count());
    return log;
}

std::vector<uint8_t> effects_log(uint8_t csi)
{
    std::vector<uint8_t> log(4096);
    auto admin = [&](uint8_t op) { store_le32(&log[4 * op], kCsupp); };
    auto io = [&](uint8_t op, uint32_t v) { store_le32(&log[1024 + 4 * op], v); };
    for (uint8_t op : {0x02, 0x06, 0x08, 0x09, 0x0a, 0x0c, 0x18}) {
        admin(op);
    }
    io(0x00, kCsupp);          // Flush
    io(0x01, kCsupp | kLbcc);  // Write
    io(0x02, kCsupp);          // Read
    io(0x05, kCsupp);          // Compare
    io(0x08, kCsupp | kLbcc);  // Write Zeroes
    io(0x09, kCsupp | kLbcc);  // Dataset Management
    if (csi == NVME_CSI_ZONED) {
        io(0x79, kCsupp | kLbcc);  // Zone Management Send
        io(0x7a, kCsupp);          // Zone Management Receive
        io(0x7d, kCsupp | kLbcc);  // Zone Append
    }
    return log;
}

}  // namespace

void nvme_c2h_window(NvmeRequest& req, const std::vector<uint8_t>& whole, uint64_t offset,
                     uint32_t len)
{
    uint64_t avail = offset < whole.size() ? whole.size() - offset : 0;
    uint32_t n = uint32_t(std::min<uint64_t>(avail, len));
    req.data.from_buf(0, whole.data() + offset, n);
    req.data.memset(n, 0, len - n);
    req.c2h_bytes = len;
}

uint16_t nvme_get_log_page(NvmeController& c, NvmeRequest& req)
{
    const NvmeSqe& sqe = req.sqe;
    uint8_t lid = uint8_t(sqe.cdw(10));
    bool rae = (sqe.cdw(10) >> 15) & 1;
    uint64_t numd = uint64_t(sqe.cdw(11) & 0xffff) << 16 | sqe.cdw(10) >> 16;
    uint64_t len = (numd + 1) * 4;
    uint64_t offset = uint64_t(sqe.cdw(13)) << 32 | sqe.cdw(12);
    uint8_t csi = uint8_t(sqe.cdw(14) >> 24);
    if (offset & 3) {
        return NVME_SC_INVALID_FIELD | NVME_SC_DNR;
    }
    if (!nvme_data_fits(req, len)) {
        return NVME_SC_SGL_INVALID_DATA_LENGTH | NVME_SC_DNR;
    }
    if (c.discovery() != (lid == kLidDiscovery)) {
        return NVME_SC_INVALID_LOG_PAGE | NVME_SC_DNR;
    }
    std::vector<uint8_t> log;
    switch (lid) {
    case kLidDiscovery:
        return nvme_discovery_log(c, offset, req, uint32_t(len));
    case kLidErrorInfo:
        log = error_log(c);
        break;
    case kLidSmart:
        if (sqe.nsid() != 0 && sqe.nsid() != 0xffffffff) {
            return NVME_SC_INVALID_FIELD | NVME_SC_DNR;  // no per-namespace SMART (LPA bit 0)
        }
        log = smart_log(c);
        break;
    case kLidFirmwareSlot:
        log.resize(512);
        log[0] = 1;  // AFI: slot 1 active
        nvme_put_padded(&log[8], 8, QEMU_ZONED_VERSION);
        break;
    case kLidChangedNamespaces: {
        log.resize(4096);
        auto list = c.take_changed_namespaces(rae);
        for (size_t i = 0; i < list.size(); i++) {
            store_le32(&log[4 * i], list[i]);
        }
        break;
    }
    case kLidCommandEffects:
        if (csi != NVME_CSI_NVM && csi != NVME_CSI_ZONED) {
            return NVME_SC_INVALID_FIELD | NVME_SC_DNR;
        }
        log = effects_log(csi);
        break;
    default:
        return NVME_SC_INVALID_LOG_PAGE | NVME_SC_DNR;
    }
    if (offset > log.size()) {
        return NVME_SC_INVALID_FIELD | NVME_SC_DNR;
    }
    nvme_c2h_window(req, log, offset, uint32_t(len));
    return NVME_SC_SUCCESS;
}

}  // namespace qemu
