// The file and host_device protocol drivers (block/file-posix.cc).
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <linux/loop.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "block/block-backend.h"
#include "block/inline-write-policy.h"
#include "qemu/units.h"
#include "temp-dir.h"

using namespace qemu;

namespace {

QDict parse_options(const std::string& opts)
{
    QDict o;
    Error err;
    if (!opts.empty()) {
        REQUIRE(keyval_parse(o, opts, nullptr, err));
    }
    return o;
}

std::unique_ptr<BlockBackend> open_image(AioContext& ctx, const std::string& filename,
                                         const std::string& opts, int flags, Error& err)
{
    bdrv_init();
    return BlockBackend::open(filename, parse_options(opts), flags | BDRV_O_PROTOCOL, ctx, err);
}

int create_image(AioContext& ctx, const std::string& driver, const std::string& filename,
                 const std::string& opts, Error& err)
{
    bdrv_init();
    QDict o = parse_options(opts);
    return run_sync(ctx, bdrv_co_create(*bdrv_find_driver(driver), filename, o, ctx, err));
}

// A file with exactly these bytes, written with plain POSIX calls.
void write_file(const std::string& path, const std::vector<uint8_t>& data)
{
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(data.data()), std::streamsize(data.size()));
    REQUIRE(f.good());
}

std::vector<uint8_t> read_file(const std::string& path)
{
    std::ifstream f(path, std::ios::binary);
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

struct stat stat_file(const std::string& path)
{
    struct stat st;
    REQUIRE(stat(path.c_str(), &st) == 0);
    return st;
}

std::vector<uint8_t> pattern(size_t len, uint8_t seed)
{
    std::vector<uint8_t> v(len);
    for (size_t i = 0; i < len; i++) {
        v[i] = uint8_t(seed + i * 7 + i / 251);
    }
    return v;
}

// The open flags (O_*) of this process's descriptor for path, or -1.
int fd_flags_for(const std::string& path)
{
    std::string real = std::filesystem::canonical(path);
    for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
        std::error_code ec;
        if (std::filesystem::read_symlink(entry.path(), ec) == real) {
            std::ifstream info("/proc/self/fdinfo/" + entry.path().filename().string());
            std::string key;
            while (info >> key) {
                if (key == "flags:") {
                    std::string octal;
                    info >> octal;
                    return int(std::stoul(octal, nullptr, 8));
                }
            }
        }
    }
    return -1;
}

// Is byte `byte` of path locked by some open file description (seen from
// a fresh one)?
bool byte_locked(const std::string& path, int byte)
{
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    struct flock fl = {};
    fl.l_whence = SEEK_SET;
    fl.l_start = byte;
    fl.l_len = 1;
    fl.l_type = F_WRLCK;
    REQUIRE(fcntl(fd, F_OFD_GETLK, &fl) == 0);
    close(fd);
    return fl.l_type != F_UNLCK;
}

// Threads of this process, not counting the kernel's io_uring workers.
int user_thread_count()
{
    int n = 0;
    for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
        std::ifstream comm(task.path() / "comm");
        std::string name;
        std::getline(comm, name);
        n += name.rfind("iou-", 0) != 0;
    }
    return n;
}

BlockStatus block_status(AioContext& ctx, BlockBackend& blk, uint64_t offset, uint64_t bytes,
                         bool want_zero = true)
{
    BlockStatus st;
    REQUIRE(run_sync(ctx, bdrv_co_block_status(blk.bs(), want_zero, offset, bytes, st)) == 0);
    return st;
}

int truncate_image(AioContext& ctx, BlockBackend& blk, uint64_t size, PreallocMode prealloc,
                   Error& err, bool exact = true)
{
    return run_sync(ctx, blk.co_truncate(size, exact, prealloc, 0, err));
}

}  // namespace

TEST_CASE("file: data written is read back, in both aio modes", "[file-posix]")
{
    std::string aio = GENERATE("io_uring", "threads");
    INFO("aio=" << aio);
    TempDir dir{"/var/tmp/test-file-posix-"};
    Error err;
    std::string path = dir.file("img");
    {
        // Creation uses the context's thread pool, whose workers stay
        // with it: another context, so that they do not count below.
        AioContext create_ctx;
        REQUIRE(create_image(create_ctx, "file", path, "size=1M", err) == 0);
    }
    // Threads that are not ours (ThreadSanitizer's, started with the first
    // other thread) are there by now.
    int threads_before = user_thread_count();
    AioContext ctx;
    auto blk = open_image(ctx, path, "driver=file,aio=" + aio, BDRV_O_RDWR, err);
    INFO(err.pretty());
    REQUIRE(blk);
    REQUIRE(blk->bs()->drv().name() == "file");
    REQUIRE(blk->getlength() == 1 * MiB);

    auto data = pattern(64 * KiB + 512, 3);
    REQUIRE(blk->pwrite(4096, data.size(), data.data()) == 0);
    REQUIRE(blk->flush() == 0);

    // A scattered read, crossing buffer boundaries at odd places.
    std::vector<uint8_t> a(1000), b(30000), c(data.size() - 31000);
    IOVector qiov;
    qiov.add(a.data(), a.size());
    qiov.add(b.data(), b.size());
    qiov.add(c.data(), c.size());
    REQUIRE(run_sync(ctx, blk->co_preadv(4096, data.size(), qiov)) == 0);
    std::vector<uint8_t> got(a);
    got.insert(got.end(), b.begin(), b.end());
    got.insert(got.end(), c.begin(), c.end());
    REQUIRE(got == data);

    auto on_disk = read_file(path);
    REQUIRE(on_disk.size() == 1 * MiB);
    REQUIRE(std::equal(data.begin(), data.end(), on_disk.begin() + 4096));

    // aio=threads does its I/O on a thread pool, io_uring on the ring.
    REQUIRE((user_thread_count() > threads_before) == (aio == "threads"));
}

