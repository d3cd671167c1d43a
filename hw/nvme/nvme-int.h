// The NVMe model's private types (hw/nvme/): what include/hw/nvme/nvme.h
// hides behind its Impl pointers, shared by the files of this folder, one
// file per concept (target, subsystem, namespace, controller, queue pair,
// fabrics commands, identify, features, log pages, NVM and ZNS commands).
//
// Ownership: the target owns its subsystems; a subsystem owns its
// namespaces (shared with the commands running on them) and lists its live
// controllers; a controller is shared by its queue pairs (and by the
// commands running on them), so that it outlives whichever of its queues
// goes last.  Everything runs in the target's AioContext.
#pragma once

#include <coroutine>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "block/block_int.h"
#include "hw/nvme/nvme.h"
#include "qemu/aio.h"

namespace qemu {

// Status values beyond those of nvme-spec.h (SCT << 8 | SC); constants,
// not an enum, so that they combine with NVME_SC_DNR without warnings.
constexpr uint16_t NVME_SC_INVALID_NSID = 0x000b;
constexpr uint16_t NVME_SC_NS_WRITE_PROTECTED = 0x0020;
constexpr uint16_t NVME_SC_LBA_RANGE = 0x0080;
constexpr uint16_t NVME_SC_ASYNC_LIMIT = 0x0105;
constexpr uint16_t NVME_SC_INVALID_LOG_PAGE = 0x0109;
constexpr uint16_t NVME_SC_FEATURE_NOT_SAVEABLE = 0x010d;
constexpr uint16_t NVME_SC_INVALID_ZONE_OP = 0x01b6;
constexpr uint16_t NVME_SC_CONNECT_FORMAT = 0x0180;
constexpr uint16_t NVME_SC_CONNECT_CTRL_BUSY = 0x0181;
constexpr uint16_t NVME_SC_CONNECT_INVALID_PARAM = 0x0182;
constexpr uint16_t NVME_SC_COMPARE_FAILED = 0x0285;

// Command set identifiers (CSI) and the controller's fixed capabilities.
enum : uint8_t { NVME_CSI_NVM = 0x00, NVME_CSI_ZONED = 0x02 };
constexpr uint32_t kNvmeVersion = 0x00010400;  // NVMe 1.4, as QEMU's controller
constexpr unsigned kNvmeMaxAers = 4;           // AERL + 1
constexpr unsigned kNvmeErrorLogEntries = 16;  // ELPE + 1
constexpr uint16_t kNvmeMaxIoQueues = 64;      // as QEMU's max_ioqpairs
constexpr uint32_t kNvmeMaxNamespaces = 1024;  // NN; also the changed-namespace list's size
constexpr uint16_t kNvmeKasUnitMs = 100;       // Identify KAS granularity
constexpr size_t kNvmeIdentifySize = 4096;

// Namespace Attribute Changed notice, as an AER's DW0: type 2 (notice),
// information 00h, log page 04h.
constexpr uint32_t kNvmeAenNsAttrChanged = 0x2 | 0x00 << 8 | 0x04 << 16;
constexpr uint32_t kNvmeAecNsAttr = 1u << 8;  // its bit in Async Event Configuration

// One namespace: a block backend and how its bytes are shown as blocks.
// Geometry is read from the node's BlockLimits when needed, so that a node
// whose limits change is described as it is now.
class NvmeNamespace {
public:
    NvmeNamespace(BlockBackend& blk, uint32_t nsid, unsigned lba_shift, bool zoned,
                  const uint8_t uuid[16]);

    BlockBackend& blk() const { return blk_; }
    uint32_t nsid() const { return nsid_; }
    unsigned lba_shift() const { return lba_shift_; }
    uint32_t lba_size() const { return 1u << lba_shift_; }
    bool zoned() const { return zoned_; }
    uint8_t csi() const { return zoned_ ? NVME_CSI_ZONED : NVME_CSI_NVM; }
    const BlockLimits& limits() const { return blk_.bs()->limits(); }
    uint64_t nsze() const { return blk_.getlength() >> lba_shift_; }
    bool read_only() const { return blk_.is_read_only(); }
    // The identifiers of CNS 03h: the UUID, an NGUID and an EUI-64 derived
    // from it.
    const uint8_t* uuid() const { return uuid_; }
    void nguid(uint8_t out[16]) const;
    void eui64(uint8_t out[8]) const;

