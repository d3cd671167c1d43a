// The initiator's `bench` command: a qemu-img-bench-like load through
// NVMe/TCP, one thread and I/O queue per -j, DEPTH commands in flight on
// each.  Prints "Run completed in S seconds." (as qemu-img bench, so
// scripts/bench/lib.sh reads it) and the IOPS and MiB/s.
#include <getopt.h>

#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <random>
#include <thread>

#include "initiator.h"

namespace qemu {

namespace {

enum class Mode { Read, RandRead, Write, RandWrite, ZoneWrite, ZoneAppend };

struct BenchOpts {
    Mode mode = Mode::Read;
    uint32_t bs = 4096;
    unsigned depth = 32;
    uint64_t count = 0;    // commands in all, 0: by time
    double seconds = 10;
    unsigned queues = 1;
};

Mode parse_mode(const std::string& m)
{
    static const std::pair<const char*, Mode> kModes[] = {
        {"read", Mode::Read},           {"randread", Mode::RandRead},
        {"write", Mode::Write},         {"randwrite", Mode::RandWrite},
        {"zone-write", Mode::ZoneWrite}, {"zone-append", Mode::ZoneAppend},
    };
    for (const auto& [name, mode] : kModes) {
        if (m == name) {
            return mode;
        }
    }
    die("bench: unknown mode '" + m + "'");
}

// Where each thread's next command goes.  Zoned modes: every slot writes
// at its own zone's write pointer (one command per zone in flight), or all
// slots append to the current zone until its capacity is used up.
class Placement {
public:
    Placement(const BenchOpts& o, const Namespace& ns, unsigned thread)
        : o_(o), blocks_(o.bs / ns.lba_size), rng_(thread + 1)
    {
        uint64_t span = ns.nsze / o.queues;
        base_ = span * thread;
        end_ = base_ + span;
        zsze_ = ns.zsze ? ns.zsze : 1;
        if (ns.zsze) {
            base_ = (base_ + zsze_ - 1) / zsze_ * zsze_;
            end_ = end_ / zsze_ * zsze_;
        }
        cur_ = base_;
        if (blocks_ == 0 || end_ <= base_ || end_ - base_ < blocks_) {
            die("bench: the namespace is too small for this block size and queue count");
        }
    }

    // The LBA for a command of slot `slot` (Zone Append: the zone's start).
    uint64_t next(unsigned slot)
    {
        switch (o_.mode) {
        case Mode::RandRead:
        case Mode::RandWrite:
            return base_ + rng_() % ((end_ - base_) / blocks_) * blocks_;
        case Mode::ZoneWrite: return zone_write(slot);
        case Mode::ZoneAppend: return zone_append();
        default: break;
        }
        if (cur_ + blocks_ > end_) {
            cur_ = base_;
        }
        uint64_t lba = cur_;
        cur_ += blocks_;
        return lba;
    }

private:
    uint64_t zone_write(unsigned slot)
    {
        if (slot >= wp_.size()) {
            wp_.resize(slot + 1, UINT64_MAX);
        }
        uint64_t& wp = wp_[slot];
        if (wp == UINT64_MAX || (wp + blocks_ - 1) / zsze_ != wp / zsze_) {
            if (cur_ + zsze_ > end_) {
                die("bench: zone-write ran out of empty zones; lower -c or -t");
            }
            wp = cur_;
            cur_ += zsze_;
        }
        uint64_t lba = wp;
        wp += blocks_;
        return lba;
    }

    uint64_t zone_append()
    {
        if ((cur_ % zsze_) + blocks_ > zsze_) {
            cur_ = (cur_ / zsze_ + 1) * zsze_;
        }
        if (cur_ + blocks_ > end_) {
            die("bench: zone-append ran out of empty zones; lower -c or -t");
        }
        uint64_t zone = cur_ / zsze_ * zsze_;
        cur_ += blocks_;
        return zone;
    }

