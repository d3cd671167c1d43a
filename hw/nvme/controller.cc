// NvmeController: properties, queues, keep-alive, asynchronous events and
// the error log of one controller (hw/nvme/nvme-int.h).
#include <algorithm>

#include "hw/nvme/nvme-int.h"

namespace qemu {

namespace {

// CC fields (NVMe base spec, Controller Configuration).
constexpr uint32_t kCcEnable = 1u << 0;
unsigned cc_css(uint32_t cc) { return (cc >> 4) & 7; }
unsigned cc_mps(uint32_t cc) { return (cc >> 7) & 0xf; }
unsigned cc_ams(uint32_t cc) { return (cc >> 11) & 7; }
unsigned cc_shn(uint32_t cc) { return (cc >> 14) & 3; }
unsigned cc_iosqes(uint32_t cc) { return (cc >> 16) & 0xf; }
unsigned cc_iocqes(uint32_t cc) { return (cc >> 20) & 0xf; }
constexpr unsigned kCssNvm = 0, kCssAll = 6;
// CSTS fields.
constexpr uint32_t kCstsRdy = 1u << 0;
constexpr uint32_t kCstsCfs = 1u << 1;
constexpr uint32_t kCstsShstMask = 3u << 2;
constexpr uint32_t kCstsShstComplete = 2u << 2;

}  // namespace

NvmeController::NvmeController(NvmeTarget::Impl& target, NvmeSubsystem::Impl* subsys,
                               uint16_t cntlid, const NvmePortInfo& port, std::string hostnqn,
                               const uint8_t hostid[16], uint32_t kato_ms)
    : target_(target), subsys_(subsys), discovery_(subsys == nullptr), cntlid_(cntlid),
      port_(port), hostnqn_(std::move(hostnqn)), queues_(1, nullptr), kato_ms_(kato_ms),
      kato_timer_(target.ctx_, [this] { keep_alive_expired(); }),
      created_ns_(AioContext::now_ns())
{
    std::copy(hostid, hostid + 16, hostid_);
    if (subsys_) {
        subsys_->controllers_.push_back(this);
    } else {
        target_.discovery_controllers_.push_back(this);
    }
    keep_alive();
}

NvmeController::~NvmeController()
{
    shut_down();
}

void NvmeController::shut_down()
{
    if (gone_) {
        return;
    }
    gone_ = true;
    auto& list = subsys_ ? subsys_->controllers_ : target_.discovery_controllers_;
    list.erase(std::remove(list.begin(), list.end(), this), list.end());
    subsys_ = nullptr;
    kato_timer_.cancel();
    cancel_aers(nullptr);
    for (NvmeQueuePair::Impl* q : queues_) {
        if (q) {
            q->transport_.request_disconnect();
        }
    }
}

bool NvmeController::queue_in_use(uint16_t qid) const
{
    return qid < queues_.size() && queues_[qid] != nullptr;
}

void NvmeController::attach_queue(uint16_t qid, NvmeQueuePair::Impl* q)
{
    if (qid >= queues_.size()) {
        queues_.resize(qid + 1u, nullptr);
    }
    queues_[qid] = q;
}

void NvmeController::detach_queue(uint16_t qid)
{
    if (qid < queues_.size()) {
        queues_[qid] = nullptr;
    }
}

uint64_t NvmeController::cap() const
{
    // MQES, CQR, TO 7.5 s, CSS: NVM and "one or more I/O command sets"
    // (the host then selects CC.CSS 110b and sees zoned namespaces),
    // MPSMIN = MPSMAX = 4 KiB.  The same as Linux nvmet.
    uint64_t mqes = uint64_t(port_.max_queue_entries - 1);
    return mqes | 1ull << 16 | 15ull << 24 | 1ull << 37 | 1ull << 43;
}

Task<void> NvmeController::co_set_cc(uint32_t value)
{
    uint32_t old = cc_;
    cc_ = value;
    if ((value & kCcEnable) && !(old & kCcEnable)) {
        // Enable: refused as nvmet does, with the fatal status.
        bool ok = cc_mps(value) == 0 && cc_ams(value) == 0 &&
                  (cc_css(value) == kCssNvm || cc_css(value) == kCssAll);
        if (!discovery_) {
            ok = ok && cc_iosqes(value) == 6 && cc_iocqes(value) == 4;
        }
        csts_ = ok ? (csts_ | kCstsRdy) : (csts_ | kCstsCfs);
    } else if (!(value & kCcEnable) && (old & kCcEnable)) {
        // Reset: the host re-enables from scratch.
        csts_ &= ~(kCstsRdy | kCstsCfs);
    }
    if (cc_shn(value) && !cc_shn(old)) {
        // Shutdown: whatever the volatile write cache holds reaches the
        // nodes before the host is told the shutdown is complete.
        for (const auto& ns : namespaces()) {
            co_await ns->blk().co_flush();
        }
        csts_ = (csts_ & ~kCstsShstMask) | kCstsShstComplete;
    } else if (!cc_shn(value) && cc_shn(old)) {
        csts_ &= ~kCstsShstMask;
    }
}

std::shared_ptr<NvmeNamespace> NvmeController::find_namespace(uint32_t nsid) const
{
    if (!subsys_) {
        return nullptr;
    }
    auto ns = subsys_->find_namespace(nsid);
    if (ns && ns->csi() != NVME_CSI_NVM && cc_css(cc_) != kCssAll) {
        return nullptr;
    }
    return ns;
}

std::vector<std::shared_ptr<NvmeNamespace>> NvmeController::namespaces() const
{
    std::vector<std::shared_ptr<NvmeNamespace>> out;
    if (subsys_) {
        for (const auto& [nsid, ns] : subsys_->namespaces_) {
            if (find_namespace(nsid)) {
                out.push_back(ns);
            }
        }
    }
    return out;
}

void NvmeController::set_kato(uint32_t ms)
{
    kato_ms_ = ms;
    keep_alive();
}

void NvmeController::keep_alive()
{
    if (kato_ms_ && !gone_) {
        kato_timer_.arm_ns(int64_t(kato_ms_) * 1000000);
    } else {
        kato_timer_.cancel();
    }
}

void NvmeController::keep_alive_expired()
{
    // The host is gone: as nvmet, a fatal status and every queue dropped;
    // the controller goes with its admin queue.
    csts_ |= kCstsCfs;
    for (NvmeQueuePair::Impl* q : queues_) {
        if (q) {
            q->transport_.request_disconnect();
        }
    }
}

uint16_t NvmeController::set_nr_io_queues(uint16_t requested)
{
    if (!nr_io_queues_set_) {
        nr_io_queues_ = std::min<uint16_t>(requested, kNvmeMaxIoQueues);
        nr_io_queues_set_ = true;
    }
    return nr_io_queues_;
}

void NvmeController::AerPark::await_suspend(std::coroutine_handle<> h)
{
    w.handle = h;
    c.aers_.push_back(&w);
    c.deliver_events();
}

void NvmeController::deliver_events()
{
    while (!aers_.empty() && !events_.empty()) {
        NvmeAerWaiter* w = aers_.front();
        aers_.pop_front();
        w->req->cqe.set_dw0(events_.front());
        events_.pop_front();
        w->status = NVME_SC_SUCCESS;
        target_.ctx_.schedule(w->handle);
    }
}

void NvmeController::cancel_aers(const NvmeQueuePair::Impl* queue)
{
    for (auto it = aers_.begin(); it != aers_.end();) {
        if (queue && (*it)->queue != queue) {
            ++it;
            continue;
        }
        (*it)->status = NVME_SC_ABORT_SQ_DELETION;
        target_.ctx_.schedule((*it)->handle);
        it = aers_.erase(it);
    }
}

void NvmeController::namespace_changed(uint32_t nsid)
{
    if (std::find(changed_ns_.begin(), changed_ns_.end(), nsid) == changed_ns_.end()) {
        if (changed_ns_.size() < kNvmeMaxNamespaces) {
            changed_ns_.push_back(nsid);
        } else {
            changed_ns_overflow_ = true;
        }
    }
    // One notice until the host reads log 04h (NVMe: further events of
    // the type are masked until then).
    if (!ns_notice_masked_ && (aec_ & kNvmeAecNsAttr)) {
        ns_notice_masked_ = true;
        events_.push_back(kNvmeAenNsAttrChanged);
        deliver_events();
    }
}

std::vector<uint32_t> NvmeController::take_changed_namespaces(bool retain)
{
    std::vector<uint32_t> out;
    if (changed_ns_overflow_) {
        out.push_back(0xffffffff);
    } else {
        out = changed_ns_;
        std::sort(out.begin(), out.end());
    }
    changed_ns_.clear();
    changed_ns_overflow_ = false;
    if (!retain) {
        ns_notice_masked_ = false;
    }
    return out;
}

void NvmeController::record_error(uint16_t sqid, const NvmeSqe& sqe, uint16_t status)
{
    ErrorEntry e{};
    e.count = ++error_count_;
    e.sqid = sqid;
    e.cid = sqe.cid();
    e.status = status;
    e.nsid = sqe.nsid();
    // The starting LBA of the NVM and ZNS commands that have one.
    uint8_t op = sqe.opcode();
    if (sqid != 0 && op != 0x00 && op != 0x09) {
        e.lba = uint64_t(sqe.cdw(11)) << 32 | sqe.cdw(10);
    }
    errors_.push_front(e);
    if (errors_.size() > kNvmeErrorLogEntries) {
        errors_.pop_back();
    }
}

}  // namespace qemu
