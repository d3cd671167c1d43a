// The test front end (vu-client.h).
#include "vu-client.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "hw/virtio/virtio-blk.h"

namespace qemu {

using namespace vhost_user;

namespace {

constexpr uint16_t kDescNext = 1;
constexpr uint16_t kDescWrite = 2;

template <typename T>
void put(uint8_t* p, T v)
{
    std::memcpy(p, &v, sizeof(v));
}

template <typename T>
T get(const uint8_t* p)
{
    T v;
    std::memcpy(&v, p, sizeof(v));
    return v;
}

uint16_t load16_acquire(const uint8_t* p)
{
    return __atomic_load_n(reinterpret_cast<const uint16_t*>(p), __ATOMIC_ACQUIRE);
}

void store16_release(uint8_t* p, uint16_t v)
{
    __atomic_store_n(reinterpret_cast<uint16_t*>(p), v, __ATOMIC_RELEASE);
}

bool has_reply(uint32_t request)
{
    return request == GET_FEATURES || request == GET_PROTOCOL_FEATURES ||
           request == GET_QUEUE_NUM || request == GET_VRING_BASE || request == GET_CONFIG;
}

}  // namespace

VuClient::~VuClient()
{
    for (Queue& q : queues_) {
        close(q.kick);
        close(q.call);
    }
    if (mem_) {
        munmap(mem_, mem_size_);
    }
    if (memfd_ >= 0) {
        close(memfd_);
    }
    if (sock_ >= 0) {
        close(sock_);
    }
}

bool VuClient::connect(const std::string& path, Error& err)
{
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    if (path.size() >= sizeof(sa.sun_path)) {
        err.set("socket path '%s' too long", path.c_str());
        return false;
    }
    std::memcpy(sa.sun_path, path.c_str(), path.size());
    sock_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock_ < 0 || ::connect(sock_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) < 0) {
        err.set_errno(errno, "Failed to connect to '%s'", path.c_str());
        return false;
    }
    return true;
}

int VuClient::call(Message msg, Message* reply, Error& err)
{
    bool ack = !has_reply(msg.request) && (protocol_ & PROTOCOL_F_REPLY_ACK);
    if (ack) {
        msg.flags |= kFlagNeedReply;
    }
    uint32_t request = msg.request;
    int ret = send_message(sock_, msg);
    if (ret < 0) {
        err.set_errno(ret, "vhost-user: cannot send %s", request_name(request));
        return ret;
    }
    if (!has_reply(request) && !ack) {
        return 0;
    }
    Message r;
    ret = recv_message(sock_, r, err);
    if (ret <= 0) {
        if (ret == 0) {
            err.set("vhost-user: the back end closed the connection after %s",
                    request_name(request));
        }
        return ret < 0 ? ret : -EPROTO;
    }
    if (r.request != request || r.flags != (kVersion | kFlagReply)) {
        err.set("vhost-user: bad reply to %s (request %u, flags 0x%x)", request_name(request),
                r.request, r.flags);
        return -EPROTO;
    }
    if (ack && (r.payload.size() != 8 || r.u64() != 0)) {
        err.set("vhost-user: the back end refused %s", request_name(request));
        return -EPROTO;
    }
    if (reply) {
        *reply = std::move(r);
    }
    return 0;
}

int VuClient::call_u64(uint32_t request, uint64_t value, Message* reply, Error& err)
{
    Message m;
    m.request = request;
    m.flags = kVersion;
    if (!has_reply(request) && request != SET_OWNER && request != RESET_OWNER) {
        m.payload.resize(8);
        std::memcpy(m.payload.data(), &value, 8);
    }
    int ret = call(std::move(m), reply, err);
    if (ret == 0 && reply && has_reply(request) && reply->payload.size() != 8) {
        err.set("vhost-user: %s reply of %zu bytes", request_name(request), reply->payload.size());
        return -EPROTO;
    }
    return ret;
}

uint64_t VuClient::alloc(uint64_t len, uint64_t align)
{
    mem_used_ = (mem_used_ + align - 1) / align * align;
    uint64_t a = mem_used_;
    mem_used_ += len;
    return a;
}