TEST_CASE("file: scattered page-cache writes land in order", "[file-posix]")
{
    // With aio=io_uring, page-cache writes are copied in the calling thread
    // (block/inline-write-policy.h); each must still land whole and in place.
    TempDir dir{"/var/tmp/test-file-posix-"};
    AioContext ctx;
    Error err;
    std::string path = dir.file("img");
    REQUIRE(create_image(ctx, "file", path, "size=4M", err) == 0);
    auto blk = open_image(ctx, path, "driver=file", BDRV_O_RDWR, err);
    INFO(err.pretty());
    REQUIRE(blk);

    auto data = pattern(3 * MiB + 1536, 7);
    IOVector qiov;
    size_t pos = 0;
    for (size_t len : {size_t(1), size_t(511), size_t(4096), size_t(1 * MiB + 3), size_t(77)}) {
        qiov.add(data.data() + pos, len);
        pos += len;
    }
    qiov.add(data.data() + pos, data.size() - pos);
    REQUIRE(run_sync(ctx, blk->co_pwritev(512, data.size(), qiov)) == 0);
    // Overwriting part of it: the later write wins.
    auto patch = pattern(8192, 9);
    REQUIRE(blk->pwrite(1 * MiB, patch.size(), patch.data()) == 0);
    std::copy(patch.begin(), patch.end(), data.begin() + (1 * MiB - 512));

    auto on_disk = read_file(path);
    REQUIRE(std::equal(data.begin(), data.end(), on_disk.begin() + 512));
}

TEST_CASE("file: reads partly in the page cache", "[file-posix]")
{
    // Cached reads are copied with RWF_NOWAIT in the calling thread; what
    // is not cached stops such a read short, and io_uring reads the rest.
    TempDir dir{"/var/tmp/test-file-posix-"};
    AioContext ctx;
    Error err;
    std::string path = dir.file("img");
    auto data = pattern(2 * MiB, 5);
    {
        std::ofstream out(path, std::ios::binary);
        out.write(reinterpret_cast<const char*>(data.data()), std::streamsize(data.size()));
    }
    int fd = open(path.c_str(), O_RDONLY);
    REQUIRE(fd >= 0);
    REQUIRE(fdatasync(fd) == 0);
    // The second MiB leaves the cache (clean pages: dropped at once).
    REQUIRE(posix_fadvise(fd, 1 * MiB, 1 * MiB, POSIX_FADV_DONTNEED) == 0);
    close(fd);

    auto blk = open_image(ctx, path, "driver=file", 0, err);
    INFO(err.pretty());
    REQUIRE(blk);
    std::vector<uint8_t> got(1 * MiB);
    REQUIRE(blk->pread(1 * MiB - 4096, got.size(), got.data()) == 0);
    REQUIRE(std::equal(got.begin(), got.end(), data.begin() + (1 * MiB - 4096)));
    // Past the end of the file: zeroes up to the sector boundary, as before.
    std::vector<uint8_t> tail(512, 0xff);
    REQUIRE(blk->pread(2 * MiB - 512, tail.size(), tail.data()) == 0);
    REQUIRE(std::equal(tail.begin(), tail.end(), data.end() - 512));
}

