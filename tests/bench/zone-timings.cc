// zone-timings: the zoned-qcow2 timings that qemu-img bench cannot take,
// each next to the same work on a plain image, for scripts/bench/bench-zoned.sh.
//
//   zone-timings open IMAGE [RUNS]
//       Opens IMAGE read-only RUNS times (default 20) and prints the fastest
//       open in microseconds and the number of zones (0: not zoned).
//   zone-timings reset IMAGE
//       Frees the first zone of IMAGE (which must be sequential), or its
//       first 256 MiB when it is not zoned: a zone reset
//       on a zoned image, a discard of the same range on a plain one, each
//       followed by a flush, which is when the host clusters are given back
//       (punched out of the image file).  Prints the milliseconds of both
//       and the image file's allocated bytes before and after.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "block/block-backend.h"
#include "qemu/units.h"

using namespace qemu;

namespace {

constexpr uint64_t kPlainZoneBytes = 256 * MiB;

std::unique_ptr<BlockBackend> open_image(const char* path, int flags, AioContext& ctx,
                                         const char* extra)
{
    Error err;
    QDict opts;
    if (extra && !keyval_parse(opts, extra, nullptr, err)) {
        error_report("%s", err.message.c_str());
        exit(1);
    }
    auto blk = BlockBackend::open(std::string(path), opts, flags, ctx, err);
    if (!blk) {
        error_report("%s", err.message.c_str());
        exit(1);
    }
    return blk;
}

int time_open(const char* path, int runs)
{
    AioContext ctx;
    int64_t best = INT64_MAX;
    uint32_t nr_zones = 0;
    for (int i = 0; i < runs; i++) {
        int64_t t0 = AioContext::now_ns();
        auto blk = open_image(path, 0, ctx, nullptr);
        best = std::min(best, AioContext::now_ns() - t0);
        nr_zones = blk->bs()->limits().nr_zones;
    }
    printf("open %.0f us, %u zones\n", double(best) / 1000, nr_zones);
    return 0;
}

int64_t allocated_bytes(BlockBackend& blk)
{
    return run_sync(blk.ctx(), bdrv_protocol_node(blk.bs())->drv_get_allocated_file_size());
}

int time_reset(const char* path)
{
    AioContext ctx;
    auto blk = open_image(path, BDRV_O_RDWR, ctx, "discard=unmap");
    const BlockLimits& bl = blk->bs()->limits();
    bool zoned = bl.zoned != BlockZoneModel::None;
    uint64_t len = zoned ? bl.zone_size : kPlainZoneBytes;
    int64_t before = allocated_bytes(*blk);
    int64_t t0 = AioContext::now_ns();
    int ret = zoned ? run_sync(ctx, blk->co_zone_mgmt(BlockZoneOp::Reset, 0, len))
                    : run_sync(ctx, blk->co_pdiscard(0, len));
    int64_t t1 = AioContext::now_ns();
    if (ret >= 0) {
        ret = blk->flush();
    }
    int64_t t2 = AioContext::now_ns();
    if (ret < 0) {
        error_report("%s: %s failed: %s", path, zoned ? "zone reset" : "discard", strerror(-ret));
        return 1;
    }
    printf("%s %.3f ms, flush %.3f ms, allocated %lld -> %lld bytes\n",
           zoned ? "reset" : "discard", double(t1 - t0) / 1e6, double(t2 - t1) / 1e6,
           (long long)before, (long long)allocated_bytes(*blk));
    return 0;
}

}  // namespace

int main(int argc, char** argv)
{
    set_program_name("zone-timings");
    bdrv_init();
    if (argc >= 3 && strcmp(argv[1], "open") == 0) {
        return time_open(argv[2], argc > 3 ? atoi(argv[3]) : 20);
    }
    if (argc == 3 && strcmp(argv[1], "reset") == 0) {
        return time_reset(argv[2]);
    }
    fprintf(stderr, "usage: zone-timings open IMAGE [RUNS] | reset IMAGE\n");
    return 1;
}
