// Helpers of the qcow2 unit tests: scratch images, creating and opening
// them, patterns, and patching or reading the files underneath (to corrupt
// images on purpose, or to look at their metadata).
#pragma once

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "block/block-backend.h"
#include "qemu/bswap.h"

namespace qcow2_test {

using namespace qemu;

// A scratch file name (the file itself does not exist until created);
// removed, with `path` + suffix for each suffix given, at the end.
struct TempImage {
    std::string path;
    std::vector<std::string> extra;
    explicit TempImage(std::vector<std::string> suffixes = {})
    {
        char tmpl[] = "/var/tmp/qz-qcow2-XXXXXX";
        int fd = mkstemp(tmpl);
        close(fd);
        unlink(tmpl);
        path = tmpl;
        for (const auto& s : suffixes) {
            extra.push_back(path + s);
        }
    }
    ~TempImage()
    {
        unlink(path.c_str());
        for (const auto& e : extra) {
            unlink(e.c_str());
        }
    }
};

// Creates a qcow2 image with create options `opts` ("size=1M,...").
inline int create(AioContext& ctx, const std::string& path, const std::string& opts, Error& err)
{
    bdrv_init();
    QDict o;
    REQUIRE(keyval_parse(o, opts, nullptr, err));
    return run_sync(ctx, bdrv_co_create(*bdrv_find_driver("qcow2"), path, o, ctx, err));
}

// Opens a qcow2 image read-write, with more open options in `extra`.
inline std::unique_ptr<BlockBackend> open_rw(AioContext& ctx, const std::string& path, Error& err,
                                             const std::string& extra = "", int flags = BDRV_O_RDWR)
{
    QDict o;
    o.set("driver", "qcow2");
    if (!extra.empty()) {
        REQUIRE(keyval_parse(o, extra, nullptr, err));
    }
    return BlockBackend::open(path, o, flags, ctx, err);
}

// A scratch qcow2 image created with `opts` ("size=1M,..."), removed at
// the end; open() fails the test when the image does not open.
struct CreatedImage : TempImage {
    explicit CreatedImage(const std::string& opts)
    {
        AioContext ctx;
        Error err;
        REQUIRE(create(ctx, path, opts, err) == 0);
    }

    std::unique_ptr<BlockBackend> open(AioContext& ctx, const std::string& extra = "",
                                       int flags = BDRV_O_RDWR) const
    {
        Error err;
        auto blk = open_rw(ctx, path, err, extra, flags);
        INFO(err.message);
        REQUIRE(blk);
        return blk;
    }
};

inline std::vector<uint8_t> pattern(size_t n, uint32_t seed)
{
    std::vector<uint8_t> v(n);
    std::mt19937 rng(seed);
    for (auto& b : v) {
        b = uint8_t(rng());
    }
    return v;
}

inline void patch_file(const std::string& path, uint64_t offset, const void* data, size_t len)
{
    int fd = open(path.c_str(), O_WRONLY);
    REQUIRE(fd >= 0);
    REQUIRE(pwrite(fd, data, len, off_t(offset)) == ssize_t(len));
    close(fd);
}

inline void read_file(const std::string& path, uint64_t offset, void* data, size_t len)
{
    int fd = open(path.c_str(), O_RDONLY);
    REQUIRE(fd >= 0);
    REQUIRE(pread(fd, data, len, off_t(offset)) == ssize_t(len));
    close(fd);
}

inline uint64_t get_be64(const std::string& path, uint64_t offset)
{
    uint8_t b[8];
    read_file(path, offset, b, 8);
    return load_be64(b);
}

inline void set_be64(const std::string& path, uint64_t offset, uint64_t value)
{
    uint8_t b[8];
    store_be64(b, value);
    patch_file(path, offset, b, 8);
}

// The descriptor of the zone at `offset`.
inline BlockZoneDescriptor report_zone(AioContext& ctx, BlockBackend& blk, uint64_t offset)
{
    BlockZoneDescriptor d;
    uint32_t n = 1;
    REQUIRE(run_sync(ctx, blk.co_zone_report(offset, n, &d)) == 0);
    REQUIRE(n == 1);
    return d;
}

// Where the L2 entry of `guest_cluster` (in the first L2 table) is in the
// image file; entries are 8 bytes, or 16 with extended L2 entries.
inline uint64_t l2_entry_offset(const std::string& path, uint64_t guest_cluster, bool extended)
{
    uint8_t buf[8];
    read_file(path, 40, buf, 8);
    uint64_t l1 = load_be64(buf);
    read_file(path, l1, buf, 8);
    uint64_t l2 = load_be64(buf) & 0x00fffffffffffe00ULL;
    REQUIRE(l2 != 0);
    return l2 + guest_cluster * (extended ? 16 : 8);
}

// Writes `size` bytes in blocks of `block` bytes in a shuffled order (seed
// `seed`), `depth` requests in flight, each block filled with a byte of its
// own; then checks that every block reads back with its byte.  Concurrent
// writes into shared clusters must all land exactly.
inline void write_shuffled_and_verify(AioContext& ctx, BlockBackend& blk, uint64_t size,
                                      uint64_t block, unsigned depth, uint32_t seed)
{
    const uint64_t n = size / block;
    auto fill = [](uint64_t b) { return uint8_t(b * 31 + 1); };
    std::vector<uint64_t> order(n);
    for (uint64_t i = 0; i < n; i++) {
        order[i] = i;
    }
    std::shuffle(order.begin(), order.end(), std::mt19937(seed));
    size_t next = 0, done = 0, failures = 0;
    std::function<void()> issue;
    auto writer = [&](uint64_t b) -> Task<void> {
        std::vector<uint8_t> data(block, fill(b));
        IOVector q(data.data(), data.size());
        if (co_await blk.co_pwritev(b * block, block, q) < 0) {
            failures++;
        }
        done++;
        issue();
    };
    issue = [&] {
        if (next < n) {
            co_spawn(writer(order[next++]));
        }
    };
    for (unsigned i = 0; i < depth; i++) {
        issue();
    }
    while (done < n) {
        ctx.poll(true);
    }
    REQUIRE(failures == 0);
    std::vector<uint8_t> back(size);
    REQUIRE(blk.pread(0, back.size(), back.data()) == 0);
    for (uint64_t b = 0; b < n; b++) {
        if (back[b * block] != fill(b) || back[b * block + block - 1] != fill(b)) {
            FAIL("block " << b << " holds the wrong data");
        }
    }
}

}  // namespace qcow2_test