TEST_CASE("file: slow inline writes send the next ones to io_uring for a while", "[file-posix]")
{
    InlineWritePolicy policy;
    const int64_t t0 = 5'000'000'000;
    REQUIRE(policy.allows(t0));

    // Memory-speed copies, of any size, keep writes inline.
    policy.record(t0, t0 + 20'000, 4 * KiB);
    policy.record(t0, t0 + 3'000'000, 8 * MiB);
    REQUIRE(policy.allows(t0 + 3'000'001));

    // A 4 KiB write that took 2 ms was blocked (throttled, or a page read).
    int64_t end = t0 + 2'000'000;
    policy.record(t0, end, 4 * KiB);
    REQUIRE_FALSE(policy.allows(end));
    REQUIRE_FALSE(policy.allows(end + InlineWritePolicy::kBackoffNs - 1));
    REQUIRE(policy.allows(end + InlineWritePolicy::kBackoffNs));

    // A large write is slow only below a byte per nanosecond.
    int64_t t1 = end + InlineWritePolicy::kBackoffNs;
    policy.record(t1, t1 + 64 * MiB - 1, 64 * MiB);
    REQUIRE(policy.allows(t1 + 64 * MiB));
    policy.record(t1, t1 + 64 * MiB + 1, 64 * MiB);
    REQUIRE_FALSE(policy.allows(t1 + 64 * MiB + 1));

    REQUIRE(policy.try_nowait());
    policy.nowait_unsupported();
    REQUIRE_FALSE(policy.try_nowait());
}

TEST_CASE("file: reads beyond the end of a short file return zeroes", "[file-posix]")
{
    bool direct = GENERATE(false, true);
    INFO("cache.direct=" << direct);
    TempDir dir{"/var/tmp/test-file-posix-"};
    AioContext ctx;
    Error err;
    std::string path = dir.file("short");
    write_file(path, std::vector<uint8_t>(1000, 0xaa));

    auto blk = open_image(ctx, path, direct ? "cache.direct=on" : "", 0, err);
    INFO(err.pretty());
    REQUIRE(blk);
    // Sizes count in sectors, as QEMU's.
    REQUIRE(blk->getlength() == 1024);
    std::vector<uint8_t> buf(1024, 0x55);
    REQUIRE(blk->pread(0, buf.size(), buf.data()) == 0);
    REQUIRE(std::all_of(buf.begin(), buf.begin() + 1000, [](uint8_t x) { return x == 0xaa; }));
    REQUIRE(std::all_of(buf.begin() + 1000, buf.end(), [](uint8_t x) { return x == 0; }));
}

TEST_CASE("file: writing the sector tail extends the file", "[file-posix]")
{
    TempDir dir{"/var/tmp/test-file-posix-"};
    AioContext ctx;
    Error err;
    std::string path = dir.file("short");
    write_file(path, std::vector<uint8_t>(1000, 0xaa));
    auto blk = open_image(ctx, path, "", BDRV_O_RDWR, err);
    REQUIRE(blk);
    std::vector<uint8_t> tail(24, 0xbb);
    REQUIRE(blk->pwrite(1000, tail.size(), tail.data()) == 0);
    REQUIRE(stat_file(path).st_size == 1024);
}

TEST_CASE("file: O_DIRECT with aligned and misaligned buffers", "[file-posix]")
{
    std::string aio = GENERATE("io_uring", "threads");
    INFO("aio=" << aio);
    TempDir dir{"/var/tmp/test-file-posix-"};
    AioContext ctx;
    Error err;
    std::string path = dir.file("direct");
    REQUIRE(create_image(ctx, "file", path, "size=1M", err) == 0);

    auto blk = open_image(ctx, path, "cache.direct=on,aio=" + aio, BDRV_O_RDWR, err);
    INFO(err.pretty());
    REQUIRE(blk);
    int flags = fd_flags_for(path);
    REQUIRE(flags != -1);
    REQUIRE((flags & O_DIRECT) != 0);

    const BlockLimits& bl = blk->bs()->limits();
    REQUIRE(bl.request_alignment >= 512);
    REQUIRE(bl.request_alignment <= 4096);
    REQUIRE(bl.min_mem_alignment >= 512);
    REQUIRE(bl.opt_mem_alignment >= std::max<uint32_t>(bl.min_mem_alignment, 4096));

    // Misaligned in memory: the driver bounces.
    AlignedBuffer raw(3 * 8192, 4096);
    uint8_t* misaligned = raw.data() + 1;
    auto data = pattern(8192, 9);
    memcpy(misaligned, data.data(), data.size());
    REQUIRE(blk->pwrite(8192, data.size(), misaligned) == 0);
    memset(misaligned, 0, data.size());
    REQUIRE(blk->pread(8192, data.size(), misaligned) == 0);
    REQUIRE(memcmp(misaligned, data.data(), data.size()) == 0);

    // Aligned buffers go straight to the kernel.
    AlignedBuffer aligned(8192, 4096);
    REQUIRE(blk->pread(8192, 8192, aligned.data()) == 0);
    REQUIRE(memcmp(aligned.data(), data.data(), data.size()) == 0);

    // Misaligned offsets: the generic layer pads, we still see the bytes.
    auto small = pattern(300, 77);
    REQUIRE(blk->pwrite(100, small.size(), small.data()) == 0);
    std::vector<uint8_t> back(300);
    REQUIRE(blk->pread(100, back.size(), back.data()) == 0);
    REQUIRE(back == small);

    blk.reset();
    auto on_disk = read_file(path);
    REQUIRE(std::equal(data.begin(), data.end(), on_disk.begin() + 8192));
    REQUIRE(std::equal(small.begin(), small.end(), on_disk.begin() + 100));
}

TEST_CASE("file: FUA writes are handled by the driver", "[file-posix]")
{
    TempDir dir{"/var/tmp/test-file-posix-"};
    AioContext ctx;
    Error err;
    std::string path = dir.file("fua");
    REQUIRE(create_image(ctx, "file", path, "size=64k", err) == 0);
    std::string aio = GENERATE("io_uring", "threads");
    auto blk = open_image(ctx, path, "aio=" + aio, BDRV_O_RDWR, err);
    REQUIRE(blk);
    REQUIRE((blk->bs()->supported_write_flags() & BDRV_REQ_FUA) != 0);
    auto data = pattern(4096, 1);
    REQUIRE(blk->pwrite(0, data.size(), data.data(), BDRV_REQ_FUA) == 0);
    auto on_disk = read_file(path);
    REQUIRE(std::equal(data.begin(), data.end(), on_disk.begin()));
}

TEST_CASE("file: discard punches holes only with discard=unmap", "[file-posix]")
{
    TempDir dir{"/var/tmp/test-file-posix-"};
    AioContext ctx;
    Error err;
    std::string path = dir.file("discard");
    REQUIRE(create_image(ctx, "file", path, "size=1M", err) == 0);
    auto data = pattern(1 * MiB, 5);
    {
        auto blk = open_image(ctx, path, "", BDRV_O_RDWR, err);
        REQUIRE(blk);
        REQUIRE(blk->pwrite(0, data.size(), data.data()) == 0);
        REQUIRE(blk->flush() == 0);
        // discard=ignore (the default): nothing happens.
        REQUIRE(run_sync(ctx, blk->co_pdiscard(0, 512 * KiB)) == 0);
    }
    uint64_t full = uint64_t(stat_file(path).st_blocks) * 512;
    REQUIRE(full >= 1 * MiB);

    std::string aio = GENERATE("io_uring", "threads");
    auto blk = open_image(ctx, path, "discard=unmap,aio=" + aio, BDRV_O_RDWR, err);
    REQUIRE(blk);
    REQUIRE(run_sync(ctx, blk->co_pdiscard(0, 512 * KiB)) == 0);
    REQUIRE(uint64_t(stat_file(path).st_blocks) * 512 <= full - 512 * KiB);
    REQUIRE(stat_file(path).st_size == off_t(1 * MiB));
    std::vector<uint8_t> buf(1 * MiB);
    REQUIRE(blk->pread(0, buf.size(), buf.data()) == 0);
    REQUIRE(std::all_of(buf.begin(), buf.begin() + 512 * KiB, [](uint8_t x) { return x == 0; }));
    REQUIRE(std::equal(buf.begin() + 512 * KiB, buf.end(), data.begin() + 512 * KiB));
}

TEST_CASE("file: write zeroes", "[file-posix]")
{
    TempDir dir{"/var/tmp/test-file-posix-"};
    AioContext ctx;
    Error err;
    std::string path = dir.file("zeroes");
    REQUIRE(create_image(ctx, "file", path, "size=1M", err) == 0);
    std::string aio = GENERATE("io_uring", "threads");
    auto blk = open_image(ctx, path, "discard=unmap,aio=" + aio, BDRV_O_RDWR, err);
    REQUIRE(blk);
    auto data = pattern(1 * MiB, 8);
    REQUIRE(blk->pwrite(0, data.size(), data.data()) == 0);
    REQUIRE(blk->flush() == 0);
    uint64_t full = uint64_t(stat_file(path).st_blocks) * 512;

    SECTION("keeping the allocation")
    {
        REQUIRE(run_sync(ctx, blk->co_pwrite_zeroes(64 * KiB, 256 * KiB)) == 0);
        REQUIRE(uint64_t(stat_file(path).st_blocks) * 512 == full);
        // Never touched by a data write: a no-fallback request must work too.
        REQUIRE(run_sync(ctx, blk->co_pwrite_zeroes(512 * KiB, 64 * KiB, BDRV_REQ_NO_FALLBACK)) ==
                0);
    }
    SECTION("unmapping")
    {
        REQUIRE(run_sync(ctx, blk->co_pwrite_zeroes(64 * KiB, 256 * KiB, BDRV_REQ_MAY_UNMAP)) == 0);
        REQUIRE(uint64_t(stat_file(path).st_blocks) * 512 <= full - 256 * KiB);
        BlockStatus st = block_status(ctx, *blk, 64 * KiB, 1 * MiB);
        REQUIRE((st.flags & BDRV_BLOCK_ZERO) != 0);
        REQUIRE(st.pnum == 256 * KiB);
    }
    std::vector<uint8_t> buf(1 * MiB);
    REQUIRE(blk->pread(0, buf.size(), buf.data()) == 0);
    REQUIRE(std::equal(buf.begin(), buf.begin() + 64 * KiB, data.begin()));
    REQUIRE(std::all_of(buf.begin() + 64 * KiB, buf.begin() + 320 * KiB,
                        [](uint8_t x) { return x == 0; }));
    REQUIRE(std::equal(buf.begin() + 320 * KiB, buf.begin() + 512 * KiB, data.begin() + 320 * KiB));
}

TEST_CASE("file: truncate grows and shrinks with each preallocation mode", "[file-posix]")
{
    TempDir dir{"/var/tmp/test-file-posix-"};
    AioContext ctx;
    Error err;
    std::string path = dir.file("trunc");
    REQUIRE(create_image(ctx, "file", path, "size=0", err) == 0);
    auto blk = open_image(ctx, path, "", BDRV_O_RDWR | BDRV_O_RESIZE, err);
    REQUIRE(blk);

    REQUIRE(truncate_image(ctx, *blk, 1 * MiB, PreallocMode::Off, err) == 0);
    REQUIRE(stat_file(path).st_size == off_t(1 * MiB));
    REQUIRE(blk->getlength() == 1 * MiB);
    // Like QEMU, the first block of a file grown from empty is allocated.
    REQUIRE(stat_file(path).st_blocks * 512 == 4096);

    REQUIRE(truncate_image(ctx, *blk, 2 * MiB, PreallocMode::Falloc, err) == 0);
    REQUIRE(stat_file(path).st_size == off_t(2 * MiB));
    REQUIRE(uint64_t(stat_file(path).st_blocks) * 512 >= 1 * MiB + 4096);

    REQUIRE(truncate_image(ctx, *blk, 3 * MiB, PreallocMode::Full, err) == 0);
    REQUIRE(stat_file(path).st_size == off_t(3 * MiB));
    REQUIRE(uint64_t(stat_file(path).st_blocks) * 512 >= 2 * MiB + 4096);
    std::vector<uint8_t> buf(1 * MiB, 0xff);
    REQUIRE(blk->pread(2 * MiB, buf.size(), buf.data()) == 0);
    REQUIRE(std::all_of(buf.begin(), buf.end(), [](uint8_t x) { return x == 0; }));

    REQUIRE(truncate_image(ctx, *blk, 1 * MiB, PreallocMode::Falloc, err) == -ENOTSUP);
    REQUIRE(err.message == "Cannot use preallocation for shrinking files");
    err.clear();
    REQUIRE(truncate_image(ctx, *blk, 4 * MiB, PreallocMode::Metadata, err) == -ENOTSUP);
    REQUIRE(err.message == "Unsupported preallocation mode: metadata");
    REQUIRE(stat_file(path).st_size == off_t(3 * MiB));
    err.clear();

    REQUIRE(truncate_image(ctx, *blk, 512 * KiB, PreallocMode::Off, err) == 0);
    REQUIRE(stat_file(path).st_size == off_t(512 * KiB));
    REQUIRE(blk->getlength() == 512 * KiB);
}

TEST_CASE("file: block status reports data and holes", "[file-posix]")
{
    TempDir dir{"/var/tmp/test-file-posix-"};
    AioContext ctx;
    Error err;
    std::string path = dir.file("sparse");
    REQUIRE(create_image(ctx, "file", path, "size=4M", err) == 0);
    auto blk = open_image(ctx, path, "", BDRV_O_RDWR, err);
    REQUIRE(blk);
    auto data = pattern(64 * KiB, 2);
    REQUIRE(blk->pwrite(1 * MiB, data.size(), data.data()) == 0);
    REQUIRE(blk->flush() == 0);

    // [0, 4k) was allocated at creation, then a hole up to 1M.
    BlockStatus st = block_status(ctx, *blk, 0, 4 * MiB);
    REQUIRE(st.flags == (BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID | BDRV_BLOCK_ALLOCATED));
    REQUIRE(st.pnum == 4096);
    REQUIRE(st.map == 0);
    REQUIRE(st.file == blk->bs());

    st = block_status(ctx, *blk, 4096, 4 * MiB - 4096);
    REQUIRE((st.flags & BDRV_BLOCK_ZERO) != 0);
    REQUIRE((st.flags & BDRV_BLOCK_DATA) == 0);
    REQUIRE((st.flags & BDRV_BLOCK_OFFSET_VALID) != 0);
    REQUIRE(st.pnum == 1 * MiB - 4096);
    REQUIRE(st.map == 4096);

    st = block_status(ctx, *blk, 1 * MiB, 3 * MiB);
    REQUIRE((st.flags & BDRV_BLOCK_DATA) != 0);
    REQUIRE(st.pnum == 64 * KiB);

    // pnum never exceeds the request.
    st = block_status(ctx, *blk, 1 * MiB, 4096);
    REQUIRE(st.pnum == 4096);

    // The trailing hole.
    st = block_status(ctx, *blk, 1 * MiB + 64 * KiB, 3 * MiB - 64 * KiB);
    REQUIRE((st.flags & BDRV_BLOCK_ZERO) != 0);
    REQUIRE(st.pnum == 3 * MiB - 64 * KiB);

    // Without want_zero, everything is data.
    st = block_status(ctx, *blk, 4096, 64 * KiB, false);
    REQUIRE((st.flags & BDRV_BLOCK_DATA) != 0);
    REQUIRE(st.pnum == 64 * KiB);

    // A file shorter than the node (the sector tail) ends in zeroes.
    std::string odd = dir.file("odd");
    write_file(odd, std::vector<uint8_t>(1000, 1));
    auto blk2 = open_image(ctx, odd, "", 0, err);
    REQUIRE(blk2);
    st = block_status(ctx, *blk2, 0, 1024);
    REQUIRE((st.flags & BDRV_BLOCK_DATA) != 0);
    REQUIRE(st.pnum == 1000);
    st = block_status(ctx, *blk2, 1000, 24);
    REQUIRE((st.flags & BDRV_BLOCK_ZERO) != 0);
    REQUIRE(st.pnum == 24);

    REQUIRE(run_sync(ctx, blk->bs()->drv_get_allocated_file_size()) ==
            int64_t(stat_file(path).st_blocks) * 512);
}

TEST_CASE("file: image locks conflict between two opens", "[file-posix]")
{
    TempDir dir{"/var/tmp/test-file-posix-"};
    AioContext ctx;
    Error err;
    std::string path = dir.file("locked");
    REQUIRE(create_image(ctx, "file", path, "size=1M", err) == 0);

    // An exclusive writer: takes consistent read and write, shares neither
    // write nor resize.
    auto a = open_image(ctx, path, "", BDRV_O_RDWR | BDRV_O_NO_SHARE, err);
    REQUIRE(a);
    REQUIRE(byte_locked(path, 100));
    REQUIRE(byte_locked(path, 101));
    REQUIRE_FALSE(byte_locked(path, 102));
    REQUIRE_FALSE(byte_locked(path, 103));
    REQUIRE_FALSE(byte_locked(path, 200));
    REQUIRE(byte_locked(path, 201));
    REQUIRE_FALSE(byte_locked(path, 202));
    REQUIRE(byte_locked(path, 203));

    auto b = open_image(ctx, path, "", BDRV_O_RDWR, err);
    REQUIRE_FALSE(b);
    REQUIRE(err.message == "Failed to get \"write\" lock");
    REQUIRE(err.hints == std::vector<std::string>{"Is another process using the image [" + path +
                                                  "]?"});
    err.clear();

    // A reader that shares everything is fine.
    auto reader = open_image(ctx, path, "", 0, err);
    REQUIRE(reader);

    // A reader that does not share write collides with the writer.
    auto exclusive_reader = open_image(ctx, path, "", BDRV_O_NO_SHARE, err);
    REQUIRE_FALSE(exclusive_reader);
    REQUIRE(err.message == "Failed to get shared \"write\" lock");
    err.clear();

    // locking=off neither checks nor takes locks.
    auto unlocked = open_image(ctx, path, "locking=off", BDRV_O_RDWR, err);
    REQUIRE(unlocked);

    // Creating needs write: refused while the writer does not share it.
    REQUIRE(create_image(ctx, "file", path, "size=1M", err) < 0);
    REQUIRE(err.message == "Failed to get \"write\" lock");
    err.clear();

    a.reset();
    REQUIRE_FALSE(byte_locked(path, 201));
    auto c = open_image(ctx, path, "", BDRV_O_RDWR, err);
    INFO(err.pretty());
    REQUIRE(c);
}

TEST_CASE("file: lock permissions can be relaxed and tightened", "[file-posix]")
{
    TempDir dir{"/var/tmp/test-file-posix-"};
    AioContext ctx;
    Error err;
    std::string path = dir.file("perm");
    REQUIRE(create_image(ctx, "file", path, "size=1M", err) == 0);
    auto a = open_image(ctx, path, "", BDRV_O_RDWR, err);
    REQUIRE(a);
    BlockDriverState* bs = a->bs();
    REQUIRE(bs->update_permissions(BLK_PERM_CONSISTENT_READ, BLK_PERM_ALL, err) == 0);
    REQUIRE_FALSE(byte_locked(path, 101));

    auto other = open_image(ctx, path, "", BDRV_O_RDWR, err);
    REQUIRE(other);
    // Now refusing to share write must fail, and leave the old locks.
    REQUIRE(bs->update_permissions(BLK_PERM_CONSISTENT_READ,
                                   BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE_UNCHANGED,
                                   err) < 0);
    REQUIRE(err.message == "Failed to get shared \"write\" lock");
    err.clear();
    other.reset();
    REQUIRE_FALSE(byte_locked(path, 201));
    REQUIRE(bs->update_permissions(BLK_PERM_CONSISTENT_READ,
                                   BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE_UNCHANGED,
                                   err) == 0);
    REQUIRE(byte_locked(path, 201));
}

namespace {

// Runs a command with a shell, returning its exit status and output.
int run_command(const std::string& cmd, std::string& output)
{
    output.clear();
    FILE* p = popen((cmd + " 2>&1").c_str(), "r");
    REQUIRE(p);
    char buf[512];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), p)) > 0) {
        output.append(buf, n);
    }
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// QEMU's qemu-io keeping an image open (and locked) until stopped.
class QemuIoHolder {
public:
    QemuIoHolder(const std::string& format, const std::string& path)
    {
        const char* argv[] = {"qemu-io", "-f", format.c_str(), path.c_str(),
                              "-c",      "sleep 60000", nullptr};
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
        if (posix_spawn(&pid_, "/usr/bin/qemu-io", &actions, nullptr,
                        const_cast<char* const*>(argv), environ) != 0) {
            pid_ = -1;
        }
        posix_spawn_file_actions_destroy(&actions);
    }
    ~QemuIoHolder() { stop(); }
    QemuIoHolder(const QemuIoHolder&) = delete;
    QemuIoHolder& operator=(const QemuIoHolder&) = delete;

