// qcow2 internal snapshots through the block layer: what create, goto and
// delete leave on disk (refcounts, COPIED flags, the snapshot table), the
// copy-on-write of clusters a snapshot shares, failures that leave nothing
// behind, the snapshot table's validation, and zoned images, whose
// snapshots keep the zone state.  The on-disk checks read the file with a
// small qcow2 reader of their own, not with the driver; crash-sim crashes
// the operations at every request.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include "block/block-backend.h"
#include "block/crash-sim.h"
#include "block/snapshot.h"
#include "qemu/bswap.h"
#include "qemu/units.h"
#include "qemu-io-capture.h"
#include "qcow2-test-util.h"

using namespace qemu;

namespace {

constexpr uint64_t kCopied = 1ULL << 63;
constexpr uint64_t kOffsetMask = 0x00fffffffffffe00ULL;

using TempImage = qcow2_test::CreatedImage;

// The qcow2 structures of a (small) image file, read directly.
struct Qcow2File {
    std::vector<uint8_t> b;
    uint32_t cluster_bits;
    uint32_t refcount_order;
    uint64_t l1_offset;
    uint32_t l1_size;
    uint64_t reftable_offset;
    uint32_t nb_snapshots;
    uint64_t snapshots_offset;

    struct Snap {
        std::string id, name;
        uint64_t l1_offset;
        uint32_t l1_size;
        std::vector<uint8_t> extra;
    };

    explicit Qcow2File(const std::string& path)
    {
        std::ifstream f(path, std::ios::binary);
        b.assign(std::istreambuf_iterator<char>(f), {});
        REQUIRE(b.size() >= 512);
        cluster_bits = load_be32(&b[20]);
        l1_size = load_be32(&b[36]);
        l1_offset = load_be64(&b[40]);
        reftable_offset = load_be64(&b[48]);
        nb_snapshots = load_be32(&b[60]);
        snapshots_offset = load_be64(&b[64]);
        refcount_order = load_be32(&b[96]);
    }
    uint64_t cs() const { return 1ULL << cluster_bits; }
    uint64_t u64(uint64_t off) const
    {
        REQUIRE(off + 8 <= b.size());
        return load_be64(&b[off]);
    }

    uint64_t refcount(uint64_t host) const
    {
        uint64_t cluster = host >> cluster_bits;
        uint32_t bits = 1u << refcount_order;
        uint64_t per_block = cs() * 8 / bits;
        uint64_t block = u64(reftable_offset + cluster / per_block * 8) & ~0x1ffULL;
        if (!block) {
            return 0;
        }
        uint64_t bit = (cluster % per_block) * bits;
        if (bits < 8) {
            return (b[block + bit / 8] >> (bit % 8)) & ((1u << bits) - 1);
        }
        uint64_t v = 0;
        for (uint32_t i = 0; i < bits / 8; i++) {
            v = v << 8 | b[block + bit / 8 + i];
        }
        return v;
    }
    uint64_t l1_entry(uint64_t l1, uint64_t guest) const
    {
        return u64(l1 + (guest >> (2 * cluster_bits - 3)) * 8);
    }
    // The L2 entry of a guest offset through the L1 table at `l1`.
    uint64_t l2_entry(uint64_t l1, uint64_t guest) const
    {
        uint64_t l2 = l1_entry(l1, guest) & kOffsetMask;
        if (!l2) {
            return 0;
        }
        return u64(l2 + ((guest >> cluster_bits) & ((cs() / 8) - 1)) * 8);
    }
    std::vector<Snap> snapshots() const
    {
        std::vector<Snap> out;
        uint64_t pos = snapshots_offset;
        for (uint32_t i = 0; i < nb_snapshots; i++) {
            pos = (pos + 7) & ~7ULL;
            Snap s;
            s.l1_offset = u64(pos);
            s.l1_size = load_be32(&b[pos + 8]);
            uint16_t id_len = load_be16(&b[pos + 12]);
            uint16_t name_len = load_be16(&b[pos + 14]);
            uint32_t extra_len = load_be32(&b[pos + 36]);
            const uint8_t* extra = &b[pos + 40];
            s.extra.assign(extra, extra + extra_len);
            s.id.assign(reinterpret_cast<const char*>(extra + extra_len), id_len);
            s.name.assign(reinterpret_cast<const char*>(extra + extra_len + id_len), name_len);
            pos += 40 + extra_len + id_len + name_len;
            out.push_back(s);
        }
        return out;
    }
};

void fill(BlockBackend& blk, uint64_t offset, uint64_t len, uint8_t value)
{
    std::vector<uint8_t> d(len, value);
    REQUIRE(blk.pwrite(offset, len, d.data()) == 0);
}

bool reads(BlockBackend& blk, uint64_t offset, uint64_t len, uint8_t value)
{
    std::vector<uint8_t> d(len);
    REQUIRE(blk.pread(offset, len, d.data()) == 0);
    return std::all_of(d.begin(), d.end(), [&](uint8_t v) { return v == value; });
}

int create_snapshot(AioContext& ctx, BlockBackend& blk, const std::string& name)
{
    SnapshotInfo sn;
    sn.name = name;
    sn.date_sec = 1700000000;
    sn.icount = 0;
    return run_sync(ctx, bdrv_snapshot_create(blk.bs(), sn));
}

int goto_snapshot(AioContext& ctx, BlockBackend& blk, const std::string& id_or_name, Error& err)
{
    return run_sync(ctx, bdrv_snapshot_goto(blk.bs(), id_or_name, err));
}

int delete_snapshot(AioContext& ctx, BlockBackend& blk, const std::string& name)
{
    SnapshotInfo sn;
    REQUIRE(bdrv_snapshot_find(blk.bs(), name, sn));
    Error err;
    int ret = run_sync(ctx, bdrv_snapshot_delete(blk.bs(), sn.id, sn.name, err));
    INFO(err.message);
    return ret;
}

// The image passes the driver's check without any finding.
void require_clean(AioContext& ctx, BlockBackend& blk)
{
    BdrvCheckResult r;
    REQUIRE(run_sync(ctx, blk.bs()->drv_check(r, 0)) == 0);
    REQUIRE(r.corruptions == 0);
    REQUIRE(r.leaks == 0);
    REQUIRE(r.check_errors == 0);
}

void patch_file(const std::string& path, uint64_t offset, const void* data, size_t len)
{
    int fd = open(path.c_str(), O_WRONLY);
    REQUIRE(fd >= 0);
    REQUIRE(pwrite(fd, data, len, off_t(offset)) == ssize_t(len));
    close(fd);
}

// Rewrites the first entry of the image's snapshot table, ID "1" and name
// `name`, without extra data, as the oldest writers wrote it.
void strip_extra_data(const std::string& path, const std::string& name)
{
    Qcow2File f(path);
    uint64_t pos = f.snapshots_offset;
    std::vector<uint8_t> entry(f.b.begin() + pos, f.b.begin() + pos + 40);
    store_be32(&entry[36], 0);
    entry.push_back('1');
    entry.insert(entry.end(), name.begin(), name.end());
    patch_file(path, pos, entry.data(), entry.size());
}

}  // namespace

