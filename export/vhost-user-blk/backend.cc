// The vhost-user back end's state machine: one handler per message group
// (session.h).  Ring processing is in vring.cc.
#include <sys/socket.h>

#include "session.h"

namespace qemu {

using namespace vhost_user;

uint64_t vhost_user_blk_protocol_features()
{
    // No LOG_SHMFD (QEMU then refuses migration), no INFLIGHT_SHMFD (a
    // reconnecting QEMU resumes from the used index, as with QEMU's own
    // storage daemon), no CONFIGURE_MEM_SLOTS (QEMU sends SET_MEM_TABLE).
    return PROTOCOL_F_MQ | PROTOCOL_F_REPLY_ACK | PROTOCOL_F_CONFIG;
}

VhostUserBlkSession::VhostUserBlkSession(AioContext& ctx, int sock, VirtioBlkDevice& dev)
    : ctx_(ctx), sock_(sock), dev_(dev)
{
    for (uint16_t i = 0; i < dev.options().num_queues; i++) {
        vrings_.push_back(std::make_unique<Vring>());
        vrings_.back()->index = i;
    }
}

VhostUserBlkSession::~VhostUserBlkSession() = default;

void VhostUserBlkSession::disconnect()
{
    if (sock_.valid()) {
        shutdown(sock_.get(), SHUT_RDWR);
    }
}

Task<void> VhostUserBlkSession::co_run()
{
    for (;;) {
        Message msg;
        Error err;
        int r = co_await co_recv_message(ctx_, sock_.get(), msg, err);
        if (r <= 0) {
            if (r < 0 && r != -ECONNRESET) {
                error_report("%s", err.message.c_str());
            }
            break;
        }
        std::optional<Message> reply;
        Outcome o = co_await co_dispatch(msg, reply, err);
        if (o == Outcome::Fatal) {
            error_report("%s", err.message.c_str());
            break;
        }
        if (reply) {
            int ret = co_await co_send_message(ctx_, sock_.get(), *reply);
            if (ret < 0) {
                break;
            }
        }
    }
    co_await co_close();
}

Task<VhostUserBlkSession::Outcome> VhostUserBlkSession::co_dispatch(
    Message& msg, std::optional<Message>& reply, Error& err)
{
    if (!check(msg, err)) {
        co_return Outcome::Fatal;
    }
    Outcome o = co_await co_handle(msg, reply, err);
    bool ack = msg.need_reply() && (protocol_features_ & PROTOCOL_F_REPLY_ACK);
    if (o == Outcome::Failed) {
        bool own_reply = msg.request == GET_FEATURES || msg.request == GET_PROTOCOL_FEATURES ||
                         msg.request == GET_QUEUE_NUM || msg.request == GET_VRING_BASE ||
                         msg.request == GET_CONFIG;
        if (!ack || own_reply) {
            // Nobody would learn of it, or the front end waits for a
            // reply an ack cannot stand in for: end as libvhost-user does.
            o = Outcome::Fatal;
        } else {
            warn_report("%s", err.message.c_str());
            reply = make_u64_reply(msg, 1);
        }
    } else if (o == Outcome::Ok && ack && !reply) {
        reply = make_u64_reply(msg, 0);
    }
    co_return o;
}

Task<VhostUserBlkSession::Outcome> VhostUserBlkSession::co_handle(Message& msg,
                                                                  std::optional<Message>& reply,
                                                                  Error& err)
{
    switch (msg.request) {
    case GET_FEATURES:
    case SET_FEATURES:
    case GET_PROTOCOL_FEATURES:
    case SET_PROTOCOL_FEATURES:
    case GET_QUEUE_NUM:
    case SET_OWNER:
        co_return handle_features(msg, reply, err);
    case RESET_OWNER:
        co_await co_reset();
        co_return Outcome::Ok;
    case SET_MEM_TABLE:
        co_return co_await co_set_mem_table(msg, err);
    case SET_VRING_NUM:
    case SET_VRING_ADDR:
    case SET_VRING_BASE:
    case GET_VRING_BASE:
    case SET_VRING_ENABLE:
        co_return co_await co_handle_vring(msg, reply, err);
    case SET_VRING_KICK:
    case SET_VRING_CALL:
    case SET_VRING_ERR:
        co_return co_await co_handle_vring_fd(msg, err);
    case GET_CONFIG:
    case SET_CONFIG:
        co_return handle_config(msg, reply, err);
    default:
        // Known to the protocol, but for features we do not offer
        // (logging, inflight fds, memory slots, IOTLB, status...).
        err.set("vhost-user: %s is not supported", request_name(msg.request));
        co_return Outcome::Failed;
    }
}

VhostUserBlkSession::Outcome VhostUserBlkSession::handle_features(Message& msg,
                                                                  std::optional<Message>& reply,
                                                                  Error& err)
{
    switch (msg.request) {
    case GET_FEATURES:
        reply = make_u64_reply(msg, dev_.device_features() | kFeatureProtocolFeatures);
        return Outcome::Ok;
    case SET_FEATURES: {
        uint64_t f = msg.u64();
        if (!dev_.set_driver_features(f & ~kFeatureProtocolFeatures)) {
            err.set("vhost-user: SET_FEATURES 0x%llx: not a subset of the offered 0x%llx with VERSION_1",
                    (unsigned long long)f,
                    (unsigned long long)(dev_.device_features() | kFeatureProtocolFeatures));
            return Outcome::Failed;
        }
        features_ = f;
        if (!(f & kFeatureProtocolFeatures)) {
            for (auto& v : vrings_) {
                v->enabled = true;  // without bit 30, rings are enabled from the start
            }
        }
        return Outcome::Ok;
    }
    case GET_PROTOCOL_FEATURES:
        reply = make_u64_reply(msg, vhost_user_blk_protocol_features());
        return Outcome::Ok;
    case SET_PROTOCOL_FEATURES: {
        uint64_t f = msg.u64();
        if (f & ~vhost_user_blk_protocol_features()) {
            err.set("vhost-user: SET_PROTOCOL_FEATURES 0x%llx: not offered",
                    (unsigned long long)f);
            return Outcome::Failed;
        }
        protocol_features_ = f;
        return Outcome::Ok;
    }
    case GET_QUEUE_NUM:
        reply = make_u64_reply(msg, vrings_.size());
        return Outcome::Ok;
    default:  // SET_OWNER: the session is the connection, nothing to take
        return Outcome::Ok;
    }
}

VhostUserBlkSession::Vring* VhostUserBlkSession::vring(uint32_t index, Error& err)
{
    if (index >= vrings_.size()) {
        err.set("vhost-user: vring index %u out of range (%zu queues)", index, vrings_.size());
        return nullptr;
    }
    return vrings_[index].get();
}

Task<VhostUserBlkSession::Outcome> VhostUserBlkSession::co_handle_vring(
    Message& msg, std::optional<Message>& reply, Error& err)
{
    uint32_t index = msg.get<uint32_t>();
    Vring* v = vring(index, err);
    if (!v) {
        co_return Outcome::Failed;
    }
    const char* name = request_name(msg.request);
    if (msg.request == GET_VRING_BASE) {
        co_await co_quiesce(*v);
        v->kicked = false;
        v->kick.reset();
        v->call.reset();
        v->err.reset();
        VringState s = {index, v->base};
        reply = make_reply(msg, &s, sizeof(s));
        co_return Outcome::Ok;
    }
    if (msg.request == SET_VRING_ENABLE) {
        uint32_t on = msg.get<VringState>().num;
        if (on > 1) {
            err.set("vhost-user: SET_VRING_ENABLE %u for vring %u", on, index);
            co_return Outcome::Failed;
        }
        v->enabled = on;
        if (!on) {
            co_await co_quiesce(*v);
            co_return Outcome::Ok;
        }
        co_return try_start(*v, err) ? Outcome::Ok : Outcome::Failed;
    }
    if (v->vq.started()) {
        err.set("vhost-user: %s for vring %u while it runs", name, index);
        co_return Outcome::Failed;
    }
    if (msg.request == SET_VRING_NUM) {
        uint32_t num = msg.get<VringState>().num;
        if (num == 0 || num > 32768 || (num & (num - 1))) {
            err.set("vhost-user: vring %u: size %u is not a power of two up to 32768", index, num);
            co_return Outcome::Failed;
        }
        v->num = num;
    } else if (msg.request == SET_VRING_BASE) {
        uint32_t base = msg.get<VringState>().num;
        if (base > 0xffff) {
            err.set("vhost-user: vring %u: base %u out of range", index, base);
            co_return Outcome::Failed;
        }
        v->base = uint16_t(base);
    } else {  // SET_VRING_ADDR
        VringAddr a = msg.get<VringAddr>();
        if (a.flags) {
            err.set("vhost-user: vring %u: flags 0x%x (dirty logging is not supported)", index,
                    a.flags);
            co_return Outcome::Failed;
        }
        v->addr = a;
    }
    co_return Outcome::Ok;
}

Task<VhostUserBlkSession::Outcome> VhostUserBlkSession::co_handle_vring_fd(Message& msg,
                                                                           Error& err)
{
    uint64_t u = msg.u64();
    if (u & ~(kVringIndexMask | kVringNoFd)) {
        err.set("vhost-user: %s: bad argument 0x%llx", request_name(msg.request),
                (unsigned long long)u);
        co_return Outcome::Failed;
    }
    Vring* v = vring(uint32_t(u & kVringIndexMask), err);
    if (!v) {
        co_return Outcome::Failed;
    }
    UniqueFd fd;
    if (!msg.fds.empty()) {
        fd = std::move(msg.fds[0]);
        if (!is_eventfd(fd.get())) {
            err.set("vhost-user: %s: vring %u: the file descriptor is not an eventfd",
                    request_name(msg.request), v->index);
            co_return Outcome::Failed;
        }
    }
    if (msg.request == SET_VRING_CALL) {
        v->call = std::move(fd);
    } else if (msg.request == SET_VRING_ERR) {
        v->err = std::move(fd);
    } else {  // SET_VRING_KICK
        if (!fd.valid()) {
            err.set("vhost-user: SET_VRING_KICK: vring %u: polling without a kick fd is not supported",
                    v->index);
            co_return Outcome::Failed;
        }
        co_await co_quiesce(*v);
        v->kick = std::move(fd);
        v->kicked = true;
        if (!(features_ & kFeatureProtocolFeatures)) {
            v->enabled = true;
        }
        co_return try_start(*v, err) ? Outcome::Ok : Outcome::Failed;
    }
    co_return Outcome::Ok;
}

VhostUserBlkSession::Outcome VhostUserBlkSession::handle_config(Message& msg,
                                                                std::optional<Message>& reply,
                                                                Error& err)
{
    ConfigHeader h = msg.get<ConfigHeader>();
    std::vector<uint8_t> cfg = dev_.config();
    bool in_range = h.offset <= cfg.size() && h.size <= cfg.size() - h.offset;
    if (msg.request == GET_CONFIG) {
        if (!in_range) {
            // QEMU reads an empty reply as "the back end failed".
            err.set("vhost-user: GET_CONFIG of %u bytes at %u is outside the %zu-byte config",
                    h.size, h.offset, cfg.size());
            warn_report("%s", err.message.c_str());
            reply = make_reply(msg, &h, sizeof(h));
            reply->payload.resize(0);
            return Outcome::Ok;
        }
        reply = make_reply(msg, &h, sizeof(h));
        reply->payload.insert(reply->payload.end(), cfg.begin() + h.offset,
                              cfg.begin() + h.offset + h.size);
        return Outcome::Ok;
    }
    if (h.flags > 1 || !in_range ||
        !dev_.write_config(h.offset, msg.payload.data() + sizeof(h), h.size)) {
        err.set("vhost-user: SET_CONFIG of %u bytes at %u (flags %u) refused", h.size, h.offset,
                h.flags);
        return Outcome::Failed;
    }
    return Outcome::Ok;
}

Task<VhostUserBlkSession::Outcome> VhostUserBlkSession::co_set_mem_table(Message& msg,
                                                                         Error& err)
{
    std::unique_ptr<VhostUserMemTable> t = VhostUserMemTable::create(msg, err);
    if (!t) {
        err.prepend("vhost-user: SET_MEM_TABLE");
        co_return Outcome::Failed;
    }
    // Requests in flight point into the old mappings: let them finish,
    // then move the running rings over to the new ones.
    std::vector<Vring*> running;
    for (auto& v : vrings_) {
        if (v->vq.started()) {
            running.push_back(v.get());
            co_await co_quiesce(*v);
        }
    }
    mem_ = std::move(t);
    Outcome o = Outcome::Ok;
    for (Vring* v : running) {
        if (!try_start(*v, err)) {
            o = Outcome::Failed;
        }
    }
    co_return o;
}

Task<void> VhostUserBlkSession::co_reset()
{
    for (auto& v : vrings_) {
        co_await co_quiesce(*v);
        uint16_t index = v->index;
        v = std::make_unique<Vring>();
        v->index = index;
    }
    features_ = 0;
    protocol_features_ = 0;
}

Task<void> VhostUserBlkSession::co_close()
{
    if (closed_) {
        co_return;
    }
    closed_ = true;
    co_await co_reset();
    mem_.reset();
    sock_.reset();
}

}  // namespace qemu
