/* sbuf.c: see sbuf.h. */
#include "sbuf.h"

#include <stdarg.h>
#include <stdio.h>

static void reserve(sharp_sbuf_t *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) cap *= 2;
    b->data = sharp_realloc(b->data, cap);
    b->cap = cap;
}

void sharp_sbuf_append(sharp_sbuf_t *b, const char *p, size_t n)
{
    reserve(b, n);
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void sharp_sbuf_printf(sharp_sbuf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0) return;
    reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void sharp_sbuf_json_escape(sharp_sbuf_t *b, const char *s, size_t n)
{
    reserve(b, n);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': sharp_sbuf_append(b, "\\\"", 2); break;
        case '\\': sharp_sbuf_append(b, "\\\\", 2); break;
        case '\n': sharp_sbuf_append(b, "\\n", 2); break;
        case '\r': sharp_sbuf_append(b, "\\r", 2); break;
        case '\t': sharp_sbuf_append(b, "\\t", 2); break;
        default:
            if (c < 0x20) sharp_sbuf_printf(b, "\\u%04x", c);
            else sharp_sbuf_append(b, (const char *)&c, 1);
        }
    }
}

const char *sharp_sbuf_cstr(sharp_sbuf_t *b)
{
    reserve(b, 0);
    b->data[b->len] = '\0';
    return b->data;
}

void sharp_sbuf_reset(sharp_sbuf_t *b)
{
    b->len = 0;
    if (b->data) b->data[0] = '\0';
}

void sharp_sbuf_free(sharp_sbuf_t *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}
