// The Fabrics commands: Connect, Property Get/Set, and the discovery log
// page (NVMe over Fabrics 1.1; behaviour of Linux nvmet).
#include <cstring>

#include "hw/nvme/nvme-int.h"

namespace qemu {

namespace {

// Connect's SQE fields and its 1 KiB data block.
constexpr unsigned kConnectQidOffset = 42;
constexpr unsigned kConnectSqsizeOffset = 44;
constexpr unsigned kDataHostid = 0, kDataCntlid = 16, kDataSubnqn = 256, kDataHostnqn = 512;
constexpr size_t kConnectDataSize = 1024;
constexpr size_t kNqnField = 256;

// Properties.
constexpr uint32_t kPropCap = 0x00, kPropVs = 0x08, kPropCc = 0x14, kPropCsts = 0x1c;

// Invalid parameter in the SQE (IATTR 0) or the data (IATTR 1) at IPO.
uint16_t invalid_param(NvmeRequest& req, bool in_data, uint16_t offset)
{
    req.cqe.set_dw0((in_data ? 1u << 16 : 0) | offset);
    return NVME_SC_CONNECT_INVALID_PARAM | NVME_SC_DNR;
}

// An NQN field: NUL-terminated inside its 256 bytes, else nullopt.
std::optional<std::string> nqn_field(const uint8_t* p)
{
    const void* nul = memchr(p, 0, kNqnField);
    if (!nul) {
        return std::nullopt;
    }
    return std::string(reinterpret_cast<const char*>(p));
}

uint16_t connect_admin(NvmeQueuePair::Impl& q, NvmeRequest& req, NvmeSubsystem::Impl* s,
                       const uint8_t* data, std::string hostnqn)
{
    if (load_le16(data + kDataCntlid) != 0xffff) {
        return invalid_param(req, true, kDataCntlid);  // dynamic controllers only
    }
    NvmeTarget::Impl& t = q.target_.impl();
    uint16_t cntlid = s ? s->allocate_cntlid() : t.allocate_discovery_cntlid();
    if (cntlid == 0) {
        return NVME_SC_CONNECT_CTRL_BUSY | NVME_SC_DNR;  // no controller ID left
    }
    auto c = std::make_shared<NvmeController>(t, s, cntlid, q.port_, std::move(hostnqn),
                                              data + kDataHostid, req.sqe.le32_at(48));
    c->attach_queue(0, &q);
    q.ctrl_ = std::move(c);
    q.qid_ = 0;
    req.cqe.set_dw0(cntlid);
    return NVME_SC_SUCCESS;
}

uint16_t connect_io(NvmeQueuePair::Impl& q, NvmeRequest& req, NvmeSubsystem::Impl& s,
                    const uint8_t* data, const std::string& hostnqn, uint16_t qid)
{
    uint16_t cntlid = load_le16(data + kDataCntlid);
    NvmeController* c = s.find_controller(cntlid);
    if (!c) {
        return invalid_param(req, true, kDataCntlid);
    }
    if (c->hostnqn() != hostnqn) {
        return invalid_param(req, true, kDataHostnqn);
    }
    if (memcmp(c->hostid(), data + kDataHostid, 16) != 0) {
        return invalid_param(req, true, kDataHostid);
    }
    if (!c->ready()) {
        return NVME_SC_COMMAND_SEQUENCE_ERROR | NVME_SC_DNR;
    }
    if (qid > c->max_io_qid() || c->queue_in_use(qid)) {
        return invalid_param(req, false, kConnectQidOffset);
    }
    c->attach_queue(qid, &q);
    q.ctrl_ = c->shared_from_this();
    q.qid_ = qid;
    req.cqe.set_dw0(cntlid);
    return NVME_SC_SUCCESS;
}

void put_zero_padded(uint8_t* dst, size_t size, const std::string& s)
{
    memset(dst, 0, size);
    memcpy(dst, s.data(), std::min(size - 1, s.size()));
}

}  // namespace

uint16_t nvme_fabrics_connect(NvmeQueuePair::Impl& q, NvmeRequest& req)
{
    const NvmeSqe& sqe = req.sqe;
    if (sqe.le16_at(40) != 0) {
        return NVME_SC_CONNECT_FORMAT | NVME_SC_DNR;  // RECFMT
    }
    if (!nvme_data_fits(req, kConnectDataSize)) {
        return NVME_SC_SGL_INVALID_DATA_LENGTH | NVME_SC_DNR;
    }
    uint8_t data[kConnectDataSize];
    req.data.to_buf(0, data, sizeof(data));
    uint16_t qid = sqe.le16_at(kConnectQidOffset);
    uint16_t sqsize = sqe.le16_at(kConnectSqsizeOffset);  // 0's based
    if (sqsize == 0 || sqsize > q.port_.max_queue_entries - 1) {
        return invalid_param(req, false, kConnectSqsizeOffset);
    }
    auto subnqn = nqn_field(data + kDataSubnqn);
    if (!subnqn) {
        return invalid_param(req, true, kDataSubnqn);
    }
    auto hostnqn = nqn_field(data + kDataHostnqn);
    if (!hostnqn || hostnqn->empty()) {
        return invalid_param(req, true, kDataHostnqn);
    }
    bool discovery = *subnqn == kNvmeDiscoveryNqn;
    NvmeSubsystem::Impl* s = discovery ? nullptr : q.target_.impl().find(*subnqn);
    if (!discovery && !s) {
        return invalid_param(req, true, kDataSubnqn);
    }
    uint16_t status;
    if (qid == 0) {
        status = connect_admin(q, req, s, data, std::move(*hostnqn));
    } else if (discovery) {
        status = invalid_param(req, false, kConnectQidOffset);  // admin queue only
    } else {
        status = connect_io(q, req, *s, data, *hostnqn, qid);
    }
    if (status == NVME_SC_SUCCESS) {
        q.queue_size_ = uint16_t(sqsize + 1);
    }
    return status;
}

Task<uint16_t> nvme_fabrics_property(NvmeController& c, NvmeRequest& req)
{
    const NvmeSqe& sqe = req.sqe;
    uint8_t attrib = sqe.bytes[40] & 7;
    if (attrib > 1) {
        co_return NVME_SC_INVALID_FIELD | NVME_SC_DNR;
    }
    bool size8 = attrib == 1;
    uint32_t offset = sqe.le32_at(44);
    if (sqe.fctype() == NVMF_FCTYPE_PROPERTY_SET) {
        if (offset != kPropCc || size8) {
            co_return NVME_SC_INVALID_FIELD | NVME_SC_DNR;
        }
        co_await c.co_set_cc(sqe.le32_at(48));
        co_return NVME_SC_SUCCESS;
    }
    uint64_t value;
    switch (offset) {
    case kPropCap: value = c.cap(); break;
    case kPropVs: value = kNvmeVersion; break;
    case kPropCc: value = c.cc(); break;
    case kPropCsts: value = c.csts(); break;
    default: co_return NVME_SC_INVALID_FIELD | NVME_SC_DNR;
    }
    if (size8 != (offset == kPropCap)) {
        co_return NVME_SC_INVALID_FIELD | NVME_SC_DNR;  // CAP is 8 bytes, the others 4
    }
    req.cqe.set_dw0(uint32_t(value));
    req.cqe.set_dw1(uint32_t(value >> 32));
    co_return NVME_SC_SUCCESS;
}

uint16_t nvme_discovery_log(NvmeController& c, uint64_t offset, NvmeRequest& req, uint32_t len)
{
    // A 1 KiB header, then one 1 KiB entry per subsystem of this port.
    constexpr size_t kEntry = 1024;
    NvmeTarget::Impl& t = c.target();
    std::vector<uint8_t> log(kEntry);
    uint64_t numrec = 0;
    for (const auto& sub : t.subsystems_) {
        const NvmeSubsystem::Impl& s = sub->impl();
        if (s.port_.portid != c.port().portid) {
            continue;
        }
        log.resize(log.size() + kEntry);
        uint8_t* e = log.data() + log.size() - kEntry;
        e[0] = s.port_.trtype;
        e[1] = s.port_.adrfam;
        e[2] = 2;     // subtype: NVM subsystem
        e[3] = 0x02;  // TREQ: secure channel not required
        store_le16(e + 4, s.port_.portid);
        store_le16(e + 6, 0xffff);  // any (dynamic) controller
        store_le16(e + 8, s.port_.max_queue_entries);
        put_zero_padded(e + 32, 32, s.port_.trsvcid);
        put_zero_padded(e + 256, 256, s.nqn_);
        put_zero_padded(e + 512, 256, s.port_.traddr);
        // TSAS for TCP: byte 0 SECTYPE 0 (no security), left zero.
        numrec++;
    }
    store_le64(log.data(), t.discovery_genctr_);
    store_le64(log.data() + 8, numrec);
    nvme_c2h_window(req, log, offset, len);
    return NVME_SC_SUCCESS;
}

}  // namespace qemu
