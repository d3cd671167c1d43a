// BlockGraph: nodes by name as the storage daemon's --blockdev builds them,
// references between them, QEMU's permission rules between their users and
// blockdev-del's refusals.
#include <catch2/catch.hpp>

#include <cstring>

#include "block/block-backend.h"
#include "block/graph.h"
#include "graph-test-util.h"
#include "qcow2-test-util.h"

using namespace qemu;
using qcow2_test::CreatedImage;

namespace {

QDict opts(const std::string& text)
{
    QDict o;
    Error err;
    REQUIRE(keyval_parse(o, text, nullptr, err));
    return o;
}

constexpr uint64_t kRW = BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE;

// f0 (file) and q0 (qcow2 on f0), as two --blockdev options name them.
struct FileAndQcow2 {
    CreatedImage img{"size=1M"};
    AioContext ctx;
    BlockGraph graph{ctx};
    BlockDriverState* f0 = nullptr;
    BlockDriverState* q0 = nullptr;

    FileAndQcow2()
    {
        graph_test::add_file_and_qcow2(graph, img.path);
        f0 = graph.lookup("f0").get();
        q0 = graph.lookup("q0").get();
    }
};

}  // namespace

TEST_CASE("graph: a qcow2 node uses a file node by its name", "[graph]")
{
    FileAndQcow2 g;
    REQUIRE(g.q0->file()->bs.get() == g.f0);
    REQUIRE(g.f0->parents().size() == 1);
    REQUIRE(g.graph.lookup("q0").get() == g.q0);
    // A format that may write holds write and resize on its file, and lets
    // nobody else write it, even with no user above (as in QEMU).
    REQUIRE((g.f0->perm() & (BLK_PERM_WRITE | BLK_PERM_RESIZE)) == (BLK_PERM_WRITE | BLK_PERM_RESIZE));
    REQUIRE_FALSE(g.f0->shared_perm() & BLK_PERM_WRITE);

    Error err;
    auto blk = BlockBackend::attach(g.graph.lookup("q0"), kRW, BLK_PERM_ALL, "exp0", err);
    REQUIRE(blk);
    char buf[512], back[512];
    memset(buf, 0x5a, sizeof(buf));
    REQUIRE(blk->pwrite(4096, sizeof(buf), buf) == 0);
    REQUIRE(blk->pread(4096, sizeof(back), back) == 0);
    REQUIRE(memcmp(buf, back, sizeof(buf)) == 0);
}

TEST_CASE("graph: references to nodes that do not exist", "[graph]")
{
    CreatedImage img("size=1M");
    AioContext ctx;
    BlockGraph graph(ctx);
    Error err;
    REQUIRE_FALSE(graph.add(opts("driver=qcow2,node-name=q0,file=f9"), err));
    REQUIRE(err.pretty() == "Cannot find device='f9' nor node-name='f9'");

    Error err2;
    REQUIRE(graph.add(opts("driver=file,node-name=f0,filename=" + img.path), err2));
    REQUIRE_FALSE(graph.add(opts("driver=qcow2,node-name=q0,file=f0,backing=b9"), err2));
    REQUIRE(err2.pretty() == "Could not open backing file: Cannot find device='b9' nor node-name='b9'");
    // The failed node left no name and no user behind.
    REQUIRE_FALSE(graph.lookup("q0"));
    REQUIRE(graph.lookup("f0")->parents().empty());
}

TEST_CASE("graph: node names follow QEMU's rules", "[graph]")
{
    CreatedImage img("size=1M");
    AioContext ctx;
    BlockGraph graph(ctx);
    std::string file = ",filename=" + img.path;
    Error e1, e2, e3, e4;
    REQUIRE_FALSE(graph.add(opts("driver=file" + file), e1));
    REQUIRE(e1.pretty() == "'node-name' must be specified for the root node");
    REQUIRE_FALSE(graph.add(opts("driver=file,node-name=1f" + file), e2));
    REQUIRE(e2.pretty() == "Invalid node-name: '1f'");
    REQUIRE(graph.add(opts("driver=file,node-name=f0,read-only=on" + file), e3));
    REQUIRE_FALSE(graph.add(opts("driver=file,node-name=f0,read-only=on" + file), e3));
    REQUIRE(e3.pretty() == "Duplicate nodes with node-name='f0'");
    // A child opened inline gets a generated name, which others may use.
    BlockDriverState* q = graph.add(
        opts("driver=qcow2,node-name=q0,read-only=on,file.driver=file,file.filename=" + img.path),
        e4);
    INFO(e4.pretty());
    REQUIRE(q);
    const std::string& child = q->file()->bs->node_name();
    REQUIRE(child.rfind("#block", 0) == 0);
    REQUIRE(graph.lookup(child).get() == q->file()->bs.get());
}

