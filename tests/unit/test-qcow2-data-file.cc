// qcow2 external data files: guest data at its guest offset in the data
// file and nothing but metadata in the image, the data child from options
// or from the image's header, QEMU's open and create errors, raw data files
// staying valid raw images, resizing, and what data files refuse.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <random>

#include "block/block-backend.h"
#include "qcow2-test-util.h"
#include "qemu/bswap.h"
#include "qemu/units.h"

using namespace qemu;
using namespace qcow2_test;

namespace {

uint64_t file_size(const std::string& path)
{
    struct stat st;
    REQUIRE(stat(path.c_str(), &st) == 0);
    return uint64_t(st.st_size);
}

std::vector<uint8_t> file_bytes(const std::string& path, uint64_t offset, size_t len)
{
    std::vector<uint8_t> v(len);
    read_file(path, offset, v.data(), len);
    return v;
}

// An image with a data file at path + ".data".
struct DataFileImage {
    AioContext ctx;
    TempImage img{{".data"}};
    std::string data = img.path + ".data";
    Error err;
    explicit DataFileImage(const std::string& opts = "size=1M")
    {
        REQUIRE(create(ctx, img.path, opts + ",data_file=" + data, err) == 0);
    }
};

}  // namespace

TEST_CASE("qcow2 data file: guest data sits at its guest offset", "[qcow2][data-file]")
{
    DataFileImage t;
    REQUIRE(file_size(t.data) == MiB);  // the data file has the disk's size
    auto a = pattern(4096, 1), b = pattern(70000, 2);
    {
        auto blk = open_rw(t.ctx, t.img.path, t.err);  // the name from the header
        REQUIRE(blk);
        REQUIRE(blk->pwrite(0, a.size(), a.data()) == 0);
        REQUIRE(blk->pwrite(300000, b.size(), b.data()) == 0);
    }
    REQUIRE(file_bytes(t.data, 0, a.size()) == a);
    REQUIRE(file_bytes(t.data, 300000, b.size()) == b);
    // The rest of each written cluster was filled with zeroes.
    REQUIRE(file_bytes(t.data, 4096, 61440) == std::vector<uint8_t>(61440, 0));
    // Header, refcount table and block, L1 and L2 table: no data.
    REQUIRE(file_size(t.img.path) == 5 * 64 * KiB);
    // Mapped 1:1, cluster 0 at offset 0 with COPIED set.
    uint8_t e[8];
    read_file(t.img.path, l2_entry_offset(t.img.path, 0, false), e, 8);
    REQUIRE(load_be64(e) == 0x8000000000000000ULL);
    read_file(t.img.path, l2_entry_offset(t.img.path, 4, false), e, 8);
    REQUIRE(load_be64(e) == (0x8000000000000000ULL | 0x40000));

    auto blk = open_rw(t.ctx, t.img.path, t.err);
    std::vector<uint8_t> back(b.size());
    REQUIRE(blk->pread(300000, back.size(), back.data()) == 0);
    REQUIRE(back == b);
    BlockStatus st;
    REQUIRE(run_sync(t.ctx, bdrv_co_block_status(blk->bs(), true, 300000, 10, st)) == 0);
    REQUIRE((st.flags & BDRV_BLOCK_OFFSET_VALID));
    REQUIRE(st.map == 300000);
    REQUIRE(st.file == blk->bs()->child("data-file")->bs.get());
    BdrvCheckResult res;
    REQUIRE(run_sync(t.ctx, blk->bs()->drv_check(res, 0)) == 0);
    REQUIRE(res.corruptions == 0);
    REQUIRE(res.leaks == 0);
}

