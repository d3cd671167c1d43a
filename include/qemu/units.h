#pragma once

#include <cstdint>

namespace qemu {
constexpr uint64_t KiB = 1ULL << 10;
constexpr uint64_t MiB = 1ULL << 20;
constexpr uint64_t GiB = 1ULL << 30;
constexpr uint64_t TiB = 1ULL << 40;
constexpr uint64_t PiB = 1ULL << 50;
constexpr uint64_t EiB = 1ULL << 60;
constexpr uint64_t BDRV_SECTOR_SIZE = 512;
constexpr int BDRV_SECTOR_BITS = 9;
}  // namespace qemu
