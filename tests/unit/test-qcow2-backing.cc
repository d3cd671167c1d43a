// qcow2 backing chains: reads that fall through to the backing file,
// copy-on-write from it, zero clusters that hide it, the backing child's
// options, names and errors, the chain's block status, and the header
// operations qemu-img rebase and commit build on.
#include <catch2/catch.hpp>

#include <unistd.h>

#include "block/block-backend.h"
#include "qcow2-test-util.h"
#include "qemu/units.h"

using namespace qemu;
using namespace qcow2_test;

namespace {

// A base image holding `data` from offset 0, and an overlay on it.
struct Chain {
    AioContext ctx;
    TempImage base;
    TempImage top;
    std::vector<uint8_t> data;

    Chain(const std::string& base_opts, const std::string& top_opts, size_t data_len,
          const std::string& backing_fmt = "qcow2")
        : data(pattern(data_len, 17))
    {
        Error err;
        REQUIRE(create(ctx, base.path, base_opts, err) == 0);
        {
            auto blk = open_rw(ctx, base.path, err);
            REQUIRE(blk);
            REQUIRE(blk->pwrite(0, data.size(), data.data()) == 0);
        }
        std::string opts = top_opts + ",backing_file=" + base.path + ",backing_fmt=" + backing_fmt;
        INFO(err.message);
        REQUIRE(create(ctx, top.path, opts, err) == 0);
    }

    std::unique_ptr<BlockBackend> open_top(Error& err, const std::string& extra = "",
                                           int flags = BDRV_O_RDWR)
    {
        return open_rw(ctx, top.path, err, extra, flags);
    }
};

std::vector<uint8_t> read_all(BlockBackend& blk, uint64_t offset, uint64_t len)
{
    std::vector<uint8_t> buf(len);
    REQUIRE(blk.pread(offset, len, buf.data()) == 0);
    return buf;
}

bool all_zero(const std::vector<uint8_t>& v)
{
    return std::all_of(v.begin(), v.end(), [](uint8_t b) { return b == 0; });
}

}  // namespace

TEST_CASE("qcow2 backing: unallocated clusters read from the backing file", "[qcow2][backing]")
{
    // The overlay is larger than its backing file: past the end of the
    // backing file it reads zeroes.
    Chain chain("size=1M", "size=2M,cluster_size=4k", 1 * MiB);
    Error err;
    auto blk = chain.open_top(err);
    INFO(err.message);
    REQUIRE(blk);
    REQUIRE(blk->bs()->backing());
    REQUIRE(blk->bs()->backing()->bs->read_only());
    REQUIRE(read_all(*blk, 0, 1 * MiB) == chain.data);
    REQUIRE(all_zero(read_all(*blk, 1 * MiB, 1 * MiB)));
    // A request across the end of the backing file.
    auto across = read_all(*blk, 1 * MiB - 100, 200);
    REQUIRE(std::equal(across.begin(), across.begin() + 100, chain.data.end() - 100));
    REQUIRE(std::all_of(across.begin() + 100, across.end(), [](uint8_t b) { return b == 0; }));
}

TEST_CASE("qcow2 backing: partial writes copy the rest of the cluster from the backing file",
          "[qcow2][backing][cow]")
{
    for (const char* top_opts : {"size=1M", "size=1M,cluster_size=512", "size=1M,compat=0.10"}) {
        INFO(top_opts);
        Chain chain("size=1M", top_opts, 1 * MiB);
        std::vector<uint8_t> model = chain.data;
        Error err;
        {
            auto blk = chain.open_top(err);
            REQUIRE(blk);
            auto a = pattern(1000, 1);
            auto b = pattern(70000, 2);
            REQUIRE(blk->pwrite(100, a.size(), a.data()) == 0);
            REQUIRE(blk->pwrite(200000, b.size(), b.data()) == 0);
            std::copy(a.begin(), a.end(), model.begin() + 100);
            std::copy(b.begin(), b.end(), model.begin() + 200000);
            REQUIRE(read_all(*blk, 0, 1 * MiB) == model);
        }
        // The copies are in the overlay itself: opened without its backing
        // file, the written clusters still hold the backing file's bytes
        // around the new data, and the rest reads as zeroes.
        QDict no_backing;
        no_backing.set("driver", "qcow2");
        REQUIRE(json_parse_flat(no_backing, R"({"backing": null})", err));
        auto bare = BlockBackend::open(chain.top.path, no_backing, 0, chain.ctx, err);
        REQUIRE(bare);
        REQUIRE_FALSE(bare->bs()->backing());
        BlockDriverInfo bdi;
        REQUIRE(bare->bs()->drv_get_info(bdi) == 0);
        uint64_t cs = bdi.cluster_size;
        auto first = read_all(*bare, 0, cs);
        REQUIRE(std::equal(first.begin(), first.end(), model.begin()));
        uint64_t from = 200000 / cs * cs;
        uint64_t to = (200000 + 70000 + cs - 1) / cs * cs;
        auto written = read_all(*bare, from, to - from);
        REQUIRE(std::equal(written.begin(), written.end(), model.begin() + from));
        REQUIRE(all_zero(read_all(*bare, to, 1 * MiB - to)));
    }
}

