// BlockGraph: the nodes a long-running program (the storage daemon) holds,
// by node name, as QEMU's global graph with its monitor-owned nodes.
//
//   --blockdev driver=file,node-name=f0,filename=x.qcow2
//   --blockdev driver=qcow2,node-name=q0,file=f0
//
// add() opens a node from options (as --blockdev / blockdev-add) and keeps
// it: the graph owns it ("monitor-owned") until del().  Every node opened
// through the graph, including the children a node opens for itself
// (file.driver=..., the backing file an image names), is known by its name
// (QEMU's rules: unique, "Invalid node-name: 'x'" for names that are not
// identifiers, "#block042" when none is given); `file`, `backing` and
// `data-file` options may name any of them (file=f0) instead of opening a
// new one.  A node so shared has several parents; their permissions must
// agree (see BlockDriverState::refresh_perms), and BlockBackend::attach()
// adds users (exports) with theirs.
//
// Threads: the graph belongs to its main context's thread: call it from
// there only.  A node bound to an IOThread's context is opened, closed and
// deleted there (the graph runs that part in the node's context itself).
// The tools do not use a graph: their nodes share no names.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "block/block_int.h"

namespace qemu {

class BlockGraph {
public:
    // Nodes are opened in main_ctx.
    explicit BlockGraph(AioContext& main_ctx);
    // Closes the nodes the graph still owns.  REQUIRES: no BlockBackend
    // uses them any more.
    ~BlockGraph();
    BlockGraph(const BlockGraph&) = delete;
    BlockGraph& operator=(const BlockGraph&) = delete;

    AioContext& main_ctx() const { return main_ctx_; }

    // --blockdev / blockdev-add: opens a node from flat options (as
    // bdrv_co_open with BDRV_O_RDWR unless read-only=on) and keeps it.
    // The node needs a node-name ("'node-name' must be specified for the
    // root node").  Its permissions on shared children are checked.
    Task<BlockDriverState*> co_add(QDict options, Error& err);
    BlockDriverState* add(QDict options, Error& err);

    // blockdev-del: closes and forgets a node the graph owns, with QEMU's
    // refusals when something still uses it: "Node q0 is in use" (a
    // BlockBackend), "Node 'f0' is busy: node is used as backing hd of
    // 'q0'", "Node #block12 is not owned by the monitor", "Block device f0
    // is in use" (another node's child).  -errno and err set on failure.
    Task<int> co_del(const std::string& node_name, Error& err);
    int del(const std::string& node_name, Error& err);

    // Any node of the graph by name (nullptr: none).
    std::shared_ptr<BlockDriverState> lookup(const std::string& node_name) const;
    // Every live node of the graph, oldest first (the order of QEMU's
    // graph_bdrv_states, which query-named-block-nodes and
    // query-blockstats follow).
    std::vector<std::shared_ptr<BlockDriverState>> nodes() const;
    // The names of the nodes the graph owns, in order.
    std::vector<std::string> owned_names() const;

    // For bdrv_co_open: registers bs, just named, in the graph.  An
    // explicit name (`given`) must be well-formed; every name unique.
    bool claim_name(const std::shared_ptr<BlockDriverState>& bs, bool given, Error& err);

private:
    AioContext& main_ctx_;
    // Every node by name; nodes die with their last parent.
    std::map<std::string, std::weak_ptr<BlockDriverState>> nodes_;
    // Every node in the order it was named (nodes()).
    std::vector<std::weak_ptr<BlockDriverState>> order_;
    // The nodes add() made, which the graph keeps alive.
    std::map<std::string, std::shared_ptr<BlockDriverState>> owned_;
};

}  // namespace qemu
