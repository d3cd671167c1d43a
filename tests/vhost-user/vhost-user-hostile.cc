// vhost-user-hostile: a hostile vhost-user front end.  Each case opens its
// own connection to the back end at SOCKET, sends malformed or out-of-range
// messages, and checks the back end either refuses them (a non-zero
// REPLY_ACK ack, an empty GET_CONFIG reply) or ends the connection; then a
// well-behaved front end must still get a working device from the same
// socket (the daemon survived and listens again).
//
//   vhost-user-hostile SOCKET
//
// Prints "PASS NAME" or "FAIL NAME: why" per case; exit status 1 when one
// failed.
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <string>

#include "vu-client.h"

using namespace qemu;
using namespace qemu::vhost_user;

namespace {

std::string sock_path;

Message msg(uint32_t request, const void* payload, size_t len, uint32_t flags = kVersion)
{
    Message m;
    m.request = request;
    m.flags = flags;
    const uint8_t* p = static_cast<const uint8_t*>(payload);
    m.payload.assign(p, p + len);
    return m;
}

Message u64msg(uint32_t request, uint64_t v, uint32_t flags = kVersion)
{
    return msg(request, &v, 8, flags);
}

// The back end closed the connection (after maybe answering).
bool closed(VuClient& c)
{
    pollfd p = {c.sock(), POLLIN, 0};
    for (;;) {
        if (poll(&p, 1, 10000) <= 0) {
            return false;
        }
        char buf[512];
        ssize_t n = read(c.sock(), buf, sizeof(buf));
        if (n <= 0) {
            return n == 0 || errno == ECONNRESET;
        }
    }
}

// Sets up REPLY_ACK so that refusals come back as acks.
bool with_ack(VuClient& c, Error& err)
{
    return c.call_u64(GET_FEATURES, 0, nullptr, err) == 0 &&
           c.call_u64(SET_PROTOCOL_FEATURES, PROTOCOL_F_REPLY_ACK, nullptr, err) == 0;
}

// Sends m with NEED_REPLY and expects a non-zero ack.
std::string refused(VuClient& c, Message m)
{
    m.flags |= kFlagNeedReply;
    if (send_message(c.sock(), m) < 0) {
        return "send failed";
    }
    Message r;
    Error err;
    if (recv_message(c.sock(), r, err) != 1) {
        return "no ack: " + err.message;
    }
    if (r.payload.size() != 8 || r.u64() == 0) {
        return "accepted";
    }
    return "";
}

// A well-behaved front end still gets a working disk.  The back end
// takes one front end at a time and notices the case's hang-up in its own
// time: a refused connection is tried again for up to 10 s.
std::string healthy()
{
    Error err;
    VuClientOptions o;
    o.depth = 4;
    o.max_io = 4096;
    std::unique_ptr<VuClient> c;
    for (int i = 0;; i++) {
        c = std::make_unique<VuClient>();
        if (c->connect(sock_path, err) && c->start(o, err)) {
            break;
        }
        if (i == 100) {
            return "daemon unusable afterwards: " + err.message;
        }
        usleep(100000);
    }
    VuClient::Request r;
    r.type = 0;
    r.in_len = 512;
    uint8_t status = 0xff;
    if (c->run(0, r, nullptr, status) < 0 || status != 0) {
        return "read after the case failed";
    }
    return "";
}

UniqueFd memfd(size_t size)
{
    UniqueFd fd(memfd_create("hostile", MFD_CLOEXEC));
    if (ftruncate(fd.get(), off_t(size)) < 0) {
        fd.reset();
    }
    return fd;
}

Message mem_table(uint64_t gpa, uint64_t size, uint64_t uva, uint64_t offset, unsigned nfds,
                  size_t file_size)
{
    uint8_t p[8 + sizeof(MemRegion)] = {1};
    MemRegion r = {gpa, size, uva, offset};
    std::memcpy(p + 8, &r, sizeof(r));
    Message m = msg(SET_MEM_TABLE, p, sizeof(p));
    for (unsigned i = 0; i < nfds; i++) {
        m.fds.push_back(memfd(file_size));
    }
    return m;
}

// A connection the back end serves: it takes one front end at a time and
// notices the previous one's hang-up in its own time, so a connection it
// turns away is tried again, for up to 10 s.  The probe is GET_FEATURES.
std::unique_ptr<VuClient> served_connection(std::string& why)
{
    for (int i = 0;; i++) {
        auto c = std::make_unique<VuClient>();
        Error err;
        if (c->connect(sock_path, err) && c->call_u64(GET_FEATURES, 0, nullptr, err) == 0) {
            return c;
        }
        if (i == 100) {
            why = "no connection: " + err.message;
            return nullptr;
        }
        usleep(100000);
    }
}

struct Case {
    const char* name;
    std::function<std::string(VuClient&)> run;
};

const Case kCases[] = {
    {"oversize payload",
     [](VuClient& c) {
         uint8_t hdr[12] = {1, 0, 0, 0, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff};
         return write(c.sock(), hdr, 12) == 12 && closed(c) ? "" : "not closed";
     }},
    {"bad version",
     [](VuClient& c) {
         send_message(c.sock(), msg(GET_FEATURES, nullptr, 0, 2));
         return closed(c) ? "" : "not closed";
     }},
    {"unknown request",
     [](VuClient& c) {
         send_message(c.sock(), msg(99, nullptr, 0));
         return closed(c) ? "" : "not closed";
     }},
    {"message cut short",
     [](VuClient& c) {
         uint8_t hdr[16] = {2, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0, 1, 2, 3, 4};
         if (write(c.sock(), hdr, 16) != 16) {
             return "write failed";
         }
         shutdown(c.sock(), SHUT_WR);
         return closed(c) ? "" : "not closed";
     }},
    {"nine fds",
     [](VuClient& c) {
         Message m = msg(SET_OWNER, nullptr, 0);
         for (int i = 0; i < 9; i++) {
             m.fds.push_back(memfd(4096));
         }
         send_message(c.sock(), m);
         return closed(c) ? "" : "not closed";
     }},
    {"memory table: region count and fds disagree",
     [](VuClient& c) {
         send_message(c.sock(), mem_table(0, 1 << 20, 1 << 30, 0, 2, 1 << 20));
         return closed(c) ? "" : "not closed";
     }},
    {"memory table: region beyond its file",
     [](VuClient& c) -> std::string {
         Error err;
         if (!with_ack(c, err)) {
             return err.message;
         }
         return refused(c, mem_table(0, 1 << 20, 1 << 30, 4096, 1, 1 << 20));
     }},
    {"memory table: wrapping region",
     [](VuClient& c) -> std::string {
         Error err;
         if (!with_ack(c, err)) {
             return err.message;
         }
         return refused(c, mem_table(~0ull - 4095, 1 << 20, 1 << 30, 0, 1, 1 << 20));
     }},
    {"vring index out of range",
     [](VuClient& c) -> std::string {
         Error err;
         if (!with_ack(c, err)) {
             return err.message;
         }
         VringState s = {200, 64};
         return refused(c, msg(SET_VRING_NUM, &s, sizeof(s)));
     }},
    {"vring size not a power of two",
     [](VuClient& c) -> std::string {
         Error err;
         if (!with_ack(c, err)) {
             return err.message;
         }
         VringState s = {0, 100};
         std::string r = refused(c, msg(SET_VRING_NUM, &s, sizeof(s)));
         // The session goes on after a refused request.
         if (r.empty() && c.call_u64(GET_FEATURES, 0, nullptr, err) < 0) {
             return "session ended: " + err.message;
         }
         return r;
     }},
    {"kick fd that is not an eventfd",
     [](VuClient& c) -> std::string {
         Error err;
         if (!with_ack(c, err)) {
             return err.message;
         }
         Message m = u64msg(SET_VRING_KICK, 0);
         m.fds.push_back(memfd(4096));
         return refused(c, std::move(m));
     }},
    {"rings outside the memory table",
     [](VuClient& c) -> std::string {
         Error err;
         if (!with_ack(c, err)) {
             return err.message;
         }
         void* mem = mmap(nullptr, 1 << 20, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
         uint64_t uva = uint64_t(uintptr_t(mem));
         Message mt = mem_table(0, 1 << 20, uva, 0, 1, 1 << 20);
         std::string r;
         VringState num = {0, 64};
         VringAddr a = {0, 0, uva + (1 << 20), uva, uva + 4096, 0};  // desc past the end
         Message kick = u64msg(SET_VRING_KICK, 0);
         kick.fds.emplace_back(eventfd(0, EFD_CLOEXEC));
         if (c.call(std::move(mt), nullptr, err) < 0 ||
             c.call(msg(SET_VRING_NUM, &num, sizeof(num)), nullptr, err) < 0 ||
             c.call(msg(SET_VRING_ADDR, &a, sizeof(a)), nullptr, err) < 0) {
             r = "setup refused: " + err.message;
         } else {
             r = refused(c, std::move(kick));
         }
         munmap(mem, 1 << 20);
         return r;
     }},
    {"config read past its end",
     [](VuClient& c) -> std::string {
         uint8_t p[12 + 60] = {};
         ConfigHeader h = {90, 60, 0};
         std::memcpy(p, &h, sizeof(h));
         Message r;
         Error err;
         if (c.call(msg(GET_CONFIG, p, sizeof(p)), &r, err) < 0) {
             return err.message;
         }
         return r.payload.empty() ? "" : "config returned";
     }},
    {"config write past its end",
     [](VuClient& c) -> std::string {
         Error err;
         if (!with_ack(c, err)) {
             return err.message;
         }
         uint8_t p[12 + 8] = {};
         ConfigHeader h = {92, 8, 0};  // the config space is 96 bytes
         std::memcpy(p, &h, sizeof(h));
         return refused(c, msg(SET_CONFIG, p, sizeof(p)));
     }},
    {"features without VERSION_1",
     [](VuClient& c) -> std::string {
         Error err;
         if (!with_ack(c, err)) {
             return err.message;
         }
         return refused(c, u64msg(SET_FEATURES, 1ull << 9));
     }},
    {"dirty log requested",
     [](VuClient& c) -> std::string {
         Error err;
         if (!with_ack(c, err)) {
             return err.message;
         }
         Message m = u64msg(SET_LOG_FD, 0);
         m.fds.push_back(memfd(4096));
         return refused(c, std::move(m));
     }},
};

}  // namespace

int main(int argc, char** argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: vhost-user-hostile SOCKET\n");
        return 2;
    }
    sock_path = argv[1];
    int failed = 0;
    for (const Case& k : kCases) {
        std::string why;
        {
            std::unique_ptr<VuClient> c = served_connection(why);
            if (c) {
                why = k.run(*c);
            }
        }
        if (why.empty()) {
            why = healthy();
        }
        if (why.empty()) {
            printf("PASS %s\n", k.name);
        } else {
            printf("FAIL %s: %s\n", k.name, why.c_str());
            failed++;
        }
        fflush(stdout);
    }
    return failed ? 1 : 0;
}
