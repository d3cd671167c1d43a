// qcow2 header and header extensions: every field read from an image is
// validated here before the rest of the driver uses it.
#include <algorithm>
#include <cstring>

#include "qcow2.h"
#include "qemu/bswap.h"

namespace qemu::qcow2 {

namespace {

// The format's limit (docs/interop/qcow2-zoned.rst): the write pointer
// array stays below 4 GiB.
constexpr uint32_t kMaxZones = UINT32_MAX / 8;

constexpr size_t kFeatureEntryBytes = 48;
constexpr size_t kFeatureNameBytes = 46;

bool table_fits(uint64_t offset, uint64_t entries, uint64_t entry_len, uint64_t max_bytes,
                uint64_t cluster_size, const char* name, Error& err)
{
    if (entries > max_bytes / entry_len) {
        err.set("%s too large", name);
        return false;
    }
    if (uint64_t(INT64_MAX) - entries * entry_len < offset || (offset & (cluster_size - 1))) {
        err.set("%s offset invalid", name);
        return false;
    }
    return true;
}

}  // namespace

const std::vector<FeatureName>& known_feature_names()
{
    static const std::vector<FeatureName> names = {
        {FeatureType::Incompatible, 0, "dirty bit"},
        {FeatureType::Incompatible, 1, "corrupt bit"},
        {FeatureType::Incompatible, 2, "external data file"},
        {FeatureType::Incompatible, 3, "compression type"},
        {FeatureType::Incompatible, 4, "extended L2 entries"},
        {FeatureType::Compatible, 0, "lazy refcounts"},
        {FeatureType::Autoclear, 0, "bitmaps"},
        {FeatureType::Autoclear, 1, "raw external data"},
    };
    return names;
}

std::string Header::feature_name(FeatureType type, int bit) const
{
    for (const auto& f : feature_table) {
        if (f.type == type && f.bit == bit) {
            return f.name;
        }
    }
    for (const auto& f : known_feature_names()) {
        if (f.type == type && f.bit == bit) {
            return f.name;
        }
    }
    return "";
}

const char* metadata_kind_name(MetadataKind kind)
{
    switch (kind) {
    case META_HEADER: return "qcow2_header";
    case META_L1: return "active L1 table";
    case META_L2: return "active L2 table";
    case META_REFCOUNT_TABLE: return "refcount table";
    case META_REFCOUNT_BLOCK: return "refcount block";
    case META_SNAPSHOT_TABLE: return "snapshot table";
    case META_SNAPSHOT_L1: return "inactive L1 table";
    case META_SNAPSHOT_L2: return "inactive L2 table";
    case META_BITMAP_DIRECTORY: return "bitmap directory";
    case META_BITMAP: return "bitmap data";
    case META_ZONE_WP: return "write pointer array";
    case META_ZONE_COND: return "zone condition array";
    case META_ZONE_DESC: return "zone descriptor extensions";
    case META_SNAPSHOT_ZONED: return "snapshot zone state";
    }
    return "metadata";
}

bool Header::parse_fixed_fields(const uint8_t* buf, size_t len, Error& err)
{
    if (len < kV2HeaderLength || load_be32(buf) != kMagic) {
        err.set("Image is not in qcow2 format");
        return false;
    }
    version = load_be32(buf + 4);
    if (version < 2 || version > 3) {
        err.set("Unsupported qcow2 version %u", version);
        return false;
    }
    backing_file_offset = load_be64(buf + 8);
    backing_file_size = load_be32(buf + 16);
    cluster_bits = load_be32(buf + 20);
    if (cluster_bits < kMinClusterBits || cluster_bits > kMaxClusterBits) {
        err.set("Unsupported cluster size: 2^%u", cluster_bits);
        return false;
    }
    const uint64_t cs = cluster_size();
    size = load_be64(buf + 24);
    crypt_method = load_be32(buf + 32);
    l1_size = load_be32(buf + 36);
    l1_table_offset = load_be64(buf + 40);
    refcount_table_offset = load_be64(buf + 48);
    refcount_table_clusters = load_be32(buf + 56);
    nb_snapshots = load_be32(buf + 60);
    snapshots_offset = load_be64(buf + 64);

    if (version == 2) {
        incompatible_features = compatible_features = autoclear_features = 0;
        refcount_order = 4;
        header_length = kV2HeaderLength;
    } else {
        if (len < kV3MinHeaderLength) {
            err.set("qcow2 header too short");
            return false;
        }
        incompatible_features = load_be64(buf + 72);
        compatible_features = load_be64(buf + 80);
        autoclear_features = load_be64(buf + 88);
        refcount_order = load_be32(buf + 96);
        header_length = load_be32(buf + 100);
        if (header_length < kV3MinHeaderLength) {
            err.set("qcow2 header too short");
            return false;
        }
        if (header_length > cs || header_length > len) {
            err.set("qcow2 header exceeds cluster size");
            return false;
        }
        if (header_length % 8) {
            err.set("Image is corrupt: header length %u is not a multiple of 8", header_length);
            return false;
        }
    }
    compression_type = CompressionType::Zlib;
    unknown_fields.clear();
    if (header_length > kV3MinHeaderLength) {
        uint8_t ct = buf[104];
        if (ct > uint8_t(CompressionType::Zstd)) {
            err.set("qcow2: unknown compression type: %u", ct);
            return false;
        }
        compression_type = CompressionType(ct);
        // Bytes 105..111 are padding; anything from 112 on is a field of a
        // later specification that we keep as it is.
        if (header_length > kV3HeaderLength) {
            unknown_fields.assign(buf + kV3HeaderLength, buf + header_length);
        }
    }
    bool has_compression_bit = incompatible_features & INCOMPAT_COMPRESSION;
    if (has_compression_bit != (compression_type != CompressionType::Zlib)) {
        err.set(has_compression_bit ? "qcow2: Compression type incompatible feature bit must not be set"
                                    : "qcow2: Compression type incompatible feature bit must be set");
        return false;
    }
    if (refcount_order > 6) {
        err.set("Reference count entry width too large; may not exceed 64 bits");
        return false;
    }

    return true;
}

// The backing file name; `ext_end` becomes where the extensions must end.
bool Header::parse_backing_name(const uint8_t* buf, size_t len, uint64_t& ext_end, Error& err)
{
    const uint64_t cs = cluster_size();
    ext_end = cs;
    backing_file.clear();
    if (backing_file_offset) {
        if (backing_file_offset > cs) {
            err.set("Invalid backing file offset");
            return false;
        }
        if (backing_file_size > kMaxBackingFileNameBytes ||
            backing_file_offset + backing_file_size > std::min<uint64_t>(cs, len)) {
            err.set("Backing file name too long");
            return false;
        }
        backing_file.assign(reinterpret_cast<const char*>(buf + backing_file_offset),
                            backing_file_size);
        ext_end = backing_file_offset;
    }
    return true;
}

bool Header::parse_zoned_extension(const uint8_t* data, uint32_t ext_len, Error& err)
{
    if (ext_len < ZonedExtension::kBaseLength) {
        err.set("zoned_ext: len=%u too small (<%u)", ext_len, ZonedExtension::kBaseLength);
        return false;
    }
    // Faults that rewriting the header repairs.
    auto fault = [&](std::string what) {
        if (!tolerate_header_faults) {
            err.set("Image is corrupt: %s", what.c_str());
            return false;
        }
        header_faults.push_back(std::move(what));
        return true;
    };
    if (ext_len != ZonedExtension::kBaseLength && ext_len != ZonedExtension::kFullLength &&
        !fault(string_printf("zoned extension length %u is neither %u nor %u", ext_len,
                             ZonedExtension::kBaseLength, ZonedExtension::kFullLength))) {
        return false;
    }
    ZonedExtension z;
    z.model = data[0];
    if ((data[1] || data[2] || data[3] || (ext_len >= ZonedExtension::kFullLength && load_be32(data + 60))) &&
        !fault("reserved bytes of the zoned extension are not zero")) {
        return false;
    }
    z.zone_size = load_be64(data + 4);
    z.zone_capacity = load_be64(data + 12);
    z.conventional_zones = load_be32(data + 20);
    z.nr_zones = load_be32(data + 24);
    z.max_active_zones = load_be32(data + 28);
    z.max_open_zones = load_be32(data + 32);
    z.max_append_bytes = load_be32(data + 36);
    z.meta_size = load_be64(data + 40);
    z.meta_offset = load_be64(data + 48);
    if (ext_len >= ZonedExtension::kFullLength) {
        z.zd_extension_size = load_be32(data + 56);
        z.cond_offset = load_be64(data + 64);
        z.cond_size = load_be64(data + 72);
        z.zde_offset = load_be64(data + 80);
        z.zde_size = load_be64(data + 88);
    }
    if (z.model != 0) {
        zoned = z;
    }
    return true;
}

bool Header::parse_extensions(const uint8_t* buf, size_t len, uint64_t ext_end, Error& err)
{
    backing_format.clear();
    data_file.reset();
    feature_table.clear();
    extensions.clear();
    uint64_t pos = header_length;
    ext_end = std::min<uint64_t>(ext_end, len);
    while (pos + 8 <= ext_end) {
        uint32_t magic = load_be32(buf + pos);
        uint32_t ext_len = load_be32(buf + pos + 4);
        pos += 8;
        if (magic == EXT_END) {
            break;
        }
        if (ext_len > ext_end - pos) {
            err.set("Image is corrupt: header extension 0x%08x (length %u) exceeds the header "
                    "cluster", magic, ext_len);
            return false;
        }
        const uint8_t* data = buf + pos;
        switch (magic) {
        case EXT_BACKING_FORMAT:
            if (ext_len > kMaxBackingFileNameBytes) {
                err.set("ERROR: ext_backing_format: len=%u too large (>=%u)", ext_len,
                        kMaxBackingFileNameBytes + 1);
                return false;
            }
            backing_format.assign(reinterpret_cast<const char*>(data), ext_len);
            break;
        case EXT_DATA_FILE:
            data_file.emplace(reinterpret_cast<const char*>(data), ext_len);
            break;
        case EXT_ZONED:
            if (!parse_zoned_extension(data, ext_len, err)) {
                return false;
            }
            break;
        case EXT_FEATURE_TABLE:
            // As QEMU reads it: the last table wins; entries of 48 bytes,
            // the last one possibly cut short (the missing bytes count as
            // zeroes), up to the first entry with an empty name.
            feature_table.clear();
            for (size_t i = 0; i + 2 < ext_len && data[i + 2] != 0; i += kFeatureEntryBytes) {
                size_t avail = std::min<size_t>(kFeatureEntryBytes, ext_len - i);
                if (data[i] > uint8_t(FeatureType::Autoclear) || data[i + 1] > 63) {
                    continue;  // an entry we cannot interpret names nothing we check
                }
                FeatureName f;
                f.type = FeatureType(data[i]);
                f.bit = data[i + 1];
                const char* name = reinterpret_cast<const char*>(data + i + 2);
                f.name.assign(name, strnlen(name, std::min<size_t>(kFeatureNameBytes, avail - 2)));
                feature_table.push_back(std::move(f));
            }
            break;
        default:
            extensions.push_back({magic, std::vector<uint8_t>(data, data + ext_len)});
            break;
        }
        pos += (uint64_t(ext_len) + 7) & ~7ULL;
    }

    return true;
}

bool Header::check_features(uint64_t file_size, Error& err) const
{
    uint64_t unsupported = incompatible_features & ~kSupportedIncompatible;
    if (unsupported) {
        std::string names;
        for (int bit = 0; bit < 64; bit++) {
            if (!(unsupported & (1ULL << bit))) {
                continue;
            }
            std::string n = feature_name(FeatureType::Incompatible, bit);
            if (n.empty()) {
                continue;
            }
            names += (names.empty() ? "" : ", ") + n;
            unsupported &= ~(1ULL << bit);
        }
        if (unsupported) {
            names += (names.empty() ? "" : ", ") +
                     string_printf("Unknown incompatible feature: %llx", (unsigned long long)unsupported);
        }
        err.set("Unsupported qcow2 feature(s): %s", names.c_str());
        return false;
    }
    if (bool(incompatible_features & INCOMPAT_ZONED) != zoned.has_value()) {
        err.set(zoned ? "Image is corrupt: zoned extension present without the zoned format feature bit"
                      : "Image is corrupt: zoned format feature bit set without a zoned extension");
        return false;
    }
    if (zoned && !zoned->validate(size, cluster_bits, file_size, err)) {
        return false;
    }
    if (zoned && (incompatible_features & INCOMPAT_DATA_FILE)) {
        err.set("Zoned images cannot have an external data file");
        return false;
    }
    if (crypt_method != 0) {
        err.set("Encrypted images are not supported");
        return false;
    }
    return true;
}

bool Header::check_tables(uint64_t file_size, Error& err) const
{
    const uint64_t cs = cluster_size();
    // Tables: offsets and sizes within sane limits and the file.
    if (!table_fits(refcount_table_offset, uint64_t(refcount_table_clusters) << cluster_bits, 1,
                    kMaxRefcountTableBytes, cs, "Reference count table", err)) {
        return false;
    }
    if (refcount_table_clusters == 0) {
        err.set("Image does not contain a reference count table");
        return false;
    }
    if (!table_fits(l1_table_offset, l1_size, 8, kMaxL1Bytes, cs, "Active L1 table", err)) {
        return false;
    }
    if (nb_snapshots > kMaxSnapshots) {
        err.set("Snapshot table too large");
        return false;
    }
    if (nb_snapshots && !table_fits(snapshots_offset, nb_snapshots, 40, 64 * MiB, cs, "Snapshot table", err)) {
        return false;
    }
    for (auto [off, bytes, what] : {std::tuple{refcount_table_offset, uint64_t(refcount_table_clusters) << cluster_bits, "reference count table"},
                                    std::tuple{l1_table_offset, uint64_t(l1_size) * 8, "L1 table"}}) {
        if (bytes && off + bytes > ((file_size + cs - 1) & ~(cs - 1))) {
            err.set("Image is corrupt: the %s (offset 0x%llx, %llu bytes) lies beyond the end of "
                    "the file", what, (unsigned long long)off, (unsigned long long)bytes);
            return false;
        }
    }
    bool extended_l2 = incompatible_features & INCOMPAT_EXTL2;
    if (extended_l2 && cluster_bits - kSubclustersPerClusterBits < kMinClusterBits) {
        err.set("Unsupported subcluster size: %u", 1u << (cluster_bits - kSubclustersPerClusterBits));
        return false;
    }
    uint64_t needed_l1 = 0;
    {
        // An L2 table maps cluster_size / entry size clusters.
        uint64_t l2_coverage_bits = cluster_bits + (cluster_bits - (extended_l2 ? 4 : 3));
        needed_l1 = (size + (1ULL << l2_coverage_bits) - 1) >> l2_coverage_bits;
    }
    if (size > uint64_t(INT64_MAX) || needed_l1 > l1_size) {
        err.set("L1 table is too small");
        return false;
    }
    return true;
}

bool Header::parse(const uint8_t* buf, size_t len, uint64_t file_size, Error& err)
{
    uint64_t ext_end = 0;
    return parse_fixed_fields(buf, len, err) && parse_backing_name(buf, len, ext_end, err) &&
           parse_extensions(buf, len, ext_end, err) && check_features(file_size, err) &&
           check_tables(file_size, err);
}

bool Header::serialize(std::vector<uint8_t>& out, Error& err) const
{
    // The feature name table is optional.  QEMU 7.2 leaves it out with
    // clusters of 4 KiB and less (to keep room for a backing file name),
    // and so do we; with more extensions than fit, the header goes without
    // it rather than fail.
    bool wanted = version >= 3 && cluster_size() > 4096;
    return serialize_with(out, wanted, err) || (wanted && serialize_with(out, false, err));
}

bool Header::serialize_with(std::vector<uint8_t>& out, bool feature_table_wanted, Error& err) const
{
    const uint64_t cs = cluster_size();
    out.assign(cs, 0);
    uint8_t* b = out.data();
    uint32_t hdr_len = version == 2 ? kV2HeaderLength : kV3HeaderLength + uint32_t(unknown_fields.size());
    store_be32(b, kMagic);
    store_be32(b + 4, version);
    store_be32(b + 20, cluster_bits);
    store_be64(b + 24, size);
    store_be32(b + 32, crypt_method);
    store_be32(b + 36, l1_size);
    store_be64(b + 40, l1_table_offset);
    store_be64(b + 48, refcount_table_offset);
    store_be32(b + 56, refcount_table_clusters);
    store_be32(b + 60, nb_snapshots);
    store_be64(b + 64, snapshots_offset);
    if (version >= 3) {
        store_be64(b + 72, incompatible_features);
        store_be64(b + 80, compatible_features);
        store_be64(b + 88, autoclear_features);
        store_be32(b + 96, refcount_order);
        store_be32(b + 100, hdr_len);
        b[104] = uint8_t(compression_type);
        if (!unknown_fields.empty()) {
            memcpy(b + kV3HeaderLength, unknown_fields.data(), unknown_fields.size());
        }
    }

    size_t pos = hdr_len;
    bool fits = true;
    auto add_ext = [&](uint32_t magic, const uint8_t* data, size_t len) {
        size_t padded = (len + 7) & ~size_t(7);
        if (pos + 8 + padded > cs) {
            fits = false;
            return;
        }
        store_be32(b + pos, magic);
        store_be32(b + pos + 4, uint32_t(len));
        if (len) {
            memcpy(b + pos + 8, data, len);
        }
        pos += 8 + padded;
    };
    if (!backing_format.empty()) {
        add_ext(EXT_BACKING_FORMAT, reinterpret_cast<const uint8_t*>(backing_format.data()),
                backing_format.size());
    }
    // QEMU's order: backing format, encryption header, data file name,
    // feature table, ..., unknown extensions.
    for (const auto& e : extensions) {
        if (e.magic == EXT_CRYPTO) {
            add_ext(e.magic, e.data.data(), e.data.size());
        }
    }
    if (data_file) {
        add_ext(EXT_DATA_FILE, reinterpret_cast<const uint8_t*>(data_file->data()), data_file->size());
    }
    if (version >= 3 && feature_table_wanted) {
        std::vector<uint8_t> table;
        std::vector<FeatureName> names = known_feature_names();
        if (zoned) {
            names.insert(names.begin() + 5, FeatureName{FeatureType::Incompatible, 5, "zoned format"});
        }
        for (const auto& f : names) {
            uint8_t entry[kFeatureEntryBytes] = {};
            entry[0] = uint8_t(f.type);
            entry[1] = f.bit;
            memcpy(entry + 2, f.name.data(), std::min(f.name.size(), kFeatureNameBytes));
            table.insert(table.end(), entry, entry + sizeof(entry));
        }
        add_ext(EXT_FEATURE_TABLE, table.data(), table.size());
    }
    if (zoned) {
        std::vector<uint8_t> z;
        zoned->serialize(z);
        add_ext(EXT_ZONED, z.data(), z.size());
    }
    for (const auto& e : extensions) {
        if (e.magic != EXT_CRYPTO) {
            add_ext(e.magic, e.data.data(), e.data.size());
        }
    }
    add_ext(EXT_END, nullptr, 0);
    if (!backing_file.empty()) {
        if (pos + backing_file.size() > cs) {
            fits = false;
        } else {
            memcpy(b + pos, backing_file.data(), backing_file.size());
            store_be64(b + 8, pos);
            store_be32(b + 16, uint32_t(backing_file.size()));
        }
    }
    if (!fits) {
        err.set("Cannot update qcow2 header: header extensions do not fit in one cluster");
        return false;
    }
    return true;
}

bool ZonedExtension::validate(uint64_t virtual_size, uint32_t cluster_bits, uint64_t file_size,
                              Error& err) const
{
    const uint64_t cs = 1ULL << cluster_bits;
    auto bad = [&](const char* what) {
        err.set("Image is corrupt: zoned extension: %s", what);
        return false;
    };
    if (model != 1 && model != 2) {
        err.set("Image is corrupt: zoned extension: unknown zone model %u", model);
        return false;
    }
    if (zone_size == 0 || zone_size % cs) {
        return bad("zone size is zero or not a multiple of the cluster size");
    }
    if (zone_size > kMaxZoneSize) {
        return bad("zone size exceeds the limit of 0x1fffffffe00 bytes");
    }
    if (zone_capacity == 0 || zone_capacity > zone_size || zone_capacity % 512) {
        return bad("zone capacity is zero, larger than the zone size, or not sector aligned");
    }
    // Zones end on sector boundaries, the last one too (requests are
    // split at zone ends and must not be left with less than a sector).
    if (virtual_size % 512) {
        return bad("the virtual size is not a multiple of 512");
    }
    // A zone larger than the disk would leave a single runt zone whose
    // reported size and capacity lie past the end of the device.
    if (zone_size > virtual_size) {
        return bad("the zone size is larger than the virtual size");
    }
    if (nr_zones > kMaxZones) {
        err.set("Image is corrupt: zoned extension: %u zones exceed the limit of %u", nr_zones,
                kMaxZones);
        return false;
    }
    uint64_t expected_zones = (virtual_size + zone_size - 1) / zone_size;
    if (nr_zones != expected_zones || nr_zones == 0) {
        return bad("the number of zones does not match the virtual size");
    }
    if (conventional_zones >= nr_zones) {
        return bad("there are not fewer conventional zones than zones");
    }
    uint32_t seq = nr_zones - conventional_zones;
    if (max_active_zones > seq || max_open_zones > seq ||
        (max_active_zones && max_open_zones > max_active_zones)) {
        return bad("open/active zone limits are inconsistent");
    }
    if (max_append_bytes == 0 || max_append_bytes % 512 || max_append_bytes >= zone_capacity) {
        return bad("max append bytes is zero, unaligned or not smaller than the zone capacity");
    }
    auto area_ok = [&](uint64_t offset, uint64_t size, uint64_t expected_size) {
        return size == expected_size && offset && offset % cs == 0 && offset <= UINT64_MAX - size &&
               offset + size <= ((file_size + cs - 1) & ~(cs - 1));
    };
    if (!area_ok(meta_offset, meta_size, uint64_t(nr_zones) * 8)) {
        return bad("the write pointer array is misplaced or has the wrong size");
    }
    if (zd_extension_size % 64 || zd_extension_size > 255 * 64) {
        return bad("descriptor extension size is not a multiple of 64 up to 16320");
    }
    if (cond_offset && !area_ok(cond_offset, cond_size, nr_zones)) {
        return bad("the zone condition array is misplaced or has the wrong size");
    }
    if (zd_extension_size && !area_ok(zde_offset, zde_size, uint64_t(nr_zones) * zd_extension_size)) {
        return bad("the descriptor extension area is misplaced or has the wrong size");
    }
    if (!zd_extension_size && (zde_offset || zde_size)) {
        return bad("descriptor extension area without a descriptor extension size");
    }
    return true;
}

void ZonedExtension::serialize(std::vector<uint8_t>& out) const
{
    out.assign(uses_extra_fields() ? kFullLength : kBaseLength, 0);
    uint8_t* d = out.data();
    d[0] = model;
    store_be64(d + 4, zone_size);
    store_be64(d + 12, zone_capacity);
    store_be32(d + 20, conventional_zones);
    store_be32(d + 24, nr_zones);
    store_be32(d + 28, max_active_zones);
    store_be32(d + 32, max_open_zones);
    store_be32(d + 36, max_append_bytes);
    store_be64(d + 40, meta_size);
    store_be64(d + 48, meta_offset);
    if (uses_extra_fields()) {
        store_be32(d + 56, zd_extension_size);
        store_be64(d + 64, cond_offset);
        store_be64(d + 72, cond_size);
        store_be64(d + 80, zde_offset);
        store_be64(d + 88, zde_size);
    }
}

}  // namespace qemu::qcow2
