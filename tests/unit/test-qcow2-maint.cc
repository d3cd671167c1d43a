// qcow2 image maintenance: qemu-img measure's arithmetic, persistent dirty
// bitmaps (parsing, marking in use, storing what writes changed, resizing)
// and qemu-img amend (refcount widths, compat levels).  The bitmaps are
// added to images by hand here; tests/interop and qemu-iotests 055 use
// QEMU's own qemu-img bitmap.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <cstring>

#include "block/block-backend.h"
#include "block/qcow2/qcow2.h"  // the driver's internals: formats and arithmetic
#include "qcow2-test-util.h"
#include "qemu/bswap.h"
#include "qemu/units.h"

using namespace qemu;
using namespace qcow2_test;

namespace {

uint64_t file_be64(const std::string& path, uint64_t offset)
{
    uint8_t b[8];
    read_file(path, offset, b, 8);
    return load_be64(b);
}

uint32_t file_be32(const std::string& path, uint64_t offset)
{
    uint8_t b[4];
    read_file(path, offset, b, 4);
    return load_be32(b);
}

// Where the header extension `magic` is (its data), 0 if absent.
uint64_t find_extension(const std::string& path, uint32_t magic, uint64_t* end_marker = nullptr)
{
    uint64_t pos = file_be32(path, 100);  // header length
    for (;;) {
        uint32_t m = file_be32(path, pos);
        uint32_t len = file_be32(path, pos + 4);
        if (m == 0) {
            if (end_marker) {
                *end_marker = pos;
            }
            return 0;
        }
        if (m == magic) {
            return pos + 8;
        }
        pos += 8 + ((uint64_t(len) + 7) & ~7ULL);
    }
}

struct BitmapSpec {
    std::string name;
    uint8_t granularity_bits;
    uint32_t flags;
};

// Gives a fresh image (64 KiB clusters, 16-bit refcounts, everything in the
// first refcount block) the bitmaps of `specs`, all clean, the way QEMU's
// qemu-img bitmap --add leaves them: a directory and one table each in new
// clusters at the end of the file, refcounted, the extension in the header
// and the autoclear bit set.
void add_bitmaps(const std::string& path, const std::vector<BitmapSpec>& specs)
{
    const uint64_t cs = 1ULL << file_be32(path, 20);
    const uint64_t disk = file_be64(path, 24);
    uint64_t file_end = 0;
    {
        int fd = open(path.c_str(), O_RDONLY);
        file_end = uint64_t(lseek(fd, 0, SEEK_END));
        close(fd);
    }
    uint64_t next = (file_end + cs - 1) / cs * cs;
    std::vector<uint8_t> dir;
    std::vector<uint64_t> used;
    const uint64_t dir_off = next;
    next += cs;
    used.push_back(dir_off);
    for (const BitmapSpec& s : specs) {
        uint64_t entries = qcow2::bitmap_table_entries(disk, s.granularity_bits, 16);
        uint64_t table_off = next;
        next += (entries * 8 + cs - 1) / cs * cs;
        for (uint64_t c = table_off; c < next; c += cs) {
            used.push_back(c);
        }
        std::vector<uint8_t> zeroes(next - table_off, 0);
        patch_file(path, table_off, zeroes.data(), zeroes.size());
        size_t at = dir.size();
        dir.resize(at + ((24 + s.name.size() + 7) & ~size_t(7)), 0);
        store_be64(&dir[at], table_off);
        store_be32(&dir[at + 8], uint32_t(entries));
        store_be32(&dir[at + 12], s.flags);
        dir[at + 16] = 1;
        dir[at + 17] = s.granularity_bits;
        store_be16(&dir[at + 18], uint16_t(s.name.size()));
        memcpy(&dir[at + 24], s.name.data(), s.name.size());
    }
    std::vector<uint8_t> dir_cluster(cs, 0);
    memcpy(dir_cluster.data(), dir.data(), dir.size());
    patch_file(path, dir_off, dir_cluster.data(), cs);
    // Refcounts: 16-bit entries in the first refcount block.
    uint64_t refblock = file_be64(path, file_be64(path, 48)) & ~0x1ffULL;
    for (uint64_t c : used) {
        uint8_t one[2] = {0, 1};
        patch_file(path, refblock + (c / cs) * 2, one, 2);
    }
    // The extension, where the end marker was, and a new end marker.
    uint64_t end_marker = 0;
    REQUIRE(find_extension(path, qcow2::EXT_BITMAPS, &end_marker) == 0);
    uint8_t ext[8 + 24 + 8] = {};
    store_be32(ext, qcow2::EXT_BITMAPS);
    store_be32(ext + 4, 24);
    store_be32(ext + 8, uint32_t(specs.size()));
    store_be64(ext + 16, dir.size());
    store_be64(ext + 24, dir_off);
    patch_file(path, end_marker, ext, sizeof(ext));
    uint8_t autoclear;
    read_file(path, 95, &autoclear, 1);
    autoclear |= 1;
    patch_file(path, 95, &autoclear, 1);
}

struct DirEntry {
    uint64_t table_offset;
    uint32_t table_size;
    uint32_t flags;
};

// The directory as it is on disk now.
std::vector<DirEntry> read_directory(const std::string& path)
{
    uint64_t ext = find_extension(path, qcow2::EXT_BITMAPS);
    REQUIRE(ext != 0);
    uint32_t count = file_be32(path, ext);
    uint64_t size = file_be64(path, ext + 8);
    uint64_t off = file_be64(path, ext + 16);
    std::vector<uint8_t> dir(size);
    read_file(path, off, dir.data(), size);
    std::vector<DirEntry> out;
    for (uint64_t pos = 0; pos < size;) {
        out.push_back({load_be64(&dir[pos]), load_be32(&dir[pos + 8]), load_be32(&dir[pos + 12])});
        pos += (24 + load_be16(&dir[pos + 18]) + 7) & ~7ULL;
    }
    REQUIRE(out.size() == count);
    return out;
}

// Bit `bit` of a bitmap, from its table and data on disk.
bool bit_set(const std::string& path, const DirEntry& e, uint64_t bit, uint64_t cs = 64 * KiB)
{
    uint64_t bits_per_cluster = cs * 8;
    uint64_t entry = file_be64(path, e.table_offset + (bit / bits_per_cluster) * 8);
    uint64_t data = entry & qcow2::kBitmapTableOffsetMask;
    if (!data) {
        return entry & qcow2::kBitmapTableAllOnes;
    }
    uint8_t byte;
    read_file(path, data + (bit % bits_per_cluster) / 8, &byte, 1);
    return byte & (1u << (bit % 8));
}

BdrvCheckResult check(AioContext& ctx, const std::string& path)
{
    Error err;
    auto blk = open_rw(ctx, path, err, "", 0);
    REQUIRE(blk);
    BdrvCheckResult r;
    REQUIRE(run_sync(ctx, blk->bs()->drv_check(r, 0)) == 0);
    return r;
}

}  // namespace

