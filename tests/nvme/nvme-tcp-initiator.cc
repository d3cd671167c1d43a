// build/tests/nvme-tcp-initiator: an NVMe/TCP host of our own (tests/nvme/
// nvme-tcp-host.h) for protocol tests and benchmarks.
//
//   nvme-tcp-initiator [-a HOST] [-s PORT] [-U PATH] -n NQN [-N NSID] [-H] [-D] CMD ...
//     identify                     controller and namespace (zone geometry)
//     read SLBA NLB [PATTERN]      reads; with PATTERN checks every byte
//     write SLBA NLB PATTERN       writes NLB blocks of byte PATTERN
//     append ZSLBA NLB PATTERN     zone append, prints the assigned LBA
//     report-zones                 one line per zone
//     reset-zones                  resets every zone
//     bench [-w MODE] [-b BS] [-q DEPTH] [-c COUNT | -t SECONDS] [-j QUEUES]
//           MODE: read randread write randwrite zone-write zone-append
//     hostile CASE                 sends a malformed stream, prints the
//                                  target's C2HTermReq (bad-icreq,
//                                  plen-lie, datao-mismatch, bad-ttag,
//                                  header-digest)
// -H/-D ask for header/data digests.  Exit 0 on success, 1 on an NVMe
// error status or protocol failure (message on stderr).
#include <getopt.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <random>
#include <thread>

#include "initiator.h"

using namespace qemu;
using namespace qemu::nvme_tcp;

namespace qemu {

void die(const std::string& msg)
{
    fprintf(stderr, "nvme-tcp-initiator: %s\n", msg.c_str());
    exit(1);
}

// Runs cmd, dies on a transport failure; returns the NVMe status.
uint16_t run(HostQueue& q, HostCommand& cmd)
{
    if (!q.execute(cmd)) {
        die(q.error());
    }
    return cmd.cqe.status();
}

void run_ok(HostQueue& q, HostCommand& cmd, const char* what)
{
    uint16_t st = run(q, cmd);
    if (st & 0x7ff) {
        char b[96];
        snprintf(b, sizeof(b), "%s failed: status 0x%03x", what, st & 0x7ff);
        die(b);
    }
}

uint16_t connect_queue(HostQueue& q, const Target& t, uint16_t qid, uint16_t size, uint16_t cntlid)
{
    std::string err;
    if (!q.open(t.host, t.port, t.unix_path, t.dg, err)) {
        die(err);
    }
    HostCommand c;
    c.sqe = nvme_sqe_connect(qid, uint16_t(size - 1), 0);
    c.data = nvme_connect_data(cntlid, t.nqn, t.hostnqn);
    run_ok(q, c, "Connect");
    return uint16_t(c.cqe.dw0());
}

uint64_t property(HostQueue& q, uint32_t off, bool eight)
{
    HostCommand c;
    c.sqe = nvme_sqe_property_get(off, eight);
    run_ok(q, c, "Property Get");
    return c.cqe.dw0() | (eight ? uint64_t(c.cqe.dw1()) << 32 : 0);
}

std::vector<uint8_t> identify(HostQueue& q, uint8_t cns, uint8_t csi, uint32_t nsid, uint16_t* status)
{
    HostCommand c;
    c.sqe = nvme_sqe_identify(cns, csi, nsid);
    c.data.assign(4096, 0);
    *status = run(q, c) & 0x7ff;
    return c.data;
}

// Admin queue: Connect, enable, Identify.  Fills ns.
void bring_up(HostQueue& admin, const Target& t, Namespace& ns)
{
    ns.cntlid = connect_queue(admin, t, 0, 32, 0xffff);
    uint64_t cap = property(admin, 0x00, true);
    uint32_t css = (cap >> 43) & 1 ? 6 : 0;  // CAP.CSS bit 6: I/O command sets
    HostCommand set;
    set.sqe = nvme_sqe_property_set(0x14, 1 | css << 4 | 6 << 16 | 4 << 20, false);
    run_ok(admin, set, "Property Set CC");
    for (int i = 0; !(property(admin, 0x1c, false) & 1); i++) {
        if (i > 1000) {
            die("CSTS.RDY did not come up");
        }
        usleep(1000);
    }
    uint16_t st;
    std::vector<uint8_t> ctrl = identify(admin, 1, 0, 0, &st);
    if (st) {
        die("Identify Controller failed");
    }
    if (load_le16(ctrl.data() + 78) != ns.cntlid) {
        die("Identify Controller: CNTLID differs from the Connect result");
    }
    uint32_t ioccsz = load_le32(ctrl.data() + 1792);
    ns.in_capsule = ioccsz * 16 > 64 ? ioccsz * 16 - 64 : 0;
    std::vector<uint8_t> id = identify(admin, 0, 0, t.nsid, &st);
    ns.nsze = load_le64(id.data());
    if (st || ns.nsze == 0) {
        die("namespace " + std::to_string(t.nsid) + " is not active");
    }
    uint8_t flbas = id[26] & 0xf;
    ns.lba_size = 1u << id[128 + 4 * flbas + 2];
    std::vector<uint8_t> zns = identify(admin, 5, 2, t.nsid, &st);
    ns.zsze = st ? 0 : load_le64(zns.data() + 2816 + 16 * flbas);
}

void open_io_queue(HostQueue& q, const Target& t, const Namespace& ns, uint16_t qid, uint16_t size)
{
    connect_queue(q, t, qid, size, ns.cntlid);
    q.set_in_capsule(ns.in_capsule);
}

}  // namespace qemu

