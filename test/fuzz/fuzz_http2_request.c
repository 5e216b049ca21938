/* fuzz_http2_request.c: libFuzzer target for the downstream HTTP/2 request
 * path, in process and over real sockets (http1_harness.h, whose fixed
 * bootstrap has codec_type AUTO: the connection preface selects HTTP/2):
 * the nghttp2 server codec and its callbacks (frames, HPACK, flow control,
 * resets, the flood limits and the premature-reset rule), the connection
 * manager and the filter chain, routing, the HTTP/1 upstream and the
 * responses going back as frames.
 *
 * Input: byte 0 is options, byte 1 the split seed (fz_split), the rest is
 * what the downstream client sends after the connection preface (which the
 * target always sends first), written in those chunks with the loop
 * settling between them.
 *   options & 3: what the fake upstream answers to each request it gets
 *     0 200 with content-length   1 200 chunked   2 503   3 nothing
 *   options & 4: the client half-closes after its last byte.
 *
 * Besides the sanitizers' invariants (and LeakSanitizer at each input's
 * end), the oracle is the request head invariant: nothing reaches the fake
 * upstream unless it is a complete, valid request head. Every byte the
 * proxy sends upstream must parse as strict HTTP/1.1 requests (llhttp; an
 * HTTP/2 :method may be any token, which llhttp's list of methods does not
 * know, so the target checks the method itself and hands llhttp a known
 * one), and
 * each request must have a method, an origin-form path, exactly one Host,
 * and header names that are lower-case tokens without HTTP/2 pseudo-headers
 * or connection-specific fields (nghttp2 refuses those before the head is
 * complete, and the proxy must never forward one). */
#include "http1_harness.h"

#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct upstream_state {
    llhttp_t parser;
    llhttp_settings_t settings;
    fz_run_t *run;
    int idx;
    /* the head being parsed */
    char name[64];
    size_t name_len;
    bool name_long;
    unsigned hosts;
    bool url_seen;
    char url0;
    /* the request line's method, checked here (see above) */
    bool at_start;
    bool head;
    char method[32];
    size_t method_len;
} upstream_state_t;

typedef struct request_run {
    unsigned kind;
    upstream_state_t up[FZ_MAX_UPSTREAM];
} request_run_t;

static const char resp_200[] = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok";
static const char resp_chunked[] = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer-x: 1\r\n\r\n2\r\nok\r\n0\r\n\r\n";
static const char resp_503[] = "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy";

static void fail(upstream_state_t *u, const char *why, const char *at, size_t n)
{
    (void)u;
    fprintf(stderr, "fuzz_http2_request: the proxy sent upstream a request head it should have refused: %s\n", why);
    fz_abort_with_chunk(at, n);
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
    upstream_state_t *u = p->data;
    if (!u->url_seen && n) {
        u->url_seen = true;
        u->url0 = at[0];
    }
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    upstream_state_t *u = p->data;
    if (u->name_len + n > sizeof u->name) u->name_long = true;
    else memcpy(u->name + u->name_len, at, n);
    u->name_len += n;
    return 0;
}

static bool name_is(const upstream_state_t *u, const char *s)
{
    return !u->name_long && u->name_len == strlen(s) && memcmp(u->name, s, u->name_len) == 0;
}

static int on_header_field_complete(llhttp_t *p)
{
    upstream_state_t *u = p->data;
    size_t n = u->name_long ? 0 : u->name_len;
    for (size_t i = 0; i < n; i++) {
        char ch = u->name[i];
        if (ch >= 'A' && ch <= 'Z') fail(u, "an upper-case header name", u->name, n);
    }
    if (n && u->name[0] == ':') fail(u, "an HTTP/2 pseudo-header forwarded", u->name, n);
    if (name_is(u, "host")) u->hosts++;
    if (name_is(u, "keep-alive") || name_is(u, "proxy-connection") || name_is(u, "upgrade"))
        fail(u, "a connection-specific header forwarded", u->name, n);
    u->name_len = 0;
    u->name_long = false;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    upstream_state_t *u = p->data;
    if (u->hosts != 1) fail(u, "not exactly one Host", "", 0);
    if (!u->url_seen || u->url0 != '/') fail(u, "a request target that is not origin-form", &u->url0, 1);
    return 0;
}

static int on_message_begin(llhttp_t *p)
{
    upstream_state_t *u = p->data;
    u->hosts = 0;
    u->url_seen = false;
    u->name_len = 0;
    u->name_long = false;
    return 0;
}

