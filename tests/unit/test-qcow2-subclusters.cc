// qcow2 extended L2 entries (subclusters): which subclusters writes,
// write-zeroes and discards allocate or zero (the bitmaps are compared with
// what QEMU 7.2 writes for the same requests), what copy-on-write copies,
// block status per subcluster, and data integrity under random and
// concurrent I/O.  Interoperability with QEMU is tested by tests/interop.
#include <catch2/catch.hpp>

#include <algorithm>
#include <functional>
#include <random>

#include "block/block-backend.h"
#include "qcow2-test-util.h"
#include "qemu/bswap.h"
#include "qemu/units.h"

using namespace qemu;
using namespace qcow2_test;

namespace {

constexpr uint64_t kCluster = 64 * KiB;  // 2 KiB subclusters

struct Entry {
    uint64_t entry;
    uint64_t bitmap;
};

Entry l2_entry(const std::string& path, uint64_t guest_cluster)
{
    uint8_t buf[16];
    read_file(path, l2_entry_offset(path, guest_cluster, true), buf, 16);
    return {load_be64(buf), load_be64(buf + 8)};
}

// An extended-L2 image of `size` with 64 KiB clusters, open read-write.
struct ExtImage {
    AioContext ctx;
    TempImage img;
    Error err;
    std::unique_ptr<BlockBackend> blk;
    explicit ExtImage(const std::string& opts = "size=1M")
    {
        REQUIRE(create(ctx, img.path, opts + ",extended_l2=on", err) == 0);
        blk = open_rw(ctx, img.path, err, "discard=unmap");
        REQUIRE(blk);
    }
    // The entry as on disk (metadata written first).
    Entry entry(uint64_t guest_cluster)
    {
        REQUIRE(blk->flush() == 0);
        return l2_entry(img.path, guest_cluster);
    }
    void write(uint64_t off, uint64_t len, uint8_t byte, unsigned flags = 0)
    {
        std::vector<uint8_t> data(len, byte);
        REQUIRE(blk->pwrite(off, len, data.data(), flags) == 0);
    }
    bool reads(uint64_t off, uint64_t len, uint8_t byte)
    {
        std::vector<uint8_t> data(len);
        REQUIRE(blk->pread(off, len, data.data()) == 0);
        return std::all_of(data.begin(), data.end(), [&](uint8_t b) { return b == byte; });
    }
    int zero(uint64_t off, uint64_t len, unsigned flags = 0)
    {
        return run_sync(ctx, blk->co_pwrite_zeroes(off, len, flags));
    }
};

}  // namespace

TEST_CASE("qcow2 subclusters: a write allocates only the subclusters it touches", "[qcow2][subclusters]")
{
    ExtImage t;
    t.write(0, 1024, 0x11);            // half of subcluster 0
    t.write(5 * KiB, 4 * KiB, 0x22);   // the ends of subclusters 2 and 4, all of 3
    Entry e = t.entry(0);
    REQUIRE(e.entry == (0x8000000000000000ULL | 0x50000));
    REQUIRE(e.bitmap == 0x1d);  // subclusters 0, 2, 3, 4: as QEMU
    REQUIRE(t.reads(0, 1024, 0x11));
    REQUIRE(t.reads(1024, 4 * KiB, 0));  // the copied rest of 0, unallocated 1, head of 2
    REQUIRE(t.reads(5 * KiB, 4 * KiB, 0x22));
    REQUIRE(t.reads(9 * KiB, kCluster - 9 * KiB, 0));
    // Across a cluster boundary: the tail subcluster of one cluster and
    // the head one of the next.
    t.write(kCluster - 1024, 2048, 0x33);
    REQUIRE(t.entry(0).bitmap == (0x1d | (1ULL << 31)));
    REQUIRE(t.entry(1).bitmap == 1);
    REQUIRE(t.reads(kCluster - 1024, 2048, 0x33));
    REQUIRE(t.reads(kCluster + 1024, 1024, 0));
}

