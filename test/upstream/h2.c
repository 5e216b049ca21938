/* sharp-test-upstream --h2: the same server speaking HTTP/2 over cleartext
 * TCP with prior knowledge (an nghttp2 server session per connection). It
 * serves the endpoints of README.md that make sense per stream, plus HTTP/2
 * fault injection (GOAWAY, RST_STREAM, silence on PING) for the proxy's
 * upstream HTTP/2 client. */
#include "upstream.h"

#include <nghttp2/nghttp2.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

typedef struct h2conn h2conn_t;

typedef struct h2timer {
    uv_timer_t t;
    struct h2stream *s; /* NULL once the stream is gone */
} h2timer_t;

typedef struct h2stream {
    h2conn_t *c;
    int32_t id;
    struct h2stream *next; /* all streams of the connection */
    char *hdrs;            /* JSON pairs of the request headers, as received */
    size_t hdrs_len, hdrs_cap;
    char *trls;            /* JSON pairs of the request trailers */
    size_t trls_len, trls_cap;
    char method[16];
    char path[2048];
    uint64_t body_bytes, body_hash;
    uint64_t delay_ms, chunk_delay_ms, n, pos;
    int status;
    int route;       /* H_* */
    int trailers;    /* ?trailers=1: x-trailer after the body */
    int is_head;
    int responded;
    int paused;      /* waiting for chunk_delay_ms */
    char *body;      /* a fixed response body */
    size_t body_len, body_off;
    h2timer_t *timer;
    xhdrs_t xh; /* ?hdr= response headers */
} h2stream_t;

struct h2conn {
    uv_tcp_t tcp;
    nghttp2_session *ng;
    h2conn_t *prev, *next;
    h2stream_t *streams;
    uint64_t id, nreq;
    size_t queued;   /* bytes handed to uv_write and not written yet */
    int closing;
    int close_when_written; /* /close-mid-body: the connection dies after its bytes */
    int handles;
};

enum { H_HELLO, H_ECHO, H_STATUS, H_BYTES, H_UPLOAD, H_RESET, H_CLOSE_MID, H_HUGE_HEADERS, H_ADMIN_H2, H_ADMIN_STATS,
       H_ADMIN_FAULT, H_HANG };

static h2conn_t *h2_conns;
static nghttp2_session_callbacks *cbs;
/* /admin/h2 faults, applied to later non-admin streams */
static uint64_t f_goaway, f_refuse, f_ping_silent;
static uint64_t h2_max_streams_setting; /* --h2-max-streams (0: not sent) */
static uint64_t h2_streams_now, h2_streams_peak;
static uint64_t h2_pings; /* PINGs received (not acknowledgements) */

static void h2_flush(h2conn_t *c);
static void on_stream_timer(uv_timer_t *t);
static void timer_closed(uv_handle_t *h);

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        abort();
    return p;
}

static void jappend(char **b, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (*cap - *len < n + 1) {
        size_t nc = *cap ? *cap * 2 : 1024;
        while (nc - *len < n + 1)
            nc *= 2;
        *b = realloc(*b, nc);
        if (!*b)
            abort();
        *cap = nc;
    }
    memcpy(*b + *len, s, n);
    *len += n;
}

static void jstr(char **b, size_t *len, size_t *cap, const char *s, size_t n)
{
    jappend(b, len, cap, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            char e[2] = {'\\', (char)ch};
            jappend(b, len, cap, e, 2);
        } else if (ch < 0x20 || ch == 0x7f) {
            char e[8];
            snprintf(e, sizeof e, "\\u%04x", ch);
            jappend(b, len, cap, e, 6);
        } else {
            jappend(b, len, cap, (const char *)&s[i], 1);
        }
    }
    jappend(b, len, cap, "\"", 1);
}

static void jpair(char **b, size_t *len, size_t *cap, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl)
{
    jappend(b, len, cap, *len ? ", [" : "[", *len ? 3 : 1);
    jstr(b, len, cap, (const char *)k, kl);
    jappend(b, len, cap, ", ", 2);
    jstr(b, len, cap, (const char *)v, vl);
    jappend(b, len, cap, "]", 1);
}

static int query_u64(const char *path, const char *key, uint64_t *out)
{
    const char *q = strchr(path, '?');
    size_t kl = strlen(key);
    while (q) {
        q++;
        if (!strncmp(q, key, kl) && q[kl] == '=') {
            *out = strtoull(q + kl + 1, NULL, 10);
            return 1;
        }
        q = strchr(q, '&');
    }
    return 0;
}

