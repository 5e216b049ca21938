/* datadog.c: Datadog spans, propagation and the worker's agent reporters;
 * see datadog.h. */
#include "http/datadog.h"
#include "log.h"
#include "msgpack.h"
#include "server.h"
#include "upstream/async_post.h"

#include <pthread.h>
#include <stdio.h>
#include <sys/random.h>
#include <unistd.h>

#define ID_MASK 0x7fffffffffffffffull /* dd-trace-cpp's ids are 63-bit */
#define TID_TAG "_dd.p.tid"
#define DM_TAG "_dd.p.dm"

/* ---- trace tags ---- */

/* Positions of keys by name for one batch of inserts, so n tags from a
 * request cost O(n), not O(n^2) (a hostile x-datadog-tags holds
 * thousands). Open addressing, seeded. */
typedef struct {
    uint32_t *slots; /* position + 1, 0: empty */
    uint32_t mask;
    uint64_t seed;
} key_index_t;

static void key_index_init(key_index_t *ix, size_t n)
{
    uint32_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    ix->slots = sharp_calloc(cap, sizeof *ix->slots);
    ix->mask = cap - 1;
    ix->seed = sharp_hash_seed();
}

/* The position of key in keys, else -1 and *slot where to add it. */
static int64_t key_index_find(const key_index_t *ix, char *const *keys, const char *k, size_t klen,
                              uint32_t *slot)
{
    uint32_t i = (uint32_t)sharp_hash_bytes(ix->seed, k, klen) & ix->mask;
    for (;; i = (i + 1) & ix->mask) {
        uint32_t pos = ix->slots[i];
        if (!pos) break;
        const char *e = keys[pos - 1];
        if (!strncmp(e, k, klen) && !e[klen]) return pos - 1;
    }
    *slot = i;
    return -1;
}

static void key_index_add(key_index_t *ix, char *const *keys, uint32_t pos)
{
    uint32_t slot;
    if (key_index_find(ix, keys, keys[pos], strlen(keys[pos]), &slot) < 0) ix->slots[slot] = pos + 1;
}

static void tags_set(sharp_dd_tags_t *t, const char *k, size_t klen, const char *v, size_t vlen)
{
    for (uint32_t i = 0; i < t->n; i++)
        if (strlen(t->keys[i]) == klen && !memcmp(t->keys[i], k, klen)) {
            free(t->vals[i]);
            t->vals[i] = sharp_strndup(v, vlen);
            return;
        }
    t->keys = sharp_realloc(t->keys, (t->n + 1) * sizeof *t->keys);
    t->vals = sharp_realloc(t->vals, (t->n + 1) * sizeof *t->vals);
    t->keys[t->n] = sharp_strndup(k, klen);
    t->vals[t->n++] = sharp_strndup(v, vlen);
}

/* tags_set for each of n pairs, in O(t->n + n). */
static void tags_set_many(sharp_dd_tags_t *t, const sharp_str_t *keys, const sharp_str_t *vals, size_t n)
{
    if (!n) return;
    key_index_t ix;
    key_index_init(&ix, t->n + n);
    for (uint32_t i = 0; i < t->n; i++)
        key_index_add(&ix, t->keys, i);
    t->keys = sharp_realloc(t->keys, (t->n + n) * sizeof *t->keys);
    t->vals = sharp_realloc(t->vals, (t->n + n) * sizeof *t->vals);
    for (size_t j = 0; j < n; j++) {
        uint32_t slot;
        int64_t at = key_index_find(&ix, t->keys, keys[j].p, keys[j].len, &slot);
        if (at >= 0) {
            free(t->vals[at]);
            t->vals[at] = sharp_strndup(vals[j].p, vals[j].len);
            continue;
        }
        t->keys[t->n] = sharp_strndup(keys[j].p, keys[j].len);
        t->vals[t->n] = sharp_strndup(vals[j].p, vals[j].len);
        ix.slots[slot] = ++t->n;
    }
    free(ix.slots);
}

static const char *tags_get(const sharp_dd_tags_t *t, const char *k)
{
    for (uint32_t i = 0; i < t->n; i++)
        if (!strcmp(t->keys[i], k)) return t->vals[i];
    return NULL;
}

static void tags_remove(sharp_dd_tags_t *t, const char *k)
{
    for (uint32_t i = 0; i < t->n; i++)
        if (!strcmp(t->keys[i], k)) {
            free(t->keys[i]);
            free(t->vals[i]);
            memmove(&t->keys[i], &t->keys[i + 1], (t->n - i - 1) * sizeof *t->keys);
            memmove(&t->vals[i], &t->vals[i + 1], (t->n - i - 1) * sizeof *t->vals);
            t->n--;
            return;
        }
}

void sharp_dd_tags_free(sharp_dd_tags_t *t)
{
    for (uint32_t i = 0; i < t->n; i++) {
        free(t->keys[i]);
        free(t->vals[i]);
    }
    free(t->keys);
    free(t->vals);
    memset(t, 0, sizeof *t);
}

/* dd-trace-cpp's decode_tags: comma separated key=value pairs, each with
 * a '=' and a non-empty key. */
bool sharp_dd_decode_tags(const char *v, size_t n, sharp_dd_tags_t *out)
{
    /* validated whole first: a malformed value adds nothing */
    size_t cap = 0;
    for (size_t i = 0; i < n; i++) cap += v[i] == '=';
    sharp_str_t *keys = sharp_calloc(cap + 1, sizeof *keys), *vals = sharp_calloc(cap + 1, sizeof *vals);
    size_t np = 0, start = 0;
    bool ok = true;
    while (start < n) {
        const char *comma = memchr(v + start, ',', n - start);
        size_t end = comma ? (size_t)(comma - v) : n;
        const char *eq = memchr(v + start, '=', end - start);
        if (!eq || eq == v + start) {
            ok = false;
            break;
        }
        size_t klen = (size_t)(eq - (v + start));
        if (klen >= 6 && !memcmp(v + start, "_dd.p.", 6)) {
            keys[np] = (sharp_str_t){v + start, klen};
            vals[np++] = (sharp_str_t){eq + 1, (size_t)(v + end - eq - 1)};
        }
        start = end + 1;
    }
    if (ok) tags_set_many(out, keys, vals, np);
    free(keys);
    free(vals);
    return ok;
}

