// qcow2 consistency check and repair (block/qcow2/check.cc): images are
// corrupted on purpose by patching their files, then checked, repaired and
// read back.  That the output matches QEMU's is tested by the qemu-iotests.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "block/block-backend.h"
#include "qemu/bswap.h"
#include "temp-dir.h"
#include "qemu/units.h"
#include "qcow2-test-util.h"

using namespace qemu;

namespace {

// The layout of a fresh 64 MiB image (64 KiB clusters) after 1 MiB is
// written at guest offset 0, as QEMU lays it out too: host clusters 0-4 are
// the header, refcount table, refcount block, L1 and L2 table; guest
// cluster k is host cluster 5 + k.
constexpr uint64_t kCluster = 64 * KiB;
constexpr uint64_t kRefcountTable = 1 * kCluster;
constexpr uint64_t kRefcountBlock = 2 * kCluster;
constexpr uint64_t kL1Table = 3 * kCluster;
constexpr uint64_t kL2Table = 4 * kCluster;
constexpr uint64_t kFirstDataCluster = 5;
constexpr uint64_t kDataBytes = 1 * MiB;
constexpr uint64_t kDataClusters = kDataBytes / kCluster;
constexpr uint64_t kCopied = 1ULL << 63;

std::vector<uint8_t> pattern(size_t n, uint32_t seed)
{
    std::vector<uint8_t> v(n);
    std::mt19937 rng(seed);
    for (auto& b : v) {
        b = uint8_t(rng());
    }
    return v;
}

std::unique_ptr<BlockBackend> open_image(AioContext& ctx, const std::string& path, int flags,
                                         Error& err)
{
    bdrv_init();
    QDict o;
    o.set("driver", "qcow2");
    return BlockBackend::open(path, o, flags, ctx, err);
}

void create_image(const std::string& path, const std::string& opts)
{
    bdrv_init();
    AioContext ctx;
    Error err;
    QDict o;
    REQUIRE(keyval_parse(o, opts, nullptr, err));
    REQUIRE(run_sync(ctx, bdrv_co_create(*bdrv_find_driver("qcow2"), path, o, ctx, err)) == 0);
}

void write_image(const std::string& path, uint64_t offset, const std::vector<uint8_t>& data,
                 unsigned flags = 0)
{
    AioContext ctx;
    Error err;
    auto blk = open_image(ctx, path, BDRV_O_RDWR, err);
    INFO(err.message);
    REQUIRE(blk);
    REQUIRE(blk->pwrite(offset, data.size(), data.data(), flags) == 0);
}

std::vector<uint8_t> read_image(const std::string& path, uint64_t offset, uint64_t bytes)
{
    AioContext ctx;
    Error err;
    auto blk = open_image(ctx, path, 0, err);
    INFO(err.message);
    REQUIRE(blk);
    std::vector<uint8_t> data(bytes);
    REQUIRE(blk->pread(offset, bytes, data.data()) == 0);
    return data;
}

// Raw access to the image file, to corrupt it and to look at the result.
void poke(const std::string& path, uint64_t offset, const void* data, size_t len)
{
    int fd = open(path.c_str(), O_WRONLY);
    REQUIRE(fd >= 0);
    REQUIRE(pwrite(fd, data, len, off_t(offset)) == ssize_t(len));
    close(fd);
}

void peek(const std::string& path, uint64_t offset, void* data, size_t len)
{
    int fd = open(path.c_str(), O_RDONLY);
    REQUIRE(fd >= 0);
    REQUIRE(pread(fd, data, len, off_t(offset)) == ssize_t(len));
    close(fd);
}

using qcow2_test::get_be64;
using qcow2_test::set_be64;

// 16-bit refcounts, the default width.
uint16_t get_refcount(const std::string& path, uint64_t cluster)
{
    uint8_t b[2];
    peek(path, kRefcountBlock + cluster * 2, b, 2);
    return load_be16(b);
}

void set_refcount(const std::string& path, uint64_t cluster, uint16_t value)
{
    uint8_t b[2];
    store_be16(b, value);
    poke(path, kRefcountBlock + cluster * 2, b, 2);
}

uint64_t l2_entry(const std::string& path, uint64_t index)
{
    return get_be64(path, kL2Table + index * 8);
}

void set_l2_entry(const std::string& path, uint64_t index, uint64_t value)
{
    set_be64(path, kL2Table + index * 8, value);
}

uint64_t file_size(const std::string& path)
{
    return std::filesystem::file_size(path);
}

// Redirects stderr, where the check reports what it finds, into a string.
class StderrCapture {
public:
    StderrCapture()
    {
        fflush(stderr);
        saved_ = dup(STDERR_FILENO);
        file_ = tmpfile();
        REQUIRE(file_);
        dup2(fileno(file_), STDERR_FILENO);
    }
    ~StderrCapture() { finish(); }
    std::string finish()
    {
        if (!file_) {
            return text_;
        }
        fflush(stderr);
        dup2(saved_, STDERR_FILENO);
        close(saved_);
        rewind(file_);
        char buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof(buf), file_)) > 0) {
            text_.append(buf, n);
        }
        fclose(file_);
        file_ = nullptr;
        return text_;
    }

