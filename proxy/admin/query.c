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

static char *decode_dup(const char *p, size_t n)
{
    char *d = sharp_calloc(1, n + 1);
    sharp_percent_decode(p, n, d);
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
