/* listener_inspect.c: the TLS and HTTP inspectors (listener_inspect.h). */
#include "listener_inspect.h"

#include <ctype.h>
#include <string.h>

/* ---- TLS: the ClientHello (RFC 8446 4.1.2, RFC 6066 3, RFC 7301 3.1) ---- */

/* A bounded reader over the handshake message. */
typedef struct {
    const uint8_t *p;
    size_t n, at;
    bool bad;
} rd_t;

static uint32_t rd_u(rd_t *r, size_t bytes)
{
    if (r->bad || r->n - r->at < bytes) {
        r->bad = true;
        return 0;
    }
    uint32_t v = 0;
    for (size_t i = 0; i < bytes; i++) v = v << 8 | r->p[r->at++];
    return v;
}

static const uint8_t *rd_skip(rd_t *r, size_t len)
{
    if (r->bad || r->n - r->at < len) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *q = r->p + r->at;
    r->at += len;
    return q;
}

static void parse_sni(const uint8_t *p, size_t n, sharp_client_hello_t *out)
{
    rd_t r = {p, n, 0, false};
    size_t list = rd_u(&r, 2);
    rd_t l = {rd_skip(&r, list), list, 0, r.bad};
    while (!l.bad && l.at < l.n) {
        uint32_t type = rd_u(&l, 1);
        size_t len = rd_u(&l, 2);
        const uint8_t *name = rd_skip(&l, len);
        if (l.bad) return;
        if (type == 0 && len < sizeof out->server_name) { /* host_name */
            for (size_t i = 0; i < len; i++) out->server_name[i] = (char)tolower(name[i]);
            out->server_name[len] = 0;
            return;
        }
    }
}

static void parse_alpn(const uint8_t *p, size_t n, sharp_client_hello_t *out)
{
    rd_t r = {p, n, 0, false};
    size_t list = rd_u(&r, 2);
    rd_t l = {rd_skip(&r, list), list, 0, r.bad};
    while (!l.bad && l.at < l.n && out->nalpn < SHARP_INSPECT_MAX_ALPN) {
        size_t len = rd_u(&l, 1);
        const uint8_t *proto = rd_skip(&l, len);
        if (l.bad || !len) return;
        memcpy(out->alpn[out->nalpn], proto, len);
        out->alpn[out->nalpn++][len] = 0;
    }
}

