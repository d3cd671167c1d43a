#include "qemu/iothread.h"

#include <future>

namespace qemu {

IOThread::IOThread(std::string id) : id_(std::move(id))
{
    std::promise<AioContext*> ready;
    std::future<AioContext*> started = ready.get_future();
    thread_ = std::thread([this, &ready] {
        // The ring accepts submissions from its creator only: the context
        // is made in the thread that will run it.
        AioContext ctx;
        ready.set_value(&ctx);
        while (!stop_) {
            ctx.poll(true);
        }
        // Work posted while stopping (a result for a waiting coroutine
        // elsewhere) still runs.
        while (ctx.poll(false)) {
        }
    });
    ctx_ = started.get();
}

IOThread::~IOThread()
{
    ctx_->post([this] { stop_ = true; });
    thread_.join();
}

}  // namespace qemu
