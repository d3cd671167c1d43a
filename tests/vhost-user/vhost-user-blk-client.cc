// vhost-user-blk-client: our own vhost-user front end for tests and
// benchmarks (tests/vhost-user/vu-client.h does the protocol).
//
//   vhost-user-blk-client [--queues N] [--queue-size N] [--depth N]
//       [--config-size N] [--max-io BYTES] [--no-event-idx] SOCKET -c CMD [-c CMD...]
//
// Commands (offsets and lengths in bytes, as qemu-io's):
//   info                      capacity, features, zoned geometry
//   read [-P PAT] OFF LEN     read; with -P, check every byte is PAT
//   write [-P PAT] OFF LEN    write LEN bytes of PAT (default 0xcd)
//   flush
//   zrp OFF NR                zone report, in qemu-io's zrp format
//   zap [-P PAT] OFF LEN      zone append into the zone at OFF
//   zo|zc|zf|zrs OFF          zone open, close, finish, reset
//   zrs-all                   reset every zone
//   stop                      GET_VRING_BASE on every queue (prints the bases)
//   bench -t randread|randwrite|read|write|zwrite -b BS -s SECONDS [-d DEPTH]
//                             timed load on queue 0; prints IOPS and MiB/s.
//                             zwrite: sequential writes zone by zone (resets
//                             each zone before its first write)
// Exit status: 0 if every command succeeded, 1 otherwise.
#include <getopt.h>
#include <inttypes.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "hw/virtio/virtio-blk.h"
#include "vu-client.h"

using namespace qemu;

namespace {

enum : uint32_t {
    T_IN = 0, T_OUT = 1, T_FLUSH = 4, T_ZONE_APPEND = 15, T_ZONE_REPORT = 16, T_ZONE_OPEN = 18,
    T_ZONE_CLOSE = 20, T_ZONE_FINISH = 22, T_ZONE_RESET = 24, T_ZONE_RESET_ALL = 26,
};

uint64_t le64(const uint8_t* p)
{
    uint64_t v;
    std::memcpy(&v, p, 8);
    return v;
}

uint32_t le32(const uint8_t* p)
{
    uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
}

double now()
{
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
}

// A number with an optional k/M/G suffix (powers of 1024), as qemu-io's.
uint64_t parse_size(const std::string& s)
{
    char* end;
    uint64_t v = strtoull(s.c_str(), &end, 0);
    switch (*end) {
    case 'k': case 'K': return v << 10;
    case 'm': case 'M': return v << 20;
    case 'g': case 'G': return v << 30;
    default: return v;
    }
}

std::vector<std::string> split(const std::string& s)
{
    std::vector<std::string> w;
    size_t i = 0;
    while (i < s.size()) {
        size_t j = s.find(' ', i);
        if (j == std::string::npos) {
            j = s.size();
        }
        if (j > i) {
            w.push_back(s.substr(i, j - i));
        }
        i = j + 1;
    }
    return w;
}

class Cli {
public:
    explicit Cli(VuClient& c) : c_(c) {}
    bool command(const std::string& line);

private:
    // A request on queue 0 run to completion; false (message printed) if
    // it failed to run or its status is not OK.
    bool run(const char* what, const VuClient::Request& r, std::vector<uint8_t>* in);
    bool info();
    bool bench(std::vector<std::string>& w);
    uint64_t zone_bytes() const
    {
        return c_.config().size() >= 76 ? uint64_t(le32(c_.config().data() + 72)) * 512 : 0;
    }

