// The NVMe controller model (hw/nvme/): subsystems whose namespaces are
// block nodes, controllers with admin and I/O queues, the admin, NVM and
// Zoned Namespace command sets, and the Fabrics commands (Connect, Property
// Get/Set) plus the discovery subsystem.  It knows nothing of a transport:
// export/nvme-tcp/ (and any later fabric) turns PDUs into NvmeRequests and
// completions back into PDUs, as SPDK's lib/nvmf splits ctrlr.c from tcp.c.
//
//   transport connection ──owns──▶ NvmeQueuePair ──refers to──▶ NvmeController
//                                        │ (qid 0 creates it       │ (shared by its
//                                        │  at Connect)            │  admin and I/O queues)
//                                        ▼                         ▼
//                                   NvmeTarget ──owns──▶ NvmeSubsystem ──▶ NvmeNamespace
//                                                                           (a BlockBackend)
//
// Zoned nodes become ZNS namespaces (CSI 02h) whose geometry and limits come
// from the node's BlockLimits, never from options of the model; zone errors
// reach the host as the ZNS status codes through nvme_status_from_result()
// (include/block/zone-error.h), host errors as generic/media statuses.
//
// Threads: a target, its subsystems, controllers and queue pairs all run in
// one AioContext, the target's; every namespace's BlockBackend is in it too
// (the export layer moves the node there or refuses).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "block/block-backend.h"
#include "hw/nvme/nvme-spec.h"
#include "qemu/coroutine.h"
#include "qemu/error.h"
#include "qemu/iov.h"

namespace qemu {

class NvmeController;
class NvmeSubsystem;
class NvmeTarget;

// One command and its data, as a transport hands it to the model.
//
// Data: `data` describes `data_len` bytes of transport-owned memory, the
// length the command's SGL (DPTR) announces (0: no data).  For commands
// that carry data to the controller (nvme_data_direction() == HostToCtrl)
// the transport has received all of it before co_execute(); for
// CtrlToHost the model writes the result there and sets `c2h_bytes` (which
// may be shorter: a partial zone report, an identify of 4 KiB into a larger
// buffer never is) and the transport sends that many bytes.  The model
// checks data_len against what the command needs and answers with
// "Data SGL Length Invalid" when it is short; it never reads or writes
// outside `data`.
struct NvmeRequest {
    NvmeSqe sqe{};
    IOVector data;
    uint32_t data_len = 0;
    uint32_t c2h_bytes = 0;
    // Filled by the model: DW0/DW1, and status (SCT/SC/DNR, see
    // NvmeCqe::set_status).  CID, SQID and SQHD are the transport's.
    NvmeCqe cqe{};
};

// Where a transport listens, for the discovery log and Identify.
struct NvmePortInfo {
    uint8_t trtype = NVMF_TRTYPE_TCP;
    uint8_t adrfam = NVMF_ADRFAM_IPV4;
    uint16_t portid = 1;
    std::string traddr;   // as given on the command line ("127.0.0.1")
    std::string trsvcid;  // the port number as text ("4420")
    // Bytes of data the transport accepts inside an I/O command capsule
    // (Identify IOCCSZ = (64 + this) / 16); admin capsules take 8 KiB.
    uint32_t in_capsule_data = 8192;
    // Largest transfer per command in bytes (Identify MDTS); 0: no limit.
    uint32_t max_data_transfer = 0;
    uint16_t max_queue_entries = 128;  // CAP.MQES + 1, and MAXCMD
};

// What a transport provides for each of its connections.
class NvmeTransportQueue {
public:
    virtual ~NvmeTransportQueue() = default;
    // The model asks for the connection to be dropped (keep-alive timeout,
    // the controller it belonged to was deleted, its subsystem removed).
    // Called in the target's context, possibly from inside co_execute(); the
    // transport must not destroy the NvmeQueuePair before its commands in
    // flight have returned.
    virtual void request_disconnect() = 0;
};

// The model's side of one submission/completion queue pair (one NVMe/TCP
// connection).  Created unconnected: until a Fabrics Connect succeeds on it,
// every other command fails with Command Sequence Error.  Connect with QID 0
// creates a controller (admin queue); with QID n it joins the controller
// whose CNTLID the Connect data names, if the host NQN and host ID match.
class NvmeQueuePair {
public:
    // `transport` and `port` must outlive the queue pair.
    NvmeQueuePair(NvmeTarget& target, NvmeTransportQueue& transport, const NvmePortInfo& port);
    // REQUIRES: no co_execute() running (call cancel_waiting(), then wait).
    // An admin queue's destruction deletes its controller, which asks the
    // controller's I/O queues to disconnect.
    ~NvmeQueuePair();
    NvmeQueuePair(const NvmeQueuePair&) = delete;
    NvmeQueuePair& operator=(const NvmeQueuePair&) = delete;

