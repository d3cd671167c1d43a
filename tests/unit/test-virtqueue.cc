// Split virtqueues and guest memory (hw/virtio/): translation bounds,
// popping chains (direct and indirect), the used ring, notification
// suppression, and hostile rings that must break the queue and nothing
// else.
#include <catch2/catch.hpp>

#include "hw/virtio/virtqueue.h"
#include "virtio-test-driver.h"

using namespace qemu;
using qemu::test::VirtioTestDriver;

namespace {

using Buf = VirtioTestDriver::Buf;

struct Queue {
    VirtioTestDriver drv;
    VirtQueue vq;
    VirtQueueElement elem;

    explicit Queue(uint16_t num = 16, bool event_idx = false, uint16_t last_avail = 0) : drv(num)
    {
        vq.start(num, drv.rings(), event_idx, last_avail);
    }
    VirtQueue::PopResult pop() { return vq.pop(drv.memory(), elem); }
    // A hostile chain must break the queue, hand out nothing and stay broken.
    void require_broken()
    {
        uint16_t before = vq.last_avail_idx();
        REQUIRE(pop() == VirtQueue::PopResult::Broken);
        CHECK(elem.out.empty());
        CHECK(elem.in.empty());
        CHECK(elem.out_bytes == 0);
        CHECK(elem.in_bytes == 0);
        CHECK(vq.broken());
        CHECK(vq.last_avail_idx() == before);
        CHECK(pop() == VirtQueue::PopResult::Broken);
    }
};

}  // namespace

TEST_CASE("GuestMemory: regions may not overlap, be empty or wrap", "[virtio]")
{
    std::vector<uint8_t> a(4096), b(4096);
    GuestMemory mem;
    REQUIRE(mem.add_region({0x1000, 4096, a.data(), true}));
    CHECK_FALSE(mem.add_region({0x1800, 4096, b.data(), true}));  // overlaps the end
    CHECK_FALSE(mem.add_region({0x0800, 4096, b.data(), true}));  // overlaps the start
    CHECK_FALSE(mem.add_region({0x1000, 16, b.data(), true}));
    CHECK_FALSE(mem.add_region({0x3000, 0, b.data(), true}));
    CHECK_FALSE(mem.add_region({UINT64_MAX - 100, 4096, b.data(), true}));  // wraps
    CHECK_FALSE(mem.add_region({0x3000, 4096, nullptr, true}));
    REQUIRE(mem.add_region({0x2000, 4096, b.data(), false}));  // adjacent is fine
    // The very top of the address space.
    std::vector<uint8_t> top(16);
    REQUIRE(mem.add_region({UINT64_MAX - 15, 16, top.data(), true}));
    REQUIRE(mem.regions().size() == 3);
    CHECK(mem.regions()[0].guest_addr == 0x1000);
    CHECK(mem.regions()[1].guest_addr == 0x2000);
}

