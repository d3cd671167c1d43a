// NvmeQueuePair: one queue's commands, from Connect on, dispatched to the
// admin, NVM and ZNS handlers (include/hw/nvme/nvme.h).
#include "hw/nvme/nvme-int.h"

namespace qemu {

namespace {

enum : uint8_t {
    kAdminGetLogPage = 0x02,
    kAdminIdentify = 0x06,
    kAdminAbort = 0x08,
    kAdminSetFeatures = 0x09,
    kAdminGetFeatures = 0x0a,
    kAdminAsyncEvent = 0x0c,
    kAdminKeepAlive = 0x18,
};

Task<uint16_t> co_async_event(NvmeController& c, NvmeQueuePair::Impl& q, NvmeRequest& req)
{
    if (!c.aer_slot_free()) {
        co_return NVME_SC_ASYNC_LIMIT | NVME_SC_DNR;
    }
    NvmeAerWaiter w;
    w.req = &req;
    w.queue = &q;
    co_await NvmeController::AerPark{c, w};
    co_return w.status;
}

Task<uint16_t> co_admin_command(NvmeController& c, NvmeQueuePair::Impl& q, NvmeRequest& req)
{
    uint8_t op = req.sqe.opcode();
    switch (op) {
    case kAdminGetLogPage:
        co_return nvme_get_log_page(c, req);
    case kAdminIdentify:
        co_return nvme_identify(c, req);
    case kAdminSetFeatures:
    case kAdminGetFeatures:
        co_return nvme_admin_features(c, req);
    case kAdminAsyncEvent:
        co_return co_await co_async_event(c, q, req);
    case kAdminKeepAlive:
        c.keep_alive();
        co_return NVME_SC_SUCCESS;
    case kAdminAbort:
        if (c.discovery()) {
            break;
        }
        // Commands are not cancellable once handed to the block layer:
        // "not aborted" (DW0 bit 0), as QEMU answers.
        req.cqe.set_dw0(1);
        co_return NVME_SC_SUCCESS;
    default:
        break;
    }
    co_return NVME_SC_INVALID_OPCODE | NVME_SC_DNR;
}

Task<uint16_t> co_fabrics_command(NvmeQueuePair::Impl& q, NvmeRequest& req)
{
    switch (req.sqe.fctype()) {
    case NVMF_FCTYPE_CONNECT:
        if (q.ctrl_) {
            co_return NVME_SC_COMMAND_SEQUENCE_ERROR | NVME_SC_DNR;
        }
        co_return nvme_fabrics_connect(q, req);
    case NVMF_FCTYPE_PROPERTY_GET:
    case NVMF_FCTYPE_PROPERTY_SET:
        if (!q.ctrl_) {
            co_return NVME_SC_COMMAND_SEQUENCE_ERROR | NVME_SC_DNR;
        }
        if (q.qid_ != 0) {
            break;  // properties belong to the admin queue
        }
        co_return co_await nvme_fabrics_property(*q.ctrl_, req);
    default:
        break;
    }
    co_return NVME_SC_INVALID_OPCODE | NVME_SC_DNR;
}

}  // namespace

NvmeQueuePair::NvmeQueuePair(NvmeTarget& target, NvmeTransportQueue& transport,
                             const NvmePortInfo& port)
    : impl_(std::make_unique<Impl>(target, transport, port))
{
}

NvmeQueuePair::~NvmeQueuePair()
{
    if (auto& c = impl_->ctrl_) {
        c->detach_queue(impl_->qid_);
        if (impl_->qid_ == 0) {
            c->shut_down();
        }
    }
}

Task<void> NvmeQueuePair::co_execute(NvmeRequest& req)
{
    Impl& q = *impl_;
    req.c2h_bytes = 0;
    req.cqe.set_dw0(0);
    req.cqe.set_dw1(0);
    // Held for the command: the queue's controller may be shut down (and
    // its subsystem removed) while the command runs.
    std::shared_ptr<NvmeController> c = q.ctrl_;
    std::optional<RequestCounter::Guard> counted;
    if (c) {
        counted.emplace(c->in_flight());
    }
    uint16_t status;
    if (req.sqe.opcode() == NVME_OPC_FABRICS) {
        status = co_await co_fabrics_command(q, req);
    } else if (!c) {
        status = NVME_SC_COMMAND_SEQUENCE_ERROR | NVME_SC_DNR;
    } else if (c->gone()) {
        status = NVME_SC_ABORT_SQ_DELETION;
    } else if ((req.sqe.flags() & 3) || (req.sqe.flags() >> 6) == 0) {
        // No fused operations (FUSES 0); fabrics carry SGLs, never PRPs.
        status = NVME_SC_INVALID_FIELD | NVME_SC_DNR;
    } else if (!c->ready()) {
        // Only Fabrics commands before CC.EN = 1 and CSTS.RDY (nvmet).
        status = NVME_SC_COMMAND_SEQUENCE_ERROR | NVME_SC_DNR;
    } else if (q.qid_ == 0) {
        status = co_await co_admin_command(*c, q, req);
    } else {
        status = co_await nvme_io_command(*c, req);
    }
    if (status != NVME_SC_SUCCESS) {
        req.c2h_bytes = 0;
        if (q.ctrl_ && !q.ctrl_->gone()) {
            q.ctrl_->record_error(q.qid_, req.sqe, status);
        }
    }
    req.cqe.set_status(status);
}

void NvmeQueuePair::cancel_waiting()
{
    if (impl_->ctrl_) {
        impl_->ctrl_->cancel_aers(impl_.get());
    }
}

bool NvmeQueuePair::connected() const
{
    return impl_->ctrl_ != nullptr;
}

uint16_t NvmeQueuePair::qid() const
{
    return impl_->qid_;
}

uint16_t NvmeQueuePair::queue_size() const
{
    return impl_->queue_size_;
}

uint32_t NvmeQueuePair::keep_alive_ms() const
{
    return impl_->ctrl_ ? impl_->ctrl_->kato_ms() : 0;
}

}  // namespace qemu
