// QMP input framing (see include/monitor/qmp-stream.h).
#include "monitor/qmp-stream.h"

namespace qemu {

namespace {

QmpInput make_input(std::optional<nlohmann::ordered_json> value, const Error& err)
{
    QmpInput in;
    in.ok = value.has_value();
    if (value) {
        in.value = std::move(*value);
    } else {
        in.error = err.message;
    }
    return in;
}

}  // namespace

QmpStreamParser::QmpStreamParser()
    : parser_([this](std::optional<nlohmann::ordered_json> value, const Error& err) {
          out_->push_back(make_input(std::move(value), err));
      })
{
}

void QmpStreamParser::feed(const char* data, size_t len, std::vector<QmpInput>& out)
{
    out_ = &out;
    parser_.feed(std::string_view(data, len));
    out_ = nullptr;
}

QmpInput qmp_parse_value(const std::string& text)
{
    Error err;
    std::optional<nlohmann::ordered_json> value = json_parse_qemu(text, err);
    return make_input(std::move(value), err);
}

}  // namespace qemu
