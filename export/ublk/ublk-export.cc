// The `ublk` export type: a node served to the local kernel as
// /dev/ublkbN through Linux's userspace block driver (ublk_drv, zoned
// since Linux 6.6).  Upstream QEMU has no ublk export; the keys follow its
// vduse-blk export's:
//
//   --export type=ublk,id=e0,node-name=n0,writable=on[,num-queues=N]
//            [,queue-depth=N][,logical-block-size=N]
//
// The kernel chooses the device number (query-block-exports' "dev-id").
// Data moves by user copy (UBLK_F_USER_COPY, Linux 6.5+, which zoned
// devices require): pread()/pwrite() on /dev/ublkcN at the request's
// offset copy between the kernel's request pages and our buffer.
//
// Lifecycle: ADD_DEV, SET_PARAMS, one FETCH_REQ per tag of each queue,
// START_DEV (which already reads the partition table through us, so it
// runs asynchronously while the tags serve); on delete STOP_DEV (the
// kernel flushes through us, then aborts the fetches), close, DEL_DEV.
// A daemon killed without deleting leaves a stopped device the kernel
// removes with DEL_DEV (`ublk del`); its data is what was flushed.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "export/export.h"
#include "export/ublk.h"
#include "qemu/iov.h"
#include "ublk-proto.h"
#include "ublk-ring.h"

namespace qemu {

namespace {

using namespace ublk;

constexpr uint32_t kDefaultQueueDepth = 128;
// The largest request (dev_info.max_io_buf_bytes): ublksrv's default.
constexpr uint32_t kMaxIoBytes = 512 * 1024;
// How long the daemon waits for udev or devtmpfs to create /dev/ublkcN.
constexpr int64_t kCharDevWaitNs = 10'000'000'000;

struct QueueConfig {
    uint32_t num_queues = 1;
    uint32_t queue_depth = kDefaultQueueDepth;
};

class UblkExport : public BlockExport {
public:
    UblkExport(const BlockExportOptions& o, std::unique_ptr<BlockBackend> blk)
        : BlockExport(o, std::move(blk))
    {
    }
    ~UblkExport() override;

    // Creates and starts the device; on failure everything created is
    // removed again and err says why.
    Task<bool> co_start(QueueConfig q, const Params& params, Error& err);

    std::vector<std::pair<std::string, int64_t>> info() const override
    {
        return {{"dev-id", int64_t(dev_id_)}};
    }

protected:
    Task<void> co_stop(bool) override { co_await co_teardown(); }

private:
    Task<int> ctrl(uint32_t nr, void* buf, uint16_t len, uint64_t data0 = 0);
    Task<bool> co_open_char_dev(Error& err);
    bool map_queues(Error& err);
    Task<void> co_serve_tag(uint16_t q, uint16_t tag);
    Task<int> co_handle(uint16_t q, uint16_t tag, const IoDesc& d, uint64_t& append_lba);
    Task<int> co_read(uint64_t pos, uint64_t off, uint64_t len);
    Task<int> co_write(uint64_t pos, uint64_t off, uint64_t len, uint32_t flags,
                       uint64_t* append_lba);
    Task<int> co_report(uint64_t pos, uint64_t off, uint32_t nr_zones);
    Task<void> co_teardown();

