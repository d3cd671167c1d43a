// The NVM command set of the NVMe model (hw/nvme/nvm-cmds.cc) on in-memory
// nodes that record what reaches them: Read, Write (FUA), Write Zeroes
// (DEAC), Dataset Management, Compare, Flush, and their status codes.
#include <catch2/catch.hpp>

#include <algorithm>
#include <optional>

#include "nvme-test-util.h"

using namespace qemu;
using namespace nvme_test;

namespace {

// Namespaces: 1 (512-byte blocks, 1 MiB), 2 (4 KiB blocks), 3 (read-only);
// an I/O queue on an enabled controller; MDTS 64 KiB.
struct IoFixture : Fixture {
    Queue* io = nullptr;
    Queue* adm = nullptr;
    uint16_t cntlid = 0;
    IoFixture()
    {
        port.max_data_transfer = 64 * 1024;
        attach(open_mem(ctx, "size=1M,fua=on,write-zeroes=on,discard=unmap"));
        attach(open_mem(ctx, "size=2M,align=4096,fua=on"));
        attach(open_mem(ctx, "size=1M", 0));
        adm = &admin(cntlid);
        io = &io_queue(cntlid, 1);
    }
    test::MemState& mem(size_t i) { return mem_of(*blks[i]); }
    Result cmd(const NvmeSqe& s, std::vector<uint8_t>& buf) { return run(*io, s, buf); }
    Result cmd(const NvmeSqe& s) { return run(*io, s); }
};

std::vector<uint8_t> pattern(size_t n, uint8_t seed)
{
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; i++) {
        v[i] = uint8_t(seed + i * 13);
    }
    return v;
}

constexpr uint32_t kFua = 1u << 30;

}  // namespace

TEST_CASE("nvme nvm: reads and writes in 512-byte and 4 KiB blocks", "[nvme]")
{
    IoFixture f;
    auto data = pattern(4096, 1);
    REQUIRE(f.cmd(rw(0x01, 1, 8, 8), data).status == 0);
    CHECK(std::equal(data.begin(), data.end(), f.mem(0).data.begin() + 8 * 512));
    std::vector<uint8_t> back(4096);
    Result r = f.cmd(rw(0x02, 1, 8, 8), back);
    REQUIRE(r.status == 0);
    CHECK(r.c2h_bytes == 4096);
    CHECK(back == data);

    auto big = pattern(8192, 2);
    REQUIRE(f.cmd(rw(0x01, 2, 3, 2), big).status == 0);
    CHECK(std::equal(big.begin(), big.end(), f.mem(1).data.begin() + 3 * 4096));
    std::vector<uint8_t> back2(8192);
    REQUIRE(f.cmd(rw(0x02, 2, 3, 2), back2).status == 0);
    CHECK(back2 == big);

    // A buffer larger than the command needs: only the first bytes move.
    std::vector<uint8_t> larger(8192, 0xee);
    r = f.cmd(rw(0x02, 1, 8, 1), larger);
    REQUIRE(r.status == 0);
    CHECK(r.c2h_bytes == 512);
    CHECK(std::equal(larger.begin(), larger.begin() + 512, data.begin()));
    CHECK(larger[512] == 0xee);
}

TEST_CASE("nvme nvm: FUA and the volatile write cache reach the node", "[nvme]")
{
    IoFixture f;
    auto data = pattern(512, 3);
    auto last_flags = [&] { return f.mem(0).log.back().flags; };
    REQUIRE(f.cmd(rw(0x01, 1, 0, 1), data).status == 0);
    CHECK((last_flags() & BDRV_REQ_FUA) == 0);
    REQUIRE(f.cmd(rw(0x01, 1, 0, 1, kFua), data).status == 0);
    CHECK((last_flags() & BDRV_REQ_FUA) != 0);
    // Write cache off: every write is FUA.
    REQUIRE(f.run(*f.adm, features(true, 0x06, 0)).status == 0);
    REQUIRE(f.cmd(rw(0x01, 1, 0, 1), data).status == 0);
    CHECK((last_flags() & BDRV_REQ_FUA) != 0);
}

TEST_CASE("nvme nvm: range, length, MDTS and write protection", "[nvme]")
{
    IoFixture f;
    std::vector<uint8_t> buf(64 * 1024 + 512);
    CHECK(f.cmd(rw(0x02, 1, 2047, 2), buf).status == (0x80 | kDnr));  // LBA Out of Range
    CHECK(f.cmd(rw(0x01, 1, 2048, 1), buf).status == (0x80 | kDnr));
    CHECK(f.cmd(rw(0x02, 1, ~0ull, 2), buf).status == (0x80 | kDnr));
    REQUIRE(f.cmd(rw(0x02, 1, 2047, 1), buf).status == 0);
    // Data SGL length shorter than the blocks.
    std::vector<uint8_t> small(256);
    CHECK(f.cmd(rw(0x01, 1, 0, 1), small).status == (0x0f | kDnr));
    // Beyond MDTS (64 KiB).
    CHECK(f.cmd(rw(0x02, 1, 0, 129), buf).status == (0x02 | kDnr));
    REQUIRE(f.cmd(rw(0x02, 1, 0, 128), buf).status == 0);
    // The read-only namespace: Namespace is Write Protected.
    CHECK(f.cmd(rw(0x01, 3, 0, 1), buf).status == (0x20 | kDnr));
    CHECK(f.cmd(rw(0x08, 3, 0, 1)).status == (0x20 | kDnr));
    REQUIRE(f.cmd(rw(0x02, 3, 0, 1), buf).status == 0);
    // Unknown namespaces and opcodes.
    CHECK(f.cmd(rw(0x02, 9, 0, 1), buf).status == (0x0b | kDnr));
    CHECK(f.cmd(rw(0x02, 0, 0, 1), buf).status == (0x0b | kDnr));
    CHECK(f.cmd(rw(0x04, 1, 0, 1), buf).status == (0x01 | kDnr));
    for (uint8_t zns_op : {0x79, 0x7a, 0x7d}) {
        CHECK(f.cmd(rw(zns_op, 1, 0, 1), buf).status == (0x01 | kDnr));
    }
}