private:
    int saved_ = -1;
    FILE* file_ = nullptr;
    std::string text_;
};

struct CheckRun {
    int ret = 0;
    BdrvCheckResult result;
    std::string messages;  // what the check printed on stderr
};

// Opens the image as qemu-img check does (read-write only to repair) and
// checks it.
CheckRun check_image(const std::string& path, unsigned fix = 0)
{
    AioContext ctx;
    Error err;
    auto blk = open_image(ctx, path, BDRV_O_CHECK | (fix ? BDRV_O_RDWR : 0), err);
    INFO(err.message);
    REQUIRE(blk);
    CheckRun run;
    StderrCapture capture;
    run.ret = run_sync(ctx, blk->bs()->drv_check(run.result, fix));
    run.messages = capture.finish();
    return run;
}

bool has_line(const std::string& text, const std::string& line)
{
    return ("\n" + text).find("\n" + line + "\n") != std::string::npos;
}

void require_clean(const std::string& path)
{
    CheckRun run = check_image(path);
    INFO(run.messages);
    REQUIRE(run.ret == 0);
    REQUIRE(run.result.corruptions == 0);
    REQUIRE(run.result.leaks == 0);
    REQUIRE(run.result.check_errors == 0);
}

// The image every test starts from: 1 MiB of known data at offset 0.
struct TestImage {
    TempDir dir{"/var/tmp/test-qcow2-check-"};
    std::string path = dir.file("t.qcow2");
    std::vector<uint8_t> data = pattern(kDataBytes, 1);

    explicit TestImage(const std::string& opts = "size=64M")
    {
        create_image(path, opts);
        write_image(path, 0, data);
        // The layout the tests patch.
        REQUIRE(get_be64(path, kL1Table) == (kL2Table | kCopied));
        REQUIRE(l2_entry(path, 0) == ((kFirstDataCluster * kCluster) | kCopied));
    }
    bool data_intact() const { return read_image(path, 0, kDataBytes) == data; }
};

}  // namespace

TEST_CASE("qcow2 check: a clean image, with QEMU's statistics", "[qcow2][check]")
{
    TestImage img;
    CheckRun run = check_image(img.path);
    CHECK(run.messages.empty());
    REQUIRE(run.ret == 0);
    CHECK(run.result.corruptions == 0);
    CHECK(run.result.leaks == 0);
    CHECK(run.result.check_errors == 0);
    CHECK(run.result.total_clusters == 1024);
    CHECK(run.result.allocated_clusters == kDataClusters);
    CHECK(run.result.fragmented_clusters == 0);
    CHECK(run.result.compressed_clusters == 0);
    CHECK(run.result.image_end_offset == (kFirstDataCluster + kDataClusters) * kCluster);
}