TEST_CASE("qcow2 subclusters: copy-on-write copies what the guest reads", "[qcow2][subclusters]")
{
    ExtImage t;
    // Subcluster 1 holds data, then is zeroed: its host bytes still hold
    // the data, but the guest reads zeroes there.
    t.write(2 * KiB, 2 * KiB, 0x44);
    t.write(0, 2 * KiB, 0x45);
    REQUIRE(t.zero(2 * KiB, 2 * KiB) == 0);
    REQUIRE(t.entry(0).bitmap == ((1ULL << 33) | 1));
    // A partial write into it copies zeroes around the data, not the old
    // host bytes; the cluster keeps its host cluster.
    t.write(3 * KiB, 512, 0x46);
    Entry e = t.entry(0);
    REQUIRE(e.entry == (0x8000000000000000ULL | 0x50000));
    REQUIRE(e.bitmap == 0x3);
    REQUIRE(t.reads(0, 2 * KiB, 0x45));
    REQUIRE(t.reads(2 * KiB, KiB, 0));
    REQUIRE(t.reads(3 * KiB, 512, 0x46));
    REQUIRE(t.reads(3 * KiB + 512, 512, 0));
}

TEST_CASE("qcow2 subclusters: a new host cluster keeps the old subclusters' state",
          "[qcow2][subclusters][compress]")
{
    ExtImage t;
    // A compressed cluster has no subclusters: a partial write copies it
    // whole, and every subcluster becomes allocated.
    std::vector<uint8_t> data(kCluster);
    for (size_t i = 0; i < data.size(); i++) {
        data[i] = uint8_t(i / 1000);
    }
    REQUIRE(t.blk->pwrite(0, kCluster, data.data(), BDRV_REQ_WRITE_COMPRESSED) == 0);
    Entry c = t.entry(0);
    REQUIRE((c.entry & (1ULL << 62)));
    REQUIRE(c.bitmap == 0);
    t.write(10 * KiB, 100, 0x47);
    REQUIRE(t.entry(0).bitmap == 0xffffffff);
    std::fill(data.begin() + 10 * KiB, data.begin() + 10 * KiB + 100, 0x47);
    std::vector<uint8_t> back(kCluster);
    REQUIRE(t.blk->pread(0, kCluster, back.data()) == 0);
    REQUIRE(back == data);

    // Zero subclusters of a cluster without a host cluster stay zero (now
    // with a host cluster) when another subcluster is written.
    REQUIRE(t.zero(kCluster, 4 * KiB) == 0);
    REQUIRE(t.entry(1).entry == 0);
    REQUIRE(t.entry(1).bitmap == (3ULL << 32));
    t.write(kCluster + 33 * KiB, KiB, 0x48);
    REQUIRE(t.entry(1).bitmap == ((3ULL << 32) | (1ULL << 16)));
    REQUIRE(t.reads(kCluster, 33 * KiB, 0));
    REQUIRE(t.reads(kCluster + 33 * KiB, KiB, 0x48));
}

TEST_CASE("qcow2 subclusters: write-zeroes and discard", "[qcow2][subclusters][zero]")
{
    ExtImage t;
    t.write(0, 3 * kCluster, 0x51);
    // Subclusters: zero bits, allocation bits cleared, host cluster kept.
    REQUIRE(t.zero(4 * KiB, 6 * KiB) == 0);
    REQUIRE(t.entry(0).bitmap == ((0x1cULL << 32) | 0xffffffe3));
    // Not aligned to subclusters: written as data.
    REQUIRE(t.zero(kCluster + 1024, 2 * KiB) == 0);
    REQUIRE(t.entry(1).bitmap == 0xffffffff);
    // Whole clusters: all zero; with unmap the host cluster goes.
    REQUIRE(t.zero(2 * kCluster, kCluster) == 0);
    REQUIRE(t.entry(2).entry == (0x8000000000000000ULL | 0x70000));
    REQUIRE(t.entry(2).bitmap == 0xffffffff00000000ULL);
    REQUIRE(t.zero(2 * kCluster, kCluster, BDRV_REQ_MAY_UNMAP) == 0);
    REQUIRE(t.entry(2).entry == 0);
    REQUIRE(t.entry(2).bitmap == 0xffffffff00000000ULL);
    // Discard: whole clusters only, which then read as zeroes.
    REQUIRE(run_sync(t.ctx, t.blk->co_pdiscard(0, kCluster)) == 0);
    REQUIRE(t.entry(0).entry == 0);
    REQUIRE(t.entry(0).bitmap == 0xffffffff00000000ULL);
    REQUIRE(t.reads(0, kCluster, 0));
    REQUIRE(t.reads(kCluster, 1024, 0x51));
    REQUIRE(t.reads(kCluster + 1024, 2 * KiB, 0));
    REQUIRE(t.reads(kCluster + 3 * KiB, kCluster - 3 * KiB, 0x51));
    REQUIRE(t.reads(2 * kCluster, kCluster, 0));
}

