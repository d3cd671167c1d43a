// QEMU's JSON dialect: a lexer, a streamer that cuts the token stream into
// top-level values, and a recursive-descent parser (see json-parser.h).
// Error texts and the order in which they win follow QEMU's
// qobject/json-{lexer,streamer,parser}.c, so that a client sees the same
// message for the same bad input.
#include "qemu/json-parser.h"

#include <cerrno>
#include <cstdlib>
#include <vector>

namespace qemu {

namespace {

constexpr size_t kMaxTokenSize = size_t(64) << 20;
constexpr size_t kMaxTokenCount = size_t(2) << 20;
constexpr int kMaxNesting = 1 << 10;

enum class Tok { LCurly, RCurly, LSquare, RSquare, Colon, Comma, String, Integer, Float, Keyword };

struct Token {
    Tok type;
    std::string text;
};

// Lexer states; a step yields a state, a finished token or an error.
enum class Lx {
    Start, DqString, DqEscape, SqString, SqEscape, Zero, Sign, Digits, Mantissa,
    MantissaDigits, ExpE, ExpSign, ExpDigits, Keyword, Recovery,
    // Results of a step rather than states:
    Emit, Error,
};

struct Step {
    Lx next;
    Tok token = Tok::Comma;  // with Lx::Emit
    bool lookahead = false;  // the character is not consumed
};

bool is_digit(unsigned c) { return c >= '0' && c <= '9'; }

// A number or keyword ends at any character that cannot continue it.
Step terminal(Tok t) { return {Lx::Emit, t, true}; }

Step step_start(unsigned c)
{
    switch (c) {
    case '"': return {Lx::DqString};
    case '\'': return {Lx::SqString};
    case '0': return {Lx::Zero};
    case '-': return {Lx::Sign};
    case '{': return {Lx::Emit, Tok::LCurly};
    case '}': return {Lx::Emit, Tok::RCurly};
    case '[': return {Lx::Emit, Tok::LSquare};
    case ']': return {Lx::Emit, Tok::RSquare};
    case ',': return {Lx::Emit, Tok::Comma};
    case ':': return {Lx::Emit, Tok::Colon};
    case ' ': case '\t': case '\r': case '\n': return {Lx::Start};
    }
    if (c >= '1' && c <= '9') {
        return {Lx::Digits};
    }
    if (c >= 'a' && c <= 'z') {
        return {Lx::Keyword};
    }
    return {Lx::Error};
}

Step step_string(unsigned c, char quote, Lx self, Lx escape)
{
    if (c == unsigned(quote)) {
        return {Lx::Emit, Tok::String};
    }
    if (c == '\\') {
        return {escape};
    }
    return c >= 0x20 && c <= 0xFD ? Step{self} : Step{Lx::Error};
}

Step step_recovery(unsigned c)
{
    bool resync = (c < 0x20 && c != '\t') || c >= 0xFE || c == '[' || c == ']' || c == '{' ||
                  c == '}' || c == ':' || c == ',';
    return resync ? Step{Lx::Start, Tok::Comma, true} : Step{Lx::Recovery};
}

Step step(Lx state, unsigned c)
{
    switch (state) {
    case Lx::Start: return step_start(c);
    case Lx::Recovery: return step_recovery(c);
    case Lx::DqString: return step_string(c, '"', Lx::DqString, Lx::DqEscape);
    case Lx::SqString: return step_string(c, '\'', Lx::SqString, Lx::SqEscape);
    case Lx::DqEscape: return c >= 0x20 && c <= 0xFD ? Step{Lx::DqString} : Step{Lx::Error};
    case Lx::SqEscape: return c >= 0x20 && c <= 0xFD ? Step{Lx::SqString} : Step{Lx::Error};
    case Lx::Zero:
        return is_digit(c) ? Step{Lx::Error} : c == '.' ? Step{Lx::Mantissa} : terminal(Tok::Integer);
    case Lx::Sign:
        return c == '0' ? Step{Lx::Zero} : is_digit(c) ? Step{Lx::Digits} : Step{Lx::Error};
    case Lx::Digits:
        if (is_digit(c)) return {Lx::Digits};
        if (c == 'e' || c == 'E') return {Lx::ExpE};
        return c == '.' ? Step{Lx::Mantissa} : terminal(Tok::Integer);
    case Lx::Mantissa: return is_digit(c) ? Step{Lx::MantissaDigits} : Step{Lx::Error};
    case Lx::MantissaDigits:
        if (is_digit(c)) return {Lx::MantissaDigits};
        return c == 'e' || c == 'E' ? Step{Lx::ExpE} : terminal(Tok::Float);
    case Lx::ExpE:
        if (c == '-' || c == '+') return {Lx::ExpSign};
        return is_digit(c) ? Step{Lx::ExpDigits} : Step{Lx::Error};
    case Lx::ExpSign: return is_digit(c) ? Step{Lx::ExpDigits} : Step{Lx::Error};
    case Lx::ExpDigits: return is_digit(c) ? Step{Lx::ExpDigits} : terminal(Tok::Float);
    case Lx::Keyword: return c >= 'a' && c <= 'z' ? Step{Lx::Keyword} : terminal(Tok::Keyword);
    case Lx::Emit:
    case Lx::Error:
        break;
    }
    return {Lx::Error};
}

// --- parser ---------------------------------------------------------------

bool valid_codepoint(long cp)
{
    if (cp < 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
        return false;
    }
    // Noncharacters.
    return !((cp >= 0xFDD0 && cp <= 0xFDEF) || (cp & 0xFFFE) == 0xFFFE);
}

// Modified UTF-8: U+0000 is C0 80.
void append_utf8(std::string& out, long cp)
{
    if (cp == 0) {
        out += "\xC0\x80";
    } else if (cp < 0x80) {
        out += char(cp);
    } else if (cp < 0x800) {
        out += char(0xC0 | (cp >> 6));
        out += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += char(0xE0 | (cp >> 12));
        out += char(0x80 | ((cp >> 6) & 0x3F));
        out += char(0x80 | (cp & 0x3F));
    } else {
        out += char(0xF0 | (cp >> 18));
        out += char(0x80 | ((cp >> 12) & 0x3F));
        out += char(0x80 | ((cp >> 6) & 0x3F));
        out += char(0x80 | (cp & 0x3F));
    }
}

// Decodes one modified-UTF-8 sequence at s[i]; -1 when it is malformed,
// overlong (but for C0 80), or not a valid code point.
long decode_utf8(const std::string& s, size_t& i)
{
    unsigned char b = s[i++];
    if (b < 0x80) {
        return b;
    }
    int len = b >= 0xFC ? 6 : b >= 0xF8 ? 5 : b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 0;
    if (len == 0) {
        return -1;
    }
    long cp = b & (0x7F >> len);
    for (int k = 1; k < len; k++) {
        if (i >= s.size() || (static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) {
            return -1;
        }
        cp = (cp << 6) | (s[i++] & 0x3F);
    }
    static const long kMin[] = {0, 0, 0x80, 0x800, 0x10000, 0x200000, 0x4000000};
    if (cp < kMin[len] && !(len == 2 && cp == 0)) {
        return -1;
    }
    return cp == 0 || valid_codepoint(cp) ? cp : -1;
}

int hex4(const std::string& s, size_t i)
{
    int cp = 0;
    for (size_t k = i; k < i + 4; k++) {
        if (k >= s.size() || !isxdigit(static_cast<unsigned char>(s[k]))) {
            return -1;
        }
        cp = cp * 16 + (isdigit(static_cast<unsigned char>(s[k])) ? s[k] - '0' : (s[k] | 0x20) - 'a' + 10);
    }
    return cp;
}

class Parser {
public:
    explicit Parser(const std::vector<Token>& toks) : toks_(toks) {}

    std::optional<nlohmann::ordered_json> parse(Error& err)
    {
        std::optional<nlohmann::ordered_json> v = value();
        if (err_.is_set()) {
            err = err_;
            return std::nullopt;
        }
        return v;
    }

private:
    const Token* peek() const { return pos_ < toks_.size() ? &toks_[pos_] : nullptr; }
    const Token* pop() { return pos_ < toks_.size() ? &toks_[pos_++] : nullptr; }
    // The first error is the one reported.
    std::nullopt_t fail(const std::string& msg)
    {
        if (!err_.is_set()) {
            err_.set("JSON parse error, %s", msg.c_str());
        }
        return std::nullopt;
    }

    std::optional<nlohmann::ordered_json> value()
    {
        const Token* t = peek();
        if (!t) {
            return fail("premature EOI");
        }
        switch (t->type) {
        case Tok::LCurly: return object();
        case Tok::LSquare: return array();
        case Tok::String: return string(*pop());
        case Tok::Integer: return integer(pop()->text);
        case Tok::Float: return nlohmann::ordered_json(strtod(pop()->text.c_str(), nullptr));
        case Tok::Keyword: return keyword(pop()->text);
        default: return fail("expecting value");
        }
    }

    std::optional<nlohmann::ordered_json> keyword(const std::string& k)
    {
        if (k == "true" || k == "false") {
            return nlohmann::ordered_json(k == "true");
        }
        if (k == "null") {
            return nlohmann::ordered_json(nullptr);
        }
        return fail("invalid keyword '" + k + "'");
    }

    static nlohmann::ordered_json integer(const std::string& text)
    {
        errno = 0;
        long long v = strtoll(text.c_str(), nullptr, 10);
        if (errno == 0) {
            return nlohmann::ordered_json(int64_t(v));
        }
        if (text[0] != '-') {
            errno = 0;
            unsigned long long u = strtoull(text.c_str(), nullptr, 10);
            if (errno == 0) {
                return nlohmann::ordered_json(uint64_t(u));
            }
        }
        return nlohmann::ordered_json(strtod(text.c_str(), nullptr));
    }

    std::optional<nlohmann::ordered_json> string(const Token& t);
    std::optional<nlohmann::ordered_json> object();
    std::optional<nlohmann::ordered_json> array();
    bool pair(nlohmann::ordered_json& obj);

    const std::vector<Token>& toks_;
    size_t pos_ = 0;
    Error err_;
};

std::optional<nlohmann::ordered_json> Parser::string(const Token& t)
{
    const std::string& s = t.text;
    char quote = s[0];
    std::string out;
    size_t i = 1;
    while (i < s.size() && s[i] != quote) {
        if (s[i] != '\\') {
            long cp = decode_utf8(s, i);
            if (cp < 0) {
                return fail("invalid UTF-8 sequence in string");
            }
            append_utf8(out, cp);
            continue;
        }
        size_t beg = i++;
        char e = i < s.size() ? s[i++] : '\0';
        static const std::string kPlain = "\"'\\/", kFrom = "bfnrt", kTo = "\b\f\n\r\t";
        if (kPlain.find(e) != std::string::npos && e) {
            out += e;
        } else if (e && kFrom.find(e) != std::string::npos) {
            out += kTo[kFrom.find(e)];
        } else if (e == 'u') {
            long cp = hex4(s, i);
            i += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF && i + 1 < s.size() && s[i] == '\\' && s[i + 1] == 'u') {
                int low = hex4(s, i + 2);
                cp = low >= 0xDC00 && low <= 0xDFFF ? 0x10000 + ((cp & 0x3FF) << 10) + (low & 0x3FF) : -1;
                i += cp >= 0 ? 6 : 0;
            }
            if (cp != 0 && !valid_codepoint(cp)) {
                return fail(s.substr(beg, std::min(i, s.size()) - beg) + " is not a valid Unicode character");
            }
            append_utf8(out, cp);
        } else {
            return fail("invalid escape sequence in string");
        }
    }
    return nlohmann::ordered_json(std::move(out));
}

bool Parser::pair(nlohmann::ordered_json& obj)
{
    if (!peek()) {
        fail("premature EOI");
        return false;
    }
    std::optional<nlohmann::ordered_json> key = value();
    if (!key || !key->is_string()) {
        fail("key is not a string in object");
        return false;
    }
    const Token* colon = pop();
    if (!colon) {
        fail("premature EOI");
        return false;
    }
    if (colon->type != Tok::Colon) {
        fail("missing : in object pair");
        return false;
    }
    std::optional<nlohmann::ordered_json> v = value();
    if (!v) {
        fail("Missing value in dict");
        return false;
    }
    const std::string& k = key->get_ref<const std::string&>();
    if (obj.contains(k)) {
        fail("duplicate key");
        return false;
    }
    obj[k] = std::move(*v);
    return true;
}

std::optional<nlohmann::ordered_json> Parser::object()
{
    pop();  // {
    nlohmann::ordered_json obj = nlohmann::ordered_json::object();
    const Token* t = peek();
    if (!t) {
        return fail("premature EOI");
    }
    if (t->type == Tok::RCurly) {
        pop();
        return obj;
    }
    if (!pair(obj)) {
        return std::nullopt;
    }
    for (t = pop(); !t || t->type != Tok::RCurly; t = pop()) {
        if (!t) {
            return fail("premature EOI");
        }
        if (t->type != Tok::Comma) {
            return fail("expected separator in dict");
        }
        if (!pair(obj)) {
            return std::nullopt;
        }
    }
    return obj;
}

std::optional<nlohmann::ordered_json> Parser::array()
{
    pop();  // [
    nlohmann::ordered_json arr = nlohmann::ordered_json::array();
    const Token* t = peek();
    if (!t) {
        return fail("premature EOI");
    }
    if (t->type == Tok::RSquare) {
        pop();
        return arr;
    }
    for (;;) {
        std::optional<nlohmann::ordered_json> v = value();
        if (!v) {
            return fail("expecting value");
        }
        arr.push_back(std::move(*v));
        t = pop();
        if (!t) {
            return fail("premature EOI");
        }
        if (t->type == Tok::RSquare) {
            return arr;
        }
        if (t->type != Tok::Comma) {
            return fail("expected separator in list");
        }
    }
}

}  // namespace

struct JsonStreamParser::Impl {
    Emit emit;
    Lx state = Lx::Start;
    std::string text;  // the token being lexed
    std::vector<Token> tokens;
    size_t token_size = 0;
    int braces = 0;
    int brackets = 0;

