// The virtio-blk device model (hw/virtio-blk/) driven through a real split
// virtqueue by the in-process test driver: features, the config space
// byte for byte, every request type and status, and the zoned requests on
// zoned qcow2 images.
#include <catch2/catch.hpp>

#include <cstring>

#include "block/block-backend.h"
#include "hw/virtio/virtio-blk.h"
#include "mem-driver.h"
#include "qcow2-test-util.h"
#include "qemu/bswap.h"
#include "qemu/units.h"
#include "virtio-test-driver.h"

using namespace qemu;
using qemu::test::MemState;
using qemu::test::VirtioTestDriver;

namespace {

struct Reply {
    uint8_t status = 0xff;
    uint32_t written = 0;
    std::vector<uint8_t> data;  // the in-area before the status byte
};

// A device on a backend, with one queue and the test driver.
struct Rig {
    AioContext ctx;
    std::unique_ptr<BlockBackend> blk;
    std::unique_ptr<VirtioBlkDevice> dev;
    VirtioTestDriver drv{64, 8 << 20};
    VirtQueue vq;

    void attach(std::unique_ptr<BlockBackend> b, VirtioBlkOptions opts = default_opts())
    {
        blk = std::move(b);
        Error err;
        dev = std::make_unique<VirtioBlkDevice>(*blk, opts, err);
        INFO(err.message);
        REQUIRE_FALSE(err.is_set());
        REQUIRE(dev->set_driver_features(dev->device_features()));
        vq.start(drv.num(), drv.rings(), true, 0);
    }
    static VirtioBlkOptions default_opts()
    {
        VirtioBlkOptions o;
        o.writable = true;
        o.serial = "qz-serial";
        return o;
    }

    // Pops the next element, runs it and pushes it; the used length must
    // be what co_handle() returned.
    uint32_t run_one()
    {
        VirtQueueElement e;
        REQUIRE(vq.pop(drv.memory(), e) == VirtQueue::PopResult::Element);
        uint32_t written = run_sync(ctx, dev->co_handle(e));
        uint16_t idx = drv.used_idx();
        vq.push(e, written);
        REQUIRE(drv.used_elem(idx) == std::pair<uint32_t, uint32_t>(e.head, written));
        return written;
    }

    // A request: the 16-byte header (type, ioprio 0, sector), `out` after
    // it, and an in-area of in_len bytes followed by the status byte (in
    // `in_split` pieces, to check scattered buffers).
    Reply request(uint32_t type, uint64_t sector, const std::vector<uint8_t>& out = {}, size_t in_len = 0,
                  bool indirect = false, unsigned in_split = 1)
    {
        uint8_t hdr[16];
        store_le32(hdr, type);
        store_le32(hdr + 4, 0);
        store_le64(hdr + 8, sector);
        std::vector<VirtioTestDriver::Buf> bufs{drv.out_buf(hdr, 16)};
        if (!out.empty()) {
            bufs.push_back(drv.out_buf(out.data(), out.size()));
        }
        size_t piece = in_split > 1 ? (in_len + in_split - 1) / in_split : in_len;
        std::vector<VirtioTestDriver::Buf> ins;
        for (size_t done = 0; done < in_len; done += piece) {
            ins.push_back(drv.in_buf(std::min(piece, in_len - done)));
        }
        ins.push_back(drv.in_buf(1));
        bufs.insert(bufs.end(), ins.begin(), ins.end());
        drv.add_chain(bufs, indirect);
        Reply r;
        r.written = run_one();
        for (size_t i = 0; i + 1 < ins.size(); i++) {
            uint8_t* p = drv.host(ins[i].addr);
            r.data.insert(r.data.end(), p, p + ins[i].len);
        }
        r.status = *drv.host(ins.back().addr);
        REQUIRE(r.written == in_len + 1);
        return r;
    }

    Reply write(uint64_t sector, const std::vector<uint8_t>& data) { return request(VIRTIO_BLK_T_OUT, sector, data); }
    Reply read(uint64_t sector, size_t len) { return request(VIRTIO_BLK_T_IN, sector, {}, len); }
};

std::unique_ptr<BlockBackend> open_mem(AioContext& ctx, const std::string& opts, int flags = BDRV_O_RDWR)
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

std::vector<uint8_t> segment(uint64_t sector, uint32_t num, uint32_t flags)
{
    std::vector<uint8_t> s(16);
    store_le64(s.data(), sector);
    store_le32(s.data() + 8, num);
    store_le32(s.data() + 12, flags);
    return s;
}

std::vector<uint8_t> bytes_of(size_t n, uint8_t seed)
{
    return qcow2_test::pattern(n, seed);
}

}  // namespace

