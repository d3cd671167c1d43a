// Helpers of the graph, drain and iothread tests.
#pragma once

#include <catch2/catch.hpp>

#include <string>

#include "block/graph.h"

namespace graph_test {

// Adds, as two --blockdev options would, a file node "f0" on `path` and a
// qcow2 node "q0" on it (file=f0); fails the test if either fails.
inline void add_file_and_qcow2(qemu::BlockGraph& graph, const std::string& path)
{
    qemu::QDict f, q;
    f.set("driver", "file");
    f.set("node-name", "f0");
    f.set("filename", path);
    q.set("driver", "qcow2");
    q.set("node-name", "q0");
    q.set("file", "f0");
    qemu::Error err;
    REQUIRE(graph.add(f, err));
    INFO(err.pretty());
    REQUIRE(graph.add(q, err));
}

}  // namespace graph_test
