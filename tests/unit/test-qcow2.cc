// The qcow2 driver: data paths, allocation, persistence, metadata
// validation and protection.  Interoperability with QEMU is tested by
// tests/interop; these tests need nothing but our own code.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <random>

#include "block/block-backend.h"
#include "qcow2-test-util.h"
#include "qemu/bswap.h"
#include "qemu/units.h"

using namespace qemu;
using namespace qcow2_test;

TEST_CASE("qcow2: create refuses bad options with QEMU's messages", "[qcow2][create]")
{
    AioContext ctx;
    TempImage img;
    Error err;
    REQUIRE(create(ctx, img.path, "size=1M,cluster_size=1000", err) < 0);
    REQUIRE(err.message == "Cluster size must be a power of two between 512 and 2048k");
    REQUIRE(access(img.path.c_str(), F_OK) != 0);  // nothing left behind
    REQUIRE(create(ctx, img.path, "size=1M,compat=0.10,lazy_refcounts=on", err) < 0);
    REQUIRE(err.message.find("Lazy refcounts only supported") == 0);
    REQUIRE(create(ctx, img.path, "size=1M,refcount_bits=3", err) < 0);
    REQUIRE(err.message == "Refcount width must be a power of two and may not exceed 64 bits");
    REQUIRE(create(ctx, img.path, "size=1M,compat=0.10,refcount_bits=8", err) < 0);
    REQUIRE(create(ctx, img.path, "size=1M,compat=0.10,compression_type=zstd", err) < 0);
    REQUIRE(create(ctx, img.path, "size=1M,backing_fmt=raw", err) < 0);
    REQUIRE(err.message == "Backing format cannot be used without backing file");
    REQUIRE(access(img.path.c_str(), F_OK) != 0);
}

TEST_CASE("qcow2: data survives across clusters, COW and reopen", "[qcow2][io]")
{
    for (const char* opts : {"size=8M", "size=8M,cluster_size=512", "size=8M,cluster_size=4k,refcount_bits=1",
                             "size=8M,cluster_size=2M,refcount_bits=64", "size=8M,compat=0.10",
                             "size=8M,lazy_refcounts=on"}) {
        INFO(opts);
        AioContext ctx;
        TempImage img;
        Error err;
        REQUIRE(create(ctx, img.path, opts, err) == 0);
        std::vector<uint8_t> model(8 * MiB, 0);
        {
            auto blk = open_rw(ctx, img.path, err);
            INFO(err.message);
            REQUIRE(blk);
            std::mt19937 rng(42);
            for (int i = 0; i < 200; i++) {
                uint64_t off = rng() % (8 * MiB - 1);
                uint64_t len = 1 + rng() % std::min<uint64_t>(200 * 1024, 8 * MiB - off);
                auto data = pattern(len, uint32_t(i));
                REQUIRE(blk->pwrite(off, len, data.data()) == 0);
                std::copy(data.begin(), data.end(), model.begin() + off);
            }
            std::vector<uint8_t> back(8 * MiB);
            REQUIRE(blk->pread(0, back.size(), back.data()) == 0);
            REQUIRE(back == model);
        }
        auto blk = open_rw(ctx, img.path, err);
        REQUIRE(blk);
        std::vector<uint8_t> back(8 * MiB);
        REQUIRE(blk->pread(0, back.size(), back.data()) == 0);
        REQUIRE(back == model);
    }
}

TEST_CASE("qcow2: concurrent writes at queue depth 32 land exactly", "[qcow2][io][concurrency]")
{
    AioContext ctx;
    TempImage img;
    Error err;
    REQUIRE(create(ctx, img.path, "size=16M", err) == 0);
    auto blk = open_rw(ctx, img.path, err);
    REQUIRE(blk);
    // 4 KiB writes in a shuffled order, 32 in flight, several per cluster.
    write_shuffled_and_verify(ctx, *blk, 16 * MiB, 4096, 32, 7);
}