TEST_CASE("virtio-blk: features offered and the driver's choice", "[virtio-blk]")
{
    Rig r;
    r.attach(open_mem(r.ctx, "size=1M"));
    const uint64_t base = VIRTIO_F_VERSION_1 | VIRTIO_RING_F_INDIRECT_DESC | VIRTIO_RING_F_EVENT_IDX |
                          VIRTIO_BLK_F_SEG_MAX | VIRTIO_BLK_F_BLK_SIZE | VIRTIO_BLK_F_TOPOLOGY |
                          VIRTIO_BLK_F_FLUSH | VIRTIO_BLK_F_CONFIG_WCE | VIRTIO_BLK_F_MQ;
    CHECK(r.dev->device_features() == (base | VIRTIO_BLK_F_DISCARD | VIRTIO_BLK_F_WRITE_ZEROES));
    // No packed rings.
    CHECK_FALSE(r.dev->device_features() & (1ull << 34));
    CHECK_FALSE(r.dev->set_driver_features(VIRTIO_BLK_F_FLUSH));  // no VERSION_1
    CHECK_FALSE(r.dev->set_driver_features(VIRTIO_F_VERSION_1 | (1ull << 34)));
    CHECK_FALSE(r.dev->set_driver_features(VIRTIO_F_VERSION_1 | VIRTIO_BLK_F_ZONED));
    CHECK_FALSE(r.dev->set_driver_features(VIRTIO_F_VERSION_1 | VIRTIO_BLK_F_RO));
    REQUIRE(r.dev->set_driver_features(VIRTIO_F_VERSION_1 | VIRTIO_BLK_F_FLUSH));
    CHECK(r.dev->driver_features() == (VIRTIO_F_VERSION_1 | VIRTIO_BLK_F_FLUSH));

    // A size limit of the node: SIZE_MAX.
    Rig m;
    m.attach(open_mem(m.ctx, "size=1M,max-transfer=64k"));
    CHECK(m.dev->device_features() & VIRTIO_BLK_F_SIZE_MAX);

    // Read-only: RO, nothing that writes.
    Rig ro;
    VirtioBlkOptions o = Rig::default_opts();
    o.writable = false;
    ro.attach(open_mem(ro.ctx, "size=1M", 0), o);
    CHECK(ro.dev->device_features() == (base | VIRTIO_BLK_F_RO));
}

TEST_CASE("virtio-blk: options the device refuses", "[virtio-blk]")
{
    AioContext ctx;
    auto blk = open_mem(ctx, "size=1M,align=4096");
    struct Case {
        uint32_t lbs;
        uint16_t queues, qsize;
        const char* message;
    } cases[] = {
        {1000, 1, 256, "logical-block-size 1000 must be a power of two between 512 and 65536"},
        {256, 1, 256, "logical-block-size 256 must be a power of two between 512 and 65536"},
        {131072, 1, 256, "logical-block-size 131072 must be a power of two between 512 and 65536"},
        {512, 1, 256, "logical-block-size 512 is not a multiple of the node's request alignment 4096"},
        {4096, 0, 256, "num-queues must be at least 1"},
        {4096, 1, 2, "queue-size 2 must be a power of two between 4 and 32768"},
        {4096, 1, 100, "queue-size 100 must be a power of two between 4 and 32768"},
    };
    for (const Case& c : cases) {
        VirtioBlkOptions o = Rig::default_opts();
        o.logical_block_size = c.lbs;
        o.num_queues = c.queues;
        o.queue_size = c.qsize;
        Error err;
        VirtioBlkDevice dev(*blk, o, err);
        CHECK(err.message == c.message);
    }
    // 0: the node's alignment.
    Error err;
    VirtioBlkDevice dev(*blk, Rig::default_opts(), err);
    CHECK_FALSE(err.is_set());
    CHECK(dev.logical_block_size() == 4096);
}

TEST_CASE("virtio-blk: the config space byte for byte", "[virtio-blk]")
{
    Rig r;
    VirtioBlkOptions o = Rig::default_opts();
    o.num_queues = 4;
    o.queue_size = 128;
    o.logical_block_size = 4096;
    r.attach(open_mem(r.ctx, "size=8M,max-transfer=1M"), o);
    std::vector<uint8_t> c = r.dev->config();
    REQUIRE(c.size() == 96);
    std::vector<uint8_t> want(96, 0);
    store_le64(&want[0], 8 * MiB / 512);  // capacity
    store_le32(&want[8], 1 * MiB);        // size_max
    store_le32(&want[12], 126);           // seg_max = queue_size - 2
    // 16..19 geometry: not offered
    store_le32(&want[20], 4096);  // blk_size
    want[24] = 0;                 // physical_block_exp
    want[25] = 0;                 // alignment_offset
    store_le16(&want[26], 1);     // min_io_size
    store_le32(&want[28], 0);     // opt_io_size: the node has none
    want[32] = 1;                 // wce
    store_le16(&want[34], 4);     // num_queues
    store_le32(&want[36], 4194296);  // max_discard_sectors: < 2 GiB, whole 4 KiB blocks
    store_le32(&want[40], 1);        // max_discard_seg
    store_le32(&want[44], 8);        // discard_sector_alignment
    store_le32(&want[48], 4194296);  // max_write_zeroes_sectors
    store_le32(&want[52], 1);        // max_write_zeroes_seg
    want[56] = 1;                    // write_zeroes_may_unmap
    // 57..71 unused and secure erase, 72..95 zoned: zero
    CHECK(c == want);

    // wce follows the driver's writes, and FLUSH not negotiated means
    // write-through.
    uint8_t zero = 0;
    CHECK(r.dev->write_config(32, &zero, 1));
    CHECK(r.dev->config()[32] == 0);
    std::vector<uint8_t> whole = want;  // QEMU's generic device writes it all
    whole[0] = 0x55;
    CHECK(r.dev->write_config(0, whole.data(), 96));
    CHECK(r.dev->config() == want);
    CHECK_FALSE(r.dev->write_config(90, whole.data(), 7));
    CHECK_FALSE(r.dev->write_config(96, whole.data(), 1));
    CHECK_FALSE(r.dev->write_config(0xffffffff, whole.data(), 2));
    REQUIRE(r.dev->set_driver_features(VIRTIO_F_VERSION_1));
    CHECK(r.dev->config()[32] == 0);
}