TEST_CASE("qcow2 data file: random I/O with subclusters matches a model", "[qcow2][data-file][io]")
{
    for (const char* opts : {"size=4M,cluster_size=4k", "size=4M,extended_l2=on"}) {
        INFO(opts);
        DataFileImage t(opts);
        auto blk = open_rw(t.ctx, t.img.path, t.err, "discard=unmap");
        REQUIRE(blk);
        std::vector<uint8_t> model(4 * MiB, 0);
        std::mt19937 rng(3);
        for (int i = 0; i < 200; i++) {
            uint64_t off = rng() % (4 * MiB - 1);
            uint64_t len = 1 + rng() % std::min<uint64_t>(100 * 1024, 4 * MiB - off);
            if (rng() % 3) {
                auto data = pattern(len, rng());
                REQUIRE(blk->pwrite(off, len, data.data()) == 0);
                std::copy(data.begin(), data.end(), model.begin() + off);
            } else {
                unsigned flags = (rng() & 1) ? unsigned(BDRV_REQ_MAY_UNMAP) : 0u;
                REQUIRE(run_sync(t.ctx, blk->co_pwrite_zeroes(off, len, flags)) == 0);
                std::fill(model.begin() + off, model.begin() + off + len, 0);
            }
        }
        std::vector<uint8_t> back(4 * MiB);
        REQUIRE(blk->pread(0, back.size(), back.data()) == 0);
        REQUIRE(back == model);
        BdrvCheckResult res;
        REQUIRE(run_sync(t.ctx, blk->bs()->drv_check(res, 0)) == 0);
        REQUIRE(res.corruptions == 0);
        REQUIRE(res.leaks == 0);
    }
}

TEST_CASE("qcow2 data file: a raw data file stays the disk's raw image", "[qcow2][data-file][raw]")
{
    // Without pass-discard-request too (QEMU 7.2 leaves stale data in the
    // data file there).
    for (const char* open_opts : {"discard=unmap", "discard=unmap,pass-discard-request=off"}) {
        INFO(open_opts);
        DataFileImage t("size=1M,data_file_raw=on");
        auto blk = open_rw(t.ctx, t.img.path, t.err, open_opts);
        REQUIRE(blk);
        std::vector<uint8_t> model = pattern(MiB, 9);
        REQUIRE(blk->pwrite(0, MiB, model.data()) == 0);
        REQUIRE(run_sync(t.ctx, blk->co_pwrite_zeroes(64 * KiB, 64 * KiB, 0)) == 0);
        REQUIRE(run_sync(t.ctx, blk->co_pwrite_zeroes(192 * KiB, 64 * KiB, BDRV_REQ_MAY_UNMAP)) == 0);
        REQUIRE(run_sync(t.ctx, blk->co_pdiscard(320 * KiB, 128 * KiB)) == 0);
        std::fill(model.begin() + 64 * KiB, model.begin() + 128 * KiB, 0);
        std::fill(model.begin() + 192 * KiB, model.begin() + 256 * KiB, 0);
        std::fill(model.begin() + 320 * KiB, model.begin() + 448 * KiB, 0);
        auto extra = pattern(1000, 10);
        REQUIRE(blk->pwrite(330 * KiB, extra.size(), extra.data()) == 0);
        std::copy(extra.begin(), extra.end(), model.begin() + 330 * KiB);
        REQUIRE(blk->flush() == 0);
        std::vector<uint8_t> back(MiB);
        REQUIRE(blk->pread(0, MiB, back.data()) == 0);
        REQUIRE(back == model);
        REQUIRE(file_bytes(t.data, 0, MiB) == model);
        // Growing maps the new clusters 1:1 as well.
        REQUIRE(run_sync(t.ctx, blk->co_truncate(2 * MiB, false, PreallocMode::Off, 0, t.err)) == 0);
        REQUIRE(file_size(t.data) == 2 * MiB);
        BlockStatus st;
        REQUIRE(run_sync(t.ctx, bdrv_co_block_status(blk->bs(), true, MiB, MiB, st)) == 0);
        REQUIRE(st.pnum == MiB);
        REQUIRE((st.flags & BDRV_BLOCK_OFFSET_VALID));
        REQUIRE(st.map == MiB);
        blk.reset();
        uint8_t autoclear[8];
        read_file(t.img.path, 88, autoclear, 8);
        REQUIRE(load_be64(autoclear) == 2);  // still raw
    }
}