TEST_CASE("nvme nvm: Write Zeroes, Dataset Management, Compare, Flush", "[nvme]")
{
    IoFixture f;
    auto data = pattern(8192, 4);
    REQUIRE(f.cmd(rw(0x01, 1, 0, 16), data).status == 0);
    auto& log = f.mem(0).log;

    REQUIRE(f.cmd(rw(0x08, 1, 2, 2, 1u << 25)).status == 0);
    CHECK(log.back().kind == 'z');
    CHECK(log.back().offset == 1024);
    CHECK(log.back().bytes == 1024);
    CHECK(std::all_of(f.mem(0).data.begin() + 1024, f.mem(0).data.begin() + 2048,
                      [](uint8_t b) { return b == 0; }));
    REQUIRE(f.cmd(rw(0x08, 1, 4, 1)).status == 0);
    CHECK(f.mem(0).data[4 * 512] == 0);
    CHECK(f.cmd(rw(0x08, 1, 2048, 1)).status == (0x80 | kDnr));

    // Deallocate two ranges.
    std::vector<uint8_t> ranges(32);
    store_le32(&ranges[4], 4);
    store_le64(&ranges[8], 8);
    store_le32(&ranges[16 + 4], 2);
    store_le64(&ranges[16 + 8], 100);
    NvmeSqe dsm = sqe(0x09, 1);
    dsm.set_cdw(10, 1);       // two ranges
    dsm.set_cdw(11, 1u << 2);  // AD
    size_t before = log.size();
    REQUIRE(f.cmd(dsm, ranges).status == 0);
    REQUIRE(log.size() == before + 2);
    CHECK(log[before].kind == 'd');
    CHECK(log[before].offset == 8 * 512);
    CHECK(log[before].bytes == 4 * 512);
    CHECK(log[before + 1].offset == 100 * 512);
    // A range out of the namespace: nothing is deallocated.
    store_le64(&ranges[16 + 8], 2047);
    before = log.size();
    CHECK(f.cmd(dsm, ranges).status == (0x80 | kDnr));
    CHECK(log.size() == before);
    // Attributes without AD are hints: nothing to do.
    dsm.set_cdw(11, 1);
    REQUIRE(f.cmd(dsm, ranges).status == 0);
    CHECK(log.size() == before);
    std::vector<uint8_t> one_range(16);
    dsm.set_cdw(11, 1u << 2);
    CHECK(f.cmd(dsm, one_range).status == (0x0f | kDnr));

    // Compare.
    std::vector<uint8_t> same(data.begin() + 12 * 512, data.begin() + 13 * 512);
    CHECK(f.cmd(rw(0x05, 1, 12, 1), same).status == 0);
    same[100] ^= 1;
    CHECK(f.cmd(rw(0x05, 1, 12, 1), same).status == (0x285 | kDnr));

    // Flush one namespace, then all of them.
    REQUIRE(f.cmd(sqe(0x00, 1)).status == 0);
    CHECK(log.back().kind == 'f');
    auto block = pattern(4096, 5);
    REQUIRE(f.cmd(rw(0x01, 2, 0, 1), block).status == 0);  // something to flush
    size_t flushes_before = 0;
    for (auto& e : f.mem(1).log) {
        flushes_before += e.kind == 'f';
    }
    REQUIRE(f.cmd(sqe(0x00, 0xffffffff)).status == 0);
    size_t flushes_after = 0;
    for (auto& e : f.mem(1).log) {
        flushes_after += e.kind == 'f';
    }
    CHECK(flushes_after == flushes_before + 1);
}

TEST_CASE("nvme nvm: commands run concurrently; removal waits for them", "[nvme]")
{
    IoFixture f;
    f.mem(0).yield_in_io = true;
    constexpr int kDepth = 8;
    std::vector<std::vector<uint8_t>> bufs(kDepth, std::vector<uint8_t>(4096));
    std::optional<Result> results[kDepth];
    for (int i = 0; i < kDepth; i++) {
        co_spawn([](NvmeQueuePair& qp, std::vector<uint8_t>& b, int idx,
                    std::optional<Result>& out) -> Task<void> {
            Result r = co_await co_exec(qp, rw(0x02, 1, uint64_t(idx) * 8, 8), b.data(), b.size());
            out = r;
        }(*f.io->qp, bufs[i], i, results[i]));
    }
    bool removed = false;
    co_spawn([](Fixture& fx, bool& done) -> Task<void> {
        co_await fx.subsys->co_remove_namespace(1);
        done = true;
    }(f, removed));
    while (!removed) {
        f.ctx.poll(true);
    }
    for (auto& r : results) {
        REQUIRE(r);
        CHECK(r->status == 0);
    }
    CHECK(f.mem(0).max_in_flight > 1);
    std::vector<uint8_t> buf(512);
    CHECK(f.cmd(rw(0x02, 1, 0, 1), buf).status == (0x0b | kDnr));
}
