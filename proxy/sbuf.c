/* sbuf.c: see sbuf.h. */
#include "sbuf.h"

#include <stdarg.h>
#include <stdio.h>

void sharp_sbuf_reserve(sharp_sbuf_t *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) cap *= 2;
    b->data = sharp_realloc(b->data, cap);
    b->cap = cap;
}

void sharp_sbuf_append(sharp_sbuf_t *b, const char *p, size_t n)
{
    sharp_sbuf_reserve(b, n);
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
    sharp_sbuf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void sharp_sbuf_json_escape(sharp_sbuf_t *b, const char *s, size_t n)
{
    sharp_sbuf_reserve(b, n);
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
    sharp_sbuf_reserve(b, 0);
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

static int b64_index(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

bool sharp_sbuf_base64_decode(sharp_sbuf_t *out, const char *s, size_t n)
{
    if (!n) return false;
    if (s[n - 1] == '=') {
        n--;
        if (n && s[n - 1] == '=') n--;
    }
    if (!n || n % 4 == 1) return false;
    size_t at = out->len;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64_index((unsigned char)s[i]);
        if (v < 0) {
            out->len = at;
            return false;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            char c = (char)((acc >> bits) & 0xff);
            sharp_sbuf_append(out, &c, 1);
        }
    }
    /* the unused low bits of the last character must be zero */
    if (acc & ((1u << bits) - 1)) {
        out->len = at;
        return false;
    }
    return out->len > at;
}

void sharp_sbuf_append_index(sharp_sbuf_t *b, size_t i)
{
    char d[24];
    size_t k = sizeof d;
    d[--k] = ']';
    do {
        d[--k] = (char)('0' + i % 10);
        i /= 10;
    } while (i);
    d[--k] = '[';
    sharp_sbuf_append(b, d + k, sizeof d - k);
}
