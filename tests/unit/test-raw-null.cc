// The raw format and null-co protocol drivers, and generic open behaviour.
#include <catch2/catch.hpp>

#include "block/block-backend.h"
#include "mem-driver.h"

using namespace qemu;

namespace {
std::unique_ptr<BlockBackend> open_opts(AioContext& ctx, const std::string& opts, Error& err,
                                        const std::string& filename = "", int flags = BDRV_O_RDWR)
{
    test::mem_driver();
    QDict o;
    if (!opts.empty()) {
        REQUIRE(keyval_parse(o, opts, nullptr, err));
    }
    return BlockBackend::open(filename.empty() ? std::nullopt : std::optional<std::string>(filename),
                              o, flags, ctx, err);
}
}  // namespace

TEST_CASE("null-co reads zeroes only when asked to", "[null]")
{
    AioContext ctx;
    Error err;
    auto blk = open_opts(ctx, "driver=null-co,size=1M,read-zeroes=on", err);
    REQUIRE(blk);
    REQUIRE(blk->getlength() == 1048576);
    std::vector<uint8_t> buf(4096, 0xaa);
    REQUIRE(blk->pread(0, 4096, buf.data()) == 0);
    REQUIRE(buf == std::vector<uint8_t>(4096, 0));

    auto untouched = open_opts(ctx, "driver=null-co", err);
    REQUIRE(untouched);
    REQUIRE(untouched->getlength() == 1ULL << 30);
    std::vector<uint8_t> buf2(4096, 0xaa);
    REQUIRE(untouched->pread(0, 4096, buf2.data()) == 0);
    REQUIRE(buf2 == std::vector<uint8_t>(4096, 0xaa));
}

TEST_CASE("null-co:// selects the protocol; the format is probed on top", "[null]")
{
    AioContext ctx;
    Error err;
    auto blk = open_opts(ctx, "", err, "null-co://", 0);
    INFO(err.message);
    REQUIRE(blk);
    REQUIRE(blk->bs()->drv().name() == "raw");
    REQUIRE(blk->bs()->file()->bs->drv().name() == "null-co");
    REQUIRE_FALSE(open_opts(ctx, "", err, "null-co://foo", 0));
    REQUIRE(err.message == "The only allowed filename for this driver is 'null-co://'");
}

TEST_CASE("raw offset/size exposes a window of the file", "[raw]")
{
    AioContext ctx;
    Error err;
    auto blk = open_opts(ctx, "driver=raw,offset=4k,size=8k,file.driver=test-mem,file.size=64k", err);
    INFO(err.message);
    REQUIRE(blk);
    REQUIRE(blk->getlength() == 8192);
    uint8_t b[512];
    memset(b, 0x77, sizeof(b));
    REQUIRE(blk->pwrite(0, 512, b) == 0);
    auto* mem = static_cast<test::MemState*>(blk->bs()->file()->bs.get());
    REQUIRE(mem->data[4096] == 0x77);
    REQUIRE(mem->data[4095] == 0);
    REQUIRE(blk->pwrite(8192 - 256, 512, b) == -EIO);  // beyond the window
    REQUIRE(blk->bs()->filename().rfind("json:", 0) == 0);
}

TEST_CASE("raw rejects windows outside the file", "[raw]")
{
    AioContext ctx;
    Error err;
    REQUIRE_FALSE(open_opts(ctx, "driver=raw,offset=2M,file.driver=test-mem,file.size=1M", err));
    REQUIRE(err.message == "Offset (2097152) cannot be greater than size of the containing file (1048576)");
    REQUIRE_FALSE(open_opts(ctx, "driver=raw,offset=512k,size=1M,file.driver=test-mem,file.size=1M", err));
    REQUIRE(err.message.find("has to be smaller or equal") != std::string::npos);
}

TEST_CASE("raw passes zoned limits up from its child", "[raw][zoned]")
{
    AioContext ctx;
    Error err;
    auto blk = open_opts(ctx, "driver=raw,file.driver=test-mem,file.size=1M,file.zone-size=256k", err);
    REQUIRE(blk);
    const BlockLimits& bl = blk->bs()->limits();
    REQUIRE(bl.zoned == BlockZoneModel::HostManaged);
    REQUIRE(bl.zone_size == 256 * 1024);
    REQUIRE(bl.nr_zones == 4);
    REQUIRE(bl.max_open_zones == 4);
    REQUIRE(bl.max_active_zones == 8);
    REQUIRE(bl.max_append_bytes == 65536);
}

TEST_CASE("unknown options and drivers are errors naming them", "[open]")
{
    AioContext ctx;
    Error err;
    REQUIRE_FALSE(open_opts(ctx, "driver=raw,foo=1,file.driver=test-mem", err));
    REQUIRE(err.message == "Block format 'raw' does not support the option 'foo'");
    REQUIRE_FALSE(open_opts(ctx, "driver=null-co,bar=2", err));
    REQUIRE(err.message == "Block protocol 'null-co' doesn't support the option 'bar'");
    REQUIRE_FALSE(open_opts(ctx, "driver=nope", err));
    REQUIRE(err.message == "Unknown driver 'nope'");
    REQUIRE_FALSE(open_opts(ctx, "driver=null-co,size=1Q", err));
    REQUIRE(err.message == "Parameter 'size' expects a non-negative number below 2^64");
    REQUIRE_FALSE(open_opts(ctx, "driver=null-co,read-only=maybe", err));
    REQUIRE(err.message == "Parameter 'read-only' expects 'on' or 'off'");
}

TEST_CASE("json: filenames open the same graph as dotted options", "[open]")
{
    AioContext ctx;
    Error err;
    auto blk = open_opts(ctx, "", err,
                         R"(json:{"driver":"raw","file":{"driver":"null-co","size":"2M","read-zeroes":true}})");
    INFO(err.message);
    REQUIRE(blk);
    REQUIRE(blk->getlength() == 2 * 1048576);
    REQUIRE(blk->bs()->file()->bs->drv().name() == "null-co");
}

TEST_CASE("read-only nodes refuse writes", "[open]")
{
    AioContext ctx;
    Error err;
    // Asking to write a node that the options make read-only is an error...
    REQUIRE_FALSE(open_opts(ctx, "driver=null-co,read-only=on", err));
    REQUIRE(err.message == "Block node is read-only");
    // ...and a read-only open refuses writes.
    auto blk = open_opts(ctx, "driver=null-co,read-only=on", err, "", 0);
    REQUIRE(blk);
    REQUIRE(blk->is_read_only());
    uint8_t b[512] = {};
    REQUIRE(blk->pwrite(0, 512, b) == -EPERM);
}
