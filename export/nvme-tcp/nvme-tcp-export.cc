// The `nvme-tcp` export type (include/export/nvme-tcp.h): per AioContext one
// NvmeTarget with its listeners and subsystems, created by the first export
// that needs them and freed after the last.
#include <cinttypes>
#include <functional>
#include <mutex>

#include "export/export.h"
#include "export/nvme-tcp.h"
#include "nvme-tcp-internal.h"

namespace qemu {

namespace {

struct SubsystemUse {
    std::string listener;  // key of the listener it is reachable through
    std::string serial;
    unsigned namespaces = 0;
    bool removing = false;
};

struct ListenerUse {
    std::unique_ptr<NvmeTcpListener> listener;
    bool stopping = false;
};

// The NVMe/TCP state of one AioContext; touched only in that context.
struct TargetState {
    explicit TargetState(AioContext& ctx) : target(ctx) {}
    NvmeTarget target;
    std::map<std::string, ListenerUse> listeners;
    std::map<std::string, SubsystemUse> subsystems;
    uint16_t next_portid = 1;
    CoMutex release_lock;
};

// Contexts → states; the lock guards the map only.
std::mutex states_lock;
std::map<AioContext*, std::unique_ptr<TargetState>> states;

TargetState& state_of(AioContext& ctx)
{
    std::lock_guard<std::mutex> g(states_lock);
    std::unique_ptr<TargetState>& s = states[&ctx];
    if (!s) {
        s = std::make_unique<TargetState>(ctx);
    }
    return *s;
}

// Frees the context's state once nothing uses it.
void drop_state_if_unused(AioContext& ctx)
{
    std::lock_guard<std::mutex> g(states_lock);
    auto it = states.find(&ctx);
    if (it != states.end() && it->second->subsystems.empty() && it->second->listeners.empty()) {
        states.erase(it);
    }
}

std::string listener_key(const SocketAddress& a)
{
    switch (a.type) {
    case SocketAddress::Type::Inet: return "inet:" + a.host + ":" + a.port;
    case SocketAddress::Type::Unix: return "unix:" + a.path;
    case SocketAddress::Type::Fd: break;
    }
    return "fd:" + a.str;
}

std::string default_serial(const std::string& nqn)
{
    char s[21];
    snprintf(s, sizeof(s), "%016" PRIx64, uint64_t(std::hash<std::string>()(nqn)));
    return s;
}

struct NvmeTcpOptions {
    std::string nqn;
    SocketAddress addr;
    std::string serial;
    NvmeNamespaceOptions ns;
};

bool take_options(QDict& opts, NvmeTcpOptions& o, Error& err)
{
    if (!opts.has("nqn")) {
        err.set("Parameter 'nqn' is missing");
        return false;
    }
    o.nqn = take_string(opts, "nqn");
    bool has_addr = false;
    for (const auto& [key, value] : opts) {
        has_addr |= key.rfind("addr.", 0) == 0;
    }
    if (has_addr) {
        if (!socket_address_take(opts, "addr.", o.addr, err)) {
            return false;
        }
    } else {
        o.addr.type = SocketAddress::Type::Inet;
        o.addr.host = "127.0.0.1";
        o.addr.port = "4420";
    }
    o.serial = take_string(opts, "serial");
    if (o.serial.size() > 20) {
        err.set("Parameter 'serial' expects a string of at most 20 characters");
        return false;
    }
    std::optional<uint64_t> nsid = take_number(opts, "nsid", 0, err);
    std::optional<uint64_t> lbs = nsid ? take_size(opts, "logical-block-size", 0, err) : std::nullopt;
    if (!lbs) {
        return false;
    }
    if (*nsid >= 0xffffffffu) {
        err.set("Parameter 'nsid' expects a namespace ID from 1 to 4294967294");
        return false;
    }
    if (*lbs != 0 && *lbs != 512 && *lbs != 4096) {
        err.set("Parameter 'logical-block-size' expects 512 or 4096");
        return false;
    }
    o.ns.nsid = uint32_t(*nsid);
    o.ns.logical_block_size = uint32_t(*lbs);
    o.ns.uuid = take_string(opts, "uuid");
    return true;
}

// The subsystem o.nqn reachable through o.addr, created with its listener
// if needed.  nullptr with err set.
NvmeSubsystem* get_subsystem(TargetState& st, const NvmeTcpOptions& o, Error& err)
{
    std::string key = listener_key(o.addr);
    auto sit = st.subsystems.find(o.nqn);
    if (sit != st.subsystems.end()) {
        const SubsystemUse& use = sit->second;
        if (use.removing) {
            err.set("NVMe subsystem '%s' is being removed", o.nqn.c_str());
        } else if (use.listener != key) {
            err.set("NVMe subsystem '%s' is served on another address than '%s'", o.nqn.c_str(),
                    o.addr.to_string().c_str());
        } else if (!o.serial.empty() && o.serial != use.serial) {
            err.set("NVMe subsystem '%s' already has serial '%s'", o.nqn.c_str(), use.serial.c_str());
        } else {
            return st.target.find_subsystem(o.nqn);
        }
        return nullptr;
    }
    auto lit = st.listeners.find(key);
    if (lit != st.listeners.end() && lit->second.stopping) {
        err.set("NVMe/TCP listener on '%s' is shutting down", o.addr.to_string().c_str());
        return nullptr;
    }
    if (lit == st.listeners.end()) {
        std::unique_ptr<NvmeTcpListener> l =
            NvmeTcpListener::create(st.target, o.addr, st.next_portid, err);
        if (!l) {
            return nullptr;
        }
        st.next_portid++;
        lit = st.listeners.emplace(key, ListenerUse{std::move(l), false}).first;
    }
    std::string serial = o.serial.empty() ? default_serial(o.nqn) : o.serial;
    NvmeSubsystem* sub = st.target.add_subsystem(o.nqn, lit->second.listener->port(), serial,
                                                 "qemu-zoned NVMe Ctrl", err);
    if (!sub) {
        return nullptr;
    }
    st.subsystems[o.nqn] = SubsystemUse{key, serial, 0, false};
    return sub;
}

// Removes namespace nsid (0: none) of subsystem nqn, and what that leaves
// unused: the subsystem, its listener, the context's target.  Additions and
// removals of one context run one at a time (release_lock).
Task<void> release(AioContext& ctx, std::string nqn, uint32_t nsid)
{
    TargetState& st = state_of(ctx);
    co_await st.release_lock.lock();
    SubsystemUse& use = st.subsystems.at(nqn);
    if (nsid) {
        use.namespaces--;
        co_await st.target.find_subsystem(nqn)->co_remove_namespace(nsid);
    }
    if (use.namespaces == 0 && !use.removing) {
        use.removing = true;
        co_await st.target.co_remove_subsystem(nqn);
        std::string key = use.listener;
        st.subsystems.erase(nqn);
        bool used = false;
        for (const auto& [n, u] : st.subsystems) {
            used |= u.listener == key;
        }
        ListenerUse& lu = st.listeners.at(key);
        if (!used) {
            lu.stopping = true;
            co_await lu.listener->co_stop();
            st.listeners.erase(key);
        }
    }
    st.release_lock.unlock();
    drop_state_if_unused(ctx);
}

class NvmeTcpBlockExport : public BlockExport {
public:
    NvmeTcpBlockExport(const BlockExportOptions& o, std::unique_ptr<BlockBackend> blk,
                       std::string nqn, uint32_t nsid)
        : BlockExport(o, std::move(blk)), nqn_(std::move(nqn)), nsid_(nsid)
    {
    }

protected:
    // Hosts do not leave on their own: soft and hard deletion both detach
    // the namespace at once (its commands in flight finish first).
    Task<void> co_stop(bool) override { co_await release(ctx(), nqn_, nsid_); }

private:
    std::string nqn_;
    uint32_t nsid_;
};

Task<std::unique_ptr<BlockExport>> nvme_tcp_export_create(const BlockExportOptions& o,
                                                          QDict& opts,
                                                          std::unique_ptr<BlockBackend> blk,
                                                          Error& err)
{
    NvmeTcpOptions t;
    uint32_t nsid = 0;
    // The model write-protects a namespace only for a read-only node, so a
    // read-only export of a writable node would take writes: refused.
    if (!o.writable && !blk->is_read_only()) {
        err.set("nvme-tcp exports of a writable node need writable=on");
    } else if (take_options(opts, t, err)) {
        TargetState& st = state_of(blk->ctx());
        co_await st.release_lock.lock();
        NvmeSubsystem* sub = get_subsystem(st, t, err);
        if (sub) {
            nsid = co_await sub->co_add_namespace(*blk, t.ns, err);
        }
        bool unused = sub && !nsid && st.subsystems[t.nqn].namespaces == 0;
        if (nsid) {
            st.subsystems[t.nqn].namespaces++;
        }
        st.release_lock.unlock();
        if (unused) {
            co_await release(blk->ctx(), t.nqn, 0);  // created for this export alone
        }
        drop_state_if_unused(blk->ctx());
    }
    if (!nsid) {
        co_await blk->co_close();
        co_return nullptr;
    }
    co_return std::make_unique<NvmeTcpBlockExport>(o, std::move(blk), t.nqn, nsid);
}

// As NBD: other users may not resize the node under the hosts' feet.
const BlockExportDriver kNvmeTcpExportDriver = {"nvme-tcp", BLK_PERM_RESIZE, nvme_tcp_export_create};

}  // namespace

void nvme_tcp_export_register()
{
    block_export_register(kNvmeTcpExportDriver);
}

}  // namespace qemu
