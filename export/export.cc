// Block exports: the common keys, the driver table and the registry (see
// include/export/export.h).
#include "export/export.h"

#include <cassert>
#include <vector>

#include "qemu/cutils.h"

namespace qemu {

namespace {

std::vector<const BlockExportDriver*>& drivers()
{
    static std::vector<const BlockExportDriver*> table;
    return table;
}

// The common keys out of opts; what remains is the type's.
bool take_common(QDict& opts, BlockExportOptions& o, Error& err)
{
    std::optional<std::string> type = opts.take("type");
    if (!type) {
        err.set("Parameter 'type' is missing");
        return false;
    }
    o.type = *type;
    std::optional<std::string> id = opts.take("id");
    if (!id) {
        err.set("Parameter 'id' is missing");
        return false;
    }
    o.id = *id;
    std::optional<std::string> node = opts.take("node-name");
    if (!node) {
        err.set("Parameter 'node-name' is missing");
        return false;
    }
    o.node_name = *node;
    o.iothread = take_string(opts, "iothread");
    std::optional<bool> writable = take_bool(opts, "writable", false, err);
    std::optional<bool> writethrough = writable ? take_bool(opts, "writethrough", false, err) : std::nullopt;
    std::optional<bool> fixed = writethrough ? take_bool(opts, "fixed-iothread", false, err) : std::nullopt;
    if (!fixed) {
        return false;
    }
    o.writable = *writable;
    o.writethrough = *writethrough;
    o.fixed_iothread = *fixed;
    return true;
}

}  // namespace

Task<void> BlockExport::co_shutdown(bool hard)
{
    assert(!shutting_down_);
    shutting_down_ = true;
    co_await co_stop(hard);
    co_await blk_->co_close();
}

void block_export_register(const BlockExportDriver& drv)
{
    if (!block_export_find_driver(drv.type)) {
        drivers().push_back(&drv);
    }
}

const BlockExportDriver* block_export_find_driver(const std::string& type)
{
    for (const BlockExportDriver* d : drivers()) {
        if (type == d->type) {
            return d;
        }
    }
    return nullptr;
}

BlockExportRegistry::BlockExportRegistry(BlockGraph& graph,
                                         std::function<IOThread*(const std::string&)> iothreads)
    : graph_(graph), iothreads_(std::move(iothreads))
{
}

BlockExportRegistry::~BlockExportRegistry()
{
    assert(exports_.empty());
}

Task<BlockExport*> BlockExportRegistry::co_add(QDict opts, Error& err)
{
    BlockExportOptions o;
    if (!take_common(opts, o, err)) {
        co_return nullptr;
    }
    const BlockExportDriver* drv = block_export_find_driver(o.type);
    if (!drv) {
        err.set("Parameter 'type' does not accept value '%s'", o.type.c_str());
        co_return nullptr;
    }
    if (!id_wellformed(o.id)) {
        err.set("Invalid block export id");
        co_return nullptr;
    }
    if (exports_.count(o.id)) {
        err.set("Block export id '%s' is already in use", o.id.c_str());
        co_return nullptr;
    }
    std::shared_ptr<BlockDriverState> node = graph_.lookup(o.node_name);
    if (!node) {
        err.set("Cannot find device='' nor node-name='%s'", o.node_name.c_str());
        co_return nullptr;
    }
    if (o.writable && node->read_only()) {
        err.set("Cannot export read-only node as writable");
        co_return nullptr;
    }
    if (!o.iothread.empty()) {
        IOThread* io = iothreads_(o.iothread);
        if (!io) {
            err.set("iothread \"%s\" not found", o.iothread.c_str());
            co_return nullptr;
        }
        // As QEMU: without fixed-iothread, a node that cannot move stays
        // where it is and the export runs there.
        Error move_err;
        if (&node->ctx() != &io->ctx()) {
            int moved = co_await co_run_in<int>(node->ctx(), [&]() {
                return bdrv_co_change_aio_context(node.get(), io->ctx(), move_err);
            });
            if (moved < 0 && o.fixed_iothread) {
                err = move_err;
                co_return nullptr;
            }
        }
    }
    uint64_t perm = BLK_PERM_CONSISTENT_READ | (o.writable ? uint64_t(BLK_PERM_WRITE) : 0);
    uint64_t shared = BLK_PERM_ALL & ~drv->unshared_perm;
    // Anonymous, as QEMU's export backends: permission conflicts name "an
    // unnamed block device".
    std::unique_ptr<BlockBackend> blk = BlockBackend::attach(node, perm, shared, "", err);
    if (!blk) {
        co_return nullptr;
    }
    AioContext& ctx = blk->ctx();
    std::unique_ptr<BlockExport> exp =
        co_await co_run_in<std::unique_ptr<BlockExport>>(ctx, [&]() {
            return drv->co_create(o, opts, std::move(blk), err);
        });
    if (!exp) {
        co_return nullptr;
    }
    if (!opts.empty()) {
        err.set("Parameter '%s' is unexpected", opts.begin()->first.c_str());
        co_await co_run_in<void>(ctx, [&]() { return exp->co_shutdown(true); });
        co_return nullptr;
    }
    BlockExport* raw = exp.get();
    exports_[o.id] = std::move(exp);
    order_.push_back(raw);
    co_return raw;
}

Task<int> BlockExportRegistry::co_del(const std::string& id, bool hard, Error& err)
{
    auto it = exports_.find(id);
    if (it == exports_.end()) {
        err.set("Export '%s' is not found", id.c_str());
        co_return -ENOENT;
    }
    BlockExport* exp = it->second.get();
    if (exp->shutting_down()) {
        err.set("Export '%s' is already shutting down", id.c_str());
        co_return -EBUSY;
    }
    co_await co_run_in<void>(exp->ctx(), [&]() { return exp->co_shutdown(hard); });
    std::erase(order_, exp);
    exports_.erase(id);
    if (on_deleted_) {
        on_deleted_(id);
    }
    co_return 0;
}

Task<void> BlockExportRegistry::co_shutdown_all()
{
    while (!exports_.empty()) {
        Error ignored;
        std::string id = exports_.begin()->first;
        if (co_await co_del(id, true, ignored) < 0) {
            std::erase(order_, exports_[id].get());
            exports_.erase(id);  // already shutting down elsewhere
        }
    }
}

BlockExport* BlockExportRegistry::find(const std::string& id) const
{
    auto it = exports_.find(id);
    return it == exports_.end() ? nullptr : it->second.get();
}

std::vector<BlockExport*> BlockExportRegistry::list() const
{
    return order_;
}

}  // namespace qemu
