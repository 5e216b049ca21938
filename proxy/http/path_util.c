/* path_util.c: Envoy's path normalization, byte for byte.
 *
 * Envoy canonicalizes paths with Chromium's URL path canonicalizer
 * (url::CanonicalizePath). Its rules, reproduced here:
 * - the path must start with a slash (one is added otherwise);
 * - "." and ".." segments are removed, "%2e"/"%2E" counting as a dot, and a
 *   backslash counting as a segment separator; ".." never climbs above the
 *   root;
 * - a backslash becomes '/';
 * - a percent-encoded unreserved character (ALPHA, DIGIT, '-', '.', '_',
 *   '~') is decoded; any other valid escape is kept exactly as written (hex
 *   case included); an escape decoding to NUL, or a raw NUL, makes the path
 *   invalid (400);
 * - characters that may not appear in a path (controls, space, '"', '#',
 *   '<', '>', '?', '\', '^', '`', '{', '|', '}', DEL and bytes >= 0x80) are
 *   percent-encoded with upper-case hex;
 * - a '%' not starting a valid escape is kept, and an escape that only
 *   forms once an inner escape is decoded ("%%30%30") has its '%' encoded
 *   as "%25" so the result cannot be decoded into something else later.
 * Before that, parameters are stripped from dot segments ("/..;x" is "/..")
 * so that they collapse too, as Envoy does since its fix for path confusion
 * through dot segments with parameters. */
#include "http/path_util.h"

#include <limits.h>

enum {
    PASS = 0,
    SPECIAL = 1,
    ESCAPE_BIT = 2,
    ESCAPE = ESCAPE_BIT | SPECIAL,
    UNESCAPE = 4,
    INVALID_BIT = 8,
    INVALID = INVALID_BIT | SPECIAL,
};