namespace {

// --- single commands -------------------------------------------------------

int cmd_identify(HostQueue& admin, const Namespace& ns)
{
    uint16_t st;
    std::vector<uint8_t> ctrl = identify(admin, 1, 0, 0, &st);
    auto field = [&](size_t off, size_t len) {
        std::string v(reinterpret_cast<const char*>(&ctrl[off]), len);
        size_t end = v.find_last_not_of(std::string(" \0", 2));  // space or NUL padded
        v.resize(end == std::string::npos ? 0 : end + 1);
        return v;
    };
    printf("cntlid %u\nserial %s\nmodel %s\nsubnqn %s\n", ns.cntlid, field(4, 20).c_str(),
           field(24, 40).c_str(), field(768, 256).c_str());
    printf("nsze %" PRIu64 "\nlba-size %u\n", ns.nsze, ns.lba_size);
    if (ns.zsze) {
        printf("zoned yes\nzone-size %" PRIu64 "\nzones %" PRIu64 "\n", ns.zsze,
               (ns.nsze + ns.zsze - 1) / ns.zsze);
    } else {
        printf("zoned no\n");
    }
    return 0;
}

int cmd_rw(HostQueue& io, const Target& t, const Namespace& ns, uint8_t opc, uint64_t slba,
           uint32_t nlb, int pattern)
{
    HostCommand c;
    c.sqe = nvme_sqe_rw(opc, t.nsid, slba, nlb);
    c.data.assign(size_t(nlb) * ns.lba_size, uint8_t(pattern < 0 ? 0 : pattern));
    uint16_t st = run(io, c) & 0x7ff;
    if (st) {
        printf("status 0x%03x\n", st);
        return 1;
    }
    if (opc == 0x02 && pattern >= 0) {
        for (size_t i = 0; i < c.data.size(); i++) {
            if (c.data[i] != pattern) {
                printf("pattern mismatch at byte %zu: 0x%02x\n", i, c.data[i]);
                return 1;
            }
        }
    }
    if (opc == 0x7d) {
        printf("appended at lba %" PRIu64 "\n", uint64_t(c.cqe.dw0()) | uint64_t(c.cqe.dw1()) << 32);
    } else {
        printf("%s %zu bytes at lba %" PRIu64 "\n", opc == 0x02 ? "read" : "wrote", c.data.size(), slba);
    }
    return 0;
}

const char* zone_state_name(uint8_t zs)
{
    switch (zs) {
    case 1: return "EMPTY";
    case 2: return "IMPLICIT_OPEN";
    case 3: return "EXPLICIT_OPEN";
    case 4: return "CLOSED";
    case 0xd: return "READ_ONLY";
    case 0xe: return "FULL";
    case 0xf: return "OFFLINE";
    default: return "?";
    }
}

int cmd_report_zones(HostQueue& io, const Target& t, const Namespace& ns)
{
    if (!ns.zsze) {
        die("namespace is not zoned");
    }
    uint64_t zones = (ns.nsze + ns.zsze - 1) / ns.zsze;
    HostCommand c;
    c.sqe = NvmeSqe{};
    c.sqe.bytes[0] = 0x7a;
    c.sqe.set_le32_at(4, t.nsid);
    c.data.assign(64 + 64 * zones, 0);
    c.sqe.set_cdw(12, uint32_t(c.data.size() / 4 - 1));
    run_ok(io, c, "Zone Management Receive");
    uint64_t n = load_le64(c.data.data());
    for (uint64_t i = 0; i < n && i < zones; i++) {
        const uint8_t* d = c.data.data() + 64 + 64 * i;
        printf("zslba %" PRIu64 " state %s cap %" PRIu64 " wp %" PRIu64 "\n", load_le64(d + 16),
               zone_state_name(d[1] >> 4), load_le64(d + 8), load_le64(d + 24));
    }
    return 0;
}

}  // namespace

