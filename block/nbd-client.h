// The NBD client's protocol engine, below the `nbd` block driver
// (block/nbd.cc): the handshake (nbd-client-negotiate.cc) and the
// transmission phase (nbd-client-conn.cc).  Wire constants are in
// include/block/nbd.h; the protocol is NetworkBlockDevice/nbd doc/proto.md
// with the extended-headers extension, negotiated as QEMU's client does.
//
// Threading: everything here runs in coroutines of one AioContext (the
// node's), which owns the socket.
#pragma once

#include <coroutine>
#include <cstdint>
#include <map>
#include <string>

#include "block/nbd.h"
#include "qemu/aio.h"
#include "qemu/coroutine-lock.h"
#include "qemu/coroutine.h"
#include "qemu/error.h"
#include "qemu/iov.h"

namespace qemu::nbd {

// What the handshake learned about the export and the session.
struct ExportInfo {
    uint64_t size = 0;
    uint16_t flags = 0;  // transmission flags (kFlag*)
    // NBD_INFO_BLOCK_SIZE; all 0 when the server did not send it.
    uint32_t min_block = 0;
    uint32_t opt_block = 0;
    uint32_t max_block = 0;
    bool structured = false;  // structured replies (also true with extended)
    bool extended = false;    // extended headers: 32-byte requests and replies
    bool base_allocation = false;
    uint32_t context_id = 0;  // base:allocation's id, when negotiated
};

// The client side of the fixed-newstyle handshake on the connected socket
// fd, for the export `name` (empty: the default export), as QEMU's client:
// C_NO_ZEROES when offered, EXTENDED_HEADERS else STRUCTURED_REPLY,
// SET_META_CONTEXT base:allocation, GO asking for INFO_BLOCK_SIZE, and
// EXPORT_NAME when the server does not know GO.  Every reply is checked
// (4.13 of the fact sheet); a server that breaks the protocol gets a
// clear error, never a crash or an endless loop.
// Returns 0 with info filled in, or -errno with err set (QEMU's messages:
// "Requested export not available" with the server's text as a hint).
// fd stays the caller's.
Task<int> client_negotiate(AioContext& ctx, int fd, const std::string& name, ExportInfo& info,
                           Error& err);

// Checks the negotiated block sizes and size as QEMU's client does;
// false with err set for a server that advertised impossible ones.
bool check_export_info(const ExportInfo& info, Error& err);

// One negotiated NBD session in its transmission phase.
//
// Requests may be issued concurrently from coroutines of ctx (up to
// kMaxInFlight on the wire, the rest wait for a slot).  Requests are
// written whole under a lock; one reader coroutine, running while any
// request waits for its reply, reads every reply and hands each to the
// request whose cookie it carries.  When the server goes away or breaks the protocol
// every pending and later request fails with -EIO: there is no
// reconnection.
class ClientConnection {
public:
    static constexpr unsigned kMaxInFlight = 16;  // QEMU's MAX_NBD_REQUESTS

    // Takes ownership of the connected, negotiated socket fd.
    ClientConnection(AioContext& ctx, int fd, const ExportInfo& info);
    // REQUIRES: close() has completed, or no request is in flight (the
    // reader must not be running).  Closes fd.
    ~ClientConnection();
    ClientConnection(const ClientConnection&) = delete;
    ClientConnection& operator=(const ClientConnection&) = delete;

    const ExportInfo& info() const { return info_; }
    // Moves the connection to another context's thread (the node's
    // drv_attach_aio_context).  REQUIRES: no request in flight (the node
    // is drained), so that no coroutine of the old context uses it.
    void set_context(AioContext& ctx) { ctx_ = &ctx; }

    // Reads len bytes at offset into qiov from qiov_offset.  0 or -errno.
    Task<int> read(uint64_t offset, uint64_t len, IOVector& qiov, size_t qiov_offset);
    // Writes len bytes of qiov (from qiov_offset) at offset; flags: kCmdFlagFua.
    Task<int> write(uint64_t offset, uint64_t len, IOVector& qiov, size_t qiov_offset,
                    uint16_t flags);
    // FLUSH, TRIM, WRITE_ZEROES (no payload, no reply data).
    Task<int> command(Command type, uint16_t flags, uint64_t offset, uint64_t len);
    // BLOCK_STATUS with REQ_ONE for base:allocation: the first extent at
    // offset, at most len bytes long (ext_len > 0), and its NBD_STATE_*
    // flags.  REQUIRES: info().base_allocation.
    Task<int> block_status(uint64_t offset, uint64_t len, uint64_t& ext_len, uint32_t& ext_flags);
    // Sends DISC (once no request is pending), shuts the socket down and
    // waits for the reader.  Later requests fail with -EIO.
    Task<void> close();

private:
    struct Request;
    struct DoneOp;

    Task<int> submit(Request& req, uint16_t flags, IOVector* payload);
    Task<int> send_request(Request& req, uint16_t flags, IOVector* payload);
    void complete(Request& req);
    // The connection is unusable: fail everything, stop the reader.
    void fail_all();

    // The reader coroutine and its steps (nbd-client-reply.cc).
    Task<void> reader();
    Task<int> receive_reply();
    Task<int> receive_simple(uint64_t cookie, uint32_t error);
    Task<int> receive_chunk(uint16_t flags, uint16_t type, uint64_t cookie, uint64_t length);
    Task<int> receive_read_chunk(Request& req, uint16_t type, uint64_t length);
    Task<int> receive_status_chunk(Request& req, uint16_t type, uint64_t length);
    Task<int> receive_error_chunk(Request& req, uint16_t type, uint64_t length);
    Task<int> recv(void* buf, size_t len);
    Task<int> recv_into(IOVector& qiov, size_t offset, size_t len);
    Task<int> discard(uint64_t len);
    Request* find(uint64_t cookie);

    AioContext* ctx_;
    int fd_;
    ExportInfo info_;
    std::map<uint64_t, Request*> in_flight_;
    uint64_t next_cookie_ = 1;
    CoQueue slot_waiters_;
    CoMutex send_lock_;
    bool dead_ = false;
    bool reader_running_ = false;
    std::coroutine_handle<> reader_exit_waiter_;
};

}  // namespace qemu::nbd