TEST_CASE("virtio-blk: reads and writes move the guest's buffers", "[virtio-blk]")
{
    bool indirect = GENERATE(false, true);
    Rig r;
    r.attach(open_mem(r.ctx, "size=1M"));
    auto data = bytes_of(8192, 3);
    REQUIRE(r.request(VIRTIO_BLK_T_OUT, 8, data, 0, indirect).status == VIRTIO_BLK_S_OK);
    auto* mem = static_cast<MemState*>(r.blk->bs());
    CHECK(std::equal(data.begin(), data.end(), mem->data.begin() + 4096));
    Reply rd = r.request(VIRTIO_BLK_T_IN, 8, {}, 8192, indirect, 5);  // scattered in-area
    CHECK(rd.status == VIRTIO_BLK_S_OK);
    CHECK(rd.data == data);
    // The legacy barrier bit is ignored.
    rd = r.request(VIRTIO_BLK_T_IN | VIRTIO_BLK_T_BARRIER, 8, {}, 512);
    CHECK(rd.status == VIRTIO_BLK_S_OK);
    CHECK(std::equal(rd.data.begin(), rd.data.end(), data.begin()));
    // The data arrives in the guest's own buffers in one request.
    mem->log.clear();
    r.read(0, 4096);
    REQUIRE(mem->log.size() == 1);
    CHECK(mem->log[0].bytes == 4096);
}

TEST_CASE("virtio-blk: range checks as QEMU's", "[virtio-blk]")
{
    Rig r;
    VirtioBlkOptions o = Rig::default_opts();
    o.logical_block_size = 4096;
    r.attach(open_mem(r.ctx, "size=1M"), o);
    auto* mem = static_cast<MemState*>(r.blk->bs());
    mem->log.clear();
    CHECK(r.read(1, 4096).status == VIRTIO_BLK_S_IOERR);          // sector not block aligned
    CHECK(r.read(8, 512).status == VIRTIO_BLK_S_IOERR);           // length not whole blocks
    CHECK(r.read(2048 - 8, 8192).status == VIRTIO_BLK_S_IOERR);   // runs past the end
    CHECK(r.read(2048, 4096).status == VIRTIO_BLK_S_IOERR);       // starts at the end
    CHECK(r.read(UINT64_MAX & ~7ull, 4096).status == VIRTIO_BLK_S_IOERR);
    CHECK(r.write(1ull << 60, bytes_of(4096, 1)).status == VIRTIO_BLK_S_IOERR);
    CHECK(mem->log.empty());
    CHECK(r.read(2048 - 8, 4096).status == VIRTIO_BLK_S_OK);  // the last block
    CHECK(r.read(0, 0).status == VIRTIO_BLK_S_OK);            // empty: nothing to do
}

TEST_CASE("virtio-blk: writes on a read-only device fail, nothing reaches the node", "[virtio-blk]")
{
    Rig r;
    VirtioBlkOptions o = Rig::default_opts();
    o.writable = false;
    r.attach(open_mem(r.ctx, "size=1M", 0), o);
    auto* mem = static_cast<MemState*>(r.blk->bs());
    mem->log.clear();
    CHECK(r.write(0, bytes_of(512, 1)).status == VIRTIO_BLK_S_IOERR);
    // Not offered, so not negotiated: UNSUPP.
    CHECK(r.request(VIRTIO_BLK_T_WRITE_ZEROES, 0, segment(0, 1, 0)).status == VIRTIO_BLK_S_UNSUPP);
    CHECK(r.request(VIRTIO_BLK_T_DISCARD, 0, segment(0, 1, 0)).status == VIRTIO_BLK_S_UNSUPP);
    CHECK(mem->log.empty());
    CHECK(r.read(0, 512).status == VIRTIO_BLK_S_OK);
}

TEST_CASE("virtio-blk: flush, and write-through without the write cache", "[virtio-blk]")
{
    Rig r;
    r.attach(open_mem(r.ctx, "size=1M,fua=on"));
    auto* mem = static_cast<MemState*>(r.blk->bs());
    r.write(0, bytes_of(512, 1));
    mem->log.clear();
    CHECK(r.request(VIRTIO_BLK_T_FLUSH, 0).status == VIRTIO_BLK_S_OK);
    REQUIRE(mem->log.size() == 1);
    CHECK(mem->log[0].kind == 'f');

    mem->log.clear();
    r.write(0, bytes_of(512, 2));
    REQUIRE(mem->log.size() == 1);
    CHECK_FALSE(mem->log[0].flags & BDRV_REQ_FUA);
    uint8_t wce = 0;
    REQUIRE(r.dev->write_config(32, &wce, 1));
    mem->log.clear();
    r.write(0, bytes_of(512, 3));
    REQUIRE(mem->log.size() == 1);
    CHECK(mem->log[0].flags & BDRV_REQ_FUA);
}

TEST_CASE("virtio-blk: GET_ID", "[virtio-blk]")
{
    struct Case {
        std::string serial;
        size_t in_len;
        std::string want;  // the bytes written; the rest keeps the driver's fill
    } cases[] = {
        {"abc", 20, std::string("abc\0", 4)},
        {"abc", 2, "ab"},
        {"01234567890123456789", 20, "01234567890123456789"},  // no NUL at 20
        {"0123456789012345678901234", 20, "01234567890123456789"},
        {"", 20, std::string("\0", 1)},
    };
    for (const Case& c : cases) {
        Rig r;
        VirtioBlkOptions o = Rig::default_opts();
        o.serial = c.serial;
        r.attach(open_mem(r.ctx, "size=1M"), o);
        Reply rep = r.request(VIRTIO_BLK_T_GET_ID, 0, {}, c.in_len);
        CHECK(rep.status == VIRTIO_BLK_S_OK);
        std::string got(rep.data.begin(), rep.data.end());
        CHECK(got.substr(0, c.want.size()) == c.want);
        CHECK(got.substr(c.want.size()) == std::string(c.in_len - c.want.size(), char(0xa5)));
    }
}

