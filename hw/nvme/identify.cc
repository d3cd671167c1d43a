// Identify (admin 06h): controller, namespaces, lists, descriptors, the
// command-set specific structures of NVM and ZNS, and the command set
// profile.  Layouts: NVMe base 2.0 and ZNS 1.1, as QEMU and Linux encode
// them (see docs/devel/nvme.rst).
#include <algorithm>
#include <cstring>

#include "hw/nvme/nvme-int.h"

namespace qemu {

namespace {

enum : uint8_t {
    kCnsNamespace = 0x00,
    kCnsController = 0x01,
    kCnsActiveNsList = 0x02,
    kCnsNsDescriptors = 0x03,
    kCnsCsiNamespace = 0x05,
    kCnsCsiController = 0x06,
    kCnsCsiActiveNsList = 0x07,
    kCnsIndependentNamespace = 0x08,
    kCnsCommandSetProfile = 0x1c,
};

using IdBuf = std::vector<uint8_t>;

unsigned log2_floor(uint64_t v)
{
    unsigned n = 0;
    while (v >>= 1) {
        n++;
    }
    return n;
}

void identify_controller(NvmeController& c, uint8_t* id)
{
    const NvmeSubsystem::Impl* s = c.subsystem();
    const NvmePortInfo& port = c.port();
    nvme_put_padded(id + 4, 20, s ? s->serial_ : "discovery");
    nvme_put_padded(id + 24, 40, s ? s->model_ : "qemu-zoned discovery controller");
    nvme_put_padded(id + 64, 8, QEMU_ZONED_VERSION);
    id[72] = 6;  // RAB
    // CMIC bit 1: several controllers share the subsystem (one per host
    // connection).  No ANA (bit 3): the host would require its log.
    id[76] = s ? 0x02 : 0;
    uint32_t mdts = nvme_mdts_bytes(port);
    id[77] = uint8_t(mdts ? log2_floor(mdts / 4096) : 0);
    store_le16(id + 78, c.cntlid());
    store_le32(id + 80, kNvmeVersion);
    // OAES bit 8: Namespace Attribute Notices; CTRATT bit 0: 128-bit host
    // identifier (Connect's HOSTID).
    store_le32(id + 92, s ? 1u << 8 : 0);
    store_le32(id + 96, 1u << 0);
    id[111] = s ? 1 : 2;  // CNTRLTYPE: I/O controller, discovery controller
    id[258] = 3;          // ACL: 4 Aborts
    id[259] = kNvmeMaxAers - 1;
    id[260] = 0x03;  // FRMW: slot 1 read-only, one slot
    // LPA: bit 1 commands supported and effects, bit 2 extended Get Log
    // Page data (NUMDU, offsets).
    id[261] = s ? 0x06 : 0x04;
    id[262] = kNvmeErrorLogEntries - 1;
    store_le16(id + 320, 1000 / kNvmeKasUnitMs);  // KAS: 1 s granularity
    store_le16(id + 514, port.max_queue_entries);  // MAXCMD
    if (s) {
        id[512] = 0x66;  // SQES
        id[513] = 0x44;  // CQES
        store_le32(id + 516, kNvmeMaxNamespaces);
        // ONCS: Compare, Dataset Management, Write Zeroes.
        store_le16(id + 520, 1u << 0 | 1u << 2 | 1u << 3);
        // VWC: present, and Flush with NSID FFFFFFFFh flushes them all.
        id[525] = 0x07;
    }
    // SGLS: SGLs supported, offsets for in-capsule data (as nvmet).
    store_le32(id + 536, 1u << 0 | 1u << 20);
    std::string nqn = s ? s->nqn_ : std::string(kNvmeDiscoveryNqn);
    memcpy(id + 768, nqn.data(), std::min<size_t>(nqn.size(), 255));
    if (s) {
        store_le32(id + 1792, (64 + port.in_capsule_data) / 16);  // IOCCSZ
        store_le32(id + 1796, 1);                                   // IORCSZ
    }
    store_le16(id + 1800, 0);  // ICDOFF
    id[1803] = 1;              // MSDBD
}

void identify_namespace(const NvmeNamespace& ns, uint8_t* id)
{
    uint64_t nsze = ns.nsze();
    store_le64(id + 0, nsze);
    store_le64(id + 8, nsze);   // NCAP
    store_le64(id + 16, nsze);  // NUSE: not thin-provisioned as far as the host knows
    id[25] = 0;                 // NLBAF: one format
    id[26] = 0;                 // FLBAS: format 0
    id[30] = 1;                 // NMIC: may be attached to several controllers
    // DLFEAT bit 3: Write Zeroes with DEAC deallocates (and reads zeroes).
    id[33] = 0x08;
    id[99] = ns.read_only() ? 1 : 0;  // NSATTR: write protected
    ns.nguid(id + 104);
    ns.eui64(id + 120);
    id[128 + 2] = uint8_t(ns.lba_shift());  // LBAF0: LBADS, no metadata
}

void identify_zns_namespace(const NvmeNamespace& ns, uint8_t* id)
{
    const BlockLimits& bl = ns.limits();
    store_le16(id + 0, 0);  // ZOC: fixed zone capacity, no active excursions
    // OZCS bit 0 RAZB: the block layer reads across zone boundaries.
    store_le16(id + 2, 1);
    auto resources = [](uint32_t limit) { return limit ? limit - 1 : 0xffffffffu; };
    store_le32(id + 4, resources(bl.max_active_zones));
    store_le32(id + 8, resources(bl.max_open_zones));
    store_le64(id + 2816, bl.zone_size >> ns.lba_shift());  // LBAFE0 ZSZE
    id[2816 + 8] = uint8_t(bl.zone_desc_ext_size / 64);     // ZDES
}

void namespace_descriptors(const NvmeNamespace& ns, uint8_t* id)
{
    uint8_t* p = id;
    auto add = [&p](uint8_t type, const uint8_t* value, uint8_t len) {
        p[0] = type;
        p[1] = len;
        memcpy(p + 4, value, len);
        p += 4 + len;
    };
    uint8_t eui[8], nguid[16];
    ns.eui64(eui);
    ns.nguid(nguid);
    uint8_t csi = ns.csi();
    add(1, eui, 8);
    add(2, nguid, 16);
    add(3, ns.uuid(), 16);
    add(4, &csi, 1);
}

// Namespaces above `after` in increasing order; `csi` < 0: any set.
void active_list(const NvmeController& c, uint32_t after, int csi, uint8_t* id)
{
    unsigned n = 0;
    for (const auto& ns : c.namespaces()) {
        if (ns->nsid() > after && (csi < 0 || ns->csi() == csi) && n < 1024) {
            store_le32(id + 4 * n++, ns->nsid());
        }
    }
}

// The namespace an NSID-taking CNS names: status, or 0 with ns set (null
// for an NSID that is valid but has no active namespace: zeroes).
uint16_t lookup(const NvmeController& c, uint32_t nsid, std::shared_ptr<NvmeNamespace>& ns)
{
    if (nsid == 0 || nsid > kNvmeMaxNamespaces) {
        return NVME_SC_INVALID_NSID | NVME_SC_DNR;
    }
    ns = c.find_namespace(nsid);
    return NVME_SC_SUCCESS;
}

uint16_t identify_by_cns(NvmeController& c, const NvmeSqe& sqe, uint8_t* id)
{
    uint8_t cns = sqe.cdw(10) & 0xff;
    uint8_t csi = uint8_t(sqe.cdw(11) >> 24);
    uint32_t nsid = sqe.nsid();
    std::shared_ptr<NvmeNamespace> ns;
    switch (cns) {
    case kCnsController:
        identify_controller(c, id);
        return NVME_SC_SUCCESS;
    case kCnsActiveNsList:
    case kCnsCsiActiveNsList:
        if (nsid >= 0xfffffffe) {
            return NVME_SC_INVALID_NSID | NVME_SC_DNR;
        }
        if (cns == kCnsCsiActiveNsList && csi != NVME_CSI_NVM && csi != NVME_CSI_ZONED) {
            return NVME_SC_INVALID_FIELD | NVME_SC_DNR;
        }
        active_list(c, nsid, cns == kCnsActiveNsList ? -1 : csi, id);
        return NVME_SC_SUCCESS;
    case kCnsCsiController:
        if (csi == NVME_CSI_ZONED) {
            // ZASL in 4 KiB (CAP.MPSMIN) units, a power of two; 0: MDTS.
            uint64_t limit = nvme_zone_append_limit(c);
            id[0] = uint8_t(limit ? log2_floor(limit / 4096) : 0);
        } else if (csi != NVME_CSI_NVM) {
            return NVME_SC_INVALID_FIELD | NVME_SC_DNR;
        }
        return NVME_SC_SUCCESS;  // NVM: no limits to report (all zeroes)
    case kCnsCommandSetProfile:
        // One combination: NVM and Zoned (vector bits 0 and 2).
        store_le64(id, 1u << 0 | 1u << 2);
        return NVME_SC_SUCCESS;
    default:
        break;
    }
    if (cns != kCnsNamespace && cns != kCnsNsDescriptors && cns != kCnsCsiNamespace &&
        cns != kCnsIndependentNamespace) {
        return NVME_SC_INVALID_FIELD | NVME_SC_DNR;
    }
    if (uint16_t st = lookup(c, nsid, ns)) {
        return st;
    }
    switch (cns) {
    case kCnsNamespace:
        if (ns) {
            identify_namespace(*ns, id);
        }
        return NVME_SC_SUCCESS;
    case kCnsNsDescriptors:
        if (!ns) {
            return NVME_SC_INVALID_NSID | NVME_SC_DNR;
        }
        namespace_descriptors(*ns, id);
        return NVME_SC_SUCCESS;
    case kCnsCsiNamespace:
        if (csi == NVME_CSI_ZONED && (!ns || ns->zoned())) {
            if (ns) {
                identify_zns_namespace(*ns, id);
            }
            return NVME_SC_SUCCESS;
        }
        // The NVM structure (no fields we use) applies to every namespace.
        return csi == NVME_CSI_NVM ? NVME_SC_SUCCESS : NVME_SC_INVALID_FIELD | NVME_SC_DNR;
    default:  // kCnsIndependentNamespace
        if (ns) {
            id[0] = 0;                        // NSFEAT
            id[1] = 1;                        // NMIC: shared
            id[8] = ns->read_only() ? 1 : 0;  // NSATTR: write protected
            id[13] = 1;                       // NSTAT: ready
        }
        return NVME_SC_SUCCESS;
    }
}

}  // namespace

void nvme_put_padded(uint8_t* dst, size_t size, const std::string& s)
{
    memset(dst, ' ', size);
    memcpy(dst, s.data(), std::min(size, s.size()));
}

uint32_t nvme_mdts_bytes(const NvmePortInfo& port)
{
    if (port.max_data_transfer == 0) {
        return 0;
    }
    // MDTS = n means 4 KiB << n, and n = 0 means "no limit".
    unsigned n = std::max(1u, log2_floor(port.max_data_transfer / 4096));
    return 4096u << n;
}

uint16_t nvme_identify(NvmeController& c, NvmeRequest& req)
{
    if (c.discovery() && (req.sqe.cdw(10) & 0xff) != kCnsController) {
        return NVME_SC_INVALID_FIELD | NVME_SC_DNR;
    }
    if (!nvme_data_fits(req, kNvmeIdentifySize)) {
        return NVME_SC_SGL_INVALID_DATA_LENGTH | NVME_SC_DNR;
    }
    IdBuf id(kNvmeIdentifySize);
    uint16_t status = identify_by_cns(c, req.sqe, id.data());
    if (status == NVME_SC_SUCCESS) {
        nvme_c2h(req, id.data(), id.size());
    }
    return status;
}

}  // namespace qemu