    // Executes one command; returns with req.cqe (and C2H data) ready.
    // Several run at once (up to the queue size).  Asynchronous Event
    // Requests stay suspended here until an event or cancel_waiting().
    Task<void> co_execute(NvmeRequest& req);

    // Ends every command that waits for an event (AERs complete with
    // "Aborted - SQ Deletion") so that teardown does not wait forever.
    void cancel_waiting();

    bool connected() const;
    uint16_t qid() const;        // valid once connected()
    uint16_t queue_size() const; // SQSIZE + 1 from Connect; valid once connected()
    // The KATO the controller runs with, 0 = none; valid once connected().
    uint32_t keep_alive_ms() const;

    // The model's state, opaque outside hw/nvme/.
    class Impl;

private:
    std::unique_ptr<Impl> impl_;
};

// Per-namespace settings that are not geometry (geometry comes from the
// node).  Empty/zero fields get values derived from the subsystem and nsid.
struct NvmeNamespaceOptions {
    uint32_t nsid = 0;                 // 0: the lowest free one
    uint32_t logical_block_size = 0;   // 512 or 4096; 0: the node's request
                                       // alignment rounded up to 512
    std::string uuid;                  // canonical text form; "" = derived
};

class NvmeSubsystem {
public:
    // The serial and model number as Identify Controller reports them.
    NvmeSubsystem(NvmeTarget& target, std::string nqn, std::string serial, std::string model);
    // REQUIRES: no namespace, no controller left.
    ~NvmeSubsystem();

    const std::string& nqn() const;

    // Attaches blk as a namespace (zoned → ZNS, else NVM command set).
    // blk is not owned and stays valid until co_remove_namespace() returns.
    // Returns the NSID, or 0 with err set (NSID in use, logical block size
    // not a multiple of the node's alignment, zone size not a multiple of
    // the block size, a zoned node with conventional zones or host-aware
    // zones, which ZNS cannot show, ...).  Controllers get a Namespace
    // Attribute Changed event.  A coroutine: a zoned node's first zone is
    // reported to find conventional zones (the block layer keeps them
    // first).  Runs in the target's context.
    Task<uint32_t> co_add_namespace(BlockBackend& blk, const NvmeNamespaceOptions& opts,
                                    Error& err);
    // Detaches a namespace once the commands running on it have returned;
    // new commands for it fail with Invalid Namespace.  Controllers get a
    // Namespace Attribute Changed event.
    Task<void> co_remove_namespace(uint32_t nsid);
    bool has_namespaces() const;

    // The model's state, opaque outside hw/nvme/.
    class Impl;
    Impl& impl() const { return *impl_; }

private:
    std::unique_ptr<Impl> impl_;
};

// Every subsystem of a process, and the discovery subsystem
// (nqn.2014-08.org.nvmexpress.discovery) that lists them per port.
class NvmeTarget {
public:
    explicit NvmeTarget(AioContext& ctx);
    // REQUIRES: every subsystem removed, no queue pair left.
    ~NvmeTarget();

    AioContext& ctx() const;

    // Creates a subsystem reachable through `port` (nullptr + err if the NQN
    // is malformed or taken).  Owned by the target.
    NvmeSubsystem* add_subsystem(const std::string& nqn, const NvmePortInfo& port,
                                 std::string serial, std::string model, Error& err);
    NvmeSubsystem* find_subsystem(const std::string& nqn) const;
    // Disconnects the subsystem's controllers and deletes it once their
    // commands have returned.  REQUIRES: no namespace left.
    Task<void> co_remove_subsystem(const std::string& nqn);

    // The model's state, opaque outside hw/nvme/.
    class Impl;
    Impl& impl() const { return *impl_; }

private:
    std::unique_ptr<Impl> impl_;
};

}  // namespace qemu
