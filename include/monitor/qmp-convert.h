// From QMP arguments to the block layer's flat options: a boxed command's
// arguments (blockdev-add, block-export-add) become the QDict the same
// --blockdev / --export option would give, and the checks both share.
#pragma once

#include <nlohmann/json.hpp>

#include "qemu/error.h"
#include "qemu/option.h"

namespace qemu {

// Flattens args (a JSON object) into dotted keys, as json_parse_flat does
// for a "{...}" option.  false and err set when it cannot.
bool qmp_args_to_qdict(const nlohmann::ordered_json& args, QDict& out, Error& err);

// The checks QEMU's QAPI visitor makes on BlockdevOptions before a driver
// sees them: "Parameter 'driver' is missing", "Parameter 'driver' does not
// accept value 'x'" (for --blockdev and blockdev-add alike).
bool blockdev_options_check(const QDict& opts, Error& err);

}  // namespace qemu