/* ---- writing ---- */

typedef struct {
    uv_write_t req;
    h2conn_t *c;
    size_t len;
    char data[];
} h2write_t;

static void h2_handle_closed(uv_handle_t *h)
{
    h2conn_t *c = h->data;
    if (--c->handles > 0)
        return;
    while (c->streams) {
        h2stream_t *s = c->streams;
        c->streams = s->next;
        h2_streams_now--;
        free(s->hdrs);
        free(s->trls);
        free(s->body);
        free(s);
    }
    nghttp2_session_del(c->ng);
    free(c);
}

static void h2_close(h2conn_t *c, int rst)
{
    if (c->closing)
        return;
    c->closing = 1;
    if (c->prev)
        c->prev->next = c->next;
    else
        h2_conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    g.active--;
    for (h2stream_t *s = c->streams; s; s = s->next) {
        s->timer->s = NULL;
        uv_close((uv_handle_t *)&s->timer->t, timer_closed);
    }
    if (rst) {
        struct linger l = {1, 0};
        uv_os_fd_t fd;
        if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    }
    uv_close((uv_handle_t *)&c->tcp, h2_handle_closed);
}

static void on_h2_write(uv_write_t *req, int status)
{
    h2write_t *w = (h2write_t *)req;
    h2conn_t *c = w->c;
    c->queued -= w->len;
    free(w);
    if (c->closing)
        return;
    if (status < 0 || (c->close_when_written && c->queued == 0)) {
        h2_close(c, 0);
        return;
    }
    /* below the watermark: deferred bodies go on */
    if (c->queued < UP_HIGH_WM) {
        for (h2stream_t *s = c->streams; s; s = s->next)
            if (s->responded && !s->paused)
                nghttp2_session_resume_data(c->ng, s->id);
        h2_flush(c);
    }
}

static void h2_flush(h2conn_t *c)
{
    if (c->closing)
        return;
    for (;;) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->ng, &data);
        if (n < 0) {
            h2_close(c, 0);
            return;
        }
        if (n == 0)
            break;
        h2write_t *w = xmalloc(sizeof *w + (size_t)n);
        memcpy(w->data, data, (size_t)n);
        w->c = c;
        w->len = (size_t)n;
        c->queued += (size_t)n;
        uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
        if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_h2_write) < 0) {
            c->queued -= (size_t)n;
            free(w);
            h2_close(c, 0);
            return;
        }
    }
    if ((c->close_when_written || (!nghttp2_session_want_read(c->ng) && !nghttp2_session_want_write(c->ng))) &&
        c->queued == 0)
        h2_close(c, 0);
}

/* ---- responses ---- */

static ssize_t read_resp(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
                         nghttp2_data_source *src, void *ud)
{
    (void)ng;
    (void)ud;
    h2stream_t *s = src->ptr;
    h2conn_t *c = s->c;
    if (c->queued >= UP_HIGH_WM || s->paused)
        return NGHTTP2_ERR_DEFERRED;
    size_t n = 0;
    int done = 0;
    if (s->route == H_BYTES) {
        uint64_t left = s->n - s->pos;
        size_t piece = s->chunk_delay_ms ? UP_SLOW_PIECE - (size_t)(s->pos % UP_SLOW_PIECE) : length;
        n = (size_t)(left < length ? left : length);
        if (n > piece)
            n = piece;
        for (size_t i = 0; i < n; i++)
            buf[i] = up_pattern[(s->pos + i) & 0xff];
        s->pos += n;
        done = s->pos == s->n;
        if (!done && s->chunk_delay_ms && s->pos % UP_SLOW_PIECE == 0) {
            s->paused = 1;
            uv_timer_start(&s->timer->t, on_stream_timer, s->chunk_delay_ms, 0);
        }
    } else if (s->route == H_CLOSE_MID) {
        n = 1000 < length ? 1000 : length;
        memcpy(buf, up_pattern, n);
        s->paused = 1; /* nothing more: the connection closes after this */
        c->close_when_written = 1;
    } else {
        size_t left = s->body_len - s->body_off;
        n = left < length ? left : length;
        memcpy(buf, s->body + s->body_off, n);
        s->body_off += n;
        done = s->body_off == s->body_len;
    }
    (void)id;
    if (done) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (s->trailers) {
            nghttp2_nv t[] = {{(uint8_t *)"x-trailer", (uint8_t *)"done", 9, 4, NGHTTP2_NV_FLAG_NONE}};
            if (nghttp2_submit_trailer(ng, s->id, t, 1) == 0)
                *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        }
    }
    return (ssize_t)n;
}

