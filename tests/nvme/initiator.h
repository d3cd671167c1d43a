// The initiator's session helpers (tests/nvme/nvme-tcp-initiator.cc),
// shared with its bench and hostile commands.
#pragma once

#include <string>

#include "nvme-tcp-host.h"

namespace qemu {

struct Target {
    std::string host = "127.0.0.1", port = "4420", unix_path, nqn;
    std::string hostnqn = "nqn.2014-08.org.qemu-zoned:initiator";
    uint32_t nsid = 1;
    nvme_tcp::Digests dg;
};

struct Namespace {
    uint16_t cntlid = 0;
    uint32_t in_capsule = 8192;
    uint64_t nsze = 0;
    uint32_t lba_size = 512;
    uint64_t zsze = 0;  // blocks; 0: not zoned
};

// Prints "nvme-tcp-initiator: MSG" and exits 1.
[[noreturn]] void die(const std::string& msg);
// Runs cmd, dies on a transport failure; returns the NVMe status.
uint16_t run(HostQueue& q, HostCommand& cmd);
// Runs cmd and dies unless it succeeds.
void run_ok(HostQueue& q, HostCommand& cmd, const char* what);
// Opens a queue and Connects it; returns the CNTLID.
uint16_t connect_queue(HostQueue& q, const Target& t, uint16_t qid, uint16_t size, uint16_t cntlid);
// Admin queue: Connect, CC.EN, Identify controller and namespace.
void bring_up(HostQueue& admin, const Target& t, Namespace& ns);
void open_io_queue(HostQueue& q, const Target& t, const Namespace& ns, uint16_t qid, uint16_t size);
void reset_all_zones(HostQueue& io, const Target& t);

int bench_main(int argc, char** argv, const Target& t, const Namespace& ns);
int hostile_main(const std::string& which, const Target& t);

}  // namespace qemu