    VuClient& c_;
};

bool Cli::run(const char* what, const VuClient::Request& r, std::vector<uint8_t>* in)
{
    uint8_t status = 0xff;
    int ret = c_.run(0, r, in, status);
    if (ret < 0) {
        printf("%s failed: %s\n", what, strerror(-ret));
        return false;
    }
    if (status != 0) {
        printf("%s failed: status %u\n", what, status);
        return false;
    }
    return true;
}

bool Cli::info()
{
    const std::vector<uint8_t>& cfg = c_.config();
    printf("capacity: %" PRIu64 " sectors\n", c_.capacity_sectors());
    printf("features: 0x%" PRIx64 "\n", c_.features());
    if (cfg.size() >= 24) {
        printf("blk_size: %u\n", le32(cfg.data() + 20));
    }
    if ((c_.features() & VIRTIO_BLK_F_ZONED) && cfg.size() >= 93) {
        printf("zoned: model %u, zone_sectors %u, max_open %u, max_active %u, max_append %u, "
               "write_granularity %u\n",
               cfg[92], le32(cfg.data() + 72), le32(cfg.data() + 76), le32(cfg.data() + 80),
               le32(cfg.data() + 84), le32(cfg.data() + 88));
    }
    return true;
}

bool Cli::command(const std::string& line)
{
    std::vector<std::string> w = split(line);
    if (w.empty()) {
        return true;
    }
    std::string cmd = w[0];
    int pattern = -1;
    if (w.size() >= 3 && w[1] == "-P") {
        pattern = int(strtol(w[2].c_str(), nullptr, 0)) & 0xff;
        w.erase(w.begin() + 1, w.begin() + 3);
    }
    auto num = [&](size_t i) -> uint64_t { return i < w.size() ? parse_size(w[i]) : 0; };
    VuClient::Request r;
    r.sector = num(1) / 512;
    if (cmd == "info") {
        return info();
    } else if (cmd == "read" || cmd == "write" || cmd == "zap") {
        uint64_t len = num(2);
        if (w.size() != 3 || len == 0 || len > (1u << 20) || num(1) % 512 || len % 512) {
            printf("%s: OFF and LEN must be multiples of 512, LEN up to 1 MiB\n", cmd.c_str());
            return false;
        }
        std::vector<uint8_t> buf(len, uint8_t(pattern < 0 ? 0xcd : pattern));
        std::vector<uint8_t> in;
        if (cmd == "read") {
            r.type = T_IN;
            r.in_len = uint32_t(len);
        } else {
            r.type = cmd == "write" ? T_OUT : T_ZONE_APPEND;
            r.out = buf.data();
            r.out_len = uint32_t(len);
            r.in_hdr = cmd == "zap" ? 16 : 1;
        }
        if (!run(cmd.c_str(), r, &in)) {
            return false;
        }
        if (cmd == "read" && pattern >= 0) {
            for (uint64_t i = 0; i < len; i++) {
                if (in[i] != pattern) {
                    printf("Pattern verification failed at offset %" PRIu64 ", %" PRIu64
                           " bytes\n", num(1) + i, len);
                    return false;
                }
            }
        }
        if (cmd == "zap") {
            printf("After zap done, the append sector is 0x%" PRIx64 "\n", le64(in.data()));
        } else {
            printf("%s %" PRIu64 "/%" PRIu64 " bytes at offset %" PRIu64 "\n",
                   cmd == "read" ? "read" : "wrote", len, len, num(1));
        }
        return true;
    } else if (cmd == "flush") {
        r.type = T_FLUSH;
        return run("flush", r, nullptr);
    } else if (cmd == "zrp") {
        uint64_t nr = num(2);
        r.type = T_ZONE_REPORT;
        r.in_len = uint32_t(std::min<uint64_t>(64 + 64 * nr, 1u << 20));
        std::vector<uint8_t> in;
        if (!run("zone report", r, &in)) {
            return false;
        }
        uint64_t n = std::min<uint64_t>(le64(in.data()), (r.in_len - 64) / 64);
        for (uint64_t i = 0; i < n; i++) {
            const uint8_t* z = in.data() + 64 + 64 * i;
            uint64_t len = zone_bytes() / 512;
            printf("start: 0x%" PRIx64 ", len 0x%" PRIx64 ", cap 0x%" PRIx64 ", wptr 0x%" PRIx64
                   ", zcond:%u, [type: %u]\n",
                   le64(z + 8), len, le64(z), le64(z + 16), z[25], z[24]);
        }
        return true;
    } else if (cmd == "zo" || cmd == "zc" || cmd == "zf" || cmd == "zrs" || cmd == "zrs-all") {
        r.type = cmd == "zo" ? T_ZONE_OPEN : cmd == "zc" ? T_ZONE_CLOSE : cmd == "zf" ? T_ZONE_FINISH
                 : cmd == "zrs" ? T_ZONE_RESET : T_ZONE_RESET_ALL;
        return run(cmd.c_str(), r, nullptr);
    } else if (cmd == "stop") {
        std::vector<uint16_t> bases;
        Error err;
        if (!c_.stop(bases, err)) {
            printf("stop failed: %s\n", err.message.c_str());
            return false;
        }
        for (size_t i = 0; i < bases.size(); i++) {
            printf("vring %zu base %u\n", i, bases[i]);
        }
        return true;
    } else if (cmd == "bench") {
        return bench(w);
    }
    printf("unknown command '%s'\n", cmd.c_str());
    return false;
}

bool Cli::bench(std::vector<std::string>& w)
{
    std::string type = "randread";
    uint64_t bs = 4096;
    double seconds = 5;
    unsigned depth = c_.free_slots(0);
    for (size_t i = 1; i + 1 < w.size(); i += 2) {
        if (w[i] == "-t") {
            type = w[i + 1];
        } else if (w[i] == "-b") {
            bs = parse_size(w[i + 1]);
        } else if (w[i] == "-s") {
            seconds = strtod(w[i + 1].c_str(), nullptr);
        } else if (w[i] == "-d") {
            depth = std::min<unsigned>(unsigned(strtoul(w[i + 1].c_str(), nullptr, 0)), depth);
        }
    }
    uint64_t size = c_.capacity_sectors() * 512;
    bool write = type != "randread" && type != "read";
    bool random = type == "randread" || type == "randwrite";
    bool zoned = type == "zwrite";
    uint64_t zbytes = zone_bytes();
    if (bs == 0 || bs % 512 || bs > (1u << 20) || size < bs || depth == 0 ||
        (zoned && (zbytes == 0 || zbytes % bs)) ||
        (type != "randread" && type != "randwrite" && type != "read" && type != "write" && !zoned)) {
        printf("bench: bad options\n");
        return false;
    }
    std::mt19937_64 rng(42);
    uint64_t next = 0, ops = 0, errors = 0;
    unsigned inflight = 0;
    for (unsigned s = 0; s < depth; s++) {
        std::memset(c_.slot_buffer(0, s), 0xa5, bs);
    }
    // Queues one request; false if waiting for the queue to empty failed.
    auto submit_one = [&]() -> bool {
        VuClient::Request r;
        uint64_t off;
        if (random) {
            off = rng() % (size / bs) * bs;
        } else {
            if (next + bs > size) {
                next = 0;
            }
            off = next;
            next += bs;
        }
        if (zoned && off % zbytes == 0) {
            // A zone's first write: reset it first (the only time this
            // load waits for the queue to empty).
            c_.kick(0);  // what this burst queued so far
            while (inflight) {
                int n = c_.reap(0, [&](const VuClient::Completion& c) {
                    ops++;
                    errors += c.status != 0;
                }, 30000);
                if (n < 0) {
                    return false;
                }
                inflight -= unsigned(n);
            }
            VuClient::Request z;
            z.type = T_ZONE_RESET;
            z.sector = off / 512;
            uint8_t st;
            c_.run(0, z, nullptr, st);
        }
        r.type = write ? T_OUT : T_IN;
        r.sector = off / 512;
        if (write) {
            r.out_len = uint32_t(bs);
        } else {
            r.in_len = uint32_t(bs);
        }
        c_.submit(0, r);
        inflight++;
        return true;
    };
    double start = now(), end = start + seconds;
    while (inflight < depth) {
        if (!submit_one()) {
            printf("bench: a request did not complete\n");
            return false;
        }
    }
    c_.kick(0);
    while (true) {
        int n = c_.reap(0, [&](const VuClient::Completion& c) {
            ops++;
            errors += c.status != 0;
        }, 30000);
        if (n < 0) {
            printf("bench: %s\n", strerror(-n));
            return false;
        }
        inflight -= unsigned(n);
        if (now() >= end) {
            break;
        }
        while (inflight < depth) {
            if (!submit_one()) {
                printf("bench: a request did not complete\n");
                return false;
            }
        }
        c_.kick(0);
    }
    while (inflight) {
        int n = c_.reap(0, [&](const VuClient::Completion& c) { errors += c.status != 0; }, 30000);
        if (n < 0) {
            return false;
        }
        inflight -= unsigned(n);
    }
    double t = now() - start;
    printf("bench %s bs=%" PRIu64 " depth=%u: %" PRIu64 " ops in %.2f s, %.0f IOPS, %.1f MiB/s, "
           "%" PRIu64 " errors\n",
           type.c_str(), bs, depth, ops, t, double(ops) / t, double(ops) * double(bs) / t / 1048576,
           errors);
    return errors == 0;
}

}  // namespace

