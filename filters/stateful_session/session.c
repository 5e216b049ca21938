/* session.c: the stateful session's value codecs (see session.h). */
#include "filters/stateful_session/session.h"
#include "http/tracing.h"

#include <stdio.h>
#include <string.h>

static void put_varint(sharp_sbuf_t *out, uint64_t v)
{
    char b[10];
    size_t n = 0;
    do {
        b[n++] = (char)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    sharp_sbuf_append(out, b, n);
}

void sharp_session_cookie_encode(sharp_sbuf_t *out, const char *addr, size_t alen, uint64_t expires)
{
    sharp_sbuf_t msg = {0};
    if (alen) {
        put_varint(&msg, (1u << 3) | 2); /* address: length-delimited */
        put_varint(&msg, alen);
        sharp_sbuf_append(&msg, addr, alen);
    }
    if (expires) {
        put_varint(&msg, (2u << 3) | 0); /* expires: varint */
        put_varint(&msg, expires);
    }
    sharp_sw_base64(out, msg.data ? msg.data : "", msg.len);
    sharp_sbuf_free(&msg);
}

static bool get_varint(const unsigned char **p, const unsigned char *end, uint64_t *v)
{
    uint64_t r = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (*p >= end) return false;
        unsigned char c = *(*p)++;
        if (shift == 63 && c > 1) return false; /* past 64 bits */
        r |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *v = r;
            return true;
        }
    }
    return false;
}

/* Parses an envoy.Cookie as protobuf's ParseFromString does: unknown
 * fields of the varint, fixed64, length-delimited and fixed32 wire types
 * are skipped and the last occurrence of a field wins. False when the
 * bytes are no such message. (protobuf also refuses an address that is not
 * UTF-8; taken here, such an address names no host either.) */
static bool parse_cookie_msg(const unsigned char *p, size_t n, const unsigned char **addr,
                             size_t *alen, uint64_t *expires)
{
    const unsigned char *end = p + n;
    *addr = NULL;
    *alen = 0;
    *expires = 0;
    while (p < end) {
        uint64_t key, v;
        if (!get_varint(&p, end, &key)) return false;
        uint64_t field = key >> 3;
        unsigned wt = (unsigned)(key & 7);
        if (field == 0 || field > 0x1fffffff) return false;
        switch (wt) {
        case 0:
            if (!get_varint(&p, end, &v)) return false;
            if (field == 2) *expires = v;
            break;
        case 1:
            if ((size_t)(end - p) < 8) return false;
            p += 8;
            break;
        case 2:
            if (!get_varint(&p, end, &v) || v > (uint64_t)(end - p)) return false;
            if (field == 1) {
                *addr = p;
                *alen = (size_t)v;
            }
            p += v;
            break;
        case 5:
            if ((size_t)(end - p) < 4) return false;
            p += 4;
            break;
        default: /* groups and invalid wire types */
            return false;
        }
        if ((field == 1 && wt != 2) || (field == 2 && wt != 0)) return false;
    }
    return true;
}

/* Envoy's Base64::decode: a length that is a multiple of 4, else nothing. */
static bool b64_decode(const char *v, size_t n, sharp_sbuf_t *out)
{
    if (!n || n % 4) return false;
    return sharp_sbuf_base64_decode(out, v, n);
}

static bool take_addr(const void *p, size_t n, char addr[SHARP_SESSION_ADDR_MAX + 1])
{
    if (!n || n > SHARP_SESSION_ADDR_MAX || memchr(p, '\0', n)) return false;
    memcpy(addr, p, n);
    addr[n] = '\0';
    return true;
}

bool sharp_session_cookie_decode(const char *v, size_t n, uint64_t now_s,
                                 char addr[SHARP_SESSION_ADDR_MAX + 1])
{
    sharp_sbuf_t raw = {0};
    bool ok = false;
    if (!b64_decode(v, n, &raw)) goto out;
    const unsigned char *a;
    size_t alen;
    uint64_t expires;
    if (parse_cookie_msg((const unsigned char *)raw.data, raw.len, &a, &alen, &expires)) {
        if (expires && now_s > expires) goto out;
        ok = take_addr(a, alen, addr);
    } else {
        ok = take_addr(raw.data, raw.len, addr); /* the plain format */
    }
out:
    sharp_sbuf_free(&raw);
    return ok;
}

void sharp_session_header_encode(sharp_sbuf_t *out, const char *addr, size_t alen)
{
    sharp_sw_base64(out, addr, alen);
}

bool sharp_session_header_decode(const char *v, size_t n, char addr[SHARP_SESSION_ADDR_MAX + 1])
{
    sharp_sbuf_t raw = {0};
    bool ok = b64_decode(v, n, &raw) && take_addr(raw.data, raw.len, addr);
    sharp_sbuf_free(&raw);
    return ok;
}

bool sharp_session_path_match(const char *cp, size_t plen, const char *path, size_t n)
{
    if (!plen) return true;
    if (n < plen || memcmp(path, cp, plen) != 0) return false;
    if (cp[plen - 1] == '/' || n == plen) return true;
    char c = path[plen];
    return c == '/' || c == '?' || c == '#';
}

void sharp_session_set_cookie(sharp_sbuf_t *out, const char *name, const char *value, size_t vlen,
                              uint64_t max_age_s, const char *path)
{
    sharp_sbuf_printf(out, "%s=\"", name);
    sharp_sbuf_append(out, value, vlen);
    sharp_sbuf_append(out, "\"", 1);
    if (max_age_s) sharp_sbuf_printf(out, "; Max-Age=%llu", (unsigned long long)max_age_s);
    if (path && path[0]) sharp_sbuf_printf(out, "; Path=%s", path);
    sharp_sbuf_append(out, "; HttpOnly", 10);
}
