// The `vduse-blk` export type: a node served as a virtio-blk device of the
// kernel the daemon runs on, through VDUSE (vDPA Device in Userspace,
// Linux 5.15+), with QEMU's keys:
//
//   --export type=vduse-blk,id=e0,node-name=n0,name=vduse0,writable=on
//            [,num-queues=N][,queue-size=N][,logical-block-size=N][,serial=S]
//
// The device model is hw/virtio-blk (VirtioBlkDevice: features, config
// space including the zoned part, requests); this file is the transport.
// The user attaches the device with `vdpa dev add name NAME mgmtdev vduse`
// (virtio_vdpa then gives /dev/vdX; vhost_vdpa gives it to a VM).
//
// Lifecycle (what QEMU's libvduse does): SET_API_VERSION 0, CREATE_DEV,
// open /dev/vduse/NAME, VQ_SETUP for every queue, then the message loop on
// the device fd, which must already run when the device is attached.  On
// SET_STATUS with DRIVER_OK the queues start (driver features, VQ_GET_INFO,
// ring addresses translated through the IOTLB, kick eventfds); on a status
// without it (reset, detach) they stop after their requests.  Delete:
// stop, close, DESTROY_DEV (refused by the kernel while still attached).
//
// Memory: every IOVA the driver uses is in a range of the device's IOTLB,
// which VDUSE_IOTLB_GET_FD hands out as an fd to mmap.  The table is read
// into a GuestMemory snapshot; requests hold the snapshot they were popped
// with, so an UPDATE_IOTLB (which drops ranges) replaces it without pulling
// memory from under them.  The bounce buffer's range (IOVA 0 up) appears
// only once the kernel first bounces data, after DRIVER_OK: until a
// snapshot has it, each kick reads the table again.
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <tuple>

#include "export/export.h"
#include "export/vduse-blk.h"
#include "hw/virtio/virtio-blk.h"
#include "vduse-proto.h"

namespace qemu {

namespace {

using namespace vduse;

constexpr int64_t kDevWaitNs = 10'000'000'000;

// One IOTLB range mapped here.
struct Mapping {
    uint64_t start, last, offset;
    uint8_t perm;
    void* host = MAP_FAILED;
    size_t len = 0;
    ~Mapping()
    {
        if (host != MAP_FAILED) {
            munmap(host, len);
        }
    }
};

// A consistent view of the IOTLB: the mappings and the table over them.
struct Memory {
    std::vector<std::shared_ptr<Mapping>> maps;
    GuestMemory mem;
    bool has_bounce = false;  // a range from IOVA 0: the bounce buffer
};
using MemoryRef = std::shared_ptr<const Memory>;

struct Queue {
    VirtQueue vq;
    int kick_fd = -1;
    bool stopping = false;
};

class VduseBlkExport : public BlockExport {
public:
    VduseBlkExport(const BlockExportOptions& o, std::unique_ptr<BlockBackend> blk,
                   std::string name)
        : BlockExport(o, std::move(blk)), name_(std::move(name))
    {
    }
    ~VduseBlkExport() override;

    Task<bool> co_start(const VirtioBlkOptions& vo, Error& err);

protected:
    Task<void> co_stop(bool) override { co_await co_teardown(); }

private:
    bool create_device(Error& err);
    Task<bool> co_open_device(Error& err);
    Task<void> co_messages();
    Task<void> co_handle_message(const DevRequest& req, DevResponse& resp);
    std::shared_ptr<Memory> read_iotlb();
    bool start_queues();
    bool start_queue(uint32_t i, bool event_idx);
    Task<void> co_stop_queues();
    Task<void> co_queue(uint32_t i);
    void drain(uint32_t i);
    Task<void> co_request(uint32_t i, VirtQueueElement elem, MemoryRef mem);
    Task<void> co_teardown();

