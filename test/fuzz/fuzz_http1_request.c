/* fuzz_http1_request.c: libFuzzer target for the downstream HTTP/1 request
 * path, in process and over real sockets (http1_harness.h): accept, reads,
 * the llhttp codec and its callbacks, the connection manager (pipelining,
 * upgrades, local replies, path normalization), the filter chain (health
 * check, router), routing and header mutations, the upstream pool and the
 * mirror, and the access logs.
 *
 * Input: byte 0 is options, byte 1 the split seed (fz_split), the rest is
 * what the downstream client sends, written in those chunks with the loop
 * settling between them (each chunk is a separate read for the proxy).
 *   options & 7: what the fake upstream answers to each request it gets
 *     0 200 with content-length   1 200 chunked      2 204
 *     3 100-continue, then 200    4 200 delimited by the upstream's close
 *     5 101 to upgrade requests (then echoes the tunnel), 200 otherwise
 *     6 503                       7 nothing (the request stays pending)
 *   options & 8: the client half-closes after its last byte, before the
 *     proxy settles (otherwise it closes once everything settled).
 *
 * Besides the sanitizers' invariants, one oracle: every byte the proxy
 * sends upstream must parse as strict HTTP/1.1 requests (llhttp), up to an
 * upgrade. A request the proxy forwards that does not parse would be read
 * differently by the upstream than by the proxy (request smuggling). */
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
    bool tunnel; /* after a 101: echo what comes */
} upstream_state_t;

typedef struct request_run {
    unsigned kind;
    upstream_state_t up[FZ_MAX_UPSTREAM];
} request_run_t;

static const char resp_200[] = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok";
static const char resp_chunked[] = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
static const char resp_204[] = "HTTP/1.1 204 No Content\r\nx-up: 1\r\n\r\n";
static const char resp_continue[] = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
static const char resp_close[] = "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil close";
static const char resp_101[] = "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n";
static const char resp_503[] = "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy";

static void send_str(fz_run_t *r, int idx, const char *s, size_t n)
{
    fz_upstream_send(r, idx, s, n);
}

/* The head alone (a response to HEAD has no body). */
static void send_head_of(fz_run_t *r, int idx, const char *s)
{
    const char *end = strstr(s, "\r\n\r\n");
    send_str(r, idx, s, (size_t)(end + 4 - s));
}

static int on_request_complete(llhttp_t *p)
{
    upstream_state_t *u = p->data;
    fz_run_t *r = u->run;
    request_run_t *rr = r->target;
    bool head = llhttp_get_method(p) == HTTP_HEAD;
    bool upgrade = llhttp_get_upgrade(p);
    switch (rr->kind) {
    case 0: head ? send_head_of(r, u->idx, resp_200) : send_str(r, u->idx, resp_200, sizeof resp_200 - 1); break;
    case 1:
        head ? send_head_of(r, u->idx, resp_chunked) : send_str(r, u->idx, resp_chunked, sizeof resp_chunked - 1);
        break;
    case 2: send_str(r, u->idx, resp_204, sizeof resp_204 - 1); break;
    case 3: send_str(r, u->idx, resp_continue, sizeof resp_continue - 1); break;
    case 4:
        head ? send_head_of(r, u->idx, resp_close) : send_str(r, u->idx, resp_close, sizeof resp_close - 1);
        fz_upstream_close(r, u->idx);
        break;
    case 5:
        if (upgrade) {
            send_str(r, u->idx, resp_101, sizeof resp_101 - 1);
            u->tunnel = true;
        } else {
            head ? send_head_of(r, u->idx, resp_200) : send_str(r, u->idx, resp_200, sizeof resp_200 - 1);
        }
        break;
    case 6: head ? send_head_of(r, u->idx, resp_503) : send_str(r, u->idx, resp_503, sizeof resp_503 - 1); break;
    default: break; /* silent */
    }
    return 0;
}

static void upstream_accept(fz_run_t *r, int idx)
{
    request_run_t *rr = r->target;
    upstream_state_t *u = &rr->up[idx];
    memset(u, 0, sizeof *u);
    llhttp_settings_init(&u->settings);
    u->settings.on_message_complete = on_request_complete;
    llhttp_init(&u->parser, HTTP_REQUEST, &u->settings);
    u->parser.data = u;
    u->run = r;
    u->idx = idx;
}

static void upstream_data(fz_run_t *r, int idx, const char *data, size_t n)
{
    request_run_t *rr = r->target;
    upstream_state_t *u = &rr->up[idx];
    if (!data) return; /* the proxy closed: an unfinished request is fine (a reset) */
    if (u->tunnel) {
        fz_upstream_send(r, idx, data, n); /* echo */
        return;
    }
    llhttp_errno_t e = llhttp_execute(&u->parser, data, n);
    if (e == HPE_OK) return;
    if (e == HPE_PAUSED_UPGRADE) {
        /* the HTTP part is over; what follows is the tunnel's */
        const char *pos = llhttp_get_error_pos(&u->parser);
        if (u->tunnel && pos && pos >= data && pos < data + n) fz_upstream_send(r, idx, pos, (size_t)(data + n - pos));
        if (!u->tunnel) fz_upstream_close(r, idx); /* no 101: the proxy never reuses it */
        u->tunnel = true;
        return;
    }
    fprintf(stderr, "fuzz_http1_request: the proxy sent upstream bytes that are not HTTP/1.1 requests: %s (%s)\n",
            llhttp_errno_name(e), llhttp_get_error_reason(&u->parser));
    fz_abort_with_chunk(data, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    uint8_t opts = data[0];
    uint8_t seed = data[1];
    const char *req = (const char *)data + 2;
    size_t len = size - 2;

    static request_run_t rr;
    static fz_run_t r;
    memset(&rr, 0, sizeof rr);
    memset(&r, 0, sizeof r);
    rr.kind = opts & 7;
    r.target = &rr;
    r.on_upstream_accept = upstream_accept;
    r.on_upstream_data = upstream_data;
    fz_start(&r);
    fz_settle(&r); /* accepted */
    size_t ends[9];
    int nchunks = fz_split(seed, len, ends);
    size_t at = 0;
    for (int i = 0; i < nchunks; i++) {
        fz_client_send(&r, req + at, ends[i] - at);
        at = ends[i];
        fz_settle(&r);
    }
    if (opts & 8) {
        fz_client_shutdown(&r);
        fz_settle(&r);
    }
    fz_finish(&r);
    return 0;
}
