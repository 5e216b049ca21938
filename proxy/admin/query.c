/* query.c: see query.h. */
#include "admin/query.h"

void sharp_url_split(const char *target, size_t len, sharp_str_t *path, sharp_str_t *query)
{
    const char *hash = memchr(target, '#', len);
    if (hash) len = (size_t)(hash - target);
    const char *q = memchr(target, '?', len);
    if (!q) {
        *path = (sharp_str_t){target, len};
        *query = (sharp_str_t){target + len, 0};
        return;
    }
    *path = (sharp_str_t){target, (size_t)(q - target)};
    *query = (sharp_str_t){q + 1, len - (size_t)(q - target) - 1};
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

size_t sharp_url_decode(const char *src, size_t len, char *dst)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        /* Needs two characters after the '%': indexes i+1 and i+2. */
        if (src[i] == '%' && len - i > 2) {
            int h = hexval(src[i + 1]), l = hexval(src[i + 2]);
            if (h >= 0 && l >= 0) {
                dst[o++] = (char)(h * 16 + l);
                i += 2;
                continue;
            }
        }
        dst[o++] = src[i];
    }
    dst[o] = '\0';
    return o;
}

static char *decode_dup(const char *p, size_t n)
{
    char *d = sharp_calloc(1, n + 1);
    sharp_url_decode(p, n, d);
    return d;
}

void sharp_query_parse(const char *qs, size_t len, sharp_query_t *out)
{
    out->params = NULL;
    out->n = 0;
    size_t cap = 0;
    size_t i = 0;
    while (i < len) {
        const char *seg = qs + i;
        const char *amp = memchr(seg, '&', len - i);
        size_t seglen = amp ? (size_t)(amp - seg) : len - i;
        i += seglen + 1;
        if (seglen == 0) continue;
        if (out->n == cap) {
            cap = cap ? cap * 2 : 4;
            out->params = sharp_realloc(out->params, cap * sizeof *out->params);
        }
        sharp_query_param_t *p = &out->params[out->n++];
        const char *eq = memchr(seg, '=', seglen);
        if (eq) {
            p->key = decode_dup(seg, (size_t)(eq - seg));
            p->value = decode_dup(eq + 1, seglen - (size_t)(eq - seg) - 1);
            p->has_value = true;
        } else {
            p->key = decode_dup(seg, seglen);
            p->value = sharp_strdup("");
            p->has_value = false;
        }
    }
}

const char *sharp_query_get(const sharp_query_t *q, const char *key)
{
    for (size_t i = 0; i < q->n; i++)
        if (strcmp(q->params[i].key, key) == 0) return q->params[i].value;
    return NULL;
}

void sharp_query_free(sharp_query_t *q)
{
    for (size_t i = 0; i < q->n; i++) {
        free(q->params[i].key);
        free(q->params[i].value);
    }
    free(q->params);
    q->params = NULL;
    q->n = 0;
}