    std::string name_;
    std::unique_ptr<VirtioBlkDevice> dev_;
    uint32_t num_queues_ = 1;
    uint16_t queue_size_ = 256;
    int ctl_fd_ = -1;
    int dev_fd_ = -1;
    bool created_ = false;
    int stop_fd_ = -1;   // wakes the message loop for teardown
    int epoll_fd_ = -1;  // dev_fd_ and stop_fd_
    bool stopping_ = false;
    bool running_ = false;  // queues started (DRIVER_OK), or being started
    bool iotlb_stale_ = true;
    std::shared_ptr<Memory> mem_;
    // The snapshot the rings were translated in: kept while the queues
    // run, whatever later snapshots drop.
    MemoryRef ring_mem_;
    std::vector<Queue> queues_;
    RequestCounter loops_;     // the message loop and the queue loops
    RequestCounter requests_;  // requests in flight
    RequestCounter queue_loops_;
};

VduseBlkExport::~VduseBlkExport()
{
    for (int fd : {epoll_fd_, stop_fd_, ctl_fd_}) {
        if (fd >= 0) {
            close(fd);
        }
    }
}

bool VduseBlkExport::create_device(Error& err)
{
    ctl_fd_ = open("/dev/vduse/control", O_RDWR | O_CLOEXEC);
    if (ctl_fd_ < 0) {
        err.set_errno(errno, "vduse-blk: /dev/vduse/control");
        if (errno == ENOENT) {
            err.message += "; load the vduse module";
        }
        return false;
    }
    uint64_t version = 0;
    if (ioctl(ctl_fd_, kSetApiVersion, &version) < 0) {
        err.set_errno(errno, "vduse-blk: cannot set the VDUSE API version");
        return false;
    }
    std::vector<uint8_t> config = dev_->config();
    std::vector<uint8_t> buf(sizeof(DevConfig) + config.size());
    DevConfig* c = reinterpret_cast<DevConfig*>(buf.data());
    memcpy(c->name, name_.c_str(), name_.size() + 1);
    c->device_id = kVirtioIdBlock;
    // The kernel refuses a writable config space for block devices.
    c->features = (dev_->device_features() & ~VIRTIO_BLK_F_CONFIG_WCE) | kFeatureAccessPlatform;
    c->vq_num = num_queues_;
    c->vq_align = 4096;
    c->config_size = uint32_t(config.size());
    memcpy(buf.data() + sizeof(DevConfig), config.data(), config.size());
    if (ioctl(ctl_fd_, kCreateDev, buf.data()) < 0) {
        err.set_errno(errno, "vduse-blk: cannot create device '%s'", name_.c_str());
        return false;
    }
    created_ = true;
    return true;
}

Task<bool> VduseBlkExport::co_open_device(Error& err)
{
    std::string path = "/dev/vduse/" + name_;
    int64_t deadline = AioContext::now_ns() + kDevWaitNs;
    for (;;) {
        dev_fd_ = open(path.c_str(), O_RDWR | O_CLOEXEC | O_NONBLOCK);
        if (dev_fd_ >= 0) {
            break;
        }
        if (errno != ENOENT || AioContext::now_ns() > deadline) {
            err.set_errno(errno, "vduse-blk: %s", path.c_str());
            co_return false;
        }
        co_await ctx().sleep_ns(10'000'000);
    }
    for (uint32_t i = 0; i < num_queues_; i++) {
        VqConfig vc{};
        vc.index = i;
        vc.max_size = queue_size_;
        if (ioctl(dev_fd_, kVqSetup, &vc) < 0) {
            err.set_errno(errno, "vduse-blk: cannot set up queue %u", i);
            co_return false;
        }
    }
    stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN;
    if (stop_fd_ < 0 || epoll_fd_ < 0 || epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, dev_fd_, &ev) < 0 ||
        epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, stop_fd_, &ev) < 0) {
        err.set_errno(errno, "vduse-blk: cannot poll the device");
        co_return false;
    }
    co_return true;
}

Task<bool> VduseBlkExport::co_start(const VirtioBlkOptions& vo, Error& err)
{
    num_queues_ = vo.num_queues;
    queue_size_ = vo.queue_size;
    dev_ = std::make_unique<VirtioBlkDevice>(blk(), vo, err);
    if (err.is_set()) {
        co_return false;
    }
    queues_ = std::vector<Queue>(num_queues_);
    bool ok = create_device(err);
    if (ok) {
        ok = co_await co_open_device(err);
    }
    if (!ok) {
        co_await co_teardown();
        co_return false;
    }
    co_spawn(co_messages());
    co_return true;
}

