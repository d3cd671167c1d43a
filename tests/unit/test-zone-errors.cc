// The error contract of zoned nodes (include/block/zone-error.h): zone
// errors are result codes apart from host errnos, mapped to NVMe and
// virtio-blk statuses, and a host error under a zoned node (a full disk, an
// EIO, injected by crash-sim) never turns into a zone error.
#include <catch2/catch.hpp>

#include <cstring>

#include "block/block-backend.h"
#include "block/crash-sim.h"
#include "block/zone-error.h"
#include "qemu/units.h"
#include "crash-sim-test-util.h"

using namespace qemu;

namespace {

const ZoneError kAllZoneErrors[] = {
    ZoneError::InvalidRequest, ZoneError::InvalidWrite,  ZoneError::Boundary,
    ZoneError::Full,           ZoneError::ReadOnly,      ZoneError::Offline,
    ZoneError::TooManyOpen,    ZoneError::TooManyActive, ZoneError::InvalidTransition,
};

using FaultyZonedImage = qcow2_test::SimImage;

}  // namespace

TEST_CASE("zone errors: result codes that no errno collides with", "[zone-error]")
{
    for (ZoneError e : kAllZoneErrors) {
        int code = zone_error_code(e);
        INFO(code);
        REQUIRE(code <= -kResultCodeBase);
        REQUIRE(zone_error_of(code) == e);
        // Printed as the errno QEMU's tools print for it.
        REQUIRE(result_errno(code) == zone_error_errno(e));
        REQUIRE(std::string(result_strerror(code)) == strerror(zone_error_errno(e)));
    }
    REQUIRE(zone_error_code(ZoneError::None) == 0);
    REQUIRE(zone_error_of(0) == ZoneError::None);
    for (int err = 1; err < 4096; err++) {
        REQUIRE(zone_error_of(-err) == ZoneError::None);
        REQUIRE(result_errno(-err) == err);
    }
    // What users see stays as before: the errno each kind printed as.
    REQUIRE(std::string(result_strerror(zone_error_code(ZoneError::Full))) == "No space left on device");
    REQUIRE(std::string(result_strerror(zone_error_code(ZoneError::InvalidWrite))) == "Illegal seek");
    REQUIRE(std::string(result_strerror(zone_error_code(ZoneError::InvalidTransition))) ==
            "Operation not permitted");
    Error err;
    err.set_errno(-zone_error_code(ZoneError::Boundary), "write failed");
    REQUIRE(err.message == "write failed: Numerical result out of range");
}