static int on_request_complete(llhttp_t *p)
{
    upstream_state_t *u = p->data;
    fz_run_t *r = u->run;
    request_run_t *rr = r->target;
    const char *s = NULL;
    size_t n = 0;
    switch (rr->kind) {
    case 0: s = resp_200; n = sizeof resp_200 - 1; break;
    case 1: s = resp_chunked; n = sizeof resp_chunked - 1; break;
    case 2: s = resp_503; n = sizeof resp_503 - 1; break;
    default: return HPE_PAUSED; /* silent: the request stays pending */
    }
    if (u->head) n = (size_t)(strstr(s, "\r\n\r\n") + 4 - s);
    fz_upstream_send(r, u->idx, s, n);
    return HPE_PAUSED; /* the next request's method is the target's to check */
}

static void upstream_accept(fz_run_t *r, int idx)
{
    request_run_t *rr = r->target;
    upstream_state_t *u = &rr->up[idx];
    memset(u, 0, sizeof *u);
    llhttp_settings_init(&u->settings);
    u->settings.on_message_begin = on_message_begin;
    u->settings.on_url = on_url;
    u->settings.on_header_field = on_header_field;
    u->settings.on_header_field_complete = on_header_field_complete;
    u->settings.on_headers_complete = on_headers_complete;
    u->settings.on_message_complete = on_request_complete;
    llhttp_init(&u->parser, HTTP_REQUEST, &u->settings);
    u->parser.data = u;
    u->run = r;
    u->idx = idx;
    u->at_start = true;
}

/* RFC 9110 tchar */
static bool is_tchar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static void upstream_data(fz_run_t *r, int idx, const char *data, size_t n)
{
    request_run_t *rr = r->target;
    upstream_state_t *u = &rr->up[idx];
    if (!data) return; /* the proxy closed: an unfinished body is fine (a reset) */
    llhttp_errno_t e = HPE_OK;
    while (n) {
        if (u->at_start) {
            size_t i = 0;
            while (i < n && data[i] != ' ') i++;
            if (u->method_len + i > sizeof u->method) fail(u, "a method longer than 32 bytes", data, n);
            memcpy(u->method + u->method_len, data, i);
            u->method_len += i;
            if (i == n) return; /* the method goes on in the next read */
            if (!u->method_len) fail(u, "an empty method", data, n);
            for (size_t k = 0; k < u->method_len; k++)
                if (!is_tchar(u->method[k])) fail(u, "a method that is not a token", u->method, u->method_len);
            u->head = u->method_len == 4 && memcmp(u->method, "HEAD", 4) == 0;
            u->method_len = 0;
            u->at_start = false;
            e = llhttp_execute(&u->parser, "PUT", 3);
            if (e != HPE_OK) break;
            data += i;
            n -= i;
            continue;
        }
        e = llhttp_execute(&u->parser, data, n);
        if (e == HPE_PAUSED) {
            const char *pos = llhttp_get_error_pos(&u->parser);
            size_t used = pos && pos >= data && pos <= data + n ? (size_t)(pos - data) : n;
            llhttp_resume(&u->parser);
            u->at_start = true;
            data += used;
            n -= used;
            e = HPE_OK;
            continue;
        }
        break;
    }
    if (e == HPE_OK) return;
    fprintf(stderr, "fuzz_http2_request: the proxy sent upstream bytes that are not HTTP/1.1 requests: %s (%s)\n",
            llhttp_errno_name(e), llhttp_get_error_reason(&u->parser));
    fz_abort_with_chunk(data, n);
}

static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    uint8_t opts = data[0];
    uint8_t seed = data[1];
    const char *frames = (const char *)data + 2;
    size_t len = size - 2;

    static request_run_t rr;
    static fz_run_t r;
    memset(&rr, 0, sizeof rr);
    memset(&r, 0, sizeof r);
    rr.kind = opts & 3;
    r.target = &rr;
    r.on_upstream_accept = upstream_accept;
    r.on_upstream_data = upstream_data;
    fz_start(&r);
    fz_settle(&r); /* accepted */
    fz_client_send(&r, preface, sizeof preface - 1);
    size_t ends[9];
    int nchunks = fz_split(seed, len, ends);
    size_t at = 0;
    for (int i = 0; i < nchunks; i++) {
        fz_client_send(&r, frames + at, ends[i] - at);
        at = ends[i];
        fz_settle(&r);
    }
    if (opts & 4) {
        fz_client_shutdown(&r);
        fz_settle(&r);
    }
    fz_finish(&r);
    return 0;
}