TEST_CASE("qcow2 check: a leaked cluster is found and freed", "[qcow2][check]")
{
    TestImage img;
    // A cluster past the data that nothing references, with refcount 1.
    uint64_t leaked = kFirstDataCluster + kDataClusters;
    std::vector<uint8_t> junk(kCluster, 0x5a);
    poke(img.path, leaked * kCluster, junk.data(), junk.size());
    set_refcount(img.path, leaked, 1);

    CheckRun run = check_image(img.path);
    CHECK(run.messages == "Leaked cluster 21 refcount=1 reference=0\n");
    REQUIRE(run.ret == 0);
    CHECK(run.result.leaks == 1);
    CHECK(run.result.corruptions == 0);
    CHECK(run.result.image_end_offset == (leaked + 1) * kCluster);

    run = check_image(img.path, BDRV_FIX_LEAKS);
    CHECK(has_line(run.messages, "Repairing cluster 21 refcount=1 reference=0"));
    REQUIRE(run.ret == 0);
    CHECK(run.result.leaks_fixed == 1);
    CHECK(run.result.leaks == 0);
    CHECK(get_refcount(img.path, leaked) == 0);
    // Its space is given back: it reads as zeroes, as after QEMU's discard.
    std::vector<uint8_t> back(kCluster);
    peek(img.path, leaked * kCluster, back.data(), back.size());
    CHECK(back == std::vector<uint8_t>(kCluster, 0));
    require_clean(img.path);
    CHECK(img.data_intact());
}

TEST_CASE("qcow2 check: a refcount too high is a leak and breaks COPIED", "[qcow2][check]")
{
    TestImage img;
    set_refcount(img.path, kFirstDataCluster + 1, 2);

    CheckRun run = check_image(img.path);
    CHECK(has_line(run.messages, "Leaked cluster 6 refcount=2 reference=1"));
    CHECK(has_line(run.messages,
                   "ERROR OFLAG_COPIED data cluster: l2_entry=8000000000060000 refcount=2"));
    CHECK(run.result.leaks == 1);
    CHECK(run.result.corruptions == 1);

    // Fixing the leak makes the refcount agree with the flag again.
    run = check_image(img.path, BDRV_FIX_LEAKS);
    REQUIRE(run.ret == 0);
    CHECK(run.result.leaks_fixed == 1);
    CHECK(run.result.corruptions == 0);
    CHECK(get_refcount(img.path, kFirstDataCluster + 1) == 1);
    require_clean(img.path);
    CHECK(img.data_intact());
}

TEST_CASE("qcow2 check: a refcount too low is raised by -r all only", "[qcow2][check]")
{
    TestImage img;
    // Guest clusters 3 and 4 both point to host cluster 9: cluster 8 is
    // leaked, cluster 9 has refcount 1 for two references.
    set_l2_entry(img.path, 3, (kFirstDataCluster + 4) * kCluster | kCopied);

    CheckRun run = check_image(img.path, BDRV_FIX_LEAKS);
    CHECK(has_line(run.messages, "Repairing cluster 8 refcount=1 reference=0"));
    CHECK(has_line(run.messages, "ERROR cluster 9 refcount=1 reference=2"));
    REQUIRE(run.ret == 0);
    CHECK(run.result.leaks_fixed == 1);
    CHECK(run.result.corruptions == 1);
    CHECK(get_refcount(img.path, 9) == 1);

    run = check_image(img.path, BDRV_FIX_LEAKS | BDRV_FIX_ERRORS);
    CHECK(has_line(run.messages, "Repairing cluster 9 refcount=1 reference=2"));
    CHECK(has_line(run.messages,
                   "Repairing OFLAG_COPIED data cluster: l2_entry=8000000000090000 refcount=2"));
    REQUIRE(run.ret == 0);
    CHECK(run.result.corruptions == 0);
    CHECK(run.result.corruptions_fixed == 3);
    CHECK(get_refcount(img.path, 9) == 2);
    CHECK(l2_entry(img.path, 3) == (kFirstDataCluster + 4) * kCluster);
    CHECK(l2_entry(img.path, 4) == (kFirstDataCluster + 4) * kCluster);
    require_clean(img.path);

    // The shared cluster is copied on write now: writing through one
    // mapping leaves the other alone.  (The other entry keeps COPIED clear
    // although its cluster is no longer shared, as in QEMU: the next check
    // says so, and nothing else.)
    std::vector<uint8_t> fresh(kCluster, 0x77);
    write_image(img.path, 3 * kCluster, fresh);
    CHECK(read_image(img.path, 3 * kCluster, kCluster) == fresh);
    auto cluster4 = read_image(img.path, 4 * kCluster, kCluster);
    CHECK(std::equal(cluster4.begin(), cluster4.end(), img.data.begin() + 4 * kCluster));
    run = check_image(img.path);
    CHECK(run.messages == "ERROR OFLAG_COPIED data cluster: l2_entry=90000 refcount=1\n");
    CHECK(run.result.leaks == 0);
}

