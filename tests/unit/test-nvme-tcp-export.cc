// The `nvme-tcp` export type through the export registry
// (include/export/nvme-tcp.h): options and their errors, namespaces of one
// subsystem sharing a listener, and deletion closing the listener after
// the last export.
#include <catch2/catch.hpp>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "export/export.h"
#include "export/nvme-tcp.h"
#include "graph-test-util.h"
#include "qcow2-test-util.h"
#include "temp-dir.h"

using namespace qemu;

namespace {

QDict export_opts(const std::string& text)
{
    QDict d;
    Error err;
    REQUIRE(keyval_parse(d, text, "type", err));
    return d;
}

// Whether something listens on the Unix socket at path.
bool listening(const std::string& path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path.c_str());
    bool ok = connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0;
    close(fd);
    return ok;
}

}  // namespace

TEST_CASE("nvme-tcp export: namespaces share a subsystem and a listener", "[nvme-tcp][export]")
{
    nvme_tcp_export_register();
    qcow2_test::CreatedImage a("size=4M"), b("size=8M");
    TempDir dir("/tmp/nvme-tcp-export-");
    std::string sock = dir.file("nvme.sock");
    AioContext ctx;
    BlockGraph graph(ctx);
    graph_test::add_file_and_qcow2(graph, a.path);
    graph_test::add_file_and_qcow2(graph, b.path, "f1", "q1");
    BlockExportRegistry reg(graph, [](const std::string&) { return nullptr; });
    std::string addr = ",nqn=nqn.2026-01.org.qemu-zoned:x,addr.type=unix,addr.path=" + sock;

    Error err;
    auto add = [&](const std::string& text) {
        return run_sync(ctx, reg.co_add(export_opts(text), err));
    };
    CHECK(add("nvme-tcp,id=e0,node-name=q0,writable=on") == nullptr);
    CHECK(err.message == "Parameter 'nqn' is missing");
    CHECK(add("nvme-tcp,id=e0,node-name=q0" + addr) == nullptr);
    CHECK(err.message == "nvme-tcp exports of a writable node need writable=on");
    CHECK(add("nvme-tcp,id=e0,node-name=q0,writable=on,logical-block-size=1024" + addr) == nullptr);
    CHECK(err.message == "Parameter 'logical-block-size' expects 512 or 4096");
    CHECK(add("nvme-tcp,id=e0,node-name=q0,writable=on,bogus=1" + addr) == nullptr);
    CHECK(err.message == "Parameter 'bogus' is unexpected");
    CHECK_FALSE(listening(sock));

    REQUIRE(add("nvme-tcp,id=e0,node-name=q0,writable=on,serial=S1" + addr));
    CHECK(listening(sock));
    CHECK(reg.find("e0")->options().type == "nvme-tcp");
    // Same subsystem: a serial of its own is refused, none is fine.
    CHECK(add("nvme-tcp,id=e1,node-name=q1,writable=on,serial=S2" + addr) == nullptr);
    CHECK(err.message == "NVMe subsystem 'nqn.2026-01.org.qemu-zoned:x' already has serial 'S1'");
    REQUIRE(add("nvme-tcp,id=e1,node-name=q1,writable=on,nsid=7" + addr));
    CHECK(reg.list().size() == 2);

    // Deleting one namespace keeps the listener; the last one closes it.
    CHECK(run_sync(ctx, reg.co_del("e0", false, err)) == 0);
    CHECK(listening(sock));
    CHECK(run_sync(ctx, reg.co_del("e1", false, err)) == 0);
    CHECK_FALSE(listening(sock));
    CHECK(reg.list().empty());
    // And everything can be made again.
    REQUIRE(add("nvme-tcp,id=e2,node-name=q0,writable=on" + addr));
    CHECK(listening(sock));
    run_sync(ctx, reg.co_shutdown_all());
    CHECK_FALSE(listening(sock));
}