TEST_CASE("qcow2 measure: QEMU 7.2's numbers", "[qcow2][measure]")
{
    using qcow2::fully_allocated_bytes;
    // qemu-img measure --size 1G -O qcow2 [-o ...]: fully allocated size.
    REQUIRE(fully_allocated_bytes(1 * GiB, 64 * KiB, 4, false) == 1074135040);
    REQUIRE(fully_allocated_bytes(1 * GiB, 512, 4, false) == 1095127040);
    REQUIRE(fully_allocated_bytes(1 * GiB, 2 * MiB, 0, false) == 1084227584);
    REQUIRE(fully_allocated_bytes(1 * GiB, 64 * KiB, 4, true) == 1074266112);
    REQUIRE(fully_allocated_bytes(1 * GiB, 512, 6, false) == 1108370944);
    REQUIRE(fully_allocated_bytes(1000, 64 * KiB, 4, false) == 393216);
    REQUIRE(fully_allocated_bytes(0, 64 * KiB, 4, false) == 196608);
    REQUIRE(fully_allocated_bytes(100 * TiB, 64 * KiB, 4, false) == 109967942680576ULL);
    REQUIRE(fully_allocated_bytes(1 * PiB, 64 * KiB, 4, false) == 1126071731945472ULL);
    // The refcount structure counts itself: one block and one table
    // cluster for a small image, more as blocks fill.
    REQUIRE(qcow2::refcount_metadata_bytes(4, 64 * KiB, 4) == 2 * 64 * KiB);
    REQUIRE(qcow2::refcount_metadata_bytes(32767, 64 * KiB, 4) == 3 * 64 * KiB);
}