TEST_CASE("qcow2 check: a referenced cluster with refcount 0 rebuilds the refcounts",
          "[qcow2][check]")
{
    TestImage img;
    set_refcount(img.path, kFirstDataCluster + 1, 0);

    CheckRun run = check_image(img.path);
    CHECK(has_line(run.messages, "ERROR cluster 6 refcount=0 reference=1"));
    CHECK(run.result.corruptions == 2);  // with the COPIED flag

    // Leaks only: the refcount block cannot be trusted, nothing is done.
    run = check_image(img.path, BDRV_FIX_LEAKS);
    CHECK(has_line(run.messages, "ERROR need to rebuild refcount structures"));
    CHECK(run.ret == -EIO);
    CHECK(run.result.check_errors == 1);
    CHECK(get_refcount(img.path, kFirstDataCluster + 1) == 0);

    // A new structure past the end of the file, the old one freed.
    uint64_t old_end = file_size(img.path);
    run = check_image(img.path, BDRV_FIX_LEAKS | BDRV_FIX_ERRORS);
    CHECK(has_line(run.messages, "Rebuilding refcount structure"));
    CHECK(has_line(run.messages, "Repairing cluster 1 refcount=1 reference=0"));
    CHECK(has_line(run.messages, "Repairing cluster 2 refcount=1 reference=0"));
    REQUIRE(run.ret == 0);
    CHECK(run.result.corruptions == 0);
    CHECK(run.result.corruptions_fixed == 1);
    CHECK(run.result.image_end_offset == old_end + 2 * kCluster);
    CHECK(get_be64(img.path, 48) == old_end + kCluster);  // refcount_table_offset
    require_clean(img.path);
    CHECK(img.data_intact());
}

TEST_CASE("qcow2 check: after a rebuild the open image keeps allocating correctly",
          "[qcow2][check]")
{
    TestImage img;
    set_refcount(img.path, kRefcountBlock / kCluster, 0);
    auto more = pattern(3 * kCluster + 100, 2);
    {
        AioContext ctx;
        Error err;
        auto blk = open_image(ctx, img.path, BDRV_O_CHECK | BDRV_O_RDWR, err);
        REQUIRE(blk);
        BdrvCheckResult result;
        StderrCapture capture;
        REQUIRE(run_sync(ctx, blk->bs()->drv_check(result, BDRV_FIX_LEAKS | BDRV_FIX_ERRORS)) == 0);
        std::string messages = capture.finish();
        CHECK(has_line(messages, "Rebuilding refcount structure"));
        CHECK(result.corruptions == 0);
        // The freed old refcount clusters and new L2 tables get reused;
        // nothing may land on the new refcount structure.
        REQUIRE(blk->pwrite(40 * MiB, more.size(), more.data()) == 0);
        REQUIRE(blk->pwrite(2 * MiB, more.size(), more.data()) == 0);
        std::vector<uint8_t> back(more.size());
        REQUIRE(blk->pread(40 * MiB, back.size(), back.data()) == 0);
        CHECK(back == more);
    }
    require_clean(img.path);
    CHECK(img.data_intact());
    CHECK(read_image(img.path, 40 * MiB, more.size()) == more);
    CHECK(read_image(img.path, 2 * MiB, more.size()) == more);
}

