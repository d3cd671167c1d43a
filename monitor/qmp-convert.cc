// QMP arguments as flat options (see include/monitor/qmp-convert.h).
#include "monitor/qmp-convert.h"

#include "block/block_int.h"

namespace qemu {

bool qmp_args_to_qdict(const nlohmann::ordered_json& args, QDict& out, Error& err)
{
    // One parser for both ways in: the command line's JSON options and
    // QMP's arguments give the same dictionary.
    return json_parse_flat(out, args.dump(), err);
}

bool blockdev_options_check(const QDict& opts, Error& err)
{
    const std::string* driver = opts.get("driver");
    if (!driver) {
        err.set("Parameter 'driver' is missing");
        return false;
    }
    if (!bdrv_find_driver(*driver)) {
        err.set("Parameter 'driver' does not accept value '%s'", driver->c_str());
        return false;
    }
    return true;
}

}  // namespace qemu