TEST_CASE("qcow2 bitmaps: the extension and directory are checked as QEMU does", "[qcow2][bitmaps]")
{
    using namespace qcow2;
    Error err;
    BitmapsExtension ext;
    std::vector<uint8_t> raw(24, 0);
    store_be32(raw.data(), 1);
    store_be64(raw.data() + 8, 32);
    store_be64(raw.data() + 16, 0x30000);
    REQUIRE(parse_bitmaps_extension(raw, 16, 0x40000, ext, err));
    REQUIRE(ext.nb_bitmaps == 1);
    REQUIRE(ext.dir_offset == 0x30000);
    std::vector<uint8_t> short_ext(16, 0);
    REQUIRE_FALSE(parse_bitmaps_extension(short_ext, 16, 0x40000, ext, err));
    REQUIRE(err.message == "bitmaps_ext: Invalid extension length");
    store_be64(raw.data() + 16, 0x30100);
    REQUIRE_FALSE(parse_bitmaps_extension(raw, 16, 0x40000, ext, err));
    REQUIRE(err.message == "bitmaps_ext: invalid bitmap directory offset");
    store_be64(raw.data() + 16, 0x50000);
    REQUIRE_FALSE(parse_bitmaps_extension(raw, 16, 0x40000, ext, err));
    store_be32(raw.data(), 0);
    REQUIRE_FALSE(parse_bitmaps_extension(raw, 16, 0x40000, ext, err));
    REQUIRE(err.message == "found bitmaps extension with zero bitmaps");

    // One bitmap "b" of a 64 MiB disk, 64 KiB granularity: one table entry.
    std::vector<uint8_t> dir(32, 0);
    store_be64(dir.data(), 0x40000);
    store_be32(dir.data() + 8, 1);
    store_be32(dir.data() + 12, kBitmapFlagAuto);
    dir[16] = 1;
    dir[17] = 16;
    store_be16(dir.data() + 18, 1);
    dir[24] = 'b';
    std::vector<BitmapEntry> out;
    REQUIRE(parse_bitmap_directory(dir.data(), dir.size(), 1, 16, 64 * MiB, out, err));
    REQUIRE(out.size() == 1);
    REQUIRE(out[0].name == "b");
    REQUIRE_FALSE(parse_bitmap_directory(dir.data(), dir.size(), 2, 16, 64 * MiB, out, err));
    REQUIRE(err.message == "Less bitmaps found than specified in header extension");
    REQUIRE_FALSE(parse_bitmap_directory(dir.data(), 20, 1, 16, 64 * MiB, out, err));
    REQUIRE(err.message == "Broken bitmap directory");
    // Too small a table for the disk: only a bitmap in use may be so.
    REQUIRE_FALSE(parse_bitmap_directory(dir.data(), dir.size(), 1, 16, 64 * TiB, out, err));
    REQUIRE(err.message == "Bitmap 'b' doesn't satisfy the constraints");
    store_be32(dir.data() + 12, kBitmapFlagInUse);
    REQUIRE(parse_bitmap_directory(dir.data(), dir.size(), 1, 16, 64 * TiB, out, err));
    store_be32(dir.data() + 12, 4);  // a reserved flag
    REQUIRE_FALSE(parse_bitmap_directory(dir.data(), dir.size(), 1, 16, 64 * MiB, out, err));
    store_be32(dir.data() + 12, 0);
    dir[17] = 8;  // granularity below 512 bytes
    REQUIRE_FALSE(parse_bitmap_directory(dir.data(), dir.size(), 1, 16, 64 * MiB, out, err));
    dir[17] = 16;
    store_be32(dir.data() + 20, 8);  // extra data
    REQUIRE_FALSE(parse_bitmap_directory(dir.data(), dir.size(), 1, 16, 64 * MiB, out, err));

    // Table entries: all zeroes, all ones, or an aligned cluster in the file.
    REQUIRE(bitmap_table_entry_valid(0, 16, 1 * MiB));
    REQUIRE(bitmap_table_entry_valid(1, 16, 1 * MiB));
    REQUIRE(bitmap_table_entry_valid(0x10000, 16, 1 * MiB));
    REQUIRE_FALSE(bitmap_table_entry_valid(0x10001, 16, 1 * MiB));
    REQUIRE_FALSE(bitmap_table_entry_valid(0x10200, 16, 1 * MiB));
    REQUIRE_FALSE(bitmap_table_entry_valid(0x200000, 16, 1 * MiB));
    REQUIRE_FALSE(bitmap_table_entry_valid(2, 16, 1 * MiB));
    REQUIRE(bitmap_table_entries(64 * MiB, 16, 16) == 1);
    REQUIRE(bitmap_table_entries(64 * MiB, 9, 16) == 1);
    REQUIRE(bitmap_table_entries(64 * MiB, 9, 9) == 32);
    REQUIRE(bitmap_table_entries(1, 9, 16) == 1);
}