TEST_CASE("zone errors: NVMe and virtio-blk statuses", "[zone-error]")
{
    auto nvme = [](int ret, BlockRequestKind kind = BlockRequestKind::Write) {
        return nvme_status_from_result(ret, kind).value();
    };
    constexpr uint16_t kDnr = 0x4000;
    // Zone errors: command specific (SCT 1h), do not retry.
    REQUIRE(nvme(zone_error_code(ZoneError::Boundary)) == (kDnr | 0x1b8));
    REQUIRE(nvme(zone_error_code(ZoneError::Full)) == (kDnr | 0x1b9));
    REQUIRE(nvme(zone_error_code(ZoneError::ReadOnly)) == (kDnr | 0x1ba));
    REQUIRE(nvme(zone_error_code(ZoneError::Offline), BlockRequestKind::Read) == (kDnr | 0x1bb));
    REQUIRE(nvme(zone_error_code(ZoneError::InvalidWrite)) == (kDnr | 0x1bc));
    REQUIRE(nvme(zone_error_code(ZoneError::TooManyActive)) == (kDnr | 0x1bd));
    REQUIRE(nvme(zone_error_code(ZoneError::TooManyOpen)) == (kDnr | 0x1be));
    REQUIRE(nvme(zone_error_code(ZoneError::InvalidTransition), BlockRequestKind::ZoneManagement) ==
            (kDnr | 0x1bf));
    REQUIRE(nvme(zone_error_code(ZoneError::InvalidRequest)) == (kDnr | 0x002));
    // Host errors: never a zone status.
    REQUIRE(nvme(-ENOSPC) == (kDnr | 0x081));  // Capacity Exceeded
    REQUIRE(nvme(-EIO) == 0x280);              // Write Fault
    REQUIRE(nvme(-EIO, BlockRequestKind::ZoneAppend) == 0x280);
    REQUIRE(nvme(-EIO, BlockRequestKind::Read) == 0x281);  // Unrecovered Read Error
    REQUIRE(nvme(-EIO, BlockRequestKind::ZoneManagement) == 0x006);  // Internal Error
    REQUIRE(nvme(-EPERM, BlockRequestKind::ZoneManagement) == 0x006);
    REQUIRE(nvme(0) == 0);
    NvmeStatus full = nvme_status_from_result(zone_error_code(ZoneError::Full), BlockRequestKind::Write);
    REQUIRE(full.sct == 1);
    REQUIRE(full.sc == 0xb9);

    REQUIRE(virtio_blk_status_from_result(0) == VIRTIO_BLK_S_OK);
    REQUIRE(virtio_blk_status_from_result(zone_error_code(ZoneError::Full)) == VIRTIO_BLK_S_ZONE_INVALID_CMD);
    REQUIRE(virtio_blk_status_from_result(zone_error_code(ZoneError::Boundary)) ==
            VIRTIO_BLK_S_ZONE_INVALID_CMD);
    REQUIRE(virtio_blk_status_from_result(zone_error_code(ZoneError::InvalidTransition)) ==
            VIRTIO_BLK_S_ZONE_INVALID_CMD);
    REQUIRE(virtio_blk_status_from_result(zone_error_code(ZoneError::InvalidWrite)) ==
            VIRTIO_BLK_S_ZONE_UNALIGNED_WP);
    REQUIRE(virtio_blk_status_from_result(zone_error_code(ZoneError::TooManyOpen)) ==
            VIRTIO_BLK_S_ZONE_OPEN_RESOURCE);
    REQUIRE(virtio_blk_status_from_result(zone_error_code(ZoneError::TooManyActive)) ==
            VIRTIO_BLK_S_ZONE_ACTIVE_RESOURCE);
    REQUIRE(virtio_blk_status_from_result(-ENOSPC) == VIRTIO_BLK_S_IOERR);
    REQUIRE(virtio_blk_status_from_result(-EIO) == VIRTIO_BLK_S_IOERR);
    REQUIRE(virtio_blk_status_from_result(-EPERM) == VIRTIO_BLK_S_IOERR);
    REQUIRE(virtio_blk_status_from_result(-ENOTSUP) == VIRTIO_BLK_S_UNSUPP);
}

TEST_CASE("zone errors: a full host disk under a zoned node is no full zone", "[zone-error]")
{
    FaultyZonedImage t("size=16M,cluster_size=4k,zone.mode=host-managed,zone.size=4M,"
                       "zone.max_append_bytes=64k");
    std::vector<uint8_t> d(4096, 0x5a);
    REQUIRE(t.blk->pwrite(0, 4096, d.data()) == 0);

    t.sim->set_full(true);
    for (int attempt = 0; attempt < 2; attempt++) {
        int ret = t.blk->pwrite(4096, 4096, d.data());
        REQUIRE(ret == -ENOSPC);
        REQUIRE(zone_error_of(ret) == ZoneError::None);
        REQUIRE(nvme_status_from_result(ret, BlockRequestKind::Write).value() == (0x4000 | 0x081));
        REQUIRE(virtio_blk_status_from_result(ret) == VIRTIO_BLK_S_IOERR);
        REQUIRE(t.report_one(0).wp == 4096);  // nothing changed
        REQUIRE(t.report_one(0).state == BlockZoneState::ImplicitlyOpen);
    }
    IOVector q(d.data(), 4096);
    uint64_t where = 4 * MiB;
    int ret = run_sync(t.ctx, t.blk->co_zone_append(where, q));
    REQUIRE(ret == -ENOSPC);
    REQUIRE(zone_error_of(ret) == ZoneError::None);
    REQUIRE(t.report_one(4 * MiB).state == BlockZoneState::Empty);
    ret = run_sync(t.ctx, t.blk->co_pwrite_zeroes(4096, 8192));
    REQUIRE(ret == -ENOSPC);
    REQUIRE(t.report_one(0).wp == 4096);

    // Space again: the same write now does its I/O.
    t.sim->set_full(false);
    REQUIRE(t.blk->pwrite(4096, 4096, d.data()) == 0);
    REQUIRE(t.report_one(0).wp == 8192);

    // A full zone is a zone error, whatever the host disk says.
    REQUIRE(run_sync(t.ctx, t.blk->co_zone_mgmt(BlockZoneOp::Finish, 8 * MiB, 4 * MiB)) == 0);
    for (bool full_disk : {false, true}) {
        t.sim->set_full(full_disk);
        ret = t.blk->pwrite(8 * MiB, 4096, d.data());
        REQUIRE(zone_error_of(ret) == ZoneError::Full);
        REQUIRE(nvme_status_from_result(ret, BlockRequestKind::Write).value() == (0x4000 | 0x1b9));
        REQUIRE(virtio_blk_status_from_result(ret) == VIRTIO_BLK_S_ZONE_INVALID_CMD);
    }
    t.sim->set_full(false);
}