sharp_inspect_result_t sharp_inspect_tls(const uint8_t *p, size_t n, sharp_client_hello_t *out)
{
    memset(out, 0, sizeof *out);
    /* The handshake message may span several records: gather their
     * payloads until the ClientHello's length is in. */
    static __thread uint8_t hs[SHARP_INSPECT_MAX_BYTES]; /* not on the worker's stack */
    size_t hlen = 0, at = 0;
    for (;;) {
        if (n - at < 5) return n == at || (p[at] == 0x16 && (n - at < 2 || p[at + 1] == 3)) ? SHARP_INSPECT_NEED_MORE
                                                                                           : SHARP_INSPECT_NOT_FOUND;
        if (p[at] != 0x16 || p[at + 1] != 3) return SHARP_INSPECT_NOT_FOUND; /* not a handshake record */
        size_t rlen = (size_t)p[at + 3] << 8 | p[at + 4];
        if (rlen == 0 || rlen > 16384 + 2048) return SHARP_INSPECT_NOT_FOUND;
        if (n - at - 5 < rlen) {
            /* the record is not all here; the hello may already be */
            size_t have = n - at - 5;
            if (hlen + have > sizeof hs) return SHARP_INSPECT_TOO_LARGE;
            memcpy(hs + hlen, p + at + 5, have);
            hlen += have;
            at = n;
        } else {
            if (hlen + rlen > sizeof hs) return SHARP_INSPECT_TOO_LARGE;
            memcpy(hs + hlen, p + at + 5, rlen);
            hlen += rlen;
            at += 5 + rlen;
        }
        if (hlen >= 1 && hs[0] != 1) return SHARP_INSPECT_NOT_FOUND; /* not a ClientHello */
        if (hlen >= 4) {
            size_t mlen = (size_t)hs[1] << 16 | (size_t)hs[2] << 8 | hs[3];
            if (mlen + 4 > SHARP_INSPECT_MAX_BYTES) return SHARP_INSPECT_TOO_LARGE;
            if (hlen >= mlen + 4) {
                hlen = mlen + 4;
                break;
            }
        }
        if (at >= n) return SHARP_INSPECT_NEED_MORE;
    }
    rd_t r = {hs + 4, hlen - 4, 0, false};
    rd_u(&r, 2);                 /* legacy_version */
    rd_skip(&r, 32);             /* random */
    rd_skip(&r, rd_u(&r, 1));    /* legacy_session_id */
    rd_skip(&r, rd_u(&r, 2));    /* cipher_suites */
    rd_skip(&r, rd_u(&r, 1));    /* legacy_compression_methods */
    if (r.bad) return SHARP_INSPECT_NOT_FOUND;
    if (r.at == r.n) return SHARP_INSPECT_FOUND; /* no extensions */
    size_t elen = rd_u(&r, 2);
    rd_t e = {rd_skip(&r, elen), elen, 0, r.bad};
    if (e.bad) return SHARP_INSPECT_NOT_FOUND;
    while (e.at < e.n) {
        uint32_t type = rd_u(&e, 2);
        size_t len = rd_u(&e, 2);
        const uint8_t *data = rd_skip(&e, len);
        if (e.bad) return SHARP_INSPECT_NOT_FOUND;
        if (type == 0) parse_sni(data, len, out);
        else if (type == 16) parse_alpn(data, len, out);
    }
    return SHARP_INSPECT_FOUND;
}

/* ---- HTTP: the HTTP/2 preface or an HTTP/1.x request line ---- */

static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

static bool tchar(uint8_t c)
{
    return isalnum(c) || strchr("!#$%&'*+-.^_`|~", c);
}

sharp_inspect_result_t sharp_inspect_http(const uint8_t *p, size_t n, const char **protocol)
{
    size_t pl = sizeof h2_preface - 1;
    if (!n) return SHARP_INSPECT_NEED_MORE; /* no buffer yet */
    if (memcmp(p, h2_preface, n < pl ? n : pl) == 0) {
        if (n < pl) return SHARP_INSPECT_NEED_MORE;
        *protocol = "h2c";
        return SHARP_INSPECT_FOUND;
    }
    /* METHOD SP request-target SP HTTP/1.x CRLF (a bare LF is accepted) */
    size_t i = 0;
    while (i < n && tchar(p[i])) i++;
    if (i == n) return n < 64 ? SHARP_INSPECT_NEED_MORE : SHARP_INSPECT_NOT_FOUND;
    if (i == 0 || p[i] != ' ') return SHARP_INSPECT_NOT_FOUND;
    const uint8_t *eol = memchr(p, '\n', n);
    if (!eol) return n < 8192 ? SHARP_INSPECT_NEED_MORE : SHARP_INSPECT_NOT_FOUND;
    size_t end = (size_t)(eol - p);
    if (end && p[end - 1] == '\r') end--;
    if (end < i + 1 + 1 + 9 || memcmp(p + end - 9, " HTTP/1.", 8) != 0) return SHARP_INSPECT_NOT_FOUND;
    uint8_t minor = p[end - 1];
    if (minor != '0' && minor != '1') return SHARP_INSPECT_NOT_FOUND;
    for (size_t k = i + 1; k < end - 9; k++)
        if (p[k] <= ' ' || p[k] == 0x7f) return SHARP_INSPECT_NOT_FOUND;
    *protocol = minor == '1' ? "http/1.1" : "http/1.0";
    return SHARP_INSPECT_FOUND;
}
