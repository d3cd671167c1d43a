// qemu-img measure for qcow2: how large a new image gets, computed as QEMU
// 7.2's qcow2_measure() does so that the numbers agree byte for byte.

#include "qcow2.h"

namespace qemu::qcow2 {

namespace {

constexpr uint64_t kMaxL1Bytes32 = 32 * MiB;  // QCOW_MAX_L1_SIZE

uint64_t round_up(uint64_t value, uint64_t align)
{
    return (value + align - 1) / align * align;
}

uint64_t div_round_up(uint64_t value, uint64_t divisor)
{
    return (value + divisor - 1) / divisor;
}

}  // namespace

uint64_t refcount_metadata_bytes(uint64_t clusters, uint64_t cluster_size, uint32_t refcount_order)
{
    // Every cluster is counted, refcount metadata included: look for the
    // fixed point where the blocks and the table count themselves too.
    const uint64_t blocks_per_table_cluster = cluster_size / 8;
    const uint64_t refcounts_per_block = cluster_size * 8 >> refcount_order;
    uint64_t table = 0;
    uint64_t blocks = 0;
    uint64_t n = 0;
    uint64_t last;
    do {
        last = n;
        blocks = div_round_up(clusters + table + blocks, refcounts_per_block);
        table = div_round_up(blocks, blocks_per_table_cluster);
        n = clusters + blocks + table;
    } while (n != last);
    return (blocks + table) * cluster_size;
}

uint64_t fully_allocated_bytes(uint64_t virtual_size, uint64_t cluster_size, uint32_t refcount_order,
                               bool extended_l2)
{
    const uint64_t aligned = round_up(virtual_size, cluster_size);
    const uint64_t l2_entry_bytes = extended_l2 ? 16 : 8;
    uint64_t meta = cluster_size;  // the header
    uint64_t l2_entries = round_up(aligned / cluster_size, cluster_size / l2_entry_bytes);
    meta += l2_entries * l2_entry_bytes;
    uint64_t l1_entries = round_up(l2_entries * l2_entry_bytes / cluster_size, cluster_size / 8);
    meta += l1_entries * 8;
    meta += refcount_metadata_bytes((meta + aligned) / cluster_size, cluster_size, refcount_order);
    return meta + aligned;
}

Task<int> qcow2_co_measure(QDict& opts, BlockDriverState* in_bs, BlockMeasureInfo& out, Error& err)
{
    auto extended_l2 = take_bool(opts, "extended_l2", false, err);
    auto cluster_size = take_size(opts, "cluster_size", 1ULL << kDefaultClusterBits, err);
    if (!extended_l2 || !cluster_size) {
        co_return -EINVAL;
    }
    if (*cluster_size < (1ULL << kMinClusterBits) || *cluster_size > (1ULL << kMaxClusterBits) ||
        (*cluster_size & (*cluster_size - 1))) {
        err.set("Cluster size must be a power of two between %llu and %lluk",
                1ULL << kMinClusterBits, 1ULL << (kMaxClusterBits - 10));
        co_return -EINVAL;
    }
    if (*extended_l2 && *cluster_size < 16 * KiB) {
        err.set("Extended L2 entries are only supported with cluster sizes of at least %llu bytes",
                (unsigned long long)(16 * KiB));
        co_return -EINVAL;
    }
    // Unlike create, measure knows only the numeric levels.
    std::string compat = take_string(opts, "compat", "1.1");
    int version;
    if (compat == "0.10") {
        version = 2;
    } else if (compat == "1.1") {
        version = 3;
    } else {
        err.set("Invalid compatibility level: '%s'", compat.c_str());
        co_return -EINVAL;
    }
    auto refcount_bits = take_number(opts, "refcount_bits", 16, err);
    if (!refcount_bits) {
        co_return -EINVAL;
    }
    if (*refcount_bits == 0 || *refcount_bits > 64 || (*refcount_bits & (*refcount_bits - 1))) {
        err.set("Refcount width must be a power of two and may not exceed 64 bits");
        co_return -EINVAL;
    }
    if (version < 3 && *refcount_bits != 16) {
        err.set("Different refcount widths than 16 bits require compatibility level 1.1 or above "
                "(use compat=1.1 or greater)");
        co_return -EINVAL;
    }
    PreallocMode prealloc = PreallocMode::Off;
    std::string prealloc_name = take_string(opts, "preallocation", "off");
    if (!parse_prealloc_mode(prealloc_name, prealloc)) {
        err.set("invalid parameter value: %s", prealloc_name.c_str());
        co_return -EINVAL;
    }
    bool has_backing_file = opts.take("backing_file").has_value();
    // A LUKS header would add its size; AES encryption adds nothing.
    if (opts.get("encrypt.format") && *opts.get("encrypt.format") == "luks") {
        err.set("LUKS encryption is not supported by this qcow2 driver");
        co_return -ENOTSUP;
    }

    const uint64_t cs = *cluster_size;
    auto size = take_size(opts, "size", 0, err);
    if (!size) {
        co_return -EINVAL;
    }
    uint64_t virtual_size = round_up(*size, cs);
    uint64_t l2_tables = div_round_up(virtual_size / cs, cs / (*extended_l2 ? 16 : 8));
    if (l2_tables * 8 > kMaxL1Bytes32) {
        err.set("The image size is too large (try using a larger cluster size)");
        co_return -EFBIG;
    }

    // The data of the source, backing chain included: only its allocated,
    // non-zero clusters.
    uint64_t required = 0;
    if (in_bs) {
        const uint64_t source_size = in_bs->total_bytes();
        virtual_size = round_up(source_size, cs);
        if (has_backing_file) {
            // How much the new image's backing file shares with the source
            // is unknown: assume nothing.
            required = virtual_size;
        } else {
            for (uint64_t offset = 0; offset < source_size;) {
                BlockStatus st;
                int ret = co_await bdrv_co_block_status_above(in_bs, nullptr, true, offset,
                                                              source_size - offset, st);
                if (ret < 0) {
                    err.set_errno(-ret, "Unable to get block status");
                    co_return ret;
                }
                uint64_t pnum = st.pnum;
                if (st.flags & BDRV_BLOCK_ZERO) {
                    // zeroes need nothing (there is no backing file)
                } else if ((st.flags & (BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED)) ==
                           (BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED)) {
                    // Up to the end of the cluster, which the next query
                    // starts after.
                    pnum = round_up(offset + pnum, cs) - offset;
                    required += offset % cs + pnum;
                }
                offset += pnum;
            }
        }
    }
    if (prealloc == PreallocMode::Full || prealloc == PreallocMode::Falloc) {
        required = virtual_size;
    }

    out.fully_allocated =
        fully_allocated_bytes(virtual_size, cs, uint32_t(__builtin_ctzll(*refcount_bits)), *extended_l2);
    // The metadata of the fully allocated image, the data actually needed.
    out.required = out.fully_allocated - virtual_size + required;
    // Bitmaps only when both the source and the new image can hold them.
    auto* source = dynamic_cast<Qcow2State*>(in_bs);
    if (version >= 3 && source) {
        out.bitmaps = source->measure_bitmaps_size(cs);
    }
    co_return 0;
}

}  // namespace qemu::qcow2