TEST_CASE("GuestMemory: translation checks every byte and never wraps", "[virtio]")
{
    std::vector<uint8_t> a(4096), b(4096), top(16);
    GuestMemory mem;
    REQUIRE(mem.add_region({0x1000, 4096, a.data(), true}));
    REQUIRE(mem.add_region({0x2000, 4096, b.data(), false}));
    REQUIRE(mem.add_region({UINT64_MAX - 15, 16, top.data(), true}));

    std::vector<iovec> out;
    // Across the two adjacent regions: two pieces.
    REQUIRE(mem.translate(0x1ff0, 32, false, out));
    REQUIRE(out.size() == 2);
    CHECK(out[0].iov_base == a.data() + 0xff0);
    CHECK(out[0].iov_len == 16);
    CHECK(out[1].iov_base == b.data());
    CHECK(out[1].iov_len == 16);
    // Writing into the read-only region: refused, out unchanged.
    CHECK_FALSE(mem.translate(0x1ff0, 32, true, out));
    CHECK(out.size() == 2);
    // Off either end, in a hole, wrapping.
    CHECK_FALSE(mem.translate(0x0fff, 2, false, out));
    CHECK_FALSE(mem.translate(0x2fff, 2, false, out));
    CHECK_FALSE(mem.translate(0x5000, 1, false, out));
    CHECK_FALSE(mem.translate(UINT64_MAX - 15, 32, false, out));
    CHECK_FALSE(mem.translate(0x1000, UINT64_MAX, false, out));
    CHECK_FALSE(mem.translate(UINT64_MAX, UINT64_MAX, false, out));
    CHECK(out.size() == 2);
    // Up to the last address there is.
    REQUIRE(mem.translate(UINT64_MAX - 15, 16, true, out));
    CHECK(out.back().iov_base == top.data());
    CHECK(out.back().iov_len == 16);
    REQUIRE(mem.translate(UINT64_MAX, 1, true, out));
    CHECK(out.back().iov_base == top.data() + 15);

    CHECK(mem.translate_contiguous(0x1ff0, 16, true) == a.data() + 0xff0);
    CHECK(mem.translate_contiguous(0x1ff0, 17, false) == nullptr);  // spans two regions
    CHECK(mem.translate_contiguous(0x2000, 16, true) == nullptr);   // read-only
    CHECK(mem.translate_contiguous(0x2000, 16, false) == b.data());
    CHECK(mem.translate_contiguous(0x1000, UINT64_MAX, false) == nullptr);
    CHECK(mem.translate_contiguous(0x500, 1, false) == nullptr);
}

TEST_CASE("virtqueue: pop hands out the chain's buffers, push fills the used ring", "[virtio]")
{
    bool indirect = GENERATE(false, true);
    Queue q;
    Buf h = q.drv.out_buf("header0123456789", 16);
    Buf d = q.drv.out_buf("data", 4);
    Buf s = q.drv.in_buf(512);
    Buf t = q.drv.in_buf(1);
    uint16_t head = q.drv.add_chain({h, d, s, t}, indirect);

    REQUIRE(q.pop() == VirtQueue::PopResult::Element);
    CHECK(q.elem.head == head);
    REQUIRE(q.elem.out.size() == 2);
    CHECK(q.elem.out[0].iov_base == q.drv.host(h.addr));
    CHECK(q.elem.out[0].iov_len == 16);
    CHECK(q.elem.out[1].iov_base == q.drv.host(d.addr));
    REQUIRE(q.elem.in.size() == 2);
    CHECK(q.elem.in[0].iov_base == q.drv.host(s.addr));
    CHECK(q.elem.in[1].iov_len == 1);
    CHECK(q.elem.out_bytes == 20);
    CHECK(q.elem.in_bytes == 513);
    CHECK(q.vq.last_avail_idx() == 1);
    CHECK(q.pop() == VirtQueue::PopResult::Empty);

    q.vq.push(q.elem, 513);
    REQUIRE(q.drv.used_idx() == 1);
    CHECK(q.drv.used_elem(0) == std::pair<uint32_t, uint32_t>(head, 513));
}

TEST_CASE("virtqueue: elements may be pushed in any order", "[virtio]")
{
    Queue q;
    std::vector<VirtQueueElement> elems(3);
    for (int i = 0; i < 3; i++) {
        q.drv.add_chain({q.drv.out_buf("x", 1), q.drv.in_buf(1)});
    }
    for (auto& e : elems) {
        REQUIRE(q.vq.pop(q.drv.memory(), e) == VirtQueue::PopResult::Element);
    }
    q.vq.push(elems[2], 7);
    q.vq.push(elems[0], 8);
    q.vq.push(elems[1], 9);
    REQUIRE(q.drv.used_idx() == 3);
    CHECK(q.drv.used_elem(0) == std::pair<uint32_t, uint32_t>(elems[2].head, 7));
    CHECK(q.drv.used_elem(1) == std::pair<uint32_t, uint32_t>(elems[0].head, 8));
    CHECK(q.drv.used_elem(2) == std::pair<uint32_t, uint32_t>(elems[1].head, 9));
}

