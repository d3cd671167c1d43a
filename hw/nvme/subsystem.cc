// NvmeSubsystem: namespaces attached and detached while hosts are
// connected, controller IDs (include/hw/nvme/nvme.h).
#include <cassert>

#include "hw/nvme/nvme-int.h"

namespace qemu {

NvmeSubsystem::Impl::Impl(NvmeTarget& target, std::string nqn, const NvmePortInfo& port,
                          std::string serial, std::string model)
    : target_(target), nqn_(std::move(nqn)), port_(port), serial_(std::move(serial)),
      model_(std::move(model))
{
}

std::shared_ptr<NvmeNamespace> NvmeSubsystem::Impl::find_namespace(uint32_t nsid) const
{
    auto it = namespaces_.find(nsid);
    return it == namespaces_.end() ? nullptr : it->second;
}

NvmeController* NvmeSubsystem::Impl::find_controller(uint16_t cntlid) const
{
    for (NvmeController* c : controllers_) {
        if (c->cntlid() == cntlid) {
            return c;
        }
    }
    return nullptr;
}

uint16_t nvme_allocate_cntlid(uint16_t& next, const std::vector<NvmeController*>& in_use)
{
    // Dynamic controller IDs 1..FFEFh, not reused while in use.
    for (unsigned tries = 0; tries < 0xffef; tries++) {
        uint16_t id = next;
        next = uint16_t(id == 0xffef ? 1 : id + 1);
        bool taken = false;
        for (const NvmeController* c : in_use) {
            taken |= c->cntlid() == id;
        }
        if (!taken) {
            return id;
        }
    }
    return 0;
}

uint16_t NvmeSubsystem::Impl::allocate_cntlid()
{
    return nvme_allocate_cntlid(next_cntlid_, controllers_);
}

void NvmeSubsystem::Impl::notify_namespace_changed(uint32_t nsid)
{
    for (NvmeController* c : controllers_) {
        c->namespace_changed(nsid);
    }
}

NvmeSubsystem::NvmeSubsystem(NvmeTarget& target, std::string nqn, std::string serial,
                             std::string model)
    : impl_(std::make_unique<Impl>(target, std::move(nqn), NvmePortInfo{}, std::move(serial),
                                   std::move(model)))
{
}

NvmeSubsystem::~NvmeSubsystem()
{
    assert(impl_->namespaces_.empty());
    assert(impl_->controllers_.empty());
}

const std::string& NvmeSubsystem::nqn() const
{
    return impl_->nqn_;
}

bool NvmeSubsystem::has_namespaces() const
{
    return !impl_->namespaces_.empty();
}

Task<uint32_t> NvmeSubsystem::co_add_namespace(BlockBackend& blk, const NvmeNamespaceOptions& opts,
                                               Error& err)
{
    uint32_t nsid = opts.nsid;
    if (nsid == 0) {
        nsid = 1;
        while (impl_->namespaces_.count(nsid)) {
            nsid++;
        }
    }
    if (nsid > kNvmeMaxNamespaces) {
        err.set("NSID %u is out of range (1 to %u)", nsid, kNvmeMaxNamespaces);
        co_return 0;
    }
    auto ns = nvme_namespace_create(blk, nsid, opts, impl_->nqn_, err);
    if (!ns) {
        co_return 0;
    }
    if (ns->zoned()) {
        uint32_t n = 1;
        BlockZoneDescriptor first;
        int ret = co_await blk.co_zone_report(0, n, &first);
        if (ret < 0) {
            err.set_errno(ret, "cannot report the node's zones");
            co_return 0;
        }
        if (n == 1 && first.type == BlockZoneType::Conventional) {
            err.set("the node has conventional zones, which a ZNS namespace cannot show "
                    "(export them as a separate namespace through a raw node)");
            co_return 0;
        }
    }
    // Checked after the report: another namespace may have taken the NSID.
    if (impl_->namespaces_.count(nsid)) {
        err.set("NSID %u is in use", nsid);
        co_return 0;
    }
    impl_->namespaces_[nsid] = ns;
    impl_->notify_namespace_changed(nsid);
    co_return nsid;
}

Task<void> NvmeSubsystem::co_remove_namespace(uint32_t nsid)
{
    auto ns = impl_->find_namespace(nsid);
    if (!ns) {
        co_return;
    }
    impl_->namespaces_.erase(nsid);
    impl_->notify_namespace_changed(nsid);
    while (ns->in_flight().count() != 0) {
        co_await ns->in_flight().wait_idle();
    }
}

}  // namespace qemu