TEST_CASE("qcow2 backing: zero clusters and discards hide the backing file", "[qcow2][backing]")
{
    Chain chain("size=1M", "size=1M", 1 * MiB);
    Error err;
    auto blk = chain.open_top(err, "discard=unmap");
    REQUIRE(blk);
    REQUIRE(run_sync(chain.ctx, blk->co_pwrite_zeroes(0, 128 * KiB, BDRV_REQ_MAY_UNMAP)) == 0);
    REQUIRE(run_sync(chain.ctx, blk->co_pdiscard(512 * KiB, 128 * KiB)) == 0);
    REQUIRE(all_zero(read_all(*blk, 0, 128 * KiB)));
    REQUIRE(all_zero(read_all(*blk, 512 * KiB, 128 * KiB)));
    auto rest = read_all(*blk, 128 * KiB, 384 * KiB);
    REQUIRE(std::equal(rest.begin(), rest.end(), chain.data.begin() + 128 * KiB));
    BlockStatus st;
    REQUIRE(run_sync(chain.ctx, bdrv_co_block_status(blk->bs(), true, 0, 128 * KiB, st)) == 0);
    REQUIRE((st.flags & (BDRV_BLOCK_ZERO | BDRV_BLOCK_ALLOCATED)) ==
            (BDRV_BLOCK_ZERO | BDRV_BLOCK_ALLOCATED));
}

TEST_CASE("qcow2 backing: block status of the chain", "[qcow2][backing][status]")
{
    Chain chain("size=1M", "size=2M", 256 * KiB);
    Error err;
    auto blk = chain.open_top(err);
    REQUIRE(blk);
    auto d = pattern(64 * KiB, 4);
    REQUIRE(blk->pwrite(64 * KiB, d.size(), d.data()) == 0);
    BlockDriverState* top = blk->bs();
    BlockStatus st;
    unsigned depth = 9;

    // Unallocated in the overlay, data in its backing file.
    REQUIRE(run_sync(chain.ctx, bdrv_co_block_status_layer(top, 0, 2 * MiB, st)) == 0);
    REQUIRE(st.flags == 0);
    REQUIRE(st.pnum == 64 * KiB);
    REQUIRE(run_sync(chain.ctx, bdrv_co_block_status_above(top, nullptr, true, 0, 2 * MiB, st,
                                                           &depth)) == 0);
    REQUIRE((st.flags & BDRV_BLOCK_DATA));
    REQUIRE((st.flags & BDRV_BLOCK_ALLOCATED));
    REQUIRE(depth == 1);
    REQUIRE(st.file == bdrv_protocol_node(top->backing()->bs.get()));

    // The overlay's own data.
    REQUIRE(run_sync(chain.ctx, bdrv_co_block_status_above(top, nullptr, true, 64 * KiB, 2 * MiB,
                                                           st, &depth)) == 0);
    REQUIRE((st.flags & BDRV_BLOCK_DATA));
    REQUIRE(depth == 0);
    REQUIRE(st.pnum == 64 * KiB);

    // Past the end of the backing file: zeroes in the overlay itself (not
    // allocated there) for one layer, allocated zeroes of the backing file
    // for the chain.
    REQUIRE(run_sync(chain.ctx, bdrv_co_block_status_layer(top, 1 * MiB, 1 * MiB, st)) == 0);
    REQUIRE(st.flags == (BDRV_BLOCK_ZERO | BDRV_BLOCK_EOF));
    REQUIRE(run_sync(chain.ctx, bdrv_co_block_status_above(top, nullptr, false, 1 * MiB, 1 * MiB,
                                                           st, &depth)) == 0);
    REQUIRE((st.flags & (BDRV_BLOCK_ZERO | BDRV_BLOCK_ALLOCATED)) ==
            (BDRV_BLOCK_ZERO | BDRV_BLOCK_ALLOCATED));
    REQUIRE(depth == 1);

    // Allocation above a base.
    uint64_t pnum = 0;
    BlockDriverState* base = top->backing()->bs.get();
    REQUIRE(run_sync(chain.ctx, bdrv_co_is_allocated_above(top, base, 0, 2 * MiB, pnum)) == 0);
    REQUIRE(pnum == 64 * KiB);
    REQUIRE(run_sync(chain.ctx, bdrv_co_is_allocated_above(top, base, 64 * KiB, 2 * MiB, pnum)) == 1);
    REQUIRE(pnum == 64 * KiB);
}