static void respond(h2stream_t *s)
{
    h2conn_t *c = s->c;
    char status[8], conn_no[24], req_no[24], clen[24];
    snprintf(status, sizeof status, "%d", s->status);
    snprintf(conn_no, sizeof conn_no, "%llu", (unsigned long long)c->id);
    snprintf(req_no, sizeof req_no, "%llu", (unsigned long long)c->nreq);
    uint64_t len = s->route == H_BYTES ? s->n : s->route == H_CLOSE_MID ? 1000000 : s->body_len;
    snprintf(clen, sizeof clen, "%llu", (unsigned long long)len);
    nghttp2_nv nv[8 + 20 + UP_XHDR_MAX];
    size_t nn = 0;
#define NV(k, v, vl) nv[nn++] = (nghttp2_nv){(uint8_t *)(k), (uint8_t *)(v), strlen(k), (vl), NGHTTP2_NV_FLAG_NONE}
    NV(":status", status, strlen(status));
    NV("x-upstream-name", g.name, g.name_len);
    NV("x-upstream-connection", conn_no, strlen(conn_no));
    NV("x-upstream-request-on-connection", req_no, strlen(req_no));
    int no_body = s->status == 204 || s->status == 304 || (s->status >= 100 && s->status < 200);
    if (!no_body)
        NV("content-length", clen, strlen(clen));
    const char *q = strchr(s->path, '?');
    s->xh.n = 0;
    s->xh.used = 0;
    if (q)
        xhdrs_parse(&s->xh, q + 1, strlen(q + 1));
    for (unsigned i = 0; i < s->xh.n; i++) {
        /* HTTP/2 header names are lower case */
        for (size_t k = 0; k < s->xh.h[i].name_len; k++)
            ((char *)s->xh.h[i].name)[k] = (char)tolower((unsigned char)s->xh.h[i].name[k]);
        nv[nn++] = (nghttp2_nv){(uint8_t *)s->xh.h[i].name, (uint8_t *)s->xh.h[i].value, s->xh.h[i].name_len,
                                s->xh.h[i].value_len, NGHTTP2_NV_FLAG_NONE};
    }
    static char filler[8001];
    if (s->route == H_HUGE_HEADERS) {
        /* 20 headers of 8000 bytes: a 160 KB header block */
        memset(filler, 'x', sizeof filler - 1);
        for (int i = 0; i < 20; i++)
            NV("x-filler", filler, sizeof filler - 1);
    }
#undef NV
    s->responded = 1;
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = read_resp};
    int body = !no_body && !s->is_head && (len > 0 || s->trailers);
    nghttp2_submit_response(c->ng, s->id, nv, nn, body ? &prd : NULL);
    if (s->is_head && s->trailers)
        s->trailers = 0;
}

