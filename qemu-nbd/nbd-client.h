// The client side of the NBD handshake that qemu-nbd itself needs, over a
// blocking socket: listing a server's exports (-L, QEMU's
// nbd_receive_export_list()) and opening one export in simple-reply mode
// for the kernel's client (-c, QEMU's nbd_receive_negotiate() with
// NBD_MODE_SIMPLE).  The transmission phase is the kernel's business.
//
// Every function here treats the server as hostile: lengths are checked
// against what was read and against QEMU's limits (4096-byte strings,
// 32 MiB option replies) before anything is allocated or trusted.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qemu/error.h"

namespace qemu::nbd {

// What -L learns about one export.
struct ExportListing {
    std::string name;
    std::string description;
    bool have_info = false;  // NBD_OPT_INFO answered (size and flags valid)
    uint64_t size = 0;
    uint16_t flags = 0;
    uint32_t min_block = 0;  // 0: the server sent no NBD_INFO_BLOCK_SIZE
    uint32_t opt_block = 0;
    uint32_t max_block = 0;
    std::vector<std::string> contexts;
};

struct ExportList {
    bool extended_headers = false;  // "transaction size: 64-bit"
    std::vector<ExportListing> exports;
};

// Negotiates with the server on the connected socket fd (fixed newstyle,
// extended headers else structured replies), then LIST, INFO and
// LIST_META_CONTEXT for each export, then ABORT.  The caller owns and
// closes fd.  Returns false with err set (QEMU's message) on failure.
bool receive_export_list(int fd, ExportList& list, Error& err);

// Prints the list as "qemu-nbd -L" does, on stdout.
void print_export_list(const ExportList& list);

// What the kernel needs to serve an export opened by open_simple_export().
struct SimpleExport {
    uint64_t size = 0;
    uint16_t flags = 0;
};

// Negotiates the export `name` in simple-reply mode (no structured
// replies: Linux's nbd.ko speaks only those) with NBD_OPT_GO, falling back
// to NBD_OPT_EXPORT_NAME when the server does not know GO.  On success the
// socket is in the transmission phase.  false with err set otherwise.
bool open_simple_export(int fd, const std::string& name, SimpleExport& exp, Error& err);

}  // namespace qemu::nbd