TEST_CASE("qcow2: write-zeroes and discard read back as zeroes and free clusters", "[qcow2][zero]")
{
    AioContext ctx;
    TempImage img;
    Error err;
    REQUIRE(create(ctx, img.path, "size=4M", err) == 0);
    auto blk = open_rw(ctx, img.path, err, "discard=unmap");
    REQUIRE(blk);
    auto data = pattern(4 * MiB, 3);
    REQUIRE(blk->pwrite(0, data.size(), data.data()) == 0);
    REQUIRE(run_sync(ctx, blk->co_pwrite_zeroes(64 * 1024, 100 * 1024, BDRV_REQ_MAY_UNMAP)) == 0);
    REQUIRE(run_sync(ctx, blk->co_pdiscard(1 * MiB, 1 * MiB)) == 0);
    REQUIRE(blk->flush() == 0);
    std::vector<uint8_t> back(4 * MiB);
    REQUIRE(blk->pread(0, back.size(), back.data()) == 0);
    for (size_t i = 0; i < back.size(); i++) {
        bool zero = (i >= 64 * 1024 && i < 164 * 1024) || (i >= MiB && i < 2 * MiB);
        if (back[i] != (zero ? 0 : data[i])) {
            FAIL("byte " << i);
        }
    }
    BlockStatus st;
    REQUIRE(run_sync(ctx, bdrv_co_block_status(blk->bs(), true, MiB, MiB, st)) == 0);
    REQUIRE((st.flags & BDRV_BLOCK_ZERO));
    REQUIRE_FALSE((st.flags & BDRV_BLOCK_DATA));
}

TEST_CASE("qcow2: compressed clusters round-trip", "[qcow2][compress]")
{
    for (const char* ct : {"zlib", "zstd"}) {
        INFO(ct);
        AioContext ctx;
        TempImage img;
        Error err;
        REQUIRE(create(ctx, img.path, std::string("size=1M,compression_type=") + ct, err) == 0);
        auto blk = open_rw(ctx, img.path, err);
        REQUIRE(blk);
        std::vector<uint8_t> data(65536);
        for (size_t i = 0; i < data.size(); i++) {
            data[i] = uint8_t(i / 100);  // compressible
        }
        auto noise = pattern(65536, 9);  // incompressible: stored plainly
        REQUIRE(blk->pwrite(0, 65536, data.data(), BDRV_REQ_WRITE_COMPRESSED) == 0);
        REQUIRE(blk->pwrite(65536, 65536, noise.data(), BDRV_REQ_WRITE_COMPRESSED) == 0);
        REQUIRE(blk->pwrite(131072, 65536, data.data(), BDRV_REQ_WRITE_COMPRESSED) == 0);
        // Overwriting part of a compressed cluster copies the rest.
        uint8_t b = 0xee;
        REQUIRE(blk->pwrite(131072 + 10, 1, &b) == 0);
        std::vector<uint8_t> back(65536);
        REQUIRE(blk->pread(0, 65536, back.data()) == 0);
        REQUIRE(back == data);
        REQUIRE(blk->pread(65536, 65536, back.data()) == 0);
        REQUIRE(back == noise);
        REQUIRE(blk->pread(131072, 65536, back.data()) == 0);
        data[10] = 0xee;
        REQUIRE(back == data);
    }
}

TEST_CASE("qcow2: resize grows the L1 table and keeps data", "[qcow2][resize]")
{
    AioContext ctx;
    TempImage img;
    Error err;
    REQUIRE(create(ctx, img.path, "size=1M,cluster_size=512", err) == 0);
    {
        auto blk = open_rw(ctx, img.path, err);
        REQUIRE(blk);
        auto data = pattern(1 * MiB, 5);
        REQUIRE(blk->pwrite(0, data.size(), data.data()) == 0);
        REQUIRE(run_sync(ctx, blk->co_truncate(64 * MiB, false, PreallocMode::Off, 0, err)) == 0);
        REQUIRE(blk->getlength() == 64 * MiB);
        // Enough writes with 512-byte clusters to grow the refcount table.
        auto more = pattern(20 * MiB, 6);
        REQUIRE(blk->pwrite(40 * MiB, more.size(), more.data()) == 0);
    }
    auto blk = open_rw(ctx, img.path, err);
    REQUIRE(blk);
    REQUIRE(blk->getlength() == 64 * MiB);
    std::vector<uint8_t> back(1 * MiB);
    REQUIRE(blk->pread(0, back.size(), back.data()) == 0);
    REQUIRE(back == pattern(1 * MiB, 5));
    std::vector<uint8_t> back2(20 * MiB);
    REQUIRE(blk->pread(40 * MiB, back2.size(), back2.data()) == 0);
    REQUIRE(back2 == pattern(20 * MiB, 6));
}