static void start_response(h2stream_t *s)
{
    switch (s->route) {
    case H_ECHO: {
        char *b = NULL;
        size_t len = 0, cap = 0;
        char head[256];
        jappend(&b, &len, &cap, "{\"method\": ", 11);
        jstr(&b, &len, &cap, s->method, strlen(s->method));
        jappend(&b, &len, &cap, ", \"path\": ", 10);
        jstr(&b, &len, &cap, s->path, strlen(s->path));
        jappend(&b, &len, &cap, ", \"version\": \"HTTP/2\", \"headers\": [", 35);
        if (s->hdrs_len)
            jappend(&b, &len, &cap, s->hdrs, s->hdrs_len);
        jappend(&b, &len, &cap, "], \"trailers\": [", 16);
        if (s->trls_len)
            jappend(&b, &len, &cap, s->trls, s->trls_len);
        int hl = snprintf(head, sizeof head, "], \"body_bytes\": %llu, \"checksum\": \"%016llx\", \"upstream\": ",
                          (unsigned long long)s->body_bytes, (unsigned long long)s->body_hash);
        jappend(&b, &len, &cap, head, (size_t)hl);
        jstr(&b, &len, &cap, g.name, g.name_len);
        jappend(&b, &len, &cap, "}\n", 2);
        s->body = b;
        s->body_len = len;
        break;
    }
    case H_UPLOAD: {
        char tmp[96];
        int n = snprintf(tmp, sizeof tmp, "{\"body_bytes\": %llu, \"checksum\": \"%016llx\"}\n",
                         (unsigned long long)s->body_bytes, (unsigned long long)s->body_hash);
        s->body = xmalloc((size_t)n);
        memcpy(s->body, tmp, (size_t)n);
        s->body_len = (size_t)n;
        break;
    }
    case H_STATUS: {
        char tmp[32];
        int n = snprintf(tmp, sizeof tmp, "status %d\n", s->status);
        s->body = xmalloc((size_t)n);
        memcpy(s->body, tmp, (size_t)n);
        s->body_len = (size_t)n;
        break;
    }
    case H_ADMIN_H2:
    case H_ADMIN_STATS: {
        /* with the client's SETTINGS and connection window, as this
         * connection sees them */
        nghttp2_session *ng = s->c->ng;
        char tmp[640];
        int n = snprintf(tmp, sizeof tmp,
                         "{\"goaway\": %llu, \"refuse\": %llu, \"ping_silent\": %llu, \"connections_accepted\": "
                         "%llu, \"requests\": %llu, \"streams_peak\": %llu, \"pings\": %llu, \"peer_settings\": {"
                         "\"header_table_size\": %u, \"enable_push\": %u, \"max_concurrent_streams\": %u, "
                         "\"initial_window_size\": %u, \"max_header_list_size\": %u, \"enable_connect_protocol\": %u}, "
                         "\"connection_send_window\": %d}\n",
                         (unsigned long long)f_goaway, (unsigned long long)f_refuse,
                         (unsigned long long)f_ping_silent, (unsigned long long)g.accepted,
                         (unsigned long long)g.requests, (unsigned long long)h2_streams_peak,
                         (unsigned long long)h2_pings,
                         nghttp2_session_get_remote_settings(ng, NGHTTP2_SETTINGS_HEADER_TABLE_SIZE),
                         nghttp2_session_get_remote_settings(ng, NGHTTP2_SETTINGS_ENABLE_PUSH),
                         nghttp2_session_get_remote_settings(ng, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS),
                         nghttp2_session_get_remote_settings(ng, NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE),
                         nghttp2_session_get_remote_settings(ng, NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE),
                         nghttp2_session_get_remote_settings(ng, NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL),
                         nghttp2_session_get_remote_window_size(ng));
        s->body = xmalloc((size_t)n);
        memcpy(s->body, tmp, (size_t)n);
        s->body_len = (size_t)n;
        break;
    }
    case H_ADMIN_FAULT: {
        char tmp[96];
        int n = snprintf(tmp, sizeof tmp, "{\"status\": %llu, \"reset\": %d, \"hang\": %d}\n",
                         (unsigned long long)g.fault_status, g.fault_reset ? 1 : 0, g.fault_hang ? 1 : 0);
        s->body = xmalloc((size_t)n);
        memcpy(s->body, tmp, (size_t)n);
        s->body_len = (size_t)n;
        break;
    }
    case H_HANG:
        s->responded = 1; /* held until the client resets it or the connection ends */
        return;
    case H_RESET: {
        uint64_t code = NGHTTP2_INTERNAL_ERROR;
        query_u64(s->path, "code", &code);
        nghttp2_submit_rst_stream(s->c->ng, NGHTTP2_FLAG_NONE, s->id, (uint32_t)code);
        s->responded = 1;
        return;
    }
    case H_BYTES:
    case H_CLOSE_MID:
        break;
    default:
        s->body = xmalloc(g.hello_len);
        memcpy(s->body, g.hello, g.hello_len);
        s->body_len = g.hello_len;
        break;
    }
    respond(s);
}

/* The request has ended: answer now or after ?delay_ms. */
static void request_done(h2stream_t *s)
{
    if (s->responded)
        return;
    if (s->delay_ms) {
        uv_timer_start(&s->timer->t, on_stream_timer, s->delay_ms, 0);
        return;
    }
    start_response(s);
}

static void on_stream_timer(uv_timer_t *t)
{
    h2timer_t *ht = (h2timer_t *)t;
    h2stream_t *s = ht->s;
    if (!s || s->c->closing)
        return;
    if (!s->responded) {
        s->delay_ms = 0;
        start_response(s);
    } else if (s->paused) {
        s->paused = 0;
        nghttp2_session_resume_data(s->c->ng, s->id);
    }
    h2_flush(s->c);
}

static void timer_closed(uv_handle_t *h)
{
    free(h);
}

