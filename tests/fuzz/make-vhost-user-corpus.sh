#!/bin/bash
# Seeds for fuzz-vhost-user (see tests/fuzz/fuzz-vhost-user.cc for the
# input format): the message flow QEMU sends to start a ring, with guest
# memory holding a split ring of 4 descriptors and one virtio-blk read,
# write or flush request, so that the fuzzer starts from a kicked ring.
#
#   tests/fuzz/make-vhost-user-corpus.sh OUT_DIR
set -euo pipefail
out=${1:?usage: make-vhost-user-corpus.sh OUT_DIR}
mkdir -p "$out"
python3 - "$out" <<'PY'
import struct, sys, os
out = sys.argv[1]
UVA = 0x10000000

def msg(req, payload=b"", fds=0, flags=1):
    return bytes([fds]) + struct.pack("<III", req, flags, len(payload)) + payload

def guest(req_type, data_len, in_len):
    m = bytearray(4096)
    # desc table at 0 (4 × 16), avail at 0x100, used at 0x200
    descs = [(0x400, 16, 1, 1)]
    if req_type == 1:
        descs += [(0x800, data_len, 1, 2), (0xc00, 1, 2, 0)]
    else:
        descs += [(0x800, in_len, 2, 0)]
    for i, (addr, ln, fl, nx) in enumerate(descs):
        struct.pack_into("<QIHH", m, 16 * i, addr, ln, fl, nx)
    struct.pack_into("<HHH", m, 0x100, 0, 1, 0)          # avail: flags, idx 1, ring[0] = 0
    struct.pack_into("<IIQ", m, 0x400, req_type, 0, 8)   # out header: type, ioprio, sector
    return bytes(m)

for name, t, dl, il in (("read", 0, 0, 513), ("write", 1, 512, 1), ("flush", 4, 0, 1)):
    s = msg(1)                                               # GET_FEATURES
    s += msg(2, struct.pack("<Q", (1 << 32) | (1 << 29) | (1 << 28) | (1 << 9)))
    s += msg(3)                                              # SET_OWNER
    region = struct.pack("<QQQQ", 0, 256 * 1024, UVA, 0)
    s += msg(5, struct.pack("<II", 1, 0) + region, fds=1) + guest(t, dl, il)
    s += msg(8, struct.pack("<II", 0, 4))                    # SET_VRING_NUM
    s += msg(10, struct.pack("<II", 0, 0))                   # SET_VRING_BASE
    s += msg(9, struct.pack("<IIQQQQ", 0, 0, UVA, UVA + 0x200, UVA + 0x100, 0))
    s += msg(13, struct.pack("<Q", 0), fds=0x11)             # SET_VRING_CALL (eventfd)
    s += msg(12, struct.pack("<Q", 0), fds=0x11)             # SET_VRING_KICK: starts the ring
    s += msg(24, struct.pack("<III", 0, 60, 0) + bytes(60))  # GET_CONFIG
    s += msg(11, struct.pack("<II", 0, 0))                   # GET_VRING_BASE
    open(os.path.join(out, "flow-" + name), "wb").write(s)
PY
