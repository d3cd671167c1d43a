// The NVMe/TCP target's connections and listeners.  Private to
// export/nvme-tcp/ (tests and the fuzzer include it to drive a connection
// over a socketpair).
//
// Threads: a listener, its connections and the NvmeTarget they serve all
// run in the target's AioContext; every member function is called there.
// Ownership: a listener owns its listening socket and its connections; a
// connection owns its socket and its NvmeQueuePair.  The listener's
// NvmePortInfo outlives both (the subsystems reachable through it are
// removed before the listener stops).
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <vector>

#include "block/block_int.h"
#include "export/nvme-tcp-pdu.h"
#include "hw/nvme/nvme.h"
#include "qemu/coroutine-lock.h"
#include "qemu/sockets.h"

namespace qemu {

// Transfer limits of the target (docs/devel/nvme-tcp.rst says why).
constexpr uint32_t kNvmeTcpMaxH2CData = 128 * 1024;   // ICResp MAXH2CDATA
constexpr uint32_t kNvmeTcpC2HChunk = 128 * 1024;     // bytes per C2HData PDU
constexpr uint32_t kNvmeTcpAdminInCapsule = 8192;     // NVME_TCP_ADMIN_CCSZ
constexpr uint32_t kNvmeTcpIoInCapsule = 8192;        // Identify IOCCSZ
constexpr uint32_t kNvmeTcpMaxTransfer = 1024 * 1024; // Identify MDTS
constexpr uint16_t kNvmeTcpQueueEntries = 128;        // CAP.MQES + 1

// One host connection: one NVMe queue pair.  The receive loop reads PDUs
// in order; each command runs in a coroutine of its own, so many are in
// flight; co_send_pdus() keeps their PDUs whole on the socket.
class NvmeTcpConnection final : public NvmeTransportQueue {
public:
    // Takes over fd (closed by the destructor).
    NvmeTcpConnection(NvmeTarget& target, const NvmePortInfo& port, int fd);
    ~NvmeTcpConnection() override;
    NvmeTcpConnection(const NvmeTcpConnection&) = delete;
    NvmeTcpConnection& operator=(const NvmeTcpConnection&) = delete;

    // The connection's whole life: ICReq/ICResp, then PDUs until the host
    // leaves, sends garbage (answered by a C2HTermReq) or is disconnected;
    // returns once every command of it has finished and its queue pair is
    // gone.
    Task<void> co_run();
    // Ends the connection: wakes the receive loop through shutdown().
    void disconnect();
    void request_disconnect() override { disconnect(); }

private:
    struct Command;

    Task<int> co_recv(void* buf, size_t len);
    Task<int> co_skip(size_t len);
    Task<int> co_initialize();
    Task<void> co_receive_loop();
    Task<int> co_receive_capsule(const uint8_t* hdr, const nvme_tcp::PduLayout& l);
    Task<int> co_receive_h2c_data(const uint8_t* hdr, const nvme_tcp::PduLayout& l);
    Task<int> co_recv_data(uint8_t* dst, const nvme_tcp::PduLayout& l, bool& digest_ok);
    Task<void> co_fatal(const nvme_tcp::PduError& e, const uint8_t* hdr, size_t hdr_len);
    uint16_t map_data(Command& cmd, std::vector<uint8_t>& capsule_data);
    Task<void> co_command(std::unique_ptr<Command> cmd);
    Task<int> co_fetch_h2c(Command& cmd);
    Task<int> co_complete(Command& cmd);
    void add_c2h(Command& cmd, uint32_t len, bool success, uint8_t* slots, std::vector<iovec>& iov);
    Task<int> co_send(const iovec* iov, unsigned niov);
    Task<int> co_send_pdus(const iovec* iov, unsigned niov);
    uint32_t in_capsule_limit() const;
    void fail_data_waiters();

    AioContext& ctx_;
    NvmeTarget& target_;
    const NvmePortInfo& port_;
    int fd_;
    bool closing_ = false;
    nvme_tcp::Digests dg_;
    uint32_t c2h_align_ = 4;  // (HPDA + 1) * 4
    std::unique_ptr<NvmeQueuePair> qp_;
    bool sqflow_disabled_ = false;
    uint64_t fetched_ = 0;  // capsules received, for SQHD
    // PDUs waiting for the flusher of co_send_pdus() (whole PDUs only, so
    // that those of different commands never interleave).
    struct OutEntry {
        const iovec* iov;
        unsigned niov;
        int result = 0;
        bool done = false;
    };
    std::deque<OutEntry*> out_queue_;
    bool flushing_ = false;
    CoQueue out_done_;
    RequestCounter in_flight_;
    std::map<uint16_t, Command*> awaiting_data_;  // by TTAG
    uint16_t next_ttag_ = 0;
    // Bytes received but not yet consumed: rbuf_[rpos_, rend_).
    std::vector<uint8_t> rbuf_;
    size_t rpos_ = 0, rend_ = 0;
};

// A listening socket and the connections accepted on it, serving one
// NvmeTarget through one port (the subsystems added with port()).
class NvmeTcpListener {
public:
    // Listens on addr; nullptr and err set on failure.
    static std::unique_ptr<NvmeTcpListener> create(NvmeTarget& target, const SocketAddress& addr,
                                                   uint16_t portid, Error& err);
    // REQUIRES: co_stop() has returned.
    ~NvmeTcpListener();
    NvmeTcpListener(const NvmeTcpListener&) = delete;
    NvmeTcpListener& operator=(const NvmeTcpListener&) = delete;

    const NvmePortInfo& port() const { return port_; }
    unsigned connection_count() const { return unsigned(conns_.size()); }

    // Serves one connected socket (taking it over) as if accepted: used by
    // the accept loop, tests and the fuzzer.
    void serve(int fd);
    // Stops accepting, disconnects every connection and returns once all of
    // them have finished.
    Task<void> co_stop();

    // A listener with no socket (listen_fd -1), for serve() alone.
    NvmeTcpListener(NvmeTarget& target, int listen_fd, NvmePortInfo port);

private:
    Task<void> co_accept_loop();
    void connection_finished(NvmeTcpConnection* c);

    NvmeTarget& target_;
    int listen_fd_;
    NvmePortInfo port_;
    bool accepting_ = false;
    bool stopping_ = false;
    CoQueue accept_done_;
    CoQueue conns_gone_;
    std::vector<std::unique_ptr<NvmeTcpConnection>> conns_;
};

// The port a listener on addr announces (traddr/trsvcid/adrfam and the
// transfer limits above).
NvmePortInfo nvme_tcp_port_info(const SocketAddress& addr, uint16_t portid);

}  // namespace qemu