    // Commands running on the namespace; co_remove_namespace waits for 0.
    RequestCounter& in_flight() { return in_flight_; }

private:
    BlockBackend& blk_;
    uint32_t nsid_;
    unsigned lba_shift_;
    bool zoned_;
    uint8_t uuid_[16];
    RequestCounter in_flight_;
};

// Validates blk for a namespace and creates it (see NvmeSubsystem::add_namespace).
std::shared_ptr<NvmeNamespace> nvme_namespace_create(BlockBackend& blk, uint32_t nsid,
                                                     const NvmeNamespaceOptions& opts,
                                                     const std::string& subnqn, Error& err);

class NvmeSubsystem::Impl {
public:
    Impl(NvmeTarget& target, std::string nqn, const NvmePortInfo& port, std::string serial,
         std::string model);

    NvmeTarget& target_;
    const std::string nqn_;
    NvmePortInfo port_;  // set by NvmeTarget::add_subsystem
    const std::string serial_;
    const std::string model_;
    std::map<uint32_t, std::shared_ptr<NvmeNamespace>> namespaces_;
    std::vector<NvmeController*> controllers_;  // the live ones (admin queue connected)
    uint16_t next_cntlid_ = 1;

    std::shared_ptr<NvmeNamespace> find_namespace(uint32_t nsid) const;
    NvmeController* find_controller(uint16_t cntlid) const;
    // The next controller ID not in use (1..FFEFh); 0: none.
    uint16_t allocate_cntlid();
    void notify_namespace_changed(uint32_t nsid);
};

class NvmeTarget::Impl {
public:
    explicit Impl(AioContext& ctx) : ctx_(ctx) {}

    AioContext& ctx_;
    std::vector<std::unique_ptr<NvmeSubsystem>> subsystems_;
    std::vector<NvmeController*> discovery_controllers_;
    uint16_t next_discovery_cntlid_ = 1;
    uint64_t discovery_genctr_ = 0;  // bumped whenever the discovery log changes

    NvmeSubsystem::Impl* find(const std::string& nqn) const;
    // The next discovery controller ID not in use (1..FFEFh); 0: none.
    uint16_t allocate_discovery_cntlid();
};

// The controller ID allocator of subsystems and of the discovery
// controllers: from `next` on, skipping the IDs of `in_use`.
uint16_t nvme_allocate_cntlid(uint16_t& next, const std::vector<NvmeController*>& in_use);

// An Asynchronous Event Request parked until an event comes.
struct NvmeAerWaiter {
    NvmeRequest* req = nullptr;
    NvmeQueuePair::Impl* queue = nullptr;
    std::coroutine_handle<> handle;
    uint16_t status = 0;
};

// One controller: created by an admin Connect, joined by I/O Connects.
class NvmeController : public std::enable_shared_from_this<NvmeController> {
public:
    // `subsys` null: a discovery controller.
    NvmeController(NvmeTarget::Impl& target, NvmeSubsystem::Impl* subsys, uint16_t cntlid,
                   const NvmePortInfo& port, std::string hostnqn, const uint8_t hostid[16],
                   uint32_t kato_ms);
    ~NvmeController();
    NvmeController(const NvmeController&) = delete;
    NvmeController& operator=(const NvmeController&) = delete;

    NvmeTarget::Impl& target() const { return target_; }
    // Null for a discovery controller and once the controller is gone
    // (its admin queue closed or its subsystem removed).
    NvmeSubsystem::Impl* subsystem() const { return subsys_; }
    bool discovery() const { return discovery_; }
    bool gone() const { return gone_; }
    uint16_t cntlid() const { return cntlid_; }
    const NvmePortInfo& port() const { return port_; }
    const std::string& hostnqn() const { return hostnqn_; }
    const uint8_t* hostid() const { return hostid_; }

    // Queues: qid 0 is the admin queue.
    bool queue_in_use(uint16_t qid) const;
    void attach_queue(uint16_t qid, NvmeQueuePair::Impl* q);
    void detach_queue(uint16_t qid);
    // The highest I/O queue ID a Connect may use (Number of Queues).
    uint16_t max_io_qid() const { return nr_io_queues_; }
    // Ends the controller: out of its subsystem's list, keep-alive stopped,
    // AERs aborted, every queue asked to disconnect.
    void shut_down();

    // Commands in flight on any of the controller's queues.
    RequestCounter& in_flight() { return in_flight_; }