TEST_CASE("graph: two writers of one node are refused with QEMU's message", "[graph]")
{
    FileAndQcow2 g;
    Error err;
    REQUIRE_FALSE(g.graph.add(opts("driver=qcow2,node-name=q1,file=f0"), err));
    REQUIRE(err.pretty() ==
            "Permission conflict on node 'f0': permissions 'write, resize' are both required by "
            "node 'q0' (uses node 'f0' as 'file' child) and unshared by node 'q1' (uses node "
            "'f0' as 'file' child).");
    REQUIRE(g.f0->parents().size() == 1);
    // A reader that shares everything fits beside the writer.
    Error err2;
    BlockDriverState* r0 = g.graph.add(opts("driver=raw,node-name=r0,read-only=on,file=f0"), err2);
    INFO(err2.pretty());
    REQUIRE(r0);
    REQUIRE(g.f0->parents().size() == 2);
}

TEST_CASE("graph: backends share a node when their permissions agree", "[graph]")
{
    FileAndQcow2 g;
    auto q0 = g.graph.lookup("q0");
    Error err;
    auto a = BlockBackend::attach(q0, kRW, BLK_PERM_ALL, "exp0", err);
    auto b = BlockBackend::attach(q0, kRW, BLK_PERM_ALL, "exp1", err);
    REQUIRE(a);
    REQUIRE(b);
    // A writer that lets nobody else write.
    uint64_t no_writers = BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE_UNCHANGED | BLK_PERM_RESIZE;
    REQUIRE_FALSE(BlockBackend::attach(q0, kRW, no_writers, "exp2", err));
    REQUIRE(err.pretty() ==
            "Permission conflict on node 'q0': permissions 'write' are both required by block "
            "device 'exp1' (uses node 'q0' as 'root' child) and unshared by block device 'exp2' "
            "(uses node 'q0' as 'root' child).");
    Error err2;
    REQUIRE_FALSE(BlockBackend::attach(q0, kRW, no_writers, "", err2));
    REQUIRE(err2.pretty().find("unshared by an unnamed block device") != std::string::npos);
    // Once the others are gone, it may.
    run_sync(g.ctx, a->co_close());
    run_sync(g.ctx, b->co_close());
    Error err3;
    auto c = BlockBackend::attach(q0, kRW, no_writers, "exp2", err3);
    REQUIRE(c);
    // set_perm is checked the same way and changes nothing on failure.
    auto d = BlockBackend::attach(q0, BLK_PERM_CONSISTENT_READ, BLK_PERM_ALL, "exp3", err3);
    REQUIRE(d);
    Error err4;
    REQUIRE(d->set_perm(kRW, BLK_PERM_ALL, err4) == -EPERM);
    REQUIRE(d->perm() == BLK_PERM_CONSISTENT_READ);
}

TEST_CASE("graph: blockdev-del removes a node only when nothing uses it", "[graph]")
{
    FileAndQcow2 g;
    CreatedImage top("size=1M");
    Error err;
    REQUIRE(g.graph.add(opts("driver=file,node-name=tf,filename=" + top.path), err));
    BlockDriverState* t = g.graph.add(opts("driver=qcow2,node-name=top,file=tf,backing=q0"), err);
    INFO(err.pretty());
    REQUIRE(t);
    REQUIRE(t->backing()->bs.get() == g.q0);

    auto expect = [&](const std::string& node, int ret, const std::string& msg) {
        Error e;
        REQUIRE(g.graph.del(node, e) == ret);
        REQUIRE(e.pretty() == msg);
    };
    expect("nope", -ENOENT, "Failed to find node with node-name='nope'");
    expect("q0", -EBUSY, "Node 'q0' is busy: node is used as backing hd of 'top'");
    expect("f0", -EBUSY, "Block device f0 is in use");
    {
        auto blk = BlockBackend::attach(g.graph.lookup("top"), kRW, BLK_PERM_ALL, "", err);
        REQUIRE(blk);
        expect("top", -EBUSY, "Node top is in use");
        run_sync(g.ctx, blk->co_close());
    }
    Error e;
    REQUIRE(g.graph.del("top", e) == 0);
    REQUIRE_FALSE(g.graph.lookup("top"));
    REQUIRE(g.graph.del("tf", e) == 0);
    REQUIRE(g.graph.del("q0", e) == 0);
    REQUIRE(g.f0->parents().empty());
    REQUIRE(g.graph.del("f0", e) == 0);
    REQUIRE(g.graph.owned_names().empty());

    // A child the graph does not own itself.
    BlockDriverState* q = g.graph.add(
        opts("driver=qcow2,node-name=q2,file.driver=file,file.filename=" + g.img.path), err);
    REQUIRE(q);
    std::string child = q->file()->bs->node_name();
    expect(child, -EINVAL, "Node " + child + " is not owned by the monitor");
}