TEST_CASE("qcow2 check: a broken refcount table entry is rebuilt around", "[qcow2][check]")
{
    TestImage img;
    set_be64(img.path, kRefcountTable, kRefcountBlock | 0x210);  // reserved bits

    CheckRun run = check_image(img.path);
    CHECK(has_line(run.messages, "ERROR refcount table entry 0 has reserved bits set"));
    CHECK(has_line(run.messages, "Can't get refcount for cluster 0: Input/output error"));
    CHECK(run.result.corruptions == 1);
    CHECK(run.result.check_errors == 21);

    // QEMU 7.2 gives up here; the rebuild may reuse the cluster of the
    // broken block, since nothing valid references it.
    run = check_image(img.path, BDRV_FIX_LEAKS | BDRV_FIX_ERRORS);
    CHECK(has_line(run.messages, "Rebuilding refcount structure"));
    REQUIRE(run.ret == 0);
    CHECK(run.result.corruptions == 0);
    CHECK(run.result.check_errors == 21);  // the refcounts unreadable before
    require_clean(img.path);
    CHECK(img.data_intact());
    write_image(img.path, 8 * MiB, img.data);
    require_clean(img.path);
}

TEST_CASE("qcow2 check: cleared COPIED flags are set again", "[qcow2][check]")
{
    TestImage img;
    set_be64(img.path, kL1Table, kL2Table);
    set_l2_entry(img.path, 2, (kFirstDataCluster + 2) * kCluster);

    CheckRun run = check_image(img.path);
    CHECK(has_line(run.messages, "ERROR OFLAG_COPIED L2 cluster: l1_index=0 l1_entry=40000 refcount=1"));
    CHECK(has_line(run.messages, "ERROR OFLAG_COPIED data cluster: l2_entry=70000 refcount=1"));
    CHECK(run.result.corruptions == 2);

    // Nothing else is wrong, so even -r leaks may repair them.
    run = check_image(img.path, BDRV_FIX_LEAKS);
    REQUIRE(run.ret == 0);
    CHECK(run.result.corruptions == 0);
    CHECK(run.result.corruptions_fixed == 2);
    CHECK(get_be64(img.path, kL1Table) == (kL2Table | kCopied));
    CHECK(l2_entry(img.path, 2) == ((kFirstDataCluster + 2) * kCluster | kCopied));
    require_clean(img.path);

    // Rewriting the cluster happens in place again.
    uint64_t size = file_size(img.path);
    std::vector<uint8_t> fresh(kCluster, 0x42);
    write_image(img.path, 2 * kCluster, fresh);
    CHECK(file_size(img.path) == size);
    CHECK(l2_entry(img.path, 2) == ((kFirstDataCluster + 2) * kCluster | kCopied));
    CHECK(read_image(img.path, 2 * kCluster, kCluster) == fresh);
}

TEST_CASE("qcow2 check: bad L2 entries are reported, and no repair loses data",
          "[qcow2][check]")
{
    TestImage img;
    set_l2_entry(img.path, 3, 0x7f0000 | kCopied);                                 // past the end
    set_l2_entry(img.path, 5, ((kFirstDataCluster + 5) * kCluster + 0x200) | kCopied);  // unaligned
    set_l2_entry(img.path, 7, ((kFirstDataCluster + 7) * kCluster | kCopied) | 2);      // reserved bit

    CheckRun run = check_image(img.path);
    CHECK(has_line(run.messages, "ERROR: counting reference for region exceeding the end of the "
                                 "file by one cluster or more: offset 0x7f0000 size 0x10000"));
    CHECK(has_line(run.messages, "ERROR offset=a0200: Data cluster is not properly aligned; L2 "
                                 "entry corrupted."));
    CHECK(has_line(run.messages, "ERROR found l2 entry with reserved bits set: 80000000000c0002"));
    CHECK(has_line(run.messages, "Leaked cluster 8 refcount=1 reference=0"));
    CHECK(has_line(run.messages, "ERROR cluster 11 refcount=1 reference=2"));
    CHECK(run.result.leaks == 1);

    run = check_image(img.path, BDRV_FIX_LEAKS | BDRV_FIX_ERRORS);
    REQUIRE(run.ret == 0);
    // The entries themselves stay: only the refcounts follow them.
    CHECK(run.result.corruptions == 3);
    CHECK(l2_entry(img.path, 5) == ((kFirstDataCluster + 5) * kCluster + 0x200 | kCopied));
    CHECK(get_refcount(img.path, kFirstDataCluster + 6) == 2);
    auto back = read_image(img.path, 0, 3 * kCluster);
    CHECK(std::equal(back.begin(), back.end(), img.data.begin()));
    back = read_image(img.path, 8 * kCluster, 8 * kCluster);
    CHECK(std::equal(back.begin(), back.end(), img.data.begin() + 8 * kCluster));
}