bool VuClient::start(const VuClientOptions& opts, Error& err)
{
    opts_ = opts;
    if (opts.depth == 0 || opts.depth * 3 > opts.queue_size) {
        err.set("depth %u needs a queue of at least %u descriptors", opts.depth, opts.depth * 3);
        return false;
    }
    Message r;
    if (call_u64(GET_FEATURES, 0, &r, err) < 0) {
        return false;
    }
    uint64_t offered = r.u64();
    if (!(offered & kFeatureProtocolFeatures) ||
        call_u64(GET_PROTOCOL_FEATURES, 0, &r, err) < 0) {
        err.set("vhost-user: the back end has no protocol features");
        return false;
    }
    uint64_t want = PROTOCOL_F_MQ | PROTOCOL_F_REPLY_ACK | PROTOCOL_F_CONFIG;
    uint64_t proto = r.u64() & want;
    if (call_u64(SET_PROTOCOL_FEATURES, proto, nullptr, err) < 0) {
        return false;
    }
    protocol_ = proto;
    if (call_u64(GET_QUEUE_NUM, 0, &r, err) < 0) {
        return false;
    }
    if (r.u64() < opts.num_queues) {
        err.set("The maximum number of queues supported by the backend is %llu",
                (unsigned long long)r.u64());
        return false;
    }
    if (call_u64(SET_OWNER, 0, nullptr, err) < 0) {
        return false;
    }
    ConfigHeader ch = {0, opts.config_size, 0};
    Message gc;
    gc.request = GET_CONFIG;
    gc.flags = kVersion;
    gc.payload.resize(sizeof(ch) + opts.config_size);
    std::memcpy(gc.payload.data(), &ch, sizeof(ch));
    if (call(std::move(gc), &r, err) < 0) {
        return false;
    }
    if (r.payload.size() != sizeof(ch) + opts.config_size) {
        err.set("vhost-user: GET_CONFIG reply of %zu bytes", r.payload.size());
        return false;
    }
    config_.assign(r.payload.begin() + sizeof(ch), r.payload.end());

    features_ = offered;
    if (!opts.event_idx) {
        features_ &= ~VIRTIO_RING_F_EVENT_IDX;
    }
    if (call_u64(SET_FEATURES, features_, nullptr, err) < 0) {
        return false;
    }

    // Guest memory: per queue its rings and each slot's headers and data.
    uint64_t qs = opts.queue_size;
    uint64_t per_queue = 16 * qs + (6 + 2 * qs) + (6 + 8 * qs) + 64 +
                         uint64_t(opts.depth) * slot_stride() + 4096;
    mem_size_ = (opts.num_queues * per_queue + (2 << 20)) & ~uint64_t(4095);
    memfd_ = memfd_create("vu-client-guest", MFD_CLOEXEC);
    if (memfd_ < 0 || ftruncate(memfd_, off_t(mem_size_)) < 0) {
        err.set_errno(errno, "cannot create guest memory");
        return false;
    }
    void* m = mmap(nullptr, mem_size_, PROT_READ | PROT_WRITE, MAP_SHARED, memfd_, 0);
    if (m == MAP_FAILED) {
        err.set_errno(errno, "cannot map guest memory");
        return false;
    }
    mem_ = static_cast<uint8_t*>(m);
    alloc(4096, 1);  // guest address 0 stays unused, as a null pointer should
    Message mt;
    mt.request = SET_MEM_TABLE;
    mt.flags = kVersion;
    mt.payload.resize(8 + sizeof(MemRegion));
    put<uint32_t>(mt.payload.data(), 1);
    MemRegion reg = {0, mem_size_, uint64_t(uintptr_t(mem_)), 0};
    std::memcpy(mt.payload.data() + 8, &reg, sizeof(reg));
    mt.fds.emplace_back(dup(memfd_));
    if (call(std::move(mt), nullptr, err) < 0) {
        return false;
    }

    queues_.resize(opts.num_queues);
    for (unsigned i = 0; i < opts.num_queues; i++) {
        Queue& q = queues_[i];
        q.desc = mem_ + alloc(16 * qs, 16);
        q.avail = mem_ + alloc(6 + 2 * qs, 2);
        q.used = mem_ + alloc(6 + 8 * qs, 4);
        q.data = alloc(uint64_t(opts.depth) * slot_stride(), 4096);
        q.pending.resize(opts.depth);
        for (unsigned s = opts.depth; s-- > 0;) {
            q.free.push_back(s);
        }
        q.kick = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        q.call = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        VringState num = {i, opts.queue_size};
        VringState base = {i, 0};
        VringAddr addr = {i, 0, uint64_t(uintptr_t(q.desc)), uint64_t(uintptr_t(q.used)),
                          uint64_t(uintptr_t(q.avail)), 0};
        Message mn = make_reply(Message{}, &num, sizeof(num));
        Message mb = make_reply(Message{}, &base, sizeof(base));
        Message ma = make_reply(Message{}, &addr, sizeof(addr));
        mn.request = SET_VRING_NUM;
        mb.request = SET_VRING_BASE;
        ma.request = SET_VRING_ADDR;
        for (Message* x : {&mn, &mb, &ma}) {
            x->flags = kVersion;
            if (call(std::move(*x), nullptr, err) < 0) {
                return false;
            }
        }
        for (auto [req, fd] : {std::pair{SET_VRING_KICK, q.kick}, std::pair{SET_VRING_CALL, q.call}}) {
            Message mf;
            mf.request = req;
            mf.flags = kVersion;
            mf.payload.resize(8);
            put<uint64_t>(mf.payload.data(), i);
            mf.fds.emplace_back(dup(fd));
            if (call(std::move(mf), nullptr, err) < 0) {
                return false;
            }
        }
        VringState en = {i, 1};
        Message me = make_reply(Message{}, &en, sizeof(en));
        me.request = SET_VRING_ENABLE;
        me.flags = kVersion;
        if (call(std::move(me), nullptr, err) < 0) {
            return false;
        }
    }
    return true;
}

