// libFuzzer harness: the fuzz input is a qcow2 image file.
//
// Each input is opened with our qcow2 driver on top of "fuzz-mem", an
// in-memory protocol driver that starts every node from a copy of the
// input, and goes through what a user's tools would do with it:
//   1. read-only: read the disk (bounded) and walk its block status;
//   2. read-write: a few writes, zero writes, a discard, a compressed write,
//      a resize and flushes; on a zoned image (docs/interop/qcow2-zoned.rst)
//      also a zone report, zone management and appends;
//   3. read-write with repair, as qemu-img check -r all.
// Errors are expected (most inputs are not valid images); crashes,
// sanitizer reports, hangs and leaks are bugs.  Nothing touches the disk.
//
// Build: CXX=clang++ meson setup build-fuzz -Dfuzzing=true (see
// docs/devel/testing-interop.rst); run: build-fuzz/tests/fuzz/fuzz-qcow2-open
// CORPUS_DIR, with a corpus from tests/fuzz/make-corpus.sh.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "block/block-backend.h"
#include "block/zoned.h"
#include "qemu/bswap.h"

namespace qemu::fuzz {
namespace {

// The file a node of fuzz-mem may grow to: enough for the writes below on
// any cluster size, small enough to keep each run fast.
constexpr uint64_t kMaxFileBytes = 64 * 1024 * 1024;
// How much guest data one input may make us read, and how many block
// status queries: images can claim exabytes.
constexpr uint64_t kReadBudget = 8 * 1024 * 1024;
constexpr uint64_t kReadChunk = 256 * 1024;
constexpr uint64_t kReadHead = 1024 * 1024;
constexpr int kStatusBudget = 2048;

// The current input; every fuzz-mem node starts from a copy of it.
std::vector<uint8_t> g_input;

class FuzzMemState : public BlockDriverState {
public:
    using BlockDriverState::BlockDriverState;

    Task<int> drv_open(QDict&, Error&) override
    {
        data_ = g_input;
        set_total_bytes(data_.size());
        co_return 0;
    }

    // The generic layer rounds the size up to sectors: the tail past the
    // input reads as zeroes, as a file's does.
    Task<int> drv_preadv(uint64_t offset, uint64_t bytes, IOVector& qiov, size_t qiov_offset,
                         unsigned) override
    {
        uint64_t avail = offset < data_.size() ? std::min<uint64_t>(bytes, data_.size() - offset) : 0;
        qiov.from_buf(qiov_offset, data_.data() + offset, avail);
        qiov.memset(qiov_offset + avail, 0, bytes - avail);
        co_return 0;
    }

    Task<int> drv_pwritev(uint64_t offset, uint64_t bytes, IOVector& qiov, size_t qiov_offset,
                          unsigned) override
    {
        if (offset + bytes > kMaxFileBytes) {
            co_return -ENOSPC;
        }
        if (offset + bytes > data_.size()) {
            data_.resize(offset + bytes);
        }
        qiov.to_buf(qiov_offset, data_.data() + offset, bytes);
        co_return 0;
    }

