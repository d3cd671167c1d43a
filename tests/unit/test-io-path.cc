// The generic request path (block/io.cc): alignment, read-modify-write,
// splitting, serialisation, emulated FUA and write-zeroes, flush skipping.
#include <catch2/catch.hpp>

#include "block/block-backend.h"
#include "mem-driver.h"

using namespace qemu;
using qemu::test::MemState;

namespace {

struct MemDisk {
    AioContext ctx;
    std::unique_ptr<BlockBackend> blk;
    MemState* mem = nullptr;

    explicit MemDisk(const std::string& opts)
    {
        test::mem_driver();
        QDict o;
        Error err;
        REQUIRE(keyval_parse(o, "driver=test-mem," + opts, nullptr, err));
        blk = BlockBackend::open(std::nullopt, o, BDRV_O_RDWR, ctx, err);
        INFO(err.message);
        REQUIRE(blk);
        mem = static_cast<MemState*>(blk->bs());
    }
};

std::vector<uint8_t> pattern(size_t n, uint8_t seed)
{
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; i++) {
        v[i] = uint8_t(seed + i * 7);
    }
    return v;
}

}  // namespace

TEST_CASE("unaligned reads are padded to the driver's alignment", "[io]")
{
    MemDisk d("size=64k,align=512");
    auto p = pattern(65536, 3);
    d.mem->data = p;
    std::vector<uint8_t> buf(100);
    REQUIRE(d.blk->pread(1000, 100, buf.data()) == 0);
    REQUIRE(std::equal(buf.begin(), buf.end(), p.begin() + 1000));
    REQUIRE(d.mem->log.size() == 1);
    CHECK(d.mem->log[0].kind == 'r');
    CHECK(d.mem->log[0].offset == 512);
    CHECK(d.mem->log[0].bytes == 1024);
}

TEST_CASE("unaligned writes read-modify-write only the partial blocks", "[io]")
{
    MemDisk d("size=64k,align=512");
    auto p = pattern(65536, 9);
    d.mem->data = p;
    std::vector<uint8_t> w(3000, 0xee);
    REQUIRE(d.blk->pwrite(100, w.size(), w.data()) == 0);
    // Head block [0,512) and tail block [3072,3584) are read, then one write.
    REQUIRE(d.mem->log.size() == 3);
    CHECK(d.mem->log[0].kind == 'r');
    CHECK(d.mem->log[0].offset == 0);
    CHECK(d.mem->log[1].kind == 'r');
    CHECK(d.mem->log[1].offset == 3072);
    CHECK(d.mem->log[2].kind == 'w');
    CHECK(d.mem->log[2].offset == 0);
    CHECK(d.mem->log[2].bytes == 3584);
    for (size_t i = 0; i < 65536; i++) {
        uint8_t want = (i >= 100 && i < 3100) ? 0xee : p[i];
        if (d.mem->data[i] != want) {
            FAIL("byte " << i << " is " << int(d.mem->data[i]) << ", want " << int(want));
        }
    }
}

TEST_CASE("a write inside one block reads that block once", "[io]")
{
    MemDisk d("size=4k,align=512");
    uint8_t b = 0x42;
    REQUIRE(d.blk->pwrite(700, 1, &b) == 0);
    REQUIRE(d.mem->log.size() == 2);
    CHECK(d.mem->log[0].kind == 'r');
    CHECK(d.mem->log[0].offset == 512);
    CHECK(d.mem->log[1].kind == 'w');
    CHECK(d.mem->log[1].bytes == 512);
    CHECK(d.mem->data[700] == 0x42);
    CHECK(d.mem->data[699] == 0);
}

TEST_CASE("requests larger than max_transfer are split", "[io]")
{
    MemDisk d("size=1M,max-transfer=64k");
    std::vector<uint8_t> w(1 << 20, 1);
    REQUIRE(d.blk->pwrite(0, w.size(), w.data()) == 0);
    REQUIRE(d.mem->log.size() == 16);
    for (const auto& r : d.mem->log) {
        CHECK(r.bytes == 65536);
    }
}

TEST_CASE("overlapping unaligned writes do not lose each other's bytes", "[io]")
{
    MemDisk d("size=4k,align=512");
    d.mem->yield_in_io = true;
    int done = 0;
    for (int i = 0; i < 8; i++) {
        co_spawn([](BlockBackend& blk, int idx, int& n) -> Task<void> {
            uint8_t byte = uint8_t(0x10 + idx);
            IOVector qiov(&byte, 1);
            auto ret = co_await blk.co_pwritev(10 + idx * 3, 1, qiov);
            REQUIRE(ret == 0);
            n++;
        }(*d.blk, i, done));
    }
    while (done < 8) {
        d.ctx.poll(true);
    }
    for (int i = 0; i < 8; i++) {
        CHECK(d.mem->data[10 + i * 3] == 0x10 + i);
    }
}

