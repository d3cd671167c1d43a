// The NVM command set (Flush, Write, Read, Compare, Write Zeroes, Dataset
// Management) and the dispatch of I/O commands, ZNS ones included.  Data
// goes between the request's buffer and the block layer without a copy
// (Compare reads into a buffer of its own).
#include <algorithm>
#include <cstring>

#include "hw/nvme/nvme-int.h"

namespace qemu {

namespace {

enum : uint8_t {
    kOpFlush = 0x00,
    kOpWrite = 0x01,
    kOpRead = 0x02,
    kOpCompare = 0x05,
    kOpWriteZeroes = 0x08,
    kOpDsm = 0x09,
    kOpZoneMgmtSend = 0x79,
    kOpZoneMgmtRecv = 0x7a,
    kOpZoneAppend = 0x7d,
};
constexpr uint32_t kCdw12Fua = 1u << 30;
constexpr uint32_t kCdw12Deac = 1u << 25;
constexpr uint32_t kDsmAttrDeallocate = 1u << 2;

bool iov_equals(const IOVector& v, const uint8_t* buf, size_t len)
{
    size_t off = 0;
    for (const iovec& e : v.iovs()) {
        size_t n = std::min(e.iov_len, len - off);
        if (memcmp(e.iov_base, buf + off, n) != 0) {
            return false;
        }
        off += n;
        if (off == len) {
            break;
        }
    }
    return true;
}

uint16_t counted(NvmeController& c, uint16_t status)
{
    if (((status >> 8) & 7) == 2) {
        c.counters().media_errors++;
    }
    return status;
}

Task<uint16_t> co_read_write(NvmeController& c, NvmeNamespace& ns, NvmeRequest& req)
{
    uint8_t op = req.sqe.opcode();
    uint64_t slba = nvme_slba(req.sqe);
    uint64_t nlb = (req.sqe.cdw(12) & 0xffff) + 1ull;
    uint64_t bytes = nlb << ns.lba_shift();
    if (uint16_t st = nvme_check_io(c, ns, req, slba, nlb, op != kOpRead && op != kOpCompare)) {
        co_return st;
    }
    uint64_t offset = slba << ns.lba_shift();
    IOVector slice;
    IOVector& qiov = nvme_data_view(req, bytes, slice);
    int ret;
    if (op == kOpWrite) {
        ret = co_await ns.blk().co_pwritev(offset, bytes, qiov, nvme_write_flags(c, req.sqe));
        if (ret >= 0) {
            c.counters().write_cmds++;
            c.counters().bytes_written += bytes;
        }
        co_return counted(c, nvme_status_of(ret, BlockRequestKind::Write));
    }
    std::vector<uint8_t> own;
    IOVector compare_buf;
    if (op == kOpCompare) {
        own.resize(bytes);
        compare_buf.add(own.data(), bytes);
    }
    ret = co_await ns.blk().co_preadv(offset, bytes, op == kOpCompare ? compare_buf : qiov);
    if (ret < 0) {
        co_return counted(c, nvme_status_of(ret, BlockRequestKind::Read));
    }
    c.counters().read_cmds++;
    c.counters().bytes_read += bytes;
    if (op == kOpCompare) {
        co_return iov_equals(qiov, own.data(), bytes) ? NVME_SC_SUCCESS
                                                       : NVME_SC_COMPARE_FAILED | NVME_SC_DNR;
    }
    req.c2h_bytes = uint32_t(bytes);
    co_return NVME_SC_SUCCESS;
}

Task<uint16_t> co_write_zeroes(NvmeController& c, NvmeNamespace& ns, NvmeRequest& req)
{
    uint64_t slba = nvme_slba(req.sqe);
    uint64_t nlb = (req.sqe.cdw(12) & 0xffff) + 1ull;
    if (uint16_t st = nvme_check_range(ns, slba, nlb)) {
        co_return st;
    }
    if (ns.read_only()) {
        co_return NVME_SC_NS_WRITE_PROTECTED | NVME_SC_DNR;
    }
    unsigned flags = nvme_write_flags(c, req.sqe);
    if (req.sqe.cdw(12) & kCdw12Deac) {
        flags |= BDRV_REQ_MAY_UNMAP;
    }
    int ret = co_await ns.blk().co_pwrite_zeroes(slba << ns.lba_shift(), nlb << ns.lba_shift(),
                                                 flags);
    if (ret >= 0) {
        c.counters().write_cmds++;
    }
    co_return counted(c, nvme_status_of(ret, BlockRequestKind::Write));
}

Task<uint16_t> co_dataset_management(NvmeNamespace& ns, NvmeRequest& req)
{
    if (!(req.sqe.cdw(11) & kDsmAttrDeallocate)) {
        co_return NVME_SC_SUCCESS;  // only hints about access patterns
    }
    size_t nr = (req.sqe.cdw(10) & 0xff) + 1;
    std::vector<uint8_t> ranges(nr * 16);
    if (!nvme_data_fits(req, ranges.size())) {
        co_return NVME_SC_SGL_INVALID_DATA_LENGTH | NVME_SC_DNR;
    }
    if (ns.read_only()) {
        co_return NVME_SC_NS_WRITE_PROTECTED | NVME_SC_DNR;
    }
    req.data.to_buf(0, ranges.data(), ranges.size());
    for (size_t i = 0; i < nr; i++) {
        uint32_t nlb = load_le32(&ranges[16 * i + 4]);
        uint64_t slba = load_le64(&ranges[16 * i + 8]);
        if (uint16_t st = nvme_check_range(ns, slba, nlb)) {
            co_return st;
        }
    }
    for (size_t i = 0; i < nr; i++) {
        uint32_t nlb = load_le32(&ranges[16 * i + 4]);
        uint64_t slba = load_le64(&ranges[16 * i + 8]);
        if (nlb == 0) {
            continue;
        }
        int ret = co_await ns.blk().co_pdiscard(slba << ns.lba_shift(),
                                                uint64_t(nlb) << ns.lba_shift());
        // Deallocation is advisory (DLFEAT promises nothing about what
        // deallocated blocks read): a node that cannot discard has done
        // what was asked.
        if (ret < 0 && ret != -ENOTSUP) {
            co_return nvme_status_of(ret, BlockRequestKind::Other);
        }
    }
    co_return NVME_SC_SUCCESS;
}

Task<uint16_t> co_flush_all(NvmeController& c)
{
    uint16_t status = NVME_SC_SUCCESS;
    for (const auto& ns : c.namespaces()) {
        RequestCounter::Guard g(ns->in_flight());
        int ret = co_await ns->blk().co_flush();
        if (ret < 0 && status == NVME_SC_SUCCESS) {
            status = nvme_status_of(ret, BlockRequestKind::Flush);
        }
    }
    co_return status;
}

}  // namespace

IOVector& nvme_data_view(NvmeRequest& req, uint64_t bytes, IOVector& slice)
{
    if (req.data.size() == bytes) {
        return req.data;
    }
    slice.add_slice(req.data, 0, bytes);
    return slice;
}

uint64_t nvme_slba(const NvmeSqe& sqe)
{
    return uint64_t(sqe.cdw(11)) << 32 | sqe.cdw(10);
}

uint16_t nvme_check_range(const NvmeNamespace& ns, uint64_t slba, uint64_t nlb)
{
    uint64_t nsze = ns.nsze();
    if (slba > nsze || nlb > nsze - slba) {
        return NVME_SC_LBA_RANGE | NVME_SC_DNR;
    }
    return NVME_SC_SUCCESS;
}

uint16_t nvme_check_io(const NvmeController& c, const NvmeNamespace& ns, const NvmeRequest& req,
                       uint64_t slba, uint64_t nlb, bool write)
{
    uint64_t bytes = nlb << ns.lba_shift();
    uint32_t mdts = nvme_mdts_bytes(c.port());
    if (mdts && bytes > mdts) {
        return NVME_SC_INVALID_FIELD | NVME_SC_DNR;
    }
    if (uint16_t st = nvme_check_range(ns, slba, nlb)) {
        return st;
    }
    if (!nvme_data_fits(req, bytes)) {
        return NVME_SC_SGL_INVALID_DATA_LENGTH | NVME_SC_DNR;
    }
    if (write && ns.read_only()) {
        return NVME_SC_NS_WRITE_PROTECTED | NVME_SC_DNR;
    }
    return NVME_SC_SUCCESS;
}

unsigned nvme_write_flags(const NvmeController& c, const NvmeSqe& sqe)
{
    // FUA, or every write when the host turned the volatile write cache off.
    return (sqe.cdw(12) & kCdw12Fua) || !c.write_cache_enabled() ? unsigned(BDRV_REQ_FUA) : 0u;
}

uint16_t nvme_status_of(int ret, BlockRequestKind kind)
{
    return nvme_status_from_result(ret, kind).value();
}

Task<uint16_t> nvme_io_command(NvmeController& c, NvmeRequest& req)
{
    uint8_t op = req.sqe.opcode();
    if (op == kOpFlush && req.sqe.nsid() == 0xffffffff) {
        co_return co_await co_flush_all(c);
    }
    auto ns = c.find_namespace(req.sqe.nsid());
    if (!ns) {
        co_return NVME_SC_INVALID_NSID | NVME_SC_DNR;
    }
    RequestCounter::Guard running(ns->in_flight());
    bool zns_op = op == kOpZoneMgmtSend || op == kOpZoneMgmtRecv || op == kOpZoneAppend;
    if (zns_op && !ns->zoned()) {
        co_return NVME_SC_INVALID_OPCODE | NVME_SC_DNR;
    }
    switch (op) {
    case kOpFlush:
        co_return nvme_status_of(co_await ns->blk().co_flush(), BlockRequestKind::Flush);
    case kOpWrite:
    case kOpRead:
    case kOpCompare:
        co_return co_await co_read_write(c, *ns, req);
    case kOpWriteZeroes:
        co_return co_await co_write_zeroes(c, *ns, req);
    case kOpDsm:
        co_return co_await co_dataset_management(*ns, req);
    case kOpZoneMgmtSend:
        co_return co_await nvme_zone_mgmt_send(*ns, req);
    case kOpZoneMgmtRecv:
        co_return co_await nvme_zone_mgmt_recv(c, *ns, req);
    case kOpZoneAppend:
        co_return co_await nvme_zone_append(c, *ns, req);
    default:
        co_return NVME_SC_INVALID_OPCODE | NVME_SC_DNR;
    }
}

}  // namespace qemu