    bool running() const { return pid_ > 0; }
    void stop()
    {
        if (pid_ > 0) {
            kill(pid_, SIGKILL);
            waitpid(pid_, nullptr, 0);
            pid_ = -1;
        }
    }

private:
    pid_t pid_ = -1;
};

bool have_qemu_tools()
{
    return access("/usr/bin/qemu-io", X_OK) == 0 && access("/usr/bin/qemu-img", X_OK) == 0;
}

}  // namespace

TEST_CASE("file: locks interoperate with QEMU's tools", "[file-posix][qemu]")
{
    if (!have_qemu_tools()) {
        WARN("QEMU's qemu-io/qemu-img are not installed: skipped");
        return;
    }
    TempDir dir{"/var/tmp/test-file-posix-"};
    AioContext ctx;
    Error err;
    std::string path = dir.file("shared.qcow2");
    std::string out;
    REQUIRE(run_command("/usr/bin/qemu-img create -q -f qcow2 " + path + " 1M", out) == 0);

    SECTION("QEMU holds the image, we are refused")
    {
        // qemu-io on qcow2 writes and does not share write with others.
        QemuIoHolder qemu("qcow2", path);
        REQUIRE(qemu.running());
        bool held = false;
        for (int i = 0; i < 1000 && !held; i++) {
            held = byte_locked(path, 201);
            if (!held) {
                usleep(10000);
            }
        }
        REQUIRE(held);

        auto writer = open_image(ctx, path, "", BDRV_O_RDWR, err);
        REQUIRE_FALSE(writer);
        REQUIRE(err.message == "Failed to get \"write\" lock");
        err.clear();
        auto exclusive_reader = open_image(ctx, path, "", BDRV_O_NO_SHARE, err);
        REQUIRE_FALSE(exclusive_reader);
        REQUIRE(err.message == "Failed to get shared \"write\" lock");
        err.clear();
        auto reader = open_image(ctx, path, "", 0, err);
        REQUIRE(reader);

        qemu.stop();
        reader.reset();
        auto writer2 = open_image(ctx, path, "", BDRV_O_RDWR, err);
        REQUIRE(writer2);
    }
    SECTION("we hold the image, QEMU is refused")
    {
        auto holder = open_image(ctx, path, "", BDRV_O_RDWR | BDRV_O_NO_SHARE, err);
        REQUIRE(holder);
        REQUIRE(run_command("/usr/bin/qemu-io -f raw " + path + " -c quit", out) != 0);
        REQUIRE(out == "qemu-io: can't open device " + path +
                           ": Failed to get \"write\" lock\n"
                           "Is another process using the image [" + path + "]?\n");
        REQUIRE(run_command("/usr/bin/qemu-img info -U " + path, out) == 0);
        // A read-only user that shares everything gets in.
        REQUIRE(run_command("/usr/bin/qemu-io -r -f raw " + path + " -c quit", out) == 0);
        holder.reset();
        REQUIRE(run_command("/usr/bin/qemu-io -f raw " + path + " -c quit", out) == 0);
    }
}