TEST_CASE("qcow2 bitmaps: writes mark enabled bitmaps in use, close stores them",
          "[qcow2][bitmaps]")
{
    AioContext ctx;
    TempImage img;
    Error err;
    REQUIRE(create(ctx, img.path, "size=64M", err) == 0);
    add_bitmaps(img.path, {{"enabled", 16, qcow2::kBitmapFlagAuto},
                           {"fine", 9, qcow2::kBitmapFlagAuto},
                           {"disabled", 16, 0}});
    auto before = read_directory(img.path);

    // info lists them as QEMU does.
    {
        auto blk = open_rw(ctx, img.path, err, "", 0);
        REQUIRE(blk);
        nlohmann::ordered_json info;
        blk->bs()->drv_get_specific_info(info);
        auto& list = info["data"]["bitmaps"];
        REQUIRE(list.size() == 3);
        REQUIRE(list[0]["name"] == "enabled");
        REQUIRE(list[1]["granularity"] == 512);
        REQUIRE(list[0]["flags"] == nlohmann::ordered_json::array({"auto"}));
        REQUIRE(list[2]["flags"].empty());
    }
    // Opening read-write without writing changes nothing.
    {
        auto blk = open_rw(ctx, img.path, err);
        REQUIRE(blk);
    }
    REQUIRE(read_directory(img.path)[0].table_offset == before[0].table_offset);

    {
        auto blk = open_rw(ctx, img.path, err, "discard=unmap");
        REQUIRE(blk);
        auto data = pattern(4096, 1);
        REQUIRE(blk->pwrite(1 * MiB + 100, 4096, data.data()) == 0);
        // While the image is open, the enabled bitmaps say they are stale.
        auto during = read_directory(img.path);
        REQUIRE(during[0].flags == (qcow2::kBitmapFlagAuto | qcow2::kBitmapFlagInUse));
        REQUIRE(during[1].flags == (qcow2::kBitmapFlagAuto | qcow2::kBitmapFlagInUse));
        REQUIRE(during[2].flags == 0);
        REQUIRE(run_sync(ctx, blk->co_pwrite_zeroes(8 * MiB, 128 * KiB)) == 0);
        REQUIRE(run_sync(ctx, blk->co_pdiscard(16 * MiB, 64 * KiB)) == 0);
    }
    auto after = read_directory(img.path);
    REQUIRE(after[0].flags == qcow2::kBitmapFlagAuto);
    REQUIRE(after[1].flags == qcow2::kBitmapFlagAuto);
    REQUIRE(after[2].flags == 0);
    REQUIRE(after[2].table_offset == before[2].table_offset);  // untouched
    // 64 KiB granules: 1 MiB + 100 (4 KiB) is granule 16, the zeroes 128
    // and 129, the discard 256.
    for (uint64_t bit = 0; bit < 1024; bit++) {
        bool expected = bit == 16 || bit == 128 || bit == 129 || bit == 256;
        INFO("bit " << bit);
        REQUIRE(bit_set(img.path, after[0], bit) == expected);
    }
    // 512-byte granules: the write spans granules 2048 to 2056.
    REQUIRE_FALSE(bit_set(img.path, after[1], 2047));
    REQUIRE(bit_set(img.path, after[1], 2048));
    REQUIRE(bit_set(img.path, after[1], 2056));
    REQUIRE_FALSE(bit_set(img.path, after[1], 2057));
    REQUIRE(bit_set(img.path, after[1], 8 * MiB / 512 + 255));
    REQUIRE_FALSE(bit_set(img.path, after[0], 1023));
    BdrvCheckResult r = check(ctx, img.path);
    REQUIRE(r.corruptions == 0);
    REQUIRE(r.leaks == 0);

    // More writes add to the stored bits.
    {
        auto blk = open_rw(ctx, img.path, err);
        REQUIRE(blk);
        auto data = pattern(512, 2);
        REQUIRE(blk->pwrite(63 * MiB, 512, data.data()) == 0);
    }
    after = read_directory(img.path);
    REQUIRE(bit_set(img.path, after[0], 16));
    REQUIRE(bit_set(img.path, after[0], 1008));
    r = check(ctx, img.path);
    REQUIRE(r.corruptions == 0);
    REQUIRE(r.leaks == 0);
}

