// The `vduse-blk` export type (export/vduse-blk/): a node served as a
// virtio-blk device of the local kernel through VDUSE.  See
// docs/virtio-blk.rst ("VDUSE") and docs/devel/vduse.rst.
#pragma once

namespace qemu {

// Registers the type with the export registry (include/export/export.h).
void vduse_blk_export_register();

}  // namespace qemu