TEST_CASE("file: open errors use QEMU's messages", "[file-posix]")
{
    TempDir dir{"/var/tmp/test-file-posix-"};
    AioContext ctx;
    Error err;
    std::string path = dir.file("img");
    REQUIRE(create_image(ctx, "file", path, "size=1M", err) == 0);

    std::string missing = dir.file("nonexist");
    REQUIRE_FALSE(open_image(ctx, missing, "", BDRV_O_RDWR, err));
    REQUIRE(err.message == "Could not open '" + missing + "': No such file or directory");

    REQUIRE_FALSE(open_image(ctx, path, "aio=foo", BDRV_O_RDWR, err));
    REQUIRE(err.message == "invalid parameter value: foo");
    REQUIRE_FALSE(open_image(ctx, path, "locking=maybe", BDRV_O_RDWR, err));
    REQUIRE(err.message == "invalid parameter value: maybe");
    REQUIRE_FALSE(open_image(ctx, path, "aio=native", BDRV_O_RDWR, err));
    REQUIRE(err.message ==
            "aio=native was specified, but it requires cache.direct=on, which was not specified.");
    err.clear();
    REQUIRE(open_image(ctx, path, "aio=native,cache.direct=on", BDRV_O_RDWR, err));

    REQUIRE_FALSE(open_image(ctx, "/dev/null", "driver=file", 0, err));
    REQUIRE(err.message == "'file' driver requires '/dev/null' to be a regular file");
    REQUIRE_FALSE(open_image(ctx, path, "driver=host_device", 0, err));
    REQUIRE(err.message == "'host_device' driver requires '" + path +
                               "' to be either a character or block device");
    REQUIRE_FALSE(open_image(ctx, dir.file(""), "driver=file", BDRV_O_RDWR, err));
    REQUIRE(err.message == "Could not open '" + dir.file("") + "': Is a directory");
}

