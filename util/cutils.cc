#include "qemu/cutils.h"

#include "qemu/error.h"

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace qemu {

namespace {
// Multiplier for a size suffix, 0 if c is not one.
uint64_t suffix_multiplier(char c)
{
    switch (c) {
    case 'B': case 'b': return 1;
    case 'K': case 'k': return 1ULL << 10;
    case 'M': case 'm': return 1ULL << 20;
    case 'G': case 'g': return 1ULL << 30;
    case 'T': case 't': return 1ULL << 40;
    case 'P': case 'p': return 1ULL << 50;
    case 'E': case 'e': return 1ULL << 60;
    default: return 0;
    }
}
}  // namespace

namespace {
// strtoull() of the start of s: -EINVAL without digits, -ERANGE on overflow.
int parse_u64_prefix(const char* s, int base, const char** end, uint64_t& value)
{
    char* ep = nullptr;
    errno = 0;
    value = strtoull(s, &ep, base);
    *end = ep;
    if (ep == s) {
        return -EINVAL;
    }
    if (errno == ERANGE) {
        // Trailing junk makes it no number at all rather than a big one.
        return *ep ? -EINVAL : -ERANGE;
    }
    return 0;
}
}  // namespace

int qemu_strtosz(std::string_view input, uint64_t& result, char default_suffix)
{
    const std::string str(input);
    const char* nptr = str.c_str();
    const char* endptr;
    uint64_t val;
    int ret = parse_u64_prefix(nptr, 10, &endptr, val);
    if (ret < 0) {
        return ret;
    }
    // strtoull() negates "-1" silently; a size is never negative.
    if (memchr(nptr, '-', size_t(endptr - nptr))) {
        return -EINVAL;
    }
    bool hex = false;
    uint64_t fraction_fixed = 0;  // the fraction as 0.64 fixed point
    if (val == 0 && (*endptr == 'x' || *endptr == 'X')) {
        ret = parse_u64_prefix(nptr, 16, &endptr, val);
        if (ret < 0) {
            return ret;
        }
        if (*endptr == '.') {
            return -EINVAL;
        }
        hex = true;
    } else if (*endptr == '.') {
        // "1.k" is fine (the '.' is skipped); an exponent is not.
        const char* f = endptr;
        char* fend = nullptr;
        errno = 0;
        double fraction = strtod(f, &fend);
        if (fend == f || errno == ERANGE || !std::isfinite(fraction)) {
            endptr++;
        } else if (memchr(f, 'e', size_t(fend - f)) || memchr(f, 'E', size_t(fend - f))) {
            return -EINVAL;
        } else {
            endptr = fend;
            // QEMU converts with (uint64_t)(fraction * 2^64): a fraction that
            // rounds to 1.0 overflows that conversion, which gives 0 on
            // x86-64; keep the same answer everywhere.
            fraction_fixed = fraction < 1.0 ? uint64_t(fraction * 0x1p64) : 0;
        }
    }
    uint64_t mul = suffix_multiplier(*endptr);
    if (mul) {
        if (hex) {
            warn_report("Using a multiplier suffix on hex numbers is deprecated: %s", nptr);
        }
        endptr++;
    } else {
        mul = suffix_multiplier(default_suffix);
    }
    if (*endptr != '\0') {
        return -EINVAL;
    }
    if (mul == 1) {
        if (fraction_fixed != 0) {
            return -EINVAL;  // a fraction needs a unit
        }
        result = val;
        return 0;
    }
    // Exact 64.64 fixed-point product, rounded half up as QEMU does.
    unsigned __int128 whole = (unsigned __int128)val * mul;
    unsigned __int128 frac = (unsigned __int128)fraction_fixed * mul;
    whole += frac >> 64;
    whole += uint64_t(frac) >> 63;
    if (whole >> 64) {
        return -ERANGE;
    }
    result = uint64_t(whole);
    return 0;
}

std::optional<uint64_t> parse_size(std::string_view input, char default_suffix)
{
    uint64_t value;
    if (qemu_strtosz(input, value, default_suffix) < 0) {
        return std::nullopt;
    }
    return value;
}

std::optional<int64_t> parse_int64(std::string_view input)
{
    std::string str(input);
    if (str.empty()) {
        return std::nullopt;
    }
    char* end = nullptr;
    errno = 0;
    long long v = strtoll(str.c_str(), &end, 0);
    if (errno == ERANGE || *end != '\0' || end == str.c_str()) {
        return std::nullopt;
    }
    return v;
}

std::string size_to_str(uint64_t bytes)
{
    static const char* const suffixes[] = {"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"};
    // Switch to the next unit once the number would reach 1000, so sizes
    // print with at most three significant digits ("1000 KiB" -> "0.977 MiB").
    int exp;
    frexp(double(bytes) / (1000.0 / 1024.0), &exp);
    int i = exp > 0 ? (exp - 1) / 10 : 0;
    if (i > 6) {
        i = 6;
    }
    double div = double(1ULL << (i * 10));
    char buf[64];
    snprintf(buf, sizeof(buf), "%0.3g %sB", double(bytes) / div, suffixes[i]);
    return buf;
}

bool id_wellformed(const std::string& id)
{
    if (id.empty() || !isalpha(static_cast<unsigned char>(id[0]))) {
        return false;
    }
    for (char ch : id.substr(1)) {
        if (!isalnum(static_cast<unsigned char>(ch)) && ch != '-' && ch != '.' && ch != '_') {
            return false;
        }
    }
    return true;
}

}  // namespace qemu