int main(int argc, char** argv)
{
    VuClientOptions opts;
    std::vector<std::string> cmds;
    static const option longopts[] = {
        {"queues", required_argument, nullptr, 'q'},
        {"queue-size", required_argument, nullptr, 'Q'},
        {"depth", required_argument, nullptr, 'd'},
        {"config-size", required_argument, nullptr, 'C'},
        {"max-io", required_argument, nullptr, 'm'},
        {"no-event-idx", no_argument, nullptr, 'E'},
        {nullptr, 0, nullptr, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "c:", longopts, nullptr)) != -1) {
        switch (c) {
        case 'c': cmds.push_back(optarg); break;
        case 'q': opts.num_queues = unsigned(atoi(optarg)); break;
        case 'Q': opts.queue_size = unsigned(atoi(optarg)); break;
        case 'd': opts.depth = unsigned(atoi(optarg)); break;
        case 'C': opts.config_size = unsigned(atoi(optarg)); break;
        case 'm': opts.max_io = unsigned(atoi(optarg)); break;
        case 'E': opts.event_idx = false; break;
        default:
            fprintf(stderr, "usage: vhost-user-blk-client [options] SOCKET -c CMD...\n");
            return 2;
        }
    }
    if (optind + 1 != argc) {
        fprintf(stderr, "vhost-user-blk-client: one SOCKET expected\n");
        return 2;
    }
    // The back end serves one front end at a time and may not have seen
    // the previous one hang up yet: retry for up to 5 s, as QEMU's
    // reconnect would.
    std::unique_ptr<VuClient> client;
    for (int i = 0;; i++) {
        Error err;
        client = std::make_unique<VuClient>();
        if (client->connect(argv[optind], err) && client->start(opts, err)) {
            break;
        }
        if (i == 50) {
            fprintf(stderr, "vhost-user-blk-client: %s\n", err.message.c_str());
            return 1;
        }
        usleep(100000);
    }
    Cli cli(*client);
    bool ok = true;
    for (const std::string& cmd : cmds) {
        ok = cli.command(cmd) && ok;
        fflush(stdout);
    }
    return ok ? 0 : 1;
}
