// Until the NBD server (branch nbd-server) is merged, qemu-nbd has no
// server mode and says so.
#include "qemu-nbd.h"
#include "qemu/error.h"

namespace qemu::nbd_tool {

int run_server(const Options&, void (*)())
{
    error_report("serving an image needs the NBD server, which this build does not have yet");
    return 1;
}

}  // namespace qemu::nbd_tool
