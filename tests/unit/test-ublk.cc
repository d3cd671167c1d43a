// The kernel-free parts of the ublk export (export/ublk/ublk-proto.h): the
// device parameters Linux gets for a node's BlockLimits, with its rules
// refused in our words; our zone report as struct blk_zone; the errno each
// request result commits (which the kernel turns into a blk_status_t).
#include <catch2/catch.hpp>

#include <cerrno>

#include "block/zone-error.h"
#include "export-test-util.h"
#include "export/ublk.h"
#include "export/ublk/ublk-proto.h"
#include "qemu/units.h"

using namespace qemu;
using namespace qemu::ublk;

namespace {

constexpr uint32_t kIo = 512 * 1024;

DeviceRequest request(const BlockLimits& bl, uint64_t length, bool writable = true)
{
    DeviceRequest r;
    r.length = length;
    r.limits = &bl;
    r.writable = writable;
    r.max_io_bytes = kIo;
    return r;
}

BlockLimits zoned_limits()
{
    BlockLimits bl;
    bl.zoned = BlockZoneModel::HostManaged;
    bl.zone_size = 64 * MiB;
    bl.zone_capacity = 64 * MiB;
    bl.nr_zones = 8;
    bl.max_open_zones = 4;
    bl.max_active_zones = 6;
    bl.max_append_bytes = 256 * KiB;
    bl.write_granularity = 4096;
    return bl;
}

std::string refusal(const DeviceRequest& r)
{
    Params p;
    Error err;
    CHECK_FALSE(derive_params(r, p, err));
    return err.message;
}

}  // namespace

TEST_CASE("ublk: parameters of a plain node", "[ublk]")
{
    BlockLimits bl;
    bl.request_alignment = 1;
    bl.max_pdiscard = 0;
    Params p;
    Error err;
    REQUIRE(derive_params(request(bl, 1 * GiB + 1000), p, err));
    CHECK(p.len == sizeof(Params));
    CHECK(p.types == (kParamBasic | kParamDiscard));
    CHECK(p.basic.logical_bs_shift == 9);
    CHECK(p.basic.physical_bs_shift == 9);
    // Whole blocks only: the 1000 bytes past 1 GiB are one sector and a bit.
    CHECK(p.basic.dev_sectors == 1 * GiB / 512 + 1);
    CHECK(p.basic.max_sectors == kIo / 512);
    CHECK(p.basic.chunk_sectors == 0);
    CHECK(p.basic.attrs == (kAttrVolatileCache | kAttrFua));
    CHECK(p.discard.discard_granularity == 512);
    CHECK(p.discard.max_discard_segments == 1);
    CHECK(p.discard.max_discard_sectors == UINT32_MAX);

    // Read-only: no cache to flush and nothing to discard.
    REQUIRE(derive_params(request(bl, 1 * GiB, false), p, err));
    CHECK(p.types == kParamBasic);
    CHECK(p.basic.attrs == kAttrReadOnly);

    // Write-through: no volatile cache.
    DeviceRequest wt = request(bl, 1 * GiB);
    wt.writethrough = true;
    REQUIRE(derive_params(wt, p, err));
    CHECK(p.basic.attrs == 0);
}