TEST_CASE("qcow2: hostile headers are refused with clear errors", "[qcow2][validation]")
{
    AioContext ctx;
    Error err;
    struct Case {
        uint64_t offset;
        std::vector<uint8_t> bytes;
        const char* message;
    };
    auto be32 = [](uint32_t v) {
        std::vector<uint8_t> b(4);
        store_be32(b.data(), v);
        return b;
    };
    auto be64 = [](uint64_t v) {
        std::vector<uint8_t> b(8);
        store_be64(b.data(), v);
        return b;
    };
    std::vector<Case> cases = {
        {4, be32(4), "Unsupported qcow2 version 4"},
        {20, be32(22), "Unsupported cluster size: 2^22"},
        {20, be32(8), "Unsupported cluster size: 2^8"},
        {36, be32(0x7fffffff), "Active L1 table too large"},
        {40, be64(12345), "Active L1 table offset invalid"},
        {56, be32(0x10000000), "Reference count table too large"},
        {96, be32(7), "Reference count entry width too large; may not exceed 64 bits"},
        {100, be32(0x20000), "qcow2 header exceeds cluster size"},
        {72, be64(1ULL << 20), "Unsupported qcow2 feature(s): Unknown incompatible feature: 100000"},
        {72, be64(1ULL << 2), "'data-file' is required for this image"},
        {24, be64(1ULL << 50), "L1 table is too small"},
        {0, be32(0x12345678), "Image is not in qcow2 format"},
    };
    for (const Case& c : cases) {
        TempImage img;
        REQUIRE(create(ctx, img.path, "size=1M", err) == 0);
        patch_file(img.path, c.offset, c.bytes.data(), c.bytes.size());
        INFO(c.message);
        REQUIRE_FALSE(open_rw(ctx, img.path, err));
        REQUIRE(err.message == c.message);
    }
}

TEST_CASE("qcow2: the feature table names unsupported features", "[qcow2][validation]")
{
    AioContext ctx;
    TempImage img;
    Error err;
    REQUIRE(create(ctx, img.path, "size=1M", err) == 0);
    // Set incompatible bit 6 and rename our table's entry for bit 4 to 6.
    uint8_t hdr[4096];
    read_file(img.path, 0, hdr, sizeof(hdr));
    store_be64(hdr + 72, 1ULL << 6);
    for (size_t pos = 112; pos + 8 < sizeof(hdr);) {
        uint32_t magic = load_be32(hdr + pos), len = load_be32(hdr + pos + 4);
        if (magic == 0x6803f857) {
            for (size_t e = pos + 8; e < pos + 8 + len; e += 48) {
                if (hdr[e] == 0 && hdr[e + 1] == 4) {
                    hdr[e + 1] = 6;
                    memset(hdr + e + 2, 0, 46);
                    memcpy(hdr + e + 2, "future feature", 14);
                }
            }
            break;
        }
        pos += 8 + ((len + 7) & ~7u);
    }
    patch_file(img.path, 0, hdr, sizeof(hdr));
    REQUIRE_FALSE(open_rw(ctx, img.path, err));
    REQUIRE(err.message == "Unsupported qcow2 feature(s): future feature");
}