TEST_CASE("qcow2 backing: options choose or suppress the backing file", "[qcow2][backing][open]")
{
    Chain chain("size=1M", "size=1M", 64 * KiB);
    Error err;
    TempImage other;
    REQUIRE(create(chain.ctx, other.path, "size=1M", err) == 0);

    // backing.file.filename replaces the image's own backing file; the
    // node's name then has to say so.
    auto blk = chain.open_top(err, "backing.driver=qcow2,backing.file.filename=" + other.path, 0);
    INFO(err.message);
    REQUIRE(blk);
    REQUIRE(blk->bs()->backing()->bs->filename() == other.path);
    REQUIRE(blk->bs()->filename().rfind("json:", 0) == 0);
    REQUIRE(all_zero(read_all(*blk, 0, 64 * KiB)));
    blk.reset();

    // The image's own backing file keeps the plain name.
    blk = chain.open_top(err, "", 0);
    REQUIRE(blk);
    REQUIRE(blk->bs()->filename() == chain.top.path);
    REQUIRE(blk->bs()->backing_file() == chain.base.path);
    REQUIRE(blk->bs()->backing_format() == "qcow2");
    blk.reset();

    // BDRV_O_NO_BACKING: no backing child, and backing options are left
    // over (QEMU's qemu-img info).
    blk = chain.open_top(err, "", BDRV_O_NO_BACKING);
    REQUIRE(blk);
    REQUIRE_FALSE(blk->bs()->backing());
    REQUIRE(blk->bs()->backing_file() == chain.base.path);
    blk.reset();
    REQUIRE_FALSE(chain.open_top(err, "backing.driver=qcow2", BDRV_O_NO_BACKING));
    REQUIRE(err.message == "Block format 'qcow2' does not support the option 'backing.driver'");

    // A node name is not something we can find.
    REQUIRE_FALSE(chain.open_top(err, "backing=node0", 0));
    REQUIRE(err.message ==
            "Could not open backing file: Cannot find device='node0' nor node-name='node0'");
}

TEST_CASE("qcow2 backing: missing backing files and loops are clear errors", "[qcow2][backing][open]")
{
    AioContext ctx;
    Error err;
    TempImage img;
    std::string missing = img.path + ".gone";
    REQUIRE(create(ctx, img.path, "size=1M,backing_file=" + missing + ",backing_fmt=qcow2", err) == 0);
    REQUIRE_FALSE(open_rw(ctx, img.path, err, "", 0));
    REQUIRE(err.message == "Could not open backing file: Could not open '" + missing +
                               "': No such file or directory");

    // An image that is its own backing file, and a loop of two.
    TempImage self, a({".b"});
    REQUIRE(create(ctx, self.path, "size=1M,backing_file=" + self.path + ",backing_fmt=qcow2", err) == 0);
    for (int flags : {0, int(BDRV_O_RDWR)}) {
        REQUIRE_FALSE(open_rw(ctx, self.path, err, "", flags));
        REQUIRE(err.message == "Could not open backing file: Backing file '" + self.path +
                                   "' creates an infinite loop");
    }
    std::string b = a.extra[0];
    REQUIRE(create(ctx, a.path, "size=1M,backing_file=" + b + ",backing_fmt=qcow2", err) == 0);
    REQUIRE(create(ctx, b, "size=1M,backing_file=" + a.path + ",backing_fmt=qcow2", err) == 0);
    REQUIRE_FALSE(open_rw(ctx, a.path, err, "", 0));
    REQUIRE(err.message == "Could not open backing file: Could not open backing file: Backing "
                           "file '" + a.path + "' creates an infinite loop");
}

