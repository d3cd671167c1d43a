// The QMP monitor: input framing (QmpStreamParser), the dispatcher's
// negotiation, request checks and reply shapes, commands against a graph,
// events, and the BlockBackend accounting query-blockstats reports.
#include <catch2/catch.hpp>

#include <thread>

#include "block/block-backend.h"
#include "block/block-events.h"
#include "monitor/qmp.h"
#include "qemu/qjson.h"

using namespace qemu;

namespace {

std::vector<QmpInput> feed_all(QmpStreamParser& p, const std::string& text, size_t chunk)
{
    std::vector<QmpInput> out;
    for (size_t i = 0; i < text.size(); i += chunk) {
        p.feed(text.data() + i, std::min(chunk, text.size() - i), out);
    }
    return out;
}

// A daemon's worth of state for the dispatcher.
struct Fixture {
    bool drivers = (bdrv_init(), true);
    AioContext ctx;
    BlockGraph graph{ctx};
    BlockExportRegistry exports{graph, [](const std::string&) { return nullptr; }};
    QmpEvents events{ctx};
    bool quit = false;
    MonitorContext mon{graph, exports, events, [this] { quit = true; }};
    QmpDispatcher dispatcher{mon};
    QmpSession session;

    // One input line -> the reply as the monitor prints it.
    std::string run(const std::string& line)
    {
        QmpStreamParser p;
        std::vector<QmpInput> in;
        std::string text = line + "\n";
        p.feed(text.data(), text.size(), in);
        REQUIRE(in.size() == 1);
        nlohmann::ordered_json rsp = run_sync(ctx, dispatcher.co_dispatch(session, in[0]));
        return to_qemu_json(rsp, false);
    }
};

}  // namespace

TEST_CASE("qmp stream: values split at any byte, QEMU's extensions and limits", "[qmp]")
{
    const std::string text =
        "{\"execute\": \"a\", \"id\": [1, {\"x\": \"}\"}]}  {'execute':'b\\'c\"'}\n"
        "[1] 17 \"str\" {\"execute\"\x1b{\"execute\":\"d\"}";
    for (size_t chunk : {size_t(1), size_t(3), text.size()}) {
        QmpStreamParser p;
        std::vector<QmpInput> v = feed_all(p, text, chunk);
        REQUIRE(v.size() == 7);
        CHECK(v[0].ok);
        CHECK(v[0].value["id"][1]["x"] == "}");
        CHECK(v[1].ok);
        CHECK(v[1].value["execute"] == "b'c\"");
        CHECK(v[2].value.is_array());
        CHECK(v[3].value == 17);
        CHECK(v[4].value == "str");
        CHECK_FALSE(v[5].ok);
        CHECK(v[5].error == "JSON parse error, stray '\x1b'");
        CHECK(v[6].value["execute"] == "d");
    }
    QmpStreamParser p;
    std::vector<QmpInput> v;
    std::string deep(QmpStreamParser::kMaxDepth + 1, '[');
    p.feed(deep.data(), deep.size(), v);
    REQUIRE(v.size() == 1);
    CHECK(v[0].error == "JSON nesting depth limit exceeded");
    CHECK(qmp_parse_value("{\"a\" 1}").error == "JSON parse error, missing : in object pair");
    CHECK(qmp_parse_value("{1:2}").error == "JSON parse error, key is not a string in object");
    CHECK(qmp_parse_value("tru").error == "JSON parse error, invalid keyword 'tru'");
    CHECK(qmp_parse_value("[1,]").error == "JSON parse error, expecting value");
}

TEST_CASE("qmp dispatch: negotiation, request checks and reply shapes", "[qmp]")
{
    Fixture f;
    CHECK(f.run(R"({"execute":"query-version"})") ==
          R"({"error": {"class": "CommandNotFound", "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}})");
    CHECK(f.run(R"({"execute":"qmp_capabilities","arguments":{"enable":["x"]}})") ==
          R"({"error": {"class": "GenericError", "desc": "Parameter 'null' does not accept value 'x'"}})");
    CHECK_FALSE(f.session.negotiated);
    CHECK(f.run(R"({"execute":"qmp_capabilities","id":1})") == R"({"return": {}, "id": 1})");
    CHECK(f.session.negotiated);
    CHECK(f.run(R"({"execute":"qmp_capabilities"})") ==
          R"({"error": {"class": "CommandNotFound", "desc": "Capabilities negotiation is already complete, command ignored"}})");
    CHECK(f.run(R"({"execute":"nope","id":"a"})") ==
          R"({"id": "a", "error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}})");
    CHECK(f.run(R"([1])") ==
          R"({"error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}})");
    CHECK(f.run(R"({"id":2})") ==
          R"({"id": 2, "error": {"class": "GenericError", "desc": "QMP input lacks member 'execute'"}})");
    CHECK(f.run(R"({"execute":"x","arguments":[]})") ==
          R"({"error": {"class": "GenericError", "desc": "QMP input member 'arguments' must be an object"}})");
    CHECK(f.run(R"({"exec-oob":"quit"})") ==
          R"({"error": {"class": "GenericError", "desc": "QMP input member 'exec-oob' is unexpected"}})");
    CHECK(f.run(R"({"execute":"query-version","arguments":{"a":1}})") ==
          R"({"error": {"class": "GenericError", "desc": "Parameter 'a' is unexpected"}})");
    std::string v = f.run(R"({"execute":"query-version"})");
    CHECK(v.find(R"("package": "qemu-zoned )") != std::string::npos);
    CHECK_FALSE(f.quit);
    CHECK(f.run(R"({"execute":"quit"})") == R"({"return": {}})");
    CHECK(f.quit);
}

