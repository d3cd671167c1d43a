// The vduse-blk export's options (export/vduse-blk/): QEMU's keys, refused
// with a clear message before the kernel is asked, whatever the host has.
#include <catch2/catch.hpp>

#include "export-test-util.h"
#include "export/vduse-blk.h"
#include "export/vduse-blk/vduse-proto.h"

using namespace qemu;

TEST_CASE("vduse-blk: bad options are refused before the kernel is asked", "[vduse][graph]")
{
    vduse_blk_export_register();
    export_test::Registry r;
    auto add_error = [&](const std::string& text) { return r.add_error(text); };
    const std::string base = "vduse-blk,id=e0,node-name=q0,writable=on";
    CHECK(add_error(base) == "Parameter 'name' is missing");
    CHECK(add_error(base + ",name=") == "vduse-blk: invalid device name ''");
    CHECK(add_error(base + ",name=a/b") == "vduse-blk: invalid device name 'a/b'");
    CHECK(add_error(base + ",name=..") == "vduse-blk: invalid device name '..'");
    CHECK(add_error(base + ",name=" + std::string(256, 'x')) ==
          "vduse-blk: invalid device name '" + std::string(256, 'x') + "'");
    CHECK(add_error(base + ",name=v0,num-queues=0") ==
          "Invalid num-queues: must be from 1 to 1024");
    CHECK(add_error(base + ",name=v0,queue-size=100") ==
          "Invalid queue-size: must be a power of two from 2 to 1024");
    CHECK(add_error(base + ",name=v0,queue-size=2048") ==
          "Invalid queue-size: must be a power of two from 2 to 1024");
    CHECK(add_error(base + ",name=v0,num-queues=x") ==
          "Parameter 'num-queues' expects a number");
}

TEST_CASE("vduse-blk: the ioctl numbers and message sizes of Linux's vduse.h", "[vduse]")
{
    // The values Linux's headers give on x86-64 (API version 0).
    CHECK(vduse::kSetApiVersion == 0x40088101ul);
    CHECK(vduse::kCreateDev == 0x41508102ul);
    CHECK(vduse::kDestroyDev == 0x41008103ul);
    CHECK(vduse::kIotlbGetFd == 0xc0208110ul);
    CHECK(vduse::kDevGetFeatures == 0x80088111ul);
    CHECK(vduse::kVqSetup == 0x40208114ul);
    CHECK(vduse::kVqGetInfo == 0xc0308115ul);
    CHECK(vduse::kVqSetupKickfd == 0x40088116ul);
    CHECK(vduse::kVqInjectIrq == 0x40048117ul);
    CHECK(sizeof(vduse::DevRequest) == 152);
    CHECK(sizeof(vduse::DevResponse) == 152);
}