void sharp_dd_encode_tags(const sharp_dd_tags_t *t, sharp_sbuf_t *out)
{
    for (uint32_t i = 0; i < t->n; i++) {
        if (i) sharp_sbuf_puts(out, ",");
        sharp_sbuf_puts(out, t->keys[i]);
        sharp_sbuf_puts(out, "=");
        sharp_sbuf_puts(out, t->vals[i]);
    }
}

/* ---- extraction ---- */

void sharp_dd_context_free(sharp_dd_context_t *c)
{
    free(c->prop_error);
    free(c->origin);
    sharp_dd_tags_free(&c->tags);
    free(c->w3c_extra);
    free(c->dd_w3c_extra);
    memset(c, 0, sizeof *c);
}

/* Lower-case hex digits only (W3C's). */
static bool lower_hex(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f'))) return false;
    return true;
}

/* A decimal int, a '-' allowed. */
static bool parse_int(const char *p, size_t n, int *out)
{
    bool neg = n && p[0] == '-';
    uint64_t v;
    if (!sharp_parse_dec(p + neg, n - neg, UINT64_MAX, &v) || v > (uint64_t)INT32_MAX + neg) return false;
    *out = neg ? (int)-(int64_t)v : (int)v;
    return true;
}

static int bad(const char **why, const char *msg)
{
    if (why) *why = msg;
    return -1;
}

/* _dd.propagation_error: `what` and `value` (may be NULL). */
static void set_prop_error(sharp_dd_context_t *c, const char *what, const char *value)
{
    free(c->prop_error);
    size_t a = strlen(what), b = value ? strlen(value) : 0;
    c->prop_error = sharp_calloc(1, a + b + 1);
    memcpy(c->prop_error, what, a);
    if (b) memcpy(c->prop_error + a, value, b);
}

/* The Datadog style: -1 on a header that does not parse. */
static int extract_datadog(const sharp_headers_t *h, sharp_dd_context_t *c, const char **why)
{
    sharp_str_t v;
    if (sharp_headers_get_cstr(h, "x-datadog-trace-id", &v)) {
        if (!sharp_parse_dec(v.p, v.len, UINT64_MAX, &c->trace_lo))
            return bad(why, "Could not extract Datadog-style trace ID from x-datadog-trace-id");
        c->has_trace = true;
    }
    if (sharp_headers_get_cstr(h, "x-datadog-parent-id", &v)) {
        if (!sharp_parse_dec(v.p, v.len, UINT64_MAX, &c->parent_id))
            return bad(why,
                       "Could not extract Datadog-style parent span ID from x-datadog-parent-id");
        c->has_parent = true;
    }
    if (sharp_headers_get_cstr(h, "x-datadog-sampling-priority", &v)) {
        if (!parse_int(v.p, v.len, &c->priority))
            return bad(why, "Could not extract Datadog-style sampling priority from "
                            "x-datadog-sampling-priority");
        c->has_priority = true;
    }
    if (sharp_headers_get_cstr(h, "x-datadog-origin", &v)) c->origin = sharp_strndup(v.p, v.len);
    if (sharp_headers_get_cstr(h, "x-datadog-tags", &v)) {
        if (!sharp_dd_decode_tags(v.p, v.len, &c->tags)) {
            set_prop_error(c, "decoding_error", NULL);
        } else if (tags_get(&c->tags, TID_TAG)) {
            /* _dd.p.tid: the trace's high half, 16 hex digits */
            const char *tid = tags_get(&c->tags, TID_TAG);
            uint64_t hi;
            if (strlen(tid) != 16 || !sharp_parse_hex64(tid, 16, &hi)) {
                set_prop_error(c, "malformed_tid ", tid);
                tags_remove(&c->tags, TID_TAG);
            } else if (c->has_trace) {
                c->trace_hi = hi;
            }
        }
    }
    return 0;
}

static void trim(const char **p, size_t *n)
{
    while (*n && (**p == ' ' || **p == '\t'))
        (*p)++, (*n)--;
    while (*n && ((*p)[*n - 1] == ' ' || (*p)[*n - 1] == '\t'))
        (*n)--;
}

/* Appends `add` to b with `sep` before unless b is empty. */
static void join(sharp_sbuf_t *b, char sep, const char *add, size_t n)
{
    if (b->len) sharp_sbuf_append(b, &sep, 1);
    sharp_sbuf_append(b, add, n);
}

/* The sbuf's text as a string of its own (NULL when empty); b is freed. */
static char *sbuf_take(sharp_sbuf_t *b)
{
    char *r = b->len ? sharp_strndup(b->data, b->len) : NULL;
    sharp_sbuf_free(b);
    return r;
}

