/* headers.c: see headers.h. Removal compacts the entry array but leaves the
 * bytes in the buffer; a map lives for one message, so the waste is bounded
 * by what that message added. */
#include "http/headers.h"
#include "small.h"

#include <strings.h>

void sharp_headers_init(sharp_headers_t *h)
{
    memset(h, 0, sizeof *h);
}

struct sharp_header_case {
    bool proper_others, keep_reason;
    uint32_t n, cap;
    struct {
        uint32_t off, len;
    } *e;
    sharp_sbuf_t bytes; /* the names, then the reason phrase's spans */
    bool has_reason, refused;
    uint32_t reason_off, reason_len;
};

static void case_free(sharp_headers_t *h)
{
    sharp_header_case_t *c = h->cases;
    free(c->e);
    sharp_sbuf_free(&c->bytes);
    free(c);
    h->cases = NULL;
}

void sharp_headers_clear(sharp_headers_t *h)
{
    h->n = 0;
    h->blen = 0;
    h->names = 0;
    h->bytes = 0;
    if (h->cases) case_free(h);
}

static inline unsigned char lower(unsigned char c)
{
    return (unsigned char)((unsigned)(c - 'A') < 26u ? c + 32 : c);
}

/* lower() of eight bytes at once: a byte of 'A'..'Z' (its high bit clear,
 * its low seven bits from 0x41 to 0x5a) gets 0x20 added; no other byte
 * changes, and no sum carries into the next byte. Names are lower-cased on
 * every add and compared on every lookup, a few bytes per loop turn. */
static inline uint64_t lower8(uint64_t x)
{
    uint64_t low7 = x & 0x7f7f7f7f7f7f7f7full;
    uint64_t ge_a = low7 + 0x3f3f3f3f3f3f3f3full;  /* high bit: low7 >= 'A' */
    uint64_t gt_z = low7 + 0x2525252525252525ull;  /* high bit: low7 > 'Z' */
    uint64_t upper = (ge_a ^ gt_z) & ~x & 0x8080808080808080ull;
    return x | (upper >> 2);
}

static inline void lower_in_place(char *p, size_t n)
{
    size_t k = 0;
    for (; k + 8 <= n; k += 8) {
        uint64_t x;
        memcpy(&x, p + k, 8);
        x = lower8(x);
        memcpy(p + k, &x, 8);
    }
    for (; k < n; k++) p[k] = (char)lower((unsigned char)p[k]);
}

/* The bit of a name in h->names, from its length and its first and last
 * bytes with bit 0x20 set (the same for both cases of a letter; other
 * bytes it merges only share bits): the names a request is searched for
 * differ there. */
static inline uint64_t name_bit(const char *name, size_t nlen)
{
    if (!nlen) return 1;
    unsigned x = (unsigned)nlen * 7u + ((unsigned char)name[0] | 0x20u) * 3u + ((unsigned char)name[nlen - 1] | 0x20u);
    return (uint64_t)1 << (x & 63);
}

/* A stored name (lower-case) against a name of any case, a word at a
 * time: a name's tail is its last word (or, shorter than eight bytes, its
 * first and last four), overlapping what was compared before, so no byte
 * loop runs for names of four bytes or more (":path", ":method",
 * ":authority", "content-length"). */
static inline __attribute__((always_inline)) bool name_eq(const sharp_headers_t *h, uint32_t i, const char *name,
                                                          size_t nlen)
{
    if (h->e[i].name_len != nlen) return false;
    const char *st = h->buf + h->e[i].name_off;
    if (nlen >= 8) {
        uint64_t a, b;
        size_t k = 0;
        for (; k + 8 <= nlen; k += 8) {
            memcpy(&a, st + k, 8);
            memcpy(&b, name + k, 8);
            if (a != lower8(b)) return false;
        }
        if (k == nlen) return true;
        memcpy(&a, st + nlen - 8, 8);
        memcpy(&b, name + nlen - 8, 8);
        return a == lower8(b);
    }
    if (nlen >= 4) {
        uint32_t a0, b0, a1, b1;
        memcpy(&a0, st, 4);
        memcpy(&b0, name, 4);
        memcpy(&a1, st + nlen - 4, 4);
        memcpy(&b1, name + nlen - 4, 4);
        return a0 == (uint32_t)lower8(b0) && a1 == (uint32_t)lower8(b1);
    }
    for (size_t k = 0; k < nlen; k++)
        if ((unsigned char)st[k] != lower((unsigned char)name[k])) return false;
    return true;
}

