// The nbd driver's file names (block/nbd-uri.cc).
#pragma once

#include <optional>
#include <string>

#include "qemu/error.h"
#include "qemu/option.h"
#include "qemu/sockets.h"

namespace qemu::nbd {

// Turns an nbd file name (URI or legacy form) into the driver's options
// (server.type, server.host/port or server.path, export), as QEMU's
// nbd_parse_filename.  false with QEMU's message ("No valid URL
// specified", "error parsing address 'X'") in err.
bool parse_filename(const std::string& filename, QDict& options, Error& err);

// QEMU's name for a node: nbd+unix:///EXPORT?socket=PATH,
// nbd://HOST:PORT/EXPORT (without /EXPORT when there is none); "" for an
// address a URI cannot express (an inherited fd).
std::string uri_for(const SocketAddress& addr, const std::optional<std::string>& exp);

}  // namespace qemu::nbd
