#!/bin/bash
# Writes the seed corpus of fuzz-nbd-server into OUT_DIR: client byte
# streams that get through the handshake to each option and, after
# NBD_OPT_GO or NBD_OPT_EXPORT_NAME, to each command in simple, structured
# and extended mode (the exports are "rw" and "" as the harness offers).
# Generated rather than committed, as make-corpus.sh's images.
#
#   tests/fuzz/make-nbd-corpus.sh OUT_DIR
set -euo pipefail
out=${1:?usage: make-nbd-corpus.sh OUT_DIR}
mkdir -p "$out"
python3 - "$out" <<'EOF'
import struct, sys, os
out = sys.argv[1]
OPTS = 0x49484156454F5054
def opt(o, data=b""):
    return struct.pack(">QII", OPTS, o, len(data)) + data
def name(n):
    return struct.pack(">I", len(n)) + n
def info(n, reqs=()):
    return name(n) + struct.pack(">H", len(reqs)) + b"".join(struct.pack(">H", r) for r in reqs)
def meta(n, queries):
    return name(n) + struct.pack(">I", len(queries)) + b"".join(name(q) for q in queries)
def req(t, off, ln, flags=0, cookie=1, ext=False, payload=b""):
    if ext:
        return struct.pack(">IHHQQQ", 0x21e41c71, flags, t, cookie, off, ln) + payload
    return struct.pack(">IHHQQI", 0x25609513, flags, t, cookie, off, ln) + payload
hello = struct.pack(">I", 3)
cmds = lambda ext: (req(1, 0, 4096, 1, 1, ext, b"\x11" * 4096 if not ext else b"")
                    + req(0, 0, 8192, 0, 2, ext) + req(0, 4096, 512, 4, 3, ext)
                    + req(3, 0, 0, 0, 4, ext) + req(4, 8192, 65536, 1, 5, ext)
                    + req(6, 0, 1 << 20, 2 | 16, 6, ext) + req(5, 0, 65536, 0, 7, ext)
                    + req(7, 0, 1 << 20, 8, 8, ext) + req(9, 0, 0, 0, 9, ext) + req(2, 0, 0, 0, 10, ext))
seeds = {
    "list": hello + opt(3) + opt(6, info(b"rw", [0, 1, 2, 3])) + opt(2),
    "options": hello + opt(5) + opt(8) + opt(8) + opt(99, b"xyz")
               + opt(9, meta(b"rw", [])) + opt(9, meta(b"rw", [b"qemu:"]))
               + opt(10, meta(b"rw", [b"base:allocation", b"qemu:allocation-depth"]))
               + opt(6, info(b"nope")) + opt(2),
    "simple": hello + opt(7, info(b"rw")) + cmds(False),
    "structured": hello + opt(8) + opt(10, meta(b"rw", [b"base:allocation", b"qemu:allocation-depth"]))
                  + opt(7, info(b"rw", [3])) + cmds(False),
    "extended": hello + opt(11) + opt(10, meta(b"rw", [b"base:allocation"])) + opt(7, info(b"rw"))
                + req(1, 0, 4096, 1 | 32, 1, True, b"\x22" * 4096)
                + req(7, 0, 12, 32, 2, True, struct.pack(">QI", 1 << 20, 0))
                + cmds(True),
    "export-name": struct.pack(">I", 1) + opt(1, b"") + req(0, 0, 512) + req(1, 0, 512, 0, 2, False, b"\0" * 512),
    "readonly": hello + opt(8) + opt(7, info(b"")) + req(1, 0, 512, 0, 1, False, b"\0" * 512) + req(4, 0, 512),
}
for k, v in seeds.items():
    with open(os.path.join(out, k), "wb") as f:
        f.write(v)
EOF