/* The dd= entry of tracestate: s:, o:, p:, t.*; the rest kept. */
static void parse_dd_tracestate(sharp_dd_context_t *c, const char *v, size_t n)
{
    sharp_sbuf_t extra = {0}, tagbuf = {0};
    size_t ntags = 0, start = 0;
    while (start < n) {
        const char *semi = memchr(v + start, ';', n - start);
        size_t end = semi ? (size_t)(semi - v) : n;
        const char *pair = v + start;
        size_t plen = end - start;
        start = end + 1;
        const char *colon = plen ? memchr(pair, ':', plen) : NULL;
        if (!colon) continue;
        size_t klen = (size_t)(colon - pair), vlen = plen - klen - 1;
        const char *val = colon + 1;
        if (klen == 1 && pair[0] == 'o') {
            free(c->origin);
            c->origin = sharp_strndup(val, vlen);
            for (char *q = c->origin; *q; q++)
                if (*q == '~') *q = '='; /* '=' is written as '~' */
        } else if (klen == 1 && pair[0] == 's') {
            int pr;
            if (!parse_int(val, vlen, &pr)) continue;
            /* traceparent's flag wins when they disagree */
            if (!c->has_priority || (c->priority > 0) == (pr > 0)) {
                c->priority = pr;
                c->has_priority = true;
            }
        } else if (klen == 1 && pair[0] == 'p') {
            if (vlen == 16) {
                memcpy(c->dd_parent, val, 16);
                c->dd_parent[16] = '\0';
            }
        } else if (klen > 2 && pair[0] == 't' && pair[1] == '.') {
            /* key and value as "_dd.p.<key>\0<value>\0" in tagbuf, set together below */
            if (klen - 2 + 6 >= 256) continue;
            size_t vn = vlen < 255 ? vlen : 255;
            sharp_sbuf_puts(&tagbuf, "_dd.p.");
            sharp_sbuf_append(&tagbuf, pair + 2, klen - 2);
            sharp_sbuf_append(&tagbuf, "", 1);
            size_t at = tagbuf.len;
            sharp_sbuf_append(&tagbuf, val, vn);
            sharp_sbuf_append(&tagbuf, "", 1);
            for (size_t i = at; i < at + vn; i++)
                if (tagbuf.data[i] == '~') tagbuf.data[i] = '=';
            ntags++;
        } else {
            join(&extra, ';', pair, plen);
        }
    }
    if (ntags) {
        sharp_str_t *keys = sharp_calloc(ntags, sizeof *keys), *vals = sharp_calloc(ntags, sizeof *vals);
        const char *q = tagbuf.data;
        for (size_t i = 0; i < ntags; i++) {
            keys[i] = (sharp_str_t){q, strlen(q)};
            q += keys[i].len + 1;
            vals[i] = (sharp_str_t){q, strlen(q)};
            q += vals[i].len + 1;
        }
        tags_set_many(&c->tags, keys, vals, ntags);
        free(keys);
        free(vals);
    }
    sharp_sbuf_free(&tagbuf);
    free(c->dd_w3c_extra);
    c->dd_w3c_extra = sbuf_take(&extra);
}

/* W3C trace-context 3.3.1.1: a tracestate holds at most 32 list members;
 * those beyond are not read. */
#define TRACESTATE_MAX_MEMBERS 32

/* tracestate: the dd= entry parsed, the others kept in order. */
static void extract_tracestate(sharp_dd_context_t *c, const char *v, size_t n)
{
    trim(&v, &n);
    size_t start = 0, members = 0;
    const char *dd = NULL;
    size_t dd_len = 0;
    sharp_sbuf_t extra = {0};
    while (start < n && members < TRACESTATE_MAX_MEMBERS) {
        const char *comma = memchr(v + start, ',', n - start);
        size_t end = comma ? (size_t)(comma - v) : n;
        const char *pair = v + start;
        size_t plen = end - start;
        start = end + 1;
        trim(&pair, &plen);
        if (!plen) continue;
        members++;
        if (!dd && plen >= 3 && !memcmp(pair, "dd=", 3)) {
            dd = pair + 3;
            dd_len = plen - 3;
            continue;
        }
        join(&extra, ',', pair, plen);
    }
    free(c->w3c_extra);
    c->w3c_extra = sbuf_take(&extra);
    if (dd) parse_dd_tracestate(c, dd, dd_len);
}

/* The W3C style: a traceparent that does not parse is no context (and a
 * _dd.w3c_extraction_error meta). */
static void extract_w3c(const sharp_headers_t *h, sharp_dd_context_t *c)
{
    sharp_str_t v;
    if (!sharp_headers_get_cstr(h, "traceparent", &v)) return;
    const char *p = v.p;
    size_t n = v.len;
    trim(&p, &n);
    /* version-traceid-parentid-flags, then the end or "-..." */
    if (n < 55 || p[2] != '-' || p[35] != '-' || p[52] != '-' || !lower_hex(p, 2) ||
        !lower_hex(p + 3, 32) || !lower_hex(p + 36, 16) || !lower_hex(p + 53, 2) ||
        (n > 55 && p[55] != '-')) {
        c->w3c_error = "malformed_traceparent";
        return;
    }
    if (p[0] == 'f' && p[1] == 'f') {
        c->w3c_error = "invalid_version";
        return;
    }
    if (p[0] == '0' && p[1] == '0' && n > 55) {
        c->w3c_error = "malformed_traceparent";
        return;
    }
    uint64_t hi = 0, lo = 0, parent = 0, flags = 0;
    sharp_parse_hex64(p + 3, 16, &hi);
    sharp_parse_hex64(p + 19, 16, &lo);
    sharp_parse_hex64(p + 36, 16, &parent);
    sharp_parse_hex64(p + 53, 2, &flags);
    if (!hi && !lo) {
        c->w3c_error = "trace_id_zero";
        return;
    }
    if (!parent) {
        c->w3c_error = "parent_id_zero";
        return;
    }
    c->trace_hi = hi;
    c->trace_lo = lo;
    c->has_trace = true;
    c->parent_id = parent;
    c->has_parent = true;
    c->priority = (int)(flags & 1);
    c->has_priority = true;
    memcpy(c->dd_parent, "0000000000000000", 17);
    if (sharp_headers_get_cstr(h, "tracestate", &v) && v.len) extract_tracestate(c, v.p, v.len);
}