TEST_CASE("qmp commands: blockdev-add/-del, query-named-block-nodes, argument types", "[qmp]")
{
    Fixture f;
    f.session.negotiated = true;
    CHECK(f.run(R"({"execute":"blockdev-add","arguments":{"driver":"null-co","node-name":"n0","size":1048576}})") ==
          R"({"return": {}})");
    CHECK(f.run(R"({"execute":"blockdev-add","arguments":{"driver":"null-co","node-name":"n1","read-only":"on"}})") ==
          R"({"error": {"class": "GenericError", "desc": "Invalid parameter type for 'read-only', expected: boolean"}})");
    CHECK(f.run(R"({"execute":"blockdev-add","arguments":{"driver":"nope","node-name":"n1"}})") ==
          R"({"error": {"class": "GenericError", "desc": "Parameter 'driver' does not accept value 'nope'"}})");
    std::string nodes = f.run(R"({"execute":"query-named-block-nodes"})");
    CHECK(nodes.find(R"("node-name": "n0")") != std::string::npos);
    CHECK(nodes.find(R"("virtual-size": 1048576)") != std::string::npos);
    CHECK(f.run(R"({"execute":"block_resize","arguments":{"node-name":"n0","size":"1"}})") ==
          R"({"error": {"class": "GenericError", "desc": "Invalid parameter type for 'size', expected: integer"}})");
    CHECK(f.run(R"({"execute":"blockdev-del","arguments":{"node-name":"n0"}})") == R"({"return": {}})");
    CHECK(f.run(R"({"execute":"blockdev-del","arguments":{"node-name":"n0"}})") ==
          R"({"error": {"class": "GenericError", "desc": "Failed to find node with node-name='n0'"}})");
    CHECK(f.run(R"({"execute":"query-named-block-nodes"})") == R"({"return": []})");
}

TEST_CASE("qmp events: only negotiated sinks get them, in QEMU's shape", "[qmp]")
{
    AioContext ctx;
    QmpEvents events(ctx);
    std::vector<std::string> got;
    int h = events.subscribe([&](const nlohmann::ordered_json& ev) {
        nlohmann::ordered_json e = ev;
        e["timestamp"] = {{"seconds", 0}, {"microseconds", 0}};
        got.push_back(to_qemu_json(e, false));
    });
    events.emit("BLOCK_EXPORT_DELETED", {{"id", "e0"}});
    events.unsubscribe(h);
    events.emit("BLOCK_EXPORT_DELETED", {{"id", "e1"}});
    REQUIRE(got.size() == 1);
    CHECK(got[0] ==
          R"({"timestamp": {"seconds": 0, "microseconds": 0}, "event": "BLOCK_EXPORT_DELETED", "data": {"id": "e0"}})");
}

TEST_CASE("BlockBackend accounting: bytes, operations, failed and invalid requests", "[qmp]")
{
    bdrv_init();
    AioContext ctx;
    QDict opts;
    opts.set("driver", "null-co");
    opts.set("size", "1048576");
    Error err;
    auto blk = BlockBackend::open(std::nullopt, opts, BDRV_O_RDWR, ctx, err);
    REQUIRE(blk);
    std::vector<uint8_t> buf(4096);
    CHECK(blk->pwrite(0, 4096, buf.data()) == 0);
    CHECK(blk->pwrite(8192, 4096, buf.data()) == 0);
    CHECK(blk->pread(0, 4096, buf.data()) == 0);
    CHECK(blk->pread(1048576, 4096, buf.data()) == -EIO);  // out of range: invalid
    CHECK(blk->flush() == 0);
    const BlockAcctStats& s = blk->stats();
    CHECK(s.get(BlockAcctType::Write).bytes == 8192);
    CHECK(s.get(BlockAcctType::Write).ops == 2);
    CHECK(s.get(BlockAcctType::Read).ops == 1);
    CHECK(s.get(BlockAcctType::Read).invalid == 1);
    CHECK(s.get(BlockAcctType::Flush).ops == 1);
    CHECK(s.wr_highest_offset() == 12288);
    CHECK(s.last_done_ns() >= 0);
}

TEST_CASE("qmp events: BLOCK_IMAGE_CORRUPTED from the block layer, from another thread", "[qmp]")
{
    AioContext ctx;
    QmpEvents events(ctx);
    std::vector<std::string> got;
    events.subscribe([&](const nlohmann::ordered_json& ev) {
        got.push_back(to_qemu_json(ev["data"], false));
    });
    events.install_block_listener();
    std::thread raiser([] {
        BlockImageCorruptedEvent e;
        e.node_name = "q0";
        e.msg = "Preventing invalid write on metadata (overlaps with refcount table)";
        e.offset = 65536;
        e.size = 512;
        e.fatal = true;
        block_event_image_corrupted(e);
    });
    raiser.join();
    while (got.empty()) {
        ctx.poll(true);
    }
    set_block_event_listener({});
    CHECK(got[0] ==
          R"j({"device": "", "msg": "Preventing invalid write on metadata (overlaps with refcount table)", "offset": 65536, "node-name": "q0", "fatal": true, "size": 512})j");
}
