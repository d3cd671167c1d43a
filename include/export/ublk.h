// The `ublk` export type (export/ublk/): a node served to the local kernel
// as /dev/ublkbN through Linux's userspace block driver.  See
// docs/virtio-blk.rst ("ublk") and docs/devel/ublk.rst.
#pragma once

namespace qemu {

// Registers the type with the export registry (include/export/export.h).
void ublk_export_register();

}  // namespace qemu