TEST_CASE("qcow2 snapshots: refcounts and COPIED flags after create, COW, goto and delete",
          "[qcow2][snapshot]")
{
    TempImage img("size=8M");
    AioContext ctx;
    uint64_t data_host, l2_host;
    {
        auto blk = img.open(ctx);
        fill(*blk, 0, 256 * KiB, 0x11);
        REQUIRE(create_snapshot(ctx, *blk, "s1") == 0);
        require_clean(ctx, *blk);
    }
    {
        // Everything the active table references is shared: refcount 2, no
        // COPIED flag; the snapshot's L1 table has one owner.
        Qcow2File f(img.path);
        REQUIRE(f.nb_snapshots == 1);
        auto snaps = f.snapshots();
        REQUIRE(snaps[0].id == "1");
        REQUIRE(snaps[0].name == "s1");
        REQUIRE(snaps[0].extra.size() == 24);
        REQUIRE(load_be64(&snaps[0].extra[8]) == 8 * MiB);  // disk size
        REQUIRE(f.refcount(snaps[0].l1_offset) == 1);
        // (The snapshot's L1 table is the active one as it was, COPIED
        // flags included, as QEMU writes it: they mean nothing there.)
        uint64_t l1e = f.l1_entry(f.l1_offset, 0);
        REQUIRE(l1e == (f.l1_entry(snaps[0].l1_offset, 0) & ~kCopied));
        REQUIRE(!(l1e & kCopied));
        l2_host = l1e & kOffsetMask;
        REQUIRE(f.refcount(l2_host) == 2);
        uint64_t e = f.l2_entry(f.l1_offset, 0);
        REQUIRE(!(e & kCopied));
        data_host = e & kOffsetMask;
        REQUIRE(f.refcount(data_host) == 2);
        REQUIRE(f.refcount(f.l2_entry(f.l1_offset, 192 * KiB) & kOffsetMask) == 2);
    }
    {
        // A write copies the shared L2 table and the cluster it hits.
        auto blk = img.open(ctx);
        fill(*blk, 0, 4 * KiB, 0x22);
        REQUIRE(reads(*blk, 4 * KiB, 252 * KiB, 0x11));
        require_clean(ctx, *blk);
    }
    {
        Qcow2File f(img.path);
        auto snaps = f.snapshots();
        uint64_t l1e = f.l1_entry(f.l1_offset, 0);
        REQUIRE((l1e & kCopied));
        REQUIRE((l1e & kOffsetMask) != l2_host);
        REQUIRE(f.refcount(l2_host) == 1);  // the snapshot's now
        uint64_t e = f.l2_entry(f.l1_offset, 0);
        REQUIRE((e & kCopied));
        REQUIRE((e & kOffsetMask) != data_host);
        REQUIRE(f.refcount(e & kOffsetMask) == 1);
        REQUIRE(f.refcount(data_host) == 1);
        REQUIRE(f.l2_entry(snaps[0].l1_offset, 0) == (data_host));
        // Clusters the write did not touch stay shared.
        REQUIRE(f.refcount(f.l2_entry(f.l1_offset, 64 * KiB) & kOffsetMask) == 2);
    }
    uint64_t written_host;
    {
        Qcow2File f(img.path);
        written_host = f.l2_entry(f.l1_offset, 0) & kOffsetMask;
        auto blk = img.open(ctx);
        Error err;
        REQUIRE(goto_snapshot(ctx, *blk, "s1", err) == 0);
        REQUIRE(reads(*blk, 0, 256 * KiB, 0x11));
        require_clean(ctx, *blk);
    }
    {
        // The active table is the snapshot's again; what only the old
        // active table had is free.
        Qcow2File f(img.path);
        auto snaps = f.snapshots();
        REQUIRE(f.l1_entry(f.l1_offset, 0) == l2_host);
        REQUIRE(f.refcount(l2_host) == 2);
        REQUIRE(f.refcount(data_host) == 2);
        REQUIRE(f.refcount(written_host) == 0);
        REQUIRE(f.l1_offset != snaps[0].l1_offset);
    }
    {
        auto blk = img.open(ctx);
        REQUIRE(delete_snapshot(ctx, *blk, "s1") == 0);
        std::vector<SnapshotInfo> list;
        REQUIRE(bdrv_snapshot_list(blk->bs(), list) == 0);
        require_clean(ctx, *blk);
    }
    {
        // One owner each again, COPIED everywhere; the snapshot's L1 table
        // and the snapshot table are gone.
        Qcow2File f(img.path);
        REQUIRE(f.nb_snapshots == 0);
        REQUIRE(f.snapshots_offset == 0);
        uint64_t l1e = f.l1_entry(f.l1_offset, 0);
        REQUIRE(l1e == (l2_host | kCopied));
        REQUIRE(f.refcount(l2_host) == 1);
        REQUIRE(f.l2_entry(f.l1_offset, 0) == (data_host | kCopied));
        REQUIRE(f.refcount(data_host) == 1);
    }
    auto blk = img.open(ctx);
    REQUIRE(reads(*blk, 0, 256 * KiB, 0x11));
}

