// Helpers of the graph, drain and iothread tests.
#pragma once

#include <catch2/catch.hpp>

#include <string>

#include "block/graph.h"

namespace graph_test {

// Adds, as two --blockdev options would, a file node (default "f0") on
// `path` and a qcow2 node (default "q0") on it; fails the test if either
// fails.
inline void add_file_and_qcow2(qemu::BlockGraph& graph, const std::string& path,
                               const std::string& file_node = "f0",
                               const std::string& qcow2_node = "q0")
{
    qemu::QDict f, q;
    f.set("driver", "file");
    f.set("node-name", file_node);
    f.set("filename", path);
    q.set("driver", "qcow2");
    q.set("node-name", qcow2_node);
    q.set("file", file_node);
    qemu::Error err;
    REQUIRE(graph.add(f, err));
    INFO(err.pretty());
    REQUIRE(graph.add(q, err));
}

}  // namespace graph_test
