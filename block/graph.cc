// BlockGraph: nodes by name, blockdev-add and blockdev-del.
#include "block/graph.h"

#include <cctype>

#include "qemu/cutils.h"
#include "qemu/iothread.h"

namespace qemu {

namespace {

// QEMU keeps node names in a 32-byte array.
constexpr size_t kMaxNodeName = 31;

// Flushes and closes a node in its own context and lets go of it there,
// so that what it holds in that context (timers) goes in the right thread.
Task<void> close_node(std::shared_ptr<BlockDriverState> node)
{
    co_await co_run_in<void>(node->ctx(), [&node]() -> Task<void> {
        {
            auto section = co_await DrainedSection::begin(node.get());
            co_await bdrv_co_close(node.get());
        }
        node.reset();
    });
}

}  // namespace

BlockGraph::BlockGraph(AioContext& main_ctx) : main_ctx_(main_ctx)
{
}

BlockGraph::~BlockGraph()
{
    // Parents first: a node owned by the graph may be another's child.
    while (!owned_.empty()) {
        auto it = std::find_if(owned_.begin(), owned_.end(),
                               [](const auto& e) { return e.second->parents().empty(); });
        if (it == owned_.end()) {
            it = owned_.begin();  // still used by a backend: REQUIRES broken
        }
        std::shared_ptr<BlockDriverState> node = std::move(it->second);
        owned_.erase(it);
        run_sync(main_ctx_, close_node(std::move(node)));
    }
}

bool BlockGraph::claim_name(const std::shared_ptr<BlockDriverState>& bs, bool given, Error& err)
{
    const std::string& name = bs->node_name();
    if (given && !id_wellformed(name)) {
        err.set("Invalid node-name: '%s'", name.c_str());
        return false;
    }
    std::erase_if(nodes_, [](const auto& e) { return e.second.expired(); });
    if (nodes_.count(name)) {
        err.set("Duplicate nodes with node-name='%s'", name.c_str());
        return false;
    }
    if (name.size() > kMaxNodeName) {
        err.set("Node name too long");
        return false;
    }
    nodes_[name] = bs;
    std::erase_if(order_, [](const auto& n) { return n.expired(); });
    order_.push_back(bs);
    return true;
}

std::shared_ptr<BlockDriverState> BlockGraph::lookup(const std::string& node_name) const
{
    auto it = nodes_.find(node_name);
    return it == nodes_.end() ? nullptr : it->second.lock();
}

std::vector<std::shared_ptr<BlockDriverState>> BlockGraph::nodes() const
{
    std::vector<std::shared_ptr<BlockDriverState>> out;
    for (const auto& weak : order_) {
        if (auto bs = weak.lock()) {
            out.push_back(std::move(bs));
        }
    }
    return out;
}

std::vector<std::string> BlockGraph::owned_names() const
{
    std::vector<std::string> names;
    for (const auto& [name, node] : owned_) {
        names.push_back(name);
    }
    return names;
}

Task<BlockDriverState*> BlockGraph::co_add(QDict options, Error& err)
{
    if (!options.has("node-name")) {
        err.set("'node-name' must be specified for the root node");
        co_return nullptr;
    }
    auto bs = co_await bdrv_co_open(std::nullopt, std::move(options), BDRV_O_RDWR, main_ctx_, err,
                                    nullptr, this);
    if (!bs) {
        co_return nullptr;
    }
    // A node without users still holds what it needs of its children (a
    // writable format the right to write and resize its file), as in QEMU.
    if (bs->refresh_perms(err) < 0) {
        co_await close_node(std::move(bs));
        co_return nullptr;
    }
    owned_[bs->node_name()] = bs;
    co_return bs.get();
}

BlockDriverState* BlockGraph::add(QDict options, Error& err)
{
    return run_sync(main_ctx_, co_add(std::move(options), err));
}

Task<int> BlockGraph::co_del(const std::string& node_name, Error& err)
{
    std::shared_ptr<BlockDriverState> bs = lookup(node_name);
    if (!bs) {
        err.set("Failed to find node with node-name='%s'", node_name.c_str());
        co_return -ENOENT;
    }
    // In QEMU's order: a BlockBackend, then the backing blocker, then
    // ownership, then any other reference.
    for (const BdrvChild* p : bs->parents()) {
        if (p->backend) {
            err.set("Node %s is in use", node_name.c_str());
            co_return -EBUSY;
        }
    }
    for (const BdrvChild* p : bs->parents()) {
        if (p->parent && p == p->parent->backing()) {
            err.set("Node '%s' is busy: node is used as backing hd of '%s'", node_name.c_str(),
                    p->parent->node_name().c_str());
            co_return -EBUSY;
        }
    }
    auto owned = owned_.find(node_name);
    if (owned == owned_.end()) {
        err.set("Node %s is not owned by the monitor", node_name.c_str());
        co_return -EINVAL;
    }
    if (!bs->parents().empty()) {
        err.set("Block device %s is in use", node_name.c_str());
        co_return -EBUSY;
    }
    bs.reset();
    std::shared_ptr<BlockDriverState> node = std::move(owned->second);
    owned_.erase(owned);
    co_await close_node(std::move(node));
    co_return 0;
}

int BlockGraph::del(const std::string& node_name, Error& err)
{
    return run_sync(main_ctx_, co_del(node_name, err));
}

}  // namespace qemu
