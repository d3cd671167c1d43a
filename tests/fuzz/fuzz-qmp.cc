// libFuzzer harness: the fuzz input is the byte stream a QMP client sends.
//
// The bytes go through the monitor's framing (QmpStreamParser) in chunks
// whose sizes come from the input itself, and every value is dispatched
// on a session that starts in capabilities mode, as on a real connection:
// hostile clients send truncated JSON, huge or deep values, unknown
// commands and members, wrong argument types and floods of them.  Replies
// must be printable (to_qemu_json); errors are expected, crashes,
// sanitizer reports, hangs and leaks are bugs.
//
// The graph may only hold null-co nodes: commands that would touch host
// files or sockets (a file node, nbd-server-start) are not dispatched.
//
// Build: CXX=clang++ meson setup build-fuzz -Dfuzzing=true; run:
// build-fuzz/tests/fuzz/fuzz-qmp [CORPUS_DIR] (seeds: tests/fuzz/qmp-seeds/).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "block/block_int.h"
#include "monitor/qmp.h"
#include "qemu/qjson.h"

namespace qemu::fuzz {
namespace {

// Would this input reach the host outside the process?
bool touches_host(const QmpInput& in)
{
    if (!in.ok || !in.value.is_object()) {
        return false;
    }
    auto exec = in.value.find("execute");
    if (exec == in.value.end() || !exec->is_string()) {
        return false;
    }
    const std::string name = exec->get<std::string>();
    if (name == "nbd-server-start" || name == "block-export-add") {
        return true;
    }
    if (name == "blockdev-add") {
        auto args = in.value.find("arguments");
        if (args == in.value.end() || !args->is_object()) {
            return false;
        }
        auto drv = args->find("driver");
        return drv == args->end() || !drv->is_string() || *drv != "null-co" ||
               args->dump().find("file") != std::string::npos;
    }
    return false;
}

void run(const uint8_t* data, size_t size)
{
    AioContext ctx;
    BlockGraph graph(ctx);
    BlockExportRegistry exports(graph, [](const std::string&) { return nullptr; });
    QmpEvents events(ctx);
    MonitorContext mon{graph, exports, events, [] {}};
    QmpDispatcher dispatcher(mon);
    QmpSession session;
    QmpStreamParser parser;
    std::vector<QmpInput> inputs;
    size_t pos = 0;
    while (pos < size) {
        // The first byte of each chunk chooses the chunk's length.
        size_t len = std::min<size_t>(size - pos, size_t(data[pos]) % 64 + 1);
        parser.feed(reinterpret_cast<const char*>(data + pos), len, inputs);
        pos += len;
        for (const QmpInput& in : inputs) {
            if (touches_host(in)) {
                continue;
            }
            nlohmann::ordered_json rsp = run_sync(ctx, dispatcher.co_dispatch(session, in));
            (void)to_qemu_json(rsp, false);
        }
        inputs.clear();
    }
}

}  // namespace
}  // namespace qemu::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***)
{
    qemu::bdrv_init();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    qemu::fuzz::run(data, size);
    return 0;
}