// The message loop: runs until teardown wakes it through stop_fd_.
Task<void> VduseBlkExport::co_messages()
{
    RequestCounter::Guard running(loops_);
    while (!stopping_) {
        DevRequest req;
        ssize_t n = read(dev_fd_, &req, sizeof(req));
        if (n != ssize_t(sizeof(req))) {
            if (n < 0 && errno != EAGAIN && errno != EINTR) {
                warn_report("vduse-blk: %s: %s", name_.c_str(), strerror(errno));
                co_return;
            }
            co_await ctx().poll_in(epoll_fd_);
            continue;
        }
        DevResponse resp{};
        resp.request_id = req.request_id;
        co_await co_handle_message(req, resp);
        if (write(dev_fd_, &resp, sizeof(resp)) != ssize_t(sizeof(resp))) {
            warn_report("vduse-blk: %s: cannot answer a message: %s", name_.c_str(),
                        strerror(errno));
        }
    }
}

Task<void> VduseBlkExport::co_handle_message(const DevRequest& req, DevResponse& resp)
{
    resp.result = kResultOk;
    switch (req.type) {
    case kGetVqState: {
        uint32_t i = req.vq_state.index;
        resp.vq_state.index = i;
        if (i >= queues_.size()) {
            resp.result = kResultFailed;
        } else {
            resp.vq_state.avail_index = queues_[i].vq.last_avail_idx();
        }
        break;
    }
    case kSetStatus:
        if ((req.status & kStatusDriverOk) && !running_) {
            if (!start_queues()) {
                co_await co_stop_queues();  // the ones that did start
                resp.result = kResultFailed;
            }
        } else if (!(req.status & kStatusDriverOk) && running_) {
            co_await co_stop_queues();
        }
        break;
    case kUpdateIotlb:
        // Ranges were dropped: the next kick reads the table again.  The
        // requests in flight keep the old mappings until they finish.
        iotlb_stale_ = true;
        break;
    default:
        resp.result = kResultFailed;
    }
}

std::shared_ptr<Memory> VduseBlkExport::read_iotlb()
{
    auto m = std::make_shared<Memory>();
    // Ranges still in the table keep their mappings.
    std::map<std::tuple<uint64_t, uint64_t, uint64_t, uint8_t>, std::shared_ptr<Mapping>> old;
    if (mem_) {
        for (const auto& mp : mem_->maps) {
            old[{mp->start, mp->last, mp->offset, mp->perm}] = mp;
        }
    }
    uint64_t start = 0;
    for (;;) {
        IotlbEntry e{};
        e.start = start;
        e.last = UINT64_MAX;
        int fd = ioctl(dev_fd_, kIotlbGetFd, &e);
        if (fd < 0) {
            break;  // no range from `start` up
        }
        std::shared_ptr<Mapping> mp;
        auto it = old.find({e.start, e.last, e.offset, e.perm});
        if (it != old.end()) {
            mp = it->second;
        } else {
            mp = std::make_shared<Mapping>();
            mp->start = e.start;
            mp->last = e.last;
            mp->offset = e.offset;
            mp->perm = e.perm;
            mp->len = e.last - e.start + 1;
            int prot = ((e.perm & kPermRead) ? PROT_READ : 0) |
                       ((e.perm & kPermWrite) ? PROT_WRITE : 0);
            mp->host = mmap(nullptr, mp->len, prot, MAP_SHARED, fd, off_t(e.offset));
        }
        close(fd);
        if (mp->host != MAP_FAILED &&
            m->mem.add_region({mp->start, mp->len, static_cast<uint8_t*>(mp->host),
                               bool(mp->perm & kPermWrite)})) {
            m->has_bounce |= mp->start == 0;
            m->maps.push_back(mp);
        }
        if (e.last == UINT64_MAX) {
            break;
        }
        start = e.last + 1;
    }
    iotlb_stale_ = !m->has_bounce;
    return m;
}

bool VduseBlkExport::start_queues()
{
    uint64_t features = 0;
    if (ioctl(dev_fd_, kDevGetFeatures, &features) < 0 ||
        !dev_->set_driver_features(features & ~kFeatureAccessPlatform)) {
        warn_report("vduse-blk: %s: the driver's features 0x%llx are not acceptable",
                    name_.c_str(), (unsigned long long)features);
        return false;
    }
    mem_ = read_iotlb();
    ring_mem_ = mem_;
    running_ = true;
    bool event_idx = features & VIRTIO_RING_F_EVENT_IDX;
    for (uint32_t i = 0; i < num_queues_; i++) {
        if (!start_queue(i, event_idx)) {
            return false;
        }
    }
    return true;
}