TEST_CASE("ublk: block sizes and transfer limits from the node", "[ublk]")
{
    BlockLimits bl;
    bl.request_alignment = 4096;  // an O_DIRECT file on a 4K disk
    bl.max_transfer = 128 * KiB;
    bl.opt_transfer = 64 * KiB;
    bl.pdiscard_alignment = 64 * KiB;
    bl.max_pdiscard = 1 * MiB + 100;
    Params p;
    Error err;
    REQUIRE(derive_params(request(bl, 1 * GiB), p, err));
    CHECK(p.basic.logical_bs_shift == 12);
    CHECK(p.basic.physical_bs_shift == 12);
    CHECK(p.basic.io_min_shift == 12);
    CHECK(p.basic.io_opt_shift == 16);
    CHECK(p.basic.max_sectors == 128 * KiB / 512);
    CHECK(p.discard.discard_granularity == 64 * KiB);
    CHECK(p.discard.max_discard_sectors == 1 * MiB / 512);  // whole 4K blocks

    // The user's logical block size, and Linux's rules for it.
    BlockLimits plain;
    DeviceRequest r = request(plain, 1 * GiB);
    r.logical_block_size = 4096;
    REQUIRE(derive_params(r, p, err));
    CHECK(p.basic.logical_bs_shift == 12);
    r.logical_block_size = 1000;
    CHECK(refusal(r) == "ublk: logical-block-size must be a power of two from 512 to 4096");
    r.logical_block_size = 8192;
    CHECK(refusal(r) == "ublk: logical-block-size must be a power of two from 512 to 4096");

    BlockLimits big;
    big.request_alignment = 64 * KiB;
    CHECK(refusal(request(big, 1 * GiB)) ==
          "ublk: the node's block size 65536 is not one Linux accepts (512 to 4096, a power of "
          "two); set logical-block-size");
    CHECK(refusal(request(plain, 100)) == "ublk: the node is smaller than one block");
}

TEST_CASE("ublk: zoned parameters from the zoned limits", "[ublk]")
{
    BlockLimits bl = zoned_limits();
    Params p;
    Error err;
    REQUIRE(derive_params(request(bl, 512 * MiB), p, err));
    CHECK(p.types == (kParamBasic | kParamDiscard | kParamZoned));
    CHECK(p.basic.chunk_sectors == 64 * MiB / 512);
    // The write granularity is the smallest write Linux may send.
    CHECK(p.basic.logical_bs_shift == 12);
    CHECK(p.zoned.max_open_zones == 4);
    CHECK(p.zoned.max_active_zones == 6);
    CHECK(p.zoned.max_zone_append_sectors == 256 * KiB / 512);

    // No append limit of the node's own: the largest request.
    bl.max_append_bytes = 0;
    REQUIRE(derive_params(request(bl, 512 * MiB), p, err));
    CHECK(p.zoned.max_zone_append_sectors == kIo / 512);

    BlockLimits zl = zoned_limits();
    DeviceRequest small = request(zl, 512 * MiB);
    small.logical_block_size = 512;
    CHECK(refusal(small) ==
          "ublk: logical-block-size 512 is smaller than the zone write granularity 4096");
}

TEST_CASE("ublk: zoned nodes Linux cannot take are refused", "[ublk]")
{
    BlockLimits bl = zoned_limits();
    bl.zone_size = 48 * MiB;
    CHECK(refusal(request(bl, 480 * MiB)) ==
          "ublk: zone size 50331648 is not a power of two in sectors, which Linux requires");

    bl = zoned_limits();
    CHECK(refusal(request(bl, 500 * MiB)) ==
          "ublk: the last zone is smaller than the others (size 524288000, zone size 67108864), "
          "which Linux ublk cannot report");

    bl.zoned = BlockZoneModel::HostAware;
    CHECK(refusal(request(bl, 512 * MiB)) ==
          "ublk: host-aware zoned nodes cannot be exported (Linux ublk is host-managed only)");
}

TEST_CASE("ublk: zone report entries as struct blk_zone", "[ublk]")
{
    BlockZoneDescriptor d;
    d.start = 128 * MiB;
    d.length = 64 * MiB;
    d.capacity = 60 * MiB;
    d.wp = 128 * MiB + 4096;
    d.type = BlockZoneType::SequentialWriteRequired;
    d.state = BlockZoneState::ImplicitlyOpen;
    struct blk_zone z = to_blk_zone(d);
    CHECK(z.start == 128 * MiB / 512);
    CHECK(z.len == 64 * MiB / 512);
    CHECK(z.capacity == 60 * MiB / 512);
    CHECK(z.wp == (128 * MiB + 4096) / 512);
    CHECK(z.type == BLK_ZONE_TYPE_SEQWRITE_REQ);
    CHECK(z.cond == BLK_ZONE_COND_IMP_OPEN);
    CHECK(z.non_seq == 0);
    CHECK(z.reset == 0);

    d.state = BlockZoneState::Full;
    d.wp = d.start + d.capacity;
    CHECK(to_blk_zone(d).cond == BLK_ZONE_COND_FULL);
    CHECK(to_blk_zone(d).wp == (128 + 60) * MiB / 512);
    d.state = BlockZoneState::Offline;
    CHECK(to_blk_zone(d).cond == BLK_ZONE_COND_OFFLINE);
    d.state = BlockZoneState::ReadOnly;
    CHECK(to_blk_zone(d).cond == BLK_ZONE_COND_READONLY);

    // Linux refuses a conventional zone whose capacity is not its length.
    BlockZoneDescriptor c;
    c.start = 0;
    c.length = 64 * MiB;
    c.capacity = 0;
    c.type = BlockZoneType::Conventional;
    c.state = BlockZoneState::NotWritePointer;
    z = to_blk_zone(c);
    CHECK(z.type == BLK_ZONE_TYPE_CONVENTIONAL);
    CHECK(z.cond == BLK_ZONE_COND_NOT_WP);
    CHECK(z.capacity == z.len);
}

