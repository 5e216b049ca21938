/* hash_policy.c: see hash_policy.h. Runs on a worker for each request to a
 * shuffle-shard cluster, before the route's header mutations (Envoy computes
 * the hash when it picks the host, before finalizing the request headers). */
#include "http/hash_policy.h"
#include "net.h"

#include <stdlib.h>

static int cmp_str(const void *x, const void *y)
{
    const sharp_str_t *a = x, *b = y;
    int c = memcmp(a->p, b->p, SHARP_MIN(a->len, b->len));
    if (c) return c;
    return a->len < b->len ? -1 : a->len > b->len;
}

/* Every value of the header, sorted (so the order they came in does not
 * change the key, as in Envoy) and joined with ','. */
static bool header_value(const sharp_headers_t *h, const char *name, sharp_sbuf_t *out)
{
    size_t nlen = strlen(name);
    uint32_t count = 0;
    for (int i = sharp_headers_find(h, name, nlen, 0); i >= 0;
         i = sharp_headers_find(h, name, nlen, (uint32_t)i + 1))
        count++;
    if (!count) return false;
    sharp_str_t local[8], *v = count <= 8 ? local : sharp_calloc(count, sizeof *v);
    uint32_t k = 0;
    for (int i = sharp_headers_find(h, name, nlen, 0); i >= 0;
         i = sharp_headers_find(h, name, nlen, (uint32_t)i + 1))
        v[k++] = sharp_headers_value(h, (uint32_t)i);
    if (count > 1) qsort(v, count, sizeof *v, cmp_str);
    for (uint32_t i = 0; i < count; i++) {
        if (i) sharp_sbuf_append(out, ",", 1);
        sharp_sbuf_append(out, v[i].p, v[i].len);
    }
    if (v != local) free(v);
    return true;
}

static bool cookie_value(const sharp_headers_t *h, const char *name, sharp_sbuf_t *out)
{
    sharp_str_t v;
    if (!sharp_headers_cookie_value(h, name, strlen(name), &v)) return false;
    sharp_sbuf_append(out, v.p, v.len);
    return true;
}

/* The first parameter of that name in :path's query, as is (Envoy's
 * parseQueryString does not decode); a bare "name" has the value "". */
static bool query_value(const sharp_headers_t *h, const char *name, sharp_sbuf_t *out)
{
    sharp_str_t path;
    if (!sharp_headers_get_cstr(h, ":path", &path)) return false;
    const char *q = memchr(path.p, '?', path.len);
    if (!q) return false;
    size_t nlen = strlen(name);
    const char *p = q + 1, *end = path.p + path.len;
    const char *hash = memchr(p, '#', (size_t)(end - p));
    if (hash) end = hash;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pe = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pe - p));
        const char *ke = eq ? eq : pe;
        if ((size_t)(ke - p) == nlen && memcmp(p, name, nlen) == 0) {
            if (eq) sharp_sbuf_append(out, eq + 1, (size_t)(pe - eq - 1));
            return true;
        }
        p = pe + 1;
    }
    return false;
}

bool sharp_hash_policy_key(const sharp_hash_policy_t *hp, uint32_t n, const sharp_headers_t *req,
                           const char *remote, sharp_sbuf_t *out)
{
    bool any = false;
    for (uint32_t i = 0; i < n; i++) {
        size_t mark = out->len;
        if (any) sharp_sbuf_append(out, "\n", 1);
        bool got = false;
        switch (hp[i].kind) {
        case SHARP_HASH_HEADER:
            got = header_value(req, hp[i].name, out);
            break;
        case SHARP_HASH_COOKIE:
            got = cookie_value(req, hp[i].name, out);
            break;
        case SHARP_HASH_QUERY_PARAMETER:
            got = query_value(req, hp[i].name, out);
            break;
        case SHARP_HASH_SOURCE_IP: {
            /* Envoy's SourceIpHashMethod: no hash without an IP (a Unix
             * socket peer) */
            sharp_str_t ip = remote && !sharp_addr_is_pipe(remote) ? sharp_addr_without_port(remote)
                                                                   : (sharp_str_t){"", 0};
            if (ip.len) sharp_sbuf_append(out, ip.p, ip.len);
            got = ip.len > 0;
            break;
        }
        }
        if (!got) out->len = mark; /* drop the separator */
        any |= got;
        if (hp[i].terminal && any) break;
    }
    return any;
}
