// The Zoned Namespace command set: Zone Management Send and Receive, Zone
// Append.  Geometry and limits come from the node's BlockLimits; zone
// rules are the block layer's, and its zone errors become the ZNS
// statuses through nvme_status_from_result().
#include <algorithm>
#include <cstring>
#include <optional>

#include "hw/nvme/nvme-int.h"

namespace qemu {

namespace {

enum : uint8_t {
    kZsaClose = 0x01,
    kZsaFinish = 0x02,
    kZsaOpen = 0x03,
    kZsaReset = 0x04,
    kZsaOffline = 0x05,
    kZsaSetDescExt = 0x10,
};
constexpr uint32_t kCdw13SelectAll = 1u << 8;
constexpr uint32_t kCdw13Zrwaa = 1u << 9;
constexpr uint32_t kCdw13Partial = 1u << 16;
constexpr size_t kZoneDescSize = 64;
constexpr uint32_t kReportBatch = 256;

uint16_t zone_status(int ret)
{
    return nvme_status_of(ret, BlockRequestKind::ZoneManagement);
}

// Calls fn(zone) for every zone from the one holding `offset` on, in
// batches; stops early when fn returns false.  Returns 0 or the report's
// error.
template <typename Fn>
Task<int> co_for_each_zone(NvmeNamespace& ns, uint64_t offset, Fn fn)
{
    std::vector<BlockZoneDescriptor> zones(kReportBatch);
    uint64_t length = ns.blk().getlength();
    while (offset < length) {
        uint32_t n = kReportBatch;
        int ret = co_await ns.blk().co_zone_report(offset, n, zones.data());
        if (ret < 0) {
            co_return ret;
        }
        if (n == 0) {
            break;
        }
        for (uint32_t i = 0; i < n; i++) {
            if (!co_await fn(zones[i])) {
                co_return 0;
            }
        }
        offset = zones[n - 1].start + zones[n - 1].length;
    }
    co_return 0;
}

Task<BlockZoneDescriptor> co_zone_at(NvmeNamespace& ns, uint64_t offset, int& ret)
{
    BlockZoneDescriptor d;
    uint32_t n = 1;
    ret = co_await ns.blk().co_zone_report(offset, n, &d);
    if (ret >= 0 && n != 1) {
        ret = -EIO;
    }
    co_return d;
}

// The block-layer operation of a ZSA; nullopt for Set Zone Descriptor
// Extension (its own call) and unknown actions.
std::optional<BlockZoneOp> zone_op(uint8_t zsa)
{
    switch (zsa) {
    case kZsaClose: return BlockZoneOp::Close;
    case kZsaFinish: return BlockZoneOp::Finish;
    case kZsaOpen: return BlockZoneOp::Open;
    case kZsaReset: return BlockZoneOp::Reset;
    case kZsaOffline: return BlockZoneOp::SetOffline;
    default: return std::nullopt;
    }
}

bool open_state(BlockZoneState s)
{
    return s == BlockZoneState::ImplicitlyOpen || s == BlockZoneState::ExplicitlyOpen;
}

// Select All for the actions whose zones the block layer's whole-device
// form does not pick as ZNS does: Open acts on closed zones, Close on
// open ones, Offline on read-only ones.
Task<uint16_t> co_select_all(NvmeNamespace& ns, BlockZoneOp op)
{
    int failed = 0;
    int ret = co_await co_for_each_zone(ns, 0, [&](const BlockZoneDescriptor& z) -> Task<bool> {
        bool pick = (op == BlockZoneOp::Open && z.state == BlockZoneState::Closed) ||
                    (op == BlockZoneOp::Close && open_state(z.state)) ||
                    (op == BlockZoneOp::SetOffline && z.state == BlockZoneState::ReadOnly);
        if (pick) {
            failed = co_await ns.blk().co_zone_mgmt(op, z.start, z.length);
        }
        co_return failed >= 0;
    });
    co_return zone_status(ret < 0 ? ret : failed);
}

Task<uint16_t> co_set_desc_ext(NvmeNamespace& ns, NvmeRequest& req, uint64_t offset)
{
    uint32_t size = ns.limits().zone_desc_ext_size;
    if (size == 0) {
        co_return NVME_SC_INVALID_FIELD | NVME_SC_DNR;
    }
    if (!nvme_data_fits(req, size)) {
        co_return NVME_SC_SGL_INVALID_DATA_LENGTH | NVME_SC_DNR;
    }
    std::vector<uint8_t> ext(size);
    req.data.to_buf(0, ext.data(), size);
    co_return zone_status(co_await ns.blk().co_zone_set_desc_ext(offset, ext.data()));
}

Task<uint16_t> co_offline(NvmeNamespace& ns, uint64_t offset)
{
    // ZNS takes only read-only zones offline (an offline one stays so);
    // the block layer's fault injection would take any.
    int ret;
    BlockZoneDescriptor z = co_await co_zone_at(ns, offset, ret);
    if (ret < 0) {
        co_return zone_status(ret);
    }
    if (z.state == BlockZoneState::Offline) {
        co_return NVME_SC_SUCCESS;
    }
    if (z.state != BlockZoneState::ReadOnly) {
        co_return zone_status(zone_error_code(ZoneError::InvalidTransition));
    }
    co_return zone_status(co_await ns.blk().co_zone_mgmt(BlockZoneOp::SetOffline, z.start,
                                                         z.length));
}

void put_descriptor(const NvmeNamespace& ns, const BlockZoneDescriptor& z, uint8_t* d)
{
    unsigned shift = ns.lba_shift();
    d[0] = 0x2;  // sequential write required
    d[1] = uint8_t(uint8_t(z.state) << 4);
    d[2] = z.desc_ext_valid ? 0x80 : 0;  // ZDEV
    store_le64(d + 8, z.capacity >> shift);
    store_le64(d + 16, z.start >> shift);
    store_le64(d + 24, z.wp >> shift);
}

// ZRASF values (ZNS 1.1, QEMU, libnvme; Linux 6.1 swaps 5 and 6).
bool report_filter(uint8_t zrasf, BlockZoneState s)
{
    static const BlockZoneState kByZrasf[] = {
        BlockZoneState::NotWritePointer, BlockZoneState::Empty,    BlockZoneState::ImplicitlyOpen,
        BlockZoneState::ExplicitlyOpen,  BlockZoneState::Closed,   BlockZoneState::Full,
        BlockZoneState::ReadOnly,        BlockZoneState::Offline,
    };
    return zrasf == 0 || kByZrasf[zrasf] == s;
}

}  // namespace

uint64_t nvme_zone_append_limit(const NvmeController& c)
{
    uint64_t limit = 0;
    for (const auto& ns : c.namespaces()) {
        uint64_t m = ns->zoned() ? ns->limits().max_append_bytes : 0;
        if (m && (limit == 0 || m < limit)) {
            limit = m;
        }
    }
    uint64_t mdts = nvme_mdts_bytes(c.port());
    if (mdts && (limit == 0 || limit > mdts)) {
        limit = mdts;
    }
    if (limit == 0) {
        return 0;
    }
    uint64_t pow2 = 4096;
    while (pow2 * 2 <= limit) {
        pow2 *= 2;
    }
    return pow2;
}

Task<uint16_t> nvme_zone_mgmt_send(NvmeNamespace& ns, NvmeRequest& req)
{
    uint32_t cdw13 = req.sqe.cdw(13);
    uint8_t zsa = uint8_t(cdw13);
    bool all = cdw13 & kCdw13SelectAll;
    if (cdw13 & kCdw13Zrwaa) {
        co_return NVME_SC_INVALID_ZONE_OP | NVME_SC_DNR;  // no ZRWA (OZCS.ZRWASUP 0)
    }
    std::optional<BlockZoneOp> op = zone_op(zsa);
    if ((!op && zsa != kZsaSetDescExt) || (all && zsa == kZsaSetDescExt)) {
        co_return NVME_SC_INVALID_FIELD | NVME_SC_DNR;
    }
    if (ns.read_only()) {
        co_return NVME_SC_NS_WRITE_PROTECTED | NVME_SC_DNR;
    }
    if (all) {
        if (op == BlockZoneOp::Reset || op == BlockZoneOp::Finish) {
            // The block layer's whole-device reset and finish pick the
            // zones Select All names (include/block/block_int.h).
            co_return zone_status(co_await ns.blk().co_zone_mgmt(*op, 0, ns.blk().getlength()));
        }
        co_return co_await co_select_all(ns, *op);
    }
    uint64_t slba = nvme_slba(req.sqe);
    uint64_t zone_lbas = ns.limits().zone_size >> ns.lba_shift();
    if (slba >= ns.nsze()) {
        co_return NVME_SC_LBA_RANGE | NVME_SC_DNR;
    }
    if (slba % zone_lbas) {
        co_return NVME_SC_INVALID_FIELD | NVME_SC_DNR;
    }
    uint64_t offset = slba << ns.lba_shift();
    if (!op) {
        co_return co_await co_set_desc_ext(ns, req, offset);
    }
    if (op == BlockZoneOp::SetOffline) {
        co_return co_await co_offline(ns, offset);
    }
    co_return zone_status(co_await ns.blk().co_zone_mgmt(*op, offset, ns.limits().zone_size));
}

Task<uint16_t> nvme_zone_mgmt_recv(NvmeController& c, NvmeNamespace& ns, NvmeRequest& req)
{
    uint64_t slba = nvme_slba(req.sqe);
    uint64_t bytes = (uint64_t(req.sqe.cdw(12)) + 1) * 4;
    uint32_t cdw13 = req.sqe.cdw(13);
    uint8_t zra = uint8_t(cdw13), zrasf = uint8_t(cdw13 >> 8);
    bool partial = cdw13 & kCdw13Partial;
    uint32_t ext_size = ns.limits().zone_desc_ext_size;
    uint32_t mdts = nvme_mdts_bytes(c.port());
    if (zra > 1 || (zra == 1 && ext_size == 0) || zrasf > 7 || bytes < 64 ||
        (mdts && bytes > mdts)) {
        co_return NVME_SC_INVALID_FIELD | NVME_SC_DNR;
    }
    if (slba >= ns.nsze()) {
        co_return NVME_SC_LBA_RANGE | NVME_SC_DNR;
    }
    if (!nvme_data_fits(req, bytes)) {
        co_return NVME_SC_SGL_INVALID_DATA_LENGTH | NVME_SC_DNR;
    }
    size_t desc_size = kZoneDescSize + (zra ? ext_size : 0);
    uint64_t room = (bytes - 64) / desc_size;
    std::vector<uint8_t> out(64);
    uint64_t matched = 0, returned = 0;
    int failed = 0;
    int ret = co_await co_for_each_zone(
        ns, slba << ns.lba_shift(), [&](const BlockZoneDescriptor& z) -> Task<bool> {
            if (!report_filter(zrasf, z.state)) {
                co_return true;
            }
            matched++;
            if (returned < room) {
                out.resize(out.size() + desc_size);
                uint8_t* d = out.data() + out.size() - desc_size;
                put_descriptor(ns, z, d);
                if (zra && z.desc_ext_valid) {
                    failed = co_await ns.blk().co_zone_get_desc_ext(z.start, d + kZoneDescSize);
                }
                returned++;
            }
            // Partial reports count what they return; full ones count
            // every match to the end.
            co_return failed >= 0 && !(partial && returned == room);
        });
    if (ret < 0 || failed < 0) {
        co_return nvme_status_of(ret < 0 ? ret : failed, BlockRequestKind::ZoneReport);
    }
    store_le64(out.data(), partial ? returned : matched);
    nvme_c2h_window(req, out, 0, uint32_t(bytes));
    co_return NVME_SC_SUCCESS;
}

Task<uint16_t> nvme_zone_append(NvmeController& c, NvmeNamespace& ns, NvmeRequest& req)
{
    uint64_t zslba = nvme_slba(req.sqe);
    uint64_t nlb = (req.sqe.cdw(12) & 0xffff) + 1ull;
    uint64_t bytes = nlb << ns.lba_shift();
    if (uint16_t st = nvme_check_io(c, ns, req, zslba, nlb, true)) {
        co_return st;
    }
    uint64_t limit = nvme_zone_append_limit(c);
    if (zslba % (ns.limits().zone_size >> ns.lba_shift()) || (limit && bytes > limit)) {
        co_return NVME_SC_INVALID_FIELD | NVME_SC_DNR;
    }
    IOVector slice;
    IOVector& qiov = nvme_data_view(req, bytes, slice);
    uint64_t offset = zslba << ns.lba_shift();
    int ret = co_await ns.blk().co_zone_append(offset, qiov, nvme_write_flags(c, req.sqe));
    if (ret < 0) {
        co_return nvme_status_of(ret, BlockRequestKind::ZoneAppend);
    }
    c.counters().write_cmds++;
    c.counters().bytes_written += bytes;
    uint64_t lba = offset >> ns.lba_shift();
    req.cqe.set_dw0(uint32_t(lba));
    req.cqe.set_dw1(uint32_t(lba >> 32));
    co_return NVME_SC_SUCCESS;
}

}  // namespace qemu