TEST_CASE("virtio-blk: discard and write-zeroes", "[virtio-blk]")
{
    Rig r;
    r.attach(open_mem(r.ctx, "size=1M,write-zeroes=on,discard=unmap"));
    auto* mem = static_cast<MemState*>(r.blk->bs());
    r.write(0, bytes_of(65536, 9));
    mem->log.clear();

    CHECK(r.request(VIRTIO_BLK_T_WRITE_ZEROES, 0, segment(8, 16, 0)).status == VIRTIO_BLK_S_OK);
    REQUIRE(mem->log.size() == 1);
    CHECK(mem->log[0].kind == 'z');
    CHECK(mem->log[0].offset == 4096);
    CHECK(mem->log[0].bytes == 8192);
    CHECK_FALSE(mem->log[0].flags & BDRV_REQ_MAY_UNMAP);
    CHECK(std::all_of(mem->data.begin() + 4096, mem->data.begin() + 12288, [](uint8_t b) { return b == 0; }));
    CHECK(mem->data[12288] != 0);
    CHECK(r.request(VIRTIO_BLK_T_WRITE_ZEROES, 0, segment(0, 8, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP)).status ==
          VIRTIO_BLK_S_OK);
    CHECK(mem->log.back().flags & BDRV_REQ_MAY_UNMAP);

    mem->log.clear();
    CHECK(r.request(VIRTIO_BLK_T_DISCARD, 0, segment(64, 64, 0)).status == VIRTIO_BLK_S_OK);
    REQUIRE(mem->log.size() <= 1);  // advisory: the node may skip it

    mem->log.clear();
    // UNMAP on a discard, unknown flags: UNSUPP.
    CHECK(r.request(VIRTIO_BLK_T_DISCARD, 0, segment(0, 8, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP)).status ==
          VIRTIO_BLK_S_UNSUPP);
    CHECK(r.request(VIRTIO_BLK_T_WRITE_ZEROES, 0, segment(0, 8, 2)).status == VIRTIO_BLK_S_UNSUPP);
    CHECK(r.request(VIRTIO_BLK_T_DISCARD, 0, segment(0, 8, 0x80000000u)).status == VIRTIO_BLK_S_UNSUPP);
    // Two segments: UNSUPP (max_discard_seg is 1); a short one: IOERR.
    auto two = segment(0, 8, 0);
    auto second = segment(16, 8, 0);
    two.insert(two.end(), second.begin(), second.end());
    CHECK(r.request(VIRTIO_BLK_T_WRITE_ZEROES, 0, two).status == VIRTIO_BLK_S_UNSUPP);
    CHECK(r.request(VIRTIO_BLK_T_WRITE_ZEROES, 0, std::vector<uint8_t>(15)).status == VIRTIO_BLK_S_IOERR);
    CHECK(r.request(VIRTIO_BLK_T_DISCARD, 0).status == VIRTIO_BLK_S_IOERR);
    // Out of range, too many sectors, past the end: IOERR.
    CHECK(r.request(VIRTIO_BLK_T_WRITE_ZEROES, 0, segment(2040, 16, 0)).status == VIRTIO_BLK_S_IOERR);
    CHECK(r.request(VIRTIO_BLK_T_WRITE_ZEROES, 0, segment(0, 0xffffffffu, 0)).status == VIRTIO_BLK_S_IOERR);
    CHECK(r.request(VIRTIO_BLK_T_DISCARD, 0, segment(UINT64_MAX, 1, 0)).status == VIRTIO_BLK_S_IOERR);
    CHECK(mem->log.empty());

    // Not negotiated: UNSUPP.
    REQUIRE(r.dev->set_driver_features(VIRTIO_F_VERSION_1 | VIRTIO_BLK_F_FLUSH));
    CHECK(r.request(VIRTIO_BLK_T_WRITE_ZEROES, 0, segment(0, 8, 0)).status == VIRTIO_BLK_S_UNSUPP);
    CHECK(r.request(VIRTIO_BLK_T_DISCARD, 0, segment(0, 8, 0)).status == VIRTIO_BLK_S_UNSUPP);
    CHECK(mem->log.empty());
}

TEST_CASE("virtio-blk: unknown types, short headers, no status byte", "[virtio-blk]")
{
    Rig r;
    r.attach(open_mem(r.ctx, "size=1M"));
    for (uint32_t type : {2u, 3u, 5u, 9u, uint32_t(VIRTIO_BLK_T_SECURE_ERASE), 17u, 99u, 0x7fffffffu}) {
        CAPTURE(type);
        CHECK(r.request(type, 0, {}, 0).status == VIRTIO_BLK_S_UNSUPP);
    }
    // A non-zoned device: the zoned requests are UNSUPP.
    for (uint32_t type : {VIRTIO_BLK_T_ZONE_APPEND, VIRTIO_BLK_T_ZONE_REPORT, VIRTIO_BLK_T_ZONE_OPEN,
                          VIRTIO_BLK_T_ZONE_RESET_ALL}) {
        CAPTURE(type);
        CHECK(r.request(type, 0, {}, 200).status == VIRTIO_BLK_S_UNSUPP);
    }

    // An out header of 15 bytes: IOERR in the status byte.
    uint8_t hdr[15] = {};
    auto status = r.drv.in_buf(1);
    r.drv.add_chain({r.drv.out_buf(hdr, 15), status});
    CHECK(r.run_one() == 1);
    CHECK(*r.drv.host(status.addr) == VIRTIO_BLK_S_IOERR);
    // No in-buffer at all: nothing written, the element is still returned.
    uint8_t full[16] = {};
    r.drv.add_chain({r.drv.out_buf(full, 16)});
    CHECK(r.run_one() == 0);
    // The status is the very last byte, wherever the buffers split.
    auto a = r.drv.in_buf(511), b = r.drv.in_buf(2);
    store_le32(full, VIRTIO_BLK_T_IN);
    r.drv.add_chain({r.drv.out_buf(full, 16), a, b});
    CHECK(r.run_one() == 513);
    CHECK(*r.drv.host(b.addr + 1) == VIRTIO_BLK_S_OK);
}

