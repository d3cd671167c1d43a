#!/usr/bin/env python3
# Seeds for tests/fuzz/fuzz-virtqueue: driver memories holding well-formed
# virtio-blk requests (every type, direct and indirect chains, both
# devices, event index on and off) and a few malformed chains, in the
# input layout described at the top of fuzz-virtqueue.cc.
# Usage: make-virtqueue-corpus.py OUT_DIR
import os
import struct
import sys

GUEST_BASE = 0x10000
NUM = 32
DESC, AVAIL = 0, 16 * NUM
USED = (AVAIL + 6 + 2 * NUM + 3) & ~3
NEXT, WRITE, INDIRECT = 1, 2, 4

T = dict(IN=0, OUT=1, FLUSH=4, GET_ID=8, DISCARD=11, WRITE_ZEROES=13, ZONE_APPEND=15,
         ZONE_REPORT=16, ZONE_OPEN=18, ZONE_CLOSE=20, ZONE_FINISH=22, ZONE_RESET=24,
         ZONE_RESET_ALL=26)
ZONE = 1 << 20 >> 9  # the zoned image's zone, in sectors


class Memory:
    def __init__(self):
        self.mem = bytearray(USED + 6 + 8 * NUM)
        self.next_desc = 0
        self.avail_idx = 0

    def alloc(self, data):
        at = (len(self.mem) + 15) & ~15
        self.mem.extend(b"\0" * (at - len(self.mem)))
        self.mem.extend(data)
        return GUEST_BASE + at

    def desc(self, table, i, addr, length, flags, nxt):
        struct.pack_into("<QIHH", self.mem, table + 16 * i, addr, length, flags, nxt)

    def chain(self, bufs, indirect=False):
        """bufs: (bytes, device_writable); returns the head."""
        head = self.next_desc
        entries = []
        for i, (data, writable) in enumerate(bufs):
            last = i + 1 == len(bufs)
            entries.append((self.alloc(data), len(data),
                            (WRITE if writable else 0) | (0 if last else NEXT)))
        if indirect:
            table = self.alloc(b"\0" * 16 * len(entries)) - GUEST_BASE
            for i, (a, n, f) in enumerate(entries):
                self.desc(table, i, a, n, f, i + 1 if f & NEXT else 0)
            self.desc(DESC, head, GUEST_BASE + table, 16 * len(entries), INDIRECT, 0)
            self.next_desc += 1
        else:
            for a, n, f in entries:
                i = self.next_desc
                self.next_desc += 1
                self.desc(DESC, i, a, n, f, self.next_desc if f & NEXT else 0)
        self.publish(head)
        return head

    def publish(self, head):
        struct.pack_into("<H", self.mem, AVAIL + 4 + 2 * (self.avail_idx % NUM), head)
        self.avail_idx += 1
        struct.pack_into("<H", self.mem, AVAIL + 2, self.avail_idx)

    def request(self, type_, sector, out=b"", in_len=0, indirect=False):
        hdr = struct.pack("<IIQ", type_, 0, sector)
        bufs = [(hdr, False)]
        if out:
            bufs.append((out, False))
        if in_len:
            bufs.append((b"\xa5" * in_len, True))
        bufs.append((b"\xff", True))
        self.chain(bufs, indirect)


def seed(path, flags, build):
    m = Memory()
    build(m)
    with open(path, "wb") as f:
        f.write(bytes([5, flags]) + struct.pack("<Q", 0xFFFFFFFFFFFFFFFF) + bytes(m.mem))


def segment(sector, num, flags):
    return struct.pack("<QII", sector, num, flags)


def plain(m, indirect=False):
    m.request(T["OUT"], 8, b"\x11" * 4096, indirect=indirect)
    m.request(T["IN"], 8, in_len=4096, indirect=indirect)
    m.request(T["FLUSH"], 0, indirect=indirect)
    m.request(T["GET_ID"], 0, in_len=20, indirect=indirect)


def discard(m):
    m.request(T["DISCARD"], 0, segment(0, 8, 0))
    m.request(T["WRITE_ZEROES"], 0, segment(16, 8, 1))
    m.request(T["WRITE_ZEROES"], 0, segment(16, 8, 0) * 2)


def zoned(m, indirect=False):
    m.request(T["ZONE_REPORT"], 0, in_len=64 + 64 * 8, indirect=indirect)
    m.request(T["OUT"], ZONE, b"\x22" * 4096, indirect=indirect)
    m.request(T["ZONE_APPEND"], ZONE, b"\x33" * 4096, in_len=15, indirect=indirect)
    for t in ("ZONE_OPEN", "ZONE_CLOSE", "ZONE_FINISH", "ZONE_RESET"):
        m.request(T[t], 2 * ZONE, indirect=indirect)
    m.request(T["ZONE_REPORT"], ZONE + 5, in_len=64 + 64 * 2, indirect=indirect)
    m.request(T["ZONE_RESET_ALL"], 0, indirect=indirect)


def loop(m):
    m.desc(DESC, 0, GUEST_BASE + 0x800, 16, NEXT, 1)
    m.desc(DESC, 1, GUEST_BASE + 0x800, 16, NEXT, 0)
    m.mem.extend(b"\0" * (0x900 - len(m.mem)))
    m.publish(0)


def nested_indirect(m):
    inner = m.alloc(struct.pack("<QIHH", GUEST_BASE + 0x800, 16, 0, 0)) - GUEST_BASE
    outer = m.alloc(struct.pack("<QIHH", GUEST_BASE + inner, 16, INDIRECT, 0))
    m.desc(DESC, 0, outer, 16, INDIRECT, 0)
    m.publish(0)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    seed(f"{out}/plain", 0, plain)
    seed(f"{out}/plain-indirect-event-idx", 1, lambda m: plain(m, True))
    seed(f"{out}/plain-4k-no-kicks", 4 | 8, plain)
    seed(f"{out}/discard", 0, discard)
    seed(f"{out}/zoned", 2 | 1, zoned)
    seed(f"{out}/zoned-indirect", 2, lambda m: zoned(m, True))
    seed(f"{out}/loop", 0, loop)
    seed(f"{out}/nested-indirect", 0, nested_indirect)


main()
