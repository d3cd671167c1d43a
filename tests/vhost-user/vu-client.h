// A small vhost-user front end for tests and benchmarks: it does what
// QEMU's vhost-user-blk-pci does to a back end (the message flow of
// QEMU's realize and start), with the guest's memory in a memfd of its
// own, and drives split virtqueues as a virtio-blk driver would.
//
// Synchronous and single-threaded: messages block on the socket, and
// completions are waited for on the call eventfd.  Each queue has `depth`
// request slots; slot i owns descriptors 3i..3i+2 and a data buffer of
// max_io bytes in guest memory (out data first, then in data and in-header).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "export/vhost-user-blk/vhost-user-proto.h"

namespace qemu {

struct VuClientOptions {
    unsigned num_queues = 1;
    unsigned queue_size = 128;
    unsigned depth = 32;         // slots per queue, ≤ queue_size / 3
    uint32_t max_io = 1 << 20;   // bytes of data per slot
    uint32_t config_size = 60;   // GET_CONFIG size (QEMU's vhost-user-blk-pci: 60)
    bool event_idx = true;
};

class VuClient {
public:
    VuClient() = default;
    ~VuClient();
    VuClient(const VuClient&) = delete;
    VuClient& operator=(const VuClient&) = delete;

    // Connects to the back end's socket (no messages yet).
    bool connect(const std::string& path, Error& err);
    int sock() const { return sock_; }

    // One request; when it has a reply (or REPLY_ACK was asked for),
    // waits for it into *reply.  Returns 0, or -errno / -EPROTO with err.
    int call(vhost_user::Message msg, vhost_user::Message* reply, Error& err);
    int call_u64(uint32_t request, uint64_t value, vhost_user::Message* reply, Error& err);

    // QEMU's whole sequence: features, protocol features, queue number,
    // owner, config, memory table, and every ring started and enabled.
    bool start(const VuClientOptions& opts, Error& err);
    // GET_VRING_BASE on every queue (QEMU's stop); the bases are returned.
    bool stop(std::vector<uint16_t>& bases, Error& err);

    const std::vector<uint8_t>& config() const { return config_; }
    uint64_t features() const { return features_; }
    uint64_t capacity_sectors() const;

    // A virtio-blk request as the driver builds it: header type/sector,
    // out data (written to the device), in data size (read back; the
    // in-header of in_hdr bytes follows it and ends with the status).
    struct Request {
        uint32_t type = 0;
        uint64_t sector = 0;
        const void* out = nullptr;  // nullptr: the slot's buffer already holds it
        uint32_t out_len = 0;
        uint32_t in_len = 0;
        uint32_t in_hdr = 1;
    };
    struct Completion {
        unsigned slot;
        uint32_t used_len;
        uint8_t status;
        const uint8_t* in;  // in_len + in_hdr bytes in guest memory
    };

    // Puts a request in a free slot of queue q (REQUIRES: free_slots(q)>0)
    // without kicking; returns the slot.
    unsigned submit(unsigned q, const Request& r);
    unsigned free_slots(unsigned q) const;
    void kick(unsigned q);
    // Collects completions of queue q, waiting on its call eventfd while
    // none are there (up to timeout_ms; -1: forever).  Returns how many
    // were handed to fn, or -ETIMEDOUT / -EPROTO / -ECONNRESET (the back
    // end closed the connection or sent something unasked).
    int reap(unsigned q, const std::function<void(const Completion&)>& fn, int timeout_ms);
    // submit + kick + reap one request synchronously.
    int run(unsigned q, const Request& r, std::vector<uint8_t>* in, uint8_t& status);
    uint8_t* slot_buffer(unsigned q, unsigned slot);

private:
    struct Queue {
        uint8_t* desc;
        uint8_t* avail;
        uint8_t* used;
        uint16_t avail_idx = 0;
        uint16_t last_used = 0;
        std::vector<unsigned> free;
        std::vector<Request> pending;  // per slot
        int kick = -1;
        int call = -1;
        uint64_t data;  // guest address of slot 0's buffer
    };
    uint64_t gpa(const void* p) const { return uint64_t(static_cast<const uint8_t*>(p) - mem_); }
    uint64_t alloc(uint64_t len, uint64_t align);
    // A slot: the 16-byte out header (in 32 bytes), then max_io bytes of
    // data and room for the largest in-header after them.
    uint64_t slot_stride() const { return 64 + uint64_t(opts_.max_io); }

    int sock_ = -1;
    int memfd_ = -1;
    uint8_t* mem_ = nullptr;
    uint64_t mem_size_ = 0;
    uint64_t mem_used_ = 0;
    uint64_t features_ = 0;
    uint64_t protocol_ = 0;
    VuClientOptions opts_;
    std::vector<uint8_t> config_;
    std::vector<Queue> queues_;
};

}  // namespace qemu