namespace {

constexpr const char* kZonedOpts = "size=64M,zone.mode=host-managed,zone.size=4M,zone.max_open_zones=4,"
                                   "zone.max_active_zones=6,zone.max_append_bytes=256k,zone.conventional_zones=1";
constexpr uint64_t kZoneSectors = 4 * MiB / 512;

struct ZonedRig : Rig {
    qcow2_test::CreatedImage img;
    explicit ZonedRig(const char* opts = kZonedOpts, VirtioBlkOptions o = default_opts(), int flags = BDRV_O_RDWR)
        : img(opts)
    {
        attach(img.open(ctx, "", flags), o);
    }

    struct Zone {
        uint64_t cap, start, wp;
        uint8_t type, state;
    };
    // ZONE_REPORT from `sector` with room for `room` descriptors: the
    // header's count and the descriptors filled.
    std::pair<uint64_t, std::vector<Zone>> report(uint64_t sector, size_t room, uint8_t* status = nullptr,
                                                  size_t extra = 0)
    {
        Reply rep = request(VIRTIO_BLK_T_ZONE_REPORT, sector, {}, 64 + 64 * room + extra);
        if (status) {
            *status = rep.status;
            if (rep.status != VIRTIO_BLK_S_OK) {
                return {0, {}};
            }
        } else {
            REQUIRE(rep.status == VIRTIO_BLK_S_OK);
        }
        uint64_t n = load_le64(rep.data.data());
        std::vector<Zone> zones;
        for (size_t i = 0; i < std::min<uint64_t>(n, room); i++) {
            const uint8_t* d = rep.data.data() + 64 + 64 * i;
            zones.push_back({load_le64(d), load_le64(d + 8), load_le64(d + 16), d[24], d[25]});
            // Reserved bytes are zero.
            CHECK(std::all_of(d + 26, d + 64, [](uint8_t b) { return b == 0; }));
        }
        if (n < room) {
            // Past the descriptors filled the buffer is untouched.
            CHECK(rep.data[64 + 64 * n] == 0xa5);
        }
        return {n, zones};
    }
    Zone zone(uint64_t sector) { return report(sector, 1).second.at(0); }
    uint8_t mgmt(uint32_t type, uint64_t sector) { return request(type, sector).status; }
    // ZONE_APPEND with an in-header of in_hdr bytes (16 as Linux, 9 as the spec).
    std::pair<uint8_t, uint64_t> append(uint64_t sector, const std::vector<uint8_t>& data, size_t in_hdr = 16)
    {
        Reply rep = request(VIRTIO_BLK_T_ZONE_APPEND, sector, data, in_hdr - 1);
        return {rep.status, rep.data.size() >= 8 ? load_le64(rep.data.data()) : 0};
    }
};

}  // namespace

TEST_CASE("virtio-blk zoned: features and config from the zoned limits", "[virtio-blk][zoned]")
{
    ZonedRig r;
    uint64_t f = r.dev->device_features();
    CHECK(f & VIRTIO_BLK_F_ZONED);
    CHECK_FALSE(f & VIRTIO_BLK_F_DISCARD);  // host-managed: as QEMU
    CHECK(f & VIRTIO_BLK_F_WRITE_ZEROES);
    std::vector<uint8_t> c = r.dev->config();
    CHECK(load_le64(&c[0]) == 64 * MiB / 512);
    CHECK(load_le32(&c[36]) == 0);  // no discard limits
    CHECK(load_le32(&c[72]) == kZoneSectors);
    CHECK(load_le32(&c[76]) == 4);
    CHECK(load_le32(&c[80]) == 6);
    CHECK(load_le32(&c[84]) == 256 * KiB / 512);
    CHECK(load_le32(&c[88]) == 512);
    CHECK(c[92] == VIRTIO_BLK_Z_HM);
    CHECK(c[93] == 0);
    CHECK(c[94] == 0);
    CHECK(c[95] == 0);

    // Host-aware: model 2, discard offered.
    ZonedRig ha("size=64M,zone.mode=host-aware,zone.size=4M");
    CHECK(ha.dev->config()[92] == VIRTIO_BLK_Z_HA);
    CHECK(ha.dev->device_features() & VIRTIO_BLK_F_DISCARD);

    // zoned=off: the plain device, zone fields zero.
    VirtioBlkOptions o = Rig::default_opts();
    o.zoned = false;
    ZonedRig plain(kZonedOpts, o);
    CHECK_FALSE(plain.dev->device_features() & VIRTIO_BLK_F_ZONED);
    std::vector<uint8_t> pc = plain.dev->config();
    CHECK(std::all_of(pc.begin() + 72, pc.end(), [](uint8_t b) { return b == 0; }));
}