TEST_CASE("qcow2 check: an unaligned preallocated zero cluster becomes a plain one",
          "[qcow2][check]")
{
    TestImage img;
    set_l2_entry(img.path, 3, ((kFirstDataCluster + 3) * kCluster + 0x200) | kCopied | 1);

    CheckRun run = check_image(img.path);
    CHECK(has_line(run.messages, "ERROR offset=80200: Preallocated cluster is not properly "
                                 "aligned; L2 entry corrupted."));

    run = check_image(img.path, BDRV_FIX_LEAKS | BDRV_FIX_ERRORS);
    CHECK(has_line(run.messages, "Repairing offset=80200: Preallocated cluster is not properly "
                                 "aligned; L2 entry corrupted."));
    CHECK(has_line(run.messages, "Repairing cluster 8 refcount=1 reference=0"));
    REQUIRE(run.ret == 0);
    CHECK(run.result.corruptions == 0);
    CHECK(run.result.corruptions_fixed == 1);
    CHECK(run.result.leaks_fixed == 1);
    CHECK(l2_entry(img.path, 3) == 1);
    require_clean(img.path);
    CHECK(read_image(img.path, 3 * kCluster, kCluster) == std::vector<uint8_t>(kCluster, 0));
}

TEST_CASE("qcow2 check: compressed clusters are counted by their sectors", "[qcow2][check]")
{
    TempDir dir{"/var/tmp/test-qcow2-check-"};
    std::string path = dir.file("c.qcow2");
    create_image(path, "size=64M");
    std::vector<uint8_t> text(kCluster);
    for (size_t i = 0; i < text.size(); i++) {
        text[i] = uint8_t("compressible "[i % 13]);
    }
    {
        // Three clusters packed into one host cluster.
        AioContext ctx;
        Error err;
        auto blk = open_image(ctx, path, BDRV_O_RDWR, err);
        REQUIRE(blk);
        for (uint64_t k = 0; k < 3; k++) {
            REQUIRE(blk->pwrite(k * kCluster, text.size(), text.data(), BDRV_REQ_WRITE_COMPRESSED) == 0);
        }
    }
    uint64_t entry = get_be64(path, get_be64(path, kL1Table) & ~kCopied);
    REQUIRE((entry >> 62) == 1);  // compressed, not COPIED

    CheckRun run = check_image(path);
    CHECK(run.messages.empty());
    CHECK(run.result.corruptions == 0);
    CHECK(run.result.leaks == 0);
    CHECK(run.result.allocated_clusters == 3);
    CHECK(run.result.compressed_clusters == 3);
    CHECK(run.result.fragmented_clusters == 3);

    // A refcount of 3 for the shared host cluster is right; 2 is an error.
    uint64_t host_cluster = (entry & ((1ULL << 54) - 1)) / kCluster;
    CHECK(get_refcount(path, host_cluster) == 3);
    set_refcount(path, host_cluster, 2);
    run = check_image(path, BDRV_FIX_LEAKS | BDRV_FIX_ERRORS);
    CHECK(run.result.corruptions_fixed == 1);
    CHECK(get_refcount(path, host_cluster) == 3);
    require_clean(path);
    for (uint64_t k = 0; k < 3; k++) {
        CHECK(read_image(path, k * kCluster, kCluster) == text);
    }
}

