// NvmeTarget: the subsystems of a process and their removal
// (include/hw/nvme/nvme.h).
#include <algorithm>
#include <cassert>

#include "hw/nvme/nvme-int.h"

namespace qemu {

namespace {

constexpr size_t kNqnMax = 223;  // NVMF_NQN_SIZE, without the NUL

bool check_nqn(const std::string& nqn, Error& err)
{
    if (nqn.compare(0, 4, "nqn.") != 0 || nqn.size() > kNqnMax) {
        err.set("'%s' is not an NQN (nqn.YYYY-MM.reverse-domain:name, up to %zu bytes)",
                nqn.c_str(), kNqnMax);
        return false;
    }
    for (unsigned char c : nqn) {
        if (c < 0x20 || c > 0x7e) {
            err.set("NQN '%s' has a character that is not printable ASCII", nqn.c_str());
            return false;
        }
    }
    if (nqn == kNvmeDiscoveryNqn) {
        err.set("'%s' is the discovery subsystem's NQN", nqn.c_str());
        return false;
    }
    return true;
}

bool check_ascii_field(const char* what, const std::string& s, size_t max, Error& err)
{
    bool printable = std::all_of(s.begin(), s.end(),
                                 [](unsigned char c) { return c >= 0x20 && c <= 0x7e; });
    if (s.empty() || s.size() > max || !printable) {
        err.set("%s '%s' must be 1 to %zu printable ASCII characters", what, s.c_str(), max);
        return false;
    }
    return true;
}

}  // namespace

NvmeSubsystem::Impl* NvmeTarget::Impl::find(const std::string& nqn) const
{
    for (const auto& s : subsystems_) {
        if (s->impl().nqn_ == nqn) {
            return &s->impl();
        }
    }
    return nullptr;
}

uint16_t NvmeTarget::Impl::allocate_discovery_cntlid()
{
    return nvme_allocate_cntlid(next_discovery_cntlid_, discovery_controllers_);
}

NvmeTarget::NvmeTarget(AioContext& ctx) : impl_(std::make_unique<Impl>(ctx)) {}

NvmeTarget::~NvmeTarget()
{
    assert(impl_->subsystems_.empty());
    assert(impl_->discovery_controllers_.empty());
}

AioContext& NvmeTarget::ctx() const
{
    return impl_->ctx_;
}

NvmeSubsystem* NvmeTarget::add_subsystem(const std::string& nqn, const NvmePortInfo& port,
                                         std::string serial, std::string model, Error& err)
{
    if (!check_nqn(nqn, err) || !check_ascii_field("serial number", serial, 20, err) ||
        !check_ascii_field("model number", model, 40, err)) {
        return nullptr;
    }
    if (impl_->find(nqn)) {
        err.set("subsystem '%s' already exists", nqn.c_str());
        return nullptr;
    }
    impl_->subsystems_.push_back(std::make_unique<NvmeSubsystem>(*this, nqn, std::move(serial),
                                                                 std::move(model)));
    NvmeSubsystem* s = impl_->subsystems_.back().get();
    s->impl().port_ = port;  // a copy: the caller's may go
    impl_->discovery_genctr_++;
    return s;
}

NvmeSubsystem* NvmeTarget::find_subsystem(const std::string& nqn) const
{
    for (const auto& s : impl_->subsystems_) {
        if (s->nqn() == nqn) {
            return s.get();
        }
    }
    return nullptr;
}

Task<void> NvmeTarget::co_remove_subsystem(const std::string& nqn)
{
    auto& list = impl_->subsystems_;
    auto it = std::find_if(list.begin(), list.end(), [&](auto& s) { return s->nqn() == nqn; });
    if (it == list.end()) {
        co_return;
    }
    NvmeSubsystem::Impl& s = (*it)->impl();
    assert(s.namespaces_.empty());
    // Controllers stay alive while their queues exist; here they only have
    // to let go of the subsystem, and their commands have to return.
    std::vector<std::shared_ptr<NvmeController>> held;
    for (NvmeController* c : std::vector<NvmeController*>(s.controllers_)) {
        held.push_back(c->shared_from_this());
        c->shut_down();
    }
    for (auto& c : held) {
        while (c->in_flight().count() != 0) {
            co_await c->in_flight().wait_idle();
        }
    }
    it = std::find_if(list.begin(), list.end(), [&](auto& p) { return p->nqn() == nqn; });
    list.erase(it);
    impl_->discovery_genctr_++;
}

}  // namespace qemu