TEST_CASE("virtio-blk zoned: writes, zone rules and statuses", "[virtio-blk][zoned]")
{
    ZonedRig r;
    const uint64_t z1 = kZoneSectors, z2 = 2 * kZoneSectors;
    CHECK(r.write(0, bytes_of(4096, 1)).status == VIRTIO_BLK_S_OK);  // conventional zone
    CHECK(r.write(z1, bytes_of(4096, 2)).status == VIRTIO_BLK_S_OK);
    CHECK(r.write(z1 + 16, bytes_of(4096, 3)).status == VIRTIO_BLK_S_ZONE_UNALIGNED_WP);
    CHECK(r.write(z1, bytes_of(4096, 3)).status == VIRTIO_BLK_S_ZONE_UNALIGNED_WP);
    Reply rd = r.read(z1, 4096);
    CHECK(rd.status == VIRTIO_BLK_S_OK);
    CHECK(rd.data == bytes_of(4096, 2));

    // Open resources: 4 open zones at most, 6 active.  Writes open zones
    // implicitly, closing the least recently used implicitly open one
    // when they must.
    auto Z = [](uint64_t i) { return i * kZoneSectors; };
    for (uint64_t z = 2; z <= 5; z++) {
        CHECK(r.write(Z(z), bytes_of(512, 4)).status == VIRTIO_BLK_S_OK);
    }
    CHECK(r.zone(Z(1)).state == 4);  // closed to make room for zone 5
    CHECK(r.zone(Z(5)).state == 2);  // implicitly open
    for (uint64_t z = 2; z <= 5; z++) {
        CHECK(r.mgmt(VIRTIO_BLK_T_ZONE_OPEN, Z(z)) == VIRTIO_BLK_S_OK);
    }
    CHECK(r.zone(Z(2)).state == 3);  // explicitly open
    CHECK(r.mgmt(VIRTIO_BLK_T_ZONE_OPEN, Z(6)) == VIRTIO_BLK_S_ZONE_OPEN_RESOURCE);
    CHECK(r.write(Z(6), bytes_of(512, 4)).status == VIRTIO_BLK_S_ZONE_OPEN_RESOURCE);
    CHECK(r.mgmt(VIRTIO_BLK_T_ZONE_CLOSE, Z(5)) == VIRTIO_BLK_S_OK);
    CHECK(r.write(Z(6), bytes_of(512, 4)).status == VIRTIO_BLK_S_OK);
    CHECK(r.mgmt(VIRTIO_BLK_T_ZONE_CLOSE, Z(6)) == VIRTIO_BLK_S_OK);
    // Active: 1, 5 and 6 closed, 2 to 4 open: 6, the limit.
    CHECK(r.mgmt(VIRTIO_BLK_T_ZONE_OPEN, Z(7)) == VIRTIO_BLK_S_ZONE_ACTIVE_RESOURCE);
    CHECK(r.write(Z(7), bytes_of(512, 4)).status == VIRTIO_BLK_S_ZONE_ACTIVE_RESOURCE);
    // Closing a zone nothing was written to makes it empty, not active.
    CHECK(r.mgmt(VIRTIO_BLK_T_ZONE_FINISH, Z(6)) == VIRTIO_BLK_S_OK);
    CHECK(r.mgmt(VIRTIO_BLK_T_ZONE_OPEN, Z(7)) == VIRTIO_BLK_S_OK);
    CHECK(r.mgmt(VIRTIO_BLK_T_ZONE_CLOSE, Z(7)) == VIRTIO_BLK_S_OK);
    CHECK(r.zone(Z(7)).state == 1);

    // Conditions as the report shows them.
    CHECK(r.zone(0).type == 1);
    CHECK(r.zone(0).state == 0);
    CHECK(r.zone(z2).type == 2);
    CHECK(r.mgmt(VIRTIO_BLK_T_ZONE_FINISH, z2) == VIRTIO_BLK_S_OK);
    CHECK(r.zone(z2).state == 14);  // full
    CHECK(r.write(z2, bytes_of(512, 5)).status == VIRTIO_BLK_S_ZONE_INVALID_CMD);
    CHECK(r.mgmt(VIRTIO_BLK_T_ZONE_RESET, z2) == VIRTIO_BLK_S_OK);
    CHECK(r.zone(z2).state == 1);  // empty
    CHECK(r.zone(z2).wp == z2);

    // Management outside a zone start or the disk.
    CHECK(r.mgmt(VIRTIO_BLK_T_ZONE_RESET, z1 + 8) == VIRTIO_BLK_S_ZONE_INVALID_CMD);
    CHECK(r.mgmt(VIRTIO_BLK_T_ZONE_OPEN, 16 * kZoneSectors) == VIRTIO_BLK_S_ZONE_INVALID_CMD);
    CHECK(r.mgmt(VIRTIO_BLK_T_ZONE_FINISH, UINT64_MAX) == VIRTIO_BLK_S_ZONE_INVALID_CMD);

    // RESET_ALL: every sequential zone empty again (the sector is ignored).
    CHECK(r.mgmt(VIRTIO_BLK_T_ZONE_RESET_ALL, 12345) == VIRTIO_BLK_S_OK);
    auto [n, zones] = r.report(0, 16);
    REQUIRE(n == 16);
    for (size_t i = 1; i < 16; i++) {
        CHECK(zones[i].state == 1);
        CHECK(zones[i].wp == zones[i].start);
    }
    CHECK(zones[0].state == 0);
}

