// The NBD server's connection: negotiation (negotiate.cc) and transmission
// (requests.cc).  Private to export/nbd/.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "block/nbd.h"
#include "export/nbd-server.h"
#include "qemu/coroutine-lock.h"

namespace qemu {

// An export as the server holds it; connections keep it alive while they
// use it even after it was removed.
struct NbdExportEntry {
    NbdExportConfig cfg;
    uint64_t size = 0;     // the backend's length rounded down to 512
    bool removed = false;  // hidden from new clients, old ones ending
    unsigned users = 0;    // connections in transmission on it
    CoQueue users_gone;
};

// A growable big-endian output buffer for option replies and chunks.
struct WireBuf {
    std::vector<uint8_t> b;
    void u16(uint16_t v);
    void u32(uint32_t v);
    void u64(uint64_t v);
    void bytes(const void* p, size_t n);
    void str(const std::string& s) { bytes(s.data(), s.size()); }
};

// What a client negotiated, then fixed for the transmission phase.
enum class NbdMode { Simple, Structured, Extended };

// The metadata contexts a client selected (SET_META_CONTEXT) or queried.
struct NbdMetaContexts {
    bool base_allocation = false;   // id 0
    bool allocation_depth = false;  // id 1
    unsigned count() const { return unsigned(base_allocation) + unsigned(allocation_depth); }
};
constexpr uint32_t kMetaIdBaseAllocation = 0;
constexpr uint32_t kMetaIdAllocationDepth = 1;

// One decoded request header (compact or extended).
struct NbdRequest {
    uint16_t flags = 0;
    uint16_t type = 0;
    uint64_t cookie = 0;
    uint64_t from = 0;
    uint64_t len = 0;
    NbdMetaContexts contexts;   // BLOCK_STATUS: which contexts to answer
    std::vector<uint8_t> data;  // WRITE payload, READ buffer
};

class NbdClient {
public:
    // Takes over fd (closed when the connection ends).
    NbdClient(NbdServer& server, int fd);
    ~NbdClient();

    // The connection's whole life: negotiation, then requests until the
    // client leaves or is disconnected; returns after every request of it
    // has finished.  Runs in the server's context.
    Task<void> co_run();
    // Ends the connection: wakes the coroutine blocked on the socket.
    void disconnect();
    const std::shared_ptr<NbdExportEntry>& export_entry() const { return exp_; }

private:
    // --- negotiate.cc ---
    // 0 to enter transmission with exp_ set, or <0 to drop the connection.
    Task<int> co_negotiate();
    Task<int> co_option_loop(bool fixed, bool no_zeroes);
    Task<int> co_handle_option(uint32_t opt, std::vector<uint8_t>& data, bool no_zeroes);
    Task<int> co_opt_export_name(const std::vector<uint8_t>& data, bool no_zeroes);
    Task<int> co_opt_info(uint32_t opt, const std::vector<uint8_t>& data);
    Task<int> co_opt_list(uint32_t opt, const std::vector<uint8_t>& data);
    Task<int> co_opt_meta_context(uint32_t opt, const std::vector<uint8_t>& data);
    Task<int> co_send_meta_reply(uint32_t opt, uint32_t id, const char* name);
    Task<int> co_send_rep(uint32_t opt, uint32_t type, const void* data, size_t len);
    // An error reply carrying `msg` (QEMU always sends one).
    Task<int> co_send_rep_err(uint32_t opt, uint32_t type, std::string msg);
    uint16_t transmission_flags(const NbdExportEntry& e) const;
    Task<int> co_recv(void* buf, size_t len);

    // --- requests.cc ---
    Task<void> co_transmission();
    // Reads one request and its payload.  0: valid; -EIO: drop the
    // connection now; other -errno: reply with it and `msg` (then drop the
    // connection if `complete` is false: its payload was not consumed).
    Task<int> co_receive_request(NbdRequest& req, std::string& msg, bool& complete);
    Task<int> co_read_block_status_payload(NbdRequest& req, std::string& msg);
    Task<void> co_handle(std::unique_ptr<NbdRequest> req);
    Task<int> co_dispatch(NbdRequest& req);
    Task<int> co_do_read(NbdRequest& req);
    Task<int> co_sparse_read(NbdRequest& req);
    Task<int> co_block_status(NbdRequest& req, uint32_t id, bool last);
    Task<int> co_blk_call(std::function<Task<int>()> fn);
    Task<int> co_generic_reply(const NbdRequest& req, int ret, const char* msg);
    Task<int> co_simple_reply(const NbdRequest& req, uint32_t err, const void* data, size_t len);
    Task<int> co_chunk(const NbdRequest& req, uint16_t flags, uint16_t type, const iovec* payload,
                       unsigned niov);
    Task<int> co_chunk_error(const NbdRequest& req, int err, const char* msg);
    void log_request_failure(const NbdRequest& req, int ret);

    NbdServer& server_;
    AioContext& ctx_;
    int fd_;
    bool closing_ = false;
    NbdMode mode_ = NbdMode::Simple;
    std::shared_ptr<NbdExportEntry> exp_;
    NbdMetaContexts contexts_;
    std::string contexts_name_;  // the export contexts_ were selected on
    uint32_t check_align_ = 0;
    CoMutex send_lock_;         // one reply (all its chunks' bytes) at a time
    RequestCounter in_flight_;  // request coroutines not yet finished
    CoQueue slot_free_;         // the receive loop waits at kMaxRequests
};

// QEMU's limit of requests in flight per connection.
constexpr unsigned kNbdMaxRequests = 16;

}  // namespace qemu
