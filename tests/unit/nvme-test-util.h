// Helpers of the NVMe model tests: a transport that records what the model
// asks of it, SQE builders, and a host that connects, enables and runs
// commands synchronously through an NvmeQueuePair.
#pragma once

#include <catch2/catch.hpp>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "block/block-backend.h"
#include "hw/nvme/nvme.h"
#include "qemu/aio.h"
#include "qemu/option.h"
#include "mem-driver.h"

namespace nvme_test {

using namespace qemu;

constexpr const char* kSubnqn = "nqn.2026-12.org.qemu-zoned:test";
constexpr const char* kHostnqn = "nqn.2014-08.org.nvmexpress:uuid:host-a";
constexpr uint16_t kDnr = 0x4000;
// CC with EN, CSS "all I/O command sets", IOSQES 6, IOCQES 4.
constexpr uint32_t kCcEnableAll = 1u | 6u << 4 | 6u << 16 | 4u << 20;
constexpr uint32_t kCcEnableNvm = 1u | 6u << 16 | 4u << 20;

struct RecordingTransport : NvmeTransportQueue {
    int disconnects = 0;
    void request_disconnect() override { disconnects++; }
};

inline NvmeSqe sqe(uint8_t opcode, uint32_t nsid = 0)
{
    NvmeSqe s{};
    s.bytes[0] = opcode;
    s.bytes[1] = 0x40;  // PSDT: SGL
    s.set_le32_at(4, nsid);
    return s;
}

inline NvmeSqe fabrics(uint8_t fctype)
{
    NvmeSqe s = sqe(NVME_OPC_FABRICS);
    s.bytes[4] = fctype;
    return s;
}

inline NvmeSqe connect_sqe(uint16_t qid, uint16_t sqsize, uint32_t kato_ms = 0)
{
    NvmeSqe s = fabrics(NVMF_FCTYPE_CONNECT);
    s.set_le16_at(42, qid);
    s.set_le16_at(44, sqsize);
    s.set_le32_at(48, kato_ms);
    return s;
}

inline std::vector<uint8_t> connect_data(const std::string& subnqn, const std::string& hostnqn,
                                         uint16_t cntlid = 0xffff, uint8_t hostid_seed = 1)
{
    std::vector<uint8_t> d(1024);
    for (int i = 0; i < 16; i++) {
        d[i] = uint8_t(hostid_seed + i);
    }
    store_le16(&d[16], cntlid);
    memcpy(&d[256], subnqn.data(), subnqn.size());
    memcpy(&d[512], hostnqn.data(), hostnqn.size());
    return d;
}

// A command's outcome.
struct Result {
    uint16_t status;  // without DNR unless the test looks at it
    uint32_t dw0, dw1;
    uint32_t c2h_bytes;
};

// One queue pair and its recording transport.
struct Queue {
    RecordingTransport transport;
    std::unique_ptr<NvmeQueuePair> qp;
    Queue(NvmeTarget& t, const NvmePortInfo& port)
        : qp(std::make_unique<NvmeQueuePair>(t, transport, port))
    {
    }
};

inline Task<Result> co_exec(NvmeQueuePair& qp, NvmeSqe s, void* buf, size_t len)
{
    NvmeRequest req;
    req.sqe = s;
    if (len) {
        req.data.add(buf, len);
    }
    req.data_len = uint32_t(len);
    co_await qp.co_execute(req);
    co_return Result{req.cqe.status(), req.cqe.dw0(), req.cqe.dw1(), req.c2h_bytes};
}

inline Result exec(AioContext& ctx, NvmeQueuePair& qp, const NvmeSqe& s, void* buf = nullptr,
                   size_t len = 0)
{
    return run_sync(ctx, co_exec(qp, s, buf, len));
}

inline Result exec(AioContext& ctx, NvmeQueuePair& qp, const NvmeSqe& s, std::vector<uint8_t>& buf)
{
    return exec(ctx, qp, s, buf.data(), buf.size());
}

inline NvmeSqe property_get(uint32_t offset, bool size8)
{
    NvmeSqe s = fabrics(NVMF_FCTYPE_PROPERTY_GET);
    s.bytes[40] = size8 ? 1 : 0;
    s.set_le32_at(44, offset);
    return s;
}

inline NvmeSqe property_set(uint32_t offset, uint32_t value)
{
    NvmeSqe s = fabrics(NVMF_FCTYPE_PROPERTY_SET);
    s.set_le32_at(44, offset);
    s.set_le32_at(48, value);
    return s;
}

inline NvmeSqe identify(uint8_t cns, uint32_t nsid = 0, uint8_t csi = 0)
{
    NvmeSqe s = sqe(0x06, nsid);
    s.set_cdw(10, cns);
    s.set_cdw(11, uint32_t(csi) << 24);
    return s;
}

inline NvmeSqe get_log(uint8_t lid, uint32_t bytes, uint64_t offset = 0, uint32_t nsid = 0,
                       uint8_t csi = 0)
{
    NvmeSqe s = sqe(0x02, nsid);
    uint32_t numd = bytes / 4 - 1;
    s.set_cdw(10, lid | (numd & 0xffff) << 16);
    s.set_cdw(11, numd >> 16);
    s.set_cdw(12, uint32_t(offset));
    s.set_cdw(13, uint32_t(offset >> 32));
    s.set_cdw(14, uint32_t(csi) << 24);
    return s;
}

inline NvmeSqe rw(uint8_t opcode, uint32_t nsid, uint64_t slba, uint32_t nlb, uint32_t cdw12_flags = 0)
{
    NvmeSqe s = sqe(opcode, nsid);
    s.set_cdw(10, uint32_t(slba));
    s.set_cdw(11, uint32_t(slba >> 32));
    s.set_cdw(12, (nlb - 1) | cdw12_flags);
    return s;
}

inline NvmeSqe features(bool set, uint8_t fid, uint32_t cdw11 = 0)
{
    NvmeSqe s = sqe(set ? 0x09 : 0x0a);
    s.set_cdw(10, fid);
    s.set_cdw(11, cdw11);
    return s;
}

// An in-memory node (tests/unit/mem-driver.h) with options `opts`.
inline std::unique_ptr<BlockBackend> open_mem(AioContext& ctx, const std::string& opts,
                                              int flags = BDRV_O_RDWR)
{
    test::mem_driver();
    QDict o;
    Error err;
    REQUIRE(keyval_parse(o, "driver=test-mem," + opts, nullptr, err));
    auto blk = BlockBackend::open(std::nullopt, o, flags, ctx, err);
    INFO(err.message);
    REQUIRE(blk);
    return blk;
}

inline test::MemState& mem_of(BlockBackend& blk)
{
    return static_cast<test::MemState&>(*blk.bs());
}

// A target with one subsystem on one port, and a host that connects to it.
struct Fixture {
    AioContext ctx;
    NvmePortInfo port;
    std::unique_ptr<NvmeTarget> target = std::make_unique<NvmeTarget>(ctx);
    NvmeSubsystem* subsys = nullptr;
    std::vector<std::unique_ptr<Queue>> queues;
    std::vector<std::unique_ptr<BlockBackend>> blks;
    std::vector<uint32_t> nsids;

