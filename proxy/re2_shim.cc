// re2_shim.cc: see re2_shim.h. No C++ exception crosses into C: RE2 reports
// bad patterns through ok()/error(), and allocation failures are caught here
// and turned into the C error returns.
#include "re2_shim.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include <re2/re2.h>

struct sharp_re2 {
    re2::RE2 re;
    sharp_re2(re2::StringPiece pattern, const re2::RE2::Options &opts) : re(pattern, opts) {}
};

static void set_err(char *err, size_t errlen, const std::string &msg)
{
    if (err && errlen) std::snprintf(err, errlen, "%s", msg.c_str());
}

extern "C" sharp_re2_t *sharp_re2_compile(const char *pattern, size_t len, char *err, size_t errlen)
{
    try {
        // Envoy builds its matchers with RE2::Quiet (default options that do
        // not log errors): the message goes into the config error instead.
        re2::RE2::Options opts(re2::RE2::Quiet);
        sharp_re2 *r =
            new sharp_re2(re2::StringPiece(pattern ? pattern : "", pattern ? len : 0), opts);
        if (!r->re.ok()) {
            set_err(err, errlen, r->re.error());
            delete r;
            return nullptr;
        }
        return r;
    } catch (const std::bad_alloc &) {
        set_err(err, errlen, "out of memory");
        return nullptr;
    }
}

extern "C" void sharp_re2_free(sharp_re2_t *re)
{
    delete re;
}

extern "C" int sharp_re2_program_size(const sharp_re2_t *re)
{
    return re->re.ProgramSize();
}

extern "C" bool sharp_re2_full_match(const sharp_re2_t *re, const char *s, size_t len)
{
    return re2::RE2::FullMatch(re2::StringPiece(s, len), re->re);
}

extern "C" bool sharp_re2_partial_match(const sharp_re2_t *re, const char *s, size_t len)
{
    return re2::RE2::PartialMatch(re2::StringPiece(s, len), re->re);
}

extern "C" int sharp_re2_check_rewrite(const sharp_re2_t *re, const char *rewrite, char *err,
                                       size_t errlen)
{
    try {
        std::string msg;
        if (re->re.CheckRewriteString(rewrite, &msg)) return 0;
        set_err(err, errlen, msg);
    } catch (const std::bad_alloc &) {
        set_err(err, errlen, "out of memory");
    }
    return -1;
}

extern "C" int sharp_re2_replace_all(const sharp_re2_t *re, const char *s, size_t len,
                                     const char *rewrite, char **out, size_t *outlen)
{
    try {
        std::string str = s ? std::string(s, len) : std::string();
        int n = re2::RE2::GlobalReplace(&str, re->re, rewrite);
        char *p = static_cast<char *>(std::malloc(str.size() + 1));
        if (!p) return -1;
        std::memcpy(p, str.data(), str.size());
        p[str.size()] = '\0';
        *out = p;
        *outlen = str.size();
        return n;
    } catch (const std::bad_alloc &) {
        return -1;
    }
}
