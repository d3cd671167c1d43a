// libFuzzer harness: the fuzz input is a virtio driver's memory.
//
// Layout of an input:
//   byte 0       queue size: 1 << (byte % 7), 1 to 64
//   byte 1       bit 0 EVENT_IDX, bit 1 the zoned device, bit 2 kicks
//                disabled (set_notification(false)), bit 3 a 4 KiB
//                logical block size, bits 4-7 the first config byte written
//   bytes 2-9    the driver's features (le64), masked by the device's
//                offer; VERSION_1 is always added
//   bytes 10-    guest memory from guest address 0x10000 (64 KiB, the rest
//                zero): descriptor table at 0x10000, avail ring after it,
//                used ring after that, 4-aligned.  A second region, 4 KiB
//                read-only, sits at 0x20000 right after it.
// The harness pops every available chain (bounded), hands each element to
// a VirtioBlkDevice and pushes it, as a transport does; then writes the
// config space.  Two devices: a plain one on null-co (64 MiB, reads
// zeroes) and a zoned one on a zoned qcow2 image in $TMPDIR (8 MiB, 1 MiB
// zones, one conventional), both writable.
//
// Broken queues, errors and odd statuses are expected; crashes, sanitizer
// reports (the device reaching outside the two regions), hangs and leaks
// are bugs.  Build: CXX=clang++ meson setup build-fuzz -Dfuzzing=true;
// seeds: tests/fuzz/make-virtqueue-corpus.py OUT_DIR.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "block/block-backend.h"
#include "hw/virtio/virtio-blk.h"
#include "hw/virtio/virtqueue.h"
#include "qemu/bswap.h"

namespace qemu::fuzz {
namespace {

constexpr uint64_t kGuestBase = 0x10000;
constexpr size_t kGuestSize = 64 * 1024;
constexpr uint64_t kRomBase = kGuestBase + kGuestSize;
constexpr size_t kRomSize = 4096;

struct World {
    AioContext ctx;
    std::unique_ptr<BlockBackend> plain, zoned;
    std::string image;

    World()
    {
        bdrv_init();
        QDict o;
        o.set("driver", "null-co");
        o.set("size", "64M");
        o.set("read-zeroes", "on");
        Error err;
        plain = BlockBackend::open(std::nullopt, o, BDRV_O_RDWR, ctx, err);
        const char* tmp = getenv("TMPDIR");
        image = std::string(tmp ? tmp : "/tmp") + "/fuzz-virtqueue-" + std::to_string(getpid()) + ".qcow2";
        QDict c;
        if (!plain || !keyval_parse(c, "size=8M,zone.mode=host-managed,zone.size=1M,zone.max_open_zones=3,"
                                       "zone.max_active_zones=5,zone.max_append_bytes=64k,"
                                       "zone.conventional_zones=1", nullptr, err) ||
            run_sync(ctx, bdrv_co_create(*bdrv_find_driver("qcow2"), image, c, ctx, err)) < 0) {
            abort();
        }
        QDict z;
        z.set("driver", "qcow2");
        zoned = BlockBackend::open(image, z, BDRV_O_RDWR, ctx, err);
        unlink(image.c_str());  // open: gone when the process is
        if (!zoned) {
            abort();
        }
    }
};

World& world()
{
    static World* w = new World;
    return *w;
}

void run(const uint8_t* data, size_t size)
{
    if (size < 10) {
        return;
    }
    World& w = world();
    uint16_t num = uint16_t(1u << (data[0] % 7));
    uint8_t flags = data[1];
    bool event_idx = flags & 1;
    BlockBackend& blk = (flags & 2) ? *w.zoned : *w.plain;
    VirtioBlkOptions opts;
    opts.writable = true;
    opts.serial = "fuzz";
    opts.logical_block_size = (flags & 8) ? 4096 : 512;
    opts.queue_size = 64;
    Error err;
    VirtioBlkDevice dev(blk, opts, err);
    if (err.is_set()) {
        abort();
    }
    uint64_t features = (load_le64(data + 2) & dev.device_features()) | VIRTIO_F_VERSION_1;
    if (!event_idx) {
        features &= ~VIRTIO_RING_F_EVENT_IDX;
    }
    if (!dev.set_driver_features(features)) {
        abort();
    }

    // Guest memory exactly as big as the regions, so that ASan sees any
    // access outside them.
    std::unique_ptr<uint8_t[]> ram(new uint8_t[kGuestSize]());
    std::unique_ptr<uint8_t[]> rom(new uint8_t[kRomSize]);
    memset(rom.get(), 0x5a, kRomSize);
    memcpy(ram.get(), data + 10, std::min(size - 10, kGuestSize));
    GuestMemory mem;
    if (!mem.add_region({kGuestBase, kGuestSize, ram.get(), true}) ||
        !mem.add_region({kRomBase, kRomSize, rom.get(), false})) {
        abort();
    }
    size_t desc = 0, avail = 16 * size_t(num), used = (avail + 6 + 2 * size_t(num) + 3) & ~size_t(3);
    VirtQueue vq;
    vq.start(num, {ram.get() + desc, ram.get() + avail, ram.get() + used}, event_idx, 0);
    if (flags & 4) {
        vq.set_notification(false);
    }

    VirtQueueElement elem;
    // A driver can make at most num chains available at once; pushing
    // frees nothing it must refill, so a few rounds bound the work.
    for (unsigned i = 0; i < 4u * num; i++) {
        if (vq.pop(mem, elem) != VirtQueue::PopResult::Element) {
            break;
        }
        uint32_t written = run_sync(w.ctx, dev.co_handle(elem));
        if (written > elem.in_bytes) {
            abort();
        }
        vq.push(elem, written);
        vq.should_notify();
    }
    vq.set_notification(true);
    std::vector<uint8_t> cfg = dev.config();
    if (cfg.size() != kVirtioBlkConfigSize) {
        abort();
    }
    uint8_t value[2] = {uint8_t(flags >> 4), uint8_t(flags >> 4)};
    dev.write_config(value[0] * 6u, value, 1 + (flags & 1));
}

}  // namespace
}  // namespace qemu::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    qemu::fuzz::run(data, size);
    return 0;
}