    Fixture()
    {
        port.traddr = "127.0.0.1";
        port.trsvcid = "4420";
        Error err;
        subsys = target->add_subsystem(kSubnqn, port, "SERIAL0001", "qemu-zoned test", err);
        INFO(err.message);
        REQUIRE(subsys);
    }
    ~Fixture()
    {
        for (auto& q : queues) {
            if (q) {
                q->qp->cancel_waiting();
            }
        }
        // Let cancelled AERs run to their end before the queues go.
        while (ctx.poll(false)) {
        }
        // I/O queues first, then admin queues.
        for (auto it = queues.rbegin(); it != queues.rend(); ++it) {
            it->reset();
        }
        for (uint32_t nsid : nsids) {
            remove_namespace(nsid);
        }
        run_sync(ctx, target->co_remove_subsystem(kSubnqn));
        target.reset();
        blks.clear();
    }

    Queue& new_queue()
    {
        queues.push_back(std::make_unique<Queue>(*target, port));
        return *queues.back();
    }

    Result run(Queue& q, const NvmeSqe& s, void* buf = nullptr, size_t len = 0)
    {
        return exec(ctx, *q.qp, s, buf, len);
    }
    Result run(Queue& q, const NvmeSqe& s, std::vector<uint8_t>& buf)
    {
        return exec(ctx, *q.qp, s, buf);
    }

    // Connects an admin queue (KATO in ms), enables the controller with
    // `cc`; returns the queue (its CNTLID in cntlid).
    Queue& admin(uint16_t& cntlid, uint32_t cc = kCcEnableAll, uint32_t kato = 0,
                 const std::string& subnqn = kSubnqn)
    {
        Queue& q = new_queue();
        auto data = connect_data(subnqn, kHostnqn);
        Result r = run(q, connect_sqe(0, 31, kato), data);
        REQUIRE(r.status == 0);
        cntlid = uint16_t(r.dw0);
        if (cc) {
            REQUIRE(run(q, property_set(0x14, cc)).status == 0);
            REQUIRE((run(q, property_get(0x1c, false)).dw0 & 3) == 1);
        }
        return q;
    }

    Queue& io_queue(uint16_t cntlid, uint16_t qid)
    {
        Queue& q = new_queue();
        auto data = connect_data(kSubnqn, kHostnqn, cntlid);
        Result r = run(q, connect_sqe(qid, 127), data);
        REQUIRE(r.status == 0);
        return q;
    }

    // Attaches a backend the fixture then owns; returns the NSID.
    uint32_t attach(std::unique_ptr<BlockBackend> blk, NvmeNamespaceOptions opts = {})
    {
        REQUIRE(blk);
        blks.push_back(std::move(blk));
        Error err;
        uint32_t nsid = run_sync(ctx, subsys->co_add_namespace(*blks.back(), opts, err));
        INFO(err.message);
        REQUIRE(nsid != 0);
        nsids.push_back(nsid);
        return nsid;
    }

    void remove_namespace(uint32_t nsid) { run_sync(ctx, subsys->co_remove_namespace(nsid)); }
};

}  // namespace nvme_test
