// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as NVMe/TCP header
// and data digests and iSCSI use it.  Thread-safe, no state.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>

namespace qemu {

// Continues a CRC over len bytes: start with crc = 0 and feed the pieces in
// order; the result is the finished CRC of everything fed so far (the
// initial and final inversions are applied inside, so chaining works).
uint32_t crc32c(uint32_t crc, const void* buf, size_t len);
// The same over the first len bytes of an iovec array.
uint32_t crc32c_iov(uint32_t crc, const iovec* iov, unsigned niov, size_t len);

}  // namespace qemu