TEST_CASE("qcow2 snapshots: each state reads back, with compressed and zero clusters",
          "[qcow2][snapshot]")
{
    for (const char* opts : {"size=16M,cluster_size=4k", "size=16M,cluster_size=512",
                             "size=16M,compat=0.10", "size=16M,lazy_refcounts=on",
                             "size=16M,refcount_bits=64"}) {
        INFO(opts);
        TempImage img(opts);
        AioContext ctx;
        auto blk = img.open(ctx);
        uint64_t cs = 64 * KiB;
        fill(*blk, 0, 1 * MiB, 0x01);
        std::vector<uint8_t> packed(cs, 0x5a);
        REQUIRE(blk->pwrite(4 * MiB, cs, packed.data(), BDRV_REQ_WRITE_COMPRESSED) == 0);
        REQUIRE(create_snapshot(ctx, *blk, "a") == 0);
        fill(*blk, 512 * KiB, 1 * MiB, 0x02);
        REQUIRE(blk->pwrite(4 * MiB, 4096, packed.data() + 1) == 0);  // COW of compressed data
        REQUIRE(run_sync(ctx, blk->co_pwrite_zeroes(0, 256 * KiB, BDRV_REQ_MAY_UNMAP)) == 0);
        REQUIRE(create_snapshot(ctx, *blk, "b") == 0);
        fill(*blk, 8 * MiB, 2 * MiB, 0x03);
        require_clean(ctx, *blk);

        Error err;
        REQUIRE(goto_snapshot(ctx, *blk, "a", err) == 0);
        REQUIRE(reads(*blk, 0, 1 * MiB, 0x01));
        REQUIRE(reads(*blk, 1 * MiB, 3 * MiB, 0));
        REQUIRE(reads(*blk, 4 * MiB, cs, 0x5a));
        REQUIRE(reads(*blk, 8 * MiB, 2 * MiB, 0));
        require_clean(ctx, *blk);
        REQUIRE(goto_snapshot(ctx, *blk, "2", err) == 0);  // "b", by ID
        REQUIRE(reads(*blk, 0, 256 * KiB, 0));
        REQUIRE(reads(*blk, 256 * KiB, 256 * KiB, 0x01));
        REQUIRE(reads(*blk, 512 * KiB, 1 * MiB, 0x02));
        REQUIRE(reads(*blk, 4 * MiB + 4096, cs - 4096, 0x5a));
        require_clean(ctx, *blk);
        REQUIRE(delete_snapshot(ctx, *blk, "a") == 0);
        require_clean(ctx, *blk);
        fill(*blk, 0, 2 * MiB, 0x04);
        REQUIRE(goto_snapshot(ctx, *blk, "b", err) == 0);
        REQUIRE(reads(*blk, 512 * KiB, 1 * MiB, 0x02));
        REQUIRE(delete_snapshot(ctx, *blk, "b") == 0);
        require_clean(ctx, *blk);
        blk.reset();
        blk = img.open(ctx);
        REQUIRE(reads(*blk, 512 * KiB, 1 * MiB, 0x02));
        require_clean(ctx, *blk);
    }
}