TEST_CASE("qcow2 data file: resizing resizes the data file", "[qcow2][data-file][resize]")
{
    DataFileImage t;
    auto blk = open_rw(t.ctx, t.img.path, t.err);
    auto data = pattern(MiB, 4);
    REQUIRE(blk->pwrite(0, MiB, data.data()) == 0);
    REQUIRE(run_sync(t.ctx, blk->co_truncate(3 * MiB, false, PreallocMode::Off, 0, t.err)) == 0);
    REQUIRE(file_size(t.data) == 3 * MiB);
    REQUIRE(run_sync(t.ctx, blk->co_truncate(512 * KiB, false, PreallocMode::Off, 0, t.err)) == 0);
    REQUIRE(file_size(t.data) == 512 * KiB);
    REQUIRE(run_sync(t.ctx, blk->co_truncate(MiB, false, PreallocMode::Falloc, 0, t.err)) == 0);
    REQUIRE(file_size(t.data) == MiB);
    std::vector<uint8_t> back(MiB);
    REQUIRE(blk->pread(0, MiB, back.data()) == 0);
    REQUIRE(std::equal(back.begin(), back.begin() + 512 * KiB, data.begin()));
    REQUIRE(std::all_of(back.begin() + 512 * KiB, back.end(), [](uint8_t b) { return b == 0; }));
}

TEST_CASE("qcow2 data file: no compressed clusters", "[qcow2][data-file][compress]")
{
    DataFileImage t;
    auto blk = open_rw(t.ctx, t.img.path, t.err);
    std::vector<uint8_t> data(64 * KiB, 1);
    REQUIRE(blk->pwrite(0, data.size(), data.data(), BDRV_REQ_WRITE_COMPRESSED) == -ENOTSUP);
}

TEST_CASE("qcow2 data file: create and open errors are QEMU's", "[qcow2][data-file][validation]")
{
    AioContext ctx;
    Error err;
    {
        TempImage img{{".data"}};
        REQUIRE(create(ctx, img.path, "size=1M,compat=0.10,data_file=" + img.path + ".data", err) < 0);
        REQUIRE(err.message == "External data files are only supported with compatibility level "
                               "1.1 and above (use version=v3 or greater)");
        REQUIRE(access((img.path + ".data").c_str(), F_OK) != 0);
        REQUIRE(create(ctx, img.path, "size=1M,data_file_raw=on", err) < 0);
        REQUIRE(err.message == "data-file-raw requires data-file");
        REQUIRE(create(ctx, img.path, "size=1M,data_file=" + img.path + ".data,zone.mode=host-managed,zone.size=1M", err) < 0);
        REQUIRE(err.message == "Zoned images cannot have an external data file");
        REQUIRE(access(img.path.c_str(), F_OK) != 0);
    }
    {
        DataFileImage t;
        REQUIRE(rename(t.data.c_str(), (t.data + "x").c_str()) == 0);
        REQUIRE_FALSE(open_rw(ctx, t.img.path, err));
        REQUIRE(err.message == "Could not open '" + t.data + "': No such file or directory");
        // qemu-img info's open (no I/O) does not need the data file...
        auto blk = open_rw(ctx, t.img.path, err, "", BDRV_O_NO_IO);
        REQUIRE(blk);
        // ...and cannot read guest data.
        std::vector<uint8_t> d(512);
        REQUIRE(blk->pread(0, 512, d.data()) < 0);
        blk.reset();
        // Named by options, it opens from there.
        blk = open_rw(ctx, t.img.path, err, "data-file.filename=" + t.data + "x");
        REQUIRE(blk);
        blk.reset();
        REQUIRE(rename((t.data + "x").c_str(), t.data.c_str()) == 0);
    }
    {
        TempImage img{{".other"}};
        REQUIRE(create(ctx, img.path, "size=1M", err) == 0);
        REQUIRE(create(ctx, img.path + ".other", "size=1M", err) == 0);
        REQUIRE_FALSE(open_rw(ctx, img.path, err, "data-file.filename=" + img.path + ".other"));
        REQUIRE(err.message == "'data-file' can only be set for images with an external data file");
        uint8_t bits[8];
        store_be64(bits, 4);  // the data file bit, but no name
        patch_file(img.path, 72, bits, 8);
        REQUIRE_FALSE(open_rw(ctx, img.path, err));
        REQUIRE(err.message == "'data-file' is required for this image");
        store_be64(bits, 0);
        patch_file(img.path, 72, bits, 8);
        store_be64(bits, 2);  // raw, but no data file
        patch_file(img.path, 88, bits, 8);
        REQUIRE_FALSE(open_rw(ctx, img.path, err));
        REQUIRE(err.message == "data-file-raw requires a data file");
    }
}