TEST_CASE("qcow2 backing: relative names are relative to the image's directory", "[qcow2][backing]")
{
    AioContext ctx;
    Error err;
    char dir_tmpl[] = "/var/tmp/qz-backing-XXXXXX";
    REQUIRE(mkdtemp(dir_tmpl));
    std::string dir = dir_tmpl;
    std::string base = dir + "/base.qcow2", top = dir + "/top.qcow2";
    REQUIRE(create(ctx, base, "size=1M", err) == 0);
    auto data = pattern(4096, 8);
    {
        auto blk = open_rw(ctx, base, err);
        REQUIRE(blk);
        REQUIRE(blk->pwrite(0, data.size(), data.data()) == 0);
    }
    REQUIRE(create(ctx, top, "size=1M,backing_file=base.qcow2,backing_fmt=qcow2", err) == 0);
    {
        // Whatever the current directory is.
        auto blk = open_rw(ctx, top, err, "", 0);
        INFO(err.message);
        REQUIRE(blk);
        REQUIRE(blk->bs()->backing_file() == "base.qcow2");
        REQUIRE(blk->bs()->backing()->bs->filename() == base);
        REQUIRE(*bdrv_backing_filename_to_open(*blk->bs(), err) == base);
        REQUIRE(read_all(*blk, 0, 4096) == data);
        REQUIRE(bdrv_find_backing_image(blk->bs(), base) == blk->bs()->backing());
        REQUIRE(bdrv_find_backing_image(blk->bs(), dir + "/./base.qcow2") == blk->bs()->backing());
        REQUIRE(bdrv_find_backing_image(blk->bs(), dir + "/other.qcow2") == nullptr);
    }
    REQUIRE(*bdrv_full_backing_filename("a/b/top", "base", err) == "a/b/base");
    REQUIRE(*bdrv_full_backing_filename("top", "base", err) == "base");
    REQUIRE(*bdrv_full_backing_filename("a/top", "/abs/base", err) == "/abs/base");
    REQUIRE(*bdrv_full_backing_filename("a/top", "nbd:x", err) == "nbd:x");
    REQUIRE_FALSE(bdrv_full_backing_filename("json:{}", "base", err));
    REQUIRE(err.message == "Cannot use relative backing file names for 'json:{}'");
    unlink(top.c_str());
    unlink(base.c_str());
    rmdir(dir.c_str());
}

TEST_CASE("qcow2 backing: the backing file name in the header can change", "[qcow2][backing]")
{
    Chain chain("size=1M", "size=1M", 64 * KiB);
    Error err;
    {
        auto blk = chain.open_top(err, "", BDRV_O_RDWR | BDRV_O_NO_BACKING);
        REQUIRE(blk);
        REQUIRE(run_sync(chain.ctx, blk->bs()->drv_change_backing_file("elsewhere.img", "raw", err)) == 0);
        REQUIRE(blk->bs()->backing_file() == "elsewhere.img");
        REQUIRE(blk->bs()->backing_format() == "raw");
    }
    {
        auto blk = chain.open_top(err, "", BDRV_O_NO_BACKING);
        REQUIRE(blk);
        REQUIRE(blk->bs()->backing_file() == "elsewhere.img");
        REQUIRE(blk->bs()->backing_format() == "raw");
    }
    {
        auto blk = chain.open_top(err, "", BDRV_O_RDWR | BDRV_O_NO_BACKING);
        REQUIRE(blk);
        REQUIRE(run_sync(chain.ctx, blk->bs()->drv_change_backing_file("", "", err)) == 0);
    }
    auto blk = chain.open_top(err, "", 0);
    REQUIRE(blk);
    REQUIRE(blk->bs()->backing_file().empty());
    REQUIRE_FALSE(blk->bs()->backing());
    REQUIRE(all_zero(read_all(*blk, 0, 64 * KiB)));
}

