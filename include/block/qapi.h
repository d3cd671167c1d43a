// What QEMU's block/qapi.c reports about a node, as QAPI structures in
// JSON: ImageInfo (qemu-img info, query-named-block-nodes' "image").
//
// Threads: the co_ function runs in the node's context; the plain one polls
// it from a tool's thread that owns that context.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "block/block_int.h"
#include "block/snapshot.h"

namespace qemu {

// QEMU's ImageInfo, as far as our drivers can fill it.
struct ImageInfo {
    std::string filename;
    std::string format;
    std::optional<bool> dirty_flag;      // absent when the driver has no info
    std::optional<int64_t> actual_size;  // host bytes used, when known
    uint64_t virtual_size = 0;
    std::optional<uint64_t> cluster_size;
    // The backing file as the image names it, where that is when opened
    // (absent when it cannot be worked out), and its recorded format.
    std::optional<std::string> backing_filename;
    std::optional<std::string> full_backing_filename;
    std::optional<std::string> backing_format;
    nlohmann::ordered_json format_specific;  // {"type": ..., "data": {...}} or null
    std::vector<SnapshotInfo> snapshots;     // absent when empty or not supported
};

Task<ImageInfo> bdrv_co_query_image_info(BlockDriverState& bs);
ImageInfo bdrv_query_image_info(BlockDriverState& bs);

// The members in the order of QEMU's QAPI ImageInfo, which decides their
// printed order (see qemu/qjson.h).
nlohmann::ordered_json image_info_to_json(const ImageInfo& info);

// QEMU's bdrv_image_info_specific_dump(): format-specific data (ImageInfo's
// format_specific "data") on stdout, one "key: value" line per member,
// dashes in keys shown as spaces, nested objects and lists indented by
// four more spaces per level (starting at `indent` levels), list items
// numbered "[0]:".  For qemu-img info and qemu-io's info command.
void bdrv_image_info_specific_dump(const nlohmann::ordered_json& data, int indent);

}  // namespace qemu