bool VduseBlkExport::start_queue(uint32_t i, bool event_idx)
{
    VqInfo info{};
    info.index = i;
    if (ioctl(dev_fd_, kVqGetInfo, &info) < 0) {
        warn_report("vduse-blk: %s: queue %u: %s", name_.c_str(), i, strerror(errno));
        return false;
    }
    if (!info.ready) {
        return true;  // the driver does not use it
    }
    uint32_t num = info.num;
    VirtQueue::Rings rings;
    rings.desc = mem_->mem.translate_contiguous(info.desc_addr, uint64_t(num) * 16, false);
    rings.avail = mem_->mem.translate_contiguous(info.driver_addr, 6 + 2 * uint64_t(num), false);
    rings.used = mem_->mem.translate_contiguous(info.device_addr, 6 + 8 * uint64_t(num), true);
    bool aligned = !(uintptr_t(rings.desc) % 16) && !(uintptr_t(rings.avail) % 2) &&
                   !(uintptr_t(rings.used) % 4);
    if (!rings.desc || !rings.avail || !rings.used || !aligned || num == 0 || num > 32768 ||
        (num & (num - 1))) {
        warn_report("vduse-blk: %s: queue %u: rings outside the device's memory", name_.c_str(),
                    i);
        return false;
    }
    Queue& q = queues_[i];
    q.kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    VqEventfd ve{i, q.kick_fd};
    if (q.kick_fd < 0 || ioctl(dev_fd_, kVqSetupKickfd, &ve) < 0) {
        warn_report("vduse-blk: %s: queue %u: no kick eventfd: %s", name_.c_str(), i,
                    strerror(errno));
        return false;
    }
    q.stopping = false;
    q.vq.start(uint16_t(num), rings, event_idx, info.split_avail_index);
    co_spawn(co_queue(i));
    return true;
}

Task<void> VduseBlkExport::co_queue(uint32_t i)
{
    RequestCounter::Guard running(queue_loops_);
    Queue& q = queues_[i];
    while (!q.stopping) {
        drain(i);
        co_await ctx().poll_in(q.kick_fd);
        uint64_t n;
        [[maybe_unused]] ssize_t r = read(q.kick_fd, &n, sizeof(n));  // EAGAIN: nothing new
    }
}

void VduseBlkExport::drain(uint32_t i)
{
    Queue& q = queues_[i];
    if (iotlb_stale_) {
        mem_ = read_iotlb();
    }
    // pop() keeps avail_event at what it has taken, so the driver kicks
    // for anything made available after the last Empty.
    while (!q.stopping && !q.vq.broken()) {
        VirtQueueElement elem;
        VirtQueue::PopResult r = q.vq.pop(mem_->mem, elem);
        if (r == VirtQueue::PopResult::Empty) {
            return;
        }
        if (r == VirtQueue::PopResult::Broken) {
            warn_report("vduse-blk: %s: queue %u: malformed descriptor chain; the queue stops "
                        "until the driver resets the device",
                        name_.c_str(), i);
            return;
        }
        co_spawn(co_request(i, std::move(elem), mem_));
    }
}

// `mappings` keeps the memory the element points into mapped until it is done.
Task<void> VduseBlkExport::co_request(uint32_t i, VirtQueueElement elem,
                                      [[maybe_unused]] MemoryRef mappings)
{
    RequestCounter::Guard in_flight(requests_);
    uint32_t written = co_await dev_->co_handle(elem);
    Queue& q = queues_[i];
    q.vq.push(elem, written);
    if (q.vq.should_notify() && ioctl(dev_fd_, kVqInjectIrq, &i) < 0) {
        warn_report("vduse-blk: %s: queue %u: cannot notify the driver: %s", name_.c_str(), i,
                    strerror(errno));
    }
}