TEST_CASE("qcow2 bitmaps: a resize resizes every bitmap", "[qcow2][bitmaps]")
{
    AioContext ctx;
    TempImage img;
    Error err;
    REQUIRE(create(ctx, img.path, "size=64M", err) == 0);
    add_bitmaps(img.path, {{"enabled", 9, qcow2::kBitmapFlagAuto}, {"disabled", 16, 0}});
    {
        auto blk = open_rw(ctx, img.path, err, "", BDRV_O_RDWR | BDRV_O_RESIZE);
        REQUIRE(blk);
        auto data = pattern(512, 3);
        REQUIRE(blk->pwrite(60 * MiB, 512, data.data()) == 0);
        REQUIRE(run_sync(ctx, blk->co_truncate(300 * MiB, true, PreallocMode::Off, 0, err)) == 0);
        REQUIRE(blk->pwrite(200 * MiB, 512, data.data()) == 0);
    }
    auto dir = read_directory(img.path);
    REQUIRE(dir[0].table_size == qcow2::bitmap_table_entries(300 * MiB, 9, 16));
    REQUIRE(dir[1].table_size == qcow2::bitmap_table_entries(300 * MiB, 16, 16));
    REQUIRE(dir[0].flags == qcow2::kBitmapFlagAuto);
    REQUIRE(dir[1].flags == 0);
    REQUIRE(bit_set(img.path, dir[0], 60 * MiB / 512));
    REQUIRE(bit_set(img.path, dir[0], 200 * MiB / 512));
    {
        auto blk = open_rw(ctx, img.path, err, "", BDRV_O_RDWR | BDRV_O_RESIZE);
        REQUIRE(blk);
        REQUIRE(run_sync(ctx, blk->co_truncate(100 * MiB, true, PreallocMode::Off, 0, err)) == 0);
    }
    dir = read_directory(img.path);
    REQUIRE(dir[0].table_size == qcow2::bitmap_table_entries(100 * MiB, 9, 16));
    REQUIRE(bit_set(img.path, dir[0], 60 * MiB / 512));
    BdrvCheckResult r = check(ctx, img.path);
    REQUIRE(r.corruptions == 0);
    REQUIRE(r.leaks == 0);
}