TEST_CASE("virtqueue: indices run free across 2^16 and resume where a back end left off", "[virtio]")
{
    // As after vhost-user SET_VRING_BASE 65534 with the used index there.
    VirtioTestDriver drv(4);
    drv.set_avail_idx(65534);
    drv.set_used_idx(65534);
    VirtQueue vq;
    vq.start(4, drv.rings(), false, 65534);
    VirtQueueElement e;
    for (int i = 0; i < 6; i++) {
        uint16_t head = drv.add_chain({drv.out_buf("y", 1), drv.in_buf(1)});
        REQUIRE(vq.pop(drv.memory(), e) == VirtQueue::PopResult::Element);
        CHECK(e.head == head);
        vq.push(e, 1);
        CHECK(drv.used_idx() == uint16_t(65534 + i + 1));
    }
    CHECK(vq.last_avail_idx() == 4);
    CHECK(vq.pop(drv.memory(), e) == VirtQueue::PopResult::Empty);
}

TEST_CASE("virtqueue: a chain as long as the queue is fine, an indirect table up to 32768 entries",
          "[virtio]")
{
    Queue q(8);
    std::vector<Buf> bufs;
    for (int i = 0; i < 8; i++) {
        bufs.push_back(q.drv.out_buf("z", 1));
    }
    q.drv.add_chain(bufs);
    REQUIRE(q.pop() == VirtQueue::PopResult::Element);
    CHECK(q.elem.out.size() == 8);

    Buf one = q.drv.out_buf("w", 1);
    std::vector<Buf> many(kVirtQueueMaxSize, one);
    q.drv.add_chain(many, true);
    REQUIRE(q.pop() == VirtQueue::PopResult::Element);
    CHECK(q.elem.out.size() == kVirtQueueMaxSize);
    CHECK(q.elem.out_bytes == kVirtQueueMaxSize);
}