TEST_CASE("file: the file: prefix selects the driver", "[file-posix]")
{
    TempDir dir{"/var/tmp/test-file-posix-"};
    AioContext ctx;
    Error err;
    std::string path = dir.file("img");
    REQUIRE(create_image(ctx, "file", "file:" + path, "size=64k", err) == 0);
    REQUIRE(stat_file(path).st_size == 64 * 1024);
    auto blk = open_image(ctx, "file:" + path, "", 0, err);
    INFO(err.pretty());
    REQUIRE(blk);
    REQUIRE(blk->bs()->drv().name() == "file");
    REQUIRE(blk->getlength() == 64 * KiB);
}

TEST_CASE("file: create sizes, preallocation and errors", "[file-posix]")
{
    TempDir dir{"/var/tmp/test-file-posix-"};
    AioContext ctx;
    Error err;
    std::string path = dir.file("img");

    REQUIRE(create_image(ctx, "file", path, "size=1000", err) == 0);
    REQUIRE(stat_file(path).st_size == 1024);

    REQUIRE(create_image(ctx, "file", path, "size=1M,preallocation=falloc", err) == 0);
    REQUIRE(stat_file(path).st_size == off_t(1 * MiB));
    REQUIRE(uint64_t(stat_file(path).st_blocks) * 512 >= 1 * MiB);

    // Re-creating empties the file first.
    REQUIRE(create_image(ctx, "file", path, "size=256k,preallocation=full,nocow=on", err) == 0);
    REQUIRE(stat_file(path).st_size == off_t(256 * KiB));
    REQUIRE(uint64_t(stat_file(path).st_blocks) * 512 >= 256 * KiB);
    REQUIRE(read_file(path) == std::vector<uint8_t>(256 * KiB, 0));

    std::string nodir = dir.file("no/such/dir");
    REQUIRE(create_image(ctx, "file", nodir, "size=1M", err) == -ENOENT);
    REQUIRE(err.message == "Could not create '" + nodir + "': No such file or directory");

    std::string other = dir.file("other");
    REQUIRE(create_image(ctx, "file", other, "size=1M,preallocation=foo", err) == -EINVAL);
    REQUIRE(err.message == "invalid parameter value: foo");
    REQUIRE(create_image(ctx, "file", other, "size=1M,extent_size_hint=8G", err) == -EINVAL);
    REQUIRE(err.message == "Extent size hint is too large");
    REQUIRE(create_image(ctx, "file", other, "size=1M,preallocation=metadata", err) == -ENOTSUP);
    REQUIRE(err.message == "Unsupported preallocation mode: metadata");
    // Nothing half-made is left behind.
    REQUIRE(access(other.c_str(), F_OK) != 0);
}