TEST_CASE("qcow2 snapshots: a create or goto that fails leaves nothing behind", "[qcow2][snapshot]")
{
    // A second reference does not fit in one refcount bit.
    TempImage img("size=8M,refcount_bits=1");
    AioContext ctx;
    auto blk = img.open(ctx);
    fill(*blk, 0, 512 * KiB, 0x11);
    REQUIRE(blk->flush() == 0);
    Qcow2File before(img.path);
    REQUIRE(create_snapshot(ctx, *blk, "s") == -EINVAL);
    std::vector<SnapshotInfo> list;
    REQUIRE(bdrv_snapshot_list(blk->bs(), list) == 0);
    require_clean(ctx, *blk);  // no leak, COPIED flags where they were
    Qcow2File after(img.path);
    REQUIRE(after.nb_snapshots == 0);
    REQUIRE(after.l2_entry(after.l1_offset, 0) == before.l2_entry(before.l1_offset, 0));
    REQUIRE((after.l1_entry(after.l1_offset, 0) & kCopied));
    fill(*blk, 0, 4 * KiB, 0x22);  // still written in place
    Qcow2File written(img.path);
    REQUIRE(written.l2_entry(written.l1_offset, 0) == before.l2_entry(before.l1_offset, 0));

    // Two bits count three references: the active table and two
    // snapshots.  Going back to one needs a fourth for a moment.
    TempImage two("size=8M,refcount_bits=2");
    auto blk2 = two.open(ctx);
    fill(*blk2, 0, 512 * KiB, 0x11);
    REQUIRE(create_snapshot(ctx, *blk2, "a") == 0);
    REQUIRE(create_snapshot(ctx, *blk2, "b") == 0);
    REQUIRE(create_snapshot(ctx, *blk2, "c") == -EINVAL);
    fill(*blk2, 0, 64 * KiB, 0x22);
    require_clean(ctx, *blk2);
    Error err;
    REQUIRE(goto_snapshot(ctx, *blk2, "a", err) == -EINVAL);
    REQUIRE(err.message == "Failed to load snapshot: Invalid argument");
    require_clean(ctx, *blk2);
    REQUIRE(reads(*blk2, 0, 64 * KiB, 0x22));
    REQUIRE(reads(*blk2, 64 * KiB, 448 * KiB, 0x11));
    REQUIRE(bdrv_snapshot_list(blk2->bs(), list) == 2);
    // With one reference less it works.
    REQUIRE(delete_snapshot(ctx, *blk2, "b") == 0);
    err.clear();
    REQUIRE(goto_snapshot(ctx, *blk2, "a", err) == 0);
    REQUIRE(reads(*blk2, 0, 512 * KiB, 0x11));
    require_clean(ctx, *blk2);
}

TEST_CASE("qcow2 snapshots: lookups and errors", "[qcow2][snapshot]")
{
    TempImage img("size=1M");
    AioContext ctx;
    auto blk = img.open(ctx);
    REQUIRE(create_snapshot(ctx, *blk, "x") == 0);
    REQUIRE(create_snapshot(ctx, *blk, "x") == 0);  // names may repeat
    REQUIRE(create_snapshot(ctx, *blk, "1") == 0);
    std::vector<SnapshotInfo> list;
    REQUIRE(bdrv_snapshot_list(blk->bs(), list) == 3);
    REQUIRE(list[2].id == "3");
    REQUIRE(list[2].name == "1");
    REQUIRE(list[0].date_sec == 1700000000);
    REQUIRE(list[0].icount == 0);
    Error err;
    REQUIRE(goto_snapshot(ctx, *blk, "nosuch", err) == -ENOENT);
    REQUIRE(err.message == "Failed to load snapshot: No such file or directory");
    err.clear();
    REQUIRE(run_sync(ctx, bdrv_snapshot_delete(blk->bs(), "9", "", err)) == -ENOENT);
    REQUIRE(err.message == "Can't find the snapshot");
    // The first match of both ID and name.
    err.clear();
    REQUIRE(run_sync(ctx, bdrv_snapshot_delete(blk->bs(), "2", "x", err)) == 0);
    REQUIRE(bdrv_snapshot_list(blk->bs(), list) == 2);
    REQUIRE(list[0].id == "1");
    REQUIRE(list[1].id == "3");
    REQUIRE(create_snapshot(ctx, *blk, "y") == 0);
    REQUIRE(bdrv_snapshot_list(blk->bs(), list) == 3);
    REQUIRE(list[2].id == "4");
    require_clean(ctx, *blk);
    blk.reset();
    // Read-only images list but change nothing.
    auto ro = img.open(ctx, "", 0);
    REQUIRE(bdrv_snapshot_list(ro->bs(), list) == 3);
    REQUIRE(create_snapshot(ctx, *ro, "z") == -EACCES);
}

TEST_CASE("qcow2 snapshots: the table keeps what it does not know", "[qcow2][snapshot]")
{
    TempImage img("size=1M");
    AioContext ctx;
    {
        auto blk = img.open(ctx);
        REQUIRE(create_snapshot(ctx, *blk, "old") == 0);
    }
    // Give the entry 40 bytes of extra data: 24 known ones, then bytes
    // another program put there.  The entry is the table's only one, so
    // it can grow in place: the table's cluster has room.
    Qcow2File f(img.path);
    uint64_t pos = f.snapshots_offset;
    std::vector<uint8_t> entry(f.b.begin() + pos, f.b.begin() + pos + 40 + 24 + 1 + 3);
    std::vector<uint8_t> grown(entry.begin(), entry.begin() + 40 + 24);
    for (int i = 0; i < 16; i++) {
        grown.push_back(uint8_t(0xa0 + i));
    }
    grown.insert(grown.end(), entry.begin() + 64, entry.end());
    store_be32(&grown[36], 40);
    patch_file(img.path, pos, grown.data(), grown.size());
    {
        auto blk = img.open(ctx);
        REQUIRE(create_snapshot(ctx, *blk, "new") == 0);  // rewrites the table
        require_clean(ctx, *blk);
    }
    Qcow2File g(img.path);
    auto snaps = g.snapshots();
    REQUIRE(snaps.size() == 2);
    REQUIRE(snaps[0].name == "old");
    REQUIRE(snaps[0].extra.size() == 40);
    REQUIRE(snaps[0].extra[24] == 0xa0);
    REQUIRE(snaps[0].extra[39] == 0xaf);
    REQUIRE(snaps[1].extra.size() == 24);
}