    // Properties (Fabrics Property Get/Set).
    uint64_t cap() const;
    uint32_t cc() const { return cc_; }
    uint32_t csts() const { return csts_; }
    bool ready() const { return csts_ & 1; }
    // Applies a CC write as nvmet does: enable checks the fields and
    // either sets RDY or the fatal status; a shutdown flushes every
    // namespace before reporting it complete.
    Task<void> co_set_cc(uint32_t value);
    // Namespaces this controller shows: zoned ones only when CC.CSS
    // selects all I/O command sets (QEMU, and the Linux host, do the same).
    std::shared_ptr<NvmeNamespace> find_namespace(uint32_t nsid) const;
    std::vector<std::shared_ptr<NvmeNamespace>> namespaces() const;

    // Keep alive: KATO in ms (0: none), restarted by Keep Alive commands.
    uint32_t kato_ms() const { return kato_ms_; }
    void set_kato(uint32_t ms);
    void keep_alive();

    // Features the controller keeps.
    bool write_cache_enabled() const { return write_cache_; }
    void set_write_cache(bool on) { write_cache_ = on; }
    uint32_t async_event_config() const { return aec_; }
    void set_async_event_config(uint32_t v) { aec_ = v; }
    uint32_t arbitration() const { return arbitration_; }
    void set_arbitration(uint32_t v) { arbitration_ = v; }
    // Number of Queues: granted once, before the first I/O queue.
    uint16_t set_nr_io_queues(uint16_t requested);

    // Asynchronous events: `co_await AerPark{c, w}` (when aer_slot_free())
    // parks an AER until an event is delivered (w.status 0, DW0 set) or it
    // is cancelled (w.status Aborted - SQ Deletion); it is resumed from
    // the loop, never from inside the call that completes it.
    bool aer_slot_free() const { return aers_.size() < kNvmeMaxAers; }
    struct AerPark {
        NvmeController& c;
        NvmeAerWaiter& w;
        bool await_ready() const noexcept { return false; }
        void await_suspend(std::coroutine_handle<> h);
        void await_resume() const noexcept {}
    };
    void cancel_aers(const NvmeQueuePair::Impl* queue);
    // A namespace was attached or detached (or changed).
    void namespace_changed(uint32_t nsid);
    // Log 04h: the changed list, cleared by reading; `retain` (RAE) keeps
    // the notice masked.
    std::vector<uint32_t> take_changed_namespaces(bool retain);

    // Error information (log 01h) and SMART counters (log 02h).
    struct ErrorEntry {
        uint64_t count;
        uint16_t sqid, cid, status;
        uint32_t nsid;
        uint64_t lba;
    };
    void record_error(uint16_t sqid, const NvmeSqe& sqe, uint16_t status);
    const std::deque<ErrorEntry>& errors() const { return errors_; }
    uint64_t error_count() const { return error_count_; }
    struct Counters {
        uint64_t bytes_read = 0, bytes_written = 0;
        uint64_t read_cmds = 0, write_cmds = 0;
        uint64_t media_errors = 0;
    };
    Counters& counters() { return counters_; }
    int64_t created_ns() const { return created_ns_; }

private:
    void deliver_events();
    void keep_alive_expired();

    NvmeTarget::Impl& target_;
    NvmeSubsystem::Impl* subsys_;
    const bool discovery_;
    bool gone_ = false;
    const uint16_t cntlid_;
    const NvmePortInfo& port_;
    const std::string hostnqn_;
    uint8_t hostid_[16];
    std::vector<NvmeQueuePair::Impl*> queues_;
    RequestCounter in_flight_;

    uint32_t cc_ = 0;
    uint32_t csts_ = 0;

    uint32_t kato_ms_;
    Timer kato_timer_;

    bool write_cache_ = true;
    uint32_t aec_ = 0;
    uint32_t arbitration_ = 0;
    uint16_t nr_io_queues_ = kNvmeMaxIoQueues;
    bool nr_io_queues_set_ = false;

    std::deque<NvmeAerWaiter*> aers_;
    std::deque<uint32_t> events_;
    bool ns_notice_masked_ = false;  // a notice was sent and log 04h not read yet
    std::vector<uint32_t> changed_ns_;
    bool changed_ns_overflow_ = false;

