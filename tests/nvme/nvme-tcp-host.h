// A small NVMe/TCP host (initiator) of our own, written from the NVMe/TCP
// and Fabrics specifications: blocking sockets, one thread per queue, no
// code shared with the target but the PDU layouts (include/export/
// nvme-tcp-pdu.h).  Used by build/tests/nvme-tcp-initiator (protocol test
// client and load generator, scripts/bench/bench-nvme-tcp.sh).
//
// Threads: a HostQueue belongs to one thread at a time.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "export/nvme-tcp-pdu.h"

namespace qemu {

// A command as the host tracks it until its completion.
struct HostCommand {
    NvmeSqe sqe{};
    std::vector<uint8_t> data;  // H2C: sent; C2H: filled (sized by the caller)
    NvmeCqe cqe{};
    bool done = false;
    uint32_t c2h_received = 0;
};

class HostQueue {
public:
    HostQueue() = default;
    ~HostQueue();
    HostQueue(const HostQueue&) = delete;
    HostQueue& operator=(const HostQueue&) = delete;

    // Connects (unix path, or host + port) and exchanges ICReq/ICResp.
    // false with `error` set.
    bool open(const std::string& host, const std::string& port, const std::string& unix_path,
              nvme_tcp::Digests dg, std::string& error);
    // Only connects (hostile tests send their own ICReq).
    bool connect_only(const std::string& host, const std::string& port,
                      const std::string& unix_path, std::string& error);
    // Takes over a connected socket (tests: one end of a socketpair).
    void adopt(int fd) { fd_ = fd; }
    // The ICReq/ICResp exchange on the connected socket.
    bool handshake(nvme_tcp::Digests dg, std::string& error);
    // Sends raw bytes (hostile tests).
    bool send_raw(const void* buf, size_t len);
    // Reads one PDU whole (header + rest); false at end of stream.
    bool recv_pdu(std::vector<uint8_t>& pdu);

    // Submits cmd with its data (in-capsule if it fits, else on R2T); the
    // CID is chosen here.  REQUIRES: fewer than 65535 commands in flight.
    bool submit(HostCommand& cmd);
    // While corked, submit() only queues its PDU; flush() sends every
    // queued PDU with one write (the bench's many commands per poll()).
    void set_corked(bool on) { corked_ = on; }
    bool flush();
    // Processes PDUs until at least one command completes; calls
    // on_done for each completed one.  false (with error) on a protocol
    // failure or end of stream.
    bool poll(const std::function<void(HostCommand&)>& on_done);
    // submit() + poll() until cmd is done.
    bool execute(HostCommand& cmd);

    const std::string& error() const { return error_; }
    uint32_t in_capsule() const { return in_capsule_; }
    void set_in_capsule(uint32_t n) { in_capsule_ = n; }
    unsigned in_flight() const { return in_flight_; }
    int fd() const { return fd_; }

private:
    bool read_full(void* buf, size_t len);
    bool write_iov(const iovec* iov, unsigned niov);
    bool send_h2c(HostCommand& cmd, const nvme_tcp::DataHeader& r2t);
    bool handle_pdu(const std::vector<uint8_t>& pdu, const std::function<void(HostCommand&)>& cb);
    bool fail(const std::string& why);

    int fd_ = -1;
    nvme_tcp::Digests dg_;
    uint32_t maxh2cdata_ = 0;
    uint32_t in_capsule_ = 8192;
    std::vector<HostCommand*> by_cid_ = std::vector<HostCommand*>(65536, nullptr);
    uint16_t next_cid_ = 0;
    unsigned in_flight_ = 0;
    std::string error_;
    bool corked_ = false;
    std::vector<uint8_t> out_;  // PDUs queued while corked
    // Bytes read but not consumed: rbuf_[rpos_, rend_).
    std::vector<uint8_t> rbuf_ = std::vector<uint8_t>(64 * 1024);
    size_t rpos_ = 0, rend_ = 0;
};

// SQE builders for what the initiator sends.
NvmeSqe nvme_sqe_connect(uint16_t qid, uint16_t sqsize, uint32_t kato_ms);
std::vector<uint8_t> nvme_connect_data(uint16_t cntlid, const std::string& subnqn,
                                       const std::string& hostnqn);
NvmeSqe nvme_sqe_property_get(uint32_t offset, bool eight_bytes);
NvmeSqe nvme_sqe_property_set(uint32_t offset, uint64_t value, bool eight_bytes);
NvmeSqe nvme_sqe_identify(uint8_t cns, uint8_t csi, uint32_t nsid);
// Read/Write/Zone Append of nlb blocks at slba (the SGL is submit()'s).
NvmeSqe nvme_sqe_rw(uint8_t opcode, uint32_t nsid, uint64_t slba, uint32_t nlb);

}  // namespace qemu
