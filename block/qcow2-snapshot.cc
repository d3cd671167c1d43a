// The qcow2 snapshot table: parsing with validation, and serialising.
#include <cstring>

#include "block/qcow2.h"
#include "qemu/bswap.h"

namespace qemu::qcow2 {

namespace {
constexpr size_t kFixedEntryBytes = 40;
constexpr uint32_t kMaxExtraData = 1024;  // QEMU's limit
}  // namespace

bool parse_snapshot_table(const uint8_t* buf, size_t len, uint32_t count, uint64_t file_size,
                          uint32_t cluster_bits, std::vector<Snapshot>& out, Error& err)
{
    out.clear();
    size_t pos = 0;
    uint64_t cluster_mask = (1ULL << cluster_bits) - 1;
    for (uint32_t i = 0; i < count; i++) {
        if (len - pos < kFixedEntryBytes) {
            err.set("Snapshot table is truncated");
            return false;
        }
        const uint8_t* e = buf + pos;
        Snapshot sn;
        sn.l1_table_offset = load_be64(e);
        sn.l1_size = load_be32(e + 8);
        uint16_t id_len = load_be16(e + 12);
        uint16_t name_len = load_be16(e + 14);
        sn.date_sec = load_be32(e + 16);
        sn.date_nsec = load_be32(e + 20);
        sn.vm_clock_nsec = load_be64(e + 24);
        sn.vm_state_size = load_be32(e + 32);
        uint32_t extra_len = load_be32(e + 36);
        if (extra_len > kMaxExtraData) {
            err.set("Too much extra metadata in snapshot table entry %u", i);
            return false;
        }
        size_t entry_len = kFixedEntryBytes + extra_len + id_len + name_len;
        if (len - pos < entry_len) {
            err.set("Snapshot table is truncated");
            return false;
        }
        const uint8_t* extra = e + kFixedEntryBytes;
        sn.extra_data.assign(extra, extra + extra_len);
        if (extra_len >= 8) {
            sn.vm_state_size = load_be64(extra);
        }
        if (extra_len >= 16) {
            sn.disk_size = load_be64(extra + 8);
        }
        sn.id.assign(reinterpret_cast<const char*>(extra + extra_len), id_len);
        sn.name.assign(reinterpret_cast<const char*>(extra + extra_len + id_len), name_len);
        if ((sn.l1_table_offset & cluster_mask) || sn.l1_size > kMaxL1Bytes / 8 ||
            sn.l1_table_offset + uint64_t(sn.l1_size) * 8 > file_size + cluster_mask) {
            err.set("Snapshot L1 table offset invalid");
            return false;
        }
        pos += (entry_len + 7) & ~size_t(7);
        out.push_back(std::move(sn));
    }
    return true;
}

}  // namespace qemu::qcow2
