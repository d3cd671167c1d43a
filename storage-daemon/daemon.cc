// qemu-storage-daemon's state and option handlers (see daemon.h).
#include "daemon.h"

#include <sys/socket.h>
#include <unistd.h>

#include "block/block-events.h"
#include "export/nbd-server.h"
#include "monitor/qmp-convert.h"
#include "qemu/cutils.h"

namespace qemu {

StorageDaemon::StorageDaemon()
    : graph_(ctx_),
      exports_(graph_, [this](const std::string& id) { return find_iothread(id); }),
      events_(ctx_),
      mon_{graph_, exports_, events_, [this] { request_quit(); }},
      dispatcher_(mon_),
      server_(ctx_, dispatcher_, events_)
{
    // An export without clients goes at once, and QEMU's event then
    // precedes the reply to the block-export-del that deleted it.
    exports_.set_on_deleted([this](const std::string& id) {
        events_.emit("BLOCK_EXPORT_DELETED", {{"id", id}});
    });
    events_.install_block_listener();
}

StorageDaemon::~StorageDaemon()
{
    if (!shut_down_) {
        run_sync(ctx_, co_shutdown());
    }
    set_block_event_listener({});
    for (auto& [id, c] : chardevs_) {
        if (c.listen_fd >= 0) {
            close(c.listen_fd);
        }
        if (c.client_fd >= 0) {
            close(c.client_fd);
        }
    }
}

IOThread* StorageDaemon::find_iothread(const std::string& id)
{
    auto it = iothreads_.find(id);
    return it == iothreads_.end() ? nullptr : it->second.get();
}

bool StorageDaemon::parse_option(const std::string& text, const char* implied_key, QDict& opts,
                                 Error& err)
{
    if (!text.empty() && text[0] == '{') {
        return json_parse_flat(opts, text, err);
    }
    return keyval_parse(opts, text, implied_key, err);
}

bool StorageDaemon::add_blockdev(const std::string& text, Error& err)
{
    QDict opts;
    if (!parse_option(text, "driver", opts, err)) {
        return false;
    }
    if (!blockdev_options_check(opts, err)) {
        return false;
    }
    return graph_.add(std::move(opts), err) != nullptr;
}

bool StorageDaemon::add_object(const std::string& text, Error& err)
{
    QDict opts;
    if (!parse_option(text, "qom-type", opts, err)) {
        return false;
    }
    std::optional<std::string> type = opts.take("qom-type");
    if (!type) {
        err.set("Parameter 'qom-type' is missing");
        return false;
    }
    // The only user-creatable object type we have.
    if (*type != "iothread") {
        err.set("Parameter 'qom-type' does not accept value '%s'", type->c_str());
        return false;
    }
    std::optional<std::string> id = opts.take("id");
    if (!id) {
        err.set("Parameter 'id' is missing");
        return false;
    }
    if (!opts.empty()) {
        err.set("Parameter '%s' is unexpected", opts.begin()->first.c_str());
        return false;
    }
    if (!id_wellformed(*id)) {
        err.set("Parameter 'id' expects an identifier");
        err.add_hint("Identifiers consist of letters, digits, '-', '.', '_', starting with a "
                     "letter.");
        return false;
    }
    if (iothreads_.count(*id)) {
        err.set("attempt to add duplicate property '%s' to object (type 'container')",
                id->c_str());
        return false;
    }
    iothreads_[*id] = std::make_unique<IOThread>(*id);
    return true;
}

bool StorageDaemon::add_export(const std::string& text, Error& err)
{
    QDict opts;
    if (!parse_option(text, "type", opts, err)) {
        return false;
    }
    return run_sync(ctx_, exports_.co_add(std::move(opts), err)) != nullptr;
}

bool StorageDaemon::start_nbd_server(const std::string& text, Error& err)
{
    QDict opts;
    return parse_option(text, nullptr, opts, err) &&
           nbd_server_start_flat(ctx_, opts, "addr.", err);
}

bool StorageDaemon::add_chardev(const std::string& text, Error& err)
{
    Chardev c;
    if (!chardev_parse_and_open(text, c, err)) {
        return false;
    }
    if (chardevs_.count(c.id)) {
        err.set("attempt to add duplicate property '%s' to object (type 'container')",
                c.id.c_str());
        for (int fd : {c.listen_fd, c.client_fd}) {
            if (fd >= 0) {
                close(fd);
            }
        }
        return false;
    }
    chardevs_[c.id] = c;
    return true;
}

bool StorageDaemon::add_monitor(const std::string& text, Error& err)
{
    QDict opts;
    if (!parse_option(text, "chardev", opts, err)) {
        return false;
    }
    std::optional<std::string> chardev = opts.take("chardev");
    std::string mode = take_string(opts, "mode", "control");
    opts.take("id");  // names the monitor; nothing refers to it
    std::optional<bool> pretty = take_bool(opts, "pretty", false, err);
    if (!pretty) {
        return false;
    }
    if (!chardev) {
        err.set("Parameter 'chardev' is missing");
        return false;
    }
    if (!opts.empty()) {
        err.set("Parameter '%s' is unexpected", opts.begin()->first.c_str());
        return false;
    }
    if (mode == "readline") {
        err.set("Only QMP is supported");
        return false;
    }
    if (mode != "control") {
        err.set("Parameter 'mode' does not accept value '%s'", mode.c_str());
        return false;
    }
    auto it = chardevs_.find(*chardev);
    if (it == chardevs_.end()) {
        err.set("chardev \"%s\" not found", chardev->c_str());
        return false;
    }
    Chardev& c = it->second;
    if (c.listen_fd < 0 && c.client_fd < 0) {
        err.set("Device '%s' is in use", chardev->c_str());
        return false;
    }
    if (c.listen_fd >= 0) {
        server_.add_listener(c.listen_fd, c.client_fd, *pretty);
    } else {
        server_.add_client(c.client_fd, *pretty);
    }
    c.listen_fd = c.client_fd = -1;
    return true;
}

Task<void> StorageDaemon::co_wait_for_signal()
{
    auto guard = RequestCounter::Guard(signal_waiter_);
    while (!quit_) {
        co_await ctx_.poll_in(signal_fd());
        char buf[16];
        if (read(signal_fd(), buf, sizeof(buf)) > 0) {
            quit_ = true;
        }
    }
}

int StorageDaemon::main_loop()
{
    co_spawn(co_wait_for_signal());
    while (!quit_) {
        ctx_.poll(true);
    }
    run_sync(ctx_, co_shutdown());
    return 0;
}

// QEMU's order: the monitors go first (nothing new starts), then the
// exports (each waits for its requests in flight), then every node is
// drained and flushed, so that every write acknowledged is on disk.
Task<void> StorageDaemon::co_shutdown()
{
    shut_down_ = true;
    quit_ = true;
    signal_wake();  // co_wait_for_signal() ends
    while (signal_waiter_.count() > 0) {
        co_await signal_waiter_.wait_idle();
    }
    co_await server_.co_stop();
    if (nbd_server_get()) {
        Error ignored;
        co_await nbd_server_co_stop_all(exports_, ignored);
    }
    co_await exports_.co_shutdown_all();
    for (const std::shared_ptr<BlockDriverState>& bs : graph_.nodes()) {
        int ret = co_await co_run_in<int>(bs->ctx(), [&]() -> Task<int> {
            auto section = co_await DrainedSection::begin(bs.get());
            co_return co_await bdrv_co_flush(bs.get());
        });
        if (ret < 0) {
            error_report("Failed to flush node '%s': %s", bs->node_name().c_str(),
                         result_strerror(ret));
        }
    }
}

}  // namespace qemu