TEST_CASE("zone errors: an EIO under a zoned node is no zone error", "[zone-error]")
{
    FaultyZonedImage t("size=16M,cluster_size=4k,zone.mode=host-managed,zone.size=4M");
    std::vector<uint8_t> d(4096, 0x33);
    REQUIRE(t.blk->pwrite(0, 4096, d.data()) == 0);
    t.sim->fail_request(t.sim->requests() + 1, EIO);
    int ret = t.blk->pwrite(4096, 4096, d.data());
    REQUIRE(ret == -EIO);
    REQUIRE(zone_error_of(ret) == ZoneError::None);
    REQUIRE(nvme_status_from_result(ret, BlockRequestKind::Write).value() == 0x280);
    REQUIRE(t.report_one(0).wp == 4096);
    REQUIRE(t.blk->pwrite(4096, 4096, d.data()) == 0);
    REQUIRE(t.report_one(0).wp == 8192);
}

TEST_CASE("zone errors: the crash-sim options inject host errors", "[zone-error][crash-sim]")
{
    qcow2_test::CreatedImage img("size=4M,zone.mode=host-managed,zone.size=1M");
    AioContext ctx;
    QDict o;
    o.set("driver", "qcow2");
    o.set("file.driver", "crash-sim");
    o.set("file.full-after", "1");
    o.set("file.file.driver", "file");
    o.set("file.file.filename", img.path);
    Error err;
    auto blk = BlockBackend::open(std::nullopt, o, BDRV_O_RDWR, ctx, err);
    INFO(err.message);
    REQUIRE(blk);
    std::vector<uint8_t> d(512, 1);
    REQUIRE(blk->pwrite(0, 512, d.data()) == -ENOSPC);
    REQUIRE(blk->pread(0, 512, d.data()) == 0);
    blk.reset();

    QDict bad;
    bad.set("driver", "crash-sim");
    bad.set("fail-errno", "0");
    bad.set("file.driver", "file");
    bad.set("file.filename", img.path);
    REQUIRE_FALSE(BlockBackend::open(std::nullopt, bad, BDRV_O_RDWR, ctx, err));
    REQUIRE(err.message == "crash-sim: fail-errno must be an errno value (1 to 4095)");
}

TEST_CASE("zone errors: writes to a read-only backend fail with EPERM", "[zone-error]")
{
    qcow2_test::CreatedImage img("size=8M,zone.mode=host-managed,zone.size=1M");
    AioContext ctx;
    auto blk = img.open(ctx, "", 0);
    std::vector<uint8_t> d(4096, 0);
    REQUIRE(blk->pwrite(0, 4096, d.data()) == -EPERM);
    REQUIRE(run_sync(ctx, blk->co_pwrite_zeroes(0, 4096)) == -EPERM);
    REQUIRE(run_sync(ctx, blk->co_pdiscard(0, 4096)) == -EPERM);
    REQUIRE(run_sync(ctx, blk->co_zone_mgmt(BlockZoneOp::Reset, 0, 1 * MiB)) == -EPERM);
    IOVector q(d.data(), 4096);
    uint64_t where = 0;
    REQUIRE(run_sync(ctx, blk->co_zone_append(where, q)) == -EPERM);
    // Not a zone error: the node's permission, not a zone's state.
    REQUIRE(zone_error_of(-EPERM) == ZoneError::None);
}