/* The canonicalizer's character table (kPathCharLookup). */
static unsigned path_char_flags(unsigned char c)
{
    if (c == 0) return INVALID;
    if (c < 0x20 || c >= 0x7f) return ESCAPE;
    switch (c) {
    case ' ': case '"': case '#': case '%': case '<': case '>': case '?':
    case '\\': case '^': case '`': case '{': case '|': case '}':
        return ESCAPE;
    case '.':
        return SPECIAL;
    case '-': case '_': case '~':
        return UNESCAPE;
    default:
        break;
    }
    if ((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')) return UNESCAPE;
    return PASS;
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* A valid "%XX" at s[*i]: stores the byte and leaves *i on the last hex digit. */
static bool decode_escaped(const char *s, size_t *i, size_t end, unsigned char *out)
{
    if (*i + 3 > end) return false;
    int hi = hex_value((unsigned char)s[*i + 1]), lo = hex_value((unsigned char)s[*i + 2]);
    if (hi < 0 || lo < 0) return false;
    *out = (unsigned char)(hi << 4 | lo);
    *i += 2;
    return true;
}

/* 1 for '.', 3 for "%2e"/"%2E", 0 otherwise. */
static size_t is_dot(const char *s, size_t i, size_t end)
{
    if (s[i] == '.') return 1;
    if (s[i] == '%' && i + 3 <= end && s[i + 1] == '2' && (s[i + 2] == 'e' || s[i + 2] == 'E')) return 3;
    return 0;
}

static bool is_url_slash(char c)
{
    return c == '/' || c == '\\';
}

static void push(sharp_sbuf_t *o, char c)
{
    sharp_sbuf_append(o, &c, 1);
}

static void push_escaped(sharp_sbuf_t *o, unsigned char c)
{
    static const char hex[] = "0123456789ABCDEF";
    char e[3] = {'%', hex[c >> 4], hex[c & 15]};
    sharp_sbuf_append(o, e, 3);
}

enum { NOT_A_DIRECTORY, DIRECTORY_CUR, DIRECTORY_UP };

/* What the dot (or dots) before s[after] mean; *consumed counts what was
 * read after the first dot. */
static int classify_after_dot(const char *s, size_t after, size_t end, size_t *consumed)
{
    if (after == end) {
        *consumed = 0;
        return DIRECTORY_CUR;
    }
    if (is_url_slash(s[after])) {
        *consumed = 1;
        return DIRECTORY_CUR;
    }
    size_t second = is_dot(s, after, end);
    if (second) {
        size_t past = after + second;
        if (past == end) {
            *consumed = second;
            return DIRECTORY_UP;
        }
        if (is_url_slash(s[past])) {
            *consumed = second + 1;
            return DIRECTORY_UP;
        }
    }
    *consumed = 0;
    return NOT_A_DIRECTORY;
}

/* The output ends with a slash; drop the last segment before it, never
 * going above the first slash. */
static void back_up_to_previous_slash(sharp_sbuf_t *o)
{
    size_t i = o->len - 1;
    if (i == 0) return;
    i--;
    while (o->data[i] != '/' && i > 0) i--;
    o->len = i + 1;
}

/* An invalid '%' at output index `pct` followed, once an escape after it was
 * decoded, by what looks like a valid escape: encode that '%' as "%25"
 * (CheckForNestedEscapes). */
static void check_nested_escapes(const char *s, size_t next, size_t end, size_t pct, sharp_sbuf_t *o)
{
    size_t length = o->len;
    char last = o->data[length - 1];
    bool append_next = pct == length - 2;
    if (append_next) {
        if (next == end || (unsigned char)s[next] >= 0x80) return;
        push(o, s[next]);
    }
    size_t begin = pct;
    unsigned char tmp;
    if (decode_escaped(o->data, &begin, o->len, &tmp)) {
        if (!append_next) push(o, o->data[pct + 1]);
        o->data[pct + 1] = '2';
        o->data[pct + 2] = '5';
        push(o, last);
    } else if (append_next) {
        o->len = length;
    }
}

static bool canonicalize_path_part(const char *s, size_t end, sharp_sbuf_t *o)
{
    if (end == 0) {
        push(o, '/');
        return true;
    }
    if (!is_url_slash(s[0])) push(o, '/');
    bool ok = true;
    long last_invalid_pct = LONG_MIN;
    for (size_t i = 0; i < end; i++) {
        unsigned char c = (unsigned char)s[i];
        unsigned flags = path_char_flags(c);
        if (!(flags & SPECIAL)) {
            push(o, (char)c);
            continue;
        }
        size_t dotlen = is_dot(s, i, end);
        if (dotlen) {
            if (o->len > 0 && o->data[o->len - 1] == '/') {
                size_t consumed;
                switch (classify_after_dot(s, i + dotlen, end, &consumed)) {
                case NOT_A_DIRECTORY:
                    push(o, '.');
                    i += dotlen - 1;
                    break;
                case DIRECTORY_CUR:
                    i += dotlen + consumed - 1;
                    break;
                default:
                    back_up_to_previous_slash(o);
                    i += dotlen + consumed - 1;
                    break;
                }
            } else {
                push(o, '.');
                i += dotlen - 1;
            }
        } else if (c == '\\') {
            push(o, '/');
        } else if (c == '%') {
            unsigned char v;
            if (decode_escaped(s, &i, end, &v)) {
                unsigned vflags = path_char_flags(v);
                if (vflags & UNESCAPE) {
                    push(o, (char)v);
                    if (last_invalid_pct != LONG_MIN && last_invalid_pct >= (long)o->len - 3)
                        check_nested_escapes(s, i + 1, end, (size_t)last_invalid_pct, o);
                } else {
                    char e[3] = {'%', s[i - 1], s[i]};
                    sharp_sbuf_append(o, e, 3);
                    if (vflags & INVALID_BIT) ok = false;
                }
            } else {
                last_invalid_pct = (long)o->len;
                push(o, '%');
            }
        } else if (flags & INVALID_BIT) {
            push_escaped(o, c);
            ok = false;
        } else if (flags & ESCAPE_BIT) {
            push_escaped(o, c);
        }
    }
    return ok;
}

void sharp_path_strip_dot_segment_params(const char *p, size_t n, sharp_sbuf_t *out)
{
    sharp_sbuf_reset(out);
    size_t plen = 0;
    while (plen < n && p[plen] != '?' && p[plen] != '#') plen++;
    bool found = false;
    for (size_t i = 0; i + 1 < plen; i++)
        if (p[i] == '.' && p[i + 1] == ';') found = true;
    if (!found) {
        sharp_sbuf_append(out, p, n);
        return;
    }
    size_t st = 0;
    for (;;) {
        size_t e = st;
        while (e < plen && p[e] != '/') e++;
        size_t len = e - st;
        if (len >= 3 && memcmp(p + st, "..;", 3) == 0) sharp_sbuf_append(out, "..", 2);
        else if (len >= 2 && memcmp(p + st, ".;", 2) == 0) sharp_sbuf_append(out, ".", 1);
        else sharp_sbuf_append(out, p + st, len);
        if (e >= plen) break;
        push(out, '/');
        st = e + 1;
    }
    sharp_sbuf_append(out, p + plen, n - plen);
}

bool sharp_path_canonicalize(const char *p, size_t n, sharp_sbuf_t *out)
{
    sharp_sbuf_t stripped = {0};
    sharp_path_strip_dot_segment_params(p, n, &stripped);
    const char *s = stripped.data ? stripped.data : "";
    size_t len = stripped.len;
    size_t q = 0;
    while (q < len && s[q] != '?') q++;
    sharp_sbuf_reset(out);
    bool ok = canonicalize_path_part(s, q, out);
    sharp_sbuf_append(out, s + q, len - q);
    sharp_sbuf_free(&stripped);
    return ok;
}

void sharp_path_merge_slashes(const char *p, size_t n, sharp_sbuf_t *out)
{
    sharp_sbuf_reset(out);
    size_t q = 0;
    while (q < n && p[q] != '?') q++;
    bool doubled = false;
    for (size_t i = 0; i + 1 < q; i++)
        if (p[i] == '/' && p[i + 1] == '/') doubled = true;
    if (!doubled) {
        sharp_sbuf_append(out, p, n);
        return;
    }
    /* Envoy's form: a leading slash if there was one, the non-empty
     * segments joined by one slash, a trailing slash if there was one. */
    if (p[0] == '/') push(out, '/');
    bool first = true;
    size_t st = 0;
    while (st < q) {
        size_t e = st;
        while (e < q && p[e] != '/') e++;
        if (e > st) {
            if (!first) push(out, '/');
            sharp_sbuf_append(out, p + st, e - st);
            first = false;
        }
        st = e + 1;
    }
    if (p[q - 1] == '/') push(out, '/');
    sharp_sbuf_append(out, p + q, n - q);
}

bool sharp_path_unescape_slashes(const char *p, size_t n, sharp_sbuf_t *out)
{
    sharp_sbuf_reset(out);
    size_t q = 0;
    while (q < n && p[q] != '?') q++;
    bool found = false;
    for (size_t i = 0; i < q; i++) {
        if (p[i] == '%' && i + 2 < q) {
            char a = p[i + 1], b = p[i + 2];
            if (a == '2' && (b == 'f' || b == 'F')) {
                push(out, '/');
                i += 2;
                found = true;
                continue;
            }
            if (a == '5' && (b == 'c' || b == 'C')) {
                push(out, '\\');
                i += 2;
                found = true;
                continue;
            }
        }
        push(out, p[i]);
    }
    sharp_sbuf_append(out, p + q, n - q);
    return found;
}

sharp_path_action_t sharp_path_normalize(const char *p, size_t n, bool normalize_path, bool merge_slashes,
                                         sharp_escaped_slashes_action_t action, sharp_sbuf_t *out)
{
    sharp_sbuf_reset(out);
    /* Envoy rejects a fragment in the request target
     * (envoy.reloadable_features.http_reject_path_with_fragment). */
    if (n && memchr(p, '#', n)) return SHARP_PATH_REJECT;
    sharp_path_action_t result = SHARP_PATH_CONTINUE;
    sharp_sbuf_t a = {0}, b = {0};
    sharp_sbuf_append(&a, p, n);
    if (action != SHARP_ESCAPED_SLASHES_DEFAULT && action != SHARP_ESCAPED_SLASHES_KEEP) {
        if (sharp_path_unescape_slashes(a.data, a.len, &b)) {
            if (action == SHARP_ESCAPED_SLASHES_REJECT) {
                result = SHARP_PATH_REJECT;
                goto done;
            }
            if (action == SHARP_ESCAPED_SLASHES_UNESCAPE_AND_REDIRECT) result = SHARP_PATH_REDIRECT;
            sharp_sbuf_t t = a;
            a = b;
            b = t;
        }
    }
    if (normalize_path) {
        if (!sharp_path_canonicalize(a.data, a.len, &b)) {
            result = SHARP_PATH_REJECT;
            goto done;
        }
        sharp_sbuf_t t = a;
        a = b;
        b = t;
    }
    if (merge_slashes) {
        sharp_path_merge_slashes(a.data, a.len, &b);
        sharp_sbuf_t t = a;
        a = b;
        b = t;
    }
    sharp_sbuf_append(out, a.data, a.len);
done:
    sharp_sbuf_free(&a);
    sharp_sbuf_free(&b);
    return result;
}