    const BenchOpts& o_;
    uint64_t blocks_, base_, end_, cur_, zsze_;
    std::vector<uint64_t> wp_;
    std::mt19937_64 rng_;
};

uint8_t opcode_of(Mode m)
{
    switch (m) {
    case Mode::Read:
    case Mode::RandRead: return 0x02;
    case Mode::ZoneAppend: return 0x7d;
    default: return 0x01;
    }
}

// One thread: its own I/O queue, `depth` commands kept in flight.
void bench_thread(const BenchOpts& o, const Target& t, const Namespace& ns, unsigned thread,
                  uint64_t count, std::chrono::steady_clock::time_point deadline,
                  std::atomic<uint64_t>& done_total)
{
    HostQueue q;
    open_io_queue(q, t, ns, uint16_t(thread + 1), uint16_t(o.depth + 1));
    Placement place(o, ns, thread);
    std::vector<HostCommand> cmds(o.depth);
    uint32_t nlb = o.bs / ns.lba_size;
    uint64_t issued = 0, done = 0;
    auto issue = [&](unsigned slot) {
        HostCommand& c = cmds[slot];
        c.sqe = nvme_sqe_rw(opcode_of(o.mode), t.nsid, place.next(slot), nlb);
        if (!q.submit(c)) {
            die(q.error());
        }
        issued++;
    };
    for (auto& c : cmds) {
        c.data.assign(o.bs, uint8_t(0xa5));
    }
    bool timed = count == 0;
    q.set_corked(true);
    for (unsigned s = 0; s < o.depth && (timed || issued < count); s++) {
        issue(s);
    }
    while (q.in_flight()) {
        if (!q.flush()) {
            die(q.error());
        }
        bool ok = q.poll([&](HostCommand& c) {
            if (c.cqe.status() & 0x7ff) {
                char b[64];
                snprintf(b, sizeof(b), "bench: command failed: status 0x%03x", c.cqe.status() & 0x7ff);
                die(b);
            }
            done++;
            bool more = timed ? std::chrono::steady_clock::now() < deadline : issued < count;
            if (more) {
                issue(unsigned(&c - cmds.data()));
            }
        });
        if (!ok) {
            die(q.error());
        }
    }
    done_total += done;
}

BenchOpts parse_bench(int argc, char** argv, const Namespace& ns)
{
    BenchOpts o;
    optind = 1;
    int c;
    while ((c = getopt(argc, argv, "w:b:q:c:t:j:")) != -1) {
        switch (c) {
        case 'w': o.mode = parse_mode(optarg); break;
        case 'b': o.bs = uint32_t(strtoul(optarg, nullptr, 0)); break;
        case 'q': o.depth = unsigned(strtoul(optarg, nullptr, 0)); break;
        case 'c': o.count = strtoull(optarg, nullptr, 0); break;
        case 't': o.seconds = strtod(optarg, nullptr); break;
        case 'j': o.queues = unsigned(strtoul(optarg, nullptr, 0)); break;
        default: die("bench: [-w MODE] [-b BS] [-q DEPTH] [-c COUNT | -t SECONDS] [-j QUEUES]");
        }
    }
    if (o.bs == 0 || o.bs % ns.lba_size || o.depth == 0 || o.depth > 127 || o.queues == 0 ||
        o.queues > 64) {
        die("bench: -b must be a multiple of the block size, -q 1..127, -j 1..64");
    }
    bool zoned_mode = o.mode == Mode::ZoneWrite || o.mode == Mode::ZoneAppend;
    if (zoned_mode != (ns.zsze != 0)) {
        die(zoned_mode ? "bench: the namespace is not zoned" : "bench: use zone-write or zone-append on a zoned namespace");
    }
    return o;
}

}  // namespace

int bench_main(int argc, char** argv, const Target& t, const Namespace& ns)
{
    BenchOpts o = parse_bench(argc, argv, ns);
    if (ns.zsze) {
        HostQueue q;
        open_io_queue(q, t, ns, 1, 2);
        reset_all_zones(q, t);
    }
    auto start = std::chrono::steady_clock::now();
    auto deadline = start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                std::chrono::duration<double>(o.seconds));
    std::atomic<uint64_t> done{0};
    std::vector<std::thread> threads;
    for (unsigned i = 0; i < o.queues; i++) {
        uint64_t share = o.count ? o.count / o.queues + (i < o.count % o.queues ? 1 : 0) : 0;
        if (o.count && share == 0) {
            continue;
        }
        threads.emplace_back(bench_thread, std::cref(o), std::cref(t), std::cref(ns), i, share,
                             deadline, std::ref(done));
    }
    for (auto& th : threads) {
        th.join();
    }
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    printf("Run completed in %.3f seconds.\n", secs);
    printf("%" PRIu64 " commands, %.0f IOPS, %.1f MiB/s\n", done.load(), done / secs,
           double(done) * o.bs / secs / (1024 * 1024));
    return 0;
}

}  // namespace qemu