TEST_CASE("ublk: request results as the errnos the kernel maps", "[ublk]")
{
    CHECK(errno_for_result(0) == 0);
    CHECK(errno_for_result(4096) == 4096);
    CHECK(errno_for_result(zone_error_code(ZoneError::TooManyOpen)) == -ETOOMANYREFS);
    CHECK(errno_for_result(zone_error_code(ZoneError::TooManyActive)) == -EOVERFLOW);
    CHECK(errno_for_result(zone_error_code(ZoneError::InvalidRequest)) == -EINVAL);
    for (ZoneError e : {ZoneError::InvalidWrite, ZoneError::Boundary, ZoneError::Full,
                        ZoneError::ReadOnly, ZoneError::Offline, ZoneError::InvalidTransition}) {
        CHECK(errno_for_result(zone_error_code(e)) == -EIO);
    }
    // Host errors: a full host disk and an unsupported request keep their
    // meaning; a host ETOOMANYREFS is no zone resource error.
    CHECK(errno_for_result(-ENOSPC) == -ENOSPC);
    CHECK(errno_for_result(-ENOTSUP) == -EOPNOTSUPP);
    CHECK(errno_for_result(-EIO) == -EIO);
    CHECK(errno_for_result(-ENOMEM) == -EIO);
    CHECK(errno_for_result(-ETOOMANYREFS) == -EIO);
}

TEST_CASE("ublk: command encodings and request data offsets", "[ublk]")
{
    // _IOWR('u', nr, struct ublksrv_ctrl_cmd) and (..., struct ublksrv_io_cmd)
    // as Linux's ublk_cmd.h spells them.
    CHECK(ioctl_op(kCmdAddDev, sizeof(CtrlCmd)) == 0xc0207504u);
    CHECK(ioctl_op(kIoFetchReq, sizeof(IoCmd)) == 0xc0107520u);
    CHECK(ioctl_op(kIoCommitAndFetchReq, sizeof(IoCmd)) == 0xc0107521u);
    CHECK(io_buf_pos(0, 0) == 0x80000000ull);
    CHECK(io_buf_pos(0, 1) == 0x80000000ull + (1ull << 25));
    CHECK(io_buf_pos(1, 0) == 0x80000000ull + (1ull << 41));
}

TEST_CASE("ublk: bad options are refused before the kernel is asked", "[ublk][graph]")
{
    ublk_export_register();
    export_test::Registry r;
    auto add_error = [&](const std::string& text) { return r.add_error(text); };
    const std::string base = "ublk,id=e0,node-name=q0,writable=on";
    CHECK(add_error(base + ",queue-depth=0") ==
          "Parameter 'queue-depth' expects a value from 1 to 4096");
    CHECK(add_error(base + ",queue-depth=4097") ==
          "Parameter 'queue-depth' expects a value from 1 to 4096");
    CHECK(add_error(base + ",num-queues=0") ==
          "Parameter 'num-queues' expects a value from 1 to 4096");
    CHECK(add_error(base + ",logical-block-size=1000") ==
          "ublk: logical-block-size must be a power of two from 512 to 4096");
}