/* ---- session callbacks ---- */

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    h2conn_t *c = ud;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    h2stream_t *s = calloc(1, sizeof *s);
    if (!s)
        abort();
    s->c = c;
    s->id = f->hd.stream_id;
    s->body_hash = FNV_OFFSET;
    s->status = 200;
    s->timer = xmalloc(sizeof *s->timer);
    uv_timer_init(g.loop, &s->timer->t);
    s->timer->s = s;
    s->next = c->streams;
    c->streams = s;
    if (++h2_streams_now > h2_streams_peak)
        h2_streams_peak = h2_streams_now;
    nghttp2_session_set_stream_user_data(ng, s->id, s);
    return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *k, size_t kl, const uint8_t *v,
                     size_t vl, uint8_t flags, void *ud)
{
    (void)flags;
    (void)ud;
    h2stream_t *s = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (!s)
        return 0;
    if (f->headers.cat == NGHTTP2_HCAT_HEADERS) {
        jpair(&s->trls, &s->trls_len, &s->trls_cap, k, kl, v, vl);
        return 0;
    }
    if (kl == 7 && !memcmp(k, ":method", 7))
        snprintf(s->method, sizeof s->method, "%.*s", (int)vl, (const char *)v);
    else if (kl == 5 && !memcmp(k, ":path", 5))
        snprintf(s->path, sizeof s->path, "%.*s", (int)vl, (const char *)v);
    jpair(&s->hdrs, &s->hdrs_len, &s->hdrs_cap, k, kl, v, vl);
    if (g.exit_on_header && kl == strlen(g.exit_on_header) && !strncasecmp((const char *)k, g.exit_on_header, kl))
        _exit(3);
    return 0;
}

static int path_is(const char *p, const char *lit)
{
    size_t n = strlen(lit);
    return !strncmp(p, lit, n) && (p[n] == 0 || p[n] == '?' || p[n] == '/');
}

/* The request headers are in: pick the route, apply the faults. */
static void headers_done(h2conn_t *c, h2stream_t *s)
{
    c->nreq++;
    g.requests++;
    s->is_head = !strcmp(s->method, "HEAD");
    const char *p = s->path;
    uint64_t v;
    if (query_u64(p, "delay_ms", &v))
        s->delay_ms = v;
    if (query_u64(p, "chunk_delay_ms", &v))
        s->chunk_delay_ms = v;
    if (query_u64(p, "trailers", &v))
        s->trailers = v != 0;
    if (path_is(p, "/admin/h2")) {
        s->route = H_ADMIN_H2;
        if (query_u64(p, "goaway", &v))
            f_goaway = v;
        if (query_u64(p, "refuse", &v))
            f_refuse = v;
        if (query_u64(p, "ping_silent", &v))
            f_ping_silent = v;
        return;
    }
    if (path_is(p, "/admin/stats")) {
        s->route = H_ADMIN_STATS;
        return;
    }
    if (path_is(p, "/admin/fault")) {
        /* the HTTP/1 server's per-request faults (shared state), per stream */
        s->route = H_ADMIN_FAULT;
        g.fault_status = query_u64(p, "status", &v) && v >= 200 && v <= 999 ? v : 0;
        g.fault_reset = query_u64(p, "reset", &v) ? v : 0;
        g.fault_hang = query_u64(p, "hang", &v) ? v : 0;
        return;
    }
    if (f_goaway) {
        /* this stream and any later one were not processed */
        f_goaway--;
        nghttp2_submit_goaway(c->ng, NGHTTP2_FLAG_NONE, s->id - 2, NGHTTP2_NO_ERROR, NULL, 0);
        s->responded = 1;
        return;
    }
    if (f_refuse) {
        f_refuse--;
        nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_REFUSED_STREAM);
        s->responded = 1;
        return;
    }
    if (g.fault_reset) {
        s->route = H_RESET; /* RST_STREAM INTERNAL_ERROR after the headers */
        return;
    }
    if (g.fault_hang) {
        s->route = H_HANG; /* never answered */
        return;
    }
    if (g.fault_status) {
        s->route = H_STATUS;
        s->status = (int)g.fault_status;
        return;
    }
    if (path_is(p, "/echo"))
        s->route = H_ECHO;
    else if (path_is(p, "/upload"))
        s->route = H_UPLOAD;
    else if (path_is(p, "/reset"))
        s->route = H_RESET;
    else if (path_is(p, "/close-mid-body"))
        s->route = H_CLOSE_MID;
    else if (path_is(p, "/huge-headers"))
        s->route = H_HUGE_HEADERS;
    else if (!strncmp(p, "/status/", 8)) {
        s->route = H_STATUS;
        s->status = atoi(p + 8);
        if (s->status < 200 || s->status > 999)
            s->status = 400;
    } else if (!strncmp(p, "/bytes/", 7)) {
        s->route = H_BYTES;
        s->n = strtoull(p + 7, NULL, 10);
        if (s->n > UP_BYTES_MAX)
            s->n = UP_BYTES_MAX;
    }
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    h2conn_t *c = ud;
    if (f->hd.type == NGHTTP2_PING && !(f->hd.flags & NGHTTP2_FLAG_ACK)) {
        h2_pings++;
        if (!f_ping_silent)
            nghttp2_submit_ping(ng, NGHTTP2_FLAG_ACK, f->ping.opaque_data);
    }
    if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA)
        return 0;
    h2stream_t *s = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (!s)
        return 0;
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST)
        headers_done(c, s);
    if (s->route == H_RESET && !s->responded) {
        start_response(s); /* after the request headers, as over HTTP/1 */
        return 0;
    }
    if (f->hd.flags & NGHTTP2_FLAG_END_STREAM)
        request_done(s);
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data, size_t len, void *ud)
{
    (void)flags;
    (void)ud;
    h2stream_t *s = nghttp2_session_get_stream_user_data(ng, id);
    if (!s)
        return 0;
    s->body_bytes += len;
    s->body_hash = fnv1a(s->body_hash, data, len);
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t code, void *ud)
{
    (void)code;
    h2conn_t *c = ud;
    h2stream_t *s = nghttp2_session_get_stream_user_data(ng, id);
    if (!s)
        return 0;
    nghttp2_session_set_stream_user_data(ng, id, NULL);
    for (h2stream_t **pp = &c->streams; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    h2_streams_now--;
    s->timer->s = NULL;
    uv_close((uv_handle_t *)&s->timer->t, timer_closed);
    free(s->hdrs);
    free(s->trls);
    free(s->body);
    free(s);
    return 0;
}

/* ---- connections ---- */

static void on_h2_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)h;
    (void)hint;
    static char rb[64 * 1024];
    *buf = uv_buf_init(rb, sizeof rb);
}

