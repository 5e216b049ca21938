/* negotiate.c: see negotiate.h. */
#include "filters/compressor/negotiate.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Envoy's StringUtil::trim whitespace. */
static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\f' || c == '\v' || c == '\n' || c == '\r';
}

static sharp_str_t trim(sharp_str_t s)
{
    while (s.len && is_ws(s.p[0])) s.p++, s.len--;
    while (s.len && is_ws(s.p[s.len - 1])) s.len--;
    return s;
}

/* Up to the first `c` (all of s without one). */
static sharp_str_t crop_right(sharp_str_t s, char c)
{
    const char *x = memchr(s.p, c, s.len);
    if (x) s.len = (size_t)(x - s.p);
    return s;
}

/* Next maximal run of characters other than ',' (empty runs skipped). */
static bool next_token(sharp_str_t *rest, sharp_str_t *tok)
{
    while (rest->len && rest->p[0] == ',') rest->p++, rest->len--;
    if (!rest->len) return false;
    const char *x = memchr(rest->p, ',', rest->len);
    size_t n = x ? (size_t)(x - rest->p) : rest->len;
    *tok = (sharp_str_t){rest->p, n};
    rest->p += n;
    rest->len -= n;
    return true;
}

/* absl::SimpleAtof: a decimal float (or inf/nan), surrounding whitespace
 * allowed, nothing else. */
static bool parse_q(sharp_str_t v, float *out)
{
    v = trim(v);
    if (!v.len || v.len > 256) return false;
    char buf[257];
    memcpy(buf, v.p, v.len);
    buf[v.len] = '\0';
    if (strpbrk(buf, "xX")) return false; /* strtof would read hex floats */
    char *end;
    float f = strtof(buf, &end);
    if (end == buf || *end) return false;
    *out = f;
    return true;
}

typedef struct {
    sharp_str_t name;
    uint32_t registered; /* registration order */
    bool choose_first;
} allowed_t;

static int find_allowed(const allowed_t *a, size_t n, sharp_str_t name)
{
    for (size_t i = 0; i < n; i++)
        if (a[i].name.len == name.len && memcmp(a[i].name.p, name.p, name.len) == 0) return (int)i;
    return -1;
}

/* std::string ordering (the std::map Envoy keeps them in). */
static int name_cmp(sharp_str_t a, sharp_str_t b)
{
    size_t n = a.len < b.len ? a.len : b.len;
    int c = memcmp(a.p, b.p, n);
    return c ? c : (a.len < b.len ? -1 : a.len > b.len);
}