    int ctl_fd_ = -1;
    int char_fd_ = -1;
    std::unique_ptr<UblkRing> ring_;
    uint32_t dev_id_ = UINT32_MAX;
    bool added_ = false;
    uint32_t num_queues_ = 0;
    uint32_t depth_ = 0;
    uint64_t zone_size_ = 0;
    std::vector<void*> iods_;  // per queue: the mmap'd IoDesc array
    size_t iod_map_size_ = 0;
    RequestCounter tags_;      // tag coroutines running
};

UblkExport::~UblkExport()
{
    // co_teardown() ran (co_shutdown) or co_start() failed and cleaned up.
    if (ctl_fd_ >= 0) {
        close(ctl_fd_);
    }
}

Task<int> UblkExport::ctrl(uint32_t nr, void* buf, uint16_t len, uint64_t data0)
{
    CtrlCmd c{};
    c.dev_id = dev_id_;
    c.queue_id = 0xffff;
    c.addr = uint64_t(uintptr_t(buf));
    c.len = len;
    c.data[0] = data0;
    int r = co_await ring_->co_cmd(ctl_fd_, ioctl_op(nr, sizeof(c)), &c, sizeof(c));
    co_return r;
}

Task<bool> UblkExport::co_open_char_dev(Error& err)
{
    std::string path = "/dev/ublkc" + std::to_string(dev_id_);
    int64_t deadline = AioContext::now_ns() + kCharDevWaitNs;
    for (;;) {
        char_fd_ = open(path.c_str(), O_RDWR | O_CLOEXEC);
        if (char_fd_ >= 0) {
            co_return true;
        }
        if (errno != ENOENT || AioContext::now_ns() > deadline) {
            err.set_errno(errno, "ublk: %s", path.c_str());
            co_return false;
        }
        co_await ctx().sleep_ns(10'000'000);
    }
}

bool UblkExport::map_queues(Error& err)
{
    long page = sysconf(_SC_PAGESIZE);
    auto round_up = [&](size_t v) { return (v + page - 1) / page * page; };
    iod_map_size_ = round_up(depth_ * sizeof(IoDesc));
    // Each queue's descriptors sit at a stride of the largest queue's.
    size_t stride = round_up(kMaxQueueDepth * sizeof(IoDesc));
    for (uint32_t q = 0; q < num_queues_; q++) {
        void* p = mmap(nullptr, iod_map_size_, PROT_READ, MAP_SHARED | MAP_POPULATE, char_fd_,
                       off_t(q * stride));
        if (p == MAP_FAILED) {
            err.set_errno(errno, "ublk: cannot map the request descriptors of queue %u", q);
            return false;
        }
        iods_.push_back(p);
    }
    return true;
}

Task<bool> UblkExport::co_start(QueueConfig qc, const Params& params, Error& err)
{
    ctl_fd_ = open("/dev/ublk-control", O_RDWR | O_CLOEXEC);
    if (ctl_fd_ < 0) {
        err.set_errno(errno, "ublk: /dev/ublk-control");
        if (errno == ENOENT) {
            err.message += "; load the ublk_drv module";
        }
        co_return false;
    }
    ring_ = UblkRing::create(ctx(), qc.num_queues * qc.queue_depth + 8, err);
    if (!ring_) {
        co_return false;
    }
    DevInfo info{};
    info.nr_hw_queues = uint16_t(qc.num_queues);
    info.queue_depth = uint16_t(qc.queue_depth);
    info.max_io_buf_bytes = kMaxIoBytes;
    info.dev_id = UINT32_MAX;  // the kernel chooses
    bool zoned = params.types & kParamZoned;
    info.flags = kFlagUserCopy | (zoned ? kFlagZoned : 0);
    int r = co_await ctrl(kCmdAddDev, &info, sizeof(info));
    if (r < 0) {
        err.set_errno(r, zoned ? "ublk: cannot add a zoned device (Linux 6.6 or later with "
                                 "CONFIG_BLK_DEV_ZONED has zoned ublk)"
                               : "ublk: cannot add a device");
        co_await co_teardown();
        co_return false;
    }
    added_ = true;
    dev_id_ = info.dev_id;
    num_queues_ = info.nr_hw_queues;  // at most the number of CPUs
    depth_ = info.queue_depth;
    zone_size_ = uint64_t(params.basic.chunk_sectors) * 512;
    if (!(info.flags & kFlagUserCopy)) {
        err.set("ublk: the kernel has no user copy (UBLK_F_USER_COPY, Linux 6.5 or later)");
        co_await co_teardown();
        co_return false;
    }
    Params p = params;
    r = co_await ctrl(kCmdSetParams, &p, sizeof(p));
    bool ok = r >= 0;
    if (!ok) {
        err.set_errno(r, "ublk: the kernel refused the device parameters");
    } else {
        ok = co_await co_open_char_dev(err);
    }
    if (!ok || !map_queues(err)) {
        co_await co_teardown();
        co_return false;
    }
    for (uint32_t q = 0; q < num_queues_; q++) {
        for (uint32_t t = 0; t < depth_; t++) {
            co_spawn(co_serve_tag(uint16_t(q), uint16_t(t)));
        }
    }
    r = co_await ctrl(kCmdStartDev, nullptr, 0, uint64_t(getpid()));
    if (r < 0) {
        err.set_errno(r, "ublk: cannot start device %u", dev_id_);
        co_await co_teardown();
        co_return false;
    }
    co_return true;
}

Task<void> UblkExport::co_serve_tag(uint16_t q, uint16_t tag)
{
    RequestCounter::Guard running(tags_);
    IoCmd cmd{q, tag, 0, 0};
    uint32_t op = kIoFetchReq;
    for (;;) {
        int r = co_await ring_->co_cmd(char_fd_, ioctl_op(op, sizeof(cmd)), &cmd, sizeof(cmd));
        if (r != 0) {
            if (r != kIoResAbort) {
                warn_report("ublk: device %u queue %u tag %u: %s", dev_id_, q, tag,
                            strerror(-r));
            }
            co_return;  // aborted: the device is stopping
        }
        // The kernel rewrites the descriptor only for the tag's next
        // request, which it cannot send before our commit.
        IoDesc d;
        memcpy(&d, static_cast<const IoDesc*>(iods_[q]) + tag, sizeof(d));
        uint64_t lba = 0;
        cmd.result = co_await co_handle(q, tag, d, lba);
        cmd.addr = lba;
        op = kIoCommitAndFetchReq;
    }
}

Task<int> UblkExport::co_handle(uint16_t q, uint16_t tag, const IoDesc& d, uint64_t& append_lba)
{
    uint64_t pos = io_buf_pos(q, tag);
    uint64_t off = d.start_sector * 512;
    uint64_t len = uint64_t(d.nr_sectors) * 512;
    uint32_t flags = d.op_flags >> 8 << 8;
    int r;
    switch (d.op_flags & 0xff) {
    case kOpRead:
        co_return co_await co_read(pos, off, len);
    case kOpWrite:
        co_return co_await co_write(pos, off, len, flags, nullptr);
    case kOpZoneAppend:
        co_return co_await co_write(pos, off, len, flags, &append_lba);
    case kOpFlush:
        r = co_await blk().co_flush();
        break;
    case kOpDiscard:
        r = co_await blk().co_pdiscard(off, len);
        break;
    case kOpWriteZeroes:
        r = co_await blk().co_pwrite_zeroes(
            off, len, (flags & kIoFlagNoUnmap) ? 0 : unsigned(BDRV_REQ_MAY_UNMAP));
        break;
    case kOpZoneOpen:
        r = co_await blk().co_zone_mgmt(BlockZoneOp::Open, off, zone_size_);
        break;
    case kOpZoneClose:
        r = co_await blk().co_zone_mgmt(BlockZoneOp::Close, off, zone_size_);
        break;
    case kOpZoneFinish:
        r = co_await blk().co_zone_mgmt(BlockZoneOp::Finish, off, zone_size_);
        break;
    case kOpZoneReset:
        r = co_await blk().co_zone_mgmt(BlockZoneOp::Reset, off, zone_size_);
        break;
    case kOpZoneResetAll:
        r = co_await blk().co_zone_mgmt(BlockZoneOp::Reset, 0, blk().getlength());
        break;
    case kOpReportZones:
        co_return co_await co_report(pos, off, d.nr_sectors);
    default:
        co_return -EOPNOTSUPP;
    }
    co_return errno_for_result(r);
}

Task<int> UblkExport::co_read(uint64_t pos, uint64_t off, uint64_t len)
{
    if (len == 0 || len > kMaxIoBytes) {
        co_return -EIO;
    }
    AlignedBuffer buf(len);
    IOVector qiov(buf.data(), len);
    int r = co_await blk().co_preadv(off, len, qiov);
    if (r < 0) {
        co_return errno_for_result(r);
    }
    if (pwrite(char_fd_, buf.data(), len, off_t(pos)) != ssize_t(len)) {
        co_return -EIO;
    }
    co_return int(len);
}

// A write, or with append_lba a zone append whose sector goes there.
Task<int> UblkExport::co_write(uint64_t pos, uint64_t off, uint64_t len, uint32_t flags,
                               uint64_t* append_lba)
{
    if (len == 0 || len > kMaxIoBytes) {
        co_return -EIO;
    }
    AlignedBuffer buf(len);
    if (pread(char_fd_, buf.data(), len, off_t(pos)) != ssize_t(len)) {
        co_return -EIO;
    }
    IOVector qiov(buf.data(), len);
    unsigned f = (flags & kIoFlagFua) ? unsigned(BDRV_REQ_FUA) : 0;
    int r;
    if (append_lba) {
        uint64_t where = off;
        r = co_await blk().co_zone_append(where, qiov, f);
        *append_lba = where / 512;
    } else {
        r = co_await blk().co_pwritev(off, len, qiov, f);
    }
    co_return r < 0 ? errno_for_result(r) : int(len);
}

// REPORT_ZONES: the kernel zeroed its buffer, so a report of fewer zones
// ends at the first zero-length entry.  The result must cover the whole
// request, whose size (the kernel's buffer) may exceed nr_zones entries:
// kMaxIoBytes does, and the kernel cuts it to the request's bytes.
Task<int> UblkExport::co_report(uint64_t pos, uint64_t off, uint32_t nr_zones)
{
    uint32_t n = std::min<uint32_t>(nr_zones, kMaxIoBytes / sizeof(struct blk_zone));
    std::vector<BlockZoneDescriptor> zones(n);
    int r = co_await blk().co_zone_report(off, n, zones.data());
    if (r < 0) {
        co_return errno_for_result(r);
    }
    if (n > 0) {
        std::vector<struct blk_zone> out(n);
        for (uint32_t i = 0; i < n; i++) {
            out[i] = to_blk_zone(zones[i]);
        }
        size_t bytes = n * sizeof(struct blk_zone);
        if (pwrite(char_fd_, out.data(), bytes, off_t(pos)) != ssize_t(bytes)) {
            co_return -EIO;
        }
    }
    co_return int(kMaxIoBytes);
}

Task<void> UblkExport::co_teardown()
{
    if (added_ && char_fd_ >= 0) {
        // Flushes through the tags still serving, then aborts their fetches.
        int r = co_await ctrl(kCmdStopDev, nullptr, 0);
        if (r < 0) {
            warn_report("ublk: cannot stop device %u: %s", dev_id_, strerror(-r));
        }
    }
    while (tags_.count()) {
        co_await tags_.wait_idle();
    }
    for (void* p : iods_) {
        munmap(p, iod_map_size_);
    }
    iods_.clear();
    if (char_fd_ >= 0) {
        close(char_fd_);
        char_fd_ = -1;
    }
    if (added_) {
        // Returns once the kernel has let go of the number.
        int r = co_await ctrl(kCmdDelDev, nullptr, 0);
        if (r < 0) {
            warn_report("ublk: cannot delete device %u: %s", dev_id_, strerror(-r));
        }
        added_ = false;
    }
    if (ring_) {
        co_await ring_->co_close();
        ring_.reset();
    }
}

std::optional<uint32_t> take_u32(QDict& opts, const char* key, uint32_t def, uint32_t min,
                                  uint32_t max, Error& err)
{
    std::optional<uint64_t> v = take_number(opts, key, def, err);
    if (!v) {
        return std::nullopt;
    }
    if (*v < min || *v > max) {
        err.set("Parameter '%s' expects a value from %u to %u", key, min, max);
        return std::nullopt;
    }
    return uint32_t(*v);
}

Task<std::unique_ptr<BlockExport>> ublk_export_create(const BlockExportOptions& o, QDict& opts,
                                                      std::unique_ptr<BlockBackend> blk,
                                                      Error& err)
{
    QueueConfig qc;
    std::optional<uint32_t> nq = take_u32(opts, "num-queues", 1, 1, kMaxQueues, err);
    std::optional<uint32_t> depth =
        nq ? take_u32(opts, "queue-depth", kDefaultQueueDepth, 1, kMaxQueueDepth, err)
           : std::nullopt;
    std::optional<uint32_t> lbs =
        depth ? take_u32(opts, "logical-block-size", 0, 0, 4096, err) : std::nullopt;
    Params params;
    bool ok = false;
    if (lbs) {
        qc.num_queues = *nq;
        qc.queue_depth = *depth;
        DeviceRequest req;
        req.length = blk->getlength();
        req.limits = &blk->bs()->limits();
        req.writable = o.writable;
        req.writethrough = o.writethrough;
        req.logical_block_size = *lbs;
        req.max_io_bytes = kMaxIoBytes;
        ok = derive_params(req, params, err);
    }
    if (!ok) {
        co_await blk->co_close();
        co_return nullptr;
    }
    auto exp = std::make_unique<UblkExport>(o, std::move(blk));
    bool started = co_await exp->co_start(qc, params, err);
    if (!started) {
        co_await exp->blk().co_close();
        co_return nullptr;
    }
    co_return std::unique_ptr<BlockExport>(std::move(exp));
}

// The kernel's disk has the node's size: others may not resize it.
const BlockExportDriver kUblkExportDriver = {"ublk", BLK_PERM_RESIZE, ublk_export_create};

}  // namespace

void ublk_export_register()
{
    block_export_register(kUblkExportDriver);
}

}  // namespace qemu
