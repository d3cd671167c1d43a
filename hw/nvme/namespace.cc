// Namespaces: which block nodes can be one, their logical block size and
// identifiers (hw/nvme/nvme-int.h).
#include <algorithm>
#include <cstring>

#include "hw/nvme/nvme-int.h"

namespace qemu {

namespace {

// FNV-1a, 64 bits: a stable derivation of identifiers from names, so that
// a namespace keeps its UUID across restarts of the daemon.
uint64_t fnv1a(const std::string& s, uint64_t h)
{
    for (unsigned char c : s) {
        h = (h ^ c) * 0x100000001b3ull;
    }
    return h;
}

bool parse_uuid(const std::string& text, uint8_t out[16])
{
    static const int kDashes[] = {8, 13, 18, 23};
    if (text.size() != 36) {
        return false;
    }
    unsigned n = 0;
    for (size_t i = 0; i < text.size(); i++) {
        bool dash_here = false;
        for (int d : kDashes) {
            dash_here |= size_t(d) == i;
        }
        if (dash_here) {
            if (text[i] != '-') {
                return false;
            }
            continue;
        }
        int v = -1;
        char c = text[i];
        if (c >= '0' && c <= '9') {
            v = c - '0';
        } else if (c >= 'a' && c <= 'f') {
            v = c - 'a' + 10;
        } else if (c >= 'A' && c <= 'F') {
            v = c - 'A' + 10;
        }
        if (v < 0) {
            return false;
        }
        out[n / 2] = uint8_t(n % 2 ? out[n / 2] | v : v << 4);
        n++;
    }
    return true;
}

// A name-based UUID (RFC 4122 layout, version 8 "custom") from the
// subsystem NQN and the NSID.
void derive_uuid(const std::string& subnqn, uint32_t nsid, uint8_t out[16])
{
    std::string name = subnqn + "/" + std::to_string(nsid);
    store_be64(out, fnv1a(name, 0xcbf29ce484222325ull));
    store_be64(out + 8, fnv1a(name, 0x84222325cbf29ce4ull));
    out[6] = uint8_t((out[6] & 0x0f) | 0x80);
    out[8] = uint8_t((out[8] & 0x3f) | 0x80);
}

bool check_zoned(const BlockLimits& bl, uint64_t length, uint32_t lbs, Error& err)
{
    if (bl.zoned == BlockZoneModel::HostAware) {
        // ZNS knows sequential-write-required zones only.
        err.set("a host-aware zoned node cannot be a ZNS namespace");
        return false;
    }
    if (bl.zone_size == 0 || bl.zone_size % lbs || bl.zone_capacity == 0 ||
        bl.zone_capacity % lbs) {
        err.set("zone size %llu and capacity %llu must be multiples of the logical block size %u",
                (unsigned long long)bl.zone_size, (unsigned long long)bl.zone_capacity, lbs);
        return false;
    }
    if (length % bl.zone_size) {
        // Identify reports one zone size; a short last zone would have to
        // be hidden (QEMU) or lie about its size.
        err.set("the node's size %llu is not a multiple of its zone size %llu",
                (unsigned long long)length, (unsigned long long)bl.zone_size);
        return false;
    }
    if (bl.max_append_bytes != 0 && bl.max_append_bytes < 4096) {
        // ZASL counts 4 KiB pages; 0 would mean "no limit".
        err.set("zone append limit %llu is below 4096 bytes, which ZNS cannot express",
                (unsigned long long)bl.max_append_bytes);
        return false;
    }
    if (bl.zone_desc_ext_size % 64 || bl.zone_desc_ext_size / 64 > 255) {
        err.set("zone descriptor extension size %u is not a multiple of 64 up to 16320",
                bl.zone_desc_ext_size);
        return false;
    }
    return true;
}

}  // namespace

NvmeNamespace::NvmeNamespace(BlockBackend& blk, uint32_t nsid, unsigned lba_shift, bool zoned,
                             const uint8_t uuid[16])
    : blk_(blk), nsid_(nsid), lba_shift_(lba_shift), zoned_(zoned)
{
    memcpy(uuid_, uuid, 16);
}

void NvmeNamespace::nguid(uint8_t out[16]) const
{
    // The UUID's bytes in reverse: unique, stable and distinct from it.
    for (int i = 0; i < 16; i++) {
        out[i] = uuid_[15 - i];
    }
}

void NvmeNamespace::eui64(uint8_t out[8]) const
{
    for (int i = 0; i < 8; i++) {
        out[i] = uint8_t(uuid_[i] ^ uuid_[i + 8]);
    }
}

std::shared_ptr<NvmeNamespace> nvme_namespace_create(BlockBackend& blk, uint32_t nsid,
                                                     const NvmeNamespaceOptions& opts,
                                                     const std::string& subnqn, Error& err)
{
    const BlockLimits& bl = blk.bs()->limits();
    uint32_t lbs = opts.logical_block_size;
    if (lbs == 0) {
        lbs = std::max<uint32_t>(512, (bl.request_alignment + 511) / 512 * 512);
    }
    if (lbs != 512 && lbs != 4096) {
        err.set("logical block size %u is not 512 or 4096", lbs);
        return nullptr;
    }
    if (lbs % bl.request_alignment) {
        err.set("logical block size %u is not a multiple of the node's request alignment %u", lbs,
                bl.request_alignment);
        return nullptr;
    }
    uint64_t length = blk.getlength();
    if (length == 0 || length % lbs) {
        err.set("the node's size %llu is not a non-zero multiple of the logical block size %u",
                (unsigned long long)length, lbs);
        return nullptr;
    }
    bool zoned = bl.zoned != BlockZoneModel::None;
    if (zoned && !check_zoned(bl, length, lbs, err)) {
        return nullptr;
    }
    uint8_t uuid[16];
    if (opts.uuid.empty()) {
        derive_uuid(subnqn, nsid, uuid);
    } else if (!parse_uuid(opts.uuid, uuid)) {
        err.set("'%s' is not a UUID", opts.uuid.c_str());
        return nullptr;
    }
    return std::make_shared<NvmeNamespace>(blk, nsid, lbs == 512 ? 9 : 12, zoned, uuid);
}

}  // namespace qemu