TEST_CASE("virtqueue: hostile chains break the queue", "[virtio]")
{
    Queue q(8);
    VirtioTestDriver& d = q.drv;
    Buf ok = d.out_buf("0123456789abcdef", 16);
    Buf in = d.in_buf(16);
    const uint16_t N = VRING_DESC_F_NEXT, W = VRING_DESC_F_WRITE, I = VRING_DESC_F_INDIRECT;

    SECTION("a loop")
    {
        d.set_desc(0, ok.addr, 16, N, 1);
        d.set_desc(1, ok.addr, 16, N, 0);
        d.publish(0);
        q.require_broken();
    }
    SECTION("a descriptor pointing at itself")
    {
        d.set_desc(3, ok.addr, 16, N, 3);
        d.publish(3);
        q.require_broken();
    }
    SECTION("next out of range")
    {
        d.set_desc(0, ok.addr, 16, N, 8);
        d.publish(0);
        q.require_broken();
    }
    SECTION("head out of range")
    {
        d.publish(8);
        q.require_broken();
    }
    SECTION("address outside guest memory")
    {
        d.set_desc(0, d.end(), 16, 0, 0);
        d.publish(0);
        q.require_broken();
    }
    SECTION("address below guest memory")
    {
        d.set_desc(0, d.base() - 8, 16, 0, 0);
        d.publish(0);
        q.require_broken();
    }
    SECTION("buffer running off the end of guest memory")
    {
        d.set_desc(0, d.end() - 8, 16, 0, 0);
        d.publish(0);
        q.require_broken();
    }
    SECTION("addr + len overflowing")
    {
        d.set_desc(0, UINT64_MAX - 7, 16, 0, 0);
        d.publish(0);
        q.require_broken();
    }
    SECTION("a readable buffer after a writable one")
    {
        d.set_desc(0, in.addr, 16, N | W, 1);
        d.set_desc(1, ok.addr, 16, 0, 0);
        d.publish(0);
        q.require_broken();
    }
    SECTION("a zero-length buffer")
    {
        d.set_desc(0, ok.addr, 16, N, 1);
        d.set_desc(1, in.addr, 0, W, 0);
        d.publish(0);
        q.require_broken();
    }
    SECTION("indirect inside indirect")
    {
        uint64_t inner = d.alloc(16);
        d.set_desc(0, ok.addr, 16, 0, 0, inner);
        uint64_t outer = d.alloc(32);
        d.set_desc(0, ok.addr, 16, N, 1, outer);
        d.set_desc(1, inner, 16, I, 0, outer);
        d.set_desc(0, outer, 32, I, 0);
        d.publish(0);
        q.require_broken();
    }
    SECTION("indirect table of length 0")
    {
        d.set_desc(0, d.alloc(16), 0, I, 0);
        d.publish(0);
        q.require_broken();
    }
    SECTION("indirect table length not a multiple of 16")
    {
        uint64_t t = d.alloc(32);
        d.set_desc(0, ok.addr, 16, 0, 0, t);
        d.set_desc(0, t, 24, I, 0);
        d.publish(0);
        q.require_broken();
    }
    SECTION("indirect with NEXT")
    {
        uint64_t t = d.alloc(16);
        d.set_desc(0, ok.addr, 16, 0, 0, t);
        d.set_desc(0, t, 16, I | N, 1);
        d.set_desc(1, in.addr, 16, W, 0);
        d.publish(0);
        q.require_broken();
    }
    SECTION("indirect after a direct descriptor")
    {
        uint64_t t = d.alloc(16);
        d.set_desc(0, ok.addr, 16, 0, 0, t);
        d.set_desc(0, ok.addr, 16, N, 1);
        d.set_desc(1, t, 16, I, 0);
        d.publish(0);
        q.require_broken();
    }
    SECTION("indirect table outside guest memory")
    {
        d.set_desc(0, d.end() - 16, 32, I, 0);
        d.publish(0);
        q.require_broken();
    }
    SECTION("indirect table address overflowing")
    {
        d.set_desc(0, UINT64_MAX - 15, 32, I, 0);
        d.publish(0);
        q.require_broken();
    }
    SECTION("a loop inside an indirect table")
    {
        uint64_t t = d.alloc(48);
        d.set_desc(0, ok.addr, 16, N, 1, t);
        d.set_desc(1, ok.addr, 16, N, 2, t);
        d.set_desc(2, ok.addr, 16, N, 0, t);
        d.set_desc(0, t, 48, I, 0);
        d.publish(0);
        q.require_broken();
    }
    SECTION("next beyond the indirect table")
    {
        uint64_t t = d.alloc(32);
        d.set_desc(0, ok.addr, 16, N, 2, t);  // entry 2 would be past the table
        d.set_desc(1, in.addr, 16, W, 0, t);
        d.set_desc(0, t, 32, I, 0);
        d.publish(0);
        q.require_broken();
    }
    SECTION("a huge indirect table")
    {
        d.set_desc(0, d.base(), 16 * (kVirtQueueMaxSize + 1), I, 0);
        d.publish(0);
        q.require_broken();
    }
    SECTION("an indirect table claiming 4 GiB")
    {
        d.set_desc(0, d.base(), 0xfffffff0u, I, 0);
        d.publish(0);
        q.require_broken();
    }
    SECTION("a chain longer than the queue, without a loop")
    {
        // 8 descriptors chained 0..7 and the last pointing back at the
        // first: the 9th visit is one too many.
        for (uint16_t i = 0; i < 8; i++) {
            d.set_desc(i, ok.addr, 16, N, uint16_t((i + 1) % 8));
        }
        d.publish(0);
        q.require_broken();
    }
    SECTION("the avail index jumping by more than the queue size")
    {
        d.set_desc(0, ok.addr, 16, 0, 0);
        d.set_avail_idx(9);
        q.require_broken();
    }
    SECTION("a buffer the device must write in read-only memory")
    {
        std::vector<uint8_t> ro(64);
        REQUIRE(d.memory().add_region({0x10000000, 64, ro.data(), false}));
        d.set_desc(0, ok.addr, 16, N, 1);
        d.set_desc(1, 0x10000000, 64, W, 0);
        d.publish(0);
        q.require_broken();
    }
}

