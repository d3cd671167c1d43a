// I/O buffers (util/iov.cc).
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstdio>
#include <cstring>

#include "qemu/iov.h"
#include "qemu/units.h"

using namespace qemu;

namespace {
// The transparent huge page size, 0 without THP.
size_t thp_size()
{
    size_t s = 0;
    if (FILE* f = fopen("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size", "re")) {
        if (fscanf(f, "%zu", &s) != 1) {
            s = 0;
        }
        fclose(f);
    }
    return s <= 2 * MiB ? s : 0;
}

bool aligned(const void* p, size_t to)
{
    return reinterpret_cast<uintptr_t>(p) % to == 0;
}
}  // namespace

TEST_CASE("AlignedBuffer: small buffers keep their alignment, large ones sit on huge pages", "[iov]")
{
    AlignedBuffer small(64 * KiB, 4096);
    REQUIRE(small.size() == 64 * KiB);
    REQUIRE(aligned(small.data(), 4096));
    memset(small.data(), 0xab, small.size());

    size_t huge = thp_size();
    AlignedBuffer large(1 * MiB, 512);
    REQUIRE(large.size() == 1 * MiB);
    REQUIRE(aligned(large.data(), huge ? huge : 512));
    memset(large.data(), 0xcd, large.size());
}

TEST_CASE("AlignedBuffer::on_huge_pages: a huge page however small", "[iov]")
{
    size_t huge = thp_size();
    AlignedBuffer b = AlignedBuffer::on_huge_pages(4 * KiB, 4096);
    REQUIRE(b.size() == 4 * KiB);
    REQUIRE(aligned(b.data(), huge ? huge : 4096));
    memset(b.data(), 0xef, b.size());

    AlignedBuffer moved = std::move(b);
    REQUIRE(b.data() == nullptr);
    REQUIRE(moved.size() == 4 * KiB);
    REQUIRE(moved.data()[4095] == 0xef);
}