TEST_CASE("qcow2 backing: an emptied overlay reads its backing file again", "[qcow2][backing]")
{
    Chain chain("size=1M", "size=1M", 1 * MiB);
    Error err;
    auto blk = chain.open_top(err);
    REQUIRE(blk);
    auto d = pattern(300 * KiB, 5);
    REQUIRE(blk->pwrite(10000, d.size(), d.data()) == 0);
    REQUIRE(run_sync(chain.ctx, blk->co_pwrite_zeroes(512 * KiB, 64 * KiB, 0)) == 0);
    REQUIRE(run_sync(chain.ctx, blk->bs()->drv_make_empty(err)) == 0);
    REQUIRE(read_all(*blk, 0, 1 * MiB) == chain.data);
    uint64_t pnum;
    REQUIRE(run_sync(chain.ctx, bdrv_co_is_allocated_above(blk->bs(), blk->bs()->backing()->bs.get(),
                                                           0, 1 * MiB, pnum)) == 0);
    REQUIRE(pnum == 1 * MiB);
}

TEST_CASE("qcow2 backing: growing an overlay hides the backing file past the old end",
          "[qcow2][backing][resize]")
{
    Chain chain("size=2M", "size=1000k", 2 * MiB);
    Error err;
    auto blk = chain.open_top(err, "", BDRV_O_RDWR | BDRV_O_RESIZE);
    REQUIRE(blk);
    REQUIRE(run_sync(chain.ctx, blk->co_truncate(2 * MiB, false, PreallocMode::Off, 0, err)) == 0);
    auto old = read_all(*blk, 0, 1000 * KiB);
    REQUIRE(std::equal(old.begin(), old.end(), chain.data.begin()));
    REQUIRE(all_zero(read_all(*blk, 1000 * KiB, 2 * MiB - 1000 * KiB)));
}

TEST_CASE("qcow2 backing: zoned images refuse backing files", "[qcow2][backing][zoned]")
{
    AioContext ctx;
    Error err;
    TempImage base, zoned;
    REQUIRE(create(ctx, base.path, "size=64M", err) == 0);
    REQUIRE(create(ctx, zoned.path, "size=64M,zone.mode=host-managed,zone.size=16M,backing_file=" +
                                        base.path + ",backing_fmt=qcow2", err) < 0);
    REQUIRE(err.message == "Zoned images cannot have a backing file");
    REQUIRE(access(zoned.path.c_str(), F_OK) != 0);
    REQUIRE(create(ctx, zoned.path, "size=64M,zone.mode=host-managed,zone.size=16M", err) == 0);
    REQUIRE_FALSE(open_rw(ctx, zoned.path, err, "backing.driver=qcow2,backing.file.filename=" + base.path));
    REQUIRE(err.message == "Zoned images cannot have a backing file");
    auto blk = open_rw(ctx, zoned.path, err, "", BDRV_O_RDWR | BDRV_O_NO_BACKING);
    REQUIRE(blk);
    REQUIRE(run_sync(ctx, blk->bs()->drv_change_backing_file(base.path, "qcow2", err)) == -ENOTSUP);
    REQUIRE(err.message == "Zoned images cannot have a backing file");
}

TEST_CASE("qcow2 backing: a chain the headers name costs each node its own options only",
          "[qcow2][backing][open]")
{
    // Each node once also recorded the options of the whole chain below it
    // (with ever longer "backing.backing...." keys): memory grew with the
    // cube of the depth, 3 GB for 600 images.
    AioContext ctx;
    Error err;
    TempImage a({".1", ".2", ".3"});
    std::vector<std::string> chain = {a.path, a.extra[0], a.extra[1], a.extra[2]};
    REQUIRE(create(ctx, chain[0], "size=1M", err) == 0);
    for (size_t i = 1; i < chain.size(); i++) {
        INFO(err.message);
        REQUIRE(create(ctx, chain[i], "size=1M,backing_file=" + chain[i - 1] + ",backing_fmt=qcow2", err) == 0);
    }
    auto blk = open_rw(ctx, chain.back(), err, "", 0);
    INFO(err.message);
    REQUIRE(blk);
    size_t depth = 0;
    for (BlockDriverState* bs = blk->bs(); bs; bs = bs->backing() ? bs->backing()->bs.get() : nullptr) {
        CHECK_FALSE(bs->options().has_subtree("backing"));
        depth++;
    }
    CHECK(depth == chain.size());
    // Options given for the backing file stay part of the overlay's.
    auto explicit_blk = open_rw(ctx, a.extra[0], err, "backing.driver=qcow2,backing.file.filename=" + a.path, 0);
    INFO(err.message);
    REQUIRE(explicit_blk);
    CHECK(explicit_blk->bs()->options().has_subtree("backing"));
}