void sharp_headers_free(sharp_headers_t *h)
{
    sharp_small_free(h->e);
    sharp_small_free(h->buf);
    if (h->cases) case_free(h);
    memset(h, 0, sizeof *h);
}

/* Whether p points into the map's own buffer: a value copied from another
 * header of the same map (x-envoy-original-path from :path), which moves
 * when the buffer grows. Returns its offset in *off. */
static bool in_buf(const sharp_headers_t *h, const char *p, size_t *off)
{
    uintptr_t b = (uintptr_t)h->buf, q = (uintptr_t)p;
    if (!h->buf || q < b || q >= b + h->bcap) return false;
    *off = q - b;
    return true;
}

/* The buffer exists once any header does, even one whose name and value
 * are empty, so that a name or value span is never an offset from NULL. */
static uint32_t buf_put(sharp_headers_t *h, const char *p, size_t n)
{
    if (h->blen + n > h->bcap || !h->buf) {
        size_t at;
        bool own = in_buf(h, p, &at);
        uint32_t cap = h->bcap ? h->bcap : 512;
        while (cap < h->blen + n) cap *= 2;
        h->buf = sharp_small_realloc(h->buf, cap);
        h->bcap = cap;
        if (own) p = h->buf + at;
    }
    uint32_t off = h->blen;
    if (n) memcpy(h->buf + off, p, n);
    h->blen += (uint32_t)n;
    return off;
}

/* buf_put's growth for a name and value put together: *name and *value,
 * when they point into the buffer, follow it if it moves. */
static void buf_reserve(sharp_headers_t *h, size_t n, const char **name, const char **value)
{
    if (h->blen + n <= h->bcap && h->buf) return;
    size_t nat = 0, vat = 0;
    bool own_name = in_buf(h, *name, &nat), own_value = in_buf(h, *value, &vat);
    uint32_t cap = h->bcap ? h->bcap : 512;
    while (cap < h->blen + n) cap *= 2;
    h->buf = sharp_small_realloc(h->buf, cap);
    h->bcap = cap;
    if (own_name) *name = h->buf + nat;
    if (own_value) *value = h->buf + vat;
}

void sharp_headers_copy(sharp_headers_t *dst, const sharp_headers_t *src)
{
    sharp_headers_clear(dst);
    for (uint32_t i = 0; i < src->n; i++) {
        sharp_str_t nm = sharp_headers_name(src, i), v = sharp_headers_value(src, i);
        sharp_headers_add(dst, nm.p, nm.len, v.p, v.len);
    }
    if (src->cases) {
        const sharp_header_case_t *a = src->cases;
        sharp_headers_case_enable(dst, a->proper_others, a->keep_reason);
        sharp_header_case_t *b = dst->cases;
        b->n = b->cap = a->n;
        b->e = sharp_calloc(a->n ? a->n : 1, sizeof *b->e);
        if (a->n) memcpy(b->e, a->e, a->n * sizeof *b->e);
        if (a->bytes.len) sharp_sbuf_append(&b->bytes, a->bytes.data, a->bytes.len);
        b->has_reason = a->has_reason;
        b->refused = a->refused;
        b->reason_off = a->reason_off;
        b->reason_len = a->reason_len;
    }
}

void sharp_headers_case_enable(sharp_headers_t *h, bool proper_others, bool keep_reason)
{
    if (!h->cases) h->cases = sharp_calloc(1, sizeof *h->cases);
    h->cases->proper_others = proper_others;
    h->cases->keep_reason = keep_reason;
}

void sharp_headers_case_name(sharp_headers_t *h, const char *p, size_t n, bool first)
{
    sharp_header_case_t *c = h->cases;
    if (!c) return;
    if (first) {
        c->refused = c->n >= SHARP_HEADER_CASE_MAX_NAMES;
        if (c->refused) return;
        if (c->n == c->cap) {
            c->cap = c->cap ? c->cap * 2 : 16;
            c->e = sharp_realloc(c->e, c->cap * sizeof *c->e);
        }
        c->e[c->n].off = (uint32_t)c->bytes.len;
        c->e[c->n].len = 0;
        c->n++;
    } else if (c->refused || !c->n) {
        return;
    }
    sharp_sbuf_append(&c->bytes, p, n);
    c->e[c->n - 1].len += (uint32_t)n;
}