    Task<int> drv_truncate(uint64_t offset, bool, PreallocMode prealloc, unsigned,
                           Error& err) override
    {
        if (offset > kMaxFileBytes) {
            err.set("fuzz-mem files are limited to %llu bytes", (unsigned long long)kMaxFileBytes);
            co_return -EFBIG;
        }
        if (prealloc != PreallocMode::Off && prealloc != PreallocMode::Full &&
            prealloc != PreallocMode::Falloc) {
            err.set("Unsupported preallocation mode '%s'", prealloc_mode_name(prealloc));
            co_return -ENOTSUP;
        }
        data_.resize(offset);
        set_total_bytes(offset);
        co_return 0;
    }

private:
    std::vector<uint8_t> data_;
};

class FuzzMemDriver : public BlockDriver {
public:
    std::string_view name() const override { return "fuzz-mem"; }
    bool is_protocol() const override { return true; }
    bool needs_filename() const override { return false; }
    const OptionSchema& open_schema() const override
    {
        static const OptionSchema schema = {};
        return schema;
    }
    std::shared_ptr<BlockDriverState> new_node(AioContext& ctx) const override
    {
        return std::make_shared<FuzzMemState>(*this, ctx);
    }
};

AioContext& fuzz_context()
{
    static AioContext* ctx = [] {
        auto* c = new AioContext();
        bdrv_init();
        static const FuzzMemDriver driver;
        bdrv_register(&driver);
        return c;
    }();
    return *ctx;
}

// Whether the input claims an external data file (incompatible bit 2 of a
// version 3 header): it then gets an in-memory one too, never the file its
// header names.
bool has_data_file_bit()
{
    return g_input.size() >= 80 && load_be32(g_input.data() + 4) >= 3 && (g_input[79] & 4);
}

// Whether the input names a backing file (header bytes 8-15): it then gets
// an in-memory one (zeroes, 1 MiB, so that reads past its end are covered
// too), never the file its header names.
bool has_backing_file()
{
    return g_input.size() >= 16 && load_be64(g_input.data() + 8) != 0;
}

std::unique_ptr<BlockBackend> open_image(int flags)
{
    QDict options;
    options.set("driver", "qcow2");
    options.set("file.driver", "fuzz-mem");
    if (has_backing_file()) {
        options.set("backing.driver", "null-co");
        options.set("backing.read-zeroes", "on");
        options.set("backing.size", "1M");
    }
    if (has_data_file_bit()) {
        options.set("data-file.driver", "fuzz-mem");
    }
    // No cache-clean timer: nothing would ever run it here.
    options.set("cache-clean-interval", "0");
    Error err;
    return BlockBackend::open(std::nullopt, std::move(options), flags, fuzz_context(), err);
}

// Reads the start of the disk in full, then the data its block status
// reports, within the budgets.
void read_disk(BlockBackend& blk)
{
    uint64_t size = blk.getlength();
    std::vector<uint8_t> buf(kReadChunk);
    uint64_t budget = kReadBudget;
    for (uint64_t off = 0; off < std::min(size, kReadHead); off += kReadChunk) {
        uint64_t len = std::min(kReadChunk, size - off);
        if (blk.pread(off, len, buf.data()) < 0) {
            break;
        }
        budget -= len;
    }
    uint64_t off = 0;
    for (int i = 0; i < kStatusBudget && off < size; i++) {
        BlockStatus st;
        int ret = run_sync(blk.ctx(), bdrv_co_block_status_layer(blk.bs(), off, size - off, st));
        if (ret < 0 || st.pnum == 0) {
            break;
        }
        if ((st.flags & BDRV_BLOCK_DATA) && budget > 0) {
            uint64_t len = std::min({st.pnum, kReadChunk, budget});
            blk.pread(off, len, buf.data());
            budget -= len;
        }
        off += st.pnum;
    }
    // The last sector: the end of the L1 table's reach.
    if (size >= 512) {
        blk.pread(size - 512, 512, buf.data());
    }
}

// The zoned API on the first zones (their state comes from the image).
void exercise_zones(BlockBackend& blk)
{
    const BlockLimits& bl = blk.bs()->limits();
    if (bl.zoned == BlockZoneModel::None || bl.zone_size == 0) {
        return;
    }
    AioContext& ctx = blk.ctx();
    uint32_t nr = std::min<uint32_t>(bl.nr_zones, 64);
    std::vector<BlockZoneDescriptor> zones(nr);
    (void)run_sync(ctx, blk.co_zone_report(0, nr, zones.data()));
    std::vector<uint8_t> buf(4096, 0x5a);
    uint32_t touched = std::min<uint32_t>(bl.nr_zones, 4);
    for (uint32_t i = 0; i < touched; i++) {
        uint64_t start = uint64_t(i) * bl.zone_size;
        (void)run_sync(ctx, blk.co_zone_mgmt(BlockZoneOp::Open, start, bl.zone_size));
        uint64_t at = start;
        IOVector qiov(buf.data(), buf.size());
        if (run_sync(ctx, blk.co_zone_append(at, qiov)) >= 0 && at + buf.size() <= blk.getlength()) {
            blk.pwrite(at + buf.size(), buf.size(), buf.data());
        }
        (void)run_sync(ctx, blk.co_zone_mgmt(BlockZoneOp::Close, start, bl.zone_size));
    }
    (void)run_sync(ctx, blk.co_zone_mgmt(BlockZoneOp::Finish, 0, bl.zone_size));
    (void)run_sync(ctx, blk.co_zone_mgmt(BlockZoneOp::Reset, bl.zone_size, bl.zone_size));
    (void)blk.flush();
}

void check_image(BlockBackend& blk, unsigned fix)
{
    BdrvCheckResult result;
    (void)run_sync(blk.ctx(), blk.bs()->drv_check(result, fix));
}

// A little of everything that allocates, frees and rewrites metadata.
void write_disk(BlockBackend& blk, uint32_t seed)
{
    uint64_t size = blk.getlength();
    if (size < 4096) {
        return;
    }
    BlockDriverInfo bdi;
    uint64_t cluster = 65536;
    if (blk.bs()->drv_get_info(bdi) >= 0 && bdi.cluster_size >= 512 && bdi.cluster_size <= 2 * 1024 * 1024) {
        cluster = bdi.cluster_size;
    }
    std::vector<uint8_t> buf(std::max<uint64_t>(cluster, 8192), uint8_t(seed));
    // [0, size - 4096]: a 4 KiB disk has exactly one such place.
    uint64_t somewhere = (uint64_t(seed) * 2654435761u) % (size - 4095);
    AioContext& ctx = blk.ctx();
    blk.pwrite(0, 4096, buf.data());
    blk.pwrite(somewhere + 7, 3000, buf.data());
    blk.pwrite(size - 1000, 1000, buf.data());
    (void)run_sync(ctx, blk.co_pwrite_zeroes(somewhere & ~(cluster - 1), std::min(size, cluster),
                                             BDRV_REQ_MAY_UNMAP));
    (void)run_sync(ctx, blk.co_pwrite_zeroes(4096 + 100, 5000, 0));
    (void)run_sync(ctx, blk.co_pdiscard(0, std::min(size, 2 * cluster)));
    if (size >= cluster) {
        IOVector qiov(buf.data(), cluster);
        (void)run_sync(ctx, blk.co_pwritev(0, cluster, qiov, BDRV_REQ_WRITE_COMPRESSED));
    }
    (void)blk.flush();
    if (size < (1ULL << 40)) {
        Error err;
        if (run_sync(ctx, blk.co_truncate(size + cluster * 3, false, PreallocMode::Off, 0, err)) >= 0) {
            blk.pwrite(size + cluster, 4096, buf.data());
        }
    }
    (void)blk.flush();
}

}  // namespace
}  // namespace qemu::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    using namespace qemu;
    using namespace qemu::fuzz;
    g_input.assign(data, data + size);
    uint32_t seed = size ? data[size / 2] : 0;

    if (auto blk = open_image(0)) {
        read_disk(*blk);
    }
    if (auto blk = open_image(BDRV_O_RDWR | BDRV_O_UNMAP)) {
        write_disk(*blk, seed);
        exercise_zones(*blk);
    }
    if (auto blk = open_image(BDRV_O_RDWR | BDRV_O_CHECK)) {
        check_image(*blk, BDRV_FIX_LEAKS | BDRV_FIX_ERRORS);
    }
    return 0;
}