TEST_CASE("qcow2 subclusters: zeroing part of a compressed cluster writes zeroes",
          "[qcow2][subclusters][compress]")
{
    ExtImage t;
    std::vector<uint8_t> data(kCluster, 0x61);
    REQUIRE(t.blk->pwrite(0, kCluster, data.data(), BDRV_REQ_WRITE_COMPRESSED) == 0);
    REQUIRE(t.zero(4 * KiB, 4 * KiB) == 0);
    REQUIRE(t.entry(0).bitmap == 0xffffffff);  // copied whole, zeroes as data
    REQUIRE(t.reads(0, 4 * KiB, 0x61));
    REQUIRE(t.reads(4 * KiB, 4 * KiB, 0));
    REQUIRE(t.reads(8 * KiB, kCluster - 8 * KiB, 0x61));
}

TEST_CASE("qcow2 subclusters: block status per subcluster", "[qcow2][subclusters][status]")
{
    ExtImage t("size=1M,preallocation=metadata");
    BlockStatus st;
    // Preallocated: a host cluster, no subcluster allocated.
    REQUIRE(run_sync(t.ctx, bdrv_co_block_status(t.blk->bs(), true, 0, MiB, st)) == 0);
    REQUIRE(st.pnum == MiB);
    REQUIRE_FALSE((st.flags & (BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED)));
    REQUIRE((st.flags & BDRV_BLOCK_OFFSET_VALID));
    REQUIRE(st.map == 0x50000);
    t.write(2 * KiB, 100, 0x71);
    REQUIRE(run_sync(t.ctx, bdrv_co_block_status(t.blk->bs(), true, 0, MiB, st)) == 0);
    REQUIRE(st.pnum == 2 * KiB);
    REQUIRE(run_sync(t.ctx, bdrv_co_block_status(t.blk->bs(), true, 2 * KiB, MiB, st)) == 0);
    REQUIRE(st.pnum == 2 * KiB);
    REQUIRE((st.flags & BDRV_BLOCK_DATA));
    REQUIRE(st.map == 0x50000 + 2 * KiB);
    REQUIRE(t.zero(4 * KiB, 2 * KiB) == 0);
    REQUIRE(run_sync(t.ctx, bdrv_co_block_status(t.blk->bs(), true, 4 * KiB, MiB, st)) == 0);
    REQUIRE(st.pnum == 2 * KiB);
    REQUIRE((st.flags & BDRV_BLOCK_ZERO));
    REQUIRE((st.flags & BDRV_BLOCK_ALLOCATED));
}

TEST_CASE("qcow2 subclusters: contradicting bitmaps are refused", "[qcow2][subclusters][validation]")
{
    struct Case {
        uint64_t entry;
        uint64_t bitmap;
    };
    for (Case c : {Case{0x8000000000050000ULL, 0x0000000100000001ULL},   // allocated and zero
                   Case{0, 0x00000000000000f0ULL}}) {                   // unallocated with data
        AioContext ctx;
        TempImage img;
        Error err;
        REQUIRE(create(ctx, img.path, "size=1M,extended_l2=on", err) == 0);
        {
            auto blk = open_rw(ctx, img.path, err);
            std::vector<uint8_t> d(kCluster, 1);
            REQUIRE(blk->pwrite(0, kCluster, d.data()) == 0);
        }
        uint8_t buf[16];
        store_be64(buf, c.entry);
        store_be64(buf + 8, c.bitmap);
        patch_file(img.path, l2_entry_offset(img.path, 0, true), buf, 16);
        auto blk = open_rw(ctx, img.path, err, "", 0);
        REQUIRE(blk);
        std::vector<uint8_t> d(4096);
        REQUIRE(blk->pread(0, 4096, d.data()) == -EIO);
    }
}

