// The node graph: driver registry, opening (option handling, format
// probing, children), permissions, limits and image creation.
#include <glib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "block/block-backend.h"
#include "block/block_int.h"
#include "block/graph.h"
#include "qemu/cutils.h"

namespace qemu {

extern const BlockDriver& bdrv_file_driver();
extern const BlockDriver& bdrv_host_device_driver();
extern const BlockDriver& bdrv_raw_driver();
extern const BlockDriver& bdrv_null_co_driver();
extern const BlockDriver& bdrv_null_aio_driver();
extern const BlockDriver& bdrv_qcow2_driver();
extern const BlockDriver& bdrv_crash_sim_driver();
extern const BlockDriver& bdrv_nbd_driver();
extern const BlockDriver& bdrv_copy_on_read_driver();
extern const BlockDriver& bdrv_compress_driver();

// --- Registry ---------------------------------------------------------------

namespace {
std::vector<const BlockDriver*>& registry()
{
    static std::vector<const BlockDriver*> drivers;
    return drivers;
}
}  // namespace

void bdrv_register(const BlockDriver* drv)
{
    if (!bdrv_find_driver(drv->name())) {
        registry().push_back(drv);
    }
}

const BlockDriver* bdrv_find_driver(std::string_view name)
{
    for (const BlockDriver* d : registry()) {
        if (d->name() == name) {
            return d;
        }
    }
    return nullptr;
}

const std::vector<const BlockDriver*>& bdrv_drivers()
{
    return registry();
}

void bdrv_init()
{
    bdrv_register(&bdrv_file_driver());
    bdrv_register(&bdrv_host_device_driver());
    bdrv_register(&bdrv_raw_driver());
    bdrv_register(&bdrv_null_co_driver());
    bdrv_register(&bdrv_null_aio_driver());
    bdrv_register(&bdrv_qcow2_driver());
    bdrv_register(&bdrv_crash_sim_driver());
    bdrv_register(&bdrv_nbd_driver());
    bdrv_register(&bdrv_copy_on_read_driver());
    bdrv_register(&bdrv_compress_driver());
}

const char* block_permission_name(uint64_t perm)
{
    switch (perm) {
    case BLK_PERM_CONSISTENT_READ: return "consistent read";
    case BLK_PERM_WRITE: return "write";
    case BLK_PERM_WRITE_UNCHANGED: return "write unchanged";
    case BLK_PERM_RESIZE: return "resize";
    default: return "unknown";
    }
}

const char* prealloc_mode_name(PreallocMode mode)
{
    switch (mode) {
    case PreallocMode::Off: return "off";
    case PreallocMode::Metadata: return "metadata";
    case PreallocMode::Falloc: return "falloc";
    case PreallocMode::Full: return "full";
    }
    return "off";
}

bool parse_prealloc_mode(const std::string& s, PreallocMode& mode)
{
    for (PreallocMode m : {PreallocMode::Off, PreallocMode::Metadata, PreallocMode::Falloc,
                           PreallocMode::Full}) {
        if (s == prealloc_mode_name(m)) {
            mode = m;
            return true;
        }
    }
    return false;
}

void BlockLimits::inherit_zoned(const BlockLimits& child)
{
    zoned = child.zoned;
    zone_size = child.zone_size;
    zone_capacity = child.zone_capacity;
    nr_zones = child.nr_zones;
    max_open_zones = child.max_open_zones;
    max_active_zones = child.max_active_zones;
    max_append_bytes = child.max_append_bytes;
    write_granularity = child.write_granularity;
    zone_desc_ext_size = child.zone_desc_ext_size;
}

// --- BlockDriver defaults ----------------------------------------------------

int BlockDriver::probe(const uint8_t*, size_t, const std::string&) const
{
    return 0;
}

int BlockDriver::probe_device(const std::string&) const
{
    return 0;
}

bool BlockDriver::parse_filename(const std::string& filename, QDict& options, Error& err) const
{
    std::string fn = filename;
    std::string prefix = std::string(protocol_prefix()) + ":";
    if (!protocol_prefix().empty() && starts_with(fn, prefix)) {
        fn = fn.substr(prefix.size());
    }
    if (fn.empty() && needs_filename()) {
        err.set("The '%.*s' block driver requires a file name", int(name().size()), name().data());
        return false;
    }
    if (!options.has("filename")) {
        options.set("filename", fn);
    }
    return true;
}

Task<int> BlockDriver::co_create(const std::string&, QDict&, AioContext&, Error& err) const
{
    err.set("Driver '%.*s' does not support image creation", int(name().size()), name().data());
    co_return -ENOTSUP;
}

// --- BlockDriverState basics -------------------------------------------------

namespace {

// Nodes are made in several threads (graphs of tools in threads, tests).
std::atomic<uint64_t> next_node_number{0};

// QEMU's id_generate(ID_BLOCK): "#block", a counter and two random digits
// (so that nobody relies on the numbers), e.g. "#block042".
std::string generate_node_name()
{
    char digits[3];
    snprintf(digits, sizeof(digits), "%02d", int(g_random_int_range(0, 100)));
    return "#block" + std::to_string(next_node_number++) + digits;
}

}  // namespace

BlockDriverState::BlockDriverState(const BlockDriver& drv, AioContext& ctx)
    : drv_(drv), ctx_(&ctx), node_name_(generate_node_name())
{
}

BlockDriverState::~BlockDriverState()
{
    while (!children_.empty()) {
        remove_child(children_.back().get());
    }
}

BdrvChild* BlockDriverState::child(std::string_view name) const
{
    for (const auto& c : children_) {
        if (c->name == name) {
            return c.get();
        }
    }
    return nullptr;
}

BdrvChild* BlockDriverState::add_child(const std::string& name, std::shared_ptr<BlockDriverState> bs)
{
    auto c = std::make_unique<BdrvChild>();
    c->name = name;
    c->parent = this;
    bdrv_replace_child_bs(c.get(), std::move(bs));
    children_.push_back(std::move(c));
    BdrvChild* ret = children_.back().get();
    if (name == "file") {
        file_ = ret;
    } else if (name == "backing") {
        backing_ = ret;
    }
    return ret;
}

void BlockDriverState::remove_child(BdrvChild* child)
{
    if (child == file_) {
        file_ = nullptr;
    } else if (child == backing_) {
        backing_ = nullptr;
    }
    std::shared_ptr<BlockDriverState> bs = child->bs;
    bdrv_replace_child_bs(child, nullptr);
    children_.erase(std::find_if(children_.begin(), children_.end(),
                                 [child](const auto& c) { return c.get() == child; }));
    if (bs && bs.use_count() > 1) {
        // Others still use it: it no longer needs what we took.
        Error ignored;
        bs->refresh_perms(ignored);
    }
}

void bdrv_replace_child_bs(BdrvChild* child, std::shared_ptr<BlockDriverState> bs)
{
    if (child->bs) {
        auto& p = child->bs->parents_;
        p.erase(std::find(p.begin(), p.end(), child));
    }
    child->bs = std::move(bs);
    if (child->bs) {
        child->bs->parents_.push_back(child);
    }
}

Task<int> BlockDriverState::drv_pwrite_zeroes(uint64_t, uint64_t, unsigned)
{
    co_return -ENOTSUP;
}

Task<int> BlockDriverState::drv_pdiscard(uint64_t, uint64_t)
{
    co_return -ENOTSUP;
}

Task<int> BlockDriverState::drv_flush_to_os()
{
    co_return 0;
}

Task<int> BlockDriverState::drv_flush_to_disk()
{
    co_return 0;
}

Task<int> BlockDriverState::drv_truncate(uint64_t, bool, PreallocMode, unsigned, Error& err)
{
    err.set("Image format driver does not support resize");
    co_return -ENOTSUP;
}

Task<int> BlockDriverState::drv_block_status(bool, uint64_t offset, uint64_t bytes, BlockStatus& out)
{
    out.pnum = bytes;
    if (file_) {
        // A node without a mapping of its own passes through to its file.
        out.flags = BDRV_BLOCK_RAW | BDRV_BLOCK_OFFSET_VALID;
        out.map = offset;
        out.file = file_->bs.get();
    } else {
        out.flags = BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
        if (drv_.is_protocol()) {
            out.flags |= BDRV_BLOCK_OFFSET_VALID;
            out.map = offset;
            out.file = this;
        }
    }
    co_return 0;
}

void BlockDriverState::drv_refresh_limits(BlockLimits&)
{
}

void BlockDriverState::drv_child_perm(const BdrvChild& child, uint64_t parent_perm,
                                      uint64_t parent_shared, uint64_t& perm,
                                      uint64_t& shared) const
{
    if (&child == backing_) {
        // As QEMU's bdrv_default_perms_for_cow(): a backing file is only
        // read, and only as consistently as our parents need.  Its data
        // must not change under us unless our parents accept that.
        perm = parent_perm & BLK_PERM_CONSISTENT_READ;
        shared = (parent_shared & BLK_PERM_WRITE) ? BLK_PERM_WRITE | BLK_PERM_RESIZE : 0;
        shared |= BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE_UNCHANGED;
        return;
    }
    // The child holds this node's metadata and data: we read it whenever we
    // are used, may write and grow it when writable, and cannot let anyone
    // else write it behind our back.
    perm = parent_perm | BLK_PERM_CONSISTENT_READ;
    if (!read_only()) {
        perm |= BLK_PERM_WRITE | BLK_PERM_RESIZE;
    }
    shared = parent_shared & ~(BLK_PERM_WRITE | BLK_PERM_RESIZE);
    if (options_.get("force-share") && *options_.get("force-share") == "on") {
        shared = BLK_PERM_ALL;
    }
}

int BlockDriverState::drv_set_perm(uint64_t, uint64_t, Error&)
{
    return 0;
}

int BlockDriverState::drv_get_info(BlockDriverInfo&)
{
    return -ENOTSUP;
}

void BlockDriverState::drv_get_specific_info(nlohmann::ordered_json&) const
{
}

Task<int> BlockDriverState::drv_check(BdrvCheckResult&, unsigned)
{
    co_return -ENOTSUP;
}

Task<int> BlockDriverState::drv_change_backing_file(const std::string&, const std::string&,
                                                    Error&)
{
    co_return -ENOTSUP;
}

Task<int> BlockDriverState::drv_make_empty(Error& err)
{
    err.set("%.*s does not support emptying nodes", int(drv_.name().size()), drv_.name().data());
    co_return -ENOTSUP;
}

Task<void> BlockDriverState::drv_close()
{
    co_return;
}

Task<void> bdrv_co_close(BlockDriverState* bs)
{
    if (bs->closed_) {
        co_return;
    }
    bs->closed_ = true;
    if (!bs->read_only()) {
        co_await bdrv_co_flush(bs);
    }
    co_await bs->drv_close();
    for (const auto& c : bs->children()) {
        if (c->bs.use_count() == 1) {  // not shared with another parent
            co_await bdrv_co_close(c->bs.get());
        }
    }
}

Task<int64_t> BlockDriverState::drv_get_allocated_file_size()
{
    if (!file_) {
        co_return -ENOTSUP;
    }
    co_return co_await file_->bs->drv_get_allocated_file_size();
}

void BlockDriverState::refresh_limits()
{
    BlockLimits bl;
    for (const auto& c : children_) {
        const BlockLimits& cl = c->bs->limits();
        if (c.get() != file_) {
            continue;  // only the data child constrains requests
        }
        bl.request_alignment = std::max(bl.request_alignment, cl.request_alignment);
        bl.max_transfer = cl.max_transfer;
        bl.opt_transfer = cl.opt_transfer;
        bl.pdiscard_alignment = cl.pdiscard_alignment;
        bl.max_pdiscard = cl.max_pdiscard;
        bl.pwrite_zeroes_alignment = cl.pwrite_zeroes_alignment;
        bl.max_pwrite_zeroes = cl.max_pwrite_zeroes;
        bl.min_mem_alignment = cl.min_mem_alignment;
        bl.opt_mem_alignment = cl.opt_mem_alignment;
        bl.max_iov = cl.max_iov;
    }
    drv_refresh_limits(bl);
    if (bl.request_alignment == 0) {
        bl.request_alignment = 1;
    }
    bl_ = bl;
}

namespace {

// QEMU's bdrv_perm_names(): "write, resize".
std::string perm_names(uint64_t perm)
{
    std::string out;
    for (uint64_t p : {BLK_PERM_CONSISTENT_READ, BLK_PERM_WRITE, BLK_PERM_WRITE_UNCHANGED,
                       BLK_PERM_RESIZE}) {
        if (perm & p) {
            out += (out.empty() ? "" : ", ") + std::string(block_permission_name(p));
        }
    }
    return out;
}

// QEMU's bdrv_child_user_desc().
std::string child_user_desc(const BdrvChild& c)
{
    if (c.parent) {
        return "node '" + c.parent->node_name() + "'";
    }
    if (c.backend && !c.backend->name().empty()) {
        return "block device '" + c.backend->name() + "'";
    }
    return "an unnamed block device";
}

// The permissions of edges being changed, before they are applied.
using PermOverrides = std::vector<std::pair<const BdrvChild*, std::pair<uint64_t, uint64_t>>>;

std::pair<uint64_t, uint64_t> edge_perms(const BdrvChild* c, const PermOverrides& t)
{
    for (auto it = t.rbegin(); it != t.rend(); ++it) {
        if (it->first == c) {
            return it->second;
        }
    }
    return {c->perm, c->shared};
}

}  // namespace

// QEMU's bdrv_parent_perms_conflict() for bs and, with the permissions bs
// would then take on its children, for everything below.
static bool bdrv_perms_conflict(const BlockDriverState& bs, PermOverrides& t, Error& err)
{
    // Newest parent first, as QEMU's list.
    const auto& parents = bs.parents();
    uint64_t perm = 0, shared = BLK_PERM_ALL;
    for (auto a = parents.rbegin(); a != parents.rend(); ++a) {
        auto [a_perm, a_shared] = edge_perms(*a, t);
        perm |= a_perm;
        shared &= a_shared;
        for (auto b = parents.rbegin(); b != parents.rend(); ++b) {
            auto [b_perm, b_shared] = edge_perms(*b, t);
            if (a == b || (b_perm & a_shared) == b_perm) {
                continue;
            }
            const char* node = bs.node_name().c_str();
            err.set("Permission conflict on node '%s': permissions '%s' are both required by %s "
                    "(uses node '%s' as '%s' child) and unshared by %s (uses node '%s' as '%s' "
                    "child).",
                    node, perm_names(b_perm & ~a_shared).c_str(), child_user_desc(**b).c_str(),
                    node, (*b)->name.c_str(), child_user_desc(**a).c_str(), node,
                    (*a)->name.c_str());
            return true;
        }
    }
    for (const auto& c : bs.children()) {
        uint64_t cperm = 0, cshared = BLK_PERM_ALL;
        bs.drv_child_perm(*c, perm, shared, cperm, cshared);
        t.push_back({c.get(), {cperm, cshared}});
        if (bdrv_perms_conflict(*c->bs, t, err)) {
            return true;
        }
    }
    return false;
}

int BlockDriverState::update_permissions(uint64_t perm, uint64_t shared, Error& err)
{
    for (const auto& c : children_) {
        uint64_t old_perm = c->perm, old_shared = c->shared;
        drv_child_perm(*c, perm, shared, c->perm, c->shared);
        int ret = c->bs->refresh_perms(err);
        if (ret < 0) {
            c->perm = old_perm;
            c->shared = old_shared;
            return ret;
        }
    }
    int ret = drv_set_perm(perm, shared, err);
    if (ret < 0) {
        return ret;
    }
    perm_ = perm;
    shared_ = shared;
    return 0;
}

int BlockDriverState::refresh_perms(Error& err)
{
    PermOverrides none;
    if (bdrv_perms_conflict(*this, none, err)) {
        return -EPERM;
    }
    uint64_t perm = 0, shared = BLK_PERM_ALL;
    for (const BdrvChild* p : parents_) {
        perm |= p->perm;
        shared &= p->shared;
    }
    return update_permissions(perm, shared, err);
}

// --- Opening ------------------------------------------------------------------

namespace {

// Options every node understands, whatever its driver.
const OptionSchema& common_open_schema()
{
    static const OptionSchema schema = {
        {"driver", OptionType::String, "Driver name", ""},
        {"node-name", OptionType::String, "Node name", ""},
        {"read-only", OptionType::Bool, "Node is opened in read-only mode", "off"},
        {"cache.direct", OptionType::Bool, "Bypass software writeback cache on the host", "off"},
        {"cache.no-flush", OptionType::Bool, "Ignore flush requests", "off"},
        {"discard", OptionType::String, "discard operation (ignore/off, unmap/on)", "ignore"},
        {"force-share", OptionType::Bool, "always accept other writers (default: off)", "off"},
        {"detect-zeroes", OptionType::String, "try to optimize zero writes (off, on, unmap)", "off"},
    };
    return schema;
}

// Does the file name carry a protocol prefix a driver claims?
const BlockDriver* find_protocol_by_prefix(const std::string& filename)
{
    size_t colon = filename.find(':');
    if (colon == std::string::npos || filename.find('/') < colon) {
        return nullptr;
    }
    std::string prefix = filename.substr(0, colon);
    for (const BlockDriver* d : bdrv_drivers()) {
        if (d->is_protocol() && d->claims_prefix(prefix)) {
            return d;
        }
    }
    return nullptr;
}


constexpr size_t kProbeBytes = 2048;

// Reads the start of the protocol node and picks the format scoring highest.
Task<const BlockDriver*> probe_format(BlockDriverState* proto, const std::string& filename,
                                      Error& err)
{
    BdrvChild probe_child;
    probe_child.name = "probe";
    probe_child.bs = std::shared_ptr<BlockDriverState>(proto, [](BlockDriverState*) {});
    uint8_t buf[kProbeBytes] = {};
    uint64_t len = std::min<uint64_t>(kProbeBytes, proto->total_bytes());
    if (len > 0) {
        AlignedBuffer bounce(kProbeBytes, 4096);
        IOVector qiov(bounce.data(), len);
        int ret = co_await bdrv_co_preadv(&probe_child, 0, len, qiov);
        if (ret < 0) {
            err.set_errno(-ret, "Could not read image for determining its format");
            co_return nullptr;
        }
        memcpy(buf, bounce.data(), len);
    }
    const BlockDriver* best = nullptr;
    int best_score = 0;
    for (const BlockDriver* d : bdrv_drivers()) {
        if (d->is_protocol()) {
            continue;
        }
        int score = d->probe(buf, len, filename);
        if (score > best_score) {
            best = d;
            best_score = score;
        }
    }
    if (!best) {
        err.set("Could not determine image format: No compatible format found");
    }
    co_return best;
}

bool uses_strong_options(const BlockDriverState& bs)
{
    for (const std::string& opt : bs.drv().strong_options()) {
        if (bs.options().has(opt)) {
            return true;
        }
    }
    return false;
}

}  // namespace

QDict bdrv_strong_description(const BlockDriverState& bs)
{
    QDict d;
    d.set("driver", std::string(bs.drv().name()));
    for (const std::string& opt : bs.drv().strong_options()) {
        d.copy_from(bs.options(), opt);
    }
    if (bs.drv().is_protocol()) {
        d.copy_from(bs.options(), "filename");
    }
    for (const auto& c : bs.children()) {
        if (!c->implicit) {
            d.merge_subtree(c->name, bdrv_strong_description(*c->bs));
        }
    }
    return d;
}

namespace {

// The plain name of a node whose data a file name alone describes, or "".
std::string exact_filename(const BlockDriverState& bs)
{
    if (uses_strong_options(bs)) {
        return "";
    }
    if (bs.drv().is_protocol()) {
        if (std::string own = bs.drv_exact_filename(); !own.empty()) {
            return own;
        }
        if (const std::string* fn = bs.options().get("filename")) {
            return *fn;
        }
        return std::string(bs.drv().protocol_prefix()) + "://";
    }
    // A backing file the image names itself does not change what the
    // image's name says; nor does an external data file (QEMU names a
    // qcow2 node after its file child whatever its data file).
    size_t explicit_children = std::count_if(bs.children().begin(), bs.children().end(), [](const auto& c) {
        return !c->implicit && c->name != "data-file";
    });
    if (bs.file() && explicit_children == 1) {
        return exact_filename(*bs.file()->bs);
    }
    return "";
}

// QEMU's user-visible node name: the plain file name when it says it all,
// else json:{...} with the options that matter.
std::string describe_node(const BlockDriverState& bs)
{
    std::string exact = exact_filename(bs);
    return exact.empty() ? "json:" + bdrv_strong_description(bs).to_json() : exact;
}

// QEMU's path_has_protocol(): a ':' before any '/'.
bool path_has_protocol(const std::string& path)
{
    size_t sep = path.find_first_of(":/");
    return sep != std::string::npos && path[sep] == ':';
}

// QEMU's path_combine(): `name` in the directory of `base` (after its
// protocol prefix, if any), or `name` itself when it is absolute.
std::string path_combine(const std::string& base, const std::string& name)
{
    if (!name.empty() && name[0] == '/') {
        return name;
    }
    size_t keep = path_has_protocol(base) ? base.find(':') + 1 : 0;
    if (size_t slash = base.rfind('/'); slash != std::string::npos) {
        keep = std::max(keep, slash + 1);
    }
    return base.substr(0, keep) + name;
}

// Are two nodes' protocol nodes the same file on the host?  Only files
// that exist can be told apart this way; anything else is not the same.
bool same_host_file(const BlockDriverState& a, const BlockDriverState& b)
{
    const BlockDriverState* pa = bdrv_protocol_node(const_cast<BlockDriverState*>(&a));
    const BlockDriverState* pb = bdrv_protocol_node(const_cast<BlockDriverState*>(&b));
    const std::string* fa = pa ? pa->options().get("filename") : nullptr;
    const std::string* fb = pb ? pb->options().get("filename") : nullptr;
    struct stat sa, sb;
    if (!fa || !fb || stat(fa->c_str(), &sa) != 0 || stat(fb->c_str(), &sb) != 0) {
        return false;
    }
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

}  // namespace

std::optional<std::string> bdrv_full_backing_filename(const std::string& backed,
                                                      const std::string& backing, Error& err)
{
    if (backing.empty() || path_has_protocol(backing) || backing[0] == '/') {
        return backing;
    }
    if (backed.empty() || starts_with(backed, "json:")) {
        err.set("Cannot use relative backing file names for '%s'", backed.c_str());
        return std::nullopt;
    }
    return path_combine(backed, backing);
}

namespace {

// QEMU's bdrv_make_absolute_filename(): `name` as seen from the directory
// of the file holding `relative_to` (QEMU's bdrv_dirname()).
std::optional<std::string> make_absolute_filename(const BlockDriverState& relative_to,
                                                  const std::string& name, Error& err)
{
    if (name.empty() || path_has_protocol(name) || name[0] == '/') {
        return name;
    }
    const BlockDriverState* proto = &relative_to;
    while (!proto->drv().is_protocol() && proto->file()) {
        proto = proto->file()->bs.get();
    }
    std::string exact = exact_filename(*proto);
    if (exact.empty()) {
        err.set("Cannot generate a base directory for %.*s nodes", int(proto->drv().name().size()),
                proto->drv().name().data());
        return std::nullopt;
    }
    return path_combine(exact, name);
}

std::optional<std::string> real_path(const std::string& path)
{
    char* resolved = realpath(path.c_str(), nullptr);
    if (!resolved) {
        return std::nullopt;
    }
    std::string out = resolved;
    free(resolved);
    return out;
}

}  // namespace

std::optional<std::string> bdrv_backing_filename_to_open(const BlockDriverState& bs, Error& err)
{
    return make_absolute_filename(bs, bs.backing_file(), err);
}

BdrvChild* bdrv_find_backing_image(BlockDriverState* bs, const std::string& name)
{
    bool name_has_protocol = path_has_protocol(name);
    for (; bs && bs->backing(); bs = bs->backing()->bs.get()) {
        BdrvChild* below = bs->backing();
        Error ignored;
        if (!below->implicit) {
            // Opened from options: only the node's own name can match.
            if (name == below->bs->filename()) {
                return below;
            }
        } else if (name_has_protocol || path_has_protocol(bs->backing_file())) {
            auto full = bdrv_backing_filename_to_open(*bs, ignored);
            if (name == bs->backing_file() || (full && name == *full)) {
                return below;
            }
        } else {
            // Both resolved against this image's directory, symlinks and
            // all.
            auto wanted = make_absolute_filename(*bs, name, ignored);
            auto backing = bdrv_backing_filename_to_open(*bs, ignored);
            auto wanted_real = wanted ? real_path(*wanted) : std::nullopt;
            auto backing_real = backing ? real_path(*backing) : std::nullopt;
            if (wanted_real && backing_real && *wanted_real == *backing_real) {
                return below;
            }
        }
    }
    return nullptr;
}

Task<int> BlockDriverState::open_backing(QDict& options, Error& err)
{
    QDict backing_opts = options.take_subtree("backing");
    std::optional<std::string> reference = options.take("backing");
    if (!reference && backing_opts.empty() && backing_file_.empty()) {
        co_return 0;
    }
    // Checked before anything is opened below us: this image is a file
    // that an overlay above already uses, so its chain never ends.
    for (const BlockDriverState* o = opening_overlay_; o; o = o->opening_overlay_) {
        if (same_host_file(*this, *o)) {
            err.set("Backing file '%s' creates an infinite loop", describe_node(*o).c_str());
            co_return -ELOOP;
        }
    }
    if (reference) {
        BdrvChild* c = attach_reference("backing", *reference, err);
        if (!c) {
            err.prepend("Could not open backing file: ");
            co_return -EINVAL;
        }
        options_.set("backing", *reference);
        co_return 0;
    }
    bool implicit = backing_opts.empty();
    std::optional<std::string> name;
    if (!backing_opts.has("file.filename") && !backing_file_.empty()) {
        name = bdrv_backing_filename_to_open(*this, err);
        if (!name) {
            co_return -EINVAL;
        }
    }
    if (!backing_opts.has("driver") && !backing_format_.empty()) {
        backing_opts.set("driver", backing_format_);
    }
    // Backing files are read-only unless asked otherwise (qemu-img commit
    // writes into one); caching as ours.
    backing_opts.set_default("read-only", "on");
    // As QEMU for children of formats: the format decides what to discard.
    backing_opts.set_default("discard", "unmap");
    backing_opts.set_default("cache.direct", (open_flags_ & BDRV_O_NOCACHE) ? "on" : "off");
    backing_opts.set_default("cache.no-flush", (open_flags_ & BDRV_O_NO_FLUSH) ? "on" : "off");
    if (const std::string* fs = options_.get("force-share")) {
        backing_opts.set_default("force-share", *fs);
    }
    auto bs = co_await bdrv_co_open(name, std::move(backing_opts), 0, *ctx_, err, this, graph_);
    if (!bs) {
        err.prepend("Could not open backing file: ");
        co_return -EINVAL;
    }
    // A backing file the header names keeps its options in its own node
    // only (nothing rebuilds it from ours): recording them here as well put
    // the whole chain below into every node, memory growing with the cube
    // of the chain's depth.
    if (!implicit) {
        options_.merge_subtree("backing", bs->options());
    }
    add_child("backing", std::move(bs))->implicit = implicit;
    co_return 0;
}

BdrvChild* BlockDriverState::attach_reference(const std::string& name, const std::string& reference,
                                              Error& err)
{
    std::shared_ptr<BlockDriverState> node = graph_ ? graph_->lookup(reference) : nullptr;
    if (!node) {
        err.set("Cannot find device='%s' nor node-name='%s'", reference.c_str(), reference.c_str());
        return nullptr;
    }
    if (&node->ctx() != ctx_) {
        // QEMU would move one of them; nodes move only while drained here.
        err.set("Node '%s' is in another iothread; move it back to the main loop first",
                reference.c_str());
        return nullptr;
    }
    BdrvChild* c = add_child(name, std::move(node));
    // What this node, without parents yet, needs of it (QEMU checks the
    // permissions when it attaches a child).
    drv_child_perm(*c, 0, BLK_PERM_ALL, c->perm, c->shared);
    if (c->bs->refresh_perms(err) < 0) {
        remove_child(c);
        return nullptr;
    }
    return c;
}

Task<BdrvChild*> BlockDriverState::open_child(const std::string& name, QDict& options,
                                              bool allow_none, Error& err)
{
    QDict child_opts = options.take_subtree(name);
    std::optional<std::string> child_filename;
    if (name == "file") {
        child_filename = std::move(file_child_filename_);
        file_child_filename_.reset();
    }
    if (auto reference = options.take(name)) {
        if (!child_opts.empty()) {
            err.set("Cannot reference an existing block device with additional options or a new "
                    "filename");
            co_return nullptr;
        }
        BdrvChild* c = attach_reference(name, *reference, err);
        if (c) {
            options_.set(name, *reference);
        }
        co_return c;
    }
    if (child_opts.empty() && !child_filename) {
        if (allow_none) {
            co_return nullptr;
        }
        err.set("A block device must be specified for \"%s\"", name.c_str());
        co_return nullptr;
    }
    // Children inherit the parent's caching mode unless told otherwise.
    child_opts.set_default("cache.direct", (open_flags_ & BDRV_O_NOCACHE) ? "on" : "off");
    child_opts.set_default("cache.no-flush", (open_flags_ & BDRV_O_NO_FLUSH) ? "on" : "off");
    if (const std::string* fs = options_.get("force-share")) {
        child_opts.set_default("force-share", *fs);
    }
    // As QEMU: a driver decides itself which discards to pass down (raw
    // honours its own discard option, qcow2 its pass-discard-* options), so
    // its child defaults to discard=unmap.
    child_opts.set_default("discard", "unmap");
    int flags = (open_flags_ & BDRV_O_RDWR) | BDRV_O_PROTOCOL;
    if (child_opts.has("driver")) {
        flags &= ~BDRV_O_PROTOCOL;  // an explicit driver may be a format too
    }
    auto bs = co_await bdrv_co_open(child_filename, std::move(child_opts), flags, *ctx_, err,
                                    nullptr, graph_);
    if (!bs) {
        co_return nullptr;
    }
    QDict recorded = bs->options();
    options_.merge_subtree(name, recorded);
    co_return add_child(name, std::move(bs));
}

namespace {

// The options every node takes (read-only, cache.*, discard, force-share)
// applied to the BDRV_O_* flags; false after setting err.
// detect-zeroes, after discard: unmap needs discard=unmap, as in QEMU.
bool apply_detect_zeroes(const QDict& options, int& flags, Error& err)
{
    const std::string* v = options.get("detect-zeroes");
    if (!v) {
        return true;  // the caller's flags decide (qemu-nbd --detect-zeroes)
    }
    flags &= ~(BDRV_O_DETECT_ZEROES | BDRV_O_DETECT_ZEROES_UNMAP);
    if (*v == "off") {
        return true;
    }
    if (*v != "on" && *v != "unmap") {
        err.set("invalid parameter value: %s", v->c_str());
        return false;
    }
    if (*v == "unmap" && !(flags & BDRV_O_UNMAP)) {
        err.set("setting detect-zeroes to unmap is not allowed without setting discard operation "
                "to unmap");
        return false;
    }
    flags |= BDRV_O_DETECT_ZEROES | (*v == "unmap" ? BDRV_O_DETECT_ZEROES_UNMAP : 0);
    return true;
}

bool apply_common_options(const QDict& options, int& flags, Error& err)
{
    if (!common_open_schema().validate(options, err)) {
        return false;
    }
    if (options.has("read-only")) {
        if (*parse_bool_option("read-only", *options.get("read-only"), err)) {
            flags &= ~BDRV_O_RDWR;
        } else {
            flags |= BDRV_O_RDWR;
        }
    }
    if (options.has("cache.direct")) {
        flags = *parse_bool_option("cache.direct", *options.get("cache.direct"), err)
                    ? flags | BDRV_O_NOCACHE
                    : flags & ~BDRV_O_NOCACHE;
    }
    if (options.has("cache.no-flush")) {
        flags = *parse_bool_option("cache.no-flush", *options.get("cache.no-flush"), err)
                    ? flags | BDRV_O_NO_FLUSH
                    : flags & ~BDRV_O_NO_FLUSH;
    }
    if (const std::string* d = options.get("discard"); d && !bdrv_parse_discard_flags(*d, flags)) {
        err.set("Invalid discard option");
        return false;
    }
    if (const std::string* fs = options.get("force-share");
        fs && *parse_bool_option("force-share", *fs, err) && (flags & BDRV_O_RDWR)) {
        err.set("force-share=on can only be used with read-only images");
        return false;
    }
    return apply_detect_zeroes(options, flags, err);
}

// The driver of a protocol node without a "driver" option: a protocol
// prefix counts only in a file name given as such, not in a "filename"
// option (which names a file, colons and all); otherwise the device probe
// (host_device for block devices), else file.  nullptr after setting err.
const BlockDriver* find_protocol_driver(const std::optional<std::string>& filename,
                                        const QDict& options, Error& err)
{
    if (filename) {
        return bdrv_find_protocol(*filename, err);
    }
    const std::string* fn = options.get("filename");
    const BlockDriver* drv = bdrv_find_driver("file");
    for (const BlockDriver* d : bdrv_drivers()) {
        if (fn && d->is_protocol() && d->probe_device(*fn) > 0) {
            drv = d;
        }
    }
    return drv;
}

}  // namespace

Task<std::shared_ptr<BlockDriverState>> bdrv_co_open(std::optional<std::string> filename,
                                                     QDict options, int flags, AioContext& ctx,
                                                     Error& err, const BlockDriverState* overlay,
                                                     BlockGraph* graph)
{
    if (filename && starts_with(*filename, "json:")) {
        QDict from_json;
        if (!json_parse_flat(from_json, filename->substr(5), err)) {
            co_return nullptr;
        }
        options.merge_defaults(from_json);
        filename.reset();
    }

    if (!apply_common_options(options, flags, err)) {
        co_return nullptr;
    }

    // Which driver?
    const BlockDriver* drv = nullptr;
    std::shared_ptr<BlockDriverState> probed_file;
    bool probed_raw = false;
    if (const std::string* name = options.get("driver")) {
        drv = bdrv_find_driver(*name);
        if (!drv) {
            err.set("Unknown driver '%s'", name->c_str());
            co_return nullptr;
        }
    } else if (flags & BDRV_O_PROTOCOL) {
        drv = find_protocol_driver(filename, options, err);
        if (!drv) {
            co_return nullptr;
        }
    } else {
        if (!filename && !options.has("file.filename") && !options.has("filename") &&
            !options.has_subtree("file")) {
            err.set("Must specify either driver or file");
            co_return nullptr;
        }
        // Probe: open the protocol layer on its own, then look at its bytes.
        QDict file_opts = options.take_subtree("file");
        if (!filename) {
            filename = options.take("filename");
        }
        for (const char* key : {"cache.direct", "cache.no-flush", "force-share"}) {
            if (const std::string* v = options.get(key)) {
                file_opts.set_default(key, *v);
            }
        }
        int file_flags = (flags & (BDRV_O_RDWR | BDRV_O_UNMAP | BDRV_O_NOCACHE | BDRV_O_NO_FLUSH)) |
                         BDRV_O_PROTOCOL;
        probed_file = co_await bdrv_co_open(filename, std::move(file_opts), file_flags, ctx, err,
                                            nullptr, graph);
        if (!probed_file) {
            co_return nullptr;
        }
        drv = co_await probe_format(probed_file.get(), filename.value_or(""), err);
        if (!drv) {
            co_return nullptr;
        }
        probed_raw = drv->name() == "raw";
        // Like QEMU, warn only where block 0 writes get restricted.
        if (probed_raw && (flags & BDRV_O_RDWR)) {
            report_plain(
                    "WARNING: Image format was not specified for '%s' and probing guessed raw.\n"
                    "         Automatically detecting the format is dangerous for raw images, "
                    "write operations on block 0 will be restricted.\n"
                    "         Specify the 'raw' format explicitly to remove the restrictions.\n",
                    probed_file->filename().c_str());
        }
    }
    options.set("driver", std::string(drv->name()));

    if (drv->is_protocol()) {
        if (filename && !drv->parse_filename(*filename, options, err)) {
            co_return nullptr;
        }
        if (drv->needs_filename() && !options.has("filename")) {
            err.set("The '%.*s' block driver requires a file name", int(drv->name().size()),
                    drv->name().data());
            co_return nullptr;
        }
    }

    if (!drv->open_schema().validate(options, err)) {
        co_return nullptr;
    }

    if ((flags & BDRV_O_COPY_ON_READ) && !(flags & BDRV_O_RDWR)) {
        err.set("Can't use copy-on-read on read-only device");
        co_return nullptr;
    }
    std::shared_ptr<BlockDriverState> bs = drv->new_node(ctx);
    if (!drv->is_protocol() && !probed_file && filename && !options.has("file.filename") &&
        !options.has("file")) {
        bs->file_child_filename_ = filename;
    }
    bs->open_flags_ = flags;
    bs->probed_raw_ = probed_raw;
    QDict remaining = options;
    bs->graph_ = graph;
    if (auto nn = remaining.take("node-name")) {
        bs->node_name_ = *nn;
    }
    if (graph && !graph->claim_name(bs, options.has("node-name"), err)) {
        co_return nullptr;
    }
    for (const char* key : {"driver", "read-only", "cache.direct", "cache.no-flush", "discard",
                            "force-share", "detect-zeroes"}) {
        remaining.erase(key);
    }
    // "backing": null (or, deprecated, "") opens no backing file, as does
    // BDRV_O_NO_BACKING, which leaves "backing." options unused.
    bool open_backing = drv->supports_backing() && !(flags & BDRV_O_NO_BACKING);
    if (remaining.is_null("backing")) {
        remaining.erase("backing");
        open_backing = false;
    } else if (const std::string* b = remaining.get("backing"); b && b->empty()) {
        warn_report("Use of \"backing\": \"\" is deprecated; use \"backing\": null instead");
        remaining.erase("backing");
        open_backing = false;
    }
    // Record the options without the children; open_child and open_backing
    // add theirs.
    bs->options_ = options;
    for (const auto& c : {std::string("file"), std::string("backing")}) {
        bs->options_.take_subtree(c);
        bs->options_.erase(c);
    }
    if (probed_file) {
        bs->options_.merge_subtree("file", probed_file->options());
        bs->add_child("file", std::move(probed_file));
    }

    bs->opening_overlay_ = overlay;
    int ret = co_await bs->drv_open(remaining, err);
    if (ret >= 0 && open_backing) {
        ret = co_await bs->open_backing(remaining, err);
    }
    bs->opening_overlay_ = nullptr;
    if (ret < 0) {
        if (!err) {
            err.set_errno(-ret, "Could not open image");
        }
        co_return nullptr;
    }
    if (!remaining.empty()) {
        const std::string& key = remaining.begin()->first;
        if (drv->is_protocol()) {
            err.set("Block protocol '%.*s' doesn't support the option '%s'", int(drv->name().size()),
                    drv->name().data(), key.c_str());
        } else {
            err.set("Block format '%.*s' does not support the option '%s'", int(drv->name().size()),
                    drv->name().data(), key.c_str());
        }
        co_return nullptr;
    }
    bs->refresh_limits();
    bs->filename_ = describe_node(*bs);
    co_return bs;
}

const BlockDriver* bdrv_find_protocol(const std::string& filename, Error& err)
{
    // Device names come first: udev's persistent names contain colons.
    const BlockDriver* device = nullptr;
    int best_score = 0;
    for (const BlockDriver* d : bdrv_drivers()) {
        if (int score = d->is_protocol() ? d->probe_device(filename) : 0; score > best_score) {
            device = d;
            best_score = score;
        }
    }
    if (device) {
        return device;
    }
    size_t sep = filename.find_first_of(":/");
    if (sep == std::string::npos || filename[sep] != ':') {
        return bdrv_find_driver("file");
    }
    if (const BlockDriver* d = find_protocol_by_prefix(filename)) {
        return d;
    }
    err.set("Unknown protocol '%s'", filename.substr(0, sep).c_str());
    return nullptr;
}

BlockDriverState* bdrv_protocol_node(BlockDriverState* bs)
{
    while (bs && !bs->drv().is_protocol() && bs->file()) {
        bs = bs->file()->bs.get();
    }
    return bs;
}

// --- Creating -----------------------------------------------------------------

Task<int> bdrv_co_create(const BlockDriver& drv, const std::string& filename, QDict& opts,
                         AioContext& ctx, Error& err)
{
    const OptionSchema* schema = drv.create_schema();
    if (!schema) {
        err.set("Driver '%.*s' does not support image creation", int(drv.name().size()),
                drv.name().data());
        co_return -ENOTSUP;
    }
    if (!schema->validate(opts, err)) {
        co_return -EINVAL;
    }
    bool existed = access(filename.c_str(), F_OK) == 0;
    int ret = co_await drv.co_create(filename, opts, ctx, err);
    if (ret < 0 && !existed) {
        unlink(filename.c_str());  // never leave a half-made image behind
    }
    co_return ret;
}

Task<int> bdrv_co_create_file(const std::string& filename, QDict& opts, AioContext& ctx, Error& err)
{
    const BlockDriver* proto = bdrv_find_protocol(filename, err);
    if (!proto) {
        co_return -EINVAL;
    }
    if (!proto->create_schema()) {
        err.set("Driver '%.*s' does not support image creation", int(proto->name().size()),
                proto->name().data());
        co_return -ENOTSUP;
    }
    QDict proto_opts;
    for (const auto& d : proto->create_schema()->descs()) {
        if (auto v = opts.take(d.name)) {
            proto_opts.set(d.name, *v);
        }
    }
    co_return co_await proto->co_create(filename, proto_opts, ctx, err);
}

}  // namespace qemu
