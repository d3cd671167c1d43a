// Drained sections (QEMU's bdrv_drained_begin/end) and moving nodes
// between AioContexts.  See docs/devel/block-layer.rst, "Drain".
#include <algorithm>

#include "block/block-backend.h"
#include "block/block_int.h"
#include "qemu/iothread.h"

namespace qemu {

namespace {

template <typename T>
bool push_new(std::vector<T*>& v, T* x)
{
    if (std::find(v.begin(), v.end(), x) != v.end()) {
        return false;
    }
    v.push_back(x);
    return true;
}

// What a drained section of a node covers: the node and every node below
// it (their requests must stop), every node above any of these and the
// backends on all of them (where requests come from).
struct DrainScope {
    std::vector<BlockDriverState*> nodes;
    std::vector<BlockBackend*> backends;

    explicit DrainScope(BlockDriverState* bs)
    {
        add_subtree(bs);
        // nodes grows while we walk it: parents' parents are added too.
        for (size_t i = 0; i < nodes.size(); i++) {
            for (BdrvChild* p : nodes[i]->parents()) {
                if (p->backend) {
                    push_new(backends, p->backend);
                } else if (p->parent) {
                    push_new(nodes, p->parent);
                }
            }
        }
    }

    void add_subtree(BlockDriverState* bs)
    {
        if (push_new(nodes, bs)) {
            for (const auto& c : bs->children()) {
                add_subtree(c->bs.get());
            }
        }
    }
};

}  // namespace

Task<void> bdrv_co_drained_begin(BlockDriverState* bs)
{
    DrainScope scope(bs);
    for (BlockDriverState* n : scope.nodes) {
        n->quiesce_counter_++;
    }
    for (BlockBackend* b : scope.backends) {
        b->quiesce_counter_++;
    }
    // Every completion that empties a node or backend wakes us; look again
    // at all of them then, since requests inside the graph may issue
    // further ones elsewhere in the scope.
    for (;;) {
        auto busy_node = std::find_if(scope.nodes.begin(), scope.nodes.end(),
                                      [](BlockDriverState* n) { return n->in_flight() > 0; });
        if (busy_node != scope.nodes.end()) {
            co_await (*busy_node)->requests_.wait_idle();
            continue;
        }
        auto busy_blk = std::find_if(scope.backends.begin(), scope.backends.end(),
                                     [](BlockBackend* b) { return b->in_flight() > 0; });
        if (busy_blk != scope.backends.end()) {
            co_await (*busy_blk)->requests_.wait_idle();
            continue;
        }
        break;
    }
}

void bdrv_drained_end(BlockDriverState* bs)
{
    // The graph may have changed inside the section (that is what it is
    // for): what left it is not ours to count down, what joined it was
    // given the counts of the node it joined.
    DrainScope scope(bs);
    for (BlockDriverState* n : scope.nodes) {
        if (n->quiesce_counter_ > 0) {
            n->quiesce_counter_--;
        }
    }
    for (BlockBackend* b : scope.backends) {
        if (b->quiesce_counter_ > 0 && --b->quiesce_counter_ == 0) {
            b->queued_requests_.restart_all();
        }
    }
}

Task<DrainedSection> DrainedSection::begin(BlockDriverState* bs)
{
    co_await bdrv_co_drained_begin(bs);
    co_return DrainedSection(bs);
}

namespace {

// Every node connected to bs by edges in either direction, and the
// backends on them: what moves together between contexts.
void connected_component(BlockDriverState* bs, std::vector<BlockDriverState*>& nodes,
                         std::vector<BlockBackend*>& backends)
{
    if (!push_new(nodes, bs)) {
        return;
    }
    for (const auto& c : bs->children()) {
        connected_component(c->bs.get(), nodes, backends);
    }
    for (BdrvChild* p : bs->parents()) {
        if (p->backend) {
            push_new(backends, p->backend);
        } else if (p->parent) {
            connected_component(p->parent, nodes, backends);
        }
    }
}

}  // namespace

Task<int> bdrv_co_change_aio_context(BlockDriverState* bs, AioContext& new_ctx, Error& err)
{
    if (&bs->ctx() == &new_ctx) {
        co_return 0;
    }
    std::vector<BlockDriverState*> nodes;
    std::vector<BlockBackend*> backends;
    connected_component(bs, nodes, backends);
    std::vector<DrainedSection> sections;
    for (BlockDriverState* n : nodes) {
        sections.push_back(co_await DrainedSection::begin(n));
    }
    // Requests held back by the drain are coroutines of this thread: they
    // would resume here and then use a node that another thread runs.
    // Their users must stop submitting before the move (an export moves
    // with its node), as QEMU's iothread-bound backends refuse to move.
    for (BlockBackend* b : backends) {
        if (!b->queued_requests_.empty()) {
            err.set("Cannot change iothread of active block backend");
            co_return -EBUSY;
        }
    }
    for (BlockDriverState* n : nodes) {
        n->drv_detach_aio_context();
        n->ctx_ = &new_ctx;
    }
    co_await co_run_in<void>(new_ctx, [&nodes, &new_ctx]() -> Task<void> {
        for (BlockDriverState* n : nodes) {
            n->drv_attach_aio_context(new_ctx);
        }
        co_return;
    });
    co_return 0;
}

}  // namespace qemu
