// A qcow2 image in a scratch file, opened over crash-sim so that tests can
// inject host errors under it (tests/unit/test-zone-*.cc).
#pragma once

#include "block/crash-sim.h"
#include "qcow2-test-util.h"

namespace qcow2_test {

// Options opening the qcow2 image at `path` over crash-sim.
inline QDict crash_sim_options(const std::string& path)
{
    QDict o;
    o.set("driver", "qcow2");
    o.set("file.driver", "crash-sim");
    o.set("file.file.driver", "file");
    o.set("file.file.filename", path);
    // Reopened at once: the lock of the closed node may linger (issue 12).
    o.set("file.file.locking", "off");
    // crash-sim is the disk whose cache matters; the host file need not
    // be synced (which makes hundreds of runs slow).
    o.set("file.file.cache.no-flush", "on");
    return o;
}

struct SimImage {
    CreatedImage img;
    AioContext ctx;
    std::unique_ptr<BlockBackend> blk;
    std::shared_ptr<CrashSimState> sim;

    explicit SimImage(const std::string& opts) : img(opts) { open(); }

    void open()
    {
        QDict o = crash_sim_options(img.path);
        Error err;
        blk = BlockBackend::open(std::nullopt, o, BDRV_O_RDWR, ctx, err);
        INFO(err.message);
        REQUIRE(blk);
        sim = std::dynamic_pointer_cast<CrashSimState>(blk->bs()->file()->bs);
        REQUIRE(sim);
    }
    // Closes (which flushes) and opens again: what a restart finds.
    void reopen()
    {
        sim.reset();
        blk.reset();
        open();
    }
    BlockZoneDescriptor report_one(uint64_t offset)
    {
        BlockZoneDescriptor d;
        uint32_t n = 1;
        REQUIRE(run_sync(ctx, blk->co_zone_report(offset, n, &d)) == 0);
        return d;
    }
};

}  // namespace qcow2_test