void sharp_headers_case_reason(sharp_headers_t *h, const char *p, size_t n)
{
    sharp_header_case_t *c = h->cases;
    if (!c || !c->keep_reason) return;
    if (!c->has_reason) {
        c->has_reason = true;
        c->reason_off = (uint32_t)c->bytes.len;
        c->reason_len = 0;
    }
    sharp_sbuf_append(&c->bytes, p, n);
    c->reason_len += (uint32_t)n;
}

bool sharp_headers_case_reason_get(const sharp_headers_t *h, sharp_str_t *out)
{
    const sharp_header_case_t *c = h->cases;
    if (!c || !c->has_reason || !c->reason_len) return false;
    *out = (sharp_str_t){c->bytes.data + c->reason_off, c->reason_len};
    return true;
}

void sharp_header_proper_case(char *p, size_t n)
{
    bool up = true;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        bool alpha = (unsigned)((ch | 0x20) - 'a') < 26u, digit = (unsigned)(ch - '0') < 10u;
        if (up && alpha && ch >= 'a') p[i] = (char)(ch - 32);
        up = !alpha && !digit;
    }
}

void sharp_header_name_format(const sharp_headers_t *h, bool proper, char *p, size_t n)
{
    const sharp_header_case_t *c = h->cases;
    if (c) {
        for (uint32_t i = 0; i < c->n; i++) {
            if (c->e[i].len != n) continue;
            const char *o = c->bytes.data + c->e[i].off;
            size_t k = 0;
            while (k < n && lower((unsigned char)o[k]) == lower((unsigned char)p[k])) k++;
            if (k == n) {
                memcpy(p, o, n);
                return;
            }
        }
        proper = c->proper_others;
    }
    if (proper) sharp_header_proper_case(p, n);
}

void sharp_headers_add(sharp_headers_t *h, const char *name, size_t nlen, const char *value,
                       size_t vlen)
{
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 16;
        h->e = sharp_small_realloc(h->e, h->cap * sizeof *h->e);
    }
    sharp_header_entry_t *e = &h->e[h->n++];
    /* 8 bytes of slack: the name is lower-cased a word at a time, its last
     * word running into bytes the value then overwrites (or past the end) */
    buf_reserve(h, nlen + vlen + 8, &name, &value);
    uint32_t off = h->blen;
    char *np = h->buf + off;
    if (nlen) memcpy(np, name, nlen);
    for (size_t k = 0; k < nlen; k += 8) {
        uint64_t x;
        memcpy(&x, np + k, 8);
        x = lower8(x);
        memcpy(np + k, &x, 8);
    }
    if (vlen) memcpy(np + nlen, value, vlen);
    h->blen = off + (uint32_t)(nlen + vlen);
    e->name_off = off;
    e->name_len = (uint32_t)nlen;
    e->value_off = off + (uint32_t)nlen;
    e->value_len = (uint32_t)vlen;
    h->names |= name_bit(np, nlen);
    h->bytes += (uint32_t)(nlen + vlen);
}

/* The last entry's value (or name, while its value is still empty) is always
 * at the end of the buffer, so appending extends it in place. */
void sharp_headers_append_last_value(sharp_headers_t *h, const char *p, size_t n)
{
    if (!h->n) return;
    buf_put(h, p, n);
    h->e[h->n - 1].value_len += (uint32_t)n;
    h->bytes += (uint32_t)n;
}

void sharp_headers_append_last_name(sharp_headers_t *h, const char *p, size_t n)
{
    if (!h->n) return;
    sharp_header_entry_t *e = &h->e[h->n - 1];
    uint32_t off = buf_put(h, p, n);
    lower_in_place(h->buf + off, n);
    e->name_len += (uint32_t)n;
    e->value_off = h->blen; /* value starts after the name */
    h->names |= name_bit(h->buf + e->name_off, e->name_len); /* the name so far: its final bit is set last */
    h->bytes += (uint32_t)n;
}

int sharp_headers_find(const sharp_headers_t *h, const char *name, size_t nlen, uint32_t from)
{
    if (!(h->names & name_bit(name, nlen))) return -1;
    for (uint32_t i = from; i < h->n; i++)
        if (name_eq(h, i, name, nlen)) return (int)i;
    return -1;
}

bool sharp_headers_get(const sharp_headers_t *h, const char *name, size_t nlen, sharp_str_t *out)
{
    int i = sharp_headers_find(h, name, nlen, 0);
    if (i < 0) return false;
    if (out) *out = sharp_headers_value(h, (uint32_t)i);
    return true;
}