    std::deque<ErrorEntry> errors_;  // newest first
    uint64_t error_count_ = 0;
    Counters counters_;
    int64_t created_ns_;
};

class NvmeQueuePair::Impl {
public:
    Impl(NvmeTarget& target, NvmeTransportQueue& transport, const NvmePortInfo& port)
        : target_(target), transport_(transport), port_(port)
    {
    }

    NvmeTarget& target_;
    NvmeTransportQueue& transport_;
    const NvmePortInfo& port_;
    std::shared_ptr<NvmeController> ctrl_;
    uint16_t qid_ = 0;
    uint16_t queue_size_ = 0;
};

// The command handlers: each returns the status (SCT << 8 | SC, with DNR
// where retrying cannot help), fills req.cqe's DW0/DW1 and, for data to
// the host, the data and req.c2h_bytes.

// fabrics.cc
uint16_t nvme_fabrics_connect(NvmeQueuePair::Impl& q, NvmeRequest& req);
Task<uint16_t> nvme_fabrics_property(NvmeController& c, NvmeRequest& req);
uint16_t nvme_discovery_log(NvmeController& c, uint64_t offset, NvmeRequest& req, uint32_t len);
// identify.cc
uint16_t nvme_identify(NvmeController& c, NvmeRequest& req);
// features.cc
uint16_t nvme_admin_features(NvmeController& c, NvmeRequest& req);
// log-pages.cc
uint16_t nvme_get_log_page(NvmeController& c, NvmeRequest& req);
// nvm-cmds.cc (also dispatches to the ZNS commands)
Task<uint16_t> nvme_io_command(NvmeController& c, NvmeRequest& req);
// I/O helpers (nvm-cmds.cc): CDW10-11 as an LBA; LBA Out of Range; the
// checks of a data transfer of nlb blocks (MDTS, range, buffer, write
// protection); the block-layer flags of a write (FUA, write cache off).
uint64_t nvme_slba(const NvmeSqe& sqe);
// The request's first `bytes` bytes: req.data itself when it has exactly
// that many, else a slice of it in `slice` (no data is copied either way).
IOVector& nvme_data_view(NvmeRequest& req, uint64_t bytes, IOVector& slice);
uint16_t nvme_check_range(const NvmeNamespace& ns, uint64_t slba, uint64_t nlb);
uint16_t nvme_check_io(const NvmeController& c, const NvmeNamespace& ns, const NvmeRequest& req,
                       uint64_t slba, uint64_t nlb, bool write);
unsigned nvme_write_flags(const NvmeController& c, const NvmeSqe& sqe);
// zns-cmds.cc
Task<uint16_t> nvme_zone_mgmt_send(NvmeNamespace& ns, NvmeRequest& req);
Task<uint16_t> nvme_zone_mgmt_recv(NvmeController& c, NvmeNamespace& ns, NvmeRequest& req);
Task<uint16_t> nvme_zone_append(NvmeController& c, NvmeNamespace& ns, NvmeRequest& req);
// The controller's Zone Append limit in bytes (Identify ZASL): the
// smallest of its zoned namespaces' limits, rounded down to 4 KiB times a
// power of two and to MDTS; 0: MDTS applies.
uint64_t nvme_zone_append_limit(const NvmeController& c);

// Data helpers: a request's buffer must hold `len` bytes.
inline bool nvme_data_fits(const NvmeRequest& req, size_t len)
{
    return req.data_len >= len && req.data.size() >= len;
}
// Copies `len` bytes to the host's buffer (already checked to fit).
inline void nvme_c2h(NvmeRequest& req, const void* buf, size_t len)
{
    req.data.from_buf(0, buf, len);
    req.c2h_bytes = uint32_t(len);
}
// Copies [offset, offset + len) of a structure to the host, zeroes past
// its end (Get Log Page with an offset).
void nvme_c2h_window(NvmeRequest& req, const std::vector<uint8_t>& whole, uint64_t offset,
                     uint32_t len);
// Space-padded ASCII fields (serial, model, firmware, transport addresses).
void nvme_put_padded(uint8_t* dst, size_t size, const std::string& s);
// The block layer's result as a status (include/block/zone-error.h).
uint16_t nvme_status_of(int ret, BlockRequestKind kind);
// Largest transfer in bytes, 0: none (Identify MDTS rounded down to 4 KiB
// times a power of two, as the host sees it).
uint32_t nvme_mdts_bytes(const NvmePortInfo& port);

}  // namespace qemu