TEST_CASE("qcow2 snapshots: entries of older writers, without extra data", "[qcow2][snapshot]")
{
    TempImage img("size=4M");
    AioContext ctx;
    {
        auto blk = img.open(ctx);
        fill(*blk, 0, 64 * KiB, 0x11);
        REQUIRE(create_snapshot(ctx, *blk, "old") == 0);
        fill(*blk, 0, 64 * KiB, 0x22);
    }
    // The entry without its 24 bytes of extra data: no disk size (the
    // image's own counts), no instruction count.
    strip_extra_data(img.path, "old");
    auto blk = img.open(ctx);
    std::vector<SnapshotInfo> list;
    REQUIRE(bdrv_snapshot_list(blk->bs(), list) == 1);
    REQUIRE(list[0].name == "old");
    REQUIRE(list[0].icount == UINT64_MAX);
    Error err;
    REQUIRE(goto_snapshot(ctx, *blk, "old", err) == 0);
    REQUIRE(blk->getlength() == 4 * MiB);
    REQUIRE(reads(*blk, 0, 64 * KiB, 0x11));

    // Version 3 wants at least 16 bytes of it: a corruption, which the
    // repair mends by writing the entry in full.
    BdrvCheckResult r;
    REQUIRE(run_sync(ctx, blk->bs()->drv_check(r, 0)) == 0);
    REQUIRE(r.corruptions == 1);
    REQUIRE(run_sync(ctx, blk->bs()->drv_check(r, BDRV_FIX_LEAKS)) == 0);
    REQUIRE(r.corruptions == 1);
    REQUIRE(run_sync(ctx, blk->bs()->drv_check(r, BDRV_FIX_LEAKS | BDRV_FIX_ERRORS)) == 0);
    REQUIRE(r.corruptions == 0);
    REQUIRE(r.corruptions_fixed == 1);
    require_clean(ctx, *blk);
    blk.reset();
    Qcow2File fixed(img.path);
    REQUIRE(load_be32(&fixed.b[fixed.snapshots_offset + 36]) == 24);
    blk = img.open(ctx);
    REQUIRE(bdrv_snapshot_list(blk->bs(), list) == 1);
    REQUIRE(list[0].icount == UINT64_MAX);
    REQUIRE(list[0].name == "old");
    require_clean(ctx, *blk);
}

TEST_CASE("qcow2 snapshots: version 2 entries may lack extra data", "[qcow2][snapshot]")
{
    TempImage img("size=4M,compat=0.10");
    AioContext ctx;
    {
        auto blk = img.open(ctx);
        REQUIRE(create_snapshot(ctx, *blk, "old") == 0);
    }
    strip_extra_data(img.path, "old");
    auto blk = img.open(ctx);
    require_clean(ctx, *blk);
}

TEST_CASE("qcow2 snapshots: hostile snapshot tables are refused at open", "[qcow2][snapshot]")
{
    auto open_error = [](const std::string& path) {
        AioContext ctx;
        Error err;
        QDict o;
        o.set("driver", "qcow2");
        auto blk = BlockBackend::open(path, o, 0, ctx, err);
        REQUIRE(!blk);
        return err.message;
    };
    TempImage img("size=1M");
    {
        AioContext ctx;
        auto blk = img.open(ctx);
        REQUIRE(create_snapshot(ctx, *blk, "a") == 0);
        REQUIRE(create_snapshot(ctx, *blk, "b") == 0);
    }
    Qcow2File f(img.path);
    uint64_t first = f.snapshots_offset;
    uint64_t second = (first + 40 + 24 + 1 + 1 + 7) & ~7ULL;
    REQUIRE(f.b[second + 40 + 24] == '2');
    patch_file(img.path, second + 40 + 24, "1", 1);
    REQUIRE(open_error(img.path) == "Snapshot table is corrupt: the ID '1' is used twice");
    patch_file(img.path, second + 40 + 24, "2", 1);

    uint8_t big[4];
    store_be32(big, 1025);
    patch_file(img.path, first + 36, big, 4);
    REQUIRE(open_error(img.path) == "Too much extra metadata in snapshot table entry 0");
    store_be32(big, 24);
    patch_file(img.path, first + 36, big, 4);

    uint8_t far[8];
    store_be64(far, 1ULL << 40);
    patch_file(img.path, first, far, 8);
    REQUIRE(open_error(img.path) == "Snapshot L1 table offset invalid");
    store_be64(far, f.snapshots()[0].l1_offset);
    patch_file(img.path, first, far, 8);

    // Zone state in an image that is not zoned.
    TempImage z("size=1M");
    {
        AioContext ctx;
        auto blk = z.open(ctx);
        REQUIRE(create_snapshot(ctx, *blk, "a") == 0);
    }
    Qcow2File zf(z.path);
    uint64_t at = zf.snapshots_offset;
    std::vector<uint8_t> e(zf.b.begin() + at, zf.b.begin() + at + 40 + 24 + 2);
    std::vector<uint8_t> with(e.begin(), e.begin() + 64);
    uint8_t rec[32] = {};
    store_be32(rec, 0x7a6e7373);
    store_be64(rec + 8, 0x10000);
    with.insert(with.end(), rec, rec + 32);
    with.insert(with.end(), e.begin() + 64, e.end());
    store_be32(&with[36], 56);
    patch_file(z.path, at, with.data(), with.size());
    REQUIRE(open_error(z.path) == "Image is corrupt: the zone state of snapshot '1' is misplaced");

    AioContext ctx;
    auto blk = img.open(ctx);  // the repaired one opens again
    require_clean(ctx, *blk);
}