TEST_CASE("qcow2 check: narrow refcounts and small clusters", "[qcow2][check]")
{
    TempDir dir{"/var/tmp/test-qcow2-check-"};
    std::string path = dir.file("s.qcow2");
    create_image(path, "size=1M,cluster_size=512,refcount_bits=1");
    auto data = pattern(300 * KiB, 5);
    write_image(path, 0, data);
    require_clean(path);
    // Each refcount is one bit: clear the one of the first L2 table.
    uint64_t l1 = get_be64(path, 40);  // l1_table_offset
    uint64_t l2_cluster = (get_be64(path, l1) & ~kCopied) / 512;
    uint64_t refblock = get_be64(path, get_be64(path, 48));
    uint8_t byte;
    peek(path, refblock + l2_cluster / 8, &byte, 1);
    REQUIRE((byte >> (l2_cluster % 8)) & 1);
    byte = uint8_t(byte & ~(1u << (l2_cluster % 8)));
    poke(path, refblock + l2_cluster / 8, &byte, 1);

    CheckRun run = check_image(path);
    CHECK(run.result.corruptions == 2);  // the refcount and the L1 COPIED flag
    run = check_image(path, BDRV_FIX_LEAKS | BDRV_FIX_ERRORS);
    CHECK(has_line(run.messages, "Rebuilding refcount structure"));
    REQUIRE(run.ret == 0);
    CHECK(run.result.corruptions == 0);
    require_clean(path);
    CHECK(read_image(path, 0, data.size()) == data);
}

TEST_CASE("qcow2 check: a dirty image is repaired when opened read-write", "[qcow2][check][lazy]")
{
    TempDir dir{"/var/tmp/test-qcow2-check-"};
    std::string path = dir.file("l.qcow2");
    std::string crashed = dir.file("crashed.qcow2");
    create_image(path, "size=64M,lazy_refcounts=on");
    auto data = pattern(kDataBytes, 9);
    {
        AioContext ctx;
        Error err;
        auto blk = open_image(ctx, path, BDRV_O_RDWR, err);
        REQUIRE(blk);
        REQUIRE(blk->pwrite(0, data.size(), data.data()) == 0);
        REQUIRE(blk->pwrite(32 * MiB, data.size(), data.data()) == 0);
        REQUIRE(blk->flush() == 0);
        // The file as a crash now would leave it: mappings on disk, their
        // refcounts not.
        std::filesystem::copy_file(path, crashed);
    }
    uint8_t features;
    peek(crashed, 79, &features, 1);
    REQUIRE((features & 1) == 1);  // the dirty bit

    // Opened for checking, it is left as it is.
    CheckRun run = check_image(crashed);
    CHECK(run.result.corruptions > 0);
    peek(crashed, 79, &features, 1);
    CHECK((features & 1) == 1);

    {
        AioContext ctx;
        Error err;
        StderrCapture capture;
        auto blk = open_image(ctx, crashed, BDRV_O_RDWR, err);
        std::string messages = capture.finish();
        INFO(err.message);
        REQUIRE(blk);
        CHECK(has_line(messages, "Rebuilding refcount structure"));
        std::vector<uint8_t> back(data.size());
        REQUIRE(blk->pread(32 * MiB, back.size(), back.data()) == 0);
        CHECK(back == data);
    }
    peek(crashed, 79, &features, 1);
    CHECK((features & 1) == 0);
    require_clean(crashed);
    CHECK(read_image(crashed, 0, data.size()) == data);
    CHECK(read_image(crashed, 32 * MiB, data.size()) == data);
}

TEST_CASE("qcow2 check: formats without a check say so", "[qcow2][check]")
{
    TempDir dir{"/var/tmp/test-qcow2-check-"};
    std::string path = dir.file("r.raw");
    {
        AioContext ctx;
        Error err;
        QDict o;
        o.set("size", "1M");
        bdrv_init();
        REQUIRE(run_sync(ctx, bdrv_co_create(*bdrv_find_driver("raw"), path, o, ctx, err)) == 0);
    }
    AioContext ctx;
    Error err;
    QDict o;
    o.set("driver", "raw");
    auto blk = BlockBackend::open(path, o, BDRV_O_CHECK, ctx, err);
    REQUIRE(blk);
    BdrvCheckResult result;
    CHECK(run_sync(ctx, blk->bs()->drv_check(result, 0)) == -ENOTSUP);
}
