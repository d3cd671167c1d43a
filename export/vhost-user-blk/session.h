// One vhost-user front end's connection to the vhost-user-blk back end:
// the protocol state machine (backend.cc) and the virtqueues it runs
// (vring.cc), serving a VirtioBlkDevice.  Private to export/vhost-user-blk/.
//
// Policy for a hostile front end: every message is checked
// (vhost_user::check) before its handler runs, and every index, size and
// address after that.  A request that fails is answered with a non-zero
// ack when the front end asked for one (REPLY_ACK + NEED_REPLY) and the
// session goes on; otherwise the session ends (QEMU's libvhost-user
// "panics" the same way), which closes every fd and mapping it holds.
// The export keeps listening either way.
//
// Threads: everything runs in ctx (the export's context), the requests as
// coroutines of their own; nothing is shared with other threads.
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "hw/virtio/virtio-blk.h"
#include "mem-table.h"
#include "qemu/coroutine-lock.h"
#include "vhost-user-proto.h"

namespace qemu {

class VhostUserBlkSession {
public:
    // sock: a connected socket the session owns (-1 for a session driven
    // by co_dispatch() alone, as the fuzz harness does).  dev outlives it.
    VhostUserBlkSession(AioContext& ctx, int sock, VirtioBlkDevice& dev);
    // REQUIRES: co_close() has returned.
    ~VhostUserBlkSession();

    // Reads and answers messages until the front end hangs up, breaks the
    // protocol, or disconnect() is called; then co_close()s.
    Task<void> co_run();
    // From ctx: ends co_run() (wakes its read with shutdown()).
    void disconnect();

    enum class Outcome { Ok, Failed, Fatal };
    // Handles one message that has not been checked yet; reply is set when
    // one is due (the request's own reply or a REPLY_ACK ack).  Fatal: the
    // connection must end (err says why).
    Task<Outcome> co_dispatch(vhost_user::Message& msg, std::optional<vhost_user::Message>& reply,
                              Error& err);
    // Stops every ring, waits for the requests in flight, unmaps memory.
    Task<void> co_close();

    uint64_t protocol_features() const { return protocol_features_; }

private:
    // A virtqueue and what the front end told us about it.
    struct Vring {
        uint16_t index = 0;
        uint32_t num = 0;  // 0: SET_VRING_NUM not seen
        std::optional<vhost_user::VringAddr> addr;
        uint16_t base = 0;  // where the queue resumes
        UniqueFd kick, call, err;
        bool kicked = false;   // SET_VRING_KICK seen: the ring may start
        bool enabled = false;  // SET_VRING_ENABLE(1), or bit 30 not negotiated
        VirtQueue vq;          // started while processing
        bool stop_loop = false;
        bool loop_running = false;
        unsigned inflight = 0;  // requests in co_handle(), and a pending notify_pending flush
        bool notify_pending = false;  // a call notification is posted
        CoQueue idle;           // woken when the loop ended or inflight dropped to 0
    };

    // backend.cc: one handler per group of requests.
    Task<Outcome> co_handle(vhost_user::Message& msg, std::optional<vhost_user::Message>& reply,
                            Error& err);
    Outcome handle_features(vhost_user::Message& msg, std::optional<vhost_user::Message>& reply,
                            Error& err);
    Task<Outcome> co_handle_vring(vhost_user::Message& msg,
                                  std::optional<vhost_user::Message>& reply, Error& err);
    Task<Outcome> co_handle_vring_fd(vhost_user::Message& msg, Error& err);
    Outcome handle_config(vhost_user::Message& msg, std::optional<vhost_user::Message>& reply,
                          Error& err);
    Task<Outcome> co_set_mem_table(vhost_user::Message& msg, Error& err);
    Task<void> co_reset();
    Vring* vring(uint32_t index, Error& err);

    // vring.cc
    // Starts v's queue and kick loop if it is kicked, enabled and fully
    // described; false with err set when its rings do not translate.
    bool try_start(Vring& v, Error& err);
    // Stops v's kick loop and waits for its requests; the queue stops and
    // base keeps where it stopped.  The fds stay.
    Task<void> co_quiesce(Vring& v);
    Task<void> co_kick_loop(Vring& v);
    void process(Vring& v);
    Task<void> co_request(Vring& v, VirtQueueElement elem);
    void finished(Vring& v);  // one of v.inflight is done
    bool started_any() const;

    AioContext& ctx_;
    UniqueFd sock_;
    VirtioBlkDevice& dev_;
    std::vector<std::unique_ptr<Vring>> vrings_;
    std::unique_ptr<VhostUserMemTable> mem_;
    uint64_t features_ = 0;  // SET_FEATURES, with bit 30
    uint64_t protocol_features_ = 0;
    bool closed_ = false;
};

// The protocol features this back end offers.
uint64_t vhost_user_blk_protocol_features();

}  // namespace qemu
