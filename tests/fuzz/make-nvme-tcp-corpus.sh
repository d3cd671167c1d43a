#!/bin/bash
# Writes the seed corpus of fuzz-nvme-tcp into OUT_DIR: host byte streams
# that get through ICReq (with and without digests) and Connect to each
# PDU kind: property get/set, Identify, reads, in-capsule writes, writes
# that answer their R2T (TTAG 0) with one or two H2CData PDUs.
# Generated rather than committed, as make-nbd-corpus.sh's.
#
#   tests/fuzz/make-nvme-tcp-corpus.sh OUT_DIR
set -euo pipefail
out=${1:?usage: make-nvme-tcp-corpus.sh OUT_DIR}
mkdir -p "$out"
python3 - "$out" <<'PY'
import struct, sys, os
out = sys.argv[1]
NQN = b"nqn.2026-01.org.qemu-zoned:fuzz"
def crc32c(data):
    crc = 0xffffffff
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82f63b78 if crc & 1 else 0)
    return crc ^ 0xffffffff
def icreq(hd=False, dd=False):
    return struct.pack("<BBBBIHBBI", 0, 0, 128, 0, 128, 0, 0, hd | dd << 1, 0) + bytes(112)
def sqe(opc, cid, nsid=0, sgl=(0x5a, 0, 0), cdw=None, raw=None):
    s = bytearray(64)
    s[0] = opc; s[1] = 0x40
    struct.pack_into("<HI", s, 2, cid, nsid)
    t, addr, ln = sgl
    struct.pack_into("<QI", s, 24, addr, ln); s[39] = t
    for n, v in (cdw or {}).items():
        struct.pack_into("<I", s, 4 * n, v)
    for off, b in (raw or {}).items():
        s[off:off + len(b)] = b
    return bytes(s)
def capsule(s, data=b"", hd=False, dd=False):
    hb = 72 + (4 if hd else 0)
    flags = (1 if hd else 0) | (2 if dd and data else 0)
    plen = hb + len(data) + (4 if dd and data else 0)
    h = struct.pack("<BBBBI", 4, flags, 72, hb if data else 0, plen) + s
    if hd: h += struct.pack("<I", crc32c(h))
    if data:
        h += data
        if dd: h += struct.pack("<I", crc32c(data))
    return h
def h2c(cid, ttag, off, data, last):
    return struct.pack("<BBBBIHHII4x", 6, 4 if last else 0, 24, 24, 24 + len(data), cid, ttag, off, len(data)) + data
def connect(qid, cid=0, hd=False, dd=False, cntlid=0xffff):
    d = bytearray(1024)
    d[0:16] = bytes(range(16)); struct.pack_into("<H", d, 16, cntlid)
    d[256:256 + len(NQN)] = NQN; d[512:512 + 10] = b"nqn.fuzzer"
    s = sqe(0x7f, cid, raw={4: b"\x01", 42: struct.pack("<HH", qid, 31)}, sgl=(0x01, 0, 1024))
    return capsule(s, bytes(d), hd, dd)
def prop_get(cid, off, eight=1):
    return capsule(sqe(0x7f, cid, raw={4: b"\x04", 40: bytes([eight]), 44: struct.pack("<I", off)}))
def prop_set(cid, off, val):
    return capsule(sqe(0x7f, cid, raw={4: b"\x00", 44: struct.pack("<IQ", off, val)}))
def identify(cid, cns, nsid=0, csi=0):
    return capsule(sqe(6, cid, nsid, sgl=(0x5a, 0, 4096), cdw={10: cns, 11: csi << 24}))
admin = icreq() + connect(0) + prop_get(1, 0) + prop_set(2, 0x14, 0x460061) + prop_get(3, 0x1c, 0)
seeds = {
    "icreq": icreq(),
    "icreq-digests": icreq(True, True) + connect(0, 0, True, True),
    "admin": admin + identify(4, 1) + identify(5, 2) + identify(6, 0, 1) + identify(7, 3, 1),
    "io-read": icreq() + connect(1, cntlid=0) +
        capsule(sqe(2, 9, 1, sgl=(0x5a, 0, 8192), cdw={10: 0, 11: 0, 12: 15})),
    "io-write-inline": icreq() + connect(1, cntlid=0) +
        capsule(sqe(1, 9, 1, sgl=(0x01, 0, 4096), cdw={12: 7}), b"\xab" * 4096),
    "io-write-r2t": icreq() + connect(1, cntlid=0) +
        capsule(sqe(1, 9, 1, sgl=(0x5a, 0, 16384), cdw={12: 31})) +
        h2c(9, 0, 0, b"\x11" * 8192, False) + h2c(9, 0, 8192, b"\x22" * 8192, True),
    "admin-write-r2t": admin + capsule(sqe(1, 9, 1, sgl=(0x5a, 0, 16384), cdw={12: 31})) +
        h2c(9, 0, 0, b"\x33" * 16384, True),
    "termreq": icreq() + struct.pack("<BBBBIH", 2, 0, 24, 0, 24, 1) + bytes(14),
}
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
PY