int sharp_dd_extract(const sharp_headers_t *h, sharp_dd_context_t *out, const char **why)
{
    memset(out, 0, sizeof *out);
    sharp_dd_context_t dd = {0}, w3 = {0};
    if (extract_datadog(h, &dd, why) < 0) {
        sharp_dd_context_free(&dd);
        return -1;
    }
    extract_w3c(h, &w3);
    /* the first style with a trace id; without one, a parent alone is an
     * error */
    sharp_dd_context_t *ctx = dd.has_trace ? &dd : w3.has_trace ? &w3 : NULL;
    int rc = 1;
    if (!ctx) {
        rc = dd.has_parent || w3.has_parent
                 ? bad(why, "There's no trace ID to extract, but there is a parent span ID")
                 : 0;
        goto out;
    }
    if (ctx == &dd && w3.has_trace && w3.trace_hi == dd.trace_hi && w3.trace_lo == dd.trace_lo) {
        /* the W3C context of the same trace adds its tracestate */
        memcpy(dd.dd_parent, w3.dd_parent, sizeof dd.dd_parent);
        dd.w3c_extra = w3.w3c_extra;
        dd.dd_w3c_extra = w3.dd_w3c_extra;
        w3.w3c_extra = w3.dd_w3c_extra = NULL;
    }
    if (!ctx->has_parent && !ctx->origin) {
        rc = bad(why, "There's no parent span ID to extract, but there is a trace ID");
        goto out;
    }
    if (!ctx->trace_hi && !ctx->trace_lo) {
        rc = bad(why, "extracted zero value for trace ID, which is invalid");
        goto out;
    }
    /* a trace started elsewhere without a span: this one is its root */
    if (!ctx->has_parent) ctx->parent_id = 0;
    *out = *ctx;
    memset(ctx, 0, sizeof *ctx);
    /* the span's meta from either style */
    if (ctx != &dd) {
        out->prop_error = dd.prop_error;
        dd.prop_error = NULL;
    }
    out->w3c_error = w3.w3c_error;
    if (out->trace_hi) {
        /* _dd.p.tid must say the high half: else it is corrected */
        char hex[17];
        snprintf(hex, sizeof hex, "%016llx", (unsigned long long)out->trace_hi);
        const char *tid = tags_get(&out->tags, TID_TAG);
        uint64_t hi;
        if (tid && (strlen(tid) != 16 || !sharp_parse_hex64(tid, 16, &hi)))
            set_prop_error(out, "malformed_tid ", tid);
        else if (tid && hi != out->trace_hi)
            set_prop_error(out, "inconsistent_tid ", tid);
        tags_set(&out->tags, TID_TAG, strlen(TID_TAG), hex, 16);
    }
out:
    sharp_dd_context_free(&dd);
    sharp_dd_context_free(&w3);
    return rc;
}

/* ---- the agent's sampling rates ---- */

/* A small JSON reader for the agent's answer. */
typedef struct {
    const char *p, *end;
    int depth;
} json_t;

static void js_ws(json_t *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static bool js_lit(json_t *j, char c)
{
    js_ws(j);
    if (j->p < j->end && *j->p == c) {
        j->p++;
        return true;
    }
    return false;
}

/* A string, its escapes decoded into out (NULL: skipped); a \u escape
 * beyond ASCII reads as '?'. */
static bool js_string(json_t *j, sharp_sbuf_t *out)
{
    if (!js_lit(j, '"')) return false;
    while (j->p < j->end) {
        char c = *j->p++;
        if (c == '"') return true;
        if ((unsigned char)c < 0x20) return false;
        if (c == '\\') {
            if (j->p >= j->end) return false;
            char e = *j->p++;
            switch (e) {
            case '"':
            case '\\':
            case '/':
                c = e;
                break;
            case 'b':
                c = '\b';
                break;
            case 'f':
                c = '\f';
                break;
            case 'n':
                c = '\n';
                break;
            case 'r':
                c = '\r';
                break;
            case 't':
                c = '\t';
                break;
            case 'u': {
                uint64_t v;
                if (j->end - j->p < 4 || !sharp_parse_hex64(j->p, 4, &v)) return false;
                j->p += 4;
                c = v < 0x80 ? (char)v : '?';
                break;
            }
            default:
                return false;
            }
        }
        if (out) sharp_sbuf_append(out, &c, 1);
    }
    return false;
}

static bool js_number(json_t *j, double *out)
{
    js_ws(j);
    size_t n = 0;
    while (j->p + n < j->end && strchr("+-0123456789.eE", j->p[n]) && j->p[n])
        n++;
    char buf[64];
    if (!n || n >= sizeof buf) return false;
    memcpy(buf, j->p, n);
    buf[n] = '\0';
    char *e;
    *out = strtod(buf, &e);
    if (e != buf + n) return false;
    j->p += n;
    return true;
}

/* Any value, skipped. */
static bool js_skip(json_t *j)
{
    js_ws(j);
    if (j->p >= j->end || ++j->depth > 64) return false;
    bool ok = true;
    char c = *j->p;
    if (c == '"') {
        ok = js_string(j, NULL);
    } else if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        j->p++;
        if (!js_lit(j, close)) {
            do {
                if (c == '{' && (!js_string(j, NULL) || !js_lit(j, ':'))) {
                    ok = false;
                    break;
                }
                if (!js_skip(j)) {
                    ok = false;
                    break;
                }
            } while (js_lit(j, ','));
            ok = ok && js_lit(j, close);
        }
    } else if (j->end - j->p >= 4 && (!memcmp(j->p, "true", 4) || !memcmp(j->p, "null", 4))) {
        j->p += 4;
    } else if (j->end - j->p >= 5 && !memcmp(j->p, "false", 5)) {
        j->p += 5;
    } else {
        double d;
        ok = js_number(j, &d);
    }
    j->depth--;
    return ok;
}

#define DEFAULT_RATE_KEY "service:,env:"

void sharp_dd_sampler_free(sharp_dd_sampler_t *s)
{
    for (uint32_t i = 0; i < s->n; i++)
        free(s->keys[i]);
    free(s->keys);
    free(s->rates);
    s->keys = NULL;
    s->rates = NULL;
    s->n = 0;
}

static void rates_set(sharp_dd_sampler_t *s, const char *k, size_t klen, double rate)
{
    for (uint32_t i = 0; i < s->n; i++)
        if (strlen(s->keys[i]) == klen && !memcmp(s->keys[i], k, klen)) {
            s->rates[i] = rate;
            return;
        }
    s->keys = sharp_realloc(s->keys, (s->n + 1) * sizeof *s->keys);
    s->rates = sharp_realloc(s->rates, (s->n + 1) * sizeof *s->rates);
    s->keys[s->n] = sharp_strndup(k, klen);
    s->rates[s->n++] = rate;
}