Task<void> VduseBlkExport::co_stop_queues()
{
    for (Queue& q : queues_) {
        q.stopping = true;
        if (q.kick_fd >= 0) {
            uint64_t one = 1;
            [[maybe_unused]] ssize_t w = write(q.kick_fd, &one, sizeof(one));
        }
    }
    while (queue_loops_.count()) {
        co_await queue_loops_.wait_idle();
    }
    while (requests_.count()) {
        co_await requests_.wait_idle();
    }
    for (uint32_t i = 0; i < queues_.size(); i++) {
        Queue& q = queues_[i];
        if (q.kick_fd >= 0) {
            VqEventfd ve{i, -1};
            ioctl(dev_fd_, kVqSetupKickfd, &ve);
            close(q.kick_fd);
            q.kick_fd = -1;
        }
        q.vq.stop();
    }
    mem_.reset();
    ring_mem_.reset();
    iotlb_stale_ = true;
    running_ = false;
}

Task<void> VduseBlkExport::co_teardown()
{
    if (running_) {
        co_await co_stop_queues();
    }
    stopping_ = true;
    if (stop_fd_ >= 0) {
        uint64_t one = 1;
        [[maybe_unused]] ssize_t w = write(stop_fd_, &one, sizeof(one));
    }
    while (loops_.count()) {
        co_await loops_.wait_idle();
    }
    if (dev_fd_ >= 0) {
        close(dev_fd_);
        dev_fd_ = -1;
    }
    if (created_) {
        char name[256] = {};
        memcpy(name, name_.c_str(), name_.size());
        if (ioctl(ctl_fd_, kDestroyDev, name) < 0) {
            warn_report("vduse-blk: cannot destroy device '%s'%s: %s", name_.c_str(),
                        errno == EBUSY ? " (still attached: vdpa dev del it)" : "",
                        strerror(errno));
        }
        created_ = false;
    }
}

bool valid_name(const std::string& name, Error& err)
{
    if (name.empty() || name.size() >= 256 || name.find('/') != std::string::npos ||
        name == "." || name == "..") {
        err.set("vduse-blk: invalid device name '%s'", name.c_str());
        return false;
    }
    return true;
}

Task<std::unique_ptr<BlockExport>> vduse_blk_export_create(const BlockExportOptions& o,
                                                           QDict& opts,
                                                           std::unique_ptr<BlockBackend> blk,
                                                           Error& err)
{
    bool has_name = opts.has("name");
    std::string name = take_string(opts, "name");
    VirtioBlkOptions vo;
    vo.writable = o.writable;
    vo.serial = take_string(opts, "serial");
    std::optional<uint64_t> nq = take_number(opts, "num-queues", 1, err);
    std::optional<uint64_t> qs = nq ? take_number(opts, "queue-size", 256, err) : std::nullopt;
    std::optional<uint64_t> lbs =
        qs ? take_number(opts, "logical-block-size", 0, err) : std::nullopt;
    bool ok = lbs.has_value();
    if (ok && !has_name) {
        err.set("Parameter 'name' is missing");
        ok = false;
    }
    if (ok && (*nq == 0 || *nq > 1024)) {
        err.set("Invalid num-queues: must be from 1 to 1024");
        ok = false;
    } else if (ok && (*qs < 2 || *qs > 1024 || (*qs & (*qs - 1)))) {
        err.set("Invalid queue-size: must be a power of two from 2 to 1024");
        ok = false;
    }
    if (ok) {
        ok = valid_name(name, err);
    }
    if (!ok) {
        co_await blk->co_close();
        co_return nullptr;
    }
    vo.num_queues = uint16_t(*nq);
    vo.queue_size = uint16_t(*qs);
    vo.logical_block_size = uint32_t(*lbs);
    auto exp = std::make_unique<VduseBlkExport>(o, std::move(blk), name);
    bool started = co_await exp->co_start(vo, err);
    if (!started) {
        co_await exp->blk().co_close();
        co_return nullptr;
    }
    co_return std::unique_ptr<BlockExport>(std::move(exp));
}

const BlockExportDriver kVduseBlkExportDriver = {"vduse-blk", BLK_PERM_RESIZE,
                                                 vduse_blk_export_create};

}  // namespace

void vduse_blk_export_register()
{
    block_export_register(kVduseBlkExportDriver);
}

}  // namespace qemu