static void on_h2_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    h2conn_t *c = st->data;
    if (c->closing)
        return;
    if (nread < 0) {
        h2_close(c, 0);
        return;
    }
    if (nghttp2_session_mem_recv(c->ng, (const uint8_t *)buf->base, (size_t)nread) < 0) {
        h2_close(c, 0);
        return;
    }
    h2_flush(c);
}

void h2_on_connection(uv_stream_t *srv)
{
    h2conn_t *c = calloc(1, sizeof *c);
    if (!c)
        return;
    uv_tcp_init(g.loop, &c->tcp);
    c->tcp.data = c;
    c->handles = 1;
    nghttp2_option *opt;
    nghttp2_option_new(&opt);
    nghttp2_option_set_no_auto_ping_ack(opt, 1); /* /admin/h2?ping_silent=1 */
    nghttp2_option_set_max_send_header_block_length(opt, 1024 * 1024); /* /huge-headers */
    nghttp2_session_server_new2(&c->ng, cbs, c, opt);
    nghttp2_option_del(opt);
    c->next = h2_conns;
    if (h2_conns)
        h2_conns->prev = c;
    h2_conns = c;
    g.active++;
    if (uv_accept(srv, (uv_stream_t *)&c->tcp) != 0) {
        h2_close(c, 0);
        return;
    }
    c->id = ++g.accepted;
    uv_tcp_nodelay(&c->tcp, 1);
    nghttp2_settings_entry iv[2];
    size_t niv = 0;
    if (h2_max_streams_setting)
        iv[niv++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, (uint32_t)h2_max_streams_setting};
    nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, niv);
    h2_flush(c);
    uv_read_start((uv_stream_t *)&c->tcp, on_h2_alloc, on_h2_read);
}

void h2_init(uint64_t max_streams)
{
    h2_max_streams_setting = max_streams;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
}

void h2_close_all(void)
{
    while (h2_conns)
        h2_close(h2_conns, 0);
}

void h2_free(void)
{
    if (cbs)
        nghttp2_session_callbacks_del(cbs);
    cbs = NULL;
}