/* Drops the entries from `from` on that `match` accepts; returns how many. */
static size_t drop_matching(sharp_headers_t *h, uint32_t from,
                            bool (*match)(const sharp_headers_t *h, uint32_t i, const void *arg), const void *arg)
{
    uint32_t w = from;
    size_t removed = 0;
    for (uint32_t r = from; r < h->n; r++) {
        if (match(h, r, arg)) {
            removed++;
            h->bytes -= h->e[r].name_len + h->e[r].value_len;
            continue;
        }
        h->e[w++] = h->e[r];
    }
    h->n = w;
    return removed;
}

typedef struct {
    const char *name;
    size_t len;
} name_arg_t;

static bool match_name(const sharp_headers_t *h, uint32_t i, const void *arg)
{
    const name_arg_t *n = arg;
    return name_eq(h, i, n->name, n->len);
}

static size_t drop_from(sharp_headers_t *h, uint32_t from, const char *name, size_t nlen)
{
    name_arg_t n = {name, nlen};
    return drop_matching(h, from, match_name, &n);
}

typedef struct {
    bool (*match)(sharp_str_t name, void *arg);
    void *arg;
} pred_arg_t;

static bool match_pred(const sharp_headers_t *h, uint32_t i, const void *arg)
{
    const pred_arg_t *p = arg;
    return p->match(sharp_headers_name(h, i), p->arg);
}

size_t sharp_headers_remove_matching(sharp_headers_t *h, bool (*match)(sharp_str_t name, void *arg), void *arg)
{
    pred_arg_t p = {match, arg};
    return drop_matching(h, 0, match_pred, &p);
}

size_t sharp_headers_remove(sharp_headers_t *h, const char *name, size_t nlen)
{
    int i = sharp_headers_find(h, name, nlen, 0);
    return i < 0 ? 0 : drop_from(h, (uint32_t)i, name, nlen);
}

void sharp_headers_set(sharp_headers_t *h, const char *name, size_t nlen, const char *value,
                       size_t vlen)
{
    int i = sharp_headers_find(h, name, nlen, 0);
    if (i < 0) {
        sharp_headers_add(h, name, nlen, value, vlen);
        return;
    }
    /* Keep the position of the first occurrence, drop the others. */
    h->bytes += (uint32_t)vlen - h->e[i].value_len;
    h->e[i].value_off = buf_put(h, value, vlen);
    h->e[i].value_len = (uint32_t)vlen;
    drop_from(h, (uint32_t)i + 1, name, nlen);
}

bool sharp_list_next(sharp_str_t *rest, sharp_str_t *item)
{
    while (rest->len) {
        const char *p = rest->p, *comma = memchr(p, ',', rest->len);
        size_t n = comma ? (size_t)(comma - p) : rest->len;
        rest->p += comma ? n + 1 : n;
        rest->len -= comma ? n + 1 : n;
        while (n && (*p == ' ' || *p == '\t')) p++, n--;
        while (n && (p[n - 1] == ' ' || p[n - 1] == '\t')) n--;
        if (n) {
            *item = (sharp_str_t){p, n};
            return true;
        }
    }
    return false;
}

bool sharp_header_value_has_token(sharp_str_t v, const char *token)
{
    size_t tl = strlen(token);
    sharp_str_t item;
    while (sharp_list_next(&v, &item))
        if (item.len == tl && strncasecmp(item.p, token, tl) == 0) return true;
    return false;
}

void sharp_headers_dump(const sharp_headers_t *h, sharp_sbuf_t *out)
{
    for (uint32_t i = 0; i < h->n; i++) {
        const sharp_header_entry_t *e = &h->e[i];
        sharp_sbuf_printf(out, "\n'%.*s', '%.*s'", (int)e->name_len, h->buf + e->name_off,
                          (int)e->value_len, h->buf + e->value_off);
    }
}

uint32_t sharp_headers_status(const sharp_headers_t *h)
{
    sharp_str_t st;
    /* the codecs put :status first: the first entry answers without a
     * lookup (it is then the first :status, as a lookup would find) */
    if (h->n && name_eq(h, 0, ":status", 7)) st = sharp_headers_value(h, 0);
    else if (!sharp_headers_get_cstr(h, ":status", &st)) return 0;
    if (st.len != 3) return 0;
    uint32_t code = 0;
    for (size_t i = 0; i < 3; i++) {
        if (st.p[i] < '0' || st.p[i] > '9') return 0;
        code = code * 10 + (uint32_t)(st.p[i] - '0');
    }
    return code;
}