TEST_CASE("virtio-blk zoned: zone append returns the sector", "[virtio-blk][zoned]")
{
    ZonedRig r;
    const uint64_t z1 = kZoneSectors;
    REQUIRE(r.write(z1, bytes_of(4096, 1)).status == VIRTIO_BLK_S_OK);
    auto [st, sector] = r.append(z1, bytes_of(8192, 2));
    CHECK(st == VIRTIO_BLK_S_OK);
    CHECK(sector == z1 + 8);
    auto [st9, sector9] = r.append(z1, bytes_of(512, 3), 9);  // the spec's 9-byte in-header
    CHECK(st9 == VIRTIO_BLK_S_OK);
    CHECK(sector9 == z1 + 24);
    Reply rd = r.read(z1 + 8, 8192);
    CHECK(rd.data == bytes_of(8192, 2));
    CHECK(r.zone(z1).wp == z1 + 25);

    CHECK(r.append(z1, bytes_of(256 * KiB + 512, 4)).first == VIRTIO_BLK_S_ZONE_INVALID_CMD);  // > max append
    CHECK(r.append(0, bytes_of(512, 4)).first == VIRTIO_BLK_S_ZONE_INVALID_CMD);  // conventional zone
    CHECK(r.append(z1 + 8, bytes_of(512, 4)).first == VIRTIO_BLK_S_ZONE_INVALID_CMD);  // not a zone start
    CHECK(r.append(16 * kZoneSectors, bytes_of(512, 4)).first == VIRTIO_BLK_S_ZONE_INVALID_CMD);
    CHECK(r.append(UINT64_MAX, bytes_of(512, 4)).first == VIRTIO_BLK_S_ZONE_INVALID_CMD);
    CHECK(r.append(z1, {}).first == VIRTIO_BLK_S_ZONE_INVALID_CMD);  // nothing to append
    // No room for the sector: IOERR.
    CHECK(r.append(z1, bytes_of(512, 4), 8).first == VIRTIO_BLK_S_IOERR);
    CHECK(r.zone(z1).wp == z1 + 25);
}

TEST_CASE("virtio-blk zoned: an append not aligned to the write granularity", "[virtio-blk][zoned]")
{
    VirtioBlkOptions o = Rig::default_opts();
    o.logical_block_size = 4096;
    ZonedRig r(kZonedOpts, o);
    CHECK(load_le32(&r.dev->config()[88]) == 4096);
    CHECK(r.append(kZoneSectors + 1, bytes_of(4096, 1)).first == VIRTIO_BLK_S_ZONE_UNALIGNED_WP);
    CHECK(r.append(kZoneSectors, bytes_of(512, 1)).first == VIRTIO_BLK_S_ZONE_INVALID_CMD);
    CHECK(r.append(kZoneSectors, bytes_of(4096, 1)) == std::pair<uint8_t, uint64_t>(VIRTIO_BLK_S_OK, kZoneSectors));
}

TEST_CASE("virtio-blk zoned: zone report with any start sector and buffer size", "[virtio-blk][zoned]")
{
    ZonedRig r;
    REQUIRE(r.write(kZoneSectors, bytes_of(4096, 1)).status == VIRTIO_BLK_S_OK);

    auto [n, zones] = r.report(0, 16);
    REQUIRE(n == 16);
    for (size_t i = 0; i < 16; i++) {
        CHECK(zones[i].start == i * kZoneSectors);
        CHECK(zones[i].cap == kZoneSectors);
    }
    CHECK(zones[1].wp == kZoneSectors + 8);
    CHECK(zones[1].state == 2);

    // Room for more zones than there are: the count says how many.
    CHECK(r.report(0, 40).first == 16);
    // One descriptor's room, with spare bytes that hold no whole descriptor.
    auto [n1, z1] = r.report(kZoneSectors, 1, nullptr, 63);
    CHECK(n1 == 1);
    CHECK(z1.at(0).start == kZoneSectors);
    // An unaligned start sector: from the zone holding it.
    auto [n2, z2] = r.report(kZoneSectors * 3 + 77, 2);
    CHECK(n2 == 2);
    CHECK(z2.at(0).start == 3 * kZoneSectors);
    CHECK(z2.at(1).start == 4 * kZoneSectors);
    // The last zone, and a start at the very end: nothing there.
    CHECK(r.report(64 * MiB / 512 - 1, 4).first == 1);
    CHECK(r.report(64 * MiB / 512, 4).first == 0);
    // Beyond the end, or no room for one descriptor: ZONE_INVALID_CMD.
    uint8_t st = 0;
    r.report(64 * MiB / 512 + 1, 1, &st);
    CHECK(st == VIRTIO_BLK_S_ZONE_INVALID_CMD);
    r.report(UINT64_MAX, 1, &st);
    CHECK(st == VIRTIO_BLK_S_ZONE_INVALID_CMD);
    Reply small = r.request(VIRTIO_BLK_T_ZONE_REPORT, 0, {}, 127);
    CHECK(small.status == VIRTIO_BLK_S_ZONE_INVALID_CMD);
}

TEST_CASE("virtio-blk zoned: a report longer than one batch of zones", "[virtio-blk][zoned]")
{
    ZonedRig r("size=64M,zone.mode=host-managed,zone.size=256k,zone.max_append_bytes=64k");
    auto [n, zones] = r.report(0, 300);
    REQUIRE(n == 256);
    for (size_t i = 0; i < 256; i++) {
        CHECK(zones[i].start == i * 512);
    }
    // From the middle of zone 10, in a scattered buffer.
    Reply rep = r.request(VIRTIO_BLK_T_ZONE_REPORT, 10 * 512 + 3, {}, 64 + 64 * 200, true, 7);
    REQUIRE(rep.status == VIRTIO_BLK_S_OK);
    CHECK(load_le64(rep.data.data()) == 200);
    CHECK(load_le64(rep.data.data() + 64 + 64 * 199 + 8) == 209 * 512);
}

