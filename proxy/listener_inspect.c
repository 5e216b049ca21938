/* listener_inspect.c: the TLS and HTTP inspectors (listener_inspect.h). */
#include "listener_inspect.h"

#include <ctype.h>
#include <stdlib.h>
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

/* The ClientHello's fields, once the whole message is in hs[0..hlen). */
static sharp_inspect_result_t parse_hello(const uint8_t *hs, size_t hlen, sharp_client_hello_t *out)
{
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

/* Appends record payload to the gathered handshake message. */
static bool hs_append(sharp_tls_inspector_t *ti, const uint8_t *p, size_t n)
{
    if (ti->hlen + n > SHARP_INSPECT_MAX_BYTES) return false;
    if (ti->hlen + n > ti->hcap) {
        size_t cap = ti->hcap ? ti->hcap : 512;
        while (cap < ti->hlen + n) cap *= 2;
        if (cap > SHARP_INSPECT_MAX_BYTES) cap = SHARP_INSPECT_MAX_BYTES;
        uint8_t *hs = realloc(ti->hs, cap);
        if (!hs) return false;
        ti->hs = hs;
        ti->hcap = cap;
    }
    memcpy(ti->hs + ti->hlen, p, n);
    ti->hlen += n;
    ti->copied += n;
    return true;
}

sharp_inspect_result_t sharp_tls_inspector_feed(sharp_tls_inspector_t *ti, const uint8_t *p, size_t n,
                                                sharp_client_hello_t *out)
{
    memset(out, 0, sizeof *out);
    if (ti->decided) return ti->verdict;
    /* The handshake message may span several records: their payloads are
     * gathered as they arrive, each byte once, until the ClientHello's
     * length is in; the hello is then parsed once. */
    sharp_inspect_result_t v = SHARP_INSPECT_NEED_MORE;
    while (v == SHARP_INSPECT_NEED_MORE && ti->at < n) {
        if (!ti->rec_left) {
            /* a record header: type, version, length */
            size_t have = n - ti->at;
            const uint8_t *h = p + ti->at;
            if (h[0] != 0x16 || (have >= 2 && h[1] != 3)) {
                v = SHARP_INSPECT_NOT_FOUND; /* not a handshake record */
                break;
            }
            if (have < 5) break;
            size_t rlen = (size_t)h[3] << 8 | h[4];
            if (rlen == 0 || rlen > 16384 + 2048) {
                v = SHARP_INSPECT_NOT_FOUND;
                break;
            }
            ti->rec_left = rlen;
            ti->at += 5;
            continue;
        }
        size_t take = ti->rec_left < n - ti->at ? ti->rec_left : n - ti->at;
        if (!hs_append(ti, p + ti->at, take)) {
            v = SHARP_INSPECT_TOO_LARGE;
            break;
        }
        ti->at += take;
        ti->rec_left -= take;
        if (ti->hs[0] != 1) v = SHARP_INSPECT_NOT_FOUND; /* not a ClientHello */
        else if (ti->hlen >= 4) {
            size_t mlen = (size_t)ti->hs[1] << 16 | (size_t)ti->hs[2] << 8 | ti->hs[3];
            if (mlen + 4 > SHARP_INSPECT_MAX_BYTES) v = SHARP_INSPECT_TOO_LARGE;
            else if (ti->hlen >= mlen + 4) v = parse_hello(ti->hs, mlen + 4, out);
        }
    }
    if (v != SHARP_INSPECT_NEED_MORE) {
        ti->decided = true;
        ti->verdict = v;
        free(ti->hs);
        ti->hs = NULL;
        ti->hlen = ti->hcap = 0;
    }
    return v;
}

void sharp_tls_inspector_free(sharp_tls_inspector_t *ti)
{
    free(ti->hs);
    memset(ti, 0, sizeof *ti);
}

sharp_inspect_result_t sharp_inspect_tls(const uint8_t *p, size_t n, sharp_client_hello_t *out)
{
    sharp_tls_inspector_t ti = {0};
    sharp_inspect_result_t r = sharp_tls_inspector_feed(&ti, p, n, out);
    sharp_tls_inspector_free(&ti);
    return r;
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