namespace qemu {

void reset_all_zones(HostQueue& io, const Target& t)
{
    HostCommand c;
    c.sqe = NvmeSqe{};
    c.sqe.bytes[0] = 0x79;
    c.sqe.set_le32_at(4, t.nsid);
    c.sqe.set_cdw(13, 0x04 | 1 << 8);  // Reset Zone, Select All
    run_ok(io, c, "Zone Management Send (reset all)");
}

}  // namespace qemu

int main(int argc, char** argv)
{
    Target t;
    int c;
    while ((c = getopt(argc, argv, "+a:s:U:n:N:HDh")) != -1) {
        switch (c) {
        case 'a': t.host = optarg; break;
        case 's': t.port = optarg; break;
        case 'U': t.unix_path = optarg; break;
        case 'n': t.nqn = optarg; break;
        case 'N': t.nsid = uint32_t(strtoul(optarg, nullptr, 0)); break;
        case 'H': t.dg.header = true; break;
        case 'D': t.dg.data = true; break;
        default:
            fprintf(stderr, "usage: nvme-tcp-initiator [-a HOST] [-s PORT] [-U PATH] -n NQN "
                            "[-N NSID] [-H] [-D] identify|read|write|append|report-zones|"
                            "reset-zones|bench|hostile ...\n");
            return c == 'h' ? 0 : 1;
        }
    }
    if (t.nqn.empty() || optind >= argc) {
        die("-n NQN and a command are required");
    }
    std::string cmd = argv[optind];
    Namespace ns;
    if (cmd == "hostile") {
        return hostile_main(optind + 1 < argc ? argv[optind + 1] : "", t);
    }
    HostQueue admin;
    bring_up(admin, t, ns);
    if (cmd == "identify") {
        return cmd_identify(admin, ns);
    }
    if (cmd == "bench") {
        return bench_main(argc - optind, argv + optind, t, ns);
    }
    HostQueue io;
    open_io_queue(io, t, ns, 1, 32);
    auto arg = [&](int i) -> uint64_t {
        if (optind + i >= argc) {
            die(cmd + ": missing arguments");
        }
        return strtoull(argv[optind + i], nullptr, 0);
    };
    if (cmd == "read") {
        return cmd_rw(io, t, ns, 0x02, arg(1), uint32_t(arg(2)), optind + 3 < argc ? int(arg(3)) : -1);
    }
    if (cmd == "write" || cmd == "append") {
        return cmd_rw(io, t, ns, cmd == "write" ? 0x01 : 0x7d, arg(1), uint32_t(arg(2)), int(arg(3)));
    }
    if (cmd == "report-zones") {
        return cmd_report_zones(io, t, ns);
    }
    if (cmd == "reset-zones") {
        reset_all_zones(io, t);
        return 0;
    }
    die("unknown command '" + cmd + "'");
}