TEST_CASE("virtio-blk zoned: without ZONED negotiated", "[virtio-blk][zoned]")
{
    ZonedRig r;
    REQUIRE(r.dev->set_driver_features(VIRTIO_F_VERSION_1 | VIRTIO_BLK_F_FLUSH));
    CHECK(r.request(VIRTIO_BLK_T_ZONE_REPORT, 0, {}, 200).status == VIRTIO_BLK_S_UNSUPP);
    CHECK(r.mgmt(VIRTIO_BLK_T_ZONE_RESET_ALL, 0) == VIRTIO_BLK_S_UNSUPP);
    CHECK(r.append(kZoneSectors, bytes_of(512, 1)).first == VIRTIO_BLK_S_UNSUPP);
    // Zone rules still hold, as plain I/O errors the driver knows.
    CHECK(r.write(kZoneSectors + 8, bytes_of(512, 1)).status == VIRTIO_BLK_S_IOERR);
    CHECK(r.write(kZoneSectors, bytes_of(512, 1)).status == VIRTIO_BLK_S_OK);
}

TEST_CASE("virtio-blk zoned: a read-only device refuses zone changes", "[virtio-blk][zoned]")
{
    VirtioBlkOptions o = Rig::default_opts();
    o.writable = false;
    ZonedRig r(kZonedOpts, o, 0);
    CHECK(r.mgmt(VIRTIO_BLK_T_ZONE_OPEN, kZoneSectors) == VIRTIO_BLK_S_IOERR);
    CHECK(r.mgmt(VIRTIO_BLK_T_ZONE_RESET_ALL, 0) == VIRTIO_BLK_S_IOERR);
    CHECK(r.append(kZoneSectors, bytes_of(512, 1)).first == VIRTIO_BLK_S_IOERR);
    CHECK(r.report(0, 16).first == 16);
    CHECK(r.zone(kZoneSectors).state == 1);
}

TEST_CASE("virtio-blk: several elements in flight at once, pushed as they finish", "[virtio-blk]")
{
    Rig r;
    r.attach(open_mem(r.ctx, "size=1M"));
    auto* mem = static_cast<MemState*>(r.blk->bs());
    mem->yield_in_io = true;
    constexpr int kCount = 8;
    std::vector<VirtioTestDriver::Buf> status(kCount);
    for (int i = 0; i < kCount; i++) {
        uint8_t hdr[16];
        store_le32(hdr, VIRTIO_BLK_T_OUT);
        store_le32(hdr + 4, 0);
        store_le64(hdr + 8, uint64_t(i) * 8);
        auto data = bytes_of(4096, uint8_t(i));
        status[i] = r.drv.in_buf(1);
        r.drv.add_chain({r.drv.out_buf(hdr, 16), r.drv.out_buf(data.data(), data.size()), status[i]});
    }
    std::vector<VirtQueueElement> elems(kCount);
    int done = 0;
    for (auto& e : elems) {
        REQUIRE(r.vq.pop(r.drv.memory(), e) == VirtQueue::PopResult::Element);
        co_spawn([](Rig& rig, VirtQueueElement& el, int& d) -> Task<void> {
            uint32_t written = co_await rig.dev->co_handle(el);
            rig.vq.push(el, written);
            d++;
        }(r, e, done));
    }
    while (done < kCount) {
        r.ctx.poll(true);
    }
    CHECK(mem->max_in_flight > 1);
    REQUIRE(r.drv.used_idx() == kCount);
    for (int i = 0; i < kCount; i++) {
        CHECK(*r.drv.host(status[i].addr) == VIRTIO_BLK_S_OK);
        auto want = bytes_of(4096, uint8_t(i));
        CHECK(std::equal(want.begin(), want.end(), mem->data.begin() + i * 4096));
    }
}

TEST_CASE("virtio-blk zoned: read-only and offline zones", "[virtio-blk][zoned]")
{
    ZonedRig r;
    const uint64_t z3 = 3 * kZoneSectors, z4 = 4 * kZoneSectors;
    REQUIRE(run_sync(r.ctx, r.blk->co_zone_mgmt(BlockZoneOp::SetReadOnly, z3 * 512, 4 * MiB)) == 0);
    REQUIRE(run_sync(r.ctx, r.blk->co_zone_mgmt(BlockZoneOp::SetOffline, z4 * 512, 4 * MiB)) == 0);
    CHECK(r.zone(z3).state == 13);
    CHECK(r.zone(z4).state == 15);
    CHECK(r.write(z3, bytes_of(512, 1)).status == VIRTIO_BLK_S_ZONE_INVALID_CMD);
    CHECK(r.append(z3, bytes_of(512, 1)).first == VIRTIO_BLK_S_ZONE_INVALID_CMD);
    CHECK(r.read(z3, 512).status == VIRTIO_BLK_S_OK);
    CHECK(r.read(z4, 512).status == VIRTIO_BLK_S_ZONE_INVALID_CMD);
    CHECK(r.mgmt(VIRTIO_BLK_T_ZONE_RESET, z4) == VIRTIO_BLK_S_ZONE_INVALID_CMD);
}