bool sharp_header_is_connection_specific(sharp_str_t n)
{
    return sharp_str_eq(n, "connection", 10) || sharp_str_eq(n, "transfer-encoding", 17) ||
           sharp_str_eq(n, "keep-alive", 10) || sharp_str_eq(n, "proxy-connection", 16) ||
           sharp_str_eq(n, "upgrade", 7);
}

bool sharp_header_value_is_unique(sharp_str_t n)
{
    switch (n.len) {
    case 11: return sharp_str_eq(n, "traceparent", 11) || sharp_str_eq(n, "x-b3-spanid", 11);
    case 12: return sharp_str_eq(n, "x-request-id", 12) || sharp_str_eq(n, "x-b3-traceid", 12);
    case 15: return sharp_str_eq(n, "x-amzn-trace-id", 15);
    case 17: return sharp_str_eq(n, "x-b3-parentspanid", 17) || sharp_str_eq(n, "x-client-trace-id", 17);
    default: return false;
    }
}

void sharp_request_head_scan(const sharp_headers_t *h, sharp_request_head_t *out)
{
    memset(out, 0, sizeof *out);
    for (uint32_t i = 0; i < h->n; i++) {
        sharp_str_t n = sharp_headers_name(h, i);
        sharp_str_t *slot = NULL;
        switch (n.len) {
        case 4: slot = sharp_str_eq(n, "host", 4) ? &out->host : NULL; break;
        case 5: slot = sharp_str_eq(n, ":path", 5) ? &out->path : NULL; break;
        case 7:
            slot = sharp_str_eq(n, ":method", 7)   ? &out->method
                   : sharp_str_eq(n, ":scheme", 7) ? &out->scheme
                   : sharp_str_eq(n, "upgrade", 7) ? &out->upgrade
                                                   : NULL;
            break;
        case 10:
            slot = sharp_str_eq(n, ":authority", 10)   ? &out->authority
                   : sharp_str_eq(n, "connection", 10) ? &out->connection
                                                       : NULL;
            break;
        case 14: slot = sharp_str_eq(n, "content-length", 14) ? &out->content_length : NULL; break;
        default: break;
        }
        if (slot && !slot->p) *slot = sharp_headers_value(h, i);
    }
}

bool sharp_headers_cookie_value(const sharp_headers_t *h, const char *name, size_t nlen, sharp_str_t *out)
{
    for (int i = sharp_headers_find(h, "cookie", 6, 0); i >= 0; i = sharp_headers_find(h, "cookie", 6, (uint32_t)i + 1)) {
        sharp_str_t c = sharp_headers_value(h, (uint32_t)i);
        size_t p = 0;
        while (p < c.len) {
            size_t end = p;
            while (end < c.len && c.p[end] != ';')
                end++;
            size_t a = p;
            while (a < end && (c.p[a] == ' ' || c.p[a] == '\t'))
                a++;
            const char *eq = memchr(c.p + a, '=', end - a);
            if (eq && (size_t)(eq - (c.p + a)) == nlen && memcmp(c.p + a, name, nlen) == 0) {
                const char *vp = eq + 1;
                size_t vl = (size_t)(c.p + end - vp);
                if (vl >= 2 && vp[0] == '"' && vp[vl - 1] == '"') {
                    vp++;
                    vl -= 2;
                }
                if (!vl) return false;
                *out = (sharp_str_t){vp, vl};
                return true;
            }
            p = end + 1;
        }
    }
    return false;
}

bool sharp_headers_get_all(const sharp_headers_t *h, const char *name, size_t nlen, sharp_sbuf_t *tmp,
                           sharp_str_t *out)
{
    int first = sharp_headers_find(h, name, nlen, 0);
    if (first < 0) return false;
    int next = sharp_headers_find(h, name, nlen, (uint32_t)first + 1);
    if (next < 0) {
        *out = sharp_headers_value(h, (uint32_t)first);
        return true;
    }
    sharp_sbuf_reset(tmp);
    for (int i = first; i >= 0; i = sharp_headers_find(h, name, nlen, (uint32_t)i + 1)) {
        if (i != first) sharp_sbuf_append(tmp, ",", 1);
        sharp_str_t x = sharp_headers_value(h, (uint32_t)i);
        sharp_sbuf_append(tmp, x.p, x.len);
    }
    *out = (sharp_str_t){tmp->data ? tmp->data : "", tmp->len};
    return true;
}