bool sharp_dd_sampler_update(sharp_dd_sampler_t *s, const char *body, size_t len)
{
    json_t j = {body, body + len, 0};
    sharp_dd_sampler_t got = {0};
    sharp_sbuf_t key = {0};
    bool found = false, ok = js_lit(&j, '{');
    if (ok && !js_lit(&j, '}')) {
        do {
            sharp_sbuf_reset(&key);
            if (!js_string(&j, &key) || !js_lit(&j, ':')) {
                ok = false;
                break;
            }
            if (key.len != 15 || memcmp(key.data, "rate_by_service", 15)) {
                ok = js_skip(&j);
                continue;
            }
            /* an object of rates, each a number in [0, 1] */
            found = true;
            if (!js_lit(&j, '{')) {
                ok = false;
                break;
            }
            if (js_lit(&j, '}')) continue;
            do {
                double rate;
                sharp_sbuf_reset(&key);
                ok = js_string(&j, &key) && js_lit(&j, ':') && js_number(&j, &rate) &&
                     rate >= 0.0 && rate <= 1.0;
                if (ok) rates_set(&got, key.data ? key.data : "", key.len, rate);
            } while (ok && js_lit(&j, ','));
            ok = ok && js_lit(&j, '}');
        } while (ok && js_lit(&j, ','));
        ok = ok && js_lit(&j, '}');
    }
    js_ws(&j);
    ok = ok && j.p == j.end;
    sharp_sbuf_free(&key);
    if (!ok || !found) {
        sharp_dd_sampler_free(&got);
        return ok;
    }
    /* TraceSampler::handle_collector_response: the default is kept until
     * an answer gives another */
    for (uint32_t i = 0; i < got.n; i++)
        if (!strcmp(got.keys[i], DEFAULT_RATE_KEY)) {
            s->has_default = true;
            s->default_rate = got.rates[i];
        }
    sharp_dd_sampler_free(s);
    s->keys = got.keys;
    s->rates = got.rates;
    s->n = got.n;
    return true;
}

void sharp_dd_sampler_rate(const sharp_dd_sampler_t *s, const char *service, sharp_dd_rate_t *out)
{
    *out = (sharp_dd_rate_t){.rate = 1.0, .mechanism = 0};
    if (!s) return;
    size_t n = strlen(service);
    for (uint32_t i = 0; i < s->n; i++) {
        const char *k = s->keys[i];
        if (!strncmp(k, "service:", 8) && strlen(k) == 8 + n + 5 && !memcmp(k + 8, service, n) &&
            !strcmp(k + 8 + n, ",env:")) {
            *out = (sharp_dd_rate_t){.rate = s->rates[i], .mechanism = 1}; /* AGENT_RATE */
            return;
        }
    }
    if (s->has_default) *out = (sharp_dd_rate_t){.rate = s->default_rate, .mechanism = 1};
}

/* TraceSampler::decide without rules: kept when the Knuth hash of the
 * trace id's low half is within the rate (r NULL: no rates yet, 1). */
static void sample(sharp_dd_span_t *d, const sharp_dd_rate_t *r, uint64_t trace_lo)
{
    double rate = r ? r->rate : 1.0;
    int mechanism = r ? r->mechanism : 0;
    uint64_t threshold = rate >= 1.0 ? UINT64_MAX : (uint64_t)(rate * (double)UINT64_MAX);
    bool keep = trace_lo * 1111111111111111111ull <= threshold;
    d->priority = keep ? SHARP_DD_AUTO_KEEP : 0;
    d->local_decision = true;
    d->rate = rate;
    if (keep) {
        char dm[8];
        int len = snprintf(dm, sizeof dm, "-%d", mechanism);
        tags_set(&d->tags, DM_TAG, strlen(DM_TAG), dm, (size_t)len);
    } else {
        tags_remove(&d->tags, DM_TAG);
    }
}

/* ---- spans ---- */

static void meta_append(sharp_span_t *sp, const char *key, const char *value, size_t vlen)
{
    if (sp->nattrs == sp->cap_attrs) {
        sp->cap_attrs = sp->cap_attrs ? sp->cap_attrs * 2 : 32;
        sp->akeys = sharp_realloc(sp->akeys, sp->cap_attrs * sizeof *sp->akeys);
        sp->avals = sharp_realloc(sp->avals, sp->cap_attrs * sizeof *sp->avals);
    }
    sp->akeys[sp->nattrs] = sharp_strdup(key);
    sp->avals[sp->nattrs++] = sharp_strndup(value, vlen);
}

/* The span's meta: a later value of a key replaces the earlier one unless
 * `keep` (then the first stays). For the span's few own meta; the trace
 * tags are added in one pass by sharp_dd_encode_trace. */
static void meta_set(sharp_span_t *sp, const char *key, const char *value, size_t vlen, bool keep)
{
    for (uint32_t i = 0; i < sp->nattrs; i++)
        if (!strcmp(sp->akeys[i], key)) {
            if (keep) return;
            free(sp->avals[i]);
            sp->avals[i] = sharp_strndup(value, vlen);
            return;
        }
    meta_append(sp, key, value, vlen);
}

static void meta_cstr(sharp_span_t *sp, const char *key, const char *value)
{
    meta_set(sp, key, value, strlen(value), false);
}

void sharp_dd_span_start(sharp_span_t *sp, sharp_dd_context_t *ctx, bool traced,
                         const sharp_dd_rate_t *rate, const char *name, size_t name_len, const char *version, uint64_t start_wall_us,
                         uint64_t start_ns, uint64_t (*random)(void *), void *rarg)
{
    memset(sp, 0, sizeof *sp);
    sharp_dd_span_t *d = sharp_calloc(1, sizeof *d);
    sp->dd = d;
    sp->sampled = true; /* every span goes to the agent, with its priority */
    sp->start_wall_us = start_wall_us;
    sp->start_ns = start_ns;
    sp->name = sharp_strndup(name, name_len);
    if (version && version[0]) meta_cstr(sp, "version", version);
    char hex[17];
    if (!ctx) {
        /* a new trace: its low half is the root span's id */
        sp->trace_lo = random(rarg) & ID_MASK;
        sp->trace_hi = (start_wall_us / 1000000) << 32;
        sp->id = sp->trace_lo;
        snprintf(hex, sizeof hex, "%016llx", (unsigned long long)sp->trace_hi);
        tags_set(&d->tags, TID_TAG, strlen(TID_TAG), hex, 16);
    } else {
        sp->trace_hi = ctx->trace_hi;
        sp->trace_lo = ctx->trace_lo;
        sp->parent_id = ctx->parent_id;
        sp->has_parent = ctx->parent_id != 0;
        sp->id = random(rarg) & ID_MASK;
        d->origin = ctx->origin;
        d->tags = ctx->tags;
        d->w3c_extra = ctx->w3c_extra;
        d->dd_w3c_extra = ctx->dd_w3c_extra;
        if (ctx->prop_error) meta_cstr(sp, "_dd.propagation_error", ctx->prop_error);
        if (ctx->w3c_error) meta_cstr(sp, "_dd.w3c_extraction_error", ctx->w3c_error);
        if (ctx->dd_parent[0]) meta_cstr(sp, "_dd.parent_id", ctx->dd_parent);
        free(ctx->prop_error);
        bool has_priority = ctx->has_priority;
        d->priority = ctx->priority;
        memset(ctx, 0, sizeof *ctx);
        /* the caller's decision, as it is */
        if (has_priority) return;
    }
    if (!traced) {
        /* Envoy's "user drop" (a manual decision): no decision maker */
        d->priority = SHARP_DD_USER_DROP;
        tags_remove(&d->tags, DM_TAG);
    } else {
        sample(d, rate, sp->trace_lo);
    }
}