namespace {

constexpr const char* kZonedOpts =
    "size=16M,zone.mode=host-managed,zone.size=2M,zone.conventional_zones=1,"
    "zone.max_append_bytes=64k,zone.descriptor_extension_size=64";

std::vector<BlockZoneDescriptor> report(AioContext& ctx, BlockBackend& blk)
{
    std::vector<BlockZoneDescriptor> zones(8);
    uint32_t n = 8;
    REQUIRE(run_sync(ctx, blk.co_zone_report(0, n, zones.data())) == 0);
    REQUIRE(n == 8);
    return zones;
}

void require_same(const std::vector<BlockZoneDescriptor>& a, const std::vector<BlockZoneDescriptor>& b)
{
    REQUIRE(a.size() == b.size());
    for (size_t i = 0; i < a.size(); i++) {
        INFO("zone " << i);
        REQUIRE(a[i].start == b[i].start);
        REQUIRE(a[i].wp == b[i].wp);
        REQUIRE(a[i].state == b[i].state);
        REQUIRE(a[i].capacity == b[i].capacity);
        REQUIRE(a[i].desc_ext_valid == b[i].desc_ext_valid);
    }
}

}  // namespace

TEST_CASE("zoned qcow2 snapshots: goto restores write pointers, conditions and descriptor "
          "extensions with the data", "[qcow2][snapshot][zoned]")
{
    TempImage img(kZonedOpts);
    AioContext ctx;
    std::vector<uint8_t> ext(64, 0x5e), other(64, 0x6f), back(64);
    std::vector<BlockZoneDescriptor> at_snapshot;
    {
        auto blk = img.open(ctx);
        fill(*blk, 0, 64 * KiB, 0x10);           // conventional
        fill(*blk, 2 * MiB, 192 * KiB, 0x11);    // closed after a restart
        fill(*blk, 4 * MiB, 2 * MiB, 0x12);      // full
        REQUIRE(run_sync(ctx, blk->co_zone_set_desc_ext(6 * MiB, ext.data())) == 0);
        fill(*blk, 8 * MiB, 64 * KiB, 0x14);
        REQUIRE(run_sync(ctx, blk->co_zone_mgmt(BlockZoneOp::SetReadOnly, 8 * MiB, 2 * MiB)) == 0);
        REQUIRE(create_snapshot(ctx, *blk, "z") == 0);
        require_clean(ctx, *blk);
    }
    {
        // The snapshot holds the persisted state: what a restart sees.
        auto blk = img.open(ctx);
        at_snapshot = report(ctx, *blk);
        REQUIRE(at_snapshot[1].state == BlockZoneState::Closed);

        // Change every zone, then go back within the same open node: its
        // zone state machine must follow.
        fill(*blk, 0, 64 * KiB, 0x20);
        fill(*blk, 2 * MiB + 192 * KiB, 64 * KiB, 0x21);
        REQUIRE(run_sync(ctx, blk->co_zone_mgmt(BlockZoneOp::Reset, 4 * MiB, 2 * MiB)) == 0);
        REQUIRE(run_sync(ctx, blk->co_zone_mgmt(BlockZoneOp::Reset, 6 * MiB, 2 * MiB)) == 0);
        REQUIRE(run_sync(ctx, blk->co_zone_set_desc_ext(6 * MiB, other.data())) == 0);
        REQUIRE(run_sync(ctx, blk->co_zone_mgmt(BlockZoneOp::SetOffline, 10 * MiB, 2 * MiB)) == 0);
        fill(*blk, 12 * MiB, 1 * MiB, 0x26);
        REQUIRE(run_sync(ctx, blk->co_zone_mgmt(BlockZoneOp::Open, 14 * MiB, 2 * MiB)) == 0);
        Error err;
        REQUIRE(goto_snapshot(ctx, *blk, "z", err) == 0);
        require_same(report(ctx, *blk), at_snapshot);
        REQUIRE(reads(*blk, 0, 64 * KiB, 0x10));
        REQUIRE(reads(*blk, 2 * MiB, 192 * KiB, 0x11));
        REQUIRE(reads(*blk, 2 * MiB + 192 * KiB, 64 * KiB, 0));
        REQUIRE(reads(*blk, 4 * MiB, 2 * MiB, 0x12));
        REQUIRE(reads(*blk, 10 * MiB, 6 * MiB, 0));
        REQUIRE(run_sync(ctx, blk->co_zone_get_desc_ext(6 * MiB, back.data())) == 0);
        REQUIRE(back == ext);
        // Writes follow the restored write pointers.
        uint8_t b[4096] = {};
        REQUIRE(blk->pwrite(2 * MiB, 4096, b) < 0);
        REQUIRE(blk->pwrite(2 * MiB + 192 * KiB, 4096, b) == 0);
        REQUIRE(goto_snapshot(ctx, *blk, "z", err) == 0);
        require_clean(ctx, *blk);
    }
    // A later open sees the same.
    auto blk = img.open(ctx);
    require_same(report(ctx, *blk), at_snapshot);
    REQUIRE(reads(*blk, 2 * MiB, 192 * KiB, 0x11));
    REQUIRE(run_sync(ctx, blk->co_zone_get_desc_ext(6 * MiB, back.data())) == 0);
    REQUIRE(back == ext);
    REQUIRE(reads(*blk, 8 * MiB, 64 * KiB, 0x14));
    uint8_t b[512] = {};
    REQUIRE(blk->pwrite(8 * MiB + 64 * KiB, 512, b) == zone_error_code(ZoneError::ReadOnly));

    // Deleting the snapshot frees its copies of the zone metadata.
    Qcow2File before(img.path);
    auto snaps = before.snapshots();
    REQUIRE(snaps[0].extra.size() == 56);
    REQUIRE(load_be32(&snaps[0].extra[24]) == 0x7a6e7373);
    uint64_t wp_copy = load_be64(&snaps[0].extra[32]);
    uint64_t cond_copy = load_be64(&snaps[0].extra[40]);
    uint64_t zde_copy = load_be64(&snaps[0].extra[48]);
    REQUIRE(before.refcount(wp_copy) == 1);
    REQUIRE(cond_copy);
    REQUIRE(before.refcount(cond_copy) == 1);
    REQUIRE(zde_copy);
    REQUIRE(before.refcount(zde_copy) == 1);
    REQUIRE(delete_snapshot(ctx, *blk, "z") == 0);
    require_clean(ctx, *blk);
    blk.reset();
    Qcow2File after(img.path);
    REQUIRE(after.refcount(wp_copy) == 0);
    REQUIRE(after.refcount(cond_copy) == 0);
    REQUIRE(after.refcount(zde_copy) == 0);
}