TEST_CASE("aligned requests to different ranges run concurrently", "[io]")
{
    MemDisk d("size=1M,align=512");
    d.mem->yield_in_io = true;
    int done = 0;
    std::vector<uint8_t> buf(4096 * 16, 5);
    for (int i = 0; i < 16; i++) {
        co_spawn([](BlockBackend& blk, uint8_t* b, int idx, int& n) -> Task<void> {
            IOVector qiov(b + idx * 4096, 4096);
            auto ret = co_await blk.co_pwritev(uint64_t(idx) * 4096, 4096, qiov);
            REQUIRE(ret == 0);
            n++;
        }(*d.blk, buf.data(), i, done));
    }
    while (done < 16) {
        d.ctx.poll(true);
    }
    REQUIRE(d.mem->max_in_flight == 16);
}

TEST_CASE("write-zeroes falls back to writing zeroes unless NO_FALLBACK", "[io]")
{
    MemDisk d("size=64k,align=512");
    d.mem->data.assign(65536, 0xff);
    REQUIRE(run_sync(d.ctx, d.blk->co_pwrite_zeroes(1000, 5000)) == 0);
    for (size_t i = 0; i < 65536; i++) {
        uint8_t want = (i >= 1000 && i < 6000) ? 0 : 0xff;
        if (d.mem->data[i] != want) {
            FAIL("byte " << i);
        }
    }
    REQUIRE(run_sync(d.ctx, d.blk->co_pwrite_zeroes(8192, 4096, BDRV_REQ_NO_FALLBACK)) == -ENOTSUP);
}

TEST_CASE("write-zeroes uses the driver when it can", "[io]")
{
    MemDisk d("size=64k,write-zeroes=on");
    REQUIRE(run_sync(d.ctx, d.blk->co_pwrite_zeroes(4096, 8192)) == 0);
    REQUIRE(d.mem->log.size() == 1);
    CHECK(d.mem->log[0].kind == 'z');
}

TEST_CASE("FUA is passed down or emulated with a flush", "[io]")
{
    uint8_t b[512] = {};
    {
        MemDisk d("size=64k,fua=on");
        REQUIRE(d.blk->pwrite(0, 512, b, BDRV_REQ_FUA) == 0);
        REQUIRE(d.mem->log.size() == 1);
        CHECK(d.mem->log[0].flags == BDRV_REQ_FUA);
    }
    {
        MemDisk d("size=64k,fua=off");
        REQUIRE(d.blk->pwrite(0, 512, b, BDRV_REQ_FUA) == 0);
        REQUIRE(d.mem->log.size() == 2);
        CHECK(d.mem->log[0].flags == 0);
        CHECK(d.mem->log[1].kind == 'f');
    }
}

TEST_CASE("flush is skipped when nothing was written since the last one", "[io]")
{
    MemDisk d("size=64k");
    uint8_t b[512] = {};
    REQUIRE(d.blk->flush() == 0);  // nothing written yet
    REQUIRE(d.blk->pwrite(0, 512, b) == 0);
    REQUIRE(d.blk->flush() == 0);
    REQUIRE(d.blk->flush() == 0);
    size_t flushes = 0;
    for (const auto& r : d.mem->log) {
        flushes += r.kind == 'f';
    }
    REQUIRE(flushes == 1);
}

TEST_CASE("the backend refuses requests beyond the device", "[io]")
{
    MemDisk d("size=64k");
    uint8_t b[16];
    REQUIRE(d.blk->pread(65536 - 8, 16, b) == -EIO);
    REQUIRE(d.blk->pread(UINT64_MAX - 4, 8, b) == -EIO);
    REQUIRE(d.blk->pread(65536 - 16, 16, b) == 0);
}

TEST_CASE("discard is dropped unless discard=unmap", "[io]")
{
    {
        MemDisk d("size=64k");
        REQUIRE(run_sync(d.ctx, d.blk->co_pdiscard(0, 4096)) == 0);
        REQUIRE(d.mem->log.empty());
    }
    {
        MemDisk d("size=64k,discard=unmap,align=4096");
        REQUIRE(run_sync(d.ctx, d.blk->co_pdiscard(100, 10000)) == 0);
        REQUIRE(d.mem->log.size() == 1);
        CHECK(d.mem->log[0].offset == 4096);
        CHECK(d.mem->log[0].bytes == 4096);  // only whole aligned blocks
    }
}