void sharp_dd_span_tag(sharp_span_t *sp, const char *key, const char *value, size_t vlen)
{
    if (!strcmp(key, "resource.name")) {
        free(sp->name);
        sp->name = sharp_strndup(value, vlen);
    } else if (!strcmp(key, "error")) {
        if (vlen == 4 && !memcmp(value, "true", 4)) sp->dd->error = true;
    } else if (!strcmp(key, "error.reason")) {
        sp->dd->error = true; /* dd-trace-cpp's set_error_message */
        meta_set(sp, "error.message", value, vlen, false);
        meta_set(sp, key, value, vlen, false);
    } else {
        meta_set(sp, key, value, vlen, false);
    }
}

bool sharp_dd_span_error(const sharp_span_t *sp)
{
    return sp->dd && sp->dd->error;
}

/* dd-trace-cpp's tracestate sanitizing: outside 0x20-0x7e or in `bad` is
 * '_', then '=' is '~' when `tilde`. */
static void put_clean(sharp_sbuf_t *out, const char *s, const char *badc, bool tilde)
{
    for (; *s; s++) {
        char c = *s;
        if ((unsigned char)c < 0x20 || (unsigned char)c > 0x7e || strchr(badc, c))
            c = '_';
        else if (tilde && c == '=')
            c = '~';
        sharp_sbuf_append(out, &c, 1);
    }
}

void sharp_dd_tracestate(const sharp_span_t *sp, sharp_sbuf_t *out)
{
    const sharp_dd_span_t *d = sp->dd;
    sharp_sbuf_t dd = {0};
    sharp_sbuf_printf(&dd, "dd=s:%d;p:%016llx", d->priority, (unsigned long long)sp->id);
    if (d->origin) {
        sharp_sbuf_puts(&dd, ";o:");
        put_clean(&dd, d->origin, ",;~", true);
    }
    for (uint32_t i = 0; i < d->tags.n; i++) {
        const char *k = d->tags.keys[i];
        if (strncmp(k, "_dd.p.", 6) || !strcmp(k, TID_TAG)) continue;
        sharp_sbuf_puts(&dd, ";t.");
        put_clean(&dd, k + 6, " ,;=", false);
        sharp_sbuf_puts(&dd, ":");
        put_clean(&dd, d->tags.vals[i], ",;~", true);
    }
    if (d->dd_w3c_extra) {
        sharp_sbuf_puts(&dd, ";");
        sharp_sbuf_puts(&dd, d->dd_w3c_extra);
    }
    /* at most 256 bytes: whole fields dropped from the end */
    while (dd.len > SHARP_DD_TRACESTATE_MAX) {
        size_t i = dd.len;
        while (i > 0 && dd.data[i - 1] != ';')
            i--;
        if (i == 0) break;
        dd.len = i - 1;
    }
    sharp_sbuf_append(out, dd.data, dd.len);
    sharp_sbuf_free(&dd);
    if (d->w3c_extra) {
        sharp_sbuf_puts(out, ",");
        sharp_sbuf_puts(out, d->w3c_extra);
    }
}

void sharp_dd_inject(sharp_span_t *sp, sharp_headers_t *h)
{
    const sharp_dd_span_t *d = sp->dd;
    char num[32];
    /* Datadog */
    snprintf(num, sizeof num, "%llu", (unsigned long long)sp->trace_lo);
    sharp_headers_set_cstr(h, "x-datadog-trace-id", num);
    snprintf(num, sizeof num, "%llu", (unsigned long long)sp->id);
    sharp_headers_set_cstr(h, "x-datadog-parent-id", num);
    snprintf(num, sizeof num, "%d", d->priority);
    sharp_headers_set_cstr(h, "x-datadog-sampling-priority", num);
    if (d->origin) sharp_headers_set_cstr(h, "x-datadog-origin", d->origin);
    sharp_sbuf_t b = {0};
    sharp_dd_encode_tags(&d->tags, &b);
    if (b.len > SHARP_DD_TAGS_HEADER_MAX)
        meta_cstr(sp, "_dd.propagation_error", "inject_max_size");
    else if (b.len)
        sharp_headers_set(h, "x-datadog-tags", 14, b.data, b.len);
    /* W3C */
    char tp[56];
    sharp_traceparent_format(sp->trace_hi, sp->trace_lo, sp->id, d->priority > 0, tp);
    sharp_headers_set(h, "traceparent", 11, tp, 55);
    sharp_sbuf_reset(&b);
    sharp_dd_tracestate(sp, &b);
    sharp_headers_set(h, "tracestate", 10, b.data, b.len);
    sharp_sbuf_free(&b);
}