TEST_CASE("qcow2 subclusters: random I/O matches a model across reopens", "[qcow2][subclusters][io]")
{
    for (const char* opts : {"size=8M,cluster_size=16k", "size=8M", "size=8M,cluster_size=2M",
                             "size=8M,cluster_size=32k,refcount_bits=1"}) {
        INFO(opts);
        AioContext ctx;
        TempImage img;
        Error err;
        REQUIRE(create(ctx, img.path, std::string(opts) + ",extended_l2=on", err) == 0);
        std::vector<uint8_t> model(8 * MiB, 0);
        std::mt19937 rng(11);
        for (int round = 0; round < 3; round++) {
            auto blk = open_rw(ctx, img.path, err, "discard=unmap");
            REQUIRE(blk);
            for (int i = 0; i < 150; i++) {
                uint64_t off = rng() % (8 * MiB - 1);
                uint64_t len = 1 + rng() % std::min<uint64_t>(100 * 1024, 8 * MiB - off);
                switch (rng() % 4) {
                case 0:
                case 1: {
                    auto data = pattern(len, rng());
                    REQUIRE(blk->pwrite(off, len, data.data()) == 0);
                    std::copy(data.begin(), data.end(), model.begin() + off);
                    break;
                }
                case 2: {
                    // Subcluster-aligned zeroes, sometimes unmapping.
                    off &= ~uint64_t(511);
                    len = std::min<uint64_t>((len + 511) & ~uint64_t(511), 8 * MiB - off);
                    unsigned flags = (rng() & 1) ? unsigned(BDRV_REQ_MAY_UNMAP) : 0u;
                    REQUIRE(run_sync(ctx, blk->co_pwrite_zeroes(off, len, flags)) == 0);
                    std::fill(model.begin() + off, model.begin() + off + len, 0);
                    break;
                }
                case 3: {
                    // Discards reach whole clusters only: model those.
                    uint64_t cs = blk->bs()->limits().pdiscard_alignment;
                    uint64_t start = (off + cs - 1) / cs * cs;
                    uint64_t end = (off + len) / cs * cs;
                    REQUIRE(run_sync(ctx, blk->co_pdiscard(off, len)) == 0);
                    if (start < end) {
                        std::fill(model.begin() + start, model.begin() + end, 0);
                    }
                    break;
                }
                }
            }
            std::vector<uint8_t> back(8 * MiB);
            REQUIRE(blk->pread(0, back.size(), back.data()) == 0);
            REQUIRE(back == model);
        }
        auto blk = open_rw(ctx, img.path, err);
        BdrvCheckResult res;
        REQUIRE(run_sync(ctx, blk->bs()->drv_check(res, 0)) == 0);
        REQUIRE(res.corruptions == 0);
        REQUIRE(res.leaks == 0);
    }
}

TEST_CASE("qcow2 subclusters: concurrent writes into shared clusters", "[qcow2][subclusters][concurrency]")
{
    AioContext ctx;
    TempImage img;
    Error err;
    REQUIRE(create(ctx, img.path, "size=4M,extended_l2=on", err) == 0);
    auto blk = open_rw(ctx, img.path, err);
    REQUIRE(blk);
    // 1 KiB writes in a shuffled order, 32 in flight: many share a
    // subcluster, all share clusters.
    write_shuffled_and_verify(ctx, *blk, 4 * MiB, 1024, 32, 5);
    REQUIRE(blk->flush() == 0);
    REQUIRE(l2_entry(img.path, 0).bitmap == 0xffffffff);
}

TEST_CASE("qcow2 subclusters: headers that cannot hold extended entries are refused",
          "[qcow2][subclusters][validation]")
{
    AioContext ctx;
    Error err;
    uint8_t bits[8];
    store_be64(bits, 1ULL << 4);  // extended L2 entries
    {
        // 8 KiB clusters: 256-byte subclusters (QEMU's limit is 512).
        TempImage img;
        REQUIRE(create(ctx, img.path, "size=1M,cluster_size=8k", err) == 0);
        patch_file(img.path, 72, bits, 8);
        REQUIRE_FALSE(open_rw(ctx, img.path, err));
        REQUIRE(err.message == "Unsupported subcluster size: 256");
    }
    {
        // 16-byte entries: an L2 table maps half as much, so one L1 entry
        // no longer covers 32 MiB of 16 KiB clusters.
        TempImage img;
        REQUIRE(create(ctx, img.path, "size=32M,cluster_size=16k", err) == 0);
        patch_file(img.path, 72, bits, 8);
        REQUIRE_FALSE(open_rw(ctx, img.path, err));
        REQUIRE(err.message == "L1 table is too small");
    }
}