bool VuClient::stop(std::vector<uint16_t>& bases, Error& err)
{
    bases.clear();
    for (unsigned i = 0; i < queues_.size(); i++) {
        VringState s = {i, 0};
        Message m = make_reply(Message{}, &s, sizeof(s));
        m.request = GET_VRING_BASE;
        m.flags = kVersion;
        Message r;
        if (call(std::move(m), &r, err) < 0) {
            return false;
        }
        if (r.payload.size() != sizeof(s) || r.get<VringState>().index != i) {
            err.set("vhost-user: bad GET_VRING_BASE reply");
            return false;
        }
        bases.push_back(uint16_t(r.get<VringState>().num));
    }
    return true;
}

uint64_t VuClient::capacity_sectors() const
{
    return config_.size() >= 8 ? get<uint64_t>(config_.data()) : 0;
}

unsigned VuClient::free_slots(unsigned q) const
{
    return unsigned(queues_[q].free.size());
}

uint8_t* VuClient::slot_buffer(unsigned q, unsigned slot)
{
    return mem_ + queues_[q].data + uint64_t(slot) * slot_stride() + 32;
}

unsigned VuClient::submit(unsigned qi, const Request& r)
{
    Queue& q = queues_[qi];
    unsigned slot = q.free.back();
    q.free.pop_back();
    q.pending[slot] = r;
    uint8_t* hdr = slot_buffer(qi, slot) - 32;
    uint8_t* data = hdr + 32;
    uint8_t* in = data + r.out_len;  // in data, then the in-header
    put<uint32_t>(hdr, r.type);
    put<uint32_t>(hdr + 4, 0);
    put<uint64_t>(hdr + 8, r.sector);
    if (r.out_len && r.out && r.out != data) {
        std::memcpy(data, r.out, r.out_len);
    }
    std::memset(in + r.in_len, 0xff, r.in_hdr);
    auto set = [&](unsigned d, uint64_t addr, uint32_t len, uint16_t flags) {
        uint8_t* p = q.desc + 16 * d;
        put<uint64_t>(p, addr);
        put<uint32_t>(p + 8, len);
        put<uint16_t>(p + 12, flags);
        put<uint16_t>(p + 14, uint16_t(d + 1));
    };
    unsigned d = 3 * slot;
    set(d, gpa(hdr), 16, kDescNext);
    if (r.out_len) {
        set(d + 1, gpa(data), r.out_len, kDescNext);
        set(d + 2, gpa(in), r.in_len + r.in_hdr, kDescWrite);
    } else {
        set(d + 1, gpa(in), r.in_len + r.in_hdr, kDescWrite);
    }
    uint16_t qs = uint16_t(opts_.queue_size);
    put<uint16_t>(q.avail + 4 + 2 * (q.avail_idx % qs), uint16_t(d));
    q.avail_idx++;
    store16_release(q.avail + 2, q.avail_idx);
    return slot;
}

void VuClient::kick(unsigned qi)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    eventfd_write(queues_[qi].kick, 1);
}

int VuClient::reap(unsigned qi, const std::function<void(const Completion&)>& fn, int timeout_ms)
{
    Queue& q = queues_[qi];
    uint16_t qs = uint16_t(opts_.queue_size);
    for (;;) {
        uint16_t used = load16_acquire(q.used + 2);
        int n = 0;
        while (q.last_used != used) {
            const uint8_t* e = q.used + 4 + 8 * (q.last_used % qs);
            uint32_t id = get<uint32_t>(e);
            uint32_t len = get<uint32_t>(e + 4);
            q.last_used++;
            unsigned slot = id / 3;
            if (id % 3 || slot >= opts_.depth) {
                return -EPROTO;
            }
            const Request& r = q.pending[slot];
            const uint8_t* in = slot_buffer(qi, slot) + r.out_len;
            fn({slot, len, in[r.in_len + r.in_hdr - 1], in});
            q.free.push_back(slot);
            n++;
        }
        if (n) {
            return n;
        }
        if (features_ & VIRTIO_RING_F_EVENT_IDX) {
            store16_release(q.avail + 4 + 2 * qs, q.last_used);  // used_event
            __atomic_thread_fence(__ATOMIC_SEQ_CST);
            if (load16_acquire(q.used + 2) != q.last_used) {
                continue;
            }
        }
        // The socket too: a back end that went away completes nothing.
        pollfd p[2] = {{q.call, POLLIN, 0}, {sock_, POLLIN, 0}};
        int r = poll(p, 2, timeout_ms);
        if (r == 0) {
            return -ETIMEDOUT;
        }
        if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            return -ECONNRESET;
        }
        eventfd_t v;
        eventfd_read(q.call, &v);
    }
}

int VuClient::run(unsigned q, const Request& r, std::vector<uint8_t>* in, uint8_t& status)
{
    submit(q, r);
    kick(q);
    int ret = reap(q, [&](const Completion& c) {
        status = c.status;
        if (in) {
            in->assign(c.in, c.in + r.in_len + r.in_hdr - 1);
        }
    }, 30000);
    return ret < 0 ? ret : 0;
}

}  // namespace qemu