void sharp_dd_encode_trace(sharp_span_t *sp, const char *service, uint64_t duration_ns,
                           const char *runtime_id, int64_t pid, sharp_sbuf_t *out)
{
    sharp_dd_span_t *d = sp->dd;
    /* TraceSegment::span_finished: the trace tags on the local root (its
     * own tags of those names stay), then what every span carries */
    if (d->tags.n) {
        key_index_t ix;
        key_index_init(&ix, sp->nattrs + d->tags.n);
        for (uint32_t i = 0; i < sp->nattrs; i++)
            key_index_add(&ix, sp->akeys, i);
        for (uint32_t i = 0; i < d->tags.n; i++) {
            uint32_t slot;
            const char *k = d->tags.keys[i];
            if (key_index_find(&ix, sp->akeys, k, strlen(k), &slot) >= 0) continue;
            meta_append(sp, k, d->tags.vals[i], strlen(d->tags.vals[i]));
            ix.slots[slot] = sp->nattrs;
        }
        free(ix.slots);
    }
    if (d->origin) meta_cstr(sp, "_dd.origin", d->origin);
    meta_cstr(sp, "language", "cpp");
    meta_cstr(sp, "runtime-id", runtime_id);

    sharp_msgpack_array(out, 1); /* the trace: this one span */
    sharp_msgpack_map(out, 12);
    sharp_msgpack_cstr(out, "service");
    sharp_msgpack_cstr(out, service);
    sharp_msgpack_cstr(out, "name");
    sharp_msgpack_cstr(out, "envoy.proxy");
    sharp_msgpack_cstr(out, "resource");
    sharp_msgpack_cstr(out, sp->name ? sp->name : "");
    sharp_msgpack_cstr(out, "trace_id");
    sharp_msgpack_uint(out, sp->trace_lo);
    sharp_msgpack_cstr(out, "span_id");
    sharp_msgpack_uint(out, sp->id);
    sharp_msgpack_cstr(out, "parent_id");
    sharp_msgpack_uint(out, sp->parent_id);
    sharp_msgpack_cstr(out, "start");
    sharp_msgpack_uint(out, sp->start_wall_us * 1000);
    sharp_msgpack_cstr(out, "duration");
    sharp_msgpack_uint(out, duration_ns);
    sharp_msgpack_cstr(out, "error");
    sharp_msgpack_int(out, d->error ? 1 : 0);
    sharp_msgpack_cstr(out, "meta");
    sharp_msgpack_map(out, sp->nattrs);
    for (uint32_t i = 0; i < sp->nattrs; i++) {
        sharp_msgpack_cstr(out, sp->akeys[i]);
        sharp_msgpack_cstr(out, sp->avals[i]);
    }
    sharp_msgpack_cstr(out, "metrics");
    sharp_msgpack_map(out, d->local_decision ? 3 : 2);
    sharp_msgpack_cstr(out, "_sampling_priority_v1");
    sharp_msgpack_double(out, d->priority);
    if (d->local_decision) {
        sharp_msgpack_cstr(out, "_dd.agent_psr");
        sharp_msgpack_double(out, d->rate);
    }
    sharp_msgpack_cstr(out, "process_id");
    sharp_msgpack_double(out, (double)pid);
    sharp_msgpack_cstr(out, "type");
    sharp_msgpack_cstr(out, "web");
}

void sharp_dd_span_free(sharp_dd_span_t *d)
{
    if (!d) return;
    free(d->origin);
    sharp_dd_tags_free(&d->tags);
    free(d->w3c_extra);
    free(d->dd_w3c_extra);
    free(d);
}

static pthread_once_t runtime_once = PTHREAD_ONCE_INIT;
static char runtime_id[37];

static void make_runtime_id(void)
{
    uint64_t r[2] = {0, 0};
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
        r[0] = sharp_now_ns();
        r[1] = sharp_wall_us() ^ (uint64_t)getpid();
    }
    sharp_sw_uuid(r[0], r[1], runtime_id);
}

const char *sharp_dd_runtime_id(void)
{
    pthread_once(&runtime_once, make_runtime_id);
    return runtime_id;
}

/* ---- reporters ---- */

typedef struct reporter {
    sharp_dlist_t link; /* in worker->datadog_reporters */
    sharp_worker_t *w;
    char *cluster, *hostname;
    sharp_stat_id_t skipped_no_cluster, sent, dropped, failed;
    /* the pending traces, each an encoded array, after 5 bytes left for
     * the request's array32 header (so a flush sends the buffer itself) */
    sharp_sbuf_t traces;
    uint32_t pending;
    uv_timer_t timer;
    sharp_dd_sampler_t sampler; /* from the agent's answers */
    uint64_t answers;           /* rate answers taken: slots resolve again */
} reporter_t;

/* A worker's cache for one configuration: its reporter, and the rate of
 * the configuration's service as of the reporter's answers-th answer. */
struct sharp_dd_worker_slot {
    reporter_t *r;
    uint64_t answers;
    sharp_dd_rate_t rate;
};

/* DatadogAgent's on_response: a 200 with a body carries the rates. */
static void on_agent_response(void *arg, uint32_t status, const char *body, size_t len)
{
    reporter_t *r = arg;
    if (status != 200 || !len) return;
    if (sharp_dd_sampler_update(&r->sampler, body, len))
        r->answers++;
    else
        sharp_debug(upstream,
                    "datadog: the agent's answer on cluster '%s' is not JSON with rate_by_service",
                    r->cluster);
}

/* DatadogAgent::flush: the pending traces as one request. */
static void flush(reporter_t *r)
{
    if (!r->pending) return;
    sharp_worker_t *w = r->w;
    /* array32 whatever the count: valid MessagePack, written in place */
    sharp_sbuf_t body = r->traces;
    body.data[0] = (char)0xdd;
    for (int i = 0; i < 4; i++)
        body.data[1 + i] = (char)(r->pending >> (24 - 8 * i));
    char count[16];
    snprintf(count, sizeof count, "%u", r->pending);
    r->traces = (sharp_sbuf_t){0};
    r->pending = 0;
    /* AgentHTTPClient: a 200 is reports_sent, any other response (the
     * router's own 503 and 504 included) reports_dropped, a reset or
     * timeout once the response began reports_failed */
    sharp_async_post_counts_t counts = {.count = true,
                                        .ok_status = 200,
                                        .ok = r->sent,
                                        .other = r->dropped,
                                        .failed = r->failed,
                                        .response = on_agent_response,
                                        .arg = r};
    sharp_headers_t h;
    sharp_headers_init(&h);
    sharp_async_post_head(&h, SHARP_DD_TRACES_PATH, r->hostname, "application/msgpack");
    sharp_headers_add_cstr(&h, "datadog-meta-lang", "cpp");
    sharp_headers_add_cstr(&h, "datadog-meta-lang-version", SHARP_DD_LANG_VERSION);
    sharp_headers_add_cstr(&h, "datadog-meta-tracer-version", SHARP_DD_TRACER_VERSION);
    sharp_headers_add_cstr(&h, "x-datadog-trace-count", count);
    if (!sharp_async_post(w, r->cluster, "HTTP/1.1", &h, &body, SHARP_DD_TIMEOUT_MS, &counts,
                          "datadog traces")) {
        sharp_debug(upstream, "datadog: collector cluster '%s' does not exist", r->cluster);
        sharp_counter_inc(w->stats, r->skipped_no_cluster);
    }
}

