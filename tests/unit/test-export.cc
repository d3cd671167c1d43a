// The export registry: the common keys with QEMU's messages, iothreads,
// and deletion (include/export/export.h), through a minimal export type.
#include <catch2/catch.hpp>

#include "export/export.h"
#include "graph-test-util.h"
#include "qcow2-test-util.h"

using namespace qemu;

namespace {

// An export type whose only key is `reject` (create fails) and that
// records how it was stopped.
struct ProbeExport : BlockExport {
    ProbeExport(const BlockExportOptions& o, std::unique_ptr<BlockBackend> blk)
        : BlockExport(o, std::move(blk)) {}
    static inline int stops = 0;
    static inline bool last_hard = false;
    Task<void> co_stop(bool hard) override
    {
        stops++;
        last_hard = hard;
        co_return;
    }
};

Task<std::unique_ptr<BlockExport>> probe_create(const BlockExportOptions& o, QDict& opts,
                                                std::unique_ptr<BlockBackend> blk, Error& err)
{
    if (take_string(opts, "reject") == "on") {
        err.set("probe export refused");
        co_await blk->co_close();
        co_return nullptr;
    }
    co_return std::make_unique<ProbeExport>(o, std::move(blk));
}

const BlockExportDriver kProbe = {"probe", BLK_PERM_RESIZE, probe_create};

QDict export_opts(const std::string& text)
{
    QDict d;
    Error err;
    REQUIRE(keyval_parse(d, text, "type", err));
    return d;
}

}  // namespace

TEST_CASE("export registry: QEMU's messages for bad --export options", "[export][graph]")
{
    block_export_register(kProbe);
    qcow2_test::CreatedImage img("size=4M");
    AioContext ctx;
    BlockGraph graph(ctx);
    graph_test::add_file_and_qcow2(graph, img.path);
    BlockExportRegistry reg(graph, [](const std::string&) { return nullptr; });

    auto add_error = [&](const std::string& text) {
        Error err;
        BlockExport* e = run_sync(ctx, reg.co_add(export_opts(text), err));
        CHECK(e == nullptr);
        return err.message;
    };
    CHECK(add_error("id=e0,node-name=q0") == "Parameter 'type' is missing");
    CHECK(add_error("xyz,id=e0,node-name=q0") == "Parameter 'type' does not accept value 'xyz'");
    CHECK(add_error("probe,id=0e,node-name=q0") == "Invalid block export id");
    CHECK(add_error("probe,id=e0,node-name=nope") == "Cannot find device='' nor node-name='nope'");
    CHECK(add_error("probe,id=e0,node-name=q0,writable=maybe") ==
          "Parameter 'writable' expects 'on' or 'off'");
    CHECK(add_error("probe,id=e0,node-name=q0,iothread=io9") == "iothread \"io9\" not found");
    CHECK(add_error("probe,id=e0,node-name=q0,bogus=1") == "Parameter 'bogus' is unexpected");
    CHECK(add_error("probe,id=e0,node-name=q0,reject=on") == "probe export refused");
    // The failed attempts left no export and no user of the node.
    CHECK(reg.list().empty());
    Error err;
    CHECK(graph.del("q0", err) == 0);
}

TEST_CASE("export registry: add, refuse a duplicate, delete with the event", "[export][graph]")
{
    block_export_register(kProbe);
    qcow2_test::CreatedImage img("size=4M");
    AioContext ctx;
    BlockGraph graph(ctx);
    graph_test::add_file_and_qcow2(graph, img.path);
    BlockExportRegistry reg(graph, [](const std::string&) { return nullptr; });
    std::vector<std::string> deleted;
    reg.set_on_deleted([&](const std::string& id) { deleted.push_back(id); });

    Error err;
    BlockExport* e = run_sync(ctx, reg.co_add(export_opts("probe,id=e0,node-name=q0,writable=on"), err));
    REQUIRE(e);
    CHECK(e->blk().perm() == (BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE));
    CHECK((e->blk().shared_perm() & BLK_PERM_RESIZE) == 0);
    CHECK(reg.find("e0") == e);
    CHECK(run_sync(ctx, reg.co_add(export_opts("probe,id=e0,node-name=q0"), err)) == nullptr);
    CHECK(err.message == "Block export id 'e0' is already in use");
    // A node in use by an export cannot be deleted.
    CHECK(graph.del("q0", err) < 0);

    CHECK(run_sync(ctx, reg.co_del("e9", false, err)) < 0);
    CHECK(err.message == "Export 'e9' is not found");
    ProbeExport::stops = 0;
    CHECK(run_sync(ctx, reg.co_del("e0", true, err)) == 0);
    CHECK(ProbeExport::stops == 1);
    CHECK(ProbeExport::last_hard);
    CHECK(deleted == std::vector<std::string>{"e0"});
    CHECK(reg.list().empty());
    CHECK(graph.del("q0", err) == 0);
}

TEST_CASE("export registry: iothread= moves the node and the export runs there", "[export][thread]")
{
    block_export_register(kProbe);
    qcow2_test::CreatedImage img("size=4M");
    AioContext ctx;
    IOThread io("io0");
    BlockGraph graph(ctx);
    graph_test::add_file_and_qcow2(graph, img.path);
    BlockExportRegistry reg(graph, [&](const std::string& id) { return id == "io0" ? &io : nullptr; });
    Error err;
    BlockExport* e = run_sync(ctx, reg.co_add(export_opts("probe,id=e0,node-name=q0,iothread=io0"), err));
    REQUIRE(e);
    CHECK(&e->ctx() == &io.ctx());
    CHECK(&graph.lookup("q0")->ctx() == &io.ctx());
    run_sync(ctx, reg.co_shutdown_all());
    CHECK(reg.list().empty());
    // Back to the main loop before the graph lets go of it.
    REQUIRE(run_sync(ctx, co_run_in<int>(io.ctx(), [&]() {
                return bdrv_co_change_aio_context(graph.lookup("q0").get(), ctx, err);
            })) == 0);
    CHECK(graph.del("q0", err) == 0);
}
