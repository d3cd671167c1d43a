// Persistent dirty bitmaps: QEMU's bitmaps extension (docs/interop/qcow2.txt
// in QEMU, "Bitmaps extension"; docs/devel/qcow2.rst has our design).
//
// We keep the bitmaps of an image valid rather than dropping them: before
// guest data first changes, every bitmap that the change concerns is
// marked "in use" on disk (so that after a crash readers know it is
// stale); the changes are collected in memory; at close each marked bitmap
// is written anew, with its old bits and the new ones, a new directory
// without the marks replaces the old one, and the old clusters are freed.
// This is what QEMU does for the bitmaps it loads, except that we mark and
// rewrite only bitmaps that change.
#include <cassert>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <set>

#include "qcow2.h"
#include "qemu/bswap.h"

namespace qemu::qcow2 {

namespace {

// QEMU's limits (block/qcow2-bitmap.c), which decide what it can load.
constexpr uint32_t kMaxBitmaps = 65535;
constexpr uint64_t kMaxDirectoryBytes = 1024 * uint64_t(kMaxBitmaps);
constexpr uint32_t kMaxTableEntries = 0x8000000;
constexpr uint64_t kMaxBitmapBytes = 0x20000000;  // bitmap data per bitmap
constexpr uint32_t kMinGranularityBits = 9;
constexpr uint32_t kMaxGranularityBits = 31;
constexpr uint32_t kMaxNameBytes = 1023;
constexpr uint64_t kDirEntryFixedBytes = 24;
constexpr uint64_t kTableEntryReservedMask = 0xff000000000001feULL;
constexpr uint8_t kTypeDirtyTracking = 1;
constexpr uint32_t kKnownFlags = kBitmapFlagInUse | kBitmapFlagAuto;
constexpr size_t kExtensionBytes = 24;

uint64_t dir_entry_bytes(uint64_t name_len, uint64_t extra_len)
{
    return (kDirEntryFixedBytes + name_len + extra_len + 7) & ~7ULL;
}

uint64_t round_up(uint64_t value, uint64_t align)
{
    return (value + align - 1) / align * align;
}

// Bits of a bitmap over a disk of `disk_size` bytes.
uint64_t bitmap_bits(uint64_t disk_size, uint8_t granularity_bits)
{
    return (disk_size + (1ULL << granularity_bits) - 1) >> granularity_bits;
}

// Sets bits [first, last] of a bit vector.
void set_bits(std::vector<uint64_t>& words, uint64_t first, uint64_t last)
{
    for (uint64_t w = first / 64; w <= last / 64; w++) {
        uint64_t lo = w == first / 64 ? first % 64 : 0;
        uint64_t hi = w == last / 64 ? last % 64 : 63;
        uint64_t mask = (hi == 63 ? ~0ULL : (1ULL << (hi + 1)) - 1) & ~((1ULL << lo) - 1);
        words[w] |= mask;
    }
}

// Clears every bit from `bit` on in a little-endian bitmap of `len` bytes.
void clear_bits_from(uint8_t* data, size_t len, uint64_t bit)
{
    if (bit >= uint64_t(len) * 8) {
        return;
    }
    size_t byte = bit / 8;
    data[byte] &= uint8_t((1u << (bit % 8)) - 1);
    memset(data + byte + 1, 0, len - byte - 1);
}

std::vector<uint8_t> serialize_directory(const std::vector<Qcow2State::PersistentBitmap>& bitmaps)
{
    std::vector<uint8_t> dir;
    for (const auto& bm : bitmaps) {
        const BitmapEntry& e = bm.entry;
        size_t at = dir.size();
        dir.resize(at + dir_entry_bytes(e.name.size(), 0), 0);
        uint8_t* p = dir.data() + at;
        store_be64(p, e.table_offset);
        store_be32(p + 8, e.table_size);
        store_be32(p + 12, e.flags);
        p[16] = kTypeDirtyTracking;
        p[17] = e.granularity_bits;
        store_be16(p + 18, uint16_t(e.name.size()));
        store_be32(p + 20, 0);
        memcpy(p + kDirEntryFixedBytes, e.name.data(), e.name.size());
    }
    return dir;
}

HeaderExtension* find_extension(Header& h, uint32_t magic)
{
    for (HeaderExtension& e : h.extensions) {
        if (e.magic == magic) {
            return &e;
        }
    }
    return nullptr;
}

}  // namespace

bool parse_bitmaps_extension(const std::vector<uint8_t>& data, uint32_t cluster_bits,
                             uint64_t file_size, BitmapsExtension& out, Error& err)
{
    if (data.size() != kExtensionBytes) {
        err.set("bitmaps_ext: Invalid extension length");
        return false;
    }
    if (load_be32(data.data() + 4) != 0) {
        err.set("bitmaps_ext: Reserved field is not zero");
        return false;
    }
    out.nb_bitmaps = load_be32(data.data());
    out.dir_size = load_be64(data.data() + 8);
    out.dir_offset = load_be64(data.data() + 16);
    if (out.nb_bitmaps > kMaxBitmaps) {
        err.set("bitmaps_ext: Image has %u bitmaps, exceeding the QEMU supported maximum of %u",
                out.nb_bitmaps, kMaxBitmaps);
        return false;
    }
    if (out.nb_bitmaps == 0) {
        err.set("found bitmaps extension with zero bitmaps");
        return false;
    }
    const uint64_t cs = 1ULL << cluster_bits;
    if (out.dir_offset % cs) {
        err.set("bitmaps_ext: invalid bitmap directory offset");
        return false;
    }
    if (out.dir_size > kMaxDirectoryBytes) {
        err.set("bitmaps_ext: bitmap directory size (%llu) exceeds the maximum supported size (%llu)",
                (unsigned long long)out.dir_size, (unsigned long long)kMaxDirectoryBytes);
        return false;
    }
    if (out.dir_size == 0) {
        err.set("Requested bitmap directory size is zero");
        return false;
    }
    if (out.dir_offset == 0 || out.dir_offset > round_up(file_size, cs) ||
        out.dir_size > round_up(file_size, cs) - out.dir_offset) {
        err.set("bitmaps_ext: the bitmap directory lies outside the image file");
        return false;
    }
    return true;
}

bool parse_bitmap_directory(const uint8_t* dir, uint64_t size, uint32_t count,
                            uint32_t cluster_bits, uint64_t disk_size,
                            std::vector<BitmapEntry>& out, Error& err)
{
    const uint64_t cs = 1ULL << cluster_bits;
    out.clear();
    uint64_t pos = 0;
    while (pos < size) {
        if (size - pos < kDirEntryFixedBytes) {
            err.set("Broken bitmap directory");
            return false;
        }
        if (out.size() == count) {
            err.set("More bitmaps found than specified in header extension");
            return false;
        }
        const uint8_t* p = dir + pos;
        BitmapEntry e;
        e.table_offset = load_be64(p);
        e.table_size = load_be32(p + 8);
        e.flags = load_be32(p + 12);
        uint8_t type = p[16];
        e.granularity_bits = p[17];
        uint16_t name_size = load_be16(p + 18);
        uint32_t extra_size = load_be32(p + 20);
        uint64_t entry_bytes = dir_entry_bytes(name_size, extra_size);
        if (entry_bytes > size - pos) {
            err.set("Broken bitmap directory");
            return false;
        }
        if (extra_size != 0) {
            err.set("Bitmap extra data is not supported");
            return false;
        }
        e.name.assign(reinterpret_cast<const char*>(p + kDirEntryFixedBytes), name_size);
        // QEMU's check_dir_entry(): a stale (in use) bitmap may be too small
        // for the disk (it was not saved after a resize), a valid one not.
        uint64_t data_bytes = uint64_t(e.table_size) * cs;
        bool bad = e.table_size == 0 || e.table_offset == 0 || e.table_offset % cs ||
                   e.table_size > kMaxTableEntries || e.granularity_bits > kMaxGranularityBits ||
                   e.granularity_bits < kMinGranularityBits || (e.flags & ~kKnownFlags) ||
                   name_size > kMaxNameBytes || type != kTypeDirtyTracking ||
                   data_bytes > kMaxBitmapBytes ||
                   (!(e.flags & kBitmapFlagInUse) &&
                    disk_size > ((data_bytes * 8) << e.granularity_bits));
        if (bad) {
            err.set("Bitmap '%s' doesn't satisfy the constraints", e.name.c_str());
            return false;
        }
        out.push_back(std::move(e));
        pos += entry_bytes;
    }
    if (out.size() != count) {
        err.set("Less bitmaps found than specified in header extension");
        return false;
    }
    return true;
}

bool bitmap_table_entry_valid(uint64_t entry, uint32_t cluster_bits, uint64_t file_size)
{
    const uint64_t cs = 1ULL << cluster_bits;
    if (entry & kTableEntryReservedMask) {
        return false;
    }
    uint64_t offset = entry & kBitmapTableOffsetMask;
    if (offset == 0) {
        return true;
    }
    // With a data cluster, the "all ones" bit is reserved too.
    return !(entry & kBitmapTableAllOnes) && offset % cs == 0 &&
           offset + cs <= round_up(file_size, cs);
}

uint64_t bitmap_table_entries(uint64_t disk_size, uint8_t granularity_bits, uint32_t cluster_bits)
{
    // The data is a whole number of 64-bit words (QEMU serialises its
    // bitmaps word by word), in clusters.
    uint64_t bytes = (bitmap_bits(disk_size, granularity_bits) + 63) / 64 * 8;
    return (bytes + (1ULL << cluster_bits) - 1) >> cluster_bits;
}

Task<int> Qcow2State::bitmaps_open(Error& err)
{
    bitmaps_.clear();
    bitmaps_ext_ = BitmapsExtension{};
    auto it = std::find_if(header_.extensions.begin(), header_.extensions.end(),
                           [](const HeaderExtension& e) { return e.magic == EXT_BITMAPS; });
    if (it == header_.extensions.end()) {
        co_return 0;
    }
    if (!(header_.autoclear_features & AUTOCLEAR_BITMAPS)) {
        // A writer without bitmap support had the image (or it is v2, which
        // cannot say): the bitmaps are garbage, their clusters leaked.
        if (header_.version < 3) {
            error_report("warning: This qcow2 v2 image contains bitmaps, but they may have been "
                         "modified by a program without persistent bitmap support; so now they "
                         "must all be considered inconsistent");
        } else {
            error_report("warning: a program lacking bitmap support modified this file, so all "
                         "bitmaps are now considered inconsistent");
        }
        report_plain("Some clusters may be leaked, run 'qemu-img check -r' on the image file "
                        "to fix.");
        if (!read_only()) {
            header_.extensions.erase(it);
            int ret = co_await rewrite_header(err);
            if (ret >= 0) {
                ret = co_await bdrv_co_flush(file()->bs.get());
            }
            if (ret < 0) {
                err.set_errno(-ret, "Could not update qcow2 header");
                co_return ret;
            }
        }
        co_return 0;
    }

    const uint64_t file_size = file()->bs->total_bytes();
    BitmapsExtension ext;
    if (!parse_bitmaps_extension(it->data, cluster_bits_, file_size, ext, err)) {
        co_return -EINVAL;
    }
    AlignedBuffer dir(ext.dir_size, 4096);
    IOVector dir_qiov(dir.data(), ext.dir_size);
    int ret = co_await bdrv_co_preadv(file(), ext.dir_offset, ext.dir_size, dir_qiov);
    if (ret < 0) {
        err.set_errno(-ret, "Failed to read bitmap directory");
        co_return ret;
    }
    const uint64_t disk_size = (header_.size + 511) & ~511ULL;
    std::vector<BitmapEntry> entries;
    if (!parse_bitmap_directory(dir.data(), ext.dir_size, ext.nb_bitmaps, cluster_bits_, disk_size,
                                entries, err)) {
        co_return -EINVAL;
    }

    // QEMU loads every bitmap that is not in use: its table must be sound
    // and as large as the disk needs.
    std::set<std::string> names;
    for (BitmapEntry& e : entries) {
        if (!names.insert(e.name).second) {
            err.set("Bitmap already exists: %s", e.name.c_str());
            co_return -EINVAL;
        }
        PersistentBitmap bm;
        bm.stale = e.flags & kBitmapFlagInUse;
        if (!bm.stale) {
            uint64_t bytes = uint64_t(e.table_size) * 8;
            bool inside = e.table_offset <= round_up(file_size, cluster_size_) &&
                          bytes <= round_up(file_size, cluster_size_) - e.table_offset;
            std::vector<uint8_t> table(bytes);
            IOVector q(table.data(), bytes);
            ret = inside ? co_await bdrv_co_preadv(file(), e.table_offset, bytes, q) : -EINVAL;
            for (uint32_t i = 0; ret >= 0 && i < e.table_size; i++) {
                if (!bitmap_table_entry_valid(load_be64(table.data() + uint64_t(i) * 8),
                                              cluster_bits_, file_size)) {
                    ret = -EINVAL;
                }
            }
            if (ret < 0) {
                err.set_errno(-ret, "Could not read bitmap_table table from image for bitmap '%s'",
                              e.name.c_str());
                co_return ret;
            }
            if (e.table_size != bitmap_table_entries(disk_size, e.granularity_bits, cluster_bits_)) {
                err.set_errno(EINVAL, "Could not read bitmap '%s' from image", e.name.c_str());
                co_return -EINVAL;
            }
        }
        bm.entry = std::move(e);
        bitmaps_.push_back(std::move(bm));
    }
    bitmaps_ext_ = ext;
    co_return 0;
}

Task<int> Qcow2State::bitmaps_prepare_change(bool all)
{
    auto concerned = [all](const PersistentBitmap& bm) {
        return !bm.stale && !bm.marked && (all || (bm.entry.flags & kBitmapFlagAuto));
    };
    if (std::none_of(bitmaps_.begin(), bitmaps_.end(), concerned)) {
        co_return 0;  // the common case: nothing to do, no lock taken
    }
    co_await lock_.lock();
    std::vector<size_t> to_mark;
    for (size_t i = 0; i < bitmaps_.size(); i++) {
        if (concerned(bitmaps_[i])) {
            to_mark.push_back(i);
        }
    }
    if (to_mark.empty()) {  // another request marked them meanwhile
        lock_.unlock();
        co_return 0;
    }
    // QEMU's in-place directory update: with the autoclear bit off, a torn
    // directory write only costs the bitmaps, never the image.
    for (size_t i : to_mark) {
        bitmaps_[i].entry.flags |= kBitmapFlagInUse;
    }
    std::vector<uint8_t> dir = serialize_directory(bitmaps_);
    int ret = 0;
    header_.autoclear_features &= ~AUTOCLEAR_BITMAPS;
    ret = co_await write_header_fields();
    if (ret >= 0) {
        ret = co_await bdrv_co_flush(file()->bs.get());
    }
    if (ret >= 0 && dir.size() == bitmaps_ext_.dir_size) {
        ret = check_overlap(bitmaps_ext_.dir_offset, dir.size(), META_BITMAP_DIRECTORY);
        if (ret >= 0) {
            IOVector q(dir.data(), dir.size());
            ret = co_await bdrv_co_pwritev(file(), bitmaps_ext_.dir_offset, dir.size(), q);
        }
    } else if (ret >= 0) {
        ret = -EIO;  // the names did not change, nor may the size
    }
    if (ret >= 0) {
        ret = co_await bdrv_co_flush(file()->bs.get());
    }
    if (ret >= 0) {
        header_.autoclear_features |= AUTOCLEAR_BITMAPS;
        ret = co_await write_header_fields();
    }
    if (ret >= 0) {
        ret = co_await bdrv_co_flush(file()->bs.get());
    }
    if (ret < 0) {
        // The bitmaps are lost (or stale): leave them to `qemu-img check`.
        for (PersistentBitmap& bm : bitmaps_) {
            bm.stale = true;
            bm.marked = false;
        }
        lock_.unlock();
        co_return ret;
    }
    const uint64_t disk_size = total_bytes();
    for (size_t i : to_mark) {
        PersistentBitmap& bm = bitmaps_[i];
        bm.marked = true;
        if (bm.entry.flags & kBitmapFlagAuto) {
            bm.dirty.assign((bitmap_bits(disk_size, bm.entry.granularity_bits) + 63) / 64, 0);
        }
    }
    lock_.unlock();
    co_return 0;
}

void Qcow2State::bitmaps_mark_dirty(uint64_t offset, uint64_t bytes)
{
    if (bytes == 0) {
        return;
    }
    for (PersistentBitmap& bm : bitmaps_) {
        if (!bm.marked || bm.dirty.empty()) {
            continue;
        }
        uint64_t first = offset >> bm.entry.granularity_bits;
        uint64_t last = (offset + bytes - 1) >> bm.entry.granularity_bits;
        last = std::min(last, uint64_t(bm.dirty.size()) * 64 - 1);
        if (first <= last) {
            set_bits(bm.dirty, first, last);
        }
    }
}

Task<int> Qcow2State::bitmaps_note_change(uint64_t offset, uint64_t bytes)
{
    int ret = co_await bitmaps_prepare_change(false);
    if (ret >= 0) {
        bitmaps_mark_dirty(offset, bytes);
    }
    co_return ret;
}

void Qcow2State::bitmaps_resize(uint64_t new_size)
{
    for (PersistentBitmap& bm : bitmaps_) {
        if (!bm.marked || !(bm.entry.flags & kBitmapFlagAuto)) {
            continue;
        }
        uint64_t bits = bitmap_bits(new_size, bm.entry.granularity_bits);
        bm.dirty.resize((bits + 63) / 64, 0);
        if (bits % 64) {
            bm.dirty.back() &= (1ULL << (bits % 64)) - 1;
        }
    }
}

bool Qcow2State::bitmaps_can_resize(Error& err) const
{
    for (const PersistentBitmap& bm : bitmaps_) {
        if (bm.stale) {
            err.set("Bitmap '%s' is inconsistent and cannot be used", bm.entry.name.c_str());
            err.add_hint("Try block-dirty-bitmap-remove to delete this bitmap from disk");
            return false;
        }
    }
    return true;
}

// Bitmaps the image records that have changed (PersistentBitmap::marked)
// are written anew, never in place: what a crash leaves is the old
// directory and tables, or the new ones.
struct Qcow2State::FreedArea {
    uint64_t offset;
    uint64_t bytes;
    FreeReason reason;
};

// Writes `bm`'s bits (the stored ones, then ours on top) to new clusters
// and a new table, updates bm.entry to point at them, and adds the old
// table and clusters to `old`, to be freed once the new directory is in the
// header.  REQUIRES: lock_ held.
Task<int> Qcow2State::rewrite_bitmap(PersistentBitmap& bm, std::vector<FreedArea>& old, Error& err)
{
    assert(lock_.locked());
    const uint64_t file_size = file()->bs->total_bytes();
    const uint64_t disk_size = total_bytes();
    const uint64_t cs = cluster_size_;
    const uint64_t bits_per_cluster = cs * 8;
    AlignedBuffer buf(cs, 4096);
    BitmapEntry& e = bm.entry;
    // The bits as stored (validated at open), then ours on top.
    std::vector<uint8_t> raw(uint64_t(e.table_size) * 8);
    IOVector tq(raw.data(), raw.size());
    int ret = co_await bdrv_co_preadv(file(), e.table_offset, raw.size(), tq);
    if (ret < 0) {
        err.set_errno(-ret, "Could not read bitmap_table table from image for bitmap '%s'",
                      e.name.c_str());
        co_return ret;
    }
    std::vector<uint64_t> old_table(e.table_size);
    for (uint32_t i = 0; i < e.table_size; i++) {
        old_table[i] = load_be64(raw.data() + uint64_t(i) * 8);
        if (!bitmap_table_entry_valid(old_table[i], cluster_bits_, file_size)) {
            err.set("Could not read bitmap_table table from image for bitmap '%s': Invalid argument",
                    e.name.c_str());
            co_return -EINVAL;
        }
    }
    const uint64_t bits = bitmap_bits(disk_size, e.granularity_bits);
    const uint64_t entries = bitmap_table_entries(disk_size, e.granularity_bits, cluster_bits_);
    if (entries > kMaxTableEntries || entries * cs > kMaxBitmapBytes) {
        err.set("Bitmap '%s' is too big", e.name.c_str());
        co_return -EINVAL;
    }
    std::vector<uint64_t> table(entries, 0);
    for (uint64_t i = 0; i < entries; i++) {
        const uint64_t first_bit = i * bits_per_cluster;
        const uint64_t nbits = std::min(bits - first_bit, bits_per_cluster);
        memset(buf.data(), 0, cs);
        if (i < old_table.size()) {
            uint64_t data = old_table[i] & kBitmapTableOffsetMask;
            if (data) {
                IOVector q(buf.data(), cs);
                ret = co_await bdrv_co_preadv(file(), data, cs, q);
                if (ret < 0) {
                    err.set_errno(-ret, "Could not read bitmap '%s' from image", e.name.c_str());
                    co_return ret;
                }
            } else if (old_table[i] & kBitmapTableAllOnes) {
                memset(buf.data(), 0xff, cs);
            }
        }
        for (uint64_t w = 0; w * 64 < nbits && first_bit / 64 + w < bm.dirty.size(); w++) {
            uint8_t* p = buf.data() + w * 8;
            store_le64(p, load_le64(p) | bm.dirty[first_bit / 64 + w]);
        }
        clear_bits_from(buf.data(), cs, nbits);
        if (std::all_of(buf.data(), buf.data() + cs, [](uint8_t b) { return b == 0; })) {
            continue;
        }
        int64_t off = co_await alloc_clusters(cs);
        if (off < 0) {
            err.set_errno(int(-off), "Failed to allocate clusters for bitmap '%s'",
                          e.name.c_str());
            co_return int(off);
        }
        table[i] = uint64_t(off);
        register_metadata(uint64_t(off), cs, META_BITMAP);
        IOVector q(buf.data(), cs);
        ret = co_await bdrv_co_pwritev(file(), uint64_t(off), cs, q);
        if (ret < 0) {
            err.set_errno(-ret, "Failed to write bitmap '%s' to file", e.name.c_str());
            co_return ret;
        }
    }
    uint64_t table_bytes = round_up(entries * 8, cs);
    int64_t table_off = co_await alloc_clusters(table_bytes);
    if (table_off < 0) {
        err.set_errno(int(-table_off), "Failed to allocate clusters for bitmap '%s'",
                      e.name.c_str());
        co_return int(table_off);
    }
    AlignedBuffer tbuf(table_bytes, 4096);
    memset(tbuf.data(), 0, table_bytes);
    for (uint64_t i = 0; i < entries; i++) {
        store_be64(tbuf.data() + i * 8, table[i]);
    }
    register_metadata(uint64_t(table_off), entries * 8, META_BITMAP);
    IOVector q(tbuf.data(), table_bytes);
    ret = co_await bdrv_co_pwritev(file(), uint64_t(table_off), table_bytes, q);
    if (ret < 0) {
        err.set_errno(-ret, "Failed to write bitmap '%s' to file", e.name.c_str());
        co_return ret;
    }
    old.push_back({e.table_offset, uint64_t(e.table_size) * 8, Qcow2State::FreeReason::Other});
    for (uint64_t entry : old_table) {
        if (entry & kBitmapTableOffsetMask) {
            old.push_back({entry & kBitmapTableOffsetMask, cs, Qcow2State::FreeReason::Always});
        }
    }
    e.table_offset = uint64_t(table_off);
    e.table_size = uint32_t(entries);
    e.flags &= ~kBitmapFlagInUse;
    bm.marked = false;
    bm.dirty.clear();
    co_return 0;
}

Task<int> Qcow2State::bitmaps_store(Error& err)
{
    if (std::none_of(bitmaps_.begin(), bitmaps_.end(),
                     [](const PersistentBitmap& bm) { return bm.marked; })) {
        co_return 0;
    }
    const uint64_t cs = cluster_size_;
    std::vector<FreedArea> old;  // freed once the new directory is in the header
    std::vector<PersistentBitmap> updated = bitmaps_;

    for (PersistentBitmap& bm : updated) {
        if (bm.marked) {
            int ret = co_await rewrite_bitmap(bm, old, err);
            if (ret < 0) {
                co_return ret;
            }
        }
    }

    // The new directory, then the header that points to it.
    std::vector<uint8_t> dir = serialize_directory(updated);
    const uint64_t dir_size = dir.size();
    uint64_t dir_bytes = round_up(dir_size, cs);
    int64_t dir_off = co_await alloc_clusters(dir_bytes);
    if (dir_off < 0) {
        err.set_errno(int(-dir_off), "Failed to update bitmap extension");
        co_return int(dir_off);
    }
    dir.resize(dir_bytes, 0);
    IOVector dq(dir.data(), dir_bytes);
    int ret = co_await bdrv_co_pwritev(file(), uint64_t(dir_off), dir_bytes, dq);
    if (ret >= 0) {
        ret = co_await flush_metadata();
    }
    if (ret >= 0) {
        ret = co_await bdrv_co_flush(file()->bs.get());
    }
    HeaderExtension* ext = find_extension(header_, EXT_BITMAPS);
    if (ret >= 0 && !ext) {
        ret = -EIO;
    }
    if (ret < 0) {
        err.set_errno(-ret, "Failed to update bitmap extension");
        co_return ret;
    }
    BitmapsExtension new_ext{uint32_t(updated.size()), dir_size, uint64_t(dir_off)};
    std::vector<uint8_t> saved = ext->data;
    uint64_t saved_autoclear = header_.autoclear_features;
    ext->data.assign(kExtensionBytes, 0);
    store_be32(ext->data.data(), new_ext.nb_bitmaps);
    store_be64(ext->data.data() + 8, new_ext.dir_size);
    store_be64(ext->data.data() + 16, new_ext.dir_offset);
    header_.autoclear_features |= AUTOCLEAR_BITMAPS;
    ret = co_await rewrite_header(err);
    if (ret >= 0) {
        ret = co_await bdrv_co_flush(file()->bs.get());
        if (ret < 0) {
            err.set_errno(-ret, "Failed to update bitmap extension");
        }
    }
    if (ret < 0) {
        ext->data = saved;
        header_.autoclear_features = saved_autoclear;
        co_return ret;
    }
    unregister_metadata(bitmaps_ext_.dir_offset, bitmaps_ext_.dir_size, META_BITMAP_DIRECTORY);
    free_clusters_later(bitmaps_ext_.dir_offset, bitmaps_ext_.dir_size, FreeReason::Other);
    for (const FreedArea& o : old) {
        unregister_metadata(o.offset, o.bytes, META_BITMAP);
        free_clusters_later(o.offset, o.bytes, o.reason);
    }
    register_metadata(new_ext.dir_offset, new_ext.dir_size, META_BITMAP_DIRECTORY);
    bitmaps_ext_ = new_ext;
    bitmaps_ = std::move(updated);
    co_return 0;
}

nlohmann::ordered_json Qcow2State::bitmaps_info() const
{
    nlohmann::ordered_json list = nlohmann::ordered_json::array();
    for (const PersistentBitmap& bm : bitmaps_) {
        nlohmann::ordered_json flags = nlohmann::ordered_json::array();
        if (bm.entry.flags & kBitmapFlagInUse) {
            flags.push_back("in-use");
        }
        if (bm.entry.flags & kBitmapFlagAuto) {
            flags.push_back("auto");
        }
        nlohmann::ordered_json info;
        info["name"] = bm.entry.name;
        info["granularity"] = uint32_t(1u << bm.entry.granularity_bits);
        info["flags"] = flags;
        list.push_back(info);
    }
    return list;
}

std::optional<uint64_t> Qcow2State::measure_bitmaps_size(uint64_t cluster_size) const
{
    if (header_.version < 3) {
        return std::nullopt;
    }
    return bitmaps_copy_size(cluster_size);
}

uint64_t Qcow2State::bitmaps_copy_size(uint64_t cluster_size) const
{
    // QEMU's qcow2_get_persistent_dirty_bitmap_size(): every bitmap fully
    // allocated, its table, and the directory.
    uint64_t total = 0;
    uint64_t dir = 0;
    for (const PersistentBitmap& bm : bitmaps_) {
        uint64_t bytes = (bitmap_bits(total_bytes(), bm.entry.granularity_bits) + 7) / 8;
        uint64_t clusters = (bytes + cluster_size - 1) / cluster_size;
        total += clusters * cluster_size + round_up(clusters * 8, cluster_size);
        dir += dir_entry_bytes(bm.entry.name.size(), 0);
    }
    return total + round_up(dir, cluster_size);
}

}  // namespace qemu::qcow2
