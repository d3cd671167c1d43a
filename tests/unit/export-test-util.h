// A registry over a small qcow2 node "q0", for the tests of an export
// type's own options (test-ublk.cc, test-vduse-blk.cc).
#pragma once

#include <catch2/catch.hpp>

#include <string>

#include "export/export.h"
#include "graph-test-util.h"
#include "qcow2-test-util.h"

namespace export_test {

struct Registry {
    qcow2_test::CreatedImage img{"size=4M"};
    qemu::AioContext ctx;
    qemu::BlockGraph graph{ctx};
    qemu::BlockExportRegistry reg{graph, [](const std::string&) { return nullptr; }};

    Registry() { graph_test::add_file_and_qcow2(graph, img.path); }
    // The failed attempts left no export and no user of the node.
    ~Registry()
    {
        CHECK(reg.list().empty());
        qemu::Error err;
        CHECK(graph.del("q0", err) == 0);
    }

    // The message with which --export `text` is refused.
    std::string add_error(const std::string& text)
    {
        qemu::QDict d;
        qemu::Error err;
        REQUIRE(qemu::keyval_parse(d, text, "type", err));
        qemu::BlockExport* e = qemu::run_sync(ctx, reg.co_add(std::move(d), err));
        CHECK(e == nullptr);
        return err.message;
    }
};

}  // namespace export_test