TEST_CASE("qcow2: a feature table entry cut short still names its feature, as QEMU reads it",
          "[qcow2][validation]")
{
    AioContext ctx;
    TempImage img;
    Error err;
    REQUIRE(create(ctx, img.path, "size=1M", err) == 0);
    // The extension area becomes a 20-byte feature table: one entry, cut
    // after its name, naming incompatible bit 60, which is set.
    uint8_t hdr[4096];
    read_file(img.path, 0, hdr, sizeof(hdr));
    store_be64(hdr + 72, 1ULL << 60);
    uint8_t* ext = hdr + load_be32(hdr + 100);
    memset(ext, 0, 160);
    store_be32(ext, 0x6803f857);
    store_be32(ext + 4, 20);
    ext[8] = 0;  // incompatible
    ext[9] = 60;
    memcpy(ext + 10, "Test feature", 12);
    patch_file(img.path, 0, hdr, sizeof(hdr));
    REQUIRE_FALSE(open_rw(ctx, img.path, err));
    CHECK(err.message == "Unsupported qcow2 feature(s): Test feature");

    // A second table replaces the first; its first entry has an empty
    // name, which ends it (QEMU 7.2 prints the same for this image).
    store_be32(ext + 32, 0x6803f857);
    store_be32(ext + 36, 96);
    ext[40 + 48] = 0;
    ext[40 + 49] = 60;
    memcpy(ext + 40 + 50, "hidden", 6);
    patch_file(img.path, 0, hdr, sizeof(hdr));
    REQUIRE_FALSE(open_rw(ctx, img.path, err));
    CHECK(err.message == "Unsupported qcow2 feature(s): Unknown incompatible feature: 1000000000000000");
}

TEST_CASE("qcow2: a mapping onto metadata is caught before any write", "[qcow2][validation]")
{
    AioContext ctx;
    TempImage img;
    Error err;
    REQUIRE(create(ctx, img.path, "size=1M", err) == 0);
    uint64_t l2_offset;
    {
        auto blk = open_rw(ctx, img.path, err);
        REQUIRE(blk);
        std::vector<uint8_t> d(512, 1);
        REQUIRE(blk->pwrite(0, 512, d.data()) == 0);
    }
    uint8_t l1[8];
    read_file(img.path, 3 * 65536, l1, 8);  // the L1 table is at cluster 3
    l2_offset = load_be64(l1) & 0x00fffffffffffe00ULL;
    // Point guest cluster 0 at the refcount table (cluster 1), COPIED.
    uint8_t entry[8];
    store_be64(entry, 65536 | (1ULL << 63));
    patch_file(img.path, l2_offset, entry, 8);
    uint8_t table_before[512];
    read_file(img.path, 65536, table_before, 512);
    {
        auto blk = open_rw(ctx, img.path, err);
        REQUIRE(blk);
        std::vector<uint8_t> d(512, 2);
        REQUIRE(blk->pwrite(0, 512, d.data()) == -EIO);
    }
    uint8_t table_after[512];
    read_file(img.path, 65536, table_after, 512);
    REQUIRE(memcmp(table_before, table_after, 512) == 0);
    uint8_t hdr[8];
    read_file(img.path, 72, hdr, 8);
    REQUIRE((load_be64(hdr) & 2));  // marked corrupt
    REQUIRE_FALSE(open_rw(ctx, img.path, err));
    REQUIRE(err.message == "qcow2: Image is corrupt; cannot be opened read/write");
}

TEST_CASE("qcow2: preallocation modes map every cluster", "[qcow2][prealloc]")
{
    for (const char* mode : {"metadata", "falloc", "full"}) {
        INFO(mode);
        AioContext ctx;
        TempImage img;
        Error err;
        REQUIRE(create(ctx, img.path, std::string("size=2M,preallocation=") + mode, err) == 0);
        auto blk = open_rw(ctx, img.path, err);
        REQUIRE(blk);
        BlockStatus st;
        REQUIRE(run_sync(ctx, bdrv_co_block_status(blk->bs(), true, 0, 2 * MiB, st)) == 0);
        REQUIRE((st.flags & BDRV_BLOCK_OFFSET_VALID));
        REQUIRE(st.pnum == 2 * MiB);
        std::vector<uint8_t> back(2 * MiB, 1);
        REQUIRE(blk->pread(0, back.size(), back.data()) == 0);
        REQUIRE(std::all_of(back.begin(), back.end(), [](uint8_t v) { return v == 0; }));
    }
}

TEST_CASE("qcow2: create rounds the virtual size up to whole sectors, as QEMU", "[qcow2]")
{
    qcow2_test::CreatedImage img("size=1234");
    AioContext ctx;
    auto blk = img.open(ctx);
    CHECK(blk->getlength() == 1536);
}