TEST_CASE("virtqueue: a broken queue starts afresh after start()", "[virtio]")
{
    Queue q(4);
    q.drv.publish(7);
    REQUIRE(q.pop() == VirtQueue::PopResult::Broken);
    q.vq.stop();
    CHECK_FALSE(q.vq.started());
    CHECK(q.pop() == VirtQueue::PopResult::Empty);
    // A request that finishes after the stop touches no ring.
    q.vq.push(q.elem, 1);
    CHECK_FALSE(q.vq.should_notify());
    q.vq.set_notification(false);
    CHECK(q.drv.used_idx() == 0);
    CHECK(q.drv.used_flags() == 0);
    q.vq.start(4, q.drv.rings(), false, 1);
    CHECK_FALSE(q.vq.broken());
    q.drv.add_chain({q.drv.out_buf("a", 1)});
    CHECK(q.pop() == VirtQueue::PopResult::Element);
}

TEST_CASE("virtqueue: NO_INTERRUPT and NO_NOTIFY without event index", "[virtio]")
{
    Queue q(4);
    q.drv.add_chain({q.drv.out_buf("a", 1)});
    REQUIRE(q.pop() == VirtQueue::PopResult::Element);
    q.vq.push(q.elem, 0);
    CHECK(q.vq.should_notify());
    q.drv.set_avail_flags(VRING_AVAIL_F_NO_INTERRUPT);
    q.vq.push(q.elem, 0);
    CHECK_FALSE(q.vq.should_notify());

    q.vq.set_notification(false);
    CHECK(q.drv.used_flags() == VRING_USED_F_NO_NOTIFY);
    q.vq.set_notification(true);
    CHECK(q.drv.used_flags() == 0);
}

TEST_CASE("virtqueue: event index (used_event, avail_event)", "[virtio]")
{
    Queue q(8, true);
    CHECK(q.drv.avail_event() == 0);
    auto one = [&] {
        q.drv.add_chain({q.drv.out_buf("a", 1)});
        REQUIRE(q.pop() == VirtQueue::PopResult::Element);
        q.vq.push(q.elem, 0);
    };
    // The first notification always goes out.
    q.drv.set_used_event(100);
    one();
    CHECK(q.drv.avail_event() == 1);  // kick me for the next one
    CHECK(q.vq.should_notify());
    // The driver wants an interrupt once used idx passes 2 (i.e. reaches 3).
    q.drv.set_used_event(2);
    one();  // used idx 2
    CHECK_FALSE(q.vq.should_notify());
    one();  // used idx 3
    CHECK(q.vq.should_notify());
    one();  // used idx 4: the event is behind us
    CHECK_FALSE(q.vq.should_notify());
    // Two pushes before one check, passing the event on the way.
    q.drv.set_used_event(4);
    one();
    one();  // used idx 6
    CHECK(q.vq.should_notify());
    // The used ring's flags are not how event index suppresses anything.
    q.drv.set_avail_flags(VRING_AVAIL_F_NO_INTERRUPT);
    q.drv.set_used_event(6);
    one();
    CHECK(q.vq.should_notify());

    // Kicks off: avail_event stays where it was set, pops do not move it.
    q.vq.set_notification(false);
    uint16_t ev = q.drv.avail_event();
    CHECK(ev == q.drv.avail_idx());
    one();
    one();
    CHECK(q.drv.avail_event() == ev);
    CHECK(q.drv.used_flags() == 0);
    q.vq.set_notification(true);
    CHECK(q.drv.avail_event() == q.drv.avail_idx());
    one();
    CHECK(q.drv.avail_event() == q.vq.last_avail_idx());
}
