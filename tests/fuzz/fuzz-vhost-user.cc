// libFuzzer harness: the fuzz input is a stream of vhost-user messages
// from a hostile front end, fed to the vhost-user-blk back end's state
// machine (VhostUserBlkSession::co_dispatch, the path every message of a
// connection takes after framing).
//
// Input: records of [1 byte: fds][12-byte header][payload as the header
// says, cut short at the end of the input].  The fds byte's low nibble is
// how many fds come with the message (0-9); bit 4 makes them eventfds,
// else memfds of 256 KiB whose first bytes are the next 4 KiB of the input
// (so rings and descriptors inside the "guest memory" are fuzzed too,
// when a memory table maps them and a kick starts a ring).  The device is
// virtio-blk on a null-co node (64 MiB, reads zeroes, writes dropped).
// A Fatal outcome ends the session as the daemon would, and the rest of
// the input starts a new one (the export's reconnect).
//
// Crashes, sanitizer reports, hangs and leaks (fds, mappings) are bugs.
// Build: CXX=clang++ meson setup build-fuzz -Dfuzzing=true.
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "block/block-backend.h"
#include "export/vhost-user-blk/session.h"

namespace qemu::fuzz {
namespace {

constexpr size_t kMemfdSize = 256 * 1024;
constexpr size_t kMemfdFill = 4096;

struct World {
    AioContext ctx;
    std::unique_ptr<BlockBackend> blk;
    std::unique_ptr<VirtioBlkDevice> dev;

    World()
    {
        bdrv_init();
        QDict o;
        o.set("driver", "null-co");
        o.set("size", "64M");
        o.set("read-zeroes", "on");
        Error err;
        blk = BlockBackend::open(std::nullopt, o, BDRV_O_RDWR, ctx, err);
        if (!blk) {
            abort();
        }
        VirtioBlkOptions opts;
        opts.writable = true;
        opts.num_queues = 2;
        dev = std::make_unique<VirtioBlkDevice>(*blk, opts, err);
        if (err.is_set()) {
            abort();
        }
    }
};

UniqueFd make_fd(bool event, const uint8_t*& p, const uint8_t* end)
{
    if (event) {
        return UniqueFd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    }
    UniqueFd fd(memfd_create("fuzz-guest", MFD_CLOEXEC));
    if (!fd.valid() || ftruncate(fd.get(), kMemfdSize) < 0) {
        abort();
    }
    size_t n = std::min<size_t>(kMemfdFill, size_t(end - p));
    if (n && pwrite(fd.get(), p, n, 0) != ssize_t(n)) {
        abort();
    }
    p += n;
    return fd;
}

Task<void> co_run(World& w, const uint8_t* p, const uint8_t* end)
{
    auto session = std::make_unique<VhostUserBlkSession>(w.ctx, -1, *w.dev);
    while (end - p >= 13) {
        uint8_t fds = *p++;
        vhost_user::Message m;
        std::memcpy(&m.request, p, 4);
        std::memcpy(&m.flags, p + 4, 4);
        uint32_t size;
        std::memcpy(&size, p + 8, 4);
        p += 12;
        size = std::min<uint32_t>({size, vhost_user::kMaxPayload, uint32_t(end - p)});
        m.payload.assign(p, p + size);
        p += size;
        for (unsigned i = 0; i < (fds & 15u) && i < 9; i++) {
            m.fds.push_back(make_fd(fds & 16, p, end));
        }
        std::optional<vhost_user::Message> reply;
        Error err;
        VhostUserBlkSession::Outcome o = co_await session->co_dispatch(m, reply, err);
        // Let kicked rings and their requests run.
        for (int i = 0; i < 4; i++) {
            co_await w.ctx.sleep_ns(0);
        }
        if (o == VhostUserBlkSession::Outcome::Fatal) {
            co_await session->co_close();
            session = std::make_unique<VhostUserBlkSession>(w.ctx, -1, *w.dev);
        }
    }
    co_await session->co_close();
}

}  // namespace
}  // namespace qemu::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    static qemu::fuzz::World* w = new qemu::fuzz::World();
    qemu::run_sync(w->ctx, qemu::fuzz::co_run(*w, data, data + size));
    return 0;
}