static void on_flush_timer(uv_timer_t *t)
{
    flush(t->data);
}

static reporter_t *find_reporter(sharp_worker_t *w, const sharp_datadog_config_t *dc)
{
    for (sharp_dlist_t *i = w->datadog_reporters.next; i != &w->datadog_reporters; i = i->next) {
        reporter_t *r = sharp_container_of(i, reporter_t, link);
        if (!strcmp(r->cluster, dc->cluster) && !strcmp(r->hostname, dc->hostname)) return r;
    }
    reporter_t *r = sharp_calloc(1, sizeof *r);
    r->w = w;
    r->cluster = sharp_strdup(dc->cluster);
    r->hostname = sharp_strdup(dc->hostname);
    r->skipped_no_cluster = dc->st.reports_skipped_no_cluster;
    r->sent = dc->st.reports_sent;
    r->dropped = dc->st.reports_dropped;
    r->failed = dc->st.reports_failed;
    uv_timer_init(&w->loop, &r->timer);
    r->timer.data = r;
    uv_timer_start(&r->timer, on_flush_timer, SHARP_DD_FLUSH_MS, SHARP_DD_FLUSH_MS);
    sharp_dlist_init(&r->link);
    sharp_dlist_push(&w->datadog_reporters, &r->link);
    return r;
}

void sharp_datadog_sync(sharp_worker_t *w, const sharp_snapshot_t *snap)
{
    if (w->stopping) return;
    for (uint32_t i = 0; i < snap->nlisteners; i++) {
        const sharp_listener_config_t *l = snap->listeners[i];
        for (uint32_t c = 0; c < l->nchains + l->has_default_chain; c++) {
            const sharp_hcm_config_t *h = l->chains[c]->hcm;
            if (h && h->tracing && h->tracing->datadog) find_reporter(w, h->tracing->datadog);
        }
    }
}

/* dc's slot for worker w; the slots are made by the first worker that
 * asks (each worker then writes only its own). */
static struct sharp_dd_worker_slot *slot_of(sharp_worker_t *w, const sharp_datadog_config_t *dc)
{
    sharp_datadog_config_t *mdc = (sharp_datadog_config_t *)dc; /* the cache, not the configuration */
    struct sharp_dd_worker_slot *slots = atomic_load_explicit(&mdc->slots, memory_order_acquire);
    if (!slots) {
        unsigned n = w->server && w->server->nworkers > w->index ? w->server->nworkers : w->index + 1;
        struct sharp_dd_worker_slot *mine = sharp_calloc(n, sizeof *mine), *none = NULL;
        if (atomic_compare_exchange_strong(&mdc->slots, &none, mine))
            slots = mine;
        else {
            free(mine);
            slots = none;
        }
    }
    return &slots[w->index];
}

/* dc's slot for worker w with its reporter found. */
static struct sharp_dd_worker_slot *slot_reporter(sharp_worker_t *w, const sharp_datadog_config_t *dc)
{
    struct sharp_dd_worker_slot *s = slot_of(w, dc);
    if (!s->r) {
        s->r = find_reporter(w, dc);
        s->answers = s->r->answers - 1; /* the rate not resolved yet */
    }
    return s;
}

const sharp_dd_rate_t *sharp_datadog_rate(sharp_worker_t *w, const sharp_datadog_config_t *dc)
{
    if (w->stopping) return NULL;
    struct sharp_dd_worker_slot *s = slot_reporter(w, dc);
    if (s->answers != s->r->answers) {
        sharp_dd_sampler_rate(&s->r->sampler, dc->service ? dc->service : "", &s->rate);
        s->answers = s->r->answers;
    }
    return &s->rate;
}

void sharp_datadog_report(sharp_worker_t *w, const sharp_datadog_config_t *dc, sharp_sbuf_t *trace)
{
    if (w->stopping) {
        sharp_sbuf_free(trace);
        return;
    }
    reporter_t *r = slot_reporter(w, dc)->r;
    if (r->pending >= SHARP_DD_MAX_TRACES || r->traces.len + trace->len > SHARP_DD_MAX_PENDING_BYTES) {
        sharp_debug(upstream, "datadog: %u traces (%zu bytes) wait for cluster '%s': trace dropped",
                    r->pending, r->traces.len, r->cluster);
        sharp_counter_inc(w->stats, r->dropped);
        sharp_sbuf_free(trace);
        return;
    }
    if (!r->traces.len) sharp_sbuf_append(&r->traces, "\0\0\0\0\0", 5);
    sharp_sbuf_append(&r->traces, trace->data, trace->len);
    r->pending++;
    sharp_sbuf_free(trace);
}

static void free_reporter(uv_handle_t *h)
{
    reporter_t *r = h->data;
    free(r->cluster);
    free(r->hostname);
    sharp_sbuf_free(&r->traces);
    sharp_dd_sampler_free(&r->sampler);
    free(r);
}

void sharp_datadog_stop_all(sharp_worker_t *w)
{
    while (!sharp_dlist_empty(&w->datadog_reporters)) {
        reporter_t *r = sharp_container_of(w->datadog_reporters.next, reporter_t, link);
        sharp_dlist_remove(&r->link);
        uv_timer_stop(&r->timer);
        uv_close((uv_handle_t *)&r->timer, free_reporter);
    }
}
