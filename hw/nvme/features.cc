// Get Features and Set Features (admin 0Ah, 09h): the few features a
// fabrics controller keeps; the others are refused with Invalid Field.
#include <algorithm>

#include "hw/nvme/nvme-int.h"

namespace qemu {

namespace {

enum : uint8_t {
    kFidArbitration = 0x01,
    kFidPowerManagement = 0x02,
    kFidVolatileWriteCache = 0x06,
    kFidNumberOfQueues = 0x07,
    kFidAsyncEventConfig = 0x0b,
    kFidKeepAliveTimer = 0x0f,
};
constexpr uint8_t kAdminSetFeatures = 0x09;
enum : unsigned { kSelCurrent = 0, kSelDefault = 1, kSelSaved = 2, kSelCapabilities = 3 };
constexpr uint32_t kCapChangeable = 1u << 2;

bool supported(const NvmeController& c, uint8_t fid)
{
    if (c.discovery()) {
        return fid == kFidAsyncEventConfig || fid == kFidKeepAliveTimer;
    }
    switch (fid) {
    case kFidArbitration:
    case kFidPowerManagement:
    case kFidVolatileWriteCache:
    case kFidNumberOfQueues:
    case kFidAsyncEventConfig:
    case kFidKeepAliveTimer:
        return true;
    default:
        return false;
    }
}

// Number of Queues as DW0: NSQA | NCQA << 16, 0's based.
uint32_t queues_dw0(uint16_t n)
{
    return uint32_t(n - 1) | uint32_t(n - 1) << 16;
}

uint32_t current_value(const NvmeController& c, uint8_t fid)
{
    switch (fid) {
    case kFidArbitration: return c.arbitration();
    case kFidVolatileWriteCache: return c.write_cache_enabled() ? 1 : 0;
    case kFidNumberOfQueues: return queues_dw0(c.max_io_qid());
    case kFidAsyncEventConfig: return c.async_event_config();
    case kFidKeepAliveTimer: return c.kato_ms();
    default: return 0;  // power state 0
    }
}

uint32_t default_value(uint8_t fid)
{
    switch (fid) {
    case kFidVolatileWriteCache: return 1;
    case kFidNumberOfQueues: return queues_dw0(kNvmeMaxIoQueues);
    default: return 0;
    }
}

uint16_t set_feature(NvmeController& c, NvmeRequest& req, uint8_t fid)
{
    uint32_t v = req.sqe.cdw(11);
    switch (fid) {
    case kFidArbitration:
        c.set_arbitration(v);
        break;
    case kFidPowerManagement:
        if ((v & 0x1f) != 0) {
            return NVME_SC_INVALID_FIELD | NVME_SC_DNR;  // one power state (NPSS 0)
        }
        break;
    case kFidVolatileWriteCache:
        c.set_write_cache(v & 1);
        break;
    case kFidNumberOfQueues: {
        uint16_t nsqr = uint16_t(v), ncqr = uint16_t(v >> 16);
        if (nsqr == 0xffff || ncqr == 0xffff) {
            return NVME_SC_INVALID_FIELD | NVME_SC_DNR;
        }
        // Fabrics queues are pairs: as many as the smaller request.
        uint16_t granted = c.set_nr_io_queues(uint16_t(std::min(nsqr, ncqr) + 1));
        req.cqe.set_dw0(queues_dw0(granted));
        break;
    }
    case kFidAsyncEventConfig: {
        uint32_t supported_bits = c.discovery() ? 0 : kNvmeAecNsAttr;
        if (v & ~supported_bits) {
            return NVME_SC_INVALID_FIELD | NVME_SC_DNR;
        }
        c.set_async_event_config(v);
        break;
    }
    case kFidKeepAliveTimer:
        c.set_kato(v);
        break;
    }
    return NVME_SC_SUCCESS;
}

}  // namespace

uint16_t nvme_admin_features(NvmeController& c, NvmeRequest& req)
{
    uint32_t cdw10 = req.sqe.cdw(10);
    uint8_t fid = uint8_t(cdw10);
    if (!supported(c, fid)) {
        return NVME_SC_INVALID_FIELD | NVME_SC_DNR;
    }
    if (req.sqe.opcode() == kAdminSetFeatures) {
        if (cdw10 >> 31) {
            return NVME_SC_FEATURE_NOT_SAVEABLE | NVME_SC_DNR;
        }
        return set_feature(c, req, fid);
    }
    switch ((cdw10 >> 8) & 7) {
    case kSelCurrent:
        req.cqe.set_dw0(current_value(c, fid));
        return NVME_SC_SUCCESS;
    case kSelDefault:
    case kSelSaved:  // nothing is saveable: the saved value is the default
        req.cqe.set_dw0(default_value(fid));
        return NVME_SC_SUCCESS;
    case kSelCapabilities:
        req.cqe.set_dw0(kCapChangeable);
        return NVME_SC_SUCCESS;
    default:
        return NVME_SC_INVALID_FIELD | NVME_SC_DNR;
    }
}

}  // namespace qemu
