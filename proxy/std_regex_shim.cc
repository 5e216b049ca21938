// std_regex_shim.cc: see std_regex_shim.h.
#include "std_regex_shim.h"

#include <cstdio>
#include <new>
#include <regex>
#include <string>

struct sharp_std_regex {
    std::regex re;
    explicit sharp_std_regex(const char *pattern) : re(pattern, std::regex::optimize) {}
};

extern "C" sharp_std_regex_t *sharp_std_regex_compile(const char *pattern, char *err,
                                                      size_t errlen)
{
    try {
        return new sharp_std_regex(pattern ? pattern : "");
    } catch (const std::regex_error &e) {
        if (err && errlen) std::snprintf(err, errlen, "%s", e.what());
    } catch (const std::bad_alloc &) {
        if (err && errlen) std::snprintf(err, errlen, "out of memory");
    }
    return nullptr;
}

extern "C" void sharp_std_regex_free(sharp_std_regex_t *re)
{
    delete re;
}

extern "C" unsigned sharp_std_regex_groups(const sharp_std_regex_t *re)
{
    return re ? re->re.mark_count() : 0;
}

extern "C" bool sharp_std_regex_search(const sharp_std_regex_t *re, const char *s, size_t len,
                                       sharp_std_regex_group_t *groups, size_t n)
{
    if (!re || len > SHARP_STD_REGEX_MAX_INPUT) return false;
    try {
        std::cmatch m;
        if (!std::regex_search(s, s + len, m, re->re)) return false;
        for (size_t i = 0; i < n; i++) {
            groups[i] = sharp_std_regex_group_t{false, 0, 0};
            if (i + 1 < m.size() && m[i + 1].matched) {
                groups[i].matched = true;
                groups[i].start = (size_t)(m[i + 1].first - s);
                groups[i].end = (size_t)(m[i + 1].second - s);
            }
        }
        return true;
    } catch (const std::exception &) {
        return false;
    }
}
