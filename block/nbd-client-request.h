// One NBD request in flight: shared by the sending side
// (nbd-client-conn.cc) and the reply reader (nbd-client-reply.cc).
// The request lives in the frame of the coroutine that issued it, which
// waits until `done`.
#pragma once

#include "nbd-client.h"

namespace qemu::nbd {

struct ClientConnection::Request {
    Request(uint16_t t, uint64_t off, uint64_t l) : type(t), offset(off), len(l) {}

    uint64_t cookie = 0;
    uint16_t type;
    uint64_t offset;
    uint64_t len;
    // READ: where the data goes.  WRITE: qiov_offset of the payload.
    IOVector* qiov = nullptr;
    size_t qiov_offset = 0;
    uint64_t received = 0;  // READ: bytes covered by data and hole chunks
    // BLOCK_STATUS: the first extent, once a status chunk arrived.
    bool got_status = false;
    uint64_t ext_len = 0;
    uint32_t ext_flags = 0;
    int ret = 0;  // the first error the server reported, or -EIO
    bool done = false;
    std::coroutine_handle<> waiter;
};

}  // namespace qemu::nbd