TEST_CASE("zoned qcow2 snapshots: a snapshot without zone state is not applied",
          "[qcow2][snapshot][zoned]")
{
    TempImage img(kZonedOpts);
    AioContext ctx;
    {
        auto blk = img.open(ctx);
        fill(*blk, 2 * MiB, 64 * KiB, 0x11);
        REQUIRE(create_snapshot(ctx, *blk, "z") == 0);
    }
    // Another program's snapshot: its extra data has no zone record (the
    // copies it would name become leaks).
    Qcow2File f(img.path);
    uint8_t zero[4] = {};
    patch_file(img.path, f.snapshots_offset + 40 + 24, zero, 4);
    auto blk = img.open(ctx);
    fill(*blk, 2 * MiB + 64 * KiB, 64 * KiB, 0x12);
    Error err;
    REQUIRE(goto_snapshot(ctx, *blk, "z", err) == -ENOTSUP);
    REQUIRE(err.message ==
            "Snapshot '1' holds no zone state; it cannot be applied to a zoned image");
    REQUIRE(reads(*blk, 2 * MiB, 128 * KiB, 0x11) == false);
    REQUIRE(report(ctx, *blk)[1].wp == 2 * MiB + 128 * KiB);
    REQUIRE(delete_snapshot(ctx, *blk, "z") == 0);
}

namespace {

// A zoned image in state B with a snapshot of state A (see
// build_two_states), copied for each crash and opened over crash-sim.
struct CrashedCopy {
    std::string path;
    explicit CrashedCopy(const std::string& base)
    {
        path = base + ".crash";
        std::ifstream in(base, std::ios::binary);
        std::ofstream out(path, std::ios::binary | std::ios::trunc);
        out << in.rdbuf();
    }
    ~CrashedCopy() { unlink(path.c_str()); }
};

std::unique_ptr<BlockBackend> open_over_crash_sim(AioContext& ctx, const std::string& path,
                                                  uint64_t seed)
{
    QDict o;
    o.set("driver", "qcow2");
    o.set("file.driver", "crash-sim");
    o.set("file.seed", std::to_string(seed));
    o.set("file.file.driver", "file");
    o.set("file.file.filename", path);
    // crash-sim decides what is durable; the file below need not sync.
    o.set("file.file.cache.no-flush", "on");
    Error err;
    auto blk = BlockBackend::open(std::nullopt, o, BDRV_O_RDWR, ctx, err);
    INFO(err.message);
    REQUIRE(blk);
    return blk;
}

// What a zoned image reads and reports, zone by zone.
struct ZonedState {
    std::vector<BlockZoneDescriptor> zones;
    std::vector<uint8_t> data;  // offline zones read as zeroes here
};

ZonedState capture(AioContext& ctx, BlockBackend& blk)
{
    ZonedState s;
    s.zones = report(ctx, blk);
    s.data.assign(blk.getlength(), 0);
    for (const BlockZoneDescriptor& z : s.zones) {
        if (z.state != BlockZoneState::Offline) {
            REQUIRE(blk.pread(z.start, z.length, s.data.data() + z.start) == 0);
        }
    }
    return s;
}

// State A (snapshot "a") and state B (current) differ in every zone: data
// of the conventional zone, write pointers up and down, a finished zone,
// descriptor extensions, an offline zone.
void build_two_states(const TempImage& img, ZonedState& a, ZonedState& b)
{
    AioContext ctx;
    std::vector<uint8_t> ext(64, 0x5e), other(64, 0x6f);
    {
        auto blk = img.open(ctx);
        fill(*blk, 0, 64 * KiB, 0x10);
        fill(*blk, 2 * MiB, 192 * KiB, 0x11);
        fill(*blk, 4 * MiB, 1 * MiB, 0x12);
        REQUIRE(run_sync(ctx, blk->co_zone_set_desc_ext(6 * MiB, ext.data())) == 0);
        fill(*blk, 10 * MiB, 512 * KiB, 0x15);
        REQUIRE(create_snapshot(ctx, *blk, "a") == 0);
    }
    {
        auto blk = img.open(ctx);
        a = capture(ctx, *blk);
        fill(*blk, 0, 64 * KiB, 0x20);
        fill(*blk, 2 * MiB + 192 * KiB, 256 * KiB, 0x21);
        REQUIRE(run_sync(ctx, blk->co_zone_mgmt(BlockZoneOp::Reset, 4 * MiB, 2 * MiB)) == 0);
        fill(*blk, 4 * MiB, 64 * KiB, 0x22);
        REQUIRE(run_sync(ctx, blk->co_zone_mgmt(BlockZoneOp::Reset, 6 * MiB, 2 * MiB)) == 0);
        REQUIRE(run_sync(ctx, blk->co_zone_set_desc_ext(6 * MiB, other.data())) == 0);
        REQUIRE(run_sync(ctx, blk->co_zone_mgmt(BlockZoneOp::Finish, 8 * MiB, 2 * MiB)) == 0);
        REQUIRE(run_sync(ctx, blk->co_zone_mgmt(BlockZoneOp::SetOffline, 10 * MiB, 2 * MiB)) == 0);
        fill(*blk, 12 * MiB, 1 * MiB, 0x26);
    }
    auto blk = img.open(ctx);
    b = capture(ctx, *blk);
}

// After a crash: the data is one state's (the L1 switch is atomic), and
// every readable zone's write pointer stands at or below that state's, over
// that state's data.
void require_consistent(AioContext& ctx, BlockBackend& blk, const ZonedState& a, const ZonedState& b)
{
    BdrvCheckResult r;
    REQUIRE(run_sync(ctx, blk.bs()->drv_check(r, 0)) == 0);
    REQUIRE(r.corruptions == 0);
    ZonedState now = capture(ctx, blk);
    const ZonedState* was = nullptr;
    if (std::equal(now.data.begin(), now.data.begin() + 64 * KiB, a.data.begin())) {
        was = &a;
    } else if (std::equal(now.data.begin(), now.data.begin() + 64 * KiB, b.data.begin())) {
        was = &b;
    }
    REQUIRE(was);
    for (size_t z = 1; z < now.zones.size(); z++) {
        INFO("zone " << z);
        const BlockZoneDescriptor& d = now.zones[z];
        if (d.state == BlockZoneState::Offline || was->zones[z].state == BlockZoneState::Offline) {
            continue;  // a condition restored before, or not yet
        }
        REQUIRE(d.wp <= was->zones[z].wp);
        REQUIRE(std::equal(now.data.begin() + d.start, now.data.begin() + d.wp,
                           was->data.begin() + d.start));
    }
}

}  // namespace

