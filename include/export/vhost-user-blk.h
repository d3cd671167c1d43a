// The `vhost-user-blk` export type (QEMU's block/export/vhost-user-blk-server.c):
//
//   --export type=vhost-user-blk,id=e0,node-name=n0,addr.type=unix,addr.path=SOCK,
//            writable=on[,logical-block-size=N][,num-queues=N]
//
// The export listens on a Unix socket (addr.type=unix, or fd for an
// inherited listening socket) and serves one vhost-user front end at a
// time (QEMU's -device vhost-user-blk-pci, vhost-user-test-device-pci):
// a virtio-blk device (hw/virtio-blk) whose virtqueues live in the front
// end's shared memory.  When the front end goes away the export listens
// again, and a new connection starts over (QEMU's reconnect).
#pragma once

namespace qemu {

// Registers the driver with the export registry; idempotent.
void vhost_user_blk_export_register();

}  // namespace qemu