    void finish(std::optional<nlohmann::ordered_json> v, const Error& err)
    {
        braces = brackets = 0;
        tokens.clear();
        token_size = 0;
        emit(std::move(v), err);
    }

    void fail(const char* msg)
    {
        Error err;
        err.set("%s", msg);
        finish(std::nullopt, err);
    }

    void end_of_input()
    {
        if (tokens.empty()) {
            return;
        }
        Error err;
        std::optional<nlohmann::ordered_json> v = Parser(tokens).parse(err);
        finish(std::move(v), err);
    }

    void token(Tok type)
    {
        braces += type == Tok::LCurly ? 1 : type == Tok::RCurly ? -1 : 0;
        brackets += type == Tok::LSquare ? 1 : type == Tok::RSquare ? -1 : 0;
        if (token_size + text.size() + 1 > kMaxTokenSize) {
            return fail("JSON token size limit exceeded");
        }
        if (tokens.size() + 1 > kMaxTokenCount) {
            return fail("JSON token count limit exceeded");
        }
        if (braces + brackets > kMaxNesting) {
            return fail("JSON nesting depth limit exceeded");
        }
        token_size += text.size();
        tokens.push_back({type, text});
        if ((braces > 0 || brackets > 0) && braces >= 0 && brackets >= 0) {
            return;
        }
        end_of_input();
    }