TEST_CASE("qcow2 bitmaps: a bitmap left in use stays so and forbids resizing", "[qcow2][bitmaps]")
{
    AioContext ctx;
    TempImage img;
    Error err;
    REQUIRE(create(ctx, img.path, "size=16M", err) == 0);
    add_bitmaps(img.path, {{"stale", 16, qcow2::kBitmapFlagAuto | qcow2::kBitmapFlagInUse}});
    auto before = read_directory(img.path);
    {
        auto blk = open_rw(ctx, img.path, err, "", BDRV_O_RDWR | BDRV_O_RESIZE);
        REQUIRE(blk);
        auto data = pattern(4096, 4);
        REQUIRE(blk->pwrite(0, 4096, data.data()) == 0);
        REQUIRE(run_sync(ctx, blk->co_truncate(32 * MiB, true, PreallocMode::Off, 0, err)) < 0);
        REQUIRE(err.message == "Bitmap 'stale' is inconsistent and cannot be used");
    }
    auto after = read_directory(img.path);
    REQUIRE(after[0].flags == before[0].flags);
    REQUIRE(after[0].table_offset == before[0].table_offset);
}

TEST_CASE("qcow2 amend: refcount widths and compat levels keep data and refcounts",
          "[qcow2][amend]")
{
    AioContext ctx;
    TempImage img;
    Error err;
    REQUIRE(create(ctx, img.path, "size=16M,cluster_size=4k", err) == 0);
    std::vector<uint8_t> model(16 * MiB, 0);
    {
        auto blk = open_rw(ctx, img.path, err);
        REQUIRE(blk);
        for (int i = 0; i < 40; i++) {
            uint64_t off = uint64_t(i) * 397 * KiB;
            auto data = pattern(9000, uint32_t(i));
            REQUIRE(blk->pwrite(off, data.size(), data.data()) == 0);
            std::copy(data.begin(), data.end(), model.begin() + off);
        }
        REQUIRE(run_sync(ctx, blk->co_pwrite_zeroes(4 * MiB, 64 * KiB)) == 0);
        std::fill(model.begin() + 4 * MiB, model.begin() + 4 * MiB + 64 * KiB, 0);
    }
    for (const char* opts : {"refcount_bits=1", "refcount_bits=64", "refcount_bits=8",
                             "compat=0.10,refcount_bits=16", "compat=1.1,lazy_refcounts=on",
                             "lazy_refcounts=off,refcount_bits=2"}) {
        INFO(opts);
        {
            auto blk = open_rw(ctx, img.path, err);
            REQUIRE(blk);
            QDict o;
            REQUIRE(keyval_parse(o, opts, nullptr, err));
            int64_t last_done = -1, last_total = 0;
            int ret = run_sync(ctx, blk->bs()->drv_amend(o, [&](int64_t done, int64_t total) {
                last_done = done;
                last_total = total;
            }, false, err));
            INFO(err.message);
            REQUIRE(ret == 0);
            if (last_done >= 0) {
                REQUIRE(last_done == last_total);  // the work ends at 100%
            }
        }
        BdrvCheckResult r = check(ctx, img.path);
        REQUIRE(r.corruptions == 0);
        REQUIRE(r.leaks == 0);
        auto blk = open_rw(ctx, img.path, err, "", 0);
        REQUIRE(blk);
        std::vector<uint8_t> back(model.size());
        REQUIRE(blk->pread(0, back.size(), back.data()) == 0);
        REQUIRE(back == model);
    }
    // What cannot be done is refused with QEMU's messages.
    auto blk = open_rw(ctx, img.path, err);
    REQUIRE(blk);
    QDict o;
    REQUIRE(keyval_parse(o, "compat=0.10", nullptr, err));
    REQUIRE(run_sync(ctx, blk->bs()->drv_amend(o, [](int64_t, int64_t) {}, false, err)) < 0);
    REQUIRE(err.message == "compat=0.10 requires refcount_bits=16");
}
