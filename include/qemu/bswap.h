// Loads and stores of big- and little-endian integers at unaligned
// addresses: on-disk formats are read and written only through these.
#pragma once

#include <cstdint>
#include <cstring>

namespace qemu {

inline uint16_t load_be16(const void* p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return __builtin_bswap16(v);
}
inline uint32_t load_be32(const void* p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return __builtin_bswap32(v);
}
inline uint64_t load_be64(const void* p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return __builtin_bswap64(v);
}
inline void store_be16(void* p, uint16_t v)
{
    v = __builtin_bswap16(v);
    memcpy(p, &v, 2);
}
inline void store_be32(void* p, uint32_t v)
{
    v = __builtin_bswap32(v);
    memcpy(p, &v, 4);
}
inline void store_be64(void* p, uint64_t v)
{
    v = __builtin_bswap64(v);
    memcpy(p, &v, 8);
}
inline uint64_t load_le64(const void* p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;  // x86 and every host we build for are little-endian
}
inline void store_le64(void* p, uint64_t v)
{
    memcpy(p, &v, 8);
}

inline uint16_t load_le16(const void* p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}
inline uint32_t load_le32(const void* p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
inline void store_le16(void* p, uint16_t v)
{
    memcpy(p, &v, 2);
}
inline void store_le32(void* p, uint32_t v)
{
    memcpy(p, &v, 4);
}

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "little-endian hosts only");

}  // namespace qemu