    void stray()
    {
        Error err;
        err.set("JSON parse error, stray '%s'", text.c_str());
        finish(std::nullopt, err);
    }

    void feed_char(unsigned char c, bool flush)
    {
        bool consumed = false;
        while (flush ? state != Lx::Start : !consumed) {
            Step s = step(state, c);
            consumed = !flush && !s.lookahead;
            if (consumed) {
                text += char(c);
            }
            switch (s.next) {
            case Lx::Emit:
                token(s.token);
                text.clear();
                state = Lx::Start;
                break;
            case Lx::Start:
                text.clear();
                state = Lx::Start;
                break;
            case Lx::Error:
                stray();
                text.clear();
                state = Lx::Recovery;
                break;
            case Lx::Recovery:
                text.clear();
                state = Lx::Recovery;
                break;
            default:
                state = s.next;
            }
        }
        if (text.size() > kMaxTokenSize) {
            text.clear();
            state = Lx::Start;
            fail("JSON token size limit exceeded");
        }
    }
};

JsonStreamParser::JsonStreamParser(Emit emit) : impl_(std::make_unique<Impl>())
{
    impl_->emit = std::move(emit);
}

JsonStreamParser::~JsonStreamParser() = default;

void JsonStreamParser::feed(std::string_view bytes)
{
    for (char c : bytes) {
        impl_->feed_char(static_cast<unsigned char>(c), false);
    }
}

void JsonStreamParser::flush()
{
    impl_->feed_char(0, true);
    impl_->end_of_input();
}

std::optional<nlohmann::ordered_json> json_parse_qemu(std::string_view text, Error& err)
{
    std::optional<nlohmann::ordered_json> result;
    Error first;
    JsonStreamParser parser([&](std::optional<nlohmann::ordered_json> v, const Error& e) {
        if (result) {
            result.reset();
            first.set("Expecting at most one JSON value");
        }
        if (first.is_set()) {
            return;
        }
        result = std::move(v);
        first = e;
    });
    parser.feed(text);
    parser.flush();
    if (!result && !first.is_set()) {
        first.set("Expecting a JSON value");
    }
    if (first.is_set()) {
        err = first;
        return std::nullopt;
    }
    return result;
}

}  // namespace qemu
