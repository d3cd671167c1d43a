// The `nvme-tcp` export type: block nodes served as NVMe namespaces over
// NVMe/TCP (docs/nvme.rst, docs/devel/nvme-tcp.rst).
//
//   --export type=nvme-tcp,id=e0,node-name=n0,writable=on,nqn=NQN
//            [,addr.type=inet,addr.host=H,addr.port=P][,nsid=N][,serial=S]
//            [,logical-block-size=512|4096][,uuid=U]
//
// Exports with the same nqn are namespaces of one subsystem; exports on the
// same address share one listener.  One NvmeTarget per AioContext holds the
// subsystems of the exports that run there (the default: the main loop's;
// an export with iothread= gets that thread's target, and its nqn and
// address cannot be shared with exports of another context).  Deleting an
// export removes its namespace; the last namespace of a subsystem takes
// the subsystem (and its hosts' connections) with it, the last subsystem of
// an address closes the listener.
#pragma once

namespace qemu {

// Registers the `nvme-tcp` BlockExportDriver.  Idempotent.
void nvme_tcp_export_register();

}  // namespace qemu