const char *sharp_ae_choose(sharp_str_t accept_encoding, const sharp_ae_offer_t *offers, size_t n,
                            sharp_ae_stat_t *stat)
{
    /* the offers, one per encoding (the first registered wins), plus room
     * for the "identity" and "*" entries Envoy's map lookups add */
    allowed_t *allowed = calloc(n + 2, sizeof *allowed);
    size_t nallowed = 0;
    uint32_t registration = 0;
    for (size_t i = 0; i < n; i++) {
        sharp_str_t e = {offers[i].encoding, strlen(offers[i].encoding)};
        if (find_allowed(allowed, nallowed, e) >= 0) continue;
        allowed[nallowed++] = (allowed_t){e, registration++, offers[i].choose_first};
    }
    /* the client's entries; q=0 rules an encoding out, but the entry stays
     * so that "*" is still weighed against the others */
    sharp_str_t choice = SHARP_STR("identity");
    float choice_q = 0;
    size_t npairs = 0;
    sharp_str_t rest = accept_encoding, tok;
    /* two passes over the header: Envoy first collects every entry (and
     * rules out the q=0 ones), then picks among them */
    for (int pass = 0; pass < 2; pass++) {
        rest = accept_encoding;
        while (next_token(&rest, &tok)) {
            sharp_str_t name = trim(crop_right(tok, ';'));
            float q = 1;
            const char *semi = memchr(tok.p, ';', tok.len);
            if (semi) {
                sharp_str_t params = {semi + 1, tok.len - (size_t)(semi + 1 - tok.p)};
                const char *eq = memchr(params.p, '=', params.len);
                if (eq) {
                    sharp_str_t key = trim((sharp_str_t){params.p, (size_t)(eq - params.p)});
                    sharp_str_t val = {eq + 1, params.len - (size_t)(eq + 1 - params.p)};
                    if (key.len == 1 && (key.p[0] == 'q' || key.p[0] == 'Q') && !parse_q(val, &q))
                        continue; /* an unreadable q-value drops the entry */
                }
            }
            if (pass == 0) {
                npairs++;
                if (!q) {
                    int k = find_allowed(allowed, nallowed, name);
                    if (k >= 0) allowed[k] = allowed[--nallowed];
                }
                continue;
            }
            bool identity = sharp_str_eq(name, "identity", 8), wildcard = sharp_str_eq(name, "*", 1);
            int k = find_allowed(allowed, nallowed, name);
            if (k < 0 && !identity && !wildcard) continue;
            if (q > choice_q) {
                choice = name;
                choice_q = q;
            } else if (q == choice_q) {
                /* Envoy looks the entry up with operator[], which adds
                 * "identity" or "*" to its map (never choose_first) */
                if (k < 0) {
                    k = (int)nallowed;
                    allowed[nallowed++] = (allowed_t){name, 0, false};
                }
                if (allowed[k].choose_first) choice = name;
            }
        }
        if (pass == 0 && (npairs == 0 || nallowed == 0)) break;
    }
    const char *result = "identity";
    *stat = SHARP_AE_NOT_VALID;
    if (npairs == 0 || nallowed == 0 || !choice_q) {
        /* nothing in common, or only q=0 entries: identity */
    } else if (sharp_str_eq(choice, "identity", 8)) {
        *stat = SHARP_AE_IDENTITY;
    } else if (sharp_str_eq(choice, "*", 1)) {
        /* the lowest registration; among equals the first in the map's
         * (name) order, as std::min_element over the std::map finds it */
        size_t best = 0;
        for (size_t i = 1; i < nallowed; i++)
            if (allowed[i].registered < allowed[best].registered ||
                (allowed[i].registered == allowed[best].registered && name_cmp(allowed[i].name, allowed[best].name) < 0))
                best = i;
        *stat = SHARP_AE_WILDCARD;
        sharp_str_t b = allowed[best].name;
        result = sharp_str_eq(b, "identity", 8) ? "identity" : sharp_str_eq(b, "*", 1) ? "*" : NULL;
        for (size_t i = 0; !result && i < n; i++)
            if (strlen(offers[i].encoding) == b.len && memcmp(offers[i].encoding, b.p, b.len) == 0)
                result = offers[i].encoding;
    } else {
        *stat = SHARP_AE_COMPRESSOR;
        for (size_t i = 0; i < n; i++)
            if (strlen(offers[i].encoding) == choice.len && memcmp(offers[i].encoding, choice.p, choice.len) == 0) {
                result = offers[i].encoding;
                break;
            }
    }
    free(allowed);
    return result;
}

sharp_str_t sharp_ae_media_type(sharp_str_t content_type)
{
    return trim(crop_right(content_type, ';'));
}

bool sharp_ae_type_listed(sharp_str_t media, char *const *types, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(types[i]) == media.len && strncasecmp(types[i], media.p, media.len) == 0) return true;
    return false;
}

bool sharp_ae_has_token(sharp_str_t value, const char *token, bool ignore_case)
{
    size_t tl = strlen(token);
    sharp_str_t rest = value, tok;
    while (next_token(&rest, &tok)) {
        tok = trim(tok);
        if (tok.len == tl && (ignore_case ? strncasecmp(tok.p, token, tl) : memcmp(tok.p, token, tl)) == 0)
            return true;
    }
    return false;
}

bool sharp_ae_parse_length(sharp_str_t v, uint64_t *out)
{
    return sharp_simple_atou(v, UINT64_MAX, out);
}

bool sharp_ae_etag_kept(sharp_str_t etag)
{
    return etag.len <= 2 || ((etag.p[0] == 'w' || etag.p[0] == 'W') && etag.p[1] == '/');
}

bool sharp_ae_transfer_encoding_compressed(sharp_str_t te, const char *encoding)
{
    static const char *const known[] = {"gzip", "br", "deflate", "compress", "zstd"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (sharp_ae_has_token(te, known[i], true)) return true;
    return sharp_ae_has_token(te, encoding, true);
}