namespace {

// A loop device over a file, for host_device tests; needs root.
class LoopDevice {
public:
    explicit LoopDevice(const std::string& backing)
    {
        int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
        if (ctl < 0) {
            return;
        }
        int n = ioctl(ctl, LOOP_CTL_GET_FREE);
        close(ctl);
        if (n < 0) {
            return;
        }
        std::string dev = "/dev/loop" + std::to_string(n);
        int file = open(backing.c_str(), O_RDWR | O_CLOEXEC);
        fd_ = open(dev.c_str(), O_RDWR | O_CLOEXEC);
        if (file >= 0 && fd_ >= 0 && ioctl(fd_, LOOP_SET_FD, file) == 0) {
            path_ = dev;
        }
        if (file >= 0) {
            close(file);
        }
    }
    ~LoopDevice()
    {
        if (!path_.empty()) {
            ioctl(fd_, LOOP_CLR_FD, 0);
        }
        if (fd_ >= 0) {
            close(fd_);
        }
    }
    const std::string& path() const { return path_; }

private:
    int fd_ = -1;
    std::string path_;
};

}  // namespace

TEST_CASE("host_device: a loop device", "[file-posix][host_device]")
{
    TempDir dir{"/var/tmp/test-file-posix-"};
    std::string backing = dir.file("backing");
    write_file(backing, pattern(16 * MiB, 4));
    LoopDevice loop(backing);
    if (loop.path().empty()) {
        WARN("cannot set up a loop device (not root?): skipped");
        return;
    }
    const std::string& dev = loop.path();
    AioContext ctx;
    Error err;

    SECTION("I/O, discard and write zeroes")
    {
        std::string aio = GENERATE("io_uring", "threads");
        bool direct = GENERATE(false, true);
        INFO("aio=" << aio << " direct=" << direct);
        std::string opts = "discard=unmap,aio=" + aio + (direct ? ",cache.direct=on" : "");
        auto blk = open_image(ctx, dev, opts, BDRV_O_RDWR, err);
        INFO(err.pretty());
        REQUIRE(blk);
        REQUIRE(blk->bs()->drv().name() == "host_device");
        REQUIRE(blk->getlength() == 16 * MiB);
        const BlockLimits& bl = blk->bs()->limits();
        REQUIRE(bl.max_transfer > 0);
        if (direct) {
            REQUIRE(bl.request_alignment == 512);
        }

        auto data = pattern(128 * KiB, 6);
        REQUIRE(blk->pwrite(1 * MiB, data.size(), data.data(), BDRV_REQ_FUA) == 0);
        std::vector<uint8_t> buf(data.size());
        REQUIRE(blk->pread(1 * MiB, buf.size(), buf.data()) == 0);
        REQUIRE(buf == data);

        REQUIRE(run_sync(ctx, blk->co_pwrite_zeroes(1 * MiB, 32 * KiB)) == 0);
        REQUIRE(run_sync(ctx, blk->co_pwrite_zeroes(1 * MiB + 32 * KiB, 32 * KiB,
                                                    BDRV_REQ_MAY_UNMAP)) == 0);
        REQUIRE(run_sync(ctx, blk->co_pdiscard(1 * MiB + 64 * KiB, 64 * KiB)) == 0);
        REQUIRE(blk->pread(1 * MiB, buf.size(), buf.data()) == 0);
        // Loop devices over files zero what they discard.
        REQUIRE(std::all_of(buf.begin(), buf.end(), [](uint8_t x) { return x == 0; }));

        BlockStatus st = block_status(ctx, *blk, 0, 16 * MiB);
        REQUIRE((st.flags & BDRV_BLOCK_DATA) != 0);
        REQUIRE(st.pnum == 16 * MiB);
    }
    SECTION("devices cannot be resized")
    {
        auto blk = open_image(ctx, dev, "", BDRV_O_RDWR | BDRV_O_RESIZE, err);
        REQUIRE(blk);
        REQUIRE(truncate_image(ctx, *blk, 32 * MiB, PreallocMode::Off, err, false) == -EINVAL);
        REQUIRE(err.message == "Cannot grow device files");
        REQUIRE(truncate_image(ctx, *blk, 8 * MiB, PreallocMode::Off, err, true) == -ENOTSUP);
        REQUIRE(err.message == "Cannot resize device files");
        REQUIRE(truncate_image(ctx, *blk, 8 * MiB, PreallocMode::Falloc, err, false) == -ENOTSUP);
        REQUIRE(err.message == "Preallocation mode 'falloc' unsupported for this non-regular file");
        err.clear();
        REQUIRE(truncate_image(ctx, *blk, 16 * MiB, PreallocMode::Off, err, true) == 0);
    }
    SECTION("create checks the size and clears the first sector")
    {
        REQUIRE(create_image(ctx, "host_device", dev, "size=1M", err) == 0);
        auto blk = open_image(ctx, dev, "", 0, err);
        REQUIRE(blk);
        std::vector<uint8_t> buf(1024);
        REQUIRE(blk->pread(0, buf.size(), buf.data()) == 0);
        REQUIRE(std::all_of(buf.begin(), buf.begin() + 512, [](uint8_t x) { return x == 0; }));
        auto data = pattern(16 * MiB, 4);
        REQUIRE(std::equal(buf.begin() + 512, buf.end(), data.begin() + 512));
        blk.reset();

        REQUIRE(create_image(ctx, "host_device", dev, "size=32M", err) == -EINVAL);
        REQUIRE(err.message == "Cannot grow device files");
        REQUIRE(create_image(ctx, "host_device", dev, "size=1M,preallocation=full", err) ==
                -ENOTSUP);
        REQUIRE(err.message == "Unsupported preallocation mode 'full'");
    }
}