TEST_CASE("zoned qcow2 snapshots: a crash anywhere in goto, create or delete leaves a "
          "consistent image", "[qcow2][snapshot][zoned][crash]")
{
    TempImage img(kZonedOpts);
    ZonedState a, b;
    build_two_states(img, a, b);
    const CrashOutcome outcomes[] = {CrashOutcome::PowerLossCacheLost, CrashOutcome::PowerLossSubset,
                                     CrashOutcome::PowerLossTorn, CrashOutcome::ProcessKilled};
    struct Operation {
        const char* name;
        std::function<int(AioContext&, BlockBackend&)> run;
    };
    const Operation operations[] = {
        {"goto", [](AioContext& ctx, BlockBackend& blk) {
             Error err;
             return goto_snapshot(ctx, blk, "a", err);
         }},
        {"create", [](AioContext& ctx, BlockBackend& blk) { return create_snapshot(ctx, blk, "b"); }},
        {"delete", [](AioContext& ctx, BlockBackend& blk) { return delete_snapshot(ctx, blk, "a"); }},
    };
    for (const Operation& op : operations) {
        // How many requests the operation makes when nothing goes wrong.
        uint64_t requests;
        {
            CrashedCopy copy(img.path);
            AioContext ctx;
            auto blk = open_over_crash_sim(ctx, copy.path, 1);
            auto sim = std::dynamic_pointer_cast<CrashSimState>(blk->bs()->file()->bs);
            uint64_t before = sim->stats().requests;
            REQUIRE(op.run(ctx, *blk) == 0);
            requests = sim->stats().requests - before;
        }
        for (uint64_t k = 1; k <= requests; k++) {
            for (CrashOutcome outcome : outcomes) {
                INFO(op.name << ": crash at request " << k << " of " << requests << ", "
                             << crash_outcome_name(outcome));
                CrashedCopy copy(img.path);
                {
                    AioContext ctx;
                    auto blk = open_over_crash_sim(ctx, copy.path, k * 8 + uint64_t(outcome));
                    auto sim = std::dynamic_pointer_cast<CrashSimState>(blk->bs()->file()->bs);
                    sim->crash_at_request(sim->stats().requests + k);
                    REQUIRE(op.run(ctx, *blk) < 0);
                    while (ctx.poll(false)) {
                    }
                    REQUIRE(run_sync(ctx, sim->settle(outcome)) == 0);
                }
                AioContext ctx;
                Error err;
                QDict o;
                o.set("driver", "qcow2");
                o.set("cache.no-flush", "on");
                std::unique_ptr<BlockBackend> blk;
                {
                    test::CapturedOutput quiet;  // the repair of the dirty image reports
                    blk = BlockBackend::open(copy.path, o, BDRV_O_RDWR, ctx, err);
                }
                INFO(err.message);
                REQUIRE(blk);
                require_consistent(ctx, *blk, a, b);
                // Whatever happened, the snapshot (if it is still there)
                // brings state A back whole.
                SnapshotInfo sn;
                if (bdrv_snapshot_find(blk->bs(), "a", sn)) {
                    REQUIRE(goto_snapshot(ctx, *blk, "a", err) == 0);
                    ZonedState now = capture(ctx, *blk);
                    require_same(now.zones, a.zones);
                    REQUIRE(now.data == a.data);
                } else {
                    REQUIRE(std::string(op.name) == "delete");
                }
                if (bdrv_snapshot_find(blk->bs(), "b", sn)) {
                    REQUIRE(goto_snapshot(ctx, *blk, "b", err) == 0);
                    ZonedState now = capture(ctx, *blk);
                    require_same(now.zones, b.zones);
                    REQUIRE(now.data == b.data);
                }
            }
        }
    }
}
